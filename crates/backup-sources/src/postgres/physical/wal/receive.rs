//! The streaming receiver ([`receive`]): a physical replication slot, then
//! `START_REPLICATION` from the end of what is stored (or from the newest
//! base backup's end at a first start); received WAL is stored at least
//! every `flush_interval` and every `max_piece` bytes, and at each segment
//! end, and only then confirmed to the server as flushed. A timeline the
//! server ends is followed to the next; WAL that can no longer be captured
//! is recorded as a gap.

use std::time::{Duration, Instant};

use std::sync::Arc;

use backup_core::capture::{CaptureName, PieceInfo};
use backup_core::repo::Repository;
use backup_core::snapshot::SourceDescriptor;
use backup_core::{Error, Result};
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

use super::super::lsn::{parse_setting_size, Lsn};
use super::super::meta::PhysicalMeta;
use super::super::remote;
use super::protocol::{
    end_of_timeline, io, one_row, poll_msg, send_status, timeline_history, wire_error, Msg,
};
use super::stored::{
    gap_stream, history_start, parse_position, position, streams, GAP_KIND, HISTORY_KIND, WAL_KIND,
};
use crate::capture::{CaptureEvent, CaptureObserver, FollowSummary, Position, StoredPiece};
use crate::postgres::conn::ConnInfo;
use crate::postgres::wire::{db_error, WireConn};

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
        let mut conn =
            WireConn::connect(&wire).map_err(|e| remote::connect_error(&e, &user, remote::Purpose::StreamWal))?;
        let mut r = Receiver {
            repo,
            opts,
            descriptor,
            runtime,
            observer,
            stop,
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
                    .map_err(|e| remote::connect_error(&e, &user, remote::Purpose::StreamWal))?;
                r.run(&mut conn)?;
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
    /// What the next stream continues, for [`CaptureEvent::Started`].
    continues: String,
    /// When a piece was last stored.
    stored_time: Option<DateTime<Utc>>,
    summary: FollowSummary,
    /// Set while the first stream of a cluster reaches back to its newest
    /// base backup: the cluster, timeline, the base's end and where the
    /// slot holds WAL from.
    covering: Option<(String, u32, Lsn, Lsn)>,
    /// Whether a first stream may reach back to the newest base backup
    /// (not again once the server said it no longer has that WAL).
    cover_base: bool,
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
        self.summary.stream.clone_from(&stream);
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
        self.continues = match (last, &self.covering) {
            (Some(_), _) => "the stored WAL".to_owned(),
            (None, Some(_)) => "the newest base backup's end".to_owned(),
            (None, None) => "the replication slot's position".to_owned(),
        };
        self.continue_on(conn, &stream, &sysid, timeline, start, seg)
    }

    /// Where the newest physical base backup of cluster `sysid` that
    /// ended on `timeline` ended, if the repository has one.
    fn newest_base_end(&self, sysid: &str, timeline: u32) -> Result<Option<Lsn>> {
        // A write-only key knows only its own snapshots.
        let repo = self.repo.clone();
        let snapshots = self
            .runtime
            .block_on(async move { repo.known_snapshots().await })?;
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
                    self.continues = format!("the end of timeline {timeline}");
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
        let record = self
            .runtime
            .block_on(async move { repo.put_capture_gap(info, &reason2, wait).await })?;
        self.summary.gaps += 1;
        tracing::warn!(from = %from, to = %to, reason, "WAL could not be captured; a gap was recorded.");
        self.observer.event(&CaptureEvent::Gap {
            stream: streams(&self.repo, sysid).0,
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
        stream: &str,
        sysid: &str,
        timeline: u32,
        start: Lsn,
        seg: u64,
    ) -> Result<Option<(u32, Lsn)>> {
        self.start_replication(conn, timeline, start)?;
        self.observer.event(&CaptureEvent::Started {
            stream: stream.to_owned(),
            identity: sysid.to_owned(),
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
                    self.flush(stream, sysid, timeline, p.start, &p.data)?;
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
                        let seg_end = (p.next.0 / seg + 1) * seg;
                        let take = rest.len().min((seg_end - p.next.0) as usize);
                        if p.data.is_empty() {
                            p.start = p.next;
                            p.since = Some(Instant::now());
                        }
                        p.data.extend_from_slice(&rest[..take]);
                        rest = &rest[take..];
                        p.next = Lsn(p.next.0 + take as u64);
                        if p.next.0 == seg_end || p.data.len() >= self.opts.max_piece {
                            self.store_pending(conn, &mut p, stream, sysid, timeline)?;
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
                        self.flush(stream, sysid, timeline, p.start, &p.data)?;
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
                self.store_pending(conn, &mut p, stream, sysid, timeline)?;
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
    fn store_pending(
        &mut self,
        conn: &mut WireConn,
        p: &mut Pending,
        stream: &str,
        sysid: &str,
        timeline: u32,
    ) -> Result<()> {
        self.flush(stream, sysid, timeline, p.start, &p.data)?;
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
        Ok(())
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
