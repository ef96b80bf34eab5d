//! Verifying a repository, and the restore test: restore into a scratch
//! target, compare with the snapshot, remove the scratch copy.

use std::time::Duration;

use backup_core::lock::LockMode;
use backup_core::reader::SnapshotReader;
use backup_core::repo::Repository;
use backup_core::snapshot::SnapshotFilter;
use backup_core::target::{RestoreOptions, Target};
use backup_core::verify::{verify as check, VerifyOptions, VerifyReport};
use serde::Serialize;

use crate::backup::job_snapshots;
use crate::cold::{ColdRead, ThawReport};
use crate::error::{Error, Result};
use crate::feedback::Feedback;

/// Which snapshots to check and how deeply.
#[derive(Debug, Clone, Default)]
pub struct VerifyRequest {
    /// One snapshot (id, prefix or `latest`); all when `None`.
    pub snapshot: Option<String>,
    /// Only the snapshots of this job.
    pub job: Option<String>,
    /// Percentage of packs to download and check (structure only when
    /// `None`).
    pub read_data: Option<f64>,
    /// Keep the scratch copy of a restore test.
    pub keep: bool,
    /// How long to wait for a conflicting lock.
    pub lock_wait: Duration,
    /// With `read_data`: thaw the archived packs chosen for reading first
    /// ([`crate::cold::packs_to_verify`]); `None` reads packs as they are
    /// (archived ones are counted as not read, not as damage).
    pub cold: Option<ColdRead>,
}

/// The outcome of a restore test.
#[derive(Debug, Clone, Serialize)]
pub struct RestoreTest {
    /// The snapshot restored (full id).
    pub snapshot: String,
    /// Where it was restored (redacted).
    pub target: String,
    /// Files and streams restored.
    pub files: u64,
    /// Bytes restored.
    pub bytes: u64,
    /// Every difference between the restored copy and the snapshot.
    pub differences: Vec<String>,
    /// Whether the scratch copy was kept (`--keep`, or differences).
    pub kept: bool,
}

/// What a verification found.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyResult {
    /// The structural (and content) check.
    pub report: VerifyReport,
    /// The restore test, when one ran (it runs only when the check found
    /// nothing wrong).
    pub restore_test: Option<RestoreTest>,
    /// Where the thaw of the packs read stood, when archived packs were
    /// thawed first ([`VerifyRequest::cold`]).
    pub cold: Option<ThawReport>,
}

impl VerifyResult {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.report.is_ok()
            && self
                .restore_test
                .as_ref()
                .is_none_or(|t| t.differences.is_empty())
    }
}

/// Checks the repository under a shared lock: every selected snapshot's
/// trees and blobs, `read_data` percent of the packs (with `req.cold`,
/// chosen first and thawed: see [`VerifyRequest::cold`]), then, when
/// `restore_test` is given and nothing was found wrong, a restore of the
/// snapshot (or the latest) into that scratch target compared with the
/// snapshot; the scratch copy is removed unless kept or different.
///
/// # Errors
///
/// Errors that stop the check (damage is in the result, not an error);
/// with `req.cold`, packs still thawing after the wait (exit code 1, the
/// requests kept: [`crate::cold::thaw`]).
pub async fn verify(
    repo: &Repository,
    req: &VerifyRequest,
    restore_test: Option<&dyn Target>,
    feedback: &dyn Feedback,
) -> Result<VerifyResult> {
    let work = async {
        let snapshots = match (&req.snapshot, &req.job) {
            (Some(spec), _) => Some(vec![
                repo.find_snapshot(spec, &SnapshotFilter::default())
                    .await?
                    .id,
            ]),
            (None, Some(job)) => Some(
                job_snapshots(repo, job)
                    .await?
                    .into_iter()
                    .map(|s| s.id)
                    .collect(),
            ),
            (None, None) => None,
        };
        let mut opts = VerifyOptions {
            snapshots,
            read_data_percent: req.read_data,
            read_packs: None,
        };
        let mut thawed = None;
        if let (Some(cold), Some(percent)) = (&req.cold, req.read_data) {
            // Damaged index files are the check's to report, not a reason
            // to stop before it.
            let (indexed, _) = repo.clone().load_index_lenient().await?;
            let packs = crate::cold::packs_to_verify(&indexed, &cold.store, percent).await?;
            thawed = Some(crate::cold::thaw_for(cold, &packs, false, feedback).await?);
            opts.read_packs = Some(packs.into_iter().collect());
        }
        let progress = feedback.progress("verify", "packs");
        let result = check(repo.clone(), &opts, progress.as_ref()).await;
        progress.finish();
        let report = result?;
        let test = match restore_test {
            Some(t) if report.is_ok() => Some(run_restore_test(repo, t, req, feedback).await?),
            _ => None,
        };
        Ok::<_, Error>(VerifyResult {
            report,
            restore_test: test,
            cold: thawed,
        })
    };
    repo.with_lock(LockMode::Shared, "verify", req.lock_wait, work)
        .await
}

/// Restores the chosen snapshot into the scratch target and compares.
async fn run_restore_test(
    repo: &Repository,
    target: &dyn Target,
    req: &VerifyRequest,
    feedback: &dyn Feedback,
) -> Result<RestoreTest> {
    let repo = repo.clone().load_index().await?;
    let spec = req.snapshot.as_deref().unwrap_or("latest");
    let entry = repo.find_snapshot(spec, &SnapshotFilter::default()).await?;
    let opts = RestoreOptions::default();
    target.check_options(&opts)?;
    let reader = SnapshotReader::new(repo, entry);
    let progress = feedback.progress("restore", "files");
    let restored = target.restore(&reader, &opts, progress.clone()).await;
    progress.finish();
    let report = restored?;
    let differences = target.check_restored(&reader).await?;
    let kept = req.keep || !differences.is_empty();
    if !kept {
        target.discard().await?;
    }
    Ok(RestoreTest {
        snapshot: reader.id().to_hex(),
        target: report.target,
        files: report.stats.files,
        bytes: report.stats.bytes,
        differences,
        kept,
    })
}
