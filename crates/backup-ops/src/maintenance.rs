//! Operations on a repository's data under the lock they need: export,
//! index and snapshot repair.

use std::path::Path;
use std::time::Duration;

use backup_core::lock::LockMode;
use backup_core::reader::SnapshotReader;
use backup_core::repair::{repair_index as rebuild, repair_snapshots as find_damaged};
use backup_core::repair::{DamagedSnapshot, RepairIndexReport};
use backup_core::repo::Repository;
use backup_core::snapshot::{SnapshotEntry, SnapshotFilter};
use backup_sources::export::ExportReport;

use crate::error::{Error, Result};
use crate::feedback::Feedback;

/// Checks an export format name before anything is opened.
///
/// # Errors
///
/// A usage error listing the formats of this build.
pub fn check_export_format(format: &str) -> Result<()> {
    if backup_sources::export::FORMATS.contains(&format) {
        return Ok(());
    }
    Err(Error::usage(format!(
        "unknown export format `{format}`: supported formats are {}",
        backup_sources::export::FORMATS.join(", ")
    )))
}

/// Writes a snapshot in a database's native dump format (shared lock).
///
/// # Errors
///
/// An unknown format or snapshot, a snapshot of another kind, write and
/// storage errors.
pub async fn export(
    repo: &Repository,
    snapshot: &str,
    filter: &SnapshotFilter,
    format: &str,
    to: &Path,
    lock_wait: Duration,
) -> Result<(SnapshotEntry, ExportReport)> {
    check_export_format(format)?;
    let work = async {
        let repo = repo.clone().load_index().await?;
        let entry = repo.find_snapshot(snapshot, filter).await?;
        let reader = SnapshotReader::new(repo, entry.clone());
        let report = backup_sources::kind::export(&reader, format, to).await?;
        Ok::<_, Error>((entry, report))
    };
    repo.with_lock(LockMode::Shared, "export", lock_wait, work)
        .await
}

/// Rebuilds the index from pack headers (exclusive lock; shared for a dry
/// run).
///
/// # Errors
///
/// Storage and lock errors.
pub async fn repair_index(
    repo: &Repository,
    dry_run: bool,
    lock_wait: Duration,
    feedback: &dyn Feedback,
) -> Result<RepairIndexReport> {
    let progress = feedback.progress("repair", "packs");
    let work = async { Ok::<_, Error>(rebuild(repo, dry_run, progress.as_ref()).await?) };
    let report = repo
        .with_lock(
            LockMode::exclusive_if(!dry_run),
            "repair index",
            lock_wait,
            work,
        )
        .await;
    progress.finish();
    report
}

/// Finds snapshots whose data is lost and, with `remove`, removes them
/// (exclusive lock when removing).
///
/// # Errors
///
/// Storage and lock errors.
pub async fn repair_snapshots(
    repo: &Repository,
    remove: bool,
    dry_run: bool,
    lock_wait: Duration,
    feedback: &dyn Feedback,
) -> Result<Vec<DamagedSnapshot>> {
    let progress = feedback.progress("repair", "snapshots");
    let work =
        async { Ok::<_, Error>(find_damaged(repo, remove, dry_run, progress.as_ref()).await?) };
    let damaged = repo
        .with_lock(
            LockMode::exclusive_if(remove && !dry_run),
            "repair snapshots",
            lock_wait,
            work,
        )
        .await;
    progress.finish();
    damaged
}
