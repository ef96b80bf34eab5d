//! The streams whose pieces are named by position (MongoDB's oplog,
//! Redis's replication stream): their runs, gaps, base snapshots and
//! restorable windows ([`Stream`], [`streams_of`]), and [`StreamDriver`], the
//! [`CaptureDriver`] of each such [`CaptureKind`].

use std::collections::BTreeMap;

use backup_core::capture::{CaptureExpiry, CaptureName, CaptureRecord};
use backup_core::repo::Repository;
use backup_core::snapshot::{SnapshotEntry, SourceDescriptor};
use backup_core::target::RestoreOptions;
use backup_core::{Id, Result};
use chrono::{DateTime, Utc};

use super::driver::{CaptureDriver, Planned};
use super::kind::{BasePoint, CaptureKind, Position, Words};
use super::window::{Base, Gap, Inventory, SourceWindows, Window};

pub mod plan;

/// A stored record of a stream with its positions read.
#[derive(Debug, Clone)]
pub struct Piece {
    /// The record's name.
    pub name: CaptureName,
    /// The record.
    pub record: CaptureRecord,
    /// Its first position (inclusive).
    pub first: Position,
    /// Its end (exclusive).
    pub last: Position,
}

/// One capture stream with what it makes restorable.
#[derive(Debug, Clone)]
pub struct Stream {
    /// The stream id.
    pub stream: String,
    /// Its kind.
    pub kind: CaptureKind,
    /// What it was captured from (identity, and the newest record's URL).
    pub identity: String,
    /// The source URL (redacted).
    pub source: String,
    /// Pieces stored (not counting gap records).
    pub pieces: usize,
    /// Bytes stored.
    pub bytes: u64,
    /// The first and last stored positions (`last` exclusive), when
    /// something is stored.
    pub span: Option<(Position, Position)>,
    /// Restorable windows, oldest first.
    pub windows: Vec<Window>,
    /// Gaps, oldest first.
    pub gaps: Vec<Gap>,
    /// Base snapshots, oldest first.
    pub bases: Vec<Base>,
    /// Its records (pieces and gap records), ordered by position; records
    /// whose names are not positions of the kind are left out.
    pub records: Vec<Piece>,
}

/// The streams of `kind` in `inventory` whose source or base snapshots
/// pass `source` (a URL or kind, as `--source`; all when `None`).
pub fn streams_of(
    repo: &Repository,
    inventory: &Inventory,
    kind: CaptureKind,
    source: Option<&str>,
) -> Vec<Stream> {
    let passes = |of: &SourceDescriptor| {
        source.is_none_or(|s| s == of.kind || backup_core::source_url::selects(s, &of.url))
    };
    // Per stream: its records, its bases, and whether any passes.
    let mut by_stream: BTreeMap<String, (Vec<Piece>, Bases, bool)> = BTreeMap::new();
    let records = inventory
        .records
        .iter()
        .filter(|(_, r)| r.kind == kind.name());
    for (name, record) in records {
        let slot = by_stream.entry(name.stream.clone()).or_default();
        slot.2 |= passes(&record.source);
        let parse = |p| Position::parse(kind, p);
        if let (Some(first), Some(last)) = (parse(&name.first), parse(&name.last)) {
            let (name, record) = (name.clone(), record.clone());
            slot.0.push(Piece {
                name,
                record,
                first,
                last,
            });
        }
    }
    for e in &inventory.snapshots {
        if let Some(p) = kind.base_point(&e.snapshot) {
            let slot = by_stream
                .entry(repo.capture_stream(kind.name(), &p.identity))
                .or_default();
            slot.2 |= passes(&e.snapshot.source);
            slot.1.push((e, p));
        }
    }
    by_stream
        .into_iter()
        .filter(|(_, slot)| slot.2)
        .map(|(id, (records, bases, _))| build(kind, id, records, bases))
        .collect()
}

/// A stream's base snapshots, with where each sits in it.
type Bases<'i> = Vec<(&'i SnapshotEntry, BasePoint)>;

/// A stream's runs, gaps, bases and windows, from its records and its
/// base snapshots.
fn build(
    kind: CaptureKind,
    stream: String,
    mut records: Vec<Piece>,
    mut base_list: Bases,
) -> Stream {
    records.sort_by_key(|p| (p.first, p.last));
    // Kinds whose positions tell no time take it from the records: a
    // piece's end stands for its newest change, its start for its oldest.
    let mut known: BTreeMap<Position, DateTime<Utc>> = BTreeMap::new();
    if !kind.timed_positions() {
        for p in &records {
            if let Some(t) = p.record.time_first {
                known.entry(p.first).or_insert(t);
            }
            if let Some(t) = p.record.time_last {
                known.insert(p.last.prev(), t);
            }
        }
    }
    let time = |p: Position| p.time().or_else(|| known.get(&p).copied());
    // Contiguous runs of data pieces; gap records and holes between
    // pieces end them.
    let mut runs: Vec<(Position, Position)> = Vec::new();
    let mut gaps = Vec::new();
    let mut end: Option<Position> = None;
    for p in &records {
        if let Some(e) = end.filter(|e| p.first > *e) {
            gaps.push(Gap {
                timeline: None,
                from: e,
                to: p.first,
                from_time: time(e),
                to_time: time(p.first),
                reason: "pieces are missing (deleted, or never stored)".to_owned(),
            });
        }
        if let Some(reason) = &p.record.gap {
            gaps.push(Gap {
                timeline: None,
                from: p.first,
                to: p.last,
                from_time: p.record.time_first.or_else(|| time(p.first)),
                to_time: p.record.time_last.or_else(|| time(p.last)),
                reason: reason.clone(),
            });
        } else {
            match runs.last_mut() {
                Some(run) if end == Some(run.1) && p.first <= run.1 => run.1 = run.1.max(p.last),
                _ => runs.push((p.first, p.last)),
            }
        }
        end = Some(end.map_or(p.last, |e| e.max(p.last)));
    }
    base_list.sort_by_key(|b| b.1.from);
    let bases: Vec<Base> = base_list
        .iter()
        .map(|(e, p)| {
            Base::new(
                e.id,
                e.snapshot.time,
                p.from.prev(),
                time(p.from.prev()).or(p.time),
            )
        })
        .collect();
    // Windows: per run, from its earliest base; a base outside every run
    // is restorable to its own point.
    let mut windows: Vec<Window> = Vec::new();
    for (b, (_, p)) in bases.iter().zip(&base_list) {
        let run = runs.iter().find(|(s, e)| *s <= p.from && p.from < *e);
        let to = run.map_or(b.point, |(_, e)| e.prev());
        if let Some(w) = windows.iter_mut().find(|w| w.to == to && run.is_some()) {
            w.bases.push(b.id);
            continue;
        }
        windows.push(Window {
            timeline: None,
            from: b.point,
            from_time: b.point_time,
            to_time: time(to).or(b.point_time.filter(|_| run.is_none())),
            to,
            bases: vec![b.id],
        });
    }
    let data = || records.iter().filter(|p| p.record.gap.is_none());
    let newest = records.iter().max_by_key(|p| p.record.created);
    let identity = match (base_list.last(), records.first()) {
        (Some((_, b)), _) => b.identity.clone(),
        (None, p) => p.map(|p| p.record.identity.clone()).unwrap_or_default(),
    };
    Stream {
        kind,
        identity,
        source: newest
            .map(|p| p.record.source.url.clone())
            .or_else(|| base_list.last().map(|(e, _)| e.snapshot.source.url.clone()))
            .unwrap_or_default(),
        pieces: data().count(),
        bytes: data().map(|p| p.record.size).sum(),
        span: records.first().map(|f| {
            (
                f.first,
                records.iter().map(|p| p.last).max().unwrap_or(f.last),
            )
        }),
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
            position: self.kind.words().position.to_owned(),
            pieces: self.pieces,
            bytes: self.bytes,
            windows: self.windows.clone(),
            gaps: self.gaps.clone(),
            bases: self.bases.clone(),
            note: self.windows.is_empty().then(|| match (self.bases.last(), self.span) {
                (None, _) => "no base snapshot of this source precedes the captured changes: take one (`backup create SOURCE`)".to_owned(),
                (Some(b), span) => format!(
                    "base snapshot {} is consistent at {}, outside the captured changes ({}): take a new base snapshot while capture runs",
                    b.id.short(),
                    b.point,
                    span.map_or_else(|| "none".to_owned(), |(f, l)| format!("{f} .. {l}"))
                ),
            }),
        }
    }
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

    fn words(&self) -> Words {
        self.0.words()
    }

    async fn windows(
        &self,
        repo: &Repository,
        inventory: &Inventory,
        source: Option<&str>,
    ) -> Result<Vec<SourceWindows>> {
        Ok(streams_of(repo, inventory, self.0, source)
            .iter()
            .map(Stream::listed)
            .collect())
    }

    async fn plan(
        &self,
        repo: &Repository,
        inventory: &Inventory,
        source: Option<&str>,
        base: Option<Id>,
        opts: &RestoreOptions,
    ) -> Result<Vec<Planned>> {
        let mut out = Vec::new();
        for s in streams_of(repo, inventory, self.0, source) {
            out.push(plan::plan_stream(repo, &s, base, opts).await?);
        }
        Ok(out)
    }

    /// In every stream with a kept base: the slices and gap records that
    /// end at or before the position right after the oldest kept base's
    /// consistent point (`REPOSITORY_FORMAT.md` §21.2).
    async fn expired(
        &self,
        repo: &Repository,
        kept: &Inventory,
    ) -> Result<Vec<(CaptureExpiry, Vec<CaptureName>)>> {
        let mut out = Vec::new();
        for s in streams_of(repo, kept, self.0, None) {
            let Some(oldest) = s.bases.first() else {
                continue;
            };
            let from = oldest.point.next();
            let (gone, left): (Vec<_>, Vec<_>) = s.records.iter().partition(|p| p.last <= from);
            if gone.is_empty() {
                continue;
            }
            out.push((
                CaptureExpiry {
                    kind: s.kind.name().to_owned(),
                    identity: s.identity.clone(),
                    pieces: gone.len(),
                    bytes: gone.iter().map(|p| p.record.size).sum(),
                    from: gone.first().map(|p| p.first.to_string()),
                    kept_from: left.first().map(|p| p.first.to_string()),
                    reason: format!(
                        "before the oldest kept base snapshot {} (consistent at {})",
                        oldest.id.short(),
                        oldest.point.describe()
                    ),
                },
                gone.into_iter().map(|p| p.name.clone()).collect(),
            ));
        }
        Ok(out)
    }

    async fn anchors(
        &self,
        _repo: &Repository,
        snapshots: &[SnapshotEntry],
        since: DateTime<Utc>,
    ) -> Result<Vec<Id>> {
        let mut newest: BTreeMap<String, &SnapshotEntry> = BTreeMap::new();
        for e in snapshots.iter().filter(|e| e.snapshot.time <= since) {
            let Some(p) = self.0.base_point(&e.snapshot) else {
                continue;
            };
            let slot = newest.entry(p.identity).or_insert(e);
            if (e.snapshot.time, e.id) > (slot.snapshot.time, slot.id) {
                *slot = e;
            }
        }
        Ok(newest.into_values().map(|e| e.id).collect())
    }
}
