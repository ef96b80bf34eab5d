//! `backup repair`.

use anyhow::Result;
use backup_ops::maintenance::{repair_index, repair_snapshots};

use crate::cli::RepairCommand;
use crate::context::Ctx;

pub(crate) async fn run(ctx: &Ctx, cmd: RepairCommand) -> Result<u8> {
    let repo = ctx.open().await?;
    match cmd {
        RepairCommand::Index { dry_run } => {
            let report = repair_index(&repo, dry_run, ctx.lock_wait(), ctx).await?;
            if ctx.global.json {
                ctx.print_json(&report)?;
            } else {
                let verb = if dry_run { "would write" } else { "wrote" };
                ctx.say(format!(
                    "read {} pack headers ({} blobs); {verb} {} index files replacing {}",
                    report.packs,
                    report.blobs,
                    report.index_files_written,
                    report.index_files_replaced
                ))?;
                for p in &report.unreadable_packs {
                    note!("warning: pack {p} has an unreadable header; its blobs are lost");
                }
            }
            Ok(if report.unreadable_packs.is_empty() {
                0
            } else {
                backup_ops::exit::DAMAGE
            })
        }
        RepairCommand::Snapshots { remove, dry_run } => {
            let damaged = repair_snapshots(&repo, remove, dry_run, ctx.lock_wait(), ctx).await?;
            if ctx.global.json {
                ctx.print_json(&damaged)?;
            } else {
                for d in &damaged {
                    ctx.say(format!(
                        "{} {}",
                        if d.removed { "removed" } else { "damaged" },
                        d.id
                    ))?;
                }
                ctx.say(format!("{} snapshots with missing data", damaged.len()))?;
                if !damaged.is_empty() && !remove {
                    ctx.say("run `backup repair snapshots --remove` to remove them")?;
                }
            }
            let left = damaged.iter().any(|d| !d.removed);
            Ok(if left { backup_ops::exit::DAMAGE } else { 0 })
        }
    }
}
