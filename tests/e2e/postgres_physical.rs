//! Physical PostgreSQL backups (base backups) against throwaway clusters:
//! remote over the replication protocol and local from the data
//! directory, restored into new data directories that are started and
//! compared with the source by `pg_dumpall`.

use std::path::Path;

use backup_testkit::postgres::{PgCluster, PgOptions, PASSWORD};

use crate::util::Scratch;

const SCHEMA: &str = include_str!("postgres_schema.sql");

/// A cluster with several databases, a tablespace (and a table in it), an
/// unlogged table, large objects, and a replication-only role `repl`.
/// Returns the cluster and the tablespace's directory (kept alive).
fn rich_cluster(opts: &PgOptions) -> (PgCluster, tempfile::TempDir) {
    let pg = PgCluster::start_with(opts);
    let ts = PgCluster::owned_tempdir("pg-ts-");
    pg.psql(
        "postgres",
        &format!(
            "CREATE TABLESPACE extra LOCATION '{}';\n\
             CREATE ROLE repl LOGIN REPLICATION PASSWORD '{PASSWORD}';\n\
             CREATE DATABASE src;\nCREATE DATABASE other TABLESPACE extra;",
            ts.path().display()
        ),
    );
    pg.psql("src", SCHEMA);
    pg.psql(
        "src",
        "CREATE TABLE in_ts (id int PRIMARY KEY, v text) TABLESPACE extra;\n\
         INSERT INTO in_ts SELECT g, repeat('t', g % 50) FROM generate_series(1, 3000) g;\n\
         CREATE UNLOGGED TABLE scratchpad (id int, v text);\n\
         INSERT INTO scratchpad SELECT g, 'x' FROM generate_series(1, 500) g;\n\
         SELECT lo_from_bytea(0, convert_to(repeat('large object ', 2000), 'UTF8'));",
    );
    pg.psql(
        "other",
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 20000) g;",
    );
    pg.psql("postgres", "CHECKPOINT");
    (pg, ts)
}

/// `pg_dumpall` without unlogged data (a base backup restores unlogged
/// tables empty), with version banners, random keys and the tablespace
/// location normalised.
fn dumpall(pg: &PgCluster, ts_location: &str) -> String {
    pg.pg_dumpall(&["--no-unlogged-table-data"])
        .replace(ts_location, "TABLESPACE_DIR")
        .lines()
        .filter(|l| {
            !l.starts_with("\\restrict")
                && !l.starts_with("\\unrestrict")
                && !l.starts_with("-- Dumped from")
                && !l.starts_with("-- Dumped by")
        })
        .collect::<Vec<_>>()
        .join("\n")
}

fn assert_same_dump(a: &str, b: &str) {
    if a != b {
        let diff: Vec<String> = a
            .lines()
            .zip(b.lines())
            .filter(|(x, y)| x != y)
            .take(20)
            .map(|(x, y)| format!("- {x}\n+ {y}"))
            .collect();
        panic!(
            "pg_dumpall differs ({} vs {} lines):\n{}",
            a.lines().count(),
            b.lines().count(),
            diff.join("\n")
        );
    }
}

fn repl_url(pg: &PgCluster) -> String {
    format!(
        "postgres://repl:{PASSWORD}@127.0.0.1:{}/postgres?mode=physical",
        pg.port()
    )
}

/// Starts the restored data directory and checks it against the source.
fn check_restored(
    source: &PgCluster,
    ts: &Path,
    restored_root: tempfile::TempDir,
    restored_ts: &Path,
) {
    let expected = dumpall(source, &ts.display().to_string());
    let data = restored_root.path().join("data");
    let copy = PgCluster::start_existing(restored_root, data);
    let got = dumpall(&copy, &restored_ts.display().to_string());
    assert_same_dump(&expected, &got);
    assert_eq!(
        copy.psql("src", "SELECT count(*) FROM scratchpad").trim(),
        "0"
    );
    assert_eq!(
        copy.psql("src", "SELECT count(*), sum(length(v)) FROM in_ts")
            .trim(),
        source
            .psql("src", "SELECT count(*), sum(length(v)) FROM in_ts")
            .trim()
    );
    assert!(
        copy.log().contains("consistent recovery state reached"),
        "{}",
        copy.log()
    );
}

#[test]
fn remote_base_backup_restores_into_a_new_data_directory() {
    let (pg, ts) = rich_cluster(&PgOptions::default());
    let s = Scratch::new();
    s.init();
    let v = s.json(&["create", &repl_url(&pg), "--tag", "base"]);
    let id = v["id"].as_str().unwrap().to_owned();
    let meta = &v["snapshot"]["metadata"];
    assert_eq!(meta["mode"], "physical", "{meta}");
    assert_eq!(meta["method"], "remote", "{meta}");
    assert_eq!(meta["tablespaces"].as_array().unwrap().len(), 1, "{meta}");
    assert!(!meta["wal_files"].as_array().unwrap().is_empty(), "{meta}");
    assert!(meta["manifest_files"].as_u64().unwrap() > 500, "{meta}");
    let url = v["snapshot"]["source"]["url"].as_str().unwrap();
    assert!(
        url.ends_with("?mode=physical") && !url.contains(PASSWORD),
        "{url}"
    );
    let oid = meta["tablespaces"][0]["oid"].as_u64().unwrap();

    // A dry run says what would be written.
    let target = PgCluster::owned_tempdir("pg-restore-");
    let ts2 = PgCluster::owned_tempdir("pg-ts2-");
    let data = target.path().join("data");
    let map = format!("{oid}={}", ts2.path().join("moved").display());
    let out = s.ok(&[
        "restore",
        &id,
        "--to",
        data.to_str().unwrap(),
        "--tablespace-map",
        &map,
        "--dry-run",
    ]);
    assert!(out.contains("dry run"), "{out}");
    assert!(out.contains(&format!("tablespace {oid}")), "{out}");
    assert!(!data.exists());

    let out = s.json(&[
        "restore",
        &id,
        "--to",
        data.to_str().unwrap(),
        "--tablespace-map",
        &map,
    ]);
    let details = &out["report"]["details"];
    assert!(details["files_verified"].as_u64().unwrap() > 500, "{out}");
    check_restored(&pg, ts.path(), target, &ts2.path().join("moved"));

    // The data in the repository passes a full read, and a restore test
    // starts it.
    s.ok(&["verify", "--read-data"]);
    let scratch = PgCluster::owned_tempdir("pg-scratch-");
    let scratch_ts = PgCluster::owned_tempdir("pg-scratch-ts-");
    let _ = scratch_ts;
    // The tablespace goes back to its original place: free it first.
    drop(pg);
    std::fs::remove_dir_all(ts.path()).unwrap();
    s.ok(&[
        "verify",
        &id,
        "--restore-test",
        scratch.path().join("data").to_str().unwrap(),
    ]);
    assert!(!scratch.path().join("data").exists());
}

#[test]
fn restore_with_start_reports_recovery_and_refuses_what_it_cannot_do() {
    let (pg, _ts) = rich_cluster(&PgOptions::default());
    let s = Scratch::new();
    s.init();
    let v = s.json(&["create", &repl_url(&pg)]);
    let id = v["id"].as_str().unwrap().to_owned();
    let oid = v["snapshot"]["metadata"]["tablespaces"][0]["oid"]
        .as_u64()
        .unwrap();

    let target = PgCluster::owned_tempdir("pg-restore-");
    let ts2 = PgCluster::owned_tempdir("pg-ts2-");
    let data = target.path().join("data");
    let map = format!("{oid}={}", ts2.path().display());
    let port = backup_testkit::free_port().to_string();
    let out = s.ok(&[
        "restore",
        &id,
        "--to",
        data.to_str().unwrap(),
        "--tablespace-map",
        &map,
        "--start",
        &port,
    ]);
    assert!(out.contains("ready after"), "{out}");
    assert!(out.contains("consistent at"), "{out}");

    // Not into a non-empty directory, and the message says what to do.
    let err = s.fails(
        &[
            "restore",
            &id,
            "--to",
            data.to_str().unwrap(),
            "--tablespace-map",
            &map,
        ],
        1,
    );
    assert!(
        err.contains("not empty") && err.contains("new directory"),
        "{err}"
    );
    let err = s.fails(
        &[
            "restore",
            &id,
            "--to",
            target.path().join("d2").to_str().unwrap(),
            "--drop",
        ],
        2,
    );
    assert!(err.contains("no --drop for a data directory"), "{err}");
    let err = s.fails(
        &[
            "restore",
            &id,
            "--to",
            target.path().join("d3").to_str().unwrap(),
            "--tablespace-map",
            "999=/tmp/x",
        ],
        2,
    );
    assert!(err.contains("no tablespace 999"), "{err}");
    // A physical snapshot does not go into a database.
    let err = s.fails(&["restore", &id, "--to", &pg.url("elsewhere")], 2);
    assert!(err.contains("physical base backup"), "{err}");
}
