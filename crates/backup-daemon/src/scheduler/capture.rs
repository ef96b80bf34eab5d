//! Continuous capture beside a job's schedule: the WAL receiver of a
//! physical PostgreSQL job, restarted with backoff when it stops, its
//! progress in the job's [`CaptureState`], notices on lag, gaps and stops.

use std::sync::Arc;
use std::time::Duration;

use backup_ops::config::{Event, Job, WalCapture};
use backup_ops::wal::{ReceiveOptions, ReceiverEvent};
use chrono::Utc;
use tokio_util::sync::CancellationToken;

use backup_core::retry::Restarts;

use super::{report, restarts, Daemon};
use crate::state::CaptureState;

/// A WAL position `X/Y` as a number.
fn lsn(text: &str) -> u64 {
    text.split_once('/')
        .and_then(|(hi, lo)| {
            Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
        })
        .unwrap_or(0)
}

impl Daemon {
    /// Runs the job's WAL receiver until `generation` ends; a receiver that
    /// stops is started again after 1 s, doubling to 60 s while it keeps
    /// failing (`core::retry::Restarts`).
    pub(super) async fn capture_loop(
        self: Arc<Self>,
        job: Job,
        wal: WalCapture,
        generation: CancellationToken,
    ) {
        self.status.update(&job.name, |s| {
            s.capture = Some(CaptureState {
                kind: "postgres-wal".to_owned(),
                ..CaptureState::default()
            });
        });
        let ticker = {
            let this = Arc::clone(&self);
            let (job, generation) = (job.clone(), generation.clone());
            let max_lag = wal.max_lag;
            tokio::spawn(async move {
                // The window moves when a base backup ends or old ones go:
                // read it after each new snapshot and every 5 minutes.
                let mut seen = None;
                let mut read_at = std::time::Instant::now();
                loop {
                    tokio::select! {
                        () = generation.cancelled() => break,
                        () = tokio::time::sleep(Duration::from_secs(1)) => {
                            this.check_lag(&job, max_lag);
                            let state = this.status.job(&job.name);
                            let last = state.as_ref().and_then(|s| s.last_success);
                            // A new base counts once the WAL reaches its end.
                            let open = state
                                .and_then(|s| s.capture)
                                .is_some_and(|c| c.window_start.is_none());
                            let every = if open { 3 } else { 300 };
                            if last != seen || read_at.elapsed() > Duration::from_secs(every) {
                                seen = last;
                                read_at = std::time::Instant::now();
                                this.refresh_window(&job).await;
                            }
                        }
                    }
                }
            })
        };
        let mut restarts = restarts(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            restarts.started();
            self.refresh_window(&job).await;
            let result = self.receive_once(&job, &wal, &generation).await;
            self.status.update(&job.name, |s| {
                if let Some(c) = s.capture.as_mut() {
                    c.streaming = false;
                }
            });
            if generation.is_cancelled() {
                break;
            }
            let why = result
                .err()
                .unwrap_or_else(|| "the receiver ended".to_owned());
            let restart = restarts.failed();
            tracing::warn!(job = %job.name, error = %why, retry_in = ?restart.delay, "The WAL receiver stopped; starting it again.");
            self.status.update(&job.name, |s| {
                if let Some(c) = s.capture.as_mut() {
                    c.restarts_total += 1;
                    c.last_error = Some(why.clone());
                }
            });
            // Once per outage: a receiver that ran a while and stopped is
            // a new one.
            if restart.failures == 1 {
                self.notify(
                    &job,
                    Event::CaptureStopped,
                    format!("WAL capture of job {} stopped", job.name),
                    format!("{why}\nbackupd starts it again with backoff; WAL written meanwhile stays in the replication slot."),
                );
            }
            if !Restarts::wait(restart.delay, &generation).await {
                break;
            }
        }
        ticker.abort();
    }

    /// One receiver run, until it fails or `generation` ends.
    async fn receive_once(
        self: &Arc<Self>,
        job: &Job,
        wal: &WalCapture,
        generation: &CancellationToken,
    ) -> Result<(), String> {
        let repo = self.repo(&job.repository).await.map_err(|e| report(&e))?;
        let url = job
            .source_url()
            .map_err(|e| backup_core::error::report(&e))?;
        let this = Arc::clone(self);
        let name = job.name.clone();
        let notice_job = job.clone();
        let events: backup_ops::wal::EventSink = Arc::new(move |e: ReceiverEvent| {
            this.capture_event(&notice_job, &name, e);
        });
        let opts = ReceiveOptions {
            slot: wal.slot.clone(),
            flush_interval: wal.flush,
            lock_wait: self.lock_wait().max(Duration::from_secs(3600)),
            ..ReceiveOptions::default()
        };
        backup_ops::wal::receive(&repo, &url, opts, generation.child_token(), events)
            .await
            .map(|_| ())
            .map_err(|e| report(&e))
    }

    fn capture_event(self: &Arc<Self>, job: &Job, name: &str, e: ReceiverEvent) {
        match e {
            ReceiverEvent::Streaming { timeline, from, .. } => {
                tracing::info!(job = %name, timeline, from = %from, "Streaming WAL.");
                self.status.update(name, |s| {
                    if let Some(c) = s.capture.as_mut() {
                        c.streaming = true;
                        c.timeline = timeline;
                        c.last_error = None;
                    }
                });
            }
            ReceiverEvent::Stored {
                timeline,
                lsn: stored,
                server_lsn,
                received,
            } => {
                let now = Utc::now();
                self.status.update(name, |s| {
                    if let Some(c) = s.capture.as_mut() {
                        c.streaming = true;
                        c.timeline = timeline;
                        c.stored_position = lsn(&stored);
                        c.server_position = lsn(&server_lsn).max(c.stored_position);
                        c.lag_bytes = c.server_position - c.stored_position;
                        c.last_stored = Some(now);
                        c.window_end = Some(received);
                        if c.lag_bytes == 0 || c.caught_up_at.is_none() {
                            c.caught_up_at = Some(now);
                        }
                    }
                });
            }
            ReceiverEvent::Gap { from, to, reason } => {
                self.status.update(name, |s| {
                    if let Some(c) = s.capture.as_mut() {
                        c.gaps_total += 1;
                    }
                });
                let then = if job.wal.as_ref().is_some_and(|w| w.backup_on_gap) {
                    let _ = self.status.trigger(name);
                    "A new base backup was started (on_wal_gap = \"backup\")."
                } else {
                    "Take a new base backup to restore points after it (or set on_wal_gap = \"backup\")."
                };
                self.notify(
                    job,
                    Event::CaptureGap,
                    format!("WAL gap in job {name}: {from} to {to}"),
                    format!("WAL from {from} to {to} could not be captured: {reason}. Points inside it cannot be restored. {then}"),
                );
                let this = Arc::clone(self);
                let job = job.clone();
                tokio::spawn(async move { this.refresh_window(&job).await });
            }
        }
    }

    /// Updates the lag in seconds and notifies once when it passes the
    /// job's limit (again only after it recovered).
    fn check_lag(&self, job: &Job, max_lag: Option<Duration>) {
        let now = Utc::now();
        let mut notice = None;
        self.status.update(&job.name, |s| {
            let Some(c) = s.capture.as_mut() else { return };
            c.lag_seconds = match (c.lag_bytes, c.caught_up_at) {
                (0, _) | (_, None) => 0.0,
                (_, Some(t)) => (now - t).num_milliseconds() as f64 / 1000.0,
            };
            let Some(max) = max_lag else { return };
            if c.lag_seconds > max.as_secs_f64() {
                if !c.lag_alerted {
                    c.lag_alerted = true;
                    notice = Some((c.lag_seconds, c.lag_bytes));
                }
            } else {
                c.lag_alerted = false;
            }
        });
        if let Some((secs, bytes)) = notice {
            self.notify(
                job,
                Event::CaptureLag,
                format!("WAL capture of job {} is {secs:.0} s behind", job.name),
                format!(
                    "{bytes} bytes of WAL are not stored yet; the job allows {} s (max_wal_lag).",
                    max_lag.map_or(0, |d| d.as_secs())
                ),
            );
        }
    }

    /// Reads where the restorable window of the job's cluster begins.
    async fn refresh_window(&self, job: &Job) {
        let repo = match self.repo(&job.repository).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(job = %job.name, error = %report(&e), "Could not open the repository to read the restorable window.");
                return;
            }
        };
        match backup_ops::wal::windows(&repo).await {
            Ok(clusters) => {
                // The window that holds the newest WAL of the newest timeline.
                let newest = clusters
                    .iter()
                    .flat_map(|c| c.windows.iter())
                    .max_by_key(|w| (w.timeline, lsn(&w.to_lsn)));
                let start = newest.and_then(|w| w.restorable_from);
                self.status.update(&job.name, |s| {
                    if let Some(c) = s.capture.as_mut() {
                        c.window_start = start;
                        if c.window_end.is_none() {
                            c.window_end = newest.and_then(|w| w.to_time);
                        }
                    }
                });
            }
            Err(e) => {
                tracing::warn!(job = %job.name, error = %report(&e), "Could not read the restorable window.");
            }
        }
    }
}
