//! `backup verify`.

use anyhow::Result;
use backup_core::verify::VerifyReport;
use backup_ops::verify::{verify, VerifyRequest};
use backup_sources::TargetSpec;

use super::bytes;
use crate::cli::VerifyArgs;
use crate::context::Ctx;

pub(crate) async fn run(ctx: &Ctx, a: VerifyArgs) -> Result<u8> {
    if a.read_data.is_none() && (a.cold.wait.is_some() || a.cold.tier.is_some()) {
        return crate::context::usage(
            "--cold-wait and --cold-tier thaw the packs --read-data reads: give --read-data too",
        );
    }
    let repo = ctx.open().await?;
    let target = match &a.restore_test {
        Some(url) => Some(TargetSpec::new(url.clone())?.open()?),
        None => None,
    };
    let req = VerifyRequest {
        snapshot: a.snapshot.clone(),
        job: None,
        read_data: a.read_data,
        keep: a.keep,
        lock_wait: ctx.lock_wait(),
        cold: match a.read_data {
            Some(_) => super::tier::cold_read(ctx, &a.cold, false)?,
            None => None,
        },
    };
    let result = verify(&repo, &req, target.as_deref(), ctx).await?;
    let (report, test) = (&result.report, &result.restore_test);
    let test_ok = test.as_ref().is_none_or(|t| t.differences.is_empty());
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({
            "ok": result.is_ok(),
            "report": report,
            "restore_test": test,
            "cold": result.cold,
        }))?;
    } else {
        if let Some(cold) = &result.cold {
            ctx.say(super::tier::thaw_line(cold, "chosen for reading"))?;
        }
        print_report(ctx, report, a.read_data.is_some())?;
        if let Some(t) = test {
            ctx.say(format!(
                "restore test: snapshot {} restored to {} and re-read: {} files, {}{}",
                &t.snapshot[..8],
                t.target,
                t.files,
                bytes(t.bytes),
                if t.kept { " (kept)" } else { " (removed)" }
            ))?;
        }
    }
    if result.is_ok() {
        ctx.say("no problems found")?;
        return Ok(0);
    }
    for p in &report.problems {
        note!("damage: {} {}: {}", p.kind, p.object, p.message);
    }
    for s in &report.damaged_snapshots {
        note!("affected snapshot: {s}");
    }
    if let Some(t) = test {
        for d in &t.differences {
            note!("restore test: {d}");
        }
    }
    note!(
        "error: the repository is damaged: {} problems, {} snapshots affected{}",
        report.problems.len(),
        report.damaged_snapshots.len(),
        if test_ok {
            String::new()
        } else {
            ", and the restore test found differences".to_owned()
        }
    );
    Ok(backup_ops::exit::DAMAGE)
}

fn print_report(ctx: &Ctx, report: &VerifyReport, read_data: bool) -> Result<()> {
    ctx.say(format!(
        "checked {} snapshots, {} trees, {} blobs, {} packs indexed",
        report.snapshots_checked,
        report.trees_checked,
        report.blobs_referenced,
        report.packs_indexed
    ))?;
    if read_data {
        ctx.say(format!(
            "read {} packs ({})",
            report.packs_read,
            bytes(report.bytes_read)
        ))?;
    }
    if report.packs_archived > 0 {
        ctx.say(format!(
            "{} packs are in an archive storage class and were not read (not damage): run again with --cold-wait DURATION (for example 12h) to thaw and read them",
            report.packs_archived
        ))?;
    }
    if report.unindexed_packs > 0 {
        ctx.say(format!(
            "{} packs are not referenced by any index (left by interrupted backups; harmless)",
            report.unindexed_packs
        ))?;
    }
    Ok(())
}
