//! Verification of a repository: structure, and optionally content.

use std::collections::{HashMap, HashSet};

use futures::stream::{self, StreamExt};
use serde::Serialize;

use crate::capture::{CaptureName, CaptureRecord};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::pack::{decode_blob, decode_header, header_length, BlobType, PackEntry};
use crate::progress::Progress;
use crate::repo::{IndexedRepository, Repository};
use crate::sink::FileKind;
use crate::snapshot::SnapshotEntry;
use crate::tree::{decode_content_list, Node, NodeKind};
use crate::walk::walk_trees;

/// What to verify.
#[derive(Debug, Clone, Default)]
pub struct VerifyOptions {
    /// Only these snapshots (all when `None`).
    pub snapshots: Option<Vec<Id>>,
    /// Download, decrypt and rehash this percentage of packs (0 < p <= 100);
    /// `None` checks structure only.
    pub read_data_percent: Option<f64>,
    /// Download and check exactly these packs (those the index lists that
    /// are not already known to be damaged) instead of a random
    /// `read_data_percent` share: for a caller that had to prepare the
    /// packs it reads (thaw archived ones) and so chose them itself.
    pub read_packs: Option<Vec<Id>>,
}

/// One problem found.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// What kind of object is affected.
    pub kind: FileKind,
    /// Its name.
    pub object: String,
    /// What is wrong.
    pub message: String,
}

/// The outcome of a verification.
#[derive(Debug, Clone, Default, Serialize)]
pub struct VerifyReport {
    /// Snapshots whose structure was checked.
    pub snapshots_checked: usize,
    /// Trees read.
    pub trees_checked: usize,
    /// Distinct data blobs referenced by the checked snapshots.
    pub blobs_referenced: usize,
    /// Packs listed in the index.
    pub packs_indexed: usize,
    /// Packs downloaded and checked blob by blob.
    pub packs_read: usize,
    /// Bytes downloaded for content checks.
    pub bytes_read: u64,
    /// Packs chosen for reading that are in an archive storage class and
    /// were not read (not damage: thaw them first, `verify --read-data
    /// --cold-wait`).
    pub packs_archived: usize,
    /// Packs in storage that no index lists (left by interrupted backups;
    /// not damage).
    pub unindexed_packs: usize,
    /// Packs the index lists that storage does not have.
    pub missing_packs: Vec<String>,
    /// Everything found wrong.
    pub problems: Vec<Problem>,
    /// Snapshots that cannot be fully restored because of the problems.
    pub damaged_snapshots: Vec<String>,
    /// Capture records (WAL, oplog pieces) checked.
    pub captures_checked: usize,
    /// Capture records whose data was read and checked.
    pub captures_read: usize,
}

impl VerifyReport {
    /// Whether nothing is wrong.
    pub fn is_ok(&self) -> bool {
        self.problems.is_empty()
    }

    fn problem(
        &mut self,
        kind: FileKind,
        object: impl Into<String>,
        message: impl std::fmt::Display,
    ) {
        self.problems.push(Problem {
            kind,
            object: object.into(),
            message: message.to_string(),
        });
    }
}

/// Checks a repository.
///
/// Structure: every index file and snapshot decrypts; every indexed pack
/// exists with the indexed size; every tree of the checked snapshots loads
/// and every blob they reference is indexed. With
/// [`VerifyOptions::read_data_percent`], packs are downloaded and each
/// checked against its name, its header against the index, and every blob
/// decrypted, decompressed and rehashed ([`VerifyOptions::read_packs`]
/// names the packs instead of a share). A pack in an archive storage class
/// that has not been thawed ([`Error::Archived`]) is counted in
/// [`VerifyReport::packs_archived`] and not read: it is not damage.
///
/// # Errors
///
/// Only errors that stop the check itself (listing fails, no access);
/// damage is reported in the [`VerifyReport`].
pub async fn verify(
    repo: Repository,
    opts: &VerifyOptions,
    progress: &dyn Progress,
) -> Result<VerifyReport> {
    let mut report = VerifyReport::default();
    progress.set_phase("loading index");
    let (repo, damaged_index) = repo.load_index_lenient().await?;
    for (name, e) in damaged_index {
        report.problem(FileKind::Index, name, e);
    }
    progress.set_phase("checking packs");
    let bad_packs = check_packs(&repo, &mut report).await?;
    if opts.snapshots.is_none() {
        progress.set_phase("checking captures");
        check_captures(&repo, opts.read_data_percent, &mut report).await?;
    } else if report.unindexed_packs > 0 {
        // Captures are not checked for a selection of snapshots, but their
        // packs are not left over from interrupted backups either.
        let (records, _) = repo.capture_records().await?;
        discount_capture_packs(&repo, &records, &mut report).await?;
    }

    progress.set_phase("checking snapshots");
    let (snapshots, bad_snapshots) = repo.snapshots().await?;
    for (name, e) in bad_snapshots {
        report.problem(FileKind::Snapshot, name.clone(), e);
        report.damaged_snapshots.push(name);
    }
    let selected: Vec<SnapshotEntry> = match &opts.snapshots {
        None => snapshots,
        Some(ids) => snapshots
            .into_iter()
            .filter(|s| ids.contains(&s.id))
            .collect(),
    };
    report.snapshots_checked = selected.len();
    // Bad blobs: referenced but unindexed, or in a damaged pack, or failing
    // content checks.
    let mut bad_blobs = check_references(&repo, &selected, &bad_packs, &mut report).await?;

    if opts.read_data_percent.is_some() || opts.read_packs.is_some() {
        progress.set_phase("reading data");
        read_data(
            &repo,
            opts,
            &bad_packs,
            &mut report,
            &mut bad_blobs,
            progress,
        )
        .await?;
    }

    if !bad_blobs.is_empty() {
        for s in &selected {
            if snapshot_affected(&repo, s.snapshot.tree, &bad_blobs).await {
                report.damaged_snapshots.push(s.id.to_hex());
            }
        }
    }
    report.damaged_snapshots.sort();
    report.damaged_snapshots.dedup();
    progress.finish();
    Ok(report)
}

/// Compares the indexed packs with the stored ones: a pack missing or of
/// another size is a problem (returned); packs no index lists are counted.
async fn check_packs(repo: &IndexedRepository, report: &mut VerifyReport) -> Result<HashSet<Id>> {
    let stored: HashMap<String, u64> = repo.pack_sizes().await?;
    let indexed: HashMap<Id, u64> = repo.index().packs().copied().collect();
    report.packs_indexed = indexed.len();
    let mut bad_packs: HashSet<Id> = HashSet::new();
    for (id, size) in &indexed {
        match stored.get(&id.to_hex()) {
            None => {
                report.missing_packs.push(id.to_hex());
                report.problem(
                    FileKind::Pack,
                    id.to_hex(),
                    "listed in the index but missing",
                );
                bad_packs.insert(*id);
            }
            Some(s) if s != size => {
                report.problem(
                    FileKind::Pack,
                    id.to_hex(),
                    format!("size {s} differs from the indexed size {size}"),
                );
                bad_packs.insert(*id);
            }
            Some(_) => {}
        }
    }
    report.unindexed_packs = stored
        .keys()
        .filter(|n| {
            n.parse::<Id>()
                .map_or(true, |id| !indexed.contains_key(&id))
        })
        .count();
    Ok(bad_packs)
}

/// Takes the stored packs that hold captured pieces out of the report's
/// unindexed count (they are listed by capture records, not indexes);
/// returns the stored packs and their sizes. The packs are listed after
/// the records were read, not taken from [`check_packs`]: a piece stored
/// meanwhile has its pack written before its record, so every record read
/// finds its pack listed.
async fn discount_capture_packs(
    repo: &IndexedRepository,
    records: &[(CaptureName, CaptureRecord)],
    report: &mut VerifyReport,
) -> Result<HashMap<String, u64>> {
    let stored: HashMap<String, u64> = repo.pack_sizes().await?;
    let packs = crate::capture::capture_packs(records);
    let indexed: HashSet<Id> = repo.index().packs().map(|(id, _)| *id).collect();
    report.unindexed_packs = report.unindexed_packs.saturating_sub(
        packs
            .iter()
            .filter(|p| stored.contains_key(&p.to_hex()) && !indexed.contains(p))
            .count(),
    );
    Ok(stored)
}

/// Checks every capture record: it reads, its pack is stored and long
/// enough; with `read_percent`, that share of the records' data is read
/// and checked blob by blob. Capture packs are not counted as unindexed.
async fn check_captures(
    repo: &IndexedRepository,
    read_percent: Option<f64>,
    report: &mut VerifyReport,
) -> Result<()> {
    let (records, bad) = repo.capture_records().await?;
    for (name, e) in bad {
        report.problem(FileKind::Capture, name.file_name(), e);
    }
    let stored = discount_capture_packs(repo, &records, report).await?;
    report.captures_checked = records.len();
    let mut to_read = Vec::new();
    for (i, (name, rec)) in records.iter().enumerate() {
        let Some(pack) = rec.pack else { continue };
        let end = rec
            .blobs
            .iter()
            .map(|b| u64::from(b.offset) + u64::from(b.length))
            .max()
            .unwrap_or(0);
        match stored.get(&pack.to_hex()) {
            None => report.problem(
                FileKind::Capture,
                name.file_name(),
                format!("its pack {} is missing", pack.short()),
            ),
            Some(&size) if size < end => report.problem(
                FileKind::Capture,
                name.file_name(),
                format!(
                    "its pack {} is shorter ({size} bytes) than the record says",
                    pack.short()
                ),
            ),
            Some(_) => {
                // An even spread of the records for a partial read.
                if let Some(p) = read_percent {
                    let every = (100.0 / p).max(1.0);
                    if (i as f64 % every) < 1.0 {
                        to_read.push((name.clone(), rec.clone()));
                    }
                }
            }
        }
    }
    for (name, rec) in to_read {
        report.captures_read += 1;
        report.bytes_read += rec.blobs.iter().map(|b| u64::from(b.length)).sum::<u64>();
        if let Err(e) = repo.read_capture(&rec).await {
            report.problem(FileKind::Capture, name.file_name(), e);
        }
    }
    Ok(())
}

/// Walks the trees of `selected` (each shared tree once) and checks that
/// every tree and content list loads and every referenced data blob is
/// indexed in a sound pack; returns the bad blobs.
async fn check_references(
    repo: &IndexedRepository,
    selected: &[SnapshotEntry],
    bad_packs: &HashSet<Id>,
    report: &mut VerifyReport,
) -> Result<HashSet<(BlobType, Id)>> {
    let mut bad_blobs: HashSet<(BlobType, Id)> = HashSet::new();
    let mut referenced: HashSet<Id> = HashSet::new();
    let mut seen = HashSet::new();
    let mut tree_problems = Vec::new();
    let mut lists = Vec::new();
    walk_trees(
        repo,
        selected.iter().map(|s| s.snapshot.tree),
        &mut seen,
        |_, nodes| {
            for n in nodes {
                referenced.extend(n.content.iter().copied());
                lists.extend(n.content_lists.iter().copied());
            }
            Ok(())
        },
        |id, e| {
            tree_problems.push((*id, e));
            Ok(())
        },
    )
    .await?;
    report.trees_checked = seen.len();
    for (id, e) in tree_problems {
        report.problem(FileKind::Pack, format!("tree {id}"), e);
        bad_blobs.insert((BlobType::Tree, id));
    }
    for id in lists {
        let list = match repo.read_blob(BlobType::Tree, &id).await {
            Ok(data) => decode_content_list(&data, &id),
            Err(e) => Err(e),
        };
        match list {
            Ok(ids) => referenced.extend(ids),
            Err(e) => {
                report.problem(FileKind::Pack, format!("content list {id}"), e);
                bad_blobs.insert((BlobType::Tree, id));
            }
        }
    }
    report.blobs_referenced = referenced.len();
    for id in &referenced {
        match repo.index().get(BlobType::Data, id) {
            None => {
                report.problem(
                    FileKind::Index,
                    format!("blob {id}"),
                    "referenced by a snapshot but not in the index",
                );
                bad_blobs.insert((BlobType::Data, *id));
            }
            Some(loc) if bad_packs.contains(&loc.pack) => {
                bad_blobs.insert((BlobType::Data, *id));
            }
            Some(_) => {}
        }
    }
    Ok(bad_blobs)
}

/// What reading one pack found: its damaged blobs and the messages
/// about it, or that it is archived (not read, not damage).
enum PackCheck {
    Read(Vec<(BlobType, Id)>, Vec<String>),
    Archived,
}

async fn read_data(
    repo: &IndexedRepository,
    opts: &VerifyOptions,
    skip: &HashSet<Id>,
    report: &mut VerifyReport,
    bad_blobs: &mut HashSet<(BlobType, Id)>,
    progress: &dyn Progress,
) -> Result<()> {
    let mut packs: Vec<(Id, u64)> = repo
        .index()
        .packs()
        .filter(|(id, _)| !skip.contains(id))
        .copied()
        .collect();
    if let Some(chosen) = &opts.read_packs {
        let chosen: HashSet<&Id> = chosen.iter().collect();
        packs.retain(|(id, _)| chosen.contains(id));
    } else if let Some(percent) = opts.read_data_percent.filter(|p| *p < 100.0) {
        // A random subset, so that repeated partial checks cover everything
        // over time.
        let want = ((packs.len() as f64 * percent / 100.0).ceil() as usize).min(packs.len());
        let mut keyed: Vec<(Id, (Id, u64))> =
            packs.into_iter().map(|p| (Id::random(), p)).collect();
        keyed.sort_by_key(|(k, _)| *k);
        packs = keyed.into_iter().take(want).map(|(_, p)| p).collect();
    }
    progress.set_total(packs.iter().map(|(_, s)| s).sum());
    // The packs' entries a batch at a time, so that a repository of
    // millions of blobs is not held grouped by pack all at once.
    let index = repo.index();
    let per_pack = (index.entry_count() / index.pack_count().max(1) as u64).max(1);
    let batch = (READ_BATCH_BLOBS / per_pack).max(1) as usize;
    for chunk in packs.chunks(batch) {
        let wanted: HashSet<Id> = chunk.iter().map(|(id, _)| *id).collect();
        let mut by_pack = index.entries_of(&wanted)?;
        let results: Vec<(Id, u64, PackCheck)> = stream::iter(chunk.iter().copied())
            .map(|(id, size)| {
                let entries = by_pack.remove(&id).unwrap_or_default();
                let repo = repo.clone();
                async move { (id, size, check_pack(&repo, id, size, entries).await) }
            })
            .buffer_unordered(4)
            .collect()
            .await;
        tally(results, report, bad_blobs, progress);
    }
    Ok(())
}

/// Blobs whose entries `verify --read-data` holds at once, grouped by pack.
const READ_BATCH_BLOBS: u64 = 250_000;

/// Adds what reading packs found to the report.
fn tally(
    results: Vec<(Id, u64, PackCheck)>,
    report: &mut VerifyReport,
    bad_blobs: &mut HashSet<(BlobType, Id)>,
    progress: &dyn Progress,
) {
    for (id, size, check) in results {
        let PackCheck::Read(bad, msgs) = check else {
            report.packs_archived += 1;
            progress.add_bytes(size);
            continue;
        };
        report.packs_read += 1;
        report.bytes_read += size;
        progress.add_bytes(size);
        for m in msgs {
            report.problem(FileKind::Pack, id.to_hex(), m);
        }
        bad_blobs.extend(bad);
    }
}

/// Downloads one pack and checks it.
async fn check_pack(
    repo: &IndexedRepository,
    id: Id,
    size: u64,
    indexed: Vec<PackEntry>,
) -> PackCheck {
    let all_bad = |indexed: &[PackEntry]| indexed.iter().map(|e| (e.blob_type, e.id)).collect();
    let data = match repo.sink().get(FileKind::Pack, &id.to_hex()).await {
        Ok(d) => d,
        Err(Error::Archived { .. }) => return PackCheck::Archived,
        Err(e) => return PackCheck::Read(all_bad(&indexed), vec![format!("cannot be read: {e}")]),
    };
    let key = repo.key().clone();
    let hasher = repo.hasher().clone();
    let fallback = all_bad(&indexed);
    let checked = tokio::task::spawn_blocking(move || {
        let mut msgs = Vec::new();
        if data.len() as u64 != size {
            msgs.push(format!("is {} bytes, the index says {size}", data.len()));
        }
        if Id::hash(&data) != id {
            msgs.push("content does not match its name (hash mismatch)".to_owned());
        }
        match header_length(&id, data.len() as u64, &data).and_then(|len| {
            let end = data.len() - 4;
            decode_header(&key, &id, &data[end - len as usize..end])
        }) {
            Ok(header) => {
                let hset: HashSet<(BlobType, Id, u32)> = header
                    .iter()
                    .map(|e| (e.blob_type, e.id, e.offset))
                    .collect();
                for e in &indexed {
                    if !hset.contains(&(e.blob_type, e.id, e.offset)) {
                        msgs.push(format!(
                            "the index lists blob {} that the pack header does not",
                            e.id
                        ));
                    }
                }
            }
            Err(e) => msgs.push(e.to_string()),
        }
        let mut bad = Vec::new();
        for e in &indexed {
            let range = e.offset as usize..(e.offset as usize + e.length as usize);
            let ok = data
                .get(range)
                .is_some_and(|stored| decode_blob(&key, &hasher, e, &id, stored).is_ok());
            if !ok {
                msgs.push(format!("blob {} is damaged", e.id));
                bad.push((e.blob_type, e.id));
            }
        }
        (bad, msgs)
    })
    .await;
    let (bad, msgs) = checked.unwrap_or_else(|e| (fallback, vec![format!("check failed: {e}")]));
    PackCheck::Read(bad, msgs)
}

/// Whether a snapshot's tree reaches any bad blob.
async fn snapshot_affected(
    repo: &IndexedRepository,
    root: Id,
    bad: &HashSet<(BlobType, Id)>,
) -> bool {
    let mut hit = false;
    let mut unreadable = false;
    let mut seen = HashSet::new();
    let mut lists = Vec::new();
    let r = walk_trees(
        repo,
        [root],
        &mut seen,
        |id, nodes: &[Node]| {
            if bad.contains(&(BlobType::Tree, *id)) {
                hit = true;
            }
            for n in nodes {
                if n.kind == NodeKind::Dir {
                    if let Some(s) = n.subtree {
                        hit |= bad.contains(&(BlobType::Tree, s));
                    }
                }
                hit |= n
                    .content
                    .iter()
                    .any(|c| bad.contains(&(BlobType::Data, *c)));
                for l in &n.content_lists {
                    hit |= bad.contains(&(BlobType::Tree, *l));
                    lists.push(*l);
                }
            }
            Ok(())
        },
        |_, _| {
            unreadable = true;
            Ok(())
        },
    )
    .await;
    if r.is_err() || hit || unreadable {
        return true;
    }
    for l in lists {
        match repo.read_blob(BlobType::Tree, &l).await {
            Ok(d) => match decode_content_list(&d, &l) {
                Ok(ids) if ids.iter().any(|c| bad.contains(&(BlobType::Data, *c))) => return true,
                Ok(_) => {}
                Err(_) => return true,
            },
            Err(_) => return true,
        }
    }
    false
}

impl From<Problem> for Error {
    fn from(p: Problem) -> Self {
        Error::corrupt(p.kind, p.object, p.message)
    }
}
