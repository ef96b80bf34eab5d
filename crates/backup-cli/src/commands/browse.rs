//! `backup ls` and `backup tag`.

use std::io::{BufWriter, Write as _};

use anyhow::Result;
use backup_core::snapshot::SnapshotFilter;
use backup_core::tree::NodeKind;
use backup_ops::browse::{
    ls as list_snapshot, DatabaseListing, FileEntry, Listing, LsEntry, LsRequest,
};
use backup_ops::diff::{
    diff as compare, Change, Comparison, DatabaseDiff, DiffRequest, FileChange, RowState,
};
use backup_ops::find::{find as search, FindRequest, Found};
use backup_ops::tags::{tag as change_tags, TagChange, TagRequest};
use backup_sources::redis::item::{KeyDelta, KeyEntry};

use super::{bytes, normalize_source};
use crate::cli::{DiffArgs, FindArgs, LsArgs, TagCommand, TagSelect};
use crate::context::Ctx;

pub(crate) async fn ls(ctx: &Ctx, a: LsArgs) -> Result<u8> {
    let req = LsRequest {
        snapshot: a.snapshot.clone(),
        filter: SnapshotFilter {
            source: a.source.as_deref().map(normalize_source),
            ..SnapshotFilter::default()
        },
        path: a.path.clone(),
        recursive: a.recursive,
        pattern: a.pattern.clone(),
        objects: a.objects,
    };
    let repo = ctx.open().await?;
    let json = ctx.global.json;
    let show = json || ctx.human();
    let long = a.long;
    let mut out = BufWriter::new(std::io::stdout());
    let mut on_entry = |e: LsEntry<'_>| -> backup_ops::Result<()> {
        if !show {
            return Ok(());
        }
        let line = match e {
            LsEntry::File(e) if json => serde_json::to_string(e),
            LsEntry::Key(k) if json => serde_json::to_string(k),
            LsEntry::File(e) if long => Ok(long_line(e)),
            LsEntry::Key(k) if long => Ok(key_line(k)),
            LsEntry::File(e) => Ok(e.path.clone()),
            LsEntry::Key(k) => Ok(k.key.clone()),
        }
        .map_err(|e| backup_core::Error::io("writing the listing", std::io::Error::other(e)))?;
        writeln!(out, "{line}").map_err(|e| backup_core::Error::io("writing the listing", e).into())
    };
    let outcome = list_snapshot(&repo, &req, &mut on_entry).await;
    out.flush()?;
    let outcome = outcome?;
    if let Listing::Database(d) = &outcome.listing {
        if json {
            database_json(d)?;
        } else {
            database_text(ctx, d)?;
        }
    }
    Ok(0)
}

/// `hash    2024-05-01 12:00:00  1.2 KiB  0/user:1`: type, expiry (`-`
/// for none), serialised size, database and key.
fn key_line(k: &KeyEntry) -> String {
    let expires = k
        .expires_ms
        .and_then(chrono::DateTime::from_timestamp_millis)
        .map_or_else(
            || "-".to_owned(),
            |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
        );
    format!(
        "{:<6}  {:<19}  {:>10}  {}/{}",
        k.kind,
        expires,
        bytes(k.size),
        k.db,
        k.key
    )
}

/// `drwxr-xr-x  alice(1000)  staff(50)  4.0 KiB  2024-05-01 12:00:00  /path -> target`.
fn long_line(e: &FileEntry) -> String {
    let owner = |name: &Option<String>, id: Option<u32>| match (name, id) {
        (Some(n), Some(i)) => format!("{n}({i})"),
        (None, Some(i)) => i.to_string(),
        (Some(n), None) => n.clone(),
        (None, None) => "-".to_owned(),
    };
    let mtime = e.mtime.as_deref().map_or_else(
        || "-".to_owned(),
        |t| {
            chrono::DateTime::parse_from_rfc3339(t).map_or_else(
                |_| t.to_owned(),
                |t| t.format("%Y-%m-%d %H:%M:%S").to_string(),
            )
        },
    );
    let link = e
        .link_target
        .as_deref()
        .map(|t| format!(" -> {t}"))
        .unwrap_or_default();
    format!(
        "{}  {:<12}  {:<12}  {:>10}  {}  {}{}",
        mode_string(e.kind, e.mode),
        owner(&e.user, e.uid),
        owner(&e.group, e.gid),
        e.size,
        mtime,
        e.path,
        link
    )
}

/// `ls -l`'s mode column: the type, then `rwx` three times with setuid,
/// setgid and sticky folded in.
fn mode_string(kind: NodeKind, mode: Option<u32>) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        NodeKind::Dir => 'd',
        NodeKind::Symlink => 'l',
        NodeKind::Fifo => 'p',
        NodeKind::Chardev => 'c',
        NodeKind::Blockdev => 'b',
        NodeKind::File | NodeKind::Stream => '-',
    });
    let Some(m) = mode else {
        s.push_str("?????????");
        return s;
    };
    let special = [(0o4000, 's', 'S'), (0o2000, 's', 'S'), (0o1000, 't', 'T')];
    for (i, (bit, on, off)) in special.iter().enumerate() {
        let shift = 6 - 3 * i;
        let bits = m >> shift;
        s.push(if bits & 0o4 != 0 { 'r' } else { '-' });
        s.push(if bits & 0o2 != 0 { 'w' } else { '-' });
        s.push(match (m & bit != 0, bits & 0o1 != 0) {
            (true, true) => *on,
            (true, false) => *off,
            (false, true) => 'x',
            (false, false) => '-',
        });
    }
    s
}

/// One JSON object a line: each row (`type` is the item: table,
/// collection, database), then the streams of no row (`type` `stream`).
fn database_json(d: &DatabaseListing) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for r in &d.rows {
        let mut v = serde_json::to_value(r)?;
        if let Some(o) = v.as_object_mut() {
            o.insert("type".to_owned(), d.item.into());
            o.insert("kind".to_owned(), d.kind.clone().into());
            o.insert(d.counted.to_owned(), r.row.count.into());
        }
        writeln!(out, "{}", serde_json::to_string(&v)?)?;
    }
    for s in &d.other_streams {
        let v = serde_json::json!({"type": "stream", "path": s.path, "size": s.size});
        writeln!(out, "{}", serde_json::to_string(&v)?)?;
    }
    for o in &d.objects {
        let mut v = serde_json::to_value(o)?;
        if let Some(m) = v.as_object_mut() {
            m.insert("object".to_owned(), m["kind"].clone());
            m.insert("type".to_owned(), "object".into());
            m.insert("kind".to_owned(), d.kind.clone().into());
        }
        writeln!(out, "{}", serde_json::to_string(&v)?)?;
    }
    Ok(())
}

/// Rows grouped by their outer levels (database, schema), then the other
/// streams.
fn database_text(ctx: &Ctx, d: &DatabaseListing) -> Result<()> {
    let mut shown: Vec<String> = Vec::new();
    for r in &d.rows {
        let path = &r.row.path;
        let depth = path.len().saturating_sub(1);
        for (i, level) in d.levels.iter().take(depth).enumerate() {
            let name = path.get(i).cloned().unwrap_or_default();
            if shown.get(i) != Some(&name) {
                shown.truncate(i);
                shown.push(name.clone());
                let name = if name.is_empty() { "(unnamed)" } else { &name };
                ctx.say(format!("{}{level} {name}", "  ".repeat(i)))?;
            }
        }
        let indent = "  ".repeat(depth);
        let leaf = path.last().map_or(r.row.name.as_str(), String::as_str);
        let size = r
            .row
            .bytes
            .map(|b| format!(", {}", bytes(b)))
            .unwrap_or_default();
        let note = if r.row.note.is_empty() {
            String::new()
        } else {
            format!(", {}", r.row.note)
        };
        ctx.say(format!(
            "{indent}{} {leaf}  ({} {}{size}{note})",
            d.item, r.row.count, d.counted
        ))?;
        for s in &r.streams {
            ctx.say(format!("{indent}  stream {}  {}", s.path, bytes(s.size)))?;
        }
    }
    for s in &d.other_streams {
        ctx.say(format!("stream {}  {}", s.path, bytes(s.size)))?;
    }
    for o in &d.objects {
        let name = match (o.schema.as_str(), o.on.as_str()) {
            ("", _) => o.name.clone(),
            (schema, "") => format!("{schema}.{}", o.name),
            (db, on) => format!("{db}.{on} {}", o.name),
        };
        let detail = if o.detail.is_empty() {
            String::new()
        } else {
            format!("  {}", o.detail)
        };
        ctx.say(format!("{} {name}{detail}", o.kind.to_lowercase()))?;
    }
    let total: u64 = d.rows.iter().map(|r| r.row.count).sum();
    ctx.say(format!(
        "{} {}{}, {total} {}",
        d.rows.len(),
        d.item,
        if d.rows.len() == 1 { "" } else { "s" },
        d.counted
    ))?;
    if d.kind == "redis" {
        ctx.say("(keys are not listed: that needs reading the RDB)")?;
    }
    Ok(())
}

pub(crate) async fn diff(ctx: &Ctx, a: DiffArgs) -> Result<u8> {
    let req = DiffRequest {
        a: a.a.clone(),
        b: a.b.clone(),
        filter: SnapshotFilter {
            source: a.source.as_deref().map(normalize_source),
            ..SnapshotFilter::default()
        },
        path: a.path.clone(),
    };
    let repo = ctx.open().await?;
    let json = ctx.global.json;
    let show = json || ctx.human();
    let mut out = BufWriter::new(std::io::stdout());
    let mut on_change = |c: &FileChange| -> backup_ops::Result<()> {
        if !show {
            return Ok(());
        }
        let line = if json {
            serde_json::to_string(c).map_err(|e| {
                backup_core::Error::io("writing the differences", std::io::Error::other(e))
            })?
        } else {
            change_line(c)
        };
        writeln!(out, "{line}")
            .map_err(|e| backup_core::Error::io("writing the differences", e).into())
    };
    let outcome = compare(&repo, &req, &mut on_change).await;
    out.flush()?;
    let outcome = outcome?;
    let (ida, idb) = (outcome.a.id, outcome.b.id);
    match &outcome.comparison {
        Comparison::Files(sum) => {
            if json {
                let v = serde_json::json!({"summary": sum, "a": ida, "b": idb});
                writeln!(std::io::stdout().lock(), "{}", serde_json::to_string(&v)?)?;
            } else {
                ctx.say(format!(
                    "{} added, {} removed, {} changed; {} added, {} removed; {} unchanged directories skipped",
                    sum.added,
                    sum.removed,
                    sum.changed,
                    bytes(sum.bytes_added),
                    bytes(sum.bytes_removed),
                    sum.dirs_unchanged
                ))?;
            }
        }
        Comparison::Database(d) => {
            if json {
                database_diff_json(d, &ida, &idb)?;
            } else {
                database_diff_text(ctx, d)?;
            }
        }
    }
    Ok(0)
}

fn sign(c: Change) -> char {
    match c {
        Change::Added => '+',
        Change::Removed => '-',
        Change::Changed => 'M',
    }
}

/// `+ /path  SIZE`, `- /dir/`, `M /path  content,mtime  6 B -> 9 B`.
fn change_line(c: &FileChange) -> String {
    let slash = if c.kind == NodeKind::Dir { "/" } else { "" };
    let what = if c.what.is_empty() {
        String::new()
    } else {
        format!("  {}", c.what.join(","))
    };
    let size = match (c.change, c.size_before, c.size_after) {
        (Change::Changed, Some(x), Some(y)) if x != y => format!("  {} -> {}", bytes(x), bytes(y)),
        (Change::Removed, Some(x), _) | (_, _, Some(x)) => format!("  {}", bytes(x)),
        _ => String::new(),
    };
    format!("{} {}{slash}{what}{size}", sign(c.change), c.path)
}

fn state_json(s: Option<RowState>, counted: &str) -> serde_json::Value {
    s.map_or(
        serde_json::Value::Null,
        |s| serde_json::json!({counted: s.count, "bytes": s.bytes}),
    )
}

/// One JSON object a line: each change (`type` is what changed: table,
/// collection, database, schema), then `{"summary": ...}`.
fn database_diff_json(d: &DatabaseDiff, a: &backup_core::Id, b: &backup_core::Id) -> Result<()> {
    let mut out = std::io::stdout().lock();
    for c in &d.changes {
        let v = serde_json::json!({
            "change": c.change,
            "type": c.item,
            "kind": d.kind,
            "name": c.name,
            "path": c.path,
            "before": state_json(c.before, d.counted),
            "after": state_json(c.after, d.counted),
            "data_changed": c.data_changed,
        });
        writeln!(out, "{}", serde_json::to_string(&v)?)?;
    }
    let mut key_totals = serde_json::Value::Null;
    if let Some(k) = &d.keys {
        for c in &k.changes {
            let mut v = serde_json::to_value(c)?;
            if let Some(o) = v.as_object_mut() {
                o.insert("value_type".to_owned(), o["type"].clone());
                o.insert("type".to_owned(), "key".into());
                o.insert("kind".to_owned(), d.kind.clone().into());
            }
            writeln!(out, "{}", serde_json::to_string(&v)?)?;
        }
        key_totals = serde_json::json!({"added": k.added, "removed": k.removed, "changed": k.changed, "unchanged": k.unchanged});
    }
    let v = serde_json::json!({"summary": d.summary, "keys": key_totals, "item": d.item, "counted": d.counted, "a": a, "b": b});
    writeln!(out, "{}", serde_json::to_string(&v)?)?;
    Ok(())
}

fn count_and_bytes(s: RowState, counted: &str) -> String {
    match s.bytes {
        Some(b) => format!("{} {counted}, {}", s.count, bytes(b)),
        None => format!("{} {counted}", s.count),
    }
}

/// `+ table app/crm.people  3 rows, 8.0 KiB`, `M collection shop.orders
/// documents 5 -> 7, 1.0 KiB -> 1.4 KiB`, then the totals.
fn database_diff_text(ctx: &Ctx, d: &DatabaseDiff) -> Result<()> {
    for c in &d.changes {
        let detail = match (c.before, c.after) {
            (Some(x), Some(y)) => {
                let mut parts = Vec::new();
                if x.count != y.count {
                    parts.push(format!("{} {} -> {}", d.counted, x.count, y.count));
                }
                if x.bytes != y.bytes {
                    let b = |v: Option<u64>| v.map_or_else(|| "?".to_owned(), bytes);
                    parts.push(format!("{} -> {}", b(x.bytes), b(y.bytes)));
                }
                if parts.is_empty() {
                    format!("  data changed ({})", count_and_bytes(y, d.counted))
                } else {
                    format!("  {}", parts.join(", "))
                }
            }
            (Some(s), None) | (None, Some(s)) => format!("  {}", count_and_bytes(s, d.counted)),
            (None, None) => String::new(),
        };
        ctx.say(format!("{} {} {}{detail}", sign(c.change), c.item, c.name))?;
    }
    let s = &d.summary;
    ctx.say(format!(
        "{} added, {} removed, {} changed, {} unchanged {}s; {} {} -> {}, {} -> {}",
        s.added,
        s.removed,
        s.changed,
        s.unchanged,
        d.item,
        d.counted,
        s.count_before,
        s.count_after,
        bytes(s.bytes_before),
        bytes(s.bytes_after)
    ))?;
    if let Some(k) = &d.keys {
        for c in &k.changes {
            let sign = match c.change {
                KeyDelta::Added => '+',
                KeyDelta::Removed => '-',
                KeyDelta::Changed => 'M',
            };
            let detail = match c.size_before {
                Some(before) => format!(
                    "  {}  {} -> {}",
                    c.what.join(","),
                    bytes(before),
                    bytes(c.key.size)
                ),
                None => format!("  {}, {}", c.key.kind, bytes(c.key.size)),
            };
            ctx.say(format!("{sign} key {}/{}{detail}", c.key.db, c.key.key))?;
        }
        ctx.say(format!(
            "{} added, {} removed, {} changed, {} unchanged keys",
            k.added, k.removed, k.changed, k.unchanged
        ))?;
    }
    Ok(())
}

pub(crate) async fn find(ctx: &Ctx, a: FindArgs) -> Result<u8> {
    let req = FindRequest {
        pattern: a.pattern,
        snapshots: a.snapshots,
        filter: SnapshotFilter {
            source: a.source.as_deref().map(normalize_source),
            tags: a.tags,
            host: a.host,
            ..SnapshotFilter::default()
        },
        newest: a.newest,
        oldest: a.oldest,
    };
    // Before the repository is opened (and a password asked).
    backup_ops::find::Pattern::new(&req.pattern)?;
    let repo = ctx.open().await?;
    let mut on_snapshot = |_: &backup_core::snapshot::SnapshotEntry| {};
    let outcome = search(&repo, &req, &mut on_snapshot).await?;
    let json = ctx.global.json;
    let mut out = BufWriter::new(std::io::stdout());
    if json {
        for f in &outcome.found {
            writeln!(out, "{}", serde_json::to_string(f)?)?;
        }
        let v = serde_json::json!({"summary": {
            "matches": outcome.found.len(),
            "snapshots_searched": outcome.searched,
            "dirs_skipped": outcome.dirs_skipped,
        }});
        writeln!(out, "{}", serde_json::to_string(&v)?)?;
    } else if ctx.human() {
        let mut source = None;
        for f in &outcome.found {
            if source != Some(&f.source) {
                writeln!(out, "{} {}", f.kind, f.source)?;
                source = Some(&f.source);
            }
            writeln!(out, "{}", found_line(f))?;
        }
        writeln!(
            out,
            "{} matches in {} snapshots searched",
            outcome.found.len(),
            outcome.searched
        )?;
    }
    out.flush()?;
    Ok(0)
}

/// `  /docs/a.txt  file  6 B  2024-05-01 12:00:00 .. 2024-05-03 12:00:00
/// in 1a2b3c4d 5e6f7a8b`.
fn found_line(f: &Found) -> String {
    let what = match (f.size, f.count, f.counted) {
        (Some(s), _, _) => format!("  {}", bytes(s)),
        (_, Some(c), Some(counted)) => match f.bytes {
            Some(b) => format!("  {c} {counted}, {}", bytes(b)),
            None => format!("  {c} {counted}"),
        },
        _ => String::new(),
    };
    let t = |t: &chrono::DateTime<chrono::Utc>| t.format("%Y-%m-%d %H:%M:%S").to_string();
    let when = if f.first == f.last {
        t(&f.first)
    } else {
        format!("{} .. {}", t(&f.first), t(&f.last))
    };
    let ids: Vec<String> = f.snapshots.iter().map(backup_core::Id::short).collect();
    format!(
        "  {}  {}{what}  {when}  in {}",
        f.path,
        f.item,
        ids.join(" ")
    )
}

pub(crate) async fn tag(ctx: &Ctx, c: TagCommand) -> Result<u8> {
    let (change, select) = match c {
        TagCommand::Add(a) => (TagChange::Add(a.tags), a.select),
        TagCommand::Remove(a) => (TagChange::Remove(a.tags), a.select),
        TagCommand::Set(a) => (TagChange::Set(a.tags), a.select),
    };
    let req = tag_request(ctx, change, select);
    // Before the repository is opened (and a password asked).
    req.check()?;
    let repo = ctx.open().await?;
    let result = change_tags(&repo, &req, ctx).await?;
    if ctx.global.json {
        ctx.print_json(&result)?;
        return Ok(0);
    }
    for r in &result.changed {
        ctx.say(format!(
            "{} -> {}  tags {}{}",
            r.old,
            r.new,
            if r.tags.is_empty() {
                "(none)".to_owned()
            } else {
                r.tags.join(",")
            },
            if r.converged {
                " (finishing an interrupted change)"
            } else {
                ""
            }
        ))?;
    }
    ctx.say(format!(
        "{} snapshots changed, {} already had these tags",
        result.changed.len(),
        result.unchanged.len()
    ))?;
    Ok(0)
}

fn tag_request(ctx: &Ctx, change: TagChange, s: TagSelect) -> TagRequest {
    TagRequest {
        change,
        snapshots: s.snapshots,
        filter: SnapshotFilter {
            source: s.source.as_deref().map(normalize_source),
            tags: s.with_tags,
            host: s.host,
            ..SnapshotFilter::default()
        },
        lock_wait: ctx.lock_wait(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_as_ls_prints_them() {
        assert_eq!(mode_string(NodeKind::File, Some(0o640)), "-rw-r-----");
        assert_eq!(mode_string(NodeKind::Dir, Some(0o1777)), "drwxrwxrwt");
        assert_eq!(mode_string(NodeKind::File, Some(0o4754)), "-rwsr-xr--");
        assert_eq!(mode_string(NodeKind::File, Some(0o2640)), "-rw-r-S---");
        assert_eq!(mode_string(NodeKind::Symlink, None), "l?????????");
    }
}
