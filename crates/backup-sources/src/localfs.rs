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
    n.mode = Some(m.mode() & 0o7777);
    n.uid = Some(m.uid());
    n.gid = Some(m.gid());
    n.mtime_ns = Some(m.mtime() * 1_000_000_000 + m.mtime_nsec());
    n.ctime_ns = Some(m.ctime() * 1_000_000_000 + m.ctime_nsec());
    n.inode = Some(m.ino());
    n
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
