//! A point-in-time restore's second half: the captured replication stream
//! from the base snapshot's offset to the target, sent to the target
//! server in pipelines, as a replica would apply it.
//!
//! The primary's own housekeeping (`PING`, `REPLCONF`) and `PUBLISH` are
//! not applied. `SELECT` is followed, not sent: each command goes to the
//! database `--rename` maps its database to, and commands of databases the
//! restore does not select are left out. With `--include`/`--exclude`, a
//! command is applied when every key it names is selected and left out
//! when none is; one that names both is left out and counted in a
//! warning. `FLUSHDB`/`FLUSHALL` then delete only the selected keys.
//!
//! Expiries are absolute in the stream (`SET ... PXAT`, `PEXPIREAT`,
//! `RESTORE ... ABSTTL`), and the primary applied each command while the
//! key was alive. Replayed later, a key whose time has passed would
//! vanish before the commands that follow it (a `PERSIST`, a later
//! `EXPIRE`) could apply, so such expiries are *held*: set to a far
//! time ([`HELD`]) while the replay runs and settled to their real value
//! at the end, when the key still has the held one (Redis then removes
//! the keys whose time has passed, as it does for an RDB).

use std::collections::{BTreeMap, BTreeSet, HashMap};

use backup_core::capture::CaptureReplay;
use backup_core::reader::SnapshotReader;
use backup_core::target::RestoreOptions;
use backup_core::{Error, Result};
use futures::StreamExt;
use redis::aio::MultiplexedConnection;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::plan::{target_err, Plan};
use crate::capture::position_offset;
use crate::redis::conn::RedisUrl;
use crate::redis::follow::frames;
use crate::redis::glob::KeyFilter;
use crate::redis::resp::{encode, parse_command, skip_reply};

/// Bytes gathered before a write to the server.
const WRITE_BYTES: usize = 256 << 10;

/// The expiry held keys have while the replay runs (year 3000, in ms).
pub(super) const HELD: i64 = 32_503_680_000_000;

/// Expiries up to this time (ms) are held: those already passed, and those
/// that may pass while the restore runs.
pub(super) fn hold_limit() -> i64 {
    super::plan::now_ms() + 3_600_000
}

/// Keys with a held expiry: (target database, key) to the real expiry.
type Held = HashMap<(u32, Vec<u8>), i64>;

/// A number written in a command's argument.
fn num<T: std::str::FromStr>(a: &[u8]) -> Option<T> {
    std::str::from_utf8(a).ok()?.parse().ok()
}

/// The command with its expiry held, when it sets one at or before
/// `limit`: the rewritten arguments, the key and the real expiry (ms).
fn hold_expiry(args: &[&[u8]], limit: i64) -> Option<(Vec<Vec<u8>>, i64)> {
    let name = args[0].to_ascii_uppercase();
    let held = HELD.to_string().into_bytes();
    let mut out: Vec<Vec<u8>> = args.iter().map(|a| a.to_vec()).collect();
    let real = match name.as_slice() {
        b"SET" => {
            let i = (3..args.len().saturating_sub(1)).find(|i| {
                args[*i].eq_ignore_ascii_case(b"PXAT") || args[*i].eq_ignore_ascii_case(b"EXAT")
            })?;
            let t: i64 = num(args[i + 1])?;
            let ms = if args[i].eq_ignore_ascii_case(b"EXAT") {
                t.checked_mul(1000)?
            } else {
                t
            };
            out[i] = b"PXAT".to_vec();
            out[i + 1] = held;
            ms
        }
        b"PEXPIREAT" | b"EXPIREAT" if args.len() >= 3 => {
            let t: i64 = num(args[2])?;
            let ms = if name == b"EXPIREAT" {
                t.checked_mul(1000)?
            } else {
                t
            };
            out[0] = b"PEXPIREAT".to_vec();
            out[2] = held;
            ms
        }
        b"RESTORE" if args.len() >= 4 => {
            let absolute = args[4..].iter().any(|a| a.eq_ignore_ascii_case(b"ABSTTL"));
            let t: i64 = num(args[2])?;
            if !absolute || t <= 0 {
                return None;
            }
            out[2] = held;
            t
        }
        _ => return None,
    };
    (real <= limit).then_some((out, real))
}

/// Follows held expiries through commands that move or copy keys.
fn carry_held(held: &mut Held, args: &[&[u8]], db: u32, route: &Route<'_>) {
    let name = args[0].to_ascii_uppercase();
    let key = |i: usize| args.get(i).map(|k| (db, k.to_vec()));
    match name.as_slice() {
        b"RENAME" | b"RENAMENX" => {
            if let (Some(a), Some(b)) = (key(1), key(2)) {
                if let Some(t) = held.remove(&a) {
                    held.insert(b, t);
                }
            }
        }
        b"COPY" => {
            if let (Some(a), Some((_, b))) = (key(1), key(2)) {
                let to_db = args
                    .iter()
                    .position(|x| x.eq_ignore_ascii_case(b"DB"))
                    .and_then(|i| num(args.get(i + 1)?))
                    .and_then(|d| route.target(d))
                    .unwrap_or(db);
                if let Some(t) = held.get(&a).copied() {
                    held.insert((to_db, b), t);
                }
            }
        }
        b"MOVE" => {
            if let (Some(a), Some(d)) = (key(1), args.get(2)) {
                let to_db = num(d).and_then(|d| route.target(d));
                if let (Some(t), Some(to_db)) = (held.remove(&a), to_db) {
                    held.insert((to_db, a.1), t);
                }
            }
        }
        _ => {}
    }
}

/// What the replay did.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub(super) struct ReplayReport {
    /// Pieces read.
    pub(super) pieces: u64,
    /// Commands sent to the server.
    pub(super) applied: u64,
    /// Commands left out by the selection (databases, keys).
    pub(super) filtered: u64,
    /// Commands that name selected and unselected keys, left out.
    pub(super) mixed: u64,
    /// The replication offset and arrival time of the last command
    /// applied or passed over.
    pub(super) offset: u64,
    /// See `offset`.
    pub(super) time: Option<chrono::DateTime<chrono::Utc>>,
}

/// Where a command's keys are (`COMMAND` of the target server), for key
/// filters.
struct KeySpecs {
    specs: HashMap<Vec<u8>, (i64, i64, i64, bool)>,
}

impl KeySpecs {
    async fn load(url: &RedisUrl, con: &mut MultiplexedConnection) -> Result<Self> {
        let table: Vec<redis::Value> = redis::cmd("COMMAND")
            .query_async(con)
            .await
            .map_err(|e| target_err(url, "COMMAND", e))?;
        let mut specs = HashMap::new();
        for entry in table {
            let redis::Value::Array(parts) = entry else {
                continue;
            };
            let text = |v: &redis::Value| match v {
                redis::Value::BulkString(b) => Some(b.to_ascii_uppercase()),
                redis::Value::SimpleString(s) => Some(s.to_ascii_uppercase().into_bytes()),
                _ => None,
            };
            let int = |v: Option<&redis::Value>| match v {
                Some(redis::Value::Int(i)) => *i,
                _ => 0,
            };
            let Some(name) = parts.first().and_then(text) else {
                continue;
            };
            let movable = match parts.get(2) {
                Some(redis::Value::Array(flags) | redis::Value::Set(flags)) => {
                    flags.iter().filter_map(text).any(|f| f == b"MOVABLEKEYS")
                }
                _ => false,
            };
            specs.insert(
                name,
                (
                    int(parts.get(3)),
                    int(parts.get(4)),
                    int(parts.get(5)),
                    movable,
                ),
            );
        }
        Ok(KeySpecs { specs })
    }

    /// The keys `args` names (`None` for an unknown command).
    async fn keys(
        &self,
        url: &RedisUrl,
        con: &mut MultiplexedConnection,
        args: &[&[u8]],
    ) -> Result<Option<Vec<Vec<u8>>>> {
        let name = args[0].to_ascii_uppercase();
        let Some(&(first, last, step, movable)) = self.specs.get(&name) else {
            return Ok(None);
        };
        if movable {
            let mut cmd = redis::cmd("COMMAND");
            cmd.arg("GETKEYS");
            for a in args {
                cmd.arg(*a);
            }
            return match cmd.query_async::<Vec<Vec<u8>>>(con).await {
                Ok(keys) => Ok(Some(keys)),
                // "The command has no key arguments".
                Err(e) if matches!(e.kind(), redis::ErrorKind::Server(_)) => Ok(Some(Vec::new())),
                Err(e) => Err(target_err(url, "COMMAND GETKEYS", e)),
            };
        }
        if first <= 0 || step <= 0 {
            return Ok(Some(Vec::new()));
        }
        let n = args.len() as i64;
        let last = if last < 0 { n + last } else { last.min(n - 1) };
        let keys = (first..=last).step_by(step as usize);
        Ok(Some(keys.map(|i| args[i as usize].to_vec()).collect()))
    }
}

/// The replay's view of the selection.
struct Route<'a> {
    dbs: Option<&'a [u32]>,
    renames: BTreeMap<u32, u32>,
    keys: &'a KeyFilter,
}

impl Route<'_> {
    /// Where the commands of database `db` go: nowhere for a database
    /// outside the selection, and nowhere for one that another database
    /// is renamed into (two databases are never restored into one, as
    /// the plan refuses for the base: a drill's scratch database on the
    /// source's server sees its own restore in the stream).
    fn target(&self, db: u32) -> Option<u32> {
        if self.dbs.is_some_and(|d| !d.contains(&db)) {
            return None;
        }
        match self.renames.get(&db) {
            Some(to) => Some(*to),
            None if self.renames.values().any(|to| *to == db) => None,
            None => Some(db),
        }
    }

    fn narrowed(&self) -> bool {
        self.dbs.is_some() || !self.renames.is_empty() || !self.keys.is_all()
    }
}

/// What the reply reader counted: replies, the first error messages,
/// errors.
type Replies = (u64, Vec<String>, u64);

/// The connection the commands go to: a writer that batches, a task that
/// reads every reply and keeps the errors.
struct Sink {
    url: RedisUrl,
    w: tokio::io::WriteHalf<Box<dyn crate::redis::conn::Stream>>,
    buf: Vec<u8>,
    sent: u64,
    db: Option<u32>,
    replies: tokio::task::JoinHandle<std::result::Result<Replies, String>>,
    counted: tokio::sync::watch::Sender<u64>,
}

impl Sink {
    async fn open(url: &RedisUrl) -> Result<Self> {
        let conn = url.connect_raw().await.map_err(Error::into_target)?;
        let stream = conn.io.into_inner();
        let (mut r, w) = tokio::io::split(stream);
        let (counted, expect) = tokio::sync::watch::channel(u64::MAX);
        let replies = tokio::spawn(async move {
            let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
            let mut chunk = vec![0u8; 64 << 10];
            let (mut got, mut errors, mut first) = (0u64, 0u64, Vec::new());
            loop {
                let mut at = 0;
                while let Some(reply) = skip_reply(&buf[at..]).map_err(|e| e.0)? {
                    at += reply.len;
                    got += 1;
                    for e in reply.errors {
                        errors += 1;
                        if first.len() < 5 {
                            first.push(e);
                        }
                    }
                }
                buf.drain(..at);
                if got >= *expect.borrow() {
                    return Ok((got, first, errors));
                }
                let n = tokio::select! {
                    r = r.read(&mut chunk) => r.map_err(|e| e.to_string())?,
                    () = async {
                        let mut e = expect.clone();
                        let _ = e.wait_for(|n| got >= *n).await;
                    } => continue,
                };
                if n == 0 {
                    return Err("the server closed the connection".to_owned());
                }
                buf.extend_from_slice(&chunk[..n]);
            }
        });
        Ok(Sink {
            url: url.clone(),
            w,
            buf: Vec::with_capacity(WRITE_BYTES * 2),
            sent: 0,
            db: None,
            replies,
            counted,
        })
    }

    async fn push(&mut self, command: &[u8]) -> Result<()> {
        self.buf.extend_from_slice(command);
        self.sent += 1;
        if self.buf.len() >= WRITE_BYTES {
            self.flush().await?;
        }
        Ok(())
    }

    async fn push_args(&mut self, args: &[&[u8]]) -> Result<()> {
        let mut c = Vec::new();
        encode(&mut c, args);
        self.push(&c).await
    }

    /// Makes `db` the connection's database.
    async fn select(&mut self, db: u32) -> Result<()> {
        if self.db != Some(db) {
            self.push_args(&[b"SELECT", db.to_string().as_bytes()])
                .await?;
            self.db = Some(db);
        }
        Ok(())
    }

    async fn flush(&mut self) -> Result<()> {
        let url = self.url.address();
        self.w
            .write_all(&self.buf)
            .await
            .map_err(|e| Error::target_failed(format!("replaying into Redis at {url}: {e}")))?;
        self.buf.clear();
        Ok(())
    }

    /// Sends what is left and waits for every reply; fails with the
    /// server's errors.
    async fn finish(mut self) -> Result<()> {
        self.flush().await?;
        let _ = self.w.flush().await;
        let _ = self.counted.send(self.sent);
        let url = self.url.address();
        let (_, first, errors) = self
            .replies
            .await
            .map_err(|e| Error::target_caused("reading the server's replies failed", e))?
            .map_err(|e| Error::target_failed(format!("replaying into Redis at {url}: {e}")))?;
        if errors > 0 {
            return Err(Error::target_failed(format!(
                "Redis at {url} refused {errors} of the replayed commands ({}); the restored data may differ from the source at the target point",
                first.join("; ")
            )));
        }
        Ok(())
    }
}

/// Applies `replay` to the server of `url` after the base was restored.
pub(super) async fn replay(
    url: &RedisUrl,
    snapshot: &SnapshotReader,
    replay: &CaptureReplay,
    plan: &Plan,
    opts: &RestoreOptions,
    con: &mut MultiplexedConnection,
    base_held: &[(u32, Vec<u8>, i64)],
) -> Result<ReplayReport> {
    let (Some(from), Some(until)) = (
        position_offset(&replay.from),
        position_offset(&replay.until),
    ) else {
        return Err(Error::Config(format!(
            "replay range {}..{} is not made of replication offsets",
            replay.from, replay.until
        )));
    };
    let until_ms = replay.until_time.map(|t| t.timestamp_millis());
    let mut replayer = Replayer::new(url, plan, opts, con, base_held, from).await?;
    let repo = snapshot.repository().clone();
    let mut pieces = std::pin::pin!(repo.read_pieces(replay.pieces.clone()));
    'pieces: while let Some(piece) = pieces.next().await {
        let (name, bytes) = piece?;
        replayer.report.pieces += 1;
        let what = name.file_name();
        for frame in frames(&bytes, &what) {
            let frame = frame?;
            if frame.end < from {
                continue;
            }
            if frame.end > until || until_ms.is_some_and(|u| frame.time_ms > u) {
                break 'pieces;
            }
            replayer.report.offset = frame.end;
            replayer.report.time = chrono::DateTime::from_timestamp_millis(frame.time_ms);
            let Some(c) = parse_command(frame.command).ok().flatten() else {
                return Err(Error::corrupt(
                    backup_core::FileKind::Capture,
                    &what,
                    format!("the command ending at offset {} cannot be read", frame.end),
                ));
            };
            let args: Vec<&[u8]> = c.args.iter().map(|r| &frame.command[r.clone()]).collect();
            replayer.apply(&args, frame.command).await?;
        }
    }
    replayer.finish().await
}

/// A running replay: where commands go, the expiries held and what was
/// done so far.
struct Replayer<'a> {
    url: &'a RedisUrl,
    con: &'a mut MultiplexedConnection,
    route: Route<'a>,
    specs: Option<KeySpecs>,
    sink: Sink,
    limit: i64,
    held: Held,
    report: ReplayReport,
    /// The database the stream's last `SELECT` chose.
    source_db: u32,
    /// The target databases the restore wrote to.
    touched: BTreeSet<u32>,
}

impl<'a> Replayer<'a> {
    /// Prepares a replay from offset `from`: the selection, the key specs a
    /// key filter needs, the connection commands go to, the held expiries.
    async fn new(
        url: &'a RedisUrl,
        plan: &'a Plan,
        opts: &RestoreOptions,
        con: &'a mut MultiplexedConnection,
        base_held: &[(u32, Vec<u8>, i64)],
        from: u64,
    ) -> Result<Self> {
        let route = Route {
            // The databases chosen for the snapshot (its URL's `/db`), not
            // those its base happens to hold keys in: the stream may fill
            // others.
            dbs: plan.info.selected.as_deref(),
            renames: super::plan::renames(opts)?,
            keys: &plan.selection.keys,
        };
        let specs = if route.keys.is_all() {
            None
        } else {
            Some(KeySpecs::load(url, con).await?)
        };
        Ok(Replayer {
            sink: Sink::open(url).await?,
            url,
            con,
            route,
            specs,
            limit: hold_limit(),
            held: base_held
                .iter()
                .map(|(db, k, t)| ((*db, k.clone()), *t))
                .collect(),
            report: ReplayReport {
                offset: from - 1,
                ..ReplayReport::default()
            },
            source_db: 0,
            touched: plan.map.values().copied().collect(),
        })
    }

    /// Applies one command of the stream, or leaves it out as the selection
    /// says.
    async fn apply(&mut self, args: &[&[u8]], command: &[u8]) -> Result<()> {
        let name = args[0].to_ascii_uppercase();
        match name.as_slice() {
            b"PING" | b"REPLCONF" | b"PUBLISH" | b"SPUBLISH" => return Ok(()),
            b"SELECT" => {
                self.source_db = args.get(1).and_then(|a| num(a)).unwrap_or(0);
                return Ok(());
            }
            b"MULTI" | b"EXEC" | b"DISCARD" => return self.sink.push(command).await,
            _ => {}
        }
        if !self.route.narrowed() {
            return self.send(args, command, self.source_db).await;
        }
        let Some(target) = self.route.target(self.source_db) else {
            if name != b"FLUSHALL" {
                self.report.filtered += 1;
                return Ok(());
            }
            // A FLUSHALL empties the selected databases too.
            return self.flush(self.touched.clone()).await;
        };
        self.touched.insert(target);
        match name.as_slice() {
            b"FLUSHALL" => return self.flush(self.touched.clone()).await,
            b"FLUSHDB" => return self.flush(BTreeSet::from([target])).await,
            // Commands that name other databases: applied when the
            // selection is only a key filter.
            b"SWAPDB" | b"MOVE" | b"COPY"
                if (name != b"COPY" || has_db_option(args))
                    && (self.route.dbs.is_some() || !self.route.renames.is_empty()) =>
            {
                self.report.mixed += 1;
                return Ok(());
            }
            _ => {}
        }
        if !self.keys_selected(args).await? {
            return Ok(());
        }
        self.send(args, command, target).await
    }

    /// Whether the key filter lets the command through; counts it as
    /// filtered or mixed when not.
    async fn keys_selected(&mut self, args: &[&[u8]]) -> Result<bool> {
        if let Some(specs) = &self.specs {
            let keys = specs
                .keys(self.url, self.con, args)
                .await?
                .unwrap_or_default();
            let selected = keys.iter().filter(|k| self.route.keys.accepts(k)).count();
            if !keys.is_empty() && selected == 0 {
                self.report.filtered += 1;
                return Ok(false);
            }
            if selected < keys.len() {
                self.report.mixed += 1;
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Sends a command to target database `db` and counts it as applied,
    /// with its expiry held when it sets one that may pass before the
    /// replay ends.
    async fn send(&mut self, args: &[&[u8]], command: &[u8], db: u32) -> Result<()> {
        self.sink.select(db).await?;
        carry_held(&mut self.held, args, db, &self.route);
        if let Some((rewritten, real)) = hold_expiry(args, self.limit) {
            self.held.insert((db, args[1].to_vec()), real);
            let refs: Vec<&[u8]> = rewritten.iter().map(Vec::as_slice).collect();
            self.sink.push_args(&refs).await?;
        } else {
            self.sink.push(command).await?;
        }
        self.report.applied += 1;
        Ok(())
    }

    /// A `FLUSHDB` (of one database) or `FLUSHALL` (of every selected one
    /// the restore wrote to) under the selection: target databases `dbs`
    /// lose their selected keys.
    async fn flush(&mut self, dbs: BTreeSet<u32>) -> Result<()> {
        for db in dbs {
            self.flush_keys(db).await?;
        }
        self.report.applied += 1;
        Ok(())
    }

    /// Deletes the selected keys of target database `db` (all of them
    /// without a key filter), after the commands before it are applied.
    async fn flush_keys(&mut self, db: u32) -> Result<()> {
        let (url, con) = (self.url, &mut *self.con);
        self.sink.select(db).await?;
        if self.route.keys.is_all() {
            return self.sink.push_args(&[b"FLUSHDB"]).await;
        }
        // The keys to delete are those the target holds once every command
        // sent so far is applied: wait for them (the replay goes on on a
        // new connection), then scan.
        let previous = std::mem::replace(&mut self.sink, Sink::open(url).await?);
        previous.finish().await?;
        redis::cmd("SELECT")
            .arg(db)
            .query_async::<()>(con)
            .await
            .map_err(|e| target_err(url, "SELECT", e))?;
        let mut cursor = 0u64;
        loop {
            let (next, keys): (u64, Vec<Vec<u8>>) = redis::cmd("SCAN")
                .arg(cursor)
                .arg("COUNT")
                .arg(1000)
                .query_async(con)
                .await
                .map_err(|e| target_err(url, "SCAN", e))?;
            let gone: Vec<&Vec<u8>> = keys.iter().filter(|k| self.route.keys.accepts(k)).collect();
            if !gone.is_empty() {
                redis::cmd("UNLINK")
                    .arg(gone)
                    .query_async::<()>(con)
                    .await
                    .map_err(|e| target_err(url, "UNLINK", e))?;
            }
            cursor = next;
            if cursor == 0 {
                return Ok(());
            }
        }
    }

    /// Waits for every reply, then settles the held expiries.
    async fn finish(self) -> Result<ReplayReport> {
        self.sink.finish().await?;
        settle(self.url, self.con, &self.held).await?;
        Ok(self.report)
    }
}

/// Gives the keys that still have the held expiry their real one.
async fn settle(url: &RedisUrl, con: &mut MultiplexedConnection, held: &Held) -> Result<()> {
    let mut by_db: BTreeMap<u32, Vec<(&Vec<u8>, i64)>> = BTreeMap::new();
    for ((db, k), t) in held {
        by_db.entry(*db).or_default().push((k, *t));
    }
    for (db, keys) in by_db {
        for chunk in keys.chunks(1000) {
            let mut pipe = redis::pipe();
            pipe.cmd("SELECT").arg(db).ignore();
            for (k, _) in chunk {
                pipe.cmd("PTTL").arg(*k);
            }
            let ttls: Vec<i64> = pipe
                .query_async(con)
                .await
                .map_err(|e| target_err(url, "PTTL", e))?;
            // (PTTL rather than Redis 7's PEXPIRETIME: older targets.)
            let floor = HELD - super::plan::now_ms() - 86_400_000;
            let mut fix = redis::pipe();
            fix.cmd("SELECT").arg(db).ignore();
            let mut any = false;
            for ((k, real), ttl) in chunk.iter().zip(ttls) {
                if ttl > floor {
                    fix.cmd("PEXPIREAT").arg(*k).arg(*real).ignore();
                    any = true;
                }
            }
            if any {
                fix.query_async::<()>(con)
                    .await
                    .map_err(|e| target_err(url, "PEXPIREAT", e))?;
            }
        }
    }
    Ok(())
}

/// Whether a `COPY` names a destination database.
fn has_db_option(args: &[&[u8]]) -> bool {
    args.iter().skip(3).any(|a| a.eq_ignore_ascii_case(b"DB"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_database_renamed_into_is_not_replayed_under_its_own_number() {
        let keys = KeyFilter::new(&[], &[]);
        let route = Route {
            dbs: None,
            renames: BTreeMap::from([(0, 7)]),
            keys: &keys,
        };
        assert_eq!(route.target(0), Some(7));
        assert_eq!(route.target(7), None);
        assert_eq!(route.target(3), Some(3));
        let selected = [0, 3];
        let route = Route {
            dbs: Some(&selected),
            ..route
        };
        assert_eq!(route.target(3), Some(3));
        assert_eq!(route.target(4), None);
    }
}
