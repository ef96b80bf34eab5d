//! `backup restore`.

use anyhow::Result;
use backup_core::snapshot::SnapshotFilter;
use backup_core::target::{Overwrite, Owners, RecoveryPoint, RestoreOptions, RestoredUnit};

use backup_ops::restore::{open_target, restore, RestoreRequest};
use backup_sources::TargetSpec;

use super::{bytes, normalize_source, parse_time};
use crate::cli::RestoreArgs;
use crate::context::{confirm, usage, Ctx};

/// This program with the arguments that reach the repository, for a
/// restored PostgreSQL server's `restore_command` (which runs without
/// this environment): `--repo` and `--option`, or the configured
/// repository `--job`/`--repo NAME` chose. `None` when there is neither.
pub(crate) fn replay_program(ctx: &Ctx) -> Option<String> {
    let exe = std::env::current_exe().ok()?;
    if let Some(repo) = ctx.named_repo().and_then(|name| {
        ctx.config
            .as_ref()
            .and_then(|c| c.repository(&name).ok().cloned())
    }) {
        return Some(backup_ops::drill::replay_command(
            &exe,
            &repo.url,
            repo.options.iter().map(|(k, v)| (*k, v.as_str())),
        ));
    }
    let repo = ctx.global.repo.as_deref()?;
    let options: Vec<(backup_storage::StorageOptionKey, &str)> = ctx
        .global
        .options
        .iter()
        .filter_map(|o| {
            let (k, v) = o.split_once('=')?;
            Some((k.parse().ok()?, v))
        })
        .collect();
    Some(backup_ops::drill::replay_command(&exe, repo, options))
}

/// The point of `--at-lsn`, `--at-xid`, `--at-name`, `--immediate`,
/// `--at-ts` or `--at-offset`.
fn recovery_point(a: &RestoreArgs) -> Result<Option<RecoveryPoint>> {
    Ok(if let Some(l) = &a.at_lsn {
        Some(RecoveryPoint::Lsn(l.clone()))
    } else if let Some(x) = &a.at_xid {
        Some(RecoveryPoint::Xid(x.clone()))
    } else if let Some(n) = &a.at_name {
        Some(RecoveryPoint::Name(n.clone()))
    } else if a.immediate {
        Some(RecoveryPoint::Immediate)
    } else if let Some(ts) = &a.at_ts {
        let parsed = ts
            .split_once(':')
            .and_then(|(s, i)| Some((s.parse().ok()?, i.parse().ok()?)));
        let Some((seconds, increment)) = parsed else {
            return usage(format!(
                "--at-ts `{ts}`: use SECONDS:INCREMENT, for example 1700000000:5"
            ));
        };
        Some(RecoveryPoint::OplogTs { seconds, increment })
    } else {
        a.at_offset.map(RecoveryPoint::ReplOffset)
    })
}

pub(crate) async fn run(ctx: &Ctx, a: RestoreArgs) -> Result<u8> {
    let at = a.at.as_deref().map(parse_time).transpose()?;
    let job = a.job.as_deref().map(|n| ctx.job(n)).transpose()?;
    let to = match (&a.to, &job) {
        (Some(t), _) => t.clone(),
        (None, Some(job)) => {
            // Back into the place the job backs up: only when confirmed.
            if !a.yes && !a.dry_run {
                confirm(&format!(
                    "No --to given: restore job {}'s snapshot into its source {}, the original location?",
                    job.name, job.source
                ))?;
            }
            job.source_spec()?.url().to_owned()
        }
        (None, None) => {
            return usage("give --to TARGET (or --job NAME to restore into the job's source)")
        }
    };
    let point = recovery_point(&a)?;
    let spec = TargetSpec::new(to)?;
    let cold = super::tier::cold_read(ctx, &a.cold, a.dry_run)?;
    let req = RestoreRequest {
        snapshot: a.snapshot.clone(),
        filter: SnapshotFilter {
            source: a.source.as_deref().map(normalize_source),
            job: job.as_ref().map(|j| j.name.clone()),
            ..SnapshotFilter::default()
        },
        options: RestoreOptions {
            includes: a.includes,
            excludes: a.excludes,
            dry_run: a.dry_run,
            drop: a.drop,
            at,
            renames: a.renames,
            jobs: a.jobs.map(usize::from),
            start_port: a.start,
            tablespace_map: a.tablespace_map,
            point,
            target_action: a.target_action.clone(),
            timeline: a.timeline.clone(),
            replay_command: replay_program(ctx),
            skip_missing_roles: a.skip_missing_roles,
            replay: None,
            overwrite: match a.overwrite.as_deref() {
                Some("never") => Some(Overwrite::Never),
                Some("if-changed") => Some(Overwrite::IfChanged),
                Some(_) => Some(Overwrite::Always),
                None => None,
            },
            delete: a.delete,
            verify: a.verify,
            owners: if a.no_owner {
                Owners::Skip
            } else if a.numeric_owner {
                Owners::Numeric
            } else {
                Owners::ByName
            },
        },
        safety_backup: !a.no_safety_backup,
        confirmed: a.yes,
        lock_wait: ctx.lock_wait(),
        cold,
    };
    let target = open_target(&spec, &req.options)?;
    let repo = ctx.open().await?;
    let done = Box::pin(restore(&repo, target.as_ref(), &spec, &req, ctx)).await?;
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({
            "snapshot": done.snapshot.id,
            "safety_backup": done.safety_backup,
            "report": done.report,
            "cold": done.cold,
        }))?;
        return Ok(0);
    }
    if let Some(cold) = &done.cold {
        ctx.say(super::tier::thaw_line(cold, "the restore needs"))?;
    }
    if let Some(id) = done.safety_backup {
        ctx.say(format!(
            "safety backup {} holds what the restore replaced (`backup restore {} --to ...` brings it back)",
            id.short(),
            id.short()
        ))?;
    }
    let report = &done.report;
    let st = &report.stats;
    let verb = if report.dry_run {
        "would restore"
    } else {
        "restored"
    };
    let id = done.snapshot.id.short();
    ctx.say(match report.unit {
        RestoredUnit::DatabaseStreams => format!(
            "{verb} snapshot {id} to {} ({} of stream data)",
            report.target,
            bytes(st.bytes)
        ),
        RestoredUnit::Files => {
            use std::fmt::Write as _;
            let mut line = format!(
                "{verb} snapshot {id} to {}: {} files ({}), {} dirs, {} links",
                report.target,
                st.files,
                bytes(st.bytes),
                st.dirs,
                st.symlinks
            );
            if st.hard_links > 0 {
                let _ = write!(line, " ({} files as hard links)", st.hard_links);
            }
            if st.specials > 0 {
                let _ = write!(line, ", {} FIFOs and devices", st.specials);
            }
            line
        }
    })?;
    for l in &report.lines {
        ctx.say(format!("  {l}"))?;
    }
    if report.dry_run {
        ctx.say("dry run: nothing was changed")?;
    }
    Ok(0)
}
