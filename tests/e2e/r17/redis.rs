//! Issue 17, Redis items 6 to 12. RDB files a running `redis-server`
//! does not write (module data, empty keys, bytes after the checksum,
//! newer encodings) are served to the backup by a stand-in master
//! (`backup_testkit::redis::master`); restores go to real servers.

use std::time::{Duration, Instant};

use backup_testkit::redis::fixtures;
use backup_testkit::redis::master::FakeMaster;
use backup_testkit::redis::RedisServer;

use crate::util::Scratch;

fn snapshot_of(s: &Scratch, rdb: Vec<u8>) -> (String, serde_json::Value) {
    let master = FakeMaster::serve(rdb, "7.0.15");
    let v = s.json(&["create", &master.url()]);
    (v["id"].as_str().unwrap().to_owned(), v)
}

fn scratch() -> Scratch {
    let s = Scratch::new();
    s.init();
    s
}

/// Item 6: module auxiliary data is kept in the manifest, and a restore
/// into a server without the module is refused (Redis itself refuses the
/// file) instead of reporting success.
#[test]
fn r17_6_module_aux_data_is_recorded_and_refused_without_the_module() {
    let s = scratch();
    let (id, v) = snapshot_of(&s, fixtures::rdb_v9_module_aux());
    let meta = &v["snapshot"]["metadata"];
    assert_eq!(
        meta["module_aux"],
        serde_json::json!(["bkpmodule"]),
        "{meta}"
    );
    let dst = RedisServer::start();
    let err = s.fails(&["restore", &id, "--to", &dst.url()], 1);
    assert!(
        err.contains("bkpmodule") && err.contains("auxiliary"),
        "{err}"
    );
    assert!(err.contains("nothing was changed"), "{err}");
    assert_eq!(dst.dbsize(0), 0);
}

/// Item 7: the module check follows --include/--exclude: leaving the
/// module keys out makes the restore possible, as the refusal advises.
#[test]
fn r17_7_module_check_honours_the_selection() {
    let s = scratch();
    let (id, v) = snapshot_of(&s, fixtures::rdb_v9_module_value());
    assert_eq!(
        v["snapshot"]["metadata"]["module_types"],
        serde_json::json!(["bkpmodule"])
    );
    let dst = RedisServer::start();
    let err = s.fails(&["restore", &id, "--to", &dst.url()], 1);
    assert!(
        err.contains("`modkey`") && err.contains("--exclude"),
        "{err}"
    );
    assert_eq!(dst.dbsize(0), 0);
    let out = s.ok(&["restore", &id, "--to", &dst.url(), "--exclude", "modkey"]);
    assert!(out.contains("2 keys restored"), "{out}");
    assert_eq!(dst.dbsize(0), 2);
}

/// Item 8: empty keys (which Redis skips when it loads an RDB and
/// `RESTORE` refuses) are skipped and counted; the rest restores as Redis
/// itself loads the file.
#[test]
fn r17_8_empty_keys_are_skipped_and_counted() {
    for (rdb, empty) in [
        (fixtures::rdb_v9_empty_keys(), 10),
        (fixtures::rdb_v10_empty_keys(), 3),
    ] {
        let loaded = RedisServer::builder().rdb(rdb.clone()).start();
        let s = scratch();
        let (id, v) = snapshot_of(&s, rdb);
        let meta = &v["snapshot"]["metadata"];
        assert_eq!(meta["empty_keys"], empty, "{meta}");
        assert_eq!(meta["keys"], loaded.dbsize(0), "{meta}");
        let dst = RedisServer::start();
        let out = s.ok(&["restore", &id, "--to", &dst.url()]);
        assert!(
            out.contains(&format!("{empty} empty keys skipped")),
            "{out}"
        );
        assert_eq!(dst.key_digests(0), loaded.key_digests(0));
        assert_eq!(dst.digest(), loaded.digest());
    }
}

/// Item 9: bytes after the RDB's checksum are accepted (Redis ignores
/// them) and recorded.
#[test]
fn r17_9_bytes_after_the_checksum_are_recorded() {
    let mut rdb = fixtures::rdb_v9_ziplist_era();
    rdb.extend_from_slice(b"trailing garbage");
    let s = scratch();
    let (id, v) = snapshot_of(&s, rdb.clone());
    assert_eq!(v["snapshot"]["metadata"]["trailing_bytes"], 16, "{v}");
    let loaded = RedisServer::builder().rdb(rdb).start();
    let dst = RedisServer::start();
    s.ok(&["restore", &id, "--to", &dst.url()]);
    assert_eq!(dst.digest(), loaded.digest());
    for db in [0, 2] {
        assert_eq!(dst.key_digests(db), loaded.key_digests(db));
    }
}

/// Item 10: the byte count a key-mode export reports is the size of the
/// file it wrote (end marker and checksum included).
#[test]
fn r17_10_keys_mode_export_reports_the_file_size() {
    let src = RedisServer::start();
    let mut con = src.connection();
    for i in 0..50 {
        redis::cmd("SET")
            .arg(format!("k{i}"))
            .arg(i)
            .exec(&mut con)
            .unwrap();
    }
    let s = scratch();
    let v = s.json(&["create", &format!("{}?mode=keys", src.url())]);
    let id = v["id"].as_str().unwrap();
    let file = s.path("keys.rdb");
    let out = s.json(&[
        "export",
        id,
        "--format",
        "rdb",
        "--to",
        file.to_str().unwrap(),
    ]);
    let size = std::fs::metadata(&file).unwrap().len();
    assert_eq!(out["report"]["bytes"].as_u64(), Some(size), "{out}");
}

/// Item 11: a URL database the server does not have is refused when the
/// backup starts, and a restore into one is refused before its safety
/// backup.
#[test]
fn r17_11_database_numbers_are_checked_against_the_server() {
    let src = RedisServer::start();
    let mut con = src.connection();
    redis::cmd("SET").arg("k").arg("v").exec(&mut con).unwrap();
    let s = scratch();
    for mode in ["", "?mode=keys"] {
        let err = s.fails(&["create", &format!("{}/99{mode}", src.url())], 2);
        assert!(
            err.contains("16 databases") && err.contains("no database 99"),
            "{err}"
        );
    }
    assert!(s.json(&["list"]).as_array().unwrap().is_empty());

    let id = s.json(&["create", &src.url()])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let dst = RedisServer::start();
    let mut c = dst.connection();
    redis::cmd("SET")
        .arg("other")
        .arg("x")
        .exec(&mut c)
        .unwrap();
    let err = s.fails(
        &[
            "restore",
            &id,
            "--to",
            &dst.url(),
            "--rename",
            "0:99",
            "--drop",
            "--yes",
        ],
        1,
    );
    assert!(err.contains("no database 99"), "{err}");
    assert_eq!(
        s.json(&["list"]).as_array().unwrap().len(),
        1,
        "no safety backup may be taken"
    );
}

/// Item 12: a refused key is named (not the first key of its batch),
/// clauses are not repeated, and `rediss://` against a plain-text server
/// says TLS failed, quickly.
#[test]
fn r17_12_messages_name_the_refused_key_and_the_tls_failure() {
    let s = scratch();
    let (id, _) = snapshot_of(&s, fixtures::rdb_v10_with_a_newer_encoding());
    let dst = RedisServer::start();
    let err = s.fails(&["restore", &id, "--to", &dst.url()], 1);
    assert!(err.contains("key `sl`"), "{err}");
    assert!(!err.contains("`a`"), "{err}");
    assert!(err.contains("encoding 20"), "{err}");
    assert_eq!(err.matches("--drop").count(), 1, "{err}");

    let plain = RedisServer::start();
    let url = format!("rediss://127.0.0.1:{}", plain.port());
    let started = Instant::now();
    let err = s.fails(&["create", &url], 2);
    assert!(
        started.elapsed() < Duration::from_secs(8),
        "took {:?}",
        started.elapsed()
    );
    assert!(err.contains("TLS"), "{err}");
    assert!(err.contains("plain text"), "{err}");
    assert!(!err.contains("check that the server runs"), "{err}");
}

/// Keys of database `db` with their absolute expiry (`PEXPIRETIME`, -1
/// without one).
fn expiries(server: &RedisServer, db: u32) -> Vec<(Vec<u8>, i64)> {
    let mut con = server.connection();
    redis::cmd("SELECT").arg(db).exec(&mut con).unwrap();
    let mut keys: Vec<Vec<u8>> = redis::cmd("KEYS").arg("*").query(&mut con).unwrap();
    keys.sort();
    keys.into_iter()
        .map(|k| {
            let t: i64 = redis::cmd("PEXPIRETIME").arg(&k).query(&mut con).unwrap();
            (k, t)
        })
        .collect()
}

/// Pending entries of stream `key`'s group `group`: id, consumer and
/// delivery count.
fn pending(server: &RedisServer, key: &str, group: &str) -> Vec<(String, String, i64)> {
    let v: Vec<(String, String, i64, i64)> = redis::cmd("XPENDING")
        .arg(key)
        .arg(group)
        .arg("-")
        .arg("+")
        .arg(100)
        .query(&mut server.connection())
        .unwrap();
    v.into_iter().map(|(id, c, _, n)| (id, c, n)).collect()
}

/// Done means: RDB files of Redis 2.4 to 7.0, written from the format
/// documentation with the encodings each version wrote, restore into a
/// live server (and export back to a file) exactly as `redis-server`
/// loads them: key counts, per-key and whole-dataset digests, expiry
/// times, stream consumer groups.
#[test]
fn r17_rdb_files_of_redis_2_to_7_restore_as_redis_loads_them() {
    for (name, rdb, dbs) in [
        ("Redis 2.4, RDB 4", fixtures::rdb_v4_redis24(), &[0, 1][..]),
        ("Redis 2.8, RDB 6", fixtures::rdb_v6_redis28(), &[0]),
        ("Redis 3.2, RDB 7", fixtures::rdb_v7_redis32(), &[0]),
        ("Redis 4.0, RDB 8", fixtures::rdb_v8_redis40(), &[0]),
        ("Redis 6, RDB 9", fixtures::rdb_v9_ziplist_era(), &[0, 2]),
        ("Redis 6 stream, RDB 9", fixtures::rdb_v9_stream(), &[0]),
        ("Redis 7.0, RDB 10", fixtures::rdb_v10_listpack(), &[0]),
    ] {
        let loaded = RedisServer::builder().rdb(rdb.clone()).start();
        let s = scratch();
        let (id, v) = snapshot_of(&s, rdb);
        let dst = RedisServer::start();
        s.ok(&["restore", &id, "--to", &dst.url()]);
        let file = s.path("export.rdb");
        s.ok(&[
            "export",
            &id,
            "--format",
            "rdb",
            "--to",
            file.to_str().unwrap(),
        ]);
        let exported = RedisServer::builder()
            .rdb(std::fs::read(&file).unwrap())
            .start();
        for &db in dbs {
            let want = loaded.dbsize(db);
            assert!(want > 0, "{name}: the fixture has no keys in database {db}");
            assert_eq!(
                v["snapshot"]["metadata"]["databases"][db.to_string()]["keys"],
                want,
                "{name}: keys of database {db}"
            );
            for (what, got) in [("restore", &dst), ("export", &exported)] {
                assert_eq!(
                    got.key_digests(db),
                    loaded.key_digests(db),
                    "{name}: {what}, database {db}"
                );
                assert_eq!(
                    expiries(got, db),
                    expiries(&loaded, db),
                    "{name}: {what}, expiry times of database {db}"
                );
            }
        }
        assert_eq!(dst.digest(), loaded.digest(), "{name}: DEBUG DIGEST");
        assert_eq!(exported.digest(), loaded.digest(), "{name}: export");
        if name.contains("stream") {
            let want = pending(&loaded, "st", "grp");
            assert_eq!(want.len(), 2, "{name}: {want:?}");
            assert_eq!(pending(&dst, "st", "grp"), want, "{name}: pending entries");
        }
    }
}
