//! A kill at the storage writes of continuous capture (issue 32: "a killed
//! capture resumes with no gap and no duplicate"). `wal receive`, `oplog
//! follow` and `redis follow` are each started again and again with the
//! storage failpoint `write:N`, N = 1, 2, … (a new process each time),
//! while a writer keeps changing the source; each run dies by SIGKILL
//! before its Nth put or delete: the stream's lease, a lock, a base
//! snapshot's pack, index or manifest, a piece's data or its capture
//! record, a lock's release. A last run without the failpoint catches up
//! and is stopped. Then:
//! - `backup pitr` lists one window and no gap;
//! - the stored pieces chain: each starts where the one before it ended
//!   (nothing stored twice, nothing skipped);
//! - `verify --read-data` passes, and `backup unlock` leaves no lock;
//! - a restore to the end of the capture holds every write exactly once:
//!   a counter the writer increments (a write replayed twice or lost
//!   changes it) and one row, list element or document per write.
//!
//! CI kills each capture at [`CI_KILLS`] successive points; with
//! `BACKUP_CRASH_ALL=1` at [`ALL_KILLS`] (`scripts/crash_matrix.sh`). With
//! `BACKUP_CRASH_REPORT=FILE` each point appends
//! `operation<TAB>write:N/run<TAB>outcome`, the outcome naming the write
//! the run was killed before.

use std::os::unix::process::ExitStatusExt;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backup_testkit::mongo::MongoServer;
use backup_testkit::redis::RedisServer;
use mongodb::bson::{doc, Document};
use mongodb::sync::Client;

use crate::util::{Scratch, PASSWORD};

/// Kill points per capture in CI: enough to pass through a piece twice
/// (lock, data, record, release). A capture that takes its own base (Redis)
/// adds its writes (lease, lock, packs, index, manifest, release).
const CI_KILLS: u64 = 8;
/// Kill points per capture with `BACKUP_CRASH_ALL=1`: `ALL_FACTOR` times as
/// many.
const ALL_FACTOR: u64 = 3;

/// The kill points of a capture whose CI sample is `ci`.
fn kills(ci: u64) -> u64 {
    if std::env::var("BACKUP_CRASH_ALL").is_ok_and(|v| v == "1") {
        ci * ALL_FACTOR
    } else {
        ci
    }
}

/// The capture command `args` as a child process, killed before its
/// `failpoint`th storage write when given; standard error to `log`.
fn spawn(s: &Scratch, args: &[&str], failpoint: Option<u64>, log: &Path) -> Child {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_backup"));
    cmd.args(args)
        .env("BACKUP_REPOSITORY", &s.repo)
        .env("BACKUP_PASSWORD", PASSWORD)
        .env("HOME", s.dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).unwrap());
    for (k, v) in &s.env {
        cmd.env(k, v);
    }
    if let Some(n) = failpoint {
        cmd.env("BACKUP_FAILPOINT", format!("write:{n}"));
    }
    cmd.spawn().unwrap()
}

/// What a run was killed before, from the failpoint's announcement of its
/// last write ("put captures", "delete locks", …).
fn killed_before(log: &str) -> String {
    let last = log
        .lines()
        .filter_map(|l| l.strip_prefix("failpoint: write "))
        .next_back()
        .and_then(|l| l.split_once(": "));
    last.map_or_else(
        || "no write".to_owned(),
        |(_, what)| {
            let (verb, path) = what.split_once(' ').unwrap_or((what, ""));
            let dir = if path.starts_with("locks/capture-") {
                "lease"
            } else {
                path.split('/').next().unwrap_or("")
            };
            format!("{verb} {dir}")
        },
    )
}

/// Reports run `n` of capture `op`.
fn report(op: &str, n: u64, outcome: &str) {
    crate::crash_points::report(op, &format!("write:{n}/run"), outcome);
}

/// Runs the capture `args` once per kill point (`kills(ci)` of them), run
/// N killed by the failpoint before its Nth storage write while `tick`
/// writes to the source; then starts it without the failpoint and returns
/// that run. Each point is reported as resumed (the final checks of the
/// caller decide whether it was).
fn kill_at_each_write(
    s: &Scratch,
    op: &str,
    ci: u64,
    args: &[&str],
    mut tick: impl FnMut(),
) -> Child {
    for n in 1..=kills(ci) {
        let log = s.path(&format!("capture-{n}.log"));
        let mut child = spawn(s, args, Some(n), &log);
        let deadline = Instant::now() + Duration::from_secs(120);
        let status = loop {
            if let Some(st) = child.try_wait().unwrap() {
                break st;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!(
                    "{op}: run {n} made fewer than {n} storage writes in two minutes:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            tick();
            std::thread::sleep(Duration::from_millis(40));
        };
        let text = std::fs::read_to_string(&log).unwrap_or_default();
        assert_eq!(
            status.signal(),
            Some(9),
            "{op}: run {n} ended ({status}) instead of being killed at its write {n}:\n{text}"
        );
        report(
            op,
            n,
            &format!("resumed (killed before {})", killed_before(&text)),
        );
    }
    spawn(s, args, None, &s.path("capture-last.log"))
}

/// SIGTERM: the run stores what it read and exits 0.
fn stop(mut child: Child, s: &Scratch) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let status = child.wait().unwrap();
    assert!(
        status.success(),
        "the last run ended with {status}:\n{}",
        std::fs::read_to_string(s.path("capture-last.log")).unwrap_or_default()
    );
}

/// The checks every capture shares after its kills: one stream with one
/// window and no gap in `listing` (`backup pitr --json`); its pieces in
/// `captures/` chain; `verify --read-data` passes; `backup unlock` leaves
/// no lock file behind.
fn stream_is_whole(s: &Scratch, listing: &serde_json::Value) {
    stream_is_whole_in(s, listing, Path::new(&s.repo));
}

/// [`stream_is_whole`] for a repository whose files are under `files`.
fn stream_is_whole_in(s: &Scratch, listing: &serde_json::Value, files: &Path) {
    let streams = listing.as_array().unwrap();
    assert_eq!(streams.len(), 1, "{listing:#}");
    assert!(
        streams[0]["gaps"].as_array().unwrap().is_empty(),
        "a kill left a gap: {listing:#}"
    );
    assert_eq!(
        streams[0]["windows"].as_array().unwrap().len(),
        1,
        "{listing:#}"
    );
    let mut pieces: Vec<(String, String, String)> = std::fs::read_dir(files.join("captures"))
        .unwrap()
        .map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            let p: Vec<&str> = n.split('.').collect();
            (p[0].to_owned(), p[1].to_owned(), p[2].to_owned())
        })
        .collect();
    pieces.sort();
    assert!(!pieces.is_empty(), "no piece was stored: {listing:#}");
    for w in pieces.windows(2) {
        if w[0].0 == w[1].0 {
            assert_eq!(w[0].2, w[1].1, "pieces overlap or leave a hole: {pieces:?}");
        }
    }
    let out = s.run(&["verify", "--read-data"]);
    assert!(
        out.status.success(),
        "verify --read-data: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    s.ok(&["unlock"]);
    let locks: Vec<String> = std::fs::read_dir(files.join("locks"))
        .map(|rd| {
            rd.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    assert!(locks.is_empty(), "locks left after unlock: {locks:?}");
}

/// A Redis writer: per write, `INCR counter` and `RPUSH log N`.
struct RedisWriter {
    con: redis::Connection,
    writes: u64,
}

impl RedisWriter {
    fn new(server: &RedisServer) -> Self {
        RedisWriter {
            con: server.connection(),
            writes: 0,
        }
    }

    fn write(&mut self) {
        redis::cmd("INCR")
            .arg("counter")
            .exec(&mut self.con)
            .unwrap();
        redis::cmd("RPUSH")
            .arg("log")
            .arg(self.writes)
            .exec(&mut self.con)
            .unwrap();
        self.writes += 1;
    }
}

/// A restore into `target` to offset `end` holds each of `writes` writes
/// of a [`RedisWriter`] exactly once.
fn restores_every_write(s: &Scratch, target: &RedisServer, end: u64, writes: u64) {
    s.ok(&[
        "restore",
        "--to",
        &target.url(),
        "--drop",
        "-y",
        "--no-safety-backup",
        "--at-offset",
        &end.to_string(),
    ]);
    let mut t = target.connection();
    let counter: u64 = redis::cmd("GET").arg("counter").query(&mut t).unwrap();
    assert_eq!(counter, writes, "the counter after a restore to the end");
    let log: Vec<u64> = redis::cmd("LRANGE")
        .arg("log")
        .arg(0)
        .arg(-1)
        .query(&mut t)
        .unwrap();
    assert_eq!(log, (0..writes).collect::<Vec<_>>());
}

#[test]
fn crash_redis_follow() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let s = Scratch::new();
    s.init();
    let url = source.url();
    let mut writer = RedisWriter::new(&source);
    let mut tick = || writer.write();
    // The follower takes its base itself (a full resynchronisation), so
    // the first kills fall inside the base.
    let last = kill_at_each_write(
        &s,
        "redis follow",
        CI_KILLS + 4,
        &["redis", "follow", &url, "--slice-time", "100ms"],
        &mut tick,
    );
    for _ in 0..5 {
        tick();
    }
    let end = crate::redis_pitr::repl_offset(&mut source.connection());
    let listing = crate::redis_pitr::wait_captured(&s, end);
    stop(last, &s);
    stream_is_whole(&s, &listing);
    // The first run that stored its base is the last to take one: the runs
    // after it continue after the base (a second full resynchronisation
    // would copy the whole dataset again).
    let snapshots = s.json(&["list"]);
    assert_eq!(snapshots.as_array().unwrap().len(), 1, "{snapshots:#}");

    restores_every_write(&s, &target, end, writer.writes);
    assert_eq!(target.digest(), source.digest());
}

#[test]
fn crash_oplog_follow() {
    let m = MongoServer::start();
    let c = Client::with_uri_str(m.url("")).unwrap();
    let s = Scratch::new();
    s.init();
    let url = m.url("");
    let mut writer = OplogWriter::new(&c);
    s.ok(&["create", &url]);
    let mut tick = || writer.write();
    let last = kill_at_each_write(
        &s,
        "oplog follow",
        CI_KILLS,
        &["oplog", "follow", &url, "--slice-time", "1s"],
        &mut tick,
    );
    for _ in 0..5 {
        tick();
    }
    let end = crate::mongo_pitr::newest(&c);
    let listing = crate::mongo_pitr::wait_stored(&s, end);
    stop(last, &s);
    stream_is_whole(&s, &listing);
    oplog_restores_every_write(&s, &c, &url, end, writer.writes);
}

/// A MongoDB writer for capture tests: a counter incremented and a `log`
/// document inserted per write, in the database `crash`.
struct OplogWriter {
    db: mongodb::sync::Database,
    writes: i64,
}

impl OplogWriter {
    fn new(c: &Client) -> Self {
        let db = c.database("crash");
        db.collection::<Document>("counter")
            .insert_one(doc! {"_id": 1, "n": 0_i64})
            .run()
            .unwrap();
        OplogWriter { db, writes: 0 }
    }

    fn write(&mut self) {
        self.db
            .collection::<Document>("log")
            .insert_one(doc! {"_id": self.writes})
            .run()
            .unwrap();
        self.db
            .collection::<Document>("counter")
            .update_one(doc! {"_id": 1}, doc! {"$inc": {"n": 1_i64}})
            .run()
            .unwrap();
        self.writes += 1;
    }
}

/// Restores `crash` at the oplog timestamp `end` as `restored` and checks
/// that it holds each of `writes` writes exactly once.
fn oplog_restores_every_write(
    s: &Scratch,
    c: &Client,
    url: &str,
    end: mongodb::bson::Timestamp,
    writes: i64,
) {
    s.ok(&[
        "restore",
        "--at-ts",
        &crate::mongo_pitr::ts_arg(end),
        "--to",
        url,
        "--include",
        "crash.*",
        "--rename",
        "crash:restored",
    ]);
    let restored = c.database("restored");
    let counter = restored
        .collection::<Document>("counter")
        .find_one(doc! {"_id": 1})
        .run()
        .unwrap()
        .unwrap();
    assert_eq!(counter.get_i64("n").unwrap(), writes);
    let ids: Vec<i64> = restored
        .collection::<Document>("log")
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .run()
        .unwrap()
        .map(|d| d.unwrap().get_i64("_id").unwrap())
        .collect();
    assert_eq!(ids, (0..writes).collect::<Vec<_>>());
}

/// [`stream_is_whole`] for the WAL of `pg`, and a restore to just after
/// marker `newest` (a later commit exists) holds markers 1..=newest.
fn wal_is_whole(s: &Scratch, pg: &backup_testkit::postgres::PgCluster, newest: u64) {
    use crate::postgres_pitr::{markers, restore_and_start, time_after_marker};
    let listing = s.json(&["pitr", "--source", "postgres"]);
    stream_is_whole(s, &listing);
    let at = time_after_marker(pg, newest);
    let restored = restore_and_start(s, &["--at", &at]);
    assert_eq!(markers(&restored), (newest, newest));
}

#[test]
fn crash_wal_receive() {
    use crate::postgres_pitr::{
        cluster, markers, repl_url, wait_captured, wait_streaming, Receiver,
    };
    let pg = cluster(&[]);
    let s = Scratch::new();
    s.init();
    let url = repl_url(&pg);
    // A first run makes the slot that keeps the server's WAL for the
    // next ones; the base is taken after it.
    let receiver = Receiver::start(&s, &url);
    wait_streaming(&pg);
    receiver.stop();
    s.ok(&["create", &format!("{}?mode=physical", pg.url("postgres"))]);
    let tick = || {
        pg.psql("postgres", "INSERT INTO markers DEFAULT VALUES");
    };
    let last = kill_at_each_write(
        &s,
        "wal receive",
        CI_KILLS,
        &["wal", "receive", &url, "--flush-interval", "100ms"],
        tick,
    );
    for _ in 0..5 {
        tick();
    }
    let (count, newest) = markers(&pg);
    assert_eq!(count, newest);
    // A commit after the target, so that recovery passes it.
    tick();
    wait_captured(&pg);
    stop(last, &s);
    wal_is_whole(&s, &pg, newest);
}

/// `wal push` as `archive_command`: the server's first pushes are killed
/// before their 1st, 2nd, … storage write in turn (a wrapper counts the
/// invocations; the server retries a segment whose push died); then every
/// segment is archived once, the pieces chain, and a restore to the end
/// holds every marker.
#[test]
fn crash_wal_push() {
    use crate::postgres_pitr::{cluster, markers};
    // Each killed push costs the archiver's restart delay (10 s): one
    // cycle through a push's four writes in CI.
    let killed = kills(4);
    let (home, s, key) = crate::postgres_pitr::server_repository("pg-crash-push-");
    let repo = home.path().join("repo");
    // Invocation n of the first `killed` dies before its write
    // ((n - 1) mod 4) + 1: its lock, data, capture record, lock release.
    let pushes = home.path().join("pushes");
    let wrapper = home.path().join("push.sh");
    std::fs::write(
        &wrapper,
        format!(
            "n=$(cat {pushes} 2>/dev/null || echo 0); n=$((n + 1)); echo $n > {pushes}\n\
             if [ $n -le {killed} ]; then export BACKUP_FAILPOINT=write:$(( (n - 1) % 4 + 1 )); fi\n\
             exec {bin} --repo {repo} --key-file {key} --quiet wal push \"$1\"\n",
            pushes = pushes.display(),
            bin = env!("CARGO_BIN_EXE_backup"),
            repo = repo.display(),
            key = key.display(),
        ),
    )
    .unwrap();
    let chown = Command::new("chown")
        .args(["-R", "postgres:postgres", home.path().to_str().unwrap()])
        .status()
        .unwrap();
    assert!(chown.success());
    let archive = format!("archive_command=sh {} %p", wrapper.display());
    let pg = cluster(&["archive_mode=on", &archive]);
    s.ok(&["create", &format!("{}?mode=physical", pg.url("postgres"))]);
    let archived = |upto: &str| {
        pg.psql(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        )
        .trim()
            >= upto
    };
    // A segment at a time until the killed pushes are used up and the
    // last one is archived. A push that dies by a signal makes the server
    // restart its archiver (10 s later), which retries the segment.
    let deadline = Instant::now() + Duration::from_secs(60 + 20 * killed);
    let mut switched = String::new();
    loop {
        pg.psql("postgres", "INSERT INTO markers DEFAULT VALUES");
        if archived(&switched) {
            let pushed: u64 = std::fs::read_to_string(&pushes)
                .ok()
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0);
            if pushed > killed {
                break;
            }
            switched = pg
                .psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
                .trim()
                .to_owned();
        }
        assert!(
            Instant::now() < deadline,
            "archiving stalled at {switched}:\n{}",
            pg.log()
        );
        std::thread::sleep(Duration::from_millis(300));
    }
    let (count, newest) = markers(&pg);
    assert_eq!(count, newest);
    pg.psql("postgres", "INSERT INTO markers DEFAULT VALUES");
    let switched = pg
        .psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
        .trim()
        .to_owned();
    let start = Instant::now();
    while !archived(&switched) {
        assert!(start.elapsed() < Duration::from_secs(90), "{}", pg.log());
        std::thread::sleep(Duration::from_millis(200));
    }
    for n in 1..=killed {
        report(
            "wal push",
            n,
            &format!(
                "archived on retry (killed before write {})",
                (n - 1) % 4 + 1
            ),
        );
    }
    wal_is_whole(&s, &pg, newest);
}

/// Capture, a second base, `forget --prune`, `verify --read-data` and a
/// restore to the end against an S3 server that fails every 7th request
/// (refused with `503 SlowDown`, or a `PUT` applied and its response
/// lost): each completes through the retries, and the restore holds every
/// write exactly once.
#[test]
fn capture_and_prune_survive_s3_faults() {
    let server = backup_testkit::s3::S3Server::start_with_faults(7);
    let s = Scratch::with_repo(server.url("faults"), server.env());
    s.init();
    let source = RedisServer::start();
    let target = RedisServer::start();
    let url = source.url();
    let mut writer = RedisWriter::new(&source);
    let mut tick = || writer.write();
    let follower = spawn(
        &s,
        &["redis", "follow", &url, "--slice-time", "100ms"],
        None,
        &s.path("capture-last.log"),
    );
    for round in 0..60 {
        tick();
        if round == 30 {
            // A second base while the stream is captured: the first and
            // the pieces only it needs are what prune removes below.
            s.ok(&["create", &url]);
        }
        std::thread::sleep(Duration::from_millis(40));
    }
    let end = crate::redis_pitr::repl_offset(&mut source.connection());
    crate::redis_pitr::wait_captured(&s, end);
    stop(follower, &s);
    let out = s.json(&["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(out["removed"].as_array().map(Vec::len), Some(1), "{out:#}");
    let listing = s.json(&["pitr", "--source", "redis"]);
    let files = server
        .data_dir()
        .join(backup_testkit::s3::BUCKET)
        .join("faults");
    stream_is_whole_in(&s, &listing, &files);
    restores_every_write(&s, &target, end, writer.writes);
    assert!(server.faults() > 20, "only {} faults", server.faults());
}

/// `oplog follow` against an S3 server that fails every 7th request, as
/// [`capture_and_prune_survive_s3_faults`] does for Redis: the stream is
/// whole, and a restore to its end holds every write exactly once.
#[test]
fn oplog_follow_survives_s3_faults() {
    let server = backup_testkit::s3::S3Server::start_with_faults(7);
    let s = Scratch::with_repo(server.url("faults"), server.env());
    s.init();
    let m = MongoServer::start();
    let c = Client::with_uri_str(m.url("")).unwrap();
    let url = m.url("");
    let mut writer = OplogWriter::new(&c);
    s.ok(&["create", &url]);
    let follower = spawn(
        &s,
        &["oplog", "follow", &url, "--slice-time", "1s"],
        None,
        &s.path("capture-last.log"),
    );
    for _ in 0..40 {
        writer.write();
        std::thread::sleep(Duration::from_millis(40));
    }
    let end = crate::mongo_pitr::newest(&c);
    let listing = crate::mongo_pitr::wait_stored(&s, end);
    stop(follower, &s);
    let files = server
        .data_dir()
        .join(backup_testkit::s3::BUCKET)
        .join("faults");
    stream_is_whole_in(&s, &listing, &files);
    oplog_restores_every_write(&s, &c, &url, end, writer.writes);
    assert!(server.faults() > 10, "only {} faults", server.faults());
}

/// `wal receive` against an S3 server that fails every 7th request: every
/// marker's WAL is stored, in one stream without a gap or an overlap, and
/// reads back.
#[test]
fn wal_receive_survives_s3_faults() {
    use crate::postgres_pitr::{cluster, markers, repl_url, wait_captured, wait_streaming};
    let server = backup_testkit::s3::S3Server::start_with_faults(7);
    let s = Scratch::with_repo(server.url("faults"), server.env());
    s.init();
    let pg = cluster(&[]);
    let url = repl_url(&pg);
    let receiver = spawn(
        &s,
        &["wal", "receive", &url, "--flush-interval", "100ms"],
        None,
        &s.path("capture-last.log"),
    );
    wait_streaming(&pg);
    s.ok(&["create", &format!("{}?mode=physical", pg.url("postgres"))]);
    let tick = || {
        pg.psql("postgres", "INSERT INTO markers DEFAULT VALUES");
    };
    for _ in 0..20 {
        tick();
        std::thread::sleep(Duration::from_millis(50));
    }
    let (count, newest) = markers(&pg);
    assert_eq!((count, newest), (20, 20));
    // A commit after the target, so that a recovery would pass it.
    tick();
    wait_captured(&pg);
    stop(receiver, &s);
    let files = server
        .data_dir()
        .join(backup_testkit::s3::BUCKET)
        .join("faults");
    // The stream is whole and every piece reads back.
    let listing = s.json(&["pitr", "--source", "postgres"]);
    stream_is_whole_in(&s, &listing, &files);
    // A restore to a time: the restored server's `restore_command` reaches
    // this repository only with this process's AWS settings, and the
    // restore says so (the WAL restores themselves are tested on local
    // repositories).
    let target = s.path("restored");
    let out = s.run(&[
        "restore",
        "--at",
        &crate::postgres_pitr::time_after_marker(&pg, newest),
        "--to",
        target.to_str().unwrap(),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(
        err.contains("only with this environment's storage settings")
            && err.contains("AWS_ACCESS_KEY_ID"),
        "{err}"
    );
    assert!(server.faults() > 10, "only {} faults", server.faults());
}
