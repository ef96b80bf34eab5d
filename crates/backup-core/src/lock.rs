//! Repository locks with leases.
//!
//! A lock is a sealed file under `locks/` naming its holder. Shared locks
//! (backup, restore, verify) coexist; an exclusive lock (prune, repair)
//! excludes every other lock. A lock carries an expiry time and is renewed
//! by its holder while held (a new file is written, then the old one
//! removed), so a crashed holder's lock expires on its own. Acquisition
//! writes the lock first and then looks for conflicting live locks; on
//! conflict it removes its own lock again, so two racing processes can
//! never both believe they hold conflicting locks.

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::Repository;
use crate::sink::{FileKind, Sink};

/// How long a lock lives without renewal.
pub const LEASE: Duration = Duration::from_secs(300);
/// How often a held lock is renewed.
pub const RENEW_EVERY: Duration = Duration::from_secs(60);

/// Whether a lock shares the repository with other holders.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LockMode {
    /// Backups, restores, checks, forget: any number at once.
    Shared,
    /// Prune and repair: no other lock may exist.
    Exclusive,
}

impl LockMode {
    /// [`LockMode::Exclusive`] when `exclusive`, else [`LockMode::Shared`].
    pub fn exclusive_if(exclusive: bool) -> Self {
        if exclusive {
            LockMode::Exclusive
        } else {
            LockMode::Shared
        }
    }
}

/// Contents of a lock file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LockInfo {
    /// Exclusive or shared.
    pub exclusive: bool,
    /// The operation holding it (`backup`, `restore`, `prune`, ...).
    pub operation: String,
    /// Holder's host name.
    pub host: String,
    /// Holder's process id.
    pub pid: u32,
    /// Holder's user.
    pub user: String,
    /// When the lock was first taken.
    pub created: DateTime<Utc>,
    /// When this lock file stops counting unless renewed.
    pub expires: DateTime<Utc>,
    /// Random value making each lock file unique.
    pub nonce: Id,
}

impl LockInfo {
    /// Whether the lease has run out at `now`.
    pub fn is_expired(&self, now: DateTime<Utc>) -> bool {
        self.expires < now
    }

    /// Whether the holder is known to be gone: the lease ran out, or the
    /// lock names this host and its process no longer exists (a holder
    /// killed with SIGKILL, whose lease has not run out yet). A lock from
    /// another host counts until its lease ends; so does one naming a host
    /// that cannot be told apart (`unknown`, `localhost`).
    pub fn is_stale(&self, now: DateTime<Utc>) -> bool {
        self.is_expired(now) || self.holder_is_gone()
    }

    fn holder_is_gone(&self) -> bool {
        if matches!(self.host.as_str(), "unknown" | "localhost" | "") {
            return false;
        }
        if self.host != crate::util::hostname() {
            return false;
        }
        if self.pid == std::process::id() {
            return false;
        }
        let Ok(pid) = i32::try_from(self.pid) else {
            return false;
        };
        // Signal 0 checks existence only; EPERM means it exists under
        // another user.
        matches!(
            nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None),
            Err(nix::errno::Errno::ESRCH)
        )
    }

    /// A one-line description for messages.
    pub fn describe(&self, now: DateTime<Utc>) -> String {
        let age = (now - self.created).num_seconds().max(0);
        format!(
            "{} lock held by {}@{} (pid {}) for `{}`, taken {}s ago{}",
            if self.exclusive {
                "an exclusive"
            } else {
                "a shared"
            },
            self.user,
            self.host,
            self.pid,
            self.operation,
            age,
            if self.is_expired(now) {
                " (expired: the holder is gone; `backup unlock` removes it)"
            } else if self.holder_is_gone() {
                " (its process is gone; `backup unlock` removes it)"
            } else {
                ""
            }
        )
    }
}

/// A held lock; renewed in the background until released.
///
/// Release it with [`LockGuard::release`], which removes the lock file and
/// reports whether that worked; [`Repository::with_lock`] does so on every
/// path. Dropping a guard without releasing it (a panic) stops the renewal
/// and starts a best-effort removal in the background; if that cannot run,
/// the lease expires on its own within [`LEASE`].
#[derive(Debug)]
pub struct LockGuard {
    sink: Arc<dyn Sink>,
    current: Arc<Mutex<String>>,
    renewer: Option<tokio::task::JoinHandle<()>>,
}

impl LockGuard {
    /// Releases the lock.
    ///
    /// # Errors
    ///
    /// Storage errors while deleting the lock file.
    pub async fn release(mut self) -> Result<()> {
        if let Some(r) = self.renewer.take() {
            r.abort();
        }
        let name = self
            .current
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.sink.delete(FileKind::Lock, &name).await
    }
}

impl Drop for LockGuard {
    fn drop(&mut self) {
        if let Some(r) = self.renewer.take() {
            r.abort();
            let sink = self.sink.clone();
            let name = self
                .current
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone();
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(async move {
                    let _ = sink.delete(FileKind::Lock, &name).await;
                });
            }
        }
    }
}

impl Repository {
    /// Every lock file with its contents (unreadable files are skipped,
    /// and so are files whose names are not ids: see [`Repository::locks`]'s
    /// note in `docs/REPOSITORY_FORMAT.md` §13).
    ///
    /// # Errors
    ///
    /// Storage errors while listing.
    pub async fn locks(&self) -> Result<Vec<(String, LockInfo)>> {
        let mut out = Vec::new();
        for o in self.sink().list(FileKind::Lock).await? {
            // Lock files are named by their hash; other names under
            // `locks/` are not repository locks (job slot leases of the
            // daemon, write probes) and do not conflict with anything.
            if o.name.parse::<Id>().is_err() {
                continue;
            }
            match self.load_file::<LockInfo>(FileKind::Lock, &o.name).await {
                Ok(info) => out.push((o.name, info)),
                Err(Error::NotFound { .. }) => {}
                Err(e) => {
                    tracing::warn!(lock = %o.name, error = %e, "Ignoring an unreadable lock file.");
                }
            }
        }
        Ok(out)
    }

    /// Takes a lock for `operation`.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] naming the conflicting holder; storage errors.
    pub async fn lock(&self, mode: LockMode, operation: &str) -> Result<LockGuard> {
        let exclusive = mode == LockMode::Exclusive;
        let now = Utc::now();
        let info = LockInfo {
            exclusive,
            operation: operation.to_owned(),
            host: crate::util::hostname(),
            pid: std::process::id(),
            user: crate::util::username(),
            created: now,
            expires: now + LEASE,
            nonce: Id::random(),
        };
        let name = self.save_file(FileKind::Lock, &info).await?.to_hex();
        let conflict = self
            .locks()
            .await?
            .into_iter()
            .filter(|(n, l)| *n != name && !l.is_stale(Utc::now()) && (exclusive || l.exclusive))
            .map(|(_, l)| l.describe(Utc::now()))
            .next();
        if let Some(c) = conflict {
            let _ = self.sink().delete(FileKind::Lock, &name).await;
            return Err(Error::Locked(c));
        }
        let current = Arc::new(Mutex::new(name));
        let renewer = tokio::spawn(renew(self.clone(), info, current.clone()));
        Ok(LockGuard {
            sink: self.sink().clone(),
            current,
            renewer: Some(renewer),
        })
    }

    /// Takes a lock like [`Repository::lock`], retrying while another
    /// process holds a conflicting one, for up to `wait`.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] when the conflict outlasts `wait`; storage errors.
    pub async fn lock_wait(
        &self,
        mode: LockMode,
        operation: &str,
        wait: Duration,
    ) -> Result<LockGuard> {
        let deadline = tokio::time::Instant::now() + wait;
        let mut announced = false;
        loop {
            match self.lock(mode, operation).await {
                Err(Error::Locked(holder)) if tokio::time::Instant::now() < deadline => {
                    if !announced {
                        tracing::warn!(%holder, "Waiting for the repository lock.");
                        announced = true;
                    }
                    let left = deadline.saturating_duration_since(tokio::time::Instant::now());
                    tokio::time::sleep(left.min(Duration::from_secs(2))).await;
                }
                other => return other,
            }
        }
    }

    /// Runs `work` while holding a lock for `operation` (waiting up to
    /// `wait` for a conflicting one), then releases the lock, whether the
    /// work succeeded or failed. To abandon the work (a shutdown), let it
    /// end early, for example by selecting on a cancellation token inside
    /// `work`: the lock is still released before this returns.
    ///
    /// # Errors
    ///
    /// The error of `work`; otherwise [`Error::Locked`] or storage errors
    /// while taking or releasing the lock.
    pub async fn with_lock<T, E, Fut>(
        &self,
        mode: LockMode,
        operation: &str,
        wait: Duration,
        work: Fut,
    ) -> std::result::Result<T, E>
    where
        Fut: Future<Output = std::result::Result<T, E>>,
        E: From<Error>,
    {
        let guard = self.lock_wait(mode, operation, wait).await?;
        let result = work.await;
        let released = guard.release().await;
        let value = result?;
        released?;
        Ok(value)
    }

    /// Removes stale locks ([`LockInfo::is_stale`]), or all locks with
    /// `all`; returns how many.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub async fn unlock(&self, all: bool) -> Result<usize> {
        let now = Utc::now();
        let mut n = 0;
        for (name, l) in self.locks().await? {
            if all || l.is_stale(now) {
                self.sink().delete(FileKind::Lock, &name).await?;
                n += 1;
            }
        }
        Ok(n)
    }
}

async fn renew(repo: Repository, mut info: LockInfo, current: Arc<Mutex<String>>) {
    loop {
        tokio::time::sleep(RENEW_EVERY).await;
        info.expires = Utc::now() + LEASE;
        info.nonce = Id::random();
        match repo.save_file(FileKind::Lock, &info).await {
            Ok(new) => {
                let old = std::mem::replace(
                    &mut *current.lock().unwrap_or_else(PoisonError::into_inner),
                    new.to_hex(),
                );
                let _ = repo.sink().delete(FileKind::Lock, &old).await;
            }
            Err(e) => {
                tracing::warn!(error = %e, "Could not renew the repository lock; will retry.");
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn descriptions_say_who_and_whether_expired() {
        let now = Utc::now();
        let mut info = LockInfo {
            exclusive: false,
            operation: "backup".into(),
            host: "db1".into(),
            pid: 42,
            user: "backup".into(),
            created: now - chrono::Duration::seconds(30),
            expires: now + chrono::Duration::seconds(270),
            nonce: Id::random(),
        };
        let d = info.describe(now);
        assert!(
            d.starts_with("a shared lock held by backup@db1 (pid 42) for `backup`, taken 30s ago"),
            "{d}"
        );
        assert!(!info.is_expired(now));
        info.exclusive = true;
        info.expires = now - chrono::Duration::seconds(1);
        let d = info.describe(now);
        assert!(
            d.starts_with("an exclusive lock") && d.contains("expired"),
            "{d}"
        );
        assert_eq!(LockMode::exclusive_if(true), LockMode::Exclusive);
        assert_eq!(LockMode::exclusive_if(false), LockMode::Shared);
    }

    #[test]
    fn a_lock_of_a_dead_process_on_this_host_is_stale() {
        let now = Utc::now();
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let mut info = LockInfo {
            exclusive: false,
            operation: "capture".into(),
            host: crate::util::hostname(),
            pid: child.id(),
            user: "backup".into(),
            created: now,
            expires: now + chrono::Duration::seconds(300),
            nonce: Id::random(),
        };
        assert!(!info.is_stale(now), "the holder is alive");
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(info.is_stale(now), "the holder is gone");
        assert!(info.describe(now).contains("its process is gone"));
        // Another host's lock counts until its lease ends.
        info.host = "some-other-host".into();
        assert!(!info.is_stale(now));
        assert!(info.is_stale(now + chrono::Duration::seconds(301)));
        info.host = "localhost".into();
        assert!(!info.is_stale(now));
    }
}
