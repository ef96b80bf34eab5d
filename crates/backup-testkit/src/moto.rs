//! Throwaway moto servers (`moto_server`, from the Python package index):
//! S3 with storage classes and `RestoreObject`, on 127.0.0.1 with a free
//! port, stopped by process id when the handle is dropped.
//!
//! The server is found through `BACKUP_TEST_MOTO` (set by
//! `scripts/test.sh`), then the workspace's `.venv`, then `PATH`. When it is
//! missing, [`MotoServer::start`] panics with the command that installs it:
//! tests never skip.
//!
//! What moto does with archive classes (checked against moto 5.2.5): a GET
//! of a `GLACIER` or `DEEP_ARCHIVE` object answers 403 `InvalidObjectState`;
//! `RestoreObject` answers 202 and completes at once (`HEAD` then shows
//! `x-amz-restore: ongoing-request="false", expiry-date="..."`), so the
//! "still thawing" state cannot be seen against it; a copy onto the same
//! key with `x-amz-storage-class` changes the class and drops any restored
//! copy. Each request is logged (`"GET /bucket/key HTTP/1.1" 200`), which
//! [`MotoServer::requests`] reads back.

#![allow(clippy::expect_used)] // Test support: failing to set up is a test failure.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const MISSING: &str = "moto_server (the S3 test server with storage classes) not found: run ./scripts/test.sh, which installs moto[server]==5.2.5 into .venv and sets BACKUP_TEST_MOTO";

/// The bucket every server starts with.
pub const BUCKET: &str = "cold-bucket";

/// A running moto server with the bucket [`BUCKET`].
#[derive(Debug)]
pub struct MotoServer {
    dir: tempfile::TempDir,
    port: u16,
    child: Child,
}

/// The path of `moto_server`.
///
/// # Panics
///
/// When it cannot be found, with the setup command to run.
pub fn server_binary() -> PathBuf {
    crate::venv_tool("BACKUP_TEST_MOTO", "moto_server", MISSING)
}

impl MotoServer {
    /// Starts a server, waits until it answers and creates [`BUCKET`].
    ///
    /// # Panics
    ///
    /// When the server is missing or does not start.
    pub fn start() -> Self {
        let bin = server_binary();
        let dir = tempfile::Builder::new()
            .prefix("moto-test-")
            .tempdir()
            .expect("creating a temporary directory");
        let mut last_log = String::new();
        for _ in 0..5 {
            let port = crate::free_port();
            let log_path = dir.path().join(format!("server-{port}.log"));
            let log = std::fs::File::create(&log_path).expect("log file");
            let mut child = Command::new(&bin)
                .args(["-H", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(log.try_clone().expect("log file"))
                .stderr(log)
                .spawn()
                .expect("starting moto_server");
            if wait_ready(&mut child, port, Duration::from_secs(60)) {
                let server = MotoServer { dir, port, child };
                let (status, body) = server.raw("PUT", &format!("/{BUCKET}"));
                assert!(status == 200, "creating the test bucket: {status} {body}");
                return server;
            }
            stop_child(&mut child);
            last_log = std::fs::read_to_string(&log_path).unwrap_or_default();
        }
        panic!("moto_server did not start:\n{last_log}");
    }

    /// `http://127.0.0.1:PORT`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// `s3://cold-bucket/<prefix>`.
    pub fn url(&self, prefix: &str) -> String {
        format!("s3://{BUCKET}/{prefix}")
    }

    /// `AWS_*` settings for a child process (a CLI under test).
    pub fn env(&self) -> Vec<(String, String)> {
        [
            ("AWS_ENDPOINT_URL", self.endpoint()),
            ("AWS_ALLOW_HTTP", "true".to_owned()),
            ("AWS_REGION", "us-east-1".to_owned()),
            ("AWS_ACCESS_KEY_ID", "testing".to_owned()),
            ("AWS_SECRET_ACCESS_KEY", "testing".to_owned()),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v))
        .collect()
    }

    /// One unsigned HTTP/1.1 request (moto accepts any credentials or
    /// none); returns the status and body.
    fn raw(&self, method: &str, path: &str) -> (u16, String) {
        let mut stream = TcpStream::connect(("127.0.0.1", self.port)).expect("connecting to moto");
        let request = format!(
            "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            self.port
        );
        stream
            .write_all(request.as_bytes())
            .expect("writing a request to moto");
        let mut response = String::new();
        stream
            .read_to_string(&mut response)
            .expect("reading moto's answer");
        let status = response
            .split(' ')
            .nth(1)
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        let body = response
            .split_once("\r\n\r\n")
            .map_or(String::new(), |(_, b)| b.to_owned());
        (status, body)
    }

    /// Every object below `prefix` with its storage class, from a
    /// `ListObjectsV2` (`(key, class)`, keys relative to the bucket).
    pub fn storage_classes(&self, prefix: &str) -> Vec<(String, String)> {
        let mut out = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let mut path = format!("/{BUCKET}?list-type=2&prefix={prefix}");
            if let Some(t) = &token {
                path.push_str("&continuation-token=");
                path.push_str(&encode(t));
            }
            let (status, body) = self.raw("GET", &path);
            assert_eq!(status, 200, "listing the test bucket: {body}");
            for item in body.split("<Contents>").skip(1) {
                let key = between(item, "<Key>", "</Key>").unwrap_or_default();
                let class = between(item, "<StorageClass>", "</StorageClass>")
                    .unwrap_or("STANDARD")
                    .to_owned();
                out.push((key.to_owned(), class));
            }
            token = between(&body, "<NextContinuationToken>", "</NextContinuationToken>")
                .map(str::to_owned);
            if token.is_none() {
                return out;
            }
        }
    }

    /// The requests the server logged so far, as `METHOD /path?query`.
    pub fn requests(&self) -> Vec<String> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(self.dir.path()).expect("reading the log directory") {
            let log = std::fs::read_to_string(entry.expect("log entry").path()).unwrap_or_default();
            for line in log.lines() {
                // Werkzeug colours some lines (202, errors) with ANSI codes.
                let line = strip_ansi(line);
                let Some(request) = between(&line, "\"", " HTTP/1.1\"") else {
                    continue;
                };
                out.push(request.to_owned());
            }
        }
        out
    }
}

impl Drop for MotoServer {
    fn drop(&mut self) {
        stop_child(&mut self.child);
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

/// `line` without ANSI escape sequences (`ESC [ ... m`).
fn strip_ansi(line: &str) -> String {
    let mut out = String::with_capacity(line.len());
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            for c in chars.by_ref() {
                if c.is_ascii_alphabetic() {
                    break;
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    let len = text[from..].find(end)?;
    Some(&text[from..from + len])
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn stop_child(child: &mut Child) {
    let _ = child.kill();
    let _ = child.wait();
}
