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

/// The IAM policy the README gives an append-only host, enforced by moto:
/// the host backs up (its lock files come and go), and the same
/// credentials without the option cannot delete a snapshot or a pack.
#[test]
fn the_readme_iam_policy_lets_a_host_back_up_and_not_delete() {
    use backup_testkit::moto::{MotoServer, BUCKET};
    let moto = MotoServer::start();
    let s = Scratch::with_repo(moto.url("repo"), moto.env());
    s.ok(&["init"]);
    let (id, secret) = moto.iam_user_with(
        "web-1",
        &[
            (
                &["s3:GetObject", "s3:PutObject", "s3:ListBucket"],
                &[
                    &format!("arn:aws:s3:::{BUCKET}"),
                    &format!("arn:aws:s3:::{BUCKET}/repo/*"),
                ],
            ),
            (
                &["s3:DeleteObject"],
                &[&format!("arn:aws:s3:::{BUCKET}/repo/locks/*")],
            ),
        ],
    );
    let src = s.path("src");
    write(&src.join("a.bin"), &random_bytes(200_000, 1));
    let as_host = |args: &[&str]| {
        moto.enforce_iam(true);
        let out = s
            .cmd()
            .env("AWS_ACCESS_KEY_ID", &id)
            .env("AWS_SECRET_ACCESS_KEY", &secret)
            .args(args)
            .output()
            .unwrap();
        moto.enforce_iam(false);
        out
    };
    let src_arg = src.to_str().unwrap();
    // The first backup has a file the second no longer has.
    write(&src.join("once.bin"), &random_bytes(100_000, 2));
    for round in 0..2 {
        if round == 1 {
            std::fs::remove_file(src.join("once.bin")).unwrap();
        }
        let out = as_host(&["-o", "append-only=true", "create", src_arg]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    assert!(
        moto.objects(BUCKET, "repo/locks/").is_empty(),
        "the host's locks stayed"
    );
    let before: BTreeSet<String> = moto
        .objects(BUCKET, "repo/")
        .into_iter()
        .map(|(k, _)| k)
        .filter(|k| !k.starts_with("repo/locks/") && !k.starts_with("repo/audit/"))
        .collect();
    // A thief with the host's credentials and a client without the
    // option: storage refuses the deletes of a snapshot, and (once a full
    // host forgot the first snapshot) of the data only it used.
    let out = as_host(&["forget", "--keep-last", "1"]);
    assert!(
        !out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = s.json(&["list"]);
    assert_eq!(listed.as_array().unwrap().len(), 2, "{listed}");
    s.ok(&["forget", "--keep-last", "1"]);
    for args in [
        &["prune"][..],
        &["forget", "--keep-last", "1", "--prune"][..],
    ] {
        let out = as_host(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "`{}` ran: {err}", args.join(" "));
        assert!(
            err.contains("denied") || err.contains("Denied") || err.contains("403"),
            "`{}`: {err}",
            args.join(" ")
        );
    }
    let after: BTreeSet<String> = moto
        .objects(BUCKET, "repo/")
        .into_iter()
        .map(|(k, _)| k)
        .collect();
    let lost: Vec<&String> = before
        .difference(&after)
        .filter(|k| !k.starts_with("repo/snapshots/"))
        .collect();
    assert!(lost.is_empty(), "deleted through the policy: {lost:?}");
    s.ok(&["verify", "--read-data"]);
    let out = s.ok(&["prune"]);
    assert!(out.contains("prune: "), "{out}");
    let target = s.path("restored");
    s.ok(&["restore", "latest", "--to", target.to_str().unwrap()]);
    assert_same_tree(&src, &target);
}
