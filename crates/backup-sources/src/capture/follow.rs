//! What every follower (oplog, Redis stream) does the same way:
//! [`Capture::again`] reconnects after an error that may pass
//! ([`reconnects`], [`reconnect`]) and holds the lease on the stream;
//! [`Capture::store`] stores a slice through a repository lock or a
//! storage outage ([`store_piece`], on `backup_core::retry`), chained to
//! the stream's previous piece ([`Link`]); [`Capture::gap`] records a lost
//! range.

use std::time::Duration;

use backup_core::capture::{CaptureLease, CaptureName, PieceInfo};
use backup_core::repo::Repository;
use backup_core::retry::{retry, Restarts, RetryPolicy};
use backup_core::snapshot::SourceDescriptor;
use backup_core::{Error, Result};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::{
    CaptureEvent, CaptureKind, CaptureObserver, FollowOptions, FollowSummary, Position, StoredPiece,
};

/// A kind's own position type (an oplog timestamp, a replication offset)
/// as a typed [`Position`].
pub(crate) trait At: Copy {
    /// The typed position.
    fn at(self) -> Position;
}

/// Where a stream stands: the first position not stored and what the
/// next piece continues (the previous piece or a base snapshot).
#[derive(Debug, Clone)]
pub(crate) struct Link<P> {
    /// The stream id.
    pub(crate) stream: String,
    /// The source's identity (replica set, replication id).
    pub(crate) identity: String,
    /// The first position not stored: the next piece's `first`.
    pub(crate) next: P,
    /// The newest stored piece (or gap record) of the stream.
    pub(crate) previous: Option<CaptureName>,
    /// The base snapshot the next piece continues, when it does.
    pub(crate) continues_snapshot: Option<String>,
    /// The newest stored change's time.
    pub(crate) stored_time: Option<DateTime<Utc>>,
}

/// A slice ready to be stored: its bytes and what it holds.
pub(crate) struct Ready<'d, P> {
    /// The record's data.
    pub(crate) data: &'d [u8],
    /// The position after its newest change: the piece's `last`.
    pub(crate) last: P,
    /// Changes it holds.
    pub(crate) entries: u64,
    /// Bytes of changes it holds (without the record's framing).
    pub(crate) bytes: u64,
    /// Times of its oldest and newest change.
    pub(crate) time_first: Option<DateTime<Utc>>,
    pub(crate) time_last: Option<DateTime<Utc>>,
    /// The kind's details; `previous` and `continues_snapshot` are added.
    pub(crate) details: serde_json::Value,
    /// What it is called in events ("an oplog slice").
    pub(crate) what: &'static str,
}

/// What a follower keeps across connections: the repository, options and
/// observer, the lease on its stream and what it did so far.
pub(crate) struct Capture<'a> {
    pub(crate) repo: &'a Repository,
    pub(crate) opts: &'a FollowOptions,
    pub(crate) observer: &'a dyn CaptureObserver,
    pub(crate) cancel: &'a CancellationToken,
    /// The capture kind its records name (`mongodb-oplog`).
    kind: &'static str,
    pub(crate) source: SourceDescriptor,
    lease: Option<CaptureLease>,
    restarts: Restarts,
    pub(crate) summary: FollowSummary,
}

impl<'a> Capture<'a> {
    /// A follower of `source` storing records of capture `kind`.
    pub(crate) fn new(
        repo: &'a Repository,
        opts: &'a FollowOptions,
        observer: &'a dyn CaptureObserver,
        cancel: &'a CancellationToken,
        kind: &'static str,
        source: SourceDescriptor,
    ) -> Self {
        let mut restarts = reconnects();
        restarts.started();
        Capture {
            repo,
            opts,
            observer,
            cancel,
            kind,
            source,
            lease: None,
            restarts,
            summary: FollowSummary::default(),
        }
    }

    /// After one connection's worth of following (`attempt`): whether
    /// to follow again, once an error that may pass has been waited out
    /// ([`reconnect`]); `false` when the attempt ended or the cancel token
    /// fired during the wait.
    ///
    /// # Errors
    ///
    /// The attempt's error when it does not pass (the lease is given up).
    pub(crate) async fn again(&mut self, attempt: Result<()>) -> Result<bool> {
        let Err(e) = attempt else {
            return Ok(false);
        };
        match reconnect(&mut self.restarts, e, self.observer, self.cancel).await {
            Ok(again) => {
                self.restarts.started();
                Ok(again)
            }
            Err(e) => {
                self.release().await;
                Err(e)
            }
        }
    }

    /// Gives the lease up; what the follower did.
    pub(crate) async fn finish(mut self) -> FollowSummary {
        self.release().await;
        self.summary
    }

    /// Holds the lease on `stream`: claimed unless already held, giving
    /// up the one on another stream.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] when another follower holds it; storage errors.
    pub(crate) async fn claim(&mut self, stream: &str) -> Result<()> {
        if self.lease.as_ref().is_some_and(|l| l.stream() == stream) {
            return Ok(());
        }
        self.release().await;
        self.lease = Some(self.repo.claim_capture(stream).await?);
        Ok(())
    }

    /// Gives the lease up (the next [`Capture::claim`] takes one again).
    pub(crate) async fn release(&mut self) {
        if let Some(l) = self.lease.take() {
            let _ = l.release().await;
        }
    }

    /// Renews the lease, when one is held.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] when another follower took the stream; storage
    /// errors.
    pub(crate) async fn renew(&self) -> Result<()> {
        match &self.lease {
            Some(l) => l.renew().await,
            None => Ok(()),
        }
    }

    /// The newest stored piece of `stream` (by its end).
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub(crate) async fn newest(&self, stream: &str) -> Result<Option<CaptureName>> {
        Ok(self
            .repo
            .captures()
            .await?
            .into_iter()
            .filter(|n| n.stream == stream)
            .max_by(|a, b| a.last.cmp(&b.last)))
    }

    /// The newest base snapshot of the `kind` stream of `identity`: its id
    /// and the first position replay applies after it (where capture
    /// continues when the stream has no piece yet).
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub(crate) async fn newest_base(
        &self,
        kind: CaptureKind,
        identity: &str,
    ) -> Result<Option<(String, Position)>> {
        // A write-only key knows only its own snapshots.
        let snapshots = self.repo.known_snapshots().await?;
        Ok(snapshots
            .iter()
            .filter_map(|e| {
                let p = kind.base_point(&e.snapshot)?;
                (p.identity == identity).then(|| (e.id.to_hex(), p.from))
            })
            .max_by_key(|(_, from)| *from))
    }

    /// Reports that capture (re)starts at `link` (`continues` says after
    /// what).
    pub(crate) fn started<P: At>(&mut self, link: &Link<P>, continues: String) {
        self.summary.stream.clone_from(&link.stream);
        self.summary.next = Some(link.next.at());
        self.observer.event(&CaptureEvent::Started {
            stream: link.stream.clone(),
            identity: link.identity.clone(),
            from: link.next.at(),
            continues,
        });
    }

    /// The record of `link`'s stream from its `next` to `last`, with
    /// `details` and the piece it follows.
    fn info<P: At>(
        &self,
        link: &Link<P>,
        last: P,
        times: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
        mut details: serde_json::Value,
    ) -> PieceInfo {
        details["previous"] = link.previous.as_ref().map(CaptureName::file_name).into();
        PieceInfo {
            stream: link.stream.clone(),
            kind: self.kind.to_owned(),
            source: self.source.clone(),
            identity: link.identity.clone(),
            first: link.next.at().record(),
            last: last.at().record(),
            time_first: times.0,
            time_last: times.1,
            details,
        }
    }

    /// Stores `slice` as the next piece of `link`'s stream and moves the
    /// link past it.
    ///
    /// # Errors
    ///
    /// A lease another follower took; storage errors that do not pass
    /// ([`store_piece`]).
    pub(crate) async fn store<P: At>(
        &mut self,
        link: &mut Link<P>,
        slice: Ready<'_, P>,
    ) -> Result<CaptureName> {
        let mut details = slice.details;
        details["continues_snapshot"] = link.continues_snapshot.clone().into();
        let times = (slice.time_first, slice.time_last);
        let info = self.info(link, slice.last, times, details);
        self.renew().await?;
        let name = store_piece(
            self.repo,
            &info,
            slice.data,
            self.opts.lock_wait,
            self.observer,
            slice.what,
        )
        .await?;
        self.summary.pieces += 1;
        self.summary.entries += slice.entries;
        self.summary.bytes += slice.bytes;
        self.summary.next = Some(slice.last.at());
        self.observer.event(&CaptureEvent::Stored(StoredPiece {
            name: name.clone(),
            entries: slice.entries,
            bytes: slice.bytes,
            time_first: slice.time_first,
            time_last: slice.time_last,
        }));
        link.next = slice.last;
        link.previous = Some(name.clone());
        link.continues_snapshot = None;
        link.stored_time = slice.time_last.or(link.stored_time);
        Ok(name)
    }

    /// Records that `link`'s stream lacks the range from its `next` to
    /// `last` (between `times`), and why.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub(crate) async fn gap<P: At>(
        &mut self,
        link: &Link<P>,
        last: P,
        times: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
        reason: String,
        details: serde_json::Value,
    ) -> Result<CaptureName> {
        let info = self.info(link, last, times, details);
        let name = self
            .repo
            .put_capture_gap(info, &reason, self.opts.lock_wait)
            .await?;
        self.summary.gaps += 1;
        self.observer.event(&CaptureEvent::Gap {
            stream: link.stream.clone(),
            record: Some(name.clone()),
            reason,
        });
        Ok(name)
    }
}

/// The restarts of a follower's connection: 1 s doubling up to a minute
/// while it keeps failing, starting over after a minute of following.
pub(crate) fn reconnects() -> Restarts {
    Restarts::new(
        RetryPolicy::default()
            .with_backoff(
                Duration::from_secs(1),
                Duration::from_secs(60),
                Duration::ZERO,
            )
            .with_jitter(false),
        Duration::from_secs(60),
    )
}

/// After one connection's worth of following failed with `error`:
/// `Ok(true)` to follow again once [`Restarts::wait`] is over (an error
/// that may pass, reported as [`CaptureEvent::Reconnecting`] with the
/// wait), `Ok(false)` when `cancel` fired during the wait, and the error
/// itself when it does not pass (or another follower holds the stream).
///
/// # Errors
///
/// `error`, when it does not pass.
pub(crate) async fn reconnect(
    restarts: &mut Restarts,
    error: Error,
    observer: &dyn CaptureObserver,
    cancel: &CancellationToken,
) -> Result<bool> {
    if !error.is_retryable() || matches!(error, Error::Locked(_)) {
        return Err(error);
    }
    let after = restarts.failed().delay;
    observer.event(&CaptureEvent::Reconnecting {
        error: backup_core::error::report(&error),
        after,
    });
    Ok(Restarts::wait(after, cancel).await)
}

/// Stores one piece (`what` names it in events: "an oplog slice"). A
/// repository lock held by a prune is waited out for as long as it lasts
/// (the source keeps what arrives meanwhile), with a warning each
/// `lock_wait`; storage errors that may pass are retried for about a
/// minute (1 s doubling), each reported as
/// [`CaptureEvent::Reconnecting`].
///
/// # Errors
///
/// Storage errors that do not pass, or still fail after a minute.
pub(crate) async fn store_piece(
    repo: &Repository,
    info: &PieceInfo,
    data: &[u8],
    lock_wait: Duration,
    observer: &dyn CaptureObserver,
    what: &str,
) -> Result<CaptureName> {
    let policy = RetryPolicy::with_max_attempts(7)
        .with_backoff(
            Duration::from_secs(1),
            Duration::from_secs(32),
            Duration::from_secs(120),
        )
        .with_jitter(false);
    loop {
        let stored = retry(
            &policy,
            None,
            |_| repo.put_capture(info.clone(), data, lock_wait),
            |e: &Error| e.is_retryable() && !matches!(e, Error::Locked(_)),
            |_, e, after| {
                observer.event(&CaptureEvent::Reconnecting {
                    error: format!("storing {what}: {}", backup_core::error::report(e)),
                    after,
                });
            },
        )
        .await;
        match stored {
            Ok((name, _)) => return Ok(name),
            Err(g) => match g.error {
                e @ Error::Locked(_) => observer.event(&CaptureEvent::Warning(format!(
                    "storing {what} waits for a repository lock: {e}"
                ))),
                e => return Err(e),
            },
        }
    }
}
