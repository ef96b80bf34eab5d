//! The history of jobs, as the repository remembers it: successful runs
//! (snapshot manifests), failed runs and verifications (audit records),
//! drills (drill records) and the restore points that exist.

use std::collections::BTreeMap;

use backup_core::audit::AuditRecord;
use backup_core::drill::DrillRecord;
use backup_core::repo::Repository;
use backup_core::snapshot::SnapshotEntry;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::config::Config;
use crate::error::Result;

/// One run of a job.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Run {
    /// When it ran (the snapshot's time, or when the failure was
    /// recorded).
    pub time: DateTime<Utc>,
    /// Whether it produced a snapshot.
    pub ok: bool,
    /// Wall time in seconds (0 when unknown).
    pub duration_seconds: f64,
    /// Bytes read from the source.
    pub bytes_read: u64,
    /// Plaintext bytes new to the repository.
    pub bytes_added: u64,
    /// Stored bytes of those.
    pub bytes_stored: u64,
    /// The snapshot's total content size.
    pub logical_bytes: u64,
    /// The snapshot written (full id).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<String>,
    /// The error of a failed run.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

impl Run {
    /// A successful run from its snapshot.
    pub fn of_snapshot(e: &SnapshotEntry) -> Self {
        let st = &e.snapshot.stats;
        Run {
            time: e.snapshot.time,
            ok: true,
            duration_seconds: st.duration_ms as f64 / 1000.0,
            bytes_read: st.bytes_read,
            bytes_added: st.bytes_added,
            bytes_stored: st.bytes_stored,
            logical_bytes: st.logical_bytes,
            snapshot: Some(e.id.to_hex()),
            error: None,
        }
    }

    /// A failed run.
    pub fn failed(time: DateTime<Utc>, error: impl Into<String>) -> Self {
        Run {
            time,
            ok: false,
            duration_seconds: 0.0,
            bytes_read: 0,
            bytes_added: 0,
            bytes_stored: 0,
            logical_bytes: 0,
            snapshot: None,
            error: Some(error.into()),
        }
    }
}

/// One verification.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Verification {
    /// When it ended.
    pub time: DateTime<Utc>,
    /// Whether nothing was wrong.
    pub ok: bool,
    /// Problems found (or 1 for an error).
    pub problems: u64,
}

/// One drill, as reports show it.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrillPoint {
    /// The drill record's id, when it is known (a history holds each
    /// record once).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub record: Option<String>,
    /// When it started.
    pub time: DateTime<Utc>,
    /// Whether it passed.
    pub ok: bool,
    /// Seconds until the copy was usable.
    pub rto_seconds: Option<f64>,
    /// Age of the restored point (none when the drill failed before it
    /// chose one).
    pub rpo_seconds: Option<f64>,
    /// The limit.
    pub max_rto_seconds: Option<f64>,
    /// The snapshot restored (full id; none when the drill failed before
    /// it chose one).
    pub snapshot: Option<String>,
    /// Phases and their seconds.
    pub phases: Vec<(String, f64)>,
    /// Checks that failed, and the error.
    pub problems: Vec<String>,
    /// Checks run.
    pub checks: usize,
}

impl DrillPoint {
    /// The report's view of the drill record `id` (when known).
    pub fn of_record(id: Option<backup_core::Id>, r: &DrillRecord) -> Self {
        let mut problems: Vec<String> = r
            .checks
            .iter()
            .filter(|c| !c.ok)
            .map(|c| format!("{}: {}", c.name, c.detail))
            .collect();
        if let Some(e) = &r.error {
            problems.insert(0, e.clone());
        }
        if r.rto_exceeded {
            problems.push(format!(
                "RTO {:.1}s over the limit of {:.1}s",
                r.rto_seconds.unwrap_or(0.0),
                r.max_rto_seconds.unwrap_or(0.0)
            ));
        }
        DrillPoint {
            record: id.map(|i| i.to_hex()),
            time: r.started,
            ok: r.ok,
            rto_seconds: r.rto_seconds,
            rpo_seconds: r.rpo_seconds,
            max_rto_seconds: r.max_rto_seconds,
            snapshot: r.snapshot.map(|s| s.to_hex()),
            phases: r
                .phases
                .iter()
                .map(|p| (p.name.clone(), p.seconds))
                .collect(),
            problems,
            checks: r.checks.len(),
        }
    }
}

/// A job's continuous capture (PostgreSQL WAL, MongoDB oplog): what can
/// be restored to any point of, and how far it is behind.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct CaptureWindow {
    /// What is captured: `postgres-wal` or `mongodb-oplog`.
    pub kind: String,
    /// The start of the newest restorable window (the end of the oldest
    /// base backup the captured changes continue without a gap).
    pub from: DateTime<Utc>,
    /// Its end: the newest captured change.
    pub to: DateTime<Utc>,
    /// How far the capture is behind the source, in seconds: the RPO a
    /// disaster now would meet (the daemon knows it; a report takes the
    /// time since the window's end).
    pub lag_seconds: f64,
    /// Whether the capture is running (known to the daemon only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub streaming: Option<bool>,
    /// Bytes written by the source and not captured yet (daemon only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub lag_bytes: Option<u64>,
    /// Gaps the capture recorded since the daemon started (daemon only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub gaps: Option<u64>,
    /// Why the capture last stopped (daemon only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_error: Option<String>,
}

/// A job's objectives, from its configuration.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct Objectives {
    /// Recovery point objective: the job's `max_age`, in seconds.
    pub rpo_seconds: Option<f64>,
    /// Recovery time objective: the drill's `max_rto`, in seconds.
    pub rto_seconds: Option<f64>,
}

/// Everything known about one job.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobHistory {
    /// The job's name (or, for snapshots made without a job, the source).
    pub name: String,
    /// The kind of source.
    pub kind: String,
    /// The source (credentials removed).
    pub source: String,
    /// The configured repository's name, when known.
    pub repository: Option<String>,
    /// The cron schedule, when configured.
    pub schedule: Option<String>,
    /// Objectives.
    pub objectives: Objectives,
    /// Runs, oldest first.
    pub runs: Vec<Run>,
    /// Verifications, oldest first.
    pub verifications: Vec<Verification>,
    /// Drills, oldest first.
    pub drills: Vec<DrillPoint>,
    /// The times of the snapshots that exist now (restore points),
    /// oldest first.
    pub restore_points: Vec<DateTime<Utc>>,
    /// Continuous capture, for jobs that have it: then any point of its
    /// window can be restored, not only the snapshots.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureWindow>,
}

impl JobHistory {
    /// The last `n` successful runs before `before` (all runs when `None`),
    /// oldest first.
    pub fn baseline(&self, n: usize, before: Option<DateTime<Utc>>) -> Vec<&Run> {
        let mut out: Vec<&Run> = self
            .runs
            .iter()
            .filter(|r| r.ok && before.is_none_or(|b| r.time < b))
            .collect();
        let skip = out.len().saturating_sub(n);
        out.drain(..skip);
        out
    }

    /// Adds a run in time order (runs arrive in order; a late one is
    /// inserted).
    pub fn push_run(&mut self, run: Run) {
        insert_sorted(&mut self.runs, run, |r| r.time);
    }

    /// Adds a drill in time order; a record the history holds already
    /// (the same id) is not added again.
    pub fn push_drill(&mut self, d: DrillPoint) {
        if d.record.is_some() && self.drills.iter().any(|x| x.record == d.record) {
            return;
        }
        insert_sorted(&mut self.drills, d, |d| d.time);
    }

    /// Adds a verification in time order.
    pub fn push_verification(&mut self, v: Verification) {
        insert_sorted(&mut self.verifications, v, |v| v.time);
    }

    /// Takes what the configuration says of the job: its kind, source
    /// (credentials removed), repository, schedule and objectives.
    pub fn describe(&mut self, job: &crate::config::Job) {
        self.kind = backup_sources::Kind::of(&job.source)
            .map(|k| k.name().to_owned())
            .unwrap_or_default();
        self.source = backup_core::redact::redact_url(&job.source);
        self.repository = Some(job.repository.clone());
        self.schedule = Some(job.schedule.expr().to_owned());
        self.objectives = Objectives {
            rpo_seconds: job.max_age.map(|d| d.as_secs_f64()),
            rto_seconds: job
                .drill
                .as_ref()
                .and_then(|d| d.max_rto)
                .map(|d| d.as_secs_f64()),
        };
    }

    /// Adds a job's share of a repository's audit records.
    pub fn add_events(&mut self, events: JobEvents) {
        for f in events.failures {
            self.push_run(f);
        }
        for v in events.verifications {
            self.push_verification(v);
        }
    }
}

fn insert_sorted<T>(v: &mut Vec<T>, item: T, key: impl Fn(&T) -> DateTime<Utc>) {
    let t = key(&item);
    let at = v.partition_point(|x| key(x) <= t);
    v.insert(at, item);
}

/// A repository's size and space.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct RepositoryUsage {
    /// Configured name (or location).
    pub name: String,
    /// Stored bytes.
    pub size: u64,
    /// Free bytes of its file system, or quota less size.
    pub free: Option<u64>,
    /// Size of its file system, or the quota.
    pub total: Option<u64>,
}

/// One audit record, for people.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct AuditLine {
    /// Sequence number in the repository's chain.
    pub seq: u64,
    /// The repository it is in.
    pub repository: String,
    /// When.
    pub time: DateTime<Utc>,
    /// `create`, `verify`, `drill`, ...
    pub operation: String,
    /// `success` or `failure`.
    pub status: String,
    /// Who and where: `user@host`.
    pub by: String,
    /// The job or snapshot concerned, and the error.
    pub summary: String,
}

impl AuditLine {
    /// The line of an audit record of `repository`.
    pub fn of_record(repository: &str, r: &AuditRecord) -> Self {
        let d = &r.body.details;
        let mut parts = Vec::new();
        for k in ["job", "snapshot", "source", "target"] {
            if let Some(v) = d.get(k).and_then(serde_json::Value::as_str) {
                let v = if k == "snapshot" && v.len() > 12 {
                    &v[..8]
                } else {
                    v
                };
                parts.push(format!("{k} {v}"));
            }
        }
        if let Some(e) = d.get("error").and_then(serde_json::Value::as_str) {
            parts.push(format!("error: {e}"));
        }
        AuditLine {
            seq: r.body.seq,
            repository: repository.to_owned(),
            time: r.body.timestamp,
            operation: r.body.operation.clone(),
            status: r.body.status.clone(),
            by: format!("{}@{}", r.body.user, r.body.host),
            summary: parts.join(", "),
        }
    }
}

/// The history of every job of some repositories.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct History {
    /// When it was read.
    pub generated: DateTime<Utc>,
    /// The start of the period (everything when `None`).
    pub since: Option<DateTime<Utc>>,
    /// Per job, by name.
    pub jobs: Vec<JobHistory>,
    /// Per repository.
    pub repositories: Vec<RepositoryUsage>,
    /// The newest audit records, newest first.
    pub audit: Vec<AuditLine>,
    /// The restores of the period, newest first.
    pub restores: Vec<RestoreLine>,
}

/// One restore, for the report's section of restores: where, what, and
/// who asked for it, approved it and ran it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RestoreLine {
    /// When it ended.
    pub time: DateTime<Utc>,
    /// The repository restored from.
    pub repository: String,
    /// The job, for restores requested through the daemon.
    pub job: Option<String>,
    /// Where the data went (without credentials).
    pub target: String,
    /// The snapshot restored (short id).
    pub snapshot: String,
    /// Whether it succeeded.
    pub ok: bool,
    /// The daemon's request id, for restores requested through it.
    pub request: Option<String>,
    /// Who asked: the daemon identity of the request, or the OS user who
    /// ran `backup restore`.
    pub requested_by: String,
    /// Who approved it, in order (empty: nobody had to).
    pub approved_by: Vec<String>,
    /// Who ran it: `user@host` of the process that restored.
    pub executed_by: String,
}

impl RestoreLine {
    /// The restore an audit record of `repository` tells of; `None` for
    /// a record of another operation.
    pub fn of_record(repository: &str, r: &AuditRecord) -> Option<Self> {
        if r.body.operation != "restore" {
            return None;
        }
        let d = &r.body.details;
        let text = |k: &str| {
            d.get(k)
                .and_then(serde_json::Value::as_str)
                .map(str::to_owned)
        };
        let snapshot = text("snapshot").unwrap_or_default();
        Some(RestoreLine {
            time: r.body.timestamp,
            repository: repository.to_owned(),
            job: text("job"),
            target: text("target").unwrap_or_default(),
            snapshot: snapshot.chars().take(8).collect(),
            ok: r.body.status == "success",
            request: text("request"),
            requested_by: text("requested_by").unwrap_or_else(|| r.body.user.clone()),
            approved_by: d
                .get("approved_by")
                .and_then(serde_json::Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(|v| v.as_str().map(str::to_owned))
                        .collect()
                })
                .unwrap_or_default(),
            executed_by: format!("{}@{}", r.body.user, r.body.host),
        })
    }
}

/// How many audit records a history keeps for people.
pub const AUDIT_LINES: usize = 50;

/// What a repository's audit records and drills add to its jobs.
#[derive(Debug, Default)]
pub struct RepositoryEvents {
    /// Failed runs by job.
    pub failures: BTreeMap<String, Vec<Run>>,
    /// Verifications by job (`""`: the whole repository).
    pub verifications: BTreeMap<String, Vec<Verification>>,
    /// The newest audit lines.
    pub audit: Vec<AuditLine>,
    /// The restores, newest first.
    pub restores: Vec<RestoreLine>,
}

/// What a repository's audit records add to one job.
#[derive(Debug, Default)]
pub struct JobEvents {
    /// Its failed runs, oldest first.
    pub failures: Vec<Run>,
    /// Verifications of it or of its whole repository, oldest first.
    pub verifications: Vec<Verification>,
}

impl RepositoryEvents {
    /// Shares the events among `jobs` (the names of the jobs kept in this
    /// repository): a failed run goes to its job, a verification to its
    /// job or, when it verified the whole repository, to every job.
    /// Returns the shares and the newest audit lines.
    pub fn per_job(self, jobs: &[&str]) -> (BTreeMap<String, JobEvents>, Vec<AuditLine>) {
        let mut out: BTreeMap<String, JobEvents> = BTreeMap::new();
        for (job, failures) in self.failures {
            if jobs.contains(&job.as_str()) {
                out.entry(job).or_default().failures = failures;
            }
        }
        for (job, vs) in self.verifications {
            for j in jobs.iter().filter(|j| job.is_empty() || **j == job) {
                out.entry((*j).to_owned())
                    .or_default()
                    .verifications
                    .extend(vs.iter().cloned());
            }
        }
        for e in out.values_mut() {
            e.verifications.sort_by_key(|v| v.time);
        }
        (out, self.audit)
    }
}

/// Reads a repository's audit records since `since`: failed runs and
/// verifications per job, and the newest lines for people.
///
/// # Errors
///
/// Storage errors while listing.
pub async fn read_events(
    repo: &Repository,
    repository: &str,
    since: Option<DateTime<Utc>>,
) -> Result<RepositoryEvents> {
    let records = backup_core::audit::read_recent(repo, since, 100_000).await?;
    let mut ev = RepositoryEvents::default();
    for r in &records {
        let d = &r.body.details;
        let job = d
            .get("job")
            .and_then(serde_json::Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let ok = r.body.status == "success";
        match r.body.operation.as_str() {
            "create" if !ok && !job.is_empty() => {
                let error = d
                    .get("error")
                    .and_then(serde_json::Value::as_str)
                    .unwrap_or("failed")
                    .to_owned();
                ev.failures
                    .entry(job)
                    .or_default()
                    .push(Run::failed(r.body.timestamp, error));
            }
            "verify" => {
                let problems = d
                    .get("problems")
                    .and_then(serde_json::Value::as_u64)
                    .unwrap_or(u64::from(!ok));
                ev.verifications.entry(job).or_default().push(Verification {
                    time: r.body.timestamp,
                    ok,
                    problems,
                });
            }
            _ => {}
        }
        if let Some(line) = RestoreLine::of_record(repository, r) {
            ev.restores.push(line);
        }
        if ev.audit.len() < AUDIT_LINES {
            ev.audit.push(AuditLine::of_record(repository, r));
        }
    }
    for v in ev.failures.values_mut() {
        v.reverse();
    }
    for v in ev.verifications.values_mut() {
        v.reverse();
    }
    Ok(ev)
}

/// The key snapshots without a job are grouped under: their source.
pub fn job_key(e: &SnapshotEntry) -> Option<String> {
    if e.snapshot.tags.iter().any(|t| t == "safety-backup") {
        return None;
    }
    Some(
        e.snapshot
            .job
            .clone()
            .unwrap_or_else(|| e.snapshot.source.url.clone()),
    )
}

impl History {
    /// Reads the history of `repositories` (name and open repository)
    /// since `since`; jobs and objectives come from `config` when given,
    /// otherwise from the snapshots' job names (or sources).
    ///
    /// # Errors
    ///
    /// Storage errors while listing.
    pub async fn load(
        config: Option<&Config>,
        repositories: &[(String, Repository)],
        since: Option<DateTime<Utc>>,
    ) -> Result<Self> {
        let mut jobs: BTreeMap<String, JobHistory> = BTreeMap::new();
        // Jobs whose changes are captured continuously (configured so, or
        // without a configuration: physical PostgreSQL and MongoDB).
        let mut capturing: std::collections::BTreeSet<String> = std::collections::BTreeSet::new();
        if let Some(c) = config {
            for j in c.all_jobs()? {
                if j.wal.is_some() || j.oplog_continuous {
                    capturing.insert(j.name.clone());
                }
                let mut h = JobHistory {
                    name: j.name.clone(),
                    ..JobHistory::default()
                };
                h.describe(&j);
                jobs.insert(j.name.clone(), h);
            }
        }
        let mut usage = Vec::new();
        let mut audit = Vec::new();
        let mut restores: Vec<RestoreLine> = Vec::new();
        for (repo_name, repo) in repositories {
            let (snapshots, _) = repo.snapshots().await?;
            let configured = config.is_some();
            for e in &snapshots {
                let Some(key) = job_key(e) else { continue };
                let entry = match jobs.get_mut(&key) {
                    Some(j) => j,
                    None if configured => continue,
                    None => jobs.entry(key.clone()).or_insert_with(|| JobHistory {
                        name: key.clone(),
                        kind: e.snapshot.source.kind.clone(),
                        source: e.snapshot.source.url.clone(),
                        repository: Some(repo_name.clone()),
                        ..JobHistory::default()
                    }),
                };
                if entry.repository.as_deref() != Some(repo_name.as_str()) {
                    continue;
                }
                if entry.kind.is_empty() || entry.source.is_empty() {
                    entry.kind.clone_from(&e.snapshot.source.kind);
                    entry.source.clone_from(&e.snapshot.source.url);
                }
                entry.restore_points.push(e.snapshot.time);
                if !configured && may_capture(e) {
                    capturing.insert(key.clone());
                }
                if since.is_none_or(|s| e.snapshot.time >= s) {
                    entry.runs.push(Run::of_snapshot(e));
                }
            }
            let mine: Vec<String> = jobs
                .values()
                .filter(|j| j.repository.as_deref() == Some(repo_name.as_str()))
                .map(|j| j.name.clone())
                .collect();
            let mine: Vec<&str> = mine.iter().map(String::as_str).collect();
            let mut events = read_events(repo, repo_name, since).await?;
            restores.append(&mut events.restores);
            let (shares, lines) = events.per_job(&mine);
            for (job, ev) in shares {
                if let Some(j) = jobs.get_mut(&job) {
                    j.add_events(ev);
                }
            }
            audit.extend(lines);
            let (drills, _) = backup_core::drill::list(repo).await?;
            for (id, d) in drills {
                if since.is_some_and(|s| d.started < s) {
                    continue;
                }
                let key = d.job.clone().unwrap_or_else(|| d.source.url.clone());
                if let Some(j) = jobs.get_mut(&key) {
                    j.push_drill(DrillPoint::of_record(Some(id), &d));
                }
            }
            for j in jobs
                .values_mut()
                .filter(|j| j.repository.as_deref() == Some(repo_name.as_str()))
                .filter(|j| capturing.contains(&j.name))
            {
                j.capture = capture_window(repo, j).await?;
            }
            usage.push(RepositoryUsage {
                name: repo_name.clone(),
                size: crate::repository::size(repo).await?,
                free: None,
                total: None,
            });
        }
        for j in jobs.values_mut() {
            j.runs.sort_by_key(|r| r.time);
            j.restore_points.sort();
        }
        audit.sort_by_key(|a| std::cmp::Reverse(a.time));
        audit.truncate(AUDIT_LINES);
        restores.sort_by_key(|r| std::cmp::Reverse(r.time));
        Ok(History {
            generated: Utc::now(),
            since,
            jobs: jobs.into_values().collect(),
            repositories: usage,
            audit,
            restores,
        })
    }
}

/// Whether a snapshot's source may have its changes captured: a
/// physical PostgreSQL base backup, or MongoDB.
fn may_capture(e: &SnapshotEntry) -> bool {
    match e.snapshot.source.kind.as_str() {
        "mongodb" => true,
        #[cfg(feature = "postgres")]
        "postgres" => backup_sources::postgres::physical::is_physical(&e.snapshot.metadata),
        _ => false,
    }
}

/// The newest restorable window of a job's captured changes, as the
/// repository holds it: its lag is the time since the newest change was
/// stored. `None` when nothing is captured.
async fn capture_window(repo: &Repository, j: &JobHistory) -> Result<Option<CaptureWindow>> {
    let listed = crate::pitr::windows(repo, Some(&j.source)).await?;
    let now = Utc::now();
    Ok(listed
        .iter()
        .flat_map(|s| {
            s.windows
                .iter()
                .filter_map(move |w| Some((s.capture.clone(), w.from_time?, w.to_time?)))
        })
        .max_by_key(|(_, _, to)| *to)
        .map(|(kind, from, to)| CaptureWindow {
            kind,
            from,
            to,
            lag_seconds: (now - to).num_milliseconds().max(0) as f64 / 1000.0,
            ..CaptureWindow::default()
        }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(s: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
    }

    #[test]
    fn baseline_and_order() {
        let mut j = JobHistory::default();
        for i in 0..15 {
            let mut r = Run::failed(t("2026-01-01T00:00:00Z") + chrono::Duration::hours(i), "x");
            r.ok = i % 5 != 0;
            r.duration_seconds = i as f64;
            j.push_run(r);
        }
        j.push_run(Run::failed(t("2025-12-31T00:00:00Z"), "early"));
        assert_eq!(j.runs[0].error.as_deref(), Some("early"));
        let b = j.baseline(4, None);
        let d: Vec<f64> = b.iter().map(|r| r.duration_seconds).collect();
        assert_eq!(d, [11.0, 12.0, 13.0, 14.0]);
        let b = j.baseline(3, Some(t("2026-01-01T06:00:00Z")));
        let d: Vec<f64> = b.iter().map(|r| r.duration_seconds).collect();
        assert_eq!(d, [2.0, 3.0, 4.0]);
    }
}
