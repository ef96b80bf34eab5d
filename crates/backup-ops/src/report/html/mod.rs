//! HTML for reports and the daemon's status page: one self-contained page
//! (inline style, inline SVG charts, no script, no external resource), so
//! that it works offline and in a mail client.

use std::fmt::Write as _;

use backup_core::util::human_bytes;
use chrono::{DateTime, Utc};

use super::{human_seconds, AuditLine, Report, RepositoryUsage};

mod chart;
mod job;

pub use chart::{chart, Limit, Series, Unit, CHART_MIN_WIDTH, FONT};
pub use job::{drills_table, failures_list, job_charts, summary_list};
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
.chart{flex:1 1 380px;min-width:360px;max-width:520px}\
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

/// The restores with who asked, approved and ran them.
pub fn restores_table(lines: &[super::RestoreLine]) -> String {
    if lines.is_empty() {
        return "<p class=\"muted\">No restores.</p>".to_owned();
    }
    let mut out = String::from(
        "<table><tr><th>Time</th><th>Job</th><th>Target</th><th>Snapshot</th><th>Result</th><th>Request</th><th>Requested by</th><th>Approved by</th><th>Run by</th></tr>",
    );
    for x in lines {
        let _ = write!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td class=\"{}\">{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            time(x.time),
            escape(x.job.as_deref().unwrap_or("-")),
            escape(&x.target),
            escape(&x.snapshot),
            if x.ok { "ok" } else { "bad" },
            if x.ok { "restored" } else { "failed" },
            escape(x.request.as_deref().unwrap_or("-")),
            escape(&x.requested_by),
            escape(&if x.approved_by.is_empty() {
                "-".to_owned()
            } else {
                x.approved_by.join(", ")
            }),
            escape(&x.executed_by)
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
        "<section><h2>Summary</h2><table><tr><th>Job</th><th>Runs</th><th>Success rate</th><th>Last success</th><th>Worst RPO</th><th>Last RTO</th><th>Drills</th><th>Restorable</th></tr>"
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
            escape(&super::restorable_brief(s)),
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
        "<section><h2>Restores</h2>{}</section><section><h2>Repositories</h2>{}</section><section><h2>Recent audit records</h2>{}</section>",
        restores_table(&r.restores),
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

/// A name usable as an element id.
pub fn anchor(name: &str) -> String {
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect()
}
