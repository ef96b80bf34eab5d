//! In-memory repositories: `memory:` and `memory://name` build the core's
//! `MemorySink`; the `object_store` adapter is also run over `InMemory`, which
//! exercises its multipart upload and staging copy without a network.

use std::sync::Arc;

use backup_core::{FileKind, PutMode, Sink, SinkExt};
use backup_storage::MultipartOptions;
use backup_storage::{build, ObjectStoreSink, StorageOptions, StorageUrl};
use backup_testkit::conformance::Conformance;

#[tokio::test]
async fn conformance_of_memory_urls() {
    let sink = build(
        &StorageUrl::parse("memory:").unwrap(),
        &StorageOptions::default(),
    )
    .unwrap();
    assert_eq!(sink.location(), "memory:");
    Conformance::default().run(sink).await;
}

#[tokio::test]
async fn conformance_of_the_object_store_adapter_in_memory() {
    let store = Arc::new(object_store::memory::InMemory::new());
    // Small parts: the large object goes through multipart upload and the
    // staging copy even in memory.
    let mut multipart = MultipartOptions::default();
    multipart.threshold = 1024 * 1024;
    multipart.part_size = 256 * 1024;
    let sink = ObjectStoreSink::new(store, "", "memory", "memory:")
        .unwrap()
        .with_multipart(multipart);
    Conformance::default().run(Arc::new(sink)).await;
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
    assert_eq!(a.location(), "memory://shared-test");
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
