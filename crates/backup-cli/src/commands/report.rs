//! `backup report`: the jobs' history over a period.

use std::io::Write as _;

use anyhow::Result;
use backup_ops::config::ReportFormat;
use backup_ops::report::{anomaly, build, render, History};
use chrono::Utc;

use crate::cli::ReportArgs;
use crate::context::{usage, Ctx};

pub(crate) async fn run(ctx: &Ctx, a: ReportArgs) -> Result<u8> {
    let period =
        backup_core::retention::parse_duration(&a.since).map_err(backup_ops::Error::from)?;
    let since = Utc::now()
        - chrono::Duration::from_std(period).map_err(|_| {
            backup_ops::Error::usage(format!("--since {}: the period is too long", a.since))
        })?;
    let format = match (&a.format, ctx.global.json) {
        (Some(f), _) => f
            .parse::<ReportFormat>()
            .map_err(backup_ops::Error::usage)?,
        (None, true) => ReportFormat::Json,
        (None, false) => ReportFormat::Html,
    };
    if let Some(job) = &a.job {
        if ctx.config.is_some() {
            ctx.job(job)?;
        }
    }
    let mut repos = Vec::new();
    let mut urls = Vec::new();
    // --repo (or BACKUP_REPOSITORY) names a configured repository by its
    // name or its URL.
    let configured: Option<Vec<String>> = ctx.config.as_ref().and_then(|config| {
        let names: Vec<String> = match ctx.global.repo.as_deref() {
            None => config.repositories.keys().cloned().collect(),
            Some(r) => config
                .repositories
                .iter()
                .filter(|(name, c)| {
                    name.as_str() == r || c.url.trim_end_matches('/') == r.trim_end_matches('/')
                })
                .map(|(name, _)| name.clone())
                .collect(),
        };
        (!names.is_empty()).then_some(names)
    });
    match &ctx.config {
        Some(config) if configured.is_some() && a.job.is_none() => {
            let names = configured.unwrap_or_default();
            for name in names {
                let repo = backup_ops::repository::open_configured(config, &name).await?;
                urls.push(
                    config
                        .repository(&name)
                        .map_err(backup_ops::Error::from)?
                        .url
                        .clone(),
                );
                repos.push((name, repo));
            }
        }
        Some(config) if a.job.is_some() => {
            let job = ctx.job(a.job.as_deref().unwrap_or_default())?;
            let repo = ctx.open().await?;
            urls.push(
                config
                    .repository(&job.repository)
                    .map_err(backup_ops::Error::from)?
                    .url
                    .clone(),
            );
            repos.push((job.repository.clone(), repo));
        }
        _ => {
            let repo = ctx.open().await?;
            let spec = ctx.repo_spec()?;
            urls.push(ctx.global.repo.clone().unwrap_or_default());
            repos.push((spec.redacted(), repo));
        }
    }
    if repos.is_empty() {
        return usage(
            "no repository to report on: use --repo or a configuration with repositories",
        );
    }
    let mut history = History::load(ctx.config.as_ref(), &repos, Some(since)).await?;
    if let Some(job) = &a.job {
        history.jobs.retain(|j| &j.name == job);
    }
    for (usage, url) in history.repositories.iter_mut().zip(&urls) {
        if let Some((free, total)) = anomaly::local_space(url) {
            usage.free = Some(free);
            usage.total = Some(total);
        }
    }
    let report = build(&history);
    let text = render(&report, format);
    if let Some(path) = &a.output {
        std::fs::write(path, &text).map_err(|e| {
            backup_core::Error::io(format!("writing the report to {}", path.display()), e)
        })?;
        ctx.say(format!(
            "report of {} written to {}",
            backup_ops::report::count(report.jobs.len(), "job", "jobs"),
            path.display()
        ))?;
    } else {
        let mut out = std::io::stdout().lock();
        out.write_all(text.as_bytes())?;
        if !text.ends_with('\n') {
            out.write_all(b"\n")?;
        }
    }
    Ok(0)
}
