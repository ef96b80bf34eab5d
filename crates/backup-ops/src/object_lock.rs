//! S3 Object Lock periods derived from the retention policy.
//!
//! New objects are locked by the bucket's default retention (module
//! `backup_storage::object_lock`). After `forget` or a job's retention has
//! decided what stays, [`extend_locks`] makes storage keep every object a
//! kept snapshot needs at least until the policy will let that snapshot
//! go ([`RetentionPolicy::kept_until`]): the snapshot file, every pack
//! holding one of its trees or data blobs, and, until the latest of those
//! dates, `config` and the key files. A snapshot kept 35 days thus locks
//! its objects 35 days after it was taken, however old the packs it
//! reuses; a daily snapshot that becomes the weekly or monthly one has its
//! locks extended by the run that says so.
//!
//! Index files are not locked beyond the bucket's default: they are
//! rebuilt from the locked packs by `backup repair index`. Captured WAL
//! and oplog ranges are not either: the bucket's default retention should
//! cover the point-in-time window (`--keep-within`).

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};

use backup_core::prune::blobs_of_new_trees;
use backup_core::repo::Repository;
use backup_core::retention::{Decision, RetentionPolicy};
use backup_core::snapshot::SnapshotEntry;
use backup_core::{FileKind, Id, LockExtension, Sink};
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt, TryStreamExt};
use serde::Serialize;

use crate::error::Result;

/// Added to the date a lock is extended to, so that a daily run moves the
/// lock of an object still needed about once a week rather than every day.
pub const LOCK_MARGIN: chrono::Duration = chrono::Duration::days(7);

/// Lock requests in flight at once.
const PARALLEL: usize = 16;

/// An object of a repository: its id, the file's kind and name.
type ObjectKey = (String, FileKind, String);

/// What this process knows each object is locked until at least, from its
/// own earlier calls: a daemon whose jobs apply retention after every
/// backup reads each lock about once a week rather than at every run.
/// Lost with the process; storage only moves a lock forward, so a date
/// here is never later than the object's.
static KNOWN: Mutex<Option<HashMap<ObjectKey, DateTime<Utc>>>> = Mutex::new(None);

/// The date [`KNOWN`] holds for an object.
fn known(key: &ObjectKey) -> Option<DateTime<Utc>> {
    let guard = KNOWN.lock().unwrap_or_else(PoisonError::into_inner);
    guard.as_ref().and_then(|m| m.get(key).copied())
}

/// Notes in [`KNOWN`] that an object is locked until at least `until`.
fn note_known(key: ObjectKey, until: DateTime<Utc>) {
    let mut guard = KNOWN.lock().unwrap_or_else(PoisonError::into_inner);
    let entry = guard
        .get_or_insert_with(HashMap::new)
        .entry(key)
        .or_insert(until);
    *entry = (*entry).max(until);
}

/// What [`extend_locks`] did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LockReport {
    /// Objects whose lock was read.
    pub checked: usize,
    /// Objects whose lock was moved forward.
    pub extended: usize,
    /// The latest date the kept snapshots need an object until.
    pub until: Option<DateTime<Utc>>,
}

/// Locks what the snapshots `decisions` keep until `policy` lets them go;
/// a lock that ends sooner is extended to that date plus [`LOCK_MARGIN`].
/// `snapshots` are those the decisions are about.
/// `None`, with no request but one, when storage locks nothing.
///
/// # Errors
///
/// Storage errors, an unreadable tree, or a lock storage refuses to
/// extend (S3 `PutObjectRetention` needs `s3:PutObjectRetention`).
pub async fn extend_locks(
    repo: &Repository,
    policy: &RetentionPolicy,
    decisions: &[Decision],
    snapshots: &[SnapshotEntry],
) -> Result<Option<LockReport>> {
    let now = Utc::now();
    let mut kept: Vec<(DateTime<Utc>, Id)> = decisions
        .iter()
        .filter_map(|d| policy.kept_until(d, now).map(|u| (u, d.id)))
        .collect();
    kept.sort_by(|a, b| b.cmp(a));
    let Some(&(latest, _)) = kept.first() else {
        return Ok(None);
    };
    let sink = repo.sink();
    let mut report = LockReport {
        checked: 1,
        until: Some(latest),
        ..LockReport::default()
    };
    match sink
        .retain_until(FileKind::Config, "config", latest, LOCK_MARGIN)
        .await?
    {
        LockExtension::Unlocked => return Ok(None),
        LockExtension::Extended => report.extended += 1,
        LockExtension::Covered => {}
    }
    let mut targets: Vec<(FileKind, String, DateTime<Utc>)> = sink
        .list(FileKind::Key)
        .await?
        .into_iter()
        .map(|k| (FileKind::Key, k.name, latest))
        .collect();
    let trees: HashMap<Id, Id> = snapshots.iter().map(|s| (s.id, s.snapshot.tree)).collect();
    let indexed = repo.clone().load_index().await?;
    // Latest first: a pack first met under a snapshot is needed until
    // that snapshot's date, the latest of all that use it.
    let mut seen = HashSet::new();
    let mut packs: HashMap<Id, DateTime<Utc>> = HashMap::new();
    for (until, id) in &kept {
        targets.push((FileKind::Snapshot, id.to_hex(), *until));
        let Some(tree) = trees.get(id) else { continue };
        let blobs = blobs_of_new_trees(&indexed, std::iter::once(*tree), &mut seen).await?;
        for (t, blob) in blobs {
            if let Some(at) = indexed.index().get(t, &blob) {
                packs.entry(at.pack).or_insert(*until);
            }
        }
    }
    targets.extend(
        packs
            .into_iter()
            .map(|(pack, until)| (FileKind::Pack, pack.to_hex(), until)),
    );
    report.checked += targets.len();
    let sink: &dyn Sink = sink.as_ref();
    let repo_id = &repo.config().id;
    report.extended += stream::iter(targets)
        .map(|(kind, name, until)| async move {
            let key = (repo_id.clone(), kind, name);
            if known(&key).is_some_and(|k| k >= until) {
                return Ok(false);
            }
            let done = sink.retain_until(kind, &key.2, until, LOCK_MARGIN).await?;
            let extended = done == LockExtension::Extended;
            note_known(key, if extended { until + LOCK_MARGIN } else { until });
            Ok::<_, crate::Error>(extended)
        })
        .buffer_unordered(PARALLEL)
        .try_fold(
            0,
            |n, extended| async move { Ok(n + usize::from(extended)) },
        )
        .await?;
    Ok(Some(report))
}
