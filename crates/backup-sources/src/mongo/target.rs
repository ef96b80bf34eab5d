//! The MongoDB restore target.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use backup_core::progress::Progress;
use backup_core::reader::{Dir, SnapshotReader};
use backup_core::restorer::RestoreStats;
use backup_core::target::{RestoreOptions, RestoreReport, RestoredUnit, Target};
use backup_core::tree::Node;
use backup_core::{Error, FileKind, Result};
use bytes::{Buf, BytesMut};
use futures::StreamExt;
use mongodb::bson::{doc, Bson, Document, RawDocumentBuf};
use mongodb::error::ErrorKind;
use mongodb::Collection;

use super::conn::{Conn, Hello, Side};
use super::oplog::{clean_index_spec, plan_entry, Op};
use super::{
    security, tree_name, CollectionMeta, Metadata, NsFilter, Renames, DATABASES, DOCUMENTS,
    METADATA, OPLOG,
};

/// What a MongoDB restore did or would do (the `details` of its report).
#[derive(Debug, serde::Serialize)]
struct MongoRestoreReport {
    server_version: String,
    collections: Vec<CollectionPlan>,
    documents: u64,
    data_bytes: u64,
    oplog_entries: u64,
    consistent: bool,
    summary: Vec<String>,
    /// What happened, once the restore ran (not for a dry run).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    outcome: Option<MongoOutcome>,
}

/// One collection or view of the plan.
#[derive(Debug, serde::Serialize)]
struct CollectionPlan {
    from: String,
    to: String,
    kind: String,
    documents: u64,
    bytes: u64,
    indexes: usize,
    /// What it replaces on the target (`--drop`).
    #[serde(skip_serializing_if = "Option::is_none")]
    replaces: Option<String>,
}

/// The results of a restore that ran.
#[derive(Debug, serde::Serialize)]
struct MongoOutcome {
    roles_created: Vec<String>,
    users_created: Vec<String>,
    users_and_roles_kept: Vec<String>,
    users_and_roles_failed: Vec<String>,
    indexes_built: usize,
    oplog_operations: u64,
    index_failures: Vec<String>,
    count_mismatches: Vec<String>,
}

/// Restores a MongoDB snapshot into the deployment a URL names.
#[derive(Debug)]
pub struct MongoTarget {
    url: String,
    redacted: String,
    jobs: usize,
    /// Namespaces the last restore created (for [`Target::discard`]).
    created: Mutex<Vec<(String, String)>>,
}

/// One collection or view to restore.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub(crate) meta: CollectionMeta,
    /// The stored `listCollections` entry plus `indexes`.
    pub(crate) spec: Document,
    pub(crate) documents: Option<Node>,
    pub(crate) db: String,
    pub(crate) coll: String,
}

impl Planned {
    pub(crate) fn target_ns(&self) -> String {
        format!("{}.{}", self.db, self.coll)
    }

    pub(crate) fn options(&self) -> Document {
        self.spec
            .get_document("options")
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn indexes(&self) -> Vec<Document> {
        self.spec
            .get_array("indexes")
            .map(|a| a.iter().filter_map(|i| i.as_document().cloned()).collect())
            .unwrap_or_default()
    }
}

/// The snapshot read back.
pub(crate) struct Loaded {
    pub(crate) meta: Metadata,
    pub(crate) collections: Vec<Planned>,
    pub(crate) oplog: Option<Node>,
    /// Users (`admin.system.users` shape), when backed up.
    pub(crate) users: Vec<Document>,
    /// User-defined roles (`admin.system.roles` shape), when backed up.
    pub(crate) roles: Vec<Document>,
}

pub(crate) fn snapshot_metadata(snapshot: &SnapshotReader) -> Result<Metadata> {
    let s = snapshot.snapshot();
    if s.source.kind != "mongodb" {
        return Err(Error::Config(format!(
            "snapshot {} is a {} backup, not MongoDB",
            snapshot.id().short(),
            s.source.kind
        )));
    }
    serde_json::from_value(s.metadata.clone()).map_err(|e| snapshot.damaged(e))
}

/// Maps an original namespace to its target (`None`: not restored).
pub(crate) type NsMapSync<'a> = dyn Fn(&str, &str) -> Option<(String, String)> + Sync + 'a;

/// Loads the manifest and the metadata of the selected collections;
/// `map` gives each its target namespace (`None`: not restored).
pub(crate) async fn load(snapshot: &SnapshotReader, map: &NsMapSync<'_>) -> Result<Loaded> {
    let meta = snapshot_metadata(snapshot)?;
    let corrupt = |what: String| snapshot.damaged(what);
    let root = snapshot.root().await?;
    let oplog = root.get(OPLOG).cloned();
    let (mut users, mut roles) = (Vec::new(), Vec::new());
    if let Some(tree) = root.dir(security::SECURITY).await? {
        for (name, out) in [(security::USERS, &mut users), (security::ROLES, &mut roles)] {
            let Some(node) = tree.get(name) else {
                return Err(corrupt(format!("{}/{name} is missing", security::SECURITY)));
            };
            let mut split = DocSplitter::new(usize::MAX);
            split.push(&snapshot.read_all(node).await?);
            while let Some(raw) = split.next_doc().map_err(&corrupt)? {
                out.push(
                    RawDocumentBuf::from_bytes(raw)
                        .and_then(|r| r.to_document())
                        .map_err(|e| corrupt(format!("{name}: {e}")))?,
                );
            }
            if split.has_rest() {
                return Err(corrupt(format!("{name} ends inside a document")));
            }
        }
    }
    let dbs = root.dir(DATABASES).await?;
    let mut db_trees: HashMap<String, Dir> = HashMap::new();
    let mut collections = Vec::new();
    for c in &meta.collections {
        let Some((tdb, tcoll)) = map(&c.db, &c.name) else {
            continue;
        };
        if !db_trees.contains_key(&c.db) {
            let missing = || corrupt(format!("database {} is missing from the tree", c.db));
            let db_dir = match &dbs {
                Some(d) => d.dir(&tree_name(&c.db)).await?.ok_or_else(missing)?,
                None => return Err(missing()),
            };
            db_trees.insert(c.db.clone(), db_dir);
        }
        let tree = match db_trees.get(&c.db) {
            Some(d) => d.dir(&tree_name(&c.name)).await?,
            None => None,
        }
        .ok_or_else(|| corrupt(format!("{} is missing from the tree", c.ns())))?;
        let meta_node = tree
            .get(METADATA)
            .ok_or_else(|| corrupt(format!("{}: no metadata", c.ns())))?;
        let raw = snapshot.read_all(meta_node).await?;
        let spec = RawDocumentBuf::from_bytes(raw)
            .and_then(|r| r.to_document())
            .map_err(|e| corrupt(format!("{}: metadata: {e}", c.ns())))?;
        let documents = tree.get(DOCUMENTS).cloned();
        if !c.is_view() && documents.is_none() {
            return Err(corrupt(format!("{}: no documents stream", c.ns())));
        }
        collections.push(Planned {
            meta: c.clone(),
            spec,
            documents,
            db: tdb,
            coll: tcoll,
        });
    }
    Ok(Loaded {
        meta,
        collections,
        oplog,
        users,
        roles,
    })
}

/// Splits concatenated BSON documents.
pub(crate) struct DocSplitter {
    buf: BytesMut,
    max: usize,
}

impl DocSplitter {
    pub(crate) fn new(max: usize) -> Self {
        DocSplitter {
            buf: BytesMut::new(),
            max,
        }
    }

    pub(crate) fn push(&mut self, data: &[u8]) {
        self.buf.extend_from_slice(data);
    }

    /// The next complete document, `Ok(None)` when more bytes are needed.
    pub(crate) fn next_doc(&mut self) -> std::result::Result<Option<Vec<u8>>, String> {
        if self.buf.len() < 4 {
            return Ok(None);
        }
        let len = i32::from_le_bytes([self.buf[0], self.buf[1], self.buf[2], self.buf[3]]);
        let len = usize::try_from(len).map_err(|_| format!("negative document length {len}"))?;
        if len < 5 {
            return Err(format!("invalid document length {len}"));
        }
        if len > self.max {
            return Err(format!(
                "a document of {len} bytes is over the server's maximum of {} bytes (maxBsonObjectSize, 16 MiB)",
                self.max
            ));
        }
        if self.buf.len() < len {
            return Ok(None);
        }
        Ok(Some(self.buf.split_to(len).to_vec()))
    }

    /// Whether bytes of an incomplete document remain.
    pub(crate) fn has_rest(&self) -> bool {
        self.buf.has_remaining()
    }
}

/// Largest insert batch built, in bytes (a document larger than this goes
/// in a batch of its own).
pub(crate) const BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Batch limits of the target server.
#[derive(Debug, Clone, Copy)]
#[allow(clippy::struct_field_names)]
struct Limits {
    max_doc: usize,
    max_bytes: usize,
    max_count: usize,
}

impl From<&Hello> for Limits {
    fn from(h: &Hello) -> Self {
        Limits {
            // mongod allows 16 KiB of slack over maxBsonObjectSize for
            // internal fields; documents themselves must fit the limit.
            max_doc: h.max_bson_size,
            // Room for the command envelope of an insert, and at most
            // BATCH_BYTES so that the batches queued and in flight stay
            // within the memory budget.
            max_bytes: h
                .max_message_size
                .saturating_sub(64 * 1024)
                .min(BATCH_BYTES),
            max_count: h.max_batch.max(1),
        }
    }
}

/// What loading a collection did.
#[derive(Debug, Default, Clone, Copy)]
struct Loaded1 {
    inserted: u64,
    duplicates: u64,
    bytes: u64,
}

impl MongoTarget {
    /// A target for `url` (`mongodb://user:pass@host:port/?options`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a URL that is not a MongoDB URL.
    pub fn new(url: &str) -> Result<Self> {
        if !(url.starts_with("mongodb://") || url.starts_with("mongodb+srv://")) {
            return Err(Error::Config(format!(
                "`{}` is not a MongoDB URL (mongodb:// or mongodb+srv://)",
                backup_core::redact::redact_url(url)
            )));
        }
        let jobs = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        Ok(MongoTarget {
            url: url.to_owned(),
            redacted: backup_core::redact::redact_url(url),
            jobs,
            created: Mutex::new(Vec::new()),
        })
    }

    /// Uses `jobs` collections at once (each with several insert workers).
    #[must_use]
    pub fn with_jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs.max(1);
        self
    }

    async fn conn(&self) -> Result<Conn> {
        Conn::new(&self.url, Side::Target).await
    }

    /// The namespace mapping of a restore: patterns, `--rename` rules and
    /// the URL's database.
    fn mapper(
        opts: &RestoreOptions,
        url_db: Option<&str>,
        snapshot_dbs: &[String],
    ) -> Result<impl Fn(&str, &str) -> Option<(String, String)> + Sync + use<>> {
        let filter = NsFilter::new(&opts.includes, &opts.excludes)?;
        let mut renames = Renames::parse(&opts.renames)?;
        if let Some(target_db) = url_db {
            let mut dbs: Vec<&String> = snapshot_dbs.iter().collect();
            dbs.dedup();
            match dbs.as_slice() {
                [] => {}
                [only] => {
                    if !renames.has_database_rule(only) {
                        renames = Renames::parse(
                            &opts
                                .renames
                                .iter()
                                .cloned()
                                .chain([format!("{only}:{target_db}")])
                                .collect::<Vec<_>>(),
                        )?;
                    }
                }
                _ => {
                    return Err(Error::Config(format!(
                        "the target URL names database `{target_db}` but the snapshot holds {} databases; restore to a URL without a database, or select one with --include and map it with --rename DB:{target_db}",
                        dbs.len()
                    )))
                }
            }
        }
        Ok(move |db: &str, coll: &str| {
            if super::INTERNAL_DATABASES.contains(&db) || coll.starts_with("system.") {
                return None;
            }
            if !coll.is_empty() && !filter.matches(db, coll) {
                return None;
            }
            Some(renames.map(db, coll))
        })
    }
}

/// The databases of the manifest that `filter` keeps.
fn selected_dbs(meta: &Metadata, opts: &RestoreOptions) -> Result<Vec<String>> {
    let filter = NsFilter::new(&opts.includes, &opts.excludes)?;
    let mut dbs: Vec<String> = meta
        .collections
        .iter()
        .filter(|c| filter.matches(&c.db, &c.name))
        .map(|c| c.db.clone())
        .collect();
    dbs.sort();
    dbs.dedup();
    Ok(dbs)
}

/// The databases of the manifest that the patterns select whole (every
/// collection and view).
fn whole_dbs(meta: &Metadata, opts: &RestoreOptions) -> Result<Vec<String>> {
    let filter = NsFilter::new(&opts.includes, &opts.excludes)?;
    let mut dbs: Vec<String> = meta.collections.iter().map(|c| c.db.clone()).collect();
    dbs.sort();
    dbs.dedup();
    dbs.retain(|db| {
        meta.collections
            .iter()
            .filter(|c| &c.db == db)
            .all(|c| filter.matches(&c.db, &c.name))
    });
    Ok(dbs)
}

/// The target database of the users and roles of `db` (`None`: they are
/// not restored). They go with their whole database (under its new name):
/// a restore of some collections of a database brings none. Those of
/// `admin` and `$external` come only with a whole-deployment restore (no
/// patterns, no database in the target URL).
fn security_db(
    db: &str,
    opts: &RestoreOptions,
    url_db: Option<&str>,
    whole: &[String],
    map: &NsMapSync<'_>,
) -> Option<String> {
    let patterns = !opts.includes.is_empty() || !opts.excludes.is_empty();
    if security::DEPLOYMENT_DBS.contains(&db) {
        return (!patterns && url_db.is_none()).then(|| db.to_owned());
    }
    if patterns && !whole.iter().any(|s| s == db) {
        return None;
    }
    map(db, "").map(|(d, _)| d)
}

/// An existing namespace in the target.
#[derive(Debug, Clone)]
struct Existing {
    kind: String,
    documents: u64,
}

async fn existing(conn: &Conn, plan: &[Planned]) -> Result<BTreeMap<(String, String), Existing>> {
    let mut dbs: Vec<&str> = plan.iter().map(|p| p.db.as_str()).collect();
    dbs.sort_unstable();
    dbs.dedup();
    let mut out = BTreeMap::new();
    for db in dbs {
        for entry in conn.list_collections(db).await? {
            let Ok(name) = entry.get_str("name") else {
                continue;
            };
            if !plan.iter().any(|p| p.db == db && p.coll == name) {
                continue;
            }
            let kind = entry.get_str("type").unwrap_or("collection").to_owned();
            let documents = if kind == "view" {
                0
            } else {
                conn.client
                    .database(db)
                    .collection::<Document>(name)
                    .estimated_document_count()
                    .await
                    .map_err(|e| conn.error(&format!("counting {db}.{name}"), &e))?
            };
            out.insert(
                (db.to_owned(), name.to_owned()),
                Existing { kind, documents },
            );
        }
    }
    Ok(out)
}

fn is_code(e: &mongodb::error::Error, codes: &[i32]) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => codes.contains(&c.code),
        _ => false,
    }
}

/// Writes one batch; returns duplicates ignored.
async fn insert_batch(
    conn: &Conn,
    coll: &Collection<RawDocumentBuf>,
    batch: Vec<RawDocumentBuf>,
    ordered: bool,
    ignore_duplicates: bool,
    ns: &str,
) -> Result<u64> {
    let r = coll
        .insert_many(batch)
        .ordered(ordered)
        .bypass_document_validation(true)
        .await;
    match r {
        Ok(_) => Ok(0),
        Err(e) => {
            if let ErrorKind::InsertMany(im) = e.kind.as_ref() {
                if im.write_concern_error.is_none() {
                    if let Some(errs) = &im.write_errors {
                        let dups = errs.iter().filter(|w| w.code == 11000).count() as u64;
                        if dups as usize == errs.len() {
                            if ignore_duplicates {
                                return Ok(dups);
                            }
                            return Err(Error::target_failed(format!(
                                "duplicate key inserting into {ns} ({dups} document(s)): {}; the target collection already holds documents with these keys: restore with --drop to replace it (a safety backup is taken first) or --rename to restore next to it",
                                errs[0].message
                            )));
                        }
                    }
                }
            }
            Err(conn.error(&format!("inserting into {ns}"), &e))
        }
    }
}

async fn load_collection(
    snapshot: SnapshotReader,
    conn: Conn,
    p: Planned,
    limits: Limits,
    workers: usize,
    ignore_duplicates: bool,
    progress: Arc<dyn Progress>,
) -> Result<Loaded1> {
    let Some(node) = p.documents.clone() else {
        return Ok(Loaded1::default());
    };
    let ns = p.target_ns();
    let coll = conn
        .client
        .database(&p.db)
        .collection::<RawDocumentBuf>(&p.coll);
    let capped = p.options().get_bool("capped").unwrap_or(false);
    // Capped collections keep insertion order: one ordered writer.
    let workers = if capped { 1 } else { workers.max(1) };
    // One batch waits while the workers send theirs: enough to keep them
    // busy, and memory stays at (workers + 2) batches per collection.
    let (tx, rx) = async_channel::bounded::<Vec<RawDocumentBuf>>(1);
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let rx = rx.clone();
        let conn = conn.clone();
        let coll = coll.clone();
        let ns = ns.clone();
        tasks.push(tokio::spawn(async move {
            let mut dups = 0u64;
            while let Ok(batch) = rx.recv().await {
                dups += insert_batch(&conn, &coll, batch, capped, ignore_duplicates, &ns).await?;
            }
            Ok::<u64, Error>(dups)
        }));
    }
    drop(rx);
    let read = async {
        let mut split = DocSplitter::new(limits.max_doc);
        let mut stream = snapshot.content(&node);
        let mut batch: Vec<RawDocumentBuf> = Vec::new();
        let mut batch_bytes = 0usize;
        let mut total = Loaded1::default();
        let mut index = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            progress.add_bytes(chunk.len() as u64);
            split.push(&chunk);
            loop {
                let doc = split.next_doc().map_err(|m| {
                    Error::target_failed(format!("{}: document {index}: {m}", p.meta.ns()))
                })?;
                let Some(doc) = doc else { break };
                index += 1;
                if !batch.is_empty()
                    && (batch_bytes + doc.len() > limits.max_bytes
                        || batch.len() >= limits.max_count)
                {
                    batch_bytes = 0;
                    if tx.send(std::mem::take(&mut batch)).await.is_err() {
                        return Ok(total);
                    }
                }
                batch_bytes += doc.len();
                total.bytes += doc.len() as u64;
                total.inserted += 1;
                batch.push(RawDocumentBuf::from_bytes(doc).map_err(|e| {
                    Error::corrupt(
                        FileKind::Pack,
                        p.meta.ns(),
                        format!("document {index}: {e}"),
                    )
                })?);
            }
        }
        if split.has_rest() {
            return Err(Error::corrupt(
                FileKind::Pack,
                p.meta.ns(),
                "the documents stream ends inside a document",
            ));
        }
        if !batch.is_empty() {
            let _ = tx.send(batch).await;
        }
        Ok(total)
    };
    let read_result = read.await;
    drop(tx);
    let mut dups = 0;
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok(Ok(d)) => dups += d,
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(Error::target_failed(format!(
                    "an insert worker of {ns} failed: {e}"
                )));
            }
        }
    }
    if let Some(e) = first_err {
        return Err(e);
    }
    let mut total = read_result?;
    total.duplicates = dups;
    total.inserted -= dups;
    progress.add_item();
    Ok(total)
}

/// Orders views so that a view comes after the views it reads from.
fn view_order(views: &[&Planned]) -> Vec<usize> {
    let mut done: Vec<bool> = vec![false; views.len()];
    let mut order = Vec::new();
    for _ in 0..views.len() {
        for (i, v) in views.iter().enumerate() {
            if done[i] {
                continue;
            }
            let source = v.options().get_str("viewOn").unwrap_or("").to_owned();
            let waits = views.iter().enumerate().any(|(j, w)| {
                !done[j] && j != i && w.meta.db == v.meta.db && w.meta.name == source
            });
            if !waits {
                done[i] = true;
                order.push(i);
            }
        }
    }
    // Cycles cannot exist on a server; keep any leftovers in order.
    order.extend((0..views.len()).filter(|i| !done[*i]));
    order
}

async fn apply(conn: &Conn, op: Op) -> Result<()> {
    let fail = |what: &str, e: &mongodb::error::Error| {
        conn.error(&format!("replaying the oplog: {what}"), e)
    };
    match op {
        Op::Upsert {
            db,
            coll,
            filter,
            doc,
        } => {
            conn.client
                .database(&db)
                .collection::<Document>(&coll)
                .replace_one(filter, doc)
                .upsert(true)
                .bypass_document_validation(true)
                .await
                .map_err(|e| fail(&format!("insert into {db}.{coll}"), &e))?;
        }
        Op::Update {
            db,
            coll,
            filter,
            updates,
        } => {
            let c = conn.client.database(&db).collection::<Document>(&coll);
            for u in updates {
                c.update_one(filter.clone(), u)
                    .bypass_document_validation(true)
                    .await
                    .map_err(|e| fail(&format!("update of {db}.{coll}"), &e))?;
            }
        }
        Op::Replace {
            db,
            coll,
            filter,
            doc,
        } => {
            conn.client
                .database(&db)
                .collection::<Document>(&coll)
                .replace_one(filter, doc)
                .bypass_document_validation(true)
                .await
                .map_err(|e| fail(&format!("replacement in {db}.{coll}"), &e))?;
        }
        Op::Delete { db, coll, filter } => {
            conn.client
                .database(&db)
                .collection::<Document>(&coll)
                .delete_one(filter)
                .await
                .map_err(|e| fail(&format!("delete from {db}.{coll}"), &e))?;
        }
        Op::Command { db, cmd } => {
            let name = cmd.keys().next().cloned().unwrap_or_default();
            match conn.client.database(&db).run_command(cmd).await {
                Ok(_) => {}
                // Already in the state the command leads to: the copied
                // documents and metadata are newer than the entry.
                Err(e) if is_code(&e, &[26, 27, 48, 85, 86]) => {}
                Err(e) => return Err(fail(&format!("{name} on {db}"), &e)),
            }
        }
    }
    Ok(())
}

#[async_trait]
impl Target for MongoTarget {
    fn describe(&self) -> String {
        self.redacted.clone()
    }

    fn check_options(&self, opts: &RestoreOptions) -> Result<()> {
        if opts.at.is_some() {
            return Err(Error::Config(
                "--at is not supported for MongoDB: a snapshot restores to its own end time (the captured oplog's end)".to_owned(),
            ));
        }
        Renames::parse(&opts.renames)?;
        NsFilter::new(&opts.includes, &opts.excludes)?;
        Ok(())
    }

    async fn replaces_data(&self, opts: &RestoreOptions) -> Result<bool> {
        // Whether any namespace of the target holds data is only known
        // against a snapshot; a --drop restore of a reachable server is
        // assumed to replace data (the safety backup of an empty target is
        // cheap).
        if !opts.drop || opts.dry_run {
            return Ok(false);
        }
        let conn = self.conn().await?;
        conn.hello().await?;
        Ok(true)
    }

    async fn check_restored(&self, snapshot: &SnapshotReader) -> Result<Vec<String>> {
        let conn = self.conn().await?;
        let meta = snapshot_metadata(snapshot)?;
        let map = Self::mapper(
            &RestoreOptions::default(),
            conn.database.as_deref(),
            &selected_dbs(&meta, &RestoreOptions::default())?,
        )?;
        let loaded = load(snapshot, &map).await?;
        let replayed = meta.oplog.as_ref().is_some_and(|o| o.entries > 0);
        let mut diffs = Vec::new();
        for p in loaded.collections.iter().filter(|p| !p.meta.is_view()) {
            let n = conn
                .client
                .database(&p.db)
                .collection::<Document>(&p.coll)
                .count_documents(doc! {})
                .await
                .map_err(|e| conn.error(&format!("counting {}", p.target_ns()), &e))?;
            if n != p.meta.documents && !replayed {
                diffs.push(format!(
                    "{}: {n} documents restored, {} in the snapshot",
                    p.target_ns(),
                    p.meta.documents
                ));
            }
        }
        Ok(diffs)
    }

    async fn discard(&self) -> Result<()> {
        let conn = self.conn().await?;
        let created =
            std::mem::take(&mut *self.created.lock().unwrap_or_else(PoisonError::into_inner));
        for (db, coll) in created {
            match conn
                .client
                .database(&db)
                .collection::<Document>(&coll)
                .drop()
                .await
            {
                Ok(()) => {}
                Err(e) if is_code(&e, &[26]) => {}
                Err(e) => return Err(conn.error(&format!("dropping {db}.{coll}"), &e)),
            }
        }
        Ok(())
    }

    async fn restore(
        &self,
        snapshot: &SnapshotReader,
        opts: &RestoreOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<RestoreReport> {
        self.check_options(opts)?;
        let meta = snapshot_metadata(snapshot)?;
        let conn = self.conn().await?;
        let selected = selected_dbs(&meta, opts)?;
        let map = Self::mapper(opts, conn.database.as_deref(), &selected)?;
        let loaded = load(snapshot, &map).await?;
        let hello = conn.hello().await?;
        let url_db = conn.database.clone();
        let whole = whole_dbs(&meta, opts)?;
        let sec_plan = security::Planned::new(&loaded.users, &loaded.roles, &|db: &str| {
            security_db(db, opts, url_db.as_deref(), &whole, &map)
        });
        let sec_existing = if sec_plan.is_empty() {
            std::collections::HashSet::new()
        } else {
            security::existing(&conn, &sec_plan).await?
        };
        let limits = Limits::from(&hello);
        let plan = &loaded.collections;

        // Two snapshot namespaces must not land on one target namespace.
        let mut seen: HashMap<String, String> = HashMap::new();
        for p in plan {
            if let Some(other) = seen.insert(p.target_ns(), p.meta.ns()) {
                return Err(Error::Config(format!(
                    "{} and {} would both be restored to {}; change the --rename rules",
                    other,
                    p.meta.ns(),
                    p.target_ns()
                )));
            }
        }

        let existing = existing(&conn, plan).await?;
        let conflicts: Vec<String> = plan
            .iter()
            .filter_map(|p| {
                let e = existing.get(&(p.db.clone(), p.coll.clone()))?;
                (e.documents > 0 || e.kind == "view" || p.meta.is_view())
                    .then(|| format!("{} ({}, {} documents)", p.target_ns(), e.kind, e.documents))
            })
            .collect();
        if !conflicts.is_empty() && !opts.drop {
            return Err(Error::target_failed(format!(
                "the target already holds {} of the namespaces to restore: {}; restore with --drop to replace them (a safety backup is taken first), --rename to restore next to them, or --exclude to leave them out (nothing was changed)",
                conflicts.len(),
                conflicts.join(", ")
            )));
        }

        let oplog_entries = loaded.meta.oplog.as_ref().map_or(0, |o| o.entries);
        let docs: u64 = plan.iter().map(|p| p.meta.documents).sum();
        let data_bytes: u64 = plan
            .iter()
            .filter_map(|p| p.documents.as_ref())
            .map(|n| n.size)
            .sum();
        let collections: Vec<CollectionPlan> = plan
            .iter()
            .map(|p| CollectionPlan {
                from: p.meta.ns(),
                to: p.target_ns(),
                kind: p.meta.kind.clone(),
                documents: p.meta.documents,
                bytes: p.meta.bytes,
                indexes: p.meta.indexes,
                replaces: existing
                    .get(&(p.db.clone(), p.coll.clone()))
                    .map(|e| format!("{} with {} documents", e.kind, e.documents)),
            })
            .collect();
        let mut summary = Vec::new();
        let verb = if opts.dry_run { "would " } else { "" };
        for p in plan {
            let rename = if p.meta.ns() == p.target_ns() {
                String::new()
            } else {
                format!(" as {}", p.target_ns())
            };
            let replace = if existing.contains_key(&(p.db.clone(), p.coll.clone())) {
                " (replacing the existing one)"
            } else {
                ""
            };
            if p.meta.is_view() {
                summary.push(format!(
                    "{verb}create view {}{rename}{replace}",
                    p.meta.ns()
                ));
            } else {
                summary.push(format!(
                    "{verb}restore {} {}{rename}: {} documents, {} indexes{replace}",
                    p.meta.kind,
                    p.meta.ns(),
                    p.meta.documents,
                    p.meta.indexes
                ));
            }
        }
        for (kind, docs, key) in [
            ("role", &sec_plan.roles, "role"),
            ("user", &sec_plan.users, "user"),
        ] {
            for d in docs {
                let label = format!(
                    "{kind} {}@{}",
                    d.get_str(key).unwrap_or("?"),
                    d.get_str("db").unwrap_or("?")
                );
                if sec_existing.contains(&label) {
                    summary.push(format!("leave {label} as it is (already on the target)"));
                } else {
                    summary.push(format!("{verb}create {label}"));
                }
            }
        }
        if loaded.meta.consistent {
            summary.push(format!(
                "{verb}replay {oplog_entries} oplog entries (to the backup's end time)"
            ));
        } else {
            summary.push(format!(
                "the snapshot was taken from a {} server without oplog capture: it is not a point in time",
                loaded.meta.topology
            ));
        }
        let stats = RestoreStats {
            files: plan.iter().filter(|p| p.documents.is_some()).count() as u64,
            dirs: 0,
            symlinks: 0,
            bytes: data_bytes,
        };
        let mut report = MongoRestoreReport {
            server_version: loaded.meta.server_version.clone(),
            collections,
            documents: docs,
            data_bytes,
            oplog_entries,
            consistent: loaded.meta.consistent,
            summary,
            outcome: None,
        };
        if opts.dry_run {
            return Ok(RestoreReport {
                dry_run: true,
                target: self.describe(),
                stats,
                unit: RestoredUnit::Files,
                lines: report.summary.clone(),
                details: RestoreReport::details_of(&report)?,
            });
        }
        progress.set_total(data_bytes);

        // Replace what is there (the CLI took a safety backup).
        for p in plan {
            let key = (p.db.clone(), p.coll.clone());
            if existing.contains_key(&key) && opts.drop {
                conn.client
                    .database(&p.db)
                    .collection::<Document>(&p.coll)
                    .drop()
                    .await
                    .map_err(|e| conn.error(&format!("dropping {}", p.target_ns()), &e))?;
            }
        }
        let reuse =
            |p: &Planned| !opts.drop && existing.contains_key(&(p.db.clone(), p.coll.clone()));

        // Collections with their options, before the data.
        progress.set_phase("collections");
        for p in plan.iter().filter(|p| !p.meta.is_view() && !reuse(p)) {
            let mut cmd = doc! {"create": p.coll.clone()};
            for (k, v) in p.options() {
                cmd.insert(k, v);
            }
            conn.client
                .database(&p.db)
                .run_command(cmd)
                .await
                .map_err(|e| {
                    Error::target_failed(format!(
                        "creating collection {} with its options {} failed: {}; the target server may not support one of these options (collections created so far are left in place)",
                        p.target_ns(),
                        p.options(),
                        conn.error("creating a collection", &e)
                    ))
                })?;
            self.created
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((p.db.clone(), p.coll.clone()));
        }

        // Documents: several collections at once, several writers each.
        progress.set_phase("documents");
        let ignore_duplicates = oplog_entries > 0;
        let jobs = opts.jobs.unwrap_or(self.jobs).max(1);
        let workers = opts.jobs.unwrap_or_else(|| self.jobs.max(2)).max(1);
        let mut loads = Vec::new();
        for (i, p) in plan.iter().enumerate() {
            if p.documents.is_none() {
                continue;
            }
            let fut = load_collection(
                snapshot.clone(),
                conn.clone(),
                p.clone(),
                limits,
                workers,
                ignore_duplicates,
                progress.clone(),
            );
            loads.push(async move { (i, fut.await) });
        }
        let results: Vec<(usize, Result<Loaded1>)> = futures::stream::iter(loads)
            .buffer_unordered(jobs)
            .collect()
            .await;
        let mut loaded_counts: HashMap<usize, Loaded1> = HashMap::new();
        for (i, r) in results {
            loaded_counts.insert(i, r?);
        }

        // Counts against the manifest: the documents each collection's
        // stream held, every one acknowledged by the server (an insert
        // that fails fails the restore) or, with an oplog to replay, found
        // already there. No count_documents: it would read every
        // collection again.
        let mut problems = Vec::new();
        for (i, p) in plan.iter().enumerate() {
            let Some(l) = loaded_counts.get(&i) else {
                continue;
            };
            if l.inserted + l.duplicates != p.meta.documents {
                problems.push(format!(
                    "{}: {} documents inserted and {} already there, {} in the snapshot",
                    p.target_ns(),
                    l.inserted,
                    l.duplicates,
                    p.meta.documents
                ));
            }
        }

        // Indexes after the data; one that cannot be built is reported.
        progress.set_phase("indexes");
        let mut index_failures = Vec::new();
        let mut built = 0usize;
        for p in plan.iter().filter(|p| !p.meta.is_view()) {
            for spec in p.indexes() {
                if spec.get_str("name").ok() == Some("_id_")
                    || spec.get_bool("clustered").unwrap_or(false)
                {
                    continue;
                }
                let spec = clean_index_spec(&spec);
                let name = spec.get_str("name").unwrap_or("?").to_owned();
                let r = conn
                    .client
                    .database(&p.db)
                    .run_command(doc! {"createIndexes": p.coll.clone(), "indexes": [Bson::Document(spec.clone())]})
                    .await;
                match r {
                    Ok(_) => built += 1,
                    Err(e) => index_failures.push(format!(
                        "index {name} {} on {}: {}",
                        spec.get_document("key")
                            .map(ToString::to_string)
                            .unwrap_or_default(),
                        p.target_ns(),
                        conn.error("building an index", &e)
                    )),
                }
            }
        }

        // Views after their sources.
        progress.set_phase("views");
        let views: Vec<&Planned> = plan.iter().filter(|p| p.meta.is_view()).collect();
        for i in view_order(&views) {
            let v = views[i];
            let mut cmd = doc! {"create": v.coll.clone()};
            for (k, val) in v.options() {
                if k == "viewOn" {
                    let src = val.as_str().unwrap_or_default();
                    let mapped = map(&v.meta.db, src).map_or_else(|| src.to_owned(), |(_, c)| c);
                    cmd.insert("viewOn", mapped);
                } else {
                    cmd.insert(k, val);
                }
            }
            conn.client
                .database(&v.db)
                .run_command(cmd)
                .await
                .map_err(|e| conn.error(&format!("creating view {}", v.target_ns()), &e))?;
            self.created
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .push((v.db.clone(), v.coll.clone()));
        }

        // Users and roles of the restored databases.
        let sec = if sec_plan.is_empty() {
            security::Outcome::default()
        } else {
            progress.set_phase("users");
            security::restore(&conn, &sec_plan, &sec_existing).await?
        };

        // The captured oplog, to the backup's end time.
        progress.set_phase("oplog");
        let mut replayed = 0u64;
        if let Some(node) = &loaded.oplog {
            let scope = loaded.meta.scope.clone();
            let oplog_map = |db: &str, coll: &str| -> Option<(String, String)> {
                if coll.is_empty() {
                    return map(db, coll);
                }
                if !scope.covers(db, coll).unwrap_or(false) {
                    return None;
                }
                map(db, coll)
            };
            let mut split = DocSplitter::new(usize::MAX);
            let mut stream = snapshot.content(node);
            while let Some(chunk) = stream.next().await {
                split.push(&chunk?);
                while let Some(raw) = split
                    .next_doc()
                    .map_err(|m| Error::corrupt(FileKind::Pack, "oplog.bson", m))?
                {
                    let entry = RawDocumentBuf::from_bytes(raw)
                        .and_then(|r| r.to_document())
                        .map_err(|e| Error::corrupt(FileKind::Pack, "oplog.bson", e.to_string()))?;
                    for op in plan_entry(&entry, &oplog_map)? {
                        apply(&conn, op).await?;
                        replayed += 1;
                    }
                }
            }
        }

        let inserted: u64 = loaded_counts.values().map(|l| l.inserted).sum();
        report.summary.push(format!(
            "{inserted} documents inserted, {built} indexes built, {} views, {replayed} oplog operations replayed",
            views.len()
        ));
        if !sec_plan.is_empty() {
            report.summary.push(format!(
                "{} roles and {} users created, {} already on the target left as they are",
                sec.roles_created.len(),
                sec.users_created.len(),
                sec.kept.len()
            ));
        }
        let failed = !index_failures.is_empty() || !problems.is_empty() || !sec.failures.is_empty();
        if failed {
            let mut msg =
                String::from("the restore finished with problems (everything else was restored):");
            for f in index_failures.iter().chain(&problems).chain(&sec.failures) {
                msg.push_str("\n  ");
                msg.push_str(f);
            }
            return Err(Error::target_failed(msg));
        }
        report.outcome = Some(MongoOutcome {
            roles_created: sec.roles_created,
            users_created: sec.users_created,
            users_and_roles_kept: sec.kept,
            users_and_roles_failed: sec.failures,
            indexes_built: built,
            oplog_operations: replayed,
            index_failures,
            count_mismatches: problems,
        });
        Ok(RestoreReport {
            dry_run: false,
            target: self.describe(),
            stats,
            unit: RestoredUnit::Files,
            lines: report.summary.clone(),
            details: RestoreReport::details_of(&report)?,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_documents() {
        let a = RawDocumentBuf::from_document(&doc! {"_id": 1, "x": "a"}).unwrap();
        let b = RawDocumentBuf::from_document(&doc! {"_id": 2}).unwrap();
        let mut all = a.as_bytes().to_vec();
        all.extend_from_slice(b.as_bytes());
        let mut s = DocSplitter::new(16 * 1024 * 1024);
        s.push(&all[..7]);
        assert_eq!(s.next_doc().unwrap(), None);
        s.push(&all[7..]);
        assert_eq!(s.next_doc().unwrap().unwrap(), a.as_bytes());
        assert_eq!(s.next_doc().unwrap().unwrap(), b.as_bytes());
        assert_eq!(s.next_doc().unwrap(), None);
        assert!(!s.has_rest());
        let mut s = DocSplitter::new(10);
        s.push(a.as_bytes());
        assert!(s.next_doc().unwrap_err().contains("maxBsonObjectSize"));
    }
}
