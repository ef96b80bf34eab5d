//! The checks a drill runs on its scratch copy: the kind's built-in
//! comparison with the snapshot, and the configured ones.

use std::future::Future;
use std::process::Stdio;
use std::time::{Duration, Instant};

use backup_core::drill::DrillCheck;
use backup_core::reader::SnapshotReader;

use backup_sources::drill::{self, Answer, CanaryMark, Probe};
use backup_sources::Kind;

use super::scratch::{physical_url, Scratch};
use crate::config::{CheckConfig, Condition};

/// What the checks need beyond the scratch copy.
pub(crate) struct CheckContext<'a> {
    /// The snapshot restored.
    pub(crate) reader: &'a SnapshotReader,
    /// The port of the server started on a data directory.
    pub(crate) port: Option<u16>,
    /// The snapshot's id, for commands.
    pub(crate) snapshot: String,
    /// A physical copy's comparison of its files with the backup
    /// manifest, made before its server started (which removes
    /// `backup_label`); `None` for other kinds and for a copy replayed to
    /// a point in time (the restore checked each file it wrote).
    pub(crate) files: Option<DrillCheck>,
    /// Whether a captured change stream was replayed after the snapshot:
    /// the copy then differs from the snapshot's manifest by design.
    pub(crate) replayed: bool,
}

/// Runs the check `name`, timed; it passes when `check` is `Ok`.
async fn timed(name: String, check: impl Future<Output = Result<String, String>>) -> DrillCheck {
    let started = Instant::now();
    let result = check.await;
    DrillCheck {
        name,
        ok: result.is_ok(),
        seconds: started.elapsed().as_secs_f64(),
        detail: result.unwrap_or_else(|e| e),
    }
}

/// A storage or driver error as a check's detail (by value: `map_err`).
#[allow(clippy::needless_pass_by_value)]
fn report(e: backup_core::Error) -> String {
    backup_core::error::report(&e)
}

/// Runs the comparison `name` of the copy with the snapshot: it passes
/// when `diffs` finds no differences (`what` then says so), else it shows
/// the first ten.
pub(crate) async fn compare(
    name: &str,
    what: &str,
    diffs: impl Future<Output = backup_core::Result<Vec<String>>>,
) -> DrillCheck {
    let r = async {
        let diffs = diffs.await.map_err(report)?;
        let n = diffs.len();
        if n == 0 {
            return Ok(what.to_owned());
        }
        let mut shown: Vec<String> = diffs.into_iter().take(10).collect();
        if n > 10 {
            shown.push(format!("and {} more", n - 10));
        }
        Err(format!("{n} differences: {}", shown.join("; ")))
    };
    timed(name.to_owned(), r).await
}

/// The kind's built-in checks.
pub(crate) async fn builtin(scratch: &Scratch, cx: &CheckContext<'_>) -> Vec<DrillCheck> {
    match scratch {
        Scratch::Physical { user, password, .. } => {
            let url = physical_url(user, password.as_deref(), cx.port, "postgres");
            let r = async {
                let pg = drill::support(Kind::Postgres).map_err(report)?;
                let dbs = pg.databases(&url).await.map_err(report)?;
                for db in dbs.iter().filter(|d| !d.starts_with("template")) {
                    pg.counts(&url, db)
                        .await
                        .map_err(|e| format!("database {db}: {}", report(e)))?;
                }
                Ok(format!(
                    "{} {} connections and queries",
                    crate::report::count(dbs.len(), "database", "databases"),
                    if dbs.len() == 1 { "accepts" } else { "accept" }
                ))
            };
            let answers = timed("built-in: the server answers".to_owned(), r).await;
            cx.files.iter().cloned().chain([answers]).collect()
        }
        Scratch::Databases { support, plan, .. }
            if support.manifest_check(cx.replayed).is_none() =>
        {
            // Counts after a replay are not the snapshot's: every restored
            // database must answer, and the replay's report (already
            // checked against every captured piece) says what it applied.
            let r = async {
                let (mut colls, mut docs) = (0usize, 0u64);
                for db in plan.scratch_databases() {
                    let c = support
                        .counts(&plan.server, &db)
                        .await
                        .map_err(|e| format!("database {db}: {}", report(e)))?;
                    colls += c.len();
                    docs += c.iter().map(|(_, n)| n).sum::<u64>();
                }
                Ok(format!(
                    "{colls} collections answer counts ({docs} documents) after the oplog replay"
                ))
            };
            vec![timed("built-in: the replayed collections answer".to_owned(), r).await]
        }
        other => {
            let name = match other {
                Scratch::Databases { support, .. } => {
                    support.manifest_check(cx.replayed).unwrap_or_default()
                }
                _ => "built-in: files compared with the snapshot",
            };
            let diffs = other.target().check_restored(cx.reader);
            vec![compare(name, "no differences", diffs).await]
        }
    }
}

/// The server and the scratch database of the copy that hold `database`
/// of the source (`None`: the copy's default), for a question of `kind`.
fn locate(
    scratch: &Scratch,
    cx: &CheckContext<'_>,
    kind: Kind,
    database: Option<&str>,
) -> Result<(String, String), String> {
    match scratch {
        Scratch::Physical {
            user,
            password,
            database: default,
            ..
        } if kind == Kind::Postgres => Ok((
            physical_url(user, password.as_deref(), cx.port, "postgres"),
            database.unwrap_or(default).to_owned(),
        )),
        Scratch::Databases { support, plan, .. } if support.kind() == kind => plan
            .scratch_database(database)
            .map(|db| (plan.server.clone(), db.to_owned()))
            .ok_or_else(|| {
                format!(
                    "the snapshot has no database {}",
                    database.unwrap_or_default()
                )
            }),
        _ => Err("this check does not apply to the job's kind of source".to_owned()),
    }
}

/// Whether the canary written to the source before the drill is in the
/// copy.
pub(crate) async fn canary(
    mark: &CanaryMark,
    scratch: &Scratch,
    cx: &CheckContext<'_>,
) -> DrillCheck {
    let r = async {
        let (server, db) = locate(scratch, cx, mark.kind, Some(&mark.database))?;
        let support = drill::support(mark.kind).map_err(report)?;
        match support.canary_present(&server, &db, mark).await {
            Ok(true) => Ok("present".to_owned()),
            Ok(false) => Err("missing".to_owned()),
            Err(e) => Err(report(e)),
        }
    };
    timed(format!("canary: {}", mark.what), r).await
}

/// One configured check: a command run with the scratch copy in its
/// environment, or a question ([`Probe`]) asked of a database of the copy
/// whose answer is judged.
pub(crate) async fn configured(
    check: &CheckConfig,
    scratch: &Scratch,
    cx: &CheckContext<'_>,
) -> DrillCheck {
    let r = async {
        let (database, probe) = match check {
            CheckConfig::Command { command, timeout } => {
                let limit = timeout.unwrap_or(Duration::from_secs(600));
                return run_command(command, limit, scratch, cx).await;
            }
            // A logical copy is one database, which the query runs in.
            CheckConfig::Sql {
                query, database, ..
            } => (
                database
                    .clone()
                    .filter(|_| matches!(scratch, Scratch::Physical { .. })),
                Probe::Sql(query.clone()),
            ),
            CheckConfig::MongoCount {
                collection, filter, ..
            } => {
                let (db, coll) = collection.split_once('.').unwrap_or((collection, ""));
                let probe = Probe::Documents {
                    collection: coll.to_owned(),
                    filter: filter.clone(),
                };
                (Some(db.to_owned()), probe)
            }
            CheckConfig::RedisKey { key, db } => (Some(db.to_string()), Probe::Key(key.clone())),
            CheckConfig::RedisDbsize { db, .. } => (Some(db.to_string()), Probe::Keys),
        };
        let (server, db) = locate(scratch, cx, probe.kind(), database.as_deref())?;
        let condition = match check {
            CheckConfig::Sql { expect, .. } => Some(Condition::parse(expect)?),
            _ => None,
        };
        let support = drill::support(probe.kind()).map_err(report)?;
        let answer = support.probe(&server, &db, &probe).await.map_err(report)?;
        let at_least = |n: u64, min: u64, what: &str| {
            if n >= min {
                Ok(format!("{n} {what} (at least {min})"))
            } else {
                Err(format!("{n} {what}, expected at least {min}"))
            }
        };
        match (check, answer) {
            (_, Answer::Value(v)) => {
                let shown = v.clone().unwrap_or_else(|| "NULL".to_owned());
                match condition {
                    Some(cond) if cond.holds(v.as_deref()) => {
                        Ok(format!("{shown} (expected {cond})"))
                    }
                    Some(cond) => Err(format!("got {shown}, expected {cond}")),
                    None => Ok(shown),
                }
            }
            (CheckConfig::MongoCount { min, .. }, Answer::Count(n)) => {
                at_least(n, *min, "documents")
            }
            (CheckConfig::RedisDbsize { min, .. }, Answer::Count(n)) => at_least(n, *min, "keys"),
            (CheckConfig::RedisKey { .. }, Answer::Exists(true)) => Ok("present".to_owned()),
            (CheckConfig::RedisKey { key, .. }, Answer::Exists(false)) => {
                Err(format!("key {key} is missing"))
            }
            (_, other) => Err(format!("unexpected answer {other:?}")),
        }
    };
    timed(check.name(), r).await
}

/// Runs a check's command with the scratch copy in its environment.
async fn run_command(
    command: &[String],
    limit: Duration,
    scratch: &Scratch,
    cx: &CheckContext<'_>,
) -> Result<String, String> {
    let Some((program, args)) = command.split_first() else {
        return Err("the command is empty".to_owned());
    };
    let mut cmd = tokio::process::Command::new(program);
    cmd.args(args)
        .env("BACKUP_DRILL_URL", scratch.url(cx.port))
        .env("BACKUP_DRILL_SNAPSHOT", &cx.snapshot)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    // A files or physical copy describes itself by its directory.
    if !matches!(scratch, Scratch::Databases { .. }) {
        cmd.env("BACKUP_DRILL_PATH", scratch.describe());
    }
    let child = cmd
        .spawn()
        .map_err(|e| format!("cannot run {program}: {e}"))?;
    match tokio::time::timeout(limit, child.wait_with_output()).await {
        Err(_) => Err(format!(
            "{program} did not finish within {} (killed)",
            humantime::format_duration(limit)
        )),
        Ok(Err(e)) => Err(format!("waiting for {program}: {e}")),
        Ok(Ok(out)) => {
            let text = format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
            let lines: Vec<&str> = text.lines().collect();
            let tail = lines[lines.len().saturating_sub(5)..].join(" | ");
            match (out.status.success(), tail.is_empty()) {
                (true, true) => Ok("exit 0".to_owned()),
                (true, false) => Ok(format!("exit 0: {tail}")),
                (false, _) => Err(format!("{}: {tail}", out.status)),
            }
        }
    }
}
