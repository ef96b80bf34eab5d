//! One table, collection or key out of a database snapshot in a format
//! of its own (`backup dump SNAPSHOT ITEM --format ...`) and Redis keys
//! in `backup ls`, issue 33. Every format is checked by loading it back
//! with the database's own tools (psql's `\copy`, `INSERT` scripts run by
//! psql, `RESTORE`) or by an Extended JSON parser that is not ours, and
//! comparing with the server's data.

use std::collections::BTreeMap;
use std::fs;

use backup_testkit::mongo::MongoServer;
use backup_testkit::postgres::PgCluster;
use backup_testkit::redis::RedisServer;
use mongodb::bson::{doc, Bson, Document};
use mongodb::sync::Client;

use crate::util::Scratch;

/// A table whose values need every escape COPY text, CSV and SQL
/// literals have, of many types, with NULLs next to empty strings, an
/// identity column and a generated one.
const AWKWARD: &str = r#"
CREATE SCHEMA "Odd Schema";
CREATE TABLE "Odd Schema"."mixed ""case""" (
    id int GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    t text,
    b bytea,
    arr text[],
    j jsonb,
    n numeric,
    ts timestamptz,
    f float8,
    twice int GENERATED ALWAYS AS (id * 2) STORED
);
INSERT INTO "Odd Schema"."mixed ""case""" (t, b, arr, j, n, ts, f) VALUES
    ('plain', '\x00ff10', '{a,b}', '{"k": [1, 2]}', 1.5, '2024-02-29 12:00:00+00', 1e300),
    (E'tab\there\nnew line\r\ncrlf', '', '{}', 'null', -0.0001, '-infinity', '-Infinity'),
    ('back\slash \N and \.', NULL, '{"with,comma","with \"quote\"",NULL}', '"text"', 'NaN', 'infinity', 'NaN'),
    ('', '\x5c', NULL, '{}', 123456789012345678901234567890.123, '1999-12-31 23:59:59.999999+05', 0),
    (NULL, NULL, NULL, NULL, NULL, NULL, NULL),
    ('comma, "quotes" and ''apostrophes''', '\x2c22', '{""}', '[]', 0, '2000-01-01 00:00:00+00', -0),
    ('\.', '\x0a', '{"\\."}', '{"\\.": "\n"}', 1, '1970-01-01 00:00:00+00', 5e-324),
    ('żółw 🐢 ünïcödé', '\xdeadbeef', '{żółw}', '{"🐢": true}', 2, '2024-06-01 08:30:00+02', 3.25);
CREATE TABLE public.empty (a int, b text);
CREATE TABLE public.events (id int, at date) PARTITION BY RANGE (at);
CREATE TABLE public.events_2024 PARTITION OF public.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
INSERT INTO public.events VALUES (1, '2024-05-05');
"#;

/// The table's rows as text, in id order, with a digest: equal on two
/// databases when the rows are.
const FINGERPRINT: &str = r#"SELECT count(*) || ' ' || md5(coalesce(string_agg(x::text, E'\n' ORDER BY x.id), '')) FROM "Odd Schema"."mixed ""case""" x"#;

#[test]
fn dump_postgres_tables_as_csv_copy_and_sql() {
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql("app", AWKWARD);
    let s = Scratch::new();
    s.init();
    s.json(&["create", &pg.url("app")]);
    let want = pg.psql("app", FINGERPRINT);
    assert!(want.starts_with("8 "), "{want}");

    // A database with the same table, empty, for each format to load into.
    let load = |format: &str, file: &std::path::Path| {
        let db = format!("load_{format}");
        pg.psql("postgres", &format!("CREATE DATABASE {db}"));
        pg.psql(&db, AWKWARD);
        pg.psql(
            &db,
            r#"TRUNCATE "Odd Schema"."mixed ""case""", public.events"#,
        );
        let cols = "(id, t, b, arr, j, n, ts, f)";
        let path = file.to_str().unwrap();
        let sql = match format {
            "csv" => format!(
                r#"\copy "Odd Schema"."mixed ""case""" {cols} FROM '{path}' WITH (FORMAT csv, HEADER true)"#
            ),
            "copy" => format!(r#"\copy "Odd Schema"."mixed ""case""" {cols} FROM '{path}'"#),
            _ => fs::read_to_string(file).unwrap(),
        };
        pg.psql(&db, &sql);
        pg.psql(&db, FINGERPRINT)
    };
    for (format, path) in [
        ("csv", r#"Odd Schema.mixed "case""#),
        ("copy", r#"app/Odd Schema/mixed "case""#),
        ("sql", r#"Odd Schema.mixed "case""#),
    ] {
        let file = s.path(&format!("table.{format}"));
        let out = s.run(&[
            "dump",
            "latest",
            path,
            "--format",
            format,
            "-O",
            file.to_str().unwrap(),
        ]);
        let note = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{format}: {note}");
        assert!(note.contains("(8 rows) as"), "{format}: {note}");
        assert_eq!(load(format, &file), want, "{format} loads the same rows");
    }
    // csv is the default, and its header names the stored columns (the
    // generated one is not stored).
    let out = s.run(&["dump", "latest", r#"Odd Schema.mixed "case""#]);
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.starts_with("id,t,b,arr,j,n,ts,f\n"), "{text}");
    // A NULL is an empty field, an empty string a quoted one.
    assert!(text.contains("\n4,\"\","), "{text}");
    assert!(text.contains("\n5,,,,,,,\n"), "{text}");

    // An empty table: a header and nothing else; a partition: its rows.
    let out = s.run(&["dump", "latest", "public.empty"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "a,b\n");
    let out = s.run(&["dump", "latest", "public.events_2024", "--format", "copy"]);
    assert_eq!(String::from_utf8(out.stdout).unwrap(), "1\t2024-05-05\n");

    // Refusals, each before any output file is created.
    let never = s.path("never.out");
    let o = never.to_str().unwrap();
    let err = s.fails(&["dump", "latest", "public.events", "-O", o], 2);
    assert!(err.contains("partitioned"), "{err}");
    let err = s.fails(&["dump", "latest", "public.nosuch", "-O", o], 1);
    assert!(err.contains("public.nosuch"), "{err}");
    let err = s.fails(&["dump", "latest", "public", "-O", o], 2);
    assert!(err.contains("names 3 tables"), "{err}");
    let err = s.fails(
        &[
            "dump",
            "latest",
            "public.empty",
            "--format",
            "json",
            "-O",
            o,
        ],
        2,
    );
    assert!(err.contains("csv or copy or sql"), "{err}");
    s.fails(
        &["dump", "latest", "public.empty", "--format", "xml", "-O", o],
        2,
    );
    assert!(!never.exists());
    // A stored stream is still written as it is.
    let out = s.run(&["dump", "latest", "/schema/pre-data.sql"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("CREATE TABLE"));
}

#[test]
fn dump_postgres_physical_table_is_refused() {
    let pg = PgCluster::start();
    pg.psql(
        "postgres",
        "CREATE TABLE t (a int); INSERT INTO t VALUES (1)",
    );
    let s = Scratch::new();
    s.init();
    s.json(&["create", &format!("{}?mode=physical", pg.url("postgres"))]);
    let err = s.fails(&["dump", "latest", "public.t", "--format", "csv"], 2);
    assert!(err.contains("physical base backup"), "{err}");
    assert!(err.contains("restore"), "{err}");
    // Nor at a point in time: that is a restore's work.
    let now = chrono::Utc::now().to_rfc3339();
    let err = s.fails(&["dump", "latest", "public.t", "--at", &now], 2);
    assert!(
        err.contains("backup restore latest --at") && err.contains("WAL"),
        "{err}"
    );
}

fn client(m: &MongoServer) -> Client {
    Client::with_uri_str(m.url("")).unwrap()
}

#[test]
fn dump_mongodb_collections_as_extended_json_and_bson() {
    let server = MongoServer::start();
    let client = client(&server);
    let docs = crate::mongo::all_types();
    client
        .database("shop")
        .collection::<Document>("things")
        .insert_many(docs.clone())
        .run()
        .unwrap();
    client
        .database("shop")
        .collection::<Document>("empty")
        .insert_one(doc! {"x": 1})
        .run()
        .unwrap();
    client
        .database("shop")
        .collection::<Document>("empty")
        .delete_many(doc! {})
        .run()
        .unwrap();
    client
        .database("shop")
        .run_command(doc! {"create": "view", "viewOn": "things", "pipeline": []})
        .run()
        .unwrap();
    let s = Scratch::new();
    s.init();
    s.json(&["create", &server.url("shop")]);
    let mut want = crate::mongo::raw_docs(&client, "shop", "things");
    want.sort();

    // json (the default): each line parsed by the bson crate's Extended
    // JSON reader gives back the server's document, byte for byte.
    let out = s.run(&["dump", "latest", "shop.things"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut got: Vec<Vec<u8>> = String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            let Bson::Document(d) = Bson::try_from(v).unwrap() else {
                panic!("not a document: {l}")
            };
            let mut bytes = Vec::new();
            d.to_writer(&mut bytes).unwrap();
            bytes
        })
        .collect();
    got.sort();
    assert_eq!(got.len(), docs.len());
    assert!(got == want, "the documents differ");
    // Canonical: numbers keep their types.
    let first = s.run(&["dump", "latest", "shop/things"]).stdout;
    assert!(String::from_utf8_lossy(&first).contains("{\"$numberInt\":"));

    // bson: the stored documents, as mongodump writes them.
    let file = s.path("things.bson");
    s.ok(&[
        "dump",
        "latest",
        "shop.things",
        "--format",
        "bson",
        "-O",
        file.to_str().unwrap(),
    ]);
    let raw = fs::read(&file).unwrap();
    let mut split = Vec::new();
    let mut at = 0;
    while at < raw.len() {
        let len = i32::from_le_bytes(raw[at..at + 4].try_into().unwrap()) as usize;
        split.push(raw[at..at + len].to_vec());
        at += len;
    }
    split.sort();
    assert!(split == want, "the BSON differs");

    // An empty collection writes nothing; a view is refused.
    let out = s.run(&["dump", "latest", "shop.empty"]);
    assert!(out.status.success() && out.stdout.is_empty());
    let err = s.fails(&["dump", "latest", "shop.view"], 2);
    assert!(err.contains("view"), "{err}");
    let err = s.fails(&["dump", "latest", "shop.things", "--format", "csv"], 2);
    assert!(err.contains("json or bson"), "{err}");
}

fn redis_fixture(server: &RedisServer) {
    let mut con = server.connection();
    let cmd = |args: &[&[u8]]| {
        let mut c = redis::cmd(std::str::from_utf8(args[0]).unwrap());
        for a in &args[1..] {
            c.arg(*a);
        }
        c
    };
    let run = |con: &mut redis::Connection, args: &[&[u8]]| cmd(args).exec(con).unwrap();
    run(&mut con, &[b"SET", b"user:1", b"alice"]);
    run(&mut con, &[b"SET", b"user:2", b"bob"]);
    run(&mut con, &[b"SET", b"bin", b"\x00\xff\xfe raw"]);
    run(&mut con, &[b"SET", b"\xffkey", b"not UTF-8"]);
    run(&mut con, &[b"SET", b"a*b", b"glob chars"]);
    run(&mut con, &[b"SET", b"path/with/slashes", b"deep"]);
    run(&mut con, &[b"SET", b"expiring", b"soon", b"EX", b"86400"]);
    run(&mut con, &[b"RPUSH", b"list", b"one", b"two", b"\xff"]);
    run(&mut con, &[b"SADD", b"set", b"m1", b"m2"]);
    run(
        &mut con,
        &[
            b"ZADD", b"zset", b"1.5", b"low", b"inf", b"top", b"-inf", b"bottom",
        ],
    );
    run(&mut con, &[b"HSET", b"hash", b"f1", b"v1", b"f2", b"v2"]);
    run(&mut con, &[b"XADD", b"stream", b"1-1", b"field", b"value"]);
    run(&mut con, &[b"SELECT", b"3"]);
    run(&mut con, &[b"SET", b"user:9", b"in db 3"]);
}

#[test]
fn redis_keys_listed_and_dumped() {
    let server = RedisServer::start();
    redis_fixture(&server);
    let s = Scratch::new();
    s.init();
    s.json(&["create", &server.url()]);

    // ls DB: every key with its type; --match narrows (across databases
    // without a DB).
    let keys: Vec<serde_json::Value> = s
        .ok(&["--json", "ls", "latest", "0"])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let types: BTreeMap<String, String> = keys
        .iter()
        .map(|k| {
            (
                k["key"].as_str().unwrap().to_owned(),
                k["type"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    assert_eq!(types.len(), 12, "{types:?}");
    for (k, t) in [
        ("list", "list"),
        ("set", "set"),
        ("zset", "zset"),
        ("hash", "hash"),
        ("stream", "stream"),
        ("user:1", "string"),
    ] {
        assert_eq!(types[k], t, "{k}");
    }
    // A key that is not UTF-8 comes with its bytes in base64.
    assert!(
        keys.iter().any(|k| k["key_base64"] == "/2tleQ=="),
        "{keys:?}"
    );
    let expiring = keys.iter().find(|k| k["key"] == "expiring").unwrap();
    assert!(expiring["expires_ms"].as_i64().unwrap() > 1_700_000_000_000);
    assert!(keys.iter().all(|k| k["size"].as_u64().unwrap() > 0));
    let mut users: Vec<String> = s
        .ok(&["ls", "latest", "--match", "user:*"])
        .lines()
        .map(str::to_owned)
        .collect();
    users.sort();
    assert_eq!(users, ["user:1", "user:2", "user:9"]);
    let long = s.ok(&["ls", "latest", "3", "-l"]);
    assert!(
        long.contains("string") && long.contains("3/user:9"),
        "{long}"
    );
    s.fails(&["ls", "latest", "7"], 1);

    // dump DB/KEY: a string as its bytes, the rest as JSON.
    let get = |args: &[&str]| {
        let out = s.run(args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    };
    assert_eq!(get(&["dump", "latest", "0/user:1"]), b"alice");
    assert_eq!(get(&["dump", "latest", "0/bin"]), b"\x00\xff\xfe raw");
    assert_eq!(get(&["dump", "latest", "0/a*b"]), b"glob chars");
    assert_eq!(get(&["dump", "latest", "0/path/with/slashes"]), b"deep");
    assert_eq!(get(&["dump", "latest", "3/user:9"]), b"in db 3");
    let json = |args: &[&str]| -> serde_json::Value { serde_json::from_slice(&get(args)).unwrap() };
    assert_eq!(
        json(&["dump", "latest", "0/list"]),
        serde_json::json!(["one", "two", {"base64": "/w=="}])
    );
    let mut set: Vec<String> = serde_json::from_value(json(&["dump", "latest", "0/set"])).unwrap();
    set.sort();
    assert_eq!(set, ["m1", "m2"]);
    let zset = json(&["dump", "latest", "0/zset"]);
    let scores: BTreeMap<String, serde_json::Value> = zset
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["member"].as_str().unwrap().to_owned(), e["score"].clone()))
        .collect();
    assert_eq!(scores["low"], 1.5);
    assert_eq!(scores["top"], "inf");
    assert_eq!(scores["bottom"], "-inf");
    assert_eq!(
        json(&["dump", "latest", "0/hash"]),
        serde_json::json!({"f1": "v1", "f2": "v2"})
    );

    // A stream has no plain rendering; its DUMP payload RESTOREs into
    // the server as an equal stream.
    let err = s.fails(&["dump", "latest", "0/stream"], 2);
    assert!(err.contains("--format raw"), "{err}");
    let payload = get(&["dump", "latest", "0/stream", "--format", "raw"]);
    let mut con = server.connection();
    redis::cmd("RESTORE")
        .arg("stream:copy")
        .arg(0)
        .arg(payload.as_slice())
        .exec(&mut con)
        .unwrap();
    let range = |key: &str, con: &mut redis::Connection| -> redis::Value {
        redis::cmd("XRANGE")
            .arg(key)
            .arg("-")
            .arg("+")
            .query(con)
            .unwrap()
    };
    assert_eq!(range("stream", &mut con), range("stream:copy", &mut con));

    // Wrong names: a missing key, database or shape.
    let err = s.fails(&["dump", "latest", "0/nosuch"], 1);
    assert!(err.contains("nosuch"), "{err}");
    s.fails(&["dump", "latest", "9/user:1"], 1);
    let err = s.fails(&["dump", "latest", "user:1"], 2);
    assert!(err.contains("DB/KEY"), "{err}");
    let err = s.fails(&["ls", "latest", "--match", "x", "0/extra"], 2);
    assert!(err.contains("DB"), "{err}");
}

#[test]
fn redis_keys_diffed() {
    let server = RedisServer::start();
    redis_fixture(&server);
    let s = Scratch::new();
    s.init();
    let id = |v: serde_json::Value| v["id"].as_str().unwrap().to_owned();
    let a = id(s.json(&["create", &server.url()]));
    let mut con = server.connection();
    let run = |con: &mut redis::Connection, args: &[&str]| {
        let mut c = redis::cmd(args[0]);
        for x in &args[1..] {
            c.arg(*x);
        }
        c.exec(con).unwrap();
    };
    run(&mut con, &["SET", "user:1", "alice v2"]);
    run(&mut con, &["DEL", "user:2"]);
    run(&mut con, &["SET", "user:3", "carol"]);
    run(&mut con, &["EXPIRE", "hash", "3600"]);
    run(&mut con, &["DEL", "set"]);
    run(&mut con, &["SET", "set", "now a string"]);
    let b = id(s.json(&["create", &server.url()]));

    let lines: Vec<serde_json::Value> = s
        .ok(&["--json", "diff", &a, &b])
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let keys: BTreeMap<String, (String, Vec<String>)> = lines
        .iter()
        .filter(|l| l["type"] == "key")
        .map(|l| {
            let what = l["what"]
                .as_array()
                .map(|w| w.iter().map(|x| x.as_str().unwrap().to_owned()).collect())
                .unwrap_or_default();
            (
                l["key"].as_str().unwrap().to_owned(),
                (l["change"].as_str().unwrap().to_owned(), what),
            )
        })
        .collect();
    let want: BTreeMap<String, (String, Vec<String>)> = [
        ("user:1", "changed", vec!["value"]),
        ("user:2", "removed", vec![]),
        ("user:3", "added", vec![]),
        ("hash", "changed", vec!["expiry"]),
        ("set", "changed", vec!["type", "value"]),
    ]
    .into_iter()
    .map(|(k, c, w)| {
        (
            k.to_owned(),
            (c.to_owned(), w.into_iter().map(str::to_owned).collect()),
        )
    })
    .collect();
    assert_eq!(keys, want);
    let totals = &lines.last().unwrap()["keys"];
    assert_eq!(totals["added"], 1);
    assert_eq!(totals["removed"], 1);
    assert_eq!(totals["changed"], 3);
    assert_eq!(totals["unchanged"], 9);

    // Text, narrowed to a database; a snapshot against itself reads
    // nothing and finds every key unchanged.
    let text = s.ok(&["diff", &a, &b, "3"]);
    assert!(
        text.contains("0 added, 0 removed, 0 changed, 1 unchanged keys"),
        "{text}"
    );
    let text = s.ok(&["diff", &a, &b]);
    assert!(text.contains("M key 0/user:1  value"), "{text}");
    assert!(text.contains("- key 0/user:2"), "{text}");
    assert!(text.contains("+ key 0/user:3  string"), "{text}");
    // find: keys by Redis glob, one line per run of snapshots in which
    // the key is the same; a third snapshot of unchanged data extends
    // the runs.
    let c = id(s.json(&["create", &server.url()]));
    let runs: Vec<(String, Vec<String>)> = s
        .ok(&["--json", "find", "user:*"])
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|l| l["type"] == "key")
        .map(|l| {
            let ids = l["snapshots"]
                .as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_str().unwrap().to_owned())
                .collect();
            (l["path"].as_str().unwrap().to_owned(), ids)
        })
        .collect();
    assert_eq!(
        runs,
        [
            ("0/user:1".to_owned(), vec![a.clone()]),
            ("0/user:1".to_owned(), vec![b.clone(), c.clone()]),
            ("0/user:2".to_owned(), vec![a.clone()]),
            ("0/user:3".to_owned(), vec![b.clone(), c.clone()]),
            ("3/user:9".to_owned(), vec![a.clone(), b.clone(), c.clone()]),
        ]
    );
    let same = s.ok(&["diff", &a, &a]);
    assert!(
        same.contains("0 added, 0 removed, 0 changed, 13 unchanged keys"),
        "{same}"
    );
}
