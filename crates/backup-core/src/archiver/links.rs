//! Hard links: later names of a hard-linked file take the content its
//! first name stored in this run instead of reading it again.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use super::context::Ctx;
use super::dirs::{path_string, Pending};
use crate::error::Error;
use crate::tree::{FsName, Node, NodeKind};

/// What became of a hard-linked file's first name in this run, for its
/// later names; the sender dropped while `Reading` means its read failed.
#[derive(Clone)]
pub(super) enum FirstName {
    Reading,
    Stored(Box<Node>),
    LeftOut,
}

/// Where later names of a hard-linked file learn of its first name.
pub(super) type LinkedContent = tokio::sync::watch::Receiver<FirstName>;

/// The (device, inode) of a regular file with more than one name.
pub(super) fn link_group(node: &Node) -> Option<(u64, u64)> {
    match (node.kind, node.links, node.device, node.inode) {
        (NodeKind::File, Some(l), Some(d), Some(i)) if l > 1 => Some((d, i)),
        _ => None,
    }
}

/// A later name of a hard-linked file: its node, with the content the
/// first name stored once that is known.
pub(super) fn later_link(
    ctx: &Arc<Ctx>,
    node: Node,
    mut first: LinkedContent,
    path: &[FsName],
) -> Pending {
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
