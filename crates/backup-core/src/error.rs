//! The error type of the core crate.

use std::fmt;

use crate::file_kind::FileKind;

/// A specialised `Result` for this crate.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Any error of a driver or library, kept as the cause of one of ours.
pub type BoxError = Box<dyn std::error::Error + Send + Sync + 'static>;

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
    #[error("no repository found at {location}")]
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
    /// A source (the system being backed up) failed. The driver's error,
    /// when there is one, is the [`std::error::Error::source`]; `retryable`
    /// says whether running the operation again may succeed (a dropped
    /// connection) or not (a refused password, a missing database).
    #[error("source failed: {message}")]
    Source {
        /// What failed, including the driver's message.
        message: String,
        /// The driver's error.
        #[source]
        cause: Option<BoxError>,
        /// Whether a retry may succeed.
        retryable: bool,
    },
    /// A restore target failed or refused the restore; fields as for
    /// [`Error::Source`].
    #[error("restore target: {message}")]
    Target {
        /// What failed, including the driver's message.
        message: String,
        /// The driver's error.
        #[source]
        cause: Option<BoxError>,
        /// Whether a retry may succeed.
        retryable: bool,
    },
    /// A local I/O error with the path or action it concerned.
    #[error("{context}: {source}")]
    Io {
        /// What was being done, for example `reading /etc/passwd`.
        context: String,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The object is in an archive storage class (S3 `GLACIER` or
    /// `DEEP_ARCHIVE`) and cannot be read until a thaw (S3
    /// `RestoreObject`) has made a copy readable. Not damage, and not
    /// retryable as it stands: thawing takes minutes to days.
    #[error("{what}: the object is in an archive storage class (S3 GLACIER or DEEP_ARCHIVE) and must be thawed first; run again with --cold-wait DURATION (for example --cold-wait 12h) or --cold-tier TIER, which request the thaw")]
    Archived {
        /// What was read, and where.
        what: String,
    },
    /// A delete refused because the object is under S3 Object Lock (a
    /// retention period or a legal hold): nothing was removed or hidden.
    /// Not damage and not retryable now; a later prune or forget removes
    /// it once `until` has passed.
    #[error("{kind} {name} is locked by S3 Object Lock until {until}")]
    Retained {
        /// The kind of file.
        kind: FileKind,
        /// Its name.
        name: String,
        /// When the retention ends (`retain-until-date`), or `"a legal
        /// hold is removed"`.
        until: String,
    },
    /// Something a write-only key may not do: read, list the contents of,
    /// restore, forget, prune, repair or rewrite anything, or manage keys.
    /// The message names what was asked for; nothing was changed.
    #[error("{0} needs a full key: this repository was opened with a write-only key, which can add backups and nothing else")]
    WriteOnly(String),
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
    /// Whether retrying the same operation may succeed: the one
    /// classification every retry loop uses (the storage retry layer, the
    /// daemon's job retries).
    ///
    /// Retryable are [`Error::Transient`], a lock held by another process
    /// ([`Error::Locked`]), I/O errors of a kind that passes
    /// ([`io_is_transient`]), source and target errors their driver
    /// classified as passing, and [`Error::Generic`] errors caused by such
    /// an I/O error. Everything else (configuration, passwords, damage,
    /// missing objects, refusals) is permanent.
    pub fn is_retryable(&self) -> bool {
        match self {
            Error::Transient { .. } | Error::Locked(_) => true,
            Error::Io { source, .. } => io_is_transient(source),
            Error::Source { retryable, .. } | Error::Target { retryable, .. } => *retryable,
            Error::Generic { source, .. } => cause_is_transient(source.as_ref()),
            _ => false,
        }
    }

    /// A source failure without a driver error (a refusal, a check that
    /// failed); not retryable.
    pub fn source_failed(message: impl fmt::Display) -> Self {
        Error::Source {
            message: message.to_string(),
            cause: None,
            retryable: false,
        }
    }

    /// A source failure caused by `cause`: the message is `context: cause`,
    /// and it is retryable when the cause is a passing I/O error
    /// ([`cause_is_transient`]). Drivers that know better use
    /// [`Error::source_with`].
    pub fn source_caused(context: impl fmt::Display, cause: impl Into<BoxError>) -> Self {
        let cause = cause.into();
        let retryable = cause_is_transient(cause.as_ref());
        Self::source_with(context, cause, retryable)
    }

    /// A source failure caused by `cause`, with the driver's own verdict on
    /// whether a retry can help.
    pub fn source_with(
        context: impl fmt::Display,
        cause: impl Into<BoxError>,
        retryable: bool,
    ) -> Self {
        let cause = cause.into();
        Error::Source {
            message: format!("{context}: {cause}"),
            cause: Some(cause),
            retryable,
        }
    }

    /// A source failure whose `message` already says, in the words an
    /// operator needs, what the driver's error `cause` means (a driver's
    /// error mapped to a hint); `cause` is kept as the source for
    /// programs, [`report`] does not repeat it.
    pub fn source_explained(
        message: impl fmt::Display,
        cause: impl Into<BoxError>,
        retryable: bool,
    ) -> Self {
        Error::Source {
            message: message.to_string(),
            cause: Some(cause.into()),
            retryable,
        }
    }

    /// A target failure without a driver error; not retryable.
    pub fn target_failed(message: impl fmt::Display) -> Self {
        Error::Target {
            message: message.to_string(),
            cause: None,
            retryable: false,
        }
    }

    /// A target failure caused by `cause`; as [`Error::source_caused`].
    pub fn target_caused(context: impl fmt::Display, cause: impl Into<BoxError>) -> Self {
        let cause = cause.into();
        let retryable = cause_is_transient(cause.as_ref());
        Self::target_with(context, cause, retryable)
    }

    /// A target failure caused by `cause`, with the driver's verdict on
    /// retrying.
    pub fn target_with(
        context: impl fmt::Display,
        cause: impl Into<BoxError>,
        retryable: bool,
    ) -> Self {
        let cause = cause.into();
        Error::Target {
            message: format!("{context}: {cause}"),
            cause: Some(cause),
            retryable,
        }
    }

    /// A target failure explained in `message`; as
    /// [`Error::source_explained`].
    pub fn target_explained(
        message: impl fmt::Display,
        cause: impl Into<BoxError>,
        retryable: bool,
    ) -> Self {
        Error::Target {
            message: message.to_string(),
            cause: Some(cause.into()),
            retryable,
        }
    }

    /// A [`Error::Source`] error turned into a [`Error::Target`] one with
    /// the same message, cause and verdict (for the source code that a
    /// restore shares with a backup); other errors are returned as they
    /// are.
    #[must_use]
    pub fn into_target(self) -> Self {
        match self {
            Error::Source {
                message,
                cause,
                retryable,
            } => Error::Target {
                message,
                cause,
                retryable,
            },
            other => other,
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

/// Whether an I/O error is of a kind that may pass: interrupted, timed out,
/// or a connection refused, reset, aborted, broken or closed early.
pub fn io_is_transient(e: &std::io::Error) -> bool {
    use std::io::ErrorKind as K;
    matches!(
        e.kind(),
        K::Interrupted
            | K::TimedOut
            | K::ConnectionRefused
            | K::ConnectionReset
            | K::ConnectionAborted
            | K::NotConnected
            | K::BrokenPipe
            | K::UnexpectedEof
            | K::WouldBlock
    )
}

/// Whether an error, or any error in its chain of causes, is a passing I/O
/// error ([`io_is_transient`]) or one of ours that [`Error::is_retryable`]
/// calls retryable.
pub fn cause_is_transient(e: &(dyn std::error::Error + 'static)) -> bool {
    let mut next = Some(e);
    while let Some(e) = next {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            if io_is_transient(io) {
                return true;
            }
        }
        if let Some(ours) = e.downcast_ref::<Error>() {
            return ours.is_retryable();
        }
        next = e.source();
    }
    false
}

/// An error and its causes as one line, `outer: cause: cause`, leaving out
/// a cause whose text the line already holds (our errors write their cause
/// into their own message and also return it as their source). The chain
/// ends at a [`Error::Source`] or [`Error::Target`]: their message already
/// says what the driver's error below them means.
pub fn report(e: &(dyn std::error::Error + 'static)) -> String {
    let mut line = e.to_string();
    let mut current = e;
    while let Some(cause) = current.source() {
        if matches!(
            current.downcast_ref::<Error>(),
            Some(Error::Source { .. } | Error::Target { .. })
        ) {
            break;
        }
        let text = cause.to_string();
        if !text.is_empty() && !line.contains(&text) {
            line.push_str(": ");
            line.push_str(&text);
        }
        current = cause;
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_classification() {
        let refused = std::io::Error::from(std::io::ErrorKind::ConnectionRefused);
        assert!(Error::source_caused("connecting to db1", refused).is_retryable());
        let denied = std::io::Error::from(std::io::ErrorKind::PermissionDenied);
        assert!(!Error::source_caused("reading /etc/shadow", denied).is_retryable());
        assert!(!Error::source_failed("the server refused the password").is_retryable());
        assert!(Error::target_with("x", "driver says later", true).is_retryable());
        assert!(Error::Locked("by prune".into()).is_retryable());
        assert!(!Error::WrongPassword.is_retryable());
        assert!(!Error::corrupt(FileKind::Pack, "p", "bad tag").is_retryable());
        let wrapped = Error::Generic {
            backend: "s3",
            source: Box::new(std::io::Error::from(std::io::ErrorKind::TimedOut)),
        };
        assert!(wrapped.is_retryable());
    }

    #[test]
    fn causes_are_kept_and_reported_once() {
        let e = Error::source_caused(
            "connecting to 127.0.0.1:1",
            std::io::Error::from(std::io::ErrorKind::ConnectionRefused),
        );
        let cause = std::error::Error::source(&e).expect("the driver error is kept");
        assert!(cause.downcast_ref::<std::io::Error>().is_some());
        assert_eq!(
            report(&e),
            "source failed: connecting to 127.0.0.1:1: connection refused"
        );
        assert_eq!(
            e.into_target().to_string(),
            "restore target: connecting to 127.0.0.1:1: connection refused"
        );
        // An explained driver error is kept for programs, said once.
        let db = std::io::Error::other("db error: ERROR: relation \"t\" does not exist");
        let e = Error::target_explained(
            "restoring table t: relation \"t\" does not exist",
            db,
            false,
        );
        assert!(std::error::Error::source(&e).is_some());
        assert_eq!(
            report(&e),
            "restore target: restoring table t: relation \"t\" does not exist"
        );
        assert!(!e.is_retryable());
    }
}
