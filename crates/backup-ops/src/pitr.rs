//! Point-in-time recovery: continuous capture, restorable windows, and the
//! plan of a restore to a point.
//!
//! A capture stream (`REPOSITORY_FORMAT.md` §21) is restorable from a base
//! snapshot's consistent point up to the end of the pieces that follow it
//! without a gap. What each kind makes restorable is its
//! [`CaptureDriver`](backup_sources::capture::CaptureDriver)'s answer;
//! [`windows`] asks every driver of the registry. For the streams named by
//! position (oplog, Redis stream), [`plan`] turns a target (`--at TIME`,
//! `--at-ts ...`, `--at-offset N`) into the newest base before it and the
//! pieces from that base to the target, refusing with the missing range
//! and the nearest restorable points when there is none (PostgreSQL's
//! restore to a point is the server's recovery, set up by the physical
//! target).

use std::collections::BTreeMap;

use backup_core::capture::CaptureReplay;
use backup_core::repo::Repository;
use backup_core::snapshot::SnapshotEntry;
use backup_core::target::{RecoveryPoint, RestoreOptions};
use backup_core::{FileKind, Id};
pub use backup_sources::capture::{
    CaptureEvent, CaptureObserver, NoObserver, Position, StoredPiece,
};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

pub use backup_sources::capture::{Base, Gap, Inventory, SourceWindows, Stream, Window};

use crate::error::{Error, Result};

/// The restorable windows of every source (narrowed by `source`, a URL or
/// kind as `--source`), from every driver of the registry.
///
/// # Errors
///
/// Storage errors; an unreadable capture record.
pub async fn windows(repo: &Repository, source: Option<&str>) -> Result<Vec<SourceWindows>> {
    Ok(backup_sources::capture::registry::windows(repo, source).await?)
}

/// Every capture stream named by position (oplog, Redis stream) whose
/// source or base snapshots pass `source`.
///
/// # Errors
///
/// Storage errors; an unreadable capture record.
pub async fn streams(repo: &Repository, source: Option<&str>) -> Result<Vec<Stream>> {
    Ok(backup_sources::capture::stream::streams(repo, source).await?)
}

/// A point-in-time restore's plan: the base snapshot and what to replay.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The stream.
    pub stream: Stream,
    /// The base snapshot.
    pub base: SnapshotEntry,
    /// What the target replays after it.
    pub replay: CaptureReplay,
}

/// The base and pieces a restore to the point of `opts` (`at` or
/// [`RecoveryPoint::OplogTs`]) needs, checked before anything is
/// written: the newest base snapshot whose consistent point is at or
/// before the target (or `base` when one was named), and pieces from it
/// to the target without a gap, each record readable and its pack
/// present.
///
/// # Errors
///
/// [`Error::Usage`] when the target is not restorable (before the oldest
/// base, inside a gap, after the newest captured change or in the
/// future), naming the missing range and the nearest restorable points;
/// storage errors.
pub async fn plan(
    repo: &Repository,
    source: Option<&str>,
    base: Option<Id>,
    opts: &RestoreOptions,
) -> Result<Plan> {
    let all = streams(repo, source).await?;
    if all.is_empty() {
        return Err(Error::usage(format!(
            "no captured stream or base snapshot{}: a point-in-time restore needs a base snapshot and a capture follower (backup oplog follow SOURCE)",
            source.map(|s| format!(" of {s}")).unwrap_or_default()
        )));
    }
    if let Some(t) = &opts.at {
        if *t > Utc::now() {
            return Err(Error::usage(format!(
                "{} is in the future",
                t.format("%Y-%m-%dT%H:%M:%SZ")
            )));
        }
    }
    let mut refusals = Vec::new();
    let mut candidates = Vec::new();
    for s in all {
        match choose(&s, base, opts) {
            Ok((base, replay)) => candidates.push((s, base, replay)),
            Err(why) => refusals.push(format!("stream {} ({}): {why}", s.identity, s.source)),
        }
    }
    if candidates.len() > 1 {
        return Err(Error::usage(format!(
            "{} captured streams can restore that point ({}); narrow --source to one",
            candidates.len(),
            candidates
                .iter()
                .map(|(s, _, _)| format!("{} from {}", s.identity, s.source))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let Some((stream, base, replay)) = candidates.pop() else {
        return Err(Error::usage(format!(
            "cannot restore to {}: {}",
            describe_target(opts),
            refusals.join("; ")
        )));
    };
    check_pieces(repo, &stream, &replay).await?;
    let (snapshots, _) = repo.snapshots().await?;
    let base = snapshots
        .into_iter()
        .find(|e| e.id == base)
        .ok_or_else(|| Error::usage(format!("base snapshot {} vanished", base.short())))?;
    Ok(Plan {
        stream,
        base,
        replay,
    })
}

/// The target of `opts` as the user gave it.
fn describe_target(opts: &RestoreOptions) -> String {
    match (&opts.at, &opts.point) {
        (Some(t), _) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        (None, Some(RecoveryPoint::OplogTs { seconds, increment })) => {
            format!("oplog timestamp {seconds}:{increment}")
        }
        (None, Some(RecoveryPoint::ReplOffset(o))) => format!("replication offset {o}"),
        (None, Some(p)) => format!("{p:?}"),
        (None, None) => "the newest captured change".to_owned(),
    }
}

/// The base (`named`, or the newest before the target) and pieces of `s`
/// for the target of `opts`, or why there are none.
fn choose(
    s: &Stream,
    named: Option<Id>,
    opts: &RestoreOptions,
) -> std::result::Result<(Id, CaptureReplay), String> {
    let (until, until_time) = match (s.kind.until(opts), opts.at) {
        (Ok(Some(u)), _) => (u, None),
        (Ok(None), Some(t)) if !s.kind.timed_positions() => (until_by_time(s, t)?, Some(t)),
        (Ok(None), _) => {
            return Err(format!(
                "a {} stream cannot place that target from positions alone",
                s.kind.name()
            ))
        }
        (Err(e), _) => return Err(e.to_string()),
    };
    // A base consistent after a time target is no base for it, even when
    // its position is before the piece the target falls in.
    let before_time = |b: &Base| until_time.is_none_or(|t| b.point_time.is_none_or(|p| p <= t));
    let nearest = || nearest(s, &until);
    if let Some(id) = named {
        match s.bases.iter().find(|b| b.id == id) {
            None => {
                return Err(format!(
                    "snapshot {} is not a base snapshot of this stream",
                    id.short()
                ))
            }
            Some(b) if b.point > until || !before_time(b) => {
                return Err(format!(
                    "snapshot {} is consistent at {}, after the target",
                    id.short(),
                    s.describe(&b.point)
                ))
            }
            Some(_) => {}
        }
    }
    let Some(base) = s
        .bases
        .iter()
        .rev()
        .find(|b| b.point <= until && before_time(b) && named.is_none_or(|id| id == b.id))
    else {
        return Err(match s.bases.first() {
            Some(b) => format!(
                "it is before the oldest base snapshot ({} at {}); {}",
                b.id.short(),
                s.describe(&b.point),
                nearest()
            ),
            None => "the stream has no base snapshot; take one with backup create".to_owned(),
        });
    };
    let from = s.kind.next(&base.point);
    let mut pieces = Vec::new();
    let mut pos = from.clone();
    while pos <= until {
        let covering = s
            .records
            .iter()
            .filter(|(n, _)| n.first <= pos && pos < n.last)
            .max_by(|a, b| {
                a.1.gap
                    .is_none()
                    .cmp(&b.1.gap.is_none())
                    .then(a.0.last.cmp(&b.0.last))
            });
        match covering {
            Some((n, r)) if r.gap.is_none() => {
                pieces.push(n.clone());
                pos.clone_from(&n.last);
            }
            Some((n, r)) => {
                return Err(format!(
                    "the captured changes from {} to {} are missing ({}); {}",
                    s.describe(&n.first),
                    s.describe(&n.last),
                    r.gap.as_deref().unwrap_or_default(),
                    nearest()
                ))
            }
            None => {
                let after = s.records.iter().map(|(n, _)| &n.first).find(|f| **f > pos);
                return Err(match after {
                    Some(next) => format!(
                        "no piece holds {} to {} (pieces are missing); {}",
                        s.describe(&pos),
                        s.describe(next),
                        nearest()
                    ),
                    None => format!(
                        "it is after the newest captured change (the capture ends before {}); {}",
                        s.describe(&pos),
                        nearest()
                    ),
                });
            }
        }
    }
    Ok((
        base.id,
        CaptureReplay {
            stream: s.stream.clone(),
            pieces,
            from,
            until,
            until_time,
        },
    ))
}

/// For a kind whose positions tell no time: the end of the first piece
/// holding a change that arrived at or after `t` (the replay stops at
/// `t` inside it), or why the capture does not reach `t`.
fn until_by_time(s: &Stream, t: DateTime<Utc>) -> std::result::Result<String, String> {
    let reaching = s
        .records
        .iter()
        .filter(|(_, r)| r.gap.is_none() && r.time_last.is_some_and(|l| l >= t))
        .map(|(n, _)| &n.last)
        .min();
    if let Some(last) = reaching {
        return Ok(s.kind.prev(last));
    }
    let newest = s
        .records
        .iter()
        .filter(|(_, r)| r.gap.is_none())
        .filter_map(|(_, r)| r.time_last)
        .max();
    Err(match newest {
        Some(n) => format!(
            "it is after the newest captured change, which arrived at {} (a capture reaches a time once something arrives after it; an idle Redis primary sends a PING every 10 s)",
            n.format("%Y-%m-%dT%H:%M:%S%.3fZ")
        ),
        None => "nothing of this stream was captured yet".to_owned(),
    })
}

/// The restorable points nearest `until`, as a sentence.
fn nearest(s: &Stream, until: &str) -> String {
    let before = s
        .windows
        .iter()
        .filter(|w| w.from.as_str() <= until)
        .map(|w| {
            if w.to.as_str() < until {
                &w.to
            } else {
                &w.from
            }
        })
        .max();
    let after = s
        .windows
        .iter()
        .filter(|w| w.from.as_str() > until)
        .map(|w| &w.from)
        .min();
    match (before, after) {
        (None, None) => "nothing of this stream is restorable".to_owned(),
        (Some(b), None) => format!("the nearest restorable point is {}", s.describe(b)),
        (None, Some(a)) => format!("the nearest restorable point is {}", s.describe(a)),
        (Some(b), Some(a)) => format!(
            "the nearest restorable points are {} and {}",
            s.describe(b),
            s.describe(a)
        ),
    }
}

/// Checks that every piece's pack is stored and long enough (one listing).
async fn check_pieces(repo: &Repository, s: &Stream, replay: &CaptureReplay) -> Result<()> {
    if replay.pieces.is_empty() {
        return Ok(());
    }
    let sizes: BTreeMap<String, u64> = repo
        .sink()
        .list(FileKind::Pack)
        .await?
        .into_iter()
        .map(|o| (o.name, o.size))
        .collect();
    for name in &replay.pieces {
        let Some((_, r)) = s.records.iter().find(|(n, _)| n == name) else {
            continue;
        };
        let Some(pack) = r.pack else { continue };
        let need = r
            .blobs
            .iter()
            .map(|b| u64::from(b.offset) + u64::from(b.length))
            .max()
            .unwrap_or(0);
        match sizes.get(&pack.to_hex()) {
            Some(size) if *size >= need => {}
            found => {
                return Err(Error::from(backup_core::Error::corrupt(
                    FileKind::Capture,
                    name.file_name(),
                    match found {
                        Some(size) => {
                            format!("its pack {} has {size} bytes, {need} needed", pack.short())
                        }
                        None => format!("its pack {} is missing", pack.short()),
                    },
                ))
                .context(format!(
                    "the captured changes from {} to {} cannot be read; nothing was changed",
                    s.describe(&name.first),
                    s.describe(&name.last)
                )));
            }
        }
    }
    Ok(())
}

/// How a capture follower stores pieces (per kind).
#[derive(Debug, Clone, Default)]
pub struct FollowRequest {
    /// The job recorded with the base snapshots a follower takes (Redis).
    pub job: Option<String>,
    /// Tags of those snapshots.
    pub tags: Vec<String>,
    /// The time bound of a piece (`None`: the kind's default).
    pub slice_time: Option<std::time::Duration>,
    /// The size bound of a piece (`None`: the kind's default).
    pub slice_bytes: Option<usize>,
    /// How long a store waits for a prune's lock before it tries again.
    pub lock_wait: std::time::Duration,
}

/// What a follower did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FollowResult {
    /// The stream.
    pub stream: String,
    /// Pieces stored.
    pub pieces: u64,
    /// Changes stored.
    pub entries: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Gaps met.
    pub gaps: u64,
    /// The first position not stored yet.
    pub next: Option<String>,
}

impl From<backup_sources::capture::FollowSummary> for FollowResult {
    fn from(s: backup_sources::capture::FollowSummary) -> Self {
        FollowResult {
            stream: s.stream,
            pieces: s.slices,
            entries: s.entries,
            bytes: s.bytes,
            gaps: s.gaps,
            next: s.next,
        }
    }
}

/// Follows the change stream of `source` into `repo` until `cancel` fires
/// or an error that does not pass; events go to `observer`.
///
/// # Errors
///
/// A source that has no change stream to follow (or whose kind this build
/// lacks); the follower's errors.
pub async fn follow(
    repo: &Repository,
    source: &backup_sources::SourceSpec,
    req: &FollowRequest,
    observer: &dyn CaptureObserver,
    cancel: &CancellationToken,
) -> Result<FollowResult> {
    match source.kind() {
        #[cfg(feature = "mongodb")]
        backup_sources::Kind::Mongodb => {
            let defaults =
                backup_sources::mongo::FollowOptions::with_slice_time(backup_sources::mongo::SLICE_TIME);
            let opts = backup_sources::mongo::FollowOptions {
                slice_time: req.slice_time.unwrap_or(defaults.slice_time),
                slice_bytes: req.slice_bytes.unwrap_or(defaults.slice_bytes),
                lock_wait: req.lock_wait.max(defaults.lock_wait),
            };
            let s =
                backup_sources::mongo::follow(repo, source.url(), &opts, observer, cancel).await?;
            Ok(s.into())
        }
        #[cfg(feature = "redis")]
        backup_sources::Kind::Redis => {
            let mut opts = backup_sources::capture::FollowOptions::with_slice_time(
                req.slice_time.unwrap_or(backup_sources::redis::SLICE_TIME),
            );
            if let Some(b) = req.slice_bytes {
                opts.slice_bytes = b;
            }
            opts.lock_wait = req.lock_wait.max(opts.lock_wait);
            let bases = Bases {
                repo,
                spec: source,
                req,
                cancel,
            };
            let s = backup_sources::redis::follow(
                repo,
                source.url(),
                &opts,
                &bases,
                observer,
                cancel,
            )
            .await?;
            Ok(s.into())
        }
        other => Err(Error::usage(format!(
            "{other} sources have no change stream to follow: capture follows a MongoDB replica set's oplog or a Redis primary's replication stream"
        ))),
    }
}

/// Stores the RDB a Redis follower receives as an ordinary snapshot.
#[cfg(feature = "redis")]
struct Bases<'a> {
    repo: &'a Repository,
    spec: &'a backup_sources::SourceSpec,
    req: &'a FollowRequest,
    cancel: &'a CancellationToken,
}

#[cfg(feature = "redis")]
#[async_trait::async_trait]
impl backup_sources::redis::BaseStore for Bases<'_> {
    async fn store(&self, source: Box<dyn backup_core::source::Source>) -> backup_core::Result<Id> {
        let req = crate::backup::BackupRequest {
            tags: self.req.tags.clone(),
            job: self.req.job.clone(),
            lock_wait: self.req.lock_wait,
            ..crate::backup::BackupRequest::default()
        };
        let outcome = crate::backup::backup(
            self.repo,
            source,
            self.spec,
            &req,
            &crate::feedback::Unattended,
            Some(self.cancel),
        )
        .await
        .map_err(|e| match e {
            Error::Core(e) => e,
            other => backup_core::Error::source_failed(other.to_string()),
        })?;
        outcome
            .id
            .ok_or_else(|| backup_core::Error::source_failed("the base snapshot was not saved"))
    }
}
