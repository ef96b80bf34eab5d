//! Sending a restore's commands: the reading thread encodes `SELECT`,
//! `FUNCTION RESTORE` and `RESTORE` commands straight into chunks of
//! protocol bytes ([`Encoder`]), and one raw connection writes them while
//! a task reads the replies ([`send`]).
//!
//! The server runs commands on one thread, so what bounds a restore is
//! how busy that thread is kept: chunks are written back to back, up to
//! [`CHUNKS_IN_FLIGHT`] of them unanswered, and this process spends
//! little per key (no per-command objects, no parsed reply values; a key
//! is named only when the server refuses it).
//!
//! Plain strings (no expiry, no LRU or LFU hint) go as `MSETNX`s of up
//! to [`MSET_KEYS`] keys (`MSET` with `--drop`, as `RESTORE ... REPLACE`
//! overwrites): the server spends about 40 % less on them than on
//! `RESTORE`s (no command per key, no payload to check and decode), and a
//! key another client created meanwhile is refused as `RESTORE` refuses
//! it (`BUSYKEY`).

use std::collections::BTreeMap;
use std::sync::Arc;

use backup_core::progress::Progress;
use backup_core::{Error, Result};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::plan::{now_ms, target_err};
use super::report::Restored;
use crate::redis::conn::{retryable, RedisUrl};
use crate::redis::records::{show_key, Record, RecordSink};

/// Bytes of commands gathered into one chunk before it is handed to the
/// connection.
const CHUNK_BYTES: usize = 256 << 10;

/// Chunks written and not yet answered (about 8 MiB): enough that the
/// server always has commands to read while this process is descheduled.
const CHUNKS_IN_FLIGHT: usize = 32;

/// Chunks encoded and not yet written.
const CHUNKS_QUEUED: usize = 4;

/// Keys of one `MSET` at most.
const MSET_KEYS: u32 = 128;

/// Bytes of one `MSET`'s arguments after which it is sent.
const MSET_BYTES: usize = 64 << 10;

/// What one command of a chunk was, for messages about its reply.
#[derive(Debug, Clone, Copy)]
enum Sent {
    /// `SELECT` of this database.
    Select(u32),
    /// `FUNCTION RESTORE` of the snapshot's libraries.
    Functions,
    /// `RESTORE` of the key at `at..at + len` of the chunk, of this value
    /// type.
    Restore { at: u32, len: u32, rdb_type: u8 },
    /// `MSETNX` (or `MSET`) of `keys` strings, the first at `at..at +
    /// len` of the chunk.
    Strings { keys: u32, at: u32, len: u32 },
}

/// Plain strings waiting to be sent as one `MSETNX`: their arguments,
/// encoded, how many keys they are, and where the first key is in them.
#[derive(Debug, Default)]
struct Strings {
    args: Vec<u8>,
    keys: u32,
    first: (usize, usize),
}

/// Commands encoded as protocol bytes, with what each one was.
#[derive(Debug, Default)]
pub(super) struct Chunk {
    buf: Vec<u8>,
    sent: Vec<Sent>,
    /// Payload bytes, for progress.
    bytes: u64,
}

impl Chunk {
    /// The key at `at..at + len`, printable.
    fn key(&self, at: u32, len: u32) -> String {
        self.buf
            .get(at as usize..at as usize + len as usize)
            .map(show_key)
            .unwrap_or_default()
    }
}

/// Encodes the selected keys into chunks of commands, counting what it
/// restores and skips (the [`RecordSink`] of a restore).
pub(super) struct Encoder {
    tx: async_channel::Sender<Chunk>,
    /// Source database to target database.
    map: BTreeMap<u32, u32>,
    pub(super) restored: Restored,
    replace: bool,
    /// Expiries up to this time are held (a point-in-time restore).
    hold: Option<i64>,
    /// Keys that expire by this time are skipped (renewed per chunk).
    now: i64,
    /// Whether function libraries are restored.
    functions: bool,
    cur: Chunk,
    db: Option<u32>,
    strings: Strings,
}

impl Encoder {
    /// An encoder sending on `tx`, starting from `restored` (the counts
    /// before anything is restored).
    pub(super) fn new(
        tx: async_channel::Sender<Chunk>,
        map: BTreeMap<u32, u32>,
        restored: Restored,
        replace: bool,
        hold: Option<i64>,
        functions: bool,
    ) -> Self {
        Encoder {
            tx,
            map,
            restored,
            replace,
            hold,
            now: now_ms(),
            functions,
            cur: Chunk::default(),
            db: None,
            strings: Strings::default(),
        }
    }

    /// A channel for [`Encoder::new`] and [`send`].
    pub(super) fn channel() -> (async_channel::Sender<Chunk>, async_channel::Receiver<Chunk>) {
        async_channel::bounded(CHUNKS_QUEUED)
    }

    fn flush(&mut self) -> Result<()> {
        self.flush_strings();
        if self.cur.sent.is_empty() {
            return Ok(());
        }
        let chunk = std::mem::take(&mut self.cur);
        self.cur.buf.reserve(CHUNK_BYTES + CHUNK_BYTES / 4);
        self.now = now_ms();
        self.tx.send_blocking(chunk).map_err(|_| Error::Cancelled)
    }

    /// Moves the waiting strings into the chunk as one `MSETNX` (`MSET`
    /// when replacing).
    fn flush_strings(&mut self) {
        let keys = std::mem::take(&mut self.strings.keys);
        if keys == 0 {
            return;
        }
        let buf = &mut self.cur.buf;
        command(buf, 1 + 2 * keys as usize);
        bulk(buf, if self.replace { b"MSET" } else { b"MSETNX" });
        let (first, len) = self.strings.first;
        let at = buf.len() + first;
        buf.append(&mut self.strings.args);
        self.cur.sent.push(Sent::Strings {
            keys,
            at: u32::try_from(at).unwrap_or(u32::MAX),
            len: u32::try_from(len).unwrap_or(0),
        });
    }

    /// Adds a plain string to the waiting `MSETNX`.
    fn string(&mut self, key: &[u8], value: &[u8]) {
        bulk(&mut self.strings.args, key);
        if self.strings.keys == 0 {
            self.strings.first = (self.strings.args.len() - 2 - key.len(), key.len());
        }
        bulk(&mut self.strings.args, value);
        self.strings.keys += 1;
        if self.strings.keys >= MSET_KEYS || self.strings.args.len() >= MSET_BYTES {
            self.flush_strings();
        }
    }

    fn select(&mut self, db: u32) {
        if self.db != Some(db) {
            self.flush_strings();
            let mut n = itoa_buf();
            command(&mut self.cur.buf, 2);
            bulk(&mut self.cur.buf, b"SELECT");
            bulk(&mut self.cur.buf, fmt_u64(&mut n, u64::from(db)));
            self.cur.sent.push(Sent::Select(db));
            self.db = Some(db);
        }
    }

    /// `RESTORE` of `r` with the absolute expiry `expire_ms`.
    fn restore(&mut self, r: &Record, expire_ms: Option<i64>) {
        let args = 4
            + usize::from(expire_ms.is_some())
            + usize::from(self.replace)
            + if r.freq.is_some() || r.idle.is_some() {
                2
            } else {
                0
            };
        let buf = &mut self.cur.buf;
        let mut n = itoa_buf();
        command(buf, args);
        bulk(buf, b"RESTORE");
        header(buf, r.key.len());
        let at = buf.len();
        buf.extend_from_slice(&r.key);
        buf.extend_from_slice(b"\r\n");
        let ttl = expire_ms.map_or(0, |ms| u64::try_from(ms).unwrap_or(0));
        bulk(buf, fmt_u64(&mut n, ttl));
        bulk(buf, &r.payload);
        if expire_ms.is_some() {
            bulk(buf, b"ABSTTL");
        }
        if self.replace {
            bulk(buf, b"REPLACE");
        }
        if let Some(f) = r.freq {
            bulk(buf, b"FREQ");
            bulk(buf, fmt_u64(&mut n, u64::from(f)));
        } else if let Some(i) = r.idle {
            bulk(buf, b"IDLETIME");
            bulk(buf, fmt_u64(&mut n, i));
        }
        self.cur.sent.push(Sent::Restore {
            at: u32::try_from(at).unwrap_or(u32::MAX),
            len: u32::try_from(r.key.len()).unwrap_or(0),
            rdb_type: r.rdb_type,
        });
        self.cur.bytes += r.payload.len() as u64;
    }
}

impl RecordSink for Encoder {
    fn key(&mut self, r: Record) -> Result<()> {
        let to = self.map.get(&r.db).copied().unwrap_or(r.db);
        let Some(entry) = self.restored.dbs.get_mut(&to) else {
            return Ok(());
        };
        let expire_ms = match (self.hold, r.expire_ms) {
            // A point-in-time restore: the replay may still change keys
            // that expire before the target time, so they are restored
            // with the held expiry and noted for the replay to settle.
            (Some(limit), Some(e)) if e <= limit => {
                self.restored.held.push((to, r.key.clone(), e));
                Some(super::replay::HELD)
            }
            (_, Some(e)) if e <= self.now => {
                entry.expired_skipped += 1;
                return Ok(());
            }
            (_, e) => e,
        };
        entry.restored += 1;
        if expire_ms.is_some() {
            entry.with_ttl += 1;
        }
        let plain = expire_ms.is_none()
            && r.idle.is_none()
            && r.freq.is_none()
            && r.rdb_type == crate::redis::rdb::types::STRING;
        self.select(to);
        match plain
            .then(|| crate::redis::rdb::string_of_payload(&r.payload))
            .flatten()
        {
            Some(value) => {
                self.string(&r.key, &value);
                self.cur.bytes += r.payload.len() as u64;
            }
            None => self.restore(&r, expire_ms),
        }
        if self.cur.buf.len() >= CHUNK_BYTES {
            self.flush()?;
        }
        Ok(())
    }

    fn functions(&mut self, payload: Vec<u8>) -> Result<()> {
        if !self.functions {
            return Ok(());
        }
        let buf = &mut self.cur.buf;
        command(buf, if self.replace { 4 } else { 3 });
        bulk(buf, b"FUNCTION");
        bulk(buf, b"RESTORE");
        bulk(buf, &payload);
        if self.replace {
            bulk(buf, b"REPLACE");
        }
        self.cur.sent.push(Sent::Functions);
        self.cur.bytes += payload.len() as u64;
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.flush()?;
        // The encoder outlives the stream (it carries the counts back):
        // the sending side must see the end now.
        self.tx.close();
        Ok(())
    }
}

fn command(buf: &mut Vec<u8>, args: usize) {
    let mut n = itoa_buf();
    buf.push(b'*');
    buf.extend_from_slice(fmt_u64(&mut n, args as u64));
    buf.extend_from_slice(b"\r\n");
}

fn header(buf: &mut Vec<u8>, len: usize) {
    let mut n = itoa_buf();
    buf.push(b'$');
    buf.extend_from_slice(fmt_u64(&mut n, len as u64));
    buf.extend_from_slice(b"\r\n");
}

fn bulk(buf: &mut Vec<u8>, arg: &[u8]) {
    header(buf, arg.len());
    buf.extend_from_slice(arg);
    buf.extend_from_slice(b"\r\n");
}

fn itoa_buf() -> [u8; 20] {
    [0; 20]
}

/// `v` in decimal, written at the end of `buf`.
fn fmt_u64(buf: &mut [u8; 20], mut v: u64) -> &[u8] {
    let mut i = buf.len();
    loop {
        i -= 1;
        buf[i] = b'0' + (v % 10) as u8;
        v /= 10;
        if v == 0 {
            return &buf[i..];
        }
    }
}

/// Writes the chunks of `rx` to the server of `url` on a connection of
/// its own, and reads their replies.
///
/// # Errors
///
/// The first command the server refused (with its key), or a failed
/// connection.
pub(super) async fn send(
    url: &RedisUrl,
    rx: &async_channel::Receiver<Chunk>,
    replace: bool,
    progress: &Arc<dyn Progress>,
) -> Result<()> {
    let conn = url.connect_raw().await.map_err(Error::into_target)?;
    let (r, mut w) = tokio::io::split(conn.io.into_inner());
    let (atx, arx) = async_channel::bounded::<Chunk>(CHUNKS_IN_FLIGHT);
    let replies = tokio::spawn(read_replies(
        r,
        arx,
        url.clone(),
        replace,
        Arc::clone(progress),
    ));
    let mut written = Ok(());
    while let Ok(chunk) = rx.recv().await {
        if let Err(e) = w.write_all(&chunk.buf).await {
            written = Err(Error::target_explained(
                format!("restoring into Redis at {}: {e}", url.address()),
                e,
                true,
            ));
            break;
        }
        if atx.send(chunk).await.is_err() {
            // The reader stopped: its error is the one.
            break;
        }
    }
    drop(atx);
    let _ = w.flush().await;
    let read = replies
        .await
        .map_err(|e| Error::target_caused("reading the server's replies failed", e))?;
    // A refused command explains a failed write (the server closed the
    // connection after it).
    read.and(written)
}

/// Reads the replies of the chunks of `arx`, in order; fails on the
/// first error reply.
async fn read_replies(
    mut r: tokio::io::ReadHalf<Box<dyn crate::redis::conn::Stream>>,
    arx: async_channel::Receiver<Chunk>,
    url: RedisUrl,
    replace: bool,
    progress: Arc<dyn Progress>,
) -> Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(64 << 10);
    let mut at = 0;
    while let Ok(chunk) = arx.recv().await {
        for sent in &chunk.sent {
            let line = loop {
                if let Some(nl) = memchr::memchr(b'\n', &buf[at..]) {
                    let line = at..at + nl + 1;
                    at += nl + 1;
                    break line;
                }
                buf.drain(..at);
                at = 0;
                if buf.capacity() - buf.len() < 16 << 10 {
                    buf.reserve(64 << 10);
                }
                let n = r.read_buf(&mut buf).await.map_err(|e| {
                    Error::target_explained(
                        format!("restoring into Redis at {}: {e}", url.address()),
                        e,
                        true,
                    )
                })?;
                if n == 0 {
                    return Err(Error::target_failed(format!(
                        "restoring into Redis at {}: the server closed the connection",
                        url.address()
                    )));
                }
            };
            let reply = &buf[line];
            match reply.first() {
                Some(b'+') => {}
                // MSETNX: 1 when it set every key, 0 when one existed.
                Some(b':') if matches!(sent, Sent::Strings { .. }) => {
                    if let (Sent::Strings { keys, at, len }, false) =
                        (*sent, reply.starts_with(b":1"))
                    {
                        return Err(busy_strings(&url, keys, &chunk.key(at, len)));
                    }
                }
                Some(b'-') => return Err(refusal(&url, reply, *sent, &chunk, replace)),
                _ => {
                    return Err(Error::target_failed(format!(
                        "restoring into Redis at {}: unexpected reply {}",
                        url.address(),
                        show_key(reply)
                    )))
                }
            }
        }
        progress.add_bytes(chunk.bytes);
    }
    Ok(())
}

/// The error of a refused command, explained.
fn refusal(url: &RedisUrl, reply: &[u8], sent: Sent, chunk: &Chunk, replace: bool) -> Error {
    let e = match redis::parse_redis_value(reply) {
        Ok(redis::Value::ServerError(e)) => redis::RedisError::from(e),
        Err(e) => e,
        Ok(_) => redis::RedisError::from((
            redis::ErrorKind::Extension,
            "An error was signalled by the server",
            String::from_utf8_lossy(reply).trim_end().to_owned(),
        )),
    };
    match sent {
        Sent::Select(db) => target_err(url, &format!("SELECT {db}"), e),
        Sent::Functions => functions_error(url, e, replace),
        Sent::Strings { keys, .. } => target_err(url, &format!("MSETNX of {keys} strings"), e),
        Sent::Restore { at, len, rdb_type } => {
            restore_error(url, e, &chunk.key(at, len), Some(rdb_type))
        }
    }
}

/// An `MSETNX` that set nothing because one of its keys existed,
/// explained as a refused `RESTORE` is.
fn busy_strings(url: &RedisUrl, keys: u32, first: &str) -> Error {
    Error::target_failed(format!(
        "one of {keys} string keys of the snapshot (the first {first}) already exists in {} (BUSYKEY; MSETNX set none of them): another client created it after the check",
        url.redacted()
    ))
}

/// A refused `FUNCTION RESTORE`, explained.
fn functions_error(url: &RedisUrl, e: redis::RedisError, replace: bool) -> Error {
    let msg = format!(
        "restoring the snapshot's functions into {}: {e}{}",
        url.address(),
        if replace {
            ""
        } else {
            " (with --drop, libraries of the same name are replaced)"
        }
    );
    let again = retryable(&e);
    Error::target_explained(msg, e, again)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_commands_are_encoded_as_resp() {
        let mut n = itoa_buf();
        assert_eq!(fmt_u64(&mut n, 0), b"0");
        assert_eq!(fmt_u64(&mut n, 1_234_567), b"1234567");
        assert_eq!(fmt_u64(&mut n, u64::MAX), u64::MAX.to_string().as_bytes());
        let (tx, rx) = Encoder::channel();
        let mut restored = Restored::default();
        restored
            .dbs
            .insert(3, super::super::report::DbResult::default());
        let mut e = Encoder::new(tx, BTreeMap::from([(0, 3)]), restored, true, None, true);
        e.key(Record {
            db: 0,
            key: b"k".to_vec(),
            expire_ms: Some(i64::MAX),
            idle: None,
            freq: Some(5),
            rdb_type: 0,
            payload: b"PAY".to_vec(),
        })
        .unwrap();
        // A key of a database the restore does not select.
        e.key(Record {
            db: 1,
            key: b"other".to_vec(),
            expire_ms: None,
            idle: None,
            freq: None,
            rdb_type: 0,
            payload: b"X".to_vec(),
        })
        .unwrap();
        e.finish().unwrap();
        let chunk = rx.try_recv().unwrap();
        let want = format!(
            "*2\r\n$6\r\nSELECT\r\n$1\r\n3\r\n*8\r\n$7\r\nRESTORE\r\n$1\r\nk\r\n${}\r\n{}\r\n$3\r\nPAY\r\n$6\r\nABSTTL\r\n$7\r\nREPLACE\r\n$4\r\nFREQ\r\n$1\r\n5\r\n",
            i64::MAX.to_string().len(),
            i64::MAX
        );
        assert_eq!(String::from_utf8_lossy(&chunk.buf), want);
        assert_eq!(chunk.sent.len(), 2);
        let Sent::Restore { at, len, .. } = chunk.sent[1] else {
            panic!("{:?}", chunk.sent)
        };
        assert_eq!(&chunk.buf[at as usize..(at + len) as usize], b"k");
        assert_eq!(e.restored.dbs[&3].restored, 1);
        assert_eq!(e.restored.dbs[&3].with_ttl, 1);
    }

    fn string_record(key: &str, value: &[u8], expire_ms: Option<i64>) -> Record {
        let mut raw = vec![u8::try_from(value.len()).unwrap()];
        raw.extend_from_slice(value);
        Record {
            db: 0,
            key: key.as_bytes().to_vec(),
            expire_ms,
            idle: None,
            freq: None,
            rdb_type: 0,
            payload: crate::redis::rdb::dump_payload(0, &raw, 10),
        }
    }

    /// Plain strings go as one `MSETNX` per database, one with an expiry
    /// by `RESTORE`.
    #[test]
    fn plain_strings_go_as_msetnx() {
        let (tx, rx) = Encoder::channel();
        let mut restored = Restored::default();
        restored
            .dbs
            .insert(0, super::super::report::DbResult::default());
        let occupied = super::super::report::DbResult {
            source_db: 1,
            before: 4,
            ..Default::default()
        };
        restored.dbs.insert(1, occupied);
        let map = BTreeMap::from([(0, 0), (1, 1)]);
        let mut e = Encoder::new(tx, map, restored, false, None, true);
        e.key(string_record("a", b"1", None)).unwrap();
        e.key(string_record("t", b"x", Some(i64::MAX))).unwrap();
        e.key(string_record("b", b"22", None)).unwrap();
        let mut in_occupied = string_record("c", b"3", None);
        in_occupied.db = 1;
        e.key(in_occupied).unwrap();
        e.finish().unwrap();
        let chunk = rx.try_recv().unwrap();
        let text = String::from_utf8_lossy(&chunk.buf);
        let commands: Vec<&str> = text
            .split("\r\n")
            .filter(|w| ["SELECT", "RESTORE", "MSETNX"].contains(w))
            .collect();
        assert_eq!(
            commands,
            ["SELECT", "RESTORE", "MSETNX", "SELECT", "MSETNX"],
            "{text}"
        );
        assert!(
            text.contains("*5\r\n$6\r\nMSETNX\r\n$1\r\na\r\n$1\r\n1\r\n$1\r\nb\r\n$2\r\n22\r\n"),
            "{text}"
        );
        let Sent::Strings { keys: 2, at, len } = chunk.sent[2] else {
            panic!("{:?}", chunk.sent)
        };
        assert_eq!(&chunk.buf[at as usize..(at + len) as usize], b"a");
        assert_eq!(e.restored.dbs[&0].restored, 3);
        assert_eq!(e.restored.dbs[&1].restored, 1);
    }
}
