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
use backup_daemon::config::{Config, Job};
use std::sync::{Mutex, MutexGuard, PoisonError};

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

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
    /// The `--config` file, when given.
    pub(crate) config: Option<Config>,
    /// The configured repository to use instead of `--repo` (set by
    /// `--job`, or by `--repo NAME` naming one).
    pub(crate) named_repo: Mutex<Option<String>>,
    /// The repository once opened (for the audit record).
    pub(crate) opened: Mutex<Option<Repository>>,
    /// Details for the audit record of this operation.
    pub(crate) audit_details: Mutex<serde_json::Map<String, serde_json::Value>>,
}

impl Ctx {
    /// Builds the context, reading `--config` when given.
    pub(crate) fn new(global: GlobalArgs) -> Result<Self> {
        let config = match &global.config {
            Some(path) => Some(Config::load(path).map_err(|e| UsageError(e.to_string()))?),
            None => None,
        };
        let named = match (&config, &global.repo) {
            (Some(c), Some(r)) if c.repositories.contains_key(r) => Some(r.clone()),
            (Some(c), None) if c.repositories.len() == 1 => c.repositories.keys().next().cloned(),
            _ => None,
        };
        Ok(Ctx {
            global,
            config,
            named_repo: Mutex::new(named),
            opened: Mutex::new(None),
            audit_details: Mutex::new(serde_json::Map::new()),
        })
    }

    /// The configuration; a usage error without `--config`.
    pub(crate) fn config(&self) -> Result<&Config> {
        match &self.config {
            Some(c) => Ok(c),
            None => {
                usage("this needs a configuration file: use --config FILE or set BACKUP_CONFIG")
            }
        }
    }

    /// The job `name` of the configuration; its repository becomes the one
    /// this invocation uses.
    pub(crate) fn job(&self, name: &str) -> Result<Job> {
        let job = self
            .config()?
            .job(name)
            .map_err(|e| UsageError(e.to_string()))?;
        *lock(&self.named_repo) = Some(job.repository.clone());
        Ok(job)
    }

    /// Adds a detail to this operation's audit record.
    pub(crate) fn audit_detail(&self, key: &str, value: impl serde::Serialize) {
        if let Ok(v) = serde_json::to_value(value) {
            lock(&self.audit_details).insert(key.to_owned(), v);
        }
    }

    /// The local audit log.
    pub(crate) fn audit_log(&self) -> Option<std::path::PathBuf> {
        self.config
            .as_ref()
            .and_then(|c| c.audit.local_log.clone())
            .or_else(backup_daemon::audit::default_local_log)
    }

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
        let repo = self.open_inner().await?;
        *lock(&self.opened) = Some(repo.clone());
        Ok(repo)
    }

    async fn open_inner(&self) -> Result<Repository> {
        let named = lock(&self.named_repo).clone();
        if let (Some(name), Some(config)) = (named, &self.config) {
            let cfg = config
                .repository(&name)
                .map_err(|e| UsageError(e.to_string()))?;
            return backup_daemon::job::open_repository(&name, cfg).await;
        }
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
