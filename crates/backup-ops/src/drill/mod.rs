//! Restore drills: restore a job's backup into a scratch copy, make it
//! usable, check it, measure how long that took (RTO) and how old the
//! restored point was (RPO), remove the copy, and record the drill in the
//! repository.
//!
//! # Flow
//!
//! 1. The job's journal (`journal`) is claimed: a live drill of the job
//!    refuses this one; what a killed drill left behind is removed first.
//! 2. Under a shared lock, a [`PointChooser`] picks what to restore (the
//!    newest snapshot; point-in-time jobs will pick a random point of
//!    their restorable window).
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
use std::sync::{Arc, Mutex, PoisonError};
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

    /// The source a record names when the drill failed before it chose
    /// a snapshot: the job's (or `--source`'s), credentials removed.
    fn source_descriptor(&self) -> backup_core::snapshot::SourceDescriptor {
        let url = self
            .source_url
            .clone()
            .or_else(|| self.scope.source.clone())
            .unwrap_or_default();
        backup_core::snapshot::SourceDescriptor {
            kind: backup_sources::Kind::of(&url)
                .map(|k| k.name().to_owned())
                .unwrap_or_default(),
            url: backup_core::redact::redact_url(&url),
        }
    }

    fn name(&self) -> String {
        self.job
            .clone()
            .or_else(|| self.scope.source.clone())
            .unwrap_or_else(|| "drill".to_owned())
    }
}

/// Where drill journals live: `BACKUP_STATE_DIR`, else
/// `$XDG_STATE_HOME/backup`, else `~/.local/state/backup`.
pub fn default_state_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("BACKUP_STATE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(d);
    }
    if let Some(d) = std::env::var_os("XDG_STATE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("backup");
    }
    match std::env::var_os("HOME").filter(|d| !d.is_empty()) {
        Some(h) => PathBuf::from(h).join(".local").join("state").join("backup"),
        None => std::env::temp_dir().join("backup-state"),
    }
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

    fn mark(&self, name: &str) {
        let mut m = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
        if m.last().is_none_or(|(last, _)| last != name) {
            m.push((name.to_owned(), Instant::now()));
        }
    }

    /// The phases from the first mark until `end`.
    fn phases(&self, end: Instant) -> Vec<DrillPhase> {
        let m = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
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

/// The drill's name for a phase a target reports.
fn canonical_phase(p: &str) -> &str {
    match p {
        "data" | "documents" => "load",
        "check" | "checking" => "verify",
        other => other,
    }
}

impl Progress for PhaseClock {
    fn set_total(&self, bytes: u64) {
        self.inner.set_total(bytes);
    }

    fn add_bytes(&self, n: u64) {
        if !self.saw_bytes.swap(true, Ordering::Relaxed) {
            let m = self.marks.lock().unwrap_or_else(PoisonError::into_inner);
            let still_fetching = m.len() == 1;
            drop(m);
            if still_fetching {
                self.mark("load");
            }
        }
        self.inner.add_bytes(n);
    }

    fn add_item(&self) {
        self.inner.add_item();
    }

    fn set_phase(&self, phase: &str) {
        self.mark(canonical_phase(phase));
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
    /// A drill that failed before its scratch copy was begun, with
    /// `error` and its exit code: nothing measured, the scratch location
    /// as requested.
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

/// The record's `point_kind` for a point chooser's name (`--point`), for
/// a drill that failed before it chose a point.
fn point_kind_of(point: &str) -> &'static str {
    match point {
        "random" => "random-point-in-window",
        "canary" => "canary",
        _ => "latest-snapshot",
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
    let name = req.name();
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
    let exit_code = match error_code {
        Some(code) => code,
        None if record.ok => exit::OK,
        None => exit::FAILED,
    };
    let remaining = journal.resources();
    if remaining.is_empty() {
        journal.release();
    } else {
        warnings.push(format!(
            "left for the next drill to remove: {}",
            remaining
                .iter()
                .map(journal::Resource::describe)
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    let id = match backup_core::drill::save(repo, &record).await {
        Ok(id) => Some(id),
        Err(e) => {
            warnings.push(format!("could not store the drill record: {e}"));
            None
        }
    };
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
///
/// # Errors
///
/// Storage errors.
pub async fn record_failure(
    repo: &Repository,
    job: &Job,
    error: &str,
) -> Result<(Id, DrillRecord)> {
    let req = DrillRequest::as_configured(job);
    let ran = Ran::failed_early(&req, (error.to_owned(), exit::FAILED));
    let record = drill_record(&req, Utc::now(), None, ran, Vec::new());
    let id = backup_core::drill::save(repo, &record).await?;
    Ok((id, record))
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
    let rto_exceeded = match (ran.rto, req.max_rto) {
        (Some(rto), Some(max)) => rto > max,
        _ => false,
    };
    let checks_ok = ran.checks.iter().all(|c| c.ok);
    DrillRecord {
        version: DRILL_VERSION,
        job: req.job.clone(),
        source: point.map_or_else(
            || req.source_descriptor(),
            |p| p.snapshot.snapshot.source.clone(),
        ),
        snapshot: point.map(|p| p.snapshot.id),
        point_kind: point
            .map_or_else(|| point_kind_of(&req.point), |p| p.kind)
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
        Some(token) => tokio::select! {
            () = token.cancelled() => None,
            r = work => Some(r),
        },
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

/// Plans the scratch copy, restores, starts, checks and removes it. A
/// scratch location that is missing, taken or unusable is an error (the
/// drill failed before its copy was begun; the caller records it); what
/// fails after the copy was begun is in the result.
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
    let (mut scratch, opts) = plan_scratch(req, name, started, point).await?;
    let mut ran = Ran {
        target: scratch.describe(),
        ..Ran::default()
    };
    let resources = begin_scratch(&mut scratch, journal).await?;
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
            ran.rto = Some(t0.elapsed().saturating_sub(restored.checking));
            check_copy(req, point, &scratch, &reader, restored, &mut ran, cancel).await;
        }
        Err(e) => {
            ran.phases = clock.phases(Instant::now());
            ran.error = Some(failure(&e));
        }
    }
    keep_or_remove(req, name, &mut ran, &mut scratch, &resources, journal).await;
    Ok(ran)
}

/// Plans the scratch copy of `point` and the restore options that reach
/// the point (its time, and how WAL or the oplog is replayed up to it).
async fn plan_scratch(
    req: &DrillRequest,
    name: &str,
    started: DateTime<Utc>,
    point: &ChosenPoint,
) -> Result<(Scratch, RestoreOptions)> {
    let stamp = started.format("%Y%m%dt%H%M%S").to_string();
    let (scratch, mut opts) = Scratch::plan(
        &point.snapshot.snapshot,
        req.target.as_deref(),
        req.source_url.as_deref(),
        name,
        &stamp,
        point.canary.is_some(),
    )
    .await?;
    opts.at = point.at;
    opts.point.clone_from(&point.point);
    opts.replay.clone_from(&point.replay);
    if point.at.is_some() && point.replay.is_none() {
        opts.replay_command.clone_from(&req.replay_command);
    }
    Ok((scratch, opts))
}

/// Checks that the scratch copy's place is free, records its resources
/// in the journal and creates it, undoing what was done when a step
/// fails; returns the resources recorded.
async fn begin_scratch(scratch: &mut Scratch, journal: &mut Journal) -> Result<Vec<Resource>> {
    if let Err(e) = scratch.check_free().await {
        if let Scratch::Databases {
            throwaway: Some(_), ..
        } = &scratch
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
    Ok(resources)
}

/// What restoring the scratch copy produced.
struct Restored {
    /// The restore's report.
    report: RestoreReport,
    /// The phases so far (`prepare`, the restore's, `recovery`).
    phases: Vec<DrillPhase>,
    /// A physical copy's started server, with its port.
    server: Option<(StartedServer, u16)>,
    /// A physical copy's comparison of its files, made before it started.
    files: Option<DrillCheck>,
    /// Time spent on checks, left out of the RTO.
    checking: Duration,
}

/// Restores `point` into the scratch copy, timing its phases after
/// `prepare` seconds of preparation, and starts a physical copy.
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
    let mut phases = clock.phases(Instant::now());
    phases.insert(
        0,
        DrillPhase {
            name: "prepare".to_owned(),
            seconds: prepare,
        },
    );
    let mut checking = Duration::ZERO;
    let mut files = None;
    let server = match scratch {
        Scratch::Physical { dir, data, .. } => {
            // The file comparison runs before the server starts, which
            // changes files; its time is left out of the RTO.
            if req.builtin_checks && point.at.is_none() {
                let c = checks::physical_files(data, reader).await;
                checking += Duration::from_secs_f64(c.seconds);
                files = Some(c);
            }
            Some(start_physical(dir, data, &mut phases).await?)
        }
        _ => None,
    };
    Ok(Restored {
        report,
        phases,
        server,
        files,
        checking,
    })
}

/// Starts a physical copy's server on a free port, adding the `recovery`
/// phase to `phases`.
async fn start_physical(
    dir: &std::path::Path,
    data: &backup_sources::drill::DataDirectory,
    phases: &mut Vec<DrillPhase>,
) -> Result<(StartedServer, u16)> {
    let port = backup_sources::drill::free_port()?;
    let at = Instant::now();
    // The socket must fit in a Unix socket path (107 bytes).
    let work = (dir.as_os_str().len() < 60).then_some(dir);
    let s = data.start(port, work).await?;
    phases.push(DrillPhase {
        name: "recovery".to_owned(),
        seconds: at.elapsed().as_secs_f64(),
    });
    Ok((s, port))
}

/// Notes what the restore measured in `ran`, runs the checks on the copy
/// (the built-in ones, the canary, the configured ones) unless `cancel`
/// stops them, and stops a physical copy's server.
async fn check_copy(
    req: &DrillRequest,
    point: &ChosenPoint,
    scratch: &Scratch,
    reader: &SnapshotReader,
    restored: Restored,
    ran: &mut Ran,
    cancel: Option<&CancellationToken>,
) {
    ran.phases = restored.phases;
    ran.bytes = restored.report.stats.bytes;
    ran.items = restored.report.stats.files;
    let cx = CheckContext {
        reader,
        port: restored.server.as_ref().map(|(_, p)| *p),
        snapshot: point.snapshot.id.to_hex(),
        files: restored.files,
        replayed: point.replay.is_some(),
    };
    let checks = async {
        let mut out = Vec::new();
        if req.builtin_checks {
            out.extend(checks::builtin(scratch, &cx).await);
        }
        // The canary written before the drill must be in the copy.
        if let Some(c) = &point.canary {
            out.push(checks::canary(&c.mark, scratch, &cx).await);
        }
        for c in &req.checks {
            out.push(checks::configured(c, scratch, &cx).await);
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

/// Keeps the scratch copy (when asked and nothing failed) or removes it;
/// its resources leave the journal unless removing it failed.
async fn keep_or_remove(
    req: &DrillRequest,
    name: &str,
    ran: &mut Ran,
    scratch: &mut Scratch,
    resources: &[Resource],
    journal: &mut Journal,
) {
    if req.keep && ran.error.is_none() {
        ran.kept = true;
        tracing::info!(job = %name, target = %ran.target, "The drill's scratch copy was kept.");
    } else if let Err(e) = scratch.remove().await {
        tracing::error!(job = %name, error = %backup_core::error::report(&e), "Could not remove the drill's scratch copy; the next drill will try again.");
        return;
    }
    for r in resources {
        let _ = journal.remove(r);
    }
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
