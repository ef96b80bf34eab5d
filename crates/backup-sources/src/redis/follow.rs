//! Continuous capture of a Redis primary's replication stream (`backup
//! redis follow`, a daemon Redis job with `capture = "continuous"`).
//!
//! The follower is a replica as far as the primary can tell: it announces
//! itself (`REPLCONF capa eof psync2`), asks to continue where the stored
//! stream ends (`PSYNC <replid> <offset>`), and acknowledges what it has
//! stored (`REPLCONF ACK`, every second and when asked with `GETACK`), so
//! that `WAIT 1 ms` on the primary returns once a write is in the
//! repository. When the primary cannot continue (first start, its backlog
//! no longer holds the stored end, another replication history), it sends
//! an RDB (`FULLRESYNC`): the follower stores it as a base snapshot through
//! [`BaseStore`], records a gap when the stream lost a range, and reads the
//! command stream that follows on the same connection, so no write falls
//! between the base and the stream.
//!
//! Commands are gathered into slices bounded by time and size and stored
//! as capture pieces of the stream `redis-stream` / the replication id the
//! stream began with (`REPOSITORY_FORMAT.md` §21.3). A position is the
//! replication offset after a command (`master_repl_offset`); a piece
//! `[first, last)` holds the commands that end in that range, each with the
//! wall-clock time it arrived: the stream carries no times, so `--at TIME`
//! means "every command that had arrived by TIME", and `--at-offset N` is
//! exact.

use std::time::Duration;

use async_trait::async_trait;
use backup_core::repo::Repository;
use backup_core::source::Source;
use backup_core::{Error, FileKind, Id, Result};
use bytes::Bytes;
use chrono::{DateTime, Utc};
use tokio::io::AsyncBufReadExt;
use tokio_util::sync::CancellationToken;

use super::conn::{info_field, server_info, Mode, RawConn, RedisUrl};
use super::resp::parse_command;
use super::source::{Fed, RedisSource};
use super::transfer::{announce, copy_body, transfer_header, ChunkSink};
use crate::capture::follow::{passing, At, Batch, Capture, Link};
use crate::capture::{
    position_offset, CaptureEvent, CaptureKind, CaptureObserver, FollowOptions, FollowSummary,
};

/// The capture kind of the replication stream.
pub const STREAM_KIND: &str = "redis-stream";

/// The shortest slice time.
pub const MIN_SLICE_TIME: Duration = Duration::from_millis(100);

/// The default slice time: short, because a Redis primary keeps no
/// durable log a follower could read again later; what it has not stored
/// is lost with the primary.
pub const SLICE_TIME: Duration = Duration::from_millis(500);

/// Bytes of a piece record's header: end offset, arrival time, length.
pub(crate) const FRAME_HEADER: usize = 20;

/// Stores the base snapshots a follower takes after a full
/// resynchronisation (the operations layer runs its ordinary backup of
/// the source it is given).
#[async_trait]
pub trait BaseStore: Send + Sync {
    /// Backs `source` up as a snapshot; returns its id.
    ///
    /// # Errors
    ///
    /// The backup's errors.
    async fn store(&self, source: Box<dyn Source>) -> Result<Id>;
}

impl At for u64 {
    fn at(self) -> crate::capture::Position {
        crate::capture::Position::Offset(self)
    }

    fn of(record: &str) -> Option<Self> {
        position_offset(record)
    }
}

/// Where the stream stands: the stored stream's link (its identity is
/// the replication id it began with), and the primary's replication id
/// now (what `PSYNC` asks for; it changes when a replica is promoted and
/// continues the history).
#[derive(Debug, Clone)]
struct Position {
    link: Link<u64>,
    replid: String,
}

/// Adds `command`, ending at offset `end` and arrived `at`, to `slice`
/// with its frame header ([`frames`] reads it back).
fn add(slice: &mut Batch, command: &[u8], end: u64, at: DateTime<Utc>) {
    let len = u32::try_from(command.len()).unwrap_or(u32::MAX);
    slice.buf.extend_from_slice(&end.to_le_bytes());
    slice
        .buf
        .extend_from_slice(&at.timestamp_millis().to_le_bytes());
    slice.buf.extend_from_slice(&len.to_le_bytes());
    slice.add(command, Some(at));
}

/// Follows the replication stream of the primary `url` reaches into
/// `repo` until `cancel` fires (then what was read is stored as a last
/// slice) or an error that does not pass.
///
/// Errors that may pass (the server restarting, the network) are
/// reported to `observer`, and capture continues from the stored end with
/// a doubling wait up to a minute (`PSYNC` continues without a gap when
/// the primary's backlog still holds it).
///
/// # Errors
///
/// [`Error::Config`] for a URL in key mode or naming a database, bad
/// options; a server that refuses replication; [`Error::Locked`] when
/// another follower holds the stream; storage errors that do not pass.
pub async fn follow(
    repo: &Repository,
    url: &str,
    opts: &FollowOptions,
    bases: &dyn BaseStore,
    observer: &dyn CaptureObserver,
    cancel: &CancellationToken,
) -> Result<FollowSummary> {
    opts.check(MIN_SLICE_TIME)?;
    let url = RedisUrl::parse(url)?;
    if url.mode != Mode::Rdb {
        return Err(Error::Config(
            "capture follows the replication stream; ?mode=keys does not apply".to_owned(),
        ));
    }
    if let Some(db) = url.db {
        return Err(Error::Config(format!(
            "capture follows the whole server (every database): drop `/{db}` from the URL, and choose databases at restore time with --include or --rename"
        )));
    }
    let kind = CaptureKind::RedisStream;
    let cap = Capture::new(repo, opts, observer, cancel, kind, url.redacted());
    let mut follower = Follower {
        cap,
        url: &url,
        bases,
    };
    let mut pos = None;
    loop {
        let attempt = follower.run(&mut pos).await;
        if !follower.cap.again(attempt).await? {
            return Ok(follower.cap.summary);
        }
    }
}

/// The follower: its capture, the primary and where bases go.
struct Follower<'a> {
    cap: Capture<'a>,
    url: &'a RedisUrl,
    bases: &'a dyn BaseStore,
}

/// The replication facts of `INFO`.
struct ServerInfo {
    version: String,
    replid: String,
    replid2: String,
}

impl Follower<'_> {
    async fn info(&self) -> Result<ServerInfo> {
        let mut con = self.url.connect().await?;
        let info = server_info(self.url, &mut con).await?;
        let repl: String = redis::cmd("INFO")
            .arg("replication")
            .query_async(&mut con)
            .await
            .map_err(|e| self.url.error("INFO replication", e))?;
        if info_field(&repl, "role").as_deref() == Some("slave") {
            tracing::info!(
                "Following a replica of {}: its stream is the primary's.",
                info_field(&repl, "master_host").unwrap_or_default()
            );
        }
        Ok(ServerInfo {
            version: info_field(&info, "redis_version").unwrap_or_default(),
            replid: info_field(&repl, "master_replid").unwrap_or_default(),
            replid2: info_field(&repl, "master_replid2").unwrap_or_default(),
        })
    }

    /// The stored stream this server continues: the stream of its
    /// replication id (or of the one before a promotion) after its newest
    /// piece or, with no piece yet, after its newest base (so that a
    /// follower stopped between its base and its first piece does not
    /// take a second base).
    async fn resume(&self, server: &ServerInfo) -> Result<Option<Position>> {
        for identity in [&server.replid, &server.replid2] {
            if identity.is_empty() || identity.bytes().all(|b| b == b'0') {
                continue;
            }
            let Some(mut link) = self.cap.resume(identity).await? else {
                continue;
            };
            // A write-only key cannot open records: it continues from the
            // piece's name (its range) and the stream's identity (the
            // replication id), without the stored time.
            let mut replid = identity.clone();
            let readable = !self.cap.repo.key().is_write_only();
            if let (Some(n), true) = (&link.previous, readable) {
                let record = self.cap.repo.load_capture(n).await?;
                link.stored_time = record.time_last;
                if let Some(id) = record.details.get("replid").and_then(|r| r.as_str()) {
                    id.clone_into(&mut replid);
                }
            }
            return Ok(Some(Position { link, replid }));
        }
        Ok(None)
    }

    /// One connection's worth of following: handshake, base when needed,
    /// stream.
    async fn run(&mut self, pos: &mut Option<Position>) -> Result<()> {
        let server = self.info().await?;
        if pos.is_none() {
            *pos = self.resume(&server).await?;
        }
        let mut conn = self.url.connect_raw().await?;
        announce(self.url, &mut conn).await?;
        let ask = pos.as_ref().map_or_else(
            || ("?".to_owned(), "-1".to_owned()),
            |p| (p.replid.clone(), p.link.next.to_string()),
        );
        conn.send(&[b"PSYNC", ask.0.as_bytes(), ask.1.as_bytes()])
            .await?;
        let line = conn.line().await?;
        let time_ms = chrono::Utc::now().timestamp_millis();
        if let Some(rest) = line.strip_prefix("+FULLRESYNC ") {
            let mut it = rest.split_whitespace();
            let (Some(replid), Some(offset)) =
                (it.next(), it.next().and_then(|o| o.parse::<u64>().ok()))
            else {
                return Err(Error::source_failed(format!(
                    "Redis at {}: a FULLRESYNC reply without id and offset: {line:.80}",
                    self.url.address()
                )));
            };
            self.full_resync(&mut conn, pos, &server, replid, offset, time_ms)
                .await?;
        } else if let Some(rest) = line.strip_prefix("+CONTINUE") {
            let Some(p) = pos.as_mut() else {
                return Err(Error::source_failed(format!(
                    "Redis at {} offered to continue a stream that was not asked for",
                    self.url.address()
                )));
            };
            if let Some(id) = rest.split_whitespace().next() {
                if id != p.replid {
                    self.cap.observer.event(&CaptureEvent::Warning(format!(
                        "the primary's replication id changed from {} to {id} (a promoted replica continuing the history); capture continues in the same stream",
                        p.replid
                    )));
                    id.clone_into(&mut p.replid);
                }
            }
            self.cap.claim(&p.link.identity).await?;
            self.cap.started(&p.link);
        } else if line.starts_with('-') {
            if line.contains("NOAUTH") {
                return Err(self.url.noauth_error());
            }
            return Err(Error::source_failed(format!(
                "Redis at {} refused replication ({line}); capture needs PSYNC (managed services that disable it cannot be followed)",
                self.url.address()
            )));
        } else {
            return Err(Error::source_failed(format!(
                "Redis at {}: unexpected reply to PSYNC: {line:.80}",
                self.url.address()
            )));
        }
        let Some(p) = pos.as_mut() else {
            return Err(Error::source_failed("no stream position after PSYNC"));
        };
        self.stream(&mut conn, p).await
    }

    /// After `FULLRESYNC`: the gap or new stream it means, and the RDB
    /// stored as a base snapshot.
    async fn full_resync(
        &mut self,
        conn: &mut RawConn,
        pos: &mut Option<Position>,
        server: &ServerInfo,
        replid: &str,
        offset: u64,
        time_ms: i64,
    ) -> Result<()> {
        self.cap.claim(replid).await?;
        let header = conn.line().await?;
        let body = transfer_header(self.url, &header)?;
        let transfer = body.transfer();
        let (tx, rx) = async_channel::bounded(16);
        let source = RedisSource::transfer(
            self.url,
            server.version.clone(),
            Fed {
                rx,
                transfer,
                replid: replid.to_owned(),
                offset,
                time_ms,
            },
        );
        let mut sink = ChannelSink(tx);
        let (copied, stored) = tokio::join!(
            async {
                let r = copy_body(conn, body, &mut sink).await;
                if let Err(e) = &r {
                    let _ = sink.0.send(Err(e.clone())).await;
                }
                drop(sink);
                r
            },
            self.bases.store(Box::new(source))
        );
        let id = stored?;
        copied.map_err(passing)?;
        self.cap.summary.bases += 1;
        let next = offset + 1;
        let arrived = DateTime::from_timestamp_millis(time_ms);
        if let Some(Position { link, replid: old }) = pos.as_mut() {
            let (stored, short) = (link.next, id.short());
            let times = (link.stored_time, arrived);
            if link.identity == replid && stored < next {
                let reason = format!(
                    "the primary's backlog no longer held offset {stored} (it continued from a full resynchronisation at {offset}): the writes in between were not captured; base snapshot {short} starts the stream again"
                );
                let details = serde_json::json!({"replid": replid});
                self.cap.gap(link, next, times, reason, details).await?;
            } else if link.identity != replid {
                // The old stream ends here: a gap record says so in its
                // listing (its range is the one offset after its end;
                // nothing of that history follows).
                let reason = format!(
                    "the primary's replication history changed (id {old} is now {replid}: a restart without its replication state, or another server): the writes after offset {} were not captured, and capture continues in a new stream from base snapshot {short}",
                    stored - 1
                );
                let details = serde_json::json!({"replid": old, "next_replid": replid});
                self.cap
                    .gap(link, stored + 1, times, reason, details)
                    .await?;
            }
        }
        let link = Link {
            continues_snapshot: Some(id.to_hex()),
            stored_time: arrived,
            ..self.cap.link(replid, next)
        };
        self.cap.started(&link);
        *pos = Some(Position {
            link,
            replid: replid.to_owned(),
        });
        Ok(())
    }

    /// Reads the command stream, storing slices, until cancelled or the
    /// connection fails.
    async fn stream(&mut self, conn: &mut RawConn, pos: &mut Position) -> Result<()> {
        let mut slice = Batch::default();
        // Bytes received and not yet parsed into whole commands.
        let mut pending: Vec<u8> = Vec::new();
        // Offset after the last whole command read.
        let mut read_end = pos.link.next - 1;
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let deadline = slice.due_at(self.cap.opts);
            let read = tokio::select! {
                () = self.cap.cancel.cancelled() => {
                    if !slice.is_empty() {
                        self.store(pos, &mut slice, read_end).await?;
                        ack(conn, pos).await?;
                    }
                    return Ok(());
                }
                _ = tick.tick() => {
                    ack(conn, pos).await?;
                    self.lag(pos, &slice);
                    self.cap.renew().await?;
                    continue;
                }
                () = tokio::time::sleep_until(deadline.unwrap_or_else(tokio::time::Instant::now)),
                    if deadline.is_some() => None,
                r = conn.io.fill_buf() => Some(r.map(<[u8]>::to_vec)),
            };
            let mut getack = false;
            if let Some(r) = read {
                let data = r.map_err(|e| {
                    passing(format!(
                        "reading the replication stream from {}: {e}",
                        conn.addr
                    ))
                })?;
                if data.is_empty() {
                    return Err(passing(format!(
                        "Redis at {} closed the replication connection",
                        conn.addr
                    )));
                }
                conn.io.consume(data.len());
                pending.extend_from_slice(&data);
                let now = Utc::now();
                let mut at = 0;
                while let Some(c) = parse_command(&pending[at..]).map_err(|e| {
                    passing(format!(
                        "the replication stream from {} is not a command stream at offset {}: {e}",
                        conn.addr,
                        read_end + 1
                    ))
                })? {
                    let bytes = &pending[at..at + c.len];
                    read_end += c.len as u64;
                    let name = &bytes[c.args[0].clone()];
                    if name.eq_ignore_ascii_case(b"REPLCONF")
                        && c.args
                            .get(1)
                            .is_some_and(|a| bytes[a.clone()].eq_ignore_ascii_case(b"GETACK"))
                    {
                        getack = true;
                    }
                    add(&mut slice, bytes, read_end, now);
                    at += c.len;
                }
                pending.drain(..at);
            }
            if slice.due(self.cap.opts) {
                self.store(pos, &mut slice, read_end).await?;
            }
            if getack {
                ack(conn, pos).await?;
            }
        }
    }

    fn lag(&self, pos: &Position, slice: &Batch) {
        let seconds = slice.time_first.map_or(0.0, |t| {
            ((Utc::now() - t).num_milliseconds() as f64 / 1000.0).max(0.0)
        });
        self.cap.observer.event(&CaptureEvent::Lag {
            seconds,
            source_newest: slice.time_last.or(pos.link.stored_time),
            stored_newest: pos.link.stored_time,
            behind_bytes: None,
        });
    }

    /// Stores the slice, whose newest command ends at `end`, and starts
    /// the next one.
    async fn store(&mut self, pos: &mut Position, slice: &mut Batch, end: u64) -> Result<()> {
        let s = std::mem::take(slice);
        let details = serde_json::json!({"commands": s.entries, "replid": pos.replid});
        self.cap.store(&mut pos.link, s, end + 1, details).await?;
        Ok(())
    }
}

/// Tells the primary what is stored: `REPLCONF ACK <offset>`.
async fn ack(conn: &mut RawConn, pos: &Position) -> Result<()> {
    let offset = (pos.link.next - 1).to_string();
    conn.send(&[b"REPLCONF", b"ACK", offset.as_bytes()]).await
}

/// The follower's end of a base transfer.
struct ChannelSink(async_channel::Sender<std::result::Result<Bytes, String>>);

impl ChunkSink for ChannelSink {
    async fn send(&mut self, b: Bytes) -> std::result::Result<(), String> {
        self.0
            .send(Ok(b))
            .await
            .map_err(|_| "the base snapshot stopped reading the RDB".to_owned())
    }
}

/// One command of a stored piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Framed<'a> {
    /// The replication offset after it.
    pub(crate) end: u64,
    /// When it arrived (ms since the epoch).
    pub(crate) time_ms: i64,
    /// The command as the primary sent it.
    pub(crate) command: &'a [u8],
}

/// Reads the commands of a piece (`REPOSITORY_FORMAT.md` §21.3).
///
/// # Errors
///
/// A truncated record, or one whose offset does not follow from the one
/// before it (`what` names the piece).
pub(crate) fn frames<'a>(
    bytes: &'a [u8],
    what: &str,
) -> impl Iterator<Item = Result<Framed<'a>>> + 'a {
    let what = what.to_owned();
    let mut at = 0usize;
    let mut prev: Option<u64> = None;
    std::iter::from_fn(move || {
        if at >= bytes.len() {
            return None;
        }
        let bad = |why: String| Some(Err(Error::corrupt(FileKind::Capture, &what, why)));
        let Some(head) = bytes.get(at..at + FRAME_HEADER) else {
            let why = format!("a truncated command record at byte {at}");
            at = bytes.len();
            return bad(why);
        };
        // Little-endian: the end offset, arrival time and length.
        let le =
            |r: std::ops::Range<usize>| head[r].iter().rev().fold(0, |n, b| n << 8 | u64::from(*b));
        let (end, time_ms, len) = (le(0..8), le(8..16) as i64, le(16..20) as usize);
        let Some(command) = bytes.get(at + FRAME_HEADER..at + FRAME_HEADER + len) else {
            at = bytes.len();
            return bad("a command record longer than the piece".to_owned());
        };
        if let Some(p) = prev {
            if p.checked_add(len as u64) != Some(end) {
                at = bytes.len();
                return bad(format!(
                    "a command ending at offset {end} follows one ending at {p} with {len} bytes"
                ));
            }
        }
        prev = Some(end);
        at += FRAME_HEADER + len;
        Some(Ok(Framed {
            end,
            time_ms,
            command,
        }))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::resp::encode;

    #[test]
    fn frames_read_back_what_slices_hold() {
        let mut s = Batch::default();
        let t = DateTime::from_timestamp_millis(1_700_000_000_123).unwrap();
        let mut a = Vec::new();
        encode(&mut a, &[b"SET", b"k", b"v"]);
        let mut b = Vec::new();
        encode(&mut b, &[b"PING"]);
        add(&mut s, &a, 100 + a.len() as u64, t);
        add(&mut s, &b, 100 + (a.len() + b.len()) as u64, t);
        let got: Vec<Framed> = frames(&s.buf, "p").collect::<Result<_>>().unwrap();
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].command, &a[..]);
        assert_eq!(got[1].end, 100 + (a.len() + b.len()) as u64);
        assert_eq!(got[1].time_ms, 1_700_000_000_123);
        // A record whose offset does not follow is refused, and so is a
        // truncated one.
        let mut bad = s.buf.clone();
        bad[FRAME_HEADER + a.len()] ^= 1;
        assert!(frames(&bad, "p").any(|r| r.is_err()));
        assert!(frames(&s.buf[..s.buf.len() - 1], "p").any(|r| r.is_err()));
        let head_cut = &s.buf[..FRAME_HEADER + a.len() + 3];
        let err = frames(head_cut, "p").find_map(Result::err).unwrap();
        let at = FRAME_HEADER + a.len();
        assert!(err.to_string().contains(&format!("at byte {at}")), "{err}");
    }
}
