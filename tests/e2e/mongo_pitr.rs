//! MongoDB point-in-time recovery against a throwaway `SecantusDB` replica
//! set: the oplog captured by `backup oplog follow` (killed and resumed on
//! the way), restores to a time and to an oplog timestamp checked against
//! the source's own oplog (exactly the entries at or before the target),
//! updates, transactions and DDL replayed, `--dry-run`, selection and
//! renames applied to the replay, and the refusals that protect a restore
//! (before the oldest base, in the future, over missing slices, a
//! PostgreSQL target on an oplog).
//!
//! One server serves as source and, under other database names, as the
//! restore target: restores write after the last point tested, so what
//! they add to the oplog never falls inside a tested window.
#![allow(clippy::many_single_char_names)] // m, c, s: server, client, scratch as in mongo.rs

use std::collections::BTreeSet;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use backup_testkit::mongo::MongoServer;
use mongodb::bson::{doc, Bson, Document, Timestamp};
use mongodb::sync::Client;

use crate::mongo::{assert_same_db, collections, raw_docs};
use crate::util::Scratch;

/// `backup oplog follow` as a child process.
pub(crate) struct Follower(Child);

impl Follower {
    pub(crate) fn start(s: &Scratch, url: &str) -> Self {
        Self::start_with(s, url, crate::util::PASSWORD)
    }

    /// [`Follower::start`] opening the repository with `password`.
    pub(crate) fn start_with(s: &Scratch, url: &str, password: &str) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_backup"))
            .args(["oplog", "follow", url, "--slice-time", "1s"])
            .env("BACKUP_REPOSITORY", &s.repo)
            .env("BACKUP_PASSWORD", password)
            .env("HOME", s.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
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

    /// SIGKILL: whatever was read and not stored is lost to this process.
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

/// The oplog entries of `ns` in timestamp order: (ts, the `_id` written).
fn oplog_of(c: &Client, ns: &str) -> Vec<(Timestamp, Bson)> {
    c.database("local")
        .collection::<Document>("oplog.rs")
        .find(doc! {"ns": ns, "op": "i"})
        .sort(doc! {"ts": 1})
        .run()
        .unwrap()
        .map(|d| {
            let d = d.unwrap();
            (
                d.get_timestamp("ts").unwrap(),
                d.get_document("o").unwrap().get("_id").unwrap().clone(),
            )
        })
        .collect()
}

/// The newest entry of the whole oplog.
pub(crate) fn newest(c: &Client) -> Timestamp {
    c.database("local")
        .collection::<Document>("oplog.rs")
        .find_one(doc! {})
        .sort(doc! {"ts": -1})
        .run()
        .unwrap()
        .unwrap()
        .get_timestamp("ts")
        .unwrap()
}

pub(crate) fn ts_arg(t: Timestamp) -> String {
    format!("{}:{}", t.time, t.increment)
}

fn parse_ts(s: &str) -> (u32, u32) {
    let (a, b) = s.split_once(':').unwrap();
    (a.parse().unwrap(), b.parse().unwrap())
}

/// Waits until the stored oplog reaches `t` (the window of `backup pitr`
/// ends at or after it).
pub(crate) fn wait_stored(s: &Scratch, t: Timestamp) -> serde_json::Value {
    let start = Instant::now();
    loop {
        let v = s.json(&["pitr"]);
        let reached = v.as_array().unwrap().iter().any(|st| {
            st["windows"]
                .as_array()
                .unwrap()
                .iter()
                .any(|w| parse_ts(w["to"].as_str().unwrap()) >= (t.time, t.increment))
        });
        if reached {
            return v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(90),
            "the captured oplog did not reach {}: {v:#}",
            ts_arg(t)
        );
        std::thread::sleep(Duration::from_millis(300));
    }
}

/// `_id`s of `db.coll`.
fn ids(c: &Client, db: &str, coll: &str) -> BTreeSet<i64> {
    c.database(db)
        .collection::<Document>(coll)
        .find(doc! {})
        .run()
        .unwrap()
        .map(|d| match d.unwrap().get("_id").unwrap() {
            Bson::Int32(i) => i64::from(*i),
            Bson::Int64(i) => *i,
            other => panic!("unexpected _id {other}"),
        })
        .collect()
}

/// The `seq` ids whose insert is at or before `until`.
fn expected(entries: &[(Timestamp, Bson)], until: (u32, u32)) -> BTreeSet<i64> {
    entries
        .iter()
        .filter(|(t, _)| (t.time, t.increment) <= until)
        .map(|(_, id)| id.as_i64().or(id.as_i32().map(i64::from)).unwrap())
        .collect()
}

/// Writes `seq` ids `from..to` with updates, deletes and DDL around them.
fn phase(c: &Client, from: i64, to: i64) {
    let db = c.database("shop");
    let seq = db.collection::<Document>("seq");
    let orders = db.collection::<Document>("orders");
    for n in from..to {
        seq.insert_one(doc! {"_id": n, "at": n}).run().unwrap();
        let id = n % 40;
        // Field updates (logged as diffs), unsets, array pushes,
        // replacements and deletes.
        orders
            .update_one(
                doc! {"_id": id},
                doc! {"$set": {"qty": n, "meta.last": n}, "$push": {"hist": n}, "$unset": {"note": ""}},
            )
            .run()
            .unwrap();
        if n % 5 == 0 {
            orders
                .replace_one(
                    doc! {"_id": id + 100},
                    doc! {"_id": id + 100, "replaced": n},
                )
                .upsert(true)
                .run()
                .unwrap();
        }
        if n % 7 == 0 {
            orders.delete_one(doc! {"_id": 60 + n}).run().unwrap();
        }
    }
}

#[test]
#[allow(clippy::too_many_lines)] // One scenario: the capture, then restores and refusals against it.
fn restores_to_a_time_and_a_timestamp_from_the_captured_oplog() {
    let m = MongoServer::start();
    let c = Client::with_uri_str(m.url("")).unwrap();
    let s = Scratch::new();
    s.init();
    let url = m.url("");

    // Before the base.
    let shop = c.database("shop");
    shop.collection::<Document>("orders")
        .insert_many(
            (0..100).map(
                |i| doc! {"_id": i, "sku": format!("s{i}"), "qty": 0, "note": "n", "hist": []},
            ),
        )
        .run()
        .unwrap();
    shop.run_command(
        doc! {"createIndexes": "orders", "indexes": [{"key": {"sku": 1}, "name": "sku_1"}]},
    )
    .run()
    .unwrap();
    shop.collection::<Document>("gone")
        .insert_many((0..5).map(|i| doc! {"_id": i}))
        .run()
        .unwrap();
    shop.collection::<Document>("old")
        .insert_many((0..5).map(|i| doc! {"_id": i, "v": i}))
        .run()
        .unwrap();
    // A database dropped during the capture (below).
    for coll in ["a", "b"] {
        c.database("scratch")
            .collection::<Document>(coll)
            .insert_many((0..3).map(|i| doc! {"_id": i}))
            .run()
            .unwrap();
    }
    let before_base = chrono::Utc::now() - chrono::Duration::hours(1);
    // Stamped two hours back (for the retention check at the end): its
    // place in the oplog is where it was taken.
    let stamped = (chrono::Utc::now() - chrono::Duration::hours(2)).to_rfc3339();
    let base = s.json(&["create", &url, "--time", &stamped]);
    let base_id = base["id"].as_str().unwrap().to_owned();

    // Nothing captured yet: no window reaches past the base.
    let follower = Follower::start(&s, &url);
    phase(&c, 1, 20);
    std::thread::sleep(Duration::from_millis(1100));
    // Killed while it runs, then DDL while it is down: the restarted
    // follower continues exactly where the stored slices end.
    follower.kill();
    shop.run_command(doc! {"create": "fresh"}).run().unwrap();
    shop.collection::<Document>("fresh")
        .insert_one(doc! {"_id": 1, "f": true})
        .run()
        .unwrap();
    shop.run_command(
        doc! {"createIndexes": "orders", "indexes": [{"key": {"qty": -1}, "name": "qty_-1"}]},
    )
    .run()
    .unwrap();
    let follower = Follower::start(&s, &url);
    phase(&c, 20, 40);
    {
        let mut session = c.start_session().run().unwrap();
        session.start_transaction().run().unwrap();
        let orders = shop.collection::<Document>("orders");
        orders
            .insert_one(doc! {"_id": 1000, "txn": true})
            .session(&mut session)
            .run()
            .unwrap();
        orders
            .update_one(doc! {"_id": 1}, doc! {"$set": {"txn": true}})
            .session(&mut session)
            .run()
            .unwrap();
        orders
            .delete_one(doc! {"_id": 2})
            .session(&mut session)
            .run()
            .unwrap();
        session.commit_transaction().run().unwrap();
    }
    c.database("admin")
        .run_command(doc! {"renameCollection": "shop.old", "to": "shop.renamed"})
        .run()
        .unwrap();
    shop.collection::<Document>("gone").drop().run().unwrap();
    c.database("scratch").drop().run().unwrap();
    std::thread::sleep(Duration::from_millis(1100));
    phase(&c, 40, 60);
    let last = newest(&c);
    wait_stored(&s, last);
    // A later slice (in another database), so that the slice holding
    // `last` is not the newest one: removed below, it leaves a gap.
    std::thread::sleep(Duration::from_millis(1100));
    c.database("other")
        .collection::<Document>("tail")
        .insert_one(doc! {"_id": 1})
        .run()
        .unwrap();
    let tail = newest(&c);
    let pitr = wait_stored(&s, tail);
    follower.stop();

    // One stream, one window from the base, no gap: nothing was skipped
    // while the follower was down, and no slice overlaps another.
    let streams = pitr.as_array().unwrap();
    assert_eq!(streams.len(), 1, "{pitr:#}");
    let st = &streams[0];
    assert_eq!(st["kind"], "mongodb");
    assert_eq!(st["capture"], "mongodb-oplog");
    assert_eq!(st["gaps"].as_array().unwrap().len(), 0, "{pitr:#}");
    assert_eq!(st["windows"].as_array().unwrap().len(), 1, "{pitr:#}");
    assert_eq!(st["windows"][0]["bases"][0], base_id.as_str());
    let mut ranges: Vec<(String, String)> = std::fs::read_dir(format!("{}/captures", s.repo))
        .unwrap()
        .map(|e| {
            let n = e.unwrap().file_name().into_string().unwrap();
            let p: Vec<&str> = n.split('.').collect();
            (p[1].to_owned(), p[2].to_owned())
        })
        .collect();
    ranges.sort();
    for w in ranges.windows(2) {
        assert_eq!(w[0].1, w[1].0, "slices overlap or leave a hole: {ranges:?}");
    }
    // The independent format reader (tests/format_reader) reads the same
    // slices: every oplog entry after the base, up to the last, once.
    let read = crate::format_reader::reader_json(
        &s.repo,
        crate::util::PASSWORD,
        &[std::ffi::OsStr::new("captures")],
    );
    let runs = read["mongodb_runs"].as_object().unwrap();
    assert_eq!(runs.len(), 1, "{read:#}");
    let runs = runs.values().next().unwrap().as_array().unwrap();
    assert_eq!(runs.len(), 1, "{read:#}");
    let end = &base["snapshot"]["metadata"]["oplog"]["end"];
    let base_end = Timestamp {
        time: u32::try_from(end["t"].as_u64().unwrap()).unwrap(),
        increment: u32::try_from(end["i"].as_u64().unwrap()).unwrap(),
    };
    let after_base = c
        .database("local")
        .collection::<Document>("oplog.rs")
        .count_documents(doc! {"ts": {"$gt": base_end, "$lte": tail}})
        .run()
        .unwrap();
    let read_entries: u64 = read["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|r| r["entries"].as_u64())
        .sum();
    assert_eq!(read_entries, after_base, "{read:#}");
    let human = s.ok(&["pitr", "--source", "mongodb"]);
    assert!(human.contains("restorable"), "{human}");
    assert!(human.contains(&base_id[..8]), "{human}");

    let seq = oplog_of(&c, "shop.seq");
    assert_eq!(seq.len(), 59);

    // To an oplog timestamp: entry 30's insert and nothing after it.
    let target = seq[29].0;
    let out = s.json(&[
        "restore",
        "--at-ts",
        &ts_arg(target),
        "--to",
        &url,
        "--include",
        "shop.*",
        "--rename",
        "shop:at_ts",
    ]);
    assert_eq!(out["snapshot"], base_id.as_str(), "{out:#}");
    assert_eq!(
        ids(&c, "at_ts", "seq"),
        expected(&seq, (target.time, target.increment))
    );
    assert_eq!(ids(&c, "at_ts", "seq").len(), 30);

    // To a time: every entry of that second, nothing of the next (a
    // second of the second phase, which a pause separates from the third:
    // a second still being written is not restorable by time yet).
    let t = seq[35].0.time;
    let at = chrono::DateTime::from_timestamp(i64::from(t), 0)
        .unwrap()
        .to_rfc3339();
    s.ok(&[
        "restore",
        "--at",
        &at,
        "--to",
        &url,
        "--include",
        "shop.*",
        "--rename",
        "shop:at_time",
    ]);
    let want = expected(&seq, (t, u32::MAX));
    assert!(want.contains(&36) && !want.contains(&59));
    assert_eq!(ids(&c, "at_time", "seq"), want);

    // To the last change: the database equals the source (updates as
    // diffs, the transaction, created, renamed and dropped collections,
    // indexes built during the window).
    s.ok(&[
        "restore",
        "--at-ts",
        &ts_arg(last),
        "--to",
        &url,
        "--include",
        "shop.*",
        "--rename",
        "shop:at_end",
    ]);
    assert_same_db((&c, "shop"), (&c, "at_end"));
    let names: Vec<String> = collections(&c, "at_end").into_iter().map(|x| x.0).collect();
    assert!(names.contains(&"renamed".to_owned()) && !names.contains(&"gone".to_owned()));
    let o1 = c
        .database("at_end")
        .collection::<Document>("orders")
        .find_one(doc! {"_id": 1})
        .run()
        .unwrap()
        .unwrap();
    assert_eq!(o1.get_bool("txn"), Ok(true));

    // Selection applies to the replay: one collection, renamed.
    s.ok(&[
        "restore",
        "--at-ts",
        &ts_arg(last),
        "--to",
        &url,
        "--include",
        "shop.seq",
        "--rename",
        "shop.seq:only.numbers",
    ]);
    assert_eq!(raw_docs(&c, "shop", "seq"), raw_docs(&c, "only", "numbers"));
    assert_eq!(collections(&c, "only").len(), 1);

    // The dropped database is gone from a copy that selected it whole,
    // and from one that selected one collection of it under another name
    // (the server logs a drop per collection before `dropDatabase`).
    s.ok(&[
        "restore",
        "--at-ts",
        &ts_arg(last),
        "--to",
        &url,
        "--include",
        "scratch.*",
        "--rename",
        "scratch:scratch_whole",
    ]);
    assert!(collections(&c, "scratch_whole").is_empty());
    s.ok(&[
        "restore",
        "--at-ts",
        &ts_arg(last),
        "--to",
        &url,
        "--include",
        "scratch.a",
        "--rename",
        "scratch.a:part.a",
    ]);
    assert!(collections(&c, "part").is_empty());
    assert!(collections(&c, "scratch").is_empty());
    // Before the drop, the same selection holds the collection.
    s.ok(&[
        "restore",
        "--at-ts",
        &ts_arg(seq[29].0),
        "--to",
        &url,
        "--include",
        "scratch.a",
        "--rename",
        "scratch.a:early.a",
    ]);
    assert_eq!(raw_docs(&c, "early", "a").len(), 3);

    // A dry run says what it would do and changes nothing.
    let dry = s.ok(&[
        "restore",
        "--at",
        &at,
        "--to",
        &url,
        "--include",
        "shop.*",
        "--rename",
        "shop:dry",
        "--dry-run",
    ]);
    assert!(dry.contains(&base_id[..8]), "{dry}");
    assert!(dry.to_lowercase().contains("oplog"), "{dry}");
    assert!(
        !c.list_database_names()
            .run()
            .unwrap()
            .contains(&"dry".to_owned()),
        "a dry run created the database"
    );

    // Refusals: each exits 2, names the reason and writes nothing.
    let restore_at = |at: &str, db: &str| {
        s.fails(
            &[
                "restore",
                "--at",
                at,
                "--to",
                &url,
                "--include",
                "shop.*",
                "--rename",
                &format!("shop:{db}"),
            ],
            2,
        )
    };
    let e = restore_at(&before_base.to_rfc3339(), "r1");
    assert!(e.contains("before the oldest base snapshot"), "{e}");
    let future = (chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339();
    let e = restore_at(&future, "r2");
    assert!(e.contains("in the future"), "{e}");
    let e = s.fails(
        &[
            "restore",
            "--at-lsn",
            "0/1000000",
            "--to",
            &url,
            "--rename",
            "shop:r3",
        ],
        2,
    );
    assert!(e.contains("PostgreSQL"), "{e}");
    let e = s.fails(&["restore", "--at-ts", "12:x", "--to", &url], 2);
    assert!(e.contains("SECONDS:INCREMENT"), "{e}");
    // A slice removed from the middle: the window splits at a gap, and a
    // restore across it is refused before anything is written.
    let pos = format!("{:08X}{:08X}", last.time, last.increment);
    let mid = ranges
        .iter()
        .find(|(first, end)| *first <= pos && pos < *end)
        .unwrap();
    assert_ne!(mid, ranges.last().unwrap(), "{ranges:?}");
    for e in std::fs::read_dir(format!("{}/captures", s.repo)).unwrap() {
        let e = e.unwrap();
        let n = e.file_name().into_string().unwrap();
        if n.contains(&format!(".{}.{}.", mid.0, mid.1)) {
            std::fs::remove_file(e.path()).unwrap();
        }
    }
    let pitr = s.json(&["pitr"]);
    if mid == &ranges[0] {
        // The first slice after the base is gone: the window shrinks to the
        // base's own point (the listing shows no gap before the first
        // stored slice).
        assert_eq!(
            pitr[0]["windows"][0]["from"], pitr[0]["windows"][0]["to"],
            "{pitr:#}"
        );
    } else {
        assert_eq!(pitr[0]["gaps"].as_array().unwrap().len(), 1, "{pitr:#}");
    }
    let e = s.fails(
        &[
            "restore",
            "--at-ts",
            &ts_arg(last),
            "--to",
            &url,
            "--include",
            "shop.*",
            "--rename",
            "shop:r4",
        ],
        2,
    );
    assert!(e.contains("missing"), "{e}");
    let dbs = c.list_database_names().run().unwrap();
    for db in ["r1", "r2", "r3", "r4"] {
        assert!(
            !dbs.contains(&db.to_owned()),
            "refused restore created {db}"
        );
    }

    // Retention. A second base: --keep-within keeps the newest base taken
    // before its period (restores inside it start from there) ...
    let base2 = s.json(&["create", &url]);
    let base2_id = base2["id"].as_str().unwrap().to_owned();
    let f = s.json(&["forget", "--keep-within", "1h", "--dry-run"]);
    let kept = f["decisions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|d| d["id"] == base_id.as_str())
        .unwrap();
    assert_eq!(kept["keep"], true, "{f:#}");
    assert!(
        kept["reasons"].to_string().contains("point-in-time window"),
        "{f:#}"
    );
    // ... and once the old base goes, prune removes the slices that only
    // it needed.
    let pruned = s.json(&["forget", "--keep-last", "1", "--prune"]);
    let expired = &pruned["prune"]["captures_expired"][0];
    assert_eq!(expired["kind"], "mongodb-oplog", "{pruned:#}");
    assert!(expired["pieces"].as_u64().unwrap() >= 1, "{pruned:#}");
    let left = std::fs::read_dir(format!("{}/captures", s.repo))
        .unwrap()
        .count();
    assert_eq!(left, 0, "slices before the only base were kept");
    let pitr = s.json(&["pitr"]);
    assert_eq!(pitr[0]["pieces"], 0, "{pitr:#}");
    assert_eq!(pitr[0]["bases"].as_array().unwrap().len(), 1, "{pitr:#}");
    assert_eq!(pitr[0]["bases"][0]["id"], base2_id.as_str());
    s.ok(&["verify"]);
}

/// `backupd` with `oplog = "continuous"`: the follower runs beside the
/// schedule, its lag, window and slices show in `/metrics` and the status
/// API, a lag over `max_oplog_lag` is notified, and SIGTERM stores what
/// was read before the daemon exits; an oplog that rolled over while the
/// daemon was down is a `capture_gap` notice, a server that goes away a
/// `capture_stopped` one.
#[test]
#[allow(clippy::too_many_lines)] // One daemon's life: capture, gap, outage.
fn daemon_captures_the_oplog_continuously() {
    use crate::daemon::{config, metric, wait_event, webhook_receiver, Daemon};

    // A small oplog (SecantusDB prunes it on request), for the gap below.
    let m = MongoServer::start_with(&["--oplog-max-entries", "40"]);
    let c = Client::with_uri_str(m.url("")).unwrap();
    let s = Scratch::new();
    s.init();
    let url = m.url("");
    c.database("shop")
        .collection::<Document>("seq")
        .insert_one(doc! {"_id": 0})
        .run()
        .unwrap();
    s.ok(&["create", &url]);
    let (hook_port, hooks) = webhook_receiver();
    let port = backup_testkit::free_port();
    let job = format!(
        "[jobs.mongo]\nrepository = \"main\"\nsource = \"{url}\"\nschedule = \"0 0 1 1 *\"\noplog = \"continuous\"\nmax_oplog_lag = \"1s\"\n"
    );
    let hook = format!(
        "[notifications.hook]\ntype = \"webhook\"\nurl = \"http://127.0.0.1:{hook_port}/hook\"\nevents = [\"capture_lag\", \"capture_gap\", \"capture_stopped\"]\n"
    );
    let cfg = config(&s, "backupd.toml", port, &job, &hook);
    let d = Daemon::start(&s, &cfg, port, "daemon.log");
    d.wait_for("the follower to start", Duration::from_secs(60), || {
        metric(
            &d.metrics(),
            "backupd_capture_streaming{job=\"mongo\",kind=\"mongodb-oplog\"}",
        ) == Some(1.0)
    });
    let seq = c.database("shop").collection::<Document>("seq");
    for i in 1..=20 {
        seq.insert_one(doc! {"_id": i}).run().unwrap();
        std::thread::sleep(Duration::from_millis(100));
    }
    // Slices are cut every 10 s by default: the stored oplog lags the
    // source by more than the 1 s allowed, once.
    let lag = wait_event(&hooks, "capture_lag");
    assert_eq!(lag["job"], "mongo");
    d.wait_for("a stored slice", Duration::from_secs(60), || {
        metric(
            &d.metrics(),
            "backupd_capture_last_stored_timestamp_seconds{job=\"mongo\",kind=\"mongodb-oplog\"}",
        )
        .unwrap_or(0.0)
            >= 1.0
    });
    let metrics = d.metrics();
    for series in [
        "backupd_capture_lag_seconds{job=\"mongo\",kind=\"mongodb-oplog\"}",
        "backupd_capture_window_end_timestamp_seconds{job=\"mongo\",kind=\"mongodb-oplog\"}",
        "backupd_capture_gaps_total{job=\"mongo\",kind=\"mongodb-oplog\"}",
    ] {
        assert!(metric(&metrics, series).is_some(), "{series}:\n{metrics}");
    }
    let state = d.job("mongo");
    assert_eq!(state["capture"]["streaming"], true, "{state:#}");
    assert_eq!(state["capture"]["kind"], "mongodb-oplog", "{state:#}");
    let last = newest(&c);
    let (code, _) = d.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(60));
    assert_eq!(code, 0);
    // Everything read before SIGTERM was stored: restorable to the end.
    let pitr = s.json(&["pitr"]);
    let to = parse_ts(pitr[0]["windows"][0]["to"].as_str().unwrap());
    assert!(to >= (last.time, last.increment), "{pitr:#}");

    // 100 writes while the daemon is down, to an oplog that keeps 40: the
    // restarted daemon records the gap and notifies it.
    for i in 21..=120 {
        seq.insert_one(doc! {"_id": i}).run().unwrap();
    }
    c.database("admin")
        .run_command(doc! {"secantusAdmin.pruneOplog": 1})
        .run()
        .unwrap();
    let d = Daemon::start(&s, &cfg, port, "daemon2.log");
    let gap = wait_event(&hooks, "capture_gap");
    assert_eq!(gap["job"], "mongo", "{gap:#}");
    d.wait_for("the gap in the metrics", Duration::from_secs(30), || {
        metric(
            &d.metrics(),
            "backupd_capture_gaps_total{job=\"mongo\",kind=\"mongodb-oplog\"}",
        )
        .unwrap_or(0.0)
            >= 1.0
    });
    let pitr = s.json(&["pitr"]);
    assert_eq!(pitr[0]["gaps"].as_array().unwrap().len(), 1, "{pitr:#}");

    // The server goes away: the capture stops and says so.
    drop(c);
    drop(m);
    let stopped = wait_event(&hooks, "capture_stopped");
    assert_eq!(stopped["job"], "mongo", "{stopped:#}");
    let (code, _) = d.stop(nix::sys::signal::Signal::SIGTERM, Duration::from_secs(60));
    assert_eq!(code, 0);
}

/// A standalone server has no oplog to follow; an oplog that rolled over
/// while the follower was stopped leaves a recorded gap, which `pitr`
/// lists and restores into refuse, naming it.
#[test]
fn refuses_a_standalone_server_and_records_a_rolled_over_oplog() {
    let s = Scratch::new();
    s.init();
    let standalone = MongoServer::start_with(&["--standalone"]);
    let e = s.fails(&["oplog", "follow", &standalone.url("")], 2);
    assert!(e.contains("standalone server"), "{e}");
    drop(standalone);

    let m = MongoServer::start_with(&["--oplog-max-entries", "40"]);
    let c = Client::with_uri_str(m.url("")).unwrap();
    let url = m.url("");
    let seq = c.database("shop").collection::<Document>("seq");
    seq.insert_one(doc! {"_id": 0}).run().unwrap();
    s.ok(&["create", &url]);
    let follower = Follower::start(&s, &url);
    for i in 1..=5 {
        seq.insert_one(doc! {"_id": i}).run().unwrap();
    }
    let before = newest(&c);
    wait_stored(&s, before);
    follower.stop();
    // Stopped while 100 entries are written: the oplog keeps only 40
    // (SecantusDB prunes lazily; its admin command prunes now).
    for i in 6..=105 {
        seq.insert_one(doc! {"_id": i}).run().unwrap();
    }
    c.database("admin")
        .run_command(doc! {"secantusAdmin.pruneOplog": 1})
        .run()
        .unwrap();
    let follower = Follower::start(&s, &url);
    for i in 106..=110 {
        seq.insert_one(doc! {"_id": i}).run().unwrap();
    }
    let last = newest(&c);
    let start = Instant::now();
    let pitr = loop {
        let v = s.json(&["pitr"]);
        if !v[0]["gaps"].as_array().unwrap().is_empty() {
            break v;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no gap recorded: {v:#}"
        );
        std::thread::sleep(Duration::from_millis(300));
    };
    follower.stop();
    let gap = &pitr[0]["gaps"][0];
    assert!(
        gap["reason"].as_str().unwrap().contains("rolled over"),
        "{pitr:#}"
    );
    // Before the gap: restorable; across it: refused, nothing written.
    s.ok(&[
        "restore",
        "--at-ts",
        &ts_arg(before),
        "--to",
        &url,
        "--include",
        "shop.*",
        "--rename",
        "shop:before_gap",
    ]);
    assert_eq!(ids(&c, "before_gap", "seq"), (0..=5).collect());
    let e = s.fails(
        &[
            "restore",
            "--at-ts",
            &ts_arg(last),
            "--to",
            &url,
            "--include",
            "shop.*",
            "--rename",
            "shop:across_gap",
        ],
        2,
    );
    assert!(e.contains("rolled over"), "{e}");
    assert!(!c
        .list_database_names()
        .run()
        .unwrap()
        .contains(&"across_gap".to_owned()));
}
