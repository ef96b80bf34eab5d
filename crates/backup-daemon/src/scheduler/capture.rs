//! Continuous capture beside a job's schedule, one loop for every kind:
//! the WAL receiver of a physical PostgreSQL job (`wal` settings), the
//! oplog or replication-stream follower of a MongoDB or Redis job (`oplog
//! = "continuous"`). What stops is started again with backoff
//! (`core::retry::Restarts`); the capture's events feed the job's
//! [`CaptureState`] (status API, `backupd_capture_*` metrics) and the
//! `capture_lag`, `capture_gap` and `capture_stopped` notifications; the
//! restorable window is read through the capture drivers' listing.
//!
//! Several daemons on one repository: a follower's lease lets one write;
//! the others wait (their state says so) and take over when its lease
//! expires.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backup_core::retry::Restarts;
use backup_ops::config::{Event, Job};
use backup_ops::pitr::{CaptureEvent, CaptureObserver, FollowRequest, Position, Words};
use backup_ops::wal::ReceiveOptions;
use tokio_util::sync::CancellationToken;

use super::{report, Daemon};
use crate::state::CaptureState;

/// What a job captures, for its state and messages.
struct Capture {
    /// The capture kind (`postgres-wal`, `mongodb-oplog`, `redis-stream`).
    kind: &'static str,
    /// What the capture driver calls its stream and where changes wait.
    words: Words,
    /// The job's lag limit.
    max_lag: Option<Duration>,
    /// The setting that gives it.
    max_lag_setting: &'static str,
}

impl Capture {
    /// The capture of `job`: its WAL (`wal` settings), else the stream
    /// of its kind of source.
    fn of(job: &Job) -> Result<Capture, backup_ops::Error> {
        let (kind, words) = backup_ops::pitr::capture_of(&job.source)?;
        let (max_lag, max_lag_setting) = match &job.wal {
            Some(wal) => (wal.max_lag, "max_wal_lag"),
            None => (job.max_oplog_lag, "max_oplog_lag"),
        };
        Ok(Capture {
            kind,
            words,
            max_lag,
            max_lag_setting,
        })
    }
}

/// Routes a capture's events to the job's state and notifications.
struct Observer {
    daemon: Arc<Daemon>,
    job: Job,
    capture: Capture,
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
            format!(
                "{}: {} capture stopped",
                self.job.name, self.capture.words.stream
            ),
            format!(
                "{error}\n{how} in {} s; changes made meanwhile stay in {}.",
                retry.as_secs(),
                self.capture.words.kept_in
            ),
        );
    }

    fn gap(&self, stream: &str, reason: &str) {
        tracing::error!(job = %self.job.name, stream = %stream, reason = %reason, "Gap in the captured changes.");
        self.update(|c| c.gaps_total += 1);
        let then = if self.job.wal.as_ref().is_some_and(|w| w.backup_on_gap) {
            let _ = self.daemon.status.trigger(&self.job.name, None);
            "A new base backup was started (on_wal_gap = \"backup\")."
        } else {
            "Restores into the gap are refused; take a new base backup to restore points after it."
        };
        self.daemon.notify(
            &self.job,
            Event::CaptureGap,
            format!(
                "{}: gap in the captured {}",
                self.job.name, self.capture.words.stream
            ),
            format!("{reason}\n{then}"),
        );
        let daemon = Arc::clone(&self.daemon);
        let job = self.job.clone();
        tokio::spawn(async move { daemon.refresh_window(&job).await });
    }

    fn lag(&self, seconds: f64, behind_bytes: Option<u64>) {
        let limit = self.capture.max_lag.map(|d| d.as_secs_f64());
        let mut alert = false;
        self.update(|c| {
            c.lag_seconds = seconds;
            if let Some(b) = behind_bytes {
                c.lag_bytes = b;
                c.server_position = c.stored_position + b;
            }
            match limit {
                Some(l) if seconds > l && !c.lag_alerted => {
                    c.lag_alerted = true;
                    alert = true;
                }
                Some(l) if seconds <= l => c.lag_alerted = false,
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
                    "{}: {} capture is {seconds:.0} s behind ({} {limit:.0} s)",
                    self.job.name, self.capture.words.stream, self.capture.max_lag_setting
                ),
                format!(
                    "Changes newer than the lag cannot be restored yet{}; check the repository's write speed and the capture's connection.",
                    behind_bytes
                        .map(|b| format!(" ({b} bytes are not stored)"))
                        .unwrap_or_default()
                ),
            );
        }
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
                    if let Some(t) = from.timeline() {
                        c.timeline = t;
                    }
                });
            }
            CaptureEvent::Stored(p) => {
                let last = Position::of_record(self.capture.kind, &p.name.last);
                self.update(|c| {
                    c.streaming = true;
                    c.last_stored = Some(chrono::Utc::now());
                    if p.time_last.is_some() {
                        c.window_end = p.time_last;
                    }
                    match last {
                        Some(Position::Wal { timeline, lsn }) => {
                            c.timeline = timeline;
                            c.stored_position = lsn;
                        }
                        Some(Position::Offset(o)) => c.stored_position = o,
                        _ => {}
                    }
                    c.server_position = c.server_position.max(c.stored_position);
                });
            }
            CaptureEvent::Gap { stream, reason, .. } => self.gap(stream, reason),
            CaptureEvent::Lag {
                seconds,
                behind_bytes,
                ..
            } => self.lag(*seconds, *behind_bytes),
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
                    "It reconnects and resumes after the last stored change",
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
    /// Runs the job's capture until `generation` is cancelled (shutdown,
    /// reload), restarting it with backoff (1 s doubling to 60 s while it
    /// keeps failing) when it stops, and reading its restorable window
    /// after each new snapshot and every 5 minutes.
    pub(super) async fn capture_loop(self: Arc<Self>, job: Job, generation: CancellationToken) {
        let capture = match Capture::of(&job) {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(job = %job.name, error = %report(&e), "The job's source has no capture.");
                return;
            }
        };
        self.status.update(&job.name, |s| {
            s.capture = Some(CaptureState {
                kind: capture.kind.to_owned(),
                ..CaptureState::default()
            });
        });
        let ticker = tokio::spawn(Arc::clone(&self).window_ticker(job.clone(), generation.clone()));
        let observer = Arc::new(Observer {
            daemon: Arc::clone(&self),
            job: job.clone(),
            capture,
            stopped_noticed: AtomicBool::new(false),
        });
        let mut restarts = Restarts::doubling(Duration::from_secs(1), Duration::from_secs(60));
        loop {
            restarts.started();
            let result = self.capture_once(&job, &observer, &generation).await;
            observer.update(|c| c.streaming = false);
            if generation.is_cancelled() {
                break;
            }
            let error = match result {
                Ok(()) => "the capture ended".to_owned(),
                Err(e) if matches!(e.core(), Some(backup_core::Error::Locked(_))) => {
                    // Another daemon (or a foreground follower) holds the
                    // stream: not a failure; try again when its lease may
                    // have expired.
                    let text = report(&e);
                    observer.update(|c| c.last_error = Some(text.clone()));
                    tracing::info!(job = %job.name, holder = %text, "Capture is held by another follower; waiting.");
                    if Restarts::wait(Duration::from_secs(60), &generation).await {
                        continue;
                    }
                    break;
                }
                Err(e) => report(&e),
            };
            let restart = restarts.failed();
            tracing::warn!(job = %job.name, error = %error, retry_in = ?restart.delay, "Capture stopped; starting it again.");
            observer.update(|c| {
                c.restarts_total += 1;
                c.last_error = Some(error.clone());
            });
            observer.stopped(&error, restart.delay, "backupd starts it again");
            if !Restarts::wait(restart.delay, &generation).await {
                break;
            }
        }
        ticker.abort();
        tracing::info!(job = %job.name, "Capture stopped for shutdown or reload.");
    }

    /// One run of the job's receiver or follower, until it fails or
    /// `generation` ends.
    async fn capture_once(
        &self,
        job: &Job,
        observer: &Arc<Observer>,
        generation: &CancellationToken,
    ) -> Result<(), backup_ops::Error> {
        self.refresh_window(job).await;
        let repo = self.repo(&job.repository).await?;
        if let Some(wal) = &job.wal {
            let url = job.source_url()?;
            let opts = ReceiveOptions {
                slot: wal.slot.clone(),
                flush_interval: wal.flush,
                lock_wait: self.lock_wait().max(Duration::from_secs(3600)),
                ..ReceiveOptions::default()
            };
            let observer: Arc<dyn CaptureObserver> = Arc::clone(observer) as _;
            backup_ops::wal::receive(&repo, &url, opts, generation.child_token(), observer)
                .await
                .map(|_| ())
        } else {
            let req = FollowRequest {
                lock_wait: self.lock_wait(),
                job: Some(job.name.clone()),
                tags: job.tags.clone(),
                ..FollowRequest::default()
            };
            let spec = job.source_spec()?;
            backup_ops::pitr::follow(&repo, &spec, &req, observer.as_ref(), generation)
                .await
                .map(|_| ())
        }
    }

    /// Reads the restorable window after each new snapshot of the job
    /// (a new base counts once the capture reaches its end: read every 3
    /// s while no window is open) and every 5 minutes.
    async fn window_ticker(self: Arc<Self>, job: Job, generation: CancellationToken) {
        let mut seen = None;
        let mut read_at = Instant::now();
        loop {
            tokio::select! {
                () = generation.cancelled() => break,
                () = tokio::time::sleep(Duration::from_secs(1)) => {
                    let state = self.status.job(&job.name);
                    let last = state.as_ref().and_then(|s| s.last_success);
                    let open = state
                        .and_then(|s| s.capture)
                        .is_some_and(|c| c.window_start.is_none());
                    let every = if open { 3 } else { 300 };
                    if last != seen || read_at.elapsed() > Duration::from_secs(every) {
                        seen = last;
                        read_at = Instant::now();
                        self.refresh_window(&job).await;
                    }
                }
            }
        }
    }

    /// Reads where the job's restorable window begins (and ends, before
    /// anything was stored in this run): the newest window of the job's
    /// source in the capture drivers' listing.
    async fn refresh_window(&self, job: &Job) {
        let repo = match self.repo(&job.repository).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(job = %job.name, error = %report(&e), "Could not open the repository to read the restorable window.");
                return;
            }
        };
        let Ok(Capture { kind, .. }) = Capture::of(job) else {
            return;
        };
        match backup_ops::pitr::windows(&repo, Some(&job.source)).await {
            Ok(sources) => {
                let newest = sources
                    .iter()
                    .filter(|s| s.capture == kind)
                    .filter_map(|s| s.newest())
                    .max_by_key(|w| (w.timeline, w.to_time));
                self.status.update(&job.name, |s| {
                    if let Some(c) = s.capture.as_mut() {
                        c.window_start = newest.and_then(|w| w.from_time);
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
