//! `backup copy`.

use anyhow::Result;
use backup_ops::copy::{copy, CopyRequest};
use backup_ops::repository::{open, RepoSpec};
use backup_ops::ResultExt;

use super::snapshot_filter;
use crate::cli::CopyArgs;
use crate::context::{non_empty, prompt, read_password_file, Ctx};

pub(crate) async fn run(ctx: &Ctx, a: CopyArgs) -> Result<u8> {
    let req = CopyRequest {
        snapshots: a.snapshots.clone(),
        filter: snapshot_filter(&a.filter)?,
        lock_wait: ctx.lock_wait(),
    };
    let src = ctx.open().await?;
    // The destination with its own password and storage options.
    let spec = RepoSpec::new(&a.to_repo, &a.to_options)?;
    let dst = open(&spec, || {
        if let Ok(p) = std::env::var("BACKUP_TO_PASSWORD") {
            return non_empty(p, "BACKUP_TO_PASSWORD");
        }
        match &a.to_password_file {
            Some(f) => read_password_file(f),
            None => prompt(
                "destination repository password",
                false,
                "set BACKUP_TO_PASSWORD or BACKUP_TO_PASSWORD_FILE, or use --to-password-file",
            ),
        }
    })
    .await
    .map_err(|e| match e.core() {
        Some(backup_core::Error::WrongPassword) => e.with_hint(
            "check the destination's password: BACKUP_TO_PASSWORD, BACKUP_TO_PASSWORD_FILE or --to-password-file",
        ),
        _ => e,
    })
    .with_context(|| format!("opening the destination {}", spec.redacted()))?;
    let say = |c: &backup_ops::copy::Copied| {
        let _ = ctx.say(format!(
            "copied snapshot {} as {}",
            c.from.short(),
            c.to.short()
        ));
    };
    let out = copy(&src, &dst, &req, ctx, &say).await?;
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({"copied": out.copied, "captures": out.captures}))?;
    } else {
        ctx.say(format!(
            "{} copied to {}",
            backup_ops::report::count(out.copied.len(), "snapshot", "snapshots"),
            spec.redacted()
        ))?;
        let c = &out.captures;
        if c.pieces + c.gaps + c.present > 0 {
            ctx.say(format!(
                "captured WAL and oplog: {} copied ({}), {} gap records, {} already there",
                backup_ops::report::count(
                    usize::try_from(c.pieces).unwrap_or(usize::MAX),
                    "piece",
                    "pieces"
                ),
                super::bytes(c.bytes),
                c.gaps,
                c.present
            ))?;
        }
    }
    Ok(0)
}
