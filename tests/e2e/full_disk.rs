//! A full disk (a small tmpfs mounted in a private mount namespace) fails
//! cleanly: a clear message, a non-zero exit, and nothing half-written
//! that looks complete.

use std::fs;
use std::process::Command;

use crate::util::{random_bytes, write, Scratch, PASSWORD};

/// Runs `script` with `sh` in a new user and mount namespace (works with
/// or without root), with a tmpfs of `size` mounted at `$MNT`.
fn in_small_fs(s: &Scratch, size: &str, script: &str) {
    let mnt = s.path("mnt");
    fs::create_dir_all(&mnt).unwrap();
    let full = format!("set -u\nmount -t tmpfs -o size={size} tmpfs \"$MNT\" || exit 99\n{script}");
    let out = Command::new("unshare")
        .args(["--user", "--map-root-user", "--mount", "sh", "-c", &full])
        .env("MNT", &mnt)
        .env("BIN", env!("CARGO_BIN_EXE_backup"))
        .env("OUT", s.dir.path())
        .env("BACKUP_PASSWORD", PASSWORD)
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
    in_small_fs(&s, "8m", &script);
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
    in_small_fs(&s, "6m", &script);
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

fn hex(b: &[u8]) -> String {
    use std::fmt::Write;
    b.iter().fold(String::new(), |mut s, x| {
        let _ = write!(s, "{x:02x}");
        s
    })
}
