//! Backup: walks a [`Source`], stores new content and trees, writes index
//! files and then the snapshot manifest.
//!
//! The walk runs on the async task that calls [`backup`]; contents are
//! chunked and hashed on blocking threads, several at once (the source's
//! concurrency); new blobs go through the saver pipeline (dedup, compress, encrypt, pack, upload). A
//! directory's tree is stored when its last entry is done. Writing order is
//! packs, then index files, then the snapshot, so an interrupted backup
//! leaves no snapshot behind.
//!
//! The parts: [`BackupOptions`] and [`BackupOutcome`] (`options`), the
//! state a run shares with its reads (`context`), the walk of the source
//! (`walk`), starting and doing the read of one content (`read`), later
//! names of hard-linked files (`links`), and finishing directories into
//! trees (`dirs`).

mod context;
mod dirs;
mod links;
mod options;
mod read;
mod walk;

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use chrono::Utc;

use self::context::{Counters, Ctx};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::repo::IndexedRepository;
use crate::saver::{write_index_files, BlobSaver};
use crate::snapshot::{Snapshot, SnapshotStats, SNAPSHOT_VERSION};
use crate::source::Source;

pub use self::options::{BackupOptions, BackupOutcome};

/// Runs a backup of `source` into `repo`.
///
/// The caller should hold a shared repository lock for the duration.
///
/// # Errors
///
/// Any failure of the source (including [`Source::finish`]), of reading a
/// stream whose policy is [`OnReadError::Fail`], or of storage. No
/// snapshot is written then; packs already stored stay as unreferenced data.
///
/// [`OnReadError::Fail`]: crate::source::OnReadError::Fail
pub async fn backup(
    repo: &IndexedRepository,
    source: &mut dyn Source,
    opts: &BackupOptions,
    progress: Arc<dyn Progress>,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let saver = BlobSaver::start(repo, opts.dry_run);
    let ctx = Arc::new(Ctx {
        saver: saver.handle().clone(),
        hasher: repo.hasher().clone(),
        chunker: repo.config().chunker,
        chunking: source.chunking(),
        seed: repo.key().chunker_seed(),
        counters: Counters::default(),
        warnings: Mutex::new(Vec::new()),
        progress,
        runtime: tokio::runtime::Handle::current(),
        told_old_format: std::sync::atomic::AtomicBool::new(false),
    });
    let walked = walk::walk(repo, source, opts, &ctx).await;
    let walked = match walked {
        Ok(w) => w,
        Err(e) => {
            // Prefer the pipeline's own error over the cancellation it
            // caused in the walk.
            let saver_result = saver.finish().await;
            return Err(match (e, saver_result) {
                (Error::Cancelled, Err(se)) => se,
                (e, _) => e,
            });
        }
    };
    let (root_tree, streams) = walked;
    let metadata = match source.finish().await {
        Ok(m) => m,
        Err(e) => {
            let _ = saver.finish().await;
            return Err(e);
        }
    };
    ctx.progress.set_phase("saving index");
    let outcome = saver.finish().await?;
    let mut index = (**repo.index()).clone();
    for p in &outcome.packs {
        index.add_pack(p.id, p.size, &p.blobs);
    }
    let stats = ctx.stats(started);
    let snapshot = Snapshot {
        version: SNAPSHOT_VERSION,
        time: opts.time.unwrap_or_else(Utc::now),
        host: opts.host.clone().unwrap_or_else(crate::util::hostname),
        user: crate::util::username(),
        source: source.descriptor(),
        job: opts.job.clone(),
        tags: opts.tags.clone(),
        parent: opts.parent.as_ref().map(|p| p.id),
        copy_of: None,
        rewritten: None,
        tree: root_tree,
        excludes: opts.excludes.clone(),
        includes: opts.includes.clone(),
        stats,
        streams,
        warnings: std::mem::take(&mut *ctx.warnings.lock().unwrap_or_else(PoisonError::into_inner)),
        metadata,
        program: format!("backup {}", env!("CARGO_PKG_VERSION")),
    };
    let run_stats = snapshot.stats.clone();
    let snapshot = match (&opts.copy_of, &opts.rewrite_of) {
        (Some(orig), _) => Snapshot {
            tree: snapshot.tree,
            parent: snapshot.parent,
            copy_of: Some(orig.id),
            ..orig.snapshot.clone()
        },
        (None, Some((orig, rewritten))) => {
            if snapshot.tree == orig.snapshot.tree && snapshot.metadata == orig.snapshot.metadata {
                // Nothing changed: the original stays as it is.
                if !opts.dry_run {
                    write_index_files(repo, outcome.packs).await?;
                }
                return Ok(BackupOutcome {
                    id: Some(orig.id),
                    snapshot: orig.snapshot.clone(),
                    index: Arc::new(index),
                    run_stats,
                });
            }
            let o = &orig.snapshot;
            Snapshot {
                tree: snapshot.tree,
                streams: snapshot.streams,
                metadata: snapshot.metadata,
                stats: SnapshotStats {
                    logical_bytes: run_stats.logical_bytes,
                    files: run_stats.files,
                    dirs: run_stats.dirs,
                    symlinks: run_stats.symlinks,
                    streams: run_stats.streams,
                    ..o.stats.clone()
                },
                rewritten: Some(rewritten.clone()),
                ..o.clone()
            }
        }
        (None, None) => snapshot,
    };
    if opts.dry_run {
        return Ok(BackupOutcome {
            id: None,
            snapshot,
            index: Arc::new(index),
            run_stats,
        });
    }
    let written = write_index_files(repo, outcome.packs).await?;
    let id = repo.save_snapshot(&snapshot).await?;
    if let Some(w) = repo.writer() {
        let files: Vec<_> = written
            .into_iter()
            .filter_map(|(id, f)| f.map(|f| (id, f)))
            .collect();
        let entry = crate::snapshot::SnapshotEntry {
            id,
            snapshot: snapshot.clone(),
        };
        w.record(&files, &entry);
    }
    Ok(BackupOutcome {
        id: Some(id),
        snapshot,
        index: Arc::new(index),
        run_stats,
    })
}
