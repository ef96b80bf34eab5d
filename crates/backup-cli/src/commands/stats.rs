//! `backup stats` and `backup unlock`.

use anyhow::Result;
use backup_core::stats::{repo_stats, SizeStats};

use super::bytes;
use crate::cli::{StatsArgs, UnlockArgs};
use crate::context::Ctx;

pub(crate) async fn run(ctx: &Ctx, _a: StatsArgs) -> Result<u8> {
    let repo = ctx.open().await?.load_index().await?;
    let st = repo_stats(&repo).await?;
    if ctx.global.json {
        let per = |s: &SizeStats| {
            serde_json::json!({
                "snapshots": s.snapshots,
                "logical_bytes": s.logical_bytes,
                "unique_bytes": s.unique_bytes,
                "stored_bytes": s.stored_bytes,
                "blobs": s.blobs,
                "compression_ratio": s.compression_ratio(),
                "dedup_ratio": s.dedup_ratio(),
            })
        };
        let sources: serde_json::Map<String, serde_json::Value> = st
            .sources
            .iter()
            .map(|(k, v)| (k.clone(), per(v)))
            .collect();
        ctx.print_json(&serde_json::json!({
            "total": per(&st.total),
            "repository_bytes": st.repository_bytes,
            "packs": st.packs,
            "sources": sources,
        }))?;
        return Ok(0);
    }
    let line = |name: &str, s: &SizeStats| {
        format!(
            "{name:<40} {:>4} snapshots  logical {:>10}  unique {:>10}  stored {:>10}  compression {:.2}x  dedup {:.2}x",
            s.snapshots,
            bytes(s.logical_bytes),
            bytes(s.unique_bytes),
            bytes(s.stored_bytes),
            s.compression_ratio(),
            s.dedup_ratio()
        )
    };
    for (src, s) in &st.sources {
        ctx.say(line(src, s))?;
    }
    ctx.say(line("total", &st.total))?;
    ctx.say(format!(
        "repository: {} in {} packs (including metadata and unreferenced data)",
        bytes(st.repository_bytes),
        st.packs
    ))?;
    Ok(0)
}

pub(crate) async fn unlock(ctx: &Ctx, a: UnlockArgs) -> Result<u8> {
    let repo = ctx.open().await?;
    let now = chrono::Utc::now();
    for (_, l) in repo.locks().await? {
        if a.all || l.is_stale(now) {
            ctx.say(format!("removing {}", l.describe(now)))?;
        }
    }
    let n = repo.unlock(a.all).await?;
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({"removed": n}))?;
    } else {
        ctx.say(format!("removed {n} locks"))?;
    }
    Ok(0)
}
