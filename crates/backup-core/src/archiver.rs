//! Backup: walks a [`Source`], stores new content and trees, writes index
//! files and then the snapshot manifest.
//!
//! The walk runs on the async task that calls [`backup`]; contents are
//! chunked and hashed on blocking threads, several at once (the source's
//! concurrency); new blobs go through the saver pipeline (dedup, compress, encrypt, pack, upload). A
//! directory's tree is stored when its last entry is done. Writing order is
//! packs, then index files, then the snapshot, so an interrupted backup
//! leaves no snapshot behind.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use tokio::sync::Semaphore;

use crate::chunker::{Chunker, Chunking};
use crate::config::ChunkerParams;
use crate::crypto::BlobHasher;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::Index;
use crate::pack::BlobType;
use crate::progress::Progress;
use crate::repo::IndexedRepository;
use crate::saver::{write_index_files, BlobSaver, SaverHandle};
use crate::snapshot::{Snapshot, SnapshotEntry, SnapshotStats, StreamSummary, SNAPSHOT_VERSION};
use crate::source::{ChangedWhileRead, Content, Item, OnReadError, Source};
use crate::tree::{encode_content_list, FsName, Node, NodeKind, Tree, INLINE_CONTENT_LIMIT};

/// Options of a backup run.
#[derive(Debug, Clone, Default)]
pub struct BackupOptions {
    /// Tags to record.
    pub tags: Vec<String>,
    /// Exclude patterns (recorded; the source applies them).
    pub excludes: Vec<String>,
    /// Include patterns (recorded; the source applies them).
    pub includes: Vec<String>,
    /// Time to stamp instead of now.
    pub time: Option<DateTime<Utc>>,
    /// Host name to record instead of this host's.
    pub host: Option<String>,
    /// Job name to record.
    pub job: Option<String>,
    /// Snapshot whose unchanged files are reused without reading.
    pub parent: Option<SnapshotEntry>,
    /// Read, chunk and count, but write nothing.
    pub dry_run: bool,
    /// When copying: the original snapshot, whose time, host, user, tags,
    /// job, patterns, statistics, streams and metadata the new snapshot
    /// keeps (only its tree and `copy_of` differ).
    pub copy_of: Option<SnapshotEntry>,
}

/// What a backup produced.
#[derive(Debug, Clone)]
pub struct BackupOutcome {
    /// The new snapshot's id; `None` for a dry run.
    pub id: Option<Id>,
    /// The manifest (written unless dry run).
    pub snapshot: Snapshot,
    /// The repository index including the new packs.
    pub index: Arc<Index>,
    /// What this run did. Equal to `snapshot.stats` except for copies,
    /// whose manifest keeps the original's statistics.
    pub run_stats: SnapshotStats,
}

#[derive(Default)]
struct Counters {
    bytes_read: AtomicU64,
    logical: AtomicU64,
    files: AtomicU64,
    dirs: AtomicU64,
    symlinks: AtomicU64,
    streams: AtomicU64,
    unchanged: AtomicU64,
    /// A read failed (and fails the backup): the walk looks for the error
    /// in its open directories before it starts anything else.
    read_failed: AtomicBool,
}

struct Ctx {
    saver: SaverHandle,
    hasher: BlobHasher,
    chunker: ChunkerParams,
    chunking: Chunking,
    seed: u64,
    counters: Counters,
    warnings: Mutex<Vec<String>>,
    progress: Arc<dyn Progress>,
    runtime: tokio::runtime::Handle,
    /// The warning that an older repository format dropped metadata was
    /// given.
    told_old_format: std::sync::atomic::AtomicBool,
}

impl Ctx {
    fn warn(&self, msg: String) {
        tracing::warn!("{msg}");
        self.warnings
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(msg);
    }
}

#[allow(clippy::large_enum_variant)] // Ready nodes are the common case; boxing them costs more.
enum Pending {
    Ready(Node),
    Task(String, tokio::task::JoinHandle<Result<Option<Node>>>),
    /// A directory the walk has left while some of its entries were still
    /// being read: it is finished once they are, so that the walk goes on
    /// to start the next ones (a database source's next table) meanwhile.
    Dir(Box<OpenDir>),
}

struct OpenDir {
    node: Node,
    path: String,
    children: Vec<Pending>,
}

struct Frame {
    node: Option<Node>,
    children: Vec<Pending>,
    parent_tree: Option<Tree>,
}

/// Runs a backup of `source` into `repo`.
///
/// The caller should hold a shared repository lock for the duration.
///
/// # Errors
///
/// Any failure of the source (including [`Source::finish`]), of reading a
/// stream whose policy is [`OnReadError::Fail`], or of storage. No
/// snapshot is written then; packs already stored stay as unreferenced data.
pub async fn backup(
    repo: &IndexedRepository,
    source: &mut dyn Source,
    opts: &BackupOptions,
    progress: Arc<dyn Progress>,
) -> Result<BackupOutcome> {
    let started = Instant::now();
    let saver = BlobSaver::start(repo, opts.dry_run);
    let ctx = Arc::new(Ctx {
        saver: saver.handle().clone(),
        hasher: repo.hasher().clone(),
        chunker: repo.config().chunker,
        chunking: source.chunking(),
        seed: repo.key().chunker_seed(),
        counters: Counters::default(),
        warnings: Mutex::new(Vec::new()),
        progress,
        runtime: tokio::runtime::Handle::current(),
        told_old_format: std::sync::atomic::AtomicBool::new(false),
    });
    let walked = walk(repo, source, opts, &ctx).await;
    let walked = match walked {
        Ok(w) => w,
        Err(e) => {
            // Prefer the pipeline's own error over the cancellation it
            // caused in the walk.
            let saver_result = saver.finish().await;
            return Err(match (e, saver_result) {
                (Error::Cancelled, Err(se)) => se,
                (e, _) => e,
            });
        }
    };
    let (root_tree, streams) = walked;
    let metadata = match source.finish().await {
        Ok(m) => m,
        Err(e) => {
            let _ = saver.finish().await;
            return Err(e);
        }
    };
    ctx.progress.set_phase("saving index");
    let outcome = saver.finish().await?;
    let mut index = (**repo.index()).clone();
    for p in &outcome.packs {
        index.add_pack(p.id, p.size, &p.blobs);
    }
    let stats_src = ctx.saver.stats();
    let c = &ctx.counters;
    let stats = SnapshotStats {
        bytes_read: c.bytes_read.load(Ordering::Relaxed),
        logical_bytes: c.logical.load(Ordering::Relaxed),
        bytes_added: stats_src.bytes_added.load(Ordering::Relaxed),
        bytes_stored: stats_src.bytes_stored.load(Ordering::Relaxed),
        files: c.files.load(Ordering::Relaxed),
        dirs: c.dirs.load(Ordering::Relaxed),
        symlinks: c.symlinks.load(Ordering::Relaxed),
        streams: c.streams.load(Ordering::Relaxed),
        files_unchanged: c.unchanged.load(Ordering::Relaxed),
        blobs_added: stats_src.blobs_added.load(Ordering::Relaxed),
        packs_added: stats_src.packs_added.load(Ordering::Relaxed),
        duration_ms: started.elapsed().as_millis() as u64,
    };
    let snapshot = Snapshot {
        version: SNAPSHOT_VERSION,
        time: opts.time.unwrap_or_else(Utc::now),
        host: opts.host.clone().unwrap_or_else(crate::util::hostname),
        user: crate::util::username(),
        source: source.descriptor(),
        job: opts.job.clone(),
        tags: opts.tags.clone(),
        parent: opts.parent.as_ref().map(|p| p.id),
        copy_of: None,
        tree: root_tree,
        excludes: opts.excludes.clone(),
        includes: opts.includes.clone(),
        stats,
        streams,
        warnings: std::mem::take(&mut *ctx.warnings.lock().unwrap_or_else(PoisonError::into_inner)),
        metadata,
        program: format!("backup {}", env!("CARGO_PKG_VERSION")),
    };
    let run_stats = snapshot.stats.clone();
    let snapshot = match &opts.copy_of {
        None => snapshot,
        Some(orig) => Snapshot {
            tree: snapshot.tree,
            parent: snapshot.parent,
            copy_of: Some(orig.id),
            ..orig.snapshot.clone()
        },
    };
    if opts.dry_run {
        return Ok(BackupOutcome {
            id: None,
            snapshot,
            index: Arc::new(index),
            run_stats,
        });
    }
    write_index_files(repo, outcome.packs).await?;
    let id = repo.save_snapshot(&snapshot).await?;
    Ok(BackupOutcome {
        id: Some(id),
        snapshot,
        index: Arc::new(index),
        run_stats,
    })
}

/// Walks the source; returns the root tree id and stream summaries.
async fn walk(
    repo: &IndexedRepository,
    source: &mut dyn Source,
    opts: &BackupOptions,
    ctx: &Arc<Ctx>,
) -> Result<(Id, Vec<StreamSummary>)> {
    let permits = Arc::new(Semaphore::new(source.concurrency().max(1)));
    let root_parent = match &opts.parent {
        Some(p) => {
            source
                .set_parent(&crate::reader::SnapshotReader::new(repo.clone(), p.clone()))
                .await?;
            Some(repo.load_tree(&p.snapshot.tree).await?)
        }
        None => None,
    };
    let mut stack = vec![Frame {
        node: None,
        children: Vec::new(),
        parent_tree: root_parent,
    }];
    let mut path: Vec<FsName> = Vec::new();
    let mut streams = Vec::new();
    // The first name of each hard-linked file met in this run, by (device,
    // inode): later names take its content instead of reading it again.
    let mut links: std::collections::HashMap<(u64, u64), LinkedContent> =
        std::collections::HashMap::new();
    while let Some(item) = source.next().await? {
        if ctx.saver.has_failed() {
            return Err(Error::Cancelled);
        }
        if ctx.counters.read_failed.load(Ordering::Relaxed) {
            // Fail now with that read's error rather than after reading
            // everything else (its directory may have been left already).
            for frame in &mut stack {
                settle(ctx, &mut frame.children, &mut streams).await?;
            }
        }
        let item = match item {
            Item::Enter(mut node) => {
                fit_version(repo, ctx, &mut node, opts)?;
                Item::Enter(node)
            }
            Item::Leaf {
                mut node,
                content,
                on_error,
            } => {
                if !fit_version(repo, ctx, &mut node, opts)? {
                    continue;
                }
                Item::Leaf {
                    node,
                    content,
                    on_error,
                }
            }
            other => other,
        };
        match item {
            Item::Enter(node) => {
                let top = stack
                    .last()
                    .ok_or_else(|| Error::source_failed("unbalanced walk"))?;
                let parent_tree = match top.parent_tree.as_ref().and_then(|t| t.find(&node.name)) {
                    Some(Node {
                        kind: NodeKind::Dir,
                        subtree: Some(sub),
                        ..
                    }) if repo.index().contains(BlobType::Tree, sub) => {
                        Some(repo.load_tree(sub).await?)
                    }
                    _ => None,
                };
                path.push(node.name.clone());
                stack.push(Frame {
                    node: Some(node),
                    children: Vec::new(),
                    parent_tree,
                });
            }
            Item::Leave => {
                if stack.len() < 2 {
                    return Err(Error::source_failed("unbalanced walk: Leave without Enter"));
                }
                #[allow(clippy::unwrap_used)]
                let mut frame = stack.pop().unwrap();
                let dir_path = path_string(&path);
                path.pop();
                let node = frame
                    .node
                    .ok_or_else(|| Error::source_failed("directory without node"))?;
                // A directory whose entries are all read is finished now (its
                // nodes leave memory); otherwise later, so that the walk does
                // not wait for its slowest entry.
                let pending = if settle(ctx, &mut frame.children, &mut streams).await? {
                    Pending::Ready(
                        close_dir(ctx, node, frame.children, &dir_path, &mut streams).await?,
                    )
                } else {
                    Pending::Dir(Box::new(OpenDir {
                        node,
                        path: dir_path,
                        children: frame.children,
                    }))
                };
                #[allow(clippy::unwrap_used)]
                stack.last_mut().unwrap().children.push(pending);
            }
            Item::Warning(msg) => ctx.warn(msg),
            Item::Note(msg) => tracing::warn!("{msg}"),
            Item::Leaf {
                node,
                content,
                on_error,
            } => {
                #[allow(clippy::unwrap_used)]
                let top = stack.last_mut().unwrap();
                // Decided here, where the source is at hand (it is not
                // held across the read's start).
                let mut reuse = (node.kind == NodeKind::File)
                    .then(|| top.parent_tree.as_ref().and_then(|t| t.find(&node.name)))
                    .flatten()
                    .filter(|old| {
                        source.unchanged(&node, old) && content_present(repo.index(), old)
                    })
                    .cloned();
                let preset = !(node.content.is_empty() && node.content_lists.is_empty());
                if content.is_none() && reuse.is_none() && node.kind == NodeKind::File && preset {
                    // The source took this content from the parent itself
                    // (a base that a page delta beside it completes).
                    if !content_present(repo.index(), &node) {
                        return Err(Error::source_failed(format!(
                            "`{}/{}`: the content it takes from the parent snapshot is not in the repository (run `backup check`)",
                            path_string(&path),
                            node.name
                        )));
                    }
                    reuse = Some(node.clone());
                }
                let mut publish = None;
                if let Some(group) = link_group(&node) {
                    if let Some(first) = links.get(&group) {
                        if reuse.is_none() {
                            top.children
                                .push(later_link(ctx, node, first.clone(), &path));
                            continue;
                        }
                    } else if let Some(old) = &reuse {
                        links.insert(
                            group,
                            tokio::sync::watch::channel(FirstName::Stored(Box::new(old.clone()))).1,
                        );
                    } else {
                        let (tx, rx) = tokio::sync::watch::channel(FirstName::Reading);
                        links.insert(group, rx);
                        publish = Some(tx);
                    }
                }
                let pending = leaf(
                    ctx, &permits, reuse, node, content, on_error, &path, publish,
                )
                .await?;
                top.children.push(pending);
            }
        }
    }
    if stack.len() != 1 {
        return Err(Error::source_failed("unbalanced walk: Enter without Leave"));
    }
    #[allow(clippy::unwrap_used)]
    let root = stack.pop().unwrap();
    let (root_id, _) = finish_tree(ctx, root.children, "", &mut streams).await?;
    // Directories finish in the order their entries do; list streams by name.
    streams.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((root_id, streams))
}

/// Makes `node` fit the repository's format version: in a repository
/// older than version 3, drops the fields only version 3 records (saying
/// so once) and returns `false` for a node version 2 cannot hold at all (a
/// special file, left out with a warning). A copy of a snapshot must keep
/// everything: it fails instead.
fn fit_version(
    repo: &IndexedRepository,
    ctx: &Ctx,
    node: &mut Node,
    opts: &BackupOptions,
) -> Result<bool> {
    if repo.config().extended_nodes() {
        return Ok(true);
    }
    let features = node.version_3_features();
    if features.is_empty() {
        return Ok(true);
    }
    if let Some(orig) = &opts.copy_of {
        return Err(Error::Config(format!(
            "snapshot {} holds {} (at `{}`), which this repository's format version {} cannot record; copy it into a repository made by `backup init` of this version (format 3), nothing was copied of it",
            orig.id.short(),
            features.join(", "),
            node.name,
            repo.config().version
        )));
    }
    if node.kind.is_special() {
        ctx.warn(format!(
            "{}: special file left out: repository format version {} cannot record it (a repository made by `backup init` of this version can)",
            node.name,
            repo.config().version
        ));
        return Ok(false);
    }
    // Said once a run, and not recorded as an omission: a repository of an
    // older version never held these, and its backups stay as they were.
    // Owner names alone (every node has them) are dropped quietly.
    let worth_saying: Vec<&str> = features
        .into_iter()
        .filter(|f| *f != "owner names")
        .collect();
    if !worth_saying.is_empty() && !ctx.told_old_format.swap(true, Ordering::Relaxed) {
        tracing::warn!(
            "repository format version {} cannot record {} (first met at `{}`); they are left out, as before version 3 (a repository made by `backup init` of this version records them)",
            repo.config().version,
            worth_saying.join(", "),
            node.name
        );
    }
    node.strip_version_3();
    Ok(true)
}

fn path_string(path: &[FsName]) -> String {
    path.iter()
        .map(|n| n.display().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// What became of a hard-linked file's first name in this run, for its
/// later names; the sender dropped while `Reading` means its read failed.
#[derive(Clone)]
enum FirstName {
    Reading,
    Stored(Box<Node>),
    LeftOut,
}

/// Where later names of a hard-linked file learn of its first name.
type LinkedContent = tokio::sync::watch::Receiver<FirstName>;

/// The (device, inode) of a regular file with more than one name.
fn link_group(node: &Node) -> Option<(u64, u64)> {
    match (node.kind, node.links, node.device, node.inode) {
        (NodeKind::File, Some(l), Some(d), Some(i)) if l > 1 => Some((d, i)),
        _ => None,
    }
}

/// A later name of a hard-linked file: its node, with the content the
/// first name stored once that is known.
fn later_link(ctx: &Arc<Ctx>, node: Node, mut first: LinkedContent, path: &[FsName]) -> Pending {
    let mut label = path_string(path);
    if !label.is_empty() {
        label.push('/');
    }
    label.push_str(&node.name.display());
    let ctx = ctx.clone();
    let item = label.clone();
    let task = tokio::spawn(async move {
        let stored = first
            .wait_for(|f| !matches!(f, FirstName::Reading))
            .await
            .map_or(FirstName::Reading, |f| f.clone());
        match stored {
            FirstName::Stored(first) => {
                let mut node = node;
                node.size = first.size;
                node.content = first.content;
                node.content_lists = first.content_lists;
                let c = &ctx.counters;
                c.files.fetch_add(1, Ordering::Relaxed);
                c.logical.fetch_add(node.size, Ordering::Relaxed);
                ctx.progress.add_bytes(node.size);
                ctx.progress.add_item();
                Ok(Some(node))
            }
            FirstName::LeftOut => {
                ctx.warn(format!(
                    "{item}: another name of a file left out of the snapshot; left out too"
                ));
                Ok(None)
            }
            FirstName::Reading => Err(Error::source_failed(format!(
                "{item}: another name of this file could not be read"
            ))),
        }
    });
    Pending::Task(label, task)
}

/// Starts the read of one leaf, or takes `reuse` (its unchanged entry in
/// the parent) instead. `publish` receives the node as stored (or `None`
/// when it is left out) for the file's later hard links.
#[allow(clippy::too_many_arguments)]
async fn leaf(
    ctx: &Arc<Ctx>,
    permits: &Arc<Semaphore>,
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
        c.files.fetch_add(1, Ordering::Relaxed);
        c.unchanged.fetch_add(1, Ordering::Relaxed);
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
    let mut item_path = path_string(path);
    if !item_path.is_empty() {
        item_path.push('/');
    }
    item_path.push_str(&node.name.display());
    let permit = permits
        .clone()
        .acquire_owned()
        .await
        .map_err(|_| Error::Cancelled)?;
    let ctx2 = ctx.clone();
    let label = item_path.clone();
    let task = tokio::task::spawn_blocking(move || {
        let _permit = permit;
        let r = read_content(&ctx2, node, content);
        let r = match r {
            Ok((node, changed)) => {
                if changed {
                    ctx2.warn(format!(
                        "{item_path}: changed while it was read, twice; stored as read the second time, which may not be consistent"
                    ));
                }
                Ok(Some(node))
            }
            Err(e)
                if on_error == OnReadError::Skip
                    && !matches!(e, Error::Cancelled)
                    && !ctx2.saver.has_failed() =>
            {
                ctx2.warn(format!("{item_path}: {e}; left out of the snapshot"));
                Ok(None)
            }
            Err(e) => {
                ctx2.counters.read_failed.store(true, Ordering::Relaxed);
                Err(e)
            }
        };
        if let (Some(tx), Ok(stored)) = (publish, &r) {
            tx.send_replace(
                stored
                    .clone()
                    .map_or(FirstName::LeftOut, |n| FirstName::Stored(Box::new(n))),
            );
        }
        r
    });
    Ok(Pending::Task(label, task))
}

fn content_present(index: &Index, node: &Node) -> bool {
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
            return match read_from(ctx, node.clone(), open().map_err(opening)?) {
                Err(Error::Io { source, .. }) if ChangedWhileRead::is(&source) => {
                    let changed = Arc::new(std::sync::atomic::AtomicBool::new(false));
                    let second = Tolerant {
                        inner: open().map_err(opening)?,
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

/// Waits for a directory's entries and stores its tree.
/// Replaces the finished reads among `children` by their nodes (a failed
/// read fails the walk now) and finishes the open directories whose entries
/// are all read. Returns whether every child is ready.
fn settle<'a>(
    ctx: &'a Ctx,
    children: &'a mut Vec<Pending>,
    streams: &'a mut Vec<StreamSummary>,
) -> futures::future::BoxFuture<'a, Result<bool>> {
    Box::pin(async move {
        let mut all = true;
        let mut settled = Vec::with_capacity(children.len());
        for p in children.drain(..) {
            match p {
                Pending::Task(label, h) if h.is_finished() => {
                    if let Some(n) = join_read(&label, h).await? {
                        settled.push(Pending::Ready(n));
                    }
                }
                Pending::Dir(mut d) => {
                    if settle(ctx, &mut d.children, streams).await? {
                        let d = *d;
                        settled.push(Pending::Ready(
                            close_dir(ctx, d.node, d.children, &d.path, streams).await?,
                        ));
                    } else {
                        all = false;
                        settled.push(Pending::Dir(d));
                    }
                }
                p @ Pending::Task(..) => {
                    all = false;
                    settled.push(p);
                }
                p @ Pending::Ready(_) => settled.push(p),
            }
        }
        *children = settled;
        Ok(all)
    })
}

async fn join_read(
    label: &str,
    h: tokio::task::JoinHandle<Result<Option<Node>>>,
) -> Result<Option<Node>> {
    h.await.map_err(|e| Error::Generic {
        backend: "reader",
        source: format!("reading {label}: {e}").into(),
    })?
}

/// Finishes a directory: its tree is saved and `node` points at it. Boxed:
/// directories nest.
fn close_dir<'a>(
    ctx: &'a Ctx,
    mut node: Node,
    children: Vec<Pending>,
    dir_path: &'a str,
    streams: &'a mut Vec<StreamSummary>,
) -> futures::future::BoxFuture<'a, Result<Node>> {
    Box::pin(async move {
        let (tree_id, _) = finish_tree(ctx, children, dir_path, streams).await?;
        node.subtree = Some(tree_id);
        ctx.counters.dirs.fetch_add(1, Ordering::Relaxed);
        Ok(node)
    })
}

async fn finish_tree(
    ctx: &Ctx,
    children: Vec<Pending>,
    dir_path: &str,
    streams: &mut Vec<StreamSummary>,
) -> Result<(Id, usize)> {
    let mut nodes = Vec::with_capacity(children.len());
    for p in children {
        match p {
            Pending::Ready(n) => nodes.push(n),
            Pending::Task(label, h) => {
                if let Some(n) = join_read(&label, h).await? {
                    nodes.push(n);
                }
            }
            Pending::Dir(d) => {
                let d = *d;
                nodes.push(close_dir(ctx, d.node, d.children, &d.path, streams).await?);
            }
        }
    }
    nodes.sort_by(|a, b| a.name.cmp(&b.name));
    if let Some(w) = nodes.windows(2).find(|w| w[0].name == w[1].name) {
        return Err(Error::source_failed(format!(
            "duplicate entry `{}` in `{dir_path}`",
            w[0].name
        )));
    }
    for n in &nodes {
        if n.kind == NodeKind::Stream {
            if let Some(sha) = n.sha256 {
                let mut name = PathBuf::from(dir_path);
                name.push(n.name.to_os());
                streams.push(StreamSummary {
                    name: name.to_string_lossy().into_owned(),
                    size: n.size,
                    sha256: sha,
                });
            }
        }
    }
    let count = nodes.len();
    let tree = Tree { nodes };
    let data = tree.encode();
    let id = ctx.hasher.hash(&data);
    ctx.saver.save(BlobType::Tree, id, data).await?;
    Ok((id, count))
}
