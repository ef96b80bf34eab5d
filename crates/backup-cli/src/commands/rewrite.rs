//! `backup rewrite`: erase paths, rows, documents and keys from snapshots.

use anyhow::Result;
use backup_ops::rewrite::{rewrite, RewriteRequest};
use backup_sources::erase::{Erasures, MongoDelete, PgDelete, RedisDelete};

use super::{parse_time, snapshot_filter};
use crate::cli::RewriteArgs;
use crate::context::{usage, Ctx};

fn request(ctx: &Ctx, a: RewriteArgs) -> Result<RewriteRequest> {
    let mut erasures = Erasures::default();
    for p in &a.pg_delete {
        match PgDelete::parse(p) {
            Ok(d) => erasures.pg.push(d),
            Err(e) => return usage(e.to_string()),
        }
    }
    for m in &a.mongo_delete {
        match MongoDelete::parse(m) {
            Ok(d) => erasures.mongo.push(d),
            Err(e) => return usage(e.to_string()),
        }
    }
    for r in &a.redis_delete {
        match RedisDelete::parse(r) {
            Ok(d) => erasures.redis.push(d),
            Err(e) => return usage(e.to_string()),
        }
    }
    Ok(RewriteRequest {
        snapshots: a.snapshots,
        filter: snapshot_filter(&a.filter)?,
        excludes: a.excludes,
        erasures,
        reason: a.reason.unwrap_or_default(),
        dry_run: a.dry_run,
        drop_captures_before: a
            .drop_captures_before
            .as_deref()
            .map(parse_time)
            .transpose()?,
        lock_wait: ctx.lock_wait(),
    })
}

pub(crate) async fn run(ctx: &Ctx, a: RewriteArgs) -> Result<u8> {
    let req = request(ctx, a)?;
    // Before the repository is opened (and a password asked).
    req.check()?;
    let repo = ctx.open().await?;
    let result = rewrite(&repo, &req, ctx).await?;
    if ctx.global.json {
        ctx.print_json(&result)?;
        return Ok(0);
    }
    let would = if result.dry_run { "would be " } else { "" };
    for r in &result.rewritten {
        let new = r
            .new
            .map_or_else(|| "(dry run)".to_owned(), |id| id.to_string());
        ctx.say(format!(
            "{} -> {}  {}  {}",
            r.old,
            new,
            r.time.format("%Y-%m-%d %H:%M:%S"),
            r.source
        ))?;
        for p in &r.dropped {
            ctx.say(format!("  removed /{p}"))?;
        }
        for (item, c) in &r.removed {
            let item = item.trim();
            ctx.say(format!(
                "  {item}: {} {}removed ({})",
                c.records,
                if item == "oplog" {
                    "captured oplog entries "
                } else {
                    ""
                },
                super::bytes(c.bytes)
            ))?;
        }
    }
    ctx.say(format!(
        "{} snapshots {would}rewritten, {} held nothing to remove",
        result.rewritten.len(),
        result.unchanged.len()
    ))?;
    for p in &result.unmatched_excludes {
        ctx.say(format!(
            "note: --exclude {p} matched nothing in the selected files snapshots"
        ))?;
    }
    if !result.captures.is_empty() {
        ctx.say(
            "captured ranges of these sources (they may still hold the erased data; --drop-captures-before TIME deletes those ending before TIME):",
        )?;
        for c in &result.captures {
            let t = |t: Option<chrono::DateTime<chrono::Utc>>| {
                t.map_or_else(
                    || "?".to_owned(),
                    |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
                )
            };
            ctx.say(format!(
                "  {} {} {}..{}  {} .. {}{}",
                c.kind,
                c.source,
                c.first,
                c.last,
                t(c.time_first),
                t(c.time_last),
                if c.dropped {
                    if result.dry_run {
                        "  (would be deleted)"
                    } else {
                        "  (deleted)"
                    }
                } else {
                    ""
                }
            ))?;
        }
    }
    if !result.dry_run && !result.rewritten.is_empty() {
        ctx.say(
            "the erased data stays in the repository's packs until `backup prune --repack-threshold 0` removes it",
        )?;
    }
    Ok(0)
}
