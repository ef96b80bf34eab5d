//! What every follower (oplog, Redis stream) does the same way: a
//! [`Capture`] holds the lease on its stream, finds where the stream
//! resumes ([`Capture::resume`]), reconnects after an error that may pass
//! ([`Capture::again`]), stores each gathered [`Batch`] through a
//! repository lock or a storage outage, chained to the stream's previous
//! piece ([`Link`]), and records lost ranges ([`Capture::gap`]).

use std::time::Duration;

use backup_core::capture::{CaptureLease, CaptureName, PieceInfo};
use backup_core::repo::Repository;
use backup_core::retry::{retry, Restarts, RetryPolicy};
use backup_core::snapshot::SourceDescriptor;
use backup_core::{Error, FileKind, Result};
use chrono::{DateTime, Utc};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    CaptureEvent, CaptureKind, CaptureObserver, FollowOptions, FollowSummary, Position, StoredPiece,
};

/// A kind's own position type (an oplog timestamp, a replication offset).
pub(crate) trait At: Copy {
    /// As a typed [`Position`].
    fn at(self) -> Position;
    /// The position a capture name stores as `record` (`None` when it is
    /// not one of the kind).
    fn of(record: &str) -> Option<Self>;
}

/// A source error that may pass: capture resumes from the stored end.
pub(crate) fn passing(message: impl std::fmt::Display) -> Error {
    Error::Source {
        message: message.to_string(),
        cause: None,
        retryable: true,
    }
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

/// A slice being gathered: changes read and not stored yet.
#[derive(Debug, Default)]
pub(crate) struct Batch {
    /// The record's data.
    pub(crate) buf: Vec<u8>,
    /// Changes it holds.
    pub(crate) entries: u64,
    /// Bytes of changes it holds (without the record's framing).
    pub(crate) bytes: u64,
    /// Times of its oldest and newest change.
    pub(crate) time_first: Option<DateTime<Utc>>,
    pub(crate) time_last: Option<DateTime<Utc>>,
    /// When its first change was read.
    pub(crate) started: Option<Instant>,
}

impl Batch {
    pub(crate) fn is_empty(&self) -> bool {
        self.entries == 0
    }

    /// Appends `change` (after the framing the caller wrote, if any),
    /// written or arrived at `time`.
    pub(crate) fn add(&mut self, change: &[u8], time: Option<DateTime<Utc>>) {
        self.started.get_or_insert_with(Instant::now);
        if self.time_first.is_none() {
            self.time_first = time;
        }
        self.time_last = time.or(self.time_last);
        self.buf.extend_from_slice(change);
        self.entries += 1;
        self.bytes += change.len() as u64;
    }

    /// When it is due by age (`None` while empty).
    pub(crate) fn due_at(&self, opts: &FollowOptions) -> Option<Instant> {
        self.started.map(|s| s + opts.slice_time)
    }

    /// Whether it is to be stored: it is as old or as large as `opts` says.
    pub(crate) fn due(&self, opts: &FollowOptions) -> bool {
        !self.is_empty()
            && (self.buf.len() >= opts.slice_bytes
                || self.due_at(opts).is_some_and(|d| d <= Instant::now()))
    }
}

/// What a follower keeps across connections: the repository, options and
/// observer, the lease on its stream and what it did so far.
pub(crate) struct Capture<'a> {
    pub(crate) repo: &'a Repository,
    pub(crate) opts: &'a FollowOptions,
    pub(crate) observer: &'a dyn CaptureObserver,
    pub(crate) cancel: &'a CancellationToken,
    kind: CaptureKind,
    source: SourceDescriptor,
    lease: Option<CaptureLease>,
    /// The connection's restarts: 1 s doubling up to a minute while it
    /// keeps failing, starting over after a minute of following.
    restarts: Restarts,
    pub(crate) summary: FollowSummary,
}

impl<'a> Capture<'a> {
    /// A follower of the source at `url` (redacted) storing `kind`.
    pub(crate) fn new(
        repo: &'a Repository,
        opts: &'a FollowOptions,
        observer: &'a dyn CaptureObserver,
        cancel: &'a CancellationToken,
        kind: CaptureKind,
        url: String,
    ) -> Self {
        let mut restarts = Restarts::doubling(Duration::from_secs(1), Duration::from_secs(60));
        restarts.started();
        let source = SourceDescriptor {
            kind: kind.source_kind().name().to_owned(),
            url,
        };
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

    /// After one connection's worth of following (`attempt`): whether to
    /// follow again once an error that may pass was waited out (reported
    /// as [`CaptureEvent::Reconnecting`]); `false` when the attempt ended
    /// or the cancel token fired during the wait. Unless it follows
    /// again, the lease is given up.
    ///
    /// # Errors
    ///
    /// The attempt's error when it does not pass or another follower
    /// holds the stream.
    pub(crate) async fn again(&mut self, attempt: Result<()>) -> Result<bool> {
        let again = match attempt {
            Ok(()) => Ok(false),
            Err(e) if !e.is_retryable() || matches!(e, Error::Locked(_)) => Err(e),
            Err(e) => {
                let after = self.restarts.failed().delay;
                self.observer.event(&CaptureEvent::Reconnecting {
                    error: backup_core::error::report(&e),
                    after,
                });
                Ok(Restarts::wait(after, self.cancel).await)
            }
        };
        self.restarts.started();
        if !matches!(again, Ok(true)) {
            self.release().await;
        }
        again
    }

    /// Holds the lease on the stream of `identity`: claimed unless
    /// already held, giving up the one on another stream.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] when another follower holds it; storage errors.
    pub(crate) async fn claim(&mut self, identity: &str) -> Result<()> {
        let stream = self.repo.capture_stream(self.kind.name(), identity);
        if self.lease.as_ref().is_some_and(|l| l.stream() == stream) {
            return Ok(());
        }
        self.release().await;
        self.lease = Some(self.repo.claim_capture(&stream).await?);
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

    /// The stream of `identity` at `next`, continuing nothing stored.
    pub(crate) fn link<P>(&self, identity: &str, next: P) -> Link<P> {
        Link {
            stream: self.repo.capture_stream(self.kind.name(), identity),
            identity: identity.to_owned(),
            next,
            previous: None,
            continues_snapshot: None,
            stored_time: None,
        }
    }

    /// Where the stream of `identity` continues, from the repository
    /// alone: after its newest piece (by its end), else after the newest
    /// base snapshot of `identity`; `None` when it has neither.
    ///
    /// # Errors
    ///
    /// Storage errors; [`Error::Corrupt`] for a piece whose range is not a
    /// position of the kind.
    pub(crate) async fn resume<P: At>(&self, identity: &str) -> Result<Option<Link<P>>> {
        let stream = self.repo.capture_stream(self.kind.name(), identity);
        let newest = self
            .repo
            .captures()
            .await?
            .into_iter()
            .filter(|n| n.stream == stream)
            .max_by(|a, b| a.last.cmp(&b.last));
        if let Some(n) = newest {
            let next = P::of(&n.last).ok_or_else(|| {
                let why = format!(
                    "its range is not a position of the {}",
                    self.kind.words().stream
                );
                Error::corrupt(FileKind::Capture, n.file_name(), why)
            })?;
            return Ok(Some(Link {
                previous: Some(n),
                ..self.link(identity, next)
            }));
        }
        // A write-only key knows only its own snapshots.
        let snapshots = self.repo.known_snapshots().await?;
        let base = snapshots
            .iter()
            .filter_map(|e| {
                let p = self.kind.base_point(&e.snapshot)?;
                (p.identity == identity).then(|| (e.id.to_hex(), p.from))
            })
            .max_by_key(|(_, from)| *from);
        Ok(base.and_then(|(id, from)| {
            Some(Link {
                continues_snapshot: Some(id),
                ..self.link(identity, P::of(&from.record())?)
            })
        }))
    }

    /// Reports that capture (re)starts at `link`, after what it continues.
    pub(crate) fn started<P: At>(&mut self, link: &Link<P>) {
        let continues = match (&link.previous, &link.continues_snapshot) {
            (Some(n), _) => format!("piece {n}"),
            (None, Some(id)) => format!(
                "base snapshot {id} (consistent at {})",
                link.next.at().prev()
            ),
            (None, None) => "nothing (the server's newest change)".to_owned(),
        };
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
            kind: self.kind.name().to_owned(),
            source: self.source.clone(),
            identity: link.identity.clone(),
            first: link.next.at().record(),
            last: last.at().record(),
            time_first: times.0,
            time_last: times.1,
            details,
        }
    }

    /// Stores `batch` as the next piece of `link`'s stream, ending at
    /// `last` with the kind's `details`, and moves the link past it.
    ///
    /// A repository lock held by a prune is waited out for as long as it
    /// lasts (the source keeps what arrives meanwhile), with a warning
    /// each `lock_wait`; storage errors that may pass are retried for
    /// about a minute (1 s doubling), each reported as
    /// [`CaptureEvent::Reconnecting`].
    ///
    /// # Errors
    ///
    /// A lease another follower took; storage errors that do not pass, or
    /// still fail after a minute.
    pub(crate) async fn store<P: At>(
        &mut self,
        link: &mut Link<P>,
        batch: Batch,
        last: P,
        mut details: serde_json::Value,
    ) -> Result<CaptureName> {
        details["continues_snapshot"] = link.continues_snapshot.clone().into();
        let info = self.info(link, last, (batch.time_first, batch.time_last), details);
        self.renew().await?;
        let what = format!("a slice of the {}", self.kind.words().stream);
        let policy = RetryPolicy::with_max_attempts(7)
            .with_backoff(
                Duration::from_secs(1),
                Duration::from_secs(32),
                Duration::from_secs(120),
            )
            .with_jitter(false);
        let (observer, lock_wait) = (self.observer, self.opts.lock_wait);
        let name = loop {
            let stored = retry(
                &policy,
                None,
                |_| self.repo.put_capture(info.clone(), &batch.buf, lock_wait),
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
                Ok((name, _)) => break name,
                Err(g) => match g.error {
                    e @ Error::Locked(_) => observer.event(&CaptureEvent::Warning(format!(
                        "storing {what} waits for a repository lock: {e}"
                    ))),
                    e => return Err(e),
                },
            }
        };
        self.summary.pieces += 1;
        self.summary.entries += batch.entries;
        self.summary.bytes += batch.bytes;
        self.summary.next = Some(last.at());
        self.observer.event(&CaptureEvent::Stored(StoredPiece {
            name: name.clone(),
            entries: batch.entries,
            bytes: batch.bytes,
            time_first: batch.time_first,
            time_last: batch.time_last,
        }));
        link.next = last;
        link.previous = Some(name.clone());
        link.continues_snapshot = None;
        link.stored_time = batch.time_last.or(link.stored_time);
        Ok(name)
    }

    /// Records that `link`'s stream lacks the range from its `next` to
    /// `last` (between `times`), and why; the link then continues the gap
    /// record at `last`.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub(crate) async fn gap<P: At>(
        &mut self,
        link: &mut Link<P>,
        last: P,
        times: (Option<DateTime<Utc>>, Option<DateTime<Utc>>),
        reason: String,
        details: serde_json::Value,
    ) -> Result<()> {
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
        link.next = last;
        link.previous = Some(name);
        link.continues_snapshot = None;
        Ok(())
    }
}
