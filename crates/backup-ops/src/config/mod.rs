//! The configuration file: repositories, jobs, notification channels and
//! the daemon's settings, read by `backupd` and `backup --config` alike.
//!
//! TOML, read once at start (and again on `SIGHUP` by the daemon). Every
//! table rejects unknown keys, and errors carry the file and line.
//! [`Config::load`] parses and validates: cron expressions, time zones,
//! durations, references between tables, the storage options of each
//! repository and the per-kind settings of each job's source (through
//! [`backup_sources::KindOptions`], the same check the command line gets).
//! The result holds no secret values, only where to read them
//! ([`SecretRef`]); secrets are read when needed.

mod alerts;
mod daemon;
mod drill;
mod job;
mod notify;
mod schedule;
mod target;

use std::collections::BTreeMap;
use std::path::Path;

use backup_storage::{StorageOptionKey, StorageOptions, StorageUrl};
use serde::Deserialize;

pub use alerts::{AlertSettings, ReportConfig, ReportFormat, Threshold};
pub use daemon::{
    AuditSettings, DaemonSettings, LogFormat, MissedRuns, RetryConfig, StatusPage, TlsSettings,
    UserConfig,
};
pub use drill::{CheckConfig, Condition, DrillConfig, DrillSettings};
pub use job::{
    Job, JobConfig, Retention, RetentionConfig, VerifyCadence, VerifyConfig, WalCapture,
};
pub use notify::{Event, NotificationConfig, SmtpSecurity};
pub use schedule::Schedule;
pub use target::{RestoreApprovals, TargetConfig};

pub use crate::error::ConfigError;
use crate::secret::SecretRef;

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
    /// Restore destinations by name (`protected` ones need approvals).
    #[serde(default)]
    pub targets: BTreeMap<String, TargetConfig>,
    /// Notification channels by name.
    #[serde(default)]
    pub notifications: BTreeMap<String, NotificationConfig>,
    /// Anomaly thresholds.
    #[serde(default)]
    pub alerts: AlertSettings,
    /// The scheduled report.
    pub report: Option<ReportConfig>,
}

/// `[repositories.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepositoryConfig {
    /// Repository URL: a path, `file:///`, `s3://` or `gs://`.
    pub url: String,
    /// Where the password comes from (unencrypted repositories need none).
    pub password: Option<SecretRef>,
    /// Storage options (`s3.endpoint`, ...), as for `--option`; unknown
    /// keys fail while the file is read.
    #[serde(default)]
    pub options: BTreeMap<StorageOptionKey, String>,
    /// Notify `storage_low` when the free space falls under this: a
    /// percentage (`20%`) or a size (`50GiB`). Local repositories measure
    /// their file system; cloud ones need `quota`.
    pub min_free: Option<String>,
    /// The space a cloud repository may use (`2048GiB`); its free space is
    /// the quota less the repository's size.
    pub quota: Option<String>,
}

impl RepositoryConfig {
    /// The storage options; unknown keys and bad values are errors naming
    /// the repository.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming `repositories.NAME.options`.
    pub fn storage_options(&self, name: &str) -> Result<StorageOptions, ConfigError> {
        let mut options = StorageOptions::default();
        for (k, v) in &self.options {
            options
                .set(*k, v)
                .map_err(|e| ConfigError::invalid(&format!("repositories.{name}.options"), e))?;
        }
        Ok(options)
    }

    /// The `storage_low` threshold and the quota, parsed.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] naming the key of a value that does not parse, or a
    /// cloud repository with `min_free` and no `quota`.
    pub fn storage_limits(
        &self,
        name: &str,
    ) -> Result<(Option<Threshold>, Option<u64>), ConfigError> {
        let min_free = self
            .min_free
            .as_deref()
            .map(Threshold::parse)
            .transpose()
            .map_err(|e| ConfigError::invalid(&format!("repositories.{name}.min_free"), e))?;
        let quota = self
            .quota
            .as_deref()
            .map(backup_core::util::parse_size)
            .transpose()
            .map_err(|e| ConfigError::invalid(&format!("repositories.{name}.quota"), e))?;
        let local = matches!(StorageUrl::parse(&self.url), Ok(StorageUrl::Local { .. }));
        if min_free.is_some() && quota.is_none() && !local {
            return Err(ConfigError::invalid(
                &format!("repositories.{name}.min_free"),
                "the free space of a cloud repository is its quota less its size: set `quota` too",
            ));
        }
        Ok((min_free, quota))
    }
}

impl Config {
    /// Reads, parses and validates a file.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] with the file name and, where known, the line.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            ConfigError::new(format!(
                "cannot read the configuration {}: {e}",
                path.display()
            ))
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
            ConfigError::new(e.message().trim()).at(file, line)
        })?;
        config.validate().map_err(|(table, e)| {
            let line = table.and_then(|t| line_of_table(text, &t));
            e.at(file, line)
        })?;
        Ok(config)
    }

    fn validate(&self) -> Result<(), (Option<String>, ConfigError)> {
        self.daemon
            .validate()
            .map_err(|e| (Some("daemon".to_owned()), e))?;
        self.alerts
            .validate()
            .map_err(|e| (Some("alerts".to_owned()), e))?;
        if let Some(r) = &self.report {
            r.schedule().map_err(|e| (Some("report".to_owned()), e))?;
            for n in r.notify.iter().flatten() {
                if !self.notifications.contains_key(n) {
                    return Err((
                        Some("report".to_owned()),
                        ConfigError::invalid(
                            "report.notify",
                            format!("no notification channel named `{n}`"),
                        ),
                    ));
                }
            }
        }
        for (name, r) in &self.repositories {
            let table = || Some(format!("repositories.{name}"));
            if let Some(p) = &r.password {
                p.validate(&format!("repositories.{name}.password"))
                    .map_err(|e| (table(), e))?;
            }
            StorageUrl::parse(&r.url).map_err(|e| {
                (
                    table(),
                    ConfigError::invalid(&format!("repositories.{name}.url"), e),
                )
            })?;
            r.storage_options(name).map_err(|e| (table(), e))?;
            r.storage_limits(name).map_err(|e| (table(), e))?;
        }
        for (name, n) in &self.notifications {
            n.validate(name)
                .map_err(|e| (Some(format!("notifications.{name}")), e))?;
        }
        for name in self.jobs.keys() {
            self.job(name)
                .map_err(|e| (Some(format!("jobs.{name}")), e))?;
        }
        for (name, t) in &self.targets {
            t.approvals_needed(name)
                .map_err(|e| (Some(format!("targets.{name}")), e))?;
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
        j.validate(name, self)
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

    /// Reads every secret the file refers to (repository passwords, job
    /// source passwords, the API token, notification secrets), for
    /// `backupd --check-config`; returns the problems.
    pub fn check_secrets(&self) -> Vec<ConfigError> {
        let mut problems = Vec::new();
        for (name, r) in &self.repositories {
            if let Some(p) = &r.password {
                if let Err(e) = p.resolve(&format!("repositories.{name}.password")) {
                    problems.push(e);
                }
            }
        }
        for job in self.all_jobs().unwrap_or_default() {
            if let Err(e) = job.source_spec() {
                problems.push(ConfigError::invalid(
                    &format!("jobs.{}.source_password", job.name),
                    e,
                ));
            }
            if let Err(e) = job.drill_target_url() {
                problems.push(e);
            }
        }
        for (key, token) in [
            ("daemon.api_token", &self.daemon.api_token),
            ("daemon.read_token", &self.daemon.read_token),
        ] {
            if let Some(Err(e)) = token.as_ref().map(|t| t.resolve(key)) {
                problems.push(e);
            }
        }
        problems
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
    use std::time::Duration;

    use chrono::{DateTime, Utc};
    use secrecy::ExposeSecret;

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
        assert_eq!(c.daemon.lock_wait, Duration::from_secs(600));
    }

    #[test]
    fn protected_jobs_need_two_or_more_people() {
        let approvals = |extra: &str| {
            Config::parse(&format!("{MINIMAL}{extra}"), "t.toml")
                .map(|c| c.job("files").unwrap().approvals)
                .map_err(|e| e.to_string())
        };
        assert_eq!(approvals(""), Ok(1));
        assert_eq!(approvals("protected = true\n"), Ok(2));
        assert_eq!(approvals("protected = true\napprovals = 3\n"), Ok(3));
        for (extra, needle) in [
            ("approvals = 2\n", "protected = true"),
            ("protected = true\napprovals = 1\n", "at least 2"),
        ] {
            let e = approvals(extra).unwrap_err();
            assert!(
                e.contains("jobs.files.approvals") && e.contains(needle),
                "{e}"
            );
        }
        let c = Config::parse(MINIMAL, "t.toml").unwrap();
        assert_eq!(c.daemon.restore_expiry, Duration::from_secs(4 * 3600));
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
    fn continuous_capture_is_for_mongodb_and_redis_jobs() {
        let with =
            |source: &str, line: &str| format!("{MINIMAL}{line}\n").replace("/srv/data", source);
        for (source, line) in [
            ("redis://127.0.0.1:6379", "capture = \"continuous\""),
            ("mongodb://127.0.0.1/", "capture = \"continuous\""),
            ("mongodb://127.0.0.1/", "oplog = \"continuous\""),
        ] {
            let c = Config::parse(&with(source, line), "t.toml").unwrap();
            assert!(c.job("files").unwrap().oplog_continuous, "{source} {line}");
        }
        for (source, line, says) in [
            ("/srv/data", "capture = \"continuous\"", "this one is files"),
            (
                "redis://127.0.0.1:6379",
                "oplog = \"continuous\"",
                "Redis source (capture)",
            ),
            (
                "redis://127.0.0.1:6379",
                "capture = \"sometimes\"",
                "the only mode",
            ),
        ] {
            let e = Config::parse(&with(source, line), "t.toml")
                .unwrap_err()
                .to_string();
            assert!(e.contains(says), "{source} {line}: {e}");
        }
    }

    #[test]
    fn wal_capture_is_for_physical_jobs_and_streams_by_default() {
        let physical = MINIMAL.replace("/srv/data", "postgres://repl@db/?mode=physical");
        let c = Config::parse(&physical, "t.toml").unwrap();
        let wal = c.job("files").unwrap().wal.unwrap();
        assert_eq!(wal.slot, "backup");
        assert_eq!(wal.flush, Duration::from_secs(5));
        assert!(!wal.backup_on_gap);
        let off = physical.replace("schedule =", "wal = \"none\"\nschedule =");
        assert!(Config::parse(&off, "t.toml")
            .unwrap()
            .job("files")
            .unwrap()
            .wal
            .is_none());
        let bad = physical.replace("schedule =", "on_wal_gap = \"panic\"\nschedule =");
        let e = Config::parse(&bad, "t.toml").unwrap_err().to_string();
        assert!(
            e.contains("jobs.files.on_wal_gap") && e.contains("\"backup\""),
            "{e}"
        );
        let files = MINIMAL.replace("schedule =", "max_wal_lag = \"1m\"\nschedule =");
        let e = Config::parse(&files, "t.toml").unwrap_err().to_string();
        assert!(
            e.contains("jobs.files.max_wal_lag") && e.contains("physical PostgreSQL"),
            "{e}"
        );
    }

    #[test]
    fn durations_are_checked_with_their_line() {
        let text = format!("[daemon]\nlock_wait = \"soon\"\n{MINIMAL}");
        let e = Config::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("line 2"), "{e}");
        let text = format!("[daemon]\nshutdown_grace = \"90s\"\n{MINIMAL}");
        let c = Config::parse(&text, "t.toml").unwrap();
        assert_eq!(c.daemon.shutdown_grace, Duration::from_secs(90));
    }

    #[test]
    fn unknown_storage_options_are_rejected() {
        let text = MINIMAL.replace(
            "password = { env = \"P\" }",
            "password = { env = \"P\" }\noptions = { \"s3.colour\" = \"blue\" }",
        );
        let e = Config::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("line 5") && e.contains("s3.colour"), "{e}");
        let text = MINIMAL.replace(
            "password = { env = \"P\" }",
            "password = { env = \"P\" }\noptions = { \"retry.max-attempts\" = \"many\" }",
        );
        let e = Config::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(
            e.contains("line 2") && e.contains("repositories.main.options"),
            "{e}"
        );
        let text = MINIMAL.replace(
            "password = { env = \"P\" }",
            "password = { env = \"P\" }\noptions = { \"retry.max-attempts\" = \"3\" }",
        );
        let c = Config::parse(&text, "t.toml").unwrap();
        assert_eq!(
            c.repository("main")
                .unwrap()
                .storage_options("main")
                .unwrap()
                .retry
                .max_attempts,
            3
        );
    }

    #[test]
    fn kind_settings_are_checked_against_the_source() {
        let text = MINIMAL.replace(
            "source = \"/srv/data\"",
            "source = \"/srv/data\"\npg_globals = true",
        );
        let e = Config::parse(&text, "t.toml").unwrap_err().to_string();
        assert!(e.contains("jobs.files") && e.contains("pg_globals"), "{e}");
        let text = MINIMAL.replace(
            "source = \"/srv/data\"",
            "source = \"redis://cache:6379\"\nmode = \"keys\"",
        );
        assert!(Config::parse(&text, "t.toml").is_ok());
    }

    #[test]
    fn drills_are_checked_against_the_job() {
        let drill = |extra: &str| {
            Config::parse(&format!("{MINIMAL}\n[jobs.files.drill]\n{extra}"), "t.toml")
        };
        let e = drill("schedule = \"0 4 * * *\"").unwrap_err().to_string();
        assert!(
            e.contains("jobs.files.drill.target") && e.contains("a directory"),
            "{e}"
        );
        let e = drill("target = \"redis://h\"").unwrap_err().to_string();
        assert!(e.contains("need a directory"), "{e}");
        let e = drill("target = \"/scratch\"\n[[jobs.files.drill.checks]]\ntype = \"sql\"\nquery = \"SELECT 1\"\nexpect = \"1\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("PostgreSQL"), "{e}");
        let e = drill("target = \"/scratch\"\nmax_rto = \"fast\"")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line"), "{e}");
        let c = drill("target = \"/scratch\"\nmax_rto = \"5m\"\nkeep = true\n[[jobs.files.drill.checks]]\ntype = \"command\"\ncommand = [\"true\"]").unwrap();
        let d = c.job("files").unwrap().drill.unwrap();
        assert!(d.keep && d.builtin_checks && d.schedule.is_none());
        let e = Config::parse(
            &format!("{MINIMAL}\n[report]\nschedule = \"soon\""),
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("report.schedule"), "{e}");
        let e = Config::parse(
            &MINIMAL.replace(
                "url = \"/tmp/repo\"",
                "url = \"s3://b/p\"\nmin_free = \"10%\"",
            ),
            "t.toml",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("quota"), "{e}");
    }

    #[test]
    fn source_password_goes_into_url() {
        let text = MINIMAL.replace(
            "source = \"/srv/data\"",
            "source = \"postgres://app@db/app\"\nsource_password = { command = \"echo pw\" }",
        );
        let c = Config::parse(&text, "t.toml").unwrap();
        let j = c.job("files").unwrap();
        let spec = j.source_spec().unwrap();
        assert_eq!(spec.url(), "postgres://app:pw@db/app");
        assert!(!format!("{j:?} {spec:?}").contains("pw@"));
        let _ = SecretRef::env("X")
            .resolve("k")
            .map(|s| s.expose_secret().len());
    }

    /// The shipped example parses and every job in it validates.
    #[test]
    fn example_config_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../../examples/backupd.toml");
        let c = Config::load(Path::new(path)).unwrap();
        assert_eq!(c.all_jobs().unwrap().len(), 4);
        assert!(c.job("orders-mongo").unwrap().oplog_continuous);
        let cluster = c.job("app-cluster").unwrap();
        assert_eq!(cluster.settings.mode.as_deref(), Some("physical"));
        assert!(cluster.wal.as_ref().is_some_and(|w| w.backup_on_gap));
        assert_eq!(c.daemon.missed_runs, MissedRuns::RunOnce);
        let db = c.job("app-db").unwrap();
        assert_eq!(db.max_age, Some(Duration::from_secs(26 * 3600)));
        assert!(db.verify.is_some() && db.retention.is_some());
        let drill = db.drill.as_ref().unwrap();
        assert_eq!(drill.checks.len(), 2);
        assert_eq!(drill.max_rto, Some(Duration::from_secs(20 * 60)));
        assert!(cluster.drill.as_ref().unwrap().schedule.is_some());
        assert!(c.report.is_some());
        assert_eq!(c.notifications.len(), 2);
    }
}
