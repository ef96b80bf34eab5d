//! `backup oplog follow`, `backup redis follow` and `backup pitr`.

use std::io::Write as _;
use std::sync::Mutex;

use anyhow::Result;
use backup_ops::pitr::{follow as follow_op, windows, FollowRequest};
use backup_sources::capture::{CaptureEvent, CaptureKind, CaptureObserver, Position};
use backup_sources::SourceSpec;
use tokio_util::sync::CancellationToken;

use super::{bytes, normalize_source};
use crate::cli::{FollowArgs, OplogCommand, PitrArgs, RedisCommand, RedisFollowArgs};
use crate::context::{usage, Ctx};

pub(crate) async fn oplog(ctx: &Ctx, c: OplogCommand) -> Result<u8> {
    match c {
        OplogCommand::Follow(a) => {
            follow(ctx, a, CaptureKind::MongodbOplog, Vec::new(), None).await
        }
    }
}

pub(crate) async fn redis(ctx: &Ctx, c: RedisCommand) -> Result<u8> {
    match c {
        RedisCommand::Follow(a) => {
            let RedisFollowArgs {
                source,
                slice_time,
                slice_size,
                tags,
                job,
            } = a;
            let args = FollowArgs {
                source,
                slice_time,
                slice_size,
            };
            follow(ctx, args, CaptureKind::RedisStream, tags, job).await
        }
    }
}

/// Prints a capture's events (a follower's or the WAL receiver's): a
/// line each for people, a JSON line each with `--json`.
pub(crate) struct Printer {
    /// The capture kind (`postgres-wal`, `mongodb-oplog`, `redis-stream`).
    capture: &'static str,
    json: bool,
    quiet: bool,
    /// Lag is printed when it changes by a second or more.
    last_lag: Mutex<f64>,
}

impl Printer {
    /// A printer for a capture of kind `capture`, with the context's
    /// `--json` and `--quiet`.
    pub(crate) fn new(capture: &'static str, ctx: &Ctx) -> Self {
        Printer {
            capture,
            json: ctx.global.json,
            quiet: ctx.global.quiet,
            last_lag: Mutex::new(0.0),
        }
    }

    /// A stored position as people read it.
    fn show(&self, record: &str) -> String {
        Position::of_record(self.capture, record)
            .map_or_else(|| record.to_owned(), |p| p.to_string())
    }

    /// What the stream's identity is called.
    fn identity_noun(&self) -> &'static str {
        backup_sources::capture::registry::driver(self.capture)
            .map_or("source", |d| d.words().identity)
    }
}

impl CaptureObserver for Printer {
    fn event(&self, e: &CaptureEvent) {
        let (line, value) = match e {
            CaptureEvent::Started {
                stream,
                identity,
                from,
                continues,
            } => (
                format!(
                    "following {} {identity} (stream {stream}) from {from}, continuing {continues}",
                    self.identity_noun()
                ),
                serde_json::json!({"event": "started", "stream": stream, "identity": identity, "from": from.record(), "continues": continues}),
            ),
            CaptureEvent::Stored(p) => (
                format!(
                    "stored {}..{}: {}{}",
                    self.show(&p.name.first),
                    self.show(&p.name.last),
                    if p.entries > 0 {
                        format!("{} entries, ", p.entries)
                    } else {
                        String::new()
                    },
                    bytes(p.bytes)
                ),
                serde_json::json!({"event": "stored", "name": p.name.file_name(), "first": p.name.first, "last": p.name.last, "entries": p.entries, "bytes": p.bytes, "time_first": p.time_first, "time_last": p.time_last}),
            ),
            CaptureEvent::Gap {
                stream,
                record,
                reason,
            } => (
                format!("GAP in stream {stream}: {reason}"),
                serde_json::json!({"event": "gap", "stream": stream, "record": record.as_ref().map(backup_core::capture::CaptureName::file_name), "reason": reason}),
            ),
            CaptureEvent::Lag {
                seconds,
                source_newest,
                stored_newest,
                behind_bytes,
            } => {
                let mut last = self
                    .last_lag
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if (seconds - *last).abs() < 1.0 && !self.json {
                    return;
                }
                *last = *seconds;
                (
                    format!(
                        "lag {seconds:.1} s{}",
                        behind_bytes
                            .filter(|b| *b > 0)
                            .map(|b| format!(", {} not stored", bytes(b)))
                            .unwrap_or_default()
                    ),
                    serde_json::json!({"event": "lag", "seconds": seconds, "source_newest": source_newest, "stored_newest": stored_newest, "behind_bytes": behind_bytes}),
                )
            }
            CaptureEvent::Reconnecting { error, after } => (
                format!("{error}; retrying in {} s", after.as_secs()),
                serde_json::json!({"event": "reconnecting", "error": error, "after_seconds": after.as_secs()}),
            ),
            CaptureEvent::Warning(w) => (
                format!("warning: {w}"),
                serde_json::json!({"event": "warning", "message": w}),
            ),
            _ => return,
        };
        if self.json {
            let _ = writeln!(std::io::stdout().lock(), "{value}");
        } else if !self.quiet || matches!(e, CaptureEvent::Gap { .. } | CaptureEvent::Warning(_)) {
            let _ = writeln!(std::io::stderr().lock(), "{line}");
        }
    }
}

async fn follow(
    ctx: &Ctx,
    a: FollowArgs,
    kind: CaptureKind,
    tags: Vec<String>,
    job: Option<String>,
) -> Result<u8> {
    let slice_time = humantime::parse_duration(&a.slice_time)
        .or_else(|e| usage(format!("--slice-time `{}`: {e}", a.slice_time)))?;
    let spec = SourceSpec::plain(a.source.clone())?;
    let repo = ctx.open().await?;
    let cancel = stop_on_signals();
    let printer = Printer::new(kind.name(), ctx);
    let req = FollowRequest {
        tags,
        job,
        slice_time: Some(slice_time),
        slice_bytes: Some(usize::try_from(a.slice_size).unwrap_or(usize::MAX)),
        lock_wait: ctx.lock_wait(),
    };
    let done = follow_op(&repo, &spec, &req, &printer, &cancel).await?;
    if ctx.global.json {
        writeln!(
            std::io::stdout(),
            "{}",
            serde_json::json!({"event": "stopped", "summary": done})
        )?;
    } else {
        ctx.say(format!(
            "stopped: {} slices, {} entries, {} stored{}",
            done.pieces,
            done.entries,
            bytes(done.bytes),
            if done.gaps > 0 {
                format!(", {} gaps", done.gaps)
            } else {
                String::new()
            }
        ))?;
    }
    Ok(0)
}

/// A token cancelled by the first SIGTERM or SIGINT: a capture in the
/// foreground stores what it received, then ends.
pub(crate) fn stop_on_signals() -> CancellationToken {
    let cancel = CancellationToken::new();
    let stop = cancel.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (
            signal(SignalKind::terminate()),
            signal(SignalKind::interrupt()),
        ) else {
            return;
        };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        stop.cancel();
    });
    cancel
}

pub(crate) async fn pitr(ctx: &Ctx, a: PitrArgs) -> Result<u8> {
    let repo = ctx.open().await?;
    let source = a.source.as_deref().map(normalize_source);
    let list = windows(&repo, source.as_deref()).await?;
    if ctx.global.json {
        ctx.print_json(&list)?;
        return Ok(0);
    }
    if list.is_empty() {
        ctx.say("nothing restorable to a point in time: no captured stream or base snapshot")?;
        return Ok(0);
    }
    let time = |t: &Option<chrono::DateTime<chrono::Utc>>| {
        t.map_or_else(String::new, |t| t.format("%Y-%m-%d %H:%M:%S").to_string())
    };
    for s in &list {
        ctx.say(format!(
            "{} {} stream {} of {} ({}): {} pieces, {}",
            s.kind,
            s.capture,
            s.stream,
            s.identity,
            s.source,
            s.pieces,
            bytes(s.bytes)
        ))?;
        if s.windows.is_empty() {
            ctx.say(format!(
                "  no restorable window: {}",
                s.note
                    .as_deref()
                    .unwrap_or("no base snapshot precedes the captured changes")
            ))?;
        }
        for w in &s.windows {
            ctx.say(format!(
                "  restorable  {} .. {}  ({} .. {}), bases {}",
                time(&w.from_time),
                time(&w.to_time),
                w.from.short(),
                w.to,
                w.bases
                    .iter()
                    .map(backup_core::Id::short)
                    .collect::<Vec<_>>()
                    .join(", ")
            ))?;
        }
        for g in &s.gaps {
            ctx.say(format!(
                "  gap         {} .. {}  ({} .. {}): {}",
                time(&g.from_time),
                time(&g.to_time),
                g.from.short(),
                g.to,
                g.reason
            ))?;
        }
        for b in &s.bases {
            ctx.say(format!(
                "  base        {}  taken {}, consistent at {} ({})",
                b.id.short(),
                b.taken.format("%Y-%m-%d %H:%M:%S"),
                time(&b.point_time),
                b.point
            ))?;
        }
    }
    Ok(0)
}
