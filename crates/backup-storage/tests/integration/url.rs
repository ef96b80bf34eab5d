//! Parsing and redaction of repository URLs.

use std::path::PathBuf;

use backup_core::Error;
use backup_storage::ExposeSecret;
use backup_storage::StorageUrl;

fn parse(s: &str) -> StorageUrl {
    StorageUrl::parse(s).unwrap_or_else(|e| panic!("{s} should parse: {e}"))
}

fn config_error(s: &str) -> String {
    match StorageUrl::parse(s) {
        Err(Error::Config(message)) => message,
        other => panic!("{s} should be a configuration error, got {other:?}"),
    }
}

#[test]
fn local_paths() {
    assert_eq!(
        parse("/srv/backup"),
        StorageUrl::Local {
            path: PathBuf::from("/srv/backup")
        }
    );
    assert_eq!(
        parse("relative/dir"),
        StorageUrl::Local {
            path: PathBuf::from("relative/dir")
        }
    );
    assert_eq!(
        parse("./repo"),
        StorageUrl::Local {
            path: PathBuf::from("./repo")
        }
    );
    // A colon later in a path does not make it a URL.
    assert_eq!(
        parse("backups/2024:01"),
        StorageUrl::Local {
            path: PathBuf::from("backups/2024:01")
        }
    );
    assert_eq!(
        parse("file:///srv/backup"),
        StorageUrl::Local {
            path: PathBuf::from("/srv/backup")
        }
    );
    assert_eq!(
        parse("file://localhost/srv/b"),
        StorageUrl::Local {
            path: PathBuf::from("/srv/b")
        }
    );
    assert_eq!(
        parse("file:///srv/with%20space"),
        StorageUrl::Local {
            path: PathBuf::from("/srv/with space")
        }
    );
    assert_eq!(parse("/srv/backup").backend(), "local");
}

#[test]
fn cloud_urls() {
    match parse("s3://my-bucket/some/prefix/") {
        StorageUrl::S3 {
            bucket,
            prefix,
            credentials,
        } => {
            assert_eq!(bucket, "my-bucket");
            assert_eq!(prefix, "some/prefix");
            assert!(credentials.is_none());
        }
        other => panic!("{other:?}"),
    }
    match parse("s3://bucket") {
        StorageUrl::S3 { bucket, prefix, .. } => {
            assert_eq!(bucket, "bucket");
            assert_eq!(prefix, "");
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(
        parse("gs://b/p"),
        StorageUrl::Gcs {
            bucket: "b".into(),
            prefix: "p".into()
        }
    );
    assert_eq!(parse("GS://b/p").backend(), "gcs");
    assert_eq!(parse("s3://b/p").to_string(), "s3://b/p");
    assert_eq!(parse("gs://b").to_string(), "gs://b");
}

#[test]
fn memory_urls() {
    assert_eq!(parse("memory:"), StorageUrl::Memory { name: None });
    assert_eq!(parse("memory://"), StorageUrl::Memory { name: None });
    assert_eq!(
        parse("memory://cache"),
        StorageUrl::Memory {
            name: Some("cache".into())
        }
    );
    assert_eq!(parse("memory://cache").to_string(), "memory://cache");
    assert_eq!(parse("memory:").to_string(), "memory:");
}

#[test]
fn malformed_urls_are_config_errors_naming_the_url() {
    assert!(config_error("").contains("empty"));
    assert!(config_error("   ").contains("empty"));
    let m = config_error("ftp://host/x");
    assert!(
        m.contains("ftp://host/x") && m.contains("unknown scheme"),
        "{m}"
    );
    let m = config_error("s3://");
    assert!(m.contains("s3://") && m.contains("missing bucket"), "{m}");
    let m = config_error("s3:///prefix");
    assert!(m.contains("missing bucket"), "{m}");
    let m = config_error("gs://");
    assert!(m.contains("missing bucket"), "{m}");
    let m = config_error("s3:bucket");
    assert!(m.contains("s3:bucket"), "{m}");
    let m = config_error("s3://bucket/a//b");
    assert!(m.contains("invalid prefix"), "{m}");
    let m = config_error("s3://bucket/a/../b");
    assert!(m.contains("invalid prefix"), "{m}");
    let m = config_error("s3://bu/cket?x=1");
    assert!(m.contains("query"), "{m}");
    let m = config_error("s3://bad bucket/x");
    assert!(m.contains("invalid bucket"), "{m}");
    let m = config_error("file://remote-host/x");
    assert!(m.contains("remote host"), "{m}");
    let m = config_error("file:relative");
    assert!(m.contains("file:relative"), "{m}");
    let m = config_error("memory://a/b");
    assert!(m.contains("memory://a/b"), "{m}");
    let m = config_error("gs://user:pw@bucket/x");
    assert!(!m.contains("pw"), "credentials leaked: {m}");
}

#[test]
fn credentials_are_redacted() {
    let url = parse("s3://AKIAEXAMPLE:s3cr3t%2Fkey@bucket/prefix");
    for shown in [url.to_string(), url.redacted(), format!("{url:?}")] {
        assert!(!shown.contains("s3cr3t"), "secret shown in {shown}");
        assert!(!shown.contains("AKIAEXAMPLE"), "key id shown in {shown}");
        assert!(shown.contains("s3://bucket/prefix"), "{shown}");
    }
    match url {
        StorageUrl::S3 {
            credentials: Some(c),
            ..
        } => {
            assert_eq!(c.access_key_id, "AKIAEXAMPLE");
            assert_eq!(c.secret_access_key.expose_secret(), "s3cr3t/key");
            assert!(!format!("{c:?}").contains("s3cr3t"));
        }
        other => panic!("{other:?}"),
    }
    // Unparseable input with credentials does not echo them either.
    let m = config_error("s3://key:secret@/x");
    assert!(!m.contains("secret"), "{m}");
    let m = config_error("s3://key-only@bucket/x");
    assert!(!m.contains("key-only"), "{m}");
}

#[test]
fn from_str_matches_parse() {
    let url: StorageUrl = "gs://b/p".parse().unwrap();
    assert_eq!(url, parse("gs://b/p"));
}
