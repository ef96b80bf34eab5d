//! Round-trip fidelity of file backups.

use std::ffi::OsStr;
use std::fs;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use crate::util::{assert_same_tree, is_root, random_bytes, set_mtime, write, Scratch};

/// A tree exercising every kind of entry and attribute the files source
/// keeps.
pub fn fidelity_tree(root: &Path) {
    write(&root.join("hello.txt"), b"hello world\n");
    write(&root.join("empty-file"), b"");
    write(&root.join("big/random.bin"), &random_bytes(9_000_000, 1));
    write(
        &root.join("big/text.log"),
        &b"2024-01-01 INFO request served\n".repeat(200_000),
    );
    write(&root.join("deep/a/b/c/d/e/f/leaf"), b"deep");
    fs::create_dir_all(root.join("empty-dir")).unwrap();
    fs::create_dir_all(root.join("empty-dir-2/nested-empty")).unwrap();
    write(
        &root.join("unicode/żółć-日本語-🦀.txt"),
        "ünïcödé".as_bytes(),
    );
    let raw = OsStr::from_bytes(b"latin1-\xe9t\xe9");
    write(&root.join("unicode").join(raw), b"non-utf8 name");
    write(&root.join("spaces and 'quotes' \"double\""), b"x");
    std::os::unix::fs::symlink("../hello.txt", root.join("big/link-rel")).unwrap();
    std::os::unix::fs::symlink("/etc/hostname", root.join("link-abs")).unwrap();
    std::os::unix::fs::symlink("does-not-exist", root.join("link-dangling")).unwrap();
    std::os::unix::fs::symlink("deep/a", root.join("link-to-dir")).unwrap();
    write(&root.join("modes/private"), b"secret");
    fs::set_permissions(
        root.join("modes/private"),
        fs::Permissions::from_mode(0o600),
    )
    .unwrap();
    write(&root.join("modes/script.sh"), b"#!/bin/sh\necho hi\n");
    fs::set_permissions(
        root.join("modes/script.sh"),
        fs::Permissions::from_mode(0o755),
    )
    .unwrap();
    write(&root.join("modes/setgid"), b"g");
    fs::set_permissions(
        root.join("modes/setgid"),
        fs::Permissions::from_mode(0o2750),
    )
    .unwrap();
    write(&root.join("modes/readonly-dir/file"), b"in a read-only dir");
    fs::set_permissions(
        root.join("modes/readonly-dir"),
        fs::Permissions::from_mode(0o555),
    )
    .unwrap();
    fs::create_dir_all(root.join("modes/sticky")).unwrap();
    fs::set_permissions(
        root.join("modes/sticky"),
        fs::Permissions::from_mode(0o1777),
    )
    .unwrap();
    if is_root() {
        write(&root.join("owned/by-1234"), b"owned");
        std::os::unix::fs::chown(root.join("owned/by-1234"), Some(1234), Some(5678)).unwrap();
        std::os::unix::fs::lchown(root.join("link-abs"), Some(4321), Some(8765)).unwrap();
        std::os::unix::fs::chown(root.join("owned"), Some(42), Some(43)).unwrap();
    }
    // Times last, children before parents, nanoseconds and pre-1970 included.
    set_mtime(&root.join("hello.txt"), 1_600_000_000, 123_456_789);
    set_mtime(&root.join("empty-file"), -86_400 * 365, 5);
    set_mtime(&root.join("big/link-rel"), 1_500_000_000, 1);
    set_mtime(&root.join("deep/a/b/c/d/e/f"), 1_400_000_000, 999_999_999);
    set_mtime(&root.join("empty-dir"), 1_300_000_000, 0);
    set_mtime(&root.join("modes/readonly-dir"), 1_200_000_000, 42);
}

#[test]
fn restored_tree_is_identical() {
    let s = Scratch::new();
    let src = s.path("src");
    fidelity_tree(&src);
    s.init();
    let (id, v) = s.create(&src, &["--tag", "fidelity"]);
    assert_eq!(v["snapshot"]["stats"]["files"], 12 + u64::from(is_root()));
    let out = s.path("restored");
    let text = s.ok(&["restore", &id[..10], "--to", out.to_str().unwrap()]);
    assert!(text.contains("restored snapshot"), "{text}");
    assert_same_tree(&src, &out);
    if !is_root() {
        // Without root, owners cannot be chosen: everything belongs to us.
        let me = nix::unistd::Uid::effective().as_raw();
        assert_eq!(
            std::os::unix::fs::MetadataExt::uid(&fs::metadata(out.join("hello.txt")).unwrap()),
            me
        );
    }
}

#[test]
fn subset_restore_with_include_and_exclude() {
    let s = Scratch::new();
    let src = s.path("src");
    fidelity_tree(&src);
    s.init();
    s.create(&src, &[]);
    let out = s.path("subset");
    s.ok(&[
        "restore",
        "latest",
        "--to",
        out.to_str().unwrap(),
        "--include",
        "big",
        "--include",
        "deep/a/b",
        "--exclude",
        "*.log",
    ]);
    assert!(out.join("big/random.bin").is_file());
    assert!(out
        .join("big/link-rel")
        .symlink_metadata()
        .unwrap()
        .file_type()
        .is_symlink());
    assert!(!out.join("big/text.log").exists());
    assert_eq!(
        fs::read(out.join("deep/a/b/c/d/e/f/leaf")).unwrap(),
        b"deep"
    );
    assert!(!out.join("hello.txt").exists());
    assert!(!out.join("modes").exists());
    assert_eq!(
        fs::read(out.join("big/random.bin")).unwrap(),
        fs::read(src.join("big/random.bin")).unwrap()
    );
    // The ancestors of a selected entry keep their metadata.
    let mt = |p: &Path| filetime::FileTime::from_last_modification_time(&fs::metadata(p).unwrap());
    assert_eq!(
        mt(&out.join("deep/a/b/c/d/e/f")),
        mt(&src.join("deep/a/b/c/d/e/f"))
    );
}

#[test]
fn single_file_and_excludes_at_backup() {
    let s = Scratch::new();
    let src = s.path("src");
    fidelity_tree(&src);
    s.init();
    let (_, v) = s.create(&src.join("hello.txt"), &[]);
    assert_eq!(v["snapshot"]["stats"]["files"], 1);
    let out = s.path("one");
    s.ok(&["restore", "latest", "--to", out.to_str().unwrap()]);
    assert_eq!(fs::read(out.join("hello.txt")).unwrap(), b"hello world\n");
    assert_eq!(fs::read_dir(&out).unwrap().count(), 1);

    let (id, _) = s.create(
        &src,
        &[
            "--exclude",
            "*.bin",
            "--exclude",
            "/deep/a/b",
            "--exclude",
            "unicode",
        ],
    );
    let out = s.path("excl");
    s.ok(&["restore", &id, "--to", out.to_str().unwrap()]);
    assert!(!out.join("big/random.bin").exists());
    assert!(out.join("big/text.log").exists());
    assert!(out.join("deep/a").is_dir());
    assert!(!out.join("deep/a/b").exists());
    assert!(!out.join("unicode").exists());
    let shown = s.json(&["show", &id]);
    assert_eq!(shown["snapshot"]["excludes"].as_array().unwrap().len(), 3);
}

#[test]
fn dry_runs_change_nothing() {
    let s = Scratch::new();
    let src = s.path("src");
    write(&src.join("a"), &random_bytes(2_000_000, 5));
    s.init();
    let v = s.json(&["create", src.to_str().unwrap(), "--dry-run"]);
    assert!(v["id"].is_null());
    assert!(v["snapshot"]["stats"]["bytes_added"].as_u64().unwrap() >= 2_000_000);
    assert_eq!(s.json(&["list"]).as_array().unwrap().len(), 0);
    assert!(crate::util::files_under(&Path::new(&s.repo).join("data")).is_empty());
    s.create(&src, &[]);
    let out = s.path("never");
    let v = s.json(&[
        "restore",
        "latest",
        "--to",
        out.to_str().unwrap(),
        "--dry-run",
    ]);
    assert_eq!(v["report"]["stats"]["files"], 1);
    assert_eq!(v["report"]["stats"]["bytes"], 2_000_000);
    assert!(!out.exists());
}

#[test]
fn verify_restore_test_restores_and_compares() {
    let s = Scratch::new();
    let src = s.path("src");
    fidelity_tree(&src);
    s.init();
    let (id, _) = s.create(&src, &[]);
    let scratch = s.path("scratch");
    let v = s.json(&["verify", "--restore-test", scratch.to_str().unwrap()]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(
        v["restore_test"]["differences"].as_array().unwrap().len(),
        0
    );
    assert!(v["restore_test"]["files"].as_u64().unwrap() >= 12);
    assert!(
        !scratch.exists(),
        "the scratch restore is removed after a clean test"
    );
    let kept = s.path("kept");
    let text = s.ok(&[
        "verify",
        &id[..8],
        "--restore-test",
        kept.to_str().unwrap(),
        "--keep",
    ]);
    assert!(
        text.contains("restore test") && text.contains("(kept)"),
        "{text}"
    );
    assert_same_tree(&src, &kept);

    // The comparison notices a restored file that differs from the snapshot.
    let mut data = fs::read(kept.join("big/random.bin")).unwrap();
    data[4_000_000] ^= 1;
    fs::write(kept.join("big/random.bin"), &data).unwrap();
    fs::write(kept.join("extra"), b"not in the snapshot").unwrap();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let report = rt.block_on(async {
        let sink =
            backup_storage::open(&s.repo, &backup_storage::StorageOptions::default()).unwrap();
        let repo =
            backup_core::repo::Repository::open(sink, Some(crate::util::PASSWORD.as_bytes()))
                .await
                .unwrap()
                .load_index()
                .await
                .unwrap();
        let snap = repo
            .find_snapshot(&id, &backup_core::snapshot::SnapshotFilter::default())
            .await
            .unwrap();
        let reader = backup_core::reader::SnapshotReader::new(repo, snap);
        backup_sources::files::compare_restored(&reader, &kept)
            .await
            .unwrap()
    });
    assert_eq!(report.differences.len(), 2, "{:?}", report.differences);
    assert!(report
        .differences
        .iter()
        .any(|d| d.contains("random.bin") && d.contains("content differs")));
    assert!(report
        .differences
        .iter()
        .any(|d| d.contains("extra") && d.contains("not in the snapshot")));
}
