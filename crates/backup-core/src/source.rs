//! The `Source` trait: a live system turned into a tree of entries.

use std::io::Read;

use async_trait::async_trait;
use futures::future::BoxFuture;
use tokio::io::AsyncRead;

use crate::error::Result;
use crate::reader::SnapshotReader;
use crate::snapshot::SourceDescriptor;
use crate::tree::{Node, NodeKind};

/// A blocking reader of an entry's content.
pub type BlockingReader = Box<dyn Read + Send>;
/// An asynchronous reader of an entry's content.
pub type AsyncReader = Box<dyn AsyncRead + Send + Unpin>;

/// Opens an entry's content again, refreshing its node's metadata (see
/// [`Content::Reopenable`]).
pub type Opener = dyn Fn(&mut Node) -> std::io::Result<BlockingReader> + Send;

/// How to obtain an entry's content. Opening is deferred so that the
/// pipeline opens only what it reads (unchanged files are never opened) and
/// only as many at once as its concurrency allows.
pub enum Content {
    /// Opened and read on a blocking thread (local files).
    Blocking(Box<dyn FnOnce() -> std::io::Result<BlockingReader> + Send>),
    /// Opened and read on a blocking thread, and opened again when the
    /// first read ends with [`ChangedWhileRead`] (a local file written to
    /// while it is backed up): the second read is stored, with a warning
    /// when it changed again. Each open is given the entry's node and
    /// refreshes its metadata (times, size, owner, mode) from the opened
    /// file, so that the stored metadata describes the version read, not
    /// the one seen when the entry was listed.
    Reopenable(Box<Opener>),
    /// Opened and read asynchronously (database streams).
    Async(BoxFuture<'static, Result<AsyncReader>>),
}

impl std::fmt::Debug for Content {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Content::Blocking(_) => f.write_str("Content::Blocking"),
            Content::Reopenable(_) => f.write_str("Content::Reopenable"),
            Content::Async(_) => f.write_str("Content::Async"),
        }
    }
}

/// The error a content reader returns instead of its end when the content
/// changed while it was read (see [`Content::Reopenable`]). Every byte
/// before it was delivered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangedWhileRead;

impl std::fmt::Display for ChangedWhileRead {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("changed while it was read")
    }
}

impl std::error::Error for ChangedWhileRead {}

impl ChangedWhileRead {
    /// The I/O error a reader returns.
    pub fn error() -> std::io::Error {
        std::io::Error::other(ChangedWhileRead)
    }

    /// Whether `e` is (or wraps) that error.
    pub fn is(e: &std::io::Error) -> bool {
        e.get_ref()
            .is_some_and(<dyn std::error::Error + Send + Sync>::is::<ChangedWhileRead>)
    }
}

/// What to do when an entry's content cannot be opened or read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnReadError {
    /// Leave the entry out of the snapshot and record a warning (a local
    /// file that vanished or is unreadable).
    Skip,
    /// Fail the whole backup (a database stream).
    Fail,
}

/// One step of a source's walk, in depth-first order with entries of a
/// directory sorted by name bytes.
#[derive(Debug)]
pub enum Item {
    /// A directory starts; its entries follow until the matching
    /// [`Item::Leave`]. The node carries the directory's metadata.
    Enter(Node),
    /// The current directory ends.
    Leave,
    /// A file, stream or symbolic link. Files and streams carry content,
    /// except a file whose node already lists its content blobs (taken
    /// from the parent snapshot by the source itself): it is kept as
    /// given, and the backup fails when those blobs are not in the
    /// repository.
    Leaf {
        /// Metadata (`subtree` empty; `content` and `content_lists` empty
        /// unless `content` is `None`, see above).
        node: Node,
        /// The content, for files and streams.
        content: Option<Content>,
        /// Behaviour on read errors.
        on_error: OnReadError,
    },
    /// An entry was left out (unreadable directory, special file); the
    /// message is recorded in the snapshot's warnings.
    Warning(String),
    /// Something worth saying that loses nothing (a socket, which belongs
    /// to a running program, was skipped): logged as a warning, not
    /// recorded in the snapshot.
    Note(String),
}

/// How much a source will read, for a progress total.
pub enum SizeHint {
    /// The source cannot tell.
    Unknown,
    /// About this many bytes.
    Bytes(u64),
    /// The total costs a walk of its own (a directory tree): run this on a
    /// blocking thread beside the backup and use its result when it comes.
    Scan(Box<dyn FnOnce() -> u64 + Send>),
}

impl std::fmt::Debug for SizeHint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SizeHint::Unknown => f.write_str("SizeHint::Unknown"),
            SizeHint::Bytes(n) => write!(f, "SizeHint::Bytes({n})"),
            SizeHint::Scan(_) => f.write_str("SizeHint::Scan"),
        }
    }
}

/// A system being backed up.
///
/// # Contract
///
/// - [`Source::next`] yields the walk; a directory's entries come between
///   its [`Item::Enter`] and [`Item::Leave`], sorted by name, names unique.
///   Top-level entries (outside any `Enter`) form the snapshot's root tree.
/// - Content may be opened on other threads, in parallel, after `next` has
///   moved on; up to [`Source::concurrency`] at once.
/// - [`Source::finish`] is called after the walk and after every content
///   reader has been read to the end. It returns source-specific metadata
///   for the manifest, and an error there fails the snapshot (for example a
///   dump tool that exited non-zero).
#[async_trait]
pub trait Source: Send {
    /// Kind and redacted URL, recorded in the manifest.
    fn descriptor(&self) -> SourceDescriptor;

    /// How many contents to read at once.
    fn concurrency(&self) -> usize {
        std::thread::available_parallelism().map_or(2, |n| n.get() + 2)
    }

    /// How much the walk will read, for a progress total; called once,
    /// before the walk. The default is [`SizeHint::Unknown`].
    fn size_hint(&self) -> SizeHint {
        SizeHint::Unknown
    }

    /// Called once before the walk with the snapshot whose unchanged files
    /// the backup takes without reading them (the parent), so that the
    /// source can take what it needs of it: the checksums of files it will
    /// not read, the time the parent was taken. The default does nothing.
    ///
    /// # Errors
    ///
    /// Errors reading the parent fail the backup.
    async fn set_parent(&mut self, parent: &SnapshotReader) -> Result<()> {
        let _ = parent;
        Ok(())
    }

    /// Whether a file whose node is `new` now may take the content of its
    /// entry `old` in the parent without being read. The default is
    /// [`unchanged`]: same size, modification time, change time and
    /// inode.
    fn unchanged(&self, new: &Node, old: &Node) -> bool {
        unchanged(new, old)
    }

    /// How the archiver cuts this source's contents into chunks. The
    /// default is content-defined; a source whose files are changed in
    /// place and never shift (a database's page files) may ask for fixed
    /// pieces.
    fn chunking(&self) -> crate::chunker::Chunking {
        crate::chunker::Chunking::ContentDefined
    }

    /// The next item of the walk, `None` at the end.
    async fn next(&mut self) -> Result<Option<Item>>;

    /// Completes the source and returns its metadata.
    async fn finish(&mut self) -> Result<serde_json::Value>;
}

/// Whether a file's metadata shows it unchanged since the parent snapshot:
/// both are files with a modification time, and size, modification time,
/// change time and inode are equal.
pub fn unchanged(new: &Node, old: &Node) -> bool {
    old.kind == NodeKind::File
        && new.mtime_ns.is_some()
        && new.size == old.size
        && new.mtime_ns == old.mtime_ns
        && new.ctime_ns == old.ctime_ns
        && new.inode == old.inode
}
