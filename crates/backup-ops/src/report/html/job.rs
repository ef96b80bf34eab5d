//! One job on the page: its charts, drills, summary, capture state and
//! recent failures.

use std::fmt::Write as _;

use backup_core::util::human_bytes;
use chrono::{DateTime, Utc};

use super::chart::{chart, Limit, Series, Unit};
use super::{badge, escape, opt_time, secs, time};
use crate::report::{count, human_seconds, CaptureWindow, JobHistory, JobSummary, Run};

/// The charts of a job: durations, sizes, storage growth, drills.
pub fn job_charts(j: &JobHistory) -> String {
    let ok: Vec<&Run> = j.runs.iter().filter(|r| r.ok).collect();
    let failures: Vec<i64> = j
        .runs
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.time.timestamp())
        .collect();
    let pts = |f: fn(&Run) -> f64| -> Vec<(i64, f64)> {
        ok.iter().map(|r| (r.time.timestamp(), f(r))).collect()
    };
    let mut growth = Vec::with_capacity(ok.len());
    let mut total = 0u64;
    for r in &ok {
        total += r.bytes_stored;
        growth.push((r.time.timestamp(), total as f64));
    }
    let mut out = String::from("<div class=\"charts\">");
    out.push_str(&chart(
        "Duration per run",
        Unit::Seconds,
        &[Series {
            label: "duration".into(),
            color: "#2563eb",
            points: pts(|r| r.duration_seconds),
        }],
        &[],
        &failures,
    ));
    out.push_str(&chart(
        "Size per run",
        Unit::Bytes,
        &[
            Series {
                label: "snapshot size".into(),
                color: "#7c3aed",
                points: pts(|r| r.logical_bytes as f64),
            },
            Series {
                label: "added".into(),
                color: "#0891b2",
                points: pts(|r| r.bytes_added as f64),
            },
        ],
        &[],
        &failures,
    ));
    out.push_str(&chart(
        "Storage growth (stored, cumulative)",
        Unit::Bytes,
        &[Series {
            label: "stored".into(),
            color: "#059669",
            points: growth,
        }],
        &[],
        &[],
    ));
    if !j.drills.is_empty() {
        let rto: Vec<(i64, f64)> = j
            .drills
            .iter()
            .filter_map(|d| d.rto_seconds.map(|r| (d.time.timestamp(), r)))
            .collect();
        let rpo: Vec<(i64, f64)> = j
            .drills
            .iter()
            .filter_map(|d| d.rpo_seconds.map(|r| (d.time.timestamp(), r)))
            .collect();
        let drill_failures: Vec<i64> = j
            .drills
            .iter()
            .filter(|d| !d.ok)
            .map(|d| d.time.timestamp())
            .collect();
        let limit = |label: &str, v: Option<f64>| -> Vec<Limit> {
            v.map(|value| Limit {
                label: label.to_owned(),
                color: "#c4320a",
                value,
            })
            .into_iter()
            .collect()
        };
        out.push_str(&chart(
            "Drills: RTO",
            Unit::Seconds,
            &[Series {
                label: "RTO".into(),
                color: "#d97706",
                points: rto,
            }],
            &limit("max_rto", j.objectives.rto_seconds),
            &drill_failures,
        ));
        out.push_str(&chart(
            "Drills: RPO",
            Unit::Seconds,
            &[Series {
                label: "RPO".into(),
                color: "#db2777",
                points: rpo,
            }],
            &limit("max_age", j.objectives.rpo_seconds),
            &[],
        ));
    }
    out.push_str("</div>");
    out
}

/// The table of a job's drills, newest first (at most `limit`).
pub fn drills_table(j: &JobHistory, limit: usize) -> String {
    if j.drills.is_empty() {
        return "<p class=\"muted\">No drills yet.</p>".to_owned();
    }
    let mut out = String::from(
        "<table><tr><th>Started</th><th>Result</th><th>Snapshot</th><th>RTO</th><th>RPO</th><th>Phases</th><th>Checks and problems</th></tr>",
    );
    for d in j.drills.iter().rev().take(limit) {
        let phases: Vec<String> = d
            .phases
            .iter()
            .map(|(n, s)| format!("{} {}", escape(n), human_seconds(*s)))
            .collect();
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td><code>{}</code></td><td>{}{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(d.time),
            badge(Some(d.ok), "passed", "failed"),
            d.snapshot
                .as_deref()
                .map_or_else(|| "-".to_owned(), |s| escape(s.get(..8).unwrap_or(s))),
            secs(d.rto_seconds),
            d.max_rto_seconds
                .map(|m| format!(" <span class=\"muted\">(max {})</span>", human_seconds(m)))
                .unwrap_or_default(),
            secs(d.rpo_seconds),
            phases.join(", "),
            if d.problems.is_empty() {
                format!(
                    "{} passed",
                    count(d.checks, "check", "checks")
                )
            } else {
                escape(&d.problems.join("; "))
            }
        );
    }
    out.push_str("</table>");
    out
}

/// The numbers of a job as a definition list.
pub fn summary_list(j: &JobHistory, s: &JobSummary) -> String {
    let mut out = String::from("<dl class=\"kv\">");
    let mut row = |k: &str, v: String| {
        let _ = write!(out, "<dt>{}</dt><dd>{v}</dd>", escape(k));
    };
    row(
        "Source",
        format!(
            "{} <span class=\"muted\">({})</span>",
            escape(&j.source),
            escape(&j.kind)
        ),
    );
    if let Some(r) = &j.repository {
        row("Repository", escape(r));
    }
    row(
        "Runs",
        format!(
            "{} ({} succeeded, {} failed){}",
            s.runs,
            s.succeeded,
            s.failed,
            s.success_rate
                .map(|r| format!(", success rate <b>{:.1}%</b>", r * 100.0))
                .unwrap_or_default()
        ),
    );
    row(
        "Durations",
        format!(
            "median {}, longest {}",
            secs(s.median_duration_seconds),
            secs(s.max_duration_seconds)
        ),
    );
    row(
        "Sizes",
        format!(
            "newest snapshot {}, added {} and stored {} in the period",
            s.latest_size.map_or_else(|| "-".to_owned(), human_bytes),
            human_bytes(s.bytes_added),
            human_bytes(s.bytes_stored)
        ),
    );
    let objective = j
        .objectives
        .rpo_seconds
        .map(|o| format!(" (objective {})", human_seconds(o)))
        .unwrap_or_default();
    row(
        "RPO",
        match &s.capture {
            Some(c) => format!(
                "capture lag {}{objective} {} <span class=\"muted\">(continuous {}: any point of the window can be restored)</span>",
                human_seconds(c.lag_seconds),
                badge(s.rpo_met, "met", "missed"),
                crate::pitr::captured(&c.kind)
            ),
            None => format!(
                "worst gap without a restore point {}{objective} {}",
                secs(s.worst_rpo_seconds),
                badge(s.rpo_met, "met", "missed")
            ),
        },
    );
    if let Some(c) = &s.capture {
        row("Capture", capture_state(c));
    }
    row(
        "RTO",
        format!(
            "last drill {}, worst {}{} {}",
            secs(s.last_rto_seconds),
            secs(s.worst_rto_seconds),
            j.objectives
                .rto_seconds
                .map(|o| format!(" (objective {})", human_seconds(o)))
                .unwrap_or_default(),
            badge(s.rto_met, "met", "missed")
        ),
    );
    row(
        "Drills",
        format!(
            "{} ({} passed){}",
            s.drills,
            s.drills_passed,
            s.last_drill_rpo_seconds
                .map(|r| format!(", last restored a point {} old", human_seconds(r)))
                .unwrap_or_default()
        ),
    );
    row(
        "Verifications",
        format!("{} ({} failed)", s.verifications, s.verifications_failed),
    );
    let points = || {
        format!(
            "{} from {} to {}",
            count(s.restore_points, "restore point", "restore points"),
            opt_time(s.oldest_point),
            opt_time(s.newest_point)
        )
    };
    row(
        "Restorable",
        match (&s.capture, s.restore_points) {
            (Some(c), n) => format!(
                "any point from {} to {} <span class=\"muted\">({} of {}; {} base {})</span>",
                time_s(c.from),
                time_s(c.to),
                human_seconds((c.to - c.from).num_milliseconds() as f64 / 1000.0),
                crate::pitr::captured(&c.kind),
                n,
                if n == 1 { "snapshot" } else { "snapshots" }
            ),
            (None, 0) => "<span class=\"bad\">no restore point</span>".to_owned(),
            (None, _) => points(),
        },
    );
    out.push_str("</dl>");
    out
}

/// `2026-11-23 17:04:05 UTC`: a time to the second (capture windows).
fn time_s(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M:%S UTC").to_string()
}

/// A capture's state: running or not, lag, gaps, the last error.
fn capture_state(c: &CaptureWindow) -> String {
    let mut parts = Vec::new();
    match c.streaming {
        Some(true) => parts.push(format!(
            "<span class=\"ok\">{} capture running</span>",
            crate::pitr::captured(&c.kind)
        )),
        Some(false) => parts.push(format!(
            "<span class=\"bad\">{} capture stopped</span>",
            crate::pitr::captured(&c.kind)
        )),
        None => parts.push(format!("{} captured", crate::pitr::captured(&c.kind))),
    }
    parts.push(format!(
        "lag {}{}",
        human_seconds(c.lag_seconds),
        c.lag_bytes
            .map(|b| format!(" ({} not stored yet)", human_bytes(b)))
            .unwrap_or_default()
    ));
    parts.push(format!("newest change {}", time_s(c.to)));
    if let Some(g) = c.gaps {
        parts.push(count(
            usize::try_from(g).unwrap_or(usize::MAX),
            "gap",
            "gaps",
        ));
    }
    let mut out = parts.join(", ");
    if let Some(e) = &c.last_error {
        let _ = write!(out, " <span class=\"bad\">last error: {}</span>", escape(e));
    }
    out
}

/// The newest failed runs with their errors.
pub fn failures_list(j: &JobHistory, limit: usize) -> String {
    let failed: Vec<&Run> = j.runs.iter().rev().filter(|r| !r.ok).take(limit).collect();
    if failed.is_empty() {
        return String::new();
    }
    let mut out = String::from("<h3>Failed runs</h3><table><tr><th>Time</th><th>Error</th></tr>");
    for r in failed {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td></tr>",
            time(r.time),
            escape(r.error.as_deref().unwrap_or(""))
        );
    }
    out.push_str("</table>");
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A job whose WAL is captured: restorable is the window, the RPO the
    /// capture's lag, and the page says whether the capture runs.
    #[test]
    fn a_capture_window_is_what_is_restorable() {
        use crate::report::{summarize, CaptureWindow, JobHistory, Objectives, Run};
        let t = |h: i64| {
            DateTime::parse_from_rfc3339("2026-01-01T00:00:00Z")
                .unwrap()
                .with_timezone(&Utc)
                + chrono::Duration::hours(h)
        };
        let mut j = JobHistory {
            name: "cluster".into(),
            objectives: Objectives {
                rpo_seconds: Some(60.0),
                rto_seconds: None,
            },
            restore_points: vec![t(0)],
            ..JobHistory::default()
        };
        let mut r = Run::failed(t(0), "");
        r.ok = true;
        r.error = None;
        j.push_run(r);
        let s = summarize(&j, None, t(5));
        assert!(summary_list(&j, &s).contains("1 restore point from"));
        assert_eq!(s.worst_rpo_seconds, Some(5.0 * 3600.0));
        j.capture = Some(CaptureWindow {
            kind: "postgres-wal".into(),
            from: t(0),
            to: t(5),
            lag_seconds: 0.4,
            streaming: Some(true),
            lag_bytes: Some(2048),
            gaps: Some(0),
            last_error: None,
        });
        let s = summarize(&j, None, t(5));
        assert_eq!(s.worst_rpo_seconds, Some(0.4));
        assert_eq!(s.rpo_met, Some(true));
        let html = summary_list(&j, &s);
        assert!(
            html.contains("any point from 2026-01-01 00:00:00 UTC to 2026-01-01 05:00:00 UTC"),
            "{html}"
        );
        assert!(html.contains("capture lag 0.4s"), "{html}");
        assert!(html.contains("WAL capture running"), "{html}");
        assert!(!html.contains("restore point"), "{html}");
        assert_eq!(
            crate::report::restorable_brief(&s),
            "any point of 5h 0m (WAL)"
        );
    }
}
