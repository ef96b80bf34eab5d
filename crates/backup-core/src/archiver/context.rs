//! What a backup run shares between its walk and its reads: the saver,
//! the chunking parameters, the counters behind the snapshot's statistics,
//! the warnings and the progress reporter.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use crate::chunker::Chunking;
use crate::config::ChunkerParams;
use crate::crypto::BlobHasher;
use crate::progress::Progress;
use crate::saver::SaverHandle;
use crate::snapshot::SnapshotStats;

/// What a run counted, for the snapshot's statistics.
#[derive(Default)]
pub(super) struct Counters {
    pub(super) bytes_read: AtomicU64,
    pub(super) logical: AtomicU64,
    pub(super) files: AtomicU64,
    pub(super) dirs: AtomicU64,
    pub(super) symlinks: AtomicU64,
    pub(super) streams: AtomicU64,
    pub(super) unchanged: AtomicU64,
    /// A read failed (and fails the backup): the walk looks for the error
    /// in its open directories before it starts anything else.
    pub(super) read_failed: AtomicBool,
}

/// What the walk and the reads of one run share.
pub(super) struct Ctx {
    pub(super) saver: SaverHandle,
    pub(super) hasher: BlobHasher,
    pub(super) chunker: ChunkerParams,
    pub(super) chunking: Chunking,
    pub(super) seed: u64,
    pub(super) counters: Counters,
    pub(super) warnings: Mutex<Vec<String>>,
    pub(super) progress: Arc<dyn Progress>,
    pub(super) runtime: tokio::runtime::Handle,
    /// The warning that an older repository format dropped metadata was
    /// given.
    pub(super) told_old_format: std::sync::atomic::AtomicBool,
}

impl Ctx {
    /// Logs `msg` and keeps it for the snapshot's warnings.
    pub(super) fn warn(&self, msg: String) {
        tracing::warn!("{msg}");
        self.warnings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(msg);
    }

    /// The snapshot's statistics for a run that began at `started`.
    pub(super) fn stats(&self, started: Instant) -> SnapshotStats {
        let saved = self.saver.stats();
        let c = &self.counters;
        SnapshotStats {
            bytes_read: c.bytes_read.load(Ordering::Relaxed),
            logical_bytes: c.logical.load(Ordering::Relaxed),
            bytes_added: saved.bytes_added.load(Ordering::Relaxed),
            bytes_stored: saved.bytes_stored.load(Ordering::Relaxed),
            files: c.files.load(Ordering::Relaxed),
            dirs: c.dirs.load(Ordering::Relaxed),
            symlinks: c.symlinks.load(Ordering::Relaxed),
            streams: c.streams.load(Ordering::Relaxed),
            files_unchanged: c.unchanged.load(Ordering::Relaxed),
            blobs_added: saved.blobs_added.load(Ordering::Relaxed),
            packs_added: saved.packs_added.load(Ordering::Relaxed),
            duration_ms: started.elapsed().as_millis() as u64,
        }
    }
}
