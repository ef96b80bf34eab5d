//! The error type of the core crate.

use std::fmt;

use crate::sink::FileKind;

/// A specialised `Result` for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Errors returned by the repository, the pipeline and storage backends.
///
/// Variants are *semantic*: callers match on them to decide what to do
/// (retry, report damage, ask for another password) rather than on messages.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An object, snapshot or key that was asked for does not exist.
    #[error("{what} not found")]
    NotFound {
        /// What was looked for, for example `snapshot 1a2b3c4d`.
        what: String,
    },
    /// A create-only write found the object already present.
    #[error("{kind} {name} already exists")]
    AlreadyExists {
        /// The kind of file.
        kind: FileKind,
        /// Its name.
        name: String,
    },
    /// A conditional operation failed because of a concurrent change.
    #[error("precondition failed: {0}")]
    Precondition(String),
    /// The backend refused access.
    #[error("permission denied: {0}")]
    PermissionDenied(String),
    /// A transient failure that may succeed on retry (timeouts, throttling, 5xx).
    #[error("temporary failure in {backend}: {message}")]
    Transient {
        /// The backend or component that failed.
        backend: &'static str,
        /// What happened.
        message: String,
    },
    /// Stored data failed an integrity check: a hash, an authentication tag,
    /// a length or a structure was wrong.
    #[error("repository damage: {kind} {id}: {reason}")]
    Corrupt {
        /// The kind of object that is damaged.
        kind: FileKind,
        /// The name of the damaged object (file name, or `pack/blob`).
        id: String,
        /// What check failed.
        reason: String,
    },
    /// No key of the repository opens with the given password.
    #[error("wrong password: no key in the repository matches it")]
    WrongPassword,
    /// The repository was written by a newer version of the format.
    #[error(
        "repository format version {found} is newer than the versions this program supports (up to {supported}); upgrade `backup`"
    )]
    UnsupportedVersion {
        /// The version found in the repository.
        found: u32,
        /// The highest version this build reads.
        supported: u32,
    },
    /// There is no repository at the given location.
    #[error("no repository found at {location}: run `backup init` first")]
    NoRepository {
        /// The repository location (redacted URL).
        location: String,
    },
    /// Invalid configuration or arguments.
    #[error("invalid configuration: {0}")]
    Config(String),
    /// The repository is locked by another process.
    #[error("repository is locked: {0}")]
    Locked(String),
    /// The operation was cancelled.
    #[error("operation cancelled")]
    Cancelled,
    /// A source (the system being backed up) failed.
    #[error("source failed: {0}")]
    Source(String),
    /// A restore target failed or refused the restore.
    #[error("restore target: {0}")]
    Target(String),
    /// A local I/O error with the path or action it concerned.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, for example `reading /etc/passwd`.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// Any other error from a storage backend or driver.
    #[error("{backend}: {source}")]
    Generic {
        /// The backend or component.
        backend: &'static str,
        /// The underlying error.
        #[source]
        source: Box<dyn std::error::Error + Send + Sync>,
    },
}

impl Error {
    /// Whether retrying the same operation may succeed.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transient { .. } => true,
            Error::Io { source, .. } => matches!(
                source.kind(),
                std::io::ErrorKind::Interrupted
                    | std::io::ErrorKind::TimedOut
                    | std::io::ErrorKind::ConnectionReset
                    | std::io::ErrorKind::ConnectionAborted
            ),
            _ => false,
        }
    }

    /// Whether this error reports damaged repository data.
    pub fn is_corruption(&self) -> bool {
        matches!(self, Error::Corrupt { .. })
    }

    /// Builds an [`Error::Io`] with context.
    pub fn io(context: impl fmt::Display, source: std::io::Error) -> Self {
        Error::Io {
            context: context.to_string(),
            source,
        }
    }

    /// Builds an [`Error::Corrupt`].
    pub fn corrupt(kind: FileKind, id: impl fmt::Display, reason: impl fmt::Display) -> Self {
        Error::Corrupt {
            kind,
            id: id.to_string(),
            reason: reason.to_string(),
        }
    }

    /// Builds an [`Error::NotFound`].
    pub fn not_found(what: impl fmt::Display) -> Self {
        Error::NotFound {
            what: what.to_string(),
        }
    }
}
