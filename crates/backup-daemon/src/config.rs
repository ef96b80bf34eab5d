//! The configuration file: repositories, jobs and notification channels.
//!
//! TOML, read once at start (and again on `SIGHUP` by the daemon). Every
//! table rejects unknown keys, and parse errors carry the line and column.
//! [`Config::load`] parses and validates; the result holds no secret
//! values, only where to read them ([`SecretRef`]), and [`Secret`]s are
//! read when needed.

use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use backup_core::retention::{parse_duration, parse_tz, RetentionPolicy};
use chrono::{DateTime, Utc};
use chrono_tz::Tz;
use serde::Deserialize;

use crate::secret::{Secret, SecretRef};

/// A configuration problem: what and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    /// An invalid value at `key` (a dotted path such as `jobs.db.schedule`).
    pub fn invalid(key: &str, message: impl fmt::Display) -> Self {
        ConfigError {
            message: format!("{key}: {message}"),
        }
    }

    fn at(mut self, file: &str, line: Option<usize>) -> Self {
        self.message = match line {
            Some(l) => format!("{file}, line {l}: {}", self.message),
            None => format!("{file}: {}", self.message),
        };
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Daemon-wide settings.
    #[serde(default)]
    pub daemon: DaemonSettings,
    /// Audit trail settings.
    #[serde(default)]
    pub audit: AuditSettings,
    /// Repositories by name.
    #[serde(default)]
    pub repositories: BTreeMap<String, RepositoryConfig>,
    /// Jobs by name.
    #[serde(default)]
    pub jobs: BTreeMap<String, JobConfig>,
    /// Notification channels by name.
    #[serde(default)]
    pub notifications: BTreeMap<String, NotificationConfig>,
}

/// `[daemon]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSettings {
    /// Address of the HTTP server (`/healthz`, `/metrics`, `/api`).
    pub listen: String,
    /// Jobs that may run at the same time.
    pub max_concurrent_jobs: usize,
    /// How long running backups may take to finish after SIGTERM.
    pub shutdown_grace: String,
    /// What to do about runs missed while the daemon was down.
    pub missed_runs: MissedRuns,
    /// `human` or `json` log lines.
    pub log_format: LogFormat,
    /// Bearer token for `POST /api/jobs/NAME/run`; without it the trigger is disabled.
    pub api_token: Option<SecretRef>,
    /// How often backup ages are checked against `max_age`.
    pub check_interval: String,
    /// Retries of a failed run.
    pub retry: RetryConfig,
    /// How long to wait for a conflicting repository lock.
    pub lock_wait: String,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        DaemonSettings {
            listen: "127.0.0.1:9187".to_owned(),
            max_concurrent_jobs: 2,
            shutdown_grace: "5m".to_owned(),
            missed_runs: MissedRuns::Skip,
            log_format: LogFormat::Human,
            api_token: None,
            check_interval: "1m".to_owned(),
            retry: RetryConfig::default(),
            lock_wait: "10m".to_owned(),
        }
    }
}

/// Policy for scheduled runs missed while no daemon was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissedRuns {
    /// Wait for the next scheduled time.
    Skip,
    /// Run once at start, then follow the schedule.
    RunOnce,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

/// `[daemon.retry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts per run, the first included (1 = no retry).
    pub attempts: u32,
    /// Wait before the first retry; doubled after each further failure.
    pub initial_backoff: String,
    /// Longest wait between attempts.
    pub max_backoff: String,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 3,
            initial_backoff: "30s".to_owned(),
            max_backoff: "10m".to_owned(),
        }
    }
}

/// `[audit]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// The local JSON-lines audit log (default: `BACKUP_AUDIT_LOG`, else
    /// `$XDG_STATE_HOME/backup/audit.jsonl` or `~/.local/state/backup/audit.jsonl`).
    pub local_log: Option<PathBuf>,
}

/// `[repositories.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// Repository URL: a path, `file:///`, `s3://` or `gs://`.
    pub url: String,
    /// Where the password comes from (unencrypted repositories need none).
    pub password: Option<SecretRef>,
    /// Storage options (`s3.endpoint`, ...), as for `--option`.
    #[serde(default)]
    pub options: BTreeMap<String, String>,
}

/// `[jobs.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobConfig {
    /// Name of the repository (a key of `[repositories]`).
    pub repository: String,
    /// Source URL or path, without a password.
    pub source: String,
    /// Password to put into the source URL (databases).
    pub source_password: Option<SecretRef>,
    /// Cron expression: 5 fields, or 6 with seconds first.
    pub schedule: String,
    /// IANA time zone of the schedule (default UTC).
    pub timezone: Option<String>,
    /// Tags of the snapshots.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Namespaces to include (databases).
    #[serde(default)]
    pub include: Vec<String>,
    /// Globs to exclude.
    #[serde(default)]
    pub exclude: Vec<String>,
    /// PostgreSQL: also back up roles and tablespaces.
    #[serde(default)]
    pub pg_globals: bool,
    /// MongoDB: also back up users and roles.
    #[serde(default)]
    pub mongo_users: bool,
    /// Retention applied after each successful backup.
    pub retention: Option<RetentionConfig>,
    /// Verification cadence.
    pub verify: Option<VerifyConfig>,
    /// Maximum acceptable age of the last successful backup (e.g. `26h`).
    pub max_age: Option<String>,
    /// Channels to notify (default: every channel).
    pub notify: Option<Vec<String>>,
    /// Also notify about each successful run.
    #[serde(default)]
    pub notify_success: bool,
}

/// `[jobs.NAME.retention]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionConfig {
    /// Keep the N newest.
    pub keep_last: Option<usize>,
    /// Keep one per hour for N hours with snapshots.
    pub keep_hourly: Option<usize>,
    /// Keep one per day for N days.
    pub keep_daily: Option<usize>,
    /// Keep one per ISO week for N weeks.
    pub keep_weekly: Option<usize>,
    /// Keep one per month for N months.
    pub keep_monthly: Option<usize>,
    /// Keep one per year for N years.
    pub keep_yearly: Option<usize>,
    /// Keep everything this recent (relative to the newest).
    pub keep_within: Option<String>,
    /// Keep snapshots with these tags.
    #[serde(default)]
    pub keep_tags: Vec<String>,
    /// Time zone of the calendar buckets.
    pub timezone: Option<String>,
    /// Remove unreferenced data afterwards (takes an exclusive lock).
    #[serde(default)]
    pub prune: bool,
}

/// `[jobs.NAME.verify]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyConfig {
    /// Cron expression of the verification runs.
    pub schedule: String,
    /// Percentage of the packs to download and check (structure only when unset).
    pub read_data: Option<f64>,
}

/// `[notifications.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum NotificationConfig {
    /// HTTP POST of a Slack-compatible JSON payload.
    Webhook {
        /// The webhook URL (treated as a secret: never logged).
        url: Option<String>,
        /// Or where to read the URL from.
        url_from: Option<SecretRef>,
        /// Events to send (default: all but `success`, which jobs opt into).
        events: Option<Vec<Event>>,
    },
    /// E-mail over SMTP.
    Smtp {
        /// Server host.
        host: String,
        /// Server port (default 587 for STARTTLS, 465 for TLS, 25 for none).
        port: Option<u16>,
        /// `starttls`, `tls` or `none` (only for a local relay).
        security: SmtpSecurity,
        /// User name for authentication.
        username: Option<String>,
        /// Password for authentication.
        password: Option<SecretRef>,
        /// Sender address.
        from: String,
        /// Recipients.
        to: Vec<String>,
        /// Events to send.
        events: Option<Vec<Event>>,
    },
}

/// Transport security of SMTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required).
    Starttls,
    /// TLS from the start (SMTPS).
    Tls,
    /// No encryption (a relay on localhost only).
    None,
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A run failed (after its retries).
    Failure,
    /// A run succeeded after failures.
    Recovery,
    /// The last successful backup is older than `max_age`.
    Missed,
    /// A verification found damage or failed.
    VerifyFailed,
    /// A run succeeded (only for jobs with `notify_success`).
    Success,
}

impl Event {
    /// Every event.
    pub const ALL: [Event; 5] = [
        Event::Failure,
        Event::Recovery,
        Event::Missed,
        Event::VerifyFailed,
        Event::Success,
    ];

    /// Its name in the file and in payloads.
    pub fn name(self) -> &'static str {
        match self {
            Event::Failure => "failure",
            Event::Recovery => "recovery",
            Event::Missed => "missed",
            Event::VerifyFailed => "verify_failed",
            Event::Success => "success",
        }
    }
}

/// A cron schedule in a time zone.
#[derive(Debug, Clone)]
pub struct Schedule {
    expr: String,
    cron: croner::Cron,
    tz: Tz,
}

impl Schedule {
    /// Parses a 5-field or 6-field (seconds first) expression.
    ///
    /// # Errors
    ///
    /// A message for a malformed expression or unknown time zone.
    pub fn parse(expr: &str, tz: Option<&str>) -> Result<Self, String> {
        let cron = croner::Cron::new(expr)
            .with_seconds_optional()
            .parse()
            .map_err(|e| format!("`{expr}` is not a cron expression: {e}"))?;
        let tz = match tz {
            Some(t) => parse_tz(t).map_err(|e| e.to_string())?,
            None => Tz::UTC,
        };
        Ok(Schedule {
            expr: expr.to_owned(),
            cron,
            tz,
        })
    }

    /// The first time strictly after `after`.
    pub fn next_after(&self, after: DateTime<Utc>) -> Option<DateTime<Utc>> {
        self.cron
            .find_next_occurrence(&after.with_timezone(&self.tz), false)
            .ok()
            .map(|t| t.with_timezone(&Utc))
    }

    /// The next `n` times after `after`.
    pub fn upcoming(&self, after: DateTime<Utc>, n: usize) -> Vec<DateTime<Utc>> {
        let mut out = Vec::with_capacity(n);
        let mut t = after;
        while out.len() < n {
            match self.next_after(t) {
                Some(next) => {
                    out.push(next);
                    t = next;
                }
                None => break,
            }
        }
        out
    }

    /// The expression as written.
    pub fn expr(&self) -> &str {
        &self.expr
    }

    /// The time zone.
    pub fn tz(&self) -> Tz {
        self.tz
    }
}

/// A validated job.
#[derive(Debug, Clone)]
pub struct Job {
    /// Name.
    pub name: String,
    /// Repository name.
    pub repository: String,
    /// Source URL without credentials.
    pub source: String,
    /// Source password reference.
    pub source_password: Option<SecretRef>,
    /// Backup schedule.
    pub schedule: Schedule,
    /// Tags.
    pub tags: Vec<String>,
    /// Includes.
    pub includes: Vec<String>,
    /// Excludes.
    pub excludes: Vec<String>,
    /// PostgreSQL globals.
    pub pg_globals: bool,
    /// MongoDB users and roles.
    pub mongo_users: bool,
    /// Retention policy and whether to prune.
    pub retention: Option<(RetentionPolicy, bool)>,
    /// Verification schedule and read percentage.
    pub verify: Option<(Schedule, Option<f64>)>,
    /// Maximum backup age.
    pub max_age: Option<Duration>,
    /// Channels to notify.
    pub notify: Vec<String>,
    /// Notify about successes too.
    pub notify_success: bool,
}

impl Job {
    /// The source URL with its password filled in.
    ///
    /// # Errors
    ///
    /// When the password cannot be read or the URL takes none.
    pub fn source_url(&self) -> Result<Secret, ConfigError> {
        let key = format!("jobs.{}.source_password", self.name);
        let Some(r) = &self.source_password else {
            return Ok(Secret::new(self.source.clone()));
        };
        let password = r.resolve(&key)?;
        let mut url = url::Url::parse(&self.source).map_err(|_| {
            ConfigError::invalid(&key, "the source is not a URL that can carry a password")
        })?;
        url.set_password(Some(password.expose()))
            .map_err(|()| ConfigError::invalid(&key, "this source URL cannot carry a password"))?;
        Ok(Secret::new(url.to_string()))
    }
}

impl Config {
    /// Reads, parses and validates a file.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] with the file name and, where known, the line.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            message: format!("cannot read the configuration {}: {e}", path.display()),
        })?;
        Self::parse(&text, &path.display().to_string())
    }

    /// Parses and validates configuration text; `file` names it in errors.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] with the line of the problem where known.
    pub fn parse(text: &str, file: &str) -> Result<Self, ConfigError> {
        let config: Config = toml::from_str(text).map_err(|e| {
            let line = e.span().map(|s| line_of_offset(text, s.start));
            ConfigError {
                message: e.message().trim().to_owned(),
            }
            .at(file, line)
        })?;
        config.validate().map_err(|(table, e)| {
            let line = table.and_then(|t| line_of_table(text, &t));
            e.at(file, line)
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), (Option<String>, ConfigError)> {
        let d = &self.daemon;
        let daemon = || Some("daemon".to_owned());
        for (key, value) in [
            ("daemon.shutdown_grace", &d.shutdown_grace),
            ("daemon.check_interval", &d.check_interval),
            ("daemon.lock_wait", &d.lock_wait),
            ("daemon.retry.initial_backoff", &d.retry.initial_backoff),
            ("daemon.retry.max_backoff", &d.retry.max_backoff),
        ] {
            parse_duration(value).map_err(|e| (daemon(), ConfigError::invalid(key, e)))?;
        }
        if d.max_concurrent_jobs == 0 {
            return Err((
                daemon(),
                ConfigError::invalid("daemon.max_concurrent_jobs", "must be at least 1"),
            ));
        }
        if d.retry.attempts == 0 {
            return Err((
                daemon(),
                ConfigError::invalid("daemon.retry.attempts", "must be at least 1"),
            ));
        }
        if d.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err((
                daemon(),
                ConfigError::invalid(
                    "daemon.listen",
                    format!("`{}` is not an address such as 127.0.0.1:9187", d.listen),
                ),
            ));
        }
        if let Some(t) = &d.api_token {
            t.validate("daemon.api_token").map_err(|e| (daemon(), e))?;
        }
        for (name, r) in &self.repositories {
            let table = Some(format!("repositories.{name}"));
            if let Some(p) = &r.password {
                p.validate(&format!("repositories.{name}.password"))
                    .map_err(|e| (table.clone(), e))?;
            }
            backup_storage::StorageUrl::parse(&r.url).map_err(|e| {
                (
                    table.clone(),
                    ConfigError::invalid(&format!("repositories.{name}.url"), e),
                )
            })?;
        }
        for (name, n) in &self.notifications {
            let table = Some(format!("notifications.{name}"));
            match n {
                NotificationConfig::Webhook { url, url_from, .. } => {
                    if url.is_some() == url_from.is_some() {
                        return Err((
                            table,
                            ConfigError::invalid(
                                &format!("notifications.{name}"),
                                "give exactly one of `url` or `url_from`",
                            ),
                        ));
                    }
                    if let Some(u) = url {
                        url::Url::parse(u).map_err(|e| {
                            (
                                table.clone(),
                                ConfigError::invalid(&format!("notifications.{name}.url"), e),
                            )
                        })?;
                    }
                }
                NotificationConfig::Smtp { to, password, .. } => {
                    if to.is_empty() {
                        return Err((
                            table,
                            ConfigError::invalid(
                                &format!("notifications.{name}.to"),
                                "needs at least one recipient",
                            ),
                        ));
                    }
                    if let Some(p) = password {
                        p.validate(&format!("notifications.{name}.password"))
                            .map_err(|e| (table.clone(), e))?;
                    }
                }
            }
        }
        for name in self.jobs.keys() {
            self.job(name)
                .map_err(|e| (Some(format!("jobs.{name}")), e))?;
        }
        Ok(())
    }

    /// The validated job `name`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for an unknown job or an invalid setting of it.
    pub fn job(&self, name: &str) -> Result<Job, ConfigError> {
        let Some(j) = self.jobs.get(name) else {
            let known: Vec<&str> = self.jobs.keys().map(String::as_str).collect();
            return Err(ConfigError::invalid(
                "jobs",
                format!("no job named `{name}` (jobs: {})", known.join(", ")),
            ));
        };
        let key = |k: &str| format!("jobs.{name}.{k}");
        if !self.repositories.contains_key(&j.repository) {
            return Err(ConfigError::invalid(
                &key("repository"),
                format!("no repository named `{}`", j.repository),
            ));
        }
        backup_sources::SourceKind::of(&j.source)
            .map_err(|e| ConfigError::invalid(&key("source"), e))?;
        if let Some(p) = &j.source_password {
            p.validate(&key("source_password"))?;
        }
        let schedule = Schedule::parse(&j.schedule, j.timezone.as_deref())
            .map_err(|e| ConfigError::invalid(&key("schedule"), e))?;
        let retention = match &j.retention {
            Some(r) => {
                let policy = RetentionPolicy {
                    last: r.keep_last,
                    hourly: r.keep_hourly,
                    daily: r.keep_daily,
                    weekly: r.keep_weekly,
                    monthly: r.keep_monthly,
                    yearly: r.keep_yearly,
                    within: r
                        .keep_within
                        .as_deref()
                        .map(parse_duration)
                        .transpose()
                        .map_err(|e| ConfigError::invalid(&key("retention.keep_within"), e))?,
                    tags: r.keep_tags.clone(),
                    tz: r
                        .timezone
                        .as_deref()
                        .map(parse_tz)
                        .transpose()
                        .map_err(|e| ConfigError::invalid(&key("retention.timezone"), e))?,
                };
                if policy.is_empty() {
                    return Err(ConfigError::invalid(
                        &key("retention"),
                        "give at least one keep_* rule",
                    ));
                }
                Some((policy, r.prune))
            }
            None => None,
        };
        let verify = match &j.verify {
            Some(v) => {
                let s = Schedule::parse(&v.schedule, j.timezone.as_deref())
                    .map_err(|e| ConfigError::invalid(&key("verify.schedule"), e))?;
                if let Some(p) = v.read_data {
                    if !(p > 0.0 && p <= 100.0) {
                        return Err(ConfigError::invalid(
                            &key("verify.read_data"),
                            "a percentage more than 0 and at most 100",
                        ));
                    }
                }
                Some((s, v.read_data))
            }
            None => None,
        };
        let max_age = j
            .max_age
            .as_deref()
            .map(parse_duration)
            .transpose()
            .map_err(|e| ConfigError::invalid(&key("max_age"), e))?;
        let notify = match &j.notify {
            Some(list) => {
                for n in list {
                    if !self.notifications.contains_key(n) {
                        return Err(ConfigError::invalid(
                            &key("notify"),
                            format!("no notification channel named `{n}`"),
                        ));
                    }
                }
                list.clone()
            }
            None => self.notifications.keys().cloned().collect(),
        };
        Ok(Job {
            name: name.to_owned(),
            repository: j.repository.clone(),
            source: j.source.clone(),
            source_password: j.source_password.clone(),
            schedule,
            tags: j.tags.clone(),
            includes: j.include.clone(),
            excludes: j.exclude.clone(),
            pg_globals: j.pg_globals,
            mongo_users: j.mongo_users,
            retention,
            verify,
            max_age,
            notify,
            notify_success: j.notify_success,
        })
    }

    /// Every validated job, by name.
    ///
    /// # Errors
    ///
    /// As [`Config::job`].
    pub fn all_jobs(&self) -> Result<Vec<Job>, ConfigError> {
        self.jobs.keys().map(|n| self.job(n)).collect()
    }

    /// The repository `name`.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] for an unknown name.
    pub fn repository(&self, name: &str) -> Result<&RepositoryConfig, ConfigError> {
        self.repositories.get(name).ok_or_else(|| {
            ConfigError::invalid("repositories", format!("no repository named `{name}`"))
        })
    }

    /// A duration setting of `[daemon]` (validated at load).
    pub fn duration(value: &str) -> Duration {
        parse_duration(value).unwrap_or(Duration::from_secs(60))
    }
}

fn line_of_offset(text: &str, offset: usize) -> usize {
    text[..offset.min(text.len())]
        .bytes()
        .filter(|b| *b == b'\n')
        .count()
        + 1
}

/// The line of the header `[table]` (or `[table.sub]` for the first
/// sub-table), for errors found after parsing.
fn line_of_table(text: &str, table: &str) -> Option<usize> {
    let quoted = |t: &str| -> Vec<String> {
        let (head, rest) = t.split_once('.').unwrap_or((t, ""));
        vec![
            format!("[{t}]"),
            format!("[{head}.\"{rest}\"]"),
            format!("[{t}."),
        ]
    };
    let needles = quoted(table);
    text.lines()
        .position(|l| {
            let l = l.trim();
            needles.iter().any(|n| l.starts_with(n.as_str()))
        })
        .map(|i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"
[repositories.main]
url = "/tmp/repo"
password = { env = "P" }

[jobs.files]
repository = "main"
source = "/srv/data"
schedule = "*/2 * * * * *"
"#;

    #[test]
    fn minimal() {
        let c = Config::parse(MINIMAL, "t.toml").unwrap();
        let j = c.job("files").unwrap();
        assert_eq!(j.schedule.expr(), "*/2 * * * * *");
        let t0 = DateTime::parse_from_rfc3339("2024-01-01T00:00:01Z")
            .unwrap()
            .with_timezone(&Utc);
        let next = j.schedule.upcoming(t0, 2);
        assert_eq!(next[0].to_rfc3339(), "2024-01-01T00:00:02+00:00");
        assert_eq!(next[1].to_rfc3339(), "2024-01-01T00:00:04+00:00");
    }

    #[test]
    fn unknown_key_has_line() {
        let text = format!("{MINIMAL}colour = \"blue\"\n");
        let e = Config::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("line 10"), "{e}");
        assert!(e.contains("colour"), "{e}");
    }

    #[test]
    fn invalid_value_names_table_line() {
        let text = MINIMAL.replace("*/2 * * * * *", "every day");
        let e = Config::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(
            e.contains("line 6") && e.contains("jobs.files.schedule"),
            "{e}"
        );
        let text = MINIMAL.replace("repository = \"main\"", "repository = \"other\"");
        let e = Config::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("no repository named `other`"), "{e}");
    }

    #[test]
    fn time_zone_schedule() {
        let s = Schedule::parse("0 2 * * *", Some("Europe/Berlin")).unwrap();
        let t0 = DateTime::parse_from_rfc3339("2024-07-01T12:00:00Z")
            .unwrap()
            .with_timezone(&Utc);
        // 02:00 in Berlin (CEST) is 00:00 UTC.
        assert_eq!(
            s.next_after(t0).unwrap().to_rfc3339(),
            "2024-07-02T00:00:00+00:00"
        );
    }

    #[test]
    fn source_password_goes_into_url() {
        let text = MINIMAL.replace(
            "source = \"/srv/data\"",
            "source = \"postgres://app@db/app\"\nsource_password = { command = \"echo pw\" }",
        );
        let c = Config::parse(&text, "t.toml").unwrap();
        let j = c.job("files").unwrap();
        assert_eq!(j.source_url().unwrap().expose(), "postgres://app:pw@db/app");
        assert!(!format!("{j:?}").contains("pw@"));
    }
}

#[cfg(test)]
mod example {
    use super::*;

    /// The shipped example parses and every job in it validates.
    #[test]
    fn example_config_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/backupd.toml");
        let c = Config::load(Path::new(path)).unwrap();
        assert_eq!(c.all_jobs().unwrap().len(), 2);
        assert_eq!(c.daemon.missed_runs, MissedRuns::RunOnce);
        let db = c.job("app-db").unwrap();
        assert_eq!(db.max_age, Some(Duration::from_secs(26 * 3600)));
        assert!(db.verify.is_some() && db.retention.is_some());
        assert_eq!(c.notifications.len(), 2);
    }
}
