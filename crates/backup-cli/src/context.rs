//! What every command needs: the repository, passwords and output.

use std::io::{IsTerminal, Write as _};
use std::path::Path;
use std::sync::Arc;

use anyhow::{Context as _, Result};
use backup_core::config::Encryption;
use backup_core::progress::Progress;
use backup_core::repo::Repository;
use backup_core::Sink;
use backup_storage::{StorageOptions, StorageUrl};

use crate::cli::GlobalArgs;

/// A usage or configuration problem detected by the CLI itself (exit 2).
#[derive(Debug)]
pub(crate) struct UsageError(pub(crate) String);

impl std::fmt::Display for UsageError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for UsageError {}

/// Returns a usage error.
pub(crate) fn usage<T>(msg: impl Into<String>) -> Result<T> {
    Err(UsageError(msg.into()).into())
}

/// Shared state of one invocation.
pub(crate) struct Ctx {
    pub(crate) global: GlobalArgs,
}

impl Ctx {
    /// The repository URL as given.
    pub(crate) fn repo_url(&self) -> Result<StorageUrl> {
        let Some(url) = self.global.repo.as_deref() else {
            return usage("no repository given: use --repo URL or set BACKUP_REPOSITORY");
        };
        Ok(StorageUrl::parse(url)?)
    }

    /// The storage backend.
    pub(crate) fn sink(&self) -> Result<Arc<dyn Sink>> {
        let url = self.repo_url()?;
        let mut options = StorageOptions::default();
        for pair in &self.global.options {
            options.set_pair(pair)?;
        }
        Ok(backup_storage::build(&url, &options)?)
    }

    /// Opens the repository, asking for a password only when it is encrypted.
    pub(crate) async fn open(&self) -> Result<Repository> {
        let sink = self.sink()?;
        let config = Repository::read_config(sink.as_ref()).await?;
        if config.encryption == Encryption::None {
            return Ok(Repository::open(sink, None).await?);
        }
        let password = self.password(false)?;
        if let Some(path) = &self.global.key_file {
            let key = std::fs::read(path)
                .with_context(|| format!("reading key file {}", path.display()))?;
            return Ok(Repository::open_with_key_file(sink, &key, password.as_bytes()).await?);
        }
        Ok(Repository::open(sink, Some(password.as_bytes())).await?)
    }

    /// The repository password: BACKUP_PASSWORD, --password-file, or a prompt.
    pub(crate) fn password(&self, confirm: bool) -> Result<String> {
        if let Ok(p) = std::env::var("BACKUP_PASSWORD") {
            return non_empty(p, "BACKUP_PASSWORD");
        }
        if let Some(path) = &self.global.password_file {
            return read_password_file(path);
        }
        prompt("repository password", confirm)
    }

    /// Whether to print human output.
    pub(crate) fn human(&self) -> bool {
        !self.global.json && !self.global.quiet
    }

    /// A progress reporter for a phase.
    pub(crate) fn progress(&self, phase: &str, noun: &'static str) -> Arc<dyn Progress> {
        crate::progress::reporter(self.human() && !self.global.no_progress, phase, noun)
    }

    /// Prints a JSON document on stdout.
    #[allow(clippy::unused_self)] // Kept on `Ctx` so that every output goes through it.
    pub(crate) fn print_json(&self, value: &impl serde::Serialize) -> Result<()> {
        let mut out = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut out, value)?;
        writeln!(out)?;
        Ok(())
    }

    /// Prints a line for humans (not with --json or --quiet).
    pub(crate) fn say(&self, line: impl AsRef<str>) -> Result<()> {
        if self.human() {
            writeln!(std::io::stdout().lock(), "{}", line.as_ref())?;
        }
        Ok(())
    }
}

fn non_empty(p: String, what: &str) -> Result<String> {
    if p.is_empty() {
        return usage(format!("{what} is empty"));
    }
    Ok(p)
}

/// Reads a password file: its first line, without the line ending.
pub(crate) fn read_password_file(path: &Path) -> Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading password file {}", path.display()))?;
    let line = text.lines().next().unwrap_or("").to_owned();
    non_empty(line, &format!("password file {}", path.display()))
}

/// Asks on the terminal.
pub(crate) fn prompt(what: &str, confirm: bool) -> Result<String> {
    if !std::io::stdin().is_terminal() {
        return usage(format!(
            "no {what} given: set BACKUP_PASSWORD or BACKUP_PASSWORD_FILE, or use --password-file"
        ));
    }
    let p = rpassword::prompt_password(format!("Enter {what}: "))?;
    if confirm {
        let again = rpassword::prompt_password(format!("Enter {what} again: "))?;
        if again != p {
            return usage("the passwords do not match");
        }
    }
    non_empty(p, what)
}

/// A new password: --new-password-file, BACKUP_NEW_PASSWORD, or a prompt.
pub(crate) fn new_password(file: Option<&Path>) -> Result<String> {
    if let Some(path) = file {
        return read_password_file(path);
    }
    if let Ok(p) = std::env::var("BACKUP_NEW_PASSWORD") {
        return non_empty(p, "BACKUP_NEW_PASSWORD");
    }
    prompt("new password", true)
}

/// Runs `work` while holding a repository lock (waiting up to
/// `--lock-wait` for a conflicting one), and releases the lock whether the
/// work succeeds or fails.
pub(crate) async fn with_lock<T, Fut>(
    ctx: &Ctx,
    repo: &backup_core::repo::Repository,
    exclusive: bool,
    operation: &str,
    work: Fut,
) -> Result<T>
where
    Fut: std::future::Future<Output = Result<T>>,
{
    let wait = backup_core::retention::parse_duration(&ctx.global.lock_wait)?;
    let lock = repo.lock_wait(exclusive, operation, wait).await?;
    let result = work.await;
    let released = lock.release().await;
    let value = result?;
    released?;
    Ok(value)
}
