//! What a physical snapshot records: the names of its tree, its metadata
//! ([`PhysicalMeta`], with the tablespaces), the backup label, and the
//! margin of the rule that takes unchanged files from the parent.

use backup_core::{Error, Result};
use serde::{Deserialize, Serialize};

use super::lsn::{is_wal_segment_size, Lsn};

/// The value of `mode` in a physical snapshot's metadata.
pub(crate) const MODE: &str = "physical";

/// Name of the data directory in the snapshot tree.
pub(crate) const DATA_DIR: &str = "data";
/// Name of the directory of tablespaces in the snapshot tree.
pub(crate) const TABLESPACES_DIR: &str = "tablespaces";
/// Name of the backup manifest in the snapshot tree (and in a restored
/// data directory).
pub(crate) const MANIFEST_FILE: &str = "backup_manifest";

/// A tablespace of the backed-up cluster.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct TablespaceMeta {
    /// Its OID (the name of its link in `pg_tblspc`).
    pub(crate) oid: u32,
    /// Where it was on the server.
    pub(crate) location: String,
}

/// The metadata of a physical snapshot.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PhysicalMeta {
    /// Always [`MODE`].
    pub(crate) mode: String,
    /// `remote` (replication protocol) or `local` (files read here).
    pub(crate) method: String,
    pub(crate) server_version: String,
    pub(crate) server_version_num: u32,
    /// The cluster's system identifier (from `pg_control`).
    pub(crate) system_identifier: String,
    /// Timeline at the start of the backup.
    pub(crate) timeline: u32,
    /// WAL position where replay starts (the backup's start).
    pub(crate) start_lsn: String,
    /// The starting checkpoint's record.
    pub(crate) checkpoint_lsn: String,
    /// WAL position the restored cluster must replay to before it is
    /// consistent.
    pub(crate) stop_lsn: String,
    pub(crate) stop_timeline: u32,
    /// When the backup started and stopped (this host's clock).
    pub(crate) started_at: chrono::DateTime<chrono::Utc>,
    pub(crate) stopped_at: chrono::DateTime<chrono::Utc>,
    /// The backup's label (in `backup_label`).
    pub(crate) label: String,
    /// Whether the cluster has data checksums.
    pub(crate) data_checksums: bool,
    /// Whether every page read was checked against its checksum (by the
    /// server for a remote backup, while reading for a local one).
    pub(crate) checksums_verified: bool,
    /// Whether every change of a page's bytes was WAL-logged while the
    /// backup ran (data checksums or `wal_log_hints`): page deltas against
    /// this backup need it.
    #[serde(default)]
    pub(crate) hints_logged: bool,
    pub(crate) wal_segment_size: u64,
    pub(crate) block_size: u32,
    #[serde(default)]
    pub(crate) tablespaces: Vec<TablespaceMeta>,
    /// WAL segment files included (from start to stop).
    pub(crate) wal_files: Vec<String>,
    /// Files the backup manifest lists, and their bytes.
    pub(crate) manifest_files: u64,
    pub(crate) manifest_bytes: u64,
    /// Files read (a local backup takes unchanged ones from its parent).
    #[serde(default)]
    pub(crate) files_read: u64,
    /// Page checksums verified (local backups).
    #[serde(default)]
    pub(crate) pages_verified: u64,
    /// Relation files stored as a page delta against their base in an
    /// earlier snapshot (local backups; see `delta/`), and the pages
    /// those deltas hold.
    #[serde(default)]
    pub(crate) delta_files: u64,
    #[serde(default)]
    pub(crate) delta_pages: u64,
}

impl PhysicalMeta {
    /// The metadata of a snapshot, when it is a physical one.
    pub(crate) fn of(value: &serde_json::Value) -> Option<Result<Self>> {
        if value.get("mode").and_then(serde_json::Value::as_str) != Some(MODE) {
            return None;
        }
        let corrupt = |e: String| {
            Error::corrupt(
                backup_core::FileKind::Snapshot,
                "metadata",
                format!("a physical PostgreSQL snapshot's metadata {e}"),
            )
        };
        Some(
            serde_json::from_value::<Self>(value.clone())
                .map_err(|e| corrupt(format!("does not parse: {e}")))
                .and_then(|m| {
                    if is_wal_segment_size(m.wal_segment_size) {
                        Ok(m)
                    } else {
                        Err(corrupt(format!(
                            "states a WAL segment size of {} bytes (a power of two from 1 MiB to 1 GiB)",
                            m.wal_segment_size
                        )))
                    }
                }),
        )
    }
}

/// Whether snapshot metadata is that of a physical PostgreSQL backup.
pub fn is_physical(metadata: &serde_json::Value) -> bool {
    metadata.get("mode").and_then(serde_json::Value::as_str) == Some(MODE)
}

/// What a backup label says.
#[derive(Debug, Clone, Default)]
pub(crate) struct BackupLabel {
    pub(crate) start_lsn: Option<Lsn>,
    pub(crate) checkpoint_lsn: Option<Lsn>,
    pub(crate) timeline: Option<u32>,
    pub(crate) label: String,
}

impl BackupLabel {
    /// Parses the lines of a `backup_label` file.
    pub(crate) fn parse(text: &str) -> Self {
        let mut out = BackupLabel::default();
        for line in text.lines() {
            let Some((key, value)) = line.split_once(": ") else {
                continue;
            };
            match key {
                "START WAL LOCATION" => {
                    out.start_lsn = value
                        .split_whitespace()
                        .next()
                        .and_then(|v| Lsn::parse(v).ok());
                }
                "CHECKPOINT LOCATION" => out.checkpoint_lsn = Lsn::parse(value).ok(),
                "START TIMELINE" => out.timeline = value.trim().parse().ok(),
                "LABEL" => value.clone_into(&mut out.label),
                _ => {}
            }
        }
        out
    }
}

/// A label for a new base backup.
pub(crate) fn new_label() -> String {
    format!(
        "backup {} {}",
        chrono::Utc::now().format("%Y-%m-%dT%H:%M:%SZ"),
        std::process::id()
    )
}

/// Seconds of slack between a file's modification time and the start of
/// the backup that read it: a file modified later may have changed while
/// that backup read it within the clock's granularity, so the next backup
/// reads it again rather than taking it unread.
pub(crate) const REUSE_MARGIN_NS: i64 = 2_000_000_000;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels() {
        let l = BackupLabel::parse(
            "START WAL LOCATION: 0/2000028 (file 000000010000000000000002)\n\
             CHECKPOINT LOCATION: 0/2000060\nBACKUP METHOD: streamed\n\
             BACKUP FROM: primary\nSTART TIME: 2026-11-23 15:00:00 UTC\n\
             LABEL: nightly\nSTART TIMELINE: 1\n",
        );
        assert_eq!(l.start_lsn, Some(Lsn(0x200_0028)));
        assert_eq!(l.checkpoint_lsn, Some(Lsn(0x200_0060)));
        assert_eq!(l.timeline, Some(1));
        assert_eq!(l.label, "nightly");
    }
}
