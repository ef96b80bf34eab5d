//! What every command needs: the configuration, the repository, passwords,
//! progress bars, confirmations and output.

use std::io::{BufRead, IsTerminal, Write as _};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use anyhow::Result;
use backup_core::progress::Progress;
use backup_core::repo::Repository;
use backup_ops::config::{Config, Job};
use backup_ops::repository::{self, RepoSpec};
use backup_ops::secret::{ExposeSecret, SecretString};
use backup_ops::{AuditDetails, Feedback};

use crate::cli::GlobalArgs;

/// Returns a usage error (exit code 2).
pub(crate) fn usage<T>(msg: impl Into<String>) -> Result<T> {
    Err(backup_ops::Error::usage(msg.into()).into())
}

/// Shared state of one invocation.
pub(crate) struct Ctx {
    pub(crate) global: GlobalArgs,
    /// The `--config` file, when given.
    pub(crate) config: Option<Config>,
    /// The configured repository to use instead of `--repo` (set by
    /// `--job`, or by `--repo NAME` naming one).
    named_repo: Mutex<Option<String>>,
    /// The repository once opened (for the audit record).
    opened: Mutex<Option<Repository>>,
    /// Details for the audit record of this operation.
    pub(crate) audit_details: AuditDetails,
    lock_wait: Duration,
}

impl Ctx {
    /// Builds the context, reading `--config` when given.
    pub(crate) fn new(global: GlobalArgs) -> Result<Self> {
        let config = match &global.config {
            Some(path) => Some(Config::load(path).map_err(backup_ops::Error::from)?),
            None => None,
        };
        let named = match (&config, &global.repo) {
            (Some(c), Some(r)) if c.repositories.contains_key(r) => Some(r.clone()),
            (Some(c), None) if c.repositories.len() == 1 => c.repositories.keys().next().cloned(),
            _ => None,
        };
        let lock_wait = backup_core::retention::parse_duration(&global.lock_wait)
            .map_err(backup_ops::Error::from)?;
        Ok(Ctx {
            global,
            config,
            named_repo: Mutex::new(named),
            opened: Mutex::new(None),
            audit_details: AuditDetails::default(),
            lock_wait,
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
        let job = self.config()?.job(name).map_err(backup_ops::Error::from)?;
        *self
            .named_repo
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(job.repository.clone());
        self.detail("job", backup_ops::json(&job.name));
        Ok(job)
    }

    /// `--lock-wait`.
    pub(crate) fn lock_wait(&self) -> Duration {
        self.lock_wait
    }

    /// The local audit log.
    pub(crate) fn audit_log(&self) -> backup_ops::audit::AuditLog {
        backup_ops::audit::AuditLog::new(
            self.config
                .as_ref()
                .and_then(|c| c.audit.local_log.as_deref()),
        )
    }

    /// The repository this invocation opened, if any.
    /// Replaces the repository the audit record goes to (after a command
    /// changed its config, such as the first write-only key).
    pub(crate) fn set_opened(&self, repo: &Repository) {
        *self.opened.lock().unwrap_or_else(PoisonError::into_inner) = Some(repo.clone());
    }

    pub(crate) fn opened(&self) -> Option<Repository> {
        self.opened
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The configured repository `--job` or `--repo NAME` chose, if any.
    pub(crate) fn named_repo(&self) -> Option<String> {
        self.named_repo
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }

    /// The repository given by `--repo` and `--option`, or the configured
    /// one `--job` or `--repo NAME` chose (its URL, options and password
    /// source).
    pub(crate) fn repo_spec(&self) -> Result<RepoSpec> {
        let named = self
            .named_repo
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        if let (Some(name), Some(config)) = (named, &self.config) {
            return Ok(RepoSpec::configured(config, &name)?);
        }
        let Some(url) = self.global.repo.as_deref() else {
            return match &self.config {
                Some(c) => usage(format!(
                    "no repository given: use --repo NAME (the configuration has {}), --repo URL, or set BACKUP_REPOSITORY",
                    c.repositories.keys().cloned().collect::<Vec<_>>().join(", ")
                )),
                None => usage("no repository given: use --repo URL or set BACKUP_REPOSITORY"),
            };
        };
        let mut spec = RepoSpec::new(url, &self.global.options)?;
        spec.key_file.clone_from(&self.global.key_file);
        // A password given without a prompt is the spec's: the repository
        // then opens with a full key it fits even when a write-only KMS
        // key would open it with none.
        if std::env::var_os("BACKUP_PASSWORD").is_some() {
            spec.password = Some(backup_ops::secret::SecretRef::env("BACKUP_PASSWORD"));
        } else if let Some(file) = &self.global.password_file {
            spec.password = Some(backup_ops::secret::SecretRef::file(file));
        }
        Ok(spec)
    }

    /// Opens the repository (a configured one when `--job` or `--repo NAME`
    /// chose it), asking for a password only when it is encrypted.
    pub(crate) async fn open(&self) -> Result<Repository> {
        let named = self
            .named_repo
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let repo = match (named, &self.config) {
            (Some(name), Some(config)) => repository::open_configured(config, &name).await?,
            _ => repository::open(&self.repo_spec()?, || self.password(false)).await?,
        };
        *self.opened.lock().unwrap_or_else(PoisonError::into_inner) = Some(repo.clone());
        Ok(repo)
    }

    /// The password given without asking (`BACKUP_PASSWORD` or
    /// `--password-file`), if any.
    pub(crate) fn given_password(&self) -> Option<backup_ops::Result<SecretString>> {
        if let Ok(p) = std::env::var("BACKUP_PASSWORD") {
            return Some(non_empty(p, "BACKUP_PASSWORD"));
        }
        self.global.password_file.as_deref().map(read_password_file)
    }

    /// The repository password: `BACKUP_PASSWORD`, `--password-file`, or a
    /// prompt.
    pub(crate) fn password(&self, confirm: bool) -> backup_ops::Result<SecretString> {
        if let Some(given) = self.given_password() {
            return given;
        }
        let what = match &self.global.key_file {
            Some(f) => format!("password of key file {}", f.display()),
            None => "repository password".to_owned(),
        };
        prompt(
            &what,
            confirm,
            "set BACKUP_PASSWORD or BACKUP_PASSWORD_FILE, or use --password-file",
        )
    }

    /// Whether to print human output.
    pub(crate) fn human(&self) -> bool {
        !self.global.json && !self.global.quiet
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

impl Feedback for Ctx {
    fn progress(&self, phase: &'static str, noun: &'static str) -> Arc<dyn Progress> {
        crate::progress::reporter(self.human() && !self.global.no_progress, phase, noun)
    }

    /// Only when a progress bar is drawn: the total of a files backup
    /// costs a second walk of the tree, which nobody would see.
    fn wants_totals(&self) -> bool {
        self.human() && !self.global.no_progress && crate::progress::drawn()
    }

    fn confirm(&self, question: &str) -> backup_ops::Result<()> {
        confirm(question)
    }

    fn detail(&self, key: &str, value: serde_json::Value) {
        self.audit_details.insert(key, value);
    }
}

/// Reads a password file: its first line, without the line ending.
pub(crate) fn read_password_file(path: &Path) -> backup_ops::Result<SecretString> {
    let text = std::fs::read_to_string(path).map_err(|e| {
        backup_core::Error::io(format!("reading password file {}", path.display()), e)
    })?;
    let line = text.lines().next().unwrap_or("").to_owned();
    non_empty(line, &format!("password file {}", path.display()))
}

pub(crate) fn non_empty(p: String, what: &str) -> backup_ops::Result<SecretString> {
    if p.is_empty() {
        return Err(backup_ops::Error::usage(format!("{what} is empty")));
    }
    Ok(SecretString::from(p))
}

/// Asks on the terminal; without one, says how to give the password
/// (`how`: the variables and options this password is read from).
pub(crate) fn prompt(what: &str, confirm: bool, how: &str) -> backup_ops::Result<SecretString> {
    if !std::io::stdin().is_terminal() {
        return Err(backup_ops::Error::usage(format!("no {what} given: {how}")));
    }
    let read = |q: String| {
        rpassword::prompt_password(q)
            .map_err(|e| backup_ops::Error::from(backup_core::Error::io("reading the password", e)))
    };
    let p = read(format!("Enter {what}: "))?;
    if confirm && read(format!("Enter {what} again: "))? != p {
        return Err(backup_ops::Error::usage("the passwords do not match"));
    }
    non_empty(p, what)
}

/// A new password: --new-password-file, BACKUP_NEW_PASSWORD, or a prompt.
pub(crate) fn new_password(file: Option<&Path>) -> backup_ops::Result<SecretString> {
    if let Some(path) = file {
        return read_password_file(path);
    }
    if let Ok(p) = std::env::var("BACKUP_NEW_PASSWORD") {
        return non_empty(p, "BACKUP_NEW_PASSWORD");
    }
    prompt(
        "new password",
        true,
        "set BACKUP_NEW_PASSWORD or use --new-password-file",
    )
}

/// The bytes of a password, for the core's key functions.
pub(crate) fn bytes(p: &SecretString) -> &[u8] {
    p.expose_secret().as_bytes()
}

/// Asks for confirmation on a terminal; refuses without one.
pub(crate) fn confirm(question: &str) -> backup_ops::Result<()> {
    let io = |e| backup_ops::Error::from(backup_core::Error::io("asking for confirmation", e));
    if !std::io::stdin().is_terminal() {
        return Err(backup_ops::Error::usage(
            "a destructive restore needs confirmation: add --yes when not on a terminal",
        ));
    }
    let mut err = std::io::stderr();
    write!(err, "{question} [y/N] ").map_err(io)?;
    err.flush().map_err(io)?;
    let mut line = String::new();
    std::io::stdin().lock().read_line(&mut line).map_err(io)?;
    if matches!(line.trim(), "y" | "Y" | "yes" | "YES") {
        Ok(())
    } else {
        Err(backup_ops::Error::usage(
            "restore cancelled; nothing was changed",
        ))
    }
}

impl Ctx {
    /// Notes an audit detail.
    pub(crate) fn detail(&self, key: &str, value: serde_json::Value) {
        self.audit_details.insert(key, value);
    }
}
