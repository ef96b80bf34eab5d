//! The worker connections that copy table parts inside the exported
//! snapshot, and the part streams they read.

use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use backup_core::source::{BlockingReader, Content};
use backup_core::{Error, Result};

use crate::postgres::conn::ConnInfo;
use crate::postgres::script::quote_literal;
use crate::postgres::wire::{CopyOut, WireConfig, WireConn, WireError};

/// Per part: rows and bytes once the part was read to the end.
pub(super) type PartStats = Arc<Mutex<HashMap<(usize, u32), (u64, u64)>>>;

/// Connection pool of worker connections inside the exported snapshot:
/// at most `jobs` of them in use at once, whatever the archiver's
/// concurrency (which also counts the `pg_dump` streams). Workers are
/// blocking connections (see [`crate::postgres::wire`]) read on the
/// archiver's threads.
pub(super) struct Pool {
    wire: WireConfig,
    /// Joins a new connection to the exported snapshot.
    setup: String,
    location: String,
    jobs: usize,
    state: Mutex<PoolState>,
    freed: Condvar,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<WireConn>,
    busy: usize,
}

impl Pool {
    /// A pool of at most `jobs` connections joined to the snapshot
    /// `snapshot_id`.
    pub(super) fn new(info: &ConnInfo, snapshot_id: &str, jobs: usize) -> Result<Arc<Self>> {
        Ok(Arc::new(Pool {
            wire: info.wire().map_err(Error::source_failed)?,
            setup: format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}; {}",
                quote_literal(snapshot_id),
                SESSION_SETUP
            ),
            location: info.location().to_owned(),
            jobs,
            state: Mutex::default(),
            freed: Condvar::new(),
        }))
    }

    /// Waits for a free worker slot.
    fn lease(self: &Arc<Self>) -> Lease {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while st.busy >= self.jobs {
            st = self.freed.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        st.busy += 1;
        Lease { pool: self.clone() }
    }

    /// An idle connection, or a new one joined to the snapshot.
    fn connection(&self, table: &str) -> std::io::Result<WireConn> {
        if let Some(c) = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .idle
            .pop()
        {
            return Ok(c);
        }
        let mut c = WireConn::connect(&self.wire).map_err(|e| {
            std::io::Error::other(format!(
                "copying table {table}: connecting to PostgreSQL at {}: {e}",
                self.location
            ))
        })?;
        c.simple_query(&self.setup).map_err(|e| {
            std::io::Error::other(format!(
                "copying table {table}: joining the exported snapshot: {e}"
            ))
        })?;
        Ok(c)
    }
}

/// A worker slot; given back when dropped.
struct Lease {
    pool: Arc<Pool>,
}

impl Lease {
    /// Hands a connection that finished its statement back for reuse.
    fn keep(&self, c: WireConn) {
        self.pool
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .idle
            .push(c);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .busy -= 1;
        self.pool.freed.notify_one();
    }
}

/// Session settings of every reading connection, as `pg_dump` uses them:
/// output that reads back exactly (floats, dates, intervals), no
/// timeouts, and an error instead of silently filtered rows under
/// row-level security.
pub(super) const SESSION_SETUP: &str = "SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0; SET extra_float_digits = 3; SET datestyle = ISO; SET intervalstyle = postgres; SET row_security = off;";

/// One part, read on the archiver's blocking thread: waits for a worker
/// slot, takes a connection and starts the COPY. The rows and bytes are
/// recorded, and the connection kept for the next part, once the part was
/// read to the end.
pub(super) fn open_copy(
    pool: Arc<Pool>,
    sql: String,
    table: String,
    key: (usize, u32),
    stats: PartStats,
) -> Content {
    Content::Blocking(Box::new(move || {
        let lease = pool.lease();
        let conn = pool.connection(&table)?;
        let done = Box::new(move |conn: WireConn, rows: u64, bytes: u64| {
            stats
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key, (rows, bytes));
            lease.keep(conn);
        });
        match conn.copy_out(&sql, done) {
            Ok(rows) => Ok(Box::new(CopyRows { rows, table }) as BlockingReader),
            Err(e) => Err(copy_error(&table, &e)),
        }
    }))
}

/// The rows of one part; errors name the table.
struct CopyRows {
    rows: CopyOut,
    table: String,
}

impl std::io::Read for CopyRows {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.rows.read(buf).map_err(|e| {
            std::io::Error::new(e.kind(), format!("copying table {}: {e}", self.table))
        })
    }
}

fn copy_error(table: &str, e: &WireError) -> std::io::Error {
    let mut msg = format!("copying table {table}: {e}");
    if let WireError::Db { code, .. } = e {
        if code == "42501" {
            msg.push_str(": grant the privilege to the connecting role or use a role that has it");
            return std::io::Error::new(std::io::ErrorKind::PermissionDenied, msg);
        }
    }
    std::io::Error::other(msg)
}
