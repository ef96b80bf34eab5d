//! `backupd` and recovery proof: scheduled drills with their
//! notifications and metrics, anomaly alerts from runs with an injected
//! delay and a size jump, `storage_low`, the scheduled report, the status
//! page in a real browser (headless Chromium), `backup report` against a
//! known history, and the shipped Prometheus rules and Grafana dashboard.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use backup_testkit::redis::RedisServer;

use crate::daemon::{http, metric, smtp_receiver, webhook_receiver, Daemon, TOKEN};
use crate::util::{random_bytes, write, Scratch, PASSWORD};

const READ_TOKEN: &str = "read-only-token-42";

/// The daemon's configuration: `[daemon]` with both tokens, one
/// repository, a webhook and an SMTP channel, then `rest`.
fn daemon_config(s: &Scratch, port: u16, hook: u16, smtp: u16, rest: &str) -> PathBuf {
    let text = format!(
        r#"
[daemon]
listen = "127.0.0.1:{port}"
shutdown_grace = "20s"
check_interval = "1s"
api_token = {{ env = "BACKUPD_TOKEN" }}
read_token = {{ env = "BACKUPD_READ" }}
lock_wait = "1m"

[daemon.retry]
attempts = 1

[repositories.main]
url = "{repo}"
password = {{ env = "BACKUP_PASSWORD" }}

[notifications.hook]
type = "webhook"
url = "http://127.0.0.1:{hook}/hook"

[notifications.mail]
type = "smtp"
host = "127.0.0.1"
port = {smtp}
security = "none"
from = "backupd@example.org"
to = ["ops@example.org"]

{rest}
"#,
        repo = s.repo
    );
    let path = s.path("backupd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Starts the daemon (`Daemon::start` gives it both tokens).
fn start(s: &Scratch, cfg: &Path, port: u16) -> Daemon {
    Daemon::start(s, cfg, port, "daemon.log")
}

/// What a test receiver got, kept so that waits in any order find it.
struct Inbox<T> {
    rx: mpsc::Receiver<T>,
    seen: std::cell::RefCell<Vec<T>>,
}

impl<T: Clone + std::fmt::Debug> Inbox<T> {
    fn new(rx: mpsc::Receiver<T>) -> Self {
        Inbox {
            rx,
            seen: std::cell::RefCell::new(Vec::new()),
        }
    }

    /// The first message (received or still to come, within 2 minutes)
    /// that `matches`.
    fn wait(&self, what: &str, matches: impl Fn(&T) -> bool) -> T {
        if let Some(m) = self.seen.borrow().iter().find(|m| matches(m)) {
            return m.clone();
        }
        let deadline = Instant::now() + Duration::from_secs(120);
        while Instant::now() < deadline {
            if let Ok(m) = self.rx.recv_timeout(Duration::from_secs(1)) {
                self.seen.borrow_mut().push(m.clone());
                if matches(&m) {
                    return m;
                }
            }
        }
        panic!("{what} did not arrive; got: {:?}", self.seen.borrow());
    }
}

/// Waits for a webhook of `event` about `job` (any job when empty).
fn wait_job_event(hooks: &Inbox<serde_json::Value>, event: &str, job: &str) -> serde_json::Value {
    hooks.wait(&format!("a `{event}` webhook about `{job}`"), |v| {
        v["event"] == event && (job.is_empty() || v["job"] == job)
    })
}

fn wait_mail(mails: &Inbox<String>, needle: &str) -> String {
    mails.wait(&format!("a mail containing `{needle}`"), |m| {
        m.contains(needle)
    })
}

/// `GET /` with an `Authorization` header value.
fn get_page(port: u16, auth: Option<&str>) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let auth = auth.map_or(String::new(), |a| format!("Authorization: {a}\r\n"));
    write!(
        s,
        "GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n{auth}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    (code, head.to_owned(), body.to_owned())
}

fn chromium() -> PathBuf {
    for p in ["/usr/bin/chromium", "/usr/bin/chromium-browser"] {
        if Path::new(p).exists() {
            return PathBuf::from(p);
        }
    }
    panic!("chromium is not installed: run ./scripts/test.sh (apt-get install chromium)");
}

/// Headless Chromium with a fresh profile in `profile`, loading `url`
/// with the option `extra` (`--dump-dom`, `--screenshot=FILE`).
pub(crate) fn chromium_run(profile: &Path, url: &str, extra: &str) -> std::process::Output {
    let common = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--no-first-run",
        "--enable-logging=stderr",
        "--v=0",
        "--window-size=1280,2400",
        "--virtual-time-budget=3000",
    ];
    let out = Command::new(chromium())
        .args(common)
        .arg(format!("--user-data-dir={}", profile.display()))
        .arg(extra)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "chromium failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Loads the page in headless Chromium: returns the DOM and Chromium's
/// log, and saves a screenshot.
fn browse(url: &str, screenshot: &Path) -> (String, String) {
    let profile = tempfile::tempdir().unwrap();
    let run = |extra: &str| chromium_run(profile.path(), url, extra);
    let dom = run("--dump-dom");
    let shot = run(&format!("--screenshot={}", screenshot.display()));
    (
        String::from_utf8_lossy(&dom.stdout).into_owned(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&dom.stderr),
            String::from_utf8_lossy(&shot.stderr)
        ),
    )
}

/// Drills on a schedule: a passing one and a failing one (a check and its
/// RTO), with notifications, metrics, `storage_low`, the scheduled report,
/// the status page in a browser, and the shipped rules and dashboard.
#[test]
fn scheduled_drills_alerts_status_page_and_report() {
    let s = Scratch::new();
    s.init();
    let (good_src, bad_src) = (s.path("good"), s.path("bad"));
    write(&good_src.join("a.txt"), b"good data");
    write(&bad_src.join("b.txt"), b"bad data");
    let scratch = s.path("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let port = backup_testkit::free_port();
    let (hook_port, hooks) = webhook_receiver();
    let (smtp_port, mails) = smtp_receiver();
    let (hooks, mails) = (Inbox::new(hooks), Inbox::new(mails));
    let rest = format!(
        r#"
[jobs.good]
repository = "main"
source = "{good}"
schedule = "0 0 1 1 *"
max_age = "400d"

[jobs.good.drill]
schedule = "*/3 * * * * *"
target = "{scratch}"
max_rto = "10m"

[jobs.bad]
repository = "main"
source = "{bad}"
schedule = "0 0 1 1 *"

[jobs.bad.drill]
schedule = "*/3 * * * * *"
target = "{scratch}"
max_rto = "1ms"

[[jobs.bad.drill.checks]]
type = "command"
command = ["sh", "-c", "echo the smoke test found no orders; exit 1"]

[report]
schedule = "*/5 * * * * *"
since = "30d"
"#,
        good = good_src.display(),
        bad = bad_src.display(),
        scratch = scratch.display()
    );
    let cfg = daemon_config(&s, port, hook_port, smtp_port, &rest);
    // Any disk is "low" against a limit of 99.99% free.
    let text = std::fs::read_to_string(&cfg).unwrap().replace(
        "password = { env = \"BACKUP_PASSWORD\" }\n",
        "password = { env = \"BACKUP_PASSWORD\" }\nmin_free = \"99.99%\"\n",
    );
    std::fs::write(&cfg, text).unwrap();
    let cfg_s = cfg.to_str().unwrap();
    for job in ["good", "bad"] {
        s.ok(&["--config", cfg_s, "create", "--job", job]);
    }
    let d = start(&s, &cfg, port);

    // Notifications: the failing drill, its RTO, the storage.
    let failed = wait_job_event(&hooks, "drill_failed", "bad");
    assert!(
        failed["details"]
            .as_str()
            .unwrap()
            .contains("the smoke test found no orders"),
        "{failed}"
    );
    let rto = wait_job_event(&hooks, "rto_exceeded", "bad");
    assert!(
        rto["details"].as_str().unwrap().contains("max_rto"),
        "{rto}"
    );
    let low = wait_job_event(&hooks, "storage_low", "");
    assert!(
        low["details"].as_str().unwrap().contains("under its limit"),
        "{low}"
    );
    let mail = wait_mail(&mails, "Restore drill of job bad failed");
    assert!(mail.contains("drill_failed"), "{mail}");

    // Metrics and the status API.
    d.wait_for("a passing drill of good", Duration::from_secs(90), || {
        metric(&d.metrics(), "backupd_drill_last_ok{job=\"good\"}") == Some(1.0)
    });
    let m = d.metrics();
    assert_eq!(
        metric(&m, "backupd_drill_last_ok{job=\"bad\"}"),
        Some(0.0),
        "{m}"
    );
    assert!(metric(&m, "backupd_drill_last_rto_seconds{job=\"good\"}").unwrap() > 0.0);
    assert!(metric(&m, "backupd_drill_last_rpo_seconds{job=\"good\"}").unwrap() > 0.0);
    assert!(metric(
        &m,
        "backupd_drill_last_success_timestamp_seconds{job=\"good\"}"
    )
    .is_some());
    assert!(metric(
        &m,
        "backupd_drill_last_success_timestamp_seconds{job=\"bad\"}"
    )
    .is_none());
    assert!(metric(&m, "backupd_repository_free_bytes{repository=\"main\"}").is_some());
    let job = d.job("bad");
    assert_eq!(job["last_drill"]["ok"], false, "{job}");

    // The report, mailed as HTML and posted as Markdown with its data.
    let report = wait_job_event(&hooks, "report", "");
    let text = report["text"].as_str().unwrap();
    assert!(
        text.contains("| good |") && text.contains("| bad |"),
        "{text}"
    );
    assert!(report["report"]["jobs"].as_array().unwrap().len() == 2);
    let mail = wait_mail(&mails, "Backup report");
    assert!(mail.to_ascii_lowercase().contains("text/html"), "{mail}");

    // The status page: behind a token, read-only token allowed.
    let (code, head, _) = get_page(port, None);
    assert_eq!(code, 401);
    assert!(
        head.to_ascii_lowercase()
            .contains("www-authenticate: basic"),
        "{head}"
    );
    assert_eq!(get_page(port, Some("Bearer wrong")).0, 401);
    let (code, head, page) = get_page(port, Some(&format!("Bearer {TOKEN}")));
    assert_eq!(code, 200, "{page}");
    let timing: f64 = head
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("server-timing: render;dur=")
                .map(str::to_owned)
        })
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(timing < 200.0, "rendering took {timing} ms");
    for needle in [
        "good",
        "bad",
        "Drills: RTO",
        "<svg",
        "the smoke test found no orders",
        "Recent audit records",
        "drill",
    ] {
        assert!(page.contains(needle), "the page lacks {needle}");
    }
    assert!(!page.contains("http://") && !page.contains("https://") && !page.contains("src="));
    use base64::Engine as _;
    let basic = base64::engine::general_purpose::STANDARD.encode(format!("viewer:{READ_TOKEN}"));
    assert_eq!(get_page(port, Some(&format!("Basic {basic}"))).0, 200);
    let (code, _) = http(port, "POST", "/api/jobs/good/run", Some(READ_TOKEN)).unwrap();
    assert_eq!(code, 403, "the read token (a viewer) cannot trigger runs");

    // In a real browser: it renders, shows the jobs, loads nothing else.
    let shot = Path::new(env!("CARGO_TARGET_TMPDIR")).join("status-page.png");
    let _ = std::fs::remove_file(&shot);
    let (dom, log) = browse(
        &format!("http://viewer:{READ_TOKEN}@127.0.0.1:{port}/"),
        &shot,
    );
    assert!(
        dom.contains("Jobs") && dom.contains("good") && dom.contains("bad"),
        "{dom}"
    );
    assert!(dom.contains("<svg"), "charts rendered");
    assert!(
        !log.contains("Refused to"),
        "the page tried to load something: {log}"
    );
    let png = std::fs::read(&shot).unwrap();
    assert_eq!(&png[..8], b"\x89PNG\r\n\x1a\n");
    assert!(
        png.len() > 20_000,
        "a blank screenshot? {} bytes",
        png.len()
    );
    println!("status page screenshot: {}", shot.display());

    // The shipped rules and dashboard use metrics the daemon exports.
    let names: Vec<String> = m
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_owned)
        .collect();
    let exported = |n: &str| {
        names
            .iter()
            .any(|e| n == e || n.strip_suffix("_total") == Some(e.as_str()))
    };
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    for file in ["dist/prometheus-alerts.yml", "dist/grafana-dashboard.json"] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let mut used: Vec<&str> = text
            .match_indices("backupd_")
            .map(|(i, _)| {
                let rest = &text[i..];
                let end = rest
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(rest.len());
                &rest[..end]
            })
            .collect();
        used.sort_unstable();
        used.dedup();
        assert!(used.len() > 5, "{file}");
        for n in used {
            assert!(
                exported(n),
                "{file} uses {n}, which /metrics does not export"
            );
        }
    }
    let (code, _) = d.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(60));
    assert_eq!(code, 0);
    assert!(
        std::fs::read_dir(&scratch).unwrap().next().is_none(),
        "a drill's scratch copy was left behind"
    );

    // The CLI's report reads the same history from the repository.
    let md = s.ok(&["--config", cfg_s, "report", "--format", "markdown"]);
    assert!(md.contains("| good |") && md.contains("| bad |"), "{md}");
    let v = s.json(&["--config", cfg_s, "report"]);
    let bad = v["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .find(|j| j["history"]["name"] == "bad")
        .unwrap();
    assert!(bad["summary"]["drills"].as_u64().unwrap() >= 1, "{bad}");
    assert_eq!(bad["summary"]["drills_passed"], 0);
    assert_eq!(bad["summary"]["rto_met"], false);
}

/// `promtool check rules` accepts the shipped alerting rules.
#[test]
fn prometheus_rules_pass_promtool() {
    let rules = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/prometheus-alerts.yml");
    let out = Command::new("promtool")
        .args(["check", "rules"])
        .arg(&rules)
        .output()
        .unwrap_or_else(|e| {
            panic!("promtool is missing ({e}): run ./scripts/test.sh (apt-get install prometheus)")
        });
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let dash: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../dist/grafana-dashboard.json"),
        )
        .unwrap(),
    )
    .unwrap();
    assert!(dash["panels"].as_array().unwrap().len() > 8);
}

/// A run slowed down by a paused Redis, and a run that adds far more than
/// usual, each raise their anomaly alert.
#[test]
fn anomalies_from_an_injected_delay_and_a_size_jump() {
    let redis = RedisServer::start();
    let mut con = redis.connection();
    for i in 0..100 {
        let _: () = redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .query(&mut con)
            .unwrap();
    }
    let s = Scratch::new();
    s.init();
    let src = s.path("docs");
    write(&src.join("a.txt"), b"small");
    let port = backup_testkit::free_port();
    let (hook_port, hooks) = webhook_receiver();
    let hooks = Inbox::new(hooks);
    let (smtp_port, _mails) = smtp_receiver();
    let rest = format!(
        r#"
[alerts]
min_runs = 3
min_duration = "300ms"

[jobs.cache]
repository = "main"
source = "{redis}"
schedule = "0 0 1 1 *"

[jobs.docs]
repository = "main"
source = "{docs}"
schedule = "0 0 1 1 *"
"#,
        redis = redis.url(),
        docs = src.display()
    );
    let cfg = daemon_config(&s, port, hook_port, smtp_port, &rest);
    let d = start(&s, &cfg, port);
    let run = |job: &str, n: u64| {
        let (code, body) =
            http(port, "POST", &format!("/api/jobs/{job}/run"), Some(TOKEN)).unwrap();
        assert_eq!(code, 202, "{body}");
        d.wait_for(
            &format!("run {n} of {job}"),
            Duration::from_secs(60),
            || d.job(job)["successes_total"].as_u64().unwrap_or(0) >= n,
        );
    };
    for n in 1..=3 {
        run("cache", n);
        run("docs", n);
    }
    // A size jump.
    write(&src.join("big.bin"), &random_bytes(12_000_000, 5));
    run("docs", 4);
    let v = wait_job_event(&hooks, "size_anomaly", "docs");
    assert!(v["details"].as_str().unwrap().contains("added"), "{v}");
    // A delay: every client of the server paused for 2.5 s.
    let url = redis.url();
    let pauser = std::thread::spawn(move || {
        let client = redis::Client::open(url).unwrap();
        let mut c = client.get_connection().unwrap();
        let _: () = redis::cmd("CLIENT")
            .arg("PAUSE")
            .arg(2500)
            .arg("ALL")
            .query(&mut c)
            .unwrap();
    });
    pauser.join().unwrap();
    run("cache", 4);
    let v = wait_job_event(&hooks, "duration_anomaly", "cache");
    assert!(
        v["details"]
            .as_str()
            .unwrap()
            .contains("median of the last 3 runs"),
        "{v}"
    );
    let _ = PASSWORD;
}

/// `backup report` over a history made for the test: known runs, a
/// failure, restore points and a drill give known numbers.
#[test]
fn report_of_a_known_history() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    write(&src.join("a.txt"), b"one");
    let scratch = s.path("scratch");
    std::fs::create_dir(&scratch).unwrap();
    let cfg = s.path("backup.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repositories.main]\nurl = \"{}\"\npassword = {{ env = \"BACKUP_PASSWORD\" }}\n\n\
             [jobs.docs]\nrepository = \"main\"\nsource = \"{}\"\nschedule = \"0 * * * *\"\nmax_age = \"2h\"\n\n\
             [jobs.docs.drill]\ntarget = \"{}\"\nmax_rto = \"10m\"\n\n\
             [jobs.gone]\nrepository = \"main\"\nsource = \"{}\"\nschedule = \"0 * * * *\"\n",
            s.repo,
            src.display(),
            scratch.display(),
            s.path("missing").display()
        ),
    )
    .unwrap();
    let cfg_s = cfg.to_str().unwrap();
    let now = chrono::Utc::now();
    for hours_ago in [10, 9, 5] {
        let t = (now - chrono::Duration::hours(hours_ago)).to_rfc3339();
        s.ok(&["--config", cfg_s, "create", "--job", "docs", "--time", &t]);
    }
    s.fails(&["--config", cfg_s, "create", "--job", "gone"], 1);
    s.ok(&["--config", cfg_s, "drill", "docs"]);
    let v = s.json(&["--config", cfg_s, "report", "--since", "1d"]);
    let job = |name: &str| {
        v["jobs"]
            .as_array()
            .unwrap()
            .iter()
            .find(|j| j["history"]["name"] == name)
            .unwrap()
            .clone()
    };
    let docs = job("docs");
    let sm = &docs["summary"];
    assert_eq!(sm["runs"], 3, "{sm}");
    assert_eq!(sm["success_rate"], 1.0);
    assert_eq!(sm["restore_points"], 3);
    assert_eq!(sm["drills"], 1);
    assert_eq!(sm["drills_passed"], 1);
    assert_eq!(sm["rto_met"], true);
    // The longest stretch without a restore point: the 5 hours since the
    // last backup, more than max_age (2h).
    let worst = sm["worst_rpo_seconds"].as_f64().unwrap();
    assert!((5.0 * 3600.0..5.1 * 3600.0).contains(&worst), "{worst}");
    assert_eq!(sm["rpo_met"], false);
    let gone = job("gone");
    assert_eq!(gone["summary"]["failed"], 1, "{gone}");
    assert_eq!(gone["summary"]["success_rate"], 0.0);
    let html = s.ok(&["--config", cfg_s, "report", "--format", "html"]);
    assert!(
        html.starts_with("<!DOCTYPE html>") && html.contains("<svg"),
        "{html}"
    );
    let out = s.path("report.md");
    s.ok(&[
        "--config",
        cfg_s,
        "report",
        "--format",
        "markdown",
        "--output",
        out.to_str().unwrap(),
    ]);
    let md = std::fs::read_to_string(out).unwrap();
    assert!(md.contains("| docs | 3 | 100.0% |"), "{md}");
    assert!(md.contains("(MISSED)"), "{md}");
    let e = s.fails(&["--config", cfg_s, "report", "--since", "soon"], 2);
    assert!(e.contains("not a duration"), "{e}");
    let e = s.fails(&["--config", cfg_s, "report", "--format", "pdf"], 2);
    assert!(e.contains("pdf"), "{e}");
}

/// `GET path` with extra request headers; the status, the response head
/// and the body.
fn get(port: u16, path: &str, headers: &[(&str, &str)]) -> (u16, String, String) {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut extra = String::new();
    for (k, v) in headers {
        for part in [*k, ": ", *v, "\r\n"] {
            extra.push_str(part);
        }
    }
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{extra}Connection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    let code = resp.split_whitespace().nth(1).unwrap().parse().unwrap();
    let (head, body) = resp.split_once("\r\n\r\n").unwrap_or((&resp, ""));
    (code, head.to_owned(), body.to_owned())
}

/// A daemon with both tokens and one files job with a drill but no
/// schedules that would run during a test; `check_interval` as given.
fn files_drill_config(s: &Scratch, port: u16, check_interval: &str) -> PathBuf {
    let src = s.path("src");
    write(&src.join("a.txt"), b"drilled by the command line");
    let scratch = s.path("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let text = format!(
        r#"
[daemon]
listen = "127.0.0.1:{port}"
check_interval = "{check_interval}"
api_token = {{ env = "BACKUPD_TOKEN" }}
read_token = {{ env = "BACKUPD_READ" }}

[repositories.main]
url = "{repo}"
password = {{ env = "BACKUP_PASSWORD" }}

[jobs.files]
repository = "main"
source = "{src}"
schedule = "0 0 3 1 1 *"

[jobs.files.drill]
target = "{scratch}"
"#,
        repo = s.repo,
        src = src.display(),
        scratch = scratch.display(),
    );
    let path = s.path("backupd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// Drills the CLI runs while the daemon is up reach `/api/jobs`,
/// `/metrics` and the status page on SIGHUP (and every `check_interval`,
/// the same code), passed and failed alike (issue 28, items 12 and 13);
/// the page's drill count is the report's.
#[test]
fn drills_run_by_the_cli_reach_the_running_daemon() {
    let s = Scratch::new();
    s.init();
    let port = backup_testkit::free_port();
    let cfg = files_drill_config(&s, port, "1h");
    let cfg_s = cfg.to_str().unwrap();
    s.ok(&["--config", cfg_s, "create", "--job", "files"]);
    let d = start(&s, &cfg, port);
    let hup = |d: &Daemon| {
        let pid = nix::unistd::Pid::from_raw(d.child.id() as i32);
        nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGHUP).unwrap();
    };
    let drill = |args: &[&str], code: i32| -> String {
        let mut a = vec!["--json", "--config", cfg_s, "drill", "files"];
        a.extend_from_slice(args);
        let out = s.run(&a);
        assert_eq!(
            out.status.code(),
            Some(code),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        v["id"].as_str().unwrap().to_owned()
    };
    let picked_up = |d: &Daemon, id: &str, ok: f64| {
        d.wait_for(
            "the CLI's drill in /api/jobs",
            Duration::from_secs(60),
            || d.job("files")["last_drill"]["record"] == id,
        );
        assert_eq!(
            metric(&d.metrics(), "backupd_drill_last_ok{job=\"files\"}"),
            Some(ok),
            "{}",
            d.metrics()
        );
    };

    let passed = drill(&[], 0);
    hup(&d);
    picked_up(&d, &passed, 1.0);
    // A drill that fails before restoring anything is recorded, and the
    // daemon shows it as the last drill.
    let failed = drill(&["--point", "random"], 1);
    hup(&d);
    picked_up(&d, &failed, 0.0);
    let last = d.job("files")["last_drill"].clone();
    assert_eq!(last["ok"], false, "{last}");
    assert!(
        last["error"].as_str().unwrap().contains("base backup"),
        "{last}"
    );

    let report = s.json(&[
        "--config", cfg_s, "report", "--since", "30d", "--format", "json",
    ]);
    let summary = &report["jobs"][0]["summary"];
    assert_eq!(
        (
            summary["drills"].as_u64(),
            summary["drills_passed"].as_u64()
        ),
        (Some(2), Some(1)),
        "{summary}"
    );
    let (code, _, page) = get(
        port,
        "/",
        &[("Authorization", &format!("Bearer {READ_TOKEN}"))],
    );
    assert_eq!(code, 200);
    assert!(page.contains("<dt>Drills</dt><dd>2 (1 passed)"), "{page}");
}

/// One rule for reading state: `/api/jobs` needs a token as the status
/// page does; `/metrics` passes `promtool check metrics` in the
/// Prometheus text format (what `curl` and `promtool` get) and parses as
/// `OpenMetrics` for a Prometheus scraper (issue 28, items 14 and 17).
#[test]
fn api_reads_need_a_token_and_metrics_pass_promtool() {
    let s = Scratch::new();
    s.init();
    let port = backup_testkit::free_port();
    let cfg = files_drill_config(&s, port, "1h");
    s.ok(&[
        "--config",
        cfg.to_str().unwrap(),
        "create",
        "--job",
        "files",
    ]);
    let d = start(&s, &cfg, port);

    for path in ["/api/jobs", "/api/jobs/files"] {
        assert_eq!(get(port, path, &[]).0, 401, "{path}");
        let wrong = get(port, path, &[("Authorization", "Bearer wrong")]);
        assert_eq!(wrong.0, 401, "{path}");
        for token in [TOKEN, READ_TOKEN] {
            let bearer = format!("Bearer {token}");
            let (code, _, body) = get(port, path, &[("Authorization", &bearer)]);
            assert_eq!(code, 200, "{path}: {body}");
            assert!(body.contains("\"files\""), "{body}");
        }
    }
    assert_eq!(get(port, "/healthz", &[]).0, 200);

    let promtool = |input: &str, args: &[&str]| {
        use std::io::Write;
        let mut child = Command::new("promtool")
            .args(args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("promtool is missing ({e}): run ./scripts/test.sh"));
        child
            .stdin
            .take()
            .unwrap()
            .write_all(input.as_bytes())
            .unwrap();
        child.wait_with_output().unwrap()
    };
    for accept in [None, Some("text/plain;version=0.0.4"), Some("*/*")] {
        let headers: Vec<(&str, &str)> = accept.iter().map(|a| ("Accept", *a)).collect();
        let (code, head, text) = get(port, "/metrics", &headers);
        assert_eq!(code, 200);
        assert!(
            head.to_ascii_lowercase()
                .contains("content-type: text/plain; version=0.0.4"),
            "{accept:?}: {head}"
        );
        assert!(
            text.contains("backupd_job_successes_total{job=\"files\"}"),
            "{text}"
        );
        let out = promtool(&text, &["check", "metrics"]);
        let said = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success() && said.trim().is_empty(),
            "{said}\n{text}"
        );
    }

    // Prometheus' own scrape header gets OpenMetrics, which promtool's
    // OpenMetrics parser reads (it needs a timestamp on every sample).
    let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
    let (code, head, om) = get(port, "/metrics", &[("Accept", prometheus)]);
    assert_eq!(code, 200);
    assert!(
        head.to_ascii_lowercase()
            .contains("content-type: application/openmetrics-text"),
        "{head}"
    );
    assert!(om.ends_with("# EOF\n"), "{om}");
    let stamped: String = om
        .lines()
        .map(|l| {
            if l.starts_with('#') {
                format!("{l}\n")
            } else {
                format!("{l} 1700000000\n")
            }
        })
        .collect();
    let input = s.path("metrics.om");
    std::fs::write(&input, stamped).unwrap();
    let out = Command::new("promtool")
        .args(["tsdb", "create-blocks-from", "openmetrics"])
        .arg(&input)
        .arg(s.path("blocks"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}\n{om}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    drop(d);
}
