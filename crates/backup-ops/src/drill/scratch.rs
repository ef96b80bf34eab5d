//! Scratch copies per kind: where a drill restores, with what options,
//! and how the copy is removed again.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use backup_core::redact::redact_url;
use backup_core::snapshot::Snapshot;
use backup_core::target::{RestoreOptions, Target};
use backup_sources::drill::DataDirectory;
use backup_sources::TargetSpec;

use super::journal::{process_start, Resource};
use crate::error::{Error, Result};

/// A scratch copy being made.
pub(crate) enum Scratch {
    /// Files, into a new directory.
    Files {
        /// The new directory.
        dir: PathBuf,
        /// The restore target.
        target: Box<dyn Target>,
    },
    /// A physical PostgreSQL snapshot, into a new data directory started
    /// as a server.
    Physical {
        /// The drill's directory (the data directory is `data` in it).
        dir: PathBuf,
        /// The data directory target.
        data: DataDirectory,
        /// The role and password checks connect with.
        user: String,
        /// Its password.
        password: Option<String>,
        /// The database checks connect to by default.
        database: String,
    },
    /// A PostgreSQL logical snapshot, into a new database.
    Postgres {
        /// The server's URL, credentials included.
        server: String,
        /// The new database.
        database: String,
        /// The restore target.
        target: Box<dyn Target>,
    },
    /// A MongoDB snapshot, into renamed databases.
    Mongo {
        /// The deployment's URL, credentials included.
        server: String,
        /// Source database to scratch database.
        renames: BTreeMap<String, String>,
        /// The restore target.
        target: Box<dyn Target>,
    },
    /// A Redis snapshot, into empty databases of a scratch server.
    Redis {
        /// The server's URL (without a database), credentials included.
        server: String,
        /// Source database to scratch database.
        dbs: BTreeMap<u32, u32>,
        /// The throwaway server, when the drill started one.
        throwaway: Option<Throwaway>,
        /// The restore target.
        target: Box<dyn Target>,
    },
}

/// A `redis-server` the drill started.
pub(crate) struct Throwaway {
    child: tokio::process::Child,
    port: u16,
    pub(crate) dir: PathBuf,
    pub(crate) pid: u32,
    pub(crate) start_ticks: u64,
}

/// `app` → `app_drill_20261123t170000`, within `max` bytes.
pub(crate) fn scratch_name(base: &str, stamp: &str, max: usize) -> String {
    let suffix = format!("_drill_{stamp}");
    let mut base: String = base.to_owned();
    while base.len() + suffix.len() > max {
        base.pop();
    }
    format!("{base}{suffix}")
}

/// Creates `dir` (with the owner of its parent when running as root, so
/// that a directory prepared for the `postgres` user stays usable by it).
fn make_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    std::fs::create_dir(dir).map_err(|e| {
        backup_core::Error::io(
            format!("creating the scratch directory {}", dir.display()),
            e,
        )
    })?;
    if nix::unistd::Uid::effective().is_root() {
        if let Some(parent) = dir.parent() {
            if let Ok(m) = std::fs::metadata(parent) {
                std::os::unix::fs::chown(dir, Some(m.uid()), Some(m.gid())).map_err(|e| {
                    backup_core::Error::io(
                        format!("giving {} to its parent's owner", dir.display()),
                        e,
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// The scratch directory's parent, which must exist.
fn scratch_parent(target: &str) -> Result<PathBuf> {
    let path = PathBuf::from(target.strip_prefix("file://").unwrap_or(target));
    if !path.is_dir() {
        return Err(Error::usage(format!(
            "the drill's scratch location {} is not a directory: create it (for physical PostgreSQL drills, owned by the server's user)",
            path.display()
        )));
    }
    Ok(path)
}

/// `url` with its path replaced by `/path`.
pub(super) fn with_path(url: &str, path: &str) -> Result<String> {
    let mut u = url::Url::parse(url)
        .map_err(|e| Error::usage(format!("`{}` is not a URL: {e}", redact_url(url))))?;
    u.set_path(path);
    Ok(u.to_string())
}

/// The database named in a `scheme://host/db` URL.
pub(super) fn url_database(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let db = u.path().trim_start_matches('/');
    (!db.is_empty()).then(|| percent_decode(db))
}

fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={s}").as_bytes())
        .next()
        .map_or_else(|| s.to_owned(), |(_, v)| v.into_owned())
}

/// The error of a drill that has no scratch location: it needs `what`.
fn need_location(what: &str) -> Error {
    Error::usage(format!(
        "this drill needs a scratch location: {what} (jobs.NAME.drill.target, or --target)"
    ))
}

impl Scratch {
    /// Plans the scratch copy of `snapshot` at `target` (the configured
    /// location, credentials included); `source_url` (credentials
    /// included) gives physical drills the role their checks connect as;
    /// `canary`: the drill wrote a canary to the source, which a MongoDB or Redis
    /// copy restores too.
    pub(crate) async fn plan(
        snapshot: &Snapshot,
        target: Option<&str>,
        source_url: Option<&str>,
        name: &str,
        stamp: &str,
        canary: bool,
    ) -> Result<(Scratch, RestoreOptions)> {
        let kind = snapshot.source.kind.as_str();
        let physical = snapshot.metadata["mode"] == "physical";
        let dir_name = format!("backup-drill-{}-{stamp}", super::journal::slug(name));
        let opts = RestoreOptions::default();
        match kind {
            "files" if !physical => Self::plan_files(target, &dir_name, opts),
            "postgres" if physical => Self::plan_physical(target, source_url, &dir_name, opts),
            "postgres" => Self::plan_postgres(snapshot, target, stamp, opts),
            "mongodb" => Self::plan_mongo(snapshot, target, stamp, canary, opts),
            "redis" => Self::plan_redis(snapshot, target, opts, canary).await,
            other => Err(Error::usage(format!(
                "snapshots of {other} sources cannot be drilled by this build"
            ))),
        }
    }

    /// Plans a files copy: a new directory `dir_name` in the scratch
    /// directory `target`.
    fn plan_files(
        target: Option<&str>,
        dir_name: &str,
        opts: RestoreOptions,
    ) -> Result<(Scratch, RestoreOptions)> {
        let parent = scratch_parent(target.ok_or_else(|| need_location("a directory"))?)?;
        let dir = parent.join(dir_name);
        let target = TargetSpec::new(dir.to_string_lossy().into_owned())?.open()?;
        Ok((Scratch::Files { dir, target }, opts))
    }

    /// Plans a physical PostgreSQL copy: a new data directory in
    /// `dir_name` of the scratch directory `target`, checked as the role
    /// of `source_url`.
    fn plan_physical(
        target: Option<&str>,
        source_url: Option<&str>,
        dir_name: &str,
        opts: RestoreOptions,
    ) -> Result<(Scratch, RestoreOptions)> {
        let parent = scratch_parent(
            target.ok_or_else(|| need_location("a directory owned by the server's user"))?,
        )?;
        let dir = parent.join(dir_name);
        let data = DataDirectory::new(dir.join("data"))?;
        let (user, password) = match source_url.and_then(|u| url::Url::parse(u).ok()) {
            Some(u) if !u.username().is_empty() => (
                percent_decode(u.username()),
                u.password().map(percent_decode),
            ),
            _ => ("postgres".to_owned(), None),
        };
        let database = source_url
            .and_then(url_database)
            .unwrap_or_else(|| "postgres".to_owned());
        Ok((
            Scratch::Physical {
                dir,
                data,
                user,
                password,
                database,
            },
            opts,
        ))
    }

    /// Plans a logical PostgreSQL copy: a new database on the server
    /// `target`, named after the snapshot's.
    fn plan_postgres(
        snapshot: &Snapshot,
        target: Option<&str>,
        stamp: &str,
        opts: RestoreOptions,
    ) -> Result<(Scratch, RestoreOptions)> {
        let server = target.ok_or_else(|| need_location("a PostgreSQL server URL"))?;
        let base = url_database(&snapshot.source.url).unwrap_or_else(|| "db".to_owned());
        let database = scratch_name(&base, stamp, 63);
        let url = with_path(server, &format!("/{database}"))?;
        let target = TargetSpec::new(url)?.open()?;
        Ok((
            Scratch::Postgres {
                server: server.to_owned(),
                database,
                target,
            },
            opts,
        ))
    }

    /// Plans a MongoDB copy: the snapshot's databases (and the canary's,
    /// when `canary`), renamed, on the deployment `target`.
    fn plan_mongo(
        snapshot: &Snapshot,
        target: Option<&str>,
        stamp: &str,
        canary: bool,
        opts: RestoreOptions,
    ) -> Result<(Scratch, RestoreOptions)> {
        let kind = snapshot.source.kind.as_str();
        let server = target.ok_or_else(|| need_location("a MongoDB deployment URL"))?;
        let server = with_path(server, "/")?;
        let contents = backup_sources::summary::contents(kind, &snapshot.metadata);
        let mut dbs: Vec<String> = contents
            .map(|c| {
                c.rows
                    .iter()
                    .filter_map(|r| r.name.split_once('.').map(|(db, _)| db.to_owned()))
                    .collect()
            })
            .unwrap_or_default();
        if canary {
            dbs.push(backup_sources::drill::MONGO_CANARY_NAMESPACE.0.to_owned());
        }
        dbs.sort();
        dbs.dedup();
        if dbs.is_empty() {
            return Err(Error::usage(format!(
                "snapshot {} holds no collections; there is nothing to drill",
                snapshot.source.url
            )));
        }
        let renames: BTreeMap<String, String> = dbs
            .iter()
            .map(|db| (db.clone(), scratch_name(db, stamp, 63)))
            .collect();
        let mut opts = opts;
        opts.renames = renames.iter().map(|(a, b)| format!("{a}:{b}")).collect();
        // Only the renamed databases: an oplog replay must never
        // write a database the snapshot lacks under its own name
        // (the scratch deployment may be the source's).
        opts.includes.clone_from(&dbs);
        let target = TargetSpec::new(server.clone())?.open()?;
        Ok((
            Scratch::Mongo {
                server,
                renames,
                target,
            },
            opts,
        ))
    }

    /// Plans a Redis copy: the snapshot's databases into empty databases
    /// of the server `target`, or of a throwaway `redis-server` started
    /// now (no `target`, or `redis-server`).
    async fn plan_redis(
        snapshot: &Snapshot,
        target: Option<&str>,
        opts: RestoreOptions,
        canary: bool,
    ) -> Result<(Scratch, RestoreOptions)> {
        let kind = snapshot.source.kind.as_str();
        let contents = backup_sources::summary::contents(kind, &snapshot.metadata);
        let mut source_dbs: Vec<u32> = contents
            .map(|c| c.rows.iter().filter_map(|r| r.name.parse().ok()).collect())
            .unwrap_or_default();
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
        let (server, scratch_db, throwaway) = match target {
            None | Some("redis-server") => {
                let t = Throwaway::start().await?;
                (format!("redis://127.0.0.1:{}", t.port), None, Some(t))
            }
            Some(url) => {
                let db = url_database(url)
                    .map(|d| {
                        d.parse::<u32>().map_err(|_| {
                            Error::usage(format!(
                                "`{}`: the path of a Redis URL is a database number",
                                redact_url(url)
                            ))
                        })
                    })
                    .transpose()?;
                (with_path(url, "")?, db, None)
            }
        };
        let dbs: BTreeMap<u32, u32> = match scratch_db {
            Some(db) if source_dbs.len() > 1 => {
                return Err(Error::usage(format!(
                    "the snapshot holds databases {} and the scratch location names one database ({db}): give a scratch server without a database (its databases of the same numbers must be empty), or `redis-server`",
                    source_dbs.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
                )))
            }
            Some(db) => source_dbs.iter().map(|s| (*s, db)).collect(),
            None => source_dbs.iter().map(|s| (*s, *s)).collect(),
        };
        let mut opts = opts;
        opts.renames = dbs
            .iter()
            .filter(|(a, b)| a != b)
            .map(|(a, b)| format!("{a}:{b}"))
            .collect();
        let target = TargetSpec::new(server.clone())?.open()?;
        Ok((
            Scratch::Redis {
                server,
                dbs,
                throwaway,
                target,
            },
            opts,
        ))
    }

    /// What the journal must know before the restore writes anything.
    pub(crate) fn resources(&self) -> Vec<Resource> {
        match self {
            Scratch::Files { dir, .. } => vec![Resource::Directory { path: dir.clone() }],
            Scratch::Physical { dir, .. } => vec![
                Resource::Directory { path: dir.clone() },
                Resource::PostgresServer {
                    data_dir: dir.join("data"),
                },
            ],
            Scratch::Postgres {
                server, database, ..
            } => vec![Resource::PostgresDatabase {
                server: redact_url(server),
                name: database.clone(),
            }],
            Scratch::Mongo {
                server, renames, ..
            } => vec![Resource::MongoDatabases {
                server: redact_url(server),
                names: renames.values().cloned().collect(),
            }],
            Scratch::Redis {
                server,
                dbs,
                throwaway,
                ..
            } => match throwaway {
                Some(t) => vec![Resource::RedisServer {
                    pid: t.pid,
                    start_ticks: t.start_ticks,
                    dir: t.dir.clone(),
                }],
                None => vec![Resource::RedisDatabases {
                    server: redact_url(server),
                    dbs: {
                        let mut d: Vec<u32> = dbs.values().copied().collect();
                        d.dedup();
                        d
                    },
                }],
            },
        }
    }

    /// Creates what must exist before the restore: a physical copy's
    /// drill directory, owned (when running as root) like the scratch
    /// location, so that the server's user can run the data directory.
    pub(crate) fn create(&self) -> Result<()> {
        match self {
            Scratch::Physical { dir, .. } => make_dir(dir),
            _ => Ok(()),
        }
    }

    /// The restore target.
    pub(crate) fn target(&self) -> &dyn Target {
        match self {
            Scratch::Files { target, .. }
            | Scratch::Postgres { target, .. }
            | Scratch::Mongo { target, .. }
            | Scratch::Redis { target, .. } => target.as_ref(),
            Scratch::Physical { data, .. } => data.target(),
        }
    }

    /// Where the copy is, for records and messages (no credentials).
    pub(crate) fn describe(&self) -> String {
        match self {
            Scratch::Files { dir, .. } => dir.display().to_string(),
            Scratch::Physical { dir, .. } => dir.join("data").display().to_string(),
            Scratch::Postgres {
                server, database, ..
            } => redact_url(&with_path(server, &format!("/{database}")).unwrap_or_default()),
            Scratch::Mongo {
                server, renames, ..
            } => format!(
                "{} ({})",
                redact_url(server),
                renames
                    .iter()
                    .map(|(a, b)| format!("{a} as {b}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
            Scratch::Redis {
                server,
                dbs,
                throwaway,
                ..
            } => format!(
                "{}{} ({})",
                redact_url(server),
                if throwaway.is_some() {
                    " (throwaway redis-server)"
                } else {
                    ""
                },
                dbs.iter()
                    .map(|(a, b)| format!("db {a} as {b}"))
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        }
    }

    /// Checks what must hold before anything is written: the scratch
    /// directory's name is free, the Redis databases are empty, the
    /// PostgreSQL database and MongoDB databases do not exist.
    pub(crate) async fn check_free(&self) -> Result<()> {
        match self {
            Scratch::Files { dir, .. } | Scratch::Physical { dir, .. } => {
                if dir.exists() {
                    return Err(Error::usage(format!(
                        "{} exists already; a drill restores into a new directory",
                        dir.display()
                    )));
                }
            }
            Scratch::Postgres {
                server, database, ..
            } => {
                if backup_sources::drill::postgres_databases(server)
                    .await?
                    .contains(database)
                {
                    return Err(Error::usage(format!(
                        "database {database} exists already on {}",
                        redact_url(server)
                    )));
                }
            }
            Scratch::Mongo {
                server, renames, ..
            } => {
                let existing = backup_sources::drill::mongo_databases(server).await?;
                if let Some(db) = renames.values().find(|d| existing.contains(d)) {
                    return Err(Error::usage(format!(
                        "database {db} exists already on {}",
                        redact_url(server)
                    )));
                }
            }
            Scratch::Redis { server, dbs, .. } => {
                let targets: Vec<u32> = {
                    let mut d: Vec<u32> = dbs.values().copied().collect();
                    d.sort_unstable();
                    d.dedup();
                    d
                };
                let sizes = backup_sources::drill::redis_dbsizes(server, &targets).await?;
                for (db, n) in targets.iter().zip(sizes) {
                    if n > 0 {
                        return Err(Error::usage(format!(
                            "database {db} of the scratch server {} holds {n} keys; a drill restores into empty databases (use other numbers, or `redis-server` for a throwaway server)",
                            redact_url(server)
                        )));
                    }
                }
            }
        }
        Ok(())
    }

    /// The URL of the copy for checks and commands: with credentials and,
    /// for databases, the (first) scratch database.
    pub(crate) fn url(&self, port: Option<u16>) -> String {
        match self {
            Scratch::Files { dir, .. } => dir.display().to_string(),
            Scratch::Physical {
                user,
                password,
                database,
                ..
            } => physical_url(user, password.as_deref(), port.unwrap_or(5432), database),
            Scratch::Postgres {
                server, database, ..
            } => with_path(server, &format!("/{database}")).unwrap_or_default(),
            Scratch::Mongo {
                server, renames, ..
            } => match renames.values().next() {
                Some(db) if renames.len() == 1 => {
                    with_path(server, &format!("/{db}")).unwrap_or_default()
                }
                _ => server.clone(),
            },
            Scratch::Redis { server, dbs, .. } => match dbs.values().next() {
                Some(db) => with_path(server, &format!("/{db}")).unwrap_or_default(),
                None => server.clone(),
            },
        }
    }

    /// Removes the copy (the data directory's server is stopped before).
    pub(crate) async fn remove(&mut self) -> Result<()> {
        match self {
            Scratch::Files { dir, target } => {
                let _ = target.discard().await;
                remove_dir(dir)
            }
            Scratch::Physical { dir, .. } => {
                backup_sources::drill::stop_leftover_server(&dir.join("data")).await?;
                remove_dir(dir)
            }
            Scratch::Postgres {
                server, database, ..
            } => Ok(backup_sources::drill::drop_postgres_database(server, database, &[]).await?),
            Scratch::Mongo {
                server, renames, ..
            } => {
                let names: Vec<String> = renames.values().cloned().collect();
                Ok(backup_sources::drill::drop_mongo_databases(server, &names).await?)
            }
            Scratch::Redis {
                server,
                dbs,
                throwaway,
                ..
            } => {
                if let Some(t) = throwaway.take() {
                    t.stop(server).await;
                    Ok(())
                } else {
                    let targets: Vec<u32> = dbs.values().copied().collect();
                    Ok(backup_sources::drill::flush_redis(server, &targets).await?)
                }
            }
        }
    }
}

/// `postgres://user:password@127.0.0.1:port/database`.
pub(crate) fn physical_url(
    user: &str,
    password: Option<&str>,
    port: u16,
    database: &str,
) -> String {
    let auth = match password {
        Some(p) => format!("{}:{}", escape(user), escape(p)),
        None => escape(user),
    };
    format!("postgres://{auth}@127.0.0.1:{port}/{}", escape(database))
}

/// Percent-encodes every byte but the unreserved ones (RFC 3986).
pub(super) fn escape(s: &str) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            let _ = write!(out, "%{b:02X}");
        }
    }
    out
}

fn remove_dir(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(backup_core::Error::io(format!("removing {}", dir.display()), e).into()),
    }
}

/// Removes what a killed drill left behind; `current` is this drill's
/// target URL (credentials included), used when it is the same server.
pub(crate) async fn remove_leftover(r: &Resource, current: Option<&str>) -> Result<()> {
    let creds = |server: &str| -> String {
        match current {
            Some(c)
                if redact_url(&with_path(c, "/").unwrap_or_default())
                    == redact_url(&with_path(server, "/").unwrap_or_default()) =>
            {
                c.to_owned()
            }
            _ => server.to_owned(),
        }
    };
    match r {
        Resource::Directory { path } => remove_dir(path),
        Resource::PostgresServer { data_dir } => {
            backup_sources::drill::stop_leftover_server(data_dir).await?;
            Ok(())
        }
        Resource::PostgresDatabase { server, name } => {
            Ok(backup_sources::drill::drop_postgres_database(&creds(server), name, &[]).await?)
        }
        Resource::MongoDatabases { server, names } => Ok(
            backup_sources::drill::drop_mongo_databases(&with_path(&creds(server), "/")?, names)
                .await?,
        ),
        Resource::RedisDatabases { server, dbs } => {
            Ok(backup_sources::drill::flush_redis(&with_path(&creds(server), "")?, dbs).await?)
        }
        Resource::RedisServer {
            pid,
            start_ticks,
            dir,
        } => {
            if super::journal::alive(*pid, *start_ticks) {
                let target = nix::unistd::Pid::from_raw(*pid as i32);
                let _ = nix::sys::signal::kill(target, nix::sys::signal::Signal::SIGKILL);
                let deadline = Instant::now() + Duration::from_secs(10);
                while super::journal::alive(*pid, *start_ticks) && Instant::now() < deadline {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            }
            remove_dir(dir)
        }
    }
}

impl Throwaway {
    /// Starts `redis-server` on a free port in a new temporary directory
    /// and waits until it answers.
    async fn start() -> Result<Self> {
        let program = find_program("redis-server").ok_or_else(|| {
            Error::usage(
                "the drill needs a scratch Redis: redis-server is not installed here (Debian: apt-get install redis-server), so give jobs.NAME.drill.target = \"redis://host:port\" of a scratch server",
            )
        })?;
        let dir = tempfile::Builder::new()
            .prefix("backup-drill-redis-")
            .tempdir()
            .map_err(|e| backup_core::Error::io("creating a directory for redis-server", e))?
            .keep();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| backup_core::Error::io("finding a free port", e))?
            .port();
        let log = std::fs::File::create(dir.join("redis.log"))
            .map_err(|e| backup_core::Error::io("creating redis-server's log", e))?;
        let child = tokio::process::Command::new(&program)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "no"])
            .args(["--protected-mode", "no", "--databases", "256"])
            .arg("--dir")
            .arg(&dir)
            .stdin(Stdio::null())
            .stdout(
                log.try_clone()
                    .map_err(|e| backup_core::Error::io("log file", e))?,
            )
            .stderr(log)
            .kill_on_drop(true)
            .spawn()
            .map_err(|e| backup_core::Error::io(format!("starting {}", program.display()), e))?;
        let pid = child.id().unwrap_or(0);
        let mut t = Throwaway {
            child,
            port,
            dir,
            pid,
            start_ticks: process_start(pid).unwrap_or(0),
        };
        let url = format!("redis://127.0.0.1:{port}");
        let started = Instant::now();
        loop {
            if backup_sources::drill::redis_dbsizes(&url, &[0])
                .await
                .is_ok()
            {
                return Ok(t);
            }
            if let Ok(Some(status)) = t.child.try_wait() {
                let log = std::fs::read_to_string(t.dir.join("redis.log")).unwrap_or_default();
                let _ = std::fs::remove_dir_all(&t.dir);
                return Err(Error::usage(format!(
                    "redis-server stopped ({status}) before it answered: {}",
                    log.lines().rev().take(5).collect::<Vec<_>>().join(" | ")
                )));
            }
            if started.elapsed() > Duration::from_secs(30) {
                t.stop(&url).await;
                return Err(Error::usage(
                    "redis-server did not answer within 30 seconds",
                ));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Shuts the server down and removes its directory.
    async fn stop(mut self, url: &str) {
        let _ = backup_sources::drill::shutdown_redis(url).await;
        if tokio::time::timeout(Duration::from_secs(10), self.child.wait())
            .await
            .is_err()
        {
            let _ = self.child.kill().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `name` on `PATH` (or in `/usr/bin`, `/usr/sbin`).
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/sbin")])
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_urls() {
        assert_eq!(
            scratch_name("app", "20261123t170000", 63),
            "app_drill_20261123t170000"
        );
        let long = "x".repeat(80);
        assert_eq!(scratch_name(&long, "20261123t170000", 63).len(), 63);
        assert_eq!(
            url_database("postgres://u@h:5432/app%20db").as_deref(),
            Some("app db")
        );
        assert_eq!(url_database("postgres://u@h:5432/"), None);
        assert_eq!(
            with_path("postgres://u:pw@h:5432/", "/app_drill_1").unwrap(),
            "postgres://u:pw@h:5432/app_drill_1"
        );
        assert_eq!(
            physical_url("postgres", Some("p w"), 5555, "postgres"),
            "postgres://postgres:p%20w@127.0.0.1:5555/postgres"
        );
    }
}
