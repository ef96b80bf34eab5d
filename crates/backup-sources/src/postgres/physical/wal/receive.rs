//! The streaming receiver ([`receive`], described in the parent module):
//! a first start streams from the newest base backup's end when the server
//! still has that WAL; a timeline the server ends is followed to the next;
//! WAL that can no longer be captured is recorded as a gap. Then the
//! messages of its replication connection.

use std::sync::Arc;
use std::time::{Duration, Instant};

use backup_core::capture::{CaptureName, PieceInfo};
use backup_core::repo::Repository;
use backup_core::snapshot::SourceDescriptor;
use backup_core::{Error, Result};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::super::lsn::{parse_setting_size, Lsn};
use super::super::meta::PhysicalMeta;
use super::super::remote;
use super::{history_start, parse_position, position, streams, GAP_KIND, HISTORY_KIND, WAL_KIND};
use crate::capture::{CaptureEvent, CaptureObserver, FollowSummary, Position, StoredPiece};
use crate::postgres::conn::ConnInfo;
use crate::postgres::wire::{db_error, WireConn, WireError};

/// How the receiver runs.
#[derive(Debug, Clone)]
pub struct ReceiveOptions {
    /// The physical replication slot (created when missing).
    pub slot: String,
    /// Received WAL is stored at least this often.
    pub flush_interval: Duration,
    /// ... and whenever this many bytes wait.
    pub max_piece: usize,
    /// How long a store waits for a conflicting repository lock (prune).
    pub lock_wait: Duration,
}

impl Default for ReceiveOptions {
    fn default() -> Self {
        ReceiveOptions {
            slot: "backup".to_owned(),
            flush_interval: Duration::from_secs(5),
            max_piece: 16 << 20,
            lock_wait: Duration::from_secs(3600),
        }
    }
}

/// Streams WAL from `url`'s server into `repo` until `stop` is cancelled
/// (then what was received is stored and the run ends) or an error,
/// telling `observer` as it goes: [`CaptureEvent::Started`] for each
/// timeline streamed, [`CaptureEvent::Stored`] for each piece,
/// [`CaptureEvent::Lag`] about once a second (with the bytes received
/// but not stored yet), [`CaptureEvent::Gap`] for WAL that can no longer
/// be captured.
///
/// # Errors
///
/// Connection and replication errors (a refused role or `pg_hba` line, a
/// slot in use by another consumer), storage errors.
pub async fn receive(
    repo: Repository,
    url: &str,
    opts: ReceiveOptions,
    stop: CancellationToken,
    observer: Arc<dyn CaptureObserver>,
) -> Result<FollowSummary> {
    let info = ConnInfo::parse(url)?;
    let mut wire = info.wire().map_err(Error::source_failed)?;
    wire.replication = true;
    let user = info.user().to_owned();
    let descriptor = SourceDescriptor {
        kind: "postgres".to_owned(),
        url: info.physical_redacted(),
    };
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || {
        let connect = || {
            WireConn::connect(&wire)
                .map_err(|e| remote::connect_error(&e, &user, remote::Purpose::StreamWal))
        };
        let mut conn = connect()?;
        let mut r = Receiver {
            repo,
            opts,
            descriptor,
            runtime,
            observer,
            stop,
            sysid: String::new(),
            seg: 16 << 20,
            continues: String::new(),
            stored_time: None,
            summary: FollowSummary::default(),
            covering: None,
            cover_base: true,
        };
        match r.run(&mut conn) {
            // The first stream reached back to the newest base backup's
            // end, and the server no longer has that WAL: record the gap
            // and stream from where the slot holds WAL.
            Err(e)
                if r.summary.pieces == 0
                    && r.covering.is_some()
                    && backup_core::error::report(&e).contains("has already been removed") =>
            {
                if let Some((tli, from, to)) = r.covering.take() {
                    r.gap(
                        tli,
                        from,
                        to,
                        &format!("the server had removed the WAL between the newest base backup's end and the receiver's first start ({e}); take a new base backup"),
                    )?;
                }
                r.cover_base = false;
                r.run(&mut connect()?)?;
            }
            other => other?,
        }
        Ok(r.summary)
    })
    .await
    .map_err(|e| Error::source_caused("the WAL receiver", e))?
}

/// The WAL received on one timeline and not stored yet, and where storing
/// and confirming stand.
struct Pending {
    /// Received, not stored.
    data: Vec<u8>,
    /// Where `data` starts.
    start: Lsn,
    /// When its first byte arrived.
    since: Option<Instant>,
    /// Where the next message must start.
    next: Lsn,
    /// The end of what is stored (and confirmed).
    stored: Lsn,
    /// The server's end of WAL, as last heard.
    server_end: Lsn,
    /// When the server was last told where the stored WAL ends.
    last_status: Instant,
    /// When the lag was last reported.
    last_lag: Instant,
}

struct Receiver {
    repo: Repository,
    opts: ReceiveOptions,
    descriptor: SourceDescriptor,
    runtime: tokio::runtime::Handle,
    observer: Arc<dyn CaptureObserver>,
    stop: CancellationToken,
    /// The cluster's system identifier and segment size, as the server says.
    sysid: String,
    seg: u64,
    /// What the next stream continues, for [`CaptureEvent::Started`].
    continues: String,
    /// When a piece was last stored.
    stored_time: Option<DateTime<Utc>>,
    summary: FollowSummary,
    /// Set while the first stream of a cluster reaches back to its newest
    /// base backup: the timeline, the base's end and where the slot holds
    /// WAL from.
    covering: Option<(u32, Lsn, Lsn)>,
    /// Whether a first stream may reach back to the newest base backup
    /// (not again once the server said it no longer has that WAL).
    cover_base: bool,
}

impl Receiver {
    fn store(&self, info: PieceInfo, data: &[u8]) -> Result<CaptureName> {
        let put = self.repo.put_capture(info, data, self.opts.lock_wait);
        self.runtime.block_on(put)
    }

    /// A piece of the cluster's stream of `kind`.
    fn piece(&self, kind: &str, first: String, last: String) -> PieceInfo {
        PieceInfo {
            stream: self.repo.capture_stream(kind, &self.sysid),
            kind: kind.to_owned(),
            source: self.descriptor.clone(),
            identity: self.sysid.clone(),
            first,
            last,
            time_first: None,
            time_last: None,
            details: serde_json::Value::Null,
        }
    }

    fn run(&mut self, conn: &mut WireConn) -> Result<()> {
        let ident = one_row(conn, "IDENTIFY_SYSTEM")?;
        self.sysid = col(&ident, 0).unwrap_or_default();
        let timeline: u32 = col(&ident, 1).and_then(|t| t.parse().ok()).unwrap_or(1);
        let server_pos = Lsn::parse(col(&ident, 2).as_deref().unwrap_or("0/0"))?;
        let seg = col(&one_row(conn, "SHOW wal_segment_size")?, 0);
        let seg = parse_setting_size(seg.as_deref().unwrap_or("16MB")).unwrap_or(16 << 20);
        self.seg = seg;
        let (stream, hstream) = streams(&self.repo, &self.sysid);
        self.summary.stream.clone_from(&stream);
        let names = self.runtime.block_on(self.repo.captures())?;
        // History files of timelines up to the server's.
        let stored_history: Vec<u32> = names
            .iter()
            .filter(|n| n.stream == hstream)
            .filter_map(|n| u32::from_str_radix(&n.first, 16).ok())
            .collect();
        for tli in 2..=timeline {
            if !stored_history.contains(&tli) {
                self.store_history(conn, tli)?;
            }
        }
        // Where the stored WAL ends.
        let last = names
            .iter()
            .filter(|n| n.stream == stream)
            .filter_map(|n| parse_position(&n.last))
            .max();
        let slot = &self.opts.slot;
        let create = format!("CREATE_REPLICATION_SLOT \"{slot}\" PHYSICAL (RESERVE_WAL)");
        let read_slot = |conn: &mut WireConn| -> Result<(bool, Option<Lsn>)> {
            let row = one_row(conn, &format!("READ_REPLICATION_SLOT \"{slot}\""))?;
            Ok((
                col(&row, 0).is_some(),
                col(&row, 1).map(|l| Lsn::parse(&l)).transpose()?,
            ))
        };
        let (exists, mut slot_lsn) = read_slot(conn)?;
        if !exists {
            one_row(conn, &create)?;
            tracing::info!(slot = %slot, "Created the replication slot.");
            slot_lsn = read_slot(conn)?.1;
        }
        let drop_slot = format!("DROP_REPLICATION_SLOT \"{slot}\"");
        let start = match (last, slot_lsn) {
            (Some((tli, lsn)), Some(held)) if tli == timeline && held <= lsn => lsn,
            (Some((tli, lsn)), held) if tli == timeline => {
                // The slot no longer holds what follows the stored WAL:
                // resume from the start of the oldest segment the server
                // still has for it.
                let kept = held.unwrap_or(server_pos);
                let resume = kept.segment_start(seg).max(lsn);
                if resume > lsn {
                    self.gap(tli, lsn, resume, if held.is_some() {
                        "the replication slot was ahead of the stored WAL"
                    } else {
                        "the replication slot was invalidated (max_slot_wal_keep_size) and the server removed WAL not yet captured"
                    })?;
                }
                if held.is_none() {
                    // The invalidated slot is of no use: make it anew.
                    let _ = conn.query_rows(&drop_slot);
                    one_row(conn, &create)?;
                }
                resume
            }
            (Some((tli, _)), _) if tli > timeline => {
                return Err(Error::source_failed(format!(
                    "the server is on timeline {timeline} but the repository's WAL of this cluster has reached timeline {tli}: this server is an older fork; capture from the current primary"
                )))
            }
            (Some(_), held) => {
                // A newer timeline than the stored one: its WAL from where
                // it began.
                let (_, content) = timeline_history(conn, timeline)?;
                let begin = history_start(&content).ok_or_else(|| {
                    Error::source_failed(format!(
                        "the history file of timeline {timeline} has no start"
                    ))
                })?;
                held.map_or(begin, |h| h.min(begin).max(begin.segment_start(seg)))
            }
            // The first start: from the beginning of the segment the slot
            // holds (as pg_receivewal does), so that the stored segments
            // are whole and a base backup taken just before restores from
            // them alone; and from further back when the newest base
            // backup of this timeline ended before that, so that it is
            // restorable (the server may still have that WAL; when not, the
            // stretch is recorded as a gap and streaming starts at the
            // slot).
            (None, held) => {
                let from = held.unwrap_or(server_pos).segment_start(seg);
                match self.newest_base_end(timeline)? {
                    Some(end) if self.cover_base && end.segment_start(seg) < from => {
                        tracing::info!(base_end = %end, slot = %from, "Streaming from the newest base backup's end, before the slot's position.");
                        self.covering = Some((timeline, end, from));
                        end.segment_start(seg)
                    }
                    _ => from,
                }
            }
        };
        self.continues = match (last, &self.covering) {
            (Some(_), _) => "the stored WAL".to_owned(),
            (None, Some(_)) => "the newest base backup's end".to_owned(),
            (None, None) => "the replication slot's position".to_owned(),
        };
        self.continue_on(conn, timeline, start)
    }

    /// Where the newest physical base backup of the cluster that ended on
    /// `timeline` ended, if the repository has one.
    fn newest_base_end(&self, timeline: u32) -> Result<Option<Lsn>> {
        // A write-only key knows only its own snapshots.
        let snapshots = self.runtime.block_on(self.repo.known_snapshots())?;
        Ok(snapshots
            .iter()
            .filter_map(|e| PhysicalMeta::of(&e.snapshot.metadata)?.ok())
            .filter(|m| m.system_identifier == self.sysid && m.stop_timeline == timeline)
            .filter_map(|m| Lsn::parse(&m.stop_lsn).ok())
            .max())
    }

    fn continue_on(
        &mut self,
        conn: &mut WireConn,
        mut timeline: u32,
        mut start: Lsn,
    ) -> Result<()> {
        loop {
            match self.stream_timeline(conn, timeline, start)? {
                None => return Ok(()),
                Some((t, s)) => {
                    self.store_history(conn, t)?;
                    self.continues = format!("the end of timeline {timeline}");
                    timeline = t;
                    start = s;
                }
            }
        }
    }

    fn store_history(&mut self, conn: &mut WireConn, tli: u32) -> Result<()> {
        let (name, content) = timeline_history(conn, tli)?;
        let mut info = self.piece(
            HISTORY_KIND,
            format!("{tli:08X}"),
            format!("{:08X}", tli + 1),
        );
        info.details = serde_json::json!({ "file": name });
        self.store(info, content.as_bytes())?;
        Ok(())
    }

    fn gap(&mut self, tli: u32, from: Lsn, to: Lsn, reason: &str) -> Result<()> {
        if to <= from {
            return Ok(());
        }
        let info = self.piece(GAP_KIND, position(tli, from), position(tli, to));
        let put = self.repo.put_capture_gap(info, reason, self.opts.lock_wait);
        let record = self.runtime.block_on(put)?;
        self.summary.gaps += 1;
        tracing::warn!(from = %from, to = %to, reason, "WAL could not be captured; a gap was recorded.");
        self.observer.event(&CaptureEvent::Gap {
            stream: self.repo.capture_stream(WAL_KIND, &self.sysid),
            record: Some(record),
            reason: format!(
                "WAL from {from} to {to} on timeline {tli} could not be captured: {reason}"
            ),
        });
        Ok(())
    }

    /// Streams one timeline from `start`; `Ok(None)` when stopped,
    /// `Ok(Some(next timeline, its start))` when the server ended this
    /// timeline.
    fn stream_timeline(
        &mut self,
        conn: &mut WireConn,
        timeline: u32,
        start: Lsn,
    ) -> Result<Option<(u32, Lsn)>> {
        self.start_replication(conn, timeline, start)?;
        self.observer.event(&CaptureEvent::Started {
            stream: self.summary.stream.clone(),
            identity: self.sysid.clone(),
            from: Position::Wal {
                timeline,
                lsn: start.0,
            },
            continues: std::mem::take(&mut self.continues),
        });
        let mut p = Pending {
            data: Vec::new(),
            start,
            since: None,
            next: start,
            stored: start,
            server_end: start,
            last_status: Instant::now(),
            last_lag: Instant::now(),
        };
        loop {
            if self.stop.is_cancelled() {
                if !p.data.is_empty() {
                    self.flush(timeline, p.start, &p.data)?;
                    p.stored = p.next;
                }
                let _ = send_status(conn, p.stored);
                return Ok(None);
            }
            match poll_msg(conn)? {
                Some(Msg::Data(at, data, end)) => {
                    if at != p.next {
                        return Err(Error::source_failed(format!(
                            "the server sent WAL from {at} where {} was expected",
                            p.next
                        )));
                    }
                    p.server_end = p.server_end.max(end);
                    // Pieces never cross a segment boundary.
                    let mut rest: &[u8] = &data;
                    while !rest.is_empty() {
                        let seg_end = (p.next.0 / self.seg + 1) * self.seg;
                        let take = rest.len().min((seg_end - p.next.0) as usize);
                        if p.data.is_empty() {
                            p.start = p.next;
                            p.since = Some(Instant::now());
                        }
                        p.data.extend_from_slice(&rest[..take]);
                        rest = &rest[take..];
                        p.next = Lsn(p.next.0 + take as u64);
                        if p.next.0 == seg_end || p.data.len() >= self.opts.max_piece {
                            self.store_pending(conn, &mut p, timeline)?;
                        }
                    }
                }
                Some(Msg::Keepalive(end, reply)) => {
                    p.server_end = p.server_end.max(end);
                    if reply {
                        send_status(conn, p.stored).map_err(|e| io(&e))?;
                        p.last_status = Instant::now();
                    }
                }
                Some(Msg::CopyDone) => {
                    if !p.data.is_empty() {
                        self.flush(timeline, p.start, &p.data)?;
                    }
                    let (next_tli, next_start) = end_of_timeline(conn)?;
                    return Ok(Some((next_tli, next_start)));
                }
                Some(Msg::Error(e)) => return Err(wire_error(&e, "streaming WAL")),
                Some(Msg::Other) | None => {}
            }
            let due = p
                .since
                .is_some_and(|t| t.elapsed() >= self.opts.flush_interval);
            if due && !p.data.is_empty() {
                self.store_pending(conn, &mut p, timeline)?;
            }
            if p.last_status.elapsed() >= Duration::from_secs(10) {
                send_status(conn, p.stored).map_err(|e| io(&e))?;
                p.last_status = Instant::now();
            }
            if p.last_lag.elapsed() >= Duration::from_secs(1) {
                self.lag_event(p.since, p.stored, p.server_end);
                p.last_lag = Instant::now();
            }
        }
    }

    /// Stores the pending WAL as a piece, confirms it to the server as
    /// flushed and reports the lag.
    fn store_pending(&mut self, conn: &mut WireConn, p: &mut Pending, timeline: u32) -> Result<()> {
        self.flush(timeline, p.start, &p.data)?;
        p.data.clear();
        p.since = None;
        p.stored = p.next;
        send_status(conn, p.stored).map_err(|e| io(&e))?;
        p.last_status = Instant::now();
        self.lag_event(None, p.stored, p.server_end);
        p.last_lag = Instant::now();
        Ok(())
    }

    /// Sends `START_REPLICATION` for `timeline` from `start` and waits for
    /// the server's `CopyBothResponse` (or its error).
    fn start_replication(&self, conn: &mut WireConn, timeline: u32, start: Lsn) -> Result<()> {
        conn.send_query(&format!(
            "START_REPLICATION SLOT \"{}\" PHYSICAL {start} TIMELINE {timeline}",
            self.opts.slot
        ))
        .map_err(|e| wire_error(&e, "starting replication"))?;
        // CopyBothResponse, or an error.
        loop {
            let r = conn.next_message(|tag, body| match tag {
                b'W' => Ok(true),
                b'E' => Err(db_error(body)),
                _ => Ok(false),
            });
            match r.map_err(|e| io(&e))? {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => return Err(wire_error(&e, "starting replication")),
            }
        }
    }

    /// Tells the observer how far behind the stored WAL is: the age of
    /// the oldest received byte not stored yet (`pending_since`), and the
    /// bytes between the stored end and the server's.
    fn lag_event(&self, pending_since: Option<Instant>, stored: Lsn, server_end: Lsn) {
        self.observer.event(&CaptureEvent::Lag {
            seconds: pending_since.map_or(0.0, |t| t.elapsed().as_secs_f64()),
            source_newest: None,
            stored_newest: self.stored_time,
            behind_bytes: Some(server_end.0.saturating_sub(stored.0)),
        });
    }

    /// Stores `data`, the WAL of `timeline` from `from`, as a piece.
    fn flush(&mut self, timeline: u32, from: Lsn, data: &[u8]) -> Result<()> {
        let to = Lsn(from.0 + data.len() as u64);
        let mut info = self.piece(WAL_KIND, position(timeline, from), position(timeline, to));
        let now = Utc::now();
        info.time_first = Some(now);
        info.time_last = Some(now);
        info.details = serde_json::json!({ "timeline": timeline });
        let name = self.store(info, data)?;
        self.stored_time = Some(now);
        self.observer.event(&CaptureEvent::Stored(StoredPiece {
            name,
            entries: 0,
            bytes: data.len() as u64,
            time_first: Some(now),
            time_last: Some(now),
        }));
        self.summary.pieces += 1;
        self.summary.bytes += data.len() as u64;
        self.summary.next = Some(Position::Wal {
            timeline,
            lsn: to.0,
        });
        Ok(())
    }
}

// The replication connection's commands, messages and errors.

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

/// Column `i` of a result row.
fn col(row: &[Option<String>], i: usize) -> Option<String> {
    row.get(i).cloned().flatten()
}

fn one_row(conn: &mut WireConn, sql: &str) -> Result<Vec<Option<String>>> {
    conn.query_rows(sql)
        .map_err(|e| wire_error(&e, sql))?
        .into_iter()
        .next()
        .ok_or_else(|| Error::source_failed(format!("{sql} returned nothing")))
}

fn wire_error(e: &WireError, what: &str) -> Error {
    if let WireError::Db { code, message, .. } = e {
        if code == "55006" || message.contains("is active for PID") {
            return Error::source_failed(format!(
                "the replication slot is in use by another consumer ({message}): stop the other receiver or give this one its own slot (--slot)"
            ));
        }
    }
    Error::source_with(what.to_owned(), remote::clone_wire(e), e.retryable())
}

fn io(e: &std::io::Error) -> Error {
    Error::source_with(
        "the replication connection failed",
        std::io::Error::new(e.kind(), e.to_string()),
        true,
    )
}

/// A standby status update: written, flushed and applied up to `lsn`.
fn send_status(conn: &mut WireConn, lsn: Lsn) -> std::io::Result<()> {
    let mut m = Vec::with_capacity(34);
    m.push(b'r');
    for _ in 0..3 {
        m.extend_from_slice(&lsn.0.to_be_bytes());
    }
    m.extend_from_slice(&(Utc::now().timestamp_micros() - PG_EPOCH_US).to_be_bytes());
    m.push(0);
    conn.send_copy_data(&m)
}

/// A message of the replication stream.
enum Msg {
    Data(Lsn, Vec<u8>, Lsn),
    Keepalive(Lsn, bool),
    CopyDone,
    Error(WireError),
    Other,
}

/// `TIMELINE_HISTORY tli`: the file's name and content.
fn timeline_history(conn: &mut WireConn, tli: u32) -> Result<(String, String)> {
    let row = one_row(conn, &format!("TIMELINE_HISTORY {tli}"))?;
    Ok((
        col(&row, 0).unwrap_or_default(),
        col(&row, 1).unwrap_or_default(),
    ))
}

/// The next message of the replication stream; `None` when none came
/// within 200 ms.
fn poll_msg(conn: &mut WireConn) -> Result<Option<Msg>> {
    conn.poll_message(Duration::from_millis(200), |tag, body| {
        let lsn = |at: usize| {
            Lsn(u64::from_be_bytes(
                body[at..at + 8].try_into().unwrap_or_default(),
            ))
        };
        match (tag, body.first()) {
            (b'd', Some(b'w')) if body.len() >= 25 => {
                Msg::Data(lsn(1), body[25..].to_vec(), lsn(9))
            }
            (b'd', Some(b'k')) if body.len() >= 18 => Msg::Keepalive(lsn(1), body[17] != 0),
            (b'c', _) => Msg::CopyDone,
            (b'E', _) => Msg::Error(db_error(body)),
            _ => Msg::Other,
        }
    })
    .map_err(|e| io(&e))
}

/// After the server ended the streamed timeline: ends the copy and reads
/// the next timeline and where it starts.
fn end_of_timeline(conn: &mut WireConn) -> Result<(u32, Lsn)> {
    conn.send_copy_done().map_err(|e| io(&e))?;
    // Result rows until `ReadyForQuery`: the next timeline and its start.
    let rows = conn
        .rows()
        .map_err(|e| io(&e))?
        .map_err(Error::source_failed)?;
    let row = rows.first().ok_or_else(|| {
        Error::source_failed("the server ended the timeline without naming the next")
    })?;
    let next_tli: u32 = col(row, 0)
        .and_then(|t| t.parse().ok())
        .ok_or_else(|| Error::source_failed("no next timeline"))?;
    Ok((next_tli, Lsn::parse(col(row, 1).as_deref().unwrap_or(""))?))
}
