//! The streams whose pieces are named by position (MongoDB's oplog,
//! Redis's replication stream): their runs, gaps, base snapshots and
//! restorable windows ([`Stream`], [`streams`]), and [`StreamDriver`], the
//! [`CaptureDriver`] of each such [`CaptureKind`].

use std::collections::BTreeMap;

use backup_core::capture::{CaptureExpiry, CaptureName, CaptureRecord};
use backup_core::repo::Repository;
use backup_core::snapshot::{SnapshotEntry, SnapshotFilter};
use backup_core::{Id, Result};
use chrono::{DateTime, Utc};
use serde::Serialize;

use super::driver::CaptureDriver;
use super::kind::CaptureKind;
use super::window::{Base, Gap, Inventory, SourceWindows, Window};

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
    /// Its records (pieces and gap records), ordered by position.
    #[serde(skip)]
    pub records: Vec<(CaptureName, CaptureRecord)>,
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
    pub fn describe(&self, position: &str) -> String {
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
pub fn streams_of(repo: &Repository, inventory: &Inventory, source: Option<&str>) -> Vec<Stream> {
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

/// The capture records of `kind` no snapshot of `kept` needs: in every
/// stream with a base among `kept`, the slices and gap records that end at or
/// before the position right after the oldest such base's consistent
/// point (`REPOSITORY_FORMAT.md` §21.2). Streams without a kept base keep
/// everything (they become restorable once a base is taken).
///
/// # Errors
///
/// Storage errors; an unreadable capture record.
fn expired(
    repo: &Repository,
    kind: CaptureKind,
    kept: &Inventory,
) -> Vec<(CaptureExpiry, Vec<CaptureName>)> {
    let mut out = Vec::new();
    for s in streams_of(repo, kept, None)
        .into_iter()
        .filter(|s| s.kind == kind)
    {
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
    out
}

/// The base snapshots of `kind`'s streams a `--keep-within` period needs
/// beyond its own rule: per stream identity, the newest base taken at or
/// before `since` (restores to any point after `since` replay from it).
fn anchors(kind: CaptureKind, snapshots: &[SnapshotEntry], since: DateTime<Utc>) -> Vec<Id> {
    let mut newest: BTreeMap<String, &SnapshotEntry> = BTreeMap::new();
    for e in snapshots {
        let Some(p) = kind.base_point(&e.snapshot) else {
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

/// The [`CaptureDriver`] of a [`CaptureKind`]: MongoDB's oplog captured by
/// `backup oplog follow` with the replica set's consistent snapshots,
/// Redis's replication stream captured by `backup redis follow` with its
/// RDB snapshots.
#[derive(Debug, Clone, Copy)]
pub struct StreamDriver(pub CaptureKind);

#[async_trait::async_trait]
impl CaptureDriver for StreamDriver {
    fn source_kind(&self) -> &'static str {
        self.0.source_kind().name()
    }

    fn capture(&self) -> &'static str {
        self.0.name()
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

    async fn expired(
        &self,
        repo: &Repository,
        kept: &Inventory,
    ) -> Result<Vec<(CaptureExpiry, Vec<CaptureName>)>> {
        Ok(expired(repo, self.0, kept))
    }

    async fn anchors(
        &self,
        _repo: &Repository,
        snapshots: &[SnapshotEntry],
        since: DateTime<Utc>,
    ) -> Result<Vec<Id>> {
        Ok(anchors(self.0, snapshots, since))
    }
}
