//! Repositories damaged on purpose: every kind of file lost, cut or
//! altered, and what the reading, checking and repairing code makes of it.
//! Damage is always reported (never a panic, never wrong data), the
//! affected snapshots are named, and repairs leave a repository that
//! passes `verify`.

use std::sync::Arc;

use backup_core::filter::PathFilter;
use backup_core::keys::KdfParams;
use backup_core::lock::{LockInfo, LockMode};
use backup_core::pack::BlobType;
use backup_core::progress::NoProgress;
use backup_core::repair::{repair_index, repair_snapshots};
use backup_core::repo::Repository;
use backup_core::restorer::restore_tree;
use backup_core::snapshot::SnapshotFilter;
use backup_core::verify::{verify, VerifyOptions, VerifyReport};
use backup_core::{Error, FileKind, Id, MemorySink, Sink, SinkExt};
use bytes::Bytes;
use chrono::Utc;

use crate::support::{backed_up, reopen, sample, Collect};

async fn check(repo: &Repository, read_data: bool) -> VerifyReport {
    verify(
        repo.clone(),
        &VerifyOptions {
            snapshots: None,
            read_data_percent: read_data.then_some(100.0),
            ..VerifyOptions::default()
        },
        &NoProgress,
    )
    .await
    .unwrap()
}

/// The first pack holding blobs of `kind`, with the offset of one of them.
fn pack_of(out: &backup_core::archiver::BackupOutcome, kind: BlobType) -> (Id, u32) {
    out.index
        .entries_by_pack()
        .unwrap()
        .into_iter()
        .find_map(|(pack, entries)| {
            entries
                .iter()
                .find(|e| e.blob_type == kind)
                .map(|e| (pack, e.offset))
        })
        .unwrap()
}

async fn get(mem: &MemorySink, kind: FileKind, name: &str) -> Vec<u8> {
    mem.get(kind, name).await.unwrap().to_vec()
}

async fn restore_all(repo: &backup_core::repo::IndexedRepository) -> Result<Collect, Error> {
    let snap = repo
        .find_snapshot("latest", &SnapshotFilter::default())
        .await?;
    let got = Collect::default();
    restore_tree(
        repo,
        snap.snapshot.tree,
        &PathFilter::all(),
        Box::new(got.clone()),
        Arc::new(NoProgress),
    )
    .await?;
    Ok(got)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_pack_names_the_snapshot_and_repair_removes_it() {
    let (mem, repo, out) = backed_up().await;
    let (pack, _) = pack_of(&out, BlobType::Data);
    mem.delete(FileKind::Pack, &pack.to_hex()).await.unwrap();

    let report = check(&repo, false).await;
    assert!(!report.is_ok());
    assert_eq!(report.missing_packs, vec![pack.to_hex()]);
    assert_eq!(report.damaged_snapshots, vec![out.id.unwrap().to_hex()]);
    let err = restore_all(&reopen(&mem).await).await.err().unwrap();
    assert!(
        err.is_corruption() || matches!(err, Error::NotFound { .. }),
        "{err}"
    );

    let listed = repair_snapshots(&repo, false, false, &NoProgress)
        .await
        .unwrap();
    assert_eq!(listed.len(), 1);
    assert!(!listed[0].removed);
    let removed = repair_snapshots(&repo, true, false, &NoProgress)
        .await
        .unwrap();
    assert!(removed[0].removed);
    let report = check(&repo, true).await;
    assert!(report.is_ok(), "{report:?}");
    assert_eq!(report.snapshots_checked, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_index_is_rebuilt_from_pack_headers() {
    let (mem, repo, _) = backed_up().await;
    for name in mem.list_names(FileKind::Index).await.unwrap() {
        mem.delete(FileKind::Index, &name).await.unwrap();
    }
    let report = check(&repo, false).await;
    assert!(!report.is_ok(), "blobs nobody indexes are damage");
    assert!(report.unindexed_packs > 0);

    let dry = repair_index(&repo, true, &NoProgress).await.unwrap();
    assert!(dry.packs > 0 && dry.unreadable_packs.is_empty());
    assert!(mem.list_names(FileKind::Index).await.unwrap().is_empty());
    let done = repair_index(&repo, false, &NoProgress).await.unwrap();
    assert!(done.index_files_written > 0);
    assert!(check(&repo, true).await.is_ok());
    let got = restore_all(&reopen(&mem).await).await.unwrap();
    assert_eq!(*got.0.lock().unwrap(), sample());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_torn_pack_is_reported_by_index_repair() {
    let (mem, repo, out) = backed_up().await;
    let (pack, _) = pack_of(&out, BlobType::Data);
    let mut data = get(&mem, FileKind::Pack, &pack.to_hex()).await;
    data.truncate(data.len() - 7);
    mem.tamper(FileKind::Pack, &pack.to_hex(), data.into());

    let report = check(&repo, false).await;
    assert!(
        report.problems.iter().any(|p| p.object == pack.to_hex()),
        "the size differs from the index: {report:?}"
    );
    let repaired = repair_index(&repo, false, &NoProgress).await.unwrap();
    assert_eq!(repaired.unreadable_packs, vec![pack.to_hex()]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_tree_stops_the_restore_and_is_named() {
    let (mem, repo, out) = backed_up().await;
    let (pack, offset) = pack_of(&out, BlobType::Tree);
    let mut data = get(&mem, FileKind::Pack, &pack.to_hex()).await;
    data[offset as usize + 16] ^= 0x01;
    mem.tamper(FileKind::Pack, &pack.to_hex(), data.into());

    let report = check(&repo, false).await;
    assert!(!report.is_ok());
    assert_eq!(report.damaged_snapshots, vec![out.id.unwrap().to_hex()]);
    let err = restore_all(&reopen(&mem).await).await.err().unwrap();
    assert!(err.is_corruption(), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_manifest_is_listed_apart_and_refused() {
    let (mem, repo, out) = backed_up().await;
    let id = out.id.unwrap().to_hex();
    let mut data = get(&mem, FileKind::Snapshot, &id).await;
    let last = data.len() - 1;
    data[last] ^= 0x80;
    mem.tamper(FileKind::Snapshot, &id, data.into());

    let (good, bad) = repo.snapshots().await.unwrap();
    assert!(good.is_empty());
    assert_eq!(bad.len(), 1);
    assert_eq!(bad[0].0, id);
    assert!(bad[0].1.is_corruption(), "{}", bad[0].1);
    let err = repo
        .find_snapshot(&id[..8], &SnapshotFilter::default())
        .await
        .unwrap_err();
    assert!(err.is_corruption(), "{err}");
    assert!(!check(&repo, false).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_index_file_is_reported_not_fatal_to_verify() {
    let (mem, repo, _) = backed_up().await;
    let name = mem.list_names(FileKind::Index).await.unwrap()[0].clone();
    let mut data = get(&mem, FileKind::Index, &name).await;
    data[20] ^= 0x10;
    mem.tamper(FileKind::Index, &name, data.into());

    let err = repo.clone().load_index().await.unwrap_err();
    assert!(err.is_corruption(), "{err}");
    let report = check(&repo, false).await;
    assert!(
        report
            .problems
            .iter()
            .any(|p| p.kind == FileKind::Index && p.object == name),
        "{report:?}"
    );
    repair_index(&repo, false, &NoProgress).await.unwrap();
    assert!(check(&repo, true).await.is_ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_key_file_leaves_the_other_keys_usable() {
    let (mem, repo, _) = backed_up().await;
    let second = repo
        .add_key(b"second", KdfParams::insecure_fast())
        .await
        .unwrap();
    let first = repo.key_id().unwrap().to_hex();
    let mut data = get(&mem, FileKind::Key, &first).await;
    let mid = data.len() / 2;
    data[mid] ^= 0x01;
    mem.tamper(FileKind::Key, &first, data.into());

    let sink: Arc<dyn Sink> = Arc::new(mem.clone());
    assert!(matches!(
        Repository::open(sink.clone(), Some(b"pw")).await,
        Err(Error::WrongPassword)
    ));
    let opened = Repository::open(sink, Some(b"second")).await.unwrap();
    assert_eq!(opened.key_id(), Some(second));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_from_the_future_or_breaking_the_rules_is_refused_first() {
    let (mem, _, _) = backed_up().await;
    let original = get(&mem, FileKind::Config, "config").await;
    let mut cfg: serde_json::Value = serde_json::from_slice(&original).unwrap();
    let sink: Arc<dyn Sink> = Arc::new(mem.clone());

    cfg["version"] = 5.into();
    mem.tamper(
        FileKind::Config,
        "config",
        serde_json::to_vec(&cfg).unwrap().into(),
    );
    // Refused before any password is tried.
    assert!(matches!(
        Repository::open(sink.clone(), None).await,
        Err(Error::UnsupportedVersion {
            found: 5,
            supported: 4
        })
    ));

    // A version that disagrees with the id hash is damage: version 1 has
    // HMAC-SHA-256 ids, so reading BLAKE3 ids with it would fail every blob.
    cfg["version"] = 1.into();
    let err = open_with_config(&mem, &cfg).await;
    assert!(err.to_string().contains("disagree"), "{err}");

    cfg["version"] = 3.into();
    cfg["chunker"]["max_size"] = 4_194_305.into();
    let err = open_with_config(&mem, &cfg).await;
    assert!(err.to_string().contains("chunker"), "{err}");

    mem.tamper(FileKind::Config, "config", Bytes::from_static(b"{not json"));
    assert!(Repository::open(sink.clone(), Some(b"pw")).await.is_err());
    mem.delete(FileKind::Config, "config").await.unwrap();
    assert!(matches!(
        Repository::open(sink, Some(b"pw")).await,
        Err(Error::NoRepository { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn locks_conflict_while_live_and_expire_when_their_holder_is_gone() {
    let (_, repo, _) = backed_up().await;
    let shared = repo.lock(LockMode::Shared, "backup").await.unwrap();
    let both = repo.lock(LockMode::Shared, "verify").await.unwrap();
    match repo.lock(LockMode::Exclusive, "prune").await {
        Err(Error::Locked(holder)) => {
            assert!(holder.contains("backup") || holder.contains("verify"));
        }
        other => panic!("an exclusive lock beside shared ones: {other:?}"),
    }
    shared.release().await.unwrap();
    both.release().await.unwrap();

    // A holder that died: its lease ran out.
    let now = Utc::now();
    let stale = LockInfo {
        exclusive: true,
        operation: "prune".into(),
        host: "gone".into(),
        pid: 1,
        user: "nobody".into(),
        created: now - chrono::Duration::hours(2),
        expires: now - chrono::Duration::hours(1),
        nonce: Id::random(),
    };
    repo.save_file(FileKind::Lock, &stale).await.unwrap();
    let held = repo.lock(LockMode::Exclusive, "repair").await.unwrap();
    held.release().await.unwrap();
    assert_eq!(repo.unlock(false).await.unwrap(), 1);
    assert!(repo.locks().await.unwrap().is_empty());

    // Work under with_lock releases the lock whether it fails or not.
    let failed: Result<(), Error> = repo
        .with_lock(
            LockMode::Exclusive,
            "prune",
            std::time::Duration::ZERO,
            async { Err(Error::Cancelled) },
        )
        .await;
    assert!(matches!(failed, Err(Error::Cancelled)));
    assert!(repo.locks().await.unwrap().is_empty());
}

/// Writes `cfg` as the config of the repository in `mem` and opens it with
/// the password: the error it is refused with.
async fn open_with_config(mem: &MemorySink, cfg: &serde_json::Value) -> Error {
    mem.tamper(
        FileKind::Config,
        "config",
        serde_json::to_vec(cfg).unwrap().into(),
    );
    let sink: Arc<dyn Sink> = Arc::new(mem.clone());
    Repository::open(sink, Some(b"pw")).await.unwrap_err()
}

/// An index file superseded by a later one (a prune or index repair that
/// stopped before deleting it) is left out whichever of the two sorts
/// first: merged before its marker is read, the index is merged again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_superseded_index_file_is_left_out_in_either_order() {
    use backup_core::index::{IndexFile, IndexPack, INDEX_VERSION};

    let (mem, repo, out) = backed_up().await;
    let (real_pack, _) = pack_of(&out, BlobType::Data);
    let real = reopen(&mem).await;
    let blob = real
        .index()
        .entries_by_pack()
        .unwrap()
        .remove(&real_pack)
        .unwrap()
        .into_iter()
        .next()
        .unwrap();
    let mut seen = [false, false];
    for n in 0u8..64 {
        // A stale file that puts a real blob into a pack that does not
        // exist; a marker that supersedes it.
        let bogus = Id::hash(&[n]);
        let stale = IndexFile {
            version: INDEX_VERSION,
            supersedes: Vec::new(),
            packs: vec![IndexPack {
                id: bogus,
                size: 100,
                blobs: vec![blob],
            }],
        };
        let stale_id = repo.save_file(FileKind::Index, &stale).await.unwrap();
        let marker = IndexFile {
            version: INDEX_VERSION,
            supersedes: vec![stale_id],
            packs: Vec::new(),
        };
        let marker_id = repo.save_file(FileKind::Index, &marker).await.unwrap();
        let order = usize::from(stale_id.to_hex() < marker_id.to_hex());
        if !seen[order] {
            seen[order] = true;
            let loaded = reopen(&mem).await;
            assert!(
                loaded.index().packs().all(|(p, _)| *p != bogus),
                "the superseded file was merged (stale first: {})",
                order == 1
            );
            assert_eq!(
                loaded.index().get(BlobType::Data, &blob.id).unwrap().pack,
                real_pack
            );
        }
        mem.delete(FileKind::Index, &stale_id.to_hex())
            .await
            .unwrap();
        mem.delete(FileKind::Index, &marker_id.to_hex())
            .await
            .unwrap();
        if seen == [true, true] {
            return;
        }
    }
    panic!("64 tries did not give both orders: {seen:?}");
}
