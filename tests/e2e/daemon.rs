//! `backupd` and the configuration file: scheduled runs, metrics and the
//! status API, alerts over webhook and SMTP, the run trigger, shutdown,
//! daemons sharing a repository, `backup health` and the audit trail.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use crate::util::{random_bytes, write, Scratch, PASSWORD};

pub(crate) const TOKEN: &str = "test-token-0123456789";

/// The `backupd` binary, built next to `backup` by the workspace's test
/// build (`backup-daemon` has integration tests of its own, so
/// `cargo test --workspace` and `cargo nextest run --workspace` build it
/// before any test runs). No test runs cargo itself.
pub(crate) fn backupd_bin() -> PathBuf {
    let bin = Path::new(env!("CARGO_BIN_EXE_backup")).with_file_name("backupd");
    assert!(
        bin.exists(),
        "{} is missing: run the tests of the whole workspace (cargo nextest run --workspace), which builds it",
        bin.display()
    );
    bin
}

/// A running daemon, killed when dropped.
pub(crate) struct Daemon {
    pub(crate) child: Child,
    pub(crate) port: u16,
    log: PathBuf,
}

impl Daemon {
    pub(crate) fn start(s: &Scratch, config: &Path, port: u16, log_name: &str) -> Self {
        Self::start_until(s, config, port, log_name, || {
            http(port, "GET", "/healthz", None).is_some_and(|(code, _)| code == 200)
        })
    }

    /// As [`Daemon::start`], ready once `ready` says so (a daemon serving
    /// HTTPS does not answer plain HTTP).
    pub(crate) fn start_until(
        s: &Scratch,
        config: &Path,
        port: u16,
        log_name: &str,
        ready: impl FnMut() -> bool,
    ) -> Self {
        let d = Self::spawn(s, config, port, log_name, &[]);
        d.wait_for("daemon listening", Duration::from_secs(60), ready);
        d
    }

    /// Starts the daemon with `env` added, without waiting for it.
    pub(crate) fn spawn(
        s: &Scratch,
        config: &Path,
        port: u16,
        log_name: &str,
        env: &[(&str, &str)],
    ) -> Self {
        let log = s.path(log_name);
        let f = std::fs::File::create(&log).unwrap();
        let child = Command::new(backupd_bin())
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("HOME", s.dir.path())
            .env("BACKUP_PASSWORD", PASSWORD)
            .env("BACKUPD_TOKEN", TOKEN)
            .env("BACKUPD_READ", "read-only-token-42")
            .envs(env.iter().copied())
            .arg("--config")
            .arg(config)
            .stdout(Stdio::null())
            .stderr(f)
            .spawn()
            .unwrap();
        Daemon { child, port, log }
    }

    /// Where the daemon writes its log (readable after [`Self::stop`]).
    pub(crate) fn log_path(&self) -> PathBuf {
        self.log.clone()
    }

    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    pub(crate) fn wait_for(&self, what: &str, limit: Duration, mut f: impl FnMut() -> bool) {
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if f() {
                return;
            }
            std::thread::sleep(Duration::from_millis(200));
        }
        panic!("timed out waiting for {what}; daemon log:\n{}", self.log());
    }

    pub(crate) fn jobs(&self) -> serde_json::Value {
        // Reads need a token, like the status page.
        let (code, body) = http(self.port, "GET", "/api/jobs", Some(TOKEN)).unwrap();
        assert_eq!(code, 200);
        serde_json::from_str(&body).unwrap()
    }

    pub(crate) fn job(&self, name: &str) -> serde_json::Value {
        self.jobs()
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["name"] == name)
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn metrics(&self) -> String {
        http(self.port, "GET", "/metrics", None).unwrap().1
    }

    /// Sends a signal and waits for the exit; returns the exit code and
    /// how long it took.
    pub(crate) fn stop(
        mut self,
        signal: nix::sys::signal::Signal,
        limit: Duration,
    ) -> (i32, Duration) {
        let pid = nix::unistd::Pid::from_raw(self.child.id() as i32);
        let t0 = Instant::now();
        nix::sys::signal::kill(pid, signal).unwrap();
        while t0.elapsed() < limit {
            if let Some(st) = self.child.try_wait().unwrap() {
                return (st.code().unwrap_or(-1), t0.elapsed());
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!(
            "backupd did not exit within {limit:?}; log:\n{}",
            self.log()
        );
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The value of a metric line `name{labels}`.
pub(crate) fn metric(text: &str, series: &str) -> Option<f64> {
    text.lines()
        .find_map(|l| l.strip_prefix(series).and_then(|v| v.trim().parse().ok()))
}

/// A minimal HTTP/1.1 client: returns the status and body.
pub(crate) fn http(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Option<(u16, String)> {
    http_with(port, method, path, token, "")
}

/// As [`http`], sending `body` (JSON when not empty).
pub(crate) fn http_with(
    port: u16,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: &str,
) -> Option<(u16, String)> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    let auth = token.map_or(String::new(), |t| format!("Authorization: Bearer {t}\r\n"));
    let kind = if body.is_empty() {
        ""
    } else {
        "Content-Type: application/json\r\n"
    };
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}{kind}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    let code = resp.split_whitespace().nth(1)?.parse().ok()?;
    let body = resp.split_once("\r\n\r\n").map_or("", |x| x.1);
    Some((code, body.to_owned()))
}

/// Writes a configuration with one files job.
pub(crate) fn config(s: &Scratch, name: &str, port: u16, job: &str, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[daemon]
listen = "127.0.0.1:{port}"
shutdown_grace = "20s"
check_interval = "1s"
api_token = {{ env = "BACKUPD_TOKEN" }}
lock_wait = "1m"

[daemon.retry]
attempts = 1

[repositories.main]
url = "{repo}"
password = {{ env = "BACKUP_PASSWORD" }}

{job}
{extra}
"#,
        repo = s.repo
    );
    let path = s.path(name);
    std::fs::write(&path, text).unwrap();
    path
}

pub(crate) fn files_job(source: &Path, schedule: &str) -> String {
    format!(
        "[jobs.files]\nrepository = \"main\"\nsource = \"{}\"\nschedule = \"{schedule}\"\ntags = [\"daemon\"]\n",
        source.display()
    )
}

fn snapshots(s: &Scratch) -> Vec<serde_json::Value> {
    s.json(&["list"]).as_array().unwrap().clone()
}

#[test]
fn scheduled_runs_metrics_status_and_trigger() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    write(&src.join("a.txt"), b"hello daemon");
    let port = backup_testkit::free_port();
    let cfg = config(
        &s,
        "backupd.toml",
        port,
        &files_job(&src, "*/2 * * * * *"),
        "",
    );
    let d = Daemon::start(&s, &cfg, port, "daemon.log");
    d.wait_for("two scheduled backups", Duration::from_secs(90), || {
        d.job("files")["successes_total"].as_u64().unwrap_or(0) >= 2
    });

    let job = d.job("files");
    assert_eq!(job["last_run"]["result"], "success");
    assert_eq!(job["last_run"]["trigger"], "schedule");
    assert!(job["next_run"].is_string());
    let listed = snapshots(&s);
    assert!(listed.len() >= 2, "{listed:?}");
    let newest = job["last_run"]["snapshot"].as_str().unwrap();
    assert!(
        listed.iter().any(|l| l["id"] == newest),
        "the status API names a snapshot that `backup list` shows"
    );

    let m = d.metrics();
    assert!(metric(&m, "backupd_job_successes_total{job=\"files\"}").unwrap() >= 2.0);
    assert!(
        metric(
            &m,
            "backupd_job_last_success_timestamp_seconds{job=\"files\"}"
        )
        .unwrap()
            > 0.0
    );
    assert!(metric(&m, "backupd_job_seconds_since_last_success{job=\"files\"}").is_some());
    assert_eq!(
        metric(&m, "backupd_job_failures_total{job=\"files\"}"),
        Some(0.0)
    );
    assert!(metric(&m, "backupd_repository_size_bytes{repository=\"main\"}").unwrap() > 0.0);
    assert!(m.contains("backupd_job_running{job=\"files\"}"));

    // The run trigger needs the token.
    assert_eq!(
        http(port, "POST", "/api/jobs/files/run", None).unwrap().0,
        401
    );
    assert_eq!(
        http(port, "POST", "/api/jobs/files/run", Some("wrong"))
            .unwrap()
            .0,
        401
    );
    assert_eq!(
        http(port, "POST", "/api/jobs/nope/run", Some(TOKEN))
            .unwrap()
            .0,
        404
    );
    assert_eq!(
        http(port, "POST", "/api/jobs/files/run", Some(TOKEN))
            .unwrap()
            .0,
        202
    );
    d.wait_for("the manual run", Duration::from_secs(60), || {
        d.job("files")["last_run"]["trigger"] == "manual"
    });

    let (code, took) = d.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(60));
    assert_eq!(code, 0, "{took:?}");

    // Every run left a chained audit record.
    let audit = s.json(&["audit"]);
    assert_eq!(audit["ok"], true);
    let creates = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["operation"] == "create" && r["details"]["job"] == "files")
        .count();
    assert!(creates >= 2);
}

/// A tiny webhook receiver: every POST body is sent on the channel.
pub(crate) fn webhook_receiver() -> (u16, mpsc::Receiver<serde_json::Value>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let mut r = BufReader::new(conn.try_clone().unwrap());
            let mut len = 0;
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap_or(0) == 0 {
                    break;
                }
                let lower = line.to_ascii_lowercase();
                if let Some(v) = lower.strip_prefix("content-length:") {
                    len = v.trim().parse().unwrap_or(0);
                }
                if line == "\r\n" {
                    break;
                }
            }
            let mut body = vec![0; len];
            if r.read_exact(&mut body).is_ok() {
                let _ = conn.write_all(
                    b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok",
                );
                if let Ok(v) = serde_json::from_slice(&body) {
                    let _ = tx.send(v);
                }
            }
        }
    });
    (port, rx)
}

/// A tiny SMTP receiver (no TLS, no auth): every message's data is sent on
/// the channel.
pub(crate) fn smtp_receiver() -> (u16, mpsc::Receiver<String>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut conn) = conn else { continue };
            let tx = tx.clone();
            std::thread::spawn(move || {
                let mut r = BufReader::new(conn.try_clone().unwrap());
                let _ = conn.write_all(b"220 localhost test SMTP\r\n");
                loop {
                    let mut line = String::new();
                    if r.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    let cmd = line.trim_end().to_ascii_uppercase();
                    if cmd.starts_with("EHLO") || cmd.starts_with("HELO") {
                        let _ = conn.write_all(b"250-localhost\r\n250 8BITMIME\r\n");
                    } else if cmd.starts_with("DATA") {
                        let _ = conn.write_all(b"354 go ahead\r\n");
                        let mut data = String::new();
                        loop {
                            let mut l = String::new();
                            if r.read_line(&mut l).unwrap_or(0) == 0 {
                                return;
                            }
                            if l == ".\r\n" {
                                break;
                            }
                            data.push_str(&l);
                        }
                        let _ = tx.send(data);
                        let _ = conn.write_all(b"250 queued\r\n");
                    } else if cmd.starts_with("QUIT") {
                        let _ = conn.write_all(b"221 bye\r\n");
                        return;
                    } else {
                        let _ = conn.write_all(b"250 ok\r\n");
                    }
                }
            });
        }
    });
    (port, rx)
}

pub(crate) fn wait_event(rx: &mpsc::Receiver<serde_json::Value>, event: &str) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if let Ok(v) = rx.recv_timeout(Duration::from_secs(1)) {
            if v["event"] == event {
                return v;
            }
        }
    }
    panic!("no `{event}` webhook arrived");
}

#[test]
fn unreachable_source_alerts_then_recovery() {
    let s = Scratch::new();
    s.init();
    let src = s.path("not-there-yet");
    let (hook_port, hooks) = webhook_receiver();
    let (smtp_port, mails) = smtp_receiver();
    let port = backup_testkit::free_port();
    let channels = format!(
        r#"
[notifications.hook]
type = "webhook"
url = "http://127.0.0.1:{hook_port}/hook"

[notifications.mail]
type = "smtp"
host = "127.0.0.1"
port = {smtp_port}
security = "none"
from = "backupd <backupd@example.com>"
to = ["oncall@example.com"]
events = ["failure", "recovery"]
"#
    );
    let cfg = config(
        &s,
        "backupd.toml",
        port,
        &files_job(&src, "*/2 * * * * *"),
        &channels,
    );
    let d = Daemon::start(&s, &cfg, port, "daemon.log");

    let failure = wait_event(&hooks, "failure");
    assert_eq!(failure["job"], "files");
    assert!(
        failure["text"].as_str().unwrap().contains("files"),
        "{failure}"
    );
    assert!(
        failure["details"]
            .as_str()
            .unwrap()
            .contains("not-there-yet"),
        "{failure}"
    );
    let mail = mails
        .recv_timeout(Duration::from_secs(90))
        .expect("an e-mail");
    assert!(
        mail.contains("Subject: [backupd] Backup job files failed"),
        "{mail}"
    );
    assert!(mail.contains("To: oncall@example.com"), "{mail}");
    d.wait_for("the failure metric", Duration::from_secs(30), || {
        metric(&d.metrics(), "backupd_job_failures_total{job=\"files\"}").unwrap_or(0.0) >= 1.0
    });
    assert!(d.job("files")["last_run"]["error"]
        .as_str()
        .unwrap()
        .contains("not-there-yet"));

    // The source comes back: a recovery notice follows.
    write(&src.join("data"), b"back again");
    let recovery = wait_event(&hooks, "recovery");
    assert_eq!(recovery["job"], "files");
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut got_recovery_mail = false;
    while Instant::now() < deadline && !got_recovery_mail {
        if let Ok(m) = mails.recv_timeout(Duration::from_secs(1)) {
            got_recovery_mail = m.contains("recovered");
        }
    }
    assert!(got_recovery_mail, "no recovery e-mail");
    assert_eq!(d.job("files")["consecutive_failures"], 0);
    let (code, _) = d.stop(nix::sys::signal::Signal::SIGINT, Duration::from_secs(60));
    assert_eq!(code, 0);
}

#[test]
fn undeliverable_notification_does_not_stop_the_daemon() {
    let s = Scratch::new();
    s.init();
    let src = s.path("missing");
    let dead = backup_testkit::free_port();
    let port = backup_testkit::free_port();
    let channels = format!(
        "[notifications.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{dead}/secret-token-in-url\"\n"
    );
    let cfg = config(
        &s,
        "backupd.toml",
        port,
        &files_job(&src, "*/2 * * * * *"),
        &channels,
    );
    let d = Daemon::start(&s, &cfg, port, "daemon.log");
    d.wait_for("two failed runs", Duration::from_secs(60), || {
        d.job("files")["failures_total"].as_u64().unwrap_or(0) >= 2
    });
    d.wait_for("a retried notification", Duration::from_secs(30), || {
        d.log()
            .contains("Could not send a notification; will retry.")
    });
    assert!(
        !d.log().contains("secret-token-in-url"),
        "the webhook URL leaked into the log"
    );
    assert_eq!(http(port, "GET", "/healthz", None).unwrap().0, 200);
}

#[test]
fn sigterm_abandons_a_running_backup_cleanly() {
    let s = Scratch::new();
    s.init();
    let src = s.path("big");
    for i in 0..6u64 {
        write(
            &src.join(format!("f{i:02}")),
            &random_bytes(10 << 20, i + 1),
        );
    }
    // A sparse terabyte of zeros: whatever the machine's speed, the backup
    // is still reading it when the grace period runs out.
    let endless = src.join("zz-endless");
    std::fs::File::create(&endless)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    let port = backup_testkit::free_port();
    // Only manual runs (the schedule is far away), and a short grace.
    let job = files_job(&src, "0 0 1 1 *");
    let cfg = config(&s, "backupd.toml", port, &job, "");
    let text = std::fs::read_to_string(&cfg)
        .unwrap()
        .replace("shutdown_grace = \"20s\"", "shutdown_grace = \"1s\"");
    std::fs::write(&cfg, text).unwrap();
    let d = Daemon::start(&s, &cfg, port, "daemon.log");
    assert_eq!(
        http(port, "POST", "/api/jobs/files/run", Some(TOKEN))
            .unwrap()
            .0,
        202
    );
    let data = Path::new(&s.repo).join("data");
    let packs = |p: &Path| {
        std::fs::read_dir(p).map_or(0, |dirs| {
            dirs.flatten()
                .map(|d| std::fs::read_dir(d.path()).map_or(0, Iterator::count))
                .sum::<usize>()
        })
    };
    d.wait_for(
        "the backup to write packs",
        Duration::from_secs(120),
        || d.job("files")["running"] == true && packs(&data) > 0,
    );
    let (code, took) = d.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(30));
    let log = std::fs::read_to_string(s.path("daemon.log")).unwrap();
    assert_eq!(code, 0, "{log}");
    assert!(took < Duration::from_secs(25), "{took:?}\n{log}");
    assert!(log.contains("abandoning them"), "{log}");
    assert!(
        snapshots(&s).is_empty(),
        "an abandoned backup must not be listed"
    );
    s.ok(&["verify"]);

    // The next start runs normally.
    std::fs::remove_file(&endless).unwrap();
    let d = Daemon::start(&s, &cfg, port, "daemon2.log");
    assert_eq!(
        http(port, "POST", "/api/jobs/files/run", Some(TOKEN))
            .unwrap()
            .0,
        202
    );
    d.wait_for("a complete backup", Duration::from_secs(300), || {
        d.job("files")["successes_total"] == 1
    });
    assert_eq!(snapshots(&s).len(), 1);
    drop(d);
}

#[test]
fn two_daemons_run_each_slot_once() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    write(&src.join("a"), b"shared");
    let (p1, p2) = (backup_testkit::free_port(), backup_testkit::free_port());
    let job = files_job(&src, "*/2 * * * * *");
    let c1 = config(&s, "one.toml", p1, &job, "");
    let c2 = config(&s, "two.toml", p2, &job, "");
    let d1 = Daemon::start(&s, &c1, p1, "one.log");
    let d2 = Daemon::start(&s, &c2, p2, "two.log");
    d1.wait_for(
        "slots shared by both daemons",
        Duration::from_secs(120),
        || {
            let a = d1.job("files");
            let b = d2.job("files");
            let runs = a["successes_total"].as_u64().unwrap_or(0)
                + b["successes_total"].as_u64().unwrap_or(0);
            let skipped = a["slots_skipped_total"].as_u64().unwrap_or(0)
                + b["slots_skipped_total"].as_u64().unwrap_or(0);
            runs >= 4 && skipped >= 2
        },
    );
    d1.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(60));
    d2.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(60));
    let audit = s.json(&["audit"]);
    assert_eq!(audit["ok"], true, "{audit}");
    let mut slots: Vec<String> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["operation"] == "create" && r["status"] == "success")
        .map(|r| r["details"]["slot"].as_str().unwrap().to_owned())
        .collect();
    let n = slots.len();
    assert!(n >= 4);
    slots.sort();
    slots.dedup();
    assert_eq!(slots.len(), n, "a slot ran twice");
    assert_eq!(snapshots(&s).len(), n);
}

#[test]
fn audit_detects_edited_and_deleted_records() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    write(&src.join("a"), b"x");
    for _ in 0..3 {
        s.create(&src, &[]);
    }
    let v = s.json(&["audit"]);
    assert_eq!(v["ok"], true);
    let ops: Vec<&str> = v["records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["operation"].as_str().unwrap())
        .collect();
    assert_eq!(ops, ["create", "create", "create"]);
    assert!(
        std::fs::read_to_string(s.path(".local/state/backup/audit.jsonl"))
            .unwrap()
            .lines()
            .count()
            >= 3
    );

    // Edit: flip a byte of record 2.
    let rec = Path::new(&s.repo).join("audit/0000000000000002");
    let mut bytes = std::fs::read(&rec).unwrap();
    let backup = bytes.clone();
    bytes[20] ^= 1;
    std::fs::write(&rec, &bytes).unwrap();
    let err = s.fails(&["audit"], 3);
    assert!(err.contains("record 2"), "{err}");
    std::fs::write(&rec, &backup).unwrap();
    s.ok(&["audit"]);

    // Delete: record 2 in the middle, then the last one.
    std::fs::remove_file(&rec).unwrap();
    let err = s.fails(&["audit"], 3);
    assert!(err.contains("record 2 is missing"), "{err}");
    std::fs::write(&rec, &backup).unwrap();
    std::fs::remove_file(Path::new(&s.repo).join("audit/0000000000000003")).unwrap();
    let err = s.fails(&["audit"], 3);
    assert!(
        err.contains("record 3 is in the local audit log but missing"),
        "{err}"
    );
}

#[test]
fn health_fails_when_the_last_backup_is_too_old() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    write(&src.join("a"), b"x");
    let job = format!("{}max_age = \"1h\"\n", files_job(&src, "0 3 * * *"));
    let cfg = config(&s, "backupd.toml", backup_testkit::free_port(), &job, "");
    let c = cfg.to_str().unwrap();
    let err = s.fails(&["--config", c, "health"], 1);
    assert!(err.contains("no backup of this job yet"), "{err}");
    let old = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    s.ok(&["--config", c, "create", "--job", "files", "--time", &old]);
    let err = s.fails(&["--config", c, "health"], 1);
    assert!(err.contains("FAIL age"), "{err}");
    s.ok(&["--config", c, "create", "--job", "files"]);
    let out = s.ok(&["--config", c, "health"]);
    assert!(out.contains("ok   age"), "{out}");
    let v = s.json(&["--config", c, "health"]);
    assert_eq!(v["healthy"], true);

    // A source that went away fails the health check too.
    std::fs::remove_dir_all(&src).unwrap();
    let err = s.fails(&["--config", c, "health"], 1);
    assert!(err.contains("FAIL source"), "{err}");
}

#[test]
fn schedule_restore_by_job_and_config_errors() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    write(&src.join("a"), b"restore me");
    let cfg = config(
        &s,
        "backupd.toml",
        backup_testkit::free_port(),
        &files_job(&src, "*/10 * * * *"),
        "",
    );
    let c = cfg.to_str().unwrap();
    let v = s.json(&["--config", c, "schedule", "-n", "2"]);
    assert_eq!(v[0]["job"], "files");
    assert_eq!(v[0]["next_runs"].as_array().unwrap().len(), 2);

    s.ok(&["--config", c, "create", "--job", "files"]);
    let listed = snapshots(&s);
    assert_eq!(listed[0]["snapshot"]["job"], "files");
    let to = s.path("restored");
    s.ok(&[
        "--config",
        c,
        "restore",
        "--job",
        "files",
        "latest",
        "--to",
        to.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(to.join("a")).unwrap(), b"restore me");
    // Into the job's own source only with confirmation.
    let err = s.fails(&["--config", c, "restore", "--job", "files", "latest"], 2);
    assert!(err.contains("--yes"), "{err}");

    // Unknown key: the line is named, by backupd and by backup.
    let text = std::fs::read_to_string(&cfg).unwrap();
    let bad = text.replace("tags = [\"daemon\"]", "tags = [\"daemon\"]\nretension = 3");
    let line = bad
        .lines()
        .position(|l| l.starts_with("retension"))
        .unwrap()
        + 1;
    let badp = s.path("bad.toml");
    std::fs::write(&badp, bad).unwrap();
    let out = Command::new(backupd_bin())
        .args(["--check-config", "--config"])
        .arg(&badp)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("line {line}")) && err.contains("retension"),
        "{err}"
    );
    let err = s.fails(&["--config", badp.to_str().unwrap(), "schedule"], 2);
    assert!(err.contains(&format!("line {line}")), "{err}");

    // `init` of a configured repository uses its URL and password source
    // (not a directory named after it in the current directory).
    let configured = s.path("configured-repo");
    let pw = s.path("configured.pw");
    std::fs::write(&pw, "configured secret\n").unwrap();
    let cfg2 = s.path("init.toml");
    std::fs::write(
        &cfg2,
        format!(
            "[repositories.main]\nurl = \"{}\"\npassword = {{ file = \"{}\" }}\n",
            configured.display(),
            pw.display()
        ),
    )
    .unwrap();
    let c2 = cfg2.to_str().unwrap();
    let run = |args: &[&str]| {
        let out = s
            .cmd()
            .env_remove("BACKUP_REPOSITORY")
            .env_remove("BACKUP_PASSWORD")
            .current_dir(s.dir.path())
            .args(args)
            .output()
            .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, err) = run(&["--config", c2, "--repo", "main", "init"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(configured.join("config").exists() && !s.path("main").exists());
    let (code, err) = run(&["--config", c2, "snapshots"]);
    assert_eq!(code, Some(0), "{err}");

    let out = Command::new(backupd_bin())
        .env("BACKUP_PASSWORD", PASSWORD)
        .env("BACKUPD_TOKEN", TOKEN)
        .args(["--check-config", "--config"])
        .arg(&cfg)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A physical PostgreSQL job streams WAL while the daemon runs: metrics
/// show the stored position following the server; a killed daemon resumes
/// without a gap; a stopped server is a `capture_stopped` notice.
#[test]
fn physical_job_streams_wal_and_reports_it() {
    use backup_testkit::postgres::{PgCluster, PASSWORD as PG_PASSWORD};
    let pg = PgCluster::start();
    pg.psql(
        "postgres",
        &format!(
            "CREATE ROLE repl LOGIN REPLICATION SUPERUSER PASSWORD '{PG_PASSWORD}'; \
             CREATE TABLE t (id bigserial PRIMARY KEY, v text);"
        ),
    );
    let s = Scratch::new();
    s.init();
    let pw = s.path("pg.pass");
    std::fs::write(&pw, PG_PASSWORD).unwrap();
    let (hook_port, hooks) = webhook_receiver();
    let port = backup_testkit::free_port();
    let job = format!(
        "[jobs.db]\nrepository = \"main\"\nsource = \"postgres://repl@127.0.0.1:{}/postgres?mode=physical\"\n\
         source_password = {{ file = \"{}\" }}\nschedule = \"0 0 1 1 *\"\nwal_flush = \"1s\"\nmax_wal_lag = \"1h\"\n",
        pg.port(),
        pw.display()
    );
    let hook = format!(
        "[notifications.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\n"
    );
    let cfg = config(&s, "backupd.toml", port, &job, &hook);
    let d = Daemon::start(&s, &cfg, port, "daemon.log");
    let stored = |d: &Daemon| {
        metric(
            &d.metrics(),
            "backupd_capture_stored_position{job=\"db\",kind=\"postgres-wal\"}",
        )
        .unwrap_or(0.0)
    };
    d.wait_for("streaming", Duration::from_secs(60), || {
        metric(
            &d.metrics(),
            "backupd_capture_streaming{job=\"db\",kind=\"postgres-wal\"}",
        ) == Some(1.0)
    });
    // A base backup (run now) and writes: the stored position follows the
    // server's, and the window starts at the base backup.
    let (code, _) = http(port, "POST", "/api/jobs/db/run", Some(TOKEN)).unwrap();
    assert_eq!(code, 202);
    d.wait_for("the base backup", Duration::from_secs(120), || {
        snapshots(&s).len() == 1
    });
    pg.psql(
        "postgres",
        "INSERT INTO t (v) SELECT md5(g::text) FROM generate_series(1, 20000) g",
    );
    let server = |pg: &PgCluster| {
        let l = pg.psql("postgres", "SELECT pg_current_wal_lsn() - '0/0'");
        l.trim().parse::<f64>().unwrap()
    };
    let target = server(&pg);
    d.wait_for("the WAL to be stored", Duration::from_secs(60), || {
        stored(&d) >= target
    });
    d.wait_for(
        "the window to start at the base backup",
        Duration::from_secs(30),
        || d.job("db")["capture"]["window_start"].is_string(),
    );
    let job_state = d.job("db");
    assert_eq!(job_state["capture"]["gaps_total"], 0, "{job_state}");
    // With a capture window, what can be restored is the window and the
    // RPO is the capture's lag, on the status page and in the report
    // (issue 28, item 15), and the page shows the capture's state.
    let (code, page) = http(port, "GET", "/", Some(TOKEN)).unwrap();
    assert_eq!(code, 200);
    for shown in [
        "WAL capture running",
        "any point from",
        "capture lag",
        ">running</span> lag",
    ] {
        assert!(page.contains(shown), "{shown}: {page}");
    }
    assert!(!page.contains("restore point"), "{page}");
    let cfg_s = cfg.to_str().unwrap();
    let report = s.json(&[
        "--config", cfg_s, "report", "--since", "1d", "--format", "json",
    ]);
    let summary = &report["jobs"][0]["summary"];
    assert_eq!(summary["capture"]["kind"], "postgres-wal", "{summary}");
    let lag = summary["worst_rpo_seconds"].as_f64().unwrap();
    assert!(lag < 120.0, "the RPO is the capture's lag: {summary}");
    let md = s.ok(&[
        "--config", cfg_s, "report", "--since", "1d", "--format", "markdown",
    ]);
    assert!(
        md.contains("any point of") && md.contains("capture lag"),
        "{md}"
    );

    // kill -9 mid-stream, more writes, a new daemon: it resumes where the
    // repository ends (no gap recorded, no piece twice).
    pg.psql(
        "postgres",
        "INSERT INTO t (v) SELECT md5(g::text) FROM generate_series(1, 20000) g",
    );
    d.stop(nix::sys::signal::Signal::SIGKILL, Duration::from_secs(10));
    pg.psql(
        "postgres",
        "INSERT INTO t (v) SELECT md5(g::text) FROM generate_series(1, 20000) g",
    );
    let target = server(&pg);
    let d = Daemon::start(&s, &cfg, port, "daemon2.log");
    d.wait_for("the WAL after the restart", Duration::from_secs(60), || {
        stored(&d) >= target
    });
    let listing = crate::format_reader::reader_json(&s.repo, PASSWORD, &["captures".as_ref()]);
    let records = listing["records"].as_array().unwrap();
    assert!(records.iter().all(|r| r["gap"].is_null()), "{listing}");
    let windows = listing["postgres_windows"].as_object().unwrap();
    let timeline1 = windows.values().next().unwrap()["00000001"]
        .as_array()
        .unwrap()
        .clone();
    assert_eq!(timeline1.len(), 1, "one window, no hole: {listing}");

    // The server goes away: the capture stops, is noticed, and restarts.
    drop(pg);
    let stopped = wait_event(&hooks, "capture_stopped");
    assert_eq!(stopped["job"], "db");
    d.wait_for("the restart counter", Duration::from_secs(30), || {
        metric(
            &d.metrics(),
            "backupd_capture_restarts{job=\"db\",kind=\"postgres-wal\"}",
        )
        .unwrap_or(0.0)
            >= 1.0
    });
    let (code, _) = d.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(60));
    assert_eq!(code, 0);
}
