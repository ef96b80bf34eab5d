//! Throwaway PostgreSQL clusters: `initdb` into a temporary directory and
//! `postgres` on 127.0.0.1 with a free port, stopped by process id when the
//! handle is dropped.
//!
//! As root, the server runs as the unprivileged `postgres` user (through
//! `setpriv`), which owns the temporary directory. Password authentication
//! (SCRAM) is required over TCP; the superuser is `postgres` with
//! [`PASSWORD`]. When the binaries are missing, [`PgCluster::start`]
//! panics with the command that installs them: tests never skip.

#![allow(clippy::expect_used)] // Test support: failing to set up is a test failure.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// The superuser's password in every test cluster.
pub const PASSWORD: &str = "test-secret";

const MISSING: &str =
    "PostgreSQL server binaries (initdb, postgres) not found: run ./scripts/test.sh (installs postgresql)";

/// A running throwaway cluster.
#[derive(Debug)]
pub struct PgCluster {
    dir: tempfile::TempDir,
    /// The data directory (`<dir>/data` for a new cluster).
    data: PathBuf,
    port: u16,
    child: Child,
    bindir: PathBuf,
    run_as: Option<String>,
}

/// How [`PgCluster::start_with`] sets up a cluster.
#[derive(Debug, Clone, Default)]
pub struct PgOptions {
    /// `initdb --data-checksums`.
    pub data_checksums: bool,
    /// More server settings, `name=value` (passed as `-c`).
    pub settings: Vec<String>,
}

/// The directory holding `initdb`, `postgres`, `pg_dump`, ... of the newest
/// installed version (`BACKUP_TEST_PG_BINDIR` overrides).
///
/// # Panics
///
/// When no installation is found, with the setup command to run.
pub fn bindir() -> PathBuf {
    if let Some(d) = std::env::var_os("BACKUP_TEST_PG_BINDIR") {
        return PathBuf::from(d);
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .map(|rd| {
            rd.flatten()
                .filter_map(|e| {
                    let v: u32 = e.file_name().to_str()?.parse().ok()?;
                    let bin = e.path().join("bin");
                    bin.join("initdb").is_file().then_some((v, bin))
                })
                .collect()
        })
        .unwrap_or_default();
    found.sort_by_key(|f| std::cmp::Reverse(f.0));
    if let Some((_, p)) = found.into_iter().next() {
        return p;
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if dir.join("initdb").is_file() && dir.join("postgres").is_file() {
            return dir;
        }
    }
    panic!("{MISSING}");
}

/// Whether this process runs as root (the owner of `/proc/self` is the
/// effective user).
fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| std::os::unix::fs::MetadataExt::uid(&m) == 0)
}

/// The line that opens the end of the panic of a server that did not
/// start: after it, one line for each error and each recovery step its
/// attempts logged.
pub const WHY_START_FAILED: &str = "why each attempt failed:";

impl PgCluster {
    /// Initialises and starts a cluster; waits until it accepts
    /// connections.
    ///
    /// # Panics
    ///
    /// When the binaries are missing or the server does not start.
    pub fn start() -> Self {
        Self::start_with(&PgOptions::default())
    }

    /// A temporary directory owned by the user the servers run as.
    ///
    /// # Panics
    ///
    /// When it cannot be created or given to that user.
    pub fn owned_tempdir(prefix: &str) -> tempfile::TempDir {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir()
            .expect("creating a temporary directory");
        if is_root() {
            let ok = Command::new("chown")
                .args(["postgres:postgres", dir.path().to_str().unwrap_or_default()])
                .status()
                .is_ok_and(|s| s.success());
            assert!(
                ok,
                "cannot give {} to the `postgres` user: run ./scripts/test.sh (installs postgresql, which creates the user)",
                dir.path().display()
            );
        }
        dir
    }

    /// Initialises and starts a cluster set up as `opts` says.
    ///
    /// # Panics
    ///
    /// As [`PgCluster::start`].
    pub fn start_with(opts: &PgOptions) -> Self {
        let bindir = bindir();
        assert!(bindir.join("initdb").is_file(), "{MISSING}");
        let dir = Self::owned_tempdir("pg-test-");
        let run_as = is_root().then(|| "postgres".to_owned());
        let data = dir.path().join("data");
        let pwfile = dir.path().join("pw");
        std::fs::write(&pwfile, PASSWORD).expect("writing the password file");
        if let Some(user) = &run_as {
            let _ = Command::new("chown")
                .args([user.as_str(), pwfile.to_str().unwrap_or_default()])
                .status();
        }
        let mut cluster_cmd = Self::command_as(run_as.as_deref(), &bindir.join("initdb"));
        cluster_cmd.args([
            "-D",
            data.to_str().unwrap_or_default(),
            "-U",
            "postgres",
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            "--encoding=UTF8",
            "--locale=C.UTF-8",
            "--pwfile",
            pwfile.to_str().unwrap_or_default(),
            "--no-sync",
        ]);
        if opts.data_checksums {
            cluster_cmd.arg("--data-checksums");
        }
        let out = cluster_cmd.output().expect("running initdb");
        assert!(
            out.status.success(),
            "initdb failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        Self::run(dir, data, bindir, run_as, &opts.settings)
    }

    /// Starts a server on an existing data directory (a restored one),
    /// owned by the user the servers run as; the handle owns `dir` (logs
    /// and socket go there).
    ///
    /// # Panics
    ///
    /// When the server does not start.
    pub fn start_existing(dir: tempfile::TempDir, data: PathBuf) -> Self {
        let run_as = is_root().then(|| "postgres".to_owned());
        let pg = Self::run(dir, data, bindir(), run_as, &[]);
        // A restored directory may be replaying WAL (point-in-time
        // recovery accepts read-only connections meanwhile): wait until
        // it is done.
        let start = Instant::now();
        while pg.psql("postgres", "SELECT pg_is_in_recovery()").trim() == "t" {
            assert!(
                start.elapsed() < Duration::from_secs(300),
                "recovery did not end:\n{}",
                pg.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        pg
    }

    fn run(
        dir: tempfile::TempDir,
        data: PathBuf,
        bindir: PathBuf,
        run_as: Option<String>,
        settings: &[String],
    ) -> Self {
        let mut last_log = String::new();
        // Why each attempt failed (its log's errors), printed last so that
        // a failure ends with what went wrong even when the output is cut
        // in the middle.
        let mut errors = Vec::new();
        for attempt in 1..=5 {
            let port = crate::free_port();
            let log_path = dir.path().join("server.log");
            let log = std::fs::File::create(&log_path).expect("log file");
            if let Some(user) = &run_as {
                let _ = Command::new("chown")
                    .args([user.as_str(), log_path.to_str().unwrap_or_default()])
                    .status();
            }
            let mut cmd = Self::command_as(run_as.as_deref(), &bindir.join("postgres"));
            cmd.args(["-D", data.to_str().unwrap_or_default()])
                .args(["-p", &port.to_string()])
                .args(["-k", dir.path().to_str().unwrap_or_default()])
                .args(["-c", "listen_addresses=127.0.0.1"])
                .args(["-c", "fsync=off"])
                .args(["-c", "synchronous_commit=off"])
                .args(["-c", "full_page_writes=off"])
                .args(["-c", "max_connections=60"])
                .args(["-c", "shared_buffers=64MB"]);
            for s in settings {
                cmd.args(["-c", s]);
            }
            cmd.stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log);
            let mut child = cmd.spawn().expect("starting postgres");
            if wait_ready(&mut child, &bindir, port, Duration::from_secs(120)) {
                return PgCluster {
                    dir,
                    data,
                    port,
                    child,
                    bindir,
                    run_as,
                };
            }
            stop_child(&mut child);
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
            errors.extend(
                last_log
                    .lines()
                    .filter(|l| {
                        // The server's errors; where recovery found its
                        // WAL, became consistent and found the WAL's end;
                        // and what a `restore_command` or `archive_command`
                        // printed (its output goes to the same log).
                        [
                            "FATAL:",
                            "PANIC:",
                            "ERROR:",
                            "restored log file",
                            "consistent recovery state",
                            "invalid record",
                            "unexpected pageaddr",
                            "invalid magic number",
                        ]
                        .iter()
                        .any(|w| l.contains(w))
                            || l.starts_with("Error:")
                            || l.starts_with("backup:")
                    })
                    .map(|l| format!("attempt {attempt}: {l}")),
            );
        }
        panic!(
            "postgres did not start; the last attempt's log:\n{last_log}\n{WHY_START_FAILED}\n{}",
            errors.join("\n")
        );
    }

    fn command_as(user: Option<&str>, program: &Path) -> Command {
        match user {
            Some(u) => {
                let mut c = Command::new("setpriv");
                c.args([
                    &format!("--reuid={u}"),
                    &format!("--regid={u}"),
                    "--init-groups",
                    "--reset-env",
                ])
                .arg(program);
                c
            }
            None => Command::new(program),
        }
    }

    /// The cluster's temporary directory (data directory and log).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The data directory.
    pub fn data_dir(&self) -> &Path {
        &self.data
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }

    /// `pg_dumpall` of the whole cluster (roles, tablespaces, every
    /// database), for comparing clusters; panics on failure.
    pub fn pg_dumpall(&self, args: &[&str]) -> String {
        let out = self
            .tool("pg_dumpall")
            .args(args)
            .output()
            .expect("running pg_dumpall");
        assert!(
            out.status.success(),
            "pg_dumpall failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The directory of the server's binaries (`pg_dump`, `psql`, ...).
    pub fn bin(&self, name: &str) -> PathBuf {
        self.bindir.join(name)
    }

    /// `postgres://postgres:PASSWORD@127.0.0.1:PORT/db`.
    pub fn url(&self, db: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{db}",
            self.port
        )
    }

    /// A command for a client tool with connection settings in the
    /// environment (`PGHOST`, `PGPORT`, `PGUSER`, `PGPASSWORD`).
    pub fn tool(&self, name: &str) -> Command {
        let mut c = Command::new(self.bin(name));
        c.env("PGHOST", "127.0.0.1")
            .env("PGPORT", self.port.to_string())
            .env("PGUSER", "postgres")
            .env("PGPASSWORD", PASSWORD)
            .stdin(Stdio::null());
        c
    }

    /// Runs SQL with `psql` in `db` (stop on the first error); returns
    /// unaligned, tuples-only output.
    ///
    /// # Panics
    ///
    /// When psql fails.
    pub fn psql(&self, db: &str, sql: &str) -> String {
        let out = self.try_psql(db, sql);
        assert!(
            out.status.success(),
            "psql failed on {db}: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            sql.chars().take(2000).collect::<String>()
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Like [`PgCluster::psql`] but returns the output whatever happened.
    pub fn try_psql(&self, db: &str, sql: &str) -> Output {
        use std::io::Write as _;
        let mut child = self
            .tool("psql")
            .args([
                "-X",
                "-q",
                "-A",
                "-t",
                "-v",
                "ON_ERROR_STOP=1",
                "-d",
                db,
                "-f",
                "-",
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("starting psql");
        let mut stdin = child.stdin.take().expect("psql stdin");
        let sql = sql.to_owned();
        let writer = std::thread::spawn(move || {
            let _ = stdin.write_all(sql.as_bytes());
        });
        let out = child.wait_with_output().expect("running psql");
        let _ = writer.join();
        out
    }

    /// `pg_dump` of a database in plain format with the given extra
    /// arguments; panics on failure.
    pub fn pg_dump(&self, db: &str, args: &[&str]) -> String {
        let out = self
            .tool("pg_dump")
            .args(args)
            .arg(db)
            .output()
            .expect("running pg_dump");
        assert!(
            out.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Stops the server (fast shutdown by signal to its process id).
    pub fn stop(&mut self) {
        stop_child(&mut self.child);
    }

    /// Stops the server and starts it again on the same data directory
    /// (and port when it is free).
    ///
    /// # Panics
    ///
    /// When it does not start again.
    pub fn restart(&mut self) {
        self.stop();
        let mut cmd = Self::command_as(self.run_as.as_deref(), &self.bindir.join("postgres"));
        let log_path = self.dir.path().join("server.log");
        let log = std::fs::OpenOptions::new()
            .append(true)
            .open(&log_path)
            .expect("log file");
        cmd.args(["-D", self.data.to_str().unwrap_or_default()])
            .args(["-p", &self.port.to_string()])
            .args(["-k", self.dir.path().to_str().unwrap_or_default()])
            .args(["-c", "listen_addresses=127.0.0.1"])
            .args(["-c", "fsync=off"])
            .args(["-c", "max_connections=60"])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        self.child = cmd.spawn().expect("starting postgres");
        assert!(
            wait_ready(
                &mut self.child,
                &self.bindir,
                self.port,
                Duration::from_secs(120)
            ),
            "postgres did not start again:\n{}",
            self.log()
        );
    }

    /// The user the server runs as (`postgres` when the tests run as root).
    pub fn run_as(&self) -> Option<&str> {
        self.run_as.as_deref()
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

fn wait_ready(child: &mut Child, bindir: &Path, port: u16, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        let ok = Command::new(bindir.join("pg_isready"))
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-q"])
            .status()
            .is_ok_and(|s| s.success());
        if ok {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

/// Fast shutdown (SIGINT to the server's process id), then SIGKILL after
/// 30 seconds.
fn stop_child(child: &mut Child) {
    if let Ok(Some(_)) = child.try_wait() {
        return;
    }
    let pid = child.id().to_string();
    let _ = Command::new("kill").args(["-INT", &pid]).status();
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(30) {
        if let Ok(Some(_)) = child.try_wait() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
