//! `backup forget` and `backup prune`.

use anyhow::Result;
use backup_core::prune::{prune, PruneOptions, PruneReport};
use backup_core::repo::Repository;
use backup_core::retention::{apply, parse_duration, parse_tz, GroupBy, RetentionPolicy};
use backup_core::FileKind;

use super::{bytes, snapshot_filter};
use crate::cli::{ForgetArgs, PruneArgs};
use crate::context::{usage, with_lock, Ctx};

fn threshold(percent: f64) -> Result<f64> {
    if (0.0..=100.0).contains(&percent) {
        Ok(percent / 100.0)
    } else {
        usage("--repack-threshold must be a percentage between 0 and 100")
    }
}

pub(crate) async fn forget(ctx: &Ctx, a: ForgetArgs) -> Result<u8> {
    let policy = RetentionPolicy {
        last: a.keep_last,
        hourly: a.keep_hourly,
        daily: a.keep_daily,
        weekly: a.keep_weekly,
        monthly: a.keep_monthly,
        yearly: a.keep_yearly,
        within: a.keep_within.as_deref().map(parse_duration).transpose()?,
        tags: a.keep_tags.clone(),
        tz: a.tz.as_deref().map(parse_tz).transpose()?,
    };
    let group_by = GroupBy::parse(&a.group_by)?;
    let filter = snapshot_filter(&a.filter)?;
    if policy.is_empty() && a.snapshots.is_empty() {
        return usage("nothing to forget: name snapshots or give a policy such as --keep-daily 7");
    }
    let repack = threshold(a.repack_threshold)?;
    let repo = ctx.open().await?;
    let exclusive = a.prune && !a.dry_run;
    let work = async {
        // Explicit ids first.
        let mut remove = Vec::new();
        for spec in &a.snapshots {
            remove.push(
                repo.find_snapshot(spec, &backup_core::snapshot::SnapshotFilter::default())
                    .await?
                    .id,
            );
        }
        let (all, _) = repo.snapshots().await?;
        let considered: Vec<_> = all
            .into_iter()
            .filter(|s| filter.matches(&s.snapshot))
            .collect();
        let decisions = if policy.is_empty() {
            Vec::new()
        } else {
            apply(&considered, &policy, group_by)?
        };
        for d in &decisions {
            if !d.keep && !remove.contains(&d.id) {
                remove.push(d.id);
            }
        }
        if !a.dry_run {
            for id in &remove {
                repo.sink().delete(FileKind::Snapshot, &id.to_hex()).await?;
            }
        }
        let pruned = if a.prune {
            Some(run_prune(ctx, &repo, a.dry_run, repack).await?)
        } else {
            None
        };
        Ok((decisions, remove, pruned))
    };
    let (decisions, removed, pruned) = with_lock(ctx, &repo, exclusive, "forget", work).await?;
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({
            "dry_run": a.dry_run,
            "decisions": decisions,
            "removed": removed,
            "prune": pruned,
        }))?;
        return Ok(0);
    }
    let mut group = None;
    for d in &decisions {
        if group.as_ref() != Some(&d.group) {
            ctx.say(format!("group {}", d.group))?;
            group = Some(d.group.clone());
        }
        ctx.say(format!(
            "  {} {}  {:<6}  {}",
            d.id.short(),
            d.time.format("%Y-%m-%d %H:%M:%S"),
            if d.keep { "keep" } else { "remove" },
            d.reasons.join(", ")
        ))?;
    }
    let verb = if a.dry_run { "would remove" } else { "removed" };
    ctx.say(format!("{verb} {} snapshots", removed.len()))?;
    if let Some(p) = &pruned {
        say_prune(ctx, p)?;
    }
    Ok(0)
}

pub(crate) async fn prune_cmd(ctx: &Ctx, a: PruneArgs) -> Result<u8> {
    let repack = threshold(a.repack_threshold)?;
    let repo = ctx.open().await?;
    let work = run_prune(ctx, &repo, a.dry_run, repack);
    let report = with_lock(ctx, &repo, !a.dry_run, "prune", work).await?;
    if ctx.global.json {
        ctx.print_json(&report)?;
    } else {
        say_prune(ctx, &report)?;
    }
    Ok(0)
}

async fn run_prune(
    ctx: &Ctx,
    repo: &Repository,
    dry_run: bool,
    repack_threshold: f64,
) -> Result<PruneReport> {
    let repo = repo.clone().load_index().await?;
    let progress = ctx.progress("prune", "packs");
    let opts = PruneOptions {
        dry_run,
        repack_threshold,
    };
    let report = prune(&repo, &opts, progress.as_ref()).await;
    progress.finish();
    Ok(report?)
}

fn say_prune(ctx: &Ctx, p: &PruneReport) -> Result<()> {
    let verb = if p.dry_run { "would free" } else { "freed" };
    ctx.say(format!(
        "prune: {} snapshots keep {} blobs; {} of {} packs deleted, {} repacked into {}, {} unindexed removed",
        p.snapshots, p.blobs_used, p.packs_deleted, p.packs_before, p.packs_repacked, p.packs_written, p.packs_unindexed
    ))?;
    ctx.say(format!(
        "prune: {verb} {} (deleted {}, rewritten {}); {} unused left in kept packs",
        bytes(p.bytes_freed),
        bytes(p.bytes_deleted),
        bytes(p.bytes_rewritten),
        bytes(p.bytes_unused_kept)
    ))
}
