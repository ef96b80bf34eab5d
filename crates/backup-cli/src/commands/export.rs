//! `backup export`.

use anyhow::Result;
use backup_core::snapshot::SnapshotFilter;

use super::{bytes, normalize_source};
use crate::cli::ExportArgs;
use crate::context::{usage, with_lock, Ctx};

pub(crate) async fn run(ctx: &Ctx, a: ExportArgs) -> Result<u8> {
    if !backup_sources::export::FORMATS.contains(&a.format.as_str()) {
        return usage(format!(
            "unknown export format `{}`: supported formats are {}",
            a.format,
            backup_sources::export::FORMATS.join(", ")
        ));
    }
    let repo = ctx.open().await?;
    let work = async {
        let repo = repo.clone().load_index().await?;
        let filter = SnapshotFilter {
            source: a.source.as_deref().map(normalize_source),
            ..SnapshotFilter::default()
        };
        let entry = repo.find_snapshot(&a.snapshot, &filter).await?;
        let report = backup_sources::export::export(&repo, &entry, &a.format, &a.to).await?;
        Ok((entry, report))
    };
    let (entry, report) = with_lock(ctx, &repo, false, "export", work).await?;
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
