//! Recovery proof in one run, printed as ratios (see `benches/README.md`,
//! section "Drills, reports and the status page"):
//!
//! - a drill's restore against `backup restore` of the same snapshot (both
//!   the `backup` binary, interleaved, median of ROUNDS): the drill's
//!   wall time without checks, and its RTO, over the restore's wall time
//!   (target: at most 1.05);
//! - the status page's server time (`Server-Timing`) and the report's
//!   render time with a year of history (20 jobs, 1000 runs each), over
//!   the 200 ms budget;
//! - `backupd`'s resident memory while idle with that history, over the
//!   50 MB budget;
//! - `backup list`, `forget --dry-run` and `report` over those 20 000
//!   snapshots, over a second each.
//!
//! `recovery_ratio [MIB] [ROUNDS]` (defaults 256 and 3). The `backup` and
//! `backupd` binaries are taken from the directory of this program (build
//! them first: `cargo build --release -p backup-cli -p backup-daemon`), or
//! from `BACKUP_BIN` and `BACKUPD_BIN`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::fmt::Write as _;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use backup_benches::{corpus, Rng, CORPUS_SEED};
use backup_core::drill::{DrillCheck, DrillPhase, DrillRecord, DRILL_VERSION};
use backup_core::snapshot::SnapshotFilter;
use backup_ops::config::{Config, ReportFormat};
use backup_ops::report::{build, render, History};
use backup_ops::repository::{open, RepoSpec};
use chrono::{Duration as Span, Utc};
use futures::stream::{self, StreamExt};

const PASSWORD: &str = "bench password";
const JOBS: usize = 20;
const RUNS: usize = 1000;

fn bin(name: &str, env: &str) -> PathBuf {
    if let Some(p) = std::env::var_os(env) {
        return PathBuf::from(p);
    }
    let p = std::env::current_exe().unwrap().with_file_name(name);
    assert!(
        p.exists(),
        "{} is missing: cargo build --release -p backup-cli -p backup-daemon (or set {env})",
        p.display()
    );
    p
}

fn backup(repo: &Path, home: &Path, args: &[&str]) -> (Duration, String) {
    let t = Instant::now();
    let out = Command::new(bin("backup", "BACKUP_BIN"))
        .env("BACKUP_REPOSITORY", repo)
        .env("BACKUP_PASSWORD", PASSWORD)
        .env("HOME", home)
        .args(args)
        .output()
        .unwrap();
    let took = t.elapsed();
    assert!(
        out.status.success(),
        "backup {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    (took, String::from_utf8_lossy(&out.stdout).into_owned())
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        f64::midpoint(v[n / 2 - 1], v[n / 2])
    }
}

/// A tree of `mib` MiB: a few large files of the mixed corpus and many
/// small ones.
fn make_tree(dir: &Path, mib: usize) {
    let data = corpus(mib * 1024 * 1024, CORPUS_SEED);
    let big = data.len() * 9 / 10;
    for (i, part) in data[..big].chunks(16 * 1024 * 1024).enumerate() {
        std::fs::write(dir.join(format!("big-{i:03}.bin")), part).unwrap();
    }
    let small = dir.join("small");
    std::fs::create_dir_all(&small).unwrap();
    for (i, part) in data[big..].chunks(8 * 1024).enumerate() {
        let d = small.join(format!("{:02}", i % 64));
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join(format!("f{i:05}.txt")), part).unwrap();
    }
}

fn drill_vs_restore(work: &Path, mib: usize, rounds: usize) -> String {
    let src = work.join("src");
    std::fs::create_dir_all(&src).unwrap();
    make_tree(&src, mib);
    let repo = work.join("repo");
    backup(&repo, work, &["init"]);
    backup(&repo, work, &["create", src.to_str().unwrap()]);
    let scratch = work.join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let (mut restores, mut drills, mut rtos) = (Vec::new(), Vec::new(), Vec::new());
    for round in 0..rounds {
        let to = work.join(format!("restored-{round}"));
        let (t, _) = backup(
            &repo,
            work,
            &[
                "--no-progress",
                "restore",
                "latest",
                "--to",
                to.to_str().unwrap(),
            ],
        );
        restores.push(t.as_secs_f64());
        std::fs::remove_dir_all(&to).unwrap();
        let (t, out) = backup(
            &repo,
            work,
            &[
                "--json",
                "drill",
                "--source",
                src.to_str().unwrap(),
                "--target",
                scratch.to_str().unwrap(),
                "--no-builtin-checks",
            ],
        );
        drills.push(t.as_secs_f64());
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        rtos.push(v["record"]["rto_seconds"].as_f64().unwrap());
    }
    let (r, d, rto) = (median(restores), median(drills), median(rtos));
    format!(
        "ratio drill/restore = {:.3} (wall time of `backup drill` without checks over `backup restore` of the same snapshot; target <= 1.05)\n  \
         ratio drill RTO/restore = {:.3} (the drill's measured RTO, without process start and key derivation)\n  \
         details: {mib} MiB tree, median of {rounds} interleaved rounds",
        d / r,
        rto / r
    )
}

/// A repository with a year of history: 20 jobs, 1000 runs each (every
/// 8h46m), 52 drills each and 200 audit records.
async fn year_of_history(work: &Path) -> (PathBuf, Config) {
    let repo_path = work.join("history-repo");
    backup(&repo_path, work, &["init"]);
    let tiny = work.join("tiny");
    std::fs::create_dir_all(&tiny).unwrap();
    std::fs::write(tiny.join("a.txt"), b"tiny").unwrap();
    let mut jobs = String::new();
    for j in 0..JOBS {
        let _ = write!(
            jobs,
            "[jobs.job-{j:02}]\nrepository = \"main\"\nsource = \"{}\"\nschedule = \"0 0 1 1 *\"\nmax_age = \"1d\"\n\n[jobs.job-{j:02}.drill]\ntarget = \"{}\"\nmax_rto = \"30m\"\n\n",
            tiny.display(),
            work.join("scratch").display()
        );
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let text = format!(
        "[daemon]\nlisten = \"127.0.0.1:{port}\"\napi_token = {{ env = \"BENCH_TOKEN\" }}\n\n[repositories.main]\nurl = \"{}\"\npassword = {{ env = \"BACKUP_PASSWORD\" }}\n\n{jobs}",
        repo_path.display()
    );
    let config = Config::parse(&text, "bench.toml").unwrap();
    std::fs::write(work.join("backupd.toml"), text).unwrap();
    backup(&repo_path, work, &["create", tiny.to_str().unwrap()]);
    let spec = RepoSpec::new(repo_path.to_str().unwrap(), &[]).unwrap();
    let repo = open(&spec, || Ok(PASSWORD.into())).await.unwrap();
    let base = repo
        .find_snapshot("latest", &SnapshotFilter::default())
        .await
        .unwrap();
    repo.sink()
        .delete(backup_core::FileKind::Snapshot, &base.id.to_hex())
        .await
        .unwrap();
    let start = Utc::now() - Span::days(365);
    let step = Span::seconds(365 * 86400 / RUNS as i64);
    let mut manifests = Vec::with_capacity(JOBS * RUNS);
    let mut rng = Rng::new(7);
    for j in 0..JOBS {
        let mut size: u64 = 2_000_000_000 + rng.below(1_000_000_000) as u64;
        for r in 0..RUNS {
            let mut s = base.snapshot.clone();
            s.job = Some(format!("job-{j:02}"));
            s.time = start + step * r as i32 + Span::seconds(j as i64 * 60);
            size += rng.below(20_000_000) as u64;
            s.stats.logical_bytes = size;
            s.stats.bytes_read = size / 10;
            s.stats.bytes_added = rng.below(50_000_000) as u64;
            s.stats.bytes_stored = s.stats.bytes_added / 3;
            s.stats.duration_ms = 60_000 + rng.below(600_000) as u64;
            manifests.push(s);
        }
    }
    let repo_ref = &repo;
    stream::iter(manifests)
        .map(|s| async move { repo_ref.save_snapshot(&s).await.unwrap() })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    let mut drills = Vec::new();
    for j in 0..JOBS {
        for w in 0..52 {
            let started = start + Span::days(7 * w + 3);
            let rto = 200.0 + rng.below(600) as f64;
            drills.push(DrillRecord {
                version: DRILL_VERSION,
                job: Some(format!("job-{j:02}")),
                source: base.snapshot.source.clone(),
                snapshot: Some(base.id),
                point_kind: "latest-snapshot".into(),
                point: Some(started - Span::hours(5)),
                started,
                finished: started + Span::seconds(rto as i64 + 30),
                host: "bench".into(),
                user: "bench".into(),
                target: "/scratch".into(),
                ok: w % 13 != 0,
                rto_seconds: Some(rto),
                rpo_seconds: Some(18_000.0),
                max_rto_seconds: Some(1800.0),
                rto_exceeded: false,
                phases: vec![
                    DrillPhase {
                        name: "fetch".into(),
                        seconds: 5.0,
                    },
                    DrillPhase {
                        name: "load".into(),
                        seconds: rto - 5.0,
                    },
                ],
                bytes: 1 << 30,
                items: 1000,
                checks: vec![DrillCheck {
                    name: "built-in".into(),
                    ok: w % 13 != 0,
                    detail: String::new(),
                    seconds: 3.0,
                }],
                error: None,
                kept: false,
                leftovers_removed: Vec::new(),
                program: "bench".into(),
            });
        }
    }
    stream::iter(drills)
        .map(|d| async move { backup_core::drill::save(repo_ref, &d).await.unwrap() })
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await;
    for i in 0..200 {
        backup_core::audit::append(
            &repo,
            &backup_core::audit::Operation {
                operation: "create".into(),
                success: i % 20 != 0,
                details: serde_json::json!({"job": format!("job-{:02}", i % JOBS), "error": if i % 20 == 0 { "connection refused" } else { "" }}),
                user: None,
            },
        )
        .await
        .unwrap();
    }
    (repo_path, config)
}

fn get(port: u16, path: &str) -> (f64, f64, usize) {
    let t = Instant::now();
    let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    write!(
        s,
        "GET {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bench-token\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut resp = Vec::new();
    s.read_to_end(&mut resp).unwrap();
    let wall = t.elapsed().as_secs_f64() * 1000.0;
    let text = String::from_utf8_lossy(&resp);
    assert!(
        text.starts_with("HTTP/1.1 200"),
        "{}",
        &text[..text.len().min(300)]
    );
    let server = text
        .lines()
        .find_map(|l| {
            l.to_ascii_lowercase()
                .strip_prefix("server-timing: render;dur=")
                .map(str::to_owned)
        })
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(f64::NAN);
    (server, wall, resp.len())
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

async fn history_numbers(work: &Path) -> String {
    let t = Instant::now();
    let (repo_path, config) = year_of_history(work).await;
    let made = t.elapsed();
    // The daemon: page server time and idle memory.
    let port: u16 = config
        .daemon
        .listen
        .rsplit(':')
        .next()
        .unwrap()
        .parse()
        .unwrap();
    let mut daemon = Command::new(bin("backupd", "BACKUPD_BIN"))
        .arg("--config")
        .arg(work.join("backupd.toml"))
        .env("BACKUP_PASSWORD", PASSWORD)
        .env("BENCH_TOKEN", "bench-token")
        .env("HOME", work)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t = Instant::now();
    loop {
        if let Ok(mut s) = std::net::TcpStream::connect(("127.0.0.1", port)) {
            let _ = write!(
                s,
                "GET /api/jobs HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer bench-token\r\nConnection: close\r\n\r\n"
            );
            let mut body = String::new();
            let _ = s.read_to_string(&mut body);
            if body.matches("\"last_success\":\"").count() == JOBS
                && body.matches("\"last_drill\":{").count() == JOBS
            {
                break;
            }
        }
        assert!(
            t.elapsed() < Duration::from_secs(600),
            "backupd did not load the history"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let loaded = t.elapsed();
    let mut server = Vec::new();
    let mut wall = Vec::new();
    let mut bytes = 0;
    for _ in 0..20 {
        let (s, w, n) = get(port, "/");
        server.push(s);
        wall.push(w);
        bytes = n;
    }
    std::thread::sleep(Duration::from_secs(5));
    let rss = rss_kib(daemon.id()) as f64 / 1024.0;
    let _ = daemon.kill();
    let _ = daemon.wait();
    // The command line over the same snapshots (issue 32: list,
    // forget --dry-run and the report each under a second with 10 000
    // snapshots; these are JOBS x RUNS), median wall of 3, key
    // derivation included as a user meets it.
    let snapshots = JOBS * RUNS;
    let mut cli = Vec::new();
    for (what, args) in [
        ("backup list", vec!["list"]),
        (
            "backup forget --dry-run",
            vec![
                "forget",
                "--dry-run",
                "--keep-daily",
                "30",
                "--keep-monthly",
                "12",
            ],
        ),
        ("backup report", vec!["report", "--since", "365d"]),
    ] {
        let times: Vec<f64> = (0..3)
            .map(|_| backup(&repo_path, work, &args).0.as_secs_f64())
            .collect();
        cli.push((what, median(times)));
    }
    // The report, in this process.
    let spec = RepoSpec::new(repo_path.to_str().unwrap(), &[]).unwrap();
    let repo = open(&spec, || Ok(PASSWORD.into())).await.unwrap();
    let t = Instant::now();
    let history = History::load(
        Some(&config),
        &[("main".to_owned(), repo)],
        Some(Utc::now() - Span::days(366)),
    )
    .await
    .unwrap();
    let read = t.elapsed();
    let mut renders = Vec::new();
    for format in [
        ReportFormat::Html,
        ReportFormat::Markdown,
        ReportFormat::Json,
    ] {
        let mut times = Vec::new();
        let mut size = 0;
        for _ in 0..5 {
            let t = Instant::now();
            let text = render(&build(&history), format);
            times.push(t.elapsed().as_secs_f64() * 1000.0);
            size = text.len();
        }
        renders.push((format, median(times), size));
    }
    let page = median(server.clone());
    let worst = server.iter().copied().fold(0.0, f64::max);
    let mut out = format!(
        "ratio page server time/200 ms = {:.3} (status page with {JOBS} jobs x {RUNS} runs; median {page:.1} ms, worst {worst:.1} ms of 20; {:.0} KiB; client wall median {:.1} ms)\n",
        page / 200.0,
        bytes as f64 / 1024.0,
        median(wall)
    );
    for (format, ms, size) in &renders {
        let _ = writeln!(
            out,
            "ratio report render ({format:?})/200 ms = {:.3} ({ms:.1} ms, {:.0} KiB)",
            ms / 200.0,
            *size as f64 / 1024.0
        );
    }
    for (what, secs) in &cli {
        let _ = writeln!(
            out,
            "ratio {what} with {snapshots} snapshots/1 s = {secs:.3}"
        );
    }
    let _ = write!(
        out,
        "ratio backupd idle RSS/50 MB = {:.3} ({rss:.1} MiB with the history loaded)\n  \
         details: history written in {:.1}s; backupd loaded it in {:.1}s; backup report read it from the repository in {:.1}s",
        rss * 1024.0 * 1024.0 / 50e6,
        made.as_secs_f64(),
        loaded.as_secs_f64(),
        read.as_secs_f64()
    );
    out
}

fn main() {
    let mut args = std::env::args().skip(1);
    let mib = args
        .next()
        .map_or(256, |a| a.parse().expect("MIB: a number"));
    let rounds = args
        .next()
        .map_or(3, |a| a.parse().expect("ROUNDS: a number"));
    let work = tempfile::Builder::new()
        .prefix("recovery-bench-")
        .tempdir()
        .unwrap();
    println!("{}", drill_vs_restore(work.path(), mib, rounds));
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    println!("{}", rt.block_on(history_numbers(work.path())));
}
