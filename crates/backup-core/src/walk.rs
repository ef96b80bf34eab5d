//! Traversal of snapshot trees, shared by verify, stats and (later) prune.

use std::collections::HashSet;

use crate::error::Result;
use crate::id::Id;
use crate::repo::IndexedRepository;
use crate::tree::{Node, NodeKind};

/// Visits every tree reachable from `roots` once, in depth-first order,
/// calling `visit` with each tree id and its nodes. Trees already in
/// `seen` are skipped (and added as they are visited), so shared
/// directories are read once across snapshots.
///
/// `on_error` receives trees that cannot be loaded; returning `Err` stops
/// the walk, returning `Ok` skips the tree.
///
/// # Errors
///
/// The errors `on_error` or `visit` return.
#[allow(clippy::implicit_hasher)]
pub(crate) async fn walk_trees<F, E>(
    repo: &IndexedRepository,
    roots: impl IntoIterator<Item = Id>,
    seen: &mut HashSet<Id>,
    mut visit: F,
    mut on_error: E,
) -> Result<()>
where
    F: FnMut(&Id, &[Node]) -> Result<()>,
    E: FnMut(&Id, crate::Error) -> Result<()>,
{
    let mut stack: Vec<Id> = roots.into_iter().collect();
    stack.reverse();
    while let Some(id) = stack.pop() {
        if !seen.insert(id) {
            continue;
        }
        let tree = match repo.load_tree(&id).await {
            Ok(t) => t,
            Err(e) => {
                on_error(&id, e)?;
                continue;
            }
        };
        visit(&id, &tree.nodes)?;
        for n in tree.nodes.iter().rev() {
            if n.kind == NodeKind::Dir {
                if let Some(sub) = n.subtree {
                    stack.push(sub);
                }
            }
        }
    }
    Ok(())
}
