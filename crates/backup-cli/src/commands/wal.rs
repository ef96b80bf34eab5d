//! `backup wal receive | push | fetch`.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use backup_ops::wal::{self, ReceiveOptions};

use crate::cli::WalCommand;
use crate::context::Ctx;

/// Starts this command again with `--ahead`, detached: it fetches the
/// next segments while the server replays the one just written, and
/// outlives this process (the server waits only for this one).
fn start_ahead() {
    let Ok(exe) = std::env::current_exe() else {
        return;
    };
    let mut cmd = std::process::Command::new(exe);
    cmd.args(std::env::args_os().skip(1))
        .arg("--ahead")
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    std::os::unix::process::CommandExt::process_group(&mut cmd, 0);
    if let Err(e) = cmd.spawn() {
        tracing::warn!(error = %e, "Could not start fetching WAL ahead.");
    }
}

/// The fast path of `restore_command`, run before anything else is set up
/// (no async runtime, no configuration, no repository, no key): when the
/// segment asked for was fetched ahead, or the background process is
/// assembling it now, it is moved into place and the command is done.
/// `None` sends everything else down the ordinary path. Recovery waits for
/// each `restore_command`, so its cost is paid once a segment.
pub(crate) fn fetch_prefetched(command: &crate::cli::Command) -> Option<u8> {
    let crate::cli::Command::Wal(WalCommand::Fetch {
        name,
        dest,
        segment_size,
        prefetch,
        ahead: false,
        ..
    }) = command
    else {
        return None;
    };
    if *prefetch == 0 || !wal::take_ready(name, dest, *segment_size) {
        return None;
    }
    if wal::should_fetch_ahead(*prefetch, dest) {
        start_ahead();
    }
    Some(0)
}

pub(crate) async fn run(ctx: &Ctx, c: WalCommand) -> Result<u8> {
    match c {
        WalCommand::Receive {
            source,
            slot,
            flush_interval,
        } => {
            let flush = humantime::parse_duration(&flush_interval)
                .with_context(|| format!("--flush-interval `{flush_interval}`"))?;
            let repo = ctx.open().await?;
            let stop = super::pitr::stop_on_signals();
            let printer = Arc::new(super::pitr::Printer::new(wal::WAL_KIND, ctx));
            let opts = ReceiveOptions {
                slot,
                flush_interval: flush,
                lock_wait: ctx.lock_wait().max(std::time::Duration::from_secs(3600)),
                ..ReceiveOptions::default()
            };
            let summary = wal::receive(&repo, &source, opts, stop, printer).await?;
            if ctx.global.json {
                ctx.print_json(&serde_json::json!({ "event": "stopped", "summary": summary }))?;
            } else {
                ctx.say(format!(
                    "stopped: {} pieces, {} of WAL stored{}",
                    summary.pieces,
                    super::bytes(summary.bytes),
                    summary
                        .next
                        .map(|l| format!(", up to {l}"))
                        .unwrap_or_default()
                ))?;
            }
            Ok(0)
        }
        WalCommand::Push { path, cluster } => {
            let cluster = cluster.map_or_else(|| wal::cluster_of(Path::new(".")), Ok)?;
            let repo = ctx.open().await?;
            let name = wal::push(&repo, &cluster, &path).await?;
            if ctx.global.json {
                ctx.print_json(&serde_json::json!({ "stored": name.map(|n| n.file_name()) }))?;
            }
            Ok(0)
        }
        WalCommand::Fetch {
            name,
            dest,
            cluster,
            segment_size,
            prefetch,
            ahead,
        } => {
            let here = || wal::cluster_of(Path::new("."));
            let cluster = || cluster.clone().map_or_else(here, Ok);
            if ahead {
                // The background half: fill the prefetch directory, one
                // such process at a time.
                if let Some(_run) = wal::PrefetchRun::start(&dest) {
                    let repo = ctx.open().await?;
                    wal::fetch_ahead(&repo, &cluster()?, &name, &dest, segment_size, prefetch)
                        .await?;
                }
                return Ok(0);
            }
            // The fast path (`fetch_prefetched`) found nothing ready.
            if !wal::take_prefetched(&name, &dest)? {
                let repo = (ctx.open().await)
                    .inspect_err(|e| wal::note_fetch_failed(&name, &dest, &format!("{e:#}")))?;
                if !wal::fetch_for_recovery(&repo, &cluster()?, &name, &dest, segment_size).await? {
                    if !ctx.global.quiet {
                        note!("backup: {name} is not in the repository");
                    }
                    return Ok(1);
                }
            }
            if wal::should_fetch_ahead(prefetch, &dest) {
                start_ahead();
            }
            Ok(0)
        }
        WalCommand::RecoveryEnd {
            remove_key,
            data_dir,
        } => {
            let ended = wal::end_recovery(&data_dir, remove_key.as_deref())?;
            if ctx.global.json {
                ctx.print_json(&ended)?;
            } else {
                if let Some(k) = &ended.key_file {
                    ctx.say(format!("removed the key file {}", k.display()))?;
                }
                if !ended.settings.is_empty() {
                    ctx.say(format!(
                        "removed the recovery settings from postgresql.auto.conf: {}",
                        ended.settings.join(", ")
                    ))?;
                }
            }
            Ok(0)
        }
    }
}
