//! Point-in-time recovery of a MongoDB database from a program: a base
//! snapshot, the oplog followed into the repository by a background task,
//! the restorable window read back, and one database restored under a new
//! name as it was at a chosen second, beside the original.
//!
//! ```text
//! cargo run -p backup-ops --example mongo_pitr -- REPO 'mongodb://HOST/?replicaSet=rs0' DB SECONDS
//! ```
//!
//! The program takes the base, follows the oplog for `SECONDS`, then
//! restores `DB` as it was half-way through into `DB_at`.

use std::time::Duration;

use backup_ops::backup_sources::capture::{FollowSummary, NoObserver, Position};
use backup_ops::{backup, follow, open, open_source, open_target, restorable_windows, restore};
use backup_ops::{BackupRequest, FollowRequest, InitOptions, RepoSpec, Repository};
use backup_ops::{RestoreOptions, RestoreRequest, RestoreResult, SourceSpec, TargetSpec};
use backup_ops::{SnapshotFilter, Unattended};
use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

type Error = Box<dyn std::error::Error + Send + Sync>;

/// Opens the repository at `url`, creating it first when there is none.
pub async fn repository(url: &str, password: &str) -> Result<Repository, Error> {
    let spec = RepoSpec::new(url, &[])?;
    if Repository::read_config(spec.sink()?.as_ref())
        .await
        .is_err()
    {
        let opts = InitOptions::default();
        return Ok(Repository::init(spec.sink()?, Some(password.as_bytes()), &opts).await?);
    }
    let password = password.to_owned();
    Ok(open(&spec, move || Ok(password.into())).await?)
}

/// A running capture of one replica set's oplog.
pub struct Capture {
    source: SourceSpec,
    cancel: CancellationToken,
    task: JoinHandle<backup_ops::Result<FollowSummary>>,
}

impl Capture {
    /// Takes a base snapshot of the replica set at `url` (every database)
    /// and starts following its oplog into `repo`, storing a slice every
    /// second.
    pub async fn start(repo: &Repository, url: &str) -> Result<Capture, Error> {
        let source = SourceSpec::plain(url)?;
        let reading = open_source(&source).await?;
        let req = BackupRequest::default();
        backup(repo, reading, &source, &req, &Unattended, None).await?;

        let cancel = CancellationToken::new();
        let (repo, spec, stop) = (repo.clone(), source.clone(), cancel.clone());
        let req = FollowRequest {
            slice_time: Some(Duration::from_secs(1)),
            ..FollowRequest::default()
        };
        let task =
            tokio::spawn(async move { follow(&repo, &spec, &req, &NoObserver, &stop).await });
        Ok(Capture {
            source,
            cancel,
            task,
        })
    }

    /// The newest second the stored oplog restores to (`None` before the
    /// first slice is stored).
    pub async fn restorable_until(
        &self,
        repo: &Repository,
    ) -> Result<Option<DateTime<Utc>>, Error> {
        let url = self.source.url();
        let sources = restorable_windows(repo, Some(url)).await?;
        Ok(sources
            .iter()
            .flat_map(|s| &s.windows)
            .filter_map(|w| match w.to {
                Position::Oplog { seconds, .. } => DateTime::from_timestamp(seconds.into(), 0),
                _ => None,
            })
            .max())
    }

    /// Waits (polling) until the stored oplog reaches `time`, for at most
    /// `limit`.
    pub async fn wait_for(
        &self,
        repo: &Repository,
        time: DateTime<Utc>,
        limit: Duration,
    ) -> Result<(), Error> {
        let deadline = tokio::time::Instant::now() + limit;
        while self.restorable_until(repo).await?.is_none_or(|t| t < time) {
            if self.task.is_finished() || tokio::time::Instant::now() > deadline {
                return Err(format!("the capture did not reach {time} in {limit:?}").into());
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        Ok(())
    }

    /// Stops following; what was read is stored first.
    pub async fn stop(self) -> Result<FollowSummary, Error> {
        self.cancel.cancel();
        Ok(self.task.await??)
    }
}

/// Restores database `db` of the replica set at `url` as it was at `at`
/// into the database `into` of the same server (which must not hold
/// `into` already): the newest base before `at`, then its oplog replayed
/// up to `at`.
pub async fn restore_to(
    repo: &Repository,
    url: &str,
    db: &str,
    into: &str,
    at: DateTime<Utc>,
) -> Result<RestoreResult, Error> {
    let target = TargetSpec::new(url)?;
    let req = RestoreRequest {
        snapshot: "latest".to_owned(),
        filter: SnapshotFilter {
            source: Some(url.to_owned()),
            ..SnapshotFilter::default()
        },
        options: RestoreOptions {
            at: Some(at),
            includes: vec![db.to_owned()],
            renames: vec![format!("{db}:{into}")],
            ..RestoreOptions::default()
        },
        ..RestoreRequest::default()
    };
    let into = open_target(&target, &req.options)?;
    Ok(restore(repo, into.as_ref(), &target, &req, &Unattended).await?)
}

#[tokio::main]
async fn main() -> Result<(), Error> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [repo_url, url, db, seconds] = args.as_slice() else {
        return Err("usage: mongo_pitr REPO MONGODB_URL DB SECONDS".into());
    };
    let password = std::env::var("BACKUP_PASSWORD")?;
    let repo = repository(repo_url, &password).await?;
    let capture = Capture::start(&repo, url).await?;
    let half = Duration::from_secs(seconds.parse::<u64>()? / 2);
    tokio::time::sleep(half).await;
    let at = Utc::now();
    tokio::time::sleep(half).await;
    capture.wait_for(&repo, at, Duration::from_secs(30)).await?;
    let summary = capture.stop().await?;
    println!("captured {} oplog entries", summary.entries);
    let done = restore_to(&repo, url, db, &format!("{db}_at"), at).await?;
    println!("{db} as of {at} restored from base {}", done.snapshot.id);
    Ok(())
}
