//! What every follower (oplog, Redis stream) does the same way: reconnect
//! after an error that may pass ([`reconnects`], [`reconnect`]) and store a piece
//! through a repository lock or a storage outage ([`store_piece`]), both
//! on `backup_core::retry`.

use std::time::Duration;

use backup_core::capture::{CaptureName, PieceInfo};
use backup_core::repo::Repository;
use backup_core::retry::{retry, Restarts, RetryPolicy};
use backup_core::{Error, Result};
use tokio_util::sync::CancellationToken;

use super::{CaptureEvent, CaptureObserver};

/// The restarts of a follower's connection: 1 s doubling up to a minute
/// while it keeps failing, starting over after a minute of following.
pub(crate) fn reconnects() -> Restarts {
    Restarts::new(
        RetryPolicy::default()
            .with_backoff(
                Duration::from_secs(1),
                Duration::from_secs(60),
                Duration::ZERO,
            )
            .with_jitter(false),
        Duration::from_secs(60),
    )
}

/// After one connection's worth of following failed with `error`:
/// `Ok(true)` to follow again once [`Restarts::wait`] is over (an error
/// that may pass, reported as [`CaptureEvent::Reconnecting`] with the
/// wait), `Ok(false)` when `cancel` fired during the wait, and the error
/// itself when it does not pass (or another follower holds the stream).
///
/// # Errors
///
/// `error`, when it does not pass.
pub(crate) async fn reconnect(
    restarts: &mut Restarts,
    error: Error,
    observer: &dyn CaptureObserver,
    cancel: &CancellationToken,
) -> Result<bool> {
    if !error.is_retryable() || matches!(error, Error::Locked(_)) {
        return Err(error);
    }
    let after = restarts.failed().delay;
    observer.event(&CaptureEvent::Reconnecting {
        error: backup_core::error::report(&error),
        after,
    });
    Ok(Restarts::wait(after, cancel).await)
}

/// Stores one piece (`what` names it in events: "an oplog slice"). A
/// repository lock held by a prune is waited out for as long as it lasts
/// (the source keeps what arrives meanwhile), with a warning each
/// `lock_wait`; storage errors that may pass are retried for about a
/// minute (1 s doubling), each reported as
/// [`CaptureEvent::Reconnecting`].
///
/// # Errors
///
/// Storage errors that do not pass, or still fail after a minute.
pub(crate) async fn store_piece(
    repo: &Repository,
    info: &PieceInfo,
    data: &[u8],
    lock_wait: Duration,
    observer: &dyn CaptureObserver,
    what: &str,
) -> Result<CaptureName> {
    let policy = RetryPolicy::with_max_attempts(7)
        .with_backoff(
            Duration::from_secs(1),
            Duration::from_secs(32),
            Duration::from_secs(120),
        )
        .with_jitter(false);
    loop {
        let stored = retry(
            &policy,
            None,
            |_| repo.put_capture(info.clone(), data, lock_wait),
            |e: &Error| e.is_retryable() && !matches!(e, Error::Locked(_)),
            |_, e, after| {
                observer.event(&CaptureEvent::Reconnecting {
                    error: format!("storing {what}: {}", backup_core::error::report(e)),
                    after,
                });
            },
        )
        .await;
        match stored {
            Ok((name, _)) => return Ok(name),
            Err(g) => match g.error {
                e @ Error::Locked(_) => observer.event(&CaptureEvent::Warning(format!(
                    "storing {what} waits for a repository lock: {e}"
                ))),
                e => return Err(e),
            },
        }
    }
}
