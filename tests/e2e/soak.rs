//! A soak of the daemon (issue 32): `backupd` with four scheduled jobs,
//! files, PostgreSQL (physical, its WAL streamed), MongoDB (its oplog
//! followed) and Redis (its replication stream followed), each with
//! retention and prune after every run and a scheduled drill (a random
//! point of the window for PostgreSQL and MongoDB), into an S3
//! repository whose server fails every 11th request (refused, or a `PUT`
//! applied and its response lost), while writers change every source.
//! It runs `BACKUP_SOAK_SECONDS` (60 in CI; `benches/soak.sh` runs 30
//! minutes or hours) with backups every `BACKUP_SOAK_JOB_EVERY` seconds
//! (20; 60 in the bench) and drills every `BACKUP_SOAK_DRILL_EVERY` (60;
//! 300 in the bench), and samples the daemon's resident memory, open files
//! and threads every second.
//!
//! Checks: no scheduled slot was skipped, nor missed unless a run of its
//! job outlasted the interval (a loaded machine; such slots are counted
//! in the report); every job's last run (a final one is requested of
//! each) succeeded, so any failed run
//! recovered; every drill passed (but those within a backup interval of
//! the job's first backup, which may find no snapshot or too short a
//! window, and are counted); each captured stream has a restorable
//! window and no gap; memory, open files and threads stop growing after
//! the warm-up (the median of the last half at most 1.25 times the peak
//! of the second quarter plus 16 MiB, 8 files, 4 threads; judged when the
//! run is at least four drill intervals long, as the bench's is, not in
//! CI's minute, whose figures are only reported); SIGTERM ends the
//! daemon with exit 0; `verify --read-data` passes; the newest files
//! snapshot restores to the tree and a Redis restore to the end of the
//! capture equals the source. The figures are printed (and appended to
//! `BACKUP_SOAK_REPORT` when set).

use std::path::Path;
use std::time::{Duration, Instant};

use backup_testkit::mongo::MongoServer;
use backup_testkit::postgres::{PgCluster, PASSWORD as PG_PASSWORD};
use backup_testkit::redis::RedisServer;
use backup_testkit::s3::S3Server;
use mongodb::bson::{doc, Document};

use crate::daemon::{http, metric, Daemon, TOKEN};
use crate::util::{assert_same_tree, random_bytes, write, Scratch};

/// The soak's jobs, as named in the configuration.
const JOBS: [&str; 4] = ["files", "db", "mongo", "cache"];

/// The jobs drilled at a random point of their window, with what they
/// capture.
const POINT_DRILLS: [(&str, &str); 2] = [("db", "postgres-wal"), ("mongo", "mongodb-oplog")];

/// Whether the repository holds a window of capture `kind` reaching past
/// the second it starts in (what a drill at a random point needs). A
/// listing that fails (an injected S3 fault) says no: the caller asks
/// again a second later.
fn has_a_second_to_pick(s: &Scratch, kind: &str) -> bool {
    let Ok(out) = s.cmd().args(["--json", "pitr"]).output() else {
        return false;
    };
    let Ok(listing) = serde_json::from_slice::<serde_json::Value>(&out.stdout) else {
        return false;
    };
    let second = |w: &serde_json::Value, at: &str| {
        w[at]
            .as_str()
            .and_then(|t| t.parse::<chrono::DateTime<chrono::Utc>>().ok())
            .map(|t| t.timestamp())
    };
    listing
        .as_array()
        .into_iter()
        .flatten()
        .filter(|st| st["capture"] == kind)
        .flat_map(|st| st["windows"].as_array().into_iter().flatten())
        .any(|w| matches!((second(w, "from_time"), second(w, "to_time")), (Some(f), Some(t)) if t > f))
}

/// One sample of the daemon process.
#[derive(Debug, Clone, Copy)]
struct Sample {
    rss_kib: u64,
    fds: u64,
    threads: u64,
}

fn sample(pid: u32) -> Sample {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let field = |name: &str| -> u64 {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, Iterator::count) as u64;
    Sample {
        rss_kib: field("VmRSS:"),
        fds,
        threads: field("Threads:"),
    }
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

fn env_secs(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A 6-field cron expression firing every `every` seconds, `offset`
/// seconds into each period: `every` divides a minute or is whole minutes
/// dividing an hour.
fn cron_every(every: u64, offset: u64) -> String {
    if every < 60 {
        assert!(60 % every == 0, "{every} s does not divide a minute");
        format!("{}/{every} * * * * *", offset % every)
    } else {
        assert!(
            every % 60 == 0 && 3600 % every == 0,
            "{every} s is not whole minutes dividing an hour"
        );
        format!("{} */{} * * * *", offset % 60, every / 60)
    }
}

/// The daemon's configuration: the four jobs with retention, prune and
/// drills on the given cadence.
#[allow(clippy::too_many_arguments)] // One place that names every source.
fn soak_config(
    s: &Scratch,
    port: u16,
    job_every: u64,
    drill_every: u64,
    src: &Path,
    pg: &PgCluster,
    pg_scratch: &Path,
    mongo: &MongoServer,
    mongo_scratch: &MongoServer,
    redis: &RedisServer,
) -> std::path::PathBuf {
    let files_drill = s.path("files-drill");
    std::fs::create_dir_all(&files_drill).unwrap();
    let job = |name: &str, offset: u64, body: &str, drill: &str| {
        format!(
            "[jobs.{name}]\nrepository = \"main\"\nschedule = \"{}\"\n{body}\n\
             [jobs.{name}.retention]\nkeep_last = 3\nprune = true\n\n\
             [jobs.{name}.drill]\nschedule = \"{}\"\n{drill}\n",
            cron_every(job_every, offset),
            cron_every(drill_every, offset + job_every / 2),
        )
    };
    let jobs = [
        job(
            "files",
            0,
            &format!("source = \"{}\"", src.display()),
            &format!("target = \"{}\"", files_drill.display()),
        ),
        job(
            "db",
            job_every / 4,
            &format!(
                "source = \"postgres://postgres@127.0.0.1:{}/postgres?mode=physical\"\n\
                 source_password = {{ env = \"PGPW\" }}\nwal_flush = \"1s\"",
                pg.port()
            ),
            &format!("target = \"{}\"\npoint = \"random\"", pg_scratch.display()),
        ),
        job(
            "mongo",
            job_every / 2,
            &format!("source = \"{}\"\noplog = \"continuous\"", mongo.url("")),
            &format!("target = \"{}\"\npoint = \"random\"", mongo_scratch.url("")),
        ),
        job(
            "cache",
            job_every * 3 / 4,
            &format!("source = \"{}\"\ncapture = \"continuous\"", redis.url()),
            "",
        ),
    ];
    let text = format!(
        r#"
[daemon]
listen = "127.0.0.1:{port}"
max_concurrent_jobs = 4
shutdown_grace = "60s"
check_interval = "1s"
api_token = {{ env = "BACKUPD_TOKEN" }}
lock_wait = "5m"

[daemon.retry]
attempts = 3
initial_backoff = "1s"
max_backoff = "4s"

[repositories.main]
url = "{repo}"
password = {{ env = "BACKUP_PASSWORD" }}

{jobs}
"#,
        repo = s.repo,
        jobs = jobs.join("\n")
    );
    let path = s.path("backupd.toml");
    std::fs::write(&path, text).unwrap();
    path
}

/// The daemon's counter `name` of `job` (`_total` added).
fn counter(d: &Daemon, name: &str, job: &str) -> u64 {
    metric(&d.metrics(), &format!("{name}_total{{job=\"{job}\"}}")).unwrap_or(0.0) as u64
}

/// The peak and the median of `f` over `part`.
fn peak_median(part: &[Sample], f: impl Fn(&Sample) -> u64) -> (u64, u64) {
    let mut v: Vec<u64> = part.iter().map(f).collect();
    v.sort_unstable();
    (v.last().copied().unwrap_or(0), v[v.len() / 2])
}

/// Watches, every 200 ms, how long each job stays busy (running a
/// backup, its retention and prune, or a drill) without a pause: the
/// daemon misses a slot only when one run of the job outlasts the
/// interval, which a loaded machine may cause and the test must tell
/// from a slot lost for nothing.
struct BusyWatch {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    thread: std::thread::JoinHandle<std::collections::BTreeMap<String, Duration>>,
}

impl BusyWatch {
    fn start(port: u16) -> BusyWatch {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let flag = std::sync::Arc::clone(&stop);
        let thread = std::thread::spawn(move || {
            let mut since = std::collections::BTreeMap::<String, Instant>::new();
            let mut longest = std::collections::BTreeMap::<String, Duration>::new();
            while !flag.load(std::sync::atomic::Ordering::Relaxed) {
                let jobs = http(port, "GET", "/api/jobs", Some(TOKEN))
                    .and_then(|(_, body)| serde_json::from_str::<serde_json::Value>(&body).ok());
                for j in jobs
                    .as_ref()
                    .and_then(|j| j.as_array())
                    .into_iter()
                    .flatten()
                {
                    let name = j["name"].as_str().unwrap_or_default().to_owned();
                    if j["running"] == true || j["drilling"] == true {
                        let first = *since.entry(name.clone()).or_insert_with(Instant::now);
                        let span = longest.entry(name).or_default();
                        *span = (*span).max(first.elapsed());
                    } else {
                        since.remove(&name);
                    }
                }
                std::thread::sleep(Duration::from_millis(200));
            }
            longest
        });
        BusyWatch { stop, thread }
    }

    /// The longest busy stretch seen of each job.
    fn finish(self) -> std::collections::BTreeMap<String, Duration> {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        self.thread.join().unwrap()
    }
}

#[test]
#[allow(clippy::too_many_lines)] // One daemon's life, told in order.
fn daemon_soak_with_s3_faults() {
    let seconds = env_secs("BACKUP_SOAK_SECONDS", 60);
    let job_every = env_secs("BACKUP_SOAK_JOB_EVERY", 20);
    let drill_every = env_secs("BACKUP_SOAK_DRILL_EVERY", 60);
    let server = S3Server::start_with_faults(11);
    let mut s = Scratch::with_repo(server.url("soak"), server.env());
    s.env.push(("PGPW".into(), PG_PASSWORD.into()));
    s.init();
    let src = s.path("src");
    for i in 0..20u64 {
        write(&src.join(format!("f{i:02}")), &random_bytes(64 * 1024, i));
    }
    let pg = crate::postgres_pitr::cluster(&[]);
    let pg_scratch = PgCluster::owned_tempdir("soak-drill-");
    let mongo = MongoServer::start();
    let mongo_scratch = MongoServer::start();
    let redis = RedisServer::start();
    let port = backup_testkit::free_port();
    let cfg = soak_config(
        &s,
        port,
        job_every,
        drill_every,
        &src,
        &pg,
        pg_scratch.path(),
        &mongo,
        &mongo_scratch,
        &redis,
    );
    let env: Vec<(String, String)> = s.env.clone();
    let env: Vec<(&str, &str)> = env.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    let d = Daemon::spawn(&s, &cfg, port, "daemon.log", &env);
    d.wait_for("daemon listening", Duration::from_secs(60), || {
        http(port, "GET", "/healthz", None).is_some()
    });
    for (job, kind) in [
        ("db", "postgres-wal"),
        ("mongo", "mongodb-oplog"),
        ("cache", "redis-stream"),
    ] {
        let streaming = format!("backupd_capture_streaming{{job=\"{job}\",kind=\"{kind}\"}}");
        d.wait_for(
            &format!("the {kind} follower to stream"),
            Duration::from_secs(60),
            || metric(&d.metrics(), &streaming) == Some(1.0),
        );
    }

    let busy = BusyWatch::start(port);
    let start = Instant::now();
    let mut con = redis.connection();
    let orders = mongodb::sync::Client::with_uri_str(mongo.url(""))
        .unwrap()
        .database("shop")
        .collection::<Document>("orders");
    let (mut writes, mut round) = (0u64, 0u64);
    let mut samples = Vec::new();
    let mut last_sample = Instant::now();
    // When each job was first seen to have succeeded: a drill that starts
    // before a job's first backup has nothing to restore.
    let mut first_success: std::collections::BTreeMap<&str, chrono::DateTime<chrono::Utc>> =
        std::collections::BTreeMap::new();
    // When each job drilled at a random point was first seen with a
    // stored window holding a whole second to pick: a base alone, or one
    // whose capture is not stored yet (a slice of up to 10 s behind, more
    // while S3 faults restart the follower), has none.
    let mut first_window: std::collections::BTreeMap<&str, chrono::DateTime<chrono::Utc>> =
        std::collections::BTreeMap::new();
    while start.elapsed() < Duration::from_secs(seconds) {
        redis::cmd("INCR").arg("counter").exec(&mut con).unwrap();
        writes += 1;
        orders.insert_one(doc! {"n": round as i64}).run().unwrap();
        round += 1;
        if round % 10 == 0 {
            write(
                &src.join(format!("f{:02}", round / 10 % 20)),
                &random_bytes(64 * 1024, 1000 + round),
            );
            pg.psql("postgres", "INSERT INTO markers DEFAULT VALUES");
        }
        if last_sample.elapsed() >= Duration::from_secs(1) {
            samples.push(sample(d.child.id()));
            last_sample = Instant::now();
            for job in JOBS {
                if !first_success.contains_key(job) && counter(&d, "backupd_job_successes", job) > 0
                {
                    first_success.insert(job, chrono::Utc::now());
                }
            }
            for (job, kind) in POINT_DRILLS {
                if first_success.contains_key(job)
                    && !first_window.contains_key(job)
                    && has_a_second_to_pick(&s, kind)
                {
                    first_window.insert(job, chrono::Utc::now());
                }
            }
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    // A last run of every job, after the writers stopped: a job whose runs
    // failed must succeed again. A run already going when the writers
    // stopped does not count (the manual one queued behind it does).
    let stopped = chrono::Utc::now();
    for job in JOBS {
        let url = format!("/api/jobs/{job}/run");
        assert!(http(port, "POST", &url, Some(TOKEN)).is_some_and(|(c, _)| c == 202));
    }
    for job in JOBS {
        d.wait_for(
            &format!("the final run of {job}"),
            Duration::from_secs(300),
            || {
                let state = d.job(job);
                let last = &state["last_run"];
                state["running"] == false
                    && last["result"] == "success"
                    && last["started"]
                        .as_str()
                        .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                        .is_some_and(|t| t >= stopped)
            },
        );
    }
    let end = crate::redis_pitr::repl_offset(&mut con);
    let stored = "backupd_capture_stored_position{job=\"cache\",kind=\"redis-stream\"}";
    d.wait_for("the writes to be stored", Duration::from_secs(60), || {
        metric(&d.metrics(), stored).is_some_and(|p| p >= end as f64)
    });
    let longest = busy.finish();
    let mut runs = Vec::new();
    for job in JOBS {
        let state = d.job(job);
        let missed = counter(&d, "backupd_job_slots_missed", job);
        let skipped = counter(&d, "backupd_job_slots_skipped", job);
        let busiest = longest.get(job).copied().unwrap_or_default();
        runs.push(format!(
            "{job} {} ok/{} failed/{missed} missed (busy at most {:.1} s at a stretch)",
            counter(&d, "backupd_job_successes", job),
            counter(&d, "backupd_job_failures", job),
            busiest.as_secs_f64()
        ));
        assert_eq!(state["consecutive_failures"], 0, "{job}: {state:#}");
        // One daemon: no slot is another's. A slot is missed only when a
        // run outlasted the interval (the watch samples every 200 ms and
        // does not see the repository's opening: 2 s of slack).
        let excused = busiest + Duration::from_secs(2) >= Duration::from_secs(job_every);
        if skipped > 0 || (missed > 0 && !excused) {
            // The log first: CI shows the end of a failure's output.
            eprintln!("daemon log:\n{}", d.log());
        }
        assert_eq!(
            skipped, 0,
            "slots of {job} skipped (the daemon log is above)"
        );
        assert!(
            missed == 0 || excused,
            "{missed} slots of {job} missed, though it was busy at most {busiest:?} at a \
             stretch against an interval of {job_every} s (the daemon log is above)"
        );
    }
    let newest = d.job("files")["last_run"]["snapshot"]
        .as_str()
        .unwrap()
        .to_owned();
    let open = open_files(d.child.id());
    let log = d.log_path();
    let (code, _) = d.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(120));
    assert_eq!(code, 0);

    // Drills: every one passed that started a backup interval after its
    // job's first backup and, at a random point, after a window with a
    // second to pick was stored and before the writers stopped. One
    // started earlier has nothing to restore, or no point to pick, and
    // says so. So may one started later: the test's MongoDB writes no
    // periodic no-op entries (a real replica set does, every 10 s) and
    // the idle cluster commits nothing, so the stream's times stop at the
    // last write, and with `keep_last = 3` the bases left can all be
    // newer than it: windows of one point each.
    let drills = s.json(&["drill", "--history"]);
    let drills = drills.as_array().unwrap();
    let not_judged = |d: &serde_json::Value| {
        let started: chrono::DateTime<chrono::Utc> =
            d["record"]["started"].as_str().unwrap().parse().unwrap();
        let job = d["record"]["job"].as_str().unwrap_or_default();
        let outside_window = POINT_DRILLS.iter().any(|(j, _)| *j == job)
            && (started >= stopped || first_window.get(job).is_none_or(|seen| started < *seen));
        outside_window
            || first_success
                .get(job)
                .is_none_or(|first| started < *first + chrono::Duration::seconds(job_every as i64))
    };
    let failed: Vec<&serde_json::Value> = drills
        .iter()
        .filter(|d| d["record"]["ok"] != true && !not_judged(d))
        .collect();
    if !failed.is_empty() {
        // The log and the windows first: CI shows the end of a failure's output.
        let log = std::fs::read_to_string(&log).unwrap_or_default();
        eprintln!("daemon log:\n{log}");
        eprintln!("windows: {:#}", s.json(&["pitr"]));
    }
    assert!(
        failed.is_empty(),
        "failed drills (the daemon log and the windows are above; windows first seen {first_window:?}): {failed:#?}"
    );
    for (job, _) in POINT_DRILLS {
        assert!(
            first_window.contains_key(job),
            "{job}: no window with a second to pick was stored while the writers ran"
        );
    }
    let unjudged = drills.iter().filter(|d| not_judged(d)).count();
    let drilled = |job: &str| drills.iter().filter(|d| d["record"]["job"] == job).count();
    if seconds >= drill_every * 2 {
        for job in JOBS {
            assert!(drilled(job) > 0, "no drill of {job}: {drills:#?}");
        }
    }
    // Windows: one stream per capturing job, restorable, without a gap.
    let pitr = s.json(&["pitr"]);
    let streams = pitr.as_array().unwrap();
    for kind in ["postgres-wal", "mongodb-oplog", "redis-stream"] {
        let st: Vec<&serde_json::Value> = streams.iter().filter(|w| w["capture"] == kind).collect();
        assert_eq!(st.len(), 1, "{kind}: {pitr:#}");
        assert!(!st[0]["windows"].as_array().unwrap().is_empty(), "{pitr:#}");
        assert!(st[0]["gaps"].as_array().unwrap().is_empty(), "{pitr:#}");
    }

    // Memory, open files and threads after the warm-up.
    let n = samples.len();
    assert!(n >= 8, "too few samples: {samples:?}");
    let (warm, late) = (&samples[n / 4..n / 2], &samples[n / 2..]);
    let (rss_warm, _) = peak_median(warm, |s| s.rss_kib);
    let (rss_peak, rss_late) = peak_median(late, |s| s.rss_kib);
    let (fds_warm, _) = peak_median(warm, |s| s.fds);
    let (fds_peak, fds_late) = peak_median(late, |s| s.fds);
    let (thr_warm, _) = peak_median(warm, |s| s.threads);
    let (thr_peak, thr_late) = peak_median(late, |s| s.threads);
    let series: Vec<String> = samples
        .iter()
        .step_by((n / 12).max(1))
        .map(|s| format!("{}/{}/{}", s.rss_kib / 1024, s.fds, s.threads))
        .collect();
    let windows_after: Vec<String> = POINT_DRILLS
        .iter()
        .map(|(job, _)| {
            let after = first_window[job] - first_success[job];
            format!("{job} {:.1} s", after.num_milliseconds() as f64 / 1000.0)
        })
        .collect();
    let line = format!(
        "soak {seconds}s (jobs every {job_every}s, drills every {drill_every}s): runs {}; {} drills ({unjudged} before their job's first backup interval or window, or at a random point after the writers stopped, not judged), every other one passed; a window to pick from after the first backup: {}; {writes} Redis writes and MongoDB inserts; {} S3 faults; \
         RSS MiB peak {} after warm-up, median {} (peak {}) in the last half; open files peak {fds_warm}, median {fds_late} (peak {fds_peak}); \
         threads peak {thr_warm}, median {thr_late} (peak {thr_peak}); MiB/files/threads over time {}; open at the end: {open}",
        runs.join(", "),
        drills.len(),
        windows_after.join(", "),
        server.faults(),
        rss_warm / 1024,
        rss_late / 1024,
        rss_peak / 1024,
        series.join(" ")
    );
    crate::util::report_line("BACKUP_SOAK_REPORT", &line);
    // Growth is judged only when the warm-up quarter held a whole drill
    // cycle: in a shorter run (CI's minute) the first drills and the
    // connections their restores pool fall into the last half and look
    // like growth.
    if seconds >= 4 * drill_every {
        assert!(
            rss_late <= rss_warm + rss_warm / 4 + 16 * 1024,
            "memory grows: {line}"
        );
        assert!(fds_late <= fds_warm + 8, "open files grow: {line}");
        assert!(thr_late <= thr_warm + 4, "threads grow: {line}");
    }
    assert!(server.faults() > 0, "{line}");

    s.ok(&["verify", "--read-data"]);
    let restored = s.path("restored");
    s.ok(&["restore", &newest, "--to", restored.to_str().unwrap()]);
    assert_same_tree(&src, &restored);
    assert_eq!(crate::redis_pitr::counter_restored_at(&s, end), writes);
}
