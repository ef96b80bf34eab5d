//! Writing a planned restore: `FUNCTION RESTORE`, then `RESTORE` of every
//! selected key in pipelines kept in flight, then the count checks.

use std::collections::BTreeSet;
use std::sync::Arc;

use backup_core::progress::Progress;
use backup_core::reader::SnapshotReader;
use backup_core::target::RestoreOptions;
use backup_core::{Error, Result};
use futures::stream::{FuturesUnordered, StreamExt};
use redis::aio::MultiplexedConnection;

use super::plan::{dbsizes, now_ms, target_err, Plan};
use super::report::{DbResult, Restored};
use crate::redis::conn::{retryable, RedisUrl};
use crate::redis::records::{read_records, show_key, Batch, Record, Totals};

/// Restore pipelines in flight: enough queued work (up to 16 × 1000 keys)
/// that the server does not wait for the next batch while this process
/// is descheduled.
const PIPELINES_IN_FLIGHT: usize = 16;

/// One batch of keys as a `RESTORE` pipeline.
struct Pipeline {
    pipe: redis::Pipeline,
    bytes: u64,
    /// Per `RESTORE`, in order: the key (for messages) and its value type.
    keys: Vec<(String, u8)>,
}

impl Pipeline {
    /// Sends the pipeline; a refused `RESTORE` is returned with its key
    /// and value type.
    async fn send(
        self,
        con: &mut MultiplexedConnection,
    ) -> std::result::Result<(), (redis::RedisError, String, Option<u8>)> {
        let replies: Vec<redis::Value> = self
            .pipe
            .query_async(con)
            .await
            .map_err(|e| (e, String::new(), None))?;
        for (reply, (key, t)) in replies.into_iter().zip(self.keys) {
            if let redis::Value::ServerError(e) = reply {
                return Err((redis::RedisError::from(e), key, Some(t)));
            }
        }
        Ok(())
    }
}

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
    con: MultiplexedConnection,
    opts: &RestoreOptions,
    progress: &Arc<dyn Progress>,
) -> Result<Restored> {
    let (rx, handle) = read_records(
        snapshot,
        &plan.info.stream,
        plan.info.keys_mode,
        plan.selection.clone(),
    );
    let mut restored = starting_counts(plan, opts);
    let mut inflight = FuturesUnordered::new();
    let mut failure: Option<Error> = None;
    let restore_functions = opts.includes.is_empty();
    'outer: while let Ok(batch) = rx.recv().await {
        let recs = match batch {
            Batch::Functions(p) => {
                if restore_functions {
                    if let Err(e) = functions(url, &con, p, opts).await {
                        failure = Some(e);
                        break 'outer;
                    }
                }
                continue;
            }
            Batch::Keys(recs) => recs,
        };
        let hold = opts.replay.is_some().then(super::replay::hold_limit);
        let Some(batch) = pipeline(plan, &recs, &mut restored, opts.drop, hold) else {
            continue;
        };
        let mut c = con.clone();
        let p = Arc::clone(progress);
        inflight.push(async move {
            let bytes = batch.bytes;
            let r = batch.send(&mut c).await;
            p.add_bytes(bytes);
            r
        });
        while inflight.len() >= PIPELINES_IN_FLIGHT {
            if let Some(Err((e, k, t))) = inflight.next().await {
                failure = Some(restore_error(url, e, &k, t));
                break 'outer;
            }
        }
    }
    while let Some(r) = inflight.next().await {
        if let Err((e, k, t)) = r {
            failure.get_or_insert_with(|| restore_error(url, e, &k, t));
        }
    }
    rx.close();
    let totals = handle
        .await
        .map_err(|e| Error::target_caused("reading the snapshot failed", e));
    if let Some(f) = failure {
        return Err(Error::target_failed(format!(
            "{f}; keys restored before the failure are left in place (restore again with --drop to start over)",
            f = match f {
                Error::Target { message, .. } => message,
                other => other.to_string(),
            }
        )));
    }
    let totals = totals??;
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

/// `FUNCTION RESTORE` of the snapshot's function libraries.
async fn functions(
    url: &RedisUrl,
    con: &MultiplexedConnection,
    payload: Vec<u8>,
    opts: &RestoreOptions,
) -> Result<()> {
    let mut c = con.clone();
    let mut cmd = redis::cmd("FUNCTION");
    cmd.arg("RESTORE").arg(payload);
    if opts.drop {
        cmd.arg("REPLACE");
    }
    cmd.query_async::<()>(&mut c).await.map_err(|e| {
        let msg = format!(
            "restoring the snapshot's functions into {}: {e}{}",
            url.address(),
            if opts.drop {
                ""
            } else {
                " (with --drop, libraries of the same name are replaced)"
            }
        );
        let again = retryable(&e);
        Error::target_explained(msg, e, again)
    })
}

/// The `RESTORE` pipeline of one batch, counting what it restores and the
/// keys skipped as expired; `None` when nothing in it is restored.
///
/// With `hold` (a point-in-time restore, whose replay may still change
/// them), keys that expire before that time are restored with the
/// replay's held expiry instead, and noted in `restored.held`.
fn pipeline(
    plan: &Plan,
    recs: &[Record],
    restored: &mut Restored,
    replace: bool,
    hold: Option<i64>,
) -> Option<Pipeline> {
    let now = now_ms();
    let mut pipe = redis::pipe();
    pipe.ignore_errors();
    let mut cur = None;
    let mut bytes = 0u64;
    let mut keys = Vec::new();
    for r in recs {
        let to = plan.target_of(r);
        let Some(entry) = restored.dbs.get_mut(&to) else {
            continue;
        };
        if let (Some(limit), Some(e)) = (hold, r.expire_ms) {
            if e <= limit {
                if cur != Some(to) {
                    pipe.cmd("SELECT").arg(to).ignore();
                    cur = Some(to);
                }
                restore_cmd(&mut pipe, r, Some(super::replay::HELD), replace);
                bytes += r.payload.len() as u64;
                keys.push((show_key(&r.key), r.rdb_type));
                entry.restored += 1;
                entry.with_ttl += 1;
                restored.held.push((to, r.key.clone(), e));
                continue;
            }
        }
        if r.expire_ms.is_some_and(|e| e <= now) {
            entry.expired_skipped += 1;
            continue;
        }
        if cur != Some(to) {
            pipe.cmd("SELECT").arg(to).ignore();
            cur = Some(to);
        }
        restore_cmd(&mut pipe, r, r.expire_ms, replace);
        bytes += r.payload.len() as u64;
        keys.push((show_key(&r.key), r.rdb_type));
        entry.restored += 1;
        if r.expire_ms.is_some() {
            entry.with_ttl += 1;
        }
    }
    (!keys.is_empty()).then_some(Pipeline { pipe, bytes, keys })
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

/// A refused `RESTORE`, explained: `key` is the key the server refused
/// (empty when the whole pipeline failed), `rdb_type` its value type.
pub(super) fn restore_error(
    url: &RedisUrl,
    e: redis::RedisError,
    key: &str,
    rdb_type: Option<u8>,
) -> Error {
    let text = e.to_string();
    let which = if key.is_empty() {
        "a key".to_owned()
    } else {
        format!("key {key}")
    };
    let msg = if text.contains("BUSYKEY") {
        format!(
            "{which} of the snapshot already exists in {} (BUSYKEY): another client created it after the check",
            url.redacted()
        )
    } else if text.contains("payload version or checksum") {
        format!(
            "Redis at {} refused the DUMP payload of {which} ({text}): the server is older than the RDB version of the snapshot",
            url.address()
        )
    } else if text.contains("Bad data format") {
        let cause = match rdb_type {
            Some(t) if crate::redis::rdb::types::kind(t) == "module" => format!(
                "a {} value, whose module is not loaded",
                crate::redis::rdb::types::kind(t)
            ),
            Some(t) => format!(
                "a {} value in RDB encoding {t}, which this server version cannot read (it appeared in RDB version {})",
                crate::redis::rdb::types::kind(t),
                crate::redis::rdb::types::min_version(t)
            ),
            None => "a value this server cannot read".to_owned(),
        };
        format!(
            "Redis at {} could not load {which} ({text}): {cause}; leave it out with --exclude or restore into a newer server",
            url.address()
        )
    } else {
        return target_err(url, &format!("RESTORE of {which}"), e);
    };
    Error::target_explained(msg, e, false)
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

/// `RESTORE` of `r` with the absolute expiry `expire_ms`.
fn restore_cmd(pipe: &mut redis::Pipeline, r: &Record, expire_ms: Option<i64>, replace: bool) {
    let c = pipe.cmd("RESTORE").arg(&r.key);
    match expire_ms {
        Some(ms) => c.arg(ms).arg(&r.payload).arg("ABSTTL"),
        None => c.arg(0).arg(&r.payload),
    };
    if replace {
        c.arg("REPLACE");
    }
    if let Some(f) = r.freq {
        c.arg("FREQ").arg(f);
    } else if let Some(i) = r.idle {
        c.arg("IDLETIME").arg(i);
    }
}
