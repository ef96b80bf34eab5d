//! The error of the operations layer and how front-ends report it.

use std::fmt;

/// A configuration problem: what and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    message: String,
}

impl ConfigError {
    /// A problem described by `message` alone.
    pub(crate) fn new(message: impl fmt::Display) -> Self {
        ConfigError {
            message: message.to_string(),
        }
    }

    /// An invalid value at `key` (a dotted path such as `jobs.db.schedule`).
    pub fn invalid(key: &str, message: impl fmt::Display) -> Self {
        ConfigError {
            message: format!("{key}: {message}"),
        }
    }

    pub(crate) fn at(mut self, file: &str, line: Option<usize>) -> Self {
        self.message = match line {
            Some(l) => format!("{file}, line {l}: {}", self.message),
            None => format!("{file}: {}", self.message),
        };
        self
    }
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for ConfigError {}

/// A specialised `Result` for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Why an operation failed.
///
/// Front-ends map it to an exit code with [`Error::exit_code`] and decide
/// about retries with [`Error::is_retryable`]; neither looks at messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The engine, a storage backend, a source or a target failed.
    #[error(transparent)]
    Core(#[from] backup_core::Error),
    /// The configuration file is invalid, or a secret cannot be read.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The request itself is wrong (a missing argument, two that
    /// contradict each other, an answer of "no" to a confirmation).
    #[error("{0}")]
    Usage(String),
    /// Another error, with advice that fits where it happened better
    /// than the general hint of its kind (a copy's destination password
    /// comes from other variables than the source's).
    #[error("{source}")]
    Hinted {
        /// What to do, for people.
        hint: String,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },
    /// Another error, with what was being done.
    #[error("{message}")]
    Context {
        /// What was being done.
        message: String,
        /// What went wrong.
        #[source]
        source: Box<Error>,
    },
}

/// Exit codes of the front-ends (DESIGN.md section 5).
pub mod exit {
    /// Success.
    pub const OK: u8 = 0;
    /// The operation failed.
    pub const FAILED: u8 = 1;
    /// Usage or configuration error.
    pub const USAGE: u8 = 2;
    /// Repository damage found.
    pub const DAMAGE: u8 = 3;
    /// A snapshot was saved, but some entries could not be read and are
    /// missing from it (the warnings name them). Not 3, which restic uses
    /// for this: 3 already means repository damage here.
    pub const SAVED_WITH_OMISSIONS: u8 = 4;

    /// The exit code for an engine error: [`USAGE`] for configuration
    /// errors and a repository format too new to read, [`DAMAGE`] for
    /// repository damage, [`FAILED`] otherwise.
    pub fn of_core(e: &backup_core::Error) -> u8 {
        match e {
            backup_core::Error::Config(_) | backup_core::Error::UnsupportedVersion { .. } => USAGE,
            backup_core::Error::Corrupt { .. } => DAMAGE,
            _ => FAILED,
        }
    }
}

impl Error {
    /// A usage error.
    pub fn usage(message: impl fmt::Display) -> Self {
        Error::Usage(message.to_string())
    }

    /// This error, with what was being done.
    #[must_use]
    pub fn context(self, message: impl fmt::Display) -> Self {
        Error::Context {
            message: message.to_string(),
            source: Box::new(self),
        }
    }

    /// This error, with advice that replaces the general hint of its kind.
    #[must_use]
    pub fn with_hint(self, hint: impl Into<String>) -> Self {
        Error::Hinted {
            hint: hint.into(),
            source: Box::new(self),
        }
    }

    /// The innermost error under the contexts.
    pub fn root(&self) -> &Error {
        match self {
            Error::Context { source, .. } | Error::Hinted { source, .. } => source.root(),
            other => other,
        }
    }

    /// The engine's error, when that is what failed.
    pub fn core(&self) -> Option<&backup_core::Error> {
        match self.root() {
            Error::Core(e) => Some(e),
            _ => None,
        }
    }

    /// The exit code for this error: [`exit::USAGE`] for usage and
    /// configuration errors (and a repository format too new to read),
    /// [`exit::DAMAGE`] for repository damage, [`exit::FAILED`] otherwise.
    pub fn exit_code(&self) -> u8 {
        match self.root() {
            Error::Usage(_) | Error::Config(_) => exit::USAGE,
            Error::Core(e) => exit::of_core(e),
            Error::Context { .. } | Error::Hinted { .. } => exit::FAILED,
        }
    }

    /// Whether running the operation again may succeed
    /// ([`backup_core::Error::is_retryable`]; usage and configuration
    /// errors never are).
    pub fn is_retryable(&self) -> bool {
        self.core().is_some_and(backup_core::Error::is_retryable)
    }

    /// What to do about common failures, for people.
    pub fn hint(&self) -> Option<String> {
        let mut e = self;
        loop {
            match e {
                Error::Hinted { hint, .. } => return Some(hint.clone()),
                Error::Context { source, .. } => e = source,
                _ => break,
            }
        }
        let hint = match self.core()? {
            backup_core::Error::WrongPassword => {
                "check BACKUP_PASSWORD / --password-file; `backup key list` shows the keys once you are in"
            }
            backup_core::Error::Corrupt { .. } => {
                "run `backup verify --read-data` to find every damaged snapshot"
            }
            backup_core::Error::Locked(_) => {
                "wait for the other operation to finish; a lock whose holder died is ignored at once on its own host and elsewhere once its lease ends (5 minutes); `backup unlock` removes such locks"
            }
            backup_core::Error::NoRepository { .. } => {
                "create it with `backup init` (a repository of a configuration file: `backup --config FILE --repo NAME init`)"
            }
            _ => return None,
        };
        Some(hint.to_owned())
    }
}

/// Adds what was being done to an error.
pub trait ResultExt<T> {
    /// Wraps the error with `message`.
    ///
    /// # Errors
    ///
    /// The original error, in an [`Error::Context`].
    fn context(self, message: impl fmt::Display) -> Result<T>;

    /// Wraps the error with a message computed only on failure.
    ///
    /// # Errors
    ///
    /// The original error, in an [`Error::Context`].
    fn with_context<M: fmt::Display>(self, message: impl FnOnce() -> M) -> Result<T>;
}

impl<T, E: Into<Error>> ResultExt<T> for std::result::Result<T, E> {
    fn context(self, message: impl fmt::Display) -> Result<T> {
        self.map_err(|e| e.into().context(message))
    }

    fn with_context<M: fmt::Display>(self, message: impl FnOnce() -> M) -> Result<T> {
        self.map_err(|e| e.into().context(message()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exit_codes_and_retries_look_through_contexts() {
        let damaged = Error::from(backup_core::Error::corrupt(
            backup_core::FileKind::Pack,
            "ab",
            "bad tag",
        ))
        .context("restoring snapshot 1234");
        assert_eq!(damaged.exit_code(), exit::DAMAGE);
        assert!(damaged.hint().is_some());
        assert_eq!(Error::usage("give --to").exit_code(), exit::USAGE);
        assert_eq!(
            Error::from(backup_core::Error::Config("x".into())).exit_code(),
            exit::USAGE
        );
        let locked = Error::from(backup_core::Error::Locked("prune".into())).context("backup");
        assert!(locked.is_retryable());
        assert_eq!(locked.exit_code(), exit::FAILED);
        assert!(!Error::usage("x").is_retryable());
        assert_eq!(
            backup_core::error::report(&damaged),
            "restoring snapshot 1234: repository damage: pack ab: bad tag"
        );
    }
}
