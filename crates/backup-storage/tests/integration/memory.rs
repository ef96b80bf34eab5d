//! The in-memory backend (`InMemory` of `object_store`, through the adapter).

use backup_core::{FileKind, PutMode, Sink, SinkExt};
use backup_storage::{build, StorageOptions, StorageUrl};
use backup_testkit::conformance::Conformance;

#[tokio::test]
async fn conformance() {
    let mut options = StorageOptions::default();
    // Small parts: the large object goes through multipart upload and the
    // staging copy even in memory.
    options.multipart.threshold = 1024 * 1024;
    options.multipart.part_size = 256 * 1024;
    let sink = build(&StorageUrl::parse("memory:").unwrap(), &options).unwrap();
    assert_eq!(sink.location(), "memory:");
    Conformance::default().run(sink).await;
}

#[tokio::test]
async fn named_stores_are_shared_and_fresh_ones_are_not() {
    let options = StorageOptions::default();
    let a = build(
        &StorageUrl::parse("memory://shared-test").unwrap(),
        &options,
    )
    .unwrap();
    let b = build(
        &StorageUrl::parse("memory://shared-test").unwrap(),
        &options,
    )
    .unwrap();
    a.put(FileKind::Key, "k1", "v".into(), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(b.get(FileKind::Key, "k1").await.unwrap(), "v");

    let fresh = build(&StorageUrl::parse("memory:").unwrap(), &options).unwrap();
    assert!(fresh.get_opt(FileKind::Key, "k1").await.unwrap().is_none());
}

#[tokio::test]
async fn invalid_names_are_rejected() {
    let sink = build(
        &StorageUrl::parse("memory:").unwrap(),
        &StorageOptions::default(),
    )
    .unwrap();
    for name in ["", "a/b", ".hidden", "..", "x\n"] {
        let err = sink
            .put(FileKind::Key, name, "v".into(), PutMode::Create)
            .await
            .unwrap_err();
        assert!(
            matches!(err, backup_core::Error::Config(_)),
            "{name:?}: {err:?}"
        );
    }
}
