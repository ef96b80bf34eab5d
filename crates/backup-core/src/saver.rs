//! The write half of the pipeline: dedup, compress and encrypt on all
//! cores, pack, and upload several packs at once.
//!
//! ```text
//! producers --[RawBlob]--> N encoder threads (each packs what it encoded)
//!     --FinishedPack--> uploader task (U concurrent puts) --> index files
//! ```
//!
//! The encoders add their blobs to the open packs under a lock rather than
//! handing them to a packer thread: one hand-off (a wake-up) less per blob,
//! and a full pack is named (hashed) by the encoder that filled it while
//! the other goes on. A thread reading many small files holds its blobs
//! back and hands them over together ([`SaverHandle::batching`]), so an
//! encoder wakes once for many of them.
//!
//! Every channel is bounded, so memory is bounded by the channel capacities
//! times the largest chunk and pack sizes, whatever the input size.

use std::collections::HashSet;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use futures::StreamExt;

use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{Index, IndexFile, IndexPack};
use crate::pack::{encode_blob, BlobType, FinishedPack, PackBuilder};
use crate::repo::IndexedRepository;
use crate::sink::{FileKind, SinkExt};

/// Packs uploaded concurrently.
pub(crate) const UPLOAD_CONCURRENCY: usize = 3;

struct RawBlob {
    blob_type: BlobType,
    id: Id,
    data: Vec<u8>,
}

/// The open packs, one per blob type, and how to finish them.
#[derive(Default)]
struct OpenPacks {
    builders: [PackBuilder; 2],
    /// Full packs an encoder is finishing or handing to the uploader. A
    /// new pack is not begun meanwhile, so that no more packs are in
    /// memory than with a single packer thread.
    in_hand: usize,
}

struct Packing {
    key: Arc<MasterKey>,
    open: Mutex<OpenPacks>,
    /// Signalled when a full pack has reached the uploader.
    handed_over: std::sync::Condvar,
    /// Bytes from which a pack is finished.
    pack_size: usize,
    /// Room a new pack's buffer gets, so that it never grows.
    capacity: usize,
}

/// Counters of what the saver added.
#[derive(Debug, Default)]
pub(crate) struct SaverStats {
    pub(crate) blobs_added: AtomicU64,
    pub(crate) bytes_added: AtomicU64,
    pub(crate) bytes_stored: AtomicU64,
    pub(crate) packs_added: AtomicU64,
}

struct Shared {
    index: Arc<Index>,
    /// A write-only client's cache, which keeps the trees of each run.
    writer: Option<Arc<crate::repo::WriterCache>>,
    known: [Mutex<HashSet<Id>>; 2],
    packing: Packing,
    failed: AtomicBool,
    error: Mutex<Option<Error>>,
    stats: SaverStats,
}

impl Shared {
    fn fail(&self, e: Error) {
        let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(e);
        }
        self.failed.store(true, Ordering::SeqCst);
    }

    fn take_error(&self) -> Option<Error> {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// A cloneable handle for submitting blobs.
#[derive(Clone)]
pub(crate) struct SaverHandle {
    shared: Arc<Shared>,
    tx: async_channel::Sender<Vec<RawBlob>>,
}

/// This thread's blobs held back to be sent together.
struct Held {
    /// Open [`Batching`] scopes.
    scopes: usize,
    /// The saver's channel they go to (the first scope's).
    to: Option<async_channel::Sender<Vec<RawBlob>>>,
    blobs: Vec<RawBlob>,
    bytes: usize,
}

thread_local! {
    static HELD: std::cell::RefCell<Held> = const {
        std::cell::RefCell::new(Held { scopes: 0, to: None, blobs: Vec::new(), bytes: 0 })
    };
}

/// Bytes of blobs a [`Batching`] scope holds back before it sends them.
const BATCH_BYTES: usize = 512 * 1024;

/// While it lives, this thread's new blobs go to the encoders in batches
/// (see [`SaverHandle::batching`]). [`Batching::finish`] sends what is
/// held and says whether that worked; dropping it sends too.
pub(crate) struct Batching {
    _not_send: std::marker::PhantomData<*const ()>,
}

impl Batching {
    /// Sends what is held.
    ///
    /// # Errors
    ///
    /// [`Error::Cancelled`] when the pipeline has stopped.
    pub(crate) fn finish(self) -> Result<()> {
        let sent = send_held();
        drop(self);
        sent
    }
}

impl Drop for Batching {
    fn drop(&mut self) {
        // After `finish` there is nothing left; otherwise the pipeline has
        // stopped if this fails, and the backup with it.
        let _ = send_held();
        HELD.with_borrow_mut(|h| {
            h.scopes = h.scopes.saturating_sub(1);
            if h.scopes == 0 {
                h.to = None;
            }
        });
    }
}

/// Sends the blobs this thread holds back.
fn send_held() -> Result<()> {
    let (tx, blobs) = HELD.with_borrow_mut(|h| {
        h.bytes = 0;
        (h.to.clone(), std::mem::take(&mut h.blobs))
    });
    match tx {
        Some(tx) if !blobs.is_empty() => tx.send_blocking(blobs).map_err(|_| Error::Cancelled),
        _ => Ok(()),
    }
}

fn type_slot(t: BlobType) -> usize {
    match t {
        BlobType::Data => 0,
        BlobType::Tree => 1,
    }
}

impl SaverHandle {
    /// Reserves a blob id; `true` when the blob is new and must be stored.
    fn reserve(&self, blob_type: BlobType, id: Id, data: &[u8]) -> Result<bool> {
        if self.shared.failed.load(Ordering::SeqCst) {
            return Err(Error::Cancelled);
        }
        if let (BlobType::Tree, Some(w)) = (blob_type, &self.shared.writer) {
            w.note_tree(id, data);
        }
        if self.shared.index.contains(blob_type, &id) {
            return Ok(false);
        }
        Ok(self.shared.known[type_slot(blob_type)]
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id))
    }

    /// Submits a blob from a blocking thread; returns whether it was new.
    pub(crate) fn save_blocking(&self, blob_type: BlobType, id: Id, data: Vec<u8>) -> Result<bool> {
        if !self.reserve(blob_type, id, &data)? {
            return Ok(false);
        }
        let raw = RawBlob {
            blob_type,
            id,
            data,
        };
        let held = HELD.with_borrow_mut(|h| match &h.to {
            Some(tx) if tx.same_channel(&self.tx) => {
                h.bytes += raw.data.len();
                h.blobs.push(raw);
                Ok(h.bytes >= BATCH_BYTES)
            }
            _ => Err(raw),
        });
        match held {
            Ok(false) => {}
            Ok(true) => send_held()?,
            Err(raw) => self
                .tx
                .send_blocking(vec![raw])
                .map_err(|_| Error::Cancelled)?,
        }
        Ok(true)
    }

    /// Until the returned scope ends, blobs this thread saves are held back
    /// and handed to the encoders together, [`BATCH_BYTES`] at a time: for
    /// a thread reading many small files, whose blobs would each wake an
    /// encoder. Blobs of another saver are not held.
    pub(crate) fn batching(&self) -> Batching {
        HELD.with_borrow_mut(|h| {
            if h.scopes == 0 {
                h.to = Some(self.tx.clone());
            }
            h.scopes += 1;
        });
        Batching {
            _not_send: std::marker::PhantomData,
        }
    }

    /// Submits a blob from async code; returns whether it was new.
    pub(crate) async fn save(&self, blob_type: BlobType, id: Id, data: Vec<u8>) -> Result<bool> {
        if !self.reserve(blob_type, id, &data)? {
            return Ok(false);
        }
        self.tx
            .send(vec![RawBlob {
                blob_type,
                id,
                data,
            }])
            .await
            .map_err(|_| Error::Cancelled)?;
        Ok(true)
    }

    /// Whether the pipeline has failed.
    pub(crate) fn has_failed(&self) -> bool {
        self.shared.failed.load(Ordering::SeqCst)
    }

    pub(crate) fn stats(&self) -> &SaverStats {
        &self.shared.stats
    }
}

/// What a finished saver wrote.
#[derive(Debug, Default)]
pub(crate) struct SaverOutcome {
    /// Packs uploaded, with their blobs.
    pub(crate) packs: Vec<IndexPack>,
}

/// The running write pipeline.
pub(crate) struct BlobSaver {
    handle: SaverHandle,
    encoders: Vec<JoinHandle<()>>,
    /// For the packs still open once the encoders are done.
    packs: async_channel::Sender<FinishedPack>,
    /// `None` once [`BlobSaver::finish`] has taken it.
    uploader: Option<tokio::task::JoinHandle<Vec<IndexPack>>>,
}

/// A saver dropped unfinished (its backup was cancelled or failed) stops
/// at once: producers get [`Error::Cancelled`] at their next blob instead
/// of reading on, the encoder threads drain and end, and no pack is
/// uploaded after this point (the caller releases its lock next).
impl Drop for BlobSaver {
    fn drop(&mut self) {
        if let Some(uploader) = self.uploader.take() {
            self.handle.shared.fail(Error::Cancelled);
            self.handle.tx.close();
            uploader.abort();
        }
    }
}

impl BlobSaver {
    /// Starts the encoder threads and the uploader. With `dry_run`
    /// nothing is uploaded.
    pub(crate) fn start(repo: &IndexedRepository, dry_run: bool) -> Self {
        let workers = std::thread::available_parallelism().map_or(2, std::num::NonZero::get);
        let pack_size = repo.config().pack_size as usize;
        let shared = Arc::new(Shared {
            index: repo.index().clone(),
            writer: repo.writer().cloned(),
            known: [Mutex::default(), Mutex::default()],
            packing: Packing {
                key: repo.key().clone(),
                open: Mutex::default(),
                handed_over: std::sync::Condvar::new(),
                pack_size,
                // Room for the pack plus the blob that crosses the target
                // size, so the buffer never has to grow (and double).
                capacity: pack_size + repo.config().chunker.max_size as usize + 64 * 1024,
            },
            failed: AtomicBool::new(false),
            error: Mutex::new(None),
            stats: SaverStats::default(),
        });
        let (raw_tx, raw_rx) = async_channel::bounded::<Vec<RawBlob>>(workers * 2);
        let (pack_tx, pack_rx) = async_channel::bounded::<FinishedPack>(1);

        let level = repo.config().compression.level;
        let encoders = (0..workers)
            .map(|i| {
                let rx = raw_rx.clone();
                let tx = pack_tx.clone();
                let shared = shared.clone();
                std::thread::Builder::new()
                    .name(format!("encoder-{i}"))
                    .spawn(move || encoder(level, &rx, &tx, &shared))
                    .map_err(|e| Error::io("starting an encoder thread", e))
            })
            .collect::<Result<Vec<_>>>();
        let encoders = encoders.unwrap_or_else(|e| {
            shared.fail(e);
            raw_tx.close();
            Vec::new()
        });
        let uploader = tokio::spawn(uploader(repo.clone(), pack_rx, shared.clone(), dry_run));
        BlobSaver {
            handle: SaverHandle { shared, tx: raw_tx },
            encoders,
            packs: pack_tx,
            uploader: Some(uploader),
        }
    }

    /// A handle for submitting blobs.
    pub(crate) fn handle(&self) -> &SaverHandle {
        &self.handle
    }

    /// Flushes everything, waits for uploads and returns what was written.
    /// Index files are written by the caller from the outcome.
    ///
    /// # Errors
    ///
    /// The first error of any stage.
    pub(crate) async fn finish(mut self) -> Result<SaverOutcome> {
        self.handle.tx.close();
        let encoders = std::mem::take(&mut self.encoders);
        let Some(uploader) = self.uploader.take() else {
            return Err(Error::Cancelled);
        };
        let handle = self.handle.clone();
        let last = self.packs.clone();
        let joined = tokio::task::spawn_blocking(move || {
            for e in encoders {
                let _ = e.join();
            }
            // The packs still open, now that nothing adds to them.
            let shared = &handle.shared;
            if !shared.failed.load(Ordering::SeqCst) {
                let open = std::mem::take(&mut shared.packing.lock().builders);
                for b in open.into_iter().filter(|b| !b.is_empty()) {
                    if last.send_blocking(b.finish(&shared.packing.key)).is_err() {
                        break;
                    }
                }
            }
        })
        .await;
        self.packs.close();
        let packs = uploader.await;
        if let Some(e) = self.handle.shared.take_error() {
            return Err(e);
        }
        joined.map_err(|e| Error::Generic {
            backend: "pipeline",
            source: Box::new(e),
        })?;
        let packs = packs.map_err(|e| Error::Generic {
            backend: "uploader",
            source: Box::new(e),
        })?;
        Ok(SaverOutcome { packs })
    }
}

fn encoder(
    level: i32,
    rx: &async_channel::Receiver<Vec<RawBlob>>,
    tx: &async_channel::Sender<FinishedPack>,
    shared: &Shared,
) {
    let mut compressor = match zstd::bulk::Compressor::new(level) {
        Ok(c) => c,
        Err(e) => {
            shared.fail(Error::io("creating a zstd compressor", e));
            rx.close();
            return;
        }
    };
    let key = &*shared.packing.key;
    while let Ok(batch) = rx.recv_blocking() {
        for raw in batch {
            let (compressed, stored) = encode_blob(key, &mut compressor, &raw.data);
            let full = shared.packing.add(&raw, compressed, &stored, &shared.stats);
            drop((raw, stored));
            if let Some(full) = full {
                let sent = tx.send_blocking(full.finish(key));
                shared.packing.handed_over();
                if sent.is_err() {
                    rx.close();
                    return;
                }
            }
        }
    }
}

impl Packing {
    fn lock(&self) -> std::sync::MutexGuard<'_, OpenPacks> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A full pack taken by [`Packing::add`] has reached the uploader (or
    /// the uploader is gone).
    fn handed_over(&self) {
        self.lock().in_hand -= 1;
        self.handed_over.notify_all();
    }

    /// Adds an encoded blob to the open pack of its type; that pack when
    /// it is now full (taken out: the caller finishes it, hands it to the
    /// uploader, then calls [`Packing::handed_over`]). A blob that would
    /// begin a new pack waits until no full one is in hand.
    fn add(
        &self,
        raw: &RawBlob,
        compressed: bool,
        stored: &[u8],
        stats: &SaverStats,
    ) -> Option<PackBuilder> {
        let slot = type_slot(raw.blob_type);
        let mut open = self.lock();
        while open.in_hand > 0 && open.builders[slot].is_empty() {
            open = self
                .handed_over
                .wait(open)
                .unwrap_or_else(PoisonError::into_inner);
        }
        let open = &mut *open;
        let b = &mut open.builders[slot];
        if b.is_empty() {
            *b = PackBuilder::with_capacity(self.capacity);
        }
        b.add(
            raw.blob_type,
            raw.id,
            compressed,
            raw.data.len() as u32,
            stored,
        );
        stats.blobs_added.fetch_add(1, Ordering::Relaxed);
        stats
            .bytes_added
            .fetch_add(raw.data.len() as u64, Ordering::Relaxed);
        stats
            .bytes_stored
            .fetch_add(stored.len() as u64, Ordering::Relaxed);
        let full = b.len() >= self.pack_size || b.entry_count() >= crate::pack::MAX_PACK_ENTRIES;
        open.in_hand += usize::from(full);
        full.then(|| std::mem::take(b))
    }
}

/// Stores a finished pack: a pack of data blobs through
/// [`Sink::put_data_pack`](crate::sink::Sink::put_data_pack) (a backend may
/// keep it in a colder storage class), a tree pack through a plain put (it
/// must stay readable at once for listings and browsing).
pub(crate) async fn store_finished(
    sink: &dyn crate::sink::Sink,
    name: &str,
    entries: &[crate::pack::PackEntry],
    data: bytes::Bytes,
) -> Result<()> {
    if entries.iter().all(|e| e.blob_type == BlobType::Data) && !entries.is_empty() {
        sink.put_data_pack_content_addressed(name, data).await
    } else {
        sink.put_content_addressed(FileKind::Pack, name, data).await
    }
}

async fn uploader(
    repo: IndexedRepository,
    rx: async_channel::Receiver<FinishedPack>,
    shared: Arc<Shared>,
    dry_run: bool,
) -> Vec<IndexPack> {
    let sink = repo.sink().clone();
    let results = rx
        .clone()
        .map(|pack| {
            let sink = sink.clone();
            async move {
                let size = pack.data.len() as u64;
                if !dry_run {
                    store_finished(&*sink, &pack.id.to_hex(), &pack.entries, pack.data).await?;
                }
                Ok::<_, Error>(IndexPack {
                    id: pack.id,
                    size,
                    blobs: pack.entries,
                })
            }
        })
        .buffer_unordered(UPLOAD_CONCURRENCY);
    let mut results = std::pin::pin!(results);
    let mut done = Vec::new();
    while let Some(r) = results.next().await {
        match r {
            Ok(p) => {
                shared.stats.packs_added.fetch_add(1, Ordering::Relaxed);
                done.push(p);
            }
            Err(e) => {
                shared.fail(e);
                rx.close();
            }
        }
    }
    done
}

/// Writes index files for `packs` (only packs already stored), split as
/// [`IndexFile::split`] does; returns each file's id, with its contents
/// for a write-only client's cache.
///
/// # Errors
///
/// Storage errors.
pub(crate) async fn write_index_files(
    repo: &IndexedRepository,
    packs: Vec<IndexPack>,
) -> Result<Vec<(Id, Option<IndexFile>)>> {
    let mut written = Vec::new();
    for file in IndexFile::split(packs) {
        let id = repo.save_file(FileKind::Index, &file).await?;
        // A write-only client's cache keeps what each file lists.
        written.push((id, repo.writer().is_some().then_some(file)));
    }
    Ok(written)
}
