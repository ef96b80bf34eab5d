//! Forgetting snapshots by id or policy, pruning, and a job's retention
//! after a successful backup.

use std::time::Duration;

use backup_core::capture::{CaptureExpiry, CaptureName};
use backup_core::lock::LockMode;
use backup_core::prune::{prune as prune_packs, PruneOptions, PruneReport, Retained};
use backup_core::repo::Repository;
use backup_core::retention::{apply, Decision, GroupBy, RetentionPolicy};
use backup_core::snapshot::{SnapshotEntry, SnapshotFilter};
use backup_core::{FileKind, Id};
use backup_sources::capture::registry::drivers;
use backup_sources::capture::Inventory;
use serde::Serialize;

use crate::backup::job_snapshots;
use crate::config::Job;
use crate::error::{Error, Result};
use crate::feedback::{json, Feedback};
use crate::object_lock::{extend_locks, LockReport};

/// What `forget` removes.
#[derive(Debug, Clone, Default)]
pub struct ForgetRequest {
    /// Snapshots named explicitly (ids, prefixes).
    pub snapshots: Vec<String>,
    /// The policy (empty: only the named snapshots).
    pub policy: RetentionPolicy,
    /// How snapshots are grouped before the policy applies.
    pub group_by: Option<GroupBy>,
    /// Which snapshots the policy considers.
    pub filter: SnapshotFilter,
    /// Decide and report, change nothing.
    pub dry_run: bool,
    /// Prune afterwards with these options.
    pub prune: Option<PruneOptions>,
    /// How long to wait for a conflicting lock.
    pub lock_wait: Duration,
}

impl ForgetRequest {
    /// Checks the request before anything is opened.
    ///
    /// # Errors
    ///
    /// A usage error when neither snapshots nor a policy are given.
    pub fn check(&self) -> Result<()> {
        if self.policy.is_empty() && self.snapshots.is_empty() {
            return Err(Error::usage(
                "nothing to forget: name snapshots or give a policy such as --keep-daily 7",
            ));
        }
        Ok(())
    }
}

/// What `forget` did or would do.
#[derive(Debug, Clone, Serialize)]
pub struct ForgetResult {
    /// Whether nothing was changed.
    pub dry_run: bool,
    /// The policy's decision for every snapshot it considered.
    pub decisions: Vec<Decision>,
    /// Snapshots removed (or to remove).
    pub removed: Vec<Id>,
    /// Snapshots to remove that storage keeps under S3 Object Lock, with
    /// until when; they stay listed, and their data stays, until a later
    /// forget after that date.
    pub retained: Vec<Retained>,
    /// The S3 Object Lock of what the kept snapshots need, extended until
    /// the policy lets them go; `None` when storage locks nothing, for a
    /// dry run, or without a policy.
    pub locks: Option<LockReport>,
    /// The prune that followed.
    pub prune: Option<PruneReport>,
}

/// Deletes a file, or notes it in `retained` when storage keeps it under
/// S3 Object Lock; `true` when it was deleted.
async fn delete_unless_retained(
    repo: &Repository,
    kind: FileKind,
    name: &str,
    retained: &mut Vec<Retained>,
) -> Result<bool> {
    match repo.sink().delete(kind, name).await {
        Ok(()) => Ok(true),
        Err(e) => {
            retained.push(Retained::from_error(e)?);
            Ok(false)
        }
    }
}

/// Removes the named snapshots and those the policy does not keep, then
/// prunes when asked. Takes a shared lock, or an exclusive one when it
/// prunes.
///
/// # Errors
///
/// A usage error when neither snapshots nor a policy are given; unknown
/// snapshots, storage and lock errors.
pub async fn forget(
    repo: &Repository,
    req: &ForgetRequest,
    feedback: &dyn Feedback,
) -> Result<ForgetResult> {
    req.check()?;
    if !req.dry_run {
        repo.require_deletes("forget")?;
    }
    let exclusive = req.prune.is_some() && !req.dry_run;
    let work = async {
        let mut remove = Vec::new();
        for spec in &req.snapshots {
            remove.push(
                repo.find_snapshot(spec, &SnapshotFilter::default())
                    .await?
                    .id,
            );
        }
        let (all, _) = repo.snapshots().await?;
        let considered: Vec<_> = all
            .into_iter()
            .filter(|s| req.filter.matches(&s.snapshot))
            .collect();
        let decisions = if req.policy.is_empty() {
            Vec::new()
        } else {
            let group_by = req.group_by.unwrap_or_else(GroupBy::default_grouping);
            decide(repo, &considered, &req.policy, group_by).await?
        };
        for d in &decisions {
            if !d.keep && !remove.contains(&d.id) {
                remove.push(d.id);
            }
        }
        let mut retained = Vec::new();
        if !req.dry_run {
            let mut removed = Vec::new();
            for id in remove {
                if delete_unless_retained(repo, FileKind::Snapshot, &id.to_hex(), &mut retained)
                    .await?
                {
                    removed.push(id);
                }
            }
            remove = removed;
        }
        let locks = if req.dry_run {
            None
        } else {
            extend_locks(repo, &req.policy, &decisions, &considered).await?
        };
        let prune = match &req.prune {
            Some(opts) => Some(
                run_prune(
                    repo,
                    &PruneOptions {
                        dry_run: req.dry_run,
                        ..*opts
                    },
                    &remove,
                    feedback,
                )
                .await?,
            ),
            None => None,
        };
        Ok::<_, Error>(ForgetResult {
            dry_run: req.dry_run,
            decisions,
            removed: remove,
            retained,
            locks,
            prune,
        })
    };
    repo.with_lock(
        LockMode::exclusive_if(exclusive),
        "forget",
        req.lock_wait,
        work,
    )
    .await
}

/// Removes unreferenced data under an exclusive lock (a shared one for a
/// dry run).
///
/// # Errors
///
/// Storage and lock errors; an unreadable snapshot or tree stops it.
pub async fn prune(
    repo: &Repository,
    opts: &PruneOptions,
    lock_wait: Duration,
    feedback: &dyn Feedback,
) -> Result<PruneReport> {
    if !opts.dry_run {
        repo.require_deletes("prune")?;
    }
    let mode = LockMode::exclusive_if(!opts.dry_run);
    repo.with_lock(
        mode,
        "prune",
        lock_wait,
        run_prune(repo, opts, &[], feedback),
    )
    .await
}

/// Prunes under the caller's lock: first the captured ranges (WAL, oplog)
/// that no snapshot kept after `forgotten` needs, then the packs.
async fn run_prune(
    repo: &Repository,
    opts: &PruneOptions,
    forgotten: &[Id],
    feedback: &dyn Feedback,
) -> Result<PruneReport> {
    let (all, _) = repo.snapshots().await?;
    let kept: Vec<SnapshotEntry> = all
        .into_iter()
        .filter(|s| !forgotten.contains(&s.id))
        .collect();
    let expired = expired_captures(repo, &kept).await?;
    let mut retained = Vec::new();
    if !opts.dry_run {
        for (_, names) in &expired {
            for n in names {
                delete_unless_retained(repo, FileKind::Capture, &n.file_name(), &mut retained)
                    .await?;
            }
        }
    }
    let repo = repo.clone().load_index().await?;
    let progress = feedback.progress("prune", "packs");
    let report = prune_packs(&repo, opts, progress.as_ref()).await;
    progress.finish();
    let mut report = report?;
    report.captures_expired = expired.into_iter().map(|(e, _)| e).collect();
    retained.append(&mut report.retained);
    report.retained = retained;
    Ok(report)
}

/// Captured ranges no snapshot of `kept` needs, by the rules of each
/// source kind that captures continuously.
async fn expired_captures(
    repo: &Repository,
    kept: &[SnapshotEntry],
) -> Result<Vec<(CaptureExpiry, Vec<CaptureName>)>> {
    let kept = Inventory::with_snapshots(repo, kept.to_vec()).await?;
    let mut out = Vec::new();
    for d in drivers() {
        out.extend(d.expired(repo, &kept).await?);
    }
    Ok(out)
}

/// The policy's decision for `snapshots`, keeping also the snapshots a
/// `--keep-within` period needs beyond its own rule so that every point of
/// the period stays restorable from captured changes (each driver's
/// anchors), saying why.
async fn decide(
    repo: &Repository,
    snapshots: &[SnapshotEntry],
    policy: &RetentionPolicy,
    group_by: GroupBy,
) -> Result<Vec<Decision>> {
    let mut decisions = apply(snapshots, policy, group_by)?;
    let Some(within) = policy.within else {
        return Ok(decisions);
    };
    let since =
        chrono::Utc::now() - chrono::Duration::from_std(within).unwrap_or(chrono::Duration::MAX);
    let mut anchors = Vec::new();
    for d in drivers() {
        anchors.extend(d.anchors(repo, snapshots, since).await?);
    }
    for d in decisions
        .iter_mut()
        .filter(|d| !d.keep && anchors.contains(&d.id))
    {
        d.keep = true;
        d.reasons
            .push("base of the point-in-time window (within)".to_owned());
    }
    Ok(decisions)
}

/// What a job's retention did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RetentionOutcome {
    /// Snapshots removed.
    pub removed: Vec<Id>,
    /// Snapshots the policy removes that storage keeps under S3 Object
    /// Lock (a later run removes them).
    pub retained: Vec<Retained>,
    /// Snapshots kept.
    pub kept: usize,
    /// The S3 Object Lock of what the kept snapshots need, extended until
    /// the policy lets them go (`None` when storage locks nothing).
    pub locks: Option<LockReport>,
    /// The prune report, when pruning ran.
    pub prune: Option<PruneReport>,
}

/// Applies a job's retention policy to its snapshots (shared lock), then
/// prunes (exclusive lock) when the job says so and something was removed.
/// `None` when the job has no retention.
///
/// # Errors
///
/// Storage and lock errors.
pub async fn apply_retention(
    repo: &Repository,
    job: &Job,
    lock_wait: Duration,
) -> Result<Option<RetentionOutcome>> {
    let Some(retention) = &job.retention else {
        return Ok(None);
    };
    repo.require_deletes(&format!("the retention of job {}", job.name))?;
    let mut outcome = retain(repo, &job.name, &retention.policy, lock_wait).await?;
    if retention.prune && !outcome.removed.is_empty() {
        outcome.prune = Some(
            prune(
                repo,
                &PruneOptions::default(),
                lock_wait,
                &crate::Unattended,
            )
            .await?,
        );
    }
    Ok(Some(outcome))
}

async fn retain(
    repo: &Repository,
    job: &str,
    policy: &RetentionPolicy,
    lock_wait: Duration,
) -> Result<RetentionOutcome> {
    let work = async {
        let mut out = RetentionOutcome::default();
        let snapshots = job_snapshots(repo, job).await?;
        let decisions = decide(repo, &snapshots, policy, GroupBy::default_grouping()).await?;
        for d in &decisions {
            if d.keep {
                out.kept += 1;
            } else if delete_unless_retained(
                repo,
                FileKind::Snapshot,
                &d.id.to_hex(),
                &mut out.retained,
            )
            .await?
            {
                out.removed.push(d.id);
            }
        }
        out.locks = extend_locks(repo, policy, &decisions, &snapshots).await?;
        Ok::<_, Error>(out)
    };
    repo.with_lock(LockMode::Shared, "forget", lock_wait, work)
        .await
}

/// Notes a retention outcome in the audit details.
pub fn note(feedback: &dyn Feedback, outcome: &RetentionOutcome) {
    feedback.detail("retention_removed", json(&outcome.removed));
    if !outcome.retained.is_empty() {
        feedback.detail("retention_retained", json(&outcome.retained));
    }
    if let Some(locks) = &outcome.locks {
        feedback.detail("retention_locks", json(locks));
    }
}
