//! The Redis source: an RDB over the replication protocol (`mode=rdb`)
//! or key-level `DUMP`s (`mode=keys`).

use std::collections::{BTreeMap, BTreeSet};
use std::io::Read;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use async_trait::async_trait;
use backup_core::snapshot::SourceDescriptor;
use backup_core::source::{AsyncReader, Content, Item, OnReadError, Source};
use backup_core::tree::{Node, NodeKind};
use backup_core::{Error, Result};
use bytes::Bytes;
use futures::stream::{FuturesOrdered, StreamExt};
use redis::aio::MultiplexedConnection;

use super::conn::{info_field, server_info};
use super::conn::{Mode, RawConn, RedisUrl};
use super::glob::KeyFilter;
use super::keyfile::FrameWriter;
use super::manifest::{KEYS_STREAM, RDB_STREAM};
use super::rdb::{self, Event, Parser, RdbError};
use super::transfer::{announce, copy_body, refused, transfer_header, Body, ChunkSink};
use crate::{RedisOptions, Selection};

/// Keys asked for per `SCAN` call and dumped per pipeline.
const SCAN_COUNT: usize = 1000;
/// Dump pipelines in flight in key mode.
const DUMPS_IN_FLIGHT: usize = 4;
/// Chunks queued between the network and the pipeline (and the parser).
const QUEUE: usize = 16;

type Outcome = Arc<Mutex<Option<Result<serde_json::Value>>>>;

/// The replication connection after the handshake, positioned at the
/// first RDB byte.
struct Sync {
    conn: RawConn,
    body: Body,
    replid: Option<String>,
    offset: Option<u64>,
    /// When the master answered `FULLRESYNC` (ms since the epoch): the
    /// RDB holds the data as it was then.
    time_ms: i64,
}

/// An RDB that a capture follower reads from its own replication
/// connection and hands over in chunks (`RedisSource::transfer`).
pub(crate) struct Fed {
    /// The chunks; an `Err` ends the transfer with that message.
    pub(crate) rx: async_channel::Receiver<std::result::Result<Bytes, String>>,
    /// `disk` or `diskless`.
    pub(crate) transfer: &'static str,
    /// The master's replication id and offset at the RDB.
    pub(crate) replid: String,
    /// See `replid`.
    pub(crate) offset: u64,
    /// See [`Sync::time_ms`].
    pub(crate) time_ms: i64,
}

/// Where an RDB-mode source reads the RDB.
enum RdbInput {
    Conn(Sync),
    Fed(Fed),
}

enum Prepared {
    /// A transfer already being read (see [`RedisSource::open`]).
    Reading(AsyncReader),
    Rdb(RdbInput),
    Keys {
        con: MultiplexedConnection,
        dbs: Vec<u32>,
        filter: KeyFilter,
        pexpiretime: bool,
        functions: bool,
    },
}

/// Backs up a Redis server. See the [module documentation](super) for the
/// two modes.
pub struct RedisSource {
    url: RedisUrl,
    server_version: String,
    prepared: Option<Prepared>,
    outcome: Outcome,
    emitted: bool,
}

impl std::fmt::Debug for RedisSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisSource")
            .field("url", &self.url)
            .finish_non_exhaustive()
    }
}

impl RedisSource {
    /// Connects, authenticates and (in RDB mode) starts the transfer, so
    /// that every connection, permission and authentication problem shows
    /// before anything is written to the repository.
    ///
    /// # Errors
    ///
    /// Malformed URLs and options ([`Error::Config`]), unreachable
    /// servers, refused passwords, refused replication.
    pub async fn open(url: &str, opts: &Selection, config: &RedisOptions) -> Result<Self> {
        let url = RedisUrl::parse(url)?.with_mode(config.mode)?;
        let mut con = url.connect().await?;
        let info = server_info(&url, &mut con).await?;
        let server_version = info_field(&info, "redis_version").unwrap_or_default();
        if let Some(db) = url.db {
            check_database(&url, &mut con, db).await?;
        }
        let outcome: Outcome = Arc::new(Mutex::new(None));
        let prepared = match url.mode {
            Mode::Rdb => {
                if !opts.includes.is_empty() || !opts.excludes.is_empty() {
                    return Err(Error::Config(
                        "--include/--exclude select keys only in key mode (--mode keys, or ?mode=keys in the URL); an RDB capture holds every key, and a restore can select keys with --include/--exclude".to_owned(),
                    ));
                }
                drop(con);
                let sync = start_sync(&url).await?;
                // Read from now on, while the caller opens the repository
                // (derives its key): the server's child serialising the
                // data set does not wait on a full socket meanwhile.
                let base = base_meta(&url, &server_version, true);
                Prepared::Reading(rdb_reader(RdbInput::Conn(sync), Arc::clone(&outcome), base))
            }
            Mode::Keys => {
                let dbs = match url.db {
                    Some(db) => vec![db],
                    None => keyspace_dbs(&url, &mut con).await?,
                };
                let major: u32 = server_version
                    .split('.')
                    .next()
                    .and_then(|m| m.parse().ok())
                    .unwrap_or(0);
                Prepared::Keys {
                    con,
                    dbs,
                    filter: KeyFilter::new(&opts.includes, &opts.excludes),
                    pexpiretime: major >= 7,
                    functions: major >= 7,
                }
            }
        };
        Ok(RedisSource {
            url,
            server_version,
            prepared: Some(prepared),
            outcome,
            emitted: false,
        })
    }

    /// A source of the RDB a capture follower receives on its own
    /// replication connection (after `FULLRESYNC`), so that the follower
    /// keeps the connection and reads the command stream after it.
    pub(crate) fn transfer(url: &RedisUrl, server_version: String, fed: Fed) -> Self {
        RedisSource {
            url: url.clone(),
            server_version,
            prepared: Some(Prepared::Rdb(RdbInput::Fed(fed))),
            outcome: Arc::new(Mutex::new(None)),
            emitted: false,
        }
    }
}

#[async_trait]
impl Source for RedisSource {
    fn descriptor(&self) -> SourceDescriptor {
        SourceDescriptor {
            kind: "redis".to_owned(),
            url: self.url.redacted(),
        }
    }

    fn concurrency(&self) -> usize {
        1
    }

    async fn next(&mut self) -> Result<Option<Item>> {
        if self.emitted {
            return Ok(None);
        }
        self.emitted = true;
        let Some(prepared) = self.prepared.take() else {
            return Ok(None);
        };
        let outcome = Arc::clone(&self.outcome);
        let rdb = matches!(prepared, Prepared::Rdb(_) | Prepared::Reading(_));
        let base = base_meta(&self.url, &self.server_version, rdb);
        let (name, fut): (
            &str,
            futures::future::BoxFuture<'static, Result<AsyncReader>>,
        ) = match prepared {
            Prepared::Reading(reader) => (RDB_STREAM, Box::pin(async move { Ok(reader) })),
            Prepared::Rdb(input) => (
                RDB_STREAM,
                Box::pin(async move { Ok(rdb_reader(input, outcome, base)) }),
            ),
            Prepared::Keys {
                con,
                dbs,
                filter,
                pexpiretime,
                functions,
            } => {
                let job = KeysJob {
                    url: self.url.clone(),
                    con,
                    dbs,
                    filter,
                    pexpiretime,
                    functions,
                };
                (
                    KEYS_STREAM,
                    Box::pin(async move { Ok(keys_reader(job, outcome, base)) }),
                )
            }
        };
        Ok(Some(Item::Leaf {
            node: Node::new(name, NodeKind::Stream),
            content: Some(Content::Async(fut)),
            on_error: OnReadError::Fail,
        }))
    }

    async fn finish(&mut self) -> Result<serde_json::Value> {
        let taken = self
            .outcome
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match taken {
            Some(r) => r,
            None if self.prepared.is_some() || !self.emitted => {
                Err(Error::source_failed("the Redis stream was never read"))
            }
            None => Err(Error::source_failed(format!(
                "the capture from Redis at {} did not complete",
                self.url.address()
            ))),
        }
    }
}

/// The metadata every Redis snapshot starts with.
fn base_meta(url: &RedisUrl, server_version: &str, rdb: bool) -> serde_json::Value {
    let mut base = serde_json::json!({
        "server_version": server_version,
    });
    if let (Some(db), true) = (url.db, rdb) {
        // An RDB holds every database; restores default to this one.
        base["selected_databases"] = serde_json::json!([db]);
    }
    base
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Refuses a URL's `/db` that the server does not have (its
/// `databases` setting, or a refused `SELECT` where `CONFIG` is not
/// allowed).
async fn check_database(url: &RedisUrl, con: &mut MultiplexedConnection, db: u32) -> Result<()> {
    let configured: Option<u32> = redis::cmd("CONFIG")
        .arg("GET")
        .arg("databases")
        .query_async::<Vec<String>>(con)
        .await
        .ok()
        .and_then(|v| v.get(1).and_then(|n| n.parse().ok()));
    let exists = if let Some(n) = configured {
        db < n
    } else {
        let mut pipe = redis::pipe();
        pipe.cmd("SELECT").arg(db).cmd("SELECT").arg(0);
        pipe.query_async::<()>(con).await.is_ok()
    };
    if exists {
        return Ok(());
    }
    let count = configured.map_or_else(
        || "fewer databases".to_owned(),
        |n| format!("{n} databases (0 to {})", n.saturating_sub(1)),
    );
    Err(Error::Config(format!(
        "{}: Redis at {} has {count}, so there is no database {db}; give one of them in the URL",
        url.redacted(),
        url.address()
    )))
}

/// The databases that hold keys, from `INFO keyspace`.
async fn keyspace_dbs(url: &RedisUrl, con: &mut MultiplexedConnection) -> Result<Vec<u32>> {
    let info: String = redis::cmd("INFO")
        .arg("keyspace")
        .query_async(con)
        .await
        .map_err(|e| url.error("reading INFO keyspace", e))?;
    Ok(keyspace(&info).into_keys().collect())
}

/// `dbN:keys=K,...` lines of `INFO keyspace`.
pub(crate) fn keyspace(info: &str) -> BTreeMap<u32, u64> {
    let mut out = BTreeMap::new();
    for line in info.lines() {
        let Some(rest) = line.strip_prefix("db") else {
            continue;
        };
        let Some((n, fields)) = rest.split_once(':') else {
            continue;
        };
        let Ok(db) = n.parse::<u32>() else {
            continue;
        };
        let keys = fields
            .split(',')
            .find_map(|f| f.strip_prefix("keys="))
            .and_then(|k| k.trim().parse().ok())
            .unwrap_or(0);
        out.insert(db, keys);
    }
    out
}

/// Replication handshake: announce the capabilities of `redis-cli --rdb`
/// (diskless transfers, RDB only), ask for a full resynchronisation, and
/// read up to the first byte of the RDB.
async fn start_sync(url: &RedisUrl) -> Result<Sync> {
    let mut conn = url.connect_raw().await?;
    announce(url, &mut conn).await?;
    // Redis 7.0+: the master closes the link after the RDB instead of
    // streaming commands; older servers answer with an error, which is
    // harmless.
    conn.send(&[b"REPLCONF", b"rdb-only", b"1"]).await?;
    let _ = conn.line().await?;
    conn.send(&[b"PSYNC", b"?", b"-1"]).await?;
    let line = conn.line().await?;
    let time_ms = now_ms();
    if line.starts_with('-') {
        return Err(refused(url, &line));
    }
    let (replid, offset, line) = if let Some(rest) = line.strip_prefix("+FULLRESYNC ") {
        let mut it = rest.split_whitespace();
        let replid = it.next().map(str::to_owned);
        let offset = it.next().and_then(|o| o.parse().ok());
        (replid, offset, conn.line().await?)
    } else if line.starts_with("+CONTINUE") {
        return Err(Error::source_failed(format!(
            "Redis at {} offered a partial resynchronisation instead of an RDB",
            url.address()
        )));
    } else {
        (None, None, line)
    };
    let body = transfer_header(url, &line)?;
    Ok(Sync {
        conn,
        body,
        replid,
        offset,
        time_ms,
    })
}

/// Feeds a blocking reader from a channel of chunks.
pub(crate) struct ChannelReader {
    rx: async_channel::Receiver<Bytes>,
    cur: Bytes,
}

impl ChannelReader {
    pub(crate) fn new(rx: async_channel::Receiver<Bytes>) -> Self {
        ChannelReader {
            rx,
            cur: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.cur.is_empty() {
            match self.rx.recv_blocking() {
                Ok(b) => self.cur = b,
                Err(_) => return Ok(0),
            }
        }
        let n = buf.len().min(self.cur.len());
        buf[..n].copy_from_slice(&self.cur[..n]);
        let _ = self.cur.split_to(n);
        Ok(n)
    }
}

/// What the parser learnt from an RDB.
#[derive(Debug, Default)]
pub(crate) struct RdbSummary {
    pub(crate) version: u32,
    pub(crate) aux: BTreeMap<String, String>,
    pub(crate) dbs: BTreeMap<u64, (u64, u64)>,
    pub(crate) types: BTreeMap<&'static str, u64>,
    pub(crate) functions: u64,
    pub(crate) module_types: BTreeSet<String>,
    pub(crate) module_aux: BTreeSet<String>,
    pub(crate) checksum: Option<u64>,
    /// Keys without elements, per database (Redis skips them at load;
    /// not counted in `dbs`).
    pub(crate) empty: BTreeMap<u64, u64>,
    /// Bytes after the end of the RDB and its checksum (Redis ignores
    /// them).
    pub(crate) trailing: u64,
}

impl RdbSummary {
    pub(crate) fn keys(&self) -> u64 {
        self.dbs.values().map(|(k, _)| k).sum()
    }

    pub(crate) fn databases_json(&self) -> serde_json::Value {
        let mut out = serde_json::Map::new();
        for (db, (k, e)) in &self.dbs {
            out.insert(db.to_string(), serde_json::json!({"keys": k, "expires": e}));
        }
        for (db, n) in &self.empty {
            let entry = out
                .entry(db.to_string())
                .or_insert_with(|| serde_json::json!({"keys": 0, "expires": 0}));
            entry["empty_keys"] = (*n).into();
        }
        out.into()
    }
}

/// Reads a whole RDB, counting keys per database and checking the CRC64.
pub(crate) fn summarize<R: Read>(src: R) -> std::result::Result<RdbSummary, RdbError> {
    let mut p = Parser::new(src, false)?.without_key_names();
    let mut s = RdbSummary {
        version: p.version(),
        ..RdbSummary::default()
    };
    while let Some(ev) = p.next()? {
        match ev {
            Event::Aux { key, value } => {
                s.aux.insert(
                    String::from_utf8_lossy(&key).into_owned(),
                    String::from_utf8_lossy(&value).into_owned(),
                );
            }
            Event::Key(k) if k.empty => {
                *s.empty.entry(k.db).or_default() += 1;
            }
            Event::Key(k) => {
                let e = s.dbs.entry(k.db).or_default();
                e.0 += 1;
                if k.expire_ms.is_some() {
                    e.1 += 1;
                }
                *s.types.entry(rdb::types::kind(k.rdb_type)).or_default() += 1;
                if let Some(m) = k.module {
                    s.module_types.insert(m);
                }
            }
            Event::Function { .. } => s.functions += 1,
            Event::ModuleAux { module } => {
                s.module_aux.insert(module);
            }
            Event::End { stored } => s.checksum = stored,
            Event::SelectDb(_) | Event::ResizeDb { .. } | Event::SlotInfo { .. } => {}
        }
    }
    s.trailing = p.trailing()?;
    Ok(s)
}

fn io_err(msg: String) -> std::io::Error {
    std::io::Error::other(msg)
}

fn set_outcome(outcome: &Outcome, r: Result<serde_json::Value>) {
    *outcome.lock().unwrap_or_else(PoisonError::into_inner) = Some(r);
}

/// Starts the transfer and returns the reader the pipeline consumes. A
/// task copies the RDB from the connection to the pipeline and to a
/// parser thread; when the parser finds the RDB corrupt, the stream fails.
fn rdb_reader(input: RdbInput, outcome: Outcome, base: serde_json::Value) -> AsyncReader {
    let (tx, rx) = async_channel::bounded::<std::io::Result<Bytes>>(QUEUE);
    tokio::spawn(async move {
        let (ptx, prx) = async_channel::bounded::<Bytes>(QUEUE);
        let parser = tokio::task::spawn_blocking(move || summarize(ChannelReader::new(prx)));
        let mut fan = Fan { tx: &tx, ptx: &ptx };
        let (copied, replid, offset, transfer, time_ms) = match input {
            RdbInput::Conn(Sync {
                mut conn,
                body,
                replid,
                offset,
                time_ms,
            }) => {
                let transfer = body.transfer();
                let copied = copy_body(&mut conn, body, &mut fan).await;
                (copied, replid, offset, transfer, time_ms)
            }
            RdbInput::Fed(f) => {
                let mut total = 0u64;
                let copied = loop {
                    match f.rx.recv().await {
                        Ok(Ok(b)) => {
                            total += b.len() as u64;
                            if let Err(e) = fan.send(b).await {
                                break Err(e);
                            }
                        }
                        Ok(Err(e)) => break Err(e),
                        Err(_) => break Ok(total),
                    }
                };
                (
                    copied,
                    Some(f.replid),
                    Some(f.offset),
                    f.transfer,
                    f.time_ms,
                )
            }
        };
        drop(ptx);
        let parsed = match parser.await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(e) => Err(format!("the RDB parser failed: {e}")),
        };
        let result = match (copied, parsed) {
            (Ok(bytes), Ok(s)) => {
                let mut m = base.as_object().cloned().unwrap_or_default();
                m.insert("mode".into(), "rdb".into());
                m.insert("stream".into(), RDB_STREAM.into());
                m.insert("rdb_version".into(), s.version.into());
                m.insert("rdb_bytes".into(), bytes.into());
                m.insert("transfer".into(), transfer.into());
                m.insert(
                    "replication".into(),
                    serde_json::json!({
                        "replid": replid.or_else(|| s.aux.get("repl-id").cloned()),
                        "offset": offset.or_else(|| s.aux.get("repl-offset").and_then(|o| o.parse().ok())),
                        "time_ms": time_ms,
                    }),
                );
                m.insert("keys".into(), s.keys().into());
                m.insert("databases".into(), s.databases_json());
                m.insert(
                    "types".into(),
                    serde_json::to_value(&s.types).unwrap_or_default(),
                );
                m.insert("functions".into(), s.functions.into());
                m.insert(
                    "module_types".into(),
                    serde_json::to_value(&s.module_types).unwrap_or_default(),
                );
                if !s.module_aux.is_empty() {
                    m.insert(
                        "module_aux".into(),
                        serde_json::to_value(&s.module_aux).unwrap_or_default(),
                    );
                }
                let empty: u64 = s.empty.values().sum();
                if empty > 0 {
                    m.insert("empty_keys".into(), empty.into());
                }
                if s.trailing > 0 {
                    m.insert("trailing_bytes".into(), s.trailing.into());
                }
                m.insert(
                    "checksum".into(),
                    s.checksum
                        .map_or_else(|| "none".to_owned(), |c| format!("crc64:{c:016x}"))
                        .into(),
                );
                if let Some(v) = s.aux.get("redis-ver") {
                    m.insert("rdb_redis_version".into(), v.clone().into());
                }
                Ok(serde_json::Value::Object(m))
            }
            // A parser error explains a failed copy better than the copy's
            // own error (the copy stops when the parser gives up).
            (_, Err(e)) | (Err(e), Ok(_)) => Err(e),
        };
        match result {
            Ok(meta) => set_outcome(&outcome, Ok(meta)),
            Err(e) => {
                let _ = tx.send(Err(io_err(e.clone()))).await;
                set_outcome(&outcome, Err(Error::source_failed(e)));
            }
        }
    });
    Box::new(tokio_util::io::StreamReader::new(Box::pin(rx)))
}

/// The pipeline and the parser of a backup.
struct Fan<'a> {
    tx: &'a async_channel::Sender<std::io::Result<Bytes>>,
    ptx: &'a async_channel::Sender<Bytes>,
}

impl ChunkSink for Fan<'_> {
    async fn send(&mut self, b: Bytes) -> std::result::Result<(), String> {
        self.ptx
            .send(b.clone())
            .await
            .map_err(|_| "the RDB parser stopped".to_owned())?;
        self.tx
            .send(Ok(b))
            .await
            .map_err(|_| "the backup stopped reading the RDB".to_owned())
    }
}

struct KeysJob {
    url: RedisUrl,
    con: MultiplexedConnection,
    dbs: Vec<u32>,
    filter: KeyFilter,
    pexpiretime: bool,
    functions: bool,
}

#[derive(Default)]
struct KeysStats {
    dbs: BTreeMap<u32, (u64, u64)>,
    vanished: u64,
    max_version: u32,
    types: BTreeMap<&'static str, u64>,
    module_types: BTreeSet<String>,
    functions: bool,
}

fn keys_reader(job: KeysJob, outcome: Outcome, base: serde_json::Value) -> AsyncReader {
    let (tx, rx) = async_channel::bounded::<std::io::Result<Bytes>>(QUEUE);
    tokio::spawn(async move {
        let started = now_ms();
        let scanned = job.dbs.clone();
        match run_keys(job, &tx).await {
            Ok(st) => {
                let mut m = base.as_object().cloned().unwrap_or_default();
                m.insert("mode".into(), "keys".into());
                m.insert("stream".into(), KEYS_STREAM.into());
                m.insert("rdb_version".into(), st.max_version.into());
                let keys: u64 = st.dbs.values().map(|(k, _)| k).sum();
                m.insert("keys".into(), keys.into());
                m.insert(
                    "databases".into(),
                    st.dbs
                        .iter()
                        .map(|(db, (k, e))| {
                            (db.to_string(), serde_json::json!({"keys": k, "expires": e}))
                        })
                        .collect::<serde_json::Map<_, _>>()
                        .into(),
                );
                m.insert("scanned_databases".into(), scanned.into());
                m.insert(
                    "types".into(),
                    serde_json::to_value(&st.types).unwrap_or_default(),
                );
                m.insert(
                    "module_types".into(),
                    serde_json::to_value(&st.module_types).unwrap_or_default(),
                );
                m.insert("vanished_during_scan".into(), st.vanished.into());
                m.insert("functions".into(), st.functions.into());
                m.insert("started_ms".into(), started.into());
                m.insert("finished_ms".into(), now_ms().into());
                m.insert(
                    "consistency".into(),
                    "per key: keys are read one by one while the server keeps running, so the snapshot is not a single point in time".into(),
                );
                set_outcome(&outcome, Ok(serde_json::Value::Object(m)));
            }
            Err(e) => {
                let _ = tx.send(Err(io_err(e.to_string()))).await;
                set_outcome(&outcome, Err(e));
            }
        }
    });
    Box::new(tokio_util::io::StreamReader::new(Box::pin(rx)))
}

type Batch = Vec<Vec<u8>>;

async fn run_keys(
    job: KeysJob,
    tx: &async_channel::Sender<std::io::Result<Bytes>>,
) -> Result<KeysStats> {
    let KeysJob {
        url,
        mut con,
        dbs,
        filter,
        pexpiretime,
        functions,
    } = job;
    let mut st = KeysStats::default();
    let mut w = FrameWriter::new();
    let stopped = || Error::source_failed("the backup stopped reading the key stream");
    if functions {
        let payload: Option<Vec<u8>> = redis::cmd("FUNCTION")
            .arg("DUMP")
            .query_async(&mut con)
            .await
            .map_err(|e| url.error("FUNCTION DUMP", e))?;
        if let Some(p) = payload {
            if has_functions(&p) {
                w.functions(&p);
                st.functions = true;
            }
        }
    }
    for db in dbs {
        w.db(db);
        st.dbs.entry(db).or_default();
        let mut cursor: u64 = 0;
        let mut inflight = FuturesOrdered::new();
        loop {
            let mut pipe = redis::pipe();
            pipe.cmd("SELECT").arg(db).ignore();
            let scan = pipe.cmd("SCAN").arg(cursor);
            if let Some(p) = filter.scan_pattern() {
                scan.arg("MATCH").arg(p);
            }
            scan.arg("COUNT").arg(SCAN_COUNT);
            let ((next, keys),): ((u64, Batch),) = pipe
                .query_async(&mut con)
                .await
                .map_err(|e| url.error(&format!("SCAN of database {db}"), e))?;
            cursor = next;
            let keys: Batch = keys.into_iter().filter(|k| filter.accepts(k)).collect();
            if !keys.is_empty() {
                inflight.push_back(dump_batch(url.clone(), con.clone(), db, keys, pexpiretime));
            }
            while inflight.len() >= DUMPS_IN_FLIGHT || (cursor == 0 && !inflight.is_empty()) {
                let Some(r) = inflight.next().await else {
                    break;
                };
                write_dumps(r?, &mut w, &mut st, db);
                if w.buf.len() >= 256 * 1024 {
                    tx.send(Ok(w.buf.split().freeze()))
                        .await
                        .map_err(|_| stopped())?;
                }
            }
            if cursor == 0 {
                break;
            }
        }
    }
    w.end();
    tx.send(Ok(w.buf.split().freeze()))
        .await
        .map_err(|_| stopped())?;
    Ok(st)
}

/// Whether a `FUNCTION DUMP` payload holds any library (an empty one is
/// just the version and checksum).
fn has_functions(payload: &[u8]) -> bool {
    payload.len() > 10
}

/// One key of a dump pipeline: name, payload (`None` if the key vanished
/// since the scan) and absolute expiry.
type Dumped = (Vec<u8>, Option<Vec<u8>>, Option<i64>);

async fn dump_batch(
    url: RedisUrl,
    mut con: MultiplexedConnection,
    db: u32,
    keys: Batch,
    pexpiretime: bool,
) -> Result<Vec<Dumped>> {
    let mut pipe = redis::pipe();
    pipe.cmd("SELECT").arg(db).ignore();
    for k in &keys {
        pipe.cmd("DUMP").arg(k);
        pipe.cmd(if pexpiretime { "PEXPIRETIME" } else { "PTTL" })
            .arg(k);
    }
    let asked = now_ms();
    let replies: Vec<redis::Value> = pipe
        .query_async(&mut con)
        .await
        .map_err(|e| url.error(&format!("DUMP of keys of database {db}"), e))?;
    if replies.len() != keys.len() * 2 {
        return Err(Error::source_failed(format!(
            "Redis at {}: {} replies to {} commands",
            url.address(),
            replies.len(),
            keys.len() * 2
        )));
    }
    let mut out = Vec::with_capacity(keys.len());
    let mut it = replies.into_iter();
    for k in keys {
        let dump = it.next();
        let ttl = it.next();
        let payload = match dump {
            Some(redis::Value::BulkString(b)) => Some(b),
            _ => None,
        };
        let ttl = match ttl {
            Some(redis::Value::Int(t)) => t,
            _ => -2,
        };
        let (payload, expire) = match ttl {
            -2 => (None, None),
            -1 => (payload, None),
            t if pexpiretime => (payload, Some(t)),
            t => (payload, Some(asked + t)),
        };
        out.push((k, payload, expire));
    }
    Ok(out)
}

fn write_dumps(batch: Vec<Dumped>, w: &mut FrameWriter, st: &mut KeysStats, db: u32) {
    for (key, payload, expire) in batch {
        let Some(p) = payload else {
            st.vanished += 1;
            continue;
        };
        if let Ok((t, value, v)) = rdb::split_dump_payload(&p) {
            st.max_version = st.max_version.max(v);
            *st.types.entry(rdb::types::kind(t)).or_default() += 1;
            if let Some(m) = rdb::module_of_value(t, value) {
                st.module_types.insert(m);
            }
        }
        w.key(&key, expire, &p);
        let e = st.dbs.entry(db).or_default();
        e.0 += 1;
        if expire.is_some() {
            e.1 += 1;
        }
    }
}
