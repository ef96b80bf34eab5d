//! Snapshot manifests.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::id::Id;

/// Snapshot format version.
pub const SNAPSHOT_VERSION: u32 = 1;

/// One backup: what, when, from where, and the root of its tree.
///
/// Stored as a sealed, compressed JSON file under `snapshots/`, named by the
/// SHA-256 of the stored bytes (the snapshot id).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Snapshot {
    /// Format version (1).
    pub version: u32,
    /// When the backup was taken (or the `--time` given).
    pub time: DateTime<Utc>,
    /// Host that ran the backup.
    pub host: String,
    /// User that ran the backup.
    pub user: String,
    /// What was backed up.
    pub source: SourceDescriptor,
    /// The job that ran it, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// User tags.
    #[serde(default)]
    pub tags: Vec<String>,
    /// The snapshot whose unchanged files were reused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub parent: Option<Id>,
    /// For a snapshot made by `copy`: the id of the original in the
    /// repository it was copied from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub copy_of: Option<Id>,
    /// For a snapshot made by `rewrite`: the snapshot it replaced, who
    /// rewrote it, when and why. Absent in every other snapshot (and in
    /// every snapshot written before `rewrite` existed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rewritten: Option<Rewritten>,
    /// Root tree: the source's top-level entries.
    pub tree: Id,
    /// Exclude patterns used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub excludes: Vec<String>,
    /// Include patterns used.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub includes: Vec<String>,
    /// Counters of the run.
    pub stats: SnapshotStats,
    /// Per-stream sizes and digests (database sources).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub streams: Vec<StreamSummary>,
    /// Items that could not be read and are missing from the snapshot.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Source-specific metadata (server version, positions, counts).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub metadata: serde_json::Value,
    /// Program and version that wrote the snapshot.
    pub program: String,
}

/// How a snapshot came from `rewrite`: what it replaced, and why.
///
/// `changes` describes what was removed without the removed values (a
/// path pattern, `sales.customers:id = ?`), so the manifest never repeats
/// what was erased.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Rewritten {
    /// The id of the snapshot this one replaced (deleted by the rewrite).
    pub from: Id,
    /// When the rewrite ran.
    pub time: DateTime<Utc>,
    /// Who ran it.
    pub user: String,
    /// Where it ran.
    pub host: String,
    /// The reason given (`--reason`).
    pub reason: String,
    /// What was removed, described without the removed values.
    pub changes: Vec<String>,
}

/// The source of a snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceDescriptor {
    /// `files`, `postgres`, `mongodb` or `redis`.
    pub kind: String,
    /// The source URL or path with credentials removed.
    pub url: String,
}

/// Counters recorded with a snapshot.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SnapshotStats {
    /// Bytes read from the source (unchanged files reused from the parent
    /// are not read).
    pub bytes_read: u64,
    /// Total content size of the snapshot (all files and streams).
    pub logical_bytes: u64,
    /// Plaintext bytes of blobs new to the repository.
    pub bytes_added: u64,
    /// Stored (compressed, sealed) bytes of those new blobs.
    pub bytes_stored: u64,
    /// Regular files.
    pub files: u64,
    /// Directories.
    pub dirs: u64,
    /// Symbolic links.
    pub symlinks: u64,
    /// Streams.
    pub streams: u64,
    /// Files reused from the parent snapshot without reading.
    pub files_unchanged: u64,
    /// New blobs stored.
    pub blobs_added: u64,
    /// New packs written.
    pub packs_added: u64,
    /// Wall time in milliseconds.
    pub duration_ms: u64,
}

/// Size and digest of one stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamSummary {
    /// Path of the stream node in the snapshot tree.
    pub name: String,
    /// Bytes.
    pub size: u64,
    /// SHA-256 of the content.
    pub sha256: Id,
}

/// A snapshot with its id.
#[derive(Debug, Clone)]
pub struct SnapshotEntry {
    /// The snapshot id.
    pub id: Id,
    /// The manifest.
    pub snapshot: Snapshot,
}

/// Criteria for listing snapshots.
#[derive(Debug, Clone, Default)]
pub struct SnapshotFilter {
    /// Only snapshots of the source this URL names
    /// ([`crate::source_url::selects`]: same server whatever user, scheme
    /// alias or default port; a URL without a database also selects the
    /// server's snapshots of one database, a whole-server snapshot is
    /// selected by a URL naming any of its databases), or of this kind
    /// (`postgres`).
    pub source: Option<String>,
    /// With `source`: only snapshots of exactly that source
    /// ([`crate::source_url::same_source`]: the same database and mode
    /// too), as a backup's parent must be.
    pub source_exact: bool,
    /// Only snapshots carrying all of these tags.
    pub tags: Vec<String>,
    /// Only snapshots taken before this time.
    pub before: Option<DateTime<Utc>>,
    /// Only snapshots taken at or after this time.
    pub after: Option<DateTime<Utc>>,
    /// Only snapshots of this job.
    pub job: Option<String>,
    /// Only snapshots from this host.
    pub host: Option<String>,
}

impl SnapshotFilter {
    /// Whether `s` passes the filter.
    pub fn matches(&self, s: &Snapshot) -> bool {
        if let Some(src) = &self.source {
            let url_matches = if self.source_exact {
                crate::source_url::same_source(src, &s.source.url)
            } else {
                crate::source_url::selects(src, &s.source.url)
            };
            if !url_matches && s.source.kind != *src {
                return false;
            }
        }
        if !self.tags.iter().all(|t| s.tags.contains(t)) {
            return false;
        }
        if self.before.is_some_and(|b| s.time >= b) || self.after.is_some_and(|a| s.time < a) {
            return false;
        }
        if self.job.as_ref().is_some_and(|j| s.job.as_ref() != Some(j)) {
            return false;
        }
        if self.host.as_ref().is_some_and(|h| &s.host != h) {
            return false;
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(time: &str, url: &str, tags: &[&str], job: Option<&str>) -> Snapshot {
        let mut s = crate::test_support::manifest(time, url);
        s.tags = tags.iter().map(|t| (*t).to_owned()).collect();
        s.job = job.map(str::to_owned);
        s
    }

    #[test]
    fn filters_combine() {
        let s = manifest(
            "2024-05-01T12:00:00Z",
            "/srv/data",
            &["a", "b"],
            Some("job1"),
        );
        let f = |f: SnapshotFilter| f.matches(&s);
        assert!(f(SnapshotFilter::default()));
        assert!(f(SnapshotFilter {
            source: Some("/srv/data/".into()),
            ..SnapshotFilter::default()
        }));
        assert!(f(SnapshotFilter {
            source: Some("files".into()),
            ..SnapshotFilter::default()
        }));
        assert!(!f(SnapshotFilter {
            source: Some("/srv/other".into()),
            ..SnapshotFilter::default()
        }));
        assert!(f(SnapshotFilter {
            tags: vec!["a".into()],
            ..SnapshotFilter::default()
        }));
        assert!(!f(SnapshotFilter {
            tags: vec!["a".into(), "c".into()],
            ..SnapshotFilter::default()
        }));
        let t = |x: &str| Some(DateTime::parse_from_rfc3339(x).unwrap().with_timezone(&Utc));
        assert!(f(SnapshotFilter {
            after: t("2024-05-01T12:00:00Z"),
            before: t("2024-05-01T12:00:01Z"),
            ..SnapshotFilter::default()
        }));
        assert!(!f(SnapshotFilter {
            before: t("2024-05-01T12:00:00Z"),
            ..SnapshotFilter::default()
        }));
        assert!(!f(SnapshotFilter {
            job: Some("job2".into()),
            ..SnapshotFilter::default()
        }));
        assert!(!f(SnapshotFilter {
            host: Some("h2".into()),
            ..SnapshotFilter::default()
        }));
    }
}
