//! Issue 17, MongoDB items 13 to 16.

use backup_testkit::mongo::MongoServer;
use mongodb::bson::{doc, Document};
use mongodb::sync::Client;

use crate::util::Scratch;

fn setup() -> (MongoServer, Scratch, Client) {
    let m = MongoServer::start();
    let s = Scratch::new();
    s.init();
    let c = Client::with_uri_str(m.url("")).unwrap();
    (m, s, c)
}

/// Decodes a file name as a URL: `%XX` escapes, and with `plus_is_space`
/// a `+` as a space (as a query string is read).
fn url_decode(name: &str, plus_is_space: bool) -> String {
    let b = name.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'%' => {
                out.push(u8::from_str_radix(&name[i + 1..i + 3], 16).unwrap());
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).unwrap()
}

/// Items 13 and 14: collection names become file names as `mongodump`
/// makes them: URL-escaped so that a URL decoder gets the name back, and
/// shortened with a hash past 238 bytes; nothing half-written is left
/// when an export fails.
#[test]
fn r17_13_14_export_file_names_decode_back_and_long_names_are_shortened() {
    let (m, s, c) = setup();
    let long = "c".repeat(247);
    let names = [
        "a+b",
        "cafés",
        "with space",
        "100%",
        "$dollar",
        "semi;colon,comma",
        long.as_str(),
    ];
    let db = c.database("names");
    let mut created = Vec::new();
    for n in names {
        // The server decides which names it takes ('$' is not allowed by
        // MongoDB itself); every accepted one must come back.
        if db
            .collection::<Document>(n)
            .insert_one(doc! {"n": n})
            .run()
            .is_ok()
        {
            created.push(n.to_owned());
        }
    }
    assert!(
        created.len() >= 6,
        "the server refused most of the names: {created:?}"
    );
    assert!(created.contains(&long), "the long name was refused");
    let id = s.json(&["create", &m.url("")])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dir = s.path("dump");
    s.ok(&[
        "export",
        &id,
        "--format",
        "mongodump",
        "--to",
        dir.to_str().unwrap(),
    ]);
    let mut found = Vec::new();
    for e in std::fs::read_dir(dir.join("names")).unwrap() {
        let file = e.unwrap().file_name().into_string().unwrap();
        let Some(base) = file.strip_suffix(".metadata.json") else {
            continue;
        };
        assert!(file.len() <= 255 - 3, "{file} leaves no room for .gz");
        let meta: serde_json::Value =
            serde_json::from_slice(&std::fs::read(dir.join("names").join(&file)).unwrap()).unwrap();
        let name = meta["collectionName"].as_str().unwrap().to_owned();
        if base.len() == 238 && base.contains("%24") {
            // Shortened: mongorestore reads the name from the metadata.
            assert_eq!(name, long);
        } else {
            assert_eq!(url_decode(base, false), name, "{base}");
            assert_eq!(url_decode(base, true), name, "{base} read as a query");
        }
        assert!(dir.join("names").join(format!("{base}.bson")).exists());
        found.push(name);
    }
    found.sort();
    created.sort();
    assert_eq!(found, created);
}

/// Item 13: an export that fails half-way (here: a full disk) leaves
/// nothing behind and says why once.
#[test]
fn r17_13_failed_export_leaves_nothing_behind() {
    let (m, s, c) = setup();
    let big = c.database("big").collection::<Document>("blobs");
    let pad = "x".repeat(50_000);
    big.insert_many((0..40).map(|i| doc! {"_id": i, "pad": &pad}))
        .run()
        .unwrap();
    let id = s.json(&["create", &m.url("")])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let mnt = s.path("mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let script = format!(
        "set -u\nmount -t tmpfs -o size=512k tmpfs \"$MNT\" || exit 99\n\
         \"$BIN\" export {id} --format mongodump --to \"$MNT/dump\" 2> \"$OUT/err\"; echo $? > \"$OUT/rc\"\n\
         ls -A \"$MNT\" > \"$OUT/left\"\n"
    );
    let out = std::process::Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &script])
        .env("MNT", &mnt)
        .env("BIN", env!("CARGO_BIN_EXE_backup"))
        .env("OUT", s.dir.path())
        .env("BACKUP_REPOSITORY", &s.repo)
        .env("BACKUP_PASSWORD", crate::util::PASSWORD)
        .output()
        .expect("`unshare` (util-linux) is needed");
    assert_ne!(out.status.code(), Some(99), "cannot mount a tmpfs: {out:?}");
    assert!(out.status.success(), "{out:?}");
    let read = |n: &str| std::fs::read_to_string(s.path(n)).unwrap_or_default();
    assert_eq!(read("rc").trim(), "1", "{}", read("err"));
    assert_eq!(
        read("left").trim(),
        "",
        "the half-written dump was left behind"
    );
    let err = read("err");
    assert_eq!(
        err.matches("No space left on device").count(),
        1,
        "the cause is printed once: {err}"
    );
}

/// Item 15: a database or collection name MongoDB would refuse is refused
/// in --rename, as it is in a URL, before anything happens.
#[test]
fn r17_15_renames_to_invalid_names_are_refused() {
    let (m, s, c) = setup();
    c.database("shop")
        .collection::<Document>("orders")
        .insert_one(doc! {"x": 1})
        .run()
        .unwrap();
    let id = s.json(&["create", &m.url("")])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let target = MongoServer::start();
    for rule in [
        "shop:bad db",
        "shop:a.b",
        "shop:dollar$",
        "shop.orders:shop.bad$name",
        "shop.orders:shop.system.x",
        "shop.orders:bad db.orders",
    ] {
        let err = s.fails(
            &["restore", &id, "--to", &target.url(""), "--rename", rule],
            2,
        );
        assert!(err.contains("invalid --rename"), "{rule}: {err}");
    }
    let tc = Client::with_uri_str(target.url("")).unwrap();
    assert!(!tc
        .list_database_names()
        .run()
        .unwrap()
        .iter()
        .any(|d| d == "shop" || d.starts_with("bad")));
}

/// Item 16: without --drop, a dry run against a target that holds the
/// data prints the plan with the conflicts marked, instead of failing.
#[test]
fn r17_16_dry_run_marks_conflicts() {
    let (m, s, c) = setup();
    c.database("shop")
        .collection::<Document>("orders")
        .insert_many((0..5).map(|i| doc! {"_id": i}))
        .run()
        .unwrap();
    c.database("shop")
        .collection::<Document>("fresh")
        .insert_one(doc! {"_id": 1})
        .run()
        .unwrap();
    let id = s.json(&["create", &m.url("")])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    c.database("shop")
        .collection::<Document>("fresh")
        .drop()
        .run()
        .unwrap();
    let out = s.ok(&["restore", &id, "--to", &m.url(""), "--dry-run"]);
    assert!(out.contains("dry run: nothing was changed"), "{out}");
    assert!(out.contains("CONFLICT"), "{out}");
    assert!(out.contains("shop.orders"), "{out}");
    let v = s.json(&["restore", &id, "--to", &m.url(""), "--dry-run"]);
    let conflicts = v["report"]["details"]["conflicts"].to_string();
    assert!(
        conflicts.contains("shop.orders") && !conflicts.contains("fresh"),
        "{conflicts}"
    );
    // The restore itself is still refused.
    let err = s.fails(&["restore", &id, "--to", &m.url("")], 1);
    assert!(err.contains("--drop"), "{err}");
}
