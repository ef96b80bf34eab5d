//! The target server and database: connections, what the database holds,
//! creating and dropping it.

use std::collections::HashSet;

use backup_core::{Error, Result};
use tokio_postgres::Client;

use crate::postgres::conn::{query_error, ConnInfo, Side};
use crate::postgres::script::{quote_ident, quote_literal};
use crate::postgres::{Metadata, TableMeta};

/// Session settings of every restoring connection.
const SESSION_SETUP: &str = "SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0; SET datestyle = ISO; SET intervalstyle = postgres; SET synchronous_commit = off;";

/// What the target database holds before the restore.
pub(super) struct Found {
    pub(super) exists: bool,
    /// Objects outside the system schemas.
    pub(super) objects: i64,
    /// Relations (`schema`, `name`) present.
    pub(super) relations: HashSet<(String, String)>,
}

/// A connection to a maintenance database of the same server.
pub(super) async fn admin(info: &ConnInfo) -> Result<Client> {
    let first = info.with_dbname("postgres").connect(Side::Target).await;
    match first {
        Err(Error::NotFound { .. }) => info.with_dbname("template1").connect(Side::Target).await,
        r => r,
    }
}

pub(super) async fn db_exists(admin: &Client, db: &str) -> Result<bool> {
    let row = admin
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&db],
        )
        .await
        .map_err(|e| query_error(Side::Target, "looking up the database", e))?;
    Ok(row.get::<_, i64>(0) > 0)
}

/// Objects in the database outside the system schemas.
pub(super) async fn object_count(c: &Client) -> Result<i64> {
    let row = c
        .query_one(
            "SELECT \
             (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema') \
           + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema') \
           + (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
                WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' \
                AND t.typrelid = 0 AND t.typcategory <> 'A') \
           + (SELECT count(*) FROM pg_namespace WHERE nspname !~ '^pg_' \
                AND nspname NOT IN ('information_schema', 'public')) \
           + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql') \
           + (SELECT count(*) FROM pg_largeobject_metadata)",
            &[],
        )
        .await
        .map_err(|e| query_error(Side::Target, "inspecting the target database", e))?;
    Ok(row.get(0))
}

/// Relations (`schema`, `name`) present in the target database.
async fn relations(c: &Client) -> Result<HashSet<(String, String)>> {
    let rows = c
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'",
            &[],
        )
        .await
        .map_err(|e| query_error(Side::Target, "listing relations", e))?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Whether the database exists, and what it holds.
pub(super) async fn inspect(info: &ConnInfo, admin: &Client) -> Result<Found> {
    let exists = db_exists(admin, info.dbname()).await?;
    let (objects, relations) = if exists {
        let c = info.connect(Side::Target).await?;
        (object_count(&c).await?, relations(&c).await?)
    } else {
        (0, HashSet::new())
    };
    Ok(Found {
        exists,
        objects,
        relations,
    })
}

/// The server's `server_version_num`.
pub(super) async fn server_version_num(admin: &Client) -> Result<i32> {
    Ok(admin
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .map_err(|e| query_error(Side::Target, "reading the server version", e))?
        .get(0))
}

/// A restoring session on the target database, with the snapshot's
/// session `settings`.
pub(super) async fn worker(info: &ConnInfo, settings: &[String]) -> Result<Client> {
    let c = info.connect(Side::Target).await?;
    let mut setup = SESSION_SETUP.to_owned();
    for s in settings {
        setup.push(' ');
        setup.push_str(s);
    }
    c.batch_execute(&setup)
        .await
        .map_err(|e| query_error(Side::Target, "setting up a restore session", e))?;
    Ok(c)
}

/// Prepares the database: drops it first when `recreate`, creates it when
/// recreated or missing. Returns whether it was created.
pub(super) async fn prepare(
    admin: &Client,
    db: &str,
    meta: &Metadata,
    recreate: bool,
    exists: bool,
) -> Result<bool> {
    let mut created = false;
    if recreate {
        admin
            .batch_execute(&format!("DROP DATABASE {}", quote_ident(db)))
            .await
            .map_err(|e| {
                query_error(
                    Side::Target,
                    &format!("dropping database `{db}` (close other sessions on it first)"),
                    e,
                )
            })?;
    }
    if recreate || !exists {
        create_database(admin, db, meta).await?;
        created = true;
    }
    Ok(created)
}

async fn create_database(admin: &Client, db: &str, meta: &Metadata) -> Result<()> {
    let sql = format!(
        "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
        quote_ident(db),
        quote_literal(&meta.encoding),
        quote_literal(&meta.lc_collate),
        quote_literal(&meta.lc_ctype)
    );
    admin.batch_execute(&sql).await.map_err(|e| {
        query_error(
            Side::Target,
            &format!(
                "creating database `{db}` (encoding {}, locale {}; the locale must exist on the target server)",
                meta.encoding, meta.lc_collate
            ),
            e,
        )
    })
}

/// After a failed restore: removes the database when `remove` (it was
/// created by this restore), and adds to the error what was left behind.
pub(super) async fn after_failure(admin: &Client, db: &str, remove: bool, e: Error) -> Error {
    let left = if remove {
        match admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {}", quote_ident(db)))
            .await
        {
            Ok(()) => format!("the partly restored database `{db}` was removed"),
            Err(_) => {
                format!("database `{db}` was left partly restored; drop it before trying again")
            }
        }
    } else {
        format!(
            "database `{db}` was left partly restored; fix the cause and restore again with --drop (the safety backup holds what it contained before)"
        )
    };
    match e {
        Error::Target { message, .. } => Error::target_failed(format!("{message}; {left}")),
        Error::PermissionDenied(m) => Error::PermissionDenied(format!("{m}; {left}")),
        other => Error::target_failed(format!("{other}; {left}")),
    }
}

/// Drops tables (`names` quoted) with what depends on them.
pub(super) async fn drop_tables(c: &Client, names: &[String]) -> Result<()> {
    for n in names {
        c.batch_execute(&format!("DROP TABLE IF EXISTS {n} CASCADE"))
            .await
            .map_err(|e| query_error(Side::Target, &format!("dropping {n}"), e))?;
    }
    Ok(())
}

pub(super) async fn count_rows(c: &Client, t: &TableMeta) -> Result<u64> {
    let row = c
        .query_one(&format!("SELECT count(*) FROM ONLY {}", t.quoted()), &[])
        .await
        .map_err(|e| {
            query_error(
                Side::Target,
                &format!("counting rows of {}", t.qualified()),
                e,
            )
        })?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}
