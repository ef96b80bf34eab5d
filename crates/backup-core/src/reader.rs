//! Read access to one snapshot, for restore targets and exports.
//!
//! A [`SnapshotReader`] is all a target sees of the repository: the
//! snapshot's manifest, its directories by name ([`Dir`]), the content of
//! an entry as an ordered stream of verified chunks fetched ahead in
//! parallel, and the whole-tree restore of [`crate::restorer`] for targets
//! that write files. Trees, the index and packs stay behind it.

use std::sync::Arc;

use bytes::Bytes;
use futures::stream::{BoxStream, StreamExt};

use crate::error::{Error, Result};
use crate::filter::PathFilter;
use crate::id::Id;
use crate::progress::Progress;
use crate::repo::IndexedRepository;
use crate::restorer::{self, RestoreStats, TreeWriter};
use crate::sink::FileKind;
use crate::snapshot::{Snapshot, SnapshotEntry};
use crate::tree::{FsName, Node, NodeKind, Tree};

/// An entry's content read from a blocking thread
/// ([`SnapshotReader::blocking_content`]).
pub struct ContentReader {
    handle: tokio::runtime::Handle,
    stream: BoxStream<'static, Result<Bytes>>,
    pending: Bytes,
    failed: Option<Error>,
    read: u64,
}

impl std::fmt::Debug for ContentReader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ContentReader")
            .field("read", &self.read)
            .finish_non_exhaustive()
    }
}

impl ContentReader {
    /// Bytes read so far.
    pub fn bytes_read(&self) -> u64 {
        self.read
    }

    /// The typed error behind the I/O error a read returned (damaged data,
    /// a storage error), once; `None` when reading did not fail.
    pub fn take_error(&mut self) -> Option<Error> {
        self.failed.take()
    }
}

impl std::io::Read for ContentReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pending.is_empty() {
            match self.handle.block_on(self.stream.next()) {
                Some(Ok(chunk)) => self.pending = chunk,
                Some(Err(e)) => {
                    let msg = e.to_string();
                    self.failed = Some(e);
                    return Err(std::io::Error::other(msg));
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.pending.len());
        buf[..n].copy_from_slice(&self.pending.split_to(n));
        self.read += n as u64;
        Ok(n)
    }
}

/// One snapshot of an indexed repository, opened for reading. Cheap to
/// clone.
#[derive(Debug, Clone)]
pub struct SnapshotReader {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    repo: IndexedRepository,
    entry: SnapshotEntry,
}

impl SnapshotReader {
    /// Opens `entry` of `repo` for reading.
    pub fn new(repo: IndexedRepository, entry: SnapshotEntry) -> Self {
        SnapshotReader {
            inner: Arc::new(Inner { repo, entry }),
        }
    }

    /// The snapshot's id.
    pub fn id(&self) -> Id {
        self.inner.entry.id
    }

    /// The snapshot's manifest.
    pub fn snapshot(&self) -> &Snapshot {
        &self.inner.entry.snapshot
    }

    /// The snapshot with its id.
    pub fn entry(&self) -> &SnapshotEntry {
        &self.inner.entry
    }

    /// The repository the snapshot is in (for targets that also read what
    /// was captured beside it: WAL, oplog).
    pub fn repository(&self) -> &IndexedRepository {
        &self.inner.repo
    }

    /// A [`Error::Corrupt`] about this snapshot, for a target that finds
    /// what it needs missing or malformed.
    pub fn damaged(&self, reason: impl std::fmt::Display) -> Error {
        Error::corrupt(FileKind::Snapshot, self.id().short(), reason)
    }

    /// The snapshot's top-level directory.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the tree is missing or damaged; storage
    /// errors.
    pub async fn root(&self) -> Result<Dir> {
        let tree = self.inner.repo.load_tree(&self.snapshot().tree).await?;
        Ok(Dir {
            reader: self.clone(),
            tree,
        })
    }

    /// The directory at `path` (names from the root), `None` when some part
    /// of it does not exist or is not a directory.
    ///
    /// # Errors
    ///
    /// As [`SnapshotReader::root`].
    pub async fn dir(&self, path: &[&str]) -> Result<Option<Dir>> {
        let mut dir = self.root().await?;
        for name in path {
            match dir.dir(name).await? {
                Some(d) => dir = d,
                None => return Ok(None),
            }
        }
        Ok(Some(dir))
    }

    /// The directory a [`NodeKind::Dir`] entry names.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the entry is not a directory or its tree is
    /// missing or damaged; storage errors.
    pub async fn open_dir(&self, node: &Node) -> Result<Dir> {
        match (&node.kind, &node.subtree) {
            (NodeKind::Dir, Some(id)) => Ok(Dir {
                reader: self.clone(),
                tree: self.inner.repo.load_tree(id).await?,
            }),
            _ => Err(self.damaged(format!("`{}` is not a directory", node.name))),
        }
    }

    /// The content of a file or stream entry as an ordered stream of
    /// verified chunks, fetched ahead in parallel; memory stays bounded
    /// whatever the entry's size.
    pub fn content(&self, node: &Node) -> BoxStream<'static, Result<Bytes>> {
        restorer::content_stream(&self.inner.repo, node)
    }

    /// [`SnapshotReader::content`], with blob ids checked as `ids` says
    /// (see [`crate::pack::IdCheck`]: for readers that check what they
    /// assemble end to end) and at most `ahead` fetches in flight (see
    /// [`restorer::content_stream_with`]).
    pub fn content_with(
        &self,
        node: &Node,
        ids: crate::pack::IdCheck,
        ahead: usize,
    ) -> BoxStream<'static, Result<Bytes>> {
        restorer::content_stream_with(&self.inner.repo, node, ids, ahead)
    }

    /// The content of a file or stream entry as [`std::io::Read`], for a
    /// blocking thread ([`tokio::task::spawn_blocking`]) of the runtime
    /// this is called on: chunks are fetched as [`SnapshotReader::content`]
    /// fetches them. Damaged data and storage errors end the read with an
    /// I/O error carrying their message; [`ContentReader::take_error`]
    /// gives back the typed error. Reading it on a runtime thread would
    /// block that thread: don't.
    ///
    /// # Panics
    ///
    /// When called outside a Tokio runtime.
    pub fn blocking_content(&self, node: &Node) -> ContentReader {
        ContentReader {
            handle: tokio::runtime::Handle::current(),
            stream: self.content(node),
            pending: Bytes::new(),
            failed: None,
            read: 0,
        }
    }

    /// The whole content of a (small) file or stream entry.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] for damaged data; storage errors.
    pub async fn read_all(&self, node: &Node) -> Result<Vec<u8>> {
        let mut out = Vec::with_capacity(usize::try_from(node.size).unwrap_or(0));
        let mut stream = self.content(node);
        while let Some(chunk) = stream.next().await {
            out.extend_from_slice(&chunk?);
        }
        Ok(out)
    }

    /// The ids of the data blobs of a file or stream entry, in order (for
    /// comparing restored content chunk by chunk).
    ///
    /// # Errors
    ///
    /// As [`SnapshotReader::read_all`].
    pub async fn content_ids(&self, node: &Node) -> Result<Vec<Id>> {
        self.inner.repo.content_ids(node).await
    }

    /// The chunker a comparison must use to cut local content the way the
    /// backup cut it.
    pub fn chunker_params(&self) -> (crate::config::ChunkerParams, u64) {
        (
            self.inner.repo.config().chunker,
            self.inner.repo.key().chunker_seed(),
        )
    }

    /// The keyed id of a chunk of plaintext, as the repository names blobs.
    pub fn blob_id(&self, data: &[u8]) -> Id {
        self.inner.repo.hasher().hash(data)
    }

    /// Restores the entries `filter` selects into `writer`, in order (see
    /// [`restorer::restore_tree`]).
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when data is missing or damaged (the file being
    /// written is aborted), storage errors, and the writer's errors.
    pub async fn restore_tree(
        &self,
        filter: &PathFilter,
        writer: Box<dyn TreeWriter>,
        progress: Arc<dyn Progress>,
    ) -> Result<RestoreStats> {
        restorer::restore_tree(
            &self.inner.repo,
            self.snapshot().tree,
            filter,
            writer,
            progress,
        )
        .await
    }

    /// [`SnapshotReader::restore_tree`] for a writer that checks every file
    /// it assembles end to end: blob ids are checked as `ids` says.
    ///
    /// # Errors
    ///
    /// As [`SnapshotReader::restore_tree`].
    pub async fn restore_tree_with(
        &self,
        filter: &PathFilter,
        writer: Box<dyn TreeWriter>,
        progress: Arc<dyn Progress>,
        ids: crate::pack::IdCheck,
    ) -> Result<RestoreStats> {
        restorer::restore_tree_with(
            &self.inner.repo,
            self.snapshot().tree,
            filter,
            writer,
            progress,
            ids,
        )
        .await
    }

    /// Counts what [`SnapshotReader::restore_tree`] would write, without
    /// reading content.
    ///
    /// # Errors
    ///
    /// Errors loading trees.
    pub async fn plan(&self, filter: &PathFilter) -> Result<RestoreStats> {
        restorer::plan(&self.inner.repo, self.snapshot().tree, filter).await
    }
}

/// One directory of a snapshot: its entries, sorted by name.
#[derive(Debug, Clone)]
pub struct Dir {
    reader: SnapshotReader,
    tree: Tree,
}

impl Dir {
    /// The entries, sorted by name bytes.
    pub fn entries(&self) -> &[Node] {
        &self.tree.nodes
    }

    /// The entry named `name`.
    pub fn get(&self, name: &str) -> Option<&Node> {
        self.tree.find(&FsName::from(name))
    }

    /// The entry named `name`, which must exist, else the snapshot is
    /// reported damaged (`what` says what the entry holds).
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the entry is missing.
    pub fn require(&self, name: &str) -> Result<&Node> {
        self.get(name)
            .ok_or_else(|| self.reader.damaged(format!("`{name}` is missing")))
    }

    /// The subdirectory named `name`; `None` when there is no entry of
    /// that name or it is not a directory.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when its tree is missing or damaged; storage
    /// errors.
    pub async fn dir(&self, name: &str) -> Result<Option<Dir>> {
        match self.get(name) {
            Some(node) if node.kind == NodeKind::Dir => Ok(Some(self.reader.open_dir(node).await?)),
            _ => Ok(None),
        }
    }

    /// The reader this directory belongs to.
    pub fn reader(&self) -> &SnapshotReader {
        &self.reader
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::archiver::{backup, BackupOptions};
    use crate::progress::NoProgress;
    use crate::snapshot::SourceDescriptor;
    use crate::source::{AsyncReader, Content, Item, OnReadError, Source};

    /// A source of `db/t/00000` (a stream) and `top.txt`.
    struct Streams {
        items: std::vec::IntoIter<Item>,
    }

    fn leaf(name: &str, data: &'static [u8]) -> Item {
        let mut node = Node::new(name, NodeKind::Stream);
        node.size = data.len() as u64;
        let reader: AsyncReader = Box::new(std::io::Cursor::new(data));
        Item::Leaf {
            node,
            content: Some(Content::Async(Box::pin(async move { Ok(reader) }))),
            on_error: OnReadError::Fail,
        }
    }

    #[async_trait::async_trait]
    impl Source for Streams {
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
            Ok(serde_json::Value::Null)
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn directories_and_content() {
        let repo = crate::test_support::memory_repo()
            .await
            .load_index()
            .await
            .unwrap();
        let mut source = Streams {
            items: vec![
                Item::Enter(Node::new("db", NodeKind::Dir)),
                Item::Enter(Node::new("t", NodeKind::Dir)),
                leaf("00000", b"rows of t"),
                Item::Leave,
                Item::Leave,
                leaf("top.txt", b"top"),
            ]
            .into_iter(),
        };
        let out = backup(
            &repo,
            &mut source,
            &BackupOptions::default(),
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
        let mut repo = repo;
        repo.set_index((*out.index).clone());
        let entry = repo
            .find_snapshot("latest", &crate::snapshot::SnapshotFilter::default())
            .await
            .unwrap();
        let reader = SnapshotReader::new(repo, entry);
        let root = reader.root().await.unwrap();
        assert_eq!(root.entries().len(), 2);
        assert_eq!(
            reader
                .read_all(root.require("top.txt").unwrap())
                .await
                .unwrap(),
            b"top"
        );
        let t = reader.dir(&["db", "t"]).await.unwrap().unwrap();
        assert_eq!(
            reader.read_all(t.require("00000").unwrap()).await.unwrap(),
            b"rows of t"
        );
        assert!(reader.dir(&["db", "missing"]).await.unwrap().is_none());
        assert!(reader.dir(&["top.txt"]).await.unwrap().is_none());
        let e = t.require("00001").unwrap_err();
        assert!(e.is_corruption(), "{e}");
        assert!(reader
            .open_dir(root.require("top.txt").unwrap())
            .await
            .is_err());
    }
}
