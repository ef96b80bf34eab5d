//! What a physical restore says: the plan before anything is written,
//! where the recovery settings are, what a server started on the result
//! did, how to start it otherwise, and, when recovery failed to reach a
//! target, the older base backups to try.

use std::path::Path;

use backup_core::reader::SnapshotReader;
use backup_core::target::{RecoveryPoint, RestoreOptions};

use super::super::meta::PhysicalMeta;
use super::super::server::StartReport;
use super::restore::Plan;

/// What a restore will do, said before it writes: the cluster and its
/// base backup, the tablespaces' places, the backup manifest, the
/// point-in-time target and the WAL that reaches it, and a missing server
/// program.
pub(super) fn plan_lines(plan: &Plan, opts: &RestoreOptions) -> Vec<String> {
    let (meta, manifest) = (&plan.meta, &plan.manifest);
    let mut lines = vec![format!(
        "PostgreSQL {} cluster {}, base backup from {} to {} (timeline {})",
        meta.server_version, meta.system_identifier, meta.start_lsn, meta.stop_lsn, meta.timeline
    )];
    for p in &plan.places {
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
    if let Some(c) = &plan.coverage {
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
    if let Err(m) = &plan.server {
        lines.push(format!("warning: {m}"));
    }
    lines
}

/// Where the recovery settings of a point-in-time restore are, with the
/// key file `restore_command` reads (`key`), if any.
pub(super) fn recovery_settings_line(key: Option<&Path>) -> String {
    match key {
        Some(k) => format!(
            "recovery settings are in postgresql.auto.conf: restore_command fetches WAL from this repository with the key file {} (readable only by the data directory's owner); when recovery ends, recovery_end_command removes the key file and these settings",
            k.display()
        ),
        None => "recovery settings are in postgresql.auto.conf: restore_command fetches WAL from this repository; when recovery ends, recovery_end_command removes these settings".to_owned(),
    }
}

/// What the temporary server started on `port` did: a target moved to
/// the last record, the target reached, how long it took (until ready,
/// or until it stopped at its target when it `exits` there) and what its
/// log says.
pub(super) fn started_lines(
    started: &StartReport,
    meta: &PhysicalMeta,
    port: u16,
    exits: bool,
) -> Vec<String> {
    let mut lines = Vec::new();
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
    lines
}

/// Where a server that stopped at its target leaves the data directory,
/// and what its next start does (`action`: `pause` or `shutdown`).
pub(super) fn at_target_line(data_dir: &Path, action: &str) -> String {
    format!(
        "the data directory is at the target and still in recovery (recovery.signal): `pg_ctl -D {} start` replays nothing more and {}; the key file stays until recovery ends",
        data_dir.display(),
        if action == "pause" {
            "pauses there (with hot_standby = on, the default): check the data, then `SELECT pg_wal_replay_resume()` ends recovery and promotes"
        } else {
            "shuts down again: set recovery_target_action = 'promote' in postgresql.auto.conf to end recovery at the next start"
        }
    )
}

/// How to start the restored cluster (without `--start`), and what the
/// server then does for a point-in-time restore.
pub(super) fn start_hint(data_dir: &Path, point_in_time: bool, opts: &RestoreOptions) -> String {
    if point_in_time {
        format!(
        "start it with: pg_ctl -D {} start; the server fetches the captured WAL and {}, then {}",
        data_dir.display(),
        describe_target(opts),
        match opts.target_action.as_deref().unwrap_or("promote") {
            "pause" => "pauses: check the data (read-only queries), then `SELECT pg_wal_replay_resume()` ends recovery and promotes (or `pg_ctl promote`)",
            "shutdown" => "shuts down at the target: set recovery_target_action = 'promote' in postgresql.auto.conf, or remove recovery.signal, to end recovery at the next start",
            _ => "ends recovery and promotes (accepts writes, on a new timeline)",
        }
    )
    } else {
        format!(
        "start it with: pg_ctl -D {} start (it replays the WAL of the base backup and comes up consistent)",
        data_dir.display()
    )
    }
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

/// For a target that may lie before the base backup `meta` (of the
/// snapshot `snapshot`) restores: the older base backups of the cluster to
/// name instead.
pub(super) async fn older_bases(
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
