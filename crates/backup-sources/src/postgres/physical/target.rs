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

use std::collections::{HashMap, HashSet};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use backup_core::filter::PathFilter;
use backup_core::pack::IdCheck;
use backup_core::progress::Progress;
use backup_core::reader::SnapshotReader;
use backup_core::restorer::TreeWriter;
use backup_core::target::{RecoveryPoint, RestoreOptions, RestoreReport, RestoredUnit, Target};
use backup_core::tree::Node;
use backup_core::{Error, FileKind, Result};
use bytes::Bytes;
use serde::Serialize;

use super::delta::{
    check_restored_file, DeltaEntry, DeltaIndex, Patcher, Places, DELTA_INDEX, DELTA_SUFFIX,
};
use super::lsn::{wal_file_name, Lsn};
use super::manifest::{crc32c_bytes, unusable, Manifest, ManifestFile};
use super::meta::{PhysicalMeta, MANIFEST_FILE};
use super::server::{free_port, start_and_stop, start_server, RunningServer, StartReport};
use crate::files::FsWriter;
use crate::postgres::tools::{find_server, major_of};

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

/// Where a tablespace went.
#[derive(Debug, Clone, Serialize)]
pub struct TablespacePlacement {
    /// Its OID.
    pub oid: u32,
    /// Where it was on the backed-up server.
    pub original: String,
    /// Where it was restored.
    pub location: String,
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

/// `path` made absolute against the current directory, `.` and `..`
/// resolved lexically (the directory may not exist yet).
fn absolute(path: &Path) -> Result<PathBuf> {
    let base = if path.is_absolute() {
        PathBuf::new()
    } else {
        std::env::current_dir().map_err(|e| Error::io("reading the current directory", e))?
    };
    let mut out = base;
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other.as_os_str()),
        }
    }
    Ok(out)
}

/// Refuses a destination that exists and is not an empty directory.
fn check_empty(dir: &Path, what: &str) -> Result<()> {
    match std::fs::read_dir(dir) {
        Ok(mut rd) => {
            if rd.next().is_some() {
                return Err(Error::target_failed(format!(
                    "{what} {} is not empty; a data directory is restored into an empty or new directory only (there is no --drop for a data directory): restore into a new directory, or stop the server and move the old one away (nothing was changed)",
                    dir.display()
                )));
            }
            Ok(())
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
            Err(Error::target_failed(format!(
                "{what} {} exists and is not a directory (nothing was changed)",
                dir.display()
            )))
        }
        Err(e) => Err(Error::io(format!("reading {}", dir.display()), e)),
    }
}

/// Parses `--tablespace-map OID=DIR` against the snapshot's tablespaces.
fn tablespace_places(
    opts: &RestoreOptions,
    meta: &PhysicalMeta,
) -> Result<Vec<TablespacePlacement>> {
    let mut mapped: HashMap<u32, PathBuf> = HashMap::new();
    for m in &opts.tablespace_map {
        let (oid, dir) = m
            .split_once('=')
            .ok_or_else(|| Error::Config(format!("--tablespace-map `{m}`: use OID=DIRECTORY")))?;
        let oid: u32 = oid.trim().parse().map_err(|_| {
            Error::Config(format!(
                "--tablespace-map `{m}`: `{oid}` is not a tablespace OID"
            ))
        })?;
        if !meta.tablespaces.iter().any(|t| t.oid == oid) {
            let known: Vec<String> = meta
                .tablespaces
                .iter()
                .map(|t| format!("{} ({})", t.oid, t.location))
                .collect();
            return Err(Error::Config(format!(
                "--tablespace-map {oid}: the snapshot has no tablespace {oid}; it has {}",
                if known.is_empty() {
                    "none".to_owned()
                } else {
                    known.join(", ")
                }
            )));
        }
        if dir.is_empty() {
            return Err(Error::Config(format!(
                "--tablespace-map `{m}`: empty directory"
            )));
        }
        if mapped.insert(oid, absolute(Path::new(dir))?).is_some() {
            return Err(Error::Config(format!(
                "--tablespace-map names tablespace {oid} twice"
            )));
        }
    }
    Ok(meta
        .tablespaces
        .iter()
        .map(|t| TablespacePlacement {
            oid: t.oid,
            original: t.location.clone(),
            location: mapped
                .get(&t.oid)
                .map_or_else(|| t.location.clone(), |p| p.display().to_string()),
        })
        .collect())
}

/// The owner restored files get when running as root.
fn owner_for(data_dir: &Path) -> Option<(u32, u32)> {
    use std::os::unix::fs::MetadataExt;
    if !nix::unistd::Uid::effective().is_root() {
        return None;
    }
    let m = std::fs::metadata(data_dir)
        .or_else(|_| std::fs::metadata(data_dir.parent().unwrap_or(Path::new("/"))))
        .ok()?;
    Some((m.uid(), m.gid()))
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
        check_physical_options(opts)?;
        let meta = physical_meta(snapshot)?;
        let data_dir = self.data_dir()?;
        let places = tablespace_places(opts, &meta)?;
        check_empty(&data_dir, "the data directory")?;
        let mut seen = HashSet::new();
        for p in &places {
            let dest = PathBuf::from(&p.location);
            if dest.starts_with(&data_dir) || data_dir.starts_with(&dest) {
                return Err(Error::Config(format!(
                    "tablespace {} would be restored to {}, which overlaps the data directory {}; give it another place with --tablespace-map {}=DIRECTORY",
                    p.oid,
                    dest.display(),
                    data_dir.display(),
                    p.oid
                )));
            }
            if !seen.insert(dest.clone()) {
                return Err(Error::Config(format!(
                    "two tablespaces would be restored to {}; give each its own place with --tablespace-map",
                    dest.display()
                )));
            }
            check_empty(&dest, &format!("the place of tablespace {}", p.oid))?;
        }
        let manifest = load_manifest(snapshot).await?;
        // Files with a page delta: the delta is applied while the base is
        // written. Every delta the index lists must be there.
        let root = snapshot.root().await?;
        let deltas = DeltaIndex::of(&root).await?;
        let mut patches = HashMap::new();
        if !deltas.files.is_empty() {
            let mut relations = super::delta::relations(&root).await?;
            let mut missing = Vec::new();
            for (path, entry) in deltas.files {
                let key = path.into_bytes();
                if !manifest.files.contains_key(&key) {
                    return Err(snapshot.damaged(format!(
                        "`{DELTA_INDEX}` lists {}, which the backup manifest does not",
                        String::from_utf8_lossy(&key)
                    )));
                }
                match relations.remove(&key).and_then(|r| r.delta) {
                    Some(node) => {
                        patches.insert(key, (node, entry));
                    }
                    None => missing.push(String::from_utf8_lossy(&key).into_owned()),
                }
            }
            if !missing.is_empty() {
                let n = missing.len();
                missing.truncate(5);
                return Err(snapshot.damaged(format!(
                    "{n} page deltas `{DELTA_INDEX}` lists are not in the snapshot: {}",
                    missing.join(", ")
                )));
            }
        }
        let coverage = if opts.is_point_in_time() {
            Some(super::pitr::check_coverage(snapshot.repository(), &meta, opts).await?)
        } else {
            None
        };
        let major = major_of(meta.server_version_num);
        let server = find_server(major).await;
        if opts.start_port.is_some() {
            if let Err(m) = &server {
                return Err(Error::Config(m.clone()));
            }
        }
        // What the server started on the result needs, checked before
        // anything is written: an owner it may run as, a free port, and a
        // restore_command it can run.
        let owner = owner_for(&data_dir);
        if let Some(port) = opts.start_port {
            super::preflight::check_start(&data_dir, owner, port)?;
        }
        let program = match (&coverage, &opts.replay_command) {
            (None, _) => None,
            (Some(_), Some(p)) => Some(p.clone()),
            (Some(_), None) => Some(default_program(snapshot.repository())?),
        };
        if let Some(program) = &program {
            super::preflight::check_restore_command(
                snapshot.repository(),
                &data_dir,
                owner,
                |key| super::pitr::restore_command(program, key, &meta),
            )
            .await?;
        }
        let planned = snapshot.plan(&PathFilter::new(&[], &[])?).await?;
        let mut details = PhysicalRestoreDetails {
            data_directory: data_dir.display().to_string(),
            tablespaces: places.clone(),
            files_verified: 0,
            wal_segments: meta.wal_files.len(),
            server_version: meta.server_version.clone(),
            server_program: server.as_ref().ok().map(|t| t.path.display().to_string()),
            started: None,
        };
        let mut lines = vec![format!(
            "PostgreSQL {} cluster {}, base backup from {} to {} (timeline {})",
            meta.server_version,
            meta.system_identifier,
            meta.start_lsn,
            meta.stop_lsn,
            meta.timeline
        )];
        for p in &places {
            lines.push(format!(
                "tablespace {}: {}{}",
                p.oid,
                p.location,
                if p.location == p.original {
                    String::new()
                } else {
                    format!(" (was {})", p.original)
                }
            ));
        }
        lines.push(format!(
            "{} files listed in the backup manifest ({}), {} WAL segments",
            manifest.files.len(),
            backup_core::util::human_bytes(manifest.bytes()),
            meta.wal_files.len()
        ));
        if let Some(c) = &coverage {
            lines.push(format!(
                "point in time: {}; WAL captured without a gap to {}{}, following timeline{} {}",
                describe_target(opts),
                c.end,
                c.end_time
                    .map(|t| format!(" ({})", t.format("%Y-%m-%dT%H:%M:%SZ")))
                    .unwrap_or_default(),
                if c.timelines.len() > 1 { "s" } else { "" },
                c.timelines
                    .iter()
                    .map(ToString::to_string)
                    .collect::<Vec<_>>()
                    .join(" → ")
            ));
        }
        if let Err(m) = &server {
            lines.push(format!("warning: {m}"));
        }
        if opts.dry_run {
            return RestoreReport::with_details(
                true,
                self.describe(),
                planned,
                RestoredUnit::Files,
                lines,
                &details,
            );
        }

        let mut roots: HashMap<String, PathBuf> = HashMap::new();
        let mut created = Vec::new();
        let mut created_files: Vec<PathBuf> = Vec::new();
        let result = async {
            prepare(&data_dir, owner, &mut created)?;
            for p in &places {
                let dest = PathBuf::from(&p.location);
                prepare(&dest, owner, &mut created)?;
                roots.insert(p.oid.to_string(), dest);
            }
            let destinations = Places {
                data_dir: data_dir.clone(),
                roots,
            };
            let writer = PhysicalWriter::new(
                destinations,
                Patches {
                    files: patches,
                    block: deltas.block_size,
                    snapshot: snapshot.clone(),
                    rt: tokio::runtime::Handle::current(),
                },
                manifest,
                meta.wal_segment_size,
                places
                    .iter()
                    .any(|p| p.location != p.original)
                    .then(|| places.clone()),
                owner,
            )?;
            let verified = writer.verified.clone();
            progress.set_total(planned.bytes);
            // The first segments replay needs are staged while the files
            // are written and wait in the prefetch directory, so that
            // recovery starts without waiting for the repository (`wal
            // fetch` then keeps ahead of it).
            let stage = data_dir.join(".backup-prestage");
            let prestage = async {
                match coverage.as_ref().filter(|c| {
                    c.timelines.len() == 1 && opts.point != Some(RecoveryPoint::Immediate)
                }) {
                    Some(c) => {
                        super::wal::prestage(
                            snapshot.repository(),
                            &meta.system_identifier,
                            c.timelines[0],
                            Lsn::parse(&meta.start_lsn)?,
                            &stage,
                            meta.wal_segment_size,
                            PRESTAGED_SEGMENTS,
                        )
                        .await
                    }
                    None => Ok(Vec::new()),
                }
            };
            // The files; a relation file with a page delta is written
            // once, as its base with the delta applied (the delta entries
            // themselves are read by the writer, not restored).
            let delta_pattern = vec![format!("*{}", String::from_utf8_lossy(DELTA_SUFFIX))];
            let files = PathFilter::new(&[], &delta_pattern)?;
            let (stats, staged) = tokio::join!(
                // Every file is checked against the manifest: an
                // authenticated blob is not hashed again (see IdCheck).
                snapshot.restore_tree_with(
                    &files,
                    Box::new(writer),
                    progress.clone(),
                    IdCheck::WhenUnauthenticated
                ),
                prestage
            );
            let (stats, staged) = (stats?, staged?);
            if stage.exists() {
                let prefetch = data_dir.join("pg_wal").join(".backup-prefetch");
                std::fs::rename(&stage, &prefetch)
                    .map_err(|e| Error::io(format!("moving {}", stage.display()), e))?;
                set_owner_mode(&prefetch, owner, 0o700)?;
                for name in staged {
                    set_owner_mode(&prefetch.join(name), owner, 0o600)?;
                }
            }
            link_tablespaces(&data_dir, &places, owner)?;
            if let Some(program) = &program {
                let key = super::pitr::write_key_file(snapshot.repository(), &data_dir, owner)?;
                if let Some(k) = &key {
                    created_files.push(k.clone());
                }
                let command = super::pitr::restore_command(program, key.as_deref(), &meta);
                let end = super::pitr::end_command(program, key.as_deref());
                let settings = super::pitr::recovery_settings(opts, &command, &end);
                super::pitr::write_recovery(&data_dir, &settings, owner)?;
            }
            set_owner_mode(&data_dir, owner, 0o700)?;
            sync_file_systems(&created)?;
            let n = *verified.lock().unwrap_or_else(PoisonError::into_inner);
            Ok::<_, Error>((stats, n))
        }
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
        places.clone_into(
            &mut self
                .placements
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        details.files_verified = verified;
        lines.push(format!(
            "every file matched the backup manifest ({verified} files checked)"
        ));
        let key = program
            .as_ref()
            .filter(|_| snapshot.repository().key().encrypts())
            .map(|_| super::pitr::key_file_path(&data_dir));
        if coverage.is_some() {
            lines.push(match &key {
                Some(k) => format!(
                    "recovery settings are in postgresql.auto.conf: restore_command fetches WAL from this repository with the key file {} (readable only by the data directory's owner); when recovery ends, recovery_end_command removes the key file and these settings",
                    k.display()
                ),
                None => "recovery settings are in postgresql.auto.conf: restore_command fetches WAL from this repository; when recovery ends, recovery_end_command removes these settings".to_owned(),
            });
        }
        if let Some(port) = opts.start_port {
            let server = server.map_err(Error::Config)?;
            // The temporary server runs without hot standby, so PostgreSQL
            // turns `pause` into a shutdown at the target: both leave the
            // directory at the target, still in recovery.
            let action = opts.target_action.as_deref().unwrap_or("promote");
            let exits = coverage.is_some() && matches!(action, "shutdown" | "pause");
            let started = match start_and_stop(&server.path, &data_dir, port, exits).await {
                Ok(s) => s,
                Err(e) => {
                    return Err(self
                        .start_failed(e, snapshot, &meta, opts, key.as_deref())
                        .await)
                }
            };
            if let Some(lsn) = &started.retargeted_to {
                lines.push(format!(
                    "no transaction committed between the target time and the end of the captured WAL, so the state at the target is the state after its last record: recovery was moved to that record (recovery_target_lsn = '{lsn}'; PostgreSQL refuses a time target it cannot pass)"
                ));
            }
            if let Some(r) = &started.reached {
                lines.push(format!("recovery target reached: {r}"));
            }
            lines.push(format!(
                "started PostgreSQL {} on port {port}: {} after {:.1}s{}{}{}; stopped",
                meta.server_version,
                if exits { "at the target" } else { "ready" },
                started.seconds_to_ready,
                started
                    .replay_shared_buffers
                    .map(|b| format!(
                        " (replayed with shared_buffers = {} MB; the cluster's configuration is unchanged)",
                        b >> 20
                    ))
                    .unwrap_or_default(),
                started
                    .consistent_at
                    .as_ref()
                    .map(|l| format!(", consistent at {l}"))
                    .unwrap_or_default(),
                started
                    .last_transaction
                    .as_ref()
                    .map(|t| format!(", last transaction replayed {t}"))
                    .unwrap_or_default()
            ));
            if exits {
                lines.push(format!(
                    "the data directory is at the target and still in recovery (recovery.signal): `pg_ctl -D {} start` replays nothing more and {}; the key file stays until recovery ends",
                    data_dir.display(),
                    if action == "pause" {
                        "pauses there (with hot_standby = on, the default): check the data, then `SELECT pg_wal_replay_resume()` ends recovery and promotes"
                    } else {
                        "shuts down again: set recovery_target_action = 'promote' in postgresql.auto.conf to end recovery at the next start"
                    }
                ));
            } else if coverage.is_some() {
                // Recovery ended (the server promoted and ran
                // recovery_end_command); make sure nothing of it is left.
                super::pitr::end_recovery(&data_dir, key.as_deref())?;
                lines.push(
                    "recovery ended: the key file and the recovery settings were removed; start the cluster as usual"
                        .to_owned(),
                );
            }
            details.started = Some(started);
        } else if coverage.is_some() {
            lines.push(format!(
                "start it with: pg_ctl -D {} start; the server fetches the captured WAL and {}, then {}",
                data_dir.display(),
                describe_target(opts),
                match opts.target_action.as_deref().unwrap_or("promote") {
                    "pause" => "pauses: check the data (read-only queries), then `SELECT pg_wal_replay_resume()` ends recovery and promotes (or `pg_ctl promote`)",
                    "shutdown" => "shuts down at the target: set recovery_target_action = 'promote' in postgresql.auto.conf, or remove recovery.signal, to end recovery at the next start",
                    _ => "ends recovery and promotes (accepts writes, on a new timeline)",
                }
            ));
        } else {
            lines.push(format!(
                "start it with: pg_ctl -D {} start (it replays the WAL of the base backup and comes up consistent)",
                data_dir.display()
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
            format!("; {}", older_bases(snapshot, meta, opts).await)
        } else {
            String::new()
        };
        Error::target_failed(format!("{text}\n{cleaned}{older}"))
    }
}

/// For a target that may lie before the base backup `meta` (of the
/// snapshot `snapshot`) restores: the older base backups of the cluster to
/// name instead.
async fn older_bases(
    snapshot: &SnapshotReader,
    meta: &PhysicalMeta,
    opts: &RestoreOptions,
) -> String {
    let this = format!(
        "the target is not in the WAL replayed from base backup {} (ended {}, {}) to the end of the captured WAL: it may not exist, lie after that end, or lie before that base, which {}",
        snapshot.id().short(),
        meta.stopped_at.format("%Y-%m-%dT%H:%M:%SZ"),
        meta.stop_lsn,
        if matches!(
            opts.point,
            Some(RecoveryPoint::Xid(_) | RecoveryPoint::Name(_) | RecoveryPoint::Immediate)
        ) {
            "--at-xid, --at-name and --immediate take unless a snapshot is named"
        } else {
            "was chosen"
        }
    );
    let Ok((all, _)) = snapshot.repository().snapshots().await else {
        return this;
    };
    let mut older: Vec<(backup_core::Id, chrono::DateTime<chrono::Utc>)> = all
        .iter()
        .filter_map(|e| {
            let m = PhysicalMeta::of(&e.snapshot.metadata)?.ok()?;
            (m.system_identifier == meta.system_identifier && m.stopped_at < meta.stopped_at)
                .then_some((e.id, m.stopped_at))
        })
        .collect();
    older.sort_by_key(|(_, t)| std::cmp::Reverse(*t));
    match older.first() {
        None => format!("{this}; the repository has no older base backup of this cluster"),
        Some((id, _)) => format!(
            "{this}: name an older one, for example `backup restore {} ...` (older base backups: {})",
            id.short(),
            older
                .iter()
                .take(5)
                .map(|(id, t)| format!("{} ended {}", id.short(), t.format("%Y-%m-%dT%H:%M:%SZ")))
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
}

/// The `backup` program and the arguments that reach `repo`, for a
/// restored server's `restore_command` when the front-end gave none.
fn default_program(repo: &backup_core::repo::Repository) -> Result<String> {
    let exe = std::env::current_exe().map_err(|e| Error::io("finding this program", e))?;
    Ok(format!(
        "{} --repo {}",
        super::pitr::shell_quote(&exe.display().to_string()),
        super::pitr::shell_quote(&repo.sink().location())
    ))
}

/// A point-in-time target in words.
fn describe_target(opts: &RestoreOptions) -> String {
    match (&opts.at, &opts.point) {
        (Some(at), _) => format!("replays to {} (included)", at.to_rfc3339()),
        (None, Some(RecoveryPoint::Lsn(l))) => format!("replays to LSN {l} (included)"),
        (None, Some(RecoveryPoint::Xid(x))) => {
            format!("replays to the commit of transaction {x} (included)")
        }
        (None, Some(RecoveryPoint::Name(n))) => format!("replays to restore point {n}"),
        (None, Some(RecoveryPoint::Immediate)) => {
            "stops as soon as the base backup is consistent".to_owned()
        }
        _ => String::new(),
    }
}

/// The options a physical restore refuses.
pub(crate) fn check_physical_options(opts: &RestoreOptions) -> Result<()> {
    opts.refuse_file_owners("a PostgreSQL data directory (its files belong to the server's user)")?;
    if opts.drop {
        return Err(Error::Config(
            "there is no --drop for a data directory: restore into a new directory, or stop the server and move the old data directory away".to_owned(),
        ));
    }
    if let Some(p @ (RecoveryPoint::OplogTs { .. } | RecoveryPoint::ReplOffset(_))) = &opts.point {
        return Err(Error::Config(format!(
            "{} is a {} target, not a PostgreSQL one; give --at, --at-lsn, --at-xid, --at-name or --immediate",
            crate::capture::point_flag(p),
                crate::capture::point_owner(p)
        )));
    }
    if !opts.is_point_in_time() && (opts.target_action.is_some() || opts.timeline.is_some()) {
        return Err(Error::Config(
            "--target-action and --timeline apply to point-in-time restores (--at, --at-lsn, ...)"
                .to_owned(),
        ));
    }
    if !opts.renames.is_empty() {
        return Err(Error::Config(
            "--rename does not apply to a data directory".to_owned(),
        ));
    }
    if !opts.includes.is_empty() || !opts.excludes.is_empty() {
        return Err(Error::Config(
            "--include and --exclude do not apply to a physical backup: a data directory is restored whole (restore a logical backup to select tables)".to_owned(),
        ));
    }
    Ok(())
}

fn physical_meta(snapshot: &SnapshotReader) -> Result<PhysicalMeta> {
    PhysicalMeta::of(&snapshot.snapshot().metadata).ok_or_else(|| {
        Error::Config(format!(
            "snapshot {} is not a physical PostgreSQL backup",
            snapshot.id().short()
        ))
    })?
}

async fn load_manifest(snapshot: &SnapshotReader) -> Result<Manifest> {
    let root = snapshot.root().await?;
    let node = root.require(MANIFEST_FILE)?;
    let text = snapshot.read_all(node).await?;
    Manifest::parse(&text).map_err(|e| unusable(&e))
}

/// The links in `pg_tblspc` to the tablespaces' places (the server would
/// make them from `tablespace_map` at its first start; made now, the data
/// directory is complete for tools that read it before, such as
/// `pg_verifybackup`).
fn link_tablespaces(
    data_dir: &Path,
    places: &[TablespacePlacement],
    owner: Option<(u32, u32)>,
) -> Result<()> {
    let dir = data_dir.join("pg_tblspc");
    if !places.is_empty() {
        std::fs::create_dir_all(&dir)
            .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    }
    for p in places {
        let link = dir.join(p.oid.to_string());
        std::os::unix::fs::symlink(&p.location, &link)
            .map_err(|e| Error::io(format!("linking {}", link.display()), e))?;
        if let Some((uid, gid)) = owner {
            std::os::unix::fs::lchown(&link, Some(uid), Some(gid))
                .map_err(|e| Error::io(format!("setting the owner of {}", link.display()), e))?;
        }
    }
    Ok(())
}

/// How many WAL segments a point-in-time restore leaves ready for the
/// start of recovery (128 MiB of 16 MiB segments).
const PRESTAGED_SEGMENTS: u64 = 8;

/// Creates a directory of the restore (owned and private like a data
/// directory) and remembers it.
fn prepare(dir: &Path, owner: Option<(u32, u32)>, created: &mut Vec<PathBuf>) -> Result<()> {
    std::fs::create_dir_all(dir)
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    set_owner_mode(dir, owner, 0o700)?;
    created.push(dir.to_path_buf());
    Ok(())
}

fn set_owner_mode(dir: &Path, owner: Option<(u32, u32)>, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    if let Some((uid, gid)) = owner {
        std::os::unix::fs::chown(dir, Some(uid), Some(gid))
            .map_err(|e| Error::io(format!("setting the owner of {}", dir.display()), e))?;
    }
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(format!("setting permissions of {}", dir.display()), e))
}

/// Removes what a failed restore wrote into `dir` (which was empty).
fn remove_contents(dir: &Path) {
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            let p = e.path();
            let r = if p.is_dir() && !p.is_symlink() {
                std::fs::remove_dir_all(&p)
            } else {
                std::fs::remove_file(&p)
            };
            if let Err(err) = r {
                tracing::warn!(path = %p.display(), error = %err, "Could not remove a partially restored file.");
            }
        }
    }
}

/// Makes the restored files durable: `syncfs` on each file system written.
fn sync_file_systems(dirs: &[PathBuf]) -> Result<()> {
    for dir in dirs {
        let f = std::fs::File::open(dir)
            .map_err(|e| Error::io(format!("opening {}", dir.display()), e))?;
        nix::unistd::syncfs(std::os::fd::AsRawFd::as_raw_fd(&f))
            .map_err(|e| Error::io(format!("syncing {}", dir.display()), e.into()))?;
    }
    Ok(())
}

/// The current file of a [`PhysicalWriter`].
struct Current {
    /// Its manifest path (`None`: not checked, the manifest itself).
    key: Option<Vec<u8>>,
    crc: u32,
    size: u64,
    /// The content, kept for a rewrite (`tablespace_map`).
    held: Option<Vec<u8>>,
    /// Not restored (the page delta index).
    discard: bool,
    /// The file's page delta, applied while the base is written, and the
    /// file's node as the delta completes it.
    patcher: Option<(Patcher, Node)>,
}

/// The page deltas of a snapshot, for the [`PhysicalWriter`] to apply.
struct Patches {
    /// Per manifest path: the delta's entry in the tree and in the index.
    files: HashMap<Vec<u8>, (Node, DeltaEntry)>,
    block: u32,
    snapshot: SnapshotReader,
    /// The runtime the deltas' content is read on (the writer runs on a
    /// blocking thread).
    rt: tokio::runtime::Handle,
}

impl Patches {
    /// The patcher of the file `key`, and its node as the delta completes
    /// it (size and metadata when the backup listed it), when it has a
    /// delta.
    fn patcher(&self, key: &[u8], base: &Node) -> Option<(Patcher, Node)> {
        let (delta, entry) = self.files.get(key)?;
        // Checked end to end: the completed file against the manifest. Two
        // fetches ahead: the restore's own stream holds most memory.
        let mut stream = self
            .snapshot
            .content_with(delta, IdCheck::WhenUnauthenticated, 2);
        let rt = self.rt.clone();
        let source = Box::new(move || {
            rt.block_on(futures::StreamExt::next(&mut stream))
                .transpose()
        });
        let mut node = base.clone();
        node.size = entry.size;
        node.mode = entry.mode.or(base.mode);
        node.mtime_ns = entry.mtime_ns.or(base.mtime_ns);
        Some((Patcher::new(key.to_vec(), entry, self.block, source), node))
    }
}

/// Writes the snapshot tree into the data directory and tablespace places,
/// checking every file against the manifest.
struct PhysicalWriter {
    inner: FsWriter,
    places: Places,
    manifest: HashMap<Vec<u8>, ManifestFile>,
    patches: Patches,
    /// WAL segment files the manifest's WAL ranges need.
    wal_needed: Vec<String>,
    /// WAL files restored.
    wal_seen: HashSet<Vec<u8>>,
    /// When tablespaces moved: the placements for `tablespace_map`.
    relocated: Option<Vec<TablespacePlacement>>,
    owner: Option<(u32, u32)>,
    current: Option<Current>,
    verified: Arc<Mutex<u64>>,
    failed: bool,
}

impl PhysicalWriter {
    fn new(
        places: Places,
        patches: Patches,
        manifest: Manifest,
        segment_size: u64,
        relocated: Option<Vec<TablespacePlacement>>,
        owner: Option<(u32, u32)>,
    ) -> Result<Self> {
        let mut wal_needed = Vec::new();
        for r in &manifest.wal_ranges {
            let first = r.start.segment(segment_size);
            let last = Lsn(r.end.0.saturating_sub(1))
                .segment(segment_size)
                .max(first);
            wal_needed.extend((first..=last).map(|s| wal_file_name(r.timeline, s, segment_size)));
        }
        Ok(PhysicalWriter {
            inner: FsWriter::new(PathBuf::from("/"))?.with_early_writeback()?,
            places,
            manifest: manifest.files,
            patches,
            wal_needed,
            wal_seen: HashSet::new(),
            relocated,
            owner,
            current: None,
            verified: Arc::default(),
            failed: false,
        })
    }

    fn owned(&self, node: &Node) -> Node {
        let mut n = node.clone();
        if let Some((uid, gid)) = self.owner {
            n.uid = Some(uid);
            n.gid = Some(gid);
        }
        n
    }

    fn mismatch(key: &[u8], what: &str) -> Error {
        Error::corrupt(
            FileKind::Snapshot,
            String::from_utf8_lossy(key),
            format!("the restored file does not match the backup manifest: {what}"),
        )
    }

    /// Whether `path` is the snapshot's page delta index (not restored).
    fn is_index(path: &Path) -> bool {
        path == Path::new(DELTA_INDEX)
    }
}

impl TreeWriter for PhysicalWriter {
    fn enter_dir(&mut self, path: &Path, node: &Node) -> Result<()> {
        match self.places.place(path)? {
            Some((dest, _)) => self.inner.enter_dir(&dest, &self.owned(node)),
            None => Ok(()),
        }
    }

    fn leave_dir(&mut self, path: &Path, node: &Node) -> Result<()> {
        match self.places.place(path)? {
            Some((dest, _)) => self.inner.leave_dir(&dest, &self.owned(node)),
            None => Ok(()),
        }
    }

    fn start_file(&mut self, path: &Path, node: &Node) -> Result<()> {
        if Self::is_index(path) {
            self.current = Some(Current {
                key: None,
                crc: 0,
                size: 0,
                held: None,
                discard: true,
                patcher: None,
            });
            return Ok(());
        }
        let (dest, key) = self
            .places
            .place(path)?
            .ok_or_else(|| Error::corrupt(FileKind::Snapshot, "tree", "a file at the top"))?;
        let held = (self.relocated.is_some()
            && key.as_deref() == Some(b"tablespace_map".as_slice()))
        .then(Vec::new);
        let patcher = key.as_deref().and_then(|k| self.patches.patcher(k, node));
        let node = patcher.as_ref().map_or(node, |(_, n)| n).clone();
        self.current = Some(Current {
            key,
            crc: 0,
            size: 0,
            held,
            discard: false,
            patcher,
        });
        self.inner.start_file(&dest, &self.owned(&node))
    }

    fn write_data(&mut self, data: Bytes) -> Result<()> {
        let c = self
            .current
            .as_mut()
            .ok_or_else(|| Error::target_failed("data without an open file"))?;
        if c.discard {
            return Ok(());
        }
        if let Some((p, _)) = &mut c.patcher {
            let (crc, size, inner) = (&mut c.crc, &mut c.size, &mut self.inner);
            return p.push(data, &mut |out| {
                *crc = crc32c::crc32c_append(*crc, &out);
                *size += out.len() as u64;
                inner.write_data(out)
            });
        }
        c.crc = crc32c::crc32c_append(c.crc, &data);
        c.size += data.len() as u64;
        if let Some(h) = &mut c.held {
            h.extend_from_slice(&data);
            return Ok(());
        }
        self.inner.write_data(data)
    }

    fn finish_file(&mut self, path: &Path, node: &Node) -> Result<()> {
        let mut c = self
            .current
            .take()
            .ok_or_else(|| Error::target_failed("no open file"))?;
        if c.discard {
            return Ok(());
        }
        let mut node = node.clone();
        if let Some((p, completed)) = &mut c.patcher {
            let (crc, size, inner) = (&mut c.crc, &mut c.size, &mut self.inner);
            let finished = p.finish(&mut |out| {
                *crc = crc32c::crc32c_append(*crc, &out);
                *size += out.len() as u64;
                inner.write_data(out)
            });
            if let Err(e) = finished {
                self.failed = true;
                return Err(e);
            }
            node = completed.clone();
        }
        if let Some(key) = &c.key {
            match self.manifest.remove(key) {
                Some(entry) => {
                    if let Err(e) = check_restored_file(key, &entry, c.size, c.crc) {
                        self.failed = true;
                        return Err(e);
                    }
                    *self.verified.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                }
                // WAL segments are covered by the manifest's WAL ranges,
                // not listed.
                None if key.starts_with(b"pg_wal/") => {
                    self.wal_seen.insert(key[b"pg_wal/".len()..].to_vec());
                }
                None => {
                    self.failed = true;
                    return Err(Self::mismatch(key, "the manifest does not list it"));
                }
            }
        }
        if let Some(held) = c.held {
            let text = rewrite_tablespace_map(&held, self.relocated.as_deref().unwrap_or_default());
            self.inner.write_data(Bytes::from(text))?;
        }
        let (dest, _) = self
            .places
            .place(path)?
            .ok_or_else(|| Error::target_failed("no place"))?;
        self.inner.finish_file(&dest, &self.owned(&node))
    }

    fn abort_file(&mut self, path: &Path) {
        self.current = None;
        if let Ok(Some((dest, _))) = self.places.place(path) {
            self.inner.abort_file(&dest);
        }
    }

    fn symlink(&mut self, path: &Path, node: &Node) -> Result<()> {
        match self.places.place(path)? {
            Some((dest, _)) => self.inner.symlink(&dest, &self.owned(node)),
            None => Ok(()),
        }
    }

    fn finish(&mut self) -> Result<()> {
        self.inner.finish()?;
        if !self.failed {
            if let Some(missing) = self
                .wal_needed
                .iter()
                .find(|n| !self.wal_seen.contains(n.as_bytes()))
            {
                return Err(Error::corrupt(
                    FileKind::Snapshot,
                    "tree",
                    format!(
                        "WAL segment {missing}, which the backup needs to become consistent, is not in the snapshot"
                    ),
                ));
            }
        }
        if !self.failed && !self.manifest.is_empty() {
            let mut missing: Vec<String> = self
                .manifest
                .keys()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            missing.sort();
            let n = missing.len();
            missing.truncate(5);
            return Err(Error::corrupt(
                FileKind::Snapshot,
                "tree",
                format!(
                    "{n} files the backup manifest lists are not in the snapshot: {}",
                    missing.join(", ")
                ),
            ));
        }
        Ok(())
    }
}

/// `tablespace_map` with relocated tablespaces' new places (`OID PATH`
/// lines).
fn rewrite_tablespace_map(original: &[u8], places: &[TablespacePlacement]) -> Vec<u8> {
    let text = String::from_utf8_lossy(original);
    let mut out = String::new();
    for line in text.lines() {
        let oid = line.split(' ').next().unwrap_or_default();
        if let Some(p) = places.iter().find(|p| p.oid.to_string() == oid) {
            out.push_str(oid);
            out.push(' ');
            out.push_str(&p.location);
        } else {
            out.push_str(line);
        }
        out.push('\n');
    }
    out.into_bytes()
}

/// Re-reads every listed file of a restored data directory and compares
/// size and CRC-32C with the manifest.
fn compare_files(
    data_dir: &Path,
    places: &[TablespacePlacement],
    manifest: &Manifest,
) -> Result<Vec<String>> {
    use std::os::unix::ffi::OsStrExt;
    let mut diffs = Vec::new();
    for (path, entry) in &manifest.files {
        // Tablespace files are where the restore put them (the links in
        // pg_tblspc appear at the first start).
        let p = places
            .iter()
            .find_map(|t| {
                let prefix = format!("pg_tblspc/{}/", t.oid);
                path.strip_prefix(prefix.as_bytes())
                    .map(|rest| Path::new(&t.location).join(std::ffi::OsStr::from_bytes(rest)))
            })
            .unwrap_or_else(|| data_dir.join(std::ffi::OsStr::from_bytes(path)));
        let shown = String::from_utf8_lossy(path);
        let f = match std::fs::File::open(&p) {
            Ok(f) => f,
            Err(e) => {
                diffs.push(format!("{shown}: {e}"));
                continue;
            }
        };
        let (size, crc) = super::manifest::crc32c_of(f, u64::MAX)
            .map_err(|e| Error::io(format!("reading {}", p.display()), e))?;
        if size != entry.size {
            diffs.push(format!(
                "{shown}: {size} bytes, the manifest lists {}",
                entry.size
            ));
        } else if let Some((alg, sum)) = &entry.checksum {
            if alg == "CRC32C" && *sum != crc32c_bytes(crc) {
                diffs.push(format!("{shown}: its CRC-32C differs from the manifest's"));
            }
        }
    }
    diffs.sort();
    Ok(diffs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_missing_server_version_names_its_package() {
        let err = find_server(99).await.unwrap_err();
        assert!(err.contains("postgresql-99"), "{err}");
        assert!(err.contains("BACKUP_PG_BINDIR"), "{err}");
    }

    #[test]
    fn tablespace_maps_are_rewritten() {
        let places = vec![TablespacePlacement {
            oid: 16384,
            original: "/srv/ts".into(),
            location: "/new/ts".into(),
        }];
        assert_eq!(
            rewrite_tablespace_map(b"16384 /srv/ts\n16385 /other\n", &places),
            b"16384 /new/ts\n16385 /other\n"
        );
        assert_eq!(
            absolute(Path::new("/a/./b/../c")).unwrap(),
            PathBuf::from("/a/c")
        );
    }
}
