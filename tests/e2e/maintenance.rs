//! Retention, prune, repair, copy and locking.

use std::fs;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backup_core::archiver::{backup, BackupOptions};
use backup_core::keys::KdfParams;
use backup_core::progress::NoProgress;
use backup_core::prune::{prune, PruneOptions};
use backup_core::repo::{InitOptions, Repository};
use backup_core::verify::{verify, VerifyOptions};
use backup_core::{FileKind, Sink};
use backup_sources::files::FilesSource;
use backup_sources::Selection;
use backup_storage::LocalSink;
use backup_testkit::faulty::Op;
use backup_testkit::gcs::GcsServer;
use backup_testkit::s3::S3Server;
use backup_testkit::{Fault, FaultySink};

use crate::util::{assert_same_tree, files_under, random_bytes, write, Scratch, PASSWORD};

fn stat(v: &serde_json::Value, k: &str) -> u64 {
    v[k].as_u64().unwrap_or_else(|| panic!("no {k} in {v}"))
}

fn repo_bytes(s: &Scratch) -> u64 {
    files_under(&Path::new(&s.repo).join("data"))
        .iter()
        .map(|p| fs::metadata(p).unwrap().len())
        .sum()
}

#[test]
fn forget_and_prune_free_the_space_and_keep_the_rest() {
    let s = Scratch::new();
    s.ok(&["init", "--pack-size", "2MiB"]);
    let src = s.path("src");
    write(&src.join("a.bin"), &random_bytes(8_000_000, 1));
    s.create(&src, &["--time", "2024-01-01T00:00:00Z"]);
    write(&src.join("b.bin"), &random_bytes(6_000_000, 2));
    s.create(
        &src,
        &["--time", "2024-01-02T00:00:00Z", "--tag", "precious"],
    );
    fs::remove_file(src.join("a.bin")).unwrap();
    write(&src.join("c.bin"), &random_bytes(4_000_000, 3));
    let (latest, _) = s.create(&src, &["--time", "2024-01-03T00:00:00Z"]);
    let keep_copy = s.path("expected");
    s.ok(&["restore", &latest, "--to", keep_copy.to_str().unwrap()]);

    // Dry run: says what goes and why, changes nothing.
    let plan = s.json(&[
        "forget",
        "--keep-last",
        "1",
        "--keep-tag",
        "precious",
        "--dry-run",
    ]);
    let decisions = plan["decisions"].as_array().unwrap();
    assert_eq!(decisions.len(), 3);
    assert_eq!(decisions.iter().filter(|d| d["keep"] == true).count(), 2);
    assert!(decisions.iter().any(|d| d["reasons"]
        .as_array()
        .unwrap()
        .iter()
        .any(|r| r == "tag precious")));
    assert_eq!(s.json(&["list"]).as_array().unwrap().len(), 3);

    // Without the tag rule the two older snapshots go; a.bin is then garbage.
    let before = repo_bytes(&s);
    let out = s.json(&[
        "forget",
        "--keep-last",
        "1",
        "--prune",
        "--repack-threshold",
        "10",
    ]);
    assert_eq!(out["removed"].as_array().unwrap().len(), 2);
    let p = &out["prune"];
    let after = repo_bytes(&s);
    assert_eq!(before - after, stat(p, "bytes_freed"), "{p}");
    // a.bin (8 MB of random data) was the garbage; b.bin and c.bin stay.
    assert!(
        stat(p, "bytes_freed") > 7_500_000 && stat(p, "bytes_freed") < 9_000_000,
        "{p}"
    );
    assert!(stat(p, "bytes_rewritten") < stat(p, "bytes_freed"), "{p}");
    assert!(after > 9_900_000, "{after}");
    assert_eq!(s.json(&["list"]).as_array().unwrap().len(), 1);
    assert!(s
        .ok(&["check", "--read-data"])
        .contains("no problems found"));
    let out = s.path("restored");
    s.ok(&["restore", "latest", "--to", out.to_str().unwrap()]);
    assert_same_tree(&keep_copy, &out);
    // A second prune finds nothing to do.
    let again = s.json(&["prune"]);
    assert_eq!(stat(&again, "bytes_freed"), 0, "{again}");
}

/// Builds a repository with garbage in it: three snapshots, the two older
/// forgotten. Returns the sink, the kept snapshot's tree of files on disk.
async fn repo_with_garbage(s: &Scratch) -> (Arc<dyn Sink>, std::path::PathBuf) {
    let local: Arc<dyn Sink> = Arc::new(LocalSink::new(s.path("repo")));
    let opts = InitOptions {
        kdf: KdfParams::insecure_fast(),
        pack_size: 1024 * 1024,
        chunker: backup_core::config::ChunkerParams::with_average(64 * 1024).unwrap(),
        ..InitOptions::default()
    };
    Repository::init(local.clone(), Some(b"pw"), &opts)
        .await
        .unwrap();
    let src = s.path("src");
    let mut ids = Vec::new();
    for round in 0..3u64 {
        for f in 0..4u64 {
            // Each round rewrites half of the files.
            if round == 0 || f % 2 == round % 2 {
                write(
                    &src.join(format!("f{f}")),
                    &random_bytes(700_000, round * 10 + f),
                );
            }
        }
        let repo = Repository::open(local.clone(), Some(b"pw"))
            .await
            .unwrap()
            .load_index()
            .await
            .unwrap();
        let mut source = FilesSource::open(&src, &Selection::default()).unwrap();
        let out = backup(
            &repo,
            &mut source,
            &BackupOptions::default(),
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
        ids.push(out.id.unwrap());
    }
    for id in &ids[..2] {
        local
            .delete(FileKind::Snapshot, &id.to_hex())
            .await
            .unwrap();
    }
    (local, src)
}

async fn assert_intact(sink: &Arc<dyn Sink>, expected: &Path, s: &Scratch, n: usize) {
    let repo = Repository::open(sink.clone(), Some(b"pw")).await.unwrap();
    let report = verify(
        repo.clone(),
        &VerifyOptions {
            read_data_percent: Some(100.0),
            ..VerifyOptions::default()
        },
        &NoProgress,
    )
    .await
    .unwrap();
    assert!(
        report.is_ok(),
        "after an interrupted prune ({n}): {report:?}"
    );
    let repo = repo.load_index().await.unwrap();
    let snap = repo
        .find_snapshot("latest", &backup_core::snapshot::SnapshotFilter::default())
        .await
        .unwrap();
    let out = s.path(&format!("restore-{n}"));
    let target = backup_sources::files::FilesTarget::new(out.clone());
    use backup_core::target::Target;
    let reader = backup_core::reader::SnapshotReader::new(repo, snap);
    target
        .restore(
            &reader,
            &backup_core::target::RestoreOptions::default(),
            Arc::new(NoProgress),
        )
        .await
        .unwrap();
    for f in 0..4 {
        assert_eq!(
            fs::read(out.join(format!("f{f}"))).unwrap(),
            fs::read(expected.join(format!("f{f}"))).unwrap(),
            "after an interrupted prune ({n})"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prune_interrupted_at_every_write_and_delete_loses_nothing() {
    let s = Scratch::new();
    let (local, src) = repo_with_garbage(&s).await;
    let opts = PruneOptions {
        dry_run: false,
        repack_threshold: 0.01,
    };
    // Every put, then every delete, is a place where the process may die.
    let mut case = 0;
    for op in [Op::Put, Op::Delete] {
        for n in 0.. {
            let faulty = FaultySink::new(local.clone());
            faulty.fail_after(op, n, Fault::Permanent);
            let faulty = Arc::new(faulty);
            let sink: Arc<dyn Sink> = faulty.clone();
            let repo = Repository::open(sink, Some(b"pw"))
                .await
                .unwrap()
                .load_index()
                .await
                .unwrap();
            let result = prune(&repo, &opts, &NoProgress).await;
            case += 1;
            assert_intact(&local, &src, &s, case).await;
            if result.is_ok() {
                assert_eq!(faulty.injected(), 0);
                break;
            }
            // Once a run gets through, the garbage is gone and later runs
            // have nothing left to fail on; the first successful run ends
            // the loop.
            assert!(n < 200, "prune never completed");
        }
    }
    // The repository ends pruned: one snapshot, nothing unreferenced.
    let repo = Repository::open(local.clone(), Some(b"pw"))
        .await
        .unwrap()
        .load_index()
        .await
        .unwrap();
    let again = prune(&repo, &opts, &NoProgress).await.unwrap();
    assert_eq!(again.bytes_freed, 0, "{again:?}");
}

#[test]
fn sigkill_during_prune_then_check_passes() {
    let s = Scratch::new();
    s.ok(&["init", "--pack-size", "1MiB", "--chunk-size", "64KiB"]);
    let src = s.path("src");
    for round in 0..4u64 {
        for f in 0..8u64 {
            write(
                &src.join(format!("f{f}")),
                &random_bytes(2_000_000, round * 100 + f),
            );
        }
        s.create(&src, &[]);
    }
    let expected = s.path("expected");
    s.ok(&["restore", "latest", "--to", expected.to_str().unwrap()]);
    s.ok(&["forget", "--keep-last", "1"]);
    for delay_ms in [30, 120, 400] {
        let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_backup"))
            .env("BACKUP_REPOSITORY", &s.repo)
            .env("BACKUP_PASSWORD", PASSWORD)
            .args(["prune", "--repack-threshold", "1"])
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .unwrap();
        std::thread::sleep(Duration::from_millis(delay_ms));
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(child.id() as i32),
            nix::sys::signal::Signal::SIGKILL,
        );
        let _ = child.wait();
        // The dead process's exclusive lock names this host and a process
        // that no longer exists: it does not block what follows, and
        // `unlock` (without --all) removes it.
        assert!(
            s.ok(&["check", "--read-data"])
                .contains("no problems found"),
            "after a kill at {delay_ms} ms"
        );
        let out = s.path(&format!("out-{delay_ms}"));
        s.ok(&["restore", "latest", "--to", out.to_str().unwrap()]);
        assert_same_tree(&expected, &out);
        s.ok(&["unlock"]);
        // A kill while the lock file was being written can leave its
        // hidden temporary file (`.NAME.tmp-…`), which is never read as a
        // lock; every lock itself is gone.
        let locks: Vec<_> = files_under(&Path::new(&s.repo).join("locks"))
            .into_iter()
            .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
            .collect();
        assert!(locks.is_empty(), "after a kill at {delay_ms} ms: {locks:?}");
    }
    s.ok(&["prune"]);
    assert!(s
        .ok(&["check", "--read-data"])
        .contains("no problems found"));
}

#[test]
fn backup_and_prune_wait_for_each_other() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    for f in 0..20u64 {
        write(&src.join(format!("f{f}")), &random_bytes(10_000_000, f));
    }
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_backup"))
        .env("BACKUP_REPOSITORY", &s.repo)
        .env("BACKUP_PASSWORD", PASSWORD)
        .args(["create", src.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let locks = Path::new(&s.repo).join("locks");
    let start = Instant::now();
    while files_under(&locks).is_empty() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "the backup never took its lock"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the backup ended too soon"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    // Without waiting, prune refuses and names the holder.
    let err = s.fails(&["prune"], 1);
    assert!(err.contains("locked") && err.contains("backup"), "{err}");
    // With --lock-wait it waits for the backup, then runs.
    let out = s.run(&["--lock-wait", "5m", "--json", "prune"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(child.wait().unwrap().success());
    assert_eq!(s.json(&["list"]).as_array().unwrap().len(), 1);
    assert!(s
        .ok(&["check", "--read-data"])
        .contains("no problems found"));
    let restored = s.path("restored");
    s.ok(&["restore", "latest", "--to", restored.to_str().unwrap()]);
    assert_same_tree(&src, &restored);
}

#[test]
fn repair_index_and_repair_snapshots() {
    let s = Scratch::new();
    s.init();
    let src = s.path("src");
    write(&src.join("a"), &random_bytes(3_000_000, 1));
    let (ida, _) = s.create(&src, &[]);
    write(&src.join("b"), &random_bytes(3_000_000, 2));
    let (idb, _) = s.create(&src, &[]);
    // Lose an index file: check fails, repair index rebuilds it from packs.
    let index = files_under(&Path::new(&s.repo).join("index"));
    fs::remove_file(&index[0]).unwrap();
    s.fails(&["check"], 3);
    let dry = s.json(&["repair", "index", "--dry-run"]);
    assert_eq!(dry["dry_run"], true);
    s.fails(&["check"], 3);
    let report = s.json(&["repair", "index"]);
    assert!(report["packs"].as_u64().unwrap() >= 2, "{report}");
    assert!(s
        .ok(&["check", "--read-data"])
        .contains("no problems found"));
    let out = s.path("out");
    s.ok(&["restore", &idb, "--to", out.to_str().unwrap()]);
    assert_same_tree(&src, &out);

    // Lose the pack holding b: the second snapshot is damaged.
    let packs_before: Vec<_> = files_under(&Path::new(&s.repo).join("data"));
    let biggest = packs_before.iter().max_by_key(|p| {
        let m = fs::metadata(p).unwrap();
        (m.modified().unwrap(), m.len())
    });
    fs::remove_file(biggest.unwrap()).unwrap();
    s.fails(&["check"], 3);
    let listed = s.run(&["--json", "repair", "snapshots"]);
    assert_eq!(listed.status.code(), Some(3));
    let damaged: serde_json::Value = serde_json::from_slice(&listed.stdout).unwrap();
    assert_eq!(damaged.as_array().unwrap().len(), 1, "{damaged}");
    assert_eq!(damaged[0]["id"], idb);
    s.ok(&["repair", "snapshots", "--remove"]);
    let list = s.json(&["list"]);
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert_eq!(list[0]["id"], ida);
    assert!(s.ok(&["check"]).contains("no problems found"));
}

#[test]
fn copy_between_backends_sends_only_what_is_missing() {
    let s3 = S3Server::start();
    let gcs = GcsServer::start();
    let local = Scratch::new();
    local.init();
    let src = local.path("src");
    crate::roundtrip::fidelity_tree(&src);
    local.create(&src, &["--tag", "first"]);

    // Local to S3, with another password and other chunker settings.
    let mut env: Vec<(String, String)> = s3.env();
    env.extend(gcs.env());
    let s3_repo = Scratch::with_repo(s3.url("offsite"), env.clone());
    s3_repo
        .cmd()
        .env("BACKUP_PASSWORD", "another password")
        .args(["init", "--chunk-size", "256KiB"])
        .assert()
        .success();
    let copy = |from: &Scratch, to_url: &str, to_pw: &str| -> serde_json::Value {
        let out = from
            .cmd()
            .envs(env.iter().cloned())
            .env("BACKUP_TO_PASSWORD", to_pw)
            .args(["--json", "copy", "--to-repo", to_url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let first = copy(&local, &s3.url("offsite"), "another password");
    assert_eq!(first["copied"].as_array().unwrap().len(), 1);
    // Copying again sends nothing.
    assert_eq!(
        copy(&local, &s3.url("offsite"), "another password")["copied"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // A new snapshot with one changed file: only that file is read.
    write(&src.join("hello.txt"), b"changed\n");
    local.create(&src, &["--tag", "second"]);
    let second = copy(&local, &s3.url("offsite"), "another password");
    let copied = second["copied"].as_array().unwrap();
    assert_eq!(copied.len(), 1, "{second}");
    assert_eq!(
        copied[0]["bytes_read"], 8,
        "only the changed file is read: {second}"
    );

    // S3 to GCS.
    let gcs_repo = Scratch::with_repo(gcs.url("second-region"), env.clone());
    gcs_repo
        .cmd()
        .env("BACKUP_PASSWORD", "third")
        .args(["init"])
        .assert()
        .success();
    let s3_source = Scratch::with_repo(s3.url("offsite"), env.clone());
    let third = s3_source
        .cmd()
        .env("BACKUP_PASSWORD", "another password")
        .env("BACKUP_TO_PASSWORD", "third")
        .args(["--json", "copy", "--to-repo", &gcs.url("second-region")])
        .output()
        .unwrap();
    assert!(
        third.status.success(),
        "{}",
        String::from_utf8_lossy(&third.stderr)
    );

    // The GCS copy restores byte for byte, with the original metadata.
    let out = gcs_repo.path("restored");
    gcs_repo
        .cmd()
        .env("BACKUP_PASSWORD", "third")
        .args(["restore", "latest", "--to", out.to_str().unwrap()])
        .assert()
        .success();
    assert_same_tree(&src, &out);
    let listed: serde_json::Value = serde_json::from_slice(
        &gcs_repo
            .cmd()
            .env("BACKUP_PASSWORD", "third")
            .args(["--json", "list"])
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    let tags: Vec<&str> = listed
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["snapshot"]["tags"][0].as_str().unwrap())
        .collect();
    assert_eq!(tags, vec!["first", "second"]);
    let check = gcs_repo
        .cmd()
        .env("BACKUP_PASSWORD", "third")
        .args(["check", "--read-data"])
        .output()
        .unwrap();
    assert!(check.status.success());
}
