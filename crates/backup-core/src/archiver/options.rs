//! What a backup run is asked to do ([`BackupOptions`]) and what it
//! produced ([`BackupOutcome`]).

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::id::Id;
use crate::index::Index;
use crate::snapshot::{Rewritten, Snapshot, SnapshotEntry, SnapshotStats};

/// Options of a backup run.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Tags to record.
    pub tags: Vec<String>,
    /// Exclude patterns (recorded; the source applies them).
    pub excludes: Vec<String>,
    /// Include patterns (recorded; the source applies them).
    pub includes: Vec<String>,
    /// Time to stamp instead of now.
    pub time: Option<DateTime<Utc>>,
    /// Host name to record instead of this host's.
    pub host: Option<String>,
    /// Job name to record.
    pub job: Option<String>,
    /// Snapshot whose unchanged files are reused without reading.
    pub parent: Option<SnapshotEntry>,
    /// Read, chunk and count, but write nothing.
    pub dry_run: bool,
    /// When copying: the original snapshot, whose time, host, user, tags,
    /// job, patterns, statistics, streams and metadata the new snapshot
    /// keeps (only its tree and `copy_of` differ).
    pub copy_of: Option<SnapshotEntry>,
    /// When rewriting ([`crate::rewrite`]): the snapshot replaced, whose
    /// fields the new one keeps but for its tree, streams, metadata, the
    /// counts of what it holds, and `rewritten`. A rewrite that changes
    /// nothing (the same tree and metadata) writes no manifest: the
    /// outcome's id is the original's.
    pub rewrite_of: Option<(SnapshotEntry, Rewritten)>,
}

/// What a backup produced.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// The new snapshot's id; `None` for a dry run.
    pub id: Option<Id>,
    /// The manifest (written unless dry run).
    pub snapshot: Snapshot,
    /// The repository index including the new packs.
    pub index: Arc<Index>,
    /// What this run did. Equal to `snapshot.stats` except for copies,
    /// whose manifest keeps the original's statistics.
    pub run_stats: SnapshotStats,
}
