//! Restore: reads a snapshot's tree and content and hands them, in order,
//! to a writer.
//!
//! A planner walks the trees and turns the selected entries into *units*:
//! runs of writer operations plus the blobs between them, where the blobs of
//! one unit lie close together in one pack and are fetched with one ranged
//! read. Units are fetched and decoded (decrypt, decompress, verify id)
//! several at once, and delivered to the writer strictly in order. Every
//! blob is verified before its bytes reach the writer; a damaged blob stops
//! the restore with an error and the file being written is removed.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};

use crate::error::{Error, Result};
use crate::filter::PathFilter;
use crate::id::Id;
use crate::pack::{decode_blob_with, BlobType, IdCheck, PackEntry};
use crate::progress::Progress;
use crate::repo::IndexedRepository;
use crate::sink::FileKind;
use crate::tree::{Node, NodeKind};

/// Largest span of a pack fetched with one read.
const MAX_UNIT_BYTES: u64 = 4 * 1024 * 1024;
/// Most plaintext bytes in one unit. Highly compressible data packs a lot
/// of plaintext into few stored bytes; this cap keeps a decoded unit (and
/// so the restore's memory, [`FETCH_CONCURRENCY`] units per stream) small
/// whatever the compression ratio.
const MAX_UNIT_RAW: u64 = 4 * 1024 * 1024;
/// Unneeded bytes a unit may read to join blobs into one read (more is
/// allowed when the unit needs at least as many bytes).
const MAX_GAP: u64 = 2 * 1024 * 1024;
/// Most writer operations in one unit.
const MAX_UNIT_OPS: usize = 2048;
/// Units smaller than this are decoded on the async task itself; handing
/// them to a blocking thread costs more than decoding.
const INLINE_DECODE_BYTES: u64 = 128 * 1024;
/// Units fetched and decoded at once.
const FETCH_CONCURRENCY: usize = 8;

/// Receives a restore, in order, on a blocking thread.
///
/// Paths are relative to the restore root. For every directory
/// `enter_dir` comes before its entries and `leave_dir` after them (set
/// directory metadata there). File content arrives as `start_file`, any
/// number of `write_data`, then `finish_file`; when the restore fails in
/// between, `abort_file` is called instead and should remove the partial
/// file. Streams of database snapshots are delivered like files.
pub trait TreeWriter: Send {
    /// A directory starts.
    fn enter_dir(&mut self, path: &Path, node: &Node) -> Result<()>;
    /// A directory's entries are all written.
    fn leave_dir(&mut self, path: &Path, node: &Node) -> Result<()>;
    /// A file starts.
    fn start_file(&mut self, path: &Path, node: &Node) -> Result<()>;
    /// The next bytes of the current file.
    fn write_data(&mut self, data: Bytes) -> Result<()>;
    /// The current file is complete.
    fn finish_file(&mut self, path: &Path, node: &Node) -> Result<()>;
    /// The restore failed while the current file was open.
    fn abort_file(&mut self, path: &Path);
    /// A symbolic link.
    fn symlink(&mut self, path: &Path, node: &Node) -> Result<()>;
    /// A FIFO or device node (format version 3). Writers that cannot
    /// create one refuse it.
    ///
    /// # Errors
    ///
    /// [`Error::Target`] from writers that hold only regular files.
    fn special(&mut self, path: &Path, node: &Node) -> Result<()> {
        let _ = node;
        Err(Error::target_failed(format!(
            "`{}` is a special file, which this target cannot hold",
            path.display()
        )))
    }
    /// A hard link: `path` names the same file as `first`, an earlier path
    /// of this restore whose file was started (with
    /// [`TreeWriter::start_file`]) and finished. `node` is the link's own
    /// node. The default writes nothing and returns `false`, and the file
    /// is then restored as a copy of its own; a writer returning `true`
    /// made the link.
    ///
    /// # Errors
    ///
    /// The writer's errors making the link.
    fn hard_link(&mut self, path: &Path, first: &Path, node: &Node) -> Result<bool> {
        let _ = (path, first, node);
        Ok(false)
    }
    /// Whether [`TreeWriter::hard_link`] always makes the link (returns
    /// `true`) in this restore. The restorer then fetches no content for
    /// a hard link's later names, and a `false` from `hard_link` is an
    /// error. The default is `false`: the content follows every link.
    fn always_links(&self) -> bool {
        false
    }
    /// The restore ended (successfully or not): complete any deferred work
    /// and report errors not reported yet. Called exactly once, last.
    fn finish(&mut self) -> Result<()> {
        Ok(())
    }
}

/// What a restore selected or wrote.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct RestoreStats {
    /// Files and streams.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// FIFOs and device nodes.
    #[serde(skip_serializing_if = "is_zero")]
    pub specials: u64,
    /// Files restored as hard links to a file restored before.
    #[serde(skip_serializing_if = "is_zero")]
    pub hard_links: u64,
    /// Content bytes.
    pub bytes: u64,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_zero(v: &u64) -> bool {
    *v == 0
}

#[derive(Debug)]
enum Op {
    EnterDir(PathBuf, Node),
    LeaveDir(PathBuf, Node),
    StartFile(PathBuf, Node),
    Data(Bytes),
    FinishFile(PathBuf, Node),
    Symlink(PathBuf, Node),
    Special(PathBuf, Node),
    /// A file that is a hard link to the first path's file; the writer
    /// may make the link ([`TreeWriter::hard_link`]) or take the content
    /// that follows, up to `FinishFile` (none when the writer
    /// [always links](TreeWriter::always_links)).
    HardLink(PathBuf, PathBuf, Node),
}

#[allow(clippy::large_enum_variant)] // Ops and blobs alternate; boxing every op costs more.
enum Part {
    Op(Op),
    Blob(PackEntry),
}

#[derive(Default)]
struct Unit {
    pack: Option<Id>,
    start: u64,
    end: u64,
    /// Sum of the lengths of the blobs taken (the rest of the span is read
    /// and discarded).
    needed: u64,
    /// Plaintext bytes of the blobs taken.
    raw: u64,
    parts: Vec<Part>,
}

impl Unit {
    /// Whether the blob can join this unit: same pack, the span stays
    /// within [`MAX_UNIT_BYTES`], the plaintext within [`MAX_UNIT_RAW`],
    /// and the bytes read but not needed stay
    /// below [`MAX_GAP`] or the needed bytes, whichever is larger. Blobs may
    /// come in any order within the span (parallel readers interleave the
    /// blobs of neighbouring files in a pack).
    fn can_take(&self, pack: &Id, e: &PackEntry) -> bool {
        match &self.pack {
            None => true,
            Some(p) => {
                let off = u64::from(e.offset);
                let end = off + u64::from(e.length);
                let start = self.start.min(off);
                let span_end = self.end.max(end);
                let needed = self.needed + u64::from(e.length);
                let span = span_end - start;
                p == pack
                    && span <= MAX_UNIT_BYTES
                    && self.raw + u64::from(e.raw_length) <= MAX_UNIT_RAW
                    && span.saturating_sub(needed) <= MAX_GAP.max(needed)
            }
        }
    }

    fn take(&mut self, pack: Id, e: PackEntry) {
        let off = u64::from(e.offset);
        let end = off + u64::from(e.length);
        if self.pack.is_none() {
            self.pack = Some(pack);
            self.start = off;
            self.end = end;
        } else {
            self.start = self.start.min(off);
            self.end = self.end.max(end);
        }
        self.needed += u64::from(e.length);
        self.raw += u64::from(e.raw_length);
        self.parts.push(Part::Blob(e));
    }
}

/// Builds units from ops and blobs, flushing to a channel.
struct UnitBuilder {
    repo: IndexedRepository,
    current: Unit,
    tx: async_channel::Sender<Unit>,
}

impl UnitBuilder {
    async fn flush(&mut self) -> Result<()> {
        if !self.current.parts.is_empty() {
            let unit = std::mem::take(&mut self.current);
            tracing::trace!(
                parts = unit.parts.len(),
                span = unit.end - unit.start,
                needed = unit.needed,
                pack = ?unit.pack,
                "Unit planned."
            );
            self.tx.send(unit).await.map_err(|_| Error::Cancelled)?;
        }
        Ok(())
    }

    async fn op(&mut self, op: Op) -> Result<()> {
        self.current.parts.push(Part::Op(op));
        if self.current.parts.len() >= MAX_UNIT_OPS {
            self.flush().await?;
        }
        Ok(())
    }

    async fn content(&mut self, node: &Node) -> Result<()> {
        for id in self.repo.content_ids(node).await? {
            let loc = self.repo.index().get(BlobType::Data, &id).ok_or_else(|| {
                Error::corrupt(
                    FileKind::Index,
                    format!("blob {}", id.short()),
                    format!(
                        "content of `{}` is not in the index (data is missing)",
                        node.name
                    ),
                )
            })?;
            if !self.current.can_take(&loc.pack, &loc.entry)
                || self.current.parts.len() >= MAX_UNIT_OPS
            {
                self.flush().await?;
            }
            self.current.take(loc.pack, loc.entry);
        }
        Ok(())
    }
}

struct DirFrame {
    path: PathBuf,
    node: Node,
    emitted: bool,
}

/// Walks the selected part of a tree and produces units.
/// `links_bare`: later names of a hard-linked file get no content (the
/// writer [always links](TreeWriter::always_links)).
async fn plan_units(
    repo: IndexedRepository,
    root: Id,
    filter: PathFilter,
    tx: async_channel::Sender<Unit>,
    links_bare: bool,
) -> Result<RestoreStats> {
    let mut b = UnitBuilder {
        repo: repo.clone(),
        current: Unit::default(),
        tx,
    };
    let mut stats = RestoreStats::default();
    // The first restored path of each hard-linked file, by (device, inode).
    let mut first_links: std::collections::HashMap<(u64, u64), PathBuf> =
        std::collections::HashMap::new();
    // Explicit DFS: each stack entry is a directory frame with its
    // remaining nodes in reverse order.
    let root_tree = repo.load_tree(&root).await?;
    let mut frames: Vec<DirFrame> = Vec::new();
    let mut pending: Vec<Vec<Node>> = vec![root_tree.nodes.into_iter().rev().collect()];
    loop {
        let Some(next) = pending.last_mut().and_then(Vec::pop) else {
            pending.pop();
            if let Some(frame) = frames.pop() {
                if frame.emitted {
                    b.op(Op::LeaveDir(frame.path, frame.node)).await?;
                }
                continue;
            }
            break;
        };
        let parent = frames.last().map_or_else(PathBuf::new, |f| f.path.clone());
        check_name(&next, &parent)?;
        let path = parent.join(next.name.to_os());
        if filter.is_excluded(&path) {
            continue;
        }
        let selected = filter.is_selected(&path);
        match next.kind {
            NodeKind::Dir => {
                let sub = next.subtree.ok_or_else(|| {
                    Error::corrupt(FileKind::Pack, path.display(), "directory without subtree")
                })?;
                let tree = repo.load_tree(&sub).await?;
                if selected {
                    emit_ancestors(&mut b, &mut frames).await?;
                    b.op(Op::EnterDir(path.clone(), next.clone())).await?;
                    stats.dirs += 1;
                }
                frames.push(DirFrame {
                    path,
                    node: next,
                    emitted: selected,
                });
                pending.push(tree.nodes.into_iter().rev().collect());
            }
            _ if !selected => {}
            NodeKind::Symlink => {
                emit_ancestors(&mut b, &mut frames).await?;
                b.op(Op::Symlink(path, next)).await?;
                stats.symlinks += 1;
            }
            NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev => {
                emit_ancestors(&mut b, &mut frames).await?;
                b.op(Op::Special(path, next)).await?;
                stats.specials += 1;
            }
            NodeKind::File | NodeKind::Stream => {
                emit_ancestors(&mut b, &mut frames).await?;
                stats.files += 1;
                let group = match (next.links, next.device, next.inode) {
                    (Some(l), Some(d), Some(i)) if l > 1 && next.kind == NodeKind::File => {
                        Some((d, i))
                    }
                    _ => None,
                };
                if let Some(first) = group.and_then(|g| first_links.get(&g)) {
                    // The writer either links it (and drops the content
                    // that follows) or writes it as a copy; a writer that
                    // always links is sent no content.
                    stats.hard_links += 1;
                    b.op(Op::HardLink(path.clone(), first.clone(), next.clone()))
                        .await?;
                    if !links_bare {
                        b.content(&next).await?;
                    }
                } else {
                    if let Some(g) = group {
                        first_links.insert(g, path.clone());
                    }
                    stats.bytes += next.size;
                    b.op(Op::StartFile(path.clone(), next.clone())).await?;
                    b.content(&next).await?;
                }
                b.op(Op::FinishFile(path, next)).await?;
            }
        }
    }
    b.flush().await?;
    Ok(stats)
}

/// Refuses names that could escape the restore root or are not single path
/// components (`..`, `.`, empty, containing `/` or NUL).
fn check_name(node: &Node, parent: &Path) -> Result<()> {
    let n = &node.name.0;
    if n.is_empty() || n == b"." || n == b".." || n.contains(&b'/') || n.contains(&0) {
        return Err(Error::corrupt(
            FileKind::Pack,
            format!("tree entry in `{}`", parent.display()),
            format!("invalid file name {:?}", node.name),
        ));
    }
    Ok(())
}

/// Emits `EnterDir` for ancestors not yet emitted (needed when an include
/// pattern selects something deep inside an unselected directory).
async fn emit_ancestors(b: &mut UnitBuilder, frames: &mut [DirFrame]) -> Result<()> {
    for f in frames.iter_mut() {
        if !f.emitted {
            f.emitted = true;
            b.op(Op::EnterDir(f.path.clone(), f.node.clone())).await?;
        }
    }
    Ok(())
}

/// Fetches and decodes one unit; returns its ops with data filled in.
async fn fetch_unit(repo: IndexedRepository, unit: Unit, ids: IdCheck) -> Result<Vec<Op>> {
    let Some(pack) = unit.pack else {
        return Ok(unit
            .parts
            .into_iter()
            .filter_map(|p| match p {
                Part::Op(op) => Some(op),
                Part::Blob(_) => None,
            })
            .collect());
    };
    let bytes = repo
        .sink()
        .get_range(FileKind::Pack, &pack.to_hex(), unit.start..unit.end)
        .await?;
    let key = repo.key().clone();
    let hasher = repo.hasher().clone();
    let start = unit.start;
    let decode = move || {
        let mut ops = Vec::with_capacity(unit.parts.len());
        for p in unit.parts {
            match p {
                Part::Op(op) => ops.push(op),
                Part::Blob(e) => {
                    let from = (u64::from(e.offset) - start) as usize;
                    let stored = &bytes[from..from + e.length as usize];
                    let plain = decode_blob_with(&key, &hasher, &e, &pack, stored, ids)?;
                    ops.push(Op::Data(Bytes::from(plain)));
                }
            }
        }
        Ok(ops)
    };
    if unit.needed < INLINE_DECODE_BYTES {
        return decode();
    }
    crate::util::blocking("decoder", decode).await
}

/// Counts what restoring `root` with `filter` would write, without reading
/// any content (for `--dry-run`).
///
/// # Errors
///
/// Errors loading trees.
pub async fn plan(repo: &IndexedRepository, root: Id, filter: &PathFilter) -> Result<RestoreStats> {
    let (tx, rx) = async_channel::bounded(16);
    let drain = tokio::spawn(async move { while rx.recv().await.is_ok() {} });
    let r = plan_units(repo.clone(), root, filter.clone(), tx, true).await;
    let _ = drain.await;
    r
}

/// The packs [`restore_tree`] would read for the selected part of the
/// tree `root` (to prepare them first, as thawing archived packs does),
/// without reading content.
///
/// # Errors
///
/// Errors loading trees.
pub async fn packs_read(
    repo: &IndexedRepository,
    root: Id,
    filter: &PathFilter,
) -> Result<std::collections::BTreeSet<Id>> {
    let (tx, rx) = async_channel::bounded::<Unit>(16);
    let collect = tokio::spawn(async move {
        let mut packs = std::collections::BTreeSet::new();
        while let Ok(unit) = rx.recv().await {
            packs.extend(unit.pack);
        }
        packs
    });
    let planned = plan_units(repo.clone(), root, filter.clone(), tx, true).await;
    let packs = collect.await.map_err(|e| Error::Generic {
        backend: "restore",
        source: e.to_string().into(),
    })?;
    planned.map(|_| packs)
}

/// Restores the selected part of the tree `root` into `writer`.
///
/// # Errors
///
/// [`Error::Corrupt`] when data is missing or damaged (the file being
/// written is aborted), storage errors, and the writer's errors.
pub async fn restore_tree(
    repo: &IndexedRepository,
    root: Id,
    filter: &PathFilter,
    writer: Box<dyn TreeWriter>,
    progress: Arc<dyn Progress>,
) -> Result<RestoreStats> {
    restore_tree_with(repo, root, filter, writer, progress, IdCheck::Always).await
}

/// [`restore_tree`], with blob ids checked as `ids` says (see [`IdCheck`]).
///
/// # Errors
///
/// As [`restore_tree`].
pub async fn restore_tree_with(
    repo: &IndexedRepository,
    root: Id,
    filter: &PathFilter,
    writer: Box<dyn TreeWriter>,
    progress: Arc<dyn Progress>,
    ids: IdCheck,
) -> Result<RestoreStats> {
    let (unit_tx, unit_rx) = async_channel::bounded::<Unit>(FETCH_CONCURRENCY * 2);
    let links_bare = writer.always_links();
    let planner = tokio::spawn(plan_units(
        repo.clone(),
        root,
        filter.clone(),
        unit_tx,
        links_bare,
    ));
    let (op_tx, op_rx) = async_channel::bounded::<Vec<Op>>(4);
    let progress2 = progress.clone();
    let writer_task = tokio::task::spawn_blocking(move || apply_ops(writer, &op_rx, &*progress2));

    let repo2 = repo.clone();
    let fetched = unit_rx
        .map(move |unit| fetch_unit(repo2.clone(), unit, ids))
        .buffered(FETCH_CONCURRENCY);
    let mut fetched = Box::pin(fetched);
    let mut failure = None;
    while let Some(r) = fetched.next().await {
        match r {
            Ok(ops) => {
                if op_tx.send(ops).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    let complete = failure.is_none();
    if complete {
        let _ = op_tx.send(Vec::new()).await;
    }
    drop(op_tx);
    drop(fetched);
    let written = writer_task.await.map_err(|e| Error::Generic {
        backend: "writer",
        source: Box::new(e),
    })?;
    let planned = planner.await.map_err(|e| Error::Generic {
        backend: "planner",
        source: Box::new(e),
    })?;
    if let Some(e) = failure {
        return Err(e);
    }
    // The writer's error is the cause when it stopped first; the planner
    // then only saw its channel close.
    written?;
    let stats = planned?;
    progress.finish();
    Ok(stats)
}

/// Applies ops on the blocking writer thread. An empty batch marks the
/// successful end; a channel closed without it means the restore failed.
fn apply_ops(
    mut w: Box<dyn TreeWriter>,
    rx: &async_channel::Receiver<Vec<Op>>,
    progress: &dyn Progress,
) -> Result<()> {
    let mut open: Option<PathBuf> = None;
    // The current file was made a hard link: its content is dropped.
    let mut linked = false;
    let result = (|| {
        while let Ok(batch) = rx.recv_blocking() {
            if batch.is_empty() {
                return Ok(true);
            }
            for op in batch {
                match op {
                    Op::EnterDir(p, n) => w.enter_dir(&p, &n)?,
                    Op::LeaveDir(p, n) => w.leave_dir(&p, &n)?,
                    Op::StartFile(p, n) => {
                        w.start_file(&p, &n)?;
                        open = Some(p);
                    }
                    Op::Data(_) if linked => {}
                    Op::Data(d) => {
                        let n = d.len() as u64;
                        w.write_data(d)?;
                        progress.add_bytes(n);
                    }
                    Op::FinishFile(..) if linked => {
                        linked = false;
                        progress.add_item();
                    }
                    Op::FinishFile(p, n) => {
                        open = None;
                        w.finish_file(&p, &n)?;
                        progress.add_item();
                    }
                    Op::Symlink(p, n) => {
                        w.symlink(&p, &n)?;
                        progress.add_item();
                    }
                    Op::Special(p, n) => {
                        w.special(&p, &n)?;
                        progress.add_item();
                    }
                    Op::HardLink(p, first, n) => {
                        if w.hard_link(&p, &first, &n)? {
                            linked = true;
                        } else if w.always_links() {
                            return Err(Error::target_failed(format!(
                                "`{}` was not linked to `{}`, which this restore promised",
                                p.display(),
                                first.display()
                            )));
                        } else {
                            w.start_file(&p, &n)?;
                            open = Some(p);
                        }
                    }
                }
            }
        }
        Ok(false)
    })();
    match result {
        Ok(true) => w.finish(),
        Ok(false) => {
            if let Some(p) = open {
                w.abort_file(&p);
            }
            let _ = w.finish();
            Err(Error::Cancelled)
        }
        Err(e) => {
            rx.close();
            if let Some(p) = open {
                w.abort_file(&p);
            }
            let _ = w.finish();
            Err(e)
        }
    }
}

/// The content of one file or stream node as an ordered stream of verified
/// chunks, fetched ahead in parallel. Database targets read streams with
/// this.
pub fn content_stream(repo: &IndexedRepository, node: &Node) -> BoxStream<'static, Result<Bytes>> {
    content_stream_with(repo, node, IdCheck::Always, FETCH_CONCURRENCY)
}

/// [`content_stream`], with blob ids checked as `ids` says (see
/// [`IdCheck`]) and at most `ahead` (at least 1) fetches of up to 4 MiB in
/// flight: a stream read beside a restore's own (a page delta applied
/// while its base is written) keeps its memory small.
pub fn content_stream_with(
    repo: &IndexedRepository,
    node: &Node,
    ids: IdCheck,
    ahead: usize,
) -> BoxStream<'static, Result<Bytes>> {
    let ahead = ahead.max(1);
    let (tx, rx) = async_channel::bounded::<Unit>(ahead * 2);
    let repo2 = repo.clone();
    let node = node.clone();
    let planner = tokio::spawn(async move {
        let mut b = UnitBuilder {
            repo: repo2,
            current: Unit::default(),
            tx,
        };
        b.content(&node).await?;
        b.flush().await
    });
    let repo3 = repo.clone();
    let data = rx
        .map(move |unit| fetch_unit(repo3.clone(), unit, ids))
        .buffered(ahead)
        .flat_map(|r| {
            futures::stream::iter(match r {
                Ok(ops) => ops
                    .into_iter()
                    .filter_map(|op| match op {
                        Op::Data(d) => Some(Ok(d)),
                        _ => None,
                    })
                    .collect::<Vec<_>>(),
                Err(e) => vec![Err(e)],
            })
        });
    let tail = futures::stream::once(async move {
        match planner.await {
            Ok(Ok(())) => None,
            Ok(Err(e)) => Some(Err(e)),
            Err(e) => Some(Err(Error::Generic {
                backend: "planner",
                source: Box::new(e),
            })),
        }
    })
    .filter_map(|x| async move { x });
    data.chain(tail).boxed()
}
