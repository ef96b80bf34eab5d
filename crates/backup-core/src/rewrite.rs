//! Rewriting a stored snapshot without some of what it holds (`backup
//! rewrite`: a leaked secret, a person's rows).
//!
//! [`RewriteSource`] serves a stored snapshot as a [`Source`] through an
//! [`Edits`]: entries the edits drop are left out (a directory with
//! everything under it), contents the edits filter are read through the
//! filter, and every other file and stream keeps its stored content
//! unread (the archiver takes a leaf that lists its blobs as it is). The
//! ordinary backup pipeline ([`crate::archiver::backup`] with
//! [`BackupOptions::rewrite_of`]) stores what changed and writes the new
//! manifest: the original's fields but for its tree, streams, metadata
//! (from [`Edits::metadata`]), counts and `rewritten`. Deleting the
//! original manifest is the caller's; the erased data leaves the
//! repository when `prune` removes the blobs no snapshot references.

use std::sync::Arc;

use async_trait::async_trait;

use crate::archiver::{backup, BackupOptions, BackupOutcome};
use crate::error::{Error, Result};
use crate::progress::Progress;
use crate::reader::{ContentReader, SnapshotReader};
use crate::repo::IndexedRepository;
use crate::snapshot::{Rewritten, SnapshotEntry, SourceDescriptor};
use crate::source::{BlockingReader, Content, Item, OnReadError, Source};
use crate::tree::{Node, NodeKind};

/// A content read through a filter: the stored content in, what the
/// rewritten snapshot holds out. Runs on a blocking thread.
pub type ContentFilter = Box<dyn FnOnce(ContentReader) -> BlockingReader + Send>;

/// What a rewrite changes in one snapshot.
///
/// Paths are the entries' components joined by `/`, without a leading
/// `/` (`tables/sales/customers/00000`, `config/secret.env`).
pub trait Edits: Send + Sync {
    /// Whether the entry at `path` is left out (a directory with
    /// everything under it).
    fn drops(&self, path: &str, node: &Node) -> bool;

    /// A filter for the content of the file or stream at `path`, or
    /// `None` to keep the stored content as it is (it is not read).
    fn filter(&self, path: &str, node: &Node) -> Option<ContentFilter>;

    /// The rewritten snapshot's metadata, from the original's; called
    /// after every filtered content was read to its end.
    ///
    /// # Errors
    ///
    /// Metadata the edits cannot update (damage): the rewrite fails and
    /// writes no manifest.
    fn metadata(&self, original: &serde_json::Value) -> Result<serde_json::Value>;
}

/// Serves a stored snapshot as a [`Source`], changed by [`Edits`].
pub struct RewriteSource {
    reader: SnapshotReader,
    edits: Arc<dyn Edits>,
    stack: Vec<std::vec::IntoIter<Node>>,
    path: Vec<String>,
    started: bool,
    dropped: Vec<String>,
}

impl RewriteSource {
    /// A source replaying the snapshot `reader` reads, changed by `edits`.
    pub fn new(reader: SnapshotReader, edits: Arc<dyn Edits>) -> Self {
        RewriteSource {
            reader,
            edits,
            stack: Vec::new(),
            path: Vec::new(),
            started: false,
            dropped: Vec::new(),
        }
    }

    /// The paths left out so far, in walk order.
    pub fn dropped(&self) -> &[String] {
        &self.dropped
    }

    fn path_of(&self, node: &Node) -> String {
        let mut p = self.path.join("/");
        if !p.is_empty() {
            p.push('/');
        }
        p.push_str(&node.name.display());
        p
    }
}

#[async_trait]
impl Source for RewriteSource {
    fn descriptor(&self) -> SourceDescriptor {
        self.reader.snapshot().source.clone()
    }

    async fn next(&mut self) -> Result<Option<Item>> {
        if !self.started {
            self.started = true;
            let root = self
                .reader
                .repository()
                .load_tree(&self.reader.snapshot().tree)
                .await?;
            self.stack.push(root.nodes.into_iter());
        }
        loop {
            let Some(top) = self.stack.last_mut() else {
                return Ok(None);
            };
            let Some(node) = top.next() else {
                self.stack.pop();
                if self.stack.is_empty() {
                    return Ok(None);
                }
                self.path.pop();
                return Ok(Some(Item::Leave));
            };
            let path = self.path_of(&node);
            if self.edits.drops(&path, &node) {
                self.dropped.push(path);
                continue;
            }
            match node.kind {
                NodeKind::Dir => {
                    let sub = node.subtree.ok_or_else(|| {
                        self.reader
                            .damaged(format!("directory `{path}` without a subtree"))
                    })?;
                    let tree = self.reader.repository().load_tree(&sub).await?;
                    self.stack.push(tree.nodes.into_iter());
                    self.path.push(node.name.display().into_owned());
                    let mut bare = node;
                    bare.subtree = None;
                    return Ok(Some(Item::Enter(bare)));
                }
                NodeKind::File | NodeKind::Stream => {
                    if let Some(filter) = self.edits.filter(&path, &node) {
                        let content = self.reader.blocking_content(&node);
                        let mut bare = node;
                        bare.content.clear();
                        bare.content_lists.clear();
                        bare.sha256 = None;
                        return Ok(Some(Item::Leaf {
                            node: bare,
                            content: Some(Content::Blocking(Box::new(move || Ok(filter(content))))),
                            on_error: OnReadError::Fail,
                        }));
                    }
                    if !node.has_content() {
                        // An empty file: nothing to take or read.
                        return Ok(Some(Item::Leaf {
                            node,
                            content: Some(Content::Blocking(Box::new(|| {
                                Ok(Box::new(std::io::empty()) as BlockingReader)
                            }))),
                            on_error: OnReadError::Fail,
                        }));
                    }
                    return Ok(Some(Item::Leaf {
                        node,
                        content: None,
                        on_error: OnReadError::Fail,
                    }));
                }
                NodeKind::Symlink | NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev => {
                    return Ok(Some(Item::Leaf {
                        node,
                        content: None,
                        on_error: OnReadError::Fail,
                    }));
                }
            }
        }
    }

    async fn finish(&mut self) -> Result<serde_json::Value> {
        self.edits.metadata(&self.reader.snapshot().metadata)
    }
}

/// What [`rewrite`] made of one snapshot.
#[derive(Debug, Clone)]
pub struct RewriteOutcome {
    /// The backup run: `id` is the new snapshot's (`None` for a dry run;
    /// the original's when nothing changed), `snapshot` its manifest.
    pub outcome: BackupOutcome,
    /// Whether anything changed (a new manifest was, or in a dry run
    /// would be, written).
    pub changed: bool,
    /// The paths left out.
    pub dropped: Vec<String>,
}

/// Rewrites `entry` through `edits` into a new snapshot carrying
/// `rewritten`, storing only content that changed. The original
/// manifest stays: the caller deletes it once the new one is written.
/// With `dry_run` every filtered content is still read (to count what
/// would go) but nothing is written.
///
/// The caller holds a shared repository lock.
///
/// # Errors
///
/// Damage in the snapshot, a filter's error (its content is not what the
/// edits expect), storage errors: no manifest is written then.
pub async fn rewrite(
    repo: &IndexedRepository,
    entry: &SnapshotEntry,
    edits: Arc<dyn Edits>,
    rewritten: Rewritten,
    dry_run: bool,
    progress: Arc<dyn Progress>,
) -> Result<RewriteOutcome> {
    let reader = SnapshotReader::new(repo.clone(), entry.clone());
    let mut source = RewriteSource::new(reader, edits);
    let opts = BackupOptions {
        dry_run,
        rewrite_of: Some((entry.clone(), rewritten)),
        ..BackupOptions::default()
    };
    let outcome = Box::pin(backup(repo, &mut source, &opts, progress)).await?;
    let changed = outcome.id != Some(entry.id);
    if changed && outcome.snapshot.rewritten.is_none() {
        return Err(Error::Config(
            "internal: a rewritten manifest without its `rewritten` field".to_owned(),
        ));
    }
    Ok(RewriteOutcome {
        outcome,
        changed,
        dropped: source.dropped,
    })
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;
    use crate::progress::NoProgress;
    use crate::snapshot::SnapshotFilter;
    use crate::source::AsyncReader;

    /// A source of `db/t/00000` (a stream of three lines), `db/u/00000`
    /// (a stream), `keep.txt` and `secret.txt` (files).
    struct Fixture {
        items: std::vec::IntoIter<Item>,
    }

    fn leaf(name: &str, kind: NodeKind, data: &'static [u8]) -> Item {
        let mut node = Node::new(name, kind);
        node.size = data.len() as u64;
        node.mtime_ns = Some(1);
        let reader: AsyncReader = Box::new(std::io::Cursor::new(data));
        Item::Leaf {
            node,
            content: Some(Content::Async(Box::pin(async move { Ok(reader) }))),
            on_error: OnReadError::Fail,
        }
    }

    #[async_trait]
    impl Source for Fixture {
        fn descriptor(&self) -> SourceDescriptor {
            SourceDescriptor {
                kind: "test".into(),
                url: "test://".into(),
            }
        }
        async fn next(&mut self) -> Result<Option<Item>> {
            Ok(self.items.next())
        }
        async fn finish(&mut self) -> Result<serde_json::Value> {
            Ok(serde_json::json!({"rows": 3}))
        }
    }

    /// Drops `secret.txt`, removes the line `2` from `db/t/00000`.
    struct Erase;

    /// Changes nothing.
    struct Nothing;
    impl Edits for Nothing {
        fn drops(&self, _: &str, _: &Node) -> bool {
            false
        }
        fn filter(&self, _: &str, _: &Node) -> Option<ContentFilter> {
            None
        }
        fn metadata(&self, original: &serde_json::Value) -> Result<serde_json::Value> {
            Ok(original.clone())
        }
    }

    impl Edits for Erase {
        fn drops(&self, path: &str, _node: &Node) -> bool {
            path == "secret.txt"
        }
        fn filter(&self, path: &str, _node: &Node) -> Option<ContentFilter> {
            (path == "db/t/00000").then(|| {
                Box::new(|mut content: ContentReader| {
                    let mut all = String::new();
                    content.read_to_string(&mut all).unwrap();
                    let kept: String = all
                        .lines()
                        .filter(|l| *l != "2")
                        .flat_map(|l| [l, "\n"])
                        .collect();
                    Box::new(std::io::Cursor::new(kept.into_bytes())) as BlockingReader
                }) as ContentFilter
            })
        }
        fn metadata(&self, _original: &serde_json::Value) -> Result<serde_json::Value> {
            Ok(serde_json::json!({"rows": 2}))
        }
    }

    fn rewritten(from: crate::Id) -> Rewritten {
        Rewritten {
            from,
            time: chrono::Utc::now(),
            user: "u".into(),
            host: "h".into(),
            reason: "test".into(),
            changes: vec!["exclude secret.txt".into()],
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rewrites_keep_the_rest_unread_and_the_manifest_fields() {
        let mut repo = crate::test_support::memory_repo()
            .await
            .load_index()
            .await
            .unwrap();
        let mut source = Fixture {
            items: vec![
                Item::Enter(Node::new("db", NodeKind::Dir)),
                Item::Enter(Node::new("t", NodeKind::Dir)),
                leaf("00000", NodeKind::Stream, b"1\n2\n3\n"),
                Item::Leave,
                Item::Enter(Node::new("u", NodeKind::Dir)),
                leaf("00000", NodeKind::Stream, b"other\n"),
                Item::Leave,
                Item::Leave,
                leaf("keep.txt", NodeKind::File, b"keep"),
                leaf("secret.txt", NodeKind::File, b"s3cr3t"),
            ]
            .into_iter(),
        };
        let opts = BackupOptions {
            tags: vec!["daily".into()],
            ..BackupOptions::default()
        };
        let out = backup(&repo, &mut source, &opts, Arc::new(NoProgress))
            .await
            .unwrap();
        repo.set_index((*out.index).clone());
        let entry = repo
            .find_snapshot("latest", &SnapshotFilter::default())
            .await
            .unwrap();

        // A dry run writes nothing.
        let dry = rewrite(
            &repo,
            &entry,
            Arc::new(Erase),
            rewritten(entry.id),
            true,
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
        assert!(dry.changed && dry.outcome.id.is_none());
        assert_eq!(repo.snapshots().await.unwrap().0.len(), 1);

        let done = rewrite(
            &repo,
            &entry,
            Arc::new(Erase),
            rewritten(entry.id),
            false,
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
        assert!(done.changed);
        assert_eq!(done.dropped, ["secret.txt"]);
        let new = done.outcome.snapshot.clone();
        assert_eq!(new.time, entry.snapshot.time);
        assert_eq!(new.tags, ["daily"]);
        assert_eq!(new.metadata, serde_json::json!({"rows": 2}));
        assert_eq!(new.rewritten.as_ref().unwrap().from, entry.id);
        assert_eq!(new.streams.len(), 2);
        repo.set_index((*done.outcome.index).clone());
        let reader = SnapshotReader::new(
            repo.clone(),
            SnapshotEntry {
                id: done.outcome.id.unwrap(),
                snapshot: new,
            },
        );
        let root = reader.root().await.unwrap();
        assert!(root.get("secret.txt").is_none());
        let old_reader = SnapshotReader::new(repo.clone(), entry.clone());
        let old_root = old_reader.root().await.unwrap();
        // Unchanged entries keep their stored content.
        assert_eq!(
            root.require("keep.txt").unwrap().content,
            old_root.require("keep.txt").unwrap().content
        );
        let u = reader.dir(&["db", "u"]).await.unwrap().unwrap();
        let old_u = old_reader.dir(&["db", "u"]).await.unwrap().unwrap();
        assert_eq!(u.require("00000").unwrap(), old_u.require("00000").unwrap());
        let t = reader.dir(&["db", "t"]).await.unwrap().unwrap();
        let node = t.require("00000").unwrap();
        assert_eq!(reader.read_all(node).await.unwrap(), b"1\n3\n");
        assert_eq!(node.size, 4);

        // Rewriting the result again changes nothing.
        let again = rewrite(
            &repo,
            reader.entry(),
            Arc::new(Nothing),
            rewritten(reader.id()),
            false,
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
        assert!(!again.changed);
        assert_eq!(again.outcome.id, Some(reader.id()));
    }
}
