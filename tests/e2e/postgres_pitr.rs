//! PostgreSQL point-in-time recovery against throwaway clusters: WAL
//! streamed by `backup wal receive`, restores to chosen times and
//! positions checked by marker rows, archive mode, refusals.

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use backup_testkit::postgres::{PgCluster, PgOptions, PASSWORD};

use crate::util::Scratch;

pub(crate) fn repl_url(pg: &PgCluster) -> String {
    format!("postgres://repl:{PASSWORD}@127.0.0.1:{}/", pg.port())
}

pub(crate) fn cluster(settings: &[&str]) -> PgCluster {
    let pg = PgCluster::start_with(&PgOptions {
        settings: settings.iter().map(|s| (*s).to_owned()).collect(),
        ..PgOptions::default()
    });
    pg.psql(
        "postgres",
        &format!(
            "CREATE ROLE repl LOGIN REPLICATION PASSWORD '{PASSWORD}';\n\
             CREATE TABLE markers (id bigserial PRIMARY KEY, ts timestamptz NOT NULL DEFAULT clock_timestamp());"
        ),
    );
    pg
}

/// `backup wal receive` as a child process.
pub(crate) struct Receiver(Child);

impl Receiver {
    pub(crate) fn start(s: &Scratch, url: &str) -> Self {
        Self::start_with(s, url, crate::util::PASSWORD)
    }

    /// [`Receiver::start`] opening the repository with `password`.
    pub(crate) fn start_with(s: &Scratch, url: &str, password: &str) -> Self {
        let child = Command::new(env!("CARGO_BIN_EXE_backup"))
            .args(["wal", "receive", url, "--flush-interval", "1s"])
            .env("BACKUP_REPOSITORY", &s.repo)
            .env("BACKUP_PASSWORD", password)
            .env("HOME", s.dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        Receiver(child)
    }

    /// SIGTERM: stores what was received, then exits 0.
    pub(crate) fn stop(mut self) {
        let pid = self.0.id().to_string();
        Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        let status = self.0.wait().unwrap();
        assert!(status.success(), "the receiver ended with {status}");
    }

    fn kill(mut self) {
        self.0.kill().unwrap();
        self.0.wait().unwrap();
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Waits (a minute at most) until a receiver streams from `pg`.
pub(crate) fn wait_streaming(pg: &PgCluster) {
    poll(pg, "a receiver to stream", || {
        pg.psql(
            "postgres",
            "SELECT count(*) > 0 FROM pg_stat_replication WHERE state = 'streaming'",
        )
    });
}

/// Waits (a minute at most) until the receiver has stored, and confirmed
/// to the server, all WAL written before the call: a synchronous commit
/// flushes the server's WAL up to here, and the slot's position passes it
/// once the receiver has stored it (it confirms only what is stored).
pub(crate) fn wait_captured(pg: &PgCluster) {
    let out = pg.psql(
        "postgres",
        "SET synchronous_commit = on; SELECT txid_current(); SELECT pg_current_wal_flush_lsn();",
    );
    let target = out.lines().last().unwrap_or_default().trim().to_owned();
    poll(
        pg,
        &format!("the receiver to store WAL up to {target}"),
        || {
            pg.psql(
            "postgres",
            &format!(
                "SELECT coalesce(bool_or(restart_lsn >= '{target}'), false) FROM pg_replication_slots WHERE slot_name = 'backup'"
            ),
        )
        },
    );
}

/// Polls `query` (psql's output `t` or `f`) every 100 ms until `t` (for
/// up to two minutes: a receiver may be in its reconnection backoff on a
/// loaded machine).
fn poll(pg: &PgCluster, what: &str, query: impl Fn() -> String) {
    let start = std::time::Instant::now();
    while query().trim() != "t" {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "waited two minutes in vain for {what}:\n{}",
            pg.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A throwaway cluster (with `settings`) whose WAL `backup wal receive`
/// captures into a new repository, and a physical base backup taken once
/// the receiver runs.
pub(crate) fn receiving_with_base(settings: &[&str]) -> (PgCluster, Scratch, Receiver) {
    let pg = cluster(settings);
    let s = Scratch::new();
    s.init();
    let receiver = Receiver::start(&s, &repl_url(&pg));
    wait_streaming(&pg);
    s.ok(&["create", &format!("{}?mode=physical", pg.url("postgres"))]);
    (pg, s, receiver)
}

/// Inserts a marker every 20 ms for `seconds` (pgbench with one client).
pub(crate) fn write_markers(pg: &PgCluster, seconds: u32) {
    let script = pg.dir().join("markers.sql");
    std::fs::write(
        &script,
        "INSERT INTO markers DEFAULT VALUES;\n\\sleep 20 ms\n",
    )
    .unwrap();
    let out = pg
        .tool("pgbench")
        .args([
            "-n",
            "-c",
            "1",
            "-T",
            &seconds.to_string(),
            "-f",
            script.to_str().unwrap(),
            "postgres",
        ])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// A time half-way between marker `id` and the next: markers up to `id`
/// committed before it, the next after.
pub(crate) fn time_after_marker(pg: &PgCluster, id: u64) -> String {
    pg.psql(
        "postgres",
        &format!(
            "SELECT to_char((a.ts + (b.ts - a.ts) / 2) AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') \
             FROM markers a, markers b WHERE a.id = {id} AND b.id = {id} + 1"
        ),
    )
    .trim()
    .to_owned()
}

/// Restores into a new directory with `args` and starts the result.
pub(crate) fn restore_and_start(s: &Scratch, args: &[&str]) -> PgCluster {
    let target = PgCluster::owned_tempdir("pg-pitr-");
    let data = target.path().join("data");
    let mut all = vec!["restore", "--to", data.to_str().unwrap()];
    all.extend_from_slice(args);
    let said = s.ok(&all);
    let ran = all.join(" ");
    // A server that does not start panics with its log, and a backtrace
    // follows. CI keeps only the end of a long output, so what the restore
    // said, the windows the repository lists and, once more, why each
    // start failed are printed after it all.
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        PgCluster::start_existing(target, data)
    }))
    .unwrap_or_else(|panic| {
        let message = panic.downcast_ref::<String>().map_or("", String::as_str);
        let why = message
            .rfind(backup_testkit::postgres::WHY_START_FAILED)
            .map_or(message, |i| &message[i..]);
        eprintln!(
            "`backup {ran}` said:\n{said}\n`backup pitr` lists:\n{}\n{why}",
            s.ok(&["pitr"])
        );
        std::panic::resume_unwind(panic)
    })
}

/// A repository and its password-less key file in a new directory
/// (`repo`, `repo.key`) for the server's user, who runs `archive_command`
/// and `restore_command`: the directory, a scratch on the repository
/// (initialised), the key file. Chown the directory to that user once
/// the test's own files are in it.
pub(crate) fn server_repository(prefix: &str) -> (tempfile::TempDir, Scratch, std::path::PathBuf) {
    let home = PgCluster::owned_tempdir(prefix);
    let key = home.path().join("repo.key");
    let s = Scratch::with_repo(home.path().join("repo").display().to_string(), Vec::new());
    s.init();
    s.ok(&[
        "key",
        "export",
        "--to",
        key.to_str().unwrap(),
        "--no-password",
    ]);
    (home, s, key)
}

pub(crate) fn markers(pg: &PgCluster) -> (u64, u64) {
    let row = pg.psql(
        "postgres",
        "SELECT count(*), coalesce(max(id), 0) FROM markers",
    );
    let v: Vec<u64> = row.trim().split('|').map(|x| x.parse().unwrap()).collect();
    (v[0], v[1])
}

#[test]
fn restores_to_times_and_positions_hold_exactly_the_markers_before_them() {
    let pg = cluster(&[]);
    let s = Scratch::new();
    s.init();
    let receiver = Receiver::start(&s, &repl_url(&pg));
    wait_streaming(&pg);
    let base = s.json(&["create", &format!("{}?mode=physical", pg.url("postgres"))]);
    let base_id = base["id"].as_str().unwrap().to_owned();
    // pgbench beside the markers.
    let init = pg
        .tool("pgbench")
        .args(["-i", "-s", "1", "-q", "postgres"])
        .output()
        .unwrap();
    assert!(init.status.success());
    let load = pg
        .tool("pgbench")
        .args(["-n", "-c", "2", "-T", "6", "postgres"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    write_markers(&pg, 6);
    let _ = load.wait_with_output();
    // pgbench can exit with a statement still running on the server,
    // which then commits after it: wait until its sessions are gone, so
    // that every marker commits before the position below.
    let start = std::time::Instant::now();
    while pg
        .psql(
            "postgres",
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = 'pgbench'",
        )
        .trim()
        != "0"
    {
        assert!(start.elapsed().as_secs() < 30, "pgbench sessions stayed");
        std::thread::sleep(Duration::from_millis(50));
    }
    let lsn_marker = 120;
    // The insert position: the test server commits asynchronously
    // (synchronous_commit=off), so the write position can still be short
    // of the last marker's commit record.
    let lsn = pg
        .psql("postgres", "SELECT pg_current_wal_insert_lsn()")
        .trim()
        .to_owned();
    let _ = lsn_marker;
    let (total, _) = markers(&pg);
    assert!(total > 150, "only {total} markers");
    write_markers(&pg, 1);
    wait_captured(&pg);
    receiver.stop();

    // The independent reader of the format finds one window of timeline 1
    // from the stored pieces, and assembles a segment byte for byte as
    // `wal fetch` does.
    let cluster_id = system_id(&pg);
    let listing =
        crate::format_reader::reader_json(&s.repo, crate::util::PASSWORD, &["captures".as_ref()]);
    let windows = &listing["postgres_windows"][&cluster_id]["00000001"];
    assert_eq!(windows.as_array().map(Vec::len), Some(1), "{listing}");
    let segment = pg
        .psql("postgres", &format!("SELECT pg_walfile_name('{lsn}')"))
        .trim()
        .to_owned();
    let by_reader = s.dir.path().join("by-reader");
    let by_fetch = s.dir.path().join("by-fetch");
    crate::format_reader::reader_json(
        &s.repo,
        crate::util::PASSWORD,
        &[
            "wal-segment".as_ref(),
            cluster_id.as_ref(),
            segment.as_ref(),
            "16777216".as_ref(),
            by_reader.as_os_str(),
        ],
    );
    s.ok(&[
        "wal",
        "fetch",
        &segment,
        by_fetch.to_str().unwrap(),
        "--cluster",
        &cluster_id,
        "--prefetch",
        "0",
    ]);
    assert!(std::fs::read(&by_reader).unwrap() == std::fs::read(&by_fetch).unwrap());

    // A restore to a time leaves the first segments replay asks for in
    // pg_wal/.backup-prefetch, owned like the data directory and byte for
    // byte what `wal fetch` writes.
    let staged_to = PgCluster::owned_tempdir("pg-pitr-");
    let data = staged_to.path().join("data");
    let at = time_after_marker(&pg, 40);
    s.ok(&["restore", "--to", data.to_str().unwrap(), "--at", &at]);
    let staged: Vec<_> = std::fs::read_dir(data.join("pg_wal/.backup-prefetch"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(!staged.is_empty());
    for p in &staged {
        let name = p.file_name().unwrap().to_str().unwrap();
        assert_eq!(name.len(), 24, "{name}");
        let own = s.dir.path().join(format!("own-{name}"));
        s.ok(&[
            "wal",
            "fetch",
            name,
            own.to_str().unwrap(),
            "--cluster",
            &cluster_id,
            "--prefetch",
            "0",
        ]);
        assert!(
            std::fs::read(p).unwrap() == std::fs::read(&own).unwrap(),
            "{name}"
        );
        use std::os::unix::fs::MetadataExt as _;
        assert_eq!(
            std::fs::metadata(p).unwrap().uid(),
            std::fs::metadata(&data).unwrap().uid(),
            "{name}"
        );
    }
    drop(staged_to);

    for k in [40, 100, total - 20] {
        let at = time_after_marker(&pg, k);
        let copy = restore_and_start(&s, &["--at", &at]);
        assert_eq!(markers(&copy), (k, k), "restored to {at}, after marker {k}");
    }
    // A position: everything written before it.
    let copy = restore_and_start(&s, &["--at-lsn", &lsn]);
    let (n, _) = markers(&copy);
    assert_eq!(n, total, "restored to LSN {lsn}: {}", copy.log());
    // The base backup alone: no marker (they came after it).
    let copy = restore_and_start(&s, &[&base_id, "--immediate"]);
    assert_eq!(markers(&copy), (0, 0));
}

#[test]
fn refusals_name_the_restorable_window() {
    let pg = cluster(&[]);
    let s = Scratch::new();
    s.init();
    let url = format!("{}?mode=physical", pg.url("postgres"));
    // No base backup yet.
    let target = PgCluster::owned_tempdir("pg-pitr-");
    let data = target.path().join("data");
    let receiver = Receiver::start(&s, &repl_url(&pg));
    wait_streaming(&pg);
    s.ok(&["create", &url]);
    write_markers(&pg, 2);
    wait_captured(&pg);
    receiver.stop();
    // In the future.
    let err = s.fails(
        &[
            "restore",
            "--to",
            data.to_str().unwrap(),
            "--at",
            "2999-01-01T00:00:00Z",
        ],
        2,
    );
    assert!(err.contains("in the future"), "{err}");
    // Before the oldest base backup.
    let err = s.fails(
        &[
            "restore",
            "--to",
            data.to_str().unwrap(),
            "--at",
            "2001-01-01T00:00:00Z",
        ],
        2,
    );
    assert!(err.contains("before the oldest base backup"), "{err}");
    // After the captured WAL (the receiver stopped): names the window.
    write_markers(&pg, 3);
    let later = pg.psql("postgres", "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS\"Z\"')").trim().to_owned();
    std::thread::sleep(Duration::from_secs(1));
    let err = s.fails(
        &["restore", "--to", data.to_str().unwrap(), "--at", &later],
        2,
    );
    assert!(
        err.contains("not restorable") && err.contains("WAL is captured without a gap"),
        "{err}"
    );
    assert!(!data.exists(), "nothing is written when the check fails");
}

#[test]
fn a_killed_receiver_resumes_without_gap_or_duplicate() {
    let (pg, s, receiver) = receiving_with_base(&[]);
    write_markers(&pg, 2);
    std::thread::sleep(Duration::from_millis(1500));
    receiver.kill();
    write_markers(&pg, 2);
    let receiver = Receiver::start(&s, &repl_url(&pg));
    write_markers(&pg, 2);
    wait_captured(&pg);
    receiver.stop();
    // The pieces are contiguous: each starts where the one before ends.
    let names: Vec<String> = std::fs::read_dir(Path::new(&s.repo).join("captures"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut wal: Vec<(String, String)> = names
        .iter()
        .filter_map(|n| {
            let p: Vec<&str> = n.split('.').collect();
            (p.len() == 4 && p[1].len() == 24).then(|| (p[1].to_owned(), p[2].to_owned()))
        })
        .collect();
    wal.sort();
    assert!(wal.len() >= 3, "{wal:?}");
    for w in wal.windows(2) {
        assert_eq!(w[0].1, w[1].0, "gap or overlap between pieces: {wal:?}");
    }
    let (total, last) = markers(&pg);
    let at = time_after_marker(&pg, last - 5);
    let _ = total;
    let copy = restore_and_start(&s, &["--at", &at]);
    assert_eq!(markers(&copy), (last - 5, last - 5));
}

/// The order the README shows: a base backup first, then `wal receive`
/// (which creates its slot after the backup ended, inside the base's last
/// segment).
#[test]
fn a_receiver_started_after_the_base_backup_restores_from_it() {
    let pg = cluster(&[]);
    let s = Scratch::new();
    s.init();
    s.ok(&["create", &format!("{}?mode=physical", pg.url("postgres"))]);
    let receiver = Receiver::start(&s, &repl_url(&pg));
    wait_streaming(&pg);
    write_markers(&pg, 2);
    wait_captured(&pg);
    receiver.stop();
    let (_, last) = markers(&pg);
    let at = time_after_marker(&pg, last - 10);
    let copy = restore_and_start(&s, &["--at", &at]);
    assert_eq!(markers(&copy), (last - 10, last - 10));
    // The WAL's packs are listed by its capture records, not left over
    // from an interrupted backup, also when one snapshot is verified.
    for args in [&["verify"][..], &["verify", "latest"][..]] {
        let out = s.ok(args);
        assert!(
            out.contains("no problems found") && !out.contains("not referenced"),
            "{out}"
        );
    }
}

/// A time inside the window but after the last commit (a quiet
/// database): PostgreSQL refuses to end a recovery that found no commit
/// after its target, so `--start` moves the target to the last record,
/// whose state is the state at that time.
#[test]
fn a_time_after_the_last_commit_restores_with_start() {
    let (pg, s, receiver) = receiving_with_base(&[]);
    write_markers(&pg, 1);
    let (_, last) = markers(&pg);
    let quiet = pg
        .psql(
            "postgres",
            "SELECT to_char((clock_timestamp() + interval '1 second') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
        )
        .trim()
        .to_owned();
    std::thread::sleep(Duration::from_secs(3));
    // WAL without a commit, captured after the target.
    pg.psql("postgres", "CHECKPOINT");
    std::thread::sleep(Duration::from_secs(3));
    receiver.stop();
    let target = PgCluster::owned_tempdir("pg-pitr-");
    let data = target.path().join("data");
    let port = backup_testkit::free_port().to_string();
    let out = s.ok(&[
        "restore",
        "--to",
        data.to_str().unwrap(),
        "--at",
        &quiet,
        "--start",
        &port,
    ]);
    assert!(
        out.contains("no transaction committed between the target time"),
        "{out}"
    );
    let copy = PgCluster::start_existing(target, data);
    assert_eq!(markers(&copy), (last, last));
}

/// A key `restore_command` cannot open the repository with stops the
/// recovery with the reason in the server log: the server does not
/// promote what it replayed so far, and the failed fetch is recorded
/// (so that `--start` never takes the short recovery for a quiet one).
#[test]
fn a_wrong_key_stops_recovery_without_promoting_a_partial_history() {
    let (pg, s, receiver) = receiving_with_base(&[]);
    // More segments than a restore stages ahead (8), so that recovery
    // needs `restore_command` to open the repository.
    for _ in 0..12 {
        pg.psql(
            "postgres",
            "INSERT INTO markers DEFAULT VALUES; SELECT pg_switch_wal();",
        );
    }
    write_markers(&pg, 1);
    wait_captured(&pg);
    receiver.stop();
    let (_, last) = markers(&pg);
    let at = time_after_marker(&pg, last - 3);
    let target = PgCluster::owned_tempdir("pg-pitr-");
    let data = target.path().join("data");
    s.ok(&["restore", "--to", data.to_str().unwrap(), "--at", &at]);
    let key = std::path::PathBuf::from(format!("{}.backup-key", data.display()));
    assert!(key.exists());
    std::fs::write(&key, b"not a key file\n").unwrap();
    let log_path = target.path().join("server.log");
    let log = std::fs::File::create(&log_path).unwrap();
    let mut cmd = if nix::unistd::Uid::effective().is_root() {
        let _ = Command::new("chown")
            .args(["postgres", log_path.to_str().unwrap()])
            .status();
        let mut c = Command::new("setpriv");
        c.args([
            "--reuid=postgres",
            "--regid=postgres",
            "--init-groups",
            "--reset-env",
        ]);
        c.arg(backup_testkit::postgres::bindir().join("postgres"));
        c
    } else {
        Command::new(backup_testkit::postgres::bindir().join("postgres"))
    };
    let port = backup_testkit::free_port().to_string();
    let mut server = cmd
        .arg("-D")
        .arg(&data)
        .args(["-p", &port, "-k"])
        .arg(target.path())
        .args(["-c", "listen_addresses=127.0.0.1"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().unwrap())
        .stderr(log)
        .spawn()
        .unwrap();
    let started = std::time::Instant::now();
    let status = loop {
        if let Some(st) = server.try_wait().unwrap() {
            break st;
        }
        if started.elapsed() > Duration::from_secs(120) {
            let _ = server.kill();
            panic!(
                "the server did not stop:\n{}",
                std::fs::read_to_string(&log_path).unwrap_or_default()
            );
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let text = std::fs::read_to_string(&log_path).unwrap();
    assert!(!status.success(), "{text}");
    assert!(
        text.contains("key file"),
        "the reason is in the log:\n{text}"
    );
    assert!(
        text.contains("recovery ended before configured recovery target was reached"),
        "{text}"
    );
    assert!(!text.contains("selected new timeline"), "{text}");
    assert!(
        data.join("pg_wal/.backup-prefetch/.failed").exists(),
        "the failed fetch is recorded"
    );
}

#[test]
fn archive_mode_pushes_and_fetches_each_segment_once() {
    let (home, s, key) = server_repository("pg-archive-");
    let repo = home.path().join("repo");
    // Run as root, the tests' own commands below create directories in
    // the repository; they must stay writable by `postgres`.
    let chown = Command::new("chown")
        .args(["-R", "postgres:postgres", home.path().to_str().unwrap()])
        .status()
        .unwrap();
    assert!(chown.success());
    let bin = env!("CARGO_BIN_EXE_backup");
    let archive = format!(
        "archive_command={bin} --repo {} --key-file {} --quiet wal push %p",
        repo.display(),
        key.display()
    );
    let pg = cluster(&["archive_mode=on", &archive]);
    s.ok(&["create", &format!("{}?mode=physical", pg.url("postgres"))]);
    write_markers(&pg, 2);
    let (_, last) = markers(&pg);
    let switched = pg
        .psql("postgres", "SELECT pg_walfile_name(pg_switch_wal())")
        .trim()
        .to_owned();
    let start = std::time::Instant::now();
    while pg
        .psql(
            "postgres",
            "SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver",
        )
        .trim()
        < switched.as_str()
    {
        assert!(
            start.elapsed().as_secs() < 60,
            "archiving did not reach {switched}: {}",
            pg.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
    let at = time_after_marker(&pg, last - 3);
    let copy = restore_and_start(&s, &["--at", &at]);
    assert_eq!(markers(&copy), (last - 3, last - 3));
    // recovery_end_command removed what was fetched ahead and not used.
    assert!(!copy.data_dir().join("pg_wal/.backup-prefetch").exists());

    // A fetch leaves the next complete segments in .backup-prefetch, byte
    // for byte what a fetch of their own writes; the next call takes its
    // segment from there without opening the repository.
    let seg = |back: u64| {
        let n = u64::from_str_radix(&switched[16..], 16).unwrap() - back;
        format!("{}{n:08X}", &switched[..16])
    };
    let cluster_id = system_id(&pg);
    let spool = home.path().join("spool");
    std::fs::create_dir(&spool).unwrap();
    let fetch = |name: &str, dest: &std::path::Path, prefetch: &str| {
        s.ok(&[
            "wal",
            "fetch",
            name,
            dest.to_str().unwrap(),
            "--cluster",
            &cluster_id,
            "--prefetch",
            prefetch,
        ]);
    };
    fetch(&seg(2), &spool.join("RECOVERYXLOG"), "2");
    // The segments ahead come from a background process, which stays a
    // while for recovery to ask for more.
    let running = spool.join(".backup-prefetch/.running");
    let start = std::time::Instant::now();
    while !spool.join(".backup-prefetch").join(seg(0)).exists() {
        assert!(start.elapsed().as_secs() < 60, "nothing was fetched ahead");
        std::thread::sleep(Duration::from_millis(50));
    }
    for back in [1, 0] {
        let ahead = spool.join(".backup-prefetch").join(seg(back));
        let own = home.path().join(format!("own-{back}"));
        fetch(&seg(back), &own, "0");
        assert_eq!(
            std::fs::read(&ahead).unwrap(),
            std::fs::read(&own).unwrap(),
            "{}",
            seg(back)
        );
    }
    let out = Command::new(bin)
        .args([
            "--repo",
            "/nonexistent/repository",
            "--quiet",
            "wal",
            "fetch",
        ])
        .arg(seg(1))
        .arg(spool.join("RECOVERYXLOG"))
        .args(["--cluster", &cluster_id])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert!(!spool.join(".backup-prefetch").join(seg(1)).exists());
    // Told that recovery moved on, the background process finds nothing
    // more stored to fetch ahead and ends.
    let start = std::time::Instant::now();
    while running.exists() {
        assert!(
            start.elapsed().as_secs() < 30,
            "the background fetch did not end"
        );
        std::thread::sleep(Duration::from_millis(50));
    }

    // Pushing the same segment again succeeds; other bytes under its name
    // are refused.
    let segment = pg.data_dir().join("pg_wal").join(&switched);
    let copy_path = home.path().join(&switched);
    if segment.exists() {
        std::fs::copy(&segment, &copy_path).unwrap();
    } else {
        s.ok(&[
            "wal",
            "fetch",
            &switched,
            copy_path.to_str().unwrap(),
            "--cluster",
            &system_id(&pg),
        ]);
    }
    s.ok(&[
        "wal",
        "push",
        copy_path.to_str().unwrap(),
        "--cluster",
        &cluster_id,
    ]);
    let mut bytes = std::fs::read(&copy_path).unwrap();
    bytes[1000] ^= 1;
    std::fs::write(&copy_path, bytes).unwrap();
    let err = s.fails(
        &[
            "wal",
            "push",
            copy_path.to_str().unwrap(),
            "--cluster",
            &cluster_id,
        ],
        1,
    );
    assert!(err.contains("stored already with other content"), "{err}");
}

fn system_id(pg: &PgCluster) -> String {
    pg.psql(
        "postgres",
        "SELECT system_identifier FROM pg_control_system()",
    )
    .trim()
    .to_owned()
}

#[test]
fn an_invalidated_slot_is_a_recorded_gap_and_restores_inside_it_are_refused() {
    let (pg, s, receiver) = receiving_with_base(&[
        "max_slot_wal_keep_size=16MB",
        "wal_keep_size=0",
        "min_wal_size=32MB",
        "max_wal_size=32MB",
    ]);
    write_markers(&pg, 1);
    wait_captured(&pg);
    receiver.stop();
    // While nobody receives: far more WAL than the slot may hold.
    write_markers(&pg, 1);
    let (_, inside) = markers(&pg);
    for _ in 0..4 {
        pg.psql(
            "postgres",
            "CREATE TABLE IF NOT EXISTS filler AS SELECT 1 AS x; \
             INSERT INTO filler SELECT g FROM generate_series(1, 400000) g; CHECKPOINT;",
        );
    }
    let status = pg.psql(
        "postgres",
        "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'backup'",
    );
    assert_eq!(
        status.trim(),
        "lost",
        "the slot should have been invalidated"
    );
    let receiver = Receiver::start(&s, &repl_url(&pg));
    write_markers(&pg, 1);
    wait_captured(&pg);
    receiver.stop();
    let at = time_after_marker(&pg, inside - 2);
    let target = PgCluster::owned_tempdir("pg-pitr-");
    let data = target.path().join("data");
    let err = s.fails(&["restore", "--to", data.to_str().unwrap(), "--at", &at], 2);
    assert!(
        err.contains("is missing") && err.contains("not restorable"),
        "{err}"
    );
}

/// Markers whose time is before `at` in `pg` (for clusters whose ids are
/// not contiguous).
fn markers_before(pg: &PgCluster, at: &str) -> u64 {
    pg.psql(
        "postgres",
        &format!("SELECT count(*) FROM markers WHERE ts < '{at}'"),
    )
    .trim()
    .parse()
    .unwrap()
}

#[test]
fn timelines_are_followed_to_a_promoted_copy_and_back() {
    let (pg, s, receiver) = receiving_with_base(&[]);
    write_markers(&pg, 2);
    let (_, fork_after) = markers(&pg);
    let fork_at = time_after_marker(&pg, fork_after - 30);
    wait_captured(&pg);
    receiver.stop();
    // A copy restored to the fork time and promoted: timeline 2.
    let promoted = restore_and_start(&s, &["--at", &fork_at]);
    assert_eq!(
        promoted
            .psql(
                "postgres",
                "SELECT timeline_id FROM pg_control_checkpoint()"
            )
            .trim(),
        "2"
    );
    let receiver = Receiver::start(&s, &repl_url(&promoted));
    wait_streaming(&promoted);
    write_markers(&promoted, 2);
    let n2: u64 = promoted
        .psql("postgres", "SELECT count(*) FROM markers")
        .trim()
        .parse()
        .unwrap();
    let at2 = promoted
        .psql("postgres", "SELECT to_char((max(ts) - interval '300 milliseconds') AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"') FROM markers")
        .trim()
        .to_owned();
    wait_captured(&promoted);
    receiver.stop();
    assert!(n2 > fork_after - 30, "the promoted copy wrote nothing");
    // Issue 28 item 10: `backup pitr` lists timeline 2's window with the
    // timeline-1 base it restores from.
    let listing = s.json(&["pitr", "--source", "postgres"]);
    let windows = listing[0]["windows"].as_array().unwrap();
    let on_two: Vec<&serde_json::Value> = windows.iter().filter(|w| w["timeline"] == 2).collect();
    assert!(!on_two.is_empty(), "{listing}");
    for w in on_two {
        assert!(
            !w["bases"].as_array().unwrap().is_empty(),
            "a window on timeline 2 without the bases it inherits: {listing}"
        );
    }

    // A time on timeline 2: the base on timeline 1, its WAL to the fork,
    // timeline 2's after.
    let copy = restore_and_start(&s, &["--at", &at2]);
    let (got, _) = markers(&copy);
    assert_eq!(
        got,
        markers_before(&promoted, &at2),
        "restored to {at2} on timeline 2"
    );
    // A time after the fork on timeline 1: only along timeline 1.
    let at1 = time_after_marker(&pg, fork_after - 5);
    let copy = restore_and_start(&s, &["--at", &at1, "--timeline", "1"]);
    assert_eq!(
        markers(&copy),
        (fork_after - 5, fork_after - 5),
        "restored to {at1} on timeline 1"
    );
}

fn capture_count(s: &Scratch) -> usize {
    std::fs::read_dir(Path::new(&s.repo).join("captures"))
        .unwrap()
        .filter(|e| {
            !e.as_ref()
                .unwrap()
                .file_name()
                .to_string_lossy()
                .starts_with('.')
        })
        .count()
}

#[test]
fn retention_keeps_the_window_base_and_prunes_only_unneeded_wal() {
    let pg = cluster(&[]);
    let s = Scratch::new();
    s.init();
    let receiver = Receiver::start(&s, &repl_url(&pg));
    wait_streaming(&pg);
    let physical = format!("{}?mode=physical", pg.url("postgres"));
    let first = s.json(&["create", &physical])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    write_markers(&pg, 1);
    let (_, before_second) = markers(&pg);
    let between = time_after_marker(&pg, before_second - 2);
    // Several segments of WAL between the two base backups.
    for _ in 0..3 {
        pg.psql("postgres", "SELECT pg_switch_wal()");
        write_markers(&pg, 1);
    }
    std::thread::sleep(Duration::from_secs(10));
    let second = s.json(&["create", &physical])["id"]
        .as_str()
        .unwrap()
        .to_owned();
    write_markers(&pg, 2);
    let (_, last) = markers(&pg);
    wait_captured(&pg);
    receiver.stop();

    // --keep-within keeps the base that every point of the period is
    // replayed from, although --keep-last alone would drop it.
    let plan = s.json(&[
        "forget",
        "--keep-last",
        "1",
        "--keep-within",
        "8s",
        "--dry-run",
    ]);
    let decisions = plan["decisions"].as_array().unwrap();
    let kept_first = decisions
        .iter()
        .find(|d| d["id"].as_str() == Some(first.as_str()))
        .unwrap();
    assert_eq!(kept_first["keep"], true, "{plan}");
    assert!(
        kept_first["reasons"]
            .to_string()
            .contains("point-in-time window"),
        "{plan}"
    );

    // A dry run says what WAL goes and changes nothing.
    let pieces = capture_count(&s);
    let dry = s.ok(&["forget", &first, "--prune", "--dry-run"]);
    assert!(dry.contains("would remove postgres-wal"), "{dry}");
    assert_eq!(capture_count(&s), pieces);
    let restored = restore_and_start(&s, &["--at", &between]);
    assert_eq!(markers(&restored), (before_second - 2, before_second - 2));
    drop(restored);

    // Forgetting the first base removes the WAL only it needed; the second
    // base and every point after it stay restorable.
    let out = s.json(&["forget", &first, "--prune"]);
    let expired = &out["prune"]["captures_expired"][0];
    assert_eq!(expired["kind"], "postgres-wal", "{out}");
    assert!(expired["pieces"].as_u64().unwrap() > 0, "{out}");
    assert!(capture_count(&s) < pieces);
    s.ok(&["verify"]);
    // `backup pitr` reports one window, from the second base on; a restore
    // at its very end works.
    let listing = s.json(&["pitr", "--source", "postgres"]);
    let clusters: Vec<&serde_json::Value> = listing
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["kind"] == "postgres")
        .collect();
    assert_eq!(clusters.len(), 1, "{listing}");
    let windows = clusters[0]["windows"].as_array().unwrap();
    assert_eq!(windows.len(), 1, "{listing}");
    assert_eq!(
        windows[0]["bases"],
        serde_json::json!([second]),
        "{listing}"
    );
    let human = s.ok(&["pitr"]);
    assert!(human.contains("postgres"), "{human}");
    let at = time_after_marker(&pg, last - 1);
    let copy = restore_and_start(&s, &["--at", &at]);
    assert_eq!(markers(&copy), (last - 1, last - 1));
    let err = s.fails(
        &["restore", "--to", "/tmp/never-written", "--at", &between],
        2,
    );
    assert!(err.contains("before the oldest base backup"), "{err}");
}
