//! A deterministic crash point for tests: the process kills itself just
//! before (or just after) its Nth storage write.
//!
//! Compiled only with the `failpoints` feature (off by default; the test
//! builds use `--all-features`). Every put and delete of every repository
//! the process opens passes through [`crate::build`], which wraps the
//! backend in a [`FailpointSink`] when `BACKUP_FAILPOINT` is set, so the
//! count is one sequence over the whole process (both repositories of a
//! `copy`, for example). Without the variable nothing is wrapped and
//! nothing changes.
//!
//! | `BACKUP_FAILPOINT` | effect |
//! |---|---|
//! | `write:N` | SIGKILL to the own process immediately before the Nth put or delete (1-based) |
//! | `after-write:N` | SIGKILL immediately after the Nth put or delete returned |
//! | `count` | count puts and deletes; with `BACKUP_FAILPOINT_COUNT_FILE`, that file holds the count so far after every write (so it holds the total however the process ends) |
//!
//! The kill is a real `SIGKILL`: no destructor, no flush, no lock release
//! runs, as when an operator or the OOM killer ends the process. Each
//! write is announced on standard error (`failpoint: write N: put
//! snapshot/...`) so that a test can name the point it killed at.
//! Writes that run concurrently are numbered in the order they start.

use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use backup_core::{Error, FileKind, ObjectInfo, PutMode, Result, Sink};
use bytes::Bytes;

/// The variable that arms the failpoint.
pub const ENV: &str = "BACKUP_FAILPOINT";
/// The file `count` mode keeps the number of writes in.
pub const COUNT_FILE_ENV: &str = "BACKUP_FAILPOINT_COUNT_FILE";

/// What the failpoint does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Failpoint {
    /// Only count writes.
    Count,
    /// Kill the process before the Nth write (1-based).
    Before(u64),
    /// Kill the process after the Nth write returned.
    After(u64),
}

impl Failpoint {
    /// Parses `count`, `write:N` or `after-write:N` (N ≥ 1).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for anything else.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = || {
            Error::Config(format!(
                "{ENV}=`{s}`: expected `count`, `write:N` or `after-write:N` with N from 1"
            ))
        };
        let number = |n: &str| match n.parse::<u64>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(bad()),
        };
        match s.split_once(':') {
            None if s == "count" => Ok(Failpoint::Count),
            Some(("write", n)) => Ok(Failpoint::Before(number(n)?)),
            Some(("after-write", n)) => Ok(Failpoint::After(number(n)?)),
            _ => Err(bad()),
        }
    }

    /// The failpoint `BACKUP_FAILPOINT` asks for, if any.
    ///
    /// # Errors
    ///
    /// As [`Failpoint::parse`].
    pub fn from_env() -> Result<Option<Self>> {
        match std::env::var(ENV) {
            Ok(s) if !s.is_empty() => Self::parse(&s).map(Some),
            _ => Ok(None),
        }
    }
}

/// Writes (puts and deletes) started so far by this process, over every
/// sink the failpoint wraps.
static WRITES: Mutex<u64> = Mutex::new(0);

/// Wraps `sink` in a [`FailpointSink`] when `BACKUP_FAILPOINT` is set;
/// returns it unchanged otherwise.
///
/// # Errors
///
/// [`Error::Config`] for a malformed `BACKUP_FAILPOINT`.
pub fn wrap(sink: Arc<dyn Sink>) -> Result<Arc<dyn Sink>> {
    Ok(match Failpoint::from_env()? {
        None => sink,
        Some(point) => Arc::new(FailpointSink {
            inner: sink,
            point,
            count_file: std::env::var_os(COUNT_FILE_ENV).map(PathBuf::from),
        }),
    })
}

/// Counts writes and kills the process at the armed one (see the module
/// docs).
#[derive(Debug)]
pub struct FailpointSink {
    inner: Arc<dyn Sink>,
    point: Failpoint,
    count_file: Option<PathBuf>,
}

impl FailpointSink {
    /// Numbers a write about to start; kills the process first when it is
    /// the one `write:N` names.
    fn before(&self, what: &str, kind: FileKind, name: &str) -> u64 {
        let mut writes = WRITES.lock().unwrap_or_else(PoisonError::into_inner);
        *writes += 1;
        let n = *writes;
        eprintln!("failpoint: write {n}: {what} {}/{name}", kind.prefix());
        if let Some(path) = &self.count_file {
            // Rewritten under the counter's lock, so the file never goes
            // backwards; a failure only loses the count.
            if let Err(e) = std::fs::write(path, format!("{n}\n")) {
                eprintln!("failpoint: cannot write {}: {e}", path.display());
            }
        }
        if self.point == Failpoint::Before(n) {
            kill_self(&format!("before write {n}"));
        }
        n
    }

    /// Kills the process when write `n` is the one `after-write:N` names.
    fn after(&self, n: u64) {
        if self.point == Failpoint::After(n) {
            kill_self(&format!("after write {n}"));
        }
    }
}

/// Sends SIGKILL to this process; never returns.
fn kill_self(when: &str) -> ! {
    eprintln!("failpoint: killing the process {when}");
    #[cfg(target_os = "linux")]
    {
        let _ =
            rustix::process::kill_process(rustix::process::getpid(), rustix::process::Signal::KILL);
        // SIGKILL to oneself is delivered before `kill` returns; should it
        // not be, no further write may start.
        loop {
            std::thread::park();
        }
    }
    #[cfg(not(target_os = "linux"))]
    std::process::abort()
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Sink for FailpointSink {
    fn location(&self) -> String {
        self.inner.location()
    }

    async fn put(&self, kind: FileKind, name: &str, data: Bytes, mode: PutMode) -> Result<()> {
        let n = self.before("put", kind, name);
        let out = self.inner.put(kind, name, data, mode).await;
        self.after(n);
        out
    }

    async fn put_data_pack(&self, name: &str, data: Bytes) -> Result<()> {
        let n = self.before("put", FileKind::Pack, name);
        let out = self.inner.put_data_pack(name, data).await;
        self.after(n);
        out
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
        let n = self.before("delete", kind, name);
        let out = self.inner.delete(kind, name).await;
        self.after(n);
        out
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
        self.inner.retain_until(kind, name, until, margin).await
    }
    async fn locked_until(&self, kind: FileKind, name: &str) -> Result<Option<String>> {
        self.inner.locked_until(kind, name).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs() {
        assert_eq!(Failpoint::parse("count").unwrap(), Failpoint::Count);
        assert_eq!(Failpoint::parse("write:1").unwrap(), Failpoint::Before(1));
        assert_eq!(
            Failpoint::parse("after-write:12").unwrap(),
            Failpoint::After(12)
        );
        for bad in ["", "write", "write:0", "write:x", "after:3", "count:1"] {
            assert!(Failpoint::parse(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn count_mode_counts_puts_and_deletes_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("count");
        let sink = FailpointSink {
            inner: Arc::new(backup_core::MemorySink::new()),
            point: Failpoint::Count,
            count_file: Some(file.clone()),
        };
        let before = *WRITES.lock().unwrap();
        sink.put(FileKind::Lock, "a", "x".into(), PutMode::Create)
            .await
            .unwrap();
        sink.get(FileKind::Lock, "a").await.unwrap();
        sink.list(FileKind::Lock).await.unwrap();
        sink.delete(FileKind::Lock, "a").await.unwrap();
        let after: u64 = std::fs::read_to_string(&file)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        assert_eq!(after, before + 2);
    }
}
