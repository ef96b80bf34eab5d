//! Running a job: backup, retention, verification and health checks.
//!
//! These functions are shared by the `backup` command (`create`,
//! `create --job`, `health`) and the daemon, so both run exactly the same
//! code. Each takes the repository lock it needs for as long as it works.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use backup_core::archiver::{backup, BackupOptions, BackupOutcome};
use backup_core::config::Encryption;
use backup_core::progress::{NoProgress, Progress};
use backup_core::prune::{prune, PruneOptions, PruneReport};
use backup_core::repo::Repository;
use backup_core::retention::{apply, GroupBy, RetentionPolicy};
use backup_core::snapshot::{SnapshotEntry, SnapshotFilter};
use backup_core::source::Source;
use backup_core::verify::{verify, VerifyOptions, VerifyReport};
use backup_core::{FileKind, Id, PutMode, Sink};
use backup_sources::{open_source, SourceKind, SourceOptions};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::{Job, RepositoryConfig};
use crate::secret::Secret;

/// Builds the storage backend of a configured repository.
///
/// # Errors
///
/// Malformed URL or options.
pub fn repository_sink(cfg: &RepositoryConfig) -> Result<Arc<dyn Sink>> {
    let url = backup_storage::StorageUrl::parse(&cfg.url)?;
    let mut options = backup_storage::StorageOptions::default();
    for (k, v) in &cfg.options {
        options.set_pair(&format!("{k}={v}"))?;
    }
    Ok(backup_storage::build(&url, &options)?)
}

/// Opens a configured repository, reading its password when it is encrypted.
///
/// # Errors
///
/// Storage errors, a missing or wrong password.
pub async fn open_repository(name: &str, cfg: &RepositoryConfig) -> Result<Repository> {
    let sink = repository_sink(cfg)?;
    let config = Repository::read_config(sink.as_ref()).await?;
    if config.encryption == Encryption::None {
        return Ok(Repository::open(sink, None).await?);
    }
    let Some(r) = &cfg.password else {
        anyhow::bail!(crate::config::ConfigError::invalid(
            &format!("repositories.{name}.password"),
            "the repository is encrypted: say where its password comes from",
        ));
    };
    let password = r.resolve(&format!("repositories.{name}.password"))?;
    Ok(Repository::open(sink, Some(password.expose().as_bytes())).await?)
}

/// Which snapshot a backup reuses unchanged files from.
#[derive(Debug, Clone, Default)]
pub enum Parent {
    /// The latest snapshot of the same source and host.
    #[default]
    Latest,
    /// None: read everything.
    None,
    /// This snapshot (id, prefix or `latest`).
    Given(String),
}

/// What to back up and how.
#[derive(Debug, Clone, Default)]
pub struct CreateParams {
    /// The source URL (it may carry a password).
    pub source: Option<Secret>,
    /// Tags.
    pub tags: Vec<String>,
    /// Exclude globs.
    pub excludes: Vec<String>,
    /// Include namespaces.
    pub includes: Vec<String>,
    /// Time to stamp.
    pub time: Option<DateTime<Utc>>,
    /// Host to record.
    pub host: Option<String>,
    /// Job name to record.
    pub job: Option<String>,
    /// Parent choice.
    pub parent: Parent,
    /// Write nothing.
    pub dry_run: bool,
    /// PostgreSQL globals.
    pub pg_globals: bool,
    /// MongoDB users and roles.
    pub mongo_users: bool,
    /// Count the files of a directory source first, for a progress total.
    pub scan_total: bool,
}

impl CreateParams {
    /// The parameters of a configured job.
    ///
    /// # Errors
    ///
    /// When the source password cannot be read.
    pub fn for_job(job: &Job) -> Result<Self> {
        Ok(CreateParams {
            source: Some(job.source_url()?),
            tags: job.tags.clone(),
            excludes: job.excludes.clone(),
            includes: job.includes.clone(),
            job: Some(job.name.clone()),
            pg_globals: job.pg_globals,
            mongo_users: job.mongo_users,
            ..CreateParams::default()
        })
    }
}

/// Opens the source of a backup (for PostgreSQL and MongoDB this starts
/// the consistent view the backup reads), so that callers can do it while
/// the repository opens; see [`create_snapshot_from`].
///
/// # Errors
///
/// A missing or malformed source URL, an unreachable or refusing source.
pub async fn open_job_source(params: &CreateParams) -> Result<Box<dyn Source>> {
    let Some(url) = params.source.as_ref() else {
        anyhow::bail!("no source given");
    };
    Ok(open_source(
        url.expose(),
        &SourceOptions {
            excludes: params.excludes.clone(),
            includes: params.includes.clone(),
            globals: params.pg_globals,
            users: params.mongo_users,
        },
    )
    .await?)
}

/// Runs one backup under a shared lock (waiting up to `lock_wait`).
///
/// Nothing is listed until the snapshot manifest is written as the very
/// last step, so dropping the returned future at any point (a shutdown)
/// leaves at most unreferenced packs.
///
/// # Errors
///
/// Source, storage and lock errors.
pub async fn create_snapshot(
    repo: &Repository,
    params: CreateParams,
    lock_wait: Duration,
    progress: Arc<dyn Progress>,
) -> Result<BackupOutcome> {
    let source = open_job_source(&params).await?;
    create_snapshot_from(repo, source, params, lock_wait, progress).await
}

/// [`create_snapshot`] from a source opened by [`open_job_source`] with the
/// same `params`.
///
/// # Errors
///
/// Source, storage and lock errors.
pub async fn create_snapshot_from(
    repo: &Repository,
    mut source: Box<dyn Source>,
    params: CreateParams,
    lock_wait: Duration,
    progress: Arc<dyn Progress>,
) -> Result<BackupOutcome> {
    let Some(url) = params.source.clone() else {
        anyhow::bail!("no source given");
    };
    let descriptor = source.descriptor();
    let lock = repo.lock_wait(false, "backup", lock_wait).await?;
    let work = async {
        let repo = repo.clone().load_index().await?;
        let parent = match &params.parent {
            Parent::None => None,
            Parent::Given(p) => Some(repo.find_snapshot(p, &SnapshotFilter::default()).await?),
            Parent::Latest => {
                let filter = SnapshotFilter {
                    source: Some(descriptor.url.clone()),
                    host: Some(
                        params
                            .host
                            .clone()
                            .unwrap_or_else(backup_core::util::hostname),
                    ),
                    ..SnapshotFilter::default()
                };
                match repo.find_snapshot("latest", &filter).await {
                    Ok(s) => Some(s),
                    Err(backup_core::Error::NotFound { .. }) => None,
                    Err(e) => return Err(e.into()),
                }
            }
        };
        if params.scan_total && SourceKind::of(url.expose())? == SourceKind::Files {
            let p = progress.clone();
            let root = std::path::PathBuf::from(&descriptor.url);
            let excludes = params.excludes.clone();
            std::thread::spawn(move || {
                let (total, _) = backup_sources::files::scan_size(&root, &excludes);
                p.set_total(total);
            });
        }
        let opts = BackupOptions {
            tags: params.tags.clone(),
            excludes: params.excludes.clone(),
            includes: params.includes.clone(),
            time: params.time,
            host: params.host.clone(),
            job: params.job.clone(),
            parent,
            dry_run: params.dry_run,
            copy_of: None,
        };
        let result = backup(&repo, source.as_mut(), &opts, Arc::clone(&progress)).await;
        progress.finish();
        Ok::<_, anyhow::Error>(result?)
    };
    let result = work.await;
    let released = lock.release().await;
    let outcome = result?;
    released?;
    Ok(outcome)
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

/// What retention did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionOutcome {
    /// Snapshots removed.
    pub removed: Vec<Id>,
    /// Snapshots kept.
    pub kept: usize,
    /// The prune report, when pruning ran.
    pub prune: Option<PruneReport>,
}

/// Applies a retention policy to a job's snapshots, then prunes if asked.
///
/// # Errors
///
/// Storage and lock errors.
pub async fn apply_retention(
    repo: &Repository,
    job: &str,
    policy: &RetentionPolicy,
    prune_after: bool,
    lock_wait: Duration,
) -> Result<RetentionOutcome> {
    let mut out = RetentionOutcome::default();
    {
        let lock = repo.lock_wait(false, "forget", lock_wait).await?;
        let work = async {
            let snapshots = job_snapshots(repo, job).await?;
            let decisions = apply(&snapshots, policy, GroupBy::default_grouping())?;
            for d in decisions {
                if d.keep {
                    out.kept += 1;
                } else {
                    repo.sink()
                        .delete(FileKind::Snapshot, &d.id.to_hex())
                        .await?;
                    out.removed.push(d.id);
                }
            }
            Ok::<_, anyhow::Error>(())
        };
        let r = work.await;
        let released = lock.release().await;
        r?;
        released?;
    }
    if prune_after && !out.removed.is_empty() {
        let lock = repo.lock_wait(true, "prune", lock_wait).await?;
        let work = async {
            let indexed = repo.clone().load_index().await?;
            Ok::<_, anyhow::Error>(prune(&indexed, &PruneOptions::default(), &NoProgress).await?)
        };
        let r = work.await;
        let released = lock.release().await;
        out.prune = Some(r?);
        released?;
    }
    Ok(out)
}

/// Verifies a job's snapshots (structure, and `read_data` percent of the
/// packs) under a shared lock.
///
/// # Errors
///
/// Errors that stop the check; damage is in the report.
pub async fn verify_job(
    repo: &Repository,
    job: &str,
    read_data: Option<f64>,
    lock_wait: Duration,
) -> Result<VerifyReport> {
    let lock = repo.lock_wait(false, "verify", lock_wait).await?;
    let work = async {
        let ids = job_snapshots(repo, job)
            .await?
            .into_iter()
            .map(|s| s.id)
            .collect();
        let opts = VerifyOptions {
            snapshots: Some(ids),
            read_data_percent: read_data,
        };
        Ok::<_, anyhow::Error>(verify(repo.clone(), &opts, &NoProgress).await?)
    };
    let r = work.await;
    let released = lock.release().await;
    let report = r?;
    released?;
    Ok(report)
}

/// Checks that the source of a job can be opened (the server answers, the
/// directory exists).
///
/// # Errors
///
/// Why it cannot.
pub async fn check_source(job: &Job) -> Result<()> {
    let url = job.source_url()?;
    let source = open_source(
        url.expose(),
        &SourceOptions {
            excludes: job.excludes.clone(),
            includes: job.includes.clone(),
            globals: false,
            users: false,
        },
    )
    .await
    .with_context(|| format!("source of job {} is not reachable", job.name))?;
    drop(source);
    Ok(())
}

/// Checks that the repository accepts writes: a probe object is created
/// under `locks/`, read back and removed.
///
/// # Errors
///
/// Why it does not.
pub async fn check_writable(repo: &Repository) -> Result<()> {
    let name = format!("probe-{}", Id::random().to_hex());
    let data = bytes::Bytes::from_static(b"backup health probe");
    let sink = repo.sink();
    sink.put(FileKind::Lock, &name, data.clone(), PutMode::Create)
        .await
        .context("the repository does not accept writes")?;
    let back = sink.get(FileKind::Lock, &name).await;
    let deleted = sink.delete(FileKind::Lock, &name).await;
    anyhow::ensure!(
        back.context("reading the probe back")? == data,
        "the repository returned different data for the probe object"
    );
    deleted.context("removing the probe object")?;
    Ok(())
}

/// The total size of the repository's objects, in bytes.
///
/// # Errors
///
/// Storage errors while listing.
pub async fn repository_size(repo: &Repository) -> Result<u64> {
    let mut total = 0;
    for kind in [
        FileKind::Pack,
        FileKind::Index,
        FileKind::Snapshot,
        FileKind::Key,
    ] {
        total += repo
            .sink()
            .list(kind)
            .await?
            .iter()
            .map(|o| o.size)
            .sum::<u64>();
    }
    Ok(total)
}
