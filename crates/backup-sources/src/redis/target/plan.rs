//! The plan of a restore, made before anything is written: which source
//! database goes where, what the target holds, and (reading the snapshot
//! once) which keys would be restored and which already exist.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{SystemTime, UNIX_EPOCH};

use backup_core::reader::SnapshotReader;
use backup_core::target::RestoreOptions;
use backup_core::{Error, Result};
use redis::aio::MultiplexedConnection;

use crate::redis::conn::RedisUrl;
use crate::redis::glob::KeyFilter;
use crate::redis::manifest::SnapshotInfo;
use crate::redis::records::{read_records, show_key, Batch, Record, Selection, Totals};

/// Keys checked per `EXISTS` pipeline.
const EXISTS_BATCH: usize = 1000;

/// The plan of a restore.
pub(super) struct Plan {
    pub(super) info: SnapshotInfo,
    /// Source database to target database.
    pub(super) map: BTreeMap<u32, u32>,
    pub(super) selection: Selection,
    /// Keys per target database before the restore.
    pub(super) before: BTreeMap<u32, u64>,
}

impl Plan {
    /// The target database of a record.
    pub(super) fn target_of(&self, r: &Record) -> u32 {
        self.map.get(&r.db).copied().unwrap_or(r.db)
    }

    /// Whether target database `db` held keys before the restore.
    fn occupied(&self, db: u32) -> bool {
        self.before.get(&db).copied().unwrap_or(0) > 0
    }

    /// Target databases that hold keys.
    pub(super) fn occupied_targets(&self) -> Vec<u32> {
        self.before
            .iter()
            .filter(|(_, n)| **n > 0)
            .map(|(d, _)| *d)
            .collect()
    }
}

/// What one read of the snapshot found, without writing.
#[derive(Debug, Default)]
pub(super) struct Scan {
    /// Per target database: keys of the snapshot that exist there, and
    /// one of them.
    pub(super) conflicts: BTreeMap<u32, (u64, String)>,
    pub(super) totals: Totals,
    /// Per source database: keys whose expiry has passed.
    pub(super) expired: BTreeMap<u32, u64>,
    /// Per source database: keys that would be restored.
    pub(super) planned: BTreeMap<u32, u64>,
}

impl Scan {
    /// The refusal of a restore without `--drop` into databases that hold
    /// keys of the snapshot; `None` when none do.
    pub(super) fn conflict_error(&self, target: &str) -> Option<Error> {
        if self.conflicts.is_empty() {
            return None;
        }
        let n: u64 = self.conflicts.values().map(|(n, _)| n).sum();
        let detail: Vec<String> = self
            .conflicts
            .iter()
            .map(|(db, (n, ex))| format!("database {db}: {n}, for example {ex}"))
            .collect();
        Some(Error::target_failed(format!(
            "{n} keys of the snapshot already exist in {target} ({}): nothing was changed; restore with --drop to replace the restored databases (after a safety backup), or into other databases with --rename FROM:TO",
            detail.join("; ")
        )))
    }
}

/// The current time in milliseconds since the epoch (expiries are
/// absolute).
pub(super) fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// A driver error of the target server.
pub(super) fn target_err(url: &RedisUrl, doing: &str, e: redis::RedisError) -> Error {
    url.error(doing, e).into_target()
}

/// The `--rename FROM:TO` pairs.
///
/// # Errors
///
/// [`Error::Config`] for a malformed pair or a database given twice.
pub(super) fn renames(opts: &RestoreOptions) -> Result<BTreeMap<u32, u32>> {
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

/// Keys per database of the target server.
pub(super) async fn dbsizes(
    url: &RedisUrl,
    con: &mut MultiplexedConnection,
    dbs: &BTreeSet<u32>,
) -> Result<BTreeMap<u32, u64>> {
    let mut out = BTreeMap::new();
    for &db in dbs {
        let mut pipe = redis::pipe();
        pipe.cmd("SELECT").arg(db).ignore().cmd("DBSIZE");
        let (n,): (u64,) = pipe.query_async(con).await.map_err(|e| {
            if e.to_string().contains("out of range") {
                let msg = format!(
                    "Redis at {} has no database {db} (its `databases` setting is lower); choose another with --rename",
                    url.address()
                );
                Error::target_explained(msg, e, false)
            } else {
                target_err(url, &format!("DBSIZE of database {db}"), e)
            }
        })?;
        out.insert(db, n);
    }
    Ok(out)
}

/// Maps the snapshot's databases to target databases and reads what the
/// targets hold.
///
/// # Errors
///
/// [`Error::Config`] for a rename of a database the snapshot lacks or two
/// databases restored into one; errors of the server.
pub(super) async fn plan(
    url: &RedisUrl,
    con: &mut MultiplexedConnection,
    info: SnapshotInfo,
    opts: &RestoreOptions,
) -> Result<Plan> {
    let renames = renames(opts)?;
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
    let before = dbsizes(url, con, &targets).await?;
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
pub(super) async fn scan(
    url: &RedisUrl,
    snapshot: &SnapshotReader,
    plan: &Plan,
    con: &mut MultiplexedConnection,
    check: bool,
) -> Result<Scan> {
    let sel = Selection {
        payloads: false,
        ..plan.selection.clone()
    };
    let (rx, handle) = read_records(snapshot, &plan.info.stream, plan.info.keys_mode, sel);
    let mut found = Scan::default();
    let now = now_ms();
    let mut failure = None;
    while let Ok(batch) = rx.recv().await {
        let Batch::Keys(recs) = batch else { continue };
        let mut live = Vec::new();
        for r in recs {
            if r.expire_ms.is_some_and(|e| e <= now) {
                *found.expired.entry(r.db).or_default() += 1;
            } else {
                *found.planned.entry(r.db).or_default() += 1;
                live.push(r);
            }
        }
        if !check {
            continue;
        }
        for chunk in live.chunks(EXISTS_BATCH) {
            if let Err(e) = find_existing(plan, chunk, con, &mut found.conflicts).await {
                failure = Some(target_err(url, "checking for existing keys", e));
                break;
            }
        }
        if failure.is_some() {
            break;
        }
    }
    rx.close();
    let totals = handle
        .await
        .map_err(|e| Error::target_caused("reading the snapshot failed", e))?;
    if let Some(f) = failure {
        return Err(f);
    }
    found.totals = totals?;
    Ok(found)
}

/// Counts the keys of `chunk` that exist in occupied target databases
/// (one `EXISTS` pipeline).
async fn find_existing(
    plan: &Plan,
    chunk: &[Record],
    con: &mut MultiplexedConnection,
    conflicts: &mut BTreeMap<u32, (u64, String)>,
) -> std::result::Result<(), redis::RedisError> {
    let asked: Vec<(u32, &Record)> = chunk
        .iter()
        .map(|r| (plan.target_of(r), r))
        .filter(|(to, _)| plan.occupied(*to))
        .collect();
    if asked.is_empty() {
        return Ok(());
    }
    let mut pipe = redis::pipe();
    let mut cur = None;
    for (to, r) in &asked {
        if cur != Some(*to) {
            pipe.cmd("SELECT").arg(*to).ignore();
            cur = Some(*to);
        }
        pipe.cmd("EXISTS").arg(&r.key);
    }
    let flags: Vec<i64> = pipe.query_async(con).await?;
    for ((to, r), flag) in asked.iter().zip(flags) {
        if flag > 0 {
            let e = conflicts
                .entry(*to)
                .or_insert_with(|| (0, show_key(&r.key)));
            e.0 += 1;
        }
    }
    Ok(())
}
