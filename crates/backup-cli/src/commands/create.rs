//! `backup create`.

use anyhow::Result;
use backup_daemon::job::{
    apply_retention, create_snapshot_from, open_job_source, CreateParams, Parent,
};
use backup_daemon::secret::Secret;

use super::{bytes, parse_time};
use crate::cli::CreateArgs;
use crate::context::{usage, Ctx};

pub(crate) async fn run(ctx: &Ctx, a: CreateArgs) -> Result<u8> {
    let time = a.time.as_deref().map(parse_time).transpose()?;
    let lock_wait = backup_core::retention::parse_duration(&ctx.global.lock_wait)?;
    let job = a.job.as_deref().map(|n| ctx.job(n)).transpose()?;
    let mut params = match (&job, &a.source) {
        (Some(job), _) => CreateParams::for_job(job)?,
        (None, Some(source)) => CreateParams {
            source: Some(Secret::new(source.clone())),
            ..CreateParams::default()
        },
        (None, None) => return usage("give a SOURCE or --job NAME"),
    };
    if let Some(mode) = &a.mode {
        let url = params
            .source
            .as_ref()
            .map(|s| s.expose().to_owned())
            .unwrap_or_default();
        params.source = Some(Secret::new(with_redis_mode(&url, mode)?));
    }
    params.tags.extend(a.tags.iter().cloned());
    params.excludes.extend(a.excludes.iter().cloned());
    params.includes.extend(a.includes.iter().cloned());
    params.pg_globals |= a.pg_globals;
    params.mongo_users |= a.mongo_users;
    params.time = time;
    params.host.clone_from(&a.host);
    params.dry_run = a.dry_run;
    params.scan_total = ctx.human() && !ctx.global.no_progress;
    params.parent = if a.no_parent {
        Parent::None
    } else if let Some(p) = &a.parent {
        Parent::Given(p.clone())
    } else {
        Parent::Latest
    };
    if let Some(j) = &job {
        ctx.audit_detail("job", &j.name);
    }
    // The repository's key derivation (Argon2id) and the source's set-up
    // (connections, an exported snapshot, version checks) run side by side.
    let (repo, source) = tokio::try_join!(ctx.open(), open_job_source(&params))?;
    let progress = ctx.progress("backup", "files");
    let outcome = create_snapshot_from(&repo, source, params, lock_wait, progress).await?;
    ctx.audit_detail("snapshot", outcome.id);
    ctx.audit_detail("source", &outcome.snapshot.source.url);
    ctx.audit_detail("dry_run", a.dry_run);
    let retention = match (&job, outcome.id) {
        (Some(job), Some(_)) => match &job.retention {
            Some((policy, prune)) => {
                let r = apply_retention(&repo, &job.name, policy, *prune, lock_wait).await?;
                ctx.audit_detail("retention_removed", &r.removed);
                Some(r)
            }
            None => None,
        },
        _ => None,
    };
    let s = &outcome.snapshot;
    let st = &s.stats;
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({
            "id": outcome.id,
            "dry_run": a.dry_run,
            "snapshot": s,
            "retention": retention,
        }))?;
    } else {
        for w in &s.warnings {
            eprintln!("warning: {w}");
        }
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
        if let Some(r) = &retention {
            ctx.say(format!(
                "  retention removed {} snapshots, kept {}",
                r.removed.len(),
                r.kept
            ))?;
        }
    }
    if !s.warnings.is_empty() {
        eprintln!(
            "error: {} entries could not be read and are missing from the snapshot (see the warnings above)",
            s.warnings.len()
        );
        return Ok(crate::exit::FAILED);
    }
    Ok(0)
}

/// `--mode MODE` for a Redis source: the URL with `mode=MODE` in its query.
fn with_redis_mode(url: &str, mode: &str) -> Result<String> {
    let usage = |m: String| anyhow::Error::from(backup_core::Error::Config(m));
    if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
        return Err(usage(
            "--mode applies to Redis sources (redis:// or rediss:// URLs)".to_owned(),
        ));
    }
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let mut params: Vec<&str> = query.split('&').filter(|p| !p.is_empty()).collect();
    if let Some(given) = params.iter().find_map(|p| p.strip_prefix("mode=")) {
        if given != mode {
            return Err(usage(format!(
                "--mode {mode} contradicts mode={given} in the URL; give one of them"
            )));
        }
        return Ok(url.to_owned());
    }
    let param = format!("mode={mode}");
    params.push(&param);
    Ok(format!("{base}?{}", params.join("&")))
}

#[cfg(test)]
mod tests {
    use super::with_redis_mode;

    #[test]
    fn redis_mode_goes_into_the_query() {
        assert_eq!(
            with_redis_mode("redis://h:1/2", "keys").unwrap(),
            "redis://h:1/2?mode=keys"
        );
        assert_eq!(
            with_redis_mode("rediss://:pw@h:1?tls-ca=/ca.pem", "keys").unwrap(),
            "rediss://:pw@h:1?tls-ca=/ca.pem&mode=keys"
        );
        assert_eq!(
            with_redis_mode("redis://h:1?mode=keys", "keys").unwrap(),
            "redis://h:1?mode=keys"
        );
        assert!(with_redis_mode("redis://h:1?mode=rdb", "keys").is_err());
        assert!(with_redis_mode("/some/dir", "keys").is_err());
    }
}
