//! Loading the documents: several collections at once, each read from
//! its stream into batches that several insert workers write.

use std::collections::HashMap;
use std::sync::Arc;

use backup_core::progress::Progress;
use backup_core::reader::SnapshotReader;
use backup_core::tree::Node;
use backup_core::{Error, FileKind, Result};
use futures::StreamExt;
use mongodb::bson::RawDocumentBuf;
use mongodb::error::ErrorKind;
use mongodb::Collection;
use tokio::task::JoinHandle;

use super::super::conn::{Conn, Hello};
use super::snapshot::Planned;
use super::split::DocSplitter;
use super::state::Restore;

/// Largest insert batch built, in bytes (a document larger than this goes
/// in a batch of its own).
pub(crate) const BATCH_BYTES: usize = 8 * 1024 * 1024;

/// Batch limits of the target server.
#[derive(Debug, Clone, Copy)]
#[allow(clippy::struct_field_names)]
pub(super) struct Limits {
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

/// What loading the documents did, by position of the collection in the
/// plan.
pub(super) struct LoadedCounts(HashMap<usize, Loaded1>);

impl LoadedCounts {
    /// Documents inserted in all.
    pub(super) fn inserted(&self) -> u64 {
        self.0.values().map(|l| l.inserted).sum()
    }

    /// The collections of `plan` whose counts differ from the manifest.
    pub(super) fn mismatches(&self, plan: &[Planned]) -> Vec<String> {
        // Counts against the manifest: the documents each collection's
        // stream held, every one acknowledged by the server (an insert
        // that fails fails the restore) or, with an oplog to replay, found
        // already there. No count_documents: it would read every
        // collection again.
        let mut problems = Vec::new();
        for (i, p) in plan.iter().enumerate() {
            let Some(l) = self.0.get(&i) else {
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
        problems
    }
}

impl Restore<'_> {
    /// Documents: several collections at once, several writers each.
    pub(super) async fn load_documents(&self, limits: Limits) -> Result<LoadedCounts> {
        self.progress.set_phase("documents");
        let oplog_entries = self.loaded.meta.oplog.as_ref().map_or(0, |o| o.entries);
        let ignore_duplicates = oplog_entries > 0;
        let jobs = self.opts.jobs.unwrap_or(self.jobs).max(1);
        let workers = self.opts.jobs.unwrap_or_else(|| self.jobs.max(2)).max(1);
        let mut loads = Vec::new();
        for (i, p) in self.plan().iter().enumerate() {
            if p.documents.is_none() {
                continue;
            }
            let fut = load_collection(
                self.snapshot.clone(),
                self.conn.clone(),
                p.clone(),
                limits,
                workers,
                ignore_duplicates,
                self.progress.clone(),
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
        Ok(LoadedCounts(loaded_counts))
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
            Err(conn.error(&format!("inserting into {ns}"), e))
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
    let read_result = send_batches(&snapshot, &node, &p, limits, &tx, &*progress).await;
    drop(tx);
    let dups = join_writers(tasks, &ns).await?;
    let mut total = read_result?;
    total.duplicates = dups;
    total.inserted -= dups;
    progress.add_item();
    Ok(total)
}

/// Reads the documents stream `node` of `p` into batches within `limits`
/// and sends them to the insert workers (stops early, without an error,
/// when they are gone).
async fn send_batches(
    snapshot: &SnapshotReader,
    node: &Node,
    p: &Planned,
    limits: Limits,
    tx: &async_channel::Sender<Vec<RawDocumentBuf>>,
    progress: &dyn Progress,
) -> Result<Loaded1> {
    let mut split = DocSplitter::new(limits.max_doc);
    let mut stream = snapshot.content(node);
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
                && (batch_bytes + doc.len() > limits.max_bytes || batch.len() >= limits.max_count)
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
}

/// Waits for every insert worker of `ns`; returns the duplicates they
/// ignored, or the first error.
async fn join_writers(tasks: Vec<JoinHandle<Result<u64>>>, ns: &str) -> Result<u64> {
    let mut dups = 0;
    let mut first_err = None;
    for t in tasks {
        match t.await {
            Ok(Ok(d)) => dups += d,
            Ok(Err(e)) => {
                first_err.get_or_insert(e);
            }
            Err(e) => {
                first_err.get_or_insert(Error::target_caused(
                    format!("an insert worker of {ns} failed"),
                    e,
                ));
            }
        }
    }
    match first_err {
        Some(e) => Err(e),
        None => Ok(dups),
    }
}
