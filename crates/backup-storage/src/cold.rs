//! Storage classes of objects already stored: what class an object is in,
//! moving it to another class, and thawing (restoring) archived objects.
//!
//! `object_store` has no verbs for these, so [`ColdStore`] signs its own
//! S3 requests with `object_store`'s `SigV4` signer
//! ([`object_store::aws::AwsAuthorizer`]) and the credentials of the same
//! client configuration the S3 sink uses (environment, URL, options):
//!
//! - `HEAD` for the class (`x-amz-storage-class`) and the thaw status
//!   (`x-amz-restore`);
//! - `CopyObject` of an object onto itself with a new
//!   `x-amz-storage-class` (`x-amz-metadata-directive: COPY`), for
//!   objects up to 5 GiB (packs are at most 1 GiB);
//! - `RestoreObject` (`POST ?restore`) with a number of days and a
//!   retrieval tier.
//!
//! Google Cloud Storage classes need none of this (every GCS class is
//! readable at once), so only S3 repositories have a [`ColdStore`].

use std::fmt;
use std::str::FromStr;

use backup_core::{Error, FileKind, Result};

use crate::options::{S3StorageClass, StorageOptions};
use crate::url::StorageUrl;

/// How fast (and at what price) S3 thaws an archived object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum RetrievalTier {
    /// `Expedited`: minutes (`GLACIER` only; not for `DEEP_ARCHIVE`).
    Expedited,
    /// `Standard`: hours (3 to 5 for `GLACIER`, up to 12 for
    /// `DEEP_ARCHIVE`).
    Standard,
    /// `Bulk`: the cheapest, 5 to 12 hours (`GLACIER`) or up to 48 hours
    /// (`DEEP_ARCHIVE`).
    Bulk,
}

impl RetrievalTier {
    /// The tier as S3 spells it.
    pub fn as_str(self) -> &'static str {
        match self {
            RetrievalTier::Expedited => "Expedited",
            RetrievalTier::Standard => "Standard",
            RetrievalTier::Bulk => "Bulk",
        }
    }
}

impl fmt::Display for RetrievalTier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Parses `expedited`, `standard` or `bulk` (any case).
impl FromStr for RetrievalTier {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s.trim().to_ascii_lowercase().as_str() {
            "expedited" => Ok(RetrievalTier::Expedited),
            "standard" => Ok(RetrievalTier::Standard),
            "bulk" => Ok(RetrievalTier::Bulk),
            _ => Err(Error::Config(format!(
                "unknown retrieval tier `{s}`; known tiers: expedited, standard, bulk"
            ))),
        }
    }
}

/// Where an archived object's thaw stands.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Thaw {
    /// No restore was requested (or its copy expired).
    None,
    /// A restore is under way (`ongoing-request="true"`).
    InProgress,
    /// A readable copy exists until the given time (as S3 wrote it).
    Done {
        /// `expiry-date` of the `x-amz-restore` header.
        expiry: Option<String>,
    },
}

/// The storage class and thaw status of one stored object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectState {
    /// The class as the store names it (`STANDARD` when the store sent
    /// none).
    pub class: String,
    /// The object's size in bytes.
    pub size: u64,
    /// The thaw status, for archive classes.
    pub thaw: Thaw,
}

impl ObjectState {
    /// Whether the class needs a thaw before a read (`GLACIER`,
    /// `DEEP_ARCHIVE`).
    pub fn is_archived(&self) -> bool {
        matches!(self.class.as_str(), "GLACIER" | "DEEP_ARCHIVE")
    }

    /// Whether a GET succeeds now: a class readable at once, or a thawed
    /// copy.
    pub fn is_readable(&self) -> bool {
        !self.is_archived() || matches!(self.thaw, Thaw::Done { .. })
    }
}

/// What a restore request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum ThawRequest {
    /// A new restore was started (202).
    Started,
    /// One was already under way (409 `RestoreAlreadyInProgress`); it is
    /// kept.
    AlreadyInProgress,
    /// A thawed copy already exists (200); its expiry was extended.
    AlreadyDone,
}

/// Parses an `x-amz-restore` header value.
#[cfg_attr(not(any(feature = "s3", test)), allow(dead_code))]
fn parse_restore(value: Option<&str>) -> Thaw {
    let Some(value) = value else {
        return Thaw::None;
    };
    if value.contains("ongoing-request=\"true\"") {
        return Thaw::InProgress;
    }
    let expiry = value
        .split_once("expiry-date=\"")
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(date, _)| date.to_owned());
    Thaw::Done { expiry }
}

/// The storage-class verbs of an S3 repository.
#[derive(Debug)]
pub struct ColdStore {
    #[cfg(feature = "s3")]
    inner: crate::aws::S3Requests,
}

impl ColdStore {
    /// The class verbs for the repository at `url`, with the same client
    /// settings as its sink.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the repository is not on S3 (GCS classes
    /// need no thaw; local disks have no classes), when this build lacks
    /// S3, or when the client cannot be configured.
    pub fn open(url: &StorageUrl, options: &StorageOptions) -> Result<ColdStore> {
        match url {
            #[cfg(feature = "s3")]
            StorageUrl::S3 {
                bucket,
                prefix,
                credentials,
            } => Ok(ColdStore {
                inner: crate::aws::S3Requests::open(
                    bucket,
                    prefix,
                    credentials.as_ref(),
                    options,
                    &url.redacted(),
                )?,
            }),
            _ => {
                let _ = options;
                Err(Error::Config(format!(
                    "{} is not an S3 repository: storage classes are moved and thawed only on S3 (every Google Cloud Storage class is readable at once; set `gcs.data-storage-class` for new data packs)",
                    url.redacted()
                )))
            }
        }
    }

    /// The class, size and thaw status of a stored file (`HEAD`).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing file; storage errors.
    #[cfg_attr(not(feature = "s3"), allow(clippy::unused_async))]
    pub async fn state(&self, kind: FileKind, name: &str) -> Result<ObjectState> {
        #[cfg(feature = "s3")]
        {
            self.inner.state(kind, name).await
        }
        #[cfg(not(feature = "s3"))]
        {
            let _ = (kind, name);
            Err(no_s3())
        }
    }

    /// Moves a stored file to `class` by copying it onto itself
    /// (`CopyObject` with `x-amz-storage-class`); metadata is kept. An
    /// archived file must be thawed first (S3 refuses to copy it).
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing file, storage errors.
    #[cfg_attr(not(feature = "s3"), allow(clippy::unused_async))]
    pub async fn set_class(&self, kind: FileKind, name: &str, class: S3StorageClass) -> Result<()> {
        #[cfg(feature = "s3")]
        {
            self.inner.set_class(kind, name, class).await
        }
        #[cfg(not(feature = "s3"))]
        {
            let _ = (kind, name, class);
            Err(no_s3())
        }
    }

    /// Asks S3 to thaw an archived file for `days` days with `tier`
    /// (`RestoreObject`). Requests already under way are kept, never
    /// repeated.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] for a missing file, storage errors (S3 refuses
    /// `Expedited` for `DEEP_ARCHIVE`, for example).
    #[cfg_attr(not(feature = "s3"), allow(clippy::unused_async))]
    pub async fn request_thaw(
        &self,
        kind: FileKind,
        name: &str,
        days: u32,
        tier: RetrievalTier,
    ) -> Result<ThawRequest> {
        #[cfg(feature = "s3")]
        {
            self.inner.request_thaw(kind, name, days, tier).await
        }
        #[cfg(not(feature = "s3"))]
        {
            let _ = (kind, name, days, tier);
            Err(no_s3())
        }
    }
}

#[cfg(not(feature = "s3"))]
fn no_s3() -> Error {
    Error::Config("this build has no S3 support (feature `s3`)".to_owned())
}

#[cfg(feature = "s3")]
mod s3 {

    use backup_core::{FileKind, Result};
    use bytes::Bytes;

    use super::{parse_restore, ObjectState, RetrievalTier, ThawRequest};
    use crate::aws::{encode_key, S3Requests};
    use crate::options::S3StorageClass;

    impl S3Requests {
        pub(super) async fn state(&self, kind: FileKind, name: &str) -> Result<ObjectState> {
            let key = self.key(kind, name)?;
            let (status, headers, body) = self
                .send(http::Method::HEAD, &key, "", &[], Bytes::new())
                .await?;
            if !status.is_success() {
                return Err(self.failure("reading the state of", &key, status, &body));
            }
            let header = |n: &str| headers.get(n).and_then(|v| v.to_str().ok());
            Ok(ObjectState {
                class: header("x-amz-storage-class")
                    .unwrap_or("STANDARD")
                    .to_owned(),
                size: header("content-length")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0),
                thaw: parse_restore(header("x-amz-restore")),
            })
        }

        pub(super) async fn set_class(
            &self,
            kind: FileKind,
            name: &str,
            class: S3StorageClass,
        ) -> Result<()> {
            let key = self.key(kind, name)?;
            let source = format!("/{}/{}", self.bucket, encode_key(&key));
            let headers = [
                ("x-amz-copy-source", source),
                ("x-amz-storage-class", class.as_str().to_owned()),
                ("x-amz-metadata-directive", "COPY".to_owned()),
            ];
            let (status, _, body) = self
                .send(http::Method::PUT, &key, "", &headers, Bytes::new())
                .await?;
            // A copy can fail after a 200 with an error document.
            if !status.is_success() || body.windows(7).any(|w| w == b"<Error>") {
                return Err(self.failure(&format!("moving to {class}"), &key, status, &body));
            }
            Ok(())
        }

        pub(super) async fn request_thaw(
            &self,
            kind: FileKind,
            name: &str,
            days: u32,
            tier: RetrievalTier,
        ) -> Result<ThawRequest> {
            let key = self.key(kind, name)?;
            let body = format!(
                "<RestoreRequest xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><Days>{days}</Days><GlacierJobParameters><Tier>{tier}</Tier></GlacierJobParameters></RestoreRequest>"
            );
            let (status, _, answer) = self
                .send(
                    http::Method::POST,
                    &key,
                    "restore",
                    &[("content-type", "application/xml".to_owned())],
                    Bytes::from(body),
                )
                .await?;
            match status.as_u16() {
                202 => Ok(ThawRequest::Started),
                200 => Ok(ThawRequest::AlreadyDone),
                409 => Ok(ThawRequest::AlreadyInProgress),
                _ => Err(self.failure("requesting a thaw of", &key, status, &answer)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn restore_header() {
        assert_eq!(parse_restore(None), Thaw::None);
        assert_eq!(
            parse_restore(Some("ongoing-request=\"true\"")),
            Thaw::InProgress
        );
        assert_eq!(
            parse_restore(Some(
                "ongoing-request=\"false\", expiry-date=\"Fri, 21 Dec 2012 00:00:00 GMT\""
            )),
            Thaw::Done {
                expiry: Some("Fri, 21 Dec 2012 00:00:00 GMT".to_owned())
            }
        );
        assert_eq!(
            "BULK".parse::<RetrievalTier>().unwrap(),
            RetrievalTier::Bulk
        );
        assert!("fast".parse::<RetrievalTier>().is_err());
    }
}
