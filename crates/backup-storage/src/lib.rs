//! Storage backends of the backup system: local disk, Amazon S3, Google
//! Cloud Storage and memory, behind the [`Sink`] trait of `backup-core`.
//!
//! # Overview
//!
//! - [`StorageUrl`] parses a repository location: a directory path,
//!   `file:///path`, `s3://bucket/prefix`, `gs://bucket/prefix`, `memory:` or
//!   `memory://name`. Its [`fmt::Display`](std::fmt::Display) never shows
//!   credentials.
//! - [`StorageOptions`] holds typed settings (endpoint, region, timeouts,
//!   multipart sizes, retries); [`StorageOptionKey`] parses `key=value`
//!   pairs and rejects unknown keys.
//! - [`build`] is the one place where a URL becomes a backend; it wraps the
//!   backend in [`layers::RetrySink`] (and, in crash-test builds, the
//!   failpoint layer).
//! - [`LocalSink`] stores files in a directory (temporary file, fsync,
//!   atomic publish).
//! - [`ObjectStoreSink`] adapts any [`object_store::ObjectStore`]; S3, GCS
//!   and memory all use it.
//!
//! # Example
//!
//! ```
//! use backup_core::{FileKind, PutMode, Sink, SinkExt};
//! use backup_storage::{build, StorageOptions, StorageUrl};
//!
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> backup_core::Result<()> {
//! let url = StorageUrl::parse("memory:")?;
//! let sink = build(&url, &StorageOptions::default())?;
//! sink.put(FileKind::Snapshot, "a1b2", "hello".into(), PutMode::Create).await?;
//! assert_eq!(sink.get(FileKind::Snapshot, "a1b2").await?, "hello");
//! assert_eq!(sink.list_names(FileKind::Snapshot).await?, ["a1b2"]);
//! // A second create-only put of the same name is refused.
//! let again = sink.put(FileKind::Snapshot, "a1b2", "other".into(), PutMode::Create).await;
//! assert!(matches!(again, Err(backup_core::Error::AlreadyExists { .. })));
//! # Ok(())
//! # }
//! ```
//!
//! # Crate features
//!
//! | feature | default | enables |
//! |---|---|---|
//! | `local` | yes | [`LocalSink`]: plain paths and `file://` URLs |
//! | `s3` | no | `s3://` URLs (the `aws` client of `object_store`) |
//! | `gcs` | no | `gs://` URLs (the `gcp` client of `object_store`) |
//! | `failpoints` | no | for crash tests only: `BACKUP_FAILPOINT` kills the process at its Nth storage write (module `failpoint`) |
//!
//! The in-memory backend is always available. A URL whose backend is not
//! compiled in gives [`Error::Config`](backup_core::Error::Config) naming the missing feature.
//!
//! # Environment
//!
//! Cloud credentials and endpoints come from each cloud's usual environment;
//! [`StorageOptions`] and credentials in the URL override them.
//!
//! S3 (read by `AmazonS3Builder::from_env` of `object_store`):
//!
//! | variable | meaning |
//! |---|---|
//! | `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY` | static credentials |
//! | `AWS_SESSION_TOKEN` | session token of temporary credentials |
//! | `AWS_REGION`, `AWS_DEFAULT_REGION` | the bucket's region (default `us-east-1`) |
//! | `AWS_ENDPOINT_URL`, `AWS_ENDPOINT` | endpoint of an S3-compatible store (`MinIO`, Ceph, ...) |
//! | `AWS_ALLOW_HTTP` | `true` to allow a plain-HTTP endpoint |
//! | `AWS_VIRTUAL_HOSTED_STYLE_REQUEST` | `true` for `bucket.endpoint` addressing (default: path style) |
//! | `AWS_WEB_IDENTITY_TOKEN_FILE`, `AWS_ROLE_ARN` | web-identity role (EKS) |
//! | `AWS_CONTAINER_CREDENTIALS_RELATIVE_URI` | ECS task role |
//! | `AWS_COPY_IF_NOT_EXISTS` | how create-only multipart uploads are published (default `multipart`; for example `header: cf-copy-destination-if-none-match: *` for R2) |
//!
//! Without static credentials, instance metadata (`IMDSv2`) is tried.
//!
//! Google Cloud Storage (read by `GoogleCloudStorageBuilder::from_env` of
//! `object_store`):
//!
//! | variable | meaning |
//! |---|---|
//! | `GOOGLE_SERVICE_ACCOUNT`, `GOOGLE_SERVICE_ACCOUNT_PATH` | path of a service-account JSON key |
//! | `GOOGLE_SERVICE_ACCOUNT_KEY` | a service-account JSON key, inline |
//! | `GOOGLE_APPLICATION_CREDENTIALS` | application default credentials file |
//! | `GOOGLE_BASE_URL` | XML API base URL (default `https://storage.googleapis.com`) |
//!
//! Without any of them, the application default credentials of `gcloud`
//! and then the metadata server of a GCE instance are used.
//!
//! # Guarantees
//!
//! Every backend honours the contract of [`Sink`]: puts are all or nothing,
//! [`PutMode::Create`](backup_core::PutMode::Create) is atomic (hard link on
//! disk, conditional requests in the clouds, also for multipart uploads),
//! reads of missing files give [`Error::NotFound`](backup_core::Error::NotFound), ranged reads return
//! exactly the requested bytes or an error, deletes are idempotent, and
//! transient failures are [`Error::Transient`](backup_core::Error::Transient).
#![deny(missing_docs)]

use std::sync::Arc;

use backup_core::{Result, Sink};

#[cfg(feature = "s3")]
mod aws;
pub mod cold;
#[cfg(feature = "failpoints")]
pub mod failpoint;
pub mod kms;
pub mod layers;
#[cfg(feature = "s3")]
pub mod object_lock;
mod objstore;
mod options;
mod url;

#[cfg(feature = "local")]
mod local;
#[cfg(not(feature = "local"))]
#[path = "disabled/local.rs"]
mod local;

#[cfg(feature = "s3")]
mod s3;
#[cfg(not(feature = "s3"))]
#[path = "disabled/s3.rs"]
mod s3;

#[cfg(feature = "gcs")]
mod gcs;
#[cfg(not(feature = "gcs"))]
#[path = "disabled/gcs.rs"]
mod gcs;

#[cfg(any(feature = "s3", feature = "gcs"))]
mod cloud;
#[cfg(not(any(feature = "s3", feature = "gcs")))]
#[path = "disabled/cloud.rs"]
mod cloud;

#[cfg(feature = "local")]
pub use local::LocalSink;
pub use objstore::{ObjectStoreSink, UPLOAD_STAGING_PREFIX};
pub use options::{
    GcsOptions, GcsStorageClass, HttpOptions, MultipartOptions, RetryOptions, S3ObjectLock,
    S3Options, S3StorageClass, StorageOptionKey, StorageOptions,
};
pub use secrecy::{ExposeSecret, SecretString};
pub use url::{StorageUrl, UrlCredentials};

use layers::{RetryPolicy, RetrySink};

/// Builds the backend a URL names, wrapped in the retry layer (and in
/// [`layers::AppendOnlySink`] with the option `append-only`).
///
/// Nothing is contacted yet: an unreachable server or wrong credentials
/// show on the first call. Local directories are created by the first put.
///
/// # Errors
///
/// [`Error::Config`](backup_core::Error::Config) when the options are invalid, the backend is not
/// compiled in (see the crate features), or the cloud client cannot be
/// configured (for example an `http://` endpoint without `allow-http`).
pub fn build(url: &StorageUrl, options: &StorageOptions) -> Result<Arc<dyn Sink>> {
    let mut backend = build_backend(url, options)?;
    if options.append_only {
        backend = Arc::new(layers::AppendOnlySink::new(backend));
    }
    let sink: Arc<dyn Sink> = Arc::new(RetrySink::new(backend, RetryPolicy::from(&options.retry)));
    // Outside the retry layer: a write is counted once, however often it
    // is attempted.
    #[cfg(feature = "failpoints")]
    let sink = failpoint::wrap(sink)?;
    Ok(sink)
}

/// Builds the backend a URL names without the retry layer; for tests and
/// for callers that stack their own layers.
///
/// # Errors
///
/// As [`build`].
pub fn build_backend(url: &StorageUrl, options: &StorageOptions) -> Result<Arc<dyn Sink>> {
    options.validate()?;
    let location = url.redacted();
    if options.s3.object_lock.is_some() && !matches!(url, StorageUrl::S3 { .. }) {
        return Err(backup_core::Error::Config(format!(
            "{location}: `s3.object-lock` applies to S3 repositories only (a local repository served over SSH or NFS cannot refuse deletes: use an S3 bucket with Object Lock)"
        )));
    }
    match url {
        StorageUrl::Local { path } => local::build(path),
        StorageUrl::S3 {
            bucket,
            prefix,
            credentials,
        } => {
            // One client for the single-object deletes and, with Object
            // Lock, the lock layer's requests.
            #[cfg(feature = "s3")]
            let requests = Arc::new(aws::S3Requests::open(
                bucket,
                prefix,
                credentials.as_ref(),
                options,
                &location,
            )?);
            #[cfg(feature = "s3")]
            let deletes: Option<Arc<dyn objstore::DeleteOne>> = Some(requests.clone());
            #[cfg(not(feature = "s3"))]
            let deletes = None;
            let sink = s3::build(
                bucket,
                prefix,
                credentials.as_ref(),
                options,
                &location,
                deletes,
            )?;
            #[cfg(feature = "s3")]
            if let Some(mode) = options.s3.object_lock {
                return Ok(object_lock::wrap(sink, requests, options, mode));
            }
            Ok(sink)
        }
        StorageUrl::Gcs { bucket, prefix } => gcs::build(bucket, prefix, options, &location),
        StorageUrl::Memory { name } => Ok(Arc::new(match name {
            None => backup_core::MemorySink::new(),
            Some(name) => backup_core::MemorySink::named(name),
        })),
    }
}

/// The text between the first `<tag>` and the `</tag>` after it, in the
/// small XML documents S3 answers with (error codes, lock settings).
pub(crate) fn xml_tag<'a>(text: &'a str, tag: &str) -> Option<&'a str> {
    let (_, rest) = text.split_once(&format!("<{tag}>"))?;
    rest.split_once(&format!("</{tag}>"))
        .map(|(value, _)| value)
}

/// Parses `url` and builds its backend with the retry layer; a shortcut
/// for [`StorageUrl::parse`] then [`build`].
///
/// # Errors
///
/// As [`StorageUrl::parse`] and [`build`].
pub fn open(url: &str, options: &StorageOptions) -> Result<Arc<dyn Sink>> {
    build(&StorageUrl::parse(url)?, options)
}
