//! Local files as tree nodes: the metadata a node records and reading
//! without touching access times (the files source, local base backups).

use std::fs::{File, Metadata, OpenOptions};
use std::io;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use backup_core::tree::{FsName, Node, NodeKind};

/// A node with the metadata every entry records: permissions, owner,
/// modification and change times, inode.
pub(crate) fn node_from(name: FsName, kind: NodeKind, m: &Metadata) -> Node {
    let mut n = Node::new(name, kind);
    set_stat(&mut n, m);
    n
}

/// Sets the metadata [`node_from`] records from `m`.
fn set_stat(n: &mut Node, m: &Metadata) {
    n.mode = Some(m.mode() & 0o7777);
    n.uid = Some(m.uid());
    n.gid = Some(m.gid());
    n.mtime_ns = Some(m.mtime() * 1_000_000_000 + m.mtime_nsec());
    n.ctime_ns = Some(m.ctime() * 1_000_000_000 + m.ctime_nsec());
    n.inode = Some(m.ino());
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
        set_stat(node, &m);
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
        m: &Metadata,
        attrs: Attrs,
    ) -> Option<String> {
        node.user
            .clone_from(self.users.entry(m.uid()).or_insert_with(|| {
                nix::unistd::User::from_uid(m.uid().into())
                    .ok()
                    .flatten()
                    .map(|u| u.name)
            }));
        node.group
            .clone_from(self.groups.entry(m.gid()).or_insert_with(|| {
                nix::unistd::Group::from_gid(m.gid().into())
                    .ok()
                    .flatten()
                    .map(|g| g.name)
            }));
        let ft = m.file_type();
        if ft.is_file() {
            if m.nlink() > 1 {
                node.links = Some(m.nlink());
                node.device = Some(m.dev());
            }
            // Fewer allocated blocks than bytes: the file has holes.
            node.sparse = m.blocks().saturating_mul(512) < m.len();
        }
        {
            use std::os::unix::fs::FileTypeExt;
            if ft.is_char_device() || ft.is_block_device() {
                node.rdev = Some(m.rdev());
            }
        }
        node.flags = attrs.flags;
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

/// What an entry records beyond its `lstat`: inode flags and extended
/// attributes. Read with the listing of the entry's directory, so that
/// these two calls per entry run on the listing threads, ahead of the
/// walk, rather than one after another in it.
#[derive(Debug)]
pub(crate) struct Attrs {
    flags: Vec<backup_core::tree::FileFlag>,
    xattrs: io::Result<Vec<backup_core::tree::Xattr>>,
}

impl Attrs {
    /// Reads the attributes of `path`, described by `m`.
    pub(crate) fn read(path: &Path, m: &Metadata) -> Attrs {
        let ft = m.file_type();
        Attrs {
            flags: if ft.is_file() || ft.is_dir() {
                inode_flags(path)
            } else {
                Vec::new()
            },
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

/// The inode flags a node records, from `statx`'s attributes (no open
/// needed). Empty when the file system reports none.
fn inode_flags(path: &Path) -> Vec<backup_core::tree::FileFlag> {
    use backup_core::tree::FileFlag;
    use rustix::fs::{AtFlags, StatxAttributes, StatxFlags};
    let Ok(st) = rustix::fs::statx(
        rustix::fs::CWD,
        path,
        AtFlags::SYMLINK_NOFOLLOW | AtFlags::STATX_DONT_SYNC,
        StatxFlags::empty(),
    ) else {
        return Vec::new();
    };
    let a = st.stx_attributes & st.stx_attributes_mask;
    [
        (StatxAttributes::IMMUTABLE, FileFlag::Immutable),
        (StatxAttributes::APPEND, FileFlag::Append),
        (StatxAttributes::NODUMP, FileFlag::Nodump),
    ]
    .into_iter()
    .filter(|(bit, _)| a.contains(*bit))
    .map(|(_, f)| f)
    .collect()
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
        let listed = std::fs::metadata(&path).unwrap();
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
