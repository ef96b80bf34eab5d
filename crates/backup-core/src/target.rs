//! The `Target` trait: rebuilds a system from a snapshot.

use std::sync::Arc;

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::Result;
use crate::progress::Progress;
use crate::reader::SnapshotReader;
use crate::restorer::RestoreStats;

/// Options of a restore.
#[derive(Debug, Clone, Default)]
pub struct RestoreOptions {
    /// Only these paths or namespaces (all when empty).
    pub includes: Vec<String>,
    /// Leave these out.
    pub excludes: Vec<String>,
    /// Print the plan and change nothing.
    pub dry_run: bool,
    /// Replace existing data (databases); refused by targets that never
    /// overwrite (files).
    pub drop: bool,
    /// Point in time to restore to, for targets that support it
    /// (`--at`).
    pub at: Option<DateTime<Utc>>,
    /// A point to restore to in the source's own terms, for targets that
    /// replay a change stream (`--at-lsn`, `--at-xid`, `--at-name`,
    /// `--immediate`, `--at-ts`). At most one of `at` and `point`.
    pub point: Option<RecoveryPoint>,
    /// What a replayed database does once it reaches the target:
    /// PostgreSQL's `promote` (the default), `pause` or `shutdown`.
    pub target_action: Option<String>,
    /// The timeline to recover along (PostgreSQL): a number, `latest` or
    /// `current`.
    pub timeline: Option<String>,
    /// The command a restored database runs to fetch the change stream
    /// it replays (PostgreSQL's `restore_command`, without `%f %p`), set
    /// by the operations layer, which knows how to reach the repository.
    pub replay_command: Option<String>,
    /// Renames `from:to` (database targets).
    pub renames: Vec<String>,
    /// Parallel loaders for database targets (`None`: the target's
    /// default, one per core).
    pub jobs: Option<usize>,
    /// Physical PostgreSQL: after the restore, start a temporary server on
    /// this port, wait until it accepts connections, report, stop it.
    pub start_port: Option<u16>,
    /// Physical PostgreSQL: tablespace places, `OID=DIRECTORY`.
    pub tablespace_map: Vec<String>,
    /// PostgreSQL: leave out the statements that name roles the target
    /// cluster lacks (ownership, grants, policies), reporting each,
    /// instead of refusing the restore.
    pub skip_missing_roles: bool,
    /// A point-in-time restore: the captured pieces to apply after the
    /// snapshot and where to stop (`None`: the snapshot as it is).
    pub replay: Option<crate::capture::CaptureReplay>,
    /// How file owners are restored (files; root only).
    pub owners: Owners,
    /// Files: restore into a non-empty directory, replacing existing
    /// entries as this says (`None`: the directory must be empty or new).
    pub overwrite: Option<Overwrite>,
    /// Files: afterwards, remove what the directory holds that the
    /// snapshot does not (a mirror). Needs `overwrite`.
    pub delete: bool,
    /// Files: afterwards, re-read what was restored and compare it with
    /// the snapshot; a difference fails the restore.
    pub verify: bool,
}

/// What a files restore into a non-empty directory does with an entry that
/// exists already (`--overwrite`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Overwrite {
    /// Leave it as it is.
    Never,
    /// Replace it unless it is of the same type with the same size and
    /// modification time (a symbolic link: the same target).
    IfChanged,
    /// Replace it.
    Always,
}

/// How a files restore sets owners. Only root changes owners; for other
/// users every file belongs to them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Owners {
    /// The recorded user and group names where this system knows them,
    /// otherwise the recorded numbers (the default, as tar does).
    #[default]
    ByName,
    /// The recorded numbers only (`--numeric-owner`).
    Numeric,
    /// Leave owners as the restoring user (`--no-owner`).
    Skip,
}

/// A point to restore to, in a source's own terms.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RecoveryPoint {
    /// PostgreSQL: a WAL position (`--at-lsn`, `X/X`).
    Lsn(String),
    /// PostgreSQL: a transaction id (`--at-xid`).
    Xid(String),
    /// PostgreSQL: a restore point made with `pg_create_restore_point`
    /// (`--at-name`).
    Name(String),
    /// PostgreSQL: as soon as the base backup is consistent
    /// (`--immediate`).
    Immediate,
    /// MongoDB: an oplog timestamp (`--at-ts SECONDS:INCREMENT`).
    OplogTs {
        /// Seconds since the Unix epoch.
        seconds: u32,
        /// The ordinal within the second.
        increment: u32,
    },
    /// Redis: a replication offset (`--at-offset N`): the state after the
    /// commands that end at or before byte N of the replication stream,
    /// as `master_repl_offset` counts it.
    ReplOffset(u64),
}

impl RestoreOptions {
    /// Whether a point in time was asked for (`at` or `point`).
    pub fn is_point_in_time(&self) -> bool {
        self.at.is_some() || self.point.is_some()
    }

    /// Refuses the options of physical PostgreSQL restores, for a target
    /// that is not one (`what` names it).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Config`] when `--start` or `--tablespace-map` is
    /// given.
    pub fn refuse_physical(&self, what: &str) -> Result<()> {
        if self.start_port.is_some() || !self.tablespace_map.is_empty() {
            return Err(crate::Error::Config(format!(
                "--start and --tablespace-map apply to physical PostgreSQL backups restored into a data directory, not to {what}"
            )));
        }
        Ok(())
    }

    /// Refuses `--numeric-owner` and `--no-owner`, which apply to file
    /// restores, for targets that are not files (`what` names them).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Config`] when either was given.
    pub fn refuse_file_owners(&self, what: &str) -> Result<()> {
        if self.overwrite.is_some() || self.delete || self.verify {
            return Err(crate::Error::Config(format!(
                "--overwrite, --delete and --verify apply to file restores, not to {what}"
            )));
        }
        if self.owners != Owners::default() {
            return Err(crate::Error::Config(format!(
                "--numeric-owner and --no-owner apply to file restores, not to {what}"
            )));
        }
        Ok(())
    }
}

/// What the first line of a human report counts.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RestoredUnit {
    /// Files, directories and links (files targets).
    #[default]
    Files,
    /// Bytes of stream data (database targets, which describe what they
    /// restored in [`RestoreReport::lines`]).
    DatabaseStreams,
}

/// What a restore did (or, for a dry run, would do).
///
/// Front-ends print [`RestoreReport::lines`] for people and serialise the
/// report (with the target's typed details) for machines; neither reads
/// the details back.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RestoreReport {
    /// Whether this was a dry run.
    pub dry_run: bool,
    /// Where the data went (redacted).
    pub target: String,
    /// Counts.
    pub stats: RestoreStats,
    /// What the headline of a human report counts.
    #[serde(skip)]
    pub unit: RestoredUnit,
    /// Lines describing the restore for a person, printed after the
    /// headline (per database, per phase, warnings).
    #[serde(skip)]
    pub lines: Vec<String>,
    /// The target's typed report, serialised (per-table counts, ...).
    #[serde(skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
}

impl RestoreReport {
    /// Serialises a target's typed report into [`RestoreReport::details`].
    ///
    /// # Errors
    ///
    /// [`crate::Error::Config`] when the value cannot be serialised (a
    /// programming error).
    pub fn details_of(value: &impl Serialize) -> Result<serde_json::Value> {
        serde_json::to_value(value)
            .map_err(|e| crate::Error::Config(format!("cannot encode a restore report: {e}")))
    }

    /// A database target's report: its typed `details` serialised, and
    /// its `lines` for people.
    ///
    /// # Errors
    ///
    /// As [`RestoreReport::details_of`].
    pub fn with_details(
        dry_run: bool,
        target: String,
        stats: RestoreStats,
        unit: RestoredUnit,
        lines: Vec<String>,
        details: &impl Serialize,
    ) -> Result<Self> {
        Ok(RestoreReport {
            dry_run,
            target,
            stats,
            unit,
            lines,
            details: Self::details_of(details)?,
        })
    }
}

/// A place a snapshot can be restored to.
///
/// # Contract
///
/// - A restore never silently overwrites: a target holding data refuses
///   unless the options allow replacing it, and says what to do.
/// - With `dry_run`, nothing is changed and the report describes the plan.
/// - On error the target is left as it was or the error says what was
///   left behind.
#[async_trait]
pub trait Target: Send + Sync {
    /// The target's location with credentials removed.
    fn describe(&self) -> String;

    /// Rejects options this target does not support, before anything else
    /// happens (before a confirmation prompt, for example).
    ///
    /// # Errors
    ///
    /// [`crate::Error::Config`] naming the unsupported option.
    fn check_options(&self, opts: &RestoreOptions) -> Result<()> {
        let _ = opts;
        Ok(())
    }

    /// After [`Target::restore`], compares what the target now holds with
    /// the snapshot and returns the differences (empty when identical).
    /// Used by `verify --restore-test`. Every blob was already verified on
    /// its way in; this checks what actually landed.
    ///
    /// # Errors
    ///
    /// Errors reading the snapshot or the target.
    async fn check_restored(&self, snapshot: &SnapshotReader) -> Result<Vec<String>>;

    /// Checks that restoring `snapshot` with `opts` can go ahead, before
    /// anything is changed: before a destructive restore is confirmed and
    /// before its safety backup. Targets check and plan again in
    /// [`Target::restore`]; this lets a restore that would be refused
    /// fail before the safety backup is taken.
    ///
    /// # Errors
    ///
    /// The refusal [`Target::restore`] would return (for example a
    /// database number the target server lacks, roles it lacks, objects a
    /// selective restore would drop without recreating them), and errors
    /// reaching the target or reading the snapshot.
    async fn check(&self, snapshot: &SnapshotReader, opts: &RestoreOptions) -> Result<()> {
        let _ = (snapshot, opts);
        Ok(())
    }

    /// Whether restoring with `opts` would replace existing data, so that a
    /// safety backup of the target should be taken first (DESIGN.md
    /// section 7). Targets that never overwrite return `false`.
    ///
    /// # Errors
    ///
    /// Errors reaching the target.
    async fn replaces_data(&self, opts: &RestoreOptions) -> Result<bool> {
        let _ = opts;
        Ok(false)
    }

    /// Removes what a restore to this scratch target created.
    ///
    /// # Errors
    ///
    /// Errors removing the data.
    async fn discard(&self) -> Result<()>;

    /// Restores `snapshot`.
    async fn restore(
        &self,
        snapshot: &SnapshotReader,
        opts: &RestoreOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<RestoreReport>;
}
