//! Restore drill records: what a drill restored, how long the restore took
//! until the copy was usable (RTO), how old the restored point was (RPO),
//! and what its checks found.
//!
//! A record is a metadata file under `drills/` (`REPOSITORY_FORMAT.md` §22),
//! sealed and named by its hash like a snapshot manifest, written once when
//! the drill ends (also when it failed). Prune, copy and repair leave
//! `drills/` alone; `forget` does not remove drill records of forgotten
//! snapshots (the drill happened).

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::repo::Repository;
use crate::sink::{FileKind, SinkExt};
use crate::snapshot::SourceDescriptor;

/// Drill record format version.
pub const DRILL_VERSION: u32 = 1;

/// One restore drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillRecord {
    /// Format version (1).
    pub version: u32,
    /// The job drilled, if the drill ran for one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<String>,
    /// The source whose backup was restored.
    pub source: SourceDescriptor,
    /// The snapshot restored (for a point-in-time drill, the base backup);
    /// absent when the drill failed before it chose one (no snapshot, no
    /// restorable window, a canary that could not be written).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<Id>,
    /// How the point was chosen (or was to be chosen): `latest-snapshot`,
    /// `random-point-in-window` or `canary`.
    pub point_kind: String,
    /// The point in time the restored copy represents; absent when no
    /// point was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub point: Option<DateTime<Utc>>,
    /// When the drill started.
    pub started: DateTime<Utc>,
    /// When it ended (scratch copy removed).
    pub finished: DateTime<Utc>,
    /// Host that ran it.
    pub host: String,
    /// User that ran it.
    pub user: String,
    /// Where the scratch copy was (credentials removed).
    pub target: String,
    /// Whether the copy became usable, every check passed and the RTO was
    /// within its limit.
    pub ok: bool,
    /// Seconds from the start of the drill until the scratch copy was
    /// usable (restored, and for a server started and recovered); absent
    /// when it never became usable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rto_seconds: Option<f64>,
    /// Age of the restored point when the drill started, in seconds (for a
    /// canary drill, the seconds until the canary was captured); absent
    /// when no point was chosen.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rpo_seconds: Option<f64>,
    /// The job's RTO limit (`max_rto`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_rto_seconds: Option<f64>,
    /// Whether the RTO was over the limit.
    #[serde(default)]
    pub rto_exceeded: bool,
    /// The restore's phases in order, each with its duration; together
    /// they make the RTO.
    #[serde(default)]
    pub phases: Vec<DrillPhase>,
    /// Bytes restored.
    #[serde(default)]
    pub bytes: u64,
    /// Files, streams or items restored.
    #[serde(default)]
    pub items: u64,
    /// Every check that ran.
    #[serde(default)]
    pub checks: Vec<DrillCheck>,
    /// Why the drill failed, if it did before its checks (also before
    /// anything was restored: every attempt is recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Whether the scratch copy was left in place (`keep`).
    #[serde(default)]
    pub kept: bool,
    /// Leftovers of earlier, killed drills this drill found and removed.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub leftovers_removed: Vec<String>,
    /// Program and version that ran the drill.
    pub program: String,
}

/// One phase of a drill's restore.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillPhase {
    /// `prepare`, `fetch`, `load`, `indexes`, `recovery`, ...
    pub name: String,
    /// Seconds it took.
    pub seconds: f64,
}

/// The outcome of one check of a drill.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DrillCheck {
    /// What was checked (`built-in: row counts`, `sql: SELECT ...`, ...).
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What it found (the value, the differences, the error).
    pub detail: String,
    /// Seconds it took.
    pub seconds: f64,
}

impl DrillRecord {
    /// The total of the phases up to the point the copy was usable.
    pub fn phase_seconds(&self, name: &str) -> f64 {
        self.phases
            .iter()
            .filter(|p| p.name == name)
            .map(|p| p.seconds)
            .sum()
    }
}

/// Stores a drill record; returns its id.
///
/// # Errors
///
/// Storage errors.
pub async fn save(repo: &Repository, record: &DrillRecord) -> Result<Id> {
    repo.save_file(FileKind::Drill, record).await
}

/// Every drill record, oldest first, plus the files that could not be read.
///
/// # Errors
///
/// Storage errors while listing.
pub async fn list(repo: &Repository) -> Result<(Vec<(Id, DrillRecord)>, Vec<(String, Error)>)> {
    let names = repo.sink().list_names(FileKind::Drill).await?;
    let results: Vec<(String, Result<DrillRecord>)> = stream::iter(names)
        .map(|name| async move {
            let r = repo.load_file::<DrillRecord>(FileKind::Drill, &name).await;
            (name, r)
        })
        .buffer_unordered(16)
        .collect()
        .await;
    let (mut good, mut bad) = (Vec::new(), Vec::new());
    for (name, r) in results {
        match (r, name.parse::<Id>()) {
            (Ok(record), Ok(id)) => good.push((id, record)),
            (Err(Error::NotFound { .. }), _) => {}
            (Err(e), _) | (Ok(_), Err(e)) => bad.push((name, e)),
        }
    }
    good.sort_by(|a, b| a.1.started.cmp(&b.1.started).then(a.0.cmp(&b.0)));
    Ok((good, bad))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::KdfParams;
    use crate::repo::InitOptions;
    use crate::sink::MemorySink;
    use std::sync::Arc;

    fn record(job: &str, started: &str) -> DrillRecord {
        let t = DateTime::parse_from_rfc3339(started)
            .unwrap()
            .with_timezone(&Utc);
        DrillRecord {
            version: DRILL_VERSION,
            job: Some(job.to_owned()),
            source: SourceDescriptor {
                kind: "files".into(),
                url: "/srv".into(),
            },
            snapshot: Some(Id::hash(b"s")),
            point_kind: "latest-snapshot".into(),
            point: Some(t - chrono::Duration::hours(3)),
            started: t,
            finished: t + chrono::Duration::seconds(12),
            host: "h".into(),
            user: "u".into(),
            target: "/scratch/x".into(),
            ok: true,
            rto_seconds: Some(10.5),
            rpo_seconds: Some(10_800.0),
            max_rto_seconds: Some(60.0),
            rto_exceeded: false,
            phases: vec![
                DrillPhase {
                    name: "fetch".into(),
                    seconds: 0.5,
                },
                DrillPhase {
                    name: "load".into(),
                    seconds: 10.0,
                },
            ],
            bytes: 1 << 20,
            items: 3,
            checks: vec![DrillCheck {
                name: "built-in".into(),
                ok: true,
                detail: String::new(),
                seconds: 1.0,
            }],
            error: None,
            kept: false,
            leftovers_removed: Vec::new(),
            program: "backup test".into(),
        }
    }

    #[tokio::test]
    async fn records_round_trip_sealed_and_sorted() {
        let sink: Arc<dyn crate::Sink> = Arc::new(MemorySink::new());
        let opts = InitOptions {
            kdf: KdfParams::insecure_fast(),
            ..InitOptions::default()
        };
        Repository::init(sink.clone(), Some(b"pw"), &opts)
            .await
            .unwrap();
        let repo = Repository::open(sink.clone(), Some(b"pw")).await.unwrap();
        let late = record("b", "2026-02-01T00:00:00Z");
        let early = record("a", "2026-01-01T00:00:00Z");
        let id = save(&repo, &late).await.unwrap();
        save(&repo, &early).await.unwrap();
        let (list, bad) = list(&repo).await.unwrap();
        assert!(bad.is_empty());
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].1, early);
        assert_eq!(list[1], (id, late.clone()));
        assert!((late.phase_seconds("load") - 10.0).abs() < 1e-9);
        // Sealed: the stored bytes do not show the job's name.
        let bytes = sink.get(FileKind::Drill, &id.to_hex()).await.unwrap();
        assert!(!bytes.windows(6).any(|w| w == b"scratc"));
    }

    /// A drill that failed before it chose a point has no snapshot, point
    /// or RPO; the record says so by leaving them out.
    #[test]
    fn a_drill_that_failed_before_restoring_leaves_out_its_point() {
        let mut r = record("a", "2026-01-01T00:00:00Z");
        r.snapshot = None;
        r.point = None;
        r.rpo_seconds = None;
        r.rto_seconds = None;
        r.ok = false;
        r.error = Some("no restorable window".into());
        let v = serde_json::to_value(&r).unwrap();
        for absent in ["snapshot", "point", "rpo_seconds", "rto_seconds"] {
            assert!(v.get(absent).is_none(), "{absent}: {v}");
        }
        let back: DrillRecord = serde_json::from_value(v).unwrap();
        assert_eq!(back, r);
    }
}
