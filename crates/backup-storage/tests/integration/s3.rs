//! The S3 backend against a real S3 server (s3s-fs, in-process).

use std::time::{Duration, Instant};

use backup_core::{Error, FileKind, PutMode, Sink};
use backup_storage::{build, StorageOptions, StorageUrl};
use backup_testkit::conformance::{pattern, random_name, Conformance};
use backup_testkit::s3::{S3Server, ACCESS_KEY_ID, SECRET_ACCESS_KEY};

use crate::small_multipart;

fn sink(server: &S3Server, prefix: &str) -> std::sync::Arc<dyn Sink> {
    let url = StorageUrl::parse(&server.url(prefix)).unwrap();
    build(&url, &small_multipart(server.storage_options())).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn conformance() {
    let server = S3Server::start();
    let sink = sink(&server, "repo/one");
    assert!(
        sink.location().starts_with("s3://backup-test/repo/one"),
        "{}",
        sink.location()
    );
    assert!(
        sink.location().contains(&server.endpoint()),
        "{}",
        sink.location()
    );
    Conformance::default().run(sink).await;

    let requests = server.requests();
    // Large objects really went through multipart uploads, and create-only
    // ones through the conditional multipart copy.
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("POST") && r.contains("uploads")),
        "no multipart upload in {requests:#?}"
    );
    assert!(
        requests
            .iter()
            .any(|r| r.starts_with("PUT") && r.contains("partNumber")),
        "no part upload"
    );
    assert!(
        requests.iter().any(|r| r.contains("/tmp/")),
        "no staging upload"
    );
    // Nothing is left in the staging area.
    let staging = server.data_dir().join("backup-test/repo/one/tmp");
    let left: Vec<_> = std::fs::read_dir(&staging)
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(left.is_empty(), "staging objects left: {left:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn objects_live_under_the_prefix_in_kind_directories() {
    let server = S3Server::start();
    let sink = sink(&server, "team/repo");
    let pack = random_name();
    sink.put(FileKind::Pack, &pack, "p".into(), PutMode::Create)
        .await
        .unwrap();
    sink.put(FileKind::Config, "config", "c".into(), PutMode::Create)
        .await
        .unwrap();
    let bucket = server.data_dir().join("backup-test");
    assert_eq!(
        std::fs::read(bucket.join("team/repo/data").join(&pack[..2]).join(&pack)).unwrap(),
        b"p"
    );
    assert_eq!(
        std::fs::read(bucket.join("team/repo/config")).unwrap(),
        b"c"
    );

    // Another prefix in the same bucket is another repository.
    let other = self::sink(&server, "team/other");
    assert!(other.list(FileKind::Pack).await.unwrap().is_empty());
    assert!(matches!(
        other.get(FileKind::Config, "config").await,
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn create_sends_a_conditional_put() {
    let server = S3Server::start();
    let sink = sink(&server, "cond");
    let name = random_name();
    sink.put(FileKind::Lock, &name, "a".into(), PutMode::Create)
        .await
        .unwrap();
    let err = sink
        .put(FileKind::Lock, &name, "b".into(), PutMode::Create)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::AlreadyExists { .. }), "{err:?}");
    assert_eq!(sink.get(FileKind::Lock, &name).await.unwrap(), "a");
    let puts: Vec<_> = server
        .requests()
        .into_iter()
        .filter(|r| r.starts_with("PUT") && r.contains(&name))
        .collect();
    assert_eq!(puts.len(), 2, "{puts:?}");
    assert!(
        puts.iter().all(|r| r.ends_with("[conditional]")),
        "{puts:?}"
    );
    // Overwrites are plain puts.
    sink.put(FileKind::Lock, &name, "c".into(), PutMode::Overwrite)
        .await
        .unwrap();
    let last = server
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.starts_with("PUT"))
        .unwrap();
    assert!(!last.ends_with("[conditional]"), "{last}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_from_the_environment() {
    let server = S3Server::start();
    // Only variables that every other test overrides with options are set,
    // so tests running at the same time are not affected.
    let vars = server.env();
    for (key, value) in &vars {
        std::env::set_var(key, value);
    }
    let built = build(
        &StorageUrl::parse(&server.url("from-env")).unwrap(),
        &StorageOptions::default(),
    );
    for (key, _) in &vars {
        std::env::remove_var(key);
    }
    let sink = built.unwrap();
    sink.put(FileKind::Key, "k", "v".into(), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(sink.get(FileKind::Key, "k").await.unwrap(), "v");
    assert!(
        sink.location().contains(&server.endpoint()),
        "{}",
        sink.location()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_in_the_url_are_used_and_never_shown() {
    let server = S3Server::start();
    let mut options = server.storage_options();
    options.s3.access_key_id = None;
    options.s3.secret_access_key = None;
    let url = format!("s3://{ACCESS_KEY_ID}:{SECRET_ACCESS_KEY}@backup-test/creds");
    let sink = build(&StorageUrl::parse(&url).unwrap(), &options).unwrap();
    sink.put(FileKind::Key, "k", "v".into(), PutMode::Create)
        .await
        .unwrap();
    assert_eq!(sink.get(FileKind::Key, "k").await.unwrap(), "v");
    assert!(
        !sink.location().contains(SECRET_ACCESS_KEY),
        "{}",
        sink.location()
    );
    assert!(!format!("{sink:?}").contains(SECRET_ACCESS_KEY));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_credentials_are_permission_denied() {
    let server = S3Server::start();
    let mut options = server.storage_options();
    options.s3.secret_access_key = Some("not-the-secret".into());
    let url = StorageUrl::parse(&server.url("denied")).unwrap();
    let sink = build(&url, &options).unwrap();
    let start = Instant::now();
    let err = sink
        .put(FileKind::Key, "k", "v".into(), PutMode::Create)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::PermissionDenied(_)), "{err:?}");
    assert!(!err.to_string().contains("not-the-secret"), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(10),
        "a permanent error must not be retried"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unreachable_endpoint_fails_in_bounded_time_with_a_clear_message() {
    // A port that nothing listens on.
    let port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let mut options = StorageOptions::default();
    options.s3.endpoint = Some(format!("http://127.0.0.1:{port}"));
    options.s3.allow_http = Some(true);
    options.s3.region = Some("us-east-1".into());
    options.s3.access_key_id = Some("id".into());
    options.s3.secret_access_key = Some("secret".into());
    backup_testkit::install_tls_provider();
    let sink = build(&StorageUrl::parse("s3://bucket/repo").unwrap(), &options).unwrap();
    let start = Instant::now();
    let err = sink.get(FileKind::Config, "config").await.unwrap_err();
    let elapsed = start.elapsed();
    let message = err.to_string();
    assert!(
        elapsed < Duration::from_secs(30),
        "took {elapsed:?}: {message}"
    );
    assert!(matches!(err, Error::Transient { .. }), "{err:?}");
    assert!(
        message.contains(&format!("127.0.0.1:{port}")),
        "the message must name the endpoint: {message}"
    );
    assert!(message.contains("gave up after"), "{message}");
    assert!(!message.contains("secret"), "{message}");
}

#[test]
fn plain_http_endpoint_needs_allow_http() {
    let mut options = StorageOptions::default();
    options.s3.endpoint = Some("http://127.0.0.1:9".into());
    options.s3.allow_http = Some(false);
    backup_testkit::install_tls_provider();
    let err = build(&StorageUrl::parse("s3://bucket/x").unwrap(), &options).unwrap_err();
    match err {
        Error::Config(m) => assert!(
            m.contains("s3.allow-http") && m.contains("AWS_ALLOW_HTTP"),
            "{m}"
        ),
        other => panic!("{other:?}"),
    }
}

#[test]
fn parts_below_the_s3_minimum_are_rejected() {
    let mut options = StorageOptions::default();
    options.multipart.part_size = 1024;
    let err = build(&StorageUrl::parse("s3://bucket/x").unwrap(), &options).unwrap_err();
    assert!(
        matches!(err, Error::Config(ref m) if m.contains("5MiB")),
        "{err:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ranged_reads_of_a_multipart_object() {
    let server = S3Server::start();
    let sink = sink(&server, "ranges");
    let name = random_name();
    let data = pattern(5, 11 * 1024 * 1024);
    sink.put(FileKind::Pack, &name, data.clone(), PutMode::Overwrite)
        .await
        .unwrap();
    let start = 5 * 1024 * 1024 - 3;
    let got = sink
        .get_range(FileKind::Pack, &name, start..start + 7)
        .await
        .unwrap();
    assert_eq!(got, data.slice(start as usize..start as usize + 7));
    let err = sink
        .get_range(
            FileKind::Pack,
            &name,
            data.len() as u64 - 1..data.len() as u64 + 1,
        )
        .await
        .unwrap_err();
    assert!(
        err.is_corruption() || matches!(err, Error::Generic { .. }),
        "{err:?}"
    );
}
