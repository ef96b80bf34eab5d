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
        note!("warning: snapshot file {name} cannot be read: {e}");
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
    if let Some(r) = &s.rewritten {
        ctx.say(format!(
            "rewritten {} by {} on {} (replaced {}): {}; removed {}",
            r.time.to_rfc3339(),
            r.user,
            r.host,
            r.from.short(),
            r.reason,
            r.changes.join(", ")
        ))?;
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
        ctx.say("metadata  (--json shows all of it)")?;
        for (k, v) in &backup_sources::summary::scalars(&s.metadata) {
            ctx.say(format!("  {k:<22} {v}"))?;
        }
        if let Some(c) = backup_sources::summary::contents(&s.source.kind, &s.metadata) {
            for l in contents_table(&c) {
                ctx.say(format!("  {l}"))?;
            }
        }
    }
    ctx.say(format!("program   {}", s.program))?;
    Ok(0)
}

/// A snapshot's tables, collections or databases as aligned columns.
fn contents_table(c: &backup_sources::summary::Contents) -> Vec<String> {
    let name_w = c
        .rows
        .iter()
        .map(|r| r.name.chars().count())
        .chain([c.item.len()])
        .max()
        .unwrap_or(0);
    let count_w = c
        .rows
        .iter()
        .map(|r| r.count.to_string().len())
        .chain([c.counted.len()])
        .max()
        .unwrap_or(0);
    let with_bytes = c.rows.iter().any(|r| r.bytes.is_some());
    let mut out = vec![format!(
        "{:<name_w$}  {:>count_w$}{}",
        c.item,
        c.counted,
        if with_bytes { "       bytes" } else { "" }
    )];
    for r in &c.rows {
        let bytes = match (with_bytes, r.bytes) {
            (true, Some(b)) => format!("  {:>10}", bytes(b)),
            (true, None) => format!("  {:>10}", "-"),
            (false, _) => String::new(),
        };
        let note = if r.note.is_empty() {
            String::new()
        } else {
            format!("  {}", r.note)
        };
        out.push(format!(
            "{:<name_w$}  {:>count_w$}{bytes}{note}",
            r.name, r.count
        ));
    }
    out.push(format!(
        "{} {}{}, {} {}",
        c.rows.len(),
        c.item,
        if c.rows.len() == 1 { "" } else { "s" },
        c.rows.iter().map(|r| r.count).sum::<u64>(),
        c.counted
    ));
    out
}
