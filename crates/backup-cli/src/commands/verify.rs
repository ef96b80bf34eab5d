//! `backup verify`.

use anyhow::Result;
use backup_core::snapshot::SnapshotFilter;
use backup_core::verify::{verify, VerifyOptions};

use super::bytes;
use crate::cli::VerifyArgs;
use crate::context::{with_lock, Ctx};

pub(crate) async fn run(ctx: &Ctx, a: VerifyArgs) -> Result<u8> {
    let repo = ctx.open().await?;
    let work = async {
        let snapshots = match &a.snapshot {
            Some(spec) => Some(vec![
                repo.find_snapshot(spec, &SnapshotFilter::default())
                    .await?
                    .id,
            ]),
            None => None,
        };
        let opts = VerifyOptions {
            snapshots,
            read_data_percent: a.read_data,
        };
        let progress = ctx.progress("verify", "packs");
        let result = verify(repo.clone(), &opts, progress.as_ref()).await;
        progress.finish();
        Ok(result?)
    };
    let report = with_lock(&repo, false, "verify", work).await?;
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({"ok": report.is_ok(), "report": report}))?;
    } else {
        ctx.say(format!(
            "checked {} snapshots, {} trees, {} blobs, {} packs indexed",
            report.snapshots_checked,
            report.trees_checked,
            report.blobs_referenced,
            report.packs_indexed
        ))?;
        if a.read_data.is_some() {
            ctx.say(format!(
                "read {} packs ({})",
                report.packs_read,
                bytes(report.bytes_read)
            ))?;
        }
        if report.unindexed_packs > 0 {
            ctx.say(format!(
                "{} packs are not referenced by any index (left by interrupted backups; harmless)",
                report.unindexed_packs
            ))?;
        }
    }
    if report.is_ok() {
        ctx.say("no problems found")?;
        return Ok(0);
    }
    for p in &report.problems {
        eprintln!("damage: {} {}: {}", p.kind, p.object, p.message);
    }
    for s in &report.damaged_snapshots {
        eprintln!("affected snapshot: {s}");
    }
    eprintln!(
        "error: the repository is damaged: {} problems, {} snapshots affected",
        report.problems.len(),
        report.damaged_snapshots.len()
    );
    Ok(crate::exit::DAMAGE)
}
