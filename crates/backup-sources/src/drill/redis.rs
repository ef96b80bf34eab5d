//! Redis: key and size checks, emptying scratch databases, stopping a
//! throwaway server.

use backup_core::Result;

use crate::redis::conn::RedisUrl;

/// Writes the canary key `id` names (`backup_drill:canary:ID`, its value
/// the id, expiring in a week so that canaries do not pile up) to the
/// database the URL names (0 when none); returns the database, the key
/// and the primary's replication offset once the write is in its stream.
pub(super) async fn write_canary(url: &str, id: &str) -> Result<(u32, String, u64)> {
    let u = RedisUrl::parse(url)?;
    let db = u.db.unwrap_or(0);
    let key = format!("{}{id}", super::REDIS_CANARY_PREFIX);
    let mut con = u.connect().await?;
    let (info,): (String,) = redis::pipe()
        .cmd("SELECT")
        .arg(db)
        .ignore()
        .cmd("SET")
        .arg(&key)
        .arg(id)
        .arg("EX")
        .arg(7 * 24 * 3600)
        .ignore()
        .cmd("INFO")
        .arg("replication")
        .query_async(&mut con)
        .await
        .map_err(|e| u.error(&format!("writing the drill's canary {key}"), e))?;
    let offset = info
        .lines()
        .find_map(|l| l.strip_prefix("master_repl_offset:"))
        .and_then(|v| v.trim().parse().ok())
        .ok_or_else(|| {
            backup_core::Error::source_failed(format!(
                "{}: INFO replication has no master_repl_offset",
                u.redacted()
            ))
        })?;
    Ok((db, key, offset))
}

pub(super) async fn key_exists(url: &str, db: u32, key: &str) -> Result<bool> {
    let u = RedisUrl::parse(url)?;
    let mut con = u.connect().await?;
    let (n,): (u64,) = redis::pipe()
        .cmd("SELECT")
        .arg(db)
        .ignore()
        .cmd("EXISTS")
        .arg(key)
        .query_async(&mut con)
        .await
        .map_err(|e| u.error(&format!("EXISTS in database {db}"), e))?;
    Ok(n > 0)
}

pub(super) async fn dbsizes(url: &str, dbs: &[u32]) -> Result<Vec<u64>> {
    let u = RedisUrl::parse(url)?;
    let mut con = u.connect().await?;
    let mut out = Vec::with_capacity(dbs.len());
    for db in dbs {
        let (n,): (u64,) = redis::pipe()
            .cmd("SELECT")
            .arg(*db)
            .ignore()
            .cmd("DBSIZE")
            .query_async(&mut con)
            .await
            .map_err(|e| u.error(&format!("DBSIZE of database {db}"), e))?;
        out.push(n);
    }
    Ok(out)
}

pub(super) async fn flush(url: &str, dbs: &[u32]) -> Result<()> {
    let u = RedisUrl::parse(url)?;
    let mut con = u.connect().await?;
    for db in dbs {
        redis::pipe()
            .cmd("SELECT")
            .arg(*db)
            .ignore()
            .cmd("FLUSHDB")
            .ignore()
            .query_async::<()>(&mut con)
            .await
            .map_err(|e| u.error(&format!("FLUSHDB of database {db}"), e))?;
    }
    Ok(())
}

pub(super) async fn shutdown(url: &str) -> Result<()> {
    let u = RedisUrl::parse(url)?;
    let Ok(mut con) = u.connect().await else {
        return Ok(());
    };
    // The server closes the connection instead of answering.
    let _ = redis::cmd("SHUTDOWN")
        .arg("NOSAVE")
        .query_async::<()>(&mut con)
        .await;
    Ok(())
}
