//! The walk of a source: directories entered and left, leaves started,
//! hard links and unchanged files of the parent snapshot recognised, and
//! nodes made to fit the repository's format version.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::context::Ctx;
use super::dirs::{close_dir, finish_tree, path_string, settle, OpenDir, Pending};
use super::links::{later_link, link_group, FirstName, LinkedContent};
use super::options::BackupOptions;
use super::read::{content_present, leaf, ReadPermits, SmallFiles};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::IndexedRepository;
use crate::snapshot::StreamSummary;
use crate::source::{Item, Source};
use crate::tree::{FsName, Node, NodeKind, Tree};

/// A directory the walk is in: its node (none for the root), its entries
/// so far, and its tree in the parent snapshot.
struct Frame {
    node: Option<Node>,
    children: Vec<Pending>,
    parent_tree: Option<Tree>,
    /// Small files met in this directory, not read yet.
    small: SmallFiles,
}

/// Walks the source; returns the root tree id and stream summaries.
pub(super) async fn walk(
    repo: &IndexedRepository,
    source: &mut dyn Source,
    opts: &BackupOptions,
    ctx: &Arc<Ctx>,
) -> Result<(Id, Vec<StreamSummary>)> {
    let permits = ReadPermits::new(source.concurrency());
    let root_parent = match &opts.parent {
        Some(p) => {
            // A write-only client cannot read a parent's contents (a
            // physical base's pages): its sources start from nothing and
            // deduplicate through its cache.
            if repo.writer().is_none() {
                source
                    .set_parent(&crate::reader::SnapshotReader::new(repo.clone(), p.clone()))
                    .await?;
                Some(repo.load_tree(&p.snapshot.tree).await?)
            } else if repo.has_tree(&p.snapshot.tree) {
                Some(repo.load_tree(&p.snapshot.tree).await?)
            } else {
                None
            }
        }
        None => None,
    };
    let mut stack = vec![Frame {
        node: None,
        children: Vec::new(),
        parent_tree: root_parent,
        small: SmallFiles::default(),
    }];
    let mut path: Vec<FsName> = Vec::new();
    let mut streams = Vec::new();
    // The first name of each hard-linked file met in this run, by (device,
    // inode): later names take its content instead of reading it again.
    let mut links: HashMap<(u64, u64), LinkedContent> = HashMap::new();
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
        let Some(item) = fit_item(repo, ctx, item, opts)? else {
            continue;
        };
        if matches!(item, Item::Enter(_) | Item::Leave) {
            // The small files met so far are read while the walk goes on
            // in another directory.
            #[allow(clippy::unwrap_used)]
            start_small(ctx, &permits, stack.last_mut().unwrap()).await?;
        }
        match item {
            Item::Enter(node) => enter_dir(repo, &mut stack, &mut path, node).await?,
            Item::Leave => leave_dir(ctx, &mut stack, &mut path, &mut streams).await?,
            Item::Warning(msg) => ctx.warn(msg),
            Item::Note(msg) => tracing::warn!("{msg}"),
            Item::Leaf {
                node,
                content,
                on_error,
            } => {
                #[allow(clippy::unwrap_used)]
                let top = stack.last_mut().unwrap();
                let reuse = reused_entry(repo, &*source, top, &node, content.is_none(), &path)?;
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
                match content {
                    Some(c)
                        if reuse.is_none() && publish.is_none() && SmallFiles::takes(&node, &c) =>
                    {
                        if top.small.add(node, c, on_error, &path) {
                            start_small(ctx, &permits, top).await?;
                        }
                    }
                    content => {
                        let pending = leaf(
                            ctx, &permits, reuse, node, content, on_error, &path, publish,
                        )
                        .await?;
                        top.children.push(pending);
                    }
                }
            }
        }
    }
    if stack.len() != 1 {
        return Err(Error::source_failed("unbalanced walk: Enter without Leave"));
    }
    #[allow(clippy::unwrap_used)]
    let mut root = stack.pop().unwrap();
    start_small(ctx, &permits, &mut root).await?;
    let (root_id, _) = finish_tree(ctx, root.children, "", &mut streams).await?;
    // Directories finish in the order their entries do; list streams by name.
    streams.sort_by(|a, b| a.name.cmp(&b.name));
    Ok((root_id, streams))
}

/// `item` made to fit the repository's format version ([`fit_version`]);
/// `None` for a leaf left out.
fn fit_item(
    repo: &IndexedRepository,
    ctx: &Ctx,
    item: Item,
    opts: &BackupOptions,
) -> Result<Option<Item>> {
    Ok(Some(match item {
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
                return Ok(None);
            }
            Item::Leaf {
                node,
                content,
                on_error,
            }
        }
        other => other,
    }))
}

/// Starts reading the small files `frame` has gathered.
async fn start_small(ctx: &Arc<Ctx>, permits: &ReadPermits, frame: &mut Frame) -> Result<()> {
    if let Some(p) = frame.small.start(ctx, permits).await? {
        frame.children.push(p);
    }
    Ok(())
}

/// Enters the directory `node`, with its tree in the parent snapshot when
/// that is in the repository.
async fn enter_dir(
    repo: &IndexedRepository,
    stack: &mut Vec<Frame>,
    path: &mut Vec<FsName>,
    node: Node,
) -> Result<()> {
    let top = stack
        .last()
        .ok_or_else(|| Error::source_failed("unbalanced walk"))?;
    let parent_tree = match top.parent_tree.as_ref().and_then(|t| t.find(&node.name)) {
        Some(Node {
            kind: NodeKind::Dir,
            subtree: Some(sub),
            ..
        }) if repo.has_tree(sub) => Some(repo.load_tree(sub).await?),
        _ => None,
    };
    path.push(node.name.clone());
    stack.push(Frame {
        node: Some(node),
        children: Vec::new(),
        parent_tree,
        small: SmallFiles::default(),
    });
    Ok(())
}

/// Leaves the innermost directory: it becomes an entry of the one around
/// it, finished now when its entries are all read, or open until they are.
async fn leave_dir(
    ctx: &Ctx,
    stack: &mut Vec<Frame>,
    path: &mut Vec<FsName>,
    streams: &mut Vec<StreamSummary>,
) -> Result<()> {
    if stack.len() < 2 {
        return Err(Error::source_failed("unbalanced walk: Leave without Enter"));
    }
    #[allow(clippy::unwrap_used)]
    let mut frame = stack.pop().unwrap();
    let dir_path = path_string(path);
    path.pop();
    let node = frame
        .node
        .ok_or_else(|| Error::source_failed("directory without node"))?;
    // A directory whose entries are all read is finished now (its
    // nodes leave memory); otherwise later, so that the walk does
    // not wait for its slowest entry.
    let pending = if settle(ctx, &mut frame.children, streams).await? {
        Pending::Ready(close_dir(ctx, node, frame.children, &dir_path, streams).await?)
    } else {
        Pending::Dir(Box::new(OpenDir {
            node,
            path: dir_path,
            children: frame.children,
        }))
    };
    #[allow(clippy::unwrap_used)]
    stack.last_mut().unwrap().children.push(pending);
    Ok(())
}

/// The entry whose content the leaf `node` takes instead of being read:
/// its unchanged entry in the parent snapshot, or itself when the source
/// took its content from the parent (`no_content`: the source gave none
/// to read).
fn reused_entry(
    repo: &IndexedRepository,
    source: &dyn Source,
    top: &Frame,
    node: &Node,
    no_content: bool,
    path: &[FsName],
) -> Result<Option<Node>> {
    // Decided here, where the source is at hand (it is not
    // held across the read's start).
    let reuse = (node.kind == NodeKind::File)
        .then(|| top.parent_tree.as_ref().and_then(|t| t.find(&node.name)))
        .flatten()
        .filter(|old| source.unchanged(node, old) && content_present(repo.index(), old))
        .cloned();
    let preset = !(node.content.is_empty() && node.content_lists.is_empty());
    if no_content
        && reuse.is_none()
        && matches!(node.kind, NodeKind::File | NodeKind::Stream)
        && preset
    {
        // The source took this content from the parent itself (a base
        // that a page delta beside it completes), or from the snapshot
        // it rewrites.
        if !content_present(repo.index(), node) {
            return Err(Error::source_failed(format!(
                "`{}/{}`: the content it takes from the parent snapshot is not in the repository (run `backup check`)",
                path_string(path),
                node.name
            )));
        }
        return Ok(Some(node.clone()));
    }
    Ok(reuse)
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
