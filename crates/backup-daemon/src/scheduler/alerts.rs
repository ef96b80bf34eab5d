//! Alerts beyond failures: runs that take or add far more than usual,
//! repositories running out of space, and the scheduled report.

use std::time::Duration;

use backup_ops::config::{Event, Job, ReportFormat};
use backup_ops::report::{anomaly, build, render, History, RepositoryUsage, RestoreLine, Run};
use chrono::Utc;

use super::{report as error_report, Daemon};
use crate::notify::Notice;

impl Daemon {
    /// Compares a successful run with the job's recent runs (before it
    /// joins them) and notifies `duration_anomaly` and `size_anomaly`.
    pub(super) fn check_anomalies(&self, job: &Job, run: &Run) {
        let settings = self.config().alerts.clone();
        let (duration, size) = self.status.with_history(|h| match h.jobs.get(&job.name) {
            Some(history) => (
                anomaly::duration_anomaly(history, run, &settings),
                anomaly::size_anomaly(history, run, &settings),
            ),
            None => (None, None),
        });
        let snapshot = run
            .snapshot
            .as_deref()
            .map_or("", |s| s.get(..8).unwrap_or(s));
        if let Some(msg) = duration {
            tracing::warn!(job = %job.name, "Unusually long backup: {msg}.");
            self.notify(
                job,
                Event::DurationAnomaly,
                format!("Backup job {} took unusually long", job.name),
                format!("snapshot {snapshot}: {msg}"),
            );
        }
        if let Some(msg) = size {
            tracing::warn!(job = %job.name, "Unusual backup size: {msg}.");
            self.notify(
                job,
                Event::SizeAnomaly,
                format!("Backup job {} has an unusual size", job.name),
                format!("snapshot {snapshot}: {msg}"),
            );
        }
    }

    /// Measures a repository's free space (its file system, or its quota
    /// less its size) and notifies `storage_low` once per episode.
    pub(super) fn check_storage(&self, name: &str, size: u64) {
        let config = self.config();
        let Some(rc) = config.repositories.get(name) else {
            return;
        };
        let (min_free, quota) = match rc.storage_limits(name) {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(repository = %name, error = %e, "Invalid storage limits.");
                return;
            }
        };
        let space = match quota {
            Some(q) => Some((q.saturating_sub(size), q)),
            None => anomaly::local_space(&rc.url),
        };
        let Some((free, total)) = space else { return };
        self.status.set_repo_space(name, free, total);
        let Some(threshold) = min_free else { return };
        let low = anomaly::storage_low(name, free, total, threshold);
        let mut alerted = self
            .storage_alerted
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match low {
            Some(msg) if alerted.insert(name.to_owned()) => {
                drop(alerted);
                tracing::error!(repository = %name, "Repository storage is low: {msg}.");
                let channels: Vec<String> = config
                    .jobs
                    .values()
                    .filter(|j| j.repository == name)
                    .flat_map(|j| {
                        j.notify
                            .clone()
                            .unwrap_or_else(|| config.notifications.keys().cloned().collect())
                    })
                    .collect();
                self.notifier().send_to(
                    Some(channels.as_slice()),
                    &Notice {
                        event: Event::StorageLow,
                        job: String::new(),
                        summary: format!("Repository {name} is running out of space"),
                        details: msg,
                        time: Utc::now(),
                    },
                );
            }
            Some(_) => {}
            None => {
                alerted.remove(name);
            }
        }
    }

    /// Sends the `[report]` on its schedule until shutdown.
    pub(super) async fn report_loop(&self) {
        loop {
            let config = self.config();
            let Some(rc) = config.report.clone() else {
                tokio::select! {
                    () = self.shutdown.cancelled() => return,
                    // A reload may add a report.
                    () = tokio::time::sleep(Duration::from_secs(60)) => continue,
                }
            };
            let Ok(schedule) = rc.schedule() else { return };
            let Some(next) = schedule.next_after(Utc::now()) else {
                return;
            };
            let wait = (next - Utc::now()).to_std().unwrap_or(Duration::ZERO);
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                () = tokio::time::sleep(wait.min(Duration::from_secs(60))) => {}
            }
            if Utc::now() < next {
                continue;
            }
            let since = Utc::now()
                - chrono::Duration::from_std(rc.since).unwrap_or(chrono::Duration::days(7));
            let history = self.history_since(Some(since));
            let report = build(&history);
            let markdown = render(&report, ReportFormat::Markdown);
            let body = match rc.format {
                ReportFormat::Html => render(&report, ReportFormat::Html),
                ReportFormat::Markdown => markdown.clone(),
                ReportFormat::Json => render(&report, ReportFormat::Json),
            };
            let json = serde_json::to_value(&report).unwrap_or_default();
            tracing::info!(jobs = report.jobs.len(), "Sending the scheduled report.");
            self.notifier()
                .send_report(rc.notify.as_deref(), rc.format, body, markdown, json);
        }
    }

    /// The history the daemon holds, as a report's input.
    pub(crate) fn history_since(&self, since: Option<chrono::DateTime<Utc>>) -> History {
        let sizes = self.status.repo_sizes();
        let space = self.status.repo_space();
        let (jobs, audit) = self
            .status
            .with_history(|h| (h.jobs.values().cloned().collect(), h.audit.clone()));
        History {
            generated: Utc::now(),
            since,
            jobs,
            repositories: sizes
                .into_iter()
                .map(|(name, size)| RepositoryUsage {
                    free: space.get(&name).map(|s| s.0),
                    total: space.get(&name).map(|s| s.1),
                    name,
                    size,
                })
                .collect(),
            audit,
            restores: self.restores_since(since),
        }
    }

    /// The restores requested through this daemon that ran, newest first.
    fn restores_since(&self, since: Option<chrono::DateTime<Utc>>) -> Vec<RestoreLine> {
        use crate::restores::RequestState;
        self.status
            .restores
            .list()
            .into_iter()
            .filter(|r| matches!(r.state, RequestState::Succeeded | RequestState::Failed))
            .filter_map(|r| {
                let time = r.finished?;
                if since.is_some_and(|s| time < s) {
                    return None;
                }
                Some(RestoreLine {
                    time,
                    repository: r.repository.clone(),
                    job: Some(r.ask.job.clone()),
                    target: r.target.clone(),
                    snapshot: r.plan.snapshot.chars().take(8).collect(),
                    ok: r.state == RequestState::Succeeded,
                    request: Some(r.id.clone()),
                    requested_by: r.requested.by.clone(),
                    approved_by: r.approvals.iter().map(|a| a.by.clone()).collect(),
                    executed_by: r.executed.map(|e| e.by).unwrap_or_default(),
                })
            })
            .collect()
    }

    /// Measures every repository's size and space.
    pub(super) async fn measure_repositories(&self) {
        let names: Vec<String> = self.config().repositories.keys().cloned().collect();
        for name in names {
            match self.repo(&name).await {
                Ok(repo) => match backup_ops::repository::size(&repo).await {
                    Ok(size) => {
                        self.status.set_repo_size(&name, size);
                        self.check_storage(&name, size);
                    }
                    Err(e) => {
                        tracing::warn!(repository = %name, error = %error_report(&e), "Could not measure the repository.");
                    }
                },
                Err(e) => {
                    tracing::warn!(repository = %name, error = %error_report(&e), "Could not open the repository.");
                }
            }
        }
    }
}
