//! Copying snapshots between repositories.
//!
//! A copy replays a snapshot of one repository as a backup into another:
//! [`SnapshotSource`] walks the snapshot's trees and serves each file and
//! stream from the source repository, and the ordinary backup pipeline
//! chunks, deduplicates and encrypts it for the destination. Destinations
//! may therefore use other keys and chunker settings. Only data the
//! destination lacks is uploaded; and when the destination already holds a
//! copy of an earlier snapshot of the same source, files whose metadata is
//! unchanged are taken from it without being read from the source at all.
//!
//! Captured change streams (WAL, oplog) are copied piece by piece with
//! [`copy_captures`], so that a copy keeps the point-in-time windows of its
//! snapshots.

use std::collections::HashSet;

use async_trait::async_trait;
use futures::stream::{self, StreamExt as _};
use futures::TryStreamExt;
use serde::Serialize;

use crate::capture::{CaptureName, CaptureRecord, PieceInfo};
use crate::repo::Repository;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::IndexedRepository;
use crate::restorer::content_stream;
use crate::snapshot::{SnapshotEntry, SourceDescriptor};
use crate::source::{AsyncReader, Content, Item, OnReadError, Source};
use crate::tree::{Node, NodeKind};

/// Serves a stored snapshot as a [`Source`].
pub struct SnapshotSource {
    repo: IndexedRepository,
    entry: SnapshotEntry,
    stack: Vec<std::vec::IntoIter<Node>>,
    started: bool,
}

impl SnapshotSource {
    /// A source replaying `entry` from `repo`.
    pub fn new(repo: IndexedRepository, entry: SnapshotEntry) -> Self {
        SnapshotSource {
            repo,
            entry,
            stack: Vec::new(),
            started: false,
        }
    }
}

/// A node as a source would describe it: metadata without stored content.
fn bare(node: &Node) -> Node {
    let mut n = node.clone();
    n.content.clear();
    n.content_lists.clear();
    n.subtree = None;
    n.sha256 = None;
    n
}

#[async_trait]
impl Source for SnapshotSource {
    fn descriptor(&self) -> SourceDescriptor {
        self.entry.snapshot.source.clone()
    }

    async fn next(&mut self) -> Result<Option<Item>> {
        if !self.started {
            self.started = true;
            let root = self.repo.load_tree(&self.entry.snapshot.tree).await?;
            self.stack.push(root.nodes.into_iter());
        }
        {
            let Some(top) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some(node) = top.next() else {
                self.stack.pop();
                if self.stack.is_empty() {
                    return Ok(None);
                }
                return Ok(Some(Item::Leave));
            };
            match node.kind {
                NodeKind::Dir => {
                    let sub = node.subtree.ok_or_else(|| {
                        Error::corrupt(
                            crate::FileKind::Pack,
                            format!("directory {}", node.name),
                            "no subtree",
                        )
                    })?;
                    let tree = self.repo.load_tree(&sub).await?;
                    self.stack.push(tree.nodes.into_iter());
                    return Ok(Some(Item::Enter(bare(&node))));
                }
                NodeKind::Symlink | NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev => {
                    return Ok(Some(Item::Leaf {
                        node: bare(&node),
                        content: None,
                        on_error: OnReadError::Fail,
                    }))
                }
                NodeKind::File | NodeKind::Stream => {
                    let repo = self.repo.clone();
                    let stored = node.clone();
                    let content = Content::Async(Box::pin(async move {
                        let stream = content_stream(&repo, &stored).map_err(std::io::Error::other);
                        Ok(Box::new(tokio_util::io::StreamReader::new(stream)) as AsyncReader)
                    }));
                    return Ok(Some(Item::Leaf {
                        node: bare(&node),
                        content: Some(content),
                        on_error: OnReadError::Fail,
                    }));
                }
            }
        }
    }

    async fn finish(&mut self) -> Result<serde_json::Value> {
        Ok(self.entry.snapshot.metadata.clone())
    }
}

/// Which snapshots of `source` still need copying: those no destination
/// snapshot records as their origin (`copy_of`), and that are not
/// themselves copies of a snapshot the destination already holds.
pub fn not_yet_copied(
    wanted: Vec<SnapshotEntry>,
    destination: &[SnapshotEntry],
) -> Vec<SnapshotEntry> {
    let have: HashSet<Id> = destination
        .iter()
        .flat_map(|d| [Some(d.id), d.snapshot.copy_of])
        .flatten()
        .collect();
    wanted
        .into_iter()
        .filter(|s| !have.contains(&s.id) && s.snapshot.copy_of.is_none_or(|o| !have.contains(&o)))
        .collect()
}

/// What [`copy_captures`] did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct CapturesCopied {
    /// Pieces of data copied.
    pub pieces: u64,
    /// Gap records copied.
    pub gaps: u64,
    /// Bytes of the copied pieces.
    pub bytes: u64,
    /// Selected records the destination held already.
    pub present: u64,
}

/// Copies the capture records of `src` that `select` picks into `dst`,
/// each as a piece (or gap record) of the same kind, identity, range and
/// times: the destination's stream ids are its own (they are keyed by its
/// key), the bytes are read, checked against the record's SHA-256 and
/// stored again. Records whose kind, identity and range the destination
/// already holds are skipped, so a copy is incremental, and one that is
/// interrupted is finished by the next. Pieces a receiver stores while
/// the copy runs are taken by the next copy. Up to 4 pieces are in flight.
///
/// # Errors
///
/// An unreadable record in `src` (damage: nothing is guessed); storage
/// and lock errors (pieces copied before stay).
pub async fn copy_captures(
    src: &Repository,
    dst: &Repository,
    select: impl Fn(&CaptureRecord) -> bool,
    lock_wait: std::time::Duration,
) -> Result<CapturesCopied> {
    let (records, bad) = src.capture_records().await?;
    if let Some((name, e)) = bad.into_iter().next() {
        return Err(Error::corrupt(
            crate::FileKind::Capture,
            name.file_name(),
            format!("the capture record cannot be read, so it cannot be copied: {e}"),
        ));
    }
    let have: HashSet<(String, String, String)> = dst
        .captures()
        .await?
        .into_iter()
        .map(|n: CaptureName| (n.stream, n.first, n.last))
        .collect();
    let mut done = CapturesCopied::default();
    let mut todo = Vec::new();
    for (_, record) in records {
        if !select(&record) {
            continue;
        }
        let stream = dst.capture_stream(&record.kind, &record.identity);
        if have.contains(&(stream.clone(), record.first.clone(), record.last.clone())) {
            done.present += 1;
            continue;
        }
        todo.push((stream, record));
    }
    let copied: Vec<Result<(bool, u64)>> = stream::iter(todo)
        .map(|(stream, record)| async move {
            let info = PieceInfo {
                stream,
                kind: record.kind.clone(),
                source: record.source.clone(),
                identity: record.identity.clone(),
                first: record.first.clone(),
                last: record.last.clone(),
                time_first: record.time_first,
                time_last: record.time_last,
                details: record.details.clone(),
            };
            if let Some(reason) = &record.gap {
                dst.put_capture_gap(info, reason, lock_wait).await?;
                Ok((true, 0))
            } else {
                let data = src.read_capture(&record).await?;
                dst.put_capture(info, &data, lock_wait).await?;
                Ok((false, data.len() as u64))
            }
        })
        .buffer_unordered(4)
        .collect()
        .await;
    for r in copied {
        let (gap, bytes) = r?;
        if gap {
            done.gaps += 1;
        } else {
            done.pieces += 1;
            done.bytes += bytes;
        }
    }
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(n: u8, copy_of: Option<u8>) -> SnapshotEntry {
        let mut snapshot = crate::test_support::manifest("2024-01-01T00:00:00Z", "/x");
        snapshot.copy_of = copy_of.map(|c| Id([c; 32]));
        SnapshotEntry {
            id: Id([n; 32]),
            snapshot,
        }
    }

    #[test]
    fn copies_are_made_once_in_either_direction() {
        // Source: 1, 2, and 3 (itself a copy of 9).
        let wanted = vec![entry(1, None), entry(2, None), entry(3, Some(9))];
        // Destination: a copy of 1 (as 7), and 9 itself.
        let dest = vec![entry(7, Some(1)), entry(9, None)];
        let todo: Vec<u8> = not_yet_copied(wanted, &dest)
            .iter()
            .map(|e| e.id.0[0])
            .collect();
        assert_eq!(todo, [2]);
    }
}
