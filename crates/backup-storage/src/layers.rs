//! Sinks that wrap other sinks.
//!
//! A layer is itself a [`Sink`], so layers stack:
//! `RetrySink<Arc<dyn Sink>>` is what [`crate::build`] returns. Every layer
//! implements every [`Sink`] method explicitly
//! (`#[deny(clippy::missing_trait_methods)]`), so none is forwarded by
//! accident with the wrong behaviour.

use std::future::Future;
use std::ops::Range;
use std::time::Duration;

use async_trait::async_trait;
use backup_core::retry::retry;
use backup_core::{Error, FileKind, ObjectInfo, PutMode, Result, Sink};
use bytes::Bytes;

use crate::options::RetryOptions;

pub use backup_core::retry::RetryPolicy;

impl From<&RetryOptions> for RetryPolicy {
    fn from(options: &RetryOptions) -> Self {
        RetryPolicy::with_max_attempts(options.max_attempts).with_backoff(
            options.initial_backoff,
            options.max_backoff,
            options.max_elapsed,
        )
    }
}

/// Retries operations that fail with a retryable error
/// ([`Error::is_retryable`]: [`Error::Transient`] and transient I/O errors).
///
/// - Each operation gets at most [`RetryPolicy::max_attempts`] attempts,
///   separated by exponential backoff with jitter, and no retry starts after
///   [`RetryPolicy::max_elapsed`].
/// - Permanent errors ([`Error::NotFound`], [`Error::AlreadyExists`],
///   [`Error::PermissionDenied`], ...) are returned at once.
/// - Every retry is logged at `warn` level with the operation, file,
///   attempt and error.
/// - A [`PutMode::Create`] whose earlier attempt failed ambiguously (the
///   request may have been applied before the connection broke) and whose
///   retry finds the object existing reads the object back: if it holds
///   exactly the bytes being written, the put succeeded and `Ok` is
///   returned; otherwise [`Error::AlreadyExists`] stands.
/// - When the attempts run out, the last error is returned; a
///   [`Error::Transient`] message then says how many attempts were made.
#[derive(Debug, Clone)]
pub struct RetrySink<S> {
    inner: S,
    policy: RetryPolicy,
}

impl<S: Sink> RetrySink<S> {
    /// Wraps `inner`.
    pub fn new(inner: S, policy: RetryPolicy) -> Self {
        RetrySink { inner, policy }
    }

    /// The wrapped sink.
    pub fn inner(&self) -> &S {
        &self.inner
    }

    /// The policy in force.
    pub fn policy(&self) -> &RetryPolicy {
        &self.policy
    }

    /// Runs `attempt` until it succeeds, fails permanently or the policy
    /// gives up. `attempt` gets the attempt number, from 1.
    async fn run<T, F, Fut>(
        &self,
        op: &'static str,
        kind: FileKind,
        name: &str,
        attempt: F,
    ) -> Result<T>
    where
        F: FnMut(u32) -> Fut + Send,
        Fut: Future<Output = Result<T>> + Send,
        T: Send,
    {
        let outcome = retry(
            &self.policy,
            None,
            attempt,
            Error::is_retryable,
            |number, err, delay| {
                tracing::warn!(
                    operation = op,
                    kind = %kind,
                    name,
                    location = %self.inner.location(),
                    attempt = number,
                    max_attempts = self.policy.max_attempts,
                    delay_ms = delay.as_millis() as u64,
                    error = %err,
                    "Retrying a storage operation after a temporary failure."
                );
            },
        )
        .await;
        match outcome {
            Ok((value, _)) => Ok(value),
            Err(g) => Err(give_up(g.error, g.attempts, g.elapsed)),
        }
    }
}

/// Adds the number of attempts to a transient error that is given up on.
fn give_up(err: Error, attempts: u32, elapsed: Duration) -> Error {
    match err {
        Error::Transient { backend, message } if attempts > 1 => Error::Transient {
            backend,
            message: format!(
                "{message} (gave up after {attempts} attempts in {:.1}s)",
                elapsed.as_secs_f64()
            ),
        },
        other => other,
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<S: Sink> Sink for RetrySink<S> {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put(&self, kind: FileKind, name: &str, data: Bytes, mode: PutMode) -> Result<()> {
        self.run("put", kind, name, |number| {
            let data = data.clone();
            async move {
                match self.inner.put(kind, name, data.clone(), mode).await {
                    // An earlier attempt failed in a way that may have
                    // stored the object anyway (attempts are only repeated
                    // after retryable errors): decide by content.
                    Err(Error::AlreadyExists { .. }) if mode == PutMode::Create && number > 1 => {
                        self.reconcile_create(kind, name, &data).await
                    }
                    other => other,
                }
            }
        })
        .await
    }

    async fn put_data_pack(&self, name: &str, data: Bytes) -> Result<()> {
        let kind = FileKind::Pack;
        self.run("put", kind, name, |number| {
            let data = data.clone();
            async move {
                match self.inner.put_data_pack(name, data.clone()).await {
                    // As in `put`: an earlier attempt may have stored it.
                    Err(Error::AlreadyExists { .. }) if number > 1 => {
                        self.reconcile_create(kind, name, &data).await
                    }
                    other => other,
                }
            }
        })
        .await
    }

    async fn get(&self, kind: FileKind, name: &str) -> Result<Bytes> {
        self.run("get", kind, name, |_| self.inner.get(kind, name))
            .await
    }

    async fn get_range(&self, kind: FileKind, name: &str, range: Range<u64>) -> Result<Bytes> {
        self.run("get_range", kind, name, |_| {
            self.inner.get_range(kind, name, range.clone())
        })
        .await
    }

    async fn list(&self, kind: FileKind) -> Result<Vec<ObjectInfo>> {
        self.run("list", kind, "", |_| self.inner.list(kind)).await
    }

    async fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        self.run("delete", kind, name, |_| self.inner.delete(kind, name))
            .await
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
    ) -> Result<backup_core::LockExtension> {
        self.run("retain", kind, name, |_| {
            self.inner.retain_until(kind, name, until, margin)
        })
        .await
    }
    async fn locked_until(&self, kind: FileKind, name: &str) -> Result<Option<String>> {
        self.run("lock", kind, name, |_| self.inner.locked_until(kind, name))
            .await
    }
}

impl<S: Sink> RetrySink<S> {
    /// After an ambiguous failure, a create that finds the object existing
    /// succeeded if the object holds exactly our bytes.
    async fn reconcile_create(&self, kind: FileKind, name: &str, data: &Bytes) -> Result<()> {
        match self.inner.get(kind, name).await {
            Ok(existing) if existing == *data => {
                tracing::info!(
                    kind = %kind,
                    name,
                    location = %self.inner.location(),
                    "A retried create found its own earlier write; counting it as done."
                );
                Ok(())
            }
            _ => Err(Error::AlreadyExists {
                kind,
                name: name.to_owned(),
            }),
        }
    }
}

/// The storage option `append-only`: a client that adds and never
/// removes. Deletes and overwrites are refused with
/// [`Error::PermissionDenied`] for every file but lock files (locks and
/// leases must disappear or be renewed when their holder is done; they
/// hold no data). [`Sink::append_only`] says so, and operations that must
/// delete check it before they change anything.
///
/// This layer keeps an honest client honest; it cannot stop an attacker
/// who holds the same credentials and another program. Storage enforces
/// it: on S3 an IAM policy that grants `s3:DeleteObject` only on the
/// prefix's `locks/*`, with Object Lock or bucket versioning against
/// overwrites (README, "Append-only clients").
#[derive(Debug)]
pub struct AppendOnlySink<S> {
    inner: S,
}

impl<S: Sink> AppendOnlySink<S> {
    /// Wraps `inner`.
    pub fn new(inner: S) -> Self {
        AppendOnlySink { inner }
    }
}

fn refused(verb: &str, kind: FileKind, name: &str) -> Error {
    Error::PermissionDenied(format!(
        "this client is append-only (storage option `append-only`): it does not {verb} {kind} {name}; run this from a host with full access"
    ))
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl<S: Sink> Sink for AppendOnlySink<S> {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put(&self, kind: FileKind, name: &str, data: Bytes, mode: PutMode) -> Result<()> {
        if mode == PutMode::Overwrite && kind != FileKind::Lock {
            return Err(refused("overwrite", kind, name));
        }
        self.inner.put(kind, name, data, mode).await
    }

    async fn put_data_pack(&self, name: &str, data: Bytes) -> Result<()> {
        self.inner.put_data_pack(name, data).await
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
        if kind != FileKind::Lock {
            return Err(refused("delete", kind, name));
        }
        self.inner.delete(kind, name).await
    }

    fn append_only(&self) -> bool {
        true
    }
    async fn retain_until(
        &self,
        kind: FileKind,
        name: &str,
        until: chrono::DateTime<chrono::Utc>,
        margin: chrono::Duration,
    ) -> Result<backup_core::LockExtension> {
        self.inner.retain_until(kind, name, until, margin).await
    }
    async fn locked_until(&self, kind: FileKind, name: &str) -> Result<Option<String>> {
        self.inner.locked_until(kind, name).await
    }
}

#[cfg(test)]
mod append_only_tests {
    use super::*;
    use backup_core::{MemorySink, SinkExt};

    #[tokio::test]
    async fn only_lock_files_are_deleted_or_overwritten() {
        let sink = AppendOnlySink::new(MemorySink::new());
        assert!(sink.append_only());
        for kind in [FileKind::Snapshot, FileKind::Pack, FileKind::Lock] {
            sink.put(kind, "ab", "1".into(), PutMode::Create)
                .await
                .unwrap();
        }
        let refused = sink.delete(FileKind::Snapshot, "ab").await.unwrap_err();
        assert!(refused.to_string().contains("append-only"), "{refused}");
        assert!(sink
            .put(FileKind::Pack, "ab", "2".into(), PutMode::Overwrite)
            .await
            .is_err());
        assert_eq!(sink.get(FileKind::Pack, "ab").await.unwrap(), "1");
        sink.put(FileKind::Lock, "ab", "2".into(), PutMode::Overwrite)
            .await
            .unwrap();
        sink.delete(FileKind::Lock, "ab").await.unwrap();
        assert!(sink.get_opt(FileKind::Lock, "ab").await.unwrap().is_none());
        assert!(sink
            .get_opt(FileKind::Snapshot, "ab")
            .await
            .unwrap()
            .is_some());
    }
}
