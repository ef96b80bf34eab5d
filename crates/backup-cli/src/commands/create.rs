//! `backup create`.

use std::sync::Arc;

use anyhow::Result;
use backup_core::archiver::{backup, BackupOptions};
use backup_core::snapshot::SnapshotFilter;
use backup_sources::{open_source, SourceKind, SourceOptions};

use super::{bytes, parse_time};
use crate::cli::CreateArgs;
use crate::context::{with_lock, Ctx};

pub(crate) async fn run(ctx: &Ctx, a: CreateArgs) -> Result<u8> {
    let time = a.time.as_deref().map(parse_time).transpose()?;
    let source_url = match &a.mode {
        Some(mode) => with_redis_mode(&a.source, mode)?,
        None => a.source.clone(),
    };
    let repo = ctx.open().await?;
    let mut source = open_source(
        &source_url,
        &SourceOptions {
            excludes: a.excludes.clone(),
            includes: a.includes.clone(),
            globals: a.pg_globals,
        },
    )
    .await?;
    let descriptor = source.descriptor();
    let work = async {
        let repo = repo.clone().load_index().await?;

        let parent = if a.no_parent {
            None
        } else if let Some(p) = &a.parent {
            Some(repo.find_snapshot(p, &SnapshotFilter::default()).await?)
        } else {
            let filter = SnapshotFilter {
                source: Some(descriptor.url.clone()),
                host: Some(a.host.clone().unwrap_or_else(backup_core::util::hostname)),
                ..SnapshotFilter::default()
            };
            match repo.find_snapshot("latest", &filter).await {
                Ok(s) => Some(s),
                Err(backup_core::Error::NotFound { .. }) => None,
                Err(e) => return Err(e.into()),
            }
        };

        let progress = ctx.progress("backup", "files");
        if SourceKind::of(&a.source)? == SourceKind::Files && ctx.human() {
            let p = progress.clone();
            let root = std::path::PathBuf::from(&descriptor.url);
            let excludes = a.excludes.clone();
            std::thread::spawn(move || {
                let (total, _) = backup_sources::files::scan_size(&root, &excludes);
                p.set_total(total);
            });
        }
        let opts = BackupOptions {
            tags: a.tags,
            excludes: a.excludes,
            includes: a.includes,
            time,
            host: a.host,
            job: None,
            parent,
            dry_run: a.dry_run,
            copy_of: None,
        };
        let result = backup(&repo, source.as_mut(), &opts, Arc::clone(&progress)).await;
        progress.finish();
        Ok(result?)
    };
    let outcome = with_lock(ctx, &repo, false, "backup", work).await?;
    let s = &outcome.snapshot;
    let st = &s.stats;
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({
            "id": outcome.id,
            "dry_run": a.dry_run,
            "snapshot": s,
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
