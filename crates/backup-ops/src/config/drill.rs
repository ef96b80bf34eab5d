//! `[jobs.NAME.drill]`: scheduled restore drills of a job, and their
//! checks.

use std::time::Duration;

use backup_sources::{Kind, PostgresMode};
use serde::Deserialize;

use super::{ConfigError, Schedule};
use crate::secret::SecretRef;

/// `[jobs.NAME.drill]` as written.
///
/// ```toml
/// [jobs.app-db.drill]
/// schedule = "0 4 * * 0"                         # weekly; without it only `backup drill JOB`
/// target = "postgres://drill@scratch-db:5432/"   # where the scratch copy goes (per kind)
/// target_password = { env = "SCRATCH_PG_PASSWORD" }
/// max_rto = "15m"                                # notify rto_exceeded above this
/// keep = false                                   # leave the scratch copy for inspection
/// point = "latest"                               # or "random": a random time of the restorable window (physical PostgreSQL, MongoDB with oplog capture);
///                                                # or "canary": a row or document written to the source first, required in the copy (measures the real RPO)
/// canary_database = "postgres"                   # physical PostgreSQL: where the canary row goes (default: the source URL's database, else postgres)
///
/// [[jobs.app-db.drill.checks]]
/// type = "sql"
/// query = "SELECT count(*) FROM orders WHERE created > now() - interval '2 days'"
/// expect = "> 0"
/// ```
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillConfig {
    /// Cron expression of scheduled drills (in the job's time zone);
    /// without it the drill runs only on request.
    pub schedule: Option<String>,
    /// The scratch location: a directory (files, PostgreSQL physical), a
    /// server (`postgres://`, `mongodb://`), a Redis server or database
    /// (`redis://host:port[/db]`) or `redis-server` (a throwaway server
    /// the drill starts; the default for Redis jobs).
    pub target: Option<String>,
    /// Password to put into the target URL.
    pub target_password: Option<SecretRef>,
    /// The longest acceptable time until the scratch copy is usable.
    #[serde(default, with = "humantime_serde::option")]
    pub max_rto: Option<Duration>,
    /// Leave the scratch copy in place (for inspection).
    #[serde(default)]
    pub keep: bool,
    /// Run the kind's built-in checks (counts against the manifest, the
    /// restore-test comparison of files); on by default.
    #[serde(default = "yes")]
    pub builtin_checks: bool,
    /// Further checks.
    #[serde(default)]
    pub checks: Vec<CheckConfig>,
    /// What is restored: `latest` (the newest snapshot, the default),
    /// `random` (a random time of the restorable window of a job whose
    /// WAL, oplog or Redis stream is captured) or `canary` (a row or
    /// document written to the source first, required in the copy; the
    /// RPO is the time until it was captured).
    pub point: Option<String>,
    /// PostgreSQL: the database the canary row is written to (and looked
    /// for in the copy). Default: the database the source URL names,
    /// else `postgres` (a physical job's URL often names none). The
    /// source's role must be allowed to create and write the table
    /// `backup_drill_canary` there.
    pub canary_database: Option<String>,
}

fn yes() -> bool {
    true
}

/// One configured check of a drill: `[[jobs.NAME.drill.checks]]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum CheckConfig {
    /// PostgreSQL: a query whose first value must meet a condition.
    Sql {
        /// The query; its first column of the first row is compared.
        query: String,
        /// `OP VALUE` (`= 0`, `>= 1000`, `!= ''`), or a bare value meaning
        /// `=`; numbers compare as numbers.
        expect: String,
        /// The database to run it in (physical drills; logical drills run
        /// it in the scratch database). Default: the source URL's.
        database: Option<String>,
    },
    /// MongoDB: at least `min` documents of `collection` (`db.coll`, as
    /// in the source; mapped to the scratch copy) match `filter`.
    MongoCount {
        /// `db.collection`.
        collection: String,
        /// A filter in MongoDB extended JSON (`{"paid": true}`); all
        /// documents when absent.
        filter: Option<String>,
        /// The fewest documents that pass.
        #[serde(default = "one")]
        min: u64,
    },
    /// Redis: the key exists in the scratch copy of database `db`.
    RedisKey {
        /// The key.
        key: String,
        /// The source database (default 0).
        #[serde(default)]
        db: u32,
    },
    /// Redis: the scratch copy of database `db` holds at least `min` keys.
    RedisDbsize {
        /// The fewest keys.
        min: u64,
        /// The source database (default 0).
        #[serde(default)]
        db: u32,
    },
    /// Any kind: a program run with the scratch copy's location in its
    /// environment (`BACKUP_DRILL_URL`, and `BACKUP_DRILL_PATH` for
    /// directories); it passes when it exits 0. An application's smoke
    /// tests, for example.
    Command {
        /// The program and its arguments (no shell).
        command: Vec<String>,
        /// How long it may run (default 10 minutes).
        #[serde(default, with = "humantime_serde::option")]
        timeout: Option<Duration>,
    },
}

fn one() -> u64 {
    1
}

impl CheckConfig {
    /// A short name for reports (`sql: SELECT ...`).
    pub fn name(&self) -> String {
        let short = |s: &str| {
            let s = s.split_whitespace().collect::<Vec<_>>().join(" ");
            if s.chars().count() > 60 {
                format!("{}...", s.chars().take(57).collect::<String>())
            } else {
                s
            }
        };
        match self {
            CheckConfig::Sql { query, expect, .. } => {
                format!("sql: {} {}", short(query), expect.trim())
            }
            CheckConfig::MongoCount {
                collection,
                filter,
                min,
            } => format!(
                "mongo count: {collection}{} >= {min}",
                filter
                    .as_deref()
                    .map(|f| format!(" {}", short(f)))
                    .unwrap_or_default()
            ),
            CheckConfig::RedisKey { key, db } => format!("redis key: {key} in db {db}"),
            CheckConfig::RedisDbsize { min, db } => format!("redis dbsize: db {db} >= {min}"),
            CheckConfig::Command { command, .. } => {
                format!("command: {}", short(&command.join(" ")))
            }
        }
    }

    /// Checks the check against the job's kind.
    ///
    /// # Errors
    ///
    /// A check of another kind, an empty command, an expectation that
    /// does not parse, a filter that is not JSON.
    pub fn validate(&self, kind: Kind, key: &str) -> Result<(), ConfigError> {
        let (what, applies, wants) = match self {
            CheckConfig::Sql { .. } => ("sql", "PostgreSQL", kind == Kind::Postgres),
            CheckConfig::MongoCount { .. } => ("mongo_count", "MongoDB", kind == Kind::Mongodb),
            CheckConfig::RedisKey { .. } | CheckConfig::RedisDbsize { .. } => {
                ("redis_key/redis_dbsize", "Redis", kind == Kind::Redis)
            }
            CheckConfig::Command { .. } => ("command", "all", true),
        };
        if !wants {
            return Err(ConfigError::invalid(
                key,
                format!("a `{what}` check applies to {applies} jobs, and this job backs up a {kind} source"),
            ));
        }
        match self {
            CheckConfig::Sql { expect, query, .. } => {
                if query.trim().is_empty() {
                    return Err(ConfigError::invalid(key, "the query is empty"));
                }
                Condition::parse(expect).map_err(|e| ConfigError::invalid(key, e))?;
            }
            CheckConfig::MongoCount {
                collection, filter, ..
            } => {
                if !collection.contains('.') {
                    return Err(ConfigError::invalid(
                        key,
                        format!("`{collection}` is not db.collection"),
                    ));
                }
                if let Some(f) = filter {
                    let v: serde_json::Value = serde_json::from_str(f).map_err(|e| {
                        ConfigError::invalid(key, format!("the filter is not JSON: {e}"))
                    })?;
                    if !v.is_object() {
                        return Err(ConfigError::invalid(key, "the filter is not a JSON object"));
                    }
                }
            }
            CheckConfig::Command { command, .. }
                if command.first().is_none_or(String::is_empty) =>
            {
                return Err(ConfigError::invalid(key, "the command is empty"));
            }
            _ => {}
        }
        Ok(())
    }
}

/// A comparison of a check's value: `OP VALUE`.
#[derive(Debug, Clone, PartialEq)]
pub struct Condition {
    op: &'static str,
    value: String,
}

impl Condition {
    /// Parses `>= 10`, `= 'x'`, `!= 0`, or a bare value (`=`); quotes
    /// around the value are removed.
    ///
    /// # Errors
    ///
    /// An empty expectation.
    pub fn parse(s: &str) -> Result<Self, String> {
        let s = s.trim();
        if s.is_empty() {
            return Err("the expectation is empty: use for example `> 0` or `= 42`".to_owned());
        }
        let (op, rest) = ["<=", ">=", "!=", "<>", "==", "=", "<", ">"]
            .iter()
            .find_map(|op| s.strip_prefix(op).map(|r| (*op, r)))
            .unwrap_or(("=", s));
        let op = match op {
            "<>" => "!=",
            "==" => "=",
            o => o,
        };
        let v = rest.trim();
        let v = v
            .strip_prefix('\'')
            .and_then(|x| x.strip_suffix('\''))
            .or_else(|| v.strip_prefix('"').and_then(|x| x.strip_suffix('"')))
            .unwrap_or(v);
        Ok(Condition {
            op,
            value: v.to_owned(),
        })
    }

    /// Whether `got` (SQL NULL is `None`) meets the condition: numbers
    /// compare as numbers, anything else as text; NULL meets only
    /// `= NULL` and `!= <anything else>`.
    pub fn holds(&self, got: Option<&str>) -> bool {
        let Some(got) = got else {
            // NULL equals only `null`, differs from every value, and is in
            // no order.
            let null = self.value.eq_ignore_ascii_case("null");
            return match self.op {
                "=" => null,
                "!=" => !null,
                _ => false,
            };
        };
        let ord = match (got.trim().parse::<f64>(), self.value.parse::<f64>()) {
            (Ok(a), Ok(b)) => a.partial_cmp(&b),
            _ => Some(got.cmp(self.value.as_str())),
        };
        let Some(ord) = ord else { return false };
        match self.op {
            "=" => ord.is_eq(),
            "!=" => ord.is_ne(),
            "<" => ord.is_lt(),
            "<=" => ord.is_le(),
            ">" => ord.is_gt(),
            _ => ord.is_ge(),
        }
    }
}

impl std::fmt::Display for Condition {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}", self.op, self.value)
    }
}

/// A job's validated drill settings.
#[derive(Debug, Clone)]
pub struct DrillSettings {
    /// When scheduled drills run.
    pub schedule: Option<Schedule>,
    /// The scratch location (without a password).
    pub target: Option<String>,
    /// Password of the target URL.
    pub target_password: Option<SecretRef>,
    /// RTO limit.
    pub max_rto: Option<Duration>,
    /// Keep the scratch copy.
    pub keep: bool,
    /// Run the built-in checks.
    pub builtin_checks: bool,
    /// Configured checks.
    pub checks: Vec<CheckConfig>,
    /// `latest`, `random` or `canary` (see [`DrillConfig::point`]).
    pub point: String,
    /// Where a PostgreSQL canary goes (see [`DrillConfig::canary_database`]).
    pub canary_database: Option<String>,
}

impl DrillConfig {
    pub(super) fn validate(
        &self,
        job: &str,
        kind: Kind,
        physical: bool,
        tz: Option<&str>,
    ) -> Result<DrillSettings, ConfigError> {
        let key = |k: &str| format!("jobs.{job}.drill.{k}");
        let schedule = self
            .schedule
            .as_deref()
            .map(|s| Schedule::parse(s, tz))
            .transpose()
            .map_err(|e| ConfigError::invalid(&key("schedule"), e))?;
        // A physical PostgreSQL copy goes into a directory.
        let want = if physical && kind == Kind::Postgres {
            Kind::Files
        } else {
            kind
        };
        match &self.target {
            None if kind == Kind::Redis => {}
            None => {
                return Err(ConfigError::invalid(
                    &key("target"),
                    match want {
                        Kind::Files => {
                            "say where the scratch copy goes: a directory in which each drill makes a new one"
                        }
                        Kind::Postgres => {
                            "say where the scratch copy goes: a PostgreSQL server URL (postgres://user@host:port/); each drill makes a new database there"
                        }
                        _ => "say where the scratch copy goes: a MongoDB deployment URL (mongodb://host:port/); each drill restores into renamed databases there",
                    },
                ))
            }
            Some(t) => {
                let scheme_kind = Kind::of(t).map_err(|e| ConfigError::invalid(&key("target"), e))?;
                let redis_server = kind == Kind::Redis && t == "redis-server";
                if scheme_kind != want && !redis_server {
                    return Err(ConfigError::invalid(
                        &key("target"),
                        format!(
                            "`{}` is a {} location, and this job's drills need {}",
                            backup_core::redact::redact_url(t),
                            scheme_kind,
                            match want {
                                Kind::Files => "a directory",
                                Kind::Postgres => "a postgres:// server",
                                Kind::Mongodb => "a mongodb:// deployment",
                                Kind::Redis => "a redis:// server or database, or redis-server",
                            }
                        ),
                    ));
                }
            }
        }
        if let Some(p) = &self.target_password {
            p.validate(&key("target_password"))?;
        }
        if self.max_rto.is_some_and(|d| d.is_zero()) {
            return Err(ConfigError::invalid(
                &key("max_rto"),
                "must be more than 0s",
            ));
        }
        for (i, c) in self.checks.iter().enumerate() {
            c.validate(kind, &key(&format!("checks[{i}]")))?;
        }
        let point = self.point.clone().unwrap_or_else(|| "latest".to_owned());
        match point.as_str() {
            "latest" => {}
            "random" | "canary" if (kind == Kind::Postgres && physical) || kind == Kind::Mongodb => {}
            "random" if kind == Kind::Redis => {}
            "random" | "canary" => {
                return Err(ConfigError::invalid(
                    &key("point"),
                    format!("`{point}` needs a physical PostgreSQL job (mode=physical) whose WAL is captured, or a MongoDB job whose oplog is captured (or, for `random`, a Redis job whose stream is captured): it replays the newest base to a time of the restorable window"),
                ))
            }
            other => {
                return Err(ConfigError::invalid(
                    &key("point"),
                    format!("`{other}`: use `latest`, `random` or `canary`"),
                ))
            }
        }
        if let Some(db) = &self.canary_database {
            if kind != Kind::Postgres {
                return Err(ConfigError::invalid(
                    &key("canary_database"),
                    format!("applies to PostgreSQL jobs, and this job backs up a {kind} source"),
                ));
            }
            if db.trim().is_empty() {
                return Err(ConfigError::invalid(
                    &key("canary_database"),
                    "is empty: name a database of the source's cluster",
                ));
            }
        }
        Ok(DrillSettings {
            canary_database: self.canary_database.clone(),
            point,
            schedule,
            target: self.target.clone(),
            target_password: self.target_password.clone(),
            max_rto: self.max_rto,
            keep: self.keep,
            builtin_checks: self.builtin_checks,
            checks: self.checks.clone(),
        })
    }
}

/// Whether a job's settings make a physical PostgreSQL backup.
pub(super) fn is_physical(source: &str, mode: Option<&str>) -> bool {
    mode.and_then(|m| m.parse::<PostgresMode>().ok())
        .or_else(|| {
            source
                .split_once('?')
                .and_then(|(_, q)| {
                    url::form_urlencoded::parse(q.as_bytes())
                        .find(|(k, _)| k == "mode")
                        .map(|(_, v)| v.into_owned())
                })
                .and_then(|m| m.parse().ok())
        })
        == Some(PostgresMode::Physical)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conditions() {
        let c = |s: &str| Condition::parse(s).unwrap();
        assert!(c("> 0").holds(Some("3")));
        assert!(!c("> 0").holds(Some("0")));
        assert!(c(">= 10").holds(Some("10")));
        assert!(c("42").holds(Some("42.0")));
        assert!(c("= 'paid'").holds(Some("paid")));
        assert!(c("!= 0").holds(Some("x")));
        assert!(c("<> 1").holds(Some("2")));
        assert!(c("= null").holds(None));
        assert!(!c("> 0").holds(None));
        assert!(c("!= 5").holds(None));
        assert!(!c("< 9").holds(Some("10")));
        assert!(Condition::parse("  ").is_err());
        assert_eq!(c(">=3").to_string(), ">= 3");
    }

    #[test]
    fn checks_follow_the_kind() {
        let sql = CheckConfig::Sql {
            query: "SELECT 1".into(),
            expect: "= 1".into(),
            database: None,
        };
        assert!(sql.validate(Kind::Postgres, "k").is_ok());
        let e = sql.validate(Kind::Redis, "k").unwrap_err().to_string();
        assert!(e.contains("PostgreSQL") && e.contains("redis"), "{e}");
        let count = CheckConfig::MongoCount {
            collection: "orders".into(),
            filter: None,
            min: 1,
        };
        assert!(count
            .validate(Kind::Mongodb, "k")
            .unwrap_err()
            .to_string()
            .contains("db.collection"));
        let count = CheckConfig::MongoCount {
            collection: "app.orders".into(),
            filter: Some("[1]".into()),
            min: 1,
        };
        assert!(count
            .validate(Kind::Mongodb, "k")
            .unwrap_err()
            .to_string()
            .contains("object"));
        let cmd = CheckConfig::Command {
            command: vec![],
            timeout: None,
        };
        assert!(cmd.validate(Kind::Files, "k").is_err());
        assert!(is_physical("postgres://h/db?mode=physical", None));
        assert!(is_physical("postgres://h/db", Some("physical")));
        assert!(!is_physical("postgres://h/db", None));
    }
}
