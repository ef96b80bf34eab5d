//! Redis: scratch databases of a server (or of a throwaway one), key and
//! size checks, the canary key.

use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

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
/// How long a canary key lives, in seconds: canaries do not pile up.
const WEEK: u64 = 7 * 24 * 3600;

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
        let mut source_dbs: Vec<u32> = snapshot_databases(snapshot, |r| r.parse().ok());
        // The canary's database (the source URL's, else 0), which the base
        // may not hold yet.
        let canary_db = url_database(&snapshot.source.url).map_or(0, |d| d.parse().unwrap_or(0));
        if canary && !source_dbs.contains(&canary_db) {
            source_dbs.push(canary_db);
            source_dbs.sort_unstable();
        }
        let url = target.ok_or_else(|| need_location("a Redis server URL, or `redis-server`"))?;
        let not_number = format!(
            "`{}`: the path of a Redis URL is a database number",
            redact_url(url)
        );
        let scratch_db = url_database(url).map(|d| d.parse::<u32>()).transpose();
        let scratch_db = scratch_db.map_err(|_| Error::Config(not_number))?;
        if let (Some(db), [_, _, ..]) = (scratch_db, source_dbs.as_slice()) {
            return Err(Error::Config(format!(
                "the snapshot holds databases {} and the scratch location names one database ({db}): give a scratch server without a database (its databases of the same numbers must be empty), or `redis-server`",
                source_dbs.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            )));
        }
        let databases: Vec<(String, String)> = source_dbs
            .iter()
            .map(|s| (s.to_string(), scratch_db.unwrap_or(*s).to_string()))
            .collect();
        let renames = databases.iter().filter(|(a, b)| a != b);
        let options = RestoreOptions {
            renames: renames.map(|(a, b)| format!("{a}:{b}")).collect(),
            ..RestoreOptions::default()
        };
        let first = databases.first().map(|(_, db)| db.clone());
        let server = with_path(url, "")?;
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
        let what = |db| format!("FLUSHDB of database {db}");
        let dbs = numbers(databases)?;
        let _: Vec<()> = in_each(&with_path(server, "")?, &dbs, |p| p.cmd("FLUSHDB"), what).await?;
        Ok(())
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
        let n = dbsizes(server, &[number(database)?]).await?.pop();
        Ok(vec![("keys".to_owned(), n.unwrap_or(0))])
    }

    async fn probe(&self, server: &str, database: &str, probe: &Probe) -> Result<Answer> {
        let db = number(database)?;
        match probe {
            Probe::Key(key) => Ok(Answer::Exists(key_exists(server, db, key).await?)),
            Probe::Keys => Ok(Answer::Count(
                dbsizes(server, &[db]).await?.pop().unwrap_or(0),
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
        let (db, u) = (number(&canary.database)?, RedisUrl::parse(&canary.url)?);
        let key = format!("{CANARY_PREFIX}{}", canary.id);
        let info: Vec<String> = in_each(
            &canary.url,
            &[db],
            |p| {
                p.cmd("SET").arg((&key, &canary.id, "EX", WEEK)).ignore();
                p.cmd("INFO").arg("replication")
            },
            |_| format!("writing the drill's canary {key}"),
        )
        .await?;
        info.iter()
            .flat_map(|i| i.lines())
            .find_map(|l| l.strip_prefix("master_repl_offset:"))
            .and_then(|v| v.trim().parse().ok())
            .map(|offset| CanaryAt::Position(Position::Offset(offset)))
            .ok_or_else(|| {
                Error::source_failed(format!(
                    "{}: INFO replication has no master_repl_offset",
                    u.redacted()
                ))
            })
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

/// Runs, in each database of `dbs` of `url` over one connection, `SELECT`
/// and then the commands `cmds` adds; returns each database's reply to
/// the last one. `what` says what failed, given the database.
async fn in_each<T: redis::FromRedisValue>(
    url: &str,
    dbs: &[u32],
    cmds: impl Fn(&mut redis::Pipeline) -> &mut redis::Pipeline,
    what: impl Fn(u32) -> String,
) -> Result<Vec<T>> {
    let u = RedisUrl::parse(url)?;
    let mut con = u.connect().await?;
    let mut out = Vec::with_capacity(dbs.len());
    for &db in dbs {
        let mut pipe = redis::pipe();
        cmds(pipe.cmd("SELECT").arg(db).ignore());
        let (reply,): (T,) = pipe
            .query_async(&mut con)
            .await
            .map_err(|e| u.error(&what(db), e))?;
        out.push(reply);
    }
    Ok(out)
}

/// The number of keys of each of the databases `dbs`.
async fn dbsizes(url: &str, dbs: &[u32]) -> Result<Vec<u64>> {
    let what = |db| format!("DBSIZE of database {db}");
    in_each(url, dbs, |p| p.cmd("DBSIZE"), what).await
}

/// Whether database `db` holds `key`.
async fn key_exists(url: &str, db: u32, key: &str) -> Result<bool> {
    let what = |db| format!("EXISTS in database {db}");
    let n: Vec<u64> = in_each(url, &[db], |p| p.cmd("EXISTS").arg(key), what).await?;
    Ok(n.first().is_some_and(|n| *n > 0))
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
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let pid = std::process::id();
    let dir = std::env::temp_dir().join(format!("backup-drill-redis-{pid}-{nanos:08x}"));
    std::fs::create_dir(&dir).map_err(|e| Error::io("creating a directory for redis-server", e))?;
    let port = free_port()?;
    let log = std::fs::File::create(dir.join("redis.log"))
        .map_err(|e| Error::io("creating redis-server's log", e))?;
    let child = tokio::process::Command::new(&program)
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
        .args(["--protected-mode", "no", "--databases", "256"])
        .arg("--dir")
        .arg(&dir)
        .stdin(std::process::Stdio::null())
        .stdout(log.try_clone().map_err(|e| Error::io("log file", e))?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| Error::io(format!("starting {}", program.display()), e))?;
    let mut server = ThrowawayServer {
        pid: child.id().unwrap_or(0),
        child,
        url: format!("redis://127.0.0.1:{port}"),
        program: "redis-server",
        dir,
    };
    let started = Instant::now();
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
        if started.elapsed() > Duration::from_secs(30) {
            server.stop().await;
            return Err(Error::Config(
                "redis-server did not answer within 30 seconds".to_owned(),
            ));
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// `name` on `PATH` (or in `/usr/bin`, `/usr/sbin`).
fn find_program(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/bin", "/usr/sbin"].map(std::path::PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}
