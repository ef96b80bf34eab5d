//! Comparing two snapshots without restoring them: `backup diff`.
//!
//! Files snapshots are compared by walking both trees together, directory
//! by directory in name order. A directory whose stored tree id is the
//! same in both snapshots holds the same entries, so it is skipped without
//! being read; content is compared by its stored chunk ids (and content
//! lists), never by reading data. Only tree blobs are downloaded, and only
//! those of directories that differ.
//!
//! Database snapshots are compared per table, collection or Redis database
//! from the manifests' contents ([`backup_sources::summary::contents`]):
//! objects added or removed (also whole schemas and databases), and row,
//! document or key counts and bytes that changed. A table or collection
//! whose counts are equal but whose stored data differs (the directory of
//! its streams has another tree id) is reported as changed too. Redis
//! snapshots are also compared key by key
//! ([`backup_sources::redis::item::diff_keys`]), reading both streams
//! unless they are stored identically.

use std::collections::{BTreeSet, HashMap};

use backup_core::repo::{IndexedRepository, Repository};
use backup_core::snapshot::{SnapshotEntry, SnapshotFilter};
use backup_core::tree::{FsName, Node, NodeKind};
use backup_core::Id;
use backup_sources::summary::{self, ContentRow, Contents};
use serde::Serialize;

use crate::browse::qualified_name;
use crate::error::{Error, Result};

/// What `diff` compares.
#[derive(Debug, Clone, Default)]
pub struct DiffRequest {
    /// The older side: `latest`, an id or a unique id prefix.
    pub a: String,
    /// The newer side, as `a`.
    pub b: String,
    /// Which snapshots `latest` chooses among.
    pub filter: SnapshotFilter,
    /// Files: only this file or directory (`/`-separated from the root).
    /// Databases: only rows at or under it, as `ls` narrows.
    pub path: Option<String>,
}

impl DiffRequest {
    fn components(&self) -> Vec<&str> {
        crate::browse::components(self.path.as_deref().unwrap_or(""))
    }
}

/// How an entry differs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Change {
    /// Only in the newer snapshot.
    Added,
    /// Only in the older snapshot.
    Removed,
    /// In both, different.
    Changed,
}

/// One path that differs between two files snapshots.
#[derive(Debug, Clone, Serialize)]
pub struct FileChange {
    /// Added, removed or changed.
    pub change: Change,
    /// The path from the snapshot's root, starting with `/`.
    pub path: String,
    /// The entry's type (the newer one's when both exist).
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// What changed: `type`, `content`, `mode`, `owner`, `mtime`,
    /// `link_target`, `xattrs` (empty for added and removed entries).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub what: Vec<&'static str>,
    /// Content size in the older snapshot (files and streams).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_before: Option<u64>,
    /// Content size in the newer snapshot (files and streams).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_after: Option<u64>,
}

/// Totals of a files comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct FilesSummary {
    /// Entries only in the newer snapshot.
    pub added: u64,
    /// Entries only in the older snapshot.
    pub removed: u64,
    /// Entries in both that differ.
    pub changed: u64,
    /// Bytes of added files, plus what changed files grew by.
    pub bytes_added: u64,
    /// Bytes of removed files, plus what changed files shrank by.
    pub bytes_removed: u64,
    /// Directories skipped because their tree id is the same in both.
    pub dirs_unchanged: u64,
}

/// The counts of a row on one side.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct RowState {
    /// Rows, documents or keys.
    pub count: u64,
    /// Bytes, when the snapshot records them.
    pub bytes: Option<u64>,
}

/// One table, collection, database or schema that differs.
#[derive(Debug, Clone, Serialize)]
pub struct RowChange {
    /// Added, removed or changed.
    pub change: Change,
    /// What it is: `table`, `collection`, `database`, `schema`.
    pub item: &'static str,
    /// Its qualified name (`app/sales.orders`, `shop.orders`, `0`).
    pub name: String,
    /// Its path, outermost first (see [`ContentRow::path`]).
    pub path: Vec<String>,
    /// Counts in the older snapshot (tables, collections, Redis
    /// databases).
    pub before: Option<RowState>,
    /// Counts in the newer snapshot.
    pub after: Option<RowState>,
    /// In both with other stored data (another tree id for its streams).
    pub data_changed: bool,
}

/// Totals of a database comparison.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct DatabaseSummary {
    /// Rows (tables, collections, databases) only in the newer snapshot.
    pub added: u64,
    /// Rows only in the older snapshot.
    pub removed: u64,
    /// Rows in both that differ.
    pub changed: u64,
    /// Rows in both that are the same.
    pub unchanged: u64,
    /// Rows, documents or keys in the older snapshot (all its rows).
    pub count_before: u64,
    /// Rows, documents or keys in the newer snapshot.
    pub count_after: u64,
    /// Bytes in the older snapshot, where recorded.
    pub bytes_before: u64,
    /// Bytes in the newer snapshot, where recorded.
    pub bytes_after: u64,
}

/// How two database snapshots differ.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseDiff {
    /// The kind: `postgres`, `mongodb` or `redis`.
    pub kind: String,
    /// What a row is: `table`, `collection` or `database`.
    pub item: &'static str,
    /// What its count counts: `rows`, `documents` or `keys`.
    pub counted: &'static str,
    /// The differences, ordered by path (a schema before its tables).
    pub changes: Vec<RowChange>,
    /// The totals.
    pub summary: DatabaseSummary,
    /// Redis: the keys added, removed and changed (of the database the
    /// path names, or all).
    #[cfg(feature = "redis")]
    pub keys: Option<backup_sources::redis::item::KeyDiff>,
}

/// What `diff` found.
#[derive(Debug, Clone)]
pub enum Comparison {
    /// Tree snapshots, whose changes went to the callback.
    Files(FilesSummary),
    /// Database snapshots.
    Database(DatabaseDiff),
}

/// The two snapshots and how they differ.
#[derive(Debug, Clone)]
pub struct DiffOutcome {
    /// The older side.
    pub a: SnapshotEntry,
    /// The newer side.
    pub b: SnapshotEntry,
    /// The differences.
    pub comparison: Comparison,
}

/// Compares the snapshots `req` names. Files: every path added, removed
/// or changed goes to `on_change` as the walk goes, depth first in name
/// order (a directory before its contents; the contents of an added or
/// removed directory are listed too); directories with equal tree ids are
/// skipped unread. Databases: the differences are returned whole.
///
/// # Errors
///
/// [`Error::Usage`] when the two snapshots are of different kinds or
/// sources (or one is a database listing and the other a tree);
/// [`NotFound`](backup_core::Error::NotFound) for an unknown snapshot or a
/// path in neither; an error `on_change` returns stops the walk and is
/// returned; damaged trees and storage errors.
pub async fn diff(
    repo: &Repository,
    req: &DiffRequest,
    on_change: &mut (dyn FnMut(&FileChange) -> Result<()> + Send),
) -> Result<DiffOutcome> {
    let a = repo.find_snapshot(&req.a, &req.filter).await?;
    let b = repo.find_snapshot(&req.b, &req.filter).await?;
    let (sa, sb) = (&a.snapshot.source, &b.snapshot.source);
    if sa.kind != sb.kind {
        return Err(Error::usage(format!(
            "snapshot {} is of a {} source and {} of a {} source: diff compares two snapshots of the same source",
            a.id.short(),
            sa.kind,
            b.id.short(),
            sb.kind
        )));
    }
    if !backup_core::source_url::same_source(&sa.url, &sb.url) {
        return Err(Error::usage(format!(
            "snapshot {} is of {} and {} of {}: diff compares two snapshots of the same source",
            a.id.short(),
            sa.url,
            b.id.short(),
            sb.url
        )));
    }
    let contents = |e: &SnapshotEntry| {
        (e.snapshot.source.kind != "files")
            .then(|| summary::contents(&e.snapshot.source.kind, &e.snapshot.metadata))
            .flatten()
    };
    let indexed = repo.clone().load_index().await?;
    let path = req.components();
    let comparison = match (contents(&a), contents(&b)) {
        (None, None) => Comparison::Files(files(&indexed, &a, &b, &path, req, on_change).await?),
        (Some(ca), Some(cb)) => {
            Comparison::Database(database(&indexed, &a, &b, ca, cb, &path, req).await?)
        }
        _ => {
            return Err(Error::usage(format!(
                "snapshots {} and {} hold different forms of the source (one lists tables or collections, the other only files, as a physical base backup does): they cannot be compared",
                a.id.short(),
                b.id.short()
            )))
        }
    };
    Ok(DiffOutcome { a, b, comparison })
}

fn join(parent: &str, name: &FsName) -> String {
    if parent.ends_with('/') {
        format!("{parent}{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// The node at `path` below the tree `root` (`None` when a part is
/// missing or not a directory).
pub(crate) async fn node_at(
    repo: &IndexedRepository,
    root: &Id,
    path: &[&str],
) -> Result<Option<Node>> {
    let mut tree = repo.load_tree(root).await?;
    for (i, name) in path.iter().enumerate() {
        let Some(node) = tree.find(&FsName::from(*name)).cloned() else {
            return Ok(None);
        };
        if i + 1 == path.len() {
            return Ok(Some(node));
        }
        match (&node.kind, &node.subtree) {
            (NodeKind::Dir, Some(id)) => tree = repo.load_tree(id).await?,
            _ => return Ok(None),
        }
    }
    Ok(None)
}

/// The entries of a directory node (none for anything else).
async fn children(repo: &IndexedRepository, node: Option<&Node>) -> Result<Vec<Node>> {
    match node {
        Some(Node {
            kind: NodeKind::Dir,
            subtree: Some(id),
            ..
        }) => Ok(repo.load_tree(id).await?.nodes),
        _ => Ok(Vec::new()),
    }
}

type Pair = (Option<Node>, Option<Node>);

/// The entries of two sorted directories, matched by name.
fn pair_up(a: Vec<Node>, b: Vec<Node>) -> Vec<Pair> {
    let mut out = Vec::with_capacity(a.len().max(b.len()));
    let mut a = a.into_iter().peekable();
    let mut b = b.into_iter().peekable();
    loop {
        let order = match (a.peek(), b.peek()) {
            (None, None) => break,
            (Some(_), None) => std::cmp::Ordering::Less,
            (None, Some(_)) => std::cmp::Ordering::Greater,
            (Some(x), Some(y)) => x.name.cmp(&y.name),
        };
        out.push(match order {
            std::cmp::Ordering::Less => (a.next(), None),
            std::cmp::Ordering::Greater => (None, b.next()),
            std::cmp::Ordering::Equal => (a.next(), b.next()),
        });
    }
    out
}

/// What differs between two entries of the same name.
pub(crate) fn differences(a: &Node, b: &Node) -> Vec<&'static str> {
    let mut what = Vec::new();
    if a.kind != b.kind {
        what.push("type");
    }
    if a.kind == b.kind
        && a.has_content()
        && (a.size != b.size || a.content != b.content || a.content_lists != b.content_lists)
    {
        what.push("content");
    }
    if a.mode != b.mode {
        what.push("mode");
    }
    if a.uid != b.uid || a.gid != b.gid || a.user != b.user || a.group != b.group {
        what.push("owner");
    }
    // A directory's time changes with what is added or removed inside
    // it, which is listed on its own.
    if a.mtime_ns != b.mtime_ns && !(a.kind == NodeKind::Dir && b.kind == NodeKind::Dir) {
        what.push("mtime");
    }
    if a.link_target != b.link_target {
        what.push("link_target");
    }
    if a.xattrs != b.xattrs {
        what.push("xattrs");
    }
    what
}

fn size_of(n: &Node) -> Option<u64> {
    n.has_content().then_some(n.size)
}

/// Walks both trees at `path` together.
async fn files(
    repo: &IndexedRepository,
    older: &SnapshotEntry,
    newer: &SnapshotEntry,
    path: &[&str],
    req: &DiffRequest,
    on_change: &mut (dyn FnMut(&FileChange) -> Result<()> + Send),
) -> Result<FilesSummary> {
    let mut sum = FilesSummary::default();
    let (root_a, root_b) = (older.snapshot.tree, newer.snapshot.tree);
    let (prefix, first) = if let Some((_, parents)) = path.split_last() {
        let na = node_at(repo, &root_a, path).await?;
        let nb = node_at(repo, &root_b, path).await?;
        if na.is_none() && nb.is_none() {
            return Err(in_neither(req, older, newer));
        }
        (format!("/{}", parents.join("/")), vec![(na, nb)])
    } else if root_a == root_b {
        sum.dirs_unchanged += 1;
        return Ok(sum);
    } else {
        let ta = repo.load_tree(&root_a).await?.nodes;
        let tb = repo.load_tree(&root_b).await?.nodes;
        ("/".to_owned(), pair_up(ta, tb))
    };
    // Depth first with one pending list of pairs per open level.
    let mut stack = vec![(prefix, first.into_iter())];
    while let Some((parent, pairs)) = stack.last_mut() {
        let Some(pair) = pairs.next() else {
            stack.pop();
            continue;
        };
        let (change, node) = match &pair {
            (Some(x), None) => (Some((Change::Removed, Vec::new())), x),
            (None, Some(y)) => (Some((Change::Added, Vec::new())), y),
            (Some(x), Some(y)) => {
                let what = differences(x, y);
                ((!what.is_empty()).then_some((Change::Changed, what)), y)
            }
            (None, None) => continue,
        };
        let path = join(parent, &node.name);
        if let Some((change, what)) = change {
            let (before, after) = (pair.0.as_ref(), pair.1.as_ref());
            let c = FileChange {
                change,
                path: path.clone(),
                kind: node.kind,
                what,
                size_before: before.and_then(size_of),
                size_after: after.and_then(size_of),
            };
            match change {
                Change::Added => sum.added += 1,
                Change::Removed => sum.removed += 1,
                Change::Changed => sum.changed += 1,
            }
            let (was, now) = (c.size_before.unwrap_or(0), c.size_after.unwrap_or(0));
            if change == Change::Changed && before.map(|n| n.kind) == after.map(|n| n.kind) {
                sum.bytes_added += now.saturating_sub(was);
                sum.bytes_removed += was.saturating_sub(now);
            } else {
                sum.bytes_added += now;
                sum.bytes_removed += was;
            }
            on_change(&c)?;
        }
        let is_dir = |n: &Option<Node>| n.as_ref().is_some_and(|n| n.kind == NodeKind::Dir);
        if !is_dir(&pair.0) && !is_dir(&pair.1) {
            continue;
        }
        if is_dir(&pair.0)
            && is_dir(&pair.1)
            && pair.0.as_ref().map(|n| n.subtree) == pair.1.as_ref().map(|n| n.subtree)
        {
            sum.dirs_unchanged += 1;
            continue;
        }
        let before = children(repo, pair.0.as_ref()).await?;
        let after = children(repo, pair.1.as_ref()).await?;
        stack.push((path, pair_up(before, after).into_iter()));
    }
    Ok(sum)
}

fn state(r: &ContentRow) -> RowState {
    RowState {
        count: r.count,
        bytes: r.bytes,
    }
}

/// Compares the rows of two database snapshots at or under `path`.
async fn database(
    repo: &IndexedRepository,
    older: &SnapshotEntry,
    newer: &SnapshotEntry,
    ca: Contents,
    cb: Contents,
    path: &[&str],
    req: &DiffRequest,
) -> Result<DatabaseDiff> {
    let under = |c: Contents| -> Vec<ContentRow> {
        c.rows.into_iter().filter(|r| r.is_under(path)).collect()
    };
    let (item, counted, levels) = (cb.item, cb.counted, cb.levels);
    let (ra, rb) = (under(ca), under(cb));
    if !path.is_empty() && ra.is_empty() && rb.is_empty() {
        return Err(in_neither(req, older, newer));
    }
    let mut sum = DatabaseSummary::default();
    for r in &ra {
        sum.count_before += r.count;
        sum.bytes_before += r.bytes.unwrap_or(0);
    }
    for r in &rb {
        sum.count_after += r.count;
        sum.bytes_after += r.bytes.unwrap_or(0);
    }
    let mut changes = Vec::new();
    // Whole databases and schemas that appear or go.
    for depth in 1..levels.len() {
        let prefixes = |rows: &[ContentRow]| -> BTreeSet<Vec<String>> {
            rows.iter()
                .filter(|r| r.path.len() > depth)
                .map(|r| r.path[..depth].to_vec())
                .collect()
        };
        let (pa, pb) = (prefixes(&ra), prefixes(&rb));
        for (change, only) in [
            (Change::Removed, pa.difference(&pb)),
            (Change::Added, pb.difference(&pa)),
        ] {
            for p in only {
                changes.push(RowChange {
                    change,
                    item: levels[depth - 1],
                    name: qualified_name(levels, p),
                    path: p.clone(),
                    before: None,
                    after: None,
                    data_changed: false,
                });
            }
        }
    }
    let old: HashMap<&[String], &ContentRow> = ra.iter().map(|r| (r.path.as_slice(), r)).collect();
    let new: HashMap<&[String], &ContentRow> = rb.iter().map(|r| (r.path.as_slice(), r)).collect();
    for r in &ra {
        if !new.contains_key(r.path.as_slice()) {
            sum.removed += 1;
            changes.push(RowChange {
                change: Change::Removed,
                item,
                name: qualified_name(levels, &r.path),
                path: r.path.clone(),
                before: Some(state(r)),
                after: None,
                data_changed: false,
            });
        }
    }
    for r in &rb {
        let Some(prev) = old.get(r.path.as_slice()) else {
            sum.added += 1;
            changes.push(RowChange {
                change: Change::Added,
                item,
                name: qualified_name(levels, &r.path),
                path: r.path.clone(),
                before: None,
                after: Some(state(r)),
                data_changed: false,
            });
            continue;
        };
        let data_changed = match (&prev.tree, &r.tree) {
            (Some(x), Some(y)) => {
                let x: Vec<&str> = x.iter().map(String::as_str).collect();
                let y: Vec<&str> = y.iter().map(String::as_str).collect();
                let nx = node_at(repo, &older.snapshot.tree, &x).await?;
                let ny = node_at(repo, &newer.snapshot.tree, &y).await?;
                nx.map(|n| (n.subtree, n.content, n.content_lists))
                    != ny.map(|n| (n.subtree, n.content, n.content_lists))
            }
            _ => false,
        };
        if state(prev) == state(r) && !data_changed {
            sum.unchanged += 1;
            continue;
        }
        sum.changed += 1;
        changes.push(RowChange {
            change: Change::Changed,
            item,
            name: qualified_name(levels, &r.path),
            path: r.path.clone(),
            before: Some(state(prev)),
            after: Some(state(r)),
            data_changed,
        });
    }
    changes.sort_by(|x, y| x.path.cmp(&y.path));
    #[cfg(feature = "redis")]
    let keys = if newer.snapshot.source.kind == "redis" {
        let db = match path {
            [db] => db.parse::<u32>().ok(),
            _ => None,
        };
        let reader =
            |e: &SnapshotEntry| backup_core::reader::SnapshotReader::new(repo.clone(), e.clone());
        Some(backup_sources::redis::item::diff_keys(&reader(older), &reader(newer), db).await?)
    } else {
        None
    };
    Ok(DatabaseDiff {
        kind: newer.snapshot.source.kind.clone(),
        item,
        counted,
        changes,
        summary: sum,
        #[cfg(feature = "redis")]
        keys,
    })
}

/// The path of `req` is in neither snapshot.
fn in_neither(req: &DiffRequest, older: &SnapshotEntry, newer: &SnapshotEntry) -> Error {
    backup_core::Error::not_found(format!(
        "`{}` in snapshots {} and {}",
        req.path.as_deref().unwrap_or("/"),
        older.id.short(),
        newer.id.short()
    ))
    .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(name: &str, data: &[u8]) -> Node {
        let mut n = Node::new(name, NodeKind::File);
        n.size = data.len() as u64;
        n.content = vec![Id::hash(data)];
        n.mode = Some(0o644);
        n.mtime_ns = Some(1);
        n
    }

    #[test]
    fn pairs_and_differences() {
        let pairs = pair_up(
            vec![file("a", b"1"), file("c", b"3")],
            vec![file("b", b"2"), file("c", b"3")],
        );
        let names: Vec<_> = pairs
            .iter()
            .map(|(x, y)| (x.is_some(), y.is_some()))
            .collect();
        assert_eq!(names, [(true, false), (false, true), (true, true)]);
        let a = file("f", b"one");
        let mut b = file("f", b"two");
        assert_eq!(differences(&a, &b), ["content"]);
        b.mode = Some(0o600);
        b.mtime_ns = Some(2);
        b.uid = Some(7);
        assert_eq!(differences(&a, &b), ["content", "mode", "owner", "mtime"]);
        let mut l = Node::new("f", NodeKind::Symlink);
        l.link_target = Some(FsName::from("x"));
        assert_eq!(
            differences(&a, &l),
            ["type", "mode", "mtime", "link_target"]
        );
        assert!(differences(&a, &a.clone()).is_empty());
        // A directory's own time is not a change.
        let mut d1 = Node::new("d", NodeKind::Dir);
        d1.mtime_ns = Some(1);
        let mut d2 = d1.clone();
        d2.mtime_ns = Some(2);
        assert!(differences(&d1, &d2).is_empty());
    }
}
