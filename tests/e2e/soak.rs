//! A soak of the daemon (issue 32): `backupd` with a files job run on
//! request over and over and a Redis job under continuous capture, into an
//! S3 repository whose server fails every 11th request (refused, or a
//! `PUT` applied and its response lost), while writers change both
//! sources. It runs `BACKUP_SOAK_SECONDS` (40 in CI; `scripts/soak.sh`
//! runs hours) and samples the daemon's resident memory and open files
//! every second.
//!
//! Checks: every requested run succeeds and none fails; the capture keeps
//! streaming; memory and open files stop growing after the warm-up (the
//! highest sample of the last half is at most 1.25 times that of the
//! second quarter plus 16 MiB; the median of open files in the last half
//! at most 8 more than the peak of the second quarter); SIGTERM ends the daemon
//! with exit 0; `verify --read-data` passes; the newest files snapshot
//! restores to the tree and a Redis restore to the end of the capture
//! equals the source. The figures are printed (and appended to
//! `BACKUP_SOAK_REPORT` when set).

use std::time::{Duration, Instant};

use backup_testkit::redis::RedisServer;
use backup_testkit::s3::S3Server;

use crate::daemon::{config, files_job, http, metric, Daemon, TOKEN};
use crate::util::{assert_same_tree, random_bytes, write, Scratch};

/// One sample of the daemon process.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rss_kib: u64,
    fds: usize,
}

fn sample(pid: u32) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let rss_kib = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0);
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count);
    Sample { rss_kib, fds }
}

/// The open files of process `pid` by kind (`socket`, `pipe`, a path's
/// directory…), counted.
fn open_files(pid: u32) -> String {
    let mut kinds: std::collections::BTreeMap<String, usize> = std::collections::BTreeMap::new();
    for e in std::fs::read_dir(format!("/proc/{pid}/fd"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let target = std::fs::read_link(e.path())
            .map_or_else(|_| "?".to_owned(), |t| t.to_string_lossy().into_owned());
        let kind = target.split(':').next().unwrap_or("?").to_owned();
        *kinds.entry(kind).or_default() += 1;
    }
    kinds
        .iter()
        .map(|(k, n)| format!("{k} {n}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn soak_seconds() -> u64 {
    std::env::var("BACKUP_SOAK_SECONDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(40)
}

#[test]
fn daemon_soak_with_s3_faults() {
    let server = S3Server::start_with_faults(11);
    let s = Scratch::with_repo(server.url("soak"), server.env());
    s.init();
    let redis = RedisServer::start();
    let src = s.path("src");
    for i in 0..20u64 {
        write(&src.join(format!("f{i:02}")), &random_bytes(64 * 1024, i));
    }
    let port = backup_testkit::free_port();
    let jobs = format!(
        "{}\n[jobs.cache]\nrepository = \"main\"\nsource = \"{}\"\nschedule = \"0 0 1 1 *\"\ncapture = \"continuous\"\n",
        files_job(&src, "0 0 1 1 *"),
        redis.url()
    );
    let cfg = config(&s, "backupd.toml", port, &jobs, "");
    let env: Vec<(String, String)> = server.env();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let d = Daemon::spawn(&s, &cfg, port, "daemon.log", &env);
    d.wait_for("daemon listening", Duration::from_secs(60), || {
        http(port, "GET", "/healthz", None).is_some()
    });
    let streaming = "backupd_capture_streaming{job=\"cache\",kind=\"redis-stream\"}";
    d.wait_for("the follower to stream", Duration::from_secs(60), || {
        metric(&d.metrics(), streaming) == Some(1.0)
    });
    let successes = |d: &Daemon, job: &str| {
        metric(
            &d.metrics(),
            &format!("backupd_job_successes_total{{job=\"{job}\"}}"),
        )
        .unwrap_or(0.0) as u64
    };

    let seconds = soak_seconds();
    let start = Instant::now();
    let mut con = redis.connection();
    let mut writes = 0u64;
    let mut requested = 0u64;
    let mut samples = Vec::new();
    let mut last_sample = Instant::now();
    let mut round = 0u64;
    while start.elapsed() < Duration::from_secs(seconds) {
        redis::cmd("INCR").arg("counter").exec(&mut con).unwrap();
        writes += 1;
        round += 1;
        if round % 10 == 0 {
            write(
                &src.join(format!("f{:02}", round / 10 % 20)),
                &random_bytes(64 * 1024, 1000 + round),
            );
        }
        // A new run once the last one requested has finished.
        if successes(&d, "files") == requested
            && d.job("files")["running"] == false
            && http(port, "POST", "/api/jobs/files/run", Some(TOKEN))
                .is_some_and(|(code, _)| code == 202)
        {
            requested += 1;
        }
        if last_sample.elapsed() >= Duration::from_secs(1) {
            samples.push(sample(d.child.id()));
            last_sample = Instant::now();
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // A last run of the tree as it is now, then the capture's end.
    d.wait_for("the last requested run", Duration::from_secs(120), || {
        successes(&d, "files") == requested && d.job("files")["running"] == false
    });
    assert!(http(port, "POST", "/api/jobs/files/run", Some(TOKEN)).is_some_and(|(c, _)| c == 202));
    requested += 1;
    d.wait_for("the final run", Duration::from_secs(120), || {
        successes(&d, "files") == requested
    });
    let end = crate::redis_pitr::repl_offset(&mut con);
    let stored = "backupd_capture_stored_position{job=\"cache\",kind=\"redis-stream\"}";
    d.wait_for("the writes to be stored", Duration::from_secs(60), || {
        metric(&d.metrics(), stored).is_some_and(|p| p >= end as f64)
    });
    let failures = metric(&d.metrics(), "backupd_job_failures_total{job=\"files\"}");
    let newest = d.job("files")["last_run"]["snapshot"]
        .as_str()
        .unwrap()
        .to_owned();
    let open = open_files(d.child.id());
    let (code, _) = d.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(60));
    assert_eq!(code, 0);

    // Memory and open files after the warm-up.
    let n = samples.len();
    assert!(n >= 8, "too few samples: {samples:?}");
    let peak = |part: &[Sample]| {
        (
            part.iter().map(|s| s.rss_kib).max().unwrap_or(0),
            part.iter().map(|s| s.fds).max().unwrap_or(0),
        )
    };
    let (rss_warm, fds_warm) = peak(&samples[n / 4..n / 2]);
    let (rss_late, fds_peak) = peak(&samples[n / 2..]);
    // Open files: the median of the last half (connections pooled for a
    // burst of uploads close when idle; a leak raises the median too).
    let mut late: Vec<usize> = samples[n / 2..].iter().map(|s| s.fds).collect();
    late.sort_unstable();
    let fds_late = late[late.len() / 2];
    let series: Vec<String> = samples
        .iter()
        .step_by((n / 12).max(1))
        .map(|s| format!("{}/{}", s.rss_kib / 1024, s.fds))
        .collect();
    let line = format!(
        "soak {seconds}s: {requested} files runs, {writes} Redis writes, {} S3 faults; peak RSS {} MiB after warm-up, {} MiB in the last half; open files: peak {fds_warm} after warm-up, median {fds_late} (peak {fds_peak}) in the last half; MiB/files over time {}; open at the end: {open}",
        server.faults(),
        rss_warm / 1024,
        rss_late / 1024,
        series.join(" ")
    );
    crate::util::report_line("BACKUP_SOAK_REPORT", &line);
    assert!(failures.unwrap_or(0.0) < 0.5, "runs failed: {line}");
    assert!(
        rss_late <= rss_warm + rss_warm / 4 + 16 * 1024,
        "memory grows: {line}"
    );
    assert!(fds_late <= fds_warm + 8, "open files grow: {line}");
    assert!(server.faults() > 0, "{line}");

    s.ok(&["verify", "--read-data"]);
    let restored = s.path("restored");
    s.ok(&["restore", &newest, "--to", restored.to_str().unwrap()]);
    assert_same_tree(&src, &restored);
    let target = RedisServer::start();
    s.ok(&[
        "restore",
        "--at-offset",
        &end.to_string(),
        "--to",
        &target.url(),
    ]);
    let counter: u64 = redis::cmd("GET")
        .arg("counter")
        .query(&mut target.connection())
        .unwrap();
    assert_eq!(counter, writes);
}
