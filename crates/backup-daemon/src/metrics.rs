//! `/metrics`: the daemon's state in the `OpenMetrics` text format
//! (`prometheus-client`), read from [`Status`] at each scrape, or in the
//! Prometheus text format (0.0.4) for scrapers and tools that ask for it
//! or ask for nothing in particular (`promtool check metrics`, `curl`).

use std::sync::Arc;

use chrono::Utc;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;

use crate::state::{CaptureState, JobState, Status};

/// The registry of the daemon's metrics.
pub fn registry(status: Arc<Status>) -> Registry {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(StatusCollector { status }));
    registry
}

/// Encodes the registry in the `OpenMetrics` text format.
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    // Writing into a String cannot fail.
    let _ = prometheus_client::encoding::text::encode(&mut out, registry);
    out
}

/// The content type of [`render`]'s output.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// The content type of [`render_text`]'s output.
pub const TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Encodes the registry in the Prometheus text format (0.0.4): the
/// `OpenMetrics` text with each counter's family named as its samples are
/// (`..._total`, which Prometheus' text parser and `promtool` require of
/// its `HELP` and `TYPE`), without `UNIT` lines and the `EOF` marker.
pub fn render_text(registry: &Registry) -> String {
    openmetrics_to_text(&render(registry))
}

fn openmetrics_to_text(om: &str) -> String {
    let counters: std::collections::HashSet<&str> = om
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(om.len());
    for line in om.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        match renamed {
            Some(l) => out.push_str(&l),
            None => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

/// Whether a scraper's `Accept` header asks for `OpenMetrics` at least as
/// much as for anything else it accepts (Prometheus asks for it first);
/// without one, or for `text/plain` or `*/*`, the Prometheus text format
/// is served.
pub fn wants_openmetrics(accept: Option<&str>) -> bool {
    let Some(accept) = accept else { return false };
    let mut openmetrics = 0.0_f64;
    let mut other = 0.0_f64;
    for range in accept.split(',') {
        let mut parts = range.split(';').map(str::trim);
        let media = parts.next().unwrap_or_default().to_ascii_lowercase();
        let q = parts
            .filter_map(|p| p.strip_prefix("q="))
            .find_map(|q| q.trim().parse::<f64>().ok())
            .unwrap_or(1.0);
        if media == "application/openmetrics-text" {
            openmetrics = openmetrics.max(q);
        } else if !media.is_empty() {
            other = other.max(q);
        }
    }
    openmetrics > 0.0 && openmetrics >= other
}

#[derive(Debug)]
struct StatusCollector {
    status: Arc<Status>,
}

type JobValue = fn(&JobState) -> Option<f64>;

/// Per-job gauges: name, help, value.
const JOB_GAUGES: [(&str, &str, JobValue); 17] = [
    (
        "backupd_job_last_success_timestamp_seconds",
        "Time of the job's newest snapshot (Unix seconds).",
        |j| j.last_success.map(|t| t.timestamp() as f64),
    ),
    (
        "backupd_job_seconds_since_last_success",
        "Age of the job's newest snapshot.",
        |j| {
            j.last_success
                .map(|t| (Utc::now() - t).num_milliseconds() as f64 / 1000.0)
        },
    ),
    (
        "backupd_job_max_age_seconds",
        "The job's maximum acceptable backup age.",
        |j| j.max_age_seconds.map(|s| s as f64),
    ),
    (
        "backupd_job_last_duration_seconds",
        "Duration of the job's last successful run.",
        |j| Some(j.last_duration_seconds),
    ),
    (
        "backupd_job_last_bytes_read",
        "Bytes read from the source by the last successful run.",
        |j| Some(j.last_bytes_read as f64),
    ),
    (
        "backupd_job_last_bytes_added",
        "New bytes the last successful run added to the repository (before compression).",
        |j| Some(j.last_bytes_added as f64),
    ),
    (
        "backupd_job_last_bytes_stored",
        "Bytes the last successful run stored (compressed and encrypted).",
        |j| Some(j.last_bytes_stored as f64),
    ),
    (
        "backupd_job_consecutive_failures",
        "Failed runs since the last success.",
        |j| Some(j.consecutive_failures as f64),
    ),
    (
        "backupd_job_running",
        "1 while a run of the job is in progress.",
        |j| Some(if j.running { 1.0 } else { 0.0 }),
    ),
    (
        "backupd_job_next_run_timestamp_seconds",
        "Next scheduled run (Unix seconds).",
        |j| j.next_run.map(|t| t.timestamp() as f64),
    ),
    (
        "backupd_job_last_verify_ok",
        "1 when the last verification found no problem, 0 when it failed.",
        |j| j.last_verify.as_ref().map(|v| if v.ok { 1.0 } else { 0.0 }),
    ),
    (
        "backupd_drill_last_success_timestamp_seconds",
        "When the job's last passing restore drill ended (Unix seconds).",
        |j| j.drill_last_success.map(|t| t.timestamp() as f64),
    ),
    (
        "backupd_drill_last_rto_seconds",
        "Seconds the job's last drill took until its scratch copy was usable.",
        |j| j.last_drill.as_ref().and_then(|d| d.rto_seconds),
    ),
    (
        "backupd_drill_last_rpo_seconds",
        "Age of the point the job's last drill restored, at the drill's start.",
        |j| j.last_drill.as_ref().and_then(|d| d.rpo_seconds),
    ),
    (
        "backupd_drill_last_ok",
        "1 when the job's last drill passed, 0 when it failed.",
        |j| j.last_drill.as_ref().map(|d| if d.ok { 1.0 } else { 0.0 }),
    ),
    (
        "backupd_drill_max_rto_seconds",
        "The job's RTO objective (its drill's max_rto).",
        |j| j.max_rto_seconds,
    ),
    (
        "backupd_drill_next_timestamp_seconds",
        "Next scheduled drill (Unix seconds).",
        |j| j.next_drill.map(|t| t.timestamp() as f64),
    ),
];

type CaptureValue = fn(&CaptureState) -> Option<f64>;

/// Per-job gauges of continuous capture (jobs that run one): name, help,
/// value; labelled with the job and what is captured.
const CAPTURE_GAUGES: [(&str, &str, CaptureValue); 10] = [
    (
        "backupd_capture_streaming",
        "1 while the job's capture (WAL receiver) is connected.",
        |c| Some(if c.streaming { 1.0 } else { 0.0 }),
    ),
    (
        "backupd_capture_server_position",
        "The server's position at the last report (PostgreSQL: LSN as a number).",
        |c| Some(c.server_position as f64),
    ),
    (
        "backupd_capture_stored_position",
        "The end of the stored changes (PostgreSQL: LSN as a number).",
        |c| Some(c.stored_position as f64),
    ),
    (
        "backupd_capture_lag_bytes",
        "Bytes the server wrote that are not stored yet.",
        |c| Some(c.lag_bytes as f64),
    ),
    (
        "backupd_capture_lag_seconds",
        "Seconds since the stored changes last caught up with the server.",
        |c| Some(c.lag_seconds),
    ),
    (
        "backupd_capture_last_stored_timestamp_seconds",
        "When changes were last stored (Unix seconds).",
        |c| c.last_stored.map(|t| t.timestamp() as f64),
    ),
    (
        "backupd_capture_window_start_timestamp_seconds",
        "Start of the restorable window (Unix seconds).",
        |c| c.window_start.map(|t| t.timestamp() as f64),
    ),
    (
        "backupd_capture_window_end_timestamp_seconds",
        "End of the restorable window (Unix seconds).",
        |c| c.window_end.map(|t| t.timestamp() as f64),
    ),
    (
        "backupd_capture_timeline",
        "The PostgreSQL timeline being received.",
        |c| Some(f64::from(c.timeline)),
    ),
    (
        "backupd_capture_restarts",
        "Times the capture stopped and was restarted since the daemon started.",
        |c| Some(c.restarts_total as f64),
    ),
];

type JobCount = fn(&JobState) -> u64;

/// Per-job counters (exposed with `_total`): name, help, value.
const JOB_COUNTERS: [(&str, &str, JobCount); 4] = [
    (
        "backupd_job_successes",
        "Successful runs since the daemon started.",
        |j| j.successes_total,
    ),
    (
        "backupd_job_failures",
        "Failed runs since the daemon started.",
        |j| j.failures_total,
    ),
    (
        "backupd_job_slots_skipped",
        "Scheduled runs left to another daemon sharing the repository.",
        |j| j.slots_skipped_total,
    ),
    (
        "backupd_job_slots_missed",
        "Scheduled slots that passed unrun while the job was busy past the next one.",
        |j| j.slots_missed_total,
    ),
];

/// A label value escaped as the exposition format requires
/// (`prometheus-client` writes label values as they are).
fn escaped(v: &str) -> String {
    v.replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

impl Collector for StatusCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let jobs: Vec<(String, JobState)> = self
            .status
            .job_states()
            .into_iter()
            .map(|j| (escaped(&j.name), j))
            .collect();
        for (name, help, value) in JOB_GAUGES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (label, j) in &jobs {
                if let Some(v) = value(j) {
                    ConstGauge::new(v).encode(family.encode_family(&[("job", label.as_str())])?)?;
                }
            }
        }
        for (name, help, value) in CAPTURE_GAUGES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (label, j) in &jobs {
                if let Some(c) = &j.capture {
                    if let Some(v) = value(c) {
                        ConstGauge::new(v).encode(family.encode_family(&[
                            ("job", label.as_str()),
                            ("kind", c.kind.as_str()),
                        ])?)?;
                    }
                }
            }
        }
        let mut gaps = encoder.encode_descriptor(
            "backupd_capture_gaps",
            "Gaps the job's capture recorded since the daemon started.",
            None,
            MetricType::Counter,
        )?;
        for (label, j) in &jobs {
            if let Some(c) = &j.capture {
                ConstCounter::new(c.gaps_total).encode(
                    gaps.encode_family(&[("job", label.as_str()), ("kind", c.kind.as_str())])?,
                )?;
            }
        }
        for (name, help, value) in JOB_COUNTERS {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Counter)?;
            for (label, j) in &jobs {
                ConstCounter::new(value(j))
                    .encode(family.encode_family(&[("job", label.as_str())])?)?;
            }
        }
        let mut sizes = encoder.encode_descriptor(
            "backupd_repository_size_bytes",
            "Stored size of the repository (packs, index, snapshots, keys).",
            None,
            MetricType::Gauge,
        )?;
        for (repo, size) in self.status.repo_sizes() {
            ConstGauge::new(size as f64)
                .encode(sizes.encode_family(&[("repository", escaped(&repo).as_str())])?)?;
        }
        let space = self.status.repo_space();
        for (name, help, pick) in [
            (
                "backupd_repository_free_bytes",
                "Free space for the repository: its file system's, or its quota less its size.",
                0,
            ),
            (
                "backupd_repository_capacity_bytes",
                "The size of the repository's file system, or its quota.",
                1,
            ),
        ] {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (repo, (free, total)) in &space {
                let v = if pick == 0 { *free } else { *total };
                ConstGauge::new(v as f64)
                    .encode(family.encode_family(&[("repository", escaped(repo).as_str())])?)?;
            }
        }
        let n = &self.status.notifications;
        for (name, help, value) in [
            (
                "backupd_notifications_delivered",
                "Notifications delivered.",
                n.delivered(),
            ),
            (
                "backupd_notifications_failed",
                "Notifications given up on after retries.",
                n.failed(),
            ),
        ] {
            let counter = ConstCounter::new(value);
            counter.encode(encoder.encode_descriptor(
                name,
                help,
                None,
                counter.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_jobs_repositories_and_notifications() {
        let status = Arc::new(Status::default());
        let _rx = status.replace_jobs([JobState {
            name: "db \"main\"".into(),
            repository: "r".into(),
            successes_total: 3,
            running: true,
            ..JobState::default()
        }]);
        status.set_repo_size("r", 1234);
        status.set_repo_space("r", 10, 100);
        status.update("db \"main\"", |s| {
            s.last_drill = Some(crate::state::DrillState {
                finished: Utc::now(),
                ok: true,
                rto_seconds: Some(12.5),
                rpo_seconds: Some(3600.0),
                error: None,
                record: None,
            });
        });
        let text = render(&registry(Arc::clone(&status)));
        assert!(
            text.contains("backupd_job_successes_total{job=\"db \\\"main\\\"\"} 3"),
            "{text}"
        );
        assert!(text.contains("backupd_job_running{job="), "{text}");
        assert!(
            text.contains("backupd_repository_size_bytes{repository=\"r\"} 1234"),
            "{text}"
        );
        assert!(
            text.contains("backupd_notifications_failed_total 0"),
            "{text}"
        );
        assert!(
            text.contains("backupd_drill_last_rto_seconds{job="),
            "{text}"
        );
        assert!(text.contains("backupd_drill_last_ok{job="), "{text}");
        assert!(
            text.contains("backupd_repository_free_bytes{repository=\"r\"} 10"),
            "{text}"
        );
        assert!(
            !text.contains("backupd_job_last_success_timestamp_seconds{"),
            "{text}"
        );
        assert!(text.ends_with("# EOF\n"), "{text}");
        // The Prometheus text format names counters by their samples.
        let plain = render_text(&registry(Arc::clone(&status)));
        assert!(
            plain.contains("# TYPE backupd_job_successes_total counter\n"),
            "{plain}"
        );
        assert!(
            plain.contains("# HELP backupd_job_successes_total "),
            "{plain}"
        );
        assert!(!plain.contains("# EOF"), "{plain}");
        assert!(
            plain.contains("# TYPE backupd_job_running gauge\n"),
            "{plain}"
        );
    }

    #[test]
    fn content_negotiation() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(wants_openmetrics(Some(prometheus)));
        assert!(wants_openmetrics(Some("application/openmetrics-text")));
        assert!(!wants_openmetrics(None));
        assert!(!wants_openmetrics(Some("*/*")));
        assert!(!wants_openmetrics(Some("text/plain")));
        assert!(!wants_openmetrics(Some("text/plain;version=0.0.4")));
        assert!(!wants_openmetrics(Some(
            "text/plain, application/openmetrics-text;q=0.5"
        )));
        assert!(!wants_openmetrics(Some("application/openmetrics-text;q=0")));
    }
}
