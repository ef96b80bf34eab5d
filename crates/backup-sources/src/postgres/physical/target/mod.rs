//! Restoring a physical snapshot into a data directory.
//!
//! Everything that can be checked is checked before anything is written:
//! the snapshot's backup manifest parses and its own checksum matches, the
//! data directory and every tablespace destination are absent or empty,
//! `--tablespace-map` names tablespaces the snapshot has, and with
//! `--start` the server program of the snapshot's major version is here.
//! Then the tree is written (the restore pipeline, the files target's
//! writer threads), every file's size and CRC-32C compared with the
//! manifest as it passes, the `tablespace_map` rewritten for relocated
//! tablespaces, and the file systems synced. A restore that fails removes
//! what it wrote (the directories were empty before it).
//!
//! Run as root, the files get the owner of the data directory when it
//! exists, otherwise that of its parent directory, so that a directory
//! prepared for the `postgres` user gets a data directory the server can
//! use; otherwise they belong to the user running the restore.
//!
//! [`PhysicalTarget`] runs a restore in its phases: `restore` checks and
//! plans it, then writes it; `writer` writes the tree and checks each file
//! as it passes; `tablespaces` places and links the tablespaces; `dirs`
//! prepares, syncs and, after a failure, empties the directories; `verify`
//! re-reads restored files; `report` says what was done. The temporary
//! server of `--start` is `super::server`'s.

mod dirs;
mod report;
mod restore;
mod tablespaces;
mod verify;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use backup_core::progress::Progress;
use backup_core::reader::SnapshotReader;
use backup_core::target::{RecoveryPoint, RestoreOptions, RestoreReport, RestoredUnit, Target};
use backup_core::{Error, Result};
use serde::Serialize;

use self::dirs::{absolute, remove_contents};
use self::restore::{check_physical_options, load_manifest, physical_meta, Plan};
use self::verify::compare_files;
use super::meta::PhysicalMeta;
use super::pitr;
use super::server::{start_and_stop, start_server, RunningServer, StartReport};
use crate::drill::free_port;
use crate::postgres::tools::{find_server, major_of};

pub use self::tablespaces::TablespacePlacement;

/// Restores physical snapshots into a data directory.
#[derive(Debug)]
pub struct PhysicalTarget {
    root: PathBuf,
    /// Directories this restore created or filled (removed by
    /// [`Target::discard`]).
    written: Mutex<Vec<PathBuf>>,
    /// Where the last restore put the tablespaces.
    placements: Mutex<Vec<TablespacePlacement>>,
}

/// What a physical restore did, for `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct PhysicalRestoreDetails {
    /// The data directory.
    pub data_directory: String,
    /// Tablespaces: OID, where they were, where they are now.
    pub tablespaces: Vec<TablespacePlacement>,
    /// Files checked against the backup manifest.
    pub files_verified: u64,
    /// WAL segments laid out in `pg_wal`.
    pub wal_segments: usize,
    /// The PostgreSQL version the data directory needs.
    pub server_version: String,
    /// The server program found for it, if any.
    pub server_program: Option<String>,
    /// With `--start`: what the temporary server did.
    pub started: Option<StartReport>,
}

impl PhysicalTarget {
    /// A target data directory (absent or empty).
    pub fn new(root: PathBuf) -> Self {
        PhysicalTarget {
            root,
            written: Mutex::new(Vec::new()),
            placements: Mutex::new(Vec::new()),
        }
    }

    fn data_dir(&self) -> Result<PathBuf> {
        absolute(&self.root)
    }

    /// After a restore: re-reads every restored file and compares it with
    /// the snapshot's backup manifest (size and CRC-32C); returns the
    /// differences.
    ///
    /// # Errors
    ///
    /// A damaged snapshot; errors reading the data directory.
    pub async fn verify_files(&self, snapshot: &SnapshotReader) -> Result<Vec<String>> {
        let data_dir = self.data_dir()?;
        let manifest = load_manifest(snapshot).await?;
        let places = self
            .placements
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        tokio::task::spawn_blocking(move || compare_files(&data_dir, &places, &manifest))
            .await
            .map_err(|e| Error::target_caused("comparing restored files", e))?
    }

    /// After a restore: starts the restored cluster with the server
    /// program of its version on 127.0.0.1:`port` and waits until it
    /// accepts connections (recovery done); it runs until
    /// [`RunningServer::stop`]. Its socket directory goes under
    /// `work_parent` (the system's temporary directory when `None`).
    ///
    /// # Errors
    ///
    /// No server program of the data directory's version; a server that
    /// stops before it accepts connections.
    pub async fn start(&self, port: u16, work_parent: Option<&Path>) -> Result<RunningServer> {
        let data_dir = self.data_dir()?;
        let version = std::fs::read_to_string(data_dir.join("PG_VERSION"))
            .map_err(|e| Error::io(format!("reading {}/PG_VERSION", data_dir.display()), e))?;
        let major: u32 = version.trim().parse().map_err(|_| {
            Error::target_failed(format!(
                "{}/PG_VERSION does not hold a version number",
                data_dir.display()
            ))
        })?;
        let server = find_server(major).await.map_err(Error::Config)?;
        start_server(&server.path, &data_dir, port, work_parent, false).await
    }
}

#[async_trait]
impl Target for PhysicalTarget {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    fn check_options(&self, opts: &RestoreOptions) -> Result<()> {
        check_physical_options(opts)
    }

    async fn check_restored(&self, snapshot: &SnapshotReader) -> Result<Vec<String>> {
        let mut diffs = self.verify_files(snapshot).await?;
        if diffs.is_empty() {
            let data_dir = self.data_dir()?;
            let meta = physical_meta(snapshot)?;
            let server = find_server(major_of(meta.server_version_num))
                .await
                .map_err(Error::target_failed)?;
            let port = free_port()?;
            match start_and_stop(&server.path, &data_dir, port, false).await {
                Ok(r) => tracing::info!(
                    seconds = r.seconds_to_ready,
                    "The restored data directory started and reached consistency."
                ),
                Err(e) => diffs.push(format!("the restored data directory did not start: {e}")),
            }
        }
        Ok(diffs)
    }

    async fn discard(&self) -> Result<()> {
        let written =
            std::mem::take(&mut *self.written.lock().unwrap_or_else(PoisonError::into_inner));
        for dir in written {
            match std::fs::remove_dir_all(&dir) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(Error::io(format!("removing {}", dir.display()), e)),
            }
        }
        Ok(())
    }

    async fn restore(
        &self,
        snapshot: &SnapshotReader,
        opts: &RestoreOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<RestoreReport> {
        let mut plan = Plan::check(snapshot, opts, &self.root).await?;
        let mut details = PhysicalRestoreDetails {
            data_directory: plan.data_dir.display().to_string(),
            tablespaces: plan.places.clone(),
            files_verified: 0,
            wal_segments: plan.meta.wal_files.len(),
            server_version: plan.meta.server_version.clone(),
            server_program: plan
                .server
                .as_ref()
                .ok()
                .map(|t| t.path.display().to_string()),
            started: None,
        };
        let mut lines = report::plan_lines(&plan, opts);
        if opts.dry_run {
            return RestoreReport::with_details(
                true,
                self.describe(),
                plan.planned,
                RestoredUnit::Files,
                lines,
                &details,
            );
        }

        let mut created = Vec::new();
        let mut created_files: Vec<PathBuf> = Vec::new();
        let result = plan
            .write(snapshot, opts, &progress, &mut created, &mut created_files)
            .await;
        let (stats, verified) = match result {
            Ok(r) => r,
            Err(e) => {
                for dir in &created {
                    remove_contents(dir);
                }
                for f in &created_files {
                    let _ = std::fs::remove_file(f);
                }
                tracing::error!("The restore failed; what it wrote into the data directory and tablespace places was removed.");
                return Err(e);
            }
        };
        self.written
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend(created);
        plan.places.clone_into(
            &mut self
                .placements
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        details.files_verified = verified;
        lines.push(format!(
            "every file matched the backup manifest ({verified} files checked)"
        ));
        let key = plan
            .program
            .as_ref()
            .filter(|_| snapshot.repository().key().encrypts())
            .map(|_| pitr::key_file_path(&plan.data_dir));
        if plan.coverage.is_some() {
            lines.push(report::recovery_settings_line(key.as_deref()));
        }
        if let Some(port) = opts.start_port {
            let started = self
                .start_restored(&plan, snapshot, opts, port, key.as_deref(), &mut lines)
                .await?;
            details.started = Some(started);
        } else {
            lines.push(report::start_hint(
                &plan.data_dir,
                plan.coverage.is_some(),
                opts,
            ));
        }
        RestoreReport::with_details(
            false,
            self.describe(),
            stats,
            RestoredUnit::Files,
            lines,
            &details,
        )
    }
}

impl PhysicalTarget {
    /// After `--start` failed: removes what the restore wrote (the
    /// directories were empty before it, and a data directory left "in
    /// archive recovery" helps nobody) and says why, leading with what
    /// PostgreSQL said; for targets whose place is known only once
    /// replayed, names the older base backups to try.
    async fn start_failed(
        &self,
        e: Error,
        snapshot: &SnapshotReader,
        meta: &PhysicalMeta,
        opts: &RestoreOptions,
        key: Option<&Path>,
    ) -> Error {
        let written =
            std::mem::take(&mut *self.written.lock().unwrap_or_else(PoisonError::into_inner));
        for dir in &written {
            remove_contents(dir);
        }
        if let Some(k) = key {
            let _ = std::fs::remove_file(k);
        }
        let cleaned = format!(
            "what the restore wrote was removed ({} emptied{})",
            written
                .iter()
                .map(|d| d.display().to_string())
                .collect::<Vec<_>>()
                .join(", "),
            key.map(|k| format!(", {} removed", k.display()))
                .unwrap_or_default()
        );
        let placeless = matches!(
            opts.point,
            Some(RecoveryPoint::Xid(_) | RecoveryPoint::Name(_) | RecoveryPoint::Immediate)
        );
        let text = match &e {
            Error::Target { message, .. } => message.clone(),
            other => other.to_string(),
        };
        let before_base = text.contains("before consistent recovery point")
            || (placeless && text.contains("recovery ended before configured recovery target"));
        let older = if before_base {
            format!("; {}", report::older_bases(snapshot, meta, opts).await)
        } else {
            String::new()
        };
        Error::target_failed(format!("{text}\n{cleaned}{older}"))
    }

    /// With `--start`: runs a server on the restored cluster, on `port`,
    /// until it accepts connections or stops at its target, then stops it
    /// and says what it did in `lines`; ends a recovery it completed. When
    /// it fails, what the restore wrote is removed (see `start_failed`).
    async fn start_restored(
        &self,
        plan: &Plan,
        snapshot: &SnapshotReader,
        opts: &RestoreOptions,
        port: u16,
        key: Option<&Path>,
        lines: &mut Vec<String>,
    ) -> Result<StartReport> {
        let server = plan.server.as_ref().map_err(|m| Error::Config(m.clone()))?;
        // The temporary server runs without hot standby, so PostgreSQL
        // turns `pause` into a shutdown at the target: both leave the
        // directory at the target, still in recovery.
        let action = opts.target_action.as_deref().unwrap_or("promote");
        let exits = plan.coverage.is_some() && matches!(action, "shutdown" | "pause");
        let started = match start_and_stop(&server.path, &plan.data_dir, port, exits).await {
            Ok(s) => s,
            Err(e) => return Err(self.start_failed(e, snapshot, &plan.meta, opts, key).await),
        };
        lines.extend(report::started_lines(&started, &plan.meta, port, exits));
        if exits {
            lines.push(report::at_target_line(&plan.data_dir, action));
        } else if plan.coverage.is_some() {
            // Recovery ended (the server promoted and ran
            // recovery_end_command); make sure nothing of it is left.
            pitr::end_recovery(&plan.data_dir, key)?;
            lines.push(
                "recovery ended: the key file and the recovery settings were removed; start the cluster as usual"
                    .to_owned(),
            );
        }
        Ok(started)
    }
}
