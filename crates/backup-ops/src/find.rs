//! Searching snapshots without restoring them: `backup find`.
//!
//! The pattern is a glob: `*` and `?` stay within one path component,
//! `**` crosses them. A pattern with a `/` matches the whole path from the
//! snapshot's root (a leading `/` is optional); one without matches the
//! name of an entry at any depth. Database objects match by qualified
//! name (`app/sales.orders`, `shop.orders`), by `schema.table`, or by bare
//! name (`orders`).
//!
//! Results are grouped, not listed per snapshot: one [`Found`] is an
//! entry (a path of one source) in a run of consecutive searched
//! snapshots of that source in which it did not change (same type, size,
//! content ids, mode, owner, time and link target; for a table or
//! collection, same count and bytes). An entry that changes, or is absent
//! from one snapshot, starts a new run.
//!
//! Redis keys match the pattern in Redis's glob syntax (`user:*`) and are
//! found as `DB/KEY`; that reads each snapshot's stream (an RDB), except
//! when a snapshot stores the same stream as the one searched before it.
//!
//! Only trees are read, one directory level at a time, so memory holds
//! the open directories of one walk and the matches. A directory whose
//! tree (for a pattern with `/`: whose tree at the same path) held no
//! match in an earlier snapshot is skipped without being read again.

use std::collections::{HashMap, HashSet};
use std::hash::{Hash, Hasher};

use backup_core::repo::{IndexedRepository, Repository};
use backup_core::snapshot::{SnapshotEntry, SnapshotFilter};
use backup_core::tree::{Node, NodeKind};
use backup_core::Id;
use backup_sources::summary;
use chrono::{DateTime, SecondsFormat, Utc};
use globset::{GlobBuilder, GlobMatcher};
use serde::Serialize;

use crate::browse::qualified_name;
use crate::diff::node_at;
use crate::error::{Error, Result};

/// What `find` looks for, and where.
#[derive(Debug, Clone, Default)]
pub struct FindRequest {
    /// The glob.
    pub pattern: String,
    /// Snapshots named explicitly (ids, unique prefixes, `latest`); none:
    /// every snapshot the filter matches.
    pub snapshots: Vec<String>,
    /// Which snapshots are searched (and which `latest` names).
    pub filter: SnapshotFilter,
    /// Only the newest N of the selection.
    pub newest: Option<usize>,
    /// Only the oldest N of the selection.
    pub oldest: Option<usize>,
}

/// A compiled `find` pattern.
#[derive(Debug, Clone)]
pub struct Pattern {
    glob: GlobMatcher,
    anchored: bool,
}

impl Pattern {
    /// Compiles `pattern`.
    ///
    /// # Errors
    ///
    /// A usage error for an empty or invalid glob.
    pub fn new(pattern: &str) -> Result<Self> {
        let trimmed = pattern.trim_start_matches('/').trim_end_matches('/');
        if trimmed.is_empty() {
            return Err(Error::usage(format!(
                "`{pattern}` is an empty pattern: give a name or a glob such as '*.yml'"
            )));
        }
        let glob = GlobBuilder::new(trimmed)
            .literal_separator(true)
            .backslash_escape(true)
            .build()
            .map_err(|e| Error::usage(format!("invalid pattern `{pattern}`: {e}")))?
            .compile_matcher();
        Ok(Pattern {
            glob,
            anchored: trimmed.contains('/'),
        })
    }

    /// Whether a file at `rel` (from the root, no leading `/`) named
    /// `name` matches.
    pub fn matches_file(&self, rel: &str, name: &str) -> bool {
        if self.anchored {
            self.glob.is_match(rel)
        } else {
            self.glob.is_match(name)
        }
    }

    /// Whether a database object matches by any of its names.
    pub fn matches_object(&self, names: &[&str]) -> bool {
        names.iter().any(|n| self.glob.is_match(n))
    }
}

/// One entry found, in a run of consecutive snapshots of its source where
/// it is the same.
#[derive(Debug, Clone, Serialize)]
pub struct Found {
    /// The source (redacted URL or path) of the snapshots.
    pub source: String,
    /// Its kind: `files`, `postgres`, `mongodb`, `redis`.
    pub kind: String,
    /// What it is: `file`, `dir`, `symlink`, ... or `table`,
    /// `collection`, `database`.
    #[serde(rename = "type")]
    pub item: String,
    /// Files: the path from the root, starting with `/`; databases: the
    /// qualified name.
    pub path: String,
    /// Files and streams: the content size.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    /// Files: the modification time, RFC 3339.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mtime: Option<String>,
    /// Databases: what the count counts (`rows`, `documents`, `keys`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub counted: Option<&'static str>,
    /// Databases: the count.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub count: Option<u64>,
    /// Databases: the bytes, when recorded.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bytes: Option<u64>,
    /// The snapshots of the run, oldest first.
    pub snapshots: Vec<Id>,
    /// The time of the run's first snapshot.
    pub first: DateTime<Utc>,
    /// The time of its last.
    pub last: DateTime<Utc>,
}

impl Found {
    /// `item` at `path` in the snapshot `entry`, alone in its run, with
    /// no size, time or counts yet.
    fn new(entry: &SnapshotEntry, item: String, path: String) -> Self {
        let s = &entry.snapshot;
        Found {
            source: s.source.url.clone(),
            kind: s.source.kind.clone(),
            item,
            path,
            size: None,
            mtime: None,
            counted: None,
            count: None,
            bytes: None,
            snapshots: vec![entry.id],
            first: s.time,
            last: s.time,
        }
    }
}

/// What `find` found.
#[derive(Debug, Clone)]
pub struct FindOutcome {
    /// The runs, by source, then path, then time.
    pub found: Vec<Found>,
    /// How many snapshots were searched.
    pub searched: usize,
    /// Directories skipped because the same tree held no match before.
    pub dirs_skipped: u64,
}

struct Run {
    found: Found,
    fingerprint: u64,
    seq: usize,
}

/// The runs being built.
#[derive(Default)]
struct Runs {
    open: HashMap<(String, String), Run>,
    closed: Vec<Found>,
}

impl Runs {
    /// Notes that `found` (with `fingerprint`) is in the snapshot of
    /// sequence number `seq` of its source.
    fn note(&mut self, found: Found, fingerprint: u64, seq: usize, id: Id, time: DateTime<Utc>) {
        let key = (found.source.clone(), found.path.clone());
        if let Some(run) = self.open.get_mut(&key) {
            if run.fingerprint == fingerprint && run.seq + 1 == seq {
                run.seq = seq;
                run.found.snapshots.push(id);
                run.found.last = time;
                return;
            }
        }
        let run = Run {
            found,
            fingerprint,
            seq,
        };
        if let Some(old) = self.open.insert(key, run) {
            self.closed.push(old.found);
        }
    }

    fn finish(mut self) -> Vec<Found> {
        self.closed.extend(self.open.into_values().map(|r| r.found));
        self.closed
            .sort_by(|a, b| (&a.source, &a.path, a.first).cmp(&(&b.source, &b.path, b.first)));
        self.closed
    }
}

fn fingerprint(n: &Node) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (n.kind as u8).hash(&mut h);
    n.size.hash(&mut h);
    n.content.hash(&mut h);
    n.content_lists.hash(&mut h);
    n.subtree.hash(&mut h);
    (n.mode, n.uid, n.gid, n.mtime_ns).hash(&mut h);
    n.link_target.hash(&mut h);
    h.finish()
}

/// The snapshots `req` selects, oldest first.
async fn select(repo: &Repository, req: &FindRequest) -> Result<Vec<SnapshotEntry>> {
    let mut selected: Vec<SnapshotEntry> = if req.snapshots.is_empty() {
        let (all, _) = repo.snapshots().await?;
        all.into_iter()
            .filter(|s| req.filter.matches(&s.snapshot))
            .collect()
    } else {
        let mut v: Vec<SnapshotEntry> = Vec::new();
        for spec in &req.snapshots {
            let e = repo.find_snapshot(spec, &req.filter).await?;
            if !v.iter().any(|s| s.id == e.id) {
                v.push(e);
            }
        }
        v.sort_by(|a, b| a.snapshot.time.cmp(&b.snapshot.time).then(a.id.cmp(&b.id)));
        v
    };
    if selected.is_empty() {
        return Err(backup_core::Error::not_found("a snapshot matching the filter").into());
    }
    if let Some(n) = req.newest {
        let skip = selected.len().saturating_sub(n);
        selected.drain(..skip);
    }
    if let Some(n) = req.oldest {
        selected.truncate(n);
    }
    Ok(selected)
}

/// Searches the snapshots `req` selects for entries matching its pattern;
/// `on_snapshot` is told of each snapshot before it is searched (for
/// progress). No lock is taken: manifests and their trees never change
/// in place.
///
/// # Errors
///
/// A usage error for an invalid pattern or for both `newest` and
/// `oldest`; [`NotFound`](backup_core::Error::NotFound) for an unknown
/// snapshot or an empty selection; damaged trees and storage errors.
pub async fn find(
    repo: &Repository,
    req: &FindRequest,
    on_snapshot: &mut (dyn FnMut(&SnapshotEntry) + Send),
) -> Result<FindOutcome> {
    let pattern = Pattern::new(&req.pattern)?;
    if req.newest.is_some() && req.oldest.is_some() {
        return Err(Error::usage("give --newest or --oldest, not both"));
    }
    if req.newest == Some(0) || req.oldest == Some(0) {
        return Err(Error::usage("--newest and --oldest take at least 1"));
    }
    let selected = select(repo, req).await?;
    let indexed = repo.clone().load_index().await?;
    let mut runs = Runs::default();
    let mut seqs: HashMap<String, usize> = HashMap::new();
    let mut empty: HashSet<u64> = HashSet::new();
    let mut skipped = 0;
    #[cfg(feature = "redis")]
    let mut streams = KeyCache::new();
    for entry in &selected {
        on_snapshot(entry);
        let source = &entry.snapshot.source;
        let seq = {
            let s = seqs.entry(source.url.clone()).or_insert(0);
            *s += 1;
            *s
        };
        let contents = (source.kind != "files")
            .then(|| summary::contents(&source.kind, &entry.snapshot.metadata))
            .flatten();
        if let Some(c) = contents {
            objects(&indexed, &pattern, entry, &c, seq, &mut runs).await?;
            #[cfg(feature = "redis")]
            if source.kind == "redis" {
                keys(&indexed, &req.pattern, entry, seq, &mut runs, &mut streams).await?;
            }
        } else {
            skipped += files(&indexed, &pattern, entry, seq, &mut runs, &mut empty).await?;
        }
    }
    Ok(FindOutcome {
        found: runs.finish(),
        searched: selected.len(),
        dirs_skipped: skipped,
    })
}

/// Notes the tables, collections or databases of one snapshot that
/// match; an object is the same as before when its count, bytes and
/// stored data (the tree id of its streams' directory) are.
async fn objects(
    repo: &IndexedRepository,
    pattern: &Pattern,
    entry: &SnapshotEntry,
    c: &summary::Contents,
    seq: usize,
    runs: &mut Runs,
) -> Result<()> {
    let s = &entry.snapshot;
    for row in &c.rows {
        let qualified = qualified_name(c.levels, &row.path);
        let leaf = row.path.last().map_or("", String::as_str);
        if !pattern.matches_object(&[&qualified, &row.name, leaf]) {
            continue;
        }
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (row.count, row.bytes).hash(&mut h);
        if let Some(tree) = &row.tree {
            let tree: Vec<&str> = tree.iter().map(String::as_str).collect();
            if let Some(node) = node_at(repo, &s.tree, &tree).await? {
                fingerprint(&node).hash(&mut h);
            }
        }
        let found = Found {
            counted: Some(c.counted),
            count: Some(row.count),
            bytes: row.bytes,
            ..Found::new(entry, c.item.to_owned(), qualified)
        };
        runs.note(found, h.finish(), seq, entry.id, s.time);
    }
    Ok(())
}

/// Per source: the fingerprint of the Redis stream searched last and the
/// keys found in it.
#[cfg(feature = "redis")]
type KeyCache = HashMap<String, (u128, Vec<backup_sources::redis::item::FoundKey>)>;

/// Notes the Redis keys of one snapshot that match `pattern`.
#[cfg(feature = "redis")]
async fn keys(
    repo: &IndexedRepository,
    pattern: &str,
    entry: &SnapshotEntry,
    seq: usize,
    runs: &mut Runs,
    cache: &mut KeyCache,
) -> Result<()> {
    use backup_sources::redis::item::{find_keys, stream_fingerprint};
    let s = &entry.snapshot;
    let reader = backup_core::reader::SnapshotReader::new(repo.clone(), entry.clone());
    let stream = stream_fingerprint(&reader).await?;
    let found = match cache.get(&s.source.url) {
        Some((f, keys)) if *f == stream => keys.clone(),
        _ => find_keys(&reader, pattern).await?,
    };
    for k in &found {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        k.fingerprint.hash(&mut h);
        let item = Found {
            size: Some(k.key.size),
            ..Found::new(
                entry,
                "key".to_owned(),
                format!("{}/{}", k.key.db, k.key.key),
            )
        };
        runs.note(item, h.finish(), seq, entry.id, s.time);
    }
    cache.insert(s.source.url.clone(), (stream, found));
    Ok(())
}

/// The key under which a directory known to hold no match is remembered.
fn dir_key(pattern: &Pattern, subtree: &Id, rel: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    subtree.hash(&mut h);
    if pattern.anchored {
        rel.hash(&mut h);
    }
    h.finish()
}

/// Walks one snapshot's tree; returns how many directories were skipped.
async fn files(
    repo: &IndexedRepository,
    pattern: &Pattern,
    entry: &SnapshotEntry,
    seq: usize,
    runs: &mut Runs,
    empty: &mut HashSet<u64>,
) -> Result<u64> {
    let s = &entry.snapshot;
    let mut skipped = 0;
    let mut matches = 0u64;
    let root = repo.load_tree(&s.tree).await?;
    // Per open directory: its path from the root (no leading `/`), its
    // pending entries, the matches counted when it was opened and the key
    // to remember it by if it holds none.
    let mut stack = vec![(String::new(), root.nodes.into_iter(), 0u64, None::<u64>)];
    while let Some((parent, nodes, at_open, key)) = stack.last_mut() {
        let Some(node) = nodes.next() else {
            if let (Some(k), true) = (*key, *at_open == matches) {
                empty.insert(k);
            }
            stack.pop();
            continue;
        };
        let name = node.name.display();
        let rel = if parent.is_empty() {
            name.clone().into_owned()
        } else {
            format!("{parent}/{name}")
        };
        if pattern.matches_file(&rel, &name) {
            matches += 1;
            let item = serde_json::to_value(node.kind)
                .ok()
                .and_then(|v| v.as_str().map(str::to_owned))
                .unwrap_or_default();
            let found = Found {
                size: node.has_content().then_some(node.size),
                mtime: node.mtime_ns.map(|ns| {
                    DateTime::<Utc>::from_timestamp_nanos(ns)
                        .to_rfc3339_opts(SecondsFormat::AutoSi, true)
                }),
                ..Found::new(entry, item, format!("/{rel}"))
            };
            runs.note(found, fingerprint(&node), seq, entry.id, s.time);
        }
        if let (NodeKind::Dir, Some(sub)) = (node.kind, node.subtree) {
            let k = dir_key(pattern, &sub, &rel);
            if empty.contains(&k) {
                skipped += 1;
                continue;
            }
            let tree = repo.load_tree(&sub).await?;
            stack.push((rel, tree.nodes.into_iter(), matches, Some(k)));
        }
    }
    Ok(skipped)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns() {
        let p = Pattern::new("*.yml").unwrap();
        assert!(p.matches_file("config/app.yml", "app.yml"));
        assert!(!p.matches_file("config/app.yaml", "app.yaml"));
        let p = Pattern::new("/config/*.yml").unwrap();
        assert!(p.matches_file("config/app.yml", "app.yml"));
        assert!(!p.matches_file("x/config/app.yml", "app.yml"));
        let p = Pattern::new("**/config/*.yml").unwrap();
        assert!(p.matches_file("x/y/config/app.yml", "app.yml"));
        assert!(p.matches_file("config/app.yml", "app.yml"));
        let p = Pattern::new("orders").unwrap();
        assert!(p.matches_object(&["app/sales.orders", "sales.orders", "orders"]));
        let p = Pattern::new("app/sales.*").unwrap();
        assert!(p.matches_object(&["app/sales.orders", "sales.orders", "orders"]));
        assert!(!p.matches_object(&["app/public.users", "public.users", "users"]));
        assert!(Pattern::new("/").is_err());
        assert!(Pattern::new("a[").is_err());
    }
}
