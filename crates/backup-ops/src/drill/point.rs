//! What a drill restores: a point chosen by a [`PointChooser`].

use async_trait::async_trait;
use backup_core::capture::CaptureReplay;
use backup_core::repo::IndexedRepository;
use backup_core::snapshot::{SnapshotEntry, SnapshotFilter};
use backup_core::target::RecoveryPoint;

use chrono::{DateTime, Utc};

use backup_sources::capture::{CaptureKind, Position};
use backup_sources::drill::{CanaryAt, CanaryMark};

use crate::error::{Error, Result};

/// The point a drill restores.
#[derive(Debug, Clone)]
pub struct ChosenPoint {
    /// The snapshot to restore (for a point-in-time restore, the base
    /// backup the log is replayed on).
    pub snapshot: SnapshotEntry,
    /// The time the restored copy will represent; the drill's RPO is its
    /// age.
    pub time: DateTime<Utc>,
    /// The restore's `--at`, for a point inside a restorable window
    /// (`None`: the snapshot as it is, or `point`).
    pub at: Option<DateTime<Utc>>,
    /// The restore's point in the source's own terms (a MongoDB canary's
    /// oplog timestamp), instead of `at`.
    pub point: Option<RecoveryPoint>,
    /// What a MongoDB restore to `at` or `point` replays after the
    /// snapshot, planned and checked by [`crate::pitr::plan`] (`None`
    /// for the snapshot as it is and for PostgreSQL, whose server
    /// fetches its WAL itself).
    pub replay: Option<CaptureReplay>,
    /// How it was chosen, recorded as the drill record's `point_kind`.
    pub kind: &'static str,
    /// The canary written to the source for this drill, which the restored
    /// copy must hold.
    pub canary: Option<Canary>,
}

impl ChosenPoint {
    /// `snapshot` restored to `at` (`None`: as it is), chosen as `kind`;
    /// no replay, no canary.
    fn new(snapshot: SnapshotEntry, at: Option<DateTime<Utc>>, kind: &'static str) -> Self {
        ChosenPoint {
            time: at.unwrap_or(snapshot.snapshot.time),
            snapshot,
            at,
            point: None,
            replay: None,
            kind,
            canary: None,
        }
    }
}

/// A row or document written to the source before a drill
/// ([`CanaryPoint`]).
#[derive(Debug, Clone)]
pub struct Canary {
    /// Its id (in `backup_drill_canary`, or `backup_drill.canary`).
    pub id: String,
    /// Seconds from writing it until the captured WAL or oplog held it:
    /// the RPO a disaster at that moment would have had.
    pub captured_after: f64,
    /// Where it was written and what finds it in the restored copy.
    pub mark: CanaryMark,
}

/// Chooses what a drill restores: [`LatestSnapshot`],
/// [`RandomPointInWindow`] or [`CanaryPoint`] ([`chooser`] picks one by
/// name).
#[async_trait]
pub trait PointChooser: Send + Sync {
    /// Picks the point among the snapshots `scope` selects.
    ///
    /// # Errors
    ///
    /// Nothing to restore; repository errors.
    async fn choose(&self, repo: &IndexedRepository, scope: &SnapshotFilter)
        -> Result<ChosenPoint>;
}

/// The newest snapshot of the job or source: what a restore after a
/// disaster would take.
#[derive(Debug, Clone, Copy, Default)]
pub struct LatestSnapshot;

#[async_trait]
impl PointChooser for LatestSnapshot {
    async fn choose(
        &self,
        repo: &IndexedRepository,
        scope: &SnapshotFilter,
    ) -> Result<ChosenPoint> {
        let entry = repo.find_snapshot("latest", scope).await?;
        Ok(ChosenPoint::new(entry, None, "latest-snapshot"))
    }
}

/// A random time inside a job's restorable window (`point = "random"`),
/// so that every drill tests another point of the window the job claims.
///
/// - A physical PostgreSQL job with captured WAL: between the end of its
///   newest base backup and the last captured WAL, leaving out the
///   window's last second (a capture's time is when it was stored, which
///   can be after the last commit it holds, and a time target needs a
///   commit after it). The base is restored and the server replays to it.
/// - A MongoDB job with a captured oplog: a whole second of its newest
///   window, from the base's consistent point to the last fully captured
///   second (a time target takes every entry of its second). The base is
///   restored and the captured oplog replayed to it.
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomPointInWindow;

#[async_trait]
impl PointChooser for RandomPointInWindow {
    async fn choose(
        &self,
        repo: &IndexedRepository,
        scope: &SnapshotFilter,
    ) -> Result<ChosenPoint> {
        // The kind of the newest snapshot `scope` selects.
        let (all, _) = repo.snapshots().await?;
        let newest = all
            .into_iter()
            .filter(|s| scope.matches(&s.snapshot))
            .max_by_key(|s| (s.snapshot.time, s.id))
            .map(|s| s.snapshot.source.kind);
        let stream = CaptureKind::ALL
            .into_iter()
            .find(|k| newest.as_deref() == Some(k.source_kind().name()));
        if let Some(kind) = stream {
            return stream_random_point(repo, scope, kind).await;
        }
        #[cfg(feature = "postgres")]
        {
            let window = physical_window(repo, scope).await?;
            if window.end - window.start < chrono::Duration::seconds(2) {
                return Err(Error::from(backup_core::Error::Config(format!(
                    "the restorable window spans {} to {}, under two seconds: let WAL capture run longer",
                    window.start.to_rfc3339(),
                    window.end.max(window.start).to_rfc3339()
                ))));
            }
            let at = random_time(window.start, window.end - chrono::Duration::seconds(1));
            let base = window.base_for(at).ok_or_else(|| {
                Error::from(backup_core::Error::not_found(format!(
                    "a base backup that ended before {}",
                    at.to_rfc3339()
                )))
            })?;
            Ok(ChosenPoint::new(base, Some(at), "random-point-in-window"))
        }
        #[cfg(not(feature = "postgres"))]
        Err(Error::usage(
            "drill point `random` needs a MongoDB job with a captured oplog (this build has no PostgreSQL support)",
        ))
    }
}

/// A random point, planned by [`crate::pitr::plan`], of the restorable
/// window reaching furthest of the captured stream of `kind` `scope`
/// selects: a whole second where positions count seconds (the oplog: a
/// time target takes its whole second), else a millisecond (Redis).
async fn stream_random_point(
    repo: &IndexedRepository,
    scope: &SnapshotFilter,
    kind: CaptureKind,
) -> Result<ChosenPoint> {
    let source = scope.source.as_deref();
    let windows: Vec<(DateTime<Utc>, DateTime<Utc>)> = crate::pitr::windows(repo, source)
        .await?
        .iter()
        .filter(|s| s.capture == kind.name())
        .flat_map(|s| &s.windows)
        .filter_map(|w| Some((w.from_time?, w.to_time?)))
        .collect();
    // The window reaching furthest among those long enough to pick a
    // point in: a base taken after the stored end of the stream (its
    // capture not yet stored, up to a slice behind) is a window of one
    // point, newer than the long one before it.
    let long_enough = |(from, to): &(DateTime<Utc>, DateTime<Utc>)| {
        !kind.timed_positions() || to.timestamp() > from.timestamp()
    };
    let window = windows
        .iter()
        .copied()
        .filter(long_enough)
        .max_by_key(|(_, to)| *to)
        .or_else(|| windows.iter().copied().max_by_key(|(_, to)| *to))
        .ok_or_else(|| {
            Error::usage(format!(
                "drill point `random` needs a restorable window, and {} has none: is the job's capture running (capture = \"continuous\"), and is there a base snapshot before it?",
                source.unwrap_or("this repository")
            ))
        })?;
    let at = if kind.timed_positions() {
        let (from, to) = (window.0.timestamp(), window.1.timestamp());
        // Seconds FROM..TO-1: the second of the window's end may be
        // captured only in part.
        let span = u64::try_from(to - 1 - from).map_err(|_| {
            Error::usage(format!(
                "the restorable window ({} to {}) is under a second long: let the capture run longer before a drill at a random point",
                window.0.to_rfc3339(),
                window.1.to_rfc3339()
            ))
        })?;
        let offset = i64::try_from(random_u64() % (span + 1)).unwrap_or(0);
        DateTime::from_timestamp(from + offset, 0).unwrap_or(window.0)
    } else {
        random_time(window.0, window.1)
    };
    let opts = backup_core::target::RestoreOptions {
        at: Some(at),
        ..Default::default()
    };
    let plan = crate::pitr::planned(repo, kind.source_kind().name(), source, &opts).await?;
    Ok(ChosenPoint {
        replay: plan.replay,
        ..ChosenPoint::new(plan.base, Some(at), "random-point-in-window")
    })
}

/// The canary drill (`point = "canary"`): writes to the source, waits
/// until the capture holds the write, and restores the newest base
/// replayed to just after it. The drill then requires the canary in the
/// copy, and its RPO is what it measured: the seconds from writing the
/// canary until it was restorable.
///
/// - A physical PostgreSQL job with captured WAL: a row of
///   `backup_drill_canary`, replayed to the server's time between its
///   commit and a commit after it.
/// - A MongoDB job with a captured oplog: a document of
///   `backup_drill.canary`, replayed to the oplog timestamp of its write
///   (the scratch copy restores `backup_drill` too).
/// - A Redis job with a captured stream: the key
///   `backup_drill:canary:ID` (expiring in a week) in the source URL's
///   database, replayed to the replication offset after its write.
#[derive(Debug, Clone)]
pub struct CanaryPoint {
    /// The source's URL, with credentials (the canary is written there).
    pub source_url: String,
    /// PostgreSQL: the database the canary goes to (`None`: the one the
    /// URL names, else `postgres`); a physical job backs up the whole
    /// cluster, and its URL often names no database.
    pub database: Option<String>,
    /// How long to wait for the capture to hold the canary.
    pub wait: std::time::Duration,
}

#[async_trait]
impl PointChooser for CanaryPoint {
    async fn choose(
        &self,
        repo: &IndexedRepository,
        scope: &SnapshotFilter,
    ) -> Result<ChosenPoint> {
        let id = format!(
            "drill-{}-{:016x}",
            Utc::now().format("%Y%m%dT%H%M%SZ"),
            random_u64()
        );
        let kind = backup_sources::Kind::of(&self.source_url)?;
        let support = backup_sources::drill::support(kind)?;
        let mark = support.canary(&self.source_url, self.database.as_deref(), &id)?;
        let written = std::time::Instant::now();
        let at = support.write_canary(&mark).await.map_err(|e| {
            let advice = mark.advice.as_deref().map(|a| format!(", {a}"));
            Error::from(e).context(format!(
                "the drill's canary could not be written ({mark}{})",
                advice.unwrap_or_default()
            ))
        })?;
        let mut chosen = match at {
            #[cfg(feature = "postgres")]
            CanaryAt::Time(at) => self.wal_canary(repo, scope, written, at).await?,
            #[cfg(not(feature = "postgres"))]
            CanaryAt::Time(_) => return Err(Error::usage(
                "drill point `canary` at a time needs PostgreSQL support, which this build lacks",
            )),
            CanaryAt::Position(p) => {
                let point = match p {
                    Position::Oplog { seconds, increment } => {
                        RecoveryPoint::OplogTs { seconds, increment }
                    }
                    Position::Offset(o) => RecoveryPoint::ReplOffset(o),
                    other => {
                        return Err(Error::usage(format!(
                            "a canary at {other} cannot be replayed to"
                        )))
                    }
                };
                let time = p.time().unwrap_or_else(Utc::now);
                self.stream_canary(repo, scope, written, point, time, mark.kind.name())
                    .await?
            }
        };
        chosen.canary = Some(Canary {
            id,
            captured_after: written.elapsed().as_secs_f64(),
            mark,
        });
        Ok(chosen)
    }
}

impl CanaryPoint {
    /// PostgreSQL: the newest base before the server's time `at`, just
    /// after the canary row was written (at `written`), replayed to it
    /// once the captured WAL holds it.
    #[cfg(feature = "postgres")]
    async fn wal_canary(
        &self,
        repo: &IndexedRepository,
        scope: &SnapshotFilter,
        written: std::time::Instant,
        at: DateTime<Utc>,
    ) -> Result<ChosenPoint> {
        // WAL stored half a second after the closing commit returned holds
        // it (and the canary before it).
        let needed = Utc::now() + chrono::Duration::milliseconds(500);
        loop {
            let window = physical_window(repo, scope).await?;
            if let Some(base) = window.base_for(at).filter(|_| window.end >= needed) {
                return Ok(ChosenPoint::new(base, Some(at), "canary"));
            }
            if written.elapsed() > self.wait {
                return Err(Error::usage(format!(
                    "the drill's canary, written at {}, was not in the captured WAL after {} (the restorable window ends at {}): is the job's WAL capture running?",
                    at.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
                    crate::report::human_seconds(self.wait.as_secs_f64()),
                    window.end.to_rfc3339()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }

    /// Waits until the captured stream of `kind` `scope` selects can be
    /// restored to `point` (the canary's write at `written`), then restores
    /// the newest base before it replayed to it.
    async fn stream_canary(
        &self,
        repo: &IndexedRepository,
        scope: &SnapshotFilter,
        written: std::time::Instant,
        point: RecoveryPoint,
        time: DateTime<Utc>,
        kind: &str,
    ) -> Result<ChosenPoint> {
        let opts = backup_core::target::RestoreOptions {
            point: Some(point),
            ..Default::default()
        };
        let plan = loop {
            // The plan succeeds once the stored stream reaches the write.
            match crate::pitr::planned(repo, kind, scope.source.as_deref(), &opts).await {
                Ok(plan) => break plan,
                Err(e) if written.elapsed() > self.wait => {
                    return Err(Error::usage(format!(
                        "the drill's canary, written at {}, was not restorable after {}: is the job's capture running (capture = \"continuous\")? ({})",
                        backup_sources::capture::describe_target(&opts),
                        crate::report::human_seconds(self.wait.as_secs_f64()),
                        backup_core::error::report(&e)
                    )));
                }
                Err(_) => tokio::time::sleep(std::time::Duration::from_millis(250)).await,
            }
        };
        Ok(ChosenPoint {
            time,
            point: opts.point,
            replay: plan.replay,
            ..ChosenPoint::new(plan.base, None, "canary")
        })
    }
}

/// A PostgreSQL cluster's newest restorable window, as its capture
/// driver lists it: from `start` (the end of the oldest base backup in it
/// that `scope` selects) to `end` (when its last WAL was captured), with
/// those `bases` and the time each ended.
#[cfg(feature = "postgres")]
struct PhysicalWindow {
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    bases: Vec<(SnapshotEntry, DateTime<Utc>)>,
}

#[cfg(feature = "postgres")]
impl PhysicalWindow {
    /// The base backup a restore to `at` starts from: the newest that
    /// ended at or before it.
    fn base_for(&self, at: DateTime<Utc>) -> Option<SnapshotEntry> {
        self.bases
            .iter()
            .filter(|(_, t)| *t <= at)
            .max_by_key(|(e, t)| (*t, e.id))
            .map(|(e, _)| e.clone())
    }
}

/// The newest restorable window of the physical base backups `scope`
/// selects, as the repository holds it now (`crate::pitr::windows`, the
/// same listing as `backup pitr`).
#[cfg(feature = "postgres")]
async fn physical_window(
    repo: &IndexedRepository,
    scope: &SnapshotFilter,
) -> Result<PhysicalWindow> {
    let (all, _) = repo.snapshots().await?;
    let listed = crate::pitr::windows(repo, scope.source.as_deref()).await?;
    let mut best: Option<PhysicalWindow> = None;
    let mut why = None;
    for s in listed.iter().filter(|s| s.kind == "postgres") {
        if let Some(note) = &s.note {
            why.get_or_insert_with(|| note.clone());
        }
        for w in &s.windows {
            let Some(end) = w.to_time else { continue };
            let bases: Vec<(SnapshotEntry, DateTime<Utc>)> = s
                .bases
                .iter()
                .filter(|b| w.bases.contains(&b.id))
                .filter_map(|b| {
                    let e = all
                        .iter()
                        .find(|e| e.id == b.id && scope.matches(&e.snapshot))?;
                    Some((e.clone(), b.point_time.unwrap_or(b.taken)))
                })
                .collect();
            let Some(start) = bases.iter().map(|(_, t)| *t).min() else {
                continue;
            };
            if best.as_ref().is_none_or(|b| end > b.end) {
                best = Some(PhysicalWindow { start, end, bases });
            }
        }
    }
    // Not usage errors: the drill ran, and is recorded as failed.
    best.ok_or_else(|| {
        Error::from(match why {
            // A cluster with base backups, but nothing restorable past
            // them: the listing says what is missing.
            Some(why) => backup_core::Error::Config(format!("no restorable window: {why}")),
            None => backup_core::Error::not_found(
                "a physical base backup (take one with --mode physical)",
            ),
        })
    })
}

/// A random time from `from` to `to` (`from` when `to` is before it), to
/// the millisecond.
fn random_time(from: DateTime<Utc>, to: DateTime<Utc>) -> DateTime<Utc> {
    let span = (to - from).num_milliseconds().max(0);
    let offset = i64::try_from(random_u64() % (span.unsigned_abs() + 1)).unwrap_or(0);
    from + chrono::Duration::milliseconds(offset)
}

/// A random number from the standard library's randomly seeded hasher.
fn random_u64() -> u64 {
    use std::hash::BuildHasher;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
    std::collections::hash_map::RandomState::new().hash_one(now.map_or(0, |d| d.as_nanos()))
}

/// What a drill request's `point` (`[jobs.NAME.drill] point`, or
/// `backup drill --point`) asks for.
///
/// # Errors
///
/// An unknown name; `canary` without the source's URL.
pub fn chooser(req: &super::DrillRequest) -> Result<Box<dyn PointChooser>> {
    match req.point.as_str() {
        "latest" => Ok(Box::new(LatestSnapshot)),
        "canary" => match &req.source_url {
            Some(url) => Ok(Box::new(CanaryPoint {
                source_url: url.clone(),
                database: req.canary_database.clone(),
                wait: std::time::Duration::from_secs(120),
            })),
            None => Err(Error::usage(
                "drill point `canary` writes a row or document to the source: give the source's URL",
            )),
        },
        "random" => Ok(Box::new(RandomPointInWindow)),
        other => Err(Error::usage(format!(
            "drill point `{other}`: use `latest` (the newest snapshot), `random` (a random time inside the restorable window of a PostgreSQL job with captured WAL or a MongoDB job with a captured oplog) or `canary` (a row or document written to the source, required in a copy replayed to just after it)"
        ))),
    }
}
