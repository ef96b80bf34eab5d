//! The cluster a local backup reads: its identity and settings, the
//! system identifier in a data directory's `pg_control`, its tablespaces,
//! and why a backup could not start.

use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::Path;

use backup_core::{Error, Result};
use tokio_postgres::Client;

use super::super::lsn::parse_setting_size;
use super::super::meta::TablespaceMeta;
use crate::postgres::conn::{query_error, Side};

/// What the server and the cluster are.
#[derive(Debug, Clone)]
pub(super) struct Cluster {
    pub(super) system_identifier: String,
    pub(super) server_version: String,
    pub(super) server_version_num: u32,
    pub(super) data_checksums: bool,
    /// Hint-bit changes are WAL-logged (`wal_log_hints`; data checksums
    /// imply it).
    pub(super) wal_log_hints: bool,
    pub(super) wal_segment_size: u64,
    pub(super) block_size: u32,
    /// Blocks per relation segment file.
    pub(super) segment_blocks: u32,
    /// `PG_<major>_<catalog version>`, the tablespace subdirectory.
    pub(super) tablespace_dir: String,
}

/// The system identifier stored in a data directory's `pg_control` (its
/// first 8 bytes), when it can be read.
pub(crate) fn control_system_identifier(pgdata: &Path) -> Option<String> {
    let mut b = [0u8; 8];
    let f = File::open(pgdata.join("global").join("pg_control")).ok()?;
    f.read_exact_at(&mut b, 0).ok()?;
    Some(u64::from_le_bytes(b).to_string())
}

/// The tablespaces: the links in `pg_tblspc`.
pub(super) fn list_tablespaces(pgdata: &Path) -> Result<Vec<TablespaceMeta>> {
    let dir = pgdata.join("pg_tblspc");
    let mut out = Vec::new();
    for e in fs::read_dir(&dir)
        .map_err(|e| Error::source_caused(format!("listing {}", dir.display()), e))?
    {
        let e = e.map_err(|e| Error::source_caused(format!("listing {}", dir.display()), e))?;
        let Ok(oid) = e.file_name().to_string_lossy().parse::<u32>() else {
            continue;
        };
        let target = fs::read_link(e.path()).map_err(|err| {
            Error::source_caused(format!("reading link {}", e.path().display()), err)
        })?;
        out.push(TablespaceMeta {
            oid,
            location: target.display().to_string(),
        });
    }
    out.sort_by_key(|t| t.oid);
    Ok(out)
}

/// Reads the cluster's identity and settings.
pub(super) async fn read_cluster(c: &Client) -> Result<Cluster> {
    let row = c
        .query_one(
            "SELECT (SELECT system_identifier::text FROM pg_control_system()), \
             current_setting('server_version'), current_setting('server_version_num')::int4, \
             current_setting('data_checksums'), current_setting('wal_segment_size'), \
             current_setting('block_size')::int4, current_setting('segment_size'), \
             (SELECT catalog_version_no FROM pg_control_system()), \
             current_setting('wal_log_hints')",
            &[],
        )
        .await
        .map_err(|e| query_error(Side::Source, "reading the cluster's settings", e))?;
    let server_version: String = row.get(1);
    let server_version_num = u32::try_from(row.get::<_, i32>(2)).unwrap_or(0);
    if server_version_num < 150_000 {
        return Err(Error::source_failed(format!(
            "PostgreSQL {server_version} cannot be backed up physically by this version of backup: physical backups need PostgreSQL 15 or newer (use the logical mode, the default, for older servers)"
        )));
    }
    let block_size = u32::try_from(row.get::<_, i32>(5)).unwrap_or(8192);
    let segment_bytes = parse_setting_size(&row.get::<_, String>(6)).unwrap_or(1 << 30);
    Ok(Cluster {
        system_identifier: row.get(0),
        server_version,
        server_version_num,
        data_checksums: row.get::<_, String>(3) == "on",
        wal_log_hints: row.get::<_, String>(8) == "on",
        wal_segment_size: parse_setting_size(&row.get::<_, String>(4)).unwrap_or(16 << 20),
        block_size,
        segment_blocks: (segment_bytes / u64::from(block_size)) as u32,
        tablespace_dir: format!(
            "PG_{}_{}",
            server_version_num / 10_000,
            row.get::<_, i32>(7)
        ),
    })
}

pub(super) fn start_error(e: tokio_postgres::Error, user: &str) -> Error {
    if e.code() == Some(&tokio_postgres::error::SqlState::INSUFFICIENT_PRIVILEGE) {
        return Error::PermissionDenied(format!(
            "the role `{user}` may not start a backup (pg_backup_start): connect as a superuser or GRANT EXECUTE ON FUNCTION pg_backup_start, pg_backup_stop TO \"{user}\""
        ));
    }
    if e.code() == Some(&tokio_postgres::error::SqlState::OBJECT_NOT_IN_PREREQUISITE_STATE) {
        let detail = e
            .as_db_error()
            .map(|d| d.message().to_owned())
            .unwrap_or_default();
        if detail.contains("WAL level") {
            return Error::source_explained(
                format!("the server cannot take an online base backup ({detail}): set wal_level = replica (or logical) and restart it"),
                e,
                false,
            );
        }
    }
    query_error(Side::Source, "starting the backup (pg_backup_start)", e)
}

pub(super) fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    backup_core::util::fill_random(&mut b);
    u32::from_le_bytes(b)
}
