//! `backup health` and `backup schedule`: the jobs of `--config`.

use anyhow::Result;
use chrono::Utc;
use serde::Serialize;

use crate::cli::{HealthArgs, ScheduleArgs};
use crate::context::{usage, Ctx};

/// One check of `backup health`.
#[derive(Debug, Serialize)]
struct Check {
    /// `repository`, `source` or `age`.
    kind: &'static str,
    /// The repository or job name.
    name: String,
    ok: bool,
    message: String,
}

pub(crate) async fn health(ctx: &Ctx, a: HealthArgs) -> Result<u8> {
    let config = ctx.config()?;
    let jobs = match &a.job {
        Some(n) => vec![config
            .job(n)
            .map_err(|e| crate::context::UsageError(e.to_string()))?],
        None => config
            .all_jobs()
            .map_err(|e| crate::context::UsageError(e.to_string()))?,
    };
    let mut repo_names: Vec<&str> = jobs.iter().map(|j| j.repository.as_str()).collect();
    if a.job.is_none() {
        repo_names = config.repositories.keys().map(String::as_str).collect();
    }
    repo_names.sort_unstable();
    repo_names.dedup();
    let mut checks = Vec::new();
    let mut repos = std::collections::HashMap::new();
    for name in repo_names {
        let cfg = config.repository(name)?;
        let result = match backup_daemon::job::open_repository(name, cfg).await {
            Ok(repo) => {
                let r = backup_daemon::job::check_writable(&repo).await;
                repos.insert(name.to_owned(), repo);
                r
            }
            Err(e) => Err(e),
        };
        checks.push(Check {
            kind: "repository",
            name: name.to_owned(),
            ok: result.is_ok(),
            message: match result {
                Ok(()) => "opens and accepts writes".to_owned(),
                Err(e) => format!("{e:#}"),
            },
        });
    }
    for job in &jobs {
        let r = backup_daemon::job::check_source(job).await;
        checks.push(Check {
            kind: "source",
            name: job.name.clone(),
            ok: r.is_ok(),
            message: match r {
                Ok(()) => format!("{} is reachable", job.source),
                Err(e) => format!("{e:#}"),
            },
        });
        let Some(repo) = repos.get(&job.repository) else {
            continue;
        };
        let last = backup_daemon::job::last_success(repo, &job.name).await?;
        let (ok, message) = match (last, job.max_age) {
            (Some(t), Some(max)) => {
                let age = (Utc::now() - t).to_std().unwrap_or_default();
                let ok = age <= max;
                (
                    ok,
                    format!(
                        "last backup {} ago ({}), maximum {}",
                        humantime::format_duration(std::time::Duration::from_secs(age.as_secs())),
                        t.to_rfc3339(),
                        humantime::format_duration(max)
                    ),
                )
            }
            (None, Some(_)) => (false, "no backup of this job yet".to_owned()),
            (Some(t), None) => (
                true,
                format!("last backup {} (no max_age set)", t.to_rfc3339()),
            ),
            (None, None) => (true, "no backup yet (no max_age set)".to_owned()),
        };
        checks.push(Check {
            kind: "age",
            name: job.name.clone(),
            ok,
            message,
        });
    }
    let healthy = checks.iter().all(|c| c.ok);
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({"healthy": healthy, "checks": checks}))?;
    } else {
        for c in &checks {
            let line = format!(
                "{} {:<10} {:<20} {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.kind,
                c.name,
                c.message
            );
            if c.ok {
                ctx.say(line)?;
            } else {
                eprintln!("{line}");
            }
        }
    }
    if healthy {
        Ok(0)
    } else {
        if !ctx.global.json {
            eprintln!(
                "error: {} of {} health checks failed",
                checks.iter().filter(|c| !c.ok).count(),
                checks.len()
            );
        }
        Ok(crate::exit::FAILED)
    }
}

pub(crate) fn schedule(ctx: &Ctx, a: &ScheduleArgs) -> Result<u8> {
    let config = ctx.config()?;
    if config.jobs.is_empty() {
        return usage("the configuration has no jobs");
    }
    let jobs = config
        .all_jobs()
        .map_err(|e| crate::context::UsageError(e.to_string()))?;
    let now = Utc::now();
    let mut out = Vec::new();
    for job in &jobs {
        let runs = job.schedule.upcoming(now, a.count);
        let verify = job
            .verify
            .as_ref()
            .map(|(s, _)| s.upcoming(now, a.count))
            .unwrap_or_default();
        if !ctx.global.json {
            ctx.say(format!(
                "{}  ({}, {}) -> repository {}",
                job.name,
                job.schedule.expr(),
                job.schedule.tz(),
                job.repository
            ))?;
            for t in &runs {
                ctx.say(format!(
                    "  backup  {}  ({})",
                    t.with_timezone(&job.schedule.tz()).to_rfc3339(),
                    t.to_rfc3339()
                ))?;
            }
            for t in &verify {
                ctx.say(format!(
                    "  verify  {}",
                    t.with_timezone(&job.schedule.tz()).to_rfc3339()
                ))?;
            }
        }
        out.push(serde_json::json!({
            "job": job.name,
            "schedule": job.schedule.expr(),
            "timezone": job.schedule.tz().name(),
            "repository": job.repository,
            "next_runs": runs,
            "next_verifications": verify,
        }));
    }
    if ctx.global.json {
        ctx.print_json(&out)?;
    }
    Ok(0)
}
