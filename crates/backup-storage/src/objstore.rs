//! One adapter from [`object_store::ObjectStore`] to [`Sink`], used for S3,
//! Google Cloud Storage (and, in tests, `object_store`'s in-memory store).

use std::error::Error as StdError;
use std::fmt;
use std::ops::Range;
use std::sync::Arc;

use async_trait::async_trait;
use backup_core::sink::check_range;
use backup_core::{Error, FileKind, ObjectInfo, PutMode, Result, Sink};
use bytes::Bytes;
use futures::{StreamExt, TryStreamExt};
use object_store::path::Path;
use object_store::{
    Attribute, AttributeValue, Attributes, ObjectStore, ObjectStoreExt, PutOptions, PutPayload,
};

use crate::options::MultipartOptions;
use backup_core::sink::check_name;

/// Where unfinished multipart uploads of create-only puts live, relative to
/// the repository prefix. No [`FileKind`] lists it; leftovers of a crash
/// are garbage that can be deleted at any time no upload is running.
pub const UPLOAD_STAGING_PREFIX: &str = "tmp";

/// A [`Sink`] over any [`ObjectStore`], below a key prefix.
///
/// - Object keys are `<prefix>/<FileKind::path(name)>`.
/// - Objects smaller than [`MultipartOptions::threshold`] are written with
///   one PUT; [`PutMode::Create`] uses the store's conditional put
///   (`If-None-Match: *` on S3, `x-goog-if-generation-match: 0` on GCS).
/// - Larger objects are uploaded in parts of [`MultipartOptions::part_size`],
///   [`MultipartOptions::concurrency`] at a time. An overwrite completes the
///   upload under the final key; a create-only put completes it under a
///   staging key in [`UPLOAD_STAGING_PREFIX`] and then copies it to the final
///   key with the store's atomic copy-if-not-exists, deleting the staging
///   object afterwards. Either way the object appears whole or not at all.
/// - [`Sink::put_data_pack`] writes with the data storage class set by
///   [`ObjectStoreSink::with_data_storage_class`] (the `StorageClass`
///   attribute: `x-amz-storage-class` on S3, `x-goog-storage-class` on
///   GCS). Such packs always go up in one conditional PUT, whatever their
///   size: S3's copy that publishes a create-only multipart upload would
///   not carry the class.
/// - Store errors map to the semantic [`Error`] variants; connection
///   failures, timeouts, throttling and 5xx answers become
///   [`Error::Transient`] so the retry layer can retry them.
#[derive(Clone)]
pub struct ObjectStoreSink {
    store: Arc<dyn ObjectStore>,
    prefix: String,
    backend: &'static str,
    location: String,
    multipart: MultipartOptions,
    data_class: Option<&'static str>,
    /// Deletes one request per object (see
    /// [`ObjectStoreSink::with_single_deletes`]).
    single_deletes: Option<Arc<dyn DeleteOne>>,
}

impl fmt::Debug for ObjectStoreSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ObjectStoreSink")
            .field("backend", &self.backend)
            .field("location", &self.location)
            .field("multipart", &self.multipart)
            .field("data_class", &self.data_class)
            .finish_non_exhaustive()
    }
}

impl ObjectStoreSink {
    /// Wraps `store`, keeping every object below `prefix` (`""` for the
    /// store's root). `backend` names the store in errors (`"s3"`, `"gcs"`,
    /// `"memory"`); `location` is the redacted URL shown in messages.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the prefix is not a valid object path.
    pub fn new(
        store: Arc<dyn ObjectStore>,
        prefix: &str,
        backend: &'static str,
        location: impl Into<String>,
    ) -> Result<Self> {
        let prefix = prefix.trim_matches('/').to_owned();
        if !prefix.is_empty() {
            Path::parse(&prefix)
                .map_err(|e| Error::Config(format!("invalid object prefix `{prefix}`: {e}")))?;
        }
        Ok(ObjectStoreSink {
            store,
            prefix,
            backend,
            location: location.into(),
            multipart: MultipartOptions::default(),
            data_class: None,
            single_deletes: None,
        })
    }

    /// Deletes through `deletes`, one request per object, instead of
    /// `object_store`'s bulk `DeleteObjects` on S3, so that an IAM policy
    /// that grants `s3:DeleteObject` on `PREFIX/locks/*` only (an
    /// append-only host) is enough for its lock files wherever the bulk
    /// request is authorized against the bucket (moto, some S3-compatible
    /// stores).
    #[must_use]
    #[cfg_attr(not(feature = "s3"), allow(dead_code))]
    pub(crate) fn with_single_deletes(mut self, deletes: Option<Arc<dyn DeleteOne>>) -> Self {
        self.single_deletes = deletes;
        self
    }

    /// Replaces the multipart settings.
    #[must_use]
    pub fn with_multipart(mut self, multipart: MultipartOptions) -> Self {
        self.multipart = multipart;
        self
    }

    /// Stores data packs ([`Sink::put_data_pack`]) in the storage class
    /// `class`, spelled as the store's API spells it (`GLACIER`,
    /// `COLDLINE`, ...); `None` keeps the store's default class.
    #[must_use]
    pub fn with_data_storage_class(mut self, class: Option<&'static str>) -> Self {
        self.data_class = class;
        self
    }

    /// The underlying store.
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    fn key(&self, relative: &str) -> Result<Path> {
        let full = if self.prefix.is_empty() {
            relative.to_owned()
        } else {
            format!("{}/{relative}", self.prefix)
        };
        Path::parse(&full).map_err(|e| Error::Config(format!("invalid object key `{full}`: {e}")))
    }

    fn object_key(&self, kind: FileKind, name: &str) -> Result<Path> {
        check_name(kind, name)?;
        self.key(&kind.path(name))
    }

    /// Maps a store error, with what was being done, to the core error.
    fn error(
        &self,
        err: object_store::Error,
        op: &'static str,
        kind: FileKind,
        name: &str,
    ) -> Error {
        let what = if kind == FileKind::Config {
            "config".to_owned()
        } else {
            format!("{kind} {name}")
        };
        map_error(err, self.backend, &self.location, op, kind, name, &what)
    }

    async fn put_small(&self, key: &Path, data: Bytes, mode: PutMode) -> object_store::Result<()> {
        let mode = match mode {
            PutMode::Create => object_store::PutMode::Create,
            PutMode::Overwrite => object_store::PutMode::Overwrite,
        };
        self.store
            .put_opts(key, PutPayload::from(data), mode.into())
            .await
            .map(|_| ())
    }

    /// Uploads `data` in parts to `key`, replacing any object there when the
    /// upload completes.
    async fn put_multipart(&self, key: &Path, data: Bytes) -> object_store::Result<()> {
        let mut upload = self.store.put_multipart(key).await?;
        let part_size = usize::try_from(self.multipart.part_size)
            .unwrap_or(usize::MAX)
            .max(1);
        let parts: Vec<_> = (0..data.len())
            .step_by(part_size)
            .map(|start| {
                let end = start.saturating_add(part_size).min(data.len());
                upload.put_part(PutPayload::from(data.slice(start..end)))
            })
            .collect();
        let uploaded: object_store::Result<Vec<()>> = futures::stream::iter(parts)
            .buffer_unordered(self.multipart.concurrency.max(1))
            .try_collect()
            .await;
        match uploaded {
            Ok(_) => upload.complete().await.map(|_| ()),
            Err(e) => {
                if let Err(abort) = upload.abort().await {
                    tracing::warn!(key = %key, error = %abort, "Could not abort a failed multipart upload.");
                }
                Err(e)
            }
        }
    }

    /// A create-only put of a large object: multipart upload to a staging
    /// key, then an atomic copy-if-not-exists to the final key.
    async fn create_multipart(
        &self,
        kind: FileKind,
        name: &str,
        key: &Path,
        data: Bytes,
    ) -> Result<()> {
        let staging = self.key(&format!("{UPLOAD_STAGING_PREFIX}/{}", staging_name(name)))?;
        self.put_multipart(&staging, data)
            .await
            .map_err(|e| self.error(e, "uploading", kind, name))?;
        let copied = self.store.copy_if_not_exists(&staging, key).await;
        if let Err(e) = self.store.delete(&staging).await {
            tracing::warn!(key = %staging, error = %e, "Could not delete a staging object; it is garbage and may be deleted.");
        }
        copied.map_err(|e| self.error(e, "publishing", kind, name))
    }
}

#[async_trait]
impl Sink for ObjectStoreSink {
    fn location(&self) -> String {
        self.location.clone()
    }

    async fn put(&self, kind: FileKind, name: &str, data: Bytes, mode: PutMode) -> Result<()> {
        let key = self.object_key(kind, name)?;
        let large = data.len() as u64 >= self.multipart.threshold
            && data.len() as u64 > self.multipart.part_size;
        match (large, mode) {
            (false, _) => self
                .put_small(&key, data, mode)
                .await
                .map_err(|e| self.error(e, "writing", kind, name)),
            (true, PutMode::Overwrite) => self
                .put_multipart(&key, data)
                .await
                .map_err(|e| self.error(e, "writing", kind, name)),
            (true, PutMode::Create) => self.create_multipart(kind, name, &key, data).await,
        }
    }

    async fn put_data_pack(&self, name: &str, data: Bytes) -> Result<()> {
        let kind = FileKind::Pack;
        let Some(class) = self.data_class else {
            return self.put(kind, name, data, PutMode::Create).await;
        };
        let key = self.object_key(kind, name)?;
        let mut attributes = Attributes::new();
        attributes.insert(Attribute::StorageClass, AttributeValue::from(class));
        let options = PutOptions {
            mode: object_store::PutMode::Create,
            attributes,
            ..PutOptions::default()
        };
        self.store
            .put_opts(&key, PutPayload::from(data), options)
            .await
            .map(|_| ())
            .map_err(|e| self.error(e, "writing", kind, name))
    }

    async fn get(&self, kind: FileKind, name: &str) -> Result<Bytes> {
        let key = self.object_key(kind, name)?;
        let result = self
            .store
            .get(&key)
            .await
            .map_err(|e| self.error(e, "reading", kind, name))?;
        let expected = result.meta.size;
        let data = result
            .bytes()
            .await
            .map_err(|e| self.error(e, "reading", kind, name))?;
        if data.len() as u64 != expected {
            return Err(Error::corrupt(
                kind,
                name,
                format!("read {} bytes but the object has {expected}", data.len()),
            ));
        }
        Ok(data)
    }

    async fn get_range(&self, kind: FileKind, name: &str, range: Range<u64>) -> Result<Bytes> {
        let key = self.object_key(kind, name)?;
        if range.start >= range.end {
            // Empty (or reversed) ranges cannot be asked over HTTP; check
            // them against the object's size.
            let meta = self
                .store
                .head(&key)
                .await
                .map_err(|e| self.error(e, "reading", kind, name))?;
            check_range(kind, name, &range, meta.size)?;
            return Ok(Bytes::new());
        }
        match self.store.get_range(&key, range.clone()).await {
            Ok(data) if data.len() as u64 == range.end - range.start => Ok(data),
            Ok(data) => Err(Error::corrupt(
                kind,
                name,
                format!(
                    "requested bytes {}..{} but got {} bytes",
                    range.start,
                    range.end,
                    data.len()
                ),
            )),
            Err(e @ object_store::Error::NotFound { .. }) => {
                Err(self.error(e, "reading", kind, name))
            }
            Err(e) => {
                // Out-of-range reads fail differently on every store; report
                // them uniformly when the size shows that was the cause.
                if let Ok(meta) = self.store.head(&key).await {
                    check_range(kind, name, &range, meta.size)?;
                }
                Err(self.error(e, "reading", kind, name))
            }
        }
    }

    async fn list(&self, kind: FileKind) -> Result<Vec<ObjectInfo>> {
        if kind == FileKind::Config {
            let key = self.key("config")?;
            return match self.store.head(&key).await {
                Ok(meta) => Ok(vec![ObjectInfo {
                    name: "config".to_owned(),
                    size: meta.size,
                }]),
                Err(object_store::Error::NotFound { .. }) => Ok(Vec::new()),
                Err(e) => Err(self.error(e, "listing", kind, "")),
            };
        }
        let dir = self.key(kind.prefix())?;
        let strip = format!("{dir}/");
        let metas: Vec<_> = self
            .store
            .list(Some(&dir))
            .try_collect()
            .await
            .map_err(|e| self.error(e, "listing", kind, ""))?;
        Ok(metas
            .into_iter()
            .filter_map(|meta| {
                let relative = meta.location.as_ref().strip_prefix(&strip)?;
                let name = kind.name_from_path(&format!("{}/{relative}", kind.prefix()))?;
                Some(ObjectInfo {
                    name,
                    size: meta.size,
                })
            })
            .collect())
    }

    async fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        if let Some(deletes) = &self.single_deletes {
            return deletes.delete_one(kind, name).await;
        }
        let key = self.object_key(kind, name)?;
        match self.store.delete(&key).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.error(e, "deleting", kind, name)),
        }
    }
}

/// Deletes one file with a request of its own; succeeds when it does not
/// exist ([`ObjectStoreSink::with_single_deletes`]).
#[async_trait]
pub(crate) trait DeleteOne: Send + Sync + fmt::Debug {
    /// Deletes `name` of `kind`.
    async fn delete_one(&self, kind: FileKind, name: &str) -> Result<()>;
}

/// A unique staging name for a multipart upload of `name`.
fn staging_name(name: &str) -> String {
    let mut random = [0u8; 8];
    // Without randomness, fall back to the time; uniqueness matters only
    // between concurrent uploads of the same name.
    if getrandom::getrandom(&mut random).is_err() {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        random = nanos.to_le_bytes();
    }
    format!("{name}.{:016x}.upload", u64::from_le_bytes(random))
}

/// The error of one failed store operation, with what was being done and
/// where.
#[derive(Debug, thiserror::Error)]
#[error("{op} {what} at {location}: {source}")]
struct OperationError {
    op: &'static str,
    what: String,
    location: String,
    #[source]
    source: object_store::Error,
}

fn map_error(
    err: object_store::Error,
    backend: &'static str,
    location: &str,
    op: &'static str,
    kind: FileKind,
    name: &str,
    what: &str,
) -> Error {
    use object_store::Error as E;
    match err {
        E::NotFound { .. } => Error::not_found(format!("{what} at {location}")),
        E::AlreadyExists { .. } => Error::AlreadyExists {
            kind,
            name: name.to_owned(),
        },
        E::Precondition { .. } | E::NotModified { .. } => {
            Error::Precondition(format!("{op} {what} at {location}: {}", chain(&err)))
        }
        E::PermissionDenied { .. } if chain(&err).contains("InvalidObjectState") => {
            Error::Archived {
                what: format!("{op} {what} at {location}"),
            }
        }
        E::PermissionDenied { .. } => Error::PermissionDenied(format!(
            "{op} {what} at {location}: {}; check the credentials and the bucket's access policy",
            chain(&err)
        )),
        E::Unauthenticated { .. } => Error::PermissionDenied(format!(
            "{op} {what} at {location}: the credentials were rejected ({}); check the access key or service account",
            chain(&err)
        )),
        _ if is_transient(&err) => Error::Transient {
            backend,
            message: format!("{op} {what} at {location}: {}", chain(&err)),
        },
        _ => Error::Generic {
            backend,
            source: Box::new(OperationError {
                op,
                what: what.to_owned(),
                location: location.to_owned(),
                source: err,
            }),
        },
    }
}

/// The messages of an error and its sources, joined.
fn chain(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut source = err.source();
    while let Some(e) = source {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = e.source();
    }
    out
}

/// Whether a store error is worth retrying: connection problems, timeouts,
/// dropped connections, throttling and server errors.
fn is_transient(err: &object_store::Error) -> bool {
    let mut current: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = current {
        if crate::cloud::is_transient_http_error(e) {
            return true;
        }
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if matches!(
                io.kind(),
                std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
                    | std::io::ErrorKind::ConnectionRefused
                    | std::io::ErrorKind::BrokenPipe
                    | std::io::ErrorKind::UnexpectedEof
                    | std::io::ErrorKind::Interrupted
            ) {
                return true;
            }
        }
        current = e.source();
    }
    // Status codes are only visible in the message of the HTTP client's
    // retry error.
    let text = chain(err);
    [
        "status code: 429",
        "status code: 500",
        "status code: 502",
        "status code: 503",
        "status code: 504",
        "SlowDown",
        "InternalError",
        "ServiceUnavailable",
        "RequestTimeout",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn staging_names_are_unique_and_unlisted() {
        let a = staging_name("abc");
        assert_ne!(a, staging_name("abc"));
        for kind in FileKind::ALL {
            assert_eq!(
                kind.name_from_path(&format!("{UPLOAD_STAGING_PREFIX}/{a}")),
                None
            );
        }
    }

    #[test]
    fn throttling_is_transient() {
        let err = object_store::Error::Generic {
            store: "S3",
            source: "Server returned non-2xx status code: 503 Service Unavailable: SlowDown".into(),
        };
        assert!(is_transient(&err));
        let err = object_store::Error::Generic {
            store: "S3",
            source: "Server returned non-2xx status code: 400 Bad Request".into(),
        };
        assert!(!is_transient(&err));
    }
}
