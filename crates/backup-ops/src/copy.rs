//! Copying snapshots into another repository, sending only what it lacks.

use std::sync::Arc;
use std::time::Duration;

use backup_core::archiver::{backup as archive, BackupOptions};
use backup_core::copy::{not_yet_copied, SnapshotSource};
use backup_core::lock::LockMode;
use backup_core::repo::Repository;
use backup_core::snapshot::{SnapshotEntry, SnapshotFilter};
use backup_core::Id;
use serde::Serialize;

use crate::error::{Error, Result, ResultExt};
use crate::feedback::Feedback;

/// Which snapshots to copy.
#[derive(Debug, Clone, Default)]
pub struct CopyRequest {
    /// Snapshots by id, prefix or `latest`; every one `filter` passes
    /// when empty.
    pub snapshots: Vec<String>,
    /// The filter.
    pub filter: SnapshotFilter,
    /// How long to wait for a conflicting lock (in either repository).
    pub lock_wait: Duration,
}

/// One snapshot copied.
#[derive(Debug, Clone, Serialize)]
pub struct Copied {
    /// Its id in the source repository.
    pub from: Id,
    /// Its id in the destination.
    pub to: Id,
    /// Bytes read from the source repository.
    pub bytes_read: u64,
    /// New bytes added to the destination.
    pub bytes_added: u64,
    /// Files taken from the destination's previous copy without reading.
    pub files_unchanged: u64,
}

/// Copies the requested snapshots from `src` to `dst` (shared locks on
/// both), skipping those `dst` already has. Each copy takes the
/// destination's latest copy of the same source and host as its parent, so
/// files with unchanged metadata are not even read. `on_copied` is called
/// after each snapshot, for progress lines.
///
/// # Errors
///
/// Unknown snapshots, storage and lock errors (snapshots copied before an
/// error stay).
pub async fn copy(
    src: &Repository,
    dst: &Repository,
    req: &CopyRequest,
    feedback: &dyn Feedback,
    on_copied: &(dyn Fn(&Copied) + Sync),
) -> Result<Vec<Copied>> {
    let work = async {
        let src_idx = src.clone().load_index().await?;
        let wanted = if req.snapshots.is_empty() {
            let (all, _) = src_idx.snapshots().await?;
            all.into_iter()
                .filter(|s| req.filter.matches(&s.snapshot))
                .collect()
        } else {
            let mut v = Vec::new();
            for spec in &req.snapshots {
                v.push(src_idx.find_snapshot(spec, &req.filter).await?);
            }
            v
        };
        let inner = async {
            let mut dst_idx = dst.clone().load_index().await?;
            let (mut existing, _) = dst_idx.snapshots().await?;
            let todo = not_yet_copied(wanted, &existing);
            let mut copied = Vec::new();
            for entry in todo {
                let parent = latest_copy_of(&existing, &entry);
                let mut source = SnapshotSource::new(src_idx.clone(), entry.clone());
                let opts = BackupOptions {
                    parent,
                    copy_of: Some(entry.clone()),
                    ..BackupOptions::default()
                };
                let progress = feedback.progress("copy", "files");
                let out =
                    Box::pin(archive(&dst_idx, &mut source, &opts, Arc::clone(&progress))).await;
                progress.finish();
                let out = out.with_context(|| format!("copying snapshot {}", entry.id.short()))?;
                dst_idx.set_index((*out.index).clone());
                if let Some(id) = out.id {
                    existing.push(SnapshotEntry {
                        id,
                        snapshot: out.snapshot.clone(),
                    });
                    let c = Copied {
                        from: entry.id,
                        to: id,
                        bytes_read: out.run_stats.bytes_read,
                        bytes_added: out.run_stats.bytes_added,
                        files_unchanged: out.run_stats.files_unchanged,
                    };
                    on_copied(&c);
                    copied.push(c);
                }
            }
            Ok::<_, Error>(copied)
        };
        dst.with_lock(LockMode::Shared, "copy", req.lock_wait, inner)
            .await
    };
    Box::pin(src.with_lock(LockMode::Shared, "copy", req.lock_wait, work)).await
}

/// The destination's newest copy of the same source from the same host.
fn latest_copy_of(existing: &[SnapshotEntry], entry: &SnapshotEntry) -> Option<SnapshotEntry> {
    existing
        .iter()
        .filter(|e| {
            e.snapshot.source == entry.snapshot.source && e.snapshot.host == entry.snapshot.host
        })
        .max_by_key(|e| e.snapshot.time)
        .cloned()
}
