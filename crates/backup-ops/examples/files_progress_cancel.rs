//! Embedding a files backup in a program: a progress callback that sees
//! every byte the pipeline reads, and cancellation from another task (a
//! shutdown signal, a user's "stop" button). A cancelled backup writes no
//! snapshot and releases its lock; the next one starts over cleanly.
//!
//! ```text
//! BACKUP_PASSWORD=... cargo run -p backup-ops --example files_progress_cancel -- REPO DIR
//! ```

use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use backup_core::progress::Progress;
use backup_core::repo::{InitOptions, Repository};
use backup_ops::backup::{backup, open_source, BackupRequest};
use backup_ops::repository::{open, RepoSpec};
use backup_ops::Feedback;
use backup_sources::SourceSpec;
use tokio_util::sync::CancellationToken;

/// Calls a function with the bytes read so far and the expected total
/// (0 until the size scan ends).
pub struct Callback<F> {
    read: AtomicU64,
    total: AtomicU64,
    on_progress: F,
}

impl<F: Fn(u64, u64) + Send + Sync> Progress for Callback<F> {
    fn set_total(&self, bytes: u64) {
        self.total.store(bytes, Ordering::Relaxed);
    }

    fn add_bytes(&self, n: u64) {
        let read = self.read.fetch_add(n, Ordering::Relaxed) + n;
        (self.on_progress)(read, self.total.load(Ordering::Relaxed));
    }
}

/// The program's side of the operation: progress for the backup phase.
pub struct Reporter<F>(pub Arc<Callback<F>>);

impl<F: Fn(u64, u64) + Send + Sync + 'static> Feedback for Reporter<F> {
    fn progress(&self, _phase: &'static str, _noun: &'static str) -> Arc<dyn Progress> {
        Arc::clone(&self.0) as Arc<dyn Progress>
    }

    fn wants_totals(&self) -> bool {
        true
    }
}

/// How a backup run ended.
#[derive(Debug, PartialEq, Eq)]
pub enum Ended {
    /// A snapshot was written: its id.
    Snapshot(String),
    /// The token was cancelled first; nothing was written.
    Cancelled,
}

/// Backs `dir` up into `repo_url` (created when missing), calling
/// `on_progress(read, total)` as bytes are read; `cancel` stops it.
pub async fn run(
    repo_url: &str,
    password: &str,
    dir: &Path,
    on_progress: impl Fn(u64, u64) + Send + Sync + 'static,
    cancel: &CancellationToken,
) -> Result<Ended, Box<dyn std::error::Error>> {
    let spec = RepoSpec::new(repo_url, &[])?;
    if Repository::read_config(spec.sink()?.as_ref())
        .await
        .is_err()
    {
        Repository::init(
            spec.sink()?,
            Some(password.as_bytes()),
            &InitOptions::default(),
        )
        .await?;
    }
    let repo = open(&spec, || Ok(password.into())).await?;
    let source = SourceSpec::plain(dir.to_string_lossy())?;
    let feedback = Reporter(Arc::new(Callback {
        read: AtomicU64::new(0),
        total: AtomicU64::new(0),
        on_progress,
    }));
    let req = BackupRequest::default();
    let opened = open_source(&source).await?;
    match backup(&repo, opened, &source, &req, &feedback, Some(cancel)).await {
        Ok(outcome) => Ok(Ended::Snapshot(
            outcome.id.ok_or("no snapshot")?.to_string(),
        )),
        Err(backup_ops::Error::Core(backup_core::Error::Cancelled)) => Ok(Ended::Cancelled),
        Err(e) => Err(e.into()),
    }
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let [repo, dir] = args.as_slice() else {
        return Err("usage: files_progress_cancel REPO DIR".into());
    };
    let password = std::env::var("BACKUP_PASSWORD").map_err(|_| "set BACKUP_PASSWORD")?;
    // Ctrl-C cancels the backup.
    let cancel = CancellationToken::new();
    let on_signal = cancel.clone();
    tokio::spawn(async move {
        if tokio::signal::ctrl_c().await.is_ok() {
            on_signal.cancel();
        }
    });
    let ended = run(
        repo,
        &password,
        Path::new(dir),
        |read, total| eprint!("\r{read} of {total} bytes"),
        &cancel,
    )
    .await?;
    eprintln!();
    println!("{ended:?}");
    Ok(())
}
