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
