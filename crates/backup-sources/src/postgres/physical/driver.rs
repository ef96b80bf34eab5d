//! [`WalDriver`]: PostgreSQL's WAL as a [`CaptureDriver`]: the windows
//! `backup pitr` lists for each cluster (WAL stored per timeline, the
//! physical base backups inside, recorded gaps), and what retention may
//! delete or must keep ([`super::retention`]).

use backup_core::capture::{CaptureExpiry, CaptureName};
use backup_core::repo::Repository;
use backup_core::snapshot::{SnapshotEntry, SnapshotFilter};
use backup_core::{Id, Result};
use chrono::{DateTime, Utc};

use super::pitr;
use super::wal::{gap_stream, WAL_KIND};
use crate::capture::driver::CaptureDriver;
use crate::capture::window::{Base, Gap, Inventory, SourceWindows, Window};

/// PostgreSQL: the WAL captured by `backup wal receive` / `wal push` and
/// the physical base backups of the cluster. Positions are
/// `timeline/LSN`; a window on a later timeline that continues its parent
/// at the switch point is restorable from the parent's bases.
#[derive(Debug, Clone, Copy, Default)]
pub struct WalDriver;

#[async_trait::async_trait]
impl CaptureDriver for WalDriver {
    fn source_kind(&self) -> &'static str {
        "postgres"
    }

    fn capture(&self) -> &'static str {
        WAL_KIND
    }

    async fn windows(
        &self,
        repo: &Repository,
        inventory: &Inventory,
        source: Option<&str>,
    ) -> Result<Vec<SourceWindows>> {
        let filter = SnapshotFilter {
            source: source.map(str::to_owned),
            ..SnapshotFilter::default()
        };
        let snapshots: Vec<SnapshotEntry> = inventory
            .snapshots
            .iter()
            .filter(|s| source.is_none() || filter.matches(&s.snapshot))
            .cloned()
            .collect();
        let mut out = Vec::new();
        for c in pitr::windows(repo, &snapshots).await? {
            let stream = repo.capture_stream(WAL_KIND, &c.system_identifier);
            let gap_stream = gap_stream(repo, &c.system_identifier);
            let mut pieces = 0;
            let mut bytes = 0;
            let mut url = None;
            for (n, r) in &inventory.records {
                if n.stream == stream {
                    pieces += 1;
                    bytes += r.size;
                    url.get_or_insert_with(|| r.source.url.clone());
                }
            }
            // The cluster's own base backups (not every snapshot the
            // filter passed: a files snapshot is nobody's base).
            let cluster_bases: Vec<(&SnapshotEntry, pitr::BaseBackup)> = snapshots
                .iter()
                .filter_map(|e| {
                    let m = pitr::BaseBackup::of(e)?;
                    (m.system_identifier == c.system_identifier).then_some((e, m))
                })
                .collect();
            let mut bases: Vec<Base> = cluster_bases
                .iter()
                .map(|(e, m)| Base {
                    id: e.id,
                    taken: m.stopped_at,
                    point: m.stop_lsn.clone(),
                    timeline: Some(m.stop_timeline),
                    point_time: Some(m.stopped_at),
                })
                .collect();
            bases.sort_by_key(|b| b.taken);
            let windows: Vec<Window> = c
                .windows
                .iter()
                .filter_map(|w| {
                    Some(Window {
                        from: w.bases.first().map_or_else(
                            || w.from_lsn.clone(),
                            |b| {
                                if b.timeline == w.timeline {
                                    b.stop_lsn.clone()
                                } else {
                                    w.from_lsn.clone()
                                }
                            },
                        ),
                        to: w.to_lsn.clone(),
                        timeline: Some(w.timeline),
                        from_time: Some(w.restorable_from?),
                        to_time: w.to_time,
                        bases: w.bases.iter().map(|b| b.snapshot).collect(),
                    })
                })
                .collect();
            let gaps: Vec<Gap> = inventory
                .records
                .iter()
                .filter(|(n, _)| n.stream == gap_stream)
                .map(|(n, r)| {
                    let (tli, from) = wal_position(&n.first);
                    Gap {
                        from,
                        to: wal_position(&n.last).1,
                        timeline: tli,
                        from_time: r.time_first,
                        to_time: r.time_last,
                        reason: r.gap.clone().unwrap_or_default(),
                    }
                })
                .collect();
            let note = windows
                .is_empty()
                .then(|| no_wal_window(&c, &cluster_bases, pieces));
            out.push(SourceWindows {
                kind: "postgres".to_owned(),
                capture: WAL_KIND.to_owned(),
                stream,
                identity: c.system_identifier.clone(),
                source: url
                    .or_else(|| {
                        cluster_bases
                            .iter()
                            .max_by_key(|(_, m)| m.stopped_at)
                            .map(|(e, _)| e.snapshot.source.url.clone())
                    })
                    .unwrap_or_default(),
                position: "LSN".to_owned(),
                pieces,
                bytes,
                windows,
                gaps,
                bases,
                note,
            });
        }
        Ok(out)
    }

    async fn expired(
        &self,
        repo: &Repository,
        kept: &Inventory,
    ) -> Result<Vec<(CaptureExpiry, Vec<CaptureName>)>> {
        super::retention::expired(repo, &kept.snapshots).await
    }

    async fn anchors(
        &self,
        repo: &Repository,
        snapshots: &[SnapshotEntry],
        since: DateTime<Utc>,
    ) -> Result<Vec<Id>> {
        super::retention::anchors(repo, snapshots, since).await
    }
}

/// Why a cluster has no restorable window, naming what is missing.
fn no_wal_window(
    c: &pitr::ClusterWindows,
    bases: &[(&SnapshotEntry, pitr::BaseBackup)],
    pieces: usize,
) -> String {
    let Some((newest, m)) = bases.iter().max_by_key(|(_, m)| m.stopped_at) else {
        return "no physical base backup of this cluster: take one (`backup create SOURCE --mode physical`)".to_owned();
    };
    if pieces == 0 {
        return format!(
            "no WAL captured: base backup {} alone restores only to its own end ({} on timeline {}); capture WAL (`backup wal receive SOURCE`, or backupd for a physical job) to restore to later points",
            newest.id.short(),
            m.stop_lsn,
            m.stop_timeline
        );
    }
    // The captured WAL of the base's timeline that begins after its end.
    let after = c
        .windows
        .iter()
        .filter(|w| w.timeline == m.stop_timeline)
        .map(|w| w.from_lsn.as_str())
        .find(|from| pitr::lsn_after(from, &m.stop_lsn));
    match after {
        Some(from) => format!(
            "a gap: base backup {} ended at {} on timeline {} ({}), but the captured WAL there begins at {from}; the WAL between them was not captured (the receiver started after the server had moved on). Take a new base backup (backupd takes one at once with on_wal_gap = \"backup\")",
            newest.id.short(),
            m.stop_lsn,
            m.stop_timeline,
            m.stopped_at.format("%Y-%m-%dT%H:%M:%SZ")
        ),
        None => format!(
            "the captured WAL ends before base backup {} ended ({} on timeline {}): capture has not reached it yet, or stopped",
            newest.id.short(),
            m.stop_lsn,
            m.stop_timeline
        ),
    }
}

/// A stored WAL position (8 hex digits of timeline, 16 of LSN): its
/// timeline and PostgreSQL's `X/X`.
fn wal_position(p: &str) -> (Option<u32>, String) {
    match (
        p.get(..8).and_then(|t| u32::from_str_radix(t, 16).ok()),
        p.get(8..).and_then(|l| u64::from_str_radix(l, 16).ok()),
    ) {
        (Some(t), Some(l)) => (Some(t), format!("{:X}/{:X}", l >> 32, l & 0xFFFF_FFFF)),
        _ => (None, p.to_owned()),
    }
}
