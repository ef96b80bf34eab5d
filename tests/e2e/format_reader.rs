//! The repository format is documented precisely enough to read: an
//! independent Python reader written from `docs/REPOSITORY_FORMAT.md`
//! (`tests/format_reader/reader.py`) lists, checks and restores repositories
//! made by the real CLI, and its restore matches the source byte for byte.
//!
//! The interpreter comes from `BACKUP_TEST_PYTHON` or, when that is unset,
//! from `<workspace>/.venv/bin/python3`; `./scripts/test.sh` creates that
//! virtual environment with the reader's requirements.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use crate::util::{
    assert_same_tree, files_under, random_bytes, set_mtime, write, Scratch, PASSWORD,
};

fn workspace_root() -> PathBuf {
    // The e2e tests are an integration test of crates/backup-cli.
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap()
}

/// The Python interpreter of the reader's virtual environment; fails (never
/// skips) when there is none.
fn python() -> PathBuf {
    let hint = "run ./scripts/test.sh, which creates the virtual environment `.venv` with \
                tests/format_reader/requirements.txt and sets BACKUP_TEST_PYTHON";
    if let Some(p) = std::env::var_os("BACKUP_TEST_PYTHON") {
        let p = PathBuf::from(p);
        assert!(
            p.exists(),
            "BACKUP_TEST_PYTHON is {} but that file does not exist; {hint}",
            p.display()
        );
        return p;
    }
    let p = workspace_root().join(".venv/bin/python3");
    assert!(
        p.exists(),
        "no Python interpreter for the format reader: BACKUP_TEST_PYTHON is unset and {} does \
         not exist; {hint}",
        p.display()
    );
    p
}

/// Runs `tests/format_reader/SCRIPT` with `args`; returns its output
/// whatever the exit code.
fn script(name: &str, args: &[&OsStr]) -> Output {
    Command::new(python())
        .arg(workspace_root().join("tests/format_reader").join(name))
        .args(args)
        .output()
        .unwrap()
}

/// Runs the reader; returns its output whatever the exit code.
fn reader(repo: &str, password: &str, args: &[&OsStr]) -> Output {
    let mut all = vec![os(repo), os(password)];
    all.extend_from_slice(args);
    script("reader.py", &all)
}

/// Asserts that a script succeeded and parses its JSON output.
fn json_of(out: &Output, what: &str) -> serde_json::Value {
    assert!(
        out.status.success(),
        "{what} failed ({:?}):\n{}\n{}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Runs the reader, asserts success and parses its JSON output.
pub(crate) fn reader_json(repo: &str, password: &str, args: &[&OsStr]) -> serde_json::Value {
    json_of(&reader(repo, password, args), &format!("reader {args:?}"))
}

/// Runs `attack.py`: every secret of the write-only keys `writer` opens,
/// tried on every sealed object (`full` names the packs' regions).
pub(crate) fn attack_json(repo: &str, writer: &str, full: &str) -> serde_json::Value {
    json_of(
        &script("attack.py", &[os(repo), os(writer), os(full)]),
        "attack.py",
    )
}

fn os(s: &str) -> &OsStr {
    OsStr::new(s)
}

/// A tree with every kind of entry the reader must restore.
fn source_tree(root: &Path) {
    write(&root.join("hello.txt"), b"hello world\n");
    write(&root.join("empty-file"), b"");
    // Several chunks of incompressible data (stored uncompressed).
    write(
        &root.join("big/random-12m.bin"),
        &random_bytes(12_000_000, 11),
    );
    // More than 1024 chunks (random data makes chunks of about 78 KiB on
    // average with `--chunk-size 64KiB`): the node lists its content
    // through content lists.
    write(&root.join("big/long.bin"), &random_bytes(100_000_000, 12));
    // Compressible content (stored compressed).
    write(
        &root.join("logs/app.log"),
        &b"2024-01-01T00:00:00Z INFO request served in 3 ms\n".repeat(100_000),
    );
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::create_dir_all(root.join("nested/empty/dirs")).unwrap();
    let raw = OsStr::from_bytes(b"latin1-\xe9t\xe9");
    write(&root.join("names").join(raw), b"a non-UTF-8 name");
    write(
        &root.join("names").join("żółć-日本語.txt"),
        "ünïcödé".as_bytes(),
    );
    fs::create_dir_all(root.join(OsStr::from_bytes(b"dir-\xff\xfe"))).unwrap();
    write(
        &root.join(OsStr::from_bytes(b"dir-\xff\xfe")).join("inside"),
        b"in a non-UTF-8 directory",
    );
    std::os::unix::fs::symlink("../hello.txt", root.join("big/link-rel")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("link-abs")).unwrap();
    std::os::unix::fs::symlink("does-not-exist", root.join("link-dangling")).unwrap();
    std::os::unix::fs::symlink(
        OsStr::from_bytes(b"names/latin1-\xe9t\xe9"),
        root.join("link-raw"),
    )
    .unwrap();
    write(&root.join("modes/script.sh"), b"#!/bin/sh\necho hi\n");
    fs::set_permissions(
        root.join("modes/script.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    write(&root.join("modes/private"), b"secret");
    fs::set_permissions(
        root.join("modes/private"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    write(&root.join("modes/readonly-dir/file"), b"in a read-only dir");
    set_mtime(&root.join("hello.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&root.join("empty-file"), -86_400 * 365, 5);
    set_mtime(&root.join("big/link-rel"), 1_500_000_000, 1);
    set_mtime(&root.join("empty-dir"), 1_300_000_000, 0);
    fs::set_permissions(
        root.join("modes/readonly-dir"),
        fs::Permissions::from_mode(0o555),
    )
    .unwrap();
}

fn pack_files(repo: &str) -> Vec<PathBuf> {
    files_under(&Path::new(repo).join("data"))
        .into_iter()
        .filter(|p| !p.file_name().unwrap().as_bytes().starts_with(b"."))
        .collect()
}

#[test]
fn python_reader_lists_checks_and_restores_an_encrypted_repository() {
    let s = Scratch::new();
    let src = s.path("src");
    source_tree(&src);
    s.ok(&["init", "--chunk-size", "64KiB", "--pack-size", "4MiB"]);
    let cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(format!("{}/config", s.repo)).unwrap()).unwrap();
    assert_eq!(
        (&cfg["version"], &cfg["id_hash"]),
        (&3.into(), &"blake3".into()),
        "{cfg}"
    );
    let (first, _) = s.create(&src, &["--tag", "one", "--time", "2024-03-01T10:00:00Z"]);

    // A second snapshot: one file changed, one added, the rest reused from
    // the parent (including the content lists of the long file).
    write(&src.join("hello.txt"), b"hello again\n");
    write(&src.join("logs/new.log"), b"a new file\n");
    set_mtime(&src.join("hello.txt"), 1_600_000_001, 7);
    let (second, v) = s.create(&src, &["--time", "2024-03-02T10:00:00.5Z"]);
    assert!(v["snapshot"]["stats"]["files_unchanged"].as_u64().unwrap() > 0);

    // list: both snapshots, oldest first, with the ids the CLI printed.
    let list = reader_json(&s.repo, PASSWORD, &[os("list")]);
    let ids: Vec<&str> = list
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [first.as_str(), second.as_str()]);
    assert!(list[0]["time"]
        .as_str()
        .unwrap()
        .starts_with("2024-03-01T10:00:00"));
    assert!(list[1]["time"]
        .as_str()
        .unwrap()
        .starts_with("2024-03-02T10:00:00.5"));
    assert_eq!(list[0]["tags"], serde_json::json!(["one"]));

    // check: every index file loads, every pack header agrees with the index.
    let packs = pack_files(&s.repo);
    assert!(
        packs.len() > 3,
        "expected several packs, found {}",
        packs.len()
    );
    let check = reader_json(&s.repo, PASSWORD, &[os("check")]);
    assert_eq!(check["ok"], true, "{check:#}");
    assert_eq!(check["packs_indexed"].as_u64().unwrap(), packs.len() as u64);
    assert_eq!(check["unindexed_packs"], serde_json::json!([]));
    assert_eq!(check["index_files"], 2);
    assert_eq!(check["snapshots"], 2);
    let full = reader_json(&s.repo, PASSWORD, &[os("check"), os("--read-data")]);
    assert_eq!(full["ok"], true, "{full:#}");
    assert_eq!(full["blobs_read"], check["blobs_indexed"]);

    // restore of the latest snapshot: identical to the source, byte for
    // byte, with modes and modification times.
    let out = s.path("py-latest");
    let r = reader_json(
        &s.repo,
        PASSWORD,
        &[os("restore"), os(&second[..12]), out.as_os_str()],
    );
    assert!(
        r["content_lists"].as_u64().unwrap() > 0,
        "the long file should use content lists: {r:#}"
    );
    assert_same_tree(&src, &out);

    // restore of the first snapshot: identical to the CLI's own restore.
    let py_first = s.path("py-first");
    reader_json(
        &s.repo,
        PASSWORD,
        &[os("restore"), os(&first), py_first.as_os_str()],
    );
    let cli_first = s.path("cli-first");
    s.ok(&["restore", &first, "--to", cli_first.to_str().unwrap()]);
    assert_same_tree(&cli_first, &py_first);
    assert_eq!(
        fs::read(py_first.join("hello.txt")).unwrap(),
        b"hello world\n"
    );

    // The chunker as specified cuts the same chunks as the writer.
    let chunks = reader_json(
        &s.repo,
        PASSWORD,
        &[
            os("chunks"),
            os(&second),
            os("big/random-12m.bin"),
            src.join("big/random-12m.bin").as_os_str(),
        ],
    );
    assert_eq!(chunks["match"], true, "{chunks:#}");
    assert!(chunks["chunks"].as_u64().unwrap() > 10, "{chunks:#}");

    // A wrong password is refused.
    let bad = reader(&s.repo, "not the password", &[os("list")]);
    assert_eq!(bad.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&bad.stderr).contains("wrong password"));

    // Damage is found: a changed byte inside a blob (with --read-data) and
    // inside a pack header (from the header alone).
    let victim = packs
        .iter()
        .max_by_key(|p| fs::metadata(p).unwrap().len())
        .unwrap();
    let mut bytes = fs::read(victim).unwrap();
    bytes[100] ^= 0x01;
    fs::write(victim, &bytes).unwrap();
    let damaged = reader(&s.repo, PASSWORD, &[os("check"), os("--read-data")]);
    assert_eq!(damaged.status.code(), Some(3));
    let n = bytes.len();
    bytes[n - 10] ^= 0x01;
    fs::write(victim, &bytes).unwrap();
    let damaged = reader(&s.repo, PASSWORD, &[os("check")]);
    assert_eq!(damaged.status.code(), Some(3));
    let report: serde_json::Value = serde_json::from_slice(&damaged.stdout).unwrap();
    let name = victim.file_name().unwrap().to_str().unwrap();
    assert!(
        report["problems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|p| p.as_str().unwrap().contains(name)),
        "{report:#}"
    );

    // Let the scratch directory be removed without root.
    for dir in [&src, &out, &py_first, &cli_first] {
        fs::set_permissions(
            dir.join("modes/readonly-dir"),
            fs::Permissions::from_mode(0o755),
        )
        .unwrap();
    }
}

#[test]
fn python_reader_reads_an_unencrypted_repository() {
    let s = Scratch::new();
    let src = s.path("src");
    write(&src.join("a.txt"), b"plain text\n");
    write(&src.join("sub/random.bin"), &random_bytes(3_000_000, 5));
    write(
        &src.join("sub/text.log"),
        &b"compressible line\n".repeat(50_000),
    );
    fs::create_dir_all(src.join("empty")).unwrap();
    std::os::unix::fs::symlink("a.txt", src.join("link")).unwrap();
    write(&src.join(OsStr::from_bytes(b"raw-\x80")), b"x");
    // A format version 1 repository (HMAC-SHA-256 blob ids), as older
    // builds write; the encrypted test above reads a version 3 one (BLAKE3).
    s.ok(&[
        "init",
        "--insecure-no-encryption",
        "--id-hash",
        "hmac-sha256",
    ]);
    let cfg: serde_json::Value =
        serde_json::from_slice(&fs::read(format!("{}/config", s.repo)).unwrap()).unwrap();
    assert_eq!(cfg["version"], 1, "{cfg}");
    let (id, _) = s.create(&src, &[]);
    // The password is not needed without encryption.
    let list = reader_json(&s.repo, "ignored", &[os("list")]);
    assert_eq!(list[0]["id"], id.as_str());
    let check = reader_json(&s.repo, "ignored", &[os("check"), os("--read-data")]);
    assert_eq!(check["ok"], true, "{check:#}");
    let out = s.path("restored");
    reader_json(
        &s.repo,
        "ignored",
        &[os("restore"), os("latest"), out.as_os_str()],
    );
    assert_same_tree(&src, &out);
}

/// The chunk-size rule of `REPOSITORY_FORMAT.md` §5 is enforced by the
/// program and by the independent reader alike.
#[test]
fn chunk_size_rule_is_checked_by_both_readers() {
    let s = Scratch::new();
    s.ok(&["init", "--insecure-no-encryption"]);
    let cfg = Path::new(&s.repo).join("config");
    let text = fs::read_to_string(&cfg).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v["chunker"]["min_size"] = serde_json::json!(262_145);
    fs::write(&cfg, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    let out = s.run(&["list"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chunker"), "{err}");
    let out = reader(&s.repo, "ignored", &[os("list")]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("chunk-size rule"), "{err}");
}
