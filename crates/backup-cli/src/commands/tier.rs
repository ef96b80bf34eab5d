//! `backup tier`, and the `--cold-*` options of the commands that read
//! data (`restore`, `dump`, `verify --read-data`).

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use backup_core::lock::LockMode;
use backup_ops::cold::{tier, ColdRead, ThawOptions, ThawReport, TierOptions};
use backup_storage::cold::{ColdStore, RetrievalTier};
use backup_storage::{S3StorageClass, StorageUrl};

use super::bytes;
use crate::cli::{ColdArgs, TierArgs};
use crate::context::{usage, Ctx};

/// How a read thaws archived packs: only for an S3 repository whose data
/// storage class is an archive class, or when a `--cold-*` flag asks.
pub(crate) fn cold_read(ctx: &Ctx, a: &ColdArgs, dry_run: bool) -> Result<Option<ColdRead>> {
    let asked = a.wait.is_some() || a.tier.is_some();
    let spec = match ctx.repo_spec() {
        Ok(spec) => spec,
        Err(_) if !asked => return Ok(None),
        Err(e) => return Err(e),
    };
    let archive_class = spec
        .options
        .s3
        .data_storage_class
        .is_some_and(S3StorageClass::is_archive);
    let archived_s3 = archive_class && matches!(spec.url, StorageUrl::S3 { .. });
    if !(asked || archived_s3) {
        return Ok(None);
    }
    let wait = match &a.wait {
        Some(w) => humantime::parse_duration(w).map_err(|e| {
            backup_ops::Error::usage(format!("--cold-wait `{w}`: {e}; use for example 12h"))
        })?,
        None => Duration::ZERO,
    };
    let tier = match &a.tier {
        Some(t) => t
            .parse::<RetrievalTier>()
            .map_err(backup_ops::Error::from)?,
        None => RetrievalTier::Standard,
    };
    if a.days == 0 {
        return usage("--cold-days must be at least 1");
    }
    let store = ColdStore::open(&spec.url, &spec.options).map_err(backup_ops::Error::from)?;
    Ok(Some(ColdRead {
        store: Arc::new(store),
        options: ThawOptions {
            days: a.days,
            tier,
            wait,
            poll: (wait / 10).clamp(Duration::from_secs(1), Duration::from_secs(60)),
            dry_run,
        },
    }))
}

/// The line that says where a thaw stands; `needs` completes "all N
/// packs ... are readable" (`the restore needs`).
pub(crate) fn thaw_line(cold: &ThawReport, needs: &str) -> String {
    if cold.pending > 0 {
        format!(
            "{} of {} packs ({}) must be thawed from the archive class first ({} retrieval)",
            cold.pending,
            cold.packs,
            bytes(cold.pending_bytes),
            cold.tier
        )
    } else {
        format!("all {} packs {needs} are readable", cold.packs)
    }
}

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
