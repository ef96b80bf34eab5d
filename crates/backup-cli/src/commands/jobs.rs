//! `backup health` and `backup schedule`: the jobs of `--config`.

use anyhow::Result;
use chrono::Utc;

use crate::cli::{HealthArgs, ScheduleArgs};
use crate::context::{usage, Ctx};

pub(crate) async fn health(ctx: &Ctx, a: HealthArgs) -> Result<u8> {
    let config = ctx.config()?;
    let checks = backup_ops::health::check(config, a.job.as_deref()).await?;
    let healthy = checks.iter().all(|c| c.ok);
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({"healthy": healthy, "checks": checks}))?;
    } else {
        for c in &checks {
            let line = format!(
                "{} {:<10} {:<20} {}",
                if c.ok { "ok  " } else { "FAIL" },
                c.kind.name(),
                c.name,
                c.message
            );
            if c.ok {
                ctx.say(line)?;
            } else {
                note!("{line}");
            }
        }
    }
    if healthy {
        Ok(0)
    } else {
        if !ctx.global.json {
            note!(
                "error: {} of {} health checks failed",
                checks.iter().filter(|c| !c.ok).count(),
                checks.len()
            );
        }
        Ok(backup_ops::exit::FAILED)
    }
}

pub(crate) fn schedule(ctx: &Ctx, a: &ScheduleArgs) -> Result<u8> {
    let config = ctx.config()?;
    if config.jobs.is_empty() {
        return usage("the configuration has no jobs");
    }
    let jobs = config.all_jobs().map_err(backup_ops::Error::from)?;
    let now = Utc::now();
    let mut out = Vec::new();
    for job in &jobs {
        let runs = job.schedule.upcoming(now, a.count);
        let verify = job
            .verify
            .as_ref()
            .map(|v| v.schedule.upcoming(now, a.count))
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
