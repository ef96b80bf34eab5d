//! A sink that injects failures, for retry and crash-safety tests.

use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use backup_core::{Error, FileKind, ObjectInfo, PutMode, Result, Sink};
use bytes::Bytes;

/// What an injected fault does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fault {
    /// Fails with [`Error::Transient`] (retryable); nothing is stored.
    Transient,
    /// Fails with a permanent [`Error::Generic`]; nothing is stored.
    Permanent,
    /// A put stores only the first `keep` bytes and reports success (a torn
    /// write); a get returns only the first `keep` bytes.
    Truncate {
        /// Bytes kept.
        keep: usize,
    },
    /// A put stores the data but then fails with [`Error::Transient`], as
    /// when a connection breaks after the server applied the request.
    StoredButLost,
}

/// The operations a [`FaultySink`] counts and can fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// [`Sink::put`].
    Put,
    /// [`Sink::get`] and [`Sink::get_range`].
    Get,
    /// [`Sink::list`].
    List,
    /// [`Sink::delete`].
    Delete,
}

/// Which calls of an operation a rule hits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Calls {
    /// Call number `n` (1-based, over the sink's life).
    Nth(u64),
    /// Every call after the first `n`.
    After(u64),
    /// The next `n` calls (counted down as they happen).
    Next(u64),
    /// Every call on files of this kind.
    OfKind(FileKind),
}

#[derive(Debug, Clone, Copy)]
struct Rule {
    op: Op,
    calls: Calls,
    fault: Fault,
}

#[derive(Debug, Default)]
struct State {
    rules: Vec<Rule>,
    puts: u64,
    gets: u64,
    lists: u64,
    deletes: u64,
    injected: u64,
}

/// A [`Sink`] wrapper that fails chosen calls and counts every call.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() {
/// use std::sync::Arc;
/// use backup_core::{FileKind, MemorySink, PutMode, Sink};
/// use backup_testkit::faulty::{Fault, FaultySink};
///
/// let sink = FaultySink::new(Arc::new(MemorySink::new()));
/// sink.fail_nth_put(2, Fault::Permanent);
/// assert!(sink.put(FileKind::Key, "a", "1".into(), PutMode::Create).await.is_ok());
/// assert!(sink.put(FileKind::Key, "b", "2".into(), PutMode::Create).await.is_err());
/// assert_eq!(sink.puts(), 2);
/// # }
/// ```
pub struct FaultySink {
    inner: Arc<dyn Sink>,
    state: Mutex<State>,
}

impl fmt::Debug for FaultySink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultySink")
            .field("inner", &self.inner)
            .field("state", &*self.state())
            .finish()
    }
}

impl FaultySink {
    /// Wraps `inner` with no faults planned.
    pub fn new(inner: Arc<dyn Sink>) -> Self {
        FaultySink {
            inner,
            state: Mutex::new(State::default()),
        }
    }

    /// The wrapped sink.
    pub fn inner(&self) -> &Arc<dyn Sink> {
        &self.inner
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    fn add(&self, op: Op, calls: Calls, fault: Fault) {
        self.state().rules.push(Rule { op, calls, fault });
    }

    /// Put number `n` (1-based, counting every put since creation) fails.
    pub fn fail_nth_put(&self, n: u64, fault: Fault) {
        self.add(Op::Put, Calls::Nth(n), fault);
    }

    /// Every put after the first `n` fails, as if the process or the
    /// network died after `n` writes.
    pub fn fail_puts_after(&self, n: u64, fault: Fault) {
        self.add(Op::Put, Calls::After(n), fault);
    }

    /// The next `count` puts fail.
    pub fn fail_next_puts(&self, count: u64, fault: Fault) {
        self.add(Op::Put, Calls::Next(count), fault);
    }

    /// Every put of a file of `kind` fails.
    pub fn fail_puts_of_kind(&self, kind: FileKind, fault: Fault) {
        self.add(Op::Put, Calls::OfKind(kind), fault);
    }

    /// The next `count` gets (whole or ranged) fail.
    pub fn fail_next_gets(&self, count: u64, fault: Fault) {
        self.add(Op::Get, Calls::Next(count), fault);
    }

    /// Every get (whole or ranged) of a file of `kind` fails.
    pub fn fail_gets_of_kind(&self, kind: FileKind, fault: Fault) {
        self.add(Op::Get, Calls::OfKind(kind), fault);
    }

    /// Every call of `op` after the first `n` fails, as if the process
    /// died after `n` such calls.
    pub fn fail_after(&self, op: Op, n: u64, fault: Fault) {
        self.add(op, Calls::After(n), fault);
    }

    /// The next `count` calls of `op` fail.
    pub fn fail_next(&self, op: Op, count: u64, fault: Fault) {
        self.add(op, Calls::Next(count), fault);
    }

    /// Removes every planned fault.
    pub fn clear_faults(&self) {
        self.state().rules.clear();
    }

    /// Puts attempted so far.
    pub fn puts(&self) -> u64 {
        self.state().puts
    }

    /// Gets (whole and ranged) attempted so far.
    pub fn gets(&self) -> u64 {
        self.state().gets
    }

    /// Lists attempted so far.
    pub fn lists(&self) -> u64 {
        self.state().lists
    }

    /// Deletes attempted so far.
    pub fn deletes(&self) -> u64 {
        self.state().deletes
    }

    /// Faults injected so far.
    pub fn injected(&self) -> u64 {
        self.state().injected
    }

    /// Counts a call and returns the fault to inject, if any.
    fn on_call(&self, op: Op, kind: Option<FileKind>) -> (u64, Option<Fault>) {
        let mut state = self.state();
        let number = {
            let counter = match op {
                Op::Put => &mut state.puts,
                Op::Get => &mut state.gets,
                Op::List => &mut state.lists,
                Op::Delete => &mut state.deletes,
            };
            *counter += 1;
            *counter
        };
        let mut fault = None;
        for rule in state.rules.iter_mut().filter(|r| r.op == op) {
            let hit = match &mut rule.calls {
                Calls::Nth(n) => *n == number,
                Calls::After(n) => number > *n,
                Calls::Next(left) if *left > 0 => {
                    *left -= 1;
                    true
                }
                Calls::Next(_) => false,
                Calls::OfKind(k) => Some(*k) == kind,
            };
            if hit {
                fault = Some(rule.fault);
                break;
            }
        }
        if fault.is_some() {
            state.injected += 1;
        }
        (number, fault)
    }
}

fn injected_error(fault: Fault, op: Op, number: u64, kind: Option<FileKind>, name: &str) -> Error {
    let target = match kind {
        Some(kind) => format!("{kind} {name}"),
        None => name.to_owned(),
    };
    match fault {
        Fault::Permanent => Error::Generic {
            backend: "faulty",
            source: Box::new(std::io::Error::other(format!(
                "injected permanent failure of {op:?} #{number} ({target})"
            ))),
        },
        _ => Error::Transient {
            backend: "faulty",
            message: format!("injected transient failure of {op:?} #{number} ({target})"),
        },
    }
}

#[async_trait]
#[deny(clippy::missing_trait_methods)]
impl Sink for FaultySink {
    fn location(&self) -> String {
        format!("faulty({})", self.inner.location())
    }

    async fn put(&self, kind: FileKind, name: &str, data: Bytes, mode: PutMode) -> Result<()> {
        let (number, fault) = self.on_call(Op::Put, Some(kind));
        match fault {
            None => self.inner.put(kind, name, data, mode).await,
            Some(Fault::Truncate { keep }) => {
                let keep = keep.min(data.len());
                self.inner.put(kind, name, data.slice(..keep), mode).await
            }
            Some(Fault::StoredButLost) => {
                self.inner.put(kind, name, data, mode).await?;
                Err(injected_error(
                    Fault::StoredButLost,
                    Op::Put,
                    number,
                    Some(kind),
                    name,
                ))
            }
            Some(fault) => Err(injected_error(fault, Op::Put, number, Some(kind), name)),
        }
    }

    async fn put_data_pack(&self, name: &str, data: Bytes) -> Result<()> {
        let kind = FileKind::Pack;
        let (number, fault) = self.on_call(Op::Put, Some(kind));
        match fault {
            None => self.inner.put_data_pack(name, data).await,
            Some(Fault::Truncate { keep }) => {
                let keep = keep.min(data.len());
                self.inner.put_data_pack(name, data.slice(..keep)).await
            }
            Some(Fault::StoredButLost) => {
                self.inner.put_data_pack(name, data).await?;
                Err(injected_error(
                    Fault::StoredButLost,
                    Op::Put,
                    number,
                    Some(kind),
                    name,
                ))
            }
            Some(fault) => Err(injected_error(fault, Op::Put, number, Some(kind), name)),
        }
    }

    async fn get(&self, kind: FileKind, name: &str) -> Result<Bytes> {
        let (number, fault) = self.on_call(Op::Get, Some(kind));
        match fault {
            None | Some(Fault::StoredButLost) => self.inner.get(kind, name).await,
            Some(Fault::Truncate { keep }) => {
                let data = self.inner.get(kind, name).await?;
                Ok(data.slice(..keep.min(data.len())))
            }
            Some(fault) => Err(injected_error(fault, Op::Get, number, Some(kind), name)),
        }
    }

    async fn get_range(&self, kind: FileKind, name: &str, range: Range<u64>) -> Result<Bytes> {
        let (number, fault) = self.on_call(Op::Get, Some(kind));
        match fault {
            None | Some(Fault::StoredButLost) => self.inner.get_range(kind, name, range).await,
            Some(Fault::Truncate { keep }) => {
                let data = self.inner.get_range(kind, name, range).await?;
                Ok(data.slice(..keep.min(data.len())))
            }
            Some(fault) => Err(injected_error(fault, Op::Get, number, Some(kind), name)),
        }
    }

    async fn list(&self, kind: FileKind) -> Result<Vec<ObjectInfo>> {
        let (number, fault) = self.on_call(Op::List, Some(kind));
        match fault {
            None | Some(Fault::StoredButLost | Fault::Truncate { .. }) => {
                self.inner.list(kind).await
            }
            Some(fault) => Err(injected_error(fault, Op::List, number, Some(kind), "")),
        }
    }

    async fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        let (number, fault) = self.on_call(Op::Delete, Some(kind));
        match fault {
            None | Some(Fault::Truncate { .. }) => self.inner.delete(kind, name).await,
            Some(Fault::StoredButLost) => {
                self.inner.delete(kind, name).await?;
                Err(injected_error(
                    Fault::StoredButLost,
                    Op::Delete,
                    number,
                    Some(kind),
                    name,
                ))
            }
            Some(fault) => Err(injected_error(fault, Op::Delete, number, Some(kind), name)),
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
    ) -> Result<backup_core::LockExtension> {
        self.inner.retain_until(kind, name, until, margin).await
    }
    async fn locked_until(&self, kind: FileKind, name: &str) -> Result<Option<String>> {
        self.inner.locked_until(kind, name).await
    }
}
