//! Interrupted backups leave no snapshot and no damage.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use backup_core::archiver::{backup, BackupOptions};
use backup_core::keys::KdfParams;
use backup_core::progress::NoProgress;
use backup_core::repo::{InitOptions, Repository};
use backup_core::verify::{verify, VerifyOptions};
use backup_core::Sink;
use backup_sources::files::FilesSource;
use backup_sources::Selection;
use backup_storage::LocalSink;
use backup_testkit::{Fault, FaultySink};

use crate::util::{assert_same_tree, files_under, random_bytes, write, Scratch};

#[test]
fn sigkill_half_way_leaves_no_snapshot() {
    let s = Scratch::new();
    let src = s.path("src");
    for i in 0..24 {
        write(
            &src.join(format!("f{i:02}")),
            &random_bytes(12 * 1024 * 1024, i),
        );
    }
    s.init();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_backup"))
        .env("BACKUP_REPOSITORY", &s.repo)
        .env("BACKUP_PASSWORD", crate::util::PASSWORD)
        .args(["create", src.to_str().unwrap()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let data = Path::new(&s.repo).join("data");
    let start = Instant::now();
    while files_under(&data)
        .iter()
        .filter(|p| !p.file_name().unwrap().to_string_lossy().starts_with('.'))
        .count()
        < 2
    {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "no pack appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "backup ended before it could be killed"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(child.id() as i32),
        nix::sys::signal::Signal::SIGKILL,
    )
    .unwrap();
    let status = child.wait().unwrap();
    assert!(!status.success());

    assert_eq!(s.json(&["list"]).as_array().unwrap().len(), 0);
    let v = s.json(&["verify"]);
    assert_eq!(v["ok"], true, "{v}");
    assert!(v["report"]["unindexed_packs"].as_u64().unwrap() >= 1, "{v}");
    // The next backup succeeds (the dead process's shared lock does not block it).
    let (id, _) = s.create(&src, &[]);
    let out = s.path("out");
    s.ok(&["restore", &id, "--to", out.to_str().unwrap()]);
    assert_same_tree(&src, &out);
    assert!(s
        .ok(&["verify", "--read-data"])
        .contains("no problems found"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failing_storage_leaves_no_snapshot() {
    let s = Scratch::new();
    let src = s.path("src");
    for i in 0..6 {
        write(
            &src.join(format!("f{i}")),
            &random_bytes(3 * 1024 * 1024, 100 + i),
        );
    }
    let local: Arc<dyn Sink> = Arc::new(LocalSink::new(s.path("repo")));
    let opts = InitOptions {
        kdf: KdfParams::insecure_fast(),
        pack_size: 2 * 1024 * 1024,
        ..InitOptions::default()
    };
    Repository::init(local.clone(), Some(b"pw"), &opts)
        .await
        .unwrap();
    for fail_after in [0, 1, 3, 5] {
        let faulty = FaultySink::new(local.clone());
        faulty.fail_puts_after(fail_after, Fault::Permanent);
        let faulty: Arc<dyn Sink> = Arc::new(faulty);
        let repo = Repository::open(faulty, Some(b"pw"))
            .await
            .unwrap()
            .load_index()
            .await
            .unwrap();
        let mut source = FilesSource::open(&src, &Selection::default()).unwrap();
        let err = backup(
            &repo,
            &mut source,
            &BackupOptions::default(),
            Arc::new(NoProgress),
        )
        .await
        .unwrap_err();
        assert!(!err.to_string().is_empty());
        let repo = Repository::open(local.clone(), Some(b"pw")).await.unwrap();
        let (snaps, bad) = repo.snapshots().await.unwrap();
        assert!(
            snaps.is_empty() && bad.is_empty(),
            "after failing at put {fail_after}"
        );
        let report = verify(repo, &VerifyOptions::default(), &NoProgress)
            .await
            .unwrap();
        assert!(report.is_ok(), "{report:?}");
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
    assert!(out.id.is_some());
    let repo = Repository::open(local, Some(b"pw")).await.unwrap();
    let report = verify(
        repo,
        &VerifyOptions {
            read_data_percent: Some(100.0),
            ..VerifyOptions::default()
        },
        &NoProgress,
    )
    .await
    .unwrap();
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.snapshots_checked, 1);
}
