//! Issue 17, files and CLI items 17 and 18.

use backup_testkit::mongo::MongoServer;
use backup_testkit::postgres::PgCluster;
use backup_testkit::redis::RedisServer;
use mongodb::bson::{doc, Document};

use crate::util::{write, Scratch};

/// Item 17: include patterns that match nothing are reported, and a
/// restore that selects nothing at all fails (exit 1) without creating
/// anything.
#[test]
fn r17_17_patterns_that_match_nothing_are_reported() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    write(&src.join("docs/a.md"), b"a");
    write(&src.join("src/x.rs"), b"x");
    let (id, _) = s.create(&src, &[]);

    let to = s.path("some");
    let out = s.ok(&[
        "restore",
        &id,
        "--to",
        to.to_str().unwrap(),
        "--include",
        "docs",
        "--include",
        "nope*",
        "--exclude",
        "*.tmp",
    ]);
    assert!(out.contains("--include `nope*` matched nothing"), "{out}");
    assert!(out.contains("--exclude `*.tmp` matched nothing"), "{out}");
    assert!(!out.contains("`docs` matched nothing"), "{out}");
    assert_eq!(std::fs::read(to.join("docs/a.md")).unwrap(), b"a");
    assert!(!to.join("src").exists());

    let none = s.path("none");
    let err = s.fails(
        &[
            "restore",
            &id,
            "--to",
            none.to_str().unwrap(),
            "--include",
            "nope",
        ],
        1,
    );
    assert!(err.contains("`nope` matched nothing"), "{err}");
    assert!(!none.exists(), "nothing may be created");
    // A dry run says the same.
    let out = s.ok(&[
        "restore",
        &id,
        "--to",
        s.path("dry").to_str().unwrap(),
        "--include",
        "src",
        "--include",
        "missing",
        "--dry-run",
    ]);
    assert!(out.contains("--include `missing` matched nothing"), "{out}");
}

/// Item 18: `backup show` of a database snapshot prints a table of its
/// tables, collections or databases with their counts, not the raw JSON
/// metadata (which `--json` still gives).
#[test]
fn r17_18_show_lists_what_a_database_snapshot_holds() {
    let s = Scratch::new();
    s.init();

    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE src");
    pg.psql(
        "src",
        "CREATE TABLE public.items (id int); INSERT INTO public.items SELECT generate_series(1, 42);
         CREATE TABLE public.empty (x int);",
    );
    let id = s.json(&["create", &pg.url("src")])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = s.ok(&["show", &id]);
    assert!(out.contains("table") && out.contains("rows"), "{out}");
    let line = out
        .lines()
        .find(|l| l.contains("public.items"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.split_whitespace().any(|w| w == "42"), "{line}");
    assert!(out.contains("2 tables, 42 rows"), "{out}");
    assert!(!out.contains("\"tables\""), "raw JSON: {out}");
    let json = s.json(&["show", &id]);
    assert!(json["snapshot"]["metadata"]["tables"].is_array(), "{json}");

    let r = RedisServer::start();
    let mut con = r.connection();
    for db in [0, 3] {
        redis::cmd("SELECT").arg(db).exec(&mut con).unwrap();
        for i in 0..=db {
            redis::cmd("SET")
                .arg(format!("k{i}"))
                .arg(i)
                .exec(&mut con)
                .unwrap();
        }
    }
    let id = s.json(&["create", &r.url()])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = s.ok(&["show", &id]);
    assert!(out.contains("database") && out.contains("keys"), "{out}");
    assert!(out.contains("2 databases, 5 keys"), "{out}");
    assert!(!out.contains("\"databases\""), "raw JSON: {out}");

    let m = MongoServer::start();
    let c = mongodb::sync::Client::with_uri_str(m.url("")).unwrap();
    c.database("shop")
        .collection::<Document>("orders")
        .insert_many((0..7).map(|i| doc! {"_id": i}))
        .run()
        .unwrap();
    let id = s.json(&["create", &m.url("")])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = s.ok(&["show", &id]);
    let line = out
        .lines()
        .find(|l| l.contains("shop.orders"))
        .unwrap_or_else(|| panic!("{out}"));
    assert!(line.split_whitespace().any(|w| w == "7"), "{line}");
    assert!(out.contains("documents"), "{out}");
    assert!(!out.contains("\"collections\""), "raw JSON: {out}");
}

/// Item 17, the same for databases: patterns that match nothing are
/// reported by PostgreSQL, MongoDB and Redis restores, and patterns that
/// select nothing change nothing (a Redis `--drop` restore flushes
/// nothing, and takes no safety backup).
#[test]
fn r17_17_database_patterns_that_match_nothing_are_reported() {
    let s = Scratch::new();
    s.init();
    let count = |s: &Scratch| s.json(&["list"]).as_array().map_or(0, Vec::len);

    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE src");
    pg.psql(
        "src",
        "CREATE TABLE public.items (id int); INSERT INTO public.items VALUES (1);",
    );
    let id = s.json(&["create", &pg.url("src")])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let out = s.ok(&[
        "restore",
        &id,
        "--to",
        &pg.url("part"),
        "--include",
        "public.items",
        "--include",
        "nope.*",
    ]);
    assert!(
        out.contains("warning: --include `nope.*` matched no table"),
        "{out}"
    );

    let m = MongoServer::start();
    let c = mongodb::sync::Client::with_uri_str(m.url("")).unwrap();
    c.database("shop")
        .collection::<Document>("orders")
        .insert_one(doc! {"_id": 1})
        .run()
        .unwrap();
    let id = s.json(&["create", &m.url("")])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let target = MongoServer::start();
    let err = s.fails(
        &["restore", &id, "--to", &target.url(""), "--include", "nope"],
        2,
    );
    assert!(err.contains("`nope` matched no collection"), "{err}");
    let out = s.ok(&[
        "restore",
        &id,
        "--to",
        &target.url(""),
        "--include",
        "shop.orders",
        "--exclude",
        "shop.gone",
    ]);
    assert!(
        out.contains("warning: --exclude `shop.gone` matched no collection"),
        "{out}"
    );

    let r = RedisServer::start();
    let mut con = r.connection();
    for k in ["k1", "k2"] {
        redis::cmd("SET").arg(k).arg(1).exec(&mut con).unwrap();
    }
    let id = s.json(&["create", &r.url()])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let before = count(&s);
    let err = s.fails(
        &[
            "restore",
            &id,
            "--to",
            &r.url(),
            "--include",
            "nope*",
            "--drop",
            "--yes",
        ],
        1,
    );
    assert!(err.contains("`nope*` matched no key"), "{err}");
    assert_eq!(r.dbsize(0), 2, "nothing may be flushed");
    assert_eq!(count(&s), before, "no safety backup");
    let dst = RedisServer::start();
    s.fails(
        &["restore", &id, "--to", &dst.url(), "--include", "nope*"],
        1,
    );
    let out = s.ok(&[
        "restore",
        &id,
        "--to",
        &dst.url(),
        "--include",
        "k*",
        "--include",
        "zz*",
    ]);
    assert!(
        out.contains("warning: --include `zz*` matched no key"),
        "{out}"
    );
    assert_eq!(dst.dbsize(0), 2);
}
