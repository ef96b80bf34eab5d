//! The checks a drill runs on its scratch copy: the kind's built-in
//! comparison with the snapshot, and the configured ones.

use std::process::Stdio;
use std::time::{Duration, Instant};

use backup_core::drill::DrillCheck;
use backup_core::reader::SnapshotReader;

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

fn timed(name: String, started: Instant, r: Result<String, String>) -> DrillCheck {
    let seconds = started.elapsed().as_secs_f64();
    match r {
        Ok(detail) => DrillCheck {
            name,
            ok: true,
            detail,
            seconds,
        },
        Err(detail) => DrillCheck {
            name,
            ok: false,
            detail,
            seconds,
        },
    }
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
    let t = Instant::now();
    let files = data.verify_files(reader).await;
    timed(
        "built-in: files against the backup manifest".to_owned(),
        t,
        files
            .map_err(|e| backup_core::error::report(&crate::Error::from(e)))
            .and_then(|d| differences(d, "every file matches")),
    )
}

/// The kind's built-in checks.
pub(crate) async fn builtin(scratch: &Scratch, cx: &CheckContext<'_>) -> Vec<DrillCheck> {
    let t = Instant::now();
    let err = |e: crate::Error| backup_core::error::report(&e);
    match scratch {
        Scratch::Physical { user, password, .. } => {
            let mut out: Vec<DrillCheck> = cx.files.iter().cloned().collect();
            let port = cx.port.unwrap_or(5432);
            let url = physical_url(user, password.as_deref(), port, "postgres");
            let r = async {
                let dbs = backup_sources::drill::postgres_databases(&url)
                    .await
                    .map_err(|e| err(e.into()))?;
                for db in dbs.iter().filter(|d| !d.starts_with("template")) {
                    let u = physical_url(user, password.as_deref(), port, db);
                    backup_sources::drill::sql_value(&u, "SELECT count(*) FROM pg_class")
                        .await
                        .map_err(|e| format!("database {db}: {}", err(e.into())))?;
                }
                Ok(format!(
                    "{} {} connections and queries",
                    crate::report::count(dbs.len(), "database", "databases"),
                    if dbs.len() == 1 { "accepts" } else { "accept" }
                ))
            }
            .await;
            out.push(timed("built-in: the server answers".to_owned(), t, r));
            out
        }
        Scratch::Mongo {
            server, renames, ..
        } if cx.replayed => {
            // Counts after a replay are not the snapshot's: every restored
            // database must answer, and the replay's report (already
            // checked against every captured piece) says what it applied.
            let mut r = Ok((0usize, 0u64));
            for db in renames.values() {
                match backup_sources::drill::mongo_collection_counts(server, db).await {
                    Ok(c) => {
                        if let Ok((colls, docs)) = &mut r {
                            *colls += c.len();
                            *docs += c.iter().map(|(_, n)| n).sum::<u64>();
                        }
                    }
                    Err(e) => {
                        r = Err(format!("database {db}: {}", err(e.into())));
                        break;
                    }
                }
            }
            let r = r.map(|(colls, docs)| {
                format!(
                    "{colls} collections answer counts ({docs} documents) after the oplog replay"
                )
            });
            vec![timed(
                "built-in: the replayed collections answer".to_owned(),
                t,
                r,
            )]
        }
        other => {
            let name = match other {
                Scratch::Files { .. } => "built-in: files compared with the snapshot",
                Scratch::Postgres { .. } => "built-in: rows per table against the manifest",
                Scratch::Mongo { .. } => "built-in: documents per collection against the manifest",
                _ => "built-in: keys per database against the manifest",
            };
            let r = other
                .target()
                .check_restored(cx.reader)
                .await
                .map_err(|e| err(e.into()))
                .and_then(|d| differences(d, "no differences"));
            vec![timed(name.to_owned(), t, r)]
        }
    }
}

/// One configured check.
pub(crate) async fn configured(
    check: &CheckConfig,
    scratch: &Scratch,
    cx: &CheckContext<'_>,
) -> DrillCheck {
    let t = Instant::now();
    let name = check.name();
    let err = |e: backup_core::Error| backup_core::error::report(&e);
    let r: Result<String, String> = match (check, scratch) {
        (
            CheckConfig::Sql {
                query,
                expect,
                database,
            },
            Scratch::Postgres { .. } | Scratch::Physical { .. },
        ) => {
            let url = match (scratch, database) {
                (
                    Scratch::Physical {
                        user,
                        password,
                        database: default,
                        ..
                    },
                    db,
                ) => physical_url(
                    user,
                    password.as_deref(),
                    cx.port.unwrap_or(5432),
                    db.as_deref().unwrap_or(default.as_str()),
                ),
                _ => scratch.url(cx.port),
            };
            match Condition::parse(expect) {
                Err(e) => Err(e),
                Ok(cond) => match backup_sources::drill::sql_value(&url, query).await {
                    Err(e) => Err(err(e)),
                    Ok(v) => {
                        let shown = v.clone().unwrap_or_else(|| "NULL".to_owned());
                        if cond.holds(v.as_deref()) {
                            Ok(format!("{shown} (expected {cond})"))
                        } else {
                            Err(format!("got {shown}, expected {cond}"))
                        }
                    }
                },
            }
        }
        (
            CheckConfig::MongoCount {
                collection,
                filter,
                min,
            },
            Scratch::Mongo {
                server, renames, ..
            },
        ) => {
            let (db, coll) = collection.split_once('.').unwrap_or((collection, ""));
            match renames.get(db) {
                None => Err(format!("the snapshot has no database {db}")),
                Some(scratch_db) => {
                    match backup_sources::drill::mongo_count(
                        server,
                        scratch_db,
                        coll,
                        filter.as_deref(),
                    )
                    .await
                    {
                        Err(e) => Err(err(e)),
                        Ok(n) if n >= *min => Ok(format!("{n} documents (at least {min})")),
                        Ok(n) => Err(format!("{n} documents, expected at least {min}")),
                    }
                }
            }
        }
        (CheckConfig::RedisKey { key, db }, Scratch::Redis { server, dbs, .. }) => {
            match dbs.get(db) {
                None => Err(format!("the snapshot has no database {db}")),
                Some(to) => match backup_sources::drill::redis_key_exists(server, *to, key).await {
                    Err(e) => Err(err(e)),
                    Ok(true) => Ok("present".to_owned()),
                    Ok(false) => Err(format!("key {key} is missing")),
                },
            }
        }
        (CheckConfig::RedisDbsize { min, db }, Scratch::Redis { server, dbs, .. }) => {
            match dbs.get(db) {
                None => Err(format!("the snapshot has no database {db}")),
                Some(to) => match backup_sources::drill::redis_dbsizes(server, &[*to]).await {
                    Err(e) => Err(err(e)),
                    Ok(sizes) => {
                        let n = sizes.first().copied().unwrap_or(0);
                        if n >= *min {
                            Ok(format!("{n} keys (at least {min})"))
                        } else {
                            Err(format!("{n} keys, expected at least {min}"))
                        }
                    }
                },
            }
        }
        (CheckConfig::Command { command, timeout }, _) => {
            run_command(
                command,
                timeout.unwrap_or(Duration::from_secs(600)),
                scratch,
                cx,
            )
            .await
        }
        _ => Err("this check does not apply to the job's kind of source".to_owned()),
    };
    timed(name, t, r)
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
        _ => {}
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
            let tail: Vec<&str> = text.lines().rev().take(5).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            let tail = tail.join(" | ");
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
