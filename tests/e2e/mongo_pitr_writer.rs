//! MongoDB point-in-time recovery checked against an oracle that does not
//! read the oplog: a writer inserts, updates (`$set`, `$unset`, `$inc`,
//! array pushes, pulls and element updates), replaces, deletes and runs
//! transactions across two collections for a minute, and logs every
//! acknowledged write with its `operationTime` and the documents it
//! touched, read back as raw BSON in the same causally consistent session.
//! Restores to five times and one timestamp, into fresh databases, must
//! equal the state that log gives at the target, byte for byte.
//!
//! The base is taken while the writer runs (its own oplog window holds
//! live writes) and the follower starts after it.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, Instant};

use backup_testkit::mongo::MongoServer;
use mongodb::bson::{doc, Bson, Document, RawBsonRef, RawDocumentBuf, Timestamp};
use mongodb::sync::Client;

use crate::mongo::{collections, raw_docs};
use crate::mongo_pitr::{newest, ts_arg, wait_stored, Follower};
use crate::util::Scratch;

/// How long the writer runs (the minute).
const WRITE_FOR: Duration = Duration::from_secs(60);
/// When the base is taken, counted from the writer's start.
const BASE_AFTER: Duration = Duration::from_secs(3);
/// A pause after each write, to keep the oplog each restore replays (and
/// so the test's time) moderate.
const PAUSE: Duration = Duration::from_millis(5);
const DB: &str = "live";
const COLLS: [&str; 3] = ["accounts", "carts", "events"];
const ACCOUNTS: i64 = 200;
const CARTS: i64 = 100;
const EVENTS: u32 = 200;

/// A document's `_id` (`accounts` and `carts` use integers, `events`
/// strings).
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Key {
    Int(i64),
    Str(String),
}

impl Key {
    fn of(raw: &[u8]) -> Self {
        let d = RawDocumentBuf::from_bytes(raw.to_vec()).unwrap();
        match d.get("_id").unwrap().unwrap() {
            RawBsonRef::Int32(i) => Key::Int(i64::from(i)),
            RawBsonRef::Int64(i) => Key::Int(i),
            RawBsonRef::String(s) => Key::Str(s.to_owned()),
            other => panic!("unexpected _id {other:?}"),
        }
    }

    fn bson(&self) -> Bson {
        match self {
            Key::Int(i) => Bson::Int64(*i),
            Key::Str(s) => Bson::String(s.clone()),
        }
    }
}

/// One acknowledged write as the writer saw it: the document after it
/// (None: absent). `alone`: a write outside a transaction that changed
/// something (one that changed nothing logs no entry and returns the
/// previous `operationTime`).
struct Logged {
    at: Timestamp,
    coll: &'static str,
    id: Key,
    doc: Option<Vec<u8>>,
    alone: bool,
}

/// The writer's log, plus for each transaction the `operationTime` of the
/// write before it and of its commit. `SecantusDB` logs a transaction's
/// operations under one `ts` that lies between the two but is not the
/// commit's `operationTime`, so the log cannot place a time cut that falls
/// between them: such seconds are not chosen as targets.
struct WriterLog {
    ops: Vec<Logged>,
    txns: Vec<(Timestamp, Timestamp)>,
    writes: usize,
}

type State = BTreeMap<&'static str, BTreeMap<Key, Vec<u8>>>;

fn key(t: Timestamp) -> (u32, u32) {
    (t.time, t.increment)
}

/// Deterministic choices (xorshift).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n
    }
}

fn event_id(n: u32) -> String {
    format!("ev-{n:06}")
}

/// Writes until `until`, logging each acknowledged write with the documents
/// it left, read back in the same session. (The async driver: its session
/// exposes the `operationTime` of the last reply, the sync one does not.)
#[allow(clippy::too_many_lines)] // One loop: the operation mix.
async fn write(url: String, until: Instant) -> WriterLog {
    let c = mongodb::Client::with_uri_str(&url).await.unwrap();
    let db = c.database(DB);
    let accounts = db.collection::<Document>("accounts");
    let carts = db.collection::<Document>("carts");
    let events = db.collection::<Document>("events");
    let mut session = c.start_session().causal_consistency(true).await.unwrap();
    let mut log = WriterLog {
        ops: Vec::new(),
        txns: Vec::new(),
        writes: 0,
    };
    let mut rng = Rng(0x9E37_79B9_7F4A_7C15);
    let mut next_event = EVENTS;
    let mut next_account = ACCOUNTS;
    let mut last = Timestamp {
        time: 0,
        increment: 0,
    };
    let mut n: i64 = 0;
    while Instant::now() < until {
        n += 1;
        let acc = Key::Int(i64::try_from(rng.below(next_account as u64)).unwrap());
        let cart = Key::Int(i64::try_from(rng.below(120)).unwrap());
        let ev = Key::Str(event_id(rng.below(u64::from(next_event)) as u32));
        let mut touched: Vec<(&'static str, Key)> = Vec::new();
        let mut in_txn = false;
        match rng.below(100) {
            0..=11 => {
                let id = event_id(next_event);
                next_event += 1;
                events
                    .insert_one(doc! {"_id": &id, "kind": "click", "n": n, "payload": {"a": n, "tags": ["x", "y"]}})
                    .session(&mut session)
                    .await
                    .unwrap();
                touched.push(("events", Key::Str(id)));
            }
            12..=19 => {
                events
                    .delete_one(doc! {"_id": ev.bson()})
                    .session(&mut session)
                    .await
                    .unwrap();
                touched.push(("events", ev));
            }
            20..=24 => {
                events
                    .replace_one(
                        doc! {"_id": ev.bson()},
                        doc! {"replaced": n, "z": {"deep": [n, {"k": "v"}]}, "a": true},
                    )
                    .upsert(true)
                    .session(&mut session)
                    .await
                    .unwrap();
                touched.push(("events", ev));
            }
            25..=36 => {
                accounts
                    .update_one(
                        doc! {"_id": acc.bson()},
                        doc! {"$inc": {"balance": 7, "ops": 1}, "$set": {"last": n}},
                    )
                    .session(&mut session)
                    .await
                    .unwrap();
                touched.push(("accounts", acc));
            }
            37..=44 => {
                let update = if n % 2 == 0 {
                    doc! {"$unset": {"profile.note": "", "flag": ""}}
                } else {
                    doc! {"$set": {"profile.note": format!("note {n}"), "flag": true, "profile.tier": n % 3}}
                };
                accounts
                    .update_one(doc! {"_id": acc.bson()}, update)
                    .session(&mut session)
                    .await
                    .unwrap();
                touched.push(("accounts", acc));
            }
            45..=54 => {
                accounts
                    .update_one(
                        doc! {"_id": acc.bson()},
                        doc! {"$push": {"tags": format!("t{n}")}},
                    )
                    .session(&mut session)
                    .await
                    .unwrap();
                touched.push(("accounts", acc));
            }
            55..=64 => {
                // Upserts carts past the seeded ones.
                carts
                    .update_one(
                        doc! {"_id": cart.bson()},
                        doc! {"$push": {"items": {"sku": format!("s{}", n % 13), "qty": 1}}, "$inc": {"version": 1}},
                    )
                    .upsert(true)
                    .session(&mut session)
                    .await
                    .unwrap();
                touched.push(("carts", cart));
            }
            65..=69 => {
                carts
                    .update_one(
                        doc! {"_id": cart.bson(), "items.0": {"$exists": true}},
                        doc! {"$set": {"items.0.qty": n}},
                    )
                    .session(&mut session)
                    .await
                    .unwrap();
                touched.push(("carts", cart));
            }
            70..=74 => {
                let update = if n % 2 == 0 {
                    doc! {"$pull": {"items": {"sku": format!("s{}", n % 13)}}}
                } else {
                    doc! {"$pop": {"items": 1}}
                };
                carts
                    .update_one(doc! {"_id": cart.bson()}, update)
                    .session(&mut session)
                    .await
                    .unwrap();
                touched.push(("carts", cart));
            }
            75..=77 => {
                let id = next_account;
                next_account += 1;
                accounts
                    .insert_one(
                        doc! {"_id": id, "balance": 0_i64, "tags": [], "profile": {"tier": 0}},
                    )
                    .session(&mut session)
                    .await
                    .unwrap();
                touched.push(("accounts", Key::Int(id)));
            }
            78..=79 => {
                accounts
                    .delete_one(doc! {"_id": acc.bson()})
                    .session(&mut session)
                    .await
                    .unwrap();
                touched.push(("accounts", acc));
            }
            _ => {
                // A transfer: both accounts, a ledger event, sometimes a
                // deleted event and a cart.
                in_txn = true;
                let to = Key::Int(i64::try_from(rng.below(next_account as u64)).unwrap());
                let amount = i64::try_from(rng.below(50)).unwrap() + 1;
                let id = event_id(next_event);
                next_event += 1;
                session.start_transaction().await.unwrap();
                accounts
                    .update_one(
                        doc! {"_id": acc.bson()},
                        doc! {"$inc": {"balance": -amount}, "$push": {"ledger": &id}},
                    )
                    .session(&mut session)
                    .await
                    .unwrap();
                accounts
                    .update_one(
                        doc! {"_id": to.bson()},
                        doc! {"$inc": {"balance": amount}, "$set": {"last": n}},
                    )
                    .session(&mut session)
                    .await
                    .unwrap();
                events
                    .insert_one(doc! {"_id": &id, "kind": "transfer", "from": acc.bson(), "to": to.bson(), "amount": amount})
                    .session(&mut session)
                    .await
                    .unwrap();
                touched.extend([
                    ("accounts", acc),
                    ("accounts", to),
                    ("events", Key::Str(id)),
                ]);
                if n % 3 == 0 {
                    events
                        .delete_one(doc! {"_id": ev.bson()})
                        .session(&mut session)
                        .await
                        .unwrap();
                    touched.push(("events", ev));
                }
                if n % 4 == 0 {
                    carts
                        .update_one(
                            doc! {"_id": cart.bson()},
                            doc! {"$push": {"items": {"sku": "gift", "qty": amount}}, "$unset": {"coupon": ""}},
                        )
                        .upsert(true)
                        .session(&mut session)
                        .await
                        .unwrap();
                    touched.push(("carts", cart));
                }
                session.commit_transaction().await.unwrap();
            }
        }
        log.writes += 1;
        let at = session.operation_time().unwrap();
        assert!(
            key(at) >= key(last),
            "operationTime went back: {at} after {last}"
        );
        let alone = !in_txn && key(at) > key(last);
        if in_txn {
            log.txns.push((last, at));
        }
        last = at;
        for (coll, id) in touched {
            let doc = db
                .collection::<RawDocumentBuf>(coll)
                .find_one(doc! {"_id": id.bson()})
                .session(&mut session)
                .await
                .unwrap()
                .map(RawDocumentBuf::into_bytes);
            log.ops.push(Logged {
                at,
                coll,
                id,
                doc,
                alone,
            });
        }
        tokio::time::sleep(PAUSE).await;
    }
    log
}

/// The state the log gives once every write at or before `cut` is applied.
fn state_at(initial: &State, log: &WriterLog, cut: (u32, u32)) -> State {
    let mut st = initial.clone();
    for op in log.ops.iter().filter(|o| key(o.at) <= cut) {
        let coll = st.get_mut(op.coll).unwrap();
        match &op.doc {
            Some(d) => coll.insert(op.id.clone(), d.clone()),
            None => coll.remove(&op.id),
        };
    }
    st
}

/// Every collection of `db`, keyed by `_id` (raw BSON in `_id` order).
fn read_state(c: &Client, db: &str) -> State {
    COLLS
        .iter()
        .map(|&coll| {
            let docs = raw_docs(c, db, coll);
            let n = docs.len();
            let map: BTreeMap<Key, Vec<u8>> = docs.into_iter().map(|d| (Key::of(&d), d)).collect();
            assert_eq!(map.len(), n, "{db}.{coll}: duplicate _id");
            (coll, map)
        })
        .collect()
}

fn show(d: Option<&Vec<u8>>) -> String {
    d.map_or_else(
        || "(absent)".to_owned(),
        |b| {
            format!(
                "{:?}",
                RawDocumentBuf::from_bytes(b.clone())
                    .unwrap()
                    .to_document()
                    .unwrap()
            )
        },
    )
}

/// The first difference of each collection, or nothing; with the
/// document's history in the writer's log and in the source's oplog.
fn diff(c: &Client, log: &WriterLog, label: &str, want: &State, got: &State) -> Vec<String> {
    let mut out = Vec::new();
    for coll in COLLS {
        let (w, g) = (&want[coll], &got[coll]);
        let ids: BTreeSet<&Key> = w.keys().chain(g.keys()).collect();
        if let Some(id) = ids.into_iter().find(|id| w.get(*id) != g.get(*id)) {
            let logged: Vec<String> = log
                .ops
                .iter()
                .filter(|o| o.coll == coll && &o.id == id)
                .map(|o| {
                    let txn = log.txns.iter().any(|t| t.1 == o.at);
                    format!(
                        "{}{}{}",
                        ts_arg(o.at),
                        if txn { " txn" } else { "" },
                        if o.doc.is_some() { "" } else { " absent" }
                    )
                })
                .collect();
            let oplog: Vec<String> = c
                .database("local")
                .collection::<Document>("oplog.rs")
                .find(doc! {"ns": format!("{DB}.{coll}"), "$or": [{"o._id": id.bson()}, {"o2._id": id.bson()}]})
                .sort(doc! {"ts": 1})
                .run()
                .unwrap()
                .map(|e| {
                    let e = e.unwrap();
                    format!(
                        "{} {}{}",
                        ts_arg(e.get_timestamp("ts").unwrap()),
                        e.get_str("op").unwrap(),
                        if e.contains_key("txnNumber") { " txn" } else { "" }
                    )
                })
                .collect();
            out.push(format!(
                "{label}: {coll} differs ({} documents expected, {} restored); first at _id {id:?}:\n  expected {}\n  restored {}\n  logged at {}\n  source oplog {}",
                w.len(),
                g.len(),
                show(w.get(id)),
                show(g.get(id)),
                logged.join(", "),
                oplog.join(", ")
            ));
        }
    }
    out
}

/// The stored oplog slices whose entry count differs from the source's
/// oplog over the same range.
fn uncaptured(c: &Client, s: &Scratch) -> Vec<String> {
    let read = crate::format_reader::reader_json(
        &s.repo,
        crate::util::PASSWORD,
        &[std::ffi::OsStr::new("captures")],
    );
    let source: Vec<(u32, u32)> = c
        .database("local")
        .collection::<Document>("oplog.rs")
        .find(doc! {})
        .sort(doc! {"ts": 1})
        .run()
        .unwrap()
        .map(|e| key(e.unwrap().get_timestamp("ts").unwrap()))
        .collect();
    let pos = |p: &str| {
        (
            u32::from_str_radix(&p[..8], 16).unwrap(),
            u32::from_str_radix(&p[8..], 16).unwrap(),
        )
    };
    let mut out = Vec::new();
    for r in read["records"].as_array().unwrap() {
        let (first, last) = (
            pos(r["first"].as_str().unwrap()),
            pos(r["last"].as_str().unwrap()),
        );
        let on_source =
            source.partition_point(|t| *t < last) - source.partition_point(|t| *t < first);
        let stored = r["entries"].as_u64().unwrap();
        if stored != on_source as u64 {
            out.push(format!(
                "the slice {}:{} .. {}:{} holds {stored} entries, the source's oplog {on_source} in that range",
                first.0, first.1, last.0, last.1
            ));
        }
    }
    out
}

#[test]
fn restores_equal_the_writers_log_at_five_times_and_a_timestamp() {
    let started = Instant::now();
    let m = MongoServer::start();
    let url = m.url("");
    let c = Client::with_uri_str(&url).unwrap();
    let s = Scratch::new();
    s.init();

    let db = c.database(DB);
    db.collection::<Document>("accounts")
        .insert_many((0..ACCOUNTS).map(|i| {
            doc! {"_id": i, "owner": format!("o{i}"), "balance": 1000_i64, "tags": ["seed"], "profile": {"tier": 1, "note": "n"}}
        }))
        .run()
        .unwrap();
    db.collection::<Document>("carts")
        .insert_many(
            (0..CARTS).map(|i| doc! {"_id": i, "items": [{"sku": "s0", "qty": 1}], "coupon": "c"}),
        )
        .run()
        .unwrap();
    db.collection::<Document>("events")
        .insert_many(
            (0..EVENTS).map(|i| doc! {"_id": event_id(i), "kind": "seed", "n": i64::from(i)}),
        )
        .run()
        .unwrap();
    let initial = read_state(&c, DB);

    let writer_start = Instant::now();
    let writer = {
        let url = url.clone();
        std::thread::spawn(move || {
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap()
                .block_on(write(url, writer_start + WRITE_FOR))
        })
    };
    std::thread::sleep(BASE_AFTER);
    let base = s.json(&["create", &url]);
    let base_id = base["id"].as_str().unwrap().to_owned();
    let follower = Follower::start(&s, &url);
    let log = writer.join().unwrap();
    let last = newest(&c);
    let pitr = wait_stored(&s, last);
    follower.stop();
    assert_eq!(pitr[0]["gaps"].as_array().unwrap().len(), 0, "{pitr:#}");
    let end = &base["snapshot"]["metadata"]["oplog"]["end"];
    let base_end = (
        u32::try_from(end["t"].as_u64().unwrap()).unwrap(),
        u32::try_from(end["i"].as_u64().unwrap()).unwrap(),
    );
    let last_write = log.ops.last().unwrap().at;
    eprintln!(
        "{} writes ({} transactions) in {:?}, base end {base_end:?}, last write {last_write}",
        log.writes,
        log.txns.len(),
        writer_start.elapsed()
    );
    // The base was taken while the writer ran: live writes on both sides
    // of its consistent point.
    assert!(
        log.ops.iter().any(|o| key(o.at) <= base_end),
        "no write before the base's end"
    );
    assert!(
        log.txns.iter().filter(|t| key(t.0) > base_end).count() >= 10,
        "too few transactions after the base"
    );

    // Five whole seconds from just after the base to two seconds before
    // the last write, none of them inside a transaction's
    // (previous write, commit) interval.
    let lo = base_end.0 + 1;
    let hi = last_write.time - 2;
    assert!(hi >= lo + 20, "window too short: {lo}..{hi}");
    let straddled = |t: u32| log.txns.iter().any(|(p, c)| p.time <= t && t < c.time);
    let mut times = Vec::new();
    for k in 0..5 {
        let aim = lo + (hi - lo) * k / 4;
        let t = (0..=(hi - lo))
            .flat_map(|d| [aim.saturating_add(d), aim.saturating_sub(d)])
            .find(|t| (lo..=hi).contains(t) && !straddled(*t) && !times.contains(t))
            .unwrap();
        times.push(t);
    }
    // And the operationTime of a write outside a transaction, two thirds
    // in; the source logged it under exactly that ts.
    let after: Vec<&Logged> = log.ops.iter().filter(|o| key(o.at) > base_end).collect();
    let target = after[after.len() * 2 / 3..]
        .iter()
        .find(|o| o.alone)
        .unwrap();
    let entry = c
        .database("local")
        .collection::<Document>("oplog.rs")
        .find_one(doc! {"ts": target.at})
        .run()
        .unwrap()
        .unwrap();
    assert_eq!(
        entry.get_str("ns").unwrap(),
        format!("{DB}.{}", target.coll),
        "{entry}"
    );

    // (target database, flag, its value, the last ts included).
    let mut cuts: Vec<(String, &str, String, (u32, u32))> = times
        .iter()
        .enumerate()
        .map(|(i, &t)| {
            let at = chrono::DateTime::from_timestamp(i64::from(t), 0)
                .unwrap()
                .to_rfc3339();
            (format!("at_{}", i + 1), "--at", at, (t, u32::MAX))
        })
        .collect();
    cuts.push((
        "at_ts".to_owned(),
        "--at-ts",
        ts_arg(target.at),
        key(target.at),
    ));

    // The follower stored every entry of the source's oplog after the
    // base (read back by the independent format reader), so a wrong
    // restore below is told apart from a lost entry.
    let mut failures = uncaptured(&c, &s);
    let include = format!("{DB}.*");
    for (name, flag, value, cut) in &cuts {
        let t0 = Instant::now();
        let rename = format!("{DB}:{name}");
        let args = [
            "restore",
            flag,
            value,
            "--to",
            &url,
            "--include",
            &include,
            "--rename",
            &rename,
        ];
        let out = s.json(&args);
        assert_eq!(out["snapshot"], base_id.as_str(), "{out:#}");
        let names: Vec<String> = collections(&c, name).into_iter().map(|x| x.0).collect();
        assert_eq!(names, COLLS, "{name}");
        let want = state_at(&initial, &log, *cut);
        // The cut matters: a restore that stops a second (for a time) or
        // the target write (for a timestamp) early, or goes a second
        // further, gives another state.
        let (earlier, later) = if *flag == "--at" {
            ((cut.0 - 1, u32::MAX), Some((cut.0 + 1, u32::MAX)))
        } else {
            let before = cut
                .1
                .checked_sub(1)
                .map_or((cut.0 - 1, u32::MAX), |i| (cut.0, i));
            (before, None)
        };
        assert!(
            state_at(&initial, &log, earlier) != want,
            "{name}: nothing logged just before"
        );
        if let Some(later) = later {
            assert!(
                state_at(&initial, &log, later) != want,
                "{name}: nothing logged just after"
            );
        }
        let got = read_state(&c, name);
        let writes = log.ops.iter().filter(|o| key(o.at) <= *cut).count();
        eprintln!(
            "{name} ({flag} {value}): {writes} logged documents, restored in {:?}",
            t0.elapsed()
        );
        failures.extend(diff(
            &c,
            &log,
            &format!("{name} ({flag} {value})"),
            &want,
            &got,
        ));
    }
    assert!(
        failures.is_empty(),
        "base end {}:{}\n{}",
        base_end.0,
        base_end.1,
        failures.join("\n")
    );
    eprintln!("total {:?}", started.elapsed());
}
