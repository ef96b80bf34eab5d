//! MongoDB: counts with a filter, dropping renamed scratch databases.

use backup_core::{Error, Result};
use mongodb::bson::{doc, Bson, Document};

use crate::mongo::conn::{Conn, Side};

pub(super) fn parse_filter(filter: &str) -> Result<Document> {
    let value: serde_json::Value = serde_json::from_str(filter)
        .map_err(|e| Error::Config(format!("the filter `{filter}` is not JSON: {e}")))?;
    match Bson::try_from(value) {
        Ok(Bson::Document(d)) => Ok(d),
        Ok(_) => Err(Error::Config(format!(
            "the filter `{filter}` is not a JSON object"
        ))),
        Err(e) => Err(Error::Config(format!(
            "the filter `{filter}` is not MongoDB extended JSON: {e}"
        ))),
    }
}

pub(super) async fn count(
    url: &str,
    db: &str,
    collection: &str,
    filter: Option<&str>,
) -> Result<u64> {
    let filter = filter.map(parse_filter).transpose()?.unwrap_or_default();
    let conn = Conn::new(url, Side::Target).await?;
    conn.client
        .database(db)
        .collection::<Document>(collection)
        .count_documents(filter)
        .await
        .map_err(|e| conn.error(&format!("counting {db}.{collection}"), e))
}

pub(super) async fn databases(url: &str) -> Result<Vec<String>> {
    let conn = Conn::new(url, Side::Target).await?;
    conn.client
        .list_database_names()
        .await
        .map_err(|e| conn.error("listing databases", e))
}

pub(super) async fn drop_databases(url: &str, names: &[String]) -> Result<()> {
    let conn = Conn::new(url, Side::Target).await?;
    for name in names {
        let db = conn.client.database(name);
        // Users and roles defined on the database live in admin and
        // outlive dropDatabase.
        for cmd in [
            doc! {"dropAllUsersFromDatabase": 1},
            doc! {"dropAllRolesFromDatabase": 1},
        ] {
            if let Err(e) = db.run_command(cmd).await {
                tracing::debug!(database = %name, error = %e, "Could not drop the users or roles of a scratch database.");
            }
        }
        db.drop()
            .await
            .map_err(|e| conn.error(&format!("dropping the scratch database {name}"), e))?;
    }
    Ok(())
}

const CANARY_DB: &str = super::MONGO_CANARY_NAMESPACE.0;
const CANARY_COLLECTION: &str = super::MONGO_CANARY_NAMESPACE.1;

pub(super) async fn write_canary(url: &str, id: &str) -> Result<(u32, u32)> {
    let conn = Conn::new(url, Side::Source).await?;
    let coll = conn
        .client
        .database(CANARY_DB)
        .collection::<Document>(CANARY_COLLECTION);
    let mut session = conn
        .client
        .start_session()
        .await
        .map_err(|e| conn.error("starting a session for the drill's canary", e))?;
    let now = mongodb::bson::DateTime::now();
    let old = mongodb::bson::DateTime::from_millis(now.timestamp_millis() - 90 * 86_400_000);
    coll.delete_many(doc! {"written": {"$lt": old}})
        .session(&mut session)
        .await
        .map_err(|e| conn.error("removing the canaries of old drills", e))?;
    coll.insert_one(doc! {"_id": id, "written": now})
        .write_concern(mongodb::options::WriteConcern::majority())
        .session(&mut session)
        .await
        .map_err(|e| {
            conn.error(
                &format!("writing the drill's canary to {CANARY_DB}.{CANARY_COLLECTION}"),
                e,
            )
        })?;
    let ts = session.operation_time().ok_or_else(|| {
        Error::source_failed(
            "the server did not return the operation time of the drill's canary: is it a replica set member?",
        )
    })?;
    Ok((ts.time, ts.increment))
}

pub(super) async fn collection_counts(url: &str, db: &str) -> Result<Vec<(String, u64)>> {
    let conn = Conn::new(url, Side::Target).await?;
    let d = conn.client.database(db);
    let mut names = d
        .list_collection_names()
        .await
        .map_err(|e| conn.error(&format!("listing the collections of {db}"), e))?;
    names.sort();
    let mut out = Vec::with_capacity(names.len());
    for name in names.into_iter().filter(|n| !n.starts_with("system.")) {
        let n = d
            .collection::<Document>(&name)
            .count_documents(doc! {})
            .await
            .map_err(|e| conn.error(&format!("counting {db}.{name}"), e))?;
        out.push((name, n));
    }
    Ok(out)
}
