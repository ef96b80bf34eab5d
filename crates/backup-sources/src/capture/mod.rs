//! Continuous capture and point-in-time recovery: what every kind with a
//! change stream (PostgreSQL's WAL, MongoDB's oplog, Redis's replication
//! stream) shares.
//!
//! - [`CaptureDriver`] ([`driver`]): one per kind of stream, listed by
//!   [`registry::drivers`], which every listing, retention run and drill
//!   goes through.
//! - [`Window`], [`Gap`], [`Base`], [`SourceWindows`] ([`window`]): what a
//!   listing holds, the same for every kind, computed from an
//!   [`Inventory`].
//! - [`CaptureKind`] ([`kind`]) and [`Stream`] ([`stream`]): the streams
//!   whose pieces are named by position (oplog, Redis stream).
//! - [`CaptureObserver`] and [`CaptureEvent`]: what a follower reports
//!   while it runs, for progress lines, metrics and notifications.
//!
//! Positions are typed ([`Position`]); capture names store them as
//! fixed-width upper-case hex strings (`REPOSITORY_FORMAT.md` §21), which
//! sort like the positions within a stream. **Targets are inclusive** in
//! every kind: a restore to a point applies every change at or before it.

pub mod driver;
#[cfg(any(feature = "mongodb", feature = "redis"))]
pub(crate) mod follow;
pub mod kind;
pub mod registry;
pub mod stream;
pub mod window;

use std::time::Duration;

use backup_core::capture::CaptureName;
use backup_core::{Error, Result};
use chrono::{DateTime, Utc};

pub use driver::CaptureDriver;
pub use driver::{describe_target, Planned, RestorePlan};
#[cfg(feature = "mongodb")]
pub(crate) use kind::oplog_parts;
pub use kind::{
    base_identities, point_flag, point_owner, position_offset, BasePoint, CaptureKind, Position,
    Words,
};
pub use stream::{Piece, Stream, StreamDriver};
pub use window::{Base, Gap, Inventory, SourceWindows, Window};

/// A piece a follower stored.
#[derive(Debug, Clone)]
pub struct StoredPiece {
    /// Its record's name.
    pub name: CaptureName,
    /// Changes it holds (oplog entries, Redis commands; 0 for WAL, whose
    /// records are not counted).
    pub entries: u64,
    /// Bytes it holds.
    pub bytes: u64,
    /// Time of its oldest change, when known.
    pub time_first: Option<DateTime<Utc>>,
    /// Time of its newest change, when known.
    pub time_last: Option<DateTime<Utc>>,
}

/// What a follower reports.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum CaptureEvent {
    /// Capture (re)started at `from` in `stream`.
    Started {
        /// The stream.
        stream: String,
        /// The source's identity (replica set, cluster).
        identity: String,
        /// The first position captured next.
        from: Position,
        /// What `from` continues: the previous piece, a base snapshot, or
        /// nothing (the server's newest change).
        continues: String,
    },
    /// A piece was stored.
    Stored(StoredPiece),
    /// A range was lost (recorded as a gap record when it has positions)
    /// or the source's identity changed.
    Gap {
        /// The stream.
        stream: String,
        /// The gap record, when one was written.
        record: Option<CaptureName>,
        /// Why.
        reason: String,
    },
    /// How far the stored changes are behind the source, measured about
    /// once a second.
    Lag {
        /// Seconds between the source's newest change and the newest
        /// stored one (zero when everything is stored).
        seconds: f64,
        /// The source's newest change.
        source_newest: Option<DateTime<Utc>>,
        /// The newest stored change.
        stored_newest: Option<DateTime<Utc>>,
        /// How many bytes of changes the source has that are not stored
        /// yet, when the stream counts bytes (WAL).
        behind_bytes: Option<u64>,
    },
    /// The connection failed with an error that may pass; capture resumes
    /// from the last stored position after `after`.
    Reconnecting {
        /// What failed.
        error: String,
        /// The wait before the next attempt.
        after: Duration,
    },
    /// A warning worth showing (no base snapshot yet, a lease held by
    /// another follower, ...).
    Warning(String),
}

/// Receives a follower's events. Called from the follower's task: keep it
/// quick (update counters, send on a channel).
pub trait CaptureObserver: Send + Sync {
    /// One event.
    fn event(&self, event: &CaptureEvent);
}

impl<T: CaptureObserver + ?Sized> CaptureObserver for std::sync::Arc<T> {
    fn event(&self, event: &CaptureEvent) {
        (**self).event(event);
    }
}

/// An observer that ignores everything.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoObserver;

impl CaptureObserver for NoObserver {
    fn event(&self, _: &CaptureEvent) {}
}

/// How a follower cuts and stores slices (pieces).
#[derive(Debug, Clone)]
pub struct FollowOptions {
    /// A slice is stored once its oldest change is this old (each kind
    /// has its default and minimum).
    pub slice_time: Duration,
    /// ... or once it holds this many bytes (default 16 MiB).
    pub slice_bytes: usize,
    /// How long a store waits for a prune's exclusive lock before trying
    /// again.
    pub lock_wait: Duration,
}

impl FollowOptions {
    /// The options with `slice_time` and the other defaults.
    pub fn with_slice_time(slice_time: Duration) -> Self {
        FollowOptions {
            slice_time,
            slice_bytes: 16 << 20,
            lock_wait: Duration::from_secs(60),
        }
    }

    /// Checks the bounds.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a slice time under `min_time` or a size under
    /// 64 KiB or over 1 GiB.
    pub fn check(&self, min_time: Duration) -> Result<()> {
        if self.slice_time < min_time {
            return Err(Error::Config(format!(
                "slice time {:?} is under the minimum of {min_time:?}",
                self.slice_time
            )));
        }
        if !(64 << 10..=1 << 30).contains(&self.slice_bytes) {
            return Err(Error::Config(format!(
                "slice size {} bytes is outside 64KiB..1GiB",
                self.slice_bytes
            )));
        }
        Ok(())
    }
}

/// What a follower or the WAL receiver did before it stopped.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct FollowSummary {
    /// The stream (the last one, when the source's identity changed).
    pub stream: String,
    /// Pieces stored.
    pub pieces: u64,
    /// Changes stored.
    pub entries: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Gaps recorded or reported.
    pub gaps: u64,
    /// Base snapshots taken by the follower (Redis, after a full
    /// resynchronisation).
    pub bases: u64,
    /// The first position not stored yet (as `Display` writes it in
    /// JSON: `0/3000060 on timeline 1`, `1700000000:5`, `123456`).
    #[serde(serialize_with = "displayed")]
    pub next: Option<Position>,
}

/// Serializes a position as people read it (`null` for none).
#[allow(clippy::ref_option)] // the signature `serialize_with` calls
fn displayed<S: serde::Serializer>(
    p: &Option<Position>,
    s: S,
) -> std::result::Result<S::Ok, S::Error> {
    match p {
        Some(p) => s.collect_str(p),
        None => s.serialize_none(),
    }
}
