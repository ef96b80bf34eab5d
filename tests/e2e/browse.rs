//! Looking inside snapshots without restoring them (`backup ls`) and
//! changing their tags (`backup tag`), issue 33.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;

use backup_testkit::postgres::PgCluster;
use backup_testkit::redis::RedisServer;

use crate::util::{random_bytes, write, Scratch};

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

    let text = s.ok(&["ls", "latest", "2"]);
    assert!(text.contains("database 2  (5 keys)"), "{text}");
    assert!(!text.contains("database 0"), "{text}");
    s.fails(&["ls", "latest", "7"], 1);
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
         INSERT INTO public.users VALUES (1), (2);",
    );
    let s = Scratch::new();
    s.init();
    s.json(&["create", &pg.url("app")]);

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
