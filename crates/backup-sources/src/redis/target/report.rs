//! What a restore did or would do, per database: the typed reports.

use std::collections::BTreeMap;

/// What the last restore wrote, for `check_restored` and `discard`.
#[derive(Debug, Clone, Default)]
pub(super) struct Restored {
    /// Per target database: keys before, keys restored, restored keys
    /// with an expiry.
    pub(super) dbs: BTreeMap<u32, DbResult>,
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
}

/// A dry run's report: per source database what would happen.
#[derive(Debug, serde::Serialize)]
pub(super) struct DryRunReport {
    pub(super) mode: &'static str,
    pub(super) databases: BTreeMap<String, PlannedDb>,
    pub(super) functions: u64,
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
}

impl DryRunReport {
    /// One line per database.
    pub(super) fn lines(&self) -> Vec<String> {
        self.databases
            .iter()
            .map(|(db, d)| {
                format!(
                    "database {db}: -> {}: {} keys, {} skipped as expired, {} left out by filters; the target holds {} keys{}",
                    d.to,
                    d.would_restore,
                    d.expired_skipped,
                    d.filtered_out,
                    d.keys_in_target,
                    if d.would_flush { " (flushed first: --drop)" } else { "" }
                )
            })
            .collect()
    }
}

/// A restore's report: per target database what was restored.
#[derive(Debug, serde::Serialize)]
pub(super) struct DoneReport {
    pub(super) mode: &'static str,
    pub(super) keys_restored: u64,
    pub(super) expired_skipped: u64,
    pub(super) databases: BTreeMap<String, DbResult>,
}

impl DoneReport {
    /// One line per database.
    pub(super) fn lines(&self) -> Vec<String> {
        self.databases
            .iter()
            .map(|(db, r)| {
                format!(
                    "database {db}: {} keys restored (from database {}), {} skipped as expired, {} left out by filters",
                    r.restored, r.source_db, r.expired_skipped, r.filtered
                )
            })
            .collect()
    }
}
