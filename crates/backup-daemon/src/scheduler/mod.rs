//! The scheduler: one task per job, a concurrency limit across jobs,
//! retries, retention, verification, drills, slot leases, age checks,
//! anomaly and storage alerts, the scheduled report, reloads and
//! shutdown. The work of each run is an operation of `backup-ops`; a run
//! of a job is in [`run`](self) (`run.rs`), verifications and age checks
//! in `watch.rs`, drills in `drill.rs`, the history the status page shows
//! in `history.rs`, anomalies, free space and the report in `alerts.rs`.

mod alerts;
mod capture;
mod drill;
mod history;
mod restore;
mod run;
mod watch;

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use anyhow::{Context as _, Result};
use backup_core::repo::Repository;
use backup_ops::audit::AuditLog;
use backup_ops::config::{Config, Event, Job, MissedRuns};
use chrono::{DateTime, Utc};
use tokio::sync::{mpsc, Semaphore};
use tokio_util::sync::CancellationToken;

use crate::notify::{Notice, Notifier};
use crate::state::{JobState, Status};

/// What started a run.
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

/// Why a run did not produce a snapshot.
enum RunError {
    Failed(backup_ops::Error),
    Abandoned,
}

/// The daemon.
pub struct Daemon {
    config: RwLock<Arc<Config>>,
    config_path: PathBuf,
    status: Arc<Status>,
    run_guards: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    repos: tokio::sync::Mutex<HashMap<String, Repository>>,
    notifier: RwLock<Arc<Notifier>>,
    semaphore: Arc<Semaphore>,
    shutdown: CancellationToken,
    abandon: CancellationToken,
    started: DateTime<Utc>,
    audit: AuditLog,
    /// Snapshot manifests read so far, per repository, by file name.
    snapshots: tokio::sync::Mutex<HashMap<String, HashMap<String, history::Seen>>>,
    /// Drill records read so far, per repository, by file name.
    drills_seen: tokio::sync::Mutex<HashMap<String, HashSet<String>>>,
    /// Repositories whose `storage_low` notice was sent (once per episode).
    storage_alerted: Mutex<HashSet<String>>,
}

impl std::fmt::Debug for Daemon {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Daemon")
            .field("config_path", &self.config_path)
            .finish_non_exhaustive()
    }
}

fn read<T: Clone>(m: &RwLock<T>) -> T {
    m.read().unwrap_or_else(PoisonError::into_inner).clone()
}

fn write<T>(m: &RwLock<T>, v: T) {
    *m.write().unwrap_or_else(PoisonError::into_inner) = v;
}

/// How a capture loop restarts what stopped: `first`, doubling to `max`
/// while it keeps failing; a capture that ran a minute before it stopped
/// was working (its waits start over, and its stop is a new outage).
fn report(e: &backup_ops::Error) -> String {
    backup_core::error::report(e)
}

impl Daemon {
    /// Prepares a daemon for a validated configuration.
    ///
    /// # Errors
    ///
    /// Secrets of the notification channels or the API token cannot be read.
    pub fn new(config: Config, config_path: &Path) -> Result<Arc<Self>> {
        let status = Arc::new(Status::default());
        let notifier = Notifier::from_config(&config, Arc::clone(&status))?;
        status.set_api_token(api_token(&config)?);
        status.set_read_token(read_token(&config)?);
        status.set_users(config.daemon.users.clone());
        status.set_page_access(config.daemon.status_page);
        let audit = AuditLog::new(config.audit.local_log.as_deref());
        Ok(Arc::new(Daemon {
            semaphore: Arc::new(Semaphore::new(config.daemon.max_concurrent_jobs)),
            config: RwLock::new(Arc::new(config)),
            config_path: config_path.to_owned(),
            status,
            run_guards: Mutex::new(HashMap::new()),
            repos: tokio::sync::Mutex::new(HashMap::new()),
            notifier: RwLock::new(Arc::new(notifier)),
            shutdown: CancellationToken::new(),
            abandon: CancellationToken::new(),
            started: Utc::now(),
            audit,
            snapshots: tokio::sync::Mutex::new(HashMap::new()),
            drills_seen: tokio::sync::Mutex::new(HashMap::new()),
            storage_alerted: Mutex::new(HashSet::new()),
        }))
    }

    /// The configuration in force.
    pub fn config(&self) -> Arc<Config> {
        read(&self.config)
    }

    /// The shared state the HTTP API serves.
    pub fn status(&self) -> &Arc<Status> {
        &self.status
    }

    fn notifier(&self) -> Arc<Notifier> {
        read(&self.notifier)
    }

    async fn repo(&self, name: &str) -> backup_ops::Result<Repository> {
        let mut repos = self.repos.lock().await;
        if let Some(r) = repos.get(name) {
            return Ok(r.clone());
        }
        let r = backup_ops::repository::open_configured(&self.config(), name).await?;
        repos.insert(name.to_owned(), r.clone());
        Ok(r)
    }

    fn lock_wait(&self) -> Duration {
        self.config().daemon.lock_wait
    }

    async fn audit(
        &self,
        repo: Option<&Repository>,
        operation: &str,
        success: bool,
        details: serde_json::Value,
    ) {
        self.audit_as(repo, None, operation, success, details).await;
    }

    /// Records an operation done by `user` (a daemon identity; `None` for
    /// the daemon itself, as its OS user) in the audit trail and the
    /// status page's newest records.
    async fn audit_as(
        &self,
        repo: Option<&Repository>,
        user: Option<&str>,
        operation: &str,
        success: bool,
        details: serde_json::Value,
    ) {
        let job = details
            .get("job")
            .and_then(serde_json::Value::as_str)
            .map(str::to_owned);
        let repository = job
            .as_deref()
            .and_then(|j| self.config().jobs.get(j).map(|c| c.repository.clone()))
            .unwrap_or_default();
        let body = backup_core::audit::AuditBody {
            seq: 0,
            operation: operation.to_owned(),
            timestamp: Utc::now(),
            user: user.map_or_else(backup_core::util::username, str::to_owned),
            host: backup_core::util::hostname(),
            key: repo.and_then(Repository::key_id).map(|k| k.to_hex()),
            status: if success { "success" } else { "failure" }.to_owned(),
            details: details.clone(),
            prev: String::new(),
        };
        let mut line = backup_ops::report::AuditLine::of_record(
            &repository,
            &backup_core::audit::AuditRecord {
                hash: String::new(),
                body,
            },
        );
        for w in self
            .audit
            .record_as(repo, user, operation, success, details)
            .await
        {
            tracing::warn!("{w}");
        }
        if let Some(repo) = repo {
            if let Ok(recent) = backup_core::audit::read_recent(repo, None, 1).await {
                if let Some(r) = recent.first() {
                    line.seq = r.body.seq;
                }
            }
        }
        self.status.push_audit(line);
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
        let jobs = match self.config().all_jobs() {
            Ok(j) => j,
            Err(e) => {
                tracing::error!(error = %e, "Invalid jobs.");
                return Vec::new();
            }
        };
        let mut receivers = self.status.replace_jobs(jobs.iter().map(|job| {
            JobState {
                name: job.name.clone(),
                repository: job.repository.clone(),
                schedule: job.schedule.expr().to_owned(),
                max_age_seconds: job.max_age.map(|d| d.as_secs()),
                max_rto_seconds: job
                    .drill
                    .as_ref()
                    .and_then(|d| d.max_rto)
                    .map(|d| d.as_secs_f64()),
                ..JobState::default()
            }
        }));
        self.describe_jobs(&jobs);
        let mut handles = Vec::new();
        for job in jobs {
            let Some(rx) = receivers.remove(&job.name) else {
                continue;
            };
            if job.wal.is_some() || job.oplog_continuous {
                let this = Arc::clone(self);
                handles.push(tokio::spawn(Box::pin(
                    this.capture_loop(job.clone(), generation.clone()),
                )));
            }
            let this = Arc::clone(self);
            let token = generation.clone();
            handles.push(tokio::spawn(Box::pin(this.job_loop(job, token, rx))));
        }
        handles
    }

    async fn job_loop(
        self: Arc<Self>,
        job: Job,
        generation: CancellationToken,
        mut rx: mpsc::Receiver<Option<String>>,
    ) {
        self.refresh_repository(&job.repository).await;
        let last = self.status.job(&job.name).and_then(|s| s.last_success);
        if self.config().daemon.missed_runs == MissedRuns::RunOnce {
            if let Some(missed) = last.and_then(|t| job.schedule.next_after(t)) {
                if missed <= Utc::now() && !generation.is_cancelled() {
                    tracing::info!(job = %job.name, slot = %missed, "Running a backup missed while no daemon was running.");
                    self.execute(&job, Trigger::CatchUp(missed), None).await;
                }
            }
        }
        // Each schedule counts from the slot it last ran (from now at
        // start): a slot that passed while the job was busy (a long run,
        // a drill or a verify of the same job) runs late rather than not
        // at all, and slots passed beyond it are counted as missed.
        let started = Utc::now();
        let mut after = started;
        let mut verify_after = started;
        let mut drill_after = started;
        let drill_schedule = job.drill.as_ref().and_then(|d| d.schedule.as_ref());
        loop {
            let now = Utc::now();
            let (next, missed) = job.schedule.due(after, now);
            let (verify_next, verify_missed) = job
                .verify
                .as_ref()
                .map_or((None, 0), |v| v.schedule.due(verify_after, now));
            let (drill_next, drill_missed) =
                drill_schedule.map_or((None, 0), |d| d.due(drill_after, now));
            let missed = missed + verify_missed + drill_missed;
            if missed > 0 {
                tracing::warn!(job = %job.name, missed, "Scheduled slots passed while the job was busy; the latest runs now.");
            }
            self.status.update(&job.name, |s| {
                s.next_run = next;
                s.next_verify = verify_next;
                s.next_drill = drill_next;
                s.slots_missed_total += missed;
            });
            let until = |t: Option<DateTime<Utc>>| {
                let d = t.map_or(Duration::from_secs(86400 * 365), |t| {
                    (t - Utc::now()).to_std().unwrap_or(Duration::ZERO)
                });
                tokio::time::sleep(d)
            };
            tokio::select! {
                biased;
                () = generation.cancelled() => break,
                () = until(next) => {
                    if let Some(slot) = next {
                        after = slot;
                        self.execute(&job, Trigger::Schedule(slot), None).await;
                    }
                }
                Some(by) = rx.recv() => self.execute(&job, Trigger::Manual, by.as_deref()).await,
                () = until(verify_next), if verify_next.is_some() => {
                    verify_after = verify_next.unwrap_or(now);
                    self.verify(&job).await;
                }
                () = until(drill_next), if drill_next.is_some() => {
                    if let Some(slot) = drill_next {
                        drill_after = slot;
                        Box::pin(self.drill(&job, slot)).await;
                    }
                }
            }
        }
    }

    fn guard(&self, job: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.run_guards
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(job.to_owned())
            .or_default()
            .clone()
    }

    /// Re-reads the configuration file; the old one stays in force when the
    /// new one is invalid.
    fn reload(&self) -> Result<()> {
        let config = Config::load(&self.config_path)?;
        let notifier = Notifier::from_config(&config, Arc::clone(&self.status))?;
        let token = api_token(&config)?;
        let old = self.config();
        if old.daemon.listen != config.daemon.listen
            || old.daemon.max_concurrent_jobs != config.daemon.max_concurrent_jobs
        {
            tracing::warn!("Changes of daemon.listen and daemon.max_concurrent_jobs take effect at the next start.");
        }
        if old.daemon.tls != config.daemon.tls {
            tracing::warn!("Changes of daemon.tls take effect at the next start.");
        }
        write(&self.notifier, Arc::new(notifier));
        self.status.set_api_token(token);
        self.status.set_read_token(read_token(&config)?);
        self.status.set_users(config.daemon.users.clone());
        self.status.set_page_access(config.daemon.status_page);
        write(&self.config, Arc::new(config));
        Ok(())
    }
}

fn read_token(config: &Config) -> Result<Option<backup_ops::secret::SecretString>> {
    Ok(match &config.daemon.read_token {
        Some(r) => Some(r.resolve("daemon.read_token")?),
        None => None,
    })
}

fn api_token(config: &Config) -> Result<Option<backup_ops::secret::SecretString>> {
    Ok(match &config.daemon.api_token {
        Some(r) => Some(r.resolve("daemon.api_token")?),
        None => None,
    })
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
    let tls = match &config.daemon.tls {
        Some(t) => Some(crate::tls::server_config(t).context("daemon.tls")?),
        None => None,
    };
    let listener = tokio::net::TcpListener::bind(&config.daemon.listen)
        .await
        .with_context(|| format!("listening on {}", config.daemon.listen))?;
    let addr = listener.local_addr()?;
    if let Some(dir) = config.daemon.state_dir() {
        daemon.status.restores.open(&dir).with_context(|| {
            format!(
                "reading the restore requests in {} (daemon.state_dir)",
                dir.display()
            )
        })?;
    }
    let (desk_tx, desk_rx) = mpsc::channel(16);
    daemon.status.restores.set_desk(desk_tx);
    let desk = tokio::spawn(Arc::clone(&daemon).restore_desk(desk_rx));
    tracing::info!(
        address = %addr,
        https = tls.is_some(),
        jobs = config.jobs.len(),
        "backupd started."
    );
    let http_stop = CancellationToken::new();
    let server = tokio::spawn(crate::http::serve(
        listener,
        tls,
        Arc::clone(&daemon.status),
        daemon.audit.clone(),
        http_stop.clone(),
    ));
    daemon.status.set_page_access(config.daemon.status_page);

    let mut generation = daemon.shutdown.child_token();
    let mut handles = daemon.spawn_jobs(&generation);
    daemon.load_history().await;
    daemon.measure_repositories().await;
    let reports = {
        let d = Arc::clone(&daemon);
        tokio::spawn(async move { d.report_loop().await })
    };
    let ages = {
        let d = Arc::clone(&daemon);
        tokio::spawn(async move {
            loop {
                let every = d.config().daemon.check_interval;
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
                        // Drills of the CLI or other daemons, also of jobs
                        // the new configuration adds.
                        let d = Arc::clone(&daemon);
                        handles.push(tokio::spawn(async move {
                            d.forget_seen_drills().await;
                            for name in d.config().repositories.keys() {
                                d.refresh_drills(name).await;
                            }
                        }));
                    }
                    Err(e) => tracing::error!(error = %format!("{e:#}"), "Reloading the configuration failed; keeping the old one."),
                }
            }
        }
    }

    daemon.shutdown.cancel();
    let grace = daemon.config().daemon.shutdown_grace;
    let all = join_all(handles);
    tokio::pin!(all);
    if tokio::time::timeout(grace, &mut all).await.is_err() {
        tracing::warn!(grace = ?grace, "Running backups did not finish within the grace period; abandoning them (no snapshot is written for them).");
        // Abandoned backups stop, release their locks and end their tasks.
        daemon.abandon.cancel();
        let _ = tokio::time::timeout(Duration::from_secs(30), &mut all).await;
    }
    let _ = ages.await;
    let _ = reports.await;
    let _ = desk.await;
    http_stop.cancel();
    let _ = server.await;
    tracing::info!("backupd stopped.");
    Ok(())
}

async fn join_all(handles: Vec<tokio::task::JoinHandle<()>>) {
    for h in handles {
        let _ = h.await;
    }
}
