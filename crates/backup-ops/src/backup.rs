//! Backing up a source: the lock, the parent snapshot, the progress total
//! and the pipeline run, for `backup create`, `backup create --job` and
//! the daemon's scheduled runs alike.

use std::sync::Arc;
use std::time::Duration;

use backup_core::archiver::{backup as archive, BackupOptions, BackupOutcome};
use backup_core::lock::LockMode;
use backup_core::repo::{IndexedRepository, Repository};
use backup_core::snapshot::{SnapshotEntry, SnapshotFilter};
use backup_core::source::{SizeHint, Source};
use backup_sources::SourceSpec;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use crate::config::Job;
use crate::error::{Error, Result};
use crate::feedback::{json, Feedback};

/// Which snapshot a backup reuses unchanged files from.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub enum Parent {
    /// The latest snapshot of the same source and host.
    #[default]
    Latest,
    /// None: read everything.
    None,
    /// This snapshot (id, prefix or `latest`).
    Given(String),
}

/// What to record with a backup and how to run it.
#[derive(Debug, Clone, Default)]
pub struct BackupRequest {
    /// Tags.
    pub tags: Vec<String>,
    /// Time to stamp instead of now.
    pub time: Option<DateTime<Utc>>,
    /// Host to record instead of this one.
    pub host: Option<String>,
    /// The job name to record.
    pub job: Option<String>,
    /// The parent choice.
    pub parent: Parent,
    /// Read everything, write nothing.
    pub dry_run: bool,
    /// How long to wait for a conflicting repository lock.
    pub lock_wait: Duration,
}

impl BackupRequest {
    /// The request of a configured job's scheduled or manual run.
    pub fn for_job(job: &Job, lock_wait: Duration) -> Self {
        BackupRequest {
            tags: job.tags.clone(),
            job: Some(job.name.clone()),
            lock_wait,
            ..BackupRequest::default()
        }
    }
}

/// Opens a source for a backup (for PostgreSQL and MongoDB this starts
/// the consistent view the backup reads), so that a front-end can do it
/// while the repository's key is being derived.
///
/// # Errors
///
/// A malformed URL, an unreachable or refusing source.
pub async fn open_source(spec: &SourceSpec) -> Result<Box<dyn Source>> {
    Ok(spec.open().await?)
}

/// Backs `source` (opened from `spec`) up into `repo` under a shared lock.
///
/// Nothing is listed until the snapshot manifest is written as the very
/// last step, so a cancelled `cancel` (or a dropped future) leaves at most
/// unreferenced packs; when cancelled, the lock is released and
/// [`backup_core::Error::Cancelled`] returned.
///
/// # Errors
///
/// Source, storage and lock errors.
pub async fn backup(
    repo: &Repository,
    source: Box<dyn Source>,
    spec: &SourceSpec,
    req: &BackupRequest,
    feedback: &dyn Feedback,
    cancel: Option<&CancellationToken>,
) -> Result<BackupOutcome> {
    let filters = (spec.excludes.clone(), spec.includes.clone());
    run(repo, source, filters, req, feedback, cancel).await
}

/// Backs up any [`Source`], including one implemented outside this
/// workspace (a fifth kind: see the `custom_source_sqlite` example), with
/// the same lock, parent choice, progress and cancellation as [`backup`],
/// and no include or exclude patterns. The parent is the latest snapshot
/// whose source URL is the [`Source::descriptor`]'s.
///
/// # Errors
///
/// Source, storage and lock errors; [`backup_core::Error::Cancelled`]
/// when `cancel` is cancelled.
pub async fn backup_source(
    repo: &Repository,
    source: Box<dyn Source>,
    req: &BackupRequest,
    feedback: &dyn Feedback,
    cancel: Option<&CancellationToken>,
) -> Result<BackupOutcome> {
    run(
        repo,
        source,
        (Vec::new(), Vec::new()),
        req,
        feedback,
        cancel,
    )
    .await
}

/// [`backup`] and [`backup_source`]: `filters` are the exclude and include
/// patterns.
async fn run(
    repo: &Repository,
    mut source: Box<dyn Source>,
    (excludes, includes): (Vec<String>, Vec<String>),
    req: &BackupRequest,
    feedback: &dyn Feedback,
    cancel: Option<&CancellationToken>,
) -> Result<BackupOutcome> {
    let descriptor = source.descriptor();
    let work = async {
        let mut repo = repo.clone().load_index().await?;
        let parent =
            choose_parent(&repo, &req.parent, &descriptor.url, req.host.as_deref()).await?;
        if let Some(p) = &parent {
            // A backup of the same source may have finished since the
            // index was read.
            repo = Box::pin(repo.covering(&p.snapshot.tree)).await?;
        }
        let progress = feedback.progress("backup", "files");
        if feedback.wants_totals() {
            match source.size_hint() {
                SizeHint::Unknown => {}
                SizeHint::Bytes(n) => progress.set_total(n),
                SizeHint::Scan(scan) => {
                    let p = Arc::clone(&progress);
                    std::thread::spawn(move || p.set_total(scan()));
                }
            }
        }
        let opts = BackupOptions {
            tags: req.tags.clone(),
            excludes,
            includes,
            time: req.time,
            host: req.host.clone(),
            job: req.job.clone(),
            parent,
            dry_run: req.dry_run,
            copy_of: None,
            rewrite_of: None,
        };
        let run = Box::pin(archive(
            &repo,
            source.as_mut(),
            &opts,
            Arc::clone(&progress),
        ));
        let result = match cancel {
            Some(token) => tokio::select! {
                r = run => r,
                () = token.cancelled() => Err(backup_core::Error::Cancelled),
            },
            None => run.await,
        };
        progress.finish();
        Ok::<_, Error>(result?)
    };
    let outcome = repo
        .with_lock(LockMode::Shared, "backup", req.lock_wait, Box::pin(work))
        .await?;
    feedback.detail("snapshot", json(outcome.id));
    feedback.detail("source", json(&outcome.snapshot.source.url));
    feedback.detail("dry_run", json(req.dry_run));
    Ok(outcome)
}

/// The snapshot a backup takes unchanged files from.
async fn choose_parent(
    repo: &IndexedRepository,
    parent: &Parent,
    source_url: &str,
    host: Option<&str>,
) -> Result<Option<SnapshotEntry>> {
    if let Some(writer) = repo.writer() {
        // A write-only key knows only its own snapshots, from its cache.
        return match parent {
            Parent::None => Ok(None),
            Parent::Given(p) => writer.find(p).map(Some).ok_or_else(|| {
                backup_core::Error::not_found(format!(
                    "snapshot `{p}` among this write-only key's own recent snapshots"
                ))
                .into()
            }),
            Parent::Latest => Ok(writer.latest(&SnapshotFilter {
                source: Some(source_url.to_owned()),
                source_exact: true,
                host: Some(host.map_or_else(backup_core::util::hostname, str::to_owned)),
                ..SnapshotFilter::default()
            })),
        };
    }
    match parent {
        Parent::None => Ok(None),
        Parent::Given(p) => Ok(Some(
            repo.find_snapshot(p, &SnapshotFilter::default()).await?,
        )),
        Parent::Latest => {
            let filter = SnapshotFilter {
                source: Some(source_url.to_owned()),
                source_exact: true,
                host: Some(host.map_or_else(backup_core::util::hostname, str::to_owned)),
                ..SnapshotFilter::default()
            };
            match repo.find_snapshot("latest", &filter).await {
                Ok(s) => Ok(Some(s)),
                Err(backup_core::Error::NotFound { .. }) => Ok(None),
                Err(e) => Err(e.into()),
            }
        }
    }
}

/// The snapshots a job made, oldest first.
///
/// # Errors
///
/// Storage errors.
pub async fn job_snapshots(repo: &Repository, job: &str) -> Result<Vec<SnapshotEntry>> {
    let (all, _) = repo.snapshots().await?;
    Ok(all
        .into_iter()
        .filter(|s| s.snapshot.job.as_deref() == Some(job))
        .collect())
}

/// When the job's newest snapshot was taken.
///
/// # Errors
///
/// Storage errors.
pub async fn last_success(repo: &Repository, job: &str) -> Result<Option<DateTime<Utc>>> {
    Ok(job_snapshots(repo, job)
        .await?
        .iter()
        .map(|s| s.snapshot.time)
        .max())
}
