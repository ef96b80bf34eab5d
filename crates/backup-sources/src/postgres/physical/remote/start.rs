//! The start of a remote base backup: the server's identity and settings,
//! a temporary replication slot, and `BASE_BACKUP` up to its start
//! position and tablespaces ([`Begin`]).

use std::fmt::Write as _;

use backup_core::{Error, Result};
use chrono::{DateTime, Utc};

use super::super::lsn::{parse_setting_size, Lsn};
use super::super::meta::{new_label, TablespaceMeta};
use super::errors::{backup_error, io_error, slot_refused};
use crate::postgres::wire::{data_row, db_error, WireConn, WireError};
use crate::{Checkpoint, PostgresOptions};

/// What the server said when the backup started.
#[derive(Debug, Clone)]
pub(crate) struct Begin {
    pub(crate) system_identifier: String,
    pub(crate) server_version: String,
    pub(crate) server_version_num: u32,
    pub(crate) data_checksums: bool,
    pub(crate) wal_log_hints: bool,
    pub(crate) wal_segment_size: u64,
    pub(crate) block_size: u32,
    pub(crate) start_lsn: Lsn,
    pub(crate) timeline: u32,
    pub(crate) tablespaces: Vec<TablespaceMeta>,
    pub(crate) label: String,
    pub(crate) started_at: DateTime<Utc>,
}

/// A message of `BASE_BACKUP`'s start.
enum Step {
    Row(Vec<Option<String>>),
    SetEnd,
    Copy,
    Other,
}

/// Reads the server's identity and settings and starts `BASE_BACKUP`;
/// returns once the start position and tablespaces are known.
pub(super) fn start_backup(
    conn: &mut WireConn,
    opts: &PostgresOptions,
    user: &str,
) -> Result<Begin> {
    let q = |conn: &mut WireConn, sql: &str| -> Result<Vec<Vec<Option<String>>>> {
        conn.query_rows(sql)
            .map_err(|e| backup_error(&e, &format!("running {sql}")))
    };
    let ident = q(conn, "IDENTIFY_SYSTEM")?;
    let row = ident
        .first()
        .ok_or_else(|| Error::source_failed("IDENTIFY_SYSTEM returned nothing"))?;
    let system_identifier = row.first().cloned().flatten().unwrap_or_default();
    let show = |conn: &mut WireConn, name: &str| -> Result<String> {
        Ok(q(conn, &format!("SHOW {name}"))?
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .unwrap_or_default())
    };
    let server_version = show(conn, "server_version")?;
    let server_version_num: u32 = show(conn, "server_version_num")?.parse().unwrap_or(0);
    if server_version_num < 150_000 {
        return Err(Error::source_failed(format!(
            "PostgreSQL {server_version} cannot be backed up physically by this version of backup: physical backups need PostgreSQL 15 or newer (use the logical mode, the default, for older servers)"
        )));
    }
    let data_checksums = show(conn, "data_checksums")? == "on";
    let wal_log_hints = show(conn, "wal_log_hints")? == "on";
    let wal_segment_size = parse_setting_size(&show(conn, "wal_segment_size")?).unwrap_or(16 << 20);
    let block_size: u32 = show(conn, "block_size")?.parse().unwrap_or(8192);

    // A temporary slot holds the WAL from here on until the connection
    // ends, so that a checkpoint during a long backup cannot remove WAL
    // the backup still has to send. Without a free slot the backup goes
    // on unprotected, as pg_basebackup -X fetch does.
    let slot = format!("backup_{}_{:x}", std::process::id(), rand_u32());
    if let Err(e) = conn.query_rows(&format!(
        "CREATE_REPLICATION_SLOT \"{slot}\" TEMPORARY PHYSICAL (RESERVE_WAL)"
    )) {
        let (code, message) = match &e {
            WireError::Db { code, message, .. } => (code.as_str(), message.clone()),
            other @ WireError::Io(_) => ("", other.to_string()),
        };
        tracing::warn!("{}", slot_refused(code, &message, user));
    }

    let label = new_label();
    let mut cmd = format!(
        "BASE_BACKUP (LABEL '{}', CHECKPOINT '{}', WAL true, WAIT false, MANIFEST 'yes', MANIFEST_CHECKSUMS 'CRC32C', TABLESPACE_MAP true",
        label.replace('\'', "''"),
        match opts.checkpoint {
            Checkpoint::Fast => "fast",
            Checkpoint::Spread => "spread",
        }
    );
    if let Some(rate) = opts.max_rate {
        // kB per second, within what the server accepts.
        let kb = (rate / 1024).clamp(32, 1_048_576);
        let _ = write!(cmd, ", MAX_RATE {kb}");
    }
    cmd.push(')');
    conn.send_query(&cmd)
        .map_err(|e| backup_error(&e, "starting the base backup"))?;
    let started_at = Utc::now();
    // Two result sets (start position; tablespaces), then the COPY.
    let mut sets: Vec<Vec<Vec<Option<String>>>> = vec![Vec::new()];
    loop {
        let step = conn
            .next_message(|tag, body| match tag {
                b'D' => data_row(body).map(Step::Row),
                b'C' => Ok(Step::SetEnd),
                b'H' => Ok(Step::Copy),
                b'E' => Err(db_error(body)),
                _ => Ok(Step::Other),
            })
            .map_err(|e| io_error(&e, "starting the base backup"))?;
        match step {
            Ok(Step::Row(row)) => {
                if let Some(set) = sets.last_mut() {
                    set.push(row);
                }
            }
            Ok(Step::SetEnd) => sets.push(Vec::new()),
            Ok(Step::Copy) => break,
            Ok(Step::Other) => {}
            Err(e) => {
                drain_to_ready(conn);
                return Err(backup_error(&e, "starting the base backup"));
            }
        }
    }
    let start = sets
        .first()
        .and_then(|s| s.first())
        .ok_or_else(|| Error::source_failed("BASE_BACKUP sent no start position"))?;
    let start_lsn = Lsn::parse(start.first().cloned().flatten().as_deref().unwrap_or(""))?;
    let timeline: u32 = start
        .get(1)
        .cloned()
        .flatten()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let mut tablespaces = Vec::new();
    for row in sets.get(1).map(Vec::as_slice).unwrap_or_default() {
        if let (Some(Some(oid)), Some(Some(path))) = (row.first(), row.get(1)) {
            tablespaces.push(TablespaceMeta {
                oid: oid
                    .parse()
                    .map_err(|_| Error::source_failed(format!("tablespace OID `{oid}`")))?,
                location: path.clone(),
            });
        }
    }
    Ok(Begin {
        system_identifier,
        server_version,
        server_version_num,
        data_checksums,
        wal_log_hints,
        wal_segment_size,
        block_size,
        start_lsn,
        timeline,
        tablespaces,
        label,
        started_at,
    })
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    backup_core::util::fill_random(&mut b);
    u32::from_le_bytes(b)
}

/// Reads to the end of a failed command.
fn drain_to_ready(conn: &mut WireConn) {
    while let Ok(tag) = conn.next_message(|tag, _| tag) {
        if tag == b'Z' {
            break;
        }
    }
}
