//! The errors of a replication connection explained: a refused login
//! (for a base backup or for streaming WAL), a temporary replication slot
//! the server would not create, and the server's errors during a base
//! backup.

use backup_core::Error;

use crate::postgres::wire::WireError;

/// What a replication connection is for, in messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    /// A base backup (`BASE_BACKUP`).
    BaseBackup,
    /// Streaming WAL (`backup wal receive`, backupd's receiver).
    StreamWal,
}

impl Purpose {
    fn noun(self) -> &'static str {
        match self {
            Purpose::BaseBackup => "a base backup",
            Purpose::StreamWal => "streaming WAL",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Purpose::BaseBackup => "start a base backup",
            Purpose::StreamWal => "stream WAL from a replication slot",
        }
    }
}

/// Why a replication slot could not be created, and what to do, for the
/// warning of a backup that goes on without one (`code` and `message` of
/// the server's error).
pub(crate) fn slot_refused(code: &str, message: &str, user: &str) -> String {
    let what = match code {
        "53400" => "free a slot or raise max_replication_slots",
        "42501" => "the role needs the REPLICATION attribute (ALTER ROLE ... REPLICATION) or superuser to create one",
        "55000" => "set wal_level = replica (or logical) and max_replication_slots above 0, then restart the server",
        _ => "see the server's message",
    };
    format!(
        "Could not create a temporary replication slot as `{user}` ({message}): WAL the base backup needs is not held back for it; {what}."
    )
}

/// An error of the replication connection's login, explained.
pub(crate) fn connect_error(e: &WireError, user: &str, purpose: Purpose) -> Error {
    let WireError::Db { code, message, .. } = e else {
        return Error::source_with(
            format!("connecting to the server for {}", purpose.noun()),
            clone_wire(e),
            true,
        );
    };
    let explained = match code.as_str() {
        "28000" if message.contains("replication") => {
            let host = quoted_after(message, "host ").unwrap_or("ADDRESS".to_owned());
            Some(format!(
                "the server refuses replication connections from this host ({message}): add a line such as `host replication {user} {host}/32 scram-sha-256` to pg_hba.conf and reload the server"
            ))
        }
        "42501" => Some(format!(
            "the role `{user}` may not {} ({message}): grant it the REPLICATION attribute (ALTER ROLE \"{user}\" REPLICATION) or connect as a superuser",
            purpose.verb()
        )),
        "53300" if message.contains("max_wal_senders") => Some(if message.contains("currently 0") {
            format!("the server accepts no replication connections ({message}): set wal_level = replica and max_wal_senders above 0, and restart it")
        } else {
            format!("every WAL sender of the server is in use ({message}): raise max_wal_senders (a restart is needed) or wait for another backup or standby to disconnect")
        }),
        "28P01" => Some(format!(
            "the server refused the password of `{user}` ({message})"
        )),
        _ => None,
    };
    match explained {
        Some(m) if code == "28P01" || code == "42501" => Error::PermissionDenied(m),
        Some(m) => Error::source_explained(m, clone_wire(e), e.retryable() && code != "28000"),
        None => Error::source_with(
            format!("connecting to the server for {}", purpose.noun()),
            clone_wire(e),
            e.retryable(),
        ),
    }
}

/// The text in double quotes after `key` in a server message.
fn quoted_after(message: &str, key: &str) -> Option<String> {
    let rest = &message[message.find(key)? + key.len()..];
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_owned())
}

pub(crate) fn clone_wire(e: &WireError) -> WireError {
    match e {
        WireError::Db {
            code,
            message,
            detail,
            hint,
        } => WireError::Db {
            code: code.clone(),
            message: message.clone(),
            detail: detail.clone(),
            hint: hint.clone(),
        },
        WireError::Io(m) => WireError::Io(m.clone()),
    }
}

/// An error of the server during the base backup, explained.
pub(super) fn backup_error(e: &WireError, what: &str) -> Error {
    if let WireError::Db { code, message, .. } = e {
        let explained = match code.as_str() {
            "55000" if message.contains("WAL level") => Some(format!(
                "the server cannot take an online base backup ({message}): set wal_level = replica (or logical) and restart it"
            )),
            "58P01" | "58P02" if message.contains("WAL segment") => Some(format!(
                "the server removed WAL the base backup needs before it was sent ({message}): raise wal_keep_size or max_slot_wal_keep_size, or allow the backup a replication slot (max_replication_slots)"
            )),
            "42501" => Some(format!("the role may not take a base backup ({message}): grant it REPLICATION")),
            _ => None,
        };
        if let Some(m) = explained {
            return Error::source_explained(m, clone_wire(e), false);
        }
    }
    Error::source_with(what, clone_wire(e), e.retryable())
}

pub(super) fn io_error(e: &std::io::Error, what: &str) -> Error {
    Error::source_with(
        format!("{what}: the connection failed"),
        std::io::Error::new(e.kind(), e.to_string()),
        true,
    )
}
