//! The MongoDB source.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use async_trait::async_trait;
use backup_core::snapshot::SourceDescriptor;
use backup_core::source::{AsyncReader, Content, Item, OnReadError, Source};
use backup_core::tree::{Node, NodeKind};
use backup_core::{Error, Result};
use futures::Stream;
use mongodb::bson::{doc, Bson, Document, RawDocumentBuf};
use mongodb::Cursor;
use tokio::sync::watch;

use super::conn::{Conn, Side};
use super::replset::{identify, oplog_edge};
use super::{
    security, tree_name, CollectionMeta, Metadata, NsFilter, OplogRange, ReplicaSet, Scope, Ts,
    DATABASES, DOCUMENTS, INTERNAL_DATABASES, METADATA, OPLOG,
};
use crate::gather::Gather;
use crate::{MongoOptions, Selection};

/// Backs up a MongoDB deployment (or the databases and collections the URL
/// and patterns select).
pub struct MongoSource {
    conn: Conn,
    items: VecDeque<Item>,
    meta: Metadata,
    shared: Arc<Shared>,
    jobs: usize,
}

impl std::fmt::Debug for MongoSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MongoSource")
            .field("url", &self.conn.redacted)
            .field("collections", &self.meta.collections.len())
            .finish_non_exhaustive()
    }
}

/// State shared by the readers of one backup.
struct Shared {
    /// Per collection (index in the manifest): documents and bytes, once
    /// read to the end.
    stats: Mutex<HashMap<usize, (u64, u64)>>,
    /// Collections still being read, and whether one failed.
    progress: watch::Sender<(usize, bool)>,
    oplog: Mutex<Option<Captured>>,
}

/// What the oplog capture read.
#[derive(Debug, Clone)]
struct Captured {
    range: OplogRange,
    /// `ts` of the first entry at or after the start (`None`: none).
    first: Option<Ts>,
}

impl MongoSource {
    /// Connects, lists what to back up and records the oplog start.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed URL or patterns;
    /// [`Error::PermissionDenied`] for failed authentication;
    /// [`Error::Source`] for an unreachable server.
    pub async fn open(url: &str, opts: &Selection, config: &MongoOptions) -> Result<Self> {
        let conn = Conn::new(url, Side::Source).await?;
        let filter = NsFilter::new(&opts.includes, &opts.excludes)?;
        let server_version = conn.version().await?;
        let mut items = VecDeque::new();
        let (topology, oplog_start, replica_set) = topology(&conn, &mut items).await?;
        let databases = list_databases(&conn).await?;
        let catalog = read_catalog(&conn, &databases, &filter).await?;

        let (progress, _) = watch::channel((0usize, false));
        let shared = Arc::new(Shared {
            stats: Mutex::new(HashMap::new()),
            progress,
            oplog: Mutex::new(None),
        });
        let (collections, readers) = collection_items(&conn, &catalog, &shared, &mut items)?;
        shared.progress.send_replace((readers, false));
        if let Some(start) = oplog_start {
            let fut = open_oplog(conn.clone(), start, shared.clone());
            items.push_back(stream_leaf(OPLOG, Box::pin(fut)));
        }

        let (mut users, mut roles) = (Vec::new(), Vec::new());
        if config.users {
            let patterns = !opts.includes.is_empty() || !opts.excludes.is_empty();
            let mut sec_dbs: Vec<String> = if patterns {
                catalog.keys().cloned().collect()
            } else {
                databases.clone()
            };
            if conn.database.is_none() && !patterns {
                // Deployment-wide users: administrators, and users
                // authenticated outside (X.509, LDAP, Kerberos).
                sec_dbs.splice(0..0, security::DEPLOYMENT_DBS.map(str::to_owned));
            }
            (users, roles) = security_items(&conn, &sec_dbs, &mut items).await?;
        }

        let jobs = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        let meta = Metadata {
            server_version,
            topology,
            consistent: oplog_start.is_some(),
            replica_set,
            oplog: None,
            scope: Scope {
                database: conn.database.clone(),
                includes: opts.includes.clone(),
                excludes: opts.excludes.clone(),
            },
            collection_count: collections.iter().filter(|c| !c.is_view()).count(),
            view_count: collections.iter().filter(|c| c.is_view()).count(),
            total_documents: 0,
            total_bytes: 0,
            collections,
            users,
            roles,
        };
        Ok(MongoSource {
            conn,
            items,
            meta,
            shared,
            jobs,
        })
    }
}

/// Per database, per collection: its `listCollections` entry and indexes.
type Catalog = BTreeMap<String, BTreeMap<String, (Document, Vec<Document>)>>;

/// The deployment's topology, where the oplog capture starts (only a
/// replica set member has an oplog) and the replica set; warns when the
/// backup cannot be a consistent point in time.
async fn topology(
    conn: &Conn,
    items: &mut VecDeque<Item>,
) -> Result<(String, Option<Ts>, Option<ReplicaSet>)> {
    let hello = conn.hello().await?;
    Ok(if hello.mongos {
        items.push_back(Item::Warning(
            "sharded cluster (mongos): the oplog of each shard is not captured, so this backup is not a consistent point in time; back up each shard's replica set for that".to_owned(),
        ));
        ("sharded (mongos)".to_owned(), None, None)
    } else if let Some(set) = &hello.set_name {
        // The member's last write is the newest oplog entry, without
        // reading the oplog; older servers are asked for it.
        let start = match hello.last_write {
            Some(ts) => Ts::from(ts),
            None => oplog_edge(conn, -1).await?,
        };
        let replica_set = identify(conn, &hello).await?;
        (format!("replica set {set}"), Some(start), Some(replica_set))
    } else {
        items.push_back(Item::Warning(
            "standalone server: there is no oplog, so writes made during the backup may be partly included; this backup is not a consistent point in time".to_owned(),
        ));
        ("standalone".to_owned(), None, None)
    })
}

/// The database the URL names, or every database but the internal ones.
async fn list_databases(conn: &Conn) -> Result<Vec<String>> {
    if let Some(db) = &conn.database {
        return Ok(vec![db.clone()]);
    }
    let d = conn
        .command(
            "admin",
            doc! {"listDatabases": 1, "nameOnly": true},
            "listing databases",
        )
        .await?;
    let mut names: Vec<String> = d
        .get_array("databases")
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_document()?.get_str("name").ok())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    names.retain(|n| !INTERNAL_DATABASES.contains(&n.as_str()));
    Ok(names)
}

/// The collections and views the filter selects, with their indexes.
async fn read_catalog(conn: &Conn, databases: &[String], filter: &NsFilter) -> Result<Catalog> {
    let mut catalog = Catalog::new();
    for db in databases {
        for entry in conn.list_collections(db).await? {
            let Ok(name) = entry.get_str("name") else {
                continue;
            };
            if name.starts_with("system.") || !filter.matches(db, name) {
                continue;
            }
            let kind = entry.get_str("type").unwrap_or("collection");
            let indexes = if kind == "view" {
                Vec::new()
            } else {
                conn.list_indexes(db, name).await?
            };
            catalog
                .entry(db.clone())
                .or_default()
                .insert(name.to_owned(), (entry.clone(), indexes));
        }
    }
    Ok(catalog)
}

/// The snapshot tree of the catalog, in tree-name order: per collection
/// its documents (read when the archiver gets there) and metadata.
/// Returns the manifest's collection entries and how many readers were
/// opened.
fn collection_items(
    conn: &Conn,
    catalog: &Catalog,
    shared: &Arc<Shared>,
    items: &mut VecDeque<Item>,
) -> Result<(Vec<CollectionMeta>, usize)> {
    let mut collections = Vec::new();
    let mut readers = 0usize;
    items.push_back(Item::Enter(dir_node(DATABASES)));
    let mut dbs: Vec<(&String, _)> = catalog.iter().collect();
    dbs.sort_by_key(|(db, _)| tree_name(db));
    for (db, colls) in dbs {
        items.push_back(Item::Enter(dir_node(&tree_name(db))));
        let mut colls: Vec<_> = colls.iter().collect();
        colls.sort_by_key(|(c, _)| tree_name(c));
        for (name, (entry, indexes)) in colls {
            let meta = collection_meta(db, name, entry, indexes.len());
            items.push_back(Item::Enter(dir_node(&tree_name(name))));
            if !meta.is_view() {
                readers += 1;
                let fut = open_collection(
                    conn.clone(),
                    db.clone(),
                    name.clone(),
                    collections.len(),
                    shared.clone(),
                );
                items.push_back(stream_leaf(DOCUMENTS, Box::pin(fut)));
            }
            collections.push(meta);
            let mut stored = entry.clone();
            stored.insert(
                "indexes",
                Bson::Array(indexes.iter().cloned().map(Bson::Document).collect()),
            );
            let mut buf = Vec::new();
            stored.to_writer(&mut buf).map_err(|e| {
                Error::source_caused(format!("encoding the metadata of {db}.{name}"), e)
            })?;
            items.push_back(bytes_leaf(METADATA, buf));
            items.push_back(Item::Leave);
        }
        items.push_back(Item::Leave);
    }
    items.push_back(Item::Leave);
    Ok((collections, readers))
}

/// The manifest entry of a collection, view or time series from its
/// `listCollections` entry (counts are filled in when it has been read).
fn collection_meta(db: &str, name: &str, entry: &Document, indexes: usize) -> CollectionMeta {
    let mut kind = entry.get_str("type").unwrap_or("collection").to_owned();
    if kind == "collection"
        && entry
            .get_document("options")
            .is_ok_and(|o| o.contains_key("timeseries"))
    {
        "timeseries".clone_into(&mut kind);
    }
    let uuid = entry
        .get_document("info")
        .ok()
        .and_then(|i| i.get("uuid"))
        .and_then(|u| match u {
            Bson::Binary(b) => Some(hex::encode(&b.bytes)),
            _ => None,
        });
    CollectionMeta {
        db: db.to_owned(),
        name: name.to_owned(),
        kind,
        uuid,
        documents: 0,
        bytes: 0,
        indexes,
    }
}

/// The users and roles of `dbs` as the snapshot's `security` directory;
/// returns their names for the manifest.
async fn security_items(
    conn: &Conn,
    dbs: &[String],
    items: &mut VecDeque<Item>,
) -> Result<(Vec<String>, Vec<String>)> {
    let (u, r) = security::read(conn, dbs).await?;
    items.push_back(Item::Enter(dir_node(security::SECURITY)));
    for (name, docs) in [(security::ROLES, &r), (security::USERS, &u)] {
        let mut buf = Vec::new();
        for d in docs {
            d.to_writer(&mut buf)
                .map_err(|e| Error::source_caused(format!("encoding {name}"), e))?;
        }
        items.push_back(bytes_leaf(name, buf));
    }
    items.push_back(Item::Leave);
    Ok((security::names(&u, "user"), security::names(&r, "role")))
}

#[async_trait]
impl Source for MongoSource {
    fn descriptor(&self) -> SourceDescriptor {
        SourceDescriptor {
            kind: "mongodb".to_owned(),
            url: self.conn.redacted.clone(),
        }
    }

    fn concurrency(&self) -> usize {
        // Collections read at once, plus the oplog capture waiting for them.
        self.jobs + 1
    }

    async fn next(&mut self) -> Result<Option<Item>> {
        Ok(self.items.pop_front())
    }

    async fn finish(&mut self) -> Result<serde_json::Value> {
        let stats = self
            .shared
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut meta = self.meta.clone();
        for (i, c) in meta.collections.iter_mut().enumerate() {
            if c.is_view() {
                continue;
            }
            let Some((docs, bytes)) = stats.get(&i) else {
                return Err(Error::source_failed(format!(
                    "the documents of {} were not read to the end",
                    c.ns()
                )));
            };
            c.documents = *docs;
            c.bytes = *bytes;
        }
        if meta.consistent {
            let range = self
                .shared
                .oplog
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            let Some(captured) = range else {
                return Err(Error::source_failed(
                    "the oplog was not captured to the end",
                ));
            };
            let start = captured.range.start;
            if start != Ts::default() && captured.first != Some(start) {
                // The start entry was not found: the oplog rolled over
                // during the backup, unless the start was not an entry.
                let oldest = oplog_edge(&self.conn, 1).await?;
                if oldest > start {
                    return Err(Error::source_failed(format!(
                        "the oplog rolled over during the backup: the oldest entry ({}, {}) is newer than the start ({}, {}), so writes made during the backup are lost from it; enlarge the oplog (replSetResizeOplog) or back up when fewer writes happen",
                        oldest.t, oldest.i, start.t, start.i
                    )));
                }
            }
            meta.oplog = Some(captured.range);
        }
        meta.total_documents = meta.collections.iter().map(|c| c.documents).sum();
        meta.total_bytes = meta.collections.iter().map(|c| c.bytes).sum();
        serde_json::to_value(&meta).map_err(|e| Error::source_caused("encoding metadata", e))
    }
}

fn dir_node(name: &str) -> Node {
    let mut n = Node::new(name, NodeKind::Dir);
    n.mode = Some(0o700);
    n
}

fn stream_leaf(
    name: &str,
    fut: Pin<Box<dyn std::future::Future<Output = Result<AsyncReader>> + Send>>,
) -> Item {
    Item::Leaf {
        node: Node::new(name, NodeKind::Stream),
        content: Some(Content::Async(fut)),
        on_error: OnReadError::Fail,
    }
}

/// A stream leaf holding `buf`.
fn bytes_leaf(name: &str, buf: Vec<u8>) -> Item {
    let fut = async move {
        let r: AsyncReader = Box::new(std::io::Cursor::new(buf));
        Ok(r)
    };
    stream_leaf(name, Box::pin(fut))
}

/// Marks a collection read as done or failed.
struct Guard {
    shared: Arc<Shared>,
    index: usize,
    docs: u64,
    bytes: u64,
    done: bool,
}

impl Guard {
    fn finish(&mut self) {
        if self.done {
            return;
        }
        self.done = true;
        self.shared
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(self.index, (self.docs, self.bytes));
        self.shared
            .progress
            .send_modify(|(n, _)| *n = n.saturating_sub(1));
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        if !self.done {
            self.shared
                .progress
                .send_modify(|(_, failed)| *failed = true);
        }
    }
}

/// A cursor of raw documents, counted; the collection is marked read at
/// its end.
struct DocStream {
    cursor: Cursor<RawDocumentBuf>,
    guard: Guard,
    label: String,
}

impl Stream for DocStream {
    type Item = std::io::Result<Vec<u8>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        match Pin::new(&mut self.cursor).poll_next(cx) {
            Poll::Ready(Some(Ok(doc))) => {
                self.guard.docs += 1;
                self.guard.bytes += doc.as_bytes().len() as u64;
                Poll::Ready(Some(Ok(doc.into_bytes())))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(std::io::Error::other(format!(
                "reading {}: {e}",
                self.label
            ))))),
            Poll::Ready(None) => {
                self.guard.finish();
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

async fn open_collection(
    conn: Conn,
    db: String,
    coll: String,
    index: usize,
    shared: Arc<Shared>,
) -> Result<AsyncReader> {
    let guard = Guard {
        shared,
        index,
        docs: 0,
        bytes: 0,
        done: false,
    };
    let cursor = conn
        .client
        .database(&db)
        .collection::<RawDocumentBuf>(&coll)
        .find(doc! {})
        .await
        .map_err(|e| conn.error(&format!("reading {db}.{coll}"), e))?;
    let stream = DocStream {
        cursor,
        guard,
        label: format!("{db}.{coll}"),
    };
    Ok(Box::new(tokio_util::io::StreamReader::new(Gather::new(
        stream,
    ))))
}

/// Oplog entries after the start position; no-ops and the server's
/// internal databases are left out. Records the range read at its end.
struct OplogStream {
    cursor: Cursor<RawDocumentBuf>,
    shared: Arc<Shared>,
    range: OplogRange,
    /// `ts` of the first entry the query returned.
    first: Option<Ts>,
}

impl Stream for OplogStream {
    type Item = std::io::Result<Vec<u8>>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        loop {
            match Pin::new(&mut self.cursor).poll_next(cx) {
                Poll::Ready(Some(Ok(doc))) => {
                    let ts = doc.get_timestamp("ts").ok().map(Ts::from);
                    if self.first.is_none() {
                        self.first = Some(ts.unwrap_or_default());
                    }
                    if let Some(ts) = ts {
                        self.range.end = self.range.end.max(ts);
                        if ts <= self.range.start {
                            continue;
                        }
                    }
                    if !keep_oplog_entry(&doc) {
                        continue;
                    }
                    self.range.entries += 1;
                    self.range.bytes += doc.as_bytes().len() as u64;
                    return Poll::Ready(Some(Ok(doc.into_bytes())));
                }
                Poll::Ready(Some(Err(e))) => {
                    return Poll::Ready(Some(Err(std::io::Error::other(format!(
                        "reading the oplog: {e}"
                    )))))
                }
                Poll::Ready(None) => {
                    let captured = Captured {
                        range: self.range.clone(),
                        first: self.first,
                    };
                    *self
                        .shared
                        .oplog
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner) = Some(captured);
                    return Poll::Ready(None);
                }
                Poll::Pending => return Poll::Pending,
            }
        }
    }
}

fn keep_oplog_entry(doc: &RawDocumentBuf) -> bool {
    if doc.get_str("op").ok() == Some("n") {
        return false;
    }
    let ns = doc.get_str("ns").unwrap_or("");
    !(ns.starts_with("local.") || ns.starts_with("config."))
}

/// Waits until every collection was read, then captures the oplog entries
/// after `start` up to the newest one.
///
/// The collections were read between `start` and the newest entry, so
/// replaying these entries over them reaches the state at the newest one.
async fn open_oplog(conn: Conn, start: Ts, shared: Arc<Shared>) -> Result<AsyncReader> {
    let mut rx = shared.progress.subscribe();
    let state = *rx
        .wait_for(|(left, failed)| *left == 0 || *failed)
        .await
        .map_err(|_| Error::Cancelled)?;
    if state.1 {
        return Err(Error::source_failed(
            "a collection could not be read, so the oplog was not captured",
        ));
    }
    // Everything from the start entry on, to the newest entry there is
    // now: one pass over the oplog. Whether the start entry was still
    // there (the oplog did not roll over) is checked in finish().
    let cursor = conn
        .client
        .database("local")
        .collection::<RawDocumentBuf>("oplog.rs")
        .find(doc! {"ts": {"$gte": mongodb::bson::Timestamp::from(start)}})
        .sort(doc! {"ts": 1})
        .allow_disk_use(true)
        .await
        .map_err(|e| conn.error("capturing the oplog", e))?;
    let stream = OplogStream {
        cursor,
        shared,
        range: OplogRange {
            start,
            end: start,
            entries: 0,
            bytes: 0,
        },
        first: None,
    };
    Ok(Box::new(tokio_util::io::StreamReader::new(Gather::new(
        stream,
    ))))
}
