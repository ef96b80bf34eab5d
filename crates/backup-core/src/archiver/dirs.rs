//! Directories: entries still being read ([`Pending`]), directories the
//! walk has left before their entries were read ([`OpenDir`]), and
//! finishing a directory into a stored tree.

use std::path::PathBuf;
use std::sync::atomic::Ordering;

use super::context::Ctx;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::pack::BlobType;
use crate::snapshot::StreamSummary;
use crate::tree::{FsName, Node, NodeKind, Tree};

/// An entry of a directory: its node, the read that will give it, or a
/// directory of its own still open.
#[allow(clippy::large_enum_variant)] // Ready nodes are the common case; boxing them costs more.
pub(super) enum Pending {
    Ready(Node),
    Task(String, tokio::task::JoinHandle<Result<Option<Node>>>),
    /// Small files read together (labelled by the first one's path): the
    /// nodes of those not left out.
    Group(String, tokio::task::JoinHandle<Result<Vec<Node>>>),
    /// A directory the walk has left while some of its entries were still
    /// being read: it is finished once they are, so that the walk goes on
    /// to start the next ones (a database source's next table) meanwhile.
    Dir(Box<OpenDir>),
}

/// A directory the walk has left, with its entries.
pub(super) struct OpenDir {
    pub(super) node: Node,
    pub(super) path: String,
    pub(super) children: Vec<Pending>,
}

/// `a/b/c`: the path of the directory the walk is in, for messages.
pub(super) fn path_string(path: &[FsName]) -> String {
    path.iter()
        .map(|n| n.display().into_owned())
        .collect::<Vec<_>>()
        .join("/")
}

/// Waits for a directory's entries and stores its tree.
/// Replaces the finished reads among `children` by their nodes (a failed
/// read fails the walk now) and finishes the open directories whose entries
/// are all read. Returns whether every child is ready.
pub(super) fn settle<'a>(
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
                Pending::Group(label, h) if h.is_finished() => {
                    settled.extend(join_read(&label, h).await?.into_iter().map(Pending::Ready));
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
                p @ (Pending::Task(..) | Pending::Group(..)) => {
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

async fn join_read<T>(label: &str, h: tokio::task::JoinHandle<Result<T>>) -> Result<T> {
    h.await.map_err(|e| Error::Generic {
        backend: "reader",
        source: format!("reading {label}: {e}").into(),
    })?
}

/// Finishes a directory: its tree is saved and `node` points at it. Boxed:
/// directories nest.
pub(super) fn close_dir<'a>(
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

pub(super) async fn finish_tree(
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
            Pending::Group(label, h) => nodes.extend(join_read(&label, h).await?),
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
