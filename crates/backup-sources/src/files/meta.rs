//! What every restored entry gets once it exists: owner, permissions,
//! extended attributes, times and inode flags, and the report of what
//! could not be applied.

use std::fs::{self, File, OpenOptions};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use backup_core::target::Owners;
use backup_core::tree::{FileFlag, Node, NodeKind};
use backup_core::{Error, Result};
use filetime::FileTime;

/// What the restore could not apply and says so (for the report), shared
/// with the caller.
#[derive(Debug, Clone, Default)]
pub struct RestoreNotes(Arc<Mutex<NoteCounts>>);

#[derive(Debug, Default)]
pub(super) struct NoteCounts {
    pub(super) lines: Vec<String>,
    /// Extended attributes refused by the file system or for lack of
    /// privilege, by namespace.
    pub(super) xattrs: std::collections::BTreeMap<String, u64>,
    pub(super) devices: u64,
    pub(super) flags: u64,
    /// Existing entries left as they were (`--overwrite never` or
    /// `if-changed`), and replaced.
    pub(super) kept: u64,
    pub(super) replaced: u64,
}

impl RestoreNotes {
    pub(super) fn note(&self, f: impl FnOnce(&mut NoteCounts)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The report's lines: one per kind of thing not restored.
    pub fn take(&self) -> Vec<String> {
        let mut n = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = std::mem::take(&mut n.lines);
        for (ns, count) in std::mem::take(&mut n.xattrs) {
            out.push(format!(
                "warning: {count} extended attributes in the `{ns}` namespace were not restored (the file system refused them{})",
                if matches!(ns.as_str(), "security" | "trusted") {
                    "; they need root"
                } else {
                    ""
                }
            ));
        }
        if n.devices > 0 {
            out.push(format!(
                "warning: {} device nodes were not restored: creating them needs root",
                n.devices
            ));
        }
        if n.flags > 0 {
            out.push(format!(
                "warning: {} files kept no immutable or append-only flag: setting them needs root (CAP_LINUX_IMMUTABLE) and a file system that has them",
                n.flags
            ));
        }
        if n.kept > 0 {
            out.push(format!(
                "{} entries already there were left as they were",
                n.kept
            ));
        }
        if n.replaced > 0 {
            out.push(format!(
                "{} entries already there were replaced",
                n.replaced
            ));
        }
        n.devices = 0;
        n.flags = 0;
        n.kept = 0;
        n.replaced = 0;
        out
    }
}

/// Applies owners, permissions, extended attributes and times: what every
/// kind of entry gets once it exists.
#[derive(Debug)]
pub(super) struct MetaWriter {
    pub(super) as_root: bool,
    pub(super) owners: Owners,
    pub(super) notes: RestoreNotes,
    pub(super) users: Mutex<std::collections::HashMap<String, Option<u32>>>,
    pub(super) groups: Mutex<std::collections::HashMap<String, Option<u32>>>,
}

impl MetaWriter {
    /// The owner and group to give `node`: `None` when owners are not
    /// restored.
    fn owner(&self, node: &Node) -> Option<(u32, u32)> {
        if !self.as_root || self.owners == Owners::Skip {
            return None;
        }
        let (uid, gid) = (node.uid?, node.gid?);
        if self.owners == Owners::Numeric {
            return Some((uid, gid));
        }
        let by_name = |cache: &Mutex<std::collections::HashMap<String, Option<u32>>>,
                       name: &Option<String>,
                       user: bool| {
            let name = name.as_ref()?;
            let mut c = cache.lock().unwrap_or_else(PoisonError::into_inner);
            *c.entry(name.clone()).or_insert_with(|| {
                if user {
                    nix::unistd::User::from_name(name)
                        .ok()
                        .flatten()
                        .map(|u| u.uid.as_raw())
                } else {
                    nix::unistd::Group::from_name(name)
                        .ok()
                        .flatten()
                        .map(|g| g.gid.as_raw())
                }
            })
        };
        Some((
            by_name(&self.users, &node.user, true).unwrap_or(uid),
            by_name(&self.groups, &node.group, false).unwrap_or(gid),
        ))
    }

    /// Sets the extended attributes of `full` (not following a link).
    /// Those the file system or the lack of privilege refuses are counted
    /// for the report.
    fn set_xattrs(&self, full: &Path, node: &Node) -> Result<()> {
        for x in &node.xattrs {
            let name = x.name.to_os();
            if let Err(e) = xattr::set(full, &name, &x.value) {
                let refused = matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM | libc::EACCES | libc::ENOTSUP | libc::EINVAL)
                );
                if !refused {
                    return Err(Error::io(
                        format!(
                            "setting extended attribute {} of {}",
                            x.name,
                            full.display()
                        ),
                        e,
                    ));
                }
                let ns = x.name.display().split('.').next().unwrap_or("").to_owned();
                self.notes.note(|n| *n.xattrs.entry(ns).or_default() += 1);
            }
        }
        Ok(())
    }
}

/// The permissions a restored entry ends with: `None` for a symbolic link
/// and for a directory without recorded ones (it keeps the owner-only ones
/// it was created with).
pub(super) fn wanted_mode(node: &Node) -> Option<u32> {
    match node.kind {
        NodeKind::Symlink => None,
        NodeKind::Dir => node.mode,
        NodeKind::Stream => Some(node.mode.unwrap_or(0o600)),
        _ => Some(node.mode.unwrap_or(0o644)),
    }
}

/// The permissions a restored file is created with: its own when they
/// show no one more while it is written than once it is complete (no
/// special bits, nothing for the group beyond what everyone has: the group
/// is the restoring user's until the owner is set), else owner-only. Most
/// files then need no change of mode afterwards.
pub(super) fn creation_mode(node: &Node) -> u32 {
    let mode = wanted_mode(node).unwrap_or(0o600);
    let (group, other) = ((mode >> 3) & 0o7, mode & 0o7);
    if mode & !0o777 == 0 && group & !other == 0 {
        mode
    } else {
        0o600
    }
}

/// Sets owner, permissions, extended attributes and times, in that order
/// (a change of owner clears setuid bits and file capabilities, so those
/// come after it). Through `file` when it is open, otherwise by path,
/// never following a symbolic link. Inode flags come later, last of all.
pub(super) fn set_metadata(
    meta: &MetaWriter,
    full: &Path,
    file: Option<&File>,
    node: &Node,
) -> Result<()> {
    let ctx = |what: &str| format!("{what} {}", full.display());
    // An open file is one this restore created: what it already has is
    // not set again (each change is a journal write and a new ctime).
    let has = match file {
        Some(f) => Some(
            f.metadata()
                .map_err(|e| Error::io(ctx("reading the metadata of"), e))?,
        ),
        None => None,
    };
    if let Some((uid, gid)) = meta.owner(node) {
        if has
            .as_ref()
            .is_none_or(|m| (m.uid(), m.gid()) != (uid, gid))
        {
            match file {
                Some(f) => std::os::unix::fs::fchown(f, Some(uid), Some(gid)),
                None => std::os::unix::fs::lchown(full, Some(uid), Some(gid)),
            }
            .map_err(|e| Error::io(ctx("setting owner of"), e))?;
        }
    }
    let mode = wanted_mode(node).filter(|&m| has.as_ref().is_none_or(|h| h.mode() & 0o7777 != m));
    if let Some(mode) = mode {
        let perms = fs::Permissions::from_mode(mode);
        match file {
            Some(f) => f.set_permissions(perms),
            None => fs::set_permissions(full, perms),
        }
        .map_err(|e| Error::io(ctx("setting permissions of"), e))?;
    }
    meta.set_xattrs(full, node)?;
    if let Some(t) = mtime_of(node) {
        match file {
            Some(f) => filetime::set_file_handle_times(f, None, Some(t)),
            // Also right for directories, FIFOs and devices: the times of
            // the entry itself, the access time set to the same.
            None => filetime::set_symlink_file_times(full, t, t),
        }
        .map_err(|e| Error::io(ctx("setting times of"), e))?;
    }
    Ok(())
}

/// Sets the inode flags of `full` (adding to those it has). `Ok(false)`
/// when the file system or the lack of privilege refuses.
pub(super) fn set_flags(full: &Path, flags: &[FileFlag]) -> Result<bool> {
    use rustix::fs::IFlags;
    use std::os::unix::fs::OpenOptionsExt;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(full)
        .map_err(|e| Error::io(format!("opening {} to set its flags", full.display()), e))?;
    let mut want = IFlags::empty();
    for fl in flags {
        want |= match fl {
            FileFlag::Immutable => IFlags::IMMUTABLE,
            FileFlag::Append => IFlags::APPEND,
            FileFlag::Nodump => IFlags::NODUMP,
        };
    }
    let have = match rustix::fs::ioctl_getflags(&f) {
        Ok(h) => h,
        Err(rustix::io::Errno::NOTTY | rustix::io::Errno::OPNOTSUPP) => return Ok(false),
        Err(e) => {
            return Err(Error::io(
                format!("reading the flags of {}", full.display()),
                e.into(),
            ))
        }
    };
    match rustix::fs::ioctl_setflags(&f, have | want) {
        Ok(()) => Ok(true),
        Err(
            rustix::io::Errno::PERM
            | rustix::io::Errno::ACCESS
            | rustix::io::Errno::NOTTY
            | rustix::io::Errno::OPNOTSUPP,
        ) => Ok(false),
        Err(e) => Err(Error::io(
            format!("setting the flags of {}", full.display()),
            e.into(),
        )),
    }
}

/// Clears the immutable and append-only flags of everything below `dir`
/// (a restore made for a check is removed afterwards). Best effort: what
/// cannot be cleared is reported by the removal that follows.
pub(super) fn clear_flags_below(dir: &Path) {
    use rustix::fs::IFlags;
    use std::os::unix::fs::OpenOptionsExt;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if !(ft.is_file() || ft.is_dir()) {
                continue;
            }
            if ft.is_dir() {
                stack.push(e.path());
            }
            let Ok(f) = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(e.path())
            else {
                continue;
            };
            if let Ok(have) = rustix::fs::ioctl_getflags(&f) {
                let fixed = have - (IFlags::IMMUTABLE | IFlags::APPEND);
                if fixed != have {
                    let _ = rustix::fs::ioctl_setflags(&f, fixed);
                }
            }
        }
    }
}

pub(super) fn mtime_of(node: &Node) -> Option<FileTime> {
    node.mtime_ns.map(|ns| {
        FileTime::from_unix_time(
            ns.div_euclid(1_000_000_000),
            ns.rem_euclid(1_000_000_000) as u32,
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(mode: Option<u32>) -> Node {
        let mut n = Node::new("f", NodeKind::File);
        n.mode = mode;
        n
    }

    #[test]
    fn files_are_created_with_their_mode_only_when_it_shows_no_one_more() {
        for (mode, created) in [
            (Some(0o644), 0o644),
            (Some(0o604), 0o604),
            (Some(0o400), 0o400),
            (Some(0o666), 0o666),
            (Some(0o000), 0o000),
            (None, 0o644),
            // The group would be the restoring user's while it is written.
            (Some(0o640), 0o600),
            (Some(0o660), 0o600),
            // Special bits only once the owner is set.
            (Some(0o4755), 0o600),
            (Some(0o1777), 0o600),
        ] {
            assert_eq!(creation_mode(&file(mode)), created, "{mode:?}");
        }
        let mut stream = file(None);
        stream.kind = NodeKind::Stream;
        assert_eq!(creation_mode(&stream), 0o600);
    }
}
