//! The [`CaptureDriver`] trait: what the rest of the program needs of a
//! kind of capture stream to answer "what can I restore to?", "how do I
//! get there?" and "what may retention delete?". Each kind implements it in its own module;
//! [`super::registry`] lists them.

use backup_core::capture::CaptureReplay;
use backup_core::capture::{CaptureExpiry, CaptureName};
use backup_core::repo::Repository;
use backup_core::snapshot::SnapshotEntry;
use backup_core::target::{RecoveryPoint, RestoreOptions};
use backup_core::{Id, Result};
use chrono::{DateTime, Utc};

use super::kind::{Position, Words};
use super::window::{Inventory, SourceWindows};

/// One kind of capture stream (PostgreSQL's WAL, MongoDB's oplog, Redis's
/// replication stream).
#[async_trait::async_trait]
pub trait CaptureDriver: Send + Sync {
    /// The kind of source it captures (`postgres`, `mongodb`, `redis`).
    fn source_kind(&self) -> &'static str;

    /// The kind of capture stream (`postgres-wal`, `mongodb-oplog`,
    /// `redis-stream`), as capture records name it.
    fn capture(&self) -> &'static str;

    /// What the stream and its parts are called in messages.
    fn words(&self) -> Words;

    /// Whether a restore to a point into a target of kind `target` (a
    /// source kind name; `files` for a directory) is planned by this
    /// driver. By default, a target of the kind it captures.
    fn restores_into(&self, target: &str) -> bool {
        target == self.source_kind()
    }

    /// The streams of this kind whose source or base snapshots pass
    /// `source` (a URL or kind, as `--source`; all when `None`): windows,
    /// gaps and bases, from `inventory` (and what else the kind reads).
    ///
    /// # Errors
    ///
    /// Storage errors reading what the kind needs beyond `inventory`.
    async fn windows(
        &self,
        repo: &Repository,
        inventory: &Inventory,
        source: Option<&str>,
    ) -> Result<Vec<SourceWindows>>;

    /// For each stream of this kind whose source or bases pass `source`:
    /// how a restore reaches the point of `opts` (from base `base` when
    /// one is named), checked before anything is written, or why it
    /// cannot. Empty when the kind has nothing to restore from.
    ///
    /// # Errors
    ///
    /// Storage errors; damage found while checking the plan (a piece's
    /// pack missing).
    async fn plan(
        &self,
        repo: &Repository,
        inventory: &Inventory,
        source: Option<&str>,
        base: Option<Id>,
        opts: &RestoreOptions,
    ) -> Result<Vec<Planned>>;

    /// The captured ranges no snapshot of `kept.snapshots` needs, per
    /// stream: what they are and the records to delete. Streams without
    /// a kept base keep everything (a mistaken `forget` must not also
    /// lose the changes). Nothing is changed.
    ///
    /// # Errors
    ///
    /// Storage errors; an unreadable record.
    async fn expired(
        &self,
        repo: &Repository,
        kept: &Inventory,
    ) -> Result<Vec<(CaptureExpiry, Vec<CaptureName>)>>;

    /// The base snapshots among `snapshots` that a `--keep-within` period
    /// reaching back to `since` needs beyond its own rule: per stream, the
    /// newest base taken at or before `since` (restores to any later
    /// point replay from it).
    ///
    /// # Errors
    ///
    /// Storage errors reading what the kind needs beyond the manifests.
    async fn anchors(
        &self,
        repo: &Repository,
        snapshots: &[SnapshotEntry],
        since: DateTime<Utc>,
    ) -> Result<Vec<Id>>;
}

/// How a restore reaches a point from one stream: the base snapshot and,
/// for the kinds whose restore target replays the stream itself, what to
/// replay after it (PostgreSQL's server replays its own WAL: `None`).
#[derive(Debug, Clone)]
pub struct RestorePlan {
    /// The stream, as messages name it (identity and source).
    pub stream: String,
    /// The base snapshot.
    pub base: Id,
    /// What the target replays after the base.
    pub replay: Option<CaptureReplay>,
    /// The last position replayed, when the plan places it.
    pub until: Option<Position>,
}

/// A driver's answer for one of its streams: a plan, or why the stream
/// cannot restore to the point (a sentence naming the stream, the missing
/// range and the nearest restorable points).
pub type Planned = std::result::Result<RestorePlan, String>;

/// The target of `opts` as the user gave it, for messages.
pub fn describe_target(opts: &RestoreOptions) -> String {
    match (&opts.at, &opts.point) {
        (Some(t), _) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        (None, Some(RecoveryPoint::OplogTs { seconds, increment })) => {
            format!("oplog timestamp {seconds}:{increment}")
        }
        (None, Some(RecoveryPoint::ReplOffset(o))) => format!("replication offset {o}"),
        (None, Some(RecoveryPoint::Lsn(l))) => format!("LSN {l}"),
        (None, Some(RecoveryPoint::Xid(x))) => format!("transaction {x}"),
        (None, Some(RecoveryPoint::Name(n))) => format!("restore point {n}"),
        (None, Some(RecoveryPoint::Immediate)) => "the end of the base backup".to_owned(),
        (None, None) => "the newest captured change".to_owned(),
    }
}
