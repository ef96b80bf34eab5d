//! `backup forget` and `backup prune`.

use anyhow::Result;
use backup_core::prune::{PruneOptions, PruneReport, Retained};
use backup_core::retention::{parse_duration, parse_tz, GroupBy, RetentionPolicy};
use backup_ops::object_lock::LockReport;
use backup_ops::retention::{forget as forget_snapshots, prune, ForgetRequest};

use super::{bytes, snapshot_filter};
use crate::cli::{ForgetArgs, PruneArgs};
use crate::context::{usage, Ctx};

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
    let req = ForgetRequest {
        snapshots: a.snapshots.clone(),
        policy,
        group_by: Some(GroupBy::parse(&a.group_by)?),
        filter: snapshot_filter(&a.filter)?,
        dry_run: a.dry_run,
        prune: a
            .prune
            .then(|| threshold(a.repack_threshold))
            .transpose()?
            .map(|repack_threshold| PruneOptions {
                dry_run: a.dry_run,
                repack_threshold,
            }),
        lock_wait: ctx.lock_wait(),
    };
    // Before the repository is opened (and a password asked).
    req.check()?;
    threshold(a.repack_threshold)?;
    let repo = ctx.open().await?;
    let result = forget_snapshots(&repo, &req, ctx).await?;
    if ctx.global.json {
        ctx.print_json(&result)?;
        return Ok(0);
    }
    let mut group = None;
    for d in &result.decisions {
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
    ctx.say(format!("{verb} {} snapshots", result.removed.len()))?;
    say_retained(ctx, "forget", &result.retained)?;
    if let Some(l) = &result.locks {
        ctx.say(format!("forget: {}", locks_line(l)))?;
    }
    if let Some(p) = &result.prune {
        say_prune(ctx, p)?;
    }
    Ok(0)
}

pub(crate) async fn prune_cmd(ctx: &Ctx, a: PruneArgs) -> Result<u8> {
    let opts = PruneOptions {
        dry_run: a.dry_run,
        repack_threshold: threshold(a.repack_threshold)?,
    };
    let repo = ctx.open().await?;
    let report = prune(&repo, &opts, ctx.lock_wait(), ctx).await?;
    if ctx.global.json {
        ctx.print_json(&report)?;
    } else {
        say_prune(ctx, &report)?;
    }
    Ok(0)
}

fn say_prune(ctx: &Ctx, p: &PruneReport) -> Result<()> {
    let verb = if p.dry_run { "would free" } else { "freed" };
    for e in &p.captures_expired {
        ctx.say(format!(
            "prune: {} {} of {} {}: {} records, {} ({}); the stored stream {}",
            if p.dry_run { "would remove" } else { "removed" },
            e.kind,
            e.identity,
            e.from
                .as_deref()
                .map(|f| format!("from {f}"))
                .unwrap_or_default(),
            e.pieces,
            bytes(e.bytes),
            e.reason,
            match &e.kept_from {
                Some(k) => format!("now begins at {k}"),
                None => "is empty now".to_owned(),
            }
        ))?;
    }
    ctx.say(format!(
        "prune: {} snapshots keep {} blobs; {} of {} packs deleted, {} repacked into {}, {} unindexed removed",
        p.snapshots, p.blobs_used, p.packs_deleted, p.packs_before, p.packs_repacked, p.packs_written, p.packs_unindexed
    ))?;
    say_retained(ctx, "prune", &p.retained)?;
    ctx.say(format!(
        "prune: {verb} {} (deleted {}, rewritten {}); {} unused left in kept packs",
        bytes(p.bytes_freed),
        bytes(p.bytes_deleted),
        bytes(p.bytes_rewritten),
        bytes(p.bytes_unused_kept)
    ))
}

/// What extending the S3 Object Lock of the kept snapshots did, in a line.
pub(crate) fn locks_line(l: &LockReport) -> String {
    format!(
        "S3 Object Lock: {} objects the kept snapshots need are locked until the policy lets them go ({} extended{})",
        l.checked,
        l.extended,
        l.until
            .map(|u| format!(", the longest until {}", u.to_rfc3339_opts(chrono::SecondsFormat::Secs, true)))
            .unwrap_or_default()
    )
}

/// Files storage kept under S3 Object Lock: each with until when, then
/// what happens to them.
fn say_retained(ctx: &Ctx, who: &str, retained: &[Retained]) -> Result<()> {
    for r in retained {
        ctx.say(format!(
            "{who}: kept {} {} (S3 Object Lock until {})",
            r.kind, r.name, r.until
        ))?;
    }
    if !retained.is_empty() {
        ctx.say(format!(
            "{who}: {} locked file{} stay; run it again after the dates above to remove {}",
            retained.len(),
            if retained.len() == 1 { "" } else { "s" },
            if retained.len() == 1 { "it" } else { "them" }
        ))?;
    }
    Ok(())
}
