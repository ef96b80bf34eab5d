//! Local files as tree nodes: the metadata a node records and reading
//! without touching access times (the files source, local base backups).

use std::ffi::CStr;
use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::fd::BorrowedFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use backup_core::tree::{FileFlag, FsName, Node, NodeKind};
use rustix::fs::{AtFlags, FileType, StatxAttributes, StatxFlags};

/// An entry's metadata as one `statx` returns it: what a node records, and
/// the inode flags (immutable, append-only, no-dump) that std's
/// [`Metadata`] does not expose, which would take a second `statx`.
#[derive(Debug, Clone)]
pub(crate) struct Stat {
    mode: u32,
    uid: u32,
    gid: u32,
    len: u64,
    nlink: u64,
    ino: u64,
    dev: u64,
    rdev: u64,
    blocks: u64,
    mtime_ns: i64,
    ctime_ns: i64,
    /// Read for regular files and directories only; empty when the file
    /// system reports none, and for a [`Stat`] made from a [`Metadata`].
    flags: Vec<FileFlag>,
}

impl Stat {
    /// The metadata of `name` in the open directory `dir`, not following a
    /// symbolic link: relative to the directory, which spares the kernel a
    /// walk of the whole path.
    pub(crate) fn at(dir: BorrowedFd<'_>, name: &CStr) -> io::Result<Stat> {
        Stat::statx(dir, name, AtFlags::SYMLINK_NOFOLLOW)
    }

    /// The metadata of `path`, following a symbolic link when `follow`.
    pub(crate) fn of(path: &Path, follow: bool) -> io::Result<Stat> {
        let flags = if follow {
            AtFlags::empty()
        } else {
            AtFlags::SYMLINK_NOFOLLOW
        };
        Stat::statx(rustix::fs::CWD, path, flags)
    }

    fn statx<P: rustix::path::Arg>(
        dir: BorrowedFd<'_>,
        path: P,
        flags: AtFlags,
    ) -> io::Result<Stat> {
        let st = rustix::fs::statx(dir, path, flags, StatxFlags::BASIC_STATS)?;
        let ns = |t: rustix::fs::StatxTimestamp| t.tv_sec * 1_000_000_000 + i64::from(t.tv_nsec);
        let mut s = Stat {
            mode: u32::from(st.stx_mode),
            uid: st.stx_uid,
            gid: st.stx_gid,
            len: st.stx_size,
            nlink: u64::from(st.stx_nlink),
            ino: st.stx_ino,
            dev: rustix::fs::makedev(st.stx_dev_major, st.stx_dev_minor),
            rdev: rustix::fs::makedev(st.stx_rdev_major, st.stx_rdev_minor),
            blocks: st.stx_blocks,
            mtime_ns: ns(st.stx_mtime),
            ctime_ns: ns(st.stx_ctime),
            flags: Vec::new(),
        };
        if s.is_file() || s.is_dir() {
            let a = st.stx_attributes & st.stx_attributes_mask;
            s.flags = [
                (StatxAttributes::IMMUTABLE, FileFlag::Immutable),
                (StatxAttributes::APPEND, FileFlag::Append),
                (StatxAttributes::NODUMP, FileFlag::Nodump),
            ]
            .into_iter()
            .filter(|(bit, _)| a.contains(*bit))
            .map(|(_, f)| f)
            .collect();
        }
        Ok(s)
    }

    /// The kind of file.
    pub(crate) fn file_type(&self) -> FileType {
        FileType::from_raw_mode(self.mode)
    }

    /// A directory.
    pub(crate) fn is_dir(&self) -> bool {
        self.file_type() == FileType::Directory
    }

    /// A regular file.
    pub(crate) fn is_file(&self) -> bool {
        self.file_type() == FileType::RegularFile
    }

    /// Size in bytes.
    pub(crate) fn len(&self) -> u64 {
        self.len
    }

    /// The device of the file system holding it.
    pub(crate) fn dev(&self) -> u64 {
        self.dev
    }
}

impl From<&Metadata> for Stat {
    /// The same fields from std's metadata, without inode flags.
    fn from(m: &Metadata) -> Stat {
        Stat {
            mode: m.mode(),
            uid: m.uid(),
            gid: m.gid(),
            len: m.len(),
            nlink: m.nlink(),
            ino: m.ino(),
            dev: m.dev(),
            rdev: m.rdev(),
            blocks: m.blocks(),
            mtime_ns: m.mtime() * 1_000_000_000 + m.mtime_nsec(),
            ctime_ns: m.ctime() * 1_000_000_000 + m.ctime_nsec(),
            flags: Vec::new(),
        }
    }
}

/// A node with the metadata every entry records: permissions, owner,
/// modification and change times, inode.
pub(crate) fn node_from(name: FsName, kind: NodeKind, m: &Stat) -> Node {
    let mut n = Node::new(name, kind);
    set_stat(&mut n, m);
    n
}

/// [`node_from`] from std's metadata (no inode flags).
#[cfg(feature = "postgres")]
pub(crate) fn node_from_meta(name: FsName, kind: NodeKind, m: &Metadata) -> Node {
    node_from(name, kind, &Stat::from(m))
}

/// Sets the metadata [`node_from`] records from `m`.
fn set_stat(n: &mut Node, m: &Stat) {
    n.mode = Some(m.mode & 0o7777);
    n.uid = Some(m.uid);
    n.gid = Some(m.gid);
    n.mtime_ns = Some(m.mtime_ns);
    n.ctime_ns = Some(m.ctime_ns);
    n.inode = Some(m.ino);
}

/// Opens a file for reading without updating its access time where the
/// kernel allows it.
pub(crate) fn open_noatime(path: &Path) -> io::Result<File> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOATIME)
        .open(path)
    {
        Err(e) if e.raw_os_error() == Some(libc::EPERM) => File::open(path),
        r => r,
    }
}

/// A file being backed up: reads like the file, and at its end checks
/// that the file did not change while it was read (size, modification and
/// change times as at the open), else ends with
/// [`backup_core::source::ChangedWhileRead`] so that it is read again.
/// Opening refreshes the node's metadata from the opened file: a file
/// written between the walk's `stat` and the open is stored with the
/// times of the version read.
pub(crate) struct Watched {
    file: File,
    at_open: (u64, i64, i64, i64, i64),
}

fn stamp(m: &Metadata) -> (u64, i64, i64, i64, i64) {
    (
        m.len(),
        m.mtime(),
        m.mtime_nsec(),
        m.ctime(),
        m.ctime_nsec(),
    )
}

impl Watched {
    /// Opens `path` (without touching its access time where allowed) and
    /// sets `node`'s times, size, owner, mode and inode to the opened
    /// file's.
    pub(crate) fn open(path: &Path, node: &mut Node) -> io::Result<Watched> {
        let file = open_noatime(path)?;
        let m = file.metadata()?;
        set_stat(node, &Stat::from(&m));
        node.size = m.len();
        Ok(Watched {
            file,
            at_open: stamp(&m),
        })
    }
}

impl io::Read for Watched {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.file.read(buf)?;
        if n == 0 && !buf.is_empty() && stamp(&self.file.metadata()?) != self.at_open {
            return Err(backup_core::source::ChangedWhileRead::error());
        }
        Ok(n)
    }
}

/// What a system backup records beyond [`node_from`] (format version 3):
/// owner names, hard link identity, device numbers, extended attributes
/// (ACLs and capabilities among them), holes and inode flags. One per
/// walk: it caches owner names.
#[derive(Debug, Default)]
pub(crate) struct SystemMeta {
    users: std::collections::HashMap<u32, Option<String>>,
    groups: std::collections::HashMap<u32, Option<String>>,
}

impl SystemMeta {
    /// Adds the system metadata of `path` (described by `m`, with its
    /// `attrs`) to `node`. Attributes that could not be read are reported
    /// in the returned message (the node is still recorded, without them).
    pub(crate) fn add(
        &mut self,
        node: &mut Node,
        path: &Path,
        m: &Stat,
        attrs: Attrs,
    ) -> Option<String> {
        node.user
            .clone_from(self.users.entry(m.uid).or_insert_with(|| {
                nix::unistd::User::from_uid(m.uid.into())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            }));
        node.group
            .clone_from(self.groups.entry(m.gid).or_insert_with(|| {
                nix::unistd::Group::from_gid(m.gid.into())
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            }));
        match m.file_type() {
            FileType::RegularFile => {
                if m.nlink > 1 {
                    node.links = Some(m.nlink);
                    node.device = Some(m.dev);
                }
                // Fewer allocated blocks than bytes: the file has holes.
                node.sparse = m.blocks.saturating_mul(512) < m.len;
            }
            FileType::CharacterDevice | FileType::BlockDevice => node.rdev = Some(m.rdev),
            _ => {}
        }
        node.flags.clone_from(&m.flags);
        match attrs.xattrs {
            Ok(x) => {
                node.xattrs = x;
                None
            }
            Err(e) => Some(format!(
                "{}: cannot read extended attributes: {e}; recorded without them",
                path.display()
            )),
        }
    }
}

/// What an entry records beyond its [`Stat`]: extended attributes. Read
/// with the listing of the entry's directory, so that this call per entry
/// runs on the listing threads, ahead of the walk, rather than in it.
#[derive(Debug)]
pub(crate) struct Attrs {
    xattrs: io::Result<Vec<backup_core::tree::Xattr>>,
}

impl Attrs {
    /// Reads the attributes of `path`.
    pub(crate) fn read(path: &Path) -> Attrs {
        Attrs {
            xattrs: read_xattrs(path),
        }
    }
}

/// The extended attributes of `path` (not following a symbolic link),
/// sorted by name. Attributes that vanish between listing and reading are
/// skipped; a file system without extended attributes has none.
fn read_xattrs(path: &Path) -> io::Result<Vec<backup_core::tree::Xattr>> {
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if matches!(e.raw_os_error(), Some(libc::ENOTSUP)) => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for name in names {
        match xattr::get(path, &name) {
            Ok(Some(value)) => out.push(backup_core::tree::Xattr {
                name: backup_core::tree::FsName::from_os(&name),
                value,
            }),
            Ok(None) => {}
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENODATA)) => {}
            Err(e) => return Err(e),
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::io::Read;
    use std::time::{Duration, SystemTime};

    use super::*;

    /// A file rewritten between the walk's `stat` and the open is stored
    /// with the metadata of the version read (the soak found a file whose
    /// new content was stored under the old modification time).
    #[test]
    fn opening_takes_the_metadata_of_the_version_read() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"old").unwrap();
        let listed = Stat::of(&path, false).unwrap();
        let mut node = node_from(FsName::from("f"), NodeKind::File, &listed);
        node.size = listed.len();
        std::fs::write(&path, b"newer").unwrap();
        let later = SystemTime::UNIX_EPOCH + Duration::from_secs(2_000_000_000);
        File::options()
            .write(true)
            .open(&path)
            .unwrap()
            .set_modified(later)
            .unwrap();
        let mut w = Watched::open(&path, &mut node).unwrap();
        let mut got = Vec::new();
        w.read_to_end(&mut got).unwrap();
        assert_eq!(got, b"newer");
        assert_eq!(node.size, 5);
        assert_eq!(node.mtime_ns, Some(2_000_000_000 * 1_000_000_000));
    }

    /// A write during the read ends it with `ChangedWhileRead`.
    #[test]
    fn a_write_during_the_read_is_reported() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, b"first").unwrap();
        let mut node = Node::new("f", NodeKind::File);
        let mut w = Watched::open(&path, &mut node).unwrap();
        let mut buf = [0u8; 2];
        assert_eq!(w.read(&mut buf).unwrap(), 2);
        std::fs::write(&path, b"second, longer").unwrap();
        let mut rest = Vec::new();
        let e = w.read_to_end(&mut rest).unwrap_err();
        assert!(backup_core::source::ChangedWhileRead::is(&e), "{e}");
    }
}
