//! What a restore drill needs of each kind of system besides the restore
//! itself: the values its configured checks look at (an SQL query, a
//! MongoDB count, a Redis key or database size), and the removal of a
//! scratch copy (a database, renamed databases, Redis databases) — also
//! one a killed drill left behind.
//!
//! Every function takes a URL with its credentials and dispatches on the
//! kind; a kind this build lacks is a configuration error that says so.

#[cfg(all(feature = "files", not(feature = "postgres")))]
mod disabled;
#[cfg(feature = "mongodb")]
mod mongo;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "redis")]
mod redis;

#[cfg(all(feature = "files", not(feature = "postgres")))]
pub use disabled::{stop_leftover_server, DataDirectory, StartedServer};
#[cfg(feature = "postgres")]
pub use postgres::{stop_leftover_server, DataDirectory, StartedServer};

use backup_core::{Error, Result};

#[allow(unused_imports)] // Used only in builds without some kind.
use crate::Kind;

#[allow(dead_code)] // Used only in builds without some kind.
fn unavailable(kind: Kind) -> Error {
    Error::Config(format!(
        "{kind} drills are not supported by this build of backup (it was built without the {kind} cargo feature)"
    ))
}

/// Runs `query` on the PostgreSQL database `url` names and returns the
/// first column of the first row as text (`None` for SQL NULL or no row).
///
/// # Errors
///
/// Connection and query errors.
pub async fn sql_value(url: &str, query: &str) -> Result<Option<String>> {
    #[cfg(feature = "postgres")]
    {
        postgres::sql_value(url, query).await
    }
    #[cfg(not(feature = "postgres"))]
    {
        let _ = (url, query);
        Err(unavailable(Kind::Postgres))
    }
}

/// Writes the canary row `id` of a drill to the PostgreSQL database `url`
/// names (table `backup_drill_canary`, created when missing), then
/// commits once more after it (rows of drills older than 90 days are
/// removed). Returns the server's time between the two commits (RFC 3339,
/// UTC): a point-in-time restore to it holds the canary, and recovery to
/// it can end.
///
/// # Errors
///
/// Connection and query errors (a role without the right to create the
/// table or write to it, a read-only server).
pub async fn postgres_write_canary(url: &str, id: &str) -> Result<String> {
    #[cfg(feature = "postgres")]
    {
        postgres::write_canary(url, id).await
    }
    #[cfg(not(feature = "postgres"))]
    {
        let _ = (url, id);
        Err(unavailable(Kind::Postgres))
    }
}

/// The names of the databases on the PostgreSQL server `url` names.
///
/// # Errors
///
/// Connection and query errors.
pub async fn postgres_databases(url: &str) -> Result<Vec<String>> {
    #[cfg(feature = "postgres")]
    {
        postgres::databases(url).await
    }
    #[cfg(not(feature = "postgres"))]
    {
        let _ = url;
        Err(unavailable(Kind::Postgres))
    }
}

/// Drops the database `name` on the PostgreSQL server `url` names,
/// closing its connections first (`WITH (FORCE)`); nothing when it is
/// absent. Then drops `roles` that own nothing any more.
///
/// # Errors
///
/// Connection and statement errors.
pub async fn drop_postgres_database(url: &str, name: &str, roles: &[String]) -> Result<()> {
    #[cfg(feature = "postgres")]
    {
        postgres::drop_database(url, name, roles).await
    }
    #[cfg(not(feature = "postgres"))]
    {
        let _ = (url, name, roles);
        Err(unavailable(Kind::Postgres))
    }
}

/// Counts the documents of `collection` in database `db` of the MongoDB
/// deployment `url` names that match `filter` (MongoDB extended JSON; all
/// documents when `None`).
///
/// # Errors
///
/// A filter that is not a JSON object; connection and command errors.
pub async fn mongo_count(
    url: &str,
    db: &str,
    collection: &str,
    filter: Option<&str>,
) -> Result<u64> {
    #[cfg(feature = "mongodb")]
    {
        mongo::count(url, db, collection, filter).await
    }
    #[cfg(not(feature = "mongodb"))]
    {
        let _ = (url, db, collection, filter);
        Err(unavailable(Kind::Mongodb))
    }
}

/// Checks that `filter` is a JSON object MongoDB can take as a filter.
///
/// # Errors
///
/// [`Error::Config`] saying what is wrong.
pub fn check_mongo_filter(filter: &str) -> Result<()> {
    #[cfg(feature = "mongodb")]
    {
        mongo::parse_filter(filter).map(|_| ())
    }
    #[cfg(not(feature = "mongodb"))]
    {
        let _ = filter;
        Err(unavailable(Kind::Mongodb))
    }
}

/// Where [`mongo_write_canary`] writes: database and collection.
pub const MONGO_CANARY_NAMESPACE: (&str, &str) = ("backup_drill", "canary");

/// Writes the canary document `id` of a drill to the MongoDB replica set
/// `url` names (`backup_drill.canary`, `{_id: id, written: now}`, with
/// majority write concern; canaries of drills older than 90 days are
/// removed first). Returns the oplog timestamp of the write (seconds,
/// increment): a restore to it holds the canary.
///
/// # Errors
///
/// Connection and write errors; a server that returns no operation time
/// (not a replica set member).
pub async fn mongo_write_canary(url: &str, id: &str) -> Result<(u32, u32)> {
    #[cfg(feature = "mongodb")]
    {
        mongo::write_canary(url, id).await
    }
    #[cfg(not(feature = "mongodb"))]
    {
        let _ = (url, id);
        Err(unavailable(Kind::Mongodb))
    }
}

/// The collections of database `db` of the MongoDB deployment `url`
/// names (`system.*` left out), sorted, each with its document count.
///
/// # Errors
///
/// Connection and command errors.
pub async fn mongo_collection_counts(url: &str, db: &str) -> Result<Vec<(String, u64)>> {
    #[cfg(feature = "mongodb")]
    {
        mongo::collection_counts(url, db).await
    }
    #[cfg(not(feature = "mongodb"))]
    {
        let _ = (url, db);
        Err(unavailable(Kind::Mongodb))
    }
}

/// The databases of the MongoDB deployment `url` names.
///
/// # Errors
///
/// Connection and command errors.
pub async fn mongo_databases(url: &str) -> Result<Vec<String>> {
    #[cfg(feature = "mongodb")]
    {
        mongo::databases(url).await
    }
    #[cfg(not(feature = "mongodb"))]
    {
        let _ = url;
        Err(unavailable(Kind::Mongodb))
    }
}

/// Drops the databases `names` of the MongoDB deployment `url` names, with
/// the users and roles defined on them; absent ones are skipped.
///
/// # Errors
///
/// Connection and command errors.
pub async fn drop_mongo_databases(url: &str, names: &[String]) -> Result<()> {
    #[cfg(feature = "mongodb")]
    {
        mongo::drop_databases(url, names).await
    }
    #[cfg(not(feature = "mongodb"))]
    {
        let _ = (url, names);
        Err(unavailable(Kind::Mongodb))
    }
}

/// The prefix of a Redis canary key: `backup_drill:canary:` then the id.
pub const REDIS_CANARY_PREFIX: &str = "backup_drill:canary:";

/// Writes a drill's canary to the Redis server `url` names: the key
/// [`REDIS_CANARY_PREFIX`]`ID` (expiring in a week) in the URL's database
/// (0 when it names none). Returns the database, the key, and the
/// primary's replication offset once the write is in its stream (a
/// restore to that offset holds it).
///
/// # Errors
///
/// Connection and command errors, a server that reports no offset.
pub async fn redis_write_canary(url: &str, id: &str) -> Result<(u32, String, u64)> {
    #[cfg(feature = "redis")]
    {
        redis::write_canary(url, id).await
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = (url, id);
        Err(unavailable(Kind::Redis))
    }
}

/// Whether `key` exists in database `db` of the Redis server `url` names.
///
/// # Errors
///
/// Connection and command errors.
pub async fn redis_key_exists(url: &str, db: u32, key: &str) -> Result<bool> {
    #[cfg(feature = "redis")]
    {
        redis::key_exists(url, db, key).await
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = (url, db, key);
        Err(unavailable(Kind::Redis))
    }
}

/// `DBSIZE` of each of `dbs` on the Redis server `url` names.
///
/// # Errors
///
/// Connection and command errors (a database the server lacks).
pub async fn redis_dbsizes(url: &str, dbs: &[u32]) -> Result<Vec<u64>> {
    #[cfg(feature = "redis")]
    {
        redis::dbsizes(url, dbs).await
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = (url, dbs);
        Err(unavailable(Kind::Redis))
    }
}

/// Empties the databases `dbs` of the Redis server `url` names
/// (`FLUSHDB`).
///
/// # Errors
///
/// Connection and command errors.
pub async fn flush_redis(url: &str, dbs: &[u32]) -> Result<()> {
    #[cfg(feature = "redis")]
    {
        redis::flush(url, dbs).await
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = (url, dbs);
        Err(unavailable(Kind::Redis))
    }
}

/// Asks the Redis server `url` names to shut down without saving (a
/// throwaway server a drill started).
///
/// # Errors
///
/// Connection errors (a server already gone is not one).
pub async fn shutdown_redis(url: &str) -> Result<()> {
    #[cfg(feature = "redis")]
    {
        redis::shutdown(url).await
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = url;
        Err(unavailable(Kind::Redis))
    }
}
