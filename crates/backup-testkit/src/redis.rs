//! Throwaway `redis-server` processes for tests, and hand-assembled RDB
//! fixtures.
//!
//! ```no_run
//! use backup_testkit::redis::RedisServer;
//!
//! let server = RedisServer::builder().config("list-max-listpack-size", "4").start();
//! let mut con = server.connection();
//! redis::cmd("SET").arg("k").arg("v").exec(&mut con).unwrap();
//! assert_eq!(server.digest().len(), 40);
//! ```
//!
//! Each server listens on a free port of 127.0.0.1 with its own temporary
//! directory, has `DEBUG` enabled (for `DEBUG DIGEST`), saves nothing on
//! its own, and is killed by its process id when the handle is dropped.
//! A missing `redis-server` binary is a failure that says how to install
//! it, never a skipped test.

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// What to run when the binary is missing.
const INSTALL_HINT: &str =
    "redis-server is not installed: run ./scripts/test.sh (installs redis-server and redis-tools)";

/// Finds `redis-server` (or panics with the install hint).
pub fn redis_server_binary() -> PathBuf {
    find_binary("redis-server")
}

/// Finds `redis-cli` (or panics with the install hint).
pub fn redis_cli_binary() -> PathBuf {
    find_binary("redis-cli")
}

fn find_binary(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    for dir in std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin"), PathBuf::from("/usr/local/bin")])
    {
        let p = dir.join(name);
        if p.is_file() {
            return p;
        }
    }
    panic!("{INSTALL_HINT} ({name} not found in PATH)");
}

/// Settings of a server to start.
#[derive(Debug, Clone, Default)]
pub struct RedisBuilder {
    config: Vec<(String, String)>,
    password: Option<String>,
    rdb: Option<Vec<u8>>,
}

impl RedisBuilder {
    /// Adds a configuration directive (`list-max-listpack-size 4`, ...).
    #[must_use]
    pub fn config(mut self, key: &str, value: &str) -> Self {
        self.config.push((key.to_owned(), value.to_owned()));
        self
    }

    /// Requires this password (`requirepass`).
    #[must_use]
    pub fn password(mut self, password: &str) -> Self {
        self.password = Some(password.to_owned());
        self
    }

    /// Starts the server on this RDB (written as its `dump.rdb`, loaded at
    /// start-up).
    #[must_use]
    pub fn rdb(mut self, data: Vec<u8>) -> Self {
        self.rdb = Some(data);
        self
    }

    /// Starts the server and waits until it answers.
    ///
    /// # Panics
    ///
    /// When `redis-server` is missing or does not start; the message says
    /// why (including the server's log).
    pub fn start(self) -> RedisServer {
        let binary = redis_server_binary();
        let mut last = String::new();
        for _ in 0..5 {
            match self.try_start(&binary) {
                Ok(s) => return s,
                Err(e) => last = e,
            }
        }
        panic!("redis-server did not start: {last}");
    }

    fn try_start(&self, binary: &Path) -> Result<RedisServer, String> {
        let dir = tempfile::Builder::new()
            .prefix("backup-testkit-redis-")
            .tempdir()
            .map_err(|e| format!("temporary directory: {e}"))?;
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map_err(|e| format!("finding a free port: {e}"))?
            .port();
        if let Some(rdb) = &self.rdb {
            std::fs::write(dir.path().join("dump.rdb"), rdb)
                .map_err(|e| format!("writing dump.rdb: {e}"))?;
        }
        let mut conf = format!(
            "port {port}\nbind 127.0.0.1\nsave \"\"\nappendonly no\ndir {dir}\ndbfilename dump.rdb\nlogfile {dir}/redis.log\ndaemonize no\nenable-debug-command yes\nrepl-diskless-sync-delay 0\nprotected-mode no\n",
            dir = dir.path().display()
        );
        if let Some(p) = &self.password {
            let _ = writeln!(conf, "requirepass {p}");
        }
        for (k, v) in &self.config {
            let _ = writeln!(conf, "{k} {v}");
        }
        let conf_path = dir.path().join("redis.conf");
        std::fs::write(&conf_path, conf).map_err(|e| format!("writing redis.conf: {e}"))?;
        let child = Command::new(binary)
            .arg(&conf_path)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("{}: {e}", binary.display()))?;
        let mut server = RedisServer {
            child,
            port,
            dir,
            password: self.password.clone(),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Ok(Some(status)) = server.child.try_wait() {
                return Err(format!("exited with {status}; log:\n{}", server.log()));
            }
            if server.ping() {
                return Ok(server);
            }
            if Instant::now() > deadline {
                return Err(format!("no answer within 30 s; log:\n{}", server.log()));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// A running `redis-server`; killed when dropped.
#[derive(Debug)]
pub struct RedisServer {
    child: Child,
    port: u16,
    dir: tempfile::TempDir,
    password: Option<String>,
}

impl RedisServer {
    /// Starts a server with the default settings.
    pub fn start() -> RedisServer {
        RedisBuilder::default().start()
    }

    /// A builder for other settings.
    pub fn builder() -> RedisBuilder {
        RedisBuilder::default()
    }

    /// The port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// `redis://127.0.0.1:PORT`, with the password when one is set.
    pub fn url(&self) -> String {
        match &self.password {
            Some(p) => format!("redis://:{p}@127.0.0.1:{}", self.port),
            None => format!("redis://127.0.0.1:{}", self.port),
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }

    /// A synchronous connection (authenticated).
    ///
    /// # Panics
    ///
    /// When the server does not accept it.
    pub fn connection(&self) -> redis::Connection {
        redis::Client::open(self.url())
            .and_then(|c| c.get_connection())
            .unwrap_or_else(|e| panic!("connecting to the test Redis on port {}: {e}", self.port))
    }

    /// `DEBUG DIGEST` of the whole dataset.
    pub fn digest(&self) -> String {
        redis::cmd("DEBUG")
            .arg("DIGEST")
            .query(&mut self.connection())
            .unwrap_or_else(|e| panic!("DEBUG DIGEST: {e}"))
    }

    /// `DBSIZE` of database `db`.
    pub fn dbsize(&self, db: u32) -> u64 {
        let mut con = self.connection();
        redis::cmd("SELECT")
            .arg(db)
            .exec(&mut con)
            .unwrap_or_else(|e| panic!("SELECT {db}: {e}"));
        redis::cmd("DBSIZE")
            .query(&mut con)
            .unwrap_or_else(|e| panic!("DBSIZE: {e}"))
    }

    /// Per-key `DEBUG DIGEST-VALUE` and `PTTL` presence of every key of
    /// database `db`, sorted by key: `(key, digest, has_ttl)`.
    pub fn key_digests(&self, db: u32) -> Vec<(Vec<u8>, String, bool)> {
        let mut con = self.connection();
        redis::cmd("SELECT")
            .arg(db)
            .exec(&mut con)
            .unwrap_or_else(|e| panic!("SELECT {db}: {e}"));
        let mut keys: Vec<Vec<u8>> = redis::cmd("KEYS")
            .arg("*")
            .query(&mut con)
            .unwrap_or_else(|e| panic!("KEYS: {e}"));
        keys.sort();
        keys.into_iter()
            .map(|k| {
                let d: Vec<String> = redis::cmd("DEBUG")
                    .arg("DIGEST-VALUE")
                    .arg(&k)
                    .query(&mut con)
                    .unwrap_or_else(|e| panic!("DEBUG DIGEST-VALUE: {e}"));
                let ttl: i64 = redis::cmd("PTTL")
                    .arg(&k)
                    .query(&mut con)
                    .unwrap_or_else(|e| panic!("PTTL: {e}"));
                (k, d.into_iter().next().unwrap_or_default(), ttl >= 0)
            })
            .collect()
    }

    /// Kills the server (SIGKILL, as a crash) and starts it again on the
    /// same port and configuration; without persistence it comes back
    /// empty, with a new replication id.
    ///
    /// # Panics
    ///
    /// When it does not answer within 30 s.
    pub fn restart(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        self.child = Command::new(redis_server_binary())
            .arg(self.dir.path().join("redis.conf"))
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("restarting redis-server: {e}"));
        let deadline = Instant::now() + Duration::from_secs(30);
        while !self.ping() {
            assert!(
                Instant::now() < deadline,
                "redis-server did not restart: {}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Whether the server answers `PING` (raw protocol, so that a server
    /// with a password counts as up).
    fn ping(&self) -> bool {
        let Ok(mut s) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(2)));
        if s.write_all(b"PING\r\n").is_err() {
            return false;
        }
        let mut buf = [0u8; 64];
        match s.read(&mut buf) {
            Ok(n) if n > 0 => buf[0] == b'+' || buf[..n].starts_with(b"-NOAUTH"),
            _ => false,
        }
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        // Child::kill signals this process id only.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub mod fixtures;
pub mod master;
