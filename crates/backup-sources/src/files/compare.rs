//! Checks a restored directory against the snapshot it came from.

use std::fs;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use backup_core::chunker::Chunker;
use backup_core::filter::PathFilter;
use backup_core::reader::{Dir, SnapshotReader};
use backup_core::tree::{Node, NodeKind};
use backup_core::{Error, Id, Result};

/// The outcome of [`compare_restored`].
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CompareReport {
    /// Files and streams compared.
    pub files: u64,
    /// Bytes re-read and re-hashed.
    pub bytes: u64,
    /// Every difference found.
    pub differences: Vec<String>,
}

/// Compares the directory `dir` with the snapshot: every entry
/// exists with the right type, permissions and link target, and every
/// file's content, re-chunked and re-hashed with the repository's keys,
/// gives exactly the chunk ids the snapshot lists. Extra entries in `dir`
/// are differences too.
///
/// # Errors
///
/// Errors loading the snapshot's trees; differences are reported in the
/// [`CompareReport`], not as errors.
pub async fn compare_restored(snapshot: &SnapshotReader, dir: &Path) -> Result<CompareReport> {
    compare_selected(snapshot, dir, &PathFilter::all(), true).await
}

/// [`compare_restored`] for a restore of what `filter` selects: entries it
/// leaves out are not expected, and with `extras` false, entries the
/// snapshot lacks are not differences (a restore into a directory that
/// held files).
///
/// # Errors
///
/// As [`compare_restored`].
pub async fn compare_selected(
    snapshot: &SnapshotReader,
    dir: &Path,
    filter: &PathFilter,
    extras: bool,
) -> Result<CompareReport> {
    let mut report = CompareReport::default();
    let mut stack: Vec<(Dir, PathBuf, PathBuf, bool)> =
        vec![(snapshot.root().await?, dir.to_owned(), PathBuf::new(), true)];
    while let Some((tree, path, rel, whole)) = stack.pop() {
        let mut expected: Vec<std::ffi::OsString> = Vec::new();
        for node in tree.entries() {
            let p = path.join(node.name.to_os());
            let r = rel.join(node.name.to_os());
            if filter.is_excluded(&r) {
                continue;
            }
            expected.push(node.name.to_os());
            let selected = filter.is_selected(&r);
            if selected {
                if compare_node(snapshot, node, &p, &mut report).await? {
                    stack.push((snapshot.open_dir(node).await?, p, r, true));
                }
            } else if node.kind == NodeKind::Dir && p.is_dir() {
                // Not selected itself; something below may be.
                stack.push((snapshot.open_dir(node).await?, p, r, false));
            }
        }
        if !(extras && whole && filter.is_empty()) {
            continue;
        }
        if let Ok(rd) = fs::read_dir(&path) {
            for e in rd.flatten() {
                if !expected.contains(&e.file_name()) {
                    report
                        .differences
                        .push(format!("{}: not in the snapshot", e.path().display()));
                }
            }
        }
    }
    Ok(report)
}

/// Compares one entry; returns whether to descend into it (a directory
/// found as such).
async fn compare_node(
    snapshot: &SnapshotReader,
    node: &Node,
    path: &Path,
    report: &mut CompareReport,
) -> Result<bool> {
    let diff = |report: &mut CompareReport, what: String| {
        report
            .differences
            .push(format!("{}: {what}", path.display()));
    };
    let meta = match fs::symlink_metadata(path) {
        Ok(m) => m,
        Err(e) => {
            diff(report, format!("missing ({e})"));
            return Ok(false);
        }
    };
    let ft = meta.file_type();
    let kind_ok = match node.kind {
        NodeKind::Dir => ft.is_dir(),
        NodeKind::File | NodeKind::Stream => ft.is_file(),
        NodeKind::Symlink => ft.is_symlink(),
        NodeKind::Fifo => ft.is_fifo(),
        NodeKind::Chardev => ft.is_char_device() && node.rdev == Some(meta.rdev()),
        NodeKind::Blockdev => ft.is_block_device() && node.rdev == Some(meta.rdev()),
    };
    if !kind_ok {
        diff(report, format!("expected a {:?}", node.kind));
        return Ok(false);
    }
    if node.kind != NodeKind::Symlink {
        if let Some(mode) = node.mode {
            let got = meta.permissions().mode() & 0o7777;
            if got != mode {
                diff(report, format!("mode {got:o}, expected {mode:o}"));
            }
        }
    }
    match node.kind {
        NodeKind::Dir => Ok(true),
        NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev => Ok(false),
        NodeKind::Symlink => {
            let target = fs::read_link(path)
                .map_err(|e| Error::io(format!("reading link {}", path.display()), e))?;
            if Some(target.as_os_str().to_owned())
                != node
                    .link_target
                    .as_ref()
                    .map(backup_core::tree::FsName::to_os)
            {
                diff(report, "link target differs".to_owned());
            }
            Ok(false)
        }
        NodeKind::File | NodeKind::Stream => {
            report.files += 1;
            if meta.size() != node.size {
                diff(
                    report,
                    format!("{} bytes, expected {}", meta.size(), node.size),
                );
                return Ok(false);
            }
            let expected = snapshot.content_ids(node).await?;
            let (params, seed) = snapshot.chunker_params();
            let hasher = snapshot.clone();
            let p = path.to_owned();
            let got = tokio::task::spawn_blocking(move || -> Result<Vec<Id>> {
                let f = fs::File::open(&p)
                    .map_err(|e| Error::io(format!("opening {}", p.display()), e))?;
                let mut chunker = Chunker::new(f, params, seed);
                let mut ids = Vec::new();
                while let Some(c) = chunker
                    .next_chunk()
                    .map_err(|e| Error::io(format!("reading {}", p.display()), e))?
                {
                    ids.push(hasher.blob_id(&c));
                }
                Ok(ids)
            })
            .await
            .map_err(|e| Error::Generic {
                backend: "compare",
                source: Box::new(e),
            })??;
            report.bytes += node.size;
            if got != expected {
                diff(report, "content differs from the snapshot".to_owned());
            }
            Ok(false)
        }
    }
}
