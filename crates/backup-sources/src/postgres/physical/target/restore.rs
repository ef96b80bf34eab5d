//! A physical restore checked and planned before anything is written
//! ([`Plan::check`]: the options, the snapshot's metadata, manifest and
//! page deltas, the destinations, the captured WAL of a point-in-time
//! target, and what a server started on the result needs), then written
//! ([`Plan::write`]: the tree, the first WAL segments replay needs, the
//! tablespace links and the recovery settings).

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, PoisonError};

use backup_core::filter::PathFilter;
use backup_core::pack::IdCheck;
use backup_core::progress::Progress;
use backup_core::reader::{Dir, SnapshotReader};
use backup_core::restorer::RestoreStats;
use backup_core::target::{RecoveryPoint, RestoreOptions};
use backup_core::tree::Node;
use backup_core::{Error, Result};

use super::super::delta::{DeltaEntry, DeltaIndex, DELTA_INDEX, DELTA_SUFFIX};
use super::super::lsn::Lsn;
use super::super::manifest::{unusable, Manifest};
use super::super::meta::{PhysicalMeta, MANIFEST_FILE};
use super::super::pitr::{self, Coverage};
use super::super::{preflight, wal};
use super::dirs::{absolute, check_empty, owner_for, prepare, set_owner_mode, sync_file_systems};
use super::tablespaces::{check_places, link_tablespaces, tablespace_places, TablespacePlacement};
use super::writer::{Patches, PhysicalWriter, Places};
use crate::postgres::tools::{find_server, major_of, Tool};

/// A restore whose every check passed: what it writes and where.
pub(super) struct Plan {
    pub(super) meta: PhysicalMeta,
    /// The data directory (absolute).
    pub(super) data_dir: PathBuf,
    /// Where the tablespaces go.
    pub(super) places: Vec<TablespacePlacement>,
    /// The snapshot's backup manifest (taken by [`Plan::write`]).
    pub(super) manifest: Manifest,
    /// Per manifest path, the page delta to apply to the file: its node
    /// and its entry in the index (taken by [`Plan::write`]).
    pub(super) patches: HashMap<Vec<u8>, (Node, DeltaEntry)>,
    /// The page size of the deltas.
    pub(super) block_size: u32,
    /// For a point-in-time target: the captured WAL that reaches it.
    pub(super) coverage: Option<Coverage>,
    /// The server program of the snapshot's version, or why there is none.
    pub(super) server: std::result::Result<Tool, String>,
    /// The owner the restored files get (running as root).
    pub(super) owner: Option<(u32, u32)>,
    /// For a point-in-time target: the program (and its arguments) of the
    /// `restore_command`.
    pub(super) program: Option<String>,
    /// What the snapshot's tree holds.
    pub(super) planned: RestoreStats,
}

impl Plan {
    /// Checks everything that can be checked before anything is written,
    /// for a restore of `snapshot` into `root`.
    pub(super) async fn check(
        snapshot: &SnapshotReader,
        opts: &RestoreOptions,
        root: &Path,
    ) -> Result<Self> {
        check_physical_options(opts)?;
        let meta = physical_meta(snapshot)?;
        let data_dir = absolute(root)?;
        let places = tablespace_places(opts, &meta)?;
        check_empty(&data_dir, "the data directory")?;
        check_places(&data_dir, &places)?;
        let manifest = load_manifest(snapshot).await?;
        // Files with a page delta: the delta is applied while the base is
        // written. Every delta the index lists must be there.
        let root = snapshot.root().await?;
        let deltas = DeltaIndex::of(&root).await?;
        let patches = delta_patches(snapshot, &root, &manifest, deltas.files).await?;
        let coverage = if opts.is_point_in_time() {
            Some(pitr::check_coverage(snapshot.repository(), snapshot.id(), &meta, opts).await?)
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
            preflight::check_start(&data_dir, owner, port)?;
        }
        let program = match (&coverage, &opts.replay_command) {
            (None, _) => None,
            (Some(_), Some(p)) => Some(p.clone()),
            (Some(_), None) => Some(default_program(snapshot.repository())?),
        };
        if let Some(program) = &program {
            preflight::check_restore_command(
                snapshot.repository(),
                &data_dir,
                owner,
                opts.start_port.is_some(),
                |key| pitr::restore_command(program, key, &meta),
            )
            .await?;
        }
        let planned = snapshot.plan(&PathFilter::new(&[], &[])?).await?;
        Ok(Plan {
            meta,
            data_dir,
            places,
            manifest,
            patches,
            block_size: deltas.block_size,
            coverage,
            server,
            owner,
            program,
            planned,
        })
    }

    /// Writes the snapshot into the data directory and the tablespaces'
    /// places (every file checked against the manifest), with the first
    /// WAL segments a point-in-time recovery replays, the links in
    /// `pg_tblspc` and the recovery settings, and syncs the file systems.
    /// Returns what was restored and the number of files checked. The
    /// directories it prepared are in `created` and the files it wrote
    /// beside them in `created_files`, for the caller to remove when it
    /// fails.
    pub(super) async fn write(
        &mut self,
        snapshot: &SnapshotReader,
        opts: &RestoreOptions,
        progress: &Arc<dyn Progress>,
        created: &mut Vec<PathBuf>,
        created_files: &mut Vec<PathBuf>,
    ) -> Result<(RestoreStats, u64)> {
        let patches = std::mem::take(&mut self.patches);
        let manifest = std::mem::take(&mut self.manifest);
        let (data_dir, places, meta, owner) =
            (&self.data_dir, &self.places, &self.meta, self.owner);
        let (coverage, program) = (&self.coverage, &self.program);
        let mut roots: HashMap<String, PathBuf> = HashMap::new();
        prepare(data_dir, owner, created)?;
        for p in places {
            let dest = PathBuf::from(&p.location);
            prepare(&dest, owner, created)?;
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
                block: self.block_size,
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
        progress.set_total(self.planned.bytes);
        // The first segments replay needs are staged while the files
        // are written and wait in the prefetch directory, so that
        // recovery starts without waiting for the repository (`wal
        // fetch` then keeps ahead of it).
        let stage = data_dir.join(".backup-prestage");
        let prestage = async {
            match coverage
                .as_ref()
                .filter(|c| c.timelines.len() == 1 && opts.point != Some(RecoveryPoint::Immediate))
            {
                Some(c) => {
                    wal::prestage(
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
        link_tablespaces(data_dir, places, owner)?;
        if let Some(program) = program {
            let key = pitr::write_key_file(snapshot.repository(), data_dir, owner)?;
            if let Some(k) = &key {
                created_files.push(k.clone());
            }
            let command = pitr::restore_command(program, key.as_deref(), meta);
            let end = pitr::end_command(program, key.as_deref());
            let settings = pitr::recovery_settings(opts, &command, &end);
            pitr::write_recovery(data_dir, &settings, owner)?;
        }
        set_owner_mode(data_dir, owner, 0o700)?;
        sync_file_systems(created)?;
        let n = *verified.lock().unwrap_or_else(PoisonError::into_inner);
        Ok((stats, n))
    }
}

/// The page deltas of the snapshot whose top directory is `root`, by
/// manifest path, from the `files` its delta index lists: each must be a
/// file of the backup manifest and have its delta in the tree.
async fn delta_patches(
    snapshot: &SnapshotReader,
    root: &Dir,
    manifest: &Manifest,
    files: BTreeMap<String, DeltaEntry>,
) -> Result<HashMap<Vec<u8>, (Node, DeltaEntry)>> {
    let mut patches = HashMap::new();
    if !files.is_empty() {
        let mut relations = super::super::delta::relations(root).await?;
        let mut missing = Vec::new();
        for (path, entry) in files {
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
    Ok(patches)
}

/// How many WAL segments a point-in-time restore leaves ready for the
/// start of recovery (128 MiB of 16 MiB segments).
const PRESTAGED_SEGMENTS: u64 = 8;

/// The `backup` program and the arguments that reach `repo`, for a
/// restored server's `restore_command` when the front-end gave none.
fn default_program(repo: &backup_core::repo::Repository) -> Result<String> {
    let exe = std::env::current_exe().map_err(|e| Error::io("finding this program", e))?;
    Ok(format!(
        "{} --repo {}",
        pitr::shell_quote(&exe.display().to_string()),
        pitr::shell_quote(&repo.sink().location())
    ))
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

pub(super) fn physical_meta(snapshot: &SnapshotReader) -> Result<PhysicalMeta> {
    PhysicalMeta::of(&snapshot.snapshot().metadata).ok_or_else(|| {
        Error::Config(format!(
            "snapshot {} is not a physical PostgreSQL backup",
            snapshot.id().short()
        ))
    })?
}

pub(super) async fn load_manifest(snapshot: &SnapshotReader) -> Result<Manifest> {
    let root = snapshot.root().await?;
    let node = root.require(MANIFEST_FILE)?;
    let text = snapshot.read_all(node).await?;
    Manifest::parse(&text).map_err(|e| unusable(&e))
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
}
