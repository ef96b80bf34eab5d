//! Reports: what happened to each job over a period — success rate,
//! durations and sizes over time, verifications, drills with their RTO and
//! RPO against the job's objectives, restore points and storage growth —
//! as HTML (inline SVG charts, no external assets), Markdown or JSON.
//!
//! [`History`] is the data (read from the repositories by
//! [`History::load`], or kept up to date in memory by the daemon);
//! [`build`] summarises it into a [`Report`]; [`render`] writes one.
//! [`anomaly`] holds the checks behind the `duration_anomaly`,
//! `size_anomaly` and `storage_low` alerts; [`html`] the page parts the
//! daemon's status page shares.

pub mod anomaly;
mod history;
pub mod html;
mod markdown;

use chrono::{DateTime, Utc};
use serde::Serialize;

pub use history::{
    job_key, read_events, AuditLine, CaptureWindow, DrillPoint, History, JobEvents, JobHistory,
    Objectives, RepositoryEvents, RepositoryUsage, RestoreLine, Run, Verification, AUDIT_LINES,
};

use crate::config::ReportFormat;

/// A job's period in numbers.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct JobSummary {
    /// Runs in the period.
    pub runs: usize,
    /// Of which succeeded.
    pub succeeded: usize,
    /// Of which failed.
    pub failed: usize,
    /// `succeeded / runs` (none without runs).
    pub success_rate: Option<f64>,
    /// Median duration of the successful runs.
    pub median_duration_seconds: Option<f64>,
    /// Longest successful run.
    pub max_duration_seconds: Option<f64>,
    /// Bytes added in the period.
    pub bytes_added: u64,
    /// Bytes stored in the period (the repository's growth from this job,
    /// before prune).
    pub bytes_stored: u64,
    /// Content size of the newest snapshot.
    pub latest_size: Option<u64>,
    /// The newest successful run.
    pub last_success: Option<DateTime<Utc>>,
    /// The worst RPO a disaster could have met: for a job with
    /// continuous capture, the capture's lag (any point of its window can
    /// be restored); otherwise the longest time without a new restore
    /// point in the period (between successive successful runs, from the
    /// newest restore point before the period, and from the last one to
    /// the report).
    pub worst_rpo_seconds: Option<f64>,
    /// Whether the worst RPO is within the objective (`max_age`).
    pub rpo_met: Option<bool>,
    /// Verifications in the period.
    pub verifications: usize,
    /// Of which found problems or failed.
    pub verifications_failed: usize,
    /// Drills in the period.
    pub drills: usize,
    /// Of which passed.
    pub drills_passed: usize,
    /// RTO of the newest drill that reached a usable copy.
    pub last_rto_seconds: Option<f64>,
    /// The longest RTO of the period.
    pub worst_rto_seconds: Option<f64>,
    /// RPO of the newest drill that restored a point.
    pub last_drill_rpo_seconds: Option<f64>,
    /// Whether every drill's RTO is within the objective (`max_rto`).
    pub rto_met: Option<bool>,
    /// Restore points (snapshots) that exist now.
    pub restore_points: usize,
    /// The oldest of them.
    pub oldest_point: Option<DateTime<Utc>>,
    /// The newest.
    pub newest_point: Option<DateTime<Utc>>,
    /// The restorable window of continuous capture, for jobs that have
    /// one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub capture: Option<CaptureWindow>,
}

/// One job in a report.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct JobReport {
    /// The numbers.
    pub summary: JobSummary,
    /// The history they come from.
    pub history: JobHistory,
}

/// A report over a period.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Report {
    /// When it was made.
    pub generated: DateTime<Utc>,
    /// The start of the period.
    pub since: Option<DateTime<Utc>>,
    /// Per job.
    pub jobs: Vec<JobReport>,
    /// Per repository.
    pub repositories: Vec<RepositoryUsage>,
    /// The newest audit records.
    pub audit: Vec<AuditLine>,
    /// The restores of the period with who asked, approved and ran them,
    /// newest first.
    pub restores: Vec<RestoreLine>,
}

/// Summarises one job's history as of `now`.
pub fn summarize(j: &JobHistory, since: Option<DateTime<Utc>>, now: DateTime<Utc>) -> JobSummary {
    let in_period = |t: &DateTime<Utc>| since.is_none_or(|s| *t >= s);
    let runs: Vec<&Run> = j.runs.iter().filter(|r| in_period(&r.time)).collect();
    let ok: Vec<&Run> = runs.iter().copied().filter(|r| r.ok).collect();
    let durations: Vec<f64> = ok.iter().map(|r| r.duration_seconds).collect();
    let mut worst_gap: Option<f64> = None;
    // The gaps start at the newest restore point before the period (when
    // one still exists), else at the period's first backup.
    let mut prev = since.and_then(|s| j.restore_points.iter().rev().find(|t| **t < s).copied());
    for r in &ok {
        if let Some(p) = prev {
            let gap = (r.time - p).num_milliseconds() as f64 / 1000.0;
            worst_gap = Some(worst_gap.map_or(gap, |w: f64| w.max(gap)));
        }
        prev = Some(r.time);
    }
    if let Some(p) = prev {
        let gap = (now - p).num_milliseconds() as f64 / 1000.0;
        worst_gap = Some(worst_gap.map_or(gap, |w: f64| w.max(gap)));
    }
    // With continuous capture every point of the window is restorable:
    // what a disaster would lose is what the capture has not stored yet.
    if let Some(c) = &j.capture {
        worst_gap = Some(c.lag_seconds);
    }
    let drills: Vec<&DrillPoint> = j.drills.iter().filter(|d| in_period(&d.time)).collect();
    let rtos: Vec<f64> = drills.iter().filter_map(|d| d.rto_seconds).collect();
    let verifications: Vec<&Verification> = j
        .verifications
        .iter()
        .filter(|v| in_period(&v.time))
        .collect();
    JobSummary {
        runs: runs.len(),
        succeeded: ok.len(),
        failed: runs.len() - ok.len(),
        success_rate: (!runs.is_empty()).then(|| ok.len() as f64 / runs.len() as f64),
        median_duration_seconds: anomaly::median(&durations),
        max_duration_seconds: durations.iter().copied().reduce(f64::max),
        bytes_added: ok.iter().map(|r| r.bytes_added).sum(),
        bytes_stored: ok.iter().map(|r| r.bytes_stored).sum(),
        latest_size: ok.last().map(|r| r.logical_bytes),
        last_success: ok.last().map(|r| r.time),
        worst_rpo_seconds: worst_gap,
        rpo_met: j.objectives.rpo_seconds.zip(worst_gap).map(|(o, w)| w <= o),
        verifications: verifications.len(),
        verifications_failed: verifications.iter().filter(|v| !v.ok).count(),
        drills: drills.len(),
        drills_passed: drills.iter().filter(|d| d.ok).count(),
        last_rto_seconds: drills.iter().rev().find_map(|d| d.rto_seconds),
        worst_rto_seconds: rtos.iter().copied().reduce(f64::max),
        last_drill_rpo_seconds: drills.iter().rev().find_map(|d| d.rpo_seconds),
        rto_met: j.objectives.rto_seconds.and_then(|o| {
            (!drills.is_empty())
                .then(|| drills.iter().all(|d| d.rto_seconds.is_some_and(|r| r <= o)))
        }),
        restore_points: j.restore_points.len(),
        oldest_point: j.restore_points.first().copied(),
        newest_point: j.restore_points.last().copied(),
        capture: j.capture.clone(),
    }
}

/// Summarises a history into a report.
pub fn build(history: &History) -> Report {
    Report {
        generated: history.generated,
        since: history.since,
        jobs: history
            .jobs
            .iter()
            .map(|j| JobReport {
                summary: summarize(j, history.since, history.generated),
                history: j.clone(),
            })
            .collect(),
        repositories: history.repositories.clone(),
        audit: history.audit.clone(),
        restores: history.restores.clone(),
    }
}

/// Writes a report in `format`.
pub fn render(report: &Report, format: ReportFormat) -> String {
    match format {
        ReportFormat::Html => html::report(report),
        ReportFormat::Markdown => markdown::report(report),
        ReportFormat::Json => serde_json::to_string_pretty(report).unwrap_or_default(),
    }
}

/// What can be restored, in a few words: `any point of 3h 2m (WAL)` for
/// a job with continuous capture, else `2 restore points`.
pub fn restorable_brief(s: &JobSummary) -> String {
    match &s.capture {
        Some(c) => format!(
            "any point of {} ({})",
            human_seconds((c.to - c.from).num_milliseconds() as f64 / 1000.0),
            crate::pitr::captured(&c.kind)
        ),
        None => count(s.restore_points, "restore point", "restore points"),
    }
}

/// `1 check`, `2 checks`: a number with its noun in the right number.
pub fn count(n: usize, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

/// `90s` → `1m 30s`: a duration for people, the one format every report,
/// page and message uses (`2.3s`, `1m 30s`, `2h 1m`, `1d 2h`).
pub fn human_seconds(s: f64) -> String {
    if !s.is_finite() {
        return "-".to_owned();
    }
    if s < 10.0 {
        return format!("{s:.1}s");
    }
    let total = s.round() as u64;
    let (d, h, m, sec) = (
        total / 86400,
        total / 3600 % 24,
        total / 60 % 60,
        total % 60,
    );
    match (d, h, m) {
        (0, 0, 0) => format!("{sec}s"),
        (0, 0, _) => format!("{m}m {sec}s"),
        (0, _, _) => format!("{h}h {m}m"),
        _ => format!("{d}d {h}h"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(h: i64) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
            .unwrap()
            .with_timezone(&Utc)
            + chrono::Duration::hours(h)
    }

    fn ok_run(h: i64, secs: f64) -> Run {
        let mut r = Run::failed(t(h), "");
        r.ok = true;
        r.error = None;
        r.duration_seconds = secs;
        r.bytes_added = 100;
        r.bytes_stored = 50;
        r.logical_bytes = 1000;
        r
    }

    /// A known history gives known numbers.
    #[test]
    fn summary_of_a_known_history() {
        let mut j = JobHistory {
            name: "db".into(),
            objectives: Objectives {
                rpo_seconds: Some(7200.0),
                rto_seconds: Some(60.0),
            },
            ..JobHistory::default()
        };
        for h in [0, 1, 2, 6] {
            j.push_run(ok_run(h, h as f64 + 1.0));
        }
        j.push_run(Run::failed(t(3), "connection refused"));
        j.push_drill(DrillPoint {
            record: None,
            time: t(4),
            ok: true,
            rto_seconds: Some(30.0),
            rpo_seconds: Some(7200.0),
            max_rto_seconds: Some(60.0),
            snapshot: Some("ab".repeat(32)),
            phases: vec![("load".into(), 29.0)],
            problems: vec![],
            checks: 2,
        });
        j.push_drill(DrillPoint {
            record: None,
            time: t(5),
            ok: false,
            rto_seconds: Some(90.0),
            rpo_seconds: Some(10800.0),
            max_rto_seconds: Some(60.0),
            snapshot: Some("cd".repeat(32)),
            phases: vec![],
            problems: vec!["RTO over".into()],
            checks: 2,
        });
        j.restore_points = vec![t(2), t(6)];
        let s = summarize(&j, Some(t(0)), t(7));
        assert_eq!((s.runs, s.succeeded, s.failed), (5, 4, 1));
        assert_eq!(s.success_rate, Some(0.8));
        assert_eq!(s.median_duration_seconds, Some(2.5));
        assert_eq!(s.max_duration_seconds, Some(7.0));
        assert_eq!(s.bytes_stored, 200);
        // From 02:00 to 06:00 there was no restore point: 4 hours.
        assert_eq!(s.worst_rpo_seconds, Some(4.0 * 3600.0));
        assert_eq!(s.rpo_met, Some(false));
        assert_eq!((s.drills, s.drills_passed), (2, 1));
        assert_eq!(s.last_rto_seconds, Some(90.0));
        assert_eq!(s.worst_rto_seconds, Some(90.0));
        assert_eq!(s.rto_met, Some(false));
        assert_eq!(s.restore_points, 2);

        let history = History {
            generated: t(7),
            since: Some(t(0)),
            jobs: vec![j],
            repositories: vec![RepositoryUsage {
                name: "main".into(),
                size: 4096,
                free: Some(1 << 30),
                total: Some(4 << 30),
            }],
            audit: vec![],
            restores: vec![RestoreLine {
                time: t(6),
                repository: "main".into(),
                job: Some("db".into()),
                target: "postgres://db1/app".into(),
                snapshot: "1a2b3c4d".into(),
                ok: true,
                request: Some("r-0011aabb".into()),
                requested_by: "otto".into(),
                approved_by: vec!["ada".into()],
                executed_by: "backup@host1".into(),
            }],
        };
        let report = build(&history);
        let md = render(&report, ReportFormat::Markdown);
        assert!(md.contains("| db |"), "{md}");
        assert!(md.contains("80.0%"), "{md}");
        assert!(md.contains("connection refused"), "{md}");
        assert!(
            md.contains("| r-0011aabb | otto | ada | backup@host1 |"),
            "{md}"
        );
        let page = render(&report, ReportFormat::Html);
        assert!(page.contains("<svg"), "page has charts");
        assert!(
            !page.contains("http://") && !page.contains("https://"),
            "no external resource"
        );
        assert!(page.contains("1m 30s"), "RTO shown");
        let json: serde_json::Value =
            serde_json::from_str(&render(&report, ReportFormat::Json)).unwrap();
        assert_eq!(json["jobs"][0]["summary"]["failed"], 1);
    }

    #[test]
    fn durations_for_people() {
        assert_eq!(human_seconds(2.26), "2.3s");
        assert_eq!(human_seconds(90.0), "1m 30s");
        assert_eq!(human_seconds(7260.0), "2h 1m");
        assert_eq!(human_seconds(90000.0), "1d 1h");
        assert_eq!(
            count(1, "restore point", "restore points"),
            "1 restore point"
        );
        assert_eq!(count(0, "check", "checks"), "0 checks");
    }
}
