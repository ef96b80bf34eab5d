//! A repository as a read-only file system, for `backup mount DIR`: what
//! the FUSE front-end asks (look a name up, list a directory, read a link,
//! open and read a file), answered from the repository without FUSE
//! types, so that the layout and the reads are tested here and the
//! front-end only translates.
//!
//! # Layout
//!
//! ```text
//! snapshots/<time>/...          one directory per snapshot (`latest` links to the newest)
//! hosts/<host>/<time>           links to ../../snapshots/<time>
//! tags/<tag>/<time>             links to ../../snapshots/<time>
//! ids/<short id>                links to ../snapshots/<time>
//! ```
//!
//! `<time>` is the snapshot's time in UTC, `2026-11-27T03:45:15Z`; two
//! snapshots of the same second both get `-<short id>` after it. A files
//! snapshot's directory is its tree, with modes, owners, sizes, times,
//! symbolic links and special files as stored. A PostgreSQL (logical)
//! snapshot's is one file per table, `<database>/<schema>/<table>.csv`,
//! a MongoDB snapshot's one per collection, `<database>/<collection>.json`
//! (canonical Extended JSON, one document a line), both written by the
//! same writers as `backup dump` ([`backup_sources::item`]). Views and
//! partitioned tables (no rows of their own) are left out. A Redis
//! snapshot's is one directory per database and one file per key,
//! `<db>/<key>`, holding what `backup dump SNAPSHOT DB/KEY` writes (a
//! stream or module key, which has no plain rendering, its `DUMP`
//! payload, as `--format raw`); key names are bytes, escaped like every
//! name (below). A PostgreSQL physical snapshot shows its stored tree
//! (the data directory).
//!
//! Names are made one path component: `%`, `/` and NUL become `%25`,
//! `%2F` and `%00`, a name `.` or `..` gets `%2E` for its first dot, and
//! the empty name is `%`; other bytes (non-UTF-8 ones too) are kept.
//!
//! # Reads
//!
//! A stored file is read by blob: its blob ids and their plaintext
//! lengths (from the index) give each blob's offset, so a read at any
//! offset fetches only the blobs it covers, each verified as a restore
//! verifies it; decoded blobs go through a cache of 32 MiB shared by all
//! open files. A table or collection is rendered when it is opened, into
//! an unlinked spool file (in the system's temporary directory, or the
//! one given), shared by every open of it and removed with the last
//! close; its size is not known before (it is reported as 0 until the
//! first open, exact after it), so the front-end reads such files
//! without the kernel's page cache (`direct_io`), whose idea of the size
//! would otherwise cut reads short. Memory therefore stays bounded:
//! nothing reads a whole file or table into memory.
//!
//! The snapshot list is read once, when the file system is opened;
//! directories of snapshot trees are loaded when first looked at and
//! kept while mounted. A Redis database's directory is listed by one
//! streamed pass over the snapshot's stream when first looked at (each
//! value rendered to learn its file's size, then dropped): what stays is
//! each key's name and size. Opening a key's file reads the stream again
//! up to that key.

mod content;
mod names;

#[cfg(feature = "redis")]
use names::file_name_bytes;
use names::{file_name, items_of, snapshot_names, ItemFile};
use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::ffi::{OsStr, OsString};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use backup_core::reader::SnapshotReader;
use backup_core::repo::{IndexedRepository, Repository};
use backup_core::snapshot::SnapshotFilter;
use backup_core::tree::{Node, NodeKind};
use backup_sources::item::ItemFormat;
use tokio::runtime::Handle;

pub use content::OpenFile;
use content::{BlobCache, Rendered, Spools};

use crate::error::{Error, Result};

/// The inode number of the file system's root directory.
pub const ROOT: u64 = 1;

/// What `backup mount` shows.
#[derive(Debug, Clone, Default)]
pub struct MountOptions {
    /// Which snapshots are shown (all by default).
    pub filter: SnapshotFilter,
    /// Where tables and collections are rendered when opened; the
    /// system's temporary directory when `None`.
    pub spool_dir: Option<PathBuf>,
}

/// Why a file system request failed, as the front-end answers it.
#[derive(Debug)]
pub enum Fault {
    /// No such entry or inode (`ENOENT`).
    NotFound,
    /// A directory was expected (`ENOTDIR`).
    NotDirectory,
    /// A file was expected (`EISDIR` for a directory, `EINVAL` for others).
    NotFile,
    /// Reading the repository failed (`EIO`): damaged data, storage errors.
    Failed(Error),
}

impl std::fmt::Display for Fault {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Fault::NotFound => f.write_str("no such entry"),
            Fault::NotDirectory => f.write_str("not a directory"),
            Fault::NotFile => f.write_str("not a file"),
            Fault::Failed(e) => e.fmt(f),
        }
    }
}

impl From<Error> for Fault {
    fn from(e: Error) -> Self {
        Fault::Failed(e)
    }
}

impl From<backup_core::Error> for Fault {
    fn from(e: backup_core::Error) -> Self {
        Fault::Failed(e.into())
    }
}

/// What an entry is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// A directory.
    Dir,
    /// A regular file (stored, or a rendered table or collection).
    File,
    /// A symbolic link.
    Symlink,
    /// A named pipe.
    Fifo,
    /// A character device.
    CharDevice,
    /// A block device.
    BlockDevice,
}

/// An entry's attributes, as `stat` shows them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Attr {
    /// Its inode number.
    pub ino: u64,
    /// What it is.
    pub kind: EntryKind,
    /// Size in bytes (a link: its target's length; a table or collection
    /// not yet opened: 0).
    pub size: u64,
    /// Permission bits (with setuid, setgid and sticky).
    pub perm: u16,
    /// Link count.
    pub nlink: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Modification time.
    pub mtime: SystemTime,
    /// Device number of a device node.
    pub rdev: u64,
    /// A table or collection rendered on open: its size is only known
    /// after it, so it must be read without the page cache.
    pub generated: bool,
}

/// One entry of a directory listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DirEntry {
    /// Its name.
    pub name: OsString,
    /// Its inode number.
    pub ino: u64,
    /// What it is.
    pub kind: EntryKind,
}

/// A snapshot as mounted.
#[derive(Debug)]
struct Snap {
    reader: SnapshotReader,
    /// Its directory's name under `snapshots/`.
    name: String,
}

/// What an inode is.
#[derive(Debug)]
enum What {
    /// A directory of the layout, or of a database snapshot's items: its
    /// children are set when it is made.
    Virtual { mtime: SystemTime },
    /// A snapshot's directory: its children are its tree's root or its
    /// items, made when first asked for.
    Snapshot(usize),
    /// An entry of a snapshot's tree.
    Tree { snap: usize, node: Box<Node> },
    /// A symbolic link of the layout.
    Link { target: OsString, mtime: SystemTime },
    /// A table or collection, rendered when opened.
    Item {
        snap: usize,
        /// As [`backup_sources::kind::dump_item`] takes it.
        path: String,
        format: ItemFormat,
    },
    /// A Redis database's directory: its keys are listed when first
    /// asked for.
    RedisDb { snap: usize, db: u32 },
    /// A Redis key, rendered when opened (its size known from the
    /// listing).
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Key {
        snap: usize,
        db: u32,
        key: Vec<u8>,
        format: ItemFormat,
    },
}

/// A directory's entries: names, sorted, with their inode numbers.
type Children = Arc<Vec<(OsString, u64)>>;

#[derive(Debug)]
struct Inode {
    what: What,
    /// Children, sorted by name; `None` until loaded (directories only).
    children: Mutex<Option<Children>>,
    /// A rendered item's size, once known.
    size: Mutex<Option<u64>>,
}

/// A repository's snapshots as a read-only file system (see the module
/// docs). Every method blocks: call them from threads of their own (the
/// FUSE session's), never from an async task of the runtime it was
/// opened on.
#[derive(Debug)]
pub struct MountView {
    handle: Handle,
    repo: IndexedRepository,
    snaps: Vec<Snap>,
    inodes: RwLock<Vec<Arc<Inode>>>,
    uid: u32,
    gid: u32,
    cache: BlobCache,
    spools: Spools,
}

/// Attribute and listing cache times the front-end may give the kernel:
/// nothing mounted ever changes, except a rendered item's size (known
/// after its first open), which is never cached.
pub const STABLE_TTL: Duration = Duration::from_secs(60);

impl MountView {
    /// Reads the index and the snapshots `options.filter` selects and
    /// lays them out.
    ///
    /// # Errors
    ///
    /// Errors reading the index or listing snapshots (snapshots that
    /// cannot be read are left out); `Usage` when the spool directory is
    /// not a directory.
    pub async fn open(repo: &Repository, options: &MountOptions) -> Result<MountView> {
        let spool_dir = options.spool_dir.clone().unwrap_or_else(std::env::temp_dir);
        if !spool_dir.is_dir() {
            return Err(Error::Usage(format!(
                "the spool directory {} is not a directory",
                spool_dir.display()
            )));
        }
        let (mut entries, _unreadable) = repo.snapshots().await?;
        entries.retain(|e| options.filter.matches(&e.snapshot));
        entries.sort_by(|a, b| a.snapshot.time.cmp(&b.snapshot.time).then(a.id.cmp(&b.id)));
        let indexed = repo.clone().load_index().await?;
        let names = snapshot_names(&entries);
        let snaps = entries
            .into_iter()
            .zip(names)
            .map(|(entry, name)| Snap {
                reader: SnapshotReader::new(indexed.clone(), entry),
                name,
            })
            .collect();
        let view = MountView {
            handle: Handle::current(),
            repo: indexed,
            snaps,
            inodes: RwLock::new(Vec::new()),
            uid: nix::unistd::getuid().as_raw(),
            gid: nix::unistd::getgid().as_raw(),
            cache: BlobCache::new(32 << 20),
            spools: Spools::new(spool_dir),
        };
        view.lay_out();
        Ok(view)
    }

    /// How many snapshots are mounted.
    pub fn snapshot_count(&self) -> usize {
        self.snaps.len()
    }

    /// The inode named `name` in directory `parent`, with its attributes.
    ///
    /// # Errors
    ///
    /// [`Fault::NotFound`] when there is none, [`Fault::NotDirectory`]
    /// when `parent` is not a directory, [`Fault::Failed`] when its tree
    /// cannot be read.
    pub fn lookup(&self, parent: u64, name: &OsStr) -> Result<Attr, Fault> {
        let children = self.children(parent)?;
        let i = children
            .binary_search_by(|(n, _)| n.as_os_str().cmp(name))
            .map_err(|_| Fault::NotFound)?;
        self.attr(children[i].1)
    }

    /// An inode's attributes.
    ///
    /// # Errors
    ///
    /// [`Fault::NotFound`] for an unknown inode.
    pub fn attr(&self, ino: u64) -> Result<Attr, Fault> {
        let inode = self.inode(ino)?;
        let dir = |mtime| Attr {
            ino,
            kind: EntryKind::Dir,
            size: 0,
            perm: 0o555,
            nlink: 2,
            uid: self.uid,
            gid: self.gid,
            mtime,
            rdev: 0,
            generated: false,
        };
        Ok(match &inode.what {
            What::Virtual { mtime } => dir(*mtime),
            What::Snapshot(s) => dir(self.snaps[*s].reader.snapshot().time.into()),
            What::Link { target, mtime } => Attr {
                kind: EntryKind::Symlink,
                size: target.len() as u64,
                perm: 0o777,
                nlink: 1,
                ..dir(*mtime)
            },
            What::RedisDb { snap, .. } => dir(self.snaps[*snap].reader.snapshot().time.into()),
            What::Item { snap, .. } | What::Key { snap, .. } => Attr {
                kind: EntryKind::File,
                size: lock(&inode.size).unwrap_or(0),
                perm: 0o444,
                nlink: 1,
                generated: true,
                ..dir(self.snaps[*snap].reader.snapshot().time.into())
            },
            What::Tree { node, .. } => Attr {
                ino,
                kind: entry_kind(node.kind),
                size: match node.kind {
                    NodeKind::Symlink => node
                        .link_target
                        .as_ref()
                        .map_or(0, |t| t.to_os().len() as u64),
                    NodeKind::Dir => 0,
                    _ => node.size,
                },
                perm: node.mode.map_or(
                    if node.kind == NodeKind::Dir {
                        0o755
                    } else {
                        0o644
                    },
                    |m| (m & 0o7777) as u16,
                ),
                nlink: if node.kind == NodeKind::Dir {
                    2
                } else {
                    u32::try_from(node.links.unwrap_or(1)).unwrap_or(u32::MAX)
                },
                uid: node.uid.unwrap_or(self.uid),
                gid: node.gid.unwrap_or(self.gid),
                mtime: node.mtime_ns.map_or(UNIX_EPOCH, time_of_ns),
                rdev: node.rdev.unwrap_or(0),
                generated: false,
            },
        })
    }

    /// A directory's entries, sorted by name (without `.` and `..`).
    ///
    /// # Errors
    ///
    /// As [`MountView::lookup`].
    pub fn read_dir(&self, ino: u64) -> Result<Vec<DirEntry>, Fault> {
        let children = self.children(ino)?;
        children
            .iter()
            .map(|(name, child)| {
                Ok(DirEntry {
                    name: name.clone(),
                    ino: *child,
                    kind: self.attr(*child)?.kind,
                })
            })
            .collect()
    }

    /// A symbolic link's target.
    ///
    /// # Errors
    ///
    /// [`Fault::NotFound`] for an unknown inode, [`Fault::NotFile`] for
    /// one that is not a link.
    pub fn read_link(&self, ino: u64) -> Result<OsString, Fault> {
        match &self.inode(ino)?.what {
            What::Link { target, .. } => Ok(target.clone()),
            What::Tree { node, .. } if node.kind == NodeKind::Symlink => Ok(node
                .link_target
                .as_ref()
                .map(backup_core::tree::FsName::to_os)
                .unwrap_or_default()),
            _ => Err(Fault::NotFile),
        }
    }

    /// An entry's extended attributes as stored (names with their values;
    /// empty for everything but entries of a files snapshot that had
    /// them).
    ///
    /// # Errors
    ///
    /// [`Fault::NotFound`] for an unknown inode.
    pub fn xattrs(&self, ino: u64) -> Result<Vec<(OsString, Vec<u8>)>, Fault> {
        Ok(match &self.inode(ino)?.what {
            What::Tree { node, .. } => node
                .xattrs
                .iter()
                .map(|x| (x.name.to_os(), x.value.clone()))
                .collect(),
            _ => Vec::new(),
        })
    }

    /// Opens a file for reading: a stored file's blob list is read, a
    /// table or collection rendered (see the module docs).
    ///
    /// # Errors
    ///
    /// [`Fault::NotFound`] for an unknown inode, [`Fault::NotFile`] for a
    /// directory or special file, [`Fault::Failed`] when the blob list
    /// or the rendering fails.
    pub fn open_file(&self, ino: u64) -> Result<OpenFile, Fault> {
        let inode = self.inode(ino)?;
        match &inode.what {
            What::Tree { node, .. } if matches!(node.kind, NodeKind::File | NodeKind::Stream) => {
                let blobs = self.handle.block_on(content::blob_list(&self.repo, node))?;
                Ok(OpenFile::stored(node.name.display().into_owned(), blobs))
            }
            What::Item { snap, path, format } => {
                let reader = self.snaps[*snap].reader.clone();
                let spool = self.spools.open(
                    &self.handle,
                    ino,
                    &reader,
                    &Rendered::Item {
                        path,
                        format: *format,
                    },
                )?;
                *lock(&inode.size) = Some(spool.size());
                Ok(OpenFile::rendered(spool))
            }
            What::Key {
                snap,
                db,
                key,
                format,
            } => {
                let reader = self.snaps[*snap].reader.clone();
                let spool = self.spools.open(
                    &self.handle,
                    ino,
                    &reader,
                    &Rendered::Key {
                        db: *db,
                        key,
                        format: *format,
                    },
                )?;
                *lock(&inode.size) = Some(spool.size());
                Ok(OpenFile::rendered(spool))
            }
            _ => Err(Fault::NotFile),
        }
    }

    /// Reads up to `len` bytes at `offset` of an open file (fewer at its
    /// end; none past it).
    ///
    /// # Errors
    ///
    /// [`Fault::Failed`] for damaged data (a blob that fails
    /// verification or is missing) and storage or spool errors.
    pub fn read(&self, file: &OpenFile, offset: u64, len: usize) -> Result<Vec<u8>, Fault> {
        file.read_at(&self.handle, &self.repo, &self.cache, offset, len)
            .map_err(Fault::Failed)
    }

    /// Closes a file [`MountView::open_file`] opened (once per open): the
    /// last close of a table or collection removes its spool file.
    pub fn release(&self, file: &OpenFile) {
        file.close(&self.spools);
    }

    fn inode(&self, ino: u64) -> Result<Arc<Inode>, Fault> {
        let i = usize::try_from(ino.checked_sub(1).ok_or(Fault::NotFound)?)
            .map_err(|_| Fault::NotFound)?;
        read(&self.inodes).get(i).cloned().ok_or(Fault::NotFound)
    }

    fn add(&self, what: What, children: Option<Vec<(OsString, u64)>>) -> u64 {
        let mut inodes = self
            .inodes
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        inodes.push(Arc::new(Inode {
            what,
            children: Mutex::new(children.map(|mut c| {
                c.sort_by(|a, b| a.0.cmp(&b.0));
                Arc::new(c)
            })),
            size: Mutex::new(None),
        }));
        inodes.len() as u64
    }

    fn link(&self, target: String, mtime: SystemTime) -> u64 {
        self.add(
            What::Link {
                target: target.into(),
                mtime,
            },
            None,
        )
    }

    /// Makes the root, `snapshots/`, `hosts/`, `tags/` and `ids/`.
    fn lay_out(&self) {
        let now = SystemTime::now();
        let root = self.add(What::Virtual { mtime: now }, Some(Vec::new()));
        debug_assert_eq!(root, ROOT);
        let newest = self
            .snaps
            .last()
            .map_or(now, |s| s.reader.snapshot().time.into());
        let mut snapshots = Vec::new();
        let mut hosts: BTreeMap<String, Vec<(OsString, u64)>> = BTreeMap::new();
        let mut tags: BTreeMap<String, Vec<(OsString, u64)>> = BTreeMap::new();
        let mut ids = Vec::new();
        for (i, snap) in self.snaps.iter().enumerate() {
            let s = snap.reader.snapshot();
            let time: SystemTime = s.time.into();
            let ino = self.add(What::Snapshot(i), None);
            snapshots.push((snap.name.clone().into(), ino));
            let up2 = format!("../../snapshots/{}", snap.name);
            hosts
                .entry(file_name(&s.host))
                .or_default()
                .push((snap.name.clone().into(), self.link(up2.clone(), time)));
            for tag in &s.tags {
                tags.entry(file_name(tag))
                    .or_default()
                    .push((snap.name.clone().into(), self.link(up2.clone(), time)));
            }
            ids.push((
                snap.reader.id().short().into(),
                self.link(format!("../snapshots/{}", snap.name), time),
            ));
        }
        if let Some(last) = self.snaps.last() {
            snapshots.push(("latest".into(), self.link(last.name.clone(), newest)));
        }
        let group = |map: BTreeMap<String, Vec<(OsString, u64)>>| {
            let dirs = map
                .into_iter()
                .map(|(name, entries)| {
                    (
                        name.into(),
                        self.add(What::Virtual { mtime: newest }, Some(entries)),
                    )
                })
                .collect();
            self.add(What::Virtual { mtime: newest }, Some(dirs))
        };
        let mut top: Vec<(OsString, u64)> = vec![
            ("hosts".into(), group(hosts)),
            ("tags".into(), group(tags)),
            (
                "snapshots".into(),
                self.add(What::Virtual { mtime: newest }, Some(snapshots)),
            ),
            (
                "ids".into(),
                self.add(What::Virtual { mtime: newest }, Some(ids)),
            ),
        ];
        top.sort_by(|a, b| a.0.cmp(&b.0));
        if let Ok(inode) = self.inode(ROOT) {
            *lock(&inode.children) = Some(Arc::new(top));
        }
    }

    /// A directory's children, loading them the first time.
    fn children(&self, ino: u64) -> Result<Children, Fault> {
        let inode = self.inode(ino)?;
        let mut slot = lock(&inode.children);
        if let Some(c) = slot.as_ref() {
            return Ok(c.clone());
        }
        let children = match &inode.what {
            What::Snapshot(s) => self.snapshot_children(*s)?,
            What::RedisDb { snap, db } => self.key_children(*snap, *db)?,
            What::Tree { snap, node } if node.kind == NodeKind::Dir => {
                let reader = &self.snaps[*snap].reader;
                let dir = self.handle.block_on(reader.open_dir(node))?;
                self.tree_children(*snap, dir.entries())
            }
            _ => return Err(Fault::NotDirectory),
        };
        let mut children = children;
        children.sort_by(|a, b| a.0.cmp(&b.0));
        let children = Arc::new(children);
        *slot = Some(children.clone());
        Ok(children)
    }

    fn tree_children(&self, snap: usize, nodes: &[Node]) -> Vec<(OsString, u64)> {
        nodes
            .iter()
            .map(|n| {
                let name = n.name.to_os();
                let ino = self.add(
                    What::Tree {
                        snap,
                        node: Box::new(n.clone()),
                    },
                    None,
                );
                (name, ino)
            })
            .collect()
    }

    /// A snapshot's top level: its items (tables, collections) when it
    /// has them, else its tree.
    fn snapshot_children(&self, snap: usize) -> Result<Vec<(OsString, u64)>, Fault> {
        let reader = &self.snaps[snap].reader;
        let s = reader.snapshot();
        if let Some(items) = items_of(&s.source.kind, &s.metadata) {
            return Ok(self.item_children(snap, items));
        }
        if cfg!(feature = "redis") && s.source.kind == "redis" {
            let dbs = backup_sources::summary::contents("redis", &s.metadata)
                .map(|c| c.rows)
                .unwrap_or_default();
            return Ok(dbs
                .into_iter()
                .filter_map(|r| r.name.parse::<u32>().ok())
                .map(|db| {
                    let ino = self.add(What::RedisDb { snap, db }, None);
                    (db.to_string().into(), ino)
                })
                .collect());
        }
        let root = self.handle.block_on(reader.root())?;
        Ok(self.tree_children(snap, root.entries()))
    }

    /// The keys of a Redis database as files, listed by one pass over
    /// the snapshot's stream.
    #[cfg(feature = "redis")]
    fn key_children(&self, snap: usize, db: u32) -> Result<Vec<(OsString, u64)>, Fault> {
        let reader = &self.snaps[snap].reader;
        let mut children = Vec::new();
        let mut on_key = |k: backup_sources::redis::item::KeyFile| {
            let name = file_name_bytes(&k.key);
            let ino = self.add(
                What::Key {
                    snap,
                    db,
                    key: k.key,
                    format: k.format,
                },
                None,
            );
            if let Ok(inode) = self.inode(ino) {
                *lock(&inode.size) = Some(k.size);
            }
            children.push((name, ino));
            Ok(())
        };
        self.handle
            .block_on(backup_sources::redis::item::list_key_files(
                reader,
                db,
                &mut on_key,
            ))?;
        Ok(children)
    }

    #[cfg(not(feature = "redis"))]
    fn key_children(&self, _snap: usize, _db: u32) -> Result<Vec<(OsString, u64)>, Fault> {
        Err(Fault::NotDirectory)
    }

    /// Makes the directories and files of a database snapshot's items.
    fn item_children(&self, snap: usize, items: Vec<ItemFile>) -> Vec<(OsString, u64)> {
        let mtime: SystemTime = self.snaps[snap].reader.snapshot().time.into();
        // Directory path -> its files; then directories made deepest
        // first so each parent gets its subdirectories' inodes.
        let mut dirs: BTreeMap<Vec<String>, Vec<(OsString, u64)>> = BTreeMap::new();
        let mut all: BTreeSet<Vec<String>> = BTreeSet::new();
        for item in items {
            let (file, dir) = item.place.split_last().map_or_else(
                || (String::new(), Vec::new()),
                |(f, d)| (f.clone(), d.to_vec()),
            );
            for depth in 0..=dir.len() {
                all.insert(dir[..depth].to_vec());
            }
            let ino = self.add(
                What::Item {
                    snap,
                    path: item.path,
                    format: item.format,
                },
                None,
            );
            dirs.entry(dir).or_default().push((file.into(), ino));
        }
        let mut made: HashMap<Vec<String>, u64> = HashMap::new();
        for dir in all.iter().rev() {
            if dir.is_empty() {
                continue;
            }
            let mut children = dirs.remove(dir).unwrap_or_default();
            children.extend(
                all.iter()
                    .filter(|d| d.len() == dir.len() + 1 && d.starts_with(dir))
                    .filter_map(|d| Some((d.last()?.clone().into(), *made.get(d)?))),
            );
            made.insert(
                dir.clone(),
                self.add(What::Virtual { mtime }, Some(children)),
            );
        }
        let mut top = dirs.remove(&Vec::new()).unwrap_or_default();
        top.extend(
            all.iter()
                .filter(|d| d.len() == 1)
                .filter_map(|d| Some((d[0].clone().into(), *made.get(d)?))),
        );
        top
    }
}

fn entry_kind(kind: NodeKind) -> EntryKind {
    match kind {
        NodeKind::Dir => EntryKind::Dir,
        NodeKind::File | NodeKind::Stream => EntryKind::File,
        NodeKind::Symlink => EntryKind::Symlink,
        NodeKind::Fifo => EntryKind::Fifo,
        NodeKind::Chardev => EntryKind::CharDevice,
        NodeKind::Blockdev => EntryKind::BlockDevice,
    }
}

fn time_of_ns(ns: i64) -> SystemTime {
    let (secs, nanos) = (ns.div_euclid(1_000_000_000), ns.rem_euclid(1_000_000_000));
    let nanos = nanos as u32;
    if secs >= 0 {
        UNIX_EPOCH + Duration::new(secs as u64, nanos)
    } else {
        UNIX_EPOCH - Duration::new(secs.unsigned_abs(), 0) + Duration::new(0, nanos)
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

fn read<T>(m: &RwLock<T>) -> std::sync::RwLockReadGuard<'_, T> {
    m.read().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Checks that `dir` is an empty directory to mount on.
///
/// # Errors
///
/// `Usage` naming what is wrong: missing, not a directory, not empty,
/// unreadable.
pub fn check_mountpoint(dir: &Path) -> Result<()> {
    let meta = std::fs::metadata(dir).map_err(|e| {
        Error::Usage(format!(
            "cannot mount on {}: {e} (make an empty directory first)",
            dir.display()
        ))
    })?;
    if !meta.is_dir() {
        return Err(Error::Usage(format!(
            "cannot mount on {}: it is not a directory",
            dir.display()
        )));
    }
    let mut entries = std::fs::read_dir(dir)
        .map_err(|e| Error::Usage(format!("cannot mount on {}: {e}", dir.display())))?;
    if entries.next().is_some() {
        return Err(Error::Usage(format!(
            "cannot mount on {}: it is not empty (mount on an empty directory)",
            dir.display()
        )));
    }
    Ok(())
}

/// Checks that this machine can mount a FUSE file system: `/dev/fuse`
/// exists and, unless the process runs as root (which mounts directly),
/// `fusermount3` or `fusermount` is on `PATH`.
///
/// # Errors
///
/// `Usage` saying what is missing and which package brings it.
pub fn check_fuse() -> Result<()> {
    if !Path::new("/dev/fuse").exists() {
        return Err(Error::Usage(
            "/dev/fuse is missing: load the fuse kernel module (`modprobe fuse`), or give the container the device (`--device /dev/fuse`)".to_owned(),
        ));
    }
    if nix::unistd::geteuid().is_root() {
        return Ok(());
    }
    let on_path = |name: &str| {
        std::env::var_os("PATH")
            .is_some_and(|path| std::env::split_paths(&path).any(|dir| dir.join(name).is_file()))
    };
    if on_path("fusermount3") || on_path("fusermount") {
        Ok(())
    } else {
        Err(Error::Usage(
            "fusermount3 (or fusermount) is not on PATH: install it (Debian: `apt-get install fuse3`)".to_owned(),
        ))
    }
}

#[cfg(test)]
mod tests;
