//! `backup drill`: a restore drill of a job (or a source), or the list of
//! recorded drills.

use anyhow::Result;
use backup_core::drill::DrillRecord;
use backup_core::snapshot::SnapshotFilter;
use backup_ops::config::CheckConfig;
use backup_ops::drill::{chooser, default_state_dir, drill, history, DrillRequest};
use backup_ops::report::human_seconds;

use super::{bytes, normalize_source};
use crate::cli::DrillArgs;
use crate::context::{usage, Ctx};

pub(crate) async fn run(ctx: &Ctx, a: DrillArgs) -> Result<u8> {
    if a.history {
        return list(ctx, &a).await;
    }
    let mut req = match (&a.job, &a.source) {
        (Some(name), _) => DrillRequest::for_job(&ctx.job(name)?, ctx.lock_wait())?,
        (None, Some(source)) => DrillRequest {
            job: None,
            scope: SnapshotFilter {
                source: Some(normalize_source(source)),
                ..SnapshotFilter::default()
            },
            target: None,
            source_url: source.contains("://").then(|| source.clone()),
            builtin_checks: true,
            checks: Vec::new(),
            max_rto: None,
            keep: false,
            state_dir: default_state_dir(),
            lock_wait: ctx.lock_wait(),
            point: "latest".to_owned(),
            replay_command: None,
            canary_database: None,
        },
        (None, None) => {
            return usage(
                "say what to drill: a job of --config (backup drill JOB), or --source SOURCE with --repo",
            )
        }
    };
    req.target = a.target.clone().or(req.target);
    if let Some(m) = &a.max_rto {
        req.max_rto =
            Some(backup_core::retention::parse_duration(m).map_err(backup_ops::Error::from)?);
    }
    req.keep |= a.keep;
    req.point = a.point.clone().unwrap_or(req.point);
    req.replay_command = super::restore::replay_program(ctx);
    req.builtin_checks &= !a.no_builtin_checks;
    req.checks
        .extend(a.check_commands.iter().map(|c| CheckConfig::Command {
            command: vec!["sh".into(), "-c".into(), c.clone()],
            timeout: None,
        }));
    let repo = ctx.open().await?;
    let point = chooser(&req)?;
    let outcome = drill(&repo, &req, point.as_ref(), ctx, None).await?;
    for w in &outcome.warnings {
        note!("warning: {w}");
    }
    let r = &outcome.record;
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({
            "id": outcome.id,
            "ok": r.ok,
            "exit_code": outcome.exit_code,
            "record": r,
            "warnings": outcome.warnings,
        }))?;
    } else {
        print_drill(ctx, r)?;
    }
    if !r.ok && !ctx.global.json {
        let why = if let Some(e) = &r.error {
            e.clone()
        } else if r.rto_exceeded {
            format!(
                "the RTO of {} is over the limit of {}",
                human_seconds(r.rto_seconds.unwrap_or(0.0)),
                human_seconds(r.max_rto_seconds.unwrap_or(0.0))
            )
        } else {
            format!(
                "{} of {} failed",
                r.checks.iter().filter(|c| !c.ok).count(),
                backup_ops::report::count(r.checks.len(), "check", "checks")
            )
        };
        note!("error: the drill failed: {why}");
    }
    Ok(outcome.exit_code)
}

fn print_drill(ctx: &Ctx, r: &DrillRecord) -> Result<()> {
    let what = r.job.as_deref().unwrap_or(&r.source.url);
    match (r.snapshot, r.point) {
        (Some(snapshot), Some(point)) => ctx.say(format!(
            "drill of {what} ({}): snapshot {} from {} restored to {}",
            r.source.kind,
            snapshot.short(),
            point.to_rfc3339(),
            r.target
        ))?,
        _ => ctx.say(format!(
            "drill of {what} ({}): failed before anything was restored (recorded)",
            r.source.kind
        ))?,
    }
    for l in &r.leftovers_removed {
        ctx.say(format!("removed a leftover of an earlier drill: {l}"))?;
    }
    if r.snapshot.is_none() {
        return Ok(());
    }
    let phases: Vec<String> = r
        .phases
        .iter()
        .map(|p| format!("{} {}", p.name, human_seconds(p.seconds)))
        .collect();
    let phases = if phases.is_empty() {
        String::new()
    } else {
        format!(" ({})", phases.join(", "))
    };
    ctx.say(format!(
        "RTO {}{}{}; RPO {}; {} items, {}",
        r.rto_seconds.map_or_else(|| "-".to_owned(), human_seconds),
        r.max_rto_seconds
            .map(|m| format!(
                " (max {}{})",
                human_seconds(m),
                if r.rto_exceeded { ", EXCEEDED" } else { "" }
            ))
            .unwrap_or_default(),
        phases,
        r.rpo_seconds.map_or_else(|| "-".to_owned(), human_seconds),
        r.items,
        bytes(r.bytes)
    ))?;
    for c in &r.checks {
        let line = format!(
            "{} {} ({}): {}",
            if c.ok { "ok  " } else { "FAIL" },
            c.name,
            human_seconds(c.seconds),
            c.detail
        );
        if c.ok {
            ctx.say(line)?;
        } else {
            note!("{line}");
        }
    }
    ctx.say(if r.kept {
        format!("the scratch copy was kept: {}", r.target)
    } else {
        "the scratch copy was removed".to_owned()
    })?;
    if r.ok {
        ctx.say("drill passed")?;
    }
    Ok(())
}

async fn list(ctx: &Ctx, a: &DrillArgs) -> Result<u8> {
    if let Some(name) = &a.job {
        ctx.job(name)?;
    }
    let repo = ctx.open().await?;
    let records = history(&repo, a.job.as_deref()).await?;
    if ctx.global.json {
        let list: Vec<serde_json::Value> = records
            .iter()
            .map(|(id, r)| serde_json::json!({"id": id, "record": r}))
            .collect();
        ctx.print_json(&list)?;
        return Ok(0);
    }
    if records.is_empty() {
        ctx.say("no drills recorded")?;
        return Ok(0);
    }
    ctx.say(format!(
        "{:<8}  {:<20}  {:<16}  {:<8}  {:<6}  {:>9}  {:>9}  checks",
        "id", "started", "job", "snapshot", "result", "RTO", "RPO"
    ))?;
    for (id, r) in &records {
        ctx.say(format!(
            "{:<8}  {:<20}  {:<16}  {:<8}  {:<6}  {:>9}  {:>9}  {}/{}{}",
            id.short(),
            r.started.format("%Y-%m-%d %H:%M:%S"),
            r.job.as_deref().unwrap_or("-"),
            r.snapshot.map_or_else(|| "-".to_owned(), |s| s.short()),
            if r.ok { "passed" } else { "FAILED" },
            r.rto_seconds.map_or_else(|| "-".to_owned(), human_seconds),
            r.rpo_seconds.map_or_else(|| "-".to_owned(), human_seconds),
            r.checks.iter().filter(|c| c.ok).count(),
            r.checks.len(),
            r.error
                .as_deref()
                .map(|e| format!("  {e}"))
                .unwrap_or_default()
        ))?;
    }
    Ok(0)
}
