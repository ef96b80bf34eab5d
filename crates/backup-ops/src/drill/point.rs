//! What a drill restores: a point chosen by a [`PointChooser`].

use async_trait::async_trait;
use backup_core::repo::IndexedRepository;
use backup_core::snapshot::{SnapshotEntry, SnapshotFilter};
use chrono::{DateTime, Utc};

use crate::error::Result;

/// The point a drill restores.
#[derive(Debug, Clone)]
pub struct ChosenPoint {
    /// The snapshot to restore (for a point-in-time restore, the base
    /// backup the log is replayed on).
    pub snapshot: SnapshotEntry,
    /// The time the restored copy will represent; the drill's RPO is its
    /// age.
    pub time: DateTime<Utc>,
    /// The restore's `--at`, for a point inside a restorable window
    /// (`None`: the snapshot as it is).
    pub at: Option<DateTime<Utc>>,
    /// How it was chosen, recorded as the drill record's `point_kind`.
    pub kind: &'static str,
}

/// Chooses what a drill restores.
///
/// Today's chooser is [`LatestSnapshot`]. Point-in-time recovery jobs
/// will add one that picks a random time inside the job's restorable
/// window and returns the base snapshot before it with `at` set, so that
/// every drill tests a different point of the window the job claims; the
/// drill itself needs no change for it.
#[async_trait]
pub trait PointChooser: Send + Sync {
    /// Picks the point among the snapshots `scope` selects.
    ///
    /// # Errors
    ///
    /// Nothing to restore; repository errors.
    async fn choose(&self, repo: &IndexedRepository, scope: &SnapshotFilter)
        -> Result<ChosenPoint>;
}

/// The newest snapshot of the job or source: what a restore after a
/// disaster would take.
#[derive(Debug, Clone, Copy, Default)]
pub struct LatestSnapshot;

#[async_trait]
impl PointChooser for LatestSnapshot {
    async fn choose(
        &self,
        repo: &IndexedRepository,
        scope: &SnapshotFilter,
    ) -> Result<ChosenPoint> {
        let entry = repo.find_snapshot("latest", scope).await?;
        Ok(ChosenPoint {
            time: entry.snapshot.time,
            snapshot: entry,
            at: None,
            kind: "latest-snapshot",
        })
    }
}
