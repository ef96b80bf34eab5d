//! Looking inside a snapshot without restoring it: `backup ls`.
//!
//! Only the snapshot's manifest and tree blobs are read, never data blobs.
//! A files snapshot (and any snapshot whose metadata lists no tables,
//! collections or databases, such as a physical PostgreSQL base backup) is
//! listed entry by entry as the walk goes, through a callback, so a listing
//! of millions of files holds at most one tree per directory level in
//! memory. A database snapshot is listed from its manifest's metadata
//! ([`backup_sources::summary::contents`]: tables with rows and bytes,
//! collections with documents and indexes, Redis databases with key
//! counts) with the streams its tree stores for each. A Redis snapshot's
//! keys (a database's, or those matching a pattern) are listed one by one
//! through the same callback as files, reading the snapshot's stream
//! ([`backup_sources::redis::item::list_keys`]), in bounded memory.

use backup_core::reader::SnapshotReader;
use backup_core::repo::{IndexedRepository, Repository};
use backup_core::snapshot::{SnapshotEntry, SnapshotFilter};
use backup_core::tree::{Node, NodeKind};
use backup_sources::objects::SchemaObject;
use backup_sources::summary::{self, ContentRow};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Serialize;

use crate::error::{Error, Result};

/// What `ls` lists.
#[derive(Debug, Clone, Default)]
pub struct LsRequest {
    /// `latest`, a snapshot id or a unique id prefix.
    pub snapshot: String,
    /// Which snapshots `latest` chooses among.
    pub filter: SnapshotFilter,
    /// Where to start, `/`-separated from the snapshot's root (`None`,
    /// empty or `/`: the root). For a database snapshot: a database, then
    /// a schema and table or a collection (`app/public/orders`), or a
    /// dotted name (`public.orders`, `shop.orders`).
    pub path: Option<String>,
    /// Files: the whole subtree below the path, not only its entries.
    pub recursive: bool,
    /// Redis: list the keys matching this glob (Redis's syntax), of the
    /// database the path names or of every database. Without it, a path
    /// naming a Redis database lists all its keys.
    pub pattern: Option<String>,
    /// Logical PostgreSQL and MongoDB snapshots: also list the objects
    /// beside tables and collections ([`DatabaseListing::objects`]),
    /// reading the schema scripts or collection metadata.
    pub objects: bool,
}

impl LsRequest {
    fn components(&self) -> Vec<&str> {
        components(self.path.as_deref().unwrap_or(""))
    }
}

/// A `/`-separated path inside a snapshot as its components (`.` and
/// empty ones dropped): what `ls`, `diff` and `dump` take.
pub(crate) fn components(path: &str) -> Vec<&str> {
    path.split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect()
}

/// One entry `ls` hands to its callback.
#[derive(Debug, Clone, Copy)]
pub enum LsEntry<'a> {
    /// A file, directory or other tree entry.
    File(&'a FileEntry),
    /// A Redis key.
    #[cfg(feature = "redis")]
    Key(&'a backup_sources::redis::item::KeyEntry),
}

/// One entry of a files listing.
#[derive(Debug, Clone, Serialize)]
pub struct FileEntry {
    /// The path from the snapshot's root, starting with `/` (names that
    /// are not UTF-8 are converted lossily).
    pub path: String,
    /// `file`, `dir`, `symlink`, `stream`, `fifo`, `chardev` or `blockdev`.
    #[serde(rename = "type")]
    pub kind: NodeKind,
    /// Permission bits, with setuid, setgid and sticky.
    pub mode: Option<u32>,
    /// Owner's user id.
    pub uid: Option<u32>,
    /// Owner's group id.
    pub gid: Option<u32>,
    /// Owner's user name, when the source system had one.
    pub user: Option<String>,
    /// Group name, when the source system had one.
    pub group: Option<String>,
    /// Content size in bytes (0 for directories and links).
    pub size: u64,
    /// Modification time, RFC 3339 with nanoseconds.
    pub mtime: Option<String>,
    /// A symbolic link's target.
    pub link_target: Option<String>,
}

impl FileEntry {
    fn of(parent: &str, node: &Node) -> Self {
        FileEntry {
            path: join(parent, &node.name.display()),
            kind: node.kind,
            mode: node.mode,
            uid: node.uid,
            gid: node.gid,
            user: node.user.clone(),
            group: node.group.clone(),
            size: node.size,
            mtime: node.mtime_ns.map(|ns| {
                DateTime::<Utc>::from_timestamp_nanos(ns)
                    .to_rfc3339_opts(SecondsFormat::AutoSi, true)
            }),
            link_target: node.link_target.as_ref().map(|t| t.display().into_owned()),
        }
    }
}

fn join(parent: &str, name: &str) -> String {
    if parent.ends_with('/') {
        format!("{parent}{name}")
    } else {
        format!("{parent}/{name}")
    }
}

/// A stream a database snapshot's tree stores.
#[derive(Debug, Clone, Serialize)]
pub struct StreamEntry {
    /// Its path from the snapshot's root, `/`-separated, starting with `/`.
    pub path: String,
    /// Its size in bytes.
    pub size: u64,
}

/// A table, collection or Redis database of a database listing.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseRow {
    /// What the metadata says of it.
    #[serde(flatten)]
    pub row: ContentRow,
    /// The streams holding its data, in tree order.
    pub streams: Vec<StreamEntry>,
}

/// What a database snapshot holds.
#[derive(Debug, Clone, Serialize)]
pub struct DatabaseListing {
    /// The kind: `postgres`, `mongodb` or `redis`.
    pub kind: String,
    /// What a row is: `table`, `collection` or `database`.
    pub item: &'static str,
    /// What its count counts: `rows`, `documents` or `keys`.
    pub counted: &'static str,
    /// What each component of a row's path names.
    pub levels: &'static [&'static str],
    /// The rows at or under the requested path, in the snapshot's order.
    pub rows: Vec<DatabaseRow>,
    /// Without a path: the streams that belong to no row (schema dumps,
    /// the RDB file, the oplog, users); with one, empty.
    pub other_streams: Vec<StreamEntry>,
    /// With [`LsRequest::objects`]: the schema objects at or under the
    /// path (a PostgreSQL schema's, a MongoDB database's or collection's);
    /// otherwise empty.
    pub objects: Vec<SchemaObject>,
}

/// What `ls` found.
#[derive(Debug, Clone)]
pub enum Listing {
    /// A tree listing, whose entries went to the callback.
    Files {
        /// How many entries were listed.
        entries: u64,
    },
    /// A database snapshot's contents.
    Database(DatabaseListing),
    /// Redis keys, which went to the callback.
    Keys {
        /// How many keys were listed.
        entries: u64,
    },
}

/// The snapshot `ls` read and what it found there.
#[derive(Debug, Clone)]
pub struct LsOutcome {
    /// The snapshot.
    pub snapshot: SnapshotEntry,
    /// What it holds at the path.
    pub listing: Listing,
}

/// Lists what the snapshot `req` names holds at its path, reading only the
/// manifest and tree blobs. A tree listing (files snapshots, and snapshots
/// whose metadata lists no tables, collections or databases) goes to
/// `on_entry` as the walk goes, depth first, each directory in name order
/// and before its contents; a path naming a file or link lists that one
/// entry. A database listing is returned whole (it is as long as the
/// snapshot's metadata). No lock is taken: manifests and the trees they
/// reach are never changed in place.
///
/// # Errors
///
/// [`Error::NotFound`](backup_core::Error::NotFound) when the snapshot or
/// the path does not exist (or the path goes through something that is
/// not a directory); an error `on_entry` returns stops the walk and is
/// returned; damaged trees and storage errors.
pub async fn ls(
    repo: &Repository,
    req: &LsRequest,
    on_entry: &mut (dyn FnMut(LsEntry<'_>) -> Result<()> + Send),
) -> Result<LsOutcome> {
    let entry = repo.find_snapshot(&req.snapshot, &req.filter).await?;
    let indexed: IndexedRepository = repo.clone().load_index().await?;
    let reader = SnapshotReader::new(indexed, entry.clone());
    let path = req.components();
    let redis = entry.snapshot.source.kind == "redis";
    if req.pattern.is_some() && !redis {
        return Err(Error::Usage(
            "--match applies to the keys of Redis snapshots".to_owned(),
        ));
    }
    if redis && (req.pattern.is_some() || !path.is_empty()) {
        let entries = keys(&reader, &path, req, on_entry).await?;
        return Ok(LsOutcome {
            snapshot: entry,
            listing: Listing::Keys { entries },
        });
    }
    let contents = (entry.snapshot.source.kind != "files")
        .then(|| summary::contents(&entry.snapshot.source.kind, &entry.snapshot.metadata))
        .flatten();
    if req.objects && contents.is_none() {
        return Err(Error::Usage(format!(
            "--objects lists the schema objects of logical PostgreSQL and MongoDB snapshots; snapshot {} is a {} snapshot",
            entry.id.short(),
            entry.snapshot.source.kind
        )));
    }
    let listing = match contents {
        Some(c) => Listing::Database(database(&reader, c, &path, req).await?),
        None => Listing::Files {
            entries: files(&reader, &path, req, on_entry).await?,
        },
    };
    Ok(LsOutcome {
        snapshot: entry,
        listing,
    })
}

fn not_found(reader: &SnapshotReader, req: &LsRequest) -> Error {
    backup_core::Error::not_found(format!(
        "`{}` in snapshot {}",
        req.path.as_deref().unwrap_or("/"),
        reader.id().short()
    ))
    .into()
}

/// Lists the keys of the Redis database `path` names (every database
/// without one) that match the request's pattern.
#[cfg(feature = "redis")]
async fn keys(
    reader: &SnapshotReader,
    path: &[&str],
    req: &LsRequest,
    on_entry: &mut (dyn FnMut(LsEntry<'_>) -> Result<()> + Send),
) -> Result<u64> {
    let db = match path {
        [] => None,
        [db] => Some(db.parse::<u32>().map_err(|_| not_found(reader, req))?),
        _ => {
            return Err(Error::Usage(format!(
                "a Redis snapshot lists databases and their keys: `backup ls {} DB` (`--match GLOB` narrows), `backup dump {} DB/KEY` writes one",
                reader.id().short(),
                reader.id().short()
            )))
        }
    };
    let mut on_key = |k: &backup_sources::redis::item::KeyEntry| {
        on_entry(LsEntry::Key(k)).map_err(|e| match e {
            Error::Core(e) => e,
            other => backup_core::Error::Config(other.to_string()),
        })
    };
    Ok(
        backup_sources::redis::item::list_keys(reader, db, req.pattern.as_deref(), &mut on_key)
            .await?,
    )
}

#[cfg(not(feature = "redis"))]
#[allow(clippy::unused_async)]
async fn keys(
    _: &SnapshotReader,
    _: &[&str],
    _: &LsRequest,
    _: &mut (dyn FnMut(LsEntry<'_>) -> Result<()> + Send),
) -> Result<u64> {
    Err(Error::Usage(
        "this build has no Redis support: it cannot list a Redis snapshot's keys".to_owned(),
    ))
}

/// Walks the tree at `path`, handing each entry to `on_entry`.
async fn files(
    reader: &SnapshotReader,
    path: &[&str],
    req: &LsRequest,
    on_entry: &mut (dyn FnMut(LsEntry<'_>) -> Result<()> + Send),
) -> Result<u64> {
    let mut dir = reader.root().await?;
    let mut prefix = "/".to_owned();
    for (i, name) in path.iter().enumerate() {
        let Some(node) = dir.get(name).cloned() else {
            return Err(not_found(reader, req));
        };
        if node.kind == NodeKind::Dir {
            dir = reader.open_dir(&node).await?;
            prefix = join(&prefix, name);
        } else if i + 1 == path.len() {
            on_entry(LsEntry::File(&FileEntry::of(&prefix, &node)))?;
            return Ok(1);
        } else {
            return Err(not_found(reader, req));
        }
    }
    // Depth first with one pending iterator per open directory level.
    let mut count = 0u64;
    let mut stack = vec![(prefix, dir.entries().to_vec().into_iter())];
    while let Some((parent, entries)) = stack.last_mut() {
        let Some(node) = entries.next() else {
            stack.pop();
            continue;
        };
        let entry = FileEntry::of(parent, &node);
        on_entry(LsEntry::File(&entry))?;
        count += 1;
        if req.recursive && node.kind == NodeKind::Dir {
            let sub = reader.open_dir(&node).await?;
            stack.push((entry.path, sub.entries().to_vec().into_iter()));
        }
    }
    Ok(count)
}

/// The rows at or under `path` with their streams.
async fn database(
    reader: &SnapshotReader,
    contents: summary::Contents,
    path: &[&str],
    req: &LsRequest,
) -> Result<DatabaseListing> {
    let rows: Vec<ContentRow> = contents
        .rows
        .into_iter()
        .filter(|r| r.is_under(path))
        .collect();
    if !path.is_empty() && rows.is_empty() {
        return Err(not_found(reader, req));
    }
    // Without a path every stream of the tree is listed once, under its
    // row or among the others; with one, only the rows' directories are
    // read.
    let streams = if path.is_empty() {
        streams_under(reader, &[]).await?
    } else {
        let mut all = Vec::new();
        for r in &rows {
            if let Some(tree) = &r.tree {
                let tree: Vec<&str> = tree.iter().map(String::as_str).collect();
                all.extend(streams_under(reader, &tree).await?);
            }
        }
        all
    };
    let mut taken = vec![false; streams.len()];
    let rows: Vec<DatabaseRow> = rows
        .into_iter()
        .map(|row| {
            let mut mine = Vec::new();
            if let Some(tree) = &row.tree {
                for (i, (parts, s)) in streams.iter().enumerate() {
                    if !taken[i] && parts.starts_with(tree) {
                        taken[i] = true;
                        mine.push(s.clone());
                    }
                }
            }
            DatabaseRow { row, streams: mine }
        })
        .collect();
    let other_streams = if path.is_empty() {
        streams
            .into_iter()
            .zip(taken)
            .filter(|(_, t)| !t)
            .map(|((_, s), _)| s)
            .collect()
    } else {
        Vec::new()
    };
    let objects = if req.objects {
        backup_sources::objects::objects(reader)
            .await?
            .into_iter()
            .filter(|o| object_under(o, path, &rows))
            .collect()
    } else {
        Vec::new()
    };
    Ok(DatabaseListing {
        kind: reader.snapshot().source.kind.clone(),
        item: contents.item,
        counted: contents.counted,
        levels: contents.levels,
        rows,
        other_streams,
        objects,
    })
}

/// Whether `o` belongs to what the listed `rows` (tables or
/// collections at or under the requested path) cover: with no path,
/// everything; a MongoDB index, when its collection is listed; a
/// PostgreSQL object, when a table of its schema is (`pg_dump`'s headers
/// do not say which table an index or trigger belongs to, so a path
/// naming a table keeps its schema's objects).
fn object_under(o: &SchemaObject, path: &[&str], rows: &[DatabaseRow]) -> bool {
    if path.is_empty() {
        return true;
    }
    rows.iter().any(|r| {
        let p = &r.row.path;
        if o.on.is_empty() {
            p.get(1).is_some_and(|schema| *schema == o.schema)
        } else {
            p.first().is_some_and(|db| *db == o.schema) && p.get(1).is_some_and(|c| *c == o.on)
        }
    })
}

/// Every stream (and file) below the directory at `start`, with its path's
/// components; nothing when `start` does not exist (a view has no data).
async fn streams_under(
    reader: &SnapshotReader,
    start: &[&str],
) -> Result<Vec<(Vec<String>, StreamEntry)>> {
    let Some(dir) = reader.dir(start).await? else {
        return Ok(Vec::new());
    };
    let base: Vec<String> = start.iter().map(|s| (*s).to_owned()).collect();
    let mut out = Vec::new();
    let mut stack = vec![(base, dir.entries().to_vec().into_iter())];
    while let Some((parent, entries)) = stack.last_mut() {
        let Some(node) = entries.next() else {
            stack.pop();
            continue;
        };
        let mut parts = parent.clone();
        parts.push(node.name.display().into_owned());
        if node.kind == NodeKind::Dir {
            let sub = reader.open_dir(&node).await?;
            stack.push((parts, sub.entries().to_vec().into_iter()));
        } else {
            let entry = StreamEntry {
                path: format!("/{}", parts.join("/")),
                size: node.size,
            };
            out.push((parts, entry));
        }
    }
    Ok(out)
}

/// A row's (or a level's) name for people, from its path and the kind's
/// [`levels`](summary::Contents::levels): PostgreSQL `app/sales.orders`
/// (`sales.orders` when the database is not named, `app/sales` for a
/// schema), MongoDB `shop.orders`, Redis `0`.
pub fn qualified_name(levels: &[&str], path: &[String]) -> String {
    match (levels.len(), path) {
        (3, [db, schema, table]) if db.is_empty() => format!("{schema}.{table}"),
        (3, [db, schema, table]) => format!("{db}/{schema}.{table}"),
        (3, [db, schema]) if db.is_empty() => schema.clone(),
        (3, [db, schema]) => format!("{db}/{schema}"),
        (2, [db, coll]) => format!("{db}.{coll}"),
        _ => path.join("/"),
    }
}
