//! Cold storage tiers: moving data packs of old snapshots to a colder S3
//! storage class (`backup tier`), and thawing archived packs before a
//! read needs them (`restore`, `dump` and `verify --read-data`, with
//! `--cold-wait`).
//!
//! Only data packs move. Tree packs, the index, snapshots, keys and the
//! config stay readable at once, so listing and browsing never need a thaw
//! (a pack holds blobs of one type only, so a tree never shares a pack with
//! file contents). The storage verbs are [`ColdStore`]'s; this module
//! decides which packs, from the index and the snapshots' trees.

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;
use std::time::Duration;

use backup_core::pack::BlobType;
use backup_core::prune::blobs_of_trees;
use backup_core::repo::IndexedRepository;
use backup_core::{FileKind, Id};
use backup_storage::cold::{ColdStore, RetrievalTier, Thaw, ThawRequest};
use backup_storage::S3StorageClass;
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::feedback::{json, Feedback};

/// The packs holding the data blobs of `blobs` (tree blobs are skipped:
/// their packs never move).
fn data_packs_of(repo: &IndexedRepository, blobs: &HashSet<(BlobType, Id)>) -> BTreeSet<Id> {
    packs_of_blobs(
        repo,
        blobs
            .iter()
            .filter(|(t, _)| *t == BlobType::Data)
            .map(|(_, id)| id),
    )
}

/// What `backup tier` does.
#[derive(Debug, Clone)]
pub struct TierOptions {
    /// The class data packs move to.
    pub class: S3StorageClass,
    /// Move only packs that no snapshot younger than this references;
    /// `None`: every data pack.
    pub older_than: Option<Duration>,
    /// Report what would move without moving it.
    pub dry_run: bool,
    /// "Now", for the age of snapshots.
    pub now: DateTime<Utc>,
}

/// What `backup tier` did (or, in a dry run, would do).
#[derive(Debug, Clone, Default, Serialize)]
pub struct TierReport {
    /// The target class.
    pub class: String,
    /// Data packs moved (or to move).
    pub moved: u64,
    /// Their bytes.
    pub moved_bytes: u64,
    /// Data packs already in the class, or archived (left as they are).
    pub already_cold: u64,
    /// Data packs kept where they are because a younger snapshot uses
    /// them.
    pub kept_for_young: u64,
    /// Whether nothing was changed.
    pub dry_run: bool,
}

/// Moves the data packs of snapshots older than `opts.older_than` (all
/// snapshots when unset) to `opts.class`, by copying each pack onto itself
/// in the bucket. A pack any younger snapshot still uses stays where it
/// is; packs already in the class or in an archive class are left alone.
/// Safe to interrupt and to repeat: a copy replaces a pack with the same
/// bytes. The caller holds a shared lock (a concurrent prune could delete
/// a pack being copied; a pack deleted meanwhile is skipped).
///
/// # Errors
///
/// Unreadable snapshots or trees (nothing is moved then), storage errors.
pub async fn tier(
    repo: &IndexedRepository,
    cold: &ColdStore,
    opts: &TierOptions,
) -> Result<TierReport> {
    let (snapshots, damaged) = repo.snapshots().await?;
    if let Some((name, e)) = damaged.into_iter().next() {
        return Err(Error::from(backup_core::Error::corrupt(
            FileKind::Snapshot,
            name,
            format!("cannot be read ({e}); run `backup repair snapshots` before tiering"),
        )));
    }
    let cutoff = match opts.older_than {
        Some(age) => {
            let age = chrono::Duration::from_std(age)
                .map_err(|_| Error::usage("--older-than is too large"))?;
            Some(opts.now - age)
        }
        None => None,
    };
    let (old, young): (Vec<_>, Vec<_>) = snapshots
        .iter()
        .partition(|s| cutoff.is_none_or(|c| s.snapshot.time < c));
    let old_packs = data_packs_of(
        repo,
        &blobs_of_trees(repo, old.iter().map(|s| s.snapshot.tree)).await?,
    );
    let young_packs = data_packs_of(
        repo,
        &blobs_of_trees(repo, young.iter().map(|s| s.snapshot.tree)).await?,
    );
    let mut report = TierReport {
        class: opts.class.as_str().to_owned(),
        dry_run: opts.dry_run,
        ..TierReport::default()
    };
    for pack in &old_packs {
        if young_packs.contains(pack) {
            report.kept_for_young += 1;
            continue;
        }
        let name = pack.to_hex();
        let state = match cold.state(FileKind::Pack, &name).await {
            Ok(s) => s,
            Err(backup_core::Error::NotFound { .. }) => continue,
            Err(e) => return Err(e.into()),
        };
        if state.class == opts.class.as_str() || state.is_archived() {
            report.already_cold += 1;
            continue;
        }
        if !opts.dry_run {
            match cold.set_class(FileKind::Pack, &name, opts.class).await {
                Ok(()) => {}
                Err(backup_core::Error::NotFound { .. }) => continue,
                Err(e) => return Err(e.into()),
            }
        }
        report.moved += 1;
        report.moved_bytes += state.size;
    }
    Ok(report)
}

/// The data packs holding the blobs the trees `roots` reach.
///
/// # Errors
///
/// Unreadable trees, storage errors.
pub async fn packs_of_trees(
    repo: &IndexedRepository,
    roots: impl Iterator<Item = Id>,
) -> Result<BTreeSet<Id>> {
    Ok(data_packs_of(repo, &blobs_of_trees(repo, roots).await?))
}

/// The data packs holding the data blobs `blobs` (a file's content list).
pub fn packs_of_blobs<'a>(
    repo: &IndexedRepository,
    blobs: impl Iterator<Item = &'a Id>,
) -> BTreeSet<Id> {
    blobs
        .filter_map(|id| repo.index().get(BlobType::Data, id).map(|l| l.pack))
        .collect()
}

/// How a read (restore, dump, verify) thaws the archived packs it needs
/// before it reads them ([`thaw`]).
#[derive(Debug, Clone)]
pub struct ColdRead {
    /// The repository's storage-class verbs.
    pub store: Arc<ColdStore>,
    /// Days, retrieval tier, how long to wait, dry run.
    pub options: ThawOptions,
}

/// How archived packs are thawed before a read.
#[derive(Debug, Clone)]
pub struct ThawOptions {
    /// Days the thawed copies stay readable.
    pub days: u32,
    /// The retrieval tier of new requests.
    pub tier: RetrievalTier,
    /// How long to wait for the thaw; zero: request and stop at once.
    pub wait: Duration,
    /// How often to look again while waiting.
    pub poll: Duration,
    /// Report what must be thawed without requesting anything.
    pub dry_run: bool,
}

/// Where the thaw of the packs a read needs stands.
#[derive(Debug, Clone, Default, Serialize)]
pub struct ThawReport {
    /// Packs the read needs.
    pub packs: u64,
    /// Of them, archived packs not readable yet.
    pub pending: u64,
    /// Their bytes.
    pub pending_bytes: u64,
    /// Restore requests started by this run.
    pub requested: u64,
    /// The retrieval tier.
    pub tier: String,
    /// Whether every needed pack is readable.
    pub ready: bool,
}

/// One look at the packs: requests thaws of archived packs with none under
/// way (unless a dry run) and counts what is still pending.
async fn look(
    cold: &ColdStore,
    packs: &BTreeSet<Id>,
    opts: &ThawOptions,
    report: &mut ThawReport,
) -> Result<()> {
    report.pending = 0;
    report.pending_bytes = 0;
    for pack in packs {
        let name = pack.to_hex();
        let state = cold.state(FileKind::Pack, &name).await?;
        if state.is_readable() {
            continue;
        }
        report.pending += 1;
        report.pending_bytes += state.size;
        if state.thaw == Thaw::None && !opts.dry_run {
            let asked = cold
                .request_thaw(FileKind::Pack, &name, opts.days, opts.tier)
                .await?;
            if asked == ThawRequest::Started {
                report.requested += 1;
            }
            if asked == ThawRequest::AlreadyDone {
                report.pending -= 1;
                report.pending_bytes -= state.size;
            }
        }
    }
    report.ready = report.pending == 0;
    Ok(())
}

/// Makes every pack of `packs` readable ([`packs_of_trees`],
/// [`packs_of_blobs`]): requests a thaw of each archived one (keeping
/// requests already under way), then waits up to `opts.wait`, looking
/// again every `opts.poll` and reporting to `progress` after each look.
/// A dry run only counts.
///
/// # Errors
///
/// [`Error`] with exit code 1 when packs are still thawing after the wait:
/// the message says how many, and that the requests are kept so the same
/// command can be run again later. Storage errors.
pub async fn thaw(
    cold: &ColdStore,
    packs: &BTreeSet<Id>,
    opts: &ThawOptions,
    progress: &(dyn Fn(&ThawReport) + Sync),
) -> Result<ThawReport> {
    let mut report = ThawReport {
        packs: packs.len() as u64,
        tier: opts.tier.as_str().to_owned(),
        ..ThawReport::default()
    };
    let started = std::time::Instant::now();
    loop {
        look(cold, packs, opts, &mut report).await?;
        progress(&report);
        if report.ready || opts.dry_run {
            return Ok(report);
        }
        if started.elapsed() >= opts.wait {
            return Err(Error::from(backup_core::Error::Generic {
                backend: "s3",
                source: format!(
                "{} of {} packs ({} bytes) are still being thawed from the archive class ({} retrieval); the thaw requests are kept: run the same command again later, or wait longer with --cold-wait (for example --cold-wait 12h)",
                report.pending, report.packs, report.pending_bytes, report.tier
                )
                .into(),
            }));
        }
        tokio::time::sleep(opts.poll.min(opts.wait.saturating_sub(started.elapsed()))).await;
    }
}

/// [`thaw`] with progress and the report shown through `feedback` (a
/// `dry_run` of the read only counts, whatever `cold` says).
///
/// # Errors
///
/// As [`thaw`].
pub async fn thaw_for(
    cold: &ColdRead,
    packs: &BTreeSet<Id>,
    dry_run: bool,
    feedback: &dyn Feedback,
) -> Result<ThawReport> {
    let mut opts = cold.options.clone();
    opts.dry_run |= dry_run;
    let progress = feedback.progress("thaw", "packs");
    let report = thaw(&cold.store, packs, &opts, &|r| {
        progress.set_phase(&format!(
            "thawing: {} of {} packs ({} bytes) still archived",
            r.pending, r.packs, r.pending_bytes
        ));
    })
    .await;
    progress.finish();
    let report = report?;
    feedback.detail("cold", json(&report));
    Ok(report)
}

/// The packs `verify --read-data` reads when archived packs must be
/// thawed first: the same share of the index's packs as without a thaw,
/// but archived packs whose thaw is under way or done (asked for by an
/// earlier run of the same command) are taken first, so that running the
/// command again after a thaw reads the packs it thawed; the rest is a
/// random pick. Looks at the state of every indexed pack (one `HEAD`
/// each).
///
/// # Errors
///
/// Storage errors.
pub async fn packs_to_verify(
    repo: &IndexedRepository,
    cold: &ColdStore,
    percent: f64,
) -> Result<BTreeSet<Id>> {
    let mut all: Vec<Id> = repo.index().packs().map(|(id, _)| *id).collect();
    let want = ((all.len() as f64 * percent / 100.0).ceil() as usize).min(all.len());
    if want == all.len() {
        return Ok(all.into_iter().collect());
    }
    let started: HashSet<Id> = stream::iter(all.clone())
        .map(|id| async move {
            match cold.state(FileKind::Pack, &id.to_hex()).await {
                Ok(state) => Ok((id, state.is_archived() && state.thaw != Thaw::None)),
                Err(backup_core::Error::NotFound { .. }) => Ok((id, false)),
                Err(e) => Err(Error::from(e)),
            }
        })
        .buffer_unordered(16)
        .try_filter_map(|(id, started)| async move { Ok(started.then_some(id)) })
        .try_collect()
        .await?;
    // Thawed first, then a random order (a random key per pack).
    let mut keyed: Vec<(bool, Id, Id)> = all
        .drain(..)
        .map(|id| (!started.contains(&id), Id::random(), id))
        .collect();
    keyed.sort_unstable();
    Ok(keyed.into_iter().take(want).map(|(_, _, id)| id).collect())
}
