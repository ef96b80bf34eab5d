//! `backup copy`.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use backup_core::archiver::{backup, BackupOptions};
use backup_core::config::Encryption;
use backup_core::copy::{not_yet_copied, SnapshotSource};
use backup_core::repo::Repository;
use backup_storage::{StorageOptions, StorageUrl};

use super::snapshot_filter;
use crate::cli::CopyArgs;
use crate::context::{prompt, read_password_file, with_lock, Ctx};

pub(crate) async fn run(ctx: &Ctx, a: CopyArgs) -> Result<u8> {
    let filter = snapshot_filter(&a.filter)?;
    let src = ctx.open().await?;
    let dst = open_destination(&a).await?;
    let work = async {
        let src_idx = src.clone().load_index().await?;
        let (all, _) = src_idx.snapshots().await?;
        let wanted = if a.snapshots.is_empty() {
            all.into_iter()
                .filter(|s| filter.matches(&s.snapshot))
                .collect()
        } else {
            let mut v = Vec::new();
            for spec in &a.snapshots {
                v.push(src_idx.find_snapshot(spec, &filter).await?);
            }
            v
        };
        let inner = async {
            let mut dst_idx = dst.clone().load_index().await?;
            let (existing, _) = dst_idx.snapshots().await?;
            let todo = not_yet_copied(wanted, &existing);
            let mut copied = Vec::new();
            let mut existing = existing;
            for entry in todo {
                // Reuse the destination's latest copy of the same source as
                // the parent: unchanged files are then not read at all.
                let parent = existing
                    .iter()
                    .filter(|e| {
                        e.snapshot.source == entry.snapshot.source
                            && e.snapshot.host == entry.snapshot.host
                    })
                    .max_by_key(|e| e.snapshot.time)
                    .cloned();
                let mut source = SnapshotSource::new(src_idx.clone(), entry.clone());
                let opts = BackupOptions {
                    parent,
                    copy_of: Some(entry.clone()),
                    ..BackupOptions::default()
                };
                let progress = ctx.progress("copy", "files");
                let out =
                    Box::pin(backup(&dst_idx, &mut source, &opts, Arc::clone(&progress))).await;
                progress.finish();
                let out = out.with_context(|| format!("copying snapshot {}", entry.id.short()))?;
                dst_idx.set_index((*out.index).clone());
                if let Some(id) = out.id {
                    existing.push(backup_core::snapshot::SnapshotEntry {
                        id,
                        snapshot: out.snapshot.clone(),
                    });
                    copied.push(serde_json::json!({
                        "from": entry.id,
                        "to": id,
                        "bytes_read": out.run_stats.bytes_read,
                        "bytes_added": out.run_stats.bytes_added,
                        "files_unchanged": out.run_stats.files_unchanged,
                    }));
                    ctx.say(format!(
                        "copied snapshot {} as {}",
                        entry.id.short(),
                        id.short()
                    ))?;
                }
            }
            Ok::<_, anyhow::Error>(copied)
        };
        with_lock(ctx, &dst, false, "copy", inner).await
    };
    let copied = Box::pin(with_lock(ctx, &src, false, "copy", work)).await?;
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({"copied": copied}))?;
    } else {
        ctx.say(format!(
            "{} snapshots copied to {}",
            copied.len(),
            redact(&a.to_repo)
        ))?;
    }
    Ok(0)
}

fn redact(url: &str) -> String {
    StorageUrl::parse(url).map_or_else(|_| url.to_owned(), |u| u.redacted())
}

/// Opens the destination with its own password and storage options.
async fn open_destination(a: &CopyArgs) -> Result<Repository> {
    let url = StorageUrl::parse(&a.to_repo)?;
    let mut options = StorageOptions::default();
    for pair in &a.to_options {
        options.set_pair(pair)?;
    }
    let sink = backup_storage::build(&url, &options)?;
    let config = Repository::read_config(sink.as_ref())
        .await
        .with_context(|| format!("destination {}", url.redacted()))?;
    if config.encryption == Encryption::None {
        return Ok(Repository::open(sink, None).await?);
    }
    let password = if let Ok(p) = std::env::var("BACKUP_TO_PASSWORD") {
        p
    } else if let Some(f) = &a.to_password_file {
        read_password_file(f)?
    } else {
        prompt("destination repository password", false)?
    };
    Repository::open(sink, Some(password.as_bytes()))
        .await
        .with_context(|| format!("opening the destination {}", url.redacted()))
}
