//! MongoDB: renamed scratch databases, counts with a filter, the canary
//! document.

use backup_core::snapshot::Snapshot;
use backup_core::target::RestoreOptions;
use backup_core::{Error, Result};
use mongodb::bson::{doc, Bson, Document};

use super::{
    need_location, scratch_name, snapshot_databases, with_path, Answer, CanaryAt, CanaryMark,
    DrillSupport, Probe, ScratchPlan,
};
use crate::capture::Position;
use crate::mongo::conn::{Conn, Side};
use crate::Kind;

/// Where canaries go: database and collection.
const CANARY_DB: &str = "backup_drill";
const CANARY_COLLECTION: &str = "canary";

/// MongoDB's [`DrillSupport`]: a copy is the snapshot's databases, each
/// renamed `<db>_drill_<stamp>`, on the scratch deployment.
pub(super) struct MongoDrill;

#[async_trait::async_trait]
impl DrillSupport for MongoDrill {
    fn kind(&self) -> Kind {
        Kind::Mongodb
    }

    fn plan(
        &self,
        snapshot: &Snapshot,
        target: Option<&str>,
        stamp: &str,
        canary: bool,
    ) -> Result<(ScratchPlan, RestoreOptions)> {
        let server = target.ok_or_else(|| need_location("a MongoDB deployment URL"))?;
        let server = with_path(server, "/")?;
        let mut dbs = snapshot_databases(snapshot, |row| {
            row.split_once('.').map(|(db, _)| db.to_owned())
        });
        if canary {
            dbs.push(CANARY_DB.to_owned());
        }
        dbs.sort();
        dbs.dedup();
        if dbs.is_empty() {
            return Err(Error::Config(format!(
                "snapshot {} holds no collections; there is nothing to drill",
                snapshot.source.url
            )));
        }
        let databases: Vec<(String, String)> = dbs
            .iter()
            .map(|db| (db.clone(), scratch_name(db, stamp, 63)))
            .collect();
        let options = RestoreOptions {
            renames: databases.iter().map(|(a, b)| format!("{a}:{b}")).collect(),
            // Only the renamed databases: an oplog replay must never
            // write a database the snapshot lacks under its own name
            // (the scratch deployment may be the source's).
            includes: dbs,
            ..RestoreOptions::default()
        };
        let single = (databases.len() == 1).then(|| databases[0].1.clone());
        let plan = ScratchPlan::renamed(server, databases, single.as_deref(), "")?;
        Ok((plan, options))
    }

    async fn remove(&self, server: &str, databases: &[String]) -> Result<()> {
        let conn = Conn::new(&with_path(server, "/")?, Side::Target).await?;
        for name in databases {
            let db = conn.client.database(name);
            // Users and roles defined on the database live in admin and
            // outlive dropDatabase.
            for cmd in ["dropAllUsersFromDatabase", "dropAllRolesFromDatabase"] {
                if let Err(e) = db.run_command(doc! {cmd: 1}).await {
                    tracing::debug!(database = %name, error = %e, "Could not drop the users or roles of a scratch database.");
                }
            }
            db.drop()
                .await
                .map_err(|e| conn.error(&format!("dropping the scratch database {name}"), e))?;
        }
        Ok(())
    }

    async fn databases(&self, server: &str) -> Result<Vec<String>> {
        let conn = Conn::new(server, Side::Target).await?;
        conn.client
            .list_database_names()
            .await
            .map_err(|e| conn.error("listing databases", e))
    }

    async fn counts(&self, server: &str, database: &str) -> Result<Vec<(String, u64)>> {
        let conn = Conn::new(server, Side::Target).await?;
        let mut names = conn
            .client
            .database(database)
            .list_collection_names()
            .await
            .map_err(|e| conn.error(&format!("listing the collections of {database}"), e))?;
        names.sort();
        let mut out = Vec::with_capacity(names.len());
        for name in names.into_iter().filter(|n| !n.starts_with("system.")) {
            let n = count(&conn, database, &name, doc! {}).await?;
            out.push((name, n));
        }
        Ok(out)
    }

    async fn probe(&self, server: &str, database: &str, probe: &Probe) -> Result<Answer> {
        match probe {
            Probe::Documents { collection, filter } => {
                let filter = filter.as_deref().map(parse_filter).transpose()?;
                let conn = Conn::new(server, Side::Target).await?;
                let n = count(&conn, database, collection, filter.unwrap_or_default()).await?;
                Ok(Answer::Count(n))
            }
            other => Err(other.misdirected("MongoDB")),
        }
    }

    fn manifest_check(&self, replayed: bool) -> Option<&'static str> {
        (!replayed).then_some("built-in: documents per collection against the manifest")
    }

    fn canary(&self, url: &str, _database: Option<&str>, id: &str) -> Result<CanaryMark> {
        Ok(CanaryMark {
            id: id.to_owned(),
            url: url.to_owned(),
            database: CANARY_DB.to_owned(),
            kind: Kind::Mongodb,
            what: format!("the document {id} of {CANARY_DB}.{CANARY_COLLECTION}"),
            advice: None,
        })
    }

    async fn write_canary(&self, canary: &CanaryMark) -> Result<CanaryAt> {
        let conn = Conn::new(&canary.url, Side::Source).await?;
        let coll = conn
            .client
            .database(CANARY_DB)
            .collection::<Document>(CANARY_COLLECTION);
        let mut session = conn
            .client
            .start_session()
            .await
            .map_err(|e| conn.error("starting a session for the drill's canary", e))?;
        let what = format!("writing the drill's canary to {CANARY_DB}.{CANARY_COLLECTION}");
        let now = mongodb::bson::DateTime::now();
        let old = mongodb::bson::DateTime::from_millis(now.timestamp_millis() - 90 * 86_400_000);
        coll.delete_many(doc! {"written": {"$lt": old}})
            .session(&mut session)
            .await
            .map_err(|e| conn.error("removing the canaries of old drills", e))?;
        coll.insert_one(doc! {"_id": &canary.id, "written": now})
            .write_concern(mongodb::options::WriteConcern::majority())
            .session(&mut session)
            .await
            .map_err(|e| conn.error(&what, e))?;
        let ts = session.operation_time().ok_or_else(|| {
            Error::source_failed(
                "the server did not return the operation time of the drill's canary: is it a replica set member?",
            )
        })?;
        Ok(CanaryAt::Position(Position::Oplog {
            seconds: ts.time,
            increment: ts.increment,
        }))
    }

    async fn canary_present(
        &self,
        server: &str,
        database: &str,
        canary: &CanaryMark,
    ) -> Result<bool> {
        let conn = Conn::new(server, Side::Target).await?;
        let filter = doc! {"_id": &canary.id};
        Ok(count(&conn, database, CANARY_COLLECTION, filter).await? >= 1)
    }
}

fn parse_filter(filter: &str) -> Result<Document> {
    let value: serde_json::Value = serde_json::from_str(filter)
        .map_err(|e| Error::Config(format!("the filter `{filter}` is not JSON: {e}")))?;
    match Bson::try_from(value) {
        Ok(Bson::Document(d)) => Ok(d),
        Ok(_) => Err(format!("the filter `{filter}` is not a JSON object")),
        Err(e) => Err(format!(
            "the filter `{filter}` is not MongoDB extended JSON: {e}"
        )),
    }
    .map_err(Error::Config)
}

/// The documents of `db.collection` that match `filter`.
async fn count(conn: &Conn, db: &str, collection: &str, filter: Document) -> Result<u64> {
    let coll = conn.client.database(db).collection::<Document>(collection);
    let counted = coll.count_documents(filter).await;
    counted.map_err(|e| conn.error(&format!("counting {db}.{collection}"), e))
}
