//! Repairs: rebuilding the index from pack headers, and finding (and
//! removing) snapshots whose data is gone.

use std::collections::HashSet;

use futures::stream::{self, StreamExt};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{IndexFile, IndexPack, INDEX_VERSION};
use crate::pack::{decode_header, header_length};
use crate::progress::Progress;
use crate::repo::Repository;
use crate::sink::{FileKind, SinkExt};
use crate::verify::{verify, VerifyOptions};

/// Bytes read from the end of a pack in the first attempt to get its
/// header.
const TAIL_GUESS: u64 = 64 * 1024;

/// What `repair index` found and did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepairIndexReport {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Packs whose headers were read.
    pub packs: usize,
    /// Blobs found in them.
    pub blobs: usize,
    /// Packs whose header could not be read (their blobs are lost).
    pub unreadable_packs: Vec<String>,
    /// Index files written.
    pub index_files_written: usize,
    /// Old index files replaced.
    pub index_files_replaced: usize,
}

/// Reads the header of one pack of `size` bytes.
///
/// # Errors
///
/// [`Error::Corrupt`] when the header is damaged; storage errors.
pub async fn read_pack_header(repo: &Repository, pack: &Id, size: u64) -> Result<IndexPack> {
    let name = pack.to_hex();
    let tail_len = size.min(TAIL_GUESS);
    let tail = repo
        .sink()
        .get_range(FileKind::Pack, &name, size - tail_len..size)
        .await?;
    let len = u64::from(header_length(pack, size, &tail)?);
    let sealed = if len + 4 <= tail_len {
        let end = tail.len() - 4;
        tail.slice(end - len as usize..end)
    } else {
        repo.sink()
            .get_range(FileKind::Pack, &name, size - 4 - len..size - 4)
            .await?
    };
    let blobs = decode_header(repo.key(), pack, &sealed)?;
    Ok(IndexPack {
        id: *pack,
        size,
        blobs,
    })
}

/// Rebuilds the index from the headers of every pack in storage. New index
/// files are written first, then one that supersedes every old index file;
/// old files are deleted last, so a crash never leaves less than before.
/// The caller holds an exclusive lock.
///
/// # Errors
///
/// Storage errors; damaged packs are reported, not errors.
pub async fn repair_index(
    repo: &Repository,
    dry_run: bool,
    progress: &dyn Progress,
) -> Result<RepairIndexReport> {
    if !dry_run {
        repo.require_deletes("repair index")?;
    }
    let mut report = RepairIndexReport {
        dry_run,
        ..RepairIndexReport::default()
    };
    let packs = repo.sink().list(FileKind::Pack).await?;
    progress.set_total(packs.len() as u64);
    let results: Vec<(String, Result<IndexPack>)> = stream::iter(packs)
        .map(|o| async move {
            let r = match o.name.parse::<Id>() {
                Ok(id) => read_pack_header(repo, &id, o.size).await,
                Err(e) => Err(e),
            };
            (o.name, r)
        })
        .buffer_unordered(8)
        .collect()
        .await;
    let mut good = Vec::new();
    for (name, r) in results {
        progress.add_bytes(1);
        match r {
            Ok(p) => good.push(p),
            Err(e @ (Error::Corrupt { .. } | Error::Config(_))) => {
                tracing::warn!(pack = %name, error = %e, "Pack header unreadable; its blobs are lost.");
                report.unreadable_packs.push(name);
            }
            Err(e) => return Err(e),
        }
    }
    good.sort_by_key(|p| p.id);
    report.packs = good.len();
    report.blobs = good.iter().map(|p| p.blobs.len()).sum();
    let old = repo.sink().list_names(FileKind::Index).await?;
    report.index_files_replaced = old.len();
    if dry_run {
        report.index_files_written = good.len().div_ceil(1000) + 1;
        return Ok(report);
    }
    let written = write_replacement_index(repo, good, &old).await?;
    report.index_files_written = written;
    Ok(report)
}

/// Writes `packs` as new index files, then a file superseding `old`, reads
/// the new files back, and deletes `old`. Returns the number of files
/// written.
pub(crate) async fn write_replacement_index(
    repo: &Repository,
    packs: Vec<IndexPack>,
    old: &[String],
) -> Result<usize> {
    let mut replacement = ReplacementIndex::default();
    replacement.add(repo, packs).await?;
    replacement.finish(repo, old).await
}

/// A new index written a batch of packs at a time, which replaces the old
/// one only when [`ReplacementIndex::finish`] has read every new file back.
#[derive(Debug, Default)]
pub(crate) struct ReplacementIndex {
    written: Vec<Id>,
}

impl ReplacementIndex {
    /// Writes `packs` as new index files.
    pub(crate) async fn add(&mut self, repo: &Repository, packs: Vec<IndexPack>) -> Result<()> {
        for file in IndexFile::split(packs) {
            self.written
                .push(repo.save_file(FileKind::Index, &file).await?);
        }
        Ok(())
    }

    /// Reads the new files back, writes the file superseding `old` and
    /// deletes `old`. Returns the number of files written.
    pub(crate) async fn finish(self, repo: &Repository, old: &[String]) -> Result<usize> {
        let written = self.written;
        for id in &written {
            let _: IndexFile = repo.load_file(FileKind::Index, &id.to_hex()).await?;
        }
        let marker = IndexFile {
            version: INDEX_VERSION,
            supersedes: old.iter().filter_map(|n| n.parse().ok()).collect(),
            packs: Vec::new(),
        };
        let marker_id = repo.save_file(FileKind::Index, &marker).await?;
        let keep: HashSet<String> = written
            .iter()
            .chain(std::iter::once(&marker_id))
            .map(Id::to_hex)
            .collect();
        for name in old.iter().filter(|n| !keep.contains(*n)) {
            // A file under S3 Object Lock stays until its retention ends; the
            // marker supersedes it, so readers ignore it, and the next
            // replacement deletes it.
            match repo.sink().delete(FileKind::Index, name).await {
                Ok(()) => {}
                Err(Error::Retained { until, .. }) => {
                    tracing::info!(index = %name, %until, "A superseded index file is locked; a later prune deletes it.");
                }
                Err(e) => return Err(e),
            }
        }
        Ok(written.len() + 1)
    }
}

/// A snapshot that cannot be restored completely.
#[derive(Debug, Clone, Serialize)]
pub struct DamagedSnapshot {
    /// The snapshot file name (id).
    pub id: String,
    /// Whether it was removed.
    pub removed: bool,
}

/// Finds snapshots whose manifest, trees or data are missing or unreadable
/// (a structural check, like `verify` without `--read-data`) and, with
/// `remove` and without `dry_run`, deletes them; when packs the index lists
/// are missing, the index is then rebuilt from the packs that remain (see
/// [`repair_index`]), so that a following check passes. The caller holds
/// an exclusive lock.
///
/// # Errors
///
/// Storage errors.
pub async fn repair_snapshots(
    repo: &Repository,
    remove: bool,
    dry_run: bool,
    progress: &dyn Progress,
) -> Result<Vec<DamagedSnapshot>> {
    let removing = remove && !dry_run;
    if removing {
        repo.require_deletes("repair snapshots --remove")?;
    }
    let report = verify(repo.clone(), &VerifyOptions::default(), progress).await?;
    let mut out = Vec::new();
    for id in report.damaged_snapshots {
        if removing {
            repo.sink().delete(FileKind::Snapshot, &id).await?;
        }
        out.push(DamagedSnapshot {
            id,
            removed: removing,
        });
    }
    if removing && !report.missing_packs.is_empty() {
        repair_index(repo, false, progress).await?;
    }
    Ok(out)
}
