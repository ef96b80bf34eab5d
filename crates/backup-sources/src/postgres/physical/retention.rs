//! Point-in-time-aware retention of a cluster's WAL and base backups.
//!
//! - **WAL no kept base backup needs.** Replay from a base backup starts at
//!   its start LSN (the redo point of its checkpoint), and PostgreSQL reads
//!   the whole segment that holds it (it checks the segment's first page).
//!   LSNs only grow across timelines, so WAL wholly below the start of the
//!   segment holding the oldest kept base's start LSN is needed by no
//!   restore from a kept base, on any timeline: [`expired`] names it.
//!   Timeline history files are kept (they are tiny, and say how later
//!   timelines descend). A cluster with WAL but no kept physical snapshot
//!   keeps all of it: a mistaken `forget` must not also lose the WAL.
//! - **`--keep-within D`.** Every point of the last `D` stays restorable
//!   when the newest base backup that ended at or before `now - D` is kept
//!   too; [`anchors`] names it for each cluster whose WAL the repository
//!   holds, even when a calendar rule would drop it.

use std::collections::BTreeMap;

use backup_core::capture::{CaptureExpiry, CaptureName};
use backup_core::repo::Repository;
use backup_core::snapshot::SnapshotEntry;
use backup_core::{Id, Result};
use chrono::{DateTime, Utc};

use super::lsn::Lsn;
use super::meta::PhysicalMeta;
use super::wal::{gap_stream, parse_position, streams, WAL_KIND};

/// The physical snapshots among `snapshots`, by cluster.
fn by_cluster(snapshots: &[SnapshotEntry]) -> BTreeMap<String, Vec<(Id, PhysicalMeta)>> {
    let mut out: BTreeMap<String, Vec<(Id, PhysicalMeta)>> = BTreeMap::new();
    for s in snapshots {
        if let Some(Ok(m)) = PhysicalMeta::of(&s.snapshot.metadata) {
            out.entry(m.system_identifier.clone())
                .or_default()
                .push((s.id, m));
        }
    }
    out
}

/// The WAL that no snapshot of `kept` needs, per cluster: what it is and
/// the records to delete (WAL pieces and gap records). Nothing is changed.
///
/// # Errors
///
/// Storage errors, a record that cannot be read.
pub async fn expired(
    repo: &Repository,
    kept: &[SnapshotEntry],
) -> Result<Vec<(CaptureExpiry, Vec<CaptureName>)>> {
    let names = repo.captures().await?;
    let mut out = Vec::new();
    for (cluster, bases) in by_cluster(kept) {
        let Some(boundary) = bases
            .iter()
            .filter_map(|(_, m)| {
                Some(Lsn::parse(&m.start_lsn).ok()?.0 / m.wal_segment_size * m.wal_segment_size)
            })
            .min()
        else {
            continue;
        };
        let (wal, _) = streams(repo, &cluster);
        let gaps = gap_stream(repo, &cluster);
        let (gone, stays): (Vec<&CaptureName>, Vec<&CaptureName>) = names
            .iter()
            .filter(|n| n.stream == wal || n.stream == gaps)
            .partition(|n| parse_position(&n.last).is_some_and(|(_, end)| end.0 <= boundary));
        if gone.is_empty() {
            continue;
        }
        let earliest = |list: &[&CaptureName]| {
            list.iter()
                .filter(|n| n.stream == wal)
                .filter_map(|n| parse_position(&n.first))
                .map(|(_, l)| l)
                .min()
                .map(|l| l.to_string())
        };
        let pieces: Vec<&CaptureName> = gone.iter().copied().filter(|n| n.stream == wal).collect();
        let mut bytes = 0u64;
        for chunk in pieces.chunks(16) {
            let records =
                futures::future::try_join_all(chunk.iter().map(|n| repo.load_capture(n))).await?;
            bytes += records.iter().map(|r| r.size).sum::<u64>();
        }
        out.push((
            CaptureExpiry {
                kind: WAL_KIND.to_owned(),
                identity: cluster.clone(),
                pieces: gone.len(),
                bytes,
                from: earliest(&gone),
                kept_from: earliest(&stays),
                reason: format!(
                    "before {} (the segment of the oldest kept base backup's start)",
                    Lsn(boundary)
                ),
            },
            gone.into_iter().cloned().collect(),
        ));
    }
    Ok(out)
}

/// For `--keep-within`: per cluster whose WAL `repo` holds, the newest
/// physical snapshot of `snapshots` that ended at or before `since`, from
/// which every later point is replayed.
///
/// # Errors
///
/// Storage errors.
pub async fn anchors(
    repo: &Repository,
    snapshots: &[SnapshotEntry],
    since: DateTime<Utc>,
) -> Result<Vec<Id>> {
    let names = repo.captures().await?;
    let mut out = Vec::new();
    for (cluster, bases) in by_cluster(snapshots) {
        let (wal, _) = streams(repo, &cluster);
        if !names.iter().any(|n| n.stream == wal) {
            continue;
        }
        if let Some((id, _)) = bases
            .iter()
            .filter(|(_, m)| m.stopped_at <= since)
            .max_by_key(|(id, m)| (m.stopped_at, *id))
        {
            out.push(*id);
        }
    }
    Ok(out)
}
