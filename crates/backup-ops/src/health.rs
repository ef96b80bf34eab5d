//! Health probes of a configuration: repositories open and accept
//! writes, sources answer, backups are younger than their jobs' `max_age`.

use std::collections::HashMap;
use std::time::Duration;

use backup_core::repo::Repository;
use chrono::{DateTime, Utc};
use serde::Serialize;

use crate::backup::last_success;
use crate::config::{Config, Job};
use crate::error::{Error, Result, ResultExt};
use crate::repository::{check_writable, open_configured};

/// What a check looked at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum CheckKind {
    /// A repository opens and accepts writes.
    Repository,
    /// A job's source answers.
    Source,
    /// A job's newest backup is younger than its `max_age`.
    Age,
}

impl CheckKind {
    /// `repository`, `source` or `age`.
    pub fn name(self) -> &'static str {
        match self {
            CheckKind::Repository => "repository",
            CheckKind::Source => "source",
            CheckKind::Age => "age",
        }
    }
}

/// One health check.
#[derive(Debug, Clone, Serialize)]
pub struct Check {
    /// What was checked.
    pub kind: CheckKind,
    /// The repository or job name.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// What was found.
    pub message: String,
}

/// Runs every check for the jobs of `config` (or only `job`, with only its
/// repository): repositories, sources, backup ages.
///
/// # Errors
///
/// An unknown job, or a storage error while listing a job's snapshots;
/// failed checks are in the result.
pub async fn check(config: &Config, job: Option<&str>) -> Result<Vec<Check>> {
    let jobs = match job {
        Some(n) => vec![config.job(n)?],
        None => config.all_jobs()?,
    };
    let mut repo_names: Vec<&str> = match job {
        Some(_) => jobs.iter().map(|j| j.repository.as_str()).collect(),
        None => config.repositories.keys().map(String::as_str).collect(),
    };
    repo_names.sort_unstable();
    repo_names.dedup();
    let mut checks = Vec::new();
    let mut repos = HashMap::new();
    for name in repo_names {
        let result = match open_configured(config, name).await {
            Ok(repo) => {
                let r = check_writable(&repo).await;
                repos.insert(name.to_owned(), repo);
                r
            }
            Err(e) => Err(e),
        };
        checks.push(Check {
            kind: CheckKind::Repository,
            name: name.to_owned(),
            ok: result.is_ok(),
            message: match result {
                Ok(()) => "opens and accepts writes".to_owned(),
                Err(e) => backup_core::error::report(&e),
            },
        });
    }
    for job in &jobs {
        let r = check_source(job).await;
        checks.push(Check {
            kind: CheckKind::Source,
            name: job.name.clone(),
            ok: r.is_ok(),
            message: match r {
                Ok(()) => format!("{} is reachable", job.source),
                Err(e) => backup_core::error::report(&e),
            },
        });
        if let Some(repo) = repos.get(&job.repository) {
            checks.push(age(repo, job).await?);
        }
    }
    Ok(checks)
}

/// How far `backupd --check-config` looks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// Every repository opens with its password (it exists and the
    /// password or key is right). Fast enough for a service's start.
    Open,
    /// Also what `backup health` checks but the ages: every repository
    /// accepts writes, every job's source answers.
    Deep,
}

/// What a start-up check found: the check, and whether its failure may
/// pass by itself (a repository not reachable now, which the daemon
/// retries) rather than needing a change of the configuration or the
/// repository.
#[derive(Debug, Clone, Serialize)]
pub struct StartupCheck {
    /// The check.
    #[serde(flatten)]
    pub check: Check,
    /// The failure may pass by itself (a network or a server away).
    pub transient: bool,
}

/// How long one repository or source may take to answer a start-up
/// check.
const STARTUP_PROBE_LIMIT: Duration = Duration::from_secs(30);

/// The checks of `backupd --check-config` beyond the file itself: every
/// repository opens with its password, and with [`Depth::Deep`] accepts
/// writes and every job's source answers. A repository that does not
/// exist or a wrong password fails at any depth; failures that may pass
/// by themselves are marked `transient`.
///
/// # Errors
///
/// The configuration's jobs are invalid.
pub async fn startup(config: &Config, depth: Depth) -> Result<Vec<StartupCheck>> {
    let timed_out = || {
        Error::from(backup_core::Error::Transient {
            backend: "start-up check",
            message: format!(
                "no answer within {}",
                crate::report::human_seconds(STARTUP_PROBE_LIMIT.as_secs_f64())
            ),
        })
    };
    let mut out = Vec::new();
    let jobs = config.all_jobs()?;
    for name in config.repositories.keys() {
        let probe = async {
            let repo = open_configured(config, name).await?;
            full_key_for_jobs(&repo, jobs.iter().filter(|j| &j.repository == name))?;
            if depth == Depth::Deep {
                check_writable(&repo).await?;
            }
            Ok::<_, Error>(())
        };
        let r = tokio::time::timeout(STARTUP_PROBE_LIMIT, probe)
            .await
            .unwrap_or_else(|_| Err(timed_out()));
        out.push(StartupCheck {
            transient: r.as_ref().is_err_and(Error::is_retryable),
            check: Check {
                kind: CheckKind::Repository,
                name: name.clone(),
                ok: r.is_ok(),
                message: match r {
                    Ok(()) if depth == Depth::Deep => "opens and accepts writes".to_owned(),
                    Ok(()) => "opens with its password".to_owned(),
                    Err(e) => match e.hint() {
                        Some(h) => format!("{}; {h}", backup_core::error::report(&e)),
                        None => backup_core::error::report(&e),
                    },
                },
            },
        });
    }
    if depth == Depth::Deep {
        for job in jobs {
            let r = tokio::time::timeout(STARTUP_PROBE_LIMIT, check_source(&job))
                .await
                .unwrap_or_else(|_| Err(timed_out()));
            out.push(StartupCheck {
                transient: r.as_ref().is_err_and(Error::is_retryable),
                check: Check {
                    kind: CheckKind::Source,
                    name: job.name.clone(),
                    ok: r.is_ok(),
                    message: match r {
                        Ok(()) => format!(
                            "{} is reachable",
                            backup_core::redact::redact_url(&job.source)
                        ),
                        Err(e) => backup_core::error::report(&e),
                    },
                },
            });
        }
    }
    Ok(out)
}

/// Refuses, at start-up rather than at the first run, jobs that need to
/// read or delete what a repository opened with a write-only key holds:
/// retention, verification and drills.
fn full_key_for_jobs<'a>(repo: &Repository, jobs: impl Iterator<Item = &'a Job>) -> Result<()> {
    for job in jobs {
        let needs: Vec<&str> = [
            (job.retention.is_some(), "retention"),
            (job.verify.is_some(), "verify"),
            (job.drill.is_some(), "drill"),
        ]
        .into_iter()
        .filter_map(|(on, what)| on.then_some(what))
        .collect();
        if !needs.is_empty() {
            repo.require_full_key(&format!("the {} of job {}", needs.join(", "), job.name))?;
        }
    }
    Ok(())
}

/// Checks that the source of a job can be opened (the server answers, the
/// directory exists).
///
/// # Errors
///
/// Why it cannot.
pub async fn check_source(job: &Job) -> Result<()> {
    let mut spec = job.source_spec()?;
    // A probe reads nothing: leave out what only a backup needs (users,
    // roles, globals), but read the way the job reads.
    let settings = backup_sources::KindSettings {
        mode: job.settings.mode.clone(),
        ..backup_sources::KindSettings::default()
    };
    spec.options = backup_sources::KindOptions::new(spec.kind(), &settings)?;
    let source = spec
        .open()
        .await
        .with_context(|| format!("source of job {} is not reachable", job.name))?;
    drop(source);
    Ok(())
}

async fn age(repo: &Repository, job: &Job) -> Result<Check> {
    let last = last_success(repo, &job.name).await?;
    let (ok, message) = describe_age(last, job.max_age, Utc::now());
    Ok(Check {
        kind: CheckKind::Age,
        name: job.name.clone(),
        ok,
        message,
    })
}

fn describe_age(
    last: Option<DateTime<Utc>>,
    max_age: Option<Duration>,
    now: DateTime<Utc>,
) -> (bool, String) {
    match (last, max_age) {
        (Some(t), Some(max)) => {
            let age = (now - t).to_std().unwrap_or_default();
            (
                age <= max,
                format!(
                    "last backup {} ago ({}), maximum {}",
                    crate::report::human_seconds(age.as_secs_f64()),
                    t.to_rfc3339(),
                    crate::report::human_seconds(max.as_secs_f64())
                ),
            )
        }
        (None, Some(_)) => (false, "no backup of this job yet".to_owned()),
        (Some(t), None) => (
            true,
            format!("last backup {} (no max_age set)", t.to_rfc3339()),
        ),
        (None, None) => (true, "no backup yet (no max_age set)".to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ages() {
        let now = Utc::now();
        let hour = Duration::from_secs(3600);
        let two_hours_ago = now - chrono::Duration::hours(2);
        assert!(!describe_age(Some(two_hours_ago), Some(hour), now).0);
        assert!(describe_age(Some(two_hours_ago), Some(3 * hour), now).0);
        assert!(!describe_age(None, Some(hour), now).0);
        assert!(describe_age(None, None, now).0);
        assert!(describe_age(Some(two_hours_ago), None, now)
            .1
            .contains("no max_age"));
        // One duration format everywhere: `1d 2h`, never `1day 2h`.
        let (_, m) = describe_age(
            Some(now - chrono::Duration::hours(26)),
            Some(30 * hour),
            now,
        );
        assert!(
            m.contains("last backup 1d 2h ago") && m.contains("maximum 1d 6h"),
            "{m}"
        );
    }
}
