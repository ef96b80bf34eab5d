//! `backup mount DIR`: the repository as a read-only FUSE file system.
//! The layout and the reads are `backup_ops::mount::MountView`'s; this
//! file only answers the kernel's requests with it (through `fuser`,
//! which mounts through /dev/fuse, or the fusermount helper when not
//! root) and unmounts on Ctrl-C or SIGTERM.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use backup_ops::mount::{
    check_fuse, check_mountpoint, Attr, EntryKind, Fault, MountOptions, MountView, OpenFile,
    STABLE_TTL,
};
use fuser::{
    AccessFlags, Errno, FileAttr, FileHandle, FileType, Filesystem, FopenFlags, Generation,
    INodeNo, LockOwner, MountOption, OpenFlags, ReplyAttr, ReplyData, ReplyDirectory, ReplyEmpty,
    ReplyEntry, ReplyOpen, ReplyXattr, Request,
};

use tokio::signal::unix::{signal, SignalKind};

use super::snapshot_filter;
use crate::cli::MountArgs;
use crate::context::Ctx;

pub(crate) async fn run(ctx: &Ctx, a: MountArgs) -> Result<u8> {
    // Before the password is asked: what can be checked here.
    check_mountpoint(&a.dir)?;
    check_fuse()?;
    let options = MountOptions {
        filter: snapshot_filter(&a.filter)?,
        spool_dir: a.spool_dir.clone(),
    };
    let repo = ctx.open().await?;
    let view = MountView::open(&repo, &options).await?;
    let count = view.snapshot_count();
    let fs = Fuse {
        view,
        files: Mutex::new(HashMap::new()),
        next: AtomicU64::new(1),
    };
    let mut config = fuser::Config::default();
    config.mount_options = vec![
        MountOption::RO,
        MountOption::NoDev,
        MountOption::NoSuid,
        MountOption::FSName("backup".to_owned()),
        MountOption::Subtype("backup".to_owned()),
    ];
    // Several requests at once: one slow fetch does not hold up `ls`.
    config.n_threads = Some(4);
    // Handled from before the mount on, so a signal never leaves it behind.
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let dir = a.dir.clone();
    let session = tokio::task::spawn_blocking(move || fuser::Session::new(fs, &dir, &config))
        .await?
        .map_err(|e| {
            backup_ops::Error::Usage(format!(
                "cannot mount on {}: {e} (is fuse3 installed, /dev/fuse usable?)",
                a.dir.display()
            ))
        })?;
    let mut session = session;
    let mut unmount = session.unmount_callable();
    if ctx.human() {
        note!(
            "mounted {count} snapshot{} on {} (read-only); Ctrl-C, SIGTERM or `fusermount -u {}` unmounts",
            if count == 1 { "" } else { "s" },
            a.dir.display(),
            a.dir.display()
        );
    }
    let mut served = tokio::task::spawn_blocking(move || session.run());
    // Until the session ends (also by `fusermount -u` from outside),
    // each SIGTERM or SIGINT tries to unmount; a busy mount stays.
    let result = loop {
        tokio::select! {
            r = &mut served => break r?,
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        if let Err(e) = unmount.unmount() {
            note!(
                "warning: cannot unmount {}: {e}; close what uses it and stop again, or `fusermount -u {}` when it is done",
                a.dir.display(),
                a.dir.display()
            );
        }
    };
    result.map_err(|e| {
        backup_core::Error::io(format!("serving the mount on {}", a.dir.display()), e)
    })?;
    if ctx.human() {
        note!("unmounted {}", a.dir.display());
    }
    Ok(0)
}

/// The kernel's side of [`MountView`]: inode numbers are the view's,
/// file handles number the open files.
struct Fuse {
    view: MountView,
    files: Mutex<HashMap<u64, Arc<OpenFile>>>,
    next: AtomicU64,
}

impl Fuse {
    fn file(&self, fh: FileHandle) -> Option<Arc<OpenFile>> {
        self.files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .get(&fh.0)
            .cloned()
    }
}

fn errno(fault: &Fault) -> Errno {
    match fault {
        Fault::NotFound => Errno::ENOENT,
        Fault::NotDirectory => Errno::ENOTDIR,
        Fault::NotFile => Errno::EINVAL,
        Fault::Failed(e) => {
            tracing::warn!(error = %e, "A read of the mount failed.");
            Errno::EIO
        }
    }
}

fn file_type(kind: EntryKind) -> FileType {
    match kind {
        EntryKind::Dir => FileType::Directory,
        EntryKind::File => FileType::RegularFile,
        EntryKind::Symlink => FileType::Symlink,
        EntryKind::Fifo => FileType::NamedPipe,
        EntryKind::CharDevice => FileType::CharDevice,
        EntryKind::BlockDevice => FileType::BlockDevice,
    }
}

fn file_attr(a: &Attr) -> FileAttr {
    FileAttr {
        ino: INodeNo(a.ino),
        size: a.size,
        blocks: a.size.div_ceil(512),
        atime: a.mtime,
        mtime: a.mtime,
        ctime: a.mtime,
        crtime: a.mtime,
        kind: file_type(a.kind),
        perm: a.perm,
        nlink: a.nlink,
        uid: a.uid,
        gid: a.gid,
        rdev: a.rdev as u32,
        blksize: 4096,
        flags: 0,
    }
}

/// An attribute value or name list: its size when asked with size 0,
/// `ERANGE` when it does not fit.
fn xattr_reply(reply: ReplyXattr, data: &[u8], size: u32) {
    let len = u32::try_from(data.len()).unwrap_or(u32::MAX);
    if size == 0 {
        reply.size(len);
    } else if len > size {
        reply.error(Errno::ERANGE);
    } else {
        reply.data(data);
    }
}

/// A rendered item's size changes at its first open: never cached.
fn ttl(a: &Attr) -> Duration {
    if a.generated {
        Duration::ZERO
    } else {
        STABLE_TTL
    }
}

impl Filesystem for Fuse {
    fn lookup(&self, _req: &Request, parent: INodeNo, name: &OsStr, reply: ReplyEntry) {
        match self.view.lookup(parent.0, name) {
            Ok(a) => reply.entry(&ttl(&a), &file_attr(&a), Generation(0)),
            Err(f) => reply.error(errno(&f)),
        }
    }

    fn getattr(&self, _req: &Request, ino: INodeNo, fh: Option<FileHandle>, reply: ReplyAttr) {
        match self.view.attr(ino.0) {
            Ok(mut a) => {
                // An open rendered item knows its size.
                if let Some(f) = fh.and_then(|fh| self.file(fh)) {
                    a.size = f.size();
                }
                reply.attr(&ttl(&a), &file_attr(&a));
            }
            Err(f) => reply.error(errno(&f)),
        }
    }

    fn readlink(&self, _req: &Request, ino: INodeNo, reply: ReplyData) {
        match self.view.read_link(ino.0) {
            Ok(target) => reply.data(std::os::unix::ffi::OsStrExt::as_bytes(target.as_os_str())),
            Err(f) => reply.error(errno(&f)),
        }
    }

    fn open(&self, _req: &Request, ino: INodeNo, _flags: OpenFlags, reply: ReplyOpen) {
        let generated = self.view.attr(ino.0).is_ok_and(|a| a.generated);
        match self.view.open_file(ino.0) {
            Ok(file) => {
                let fh = self.next.fetch_add(1, Ordering::Relaxed);
                self.files
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner)
                    .insert(fh, Arc::new(file));
                // A rendered item bypasses the page cache: the kernel
                // may still hold its size from before it was rendered.
                let flags = if generated {
                    FopenFlags::FOPEN_DIRECT_IO
                } else {
                    FopenFlags::FOPEN_KEEP_CACHE
                };
                reply.opened(FileHandle(fh), flags);
            }
            Err(Fault::NotFile) => reply.error(Errno::EISDIR),
            Err(f) => reply.error(errno(&f)),
        }
    }

    fn read(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        offset: u64,
        size: u32,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        reply: ReplyData,
    ) {
        let Some(file) = self.file(fh) else {
            reply.error(Errno::EBADF);
            return;
        };
        match self.view.read(&file, offset, size as usize) {
            Ok(data) => reply.data(&data),
            Err(f) => reply.error(errno(&f)),
        }
    }

    fn release(
        &self,
        _req: &Request,
        _ino: INodeNo,
        fh: FileHandle,
        _flags: OpenFlags,
        _lock_owner: Option<LockOwner>,
        _flush: bool,
        reply: ReplyEmpty,
    ) {
        let file = self
            .files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .remove(&fh.0);
        if let Some(file) = file {
            self.view.release(&file);
        }
        reply.ok();
    }

    fn flush(
        &self,
        _req: &Request,
        _ino: INodeNo,
        _fh: FileHandle,
        _lock_owner: LockOwner,
        reply: ReplyEmpty,
    ) {
        // Nothing is ever written.
        reply.ok();
    }

    fn access(&self, _req: &Request, _ino: INodeNo, _mask: AccessFlags, reply: ReplyEmpty) {
        // The kernel refuses writes to a read-only mount itself.
        reply.ok();
    }

    fn getxattr(&self, _req: &Request, ino: INodeNo, name: &OsStr, size: u32, reply: ReplyXattr) {
        match self.view.xattrs(ino.0) {
            Ok(all) => match all.into_iter().find(|(n, _)| n == name) {
                Some((_, value)) => xattr_reply(reply, &value, size),
                None => reply.error(Errno::ENODATA),
            },
            Err(f) => reply.error(errno(&f)),
        }
    }

    fn listxattr(&self, _req: &Request, ino: INodeNo, size: u32, reply: ReplyXattr) {
        match self.view.xattrs(ino.0) {
            Ok(all) => {
                let mut names = Vec::new();
                for (name, _) in all {
                    names.extend_from_slice(std::os::unix::ffi::OsStrExt::as_bytes(
                        name.as_os_str(),
                    ));
                    names.push(0);
                }
                xattr_reply(reply, &names, size);
            }
            Err(f) => reply.error(errno(&f)),
        }
    }

    fn readdir(
        &self,
        _req: &Request,
        ino: INodeNo,
        _fh: FileHandle,
        offset: u64,
        mut reply: ReplyDirectory,
    ) {
        let entries = match self.view.read_dir(ino.0) {
            Ok(e) => e,
            Err(f) => {
                reply.error(errno(&f));
                return;
            }
        };
        // `.` and `..` first (the kernel resolves `..` itself), then the
        // entries; an entry's offset is the position after it.
        let dots = [(ino.0, ".".as_ref()), (ino.0, "..".as_ref())];
        let all = dots
            .into_iter()
            .map(|(i, n): (u64, &OsStr)| (i, FileType::Directory, n))
            .chain(
                entries
                    .iter()
                    .map(|e| (e.ino, file_type(e.kind), e.name.as_os_str())),
            );
        for (i, (child, kind, name)) in all
            .enumerate()
            .skip(usize::try_from(offset).unwrap_or(usize::MAX))
        {
            if reply.add(INodeNo(child), i as u64 + 1, kind, name) {
                break;
            }
        }
        reply.ok();
    }
}
