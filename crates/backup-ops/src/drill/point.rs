//! What a drill restores: a point chosen by a [`PointChooser`].

use async_trait::async_trait;
use backup_core::repo::IndexedRepository;
use backup_core::snapshot::{SnapshotEntry, SnapshotFilter};

use chrono::{DateTime, Utc};

use crate::error::Result;

/// The point a drill restores.
#[derive(Debug, Clone)]
pub struct ChosenPoint {
    /// The snapshot to restore (for a point-in-time restore, the base
    /// backup the log is replayed on).
    pub snapshot: SnapshotEntry,
    /// The time the restored copy will represent; the drill's RPO is its
    /// age.
    pub time: DateTime<Utc>,
    /// The restore's `--at`, for a point inside a restorable window
    /// (`None`: the snapshot as it is).
    pub at: Option<DateTime<Utc>>,
    /// How it was chosen, recorded as the drill record's `point_kind`.
    pub kind: &'static str,
    /// The canary written to the source for this drill, which the restored
    /// copy must hold.
    pub canary: Option<Canary>,
}

/// A row written to the source before a drill ([`CanaryPoint`]).
#[derive(Debug, Clone)]
pub struct Canary {
    /// Its id in `backup_drill_canary`.
    pub id: String,
    /// Seconds from writing it until the captured WAL held it: the RPO a
    /// disaster at that moment would have had.
    pub captured_after: f64,
}

/// Chooses what a drill restores.
///
/// [`LatestSnapshot`] takes the newest snapshot; `RandomPointInWindow`
/// (PostgreSQL physical jobs with captured WAL) picks a random time inside
/// the job's restorable window and returns the base snapshot before it
/// with `at` set, so that every drill tests a different point of the
/// window the job claims. [`chooser`] picks one by name.
#[async_trait]
pub trait PointChooser: Send + Sync {
    /// Picks the point among the snapshots `scope` selects.
    ///
    /// # Errors
    ///
    /// Nothing to restore; repository errors.
    async fn choose(&self, repo: &IndexedRepository, scope: &SnapshotFilter)
        -> Result<ChosenPoint>;
}

/// The newest snapshot of the job or source: what a restore after a
/// disaster would take.
#[derive(Debug, Clone, Copy, Default)]
pub struct LatestSnapshot;

#[async_trait]
impl PointChooser for LatestSnapshot {
    async fn choose(
        &self,
        repo: &IndexedRepository,
        scope: &SnapshotFilter,
    ) -> Result<ChosenPoint> {
        let entry = repo.find_snapshot("latest", scope).await?;
        Ok(ChosenPoint {
            time: entry.snapshot.time,
            snapshot: entry,
            at: None,
            kind: "latest-snapshot",
            canary: None,
        })
    }
}

/// A random time inside the restorable window of a physical PostgreSQL
/// job with captured WAL (`point = "random"`): between the end of its
/// newest base backup and the last captured WAL, leaving out the window's
/// last second (a capture's time is when it was stored, which can be after
/// the last commit it holds, and a time target needs a commit after it).
/// The base is restored and replayed to that time, so every drill tests
/// another point of the window the job claims.
#[cfg(feature = "postgres")]
#[derive(Debug, Clone, Copy, Default)]
pub struct RandomPointInWindow;

#[cfg(feature = "postgres")]
#[async_trait]
impl PointChooser for RandomPointInWindow {
    async fn choose(
        &self,
        repo: &IndexedRepository,
        scope: &SnapshotFilter,
    ) -> Result<ChosenPoint> {
        let window = physical_window(repo, scope).await?;
        let span = (window.end - window.start - chrono::Duration::seconds(1))
            .num_milliseconds()
            .max(0);
        let offset = i64::try_from(random_u64() % (span.unsigned_abs() + 1)).unwrap_or(0);
        let at = window.start + chrono::Duration::milliseconds(offset);
        Ok(ChosenPoint {
            snapshot: window.base,
            time: at,
            at: Some(at),
            kind: "random-point-in-window",
            canary: None,
        })
    }
}

/// The canary drill of a physical PostgreSQL job with captured WAL
/// (`point = "canary"`): writes a row to the source
/// (`backup_drill_canary`), waits until the captured WAL holds it, and
/// restores the newest base backup replayed to just after it. The drill
/// then requires the row in the copy, and its RPO is what it measured:
/// the seconds from writing the row until it was restorable.
#[cfg(feature = "postgres")]
#[derive(Debug, Clone)]
pub struct CanaryPoint {
    /// The source's URL, with credentials (the row is written there).
    pub source_url: String,
    /// How long to wait for the capture to hold the row.
    pub wait: std::time::Duration,
}

#[cfg(feature = "postgres")]
#[async_trait]
impl PointChooser for CanaryPoint {
    async fn choose(
        &self,
        repo: &IndexedRepository,
        scope: &SnapshotFilter,
    ) -> Result<ChosenPoint> {
        let id = format!(
            "drill-{}-{:016x}",
            Utc::now().format("%Y%m%dT%H%M%SZ"),
            random_u64()
        );
        let written = std::time::Instant::now();
        let target = backup_sources::drill::postgres_write_canary(&self.source_url, &id).await?;
        let closed = Utc::now();
        let at = DateTime::parse_from_rfc3339(&target)
            .map_err(|e| crate::error::Error::usage(format!("the server's time `{target}`: {e}")))?
            .with_timezone(&Utc);
        // WAL stored half a second after the closing commit returned holds
        // it (and the canary before it).
        let needed = closed + chrono::Duration::milliseconds(500);
        loop {
            let window = physical_window(repo, scope).await?;
            if window.end >= needed && window.start <= at {
                return Ok(ChosenPoint {
                    snapshot: window.base,
                    time: at,
                    at: Some(at),
                    kind: "canary",
                    canary: Some(Canary {
                        id,
                        captured_after: written.elapsed().as_secs_f64(),
                    }),
                });
            }
            if written.elapsed() > self.wait {
                return Err(crate::error::Error::usage(format!(
                    "the drill's canary, written at {target}, was not in the captured WAL after {} s (the restorable window ends at {}): is the job's WAL capture running?",
                    self.wait.as_secs(),
                    window.end.to_rfc3339()
                )));
            }
            tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        }
    }
}

/// The restorable window of the newest physical base backup among the
/// snapshots `scope` selects, as the repository holds it now.
#[cfg(feature = "postgres")]
async fn physical_window(
    repo: &IndexedRepository,
    scope: &SnapshotFilter,
) -> Result<backup_sources::postgres::physical::pitr::RestorableWindow> {
    use backup_sources::postgres::physical;
    let (all, _) = repo.snapshots().await?;
    let bases: Vec<SnapshotEntry> = all
        .into_iter()
        .filter(|s| scope.matches(&s.snapshot) && physical::is_physical(&s.snapshot.metadata))
        .collect();
    Ok(physical::pitr::restorable_window(repo, &bases).await?)
}

/// A random number from the standard library's randomly seeded hasher.
#[cfg(feature = "postgres")]
fn random_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.finish()
}

/// What `[jobs.NAME.drill] point` (or `backup drill --point`) asks for.
///
/// # Errors
///
/// An unknown name, or `random` without PostgreSQL support.
pub fn chooser(point: Option<&str>, source_url: Option<&str>) -> Result<Box<dyn PointChooser>> {
    match point.unwrap_or("latest") {
        "latest" => Ok(Box::new(LatestSnapshot)),
        #[cfg(feature = "postgres")]
        "canary" => match source_url {
            Some(url) => Ok(Box::new(CanaryPoint {
                source_url: url.to_owned(),
                wait: std::time::Duration::from_secs(120),
            })),
            None => Err(crate::error::Error::usage(
                "drill point `canary` writes a row to the source: give the source's URL",
            )),
        },
        #[cfg(feature = "postgres")]
        "random" => Ok(Box::new(RandomPointInWindow)),
        other => Err(crate::error::Error::usage(format!(
            "drill point `{other}`: use `latest` (the newest snapshot), `random` (a random time inside a PostgreSQL job's restorable window) or `canary` (a row written to the source, required in a copy replayed to just after it)"
        ))),
    }
}
