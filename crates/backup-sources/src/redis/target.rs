//! The Redis restore target: `RESTORE` of every key into a live server,
//! pipelined, without restarting it.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use backup_core::progress::Progress;
use backup_core::reader::SnapshotReader;
use backup_core::restorer::RestoreStats;
use backup_core::target::{RestoreOptions, RestoreReport, RestoredUnit, Target};
use backup_core::tree::{Node, NodeKind};
use backup_core::{Error, Result};
use futures::stream::{FuturesUnordered, StreamExt};
use redis::aio::MultiplexedConnection;

use super::conn::{Mode, RedisUrl};
use super::glob::KeyFilter;
use super::rdb::rdb_version_of_server;
use super::records::{read_records, show_key, Batch, Record, Selection, Totals};
use super::{info_field, server_info, KEYS_STREAM, RDB_STREAM};

/// Restore pipelines in flight: enough queued work (up to 16 × 1000 keys)
/// that the server does not wait for the next batch while this process
/// is descheduled.
const PIPELINES_IN_FLIGHT: usize = 16;
/// Keys checked per `EXISTS` pipeline.
const EXISTS_BATCH: usize = 1000;

/// What a Redis snapshot's manifest says.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotInfo {
    pub(crate) keys_mode: bool,
    pub(crate) rdb_version: u32,
    /// Keys per source database.
    pub(crate) databases: BTreeMap<u32, u64>,
    pub(crate) module_types: Vec<String>,
    /// Databases the backup was narrowed to (`redis://host/N` in RDB
    /// mode).
    pub(crate) selected: Option<Vec<u32>>,
    pub(crate) stream: Node,
}

impl SnapshotInfo {
    /// `keys` or `rdb`.
    pub(crate) fn mode(&self) -> &'static str {
        if self.keys_mode {
            "keys"
        } else {
            "rdb"
        }
    }

    /// Reads the manifest and finds the stream.
    pub(crate) async fn load(snapshot: &SnapshotReader) -> Result<Self> {
        let s = snapshot.snapshot();
        if s.source.kind != "redis" {
            return Err(Error::Config(format!(
                "snapshot {} is a {} snapshot, not a Redis one",
                snapshot.id().short(),
                s.source.kind
            )));
        }
        let m = &s.metadata;
        let keys_mode = m["mode"].as_str() == Some("keys");
        let name = if keys_mode { KEYS_STREAM } else { RDB_STREAM };
        let stream = snapshot
            .root()
            .await?
            .get(name)
            .filter(|n| n.kind == NodeKind::Stream)
            .cloned()
            .ok_or_else(|| {
                snapshot.damaged(format!("the Redis snapshot has no `{name}` stream"))
            })?;
        let databases = m["databases"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.parse().ok()?, v["keys"].as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        let module_types = m["module_types"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let selected = m["selected_databases"].as_array().map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64().and_then(|d| u32::try_from(d).ok()))
                .collect()
        });
        Ok(SnapshotInfo {
            keys_mode,
            rdb_version: m["rdb_version"].as_u64().unwrap_or(0) as u32,
            databases,
            module_types,
            selected,
            stream,
        })
    }
}

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

/// What the last restore wrote, for `check_restored` and `discard`.
#[derive(Debug, Clone, Default)]
struct Restored {
    /// Per target database: keys before, keys restored, restored keys
    /// with an expiry.
    dbs: BTreeMap<u32, DbResult>,
}

#[derive(Debug, Clone, Copy, Default, serde::Serialize)]
struct DbResult {
    source_db: u32,
    before: u64,
    restored: u64,
    with_ttl: u64,
    expired_skipped: u64,
    filtered: u64,
}

/// A dry run's report: per source database what would happen.
#[derive(Debug, serde::Serialize)]
struct DryRunReport {
    mode: &'static str,
    databases: BTreeMap<String, PlannedDb>,
    functions: u64,
}

#[derive(Debug, serde::Serialize)]
struct PlannedDb {
    to: u32,
    keys_in_target: u64,
    would_flush: bool,
    would_restore: u64,
    expired_skipped: u64,
    filtered_out: u64,
}

impl DryRunReport {
    fn lines(&self) -> Vec<String> {
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
struct DoneReport {
    mode: &'static str,
    keys_restored: u64,
    expired_skipped: u64,
    databases: BTreeMap<String, DbResult>,
}

impl DoneReport {
    fn lines(&self) -> Vec<String> {
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

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
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

    fn renames(opts: &RestoreOptions) -> Result<BTreeMap<u32, u32>> {
        let mut map = BTreeMap::new();
        for r in &opts.renames {
            let parsed = r.split_once(':').and_then(|(a, b)| {
                Some((a.trim().parse::<u32>().ok()?, b.trim().parse::<u32>().ok()?))
            });
            let Some((from, to)) = parsed else {
                return Err(Error::Config(format!(
                    "--rename {r}: Redis databases are renamed by number, FROM:TO (for example 0:3)"
                )));
            };
            if map.insert(from, to).is_some() {
                return Err(Error::Config(format!(
                    "--rename gives database {from} twice"
                )));
            }
        }
        Ok(map)
    }

    async fn dbsizes(
        &self,
        con: &mut MultiplexedConnection,
        dbs: &BTreeSet<u32>,
    ) -> Result<BTreeMap<u32, u64>> {
        let mut out = BTreeMap::new();
        for &db in dbs {
            let mut pipe = redis::pipe();
            pipe.cmd("SELECT").arg(db).ignore().cmd("DBSIZE");
            let (n,): (u64,) = pipe.query_async(con).await.map_err(|e| {
                if e.to_string().contains("out of range") {
                    Error::target_failed(format!(
                        "Redis at {} has no database {db} (its `databases` setting is lower); choose another with --rename",
                        self.url.address()
                    ))
                } else {
                    self.url.error(&format!("DBSIZE of database {db}"), &e)
                }
            })?;
            out.insert(db, n);
        }
        Ok(out)
    }

    fn err(&self, doing: &str, e: &redis::RedisError) -> Error {
        self.url.error(doing, e).into_target()
    }
}

/// The plan of a restore.
struct Plan {
    info: SnapshotInfo,
    /// Source database to target database.
    map: BTreeMap<u32, u32>,
    selection: Selection,
    /// Keys per target database before the restore.
    before: BTreeMap<u32, u64>,
}

#[async_trait]
impl Target for RedisTarget {
    fn describe(&self) -> String {
        self.url.redacted()
    }

    fn check_options(&self, opts: &RestoreOptions) -> Result<()> {
        if opts.at.is_some() {
            return Err(Error::Config(
                "--at (point-in-time restore) is not available for Redis; a Redis snapshot restores the data as it was captured".to_owned(),
            ));
        }
        Self::renames(opts)?;
        Ok(())
    }

    async fn replaces_data(&self, opts: &RestoreOptions) -> Result<bool> {
        if !opts.drop {
            return Ok(false);
        }
        let mut con = self.url.connect().await.map_err(to_target)?;
        let info: String = redis::cmd("INFO")
            .arg("keyspace")
            .query_async(&mut con)
            .await
            .map_err(|e| self.err("INFO keyspace", &e))?;
        Ok(super::source::keyspace(&info).values().any(|k| *k > 0))
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
        let mut con = self.url.connect().await.map_err(to_target)?;
        let dbs: BTreeSet<u32> = last.dbs.keys().copied().collect();
        let sizes = self.dbsizes(&mut con, &dbs).await?;
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
        let mut con = self.url.connect().await.map_err(to_target)?;
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
                .map_err(|e| self.err(&format!("FLUSHDB of database {db}"), &e))?;
        }
        Ok(())
    }

    async fn restore(
        &self,
        snapshot: &SnapshotReader,
        opts: &RestoreOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<RestoreReport> {
        self.check_options(opts)?;
        let info = SnapshotInfo::load(snapshot).await?;
        let mut con = self.url.connect().await.map_err(to_target)?;
        let server = server_info(&self.url, &mut con).await.map_err(to_target)?;
        let version = info_field(&server, "redis_version").unwrap_or_default();
        check_rdb_version(&version, info.rdb_version, &self.url.address())?;
        if !info.module_types.is_empty() {
            let modules: Vec<redis::Value> = redis::cmd("MODULE")
                .arg("LIST")
                .query_async(&mut con)
                .await
                .unwrap_or_default();
            if modules.is_empty() {
                return Err(Error::target_failed(format!(
                    "the snapshot holds values of module types {} but Redis at {} has no module loaded: load the modules (loadmodule) and restore again, or leave those keys out with --exclude",
                    info.module_types.join(", "),
                    self.url.address()
                )));
            }
        }
        let plan = self.plan(&mut con, info, opts).await?;
        progress.set_total(plan.info.stream.size);

        // Existing keys: an error unless --drop.
        let occupied: Vec<u32> = plan
            .before
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(d, _)| *d)
            .collect();
        let mut dry_totals = None;
        if (!occupied.is_empty() && !opts.drop) || opts.dry_run {
            let (conflicts, totals, expired, planned) =
                self.scan(snapshot, &plan, &mut con, !opts.drop).await?;
            if !conflicts.is_empty() && !opts.drop {
                let n: u64 = conflicts.values().map(|(n, _)| n).sum();
                let detail: Vec<String> = conflicts
                    .iter()
                    .map(|(db, (n, ex))| format!("database {db}: {n}, for example {ex}"))
                    .collect();
                return Err(Error::target_failed(format!(
                    "{n} keys of the snapshot already exist in {} ({}): nothing was changed; restore with --drop to replace the restored databases (after a safety backup), or into other databases with --rename FROM:TO",
                    self.url.redacted(),
                    detail.join("; ")
                )));
            }
            dry_totals = Some((totals, expired, planned));
        }
        if opts.dry_run {
            let (totals, expired, planned) = dry_totals.unwrap_or_default();
            let mut databases = BTreeMap::new();
            for (src, dst) in &plan.map {
                let keys_in_target = plan.before.get(dst).copied().unwrap_or(0);
                databases.insert(
                    src.to_string(),
                    PlannedDb {
                        to: *dst,
                        keys_in_target,
                        would_flush: opts.drop && keys_in_target > 0,
                        would_restore: planned.get(src).copied().unwrap_or(0),
                        expired_skipped: expired.get(src).copied().unwrap_or(0),
                        filtered_out: totals.filtered.get(src).copied().unwrap_or(0),
                    },
                );
            }
            let report = DryRunReport {
                mode: plan.info.mode(),
                databases,
                functions: totals.functions,
            };
            return Ok(RestoreReport {
                dry_run: true,
                target: self.describe(),
                stats: RestoreStats {
                    files: 1,
                    bytes: plan.info.stream.size,
                    ..RestoreStats::default()
                },
                unit: RestoredUnit::DatabaseStreams,
                lines: report.lines(),
                details: RestoreReport::details_of(&report)?,
            });
        }

        if opts.drop {
            for (&db, &n) in &plan.before {
                if n > 0 {
                    let mut pipe = redis::pipe();
                    pipe.cmd("SELECT").arg(db).ignore().cmd("FLUSHDB").ignore();
                    pipe.query_async::<()>(&mut con)
                        .await
                        .map_err(|e| self.err(&format!("FLUSHDB of database {db}"), &e))?;
                }
            }
        }
        let restored = self
            .write(snapshot, &plan, con.clone(), opts, &progress)
            .await?;
        progress.set_phase("check");
        let result = self.verify_counts(&mut con, &plan, &restored, opts).await;
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(restored.clone());
        result?;
        let report = DoneReport {
            mode: plan.info.mode(),
            keys_restored: restored.dbs.values().map(|r| r.restored).sum(),
            expired_skipped: restored.dbs.values().map(|r| r.expired_skipped).sum(),
            databases: restored
                .dbs
                .iter()
                .map(|(db, r)| (db.to_string(), *r))
                .collect(),
        };
        Ok(RestoreReport {
            dry_run: false,
            target: self.describe(),
            stats: RestoreStats {
                files: 1,
                bytes: plan.info.stream.size,
                ..RestoreStats::default()
            },
            unit: RestoredUnit::DatabaseStreams,
            lines: report.lines(),
            details: RestoreReport::details_of(&report)?,
        })
    }
}

fn to_target(e: Error) -> Error {
    e.into_target()
}

impl RedisTarget {
    async fn plan(
        &self,
        con: &mut MultiplexedConnection,
        info: SnapshotInfo,
        opts: &RestoreOptions,
    ) -> Result<Plan> {
        let renames = Self::renames(opts)?;
        let source_dbs: Vec<u32> = match &info.selected {
            Some(sel) => sel.clone(),
            None => info
                .databases
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(d, _)| *d)
                .collect(),
        };
        for from in renames.keys() {
            if !info.databases.contains_key(from) {
                return Err(Error::Config(format!(
                    "--rename {from}:...: the snapshot has no keys in database {from} (it has {})",
                    info.databases
                        .keys()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            }
        }
        let mut map = BTreeMap::new();
        let mut used = BTreeMap::new();
        for db in &source_dbs {
            let to = renames.get(db).copied().unwrap_or(*db);
            if let Some(other) = used.insert(to, *db) {
                return Err(Error::Config(format!(
                    "databases {other} and {db} would both be restored into database {to}; choose different targets with --rename"
                )));
            }
            map.insert(*db, to);
        }
        let targets: BTreeSet<u32> = map.values().copied().collect();
        let before = self.dbsizes(con, &targets).await?;
        Ok(Plan {
            map,
            selection: Selection {
                dbs: Some(source_dbs),
                keys: KeyFilter::new(&opts.includes, &opts.excludes),
                payloads: true,
            },
            before,
            info,
        })
    }

    /// Reads the snapshot once without writing: counts what would be
    /// restored and, with `check`, finds keys that already exist.
    #[allow(clippy::type_complexity)]
    async fn scan(
        &self,
        snapshot: &SnapshotReader,
        plan: &Plan,
        con: &mut MultiplexedConnection,
        check: bool,
    ) -> Result<(
        BTreeMap<u32, (u64, String)>,
        Totals,
        BTreeMap<u32, u64>,
        BTreeMap<u32, u64>,
    )> {
        let sel = Selection {
            payloads: false,
            ..plan.selection.clone()
        };
        let (rx, handle) = read_records(snapshot, &plan.info.stream, plan.info.keys_mode, sel);
        let mut conflicts: BTreeMap<u32, (u64, String)> = BTreeMap::new();
        let mut expired: BTreeMap<u32, u64> = BTreeMap::new();
        let mut planned: BTreeMap<u32, u64> = BTreeMap::new();
        let now = now_ms();
        let mut failure = None;
        while let Ok(batch) = rx.recv().await {
            let Batch::Keys(recs) = batch else { continue };
            let mut live = Vec::new();
            for r in recs {
                if r.expire_ms.is_some_and(|e| e <= now) {
                    *expired.entry(r.db).or_default() += 1;
                } else {
                    *planned.entry(r.db).or_default() += 1;
                    live.push(r);
                }
            }
            if !check {
                continue;
            }
            for chunk in live.chunks(EXISTS_BATCH) {
                let mut pipe = redis::pipe();
                let mut cur = None;
                let mut asked = 0;
                for r in chunk {
                    let to = plan.map.get(&r.db).copied().unwrap_or(r.db);
                    if plan.before.get(&to).copied().unwrap_or(0) == 0 {
                        continue;
                    }
                    if cur != Some(to) {
                        pipe.cmd("SELECT").arg(to).ignore();
                        cur = Some(to);
                    }
                    pipe.cmd("EXISTS").arg(&r.key);
                    asked += 1;
                }
                if asked == 0 {
                    continue;
                }
                let res: std::result::Result<Vec<i64>, _> = pipe.query_async(con).await;
                let flags = match res {
                    Ok(f) => f,
                    Err(e) => {
                        failure = Some(self.err("checking for existing keys", &e));
                        break;
                    }
                };
                let mut it = flags.into_iter();
                for r in chunk {
                    let to = plan.map.get(&r.db).copied().unwrap_or(r.db);
                    if plan.before.get(&to).copied().unwrap_or(0) == 0 {
                        continue;
                    }
                    if it.next().unwrap_or(0) > 0 {
                        let e = conflicts.entry(to).or_insert_with(|| (0, show_key(&r.key)));
                        e.0 += 1;
                    }
                }
            }
            if failure.is_some() {
                break;
            }
        }
        rx.close();
        let totals = handle
            .await
            .map_err(|e| Error::target_failed(format!("reading the snapshot failed: {e}")))?;
        if let Some(f) = failure {
            return Err(f);
        }
        Ok((conflicts, totals?, expired, planned))
    }

    /// Restores every selected key; returns the per-database counts.
    async fn write(
        &self,
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
        let mut inflight = FuturesUnordered::new();
        let mut failure: Option<Error> = None;
        let restore_functions = opts.includes.is_empty();
        'outer: while let Ok(batch) = rx.recv().await {
            let recs = match batch {
                Batch::Functions(p) => {
                    if restore_functions {
                        let mut c = con.clone();
                        let mut cmd = redis::cmd("FUNCTION");
                        cmd.arg("RESTORE").arg(p);
                        if opts.drop {
                            cmd.arg("REPLACE");
                        }
                        if let Err(e) = cmd.query_async::<()>(&mut c).await {
                            failure = Some(Error::target_failed(format!(
                                "restoring the snapshot's functions into {}: {e}{}",
                                self.url.address(),
                                if opts.drop {
                                    ""
                                } else {
                                    " (with --drop, libraries of the same name are replaced)"
                                }
                            )));
                            break 'outer;
                        }
                    }
                    continue;
                }
                Batch::Keys(recs) => recs,
            };
            let now = now_ms();
            let mut pipe = redis::pipe();
            let mut cur = None;
            let mut sent: Vec<(u32, bool)> = Vec::with_capacity(recs.len());
            let mut bytes = 0u64;
            for r in &recs {
                let to = plan.map.get(&r.db).copied().unwrap_or(r.db);
                let Some(entry) = restored.dbs.get_mut(&to) else {
                    continue;
                };
                if r.expire_ms.is_some_and(|e| e <= now) {
                    entry.expired_skipped += 1;
                    continue;
                }
                if cur != Some(to) {
                    pipe.cmd("SELECT").arg(to).ignore();
                    cur = Some(to);
                }
                restore_cmd(&mut pipe, r, opts.drop);
                bytes += r.payload.len() as u64;
                sent.push((to, r.expire_ms.is_some()));
            }
            for (to, ttl) in &sent {
                if let Some(e) = restored.dbs.get_mut(to) {
                    e.restored += 1;
                    if *ttl {
                        e.with_ttl += 1;
                    }
                }
            }
            if sent.is_empty() {
                continue;
            }
            let first_key = recs.first().map(|r| show_key(&r.key)).unwrap_or_default();
            let mut c = con.clone();
            let p = Arc::clone(progress);
            inflight.push(async move {
                let r = pipe.query_async::<()>(&mut c).await;
                p.add_bytes(bytes);
                r.map_err(|e| (e, first_key))
            });
            while inflight.len() >= PIPELINES_IN_FLIGHT {
                if let Some(Err((e, k))) = inflight.next().await {
                    failure = Some(self.restore_error(&e, &k, opts));
                    break 'outer;
                }
            }
        }
        while let Some(r) = inflight.next().await {
            if let Err((e, k)) = r {
                failure.get_or_insert_with(|| self.restore_error(&e, &k, opts));
            }
        }
        rx.close();
        let totals = handle
            .await
            .map_err(|e| Error::target_failed(format!("reading the snapshot failed: {e}")));
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
        }
        // Keys of the stream, per database, must match the manifest.
        for (db, n) in &plan.info.databases {
            let seen = totals.seen.get(db).copied().unwrap_or(0);
            if seen != *n {
                return Err(Error::target_failed(format!(
                    "the snapshot's stream holds {seen} keys of database {db} but its manifest lists {n}; run `backup verify --read-data`"
                )));
            }
        }
        Ok(restored)
    }

    fn restore_error(
        &self,
        e: &redis::RedisError,
        first_key: &str,
        opts: &RestoreOptions,
    ) -> Error {
        let text = e.to_string();
        if text.contains("BUSYKEY") {
            return Error::target_failed(format!(
                "a key of the snapshot already exists in {} (BUSYKEY, in the batch starting at {first_key}); it was created after the check; restore with --drop to replace the restored databases",
                self.url.redacted()
            ));
        }
        if text.contains("payload version or checksum") {
            return Error::target_failed(format!(
                "Redis at {} refused a DUMP payload ({text}): the server is older than the RDB version of the snapshot",
                self.url.address()
            ));
        }
        if text.contains("Bad data format") {
            return Error::target_failed(format!(
                "Redis at {} could not load a value in the batch starting at {first_key} ({text}): a module value whose module is not loaded, or a value this server version cannot read",
                self.url.address()
            ));
        }
        let _ = opts;
        self.err("RESTORE", e)
    }

    async fn verify_counts(
        &self,
        con: &mut MultiplexedConnection,
        plan: &Plan,
        restored: &Restored,
        opts: &RestoreOptions,
    ) -> Result<()> {
        let targets: BTreeSet<u32> = restored.dbs.keys().copied().collect();
        let sizes = self.dbsizes(con, &targets).await?;
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
        let _ = opts;
        if problems.is_empty() {
            Ok(())
        } else {
            Err(Error::target_failed(format!(
                "key counts after the restore do not match: {} (did another client write to the server during the restore?)",
                problems.join("; ")
            )))
        }
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

fn restore_cmd(pipe: &mut redis::Pipeline, r: &Record, replace: bool) {
    let c = pipe.cmd("RESTORE").arg(&r.key);
    match r.expire_ms {
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
    c.ignore();
    let _ = r.rdb_type;
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
        let opts = RestoreOptions::default();
        let busy = redis::RedisError::from((
            redis::ErrorKind::Extension,
            "An error was signalled by the server",
            "BUSYKEY Target key name already exists.".to_owned(),
        ));
        let msg = target.restore_error(&busy, "`k`", &opts).to_string();
        assert!(msg.contains("BUSYKEY"), "{msg}");
        assert!(msg.contains("--drop"), "{msg}");
        assert!(msg.contains("`k`"), "{msg}");
        assert!(!msg.contains("pw"), "{msg}");
        let old = redis::RedisError::from((
            redis::ErrorKind::Extension,
            "An error was signalled by the server",
            "ERR DUMP payload version or checksum are wrong".to_owned(),
        ));
        let msg = target.restore_error(&old, "`k`", &opts).to_string();
        assert!(msg.contains("older than the RDB version"), "{msg}");
    }
}
