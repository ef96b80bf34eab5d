//! `backup export`.

use anyhow::Result;
use backup_core::snapshot::SnapshotFilter;

use super::{bytes, normalize_source};
use crate::cli::ExportArgs;
use crate::context::Ctx;

pub(crate) async fn run(ctx: &Ctx, a: ExportArgs) -> Result<u8> {
    let filter = SnapshotFilter {
        source: a.source.as_deref().map(normalize_source),
        ..SnapshotFilter::default()
    };
    // Before the repository is opened (and a password asked).
    backup_ops::maintenance::check_export_format(&a.format)?;
    let repo = ctx.open().await?;
    let (entry, report) = backup_ops::maintenance::export(
        &repo,
        &a.snapshot,
        &filter,
        &a.format,
        &a.to,
        ctx.lock_wait(),
    )
    .await?;
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({
            "snapshot": entry.id,
            "report": report,
        }))?;
    } else {
        ctx.say(format!(
            "exported snapshot {} as {} to {} ({})",
            entry.id.short(),
            report.format,
            report.path.display(),
            bytes(report.bytes)
        ))?;
    }
    Ok(0)
}
