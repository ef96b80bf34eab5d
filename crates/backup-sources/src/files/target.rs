//! The files target.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use async_trait::async_trait;
use backup_core::filter::PathFilter;
use backup_core::progress::Progress;
use backup_core::reader::SnapshotReader;
use backup_core::target::{Overwrite, RestoreOptions, RestoreReport, Target};
use backup_core::tree::NodeKind;
use backup_core::{Error, Result};

use super::meta::clear_flags_below;
use super::writer::FsWriter;

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

    /// Checks that the target is a directory or absent.
    fn check_directory(&self) -> Result<()> {
        match fs::symlink_metadata(&self.root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(Error::target_failed(format!(
                "{} exists and is not a directory (nothing was changed)",
                self.root.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("reading {}", self.root.display()), e)),
        }
    }

    /// Checks that the directory is absent or empty.
    fn check_empty(&self) -> Result<()> {
        match fs::read_dir(&self.root) {
            Ok(mut rd) => {
                if rd.next().is_some() {
                    return Err(Error::target_failed(format!(
                        "{} is not empty; restore into an empty or new directory, or add --overwrite if-changed to write into it (this completes an interrupted restore) (nothing was changed)",
                        self.root.display()
                    )));
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                Err(Error::target_failed(format!(
                    "{} exists and is not a directory (nothing was changed)",
                    self.root.display()
                )))
            }
            Err(e) => Err(Error::io(format!("reading {}", self.root.display()), e)),
        }
    }
}

#[async_trait]
impl Target for FilesTarget {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    async fn check_restored(&self, snapshot: &SnapshotReader) -> Result<Vec<String>> {
        let report = super::compare_restored(snapshot, &self.root).await?;
        Ok(report.differences)
    }

    async fn discard(&self) -> Result<()> {
        match fs::remove_dir_all(&self.root) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                // Restored immutable or append-only files refuse removal
                // until their flags are cleared.
                clear_flags_below(&self.root);
                fs::remove_dir_all(&self.root)
                    .map_err(|e| Error::io(format!("removing {}", self.root.display()), e))
            }
            Err(e) => Err(Error::io(format!("removing {}", self.root.display()), e)),
        }
    }

    fn check_options(&self, opts: &RestoreOptions) -> Result<()> {
        opts.refuse_physical("file snapshots")?;
        if opts.skip_missing_roles {
            return Err(Error::Config(
                "--skip-missing-roles applies to PostgreSQL restores".to_owned(),
            ));
        }
        if opts.drop {
            return Err(Error::Config(
                "--drop applies to databases; to restore files into a directory that holds some, use --overwrite never|if-changed|always".to_owned(),
            ));
        }
        if opts.delete && opts.overwrite.is_none() {
            return Err(Error::Config(
                "--delete removes what the snapshot lacks from a directory that holds files; give --overwrite too (never, if-changed or always)".to_owned(),
            ));
        }
        if opts.delete && !(opts.includes.is_empty() && opts.excludes.is_empty()) {
            return Err(Error::Config(
                "--delete mirrors a whole snapshot; it cannot be combined with --include or --exclude".to_owned(),
            ));
        }
        if opts.verify && opts.overwrite == Some(Overwrite::Never) {
            return Err(Error::Config(
                "--verify compares the directory with the snapshot, which --overwrite never does not make it match; use if-changed or always".to_owned(),
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
        snapshot: &SnapshotReader,
        opts: &RestoreOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<RestoreReport> {
        self.check_options(opts)?;
        let filter = PathFilter::new(&opts.includes, &opts.excludes)?;
        if opts.overwrite.is_none() {
            self.check_empty()?;
        } else {
            self.check_directory()?;
        }
        let planned = snapshot.plan(&filter).await?;
        let lines = unmatched_lines(&filter);
        if !filter.is_empty()
            && planned.files + planned.dirs + planned.symlinks + planned.specials == 0
        {
            return Err(Error::target_failed(format!(
                "the --include/--exclude patterns select nothing of snapshot {} ({}); patterns are globs over paths relative to the backed-up directory, and a pattern without / matches names at any depth (nothing was restored)",
                snapshot.id().short(),
                if lines.is_empty() {
                    "the excludes leave nothing".to_owned()
                } else {
                    lines
                        .iter()
                        .map(|l| l.trim_start_matches("warning: "))
                        .collect::<Vec<_>>()
                        .join("; ")
                }
            )));
        }
        if opts.dry_run {
            let mut lines = lines;
            if opts.delete {
                let n = delete_extras(snapshot, &self.root, false).await?;
                lines.push(format!(
                    "--delete would remove {n} entries the snapshot lacks"
                ));
            }
            return Ok(RestoreReport {
                dry_run: true,
                target: self.describe(),
                stats: planned,
                lines,
                ..RestoreReport::default()
            });
        }
        progress.set_total(planned.bytes);
        fs::create_dir_all(&self.root)
            .map_err(|e| Error::io(format!("creating {}", self.root.display()), e))?;
        let mut writer = FsWriter::with_owners(self.root.clone(), opts.owners)?;
        if let Some(mode) = opts.overwrite {
            writer = writer.overwriting(mode);
        }
        let notes = writer.notes();
        let result = snapshot
            .restore_tree(&filter, Box::new(writer), progress)
            .await;
        match result {
            Ok(stats) => {
                let mut lines: Vec<String> = lines.into_iter().chain(notes.take()).collect();
                if opts.delete {
                    let n = delete_extras(snapshot, &self.root, true).await?;
                    lines.push(format!("removed {n} entries the snapshot lacks (--delete)"));
                }
                if opts.verify {
                    // Extra entries count only where the directory should
                    // now hold exactly the snapshot.
                    let extras = opts.overwrite.is_none() || opts.delete;
                    let report =
                        super::compare::compare_selected(snapshot, &self.root, &filter, extras)
                            .await?;
                    if !report.differences.is_empty() {
                        let n = report.differences.len();
                        let shown: Vec<&str> = report
                            .differences
                            .iter()
                            .take(10)
                            .map(String::as_str)
                            .collect();
                        return Err(Error::target_failed(format!(
                            "--verify: {n} differences between {} and snapshot {}: {}{}",
                            self.root.display(),
                            snapshot.id().short(),
                            shown.join("; "),
                            if n > 10 { "; ..." } else { "" }
                        )));
                    }
                    lines.push(format!(
                        "verified: {} files re-read ({} bytes) match the snapshot",
                        report.files, report.bytes
                    ));
                }
                Ok(RestoreReport {
                    dry_run: false,
                    target: self.describe(),
                    stats,
                    lines,
                    ..RestoreReport::default()
                })
            }
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

/// Removes (or, with `remove` false, counts) the entries below `root` that
/// the snapshot does not have, depth first; an entry whose type differs
/// from the snapshot's is left to the restore, which replaced it.
async fn delete_extras(snapshot: &SnapshotReader, root: &Path, remove: bool) -> Result<u64> {
    let mut count = 0;
    let mut stack = vec![(snapshot.root().await?, root.to_owned())];
    while let Some((dir, path)) = stack.pop() {
        let rd = match fs::read_dir(&path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("listing {}", path.display()), e)),
        };
        for e in rd {
            let e = e.map_err(|e| Error::io(format!("listing {}", path.display()), e))?;
            let name = backup_core::tree::FsName::from_os(&e.file_name());
            let ft = e
                .file_type()
                .map_err(|err| Error::io(format!("reading {}", e.path().display()), err))?;
            match dir.entries().iter().find(|n| n.name == name) {
                Some(node) if node.kind == NodeKind::Dir && ft.is_dir() => {
                    stack.push((snapshot.open_dir(node).await?, e.path()));
                }
                Some(_) => {}
                None => {
                    count += 1;
                    if remove {
                        let p = e.path();
                        if ft.is_dir() {
                            fs::remove_dir_all(&p)
                        } else {
                            fs::remove_file(&p)
                        }
                        .map_err(|err| Error::io(format!("removing {}", p.display()), err))?;
                    }
                }
            }
        }
    }
    Ok(count)
}

/// One line per pattern that matched nothing.
fn unmatched_lines(filter: &PathFilter) -> Vec<String> {
    filter
        .unmatched_includes()
        .into_iter()
        .map(|p| format!("warning: --include `{p}` matched nothing"))
        .chain(
            filter
                .unmatched_excludes()
                .into_iter()
                .map(|p| format!("warning: --exclude `{p}` matched nothing")),
        )
        .collect()
}
