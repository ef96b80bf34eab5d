//! The report of a PostgreSQL restore.

use std::collections::BTreeMap;

use backup_core::restorer::RestoreStats;
use backup_core::target::{RestoreReport, RestoredUnit};
use backup_core::Result;

use super::plan::Plan;
use super::snapshot::Loaded;

/// What a PostgreSQL restore did or would do (the `details` of its report).
#[derive(Debug, serde::Serialize)]
pub(super) struct PostgresRestoreReport {
    database: String,
    action: &'static str,
    /// Why the restore would be refused without `--drop` (dry runs).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) conflict: Option<String>,
    server_version: String,
    /// Objects the restore creates, by kind.
    objects: BTreeMap<String, u64>,
    tables: Vec<TablePlan>,
    rows: u64,
    data_bytes: u64,
    /// Entries and statements left out, with why.
    skipped: Vec<String>,
    /// Patterns that matched no table.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    unmatched: Vec<String>,
    /// Roles the snapshot's globals create (those the target lacks).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    roles_to_create: Vec<String>,
    /// Roles the restore created from the snapshot's globals (not for a
    /// dry run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) roles_created: Option<Vec<String>>,
    /// Statements that failed without failing the restore (not for a dry
    /// run).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(super) warnings: Option<Vec<String>>,
    summary: Vec<String>,
}

/// One table of the plan.
#[derive(Debug, serde::Serialize)]
struct TablePlan {
    table: String,
    rows: u64,
    bytes: u64,
    parts: u32,
}

impl PostgresRestoreReport {
    /// The report of `plan` restoring into `database`.
    pub(super) fn new(
        database: String,
        action: &'static str,
        loaded: &Loaded,
        plan: &Plan,
    ) -> Self {
        PostgresRestoreReport {
            database,
            action,
            conflict: None,
            server_version: loaded.meta.server_version.clone(),
            objects: plan.objects.clone(),
            tables: plan
                .tables
                .iter()
                .map(|&i| {
                    let t = &loaded.meta.tables[i];
                    TablePlan {
                        table: t.qualified(),
                        rows: t.rows,
                        bytes: t.bytes,
                        parts: t.parts,
                    }
                })
                .collect(),
            rows: plan.rows(loaded),
            data_bytes: plan.data_bytes(loaded),
            skipped: plan.skipped.clone(),
            unmatched: plan.unmatched.clone(),
            roles_to_create: plan.roles_to_create.clone(),
            roles_created: None,
            warnings: None,
            summary: Vec::new(),
        }
    }

    /// The restore's report, with this one as its details.
    pub(super) fn finish(
        mut self,
        dry_run: bool,
        target: String,
        stats: RestoreStats,
    ) -> Result<RestoreReport> {
        self.summary = self.lines(dry_run);
        let lines = self.summary.clone();
        RestoreReport::with_details(
            dry_run,
            target,
            stats,
            RestoredUnit::DatabaseStreams,
            lines,
            &self,
        )
    }

    fn lines(&self, dry_run: bool) -> Vec<String> {
        let mut lines = Vec::new();
        let verb = if dry_run { "would" } else { "did" };
        match &self.conflict {
            Some(c) => {
                lines.push(format!(
                    "CONFLICT: {c}: the restore would be refused without --drop"
                ));
                lines.push(format!(
                    "plan: with --drop it {verb} {} `{}`",
                    self.action, self.database
                ));
            }
            None => lines.push(format!("plan: {verb} {} `{}`", self.action, self.database)),
        }
        let objects: Vec<String> = self
            .objects
            .iter()
            .map(|(k, v)| format!("{v} {}", k.to_lowercase()))
            .collect();
        lines.push(format!("objects: {}", objects.join(", ")));
        lines.push(format!(
            "tables: {} with {} rows, {} of data",
            self.tables.len(),
            self.rows,
            backup_core::util::human_bytes(self.data_bytes)
        ));
        for t in &self.tables {
            lines.push(format!(
                "  {} {} rows {}",
                t.table,
                t.rows,
                backup_core::util::human_bytes(t.bytes)
            ));
        }
        match &self.roles_created {
            Some(created) if !created.is_empty() => {
                lines.push(format!("roles created: {}", created.join(", ")));
            }
            None if !self.roles_to_create.is_empty() => {
                lines.push(format!(
                    "roles to create: {}",
                    self.roles_to_create.join(", ")
                ));
            }
            _ => {}
        }
        for s in &self.skipped {
            lines.push(format!("skipped: {s}"));
        }
        for u in &self.unmatched {
            lines.push(format!("warning: {u}"));
        }
        for w in self.warnings.iter().flatten() {
            lines.push(format!("warning: {w}"));
        }
        lines
    }
}
