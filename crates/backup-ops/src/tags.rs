//! Changing snapshot tags: `backup tag add|remove|set`.
//!
//! A manifest is never changed in place (its name is the hash of its
//! bytes), so a tag change writes a new manifest, identical but for its
//! tags, and then deletes the old one: the snapshot gets a new id. This
//! runs under the shared lock `forget` takes, which keeps `prune` (and its
//! exclusive lock) out while both manifests exist.
//!
//! A crash between the write and the delete leaves two snapshots that
//! differ only in their tags. Running the same command again converges:
//! a selected snapshot whose wanted tags another snapshot, identical but
//! for its tags, already carries is not written again; it is only deleted
//! (its "new id" is that twin's).

use std::time::Duration;

use backup_core::lock::LockMode;
use backup_core::repo::Repository;
use backup_core::snapshot::{Snapshot, SnapshotEntry, SnapshotFilter};
use backup_core::{FileKind, Id};
use serde::Serialize;

use crate::error::{Error, Result};
use crate::feedback::{json, Feedback};

/// How the tags change.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase", tag = "action", content = "tags")]
pub enum TagChange {
    /// Add these tags (kept in their order after the snapshot's own).
    Add(Vec<String>),
    /// Remove these tags.
    Remove(Vec<String>),
    /// Replace all tags by these.
    Set(Vec<String>),
}

impl TagChange {
    /// The tags `old` becomes: without duplicates, the snapshot's own order
    /// first.
    pub fn apply(&self, old: &[String]) -> Vec<String> {
        let mut out: Vec<String> = Vec::new();
        let mut push = |t: &String| {
            if !out.contains(t) {
                out.push(t.clone());
            }
        };
        match self {
            TagChange::Add(add) => old.iter().chain(add).for_each(&mut push),
            TagChange::Remove(remove) => old
                .iter()
                .filter(|t| !remove.contains(t))
                .for_each(&mut push),
            TagChange::Set(set) => set.iter().for_each(&mut push),
        }
        out
    }
}

/// What `tag` changes.
#[derive(Debug, Clone)]
pub struct TagRequest {
    /// The change.
    pub change: TagChange,
    /// Snapshots named explicitly (ids, unique prefixes, `latest`).
    pub snapshots: Vec<String>,
    /// Without named snapshots: every snapshot this filter matches.
    pub filter: SnapshotFilter,
    /// How long to wait for a conflicting lock.
    pub lock_wait: Duration,
}

impl TagRequest {
    /// Checks the request before anything is opened.
    ///
    /// # Errors
    ///
    /// A usage error when neither snapshots nor a filter (source, host,
    /// tag) are given, so that a bare `tag` never changes every snapshot,
    /// or when `add`/`remove` name no tag or a tag is empty.
    pub fn check(&self) -> Result<()> {
        let f = &self.filter;
        if self.snapshots.is_empty()
            && f.source.is_none()
            && f.host.is_none()
            && f.tags.is_empty()
            && f.job.is_none()
            && f.before.is_none()
            && f.after.is_none()
        {
            return Err(Error::usage(
                "which snapshots? name them with --snapshot ID or select them with --source, --host or --tag",
            ));
        }
        let tags = match &self.change {
            TagChange::Add(t) | TagChange::Remove(t) => {
                if t.is_empty() {
                    return Err(Error::usage("name at least one tag"));
                }
                t
            }
            TagChange::Set(t) => t,
        };
        if tags.iter().any(|t| t.trim().is_empty()) {
            return Err(Error::usage("a tag cannot be empty"));
        }
        Ok(())
    }
}

/// One snapshot whose tags changed.
#[derive(Debug, Clone, Serialize)]
pub struct Retagged {
    /// Its id before (now deleted).
    pub old: Id,
    /// Its id now.
    pub new: Id,
    /// Its tags before.
    pub old_tags: Vec<String>,
    /// Its tags now.
    pub tags: Vec<String>,
    /// The new manifest was already there (left by an interrupted run):
    /// only the old one was deleted.
    pub converged: bool,
}

/// What `tag` did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct TagResult {
    /// Snapshots whose tags changed, old id to new.
    pub changed: Vec<Retagged>,
    /// Selected snapshots that already had the wanted tags.
    pub unchanged: Vec<Id>,
}

/// The manifest without its tags, for telling twins apart.
fn without_tags(s: &Snapshot) -> Result<serde_json::Value> {
    let mut s = s.clone();
    s.tags.clear();
    serde_json::to_value(&s).map_err(|e| {
        Error::from(backup_core::Error::Config(format!(
            "encoding a snapshot manifest: {e}"
        )))
    })
}

fn same_tags(a: &[String], b: &[String]) -> bool {
    let mut a = a.to_vec();
    let mut b = b.to_vec();
    a.sort();
    b.sort();
    a == b
}

/// Changes the tags of the selected snapshots under a shared lock: for
/// each, a new manifest with the new tags (everything else identical) is
/// written, then the old one deleted. Snapshots that already have the
/// wanted tags are left alone; one whose twin (identical but for its tags)
/// already has them is only deleted, so rerunning a command an
/// interruption stopped converges. Every change is noted as the
/// `retagged` detail of `feedback` (the audit record).
///
/// # Errors
///
/// A usage error for an empty selection; [`NotFound`](backup_core::Error::NotFound) for an
/// unknown snapshot, or when the filter matches none; storage and lock
/// errors (changes made before an error stay made and are noted).
pub async fn tag(
    repo: &Repository,
    req: &TagRequest,
    feedback: &dyn Feedback,
) -> Result<TagResult> {
    req.check()?;
    repo.require_deletes("tag")?;
    let work = async {
        let (all, _) = repo.snapshots().await?;
        let selected = select(repo, &req.snapshots, &req.filter, &all).await?;
        let mut bare = Vec::with_capacity(all.len());
        for s in &all {
            bare.push((s.id, without_tags(&s.snapshot)?));
        }
        let mut result = TagResult::default();
        let mut deleted: Vec<Id> = Vec::new();
        for entry in selected {
            if deleted.contains(&entry.id) {
                continue;
            }
            let old_tags = entry.snapshot.tags.clone();
            let tags = req.change.apply(&old_tags);
            if same_tags(&tags, &old_tags) {
                result.unchanged.push(entry.id);
                continue;
            }
            let mine = without_tags(&entry.snapshot)?;
            let twin = all.iter().zip(&bare).find(|(s, (id, b))| {
                *id != entry.id
                    && !deleted.contains(id)
                    && *b == mine
                    && same_tags(&s.snapshot.tags, &tags)
            });
            let (new, converged) = if let Some((s, _)) = twin {
                (s.id, true)
            } else {
                let mut snapshot = entry.snapshot.clone();
                snapshot.tags.clone_from(&tags);
                (repo.save_snapshot(&snapshot).await?, false)
            };
            repo.sink()
                .delete(FileKind::Snapshot, &entry.id.to_hex())
                .await?;
            deleted.push(entry.id);
            result.changed.push(Retagged {
                old: entry.id,
                new,
                old_tags,
                tags,
                converged,
            });
            feedback.detail("retagged", json(&result.changed));
        }
        Ok::<_, Error>(result)
    };
    let result = repo
        .with_lock(LockMode::Shared, "tag", req.lock_wait, work)
        .await?;
    feedback.detail("retagged", json(&result.changed));
    feedback.detail("change", json(&req.change));
    Ok(result)
}

/// The snapshots `specs` name (ids, unique prefixes, `latest`, narrowed
/// by `filter`), each once; without specs, every snapshot of `all` the
/// filter matches. Shared by `tag` and `rewrite`.
///
/// # Errors
///
/// [`NotFound`](backup_core::Error::NotFound) for a spec naming nothing,
/// or a filter matching no snapshot.
pub(crate) async fn select(
    repo: &Repository,
    specs: &[String],
    filter: &SnapshotFilter,
    all: &[SnapshotEntry],
) -> Result<Vec<SnapshotEntry>> {
    let mut selected: Vec<SnapshotEntry> = Vec::new();
    if specs.is_empty() {
        selected.extend(all.iter().filter(|s| filter.matches(&s.snapshot)).cloned());
        if selected.is_empty() {
            return Err(Error::from(backup_core::Error::not_found(
                "a snapshot matching the filter",
            )));
        }
    } else {
        for spec in specs {
            let e = repo.find_snapshot(spec, filter).await?;
            if !selected.iter().any(|s| s.id == e.id) {
                selected.push(e);
            }
        }
    }
    Ok(selected)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v(t: &[&str]) -> Vec<String> {
        t.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn changes_keep_order_and_drop_duplicates() {
        let old = v(&["daily", "db"]);
        assert_eq!(
            TagChange::Add(v(&["keep", "daily", "keep"])).apply(&old),
            v(&["daily", "db", "keep"])
        );
        assert_eq!(TagChange::Remove(v(&["daily"])).apply(&old), v(&["db"]));
        assert_eq!(
            TagChange::Set(v(&["a", "a", "b"])).apply(&old),
            v(&["a", "b"])
        );
        assert_eq!(TagChange::Set(Vec::new()).apply(&old), Vec::<String>::new());
    }

    #[test]
    fn a_bare_request_is_refused() {
        let req = TagRequest {
            change: TagChange::Add(v(&["x"])),
            snapshots: Vec::new(),
            filter: SnapshotFilter::default(),
            lock_wait: Duration::ZERO,
        };
        assert!(req.check().is_err());
        let req = TagRequest {
            snapshots: v(&["abc"]),
            ..req
        };
        assert!(req.check().is_ok());
        let req = TagRequest {
            change: TagChange::Remove(Vec::new()),
            ..req
        };
        assert!(req.check().is_err());
    }
}
