//! Continuous oplog capture (`backup oplog follow`, a daemon job with
//! `oplog = "continuous"`).
//!
//! A tailable, awaiting cursor on `local.oplog.rs` (majority read concern)
//! reads every entry from the first position not yet stored; entries are
//! gathered into slices bounded by time and size and stored as capture
//! pieces of the stream `mongodb-oplog` / the replica set
//! (`REPOSITORY_FORMAT.md` §21): `first` is the previous slice's `last`, so
//! consecutive slices chain, and `last` is the timestamp right after the
//! slice's newest entry. Entries sharing a timestamp (`SecantusDB` logs a
//! transaction's operations at one timestamp) never straddle two slices.
//!
//! Where to start comes from the repository alone: after the stream's
//! newest piece, or else after the newest base snapshot of the replica
//! set, or else at the server's newest entry. So a follower killed at any
//! point, or a server or network that went away, resumes exactly where
//! the stored pieces end: nothing is skipped and nothing stored twice.
//! When the oplog no longer holds the entry after the last stored one
//! (it rolled over), the missing range is recorded as a gap.

use std::time::Duration;

use backup_core::{Error, Result};
use chrono::{DateTime, Utc};
use futures::StreamExt;
use mongodb::bson::{doc, RawDocumentBuf, Timestamp};
use mongodb::options::{CursorType, ReadConcern};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::conn::{Conn, Hello, Side};
use super::replset::{identify, oplog_edge};
use super::{ReplicaSet, Ts};
use crate::capture::follow::{passing, At, Batch, Capture, Link};
use crate::capture::{CaptureEvent, CaptureKind, CaptureObserver, FollowOptions, FollowSummary};

/// The capture kind of the oplog.
pub const OPLOG_KIND: &str = "mongodb-oplog";

/// The shortest slice time.
pub const MIN_SLICE_TIME: Duration = Duration::from_secs(1);

/// The default slice time.
pub const SLICE_TIME: Duration = Duration::from_secs(10);

impl At for Ts {
    fn at(self) -> crate::capture::Position {
        self.into()
    }

    fn of(record: &str) -> Option<Self> {
        Ts::from_position(record)
    }
}

/// Reads an entry's timestamp.
fn entry_ts(doc: &RawDocumentBuf) -> Option<Ts> {
    doc.get_timestamp("ts").ok().map(Ts::from)
}

/// The time an entry was written: its `wall` clock (mongod 4.2+), else
/// its timestamp's seconds.
fn entry_time(doc: &RawDocumentBuf, ts: Ts) -> Option<DateTime<Utc>> {
    match doc.get_datetime("wall") {
        Ok(w) => DateTime::from_timestamp_millis(w.timestamp_millis()),
        Err(_) => DateTime::from_timestamp(i64::from(ts.t), 0),
    }
}

/// The slice being gathered, with what its record's details tell.
#[derive(Default)]
struct Slice {
    batch: Batch,
    /// Entries per `op`: `i`, `u`, `d`, `c`, others.
    ops: [u64; 5],
    first_ts: Option<Ts>,
    last_ts: Ts,
    /// Entries with `last_ts`.
    last_group: u64,
}

impl Slice {
    fn add(&mut self, doc: &RawDocumentBuf, ts: Ts) {
        self.first_ts.get_or_insert(ts);
        let same = ts == self.last_ts && !self.batch.is_empty();
        self.last_group = if same { self.last_group + 1 } else { 1 };
        self.last_ts = ts;
        let op = doc.get_str("op").unwrap_or("");
        let op = ["i", "u", "d", "c"].iter().position(|o| *o == op);
        self.ops[op.unwrap_or(4)] += 1;
        self.batch.add(doc.as_bytes(), entry_time(doc, ts));
    }
}

/// A message from the cursor task.
enum Read {
    /// The cursor is open; entries up to this position (the server's
    /// newest write once the first batch was back) may have been missed.
    Opened(Ts),
    /// The entries of one server reply, in oplog order.
    Entries(Vec<RawDocumentBuf>),
    /// A reply without entries: everything the server had made visible
    /// when it answered was read before.
    CaughtUp,
    /// A driver error, or a reply that could not be taken apart.
    Failed(Error),
    Ended,
}

/// Follows the oplog of the replica set `url` reaches into `repo` until
/// `cancel` fires (then the entries read so far are stored as a last
/// slice) or an error that does not pass.
///
/// Errors that may pass (the server restarting, the network) are
/// reported to `observer` and capture resumes from the last stored
/// position, with a doubling wait up to a minute.
///
/// # Errors
///
/// [`Error::Config`] for a standalone server or a `mongos`, bad options;
/// [`Error::PermissionDenied`] when the user may not read the oplog;
/// [`Error::Locked`] when another follower holds the stream; storage
/// errors that do not pass.
pub async fn follow(
    repo: &backup_core::repo::Repository,
    url: &str,
    opts: &FollowOptions,
    observer: &dyn CaptureObserver,
    cancel: &CancellationToken,
) -> Result<FollowSummary> {
    opts.check(MIN_SLICE_TIME)?;
    let conn = Conn::new(url, Side::Source).await?;
    let mut followed: Option<ReplicaSet> = None;
    let url = conn.redacted.clone();
    let mut cap = Capture::new(repo, opts, observer, cancel, CaptureKind::MongodbOplog, url);
    loop {
        let attempt = run(&mut cap, &conn, &mut followed).await;
        if !cap.again(attempt).await? {
            return Ok(cap.summary);
        }
    }
}

/// One connection's worth of following: identify, resume, tail, store.
async fn run(cap: &mut Capture<'_>, conn: &Conn, followed: &mut Option<ReplicaSet>) -> Result<()> {
    let hello = conn.hello().await?;
    let set = identify(conn, &hello).await?;
    if let Some(old) = followed.as_ref().filter(|old| **old != set) {
        cap.summary.gaps += 1;
        cap.observer.event(&CaptureEvent::Gap {
            stream: cap.summary.stream.clone(),
            record: None,
            reason: format!(
                "the replica set's identity changed from {} to {}: capture continues in a new stream, which needs a new base snapshot to be restorable",
                old.identity(),
                set.identity()
            ),
        });
        cap.release().await;
    }
    *followed = Some(set.clone());
    cap.claim(&set.identity()).await?;
    let mut pos = resume(cap, conn, &hello, &set).await?;
    check_rollover(cap, conn, &mut pos, &set).await?;
    cap.summary.next = Some(pos.next.at());

    // The cursor runs in a task of its own: waiting for an entry can then
    // be given up (to store a slice that is due) without dropping the
    // cursor in the middle of a getMore.
    let (tx, mut rx) = mpsc::channel::<Read>(4096);
    // (Dropping the set stops the reader.)
    let mut reader = tokio::task::JoinSet::new();
    reader.spawn(tail(conn.clone(), pos.next, tx));
    let cancel = cap.cancel;
    let mut follower = Follower {
        cap,
        conn,
        set,
        pos,
        slice: Slice::default(),
        check: SkipCheck::default(),
        last_lag: Instant::now(),
        caught_up: false,
        caught_up_at: None,
    };
    loop {
        let deadline = follower.deadline();
        let msg = tokio::select! {
            () = cancel.cancelled() => return follower.stop().await,
            m = tokio::time::timeout_at(deadline, rx.recv()) => m,
        };
        follower.receive(msg).await?;
        follower.tick().await?;
    }
}

/// A connection's follower: the stored position, the slice being
/// gathered and what is known of the reader.
struct Follower<'c, 'a> {
    cap: &'c mut Capture<'a>,
    conn: &'c Conn,
    set: ReplicaSet,
    pos: Link<Ts>,
    slice: Slice,
    check: SkipCheck,
    last_lag: Instant,
    /// The server's last reply was empty: every entry it had made visible
    /// was read, so none is missing from the newest timestamp's group.
    caught_up: bool,
    caught_up_at: Option<DateTime<Utc>>,
}

impl Follower<'_, '_> {
    /// When to stop waiting for the reader: in a second, or when the slice
    /// is due once the reader has caught up (before, a due slice is stored
    /// when a newer entry arrives).
    fn deadline(&self) -> Instant {
        let now = Instant::now();
        let second = now + Duration::from_secs(1);
        match self.slice.batch.due_at(self.cap.opts) {
            Some(due) if self.caught_up => second.min(due.max(now)),
            _ => second,
        }
    }

    /// Stores what was read as the follower stops.
    async fn stop(&mut self) -> Result<()> {
        // What was read is stored, unless the newest entries may
        // lack companions sharing their timestamp: those are read
        // again at the next start.
        if !self.slice.batch.is_empty() {
            self.store_slice(self.caught_up).await?;
        }
        Ok(())
    }

    /// Takes in one message of the reader (`Err` when none came in time).
    async fn receive(
        &mut self,
        msg: std::result::Result<Option<Read>, tokio::time::error::Elapsed>,
    ) -> Result<()> {
        match msg {
            Ok(Some(Read::Opened(upto))) => self.check.suspect = Some(upto),
            Ok(Some(Read::Entries(docs))) => self.add_entries(docs).await?,
            Ok(Some(Read::CaughtUp)) => {
                self.caught_up = true;
                self.caught_up_at = Some(Utc::now());
            }
            Ok(Some(Read::Failed(e))) => return Err(e),
            Ok(Some(Read::Ended) | None) => {
                return Err(passing("the oplog cursor was closed by the server"))
            }
            Err(_) => {}
        }
        Ok(())
    }

    /// Adds the entries of one server reply to the slice, storing it first
    /// when it is due and a newer entry arrives.
    async fn add_entries(&mut self, docs: Vec<RawDocumentBuf>) -> Result<()> {
        self.caught_up = false;
        for doc in docs {
            let Some(ts) = entry_ts(&doc) else {
                return Err(Error::source_failed(
                    "an oplog entry without a timestamp (`ts`)",
                ));
            };
            // Already stored by a re-read of a checked slice.
            if ts < self.pos.next && self.check.reread.is_some_and(|r| ts <= r) {
                continue;
            }
            if ts < self.pos.next || (!self.slice.batch.is_empty() && ts < self.slice.last_ts) {
                return Err(self.out_of_order(ts));
            }
            if ts > self.slice.last_ts && self.slice.batch.due(self.cap.opts) {
                self.store_slice(true).await?;
            }
            self.slice.add(&doc, ts);
        }
        Ok(())
    }

    /// Stores the slice gathered so far and starts the next one, unless it
    /// must wait (see below).
    async fn store_slice(&mut self, certain: bool) -> Result<()> {
        let conn = self.conn;
        self.check
            .run(conn, &self.pos, &mut self.slice, self.cap.observer)
            .await?;
        // Entries sharing the newest timestamp are committed together:
        // unless a newer entry was read or the server had nothing more to
        // give (`certain`), make sure all of them were read before the
        // slice ends after them; otherwise the slice waits. (Only a stop
        // gets here uncertain: a count of the oplog can be a scan of it.)
        if !certain {
            let on_server = oplog(conn)
                .count_documents(doc! {"ts": Timestamp::from(self.slice.last_ts)})
                .await
                .map_err(|e| oplog_error(conn, e))?;
            if on_server > self.slice.last_group {
                return Ok(());
            }
        }
        let s = std::mem::take(&mut self.slice);
        let [inserts, updates, deletes, commands, others] = s.ops;
        let details = serde_json::json!({
            "entries": s.batch.entries,
            "bytes": s.batch.bytes,
            "ops": {"i": inserts, "u": updates, "d": deletes, "c": commands, "n": others},
            "first_ts": s.first_ts.map(|t| t.to_string()),
            "last_ts": s.last_ts.to_string(),
            "replica_set": self.set.name,
            "replica_set_id": self.set.id,
        });
        let last = s.last_ts.next();
        self.cap
            .store(&mut self.pos, s.batch, last, details)
            .await?;
        Ok(())
    }

    /// The error for entry `ts` arriving before what was already read.
    fn out_of_order(&self, ts: Ts) -> Error {
        let after = if self.slice.batch.is_empty() {
            self.pos.next.prev()
        } else {
            self.slice.last_ts
        };
        passing(format!(
            "the oplog returned entry {ts} after {after}: resuming from the last stored position"
        ))
    }

    /// Stores the slice when it is due and the reader has caught up; every
    /// second, reports the lag and renews the lease.
    async fn tick(&mut self) -> Result<()> {
        if self.caught_up && self.slice.batch.due(self.cap.opts) {
            self.store_slice(true).await?;
        }
        if self.last_lag.elapsed() >= Duration::from_secs(1) {
            self.last_lag = Instant::now();
            self.report_lag().await?;
            self.cap.renew().await?;
        }
        Ok(())
    }

    /// Reports how far the stored entries are behind the server's newest
    /// write: from the oldest entry not stored (the slice's first, or,
    /// when none is read yet, one written after the newest stored entry
    /// and after the reader last caught up) to the server's newest.
    async fn report_lag(&self) -> Result<()> {
        let hello = self.conn.hello().await?;
        let (Some(last), Some(when)) = (hello.last_write, hello.last_write_date) else {
            return Ok(());
        };
        let (pos, slice) = (&self.pos, &self.slice);
        let source_newest = DateTime::from_timestamp_millis(when.timestamp_millis());
        let seconds = if Ts::from(last) < pos.next {
            0.0
        } else {
            let oldest = slice
                .batch
                .time_first
                .or(pos.stored_time.max(self.caught_up_at));
            match (source_newest, oldest) {
                (Some(s), Some(o)) => ((s - o).num_milliseconds() as f64 / 1000.0).max(0.0),
                // Nothing read yet since the start: known with the first reply.
                _ => return Ok(()),
            }
        };
        self.cap.observer.event(&CaptureEvent::Lag {
            seconds,
            source_newest,
            stored_newest: pos.stored_time,
            behind_bytes: None,
        });
        Ok(())
    }
}

/// Reads entries from `from` on with a tailable, awaiting cursor, one
/// server reply at a time: an empty reply (the await ran out with nothing
/// new) tells the follower it has read everything visible so far.
async fn tail(conn: Conn, from: Ts, tx: mpsc::Sender<Read>) {
    let cursor = oplog(&conn)
        .find(doc! {"ts": {"$gte": Timestamp::from(from)}})
        .cursor_type(CursorType::TailableAwait)
        .max_await_time(Duration::from_secs(1))
        .read_concern(ReadConcern::majority())
        .batch()
        .await;
    let mut cursor = match cursor {
        Ok(c) => c,
        Err(e) => {
            let _ = tx.send(Read::Failed(oplog_error(&conn, e))).await;
            return;
        }
    };
    // A cursor that skips what was committed while it opened (the test
    // server's does) is caught by checking the slices up to the newest
    // write at this moment against the server (`store`).
    // (A server that cannot answer now is tried again from the start.)
    let Ok(hello) = conn.hello().await else {
        let _ = tx.send(Read::Ended).await;
        return;
    };
    let opened = hello.last_write.map_or(from, Ts::from);
    if tx.send(Read::Opened(opened)).await.is_err() {
        return;
    }
    loop {
        let msg = match cursor.next().await {
            Some(Ok(batch)) => match batch_entries(&batch) {
                Ok(docs) if docs.is_empty() => Read::CaughtUp,
                Ok(docs) => Read::Entries(docs),
                Err(e) => Read::Failed(e),
            },
            Some(Err(e)) => Read::Failed(oplog_error(&conn, e)),
            None => Read::Ended,
        };
        let last = matches!(msg, Read::Failed(_) | Read::Ended);
        if tx.send(msg).await.is_err() || last {
            return;
        }
    }
}

/// The entries of one server reply.
fn batch_entries(batch: &mongodb::raw_batch_cursor::RawBatch) -> Result<Vec<RawDocumentBuf>> {
    let invalid = |what: &dyn std::fmt::Display| {
        Error::source_failed(format!("an oplog cursor reply that cannot be read: {what}"))
    };
    let mut docs = Vec::new();
    for value in batch.doc_slices().map_err(|e| invalid(&e))? {
        let value = value.map_err(|e| invalid(&e))?;
        let doc = value
            .as_document()
            .ok_or_else(|| invalid(&"its batch holds something other than a document"))?;
        docs.push(doc.to_raw_document_buf());
    }
    Ok(docs)
}

/// The oplog collection.
fn oplog(conn: &Conn) -> mongodb::Collection<RawDocumentBuf> {
    conn.client.database("local").collection("oplog.rs")
}

/// A driver error while reading the oplog, with the role it needs when
/// the user may not.
fn oplog_error(conn: &Conn, e: mongodb::error::Error) -> Error {
    match conn.error("reading local.oplog.rs", e) {
        Error::PermissionDenied(m) => Error::PermissionDenied(format!(
            "{m}; capturing the oplog needs the `read` role on the `local` database (for example db.getSiblingDB('admin').grantRolesToUser('USER', [{{role: 'read', db: 'local'}}]))"
        )),
        other => other,
    }
}

/// Where capture continues: after the stream's newest piece, after the
/// newest base snapshot of the set, or at the server's newest entry.
async fn resume(
    cap: &mut Capture<'_>,
    conn: &Conn,
    hello: &Hello,
    set: &ReplicaSet,
) -> Result<Link<Ts>> {
    let server_newest = match hello.last_write {
        Some(ts) => Ts::from(ts),
        None => oplog_edge(conn, -1).await?,
    };
    let link = if let Some(link) = cap.resume(&set.identity()).await? {
        link
    } else {
        cap.observer.event(&CaptureEvent::Warning(format!(
            "no snapshot of replica set {} yet: capture starts at the server's newest entry ({server_newest}), and points in time become restorable from the first snapshot taken (backup create {})",
            set.name, conn.redacted
        )));
        cap.link(&set.identity(), server_newest.next())
    };
    if server_newest < link.next.prev() {
        return Err(Error::source_failed(format!(
            "the server's newest oplog entry ({server_newest}) is older than what was already captured of replica set {} ({}): this is another deployment with the same replica set name, or one restored from a backup; capture it into another repository",
            set.name,
            link.next.prev()
        )));
    }
    cap.started(&link);
    Ok(link)
}

/// Records a gap when the oplog no longer holds the entry after the last
/// stored one.
async fn check_rollover(
    cap: &mut Capture<'_>,
    conn: &Conn,
    pos: &mut Link<Ts>,
    set: &ReplicaSet,
) -> Result<()> {
    let stored = pos.next.prev();
    let oldest = oplog_edge(conn, 1).await?;
    if oldest <= stored || oldest == Ts::default() {
        return Ok(());
    }
    let reason = format!(
        "the oplog rolled over: its oldest entry is {oldest}, so the entries after {stored} up to it were removed before they were captured"
    );
    let times = (
        DateTime::from_timestamp(i64::from(pos.next.t), 0),
        DateTime::from_timestamp(i64::from(oldest.t), 0),
    );
    let details = serde_json::json!({"replica_set": set.name, "replica_set_id": set.id});
    cap.gap(pos, oldest, times, reason, details).await
}

/// The check of slices read by a newly opened cursor.
///
/// A tailable cursor must return every entry after its start; the test
/// server's (`SecantusDB`) loses the ones committed while it opens. So a
/// slice that reaches back to the server's newest write at the moment the
/// cursor opened (`suspect`) is counted on the server before it is stored,
/// and read again with an ordinary sorted query when entries are missing.
/// Later slices are not checked: counting a range of the oplog can cost a
/// scan of it.
#[derive(Debug, Default)]
struct SkipCheck {
    suspect: Option<Ts>,
    /// The end of the last range read again: the cursor may still return
    /// entries up to it, which are then already stored.
    reread: Option<Ts>,
}

impl SkipCheck {
    async fn run(
        &mut self,
        conn: &Conn,
        pos: &Link<Ts>,
        slice: &mut Slice,
        observer: &dyn CaptureObserver,
    ) -> Result<()> {
        let Some(suspect) = self.suspect else {
            return Ok(());
        };
        if pos.next > suspect || slice.batch.is_empty() {
            return Ok(());
        }
        if slice.last_ts >= suspect {
            self.suspect = None;
        }
        let range = doc! {"ts": {"$gte": Timestamp::from(pos.next), "$lte": Timestamp::from(slice.last_ts)}};
        let on_server = oplog(conn)
            .count_documents(range.clone())
            .read_concern(ReadConcern::majority())
            .await
            .map_err(|e| oplog_error(conn, e))?;
        if on_server <= slice.batch.entries {
            return Ok(());
        }
        let mut again = Slice::default();
        let mut cursor = oplog(conn)
            .find(range)
            .sort(doc! {"ts": 1})
            .read_concern(ReadConcern::majority())
            .await
            .map_err(|e| oplog_error(conn, e))?;
        while let Some(doc) = cursor.next().await {
            let doc = doc.map_err(|e| oplog_error(conn, e))?;
            if let Some(ts) = entry_ts(&doc) {
                again.add(&doc, ts);
            }
        }
        observer.event(&CaptureEvent::Warning(format!(
            "the server's oplog cursor skipped {} entries between {} and {}; they were read again",
            again.batch.entries.saturating_sub(slice.batch.entries),
            pos.next,
            slice.last_ts
        )));
        again.batch.started = slice.batch.started;
        self.reread = Some(again.last_ts);
        *slice = again;
        Ok(())
    }
}
