//! The retry layer, driven by fault injection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backup_core::{Error, FileKind, MemorySink, PutMode, Sink};
use backup_storage::layers::{RetryPolicy, RetrySink};
use backup_testkit::faulty::{Fault, FaultySink, Op};

fn fast(max_attempts: u32) -> RetryPolicy {
    RetryPolicy::with_max_attempts(max_attempts).with_backoff(
        Duration::from_millis(1),
        Duration::from_millis(5),
        Duration::from_secs(10),
    )
}

fn faulty() -> Arc<FaultySink> {
    Arc::new(FaultySink::new(Arc::new(MemorySink::new())))
}

#[tokio::test]
async fn transient_put_failures_are_retried_to_success() {
    let faulty = faulty();
    faulty.fail_next_puts(3, Fault::Transient);
    let sink = RetrySink::new(Arc::clone(&faulty), fast(5));
    sink.put(FileKind::Pack, "ab12", "data".into(), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(faulty.puts(), 4);
    assert_eq!(faulty.injected(), 3);
    assert_eq!(sink.get(FileKind::Pack, "ab12").await.unwrap(), "data");
}

#[tokio::test]
async fn permanent_failures_are_not_retried() {
    let faulty = faulty();
    faulty.fail_next_puts(1, Fault::Permanent);
    let sink = RetrySink::new(Arc::clone(&faulty), fast(5));
    let err = sink
        .put(FileKind::Pack, "ab12", "data".into(), PutMode::Create)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Generic { .. }), "{err:?}");
    assert_eq!(faulty.puts(), 1);
}

#[tokio::test]
async fn already_exists_and_not_found_are_not_retried() {
    let faulty = faulty();
    let sink = RetrySink::new(Arc::clone(&faulty), fast(5));
    sink.put(FileKind::Key, "k", "1".into(), PutMode::Create)
        .await
        .unwrap();
    let err = sink
        .put(FileKind::Key, "k", "2".into(), PutMode::Create)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    assert_eq!(faulty.puts(), 2);
    assert!(matches!(
        sink.get(FileKind::Key, "missing").await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(faulty.gets(), 1);
}

#[tokio::test]
async fn attempts_are_bounded() {
    let faulty = faulty();
    faulty.fail_next_puts(100, Fault::Transient);
    let sink = RetrySink::new(Arc::clone(&faulty), fast(4));
    let err = sink
        .put(FileKind::Pack, "ab12", "data".into(), PutMode::Create)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Transient { .. }), "{err:?}");
    assert!(
        err.to_string().contains("gave up after 4 attempts"),
        "{err}"
    );
    assert_eq!(faulty.puts(), 4);
}

#[tokio::test]
async fn total_time_is_bounded() {
    let faulty = faulty();
    faulty.fail_next_puts(1000, Fault::Transient);
    let policy = RetryPolicy::with_max_attempts(1000).with_backoff(
        Duration::from_millis(20),
        Duration::from_millis(50),
        Duration::from_millis(300),
    );
    let sink = RetrySink::new(Arc::clone(&faulty), policy);
    let start = Instant::now();
    sink.put(FileKind::Pack, "ab12", "data".into(), PutMode::Create)
        .await
        .unwrap_err();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(faulty.puts() < 30, "{}", faulty.puts());
}

#[tokio::test]
async fn other_operations_are_retried_too() {
    let faulty = faulty();
    let sink = RetrySink::new(Arc::clone(&faulty), fast(3));
    sink.put(FileKind::Index, "i1", "index".into(), PutMode::Create)
        .await
        .unwrap();
    faulty.fail_next_gets(2, Fault::Transient);
    assert_eq!(sink.get(FileKind::Index, "i1").await.unwrap(), "index");
    faulty.fail_next_gets(2, Fault::Transient);
    assert_eq!(
        sink.get_range(FileKind::Index, "i1", 1..3).await.unwrap(),
        "nd"
    );
    faulty.fail_next(Op::List, 2, Fault::Transient);
    assert_eq!(sink.list(FileKind::Index).await.unwrap().len(), 1);
    faulty.fail_next(Op::Delete, 2, Fault::Transient);
    sink.delete(FileKind::Index, "i1").await.unwrap();
    assert!(sink.list(FileKind::Index).await.unwrap().is_empty());
}

#[tokio::test]
async fn a_create_whose_success_was_lost_is_recognised() {
    let faulty = faulty();
    faulty.fail_next_puts(1, Fault::StoredButLost);
    let sink = RetrySink::new(Arc::clone(&faulty), fast(3));
    // The first attempt stores the lock but reports a broken connection;
    // the retry finds the same bytes and counts the create as done.
    sink.put(FileKind::Lock, "l1", "mine".into(), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(faulty.puts(), 2);

    // Someone else's lock with different content stays AlreadyExists.
    faulty.fail_next_puts(1, Fault::Transient);
    let err = sink
        .put(FileKind::Lock, "l1", "theirs".into(), PutMode::Create)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
}

#[tokio::test]
async fn truncating_faults_reach_the_caller() {
    let faulty = faulty();
    faulty.fail_next_puts(1, Fault::Truncate { keep: 3 });
    faulty
        .put(FileKind::Pack, "ab", "abcdef".into(), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(faulty.get(FileKind::Pack, "ab").await.unwrap(), "abc");
    faulty.fail_next_gets(1, Fault::Truncate { keep: 1 });
    assert_eq!(faulty.get(FileKind::Pack, "ab").await.unwrap(), "a");
    faulty.fail_puts_of_kind(FileKind::Snapshot, Fault::Permanent);
    assert!(faulty
        .put(FileKind::Snapshot, "s", "x".into(), PutMode::Create)
        .await
        .is_err());
    assert!(faulty
        .put(FileKind::Index, "i", "x".into(), PutMode::Create)
        .await
        .is_ok());
    faulty.clear_faults();
    assert!(faulty
        .put(FileKind::Snapshot, "s", "x".into(), PutMode::Create)
        .await
        .is_ok());
}

/// A lease claim (`SinkExt::create_claim`) whose write was applied but
/// whose response was lost inside one attempt (an HTTP client's own retry
/// then gets `412`) finds its own bytes: it holds the lease. A lease with
/// other bytes is another writer's.
#[tokio::test]
async fn a_claim_finding_its_own_bytes_holds_the_lease() {
    use backup_core::SinkExt as _;
    let faulty = faulty();
    faulty
        .put(FileKind::Lock, "capture-s", "mine".into(), PutMode::Create)
        .await
        .unwrap();
    let sink = RetrySink::new(Arc::clone(&faulty), fast(5));
    assert!(sink
        .create_claim(FileKind::Lock, "capture-s", "mine".into())
        .await
        .unwrap());
    assert!(!sink
        .create_claim(FileKind::Lock, "capture-s", "theirs".into())
        .await
        .unwrap());
    assert!(sink
        .create_claim(FileKind::Lock, "slot-x", "new".into())
        .await
        .unwrap());
}
