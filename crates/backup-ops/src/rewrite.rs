//! Erasing data from snapshots: `backup rewrite`.
//!
//! Each selected snapshot is rewritten without what the request names
//! (paths of a files snapshot; rows of a logical PostgreSQL snapshot;
//! documents of a MongoDB snapshot; keys of a Redis snapshot), through
//! [`backup_core::rewrite::rewrite`]: content that does not change is
//! kept unread, what changes is stored anew. The new manifest keeps the
//! original's time, host, tags, job and source, gets a new id and a
//! `rewritten` field (the original's id, who, when, why, and what was
//! removed without the removed values); the original manifest is then
//! deleted. The erased data stays in packs until `prune` removes the
//! blobs no snapshot references (`prune --repack-threshold 0` rewrites
//! every pack holding any of them).
//!
//! Everything is checked before anything is written: the patterns and
//! predicates, the snapshots named, that each table or collection a
//! predicate names is in at least one selected snapshot, that its column
//! exists, and that no selected snapshot is a physical PostgreSQL base
//! backup a row predicate applies to.
//!
//! Captured change streams (WAL, oplog, Redis) are not rewritten: the
//! result lists the captured ranges of the sources a row, document or
//! key predicate applied to, which may still hold the erased data; `drop_captures_before` deletes those
//! that end before a time (shortening the point-in-time windows).
//!
//! The whole run holds the shared lock (`prune` is kept out while an
//! original and its replacement both exist). A crash between writing a
//! replacement and deleting its original leaves both; running the same
//! command again finds the replacement (its `rewritten.from` and
//! changes) and only deletes the original.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use backup_core::capture::CaptureName;
use backup_core::filter::PathFilter;
use backup_core::lock::LockMode;
use backup_core::reader::SnapshotReader;
use backup_core::repo::Repository;
use backup_core::rewrite::{rewrite as rewrite_snapshot, ContentFilter, Edits};
use backup_core::snapshot::{Rewritten, SnapshotEntry, SnapshotFilter};
use backup_core::tree::Node;
use backup_core::{FileKind, Id};
use backup_sources::erase::{Counts, Erasures, KindEdits};
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::feedback::{json, Feedback};

/// What `rewrite` removes, from which snapshots, and why.
#[derive(Debug, Clone, Default)]
pub struct RewriteRequest {
    /// Snapshots named (ids, unique prefixes, `latest`); without any,
    /// every snapshot `filter` passes (every snapshot for an empty
    /// filter).
    pub snapshots: Vec<String>,
    /// The filter.
    pub filter: SnapshotFilter,
    /// Path patterns (as `restore --exclude` takes them) removed from
    /// files snapshots.
    pub excludes: Vec<String>,
    /// Rows and documents removed from database snapshots.
    pub erasures: Erasures,
    /// Why (recorded in each new manifest and in the audit trail).
    pub reason: String,
    /// Report what would be removed; write and delete nothing.
    pub dry_run: bool,
    /// Delete the captured ranges (WAL, oplog) of the rewritten
    /// snapshots' sources that end before this time.
    pub drop_captures_before: Option<DateTime<Utc>>,
    /// How long to wait for a conflicting lock.
    pub lock_wait: Duration,
}

impl RewriteRequest {
    /// Checks the request before anything is opened.
    ///
    /// # Errors
    ///
    /// A usage error without a reason, without anything to remove, or
    /// with an invalid pattern.
    pub fn check(&self) -> Result<()> {
        if self.reason.trim().is_empty() {
            return Err(Error::usage(
                "say why with --reason TEXT: it is recorded with every rewritten snapshot and in the audit trail",
            ));
        }
        if self.excludes.is_empty() && self.erasures.is_empty() {
            return Err(Error::usage(
                "nothing to remove: give --exclude PATTERN, --pg-delete, --mongo-delete or --redis-delete",
            ));
        }
        PathFilter::new(&[], &self.excludes).map_err(|e| Error::usage(e.to_string()))?;
        Ok(())
    }

    /// What is removed, described without the removed values.
    pub fn changes(&self) -> Vec<String> {
        self.excludes
            .iter()
            .map(|p| format!("exclude {p}"))
            .chain(self.erasures.describe())
            .collect()
    }
}

/// One snapshot rewritten (or, in a dry run, that would be).
#[derive(Debug, Clone, Serialize)]
pub struct Rewrote {
    /// Its id before (deleted unless dry run).
    pub old: Id,
    /// Its id now; `None` in a dry run.
    pub new: Option<Id>,
    /// When the snapshot was taken.
    pub time: DateTime<Utc>,
    /// Its source (credentials removed).
    pub source: String,
    /// Paths removed.
    pub dropped: Vec<String>,
    /// Rows or documents removed per table or collection (` oplog` for
    /// entries of a MongoDB snapshot's captured oplog).
    pub removed: BTreeMap<String, Counts>,
}

/// A captured range (WAL, oplog) of a source data was erased from, which
/// may still hold that data.
#[derive(Debug, Clone, Serialize)]
pub struct CaptureRange {
    /// `postgres-wal`, `mongodb-oplog`, `redis-stream`.
    pub kind: String,
    /// Where it was captured from.
    pub source: String,
    /// First position.
    pub first: String,
    /// End position.
    pub last: String,
    /// Earliest time it holds, when known.
    pub time_first: Option<DateTime<Utc>>,
    /// Latest time it holds, when known.
    pub time_last: Option<DateTime<Utc>>,
    /// Deleted by `drop_captures_before` (or would be, in a dry run).
    pub dropped: bool,
}

/// What `rewrite` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RewriteResult {
    /// Snapshots rewritten.
    pub rewritten: Vec<Rewrote>,
    /// Selected snapshots that held nothing to remove.
    pub unchanged: Vec<Id>,
    /// Exclude patterns that matched no path of any selected snapshot.
    pub unmatched_excludes: Vec<String>,
    /// Captured ranges of the sources a row or document predicate
    /// applied to (whether or not a snapshot changed this time).
    pub captures: Vec<CaptureRange>,
    /// Whether this was a dry run.
    pub dry_run: bool,
}

/// The edits of one snapshot: paths dropped by the patterns (files
/// snapshots), and the kind's own edits.
struct Combined {
    excludes: Option<PathFilter>,
    kind: Option<Arc<dyn Edits>>,
}

impl Edits for Combined {
    fn drops(&self, path: &str, node: &Node) -> bool {
        self.excludes
            .as_ref()
            .is_some_and(|f| f.excludes_self(Path::new(path)))
            || self.kind.as_ref().is_some_and(|k| k.drops(path, node))
    }

    fn filter(&self, path: &str, node: &Node) -> Option<ContentFilter> {
        self.kind.as_ref().and_then(|k| k.filter(path, node))
    }

    fn metadata(&self, original: &serde_json::Value) -> backup_core::Result<serde_json::Value> {
        match &self.kind {
            Some(k) => k.metadata(original),
            None => Ok(original.clone()),
        }
    }
}

/// Rewrites the selected snapshots without what `req` names, under a
/// shared lock, checking everything first (see the module docs). Each
/// rewrite is noted as the `rewritten` detail of `feedback` (the audit
/// record), with the reason and the changes described without values.
///
/// # Errors
///
/// Usage errors ([`RewriteRequest::check`]); [`NotFound`](backup_core::Error::NotFound)
/// for an unknown snapshot, an empty selection, or a table or collection
/// no selected snapshot holds; [`Config`](backup_core::Error::Config) for
/// a physical PostgreSQL snapshot a row predicate applies to, or an
/// unknown column. Storage and lock errors, damage: rewrites finished
/// before stay (each is whole: its manifest written, then its original
/// deleted).
pub async fn rewrite(
    repo: &Repository,
    req: &RewriteRequest,
    feedback: &dyn Feedback,
) -> Result<RewriteResult> {
    req.check()?;
    if !req.dry_run {
        repo.require_deletes("rewrite")?;
    }
    feedback.detail("reason", req.reason.clone().into());
    feedback.detail("changes", json(req.changes()));
    feedback.detail("dry_run", req.dry_run.into());
    let work = async {
        let mut idx = repo.clone().load_index().await?;
        let (all, _) = repo.snapshots().await?;
        let selected = crate::tags::select(repo, &req.snapshots, &req.filter, &all).await?;
        let excludes = PathFilter::new(&[], &req.excludes)?;
        let planned = plan_erasures(&idx, &req.erasures, selected).await?;
        let mut result = RewriteResult {
            dry_run: req.dry_run,
            ..RewriteResult::default()
        };
        let changes = req.changes();
        // The sources whose rows or documents are erased: their captures
        // may hold them.
        let mut erased_sources: Vec<String> = Vec::new();
        for (entry, kind) in &planned {
            if !kind.applies.is_empty() && !erased_sources.contains(&entry.snapshot.source.url) {
                erased_sources.push(entry.snapshot.source.url.clone());
            }
        }
        for (entry, kind) in planned {
            let files = entry.snapshot.source.kind == "files";
            let edits = Combined {
                excludes: (files && !req.excludes.is_empty()).then(|| excludes.clone()),
                kind: kind.edits.clone(),
            };
            if edits.excludes.is_none() && edits.kind.is_none() {
                result.unchanged.push(entry.id);
                continue;
            }
            // An interrupted run left the replacement written and the
            // original in place: only the deletion is left to do.
            let twin = all.iter().find(|s| {
                s.snapshot
                    .rewritten
                    .as_ref()
                    .is_some_and(|r| r.from == entry.id && r.changes == changes)
            });
            if let Some(twin) = twin {
                if !req.dry_run {
                    repo.sink()
                        .delete(FileKind::Snapshot, &entry.id.to_hex())
                        .await?;
                }
                result.rewritten.push(Rewrote {
                    old: entry.id,
                    new: Some(twin.id),
                    time: entry.snapshot.time,
                    source: entry.snapshot.source.url.clone(),
                    dropped: Vec::new(),
                    removed: BTreeMap::new(),
                });
                continue;
            }
            let rewritten = Rewritten {
                from: entry.id,
                time: Utc::now(),
                user: backup_core::util::username(),
                host: backup_core::util::hostname(),
                reason: req.reason.clone(),
                changes: changes.clone(),
            };
            let progress = feedback.progress("rewrite", "items");
            let out = rewrite_snapshot(
                &idx,
                &entry,
                Arc::new(edits),
                rewritten,
                req.dry_run,
                progress.clone(),
            )
            .await;
            progress.finish();
            let out = out.map_err(|e| {
                Error::from(e).context(format!("rewriting snapshot {}", entry.id.short()))
            })?;
            if !out.changed {
                result.unchanged.push(entry.id);
                continue;
            }
            let new = if req.dry_run {
                None
            } else {
                idx.set_index((*out.outcome.index).clone());
                let new = out.outcome.id;
                repo.sink()
                    .delete(FileKind::Snapshot, &entry.id.to_hex())
                    .await?;
                new
            };
            result.rewritten.push(Rewrote {
                old: entry.id,
                new,
                time: entry.snapshot.time,
                source: entry.snapshot.source.url.clone(),
                dropped: out.dropped,
                removed: kind.removed.counts(),
            });
            feedback.detail("rewritten", audit_list(&result.rewritten));
        }
        result.unmatched_excludes = excludes.unmatched_excludes();
        if !erased_sources.is_empty() {
            result.captures = captures(repo, req, &erased_sources).await?;
        }
        Ok::<_, Error>(result)
    };
    let result = Box::pin(repo.with_lock(LockMode::Shared, "rewrite", req.lock_wait, work)).await?;
    feedback.detail("rewritten", audit_list(&result.rewritten));
    if result.captures.iter().any(|c| c.dropped) {
        feedback.detail(
            "captures_dropped",
            json(
                result
                    .captures
                    .iter()
                    .filter(|c| c.dropped)
                    .map(|c| format!("{} {} {}..{}", c.kind, c.source, c.first, c.last))
                    .collect::<Vec<_>>(),
            ),
        );
    }
    Ok(result)
}

/// The edits `erasures` make to each selected snapshot, planned for every
/// snapshot before anything is written.
///
/// # Errors
///
/// [`NotFound`](backup_core::Error::NotFound) for an erasure that no
/// selected snapshot holds; errors reading the snapshots.
async fn plan_erasures(
    idx: &backup_core::repo::IndexedRepository,
    erasures: &Erasures,
    selected: Vec<SnapshotEntry>,
) -> Result<Vec<(SnapshotEntry, KindEdits)>> {
    let mut planned = Vec::new();
    let mut applies: Vec<String> = Vec::new();
    for entry in selected {
        let reader = SnapshotReader::new(idx.clone(), entry.clone());
        let kind = backup_sources::kind::erase_edits(&reader, erasures).await?;
        applies.extend(kind.applies.iter().cloned());
        planned.push((entry, kind));
    }
    for d in erasures.describe() {
        if !applies.contains(&d) {
            if d.starts_with("redis:") {
                return Err(Error::from(backup_core::Error::not_found(format!(
                    "a Redis snapshot among the {} selected snapshots for --redis-delete; nothing was changed",
                    planned.len()
                ))));
            }
            let what = d.split(':').next().unwrap_or(&d).to_owned();
            return Err(Error::from(backup_core::Error::not_found(format!(
                "`{what}` in the {} selected snapshots (`backup ls SNAPSHOT` lists their tables and collections); nothing was changed",
                planned.len()
            ))));
        }
    }
    Ok(planned)
}

/// The rewrites as the audit record keeps them: ids and counts, not the
/// paths (a path may itself be what had to go).
fn audit_list(rewrote: &[Rewrote]) -> serde_json::Value {
    json(
        rewrote
            .iter()
            .map(|r| {
                serde_json::json!({
                    "old": r.old,
                    "new": r.new,
                    "paths_removed": r.dropped.len(),
                    "removed": r.removed,
                })
            })
            .collect::<Vec<_>>(),
    )
}

/// The captured ranges of `sources` (either URL selecting the other);
/// with `drop_captures_before`, those ending before it are deleted.
async fn captures(
    repo: &Repository,
    req: &RewriteRequest,
    sources: &[String],
) -> Result<Vec<CaptureRange>> {
    let (records, _) = repo.capture_records().await?;
    let mut out = Vec::new();
    let mut names: Vec<(CaptureName, bool)> = Vec::new();
    for (name, r) in records {
        if r.gap.is_some() {
            continue;
        }
        let ours = sources.iter().any(|w| {
            backup_core::source_url::selects(w, &r.source.url)
                || backup_core::source_url::selects(&r.source.url, w)
        });
        if !ours {
            continue;
        }
        let dropped = req
            .drop_captures_before
            .is_some_and(|t| r.time_last.is_some_and(|last| last < t));
        names.push((name, dropped));
        out.push(CaptureRange {
            kind: r.kind.clone(),
            source: r.source.url.clone(),
            first: r.first.clone(),
            last: r.last.clone(),
            time_first: r.time_first,
            time_last: r.time_last,
            dropped,
        });
    }
    if !req.dry_run {
        for (name, dropped) in names {
            if dropped {
                repo.delete_capture(&name).await?;
            }
        }
    }
    out.sort_by(|a, b| (&a.kind, &a.source, &a.first).cmp(&(&b.kind, &b.source, &b.first)));
    Ok(out)
}
