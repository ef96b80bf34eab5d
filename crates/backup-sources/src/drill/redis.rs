//! Redis: scratch databases of a server (or of a throwaway one), key and
//! size checks, the canary key.

use backup_core::redact::redact_url;
use backup_core::snapshot::Snapshot;
use backup_core::target::RestoreOptions;
use backup_core::{Error, Result};

use super::{
    free_port, need_location, snapshot_databases, url_database, with_path, Answer, CanaryAt,
    CanaryMark, DrillSupport, Probe, ScratchPlan, ThrowawayServer,
};
use crate::capture::Position;
use crate::redis::conn::RedisUrl;
use crate::Kind;

/// The prefix of a canary key: `backup_drill:canary:` then the id.
const CANARY_PREFIX: &str = "backup_drill:canary:";

/// Redis's [`DrillSupport`]: a copy is the snapshot's databases restored
/// into empty databases of the same numbers (or into the one database
/// the scratch URL names) of a scratch server, by default a throwaway
/// `redis-server`.
pub(super) struct RedisDrill;

/// A database number.
fn number(db: &str) -> Result<u32> {
    db.parse()
        .map_err(|_| Error::Config(format!("`{db}` is not a Redis database number")))
}

/// Database numbers.
fn numbers(dbs: &[String]) -> Result<Vec<u32>> {
    dbs.iter().map(|d| number(d)).collect()
}

/// A pipeline that selects database `db` first.
fn in_db(db: u32) -> redis::Pipeline {
    let mut pipe = redis::pipe();
    pipe.cmd("SELECT").arg(db).ignore();
    pipe
}

#[async_trait::async_trait]
impl DrillSupport for RedisDrill {
    fn kind(&self) -> Kind {
        Kind::Redis
    }

    async fn start_throwaway(&self, target: Option<&str>) -> Result<Option<ThrowawayServer>> {
        match target {
            None | Some("redis-server") => Ok(Some(start_server().await?)),
            Some(_) => Ok(None),
        }
    }

    fn plan(
        &self,
        snapshot: &Snapshot,
        target: Option<&str>,
        _stamp: &str,
        canary: bool,
    ) -> Result<(ScratchPlan, RestoreOptions)> {
        let mut source_dbs: Vec<u32> = snapshot_databases(snapshot, |r| Some(r.to_owned()))
            .iter()
            .filter_map(|d| d.parse().ok())
            .collect();
        if canary {
            // The canary's database (the source URL's, else 0), which the
            // base may not hold yet.
            let db = url_database(&snapshot.source.url)
                .and_then(|d| d.parse().ok())
                .unwrap_or(0);
            if !source_dbs.contains(&db) {
                source_dbs.push(db);
                source_dbs.sort_unstable();
            }
        }
        let url = target.ok_or_else(|| need_location("a Redis server URL, or `redis-server`"))?;
        let scratch_db = url_database(url)
            .map(|d| {
                d.parse::<u32>().map_err(|_| {
                    Error::Config(format!(
                        "`{}`: the path of a Redis URL is a database number",
                        redact_url(url)
                    ))
                })
            })
            .transpose()?;
        let server = with_path(url, "")?;
        let pairs: Vec<(u32, u32)> = match scratch_db {
            Some(db) if source_dbs.len() > 1 => {
                return Err(Error::Config(format!(
                    "the snapshot holds databases {} and the scratch location names one database ({db}): give a scratch server without a database (its databases of the same numbers must be empty), or `redis-server`",
                    source_dbs.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
                )))
            }
            Some(db) => source_dbs.iter().map(|s| (*s, db)).collect(),
            None => source_dbs.iter().map(|s| (*s, *s)).collect(),
        };
        let options = RestoreOptions {
            renames: pairs
                .iter()
                .filter(|(a, b)| a != b)
                .map(|(a, b)| format!("{a}:{b}"))
                .collect(),
            ..RestoreOptions::default()
        };
        let first = pairs.first().map(|(_, db)| db.to_string());
        let databases = pairs
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        let plan = ScratchPlan::renamed(server, databases, first.as_deref(), "db ")?;
        Ok((plan, options))
    }

    async fn occupied(&self, server: &str, databases: &[String]) -> Result<Option<String>> {
        let mut dbs = numbers(databases)?;
        dbs.sort_unstable();
        dbs.dedup();
        let sizes = dbsizes(server, &dbs).await?;
        Ok(dbs.iter().zip(sizes).find(|(_, n)| *n > 0).map(|(db, n)| {
            format!(
                "database {db} of the scratch server {} holds {n} keys; a drill restores into empty databases (use other numbers, or `redis-server` for a throwaway server)",
                redact_url(server)
            )
        }))
    }

    async fn remove(&self, server: &str, databases: &[String]) -> Result<()> {
        flush(&with_path(server, "")?, &numbers(databases)?).await
    }

    async fn databases(&self, server: &str) -> Result<Vec<String>> {
        let u = RedisUrl::parse(server)?;
        let mut con = u.connect().await?;
        let info: String = redis::cmd("INFO")
            .arg("keyspace")
            .query_async(&mut con)
            .await
            .map_err(|e| u.error("INFO keyspace", e))?;
        Ok(info
            .lines()
            .filter_map(|l| l.strip_prefix("db")?.split_once(':'))
            .map(|(n, _)| n.to_owned())
            .collect())
    }

    async fn counts(&self, server: &str, database: &str) -> Result<Vec<(String, u64)>> {
        let n = dbsizes(server, &[number(database)?]).await?;
        Ok(vec![("keys".to_owned(), n.first().copied().unwrap_or(0))])
    }

    async fn probe(&self, server: &str, database: &str, probe: &Probe) -> Result<Answer> {
        let db = number(database)?;
        match probe {
            Probe::Key(key) => Ok(Answer::Exists(key_exists(server, db, key).await?)),
            Probe::Keys => Ok(Answer::Count(
                dbsizes(server, &[db]).await?.first().copied().unwrap_or(0),
            )),
            other => Err(other.misdirected("Redis")),
        }
    }

    fn manifest_check(&self, _replayed: bool) -> Option<&'static str> {
        Some("built-in: keys per database against the manifest")
    }

    fn canary(&self, url: &str, _database: Option<&str>, id: &str) -> Result<CanaryMark> {
        let db = RedisUrl::parse(url)?.db.unwrap_or(0);
        Ok(CanaryMark {
            id: id.to_owned(),
            url: url.to_owned(),
            database: db.to_string(),
            kind: Kind::Redis,
            what: format!("the key {CANARY_PREFIX}{id} in database {db}"),
            advice: None,
        })
    }

    async fn write_canary(&self, canary: &CanaryMark) -> Result<CanaryAt> {
        let key = format!("{CANARY_PREFIX}{}", canary.id);
        let db = number(&canary.database)?;
        let offset = write_canary(&canary.url, db, &key, &canary.id).await?;
        Ok(CanaryAt::Position(Position::Offset(offset)))
    }

    async fn canary_present(
        &self,
        server: &str,
        database: &str,
        canary: &CanaryMark,
    ) -> Result<bool> {
        let key = format!("{CANARY_PREFIX}{}", canary.id);
        key_exists(server, number(database)?, &key).await
    }
}

/// Writes the canary key `key` (its value the id, expiring in a week so
/// that canaries do not pile up) to database `db`; returns the primary's
/// replication offset once the write is in its stream.
async fn write_canary(url: &str, db: u32, key: &str, id: &str) -> Result<u64> {
    let u = RedisUrl::parse(url)?;
    let mut con = u.connect().await?;
    let (info,): (String,) = in_db(db)
        .cmd("SET")
        .arg(key)
        .arg(id)
        .arg("EX")
        .arg(7 * 24 * 3600)
        .ignore()
        .cmd("INFO")
        .arg("replication")
        .query_async(&mut con)
        .await
        .map_err(|e| u.error(&format!("writing the drill's canary {key}"), e))?;
    info.lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            backup_core::Error::source_failed(format!(
                "{}: INFO replication has no master_repl_offset",
                u.redacted()
            ))
        })
}

async fn key_exists(url: &str, db: u32, key: &str) -> Result<bool> {
    let u = RedisUrl::parse(url)?;
    let mut con = u.connect().await?;
    let (n,): (u64,) = in_db(db)
        .cmd("EXISTS")
        .arg(key)
        .query_async(&mut con)
        .await
        .map_err(|e| u.error(&format!("EXISTS in database {db}"), e))?;
    Ok(n > 0)
}

async fn dbsizes(url: &str, dbs: &[u32]) -> Result<Vec<u64>> {
    let u = RedisUrl::parse(url)?;
    let mut con = u.connect().await?;
    let mut out = Vec::with_capacity(dbs.len());
    for db in dbs {
        let (n,): (u64,) = in_db(*db)
            .cmd("DBSIZE")
            .query_async(&mut con)
            .await
            .map_err(|e| u.error(&format!("DBSIZE of database {db}"), e))?;
        out.push(n);
    }
    Ok(out)
}

async fn flush(url: &str, dbs: &[u32]) -> Result<()> {
    let u = RedisUrl::parse(url)?;
    let mut con = u.connect().await?;
    for db in dbs {
        in_db(*db)
            .cmd("FLUSHDB")
            .ignore()
            .query_async::<()>(&mut con)
            .await
            .map_err(|e| u.error(&format!("FLUSHDB of database {db}"), e))?;
    }
    Ok(())
}

/// Starts `redis-server` on a free port of 127.0.0.1 in a new directory
/// under the temporary directory, keeping nothing on disk, and waits
/// until it answers.
async fn start_server() -> Result<ThrowawayServer> {
    let program = find_program("redis-server").ok_or_else(|| {
        Error::Config(
            "the drill needs a scratch Redis: redis-server is not installed here (Debian: apt-get install redis-server), so give jobs.NAME.drill.target = \"redis://host:port\" of a scratch server".to_owned(),
        )
    })?;
    let io = |what: &str| {
        let what = what.to_owned();
        move |e| Error::io(what, e)
    };
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let dir = std::env::temp_dir().join(format!(
        "backup-drill-redis-{}-{nanos:08x}",
        std::process::id()
    ));
    std::fs::create_dir(&dir).map_err(io("creating a directory for redis-server"))?;
    let port = free_port()?;
    let log =
        std::fs::File::create(dir.join("redis.log")).map_err(io("creating redis-server's log"))?;
    let child = tokio::process::Command::new(&program)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--protected-mode", "no", "--databases", "256"])
        .arg("--dir")
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(io("log file"))?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(io(&format!("starting {}", program.display())))?;
    let mut server = ThrowawayServer {
        pid: child.id().unwrap_or(0),
        child,
        url: format!("redis://127.0.0.1:{port}"),
        program: "redis-server",
        dir,
    };
    let started = std::time::Instant::now();
    loop {
        if dbsizes(&server.url, &[0]).await.is_ok() {
            return Ok(server);
        }
        if let Ok(Some(status)) = server.child.try_wait() {
            let log = std::fs::read_to_string(server.dir.join("redis.log")).unwrap_or_default();
            let _ = std::fs::remove_dir_all(&server.dir);
            return Err(Error::Config(format!(
                "redis-server stopped ({status}) before it answered: {}",
                log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
            )));
        }
        if started.elapsed() > std::time::Duration::from_secs(30) {
            server.stop().await;
            return Err(Error::Config(
                "redis-server did not answer within 30 seconds".to_owned(),
            ));
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// `name` on `PATH` (or in `/usr/bin`, `/usr/sbin`).
fn find_program(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([
            std::path::PathBuf::from("/usr/bin"),
            std::path::PathBuf::from("/usr/sbin"),
        ])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
