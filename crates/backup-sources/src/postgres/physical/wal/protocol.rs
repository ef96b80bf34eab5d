//! What the WAL receiver says and hears on its replication connection:
//! one-row commands, the stream's messages, standby status updates, the
//! end of a timeline, timeline history files, and the connection's errors
//! explained.

use std::time::Duration;

use backup_core::{Error, Result};
use chrono::Utc;

use super::super::lsn::Lsn;
use super::super::remote;
use crate::postgres::wire::{db_error, WireConn, WireError};

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

fn pg_now() -> i64 {
    Utc::now().timestamp_micros() - PG_EPOCH_US
}

pub(super) fn one_row(conn: &mut WireConn, sql: &str) -> Result<Vec<Option<String>>> {
    conn.query_rows(sql)
        .map_err(|e| wire_error(&e, sql))?
        .into_iter()
        .next()
        .ok_or_else(|| Error::source_failed(format!("{sql} returned nothing")))
}

pub(super) fn wire_error(e: &WireError, what: &str) -> Error {
    if let WireError::Db { code, message, .. } = e {
        if code == "55006" || message.contains("is active for PID") {
            return Error::source_failed(format!(
                "the replication slot is in use by another consumer ({message}): stop the other receiver or give this one its own slot (--slot)"
            ));
        }
    }
    Error::source_with(what.to_owned(), remote::clone_wire(e), e.retryable())
}

pub(super) fn io(e: &std::io::Error) -> Error {
    Error::source_with(
        "the replication connection failed",
        std::io::Error::new(e.kind(), e.to_string()),
        true,
    )
}

/// A standby status update: written, flushed and applied up to `lsn`.
pub(super) fn send_status(conn: &mut WireConn, lsn: Lsn) -> std::io::Result<()> {
    let mut m = Vec::with_capacity(34);
    m.push(b'r');
    for _ in 0..3 {
        m.extend_from_slice(&lsn.0.to_be_bytes());
    }
    m.extend_from_slice(&pg_now().to_be_bytes());
    m.push(0);
    conn.send_copy_data(&m)
}

/// A message of the replication stream.
pub(super) enum Msg {
    Data(Lsn, Vec<u8>, Lsn),
    Keepalive(Lsn, bool),
    CopyDone,
    Error(WireError),
    Other,
}

/// Reads result rows until `ReadyForQuery`.
fn read_result(conn: &mut WireConn) -> Result<Vec<Vec<Option<String>>>> {
    conn.rows()
        .map_err(|e| io(&e))?
        .map_err(Error::source_failed)
}

/// `TIMELINE_HISTORY tli`: the file's name and content.
pub(super) fn timeline_history(conn: &mut WireConn, tli: u32) -> Result<(String, String)> {
    let row = one_row(conn, &format!("TIMELINE_HISTORY {tli}"))?;
    Ok((
        row.first().cloned().flatten().unwrap_or_default(),
        row.get(1).cloned().flatten().unwrap_or_default(),
    ))
}

/// The next message of the replication stream; `None` when none came
/// within 200 ms.
pub(super) fn poll_msg(conn: &mut WireConn) -> Result<Option<Msg>> {
    conn.poll_message(Duration::from_millis(200), |tag, body| match tag {
        b'd' => match body.first() {
            Some(b'w') if body.len() >= 25 => {
                let at = Lsn(u64::from_be_bytes(
                    body[1..9].try_into().unwrap_or_default(),
                ));
                let end = Lsn(u64::from_be_bytes(
                    body[9..17].try_into().unwrap_or_default(),
                ));
                Msg::Data(at, body[25..].to_vec(), end)
            }
            Some(b'k') if body.len() >= 18 => Msg::Keepalive(
                Lsn(u64::from_be_bytes(
                    body[1..9].try_into().unwrap_or_default(),
                )),
                body[17] != 0,
            ),
            _ => Msg::Other,
        },
        b'c' => Msg::CopyDone,
        b'E' => Msg::Error(db_error(body)),
        _ => Msg::Other,
    })
    .map_err(|e| io(&e))
}

/// After the server ended the streamed timeline: ends the copy and reads
/// the next timeline and where it starts.
pub(super) fn end_of_timeline(conn: &mut WireConn) -> Result<(u32, Lsn)> {
    conn.send_copy_done().map_err(|e| io(&e))?;
    // The next timeline and where it starts.
    let rows = read_result(conn)?;
    let row = rows.first().ok_or_else(|| {
        Error::source_failed("the server ended the timeline without naming the next")
    })?;
    let next_tli: u32 = row
        .first()
        .cloned()
        .flatten()
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| Error::source_failed("no next timeline"))?;
    let next_start = Lsn::parse(row.get(1).cloned().flatten().as_deref().unwrap_or(""))?;
    Ok((next_tli, next_start))
}
