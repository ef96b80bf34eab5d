//! Writing a planned restore: `FUNCTION RESTORE`, then `RESTORE` of every
//! selected key, encoded on the thread that reads the snapshot and sent
//! back to back on a connection of its own (`send`), then the count
//! checks.

use std::collections::BTreeSet;
use std::sync::Arc;

use backup_core::progress::Progress;
use backup_core::reader::SnapshotReader;
use backup_core::target::RestoreOptions;
use backup_core::{Error, Result};
use redis::aio::MultiplexedConnection;

use super::plan::{dbsizes, Plan};
use super::report::{DbResult, Restored};
use super::send::{send, Encoder};
use crate::redis::conn::RedisUrl;
use crate::redis::records::{read_records_with, Totals};

/// Restores every selected key; returns the per-database counts.
///
/// # Errors
///
/// The first error of the server (keys restored before it are left in
/// place, and the error says so), or a stream that does not match its
/// manifest.
pub(super) async fn write(
    url: &RedisUrl,
    snapshot: &SnapshotReader,
    plan: &Plan,
    opts: &RestoreOptions,
    progress: &Arc<dyn Progress>,
) -> Result<Restored> {
    let (tx, rx) = Encoder::channel();
    let encoder = Encoder::new(
        tx,
        plan.map.clone(),
        starting_counts(plan, opts),
        opts.drop,
        opts.replay.is_some().then(super::replay::hold_limit),
        opts.includes.is_empty(),
    );
    let handle = read_records_with(
        snapshot,
        &plan.info.stream,
        plan.info.keys_mode,
        plan.selection.clone(),
        encoder,
    );
    let sent = send(url, &rx, opts.drop, progress).await;
    // The reading thread stops at its next chunk when the sending failed.
    rx.close();
    let read = handle
        .await
        .map_err(|e| Error::target_caused("reading the snapshot failed", e));
    if let Err(f) = sent {
        return Err(Error::target_failed(format!(
            "{f}; keys restored before the failure are left in place (restore again with --drop to start over)",
            f = match f {
                Error::Target { message, .. } => message,
                other => other.to_string(),
            }
        )));
    }
    let (totals, encoder) = read??;
    let mut restored = encoder.restored;
    for r in restored.dbs.values_mut() {
        r.filtered = totals.filtered.get(&r.source_db).copied().unwrap_or(0);
        r.empty_skipped = totals.empty.get(&r.source_db).copied().unwrap_or(0);
    }
    check_stream_counts(plan, &totals)?;
    Ok(restored)
}

/// Per target database, the counts before anything is restored.
fn starting_counts(plan: &Plan, opts: &RestoreOptions) -> Restored {
    let mut restored = Restored::default();
    for (src, dst) in &plan.map {
        restored.dbs.insert(
            *dst,
            DbResult {
                source_db: *src,
                before: if opts.drop {
                    0
                } else {
                    plan.before.get(dst).copied().unwrap_or(0)
                },
                ..DbResult::default()
            },
        );
    }
    restored
}

/// Keys of the stream, per database, must match the manifest.
fn check_stream_counts(plan: &Plan, totals: &Totals) -> Result<()> {
    for (db, n) in &plan.info.databases {
        let seen = totals.seen.get(db).copied().unwrap_or(0);
        if seen != *n {
            return Err(Error::target_failed(format!(
                "the snapshot's stream holds {seen} keys of database {db} but its manifest lists {n}; run `backup verify --read-data`"
            )));
        }
    }
    Ok(())
}

/// Checks the key counts of the target databases after the restore.
///
/// # Errors
///
/// A count that differs from what was there before plus what was restored
/// (another client wrote during the restore), or a database whose keys do
/// not add up to the manifest's.
pub(super) async fn verify_counts(
    url: &RedisUrl,
    con: &mut MultiplexedConnection,
    plan: &Plan,
    restored: &Restored,
) -> Result<()> {
    let targets: BTreeSet<u32> = restored.dbs.keys().copied().collect();
    let sizes = dbsizes(url, con, &targets).await?;
    let mut problems = Vec::new();
    for (db, r) in &restored.dbs {
        let got = sizes.get(db).copied().unwrap_or(0);
        let want = r.before + r.restored;
        // Keys with a TTL may expire between the restore and this check.
        if got > want || got + r.with_ttl < want {
            problems.push(format!(
                "database {db} holds {got} keys, expected {want} ({} before + {} restored)",
                r.before, r.restored
            ));
        }
        let manifest = plan.info.databases.get(&r.source_db).copied().unwrap_or(0);
        if r.restored + r.expired_skipped + r.filtered != manifest {
            problems.push(format!(
                "database {}: the manifest lists {manifest} keys, {} were restored, {} skipped as expired, {} left out by --include/--exclude",
                r.source_db, r.restored, r.expired_skipped, r.filtered
            ));
        }
    }
    if problems.is_empty() {
        Ok(())
    } else {
        Err(Error::target_failed(format!(
            "key counts after the restore do not match: {} (did another client write to the server during the restore?)",
            problems.join("; ")
        )))
    }
}
