//! What a point-in-time listing holds, the same for every kind of
//! stream: restorable [`Window`]s, [`Gap`]s and [`Base`] snapshots per
//! source ([`SourceWindows`]), and the [`Inventory`] they are computed
//! from.

use backup_core::capture::{CaptureName, CaptureRecord};
use backup_core::repo::Repository;
use backup_core::snapshot::SnapshotEntry;
use backup_core::{Id, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::kind::Position;

/// A base snapshot of a stream.
#[derive(Debug, Clone, Serialize)]
pub struct Base {
    /// The snapshot.
    pub id: Id,
    /// When it was taken.
    pub taken: DateTime<Utc>,
    /// Its consistent point: the last position it holds.
    pub point: Position,
    /// The timeline of `point`, for kinds that have timelines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    /// The time of that point, when known.
    pub point_time: Option<DateTime<Utc>>,
}

impl Base {
    /// A base consistent at `point`.
    pub fn new(id: Id, taken: DateTime<Utc>, point: Position, time: Option<DateTime<Utc>>) -> Self {
        Base {
            id,
            taken,
            point,
            timeline: point.timeline(),
            point_time: time,
        }
    }
}

/// A range of a stream that can be restored to any point of.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// The earliest restorable position (a base's consistent point).
    pub from: Position,
    /// The latest restorable position (inclusive).
    pub to: Position,
    /// The timeline of `from` and `to`, for kinds that have timelines
    /// (listed beside them; the positions carry it too).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    /// Their times, when known.
    pub from_time: Option<DateTime<Utc>>,
    /// See `from_time`.
    pub to_time: Option<DateTime<Utc>>,
    /// The base snapshots inside.
    pub bases: Vec<Id>,
}

/// A range of a stream that is not stored.
#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    /// First missing position.
    pub from: Position,
    /// End of the missing range (exclusive).
    pub to: Position,
    /// The timeline of `from` and `to`, for kinds that have timelines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    /// Times of the two ends, when known.
    pub from_time: Option<DateTime<Utc>>,
    /// See `from_time`.
    pub to_time: Option<DateTime<Utc>>,
    /// Why: the recorded reason, or that pieces are missing.
    pub reason: String,
}

/// One source's point-in-time recovery as `backup pitr` lists it: what
/// was captured, the restorable windows, the gaps and the bases.
/// Positions are typed ([`Position`]); JSON writes them as the kind's
/// tools do (`1700000000:5`, `0/3000028` beside its timeline, a
/// replication offset).
#[derive(Debug, Clone, Serialize)]
pub struct SourceWindows {
    /// The kind of source (`mongodb`, `postgres`, `redis`).
    pub kind: String,
    /// The kind of capture stream (`mongodb-oplog`, `postgres-wal`,
    /// `redis-stream`).
    pub capture: String,
    /// The stream id (from the capture names).
    pub stream: String,
    /// What was captured from (replica set, cluster system identifier).
    pub identity: String,
    /// The source URL (redacted).
    pub source: String,
    /// What a position is called (`oplog timestamp`, `LSN`).
    pub position: String,
    /// Pieces stored (gap records not counted).
    pub pieces: usize,
    /// Bytes stored.
    pub bytes: u64,
    /// Restorable windows, oldest first.
    pub windows: Vec<Window>,
    /// Gaps, oldest first.
    pub gaps: Vec<Gap>,
    /// Base snapshots, oldest first.
    pub bases: Vec<Base>,
    /// Why there is no restorable window, when there is none: what is
    /// missing (a base, captured changes, or the stretch between them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

impl SourceWindows {
    /// The window that holds the newest restorable point (the latest
    /// timeline's, for kinds with timelines), if any.
    pub fn newest(&self) -> Option<&Window> {
        self.windows
            .iter()
            .max_by(|a, b| (a.timeline, a.to_time).cmp(&(b.timeline, b.to_time)))
    }
}

/// What a repository holds for point-in-time listings, read once and
/// handed to every [`crate::capture::CaptureDriver`].
#[derive(Debug, Clone)]
pub struct Inventory {
    /// Every capture record with its name (all kinds).
    pub records: Vec<(CaptureName, CaptureRecord)>,
    /// Every snapshot (or, for retention, the snapshots kept).
    pub snapshots: Vec<SnapshotEntry>,
}

impl Inventory {
    /// Reads every capture record (16 at a time) and snapshot manifest.
    ///
    /// # Errors
    ///
    /// Storage errors; an unreadable capture record.
    pub async fn read(repo: &Repository) -> Result<Self> {
        let (snapshots, _) = repo.snapshots().await?;
        Self::with_snapshots(repo, snapshots).await
    }

    /// Reads every capture record, beside `snapshots` (the kept ones of a
    /// retention run).
    ///
    /// # Errors
    ///
    /// Storage errors; an unreadable capture record.
    pub async fn with_snapshots(repo: &Repository, snapshots: Vec<SnapshotEntry>) -> Result<Self> {
        let (records, bad) = repo.capture_records().await?;
        // Reading a record names it in its error (a damaged or missing
        // object of kind capture).
        if let Some((_, e)) = bad.into_iter().next() {
            return Err(e);
        }
        Ok(Inventory { records, snapshots })
    }
}
