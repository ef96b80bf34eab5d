//! Physical PostgreSQL backups: base backups of a whole cluster that
//! restore into a data directory, and the restore itself.
//!
//! # Backup
//!
//! Two ways to read the cluster, one snapshot layout:
//!
//! - **Remote** (`remote.rs`): a replication connection runs `BASE_BACKUP`
//!   (fast or spread checkpoint, the WAL from start to stop included, the
//!   server's `backup_manifest`, a tablespace map, an optional rate
//!   limit). The tar archives the server streams are taken apart while
//!   they stream: every member becomes an entry of the snapshot tree with
//!   its mode and modification time, its content chunked like a file's.
//!   A temporary replication slot created first holds the WAL the backup
//!   needs until it is sent.
//! - **Local** (`local.rs`): when the data directory is readable here,
//!   `pg_backup_start` on a normal connection that stays open, files read
//!   directly by parallel readers (page checksums verified while reading
//!   when the cluster has them), `pg_backup_stop`, and the WAL from start
//!   to stop read from `pg_wal` (held by a temporary replication slot).
//!   Files whose size, times and inode equal their entry in the previous
//!   base backup of the cluster, and that were last modified well before
//!   that backup started, are taken from it without being read; relation
//!   files that changed are stored as page deltas against their copy in
//!   that backup (`delta.rs`). The backup writes its own `backup_manifest`
//!   in PostgreSQL's format.
//!
//! The snapshot tree:
//!
//! ```text
//! backup_manifest                 PostgreSQL's backup manifest (JSON)
//! data/                           the data directory
//! data/backup_label               written by the backup's start and stop
//! data/tablespace_map             the tablespaces' links (may be empty)
//! data/pg_wal/<segments>          the WAL from the backup's start to its stop
//! tablespaces/<oid>/PG_<v>_<cat>/ each tablespace's directory for this version
//! .../<relfilenode>~page-delta   a relation file's changed pages (local backups)
//! page_deltas.json                what each page delta applies to and makes
//! ```
//!
//! The manifest's metadata (`PhysicalMeta`) records the server version
//! and system identifier, timelines, start, checkpoint and stop positions,
//! whether page checksums were verified, the tablespaces and the method.
//!
//! # Restore ([`target::PhysicalTarget`])
//!
//! Into an empty or new directory: the data directory, each tablespace at
//! its recorded place or where `--tablespace-map OID=DIR` says, every file
//! checked against the backup manifest (size and CRC-32C) as it is
//! written (a file with a page delta once the delta is applied, in a
//! second pass), and the included WAL in `pg_wal`. The `backup_label` makes
//! the server replay that WAL at its first start and come up consistent:
//! a plain `pg_ctl start` is enough.

pub(crate) mod checksum;
pub(crate) mod delta;
pub mod driver;
pub(crate) mod local;
pub(crate) mod manifest;
pub mod pitr;
mod preflight;
pub(crate) mod remote;
mod replay;
pub mod retention;
mod tar;
pub(crate) mod target;
pub mod wal;

use std::fmt;

use backup_core::{Error, Result};
use serde::{Deserialize, Serialize};

pub use target::{
    stop_leftover_server, PhysicalRestoreDetails, PhysicalTarget, RunningServer, StartReport,
    TablespacePlacement,
};

/// A directory as a restore target: a file snapshot's files, or a physical
/// PostgreSQL snapshot's data directory, whichever the snapshot holds.
#[derive(Debug)]
pub struct DirectoryTarget {
    files: crate::files::FilesTarget,
    physical: PhysicalTarget,
}

impl DirectoryTarget {
    /// A target directory.
    pub fn new(root: std::path::PathBuf) -> Self {
        DirectoryTarget {
            files: crate::files::FilesTarget::new(root.clone()),
            physical: PhysicalTarget::new(root),
        }
    }
}

fn physical_options(opts: &backup_core::target::RestoreOptions) -> bool {
    opts.start_port.is_some() || !opts.tablespace_map.is_empty() || opts.is_point_in_time()
}

#[async_trait::async_trait]
impl backup_core::target::Target for DirectoryTarget {
    fn describe(&self) -> String {
        self.files.describe()
    }

    fn check_options(&self, opts: &backup_core::target::RestoreOptions) -> Result<()> {
        if physical_options(opts) {
            self.physical.check_options(opts)
        } else {
            let mut plain = opts.clone();
            plain.includes.clear();
            plain.excludes.clear();
            plain.owners = backup_core::target::Owners::default();
            plain.overwrite = None;
            plain.delete = false;
            plain.verify = false;
            self.physical.check_options(&plain)?;
            self.files.check_options(opts)
        }
    }

    async fn check_restored(
        &self,
        snapshot: &backup_core::reader::SnapshotReader,
    ) -> Result<Vec<String>> {
        if is_physical(&snapshot.snapshot().metadata) {
            self.physical.check_restored(snapshot).await
        } else {
            self.files.check_restored(snapshot).await
        }
    }

    async fn discard(&self) -> Result<()> {
        self.physical.discard().await?;
        self.files.discard().await
    }

    async fn restore(
        &self,
        snapshot: &backup_core::reader::SnapshotReader,
        opts: &backup_core::target::RestoreOptions,
        progress: std::sync::Arc<dyn backup_core::progress::Progress>,
    ) -> Result<backup_core::target::RestoreReport> {
        if is_physical(&snapshot.snapshot().metadata) {
            self.physical.restore(snapshot, opts, progress).await
        } else {
            self.files.restore(snapshot, opts, progress).await
        }
    }
}

/// The value of `mode` in a physical snapshot's metadata.
pub(crate) const MODE: &str = "physical";

/// Name of the data directory in the snapshot tree.
pub(crate) const DATA_DIR: &str = "data";
/// Name of the directory of tablespaces in the snapshot tree.
pub(crate) const TABLESPACES_DIR: &str = "tablespaces";
/// Name of the backup manifest in the snapshot tree (and in a restored
/// data directory).
pub(crate) const MANIFEST_FILE: &str = "backup_manifest";

/// A WAL position (PostgreSQL's LSN), shown as `X/X`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses PostgreSQL's `X/X` form.
    pub(crate) fn parse(s: &str) -> Result<Self> {
        let bad = || Error::source_failed(format!("`{s}` is not a WAL position"));
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let hi = u64::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u64::from_str_radix(lo, 16).map_err(|_| bad())?;
        if hi > u64::from(u32::MAX) || lo > u64::from(u32::MAX) {
            return Err(bad());
        }
        Ok(Lsn(hi << 32 | lo))
    }

    /// The segment holding this position.
    pub(crate) fn segment(self, segment_size: u64) -> u64 {
        self.0 / segment_size
    }

    /// The start of the segment holding this position.
    pub(crate) fn segment_start(self, segment_size: u64) -> Lsn {
        Lsn(self.0 - self.0 % segment_size)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The file name of WAL segment `segno` of timeline `tli`.
pub(crate) fn wal_file_name(tli: u32, segno: u64, segment_size: u64) -> String {
    let per_id = 0x1_0000_0000 / segment_size;
    format!("{tli:08X}{:08X}{:08X}", segno / per_id, segno % per_id)
}

/// Whether `name` looks like a WAL segment file name.
pub(crate) fn is_wal_file_name(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

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
    /// earlier snapshot (local backups; see `delta.rs`), and the pages
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
        Some(serde_json::from_value(value.clone()).map_err(|e| {
            Error::corrupt(
                backup_core::FileKind::Snapshot,
                "metadata",
                format!("a physical PostgreSQL snapshot's metadata does not parse: {e}"),
            )
        }))
    }
}

/// Opens a physical source: local when `--pgdata` is given or the
/// server's data directory is readable here, remote otherwise.
pub(crate) async fn open_source(
    info: &crate::postgres::conn::ConnInfo,
    opts: &crate::PostgresOptions,
) -> Result<Box<dyn backup_core::source::Source>> {
    if let Some(dir) = &opts.pgdata {
        return Ok(Box::new(
            local::LocalSource::open(info, opts, dir.clone()).await?,
        ));
    }
    if let Some(dir) = local_data_directory(info).await {
        tracing::info!(data_directory = %dir.display(), "The server's data directory is readable here: reading it directly.");
        return Ok(Box::new(local::LocalSource::open(info, opts, dir).await?));
    }
    Ok(Box::new(remote::RemoteSource::open(info, opts).await?))
}

/// The server's `data_directory` when it is readable on this host and is
/// the same cluster (its `pg_control` has the server's system identifier).
async fn local_data_directory(
    info: &crate::postgres::conn::ConnInfo,
) -> Option<std::path::PathBuf> {
    let c = info
        .connect(crate::postgres::conn::Side::Source)
        .await
        .ok()?;
    let row = c
        .query_one(
            "SELECT current_setting('data_directory'), (SELECT system_identifier::text FROM pg_control_system())",
            &[],
        )
        .await
        .ok()?;
    let dir = std::path::PathBuf::from(row.get::<_, String>(0));
    let id: String = row.get(1);
    (local::control_system_identifier(&dir)? == id).then_some(dir)
}

/// The system identifier stored in a data directory's `pg_control`, when
/// it can be read.
pub fn control_system_identifier(dir: &std::path::Path) -> Option<String> {
    local::control_system_identifier(dir)
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

/// Parses `SHOW wal_segment_size` output (`16MB`, `1GB`).
pub(crate) fn parse_setting_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let n: u64 = v[..split].parse().ok()?;
    let mult = match &v[split..] {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return None,
    };
    Some(n * mult)
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
    fn lsns_and_wal_names() {
        let l = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert!(Lsn::parse("zz").is_err());
        let seg = 16 << 20;
        assert_eq!(
            wal_file_name(1, Lsn::parse("0/2000028").unwrap().segment(seg), seg),
            "000000010000000000000002"
        );
        assert_eq!(
            wal_file_name(3, Lsn::parse("1/0").unwrap().segment(seg), seg),
            "000000030000000100000000"
        );
        assert!(is_wal_file_name("000000010000000000000002"));
        assert!(!is_wal_file_name("00000002.history"));
        assert_eq!(parse_setting_size("16MB"), Some(16 << 20));
        assert_eq!(parse_setting_size("8192"), Some(8192));
    }

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
