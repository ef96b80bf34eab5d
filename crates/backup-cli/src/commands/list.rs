//! `backup list` and `backup show`.

use anyhow::Result;
use backup_core::snapshot::SnapshotFilter;

use super::{bytes, normalize_source, snapshot_filter};
use crate::cli::{ListArgs, ShowArgs};
use crate::context::Ctx;

pub(crate) async fn list(ctx: &Ctx, a: ListArgs) -> Result<u8> {
    let filter = snapshot_filter(&a.filter)?;
    let repo = ctx.open().await?;
    let (all, damaged) = repo.snapshots().await?;
    for (name, e) in &damaged {
        eprintln!("warning: snapshot file {name} cannot be read: {e}");
    }
    let selected: Vec<_> = all
        .into_iter()
        .filter(|s| filter.matches(&s.snapshot))
        .collect();
    if ctx.global.json {
        let v: Vec<_> = selected
            .iter()
            .map(|s| serde_json::json!({"id": s.id, "snapshot": s.snapshot}))
            .collect();
        ctx.print_json(&v)?;
        return Ok(0);
    }
    ctx.say(format!(
        "{:<8}  {:<20}  {:<12}  {:<8}  {:>10}  {:<16}  {}",
        "ID", "TIME", "HOST", "KIND", "SIZE", "TAGS", "SOURCE"
    ))?;
    for s in &selected {
        let sn = &s.snapshot;
        ctx.say(format!(
            "{:<8}  {:<20}  {:<12}  {:<8}  {:>10}  {:<16}  {}",
            s.id.short(),
            sn.time.format("%Y-%m-%d %H:%M:%S"),
            sn.host,
            sn.source.kind,
            bytes(sn.stats.logical_bytes),
            sn.tags.join(","),
            sn.source.url
        ))?;
    }
    ctx.say(format!("{} snapshots", selected.len()))?;
    Ok(0)
}

pub(crate) async fn show(ctx: &Ctx, a: ShowArgs) -> Result<u8> {
    let repo = ctx.open().await?;
    let filter = SnapshotFilter {
        source: a.source.as_deref().map(normalize_source),
        ..SnapshotFilter::default()
    };
    let entry = repo.find_snapshot(&a.snapshot, &filter).await?;
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({"id": entry.id, "snapshot": entry.snapshot}))?;
        return Ok(0);
    }
    let s = &entry.snapshot;
    let st = &s.stats;
    ctx.say(format!("snapshot  {}", entry.id))?;
    ctx.say(format!("time      {}", s.time.to_rfc3339()))?;
    ctx.say(format!("host      {} (user {})", s.host, s.user))?;
    ctx.say(format!("source    {} ({})", s.source.url, s.source.kind))?;
    if let Some(job) = &s.job {
        ctx.say(format!("job       {job}"))?;
    }
    ctx.say(format!("tags      {}", s.tags.join(", ")))?;
    if let Some(p) = s.parent {
        ctx.say(format!("parent    {}", p.short()))?;
    }
    if !s.excludes.is_empty() {
        ctx.say(format!("excludes  {}", s.excludes.join(" ")))?;
    }
    ctx.say(format!(
        "content   {} in {} files, {} dirs, {} links, {} streams",
        bytes(st.logical_bytes),
        st.files,
        st.dirs,
        st.symlinks,
        st.streams
    ))?;
    ctx.say(format!(
        "added     {} new, {} stored, {} packs; read {} in {:.1}s",
        bytes(st.bytes_added),
        bytes(st.bytes_stored),
        st.packs_added,
        bytes(st.bytes_read),
        st.duration_ms as f64 / 1000.0
    ))?;
    for stream in &s.streams {
        ctx.say(format!(
            "stream    {}  {}  sha256 {}",
            stream.name,
            bytes(stream.size),
            stream.sha256
        ))?;
    }
    for w in &s.warnings {
        ctx.say(format!("warning   {w}"))?;
    }
    if !s.metadata.is_null() {
        ctx.say(format!(
            "metadata  {}",
            serde_json::to_string_pretty(&s.metadata)?
        ))?;
    }
    ctx.say(format!("program   {}", s.program))?;
    Ok(0)
}
