//! Replaying oplog entries with ordinary commands: the snapshot's own
//! oplog window, then (a restore to a point in time) the captured pieces
//! up to the target.
//!
//! Entries are turned into steps by [`plan_entry`]; data steps are
//! gathered per target namespace into ordered `update`/`delete` batches,
//! and the batches of different namespaces are sent in parallel (one
//! sequence per namespace, so its order is kept). Every command is a
//! barrier: the batches sent before it finish first, then it runs alone.
//! Index builds are deferred to the end. Transactions written as
//! `applyOps` chains (`partialTxn`, `prepare` then `commitTransaction`)
//! are buffered until their commit and dropped on abort or when the
//! target comes first.
//!
//! Why this equals replaying one entry after another: a data step only
//! reads and writes documents of its own namespace, so steps of different
//! namespaces commute, and within a namespace the order is the oplog's.
//! Commands (which create, drop, rename or change namespaces) run with
//! nothing else in flight, at their place in the order. A deferred index
//! build is only moved after data steps that the original server applied
//! while the index was absent or being built; the oplog holds only writes
//! that satisfied every index, so they cannot violate it, and the index
//! built at the end over the same documents is the same index.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use backup_core::capture::CaptureReplay;
use backup_core::reader::SnapshotReader;
use backup_core::{Error, FileKind, Result};
use futures::StreamExt;
use mongodb::bson::{doc, Bson, Document, RawDocument, RawDocumentBuf};
use mongodb::error::ErrorKind;
use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinHandle;

use super::super::conn::Conn;
use super::super::oplog::{bad, int, plan_entry, Op};
use super::super::Ts;
use super::split::DocSplitter;
use super::state::Restore;

pub(super) fn is_code(e: &mongodb::error::Error, codes: &[i32]) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => codes.contains(&c.code),
        _ => false,
    }
}

/// Statements per batch.
const BATCH_STATEMENTS: usize = 1000;
/// Bytes of statements per batch (a statement over it goes alone).
const BATCH_BYTES: usize = 2 << 20;

/// What a replay did (or, counting only, would do) per target namespace.
#[derive(Debug, Clone, Default, Serialize, PartialEq, Eq)]
pub(crate) struct NsCounts {
    pub(crate) inserts: u64,
    pub(crate) updates: u64,
    pub(crate) deletes: u64,
    pub(crate) commands: u64,
}

/// What a replay did.
#[derive(Debug, Clone, Default, Serialize)]
pub(crate) struct ReplayReport {
    /// Oplog entries read (in the selected range).
    pub(crate) entries: u64,
    /// Operations applied (or counted).
    pub(crate) operations: u64,
    /// Per target namespace (`db.coll`, or `db` for database commands).
    pub(crate) namespaces: BTreeMap<String, NsCounts>,
    /// Index builds deferred to the end and run there.
    pub(crate) indexes_built: u64,
    /// Transactions not committed by the target, left out.
    pub(crate) transactions_left_out: u64,
    /// Captured pieces read.
    pub(crate) pieces: u64,
    /// The last entry applied.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) last_ts: Option<String>,
    /// Target namespaces that the replay creates (`create`, rename
    /// targets).
    #[serde(skip)]
    pub(crate) creates: Vec<(String, String)>,
}

/// A namespace mapping that can be shared with the batch tasks.
pub(crate) type SharedMap<'a> = &'a (dyn Fn(&str, &str) -> Option<(String, String)> + Sync);

/// The kind of a statement.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    /// A document inserted by an entry after the snapshot's consistent
    /// point (see [`Replayer::after_snapshot`]).
    Insert,
    Update,
    Delete,
}

/// An ordered run of statements of one kind.
type Group = (Kind, Vec<Document>);

/// Statements of one namespace not sent yet.
#[derive(Default)]
struct Pending {
    groups: Vec<Group>,
    statements: usize,
    bytes: usize,
}

/// A namespace's sequence of batches.
struct Lane {
    tx: mpsc::Sender<Vec<Group>>,
    task: JoinHandle<Result<()>>,
}

/// An index build deferred to the end.
struct Deferred {
    db: String,
    coll: String,
    /// `createIndexes` specs, or a `collMod` that changes one of them.
    indexes: Vec<Document>,
    coll_mod: Option<Document>,
}

/// The key of a transaction: its session id and transaction number.
type TxnKey = (Vec<u8>, i64);

/// Replays oplog entries in order into a target (or only counts them).
pub(crate) struct Replayer<'a> {
    conn: Option<&'a Conn>,
    map: SharedMap<'a>,
    jobs: Arc<Semaphore>,
    pending: HashMap<(String, String), Pending>,
    lanes: HashMap<(String, String), Lane>,
    deferred: Vec<Deferred>,
    /// `partialTxn` chains and prepared transactions waiting for their
    /// commit.
    txns: HashMap<TxnKey, Vec<Document>>,
    /// Inserts are sent as inserts rather than upserts: set once the
    /// entries are past the snapshot's consistent point.
    inserts_are_new: bool,
    report: ReplayReport,
    /// Takes every operation instead of planning and applying it (see
    /// [`Replayer::tapped`]).
    tap: Option<Tap<'a>>,
}

/// What [`Replayer::tapped`] hands each operation to.
pub(crate) type Tap<'a> = &'a mut (dyn FnMut(&Document) -> Result<()> + Send);

fn statement_size(d: &Document) -> usize {
    // Close enough for batching: the encoded size of the statement.
    d.iter().map(|(k, v)| k.len() + bson_size(v)).sum::<usize>() + 5
}

fn bson_size(v: &Bson) -> usize {
    match v {
        Bson::Document(d) => statement_size(d),
        Bson::Array(a) => a.iter().map(|x| bson_size(x) + 4).sum::<usize>() + 5,
        Bson::String(s) => s.len() + 5,
        Bson::Binary(b) => b.bytes.len() + 5,
        _ => 16,
    }
}

impl<'a> Replayer<'a> {
    /// A replayer writing through `conn` (`None`: count only), with
    /// `jobs` namespaces' batches at once.
    pub(crate) fn new(conn: Option<&'a Conn>, map: SharedMap<'a>, jobs: usize) -> Self {
        Replayer {
            conn,
            map,
            jobs: Arc::new(Semaphore::new(jobs.max(1))),
            pending: HashMap::new(),
            lanes: HashMap::new(),
            deferred: Vec::new(),
            txns: HashMap::new(),
            inserts_are_new: false,
            report: ReplayReport::default(),
            tap: None,
        }
    }

    /// A replayer that writes nothing and hands every operation to `tap`
    /// in order, as one oplog entry: transactions unwrapped at their
    /// commit (their operations one by one, those of aborted or
    /// unfinished ones never), no-op entries left out. An error `tap`
    /// returns ends the replay.
    pub(crate) fn tapped(map: SharedMap<'a>, tap: Tap<'a>) -> Self {
        Replayer {
            tap: Some(tap),
            ..Replayer::new(None, map, 1)
        }
    }

    fn counts(&mut self, db: &str, coll: &str) -> &mut NsCounts {
        let ns = if coll.is_empty() {
            db.to_owned()
        } else {
            format!("{db}.{coll}")
        };
        self.report.namespaces.entry(ns).or_default()
    }

    /// Marks the end of the snapshot's own oplog window: the entries fed
    /// from now on come after its consistent point, where the target holds
    /// exactly the source's state before each entry. An insert then finds
    /// no document with its `_id` (the source had none, and every earlier
    /// entry of the namespace was applied in order), so it is sent as a
    /// plain insert, several times faster than the upsert that entries of
    /// the window need (their documents may have been copied already). A
    /// batch that still meets a duplicate `_id` (a target that was not
    /// fresh) replays the rest of that batch as upserts.
    pub(crate) fn after_snapshot(&mut self) {
        self.inserts_are_new = true;
    }

    /// Replays one entry (raw BSON).
    ///
    /// # Errors
    ///
    /// An entry that cannot be replayed (an unknown command: its name is
    /// in the message), a write the target refuses.
    pub(crate) async fn entry(&mut self, raw: &[u8]) -> Result<()> {
        let entry = RawDocumentBuf::from_bytes(raw.to_vec())
            .and_then(|r| r.to_document())
            .map_err(|e| Error::corrupt(FileKind::Pack, "oplog entry", e.to_string()))?;
        self.report.entries += 1;
        if let Ok(ts) = entry.get_timestamp("ts") {
            self.report.last_ts = Some(Ts::from(ts).to_string());
        }
        let op = entry.get_str("op").unwrap_or("");
        if op == "n" {
            return Ok(());
        }
        if op == "c" {
            if let Ok(o) = entry.get_document("o") {
                let first = o.keys().next().map(String::as_str);
                match first {
                    Some("applyOps") => return self.apply_ops(&entry, o).await,
                    Some(end @ ("commitTransaction" | "abortTransaction")) => {
                        let ops = txn_key(&entry).and_then(|k| self.txns.remove(&k));
                        if end == "commitTransaction" {
                            for inner in ops.unwrap_or_default() {
                                self.planned(&inner).await?;
                            }
                        }
                        return Ok(());
                    }
                    _ => {}
                }
            }
        }
        self.planned(&entry).await
    }

    /// A transaction's `applyOps` entry: buffered while it is a partial or
    /// prepared one, applied with what was buffered when it commits.
    async fn apply_ops(&mut self, entry: &Document, o: &Document) -> Result<()> {
        let ops: Vec<Document> = o
            .get_array("applyOps")
            .map_err(|_| bad(entry, "applyOps is not an array"))?
            .iter()
            .map(|d| {
                d.as_document()
                    .cloned()
                    .ok_or_else(|| bad(entry, "an applyOps operation is not a document"))
            })
            .collect::<Result<_>>()?;
        let key = txn_key(entry);
        let partial = o.get_bool("partialTxn").unwrap_or(false);
        let prepare = o.get_bool("prepare").unwrap_or(false);
        if partial || prepare {
            let Some(key) = key else {
                return Err(bad(
                    entry,
                    "a partial or prepared transaction without lsid and txnNumber",
                ));
            };
            self.txns.entry(key).or_default().extend(ops);
            return Ok(());
        }
        let mut all = key.and_then(|k| self.txns.remove(&k)).unwrap_or_default();
        all.extend(ops);
        for inner in all {
            self.planned(&inner).await?;
        }
        Ok(())
    }

    /// Applies (or counts) the steps of one entry.
    async fn planned(&mut self, entry: &Document) -> Result<()> {
        if let Some(tap) = self.tap.as_mut() {
            self.report.operations += 1;
            return tap(entry);
        }
        let map = self.map;
        for step in plan_entry(entry, &map)? {
            self.report.operations += 1;
            self.step(step).await?;
        }
        Ok(())
    }

    async fn step(&mut self, step: Op) -> Result<()> {
        let (db, coll, kind, stmts) = match step {
            Op::Upsert {
                db,
                coll,
                filter,
                doc,
            } => {
                self.counts(&db, &coll).inserts += 1;
                if self.inserts_are_new {
                    (db, coll, Kind::Insert, vec![doc])
                } else {
                    let upsert = doc! {"q": filter, "u": doc, "upsert": true};
                    (db, coll, Kind::Update, vec![upsert])
                }
            }
            Op::Replace {
                db,
                coll,
                filter,
                doc,
            } => {
                self.counts(&db, &coll).updates += 1;
                (db, coll, Kind::Update, vec![doc! {"q": filter, "u": doc}])
            }
            Op::Update {
                db,
                coll,
                filter,
                updates,
            } => {
                self.counts(&db, &coll).updates += 1;
                let stmts = updates
                    .into_iter()
                    .map(|u| doc! {"q": filter.clone(), "u": u})
                    .collect();
                (db, coll, Kind::Update, stmts)
            }
            Op::Delete { db, coll, filter } => {
                self.counts(&db, &coll).deletes += 1;
                (db, coll, Kind::Delete, vec![doc! {"q": filter, "limit": 1}])
            }
            Op::Command { db, cmd } => return self.command(db, cmd).await,
        };
        let key = (db, coll);
        for stmt in stmts {
            self.push(&key, kind, stmt).await?;
        }
        Ok(())
    }

    /// Adds a statement to its namespace's pending batch, sending the batch
    /// when it is full.
    async fn push(&mut self, key: &(String, String), kind: Kind, stmt: Document) -> Result<()> {
        if self.conn.is_none() {
            return Ok(());
        }
        let p = self.pending.entry(key.clone()).or_default();
        p.statements += 1;
        p.bytes += statement_size(&stmt);
        match p.groups.last_mut() {
            Some((k, v)) if *k == kind => v.push(stmt),
            _ => p.groups.push((kind, vec![stmt])),
        }
        if p.statements >= BATCH_STATEMENTS || p.bytes >= BATCH_BYTES {
            self.send(key).await?;
        }
        Ok(())
    }

    /// Sends a namespace's pending statements to its lane.
    async fn send(&mut self, key: &(String, String)) -> Result<()> {
        let Some(p) = self.pending.remove(key) else {
            return Ok(());
        };
        let Some(conn) = self.conn else {
            return Ok(());
        };
        let lane = self.lanes.entry(key.clone()).or_insert_with(|| {
            let (tx, mut rx) = mpsc::channel::<Vec<Group>>(1);
            let conn = conn.clone();
            let jobs = self.jobs.clone();
            let (db, coll) = key.clone();
            let task = tokio::spawn(async move {
                while let Some(groups) = rx.recv().await {
                    let _permit = jobs.acquire().await.map_err(|_| Error::Cancelled)?;
                    execute(&conn, &db, &coll, groups).await?;
                }
                Ok(())
            });
            Lane { tx, task }
        });
        if lane.tx.send(p.groups).await.is_err() {
            // The lane stopped: it failed, and says why.
            if let Some(lane) = self.lanes.remove(key) {
                drop(lane.tx);
                join(lane.task).await?;
            }
            return Err(Error::target_failed("a replay lane stopped"));
        }
        Ok(())
    }

    /// Sends everything pending and waits until every lane is done.
    async fn barrier(&mut self) -> Result<()> {
        let keys: Vec<(String, String)> = self.pending.keys().cloned().collect();
        let mut first = None;
        for k in keys {
            if let Err(e) = self.send(&k).await {
                first.get_or_insert(e);
            }
        }
        for (_, lane) in self.lanes.drain() {
            drop(lane.tx);
            if let Err(e) = join(lane.task).await {
                first.get_or_insert(e);
            }
        }
        first.map_or(Ok(()), Err)
    }

    async fn command(&mut self, db: String, cmd: Document) -> Result<()> {
        let name = cmd.keys().next().cloned().unwrap_or_default();
        let coll = cmd.get_str(&name).unwrap_or("").to_owned();
        if name != "renameCollection" {
            // (`dropDatabase` names no collection: counted for `db`.)
            self.counts(&db, &coll).commands += 1;
        }
        match name.as_str() {
            "renameCollection" => {
                let split = |s: &str| {
                    s.split_once('.')
                        .map(|(a, b)| (a.to_owned(), b.to_owned()))
                        .unwrap_or_default()
                };
                let (fdb, fcoll) = split(&coll);
                let (tdb, tcoll) = split(cmd.get_str("to").unwrap_or(""));
                self.counts(&fdb, &fcoll).commands += 1;
                self.report.creates.push((tdb.clone(), tcoll.clone()));
                if cmd.get_bool("dropTarget").unwrap_or(false) {
                    self.deferred.retain(|d| !(d.db == tdb && d.coll == tcoll));
                }
                for d in &mut self.deferred {
                    if d.db == fdb && d.coll == fcoll {
                        d.db.clone_from(&tdb);
                        d.coll.clone_from(&tcoll);
                    }
                }
            }
            "createIndexes" => {
                let indexes = cmd
                    .get_array("indexes")
                    .map(|a| a.iter().filter_map(|s| s.as_document().cloned()).collect())
                    .unwrap_or_default();
                self.deferred.push(Deferred {
                    db,
                    coll,
                    indexes,
                    coll_mod: None,
                });
                return Ok(());
            }
            "dropIndexes" => {
                let which = cmd.get("index").cloned().unwrap_or(Bson::Null);
                let mut dropped_deferred = false;
                for d in self
                    .deferred
                    .iter_mut()
                    .filter(|d| d.db == db && d.coll == coll)
                {
                    let before = d.indexes.len();
                    d.indexes.retain(|spec| !index_matches(spec, &which));
                    dropped_deferred |= d.indexes.len() != before;
                }
                self.deferred
                    .retain(|d| !(d.indexes.is_empty() && d.coll_mod.is_none()));
                if dropped_deferred && !matches!(&which, Bson::String(s) if s == "*") {
                    return Ok(());
                }
            }
            "collMod" => {
                let index_pending = cmd.contains_key("index")
                    && self.deferred.iter().any(|d| d.db == db && d.coll == coll);
                if index_pending {
                    self.deferred.push(Deferred {
                        db,
                        coll,
                        indexes: Vec::new(),
                        coll_mod: Some(cmd),
                    });
                    return Ok(());
                }
            }
            "drop" => self.deferred.retain(|d| !(d.db == db && d.coll == coll)),
            "dropDatabase" => self.deferred.retain(|d| d.db != db),
            "create" => self.report.creates.push((db.clone(), coll.clone())),
            _ => {}
        }
        let Some(conn) = self.conn else {
            return Ok(());
        };
        self.barrier().await?;
        run_command(conn, &db, cmd).await
    }

    /// Waits for every batch, builds the deferred indexes, and returns
    /// what the replay did.
    ///
    /// # Errors
    ///
    /// A batch the target refused; an index build that failed.
    pub(crate) async fn finish(mut self) -> Result<ReplayReport> {
        self.report.transactions_left_out = self.txns.len() as u64;
        let Some(conn) = self.conn else {
            return Ok(self.report);
        };
        self.barrier().await?;
        for d in std::mem::take(&mut self.deferred) {
            let cmd = if let Some(m) = d.coll_mod {
                m
            } else {
                self.report.indexes_built += d.indexes.len() as u64;
                doc! {"createIndexes": &d.coll, "indexes": d.indexes}
            };
            run_command(conn, &d.db, cmd).await?;
        }
        Ok(self.report)
    }
}

/// Whether a `dropIndexes` argument names `spec`.
fn index_matches(spec: &Document, which: &Bson) -> bool {
    match which {
        Bson::String(s) => s == "*" || spec.get_str("name").is_ok_and(|n| n == s),
        Bson::Document(key) => spec.get_document("key").is_ok_and(|k| k == key),
        Bson::Array(names) => names.iter().any(|n| {
            n.as_str()
                .is_some_and(|n| spec.get_str("name").is_ok_and(|s| s == n))
        }),
        _ => false,
    }
}

fn txn_key(entry: &Document) -> Option<TxnKey> {
    let lsid = entry.get_document("lsid").ok()?;
    let id = match lsid.get("id")? {
        Bson::Binary(b) => b.bytes.clone(),
        other => other.to_string().into_bytes(),
    };
    Some((id, int(entry.get("txnNumber"))?))
}

async fn join(task: JoinHandle<Result<()>>) -> Result<()> {
    task.await.map_err(|e| Error::Generic {
        backend: "oplog replay",
        source: Box::new(e),
    })?
}

/// Sends the statements of one namespace, in order.
async fn execute(conn: &Conn, db: &str, coll: &str, groups: Vec<Group>) -> Result<()> {
    for (kind, stmts) in groups {
        if kind != Kind::Insert {
            write(conn, db, coll, kind, stmts).await?;
            continue;
        }
        let Some(at) = write(conn, db, coll, kind, stmts.clone()).await? else {
            continue;
        };
        // The documents before `at` went in; the rest go as upserts (the
        // target already held that `_id`).
        let upserts = stmts
            .into_iter()
            .skip(at)
            .map(|d| {
                let id = d.get("_id").cloned().unwrap_or(Bson::Null);
                doc! {"q": {"_id": id}, "u": d, "upsert": true}
            })
            .collect();
        write(conn, db, coll, Kind::Update, upserts).await?;
    }
    Ok(())
}

/// Sends one ordered batch. A duplicate key error of inserts is not a
/// failure: its statement's index is returned.
async fn write(
    conn: &Conn,
    db: &str,
    coll: &str,
    kind: Kind,
    stmts: Vec<Document>,
) -> Result<Option<usize>> {
    let (cmd, what) = match kind {
        Kind::Insert => (
            doc! {"insert": coll, "documents": stmts, "ordered": true, "bypassDocumentValidation": true},
            "inserts",
        ),
        Kind::Update => (
            doc! {"update": coll, "updates": stmts, "ordered": true, "bypassDocumentValidation": true},
            "updates",
        ),
        Kind::Delete => (
            doc! {"delete": coll, "deletes": stmts, "ordered": true},
            "deletes",
        ),
    };
    let reply = conn
        .client
        .database(db)
        .run_command(cmd)
        .await
        .map_err(|e| conn.error(&format!("replaying the oplog: {what} of {db}.{coll}"), e))?;
    let Some(err) = reply
        .get_array("writeErrors")
        .ok()
        .and_then(|a| a.first())
        .and_then(Bson::as_document)
    else {
        return Ok(None);
    };
    let code = int(err.get("code")).unwrap_or(0);
    let index = int(err.get("index")).and_then(|i| usize::try_from(i).ok());
    if let (Kind::Insert, 11000, Some(i)) = (kind, code, index) {
        return Ok(Some(i));
    }
    Err(Error::target_failed(format!(
        "replaying the oplog: the target refused {what} of {db}.{coll}: {} (code {code})",
        err.get_str("errmsg").unwrap_or("?"),
    )))
}

/// Runs a replayed command; a command that finds its result already in
/// place (the copied documents and metadata are newer than the entry)
/// passes.
async fn run_command(conn: &Conn, db: &str, cmd: Document) -> Result<()> {
    let name = cmd.keys().next().cloned().unwrap_or_default();
    match conn.client.database(db).run_command(cmd).await {
        Ok(_) => Ok(()),
        Err(e) if is_code(&e, &[26, 27, 48, 85, 86]) => Ok(()),
        Err(e) => Err(conn.error(&format!("replaying the oplog: {name} on {db}"), e)),
    }
}

/// The next whole entry `split` holds; `what` names the file in errors.
fn next_entry(split: &mut DocSplitter, what: &str) -> Result<Option<Vec<u8>>> {
    split
        .next_doc()
        .map_err(|m| Error::corrupt(FileKind::Capture, what, m))
}

/// Feeds a replayer the snapshot's oplog window, then the captured pieces
/// of `replay` from its start to its target (inclusive).
pub(crate) async fn feed(
    snapshot: &SnapshotReader,
    oplog: Option<&backup_core::tree::Node>,
    replay: Option<&CaptureReplay>,
    r: &mut Replayer<'_>,
) -> Result<()> {
    if let Some(node) = oplog {
        let mut split = DocSplitter::new(usize::MAX);
        let mut stream = snapshot.content(node);
        while let Some(chunk) = stream.next().await {
            split.push(&chunk?);
            while let Some(raw) = next_entry(&mut split, "oplog.bson")? {
                r.entry(&raw).await?;
            }
        }
    }
    let Some(replay) = replay else {
        return Ok(());
    };
    let (Some(from), Some(until)) = (
        Ts::from_position(&replay.from),
        Ts::from_position(&replay.until),
    ) else {
        return Err(Error::Config(format!(
            "replay range {}..{} is not made of oplog positions",
            replay.from, replay.until
        )));
    };
    r.after_snapshot();
    let repo = snapshot.repository().clone();
    let mut pieces = std::pin::pin!(repo.read_pieces(replay.pieces.clone()));
    'pieces: while let Some(piece) = pieces.next().await {
        let (name, bytes) = piece?;
        r.report.pieces += 1;
        let mut split = DocSplitter::new(usize::MAX);
        split.push(&bytes);
        let what = name.file_name();
        while let Some(raw) = next_entry(&mut split, &what)? {
            let doc = RawDocument::from_bytes(&raw).ok();
            let Some(ts) = doc.and_then(|d| d.get_timestamp("ts").ok()).map(Ts::from) else {
                return Err(Error::corrupt(
                    FileKind::Capture,
                    &what,
                    "an oplog entry without a timestamp",
                ));
            };
            if ts < from {
                continue;
            }
            if ts > until {
                break 'pieces;
            }
            r.entry(&raw).await?;
        }
    }
    Ok(())
}

impl Restore<'_> {
    /// The snapshot's oplog window and, for a restore to a point in time,
    /// the captured pieces up to the target.
    pub(super) async fn replay_oplog(&self, map: SharedMap<'_>) -> Result<ReplayReport> {
        self.progress.set_phase("oplog");
        let mut r = Replayer::new(Some(self.conn), map, self.jobs);
        feed(
            self.snapshot,
            self.loaded.oplog.as_ref(),
            self.opts.replay.as_ref(),
            &mut r,
        )
        .await?;
        r.finish().await
    }
}

#[cfg(test)]
mod tests;
