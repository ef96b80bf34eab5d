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

/// What a chart's values are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Unit {
    /// Seconds.
    Seconds,
    /// Bytes.
    Bytes,
}

impl Unit {
    /// A tick's label, as precise as the ticks are apart (`step`), so
    /// that neighbouring labels never read the same.
    fn tick(self, v: f64, step: f64) -> String {
        match self {
            Unit::Seconds => seconds_tick(v, step),
            // `500 KiB`, `1.5 MiB`: no `.0` to widen the axis.
            Unit::Bytes => human_bytes(v.max(0.0).round() as u64).replacen(".0 ", " ", 1),
        }
    }

    /// Steps between linear ticks, smallest first: round numbers of the
    /// unit (seconds, minutes, hours, days; KiB, MiB, ...).
    fn steps(self) -> Vec<f64> {
        let mut out = Vec::new();
        match self {
            Unit::Seconds => {
                out.extend([0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5]);
                out.extend([1.0, 2.0, 5.0, 10.0, 15.0, 30.0]);
                out.extend([60.0, 120.0, 300.0, 600.0, 900.0, 1800.0]);
                out.extend([3600.0, 7200.0, 3.0 * 3600.0, 6.0 * 3600.0, 12.0 * 3600.0]);
                let mut d = 86400.0;
                while d < 1e12 {
                    out.extend([d, 2.0 * d, 5.0 * d]);
                    d *= 10.0;
                }
            }
            Unit::Bytes => {
                let mut p = 1.0;
                while p < 1e19 {
                    out.extend([p, 2.0 * p, 5.0 * p, 10.0 * p, 20.0 * p, 50.0 * p]);
                    out.extend([100.0 * p, 200.0 * p, 500.0 * p]);
                    p *= 1024.0;
                }
            }
        }
        out
    }

    /// Ticks of a logarithmic axis, smallest first.
    fn log_ticks(self) -> Vec<f64> {
        match self {
            Unit::Seconds => vec![
                0.001,
                0.01,
                0.1,
                1.0,
                10.0,
                60.0,
                600.0,
                3600.0,
                86400.0,
                864_000.0,
                8_640_000.0,
            ],
            Unit::Bytes => (0..7).map(|i| 1024_f64.powi(i)).collect(),
        }
    }
}

/// A label of a seconds axis: milliseconds when the ticks are closer than
/// a tenth of a second, tenths below 10 s, whole minutes, hours and days
/// as `5m`, `2h`, `1d`.
fn seconds_tick(v: f64, step: f64) -> String {
    if v == 0.0 {
        return "0".to_owned();
    }
    if step < 0.1 && v < 1.0 {
        return format!("{}ms", (v * 1000.0).round());
    }
    if v < 10.0 {
        let s = format!("{v:.1}");
        return format!("{}s", s.strip_suffix(".0").unwrap_or(&s));
    }
    let r = v.round() as u64;
    for (unit, secs) in [("d", 86400), ("h", 3600), ("m", 60)] {
        if r >= secs && r % secs == 0 {
            return format!("{}{unit}", r / secs);
        }
    }
    human_seconds(v)
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
}

/// An objective drawn across a chart (dashed).
#[derive(Debug, Clone)]
pub struct Limit {
    /// Legend text.
    pub label: String,
    /// Stroke colour (`#rrggbb`).
    pub color: &'static str,
    /// The value.
    pub value: f64,
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

/// The chart's drawing size in SVG units. The page lays charts out at
/// `CHART_MIN_WIDTH`..`CHART_MAX_WIDTH` pixels, so that `FONT` units are
/// never drawn much smaller than `FONT` pixels.
const W: f64 = 380.0;
const H: f64 = 210.0;
/// Font size of labels and legends, in SVG units.
pub const FONT: f64 = 12.0;
/// The narrowest a chart is laid out, in CSS pixels (see `STYLE`).
pub const CHART_MIN_WIDTH: f64 = 360.0;
// Chart text is never drawn under 11 px (it was about 7).
const _: () = assert!(FONT * CHART_MIN_WIDTH / W >= 11.0);

/// How values map to heights.
#[derive(Debug, Clone, Copy)]
enum Scale {
    /// From 0 to `max`, ticks `step` apart.
    Linear { max: f64, step: f64 },
    /// From `lo` to `hi` (both > 0), logarithmic.
    Log { lo: f64, hi: f64 },
}

impl Scale {
    /// The scale for values up to `data` (the largest) and down to
    /// `least` (the smallest positive one), with `limits` to draw: linear
    /// over the values, and the objectives too when they are near them;
    /// logarithmic when an objective is far above the values (so both
    /// show: an RTO of seconds against a limit of an hour).
    fn choose(unit: Unit, data: f64, least: f64, limits: &[f64]) -> Self {
        let top_limit = limits.iter().copied().fold(0.0_f64, f64::max);
        if top_limit > 0.0 && data > 0.0 && top_limit > 4.0 * data {
            let ticks = unit.log_ticks();
            let lo = ticks
                .iter()
                .rev()
                .copied()
                // A step below the smallest value, so it stands above the
                // bottom.
                .find(|t| *t <= least.min(top_limit) / 3.0)
                .unwrap_or(ticks[0]);
            let hi = ticks
                .iter()
                .copied()
                .find(|t| *t >= top_limit * 1.05)
                .unwrap_or(top_limit * 2.0);
            return Scale::Log {
                lo,
                hi: hi.max(lo * 10.0),
            };
        }
        let top = data.max(if top_limit <= 4.0 * data {
            top_limit
        } else {
            0.0
        });
        // At most 4 intervals of a round step.
        let steps = unit.steps();
        let step = steps
            .iter()
            .copied()
            .find(|s| top / s <= 4.0)
            .unwrap_or_else(|| steps.last().copied().unwrap_or(1.0));
        let intervals = (top / step).ceil().max(1.0);
        // Room above the highest value.
        let intervals = if intervals * step - top < step * 0.15 {
            intervals + 1.0
        } else {
            intervals
        };
        Scale::Linear {
            max: intervals * step,
            step,
        }
    }

    /// 0 at the bottom, 1 at the top.
    fn fraction(self, v: f64) -> f64 {
        match self {
            Scale::Linear { max, .. } => (v / max).clamp(0.0, 1.0),
            Scale::Log { lo, hi } => {
                ((v.max(lo).ln() - lo.ln()) / (hi.ln() - lo.ln())).clamp(0.0, 1.0)
            }
        }
    }

    fn ticks(self, unit: Unit) -> Vec<(f64, String)> {
        match self {
            Scale::Linear { max, step } => {
                let n = (max / step).round() as i64;
                (0..=n)
                    .map(|i| {
                        let v = i as f64 * step;
                        (v, unit.tick(v, step))
                    })
                    .collect()
            }
            Scale::Log { lo, hi } => unit
                .log_ticks()
                .into_iter()
                .filter(|t| *t >= lo * 0.999 && *t <= hi * 1.001)
                .map(|t| (t, unit.tick(t, t)))
                .collect(),
        }
    }
}

/// The labels of the time axis: the start, the middle and the end, with
/// the time of day when the chart spans less than two days.
fn time_ticks(x0: i64, x1: i64) -> [(i64, String); 3] {
    let span = x1 - x0;
    let fmt = if span < 2 * 86400 {
        "%m-%d %H:%M"
    } else if span < 400 * 86400 {
        "%Y-%m-%d"
    } else {
        "%Y-%m"
    };
    let label = |x: i64| {
        DateTime::<Utc>::from_timestamp(x, 0)
            .map(|t| t.format(fmt).to_string())
            .unwrap_or_default()
    };
    let mid = x0 + span / 2;
    [(x0, label(x0)), (mid, label(mid)), (x1, label(x1))]
}

/// A line chart as inline SVG: `series` over time, `limits` as dashed
/// lines across it, red marks at the bottom for `failures` (Unix
/// seconds). The value axis is linear, or logarithmic when a limit is far
/// above the values.
pub fn chart(
    title: &str,
    unit: Unit,
    series: &[Series],
    limits: &[Limit],
    failures: &[i64],
) -> String {
    const L: f64 = 66.0;
    const R: f64 = 10.0;
    const T: f64 = 26.0;
    const B: f64 = 50.0;
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
        "<div class=\"chart\"><svg viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\" font-size=\"{FONT}\">\
         <text x=\"{L}\" y=\"17\" font-size=\"{tf}\" font-weight=\"600\" fill=\"#1d2330\">{t}</text>",
        t = escape(title),
        tf = FONT + 2.0,
    );
    if x0 > x1 {
        let _ = write!(
            out,
            "<text x=\"{}\" y=\"{}\" fill=\"#718096\" text-anchor=\"middle\">no data yet</text></svg></div>",
            W / 2.0,
            H / 2.0
        );
        return out;
    }
    // A single time (one run, one drill) is drawn in the middle of a day.
    if x1 - x0 < 60 {
        x0 -= 43_200;
        x1 += 43_200;
    }
    let span = (x1 - x0) as f64;
    let values = series.iter().flat_map(|s| s.points.iter().map(|p| p.1));
    let data = values.clone().fold(0.0_f64, f64::max);
    let least = values.filter(|v| *v > 0.0).fold(f64::INFINITY, f64::min);
    let limit_values: Vec<f64> = limits.iter().map(|l| l.value).collect();
    let scale = Scale::choose(
        unit,
        data,
        least.min(data.max(f64::MIN_POSITIVE)),
        &limit_values,
    );
    let px = |x: i64| L + (x - x0) as f64 / span * (W - L - R);
    let py = |y: f64| T + (1.0 - scale.fraction(y)) * (H - T - B);
    // Value axis and grid.
    for (v, label) in scale.ticks(unit) {
        let y = py(v);
        let _ = write!(
            out,
            "<line x1=\"{L}\" x2=\"{x2}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"#e2e8f0\"/>\
             <text x=\"{lx}\" y=\"{ty:.1}\" fill=\"#718096\" text-anchor=\"end\">{label}</text>",
            x2 = W - R,
            lx = L - 5.0,
            ty = y + FONT * 0.35,
            label = escape(&label)
        );
    }
    if matches!(scale, Scale::Log { .. }) {
        let _ = write!(
            out,
            "<text x=\"{x}\" y=\"17\" fill=\"#718096\" text-anchor=\"end\">log scale</text>",
            x = W - R
        );
    }
    // Time axis.
    let by = H - B + FONT + 4.0;
    for (i, (x, label)) in time_ticks(x0, x1).into_iter().enumerate() {
        let anchor = ["start", "middle", "end"][i];
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{by}\" fill=\"#718096\" text-anchor=\"{anchor}\">{}</text>",
            px(x),
            escape(&label)
        );
    }
    for l in limits {
        let y = py(l.value);
        let _ = write!(
            out,
            "<line x1=\"{L}\" x2=\"{x2}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{c}\" stroke-width=\"1.6\" stroke-dasharray=\"5 4\"><title>{t}</title></line>",
            x2 = W - R,
            c = l.color,
            t = escape(&l.label)
        );
    }
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
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"1.8\" points=\"{p}\"><title>{l}</title></polyline>",
            c = s.color,
            p = path.trim_end(),
            l = escape(&s.label)
        );
        if pts.len() <= 12 {
            for (x, y) in &pts {
                let _ = write!(
                    out,
                    "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{}\"/>",
                    px(*x),
                    py(*y),
                    s.color
                );
            }
        }
    }
    for x in failures.iter().take(MAX_POINTS) {
        let _ = write!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"3\" height=\"8\" fill=\"#c4320a\"><title>failed</title></rect>",
            px(*x) - 1.5,
            H - B - 8.0
        );
    }
    // Legend.
    let mut lx = L;
    let ly = H - 10.0;
    let mut entry = |out: &mut String, label: &str, color: &str, mark: &str| {
        let _ = write!(
            out,
            "{mark}<text x=\"{tx:.1}\" y=\"{ly}\" fill=\"#4a5568\">{l}</text>",
            mark = mark
                .replace("{x}", &format!("{lx:.1}"))
                .replace("{c}", color),
            tx = lx + 15.0,
            l = escape(label)
        );
        lx += 26.0 + label.chars().count() as f64 * FONT * 0.56;
    };
    for s in series {
        entry(
            &mut out,
            &s.label,
            s.color,
            &format!(
                "<rect x=\"{{x}}\" y=\"{}\" width=\"11\" height=\"3\" fill=\"{{c}}\"/>",
                ly - 4.0
            ),
        );
    }
    for l in limits {
        entry(
            &mut out,
            &format!("{} {}", l.label, unit.tick(l.value, l.value)),
            l.color,
            &format!(
                "<rect x=\"{{x}}\" y=\"{}\" width=\"11\" height=\"2\" fill=\"{{c}}\"/>",
                ly - 4.0
            ),
        );
    }
    if !failures.is_empty() {
        entry(
            &mut out,
            "failed",
            "#c4320a",
            &format!(
                "<rect x=\"{{x}}\" y=\"{}\" width=\"3\" height=\"9\" fill=\"{{c}}\"/>",
                ly - 8.0
            ),
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
                    super::count(d.checks, "check", "checks")
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
                capture_name(&c.kind)
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
            super::count(s.restore_points, "restore point", "restore points"),
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
                capture_name(&c.kind),
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

/// `WAL`, `oplog`: what a capture kind captures, for people.
fn capture_name(kind: &str) -> &'static str {
    match kind {
        "postgres-wal" => "WAL",
        "mongodb-oplog" => "oplog",
        _ => "change",
    }
}

/// A capture's state: running or not, lag, gaps, the last error.
fn capture_state(c: &super::CaptureWindow) -> String {
    let mut parts = Vec::new();
    match c.streaming {
        Some(true) => parts.push(format!(
            "<span class=\"ok\">{} capture running</span>",
            capture_name(&c.kind)
        )),
        Some(false) => parts.push(format!(
            "<span class=\"bad\">{} capture stopped</span>",
            capture_name(&c.kind)
        )),
        None => parts.push(format!("{} captured", capture_name(&c.kind))),
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
        parts.push(super::count(
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
        let c = chart("t", Unit::Seconds, &[], &[], &[]);
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
            }],
            &[],
            &[10, 20],
        );
        assert!(c.contains("<polyline") && c.contains(">failed<"));
    }

    /// The labels of the value axis, in order.
    fn y_labels(svg: &str) -> Vec<String> {
        svg.split("<text x=\"61\" ")
            .skip(1)
            .filter_map(|p| p.split_once('>'))
            .map(|(_, p)| p.split('<').next().unwrap_or_default().to_owned())
            .collect()
    }

    fn one(v: f64) -> Series {
        Series {
            label: "v".into(),
            color: "#000000",
            points: vec![(1_700_000_000, v)],
        }
    }

    /// No two labels of a value axis read the same, whatever the range
    /// ("0.1s 0.1s 0.0s" was possible).
    #[test]
    fn axis_labels_are_distinct() {
        for max in [
            0.004, 0.03, 0.08, 0.12, 0.15, 0.26, 0.9, 1.0, 7.3, 12.0, 59.0, 95.0, 400.0, 4000.0,
            30_000.0, 100_000.0, 3e6,
        ] {
            let c = chart("t", Unit::Seconds, &[one(max)], &[], &[]);
            let labels = y_labels(&c);
            assert!(labels.len() >= 2, "{max}: {labels:?}");
            let mut unique = labels.clone();
            unique.dedup();
            assert_eq!(unique, labels, "{max}: {labels:?}");
        }
        for max in [700.0, 5000.0, 3e6, 7.5e9] {
            let c = chart("t", Unit::Bytes, &[one(max)], &[], &[]);
            let labels = y_labels(&c);
            let mut unique = labels.clone();
            unique.dedup();
            assert_eq!(unique, labels, "{max}: {labels:?}");
        }
    }

    /// One drill: the objective is still a line across the chart, and
    /// an RTO of a second against an objective of 15 minutes is not drawn
    /// at the bottom (the axis turns logarithmic).
    #[test]
    fn an_objective_far_above_the_values_leaves_them_visible() {
        let c = chart(
            "Drills: RTO",
            Unit::Seconds,
            &[one(1.2)],
            &[Limit {
                label: "max_rto".into(),
                color: "#c4320a",
                value: 900.0,
            }],
            &[],
        );
        let dashed = c
            .split("<line ")
            .find(|l| l.contains("stroke-dasharray"))
            .expect("the objective is drawn");
        let attr = |name: &str| -> f64 {
            dashed
                .split(&format!("{name}=\""))
                .nth(1)
                .and_then(|v| v.split('"').next())
                .and_then(|v| v.parse().ok())
                .unwrap()
        };
        assert!(attr("x2") - attr("x1") > W / 2.0, "{dashed}");
        assert!(c.contains("log scale"), "{c}");
        assert!(c.contains("max_rto 15m"), "{c}");
        // The point sits well above the bottom of the plot.
        let cy: f64 = c
            .split("<circle cx=\"")
            .nth(1)
            .and_then(|p| p.split("cy=\"").nth(1))
            .and_then(|v| v.split('"').next())
            .and_then(|v| v.parse().ok())
            .unwrap();
        let bottom = H - 50.0;
        assert!(bottom - cy > 30.0, "cy {cy}: {c}");
        // Near the values, the objective shares a linear axis.
        let c = chart(
            "Drills: RTO",
            Unit::Seconds,
            &[one(100.0)],
            &[Limit {
                label: "max_rto".into(),
                color: "#c4320a",
                value: 300.0,
            }],
            &[],
        );
        assert!(!c.contains("log scale"), "{c}");
        // The axis reaches above the objective.
        assert_eq!(y_labels(&c), ["0", "2m", "4m", "6m"], "{c}");
    }

    /// Runs within a day show times of day on the time axis.
    #[test]
    fn the_time_axis_shows_hours_within_a_day() {
        let s = Series {
            label: "duration".into(),
            color: "#000000",
            points: vec![(1_700_000_000, 1.0), (1_700_000_000 + 3 * 3600, 2.0)],
        };
        let c = chart("t", Unit::Seconds, std::slice::from_ref(&s), &[], &[]);
        assert!(c.contains(">11-14 22:13<"), "{c}");
        assert!(c.contains(">11-15 01:13<"), "{c}");
        let mut long = s;
        long.points[1].0 += 30 * 86400;
        let c = chart("t", Unit::Seconds, &[long], &[], &[]);
        assert!(c.contains(">2023-11-14<"), "{c}");
    }

    /// Chart text is drawn at 12 units in a 380-unit drawing laid out at
    /// least 360 px wide: never under 11 px (it was about 7).
    #[test]
    fn chart_text_is_readable() {
        assert!(STYLE.contains(&format!("min-width:{CHART_MIN_WIDTH}px")));
        let c = chart("t", Unit::Seconds, &[one(3.0)], &[], &[]);
        assert!(c.contains(&format!("viewBox=\"0 0 {W} {H}\"")), "{c}");
        assert!(!c.contains("font-size=\"10\""), "{c}");
    }

    /// A job whose WAL is captured: restorable is the window, the RPO the
    /// capture's lag, and the page says whether the capture runs.
    #[test]
    fn a_capture_window_is_what_is_restorable() {
        use super::super::{summarize, CaptureWindow, JobHistory, Objectives, Run};
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
            super::super::restorable_brief(&s),
            "any point of 5h 0m (WAL)"
        );
    }
}
