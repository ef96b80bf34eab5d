//! PostgreSQL: scratch databases, SQL checks, the canary row, and the
//! data directory of a physical copy.

use backup_core::snapshot::Snapshot;
use backup_core::target::RestoreOptions;
use backup_core::{Error, Result};
use chrono::{DateTime, Utc};
use tokio_postgres::SimpleQueryMessage;

use super::{
    escape, need_location, scratch_name, url_database, with_path, Answer, CanaryAt, CanaryMark,
    DrillSupport, Probe, ScratchPlan,
};
use crate::postgres::conn::{query_error, ConnInfo, Side};
use crate::postgres::physical::{PhysicalTarget, RunningServer};
use crate::postgres::script::quote_ident;
use crate::Kind;

/// PostgreSQL's [`DrillSupport`]: a logical copy is a new database
/// `<db>_drill_<stamp>` on the scratch server.
pub(super) struct PostgresDrill;

#[async_trait::async_trait]
impl DrillSupport for PostgresDrill {
    fn kind(&self) -> Kind {
        Kind::Postgres
    }

    fn plan(
        &self,
        snapshot: &Snapshot,
        target: Option<&str>,
        stamp: &str,
        _canary: bool,
    ) -> Result<(ScratchPlan, RestoreOptions)> {
        let server = target.ok_or_else(|| need_location("a PostgreSQL server URL"))?;
        let base = url_database(&snapshot.source.url).unwrap_or_else(|| "db".to_owned());
        let database = scratch_name(&base, stamp, 63);
        let url = with_path(server, &format!("/{database}"))?;
        let plan = ScratchPlan {
            server: server.to_owned(),
            databases: vec![(base, database)],
            restore_url: url.clone(),
            url,
            listing: None,
        };
        Ok((plan, RestoreOptions::default()))
    }

    async fn remove(&self, server: &str, databases: &[String]) -> Result<()> {
        for name in databases {
            // Its connections are closed first; an absent one is skipped.
            let drop = format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", quote_ident(name));
            let what = format!("dropping the scratch database {name}");
            let c = admin(server).await?;
            c.batch_execute(&drop)
                .await
                .map_err(|e| query_error(Side::Target, &what, e))?;
        }
        Ok(())
    }

    async fn databases(&self, server: &str) -> Result<Vec<String>> {
        let c = admin(server).await?;
        let rows = c
            .query(
                "SELECT datname::text FROM pg_database WHERE datallowconn ORDER BY 1",
                &[],
            )
            .await
            .map_err(|e| query_error(Side::Target, "listing databases", e))?;
        Ok(rows.into_iter().map(|r| r.get(0)).collect())
    }

    async fn counts(&self, server: &str, database: &str) -> Result<Vec<(String, u64)>> {
        let n = sql_value(server, database, "SELECT count(*) FROM pg_class").await?;
        Ok(vec![(
            "pg_class".to_owned(),
            n.and_then(|n| n.parse().ok()).unwrap_or(0),
        )])
    }

    async fn probe(&self, server: &str, database: &str, probe: &Probe) -> Result<Answer> {
        match probe {
            Probe::Sql(query) => Ok(Answer::Value(sql_value(server, database, query).await?)),
            other => Err(other.misdirected("PostgreSQL")),
        }
    }

    fn manifest_check(&self, _replayed: bool) -> Option<&'static str> {
        Some("built-in: rows per table against the manifest")
    }

    fn canary(&self, url: &str, database: Option<&str>, id: &str) -> Result<CanaryMark> {
        let (url, database) = canary_url(url, database)?;
        Ok(CanaryMark {
            id: id.to_owned(),
            url,
            kind: Kind::Postgres,
            what: format!("the row {id} of the table backup_drill_canary in database `{database}`"),
            database,
            advice: Some("as the source's role; set drill.canary_database to a database that role may connect to and create that table in, or create the table there first and grant the role INSERT, UPDATE, DELETE and SELECT on it".to_owned()),
        })
    }

    async fn write_canary(&self, canary: &CanaryMark) -> Result<CanaryAt> {
        let c = ConnInfo::parse(&canary.url)?.connect(Side::Source).await?;
        let fail = |what: &'static str| move |e| query_error(Side::Source, what, e);
        c.batch_execute(
            "CREATE TABLE IF NOT EXISTS backup_drill_canary (\
             id text PRIMARY KEY, written_at timestamptz NOT NULL DEFAULT clock_timestamp())",
        )
        .await
        .map_err(fail("creating the table backup_drill_canary"))?;
        c.execute(
            "INSERT INTO backup_drill_canary (id) VALUES ($1)",
            &[&canary.id],
        )
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
            &[&canary.id],
        )
        .await
        .map_err(fail("closing the drill's canary"))?;
        c.execute(
            "DELETE FROM backup_drill_canary WHERE written_at < now() - interval '90 days'",
            &[],
        )
        .await
        .map_err(fail("removing old canary rows"))?;
        let at = DateTime::parse_from_rfc3339(&target)
            .map_err(|e| Error::source_failed(format!("the server's time `{target}`: {e}")))?;
        Ok(CanaryAt::Time(at.with_timezone(&Utc)))
    }

    async fn canary_present(
        &self,
        server: &str,
        database: &str,
        canary: &CanaryMark,
    ) -> Result<bool> {
        let query = format!(
            "SELECT count(*) FROM backup_drill_canary WHERE id = '{}'",
            canary.id.replace('\'', "''")
        );
        let n = sql_value(server, database, &query).await?;
        Ok(n.as_deref() == Some("1"))
    }
}

/// `server` with its path replaced by `database`.
fn database_url(server: &str, database: &str) -> Result<String> {
    with_path(server, &format!("/{}", escape(database)))
}

/// The URL a canary is written through, and its database: `database`,
/// else the one `url` names, else `postgres` (a physical source's URL
/// often names none, and libpq would then take the user's name).
fn canary_url(url: &str, database: Option<&str>) -> Result<(String, String)> {
    let db = database
        .map(str::to_owned)
        .or_else(|| url_database(url))
        .unwrap_or_else(|| "postgres".to_owned());
    Ok((database_url(url, &db)?, db))
}

/// The first column of the first row `query` returns in `database` of
/// `server` (`None`: SQL NULL, or no row).
async fn sql_value(server: &str, database: &str, query: &str) -> Result<Option<String>> {
    let info = ConnInfo::parse(&database_url(server, database)?)?;
    let c = info.connect(Side::Target).await?;
    let messages = c
        .simple_query(query)
        .await
        .map_err(|e| query_error(Side::Target, "running the check's query", e))?;
    let first_row = messages.iter().find_map(|m| match m {
        SimpleQueryMessage::Row(r) => Some(r),
        _ => None,
    });
    Ok(first_row.and_then(|r| r.get(0)).map(str::to_owned))
}

async fn admin(url: &str) -> Result<tokio_postgres::Client> {
    let info = ConnInfo::parse(url)?;
    info.with_dbname("postgres").connect(Side::Target).await
}

/// A data directory a physical snapshot is restored into, started as a
/// server for a drill's checks.
#[derive(Debug)]
pub struct DataDirectory(PhysicalTarget);

/// A PostgreSQL server running on a restored data directory.
#[derive(Debug)]
pub struct StartedServer(RunningServer);

impl DataDirectory {
    /// A data directory (absent or empty) at `path`.
    ///
    /// # Errors
    ///
    /// None in this build.
    pub fn new(path: std::path::PathBuf) -> Result<Self> {
        Ok(DataDirectory(PhysicalTarget::new(path)))
    }

    /// The restore target.
    pub fn target(&self) -> &dyn backup_core::target::Target {
        &self.0
    }

    /// Re-reads every restored file against the backup manifest.
    ///
    /// # Errors
    ///
    /// As [`PhysicalTarget::verify_files`].
    pub async fn verify_files(
        &self,
        snapshot: &backup_core::reader::SnapshotReader,
    ) -> Result<Vec<String>> {
        self.0.verify_files(snapshot).await
    }

    /// Starts the restored cluster on 127.0.0.1:`port` and waits until it
    /// accepts connections.
    ///
    /// # Errors
    ///
    /// As [`PhysicalTarget::start`].
    pub async fn start(
        &self,
        port: u16,
        work_parent: Option<&std::path::Path>,
    ) -> Result<StartedServer> {
        Ok(StartedServer(self.0.start(port, work_parent).await?))
    }
}

impl StartedServer {
    /// Stops it; returns where recovery became consistent, from its log.
    pub async fn stop(self) -> Option<String> {
        self.0.stop().await.consistent_at
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canary_database() {
        let c = |url: &str, db: Option<&str>| canary_url(url, db).unwrap();
        // A physical source's URL names no database: `postgres`.
        assert_eq!(
            c("postgres://repl:pw@h:5432/?mode=physical", None),
            (
                "postgres://repl:pw@h:5432/postgres?mode=physical".to_owned(),
                "postgres".to_owned()
            )
        );
        assert_eq!(c("postgres://u@h/shop", None).1, "shop");
        let (url, db) = c("postgres://u@h/shop?sslmode=require", Some("canary db"));
        assert_eq!(db, "canary db");
        assert_eq!(url, "postgres://u@h/canary%20db?sslmode=require");
        let mark = PostgresDrill
            .canary("postgres://u:pw@h/shop", None, "drill-1")
            .unwrap();
        assert_eq!(mark.database, "shop");
        let shown = mark.to_string();
        assert!(shown.starts_with("the row drill-1 of the table"), "{shown}");
        assert!(!shown.contains("pw"), "{shown}");
    }
}
