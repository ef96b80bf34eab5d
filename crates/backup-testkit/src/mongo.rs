//! Throwaway MongoDB-protocol servers: `SecantusDB` (`secantusd-py`, from
//! the Python package index) on 127.0.0.1 with a free port and a temporary storage directory,
//! stopped by process id when the handle is dropped.
//!
//! `SecantusDB` reports itself as a one-node replica set with
//! `local.oplog.rs`. The server is found through `BACKUP_TEST_SECANTUSD`
//! (set by `scripts/test.sh`), then the workspace's `.venv`, then `PATH`.
//! When it is missing, [`MongoServer::start`] panics with the command that
//! installs it: tests never skip.

#![allow(clippy::expect_used)] // Test support: failing to set up is a test failure.

use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MISSING: &str = "secantusd-py (SecantusDB, the MongoDB-protocol test server) not found: run ./scripts/test.sh, which installs SecantusDB==0.7.0b3 into .venv and sets BACKUP_TEST_SECANTUSD";

/// A running throwaway server.
#[derive(Debug)]
pub struct MongoServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

/// The path of `secantusd-py`.
///
/// # Panics
///
/// When it cannot be found, with the setup command to run.
pub fn server_binary() -> PathBuf {
    crate::venv_tool("BACKUP_TEST_SECANTUSD", "secantusd-py", MISSING)
}

impl MongoServer {
    /// Starts a server and waits until it accepts connections.
    ///
    /// # Panics
    ///
    /// When the server is missing or does not start.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a server with extra `secantusd-py` arguments
    /// (`--standalone`, `--oplog-max-entries N`, ...).
    ///
    /// # Panics
    ///
    /// When the server is missing or does not start.
    pub fn start_with(args: &[&str]) -> Self {
        let bin = server_binary();
        let dir = tempfile::Builder::new()
            .prefix("mongo-test-")
            .tempdir()
            .expect("creating a temporary directory");
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = crate::free_port();
            let storage = dir.path().join(format!("data-{port}"));
            std::fs::create_dir_all(&storage).expect("creating the storage directory");
            let log_path = dir.path().join(format!("server-{port}.log"));
            let log = std::fs::File::create(&log_path).expect("log file");
            let mut child = Command::new(&bin)
                .args(["--host", "127.0.0.1", "--port", &port.to_string()])
                .arg("--storage-path")
                .arg(&storage)
                .args(args)
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .expect("starting secantusd-py");
            if wait_ready(&mut child, port, Duration::from_secs(60)) {
                return MongoServer { dir, port, child };
            }
            stop_child(&mut child);
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
        }
        panic!("secantusd-py did not start:\n{last_log}");
    }

    /// The server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The temporary directory (storage and log).
    pub fn dir(&self) -> &std::path::Path {
        self.dir.path()
    }

    /// `mongodb://127.0.0.1:PORT/DB?directConnection=true` (no database
    /// when `db` is empty).
    pub fn url(&self, db: &str) -> String {
        format!(
            "mongodb://127.0.0.1:{}/{db}?directConnection=true",
            self.port
        )
    }
}

fn wait_ready(child: &mut Child, port: u16, timeout: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < timeout {
        if let Ok(Some(_)) = child.try_wait() {
            return false;
        }
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn stop_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}

impl Drop for MongoServer {
    fn drop(&mut self) {
        stop_child(&mut self.child);
    }
}
