//! The files target.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use backup_core::filter::PathFilter;
use backup_core::progress::Progress;
use backup_core::repo::IndexedRepository;
use backup_core::restorer::{plan, restore_tree, TreeWriter};
use backup_core::snapshot::SnapshotEntry;
use backup_core::target::{RestoreOptions, RestoreReport, Target};
use backup_core::tree::{Node, NodeKind};
use backup_core::{Error, Result};
use filetime::FileTime;

/// Restores into a local directory that is empty or does not exist.
#[derive(Debug, Clone)]
pub struct FilesTarget {
    root: PathBuf,
}

impl FilesTarget {
    /// A target directory.
    pub fn new(root: PathBuf) -> Self {
        FilesTarget { root }
    }

    /// Checks that the directory is absent or empty.
    fn check_empty(&self) -> Result<()> {
        match fs::read_dir(&self.root) {
            Ok(mut rd) => {
                if rd.next().is_some() {
                    return Err(Error::Target(format!(
                        "{} is not empty; restore into an empty or new directory (nothing was changed)",
                        self.root.display()
                    )));
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => Err(Error::Target(format!(
                "{} exists and is not a directory (nothing was changed)",
                self.root.display()
            ))),
            Err(e) => Err(Error::io(format!("reading {}", self.root.display()), e)),
        }
    }
}

#[async_trait]
impl Target for FilesTarget {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn check_options(&self, opts: &RestoreOptions) -> Result<()> {
        if opts.drop {
            return Err(Error::Config(
                "--drop applies to databases; a file restore never overwrites, so restore into an empty or new directory".to_owned(),
            ));
        }
        if opts.at.is_some() {
            return Err(Error::Config(
                "--at (point-in-time restore) applies to databases, not files".to_owned(),
            ));
        }
        if !opts.renames.is_empty() {
            return Err(Error::Config(
                "--rename applies to databases, not files".to_owned(),
            ));
        }
        Ok(())
    }

    async fn restore(
        &self,
        repo: &IndexedRepository,
        snapshot: &SnapshotEntry,
        opts: &RestoreOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<RestoreReport> {
        self.check_options(opts)?;
        let filter = PathFilter::new(&opts.includes, &opts.excludes)?;
        self.check_empty()?;
        let planned = plan(repo, snapshot.snapshot.tree, &filter).await?;
        if opts.dry_run {
            return Ok(RestoreReport {
                dry_run: true,
                target: self.describe(),
                stats: planned,
                details: serde_json::Value::Null,
            });
        }
        progress.set_total(planned.bytes);
        fs::create_dir_all(&self.root)
            .map_err(|e| Error::io(format!("creating {}", self.root.display()), e))?;
        let writer = FsWriter::new(self.root.clone());
        let result = restore_tree(
            repo,
            snapshot.snapshot.tree,
            &filter,
            Box::new(writer),
            progress,
        )
        .await;
        match result {
            Ok(stats) => Ok(RestoreReport {
                dry_run: false,
                target: self.describe(),
                stats,
                details: serde_json::Value::Null,
            }),
            Err(e) => {
                tracing::error!(
                    target_dir = %self.root.display(),
                    "Restore failed; files restored before the failure are left in place (the file being written was removed)."
                );
                Err(e)
            }
        }
    }
}

/// Writes a restore into a directory. Never replaces an existing entry.
///
/// Directories are created owner-writable and get their real permissions
/// and times when their last entry is written; owners are restored when
/// running as root.
#[derive(Debug)]
pub struct FsWriter {
    root: PathBuf,
    as_root: bool,
    current: Option<File>,
}

impl FsWriter {
    /// A writer into `root` (which must exist).
    pub fn new(root: PathBuf) -> Self {
        FsWriter {
            root,
            as_root: nix::unistd::Uid::effective().is_root(),
            current: None,
        }
    }

    fn full(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }
}

fn mtime_of(node: &Node) -> Option<FileTime> {
    node.mtime_ns.map(|ns| {
        FileTime::from_unix_time(
            ns.div_euclid(1_000_000_000),
            ns.rem_euclid(1_000_000_000) as u32,
        )
    })
}

impl TreeWriter for FsWriter {
    fn enter_dir(&mut self, path: &Path, _node: &Node) -> Result<()> {
        let full = self.full(path);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&full)
            .map_err(|e| Error::io(format!("creating directory {}", full.display()), e))
    }

    fn leave_dir(&mut self, path: &Path, node: &Node) -> Result<()> {
        let full = self.full(path);
        if self.as_root {
            if let (Some(uid), Some(gid)) = (node.uid, node.gid) {
                std::os::unix::fs::chown(&full, Some(uid), Some(gid))
                    .map_err(|e| Error::io(format!("setting owner of {}", full.display()), e))?;
            }
        }
        if let Some(mode) = node.mode {
            fs::set_permissions(&full, fs::Permissions::from_mode(mode))
                .map_err(|e| Error::io(format!("setting permissions of {}", full.display()), e))?;
        }
        if let Some(t) = mtime_of(node) {
            filetime::set_file_mtime(&full, t)
                .map_err(|e| Error::io(format!("setting times of {}", full.display()), e))?;
        }
        Ok(())
    }

    fn start_file(&mut self, path: &Path, _node: &Node) -> Result<()> {
        let full = self.full(path);
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&full)
            .map_err(|e| Error::io(format!("creating {}", full.display()), e))?;
        self.current = Some(f);
        Ok(())
    }

    fn write_data(&mut self, data: &[u8]) -> Result<()> {
        let f = self
            .current
            .as_mut()
            .ok_or_else(|| Error::Target("data without an open file".to_owned()))?;
        f.write_all(data)
            .map_err(|e| Error::io("writing restored data", e))
    }

    fn finish_file(&mut self, path: &Path, node: &Node) -> Result<()> {
        let full = self.full(path);
        let f = self
            .current
            .take()
            .ok_or_else(|| Error::Target("finish without an open file".to_owned()))?;
        let ctx = |what: &str| format!("{what} {}", full.display());
        if self.as_root {
            if let (Some(uid), Some(gid)) = (node.uid, node.gid) {
                std::os::unix::fs::fchown(&f, Some(uid), Some(gid))
                    .map_err(|e| Error::io(ctx("setting owner of"), e))?;
            }
        }
        let mode = node.mode.unwrap_or(if node.kind == NodeKind::Stream {
            0o600
        } else {
            0o644
        });
        f.set_permissions(fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(ctx("setting permissions of"), e))?;
        if let Some(t) = mtime_of(node) {
            filetime::set_file_handle_times(&f, None, Some(t))
                .map_err(|e| Error::io(ctx("setting times of"), e))?;
        }
        Ok(())
    }

    fn abort_file(&mut self, path: &Path) {
        self.current = None;
        let full = self.full(path);
        if let Err(e) = fs::remove_file(&full) {
            tracing::warn!(file = %full.display(), error = %e, "Could not remove a partially restored file.");
        }
    }

    fn symlink(&mut self, path: &Path, node: &Node) -> Result<()> {
        let full = self.full(path);
        let target = node.link_target.as_ref().ok_or_else(|| {
            Error::corrupt(
                backup_core::FileKind::Pack,
                path.display(),
                "symbolic link without target",
            )
        })?;
        std::os::unix::fs::symlink(target.to_os(), &full)
            .map_err(|e| Error::io(format!("creating link {}", full.display()), e))?;
        if self.as_root {
            if let (Some(uid), Some(gid)) = (node.uid, node.gid) {
                std::os::unix::fs::lchown(&full, Some(uid), Some(gid))
                    .map_err(|e| Error::io(format!("setting owner of {}", full.display()), e))?;
            }
        }
        if let Some(t) = mtime_of(node) {
            filetime::set_symlink_file_times(&full, t, t)
                .map_err(|e| Error::io(format!("setting times of {}", full.display()), e))?;
        }
        Ok(())
    }
}
