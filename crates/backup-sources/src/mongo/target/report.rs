//! The report of a MongoDB restore: the plan (all a dry run shows) and,
//! once the restore ran, what it did.

use backup_core::restorer::RestoreStats;
use backup_core::target::{RestoreOptions, RestoreReport, RestoredUnit};
use backup_core::{Error, Result};

use super::super::security;
use super::indexes::Indexes;
use super::plan::ExistingMap;
use super::replay::ReplayReport;
use super::snapshot::{Loaded, Planned};
use super::users::UsersAndRoles;

/// What a MongoDB restore did or would do (the `details` of its report).
#[derive(Debug, serde::Serialize)]
pub(super) struct MongoRestoreReport {
    server_version: String,
    collections: Vec<CollectionPlan>,
    documents: u64,
    data_bytes: u64,
    oplog_entries: u64,
    consistent: bool,
    /// Namespaces of the target that hold data and are not replaced
    /// without `--drop` (a dry run lists them; a restore refuses).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    conflicts: Vec<String>,
    summary: Vec<String>,
    /// A restore to a point in time: the base, the pieces and what they
    /// hold per namespace.
    #[serde(skip_serializing_if = "Option::is_none")]
    point_in_time: Option<PointInTime>,
    /// What happened, once the restore ran (not for a dry run).
    #[serde(flatten, skip_serializing_if = "Option::is_none")]
    outcome: Option<MongoOutcome>,
}

/// The replay of a restore to a point in time.
#[derive(Debug, serde::Serialize)]
struct PointInTime {
    base: String,
    stream: String,
    from: String,
    until: String,
    pieces: Vec<String>,
    /// What the oplog from the snapshot's window to the target holds.
    planned: ReplayReport,
}

/// One collection or view of the plan.
#[derive(Debug, serde::Serialize)]
struct CollectionPlan {
    from: String,
    to: String,
    kind: String,
    documents: u64,
    bytes: u64,
    indexes: usize,
    /// What it replaces on the target (`--drop`).
    #[serde(skip_serializing_if = "Option::is_none")]
    replaces: Option<String>,
}

/// The results of a restore that ran.
#[derive(Debug, serde::Serialize)]
struct MongoOutcome {
    roles_created: Vec<String>,
    users_created: Vec<String>,
    users_and_roles_kept: Vec<String>,
    users_and_roles_failed: Vec<String>,
    indexes_built: usize,
    oplog_operations: u64,
    replay: ReplayReport,
    index_failures: Vec<String>,
    count_mismatches: Vec<String>,
}

/// What the phases of a restore that ran did.
pub(super) struct Done {
    /// Documents inserted.
    pub(super) inserted: u64,
    /// Collections whose counts differ from the manifest.
    pub(super) count_mismatches: Vec<String>,
    pub(super) indexes: Indexes,
    /// Views created.
    pub(super) views: usize,
    /// Users and roles (`None`: there were none to restore).
    pub(super) users: Option<security::Outcome>,
    /// What the oplog replay did.
    pub(super) replayed: ReplayReport,
}

/// The stats of a restore of `plan`: one file per documents stream.
pub(super) fn stats(plan: &[Planned]) -> RestoreStats {
    RestoreStats {
        files: plan.iter().filter(|p| p.documents.is_some()).count() as u64,
        dirs: 0,
        symlinks: 0,
        bytes: data_bytes(plan),
        ..RestoreStats::default()
    }
}

/// Bytes of the documents streams of `plan`.
fn data_bytes(plan: &[Planned]) -> u64 {
    plan.iter()
        .filter_map(|p| p.documents.as_ref())
        .map(|n| n.size)
        .sum()
}

impl MongoRestoreReport {
    /// The plan of restoring `loaded` into a target that holds `existing`
    /// (`dry_run`: says what it would do).
    pub(super) fn new(
        loaded: &Loaded,
        existing: &ExistingMap,
        users: &UsersAndRoles,
        opts: &RestoreOptions,
    ) -> Self {
        let dry_run = opts.dry_run;
        let conflicts = if opts.drop {
            Vec::new()
        } else {
            super::plan::conflicts(&loaded.collections, existing)
        };
        let plan = &loaded.collections;
        let oplog_entries = loaded.meta.oplog.as_ref().map_or(0, |o| o.entries);
        let collections: Vec<CollectionPlan> = plan
            .iter()
            .map(|p| CollectionPlan {
                from: p.meta.ns(),
                to: p.target_ns(),
                kind: p.meta.kind.clone(),
                documents: p.meta.documents,
                bytes: p.meta.bytes,
                indexes: p.meta.indexes,
                replaces: existing
                    .get(&(p.db.clone(), p.coll.clone()))
                    .map(|e| format!("{} with {} documents", e.kind, e.documents)),
            })
            .collect();
        let verb = if dry_run { "would " } else { "" };
        let mut summary = collection_lines(plan, existing, verb, opts.drop);
        summary.extend(users.summary(verb));
        if !conflicts.is_empty() {
            summary.push(format!(
                "CONFLICT: the target already holds {} of the namespaces to restore ({}); the restore would be refused without --drop (which replaces them after a safety backup), --rename or --exclude",
                conflicts.len(),
                conflicts.join(", ")
            ));
        }
        if loaded.meta.consistent {
            summary.push(format!(
                "{verb}replay {oplog_entries} oplog entries (to the backup's end time)"
            ));
        } else {
            summary.push(format!(
                "the snapshot was taken from a {} server without oplog capture: it is not a point in time",
                loaded.meta.topology
            ));
        }
        MongoRestoreReport {
            server_version: loaded.meta.server_version.clone(),
            collections,
            documents: plan.iter().map(|p| p.meta.documents).sum(),
            data_bytes: data_bytes(plan),
            oplog_entries,
            consistent: loaded.meta.consistent,
            conflicts,
            summary,
            point_in_time: None,
            outcome: None,
        }
    }

    /// Describes the replay of a restore to a point in time.
    pub(super) fn point_in_time(
        &mut self,
        base: backup_core::Id,
        replay: &backup_core::capture::CaptureReplay,
        scan: &ReplayReport,
        dry_run: bool,
    ) {
        let show = |p: &str| {
            super::super::Ts::from_position(p).map_or_else(|| p.to_owned(), |t| t.to_string())
        };
        let verb = if dry_run { "would " } else { "" };
        // The line of the snapshot's own window says it replays to the
        // backup's end: replace it.
        self.summary
            .retain(|l| !l.ends_with("(to the backup's end time)"));
        self.summary.push(format!(
            "{verb}replay base snapshot {}'s oplog window and {} captured pieces ({} to {} inclusive): {} entries, {} operations",
            base.short(),
            replay.pieces.len(),
            show(&replay.from),
            show(&replay.until),
            scan.entries,
            scan.operations
        ));
        for (ns, c) in &scan.namespaces {
            self.summary.push(format!(
                "  {ns}: {} inserts, {} updates, {} deletes, {} commands",
                c.inserts, c.updates, c.deletes, c.commands
            ));
        }
        if scan.transactions_left_out > 0 {
            self.summary.push(format!(
                "{} transactions not committed by the target are left out",
                scan.transactions_left_out
            ));
        }
        self.point_in_time = Some(PointInTime {
            base: base.to_hex(),
            stream: replay.stream.clone(),
            from: show(&replay.from),
            until: show(&replay.until),
            pieces: replay
                .pieces
                .iter()
                .map(backup_core::capture::CaptureName::file_name)
                .collect(),
            planned: scan.clone(),
        });
    }

    /// Adds warnings to the summary.
    pub(super) fn warn(&mut self, lines: Vec<String>) {
        self.summary
            .extend(lines.into_iter().map(|l| format!("warning: {l}")));
    }

    /// The report for the restore target `target`.
    pub(super) fn to_restore_report(
        &self,
        dry_run: bool,
        target: String,
        stats: RestoreStats,
    ) -> Result<RestoreReport> {
        let lines = self.summary.clone();
        RestoreReport::with_details(
            dry_run,
            target,
            stats,
            RestoredUnit::DatabaseStreams,
            lines,
            self,
        )
    }

    /// Adds what the restore did to the plan; fails, listing them, when
    /// something could not be restored.
    pub(super) fn finish(
        mut self,
        done: Done,
        target: String,
        stats: RestoreStats,
    ) -> Result<RestoreReport> {
        let Done {
            inserted,
            count_mismatches: problems,
            indexes:
                Indexes {
                    built,
                    failures: index_failures,
                },
            views,
            users,
            replayed,
        } = done;
        self.summary.push(format!(
            "{inserted} documents inserted, {built} indexes built, {views} views, {} oplog operations replayed{}",
            replayed.operations,
            if replayed.indexes_built > 0 {
                format!(" ({} indexes built after the replay)", replayed.indexes_built)
            } else {
                String::new()
            }
        ));
        if let Some(sec) = &users {
            self.summary.push(format!(
                "{} roles and {} users created, {} already on the target left as they are",
                sec.roles_created.len(),
                sec.users_created.len(),
                sec.kept.len()
            ));
        }
        let sec = users.unwrap_or_default();
        let failed = !index_failures.is_empty() || !problems.is_empty() || !sec.failures.is_empty();
        if failed {
            let mut msg =
                String::from("the restore finished with problems (everything else was restored):");
            for f in index_failures.iter().chain(&problems).chain(&sec.failures) {
                msg.push_str("\n  ");
                msg.push_str(f);
            }
            return Err(Error::target_failed(msg));
        }
        self.outcome = Some(MongoOutcome {
            roles_created: sec.roles_created,
            users_created: sec.users_created,
            users_and_roles_kept: sec.kept,
            users_and_roles_failed: sec.failures,
            indexes_built: built,
            oplog_operations: replayed.operations,
            replay: replayed,
            index_failures,
            count_mismatches: problems,
        });
        self.to_restore_report(false, target, stats)
    }
}

/// The lines of the summary for the collections and views of `plan`.
fn collection_lines(
    plan: &[Planned],
    existing: &ExistingMap,
    verb: &str,
    drop: bool,
) -> Vec<String> {
    let mut summary = Vec::new();
    for p in plan {
        let rename = if p.meta.ns() == p.target_ns() {
            String::new()
        } else {
            format!(" as {}", p.target_ns())
        };
        let replace = match existing.get(&(p.db.clone(), p.coll.clone())) {
            Some(_) if drop => " (replacing the existing one)".to_owned(),
            Some(e) if e.documents > 0 || e.kind == "view" || p.meta.is_view() => format!(
                " (CONFLICT: the target's {} holds {} documents; needs --drop)",
                e.kind, e.documents
            ),
            Some(_) => " (into the existing empty collection)".to_owned(),
            None => String::new(),
        };
        if p.meta.is_view() {
            summary.push(format!(
                "{verb}create view {}{rename}{replace}",
                p.meta.ns()
            ));
        } else {
            summary.push(format!(
                "{verb}restore {} {}{rename}: {} documents, {} indexes{replace}",
                p.meta.kind,
                p.meta.ns(),
                p.meta.documents,
                p.meta.indexes
            ));
        }
    }
    summary
}
