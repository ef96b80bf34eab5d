//! The restore desk: the task that plans restore requests made through
//! the API, records who asked, approved, denied and ran them, expires the
//! ones nobody approved in time and runs the approved ones with the
//! daemon's own credentials. The states and their rules are
//! [`crate::restores`]'s; this file only drives them.

use std::sync::Arc;

use backup_core::progress::Progress;
use backup_core::snapshot::SnapshotFilter;
use backup_core::target::RestoreOptions;
use backup_ops::config::{Event, Job};
use backup_ops::restore::{open_target, restore, RestoreRequest as Restore};
use backup_sources::TargetSpec;
use chrono::Utc;
use tokio::sync::mpsc;

use super::{report, Daemon};
use crate::restores::{
    new_id, DeskCommand, LiveProgress, Plan, RequestState, RestoreAsk, RestoreRequest, Signature,
    Step, StepError,
};

/// An answer to the API: the request, or a status code and a message.
type Answer = Result<RestoreRequest, (u16, String)>;

/// The daemon as the executor of restores: `backupd`, with the OS user and
/// host it runs as.
fn executor() -> String {
    format!(
        "backupd ({}@{})",
        backup_core::util::username(),
        backup_core::util::hostname()
    )
}

/// The feedback of a daemon-run restore: unattended, counting into the
/// request's live progress (`GET /api/restores/ID`).
struct Tracked(Arc<LiveProgress>);

impl backup_ops::Feedback for Tracked {
    fn progress(&self, phase: &'static str, _noun: &'static str) -> Arc<dyn Progress> {
        self.0.begin(phase);
        Arc::clone(&self.0) as Arc<dyn Progress>
    }
}

/// What the audit trail says about a request.
fn audit_details(r: &RestoreRequest) -> serde_json::Value {
    serde_json::json!({
        "request": r.id,
        "job": r.ask.job,
        "target": r.target,
        "snapshot": r.plan.snapshot,
        "drop": r.ask.drop,
        "state": r.state.as_str(),
        "requested_by": r.requested.by,
        "approved_by": r.approvals.iter().map(|a| a.by.as_str()).collect::<Vec<_>>(),
        "denied_by": r.denied.as_ref().map(|d| d.by.as_str()),
        "executed_by": r.executed.as_ref().map(|e| e.by.as_str()),
        "approvals_needed": r.approvals_needed,
        "protected_targets": r.protected_targets,
    })
}

impl Daemon {
    /// Serves the API's restore commands until shutdown, and expires
    /// pending requests every `check_interval`. At start, a request found
    /// `running` (the daemon stopped during it) is failed and one found
    /// `approved` is started.
    pub(super) async fn restore_desk(self: Arc<Self>, mut rx: mpsc::Receiver<DeskCommand>) {
        for r in self.status.restores.list() {
            match r.state {
                RequestState::Running => {
                    self.finish_request(
                        &r.id,
                        Err("backupd stopped while this restore ran: the target may be partly restored; check it and request the restore again".to_owned()),
                    )
                    .await;
                }
                RequestState::Approved => self.start_request(r.id.clone()),
                _ => {}
            }
        }
        loop {
            let every = self.config().daemon.check_interval;
            tokio::select! {
                () = self.shutdown.cancelled() => break,
                cmd = rx.recv() => match cmd {
                    None => break,
                    Some(DeskCommand::Create { ask, by, reply }) => {
                        let _ = reply.send(Box::pin(self.create_request(ask, by)).await);
                    }
                    Some(DeskCommand::Decide { id, by, approve, reply }) => {
                        let _ = reply.send(self.decide(&id, by, approve).await);
                    }
                },
                () = tokio::time::sleep(every) => self.expire_requests().await,
            }
        }
    }

    /// The target and the restore options of `ask` on `job`: its own
    /// source (with the job's password) when no target is named.
    fn restore_inputs(
        job: &Job,
        ask: &RestoreAsk,
        snapshot: &str,
        dry_run: bool,
        lock_wait: std::time::Duration,
    ) -> Result<(TargetSpec, Restore), (u16, String)> {
        let bad = |m: String| (400, m);
        let url = match &ask.to {
            Some(to) if backup_core::redact::has_password(to) => {
                return Err(bad(
                    "the target carries a password: the daemon restores with its own credentials; name the target without one, or leave `to` out to restore into the job's source".to_owned(),
                ))
            }
            Some(to) => to.clone(),
            None => job.source_url().map_err(|e| bad(e.to_string()))?,
        };
        let spec = TargetSpec::new(url).map_err(|e| bad(e.to_string()))?;
        let req = Restore {
            snapshot: snapshot.to_owned(),
            filter: SnapshotFilter {
                job: Some(job.name.clone()),
                ..SnapshotFilter::default()
            },
            options: RestoreOptions {
                includes: ask.include.clone(),
                excludes: ask.exclude.clone(),
                drop: ask.drop,
                at: ask.at,
                dry_run,
                ..RestoreOptions::default()
            },
            // Always: the API offers no way to skip the safety backup.
            safety_backup: true,
            // A destructive restore must say so (`drop`), and is approved
            // by its request (and, when protected, by its approvers).
            confirmed: true,
            lock_wait,
            // Thawing archived packs is the CLI's (`restore --cold-wait`);
            // the daemon reads packs as they are (decision 0077).
            cold: None,
        };
        Ok((spec, req))
    }

    /// Restores (or, with `dry_run`, plans) what `ask` asks of `job`'s
    /// repository from `snapshot`. Errors carry the HTTP status they
    /// answer a request with: 400 a refused target or option, 503 the
    /// repository unreachable, 422 the restore itself.
    async fn run_restore(
        &self,
        job: &Job,
        ask: &RestoreAsk,
        snapshot: &str,
        dry_run: bool,
        lock_wait: std::time::Duration,
        feedback: &dyn backup_ops::Feedback,
    ) -> Result<backup_ops::RestoreResult, (u16, String)> {
        let (spec, req) = Self::restore_inputs(job, ask, snapshot, dry_run, lock_wait)?;
        let target = open_target(&spec, &req.options).map_err(|e| (400, report(&e)))?;
        let repo = self
            .repo(&job.repository)
            .await
            .map_err(|e| (503, report(&e)))?;
        Box::pin(restore(&repo, target.as_ref(), &spec, &req, feedback))
            .await
            .map_err(|e| (422, report(&e)))
    }

    /// Plans and records a request; starts it when nobody else must
    /// approve.
    async fn create_request(self: &Arc<Self>, ask: RestoreAsk, by: String) -> Answer {
        let config = self.config();
        if !config.jobs.contains_key(&ask.job) {
            return Err((404, format!("no job named `{}`", ask.job)));
        }
        let job = config.job(&ask.job).map_err(|e| (400, e.to_string()))?;
        let asked = ask.snapshot.clone().unwrap_or_else(|| "latest".to_owned());
        let lock_wait = config.daemon.lock_wait;
        let dry = self
            .run_restore(&job, &ask, &asked, true, lock_wait, &backup_ops::Unattended)
            .await
            .map_err(|(code, m)| match code {
                422 => (422, format!("the restore cannot be planned: {m}")),
                _ => (code, m),
            })?;
        // Opened by the plan above; kept open by the scheduler.
        let repo = self
            .repo(&job.repository)
            .await
            .map_err(|e| (503, report(&e)))?;
        // The target as the request names it (or the job's source), never
        // with a password: which protected targets it writes into.
        let into = ask.to.clone().unwrap_or_else(|| job.source.clone());
        let needs = config.restore_approvals(&job, &into);
        let now = Utc::now();
        let expiry = chrono::Duration::from_std(config.daemon.restore_expiry)
            .unwrap_or(chrono::Duration::hours(4));
        let request = RestoreRequest {
            id: new_id(),
            target: dry.report.target.clone(),
            repository: job.repository.clone(),
            requested: Signature { by, at: now },
            expires_at: now + expiry,
            approvals_needed: needs.needed,
            protected_targets: needs.protected_targets,
            approvals: Vec::new(),
            denied: None,
            state: if needs.needed <= 1 {
                RequestState::Approved
            } else {
                RequestState::Pending
            },
            plan: Plan {
                snapshot: dry.snapshot.id.to_hex(),
                summary: format!(
                    "would restore snapshot {} of job {} to {} ({} bytes){}",
                    dry.snapshot.id.short(),
                    job.name,
                    dry.report.target,
                    dry.report.stats.bytes,
                    if ask.drop {
                        ", replacing what is there (a safety backup is taken first)"
                    } else {
                        ""
                    }
                ),
                lines: dry.report.lines.clone(),
            },
            ask,
            executed: None,
            finished: None,
            report: None,
            progress: None,
            error: None,
        };
        self.status
            .restores
            .put(request.clone())
            .map_err(|e| (500, format!("cannot record the request: {e}")))?;
        tracing::info!(request = %request.id, job = %job.name, identity = %request.requested.by, state = request.state.as_str(), "Restore requested.");
        self.audit_as(
            Some(&repo),
            Some(&request.requested.by),
            "restore-request",
            true,
            audit_details(&request),
        )
        .await;
        let waiting = if request.state == RequestState::Pending {
            format!(
                "; it waits for {} more approval(s) until {}",
                request.approvals_needed - 1,
                request.expires_at.format("%Y-%m-%d %H:%M:%S UTC")
            )
        } else {
            String::new()
        };
        self.notify(
            &job,
            Event::RestoreRequested,
            format!(
                "{} requested restore {} of job {}{waiting}",
                request.requested.by, request.id, job.name
            ),
            request.plan.summary.clone(),
        );
        if request.state == RequestState::Approved {
            self.start_request(request.id.clone());
        }
        Ok(request)
    }

    /// Approves or denies a request; starts it once approved.
    async fn decide(self: &Arc<Self>, id: &str, by: String, approve: bool) -> Answer {
        let step = if approve {
            Step::Approve(by.clone())
        } else {
            Step::Deny(by.clone())
        };
        let outcome = self.status.restores.apply(id, step, Utc::now());
        let Some(outcome) = outcome else {
            return Err((404, format!("no restore request `{id}`")));
        };
        let r = match outcome {
            Ok(r) => r,
            Err(e) => {
                if let StepError::Expired(_) = e {
                    if let Some(r) = self.status.restores.get(id) {
                        self.record_expiry(&r).await;
                    }
                }
                let code = match e {
                    StepError::OwnRequest(_) => 403,
                    _ => 409,
                };
                return Err((code, e.to_string()));
            }
        };
        let repo = self.repo(&r.repository).await.ok();
        let operation = if approve {
            "restore-approve"
        } else {
            "restore-deny"
        };
        self.audit_as(repo.as_ref(), Some(&by), operation, true, audit_details(&r))
            .await;
        tracing::info!(request = %r.id, identity = %by, state = r.state.as_str(), "Restore request decided.");
        if let Ok(job) = self.config().job(&r.ask.job) {
            let verb = if approve { "approved" } else { "denied" };
            self.notify(
                &job,
                Event::RestoreApproved,
                format!("{by} {verb} restore {} of job {}", r.id, job.name),
                format!("state: {}", r.state.as_str()),
            );
        }
        if r.state == RequestState::Approved {
            self.start_request(r.id.clone());
        }
        Ok(r)
    }

    /// Expires every pending request past its expiry.
    async fn expire_requests(&self) {
        let now = Utc::now();
        for r in self.status.restores.list() {
            if r.state != RequestState::Pending || r.expires_at > now {
                continue;
            }
            if let Some(Ok(r)) = self.status.restores.apply(&r.id, Step::Expire, now) {
                if r.state == RequestState::Expired {
                    self.record_expiry(&r).await;
                }
            }
        }
    }

    async fn record_expiry(&self, r: &RestoreRequest) {
        tracing::warn!(request = %r.id, job = %r.ask.job, "A restore request expired unapproved.");
        let repo = self.repo(&r.repository).await.ok();
        self.audit(repo.as_ref(), "restore-expire", false, audit_details(r))
            .await;
        if let Ok(job) = self.config().job(&r.ask.job) {
            self.notify(
                &job,
                Event::RestoreApproved,
                format!("restore {} of job {} expired unapproved", r.id, job.name),
                format!("requested by {}", r.requested.by),
            );
        }
    }

    /// Runs an approved request in its own task.
    fn start_request(self: &Arc<Self>, id: String) {
        let this = Arc::clone(self);
        tokio::spawn(async move { Box::pin(this.run_request(id)).await });
    }

    async fn run_request(self: Arc<Self>, id: String) {
        let Ok(_permit) = Arc::clone(&self.semaphore).acquire_owned().await else {
            return;
        };
        let started = self
            .status
            .restores
            .apply(&id, Step::Start(executor()), Utc::now());
        let Some(Ok(r)) = started else {
            return;
        };
        tracing::info!(request = %r.id, job = %r.ask.job, "Restoring an approved request.");
        let outcome = Box::pin(self.restore_request(&r)).await;
        self.finish_request(&id, outcome).await;
    }

    /// The restore itself: the planned snapshot (or the point asked for)
    /// into the target, a safety backup first when it replaces data.
    async fn restore_request(&self, r: &RestoreRequest) -> Result<serde_json::Value, String> {
        let config = self.config();
        let job = config.job(&r.ask.job).map_err(|e| e.to_string())?;
        let snapshot = if r.ask.at.is_some() {
            r.ask
                .snapshot
                .clone()
                .unwrap_or_else(|| "latest".to_owned())
        } else {
            r.plan.snapshot.clone()
        };
        let tracked = Tracked(self.status.restores.track(&r.id));
        let done = self
            .run_restore(
                &job,
                &r.ask,
                &snapshot,
                false,
                config.daemon.lock_wait,
                &tracked,
            )
            .await;
        self.status.restores.untrack(&r.id);
        let done = done.map_err(|(_, m)| m)?;
        Ok(serde_json::json!({
            "snapshot": done.snapshot.id,
            "safety_backup": done.safety_backup,
            "report": done.report,
            "lines": done.report.lines,
        }))
    }

    /// Ends a running request: records the outcome, audits the restore
    /// (by the daemon, naming requester and approvers) and notifies.
    async fn finish_request(&self, id: &str, outcome: Result<serde_json::Value, String>) {
        let ok = outcome.is_ok();
        let Some(Ok(r)) = self
            .status
            .restores
            .apply(id, Step::Finish(outcome), Utc::now())
        else {
            return;
        };
        let repo = self.repo(&r.repository).await.ok();
        let mut details = audit_details(&r);
        details["executed_by"] = serde_json::json!(executor());
        if let Some(e) = &r.error {
            details["error"] = serde_json::json!(e);
        }
        if let Some(s) = r.report.as_ref().and_then(|v| v.get("safety_backup")) {
            details["safety_backup"] = s.clone();
        }
        self.audit(repo.as_ref(), "restore", ok, details).await;
        if ok {
            tracing::info!(request = %r.id, job = %r.ask.job, "Restore request done.");
        } else {
            tracing::error!(request = %r.id, job = %r.ask.job, error = r.error.as_deref().unwrap_or_default(), "Restore request failed.");
        }
        if let Ok(job) = self.config().job(&r.ask.job) {
            self.notify(
                &job,
                Event::RestoreFinished,
                format!(
                    "restore {} of job {} {}",
                    r.id,
                    job.name,
                    if ok { "succeeded" } else { "failed" }
                ),
                r.error.clone().unwrap_or_else(|| {
                    r.report
                        .as_ref()
                        .and_then(|v| v.get("lines"))
                        .and_then(|l| l.as_array())
                        .map(|l| {
                            l.iter()
                                .filter_map(|x| x.as_str())
                                .collect::<Vec<_>>()
                                .join("\n")
                        })
                        .unwrap_or_default()
                }),
            );
        }
    }
}
