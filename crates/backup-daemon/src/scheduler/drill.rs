//! Scheduled drills: like a run of the job (its guard, a permit of the
//! concurrency limit, a slot lease among daemons, an audit record), but
//! never retried: a failed drill is news, not noise.

use backup_ops::config::{Event, Job};
use backup_ops::drill::{
    chooser, drill, record_failure, sibling_replay_command, DrillOutcome, DrillRequest,
};
use backup_ops::report::human_seconds;
use backup_ops::Unattended;
use chrono::{DateTime, Utc};

use super::{report, Daemon};
use crate::state::DrillState;

impl Daemon {
    /// Runs the job's drill for the scheduled time `slot`.
    pub(super) async fn drill(&self, job: &Job, slot: DateTime<Utc>) {
        let guard = self.guard(&job.name);
        let _running = tokio::select! {
            () = self.shutdown.cancelled() => return,
            g = guard.lock() => g,
        };
        let _permit = tokio::select! {
            () = self.shutdown.cancelled() => return,
            p = self.semaphore.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => return,
            },
        };
        let repo = match self.repo(&job.repository).await {
            Ok(r) => r,
            Err(e) => {
                self.drill_failed(job, None, &report(&e)).await;
                return;
            }
        };
        match backup_core::lease::claim(&repo, &format!("{}:drill", job.name), slot).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::info!(job = %job.name, %slot, "Another daemon already ran this drill; skipping it.");
                return;
            }
            Err(e) => {
                tracing::warn!(job = %job.name, error = %e, "Could not write the drill's slot lease; running anyway.");
            }
        }
        self.status.update(&job.name, |s| s.drilling = true);
        tracing::info!(job = %job.name, "Drill started.");
        let prepared =
            DrillRequest::for_job(job, self.lock_wait()).and_then(|r| Ok((chooser(&r)?, r)));
        let result = match prepared {
            Ok((point, mut req)) => {
                req.replay_command = self
                    .config()
                    .repository(&job.repository)
                    .ok()
                    .and_then(sibling_replay_command);
                let cancel = Some(&self.abandon);
                Box::pin(drill(&repo, &req, point.as_ref(), &Unattended, cancel)).await
            }
            // Recorded like every other attempt.
            Err(e) => record_failure(&repo, job, &report(&e)).await.map_err(|store| {
                tracing::warn!(job = %job.name, error = %report(&store), "Could not store the record of a failed drill.");
                e
            }),
        };
        self.status.update(&job.name, |s| s.drilling = false);
        match result {
            Ok(outcome) => self.drill_done(job, &repo, &outcome).await,
            Err(e) => self.drill_failed(job, Some(&repo), &report(&e)).await,
        }
    }

    /// A drill that could not start and has no record (the repository
    /// could not be opened, a drill of the job running elsewhere).
    async fn drill_failed(
        &self,
        job: &Job,
        repo: Option<&backup_core::repo::Repository>,
        error: &str,
    ) {
        tracing::error!(job = %job.name, error = %error, "Drill failed.");
        self.status.update(&job.name, |s| {
            s.last_drill = Some(DrillState {
                finished: Utc::now(),
                ok: false,
                rto_seconds: None,
                rpo_seconds: None,
                error: Some(error.to_owned()),
                record: None,
            });
        });
        self.audit(
            repo,
            "drill",
            false,
            serde_json::json!({"job": job.name, "error": error}),
        )
        .await;
        let summary = format!("Restore drill of job {} failed", job.name);
        self.notify(job, Event::DrillFailed, summary, error.to_owned());
    }

    async fn drill_done(&self, job: &Job, repo: &backup_core::repo::Repository, o: &DrillOutcome) {
        let r = &o.record;
        for w in &o.warnings {
            tracing::warn!(job = %job.name, "{w}");
        }
        let failed_checks: Vec<String> = r
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        self.saw_drill(o.id, r);
        self.audit(
            Some(repo),
            "drill",
            r.ok,
            serde_json::json!({
                "job": job.name, "snapshot": r.snapshot, "target": r.target, "record": o.id,
                "rto_seconds": r.rto_seconds, "rpo_seconds": r.rpo_seconds,
                "rto_exceeded": r.rto_exceeded, "error": r.error, "failed_checks": failed_checks,
            }),
        )
        .await;
        let rto = r.rto_seconds.map_or_else(|| "-".to_owned(), human_seconds);
        if r.error.is_some() || !failed_checks.is_empty() {
            tracing::error!(job = %job.name, rto = %rto, "Drill failed.");
            let details: Vec<String> = r.error.iter().cloned().chain(failed_checks).collect();
            let details = details.join("\n");
            let details = match r.snapshot {
                Some(s) => format!("snapshot {} into {}: {details}", s.short(), r.target),
                None => format!("nothing was restored: {details}"),
            };
            let summary = format!("Restore drill of job {} failed", job.name);
            self.notify(job, Event::DrillFailed, summary, details);
        } else {
            tracing::info!(job = %job.name, rto = %rto, rpo = %r.rpo_seconds.map_or_else(|| "-".to_owned(), human_seconds), "Drill passed its checks.");
        }
        if r.rto_exceeded {
            let max = human_seconds(r.max_rto_seconds.unwrap_or(0.0));
            let details = format!("the scratch copy was usable after {rto}; max_rto is {max}");
            let summary = format!("Restore drill of job {} exceeded its RTO", job.name);
            self.notify(job, Event::RtoExceeded, summary, details);
        }
    }
}
