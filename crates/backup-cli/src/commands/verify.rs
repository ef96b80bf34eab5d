//! `backup verify`.

use anyhow::Result;
use backup_core::repo::Repository;
use backup_core::snapshot::SnapshotFilter;
use backup_core::target::RestoreOptions;
use backup_core::verify::{verify, VerifyOptions, VerifyReport};
use backup_sources::open_target;
use serde::Serialize;

use super::bytes;
use crate::cli::VerifyArgs;
use crate::context::{with_lock, Ctx};

/// The outcome of `--restore-test`.
#[derive(Debug, Serialize)]
struct RestoreTest {
    snapshot: String,
    target: String,
    files: u64,
    bytes: u64,
    differences: Vec<String>,
    kept: bool,
}

pub(crate) async fn run(ctx: &Ctx, a: VerifyArgs) -> Result<u8> {
    let repo = ctx.open().await?;
    let target = match &a.restore_test {
        Some(url) => Some(open_target(url).await?),
        None => None,
    };
    let work = async {
        let snapshots = match &a.snapshot {
            Some(spec) => Some(vec![
                repo.find_snapshot(spec, &SnapshotFilter::default())
                    .await?
                    .id,
            ]),
            None => None,
        };
        let opts = VerifyOptions {
            snapshots,
            read_data_percent: a.read_data,
        };
        let progress = ctx.progress("verify", "packs");
        let result = verify(repo.clone(), &opts, progress.as_ref()).await;
        progress.finish();
        let report = result?;
        let test = match &target {
            Some(t) if report.is_ok() => Some(restore_test(ctx, &repo, t.as_ref(), &a).await?),
            _ => None,
        };
        Ok((report, test))
    };
    let (report, test) = with_lock(ctx, &repo, false, "verify", work).await?;
    let test_ok = test.as_ref().is_none_or(|t| t.differences.is_empty());
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({
            "ok": report.is_ok() && test_ok,
            "report": report,
            "restore_test": test,
        }))?;
    } else {
        print_report(ctx, &report, a.read_data.is_some())?;
        if let Some(t) = &test {
            ctx.say(format!(
                "restore test: snapshot {} restored to {} and re-read: {} files, {}{}",
                &t.snapshot[..8],
                t.target,
                t.files,
                bytes(t.bytes),
                if t.kept { " (kept)" } else { " (removed)" }
            ))?;
        }
    }
    if report.is_ok() && test_ok {
        ctx.say("no problems found")?;
        return Ok(0);
    }
    for p in &report.problems {
        eprintln!("damage: {} {}: {}", p.kind, p.object, p.message);
    }
    for s in &report.damaged_snapshots {
        eprintln!("affected snapshot: {s}");
    }
    if let Some(t) = &test {
        for d in &t.differences {
            eprintln!("restore test: {d}");
        }
    }
    eprintln!(
        "error: the repository is damaged: {} problems, {} snapshots affected{}",
        report.problems.len(),
        report.damaged_snapshots.len(),
        if test_ok {
            String::new()
        } else {
            ", and the restore test found differences".to_owned()
        }
    );
    Ok(crate::exit::DAMAGE)
}

fn print_report(ctx: &Ctx, report: &VerifyReport, read_data: bool) -> Result<()> {
    ctx.say(format!(
        "checked {} snapshots, {} trees, {} blobs, {} packs indexed",
        report.snapshots_checked,
        report.trees_checked,
        report.blobs_referenced,
        report.packs_indexed
    ))?;
    if read_data {
        ctx.say(format!(
            "read {} packs ({})",
            report.packs_read,
            bytes(report.bytes_read)
        ))?;
    }
    if report.unindexed_packs > 0 {
        ctx.say(format!(
            "{} packs are not referenced by any index (left by interrupted backups; harmless)",
            report.unindexed_packs
        ))?;
    }
    Ok(())
}

/// Restores the chosen snapshot into the scratch target and compares.
async fn restore_test(
    ctx: &Ctx,
    repo: &Repository,
    target: &dyn backup_core::target::Target,
    a: &VerifyArgs,
) -> Result<RestoreTest> {
    let repo = repo.clone().load_index().await?;
    let spec = a.snapshot.as_deref().unwrap_or("latest");
    let entry = repo.find_snapshot(spec, &SnapshotFilter::default()).await?;
    let opts = RestoreOptions::default();
    target.check_options(&opts)?;
    let progress = ctx.progress("restore", "files");
    let restored = target.restore(&repo, &entry, &opts, progress.clone()).await;
    progress.finish();
    let report = restored?;
    let differences = target.check_restored(&repo, &entry).await?;
    let kept = a.keep || !differences.is_empty();
    if !kept {
        target.discard().await?;
    }
    Ok(RestoreTest {
        snapshot: entry.id.to_hex(),
        target: report.target,
        files: report.stats.files,
        bytes: report.stats.bytes,
        differences,
        kept,
    })
}
