//! Reading contents: the task that reads one leaf (or takes its unchanged
//! entry from the parent snapshot), and reading, chunking, hashing and
//! saving a content on blocking threads.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use super::context::Ctx;
use super::dirs::{path_string, Pending};
use super::links::FirstName;
use crate::chunker::Chunker;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::Index;
use crate::pack::BlobType;
use crate::source::{ChangedWhileRead, Content, OnReadError};
use crate::tree::{encode_content_list, FsName, Node, NodeKind, INLINE_CONTENT_LIMIT};

/// Starts the read of one leaf, or takes `reuse` (its unchanged entry in
/// the parent) instead. `publish` receives the node as stored (or `None`
/// when it is left out) for the file's later hard links.
#[allow(clippy::too_many_arguments)]
pub(super) async fn leaf(
    ctx: &Arc<Ctx>,
    permits: &ReadPermits,
    reuse: Option<Node>,
    node: Node,
    content: Option<Content>,
    on_error: OnReadError,
    path: &[FsName],
    publish: Option<tokio::sync::watch::Sender<FirstName>>,
) -> Result<Pending> {
    let c = &ctx.counters;
    match node.kind {
        NodeKind::Symlink => {
            c.symlinks.fetch_add(1, Ordering::Relaxed);
            ctx.progress.add_item();
            return Ok(Pending::Ready(node));
        }
        NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev => {
            ctx.progress.add_item();
            return Ok(Pending::Ready(node));
        }
        NodeKind::Dir => {
            return Err(Error::source_failed(
                "a directory must be given as Enter/Leave, not as a leaf",
            ))
        }
        NodeKind::File | NodeKind::Stream => {}
    }
    if let Some(old) = reuse {
        let mut reused = node;
        reused.content = old.content;
        reused.content_lists = old.content_lists;
        if reused.kind == NodeKind::Stream {
            c.streams.fetch_add(1, Ordering::Relaxed);
        } else {
            c.files.fetch_add(1, Ordering::Relaxed);
            c.unchanged.fetch_add(1, Ordering::Relaxed);
        }
        c.logical.fetch_add(reused.size, Ordering::Relaxed);
        ctx.progress.add_bytes(reused.size);
        ctx.progress.add_item();
        return Ok(Pending::Ready(reused));
    }
    let Some(content) = content else {
        return Err(Error::source_failed(format!(
            "entry `{}` has no content",
            node.name
        )));
    };
    let item_path = item_path(path, &node);
    let label = item_path.clone();
    // A file longer than a maximum chunk is read through a buffer of two.
    let weight = if node.size > u64::from(ctx.chunker.max_size) {
        2
    } else {
        1
    };
    let task = with_permit(ctx, permits, weight, move |ctx| {
        let r = read_leaf(ctx, node, content, on_error, &item_path);
        if let (Some(tx), Ok(stored)) = (publish, &r) {
            tx.send_replace(
                stored
                    .clone()
                    .map_or(FirstName::LeftOut, |n| FirstName::Stored(Box::new(n))),
            );
        }
        r
    })
    .await?;
    Ok(Pending::Task(label, task))
}

/// The walk's read permits: `Source::concurrency` of them. A read takes
/// one, or two for a file read through a large buffer, so that the
/// permits bound memory as well as the reads at once.
pub(super) struct ReadPermits {
    sem: Arc<Semaphore>,
    total: u32,
}

impl ReadPermits {
    pub(super) fn new(total: usize) -> ReadPermits {
        let total = u32::try_from(total.clamp(1, Semaphore::MAX_PERMITS)).unwrap_or(u32::MAX);
        ReadPermits {
            sem: Arc::new(Semaphore::new(total as usize)),
            total,
        }
    }
}

/// Runs `read` on a blocking thread once `weight` of the walk's read
/// `permits` are free (all of them when there are fewer), holding them
/// until `read` returns.
async fn with_permit<T: Send + 'static>(
    ctx: &Arc<Ctx>,
    permits: &ReadPermits,
    weight: u32,
    read: impl FnOnce(&Ctx) -> T + Send + 'static,
) -> Result<tokio::task::JoinHandle<T>> {
    let permit = permits
        .sem
        .clone()
        .acquire_many_owned(weight.min(permits.total))
        .await
        .map_err(|_| Error::Cancelled)?;
    let ctx = ctx.clone();
    Ok(tokio::task::spawn_blocking(move || {
        let _permit = permit;
        read(&ctx)
    }))
}

/// `dir/name`: the path of the entry `node` of the directory `path`, for
/// messages.
fn item_path(path: &[FsName], node: &Node) -> String {
    let mut item_path = path_string(path);
    if !item_path.is_empty() {
        item_path.push('/');
    }
    item_path.push_str(&node.name.display());
    item_path
}

/// Reads one leaf's content on a blocking thread: its node as stored, or
/// `None` when a read error left it out (`OnReadError::Skip`, warned).
fn read_leaf(
    ctx: &Ctx,
    node: Node,
    content: Content,
    on_error: OnReadError,
    item_path: &str,
) -> Result<Option<Node>> {
    match read_content(ctx, node, content) {
        Ok((node, changed)) => {
            if changed {
                ctx.warn(format!(
                    "{item_path}: changed while it was read, twice; stored as read the second time, which may not be consistent"
                ));
            }
            Ok(Some(node))
        }
        Err(e)
            if on_error == OnReadError::Skip
                && !matches!(e, Error::Cancelled)
                && !ctx.saver.has_failed() =>
        {
            ctx.warn(format!("{item_path}: {e}; left out of the snapshot"));
            Ok(None)
        }
        Err(e) => {
            ctx.counters.read_failed.store(true, Ordering::Relaxed);
            Err(e)
        }
    }
}

/// Files smaller than this are read in groups ([`SmallFiles`]).
const SMALL_FILE: u64 = 64 * 1024;
/// Most files in one group...
const GROUP_FILES: usize = 16;
/// ...and most bytes.
const GROUP_BYTES: u64 = 256 * 1024;

/// Small local files of one directory waiting to be read together, on
/// one blocking task: a task per file cost more in hand-offs (waking a
/// pool thread, then the walk) than reading a file of a few kilobytes.
/// A group takes one of the walk's read permits, so as many files are
/// read at once as before.
#[derive(Default)]
pub(super) struct SmallFiles {
    files: Vec<(Node, Content, OnReadError, String)>,
    bytes: u64,
}

impl SmallFiles {
    /// Whether a leaf that reuses nothing and publishes nothing (no hard
    /// link waits for it) belongs in a group.
    pub(super) fn takes(node: &Node, content: &Content) -> bool {
        node.kind == NodeKind::File
            && node.size < SMALL_FILE
            && matches!(content, Content::Reopenable(_))
    }

    /// Adds a leaf of the directory `path`; returns whether the group is
    /// full.
    pub(super) fn add(
        &mut self,
        node: Node,
        content: Content,
        on_error: OnReadError,
        path: &[FsName],
    ) -> bool {
        self.bytes += node.size;
        let item = item_path(path, &node);
        self.files.push((node, content, on_error, item));
        self.files.len() >= GROUP_FILES || self.bytes >= GROUP_BYTES
    }

    /// Starts reading the group (emptying it); `None` when it is empty.
    pub(super) async fn start(
        &mut self,
        ctx: &Arc<Ctx>,
        permits: &ReadPermits,
    ) -> Result<Option<Pending>> {
        if self.files.is_empty() {
            return Ok(None);
        }
        let files = std::mem::take(&mut self.files);
        self.bytes = 0;
        let label = files[0].3.clone();
        let task = with_permit(ctx, permits, 1, move |ctx| {
            let batch = ctx.saver.batching();
            let mut nodes = Vec::with_capacity(files.len());
            for (node, content, on_error, item) in files {
                nodes.extend(read_leaf(ctx, node, content, on_error, &item)?);
            }
            batch.finish()?;
            Ok(nodes)
        })
        .await?;
        Ok(Some(Pending::Group(label, task)))
    }
}

pub(super) fn content_present(index: &Index, node: &Node) -> bool {
    node.content
        .iter()
        .all(|id| index.contains(BlobType::Data, id))
        && node
            .content_lists
            .iter()
            .all(|id| index.contains(BlobType::Tree, id))
}

/// Reads an async stream from a blocking thread, one runtime entry per
/// [`BRIDGE_FILL`] bytes rather than per poll: database streams deliver
/// small pieces (one `COPY` row, one RDB record), and entering the runtime
/// for each would cost more than the chunking.
struct BlockingBridge {
    inner: crate::source::AsyncReader,
    runtime: tokio::runtime::Handle,
}

/// Bytes a [`BlockingBridge`] read gathers before returning (less at the
/// end of the stream or when the caller's buffer is smaller).
const BRIDGE_FILL: usize = 256 * 1024;

impl std::io::Read for BlockingBridge {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        use tokio::io::AsyncReadExt;
        let inner = &mut self.inner;
        self.runtime.block_on(async move {
            let mut filled = 0;
            while filled < buf.len() && filled < BRIDGE_FILL {
                let n = inner.read(&mut buf[filled..]).await?;
                if n == 0 {
                    break;
                }
                filled += n;
            }
            Ok(filled)
        })
    }
}

/// Turns [`ChangedWhileRead`] into the end of the content, noting it.
struct Tolerant {
    inner: Box<dyn std::io::Read + Send>,
    changed: Arc<std::sync::atomic::AtomicBool>,
}

impl std::io::Read for Tolerant {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self.inner.read(buf) {
            Err(e) if ChangedWhileRead::is(&e) => {
                self.changed.store(true, Ordering::Relaxed);
                Ok(0)
            }
            r => r,
        }
    }
}

/// Reads, chunks and stores one content on a blocking thread; with it,
/// whether the content changed while it was read twice (a
/// [`Content::Reopenable`] is read again once when it changed).
fn read_content(ctx: &Ctx, node: Node, content: Content) -> Result<(Node, bool)> {
    let name = node.name.display().into_owned();
    let opening = |e| Error::io(format!("opening {name}"), e);
    let reader: Box<dyn std::io::Read + Send> = match content {
        Content::Blocking(open) => open().map_err(opening)?,
        Content::Reopenable(open) => {
            let listed = node;
            let mut node = listed.clone();
            let first = open(&mut node).map_err(opening)?;
            return match read_from(ctx, node, first) {
                Err(Error::Io { source, .. }) if ChangedWhileRead::is(&source) => {
                    let changed = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let mut node = listed;
                    let second = Tolerant {
                        inner: open(&mut node).map_err(opening)?,
                        changed: changed.clone(),
                    };
                    let node = read_from(ctx, node, Box::new(second))?;
                    Ok((node, changed.load(Ordering::Relaxed)))
                }
                r => r.map(|n| (n, false)),
            };
        }
        Content::Async(fut) => {
            let r = ctx.runtime.block_on(fut)?;
            Box::new(BlockingBridge {
                inner: r,
                runtime: ctx.runtime.clone(),
            })
        }
    };
    read_from(ctx, node, reader).map(|n| (n, false))
}

/// Reads, chunks and stores `reader` as the content of `node`.
fn read_from(ctx: &Ctx, mut node: Node, reader: Box<dyn std::io::Read + Send>) -> Result<Node> {
    let name = node.name.display().into_owned();
    let mut chunker = Chunker::with_chunking(reader, ctx.chunker, ctx.seed, ctx.chunking);
    if node.kind == NodeKind::File {
        chunker = chunker.with_size_hint(node.size);
    }
    let mut stored = Stored {
        digest: (node.kind == NodeKind::Stream).then(Sha256::new),
        ids: Vec::new(),
        lists: Vec::new(),
    };
    let mut size = 0u64;
    let mut last_read = 0u64;
    let mut next = |chunker: &mut Chunker<_>, size: &mut u64| -> Result<Option<Vec<u8>>> {
        let chunk = chunker
            .next_chunk()
            .map_err(|e| Error::io(format!("reading {name}"), e))?;
        let read = chunker.bytes_read;
        ctx.counters
            .bytes_read
            .fetch_add(read - last_read, Ordering::Relaxed);
        ctx.progress.add_bytes(read - last_read);
        last_read = read;
        *size += chunk.as_ref().map_or(0, |c| c.len() as u64);
        Ok(chunk)
    };
    if node.kind == NodeKind::File && node.size < PIPELINE_FROM {
        while let Some(chunk) = next(&mut chunker, &mut size)? {
            stored.add(ctx, chunk)?;
        }
    } else {
        // Big files and streams of unknown size: the chunks are hashed
        // and handed to the saver on a second thread while this one reads
        // and cuts the next ones. A single large content (a database
        // stream, a 1 GiB relation segment) would otherwise keep one core
        // busy cutting, hashing and copying while the other waits.
        std::thread::scope(|scope| -> Result<()> {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<u8>>(PIPELINE_DEPTH);
            let stored = &mut stored;
            let worker = scope.spawn(move || -> Result<()> {
                for chunk in rx {
                    stored.add(ctx, chunk)?;
                }
                Ok(())
            });
            let read = loop {
                match next(&mut chunker, &mut size) {
                    Ok(Some(chunk)) => {
                        if tx.send(chunk).is_err() {
                            // The worker failed: its error is the one.
                            break Ok(());
                        }
                    }
                    Ok(None) => break Ok(()),
                    Err(e) => break Err(e),
                }
            };
            drop(tx);
            let worked = worker.join().map_err(|_| Error::Generic {
                backend: "reader",
                source: format!("hashing {name}: the thread panicked").into(),
            })?;
            worked.and(read)
        })?;
    }
    let Stored {
        digest,
        mut ids,
        mut lists,
    } = stored;
    if !lists.is_empty() || ids.len() > INLINE_CONTENT_LIMIT {
        for part in ids.chunks(INLINE_CONTENT_LIMIT) {
            lists.push(save_list(ctx, part)?);
        }
        ids.clear();
    }
    node.size = size;
    node.content = ids;
    node.content_lists = lists;
    node.sha256 = digest.map(|d| Id(d.finalize().into()));
    let c = &ctx.counters;
    match node.kind {
        NodeKind::Stream => c.streams.fetch_add(1, Ordering::Relaxed),
        _ => c.files.fetch_add(1, Ordering::Relaxed),
    };
    c.logical.fetch_add(size, Ordering::Relaxed);
    ctx.progress.add_item();
    Ok(node)
}

/// Contents at least this large (and streams) are hashed and saved on a
/// second thread while the first reads on.
const PIPELINE_FROM: u64 = 8 << 20;
/// Chunks waiting between the reading and the hashing thread.
const PIPELINE_DEPTH: usize = 4;

/// What a content read has stored so far: its chunks' ids (the first
/// ones moved into content lists as they grow) and, for streams, the
/// SHA-256 of the whole content.
struct Stored {
    digest: Option<Sha256>,
    ids: Vec<Id>,
    lists: Vec<Id>,
}

impl Stored {
    /// Hashes and saves the next chunk.
    fn add(&mut self, ctx: &Ctx, chunk: Vec<u8>) -> Result<()> {
        if let Some(d) = self.digest.as_mut() {
            d.update(&chunk);
        }
        let id = ctx.hasher.hash(&chunk);
        ctx.saver.save_blocking(BlobType::Data, id, chunk)?;
        self.ids.push(id);
        if self.ids.len() == INLINE_CONTENT_LIMIT * 2 {
            // Long content: move the first half into a content list so that
            // memory per file stays bounded.
            let rest = self.ids.split_off(INLINE_CONTENT_LIMIT);
            self.lists.push(save_list(ctx, &self.ids)?);
            self.ids = rest;
        }
        Ok(())
    }
}

fn save_list(ctx: &Ctx, ids: &[Id]) -> Result<Id> {
    let data = encode_content_list(ids);
    let id = ctx.hasher.hash(&data);
    ctx.saver.save_blocking(BlobType::Tree, id, data)?;
    Ok(id)
}
