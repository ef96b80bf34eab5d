//! `[jobs.NAME]`: a source, its repository, schedule, retention and
//! verification cadence.

use std::time::Duration;

use backup_core::retention::{parse_tz, RetentionPolicy};
use backup_sources::{FilesOptions, Kind, KindOptions, KindSettings, SourceSpec};
use secrecy::ExposeSecret;
use serde::Deserialize;

use super::drill::{is_physical, DrillConfig, DrillSettings};
use super::{Config, ConfigError, Schedule};
use crate::secret::SecretRef;

/// `[jobs.NAME]` as written.
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
    /// How to read the source (Redis: `rdb` or `keys`; PostgreSQL:
    /// `logical` or `physical`), as `--mode`.
    pub mode: Option<String>,
    /// PostgreSQL physical: the data directory to read directly, as
    /// `--pgdata`.
    pub pgdata: Option<std::path::PathBuf>,
    /// PostgreSQL physical: `fast` or `spread` starting checkpoint.
    pub checkpoint: Option<String>,
    /// PostgreSQL physical over replication: the most bytes per second
    /// (`100MiB`).
    pub max_rate: Option<String>,
    /// Files: stay on the source's file system (`--one-file-system`).
    #[serde(default)]
    pub one_file_system: bool,
    /// Files: leave out directories tagged by CACHEDIR.TAG
    /// (`--exclude-caches`).
    #[serde(default)]
    pub exclude_caches: bool,
    /// Files: leave out directories holding a file of one of these names
    /// (`--exclude-if-present`).
    #[serde(default)]
    pub exclude_if_present: Vec<String>,
    /// Files: files of exclude patterns (`--exclude-file`).
    #[serde(default)]
    pub exclude_file: Vec<std::path::PathBuf>,
    /// Files: leave out files larger than this (`2GiB`;
    /// `--exclude-larger-than`).
    pub exclude_larger_than: Option<String>,
    /// Files: back up only the paths these files list (`--files-from`).
    #[serde(default)]
    pub files_from: Vec<std::path::PathBuf>,
    /// Files: the `files_from` lists are NUL-separated (`-0`).
    #[serde(default)]
    pub files_from_nul: bool,
    /// PostgreSQL physical: WAL capture beside the base backups while
    /// `backupd` runs: `stream` (the default for physical jobs) or `none`.
    pub wal: Option<String>,
    /// The physical replication slot of the WAL receiver (default
    /// `backup`).
    pub wal_slot: Option<String>,
    /// Store received WAL at least this often (default 5s).
    #[serde(default, with = "humantime_serde::option")]
    pub wal_flush: Option<Duration>,
    /// Notify (`wal_lag`) when the stored WAL is more than this behind the
    /// server.
    #[serde(default, with = "humantime_serde::option")]
    pub max_wal_lag: Option<Duration>,
    /// After a WAL gap: `alert` (default) or `backup` (alert and take a
    /// new base backup, from which the window starts again).
    pub on_wal_gap: Option<String>,
    /// Retention applied after each successful backup.
    pub retention: Option<RetentionConfig>,
    /// Verification cadence.
    pub verify: Option<VerifyConfig>,
    /// Maximum acceptable age of the last successful backup (e.g. `26h`).
    #[serde(default, with = "humantime_serde::option")]
    pub max_age: Option<Duration>,
    /// Channels to notify (default: every channel).
    pub notify: Option<Vec<String>>,
    /// Also notify about each successful run.
    #[serde(default)]
    pub notify_success: bool,
    /// Restore drills.
    pub drill: Option<DrillConfig>,
    /// MongoDB: `"continuous"` runs an oplog follower beside the scheduled
    /// backups (as `backup oplog follow`), for restores to any point.
    pub oplog: Option<String>,
    /// MongoDB and Redis: `"continuous"` runs a capture follower beside
    /// the scheduled backups (`backup oplog follow`, `backup redis
    /// follow`), for restores to any point. For MongoDB the same as
    /// `oplog = "continuous"`.
    pub capture: Option<String>,
    /// MongoDB with `oplog = "continuous"`: notify (`capture_lag`) when the
    /// captured oplog falls further behind the source than this.
    #[serde(default, with = "humantime_serde::option")]
    pub max_oplog_lag: Option<Duration>,
    /// Production: a restore requested through the daemon waits for
    /// approvals (`approvals`, default 2) before it runs.
    #[serde(default)]
    pub protected: bool,
    /// With `protected`: how many people a restore needs, the requester
    /// included (2: the requester and one other admin). At least 2.
    pub approvals: Option<u32>,
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
    #[serde(default, with = "humantime_serde::option")]
    pub keep_within: Option<Duration>,
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

/// A job's retention: the policy and whether to prune after it.
#[derive(Debug, Clone)]
pub struct Retention {
    /// What to keep.
    pub policy: RetentionPolicy,
    /// Remove unreferenced data afterwards.
    pub prune: bool,
}

/// A job's verification cadence.
#[derive(Debug, Clone)]
pub struct VerifyCadence {
    /// When to verify.
    pub schedule: Schedule,
    /// Percentage of packs to read (structure only when `None`).
    pub read_data: Option<f64>,
}

/// A physical PostgreSQL job's continuous WAL capture.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WalCapture {
    /// The replication slot.
    pub slot: String,
    /// How often received WAL is stored at least.
    pub flush: Duration,
    /// Lag beyond which `wal_lag` is notified.
    pub max_lag: Option<Duration>,
    /// Whether a gap also triggers a new base backup.
    pub backup_on_gap: bool,
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
    /// The per-kind settings (checked against the source's kind).
    pub settings: KindSettings,
    /// Retention after each successful backup.
    pub retention: Option<Retention>,
    /// Verification cadence.
    pub verify: Option<VerifyCadence>,
    /// Maximum backup age.
    pub max_age: Option<Duration>,
    /// Channels to notify.
    pub notify: Vec<String>,
    /// Notify about successes too.
    pub notify_success: bool,
    /// WAL capture (physical PostgreSQL jobs).
    pub wal: Option<WalCapture>,
    /// Restore drills.
    pub drill: Option<DrillSettings>,
    /// Capture the oplog continuously (`oplog = "continuous"`, MongoDB).
    pub oplog_continuous: bool,
    /// The lag over which a `lag` notification goes out.
    pub max_oplog_lag: Option<Duration>,
    /// How many people a restore requested through the daemon needs, the
    /// requester included: 1 for a job that is not `protected` (it runs
    /// at once), `approvals` (default 2) for one that is.
    pub approvals: u32,
}

impl JobConfig {
    /// The job's WAL capture, checked: physical PostgreSQL jobs stream by
    /// default; the WAL keys on any other job are an error.
    fn wal_capture(&self, name: &str, kind: Kind) -> Result<Option<WalCapture>, ConfigError> {
        let key = |k: &str| format!("jobs.{name}.{k}");
        let physical = kind == Kind::Postgres
            && (self.mode.as_deref() == Some("physical")
                || (self.mode.is_none()
                    && url::Url::parse(&self.source).is_ok_and(|u| {
                        u.query_pairs().any(|(k, v)| k == "mode" && v == "physical")
                    })));
        let given = [
            ("wal", self.wal.is_some()),
            ("wal_slot", self.wal_slot.is_some()),
            ("wal_flush", self.wal_flush.is_some()),
            ("max_wal_lag", self.max_wal_lag.is_some()),
            ("on_wal_gap", self.on_wal_gap.is_some()),
        ];
        if !physical {
            if let Some((k, _)) = given.iter().find(|(_, set)| *set) {
                return Err(ConfigError::invalid(
                    &key(k),
                    "WAL capture is for physical PostgreSQL jobs (mode = \"physical\")",
                ));
            }
            return Ok(None);
        }
        match self.wal.as_deref() {
            None | Some("stream") => {}
            Some("none") => return Ok(None),
            Some(other) => {
                return Err(ConfigError::invalid(
                    &key("wal"),
                    format!("`{other}`: use \"stream\" or \"none\""),
                ))
            }
        }
        let backup_on_gap = match self.on_wal_gap.as_deref() {
            None | Some("alert") => false,
            Some("backup") => true,
            Some(other) => {
                return Err(ConfigError::invalid(
                    &key("on_wal_gap"),
                    format!("`{other}`: use \"alert\" or \"backup\""),
                ))
            }
        };
        let flush = self.wal_flush.unwrap_or(Duration::from_secs(5));
        if flush.is_zero() {
            return Err(ConfigError::invalid(
                &key("wal_flush"),
                "must be more than 0s",
            ));
        }
        let slot = self.wal_slot.clone().unwrap_or_else(|| "backup".to_owned());
        if slot.is_empty()
            || !slot
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(ConfigError::invalid(
                &key("wal_slot"),
                "a slot name has lower-case letters, digits and underscores",
            ));
        }
        Ok(Some(WalCapture {
            slot,
            flush,
            max_lag: self.max_wal_lag,
            backup_on_gap,
        }))
    }

    pub(super) fn validate(&self, name: &str, config: &Config) -> Result<Job, ConfigError> {
        let j = self;
        let key = |k: &str| format!("jobs.{name}.{k}");
        if !config.repositories.contains_key(&j.repository) {
            return Err(ConfigError::invalid(
                &key("repository"),
                format!("no repository named `{}`", j.repository),
            ));
        }
        let kind = Kind::of(&j.source).map_err(|e| ConfigError::invalid(&key("source"), e))?;
        let settings = self.kind_settings(name)?;
        KindOptions::new(kind, &settings).map_err(|e| ConfigError::invalid(&key("source"), e))?;
        let wal = self.wal_capture(name, kind)?;
        if let Some(p) = &j.source_password {
            p.validate(&key("source_password"))?;
        }
        let schedule = Schedule::parse(&j.schedule, j.timezone.as_deref())
            .map_err(|e| ConfigError::invalid(&key("schedule"), e))?;
        let retention = self.checked_retention(name)?;
        let oplog_continuous = self.oplog_continuous(name, kind)?;
        if j.max_oplog_lag.is_some() && !oplog_continuous {
            return Err(ConfigError::invalid(
                &key("max_oplog_lag"),
                "applies to jobs with oplog = \"continuous\"",
            ));
        }
        let verify = self.verify_cadence(name)?;
        let notify = self.notify_channels(name, config)?;
        let drill = j
            .drill
            .as_ref()
            .map(|d| {
                d.validate(
                    name,
                    kind,
                    is_physical(&j.source, j.mode.as_deref()),
                    j.timezone.as_deref(),
                )
            })
            .transpose()?;
        Ok(Job {
            name: name.to_owned(),
            repository: j.repository.clone(),
            source: j.source.clone(),
            source_password: j.source_password.clone(),
            schedule,
            tags: j.tags.clone(),
            includes: j.include.clone(),
            excludes: j.exclude.clone(),
            settings,
            retention,
            verify,
            max_age: j.max_age,
            notify,
            notify_success: j.notify_success,
            wal,
            drill,
            oplog_continuous,
            max_oplog_lag: j.max_oplog_lag,
            approvals: self.approvals_needed(name)?,
        })
    }

    /// `protected` and `approvals`, checked: approvals only on a protected
    /// job, and at least 2 (the requester and someone else).
    fn approvals_needed(&self, name: &str) -> Result<u32, ConfigError> {
        match (self.protected, self.approvals) {
            (false, None) => Ok(1),
            (false, Some(_)) => Err(ConfigError::invalid(
                &format!("jobs.{name}.approvals"),
                "applies to protected jobs: add protected = true",
            )),
            (true, None) => Ok(2),
            (true, Some(n)) if n >= 2 => Ok(n),
            (true, Some(n)) => Err(ConfigError::invalid(
                &format!("jobs.{name}.approvals"),
                format!(
                    "is {n}: a protected job needs at least 2 (the requester and another admin)"
                ),
            )),
        }
    }

    /// The job's per-kind settings, with its sizes parsed.
    fn kind_settings(&self, name: &str) -> Result<KindSettings, ConfigError> {
        let j = self;
        let key = |k: &str| format!("jobs.{name}.{k}");
        let max_rate = j
            .max_rate
            .as_deref()
            .map(backup_core::util::parse_size)
            .transpose()
            .map_err(|e| ConfigError::invalid(&key("max_rate"), e))?;
        let exclude_larger_than = j
            .exclude_larger_than
            .as_deref()
            .map(backup_core::util::parse_size)
            .transpose()
            .map_err(|e| ConfigError::invalid(&key("exclude_larger_than"), e))?;
        Ok(KindSettings {
            pg_globals: j.pg_globals,
            mongo_users: j.mongo_users,
            mode: j.mode.clone(),
            pgdata: j.pgdata.clone(),
            checkpoint: j.checkpoint.clone(),
            max_rate,
            files: FilesOptions {
                one_file_system: j.one_file_system,
                exclude_caches: j.exclude_caches,
                exclude_if_present: j.exclude_if_present.clone(),
                exclude_larger_than,
                exclude_files: j.exclude_file.clone(),
                files_from: j.files_from.clone(),
                files_from_nul: j.files_from_nul,
            },
        })
    }

    /// The job's retention, checked: its time zone parses and it has at
    /// least one rule.
    fn checked_retention(&self, name: &str) -> Result<Option<Retention>, ConfigError> {
        let key = |k: &str| format!("jobs.{name}.{k}");
        let Some(r) = &self.retention else {
            return Ok(None);
        };
        let policy = RetentionPolicy {
            last: r.keep_last,
            hourly: r.keep_hourly,
            daily: r.keep_daily,
            weekly: r.keep_weekly,
            monthly: r.keep_monthly,
            yearly: r.keep_yearly,
            within: r.keep_within,
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
        Ok(Some(Retention {
            policy,
            prune: r.prune,
        }))
    }

    /// Whether the job captures continuously (`oplog` or `capture` =
    /// `"continuous"`), checked against the source's kind.
    fn oplog_continuous(&self, name: &str, kind: Kind) -> Result<bool, ConfigError> {
        let key = |k: &str| format!("jobs.{name}.{k}");
        let (mode_key, mode) = match (&self.oplog, &self.capture) {
            (Some(_), Some(_)) => {
                return Err(ConfigError::invalid(
                    &key("oplog"),
                    "give either oplog or capture (they mean the same for MongoDB)",
                ))
            }
            (Some(m), None) => ("oplog", Some(m.as_str())),
            (None, m) => ("capture", m.as_deref()),
        };
        match mode {
            None => Ok(false),
            Some("continuous") if kind == Kind::Mongodb => Ok(true),
            Some("continuous") if kind == Kind::Redis && mode_key == "capture" => Ok(true),
            Some("continuous") => Err(ConfigError::invalid(
                &key(mode_key),
                format!(
                    "continuous capture needs a MongoDB source (oplog or capture) or a Redis source (capture), and this one is {kind}"
                ),
            )),
            Some(other) => Err(ConfigError::invalid(
                &key(mode_key),
                format!("`{other}`: the only mode is \"continuous\""),
            )),
        }
    }

    /// The job's verification cadence, checked: its schedule parses and
    /// `read_data` is a percentage.
    fn verify_cadence(&self, name: &str) -> Result<Option<VerifyCadence>, ConfigError> {
        let key = |k: &str| format!("jobs.{name}.{k}");
        let Some(v) = &self.verify else {
            return Ok(None);
        };
        let schedule = Schedule::parse(&v.schedule, self.timezone.as_deref())
            .map_err(|e| ConfigError::invalid(&key("verify.schedule"), e))?;
        if let Some(p) = v.read_data {
            if !(p > 0.0 && p <= 100.0) {
                return Err(ConfigError::invalid(
                    &key("verify.read_data"),
                    "a percentage more than 0 and at most 100",
                ));
            }
        }
        Ok(Some(VerifyCadence {
            schedule,
            read_data: v.read_data,
        }))
    }

    /// The channels the job notifies, checked against `[notifications]`
    /// (every channel when the job names none).
    fn notify_channels(&self, name: &str, config: &Config) -> Result<Vec<String>, ConfigError> {
        let key = |k: &str| format!("jobs.{name}.{k}");
        let Some(list) = &self.notify else {
            return Ok(config.notifications.keys().cloned().collect());
        };
        for n in list {
            if !config.notifications.contains_key(n) {
                return Err(ConfigError::invalid(
                    &key("notify"),
                    format!("no notification channel named `{n}`"),
                ));
            }
        }
        Ok(list.clone())
    }
}

impl Job {
    /// The job's source, with its password read and filled into the URL.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when the password cannot be read or the URL takes
    /// none; the source's own checks of its settings.
    pub fn source_spec(&self) -> crate::Result<SourceSpec> {
        let url = self.source_url()?;
        Ok(SourceSpec::new(
            url,
            self.includes.clone(),
            self.excludes.clone(),
            &self.settings,
        )?)
    }

    /// Whether the job makes physical PostgreSQL backups.
    pub fn is_physical(&self) -> bool {
        is_physical(&self.source, self.settings.mode.as_deref())
    }

    /// The drill's target URL with its password filled in.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when the job has no drill target, the password
    /// cannot be read or the URL takes none.
    pub fn drill_target_url(&self) -> Result<Option<String>, ConfigError> {
        let Some(d) = &self.drill else {
            return Ok(None);
        };
        let Some(target) = &d.target else {
            return Ok(None);
        };
        let key = format!("jobs.{}.drill.target_password", self.name);
        let Some(r) = &d.target_password else {
            return Ok(Some(target.clone()));
        };
        with_password(target, r, &key).map(Some)
    }

    /// The job's source URL with its password filled in.
    ///
    /// # Errors
    ///
    /// [`ConfigError`] when the password cannot be read or the URL takes
    /// none.
    pub fn source_url(&self) -> Result<String, ConfigError> {
        let key = format!("jobs.{}.source_password", self.name);
        let Some(r) = &self.source_password else {
            return Ok(self.source.clone());
        };
        with_password(&self.source, r, &key)
    }
}

/// `url` with the password `r` refers to.
fn with_password(url: &str, r: &SecretRef, key: &str) -> Result<String, ConfigError> {
    let password = r.resolve(key)?;
    let mut parsed = url::Url::parse(url).map_err(|_| {
        ConfigError::invalid(key, "the location is not a URL that can carry a password")
    })?;
    parsed
        .set_password(Some(password.expose_secret()))
        .map_err(|()| ConfigError::invalid(key, "this URL cannot carry a password"))?;
    Ok(parsed.to_string())
}
