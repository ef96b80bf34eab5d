//! `backup tier`.

use anyhow::Result;
use backup_core::lock::LockMode;
use backup_ops::cold::{tier, TierOptions};
use backup_storage::cold::ColdStore;
use backup_storage::S3StorageClass;

use super::bytes;
use crate::cli::TierArgs;
use crate::context::{usage, Ctx};

pub(crate) async fn run(ctx: &Ctx, a: TierArgs) -> Result<u8> {
    let spec = ctx.repo_spec()?;
    let class: S3StorageClass = match (&a.class, spec.options.s3.data_storage_class) {
        (Some(c), _) => c.parse().map_err(backup_ops::Error::from)?,
        (None, Some(c)) => c,
        (None, None) => {
            return usage(
                "give --class CLASS (STANDARD_IA, GLACIER_IR, GLACIER, DEEP_ARCHIVE) or set the storage option s3.data-storage-class",
            )
        }
    };
    let older_than = a
        .older_than
        .as_deref()
        .map(|d| {
            humantime::parse_duration(d).map_err(|e| {
                backup_ops::Error::usage(format!("--older-than `{d}`: {e}; use for example 90d"))
            })
        })
        .transpose()?;
    let cold = ColdStore::open(&spec.url, &spec.options).map_err(backup_ops::Error::from)?;
    let repo = ctx.open().await?.load_index().await?;
    let opts = TierOptions {
        class,
        older_than,
        dry_run: a.dry_run,
        now: chrono::Utc::now(),
    };
    let report = repo
        .with_lock(
            LockMode::Shared,
            "tier",
            ctx.lock_wait(),
            tier(&repo, &cold, &opts),
        )
        .await?;
    ctx.detail("tier", serde_json::to_value(&report)?);
    if ctx.global.json {
        ctx.print_json(&report)?;
        return Ok(0);
    }
    let verb = if report.dry_run {
        "would move"
    } else {
        "moved"
    };
    ctx.say(format!(
        "{verb} {} data packs ({}) to {}; {} already there or archived, {} kept because a younger snapshot uses them",
        report.moved,
        bytes(report.moved_bytes),
        report.class,
        report.already_cold,
        report.kept_for_young
    ))?;
    if report.dry_run {
        ctx.say("dry run: nothing was changed")?;
    }
    Ok(0)
}
