//! Copying snapshots into another repository, sending only what it lacks.

use std::sync::Arc;
use std::time::Duration;

use backup_core::archiver::{backup as archive, BackupOptions};
use backup_core::copy::{copy_captures, not_yet_copied, CapturesCopied, SnapshotSource};
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

/// What a copy did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CopyOutcome {
    /// The snapshots copied (those the destination had are left out).
    pub copied: Vec<Copied>,
    /// The captured WAL and oplog copied with them.
    pub captures: CapturesCopied,
}

/// Copies the requested snapshots from `src` to `dst` (shared locks on
/// both), skipping those `dst` already has. Each copy takes the
/// destination's latest copy of the same source and host as its parent, so
/// files with unchanged metadata are not even read. `on_copied` is called
/// after each snapshot, for progress lines.
///
/// Then the captured change streams go too, so that the copy keeps the
/// point-in-time windows: every capture record when everything is copied
/// (no snapshot named, no filter), otherwise those of the streams the
/// requested snapshots are bases of and those whose source the filter's
/// `--source` selects ([`copy_captures`]: incremental, piece by piece).
///
/// # Errors
///
/// Unknown snapshots, storage and lock errors (snapshots and pieces copied
/// before an error stay); an unreadable capture record.
pub async fn copy(
    src: &Repository,
    dst: &Repository,
    req: &CopyRequest,
    feedback: &dyn Feedback,
    on_copied: &(dyn Fn(&Copied) + Sync),
) -> Result<CopyOutcome> {
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
        let identities: std::collections::HashSet<String> = wanted
            .iter()
            .flat_map(|e| backup_sources::capture::base_identities(&e.snapshot))
            .collect();
        let everything = req.snapshots.is_empty() && selects_everything(&req.filter);
        let select = |r: &backup_core::capture::CaptureRecord| {
            everything
                || identities.contains(&r.identity)
                || req
                    .filter
                    .source
                    .as_deref()
                    .is_some_and(|s| backup_core::source_url::selects(s, &r.source.url))
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
            let captures = copy_captures(src, dst, select, req.lock_wait)
                .await
                .context("copying captured WAL and oplog")?;
            Ok::<_, Error>(CopyOutcome { copied, captures })
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

/// Whether `f` passes every snapshot.
fn selects_everything(f: &SnapshotFilter) -> bool {
    f.source.is_none()
        && f.tags.is_empty()
        && f.before.is_none()
        && f.after.is_none()
        && f.job.is_none()
        && f.host.is_none()
}
