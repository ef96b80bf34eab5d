//! Per-job slot leases: several daemons sharing a repository and a job
//! list run each scheduled slot once.
//!
//! Before a scheduled run, a daemon creates `locks/slot-<job>-<time>` with
//! a create-only write. The storage guarantees that of several concurrent
//! creates exactly one succeeds; the daemons that lose skip the slot. The
//! file is not a repository lock (its name is not an id, so lock handling
//! ignores it); it is removed by the job's later runs once a day old.

use crate::error::Error;
use crate::repo::Repository;
use crate::sink::{FileKind, Sink, SinkExt};
use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};

const PREFIX: &str = "slot-";

fn job_key(job: &str) -> String {
    hex::encode(&Sha256::digest(job.as_bytes())[..8])
}

/// The lease name of a job's slot.
pub fn slot_name(job: &str, slot: DateTime<Utc>) -> String {
    format!("{PREFIX}{}-{}", job_key(job), slot.timestamp())
}

/// Claims a slot; `Ok(false)` when another daemon already has.
///
/// # Errors
///
/// Storage errors other than the lease existing.
pub async fn claim(repo: &Repository, job: &str, slot: DateTime<Utc>) -> Result<bool, Error> {
    let info = serde_json::json!({
        "job": job,
        "slot": slot,
        "host": crate::util::hostname(),
        "pid": std::process::id(),
        "claimed": Utc::now(),
    });
    let (_, sealed) = repo.encode_file(&info)?;
    repo.sink()
        .create_claim(FileKind::Lock, &slot_name(job, slot), sealed)
        .await
}

/// Removes the job's slot leases for slots before `before`.
///
/// # Errors
///
/// Storage errors.
pub async fn remove_old(
    repo: &Repository,
    job: &str,
    before: DateTime<Utc>,
) -> Result<usize, Error> {
    let prefix = format!("{PREFIX}{}-", job_key(job));
    let mut n = 0;
    for name in repo.sink().list_names(FileKind::Lock).await? {
        let Some(ts) = name
            .strip_prefix(&prefix)
            .and_then(|t| t.parse::<i64>().ok())
        else {
            continue;
        };
        if ts < before.timestamp() {
            repo.sink().delete(FileKind::Lock, &name).await?;
            n += 1;
        }
    }
    Ok(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn one_claim_per_slot_and_old_leases_go() {
        let repo = crate::test_support::memory_repo().await;
        let t = |s: i64| DateTime::from_timestamp(s, 0).unwrap();
        assert!(claim(&repo, "db", t(1000)).await.unwrap());
        assert!(!claim(&repo, "db", t(1000)).await.unwrap());
        assert!(claim(&repo, "other job", t(1000)).await.unwrap());
        assert!(claim(&repo, "db", t(2000)).await.unwrap());
        assert_ne!(slot_name("db", t(1)), slot_name("db2", t(1)));
        // Leases are not locks: taking a lock ignores them.
        assert!(repo.locks().await.unwrap().is_empty());
        assert_eq!(remove_old(&repo, "db", t(1500)).await.unwrap(), 1);
        assert!(claim(&repo, "db", t(1000)).await.unwrap());
        assert_eq!(
            repo.sink().list_names(FileKind::Lock).await.unwrap().len(),
            3
        );
    }
}
