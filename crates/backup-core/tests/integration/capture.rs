//! Capture records: pieces stored, listed from names alone, read back
//! verified; kept by prune, checked by verify.

use std::time::Duration;

use backup_core::capture::PieceInfo;
use backup_core::progress::NoProgress;
use backup_core::prune::{prune, PruneOptions};
use backup_core::snapshot::SourceDescriptor;
use backup_core::verify::{verify, VerifyOptions};
use backup_core::FileKind;

use crate::support::{backed_up, pseudo_random, reopen};

fn piece(stream: &str, first: u64, last: u64) -> PieceInfo {
    PieceInfo {
        stream: stream.to_owned(),
        kind: "postgres-wal".to_owned(),
        source: SourceDescriptor {
            kind: "postgres".to_owned(),
            url: "postgres://h/?mode=physical".to_owned(),
        },
        identity: "7000000000000000001".to_owned(),
        first: format!("{first:016X}"),
        last: format!("{last:016X}"),
        time_first: None,
        time_last: None,
        details: serde_json::json!({"timeline": 1}),
    }
}

#[tokio::test]
async fn pieces_round_trip_and_survive_prune() {
    let (mem, repo, _) = backed_up().await;
    let stream = repo.capture_stream("postgres-wal", "7000000000000000001");
    assert_eq!(stream.len(), 16);
    assert_eq!(
        stream,
        repo.capture_stream("postgres-wal", "7000000000000000001")
    );
    assert_ne!(stream, repo.capture_stream("postgres-wal", "other"));
    let a = pseudo_random(3_000_000, 9);
    let b = b"wal bytes ".repeat(50_000);
    let wait = Duration::from_secs(0);
    let na = repo
        .put_capture(piece(&stream, 0, 3_000_000), &a, wait)
        .await
        .unwrap();
    let nb = repo
        .put_capture(piece(&stream, 3_000_000, 3_500_000), &b, wait)
        .await
        .unwrap();
    let gap = repo
        .put_capture_gap(
            piece(&stream, 3_500_000, 4_000_000),
            "removed by the server",
            wait,
        )
        .await
        .unwrap();
    // Listed in order from names alone.
    let names = repo.captures().await.unwrap();
    assert_eq!(names, vec![na.clone(), nb.clone(), gap.clone()]);
    let rec = repo.load_capture(&na).await.unwrap();
    assert_eq!(rec.size, 3_000_000);
    assert_eq!(repo.read_capture(&rec).await.unwrap(), a);
    let rec_b = repo.load_capture(&nb).await.unwrap();
    assert_eq!(repo.read_capture(&rec_b).await.unwrap(), b);
    let g = repo.load_capture(&gap).await.unwrap();
    assert_eq!(g.gap.as_deref(), Some("removed by the server"));
    assert!(repo.read_capture(&g).await.is_err());

    // Prune keeps the packs of records and removes those of deleted ones.
    let indexed = reopen(&mem).await;
    let report = prune(&indexed, &PruneOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(report.capture_packs, 2);
    assert_eq!(report.packs_unindexed, 0);
    assert_eq!(repo.read_capture(&rec).await.unwrap(), a);
    repo.delete_capture(&na).await.unwrap();
    let indexed = reopen(&mem).await;
    let report = prune(&indexed, &PruneOptions::default(), &NoProgress)
        .await
        .unwrap();
    assert_eq!(report.packs_unindexed, 1, "{report:?}");
    assert!(repo
        .sink()
        .get(FileKind::Pack, &rec.pack.unwrap().to_hex())
        .await
        .is_err());
    assert_eq!(repo.read_capture(&rec_b).await.unwrap(), b);

    // Verify reads capture data and finds a damaged piece.
    let ok = verify(
        repo.clone(),
        &VerifyOptions {
            read_data_percent: Some(100.0),
            ..VerifyOptions::default()
        },
        &NoProgress,
    )
    .await
    .unwrap();
    assert!(ok.is_ok(), "{:?}", ok.problems);
    assert_eq!(ok.captures_checked, 2);
    assert_eq!(ok.captures_read, 1);
    assert_eq!(ok.unindexed_packs, 0);
    let pack = rec_b.pack.unwrap().to_hex();
    let mut bytes = repo
        .sink()
        .get(FileKind::Pack, &pack)
        .await
        .unwrap()
        .to_vec();
    bytes[10] ^= 1;
    mem.tamper(FileKind::Pack, &pack, bytes.into());
    let bad = verify(
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
        bad.problems.iter().any(|p| p.kind == FileKind::Capture),
        "{:?}",
        bad.problems
    );
}

#[tokio::test]
async fn one_follower_holds_a_stream() {
    let (_mem, repo, _) = backed_up().await;
    let stream = repo.capture_stream("mongodb-oplog", "rs0/0123");
    let first = repo.claim_capture(&stream).await.unwrap();
    assert_eq!(first.stream(), stream);
    // A second follower is refused while the first holds the lease.
    let refused = repo.claim_capture(&stream).await.unwrap_err();
    assert!(
        matches!(&refused, backup_core::Error::Locked(m) if m.contains(&stream)),
        "{refused}"
    );
    // Another stream is free; lock handling ignores leases.
    let other = repo
        .claim_capture(&repo.capture_stream("mongodb-oplog", "rs1/4567"))
        .await
        .unwrap();
    assert!(repo.locks().await.unwrap().is_empty());
    first.renew_now().await.unwrap();
    first.renew().await.unwrap();
    // Released: the next follower gets it, and the old holder, renewing,
    // learns that it lost it.
    let name = format!("capture-{stream}");
    let held = repo.sink().get(FileKind::Lock, &name).await.unwrap();
    first.release().await.unwrap();
    let second = repo.claim_capture(&stream).await.unwrap();
    repo.sink()
        .put(FileKind::Lock, &name, held, backup_core::PutMode::Overwrite)
        .await
        .unwrap();
    let lost = second.renew_now().await.unwrap_err();
    assert!(matches!(lost, backup_core::Error::Locked(_)), "{lost}");
    other.release().await.unwrap();
}
