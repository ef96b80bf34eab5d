//! `backup create`.

use anyhow::Result;
use backup_ops::backup::{backup, open_source, BackupRequest, Parent};
use backup_ops::retention::{apply_retention, note};
use backup_sources::{KindSettings, SourceSpec};

use super::{bytes, parse_time};
use crate::cli::CreateArgs;
use crate::context::{usage, Ctx};

pub(crate) async fn run(ctx: &Ctx, a: CreateArgs) -> Result<u8> {
    let time = a.time.as_deref().map(parse_time).transpose()?;
    let job = a.job.as_deref().map(|n| ctx.job(n)).transpose()?;
    let mut req = match &job {
        Some(job) => BackupRequest::for_job(job, ctx.lock_wait()),
        None => BackupRequest {
            lock_wait: ctx.lock_wait(),
            ..BackupRequest::default()
        },
    };
    let mut spec = match (&job, &a.source) {
        (Some(job), _) => job.source_spec()?,
        (None, Some(source)) => SourceSpec::new(
            source.clone(),
            Vec::new(),
            Vec::new(),
            &KindSettings::default(),
        )?,
        (None, None) => return usage("give a SOURCE or --job NAME"),
    };
    // Flags add to what a job says.
    let mut settings = job.as_ref().map(|j| j.settings.clone()).unwrap_or_default();
    settings.pg_globals |= a.pg_globals;
    settings.mongo_users |= a.mongo_users;
    if a.mode.is_some() {
        settings.mode.clone_from(&a.mode);
    }
    if a.pgdata.is_some() {
        settings.pgdata.clone_from(&a.pgdata);
    }
    if a.checkpoint.is_some() {
        settings.checkpoint.clone_from(&a.checkpoint);
    }
    if a.max_rate.is_some() {
        settings.max_rate = a.max_rate;
    }
    let files = &mut settings.files;
    files.one_file_system |= a.one_file_system;
    files.exclude_caches |= a.exclude_caches;
    files
        .exclude_if_present
        .extend(a.exclude_if_present.iter().cloned());
    files.exclude_files.extend(a.exclude_file.iter().cloned());
    if a.exclude_larger_than.is_some() {
        files.exclude_larger_than = a.exclude_larger_than;
    }
    files.files_from.extend(a.files_from.iter().cloned());
    files.files_from_nul |= a.null;
    spec.options = backup_sources::KindOptions::new(spec.kind(), &settings)?;
    spec.excludes.extend(a.excludes.iter().cloned());
    spec.includes.extend(a.includes.iter().cloned());
    req.tags.extend(a.tags.iter().cloned());
    req.time = time;
    req.host.clone_from(&a.host);
    req.dry_run = a.dry_run;
    req.parent = if a.no_parent {
        Parent::None
    } else if let Some(p) = &a.parent {
        Parent::Given(p.clone())
    } else {
        Parent::Latest
    };
    // The repository's key derivation (Argon2id) and the source's set-up
    // (connections, an exported snapshot, version checks) run side by side.
    // Both are awaited to the end: a source that fails at once still finds
    // the repository open, so the failed run is audited there (reports
    // count it).
    let (repo, source) = tokio::join!(ctx.open(), open_source(&spec));
    let (repo, source) = (repo?, source?);
    let outcome = backup(&repo, source, &spec, &req, ctx, None).await?;
    let retention = match (&job, outcome.id) {
        (Some(job), Some(_)) => {
            let r = apply_retention(&repo, job, ctx.lock_wait()).await?;
            if let Some(r) = &r {
                note(ctx, r);
            }
            r
        }
        _ => None,
    };
    let s = &outcome.snapshot;
    // A reader that went away ends the output, not the exit code: the
    // snapshot is saved, with or without omissions.
    if let Err(e) = render(ctx, &outcome, retention.as_ref(), a.dry_run) {
        if !crate::errors::is_broken_pipe(&e) {
            return Err(e);
        }
    }
    if !s.warnings.is_empty() {
        // The last line says both that the snapshot exists and what it
        // lacks; scripts that read the last line or the exit code see it.
        let n = s.warnings.len();
        let entries = if n == 1 { "entry" } else { "entries" };
        let were = if n == 1 { "was" } else { "were" };
        let head = match outcome.id {
            Some(id) => format!("snapshot {} saved with omissions", id.short()),
            None => "dry run: the snapshot would be saved with omissions".to_owned(),
        };
        tracing::warn!(
            "{head}: {n} {entries} could not be read and {were} left out (see the warnings above; exit code {})",
            backup_ops::exit::SAVED_WITH_OMISSIONS
        );
        return Ok(backup_ops::exit::SAVED_WITH_OMISSIONS);
    }
    Ok(0)
}

/// The human or JSON report of a backup.
fn render(
    ctx: &Ctx,
    outcome: &backup_core::archiver::BackupOutcome,
    retention: Option<&backup_ops::retention::RetentionOutcome>,
    dry_run: bool,
) -> Result<()> {
    let s = &outcome.snapshot;
    let st = &s.stats;
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({
            "id": outcome.id,
            "dry_run": dry_run,
            "snapshot": s,
            "retention": retention,
        }))?;
    } else {
        // Each warning was logged (`warning: ...`) when it happened.
        let head = match outcome.id {
            Some(id) => format!("snapshot {} saved", id.short()),
            None => "dry run: nothing was written".to_owned(),
        };
        ctx.say(head)?;
        ctx.say(format!("  source   {} ({})", s.source.url, s.source.kind))?;
        if st.streams > 0 {
            ctx.say(format!("  streams  {}", st.streams))?;
        }
        ctx.say(format!(
            "  files    {} ({} unchanged), {} dirs, {} links",
            st.files, st.files_unchanged, st.dirs, st.symlinks
        ))?;
        ctx.say(format!(
            "  size     {}, read {}",
            bytes(st.logical_bytes),
            bytes(st.bytes_read)
        ))?;
        ctx.say(format!(
            "  added    {} new ({} stored) in {} packs",
            bytes(st.bytes_added),
            bytes(st.bytes_stored),
            st.packs_added
        ))?;
        ctx.say(format!("  time     {:.1}s", st.duration_ms as f64 / 1000.0))?;
        if let Some(r) = retention {
            ctx.say(format!(
                "  retention removed {} snapshots, kept {}",
                r.removed.len(),
                r.kept
            ))?;
            for k in &r.retained {
                ctx.say(format!(
                    "  retention kept {} {} (S3 Object Lock until {})",
                    k.kind, k.name, k.until
                ))?;
            }
            if let Some(l) = &r.locks {
                ctx.say(format!("  retention {}", super::forget::locks_line(l)))?;
            }
        }
    }
    Ok(())
}
