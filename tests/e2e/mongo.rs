//! MongoDB backups and restores against throwaway `SecantusDB` servers
//! started by the tests (`backup_testkit::mongo`).
//!
//! Fidelity is checked per collection as raw BSON in `_id` order, plus
//! `listCollections` options and `listIndexes` specs.

use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use backup_testkit::mongo::MongoServer;
use mongodb::bson::spec::BinarySubtype;
use mongodb::bson::{
    doc, oid::ObjectId, Binary, Bson, DateTime, Decimal128, Document, JavaScriptCodeWithScope,
    RawDocumentBuf, Regex, Timestamp,
};
use mongodb::sync::Client;

use crate::util::Scratch;

fn client(m: &MongoServer) -> Client {
    Client::with_uri_str(m.url("")).unwrap()
}

fn setup() -> (MongoServer, Scratch) {
    let m = MongoServer::start();
    let s = Scratch::new();
    s.init();
    (m, s)
}

/// Every BSON type, edge values, nesting, field order and odd keys.
pub(crate) fn all_types() -> Vec<Document> {
    let mut deep = doc! {"leaf": 1};
    for i in 0..60 {
        deep = doc! {format!("l{i}"): deep};
    }
    let dec: Decimal128 = "1234567890.123456789012345678901234".parse().unwrap();
    vec![
        doc! {"_id": 1, "i32": i32::MIN, "i32max": i32::MAX, "i64min": i64::MIN, "i64max": i64::MAX},
        doc! {"_id": 2, "nan": f64::NAN, "inf": f64::INFINITY, "ninf": f64::NEG_INFINITY, "nzero": -0.0_f64, "tiny": f64::MIN_POSITIVE, "dec": dec},
        doc! {"_id": 3, "s": "nul\0inside", "utf8": "żółw 🐢", "empty": ""},
        doc! {"_id": 4,
            "b0": Binary { subtype: BinarySubtype::Generic, bytes: vec![0, 1, 2, 255] },
            "b4": Binary { subtype: BinarySubtype::Uuid, bytes: (0u8..16).collect() },
            "b5": Binary { subtype: BinarySubtype::Md5, bytes: vec![7; 16] },
            "b128": Binary { subtype: BinarySubtype::UserDefined(128), bytes: vec![9, 9] },
        },
        doc! {"_id": 5, "oid": ObjectId::parse_str("65a1b2c3d4e5f60718293a4b").unwrap(),
        "before1970": DateTime::from_millis(-123_456_789_000), "now": DateTime::from_millis(1_700_000_000_123),
        "ts": Timestamp { time: 1_700_000_000, increment: 42 }},
        doc! {"_id": 6, "re": Regex { pattern: "^a.*b$".into(), options: "imsx".into() },
        "code": Bson::JavaScriptCode("function() { return 1; }".into()),
        "cws": JavaScriptCodeWithScope { code: "x + y".into(), scope: doc! {"x": 1, "y": 2} },
        "min": Bson::MinKey, "max": Bson::MaxKey, "null": Bson::Null, "undef": Bson::Undefined, "t": true, "f": false},
        doc! {"_id": 7, "ref": {"$ref": "other", "$id": ObjectId::parse_str("65a1b2c3d4e5f60718293a4c").unwrap(), "$db": "elsewhere"}},
        doc! {"_id": 8, "deep": deep, "arr": [1, "two", [3, [4, {"five": 5}]], {"six": [6]}]},
        doc! {"_id": 9, "z": 1, "a": 2, "m": 3, "b": {"y": 1, "x": 2}},
        doc! {"_id": 10, "$dollar": 1, "dotted.key": 2, "nested": {"$in": [1], "a.b": {"c.d": 3}}},
        doc! {"_id": "string-id", "v": 1},
        doc! {"_id": ObjectId::parse_str("65a1b2c3d4e5f60718293a4d").unwrap(), "v": 2},
        doc! {"_id": {"compound": 1, "key": "k"}, "v": 3},
        doc! {"_id": 11.5, "v": 4},
    ]
}

/// Populates database `db` with the fixture collections.
fn populate(c: &Client, db_name: &str) {
    let db = c.database(db_name);
    let types = db.collection::<Document>("types");
    types.insert_many(all_types()).run().unwrap();
    let people = db.collection::<Document>("people");
    let docs: Vec<Document> = (0..3000)
        .map(|i| {
            doc! {"_id": i, "name": format!("person {i}"), "email": format!("p{i}@example.com"),
                "age": i % 90, "tags": ["a", "b"], "loc": {"type": "Point", "coordinates": [f64::from(i % 180), f64::from(i % 90)]},
                "created": DateTime::from_millis(1_600_000_000_000 + i64::from(i) * 1000),
                "score": if i % 3 == 0 { Bson::Null } else { Bson::Int32(i) }}
        })
        .collect();
    people.insert_many(docs).run().unwrap();
    people
        .create_index(
            mongodb::IndexModel::builder()
                .keys(doc! {"email": 1})
                .options(
                    mongodb::options::IndexOptions::builder()
                        .unique(true)
                        .name("email_unique".to_owned())
                        .build(),
                )
                .build(),
        )
        .run()
        .unwrap();
    db.run_command(doc! {"createIndexes": "people", "indexes": [
        {"key": {"age": 1, "name": -1}, "name": "age_name"},
        {"key": {"score": 1}, "name": "score_sparse", "sparse": true},
        {"key": {"created": 1}, "name": "ttl", "expireAfterSeconds": 1_500_000_000},
        {"key": {"age": 1}, "name": "adults", "partialFilterExpression": {"age": {"$gte": 18}}},
        {"key": {"loc": "2dsphere"}, "name": "loc_2dsphere"},
        {"key": {"$**": 1}, "name": "wildcard"},
    ]})
    .run()
    .unwrap();
    db.run_command(doc! {"create": "capped", "capped": true, "size": 1_048_576, "max": 500})
        .run()
        .unwrap();
    db.collection::<Document>("capped")
        .insert_many((0..700).map(|i| doc! {"_id": i, "line": format!("log {i}")}))
        .run()
        .unwrap();
    db.run_command(
        doc! {"create": "strict", "validator": {"name": {"$type": "string"}},
        "validationLevel": "strict", "validationAction": "error",
        "collation": {"locale": "en", "strength": 2}},
    )
    .run()
    .unwrap();
    db.collection::<Document>("strict")
        .insert_many((0..50).map(|i| doc! {"_id": i, "name": format!("N{i}")}))
        .run()
        .unwrap();
    db.run_command(doc! {"create": "metrics", "timeseries": {"timeField": "t", "metaField": "m", "granularity": "seconds"}})
        .run()
        .unwrap();
    db.collection::<Document>("metrics")
        .insert_many((0..100).map(|i| doc! {"_id": i, "t": DateTime::from_millis(1_700_000_000_000 + i * 1000), "m": {"sensor": i % 3}, "v": i}))
        .run()
        .unwrap();
    db.run_command(doc! {"create": "adults", "viewOn": "people", "pipeline": [{"$match": {"age": {"$gte": 18}}}]})
        .run()
        .unwrap();
    db.run_command(
        doc! {"create": "adult_names", "viewOn": "adults", "pipeline": [{"$project": {"name": 1}}]},
    )
    .run()
    .unwrap();
    db.collection::<Document>("empty_one")
        .insert_one(doc! {"_id": 0})
        .run()
        .unwrap();
    db.collection::<Document>("empty_one")
        .delete_one(doc! {"_id": 0})
        .run()
        .unwrap();
}

/// The raw documents of a collection in `_id` order.
pub(crate) fn raw_docs(c: &Client, db: &str, coll: &str) -> Vec<Vec<u8>> {
    c.database(db)
        .collection::<RawDocumentBuf>(coll)
        .find(doc! {})
        .sort(doc! {"_id": 1})
        .run()
        .unwrap()
        .map(|d| d.unwrap().into_bytes())
        .collect()
}

/// `listCollections` entries by name without the server-assigned parts
/// (UUID, `idIndex` namespace).
pub(crate) fn collections(c: &Client, db: &str) -> Vec<(String, String, Document)> {
    let mut out: Vec<(String, String, Document)> = c
        .database(db)
        .run_cursor_command(doc! {"listCollections": 1})
        .run()
        .unwrap()
        .map(|d| {
            let d = d.unwrap();
            (
                d.get_str("name").unwrap().to_owned(),
                d.get_str("type").unwrap_or("collection").to_owned(),
                d.get_document("options").cloned().unwrap_or_default(),
            )
        })
        .filter(|(n, _, _)| !n.starts_with("system."))
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

pub(crate) fn indexes(c: &Client, db: &str, coll: &str) -> Vec<Document> {
    let mut out: Vec<Document> = c
        .database(db)
        .run_cursor_command(doc! {"listIndexes": coll})
        .run()
        .unwrap()
        .map(|d| {
            let mut d = d.unwrap();
            d.remove("ns");
            d
        })
        .collect();
    out.sort_by_key(|d| d.get_str("name").unwrap_or("").to_owned());
    out
}

/// Asserts that two databases hold the same collections, options,
/// indexes and documents (raw BSON in `_id` order).
pub(crate) fn assert_same_db(a: (&Client, &str), b: (&Client, &str)) {
    let ca = collections(a.0, a.1);
    let cb = collections(b.0, b.1);
    assert_eq!(ca, cb, "listCollections differ");
    for (name, kind, _) in &ca {
        let da = raw_docs(a.0, a.1, name);
        let db = raw_docs(b.0, b.1, name);
        assert_eq!(da.len(), db.len(), "{name}: document counts differ");
        for (i, (x, y)) in da.iter().zip(&db).enumerate() {
            assert!(
                x == y,
                "{name}: document {i} differs:\n{:?}\n{:?}",
                RawDocumentBuf::from_bytes(x.clone()).unwrap().to_document(),
                RawDocumentBuf::from_bytes(y.clone()).unwrap().to_document()
            );
        }
        if kind != "view" {
            assert_eq!(
                indexes(a.0, a.1, name),
                indexes(b.0, b.1, name),
                "{name}: indexes differ"
            );
        }
    }
}

#[test]
fn fidelity_round_trip_and_mongodump_export() {
    let (m, s) = setup();
    let c = client(&m);
    populate(&c, "fid");
    populate(&c, "second");
    let v = s.json(&["create", &m.url("")]);
    let id = v["id"].as_str().unwrap().to_owned();
    let meta = &s.json(&["show", &id])["snapshot"]["metadata"];
    let meta = if meta.is_null() {
        s.json(&["show", &id])["metadata"].clone()
    } else {
        meta.clone()
    };
    assert_eq!(meta["consistent"], true, "{meta}");
    assert!(
        meta["topology"]
            .as_str()
            .unwrap()
            .starts_with("replica set"),
        "{meta}"
    );
    assert!(meta["server_version"].is_string());
    assert!(meta["oplog"]["end"]["t"].as_u64().unwrap() > 0, "{meta}");
    let people = meta["collections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["db"] == "fid" && c["name"] == "people")
        .unwrap();
    assert_eq!(people["documents"], 3000);
    assert_eq!(people["indexes"], 8);
    assert!(people["bytes"].as_u64().unwrap() > 100_000);

    // Into another server: everything identical.
    let other = MongoServer::start();
    let oc = client(&other);
    let out = s.ok(&["restore", &id, "--to", &other.url("")]);
    assert!(out.contains("restored snapshot"), "{out}");
    assert_same_db((&c, "fid"), (&oc, "fid"));
    assert_same_db((&c, "second"), (&oc, "second"));
    // The validator is enforced again.
    assert!(oc
        .database("fid")
        .collection::<Document>("strict")
        .insert_one(doc! {"name": 5})
        .run()
        .is_err());
    // SecantusDB keeps capped collections unbounded (it records `max`
    // but does not enforce it), so the options are what is checked.
    let capped = collections(&oc, "fid")
        .into_iter()
        .find(|c| c.0 == "capped")
        .unwrap();
    assert!(capped.2.get_bool("capped").unwrap());
    assert_eq!(capped.2.get("max"), Some(&Bson::Int32(500)));

    // verify --restore-test against a scratch server.
    let scratch = MongoServer::start();
    s.ok(&["verify", &id, "--restore-test", &scratch.url("")]);

    // Export as a mongodump directory and read it back.
    let dir = s.path("dump");
    let v = s.json(&[
        "export",
        &id,
        "--format",
        "mongodump",
        "--to",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(v["report"]["format"], "mongodump");
    for coll in [
        "types",
        "people",
        "capped",
        "strict",
        "metrics",
        "empty_one",
    ] {
        let bytes = std::fs::read(dir.join("fid").join(format!("{coll}.bson"))).unwrap();
        let mut docs = Vec::new();
        let mut rest = &bytes[..];
        while !rest.is_empty() {
            let len = i32::from_le_bytes(rest[..4].try_into().unwrap()) as usize;
            docs.push(rest[..len].to_vec());
            rest = &rest[len..];
        }
        let mut source = raw_docs(&c, "fid", coll);
        let mut sorted = docs.clone();
        // Compare as sets of raw documents (the dump is in natural order).
        sorted.sort();
        source.sort();
        assert_eq!(sorted, source, "{coll}.bson differs");
        let meta: serde_json::Value = serde_json::from_slice(
            &std::fs::read(dir.join("fid").join(format!("{coll}.metadata.json"))).unwrap(),
        )
        .unwrap();
        assert_eq!(meta["collectionName"], coll);
        assert!(
            meta["indexes"].is_array() && meta["options"].is_object(),
            "{meta}"
        );
    }
    let pm: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("fid/people.metadata.json")).unwrap())
            .unwrap();
    let names: Vec<&str> = pm["indexes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["name"].as_str().unwrap())
        .collect();
    assert!(
        names.contains(&"age_name") && names.contains(&"wildcard"),
        "{names:?}"
    );
    let age_name = pm["indexes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["name"] == "age_name")
        .unwrap();
    assert_eq!(
        age_name["key"].to_string(),
        r#"{"age":{"$numberInt":"1"},"name":{"$numberInt":"-1"}}"#
    );
    let view: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join("fid/adults.metadata.json")).unwrap())
            .unwrap();
    assert_eq!(view["type"], "view");
    assert_eq!(view["options"]["viewOn"], "people");
    assert!(!dir.join("fid/adults.bson").exists());
    assert!(dir.join("oplog.bson").exists());
}

#[test]
fn rename_and_selective_restore() {
    let (m, s) = setup();
    let c = client(&m);
    populate(&c, "shop");
    let v = s.json(&["create", &m.url("shop")]);
    let id = v["id"].as_str().unwrap().to_owned();

    // One collection under another name in another database.
    s.ok(&[
        "restore",
        &id,
        "--to",
        &m.url(""),
        "--include",
        "shop.people",
        "--rename",
        "shop.people:archive.people_2024",
    ]);
    assert_eq!(
        raw_docs(&c, "shop", "people"),
        raw_docs(&c, "archive", "people_2024")
    );
    assert_eq!(
        indexes(&c, "shop", "people"),
        indexes(&c, "archive", "people_2024")
    );
    assert_eq!(collections(&c, "archive").len(), 1);

    // A whole database renamed: views follow their renamed sources.
    s.ok(&[
        "restore",
        &id,
        "--to",
        &m.url(""),
        "--rename",
        "shop:shop_copy",
    ]);
    assert_same_db((&c, "shop"), (&c, "shop_copy"));
    let adults = c
        .database("shop_copy")
        .collection::<Document>("adults")
        .count_documents(doc! {})
        .run()
        .unwrap();
    assert_eq!(
        adults,
        c.database("shop")
            .collection::<Document>("adults")
            .count_documents(doc! {})
            .run()
            .unwrap()
    );

    // The URL's database names the target of a one-database snapshot;
    // --exclude leaves collections out.
    s.ok(&[
        "restore",
        &id,
        "--to",
        &m.url("partial"),
        "--exclude",
        "shop.people",
        "--exclude",
        "shop.adult*",
    ]);
    let names: Vec<String> = collections(&c, "partial")
        .into_iter()
        .map(|x| x.0)
        .collect();
    assert_eq!(names, ["capped", "empty_one", "metrics", "strict", "types"]);
    assert_eq!(
        raw_docs(&c, "shop", "types"),
        raw_docs(&c, "partial", "types")
    );

    // Bad rename rules are usage errors.
    let err = s.fails(
        &[
            "restore",
            &id,
            "--to",
            &m.url(""),
            "--rename",
            "shop.people:archive",
        ],
        2,
    );
    assert!(err.contains("--rename"), "{err}");
}

#[test]
#[allow(clippy::many_single_char_names)]
fn drop_over_existing_data_and_dry_run() {
    let (m, s) = setup();
    let c = client(&m);
    populate(&c, "app");
    let id = s.json(&["create", &m.url("app")])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = raw_docs(&c, "app", "people");

    // Change the data after the backup.
    let people = c.database("app").collection::<Document>("people");
    people
        .delete_many(doc! {"_id": {"$lt": 1000}})
        .run()
        .unwrap();
    people
        .update_many(doc! {}, doc! {"$set": {"changed": true}})
        .run()
        .unwrap();
    let changed = raw_docs(&c, "app", "people");

    // Refused without --drop, naming the way out; nothing changed.
    let err = s.fails(&["restore", &id, "--to", &m.url("")], 1);
    assert!(
        err.contains("--drop") && err.contains("app.people"),
        "{err}"
    );
    assert_eq!(raw_docs(&c, "app", "people"), changed);

    // A dry run prints the plan and changes nothing.
    let out = s.ok(&["restore", &id, "--to", &m.url(""), "--drop", "--dry-run"]);
    assert!(
        out.contains("would restore collection app.people: 3000 documents"),
        "{out}"
    );
    assert!(out.contains("dry run"), "{out}");
    assert_eq!(raw_docs(&c, "app", "people"), changed);
    let out = s.ok(&[
        "restore",
        &id,
        "--to",
        &m.url(""),
        "--rename",
        "app:fresh",
        "--dry-run",
    ]);
    assert!(out.contains("as fresh.people"), "{out}");
    assert!(collections(&c, "fresh").is_empty());

    // With --drop: a safety backup, then the snapshot replaces the data.
    let v = s.json(&["restore", &id, "--to", &m.url(""), "--drop", "--yes"]);
    let safety = v["safety_backup"]
        .as_str()
        .expect("a safety backup")
        .to_owned();
    assert_eq!(raw_docs(&c, "app", "people"), before);
    // The safety backup holds what was replaced.
    s.ok(&[
        "restore",
        &safety,
        "--to",
        &m.url(""),
        "--rename",
        "app:was",
    ]);
    assert_eq!(raw_docs(&c, "was", "people"), changed);
}

#[test]
#[allow(clippy::many_single_char_names)]
fn concurrent_writer_reaches_restore_through_the_oplog() {
    let (m, s) = setup();
    let c = client(&m);
    let db = c.database("live");
    // Enough data that the dump takes a while.
    let big = db.collection::<Document>("big");
    for chunk in 0..10 {
        big.insert_many((0..2000).map(|i| doc! {"_id": chunk * 2000 + i, "pad": "x".repeat(400)}))
            .run()
            .unwrap();
    }
    let rows = db.collection::<Document>("rows");
    rows.insert_many(
        (0..200).map(|i| doc! {"_id": i, "round": 0, "nested": {"r": 0, "keep": true}, "arr": [0]}),
    )
    .run()
    .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let inserted = Arc::new(AtomicI64::new(0));
    let writer = {
        let stop = stop.clone();
        let inserted = inserted.clone();
        let c = client(&m);
        std::thread::spawn(move || {
            let db = c.database("live");
            let rows = db.collection::<Document>("rows");
            let seq = db.collection::<Document>("seq");
            let mut round = 0i32;
            while !stop.load(Ordering::SeqCst) {
                round += 1;
                let n = i64::from(round);
                seq.insert_one(doc! {"_id": n}).run().unwrap();
                inserted.store(n, Ordering::SeqCst);
                seq.update_one(doc! {"_id": 0}, doc! {"$set": {"last": n}})
                    .upsert(true)
                    .run()
                    .unwrap();
                let id = round % 200;
                let len = (round % 5) as usize;
                let arr: Vec<i32> = (0..=len as i32).collect();
                let mut set = doc! {"round": round, "nested.r": round, "arr": arr};
                let mut update = doc! {};
                if round % 2 == 0 {
                    set.insert("even", true);
                } else {
                    update.insert("$unset", doc! {"even": ""});
                }
                update.insert("$set", set);
                rows.update_one(doc! {"_id": id}, update).run().unwrap();
                if round % 7 == 0 {
                    rows.replace_one(doc! {"_id": id}, doc! {"_id": id, "round": round, "nested": {"r": round, "keep": true}, "arr": (0..=len as i32).collect::<Vec<_>>(), "replaced": true}).run().unwrap();
                }
            }
        })
    };
    let t0 = Instant::now();
    while inserted.load(Ordering::SeqCst) < 20 && t0.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(20));
    }
    let before = inserted.load(Ordering::SeqCst);
    let v = s.json(&["create", &m.url("live")]);
    stop.store(true, Ordering::SeqCst);
    writer.join().unwrap();
    let id = v["id"].as_str().unwrap().to_owned();
    let show = s.json(&["show", &id]);
    let meta = if show["snapshot"]["metadata"].is_null() {
        show["metadata"].clone()
    } else {
        show["snapshot"]["metadata"].clone()
    };
    assert!(
        meta["oplog"]["entries"].as_u64().unwrap() > 0,
        "the writer's entries were captured: {meta}"
    );

    s.ok(&["restore", &id, "--to", &m.url("restored")]);
    let r = c.database("restored");
    // Inserts: a gap-free prefix that includes everything written before
    // the backup started.
    let ids: Vec<i64> = r
        .collection::<Document>("seq")
        .find(doc! {"_id": {"$gt": 0}})
        .sort(doc! {"_id": 1})
        .run()
        .unwrap()
        .map(|d| d.unwrap().get_i64("_id").unwrap())
        .collect();
    let max = *ids.last().unwrap();
    assert!(max >= before, "{max} < {before}");
    assert_eq!(ids, (1..=max).collect::<Vec<_>>(), "inserts form a prefix");
    let last = r
        .collection::<Document>("seq")
        .find_one(doc! {"_id": 0})
        .run()
        .unwrap()
        .unwrap()
        .get_i64("last")
        .unwrap();
    assert!(
        last == max || last == max - 1,
        "counter {last} vs max {max}"
    );
    // Updates: every document is one of the writer's states (replayed
    // $set/$unset/array diffs and replacements consistent with `round`).
    for d in r
        .collection::<Document>("rows")
        .find(doc! {})
        .run()
        .unwrap()
    {
        let d = d.unwrap();
        let round = d.get_i32("round").unwrap();
        let nested = d.get_document("nested").unwrap();
        assert_eq!(nested.get_i32("r").unwrap(), round, "{d}");
        assert!(nested.get_bool("keep").unwrap(), "{d}");
        let len = if round == 0 { 0 } else { (round % 5) as usize };
        let arr: Vec<i32> = d
            .get_array("arr")
            .unwrap()
            .iter()
            .map(|x| x.as_i32().unwrap())
            .collect();
        assert_eq!(arr, (0..=len as i32).collect::<Vec<_>>(), "{d}");
        if round > 0 && round % 7 != 0 {
            assert_eq!(d.get_bool("even").is_ok(), round % 2 == 0, "{d}");
        }
    }
    assert_eq!(
        r.collection::<Document>("big")
            .count_documents(doc! {})
            .run()
            .unwrap(),
        20_000
    );
}

#[test]
fn clear_errors() {
    let (m, s) = setup();
    let c = client(&m);
    populate(&c, "err");

    // Unreachable server: how long it waited and for what.
    let dead = format!(
        "mongodb://127.0.0.1:{}/?serverSelectionTimeoutMS=700",
        backup_testkit::free_port()
    );
    let err = s.fails(&["create", &dead], 1);
    assert!(
        err.contains("no server answered within 0.7 s") && err.contains("waited for"),
        "{err}"
    );

    // Wrong password: says so, and never shows it.
    let wrong = format!(
        "mongodb://bob:wrong-secret@127.0.0.1:{}/err?directConnection=true",
        m.port()
    );
    let err = s.fails(&["create", &wrong], 1);
    assert!(
        err.contains("authentication failed") && !err.contains("wrong-secret"),
        "{err}"
    );

    // Malformed URL: a usage error.
    let err = s.fails(&["create", "mongodb://127.0.0.1:99999/"], 2);
    assert!(err.contains("not a valid MongoDB URL"), "{err}");

    let id = s.json(&["create", &m.url("err")])["id"]
        .as_str()
        .unwrap()
        .to_owned();

    // An index the target cannot build (a conflicting index of the same
    // name exists on the empty target collection) is reported; the rest
    // is restored and the run exits non-zero.
    let t = c.database("err2");
    t.run_command(doc! {"create": "people"}).run().unwrap();
    t.run_command(
        doc! {"createIndexes": "people", "indexes": [{"key": {"other": 1}, "name": "age_name"}]},
    )
    .run()
    .unwrap();
    let err = s.fails(
        &["restore", &id, "--to", &m.url(""), "--rename", "err:err2"],
        1,
    );
    assert!(
        err.contains("index age_name") && err.contains("err2.people"),
        "{err}"
    );
    assert_eq!(
        raw_docs(&c, "err", "people"),
        raw_docs(&c, "err2", "people")
    );
    assert_eq!(raw_docs(&c, "err", "types"), raw_docs(&c, "err2", "types"));
    let names: Vec<String> = indexes(&c, "err2", "people")
        .iter()
        .map(|i| i.get_str("name").unwrap().to_owned())
        .collect();
    assert!(
        names.contains(&"email_unique".to_owned()) && names.contains(&"wildcard".to_owned()),
        "{names:?}"
    );

    // --at before the named snapshot: it cannot be the base of that point.
    let err = s.fails(
        &[
            "restore",
            &id,
            "--to",
            &m.url(""),
            "--at",
            "2024-01-01T00:00:00Z",
        ],
        2,
    );
    assert!(err.contains("after the target"), "{err}");
}

/// Users (sorted by `_id`, without the derived `mechanisms`) and
/// user-defined roles of `db` as the server reports them.
fn users_and_roles(c: &Client, db: &str) -> (Vec<Document>, Vec<Document>) {
    let sorted = |mut v: Vec<Document>, key: &str| {
        v.sort_by_key(|d| d.get_str(key).unwrap_or_default().to_owned());
        v
    };
    let users = c
        .database(db)
        .run_command(doc! {"usersInfo": 1, "showCredentials": true})
        .run()
        .unwrap();
    let roles = c
        .database(db)
        .run_command(doc! {"rolesInfo": 1, "showPrivileges": true, "showBuiltinRoles": false})
        .run()
        .unwrap();
    let list = |d: &Document, key: &str| -> Vec<Document> {
        d.get_array(key)
            .unwrap()
            .iter()
            .map(|v| v.as_document().unwrap().clone())
            .collect()
    };
    (
        sorted(list(&users, "users"), "user"),
        sorted(list(&roles, "roles"), "role"),
    )
}

#[test]
#[allow(clippy::many_single_char_names)]
fn users_and_roles_on_request() {
    let (m, s) = setup();
    let c = client(&m);
    populate(&c, "shop");
    let shop = c.database("shop");
    shop.run_command(doc! {
        "createRole": "reporter",
        "privileges": [{"resource": {"db": "shop", "collection": "people"}, "actions": ["find"]}],
        "roles": [],
    })
    .run()
    .unwrap();
    // Created after the role it inherits, but named so that a plain
    // alphabetical order would create it first.
    shop.run_command(doc! {
        "createRole": "auditor",
        "privileges": [{"resource": {"db": "shop", "collection": ""}, "actions": ["listCollections"]}],
        "roles": ["reporter", {"role": "read", "db": "shop"}],
    })
    .run()
    .unwrap();
    shop.run_command(
        doc! {"createUser": "alice", "pwd": "alice-pw", "roles": ["auditor", "readWrite"]},
    )
    .run()
    .unwrap();
    c.database("admin")
        .run_command(
            doc! {"createUser": "ops", "pwd": "ops-pw", "roles": [{"role": "root", "db": "admin"}]},
        )
        .run()
        .unwrap();
    c.database("$external")
        .run_command(doc! {
            "createUser": "CN=reporting,O=Acme",
            "mechanisms": ["MONGODB-X509"],
            "roles": [{"role": "reporter", "db": "shop"}],
        })
        .run()
        .unwrap();
    let (shop_users, shop_roles) = users_and_roles(&c, "shop");
    let (_, ext_roles) = users_and_roles(&c, "$external");
    assert_eq!(shop_roles.len(), 2);

    // Not asked for: no users in the snapshot.
    let plain = s.json(&["create", &m.url("")]);
    let plain_id = plain["id"].as_str().unwrap().to_owned();
    let v = s.json(&["show", &plain_id]);
    assert_eq!(
        v["snapshot"]["metadata"]["topology"], "replica set secantus",
        "{v}"
    );
    assert!(v["snapshot"]["metadata"].get("users").is_none(), "{v}");

    let v = s.json(&["create", &m.url(""), "--mongo-users"]);
    let id = v["id"].as_str().unwrap().to_owned();
    let meta = &s.json(&["show", &id])["snapshot"]["metadata"];
    let mut users: Vec<&str> = meta["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    users.sort_unstable();
    assert_eq!(
        users,
        ["CN=reporting,O=Acme@$external", "alice@shop", "ops@admin"]
    );
    let mut roles: Vec<&str> = meta["roles"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u.as_str().unwrap())
        .collect();
    roles.sort_unstable();
    assert_eq!(roles, ["auditor@shop", "reporter@shop"]);

    // Restored over the same deployment: everything is already there and
    // left as it is.
    let out = s.ok(&["restore", &id, "--to", &m.url(""), "--drop", "--yes"]);
    assert!(
        out.contains("0 roles and 0 users created, 5 already on the target"),
        "{out}"
    );
    assert_eq!(
        users_and_roles(&c, "shop"),
        (shop_users.clone(), shop_roles.clone())
    );

    // Into another deployment: the roles (inherited one first) and the
    // password-less user are created exactly; SecantusDB has no
    // _mergeAuthzCollections, so users with password hashes are reported
    // and the run exits 1 after restoring everything else.
    let m2 = MongoServer::start();
    let c2 = client(&m2);
    let out = s.ok(&["restore", &id, "--to", &m2.url(""), "--dry-run"]);
    for line in [
        "would create role reporter@shop",
        "would create role auditor@shop",
        "would create user alice@shop",
        "would create user ops@admin",
        "would create user CN=reporting,O=Acme@$external",
    ] {
        assert!(out.contains(line), "{line}: {out}");
    }
    assert!(users_and_roles(&c2, "shop").1.is_empty());
    let err = s.fails(&["restore", &id, "--to", &m2.url("")], 1);
    assert!(
        err.contains("user alice@shop: not restored") && err.contains("_mergeAuthzCollections"),
        "{err}"
    );
    assert!(err.contains("user ops@admin: not restored"), "{err}");
    assert!(!err.contains("CN=reporting"), "{err}");
    assert_same_db((&c, "shop"), (&c2, "shop"));
    assert_eq!(users_and_roles(&c2, "shop").1, shop_roles);
    let (ext2, _) = users_and_roles(&c2, "$external");
    let (ext1, _) = users_and_roles(&c, "$external");
    assert_eq!(ext2, ext1);
    assert_eq!(users_and_roles(&c2, "$external").1, ext_roles);
    assert!(users_and_roles(&c2, "shop").0.is_empty());

    // A renamed database takes its roles along, with references to the
    // database's roles and resources renamed too.
    let err = s.fails(
        &[
            "restore",
            &id,
            "--to",
            &m2.url(""),
            "--rename",
            "shop:shop2",
        ],
        1,
    );
    assert!(err.contains("user alice@shop2: not restored"), "{err}");
    let (_, roles2) = users_and_roles(&c2, "shop2");
    let renamed: Vec<Document> = shop_roles
        .iter()
        .map(
            |r| match rename_db(&Bson::Document(r.clone()), "shop", "shop2") {
                Bson::Document(d) => d,
                other => panic!("{other:?}"),
            },
        )
        .collect();
    assert_eq!(roles2, renamed);

    // The mongodump export carries them where mongodump puts them.
    let dump = s.path("dump-users");
    s.ok(&[
        "export",
        &id,
        "--format",
        "mongodump",
        "--to",
        dump.to_str().unwrap(),
    ]);
    let read_bson = |name: &str| -> Vec<Document> {
        let bytes = std::fs::read(dump.join("admin").join(name)).unwrap();
        let mut out = Vec::new();
        let mut rest = bytes.as_slice();
        while !rest.is_empty() {
            let d = Document::from_reader(&mut rest).unwrap();
            out.push(d);
        }
        out
    };
    let exported_users = read_bson("system.users.bson");
    assert_eq!(exported_users.len(), 3);
    let alice = exported_users
        .iter()
        .find(|u| u.get_str("_id") == Ok("shop.alice"))
        .expect("alice exported");
    assert_eq!(
        alice.get_document("credentials").unwrap(),
        shop_users[0].get_document("credentials").unwrap()
    );
    assert!(alice.get("mechanisms").is_none());
    let exported_roles = read_bson("system.roles.bson");
    let mut role_ids: Vec<&str> = exported_roles
        .iter()
        .map(|r| r.get_str("_id").unwrap())
        .collect();
    role_ids.sort_unstable();
    assert_eq!(role_ids, ["shop.auditor", "shop.reporter"]);

    // Users and roles go with their whole database: a restore of some of
    // its collections brings none; one of the whole database does.
    let m3 = MongoServer::start();
    let c3 = client(&m3);
    s.ok(&[
        "restore",
        &id,
        "--to",
        &m3.url(""),
        "--include",
        "shop.people",
    ]);
    assert!(users_and_roles(&c3, "shop").1.is_empty());
    let out = s.ok(&[
        "restore",
        &id,
        "--to",
        &m3.url(""),
        "--include",
        "shop",
        "--rename",
        "shop:shop3",
        "--dry-run",
    ]);
    assert!(out.contains("would create role reporter@shop3"), "{out}");
    assert!(!out.contains("ops@admin"), "{out}");
}

/// `v` with every `db: FROM` field set to `TO`.
fn rename_db(v: &Bson, from: &str, to: &str) -> Bson {
    match v {
        Bson::Document(d) => Bson::Document(
            d.iter()
                .map(|(k, v)| {
                    if k == "db" && v.as_str() == Some(from) {
                        (k.clone(), Bson::String(to.to_owned()))
                    } else {
                        (k.clone(), rename_db(v, from, to))
                    }
                })
                .collect(),
        ),
        Bson::Array(a) => Bson::Array(a.iter().map(|v| rename_db(v, from, to)).collect()),
        other => other.clone(),
    }
}
