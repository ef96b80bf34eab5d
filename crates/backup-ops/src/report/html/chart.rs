//! Inline SVG line charts: a few series over time, with objectives as
//! dashed limits, readable at the page's narrowest layout.

use std::fmt::Write as _;

use backup_core::util::human_bytes;
use chrono::{DateTime, Utc};

use super::escape;
use crate::report::human_seconds;

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

/// Left margin of the plot (room for the value labels), in SVG units.
const L: f64 = 66.0;

/// Right margin of the plot.
const R: f64 = 10.0;

/// Top margin of the plot (room for the title).
const T: f64 = 26.0;

/// Bottom margin of the plot (room for the time labels and the legend).
const B: f64 = 50.0;

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
    let (x0, x1) = time_range(series, failures);
    let mut out = String::new();
    write_title(&mut out, title);
    if x0 > x1 {
        write_no_data(&mut out);
        return out;
    }
    let plot = Plot::new(unit, series, limits, x0, x1);
    write_value_axis(&mut out, &plot, unit);
    write_time_axis(&mut out, &plot);
    write_limits(&mut out, &plot, limits);
    write_series(&mut out, &plot, series);
    write_failures(&mut out, &plot, failures);
    write_legend(&mut out, unit, series, limits, failures);
    out.push_str("</svg></div>");
    out
}

/// The earliest and latest time of the points and failures (`x0 > x1`
/// when there are none).
fn time_range(series: &[Series], failures: &[i64]) -> (i64, i64) {
    let all = series
        .iter()
        .flat_map(|s| s.points.iter().map(|p| p.0))
        .chain(failures.iter().copied());
    let (mut x0, mut x1) = (i64::MAX, i64::MIN);
    for x in all {
        x0 = x0.min(x);
        x1 = x1.max(x);
    }
    (x0, x1)
}

/// Opens the chart's `<div>` and `<svg>` and writes its title.
fn write_title(out: &mut String, title: &str) {
    let _ = write!(
        out,
        "<div class=\"chart\"><svg viewBox=\"0 0 {W} {H}\" role=\"img\" aria-label=\"{t}\" font-size=\"{FONT}\">\
         <text x=\"{L}\" y=\"17\" font-size=\"{tf}\" font-weight=\"600\" fill=\"#1d2330\">{t}</text>",
        t = escape(title),
        tf = FONT + 2.0,
    );
}

/// Writes the note of a chart without data and closes it.
fn write_no_data(out: &mut String) {
    let _ = write!(
        out,
        "<text x=\"{}\" y=\"{}\" fill=\"#718096\" text-anchor=\"middle\">no data yet</text></svg></div>",
        W / 2.0,
        H / 2.0
    );
}

/// Where times and values are drawn: the time span and the value scale.
struct Plot {
    /// The earliest time drawn.
    x0: i64,
    /// The latest time drawn.
    x1: i64,
    /// `x1 - x0`, in seconds.
    span: f64,
    /// How values map to heights.
    scale: Scale,
}

impl Plot {
    /// The plot of `series` and `limits` from `x0` to `x1` (at least a
    /// day around a single time).
    fn new(unit: Unit, series: &[Series], limits: &[Limit], mut x0: i64, mut x1: i64) -> Self {
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
        Plot {
            x0,
            x1,
            span,
            scale,
        }
    }

    /// The horizontal position of time `x`.
    fn px(&self, x: i64) -> f64 {
        L + (x - self.x0) as f64 / self.span * (W - L - R)
    }

    /// The vertical position of value `y`.
    fn py(&self, y: f64) -> f64 {
        T + (1.0 - self.scale.fraction(y)) * (H - T - B)
    }
}

/// Writes the value axis's labels and grid lines (and notes a log scale).
fn write_value_axis(out: &mut String, plot: &Plot, unit: Unit) {
    for (v, label) in plot.scale.ticks(unit) {
        let y = plot.py(v);
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
    if matches!(plot.scale, Scale::Log { .. }) {
        let _ = write!(
            out,
            "<text x=\"{x}\" y=\"17\" fill=\"#718096\" text-anchor=\"end\">log scale</text>",
            x = W - R
        );
    }
}

/// Writes the time axis's labels: start, middle and end.
fn write_time_axis(out: &mut String, plot: &Plot) {
    let by = H - B + FONT + 4.0;
    for (i, (x, label)) in time_ticks(plot.x0, plot.x1).into_iter().enumerate() {
        let anchor = ["start", "middle", "end"][i];
        let _ = write!(
            out,
            "<text x=\"{:.1}\" y=\"{by}\" fill=\"#718096\" text-anchor=\"{anchor}\">{}</text>",
            plot.px(x),
            escape(&label)
        );
    }
}

/// Writes the objectives as dashed lines across the plot.
fn write_limits(out: &mut String, plot: &Plot, limits: &[Limit]) {
    for l in limits {
        let y = plot.py(l.value);
        let _ = write!(
            out,
            "<line x1=\"{L}\" x2=\"{x2}\" y1=\"{y:.1}\" y2=\"{y:.1}\" stroke=\"{c}\" stroke-width=\"1.6\" stroke-dasharray=\"5 4\"><title>{t}</title></line>",
            x2 = W - R,
            c = l.color,
            t = escape(&l.label)
        );
    }
}

/// Writes each series as a line (thinned), with dots when it has few
/// points.
fn write_series(out: &mut String, plot: &Plot, series: &[Series]) {
    for s in series {
        let pts = thin(&s.points);
        if pts.is_empty() {
            continue;
        }
        let mut path = String::with_capacity(pts.len() * 14);
        for (x, y) in &pts {
            let _ = write!(path, "{:.1},{:.1} ", plot.px(*x), plot.py(*y));
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
                    plot.px(*x),
                    plot.py(*y),
                    s.color
                );
            }
        }
    }
}

/// Writes a red mark at the bottom of the plot for each failure.
fn write_failures(out: &mut String, plot: &Plot, failures: &[i64]) {
    for x in failures.iter().take(MAX_POINTS) {
        let _ = write!(
            out,
            "<rect x=\"{:.1}\" y=\"{:.1}\" width=\"3\" height=\"8\" fill=\"#c4320a\"><title>failed</title></rect>",
            plot.px(*x) - 1.5,
            H - B - 8.0
        );
    }
}

/// The legend's next entry position, along its line below the plot.
struct Legend {
    /// Where the next entry starts.
    x: f64,
    /// The legend's text baseline.
    y: f64,
}

impl Legend {
    /// Writes one entry (its `mark`, with `{x}` and `{c}` filled in, and
    /// its `label`) and moves past it.
    fn entry(&mut self, out: &mut String, label: &str, color: &str, mark: &str) {
        let _ = write!(
            out,
            "{mark}<text x=\"{tx:.1}\" y=\"{ly}\" fill=\"#4a5568\">{l}</text>",
            mark = mark
                .replace("{x}", &format!("{:.1}", self.x))
                .replace("{c}", color),
            tx = self.x + 15.0,
            ly = self.y,
            l = escape(label)
        );
        self.x += 26.0 + label.chars().count() as f64 * FONT * 0.56;
    }
}

/// Writes the legend: the series, the objectives with their values, and
/// failures when there are any.
fn write_legend(
    out: &mut String,
    unit: Unit,
    series: &[Series],
    limits: &[Limit],
    failures: &[i64],
) {
    let ly = H - 10.0;
    let mut legend = Legend { x: L, y: ly };
    for s in series {
        legend.entry(
            out,
            &s.label,
            s.color,
            &format!(
                "<rect x=\"{{x}}\" y=\"{}\" width=\"11\" height=\"3\" fill=\"{{c}}\"/>",
                ly - 4.0
            ),
        );
    }
    for l in limits {
        legend.entry(
            out,
            &format!("{} {}", l.label, unit.tick(l.value, l.value)),
            l.color,
            &format!(
                "<rect x=\"{{x}}\" y=\"{}\" width=\"11\" height=\"2\" fill=\"{{c}}\"/>",
                ly - 4.0
            ),
        );
    }
    if !failures.is_empty() {
        legend.entry(
            out,
            "failed",
            "#c4320a",
            &format!(
                "<rect x=\"{{x}}\" y=\"{}\" width=\"3\" height=\"9\" fill=\"{{c}}\"/>",
                ly - 8.0
            ),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::report::html::STYLE;

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
}
