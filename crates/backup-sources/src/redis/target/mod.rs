//! The Redis restore target: `RESTORE` of every key into a live server,
//! pipelined, without restarting it.
//!
//! A restore checks the server and plans (`plan`: databases, existing
//! keys) before it writes anything (`write`); `report` holds what it did
//! or would do.

mod plan;
mod replay;
mod report;
mod send;
mod write;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use backup_core::progress::Progress;
use backup_core::reader::SnapshotReader;
use backup_core::restorer::RestoreStats;
use backup_core::target::{RecoveryPoint, RestoreOptions, RestoreReport, RestoredUnit, Target};
use backup_core::{Error, Result};
use redis::aio::MultiplexedConnection;

use self::plan::{target_err, Plan, Scan};
use self::report::{DoneReport, DryRunReport, PlannedDb, Restored};
use crate::redis::conn::{info_field, server_info, Mode, RedisUrl};
use crate::redis::manifest::SnapshotInfo;
use crate::redis::rdb::rdb_version_of_server;
use crate::redis::records::show_key;

/// Restores Redis snapshots into a running server.
pub struct RedisTarget {
    url: RedisUrl,
    last: Mutex<Option<Restored>>,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl RedisTarget {
    /// A target server.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed URL, a URL naming a database or a
    /// mode (use `--rename` to move databases).
    pub fn new(url: &str) -> Result<Self> {
        let url = RedisUrl::parse(url)?;
        if let Some(db) = url.db {
            return Err(Error::Config(format!(
                "a Redis restore target is a server, not a database: drop `/{db}` from the URL and use --rename FROM:{db} to restore database FROM into database {db}"
            )));
        }
        if url.mode != Mode::Rdb {
            return Err(Error::Config(
                "?mode= applies to backups; a restore reads the snapshot's own mode".to_owned(),
            ));
        }
        Ok(RedisTarget {
            url,
            last: Mutex::new(None),
        })
    }

    /// Refuses a server that cannot load the snapshot: too old for its
    /// RDB version, or without modules for its module auxiliary data.
    /// Returns whether the server has no module loaded while the snapshot
    /// holds module values (the selection decides), and warnings.
    async fn check_server(
        &self,
        con: &mut MultiplexedConnection,
        info: &SnapshotInfo,
    ) -> Result<(bool, Vec<String>)> {
        let server = server_info(&self.url, con)
            .await
            .map_err(Error::into_target)?;
        let version = info_field(&server, "redis_version").unwrap_or_default();
        check_rdb_version(&version, info.rdb_version, &self.url.address())?;
        let mut warnings = Vec::new();
        if info.module_types.is_empty() && info.module_aux.is_empty() {
            return Ok((false, warnings));
        }
        let modules: Vec<redis::Value> = redis::cmd("MODULE")
            .arg("LIST")
            .query_async(con)
            .await
            .unwrap_or_default();
        if !info.module_aux.is_empty() {
            if modules.is_empty() {
                return Err(Error::target_failed(format!(
                    "the snapshot holds auxiliary data of modules {} (module-wide state that Redis refuses to load without them), and Redis at {} has no module loaded: load the modules (loadmodule) and restore again; a restore into a running server cannot restore module auxiliary data, so for it export the snapshot (`backup export --format rdb`) and start a server with the modules on that file (nothing was changed)",
                    info.module_aux.join(", "),
                    self.url.address()
                )));
            }
            warnings.push(format!(
                "the auxiliary data of modules {} (module-wide state, not keys) is not restored: RESTORE cannot load it; export the snapshot (`backup export --format rdb`) and load that file at start-up to get it",
                info.module_aux.join(", ")
            ));
        }
        Ok((
            modules.is_empty() && !info.module_types.is_empty(),
            warnings,
        ))
    }

    /// Checks and plans a restore without writing: the server, the
    /// databases, and with `scan` (or when modules are missing) one read
    /// of the snapshot for existing keys and selected module values.
    async fn prepare(
        &self,
        snapshot: &SnapshotReader,
        opts: &RestoreOptions,
        scan_always: bool,
    ) -> Result<Prepared> {
        self.check_options(opts)?;
        if opts.is_point_in_time() && opts.replay.is_none() {
            return Err(Error::Config(
                "a Redis restore to a point in time replays a captured stream (backup redis follow), which the operations layer plans; this restore has no plan".to_owned(),
            ));
        }
        let info = SnapshotInfo::load(snapshot).await?;
        let mut con = self.url.connect().await.map_err(Error::into_target)?;
        let (modules_missing, warnings) = self.check_server(&mut con, &info).await?;
        let plan = plan::plan(&self.url, &mut con, info, opts).await?;
        let occupied = plan.occupied_targets();
        let conflicts_possible = !occupied.is_empty() && !opts.drop;
        // Patterns that select nothing must not flush anything.
        let selective = !plan.selection.keys.is_all();
        let found =
            if scan_always || conflicts_possible || modules_missing || selective && opts.drop {
                let found =
                    plan::scan(&self.url, snapshot, &plan, &mut con, conflicts_possible).await?;
                if modules_missing {
                    if let Some(e) = module_refusal(&found, &self.url) {
                        return Err(e);
                    }
                }
                let selected: u64 =
                    found.planned.values().sum::<u64>() + found.expired.values().sum::<u64>();
                if selective && selected == 0 && !opts.dry_run {
                    return Err(nothing_selected(&plan));
                }
                if !opts.dry_run {
                    if let Some(e) = found.conflict_error(&self.url.redacted()) {
                        return Err(e);
                    }
                }
                Some(found)
            } else {
                None
            };
        Ok(Prepared {
            con,
            plan,
            found,
            warnings,
        })
    }

    /// `FLUSHDB` of the target databases that hold keys (`--drop`).
    async fn flush(&self, con: &mut MultiplexedConnection, dbs: &[u32]) -> Result<()> {
        for &db in dbs {
            let mut pipe = redis::pipe();
            pipe.cmd("SELECT").arg(db).ignore().cmd("FLUSHDB").ignore();
            pipe.query_async::<()>(con)
                .await
                .map_err(|e| target_err(&self.url, &format!("FLUSHDB of database {db}"), e))?;
        }
        Ok(())
    }

    /// The restore report of `plan` with `details` (a dry run's or a
    /// finished restore's).
    fn report<D: Lines + serde::Serialize>(
        &self,
        plan: &Plan,
        details: &D,
    ) -> Result<RestoreReport> {
        let stats = RestoreStats {
            files: 1,
            bytes: plan.info.stream.size,
            ..RestoreStats::default()
        };
        let unit = RestoredUnit::DatabaseStreams;
        RestoreReport::with_details(
            D::DRY_RUN,
            self.describe(),
            stats,
            unit,
            details.lines(),
            details,
        )
    }
}

/// A restore checked and planned.
struct Prepared {
    con: MultiplexedConnection,
    plan: Plan,
    /// What a read of the snapshot found (dry runs, targets that hold
    /// keys, missing modules).
    found: Option<Scan>,
    warnings: Vec<String>,
}

/// The refusal of patterns that select no key (nothing was changed).
fn nothing_selected(plan: &Plan) -> Error {
    let unmatched = plan.selection.keys.unmatched();
    Error::target_failed(format!(
        "the --include/--exclude patterns select no key of the snapshot{}; patterns are Redis globs over key names (nothing was changed)",
        if unmatched.is_empty() {
            String::new()
        } else {
            format!(" ({})", unmatched.join("; "))
        }
    ))
}

/// The refusal of a restore of module values into a server without
/// modules, when the selection keeps some.
fn module_refusal(found: &Scan, url: &RedisUrl) -> Option<Error> {
    if found.totals.modules.is_empty() {
        return None;
    }
    let n: u64 = found.totals.modules.values().map(|(n, _)| n).sum();
    let detail: Vec<String> = found
        .totals
        .modules
        .iter()
        .map(|(m, (n, key))| format!("{n} of module type {m}, for example {}", show_key(key)))
        .collect();
    let example = found
        .totals
        .modules
        .values()
        .next()
        .map(|(_, k)| String::from_utf8_lossy(k).into_owned())
        .unwrap_or_default();
    Some(Error::target_failed(format!(
        "{n} keys to restore hold module values ({}) but Redis at {} has no module loaded: load the modules (loadmodule) and restore again, or leave those keys out with --exclude (for example --exclude '{example}') (nothing was changed)",
        detail.join("; "),
        url.address()
    )))
}

/// The two reports a restore makes.
trait Lines {
    /// Whether the report is a dry run's.
    const DRY_RUN: bool;
    /// One line per database.
    fn lines(&self) -> Vec<String>;
}

impl Lines for DryRunReport {
    const DRY_RUN: bool = true;
    fn lines(&self) -> Vec<String> {
        DryRunReport::lines(self)
    }
}

impl Lines for DoneReport {
    const DRY_RUN: bool = false;
    fn lines(&self) -> Vec<String> {
        DoneReport::lines(self)
    }
}

/// What a dry run would do, per source database.
fn dry_run_report(
    plan: &Plan,
    found: &Scan,
    opts: &RestoreOptions,
    warnings: Vec<String>,
) -> DryRunReport {
    let mut databases = BTreeMap::new();
    for (src, dst) in &plan.map {
        let keys_in_target = plan.before.get(dst).copied().unwrap_or(0);
        databases.insert(
            src.to_string(),
            PlannedDb {
                to: *dst,
                keys_in_target,
                would_flush: opts.drop && keys_in_target > 0,
                would_restore: found.planned.get(src).copied().unwrap_or(0),
                expired_skipped: found.expired.get(src).copied().unwrap_or(0),
                filtered_out: found.totals.filtered.get(src).copied().unwrap_or(0),
                empty_skipped: found.totals.empty.get(src).copied().unwrap_or(0),
                conflicts: found.conflicts.get(dst).map_or(0, |(n, _)| *n),
            },
        );
    }
    DryRunReport {
        mode: plan.info.mode(),
        databases,
        functions: found.totals.functions,
        replay: opts.replay.as_ref().map(|r| report::PlannedReplay {
            pieces: r.pieces.len(),
            until_offset: crate::capture::position_offset(&r.until).unwrap_or_default(),
            until_time: r.until_time,
        }),
        warnings,
    }
}

/// What a restore did, per target database.
fn done_report(
    plan: &Plan,
    restored: &Restored,
    replay: Option<replay::ReplayReport>,
    warnings: Vec<String>,
) -> DoneReport {
    DoneReport {
        replay,
        mode: plan.info.mode(),
        keys_restored: restored.dbs.values().map(|r| r.restored).sum(),
        expired_skipped: restored.dbs.values().map(|r| r.expired_skipped).sum(),
        empty_skipped: restored.dbs.values().map(|r| r.empty_skipped).sum(),
        warnings,
        databases: restored
            .dbs
            .iter()
            .map(|(db, r)| (db.to_string(), *r))
            .collect(),
    }
}

#[async_trait]
impl Target for RedisTarget {
    fn describe(&self) -> String {
        self.url.redacted()
    }

    fn check_options(&self, opts: &RestoreOptions) -> Result<()> {
        opts.refuse_physical("Redis")?;
        opts.refuse_file_owners("Redis")?;
        if opts.skip_missing_roles {
            return Err(Error::Config(
                "--skip-missing-roles applies to PostgreSQL restores".to_owned(),
            ));
        }
        if let Some(p) = opts
            .point
            .as_ref()
            .filter(|p| !matches!(p, RecoveryPoint::ReplOffset(_)))
        {
            return Err(Error::Config(format!(
                "{} is a {} target, not a Redis one; a Redis restore takes --at TIME or --at-offset N",
                crate::capture::point_flag(p),
                crate::capture::point_owner(p)
            )));
        }
        if opts.target_action.is_some() || opts.timeline.is_some() {
            return Err(Error::Config(
                "--target-action and --timeline apply to PostgreSQL point-in-time restores"
                    .to_owned(),
            ));
        }
        plan::renames(opts)?;
        Ok(())
    }

    async fn replaces_data(&self, opts: &RestoreOptions) -> Result<bool> {
        if !opts.drop {
            return Ok(false);
        }
        let mut con = self.url.connect().await.map_err(Error::into_target)?;
        let info: String = redis::cmd("INFO")
            .arg("keyspace")
            .query_async(&mut con)
            .await
            .map_err(|e| target_err(&self.url, "INFO keyspace", e))?;
        Ok(crate::redis::source::keyspace(&info)
            .values()
            .any(|k| *k > 0))
    }

    async fn check_restored(&self, snapshot: &SnapshotReader) -> Result<Vec<String>> {
        let info = SnapshotInfo::load(snapshot).await?;
        let last = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let Some(last) = last else {
            return Ok(vec![
                "nothing was restored to this target by this process".to_owned()
            ]);
        };
        if last.replayed {
            // The captured stream changed the keys after the base: the
            // manifest's counts are the base's.
            return Ok(Vec::new());
        }
        let mut con = self.url.connect().await.map_err(Error::into_target)?;
        let dbs: BTreeSet<u32> = last.dbs.keys().copied().collect();
        let sizes = plan::dbsizes(&self.url, &mut con, &dbs).await?;
        let mut diffs = Vec::new();
        for (db, r) in &last.dbs {
            let want_max = r.before + r.restored;
            let want_min = want_max - r.with_ttl;
            let got = sizes.get(db).copied().unwrap_or(0);
            if got < want_min || got > want_max {
                diffs.push(format!(
                    "database {db}: {got} keys, expected {want_max} ({} before the restore + {} restored)",
                    r.before, r.restored
                ));
            }
            let manifest = info.databases.get(&r.source_db).copied().unwrap_or(0);
            if r.restored + r.expired_skipped + r.filtered != manifest {
                diffs.push(format!(
                    "database {}: the manifest lists {manifest} keys, the restore accounted for {}",
                    r.source_db,
                    r.restored + r.expired_skipped + r.filtered
                ));
            }
        }
        Ok(diffs)
    }

    async fn discard(&self) -> Result<()> {
        let last = self
            .last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        let Some(last) = last else { return Ok(()) };
        let mut con = self.url.connect().await.map_err(Error::into_target)?;
        for (db, r) in &last.dbs {
            if r.before > 0 {
                return Err(Error::target_failed(format!(
                    "database {db} of {} held keys before the restore, so the restored keys were left in place",
                    self.url.redacted()
                )));
            }
            let mut pipe = redis::pipe();
            pipe.cmd("SELECT").arg(*db).ignore().cmd("FLUSHDB").ignore();
            pipe.query_async::<()>(&mut con)
                .await
                .map_err(|e| target_err(&self.url, &format!("FLUSHDB of database {db}"), e))?;
        }
        Ok(())
    }

    async fn check(&self, snapshot: &SnapshotReader, opts: &RestoreOptions) -> Result<()> {
        self.prepare(snapshot, opts, false).await.map(|_| ())
    }

    async fn restore(
        &self,
        snapshot: &SnapshotReader,
        opts: &RestoreOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<RestoreReport> {
        // Everything is checked before the first write: the server, the
        // databases, module values, existing keys (unless --drop).
        let Prepared {
            mut con,
            plan,
            found,
            warnings,
        } = self.prepare(snapshot, opts, opts.dry_run).await?;
        progress.set_total(plan.info.stream.size);
        let mut warnings = warnings;
        if opts.dry_run {
            let found = found.unwrap_or_default();
            warnings.extend(plan.selection.keys.unmatched());
            return self.report(&plan, &dry_run_report(&plan, &found, opts, warnings));
        }
        if opts.drop {
            self.flush(&mut con, &plan.occupied_targets()).await?;
        }
        let mut restored = write::write(&self.url, snapshot, &plan, opts, &progress).await?;
        progress.set_phase("check");
        let result = write::verify_counts(&self.url, &mut con, &plan, &restored).await;
        restored.replayed = opts.replay.is_some();
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(restored.clone());
        result?;
        let replayed = match &opts.replay {
            Some(r) => {
                progress.set_phase("replay");
                let held = std::mem::take(&mut restored.held);
                Some(replay::replay(&self.url, snapshot, r, &plan, opts, &mut con, &held).await?)
            }
            None => None,
        };
        let selected: u64 = restored
            .dbs
            .values()
            .map(|r| r.restored + r.expired_skipped)
            .sum();
        if !plan.selection.keys.is_all() && selected == 0 {
            return Err(nothing_selected(&plan));
        }
        warnings.extend(plan.selection.keys.unmatched());
        self.report(&plan, &done_report(&plan, &restored, replayed, warnings))
    }
}

/// Refuses a target whose Redis version reads only older RDB versions
/// than the snapshot's (its `RESTORE` would reject every payload).
fn check_rdb_version(server_version: &str, snapshot_rdb: u32, address: &str) -> Result<()> {
    match rdb_version_of_server(server_version) {
        Some(target_rdb) if target_rdb < snapshot_rdb => Err(Error::target_failed(format!(
            "the snapshot holds RDB version {snapshot_rdb} but Redis {server_version} at {address} reads versions up to {target_rdb}: restore into a Redis server at least as new as the one backed up"
        ))),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn older_targets_are_refused() {
        // Redis 7.2 writes RDB 11, which 7.0 (RDB 10) cannot read.
        let err = check_rdb_version("7.0.15", 11, "127.0.0.1:6379").unwrap_err();
        let msg = err.to_string();
        assert!(matches!(err, Error::Target { .. }), "{err:?}");
        assert!(msg.contains("RDB version 11"), "{msg}");
        assert!(
            msg.contains("Redis 7.0.15 at 127.0.0.1:6379 reads versions up to 10"),
            "{msg}"
        );
        assert!(check_rdb_version("6.2.14", 10, "h:1").is_err());
        assert!(check_rdb_version("7.2.4", 12, "h:1").is_err());
        // Same or newer servers, and unknown versions, pass.
        check_rdb_version("7.0.15", 10, "h:1").unwrap();
        check_rdb_version("7.2.4", 11, "h:1").unwrap();
        check_rdb_version("7.4.0", 12, "h:1").unwrap();
        check_rdb_version("6.0.9", 9, "h:1").unwrap();
        check_rdb_version("", 12, "h:1").unwrap();
    }

    #[test]
    fn busykey_and_old_payloads_get_clear_messages() {
        let target = RedisTarget::new("redis://:pw@127.0.0.1:6379").unwrap();
        let busy = redis::RedisError::from((
            redis::ErrorKind::Extension,
            "An error was signalled by the server",
            "BUSYKEY Target key name already exists.".to_owned(),
        ));
        let msg = send::restore_error(&target.url, busy, "`k`", None).to_string();
        assert!(msg.contains("BUSYKEY"), "{msg}");
        assert!(msg.contains("`k`"), "{msg}");
        assert!(!msg.contains("pw"), "{msg}");
        let old = redis::RedisError::from((
            redis::ErrorKind::Extension,
            "An error was signalled by the server",
            "ERR DUMP payload version or checksum are wrong".to_owned(),
        ));
        let msg = send::restore_error(&target.url, old, "`k`", None).to_string();
        assert!(msg.contains("older than the RDB version"), "{msg}");
    }
}
