//! Reading a Redis snapshot's stream back as per-key records (RDB split
//! into `DUMP` payloads, or key-level frames), on a blocking thread.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex, PoisonError};

use backup_core::reader::SnapshotReader;
use backup_core::tree::Node;
use backup_core::{Error, Result};
use bytes::Bytes;
use futures::StreamExt;

use super::glob::KeyFilter;
use super::keyfile::{Frame, FrameReader};
use super::rdb::{self, opcode, Event, Parser};
use super::source::ChannelReader;

/// One key to restore.
#[derive(Debug)]
pub(crate) struct Record {
    /// Source database.
    pub(crate) db: u32,
    pub(crate) key: Vec<u8>,
    pub(crate) expire_ms: Option<i64>,
    pub(crate) idle: Option<u64>,
    pub(crate) freq: Option<u8>,
    /// The value type of the RDB format.
    pub(crate) rdb_type: u8,
    /// `DUMP` payload.
    pub(crate) payload: Vec<u8>,
}

/// What the reader sends on.
#[derive(Debug)]
pub(crate) enum Batch {
    /// A `FUNCTION RESTORE` payload.
    Functions(Vec<u8>),
    /// Keys that passed the selection.
    Keys(Vec<Record>),
}

/// Counts of a whole pass over the stream.
#[derive(Debug, Default, Clone)]
pub(crate) struct Totals {
    /// Every key in the stream, per source database.
    pub(crate) seen: BTreeMap<u32, u64>,
    /// Keys left out by the selection, per source database.
    pub(crate) filtered: BTreeMap<u32, u64>,
    /// Keys without elements, per source database: Redis skips them when
    /// it loads an RDB and `RESTORE` refuses them, so they are skipped
    /// (not counted in `seen`).
    pub(crate) empty: BTreeMap<u32, u64>,
    /// Selected keys holding module values, per module type, with one of
    /// them.
    pub(crate) modules: BTreeMap<String, (u64, Vec<u8>)>,
    /// Function libraries (RDB) or function payloads (keys).
    pub(crate) functions: u64,
    /// Stream bytes.
    pub(crate) bytes: u64,
}

/// Which keys to restore.
#[derive(Debug, Clone)]
pub(crate) struct Selection {
    /// Source databases to restore (all when `None`).
    pub(crate) dbs: Option<Vec<u32>>,
    pub(crate) keys: KeyFilter,
    /// Whether to produce records at all (a counting pass does not need
    /// payloads, but still parses everything).
    pub(crate) payloads: bool,
}

impl Selection {
    fn wants(&self, db: u32, key: &[u8]) -> bool {
        self.dbs.as_ref().is_none_or(|d| d.contains(&db)) && self.keys.accepts(key)
    }
}

const BATCH_KEYS: usize = 1000;
const BATCH_BYTES: usize = 4 * 1024 * 1024;

/// Streams a snapshot's Redis stream as batches of records. The
/// returned handle yields the totals, or the first error (a repository
/// error wins over the parse error it causes).
pub(crate) fn read_records(
    snapshot: &SnapshotReader,
    node: &Node,
    keys_mode: bool,
    sel: Selection,
) -> (
    async_channel::Receiver<Batch>,
    tokio::task::JoinHandle<Result<Totals>>,
) {
    let (tx, rx) = async_channel::bounded::<Batch>(4);
    let batcher = Batcher {
        tx,
        cur: Vec::new(),
        bytes: 0,
    };
    let handle = read_records_with(snapshot, node, keys_mode, sel, batcher);
    let handle = tokio::spawn(async move {
        match handle.await {
            Ok(r) => r.map(|(t, _)| t),
            Err(e) => Err(Error::target_caused("reading the snapshot failed", e)),
        }
    });
    (rx, handle)
}

/// Where a pass over a snapshot's stream puts the selected keys, on the
/// blocking thread that reads it.
pub(crate) trait RecordSink: Send + 'static {
    /// Takes the next selected key.
    ///
    /// # Errors
    ///
    /// An error stops the pass with it ([`Error::Cancelled`] when the
    /// receiving side went away).
    fn key(&mut self, r: Record) -> Result<()>;
    /// Takes a `FUNCTION RESTORE` payload, in stream order with the keys.
    ///
    /// # Errors
    ///
    /// As [`RecordSink::key`].
    fn functions(&mut self, payload: Vec<u8>) -> Result<()>;
    /// The stream ended (not called after an error).
    ///
    /// # Errors
    ///
    /// As [`RecordSink::key`].
    fn finish(&mut self) -> Result<()>;
}

/// Streams a snapshot's Redis stream into `sink` on a blocking thread.
/// The returned handle yields the totals and the sink, or the first
/// error (a repository error wins over the parse error it causes).
pub(crate) fn read_records_with<S: RecordSink>(
    snapshot: &SnapshotReader,
    node: &Node,
    keys_mode: bool,
    sel: Selection,
    mut sink: S,
) -> tokio::task::JoinHandle<Result<(Totals, S)>> {
    let (ctx, crx) = async_channel::bounded::<Bytes>(16);
    let repo_err: Arc<Mutex<Option<Error>>> = Arc::new(Mutex::new(None));
    let mut stream = snapshot.content(node);
    let slot = Arc::clone(&repo_err);
    tokio::spawn(async move {
        while let Some(r) = stream.next().await {
            match r {
                Ok(b) => {
                    if ctx.send(b).await.is_err() {
                        return;
                    }
                }
                Err(e) => {
                    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(e);
                    return;
                }
            }
        }
    });
    tokio::task::spawn_blocking(move || {
        let reader = CountingReader {
            inner: ChannelReader::new(crx),
            n: 0,
        };
        let r = if keys_mode {
            keys_records(reader, &sel, &mut sink)
        } else {
            rdb_records(reader, &sel, &mut sink)
        };
        let r = r.and_then(|t| sink.finish().map(|()| t));
        let taken = repo_err
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match (taken, r) {
            (Some(e), _) => Err(e),
            (None, r) => r.map(|t| (t, sink)),
        }
    })
}

struct CountingReader<R> {
    inner: R,
    n: u64,
}

impl<R: std::io::Read> std::io::Read for CountingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.n += n as u64;
        Ok(n)
    }
}

fn stopped() -> Error {
    Error::Cancelled
}

/// A [`RecordSink`] that sends batches of records on a channel.
struct Batcher {
    tx: async_channel::Sender<Batch>,
    cur: Vec<Record>,
    bytes: usize,
}

impl Batcher {
    fn flush(&mut self) -> Result<()> {
        if !self.cur.is_empty() {
            self.bytes = 0;
            self.tx
                .send_blocking(Batch::Keys(std::mem::take(&mut self.cur)))
                .map_err(|_| stopped())?;
        }
        Ok(())
    }
}

impl RecordSink for Batcher {
    fn key(&mut self, r: Record) -> Result<()> {
        self.bytes += r.payload.len() + r.key.len();
        self.cur.push(r);
        if self.cur.len() >= BATCH_KEYS || self.bytes >= BATCH_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn functions(&mut self, payload: Vec<u8>) -> Result<()> {
        self.flush()?;
        self.tx
            .send_blocking(Batch::Functions(payload))
            .map_err(|_| stopped())
    }

    fn finish(&mut self) -> Result<()> {
        self.flush()
    }
}

fn corrupt(e: impl std::fmt::Display) -> Error {
    Error::target_failed(format!(
        "the snapshot's Redis stream cannot be read: {e} (run `backup verify --read-data` on the repository)"
    ))
}

fn rdb_records<R: std::io::Read>(
    reader: CountingReader<R>,
    sel: &Selection,
    b: &mut impl RecordSink,
) -> Result<Totals> {
    let mut p = Parser::new(reader, false).map_err(corrupt)?;
    if sel.payloads {
        p = p.dump_payloads();
    }
    let version = p.version();
    let mut t = Totals::default();
    while let Some(ev) = p.next().map_err(corrupt)? {
        match ev {
            Event::Key(key) => {
                let db =
                    u32::try_from(key.db).map_err(|_| corrupt("database number out of range"))?;
                if key.empty {
                    *t.empty.entry(db).or_default() += 1;
                    continue;
                }
                *t.seen.entry(db).or_default() += 1;
                if !sel.wants(db, &key.key) {
                    *t.filtered.entry(db).or_default() += 1;
                    continue;
                }
                if let Some(m) = &key.module {
                    let e = t
                        .modules
                        .entry(m.clone())
                        .or_insert_with(|| (0, key.key.clone()));
                    e.0 += 1;
                }
                // The parser builds the payload (or records nothing).
                let payload = key.value.unwrap_or_default();
                b.key(Record {
                    db,
                    key: key.key,
                    expire_ms: key.expire_ms,
                    idle: key.idle,
                    freq: key.freq,
                    rdb_type: key.rdb_type,
                    payload,
                })?;
            }
            Event::Function { raw } => {
                t.functions += 1;
                if let Some(raw) = raw {
                    let mut body = vec![opcode::FUNCTION2];
                    body.extend_from_slice(&raw);
                    // A FUNCTION RESTORE payload: libraries, then version
                    // and CRC64 like a DUMP payload.
                    let mut payload = body;
                    payload.extend_from_slice(&(version as u16).to_le_bytes());
                    let crc = rdb::crc64(&payload);
                    payload.extend_from_slice(&crc.to_le_bytes());
                    b.functions(payload)?;
                }
            }
            _ => {}
        }
    }
    p.trailing().map_err(corrupt)?;
    t.bytes = p.offset();
    Ok(t)
}

fn keys_records<R: std::io::Read>(
    reader: CountingReader<R>,
    sel: &Selection,
    b: &mut impl RecordSink,
) -> Result<Totals> {
    let mut r = FrameReader::new(reader).map_err(corrupt)?;
    let mut t = Totals::default();
    let mut db = 0u32;
    while let Some(f) = r.next_frame().map_err(corrupt)? {
        match f {
            Frame::Db(d) => db = d,
            Frame::Key {
                key,
                expire_ms,
                payload,
            } => {
                *t.seen.entry(db).or_default() += 1;
                if !sel.wants(db, &key) {
                    *t.filtered.entry(db).or_default() += 1;
                    continue;
                }
                // The payload's checksum is checked before it goes anywhere.
                let (rdb_type, value, _) = rdb::split_dump_payload(&payload)
                    .map_err(|e| corrupt(format!("key {}: {e}", show_key(&key))))?;
                if let Some(m) = rdb::module_of_value(rdb_type, value) {
                    let e = t.modules.entry(m).or_insert_with(|| (0, key.clone()));
                    e.0 += 1;
                }
                b.key(Record {
                    db,
                    key,
                    expire_ms,
                    idle: None,
                    freq: None,
                    rdb_type,
                    payload: if sel.payloads { payload } else { Vec::new() },
                })?;
            }
            Frame::Functions(p) => {
                t.functions += 1;
                if sel.payloads {
                    b.functions(p)?;
                }
            }
            Frame::End(_) => {}
        }
    }
    Ok(t)
}

/// A key for messages: printable ASCII as is, other bytes escaped, long
/// keys shortened.
pub(crate) fn show_key(k: &[u8]) -> String {
    let mut s = String::new();
    for &b in k.iter().take(80) {
        if b.is_ascii_graphic() || b == b' ' {
            s.push(b as char);
        } else {
            let _ = write!(s, "\\x{b:02x}");
        }
    }
    if k.len() > 80 {
        s.push('…');
    }
    format!("`{s}`")
}
