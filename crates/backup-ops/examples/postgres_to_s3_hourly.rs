//! A service that backs its PostgreSQL database up into S3 every hour and
//! exposes the result of the last run (for a health endpoint, a metric,
//! a status page), applying a retention policy after each backup.
//!
//! ```text
//! BACKUP_PASSWORD=... AWS_ACCESS_KEY_ID=... AWS_SECRET_ACCESS_KEY=... \
//!   cargo run -p backup-ops --example postgres_to_s3_hourly -- \
//!   s3://bucket/prefix postgres://user:pw@host/db [endpoint=http://... ...]
//! ```

use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use backup_core::repo::{InitOptions, Repository};
use backup_ops::backup::{backup, open_source, BackupRequest};
use backup_ops::repository::{open, RepoSpec};
use backup_ops::Unattended;
use backup_sources::SourceSpec;
use chrono::{DateTime, Utc};
use tokio_util::sync::CancellationToken;

/// What the last run did.
#[derive(Debug, Clone)]
pub struct LastResult {
    /// When it ended.
    pub at: DateTime<Utc>,
    /// The snapshot id, or the error.
    pub outcome: Result<String, String>,
    /// Bytes the database held (the snapshot's logical size).
    pub bytes: u64,
}

/// The backup side of a service: one database, one repository.
#[derive(Clone)]
pub struct HourlyBackup {
    repo: RepoSpec,
    password: String,
    database: SourceSpec,
    last: Arc<Mutex<Option<LastResult>>>,
}

impl HourlyBackup {
    /// Backs `database_url` up into the repository `repo` (created on the
    /// first run when missing).
    pub fn new(
        repo: RepoSpec,
        password: &str,
        database_url: &str,
    ) -> Result<Self, backup_ops::Error> {
        Ok(HourlyBackup {
            repo,
            password: password.to_owned(),
            database: SourceSpec::plain(database_url)?,
            last: Arc::new(Mutex::new(None)),
        })
    }

    /// The result of the last run, `None` before the first ended.
    pub fn last(&self) -> Option<LastResult> {
        self.last
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// One backup now; its result is also kept for [`Self::last`].
    pub async fn run_once(&self) -> LastResult {
        let outcome = self.backup().await;
        let result = LastResult {
            at: Utc::now(),
            bytes: outcome.as_ref().map_or(0, |(_, bytes)| *bytes),
            outcome: outcome.map(|(id, _)| id).map_err(|e| e.to_string()),
        };
        *self.last.lock().unwrap_or_else(PoisonError::into_inner) = Some(result.clone());
        result
    }

    async fn backup(&self) -> Result<(String, u64), backup_ops::Error> {
        if Repository::read_config(self.repo.sink()?.as_ref())
            .await
            .is_err()
        {
            let opts = InitOptions::default();
            Repository::init(self.repo.sink()?, Some(self.password.as_bytes()), &opts).await?;
        }
        let repo = open(&self.repo, || Ok(self.password.as_str().into())).await?;
        let req = BackupRequest {
            tags: vec!["hourly".to_owned()],
            job: Some("app-db".to_owned()),
            lock_wait: Duration::from_secs(60),
            ..BackupRequest::default()
        };
        let source = open_source(&self.database).await?;
        let done = backup(&repo, source, &self.database, &req, &Unattended, None).await?;
        let id = done.id.map(|id| id.to_string()).unwrap_or_default();
        Ok((id, done.snapshot.stats.logical_bytes))
    }

    /// Runs a backup every `period`, the first at once, until `stop` is
    /// cancelled. A failed run is kept in [`Self::last`] and the schedule
    /// goes on.
    pub async fn run_every(&self, period: Duration, stop: &CancellationToken) {
        let mut ticks = tokio::time::interval(period);
        ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = ticks.tick() => {}
            }
            let r = self.run_once().await;
            match &r.outcome {
                Ok(id) => println!("{}: snapshot {id} ({} bytes)", r.at, r.bytes),
                Err(e) => eprintln!("{}: backup failed: {e}", r.at),
            }
        }
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [repo, db, options @ ..] = args.as_slice() else {
        return Err(
            "usage: postgres_to_s3_hourly s3://bucket/prefix postgres://... [key=value ...]".into(),
        );
    };
    let password = std::env::var("BACKUP_PASSWORD").map_err(|_| "set BACKUP_PASSWORD")?;
    let service = HourlyBackup::new(RepoSpec::new(repo, options)?, &password, db)?;
    let stop = CancellationToken::new();
    let on_signal = stop.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    service.run_every(Duration::from_secs(3600), &stop).await;
    println!("last: {:?}", service.last());
    Ok(())
}
