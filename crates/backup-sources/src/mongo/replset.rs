//! Which replica set a server belongs to, and the edges of its oplog:
//! what both a backup (`source`) and the oplog follower (`follow`) ask
//! before they read.

use backup_core::{Error, Result};
use mongodb::bson::{doc, Document};

use super::conn::{Conn, Hello};
use super::{ReplicaSet, Ts};

/// The replica set a connection reaches, refusing what has no usable
/// oplog: a standalone server (no oplog) and a `mongos` (one oplog per
/// shard, not captured consistently).
pub(crate) async fn identify(conn: &Conn, hello: &Hello) -> Result<ReplicaSet> {
    let name = replica_set_name(hello, &conn.redacted)?;
    Ok(ReplicaSet {
        name,
        id: replica_set_id(conn).await,
    })
}

/// The replica set's name from `hello`, or why the server has no oplog to
/// capture (`redacted` names it).
fn replica_set_name(hello: &Hello, redacted: &str) -> Result<String> {
    if hello.mongos {
        return Err(Error::Config(format!(
            "{redacted} is a mongos (sharded cluster): continuous oplog capture of sharded clusters is not supported yet, because the shards' oplogs would not be captured consistently with each other; capture each shard's replica set separately only if you can restore them independently"
        )));
    }
    hello.set_name.clone().ok_or_else(|| {
        Error::Config(format!(
            "{redacted} is a standalone server: it has no oplog, so there is nothing to capture; run it as a replica set (a single member is enough: --replSet NAME, then rs.initiate())"
        ))
    })
}

/// `settings.replicaSetId` from `replSetGetConfig`, when the server has
/// the command and lets this user run it.
async fn replica_set_id(conn: &Conn) -> Option<String> {
    let reply = conn
        .client
        .database("admin")
        .run_command(doc! {"replSetGetConfig": 1})
        .await
        .ok()?;
    reply
        .get_document("config")
        .ok()?
        .get_document("settings")
        .ok()?
        .get_object_id("replicaSetId")
        .ok()
        .map(mongodb::bson::oid::ObjectId::to_hex)
}

/// The newest (`order` -1) or oldest (1) oplog timestamp, zero when the
/// oplog is empty. Read in natural order, which mongod answers from the
/// end of the capped collection without scanning it (a `ts` sort would
/// scan the whole oplog).
pub(crate) async fn oplog_edge(conn: &Conn, order: i32) -> Result<Ts> {
    let coll = conn
        .client
        .database("local")
        .collection::<Document>("oplog.rs");
    let found = coll
        .find_one(doc! {})
        .sort(doc! {"$natural": order})
        .projection(doc! {"ts": 1})
        .await
        .map_err(|e| conn.error("reading the oplog position", e))?;
    Ok(found
        .and_then(|d| d.get_timestamp("ts").ok())
        .map(Ts::from)
        .unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(set_name: Option<&str>, mongos: bool) -> Hello {
        Hello {
            set_name: set_name.map(str::to_owned),
            mongos,
            max_bson_size: 16 << 20,
            max_message_size: 48 << 20,
            max_batch: 100_000,
            last_write: None,
            last_write_date: None,
        }
    }

    #[test]
    fn refuses_servers_without_a_capturable_oplog() {
        let url = "mongodb://db1:27017/";
        let e = replica_set_name(&hello(None, true), url).unwrap_err();
        assert!(matches!(e, Error::Config(_)));
        assert!(e.to_string().contains("is a mongos"), "{e}");
        let e = replica_set_name(&hello(None, false), url).unwrap_err();
        assert!(e.to_string().contains("is a standalone server"), "{e}");
        assert_eq!(
            replica_set_name(&hello(Some("rs0"), false), url).unwrap(),
            "rs0"
        );
    }
}
