//! Write-only keys: a client that adds backups of files and of a
//! PostgreSQL database, deduplicated and incremental through its local
//! cache, and can read, list, restore, forget or prune nothing; the full
//! key reads, restores, verifies and prunes what it wrote.

use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hash, Hasher};

use backup_testkit::postgres::PgCluster;

use crate::postgres::{assert_same_db, SCHEMA};
use crate::util::{assert_same_tree, files_under, random_bytes, write, Scratch};

const WRITER_PASSWORD: &str = "the web host's write-only password";

/// Every file of the repository but locks and audit records, hashed.
fn contents(s: &Scratch) -> BTreeSet<(String, u64)> {
    let (locks, audit) = (s.path("repo/locks"), s.path("repo/audit"));
    files_under(&s.path("repo"))
        .into_iter()
        .filter(|p| !p.starts_with(&locks) && !p.starts_with(&audit))
        .map(|p| {
            let mut h = DefaultHasher::new();
            std::fs::read(&p).unwrap().hash(&mut h);
            (p.display().to_string(), h.finish())
        })
        .collect()
}

fn added(v: &serde_json::Value) -> u64 {
    v["snapshot"]["stats"]["bytes_added"].as_u64().unwrap()
}

#[test]
fn write_only_clients_add_backups_and_read_nothing() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    write(&src.join("big.bin"), &random_bytes(3_000_000, 7));
    write(&src.join("etc/app.conf"), b"port = 80\n");
    for i in 0..40 {
        write(
            &src.join(format!("www/page{i}.html")),
            &random_bytes(5_000, i),
        );
    }
    let full_before = s.create(&src, &[]).0;
    s.cmd()
        .env("BACKUP_NEW_PASSWORD", WRITER_PASSWORD)
        .args(["key", "add", "--write-only", "--name", "web-1"])
        .assert()
        .success();
    let keys = s.json(&["key", "list"]);
    let kinds: Vec<(&str, Option<&str>)> = keys
        .as_array()
        .unwrap()
        .iter()
        .map(|k| (k["kind"].as_str().unwrap(), k["name"].as_str()))
        .collect();
    assert_eq!(
        kinds,
        [("password", None), ("write-only", Some("web-1"))],
        "{keys}"
    );
    let config: serde_json::Value =
        serde_json::from_slice(&std::fs::read(s.path("repo/config")).unwrap()).unwrap();
    assert_eq!(config["version"], 4, "{config}");
    let writer = |args: &[&str]| {
        let mut c = s.cmd();
        c.env("BACKUP_PASSWORD", WRITER_PASSWORD).args(args);
        c.output().unwrap()
    };
    let writer_json = |args: &[&str]| -> serde_json::Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = writer(&all);
        assert!(
            out.status.success(),
            "`{}`: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };

    // Files: the first backup stores everything again (the writer cannot
    // see what the full key stored), the second only the change, and it
    // takes unchanged files from its own first snapshot.
    let src_arg = src.to_str().unwrap();
    let first = writer_json(&["create", src_arg]);
    assert!(added(&first) > 3_000_000, "{first}");
    write(&src.join("etc/app.conf"), b"port = 8080\n");
    let second = writer_json(&["create", src_arg]);
    assert!(added(&second) < 20_000, "{second}");
    assert_eq!(
        second["snapshot"]["stats"]["files_unchanged"].as_u64(),
        Some(41),
        "{second}"
    );
    assert!(
        s.path(".cache/backup/write-only").is_dir(),
        "the cache is under $HOME/.cache"
    );

    // A PostgreSQL database, twice: the second run deduplicated.
    let pg = PgCluster::start();
    pg.psql("postgres", "CREATE DATABASE src");
    pg.psql("src", SCHEMA);
    let db1 = writer_json(&["create", &pg.url("src")]);
    let db2 = writer_json(&["create", &pg.url("src")]);
    assert!(
        added(&db2) < added(&db1) / 10,
        "second: {} of {}",
        added(&db2),
        added(&db1)
    );

    // Everything that reads or deletes is refused, and changes nothing.
    let before = contents(&s);
    let snap = second["id"].as_str().unwrap().to_owned();
    let key = keys[0]["id"].as_str().unwrap()[..8].to_owned();
    let restored = s.path("not-restored");
    let refused: Vec<Vec<&str>> = vec![
        vec!["list"],
        vec!["ls", "--long", "--recursive", &snap],
        vec!["show", &snap],
        vec!["ls", &snap],
        vec!["dump", &snap, "etc/app.conf"],
        vec!["restore", &snap, "--to", restored.to_str().unwrap()],
        vec!["restore", "latest", "--to", restored.to_str().unwrap()],
        vec!["verify"],
        vec!["forget", "--keep-last", "1"],
        vec!["forget", &full_before],
        vec!["prune"],
        vec!["repair", "index"],
        vec!["tag", "add", "x", "--snapshot", &snap],
        vec!["rewrite", "--exclude", "etc/**", "--reason", "test"],
        vec!["key", "add", "--write-only"],
        vec!["key", "remove", &key],
        vec![
            "key",
            "export",
            "--to",
            "/tmp/never-written.key",
            "--no-password",
        ],
    ];
    for args in &refused {
        let mut c = s.cmd();
        c.env("BACKUP_PASSWORD", WRITER_PASSWORD)
            .env("BACKUP_NEW_PASSWORD", "x")
            .args(args);
        let out = c.output().unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "`{}` ran: {err}", args.join(" "));
        assert!(
            err.contains("needs a full key"),
            "`{}`: {err}",
            args.join(" ")
        );
        assert_eq!(
            contents(&s),
            before,
            "`{}` changed something",
            args.join(" ")
        );
    }
    assert!(!restored.exists());
    assert!(!std::path::Path::new("/tmp/never-written.key").exists());

    // An attacker holding the write-only key file, its password and all
    // of storage: none of the key's secrets opens any snapshot, index
    // file, pack header, tree or data blob (its own included), as an
    // AES-GCM key or as the private key of the HPKE sessions; only lock
    // files and audit records open, with the lock key it holds by design.
    let attack = crate::format_reader::attack_json(&s.repo, WRITER_PASSWORD, crate::util::PASSWORD);
    assert_eq!(attack["secrets"], 4, "{attack}");
    for dir in ["snapshots", "index", "data", "keys"] {
        assert!(
            attack["tried"][dir].as_u64().unwrap_or(0) > 0,
            "{dir}: {attack}"
        );
    }
    assert!(attack["tried"]["data"].as_u64().unwrap() > 100, "{attack}");
    let opened: Vec<&str> = attack["opened"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    assert!(
        opened
            .iter()
            .all(|p| p.starts_with("audit/") || p.starts_with("locks/")),
        "a write-only key opened {opened:?}"
    );
    assert!(
        opened.iter().any(|p| p.starts_with("audit/")),
        "the lock key opens no audit record, so the attack proves nothing: {attack}"
    );

    // The full key reads, restores and verifies all of it.
    let listed = s.json(&["list"]);
    assert_eq!(listed.as_array().unwrap().len(), 5, "{listed}");
    let target = s.path("restored");
    s.ok(&["restore", &snap, "--to", target.to_str().unwrap()]);
    assert_same_tree(&src, &target);
    let db2_id = db2["id"].as_str().unwrap();
    s.ok(&["restore", db2_id, "--to", &pg.url("copy")]);
    assert_same_db((&pg, "src"), (&pg, "copy"));
    s.ok(&["verify", "--read-data"]);
    // So does the independent reader of the format (REPOSITORY_FORMAT
    // §6.5: HPKE written from the RFC in Python).
    let py = |args: &[&str]| {
        let args: Vec<&std::ffi::OsStr> = args.iter().map(std::ffi::OsStr::new).collect();
        crate::format_reader::reader_json(&s.repo, crate::util::PASSWORD, &args)
    };
    let check = py(&["check", "--read-data"]);
    assert_eq!(check["ok"], true, "{check:#}");
    let by_reader = s.path("py-restored");
    py(&["restore", &snap, by_reader.to_str().unwrap()]);
    assert_same_tree(&src, &by_reader);
    // And copies them into another repository, where they restore too.
    let d = Scratch::with_repo(
        s.dir.path().join("copy").to_string_lossy().into_owned(),
        vec![("BACKUP_PASSWORD".into(), "another password".into())],
    );
    d.init();
    let out = s
        .cmd()
        .env("BACKUP_TO_PASSWORD", "another password")
        .args(["copy", "--to-repo", &d.repo])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let copied = d.json(&["list"]);
    assert_eq!(copied.as_array().unwrap().len(), 5, "{copied}");
    let from_copy = s.path("restored-from-copy");
    d.ok(&[
        "restore",
        "latest",
        "--source",
        src_arg,
        "--to",
        from_copy.to_str().unwrap(),
    ]);
    assert_same_tree(&src, &from_copy);
    d.ok(&["verify", "--read-data"]);

    // A prune by the full key drops what the writer's cache relied on
    // (its first snapshot): the writer notices and stays correct.
    let first_id = first["id"].as_str().unwrap();
    s.ok(&["forget", first_id, &full_before, "--prune"]);
    write(&src.join("etc/app.conf"), b"port = 9090\n");
    let third = writer_json(&["create", src_arg]);
    s.ok(&["verify", "--read-data"]);
    let target = s.path("restored-3");
    s.ok(&[
        "restore",
        third["id"].as_str().unwrap(),
        "--to",
        target.to_str().unwrap(),
    ]);
    assert_same_tree(&src, &target);

    // A lost cache is rebuilt: the next backup stores its data again.
    std::fs::remove_dir_all(s.path(".cache/backup/write-only")).unwrap();
    let fourth = writer_json(&["create", src_arg]);
    assert!(added(&fourth) > 3_000_000, "{fourth}");
    let fifth = writer_json(&["create", src_arg]);
    assert!(added(&fifth) < 20_000, "{fifth}");
    s.ok(&["verify", "--read-data"]);

    // A damaged cache is rebuilt too, never believed.
    for f in files_under(&s.path(".cache/backup/write-only")) {
        std::fs::write(&f, b"garbage").unwrap();
    }
    let sixth = writer_json(&["create", src_arg]);
    assert!(added(&sixth) > 3_000_000, "{sixth}");
    let target = s.path("restored-6");
    s.ok(&["prune"]);
    s.ok(&[
        "restore",
        "latest",
        "--to",
        target.to_str().unwrap(),
        "--source",
        src_arg,
    ]);
    assert_same_tree(&src, &target);

    // A daemon that backs up with the write-only key: its start-up check
    // refuses jobs that would need to read or delete (retention, verify,
    // drills) instead of failing at their first run.
    let pw = s.path("writer.pw");
    std::fs::write(&pw, WRITER_PASSWORD).unwrap();
    let check = |job_extra: &str| {
        let cfg = s.path("writer.toml");
        std::fs::write(
            &cfg,
            format!(
                "[repositories.main]\nurl = \"{}\"\npassword = {{ file = \"{}\" }}\n\n[jobs.web]\nrepository = \"main\"\nsource = \"{}\"\nschedule = \"0 3 * * *\"\n{job_extra}",
                s.repo,
                pw.display(),
                src.display()
            ),
        )
        .unwrap();
        std::process::Command::new(crate::daemon::backupd_bin())
            .args(["--check-config", "--config"])
            .arg(&cfg)
            .output()
            .unwrap()
    };
    let out = check("");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = check("retention = { keep_daily = 7 }\nverify = { schedule = \"0 0 5 * * Sun\" }\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("the retention, verify of job web` needs a full key"),
        "{err}"
    );
}

/// Backs up `source` with the write-only key; asserts success.
fn writer_create(s: &Scratch, source: &str) {
    let out = s
        .cmd()
        .env("BACKUP_PASSWORD", WRITER_PASSWORD)
        .args(["create", source])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Adds a write-only key to the repository of `s`.
fn add_writer(s: &Scratch) {
    s.cmd()
        .env("BACKUP_NEW_PASSWORD", WRITER_PASSWORD)
        .args(["key", "add", "--write-only"])
        .assert()
        .success();
}

#[test]
fn write_only_clients_stream_wal_that_a_full_key_restores_to_a_time() {
    use crate::postgres_pitr::{
        cluster, markers, repl_url, restore_and_start, time_after_marker, wait_captured,
        wait_streaming, write_markers, Receiver,
    };
    let pg = cluster(&[]);
    let s = Scratch::new();
    s.init();
    add_writer(&s);
    let receiver = Receiver::start_with(&s, &repl_url(&pg), WRITER_PASSWORD);
    wait_streaming(&pg);
    writer_create(&s, &format!("{}?mode=physical", pg.url("postgres")));
    write_markers(&pg, 2);
    let (_, last) = markers(&pg);
    assert!(last > 20, "{last} markers");
    let at = time_after_marker(&pg, 20);
    write_markers(&pg, 1);
    wait_captured(&pg);
    receiver.stop();

    // The writer cannot see its windows; the full key restores to the time.
    let out = s
        .cmd()
        .env("BACKUP_PASSWORD", WRITER_PASSWORD)
        .arg("pitr")
        .output()
        .unwrap();
    assert!(
        !out.status.success() && String::from_utf8_lossy(&out.stderr).contains("needs a full key"),
        "{out:?}"
    );
    s.ok(&["pitr"]);
    let copy = restore_and_start(&s, &["--at", &at]);
    assert_eq!(markers(&copy), (20, 20));
    s.ok(&["verify", "--read-data"]);
}

#[test]
fn write_only_keys_held_by_kms_open_with_no_password() {
    let moto = backup_testkit::moto::MotoServer::start();
    let writer_kms = moto.kms_create_key();
    let mut s = Scratch::new();
    s.env = moto.env();
    s.init();
    let src = s.path("src");
    write(&src.join("a.bin"), &random_bytes(300_000, 9));
    s.ok(&[
        "key",
        "add",
        "--write-only",
        "--kms",
        &format!("aws:{writer_kms}"),
    ]);
    let keys = s.json(&["key", "list"]);
    let held = keys
        .as_array()
        .unwrap()
        .iter()
        .find(|k| k["kind"] == "write-only kms")
        .unwrap_or_else(|| panic!("{keys}"));
    assert_eq!(held["kms"]["key"], writer_kms.as_str(), "{held}");
    // The key file holds the service's ciphertext of a writer key.
    let stored =
        std::fs::read_to_string(s.path("repo/keys").join(held["id"].as_str().unwrap())).unwrap();
    assert!(stored.contains("\"access\": \"write-only\""), "{stored}");

    // With no password the host opens as a writer: it backs up, twice
    // (the second deduplicated), and reads nothing.
    let no_password = |args: &[&str]| {
        s.cmd()
            .env_remove("BACKUP_PASSWORD")
            .args(args)
            .output()
            .unwrap()
    };
    for expected_new in [true, false] {
        let out = no_password(&["--json", "create", src.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(added(&v) > 300_000, expected_new, "{v}");
    }
    let out = no_password(&["list"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && err.contains("needs a full key"),
        "{err}"
    );
    // A given password still opens fully, though the KMS key opens too.
    let target = s.path("restored");
    s.ok(&["restore", "latest", "--to", target.to_str().unwrap()]);
    assert_same_tree(&src, &target);
}

#[test]
fn write_only_clients_capture_the_oplog_that_a_full_key_restores_to_a_timestamp() {
    use crate::mongo_pitr::{newest, ts_arg, wait_stored, Follower};
    use backup_testkit::mongo::MongoServer;
    use mongodb::bson::{doc, Document};
    let m = MongoServer::start();
    let c = mongodb::sync::Client::with_uri_str(m.url("")).unwrap();
    let url = m.url("");
    let s = Scratch::new();
    s.init();
    add_writer(&s);
    let orders = c.database("shop").collection::<Document>("orders");
    orders
        .insert_many((0..50).map(|i| doc! {"_id": i, "v": 0}))
        .run()
        .unwrap();
    writer_create(&s, &url);
    // The follower starts from the writer's own base (from its cache).
    let follower = Follower::start_with(&s, &url, WRITER_PASSWORD);
    orders
        .insert_many((50..80).map(|i| doc! {"_id": i, "v": 1}))
        .run()
        .unwrap();
    let target = newest(&c);
    orders
        .insert_many((80..90).map(|i| doc! {"_id": i, "v": 2}))
        .run()
        .unwrap();
    wait_stored(&s, newest(&c));
    follower.stop();
    s.ok(&[
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
    let restored = c.database("at_ts").collection::<Document>("orders");
    assert_eq!(restored.count_documents(doc! {}).run().unwrap(), 80);
}

#[test]
fn write_only_clients_follow_redis_that_a_full_key_restores_to_an_offset() {
    use crate::redis_pitr::{repl_offset, wait_captured, Follower};
    use backup_testkit::redis::RedisServer;
    let source = RedisServer::start();
    let target = RedisServer::start();
    let s = Scratch::new();
    s.init();
    add_writer(&s);
    let set = |range: std::ops::Range<u32>| {
        let mut con = source.connection();
        for i in range {
            redis::cmd("SET")
                .arg(format!("k:{i}"))
                .arg(i)
                .exec(&mut con)
                .unwrap();
        }
        repl_offset(&mut con)
    };
    set(0..20);
    writer_create(&s, &source.url());
    // The follower starts from the writer's own base (from its cache),
    // stops, and resumes from its newest piece, which it cannot read: it
    // continues from the piece's name.
    let follower = Follower::start_as(&s, &source.url(), &[], WRITER_PASSWORD);
    let first = set(20..40);
    wait_captured(&s, first);
    follower.stop();
    let follower = Follower::start_as(&s, &source.url(), &[], WRITER_PASSWORD);
    let second = set(40..60);
    let listed = wait_captured(&s, second);
    follower.stop();
    let log = std::fs::read_to_string(s.path("follow.log")).unwrap_or_default();
    let streams = listed.as_array().unwrap();
    assert_eq!(streams.len(), 1, "{listed}\n{log}");
    assert!(
        streams[0]["gaps"].as_array().unwrap().is_empty(),
        "{listed}\n{log}"
    );
    assert_eq!(
        streams[0]["windows"].as_array().unwrap().len(),
        1,
        "{listed}"
    );
    // One base only: the writer's own, which both runs continued.
    let bases = s.json(&["list"]);
    assert_eq!(bases.as_array().unwrap().len(), 1, "{bases}");
    s.ok(&[
        "restore",
        "--at-offset",
        &second.to_string(),
        "--to",
        &target.url(),
        "--drop",
        "-y",
        "--no-safety-backup",
    ]);
    let mut con = target.connection();
    for i in 0..60u32 {
        let v: Option<u32> = redis::cmd("GET")
            .arg(format!("k:{i}"))
            .query(&mut con)
            .unwrap();
        assert_eq!(v, Some(i), "k:{i}");
    }
}
