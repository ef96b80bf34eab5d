//! Prune: remove data no snapshot references.
//!
//! 1. Every snapshot's trees are walked to find the blobs in use (a
//!    snapshot that cannot be read stops the prune: its data might be
//!    needed).
//! 2. Each indexed pack is classified: entirely unused packs are deleted,
//!    packs whose unused share reaches the repack threshold are repacked
//!    (their used blobs copied, as stored, into new packs), the rest kept.
//!    Packs no index lists are leftovers of interrupted backups and go too,
//!    except the packs of capture records (WAL, oplog), which are kept whole.
//! 3. New packs are written, then new index files listing every used blob,
//!    then a last index file that supersedes all the old ones. The new
//!    packs and index files are read back.
//! 4. Only then are the old index files and the freed packs deleted.
//!
//! A crash at any point leaves a repository whose index only names packs
//! that exist: before the superseding file, the old index is intact (new
//! packs are merely unreferenced); after it, the new index is complete
//! (old packs are merely unreferenced). Prune needs an exclusive lock.
//!
//! Memory: the used blobs are one bit each at their positions in a frozen,
//! sorted copy of the index ([`SortedView`], on disk for a paged index),
//! and the packs' kept blobs are gathered in passes over it, at most
//! a million at a time; what grows with the repository is some 100
//! bytes a pack.

use std::collections::{HashMap, HashSet};

use futures::stream::{self, StreamExt};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{IndexPack, SortedView};
use crate::pack::{decode_blob, BlobType, PackBuilder, PackEntry};
use crate::progress::Progress;
use crate::repair::ReplacementIndex;
use crate::repo::IndexedRepository;
use crate::sink::{FileKind, SinkExt};
use crate::tree::decode_content_list;
use crate::walk::walk_trees;

/// Options of a prune.
#[derive(Debug, Clone, Copy)]
pub struct PruneOptions {
    /// Compute and report the plan, change nothing.
    pub dry_run: bool,
    /// Repack a pack when at least this fraction of it is unused (0 to 1).
    /// A pack with no unused blob is never repacked, so 0 repacks exactly
    /// the packs holding any unused blob (what erasing data needs).
    pub repack_threshold: f64,
}

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            dry_run: false,
            repack_threshold: 0.25,
        }
    }
}

/// What a prune did or (dry run) would do.
#[derive(Debug, Clone, Default, Serialize)]
pub struct PruneReport {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Snapshots whose data is kept.
    pub snapshots: usize,
    /// Blobs in use.
    pub blobs_used: usize,
    /// Indexed packs before.
    pub packs_before: usize,
    /// Bytes of all packs in storage before.
    pub bytes_before: u64,
    /// Packs deleted because nothing in them is used.
    pub packs_deleted: usize,
    /// Packs rewritten because much of them is unused.
    pub packs_repacked: usize,
    /// Packs in storage that no index listed (deleted).
    pub packs_unindexed: usize,
    /// New packs written by repacking.
    pub packs_written: usize,
    /// Bytes copied into new packs.
    pub bytes_rewritten: u64,
    /// Bytes of packs deleted.
    pub bytes_deleted: u64,
    /// Net bytes freed: deleted minus rewritten.
    pub bytes_freed: u64,
    /// Unused bytes left in kept packs (below the repack threshold).
    pub bytes_unused_kept: u64,
    /// Index files replaced.
    pub index_files_replaced: usize,
    /// Packs of capture records (WAL, oplog), kept whole.
    pub capture_packs: usize,
    /// Captured ranges removed before the packs were pruned, because no
    /// kept snapshot needs them (filled by the caller, which knows the
    /// source kinds' rules).
    pub captures_expired: Vec<crate::capture::CaptureExpiry>,
    /// Files this prune would have deleted but storage refused because
    /// they are under S3 Object Lock: they stay (no index lists such a
    /// pack any more; a superseded index file is ignored by readers) and
    /// a later prune deletes them once their retention has passed.
    pub retained: Vec<Retained>,
}

/// A file kept because S3 Object Lock refused its deletion
/// ([`Error::Retained`]).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Retained {
    /// The kind of file.
    pub kind: FileKind,
    /// Its name.
    pub name: String,
    /// Until when it is locked.
    pub until: String,
}

impl Retained {
    /// The retained file an [`Error::Retained`] names; `Err(e)` for any
    /// other error.
    ///
    /// # Errors
    ///
    /// `e` itself when it is not [`Error::Retained`].
    pub fn from_error(e: Error) -> Result<Retained> {
        match e {
            Error::Retained { kind, name, until } => Ok(Retained { kind, name, until }),
            other => Err(other),
        }
    }
}

/// The blobs snapshots use: one bit for each blob of a [`SortedView`].
#[derive(Debug, Clone)]
pub struct UsedBlobs {
    bits: Vec<u64>,
    count: usize,
}

impl UsedBlobs {
    /// None used, of `len` blobs.
    pub fn new(len: u64) -> Self {
        UsedBlobs {
            bits: vec![0; len.div_ceil(64) as usize],
            count: 0,
        }
    }

    /// Marks the blob at `position` used.
    pub fn mark(&mut self, position: u64) {
        let (word, bit) = ((position / 64) as usize, position % 64);
        if self.bits[word] & (1 << bit) == 0 {
            self.bits[word] |= 1 << bit;
            self.count += 1;
        }
    }

    /// Whether the blob at `position` is used.
    pub fn contains(&self, position: u64) -> bool {
        self.bits
            .get((position / 64) as usize)
            .is_some_and(|w| w & (1 << (position % 64)) != 0)
    }

    /// Blobs marked used.
    pub fn len(&self) -> usize {
        self.count
    }

    /// Whether none is marked.
    pub fn is_empty(&self) -> bool {
        self.count == 0
    }
}

/// The blobs referenced by every snapshot, marked at their positions in
/// `view`; also returns the number of snapshots.
///
/// # Errors
///
/// [`Error::Corrupt`] when a snapshot or tree cannot be read, or a blob a
/// snapshot uses is not indexed: pruning without knowing what it needs
/// could delete live data.
pub async fn used_blobs(repo: &IndexedRepository, view: &SortedView) -> Result<(usize, UsedBlobs)> {
    let (snapshots, damaged) = repo.snapshots().await?;
    if let Some((name, e)) = damaged.into_iter().next() {
        return Err(Error::corrupt(
            FileKind::Snapshot,
            name,
            format!("cannot be read ({e}); run `backup repair snapshots` before pruning"),
        ));
    }
    let mut used = UsedBlobs::new(view.len());
    visit_blobs_of_new_trees(
        repo,
        snapshots.iter().map(|s| s.snapshot.tree),
        &mut HashSet::new(),
        |blob_type, id| match view.position(blob_type, id)? {
            Some(p) => {
                used.mark(p);
                Ok(())
            }
            None => Err(Error::corrupt(
                FileKind::Index,
                format!("blob {id}"),
                "is used by a snapshot but not indexed; run `backup repair index` before pruning",
            )),
        },
    )
    .await?;
    Ok((snapshots.len(), used))
}

/// The blobs the trees `roots` reference, themselves included: every
/// subtree, content list and data blob, by type.
///
/// # Errors
///
/// [`Error::Corrupt`] when a tree or content list cannot be read; storage
/// errors.
pub async fn blobs_of_trees(
    repo: &IndexedRepository,
    roots: impl Iterator<Item = Id>,
) -> Result<HashSet<(BlobType, Id)>> {
    blobs_of_new_trees(repo, roots, &mut HashSet::new()).await
}

/// [`blobs_of_trees`] for trees not in `seen` (the ids of trees an earlier
/// call walked): what they reference that those did not, at the cost of
/// walking each tree once over many calls. Adds the trees it walks to
/// `seen`.
///
/// # Errors
///
/// As [`blobs_of_trees`].
#[allow(clippy::implicit_hasher)] // the set `walk_trees` keeps
pub async fn blobs_of_new_trees(
    repo: &IndexedRepository,
    roots: impl Iterator<Item = Id>,
    seen: &mut HashSet<Id>,
) -> Result<HashSet<(BlobType, Id)>> {
    let mut used = HashSet::new();
    visit_blobs_of_new_trees(repo, roots, seen, |blob_type, id| {
        used.insert((blob_type, *id));
        Ok(())
    })
    .await?;
    Ok(used)
}

/// Calls `visit` with every blob the trees `roots` not in `seen`
/// reference (a blob may come more than once), adding the trees walked to
/// `seen`.
async fn visit_blobs_of_new_trees(
    repo: &IndexedRepository,
    roots: impl Iterator<Item = Id>,
    seen: &mut HashSet<Id>,
    mut visit: impl FnMut(BlobType, &Id) -> Result<()>,
) -> Result<()> {
    let mut lists = Vec::new();
    walk_trees(
        repo,
        roots,
        seen,
        |id, nodes| {
            visit(BlobType::Tree, id)?;
            for n in nodes {
                for c in &n.content {
                    visit(BlobType::Data, c)?;
                }
                lists.extend(n.content_lists.iter().copied());
            }
            Ok(())
        },
        |id, e| {
            Err(Error::corrupt(
                FileKind::Pack,
                format!("tree {id}"),
                format!("cannot be read ({e}); run `backup check --read-data` before pruning"),
            ))
        },
    )
    .await?;
    for l in lists {
        visit(BlobType::Tree, &l)?;
        let data = repo.read_blob(BlobType::Tree, &l).await?;
        for c in decode_content_list(&data, &l)? {
            visit(BlobType::Data, &c)?;
        }
    }
    Ok(())
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Fate {
    Keep,
    Repack,
    Delete,
}

/// One indexed pack's fate and what it holds that is kept.
struct PackFate {
    /// Its number in the [`SortedView`].
    number: u32,
    id: Id,
    size: u64,
    fate: Fate,
    /// Bytes and count of its blobs that are kept: the used ones, or
    /// every one of a capture pack.
    live_bytes: u64,
    live: u64,
}

/// Blobs whose entries prune holds at once, grouped by pack, while it
/// repacks and writes the new index.
const BATCH_BLOBS: u64 = 1_000_000;

/// Prunes the repository (the caller holds an exclusive lock).
///
/// # Errors
///
/// Storage errors, and [`Error::Corrupt`] when the repository is damaged
/// in a way that makes pruning unsafe (nothing is deleted then).
pub async fn prune(
    repo: &IndexedRepository,
    opts: &PruneOptions,
    progress: &dyn Progress,
) -> Result<PruneReport> {
    if !opts.dry_run {
        repo.require_deletes("prune")?;
    }
    progress.set_phase("finding used data");
    let Plan {
        mut report,
        view,
        used,
        capture_packs,
        fates,
        unindexed,
        old_index,
    } = plan(repo, opts).await?;
    if opts.dry_run {
        report.bytes_freed = report.bytes_deleted.saturating_sub(report.bytes_rewritten);
        return Ok(report);
    }
    let nothing_to_do = report.packs_deleted == 0 && report.packs_repacked == 0;
    if nothing_to_do && unindexed.is_empty() {
        return Ok(report);
    }
    let kept = Kept {
        view: &view,
        used: &used,
        capture_packs: &capture_packs,
    };

    // 1. Repack, a batch of packs at a time.
    progress.set_phase("repacking");
    progress.set_total(report.bytes_rewritten);
    let mut new_packs = Vec::new();
    for batch in batches(fates.iter().filter(|f| f.fate == Fate::Repack)) {
        let mut entries = kept.entries_of(&batch)?;
        let packs: Vec<(Id, Vec<PackEntry>)> = batch
            .iter()
            .map(|f| (f.id, entries.remove(&f.number).unwrap_or_default()))
            .collect();
        new_packs.extend(repack_packs(repo, packs, progress).await?);
    }
    report.packs_written = new_packs.len();
    report.bytes_rewritten = new_packs.iter().map(|p| p.size).sum();

    // 2. New index: kept packs with their used blobs, plus the new packs.
    progress.set_phase("writing index");
    write_index(repo, &kept, &fates, &new_packs, &old_index).await?;

    // 3. Delete the packs that were replaced.
    progress.set_phase("deleting");
    let live_packs: HashSet<Id> = new_packs.iter().map(|p| p.id).collect();
    let doomed: Vec<Id> = fates
        .iter()
        .filter(|f| f.fate != Fate::Keep && !live_packs.contains(&f.id))
        .map(|f| f.id)
        .collect();
    let leftovers: Vec<String> = unindexed.iter().map(|(n, _)| n.clone()).collect();
    let retained = delete_packs(repo, doomed, leftovers).await?;
    // What storage kept under Object Lock was not deleted after all (a
    // repacked one was still copied).
    for r in &retained {
        let fate = r
            .name
            .parse::<Id>()
            .ok()
            .and_then(|id| fates.binary_search_by_key(&id, |f| f.id).ok())
            .map(|i| &fates[i]);
        if let Some(f) = fate {
            report.bytes_deleted = report.bytes_deleted.saturating_sub(f.size);
            if f.fate == Fate::Delete {
                report.packs_deleted = report.packs_deleted.saturating_sub(1);
            }
        } else if let Some((_, size)) = unindexed.iter().find(|(n, _)| *n == r.name) {
            report.bytes_deleted = report.bytes_deleted.saturating_sub(*size);
            report.packs_unindexed = report.packs_unindexed.saturating_sub(1);
        }
    }
    report.retained.extend(retained);
    report.bytes_freed = report.bytes_deleted.saturating_sub(report.bytes_rewritten);
    progress.finish();
    Ok(report)
}

/// What a prune will do, and the counts of its report so far.
struct Plan {
    report: PruneReport,
    /// The index, frozen, and which of its blobs are used.
    view: SortedView,
    used: UsedBlobs,
    /// Packs of capture records, kept whole.
    capture_packs: HashSet<Id>,
    /// Every indexed pack's fate, by id.
    fates: Vec<PackFate>,
    /// Stored packs no index lists, with their sizes.
    unindexed: Vec<(String, u64)>,
    /// The index files the new index replaces.
    old_index: Vec<String>,
}

/// What a prune keeps of each pack, read from the index a pass at a time.
struct Kept<'a> {
    view: &'a SortedView,
    used: &'a UsedBlobs,
    capture_packs: &'a HashSet<Id>,
}

impl Kept<'_> {
    /// The kept blobs of the packs `fates`, by pack number: one pass over
    /// the index.
    fn entries_of(&self, fates: &[&PackFate]) -> Result<HashMap<u32, Vec<PackEntry>>> {
        let wanted: HashMap<u32, bool> = fates
            .iter()
            .map(|f| (f.number, self.capture_packs.contains(&f.id)))
            .collect();
        let mut out: HashMap<u32, Vec<PackEntry>> = HashMap::new();
        for e in self.view.entries() {
            let e = e?;
            let Some(&whole) = wanted.get(&e.pack) else {
                continue;
            };
            if whole || self.used.contains(e.position) {
                out.entry(e.pack).or_default().push(e.entry);
            }
        }
        for list in out.values_mut() {
            list.sort_by_key(|e| e.offset);
        }
        Ok(out)
    }
}

/// `fates` in batches of at most [`BATCH_BLOBS`] kept blobs (a pack with
/// more is a batch of its own).
fn batches<'a>(fates: impl Iterator<Item = &'a PackFate>) -> Vec<Vec<&'a PackFate>> {
    let mut out: Vec<Vec<&PackFate>> = Vec::new();
    let mut current: Vec<&PackFate> = Vec::new();
    let mut blobs = 0;
    for f in fates {
        if !current.is_empty() && blobs + f.live > BATCH_BLOBS {
            out.push(std::mem::take(&mut current));
            blobs = 0;
        }
        blobs += f.live;
        current.push(f);
    }
    if !current.is_empty() {
        out.push(current);
    }
    out
}

/// Per pack: its indexed blobs and their stored bytes, and of its used
/// ones.
#[derive(Debug, Clone, Copy, Default)]
struct Tally {
    blobs: u64,
    blob_bytes: u64,
    live_bytes: u64,
    live: u64,
}

/// Finds the used blobs and decides every pack's fate.
async fn plan(repo: &IndexedRepository, opts: &PruneOptions) -> Result<Plan> {
    let view = repo.index().sorted_view()?;
    let (snapshots, used) = used_blobs(repo, &view).await?;
    // Capture records hold their packs whole; one that cannot be read
    // stops the prune, as a snapshot does.
    let (captures, damaged) = repo.capture_records().await?;
    if let Some((name, e)) = damaged.into_iter().next() {
        return Err(Error::corrupt(
            FileKind::Capture,
            name,
            format!("cannot be read ({e}); prune needs every record to know what it keeps"),
        ));
    }
    let capture_packs = crate::capture::capture_packs(&captures);
    let mut report = PruneReport {
        dry_run: opts.dry_run,
        snapshots,
        blobs_used: used.len(),
        capture_packs: capture_packs.len(),
        ..PruneReport::default()
    };
    let stored: HashMap<String, u64> = repo.pack_sizes().await?;
    report.bytes_before = stored.values().sum();
    report.packs_before = repo.index().pack_count();

    let mut tallies = vec![Tally::default(); view.pack_count()];
    for e in view.entries() {
        let e = e?;
        let Some(t) = tallies.get_mut(e.pack as usize) else {
            continue;
        };
        let length = u64::from(e.entry.length);
        t.blobs += 1;
        t.blob_bytes += length;
        if used.contains(e.position) {
            t.live_bytes += length;
            t.live += 1;
        }
    }
    let mut fates: Vec<PackFate> = Vec::with_capacity(tallies.len());
    for (number, t) in (0u32..).zip(tallies) {
        let Some((id, size)) = view.pack(number) else {
            continue;
        };
        if capture_packs.contains(&id) {
            fates.push(PackFate {
                number,
                id,
                size,
                fate: Fate::Keep,
                live_bytes: t.blob_bytes,
                live: t.blobs,
            });
            continue;
        }
        // Unused are the blobs no snapshot needs. The header is not: a
        // repacked pack has one too, so counting it would repack a small
        // pack on every prune, forever (issue 32, found by the crash
        // harness: a prune never converged).
        let unused = t.blob_bytes.saturating_sub(t.live_bytes);
        let fate = if t.live == 0 {
            report.packs_deleted += 1;
            report.bytes_deleted += size;
            Fate::Delete
        } else if unused > 0 && size > 0 && unused as f64 / size as f64 >= opts.repack_threshold {
            report.packs_repacked += 1;
            report.bytes_deleted += size;
            report.bytes_rewritten += t.live_bytes;
            Fate::Repack
        } else {
            report.bytes_unused_kept += unused;
            Fate::Keep
        };
        fates.push(PackFate {
            number,
            id,
            size,
            fate,
            live_bytes: t.live_bytes,
            live: t.live,
        });
    }
    keep_locked_repacks(repo, &mut fates, &mut report).await?;
    fates.sort_by_key(|f| f.id);
    let unindexed: Vec<(String, u64)> = stored
        .iter()
        .filter(|(name, _)| {
            name.parse::<Id>().map_or(true, |id| {
                repo.index().pack_size(&id).is_none() && !capture_packs.contains(&id)
            })
        })
        .map(|(n, s)| (n.clone(), *s))
        .collect();
    report.packs_unindexed = unindexed.len();
    report.bytes_deleted += unindexed.iter().map(|(_, s)| s).sum::<u64>();
    let old_index: Vec<String> = repo.sink().list_names(FileKind::Index).await?;
    report.index_files_replaced = old_index.len();
    Ok(Plan {
        report,
        view,
        used,
        capture_packs,
        fates,
        unindexed,
        old_index,
    })
}

/// Keeps as they are the packs to repack that storage still locks (S3
/// Object Lock): a copy would be stored beside the original until its
/// lock ends. Each becomes a retained file in the report, to repack in a
/// prune after its date.
async fn keep_locked_repacks(
    repo: &IndexedRepository,
    fates: &mut [PackFate],
    report: &mut PruneReport,
) -> Result<()> {
    for f in fates.iter_mut().filter(|f| f.fate == Fate::Repack) {
        let name = f.id.to_hex();
        let Some(until) = repo.sink().locked_until(FileKind::Pack, &name).await? else {
            continue;
        };
        report.packs_repacked -= 1;
        report.bytes_deleted -= f.size;
        report.bytes_rewritten -= f.live_bytes;
        report.bytes_unused_kept += f.size.saturating_sub(f.live_bytes);
        report.retained.push(Retained {
            kind: FileKind::Pack,
            name,
            until,
        });
        f.fate = Fate::Keep;
    }
    Ok(())
}

/// Writes the index of the kept and new packs, after checking that every
/// new pack is stored; it is read back and then supersedes the old index
/// (whose files the helper deletes once the new ones are in place).
async fn write_index(
    repo: &IndexedRepository,
    kept: &Kept<'_>,
    fates: &[PackFate],
    new_packs: &[IndexPack],
    old_index: &[String],
) -> Result<()> {
    let after: HashMap<String, u64> = repo.pack_sizes().await?;
    for p in new_packs {
        if after.get(&p.id.to_hex()) != Some(&p.size) {
            return Err(Error::corrupt(
                FileKind::Pack,
                p.id,
                "a repacked pack is missing after writing it; nothing was deleted",
            ));
        }
    }
    drop(after);
    let mut replacement = ReplacementIndex::default();
    for batch in batches(fates.iter().filter(|f| f.fate == Fate::Keep)) {
        let mut entries = kept.entries_of(&batch)?;
        let packs: Vec<IndexPack> = batch
            .iter()
            .map(|f| IndexPack {
                id: f.id,
                size: f.size,
                blobs: entries.remove(&f.number).unwrap_or_default(),
            })
            .collect();
        replacement.add(repo, packs).await?;
    }
    replacement.add(repo, new_packs.to_vec()).await?;
    let written = replacement.finish(repo, old_index).await?;
    tracing::info!(index_files = written, "New index written.");
    Ok(())
}

/// Deletes packs (by id, then by name), several at once; returns the ones
/// storage keeps under S3 Object Lock.
async fn delete_packs(
    repo: &IndexedRepository,
    packs: Vec<Id>,
    others: Vec<String>,
) -> Result<Vec<Retained>> {
    let names = packs.into_iter().map(|id| id.to_hex()).chain(others);
    let mut outcomes = stream::iter(names)
        .map(|name| {
            let sink = repo.sink().clone();
            async move { sink.delete(FileKind::Pack, &name).await }
        })
        .buffer_unordered(8);
    let mut retained = Vec::new();
    let mut failed = None;
    while let Some(outcome) = outcomes.next().await {
        if let Err(e) = outcome {
            match Retained::from_error(e) {
                Ok(r) => retained.push(r),
                Err(e) => failed = failed.or(Some(e)),
            }
        }
    }
    if let Some(e) = failed {
        return Err(e);
    }
    retained.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(retained)
}

/// Copies the used blobs of `packs`, as stored and after verifying each,
/// into new packs.
async fn repack_packs(
    repo: &IndexedRepository,
    packs: Vec<(Id, Vec<PackEntry>)>,
    progress: &dyn Progress,
) -> Result<Vec<IndexPack>> {
    let pack_size = repo.config().pack_size as usize;
    let mut builders = [PackBuilder::default(), PackBuilder::default()];
    let mut out = Vec::new();
    let mut fetched = stream::iter(packs)
        .map(|(id, live)| {
            let repo = repo.clone();
            async move {
                let data = repo.sink().get(FileKind::Pack, &id.to_hex()).await?;
                let key = repo.key().clone();
                let hasher = repo.hasher().clone();
                tokio::task::spawn_blocking(move || -> Result<Vec<(PackEntry, Vec<u8>)>> {
                    let mut blobs = Vec::with_capacity(live.len());
                    for e in live {
                        let range = e.offset as usize..e.offset as usize + e.length as usize;
                        let stored = data.get(range).ok_or_else(|| {
                            Error::corrupt(FileKind::Pack, id, "shorter than its index says")
                        })?;
                        // Never copy damage forward.
                        decode_blob(&key, &hasher, &e, &id, stored)?;
                        blobs.push((e, stored.to_vec()));
                    }
                    Ok(blobs)
                })
                .await
                .map_err(|e| Error::Generic {
                    backend: "repack",
                    source: Box::new(e),
                })?
            }
        })
        .buffered(4);
    while let Some(blobs) = fetched.next().await {
        for (e, stored) in blobs? {
            let slot = usize::from(e.blob_type == BlobType::Tree);
            builders[slot].add(e.blob_type, e.id, e.compressed, e.raw_length, &stored);
            progress.add_bytes(stored.len() as u64);
            if builders[slot].len() >= pack_size
                || builders[slot].entry_count() >= crate::pack::MAX_PACK_ENTRIES
            {
                let full = std::mem::take(&mut builders[slot]);
                out.push(store_pack(repo, full).await?);
            }
        }
    }
    for b in builders {
        if !b.is_empty() {
            out.push(store_pack(repo, b).await?);
        }
    }
    Ok(out)
}

async fn store_pack(repo: &IndexedRepository, b: PackBuilder) -> Result<IndexPack> {
    let pack = b.finish(repo.key());
    let size = pack.data.len() as u64;
    crate::saver::store_finished(&**repo.sink(), &pack.id.to_hex(), &pack.entries, pack.data)
        .await?;
    Ok(IndexPack {
        id: pack.id,
        size,
        blobs: pack.entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn used_blobs_count_each_position_once() {
        let mut used = UsedBlobs::new(130);
        assert!(used.is_empty());
        for p in [0, 63, 64, 129, 64] {
            used.mark(p);
        }
        assert_eq!(used.len(), 4);
        assert!(used.contains(63) && used.contains(129) && !used.contains(1));
        assert!(!used.contains(100_000));
    }

    #[test]
    fn batches_hold_at_most_the_limit_and_a_large_pack_alone() {
        let fate = |live| PackFate {
            number: 0,
            id: Id::hash(b"p"),
            size: 1,
            fate: Fate::Keep,
            live_bytes: 1,
            live,
        };
        let fates = [
            fate(BATCH_BLOBS / 2),
            fate(BATCH_BLOBS / 2),
            fate(1),
            fate(BATCH_BLOBS * 3),
            fate(5),
        ];
        let sizes: Vec<Vec<u64>> = batches(fates.iter())
            .iter()
            .map(|b| b.iter().map(|f| f.live).collect())
            .collect();
        assert_eq!(
            sizes,
            [
                vec![BATCH_BLOBS / 2, BATCH_BLOBS / 2],
                vec![1],
                vec![BATCH_BLOBS * 3],
                vec![5]
            ]
        );
        assert!(batches(std::iter::empty()).is_empty());
    }
}
