//! What a restore did or would do, per database: the typed reports.

use std::collections::BTreeMap;

/// What the last restore wrote, for `check_restored` and `discard`.
#[derive(Debug, Clone, Default)]
pub(super) struct Restored {
    /// Per target database: keys before, keys restored, restored keys
    /// with an expiry.
    pub(super) dbs: BTreeMap<u32, DbResult>,
    /// A captured stream was replayed after the keys (a point-in-time
    /// restore): the counts describe the base only.
    pub(super) replayed: bool,
    /// Keys restored with the replay's held expiry (target database, key,
    /// real expiry in ms), for the replay to settle.
    pub(super) held: Vec<(u32, Vec<u8>, i64)>,
}

/// What a restore did in one target database.
#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
pub(super) struct DbResult {
    pub(super) source_db: u32,
    pub(super) before: u64,
    pub(super) restored: u64,
    pub(super) with_ttl: u64,
    pub(super) expired_skipped: u64,
    pub(super) filtered: u64,
    /// Keys without elements, skipped as Redis does when it loads an RDB.
    pub(super) empty_skipped: u64,
}

/// A dry run's report: per source database what would happen.
#[derive(Debug, serde::Serialize)]
pub(super) struct DryRunReport {
    pub(super) mode: &'static str,
    pub(super) databases: BTreeMap<String, PlannedDb>,
    pub(super) functions: u64,
    /// The captured stream a point-in-time restore would replay.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) replay: Option<PlannedReplay>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) warnings: Vec<String>,
}

/// What a point-in-time restore would replay after the keys.
#[derive(Debug, serde::Serialize)]
pub(super) struct PlannedReplay {
    pub(super) pieces: usize,
    /// The last offset applied, at most.
    pub(super) until_offset: u64,
    /// Only commands that arrived by then (`--at TIME`).
    pub(super) until_time: Option<chrono::DateTime<chrono::Utc>>,
}

/// What a restore would do in one database.
#[derive(Debug, serde::Serialize)]
pub(super) struct PlannedDb {
    pub(super) to: u32,
    pub(super) keys_in_target: u64,
    pub(super) would_flush: bool,
    pub(super) would_restore: u64,
    pub(super) expired_skipped: u64,
    pub(super) filtered_out: u64,
    pub(super) empty_skipped: u64,
    /// Keys to restore that the target database already holds (the
    /// restore is refused without `--drop`).
    pub(super) conflicts: u64,
}

impl DryRunReport {
    /// One line per database.
    pub(super) fn lines(&self) -> Vec<String> {
        self.databases
            .iter()
            .map(|(db, d)| {
                format!(
                    "database {db}: -> {}: {} keys, {} skipped as expired, {} left out by filters{}; the target holds {} keys{}",
                    d.to,
                    d.would_restore,
                    d.expired_skipped,
                    d.filtered_out,
                    empty_note(d.empty_skipped),
                    d.keys_in_target,
                    if d.would_flush {
                        " (flushed first: --drop)".to_owned()
                    } else if d.conflicts > 0 {
                        format!(
                            "; CONFLICT: {} of the keys exist there, so the restore would be refused without --drop",
                            d.conflicts
                        )
                    } else {
                        String::new()
                    }
                )
            })
            .chain(self.replay.as_ref().map(|r| {
                format!(
                    "then would replay {} pieces of the captured stream, up to replication offset {}{}",
                    r.pieces,
                    r.until_offset,
                    r.until_time
                        .map(|t| format!(
                            ", the commands that arrived by {}",
                            t.format("%Y-%m-%dT%H:%M:%S%.3fZ")
                        ))
                        .unwrap_or_default()
                )
            }))
            .chain(self.warnings.iter().map(|w| format!("warning: {w}")))
            .collect()
    }
}

/// A restore's report: per target database what was restored.
#[derive(Debug, serde::Serialize)]
pub(super) struct DoneReport {
    pub(super) mode: &'static str,
    pub(super) keys_restored: u64,
    pub(super) expired_skipped: u64,
    pub(super) empty_skipped: u64,
    pub(super) databases: BTreeMap<String, DbResult>,
    /// The captured stream applied after the keys (point-in-time
    /// restores).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) replay: Option<super::replay::ReplayReport>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub(super) warnings: Vec<String>,
}

impl DoneReport {
    /// One line per database.
    pub(super) fn lines(&self) -> Vec<String> {
        let replay = self.replay.as_ref().map(|r| {
            format!(
                "replayed {} commands of the captured stream ({} pieces) up to replication offset {}{}; {} left out by the selection",
                r.applied,
                r.pieces,
                r.offset,
                r.time
                    .map(|t| format!(" (arrived {})", t.format("%Y-%m-%dT%H:%M:%S%.3fZ")))
                    .unwrap_or_default(),
                r.filtered + r.mixed
            )
        });
        let mixed = self.replay.as_ref().filter(|r| r.mixed > 0).map(|r| {
            format!(
                "warning: {} replayed commands named both selected and unselected keys or databases and were left out",
                r.mixed
            )
        });
        self.databases
            .iter()
            .map(|(db, r)| {
                format!(
                    "database {db}: {} keys restored (from database {}), {} skipped as expired, {} left out by filters{}",
                    r.restored,
                    r.source_db,
                    r.expired_skipped,
                    r.filtered,
                    empty_note(r.empty_skipped)
                )
            })
            .chain(replay)
            .chain(mixed)
            .chain(self.warnings.iter().map(|w| format!("warning: {w}")))
            .collect()
    }
}

/// `, N empty keys skipped` when there were any.
fn empty_note(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(", {n} empty keys skipped (Redis skips them when it loads an RDB)")
    }
}
