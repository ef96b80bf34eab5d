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
    /// manifest, made before its server started (starting it changes
    /// files: `backup_label` goes). `None` for other kinds, and for a copy
    /// replayed to a point in time, whose files differ from the base
    /// backup's by design (the restore checked each one it wrote).
    pub(crate) files: Option<DrillCheck>,
    /// Whether a captured change stream was replayed after the snapshot
    /// (a MongoDB restore to a point in time): the copy then differs from
    /// the snapshot's manifest by design.
    pub(crate) replayed: bool,
}

/// Runs the check `name`, timed; it passes when `check` is `Ok`.
async fn timed(name: String, check: impl Future<Output = Result<String, String>>) -> DrillCheck {
    let started = Instant::now();
    let (ok, detail) = match check.await {
        Ok(detail) => (true, detail),
        Err(detail) => (false, detail),
    };
    DrillCheck {
        name,
        ok,
        detail,
        seconds: started.elapsed().as_secs_f64(),
    }
}

/// A storage or driver error, for a check's detail (by value, for
/// `map_err`).
#[allow(clippy::needless_pass_by_value)]
fn report(e: backup_core::Error) -> String {
    backup_core::error::report(&e)
}

fn differences(diffs: Vec<String>, what: &str) -> Result<String, String> {
    if diffs.is_empty() {
        Ok(what.to_owned())
    } else {
        let n = diffs.len();
        let mut shown: Vec<String> = diffs.into_iter().take(10).collect();
        if n > 10 {
            shown.push(format!("and {} more", n - 10));
        }
        Err(format!("{n} differences: {}", shown.join("; ")))
    }
}

/// A physical copy's files compared with the snapshot's backup manifest
/// (before its server starts).
pub(crate) async fn physical_files(
    data: &backup_sources::drill::DataDirectory,
    reader: &SnapshotReader,
) -> DrillCheck {
    timed(
        "built-in: files against the backup manifest".to_owned(),
        async {
            data.verify_files(reader)
                .await
                .map_err(report)
                .and_then(|d| differences(d, "every file matches"))
        },
    )
    .await
}

/// The kind's built-in checks.
pub(crate) async fn builtin(scratch: &Scratch, cx: &CheckContext<'_>) -> Vec<DrillCheck> {
    match scratch {
        Scratch::Physical { user, password, .. } => {
            let mut out: Vec<DrillCheck> = cx.files.iter().cloned().collect();
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
            out.push(timed("built-in: the server answers".to_owned(), r).await);
            out
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
            let r = async {
                other
                    .target()
                    .check_restored(cx.reader)
                    .await
                    .map_err(report)
                    .and_then(|d| differences(d, "no differences"))
            };
            vec![timed(name.to_owned(), r).await]
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
        Scratch::Databases { support, plan, .. } if support.kind() == kind => {
            match plan.scratch_database(database) {
                Some(db) => Ok((plan.server.clone(), db.to_owned())),
                None => Err(format!(
                    "the snapshot has no database {}",
                    database.unwrap_or_default()
                )),
            }
        }
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

/// One configured check.
pub(crate) async fn configured(
    check: &CheckConfig,
    scratch: &Scratch,
    cx: &CheckContext<'_>,
) -> DrillCheck {
    let r = async {
        match check {
            CheckConfig::Command { command, timeout } => {
                let limit = timeout.unwrap_or(Duration::from_secs(600));
                run_command(command, limit, scratch, cx).await
            }
            _ => ask(check, scratch, cx).await,
        }
    };
    timed(check.name(), r).await
}

/// A configured check that asks a database of the copy a question
/// ([`Probe`]) and judges the answer.
async fn ask(
    check: &CheckConfig,
    scratch: &Scratch,
    cx: &CheckContext<'_>,
) -> Result<String, String> {
    let (database, probe) = match check {
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
        CheckConfig::Command { .. } => return Err("a command is not a question".to_owned()),
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
                Some(cond) if cond.holds(v.as_deref()) => Ok(format!("{shown} (expected {cond})")),
                Some(cond) => Err(format!("got {shown}, expected {cond}")),
                None => Ok(shown),
            }
        }
        (CheckConfig::MongoCount { min, .. }, Answer::Count(n)) => at_least(n, *min, "documents"),
        (CheckConfig::RedisDbsize { min, .. }, Answer::Count(n)) => at_least(n, *min, "keys"),
        (CheckConfig::RedisKey { .. }, Answer::Exists(true)) => Ok("present".to_owned()),
        (CheckConfig::RedisKey { key, .. }, Answer::Exists(false)) => {
            Err(format!("key {key} is missing"))
        }
        (_, other) => Err(format!("unexpected answer {other:?}")),
    }
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
    match scratch {
        Scratch::Files { dir, .. } => {
            cmd.env("BACKUP_DRILL_PATH", dir);
        }
        Scratch::Physical { dir, .. } => {
            cmd.env("BACKUP_DRILL_PATH", dir.join("data"));
        }
        Scratch::Databases { .. } => {}
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
            if out.status.success() {
                Ok(if tail.is_empty() {
                    "exit 0".to_owned()
                } else {
                    format!("exit 0: {tail}")
                })
            } else {
                Err(format!("{}: {tail}", out.status))
            }
        }
    }
}
