//! S3 Object Lock against moto 5.2.5: `init` refuses a bucket that does
//! not lock, `forget --prune` inside the lock period removes and hides
//! nothing and says until when, and after the period removes it all.

use std::collections::BTreeSet;

use backup_testkit::moto::MotoServer;

use crate::util::{assert_same_tree, random_bytes, write, Scratch};

const LOCKED: &str = "locked-bucket";
const OPT: [&str; 2] = ["-o", "s3.object-lock=governance"];
/// A policy that keeps both snapshots of the period test, the newest as a
/// daily one for 35 days.
const DAILY_35: [&str; 5] = ["forget", "--keep-daily", "35", "--keep-last", "2"];

fn keys(moto: &MotoServer, prefix: &str) -> BTreeSet<String> {
    moto.objects(LOCKED, prefix)
        .into_iter()
        .map(|(k, _)| k)
        .collect()
}

/// Objects of `before` below `dir` that are gone now.
fn missing(moto: &MotoServer, before: &BTreeSet<String>, dir: &str) -> Vec<String> {
    let now = keys(moto, dir);
    before
        .iter()
        .filter(|k| k.starts_with(dir) && !now.contains(*k))
        .cloned()
        .collect()
}

/// Keys outside `locks/` that a plain `DELETE` hid behind a delete marker.
fn hidden(moto: &MotoServer) -> Vec<String> {
    moto.delete_markers(LOCKED, "repo/")
        .into_iter()
        .filter(|k| !k.starts_with("repo/locks/"))
        .collect()
}

fn with_lock<'a>(args: &[&'a str]) -> Vec<&'a str> {
    let mut all = OPT.to_vec();
    all.extend_from_slice(args);
    all
}

#[test]
fn object_lock_keeps_locked_objects_and_prunes_them_after_the_period() {
    let moto = MotoServer::start();
    moto.create_locked_bucket(LOCKED, "GOVERNANCE", 1);

    // A bucket without Object Lock, and a lock in another mode, are
    // refused before anything is written.
    let plain = Scratch::with_repo(moto.url("plain"), moto.env());
    let err = plain.fails(&with_lock(&["init"]), 2);
    assert!(err.contains("has no S3 Object Lock"), "{err}");
    assert!(moto.storage_classes("plain/").is_empty());
    let s = Scratch::with_repo(format!("s3://{LOCKED}/repo"), moto.env());
    let err = s.fails(&["-o", "s3.object-lock=compliance", "init"], 2);
    assert!(err.contains("GOVERNANCE mode"), "{err}");
    assert!(keys(&moto, "repo/").is_empty());
    let local = Scratch::new();
    let err = local.fails(&with_lock(&["init"]), 2);
    assert!(err.contains("S3 repositories only"), "{err}");
    assert!(!local.path("repo").exists());
    let out = s.ok(&with_lock(&["init"]));
    assert!(out.contains("locked for 1 days (GOVERNANCE mode)"), "{out}");

    // Two snapshots; the first holds a file the second no longer has.
    let src = s.path("src");
    write(&src.join("old.bin"), &random_bytes(300_000, 1));
    write(&src.join("keep.txt"), b"stays\n");
    s.ok(&with_lock(&["create", src.to_str().unwrap()]));
    std::fs::remove_file(src.join("old.bin")).unwrap();
    write(&src.join("new.bin"), &random_bytes(200_000, 2));
    s.ok(&with_lock(&["create", src.to_str().unwrap()]));
    let before = keys(&moto, "repo/");

    // Inside the lock period: nothing is removed or hidden, and the
    // report says until when.
    let out = s.ok(&with_lock(&["forget", "--keep-last", "1", "--prune"]));
    assert!(out.contains("removed 0 snapshots"), "{out}");
    assert!(
        out.contains("forget: kept snapshot ") && out.contains("S3 Object Lock until"),
        "{out}"
    );
    let gone: Vec<_> = missing(&moto, &before, "repo/")
        .into_iter()
        .filter(|k| !k.starts_with("repo/locks/"))
        .collect();
    assert!(gone.is_empty(), "locked objects disappeared: {gone:?}");
    assert!(hidden(&moto).is_empty(), "locked objects hidden");
    let listed = s.json(&with_lock(&["list"]));
    assert_eq!(listed.as_array().unwrap().len(), 2);

    // The snapshot's lock ends (moto lets the test move the retention, as
    // time would): it goes, but its packs are still locked, so prune keeps
    // them, says until when, and leaves them to a later prune.
    for dir in ["repo/snapshots/", "repo/index/"] {
        moto.set_retention(LOCKED, dir, "GOVERNANCE", "2001-01-01T00:00:00Z");
    }
    let out = s.ok(&with_lock(&["forget", "--keep-last", "1", "--prune"]));
    assert!(out.contains("removed 1 snapshots"), "{out}");
    assert!(
        out.contains("prune: kept pack ") && out.contains("S3 Object Lock until"),
        "{out}"
    );
    let lost = missing(&moto, &before, "repo/data/");
    assert!(lost.is_empty(), "locked packs deleted: {lost:?}");
    // A locked pack that is partly unused is not copied either (the copy
    // would be stored beside it until its lock ends): kept, and said so.
    let report = s.json(&with_lock(&["prune", "--repack-threshold", "0"]));
    assert_eq!(report["packs_written"], 0, "{report}");
    assert_eq!(report["packs_repacked"], 0, "{report}");
    assert!(
        !report["retained"].as_array().unwrap().is_empty(),
        "{report}"
    );
    assert_eq!(
        keys(&moto, "repo/data/").len(),
        before
            .iter()
            .filter(|k| k.starts_with("repo/data/"))
            .count()
    );
    let listed = s.json(&with_lock(&["list"]));
    assert_eq!(listed.as_array().unwrap().len(), 1);
    s.ok(&with_lock(&["verify", "--read-data"]));

    // Once the packs' lock ends too, a plain prune deletes them: versions
    // are deleted, not hidden behind delete markers.
    moto.set_retention(LOCKED, "repo/", "GOVERNANCE", "2001-01-01T00:00:00Z");
    let out = s.ok(&with_lock(&["prune"]));
    assert!(!out.contains("S3 Object Lock until"), "{out}");
    assert!(
        !missing(&moto, &before, "repo/data/").is_empty(),
        "no pack was deleted"
    );
    assert!(hidden(&moto).is_empty(), "deleted objects only hidden");
    s.ok(&with_lock(&["verify", "--read-data"]));
    let target = s.path("restored");
    s.ok(&with_lock(&[
        "restore",
        "latest",
        "--to",
        target.to_str().unwrap(),
    ]));
    assert_same_tree(&src, &target);
}

/// Days from now until `key`'s retain-until date (negative when past).
fn days_locked(moto: &MotoServer, key: &str) -> i64 {
    let until = moto
        .retention(LOCKED, key)
        .unwrap_or_else(|| panic!("{key} has no retention"));
    let until = chrono::DateTime::parse_from_rfc3339(&until)
        .unwrap_or_else(|e| panic!("{key}: retention `{until}`: {e}"));
    (until.with_timezone(&chrono::Utc) - chrono::Utc::now()).num_days()
}

#[test]
fn object_lock_period_follows_the_retention_policy() {
    let moto = MotoServer::start();
    moto.create_locked_bucket(LOCKED, "GOVERNANCE", 1);
    let s = Scratch::with_repo(format!("s3://{LOCKED}/repo"), moto.env());
    s.ok(&with_lock(&["init"]));
    let src = s.path("src");
    write(&src.join("base.bin"), &random_bytes(300_000, 3));
    s.ok(&with_lock(&["create", src.to_str().unwrap()]));
    write(&src.join("more.bin"), &random_bytes(100_000, 4));
    s.ok(&with_lock(&["create", src.to_str().unwrap()]));
    // New objects carry the bucket's default retention: one day.
    let all = keys(&moto, "repo/");
    let locked: Vec<&String> = all
        .iter()
        .filter(|k| {
            ["repo/data/", "repo/snapshots/", "repo/keys/", "repo/config"]
                .iter()
                .any(|p| k.starts_with(p))
        })
        .collect();
    assert!(locked.iter().any(|k| k.starts_with("repo/data/")));
    for k in &locked {
        assert!(
            days_locked(&moto, k) <= 1,
            "{k} locked longer than the default"
        );
    }

    // A dry run changes no lock.
    s.ok(&with_lock(&[
        "forget",
        "--keep-daily",
        "35",
        "--keep-last",
        "2",
        "--dry-run",
    ]));
    assert!(days_locked(&moto, locked[0]) <= 1);

    // The policy keeps both snapshots, the newest as a daily one for 35
    // days: everything they need (the packs of both, the older ones
    // reused by the newer snapshot included), their snapshot files, the
    // configuration and the keys are locked at least that long, plus the
    // week's margin. Index files keep the default: `repair index`
    // rebuilds them from the packs.
    let out = s.ok(&with_lock(&DAILY_35));
    assert!(out.contains("removed 0 snapshots"), "{out}");
    assert!(out.contains("S3 Object Lock: "), "{out}");
    assert!(!out.contains("(0 extended"), "{out}");
    for k in &locked {
        let days = days_locked(&moto, k);
        assert!((40..=42).contains(&days), "{k} locked {days} days");
    }
    for k in all.iter().filter(|k| k.starts_with("repo/index/")) {
        assert!(days_locked(&moto, k) <= 1, "{k} locked beyond the default");
    }

    // A second run finds every lock long enough and extends none.
    let out = s.ok(&with_lock(&DAILY_35));
    assert!(out.contains("(0 extended"), "{out}");
    let json = s.json(&with_lock(&DAILY_35));
    assert_eq!(json["locks"]["extended"], 0, "{json}");
    assert_eq!(
        json["locks"]["checked"].as_u64(),
        Some(locked.len() as u64),
        "{json}"
    );

    // A longer policy extends again; a repository without Object Lock
    // reports nothing.
    let out = s.ok(&with_lock(&[
        "forget",
        "--keep-monthly",
        "6",
        "--keep-last",
        "2",
    ]));
    assert!(!out.contains("(0 extended"), "{out}");
    let days = days_locked(&moto, locked[0]);
    assert!((192..=194).contains(&days), "locked {days} days");

    // A job's retention does the same after each backup.
    let cfg = s.path("backupd.toml");
    std::fs::write(
        &cfg,
        format!(
            "[repositories.main]\nurl = \"s3://{LOCKED}/repo\"\npassword = {{ env = \"BACKUP_PASSWORD\" }}\noptions = {{ \"s3.object-lock\" = \"governance\" }}\n\n[jobs.files]\nrepository = \"main\"\nsource = \"{}\"\nschedule = \"0 3 * * *\"\nretention = {{ keep_daily = 35, keep_yearly = 2 }}\n",
            src.display()
        ),
    )
    .unwrap();
    write(&src.join("third.bin"), &random_bytes(50_000, 5));
    let out = s.ok(&[
        "--config",
        cfg.to_str().unwrap(),
        "create",
        "--job",
        "files",
    ]);
    assert!(out.contains("retention S3 Object Lock: "), "{out}");
    let listed = s.json(&with_lock(&["list"]));
    let job = listed
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["snapshot"]["job"] == "files")
        .unwrap_or_else(|| panic!("no snapshot of the job in {listed}"));
    let id = job["id"].as_str().unwrap();
    let days = days_locked(&moto, &format!("repo/snapshots/{id}"));
    assert!(
        (738..=740).contains(&days),
        "the yearly snapshot locked {days} days"
    );

    let plain = Scratch::new();
    plain.ok(&["init"]);
    plain.ok(&["create", src.to_str().unwrap()]);
    let out = plain.ok(&["forget", "--keep-daily", "35"]);
    assert!(!out.contains("S3 Object Lock"), "{out}");
}
