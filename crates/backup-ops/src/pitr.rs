//! Point-in-time recovery: continuous capture, restorable windows, and the
//! plan of a restore to a point.
//!
//! A capture stream (`REPOSITORY_FORMAT.md` §21) is restorable from a base
//! snapshot's consistent point up to the end of the pieces that follow it
//! without a gap. [`streams`] computes, per stream, the contiguous runs of
//! pieces (from names, and from the records for gaps and sources), the
//! base snapshots inside them, the windows they make restorable and the
//! gaps. [`plan`] turns a target (`--at TIME`, `--at-ts ...`) into the
//! newest base before it and the pieces from that base to the target,
//! refusing with the missing range and the nearest restorable points
//! when there is none.
//!
//! What differs between kinds (positions, which snapshots are bases and
//! where they sit in a stream, how a time becomes a position) is
//! [`CaptureKind`]'s; this module is the same for every kind.

use std::collections::BTreeMap;

use backup_core::capture::{CaptureExpiry, CaptureName, CaptureRecord, CaptureReplay};
use backup_core::repo::Repository;
use backup_core::snapshot::{SnapshotEntry, SnapshotFilter};
use backup_core::target::{RecoveryPoint, RestoreOptions};
use backup_core::{FileKind, Id};
use backup_sources::capture::CaptureKind;
pub use backup_sources::capture::{CaptureEvent, CaptureObserver, NoObserver, StoredPiece};
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio_util::sync::CancellationToken;

use crate::error::{Error, Result};

/// A base snapshot of a stream.
#[derive(Debug, Clone, Serialize)]
pub struct Base {
    /// The snapshot.
    pub id: Id,
    /// When it was taken.
    pub taken: DateTime<Utc>,
    /// Its consistent point: the last position it holds.
    pub point: String,
    /// The timeline of `point`, for kinds that have timelines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    /// The time of that point, when known.
    pub point_time: Option<DateTime<Utc>>,
}

/// A range of a stream that can be restored to any point of.
#[derive(Debug, Clone, Serialize)]
pub struct Window {
    /// The earliest restorable position (a base's consistent point).
    pub from: String,
    /// The latest restorable position (inclusive).
    pub to: String,
    /// The timeline of `from` and `to`, for kinds that have timelines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    /// Their times, when known.
    pub from_time: Option<DateTime<Utc>>,
    /// See `from_time`.
    pub to_time: Option<DateTime<Utc>>,
    /// The base snapshots inside.
    pub bases: Vec<Id>,
}

/// A range of a stream that is not stored.
#[derive(Debug, Clone, Serialize)]
pub struct Gap {
    /// First missing position.
    pub from: String,
    /// End of the missing range (exclusive).
    pub to: String,
    /// The timeline of `from` and `to`, for kinds that have timelines.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub timeline: Option<u32>,
    /// Times of the two ends, when known.
    pub from_time: Option<DateTime<Utc>>,
    /// See `from_time`.
    pub to_time: Option<DateTime<Utc>>,
    /// Why: the recorded reason, or that pieces are missing.
    pub reason: String,
}

/// One capture stream with what it makes restorable.
#[derive(Debug, Clone, Serialize)]
pub struct Stream {
    /// The stream id.
    pub stream: String,
    /// Its kind.
    #[serde(serialize_with = "kind_name")]
    pub kind: CaptureKind,
    /// What it was captured from (identity, and the newest record's URL).
    pub identity: String,
    /// The source URL (redacted).
    pub source: String,
    /// Pieces stored (not counting gap records).
    pub pieces: usize,
    /// Bytes stored.
    pub bytes: u64,
    /// The first and last stored positions (`last` exclusive).
    pub first: String,
    /// See `first`.
    pub last: String,
    /// Restorable windows, oldest first, positions written as the kind's
    /// tools write them (`1700000000:5`, `1/0/3000028`).
    pub windows: Vec<Window>,
    /// Gaps, oldest first.
    pub gaps: Vec<Gap>,
    /// Base snapshots, oldest first.
    pub bases: Vec<Base>,
    #[serde(skip)]
    records: Vec<(CaptureName, CaptureRecord)>,
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's signature.
fn kind_name<S: serde::Serializer>(k: &CaptureKind, s: S) -> std::result::Result<S::Ok, S::Error> {
    s.serialize_str(k.name())
}

impl Stream {
    /// A position as people write it.
    pub fn show(&self, position: &str) -> String {
        self.kind.show_position(position)
    }

    /// A position with its time, for messages.
    fn describe(&self, position: &str) -> String {
        match self.kind.position_time(position) {
            Some(t) => format!(
                "{} ({})",
                t.format("%Y-%m-%dT%H:%M:%SZ"),
                self.kind.show_position(position)
            ),
            None => self.kind.show_position(position),
        }
    }
}

/// Every capture stream of `repo` of a kind [`CaptureKind`] knows whose
/// source or base snapshots pass `source` (a URL or kind, as `--source`;
/// all when `None`).
///
/// Reads every capture record (16 at a time) and every snapshot manifest.
///
/// # Errors
///
/// Storage errors; an unreadable capture record.
pub async fn streams(repo: &Repository, source: Option<&str>) -> Result<Vec<Stream>> {
    let inventory = Inventory::read(repo).await?;
    Ok(streams_of(repo, &inventory, source))
}

/// [`streams`] from an inventory already read.
fn streams_of(repo: &Repository, inventory: &Inventory, source: Option<&str>) -> Vec<Stream> {
    let records = inventory.records.clone();
    let snapshots = &inventory.snapshots;
    let filter = SnapshotFilter {
        source: source.map(str::to_owned),
        ..SnapshotFilter::default()
    };
    let mut by_stream: BTreeMap<String, Vec<(CaptureName, CaptureRecord)>> = BTreeMap::new();
    for (n, r) in records {
        by_stream.entry(n.stream.clone()).or_default().push((n, r));
    }
    // Base snapshots by the stream they belong to.
    let mut bases: BTreeMap<String, StreamBases> = BTreeMap::new();
    for e in snapshots {
        for kind in CaptureKind::ALL {
            if let Some(p) = kind.base_point(&e.snapshot) {
                let stream = repo.capture_stream(kind.name(), &p.identity);
                bases
                    .entry(stream)
                    .or_insert_with(|| (kind, p.identity.clone(), Vec::new()))
                    .2
                    .push((e.clone(), p.from, p.time));
            }
        }
    }
    let mut ids: Vec<String> = by_stream.keys().chain(bases.keys()).cloned().collect();
    ids.sort();
    ids.dedup();
    let mut out = Vec::new();
    for id in ids {
        let records = by_stream.remove(&id).unwrap_or_default();
        let base_list = bases.remove(&id);
        let kind = records
            .first()
            .and_then(|(_, r)| CaptureKind::of(&r.kind))
            .or(base_list.as_ref().map(|b| b.0));
        let Some(kind) = kind else { continue };
        let matches = source.is_none_or(|_| {
            records.iter().any(|(_, r)| {
                filter.matches(&backup_core::snapshot::Snapshot {
                    source: r.source.clone(),
                    ..placeholder()
                })
            }) || base_list
                .as_ref()
                .is_some_and(|b| b.2.iter().any(|(e, _, _)| filter.matches(&e.snapshot)))
        });
        if !matches {
            continue;
        }
        out.push(build(kind, id, records, base_list));
    }
    out
}

/// A stream's kind, identity, and base snapshots with the first position
/// replay applies after each and the time they are consistent at.
type StreamBases = (
    CaptureKind,
    String,
    Vec<(SnapshotEntry, String, Option<DateTime<Utc>>)>,
);

/// An empty manifest for matching a record's source with a
/// [`SnapshotFilter`].
fn placeholder() -> backup_core::snapshot::Snapshot {
    backup_core::snapshot::Snapshot {
        version: backup_core::snapshot::SNAPSHOT_VERSION,
        time: DateTime::<Utc>::UNIX_EPOCH,
        host: String::new(),
        user: String::new(),
        source: backup_core::snapshot::SourceDescriptor {
            kind: String::new(),
            url: String::new(),
        },
        job: None,
        tags: Vec::new(),
        parent: None,
        copy_of: None,
        tree: Id::default(),
        excludes: Vec::new(),
        includes: Vec::new(),
        stats: backup_core::snapshot::SnapshotStats::default(),
        streams: Vec::new(),
        warnings: Vec::new(),
        metadata: serde_json::Value::Null,
        program: String::new(),
    }
}

/// A stream's runs, gaps, bases and windows.
fn build(
    kind: CaptureKind,
    stream: String,
    mut records: Vec<(CaptureName, CaptureRecord)>,
    base_list: Option<StreamBases>,
) -> Stream {
    records.sort_by(|a, b| a.0.first.cmp(&b.0.first).then(a.0.last.cmp(&b.0.last)));
    // Kinds whose positions tell no time take it from the records: a
    // piece's end stands for its newest change, its start for its oldest.
    let mut known: BTreeMap<String, DateTime<Utc>> = BTreeMap::new();
    if !kind.timed_positions() {
        for (n, r) in &records {
            if let Some(t) = r.time_first {
                known.entry(n.first.clone()).or_insert(t);
            }
            if let Some(t) = r.time_last {
                known.insert(kind.prev(&n.last), t);
            }
        }
    }
    let time = |p: &str| kind.position_time(p).or_else(|| known.get(p).copied());
    let prev_of = |from: &str| -> String { kind.prev(from) };
    // Contiguous runs of data pieces; gap records and holes between
    // pieces end them.
    let mut runs: Vec<(String, String)> = Vec::new();
    let mut gaps = Vec::new();
    let mut end: Option<String> = None;
    for (n, r) in &records {
        if let Some(e) = &end {
            if n.first > *e {
                gaps.push(Gap {
                    timeline: None,
                    from: e.clone(),
                    to: n.first.clone(),
                    from_time: time(e),
                    to_time: time(&n.first),
                    reason: "pieces are missing (deleted, or never stored)".to_owned(),
                });
            }
        }
        if let Some(reason) = &r.gap {
            gaps.push(Gap {
                timeline: None,
                from: n.first.clone(),
                to: n.last.clone(),
                from_time: r.time_first.or_else(|| time(&n.first)),
                to_time: r.time_last.or_else(|| time(&n.last)),
                reason: reason.clone(),
            });
            end = Some(end.map_or(n.last.clone(), |e| e.max(n.last.clone())));
            continue;
        }
        match runs.last_mut() {
            Some(run) if end.as_ref() == Some(&run.1) && n.first <= run.1 => {
                if n.last > run.1 {
                    run.1.clone_from(&n.last);
                }
            }
            _ => runs.push((n.first.clone(), n.last.clone())),
        }
        end = Some(end.map_or(n.last.clone(), |e| e.max(n.last.clone())));
    }
    let (identity, mut bases_raw) = match base_list {
        Some((_, identity, b)) => (identity, b),
        None => (
            records
                .first()
                .map(|(_, r)| r.identity.clone())
                .unwrap_or_default(),
            Vec::new(),
        ),
    };
    bases_raw.sort_by(|a, b| a.1.cmp(&b.1));
    let bases: Vec<Base> = bases_raw
        .iter()
        .map(|(e, from, t)| {
            let point = prev_of(from);
            Base {
                id: e.id,
                timeline: None,
                taken: e.snapshot.time,
                point_time: time(&point).or(*t),
                point,
            }
        })
        .collect();
    // Windows: per run, from its earliest base; a base outside every run
    // is restorable to its own point.
    let mut windows: Vec<Window> = Vec::new();
    for (b, (_, from, _)) in bases.iter().zip(&bases_raw) {
        let run = runs.iter().find(|(s, e)| s <= from && from < e);
        let to = run.map_or_else(|| b.point.clone(), |(_, e)| prev_of(e));
        if let Some(w) = windows.iter_mut().find(|w| w.to == to && run.is_some()) {
            w.bases.push(b.id);
            continue;
        }
        windows.push(Window {
            timeline: None,
            from: b.point.clone(),
            from_time: b.point_time,
            to_time: time(&to).or(b.point_time.filter(|_| run.is_none())),
            to,
            bases: vec![b.id],
        });
    }
    let data: Vec<&(CaptureName, CaptureRecord)> =
        records.iter().filter(|(_, r)| r.gap.is_none()).collect();
    let newest = records.iter().max_by(|a, b| a.1.created.cmp(&b.1.created));
    Stream {
        kind,
        identity,
        source: newest
            .map(|(_, r)| r.source.url.clone())
            .or_else(|| {
                bases_raw
                    .last()
                    .map(|(e, _, _)| e.snapshot.source.url.clone())
            })
            .unwrap_or_default(),
        pieces: data.len(),
        bytes: data.iter().map(|(_, r)| r.size).sum(),
        first: records
            .first()
            .map(|(n, _)| n.first.clone())
            .unwrap_or_default(),
        last: records
            .iter()
            .map(|(n, _)| n.last.clone())
            .max()
            .unwrap_or_default(),
        windows,
        gaps,
        bases,
        stream,
        records,
    }
}

/// What a repository holds for point-in-time listings, read once and
/// handed to every [`WindowProvider`].
#[derive(Debug, Clone)]
pub struct Inventory {
    /// Every capture record with its name (all kinds).
    pub records: Vec<(CaptureName, CaptureRecord)>,
    /// Every snapshot.
    pub snapshots: Vec<SnapshotEntry>,
}

impl Inventory {
    /// Reads every capture record (16 at a time) and snapshot manifest.
    ///
    /// # Errors
    ///
    /// Storage errors; an unreadable capture record.
    pub async fn read(repo: &Repository) -> Result<Self> {
        let (records, bad) = repo.capture_records().await?;
        if let Some((name, e)) = bad.into_iter().next() {
            return Err(Error::from(e).context(format!("reading capture record {name}")));
        }
        let (snapshots, _) = repo.snapshots().await?;
        Ok(Inventory { records, snapshots })
    }
}

/// One source's point-in-time recovery as `backup pitr` lists it: what
/// was captured, the restorable windows, the gaps and the bases.
#[derive(Debug, Clone, Serialize)]
pub struct SourceWindows {
    /// The kind of source (`mongodb`, `postgres`).
    pub kind: String,
    /// The kind of capture stream (`mongodb-oplog`, `postgres-wal`).
    pub capture: String,
    /// The stream id (from the capture names).
    pub stream: String,
    /// What was captured from (replica set, cluster system identifier).
    pub identity: String,
    /// The source URL (redacted).
    pub source: String,
    /// What a position is called (`oplog timestamp`, `LSN`).
    pub position: String,
    /// Pieces stored (gap records not counted).
    pub pieces: usize,
    /// Bytes stored.
    pub bytes: u64,
    /// Restorable windows, oldest first, positions written as the kind's
    /// tools write them (`1700000000:5`, `1/0/3000028`).
    pub windows: Vec<Window>,
    /// Gaps, oldest first.
    pub gaps: Vec<Gap>,
    /// Base snapshots, oldest first.
    pub bases: Vec<Base>,
    /// Why there is no restorable window, when there is none: what is
    /// missing (a base, captured changes, or the stretch between them).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Lists the restorable windows of one kind of source, for `backup pitr`.
///
/// Each kind that captures a change stream implements it and is added to
/// [`providers`]; the listing is the concatenation of what every provider
/// returns, so a provider only reads the records of its own capture kinds
/// and the snapshots that are its bases.
#[async_trait::async_trait]
pub trait WindowProvider: Send + Sync {
    /// The kind of source it lists (`mongodb`).
    fn kind(&self) -> &'static str;

    /// The streams of this kind whose source or bases pass `source` (a URL
    /// or kind, as `--source`; all when `None`).
    ///
    /// # Errors
    ///
    /// Storage errors reading what the kind needs beyond `inventory`.
    async fn windows(
        &self,
        repo: &Repository,
        inventory: &Inventory,
        source: Option<&str>,
    ) -> Result<Vec<SourceWindows>>;
}

/// A kind whose capture streams [`streams`] reads: MongoDB's oplog
/// captured by `backup oplog follow` with the replica set's consistent
/// snapshots, Redis's replication stream captured by `backup redis
/// follow` with its RDB snapshots.
#[derive(Debug, Clone, Copy)]
pub struct StreamWindows(pub CaptureKind);

#[async_trait::async_trait]
impl WindowProvider for StreamWindows {
    fn kind(&self) -> &'static str {
        self.0.source_kind().name()
    }

    async fn windows(
        &self,
        repo: &Repository,
        inventory: &Inventory,
        source: Option<&str>,
    ) -> Result<Vec<SourceWindows>> {
        Ok(streams_of(repo, inventory, source)
            .into_iter()
            .filter(|s| s.kind == self.0)
            .map(|s| s.listed())
            .collect())
    }
}

/// Every provider this build has, in listing order. PostgreSQL's WAL
/// windows (timelines, `postgres-wal` capture records, physical base
/// backups) plug in here as another [`WindowProvider`].
pub fn providers() -> Vec<Box<dyn WindowProvider>> {
    vec![
        Box::new(StreamWindows(CaptureKind::MongodbOplog)),
        Box::new(StreamWindows(CaptureKind::RedisStream)),
        #[cfg(feature = "postgres")]
        Box::new(PostgresWindows),
    ]
}

/// PostgreSQL: the WAL captured by `backup wal receive` / `wal push` and
/// the physical base backups of the cluster. Positions are
/// `timeline/LSN`; a window on a later timeline that continues its parent
/// at the switch point is restorable from the parent's bases.
#[cfg(feature = "postgres")]
#[derive(Debug, Clone, Copy, Default)]
pub struct PostgresWindows;

#[cfg(feature = "postgres")]
#[async_trait::async_trait]
impl WindowProvider for PostgresWindows {
    fn kind(&self) -> &'static str {
        "postgres"
    }

    async fn windows(
        &self,
        repo: &Repository,
        inventory: &Inventory,
        source: Option<&str>,
    ) -> Result<Vec<SourceWindows>> {
        use backup_sources::postgres::physical::pitr;
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
            let stream = repo.capture_stream("postgres-wal", &c.system_identifier);
            let gap_stream = repo.capture_stream("postgres-wal-gap", &c.system_identifier);
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
                capture: "postgres-wal".to_owned(),
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
}

/// Why a cluster has no restorable window, naming what is missing.
#[cfg(feature = "postgres")]
fn no_wal_window(
    c: &backup_sources::postgres::physical::pitr::ClusterWindows,
    bases: &[(
        &SnapshotEntry,
        backup_sources::postgres::physical::pitr::BaseBackup,
    )],
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
        .find(|from| backup_sources::postgres::physical::pitr::lsn_after(from, &m.stop_lsn));
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
#[cfg(feature = "postgres")]
fn wal_position(p: &str) -> (Option<u32>, String) {
    match (
        p.get(..8).and_then(|t| u32::from_str_radix(t, 16).ok()),
        p.get(8..).and_then(|l| u64::from_str_radix(l, 16).ok()),
    ) {
        (Some(t), Some(l)) => (Some(t), format!("{:X}/{:X}", l >> 32, l & 0xFFFF_FFFF)),
        _ => (None, p.to_owned()),
    }
}

/// The restorable windows of every source (narrowed by `source`), from
/// every [`providers`] entry.
///
/// # Errors
///
/// Storage errors; an unreadable capture record.
pub async fn windows(repo: &Repository, source: Option<&str>) -> Result<Vec<SourceWindows>> {
    let inventory = Inventory::read(repo).await?;
    let mut out = Vec::new();
    for p in providers() {
        out.extend(p.windows(repo, &inventory, source).await?);
    }
    Ok(out)
}

impl Stream {
    /// The kind-neutral listing of this stream.
    pub fn listed(&self) -> SourceWindows {
        SourceWindows {
            kind: self.kind.source_kind().name().to_owned(),
            capture: self.kind.name().to_owned(),
            stream: self.stream.clone(),
            identity: self.identity.clone(),
            source: self.source.clone(),
            position: self.kind.position_noun().to_owned(),
            pieces: self.pieces,
            bytes: self.bytes,
            windows: self
                .windows
                .iter()
                .map(|w| Window {
                    timeline: None,
                    from: self.show(&w.from),
                    to: self.show(&w.to),
                    from_time: w.from_time,
                    to_time: w.to_time,
                    bases: w.bases.clone(),
                })
                .collect(),
            gaps: self
                .gaps
                .iter()
                .map(|g| Gap {
                    timeline: None,
                    from: self.show(&g.from),
                    to: self.show(&g.to),
                    from_time: g.from_time,
                    to_time: g.to_time,
                    reason: g.reason.clone(),
                })
                .collect(),
            bases: self
                .bases
                .iter()
                .map(|b| Base {
                    id: b.id,
                    timeline: None,
                    taken: b.taken,
                    point: self.show(&b.point),
                    point_time: b.point_time,
                })
                .collect(),
            note: self.windows.is_empty().then(|| match self.bases.last() {
                None => "no base snapshot of this source precedes the captured changes: take one (`backup create SOURCE`)".to_owned(),
                Some(b) => format!(
                    "base snapshot {} is consistent at {}, outside the captured changes ({} .. {}): take a new base snapshot while capture runs",
                    b.id.short(),
                    self.show(&b.point),
                    self.show(&self.first),
                    self.show(&self.last)
                ),
            }),
        }
    }
}

/// The capture records (oplog, Redis stream) no snapshot of `kept` needs:
/// in every such stream
/// with a base among `kept`, the slices and gap records that end at or
/// before the position right after the oldest such base's consistent
/// point (`REPOSITORY_FORMAT.md` §21.2). Streams without a kept base keep
/// everything (they become restorable once a base is taken).
///
/// # Errors
///
/// Storage errors; an unreadable capture record.
pub async fn expired_oplog(
    repo: &Repository,
    kept: &[SnapshotEntry],
) -> Result<Vec<(CaptureExpiry, Vec<CaptureName>)>> {
    let (records, bad) = repo.capture_records().await?;
    if let Some((name, e)) = bad.into_iter().next() {
        return Err(Error::from(e).context(format!("reading capture record {name}")));
    }
    let inventory = Inventory {
        records,
        snapshots: kept.to_vec(),
    };
    let mut out = Vec::new();
    for s in streams_of(repo, &inventory, None) {
        let Some(oldest) = s.bases.first() else {
            continue;
        };
        let from = s.kind.next(&oldest.point);
        let (gone, left): (Vec<_>, Vec<_>) = s.records.iter().partition(|(n, _)| n.last <= from);
        if gone.is_empty() {
            continue;
        }
        out.push((
            CaptureExpiry {
                kind: s.kind.name().to_owned(),
                identity: s.identity.clone(),
                pieces: gone.len(),
                bytes: gone.iter().map(|(_, r)| r.size).sum(),
                from: gone.first().map(|(n, _)| s.show(&n.first)),
                kept_from: left.first().map(|(n, _)| s.show(&n.first)),
                reason: format!(
                    "before the oldest kept base snapshot {} (consistent at {})",
                    oldest.id.short(),
                    s.describe(&oldest.point)
                ),
            },
            gone.into_iter().map(|(n, _)| n.clone()).collect(),
        ));
    }
    Ok(out)
}

/// The base snapshots of captured streams (MongoDB, Redis) a
/// `--keep-within` period needs beyond its own rule: per stream identity,
/// the newest base taken at or before `since`
/// (restores to any point after `since` replay from it).
pub fn oplog_anchors(snapshots: &[SnapshotEntry], since: DateTime<Utc>) -> Vec<Id> {
    let mut newest: BTreeMap<String, &SnapshotEntry> = BTreeMap::new();
    for e in snapshots {
        let Some(p) = CaptureKind::ALL
            .into_iter()
            .find_map(|k| k.base_point(&e.snapshot))
        else {
            continue;
        };
        if e.snapshot.time > since {
            continue;
        }
        let slot = newest.entry(p.identity).or_insert(e);
        if (e.snapshot.time, e.id) > (slot.snapshot.time, slot.id) {
            *slot = e;
        }
    }
    newest.into_values().map(|e| e.id).collect()
}

/// A point-in-time restore's plan: the base snapshot and what to replay.
#[derive(Debug, Clone)]
pub struct Plan {
    /// The stream.
    pub stream: Stream,
    /// The base snapshot.
    pub base: SnapshotEntry,
    /// What the target replays after it.
    pub replay: CaptureReplay,
}

/// The base and pieces a restore to the point of `opts` (`at` or
/// [`RecoveryPoint::OplogTs`]) needs, checked before anything is
/// written: the newest base snapshot whose consistent point is at or
/// before the target (or `base` when one was named), and pieces from it
/// to the target without a gap, each record readable and its pack
/// present.
///
/// # Errors
///
/// [`Error::Usage`] when the target is not restorable (before the oldest
/// base, inside a gap, after the newest captured change or in the
/// future), naming the missing range and the nearest restorable points;
/// storage errors.
pub async fn plan(
    repo: &Repository,
    source: Option<&str>,
    base: Option<Id>,
    opts: &RestoreOptions,
) -> Result<Plan> {
    let all = streams(repo, source).await?;
    if all.is_empty() {
        return Err(Error::usage(format!(
            "no captured stream or base snapshot{}: a point-in-time restore needs a base snapshot and a capture follower (backup oplog follow SOURCE)",
            source.map(|s| format!(" of {s}")).unwrap_or_default()
        )));
    }
    if let Some(t) = &opts.at {
        if *t > Utc::now() {
            return Err(Error::usage(format!(
                "{} is in the future",
                t.format("%Y-%m-%dT%H:%M:%SZ")
            )));
        }
    }
    let mut refusals = Vec::new();
    let mut candidates = Vec::new();
    for s in all {
        match choose(&s, base, opts) {
            Ok((base, replay)) => candidates.push((s, base, replay)),
            Err(why) => refusals.push(format!("stream {} ({}): {why}", s.identity, s.source)),
        }
    }
    if candidates.len() > 1 {
        return Err(Error::usage(format!(
            "{} captured streams can restore that point ({}); narrow --source to one",
            candidates.len(),
            candidates
                .iter()
                .map(|(s, _, _)| format!("{} from {}", s.identity, s.source))
                .collect::<Vec<_>>()
                .join(", ")
        )));
    }
    let Some((stream, base, replay)) = candidates.pop() else {
        return Err(Error::usage(format!(
            "cannot restore to {}: {}",
            describe_target(opts),
            refusals.join("; ")
        )));
    };
    check_pieces(repo, &stream, &replay).await?;
    let (snapshots, _) = repo.snapshots().await?;
    let base = snapshots
        .into_iter()
        .find(|e| e.id == base)
        .ok_or_else(|| Error::usage(format!("base snapshot {} vanished", base.short())))?;
    Ok(Plan {
        stream,
        base,
        replay,
    })
}

/// The target of `opts` as the user gave it.
fn describe_target(opts: &RestoreOptions) -> String {
    match (&opts.at, &opts.point) {
        (Some(t), _) => t.format("%Y-%m-%dT%H:%M:%SZ").to_string(),
        (None, Some(RecoveryPoint::OplogTs { seconds, increment })) => {
            format!("oplog timestamp {seconds}:{increment}")
        }
        (None, Some(RecoveryPoint::ReplOffset(o))) => format!("replication offset {o}"),
        (None, Some(p)) => format!("{p:?}"),
        (None, None) => "the newest captured change".to_owned(),
    }
}

/// The base (`named`, or the newest before the target) and pieces of `s`
/// for the target of `opts`, or why there are none.
fn choose(
    s: &Stream,
    named: Option<Id>,
    opts: &RestoreOptions,
) -> std::result::Result<(Id, CaptureReplay), String> {
    let (until, until_time) = match (s.kind.until(opts), opts.at) {
        (Ok(Some(u)), _) => (u, None),
        (Ok(None), Some(t)) if !s.kind.timed_positions() => (until_by_time(s, t)?, Some(t)),
        (Ok(None), _) => {
            return Err(format!(
                "a {} stream cannot place that target from positions alone",
                s.kind.name()
            ))
        }
        (Err(e), _) => return Err(e.to_string()),
    };
    // A base consistent after a time target is no base for it, even when
    // its position is before the piece the target falls in.
    let before_time = |b: &Base| until_time.is_none_or(|t| b.point_time.is_none_or(|p| p <= t));
    let nearest = || nearest(s, &until);
    if let Some(id) = named {
        match s.bases.iter().find(|b| b.id == id) {
            None => {
                return Err(format!(
                    "snapshot {} is not a base snapshot of this stream",
                    id.short()
                ))
            }
            Some(b) if b.point > until || !before_time(b) => {
                return Err(format!(
                    "snapshot {} is consistent at {}, after the target",
                    id.short(),
                    s.describe(&b.point)
                ))
            }
            Some(_) => {}
        }
    }
    let Some(base) = s
        .bases
        .iter()
        .rev()
        .find(|b| b.point <= until && before_time(b) && named.is_none_or(|id| id == b.id))
    else {
        return Err(match s.bases.first() {
            Some(b) => format!(
                "it is before the oldest base snapshot ({} at {}); {}",
                b.id.short(),
                s.describe(&b.point),
                nearest()
            ),
            None => "the stream has no base snapshot; take one with backup create".to_owned(),
        });
    };
    let from = s.kind.next(&base.point);
    let mut pieces = Vec::new();
    let mut pos = from.clone();
    while pos <= until {
        let covering = s
            .records
            .iter()
            .filter(|(n, _)| n.first <= pos && pos < n.last)
            .max_by(|a, b| {
                a.1.gap
                    .is_none()
                    .cmp(&b.1.gap.is_none())
                    .then(a.0.last.cmp(&b.0.last))
            });
        match covering {
            Some((n, r)) if r.gap.is_none() => {
                pieces.push(n.clone());
                pos.clone_from(&n.last);
            }
            Some((n, r)) => {
                return Err(format!(
                    "the captured changes from {} to {} are missing ({}); {}",
                    s.describe(&n.first),
                    s.describe(&n.last),
                    r.gap.as_deref().unwrap_or_default(),
                    nearest()
                ))
            }
            None => {
                let after = s.records.iter().map(|(n, _)| &n.first).find(|f| **f > pos);
                return Err(match after {
                    Some(next) => format!(
                        "no piece holds {} to {} (pieces are missing); {}",
                        s.describe(&pos),
                        s.describe(next),
                        nearest()
                    ),
                    None => format!(
                        "it is after the newest captured change (the capture ends before {}); {}",
                        s.describe(&pos),
                        nearest()
                    ),
                });
            }
        }
    }
    Ok((
        base.id,
        CaptureReplay {
            stream: s.stream.clone(),
            pieces,
            from,
            until,
            until_time,
        },
    ))
}

/// For a kind whose positions tell no time: the end of the first piece
/// holding a change that arrived at or after `t` (the replay stops at
/// `t` inside it), or why the capture does not reach `t`.
fn until_by_time(s: &Stream, t: DateTime<Utc>) -> std::result::Result<String, String> {
    let reaching = s
        .records
        .iter()
        .filter(|(_, r)| r.gap.is_none() && r.time_last.is_some_and(|l| l >= t))
        .map(|(n, _)| &n.last)
        .min();
    if let Some(last) = reaching {
        return Ok(s.kind.prev(last));
    }
    let newest = s
        .records
        .iter()
        .filter(|(_, r)| r.gap.is_none())
        .filter_map(|(_, r)| r.time_last)
        .max();
    Err(match newest {
        Some(n) => format!(
            "it is after the newest captured change, which arrived at {} (a capture reaches a time once something arrives after it; an idle Redis primary sends a PING every 10 s)",
            n.format("%Y-%m-%dT%H:%M:%S%.3fZ")
        ),
        None => "nothing of this stream was captured yet".to_owned(),
    })
}

/// The restorable points nearest `until`, as a sentence.
fn nearest(s: &Stream, until: &str) -> String {
    let before = s
        .windows
        .iter()
        .filter(|w| w.from.as_str() <= until)
        .map(|w| {
            if w.to.as_str() < until {
                &w.to
            } else {
                &w.from
            }
        })
        .max();
    let after = s
        .windows
        .iter()
        .filter(|w| w.from.as_str() > until)
        .map(|w| &w.from)
        .min();
    match (before, after) {
        (None, None) => "nothing of this stream is restorable".to_owned(),
        (Some(b), None) => format!("the nearest restorable point is {}", s.describe(b)),
        (None, Some(a)) => format!("the nearest restorable point is {}", s.describe(a)),
        (Some(b), Some(a)) => format!(
            "the nearest restorable points are {} and {}",
            s.describe(b),
            s.describe(a)
        ),
    }
}

/// Checks that every piece's pack is stored and long enough (one listing).
async fn check_pieces(repo: &Repository, s: &Stream, replay: &CaptureReplay) -> Result<()> {
    if replay.pieces.is_empty() {
        return Ok(());
    }
    let sizes: BTreeMap<String, u64> = repo
        .sink()
        .list(FileKind::Pack)
        .await?
        .into_iter()
        .map(|o| (o.name, o.size))
        .collect();
    for name in &replay.pieces {
        let Some((_, r)) = s.records.iter().find(|(n, _)| n == name) else {
            continue;
        };
        let Some(pack) = r.pack else { continue };
        let need = r
            .blobs
            .iter()
            .map(|b| u64::from(b.offset) + u64::from(b.length))
            .max()
            .unwrap_or(0);
        match sizes.get(&pack.to_hex()) {
            Some(size) if *size >= need => {}
            found => {
                return Err(Error::from(backup_core::Error::corrupt(
                    FileKind::Capture,
                    name.file_name(),
                    match found {
                        Some(size) => {
                            format!("its pack {} has {size} bytes, {need} needed", pack.short())
                        }
                        None => format!("its pack {} is missing", pack.short()),
                    },
                ))
                .context(format!(
                    "the captured changes from {} to {} cannot be read; nothing was changed",
                    s.describe(&name.first),
                    s.describe(&name.last)
                )));
            }
        }
    }
    Ok(())
}

/// How a capture follower stores pieces (per kind).
#[derive(Debug, Clone, Default)]
pub struct FollowRequest {
    /// The job recorded with the base snapshots a follower takes (Redis).
    pub job: Option<String>,
    /// Tags of those snapshots.
    pub tags: Vec<String>,
    /// The time bound of a piece (`None`: the kind's default).
    pub slice_time: Option<std::time::Duration>,
    /// The size bound of a piece (`None`: the kind's default).
    pub slice_bytes: Option<usize>,
    /// How long a store waits for a prune's lock before it tries again.
    pub lock_wait: std::time::Duration,
}

/// What a follower did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct FollowResult {
    /// The stream.
    pub stream: String,
    /// Pieces stored.
    pub pieces: u64,
    /// Changes stored.
    pub entries: u64,
    /// Bytes stored.
    pub bytes: u64,
    /// Gaps met.
    pub gaps: u64,
    /// The first position not stored yet.
    pub next: Option<String>,
}

impl From<backup_sources::capture::FollowSummary> for FollowResult {
    fn from(s: backup_sources::capture::FollowSummary) -> Self {
        FollowResult {
            stream: s.stream,
            pieces: s.slices,
            entries: s.entries,
            bytes: s.bytes,
            gaps: s.gaps,
            next: s.next,
        }
    }
}

/// Follows the change stream of `source` into `repo` until `cancel` fires
/// or an error that does not pass; events go to `observer`.
///
/// # Errors
///
/// A source that has no change stream to follow (or whose kind this build
/// lacks); the follower's errors.
pub async fn follow(
    repo: &Repository,
    source: &backup_sources::SourceSpec,
    req: &FollowRequest,
    observer: &dyn CaptureObserver,
    cancel: &CancellationToken,
) -> Result<FollowResult> {
    match source.kind() {
        #[cfg(feature = "mongodb")]
        backup_sources::Kind::Mongodb => {
            let defaults =
                backup_sources::mongo::FollowOptions::with_slice_time(backup_sources::mongo::SLICE_TIME);
            let opts = backup_sources::mongo::FollowOptions {
                slice_time: req.slice_time.unwrap_or(defaults.slice_time),
                slice_bytes: req.slice_bytes.unwrap_or(defaults.slice_bytes),
                lock_wait: req.lock_wait.max(defaults.lock_wait),
            };
            let s =
                backup_sources::mongo::follow(repo, source.url(), &opts, observer, cancel).await?;
            Ok(s.into())
        }
        #[cfg(feature = "redis")]
        backup_sources::Kind::Redis => {
            let mut opts = backup_sources::capture::FollowOptions::with_slice_time(
                req.slice_time.unwrap_or(backup_sources::redis::SLICE_TIME),
            );
            if let Some(b) = req.slice_bytes {
                opts.slice_bytes = b;
            }
            opts.lock_wait = req.lock_wait.max(opts.lock_wait);
            let bases = Bases {
                repo,
                spec: source,
                req,
                cancel,
            };
            let s = backup_sources::redis::follow(
                repo,
                source.url(),
                &opts,
                &bases,
                observer,
                cancel,
            )
            .await?;
            Ok(s.into())
        }
        other => Err(Error::usage(format!(
            "{other} sources have no change stream to follow: capture follows a MongoDB replica set's oplog or a Redis primary's replication stream"
        ))),
    }
}

/// Stores the RDB a Redis follower receives as an ordinary snapshot.
#[cfg(feature = "redis")]
struct Bases<'a> {
    repo: &'a Repository,
    spec: &'a backup_sources::SourceSpec,
    req: &'a FollowRequest,
    cancel: &'a CancellationToken,
}

#[cfg(feature = "redis")]
#[async_trait::async_trait]
impl backup_sources::redis::BaseStore for Bases<'_> {
    async fn store(&self, source: Box<dyn backup_core::source::Source>) -> backup_core::Result<Id> {
        let req = crate::backup::BackupRequest {
            tags: self.req.tags.clone(),
            job: self.req.job.clone(),
            lock_wait: self.req.lock_wait,
            ..crate::backup::BackupRequest::default()
        };
        let outcome = crate::backup::backup(
            self.repo,
            source,
            self.spec,
            &req,
            &crate::feedback::Unattended,
            Some(self.cancel),
        )
        .await
        .map_err(|e| match e {
            Error::Core(e) => e,
            other => backup_core::Error::source_failed(other.to_string()),
        })?;
        outcome
            .id
            .ok_or_else(|| backup_core::Error::source_failed("the base snapshot was not saved"))
    }
}
