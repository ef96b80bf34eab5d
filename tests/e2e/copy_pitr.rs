//! `backup copy` keeps point-in-time windows (issue 31, "Copies keep
//! their windows"): the captured WAL, oplog and Redis stream go with the snapshots, into
//! a repository with its own key, incrementally; `backup pitr` on the copy
//! lists the same windows and a restore to a point from the copy equals
//! one from the original.

use backup_testkit::mongo::MongoServer;
use backup_testkit::postgres::PgCluster;
use backup_testkit::redis::RedisServer;
use mongodb::bson::{doc, Document};
use mongodb::sync::Client;

use crate::mongo_pitr::{newest, ts_arg, wait_stored, Follower};
use crate::postgres_pitr::{
    markers, receiving_with_base, time_after_marker, wait_captured, write_markers,
};
use crate::util::Scratch;

/// A destination repository with another password (so another key).
fn destination(s: &Scratch) -> Scratch {
    let d = Scratch::with_repo(
        s.dir.path().join("copy").to_string_lossy().into_owned(),
        vec![("BACKUP_PASSWORD".into(), "another password".into())],
    );
    d.init();
    d
}

/// `backup copy` of everything into `d`; returns the `--json` document.
fn copy_to(s: &Scratch, d: &Scratch) -> serde_json::Value {
    let out = s
        .cmd()
        .env("BACKUP_TO_PASSWORD", "another password")
        .args(["--json", "copy", "--to-repo", &d.repo])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// The windows of `backup pitr --json`, without what differs between
/// repositories (stream ids, snapshot ids).
fn windows(s: &Scratch) -> Vec<serde_json::Value> {
    s.json(&["pitr"])
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|st| st["windows"].as_array().unwrap().clone())
        .map(|mut w| {
            w.as_object_mut().unwrap().remove("bases");
            w
        })
        .collect()
}

#[test]
fn postgres_wal_is_copied_with_its_base_and_restores_the_same() {
    let (pg, s, receiver) = receiving_with_base(&[]);
    write_markers(&pg, 2);
    let (_, last) = markers(&pg);
    wait_captured(&pg);
    receiver.stop();
    let d = destination(&s);
    let first = copy_to(&s, &d);
    assert_eq!(first["copied"].as_array().unwrap().len(), 1, "{first}");
    assert!(first["captures"]["pieces"].as_u64().unwrap() > 0, "{first}");
    let before = windows(&s);
    assert!(!before.is_empty());
    assert_eq!(windows(&d), before, "the copy lists the same windows");
    // Incremental: nothing new, nothing copied again.
    let again = copy_to(&s, &d);
    assert_eq!(again["captures"]["pieces"], 0, "{again}");
    assert_eq!(
        again["captures"]["present"], first["captures"]["pieces"],
        "{again}"
    );
    // A restore to a point from the copy holds what one from the original
    // holds.
    let k = last - 15;
    let at = time_after_marker(&pg, k);
    for repo in [&s, &d] {
        let target = PgCluster::owned_tempdir("copy-pitr-");
        let data = target.path().join("data");
        let port = backup_testkit::free_port().to_string();
        repo.ok(&[
            "restore",
            "--at",
            &at,
            "--to",
            data.to_str().unwrap(),
            "--start",
            &port,
        ]);
        let copy = PgCluster::start_existing(target, data);
        assert_eq!(markers(&copy), (k, k), "restored from {}", repo.repo);
    }
}

#[test]
fn mongodb_oplog_is_copied_with_its_base_and_restores_the_same() {
    let m = MongoServer::start();
    let c = Client::with_uri_str(m.url("")).unwrap();
    let s = Scratch::new();
    s.init();
    let url = m.url("");
    let orders = c.database("shop").collection::<Document>("orders");
    orders
        .insert_many((0..10).map(|i| doc! {"_id": i}))
        .run()
        .unwrap();
    s.ok(&["create", &url]);
    let follower = Follower::start(&s, &url);
    for i in 10..40 {
        orders.insert_one(doc! {"_id": i}).run().unwrap();
    }
    let mid = newest(&c);
    for i in 40..60 {
        orders.insert_one(doc! {"_id": i}).run().unwrap();
    }
    wait_stored(&s, newest(&c));
    follower.stop();

    let d = destination(&s);
    let out = copy_to(&s, &d);
    assert!(out["captures"]["pieces"].as_u64().unwrap() > 0, "{out}");
    let before = windows(&s);
    assert!(!before.is_empty());
    assert_eq!(windows(&d), before, "the copy lists the same windows");
    // To the timestamp of the 30th insert, from either repository.
    let expected: Vec<i32> = (0..40).collect();
    for (repo, db) in [(&s, "from_original"), (&d, "from_copy")] {
        repo.ok(&[
            "restore",
            "--at-ts",
            &ts_arg(mid),
            "--to",
            &m.url(""),
            "--rename",
            &format!("shop:{db}"),
        ]);
        let mut ids: Vec<i32> = c
            .database(db)
            .collection::<Document>("orders")
            .find(doc! {})
            .run()
            .unwrap()
            .map(|d| d.unwrap().get_i32("_id").unwrap())
            .collect();
        ids.sort_unstable();
        assert_eq!(ids, expected, "restored from {}", repo.repo);
    }
}

#[test]
fn redis_stream_is_copied_with_its_base_and_restores_the_same() {
    use crate::redis_pitr::{repl_offset, wait_captured, Follower};
    let source = RedisServer::start();
    let s = Scratch::new();
    s.init();
    let mut con = source.connection();
    redis::cmd("SET").arg("n").arg(0).exec(&mut con).unwrap();
    let follower = Follower::start(&s, &source.url());
    wait_captured(&s, 0);
    for _ in 0..30 {
        redis::cmd("INCR").arg("n").exec(&mut con).unwrap();
    }
    // A database the base has no key in: the replay fills it too.
    let mut other = source.connection();
    redis::cmd("SELECT").arg(3).exec(&mut other).unwrap();
    redis::cmd("SET")
        .arg("x")
        .arg("in db 3")
        .exec(&mut other)
        .unwrap();
    let mid = repl_offset(&mut con);
    for _ in 0..20 {
        redis::cmd("INCR").arg("n").exec(&mut con).unwrap();
    }
    wait_captured(&s, repl_offset(&mut con));
    follower.stop();

    let d = destination(&s);
    let out = copy_to(&s, &d);
    assert!(out["captures"]["pieces"].as_u64().unwrap() > 0, "{out}");
    let before = windows(&s);
    assert!(!before.is_empty());
    assert_eq!(windows(&d), before, "the copy lists the same windows");
    for repo in [&s, &d] {
        let target = RedisServer::start();
        repo.ok(&[
            "restore",
            "--at-offset",
            &mid.to_string(),
            "--to",
            &target.url(),
        ]);
        let mut restored = target.connection();
        let n: i64 = redis::cmd("GET").arg("n").query(&mut restored).unwrap();
        assert_eq!(n, 30, "restored from {}", repo.repo);
        redis::cmd("SELECT").arg(3).exec(&mut restored).unwrap();
        let x: String = redis::cmd("GET").arg("x").query(&mut restored).unwrap();
        assert_eq!(x, "in db 3");
    }
}
