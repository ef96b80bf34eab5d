//! What a restore drill needs of each kind of database besides the
//! restore itself: [`DrillSupport`], implemented once per kind module and
//! found through the registry [`support`] (kind modules never import it).
//! Through it the operations layer, which never names a kind, plans the
//! scratch copy, checks that its place is free, writes and looks for the
//! canary, runs the checks and removes the copy (also one a killed drill
//! left behind). A physical PostgreSQL copy is a data directory started
//! as a server ([`DataDirectory`], [`StartedServer`]).

#[cfg(all(feature = "files", not(feature = "postgres")))]
mod disabled;
#[cfg(feature = "mongodb")]
mod mongo;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;

#[cfg(feature = "postgres")]
pub use crate::postgres::physical::stop_leftover_server;
#[cfg(all(feature = "files", not(feature = "postgres")))]
pub use disabled::{stop_leftover_server, DataDirectory, StartedServer};
#[cfg(feature = "postgres")]
pub use postgres::{DataDirectory, StartedServer};

use backup_core::redact::redact_url;
use backup_core::snapshot::Snapshot;
use backup_core::target::RestoreOptions;
use backup_core::{Error, Result};
use chrono::{DateTime, Utc};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use std::time::Duration;

use crate::capture::Position;
use crate::Kind;

/// What drills need of one kind of database. A scratch copy is the
/// snapshot's databases, each restored into a scratch database of a
/// server ([`ScratchPlan::databases`]; Redis names them by number).
/// `server` arguments are URLs with credentials, from
/// [`DrillSupport::plan`] or a drill journal (each implementation brings
/// either to its own form). A method that talks to a server opens its
/// own connection, leaves nothing open when it returns, and never retries.
#[async_trait::async_trait]
pub trait DrillSupport: Send + Sync {
    /// The kind it serves.
    fn kind(&self) -> Kind;

    /// Starts a throwaway scratch server when the scratch location
    /// `target` asks for one (Redis: no location, or `redis-server`; by
    /// default never: `None`) and waits until it answers; the drill plans
    /// its copy on [`ThrowawayServer::url`] and stops it at the end.
    ///
    /// # Errors
    ///
    /// [`Error::Config`]: the server program is not installed, stopped or
    /// did not answer within 30 seconds (it is stopped then); I/O errors.
    async fn start_throwaway(&self, _target: Option<&str>) -> Result<Option<ThrowawayServer>> {
        Ok(None)
    }

    /// Plans the copy of `snapshot` on the server `target` (credentials
    /// included): scratch databases named with `stamp` (`<db>_drill_<stamp>`;
    /// Redis: the same numbers, or the one the URL names), with the
    /// canary's database when `canary` (the drill wrote one). Returns it
    /// with the restore options (renames, databases included) that put
    /// the snapshot there. Reads and writes nothing.
    ///
    /// # Errors
    ///
    /// [`Error::Config`]: no `target`, a URL that does not parse or names
    /// a database the copy cannot use, a snapshot with nothing to drill.
    fn plan(
        &self,
        snapshot: &Snapshot,
        target: Option<&str>,
        stamp: &str,
        canary: bool,
    ) -> Result<(ScratchPlan, RestoreOptions)>;

    /// Why the scratch `databases` of `server` cannot take a copy (they
    /// exist, or hold keys), for people; `None` when free. By default: one
    /// is among [`DrillSupport::databases`].
    ///
    /// # Errors
    ///
    /// Connection and command errors.
    async fn occupied(&self, server: &str, databases: &[String]) -> Result<Option<String>> {
        let existing = self.databases(server).await?;
        Ok(databases
            .iter()
            .find(|d| existing.contains(d))
            .map(|d| format!("database {d} exists already on {}", redact_url(server))))
    }

    /// Removes the scratch `databases` of `server`: drops them
    /// (PostgreSQL closing their connections first; MongoDB with the users
    /// and roles defined on them) or empties them (Redis). Absent ones are
    /// skipped, so removing twice is harmless.
    ///
    /// # Errors
    ///
    /// Connection and command errors.
    async fn remove(&self, server: &str, databases: &[String]) -> Result<()>;

    /// The databases of `server` (PostgreSQL: those that accept
    /// connections; MongoDB: all; Redis: those holding keys).
    ///
    /// # Errors
    ///
    /// Connection and command errors.
    async fn databases(&self, server: &str) -> Result<Vec<String>>;

    /// What `database` of `server` holds, counted, by name: documents per
    /// collection (MongoDB, `system.*` left out, sorted), keys (Redis),
    /// catalogue entries (PostgreSQL, `pg_class`). One that answers is
    /// usable.
    ///
    /// # Errors
    ///
    /// Connection and command errors.
    async fn counts(&self, server: &str, database: &str) -> Result<Vec<(String, u64)>>;

    /// Answers `probe` (one of this kind's: [`Probe::kind`]) in `database`
    /// of `server`.
    ///
    /// # Errors
    ///
    /// A probe of another kind ([`Error::Config`]), a filter that is not
    /// a JSON object; connection and command errors.
    async fn probe(&self, server: &str, database: &str, probe: &Probe) -> Result<Answer>;

    /// The name of the built-in check comparing a copy with its
    /// snapshot's manifest; `None` when a copy `replayed` to a point in
    /// time differs from the manifest by design (MongoDB: its databases
    /// must answer [`DrillSupport::counts`] instead).
    fn manifest_check(&self, replayed: bool) -> Option<&'static str>;

    /// Where the canary `id` goes on the source `url` (credentials
    /// included), and what finds it in a copy: PostgreSQL a row of
    /// `backup_drill_canary` in `database` (`None`: the URL's, else
    /// `postgres`), MongoDB a document of `backup_drill.canary`, Redis the
    /// key `backup_drill:canary:ID` in the URL's database (else 0). Writes
    /// nothing.
    ///
    /// # Errors
    ///
    /// A URL that does not parse.
    fn canary(&self, url: &str, database: Option<&str>, id: &str) -> Result<CanaryMark>;

    /// Writes `canary` to the source (PostgreSQL: created table, then a
    /// commit after it; MongoDB: majority write concern; Redis: expiring
    /// in a week; canaries older than 90 days are removed). Returns the
    /// point a restore must reach to hold it; a restore to it does.
    ///
    /// # Errors
    ///
    /// Connection and write errors (a role without the right to write, a
    /// read-only server); a server that reports no position (MongoDB not
    /// a replica set member, Redis without `master_repl_offset`).
    async fn write_canary(&self, canary: &CanaryMark) -> Result<CanaryAt>;

    /// Whether `canary` is in `database` of `server` (the scratch database
    /// the canary's was restored into).
    ///
    /// # Errors
    ///
    /// Connection and command errors.
    async fn canary_present(
        &self,
        server: &str,
        database: &str,
        canary: &CanaryMark,
    ) -> Result<bool>;
}

/// The drill support of `kind` in this build.
///
/// # Errors
///
/// [`Error::Config`] for files (not a database) and for a kind this
/// build lacks, saying which cargo feature it needs.
pub fn support(kind: Kind) -> Result<Box<dyn DrillSupport>> {
    match kind {
        #[cfg(feature = "postgres")]
        Kind::Postgres => Ok(Box::new(postgres::PostgresDrill)),
        #[cfg(feature = "mongodb")]
        Kind::Mongodb => Ok(Box::new(mongo::MongoDrill)),
        #[cfg(feature = "redis")]
        Kind::Redis => Ok(Box::new(redis::RedisDrill)),
        Kind::Files => Err(Error::Config(
            "files have no databases for a drill to check".to_owned(),
        )),
        #[allow(unreachable_patterns)] // Reached in builds without some kind.
        other => Err(Error::Config(format!(
            "{other} drills are not supported by this build of backup (it was built without the {other} cargo feature)"
        ))),
    }
}

/// A scratch copy on a database server, as [`DrillSupport::plan`] plans it.
#[derive(Debug, Clone)]
pub struct ScratchPlan {
    /// The server, credentials included, in the form the kind's other
    /// methods take.
    pub server: String,
    /// Each database of the snapshot (by its source name) with the
    /// scratch database it is restored into, in the kind's order.
    pub databases: Vec<(String, String)>,
    /// The URL the restore target is opened with.
    pub restore_url: String,
    /// The copy's URL for checks and commands, credentials included: its
    /// (first) scratch database, or the server when that says more.
    pub url: String,
    /// The databases for people when the URL does not say it all
    /// (`app as app_drill_…`, `db 0 as 3`).
    pub listing: Option<String>,
}

impl ScratchPlan {
    /// A copy of `databases` (source name, scratch name) on `server`,
    /// restored through `server`; its URL names the scratch database
    /// `url_database` when given, and its listing writes each pair as
    /// `{prefix}SOURCE as SCRATCH`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `server` is not a URL.
    pub fn renamed(
        server: String,
        databases: Vec<(String, String)>,
        url_database: Option<&str>,
        prefix: &str,
    ) -> Result<Self> {
        let url = match url_database {
            Some(db) => with_path(&server, &format!("/{db}"))?,
            None => server.clone(),
        };
        let listing: Vec<String> = databases
            .iter()
            .map(|(a, b)| format!("{prefix}{a} as {b}"))
            .collect();
        Ok(ScratchPlan {
            restore_url: server.clone(),
            server,
            databases,
            url,
            listing: Some(listing.join(", ")),
        })
    }

    /// The scratch database that `source` (a database of the snapshot,
    /// by its source name) was restored into; `None` when the snapshot
    /// has no such database. `source` `None`: the first.
    pub fn scratch_database(&self, source: Option<&str>) -> Option<&str> {
        self.databases
            .iter()
            .find(|(s, _)| source.is_none_or(|want| s == want))
            .map(|(_, d)| d.as_str())
    }

    /// The scratch databases, each once.
    pub fn scratch_databases(&self) -> Vec<String> {
        let mut seen = std::collections::HashSet::new();
        let new = self.databases.iter().filter(|(_, d)| seen.insert(d));
        new.map(|(_, d)| d.clone()).collect()
    }
}

/// A question a configured check asks of a copy's database, answered by
/// the kind it belongs to ([`DrillSupport::probe`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Probe {
    /// PostgreSQL: an SQL query; [`Answer::Value`] of its first row's
    /// first column (`None`: SQL NULL, or no row).
    Sql(String),
    /// MongoDB: [`Answer::Count`] of the documents of `collection` that
    /// match `filter` (MongoDB extended JSON; all when `None`).
    Documents {
        /// The collection.
        collection: String,
        /// The filter.
        filter: Option<String>,
    },
    /// Redis: [`Answer::Exists`] for a key.
    Key(String),
    /// Redis: [`Answer::Count`] of the database's keys (`DBSIZE`).
    Keys,
}

impl Probe {
    /// The kind whose databases answer it.
    pub fn kind(&self) -> Kind {
        match self {
            Probe::Sql(_) => Kind::Postgres,
            Probe::Documents { .. } => Kind::Mongodb,
            Probe::Key(_) | Probe::Keys => Kind::Redis,
        }
    }

    /// The error of a probe asked of a copy of another kind (`copy`: the
    /// kind's name for people).
    pub fn misdirected(&self, copy: &str) -> Error {
        Error::Config(format!("a {} check asked of a {copy} copy", self.kind()))
    }
}

/// What a [`Probe`] found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A value, as text (`None` for NULL or nothing).
    Value(Option<String>),
    /// A number of documents or keys.
    Count(u64),
    /// Whether it exists.
    Exists(bool),
}

/// A drill's canary on a source: where it is written and what finds it
/// in a copy ([`DrillSupport::canary`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CanaryMark {
    /// Its id (the row's or document's id; a Redis key's value).
    pub id: String,
    /// The source URL it is written through, credentials included.
    pub url: String,
    /// The database it goes to, by its source name: a copy holds it in
    /// the scratch database this one was restored into.
    pub database: String,
    /// The kind whose [`DrillSupport`] writes and finds it.
    pub kind: Kind,
    /// For people: what and where (the row ID of the table
    /// `backup_drill_canary` in database `app`).
    pub what: String,
    /// What to do when writing it is refused, when the kind knows.
    pub advice: Option<String>,
}

impl std::fmt::Display for CanaryMark {
    /// `WHAT of URL` (credentials removed).
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} of {}", self.what, redact_url(&self.url))
    }
}

/// The point a restore must reach to hold a canary
/// ([`DrillSupport::write_canary`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CanaryAt {
    /// A time target (PostgreSQL: the server's time between the canary's
    /// commit and the next one, so that recovery to it can end).
    Time(DateTime<Utc>),
    /// A position of the change stream (MongoDB: the oplog timestamp of
    /// the write; Redis: the replication offset once the write is in the
    /// stream).
    Position(Position),
}

/// A server process a drill started for its scratch copy
/// ([`DrillSupport::start_throwaway`]), in a directory of its own. Stop
/// it with [`ThrowawayServer::stop`]; dropped, the process is killed and
/// the directory stays.
#[derive(Debug)]
pub struct ThrowawayServer {
    child: tokio::process::Child,
    /// Its URL (the server has no password).
    pub url: String,
    /// The program (`redis-server`), for people.
    pub program: &'static str,
    /// Its working directory.
    pub dir: std::path::PathBuf,
    /// Its process id.
    pub pid: u32,
}

impl ThrowawayServer {
    /// Stops the server (`SIGTERM`; killed when it has not ended 10
    /// seconds later; it keeps no data) and removes its directory.
    pub async fn stop(mut self) {
        if let Ok(pid) = i32::try_from(self.pid) {
            let _ = kill(Pid::from_raw(pid), Signal::SIGTERM);
        }
        let stopped = tokio::time::timeout(Duration::from_secs(10), self.child.wait());
        if stopped.await.is_err() {
            let _ = self.child.kill().await;
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// `base_drill_<stamp>` (`app` → `app_drill_20261123t170000`), within
/// `max` bytes.
pub fn scratch_name(base: &str, stamp: &str, max: usize) -> String {
    let suffix = format!("_drill_{stamp}");
    let mut base: String = base.to_owned();
    while base.len() + suffix.len() > max {
        base.pop();
    }
    format!("{base}{suffix}")
}

/// A free TCP port on 127.0.0.1.
///
/// # Errors
///
/// I/O errors.
pub fn free_port() -> Result<u16> {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| Error::io("finding a free port", e))
}

/// `url` with its path replaced by `path`.
///
/// # Errors
///
/// [`Error::Config`] for a URL that does not parse.
pub fn with_path(url: &str, path: &str) -> Result<String> {
    let mut u = url::Url::parse(url)
        .map_err(|e| Error::Config(format!("`{}` is not a URL: {e}", redact_url(url))))?;
    u.set_path(path);
    Ok(u.to_string())
}

/// The database a `scheme://host/db` URL names, percent-decoded.
pub fn url_database(url: &str) -> Option<String> {
    let u = url::Url::parse(url).ok()?;
    let db = u.path().trim_start_matches('/');
    (!db.is_empty()).then(|| percent_decode(db))
}

/// `s` percent-decoded (`+` stays a plus; bytes that are not UTF-8 become
/// U+FFFD).
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// `s` with every byte but the unreserved ones percent-encoded (RFC
/// 3986).
pub fn escape(s: &str) -> String {
    const RESERVED: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'.')
        .remove(b'_')
        .remove(b'~');
    percent_encoding::utf8_percent_encode(s, RESERVED).to_string()
}

/// The source databases a database snapshot holds: `of_row` of the name
/// of each row of its manifest's contents, in their order (`None`: none).
#[allow(dead_code)] // Used only in builds with MongoDB or Redis.
fn snapshot_databases<T>(snapshot: &Snapshot, of_row: fn(&str) -> Option<T>) -> Vec<T> {
    crate::summary::contents(&snapshot.source.kind, &snapshot.metadata)
        .map(|c| c.rows.iter().filter_map(|r| of_row(&r.name)).collect())
        .unwrap_or_default()
}

/// The error of a drill without a scratch location: it needs `what`.
pub fn need_location(what: &str) -> Error {
    Error::Config(format!(
        "this drill needs a scratch location: {what} (jobs.NAME.drill.target, or --target)"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_urls() {
        assert_eq!(
            scratch_name("app", "20261123t170000", 63),
            "app_drill_20261123t170000"
        );
        let long = "x".repeat(80);
        assert_eq!(scratch_name(&long, "20261123t170000", 63).len(), 63);
        assert_eq!(
            url_database("postgres://u@h:5432/app%20db").as_deref(),
            Some("app db")
        );
        assert_eq!(url_database("postgres://u@h:5432/"), None);
        assert_eq!(
            with_path("postgres://u:pw@h:5432/", "/app_drill_1").unwrap(),
            "postgres://u:pw@h:5432/app_drill_1"
        );
        assert_eq!(escape("p w/é"), "p%20w%2F%C3%A9");
        // A password's `+` and `&` are themselves, not a form's space and
        // field separator.
        assert_eq!(percent_decode("a+b&c%26d"), "a+b&c&d");
        assert_eq!(percent_decode(&escape("p+w&é %")), "p+w&é %");
    }

    #[test]
    fn scratch_databases_of_a_plan() {
        let plan = ScratchPlan {
            server: "redis://h:6379".to_owned(),
            databases: vec![
                ("0".to_owned(), "3".to_owned()),
                ("1".to_owned(), "3".to_owned()),
            ],
            restore_url: "redis://h:6379".to_owned(),
            url: "redis://h:6379/3".to_owned(),
            listing: None,
        };
        assert_eq!(plan.scratch_database(Some("1")), Some("3"));
        assert_eq!(plan.scratch_database(None), Some("3"));
        assert_eq!(plan.scratch_database(Some("2")), None);
        assert_eq!(plan.scratch_databases(), ["3"]);
    }
}
