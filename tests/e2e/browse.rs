//! Looking inside snapshots without restoring them (`backup ls`) and
//! changing their tags (`backup tag`), issue 33.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use backup_testkit::postgres::PgCluster;
use backup_testkit::redis::RedisServer;

use crate::util::{random_bytes, set_mtime, write, Scratch};

/// `docs/a.txt`, `docs/sub/b.bin`, `top.txt` (mode 0640) and a link
/// `link -> docs/a.txt`.
fn tree(s: &Scratch) -> std::path::PathBuf {
    let src = s.path("src");
    write(&src.join("docs/a.txt"), b"alpha\n");
    write(&src.join("docs/sub/b.bin"), &random_bytes(5000, 7));
    write(&src.join("top.txt"), b"top");
    fs::set_permissions(src.join("top.txt"), fs::Permissions::from_mode(0o640)).unwrap();
    std::os::unix::fs::symlink("docs/a.txt", src.join("link")).unwrap();
    src
}

fn lines(text: &str) -> Vec<String> {
    text.lines().map(str::to_owned).collect()
}

fn json_lines(text: &str) -> Vec<serde_json::Value> {
    text.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

#[test]
fn browse_files_ls() {
    let s = Scratch::new();
    s.init();
    let src = tree(&s);
    let (id, _) = s.create(&src, &[]);

    // The root, then a subdirectory, then the whole tree.
    assert_eq!(
        lines(&s.ok(&["ls", "latest"])),
        ["/docs", "/link", "/top.txt"]
    );
    assert_eq!(
        lines(&s.ok(&["ls", &id[..8], "docs"])),
        ["/docs/a.txt", "/docs/sub"]
    );
    assert_eq!(
        lines(&s.ok(&["ls", &id, "/docs/", "--recursive"])),
        ["/docs/a.txt", "/docs/sub", "/docs/sub/b.bin"]
    );
    assert_eq!(
        lines(&s.ok(&["ls", "latest", "-R"])),
        [
            "/docs",
            "/docs/a.txt",
            "/docs/sub",
            "/docs/sub/b.bin",
            "/link",
            "/top.txt"
        ]
    );
    // A file names itself.
    assert_eq!(lines(&s.ok(&["ls", "latest", "top.txt"])), ["/top.txt"]);

    // --json: one object a line, every field as the source tree has it.
    let entries = json_lines(&s.ok(&["--json", "ls", "latest", "-R"]));
    assert_eq!(entries.len(), 6);
    for e in &entries {
        let rel = e["path"].as_str().unwrap().trim_start_matches('/');
        let m = fs::symlink_metadata(src.join(rel)).unwrap();
        let ty = if m.is_dir() {
            "dir"
        } else if m.file_type().is_symlink() {
            "symlink"
        } else {
            "file"
        };
        assert_eq!(e["type"], ty, "{e}");
        assert_eq!(e["mode"], m.mode() & 0o7777, "{e}");
        assert_eq!(e["uid"], m.uid(), "{e}");
        assert_eq!(e["gid"], m.gid(), "{e}");
        if ty == "file" {
            assert_eq!(e["size"], m.len(), "{e}");
        }
        let mtime = chrono::DateTime::parse_from_rfc3339(e["mtime"].as_str().unwrap()).unwrap();
        assert_eq!(
            (mtime.timestamp(), mtime.timestamp_subsec_nanos()),
            (m.mtime(), m.mtime_nsec() as u32),
            "{e}"
        );
        if ty == "symlink" {
            assert_eq!(e["link_target"], "docs/a.txt");
        } else {
            assert!(e["link_target"].is_null());
        }
    }

    // --long: mode, owner with its id, size, time, link target.
    let long = s.ok(&["ls", "latest", "--long"]);
    let top = long.lines().find(|l| l.ends_with("/top.txt")).unwrap();
    let m = fs::symlink_metadata(src.join("top.txt")).unwrap();
    assert!(top.starts_with("-rw-r-----  "), "{top}");
    assert!(top.contains(&format!("({})", m.uid())), "{top}");
    assert!(top.contains(&format!("({})", m.gid())), "{top}");
    assert!(top.contains(" 3  "), "{top}");
    let when = chrono::DateTime::from_timestamp(m.mtime(), 0)
        .unwrap()
        .format("%Y-%m-%d %H:%M:%S")
        .to_string();
    assert!(top.contains(&when), "{top}");
    let link = long.lines().find(|l| l.contains("/link")).unwrap();
    assert!(
        link.starts_with('l') && link.ends_with("/link -> docs/a.txt"),
        "{link}"
    );
    assert!(long
        .lines()
        .find(|l| l.ends_with("/docs"))
        .unwrap()
        .starts_with('d'));

    // A path that is not there, or under a file, is refused.
    let err = s.fails(&["ls", "latest", "docs/nope"], 1);
    assert!(err.contains("docs/nope"), "{err}");
    s.fails(&["ls", "latest", "top.txt/x"], 1);
}

/// MongoDB collections with their counts, and with `--objects` their
/// indexes and keys, narrowed by a database or collection path.
#[test]
fn browse_mongo_ls_objects() {
    use mongodb::bson::{doc, Document};
    let server = backup_testkit::mongo::MongoServer::start();
    let client = mongodb::sync::Client::with_uri_str(server.url("")).unwrap();
    let shop = client.database("shop");
    shop.collection::<Document>("orders")
        .insert_many((0..5).map(|i| doc! {"_id": i, "sku": format!("s{i}"), "at": i}))
        .run()
        .unwrap();
    shop.run_command(doc! {"createIndexes": "orders", "indexes": [
        {"key": {"sku": 1}, "name": "sku_1", "unique": true},
        {"key": {"at": -1, "sku": 1}, "name": "at_sku"},
    ]})
    .run()
    .unwrap();
    client
        .database("crm")
        .collection::<Document>("people")
        .insert_one(doc! {"_id": 1})
        .run()
        .unwrap();
    let s = Scratch::new();
    s.init();
    s.json(&["create", &server.url("")]);

    let rows = json_lines(&s.ok(&["--json", "ls", "latest", "--objects"]));
    let orders = rows.iter().find(|r| r["name"] == "shop.orders").unwrap();
    assert_eq!(orders["documents"], 5, "{orders}");
    let indexes: BTreeSet<(String, String, String)> = rows
        .iter()
        .filter(|r| r["type"] == "object")
        .map(|r| {
            assert_eq!(r["object"], "index", "{r}");
            (
                format!(
                    "{}.{}",
                    r["schema"].as_str().unwrap(),
                    r["on"].as_str().unwrap()
                ),
                r["name"].as_str().unwrap().to_owned(),
                r["detail"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    let want: BTreeSet<(String, String, String)> = [
        ("crm.people", "_id_", r#"{"_id":1}"#),
        ("shop.orders", "_id_", r#"{"_id":1}"#),
        ("shop.orders", "sku_1", r#"{"sku":1} unique: true"#),
        ("shop.orders", "at_sku", r#"{"at":-1,"sku":1}"#),
    ]
    .into_iter()
    .map(|(a, b, c)| (a.to_owned(), b.to_owned(), c.to_owned()))
    .collect();
    assert_eq!(indexes, want);
    let text = s.ok(&["ls", "latest", "shop/orders", "--objects"]);
    assert!(
        text.contains(r#"index shop.orders sku_1  {"sku":1} unique: true"#),
        "{text}"
    );
    assert!(!text.contains("crm.people"), "{text}");
    let text = s.ok(&["ls", "latest", "crm", "--objects"]);
    assert!(text.contains("index crm.people _id_"), "{text}");
    assert!(!text.contains("sku_1"), "{text}");
}

#[test]
fn browse_redis_ls() {
    let server = RedisServer::start();
    let mut con = server.connection();
    for (db, n) in [(0, 3), (2, 5)] {
        redis::cmd("SELECT").arg(db).exec(&mut con).unwrap();
        for i in 0..n {
            redis::cmd("SET")
                .arg(format!("k{i}"))
                .arg("v")
                .exec(&mut con)
                .unwrap();
        }
    }
    let s = Scratch::new();
    s.init();
    s.json(&["create", &server.url()]);

    let rows = json_lines(&s.ok(&["--json", "ls", "latest"]));
    let dbs: Vec<_> = rows
        .iter()
        .filter(|r| r["type"] == "database")
        .map(|r| (r["name"].as_str().unwrap().to_owned(), r["keys"].clone()))
        .collect();
    assert_eq!(
        dbs,
        [("0".to_owned(), 3.into()), ("2".to_owned(), 5.into())]
    );
    // The RDB itself is the one stream.
    let streams: Vec<_> = rows.iter().filter(|r| r["type"] == "stream").collect();
    assert_eq!(streams.len(), 1, "{rows:?}");
    assert_eq!(streams[0]["path"], "/dump.rdb");

    // A database lists its keys.
    let text = s.ok(&["ls", "latest", "2"]);
    let mut keys: Vec<&str> = text.lines().collect();
    keys.sort_unstable();
    assert_eq!(keys, ["k0", "k1", "k2", "k3", "k4"], "{text}");
    s.fails(&["ls", "latest", "7"], 1);
    let err = s.fails(&["ls", "latest", "--objects"], 2);
    assert!(err.contains("--objects"), "{err}");
}

#[test]
fn browse_postgres_ls() {
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "CREATE SCHEMA sales;
         CREATE TABLE sales.orders (id int PRIMARY KEY, note text);
         INSERT INTO sales.orders SELECT g, 'order ' || g FROM generate_series(1, 40) g;
         CREATE TABLE public.users (id int);
         INSERT INTO public.users VALUES (1), (2);
         CREATE VIEW sales.big_orders AS SELECT * FROM sales.orders WHERE id > 20;
         CREATE FUNCTION sales.total(n int) RETURNS int LANGUAGE sql AS 'SELECT n * 2';
         CREATE INDEX orders_note ON sales.orders (note);
         CREATE SEQUENCE public.tickets;
         CREATE TYPE sales.state AS ENUM ('new', 'paid');",
    );
    let s = Scratch::new();
    s.init();
    s.json(&["create", &pg.url("app")]);

    // The other objects, from the stored schema scripts.
    let objects: BTreeSet<(String, String)> =
        json_lines(&s.ok(&["--json", "ls", "latest", "--objects"]))
            .into_iter()
            .filter(|r| r["type"] == "object")
            .map(|r| {
                assert_eq!(r["kind"], "postgres", "{r}");
                (
                    r["object"].as_str().unwrap().to_owned(),
                    format!(
                        "{}.{}",
                        r["schema"].as_str().unwrap(),
                        r["name"].as_str().unwrap()
                    ),
                )
            })
            .collect();
    for want in [
        ("SCHEMA", ".sales"),
        ("VIEW", "sales.big_orders"),
        ("FUNCTION", "sales.total(integer)"),
        ("INDEX", "sales.orders_note"),
        ("CONSTRAINT", "sales.orders orders_pkey"),
        ("SEQUENCE", "public.tickets"),
        ("TYPE", "sales.state"),
    ] {
        assert!(
            objects.contains(&(want.0.to_owned(), want.1.to_owned())),
            "{want:?} in {objects:?}"
        );
    }
    assert!(!objects.iter().any(|(k, _)| k == "TABLE"), "{objects:?}");
    let text = s.ok(&["ls", "latest", "sales", "--objects"]);
    assert!(text.contains("view sales.big_orders"), "{text}");
    assert!(!text.contains("public.tickets"), "{text}");
    assert!(!s.ok(&["ls", "latest"]).contains("big_orders"));

    let rows = json_lines(&s.ok(&["--json", "ls", "latest"]));
    let tables: Vec<_> = rows.iter().filter(|r| r["type"] == "table").collect();
    let names: BTreeSet<_> = tables.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, BTreeSet::from(["public.users", "sales.orders"]));
    let orders = tables.iter().find(|t| t["name"] == "sales.orders").unwrap();
    assert_eq!(orders["rows"], 40);
    assert_eq!(
        orders["path"],
        serde_json::json!(["app", "sales", "orders"])
    );
    assert!(orders["bytes"].as_u64().unwrap() > 0);
    let streams = orders["streams"].as_array().unwrap();
    assert!(!streams.is_empty());
    assert!(streams.iter().all(|s| s["path"]
        .as_str()
        .unwrap()
        .starts_with("/tables/sales/orders/")));
    // The schema dumps belong to no table.
    assert!(rows
        .iter()
        .any(|r| r["type"] == "stream" && r["path"].as_str().unwrap().starts_with("/schema/")));

    let text = s.ok(&["ls", "latest"]);
    assert!(text.contains("database app"), "{text}");
    assert!(text.contains("  schema sales"), "{text}");
    assert!(text.contains("table orders  (40 rows"), "{text}");
    // A path narrows: a database, a schema, a table, or a dotted name.
    for path in ["app/sales", "app/sales/orders", "sales.orders", "sales"] {
        let text = s.ok(&["ls", "latest", path]);
        assert!(text.contains("table orders"), "{path}: {text}");
        assert!(!text.contains("table users"), "{path}: {text}");
    }
    assert!(s.ok(&["ls", "latest", "app"]).contains("table users"));
    s.fails(&["ls", "latest", "app/nosuch"], 1);
}

/// The manifest of `id` as `show --json` prints it, without its tags.
fn manifest_without_tags(s: &Scratch, id: &str) -> serde_json::Value {
    let mut v = s.json(&["show", id])["snapshot"].clone();
    v.as_object_mut().unwrap().remove("tags");
    v
}

fn tags_of(s: &Scratch, id: &str) -> Vec<String> {
    serde_json::from_value(s.json(&["show", id])["snapshot"]["tags"].clone()).unwrap()
}

fn ids(s: &Scratch) -> BTreeSet<String> {
    s.json(&["list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn browse_tag_add_remove_set() {
    let s = Scratch::new();
    s.init();
    let src = tree(&s);
    let (a, _) = s.create(&src, &["--tag", "daily"]);
    let (b, _) = s.create(&src, &["--tag", "weekly"]);
    let before = manifest_without_tags(&s, &a);

    // add: old id gone, new id listed with the new tags, all else equal.
    let out = s.ok(&["tag", "add", "keep", "legal", "--snapshot", &a[..10]]);
    let (old, new) = arrow(&out);
    assert_eq!(old, a);
    assert!(!ids(&s).contains(&a));
    assert!(ids(&s).contains(&new));
    assert_eq!(tags_of(&s, &new), ["daily", "keep", "legal"]);
    assert_eq!(manifest_without_tags(&s, &new), before);
    assert_eq!(
        s.ok(&["ls", &new, "-R"]),
        s.ok(&["ls", &b, "-R"]),
        "the same tree"
    );

    // Running it again changes nothing.
    let again = s.ok(&["tag", "add", "keep", "--snapshot", &new]);
    assert!(
        again.contains("0 snapshots changed, 1 already had"),
        "{again}"
    );
    assert!(ids(&s).contains(&new));

    // remove, selected by a filter.
    let out = s.ok(&["tag", "remove", "legal", "--tag", "legal"]);
    let (old, newer) = arrow(&out);
    assert_eq!(old, new);
    assert_eq!(tags_of(&s, &newer), ["daily", "keep"]);

    // set: on every snapshot of the source.
    let src_arg = src.to_str().unwrap();
    let out = s.json(&["tag", "set", "archive", "--source", src_arg]);
    assert_eq!(out["changed"].as_array().unwrap().len(), 2, "{out}");
    let now = ids(&s);
    assert_eq!(now.len(), 2);
    assert!(!now.contains(&b) && !now.contains(&newer));
    for id in &now {
        assert_eq!(tags_of(&s, id), ["archive"]);
    }

    // A bare command is refused before anything changes.
    s.fails(&["tag", "add", "x"], 2);

    // Every change is in the audit trail with its ids.
    let audit = s.json(&["audit"]);
    assert_eq!(audit["ok"], true);
    let tags: Vec<_> = audit["records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["operation"] == "tag" && r["status"] == "success")
        .collect();
    assert!(tags.len() >= 4, "{audit}");
    // Narrowed by who and when: this process's OS user did all of it,
    // nobody else anything; nothing is newer than now.
    let user = audit["records"][0]["user"].as_str().unwrap().to_owned();
    let count = |args: &[&str]| {
        let mut all = vec!["audit"];
        all.extend_from_slice(args);
        s.json(&all)["records"].as_array().unwrap().len()
    };
    let total = audit["records"].as_array().unwrap().len();
    assert_eq!(count(&["--user", &user]), total);
    assert_eq!(count(&["--user", "somebody-else"]), 0);
    assert_eq!(count(&["--since", "1h"]), total);
    assert_eq!(count(&["--user", &user, "--since", "1h", "--last", "2"]), 2);
    s.fails(&["audit", "--since", "soon"], 2);
    let first = &tags[0]["details"]["retagged"][0];
    assert_eq!(first["old"], a, "{audit}");
    assert_eq!(first["new"], new, "{audit}");
}

/// An interrupted tag change (new manifest written, old not yet deleted)
/// converges when the command runs again.
#[test]
fn browse_tag_rerun_converges() {
    let s = Scratch::new();
    s.init();
    let src = tree(&s);
    let (a, _) = s.create(&src, &["--tag", "daily"]);
    // Simulate the crash: keep a copy of the old manifest, let the change
    // run, then put the old manifest back.
    let snapshots = Path::new(&s.repo).join("snapshots");
    let saved = find_file(&snapshots, &a);
    let bytes = fs::read(&saved).unwrap();
    let (_, new) = arrow(&s.ok(&["tag", "add", "keep", "--tag", "daily"]));
    fs::write(&saved, bytes).unwrap();
    assert_eq!(ids(&s), BTreeSet::from([a.clone(), new.clone()]));

    let out = s.ok(&["tag", "add", "keep", "--tag", "daily"]);
    assert!(out.contains("finishing an interrupted change"), "{out}");
    let (old, twin) = arrow(&out);
    assert_eq!((old, twin), (a, new.clone()));
    assert_eq!(ids(&s), BTreeSet::from([new.clone()]));
    // And once more: nothing to do, nothing duplicated.
    s.ok(&["tag", "add", "keep", "--tag", "daily"]);
    assert_eq!(ids(&s), BTreeSet::from([new]));
}

fn find_file(dir: &Path, name: &str) -> std::path::PathBuf {
    for e in walk(dir) {
        if e.file_name().and_then(|n| n.to_str()) == Some(name) {
            return e;
        }
    }
    panic!("{name} not under {}", dir.display());
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out
}

/// The first `OLD -> NEW` line of `tag`'s output.
fn arrow(out: &str) -> (String, String) {
    let line = out
        .lines()
        .find(|l| l.contains(" -> "))
        .unwrap_or_else(|| panic!("{out}"));
    let mut parts = line.split_whitespace();
    let old = parts.next().unwrap().to_owned();
    assert_eq!(parts.next(), Some("->"));
    (old, parts.next().unwrap().to_owned())
}

/// The files of `browse_files_diff`'s first snapshot: `tree` plus an
/// untouched `keep/` subtree, with fixed times.
fn diff_tree(s: &Scratch) -> std::path::PathBuf {
    let src = tree(s);
    write(&src.join("keep/x.txt"), b"kept");
    write(&src.join("keep/deep/y.txt"), b"deep");
    set_mtime(&src.join("docs/a.txt"), 1_700_000_000, 0);
    set_mtime(&src.join("docs/sub/b.bin"), 1_700_000_000, 0);
    src
}

#[test]
fn browse_files_diff() {
    let s = Scratch::new();
    s.init();
    let src = diff_tree(&s);
    let (a, _) = s.create(&src, &[]);
    // Content and time, time only, mode only; one link removed, one file
    // and one directory added; keep/ untouched.
    write(&src.join("docs/a.txt"), b"alpha2\n");
    set_mtime(&src.join("docs/a.txt"), 1_700_000_100, 0);
    set_mtime(&src.join("docs/sub/b.bin"), 1_700_000_200, 5);
    fs::set_permissions(src.join("top.txt"), fs::Permissions::from_mode(0o600)).unwrap();
    fs::remove_file(src.join("link")).unwrap();
    write(&src.join("new.txt"), b"new");
    write(&src.join("added/z.txt"), b"z");
    let (b, _) = s.create(&src, &[]);

    assert_eq!(
        lines(&s.ok(&["diff", &a[..8], &b])),
        [
            "+ /added/",
            "+ /added/z.txt  1 B",
            "M /docs/a.txt  content,mtime  6 B -> 7 B",
            "M /docs/sub/b.bin  mtime  4.9 KiB",
            "- /link",
            "+ /new.txt  3 B",
            "M /top.txt  mode  3 B",
            "3 added, 1 removed, 3 changed; 5 B added, 0 B removed; 1 unchanged directories skipped",
        ]
    );
    // --json: one object a line, the summary last.
    let rows = json_lines(&s.ok(&["--json", "diff", &a, "latest"]));
    assert_eq!(rows.len(), 8);
    assert_eq!(
        rows[2],
        serde_json::json!({"change": "changed", "path": "/docs/a.txt", "type": "file",
            "what": ["content", "mtime"], "size_before": 6, "size_after": 7})
    );
    assert_eq!(
        rows[4],
        serde_json::json!({"change": "removed", "path": "/link", "type": "symlink"})
    );
    assert_eq!(
        rows[7]["summary"],
        serde_json::json!({"added": 3, "removed": 1, "changed": 3, "bytes_added": 5,
            "bytes_removed": 0, "dirs_unchanged": 1})
    );
    assert_eq!(rows[7]["a"], a);
    assert_eq!(rows[7]["b"], b);

    // The other way round, and narrowed to a path.
    let back = lines(&s.ok(&["diff", &b, &a]));
    assert_eq!(back[0], "- /added/");
    assert_eq!(back[4], "+ /link");
    assert_eq!(
        lines(&s.ok(&["diff", &a, &b, "docs/sub"])),
        [
            "M /docs/sub/b.bin  mtime  4.9 KiB",
            "0 added, 0 removed, 1 changed; 0 B added, 0 B removed; 0 unchanged directories skipped",
        ]
    );
    // An unchanged subtree is skipped whole; a snapshot equals itself.
    assert_eq!(
        lines(&s.ok(&["diff", &a, &b, "keep"])),
        ["0 added, 0 removed, 0 changed; 0 B added, 0 B removed; 1 unchanged directories skipped"]
    );
    assert_eq!(
        lines(&s.ok(&["diff", &a, &a])),
        ["0 added, 0 removed, 0 changed; 0 B added, 0 B removed; 1 unchanged directories skipped"]
    );
    let err = s.fails(&["diff", &a, &b, "nowhere"], 1);
    assert!(err.contains("nowhere"), "{err}");
}

#[test]
fn browse_diff_refusals() {
    let s = Scratch::new();
    s.init();
    let src = tree(&s);
    let (a, _) = s.create(&src, &[]);
    let other = s.path("other");
    write(&other.join("f"), b"f");
    let (b, _) = s.create(&other, &[]);
    // Another source: refused as a usage error, naming both.
    let err = s.fails(&["diff", &a, &b], 2);
    assert!(err.contains("same source"), "{err}");
    assert!(err.contains(&b[..8]), "{err}");
    // An unknown snapshot.
    let err = s.fails(&["diff", &a, "deadbeef"], 1);
    assert!(err.contains("deadbeef"), "{err}");
    s.fails(&["diff", &a, "not-an-id"], 2);

    // Another kind.
    let server = RedisServer::start();
    let (r, _) = {
        let v = s.json(&["create", &server.url()]);
        (v["id"].as_str().unwrap().to_owned(), v)
    };
    let err = s.fails(&["diff", &a, &r], 2);
    assert!(
        err.contains("files source") && err.contains("redis source"),
        "{err}"
    );
}

#[test]
fn browse_postgres_diff() {
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE app");
    pg.psql(
        "app",
        "CREATE SCHEMA sales;
         CREATE TABLE sales.orders (id int PRIMARY KEY, note text);
         INSERT INTO sales.orders SELECT g, 'order ' || g FROM generate_series(1, 40) g;
         CREATE TABLE sales.items (id int PRIMARY KEY, note text);
         INSERT INTO sales.items SELECT g, 'item ' || (1000 + g) FROM generate_series(1, 10) g;
         CREATE TABLE sales.stable (id int);
         INSERT INTO sales.stable VALUES (1), (2), (3);
         CREATE TABLE public.users (id int);
         INSERT INTO public.users VALUES (1), (2);",
    );
    let s = Scratch::new();
    s.init();
    let a = s.json(&["create", &pg.url("app")])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Rows added; a row rewritten in place (same count, same bytes, other
    // order); a schema with a table added; a table (its schema's only)
    // dropped; sales.stable untouched.
    pg.psql(
        "app",
        "INSERT INTO sales.orders SELECT g, 'order ' || g FROM generate_series(41, 45) g;
         UPDATE sales.items SET note = 'item 2005' WHERE id = 5;
         CREATE SCHEMA crm;
         CREATE TABLE crm.people (id int);
         INSERT INTO crm.people VALUES (1), (2), (3);
         DROP TABLE public.users;",
    );
    let b = s.json(&["create", &pg.url("app")])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let rows = json_lines(&s.ok(&["--json", "diff", &a, &b]));
    let brief: Vec<_> = rows
        .iter()
        .filter(|r| r.get("change").is_some())
        .map(|r| {
            format!(
                "{} {} {} {} {} {}",
                r["change"].as_str().unwrap(),
                r["type"].as_str().unwrap(),
                r["name"].as_str().unwrap(),
                r["before"]["rows"],
                r["after"]["rows"],
                r["data_changed"]
            )
        })
        .collect();
    assert_eq!(
        brief,
        [
            "added schema app/crm null null false",
            "added table app/crm.people null 3 false",
            "removed schema app/public null null false",
            "removed table app/public.users 2 null false",
            "changed table app/sales.items 10 10 true",
            "changed table app/sales.orders 40 45 true",
        ]
    );
    let orders = &rows[5];
    assert!(
        orders["after"]["bytes"].as_u64().unwrap() > orders["before"]["bytes"].as_u64().unwrap(),
        "{orders}"
    );
    let summary = &rows.last().unwrap()["summary"];
    assert_eq!(
        (
            &summary["added"],
            &summary["removed"],
            &summary["changed"],
            &summary["unchanged"],
            &summary["count_before"],
            &summary["count_after"]
        ),
        (
            &1.into(),
            &1.into(),
            &2.into(),
            &1.into(),
            &55.into(),
            &61.into()
        ),
        "{summary}"
    );

    let text = lines(&s.ok(&["diff", &a, &b]));
    assert_eq!(text[0], "+ schema app/crm");
    assert!(
        text[1].starts_with("+ table app/crm.people  3 rows, "),
        "{text:?}"
    );
    assert_eq!(text[2], "- schema app/public");
    assert!(
        text[3].starts_with("- table app/public.users  2 rows, "),
        "{text:?}"
    );
    assert!(
        text[4].starts_with("M table app/sales.items  data changed (10 rows, "),
        "{text:?}"
    );
    assert!(
        text[5].starts_with("M table app/sales.orders  rows 40 -> 45, "),
        "{text:?}"
    );
    assert!(
        text[6].starts_with("1 added, 1 removed, 2 changed, 1 unchanged tables; rows 55 -> 61, "),
        "{text:?}"
    );
    // find: tables by bare or qualified name, in runs of unchanged
    // snapshots (same counts but other data is a change).
    let found = json_lines(&s.ok(&["--json", "find", "stable"]));
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(found[0]["type"], "table");
    assert_eq!(found[0]["path"], "app/sales.stable");
    assert_eq!(found[0]["count"], 3);
    assert_eq!(found[0]["snapshots"], serde_json::json!([a, b]));
    let found = json_lines(&s.ok(&["--json", "find", "app/sales.*"]));
    let runs: Vec<_> = found
        .iter()
        .filter_map(|r| Some((r["path"].as_str()?, r["snapshots"].as_array()?.len())))
        .collect();
    assert_eq!(
        runs,
        [
            ("app/sales.items", 1),
            ("app/sales.items", 1),
            ("app/sales.orders", 1),
            ("app/sales.orders", 1),
            ("app/sales.stable", 2)
        ]
    );

    // Narrowed to one schema.
    let sales = lines(&s.ok(&["diff", &a, &b, "sales"]));
    assert_eq!(sales.len(), 3, "{sales:?}");
    assert!(sales[0].starts_with("M table app/sales.items"), "{sales:?}");
}

#[test]
fn browse_find_across_snapshots() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    write(&src.join("config/app.yml"), b"v1\n");
    write(&src.join("other/app.yml"), b"o1\n");
    write(&src.join("docs/readme.txt"), b"read me");
    for f in ["config/app.yml", "other/app.yml", "docs/readme.txt"] {
        set_mtime(&src.join(f), 1_700_000_000, 0);
    }
    let (a, _) = s.create(&src, &["--time", "2024-05-01T12:00:00Z"]);
    let (b, _) = s.create(&src, &["--time", "2024-05-02T12:00:00Z", "--tag", "t"]);
    write(&src.join("config/app.yml"), b"v2\n");
    fs::remove_dir_all(src.join("other")).unwrap();
    let (c, _) = s.create(&src, &["--time", "2024-05-03T12:00:00Z", "--tag", "t"]);
    let source = s.json(&["show", &a])["snapshot"]["source"]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let (a8, b8, c8) = (&a[..8], &b[..8], &c[..8]);

    // Runs of consecutive snapshots where the entry is the same.
    assert_eq!(
        lines(&s.ok(&["find", "app.yml"])),
        [
            format!("files {source}"),
            format!("  /config/app.yml  file  3 B  2024-05-01 12:00:00 .. 2024-05-02 12:00:00  in {a8} {b8}"),
            format!("  /config/app.yml  file  3 B  2024-05-03 12:00:00  in {c8}"),
            format!("  /other/app.yml  file  3 B  2024-05-01 12:00:00 .. 2024-05-02 12:00:00  in {a8} {b8}"),
            "3 matches in 3 snapshots searched".to_owned(),
        ]
    );
    let rows = json_lines(&s.ok(&["--json", "find", "*.yml"]));
    assert_eq!(rows.len(), 4);
    assert_eq!(rows[0]["path"], "/config/app.yml");
    assert_eq!(rows[0]["type"], "file");
    assert_eq!(rows[0]["size"], 3);
    assert_eq!(rows[0]["snapshots"], serde_json::json!([a, b]));
    assert_eq!(rows[0]["first"], "2024-05-01T12:00:00Z");
    assert_eq!(rows[0]["last"], "2024-05-02T12:00:00Z");
    assert_eq!(rows[0]["mtime"], "2023-11-14T22:13:20Z");
    assert_eq!(rows[1]["snapshots"], serde_json::json!([c]));
    // docs/ held no match in the first snapshot: skipped in the others.
    assert_eq!(
        rows[3]["summary"],
        serde_json::json!({"matches": 3, "snapshots_searched": 3, "dirs_skipped": 2})
    );

    // A pattern with `/` is anchored at the root; `**` crosses directories.
    let paths = |args: &[&str]| -> Vec<String> {
        let mut a = vec!["--json", "find"];
        a.extend_from_slice(args);
        json_lines(&s.ok(&a))
            .iter()
            .filter_map(|r| r["path"].as_str().map(str::to_owned))
            .collect()
    };
    assert_eq!(
        paths(&["/config/*.yml"]),
        ["/config/app.yml", "/config/app.yml"]
    );
    assert!(paths(&["app/*.yml"]).is_empty());
    assert_eq!(paths(&["**/readme.*"]), ["/docs/readme.txt"]);
    assert_eq!(paths(&["other"]), ["/other"]);

    // Narrowing the snapshots: newest, oldest, by tag, by id.
    assert_eq!(
        lines(&s.ok(&["find", "app.yml", "--newest", "1"]))[1],
        format!("  /config/app.yml  file  3 B  2024-05-03 12:00:00  in {c8}")
    );
    assert_eq!(paths(&["app.yml", "--oldest", "2"]).len(), 2);
    assert_eq!(
        paths(&["app.yml", "--tag", "t"]),
        ["/config/app.yml", "/config/app.yml", "/other/app.yml"]
    );
    let one = json_lines(&s.ok(&["--json", "find", "app.yml", "--snapshot", &b[..10]]));
    assert_eq!(one.len(), 3);
    assert_eq!(one[0]["snapshots"], serde_json::json!([b]));
    // Nothing found is not an error; a bad pattern or snapshot is.
    assert_eq!(
        lines(&s.ok(&["find", "nothing*"])),
        ["0 matches in 3 snapshots searched"]
    );
    s.fails(&["find", "a["], 2);
    s.fails(&["find", "x", "--newest", "1", "--oldest", "1"], 2);
    let err = s.fails(&["find", "x", "--snapshot", "deadbeef"], 1);
    assert!(err.contains("deadbeef"), "{err}");
}
