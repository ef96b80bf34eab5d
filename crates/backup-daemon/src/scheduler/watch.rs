//! Watching the jobs: scheduled verifications, backup ages against
//! `max_age`, repository sizes.

use std::time::Duration;

use backup_core::repo::Repository;
use backup_ops::config::{Event, Job};
use backup_ops::verify::{verify, VerifyRequest, VerifyResult};
use backup_ops::Unattended;
use chrono::Utc;

use super::{report, Daemon};
use crate::state::VerifyRecord;
use backup_ops::report::human_seconds;

impl Daemon {
    pub(super) async fn verify(&self, job: &Job) {
        let Some(cadence) = &job.verify else {
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
        let req = VerifyRequest {
            job: Some(job.name.clone()),
            read_data: cadence.read_data,
            lock_wait: self.lock_wait(),
            ..VerifyRequest::default()
        };
        let r = tokio::select! {
            () = self.shutdown.cancelled() => return,
            r = verify(&repo, &req, None, &Unattended) => r,
        };
        self.verify_done(job, Some(&repo), r).await;
    }

    async fn verify_done(
        &self,
        job: &Job,
        repo: Option<&Repository>,
        r: backup_ops::Result<VerifyResult>,
    ) {
        let (ok, problems, details) = match &r {
            Ok(v) => {
                let rep = &v.report;
                (
                    rep.is_ok(),
                    rep.problems
                        .iter()
                        .map(|p| format!("{} {}: {}", p.kind, p.object, p.message))
                        .collect::<Vec<_>>(),
                    serde_json::json!({"job": job.name, "snapshots": rep.snapshots_checked, "packs_read": rep.packs_read, "problems": rep.problems.len(), "damaged_snapshots": rep.damaged_snapshots}),
                )
            }
            Err(e) => (
                false,
                vec![report(e)],
                serde_json::json!({"job": job.name, "error": report(e)}),
            ),
        };
        self.status.update(&job.name, |s| {
            s.last_verify = Some(VerifyRecord {
                finished: Utc::now(),
                ok,
                problems: problems.clone(),
            });
        });
        self.status.update_history(&job.name, |h| {
            h.push_verification(backup_ops::report::Verification {
                time: Utc::now(),
                ok,
                problems: problems.len() as u64,
            });
        });
        self.audit(repo, "verify", ok, details).await;
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

    /// Re-reads what other processes wrote (snapshots, drill records),
    /// then sends missed-backup notices for jobs whose last success is
    /// older than their maximum age (once until the next success).
    pub(super) async fn check_ages(&self) {
        let Ok(jobs) = self.config().all_jobs() else {
            return;
        };
        let repositories: std::collections::BTreeSet<String> =
            jobs.iter().map(|j| j.repository.clone()).collect();
        for name in &repositories {
            self.refresh_repository(name).await;
            self.refresh_drills(name).await;
        }
        for job in jobs {
            let Some(max) = job.max_age else { continue };
            let Some(state) = self.status.job(&job.name) else {
                continue;
            };
            let reference = state.last_success.unwrap_or(self.started);
            let age = (Utc::now() - reference).to_std().unwrap_or(Duration::ZERO);
            if age > max && !state.missed_alerted {
                self.status.update(&job.name, |s| s.missed_alerted = true);
                let what = match state.last_success {
                    Some(t) => format!("the last successful backup is from {}", t.to_rfc3339()),
                    None => "there is no successful backup".to_owned(),
                };
                tracing::error!(job = %job.name, age_seconds = age.as_secs(), "Backup missing: older than the maximum age.");
                self.notify(
                    &job,
                    Event::Missed,
                    format!("Backup of job {} is overdue", job.name),
                    format!(
                        "{what}; the maximum age is {}",
                        human_seconds(max.as_secs_f64())
                    ),
                );
            }
        }
    }
}
