//! The Google Cloud Storage backend against the in-process XML API fake.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backup_core::{Error, FileKind, PutMode, Sink};
use backup_storage::{build, StorageUrl};
use backup_testkit::conformance::{random_name, Conformance};
use backup_testkit::gcs::GcsServer;

use crate::small_multipart;

fn sink(server: &GcsServer, prefix: &str) -> Arc<dyn Sink> {
    let url = StorageUrl::parse(&server.url(prefix)).unwrap();
    build(&url, &small_multipart(server.storage_options())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let server = GcsServer::start();
    // Small pages exercise continuation tokens.
    server.set_page_size(40);
    let sink = sink(&server, "repo/one");
    assert_eq!(sink.location(), "gs://backup-test/repo/one");
    Conformance::default().run(sink).await;

    let requests = server.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("POST") && r.contains("uploads")),
        "no multipart upload"
    );
    assert!(
        requests.iter().any(|r| r.contains("continuation-token")),
        "no paginated listing"
    );
    assert_eq!(server.open_uploads(), 0, "multipart uploads left open");
    assert!(
        server.object_names("backup-test").is_empty(),
        "objects left: {:?}",
        server.object_names("backup-test")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_live_under_the_prefix_in_kind_directories() {
    let server = GcsServer::start();
    let sink = sink(&server, "team/repo");
    let pack = random_name();
    sink.put(FileKind::Pack, &pack, "p".into(), PutMode::Create)
        .await
        .unwrap();
    sink.put(FileKind::Config, "config", "c".into(), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(
        server.object_names("backup-test"),
        [
            "team/repo/config".to_owned(),
            format!("team/repo/data/{}/{pack}", &pack[..2])
        ]
    );
    // Create-only writes carry the generation precondition, overwrites not.
    let put = |name: &str| {
        server
            .requests()
            .into_iter()
            .rev()
            .find(|r| r.starts_with("PUT") && r.contains(name))
            .unwrap()
    };
    assert!(
        put(&pack).ends_with("[if-generation-match=0]"),
        "{}",
        put(&pack)
    );
    sink.put(FileKind::Config, "config", "c2".into(), PutMode::Overwrite)
        .await
        .unwrap();
    assert!(
        !put("config").contains("if-generation-match"),
        "{}",
        put("config")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_from_the_environment() {
    let server = GcsServer::start();
    let vars = server.env();
    for (key, value) in &vars {
        std::env::set_var(key, value);
    }
    let built = build(
        &StorageUrl::parse(&server.url("from-env")).unwrap(),
        &backup_storage::StorageOptions::default(),
    );
    for (key, _) in &vars {
        std::env::remove_var(key);
    }
    let sink = built.unwrap();
    sink.put(FileKind::Key, "k", "v".into(), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(sink.get(FileKind::Key, "k").await.unwrap(), "v");
    assert_eq!(server.object_names("backup-test"), ["from-env/keys/k"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_are_retried() {
    let server = GcsServer::start();
    let sink = sink(&server, "flaky");
    server.fail_next_requests(4);
    sink.put(FileKind::Key, "k", "v".into(), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(sink.get(FileKind::Key, "k").await.unwrap(), "v");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_server_errors_end_as_transient_errors() {
    let server = GcsServer::start();
    let sink = sink(&server, "down");
    server.fail_next_requests(1000);
    let start = Instant::now();
    let err = sink.get(FileKind::Key, "k").await.unwrap_err();
    assert!(start.elapsed() < Duration::from_secs(30));
    assert!(matches!(err, Error::Transient { .. }), "{err:?}");
    assert!(err.to_string().contains("gave up after"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn missing_bucket_reads_are_not_found() {
    let server = GcsServer::start();
    let url = StorageUrl::parse("gs://no-such-bucket/x").unwrap();
    let sink = build(&url, &server.storage_options()).unwrap();
    let err = sink.get(FileKind::Config, "config").await.unwrap_err();
    assert!(matches!(err, Error::NotFound { .. }), "{err:?}");
}
