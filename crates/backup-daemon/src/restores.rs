//! Restore requests made through the daemon's API: what was asked, the
//! plan computed when it was asked, who approved, and the one state
//! machine every request follows ([`RestoreRequest::apply`]), kept in a
//! [`RequestBook`] that is written to the daemon's state directory after
//! every change, so that a restart loses no request.
//!
//! ```text
//!  pending ──approve (enough)──▶ approved ──start──▶ running ──finish──▶ succeeded | failed
//!     │  └─deny──▶ denied
//!     └──expire (now ≥ expires_at)──▶ expired
//! ```
//!
//! A request of a job that is not `protected`, into no protected
//! `[targets.NAME]`, needs one person, the requester, and is created
//! `approved`. A protected job's request, or one into a protected target,
//! needs `approvals` people (the most of the two): the requester and `approvals - 1` others, each
//! once; the requester never approves their own request. Every state but
//! `pending`, `approved` and `running` is final. A daemon that stops while
//! a restore runs finds it `running` at the next start and fails it (the
//! target is in an unknown state; nothing is retried behind anyone's back);
//! an `approved` request that had not started yet is started.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

/// What a restore request asks for: the body of `POST /api/restores`, the
/// options of `backup restore`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RestoreAsk {
    /// The job whose snapshots are restored (and whose `protected` and
    /// `approvals` apply).
    pub job: String,
    /// A snapshot id, a unique prefix or `latest` (the default).
    pub snapshot: Option<String>,
    /// A point in time (RFC 3339), as `--at`.
    pub at: Option<DateTime<Utc>>,
    /// The target URL, without a password (the daemon uses its own
    /// credentials); without one, the job's own source.
    pub to: Option<String>,
    /// Only these (tables, collections, paths), as `--include`.
    pub include: Vec<String>,
    /// Not these, as `--exclude`.
    pub exclude: Vec<String>,
    /// Replace what the target holds (`--drop`). Must be given explicitly
    /// for a restore over existing data; a safety backup of what it
    /// replaces is taken first.
    pub drop: bool,
}

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum RequestState {
    /// Waiting for approvals.
    Pending,
    /// Approved by enough people; about to run.
    Approved,
    /// The daemon is restoring.
    Running,
    /// The restore ended well (final).
    Succeeded,
    /// The restore failed (final).
    Failed,
    /// An approver said no (final).
    Denied,
    /// Nobody approved in time (final).
    Expired,
}

impl RequestState {
    /// How the state is named in the API and on the status page.
    pub fn as_str(self) -> &'static str {
        match self {
            RequestState::Pending => "pending",
            RequestState::Approved => "approved",
            RequestState::Running => "running",
            RequestState::Succeeded => "succeeded",
            RequestState::Failed => "failed",
            RequestState::Denied => "denied",
            RequestState::Expired => "expired",
        }
    }

    /// Whether nothing more happens to a request in this state.
    pub fn is_final(self) -> bool {
        !matches!(
            self,
            RequestState::Pending | RequestState::Approved | RequestState::Running
        )
    }
}

/// Who did something to a request, and when.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    /// The daemon identity (or, for the executor, `backupd` with the OS
    /// user and host).
    pub by: String,
    /// When.
    pub at: DateTime<Utc>,
}

/// The plan of a request: the restore's `--dry-run` output, computed when
/// the request was made, so approvers see what they approve.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    /// The snapshot the restore takes (full id).
    pub snapshot: String,
    /// The headline (`would restore snapshot ... to ...`).
    pub summary: String,
    /// The dry run's lines (per database, per table, warnings).
    pub lines: Vec<String>,
}

/// A restore request with everything that happened to it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RestoreRequest {
    /// `r-` and 8 hex digits.
    pub id: String,
    /// What was asked.
    pub ask: RestoreAsk,
    /// The target, without credentials.
    pub target: String,
    /// The job's repository.
    pub repository: String,
    /// Who asked.
    pub requested: Signature,
    /// When it expires unless approved.
    pub expires_at: DateTime<Utc>,
    /// People needed, the requester included (1: runs at once): the most
    /// the job and the protected targets it writes into ask for.
    pub approvals_needed: u32,
    /// The protected `[targets.NAME]` the restore writes into (their
    /// approvals count even when the job is not protected).
    #[serde(default)]
    pub protected_targets: Vec<String>,
    /// Who approved, in order (the requester is not listed).
    pub approvals: Vec<Signature>,
    /// Who denied it.
    pub denied: Option<Signature>,
    /// Where it is.
    pub state: RequestState,
    /// The dry run made at request time.
    pub plan: Plan,
    /// Who ran it (`backupd` as OS user and host) and when it started.
    pub executed: Option<Signature>,
    /// When it ended (ran, was denied or expired).
    pub finished: Option<DateTime<Utc>>,
    /// The restore report (JSON of `backup restore --json`).
    pub report: Option<serde_json::Value>,
    /// How far the restore got: live while it runs, the last count once
    /// it ended.
    #[serde(default)]
    pub progress: Option<RestoreProgress>,
    /// Why it failed.
    pub error: Option<String>,
}

/// A step of the state machine.
#[derive(Debug, Clone)]
pub enum Step {
    /// An admin approves.
    Approve(String),
    /// An admin denies.
    Deny(String),
    /// The clock: a pending request past its expiry expires.
    Expire,
    /// The daemon starts the restore, as `executor`.
    Start(String),
    /// The restore ended: its report, or why it failed.
    Finish(Result<serde_json::Value, String>),
}

/// Why a step was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StepError {
    /// The request is not in a state the step applies to.
    #[error("the request is {0}, not {1}")]
    WrongState(&'static str, &'static str),
    /// The requester tried to approve their own request.
    #[error("`{0}` asked for this restore and cannot approve it: another admin must")]
    OwnRequest(String),
    /// The same identity approved twice.
    #[error("`{0}` approved this request already: another admin must")]
    AlreadyApproved(String),
    /// The request expired before the step (it is now `expired`).
    #[error("the request expired at {0}")]
    Expired(DateTime<Utc>),
}

impl RestoreRequest {
    /// The identities who approved, the requester first: the people the
    /// request counts.
    pub fn people(&self) -> Vec<&str> {
        std::iter::once(self.requested.by.as_str())
            .chain(self.approvals.iter().map(|a| a.by.as_str()))
            .collect()
    }

    /// The one state machine: applies `step` at `now` and returns the new
    /// state. Approving or denying a pending request past its expiry
    /// expires it and is refused with [`StepError::Expired`]; every other
    /// refusal leaves the request unchanged.
    ///
    /// # Errors
    ///
    /// A [`StepError`] saying why the step does not apply.
    pub fn apply(&mut self, step: Step, now: DateTime<Utc>) -> Result<RequestState, StepError> {
        use RequestState as S;
        let want = |state: S, wanted: S| {
            if state == wanted {
                Ok(())
            } else {
                Err(StepError::WrongState(state.as_str(), wanted.as_str()))
            }
        };
        match step {
            Step::Approve(who) => {
                want(self.state, S::Pending)?;
                self.expire_if_due(now)?;
                if who == self.requested.by {
                    return Err(StepError::OwnRequest(who));
                }
                if self.approvals.iter().any(|a| a.by == who) {
                    return Err(StepError::AlreadyApproved(who));
                }
                self.approvals.push(Signature { by: who, at: now });
                if self.people().len() >= self.approvals_needed as usize {
                    self.state = S::Approved;
                }
            }
            Step::Deny(who) => {
                want(self.state, S::Pending)?;
                self.expire_if_due(now)?;
                self.denied = Some(Signature { by: who, at: now });
                self.state = S::Denied;
                self.finished = Some(now);
            }
            Step::Expire => {
                want(self.state, S::Pending)?;
                if now >= self.expires_at {
                    self.state = S::Expired;
                    self.finished = Some(now);
                }
            }
            Step::Start(executor) => {
                want(self.state, S::Approved)?;
                self.executed = Some(Signature {
                    by: executor,
                    at: now,
                });
                self.state = S::Running;
            }
            Step::Finish(outcome) => {
                want(self.state, S::Running)?;
                self.finished = Some(now);
                match outcome {
                    Ok(report) => {
                        self.report = Some(report);
                        self.state = S::Succeeded;
                    }
                    Err(e) => {
                        self.error = Some(e);
                        self.state = S::Failed;
                    }
                }
            }
        }
        Ok(self.state)
    }

    fn expire_if_due(&mut self, now: DateTime<Utc>) -> Result<(), StepError> {
        if now >= self.expires_at {
            self.state = RequestState::Expired;
            self.finished = Some(now);
            return Err(StepError::Expired(self.expires_at));
        }
        Ok(())
    }
}

/// A new request id: `r-` and 8 random hex digits.
pub fn new_id() -> String {
    let mut b = [0u8; 4];
    backup_core::util::fill_random(&mut b);
    format!("r-{}", hex::encode(b))
}

/// What the API asks the daemon's restore desk (the task that plans, runs
/// and records restores), with where to send the answer.
#[derive(Debug)]
pub enum DeskCommand {
    /// Make a request (plan it; run it at once when no approval is
    /// needed).
    Create {
        /// What is asked.
        ask: RestoreAsk,
        /// Who asks.
        by: String,
        /// The request made, or why not (status code and message).
        reply: oneshot::Sender<Result<RestoreRequest, (u16, String)>>,
    },
    /// Approve or deny a request.
    Decide {
        /// The request id.
        id: String,
        /// Who decides.
        by: String,
        /// Approve (`true`) or deny.
        approve: bool,
        /// The request afterwards, or why not (status code and message).
        reply: oneshot::Sender<Result<RestoreRequest, (u16, String)>>,
    },
}

/// How far a restore got, as `GET /api/restores/ID` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RestoreProgress {
    /// `safety` (the safety backup of what the restore replaces) or
    /// `restore`.
    pub phase: String,
    /// Bytes done in this phase.
    pub bytes_done: u64,
    /// Bytes the phase has in all, once the target knows.
    pub bytes_total: Option<u64>,
    /// Items (files, tables, collections, keys) done in this phase.
    pub items: u64,
}

/// The live count of a running restore: the [`backup_core::progress::Progress`]
/// its target reports to, read by the API without waiting for it.
#[derive(Debug, Default)]
pub struct LiveProgress {
    phase: Mutex<String>,
    done: AtomicU64,
    /// `u64::MAX` while unknown.
    total: AtomicU64,
    items: AtomicU64,
}

impl LiveProgress {
    /// Starts counting a phase from zero.
    pub fn begin(&self, phase: &str) {
        phase.clone_into(&mut lock(&self.phase));
        self.done.store(0, Ordering::Relaxed);
        self.total.store(u64::MAX, Ordering::Relaxed);
        self.items.store(0, Ordering::Relaxed);
    }

    /// The count now.
    pub fn snapshot(&self) -> RestoreProgress {
        let total = self.total.load(Ordering::Relaxed);
        RestoreProgress {
            phase: lock(&self.phase).clone(),
            bytes_done: self.done.load(Ordering::Relaxed),
            bytes_total: (total != u64::MAX).then_some(total),
            items: self.items.load(Ordering::Relaxed),
        }
    }
}

impl backup_core::progress::Progress for LiveProgress {
    fn set_total(&self, bytes: u64) {
        self.total.store(bytes, Ordering::Relaxed);
    }

    fn add_bytes(&self, n: u64) {
        self.done.fetch_add(n, Ordering::Relaxed);
    }

    fn add_item(&self) {
        self.items.fetch_add(1, Ordering::Relaxed);
    }
}

/// Every restore request the daemon knows, by id, written to
/// `restore-requests.json` in the state directory after each change
/// (to a temporary file, synced, then renamed over the old one).
#[derive(Debug, Default)]
pub struct RequestBook {
    path: Mutex<Option<PathBuf>>,
    requests: Mutex<BTreeMap<String, RestoreRequest>>,
    desk: Mutex<Option<mpsc::Sender<DeskCommand>>>,
    /// The counts of running restores, kept in memory only (they change
    /// too often to write the book each time).
    live: Mutex<BTreeMap<String, Arc<LiveProgress>>>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl RequestBook {
    /// Reads the requests kept in `dir` (none when the file is missing)
    /// and keeps writing there.
    ///
    /// # Errors
    ///
    /// An unreadable or damaged file: the daemon must not start and forget
    /// pending requests silently.
    pub fn open(&self, dir: &Path) -> std::io::Result<()> {
        let path = dir.join("restore-requests.json");
        let loaded: BTreeMap<String, RestoreRequest> = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| {
                std::io::Error::other(format!("{} is damaged: {e}", path.display()))
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => BTreeMap::new(),
            Err(e) => return Err(e),
        };
        *lock(&self.requests) = loaded;
        *lock(&self.path) = Some(path);
        Ok(())
    }

    /// Every request, newest first, running ones with their live count.
    pub fn list(&self) -> Vec<RestoreRequest> {
        let mut all: Vec<_> = lock(&self.requests)
            .values()
            .cloned()
            .map(|r| self.with_live(r))
            .collect();
        all.sort_by_key(|r| std::cmp::Reverse(r.requested.at));
        all
    }

    /// One request, with its live count while it runs.
    pub fn get(&self, id: &str) -> Option<RestoreRequest> {
        let r = lock(&self.requests).get(id).cloned()?;
        Some(self.with_live(r))
    }

    fn with_live(&self, mut r: RestoreRequest) -> RestoreRequest {
        if let Some(live) = lock(&self.live).get(&r.id) {
            r.progress = Some(live.snapshot());
        }
        r
    }

    /// A live count for the restore of request `id`, shown by
    /// [`RequestBook::get`] until [`RequestBook::untrack`].
    pub fn track(&self, id: &str) -> Arc<LiveProgress> {
        let live = Arc::new(LiveProgress::default());
        lock(&self.live).insert(id.to_owned(), Arc::clone(&live));
        live
    }

    /// Ends the live count of `id`, keeping its last value in the request
    /// (written with the request's next change).
    pub fn untrack(&self, id: &str) {
        let Some(live) = lock(&self.live).remove(id) else {
            return;
        };
        if let Some(r) = lock(&self.requests).get_mut(id) {
            r.progress = Some(live.snapshot());
        }
    }

    /// Adds (or replaces) a request and writes the book.
    ///
    /// # Errors
    ///
    /// The book cannot be written (the request is kept in memory).
    pub fn put(&self, request: RestoreRequest) -> std::io::Result<()> {
        let mut all = lock(&self.requests);
        all.insert(request.id.clone(), request);
        self.save(&all)
    }

    /// Applies `step` to the request `id` at `now` and writes the book
    /// when it changed; returns the request afterwards. `None` for an
    /// unknown id.
    ///
    /// # Errors
    ///
    /// The step's refusal; a write error is logged, not returned (the
    /// state in memory is the truth while the daemon runs).
    pub fn apply(
        &self,
        id: &str,
        step: Step,
        now: DateTime<Utc>,
    ) -> Option<Result<RestoreRequest, StepError>> {
        let mut all = lock(&self.requests);
        let r = all.get_mut(id)?;
        let before = r.clone();
        let out = r.apply(step, now).map(|_| r.clone());
        if *r != before {
            if let Err(e) = self.save(&all) {
                tracing::error!(error = %e, "Cannot write the restore requests.");
            }
        }
        Some(out)
    }

    fn save(&self, all: &BTreeMap<String, RestoreRequest>) -> std::io::Result<()> {
        use std::io::Write as _;
        let Some(path) = lock(&self.path).clone() else {
            return Ok(());
        };
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let tmp = path.with_extension("json.tmp");
        let json = serde_json::to_vec_pretty(all).map_err(std::io::Error::other)?;
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(&json)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    }

    /// Connects the API to the restore desk.
    pub fn set_desk(&self, desk: mpsc::Sender<DeskCommand>) {
        *lock(&self.desk) = Some(desk);
    }

    /// The restore desk, once the daemon runs one.
    pub fn desk(&self) -> Option<mpsc::Sender<DeskCommand>> {
        lock(&self.desk).clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request(needed: u32) -> RestoreRequest {
        let now = Utc::now();
        RestoreRequest {
            id: new_id(),
            ask: RestoreAsk {
                job: "pg".into(),
                ..RestoreAsk::default()
            },
            target: "postgres://h/db".into(),
            repository: "main".into(),
            requested: Signature {
                by: "otto".into(),
                at: now,
            },
            expires_at: now + chrono::Duration::hours(4),
            approvals_needed: needed,
            protected_targets: Vec::new(),
            approvals: Vec::new(),
            denied: None,
            state: if needed <= 1 {
                RequestState::Approved
            } else {
                RequestState::Pending
            },
            plan: Plan::default(),
            executed: None,
            finished: None,
            report: None,
            progress: None,
            error: None,
        }
    }

    #[test]
    fn progress_is_live_while_running_and_kept_after() {
        let book = RequestBook::default();
        let mut r = request(1);
        r.state = RequestState::Running;
        let id = r.id.clone();
        book.put(r).unwrap();
        let live = book.track(&id);
        live.begin("restore");
        backup_core::progress::Progress::set_total(&*live, 1000);
        backup_core::progress::Progress::add_bytes(&*live, 250);
        backup_core::progress::Progress::add_item(&*live);
        let p = book.get(&id).unwrap().progress.unwrap();
        assert_eq!(
            p,
            RestoreProgress {
                phase: "restore".into(),
                bytes_done: 250,
                bytes_total: Some(1000),
                items: 1,
            }
        );
        assert_eq!(book.list()[0].progress.as_ref(), Some(&p));
        backup_core::progress::Progress::add_bytes(&*live, 750);
        book.untrack(&id);
        let kept = book.get(&id).unwrap().progress.unwrap();
        assert_eq!((kept.bytes_done, kept.bytes_total), (1000, Some(1000)));
        // A new phase counts from zero.
        live.begin("safety");
        assert_eq!(live.snapshot().bytes_done, 0);
        assert_eq!(live.snapshot().bytes_total, None);
    }

    #[test]
    fn two_person_rule_never_the_requester_never_twice() {
        let now = Utc::now();
        let mut r = request(3);
        assert_eq!(
            r.apply(Step::Approve("otto".into()), now),
            Err(StepError::OwnRequest("otto".into()))
        );
        assert_eq!(
            r.apply(Step::Approve("ada".into()), now),
            Ok(RequestState::Pending)
        );
        assert_eq!(
            r.apply(Step::Approve("ada".into()), now),
            Err(StepError::AlreadyApproved("ada".into()))
        );
        assert_eq!(
            r.apply(Step::Approve("bea".into()), now),
            Ok(RequestState::Approved)
        );
        assert_eq!(r.people(), ["otto", "ada", "bea"]);
        // Only approved requests start, only running ones finish.
        assert!(r.apply(Step::Deny("cid".into()), now).is_err());
        assert_eq!(
            r.apply(Step::Start("backupd".into()), now),
            Ok(RequestState::Running)
        );
        assert_eq!(
            r.apply(Step::Finish(Err("boom".into())), now),
            Ok(RequestState::Failed)
        );
        assert!(r.state.is_final());
        assert!(r.apply(Step::Start("backupd".into()), now).is_err());
    }

    #[test]
    fn expiry_and_denial_are_final() {
        let mut r = request(2);
        let later = r.expires_at;
        // Before the expiry the clock changes nothing.
        assert_eq!(
            r.apply(Step::Expire, later - chrono::Duration::seconds(1)),
            Ok(RequestState::Pending)
        );
        assert_eq!(
            r.apply(Step::Approve("ada".into()), later),
            Err(StepError::Expired(later))
        );
        assert_eq!(r.state, RequestState::Expired);
        assert!(r.apply(Step::Start("backupd".into()), later).is_err());

        let mut d = request(2);
        assert_eq!(
            d.apply(Step::Deny("ada".into()), Utc::now()),
            Ok(RequestState::Denied)
        );
        assert!(d.apply(Step::Approve("bea".into()), Utc::now()).is_err());
        assert_eq!(request(1).state, RequestState::Approved);
    }

    #[test]
    fn the_book_survives_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let book = RequestBook::default();
        book.open(dir.path()).unwrap();
        let r = request(2);
        let id = r.id.clone();
        book.put(r).unwrap();
        book.apply(&id, Step::Approve("ada".into()), Utc::now())
            .unwrap()
            .unwrap();
        let again = RequestBook::default();
        again.open(dir.path()).unwrap();
        let back = again.get(&id).unwrap();
        assert_eq!(back.state, RequestState::Approved);
        assert_eq!(back.people(), ["otto", "ada"]);
        std::fs::write(dir.path().join("restore-requests.json"), b"{oops").unwrap();
        assert!(RequestBook::default().open(dir.path()).is_err());
    }
}
