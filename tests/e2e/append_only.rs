//! The storage option `append-only`: a client that backs up and restores,
//! incrementally, and refuses every operation that deletes or replaces
//! files before it changes anything.

use std::collections::BTreeSet;
use std::hash::{DefaultHasher, Hash, Hasher};
use std::path::PathBuf;

use crate::util::{assert_same_tree, files_under, random_bytes, write, Scratch};

/// Each file with a hash of its bytes.
fn hashed(files: Vec<PathBuf>) -> BTreeSet<(String, u64)> {
    files
        .into_iter()
        .map(|p| {
            let mut h = DefaultHasher::new();
            std::fs::read(&p).unwrap().hash(&mut h);
            (p.display().to_string(), h.finish())
        })
        .collect()
}

/// Every file of the repository but locks and audit records (a refused
/// operation is audited: a record is added).
fn contents(s: &Scratch) -> BTreeSet<(String, u64)> {
    let (locks, audit) = (s.path("repo/locks"), s.path("repo/audit"));
    hashed(
        files_under(&s.path("repo"))
            .into_iter()
            .filter(|p| !p.starts_with(&locks) && !p.starts_with(&audit))
            .collect(),
    )
}

/// The audit records, which may only grow.
fn audit(s: &Scratch) -> BTreeSet<(String, u64)> {
    hashed(files_under(&s.path("repo/audit")))
}

#[test]
fn append_only_clients_add_and_restore_and_refuse_to_delete() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    write(&src.join("big.bin"), &random_bytes(2_000_000, 3));
    write(&src.join("etc/app.conf"), b"port = 80\n");
    let ao = |args: &[&str]| {
        let mut all = vec!["-o", "append-only=true"];
        all.extend_from_slice(args);
        all.into_iter().map(str::to_owned).collect::<Vec<_>>()
    };
    let run = |args: &[String]| s.cmd().args(args).output().unwrap();
    let json = |args: &[String]| -> serde_json::Value {
        let out = run(args);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };

    // Backups add, the second one only what changed; a restore reads.
    let first = json(&ao(&["--json", "create", src.to_str().unwrap()]));
    write(&src.join("etc/app.conf"), b"port = 8080\n");
    let second = json(&ao(&["--json", "create", src.to_str().unwrap()]));
    let added = |v: &serde_json::Value| v["snapshot"]["stats"]["bytes_added"].as_u64().unwrap();
    assert!(added(&second) < added(&first) / 100, "{first} {second}");
    let target = s.path("restored");
    let out = run(&ao(&[
        "restore",
        "latest",
        "--to",
        target.to_str().unwrap(),
    ]));
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_same_tree(&src, &target);
    let out = run(&ao(&["forget", "--keep-last", "1", "--dry-run"]));
    assert!(out.status.success(), "a dry run deletes nothing");

    // Everything that deletes or replaces is refused before it starts.
    let before = contents(&s);
    let audited = audit(&s);
    let key = s.json(&["key", "list"])[0]["id"]
        .as_str()
        .unwrap()
        .to_owned();
    let snapshot = second["id"].as_str().unwrap().to_owned();
    let refused: [&[&str]; 8] = [
        &["forget", "--keep-last", "1"],
        &["forget", "--keep-last", "1", "--prune"],
        &["prune"],
        &["tag", "add", "keep", "--snapshot", &snapshot],
        &["rewrite", "--exclude", "etc/**", "--reason", "test"],
        &["repair", "index"],
        &["key", "remove", &key[..8]],
        &["key", "passwd"],
    ];
    for args in refused {
        let out = s
            .cmd()
            .env("BACKUP_NEW_PASSWORD", "another password")
            .args(ao(args))
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "`{}` ran: {err}", args.join(" "));
        assert!(err.contains("append-only"), "`{}`: {err}", args.join(" "));
        assert_eq!(
            contents(&s),
            before,
            "`{}` changed the repository",
            args.join(" ")
        );
    }
    assert!(audit(&s).is_superset(&audited), "an audit record changed");
    assert!(s.ok(&["list"]).lines().count() >= 2);

    // A full client still can.
    s.ok(&["forget", "--keep-last", "1", "--prune"]);
    assert_eq!(s.json(&["list"]).as_array().unwrap().len(), 1);
}
