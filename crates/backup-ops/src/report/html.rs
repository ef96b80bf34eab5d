//! HTML for reports and the daemon's status page: one self-contained page
//! (inline style, inline SVG charts, no script, no external resource), so
//! that it works offline and in a mail client.

use std::fmt::Write as _;

use backup_core::util::human_bytes;
use chrono::{DateTime, Utc};

use super::{human_seconds, AuditLine, JobHistory, JobSummary, Report, RepositoryUsage};

/// The page's style sheet.
pub const STYLE: &str = "\
body{font-family:system-ui,-apple-system,'Segoe UI',sans-serif;margin:0;color:#1d2330;background:#f4f6f9}\
header{background:#1d2330;color:#fff;padding:14px 24px}header h1{margin:0;font-size:20px}\
header p{margin:4px 0 0;color:#b8c0cc;font-size:13px}\
main{padding:16px 24px;max-width:1280px}\
section{background:#fff;border:1px solid #dde2ea;border-radius:6px;margin:0 0 16px;padding:12px 16px}\
h2{font-size:17px;margin:0 0 8px}h3{font-size:14px;margin:12px 0 6px;color:#4a5568}\
table{border-collapse:collapse;font-size:13px;width:100%}\
th,td{text-align:left;padding:4px 8px;border-bottom:1px solid #edf0f4;vertical-align:top}\
th{color:#4a5568;font-weight:600}\
.ok{color:#18794e;font-weight:600}.bad{color:#c4320a;font-weight:600}.muted{color:#718096}\
.badge{display:inline-block;border-radius:10px;padding:1px 8px;font-size:12px;font-weight:600}\
.b-ok{background:#d3f4e3;color:#18794e}.b-bad{background:#fde2dd;color:#c4320a}\
.b-run{background:#dbeafe;color:#1d4ed8}.b-idle{background:#edf0f4;color:#4a5568}\
.charts{display:flex;flex-wrap:wrap;gap:12px}\
.chart{flex:1 1 380px;min-width:320px}\
.chart svg{width:100%;height:auto;background:#fbfcfd;border:1px solid #edf0f4;border-radius:4px}\
.kv{display:grid;grid-template-columns:max-content 1fr;gap:2px 16px;font-size:13px}\
.kv dt{color:#4a5568}.kv dd{margin:0}\
";

/// Escapes text for HTML.
pub fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

/// A whole page.
pub fn page(title: &str, subtitle: &str, body: &str) -> String {
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{t}</title><style>{STYLE}</style></head>\
         <body><header><h1>{t}</h1><p>{s}</p></header><main>{body}</main></body></html>\n",
        t = escape(title),
        s = escape(subtitle),
    )
}

/// `2026-11-23 17:04 UTC`.
pub fn time(t: DateTime<Utc>) -> String {
    t.format("%Y-%m-%d %H:%M UTC").to_string()
}

fn opt_time(t: Option<DateTime<Utc>>) -> String {
    t.map_or_else(|| "-".to_owned(), time)
}

/// What a chart's values are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Seconds.
    Seconds,
    /// Bytes.
    Bytes,
}

impl Unit {
    fn format(self, v: f64) -> String {
        match self {
            Unit::Seconds => human_seconds(v),
            Unit::Bytes => human_bytes(v.max(0.0) as u64),
        }
    }
}

/// One line of a chart.
#[derive(Debug, Clone)]
pub struct Series {
    /// Legend text.
    pub label: String,
    /// Stroke colour (`#rrggbb`).
    pub color: &'static str,
    /// (Unix seconds, value), in time order.
    pub points: Vec<(i64, f64)>,
    /// A dashed line (limits).
    pub dashed: bool,
}

/// At most this many points per series are drawn: more are merged into
/// buckets keeping each bucket's highest value (spikes stay visible).
const MAX_POINTS: usize = 360;

fn thin(points: &[(i64, f64)]) -> Vec<(i64, f64)> {
    if points.len() <= MAX_POINTS {
        return points.to_vec();
    }
    let per = points.len().div_ceil(MAX_POINTS);
    points
        .chunks(per)
        .filter_map(|c| {
            c.iter()
                .copied()
                .max_by(|a, b| a.1.total_cmp(&b.1))
                .map(|(_, v)| (c[c.len() / 2].0, v))
        })
        .collect()
}

/// A line chart as inline SVG: `series` over time, red marks at the
/// bottom for `failures` (Unix seconds).
pub fn chart(title: &str, unit: Unit, series: &[Series], failures: &[i64]) -> String {
    const W: f64 = 560.0;
    const H: f64 = 170.0;
    const L: f64 = 64.0;
    const R: f64 = 12.0;
    const T: f64 = 24.0;
    const B: f64 = 40.0;
    let all = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(failures.iter().copied());
    let (mut x0, mut x1) = (i64::MAX, i64::MIN);
    for x in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
    }
    let mut out = String::new();
    let _ = write!(
        out,
        "<div class=\"chart\"><svg viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\">\
         <text x=\"{L}\" y=\"15\" font-size=\"12\" font-weight=\"600\" fill=\"#1d2330\">{t}</text>",
        t = escape(title)
    );
    if x0 > x1 {
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" font-size=\"12\" fill=\"#718096\" text-anchor=\"middle\">no data yet</text></svg></div>",
            W / 2.0,
            H / 2.0
        );
        return out;
    }
    let span = (x1 - x0).max(1) as f64;
    let ymax = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.1))
        .fold(0.0_f64, f64::max)
        .max(f64::MIN_POSITIVE)
        * 1.1;
    let px = |x: i64| L + (x - x0) as f64 / span * (W - L - R);
    let py = |y: f64| T + (1.0 - y / ymax) * (H - T - B);
    // Axes and grid.
    for i in 0..=2 {
        let v = ymax * f64::from(i) / 2.0;
        let y = py(v);
        let _ = write!(
            out,
            "<line x1=\"{L}\" x2=\"{x2}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e2e8f0\"/>\
             <text x=\"{lx}\" y=\"{ty:.1}\" font-size=\"10\" fill=\"#718096\" text-anchor=\"end\">{label}</text>",
            x2 = W - R,
            lx = L - 6.0,
            ty = y + 3.0,
            label = escape(&unit.format(v))
        );
    }
    let date = |x: i64| {
        DateTime::<Utc>::from_timestamp(x, 0)
            .map(|t| t.format("%Y-%m-%d").to_string())
            .unwrap_or_default()
    };
    let _ = write!(
        out,
        "<text x=\"{L}\" y=\"{by}\" font-size=\"10\" fill=\"#718096\">{a}</text>\
         <text x=\"{rx}\" y=\"{by}\" font-size=\"10\" fill=\"#718096\" text-anchor=\"end\">{b}</text>",
        by = H - B + 14.0,
        rx = W - R,
        a = date(x0),
        b = date(x1)
    );
    for s in series {
        let pts = thin(&s.points);
        if pts.is_empty() {
            continue;
        }
        let mut path = String::with_capacity(pts.len() * 14);
        for (x, y) in &pts {
            let _ = write!(path, "{:.1},{:.1} ", px(*x), py(*y));
        }
        let _ = write!(
            out,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"1.6\"{d} points=\"{p}\"><title>{l}</title></polyline>",
            c = s.color,
            d = if s.dashed {
                " stroke-dasharray=\"5 4\""
            } else {
                ""
            },
            p = path.trim_end(),
            l = escape(&s.label)
        );
        if pts.len() == 1 {
            let _ = write!(
                out,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"/>",
                px(pts[0].0),
                py(pts[0].1),
                s.color
            );
        }
    }
    for x in failures.iter().take(MAX_POINTS) {
        let _ = write!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"3\" height=\"8\" fill=\"#c4320a\"><title>failed run</title></rect>",
            px(*x) - 1.5,
            H - B - 8.0
        );
    }
    // Legend.
    let mut lx = L;
    for s in series {
        let _ = write!(
            out,
            "<rect x=\"{lx:.1}\" y=\"{ly}\" width=\"10\" height=\"3\" fill=\"{c}\"/>\
             <text x=\"{tx:.1}\" y=\"{ty}\" font-size=\"10\" fill=\"#4a5568\">{l}</text>",
            ly = H - 12.0,
            ty = H - 8.0,
            tx = lx + 14.0,
            c = s.color,
            l = escape(&s.label)
        );
        lx += 24.0 + s.label.len() as f64 * 5.6;
    }
    if !failures.is_empty() {
        let _ = write!(
            out,
            "<rect x=\"{lx:.1}\" y=\"{ly}\" width=\"3\" height=\"8\" fill=\"#c4320a\"/>\
             <text x=\"{tx:.1}\" y=\"{ty}\" font-size=\"10\" fill=\"#4a5568\">failed runs</text>",
            ly = H - 16.0,
            ty = H - 8.0,
            tx = lx + 8.0
        );
    }
    out.push_str("</svg></div>");
    out
}

fn badge(ok: Option<bool>, yes: &str, no: &str) -> String {
    match ok {
        Some(true) => format!("<span class=\"badge b-ok\">{}</span>", escape(yes)),
        Some(false) => format!("<span class=\"badge b-bad\">{}</span>", escape(no)),
        None => "<span class=\"muted\">-</span>".to_owned(),
    }
}

fn secs(v: Option<f64>) -> String {
    v.map_or_else(|| "-".to_owned(), human_seconds)
}

/// The charts of a job: durations, sizes, storage growth, drills.
pub fn job_charts(j: &JobHistory) -> String {
    let ok: Vec<&super::Run> = j.runs.iter().filter(|r| r.ok).collect();
    let failures: Vec<i64> = j
        .runs
        .iter()
        .filter(|r| !r.ok)
        .map(|r| r.time.timestamp())
        .collect();
    let pts = |f: fn(&super::Run) -> f64| -> Vec<(i64, f64)> {
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
            dashed: false,
        }],
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
                dashed: false,
            },
            Series {
                label: "added".into(),
                color: "#0891b2",
                points: pts(|r| r.bytes_added as f64),
                dashed: false,
            },
        ],
        &failures,
    ));
    out.push_str(&chart(
        "Storage growth (bytes stored, cumulative)",
        Unit::Bytes,
        &[Series {
            label: "stored".into(),
            color: "#059669",
            points: growth,
            dashed: false,
        }],
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
            .map(|d| (d.time.timestamp(), d.rpo_seconds))
            .collect();
        let mut rto_series = vec![Series {
            label: "RTO".into(),
            color: "#d97706",
            points: rto.clone(),
            dashed: false,
        }];
        if let Some(limit) = j.objectives.rto_seconds {
            rto_series.push(Series {
                label: "max_rto".into(),
                color: "#c4320a",
                points: [rto.first(), rto.last()]
                    .into_iter()
                    .flatten()
                    .map(|(x, _)| (*x, limit))
                    .collect(),
                dashed: true,
            });
        }
        let drill_failures: Vec<i64> = j
            .drills
            .iter()
            .filter(|d| !d.ok)
            .map(|d| d.time.timestamp())
            .collect();
        out.push_str(&chart(
            "Drills: RTO",
            Unit::Seconds,
            &rto_series,
            &drill_failures,
        ));
        let mut rpo_series = vec![Series {
            label: "RPO".into(),
            color: "#db2777",
            points: rpo.clone(),
            dashed: false,
        }];
        if let Some(limit) = j.objectives.rpo_seconds {
            rpo_series.push(Series {
                label: "max_age".into(),
                color: "#c4320a",
                points: [rpo.first(), rpo.last()]
                    .into_iter()
                    .flatten()
                    .map(|(x, _)| (*x, limit))
                    .collect(),
                dashed: true,
            });
        }
        out.push_str(&chart("Drills: RPO", Unit::Seconds, &rpo_series, &[]));
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
            escape(d.snapshot.get(..8).unwrap_or(&d.snapshot)),
            secs(d.rto_seconds),
            d.max_rto_seconds
                .map(|m| format!(" <span class=\"muted\">(max {})</span>", human_seconds(m)))
                .unwrap_or_default(),
            human_seconds(d.rpo_seconds),
            phases.join(", "),
            if d.problems.is_empty() {
                format!("{} checks passed", d.checks)
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
    row(
        "RPO",
        format!(
            "worst gap without a restore point {}{} {}",
            secs(s.worst_rpo_seconds),
            j.objectives
                .rpo_seconds
                .map(|o| format!(" (objective {})", human_seconds(o)))
                .unwrap_or_default(),
            badge(s.rpo_met, "met", "missed")
        ),
    );
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
    row(
        "Restorable",
        if s.restore_points == 0 {
            "<span class=\"bad\">no restore point</span>".to_owned()
        } else {
            format!(
                "{} restore points from {} to {}",
                s.restore_points,
                opt_time(s.oldest_point),
                opt_time(s.newest_point)
            )
        },
    );
    out.push_str("</dl>");
    out
}

/// The repositories' sizes and space.
pub fn repositories_table(repos: &[RepositoryUsage]) -> String {
    let mut out =
        String::from("<table><tr><th>Repository</th><th>Size</th><th>Free</th><th>Of</th></tr>");
    for r in repos {
        let low = match (r.free, r.total) {
            (Some(f), Some(t)) if t > 0 => (f as f64 / t as f64) < 0.2,
            _ => false,
        };
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td></tr>",
            escape(&r.name),
            human_bytes(r.size),
            if low { "bad" } else { "" },
            r.free.map_or_else(|| "-".to_owned(), human_bytes),
            r.total.map_or_else(|| "-".to_owned(), human_bytes)
        );
    }
    out.push_str("</table>");
    out
}

/// The newest audit records.
pub fn audit_table(lines: &[AuditLine], limit: usize) -> String {
    if lines.is_empty() {
        return "<p class=\"muted\">No audit records.</p>".to_owned();
    }
    let mut out = String::from(
        "<table><tr><th>#</th><th>Time</th><th>Repository</th><th>Operation</th><th>Status</th><th>By</th><th>Details</th></tr>",
    );
    for a in lines.iter().take(limit) {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td></tr>",
            a.seq,
            time(a.time),
            escape(&a.repository),
            escape(&a.operation),
            if a.status == "success" { "ok" } else { "bad" },
            escape(&a.status),
            escape(&a.by),
            escape(&a.summary)
        );
    }
    out.push_str("</table>");
    out
}

/// A report as a page.
pub fn report(r: &Report) -> String {
    let mut body = String::new();
    let _ = write!(
        body,
        "<section><h2>Summary</h2><table><tr><th>Job</th><th>Runs</th><th>Success rate</th><th>Last success</th><th>Worst RPO</th><th>Last RTO</th><th>Drills</th><th>Restore points</th></tr>"
    );
    for j in &r.jobs {
        let s = &j.summary;
        let _ = write!(
            body,
            "<tr><td><a href=\"#job-{id}\">{n}</a></td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{} {}</td><td>{} {}</td><td>{}/{}</td><td>{}</td></tr>",
            s.runs,
            if s.failed > 0 { "bad" } else { "ok" },
            s.success_rate
                .map_or_else(|| "-".to_owned(), |x| format!("{:.1}%", x * 100.0)),
            opt_time(s.last_success),
            secs(s.worst_rpo_seconds),
            badge(s.rpo_met, "met", "missed"),
            secs(s.last_rto_seconds),
            badge(s.rto_met, "met", "missed"),
            s.drills_passed,
            s.drills,
            s.restore_points,
            id = anchor(&j.history.name),
            n = escape(&j.history.name),
        );
    }
    body.push_str("</table></section>");
    for j in &r.jobs {
        let h = &j.history;
        let _ = write!(
            body,
            "<section id=\"job-{}\"><h2>{}</h2>{}{}<h3>Drills</h3>{}{}</section>",
            anchor(&h.name),
            escape(&h.name),
            summary_list(h, &j.summary),
            job_charts(h),
            drills_table(h, 20),
            failures_list(h, 10)
        );
    }
    let _ = write!(
        body,
        "<section><h2>Repositories</h2>{}</section><section><h2>Recent audit records</h2>{}</section>",
        repositories_table(&r.repositories),
        audit_table(&r.audit, 20)
    );
    page(
        "Backup report",
        &format!(
            "{} to {} · generated by backup {}",
            opt_time(r.since),
            time(r.generated),
            env!("CARGO_PKG_VERSION")
        ),
        &body,
    )
}

/// The newest failed runs with their errors.
pub fn failures_list(j: &JobHistory, limit: usize) -> String {
    let failed: Vec<&super::Run> = j.runs.iter().rev().filter(|r| !r.ok).take(limit).collect();
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

/// A name usable as an element id.
pub fn anchor(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escaping_and_empty_charts() {
        assert_eq!(escape("<a href='x'>&"), "&lt;a href=&#39;x&#39;&gt;&amp;");
        let c = chart("t", Unit::Seconds, &[], &[]);
        assert!(c.contains("no data yet"));
        let many: Vec<(i64, f64)> = (0..5000_i32)
            .map(|i| (i64::from(i), f64::from(i % 7)))
            .collect();
        assert!(thin(&many).len() <= MAX_POINTS);
        let c = chart(
            "t",
            Unit::Bytes,
            &[Series {
                label: "x".into(),
                color: "#000000",
                points: many,
                dashed: false,
            }],
            &[10, 20],
        );
        assert!(c.contains("<polyline") && c.contains("failed runs"));
    }
}
