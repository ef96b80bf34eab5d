//! S3 Object Lock: repositories whose objects S3 refuses to delete until
//! their retention ends, so that a client with delete rights (or someone
//! who took its credentials) cannot destroy backups.
//!
//! The storage option `s3.object-lock = governance | compliance` says the
//! bucket locks what it stores. The first lock is the bucket's default
//! retention (S3 applies `now + period` to every new object version, so
//! every object is locked from its first byte with no extra request); the
//! period is the bucket's setting, chosen by whoever administers it.
//! [`check_bucket`] reads it, and `init` refuses a bucket without Object
//! Lock or without a default retention in the requested mode.
//!
//! [`ObjectLockSink`] writes with a signed `PUT` of its own, which carries
//! the checksum headers S3 requires of uploads into such a bucket, and
//! changes `delete`: a bucket with Object Lock
//! is versioned, and a plain `DELETE` would succeed by hiding the object
//! behind a delete marker while its version stays stored and billed. So a
//! delete first reads the object's lock (`HEAD`): a retention date in the
//! future or a legal hold is [`Error::Retained`] naming until when, and
//! nothing is hidden; otherwise the version itself is deleted (`DELETE
//! ?versionId=`), which frees the space. Prune and forget report retained
//! objects and retry them in a later run.
//!
//! [`Sink::retain_until`] extends an object's lock (`PutObjectRetention` on
//! its version) when it ends before a date: `backup-ops` calls it for
//! everything the snapshots a retention policy keeps still need, until the
//! policy lets them go. Lock files are the exception:
//! they must disappear when a process ends, so they are deleted with a
//! plain `DELETE` (a delete marker; their locked versions are a few hundred
//! bytes each).

use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use backup_core::{Error, FileKind, LockExtension, ObjectInfo, PutMode, Result, Sink};
use bytes::Bytes;

use crate::aws::S3Requests;
use crate::options::{S3ObjectLock, S3StorageClass, StorageOptions};
use crate::url::StorageUrl;

/// A bucket's Object Lock configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketLock {
    /// Whether Object Lock is enabled on the bucket.
    pub enabled: bool,
    /// The default retention's mode (`GOVERNANCE`, `COMPLIANCE`), if the
    /// bucket has a default retention.
    pub mode: Option<String>,
    /// The default retention's period, as S3 states it (`35 days`,
    /// `1 years`).
    pub period: Option<String>,
}

/// Reads the Object Lock configuration of the bucket of `url` and checks
/// that it locks new objects in the mode `options` asks for.
///
/// # Errors
///
/// [`Error::Config`] when the repository is not on S3, when the bucket has
/// no Object Lock, no default retention, or one in another mode; storage
/// errors.
pub async fn check_bucket(url: &StorageUrl, options: &StorageOptions) -> Result<BucketLock> {
    let Some(wanted) = options.s3.object_lock else {
        return Err(Error::Config(
            "the storage option `s3.object-lock` is not set".to_owned(),
        ));
    };
    let requests = open(url, options)?;
    let (status, _, body) = requests
        .send_bucket(
            http::Method::GET,
            "object-lock",
            "reading the Object Lock configuration",
        )
        .await?;
    let shown = url.redacted();
    let text = String::from_utf8_lossy(&body);
    if status.as_u16() == 404 || text.contains("ObjectLockConfigurationNotFound") {
        return Err(Error::Config(format!(
            "the bucket of {shown} has no S3 Object Lock, which `s3.object-lock` asks for: Object Lock can only be turned on when a bucket is created (`aws s3api create-bucket --object-lock-enabled-for-bucket`), then give it a default retention (`aws s3api put-object-lock-configuration`)"
        )));
    }
    if !status.is_success() {
        return Err(requests.failure(
            "reading the Object Lock configuration of",
            "the bucket",
            status,
            &body,
        ));
    }
    let tag = |t: &str| crate::xml_tag(&text, t).map(|v| v.trim().to_owned());
    let lock = BucketLock {
        enabled: tag("ObjectLockEnabled").as_deref() == Some("Enabled"),
        mode: tag("Mode"),
        period: tag("Days")
            .map(|d| format!("{d} days"))
            .or_else(|| tag("Years").map(|y| format!("{y} years"))),
    };
    if !lock.enabled {
        return Err(Error::Config(format!(
            "the bucket of {shown} does not have S3 Object Lock enabled, which `s3.object-lock` asks for"
        )));
    }
    let (Some(mode), Some(_)) = (&lock.mode, &lock.period) else {
        return Err(Error::Config(format!(
            "the bucket of {shown} has Object Lock but no default retention, so new objects would not be locked: set one, at least as long as the shortest time your retention policy keeps a snapshot, for example `aws s3api put-object-lock-configuration --bucket BUCKET --object-lock-configuration '{{\"ObjectLockEnabled\":\"Enabled\",\"Rule\":{{\"DefaultRetention\":{{\"Mode\":\"{}\",\"Days\":35}}}}}}'`",
            wanted.as_str()
        )));
    };
    if !mode.eq_ignore_ascii_case(wanted.as_str()) {
        return Err(Error::Config(format!(
            "the bucket of {shown} locks new objects in {mode} mode, but `s3.object-lock` asks for {}",
            wanted.as_str().to_ascii_lowercase()
        )));
    }
    Ok(lock)
}

fn open(url: &StorageUrl, options: &StorageOptions) -> Result<S3Requests> {
    match url {
        StorageUrl::S3 {
            bucket,
            prefix,
            credentials,
        } => S3Requests::open(bucket, prefix, credentials.as_ref(), options, &url.redacted()),
        _ => Err(Error::Config(format!(
            "{}: `s3.object-lock` applies to S3 repositories only (a local repository served over SSH or NFS cannot refuse deletes: use an S3 bucket with Object Lock)",
            url.redacted()
        ))),
    }
}

/// The layer that never deletes (or hides) a locked object; see the
/// module documentation.
#[derive(Debug)]
pub struct ObjectLockSink {
    inner: Arc<dyn Sink>,
    requests: Arc<S3Requests>,
    mode: S3ObjectLock,
    data_class: Option<&'static str>,
}

/// Wraps `inner`, an S3 sink, in an [`ObjectLockSink`] for a bucket that
/// locks in `mode`; `requests` reach the same bucket and prefix (the
/// client the sink's single-object deletes use).
pub(crate) fn wrap(
    inner: Arc<dyn Sink>,
    requests: Arc<S3Requests>,
    options: &StorageOptions,
    mode: S3ObjectLock,
) -> Arc<dyn Sink> {
    Arc::new(ObjectLockSink {
        inner,
        requests,
        mode,
        data_class: options.s3.data_storage_class.map(S3StorageClass::as_str),
    })
}

impl ObjectLockSink {
    /// The lock of the object `key` (`HEAD`); `None` when it is gone.
    async fn read_lock(&self, key: &str) -> Result<Option<ObjectLockState>> {
        let (status, headers, body) = self
            .requests
            .send(http::Method::HEAD, key, "", &[], Bytes::new())
            .await?;
        if status.as_u16() == 404 {
            return Ok(None);
        }
        if !status.is_success() {
            return Err(self
                .requests
                .failure("reading the lock of", key, status, &body));
        }
        let header = |n: &str| {
            headers
                .get(n)
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
        };
        Ok(Some(ObjectLockState {
            hold: header("x-amz-object-lock-legal-hold")
                .is_some_and(|h| h.eq_ignore_ascii_case("ON")),
            until: header("x-amz-object-lock-retain-until-date"),
            mode: header("x-amz-object-lock-mode"),
            version: header("x-amz-version-id"),
        }))
    }

    /// One signed `PUT` carrying the checksum headers S3 requires of every
    /// upload into a bucket with a default retention
    /// (`x-amz-sdk-checksum-algorithm` and `x-amz-checksum-sha256`, both
    /// signed), create-only by `If-None-Match: *`. Objects go up whole
    /// (packs are at most 1 GiB; S3 takes 5 GiB in one `PUT`).
    async fn put_checked(
        &self,
        kind: FileKind,
        name: &str,
        data: Bytes,
        mode: PutMode,
        class: Option<&'static str>,
    ) -> Result<()> {
        let key = self.requests.key(kind, name)?;
        let mut headers = checksum_headers(&data);
        if mode == PutMode::Create {
            headers.push(("if-none-match", "*".to_owned()));
        }
        if let Some(class) = class {
            headers.push(("x-amz-storage-class", class.to_owned()));
        }
        let (status, _, body) = self
            .requests
            .send(http::Method::PUT, &key, "", &headers, data)
            .await?;
        match status.as_u16() {
            200..=299 => Ok(()),
            412 => Err(Error::AlreadyExists {
                kind,
                name: name.to_owned(),
            }),
            _ => Err(self.requests.failure("writing", &key, status, &body)),
        }
    }
}

/// Whether a retain-until date (RFC 3339, as S3 sends it) is still ahead.
/// An unreadable date counts as ahead: when in doubt, nothing is deleted.
fn still_locked(until: &str) -> bool {
    chrono::DateTime::parse_from_rfc3339(until.trim()).map_or(true, |t| t > chrono::Utc::now())
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Sink for ObjectLockSink {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put(&self, kind: FileKind, name: &str, data: Bytes, mode: PutMode) -> Result<()> {
        self.put_checked(kind, name, data, mode, None).await
    }

    async fn put_data_pack(&self, name: &str, data: Bytes) -> Result<()> {
        self.put_checked(FileKind::Pack, name, data, PutMode::Create, self.data_class)
            .await
    }

    async fn get(&self, kind: FileKind, name: &str) -> Result<Bytes> {
        self.inner.get(kind, name).await
    }

    async fn get_range(&self, kind: FileKind, name: &str, range: Range<u64>) -> Result<Bytes> {
        self.inner.get_range(kind, name, range).await
    }

    async fn list(&self, kind: FileKind) -> Result<Vec<ObjectInfo>> {
        self.inner.list(kind).await
    }

    async fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        if kind == FileKind::Lock {
            return self.inner.delete(kind, name).await;
        }
        let key = self.requests.key(kind, name)?;
        let Some(lock) = self.read_lock(&key).await? else {
            return Ok(());
        };
        if let Some(until) = lock.blocks() {
            return Err(Error::Retained {
                kind,
                name: name.to_owned(),
                until,
            });
        }
        let query = version_query(lock.version.as_deref()).unwrap_or_default();
        let (status, _, body) = self
            .requests
            .send(http::Method::DELETE, &key, &query, &[], Bytes::new())
            .await?;
        match status.as_u16() {
            200..=299 | 404 => Ok(()),
            // The lock was extended since the HEAD (or the clock is off):
            // S3 refuses, which is the point.
            403 if String::from_utf8_lossy(&body).contains("AccessDenied") => {
                Err(Error::Retained {
                    kind,
                    name: name.to_owned(),
                    until: format!(
                        "S3 allows it ({} mode)",
                        self.mode.as_str().to_ascii_lowercase()
                    ),
                })
            }
            _ => Err(self.requests.failure("deleting", &key, status, &body)),
        }
    }

    fn append_only(&self) -> bool {
        self.inner.append_only()
    }
    async fn retain_until(
        &self,
        kind: FileKind,
        name: &str,
        until: chrono::DateTime<chrono::Utc>,
        margin: chrono::Duration,
    ) -> Result<LockExtension> {
        let key = self.requests.key(kind, name)?;
        let Some(lock) = self.read_lock(&key).await? else {
            return Ok(LockExtension::Covered);
        };
        let current = lock
            .until
            .as_deref()
            .and_then(|d| chrono::DateTime::parse_from_rfc3339(d.trim()).ok());
        if current.is_some_and(|c| c >= until) {
            return Ok(LockExtension::Covered);
        }
        // A compliance lock stays in compliance mode; a governance lock
        // is extended in the repository's mode.
        let mode = match lock.mode.as_deref() {
            Some(m) if m.eq_ignore_ascii_case("COMPLIANCE") => S3ObjectLock::Compliance,
            _ => self.mode,
        };
        let xml = format!(
            "<Retention xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Mode>{}</Mode><RetainUntilDate>{}</RetainUntilDate></Retention>",
            mode.as_str(),
            (until + margin).to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        );
        let mut query = "retention".to_owned();
        if let Some(v) = version_query(lock.version.as_deref()) {
            query.push('&');
            query.push_str(&v);
        }
        let data = Bytes::from(xml);
        let (status, _, body) = self
            .requests
            .send(
                http::Method::PUT,
                &key,
                &query,
                &checksum_headers(&data),
                data,
            )
            .await?;
        if status.is_success() {
            Ok(LockExtension::Extended)
        } else {
            Err(self
                .requests
                .failure("extending the lock of", &key, status, &body))
        }
    }
    async fn locked_until(&self, kind: FileKind, name: &str) -> Result<Option<String>> {
        let key = self.requests.key(kind, name)?;
        Ok(self.read_lock(&key).await?.and_then(|l| l.blocks()))
    }
}

/// An object's lock, as a `HEAD` states it.
struct ObjectLockState {
    /// Whether a legal hold is on.
    hold: bool,
    /// The retain-until date, as S3 sends it.
    until: Option<String>,
    /// The retention mode.
    mode: Option<String>,
    /// The version the `HEAD` saw.
    version: Option<String>,
}

impl ObjectLockState {
    /// Until when the lock refuses a delete, if it does now.
    fn blocks(&self) -> Option<String> {
        if self.hold {
            return Some("its legal hold is removed".to_owned());
        }
        self.until.clone().filter(|u| still_locked(u))
    }
}

/// The query that names one version of an object (`versionId=...`), or
/// `None` for an unversioned one.
fn version_query(version: Option<&str>) -> Option<String> {
    version.filter(|v| !v.is_empty() && *v != "null").map(|v| {
        format!(
            "versionId={}",
            crate::aws::encode_key(v).replace('/', "%2F")
        )
    })
}

/// The checksum headers S3 requires of a body sent to a bucket with
/// Object Lock (`x-amz-sdk-checksum-algorithm`, `x-amz-checksum-sha256`).
fn checksum_headers(data: &[u8]) -> Vec<(&'static str, String)> {
    use base64::Engine as _;
    use sha2::Digest as _;
    vec![
        ("x-amz-sdk-checksum-algorithm", "SHA256".to_owned()),
        (
            "x-amz-checksum-sha256",
            base64::engine::general_purpose::STANDARD.encode(sha2::Sha256::digest(data)),
        ),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_ahead_and_unreadable_dates_are_locked() {
        assert!(still_locked("2999-01-01T00:00:00Z"));
        assert!(still_locked("2999-01-01T00:00:00.000Z"));
        assert!(!still_locked("2001-01-01T00:00:00Z"));
        assert!(still_locked("next tuesday"));
    }
}
