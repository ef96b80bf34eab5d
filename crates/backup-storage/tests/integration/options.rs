//! Storage options: typed keys, values, serde.

use std::time::Duration;

use backup_core::Error;
use backup_storage::{StorageOptionKey, StorageOptions};

#[test]
fn unknown_keys_are_rejected() {
    for key in [
        "s3.endpont",
        "endpoint",
        "s3",
        "",
        "retry.max_attempt",
        "gcs.bucket",
    ] {
        match key.parse::<StorageOptionKey>() {
            Err(Error::Config(m)) => {
                assert!(m.contains("unknown storage option"), "{m}");
                assert!(
                    m.contains("s3.endpoint"),
                    "the message lists known keys: {m}"
                );
            }
            other => panic!("{key:?} should be rejected, got {other:?}"),
        }
    }
    let mut options = StorageOptions::default();
    assert!(matches!(
        options.set_pair("s3.regoin=eu-west-1"),
        Err(Error::Config(_))
    ));
    assert!(matches!(
        options.set_pair("no-equals-sign"),
        Err(Error::Config(_))
    ));
}

#[test]
fn keys_parse_leniently_but_exactly() {
    assert_eq!(
        "s3.endpoint".parse::<StorageOptionKey>().unwrap(),
        StorageOptionKey::S3Endpoint
    );
    assert_eq!(
        "S3.Allow_Http".parse::<StorageOptionKey>().unwrap(),
        StorageOptionKey::S3AllowHttp
    );
    assert_eq!(
        StorageOptionKey::MultipartPartSize.to_string(),
        "multipart.part-size"
    );
}

#[test]
fn values_are_typed() {
    let options = StorageOptions::from_pairs([
        "s3.endpoint=http://127.0.0.1:9000",
        "s3.allow-http=true",
        "s3.secret-access-key=topsecret",
        "multipart.threshold=64MiB",
        "multipart.part-size=8388608",
        "retry.max-attempts=3",
        "retry.max-elapsed=1m",
        "http.connect-timeout=2s",
    ])
    .unwrap();
    assert_eq!(
        options.s3.endpoint.as_deref(),
        Some("http://127.0.0.1:9000")
    );
    assert_eq!(options.s3.allow_http, Some(true));
    assert_eq!(options.multipart.threshold, 64 << 20);
    assert_eq!(options.multipart.part_size, 8 << 20);
    assert_eq!(options.retry.max_attempts, 3);
    assert_eq!(options.retry.max_elapsed, Duration::from_secs(60));
    assert_eq!(options.http.connect_timeout, Duration::from_secs(2));
    assert!(
        !format!("{options:?}").contains("topsecret"),
        "secrets must not show in Debug"
    );

    let mut options = StorageOptions::default();
    for (pair, expected) in [
        ("s3.allow-http=maybe", "true or false"),
        ("multipart.threshold=lots", "size"),
        ("retry.max-elapsed=soon", "duration"),
        ("retry.max-attempts=-1", "whole number"),
    ] {
        match options.set_pair(pair) {
            Err(Error::Config(m)) => assert!(m.contains(expected), "{pair}: {m}"),
            other => panic!("{pair} should fail, got {other:?}"),
        }
    }
    match options.set_pair("s3.secret-access-key") {
        Err(Error::Config(m)) => assert!(m.contains("key=value")),
        other => panic!("{other:?}"),
    }
}

#[test]
fn validation() {
    let mut options = StorageOptions::default();
    options.validate().unwrap();
    options.retry.max_attempts = 0;
    assert!(
        matches!(options.validate(), Err(Error::Config(m)) if m.contains("retry.max-attempts"))
    );
    let mut options = StorageOptions::default();
    options.multipart.concurrency = 0;
    assert!(
        matches!(options.validate(), Err(Error::Config(m)) if m.contains("multipart.concurrency"))
    );
}

#[test]
fn serde_round_trip_and_unknown_fields() {
    let mut options = StorageOptions::default();
    options.s3.region = Some("eu-central-1".into());
    options.multipart.threshold = 48 << 20;
    options.retry.initial_backoff = Duration::from_millis(250);
    let json = serde_json::to_string(&options).unwrap();
    assert!(json.contains("\"48MiB\""), "{json}");
    assert!(json.contains("\"250ms\""), "{json}");
    let back: StorageOptions = serde_json::from_str(&json).unwrap();
    assert_eq!(back, options);

    let partial: StorageOptions =
        serde_json::from_str(r#"{"s3": {"endpoint": "http://x:1"}}"#).unwrap();
    assert_eq!(partial.s3.endpoint.as_deref(), Some("http://x:1"));
    assert_eq!(partial.multipart, StorageOptions::default().multipart);

    let err = serde_json::from_str::<StorageOptions>(r#"{"s3": {"endpiont": "x"}}"#).unwrap_err();
    assert!(err.to_string().contains("endpiont"), "{err}");
    let err = serde_json::from_str::<StorageOptions>(r#"{"azure": {}}"#).unwrap_err();
    assert!(err.to_string().contains("azure"), "{err}");
}
