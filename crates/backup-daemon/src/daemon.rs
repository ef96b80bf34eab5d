//! The scheduler: one task per job, a concurrency limit across jobs,
//! retries, retention, verification, slot leases, age checks and shutdown.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use anyhow::{Context as _, Result};
use backup_core::progress::NoProgress;
use backup_core::repo::Repository;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::audit::{self, Operation};
use crate::config::{Config, Event, Job, MissedRuns};
use crate::job::{self, CreateParams};
use crate::notify::{Notice, Notifier};
use crate::secret::Secret;

/// One finished (or abandoned) run.
#[derive(Debug, Clone, Serialize)]
pub struct RunRecord {
    /// `schedule`, `catch-up` or `manual`.
    pub trigger: &'static str,
    /// The scheduled time, for scheduled runs.
    pub slot: Option<DateTime<Utc>>,
    /// Start.
    pub started: DateTime<Utc>,
    /// End.
    pub finished: DateTime<Utc>,
    /// `success`, `failure` or `abandoned`.
    pub result: &'static str,
    /// Attempts made.
    pub attempts: u32,
    /// The snapshot written.
    pub snapshot: Option<String>,
    /// The last error.
    pub error: Option<String>,
}

/// Last verification.
#[derive(Debug, Clone, Serialize)]
pub struct VerifyRecord {
    /// When it ended.
    pub finished: DateTime<Utc>,
    /// Whether no damage was found.
    pub ok: bool,
    /// Problems or the error.
    pub problems: Vec<String>,
}

/// What the daemon knows about a job; served by `/api/jobs` and `/metrics`.
#[derive(Debug, Clone, Default, Serialize)]
pub struct JobState {
    /// Name.
    pub name: String,
    /// Repository name.
    pub repository: String,
    /// Cron expression.
    pub schedule: String,
    /// Whether a run is in progress.
    pub running: bool,
    /// Next scheduled run.
    pub next_run: Option<DateTime<Utc>>,
    /// Next verification.
    pub next_verify: Option<DateTime<Utc>>,
    /// The last run.
    pub last_run: Option<RunRecord>,
    /// Time of the newest snapshot of the job.
    pub last_success: Option<DateTime<Utc>>,
    /// Duration of the last successful run.
    pub last_duration_seconds: f64,
    /// Bytes read by the last successful run.
    pub last_bytes_read: u64,
    /// New bytes added by it.
    pub last_bytes_added: u64,
    /// Stored bytes it added.
    pub last_bytes_stored: u64,
    /// Runs that failed.
    pub failures_total: u64,
    /// Runs that succeeded.
    pub successes_total: u64,
    /// Failed runs since the last success.
    pub consecutive_failures: u64,
    /// Scheduled slots another daemon ran.
    pub slots_skipped_total: u64,
    /// The last verification.
    pub last_verify: Option<VerifyRecord>,
    /// Maximum acceptable age in seconds.
    pub max_age_seconds: Option<u64>,
    /// Whether a missed-backup notice was sent and no success since.
    pub missed_alerted: bool,
}

#[derive(Clone, Copy)]
enum Trigger {
    Schedule(DateTime<Utc>),
    CatchUp(DateTime<Utc>),
    Manual,
}

impl Trigger {
    fn name(self) -> &'static str {
        match self {
            Trigger::Schedule(_) => "schedule",
            Trigger::CatchUp(_) => "catch-up",
            Trigger::Manual => "manual",
        }
    }

    fn slot(self) -> Option<DateTime<Utc>> {
        match self {
            Trigger::Schedule(t) | Trigger::CatchUp(t) => Some(t),
            Trigger::Manual => None,
        }
    }
}

/// Shared state of the daemon.
pub struct Daemon {
    config: RwLock<Arc<Config>>,
    config_path: PathBuf,
    jobs: Mutex<BTreeMap<String, JobState>>,
    run_guards: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    triggers: Mutex<HashMap<String, mpsc::Sender<()>>>,
    repos: tokio::sync::Mutex<HashMap<String, Repository>>,
    repo_sizes: Mutex<BTreeMap<String, u64>>,
    notifier: RwLock<Arc<Notifier>>,
    api_token: RwLock<Option<Secret>>,
    semaphore: Arc<Semaphore>,
    shutdown: CancellationToken,
    abandon: CancellationToken,
    started: DateTime<Utc>,
    local_log: Option<PathBuf>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

fn read<T: Clone>(m: &RwLock<T>) -> T {
    m.read().unwrap_or_else(PoisonError::into_inner).clone()
}

fn write<T>(m: &RwLock<T>, v: T) {
    *m.write().unwrap_or_else(PoisonError::into_inner) = v;
}

/// Whether an error may go away on its own (worth a retry).
fn is_transient(e: &anyhow::Error) -> bool {
    if e.chain()
        .any(|c| c.downcast_ref::<crate::config::ConfigError>().is_some())
    {
        return false;
    }
    !e.chain().any(|c| {
        matches!(
            c.downcast_ref::<backup_core::Error>(),
            Some(
                backup_core::Error::Config(_)
                    | backup_core::Error::WrongPassword
                    | backup_core::Error::NoRepository { .. }
                    | backup_core::Error::UnsupportedVersion { .. }
                    | backup_core::Error::Corrupt { .. }
            )
        )
    })
}

impl Daemon {
    /// Prepares a daemon for a validated configuration.
    ///
    /// # Errors
    ///
    /// Secrets of the notification channels or the API token cannot be read.
    pub fn new(config: Config, config_path: &Path) -> Result<Arc<Self>> {
        let notifier = Notifier::from_config(&config)?;
        let api_token = match &config.daemon.api_token {
            Some(r) => Some(r.resolve("daemon.api_token")?),
            None => None,
        };
        let local_log = config
            .audit
            .local_log
            .clone()
            .or_else(audit::default_local_log);
        Ok(Arc::new(Daemon {
            semaphore: Arc::new(Semaphore::new(config.daemon.max_concurrent_jobs)),
            config: RwLock::new(Arc::new(config)),
            config_path: config_path.to_owned(),
            jobs: Mutex::new(BTreeMap::new()),
            run_guards: Mutex::new(HashMap::new()),
            triggers: Mutex::new(HashMap::new()),
            repos: tokio::sync::Mutex::new(HashMap::new()),
            repo_sizes: Mutex::new(BTreeMap::new()),
            notifier: RwLock::new(Arc::new(notifier)),
            api_token: RwLock::new(api_token),
            shutdown: CancellationToken::new(),
            abandon: CancellationToken::new(),
            started: Utc::now(),
            local_log,
        }))
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        read(&self.config)
    }

    /// A copy of every job's state.
    pub fn job_states(&self) -> Vec<JobState> {
        lock(&self.jobs).values().cloned().collect()
    }

    /// Repository sizes by name.
    pub fn repo_sizes(&self) -> BTreeMap<String, u64> {
        lock(&self.repo_sizes).clone()
    }

    /// The notifier in force.
    pub fn notifier(&self) -> Arc<Notifier> {
        read(&self.notifier)
    }

    /// The API token, if the run trigger is enabled.
    pub fn api_token(&self) -> Option<Secret> {
        read(&self.api_token)
    }

    /// Asks for a run of `job`; `Ok(false)` when one is already queued.
    ///
    /// # Errors
    ///
    /// When there is no such job.
    pub fn trigger(&self, job: &str) -> Result<bool, String> {
        let tx = lock(&self.triggers).get(job).cloned();
        match tx {
            Some(tx) => Ok(tx.try_send(()).is_ok()),
            None => Err(format!("no job named `{job}`")),
        }
    }

    fn update(&self, job: &str, f: impl FnOnce(&mut JobState)) {
        if let Some(s) = lock(&self.jobs).get_mut(job) {
            f(s);
        }
    }

    async fn repo(&self, name: &str) -> Result<Repository> {
        let mut repos = self.repos.lock().await;
        if let Some(r) = repos.get(name) {
            return Ok(r.clone());
        }
        let config = self.config();
        let cfg = config.repository(name)?;
        let r = job::open_repository(name, cfg)
            .await
            .with_context(|| format!("opening repository {name}"))?;
        repos.insert(name.to_owned(), r.clone());
        Ok(r)
    }

    fn lock_wait(&self) -> Duration {
        Config::duration(&self.config().daemon.lock_wait)
    }

    async fn audit(&self, repo: Option<&Repository>, op: Operation) {
        for w in audit::record(repo, self.local_log.as_deref(), &op).await {
            tracing::warn!("{w}");
        }
    }

    fn notify(&self, job: &Job, event: Event, summary: String, details: String) {
        self.notifier().send(
            job,
            &Notice {
                event,
                job: job.name.clone(),
                summary,
                details,
                time: Utc::now(),
            },
        );
    }

    /// Starts a task per job for the configuration in force; returns
    /// their handles. `generation` stops them (a reload).
    fn spawn_jobs(
        self: &Arc<Self>,
        generation: &CancellationToken,
    ) -> Vec<tokio::task::JoinHandle<()>> {
        let config = self.config();
        let jobs = match config.all_jobs() {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, "Invalid jobs.");
                return Vec::new();
            }
        };
        let mut states = lock(&self.jobs);
        let old = std::mem::take(&mut *states);
        let mut triggers = lock(&self.triggers);
        triggers.clear();
        let mut handles = Vec::new();
        for job in jobs {
            let mut st = old.get(&job.name).cloned().unwrap_or_default();
            st.name.clone_from(&job.name);
            st.repository.clone_from(&job.repository);
            job.schedule.expr().clone_into(&mut st.schedule);
            st.max_age_seconds = job.max_age.map(|d| d.as_secs());
            states.insert(job.name.clone(), st);
            let (tx, rx) = mpsc::channel(1);
            triggers.insert(job.name.clone(), tx);
            let this = Arc::clone(self);
            let token = generation.clone();
            handles.push(tokio::spawn(
                async move { this.job_loop(job, token, rx).await },
            ));
        }
        handles
    }

    async fn job_loop(
        self: Arc<Self>,
        job: Job,
        generation: CancellationToken,
        mut rx: mpsc::Receiver<()>,
    ) {
        // What the repository says about the last success (another daemon
        // or the CLI may have run the job).
        let mut last = None;
        match self.repo(&job.repository).await {
            Ok(repo) => match job::last_success(&repo, &job.name).await {
                Ok(t) => {
                    last = t;
                    self.update(&job.name, |s| s.last_success = s.last_success.max(t));
                }
                Err(e) => {
                    tracing::warn!(job = %job.name, error = %format!("{e:#}"), "Could not list the job's snapshots.");
                }
            },
            Err(e) => {
                tracing::warn!(job = %job.name, error = %format!("{e:#}"), "Could not open the repository.");
            }
        }
        if self.config().daemon.missed_runs == MissedRuns::RunOnce {
            if let Some(missed) = last.and_then(|t| job.schedule.next_after(t)) {
                if missed <= Utc::now() && !generation.is_cancelled() {
                    tracing::info!(job = %job.name, slot = %missed, "Running a backup missed while no daemon was running.");
                    self.execute(&job, Trigger::CatchUp(missed)).await;
                }
            }
        }
        let mut verify_next = job
            .verify
            .as_ref()
            .and_then(|(s, _)| s.next_after(Utc::now()));
        loop {
            let now = Utc::now();
            let next = job.schedule.next_after(now);
            self.update(&job.name, |s| {
                s.next_run = next;
                s.next_verify = verify_next;
            });
            let until = |t: Option<DateTime<Utc>>| {
                let d = t.map_or(Duration::from_secs(86400 * 365), |t| {
                    (t - Utc::now()).to_std().unwrap_or(Duration::ZERO)
                });
                tokio::time::sleep(d)
            };
            tokio::select! {
                () = generation.cancelled() => break,
                () = until(next) => {
                    if let Some(slot) = next {
                        self.execute(&job, Trigger::Schedule(slot)).await;
                    }
                }
                Some(()) = rx.recv() => self.execute(&job, Trigger::Manual).await,
                () = until(verify_next), if verify_next.is_some() => {
                    self.verify(&job).await;
                    verify_next = job.verify.as_ref().and_then(|(s, _)| s.next_after(Utc::now()));
                }
            }
        }
    }

    fn guard(&self, job: &str) -> Arc<tokio::sync::Mutex<()>> {
        lock(&self.run_guards)
            .entry(job.to_owned())
            .or_default()
            .clone()
    }

    async fn execute(&self, job: &Job, trigger: Trigger) {
        // Never two runs of one job at once, also across reloads.
        let guard = self.guard(&job.name);
        let Ok(_running) = guard.try_lock() else {
            tracing::warn!(job = %job.name, trigger = trigger.name(), "The job is still running; this run is skipped.");
            return;
        };
        let permit = tokio::select! {
            () = self.shutdown.cancelled() => return,
            p = self.semaphore.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let started = Utc::now();
        let repo = self.repo(&job.repository).await;
        if let (Ok(repo), Some(slot)) = (&repo, trigger.slot()) {
            match crate::lease::claim(repo, &job.name, slot).await {
                Ok(true) => {}
                Ok(false) => {
                    tracing::info!(job = %job.name, %slot, "Another daemon already ran this slot; skipping it.");
                    self.update(&job.name, |s| s.slots_skipped_total += 1);
                    return;
                }
                Err(e) => {
                    tracing::warn!(job = %job.name, error = %e, "Could not write the slot lease; running anyway.");
                }
            }
        }
        self.update(&job.name, |s| s.running = true);
        tracing::info!(job = %job.name, trigger = trigger.name(), "Backup started.");
        let (result, attempts) = match repo {
            Ok(repo) => {
                let r = self.backup_with_retries(job, &repo).await;
                (r.0.map(|o| (repo, o)), r.1)
            }
            Err(e) => (Err(RunError::Failed(e)), 1),
        };
        drop(permit);
        let finished = Utc::now();
        let mut record = RunRecord {
            trigger: trigger.name(),
            slot: trigger.slot(),
            started,
            finished,
            result: "success",
            attempts,
            snapshot: None,
            error: None,
        };
        match result {
            Ok((repo, outcome)) => {
                let id = outcome.id.map(|i| i.to_hex());
                record.snapshot.clone_from(&id);
                let st = outcome.run_stats.clone();
                let mut was_failing = 0;
                self.update(&job.name, |s| {
                    was_failing = s.consecutive_failures;
                    s.consecutive_failures = 0;
                    s.successes_total += 1;
                    s.last_success = Some(outcome.snapshot.time).max(s.last_success);
                    s.last_duration_seconds = st.duration_ms as f64 / 1000.0;
                    s.last_bytes_read = st.bytes_read;
                    s.last_bytes_added = st.bytes_added;
                    s.last_bytes_stored = st.bytes_stored;
                    s.missed_alerted = false;
                    s.last_run = Some(record.clone());
                    s.running = false;
                });
                tracing::info!(job = %job.name, snapshot = id.as_deref().unwrap_or(""), bytes_read = st.bytes_read, bytes_added = st.bytes_added, "Backup finished.");
                self.audit(
                    Some(&repo),
                    Operation {
                        operation: "create".to_owned(),
                        success: true,
                        details: serde_json::json!({
                            "job": job.name, "trigger": trigger.name(), "slot": trigger.slot(), "snapshot": id,
                            "source": outcome.snapshot.source.url, "attempts": attempts,
                            "bytes_read": st.bytes_read, "bytes_added": st.bytes_added,
                        }),
                    },
                )
                .await;
                if was_failing > 0 {
                    self.notify(
                        job,
                        Event::Recovery,
                        format!("Backup job {} recovered", job.name),
                        format!(
                            "after {was_failing} failed runs; snapshot {}",
                            id.clone().unwrap_or_default()
                        ),
                    );
                }
                self.notify(
                    job,
                    Event::Success,
                    format!("Backup job {} succeeded", job.name),
                    format!(
                        "snapshot {}: read {}, added {}",
                        id.unwrap_or_default(),
                        backup_core::util::human_bytes(st.bytes_read),
                        backup_core::util::human_bytes(st.bytes_added)
                    ),
                );
                self.after_success(job, &repo).await;
            }
            Err(e) => {
                let (result, msg) = match &e {
                    RunError::Abandoned => (
                        "abandoned",
                        "abandoned at shutdown: the grace period ran out".to_owned(),
                    ),
                    RunError::Failed(e) => ("failure", format!("{e:#}")),
                };
                record.result = result;
                record.error = Some(msg.clone());
                self.update(&job.name, |s| {
                    s.failures_total += 1;
                    s.consecutive_failures += 1;
                    s.last_run = Some(record.clone());
                    s.running = false;
                });
                tracing::error!(job = %job.name, error = %msg, attempts, "Backup failed.");
                let repo = self.repos.lock().await.get(&job.repository).cloned();
                self.audit(
                    repo.as_ref(),
                    Operation {
                        operation: "create".to_owned(),
                        success: false,
                        details: serde_json::json!({
                            "job": job.name, "trigger": trigger.name(), "slot": trigger.slot(), "error": msg, "attempts": attempts,
                        }),
                    },
                )
                .await;
                if matches!(e, RunError::Failed(_)) {
                    self.notify(
                        job,
                        Event::Failure,
                        format!("Backup job {} failed", job.name),
                        format!("after {attempts} attempts: {msg}"),
                    );
                }
            }
        }
    }

    async fn backup_with_retries(
        &self,
        job: &Job,
        repo: &Repository,
    ) -> (Result<backup_core::archiver::BackupOutcome, RunError>, u32) {
        let retry = self.config().daemon.retry.clone();
        let mut backoff = Config::duration(&retry.initial_backoff);
        let max_backoff = Config::duration(&retry.max_backoff);
        let mut attempt = 0;
        loop {
            attempt += 1;
            let params = match CreateParams::for_job(job) {
                Ok(p) => p,
                Err(e) => return (Err(RunError::Failed(e)), attempt),
            };
            let run = job::create_snapshot(repo, params, self.lock_wait(), Arc::new(NoProgress));
            let result = tokio::select! {
                () = self.abandon.cancelled() => return (Err(RunError::Abandoned), attempt),
                r = run => r,
            };
            match result {
                Ok(o) => return (Ok(o), attempt),
                Err(e)
                    if attempt < retry.attempts
                        && is_transient(&e)
                        && !self.shutdown.is_cancelled() =>
                {
                    tracing::warn!(job = %job.name, attempt, error = %format!("{e:#}"), retry_in = ?backoff, "Backup attempt failed; will retry.");
                    tokio::select! {
                        () = self.shutdown.cancelled() => return (Err(RunError::Failed(e)), attempt),
                        () = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(max_backoff);
                }
                Err(e) => return (Err(RunError::Failed(e)), attempt),
            }
        }
    }

    async fn after_success(&self, job: &Job, repo: &Repository) {
        if let Some((policy, prune)) = &job.retention {
            let r = job::apply_retention(repo, &job.name, policy, *prune, self.lock_wait()).await;
            let (success, details) = match &r {
                Ok(o) => {
                    tracing::info!(job = %job.name, removed = o.removed.len(), kept = o.kept, "Retention applied.");
                    (
                        true,
                        serde_json::json!({"job": job.name, "removed": o.removed, "kept": o.kept, "pruned": o.prune.is_some()}),
                    )
                }
                Err(e) => {
                    tracing::error!(job = %job.name, error = %format!("{e:#}"), "Retention failed.");
                    self.notify(
                        job,
                        Event::Failure,
                        format!("Retention of job {} failed", job.name),
                        format!("{e:#}"),
                    );
                    (
                        false,
                        serde_json::json!({"job": job.name, "error": format!("{e:#}")}),
                    )
                }
            };
            self.audit(
                Some(repo),
                Operation {
                    operation: "forget".to_owned(),
                    success,
                    details,
                },
            )
            .await;
        }
        if let Err(e) =
            crate::lease::remove_old(repo, &job.name, Utc::now() - chrono::Duration::days(1)).await
        {
            tracing::warn!(job = %job.name, error = %e, "Could not remove old slot leases.");
        }
        match job::repository_size(repo).await {
            Ok(size) => {
                lock(&self.repo_sizes).insert(job.repository.clone(), size);
            }
            Err(e) => {
                tracing::warn!(repository = %job.repository, error = %format!("{e:#}"), "Could not measure the repository.");
            }
        }
    }

    async fn verify(&self, job: &Job) {
        let Some((_, read_data)) = &job.verify else {
            return;
        };
        let guard = self.guard(&job.name);
        let _running = guard.lock().await;
        let Ok(_permit) = self.semaphore.clone().acquire_owned().await else {
            return;
        };
        tracing::info!(job = %job.name, "Verification started.");
        let repo = match self.repo(&job.repository).await {
            Ok(r) => r,
            Err(e) => {
                self.verify_done(job, None, Err(e)).await;
                return;
            }
        };
        let r = tokio::select! {
            () = self.shutdown.cancelled() => return,
            r = job::verify_job(&repo, &job.name, *read_data, self.lock_wait()) => r,
        };
        self.verify_done(job, Some(&repo), r).await;
    }

    async fn verify_done(
        &self,
        job: &Job,
        repo: Option<&Repository>,
        r: Result<backup_core::verify::VerifyReport>,
    ) {
        let (ok, problems, details) = match &r {
            Ok(rep) => (
                rep.is_ok(),
                rep.problems
                    .iter()
                    .map(|p| format!("{} {}: {}", p.kind, p.object, p.message))
                    .collect::<Vec<_>>(),
                serde_json::json!({"job": job.name, "snapshots": rep.snapshots_checked, "packs_read": rep.packs_read, "problems": rep.problems.len(), "damaged_snapshots": rep.damaged_snapshots}),
            ),
            Err(e) => (
                false,
                vec![format!("{e:#}")],
                serde_json::json!({"job": job.name, "error": format!("{e:#}")}),
            ),
        };
        self.update(&job.name, |s| {
            s.last_verify = Some(VerifyRecord {
                finished: Utc::now(),
                ok,
                problems: problems.clone(),
            });
        });
        self.audit(
            repo,
            Operation {
                operation: "verify".to_owned(),
                success: ok,
                details,
            },
        )
        .await;
        if ok {
            tracing::info!(job = %job.name, "Verification found no problems.");
        } else {
            tracing::error!(job = %job.name, problems = problems.len(), "Verification failed.");
            self.notify(
                job,
                Event::VerifyFailed,
                format!("Verification of job {} failed", job.name),
                problems.join("\n"),
            );
        }
    }

    /// Sends missed-backup notices for jobs whose last success is older
    /// than their maximum age (once until the next success).
    async fn check_ages(&self) {
        let Ok(jobs) = self.config().all_jobs() else {
            return;
        };
        for job in jobs {
            let Some(max) = job.max_age else { continue };
            // Another daemon or the CLI may have backed the job up.
            if let Ok(repo) = self.repo(&job.repository).await {
                if let Ok(t) = job::last_success(&repo, &job.name).await {
                    self.update(&job.name, |s| s.last_success = s.last_success.max(t));
                }
            }
            let Some(state) = lock(&self.jobs).get(&job.name).cloned() else {
                continue;
            };
            let reference = state.last_success.unwrap_or(self.started);
            let age = (Utc::now() - reference).to_std().unwrap_or(Duration::ZERO);
            if age > max && !state.missed_alerted {
                self.update(&job.name, |s| s.missed_alerted = true);
                let what = match state.last_success {
                    Some(t) => format!("the last successful backup is from {}", t.to_rfc3339()),
                    None => "there is no successful backup".to_owned(),
                };
                tracing::error!(job = %job.name, age_seconds = age.as_secs(), "Backup missing: older than the maximum age.");
                self.notify(
                    &job,
                    Event::Missed,
                    format!("Backup of job {} is overdue", job.name),
                    format!("{what}; the maximum age is {}", humantime_secs(max)),
                );
            }
        }
    }

    async fn measure_repositories(&self) {
        let names: Vec<String> = self.config().repositories.keys().cloned().collect();
        for name in names {
            if let Ok(repo) = self.repo(&name).await {
                if let Ok(size) = job::repository_size(&repo).await {
                    lock(&self.repo_sizes).insert(name, size);
                }
            }
        }
    }

    /// Re-reads the configuration file; the old one stays in force when the
    /// new one is invalid.
    fn reload(&self) -> Result<()> {
        let config = Config::load(&self.config_path)?;
        let notifier = Notifier::from_config(&config)?;
        let token = match &config.daemon.api_token {
            Some(r) => Some(r.resolve("daemon.api_token")?),
            None => None,
        };
        let old = self.config();
        if old.daemon.listen != config.daemon.listen
            || old.daemon.max_concurrent_jobs != config.daemon.max_concurrent_jobs
        {
            tracing::warn!("Changes of daemon.listen and daemon.max_concurrent_jobs take effect at the next start.");
        }
        write(&self.notifier, Arc::new(notifier));
        write(&self.api_token, token);
        write(&self.config, Arc::new(config));
        Ok(())
    }
}

/// Why a run did not produce a snapshot.
enum RunError {
    Failed(anyhow::Error),
    Abandoned,
}

fn humantime_secs(d: Duration) -> String {
    let s = d.as_secs();
    if s % 3600 == 0 {
        format!("{}h", s / 3600)
    } else if s % 60 == 0 {
        format!("{}m", s / 60)
    } else {
        format!("{s}s")
    }
}

/// Runs the daemon until SIGTERM or SIGINT.
///
/// # Errors
///
/// The HTTP address cannot be bound or signal handlers cannot be installed.
pub async fn run(daemon: Arc<Daemon>) -> Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing the SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing the SIGINT handler")?;
    let mut hup = signal(SignalKind::hangup()).context("installing the SIGHUP handler")?;

    let config = daemon.config();
    let listener = tokio::net::TcpListener::bind(&config.daemon.listen)
        .await
        .with_context(|| format!("listening on {}", config.daemon.listen))?;
    let addr = listener.local_addr()?;
    tracing::info!(address = %addr, jobs = config.jobs.len(), "backupd started.");
    let http_stop = CancellationToken::new();
    let server = tokio::spawn(crate::http::serve(
        listener,
        Arc::clone(&daemon),
        http_stop.clone(),
    ));

    let mut generation = daemon.shutdown.child_token();
    let mut handles = daemon.spawn_jobs(&generation);
    daemon.measure_repositories().await;
    let ages = {
        let d = Arc::clone(&daemon);
        tokio::spawn(async move {
            loop {
                let every = Config::duration(&d.config().daemon.check_interval);
                tokio::select! {
                    () = d.shutdown.cancelled() => break,
                    () = tokio::time::sleep(every) => d.check_ages().await,
                }
            }
        })
    };

    loop {
        tokio::select! {
            _ = term.recv() => { tracing::info!("SIGTERM received: shutting down."); break; }
            _ = int.recv() => { tracing::info!("SIGINT received: shutting down."); break; }
            _ = hup.recv() => {
                match daemon.reload() {
                    Ok(()) => {
                        tracing::info!("Configuration reloaded.");
                        generation.cancel();
                        // Old job tasks end once their running backup is done;
                        // the per-job guard keeps the new tasks from overlapping.
                        generation = daemon.shutdown.child_token();
                        daemon.repos.lock().await.clear();
                        handles.extend(daemon.spawn_jobs(&generation));
                    }
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "Reloading the configuration failed; keeping the old one."),
                }
            }
        }
    }

    daemon.shutdown.cancel();
    let grace = Config::duration(&daemon.config().daemon.shutdown_grace);
    let all = futures_join(handles);
    tokio::pin!(all);
    if tokio::time::timeout(grace, &mut all).await.is_err() {
        tracing::warn!(grace = ?grace, "Running backups did not finish within the grace period; abandoning them (no snapshot is written for them).");
        daemon.abandon.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(10), &mut all).await;
        // Let dropped lock guards remove their lock files.
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let _ = ages.await;
    http_stop.cancel();
    let _ = server.await;
    tracing::info!("backupd stopped.");
    Ok(())
}

async fn futures_join(handles: Vec<tokio::task::JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}
