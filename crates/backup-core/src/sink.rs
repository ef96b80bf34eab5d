//! The storage abstraction: a small verb set over typed repository files.
//!
//! A [`Sink`] stores whole, immutable objects under one repository prefix.
//! Local disk, S3, Google Cloud Storage and memory implement it in the
//! `backup-storage` crate; wrappers (retry, fault injection) are sinks too.
//! Conveniences live in [`SinkExt`], which is implemented for every sink, so
//! a wrapper cannot forget to forward them.

use std::collections::BTreeMap;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;

use crate::error::{Error, Result};
pub use crate::file_kind::FileKind;

/// How a put treats an existing object of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PutMode {
    /// Fail with [`Error::AlreadyExists`] when the object exists. The check
    /// and the write are one atomic step on every backend.
    Create,
    /// Replace any existing object atomically.
    Overwrite,
}

/// One object as listed by [`Sink::list`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// The file name (the last path component, without the kind's prefix).
    pub name: String,
    /// Size in bytes.
    pub size: u64,
}

/// Where repository files live.
///
/// # Contract
///
/// - Objects are whole and immutable: a [`Sink::put`] either stores all of
///   `data` under the name or nothing; a reader never sees a partial object,
///   even if the writer crashes.
/// - [`PutMode::Create`] is atomic: of two concurrent creates of one name,
///   exactly one succeeds and the other gets [`Error::AlreadyExists`].
/// - After a successful put, [`Sink::get`] and [`Sink::list`] see the object.
/// - [`Sink::get`] and [`Sink::get_range`] return [`Error::NotFound`] for a
///   missing object; a range past the end is an error, never a short read
///   silently accepted.
/// - [`Sink::delete`] of a missing object succeeds (deletes are idempotent).
/// - Transient failures are reported as [`Error::Transient`] so that the
///   retry layer can retry them; every method may be retried safely.
#[async_trait]
pub trait Sink: Send + Sync + fmt::Debug {
    /// A human-readable location with credentials removed, for messages.
    fn location(&self) -> String;

    /// Stores `data` as the file `name` of `kind`.
    async fn put(&self, kind: FileKind, name: &str, data: Bytes, mode: PutMode) -> Result<()>;

    /// Creates the pack `name` that holds data blobs only (file contents,
    /// database rows; never trees): the same contract as
    /// `put(FileKind::Pack, name, data, PutMode::Create)`, except that a
    /// backend configured with a data storage class (the storage options
    /// `s3.data-storage-class`, `gcs.data-storage-class`) stores it in that
    /// class. Everything a listing, `ls`, `diff` or a verify without
    /// `--read-data` reads goes through [`Sink::put`] and stays readable at
    /// once.
    async fn put_data_pack(&self, name: &str, data: Bytes) -> Result<()>;

    /// Reads a whole file.
    async fn get(&self, kind: FileKind, name: &str) -> Result<Bytes>;

    /// Reads the bytes `range` of a file. The result has exactly
    /// `range.end - range.start` bytes.
    async fn get_range(&self, kind: FileKind, name: &str, range: Range<u64>) -> Result<Bytes>;

    /// Lists every file of `kind`, in no particular order.
    async fn list(&self, kind: FileKind) -> Result<Vec<ObjectInfo>>;

    /// Removes a file; succeeds when it does not exist.
    async fn delete(&self, kind: FileKind, name: &str) -> Result<()>;

    /// Whether this sink is append-only: it refuses to delete or
    /// overwrite anything but lock files (the storage option
    /// `append-only`). Operations that must delete (forget, prune,
    /// repair, rewrite, changing tags or keys) check it before they change
    /// anything. Wrappers forward it.
    fn append_only(&self) -> bool {
        false
    }

    /// Makes storage keep a file until at least `until` (S3 Object Lock:
    /// when the object's retain-until date is sooner, it is moved to
    /// `until + margin`, so that a later call with a slightly later date
    /// changes nothing; it never moves back). Storage that locks nothing answers
    /// [`LockExtension::Unlocked`] without a request; that is the default.
    /// Wrappers forward it.
    async fn retain_until(
        &self,
        kind: FileKind,
        name: &str,
        until: chrono::DateTime<chrono::Utc>,
        margin: chrono::Duration,
    ) -> Result<LockExtension> {
        let _ = (kind, name, until, margin);
        Ok(LockExtension::Unlocked)
    }

    /// Until when storage refuses to delete a file (S3 Object Lock: a
    /// retain-until date still ahead, or `"its legal hold is removed"`);
    /// `None` when it may be deleted now. Storage that locks nothing
    /// answers `None` without a request; that is the default. Wrappers
    /// forward it.
    async fn locked_until(&self, kind: FileKind, name: &str) -> Result<Option<String>> {
        let _ = (kind, name);
        Ok(None)
    }
}

/// What [`Sink::retain_until`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockExtension {
    /// The storage does not lock objects.
    Unlocked,
    /// The file was already kept at least that long (or held, or is gone).
    Covered,
    /// The file's lock was moved forward.
    Extended,
}

/// Conveniences built on the [`Sink`] verbs, implemented for every sink.
#[async_trait]
pub trait SinkExt: Sink {
    /// Creates a content-addressed file: an existing file of the same name
    /// holds the same bytes, so [`Error::AlreadyExists`] counts as success.
    async fn put_content_addressed(&self, kind: FileKind, name: &str, data: Bytes) -> Result<()> {
        match self.put(kind, name, data, PutMode::Create).await {
            Ok(()) | Err(Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// Creates a file that only one writer may create (a lease):
    /// `Ok(true)` when this call created it, `Ok(false)` when another
    /// writer had. A file found holding exactly `data` was created by this
    /// call: a write applied before its response was lost (an HTTP
    /// client's own retry then meets its own object) is not a loss.
    /// Callers put something unique in `data` (a random id, a time).
    async fn create_claim(&self, kind: FileKind, name: &str, data: Bytes) -> Result<bool> {
        match self.put(kind, name, data.clone(), PutMode::Create).await {
            Ok(()) => Ok(true),
            Err(Error::AlreadyExists { .. }) => {
                Ok(self.get_opt(kind, name).await?.is_some_and(|b| b == data))
            }
            Err(e) => Err(e),
        }
    }

    /// Reads a file, returning `None` when it does not exist.
    async fn get_opt(&self, kind: FileKind, name: &str) -> Result<Option<Bytes>> {
        match self.get(kind, name).await {
            Ok(b) => Ok(Some(b)),
            Err(Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// [`Sink::put_data_pack`] for a content-addressed pack: an existing
    /// pack of the same name holds the same bytes, so
    /// [`Error::AlreadyExists`] counts as success.
    async fn put_data_pack_content_addressed(&self, name: &str, data: Bytes) -> Result<()> {
        match self.put_data_pack(name, data).await {
            Ok(()) | Err(Error::AlreadyExists { .. }) => Ok(()),
            Err(e) => Err(e),
        }
    }

    /// The names of every file of `kind`, sorted.
    async fn list_names(&self, kind: FileKind) -> Result<Vec<String>> {
        let mut names: Vec<String> = self.list(kind).await?.into_iter().map(|o| o.name).collect();
        names.sort();
        Ok(names)
    }
}

impl<S: Sink + ?Sized> SinkExt for S {}

#[async_trait]
impl<S: Sink + ?Sized> Sink for Arc<S> {
    fn location(&self) -> String {
        (**self).location()
    }
    async fn put(&self, kind: FileKind, name: &str, data: Bytes, mode: PutMode) -> Result<()> {
        (**self).put(kind, name, data, mode).await
    }
    async fn put_data_pack(&self, name: &str, data: Bytes) -> Result<()> {
        (**self).put_data_pack(name, data).await
    }
    async fn get(&self, kind: FileKind, name: &str) -> Result<Bytes> {
        (**self).get(kind, name).await
    }
    async fn get_range(&self, kind: FileKind, name: &str, range: Range<u64>) -> Result<Bytes> {
        (**self).get_range(kind, name, range).await
    }
    async fn list(&self, kind: FileKind) -> Result<Vec<ObjectInfo>> {
        (**self).list(kind).await
    }
    async fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        (**self).delete(kind, name).await
    }

    fn append_only(&self) -> bool {
        (**self).append_only()
    }
    async fn retain_until(
        &self,
        kind: FileKind,
        name: &str,
        until: chrono::DateTime<chrono::Utc>,
        margin: chrono::Duration,
    ) -> Result<LockExtension> {
        (**self).retain_until(kind, name, until, margin).await
    }
    async fn locked_until(&self, kind: FileKind, name: &str) -> Result<Option<String>> {
        (**self).locked_until(kind, name).await
    }
}

/// A sink that keeps every file in memory: for tests, examples and
/// `memory:` repository URLs. Clones share the files.
#[derive(Debug, Default, Clone)]
pub struct MemorySink {
    files: Arc<Mutex<BTreeMap<(FileKind, String), Bytes>>>,
    name: Option<Arc<str>>,
}

impl MemorySink {
    /// An empty in-memory sink.
    pub fn new() -> Self {
        Self::default()
    }

    fn files(&self) -> std::sync::MutexGuard<'_, BTreeMap<(FileKind, String), Bytes>> {
        // A panic while holding the lock cannot leave the map half-updated
        // (every operation is a single insert or remove), so poisoning is
        // safe to ignore.
        self.files
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The in-memory sink `name`, shared by every call with the same name
    /// in this process (`memory://name`).
    pub fn named(name: &str) -> Self {
        static SINKS: std::sync::OnceLock<Mutex<BTreeMap<String, MemorySink>>> =
            std::sync::OnceLock::new();
        SINKS
            .get_or_init(Mutex::default)
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .entry(name.to_owned())
            .or_insert_with(|| MemorySink {
                files: Arc::default(),
                name: Some(name.into()),
            })
            .clone()
    }

    /// Replaces a stored file's bytes regardless of mode; lets tests damage
    /// a repository on purpose.
    pub fn tamper(&self, kind: FileKind, name: &str, data: Bytes) {
        self.files().insert((kind, name.to_owned()), data);
    }
}

#[async_trait]
impl Sink for MemorySink {
    fn location(&self) -> String {
        match &self.name {
            Some(n) => format!("memory://{n}"),
            None => "memory:".to_owned(),
        }
    }

    async fn put(&self, kind: FileKind, name: &str, data: Bytes, mode: PutMode) -> Result<()> {
        check_name(kind, name)?;
        let mut files = self.files();
        let key = (kind, name.to_owned());
        if mode == PutMode::Create && files.contains_key(&key) {
            return Err(Error::AlreadyExists {
                kind,
                name: name.to_owned(),
            });
        }
        files.insert(key, data);
        Ok(())
    }

    async fn put_data_pack(&self, name: &str, data: Bytes) -> Result<()> {
        self.put(FileKind::Pack, name, data, PutMode::Create).await
    }

    async fn get(&self, kind: FileKind, name: &str) -> Result<Bytes> {
        check_name(kind, name)?;
        self.files()
            .get(&(kind, name.to_owned()))
            .cloned()
            .ok_or_else(|| Error::not_found(format!("{kind} {name}")))
    }

    async fn get_range(&self, kind: FileKind, name: &str, range: Range<u64>) -> Result<Bytes> {
        let data = self.get(kind, name).await?;
        check_range(kind, name, &range, data.len() as u64)?;
        Ok(data.slice(range.start as usize..range.end as usize))
    }

    async fn list(&self, kind: FileKind) -> Result<Vec<ObjectInfo>> {
        Ok(self
            .files()
            .iter()
            .filter(|((k, _), _)| *k == kind)
            .map(|((_, name), data)| ObjectInfo {
                name: name.clone(),
                size: data.len() as u64,
            })
            .collect())
    }

    async fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        check_name(kind, name)?;
        self.files().remove(&(kind, name.to_owned()));
        Ok(())
    }
}

/// Checks that `name` is a valid file name of `kind`: one non-empty path
/// component that [`FileKind::name_from_path`] recovers from
/// [`FileKind::path`], not hidden (a leading `.` marks temporary files) and
/// free of control characters and backslashes.
///
/// Every backend applies the same rule, so a repository written to one
/// backend can be copied to another.
///
/// # Errors
///
/// [`Error::Config`] naming the invalid name.
pub fn check_name(kind: FileKind, name: &str) -> Result<()> {
    let round_trips =
        kind == FileKind::Config || kind.name_from_path(&kind.path(name)).as_deref() == Some(name);
    if name.is_empty()
        || name.starts_with('.')
        || name.len() > 200
        || name.contains(['/', '\\'])
        || name.chars().any(char::is_control)
        || !round_trips
    {
        return Err(Error::Config(format!(
            "invalid {kind} file name `{}`",
            name.escape_debug()
        )));
    }
    Ok(())
}

/// Checks that `range` lies inside an object of `size` bytes; the error
/// every backend reports for an out-of-bounds ranged read.
pub fn check_range(kind: FileKind, name: &str, range: &Range<u64>, size: u64) -> Result<()> {
    if range.start > range.end || range.end > size {
        return Err(Error::corrupt(
            kind,
            name,
            format!(
                "requested bytes {}..{} but the object has {size} bytes",
                range.start, range.end
            ),
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert!(check_name(FileKind::Pack, &"ab".repeat(32)).is_ok());
        assert!(check_name(FileKind::Config, "config").is_ok());
        assert!(check_name(FileKind::Key, "k1").is_ok());
        assert!(check_name(FileKind::Pack, "a").is_err());
        assert!(check_name(FileKind::Key, "").is_err());
        assert!(check_name(FileKind::Key, ".hidden").is_err());
        assert!(check_name(FileKind::Key, "a/b").is_err());
        assert!(check_name(FileKind::Key, "..").is_err());
        assert!(check_name(FileKind::Key, "a\nb").is_err());
    }
}
