//! The directories of a physical restore: paths made absolute, the
//! destinations checked empty, the owner restored files get, the
//! directories prepared with their owner and mode, what a failed restore
//! wrote removed, and the file systems synced.

use std::path::{Component, Path, PathBuf};

use backup_core::{Error, Result};

/// `path` made absolute against the current directory, `.` and `..`
/// resolved lexically (the directory may not exist yet).
pub(super) fn absolute(path: &Path) -> Result<PathBuf> {
    let base = if path.is_absolute() {
        PathBuf::new()
    } else {
        std::env::current_dir().map_err(|e| Error::io("reading the current directory", e))?
    };
    let mut out = base;
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    Ok(out)
}

/// Refuses a destination that exists and is not an empty directory.
pub(super) fn check_empty(dir: &Path, what: &str) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(Error::target_failed(format!(
                    "{what} {} is not empty; a data directory is restored into an empty or new directory only (there is no --drop for a data directory): restore into a new directory, or stop the server and move the old one away (nothing was changed)",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            Err(Error::target_failed(format!(
                "{what} {} exists and is not a directory (nothing was changed)",
                dir.display()
            )))
        }
        Err(e) => Err(Error::io(format!("reading {}", dir.display()), e)),
    }
}

/// The owner restored files get when running as root.
pub(super) fn owner_for(data_dir: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let m = std::fs::metadata(data_dir)
        .or_else(|_| std::fs::metadata(data_dir.parent().unwrap_or(Path::new("/"))))
        .ok()?;
    Some((m.uid(), m.gid()))
}

/// Creates a directory of the restore (owned and private like a data
/// directory) and remembers it.
pub(super) fn prepare(
    dir: &Path,
    owner: Option<(u32, u32)>,
    created: &mut Vec<PathBuf>,
) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    set_owner_mode(dir, owner, 0o700)?;
    created.push(dir.to_path_buf());
    Ok(())
}

pub(super) fn set_owner_mode(dir: &Path, owner: Option<(u32, u32)>, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))
            .map_err(|e| Error::io(format!("setting the owner of {}", dir.display()), e))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("setting permissions of {}", dir.display()), e))
}

/// Removes what a failed restore wrote into `dir` (which was empty),
/// after stopping a background WAL prefetch the server it started left
/// writing into `pg_wal` (it would bring files back).
pub(super) fn remove_contents(dir: &Path) {
    let wal = dir.join("pg_wal");
    if wal.is_dir() {
        crate::postgres::physical::wal::PrefetchRun::stop(
            &wal.join("RECOVERYXLOG"),
            std::time::Duration::from_secs(10),
        );
    }
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let r = if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            if let Err(err) = r {
                tracing::warn!(path = %p.display(), error = %err, "Could not remove a partially restored file.");
            }
        }
    }
}

/// Makes the restored files durable: `syncfs` on each file system written.
pub(super) fn sync_file_systems(dirs: &[PathBuf]) -> Result<()> {
    for dir in dirs {
        let f = std::fs::File::open(dir)
            .map_err(|e| Error::io(format!("opening {}", dir.display()), e))?;
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f))
            .map_err(|e| Error::io(format!("syncing {}", dir.display()), e.into()))?;
    }
    Ok(())
}
