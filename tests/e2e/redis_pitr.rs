//! Redis point-in-time recovery (issue 31), checked against a model the
//! writer keeps without reading the stream: after every acknowledged
//! write it reads back each key it touched (type, value, absolute expiry
//! with `PEXPIRETIME`) on the same connection. Restores to five times and
//! one replication offset, into another server, must equal the model at
//! that point, key for key.
//!
//! Times are placed in pauses of the writer, so that "arrived at the
//! follower by T" and "acknowledged by T" are the same set of writes. The
//! follower is killed with SIGKILL halfway and started again: the stream
//! must have no gap, and no write may be applied twice (`INCR`s and
//! `LPUSH`es would show it).

use std::collections::BTreeMap;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backup_testkit::redis::RedisServer;
use chrono::{DateTime, Utc};

use crate::util::Scratch;

/// How long the writer runs. (The issue asks for a minute; 24 s with
/// six pauses gives the same coverage of commands and keeps CI time.)
const WRITE_FOR: Duration = Duration::from_secs(24);
/// Pauses in the writer, as fractions of `WRITE_FOR`: restore targets.
const PAUSES: [f64; 6] = [0.12, 0.3, 0.45, 0.62, 0.8, 0.93];
/// The pause whose replication offset is also restored to (`--at-offset`).
const OFFSET_PAUSE: usize = 3;
/// When the follower is killed and started again.
const KILL_AT: f64 = 0.5;
const PAUSE: Duration = Duration::from_millis(400);

/// A key's state: type, canonical value, absolute expiry in ms (-1: none).
type Value = (String, Vec<Vec<u8>>, i64);
type State = BTreeMap<(u32, Vec<u8>), Value>;

pub(crate) struct Follower(Child);

impl Follower {
    pub(crate) fn start(s: &Scratch, url: &str) -> Self {
        Self::start_with(s, url, &[])
    }

    pub(crate) fn start_with(s: &Scratch, url: &str, extra: &[&str]) -> Self {
        Self::start_as(s, url, extra, crate::util::PASSWORD)
    }

    /// Starts a follower that opens the repository with `password`.
    pub(crate) fn start_as(s: &Scratch, url: &str, extra: &[&str], password: &str) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_backup"))
            .args(["redis", "follow", url, "--slice-time", "200ms"])
            .args(extra)
            .env("BACKUP_REPOSITORY", &s.repo)
            .env("BACKUP_PASSWORD", password)
            .env("HOME", s.dir.path())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(s.path("follow.log")).unwrap())
            .spawn()
            .unwrap();
        Follower(child)
    }

    /// SIGTERM: stores what was read, then exits 0.
    pub(crate) fn stop(mut self) {
        let pid = self.0.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.0.wait().unwrap();
        assert!(status.success(), "the follower ended with {status}");
    }

    fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Polls `backup pitr --json` until a Redis window reaches `offset`.
pub(crate) fn wait_captured(s: &Scratch, offset: u64) -> serde_json::Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = s.json(&["pitr", "--source", "redis"]);
        let reached = list.as_array().unwrap().iter().any(|st| {
            st["windows"].as_array().unwrap().iter().any(|w| {
                w["to"]
                    .as_str()
                    .and_then(|t| t.parse::<u64>().ok())
                    .is_some_and(|t| t >= offset)
            })
        });
        if reached {
            return list;
        }
        assert!(
            Instant::now() < deadline,
            "the stream did not reach offset {offset}: {list}\n{}",
            std::fs::read_to_string(s.path("follow.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Restores the repository's Redis stream to `offset` into a new server
/// and returns its key `counter` (what a writer of `INCR counter` counts).
pub(crate) fn counter_restored_at(s: &Scratch, offset: u64) -> u64 {
    let target = RedisServer::start();
    s.ok(&[
        "restore",
        "--at-offset",
        &offset.to_string(),
        "--to",
        &target.url(),
    ]);
    redis::cmd("GET")
        .arg("counter")
        .query(&mut target.connection())
        .unwrap()
}

pub(crate) fn repl_offset(con: &mut redis::Connection) -> u64 {
    let info: String = redis::cmd("INFO").arg("replication").query(con).unwrap();
    info.lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

fn value(con: &mut redis::Connection, key: &[u8]) -> Option<Value> {
    let t: String = redis::cmd("TYPE").arg(key).query(con).unwrap();
    let mut v: Vec<Vec<u8>> = match t.as_str() {
        "none" => return None,
        "string" => vec![redis::cmd("GET").arg(key).query(con).unwrap()],
        "list" => redis::cmd("LRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .query(con)
            .unwrap(),
        "hash" => redis::cmd("HGETALL").arg(key).query(con).unwrap(),
        "set" => redis::cmd("SMEMBERS").arg(key).query(con).unwrap(),
        "zset" => redis::cmd("ZRANGE")
            .arg(key)
            .arg(0)
            .arg(-1)
            .arg("WITHSCORES")
            .query(con)
            .unwrap(),
        other => panic!("unexpected type {other}"),
    };
    if t == "hash" {
        let mut pairs: Vec<Vec<u8>> = v
            .chunks(2)
            .map(|p| [&p[0][..], b"=", &p[1][..]].concat())
            .collect();
        pairs.sort();
        v = pairs;
    } else if t == "set" {
        v.sort();
    }
    let exp: i64 = redis::cmd("PEXPIRETIME").arg(key).query(con).unwrap();
    Some((t, v, exp))
}

/// Every key of databases 0 and 1 of a server.
fn read_state(con: &mut redis::Connection) -> State {
    let mut st = State::new();
    for db in [0u32, 1] {
        redis::cmd("SELECT").arg(db).exec(con).unwrap();
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(con).unwrap();
        for k in keys {
            if let Some(v) = value(con, &k) {
                st.insert((db, k), v);
            }
        }
    }
    st
}

/// What the writer did: per write, the keys it left (None: absent) or a
/// flush of a database.
enum Op {
    Keys(Vec<(u32, Vec<u8>, Option<Value>)>),
    Flush(u32),
}

struct Log {
    ops: Vec<Op>,
    /// Per pause: its middle, the writes before it, the primary's offset.
    pauses: Vec<(DateTime<Utc>, usize, u64)>,
}

struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

/// Writes until `WRITE_FOR` has passed; calls `at_kill` once, halfway.
#[allow(clippy::too_many_lines)] // One loop: the command mix.
fn write(server: &RedisServer, mut at_kill: impl FnMut()) -> Log {
    let mut con = server.connection();
    let mut rng = Rng(0x2545_F491_4F6C_DD1D);
    let mut log = Log {
        ops: Vec::new(),
        pauses: Vec::new(),
    };
    let start = Instant::now();
    let mut pauses = PAUSES.iter().peekable();
    let mut killed = false;
    let mut db = 0u32;
    let mut n = 0u64;
    while start.elapsed() < WRITE_FOR {
        let frac = start.elapsed().as_secs_f64() / WRITE_FOR.as_secs_f64();
        if pauses.peek().is_some_and(|p| frac >= **p) {
            pauses.next();
            std::thread::sleep(PAUSE / 2);
            let mid = Utc::now();
            let offset = repl_offset(&mut con);
            log.pauses.push((mid, log.ops.len(), offset));
            std::thread::sleep(PAUSE / 2);
        }
        if !killed && frac >= KILL_AT {
            killed = true;
            at_kill();
        }
        n += 1;
        let pick =
            |prefix: &str, rng: &mut Rng, m: u64| format!("{prefix}:{}", rng.below(m)).into_bytes();
        let mut touched: Vec<Vec<u8>> = Vec::new();
        match rng.below(100) {
            0..=14 => {
                let key = pick("s", &mut rng, 60);
                redis::cmd("SET")
                    .arg(&key)
                    .arg(format!("v{n}"))
                    .exec(&mut con)
                    .unwrap();
                touched.push(key);
            }
            15..=19 => {
                // With an expiry: long (kept) or one second (gone by the
                // time the restores are compared).
                let key = pick("s", &mut rng, 60);
                let ex = if rng.below(4) == 0 {
                    1
                } else {
                    3600 + rng.below(100)
                };
                redis::cmd("SET")
                    .arg(&key)
                    .arg(format!("e{n}"))
                    .arg("EX")
                    .arg(ex)
                    .exec(&mut con)
                    .unwrap();
                touched.push(key);
            }
            20..=31 => {
                let key = pick("c", &mut rng, 20);
                redis::cmd("INCR").arg(&key).exec(&mut con).unwrap();
                touched.push(key);
            }
            32..=43 => {
                let key = pick("h", &mut rng, 20);
                redis::cmd("HSET")
                    .arg(&key)
                    .arg(format!("f{}", n % 7))
                    .arg(n)
                    .exec(&mut con)
                    .unwrap();
                touched.push(key);
            }
            44..=53 => {
                let key = pick("l", &mut rng, 15);
                redis::cmd("LPUSH").arg(&key).arg(n).exec(&mut con).unwrap();
                touched.push(key);
            }
            54..=63 => {
                let key = pick("z", &mut rng, 15);
                redis::cmd("ZADD")
                    .arg(&key)
                    .arg(n % 11)
                    .arg(format!("m{}", n % 29))
                    .exec(&mut con)
                    .unwrap();
                touched.push(key);
            }
            64..=68 => {
                let key = pick("h", &mut rng, 20);
                redis::cmd("EXPIRE")
                    .arg(&key)
                    .arg(7200 + rng.below(50))
                    .exec(&mut con)
                    .unwrap();
                touched.push(key);
            }
            69..=74 => {
                let key = [pick("s", &mut rng, 60), pick("l", &mut rng, 15)];
                redis::cmd("DEL")
                    .arg(&key[0])
                    .arg(&key[1])
                    .exec(&mut con)
                    .unwrap();
                touched.extend(key);
            }
            75..=84 => {
                // A transaction over several types.
                let (a, b, c) = (
                    pick("c", &mut rng, 20),
                    pick("l", &mut rng, 15),
                    pick("z", &mut rng, 15),
                );
                redis::pipe()
                    .atomic()
                    .cmd("INCRBY")
                    .arg(&a)
                    .arg(5)
                    .cmd("RPUSH")
                    .arg(&b)
                    .arg(format!("t{n}"))
                    .cmd("ZINCRBY")
                    .arg(&c)
                    .arg(2)
                    .arg("tx")
                    .exec(&mut con)
                    .unwrap();
                touched.extend([a, b, c]);
            }
            85..=97 => {
                // Database 1 (the stream SELECTs).
                db = 1 - db;
                redis::cmd("SELECT").arg(db).exec(&mut con).unwrap();
                let key = pick("d", &mut rng, 10);
                redis::cmd("SADD")
                    .arg(&key)
                    .arg(format!("x{}", n % 17))
                    .exec(&mut con)
                    .unwrap();
                touched.push(key);
            }
            _ => {
                if db == 1 {
                    redis::cmd("FLUSHDB").exec(&mut con).unwrap();
                    log.ops.push(Op::Flush(1));
                    continue;
                }
                let key = pick("s", &mut rng, 60);
                redis::cmd("PERSIST").arg(&key).exec(&mut con).unwrap();
                touched.push(key);
            }
        }
        let op = touched
            .into_iter()
            .map(|key| {
                let v = value(&mut con, &key);
                (db, key, v)
            })
            .collect();
        log.ops.push(Op::Keys(op));
    }
    log
}

/// The model after the first `n` writes, without keys expired by now.
fn state_after(initial: &State, log: &Log, n: usize) -> State {
    let mut st = initial.clone();
    for op in &log.ops[..n] {
        match op {
            Op::Flush(db) => st.retain(|(d, _), _| d != db),
            Op::Keys(keys) => {
                for (db, k, v) in keys {
                    match v {
                        Some(v) => st.insert((*db, k.clone()), v.clone()),
                        None => st.remove(&(*db, k.clone())),
                    };
                }
            }
        }
    }
    let now = Utc::now().timestamp_millis() + 2000;
    st.retain(|_, v| v.2 < 0 || v.2 > now);
    st
}

fn first_difference(want: &State, got: &State) -> Option<String> {
    let keys: std::collections::BTreeSet<_> = want.keys().chain(got.keys()).collect();
    keys.into_iter()
        .find(|k| want.get(*k) != got.get(*k))
        .map(|k| {
            format!(
                "db {} key {}: expected {:?}, restored {:?} ({} keys expected, {} restored)",
                k.0,
                String::from_utf8_lossy(&k.1),
                want.get(k),
                got.get(k),
                want.len(),
                got.len()
            )
        })
}

#[test]
fn restores_to_times_and_an_offset_from_the_captured_stream() {
    let source = RedisServer::start();
    let target = RedisServer::start();
    let s = Scratch::new();
    s.init();
    // Data from before the base: every type, two databases.
    let mut con = source.connection();
    for i in 0..30 {
        redis::cmd("SET")
            .arg(format!("s:{i}"))
            .arg(i)
            .exec(&mut con)
            .unwrap();
        redis::cmd("HSET")
            .arg(format!("h:{}", i % 10))
            .arg(format!("f{i}"))
            .arg(i)
            .exec(&mut con)
            .unwrap();
        redis::cmd("RPUSH")
            .arg(format!("l:{}", i % 5))
            .arg(i)
            .exec(&mut con)
            .unwrap();
    }
    redis::cmd("SELECT").arg(1).exec(&mut con).unwrap();
    redis::cmd("SADD")
        .arg("d:1")
        .arg("a")
        .arg("b")
        .exec(&mut con)
        .unwrap();
    let initial = read_state(&mut con);
    let at_base = repl_offset(&mut con);
    drop(con);

    // The follower takes the base itself (a full resynchronisation), then
    // follows.
    let follower = Follower::start(&s, &source.url());
    wait_captured(&s, at_base);
    let mut follower = Some(follower);
    let log = write(&source, || {
        follower.take().unwrap().kill();
        follower = Some(Follower::start(&s, &source.url()));
    });
    let end = repl_offset(&mut source.connection());
    let listed = wait_captured(&s, end);
    follower.take().unwrap().stop();

    let streams = listed.as_array().unwrap();
    assert_eq!(streams.len(), 1, "{listed}");
    assert!(
        streams[0]["gaps"].as_array().unwrap().is_empty(),
        "a SIGKILL of the follower left a gap: {listed}"
    );
    assert_eq!(
        streams[0]["windows"].as_array().unwrap().len(),
        1,
        "{listed}"
    );
    assert_eq!(log.pauses.len(), PAUSES.len());

    let target_url = target.url();
    let restore = |args: &[&str]| {
        let mut all = vec![
            "restore",
            "--to",
            &target_url,
            "--drop",
            "-y",
            "--no-safety-backup",
        ];
        all.extend_from_slice(args);
        s.ok(&all)
    };
    for (i, (at, writes, offset)) in log.pauses.iter().enumerate() {
        let t = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let out = restore(&["--at", &t]);
        let want = state_after(&initial, &log, *writes);
        let got = read_state(&mut target.connection());
        if let Some(d) = first_difference(&want, &got) {
            panic!("restore --at {t} (pause {i}, {writes} writes): {d}\n{out}");
        }
        if i == OFFSET_PAUSE {
            let out = restore(&["--at-offset", &offset.to_string()]);
            let got = read_state(&mut target.connection());
            if let Some(d) = first_difference(&want, &got) {
                panic!("restore --at-offset {offset}: {d}\n{out}");
            }
            assert!(
                out.contains(&format!("up to replication offset {offset}")),
                "{out}"
            );
        }
    }
    // Keys picked by glob: a FLUSHDB in the stream deletes only them, and
    // only once the commands before it are applied (a key written just
    // before the flush must not survive it).
    let (at, writes, _) = *log.pauses.last().unwrap();
    assert!(
        log.ops[..writes].windows(2).any(|w| matches!(
            w,
            [Op::Keys(k), Op::Flush(1)] if k.iter().any(|(db, ..)| *db == 1)
        )),
        "the writer flushed no database 1 just after writing to it before the last pause"
    );
    let picked = |st: State| -> State {
        st.into_iter()
            .filter(|((_, k), _)| k.starts_with(b"d:"))
            .collect()
    };
    let t = at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let out = restore(&["--at", &t, "--include", "d:*"]);
    let want = picked(state_after(&initial, &log, writes));
    let got = picked(read_state(&mut target.connection()));
    if let Some(d) = first_difference(&want, &got) {
        panic!("restore --at {t} --include 'd:*': {d}\n{out}");
    }
    // A dry run says what it would replay, and changes nothing.
    let before = target.digest();
    let (_, _, offset) = log.pauses[1];
    let out = s.ok(&[
        "restore",
        "--at-offset",
        &offset.to_string(),
        "--to",
        &target_url,
        "--dry-run",
    ]);
    assert!(
        out.contains("would replay") && out.contains(&format!("up to replication offset {offset}")),
        "{out}"
    );
    assert_eq!(target.digest(), before);
    // In the future and past the end of the capture: refused, and the
    // target keeps what it holds.
    let future = (Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let err = s.fails(
        &[
            "restore",
            "--at",
            &future,
            "--to",
            &target.url(),
            "--drop",
            "-y",
        ],
        2,
    );
    assert!(err.contains("in the future"), "{err}");
    let past_end = (end + 1_000_000).to_string();
    let err = s.fails(
        &[
            "restore",
            "--at-offset",
            &past_end,
            "--to",
            &target.url(),
            "--drop",
            "-y",
        ],
        2,
    );
    assert!(err.contains("after the newest captured change"), "{err}");
    assert_eq!(target.digest(), before);
}

/// Polls `backup pitr --json` until `done` holds for the Redis streams.
fn wait_listed(
    s: &Scratch,
    what: &str,
    done: impl Fn(&[serde_json::Value]) -> bool,
) -> Vec<serde_json::Value> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let list = s.json(&["pitr", "--source", "redis"]);
        let streams = list.as_array().unwrap().clone();
        if done(&streams) {
            return streams;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: {list}\n{}",
            std::fs::read_to_string(s.path("follow.log")).unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

#[test]
fn a_lost_backlog_and_a_primary_restart_are_recorded_as_gaps() {
    let mut source = RedisServer::builder()
        .config("repl-backlog-size", "16kb")
        .start();
    let s = Scratch::new();
    s.init();
    let mut con = source.connection();
    redis::cmd("SET").arg("a").arg(1).exec(&mut con).unwrap();
    let follower = Follower::start(&s, &source.url());
    wait_listed(&s, "no base snapshot", |st| st.len() == 1);
    redis::cmd("SET").arg("b").arg(2).exec(&mut con).unwrap();
    let stored = repl_offset(&mut con);
    assert!(
        stored > 0,
        "the follower is attached, so writes are streamed"
    );
    wait_captured(&s, stored);
    follower.stop();

    // 100 KiB of writes while nobody follows: the 16 KiB backlog loses
    // the stored end.
    let lost_from = Utc::now();
    let big = "x".repeat(1024);
    for i in 0..100 {
        redis::cmd("SET")
            .arg(format!("big:{i}"))
            .arg(&big)
            .exec(&mut con)
            .unwrap();
    }
    std::thread::sleep(Duration::from_millis(300));
    let lost_at = Utc::now();
    std::thread::sleep(Duration::from_millis(300));
    let follower = Follower::start(&s, &source.url());
    wait_listed(&s, "no second base snapshot", |st| {
        st.len() == 1 && st[0]["bases"].as_array().unwrap().len() == 2
    });
    redis::cmd("SET").arg("c").arg(3).exec(&mut con).unwrap();
    let end = repl_offset(&mut con);
    let streams = wait_listed(&s, "no gap for the lost backlog", |st| {
        st.len() == 1
            && st[0]["gaps"].as_array().unwrap().len() == 1
            && st[0]["windows"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| w["to"].as_str().and_then(|t| t.parse::<u64>().ok()) >= Some(end))
    });
    let gap = &streams[0]["gaps"][0];
    assert!(gap["reason"].as_str().unwrap().contains("backlog"), "{gap}");
    assert_eq!(
        streams[0]["bases"].as_array().unwrap().len(),
        2,
        "{streams:?}"
    );
    assert_eq!(
        streams[0]["windows"].as_array().unwrap().len(),
        2,
        "{streams:?}"
    );
    assert!(lost_from < lost_at);
    // A time inside the gap is refused, naming the missing range.
    let target = RedisServer::start();
    let t = lost_at.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    let err = s.fails(&["restore", "--at", &t, "--to", &target.url()], 2);
    assert!(err.contains("missing"), "{err}");
    assert_eq!(target.dbsize(0), 0);

    // A crash of the primary without persistence: a new history, so a new
    // stream from a new base, and a gap record ending the old one.
    source.restart();
    let mut con = source.connection();
    redis::cmd("SET")
        .arg("after-restart")
        .arg(1)
        .exec(&mut con)
        .unwrap();
    let streams = wait_listed(&s, "no new stream after the restart", |st| {
        st.len() == 2
            && st.iter().any(|x| {
                x["gaps"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .any(|g| g["reason"].as_str().unwrap().contains("history changed"))
            })
            && st.iter().any(|x| {
                !x["windows"].as_array().unwrap().is_empty()
                    && x["gaps"].as_array().unwrap().is_empty()
            })
    });
    assert_eq!(streams.len(), 2);
    // The new stream restores: to a time before a later write.
    std::thread::sleep(Duration::from_millis(300));
    let now = Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
    std::thread::sleep(Duration::from_millis(300));
    redis::cmd("SET")
        .arg("later")
        .arg(1)
        .exec(&mut con)
        .unwrap();
    wait_captured(&s, repl_offset(&mut con));
    follower.stop();
    s.ok(&["restore", "--at", &now, "--to", &target.url()]);
    let keys: Vec<String> = redis::cmd("KEYS")
        .arg("*")
        .query(&mut target.connection())
        .unwrap();
    assert_eq!(keys, vec!["after-restart".to_owned()]);
}

/// backupd with `capture = "continuous"` on a Redis job: the follower
/// takes its base (recorded as the job's), streams, reports in the
/// metrics, and stores what it read before the daemon exits.
#[test]
fn daemon_captures_the_replication_stream() {
    use crate::daemon::{config, metric, Daemon};
    let source = RedisServer::start();
    let s = Scratch::new();
    s.init();
    let port = backup_testkit::free_port();
    let job = format!(
        "[jobs.cache]\nrepository = \"main\"\nsource = \"{}\"\nschedule = \"0 0 1 1 *\"\ncapture = \"continuous\"\n",
        source.url()
    );
    let cfg = config(&s, "backupd.toml", port, &job, "");
    let d = Daemon::start(&s, &cfg, port, "daemon.log");
    let streaming = "backupd_capture_streaming{job=\"cache\",kind=\"redis-stream\"}";
    d.wait_for("the follower to stream", Duration::from_secs(60), || {
        metric(&d.metrics(), streaming) == Some(1.0)
    });
    let mut con = source.connection();
    for i in 0..20 {
        redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .exec(&mut con)
            .unwrap();
    }
    let end = repl_offset(&mut con);
    // The daemon's state has the stored offset (the follower may not have
    // read the last writes yet when it is stopped; it resumes from what it
    // stored, without a gap, at the next start).
    let stored = "backupd_capture_stored_position{job=\"cache\",kind=\"redis-stream\"}";
    d.wait_for("the writes to be stored", Duration::from_secs(60), || {
        metric(&d.metrics(), stored).is_some_and(|p| p >= end as f64)
    });
    let (code, _) = d.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(60));
    assert_eq!(code, 0);
    let listed = wait_captured(&s, end);
    let base = listed[0]["bases"][0]["id"].as_str().unwrap().to_owned();
    let snapshots = s.json(&["list"]);
    let entry = snapshots
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["id"] == base.as_str())
        .unwrap_or_else(|| panic!("{base} not in {snapshots}"));
    assert_eq!(entry["snapshot"]["job"], "cache", "{entry}");
    let target = RedisServer::start();
    s.ok(&[
        "restore",
        "--at-offset",
        &end.to_string(),
        "--to",
        &target.url(),
    ]);
    assert_eq!(target.dbsize(0), 20);
}
