//! `backup restore`.

use std::io::{BufRead, IsTerminal, Write};

use anyhow::{Context as _, Result};
use backup_core::archiver::{backup, BackupOptions};
use backup_core::snapshot::SnapshotFilter;
use backup_core::target::RestoreOptions;
use backup_sources::{open_source, open_target, SourceOptions};

use backup_daemon::secret::Secret;

use super::{bytes, normalize_source, parse_time};
use crate::cli::RestoreArgs;
use crate::context::{usage, with_lock, Ctx};

pub(crate) async fn run(ctx: &Ctx, a: RestoreArgs) -> Result<u8> {
    let at = a.at.as_deref().map(parse_time).transpose()?;
    let job = a.job.as_deref().map(|n| ctx.job(n)).transpose()?;
    let to: Secret = match (&a.to, &job) {
        (Some(t), _) => Secret::new(t.clone()),
        (None, Some(job)) => {
            // Back into the place the job backs up: only when confirmed.
            if !a.yes && !a.dry_run {
                confirm(&format!(
                    "No --to given: restore job {}'s snapshot into its source {}, the original location?",
                    job.name, job.source
                ))?;
            }
            job.source_url()?
        }
        (None, None) => {
            return usage("give --to TARGET (or --job NAME to restore into the job's source)")
        }
    };
    if let Some(j) = &job {
        ctx.audit_detail("job", &j.name);
    }
    let target = open_target(to.expose()).await?;
    ctx.audit_detail("target", target.describe());
    let opts = RestoreOptions {
        includes: a.includes,
        excludes: a.excludes,
        dry_run: a.dry_run,
        drop: a.drop,
        at,
        renames: a.renames.clone(),
        jobs: a.jobs.map(usize::from),
    };
    target.check_options(&opts)?;
    let repo = ctx.open().await?;
    let work = async {
        let mut repo = repo.clone().load_index().await?;
        let filter = SnapshotFilter {
            source: a.source.as_deref().map(normalize_source),
            job: job.as_ref().map(|j| j.name.clone()),
            ..SnapshotFilter::default()
        };
        let entry = repo.find_snapshot(&a.snapshot, &filter).await?;
        ctx.audit_detail("snapshot", entry.id);
        if a.drop && !a.dry_run && !a.yes {
            confirm(&format!(
                "This replaces data in {} with snapshot {}. Continue?",
                target.describe(),
                entry.id.short()
            ))?;
        }
        let mut safety = None;
        if !a.dry_run && !a.no_safety_backup && target.replaces_data(&opts).await? {
            safety = Some(safety_backup(ctx, &mut repo, to.expose(), &entry.id.short()).await?);
        }
        let progress = ctx.progress("restore", "files");
        let result = target.restore(&repo, &entry, &opts, progress.clone()).await;
        progress.finish();
        Ok((entry, result?, safety))
    };
    let (entry, report, safety) = with_lock(ctx, &repo, false, "restore", work).await?;
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({
            "snapshot": entry.id,
            "safety_backup": safety,
            "report": report,
        }))?;
    } else {
        if let Some(id) = safety {
            ctx.say(format!(
                "safety backup {} holds what the restore replaced (`backup restore {} --to ...` brings it back)",
                id.short(),
                id.short()
            ))?;
        }
        let st = &report.stats;
        let verb = if report.dry_run {
            "would restore"
        } else {
            "restored"
        };
        if let Some(dbs) = report.details.get("databases").and_then(|d| d.as_object()) {
            // A database target: per-database lines.
            ctx.say(format!(
                "{verb} snapshot {} to {} ({} of stream data)",
                entry.id.short(),
                report.target,
                bytes(st.bytes)
            ))?;
            for (db, d) in dbs {
                ctx.say(format!(
                    "  database {db}: {}",
                    describe_db(d, report.dry_run)
                ))?;
            }
        } else {
            ctx.say(format!(
                "{verb} snapshot {} to {}: {} files ({}), {} dirs, {} links",
                entry.id.short(),
                report.target,
                st.files,
                bytes(st.bytes),
                st.dirs,
                st.symlinks
            ))?;
        }
        if let Some(lines) = report.details.get("summary").and_then(|v| v.as_array()) {
            for l in lines.iter().filter_map(|l| l.as_str()) {
                ctx.say(format!("  {l}"))?;
            }
        }
        if report.dry_run {
            ctx.say("dry run: nothing was changed")?;
        }
    }
    Ok(0)
}

/// One line about one database of a database restore's report.
fn describe_db(d: &serde_json::Value, dry_run: bool) -> String {
    let n = |k: &str| d.get(k).and_then(serde_json::Value::as_u64).unwrap_or(0);
    if dry_run {
        let to = d.get("to").map_or_else(String::new, ToString::to_string);
        format!(
            "-> {to}: {} keys, {} skipped as expired, {} left out by filters; the target holds {} keys{}",
            n("would_restore"),
            n("expired_skipped"),
            n("filtered_out"),
            n("keys_in_target"),
            if d.get("would_flush").and_then(serde_json::Value::as_bool) == Some(true) {
                " (flushed first: --drop)"
            } else {
                ""
            }
        )
    } else {
        format!(
            "{} keys restored (from database {}), {} skipped as expired, {} left out by filters",
            n("restored"),
            n("source_db"),
            n("expired_skipped"),
            n("filtered")
        )
    }
}

/// Backs up the restore target before a destructive restore replaces its
/// data (DESIGN.md section 7); returns the snapshot id.
async fn safety_backup(
    ctx: &Ctx,
    repo: &mut backup_core::repo::IndexedRepository,
    target_url: &str,
    restoring: &str,
) -> Result<backup_core::Id> {
    let fail = "the safety backup of the restore target failed, so nothing was changed; fix the cause or pass --no-safety-backup";
    let mut source = open_source(target_url, &SourceOptions::default())
        .await
        .context(fail)?;
    let opts = BackupOptions {
        tags: vec![
            "safety-backup".to_owned(),
            format!("before-restore-{restoring}"),
        ],
        ..BackupOptions::default()
    };
    let progress = ctx.progress("safety", "items");
    let out = backup(repo, source.as_mut(), &opts, progress.clone()).await;
    progress.finish();
    let out = out.context(fail)?;
    repo.set_index((*out.index).clone());
    out.id.context(fail)
}

/// Asks for confirmation on a terminal; refuses without one.
fn confirm(question: &str) -> Result<()> {
    if !std::io::stdin().is_terminal() {
        return usage("a destructive restore needs confirmation: add --yes when not on a terminal");
    }
    eprint!("{question} [y/N] ");
    std::io::stderr().flush()?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line)?;
    if matches!(line.trim(), "y" | "Y" | "yes" | "YES") {
        Ok(())
    } else {
        usage("restore cancelled; nothing was changed")
    }
}
