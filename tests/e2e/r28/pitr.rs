//! Issue 28, point-in-time recovery items 1 to 10.

use std::os::unix::fs::PermissionsExt as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use backup_testkit::postgres::PgCluster;

use crate::postgres_pitr::{
    cluster, markers, receiving_with_base, repl_url, time_after_marker, wait_captured,
    wait_streaming, write_markers, Receiver,
};
use crate::util::{is_root, write, Scratch};

/// A scratch repository (the server's user can read it, as
/// `restore_command` must).
fn readable_scratch() -> Scratch {
    let s = Scratch::new();
    s.init();
    s
}

/// The key file `restore` writes beside a data directory.
fn key_file(data: &Path) -> PathBuf {
    data.with_file_name(format!(
        "{}.backup-key",
        data.file_name().unwrap().to_str().unwrap()
    ))
}

/// A time between marker `id` and the next, in PostgreSQL's own form
/// (`2026-11-25 18:00:29.67208+00`).
fn pg_time_after_marker(pg: &PgCluster, id: u64) -> String {
    pg.psql(
        "postgres",
        &format!(
            "SET TIME ZONE 'UTC'; SELECT (a.ts + (b.ts - a.ts) / 2)::text \
             FROM markers a, markers b WHERE a.id = {id} AND b.id = {id} + 1"
        ),
    )
    .lines()
    .last()
    .unwrap()
    .trim()
    .to_owned()
}

/// Waits until `done` holds, for at most `secs` seconds.
fn wait_for(secs: u64, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(
            start.elapsed().as_secs() < secs,
            "waited in vain for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Items 1, 3, 5, 6, 7 and 9 (time forms): a base backup of the URL a user
/// gives (a database in it, `--mode physical`) is found by that URL; a
/// `--source` matching nothing lists the sources there are; `backup pitr`
/// shows no stream labelled with a files path and writes positions as
/// PostgreSQL does; a target before the oldest base is a usage error
/// (exit 2) like MongoDB's; the plain restore's hint says it replays to the
/// target and how recovery ends; the key file and the recovery settings
/// are gone once recovery ends, with and without `--start`.
#[test]
fn r28_1_3_5_6_7_the_url_backed_up_with_restores_to_a_point_and_leaves_no_key() {
    let pg = cluster(&[]);
    let s = readable_scratch();
    // A files snapshot beside the cluster's (item 3).
    let files = s.path("files-config");
    write(&files.join("app.yml"), b"port: 1\n");
    s.create(&files, &[]);
    let receiver = Receiver::start(&s, &repl_url(&pg));
    wait_streaming(&pg);
    let url = pg.url("postgres");
    s.ok(&["create", &url, "--mode", "physical"]);
    write_markers(&pg, 3);
    wait_captured(&pg);
    receiver.stop();

    // Item 3 and 5: the listing.
    let human = s.ok(&["pitr"]);
    assert!(!human.contains("files-config"), "{human}");
    assert!(human.contains("on timeline 1"), "{human}");
    assert!(
        !human.contains(" 1/0/"),
        "positions as PostgreSQL writes them: {human}"
    );
    let listing = s.json(&["pitr"]);
    let streams = listing.as_array().unwrap();
    assert_eq!(streams.len(), 1, "{listing}");
    assert!(
        streams[0]["source"]
            .as_str()
            .unwrap()
            .starts_with("postgres://"),
        "{listing}"
    );

    // Item 1: the URL as given, with its database, selects the base.
    let k = 30;
    let at = time_after_marker(&pg, k);
    let target = PgCluster::owned_tempdir("pg-r28-");
    let data = target.path().join("data");
    let out = s.ok(&[
        "restore",
        "--source",
        &url,
        "--at",
        &at,
        "--to",
        data.to_str().unwrap(),
    ]);
    // Item 6: the hint says where replay ends and what happens then.
    assert!(
        out.contains("the server fetches the captured WAL and replays to")
            && out.contains("ends recovery and promotes"),
        "{out}"
    );
    // Item 7: the key file is there for recovery, and goes when it ends.
    let key = key_file(&data);
    assert!(key.exists(), "{out}");
    assert!(
        out.contains("recovery_end_command removes the key file"),
        "{out}"
    );
    let copy = PgCluster::start_existing(target, data.clone());
    assert_eq!(markers(&copy), (k, k));
    wait_for(60, "the key file to go", || !key.exists());
    let auto = std::fs::read_to_string(data.join("postgresql.auto.conf")).unwrap();
    assert!(
        !auto.contains("wal fetch") && !auto.contains("recovery_target_time"),
        "{auto}"
    );
    drop(copy);

    // Item 7 with --start, and a time in PostgreSQL's own form (item 9).
    let k2 = 60;
    let at2 = pg_time_after_marker(&pg, k2);
    let target2 = PgCluster::owned_tempdir("pg-r28-");
    let data2 = target2.path().join("data");
    let port = backup_testkit::free_port().to_string();
    let out = s.ok(&[
        "restore",
        "--source",
        &format!("postgresql://127.0.0.1:{}/", pg.port()),
        "--at",
        &at2,
        "--to",
        data2.to_str().unwrap(),
        "--start",
        &port,
    ]);
    assert!(
        out.contains("recovery ended: the key file and the recovery settings were removed"),
        "{out}"
    );
    assert!(!key_file(&data2).exists());
    let auto = std::fs::read_to_string(data2.join("postgresql.auto.conf")).unwrap();
    assert!(!auto.contains("wal fetch"), "{auto}");
    let copy = PgCluster::start_existing(target2, data2);
    assert_eq!(markers(&copy), (k2, k2));
    drop(copy);

    // Item 1: a --source that matches nothing lists what the repository has.
    let err = s.fails(
        &[
            "restore",
            "--source",
            "postgres://127.0.0.1:1/postgres",
            "--at",
            &at,
            "--to",
            "/tmp/r28-never-written",
        ],
        1,
    );
    assert!(
        err.contains("the repository has snapshots of") && err.contains("files-config"),
        "{err}"
    );
    // Item 5: before the oldest base: one message, exit 2, as MongoDB's.
    let err = s.fails(
        &[
            "restore",
            "--source",
            &url,
            "--at",
            "2001-01-01T00:00:00Z",
            "--to",
            "/tmp/r28-never-written",
        ],
        2,
    );
    assert!(err.contains("before the oldest base backup"), "{err}");
    assert!(!Path::new("/tmp/r28-never-written").exists());
}

/// A copy of the `backup` binary in a directory only root may enter: the
/// server's user cannot run it.
fn private_binary(dir: &Path) -> PathBuf {
    let bin = dir.join("backup");
    if std::fs::hard_link(env!("CARGO_BIN_EXE_backup"), &bin).is_err() {
        std::fs::copy(env!("CARGO_BIN_EXE_backup"), &bin).unwrap();
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700)).unwrap();
    bin
}

/// `restore --at AT --to DATA --start PORT`.
fn at_start<'a>(at: &'a str, data: &'a Path, port: &'a str) -> [&'a str; 7] {
    [
        "restore",
        "--at",
        at,
        "--to",
        data.to_str().unwrap(),
        "--start",
        port,
    ]
}

/// Whether `dir` is absent or empty.
fn untouched(dir: &Path) -> bool {
    std::fs::read_dir(dir).map_or(true, |mut d| d.next().is_none())
}

/// Items 4, 8 and 9: `restore --at ... --start` checks before it writes
/// anything that the server can start (not as root, on a free port) and
/// that its `restore_command` works as the server's user; `--target-action
/// pause --start` leaves the directory at the target like `shutdown`;
/// targets PostgreSQL cannot reach fail with PostgreSQL's reason first,
/// the written files removed, and the older base backups named.
#[test]
fn r28_4_8_9_start_checks_first_and_says_why_recovery_failed() {
    assert!(
        is_root(),
        "this test runs the server as another user than the restore: run the tests as root (CI does)"
    );
    let (pg, s, receiver) = receiving_with_base(&[]);
    let first_base = s.json(&["list", "--source", "postgres"])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    // A transaction between the two bases.
    let xid = pg
        .psql(
            "postgres",
            "WITH i AS (INSERT INTO markers DEFAULT VALUES RETURNING id) SELECT txid_current() FROM i",
        )
        .trim()
        .to_owned();
    s.ok(&["create", &format!("{}?mode=physical", pg.url("postgres"))]);
    write_markers(&pg, 2);
    let (_, last) = markers(&pg);
    wait_captured(&pg);
    receiver.stop();
    let at = time_after_marker(&pg, last - 10);
    let port = backup_testkit::free_port().to_string();

    // Item 4: a data directory that would belong to root.
    let root_owned = tempfile::tempdir().unwrap();
    let data = root_owned.path().join("data");
    let err = s.fails(&at_start(&at, &data, &port), 2);
    assert!(err.contains("would belong to root"), "{err}");
    assert!(!data.exists());

    // Item 4: a `backup` binary the server's user cannot run.
    let private = tempfile::tempdir().unwrap();
    let bin = private_binary(private.path());
    let target = PgCluster::owned_tempdir("pg-r28-");
    let data = target.path().join("data");
    let out = std::process::Command::new(&bin)
        .env("BACKUP_REPOSITORY", &s.repo)
        .env("BACKUP_PASSWORD", crate::util::PASSWORD)
        .env("HOME", s.dir.path())
        .args(at_start(&at, &data, &port))
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("restore_command would fail") && err.contains("Permission denied"),
        "{err}"
    );
    assert!(untouched(&data), "nothing is written when a check fails");
    assert!(!key_file(&data).exists());
    // Item 4: the port is taken.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().port().to_string();
    let err = s.fails(&at_start(&at, &data, &busy), 2);
    assert!(err.contains("choose a free port"), "{err}");
    assert!(untouched(&data));

    // Item 8: pause with --start stops at the target like shutdown (the
    // temporary server has no hot standby), exit 0; the next start pauses
    // there.
    let out = s.ok(&[
        "restore",
        "--at",
        &at,
        "--to",
        data.to_str().unwrap(),
        "--target-action",
        "pause",
        "--start",
        &port,
    ]);
    assert!(
        out.contains("still in recovery") && out.contains("pg_wal_replay_resume"),
        "{out}"
    );
    assert!(
        key_file(&data).exists(),
        "recovery has not ended: the key stays"
    );
    assert!(data.join("recovery.signal").exists());
    // What `pg_wal_replay_resume()` would do on a paused server: end
    // recovery there (the harness waits for recovery to end).
    let auto = data.join("postgresql.auto.conf");
    let conf = std::fs::read_to_string(&auto).unwrap();
    assert!(conf.contains("recovery_target_action = 'pause'"), "{conf}");
    std::fs::write(
        &auto,
        conf.replace(
            "recovery_target_action = 'pause'",
            "recovery_target_action = 'promote'",
        ),
    )
    .unwrap();
    let copy = PgCluster::start_existing(target, data.clone());
    assert_eq!(markers(&copy), (last - 10, last - 10));
    wait_for(60, "the key file to go", || !key_file(&data).exists());
    drop(copy);

    // Item 9: a restore point that does not exist, with --start.
    let target = PgCluster::owned_tempdir("pg-r28-");
    let data = target.path().join("data");
    let err = s.fails(
        &[
            "restore",
            "--at-name",
            "no-such-point",
            "--to",
            data.to_str().unwrap(),
            "--start",
            &port,
        ],
        1,
    );
    let first = err.lines().next().unwrap_or_default();
    assert!(
        first.starts_with("error: restore target: PostgreSQL: FATAL:")
            && first.contains("recovery ended before configured recovery target was reached"),
        "{err}"
    );
    assert!(err.contains("was removed"), "{err}");
    assert!(
        err.contains(&first_base[..8]),
        "names the older base: {err}"
    );
    assert!(untouched(&data), "a failed recovery leaves nothing behind");
    assert!(!key_file(&data).exists());
    // Item 9: a transaction before the newest base.
    let err = s.fails(
        &[
            "restore",
            "--at-xid",
            &xid,
            "--to",
            data.to_str().unwrap(),
            "--start",
            &port,
        ],
        1,
    );
    assert!(
        err.starts_with("error: restore target: PostgreSQL: FATAL:"),
        "{err}"
    );
    assert!(
        err.contains("--at-xid, --at-name and --immediate take unless a snapshot is named")
            && err.contains(&first_base[..8]),
        "{err}"
    );
    // Named, the older base reaches it.
    let out = s.ok(&[
        "restore",
        &first_base,
        "--at-xid",
        &xid,
        "--to",
        data.to_str().unwrap(),
        "--start",
        &port,
    ]);
    assert!(out.contains("recovery target reached"), "{out}");
    let copy = PgCluster::start_existing(target, data);
    assert_eq!(
        markers(&copy).0,
        1,
        "the transaction's marker, and nothing after"
    );
}

/// Moves the cluster's WAL on by `n` segments (a row, then a switch).
fn switch_segments(pg: &PgCluster, n: usize) {
    for _ in 0..n {
        pg.psql(
            "postgres",
            "INSERT INTO markers DEFAULT VALUES; SELECT pg_switch_wal();",
        );
    }
}

/// Item 2: a receiver started for the first time after the base backup,
/// when the server has moved on by several segments, streams from the
/// base's end so that the base is restorable; when the server no longer
/// has that WAL, the stretch is a recorded gap and `backup pitr` names it
/// (instead of "no base snapshot precedes the captured changes").
#[test]
fn r28_2_a_first_receiver_covers_the_newest_base_or_names_the_gap() {
    let pg = cluster(&[]);
    // Covered: the server still has the WAL since the base.
    let s = readable_scratch();
    s.ok(&["create", &format!("{}?mode=physical", pg.url("postgres"))]);
    switch_segments(&pg, 3);
    let receiver = Receiver::start(&s, &repl_url(&pg));
    wait_streaming(&pg);
    write_markers(&pg, 1);
    let (_, last) = markers(&pg);
    wait_captured(&pg);
    receiver.stop();
    let listing = s.json(&["pitr"]);
    let windows = listing[0]["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 1, "{listing}");
    assert_eq!(
        windows[0]["bases"].as_array().unwrap().len(),
        1,
        "{listing}"
    );
    assert!(
        listing[0]["gaps"].as_array().unwrap().is_empty(),
        "{listing}"
    );
    let at = time_after_marker(&pg, last - 5);
    let target = PgCluster::owned_tempdir("pg-r28-");
    let data = target.path().join("data");
    s.ok(&[
        "restore",
        "--at",
        &at,
        "--to",
        data.to_str().unwrap(),
        "--dry-run",
    ]);

    // Not covered: the slot is gone and a checkpoint removed the WAL.
    pg.psql("postgres", "SELECT pg_drop_replication_slot('backup')");
    let s = readable_scratch();
    s.ok(&["create", &format!("{}?mode=physical", pg.url("postgres"))]);
    switch_segments(&pg, 3);
    pg.psql("postgres", "CHECKPOINT");
    let receiver = Receiver::start(&s, &repl_url(&pg));
    wait_for(60, "the gap record", || {
        s.json(&["pitr"])[0]["gaps"]
            .as_array()
            .is_some_and(|g| !g.is_empty())
    });
    // WAL after the gap, so that the listing names the gap rather than
    // "no WAL captured" (a loaded machine may not have streamed any yet).
    switch_segments(&pg, 1);
    wait_for(60, "WAL stored after the gap", || {
        s.json(&["pitr"])[0]["pieces"].as_u64().unwrap_or(0) > 0
    });
    receiver.stop();
    let listing = s.json(&["pitr"]);
    let gap = &listing[0]["gaps"][0];
    assert!(
        gap["reason"]
            .as_str()
            .unwrap()
            .contains("between the newest base backup's end and the receiver's first start"),
        "{listing}"
    );
    let human = s.ok(&["pitr"]);
    assert!(
        human.contains("no restorable window: a gap: base backup"),
        "{human}"
    );
    // Item 5: a restore names the empty stretch in PostgreSQL's terms.
    let err = s.fails(
        &[
            "restore",
            "--at-lsn",
            "FF/0",
            "--to",
            "/tmp/r28-never-written",
        ],
        2,
    );
    assert!(
        err.contains("no WAL is captured after the base backup's end")
            && err.contains("on timeline 1"),
        "{err}"
    );
    assert!(!err.contains(" 1/0/"), "{err}");
    assert!(!human.contains("no base snapshot precedes"), "{human}");
}

/// Item 5, messages: a receiver whose role lacks REPLICATION is told what
/// it may not do (stream WAL, not "start a base backup"); a local base
/// backup whose role may not create a slot says why in one plain warning
/// line; a missing password says so, not "check that the server is
/// running".
#[test]
fn r28_5_refusals_say_what_was_refused() {
    let pg = cluster(&[]);
    pg.psql(
        "postgres",
        &format!(
            "CREATE ROLE plain LOGIN PASSWORD '{}'",
            backup_testkit::postgres::PASSWORD
        ),
    );
    let s = Scratch::new();
    s.init();
    let plain = format!(
        "postgres://plain:{}@127.0.0.1:{}/postgres",
        backup_testkit::postgres::PASSWORD,
        pg.port()
    );
    let err = s.fails(&["wal", "receive", &plain], 1);
    assert!(err.contains("may not stream WAL"), "{err}");
    assert!(!err.contains("base backup"), "{err}");

    let err = s.fails(
        &[
            "create",
            &plain,
            "--mode",
            "physical",
            "--pgdata",
            pg.data_dir().to_str().unwrap(),
        ],
        1,
    );
    let warnings: Vec<&str> = err
        .lines()
        .filter(|l| l.contains("replication slot"))
        .collect();
    assert_eq!(warnings.len(), 1, "{err}");
    assert!(
        warnings[0]
            .starts_with("warning: Could not create a temporary replication slot as `plain`")
            && warnings[0].contains("REPLICATION attribute"),
        "{err}"
    );
    assert!(
        !err.contains("free a slot") && !err.contains('\x1b') && !err.contains("db error"),
        "{err}"
    );

    let no_password = format!("postgres://postgres@127.0.0.1:{}/postgres", pg.port());
    let err = s.fails(&["create", &no_password], 1);
    assert!(err.contains("password"), "{err}");
    assert!(!err.contains("check that the server is running"), "{err}");
}
