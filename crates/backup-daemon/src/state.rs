//! What the daemon knows and shows: per-job state, repository sizes,
//! notification counters, the run triggers and the API token. The
//! scheduler writes it; the HTTP API and the metrics read it.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError, RwLock};

use backup_ops::access::Identity;
use backup_ops::config::{StatusPage, UserConfig};
use backup_ops::report::{AuditLine, JobHistory};
use backup_ops::secret::SecretString;
use chrono::{DateTime, Utc};
use serde::Serialize;
use tokio::sync::mpsc;

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

/// A job's continuous capture (PostgreSQL WAL), as the daemon sees it.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CaptureState {
    /// What is captured (`postgres-wal`).
    pub kind: String,
    /// Whether the receiver is connected and streaming.
    pub streaming: bool,
    /// The timeline being received.
    pub timeline: u32,
    /// The server's WAL position at the last report.
    pub server_position: u64,
    /// The end of what is stored.
    pub stored_position: u64,
    /// Bytes the server has written that are not stored yet.
    pub lag_bytes: u64,
    /// Seconds since the stored WAL last caught up with the server (0
    /// when it is caught up).
    pub lag_seconds: f64,
    /// When WAL was last stored.
    pub last_stored: Option<DateTime<Utc>>,
    /// Where the restorable window begins: the end of the oldest base
    /// backup from which the WAL reaches the present without a gap.
    pub window_start: Option<DateTime<Utc>>,
    /// Where it ends: the newest stored WAL.
    pub window_end: Option<DateTime<Utc>>,
    /// Gaps recorded since the daemon started.
    pub gaps_total: u64,
    /// Times the receiver stopped and was started again.
    pub restarts_total: u64,
    /// Why it last stopped.
    pub last_error: Option<String>,
    /// Whether a lag notice was sent and the lag has not recovered.
    #[serde(skip)]
    pub lag_alerted: bool,
    /// When the stored WAL was last caught up.
    #[serde(skip)]
    pub caught_up_at: Option<DateTime<Utc>>,
}

/// The last drill of a job.
#[derive(Debug, Clone, Serialize)]
pub struct DrillState {
    /// When it ended.
    pub finished: DateTime<Utc>,
    /// Whether it passed (restored, started, checks passed, RTO within
    /// the limit).
    pub ok: bool,
    /// Seconds until the scratch copy was usable.
    pub rto_seconds: Option<f64>,
    /// Age of the restored point.
    pub rpo_seconds: Option<f64>,
    /// Why it failed.
    pub error: Option<String>,
    /// The drill record in the repository.
    pub record: Option<String>,
}

impl DrillState {
    /// The last drill as its record (`id`, when stored) tells it.
    pub fn of_record(id: Option<backup_core::Id>, r: &backup_core::drill::DrillRecord) -> Self {
        let failed_check = r
            .checks
            .iter()
            .find(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail));
        DrillState {
            finished: r.finished,
            ok: r.ok,
            rto_seconds: r.rto_seconds,
            rpo_seconds: r.rpo_seconds,
            error: r.error.clone().or(failed_check),
            record: id.map(|i| i.to_hex()),
        }
    }
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
    /// Whether a run is in progress: its backup, then its retention and
    /// prune.
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
    /// Scheduled slots (of backups, verifies and drills) that passed
    /// unrun while the job was busy past the next one.
    pub slots_missed_total: u64,
    /// The last verification.
    pub last_verify: Option<VerifyRecord>,
    /// Maximum acceptable age in seconds.
    pub max_age_seconds: Option<u64>,
    /// Whether a missed-backup notice was sent and no success since.
    pub missed_alerted: bool,
    /// Continuous capture, for jobs that run one.
    pub capture: Option<CaptureState>,
    /// Next scheduled drill.
    pub next_drill: Option<DateTime<Utc>>,
    /// The drill's RTO limit in seconds.
    pub max_rto_seconds: Option<f64>,
    /// Whether a drill is in progress.
    pub drilling: bool,
    /// The last drill.
    pub last_drill: Option<DrillState>,
    /// When the last drill that passed ended.
    pub drill_last_success: Option<DateTime<Utc>>,
}

/// Notifications delivered and given up on, across reloads.
#[derive(Debug, Default)]
pub struct NotifyCounters {
    /// Delivered.
    pub delivered: AtomicU64,
    /// Given up on after every retry.
    pub failed: AtomicU64,
}

impl NotifyCounters {
    /// Notifications delivered.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Notifications given up on.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }
}

/// Why a run request was not queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TriggerError {
    /// No job of that name.
    NoSuchJob(String),
    /// A run of the job is queued already.
    AlreadyQueued,
}

/// The history the status page and the report show: per job, and the
/// newest audit records.
#[derive(Debug, Default, Clone)]
pub struct HistoryStore {
    /// Per job.
    pub jobs: BTreeMap<String, JobHistory>,
    /// The newest audit records of every repository, newest first.
    pub audit: Vec<AuditLine>,
}

/// The daemon's shared, observable state.
#[derive(Debug, Default)]
pub struct Status {
    jobs: Mutex<BTreeMap<String, JobState>>,
    repo_sizes: Mutex<BTreeMap<String, u64>>,
    repo_space: Mutex<BTreeMap<String, (u64, u64)>>,
    history: Mutex<HistoryStore>,
    triggers: Mutex<HashMap<String, mpsc::Sender<Option<String>>>>,
    api_token: RwLock<Option<SecretString>>,
    read_token: RwLock<Option<SecretString>>,
    users: RwLock<Vec<UserConfig>>,
    /// Tokens already proven, by their SHA-256: one Argon2 verification
    /// per token and configuration, not one per request.
    proven: Mutex<HashMap<[u8; 32], Identity>>,
    page_access: RwLock<Option<StatusPage>>,
    /// Notification counters.
    pub notifications: NotifyCounters,
    /// Restore requests made through the API.
    pub restores: crate::restores::RequestBook,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Status {
    /// A copy of every job's state.
    pub fn job_states(&self) -> Vec<JobState> {
        lock(&self.jobs).values().cloned().collect()
    }

    /// One job's state.
    pub fn job(&self, name: &str) -> Option<JobState> {
        lock(&self.jobs).get(name).cloned()
    }

    /// Changes a job's state (nothing when the job is unknown).
    pub fn update(&self, job: &str, f: impl FnOnce(&mut JobState)) {
        if let Some(s) = lock(&self.jobs).get_mut(job) {
            f(s);
        }
    }

    /// Replaces the set of jobs, keeping the state of those that stay;
    /// returns the trigger receivers of the new set, by job.
    pub fn replace_jobs(
        &self,
        jobs: impl IntoIterator<Item = JobState>,
    ) -> HashMap<String, mpsc::Receiver<Option<String>>> {
        let mut states = lock(&self.jobs);
        let old = std::mem::take(&mut *states);
        let mut triggers = lock(&self.triggers);
        triggers.clear();
        let mut receivers = HashMap::new();
        for mut st in jobs {
            if let Some(prev) = old.get(&st.name) {
                let fresh = st.clone();
                st = prev.clone();
                st.repository = fresh.repository;
                st.schedule = fresh.schedule;
                st.max_age_seconds = fresh.max_age_seconds;
                st.max_rto_seconds = fresh.max_rto_seconds;
            }
            let (tx, rx) = mpsc::channel(1);
            triggers.insert(st.name.clone(), tx);
            receivers.insert(st.name.clone(), rx);
            states.insert(st.name.clone(), st);
        }
        receivers
    }

    /// Asks for a run of `job`, on behalf of the API identity `by` (who
    /// the run's audit record names; `None`: the daemon itself). Only one
    /// run is queued at a time, so the identity of the queued run is the
    /// one whose request was accepted.
    ///
    /// # Errors
    ///
    /// When there is no such job or a run is queued already.
    pub fn trigger(&self, job: &str, by: Option<&str>) -> Result<(), TriggerError> {
        let tx = lock(&self.triggers).get(job).cloned();
        match tx {
            Some(tx) => tx
                .try_send(by.map(str::to_owned))
                .map_err(|_| TriggerError::AlreadyQueued),
            None => Err(TriggerError::NoSuchJob(job.to_owned())),
        }
    }

    /// Repository sizes by name.
    pub fn repo_sizes(&self) -> BTreeMap<String, u64> {
        lock(&self.repo_sizes).clone()
    }

    /// Records a repository's size.
    pub fn set_repo_size(&self, name: &str, size: u64) {
        lock(&self.repo_sizes).insert(name.to_owned(), size);
    }

    /// Free and total bytes per repository (file system, or quota).
    pub fn repo_space(&self) -> BTreeMap<String, (u64, u64)> {
        lock(&self.repo_space).clone()
    }

    /// Records a repository's free and total bytes.
    pub fn set_repo_space(&self, name: &str, free: u64, total: u64) {
        lock(&self.repo_space).insert(name.to_owned(), (free, total));
    }

    /// Reads or changes the history.
    pub fn with_history<T>(&self, f: impl FnOnce(&mut HistoryStore) -> T) -> T {
        f(&mut lock(&self.history))
    }

    /// Changes one job's history (created empty when new).
    pub fn update_history(&self, job: &str, f: impl FnOnce(&mut JobHistory)) {
        let mut h = lock(&self.history);
        let entry = h.jobs.entry(job.to_owned()).or_insert_with(|| JobHistory {
            name: job.to_owned(),
            ..JobHistory::default()
        });
        f(entry);
    }

    /// Adds an audit line to the newest ones.
    pub fn push_audit(&self, line: AuditLine) {
        let mut h = lock(&self.history);
        h.audit.insert(0, line);
        h.audit.truncate(backup_ops::report::AUDIT_LINES);
    }

    /// The API token, if the run trigger is enabled.
    pub fn api_token(&self) -> Option<SecretString> {
        self.api_token
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sets the API token.
    pub fn set_api_token(&self, token: Option<SecretString>) {
        *self
            .api_token
            .write()
            .unwrap_or_else(PoisonError::into_inner) = token;
    }

    /// The read-only token of the status page.
    pub fn read_token(&self) -> Option<SecretString> {
        self.read_token
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sets the read-only token.
    pub fn set_read_token(&self, token: Option<SecretString>) {
        *self
            .read_token
            .write()
            .unwrap_or_else(PoisonError::into_inner) = token;
    }

    /// The configured users.
    pub fn users(&self) -> Vec<UserConfig> {
        self.users
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// Sets the configured users (and forgets every proven token).
    pub fn set_users(&self, users: Vec<UserConfig>) {
        *self.users.write().unwrap_or_else(PoisonError::into_inner) = users;
        lock(&self.proven).clear();
    }

    /// The identity a token was proven to be, by the token's SHA-256.
    pub fn proven(&self, digest: &[u8; 32]) -> Option<Identity> {
        lock(&self.proven).get(digest).cloned()
    }

    /// Remembers that the token with SHA-256 `digest` is `identity`.
    pub fn remember(&self, digest: [u8; 32], identity: Identity) {
        lock(&self.proven).insert(digest, identity);
    }

    /// Who may see the status page (`token` until configured).
    pub fn page_access(&self) -> StatusPage {
        self.page_access
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .unwrap_or(StatusPage::Token)
    }

    /// Sets who may see the status page.
    pub fn set_page_access(&self, access: StatusPage) {
        *self
            .page_access
            .write()
            .unwrap_or_else(PoisonError::into_inner) = Some(access);
    }
}
