//! `backup wal receive | push | fetch`.

use std::sync::Arc;

use anyhow::{Context as _, Result};
use backup_ops::wal::{self, ReceiveOptions, ReceiverEvent};
use tokio_util::sync::CancellationToken;

use crate::cli::WalCommand;
use crate::context::Ctx;

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
            let stop = CancellationToken::new();
            let stopper = stop.clone();
            tokio::spawn(async move {
                let mut term =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    () = async { match term.as_mut() { Some(t) => { t.recv().await; } None => std::future::pending::<()>().await } } => {}
                }
                stopper.cancel();
            });
            let json = ctx.global.json;
            let quiet = ctx.global.quiet;
            let events: wal::EventSink = Arc::new(move |e: ReceiverEvent| {
                if json {
                    let v = match &e {
                        ReceiverEvent::Streaming {
                            system_identifier,
                            timeline,
                            from,
                        } => serde_json::json!({
                            "event": "streaming", "system_identifier": system_identifier, "timeline": timeline, "from": from }),
                        ReceiverEvent::Stored {
                            timeline,
                            lsn,
                            server_lsn,
                            received,
                        } => serde_json::json!({
                            "event": "stored", "timeline": timeline, "lsn": lsn, "server_lsn": server_lsn, "received": received }),
                        ReceiverEvent::Gap { from, to, reason } => serde_json::json!({
                            "event": "gap", "from": from, "to": to, "reason": reason }),
                    };
                    println!("{v}");
                } else if !quiet {
                    match &e {
                        ReceiverEvent::Streaming { system_identifier, timeline, from } => eprintln!(
                            "streaming WAL of cluster {system_identifier}, timeline {timeline}, from {from}"
                        ),
                        ReceiverEvent::Stored { .. } => tracing::debug!(event = ?e, "Stored."),
                        ReceiverEvent::Gap { from, to, reason } => {
                            eprintln!("warning: WAL from {from} to {to} could not be captured: {reason}");
                        }
                    }
                }
            });
            let opts = ReceiveOptions {
                slot,
                flush_interval: flush,
                lock_wait: ctx.lock_wait().max(std::time::Duration::from_secs(3600)),
                ..ReceiveOptions::default()
            };
            let summary = wal::receive(&repo, &source, opts, stop, events).await?;
            if json {
                ctx.print_json(&serde_json::json!({ "event": "stopped", "summary": summary }))?;
            } else {
                ctx.say(format!(
                    "stopped: {} pieces, {} of WAL stored{}",
                    summary.pieces,
                    super::bytes(summary.bytes),
                    summary
                        .last
                        .as_ref()
                        .map(|l| format!(", up to {l}"))
                        .unwrap_or_default()
                ))?;
            }
            Ok(0)
        }
        WalCommand::Push { path, cluster } => {
            let cluster = match cluster {
                Some(c) => c,
                None => wal::cluster_of(std::path::Path::new("."))?,
            };
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
        } => {
            // A segment an earlier call fetched ahead: no repository, no key.
            if wal::take_prefetched(&name, &dest)? {
                return Ok(0);
            }
            let cluster = match cluster {
                Some(c) => c,
                None => wal::cluster_of(std::path::Path::new("."))?,
            };
            let repo = ctx.open().await?;
            match wal::fetch(&repo, &cluster, &name, &dest, segment_size, prefetch).await {
                Ok(()) => Ok(0),
                // The server asks for files that may not exist (the next
                // timeline's history, the segment after the last): a
                // plain answer, not an error report.
                Err(backup_ops::Error::Core(backup_core::Error::NotFound { .. })) => {
                    if !ctx.global.quiet {
                        eprintln!("backup: {name} is not in the repository");
                    }
                    Ok(1)
                }
                Err(e) => Err(e.into()),
            }
        }
    }
}
