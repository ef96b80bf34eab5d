//! The jobs' history in memory: read from the repositories at start
//! (snapshots, audit records, drill records), then kept up to date by the
//! daemon's own runs and by re-listing snapshots and drill records (which
//! reads only the files it has not seen: runs and drills of other daemons
//! or the CLI) every `check_interval` and on SIGHUP.

use std::collections::{HashMap, HashSet};

use backup_core::drill::DrillRecord;
use backup_core::snapshot::SnapshotEntry;
use backup_core::{FileKind, Id, SinkExt as _};
use backup_ops::report::{job_key, read_events, DrillPoint, Run};
use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};

use super::{report, Daemon};

/// How far back the status page's history reaches.
const HISTORY_DAYS: i64 = 400;

/// What is remembered of one snapshot manifest.
#[derive(Debug, Clone)]
pub(super) struct Seen {
    /// The job (or source) it belongs to.
    key: Option<String>,
    /// Its time.
    time: DateTime<Utc>,
}

impl Daemon {
    /// Lists the repository's snapshots and reads the manifests not seen
    /// before: their runs join the history, and every job of the
    /// repository gets its restore points and last success anew.
    pub(super) async fn refresh_repository(&self, name: &str) {
        let repo = match self.repo(name).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(repository = %name, error = %report(&e), "Could not open the repository to read its snapshots.");
                return;
            }
        };
        let names = match repo.sink().list_names(FileKind::Snapshot).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(repository = %name, error = %e, "Could not list the repository's snapshots.");
                return;
            }
        };
        let mut cache = self.snapshots.lock().await;
        let seen = cache.entry(name.to_owned()).or_default();
        let listed: HashSet<&String> = names.iter().collect();
        seen.retain(|n, _| listed.contains(n));
        let new: Vec<String> = names
            .iter()
            .filter(|n| !seen.contains_key(*n))
            .cloned()
            .collect();
        // Unreadable manifests are left out (verify reports them).
        let (loaded, _) = repo.load_snapshots(new).await;
        let mut runs: Vec<(String, Run)> = Vec::new();
        for entry in loaded {
            let file = entry.id.to_hex();
            let key = job_key(&entry);
            if let Some(k) = &key {
                runs.push((k.clone(), Run::of_snapshot(&entry)));
            }
            seen.insert(
                file,
                Seen {
                    key,
                    time: entry.snapshot.time,
                },
            );
        }
        let mut points: HashMap<String, Vec<DateTime<Utc>>> = HashMap::new();
        for s in seen.values() {
            if let Some(k) = &s.key {
                points.entry(k.clone()).or_default().push(s.time);
            }
        }
        drop(cache);
        let jobs: Vec<String> = self
            .config()
            .jobs
            .iter()
            .filter(|(_, j)| j.repository == name)
            .map(|(n, _)| n.clone())
            .collect();
        let cutoff = Utc::now() - chrono::Duration::days(HISTORY_DAYS);
        for job in jobs {
            let mut mine: Vec<DateTime<Utc>> = points.remove(&job).unwrap_or_default();
            mine.sort();
            let last = mine.last().copied();
            let new_runs: Vec<Run> = runs
                .iter()
                .filter(|(k, r)| *k == job && r.time >= cutoff)
                .map(|(_, r)| r.clone())
                .collect();
            self.status.update_history(&job, |h| {
                h.restore_points = mine;
                let known: HashSet<String> =
                    h.runs.iter().filter_map(|r| r.snapshot.clone()).collect();
                for r in new_runs {
                    if r.snapshot.as_ref().is_none_or(|s| !known.contains(s)) {
                        h.push_run(r);
                    }
                }
            });
            self.status
                .update(&job, |s| s.last_success = s.last_success.max(last));
        }
    }

    /// Notes a snapshot this daemon wrote, so that the next listing does
    /// not read it again.
    pub(super) async fn saw_snapshot(&self, repository: &str, entry: &SnapshotEntry) {
        self.snapshots
            .lock()
            .await
            .entry(repository.to_owned())
            .or_default()
            .insert(
                entry.id.to_hex(),
                Seen {
                    key: job_key(entry),
                    time: entry.snapshot.time,
                },
            );
    }

    /// Gives each job's history its description and objectives (at start
    /// and after a reload).
    pub(super) fn describe_jobs(&self, jobs: &[backup_ops::config::Job]) {
        for j in jobs {
            self.status.update_history(&j.name, |h| h.describe(j));
        }
        let names: HashSet<&String> = jobs.iter().map(|j| &j.name).collect();
        self.status
            .with_history(|h| h.jobs.retain(|name, _| names.contains(name)));
    }

    /// Reads everything the status page shows from every repository:
    /// snapshots, failed runs, verifications, drills and the newest audit
    /// records of the last 400 days.
    pub(super) async fn load_history(&self) {
        let config = self.config();
        let since = Utc::now() - chrono::Duration::days(HISTORY_DAYS);
        for name in config.repositories.keys() {
            self.refresh_repository(name).await;
            let Ok(repo) = self.repo(name).await else {
                continue;
            };
            match read_events(&repo, name, Some(since)).await {
                Ok(ev) => {
                    let mine: Vec<&str> = config
                        .jobs
                        .iter()
                        .filter(|(_, j)| j.repository == *name)
                        .map(|(n, _)| n.as_str())
                        .collect();
                    let (shares, lines) = ev.per_job(&mine);
                    for (job, e) in shares {
                        self.status.update_history(&job, |h| h.add_events(e));
                    }
                    self.status.with_history(|h| {
                        h.audit.extend(lines);
                        h.audit.sort_by_key(|a| std::cmp::Reverse(a.time));
                        h.audit.truncate(backup_ops::report::AUDIT_LINES);
                    });
                }
                Err(e) => {
                    tracing::warn!(repository = %name, error = %report(&e), "Could not read the audit trail for the history.");
                }
            }
            self.refresh_drills(name).await;
        }
    }

    /// Lists the repository's drill records and reads those not seen
    /// before (drills of the CLI or other daemons, and at start all of
    /// them): each joins its job's history and becomes the job's last
    /// drill when it is newer.
    pub(super) async fn refresh_drills(&self, name: &str) {
        let repo = match self.repo(name).await {
            Ok(r) => r,
            Err(e) => {
                tracing::warn!(repository = %name, error = %report(&e), "Could not open the repository to read its drill records.");
                return;
            }
        };
        let names = match repo.sink().list_names(FileKind::Drill).await {
            Ok(n) => n,
            Err(e) => {
                tracing::warn!(repository = %name, error = %e, "Could not list the repository's drill records.");
                return;
            }
        };
        let new: Vec<String> = {
            let mut cache = self.drills_seen.lock().await;
            let seen = cache.entry(name.to_owned()).or_default();
            let listed: HashSet<&String> = names.iter().collect();
            seen.retain(|n| listed.contains(n));
            names
                .iter()
                .filter(|n| !seen.contains(*n))
                .cloned()
                .collect()
        };
        let loaded: Vec<(String, backup_core::Result<DrillRecord>)> = stream::iter(new)
            .map(|file| {
                let repo = repo.clone();
                async move {
                    let r = repo.load_file::<DrillRecord>(FileKind::Drill, &file).await;
                    (file, r)
                }
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let config = self.config();
        let cutoff = Utc::now() - chrono::Duration::days(HISTORY_DAYS);
        let mut cache = self.drills_seen.lock().await;
        let seen = cache.entry(name.to_owned()).or_default();
        for (file, record) in loaded {
            let d = match record {
                Ok(d) => d,
                // Read again at the next listing.
                Err(e) if e.is_retryable() => continue,
                Err(e) => {
                    tracing::warn!(record = %file, error = %e, "Skipping an unreadable drill record.");
                    seen.insert(file);
                    continue;
                }
            };
            seen.insert(file.clone());
            let Ok(id) = file.parse::<Id>() else { continue };
            let mine = d
                .job
                .as_ref()
                .and_then(|j| config.jobs.get(j))
                .is_some_and(|j| j.repository == name);
            if mine && d.started >= cutoff {
                self.saw_drill(Some(id), &d);
            }
        }
    }

    /// A drill record joins its job's history (once: records are told
    /// apart by id), and becomes the job's last drill when it is the
    /// newest.
    pub(super) fn saw_drill(&self, id: Option<Id>, d: &DrillRecord) {
        let Some(job) = d.job.as_deref() else { return };
        let point = DrillPoint::of_record(id, d);
        self.status.update_history(job, |h| h.push_drill(point));
        self.status.update(job, |s| {
            let newer = s
                .last_drill
                .as_ref()
                .is_none_or(|l| l.finished <= d.finished);
            if newer {
                s.last_drill = Some(crate::state::DrillState::of_record(id, d));
            }
            if d.ok {
                s.drill_last_success = s.drill_last_success.max(Some(d.finished));
            }
        });
    }

    /// Forgets which drill records were read, so that the next listing
    /// reads them all again (after a reload, which may add jobs whose
    /// drills were passed over).
    pub(super) async fn forget_seen_drills(&self) {
        self.drills_seen.lock().await.clear();
    }
}
