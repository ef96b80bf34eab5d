//! MongoDB point-in-time recovery: oplog capture lag under a full-rate
//! writer, and the replay of the captured oplog against bare driver
//! loops, in one run, printed as ratios (see `benches/README.md`).
//!
//! `oplog_ratio BACKUP_BINARY [OPS]` (default 1 000 000): starts a
//! throwaway server (`backup_testkit::mongo`, with an oplog large enough
//! to hold every operation), seeds four collections, takes a base
//! snapshot, starts `backup oplog follow --slice-time 1s`, and writes OPS
//! mixed operations (inserts, `$set`/`$inc`/`$push`/`$unset` updates,
//! deletes; one oplog entry each) from four writers with bulk commands,
//! the fastest the server accepts them. Then it measures
//!
//! - capture lag: every 100 ms the server's newest write (`hello`
//!   `lastWrite`) is sampled; its lag is the time until the follower
//!   reports a stored slice that holds it;
//! - replay: `backup restore --at-ts LAST` (base plus every captured
//!   entry, into a renamed database) against a bare driver loop applying
//!   the same entries one command at a time in oplog order (the way the
//!   peers replay), and against unordered bulk writes per namespace
//!   (namespaces in parallel, runs of one kind as one unordered command
//!   of up to 1000 statements); the baselines start from the same base
//!   state, loaded untimed, and read the entries into memory untimed;
//! - the peak RSS of the follower and of the restore.
//!
//! The restored database of ours and of the loop must equal the source,
//! document for document as raw BSON, or the run fails.

#![allow(clippy::unwrap_used, clippy::expect_used)]
#![allow(clippy::many_single_char_names)] // c, d, t, q, u: client, database, clock, query, update

use std::collections::BTreeMap;
use std::io::BufRead;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backup_benches::run_backup;
use futures::TryStreamExt;
use mongodb::bson::{doc, Bson, Document, RawDocumentBuf, Timestamp};
use mongodb::Client;

const DB: &str = "pitrbench";
const COLLECTIONS: [&str; 4] = ["events", "orders", "profiles", "counters"];
/// Documents per collection before the base.
const SEED: i64 = 1000;

fn seed_doc(coll: &str, id: i64) -> Document {
    doc! {"_id": id, "coll": coll, "n": id, "name": format!("{coll}-{id:08}"), "nested": {"a": id, "b": "x".repeat((id % 64) as usize)}, "tags": ["seed"], "v": 0_i64}
}

/// One writer: its collection, in rounds of 400 inserts, 400 updates of
/// live documents (four kinds in turn) and 200 deletes, until `ops`
/// statements were sent.
async fn writer(c: Client, coll: &'static str, ops: u64) -> u64 {
    let db = c.database(DB);
    let col = db.collection::<Document>(coll);
    let mut live: std::collections::VecDeque<i64> = (0..SEED).collect();
    let mut next = SEED;
    let mut sent = 0u64;
    let mut k = 0i64;
    while sent < ops {
        let docs: Vec<Document> = (next..next + 400).map(|i| seed_doc(coll, i)).collect();
        live.extend(next..next + 400);
        next += 400;
        col.insert_many(docs).await.unwrap();
        let updates: Vec<Document> = (0..400)
            .map(|j| {
                k += 1;
                let id = live[((k * 7919) as usize + j) % live.len()];
                let u = match k % 4 {
                    0 => doc! {"$set": {"name": format!("renamed-{k}"), "nested.a": k}},
                    1 => doc! {"$inc": {"v": 1_i64}},
                    2 => doc! {"$push": {"tags": k}},
                    _ => doc! {"$unset": {"nested.b": ""}, "$set": {"u": k}},
                };
                doc! {"q": {"_id": id}, "u": u}
            })
            .collect();
        db.run_command(doc! {"update": coll, "updates": updates, "ordered": true})
            .await
            .unwrap();
        let deletes: Vec<Document> = (0..200)
            .map(|_| doc! {"q": {"_id": live.pop_front().unwrap()}, "limit": 1})
            .collect();
        db.run_command(doc! {"delete": coll, "deletes": deletes, "ordered": true})
            .await
            .unwrap();
        sent += 1000;
    }
    sent
}

/// Samples the server's newest write every 100 ms until `stop`.
async fn sample_writes(
    c: Client,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> Vec<(Instant, (u32, u32))> {
    let mut out = Vec::new();
    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
        let hello = c
            .database("admin")
            .run_command(doc! {"hello": 1})
            .await
            .unwrap();
        let at = Instant::now();
        if let Ok(ts) = hello
            .get_document("lastWrite")
            .and_then(|w| w.get_document("opTime"))
            .and_then(|o| o.get_timestamp("ts"))
        {
            out.push((at, (ts.time, ts.increment)));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    out
}

/// A position of the capture format (`{seconds:08X}{increment:08X}`).
fn position(p: &str) -> (u32, u32) {
    (
        u32::from_str_radix(&p[..8], 16).unwrap(),
        u32::from_str_radix(&p[8..16], 16).unwrap(),
    )
}

/// When each stored slice was reported, and the position it ends at.
type StoredLog = Arc<Mutex<Vec<(Instant, (u32, u32))>>>;

/// `backup --json oplog follow` under `/usr/bin/time`; a thread records
/// when each stored slice was reported and where it ends.
struct Follower {
    child: std::process::Child,
    stored: StoredLog,
    reader: Option<std::thread::JoinHandle<()>>,
}

impl Follower {
    fn start(bin: &str, repo: &std::path::Path, url: &str) -> Self {
        let mut child = Command::new("/usr/bin/time")
            .args(["-f", "MAXRSS_KIB=%M", bin, "--json", "oplog", "follow", url])
            .args(["--slice-time", "1s"])
            .env("BACKUP_REPOSITORY", repo)
            .env("BACKUP_PASSWORD", "bench")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("running /usr/bin/time backup oplog follow (apt-get install time)");
        let stored: StoredLog = Arc::new(Mutex::new(Vec::new()));
        let out = child.stdout.take().unwrap();
        let seen = stored.clone();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                let Ok(v) = serde_json::from_str::<serde_json::Value>(&line) else {
                    continue;
                };
                if v["event"] == "stored" {
                    if std::env::var_os("BENCH_VERBOSE").is_some() {
                        let newest = v["time_last"]
                            .as_str()
                            .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok());
                        eprintln!(
                            "stored {} entries, {} after its newest entry was written",
                            v["entries"],
                            newest.map_or(String::new(), |t| format!(
                                "{:.2} s",
                                (chrono::Utc::now() - t.with_timezone(&chrono::Utc))
                                    .num_milliseconds() as f64
                                    / 1000.0
                            ))
                        );
                    }
                    let last = position(v["last"].as_str().unwrap());
                    seen.lock().unwrap().push((Instant::now(), last));
                }
            }
        });
        Follower {
            child,
            stored,
            reader: Some(reader),
        }
    }

    /// Waits until a stored slice ends after `ts`.
    async fn wait_stored(&mut self, ts: (u32, u32)) {
        // Counted in polls (10 minutes): shared machines' clocks jump.
        for _ in 0..6000 {
            if self.stored.lock().unwrap().iter().any(|(_, l)| *l > ts) {
                return;
            }
            if let Some(status) = self.child.try_wait().unwrap() {
                let mut err = String::new();
                std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut err)
                    .unwrap();
                panic!("the follower ended with {status}: {err}");
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        panic!(
            "the follower did not store {ts:?}; stored: {:?}",
            self.stored.lock().unwrap().last()
        );
    }

    /// SIGTERM; the peak RSS in KiB.
    fn stop(&mut self) -> u64 {
        // /usr/bin/time passes no signal on: stop its child, the follower.
        let time_pid = self.child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{time_pid}/task/{time_pid}/children")).unwrap();
        for pid in children.split_whitespace() {
            Command::new("kill").args(["-TERM", pid]).status().unwrap();
        }
        let mut err = String::new();
        std::io::Read::read_to_string(self.child.stderr.as_mut().unwrap(), &mut err).unwrap();
        let status = self.child.wait().unwrap();
        assert!(status.success(), "the follower failed: {err}");
        if let Some(r) = self.reader.take() {
            r.join().unwrap();
        }
        backup_benches::max_rss_kib(&err)
    }
}

impl Drop for Follower {
    fn drop(&mut self) {
        // A failed run leaves no follower behind (a stopped one is gone).
        let time_pid = self.child.id();
        if let Ok(children) =
            std::fs::read_to_string(format!("/proc/{time_pid}/task/{time_pid}/children"))
        {
            for pid in children.split_whitespace() {
                let _ = Command::new("kill").args(["-KILL", pid]).status();
            }
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One captured data entry, as the baselines apply it.
enum Step {
    Insert(Document),
    Update(Document, Document),
    Delete(Document),
}

/// The data entries of `DB` after `after` up to `until`, in oplog order,
/// per collection.
async fn entries(c: &Client, after: Timestamp, until: Timestamp) -> Vec<(String, Step)> {
    let mut cur = c
        .database("local")
        .collection::<Document>("oplog.rs")
        .find(doc! {"ts": {"$gt": after, "$lte": until}, "ns": {"$regex": format!("^{DB}\\.")}})
        .sort(doc! {"ts": 1})
        .await
        .unwrap();
    let mut out = Vec::new();
    while let Some(e) = cur.try_next().await.unwrap() {
        let coll = e.get_str("ns").unwrap()[DB.len() + 1..].to_owned();
        let o = e.get_document("o").unwrap().clone();
        let step = match e.get_str("op").unwrap() {
            "i" => Step::Insert(o),
            "d" => Step::Delete(o),
            "u" => Step::Update(e.get_document("o2").unwrap().clone(), update_of(&o)),
            "c" | "n" => continue,
            other => panic!("unexpected op {other}"),
        };
        out.push((coll, step));
    }
    out
}

/// An oplog update entry as an update document: `SecantusDB`'s
/// `diff: {updatedFields, removedFields}` (the bench never truncates an
/// array), or an operator document as it is.
fn update_of(o: &Document) -> Document {
    let Ok(diff) = o.get_document("diff") else {
        let mut u = o.clone();
        u.remove("$v");
        return u;
    };
    assert!(
        diff.get_array("truncatedArrays")
            .map_or(true, Vec::is_empty),
        "the bench does not truncate arrays: {o}"
    );
    let mut u = Document::new();
    if let Ok(set) = diff.get_document("updatedFields") {
        if !set.is_empty() {
            u.insert("$set", set.clone());
        }
    }
    if let Ok(removed) = diff.get_array("removedFields") {
        if !removed.is_empty() {
            let unset: Document = removed
                .iter()
                .map(|f| (f.as_str().unwrap().to_owned(), Bson::String(String::new())))
                .collect();
            u.insert("$unset", unset);
        }
    }
    u
}

/// Loads the base state (the seed) into `db`, untimed.
async fn load_seed(c: &Client, db: &str) {
    for coll in COLLECTIONS {
        c.database(db)
            .collection::<Document>(coll)
            .insert_many((0..SEED).map(|i| seed_doc(coll, i)))
            .await
            .unwrap();
    }
}

/// The peers' replay: one command per entry, in oplog order.
async fn loop_replay(c: &Client, db: &str, steps: &[(String, Step)]) -> Duration {
    let d = c.database(db);
    let t = Instant::now();
    for (coll, step) in steps {
        let col = d.collection::<Document>(coll);
        match step {
            Step::Insert(o) => {
                col.insert_one(o).await.unwrap();
            }
            Step::Update(q, u) => {
                col.update_one(q.clone(), u.clone()).await.unwrap();
            }
            Step::Delete(q) => {
                col.delete_one(q.clone()).await.unwrap();
            }
        }
    }
    t.elapsed()
}

/// Unordered bulk writes: per namespace (in parallel), each run of one
/// kind sent as unordered commands of up to 1000 statements.
async fn bulk_replay(c: &Client, db: &str, steps: &[(String, Step)]) -> Duration {
    let mut per: BTreeMap<&str, Vec<&Step>> = BTreeMap::new();
    for (coll, s) in steps {
        per.entry(coll).or_default().push(s);
    }
    // Commands built before the clock starts.
    let mut jobs: Vec<(String, Vec<Document>)> = Vec::new();
    for (coll, steps) in per {
        let mut cmds = Vec::new();
        let mut run: Vec<Document> = Vec::new();
        let mut kind = 0u8;
        let flush = |kind: u8, run: &mut Vec<Document>, cmds: &mut Vec<Document>| {
            if run.is_empty() {
                return;
            }
            let r = std::mem::take(run);
            cmds.push(match kind {
                0 => doc! {"insert": coll, "documents": r, "ordered": false},
                1 => doc! {"update": coll, "updates": r, "ordered": false},
                _ => doc! {"delete": coll, "deletes": r, "ordered": false},
            });
        };
        for s in steps {
            let (k, st) = match s {
                Step::Insert(o) => (0, o.clone()),
                Step::Update(q, u) => (1, doc! {"q": q.clone(), "u": u.clone()}),
                Step::Delete(q) => (2, doc! {"q": q.clone(), "limit": 1}),
            };
            if k != kind || run.len() == 1000 {
                flush(kind, &mut run, &mut cmds);
                kind = k;
            }
            run.push(st);
        }
        flush(kind, &mut run, &mut cmds);
        jobs.push((coll.to_owned(), cmds));
    }
    let t = Instant::now();
    let tasks: Vec<_> = jobs
        .into_iter()
        .map(|(_, cmds)| {
            let d = c.database(db);
            tokio::spawn(async move {
                for cmd in cmds {
                    d.run_command(cmd).await.unwrap();
                }
            })
        })
        .collect();
    for task in tasks {
        task.await.unwrap();
    }
    t.elapsed()
}

/// `db` equals the source, collection by collection, as raw BSON in `_id`
/// order.
async fn assert_same(c: &Client, db: &str) {
    for coll in COLLECTIONS {
        let read = |d: &str| {
            let col = c.database(d).collection::<RawDocumentBuf>(coll);
            async move {
                let cur = col.find(doc! {}).sort(doc! {"_id": 1}).await.unwrap();
                cur.try_collect::<Vec<_>>().await.unwrap()
            }
        };
        let (a, b) = (read(DB).await, read(db).await);
        assert_eq!(a.len(), b.len(), "{db}.{coll}: document count");
        for (x, y) in a.iter().zip(&b) {
            assert_eq!(
                x.as_bytes(),
                y.as_bytes(),
                "{db}.{coll}: {:?} differs from the source's {:?}",
                y.to_document(),
                x.to_document()
            );
        }
    }
}

fn p99(mut v: Vec<f64>) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    v[((v.len() as f64 * 0.99).ceil() as usize).clamp(1, v.len()) - 1]
}

#[tokio::main]
#[allow(clippy::too_many_lines)] // One run: load, capture, three replays, report.
async fn main() {
    let mut args = std::env::args().skip(1);
    let bin = args.next().expect("usage: oplog_ratio BACKUP_BINARY [OPS]");
    let ops: u64 = args
        .next()
        .map_or(1_000_000, |d| d.parse().expect("OPS is a number"));
    // Room for the writes and three replays of them: the test server
    // prunes a full oplog on every write, which slows the replays that
    // run after the first one several times over.
    let cap = (ops * 5 + 100_000).to_string();
    let server = backup_testkit::mongo::MongoServer::start_with(&[
        "--oplog-max-entries",
        &cap,
        "--oplog-retention-seconds",
        "86400",
    ]);
    let url = server.url("");
    // The Python server answers nothing else while it scans a large
    // oplog (the entries read back below): the driver's monitor must not
    // give up on it meanwhile.
    let patient = format!("{url}&connectTimeoutMS=900000&serverSelectionTimeoutMS=900000");
    let c = Client::with_uri_str(&patient).await.unwrap();
    load_seed(&c, DB).await;

    let repo = tempfile::tempdir().unwrap();
    let repo_path = repo.path().join("repo");
    run_backup(&bin, &repo_path, &["init"]);
    let base_end = {
        let (_, _, out) = run_backup(&bin, &repo_path, &["--json", "create", &url]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let end = &v["snapshot"]["metadata"]["oplog"]["end"];
        assert!(
            end.is_object(),
            "the base snapshot records its oplog window: {v:#}"
        );
        Timestamp {
            time: u32::try_from(end["t"].as_u64().unwrap()).unwrap(),
            increment: u32::try_from(end["i"].as_u64().unwrap()).unwrap(),
        }
    };
    let mut follower = Follower::start(&bin, &repo_path, &url);
    // The follower starts after the base: give it its first read.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = tokio::spawn(sample_writes(c.clone(), stop.clone()));
    let t = Instant::now();
    let writers: Vec<_> = COLLECTIONS
        .iter()
        .map(|coll| tokio::spawn(writer(c.clone(), coll, ops / 4)))
        .collect();
    let mut sent = 0;
    for w in writers {
        sent += w.await.unwrap();
    }
    let write_time = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.await.unwrap();
    let hello = c
        .database("admin")
        .run_command(doc! {"hello": 1})
        .await
        .unwrap();
    let last = hello
        .get_document("lastWrite")
        .unwrap()
        .get_document("opTime")
        .unwrap()
        .get_timestamp("ts")
        .unwrap();
    // The follower holds back the entries of the newest timestamp until a
    // later one shows none shares it (SecantusDB logs a transaction's
    // operations at one timestamp; mongod's idle no-op writer does this
    // every 10 s): one more write, in another database.
    c.database("pitrbench_tail")
        .collection::<Document>("t")
        .insert_one(doc! {"_id": 1})
        .await
        .unwrap();
    follower.wait_stored((last.time, last.increment)).await;
    let stored = follower.stored.lock().unwrap().clone();
    let lags: Vec<f64> = samples
        .iter()
        .map(|(at, ts)| {
            let (when, _) = stored
                .iter()
                .find(|(_, l)| l > ts)
                .expect("every sampled write is stored");
            when.saturating_duration_since(*at).as_secs_f64()
        })
        .collect();
    let lag_max = lags.iter().copied().fold(0.0, f64::max);
    let lag_p50 = {
        let mut v = lags.clone();
        v.sort_by(f64::total_cmp);
        v.get(v.len() / 2).copied().unwrap_or(0.0)
    };
    let lag_p99 = p99(lags);
    let follow_rss = follower.stop();

    let steps = entries(&c, base_end, last).await;
    let n = steps.len() as u64;
    assert!(n >= sent * 9 / 10, "{n} entries for {sent} statements");

    let at_ts = format!("{}:{}", last.time, last.increment);
    let (ours, restore_rss, _) = run_backup(
        &bin,
        &repo_path,
        &[
            "restore",
            "--at-ts",
            &at_ts,
            "--to",
            &url,
            "--include",
            &format!("{DB}.*"),
            "--rename",
            &format!("{DB}:ours"),
        ],
    );
    assert_same(&c, "ours").await;
    eprintln!("ours: {:.1} s for {n} entries", ours.as_secs_f64());
    // On the test server a lone write costs more the longer its oplog
    // (379 operations per second at 20 000 entries, 65 at 200 000), so
    // the loop takes hours at a million: BENCH_SKIP_LOOP=1 leaves it out.
    let per_op = if std::env::var_os("BENCH_SKIP_LOOP").is_some() {
        None
    } else {
        load_seed(&c, "per_op").await;
        let per_op = loop_replay(&c, "per_op", &steps).await;
        assert_same(&c, "per_op").await;
        eprintln!("per-operation loop: {:.1} s", per_op.as_secs_f64());
        Some(per_op)
    };
    // A fresh client: the server drops connections left idle during the
    // long per-operation loop.
    let c = Client::with_uri_str(&patient).await.unwrap();
    load_seed(&c, "bulk").await;
    let bulk = bulk_replay(&c, "bulk", &steps).await;

    let rate = |d: Duration| n as f64 / d.as_secs_f64();
    match per_op {
        Some(p) => println!(
            "oplog replay throughput ratio (ours / per-operation loop) = {:.2}   (target >= 1.5)",
            p.as_secs_f64() / ours.as_secs_f64()
        ),
        None => println!(
            "oplog replay throughput ratio (ours / per-operation loop): not run (BENCH_SKIP_LOOP)"
        ),
    }
    println!(
        "oplog replay throughput ratio (ours / unordered bulk per namespace) = {:.2}   (target >= 1.0)",
        bulk.as_secs_f64() / ours.as_secs_f64()
    );
    println!(
        "capture lag while writing at full rate: p50 {lag_p50:.2} s, p99 {lag_p99:.2} s, max {lag_max:.2} s over {} samples   (target p99 <= 2 s; slices of 1 s)",
        samples.len()
    );
    println!(
        "peak RSS: follower {} MB, restore {} MB   (target < 300)",
        follow_rss / 1024,
        restore_rss / 1024
    );
    println!(
        "operations per second: server's own write rate {:.0} (4 bulk writers), ours {:.0}, per-operation loop {}, unordered bulk {:.0}",
        sent as f64 / write_time.as_secs_f64(),
        rate(ours),
        per_op.map_or_else(|| "not run".to_owned(), |p| format!("{:.0}", rate(p))),
        rate(bulk)
    );
    println!(
        "({n} oplog entries replayed: inserts, $set/$inc/$push/$unset updates and deletes over 4 collections; ours includes restoring the {} document base)",
        SEED * 4
    );
}
