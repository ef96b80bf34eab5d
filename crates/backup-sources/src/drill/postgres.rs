//! PostgreSQL: SQL checks and dropping scratch databases.

use backup_core::Result;
use tokio_postgres::SimpleQueryMessage;

use crate::postgres::conn::{query_error, ConnInfo, Side};
use crate::postgres::script::quote_ident;

pub(super) async fn sql_value(url: &str, query: &str) -> Result<Option<String>> {
    let info = ConnInfo::parse(url)?;
    let c = info.connect(Side::Target).await?;
    let messages = c
        .simple_query(query)
        .await
        .map_err(|e| query_error(Side::Target, "running the check's query", e))?;
    Ok(messages
        .iter()
        .find_map(|m| match m {
            SimpleQueryMessage::Row(r) => Some(r.get(0).map(str::to_owned)),
            _ => None,
        })
        .flatten())
}

pub(super) async fn write_canary(url: &str, id: &str) -> Result<String> {
    let info = ConnInfo::parse(url)?;
    let c = info.connect(Side::Source).await?;
    let fail = |what: &'static str| move |e| query_error(Side::Source, what, e);
    c.batch_execute(
        "CREATE TABLE IF NOT EXISTS backup_drill_canary (\
         id text PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT clock_timestamp())",
    )
    .await
    .map_err(fail("creating the table backup_drill_canary"))?;
    c.execute("INSERT INTO backup_drill_canary (id) VALUES ($1)", &[&id])
        .await
        .map_err(fail("writing the drill's canary row"))?;
    // After the canary's commit and before the next one: the target.
    let row = c
        .query_one(
            "SELECT to_char(clock_timestamp() AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
            &[],
        )
        .await
        .map_err(fail("reading the server's clock"))?;
    let target: String = row.get(0);
    // A commit after the target, so that recovery to it can end; the
    // rows of drills older than 90 days go.
    c.execute(
        "UPDATE backup_drill_canary SET written_at = written_at WHERE id = $1",
        &[&id],
    )
    .await
    .map_err(fail("closing the drill's canary"))?;
    c.execute(
        "DELETE FROM backup_drill_canary WHERE written_at < now() - interval '90 days'",
        &[],
    )
    .await
    .map_err(fail("removing old canary rows"))?;
    Ok(target)
}

async fn admin(url: &str) -> Result<tokio_postgres::Client> {
    let info = ConnInfo::parse(url)?;
    info.with_dbname("postgres").connect(Side::Target).await
}

pub(super) async fn databases(url: &str) -> Result<Vec<String>> {
    let c = admin(url).await?;
    let rows = c
        .query(
            "SELECT datname::text FROM pg_database WHERE datallowconn ORDER BY 1",
            &[],
        )
        .await
        .map_err(|e| query_error(Side::Target, "listing databases", e))?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

pub(super) async fn drop_database(url: &str, name: &str, roles: &[String]) -> Result<()> {
    let c = admin(url).await?;
    c.batch_execute(&format!(
        "DROP DATABASE IF EXISTS {} WITH (FORCE)",
        quote_ident(name)
    ))
    .await
    .map_err(|e| {
        query_error(
            Side::Target,
            &format!("dropping the scratch database {name}"),
            e,
        )
    })?;
    for role in roles {
        c.batch_execute(&format!("DROP ROLE IF EXISTS {}", quote_ident(role)))
            .await
            .map_err(|e| {
                query_error(
                    Side::Target,
                    &format!("dropping role {role}, which the drill's restore created"),
                    e,
                )
            })?;
    }
    Ok(())
}

/// A data directory a physical snapshot is restored into, started as a
/// server for a drill's checks.
#[derive(Debug)]
pub struct DataDirectory {
    target: crate::postgres::physical::PhysicalTarget,
}

/// A PostgreSQL server running on a restored data directory.
#[derive(Debug)]
pub struct StartedServer {
    server: crate::postgres::physical::RunningServer,
}

impl DataDirectory {
    /// A data directory (absent or empty) at `path`.
    ///
    /// # Errors
    ///
    /// None in this build.
    pub fn new(path: std::path::PathBuf) -> Result<Self> {
        Ok(DataDirectory {
            target: crate::postgres::physical::PhysicalTarget::new(path),
        })
    }

    /// The restore target.
    pub fn target(&self) -> &dyn backup_core::target::Target {
        &self.target
    }

    /// Re-reads every restored file against the backup manifest.
    ///
    /// # Errors
    ///
    /// As [`crate::postgres::physical::PhysicalTarget::verify_files`].
    pub async fn verify_files(
        &self,
        snapshot: &backup_core::reader::SnapshotReader,
    ) -> Result<Vec<String>> {
        self.target.verify_files(snapshot).await
    }

    /// Starts the restored cluster on 127.0.0.1:`port` and waits until it
    /// accepts connections.
    ///
    /// # Errors
    ///
    /// As [`crate::postgres::physical::PhysicalTarget::start`].
    pub async fn start(
        &self,
        port: u16,
        work_parent: Option<&std::path::Path>,
    ) -> Result<StartedServer> {
        Ok(StartedServer {
            server: self.target.start(port, work_parent).await?,
        })
    }
}

impl StartedServer {
    /// Seconds until it accepted connections.
    pub fn seconds_to_ready(&self) -> f64 {
        self.server.seconds_to_ready()
    }

    /// Stops it; returns where recovery became consistent, from its log.
    pub async fn stop(self) -> Option<String> {
        self.server.stop().await.consistent_at
    }
}

/// Stops a server a killed drill left running on `data_dir`; returns
/// whether there was one.
///
/// # Errors
///
/// Signals that cannot be sent.
pub async fn stop_leftover_server(data_dir: &std::path::Path) -> Result<bool> {
    crate::postgres::physical::stop_leftover_server(data_dir).await
}
