//! A full disk (a small tmpfs mounted in a private mount namespace) fails
//! cleanly: a clear message, a non-zero exit, and nothing half-written
//! that looks complete; a capture stopped by it resumes, once there is
//! room, without a gap or a duplicate.

use std::fs;
use std::process::Command;

use crate::util::{random_bytes, write, Scratch, PASSWORD};

/// Runs `script` with `sh` in a new user and mount namespace (works with
/// or without root), with a tmpfs of `size` mounted at `$MNT`, the program
/// at `$BIN`, the scratch directory at `$OUT` and `env` added.
fn in_small_fs(s: &Scratch, size: &str, script: &str, env: &[(&str, &str)]) {
    let mnt = s.path("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let full = format!("set -u\nmount -t tmpfs -o size={size} tmpfs \"$MNT\" || exit 99\n{script}");
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &full])
        .env("MNT", &mnt)
        .env("BIN", env!("CARGO_BIN_EXE_backup"))
        .env("OUT", s.dir.path())
        .env("BACKUP_PASSWORD", PASSWORD)
        .env("HOME", s.dir.path())
        .envs(env.iter().copied())
        .output()
        .expect("`unshare` (util-linux) is needed for the full-disk tests");
    assert!(
        out.status.code() != Some(99),
        "cannot mount a tmpfs in a user namespace (unprivileged user namespaces must be enabled): {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "script failed: {out:?}");
}

fn read(s: &Scratch, name: &str) -> String {
    fs::read_to_string(s.path(name)).unwrap_or_default()
}

#[test]
fn repository_on_a_full_disk() {
    let s = Scratch::new();
    let src = s.path("src");
    write(&src.join("big.bin"), &random_bytes(24 * 1024 * 1024, 7));
    write(&src.join("small.txt"), b"small");
    let script = format!(
        r#"export BACKUP_REPOSITORY="$MNT/repo"
"$BIN" init >/dev/null 2>&1 || exit 98
"$BIN" create "{src}" >"$OUT/create.out" 2>"$OUT/create.err"; echo $? >"$OUT/create.code"
"$BIN" --json list >"$OUT/list.json" 2>&1; echo $? >"$OUT/list.code"
"$BIN" --json verify >"$OUT/verify.json" 2>&1; echo $? >"$OUT/verify.code"
"#,
        src = src.display()
    );
    in_small_fs(&s, "8m", &script, &[]);
    assert_eq!(
        read(&s, "create.code").trim(),
        "1",
        "{}",
        read(&s, "create.err")
    );
    assert!(
        read(&s, "create.err").contains("No space left on device"),
        "{}",
        read(&s, "create.err")
    );
    assert_eq!(
        read(&s, "list.code").trim(),
        "0",
        "{}",
        read(&s, "list.json")
    );
    let list: serde_json::Value = serde_json::from_str(&read(&s, "list.json")).unwrap();
    assert_eq!(list.as_array().unwrap().len(), 0);
    assert_eq!(
        read(&s, "verify.code").trim(),
        "0",
        "{}",
        read(&s, "verify.json")
    );
}

#[test]
fn restore_onto_a_full_disk() {
    let s = Scratch::new();
    let src = s.path("src");
    for i in 0..20 {
        write(
            &src.join(format!("a/small-{i:02}")),
            &random_bytes(100_000, i),
        );
    }
    write(&src.join("b/big.bin"), &random_bytes(12 * 1024 * 1024, 99));
    s.init();
    s.create(&src, &[]);
    let script = format!(
        r#"export BACKUP_REPOSITORY="{repo}"
"$BIN" restore latest --to "$MNT/out" >"$OUT/restore.out" 2>"$OUT/restore.err"; echo $? >"$OUT/restore.code"
cd "$MNT/out" && find . -type f -exec sha256sum {{}} + >"$OUT/restored.sums"
"#,
        repo = s.repo
    );
    in_small_fs(&s, "6m", &script, &[]);
    assert_eq!(
        read(&s, "restore.code").trim(),
        "1",
        "{}",
        read(&s, "restore.err")
    );
    assert!(
        read(&s, "restore.err").contains("No space left on device"),
        "{}",
        read(&s, "restore.err")
    );
    // Whatever was left behind is complete and correct; the file that did
    // not fit was removed.
    let sums = read(&s, "restored.sums");
    assert!(!sums.contains("big.bin"), "{sums}");
    for line in sums.lines() {
        let (sum, path) = line.split_once("  ").unwrap();
        let original = fs::read(src.join(path.trim_start_matches("./"))).unwrap();
        use sha2::Digest;
        assert_eq!(
            sum,
            hex(&sha2::Sha256::digest(&original)),
            "{path} restored wrongly"
        );
    }
}

/// A Redis follower whose repository fills up: it ends with a clear
/// error and a non-zero exit while the writes go on; once there is room
/// again, a new follower continues the stream where the stored part ends
/// (the primary's backlog still holds the rest): one window and no gap,
/// `verify --read-data` passes, and a restore to the end holds every
/// write exactly once.
#[test]
fn capture_onto_a_full_disk_resumes_without_a_gap() {
    use backup_testkit::redis::RedisServer;
    use std::sync::atomic::{AtomicBool, Ordering};

    let mut s = Scratch::new();
    let redis = RedisServer::start();
    let url = redis.url();
    let exists = |name: &str| s.path(name).exists();
    // `WAIT 1 ms`: whether the follower acknowledged every write so far
    // as stored.
    let stored = |con: &mut redis::Connection| -> bool {
        redis::cmd("WAIT")
            .arg(1)
            .arg(2000)
            .query::<i64>(con)
            .unwrap()
            == 1
    };
    let script = r#"export BACKUP_REPOSITORY="$MNT/repo"
wait_for() { i=0; while [ ! -e "$OUT/$1" ]; do i=$((i+1)); [ $i -gt 1200 ] && exit 96; sleep 0.1; done; }
"$BIN" init >/dev/null 2>&1 || exit 98
"$BIN" create "$URL" >"$OUT/base.out" 2>&1 || exit 97
"$BIN" redis follow "$URL" --slice-time 200ms >/dev/null 2>"$OUT/follow1.err" &
pid=$!
wait_for fill
dd if=/dev/zero of="$MNT/filler" bs=64k >/dev/null 2>&1
i=0; while kill -0 $pid 2>/dev/null && [ $i -lt 1200 ]; do i=$((i+1)); sleep 0.1; done
if kill -0 $pid 2>/dev/null; then echo running >"$OUT/follow1.code"; kill -9 $pid; fi
wait $pid; echo $? >>"$OUT/follow1.code"
rm -f "$MNT/filler"
"$BIN" redis follow "$URL" --slice-time 200ms >/dev/null 2>"$OUT/follow2.err" &
pid=$!
wait_for stop
kill -TERM $pid; wait $pid; echo $? >"$OUT/follow2.code"
cp -a "$MNT/repo" "$OUT/repo"
"#;
    let done = AtomicBool::new(false);
    let (writes, end) = std::thread::scope(|t| {
        t.spawn(|| {
            in_small_fs(&s, "8m", script, &[("URL", &url)]);
            done.store(true, Ordering::SeqCst);
        });
        let mut con = redis.connection();
        let mut writes = 0u64;
        let incr = |con: &mut redis::Connection, writes: &mut u64| {
            redis::cmd("INCR").arg("counter").exec(con).unwrap();
            *writes += 1;
        };
        // Writes stored by the first follower, then the disk fills while
        // they go on.
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        loop {
            incr(&mut con, &mut writes);
            if writes >= 50 && stored(&mut con) {
                break;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "the first follower stored nothing"
            );
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        write(&s.path("fill"), b"");
        while !exists("follow1.code") && !done.load(Ordering::SeqCst) {
            incr(&mut con, &mut writes);
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
        // The second follower stores them all, and more.
        for _ in 0..50 {
            incr(&mut con, &mut writes);
        }
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
        while !stored(&mut con) {
            assert!(
                std::time::Instant::now() < deadline && !done.load(Ordering::SeqCst),
                "the second follower did not catch up: {}",
                read(&s, "follow2.err")
            );
        }
        let end = crate::redis_pitr::repl_offset(&mut con);
        write(&s.path("stop"), b"");
        (writes, end)
    });
    let code = read(&s, "follow1.code");
    let err = read(&s, "follow1.err");
    assert!(
        !code.contains("running"),
        "the follower went on on a full disk: {err}"
    );
    assert_ne!(code.trim(), "0", "{err}");
    assert!(err.contains("No space left on device"), "{err}");
    assert_eq!(
        read(&s, "follow2.code").trim(),
        "0",
        "{}",
        read(&s, "follow2.err")
    );

    s.repo = s.path("repo").display().to_string();
    s.ok(&["verify", "--read-data"]);
    let pitr = s.json(&["pitr"]);
    let stream = &pitr.as_array().unwrap()[0];
    assert_eq!(stream["capture"], "redis-stream", "{pitr:#}");
    assert_eq!(stream["windows"].as_array().unwrap().len(), 1, "{pitr:#}");
    assert!(stream["gaps"].as_array().unwrap().is_empty(), "{pitr:#}");
    assert_eq!(crate::redis_pitr::counter_restored_at(&s, end), writes);
}

fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}
