//! Restoring a snapshot, with the safety backup of what a destructive
//! restore replaces (DESIGN.md section 7).

use std::time::Duration;

use backup_core::archiver::{backup as archive, BackupOptions};
use backup_core::lock::LockMode;
use backup_core::reader::SnapshotReader;
use backup_core::repo::{IndexedRepository, Repository};
use backup_core::snapshot::{SnapshotEntry, SnapshotFilter};
use backup_core::target::{RestoreOptions, RestoreReport, Target};
use backup_core::Id;
use backup_sources::TargetSpec;

use crate::cold::{ColdRead, ThawReport};

use crate::error::{Error, Result, ResultExt};
use crate::feedback::{json, Feedback};

/// What to restore and how.
#[derive(Debug, Clone, Default)]
pub struct RestoreRequest {
    /// The snapshot: an id, a unique prefix or `latest`.
    pub snapshot: String,
    /// What `latest` is narrowed to.
    pub filter: SnapshotFilter,
    /// The target's options (selection, `--drop`, dry run, ...).
    pub options: RestoreOptions,
    /// Whether a destructive restore backs up what it replaces first
    /// (`--no-safety-backup` turns it off).
    pub safety_backup: bool,
    /// Whether a destructive restore was confirmed already (`--yes`); when
    /// not, [`Feedback::confirm`] is asked.
    pub confirmed: bool,
    /// How long to wait for a conflicting lock.
    pub lock_wait: Duration,
    /// Thaw archived packs the snapshot needs first (S3 archive classes):
    /// `None` reads packs as they are. A dry-run restore only counts,
    /// whatever the thaw options say.
    pub cold: Option<ColdRead>,
}

/// What a restore did.
#[derive(Debug, Clone)]
pub struct RestoreResult {
    /// The snapshot restored.
    pub snapshot: SnapshotEntry,
    /// The target's report.
    pub report: RestoreReport,
    /// The safety backup taken of what the restore replaced.
    pub safety_backup: Option<Id>,
    /// Where the thaw of archived packs stood (when
    /// [`RestoreRequest::cold`] was set): in a dry run, what must be
    /// thawed.
    pub cold: Option<ThawReport>,
}

/// Opens a restore target and checks the options against it, before
/// anything else happens (before a repository is opened or a question
/// asked).
///
/// # Errors
///
/// A malformed URL; an option the target does not support.
pub fn open_target(spec: &TargetSpec, opts: &RestoreOptions) -> Result<Box<dyn Target>> {
    let target = spec.open()?;
    target.check_options(opts)?;
    Ok(target)
}

/// Restores a snapshot of `repo` into `target` (opened from `spec` by
/// [`open_target`]) under a shared lock. A restore that would replace data
/// is confirmed first (unless `confirmed`), then the data it replaces is
/// backed up into the same repository (unless `safety_backup` is off); a
/// failed safety backup stops the restore before anything changed.
///
/// # Errors
///
/// An unknown snapshot, a refused confirmation, a failed safety backup,
/// the target's refusals and errors, storage and lock errors.
pub async fn restore(
    repo: &Repository,
    target: &dyn Target,
    spec: &TargetSpec,
    req: &RestoreRequest,
    feedback: &dyn Feedback,
) -> Result<RestoreResult> {
    feedback.detail("target", json(target.describe()));
    let work = async {
        let repo = repo.clone().load_index().await?;
        let (entry, point_opts) = point_in_time(&repo, spec, req, feedback).await?;
        // `latest` may name a snapshot saved since the index was read.
        let mut repo = Box::pin(repo.covering(&entry.snapshot.tree)).await?;
        let opts = point_opts.as_ref().unwrap_or(&req.options);
        feedback.detail("snapshot", json(entry.id));
        let mut thawed = None;
        if let Some(cold) = &req.cold {
            let tree = entry.snapshot.tree;
            // A file restore with a selection reads only what it selects;
            // a database target's selection names tables or keys, which
            // its own streams hold (the whole snapshot is thawed).
            let packs = if entry.snapshot.source.kind == "files"
                && !(opts.includes.is_empty() && opts.excludes.is_empty())
            {
                let filter = backup_core::filter::PathFilter::new(&opts.includes, &opts.excludes)?;
                Box::pin(backup_core::restorer::packs_read(&repo, tree, &filter)).await?
            } else {
                Box::pin(crate::cold::packs_of_trees(&repo, std::iter::once(tree))).await?
            };
            thawed = Some(crate::cold::thaw_for(cold, &packs, opts.dry_run, feedback).await?);
        }
        // Everything the target can check before it changes anything is
        // checked before the confirmation and the safety backup.
        if !opts.dry_run {
            let reader = SnapshotReader::new(repo.clone(), entry.clone());
            target.check(&reader, opts).await?;
        }
        if opts.drop && !opts.dry_run && !req.confirmed {
            feedback.confirm(&format!(
                "This replaces data in {} with snapshot {}. Continue?",
                target.describe(),
                entry.id.short()
            ))?;
        }
        let mut safety = None;
        if !opts.dry_run && req.safety_backup && target.replaces_data(opts).await? {
            let id = Box::pin(safety_backup(&mut repo, spec, &entry.id.short(), feedback)).await?;
            feedback.detail("safety_backup", json(id));
            safety = Some(id);
        }
        let progress = feedback.progress("restore", "files");
        let reader = SnapshotReader::new(repo, entry.clone());
        let report = target.restore(&reader, opts, progress.clone()).await;
        progress.finish();
        Ok::<_, Error>(RestoreResult {
            snapshot: entry,
            report: report?,
            safety_backup: safety,
            cold: thawed,
        })
    };
    repo.with_lock(LockMode::Shared, "restore", req.lock_wait, work)
        .await
}

/// The snapshot to restore and, for a restore to a point in time, the
/// options with the replay its plan sets ([`crate::pitr::plan`]: the
/// newest base before the target, or the one named, through the capture
/// driver of the target's kind). A kind no driver restores into takes the
/// snapshot the request names, and its target judges the point.
async fn point_in_time(
    repo: &IndexedRepository,
    spec: &TargetSpec,
    req: &RestoreRequest,
    feedback: &dyn Feedback,
) -> Result<(SnapshotEntry, Option<RestoreOptions>)> {
    // Names what the repository has when nothing passes the filter.
    let chosen = repo.find_snapshot(&req.snapshot, &req.filter).await?;
    if req.options.is_point_in_time() {
        let named = (req.snapshot != "latest").then_some(chosen.id);
        let source = req.filter.source.as_deref();
        if let Some(plan) =
            crate::pitr::plan(repo, spec.kind().name(), source, named, &req.options).await?
        {
            let Some(replay) = plan.replay else {
                return Ok((plan.base, None));
            };
            feedback.detail(
                "point_in_time",
                serde_json::json!({
                    "stream": replay.stream,
                    "until": plan.until.map(|u| u.to_string()),
                    "pieces": replay.pieces.len(),
                }),
            );
            let mut o = req.options.clone();
            o.replay = Some(replay);
            return Ok((plan.base, Some(o)));
        }
    }
    Ok((chosen, None))
}

/// Backs up the restore target before a destructive restore replaces its
/// data; returns the snapshot id. The repository's index is updated so
/// that the restore sees the new data.
async fn safety_backup(
    repo: &mut IndexedRepository,
    target: &TargetSpec,
    restoring: &str,
    feedback: &dyn Feedback,
) -> Result<Id> {
    const FAIL: &str = "the safety backup of the restore target failed, so nothing was changed; fix the cause or pass --no-safety-backup";
    let run = async {
        let mut source = target.as_source()?.open().await?;
        let opts = BackupOptions {
            tags: vec![
                "safety-backup".to_owned(),
                format!("before-restore-{restoring}"),
            ],
            ..BackupOptions::default()
        };
        let progress = feedback.progress("safety", "items");
        let out = archive(repo, source.as_mut(), &opts, progress.clone()).await;
        progress.finish();
        Ok::<_, Error>(out?)
    };
    let out = run.await.context(FAIL)?;
    repo.set_index((*out.index).clone());
    out.id.ok_or_else(|| Error::usage(FAIL))
}
