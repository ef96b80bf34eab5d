//! Cold storage tiers against moto (S3 with storage classes and
//! `RestoreObject`, started by the test): data packs in an archive class,
//! everything browsing reads in `STANDARD`, and browsing never reads a
//! cold object.

use std::collections::BTreeSet;

use backup_testkit::moto::MotoServer;

use crate::util::{random_bytes, write, Scratch};

/// A repository in moto with a small tree of files; returns the scratch
/// directory (the source is `src`).
fn cold_repo(server: &MotoServer, prefix: &str) -> Scratch {
    let s = Scratch::with_repo(server.url(prefix), server.env());
    let src = s.path("src");
    write(&src.join("a.bin"), &random_bytes(300_000, 1));
    write(&src.join("docs/b.txt"), b"hello cold storage\n");
    write(&src.join("docs/c.bin"), &random_bytes(200_000, 2));
    s.ok(&["init"]);
    s
}

/// The storage class of every object of the repository below `prefix`,
/// keyed by the path relative to the repository.
fn classes(server: &MotoServer, prefix: &str) -> Vec<(String, String)> {
    server
        .storage_classes(&format!("{prefix}/"))
        .into_iter()
        .map(|(k, c)| (k[prefix.len() + 1..].to_owned(), c))
        .collect()
}

/// Keys under `data/` in an archive class.
fn cold_packs(classes: &[(String, String)]) -> BTreeSet<String> {
    classes
        .iter()
        .filter(|(k, c)| k.starts_with("data/") && (c == "GLACIER" || c == "DEEP_ARCHIVE"))
        .map(|(k, _)| k.clone())
        .collect()
}

/// Borrowed arguments.
fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// GET requests (whole or ranged) of any of `keys` among `requests`.
fn gets_of<'a>(requests: &'a [String], prefix: &str, keys: &BTreeSet<String>) -> Vec<&'a str> {
    requests
        .iter()
        .filter(|r| r.starts_with("GET "))
        .filter(|r| keys.iter().any(|k| r.contains(&format!("/{prefix}/{k}"))))
        .map(String::as_str)
        .collect()
}

#[test]
fn cold_data_packs_land_in_their_class_and_browsing_never_reads_them() {
    let server = MotoServer::start();
    let s = cold_repo(&server, "repo");
    let src = s.path("src");
    let o = ["-o", "s3.data-storage-class=GLACIER"];
    let create = |extra: &[&str]| {
        let mut a: Vec<&str> = o.to_vec();
        a.push("create");
        a.push(src.to_str().unwrap());
        a.extend_from_slice(extra);
        s.ok(&a)
    };
    create(&[]);
    write(&src.join("docs/d.bin"), &random_bytes(100_000, 3));
    create(&[]);

    let all = classes(&server, "repo");
    let cold = cold_packs(&all);
    assert!(!cold.is_empty(), "no data pack in GLACIER: {all:?}");
    // Tree packs, the index, snapshots, keys and config stay readable.
    for (key, class) in &all {
        if !cold.contains(key) {
            assert_eq!(class, "STANDARD", "{key} is in {class}");
        }
    }
    assert!(
        all.iter()
            .any(|(k, c)| k.starts_with("data/") && c == "STANDARD"),
        "tree packs must stay in STANDARD: {all:?}"
    );
    assert!(all.iter().any(|(k, _)| k.starts_with("index/")));
    assert!(all.iter().any(|(k, _)| k.starts_with("snapshots/")));

    // Browsing and a verify without --read-data read no cold object.
    let before = server.requests().len();
    s.ok(&["list"]);
    let listed = s.ok(&["ls", "latest", "--recursive"]);
    assert!(listed.contains("/docs/d.bin"), "{listed}");
    s.ok(&["find", "b.txt"]);
    let snaps: Vec<String> = s
        .json(&["list"])
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v["id"].as_str().unwrap().to_owned())
        .collect();
    let diff = s.ok(&["diff", &snaps[0], &snaps[1]]);
    assert!(diff.contains("d.bin"), "{diff}");
    let verify = s.ok(&["verify"]);
    assert!(verify.contains("no problems found"), "{verify}");
    let requests = server.requests();
    let reads = gets_of(&requests[before..], "repo", &cold);
    assert!(reads.is_empty(), "cold packs were read: {reads:?}");
    assert!(
        requests[before..].iter().any(|r| r.starts_with("GET ")),
        "the request log shows no GET at all: {:?}",
        &requests[before..]
    );
}

#[test]
fn cold_bad_storage_class_is_refused() {
    let server = MotoServer::start();
    let s = cold_repo(&server, "bad");
    let err = s.fails(&["-o", "s3.data-storage-class=FROZEN", "list"], 2);
    assert!(err.contains("DEEP_ARCHIVE"), "{err}");
}

#[test]
fn cold_tier_moves_data_packs_of_old_snapshots() {
    let server = MotoServer::start();
    let s = cold_repo(&server, "tier");
    let src = s.path("src");
    let young = s.path("young");
    write(&young.join("new.bin"), &random_bytes(250_000, 9));
    s.ok(&[
        "create",
        src.to_str().unwrap(),
        "--time",
        "2020-01-01T00:00:00Z",
    ]);
    s.ok(&["create", young.to_str().unwrap()]);
    let data_in = |class: &str| {
        classes(&server, "tier")
            .iter()
            .filter(|(k, c)| k.starts_with("data/") && c == class)
            .count()
    };
    assert_eq!(data_in("GLACIER"), 0);

    let dry = s.json(&[
        "tier",
        "--older-than",
        "90d",
        "--class",
        "GLACIER",
        "--dry-run",
    ]);
    assert!(dry["moved"].as_u64().unwrap() >= 1, "{dry}");
    assert_eq!(dry["dry_run"], true);
    assert_eq!(data_in("GLACIER"), 0, "a dry run moved packs");

    let moved = s.json(&["tier", "--older-than", "90d", "--class", "GLACIER"]);
    assert_eq!(moved["moved"], dry["moved"], "{moved}");
    assert_eq!(data_in("GLACIER") as u64, moved["moved"].as_u64().unwrap());
    // Repeating moves nothing more.
    let again = s.json(&["tier", "--older-than", "90d", "--class", "GLACIER"]);
    assert_eq!(again["moved"], 0, "{again}");
    assert_eq!(again["already_cold"], moved["moved"], "{again}");

    // Browsing still works and reads nothing cold.
    let before = server.requests().len();
    s.ok(&["ls", "latest", "--recursive"]);
    s.ok(&["verify"]);
    let cold = cold_packs(&classes(&server, "tier"));
    let requests = server.requests();
    let reads = gets_of(&requests[before..], "tier", &cold);
    assert!(reads.is_empty(), "cold packs were read: {reads:?}");

    // Without an age, the young snapshot's data moves too.
    let all = s.json(&["-o", "s3.data-storage-class=STANDARD_IA", "tier"]);
    assert!(all["moved"].as_u64().unwrap() >= 1, "{all}");
    assert!(data_in("STANDARD_IA") >= 1);
    assert_eq!(data_in("GLACIER") as u64, moved["moved"].as_u64().unwrap());

    let err = s.fails(&["tier"], 2);
    assert!(err.contains("--class"), "{err}");
}

#[test]
fn cold_restore_thaws_archived_packs_and_resumes() {
    let server = MotoServer::start();
    let s = cold_repo(&server, "thaw");
    let src = s.path("src");
    let o = ["-o", "s3.data-storage-class=GLACIER"];
    let with =
        |args: &[&str]| -> Vec<String> { o.iter().chain(args).map(|a| (*a).to_owned()).collect() };
    let run_ok = |args: &[&str]| {
        let a = with(args);
        s.ok(&a.iter().map(String::as_str).collect::<Vec<_>>())
    };
    run_ok(&["create", src.to_str().unwrap()]);
    let cold = cold_packs(&classes(&server, "thaw"));
    assert!(!cold.is_empty());
    let out = s.path("out");
    let out_s = out.to_str().unwrap();

    // Without the option or a --cold flag the restore meets the archive
    // class and says what to do.
    let out0 = s.path("out0");
    let err = s.fails(&["restore", "latest", "--to", out0.to_str().unwrap()], 1);
    assert!(err.contains("archive"), "{err}");
    assert!(err.contains("--cold-wait"), "{err}");

    // A dry run counts what must be thawed and requests nothing.
    let dry = run_ok(&[
        "restore",
        "latest",
        "--to",
        out_s,
        "--dry-run",
        "--cold-tier",
        "bulk",
    ]);
    assert!(
        dry.contains(&format!("{} of ", cold.len())) && dry.contains("Bulk retrieval"),
        "{dry}"
    );
    let restores = |server: &MotoServer| {
        server
            .requests()
            .iter()
            .filter(|r| r.starts_with("POST ") && r.contains("?restore"))
            .count()
    };
    assert_eq!(restores(&server), 0, "a dry run requested thaws");

    // Without --cold-wait: thaws are requested, the restore stops with a
    // message to run it again, and the requests are kept.
    let a = with(&["restore", "latest", "--to", out_s]);
    let err = s.fails(&a.iter().map(String::as_str).collect::<Vec<_>>(), 1);
    assert!(err.contains("run the same command again later"), "{err}");
    assert_eq!(restores(&server), cold.len());
    assert!(!out.join("a.bin").exists());

    // moto thaws at once: the second run finds every pack readable,
    // requests nothing new and restores.
    let done = run_ok(&["restore", "latest", "--to", out_s]);
    assert!(done.contains("are readable"), "{done}");
    assert_eq!(restores(&server), cold.len(), "thaws were requested again");
    crate::util::assert_same_tree(&src, &out);

    // --cold-wait: requests, waits for the thaw, restores in one run.
    let s2 = cold_repo(&server, "wait");
    let src2 = s2.path("src");
    s2.ok(&[
        "-o",
        "s3.data-storage-class=DEEP_ARCHIVE",
        "create",
        src2.to_str().unwrap(),
    ]);
    let out2 = s2.path("out");
    s2.ok(&[
        "restore",
        "latest",
        "--to",
        out2.to_str().unwrap(),
        "--cold-wait",
        "20s",
    ]);
    crate::util::assert_same_tree(&src2, &out2);

    let err = s.fails(
        &["restore", "latest", "--to", out_s, "--cold-tier", "fast"],
        2,
    );
    assert!(err.contains("expedited"), "{err}");
}

#[test]
fn cold_dump_and_verify_read_data_thaw_only_what_they_read() {
    let server = MotoServer::start();
    let s = Scratch::with_repo(server.url("reads"), server.env());
    let src = s.path("src");
    write(&src.join("a.bin"), &random_bytes(300_000, 4));
    s.ok(&["init"]);
    let glacier = ["-o", "s3.data-storage-class=GLACIER"];
    let with = |args: &[&str]| -> Vec<String> {
        glacier
            .iter()
            .chain(args)
            .map(|a| (*a).to_owned())
            .collect()
    };
    // Two runs, two data packs: the second holds only c.bin.
    s.ok(&strs(&with(&["create", src.to_str().unwrap()])));
    let c = random_bytes(200_000, 5);
    write(&src.join("docs/c.bin"), &c);
    s.ok(&strs(&with(&["create", src.to_str().unwrap()])));
    let cold = cold_packs(&classes(&server, "reads"));
    assert_eq!(cold.len(), 2, "{cold:?}");
    let thaws = || {
        server
            .requests()
            .iter()
            .filter(|r| r.starts_with("POST ") && r.contains("?restore"))
            .count()
    };

    // Without the option, verify --read-data does not read archived packs
    // and does not call them damage.
    let v = s.json(&["verify", "--read-data"]);
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["report"]["packs_archived"], 2, "{v}");
    assert_eq!(thaws(), 0);
    let err = s.fails(&["verify", "--cold-wait", "1m"], 2);
    assert!(err.contains("--read-data"), "{err}");

    // dump of one file thaws that file's pack only, stops before it writes
    // anything, and writes the file once the pack is readable.
    let out = s.path("c.out");
    let dump = with(&["dump", "latest", "docs/c.bin", "-O", out.to_str().unwrap()]);
    let err = s.fails(&strs(&dump), 1);
    assert!(err.contains("run the same command again later"), "{err}");
    assert_eq!(thaws(), 1, "the dump asked for more than the file's pack");
    assert!(!out.exists(), "the output was created before the thaw");
    let done = s.run(&strs(&dump));
    let said = String::from_utf8_lossy(&done.stderr);
    assert!(done.status.success(), "{said}");
    assert!(said.contains("packs the dump reads are readable"), "{said}");
    assert_eq!(std::fs::read(&out).unwrap(), c);
    // A file restore with a selection needs (and thaws) only what it
    // selects: that pack is readable now, so it restores at once.
    let part = s.path("part");
    let restore = with(&[
        "restore",
        "latest",
        "--include",
        "docs",
        "--to",
        part.to_str().unwrap(),
    ]);
    s.ok(&strs(&restore));
    assert_eq!(std::fs::read(part.join("docs/c.bin")).unwrap(), c);
    assert!(!part.join("a.bin").exists());
    assert_eq!(thaws(), 1, "the selective restore asked for another pack");
    // Without the option the other pack is still archived: the same dump
    // of a.bin meets the archive class and says what to do.
    let err = s.fails(
        &[
            "dump",
            "latest",
            "a.bin",
            "-O",
            s.path("a.out").to_str().unwrap(),
        ],
        1,
    );
    assert!(err.contains("--cold-wait"), "{err}");

    // verify --read-data with the option thaws the rest, then reads every
    // pack on the run after the thaw.
    let verify = with(&["verify", "--read-data"]);
    let err = s.fails(&strs(&verify), 1);
    assert!(err.contains("run the same command again later"), "{err}");
    assert_eq!(thaws(), 2);
    let v = s.json(&strs(&verify));
    assert_eq!(v["ok"], true, "{v}");
    assert_eq!(v["report"]["packs_archived"], 0, "{v}");
    assert_eq!(v["cold"]["ready"], true, "{v}");
    assert_eq!(
        v["report"]["packs_read"], v["report"]["packs_indexed"],
        "{v}"
    );
}
