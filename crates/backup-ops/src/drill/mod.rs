//! Restore drills: restore a job's backup into a scratch copy, make it
//! usable, check it, measure how long that took (RTO) and how old the
//! restored point was (RPO), remove the copy, and record the drill in the
//! repository.
//!
//! # Flow
//!
//! 1. The job's journal (`journal`) is claimed: a live drill of the job
//!    refuses this one; what a killed drill left behind is removed first.
//! 2. Under a shared lock, a [`PointChooser`] picks what to restore
//!    ([`chooser`]: `latest`, `random` or `canary`).
//! 3. The scratch copy is planned per kind (`scratch`): a new directory
//!    (files), a new data directory started as a server on a free port
//!    (PostgreSQL physical), a new database `<db>_drill_<time>`
//!    (PostgreSQL logical), renamed databases (MongoDB), empty databases of
//!    a scratch server or a throwaway `redis-server` (Redis). Its
//!    resources go into the journal before anything is written.
//! 4. The restore runs through the same [`Target`] as `backup restore`,
//!    with a progress reporter that times its phases; a physical copy is
//!    then started (the `recovery` phase). The RTO is the time from the
//!    drill's start (after leftovers were removed) until the copy was
//!    usable.
//! 5. Checks (`checks`): the kind's built-in comparison with the
//!    snapshot, then the configured ones.
//! 6. The copy is removed (unless kept), also after a failure, and the
//!    record is stored under `drills/`.
//!
//! [`Target`]: backup_core::target::Target

mod checks;
mod journal;
mod point;
#[cfg(feature = "postgres")]
mod replay;
mod scratch;

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use backup_core::drill::{DrillCheck, DrillPhase, DrillRecord, DRILL_VERSION};
use backup_core::lock::LockMode;
use backup_core::progress::Progress;
use backup_core::reader::SnapshotReader;
use backup_core::repo::Repository;
use backup_core::snapshot::SnapshotFilter;
use backup_core::target::{RestoreOptions, RestoreReport};
use backup_core::Id;
use backup_sources::drill::StartedServer;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

pub use point::{
    chooser, Canary, CanaryPoint, ChosenPoint, LatestSnapshot, PointChooser, RandomPointInWindow,
};
#[cfg(feature = "postgres")]
pub use replay::{replay_command, sibling_replay_command};

use self::checks::CheckContext;
use self::journal::{Journal, Resource};
use self::scratch::{remove_leftover, Scratch};
use crate::config::{CheckConfig, Job};
use crate::error::{exit, Error, Result};
use crate::feedback::{json, Feedback};

/// What to drill and how.
#[derive(Debug, Clone)]
pub struct DrillRequest {
    /// The job drilled (names the journal and the record; narrows the
    /// snapshots to the job's).
    pub job: Option<String>,
    /// Which snapshots may be restored (the job's, or a source's).
    pub scope: SnapshotFilter,
    /// The scratch location, credentials included.
    pub target: Option<String>,
    /// The source's URL with credentials: a physical drill's checks
    /// connect to the started copy with its role and password.
    pub source_url: Option<String>,
    /// Run the kind's built-in checks.
    pub builtin_checks: bool,
    /// Further checks.
    pub checks: Vec<CheckConfig>,
    /// The RTO limit.
    pub max_rto: Option<Duration>,
    /// Leave the scratch copy in place.
    pub keep: bool,
    /// Where the drill journal lives ([`default_state_dir`]).
    pub state_dir: PathBuf,
    /// How long to wait for a conflicting lock.
    pub lock_wait: Duration,
    /// What is restored: `latest`, `random` or `canary` ([`chooser`]).
    pub point: String,
    /// For a point-in-time drill: the command the restored server runs to
    /// fetch WAL (`backup --repo R`, without `wal fetch`); `None` uses the
    /// running program, which must then be `backup`.
    pub replay_command: Option<String>,
    /// The database a PostgreSQL canary is written to (`point =
    /// "canary"`); `None`: the one the source URL names, else `postgres`.
    pub canary_database: Option<String>,
}

impl DrillRequest {
    /// The drill of a job, as its `[jobs.NAME.drill]` says (a job without
    /// one gets the defaults: built-in checks, no limit, and for Redis a
    /// throwaway server).
    ///
    /// # Errors
    ///
    /// Secrets of the source or target that cannot be read.
    pub fn for_job(job: &Job, lock_wait: Duration) -> Result<Self> {
        Ok(DrillRequest {
            target: job.drill_target_url()?,
            source_url: Some(job.source_spec()?.url().to_owned()),
            lock_wait,
            ..Self::as_configured(job)
        })
    }

    /// The drill of a job as [`DrillRequest::for_job`] makes it, but
    /// without reading its secrets: the scratch location and the source's
    /// URL as configured (no passwords), no lock wait.
    fn as_configured(job: &Job) -> Self {
        let d = job.drill.as_ref();
        DrillRequest {
            job: Some(job.name.clone()),
            scope: SnapshotFilter {
                job: Some(job.name.clone()),
                ..SnapshotFilter::default()
            },
            target: d.and_then(|d| d.target.clone()),
            source_url: Some(job.source.clone()),
            builtin_checks: d.is_none_or(|d| d.builtin_checks),
            checks: d.map(|d| d.checks.clone()).unwrap_or_default(),
            max_rto: d.and_then(|d| d.max_rto),
            keep: d.is_some_and(|d| d.keep),
            state_dir: default_state_dir(),
            lock_wait: Duration::ZERO,
            point: d.map_or_else(|| "latest".to_owned(), |d| d.point.clone()),
            replay_command: None,
            canary_database: d.and_then(|d| d.canary_database.clone()),
        }
    }
}

/// Where drill journals live: `BACKUP_STATE_DIR`, else
/// `$XDG_STATE_HOME/backup`, else `~/.local/state/backup`.
pub fn default_state_dir() -> PathBuf {
    let var = |k: &str| {
        std::env::var_os(k)
            .filter(|d| !d.is_empty())
            .map(PathBuf::from)
    };
    var("BACKUP_STATE_DIR")
        .or_else(|| var("XDG_STATE_HOME").map(|d| d.join("backup")))
        .or_else(|| var("HOME").map(|h| h.join(".local/state/backup")))
        .unwrap_or_else(|| std::env::temp_dir().join("backup-state"))
}

/// What a drill did.
#[derive(Debug, Clone)]
pub struct DrillOutcome {
    /// The record stored in the repository (`None` when storing failed;
    /// see `warnings`).
    pub id: Option<Id>,
    /// The record.
    pub record: DrillRecord,
    /// The exit code a front-end should end with: 0 passed, 1 failed
    /// (restore, start, check or RTO), 3 damage found in the repository.
    pub exit_code: u8,
    /// Problems that did not fail the drill (a leftover that could not be
    /// removed, the record that could not be stored).
    pub warnings: Vec<String>,
}

/// Times the phases of a restore from what the target reports.
struct PhaseClock {
    inner: Arc<dyn Progress>,
    marks: Mutex<Vec<(String, Instant)>>,
    saw_bytes: AtomicBool,
}

impl PhaseClock {
    fn new(inner: Arc<dyn Progress>) -> Arc<Self> {
        Arc::new(PhaseClock {
            inner,
            marks: Mutex::new(Vec::new()),
            saw_bytes: AtomicBool::new(false),
        })
    }

    fn marks(&self) -> MutexGuard<'_, Vec<(String, Instant)>> {
        self.marks.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn mark(&self, name: &str) {
        let mut m = self.marks();
        if m.last().is_none_or(|(last, _)| last != name) {
            m.push((name.to_owned(), Instant::now()));
        }
    }

    /// The phases from the first mark until `end`.
    fn phases(&self, end: Instant) -> Vec<DrillPhase> {
        let m = self.marks();
        let mut out: Vec<DrillPhase> = Vec::new();
        for (i, (name, at)) in m.iter().enumerate() {
            let until = m.get(i + 1).map_or(end, |n| n.1);
            let seconds = until.saturating_duration_since(*at).as_secs_f64();
            match out.iter_mut().find(|p| &p.name == name) {
                Some(p) => p.seconds += seconds,
                None => out.push(DrillPhase {
                    name: name.clone(),
                    seconds,
                }),
            }
        }
        out
    }
}

impl Progress for PhaseClock {
    fn set_total(&self, bytes: u64) {
        self.inner.set_total(bytes);
    }

    fn add_bytes(&self, n: u64) {
        // The first bytes end fetching when the target names no phase.
        if !self.saw_bytes.swap(true, Ordering::Relaxed) && self.marks().len() == 1 {
            self.mark("load");
        }
        self.inner.add_bytes(n);
    }

    fn add_item(&self) {
        self.inner.add_item();
    }

    fn set_phase(&self, phase: &str) {
        // The drill's names for the phases targets report.
        self.mark(match phase {
            "data" | "documents" => "load",
            "check" | "checking" => "verify",
            other => other,
        });
        self.inner.set_phase(phase);
    }

    fn finish(&self) {
        self.inner.finish();
    }
}

/// What the locked part of a drill produced.
#[derive(Default)]
struct Ran {
    phases: Vec<DrillPhase>,
    rto: Option<Duration>,
    bytes: u64,
    items: u64,
    checks: Vec<DrillCheck>,
    target: String,
    error: Option<(String, u8)>,
    kept: bool,
}

impl Ran {
    /// A drill that failed with `error` (and its exit code) before its
    /// scratch copy was begun: nothing measured.
    fn failed_early(req: &DrillRequest, error: (String, u8)) -> Self {
        Ran {
            target: req
                .target
                .as_deref()
                .map(backup_core::redact::redact_url)
                .unwrap_or_default(),
            error: Some(error),
            ..Ran::default()
        }
    }
}

/// Runs a drill of `req` on `repo`; `chooser` picks the point. The
/// drill's record is stored in the repository whether it passed or not.
/// `cancel` (the daemon's shutdown) stops it; the scratch copy is removed
/// then too.
///
/// # Errors
///
/// A drill of the same job running already, nothing to restore, a
/// scratch location that is missing, taken or unusable, the repository or
/// its lock; what fails once the scratch copy was begun (the restore, the
/// start, a check, the RTO) is in the outcome's record instead.
pub async fn drill(
    repo: &Repository,
    req: &DrillRequest,
    chooser: &dyn PointChooser,
    feedback: &dyn Feedback,
    cancel: Option<&CancellationToken>,
) -> Result<DrillOutcome> {
    let name = req
        .job
        .clone()
        .or_else(|| req.scope.source.clone())
        .unwrap_or_else(|| "drill".to_owned());
    let started = Utc::now();
    let (mut journal, leftovers) = Journal::claim(&req.state_dir, &name)?;
    let mut warnings = Vec::new();
    let mut leftovers_removed = Vec::new();
    for r in leftovers {
        match remove_leftover(&r, req.target.as_deref()).await {
            Ok(()) => {
                tracing::info!(job = %name, leftover = %r.describe(), "Removed what a killed drill left behind.");
                leftovers_removed.push(r.describe());
                journal.remove(&r)?;
            }
            Err(e) => warnings.push(format!(
                "could not remove {}, left by an earlier drill: {}",
                r.describe(),
                backup_core::error::report(&e)
            )),
        }
    }
    let t0 = Instant::now();
    let work = async {
        let irepo = repo.clone().load_index().await?;
        let point = match chooser.choose(&irepo, &req.scope).await {
            Ok(p) => p,
            Err(e) => return Ok((None, Err(e))),
        };
        feedback.detail("snapshot", json(point.snapshot.id));
        // The job's backup may have finished since the index was read.
        let irepo = Box::pin(irepo.covering(&point.snapshot.snapshot.tree)).await?;
        let ran = run_locked(
            req,
            &name,
            started,
            t0,
            &irepo,
            &point,
            &mut journal,
            feedback,
            cancel,
        )
        .await;
        Ok::<_, Error>((Some(point), ran))
    };
    let locked = repo
        .with_lock(LockMode::Shared, "drill", req.lock_wait, Box::pin(work))
        .await;
    // Every attempt is recorded: one that failed before its scratch copy
    // was begun (no snapshot or window, a canary that could not be
    // written, a scratch location in use, the lock) too.
    let (point, ran) = match locked {
        Ok((point, Ok(ran))) => (point, ran),
        Ok((point, Err(e))) => (point, Ran::failed_early(req, failure(&e))),
        Err(e) => (None, Ran::failed_early(req, failure(&e))),
    };
    let error_code = ran.error.as_ref().map(|(_, code)| *code);
    let record = drill_record(req, started, point.as_ref(), ran, leftovers_removed);
    let exit_code = error_code.unwrap_or(if record.ok { exit::OK } else { exit::FAILED });
    let remaining = journal.resources();
    if remaining.is_empty() {
        journal.release();
    } else {
        warnings.push(format!(
            "left for the next drill to remove: {}",
            remaining
                .iter()
                .map(Resource::describe)
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    let id = backup_core::drill::save(repo, &record)
        .await
        .inspect_err(|e| warnings.push(format!("could not store the drill record: {e}")))
        .ok();
    feedback.detail("drill", json(id));
    feedback.detail("ok", json(record.ok));
    feedback.detail("rto_seconds", json(record.rto_seconds));
    feedback.detail("rpo_seconds", json(record.rpo_seconds));
    feedback.detail("target", json(&record.target));
    Ok(DrillOutcome {
        id,
        record,
        exit_code,
        warnings,
    })
}

/// Records a drill of `job` that failed before [`drill`] could run (its
/// settings or secrets could not be read): every attempt is a record.
/// Returns the outcome of the failed drill, with the stored record's id.
///
/// # Errors
///
/// Storage errors.
pub async fn record_failure(repo: &Repository, job: &Job, error: &str) -> Result<DrillOutcome> {
    let req = DrillRequest::as_configured(job);
    let ran = Ran::failed_early(&req, (error.to_owned(), exit::FAILED));
    let record = drill_record(&req, Utc::now(), None, ran, Vec::new());
    Ok(DrillOutcome {
        id: Some(backup_core::drill::save(repo, &record).await?),
        record,
        exit_code: exit::FAILED,
        warnings: Vec::new(),
    })
}

/// The record of a drill of `req` that started at `started`: the point it
/// chose (`None`: it failed before it chose one), what the locked part
/// did (`ran`) and the leftovers of earlier drills it removed.
fn drill_record(
    req: &DrillRequest,
    started: DateTime<Utc>,
    point: Option<&ChosenPoint>,
    ran: Ran,
    leftovers_removed: Vec<String>,
) -> DrillRecord {
    let rto_exceeded = ran.rto.zip(req.max_rto).is_some_and(|(rto, max)| rto > max);
    let checks_ok = ran.checks.iter().all(|c| c.ok);
    // Before a snapshot was chosen: the job's (or `--source`'s) source,
    // credentials removed.
    let source = point.map_or_else(
        || {
            let url = req
                .source_url
                .as_deref()
                .or(req.scope.source.as_deref())
                .unwrap_or_default();
            let kind = backup_sources::Kind::of(url).map(|k| k.name().to_owned());
            let url = backup_core::redact::redact_url(url);
            backup_core::snapshot::SourceDescriptor {
                kind: kind.unwrap_or_default(),
                url,
            }
        },
        |p| p.snapshot.snapshot.source.clone(),
    );
    DrillRecord {
        version: DRILL_VERSION,
        job: req.job.clone(),
        source,
        snapshot: point.map(|p| p.snapshot.id),
        // Not chosen: the kind `--point` names.
        point_kind: point
            .map_or(
                match req.point.as_str() {
                    "random" => "random-point-in-window",
                    "canary" => "canary",
                    _ => "latest-snapshot",
                },
                |p| p.kind,
            )
            .to_owned(),
        point: point.map(|p| p.time),
        started,
        finished: Utc::now(),
        host: backup_core::util::hostname(),
        user: backup_core::util::username(),
        target: ran.target,
        ok: ran.error.is_none() && ran.rto.is_some() && checks_ok && !rto_exceeded,
        rto_seconds: ran.rto.map(|d| d.as_secs_f64()),
        rpo_seconds: point.map(|p| {
            p.canary.as_ref().map_or_else(
                || (started - p.time).num_milliseconds().max(0) as f64 / 1000.0,
                |c| c.captured_after,
            )
        }),
        max_rto_seconds: req.max_rto.map(|d| d.as_secs_f64()),
        rto_exceeded,
        phases: ran.phases,
        bytes: ran.bytes,
        items: ran.items,
        checks: ran.checks,
        error: ran.error.map(|(m, _)| m),
        kept: ran.kept,
        leftovers_removed,
        program: format!("backup {}", env!("CARGO_PKG_VERSION")),
    }
}

/// Why a drill stopped when the daemon's shutdown cancelled it.
const ABANDONED: &str = "the drill was abandoned: the daemon is shutting down";

/// What `work` produced, or `None` when `cancel` fired first.
async fn unless_cancelled<T>(
    cancel: Option<&CancellationToken>,
    work: impl std::future::Future<Output = T>,
) -> Option<T> {
    match cancel {
        Some(token) => token.run_until_cancelled(work).await,
        None => Some(work.await),
    }
}

/// The error of a failed step, for the record, with its exit code.
fn failure(e: &Error) -> (String, u8) {
    (
        backup_core::error::report(e),
        e.exit_code().max(exit::FAILED),
    )
}

/// Plans the scratch copy, restores, starts and checks it unless `cancel`
/// stops that, and removes it (or keeps it, when asked and nothing
/// failed). A scratch location that is missing, taken or unusable is an
/// error (the drill failed before its copy was begun; the caller records
/// it); what fails after the copy was begun is in the result.
#[allow(clippy::too_many_arguments)]
async fn run_locked(
    req: &DrillRequest,
    name: &str,
    started: DateTime<Utc>,
    t0: Instant,
    repo: &backup_core::repo::IndexedRepository,
    point: &ChosenPoint,
    journal: &mut Journal,
    feedback: &dyn Feedback,
    cancel: Option<&CancellationToken>,
) -> Result<Ran> {
    let (mut scratch, mut opts) = Scratch::plan(
        &point.snapshot.snapshot,
        req.target.as_deref(),
        req.source_url.as_deref(),
        name,
        &started.format("%Y%m%dt%H%M%S").to_string(),
        point.canary.is_some(),
    )
    .await?;
    // The restore reaches the point: its time, and how WAL or the oplog
    // is replayed up to it.
    opts.at = point.at;
    opts.point.clone_from(&point.point);
    opts.replay.clone_from(&point.replay);
    if point.at.is_some() && point.replay.is_none() {
        opts.replay_command.clone_from(&req.replay_command);
    }
    let mut ran = Ran {
        target: scratch.describe(),
        ..Ran::default()
    };
    // The copy's place must be free; its resources go into the journal
    // before it is created. A step that fails undoes what was done.
    if let Err(e) = scratch.check_free().await {
        if let Scratch::Databases {
            throwaway: Some(_), ..
        } = scratch
        {
            let _ = scratch.remove().await;
        }
        return Err(e);
    }
    let resources = scratch.resources();
    for r in &resources {
        if let Err(e) = journal.add(r.clone()) {
            let _ = scratch.remove().await;
            return Err(e);
        }
    }
    if let Err(e) = scratch.create() {
        let _ = scratch.remove().await;
        for r in &resources {
            let _ = journal.remove(r);
        }
        return Err(e);
    }
    tracing::info!(job = %name, snapshot = %point.snapshot.id.short(), target = %ran.target, "Drill started.");

    let reader = SnapshotReader::new(repo.clone(), point.snapshot.clone());
    let clock = PhaseClock::new(feedback.progress("drill", "files"));
    let restore_started = Instant::now();
    let prepare = restore_started.saturating_duration_since(t0).as_secs_f64();
    let body = restore_copy(req, point, &scratch, &opts, &reader, &clock, prepare);
    let result = unless_cancelled(cancel, body)
        .await
        .unwrap_or_else(|| Err(Error::usage(ABANDONED)));
    match result {
        Ok(restored) => {
            let checking = restored.files.as_ref().map_or(0.0, |c| c.seconds);
            ran.rto = Some(
                t0.elapsed()
                    .saturating_sub(Duration::from_secs_f64(checking)),
            );
            ran.phases = restored.phases;
            ran.bytes = restored.report.stats.bytes;
            ran.items = restored.report.stats.files;
            let cx = CheckContext {
                reader: &reader,
                port: restored.server.as_ref().map(|(_, p)| *p),
                snapshot: point.snapshot.id.to_hex(),
                files: restored.files,
                replayed: point.replay.is_some(),
            };
            // The built-in checks, the canary written before the drill
            // (which must be in the copy), the configured checks.
            let checks = async {
                let mut out = Vec::new();
                if req.builtin_checks {
                    out.extend(checks::builtin(&scratch, &cx).await);
                }
                if let Some(c) = &point.canary {
                    out.push(checks::canary(&c.mark, &scratch, &cx).await);
                }
                for c in &req.checks {
                    out.push(checks::configured(c, &scratch, &cx).await);
                }
                out
            };
            ran.checks = unless_cancelled(cancel, checks).await.unwrap_or_else(|| {
                ran.error = Some((ABANDONED.to_owned(), exit::FAILED));
                Vec::new()
            });
            if let Some((s, _)) = restored.server {
                s.stop().await;
            }
        }
        Err(e) => {
            ran.phases = clock.phases(Instant::now());
            ran.error = Some(failure(&e));
        }
    }
    // The resources leave the journal unless removing them failed.
    if req.keep && ran.error.is_none() {
        ran.kept = true;
        tracing::info!(job = %name, target = %ran.target, "The drill's scratch copy was kept.");
    } else if let Err(e) = scratch.remove().await {
        tracing::error!(job = %name, error = %backup_core::error::report(&e), "Could not remove the drill's scratch copy; the next drill will try again.");
        return Ok(ran);
    }
    for r in &resources {
        let _ = journal.remove(r);
    }
    Ok(ran)
}

/// What restoring the scratch copy produced: the restore's report, the
/// phases (`prepare`, the restore's, `recovery`), and for a physical copy
/// its started server with its port and the comparison of its files made
/// before it started (whose time is left out of the RTO).
struct Restored {
    report: RestoreReport,
    phases: Vec<DrillPhase>,
    server: Option<(StartedServer, u16)>,
    files: Option<DrillCheck>,
}

/// Restores `point` into the scratch copy, timing its phases after
/// `prepare` seconds of preparation, and starts a physical copy's server
/// on a free port (the `recovery` phase).
async fn restore_copy(
    req: &DrillRequest,
    point: &ChosenPoint,
    scratch: &Scratch,
    opts: &RestoreOptions,
    reader: &SnapshotReader,
    clock: &Arc<PhaseClock>,
    prepare: f64,
) -> Result<Restored> {
    let target = scratch.target();
    target.check_options(opts)?;
    target.check(reader, opts).await?;
    clock.mark("fetch");
    let report = target.restore(reader, opts, clock.clone()).await;
    clock.finish();
    let report = report?;
    let mut phases = vec![DrillPhase {
        name: "prepare".to_owned(),
        seconds: prepare,
    }];
    phases.extend(clock.phases(Instant::now()));
    let mut files = None;
    let mut server = None;
    if let Scratch::Physical { dir, data, .. } = scratch {
        // The file comparison runs before the server starts, which
        // changes files.
        if req.builtin_checks && point.at.is_none() {
            let name = "built-in: files against the backup manifest";
            let diffs = data.verify_files(reader);
            files = Some(checks::compare(name, "every file matches", diffs).await);
        }
        let port = backup_sources::drill::free_port()?;
        let at = Instant::now();
        // The socket must fit in a Unix socket path (107 bytes).
        let work = (dir.as_os_str().len() < 60).then_some(dir.as_path());
        server = Some((data.start(port, work).await?, port));
        phases.push(DrillPhase {
            name: "recovery".to_owned(),
            seconds: at.elapsed().as_secs_f64(),
        });
    }
    Ok(Restored {
        report,
        phases,
        server,
        files,
    })
}

/// The drill records of the repository (of one job when given), oldest
/// first.
///
/// # Errors
///
/// Storage errors while listing (unreadable records are skipped).
pub async fn history(repo: &Repository, job: Option<&str>) -> Result<Vec<(Id, DrillRecord)>> {
    let (all, bad) = backup_core::drill::list(repo).await?;
    for (name, e) in bad {
        tracing::warn!(record = %name, error = %e, "Skipping an unreadable drill record.");
    }
    Ok(all
        .into_iter()
        .filter(|(_, r)| job.is_none_or(|j| r.job.as_deref() == Some(j)))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use backup_core::progress::NoProgress;

    #[test]
    fn phases_follow_the_target() {
        let clock = PhaseClock::new(Arc::new(NoProgress));
        clock.mark("fetch");
        std::thread::sleep(Duration::from_millis(5));
        clock.set_phase("schema");
        clock.set_phase("data");
        clock.add_bytes(10);
        std::thread::sleep(Duration::from_millis(5));
        clock.set_phase("indexes");
        clock.set_phase("checking");
        let names: Vec<String> = clock
            .phases(Instant::now())
            .into_iter()
            .map(|p| p.name)
            .collect();
        assert_eq!(names, ["fetch", "schema", "load", "indexes", "verify"]);

        // A files restore names no phase: fetching ends with the first bytes.
        let clock = PhaseClock::new(Arc::new(NoProgress));
        clock.mark("fetch");
        clock.add_bytes(1);
        clock.add_bytes(1);
        let p = clock.phases(Instant::now());
        assert_eq!(p.len(), 2);
        assert_eq!(p[1].name, "load");
    }
}
