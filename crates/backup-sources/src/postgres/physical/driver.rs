//! [`WalDriver`]: PostgreSQL's WAL as a [`CaptureDriver`]: the windows
//! `backup pitr` lists for each cluster (WAL stored per timeline, the
//! physical base backups inside, recorded gaps), and what retention may
//! delete or must keep ([`super::retention`]).

use std::collections::{BTreeMap, BTreeSet};

use backup_core::capture::{CaptureExpiry, CaptureName};
use backup_core::repo::Repository;
use backup_core::snapshot::{SnapshotEntry, SnapshotFilter};
use backup_core::target::{RecoveryPoint, RestoreOptions};
use backup_core::{Id, Result};
use chrono::{DateTime, Utc};

use super::lsn::Lsn;
use super::meta::PhysicalMeta;
use super::wal::{gap_stream, history_entries, WalMap, WAL_KIND};
use crate::capture::driver::{CaptureDriver, Planned, RestorePlan};
use crate::capture::kind::{Position, Words};
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

    fn words(&self) -> Words {
        Words {
            stream: "WAL",
            identity: "cluster",
            position: "LSN",
            kept_in: "the replication slot",
        }
    }

    /// A physical restore goes into a data directory.
    fn restores_into(&self, target: &str) -> bool {
        target == "files"
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
        let clusters: BTreeSet<String> = inventory
            .snapshots
            .iter()
            .filter(|e| filter.matches(&e.snapshot))
            .filter_map(|e| Some(BaseEnd::of(e)?.cluster))
            .collect();
        let mut out = Vec::new();
        for cluster in clusters {
            out.push(cluster_windows(repo, inventory, &filter, &cluster).await?);
        }
        Ok(out)
    }

    /// The newest physical base backup (of the snapshots passing
    /// `source`, or the one named) that ended before a time or position
    /// target, the newest for a transaction id or restore point (whose
    /// place is known only once replayed); why none fits, naming the
    /// oldest base, when none ended before the target. The restored server
    /// replays the WAL itself, after the target checks it is stored
    /// ([`super::pitr::check_coverage`]).
    async fn plan(
        &self,
        _repo: &Repository,
        inventory: &Inventory,
        source: Option<&str>,
        base: Option<Id>,
        opts: &RestoreOptions,
    ) -> Result<Vec<Planned>> {
        let filter = SnapshotFilter {
            source: source.map(str::to_owned),
            ..SnapshotFilter::default()
        };
        let mut bases: Vec<BaseEnd> = inventory
            .snapshots
            .iter()
            .filter(|e| base.is_none_or(|id| id == e.id) && filter.matches(&e.snapshot))
            .filter_map(BaseEnd::of)
            .collect();
        bases.sort_by_key(|b| b.stopped_at);
        let Some(oldest) = bases.first() else {
            return Ok(Vec::new());
        };
        let fits = |b: &BaseEnd| match (&opts.at, &opts.point) {
            (Some(at), _) => b.stopped_at <= *at,
            (None, Some(RecoveryPoint::Lsn(l))) => Lsn::parse(l).is_ok_and(|t| b.stop <= t),
            _ => true,
        };
        let chosen = bases.iter().rev().find(|b| fits(b)).ok_or_else(|| {
            format!(
                "it is before the oldest base backup ({} ended at {}, {} on timeline {}); the earliest restorable point is that end",
                oldest.id.short(),
                oldest.stopped_at.format("%Y-%m-%dT%H:%M:%SZ"),
                oldest.stop,
                oldest.timeline
            )
        });
        Ok(vec![chosen.map(|b| RestorePlan {
            stream: b.url.clone(),
            base: b.id,
            replay: None,
            until: None,
        })])
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

/// What `backup pitr` lists for `cluster`: its windows ([`stretches`]
/// with a base), recorded gaps and the physical base backups passing
/// `filter`. [`super::pitr::check_coverage`] finds a restore's target in
/// the same windows.
pub(super) async fn cluster_windows(
    repo: &Repository,
    inventory: &Inventory,
    filter: &SnapshotFilter,
    cluster: &str,
) -> Result<SourceWindows> {
    let mut bases: Vec<BaseEnd> = inventory
        .snapshots
        .iter()
        .filter(|e| filter.matches(&e.snapshot))
        .filter_map(BaseEnd::of)
        .filter(|b| b.cluster == cluster)
        .collect();
    bases.sort_by_key(|b| b.stopped_at);
    let names = inventory.records.iter().map(|(n, _)| n.clone());
    let map = WalMap::of(repo, cluster, names);
    let stretches = stretches(repo, inventory, &map, &bases).await?;
    let stream = repo.capture_stream(WAL_KIND, cluster);
    let gap_stream = gap_stream(repo, cluster);
    let mut pieces = 0;
    let mut bytes = 0;
    let mut url = None;
    let mut gaps = Vec::new();
    for (n, r) in &inventory.records {
        if n.stream == stream {
            pieces += 1;
            bytes += r.size;
            url.get_or_insert_with(|| r.source.url.clone());
        } else if let (true, Some(from), Some(to)) = (
            n.stream == gap_stream,
            Position::parse_wal(&n.first),
            Position::parse_wal(&n.last),
        ) {
            gaps.push(Gap {
                from,
                to,
                timeline: from.timeline(),
                from_time: r.time_first,
                to_time: r.time_last,
                reason: r.gap.clone().unwrap_or_default(),
            });
        }
    }
    let windows: Vec<Window> = stretches.iter().filter_map(|w| w.window(&bases)).collect();
    let note = windows
        .is_empty()
        .then(|| no_wal_window(&stretches, &bases, pieces));
    Ok(SourceWindows {
        kind: "postgres".to_owned(),
        capture: WAL_KIND.to_owned(),
        stream,
        identity: cluster.to_owned(),
        source: url
            .or_else(|| bases.last().map(|b| b.url.clone()))
            .unwrap_or_default(),
        position: WalDriver.words().position.to_owned(),
        pieces,
        bytes,
        windows,
        gaps,
        bases: bases
            .iter()
            .map(|b| Base::new(b.id, b.stopped_at, b.position(), Some(b.stopped_at)))
            .collect(),
        note,
    })
}

/// A physical base backup as windows need it.
struct BaseEnd {
    id: Id,
    /// The cluster's system identifier.
    cluster: String,
    /// The source it was taken of (redacted).
    url: String,
    stopped_at: DateTime<Utc>,
    /// Where it ended...
    stop: Lsn,
    /// ... on this timeline.
    timeline: u32,
}

impl BaseEnd {
    /// Where it ended, as a position.
    fn position(&self) -> Position {
        Position::Wal {
            timeline: self.timeline,
            lsn: self.stop.0,
        }
    }

    fn of(e: &SnapshotEntry) -> Option<Self> {
        let m = PhysicalMeta::of(&e.snapshot.metadata)?.ok()?;
        Some(BaseEnd {
            id: e.id,
            cluster: m.system_identifier,
            url: e.snapshot.source.url.clone(),
            stopped_at: m.stopped_at,
            stop: Lsn::parse(&m.stop_lsn).ok()?,
            timeline: m.stop_timeline,
        })
    }
}

/// WAL stored without a hole on one timeline, and the base backups
/// (indexes into the cluster's, oldest first) that restore through it.
struct Stretch {
    timeline: u32,
    from: Lsn,
    to: Lsn,
    /// When the last of it was stored.
    to_time: Option<DateTime<Utc>>,
    bases: Vec<usize>,
}

impl Stretch {
    /// The restorable window: from the oldest base's end (or the
    /// stretch's start, for bases of the parent timeline) to the end;
    /// none without a base.
    fn window(&self, bases: &[BaseEnd]) -> Option<Window> {
        let first = &bases[*self.bases.first()?];
        let from = if first.timeline == self.timeline {
            first.stop
        } else {
            self.from
        };
        let at = |lsn: Lsn| Position::Wal {
            timeline: self.timeline,
            lsn: lsn.0,
        };
        Some(Window {
            from: at(from),
            to: at(self.to),
            timeline: Some(self.timeline),
            from_time: Some(first.stopped_at),
            to_time: self.to_time,
            bases: self.bases.iter().map(|&i| bases[i].id).collect(),
        })
    }
}

/// The stretches of stored WAL of a cluster, with the bases whose end lies
/// in each; a timeline's first stretch continues its parent's at the
/// switch point, so the parent's bases that ended before the switch
/// restore through it too.
async fn stretches(
    repo: &Repository,
    inventory: &Inventory,
    map: &WalMap,
    bases: &[BaseEnd],
) -> Result<Vec<Stretch>> {
    let time_last: BTreeMap<&CaptureName, Option<DateTime<Utc>>> = inventory
        .records
        .iter()
        .map(|(n, r)| (n, r.time_last))
        .collect();
    let mut out = Vec::new();
    for (&tli, ranges) in &map.ranges {
        for (a, b) in map.windows(tli) {
            out.push(Stretch {
                timeline: tli,
                from: a,
                to: b,
                to_time: ranges
                    .iter()
                    .filter(|(x, y, _)| *x >= a && *y <= b)
                    .filter_map(|(_, _, n)| time_last.get(n).copied().flatten())
                    .max(),
                bases: (0..bases.len())
                    .filter(|&i| {
                        bases[i].timeline == tli && a <= bases[i].stop && bases[i].stop <= b
                    })
                    .collect(),
            });
        }
    }
    for i in 0..out.len() {
        let tli = out[i].timeline;
        // Only a timeline's first stretch can continue its parent's.
        if tli <= 1 || i > 0 && out[i - 1].timeline == tli {
            continue;
        }
        let Some(record) = map
            .history
            .get(&tli)
            .and_then(|n| inventory.records.iter().find(|(m, _)| m == n))
        else {
            continue;
        };
        let text = String::from_utf8_lossy(&repo.read_capture(&record.1).await?).into_owned();
        let Some(&(parent, switch)) = history_entries(&text).last() else {
            continue;
        };
        if out[i].from > switch {
            continue;
        }
        if let Some(w) = out
            .iter()
            .find(|w| w.timeline == parent && w.from <= switch && switch <= w.to)
        {
            let mut inherited: Vec<usize> = w
                .bases
                .iter()
                .copied()
                .filter(|&j| bases[j].stop <= switch)
                .collect();
            inherited.append(&mut out[i].bases);
            out[i].bases = inherited;
        }
    }
    Ok(out)
}

/// Why a cluster has no restorable window, naming what is missing.
fn no_wal_window(stretches: &[Stretch], bases: &[BaseEnd], pieces: usize) -> String {
    let Some(newest) = bases.last() else {
        return "no physical base backup of this cluster: take one (`backup create SOURCE --mode physical`)".to_owned();
    };
    let (id, stop, tli) = (newest.id.short(), newest.stop, newest.timeline);
    if pieces == 0 {
        return format!(
            "no WAL captured: base backup {id} alone restores only to its own end ({stop} on timeline {tli}); capture WAL (`backup wal receive SOURCE`, or backupd for a physical job) to restore to later points"
        );
    }
    // The captured WAL of the base's timeline that begins after its end.
    let after = stretches
        .iter()
        .filter(|w| w.timeline == tli)
        .map(|w| w.from)
        .find(|from| *from > stop);
    match after {
        Some(from) => format!(
            "a gap: base backup {id} ended at {stop} on timeline {tli} ({}), but the captured WAL there begins at {from}; the WAL between them was not captured (the receiver started after the server had moved on). Take a new base backup (backupd takes one at once with on_wal_gap = \"backup\")",
            newest.stopped_at.format("%Y-%m-%dT%H:%M:%SZ")
        ),
        None => format!(
            "the captured WAL ends before base backup {id} ended ({stop} on timeline {tli}): capture has not reached it yet, or stopped"
        ),
    }
}
