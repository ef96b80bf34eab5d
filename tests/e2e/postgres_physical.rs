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
         INSERT INTO in_ts SELECT g, repeat('t', g % 50) FROM generate_series(1, 20000) g;\n\
         CREATE UNLOGGED TABLE scratchpad (id int, v text);\n\
         INSERT INTO scratchpad SELECT g, 'x' FROM generate_series(1, 500) g;\n\
         SELECT lo_from_bytea(0, convert_to(repeat('large object ', 2000), 'UTF8'));",
    );
    pg.psql(
        "other",
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 20000) g;",
    );
    // Settled as a production table is: hint bits set by a first read
    // (setting them later changes every page, WAL-logged with checksums).
    pg.psql("src", "VACUUM");
    pg.psql("other", "VACUUM");
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
    // A cluster configured with fewer shared buffers than its data: the
    // server started to replay gets a pool that holds it, and the restored
    // configuration keeps the cluster's own setting.
    pg.psql("postgres", "ALTER SYSTEM SET shared_buffers = '16MB'");
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
    let pool: u64 = out
        .split("replayed with shared_buffers = ")
        .nth(1)
        .and_then(|rest| rest.split(' ').next())
        .and_then(|mb| mb.parse().ok())
        .unwrap_or_else(|| panic!("no replay pool reported: {out}"));
    assert!(pool > 16, "{out}");
    let auto = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
    assert!(auto.contains("shared_buffers = '16MB'"), "{auto}");

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

/// Runs pgbench against `db` in the background until the handle is
/// dropped.
struct Load(std::process::Child);

impl Load {
    fn start(pg: &PgCluster, db: &str, seconds: u32) -> Self {
        Load(
            pg.tool("pgbench")
                .args(["-c", "2", "-R", "400", "-T", &seconds.to_string(), "-n", db])
                .stdout(std::process::Stdio::null())
                .stderr(std::process::Stdio::null())
                .spawn()
                .expect("starting pgbench"),
        )
    }
}

impl Drop for Load {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// pgbench's transactions keep four totals equal; a restore of a
/// consistent state keeps them equal too.
fn assert_pgbench_consistent(pg: &PgCluster, db: &str) -> u64 {
    let row = pg.psql(
        db,
        "SELECT (SELECT sum(abalance) FROM pgbench_accounts), (SELECT sum(tbalance) FROM pgbench_tellers), \
         (SELECT sum(bbalance) FROM pgbench_branches), (SELECT coalesce(sum(delta), 0) FROM pgbench_history), \
         (SELECT count(*) FROM pgbench_history)",
    );
    let v: Vec<&str> = row.trim().split('|').collect();
    assert_eq!(v[0], v[1], "{row}");
    assert_eq!(v[0], v[2], "{row}");
    assert_eq!(v[0], v[3], "{row}");
    v[4].parse().unwrap()
}

fn restore_and_start(s: &Scratch, id: &str, map: Option<(u64, &Path)>) -> PgCluster {
    let target = PgCluster::owned_tempdir("pg-restore-");
    let data = target.path().join("data");
    let mut args = vec![
        "restore".to_owned(),
        id.to_owned(),
        "--to".to_owned(),
        data.display().to_string(),
    ];
    if let Some((oid, dir)) = map {
        args.push("--tablespace-map".to_owned());
        args.push(format!("{oid}={}", dir.display()));
    }
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    s.ok(&args);
    PgCluster::start_existing(target, data)
}

#[test]
fn base_backups_under_pgbench_load_restore_consistent() {
    // Hint bits WAL-logged (without data checksums): local backups store
    // page deltas against the previous one while pgbench writes.
    let pg = PgCluster::start_with(&PgOptions {
        settings: vec!["wal_log_hints=on".to_owned()],
        ..PgOptions::default()
    });
    pg.psql(
        "postgres",
        &format!("CREATE DATABASE bench; CREATE ROLE repl LOGIN REPLICATION PASSWORD '{PASSWORD}'"),
    );
    let init = pg
        .tool("pgbench")
        .args(["-i", "-s", "2", "-q", "bench"])
        .output()
        .unwrap();
    assert!(
        init.status.success(),
        "{}",
        String::from_utf8_lossy(&init.stderr)
    );
    let s = Scratch::new();
    s.init();
    let local = format!("{}?mode=physical", pg.url("postgres"));
    for (round, (url, method)) in [
        (repl_url(&pg), "remote"),
        (local.clone(), "local"),
        (local.clone(), "local"),
        (local, "local"),
    ]
    .into_iter()
    .enumerate()
    {
        let load = Load::start(&pg, "bench", 60);
        std::thread::sleep(std::time::Duration::from_secs(1));
        let v = s.json(&["create", &url]);
        drop(load);
        let meta = &v["snapshot"]["metadata"];
        assert_eq!(meta["method"], method);
        if round > 1 {
            // The first local backup reads everything (its parent is the
            // last backup of the same URL); the next ones store
            // pgbench_accounts (and more) as the pages changed since its
            // start, cumulatively.
            assert!(meta["delta_files"].as_u64().unwrap() >= 1, "{meta}");
            assert!(meta["delta_pages"].as_u64().unwrap() >= 1, "{meta}");
        }
        let id = v["id"].as_str().unwrap();
        let copy = restore_and_start(&s, id, None);
        let rows = assert_pgbench_consistent(&copy, "bench");
        assert!(
            rows > 0,
            "{method}: no pgbench transaction before the backup"
        );
    }
}

#[test]
fn local_base_backup_verifies_checksums_and_reads_only_what_changed() {
    let (pg, ts) = rich_cluster(&PgOptions {
        data_checksums: true,
        ..PgOptions::default()
    });
    // Files last modified well before the first backup may be taken from
    // it unread by the next one.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let s = Scratch::new();
    s.init();
    let url = format!("{}?mode=physical", pg.url("postgres"));
    let first = s.json(&["create", &url]);
    let meta = &first["snapshot"]["metadata"];
    assert_eq!(meta["method"], "local", "{meta}");
    assert_eq!(meta["checksums_verified"], true, "{meta}");
    assert!(meta["pages_verified"].as_u64().unwrap() > 100, "{meta}");
    // Explicit --pgdata gives the same kind of backup.
    let explicit = s.json(&[
        "create",
        &pg.url("postgres"),
        "--mode",
        "physical",
        "--pgdata",
        pg.data_dir().to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(explicit["snapshot"]["metadata"]["method"], "local");

    pg.psql(
        "src",
        "UPDATE in_ts SET v = v || '!' WHERE id <= 10; CREATE TABLE later AS SELECT 1 AS x;",
    );
    pg.psql("other", "UPDATE big SET h = upper(h) WHERE id % 1000 = 0");
    pg.psql("postgres", "CHECKPOINT");
    // Long enough for the next backup to take what is unchanged unread.
    std::thread::sleep(std::time::Duration::from_secs(3));
    let second = s.json(&["create", &url]);
    let m2 = &second["snapshot"]["metadata"];
    // The two changed tables are stored as their pages changed since the
    // first backup, against its copies.
    assert!(m2["delta_files"].as_u64().unwrap() >= 2, "{m2}");
    let pages = m2["delta_pages"].as_u64().unwrap();
    assert!((1..200).contains(&pages), "{m2}");
    let (st1, st2) = (&first["snapshot"]["stats"], &second["snapshot"]["stats"]);
    assert!(st2["files_unchanged"].as_u64().unwrap() > 100, "{st2}");
    assert!(
        st2["bytes_read"].as_u64().unwrap() * 2 < st1["bytes_read"].as_u64().unwrap(),
        "second read {} of {}",
        st2["bytes_read"],
        st1["bytes_read"]
    );
    assert!(
        st2["bytes_added"].as_u64().unwrap() * 4 < st1["bytes_added"].as_u64().unwrap(),
        "second added {} of {}",
        st2["bytes_added"],
        st1["bytes_added"]
    );
    let oid = second["snapshot"]["metadata"]["tablespaces"][0]["oid"]
        .as_u64()
        .unwrap();
    let id = second["id"].as_str().unwrap().to_owned();
    let ts2 = PgCluster::owned_tempdir("pg-ts2-");
    let target = PgCluster::owned_tempdir("pg-restore-");
    let data = target.path().join("data");
    s.ok(&[
        "restore",
        &id,
        "--to",
        data.to_str().unwrap(),
        "--tablespace-map",
        &format!("{oid}={}", ts2.path().display()),
    ]);
    // The manifest this backup wrote is PostgreSQL's format:
    // pg_verifybackup accepts the restored directory (the tablespace map
    // was rewritten for the tablespace's new place, on purpose).
    let verify = std::process::Command::new(pg.bin("pg_verifybackup"))
        .args([
            "--no-parse-wal",
            "--ignore",
            "tablespace_map",
            data.to_str().unwrap(),
        ])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "pg_verifybackup: {}{}",
        String::from_utf8_lossy(&verify.stdout),
        String::from_utf8_lossy(&verify.stderr)
    );
    // (Started and compared after the third backup: reading every table
    // now would set hint bits on every page and make the third read them
    // whole.)

    // Third backup: `in_ts` changed again (a delta against the same base,
    // the first backup's copy), `big` unchanged since the second (its base
    // and delta taken unread), `later` changed (small: read whole).
    pg.psql(
        "src",
        "UPDATE in_ts SET v = v || '?' WHERE id > 19990; INSERT INTO later SELECT 2;",
    );
    pg.psql("postgres", "CHECKPOINT");
    let third = s.json(&["create", &url]);
    let m3 = &third["snapshot"]["metadata"];
    assert!(m3["delta_files"].as_u64().unwrap() >= 1, "{m3}");
    assert!(m3["delta_pages"].as_u64().unwrap() >= 1, "{m3}");
    let id3 = third["id"].as_str().unwrap().to_owned();
    let ts3 = PgCluster::owned_tempdir("pg-ts3-");
    let target3 = PgCluster::owned_tempdir("pg-restore3-");
    s.ok(&[
        "restore",
        &id3,
        "--to",
        target3.path().join("data").to_str().unwrap(),
        "--tablespace-map",
        &format!("{oid}={}", ts3.path().display()),
    ]);
    check_restored(&pg, ts.path(), target3, ts3.path());
    // The second, restored before the third's changes, holds in_ts as it
    // was then.
    let copy = PgCluster::start_existing(target, data);
    assert_eq!(
        copy.psql("src", "SELECT count(*) FILTER (WHERE v LIKE '%!'), count(*) FILTER (WHERE v LIKE '%?') FROM in_ts").trim(),
        "10|0"
    );
}

fn url_as(pg: &PgCluster, user: &str) -> String {
    format!(
        "postgres://{user}:{PASSWORD}@127.0.0.1:{}/postgres?mode=physical",
        pg.port()
    )
}

fn no_snapshots(s: &Scratch) {
    let list = s.json(&["list"]);
    assert_eq!(list.as_array().map_or(0, Vec::len), 0, "{list}");
}

#[test]
fn refused_connections_say_what_to_change() {
    let pg = PgCluster::start();
    pg.psql(
        "postgres",
        &format!(
            "CREATE ROLE plain LOGIN PASSWORD '{PASSWORD}'; CREATE ROLE repl LOGIN REPLICATION PASSWORD '{PASSWORD}'"
        ),
    );
    let s = Scratch::new();
    s.init();
    let err = s.fails(&["create", &url_as(&pg, "plain")], 1);
    assert!(
        err.contains("REPLICATION") && err.contains("plain"),
        "{err}"
    );

    // Without a replication line in pg_hba.conf the message gives one.
    let hba = pg.data_dir().join("pg_hba.conf");
    let text = std::fs::read_to_string(&hba).unwrap();
    let kept: Vec<&str> = text
        .lines()
        .filter(|l| !l.contains("replication"))
        .collect();
    std::fs::write(&hba, kept.join("\n") + "\n").unwrap();
    pg.psql("postgres", "SELECT pg_reload_conf()");
    let err = s.fails(&["create", &url_as(&pg, "repl")], 1);
    assert!(
        err.contains("host replication repl 127.0.0.1/32") && err.contains("pg_hba.conf"),
        "{err}"
    );
    no_snapshots(&s);

    // A server that accepts no replication connections at all, and one
    // whose WAL level does not allow online backups.
    let minimal = PgCluster::start_with(&PgOptions {
        settings: vec!["wal_level=minimal".into(), "max_wal_senders=0".into()],
        ..PgOptions::default()
    });
    minimal.psql(
        "postgres",
        &format!("CREATE ROLE repl LOGIN REPLICATION PASSWORD '{PASSWORD}'"),
    );
    let err = s.fails(&["create", &url_as(&minimal, "repl")], 1);
    assert!(
        err.contains("max_wal_senders") && err.contains("wal_level"),
        "{err}"
    );
    let err = s.fails(
        &[
            "create",
            &format!("{}?mode=physical", minimal.url("postgres")),
        ],
        1,
    );
    assert!(err.contains("wal_level = replica"), "{err}");
    no_snapshots(&s);
}

#[test]
fn a_damaged_page_fails_the_backup_with_its_file_and_block() {
    let mut pg = PgCluster::start_with(&PgOptions {
        data_checksums: true,
        ..PgOptions::default()
    });
    pg.psql(
        "postgres",
        &format!(
            "CREATE ROLE repl LOGIN REPLICATION PASSWORD '{PASSWORD}';\n\
             CREATE TABLE victim AS SELECT g AS id, repeat('v', 200) AS v FROM generate_series(1, 5000) g;\n\
             CHECKPOINT;"
        ),
    );
    let rel = pg
        .psql("postgres", "SELECT pg_relation_filepath('victim')")
        .trim()
        .to_owned();
    pg.stop();
    let file = pg.data_dir().join(&rel);
    let mut data = std::fs::read(&file).unwrap();
    data[8192 + 4000] ^= 0x5a;
    std::fs::write(&file, data).unwrap();
    pg.restart();
    let s = Scratch::new();
    s.init();
    let err = s.fails(
        &["create", &format!("{}?mode=physical", pg.url("postgres"))],
        1,
    );
    assert!(
        err.contains("checksum") && err.contains(&rel) && err.contains("block 1"),
        "{err}"
    );
    let err = s.fails(&["create", &url_as(&pg, "repl")], 1);
    assert!(err.contains("checksum") && err.contains("block 1"), "{err}");
    no_snapshots(&s);
}

#[test]
fn a_damaged_repository_is_found_by_verify_and_restore() {
    let pg = PgCluster::start();
    pg.psql(
        "postgres",
        "CREATE TABLE t AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 200000) g; CHECKPOINT;",
    );
    let s = Scratch::new();
    s.init();
    let v = s.json(&["create", &format!("{}?mode=physical", pg.url("postgres"))]);
    let id = v["id"].as_str().unwrap().to_owned();
    let biggest = crate::util::files_under(&Path::new(&s.repo).join("data"))
        .into_iter()
        .max_by_key(|p| std::fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = std::fs::read(&biggest).unwrap();
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&biggest, bytes).unwrap();
    let err = s.fails(&["verify", "--read-data"], 3);
    assert!(err.contains(&id), "{err}");
    let target = PgCluster::owned_tempdir("pg-restore-");
    let data = target.path().join("data");
    let err = s.fails(&["restore", &id, "--to", data.to_str().unwrap()], 3);
    assert!(err.contains("damage"), "{err}");
    // What the failed restore wrote is gone.
    assert!(std::fs::read_dir(&data).map_or(true, |mut d| d.next().is_none()));
}

/// `backup create` as a child process, killed with SIGKILL once the
/// server shows the backup running.
fn kill_mid_backup(s: &Scratch, pg: &PgCluster, args: &[&str], running: &str) {
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_backup"))
        .arg("create")
        .args(args)
        .env("BACKUP_REPOSITORY", &s.repo)
        .env("BACKUP_PASSWORD", crate::util::PASSWORD)
        .env("HOME", s.dir.path())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let start = std::time::Instant::now();
    loop {
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended before it could be killed"
        );
        if pg.psql("postgres", running).trim() != "0" {
            break;
        }
        assert!(start.elapsed().as_secs() < 60, "the backup never showed up");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    // The server ends the backup and drops the temporary slot when the
    // connection goes.
    let start = std::time::Instant::now();
    loop {
        let left = pg.psql(
            "postgres",
            "SELECT (SELECT count(*) FROM pg_stat_activity WHERE application_name = 'backup') + (SELECT count(*) FROM pg_replication_slots)",
        );
        if left.trim() == "0" {
            break;
        }
        assert!(
            start.elapsed().as_secs() < 30,
            "the killed backup left {left} sessions or slots"
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    no_snapshots(s);
}

#[test]
fn a_killed_backup_leaves_no_snapshot_and_nothing_on_the_server() {
    let pg = PgCluster::start();
    pg.psql(
        "postgres",
        &format!(
            "CREATE ROLE repl LOGIN REPLICATION PASSWORD '{PASSWORD}';\n\
             CREATE TABLE t AS SELECT g AS id, md5(g::text) AS h FROM generate_series(1, 300000) g; CHECKPOINT;"
        ),
    );
    let s = Scratch::new();
    s.init();
    // Remote, slowed down so that it is surely running when killed.
    kill_mid_backup(
        &s,
        &pg,
        &[&url_as(&pg, "repl"), "--max-rate", "32KiB"],
        "SELECT count(*) FROM pg_stat_progress_basebackup",
    );
    // Local, with a large sparse file in the data directory that keeps
    // it reading.
    let sparse = pg.data_dir().join("zz_sparse");
    std::fs::File::create(&sparse)
        .unwrap()
        .set_len(1 << 40)
        .unwrap();
    kill_mid_backup(
        &s,
        &pg,
        &[&format!("{}?mode=physical", pg.url("postgres"))],
        "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'backup' AND query LIKE '%pg_backup_start%'",
    );
    std::fs::remove_file(&sparse).unwrap();
    s.ok(&["verify"]);
    // Both kinds work again at once.
    s.ok(&["create", &url_as(&pg, "repl")]);
    s.ok(&["create", &format!("{}?mode=physical", pg.url("postgres"))]);
}
