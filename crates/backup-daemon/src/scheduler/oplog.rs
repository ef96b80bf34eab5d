//! Continuous oplog capture for jobs with `oplog = "continuous"`: a
//! follower per job (`backup_ops::pitr::follow`, as `backup oplog
//! follow`) beside the scheduled backups, restarted with backoff when it
//! stops. Its events feed the job's [`CaptureState`] (status API and the
//! `backupd_capture_*` metrics, as for WAL) and the `capture_lag`,
//! `capture_gap` and `capture_stopped` notifications.
//!
//! Several daemons on one repository: the stream's lease lets one
//! follower write; the others wait (their state says so) and take over
//! when its lease expires.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use backup_ops::config::{Event, Job};
use backup_ops::pitr::{follow, CaptureEvent, CaptureObserver, FollowRequest};
use tokio_util::sync::CancellationToken;

use backup_core::retry::Restarts;

use super::{report, restarts, Daemon};
use crate::state::CaptureState;

/// Routes a follower's events to the job's state and notifications.
struct Observer {
    daemon: Arc<Daemon>,
    job: Job,
    /// `capture_stopped` was sent for the current outage (cleared when
    /// capture starts again).
    stopped_noticed: AtomicBool,
}

impl Observer {
    fn update(&self, f: impl FnOnce(&mut CaptureState)) {
        self.daemon.status.update(&self.job.name, |s| {
            f(s.capture.get_or_insert_with(CaptureState::default));
        });
    }

    /// Sends `capture_stopped`, once per outage.
    fn stopped(&self, error: &str, retry: Duration, how: &str) {
        if self.stopped_noticed.swap(true, Ordering::SeqCst) {
            return;
        }
        self.daemon.notify(
            &self.job,
            Event::CaptureStopped,
            format!("{}: capture stopped", self.job.name),
            format!(
                "{error}\n{how} in {} s; changes made meanwhile stay in the oplog (MongoDB) or the replication backlog (Redis) until it rolls over; after that the capture records a gap.",
                retry.as_secs()
            ),
        );
    }
}

impl CaptureObserver for Observer {
    fn event(&self, e: &CaptureEvent) {
        match e {
            CaptureEvent::Started { stream, from, .. } => {
                tracing::info!(job = %self.job.name, stream = %stream, from = %from, "Capture started.");
                self.stopped_noticed.store(false, Ordering::SeqCst);
                self.update(|c| {
                    c.streaming = true;
                    c.last_error = None;
                });
            }
            CaptureEvent::Stored(p) => self.update(|c| {
                c.last_stored = Some(chrono::Utc::now());
                if p.time_last.is_some() {
                    c.window_end = p.time_last;
                }
                if c.window_start.is_none() {
                    c.window_start = p.time_first;
                }
            }),
            CaptureEvent::Gap { stream, reason, .. } => {
                tracing::error!(job = %self.job.name, stream = %stream, reason = %reason, "Gap in the captured changes.");
                self.update(|c| c.gaps_total += 1);
                self.daemon.notify(
                    &self.job,
                    Event::CaptureGap,
                    format!("{}: gap in the captured changes", self.job.name),
                    format!(
                        "{reason}\nRestores into the gap are refused until a new base backup is taken after it."
                    ),
                );
            }
            CaptureEvent::Lag { seconds, .. } => {
                let limit = self.job.max_oplog_lag.map(|d| d.as_secs_f64());
                let mut alert = false;
                self.update(|c| {
                    c.lag_seconds = *seconds;
                    match limit {
                        Some(l) if *seconds > l && !c.lag_alerted => {
                            c.lag_alerted = true;
                            alert = true;
                        }
                        Some(l) if *seconds <= l => c.lag_alerted = false,
                        _ => {}
                    }
                });
                if alert {
                    let limit = limit.unwrap_or_default();
                    tracing::warn!(job = %self.job.name, lag = seconds, limit, "Capture is behind.");
                    self.daemon.notify(
                        &self.job,
                        Event::CaptureLag,
                        format!(
                            "{}: capture is {seconds:.0} s behind (max_oplog_lag {limit:.0} s)",
                            self.job.name
                        ),
                        "Changes newer than the lag cannot be restored yet; check the repository's write speed and the follower's connection.".to_owned(),
                    );
                }
            }
            CaptureEvent::Reconnecting { error, after } => {
                tracing::warn!(job = %self.job.name, error = %error, retry_in = ?after, "Capture reconnects.");
                self.update(|c| {
                    c.streaming = false;
                    c.restarts_total += 1;
                    c.last_error = Some(error.clone());
                });
                self.stopped(
                    error,
                    *after,
                    "It reconnects and resumes after the last stored entry",
                );
            }
            CaptureEvent::Warning(w) => {
                tracing::warn!(job = %self.job.name, "{w}");
            }
            _ => {}
        }
    }
}

impl Daemon {
    /// Runs the job's follower until `generation` is cancelled (shutdown,
    /// reload), restarting it with backoff (5 s doubling to 5 min,
    /// `core::retry::Restarts`) when it stops with an error.
    pub(super) async fn oplog_loop(self: Arc<Self>, job: Job, generation: CancellationToken) {
        self.status.update(&job.name, |s| {
            s.capture = Some(CaptureState {
                kind: if job.source.starts_with("redis") {
                    "redis-stream"
                } else {
                    "mongodb-oplog"
                }
                .to_owned(),
                ..CaptureState::default()
            });
        });
        let observer = Observer {
            daemon: Arc::clone(&self),
            job: job.clone(),
            stopped_noticed: AtomicBool::new(false),
        };
        let mut restarts = restarts(Duration::from_secs(5), Duration::from_secs(300));
        loop {
            restarts.started();
            let result = async {
                let repo = self.repo(&job.repository).await?;
                let spec = job.source_spec()?;
                let req = FollowRequest {
                    lock_wait: self.lock_wait(),
                    job: Some(job.name.clone()),
                    tags: job.tags.clone(),
                    ..FollowRequest::default()
                };
                follow(&repo, &spec, &req, &observer, &generation).await
            }
            .await;
            if generation.is_cancelled() {
                break;
            }
            let error = match result {
                Ok(_) => "the follower ended".to_owned(),
                Err(e) => {
                    let text = report(&e);
                    observer.update(|c| {
                        c.streaming = false;
                        c.last_error = Some(text.clone());
                    });
                    if matches!(e.core(), Some(backup_core::Error::Locked(_))) {
                        // Another daemon (or a foreground follower) holds
                        // the stream: not a failure; try again when its
                        // lease may have expired.
                        tracing::info!(job = %job.name, holder = %text, "Capture is held by another follower; waiting.");
                        if Restarts::wait(Duration::from_secs(60), &generation).await {
                            continue;
                        }
                        break;
                    }
                    text
                }
            };
            let restart = restarts.failed();
            tracing::error!(job = %job.name, error = %error, retry_in = ?restart.delay, "Capture stopped.");
            observer.update(|c| c.restarts_total += 1);
            observer.stopped(&error, restart.delay, "It restarts");
            if !Restarts::wait(restart.delay, &generation).await {
                break;
            }
        }
        observer.update(|c| c.streaming = false);
        tracing::info!(job = %job.name, "Capture stopped for shutdown or reload.");
    }
}
