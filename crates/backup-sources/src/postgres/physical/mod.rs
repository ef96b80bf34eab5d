//! Physical PostgreSQL backups: base backups of a whole cluster that
//! restore into a data directory, and the restore itself.
//!
//! # Backup
//!
//! Two ways to read the cluster, one snapshot layout:
//!
//! - **Remote** (`remote/`): a replication connection runs `BASE_BACKUP`
//!   (fast or spread checkpoint, the WAL from start to stop included, the
//!   server's `backup_manifest`, a tablespace map, an optional rate
//!   limit). The tar archives the server streams are taken apart while
//!   they stream: every member becomes an entry of the snapshot tree with
//!   its mode and modification time, its content chunked like a file's.
//!   A temporary replication slot created first holds the WAL the backup
//!   needs until it is sent.
//! - **Local** (`local/`): when the data directory is readable here,
//!   `pg_backup_start` on a normal connection that stays open, files read
//!   directly by parallel readers (page checksums verified while reading
//!   when the cluster has them), `pg_backup_stop`, and the WAL from start
//!   to stop read from `pg_wal` (held by a temporary replication slot).
//!   Files whose size, times and inode equal their entry in the previous
//!   base backup of the cluster, and that were last modified well before
//!   that backup started, are taken from it without being read; relation
//!   files that changed are stored as page deltas against their copy in
//!   that backup (`delta/`). The backup writes its own `backup_manifest`
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
//!
//! # Where things live
//!
//! `lsn` (WAL positions, segment names) and `meta` (the tree's names, the
//! metadata, the backup label) are shared by the rest. `remote/` and
//! `local/` read the cluster; `delta/` makes and applies page deltas;
//! `manifest`, `checksum` and `tar` are PostgreSQL's backup manifest, page
//! checksums and tar headers. `target/` restores; `server` runs a server
//! on the result; `preflight` and `replay` prepare that server. `wal/`
//! captures WAL and serves it to recovery, `pitr` plans point-in-time
//! restores, `retention` says which WAL and base backups are kept.

pub(crate) mod checksum;
pub(crate) mod delta;
pub mod driver;
pub(crate) mod local;
pub(crate) mod lsn;
pub(crate) mod manifest;
mod meta;
pub mod pitr;
mod preflight;
pub(crate) mod remote;
mod replay;
pub mod retention;
mod server;
pub(crate) mod tar;
pub(crate) mod target;
pub mod wal;

use backup_core::Result;

pub use lsn::{is_wal_segment_size, Lsn};
pub use meta::{is_physical, PhysicalMeta};
pub use server::{stop_leftover_server, RunningServer, StartReport};
pub use target::{PhysicalRestoreDetails, PhysicalTarget, TablespacePlacement};

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
