//! One run of a job: the slot, the backup with its retries, what follows
//! a success or a failure.

use backup_core::archiver::BackupOutcome;
use backup_core::repo::Repository;
use backup_core::retry::retry;
use backup_ops::backup::{backup, open_source, BackupRequest};
use backup_ops::config::{Event, Job};
use backup_ops::Unattended;
use chrono::Utc;

use super::{report, Daemon, RunError, Trigger};
use crate::state::RunRecord;

impl Daemon {
    /// One run of a job: at most one at a time per job (also across
    /// reloads), within the concurrency limit, once per slot among the
    /// daemons sharing the repository. `by` is the API identity that
    /// asked for a manual run (the audit record's user), `None` for the
    /// daemon's own runs.
    pub(super) async fn execute(&self, job: &Job, trigger: Trigger, by: Option<&str>) {
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
        if let Ok(repo) = &repo {
            if !self.claim_slot(repo, job, trigger).await {
                return;
            }
        }
        self.status.update(&job.name, |s| s.running = true);
        tracing::info!(job = %job.name, trigger = trigger.name(), "Backup started.");
        let (result, attempts) = match repo {
            Ok(repo) => {
                let (r, attempts) = Box::pin(self.backup_with_retries(job, &repo)).await;
                (r.map(|o| (repo, o)), attempts)
            }
            Err(e) => (Err(RunError::Failed(e)), 1),
        };
        drop(permit);
        let record = RunRecord {
            trigger: trigger.name(),
            slot: trigger.slot(),
            started,
            finished: Utc::now(),
            result: "success",
            attempts,
            snapshot: None,
            error: None,
        };
        match result {
            Ok((repo, outcome)) => {
                self.succeeded(job, trigger, by, &repo, &outcome, record)
                    .await;
                self.after_success(job, &repo).await;
            }
            Err(e) => self.failed(job, trigger, by, e, record).await,
        }
        // Retention and prune are part of the run: the job is busy until
        // they end (its next slot waits for them).
        self.status.update(&job.name, |s| s.running = false);
    }

    /// Claims a scheduled run's slot; `false` when another daemon has.
    async fn claim_slot(&self, repo: &Repository, job: &Job, trigger: Trigger) -> bool {
        let Some(slot) = trigger.slot() else {
            return true;
        };
        match backup_core::lease::claim(repo, &job.name, slot).await {
            Ok(true) => true,
            Ok(false) => {
                tracing::info!(job = %job.name, %slot, "Another daemon already ran this slot; skipping it.");
                self.status
                    .update(&job.name, |s| s.slots_skipped_total += 1);
                false
            }
            Err(e) => {
                tracing::warn!(job = %job.name, error = %e, "Could not write the slot lease; running anyway.");
                true
            }
        }
    }

    /// Runs the backup, retrying errors that may pass (as the engine
    /// classifies them) with the configured backoff; the abandon token of
    /// a shutdown stops the backup, releasing its lock.
    async fn backup_with_retries(
        &self,
        job: &Job,
        repo: &Repository,
    ) -> (Result<BackupOutcome, RunError>, u32) {
        let policy = self.config().daemon.retry_policy();
        let req = BackupRequest::for_job(job, self.lock_wait());
        let attempt = |_| async {
            let spec = job.source_spec()?;
            let source = open_source(&spec).await?;
            backup(repo, source, &spec, &req, &Unattended, Some(&self.abandon)).await
        };
        let outcome = retry(
            &policy,
            Some(&self.shutdown),
            attempt,
            |e: &backup_ops::Error| !self.abandon.is_cancelled() && e.is_retryable(),
            |n, e, delay| {
                tracing::warn!(job = %job.name, attempt = n, error = %report(e), retry_in = ?delay, "Backup attempt failed; will retry.");
            },
        )
        .await;
        match outcome {
            Ok((o, attempts)) => (Ok(o), attempts),
            Err(g) if self.abandon.is_cancelled() => (Err(RunError::Abandoned), g.attempts),
            Err(g) => (Err(RunError::Failed(g.error)), g.attempts),
        }
    }

    async fn succeeded(
        &self,
        job: &Job,
        trigger: Trigger,
        by: Option<&str>,
        repo: &Repository,
        outcome: &BackupOutcome,
        mut record: RunRecord,
    ) {
        let id = outcome.id.map(|i| i.to_hex());
        record.snapshot.clone_from(&id);
        let st = outcome.run_stats.clone();
        let mut was_failing = 0;
        self.status.update(&job.name, |s| {
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
        });
        tracing::info!(job = %job.name, snapshot = id.as_deref().unwrap_or(""), bytes_read = st.bytes_read, bytes_added = st.bytes_added, "Backup finished.");
        let omitted = outcome.snapshot.warnings.len();
        if omitted > 0 {
            tracing::warn!(job = %job.name, snapshot = id.as_deref().unwrap_or(""), omitted, "Backup saved with omissions: entries that could not be read were left out (the snapshot's warnings name them).");
        }
        if let Some(snapshot_id) = outcome.id {
            let entry = backup_core::snapshot::SnapshotEntry {
                id: snapshot_id,
                snapshot: outcome.snapshot.clone(),
            };
            let mut run = backup_ops::report::Run::of_snapshot(&entry);
            // The wall time of the whole run, retries included.
            run.duration_seconds = run
                .duration_seconds
                .max((record.finished - record.started).num_milliseconds() as f64 / 1000.0);
            self.saw_snapshot(&job.repository, &entry).await;
            self.check_anomalies(job, &run);
            let time = entry.snapshot.time;
            self.status.update_history(&job.name, |h| {
                // A listing of the repository may have found it already.
                if let Some(seen) = h.runs.iter_mut().rev().find(|r| r.snapshot == run.snapshot) {
                    *seen = run;
                } else {
                    h.push_run(run);
                    let at = h.restore_points.partition_point(|t| *t <= time);
                    h.restore_points.insert(at, time);
                }
            });
        }
        self.audit_as(
            Some(repo),
            by,
            "create",
            true,
            serde_json::json!({
                "job": job.name, "trigger": trigger.name(), "slot": trigger.slot(), "snapshot": id,
                "source": outcome.snapshot.source.url, "attempts": record.attempts,
                "bytes_read": st.bytes_read, "bytes_added": st.bytes_added,
                "omitted": omitted,
            }),
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
                "snapshot {}: read {}, added {}{}",
                id.unwrap_or_default(),
                backup_core::util::human_bytes(st.bytes_read),
                backup_core::util::human_bytes(st.bytes_added),
                if omitted > 0 {
                    format!("; {omitted} entries could not be read and were left out")
                } else {
                    String::new()
                }
            ),
        );
    }

    async fn failed(
        &self,
        job: &Job,
        trigger: Trigger,
        by: Option<&str>,
        e: RunError,
        mut record: RunRecord,
    ) {
        let (result, msg) = match &e {
            RunError::Abandoned => (
                "abandoned",
                "abandoned at shutdown: the grace period ran out".to_owned(),
            ),
            RunError::Failed(e) => ("failure", report(e)),
        };
        record.result = result;
        record.error = Some(msg.clone());
        let attempts = record.attempts;
        let finished = record.finished;
        self.status.update(&job.name, |s| {
            s.failures_total += 1;
            s.consecutive_failures += 1;
            s.last_run = Some(record);
        });
        self.status.update_history(&job.name, |h| {
            h.push_run(backup_ops::report::Run::failed(finished, msg.clone()));
        });
        tracing::error!(job = %job.name, error = %msg, attempts, "Backup failed.");
        let repo = self.repos.lock().await.get(&job.repository).cloned();
        self.audit_as(
            repo.as_ref(),
            by,
            "create",
            false,
            serde_json::json!({
                "job": job.name, "trigger": trigger.name(), "slot": trigger.slot(), "error": msg, "attempts": attempts,
            }),
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

    /// After a successful backup: the job's retention, removal of day-old
    /// slot leases, and a new repository size.
    async fn after_success(&self, job: &Job, repo: &Repository) {
        if job.retention.is_some() {
            self.retain(job, repo).await;
        }
        if let Err(e) =
            backup_core::lease::remove_old(repo, &job.name, Utc::now() - chrono::Duration::days(1))
                .await
        {
            tracing::warn!(job = %job.name, error = %e, "Could not remove old slot leases.");
        }
        match backup_ops::repository::size(repo).await {
            Ok(size) => {
                self.status.set_repo_size(&job.repository, size);
                self.check_storage(&job.repository, size);
            }
            Err(e) => {
                tracing::warn!(repository = %job.repository, error = %report(&e), "Could not measure the repository.");
            }
        }
    }

    async fn retain(&self, job: &Job, repo: &Repository) {
        let r = backup_ops::retention::apply_retention(repo, job, self.lock_wait()).await;
        let (success, details) = match &r {
            Ok(o) => {
                let o = o.clone().unwrap_or_default();
                tracing::info!(job = %job.name, removed = o.removed.len(), kept = o.kept, retained = o.retained.len(), "Retention applied.");
                (
                    true,
                    serde_json::json!({"job": job.name, "removed": o.removed, "kept": o.kept, "retained": o.retained, "pruned": o.prune.is_some()}),
                )
            }
            Err(e) => {
                tracing::error!(job = %job.name, error = %report(e), "Retention failed.");
                self.notify(
                    job,
                    Event::Failure,
                    format!("Retention of job {} failed", job.name),
                    report(e),
                );
                (
                    false,
                    serde_json::json!({"job": job.name, "error": report(e)}),
                )
            }
        };
        self.audit(Some(repo), "forget", success, details).await;
    }
}
