//! Continuous WAL capture into the repository, and WAL for recovery.
//!
//! The WAL of a cluster is one capture stream (`backup_core::capture`,
//! kind `postgres-wal`, identity the system identifier). A piece is a
//! range of WAL bytes on one timeline, never across a segment boundary;
//! positions are 24 hex digits: the timeline (8) and the LSN (16). Timeline
//! history files are pieces of a second stream (`postgres-timeline-history`)
//! whose positions are the timeline (8 hex digits) to the next.
//!
//! - **Streaming** ([`receive`]): a physical replication slot, then
//!   `START_REPLICATION` from the end of what is stored; received WAL is
//!   stored at least every `flush_interval` and every `max_piece` bytes,
//!   and at each segment end, and only then confirmed to the server as
//!   flushed, so the slot keeps what is not stored yet.
//! - **Archiving** ([`push`]): `archive_command = 'backup wal push %p'`
//!   stores a whole segment (or history file); pushing the same bytes again
//!   succeeds, other bytes for a stored segment are refused.
//! - **Recovery** ([`fetch`]): `restore_command = 'backup wal fetch %f %p'`
//!   assembles a segment from the pieces that cover it (zeros after the
//!   last piece of an unfinished segment, as `pg_receivewal` leaves a
//!   partial segment), or a history file.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use backup_core::capture::{CaptureName, PieceInfo};
use backup_core::repo::Repository;
use backup_core::snapshot::SourceDescriptor;
use backup_core::{Error, Result};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::lsn::{is_wal_file_name, parse_setting_size, wal_file_name, Lsn};
use super::meta::PhysicalMeta;
use crate::postgres::conn::ConnInfo;
use crate::postgres::wire::{data_row, db_error, WireConn, WireError};

/// Capture kind of WAL.
pub const WAL_KIND: &str = "postgres-wal";
/// Capture kind of timeline history files.
pub const HISTORY_KIND: &str = "postgres-timeline-history";
/// Capture kind of the records of WAL that could not be captured (a
/// stream of its own, so that a listing tells gaps from WAL).
pub const GAP_KIND: &str = "postgres-wal-gap";

/// A WAL position as capture names write it: timeline and LSN.
pub(crate) fn position(tli: u32, lsn: Lsn) -> String {
    format!("{tli:08X}{:016X}", lsn.0)
}

/// Parses a WAL capture position.
pub(crate) fn parse_position(p: &str) -> Option<(u32, Lsn)> {
    if p.len() != 24 {
        return None;
    }
    let tli = u32::from_str_radix(&p[..8], 16).ok()?;
    let lsn = u64::from_str_radix(&p[8..], 16).ok()?;
    Some((tli, Lsn(lsn)))
}

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

/// What the receiver tells its caller as it runs.
#[derive(Debug, Clone)]
pub enum ReceiverEvent {
    /// Connected; streaming `timeline` from `from`.
    Streaming {
        /// The cluster.
        system_identifier: String,
        /// Timeline streamed.
        timeline: u32,
        /// First position requested.
        from: String,
    },
    /// WAL up to `lsn` (on `timeline`) is stored and confirmed.
    Stored {
        /// Timeline.
        timeline: u32,
        /// End of what is stored.
        lsn: String,
        /// The server's latest position when last heard of.
        server_lsn: String,
        /// When the stored WAL was received.
        received: DateTime<Utc>,
    },
    /// WAL from `from` to `to` cannot be captured any more; a gap was
    /// recorded.
    Gap {
        /// Start of the missing range.
        from: String,
        /// End of the missing range.
        to: String,
        /// Why.
        reason: String,
    },
}

/// Summary of a receiver run.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct ReceiveSummary {
    /// Pieces stored.
    pub pieces: u64,
    /// Bytes of WAL stored.
    pub bytes: u64,
    /// Last stored position (`tli/lsn`).
    pub last: Option<String>,
    /// Gaps recorded.
    pub gaps: u64,
}

/// Callback of receiver events.
pub type EventSink = std::sync::Arc<dyn Fn(ReceiverEvent) + Send + Sync>;

/// The stream ids of a cluster's WAL and history.
pub(crate) fn streams(repo: &Repository, system_identifier: &str) -> (String, String) {
    (
        repo.capture_stream(WAL_KIND, system_identifier),
        repo.capture_stream(HISTORY_KIND, system_identifier),
    )
}

/// The stream id of a cluster's gap records.
pub(crate) fn gap_stream(repo: &Repository, system_identifier: &str) -> String {
    repo.capture_stream(GAP_KIND, system_identifier)
}

/// Streams WAL from `url`'s server into `repo` until `stop` is cancelled
/// (then what was received is stored and the run ends) or an error.
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
    events: EventSink,
) -> Result<ReceiveSummary> {
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
        let mut conn =
            WireConn::connect(&wire).map_err(|e| super::remote::connect_error(&e, &user, super::remote::Purpose::StreamWal))?;
        let mut r = Receiver {
            repo,
            opts,
            descriptor,
            runtime,
            events,
            stop,
            summary: ReceiveSummary::default(),
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
                if let Some((sysid, tli, from, to)) = r.covering.take() {
                    r.gap(
                        &sysid,
                        tli,
                        from,
                        to,
                        &format!("the server had removed the WAL between the newest base backup's end and the receiver's first start ({e}); take a new base backup"),
                    )?;
                }
                r.cover_base = false;
                let mut conn = WireConn::connect(&wire)
                    .map_err(|e| super::remote::connect_error(&e, &user, super::remote::Purpose::StreamWal))?;
                r.run(&mut conn)?;
            }
            other => other?,
        }
        Ok(r.summary)
    })
    .await
    .map_err(|e| Error::source_caused("the WAL receiver", e))?
}

struct Receiver {
    repo: Repository,
    opts: ReceiveOptions,
    descriptor: SourceDescriptor,
    runtime: tokio::runtime::Handle,
    events: EventSink,
    stop: CancellationToken,
    summary: ReceiveSummary,
    /// Set while the first stream of a cluster reaches back to its newest
    /// base backup: the cluster, timeline, the base's end and where the
    /// slot holds WAL from.
    covering: Option<(String, u32, Lsn, Lsn)>,
    /// Whether a first stream may reach back to the newest base backup
    /// (not again once the server said it no longer has that WAL).
    cover_base: bool,
}

/// Microseconds from the Unix epoch to PostgreSQL's (2000-01-01).
const PG_EPOCH_US: i64 = 946_684_800_000_000;

fn pg_now() -> i64 {
    Utc::now().timestamp_micros() - PG_EPOCH_US
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
    Error::source_with(what.to_owned(), super::remote::clone_wire(e), e.retryable())
}

impl Receiver {
    fn store(&mut self, info: PieceInfo, data: &[u8]) -> Result<CaptureName> {
        let wait = self.opts.lock_wait;
        let repo = self.repo.clone();
        self.runtime
            .block_on(async move { repo.put_capture(info, data, wait).await })
    }

    fn piece(
        &self,
        stream: &str,
        kind: &str,
        identity: &str,
        first: String,
        last: String,
    ) -> PieceInfo {
        PieceInfo {
            stream: stream.to_owned(),
            kind: kind.to_owned(),
            source: self.descriptor.clone(),
            identity: identity.to_owned(),
            first,
            last,
            time_first: None,
            time_last: None,
            details: serde_json::Value::Null,
        }
    }

    fn run(&mut self, conn: &mut WireConn) -> Result<()> {
        let ident = one_row(conn, "IDENTIFY_SYSTEM")?;
        let sysid = ident.first().cloned().flatten().unwrap_or_default();
        let timeline: u32 = ident
            .get(1)
            .cloned()
            .flatten()
            .and_then(|t| t.parse().ok())
            .unwrap_or(1);
        let server_pos = Lsn::parse(ident.get(2).cloned().flatten().as_deref().unwrap_or("0/0"))?;
        let seg = parse_setting_size(
            one_row(conn, "SHOW wal_segment_size")?
                .first()
                .cloned()
                .flatten()
                .as_deref()
                .unwrap_or("16MB"),
        )
        .unwrap_or(16 << 20);
        let (stream, hstream) = streams(&self.repo, &sysid);
        let repo = self.repo.clone();
        let names = self
            .runtime
            .block_on(async move { repo.captures().await })?;
        // History files of timelines up to the server's.
        let stored_history: Vec<u32> = names
            .iter()
            .filter(|n| n.stream == hstream)
            .filter_map(|n| u32::from_str_radix(&n.first, 16).ok())
            .collect();
        for tli in 2..=timeline {
            if !stored_history.contains(&tli) {
                self.store_history(conn, &hstream, &sysid, tli)?;
            }
        }
        // Where the stored WAL ends.
        let last = names
            .iter()
            .filter(|n| n.stream == stream)
            .filter_map(|n| parse_position(&n.last))
            .max();
        let read_slot = |conn: &mut WireConn, slot: &str| -> Result<(bool, Option<Lsn>)> {
            let row = one_row(conn, &format!("READ_REPLICATION_SLOT \"{slot}\""))?;
            Ok((
                row.first().cloned().flatten().is_some(),
                row.get(1)
                    .cloned()
                    .flatten()
                    .map(|l| Lsn::parse(&l))
                    .transpose()?,
            ))
        };
        let (exists, mut slot_lsn) = read_slot(conn, &self.opts.slot)?;
        if !exists {
            one_row(
                conn,
                &format!(
                    "CREATE_REPLICATION_SLOT \"{}\" PHYSICAL (RESERVE_WAL)",
                    self.opts.slot
                ),
            )?;
            tracing::info!(slot = %self.opts.slot, "Created the replication slot.");
            slot_lsn = read_slot(conn, &self.opts.slot)?.1;
        }
        let start = match (last, slot_lsn) {
            (Some((tli, lsn)), Some(held)) if tli == timeline && held <= lsn => lsn,
            (Some((tli, lsn)), held) if tli == timeline => {
                // The slot no longer holds what follows the stored WAL:
                // resume from the start of the oldest segment the server
                // still has for it.
                let kept = held.unwrap_or(server_pos);
                let resume = kept.segment_start(seg).max(lsn);
                if resume > lsn {
                    self.gap(&sysid, tli, lsn, resume, if held.is_some() {
                        "the replication slot was ahead of the stored WAL"
                    } else {
                        "the replication slot was invalidated (max_slot_wal_keep_size) and the server removed WAL not yet captured"
                    })?;
                }
                if held.is_none() {
                    // The invalidated slot is of no use: make it anew.
                    let _ = conn.query_rows(&format!("DROP_REPLICATION_SLOT \"{}\"", self.opts.slot));
                    let _ = one_row(
                        conn,
                        &format!("CREATE_REPLICATION_SLOT \"{}\" PHYSICAL (RESERVE_WAL)", self.opts.slot),
                    )?;
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
                let begin = Self::timeline_start(conn, timeline)?;
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
                match self.newest_base_end(&sysid, timeline)? {
                    Some(end) if self.cover_base && end.segment_start(seg) < from => {
                        tracing::info!(base_end = %end, slot = %from, "Streaming from the newest base backup's end, before the slot's position.");
                        self.covering = Some((sysid.clone(), timeline, end, from));
                        end.segment_start(seg)
                    }
                    _ => from,
                }
            }
        };
        self.continue_on(conn, &stream, &sysid, timeline, start, seg)
    }

    /// Where the newest physical base backup of cluster `sysid` that
    /// ended on `timeline` ended, if the repository has one.
    fn newest_base_end(&self, sysid: &str, timeline: u32) -> Result<Option<Lsn>> {
        let repo = self.repo.clone();
        let (snapshots, _) = self
            .runtime
            .block_on(async move { repo.snapshots().await })?;
        Ok(snapshots
            .iter()
            .filter_map(|e| PhysicalMeta::of(&e.snapshot.metadata)?.ok())
            .filter(|m| m.system_identifier == sysid && m.stop_timeline == timeline)
            .filter_map(|m| Lsn::parse(&m.stop_lsn).ok())
            .max())
    }

    fn continue_on(
        &mut self,
        conn: &mut WireConn,
        stream: &str,
        sysid: &str,
        mut timeline: u32,
        mut start: Lsn,
        seg: u64,
    ) -> Result<()> {
        loop {
            match self.stream_timeline(conn, stream, sysid, timeline, start, seg)? {
                None => return Ok(()),
                Some((t, s)) => {
                    let (_, hstream) = streams(&self.repo, sysid);
                    self.store_history(conn, &hstream, sysid, t)?;
                    timeline = t;
                    start = s;
                }
            }
        }
    }

    /// Where `timeline` began, from its history file.
    fn timeline_start(conn: &mut WireConn, timeline: u32) -> Result<Lsn> {
        let (_, content) = timeline_history(conn, timeline)?;
        history_start(&content, timeline).ok_or_else(|| {
            Error::source_failed(format!(
                "the history file of timeline {timeline} has no start"
            ))
        })
    }

    fn store_history(
        &mut self,
        conn: &mut WireConn,
        hstream: &str,
        sysid: &str,
        tli: u32,
    ) -> Result<()> {
        let (name, content) = timeline_history(conn, tli)?;
        let mut info = self.piece(
            hstream,
            HISTORY_KIND,
            sysid,
            format!("{tli:08X}"),
            format!("{:08X}", tli + 1),
        );
        info.details = serde_json::json!({ "file": name });
        self.store(info, content.as_bytes())?;
        Ok(())
    }

    fn gap(&mut self, sysid: &str, tli: u32, from: Lsn, to: Lsn, reason: &str) -> Result<()> {
        if to <= from {
            return Ok(());
        }
        let gstream = gap_stream(&self.repo, sysid);
        let info = self.piece(
            &gstream,
            GAP_KIND,
            sysid,
            position(tli, from),
            position(tli, to),
        );
        let wait = self.opts.lock_wait;
        let repo = self.repo.clone();
        let reason2 = reason.to_owned();
        self.runtime
            .block_on(async move { repo.put_capture_gap(info, &reason2, wait).await })?;
        self.summary.gaps += 1;
        tracing::warn!(from = %from, to = %to, reason, "WAL could not be captured; a gap was recorded.");
        (self.events)(ReceiverEvent::Gap {
            from: format!("{tli}/{from}"),
            to: format!("{tli}/{to}"),
            reason: reason.to_owned(),
        });
        Ok(())
    }

    /// Streams one timeline from `start`; `Ok(None)` when stopped,
    /// `Ok(Some(next timeline, its start))` when the server ended this
    /// timeline.
    #[allow(clippy::too_many_lines)]
    fn stream_timeline(
        &mut self,
        conn: &mut WireConn,
        stream: &str,
        sysid: &str,
        timeline: u32,
        start: Lsn,
        seg: u64,
    ) -> Result<Option<(u32, Lsn)>> {
        conn.send_query(&format!(
            "START_REPLICATION SLOT \"{}\" PHYSICAL {start} TIMELINE {timeline}",
            self.opts.slot
        ))
        .map_err(|e| wire_error(&e, "starting replication"))?;
        // CopyBothResponse, or an error.
        loop {
            let r = conn
                .next_message(|tag, body| match tag {
                    b'W' => Ok(true),
                    b'E' => Err(db_error(body)),
                    _ => Ok(false),
                })
                .map_err(|e| io(&e))?;
            match r {
                Ok(true) => break,
                Ok(false) => {}
                Err(e) => return Err(wire_error(&e, "starting replication")),
            }
        }
        (self.events)(ReceiverEvent::Streaming {
            system_identifier: sysid.to_owned(),
            timeline,
            from: start.to_string(),
        });
        let mut pending: Vec<u8> = Vec::new();
        let mut pending_start = start;
        let mut pending_since: Option<Instant> = None;
        let mut next = start;
        let mut server_end = start;
        let mut stored = start;
        let mut last_status = Instant::now();
        loop {
            if self.stop.is_cancelled() {
                if !pending.is_empty() {
                    self.flush(stream, sysid, timeline, pending_start, &pending)?;
                    stored = next;
                }
                let _ = send_status(conn, stored);
                return Ok(None);
            }
            let msg = conn
                .poll_message(Duration::from_millis(200), |tag, body| match tag {
                    b'd' => match body.first() {
                        Some(b'w') if body.len() >= 25 => {
                            let at = Lsn(u64::from_be_bytes(
                                body[1..9].try_into().unwrap_or_default(),
                            ));
                            let end = Lsn(u64::from_be_bytes(
                                body[9..17].try_into().unwrap_or_default(),
                            ));
                            Msg::Data(at, body[25..].to_vec(), end)
                        }
                        Some(b'k') if body.len() >= 18 => Msg::Keepalive(
                            Lsn(u64::from_be_bytes(
                                body[1..9].try_into().unwrap_or_default(),
                            )),
                            body[17] != 0,
                        ),
                        _ => Msg::Other,
                    },
                    b'c' => Msg::CopyDone,
                    b'E' => Msg::Error(db_error(body)),
                    _ => Msg::Other,
                })
                .map_err(|e| io(&e))?;
            match msg {
                Some(Msg::Data(at, data, end)) => {
                    if at != next {
                        return Err(Error::source_failed(format!(
                            "the server sent WAL from {at} where {next} was expected"
                        )));
                    }
                    server_end = server_end.max(end);
                    // Pieces never cross a segment boundary.
                    let mut rest: &[u8] = &data;
                    while !rest.is_empty() {
                        let seg_end = (next.0 / seg + 1) * seg;
                        let take = rest.len().min((seg_end - next.0) as usize);
                        if pending.is_empty() {
                            pending_start = next;
                            pending_since = Some(Instant::now());
                        }
                        pending.extend_from_slice(&rest[..take]);
                        rest = &rest[take..];
                        next = Lsn(next.0 + take as u64);
                        if next.0 == seg_end || pending.len() >= self.opts.max_piece {
                            self.flush(stream, sysid, timeline, pending_start, &pending)?;
                            pending.clear();
                            pending_since = None;
                            stored = next;
                            send_status(conn, stored).map_err(|e| io(&e))?;
                            last_status = Instant::now();
                            self.stored_event(timeline, stored, server_end);
                        }
                    }
                }
                Some(Msg::Keepalive(end, reply)) => {
                    server_end = server_end.max(end);
                    if reply {
                        send_status(conn, stored).map_err(|e| io(&e))?;
                        last_status = Instant::now();
                    }
                }
                Some(Msg::CopyDone) => {
                    if !pending.is_empty() {
                        self.flush(stream, sysid, timeline, pending_start, &pending)?;
                        pending.clear();
                    }
                    conn.send_copy_done().map_err(|e| io(&e))?;
                    // The next timeline and where it starts.
                    let rows = read_result(conn)?;
                    let row = rows.first().ok_or_else(|| {
                        Error::source_failed(
                            "the server ended the timeline without naming the next",
                        )
                    })?;
                    let next_tli: u32 = row
                        .first()
                        .cloned()
                        .flatten()
                        .and_then(|t| t.parse().ok())
                        .ok_or_else(|| Error::source_failed("no next timeline"))?;
                    let next_start =
                        Lsn::parse(row.get(1).cloned().flatten().as_deref().unwrap_or(""))?;
                    return Ok(Some((next_tli, next_start)));
                }
                Some(Msg::Error(e)) => return Err(wire_error(&e, "streaming WAL")),
                Some(Msg::Other) | None => {}
            }
            let due = pending_since.is_some_and(|t| t.elapsed() >= self.opts.flush_interval);
            if due && !pending.is_empty() {
                self.flush(stream, sysid, timeline, pending_start, &pending)?;
                pending.clear();
                pending_since = None;
                stored = next;
                send_status(conn, stored).map_err(|e| io(&e))?;
                last_status = Instant::now();
                self.stored_event(timeline, stored, server_end);
            }
            if last_status.elapsed() >= Duration::from_secs(10) {
                send_status(conn, stored).map_err(|e| io(&e))?;
                last_status = Instant::now();
            }
        }
    }

    fn stored_event(&self, timeline: u32, stored: Lsn, server: Lsn) {
        (self.events)(ReceiverEvent::Stored {
            timeline,
            lsn: stored.to_string(),
            server_lsn: server.to_string(),
            received: Utc::now(),
        });
    }

    fn flush(
        &mut self,
        stream: &str,
        sysid: &str,
        timeline: u32,
        from: Lsn,
        data: &[u8],
    ) -> Result<()> {
        let to = Lsn(from.0 + data.len() as u64);
        let mut info = self.piece(
            stream,
            WAL_KIND,
            sysid,
            position(timeline, from),
            position(timeline, to),
        );
        let now = Utc::now();
        info.time_first = Some(now);
        info.time_last = Some(now);
        info.details = serde_json::json!({ "timeline": timeline });
        self.store(info, data)?;
        self.summary.pieces += 1;
        self.summary.bytes += data.len() as u64;
        self.summary.last = Some(format!("{timeline}/{to}"));
        Ok(())
    }
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
    m.extend_from_slice(&pg_now().to_be_bytes());
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

/// Reads result rows until `ReadyForQuery`.
fn read_result(conn: &mut WireConn) -> Result<Vec<Vec<Option<String>>>> {
    let mut rows = Vec::new();
    loop {
        let r = conn
            .next_message(|tag, body| match tag {
                b'D' => data_row(body).map(Some).map_err(|e| e.to_string()),
                b'E' => Err(db_error(body).to_string()),
                b'Z' => Ok(None),
                _ => Ok(Some(Vec::new())),
            })
            .map_err(|e| io(&e))?;
        match r {
            Ok(Some(row)) if !row.is_empty() => rows.push(row),
            Ok(Some(_)) => {}
            Ok(None) => return Ok(rows),
            Err(m) => return Err(Error::source_failed(m)),
        }
    }
}

/// `TIMELINE_HISTORY tli`: the file's name and content.
fn timeline_history(conn: &mut WireConn, tli: u32) -> Result<(String, String)> {
    let row = one_row(conn, &format!("TIMELINE_HISTORY {tli}"))?;
    Ok((
        row.first().cloned().flatten().unwrap_or_default(),
        row.get(1).cloned().flatten().unwrap_or_default(),
    ))
}

/// Where `timeline` began according to its history file (the switch
/// point of its parent, the last line).
pub(crate) fn history_start(content: &str, timeline: u32) -> Option<Lsn> {
    let _ = timeline;
    content
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().nth(1).and_then(|p| Lsn::parse(p).ok()))
        .next_back()
}

/// The timelines a history file names with where each ended: `(parent
/// timeline, switch point)` in order.
pub(crate) fn history_entries(content: &str) -> Vec<(u32, Lsn)> {
    content
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let tli = f.next()?.parse().ok()?;
            let lsn = Lsn::parse(f.next()?).ok()?;
            Some((tli, lsn))
        })
        .collect()
}

/// Stores `path` (a WAL segment, a `.partial` one or a timeline history
/// file, as `archive_command` gives it) as a piece of the cluster's
/// stream; a backup history file (`.backup`) is acknowledged without being
/// stored (`None`: recovery does not need it). Pushing the same bytes
/// again succeeds; other bytes for a stored segment are refused.
///
/// # Errors
///
/// [`Error::Config`] for a file name that is neither; [`Error::Source`]
/// for a conflicting segment; storage errors.
pub async fn push(
    repo: &Repository,
    system_identifier: &str,
    source: SourceDescriptor,
    path: &Path,
    segment_size: u64,
) -> Result<Option<CaptureName>> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Config(format!("{} is not a WAL file name", path.display())))?
        .to_owned();
    if name.ends_with(".backup") {
        return Ok(None);
    }
    let data = tokio::fs::read(path)
        .await
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let (stream, hstream) = streams(repo, system_identifier);
    // A `.partial` segment (the end of a timeline at a promotion) is kept
    // like a whole one; its tail is zeros.
    let segment_name = name.strip_suffix(".partial").unwrap_or(&name);
    let (info_stream, kind, first, last) = if is_wal_file_name(segment_name) {
        let (tli, segno) = parse_wal_name(segment_name, segment_size)?;
        if data.len() as u64 != segment_size {
            return Err(Error::Config(format!(
                "{} has {} bytes, not a WAL segment of {segment_size}",
                path.display(),
                data.len()
            )));
        }
        let from = Lsn(segno * segment_size);
        (
            stream,
            WAL_KIND,
            position(tli, from),
            position(tli, Lsn(from.0 + segment_size)),
        )
    } else if let Some(tli) = name
        .strip_suffix(".history")
        .and_then(|t| u32::from_str_radix(t, 16).ok())
    {
        (
            hstream,
            HISTORY_KIND,
            format!("{tli:08X}"),
            format!("{:08X}", tli + 1),
        )
    } else {
        return Err(Error::Config(format!(
            "{name} is neither a WAL segment, a timeline history file nor a backup history file"
        )));
    };
    // The same range stored already: the same bytes succeed, others fail.
    let sha = {
        use sha2::Digest;
        backup_core::Id(sha2::Sha256::digest(&data).into())
    };
    for n in repo.captures().await? {
        if n.stream == info_stream && n.first == first && n.last == last {
            let rec = repo.load_capture(&n).await?;
            if rec.sha256 == Some(sha) {
                return Ok(Some(n));
            }
            return Err(Error::source_failed(format!(
                "{name} is stored already with other content; refusing to store a second version (is another cluster archiving into this repository with the same system identifier?)"
            )));
        }
    }
    let info = PieceInfo {
        stream: info_stream,
        kind: kind.to_owned(),
        source,
        identity: system_identifier.to_owned(),
        first,
        last,
        time_first: Some(Utc::now()),
        time_last: Some(Utc::now()),
        details: serde_json::json!({ "file": name, "archived": true }),
    };
    repo.put_capture(info, &data, Duration::from_secs(3600))
        .await
        .map(Some)
}

/// Parses a WAL segment file name into its timeline and segment number.
pub(crate) fn parse_wal_name(name: &str, segment_size: u64) -> Result<(u32, u64)> {
    let bad = || Error::Config(format!("`{name}` is not a WAL segment file name"));
    if !is_wal_file_name(name) {
        return Err(bad());
    }
    let tli = u32::from_str_radix(&name[..8], 16).map_err(|_| bad())?;
    let hi = u64::from_str_radix(&name[8..16], 16).map_err(|_| bad())?;
    let lo = u64::from_str_radix(&name[16..], 16).map_err(|_| bad())?;
    let per_id = 0x1_0000_0000 / segment_size;
    Ok((tli, hi * per_id + lo))
}

/// What the repository holds of a cluster's WAL: pieces by timeline.
#[derive(Debug, Clone, Default)]
pub struct WalMap {
    /// Per timeline, the stored ranges `[from, to)` with their names.
    pub ranges: BTreeMap<u32, Vec<(Lsn, Lsn, CaptureName)>>,
    /// Per timeline, ranges known to be missing.
    pub gaps: BTreeMap<u32, Vec<(Lsn, Lsn)>>,
    /// History files by timeline.
    pub history: BTreeMap<u32, CaptureName>,
}

impl WalMap {
    /// Reads the capture names of `system_identifier`'s streams.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub async fn load(repo: &Repository, system_identifier: &str) -> Result<Self> {
        let (stream, hstream) = streams(repo, system_identifier);
        let gstream = gap_stream(repo, system_identifier);
        let mut map = WalMap::default();
        for n in repo.captures().await? {
            if n.stream == stream {
                if let (Some((tli, a)), Some((_, b))) =
                    (parse_position(&n.first), parse_position(&n.last))
                {
                    map.ranges.entry(tli).or_default().push((a, b, n));
                }
            } else if n.stream == gstream {
                if let (Some((tli, a)), Some((_, b))) =
                    (parse_position(&n.first), parse_position(&n.last))
                {
                    map.gaps.entry(tli).or_default().push((a, b));
                }
            } else if n.stream == hstream {
                if let Ok(tli) = u32::from_str_radix(&n.first, 16) {
                    map.history.insert(tli, n);
                }
            }
        }
        for r in map.ranges.values_mut() {
            r.sort_by_key(|a| (a.0, a.1));
        }
        Ok(map)
    }

    /// The contiguous stored ranges of `tli`.
    pub fn windows(&self, tli: u32) -> Vec<(Lsn, Lsn)> {
        let mut out: Vec<(Lsn, Lsn)> = Vec::new();
        for (a, b, _) in self.ranges.get(&tli).map(Vec::as_slice).unwrap_or_default() {
            match out.last_mut() {
                Some(last) if last.1 >= *a => last.1 = last.1.max(*b),
                _ => out.push((*a, *b)),
            }
        }
        out
    }
}

/// The directory, beside the file PostgreSQL asked for, where
/// [`fetch`] leaves the segments it fetched ahead (`pg_wal/.backup-prefetch`
/// for a `restore_command` run in the data directory).
pub fn prefetch_dir(dest: &Path) -> PathBuf {
    dest.parent()
        .unwrap_or_else(|| Path::new("."))
        .join(".backup-prefetch")
}

/// Moves segment `name` from the prefetch directory to `dest` when an
/// earlier [`fetch`] left it there; `Ok(false)` when it did not. Prefetched
/// segments that sort before `name` on its timeline will not be asked for
/// again (recovery moves forward) and are removed.
///
/// Needs no repository: a `restore_command` that finds its segment here
/// neither opens the repository nor reads its key.
///
/// # Errors
///
/// File-system errors other than the segment being absent.
pub fn take_prefetched(name: &str, dest: &Path) -> Result<bool> {
    if !is_wal_file_name(name) {
        return Ok(false);
    }
    let dir = prefetch_dir(dest);
    let from = dir.join(name);
    match std::fs::rename(&from, dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(format!("moving {}", from.display()), e)),
    }
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let other = e.file_name().to_string_lossy().into_owned();
            if is_wal_file_name(&other) && other[..8] == name[..8] && other.as_str() < name {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(true)
}

/// Writes WAL file `name` (a segment or a history file) assembled from the
/// repository into `dest`, for `restore_command`. A segment is made of the
/// pieces that cover it on its timeline (and, before the timeline began,
/// on its parent, as PostgreSQL's own segment files are); bytes after the
/// last piece of an unfinished segment are zeros. Where capture began
/// inside the segment (a receiver started after the base backup), the
/// bytes before its first piece are the base backup's: they are taken from
/// the copy of the segment a restore laid out beside `dest` in `pg_wal`.
///
/// The segments after it are fetched ahead by [`fetch_ahead`] (a
/// background process), which leaves only segments the repository holds
/// completely in [`prefetch_dir`], so a prefetched segment never differs
/// from what a later fetch would write.
///
/// # Errors
///
/// [`Error::NotFound`] when nothing of it is stored, or its start is
/// neither stored nor beside `dest` (PostgreSQL then tries `pg_wal` or
/// ends recovery); damaged data; storage and write errors.
pub async fn fetch(
    repo: &Repository,
    system_identifier: &str,
    name: &str,
    dest: &Path,
    segment_size: u64,
) -> Result<()> {
    let map = WalMap::load(repo, system_identifier).await?;
    if let Some(tli) = name
        .strip_suffix(".history")
        .and_then(|t| u32::from_str_radix(t, 16).ok())
    {
        let n = map
            .history
            .get(&tli)
            .ok_or_else(|| Error::not_found(format!("timeline history file {name}")))?;
        let rec = repo.load_capture(n).await?;
        let data = repo.read_capture(&rec).await?;
        return write_atomically(dest, &data).await;
    }
    let (tli, segno) = parse_wal_name(name, segment_size)?;
    let (mut data, covered) = assemble_segment(repo, &map, tli, segno, segment_size).await?;
    let last = covered.last().map_or(0, |r| r.1);
    let holes = holes_before(&covered, last);
    if !holes.is_empty() {
        // Capture began inside this segment (a receiver started after the
        // base backup): its start is the base backup's own WAL, which the
        // restore laid out in `pg_wal` beside `dest`.
        let beside = dest.with_file_name(name);
        match std::fs::read(&beside) {
            Ok(base) if base.len() == data.len() => {
                for (lo, hi) in holes {
                    data[lo..hi].copy_from_slice(&base[lo..hi]);
                }
            }
            _ if holes[0].0 == 0 => {
                // Absent for PostgreSQL (it then tries `pg_wal`), but a
                // hole in what the repository holds, not its end.
                let what = format!(
                    "the start of WAL segment {name} (capture began inside it; {} holds no copy of it from a base backup)",
                    beside.display()
                );
                note_fetch_failed(name, dest, &format!("{what} is not stored"));
                return Err(Error::not_found(what));
            }
            _ => {}
        }
    }
    write_atomically(dest, &data).await
}

/// The byte ranges of a segment that `covered` (sorted, merged ranges)
/// leaves out before offset `end`.
fn holes_before(covered: &[(usize, usize)], end: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    for &(lo, hi) in covered {
        if lo >= end {
            break;
        }
        if lo > at {
            out.push((at, lo));
        }
        at = at.max(hi);
    }
    out
}

/// How long a background prefetch waits for recovery to ask for another
/// segment before it ends (a server paused at its target, or stopped).
const PREFETCH_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Records, for the background prefetch, that recovery asked for `name`
/// (`.asked` in [`prefetch_dir`]): the prefetch keeps the segments after
/// it ready. Best effort: a prefetch that does not learn of it only ends
/// sooner.
pub fn note_asked(name: &str, dest: &Path) {
    if !is_wal_file_name(name) {
        return;
    }
    let dir = prefetch_dir(dest);
    let tmp = dir.join(".asked.tmp");
    let _ = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&tmp, name))
        .and_then(|()| std::fs::rename(&tmp, dir.join(".asked")));
}

/// Records that fetching `name` into `dest` failed for another reason
/// than its absence (`.failed` in [`prefetch_dir`], with `why`): a recovery
/// that then ends short of its target did not see all the captured WAL,
/// and must not be taken for one that did (see [`fetch_failed`]). Best
/// effort.
pub fn note_fetch_failed(name: &str, dest: &Path, why: &str) {
    let dir = prefetch_dir(dest);
    let _ = std::fs::create_dir_all(&dir).and_then(|()| {
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(".failed"))
            .and_then(|mut f| writeln!(f, "{name}: {why}"))
    });
}

/// What [`note_fetch_failed`] recorded for the data directory `data_dir`
/// (its `pg_wal`), if anything.
pub fn fetch_failed(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(
        prefetch_dir(&data_dir.join("pg_wal").join("RECOVERYXLOG")).join(".failed"),
    )
    .ok()
}

/// Whether the background prefetch is assembling segment `name` right now
/// (it is in the batch named by `.range` in [`prefetch_dir`]), so that
/// waiting for it beats fetching it a second time.
pub fn being_fetched(name: &str, dest: &Path, segment_size: u64) -> bool {
    let Ok((tli, segno)) = parse_wal_name(name, segment_size) else {
        return false;
    };
    let Ok(text) = std::fs::read_to_string(prefetch_dir(dest).join(".range")) else {
        return false;
    };
    let f: Vec<u64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    matches!(f.as_slice(), [t, a, b] if *t == u64::from(tli) && (*a..=*b).contains(&segno))
}

/// Whether the recovery that `dest` (a file in a data directory's
/// `pg_wal`) is fetched for is over: the data directory has neither
/// `recovery.signal` nor `standby.signal` any more.
pub fn recovery_over(dest: &Path) -> bool {
    let Some(data) = dest.parent().and_then(Path::parent) else {
        return false;
    };
    data.join("PG_VERSION").exists()
        && !data.join("recovery.signal").exists()
        && !data.join("standby.signal").exists()
}

/// The background half of `restore_command`: keeps the `prefetch`
/// complete segments after the one recovery last asked for (see
/// [`note_asked`]; `name` at first) in [`prefetch_dir`], four assembled at
/// a time, while the server replays. The repository is opened and its WAL
/// listed once, not once a segment.
///
/// Ends when the repository holds no more complete segments on the
/// timeline, recovery asks for another timeline or ends, or it has not
/// asked for a new segment for a minute; when recovery is over it removes
/// what it fetched.
///
/// # Errors
///
/// Storage errors, damaged data, write errors.
pub async fn fetch_ahead(
    repo: &Repository,
    system_identifier: &str,
    name: &str,
    dest: &Path,
    segment_size: u64,
    prefetch: usize,
) -> Result<()> {
    if !is_wal_file_name(name) || prefetch == 0 {
        return Ok(());
    }
    let map = WalMap::load(repo, system_identifier).await?;
    let (tli, mut at) = parse_wal_name(name, segment_size)?;
    let dir = prefetch_dir(dest);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let mut next = at + 1;
    let mut progress = std::time::Instant::now();
    loop {
        if let Some(asked) = std::fs::read_to_string(dir.join(".asked"))
            .ok()
            .and_then(|n| parse_wal_name(n.trim(), segment_size).ok())
        {
            if asked.0 != tli {
                return Ok(());
            }
            if asked.1 > at {
                at = asked.1;
                progress = std::time::Instant::now();
            }
        }
        next = next.max(at + 1);
        let last = at + prefetch as u64;
        if next <= last {
            let upto = last.min(next + 3);
            let range = dir.join(".range");
            std::fs::write(&range, format!("{tli} {next} {upto}"))
                .map_err(|e| Error::io(format!("writing {}", range.display()), e))?;
            let complete = fill(repo, &map, tli, next, upto, &dir, segment_size, 4).await?;
            let _ = std::fs::remove_file(&range);
            if !complete {
                break;
            }
            next = upto + 1;
            continue;
        }
        if recovery_over(dest) || progress.elapsed() > PREFETCH_IDLE {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    if recovery_over(dest) {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// Writes up to `count` complete segments of `tli`, from the one holding
/// `from`, into `dir`: a point-in-time restore stages the first segments
/// recovery asks for while it writes the data directory and moves them to
/// its [`prefetch_dir`], so that replay starts without waiting for the
/// repository. Returns the files written (for their owner to be set).
///
/// # Errors
///
/// Storage errors, damaged data, write errors.
pub async fn prestage(
    repo: &Repository,
    system_identifier: &str,
    tli: u32,
    from: Lsn,
    dir: &Path,
    segment_size: u64,
    count: u64,
) -> Result<Vec<PathBuf>> {
    let map = WalMap::load(repo, system_identifier).await?;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let first = from.0 / segment_size;
    // Two at a time: this runs beside the restore of the data directory,
    // which holds most of the process's memory (each segment is assembled
    // whole).
    fill(
        repo,
        &map,
        tli,
        first,
        first + count.max(1) - 1,
        dir,
        segment_size,
        2,
    )
    .await?;
    Ok((first..first + count)
        .map(|n| wal_file_name(tli, n, segment_size))
        .filter(|name| dir.join(name).exists())
        .map(PathBuf::from)
        .collect())
}

/// Writes the segments `first ..= last` of `tli` that are not in `dir`
/// yet, `parallel` at a time; `Ok(false)` when one of them is not stored
/// completely (the ones before it are written, none after it).
#[allow(clippy::too_many_arguments)] // The range, where it goes, and how fast.
async fn fill(
    repo: &Repository,
    map: &WalMap,
    tli: u32,
    first: u64,
    last: u64,
    dir: &Path,
    segment_size: u64,
    parallel: usize,
) -> Result<bool> {
    use futures::StreamExt as _;
    let mut segments = futures::stream::iter(first..=last)
        .map(|n| async move {
            let path = dir.join(wal_file_name(tli, n, segment_size));
            if path.exists() {
                return Ok((path, None));
            }
            match assemble_segment(repo, map, tli, n, segment_size).await {
                Ok((data, covered)) if covered == [(0, data.len())] => Ok((path, Some(data))),
                // Not stored (yet) or not complete: fetched when asked.
                Ok(_) | Err(Error::NotFound { .. }) => Err(None),
                Err(e) => Err(Some(e)),
            }
        })
        .buffered(parallel.max(1));
    while let Some(r) = segments.next().await {
        match r {
            Ok((_, None)) => {}
            Ok((path, Some(data))) => write_atomically(&path, &data).await?,
            Err(None) => return Ok(false),
            Err(Some(e)) => return Err(e),
        }
    }
    Ok(true)
}

/// A background prefetch in a data directory's [`prefetch_dir`]: one at a
/// time, marked by a `.running` file holding its process id (a file whose
/// process is gone is stale and taken over).
#[derive(Debug)]
pub struct PrefetchRun(PathBuf);

impl PrefetchRun {
    fn marker(dest: &Path) -> PathBuf {
        prefetch_dir(dest).join(".running")
    }

    /// Whether a background prefetch for `dest`'s directory is alive.
    pub fn running(dest: &Path) -> bool {
        std::fs::read_to_string(Self::marker(dest))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
    }

    /// Marks this process as the background prefetch; `None` when another
    /// live one is at work.
    pub fn start(dest: &Path) -> Option<Self> {
        let marker = Self::marker(dest);
        std::fs::create_dir_all(marker.parent()?).ok()?;
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&marker)
            {
                Ok(mut f) => {
                    use std::io::Write as _;
                    f.write_all(std::process::id().to_string().as_bytes())
                        .ok()?;
                    return Some(PrefetchRun(marker));
                }
                Err(_) if !Self::running(dest) => {
                    let _ = std::fs::remove_file(&marker);
                }
                Err(_) => return None,
            }
        }
        None
    }
}

impl Drop for PrefetchRun {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Writes `data` to `dest` through a temporary name, so that a reader
/// never sees half a file.
async fn write_atomically(dest: &Path, data: &[u8]) -> Result<()> {
    let tmp = dest.with_extension("backup-tmp");
    tokio::fs::write(&tmp, data)
        .await
        .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    tokio::fs::rename(&tmp, dest)
        .await
        .map_err(|e| Error::io(format!("writing {}", dest.display()), e))
}

/// The bytes of segment `segno` of timeline `tli` (zeros where nothing is
/// stored), and the byte ranges of it the repository holds, sorted and
/// merged: `[(0, segment_size)]` when it holds all of it.
async fn assemble_segment(
    repo: &Repository,
    map: &WalMap,
    tli: u32,
    segno: u64,
    segment_size: u64,
) -> Result<(Vec<u8>, Vec<(usize, usize)>)> {
    let begin = Lsn(segno * segment_size);
    let end = Lsn(begin.0 + segment_size);
    // Where each timeline of the ancestry applies: this timeline from its
    // start, its parents before.
    let mut spans: Vec<(u32, Lsn, Lsn)> = Vec::new();
    let mut upper = end;
    let mut current = tli;
    loop {
        let start = if current > 1 {
            match map.history.get(&current) {
                Some(n) => {
                    let rec = repo.load_capture(n).await?;
                    let text =
                        String::from_utf8_lossy(&repo.read_capture(&rec).await?).into_owned();
                    let entries = history_entries(&text);
                    let parent = entries.last().map_or(current - 1, |e| e.0);
                    let switch = entries.last().map_or(Lsn(0), |e| e.1);
                    spans.push((current, switch.max(begin), upper));
                    if switch <= begin {
                        break;
                    }
                    upper = switch;
                    current = parent;
                    continue;
                }
                None => Lsn(0),
            }
        } else {
            Lsn(0)
        };
        spans.push((current, start.max(begin), upper));
        break;
    }
    let mut out = vec![0u8; segment_size as usize];
    let mut found = false;
    let mut parts: Vec<(u64, u64)> = Vec::new();
    for (t, from, to) in spans {
        if from >= to {
            continue;
        }
        for (a, b, n) in map.ranges.get(&t).map(Vec::as_slice).unwrap_or_default() {
            if *b <= from || *a >= to {
                continue;
            }
            let rec = repo.load_capture(n).await?;
            let bytes = repo.read_capture(&rec).await?;
            let lo = from.max(*a);
            let hi = to.min(*b);
            let src = &bytes[(lo.0 - a.0) as usize..(hi.0 - a.0) as usize];
            let dst = (lo.0 - begin.0) as usize;
            out[dst..dst + src.len()].copy_from_slice(src);
            found = true;
            parts.push((lo.0, hi.0));
        }
    }
    if !found {
        return Err(Error::not_found(format!(
            "WAL segment {}",
            wal_file_name(tli, segno, segment_size)
        )));
    }
    // A receiver and archive_command may overlap: merge what they hold.
    parts.sort_unstable();
    let mut covered: Vec<(usize, usize)> = Vec::new();
    for (lo, hi) in parts {
        let (lo, hi) = ((lo - begin.0) as usize, (hi - begin.0) as usize);
        match covered.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => covered.push((lo, hi)),
        }
    }
    Ok((out, covered))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_history() {
        let p = position(2, Lsn(0x1_2345_6789));
        assert_eq!(p, "000000020000000123456789");
        assert_eq!(parse_position(&p), Some((2, Lsn(0x1_2345_6789))));
        assert_eq!(parse_position("zz"), None);
        let h = "1\t0/3000000\tno recovery target specified\n\n2\t0/5000A0\tafter\n";
        assert_eq!(
            history_entries(h),
            vec![(1, Lsn(0x300_0000)), (2, Lsn(0x50_00A0))]
        );
        assert_eq!(history_start(h, 3), Some(Lsn(0x50_00A0)));
        assert_eq!(
            parse_wal_name("000000020000000100000003", 16 << 20).unwrap(),
            (2, 256 + 3)
        );
        assert!(parse_wal_name("00000002.history", 16 << 20).is_err());
    }

    #[test]
    fn holes_are_the_ranges_left_out_before_the_end() {
        assert_eq!(holes_before(&[(0, 10)], 10), vec![]);
        assert_eq!(holes_before(&[(4, 10)], 10), vec![(0, 4)]);
        assert_eq!(
            holes_before(&[(4, 6), (8, 10), (12, 20)], 20),
            vec![(0, 4), (6, 8), (10, 12)]
        );
        assert_eq!(holes_before(&[(0, 6), (8, 10)], 6), vec![]);
    }

    /// Capture that began inside a segment (a receiver started after the
    /// base backup, or resumed after a gap) leaves the segment's start to
    /// the base backup's copy in `pg_wal`; without one, the segment is not
    /// served (zeros where the checkpoint record should be would stop
    /// recovery).
    #[tokio::test]
    async fn a_segment_captured_from_its_middle_takes_its_start_from_pg_wal() {
        use backup_core::keys::KdfParams;
        use backup_core::repo::InitOptions;
        let sink: std::sync::Arc<dyn backup_core::Sink> =
            std::sync::Arc::new(backup_core::MemorySink::new());
        let opts = InitOptions {
            kdf: KdfParams::insecure_fast(),
            ..InitOptions::default()
        };
        let repo = Repository::init(sink, Some(b"pw"), &opts).await.unwrap();
        let seg: u64 = 1 << 20;
        let sysid = "7000000000000000001";
        let (stream, _) = streams(&repo, sysid);
        // Segment 3 of timeline 1, stored from offset 0x100 to 0x9000.
        let from = Lsn(3 * seg + 0x100);
        let piece: Vec<u8> = (0..0x8f00u32).map(|i| (i % 251) as u8 + 1).collect();
        let info = PieceInfo {
            stream,
            kind: WAL_KIND.to_owned(),
            source: backup_core::snapshot::SourceDescriptor {
                kind: "postgres".into(),
                url: "postgres://h/".into(),
            },
            identity: sysid.to_owned(),
            first: position(1, from),
            last: position(1, Lsn(from.0 + piece.len() as u64)),
            time_first: None,
            time_last: None,
            details: serde_json::Value::Null,
        };
        repo.put_capture(info, &piece, Duration::from_secs(5))
            .await
            .unwrap();
        let name = wal_file_name(1, 3, seg);
        let dir = tempfile::tempdir().unwrap();
        let pg_wal = dir.path().join("pg_wal");
        std::fs::create_dir(&pg_wal).unwrap();
        let dest = pg_wal.join("RECOVERYXLOG");
        // No copy beside it: not served.
        let err = fetch(&repo, sysid, &name, &dest, seg).await.unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        assert!(!dest.exists());
        // The base backup's copy: its start, then the captured bytes, then
        // zeros after the last piece.
        let base = vec![0xEEu8; seg as usize];
        std::fs::write(pg_wal.join(&name), &base).unwrap();
        fetch(&repo, sysid, &name, &dest, seg).await.unwrap();
        let got = std::fs::read(&dest).unwrap();
        assert_eq!(got.len(), seg as usize);
        assert!(got[..0x100].iter().all(|b| *b == 0xEE));
        assert_eq!(&got[0x100..0x9000], &piece[..]);
        assert!(got[0x9000..].iter().all(|b| *b == 0));
    }
}
