//! Redis: key and size checks, emptying scratch databases, stopping a
//! throwaway server.

use backup_core::Result;

use crate::redis::conn::RedisUrl;

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
