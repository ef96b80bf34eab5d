//! [`plan_stream`]: how the streams named by position (oplog, Redis
//! stream) answer [`CaptureDriver::plan`](crate::capture::CaptureDriver::plan):
//! the newest base before the target and the pieces from it to the
//! target, or why there are none.

use backup_core::capture::CaptureReplay;
use backup_core::repo::Repository;
use backup_core::target::RestoreOptions;
use backup_core::{Error, FileKind, Id, Result};
use chrono::{DateTime, Utc};

use super::Stream;
use crate::capture::driver::{Planned, RestorePlan};
use crate::capture::kind::Position;

/// The plan of stream `s` for the target of `opts` from its base `named`
/// (or the newest before the target), with every piece's pack checked to
/// be stored and long enough; a refusal when the target is not
/// restorable from `s`.
///
/// # Errors
///
/// Storage errors; [`Error::Corrupt`] for a piece whose pack is missing
/// or short.
pub async fn plan_stream(
    repo: &Repository,
    s: &Stream,
    named: Option<Id>,
    opts: &RestoreOptions,
) -> Result<Planned> {
    let plan = match choose(s, named, opts) {
        Ok(p) => p,
        Err(why) => return Ok(Err(format!("stream {} ({}): {why}", s.identity, s.source))),
    };
    if let Some(replay) = &plan.replay {
        check_pieces(repo, s, replay).await?;
    }
    Ok(Ok(plan))
}

/// The base (`named`, or the newest before the target) and pieces of `s`
/// for the target of `opts`, or why there are none.
fn choose(s: &Stream, named: Option<Id>, opts: &RestoreOptions) -> Planned {
    let (until, until_time) = match (s.kind.until(opts), opts.at) {
        (Ok(Some(u)), _) => (u, None),
        (Ok(None), Some(t)) if !s.kind.timed_positions() => (until_by_time(s, t)?, Some(t)),
        (Ok(None), _) => {
            return Err(format!(
                "a {} stream cannot place that target from positions alone",
                s.kind.name()
            ))
        }
        (Err(e), _) => return Err(e.to_string()),
    };
    // A base consistent after a time target is no base for it, even when
    // its position is before the piece the target falls in.
    let fits = |b: &crate::capture::Base| {
        b.point <= until && until_time.is_none_or(|t| b.point_time.is_none_or(|p| p <= t))
    };
    let base = match named.map(|id| (id, s.bases.iter().find(|b| b.id == id))) {
        Some((id, None)) => {
            return Err(format!(
                "snapshot {} is not a base snapshot of this stream",
                id.short()
            ))
        }
        Some((id, Some(b))) if !fits(b) => {
            return Err(format!(
                "snapshot {} is consistent at {}, after the target",
                id.short(),
                b.point.describe()
            ))
        }
        Some((_, Some(b))) => b,
        None => s
            .bases
            .iter()
            .rev()
            .find(|b| fits(b))
            .ok_or_else(|| match s.bases.first() {
                Some(b) => format!(
                    "it is before the oldest base snapshot ({} at {}); {}",
                    b.id.short(),
                    b.point.describe(),
                    nearest(s, until)
                ),
                None => "the stream has no base snapshot; take one with backup create".to_owned(),
            })?,
    };
    let from = base.point.next();
    let mut pieces = Vec::new();
    let mut pos = from;
    while pos <= until {
        let covering = s
            .records
            .iter()
            .filter(|p| p.first <= pos && pos < p.last)
            .max_by_key(|p| (p.record.gap.is_none(), p.last));
        match covering {
            Some(p) if p.record.gap.is_none() => {
                pieces.push(p.name.clone());
                pos = p.last;
            }
            Some(p) => {
                return Err(format!(
                    "the captured changes from {} to {} are missing ({}); {}",
                    p.first.describe(),
                    p.last.describe(),
                    p.record.gap.as_deref().unwrap_or_default(),
                    nearest(s, until)
                ))
            }
            None => {
                let after = s.records.iter().map(|p| p.first).find(|f| *f > pos);
                return Err(match after {
                    Some(next) => format!(
                        "no piece holds {} to {} (pieces are missing); {}",
                        pos.describe(),
                        next.describe(),
                        nearest(s, until)
                    ),
                    None => format!(
                        "it is after the newest captured change (the capture ends before {}); {}",
                        pos.describe(),
                        nearest(s, until)
                    ),
                });
            }
        }
    }
    Ok(RestorePlan {
        stream: format!("{} ({})", s.identity, s.source),
        base: base.id,
        replay: Some(CaptureReplay {
            stream: s.stream.clone(),
            pieces,
            from: from.record(),
            until: until.record(),
            until_time,
        }),
        until: Some(until),
    })
}

/// For a kind whose positions tell no time: the end of the first piece
/// holding a change that arrived at or after `t` (the replay stops at
/// `t` inside it), or why the capture does not reach `t`.
fn until_by_time(s: &Stream, t: DateTime<Utc>) -> std::result::Result<Position, String> {
    let data = || s.records.iter().filter(|p| p.record.gap.is_none());
    if let Some(last) = data()
        .filter(|p| p.record.time_last.is_some_and(|l| l >= t))
        .map(|p| p.last)
        .min()
    {
        return Ok(last.prev());
    }
    Err(match data().filter_map(|p| p.record.time_last).max() {
        Some(n) => format!(
            "it is after the newest captured change, which arrived at {} (a capture reaches a time once something arrives after it; an idle Redis primary sends a PING every 10 s)",
            n.format("%Y-%m-%dT%H:%M:%S%.3fZ")
        ),
        None => "nothing of this stream was captured yet".to_owned(),
    })
}

/// The restorable points nearest `until`, as a sentence.
fn nearest(s: &Stream, until: Position) -> String {
    let before = s
        .windows
        .iter()
        .filter(|w| w.from <= until)
        .map(|w| if w.to < until { w.to } else { w.from })
        .max();
    let after = s
        .windows
        .iter()
        .map(|w| w.from)
        .filter(|f| *f > until)
        .min();
    match (before, after) {
        (None, None) => "nothing of this stream is restorable".to_owned(),
        (Some(p), None) | (None, Some(p)) => {
            format!("the nearest restorable point is {}", p.describe())
        }
        (Some(b), Some(a)) => format!(
            "the nearest restorable points are {} and {}",
            b.describe(),
            a.describe()
        ),
    }
}

/// Checks that every piece's pack is stored and long enough (one listing).
async fn check_pieces(repo: &Repository, s: &Stream, replay: &CaptureReplay) -> Result<()> {
    if replay.pieces.is_empty() {
        return Ok(());
    }
    let sizes = repo.pack_sizes().await?;
    for p in s.records.iter().filter(|p| replay.pieces.contains(&p.name)) {
        let Some(pack) = p.record.pack else { continue };
        let need = p
            .record
            .blobs
            .iter()
            .map(|b| u64::from(b.offset) + u64::from(b.length))
            .max()
            .unwrap_or(0);
        let why = match sizes.get(&pack.to_hex()) {
            Some(size) if *size >= need => continue,
            Some(size) => format!("its pack {} has {size} bytes, {need} needed", pack.short()),
            None => format!("its pack {} is missing", pack.short()),
        };
        return Err(Error::corrupt(
            FileKind::Capture,
            p.name.file_name(),
            format!(
                "{why}: the captured changes from {} to {} cannot be read; nothing was changed",
                p.first.describe(),
                p.last.describe()
            ),
        ));
    }
    Ok(())
}
