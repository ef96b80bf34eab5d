//! `[alerts]` (anomaly thresholds) and `[report]` (the scheduled report).

use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, Schedule};

/// `[alerts]`: when a run is unusual enough to notify.
///
/// ```toml
/// [alerts]
/// duration_factor = 2.0   # duration_anomaly: a run over 2x the median of the last 10
/// size_factor = 3.0       # size_anomaly: bytes added or stored over 3x the median, or a snapshot under 1/3 of it
/// baseline_runs = 10      # the runs the median is taken over
/// min_runs = 5            # no anomaly alerts before this many runs
/// ```
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlertSettings {
    /// A successful run taking more than this many times the median
    /// duration of the baseline runs is a `duration_anomaly`.
    pub duration_factor: f64,
    /// A run adding or storing more than this many times the median
    /// (sizes under 1 MiB are not compared), or whose snapshot holds less
    /// than the median size divided by it (data gone from the source), is
    /// a `size_anomaly`.
    pub size_factor: f64,
    /// How many earlier successful runs the medians are taken over.
    pub baseline_runs: usize,
    /// The fewest earlier runs before anomalies are looked for.
    pub min_runs: usize,
    /// Runs shorter than this are never a duration anomaly (scheduling
    /// noise on tiny backups).
    #[serde(with = "humantime_serde")]
    pub min_duration: Duration,
}

impl Default for AlertSettings {
    fn default() -> Self {
        AlertSettings {
            duration_factor: 2.0,
            size_factor: 3.0,
            baseline_runs: 10,
            min_runs: 5,
            min_duration: Duration::from_secs(1),
        }
    }
}

impl AlertSettings {
    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        for (k, v) in [
            ("duration_factor", self.duration_factor),
            ("size_factor", self.size_factor),
        ] {
            if !(v > 1.0 && v.is_finite()) {
                return Err(ConfigError::invalid(
                    &format!("alerts.{k}"),
                    "must be a number above 1",
                ));
            }
        }
        if self.baseline_runs == 0 || self.min_runs == 0 {
            return Err(ConfigError::invalid(
                "alerts",
                "baseline_runs and min_runs must be at least 1",
            ));
        }
        Ok(())
    }
}

/// The format of a report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReportFormat {
    /// A page with inline SVG charts.
    #[default]
    Html,
    /// Markdown tables.
    Markdown,
    /// The report's data.
    Json,
}

impl std::str::FromStr for ReportFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "html" => Ok(ReportFormat::Html),
            "markdown" | "md" => Ok(ReportFormat::Markdown),
            "json" => Ok(ReportFormat::Json),
            other => Err(format!(
                "`{other}` is not a report format: use html, markdown or json"
            )),
        }
    }
}

/// `[report]`: the daemon mails or posts a report on a schedule.
///
/// ```toml
/// [report]
/// schedule = "0 8 * * 1"   # Mondays at 08:00
/// since = "7d"
/// format = "html"          # the e-mail body (webhooks get markdown text and the JSON)
/// notify = ["ops-mail"]    # default: every channel that takes the `report` event
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReportConfig {
    /// Cron expression.
    pub schedule: String,
    /// IANA time zone of the schedule (default UTC).
    pub timezone: Option<String>,
    /// The period covered.
    #[serde(default = "week", with = "humantime_serde")]
    pub since: Duration,
    /// The e-mail body's format.
    #[serde(default)]
    pub format: ReportFormat,
    /// Channels (default: all that take the `report` event).
    pub notify: Option<Vec<String>>,
}

fn week() -> Duration {
    Duration::from_secs(7 * 86400)
}

impl ReportConfig {
    /// The schedule.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for a bad cron expression or time zone.
    pub fn schedule(&self) -> Result<Schedule, ConfigError> {
        Schedule::parse(&self.schedule, self.timezone.as_deref())
            .map_err(|e| ConfigError::invalid("report.schedule", e))
    }
}

/// A free-space threshold: a percentage of the space or a size.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Threshold {
    /// Percent of the file system's size (or of the quota).
    Percent(f64),
    /// Bytes.
    Bytes(u64),
}

impl Threshold {
    /// Parses `20%` or a size (`50GiB`).
    ///
    /// # Errors
    ///
    /// A message for anything else.
    pub fn parse(s: &str) -> Result<Self, String> {
        if let Some(p) = s.trim().strip_suffix('%') {
            let v: f64 = p
                .trim()
                .parse()
                .map_err(|_| format!("`{s}` is not a percentage"))?;
            if !(v > 0.0 && v < 100.0) {
                return Err(format!("{v}% must be more than 0 and less than 100"));
            }
            return Ok(Threshold::Percent(v));
        }
        backup_core::util::parse_size(s).map(Threshold::Bytes)
    }

    /// The threshold in bytes for a space of `total` bytes.
    pub fn bytes_of(self, total: u64) -> u64 {
        match self {
            Threshold::Percent(p) => (total as f64 * p / 100.0) as u64,
            Threshold::Bytes(b) => b,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thresholds() {
        assert_eq!(Threshold::parse("20%").unwrap(), Threshold::Percent(20.0));
        assert_eq!(Threshold::parse("1GiB").unwrap(), Threshold::Bytes(1 << 30));
        assert!(Threshold::parse("120%").is_err());
        assert!(Threshold::parse("lots").is_err());
        assert_eq!(Threshold::Percent(20.0).bytes_of(1000), 200);
        assert!(AlertSettings::default().validate().is_ok());
        let bad = AlertSettings {
            duration_factor: 0.5,
            ..AlertSettings::default()
        };
        assert!(bad.validate().is_err());
        assert_eq!(
            "md".parse::<ReportFormat>().unwrap(),
            ReportFormat::Markdown
        );
    }
}
