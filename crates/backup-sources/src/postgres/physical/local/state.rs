//! A local base backup in progress ([`LocalSource`]): where the walk is,
//! the tablespaces left to walk, the parent's files and deltas, and what
//! `pg_backup_stop` returned.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::path::PathBuf;
use std::sync::Arc;

use backup_core::source::Item;
use backup_core::tree::FsName;
use chrono::{DateTime, Utc};
use tokio_postgres::Client;

use super::super::delta::{DeltaIndex, SnapshotRelation};
use super::super::lsn::Lsn;
use super::super::manifest::Manifest;
use super::super::meta::TablespaceMeta;
use super::cluster::Cluster;
use super::reader::Shared;

/// The steps of the walk.
pub(super) enum Phase {
    /// Tablespaces and the data directory (without `global`, `pg_wal`).
    Files,
    /// Waiting for the reads, then `global`.
    Global,
    /// Waiting for the reads, stopping the backup, label and WAL.
    Stop,
    /// The data directory is closed; the manifest follows.
    Manifest,
    Done,
}

/// Which tree the file walk is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Tree {
    Tablespace,
    Data,
    Global,
}

/// A directory being walked: its entries, sorted, and where the walk is.
pub(super) struct DirWalk {
    pub(super) path: PathBuf,
    /// Path relative to the data directory, for the manifest.
    pub(super) manifest_dir: Vec<u8>,
    pub(super) entries: Vec<(FsName, fs::Metadata)>,
    pub(super) next: usize,
    /// Checksum rules apply to files in here.
    pub(super) relations: bool,
    /// Files in here may shrink while read.
    pub(super) wal_logged: bool,
    /// Database directory (relation forks and temp relations are filtered).
    pub(super) db_dir: bool,
}

/// A local base backup in progress.
pub(crate) struct LocalSource {
    pub(super) url: String,
    pub(super) pgdata: PathBuf,
    pub(super) coordinator: Option<Client>,
    pub(super) cluster: Cluster,
    pub(super) start_lsn: Lsn,
    pub(super) timeline: u32,
    pub(super) label: String,
    pub(super) started_at: DateTime<Utc>,
    pub(super) tablespaces: Vec<TablespaceMeta>,
    pub(super) shared: Arc<Shared>,
    pub(super) phase: Phase,
    /// Items ready to be yielded.
    pub(super) queue: VecDeque<Item>,
    pub(super) walks: Vec<DirWalk>,
    pub(super) tree: Tree,
    /// Tablespaces not walked yet.
    pub(super) pending_tablespaces: VecDeque<TablespaceMeta>,
    pub(super) stop: Option<Stop>,
    pub(super) parent_manifest: Option<Manifest>,
    pub(super) reuse_before_ns: Option<i64>,
    pub(super) manifest: Option<(u64, u64)>,
    /// The parent's relation files and deltas, when this backup may store
    /// page deltas against them (see `delta/`).
    pub(super) parent_relations: HashMap<Vec<u8>, SnapshotRelation>,
    pub(super) parent_deltas: DeltaIndex,
    /// The parent's start: the base position of its own copies.
    pub(super) parent_start: Lsn,
    /// Where the bases' pages are read from (the repository, through the
    /// parent snapshot), with the runtime to read them on.
    pub(super) bases: Option<(backup_core::repo::IndexedRepository, tokio::runtime::Handle)>,
    /// Page deltas in this backup.
    pub(super) delta_files: u64,
}

/// What `pg_backup_stop` returned and the WAL it implies.
#[derive(Debug, Clone)]
pub(super) struct Stop {
    pub(super) lsn: Lsn,
    pub(super) timeline: u32,
    pub(super) wal_files: Vec<String>,
    pub(super) checkpoint: Option<Lsn>,
}

impl std::fmt::Debug for LocalSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LocalSource")
            .field("url", &self.url)
            .field("pgdata", &self.pgdata)
            .finish_non_exhaustive()
    }
}
