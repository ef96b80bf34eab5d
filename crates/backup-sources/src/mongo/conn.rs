//! Connecting to MongoDB and turning driver errors into clear messages.

use std::time::Duration;

use backup_core::redact::redact_url;
use backup_core::{Error, Result};
use mongodb::bson::{doc, Document};
use mongodb::error::ErrorKind;
use mongodb::options::ClientOptions;
use mongodb::Client;

/// Which end of the operation a connection serves (errors of a source and
/// of a target are different variants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Side {
    Source,
    Target,
}

impl Side {
    /// An error whose message explains the driver's error `e`, kept as its
    /// source with the verdict of [`retryable`].
    fn explained(self, msg: String, e: mongodb::error::Error) -> Error {
        let again = retryable(&e);
        match self {
            Side::Source => Error::source_explained(msg, e, again),
            Side::Target => Error::target_explained(msg, e, again),
        }
    }
}

/// Server error codes that pass: a host or the network unreachable or
/// slow (6, 7, 89, 9001), a time limit (262), a server shutting down or
/// stepping down (91, 189, 11600, 11602), no primary at the moment (10107,
/// 13435, 13436), a write conflict (112).
const PASSING_CODES: &[i32] = &[
    6, 7, 89, 91, 112, 189, 262, 9001, 10107, 11600, 11602, 13435, 13436,
];

/// Whether running the operation again may get past `e`: the driver's
/// labels say so, the network failed, no server answered in time, or the
/// server answered with a code that passes ([`PASSING_CODES`]).
pub(crate) fn retryable(e: &mongodb::error::Error) -> bool {
    if e.contains_label("RetryableWriteError") || e.contains_label("TransientTransactionError") {
        return true;
    }
    match e.kind.as_ref() {
        ErrorKind::Io(_)
        | ErrorKind::ConnectionPoolCleared { .. }
        | ErrorKind::ServerSelection { .. } => true,
        ErrorKind::Command(c) => PASSING_CODES.contains(&c.code),
        _ => false,
    }
}

/// A parsed URL and a client built from it.
#[derive(Clone)]
pub(crate) struct Conn {
    pub(crate) client: Client,
    /// The URL with the password removed.
    pub(crate) redacted: String,
    /// The database the URL names, if any.
    pub(crate) database: Option<String>,
    pub(crate) side: Side,
    selection_timeout: Duration,
}

impl std::fmt::Debug for Conn {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Conn")
            .field("url", &self.redacted)
            .finish_non_exhaustive()
    }
}

/// What `hello` reports.
#[derive(Debug, Clone)]
pub(crate) struct Hello {
    pub(crate) set_name: Option<String>,
    pub(crate) mongos: bool,
    pub(crate) max_bson_size: usize,
    pub(crate) max_message_size: usize,
    pub(crate) max_batch: usize,
    /// `lastWrite.opTime.ts` of a replica set member: the newest oplog
    /// entry it has written.
    pub(crate) last_write: Option<mongodb::bson::Timestamp>,
    /// `lastWrite.lastWriteDate`: the wall time of that entry.
    pub(crate) last_write_date: Option<mongodb::bson::DateTime>,
}

impl Conn {
    /// Parses `url` and builds a client (connections are made lazily).
    pub(crate) async fn new(url: &str, side: Side) -> Result<Self> {
        let redacted = redact_url(url);
        let mut opts = ClientOptions::parse(url).await.map_err(|e| {
            Error::Config(format!(
                "`{redacted}` is not a valid MongoDB URL: {}",
                e.kind
            ))
        })?;
        if opts.app_name.is_none() {
            opts.app_name = Some("backup".to_owned());
        }
        let database = opts.default_database.clone().filter(|d| !d.is_empty());
        let selection_timeout = opts
            .server_selection_timeout
            .unwrap_or(Duration::from_secs(30));
        let client = Client::with_options(opts)
            .map_err(|e| Error::Config(format!("`{redacted}`: {}", e.kind)))?;
        Ok(Conn {
            client,
            redacted,
            database,
            side,
            selection_timeout,
        })
    }

    /// Turns a driver error into an error naming what was being done.
    pub(crate) fn error(&self, action: &str, e: mongodb::error::Error) -> Error {
        let who = match self.side {
            Side::Source => "source",
            Side::Target => "restore target",
        };
        match e.kind.as_ref() {
            ErrorKind::Authentication { message, .. } => Error::PermissionDenied(format!(
                "MongoDB {who} {}: authentication failed while {action}: {message}; check the user, password and authSource in the URL",
                self.redacted
            )),
            ErrorKind::ServerSelection { message, .. } => {
                let wanted = match self.side {
                    Side::Source => "a server matching the read preference",
                    Side::Target => "a writable primary",
                };
                let msg = format!(
                    "MongoDB {who} {}: no server answered within {:.1} s (serverSelectionTimeoutMS) while {action}; waited for {wanted}: {message}; check the host, port, replicaSet and TLS options and that the server is running",
                    self.redacted,
                    self.selection_timeout.as_secs_f64()
                );
                self.side.explained(msg, e)
            }
            ErrorKind::Command(c) if c.code == 13 || c.code == 18 => Error::PermissionDenied(format!(
                "MongoDB {who} {}: not authorised while {action}: {}",
                self.redacted, c.message
            )),
            _ => {
                let msg = format!("MongoDB {who} {}: {action}: {e}", self.redacted);
                self.side.explained(msg, e)
            }
        }
    }

    /// Runs `hello` on the admin database.
    pub(crate) async fn hello(&self) -> Result<Hello> {
        let d = self
            .client
            .database("admin")
            .run_command(doc! {"hello": 1})
            .await
            .map_err(|e| self.error("connecting", e))?;
        let num = |k: &str, default: usize| -> usize {
            match d.get(k) {
                Some(mongodb::bson::Bson::Int32(n)) => usize::try_from(*n).unwrap_or(default),
                Some(mongodb::bson::Bson::Int64(n)) => usize::try_from(*n).unwrap_or(default),
                Some(mongodb::bson::Bson::Double(n)) => *n as usize,
                _ => default,
            }
        };
        Ok(Hello {
            set_name: d.get_str("setName").ok().map(str::to_owned),
            mongos: d.get_str("msg").ok() == Some("isdbgrid"),
            max_bson_size: num("maxBsonObjectSize", 16 * 1024 * 1024),
            max_message_size: num("maxMessageSizeBytes", 48_000_000),
            max_batch: num("maxWriteBatchSize", 100_000),
            last_write: d
                .get_document("lastWrite")
                .and_then(|w| w.get_document("opTime"))
                .and_then(|o| o.get_timestamp("ts"))
                .ok(),
            last_write_date: d
                .get_document("lastWrite")
                .and_then(|w| w.get_datetime("lastWriteDate"))
                .ok()
                .copied(),
        })
    }

    /// The server's version (`buildInfo`).
    pub(crate) async fn version(&self) -> Result<String> {
        let d = self
            .client
            .database("admin")
            .run_command(doc! {"buildInfo": 1})
            .await
            .map_err(|e| self.error("reading the server version", e))?;
        Ok(d.get_str("version").unwrap_or("unknown").to_owned())
    }

    /// Runs a command on `db`.
    pub(crate) async fn command(&self, db: &str, cmd: Document, action: &str) -> Result<Document> {
        self.client
            .database(db)
            .run_command(cmd)
            .await
            .map_err(|e| self.error(action, e))
    }

    /// Runs a cursor command on `db` and collects every document.
    pub(crate) async fn cursor_all(
        &self,
        db: &str,
        cmd: Document,
        action: &str,
    ) -> Result<Vec<Document>> {
        use futures::TryStreamExt;
        let cursor = self
            .client
            .database(db)
            .run_cursor_command(cmd)
            .await
            .map_err(|e| self.error(action, e))?;
        cursor
            .try_collect()
            .await
            .map_err(|e| self.error(action, e))
    }

    /// The `listCollections` entries of `db`.
    pub(crate) async fn list_collections(&self, db: &str) -> Result<Vec<Document>> {
        self.cursor_all(
            db,
            doc! {"listCollections": 1},
            &format!("listing the collections of {db}"),
        )
        .await
    }

    /// The `listIndexes` specs of `db.coll`.
    pub(crate) async fn list_indexes(&self, db: &str, coll: &str) -> Result<Vec<Document>> {
        self.cursor_all(
            db,
            doc! {"listIndexes": coll},
            &format!("listing the indexes of {db}.{coll}"),
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn driver_errors_are_kept_and_say_whether_a_retry_can_help() {
        // Nothing listens: no server is selected in time, which may pass.
        let port = backup_testkit::free_port();
        let url = format!(
            "mongodb://127.0.0.1:{port}/?serverSelectionTimeoutMS=300&directConnection=true"
        );
        let conn = Conn::new(&url, Side::Source).await.unwrap();
        let e = conn.hello().await.unwrap_err();
        assert!(e.is_retryable(), "{e}");
        assert!(matches!(e, Error::Source { .. }), "{e:?}");
        let cause = std::error::Error::source(&e).expect("the driver error is kept");
        assert!(
            cause.downcast_ref::<mongodb::error::Error>().is_some(),
            "{cause:?}"
        );
        // The driver's other verdicts.
        let io = mongodb::error::Error::from(std::io::ErrorKind::ConnectionReset);
        assert!(retryable(&io));
        assert!(!retryable(&mongodb::error::Error::custom(
            "not a network error"
        )));
    }
}
