//! Point-in-time recovery: continuous capture, restorable windows, and the
//! plan of a restore to a point.
//!
//! A capture stream (`REPOSITORY_FORMAT.md` §21) is restorable from a base
//! snapshot's consistent point up to the end of the pieces that follow it
//! without a gap. What each kind makes restorable is its
//! [`CaptureDriver`](backup_sources::capture::CaptureDriver)'s answer;
//! [`windows`] asks every driver of the registry, and so does [`plan`],
//! which turns a target (`--at TIME`, `--at-ts ...`, `--at-offset N`,
//! `--at-lsn ...`) into the newest base before it and what to replay from
//! it, refusing with the missing range and the nearest restorable points
//! when there is none.

use backup_core::capture::CaptureReplay;
use backup_core::repo::Repository;
use backup_core::snapshot::SnapshotEntry;
use backup_core::target::RestoreOptions;
use backup_core::Id;
use backup_sources::capture::describe_target;
pub use backup_sources::capture::{
    CaptureEvent, CaptureObserver, FollowSummary, NoObserver, Position, StoredPiece,
};
use chrono::Utc;
use tokio_util::sync::CancellationToken;

pub use backup_sources::capture::{Base, Gap, Inventory, SourceWindows, Window, Words};

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

/// The kind of capture stream of `source` (a URL: `postgres-wal` for
/// PostgreSQL, whose capture is its WAL) and what it is called in
/// messages.
///
/// # Errors
///
/// A URL of no known kind, or of a kind without capture in this build.
pub fn capture_of(source: &str) -> Result<(&'static str, Words)> {
    let kind = backup_sources::Kind::of(source)?;
    let driver = backup_sources::capture::registry::driver(kind.name()).ok_or_else(|| {
        Error::usage(format!(
            "{kind} sources have no continuous capture in this build"
        ))
    })?;
    Ok((driver.capture(), driver.words()))
}

/// What a capture kind (`postgres-wal`) captures, for people (`WAL`,
/// `oplog`, `replication stream`; `change` for a kind this build lacks).
pub fn captured(capture: &str) -> &'static str {
    backup_sources::capture::registry::driver(capture).map_or("change", |d| d.words().stream)
}

/// A point-in-time restore's plan: the base snapshot and what to replay.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The base snapshot.
    pub base: SnapshotEntry,
    /// What the target replays after it (`None` for PostgreSQL, whose
    /// restored server replays its WAL itself).
    pub replay: Option<CaptureReplay>,
    /// The last position replayed, when the plan places it.
    pub until: Option<Position>,
}

/// How a restore into a target of kind `target` (`mongodb`, `redis`;
/// `files` for a data directory) reaches the point of `opts`, asked of
/// every driver that plans such restores, checked before anything is
/// written: the newest base snapshot before the target (or `base` when
/// one was named) and what to replay from it. `None` when no kind of
/// capture restores into `target` (the target then refuses the point
/// itself).
///
/// # Errors
///
/// [`Error::Usage`] when the target is not restorable (nothing captured,
/// before the oldest base, inside a gap, after the newest captured change
/// or in the future, or restorable from two streams), naming the missing
/// range and the nearest restorable points; storage errors and damage.
pub async fn plan(
    repo: &Repository,
    target: &str,
    source: Option<&str>,
    base: Option<Id>,
    opts: &RestoreOptions,
) -> Result<Option<Plan>> {
    let drivers: Vec<_> = backup_sources::capture::registry::drivers()
        .into_iter()
        .filter(|d| d.restores_into(target))
        .collect();
    if drivers.is_empty() {
        return Ok(None);
    }
    if let Some(t) = opts.at.filter(|t| *t > Utc::now()) {
        return Err(Error::usage(format!(
            "{} is in the future",
            t.format("%Y-%m-%dT%H:%M:%SZ")
        )));
    }
    let inventory = Inventory::read(repo).await?;
    let (mut candidates, mut refusals) = (Vec::new(), Vec::new());
    for d in &drivers {
        for p in d.plan(repo, &inventory, source, base, opts).await? {
            match p {
                Ok(p) => candidates.push(p),
                Err(why) => refusals.push(why),
            }
        }
    }
    if candidates.len() > 1 {
        let names: Vec<String> = candidates.into_iter().map(|c| c.stream).collect();
        return Err(Error::usage(format!(
            "{} captured streams can restore that point ({}); narrow --source to one",
            names.len(),
            names.join(", ")
        )));
    }
    let Some(chosen) = candidates.pop() else {
        if refusals.is_empty() {
            return Err(Error::usage(format!(
                "no captured stream or base snapshot{}: a point-in-time restore needs a base snapshot and captured changes (backup oplog follow, backup redis follow, backup wal receive)",
                source.map(|s| format!(" of {s}")).unwrap_or_default()
            )));
        }
        return Err(Error::usage(format!(
            "cannot restore to {}: {}",
            describe_target(opts),
            refusals.join("; ")
        )));
    };
    let base = inventory
        .snapshots
        .into_iter()
        .find(|e| e.id == chosen.base)
        .ok_or_else(|| Error::usage(format!("base snapshot {} vanished", chosen.base.short())))?;
    Ok(Some(Plan {
        base,
        replay: chosen.replay,
        until: chosen.until,
    }))
}

/// [`plan`] for a kind with a capture driver, from its newest base.
///
/// # Errors
///
/// As [`plan`]; [`Error::Usage`] when no driver restores into `target`.
pub async fn planned(
    repo: &Repository,
    target: &str,
    source: Option<&str>,
    opts: &RestoreOptions,
) -> Result<Plan> {
    plan(repo, target, source, None, opts)
        .await?
        .ok_or_else(|| {
            Error::usage(format!(
                "{target} has no continuous capture to restore to a point from"
            ))
        })
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

/// Follows the change stream of `source` into `repo` until `cancel` fires
/// or an error that does not pass; events go to `observer`.
///
/// # Errors
///
/// A source that has no change stream to follow (or whose kind this build
/// lacks); the follower's errors.
#[cfg_attr(
    not(any(feature = "mongodb", feature = "redis")),
    allow(unused_variables, clippy::unused_async)
)]
pub async fn follow(
    repo: &Repository,
    source: &backup_sources::SourceSpec,
    req: &FollowRequest,
    observer: &dyn CaptureObserver,
    cancel: &CancellationToken,
) -> Result<FollowSummary> {
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
            Ok(backup_sources::mongo::follow(repo, source.url(), &opts, observer, cancel).await?)
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
            let url = source.url();
            Ok(backup_sources::redis::follow(repo, url, &opts, &bases, observer, cancel).await?)
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

#[cfg(test)]
mod tests {
    #[test]
    fn each_capture_kind_is_named_by_its_driver() {
        assert_eq!(super::captured("postgres-wal"), "WAL");
        assert_eq!(super::captured("mongodb-oplog"), "oplog");
        assert_eq!(super::captured("redis-stream"), "replication stream");
        assert_eq!(super::captured("nothing"), "change");
        let (kind, words) = super::capture_of("redis://127.0.0.1:6379").unwrap();
        assert_eq!((kind, words.identity), ("redis-stream", "replication id"));
        assert!(super::capture_of("/srv/files").is_err());
    }
}
