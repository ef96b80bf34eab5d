//! Replaying the captured oplog with ordinary commands, to the backup's
//! end time.

use backup_core::{Error, FileKind, Result};
use futures::StreamExt;
use mongodb::bson::{Document, RawDocumentBuf};
use mongodb::error::ErrorKind;

use super::super::conn::Conn;
use super::super::oplog::{plan_entry, Op};
use super::split::DocSplitter;
use super::state::Restore;

pub(super) fn is_code(e: &mongodb::error::Error, codes: &[i32]) -> bool {
    match e.kind.as_ref() {
        ErrorKind::Command(c) => codes.contains(&c.code),
        _ => false,
    }
}

/// `replaceOne` of the document `filter` selects, inserting it when
/// `upsert` (an oplog insert) and none matches.
async fn replace(
    conn: &Conn,
    db: &str,
    coll: &str,
    filter: Document,
    doc: Document,
    upsert: bool,
) -> std::result::Result<(), mongodb::error::Error> {
    conn.client
        .database(db)
        .collection::<Document>(coll)
        .replace_one(filter, doc)
        .upsert(upsert)
        .bypass_document_validation(true)
        .await
        .map(drop)
}

async fn apply(conn: &Conn, op: Op) -> Result<()> {
    let fail = |what: &str, e: mongodb::error::Error| {
        conn.error(&format!("replaying the oplog: {what}"), e)
    };
    match op {
        Op::Upsert {
            db,
            coll,
            filter,
            doc,
        } => replace(conn, &db, &coll, filter, doc, true)
            .await
            .map_err(|e| fail(&format!("insert into {db}.{coll}"), e))?,
        Op::Update {
            db,
            coll,
            filter,
            updates,
        } => {
            let c = conn.client.database(&db).collection::<Document>(&coll);
            for u in updates {
                c.update_one(filter.clone(), u)
                    .bypass_document_validation(true)
                    .await
                    .map_err(|e| fail(&format!("update of {db}.{coll}"), e))?;
            }
        }
        Op::Replace {
            db,
            coll,
            filter,
            doc,
        } => replace(conn, &db, &coll, filter, doc, false)
            .await
            .map_err(|e| fail(&format!("replacement in {db}.{coll}"), e))?,
        Op::Delete { db, coll, filter } => {
            conn.client
                .database(&db)
                .collection::<Document>(&coll)
                .delete_one(filter)
                .await
                .map_err(|e| fail(&format!("delete from {db}.{coll}"), e))?;
        }
        Op::Command { db, cmd } => {
            let name = cmd.keys().next().cloned().unwrap_or_default();
            match conn.client.database(&db).run_command(cmd).await {
                Ok(_) => {}
                // Already in the state the command leads to: the copied
                // documents and metadata are newer than the entry.
                Err(e) if is_code(&e, &[26, 27, 48, 85, 86]) => {}
                Err(e) => return Err(fail(&format!("{name} on {db}"), e)),
            }
        }
    }
    Ok(())
}

impl Restore<'_> {
    /// The captured oplog, to the backup's end time; returns the
    /// operations replayed.
    pub(super) async fn replay_oplog(&self) -> Result<u64> {
        self.progress.set_phase("oplog");
        let mut replayed = 0u64;
        if let Some(node) = &self.loaded.oplog {
            let map = self.map;
            let scope = self.loaded.meta.scope.clone();
            let oplog_map = |db: &str, coll: &str| -> Option<(String, String)> {
                if coll.is_empty() {
                    return map(db, coll);
                }
                if !scope.covers(db, coll).unwrap_or(false) {
                    return None;
                }
                map(db, coll)
            };
            let mut split = DocSplitter::new(usize::MAX);
            let mut stream = self.snapshot.content(node);
            while let Some(chunk) = stream.next().await {
                split.push(&chunk?);
                while let Some(raw) = split
                    .next_doc()
                    .map_err(|m| Error::corrupt(FileKind::Pack, "oplog.bson", m))?
                {
                    let entry = RawDocumentBuf::from_bytes(raw)
                        .and_then(|r| r.to_document())
                        .map_err(|e| Error::corrupt(FileKind::Pack, "oplog.bson", e.to_string()))?;
                    for op in plan_entry(&entry, &oplog_map)? {
                        apply(self.conn, op).await?;
                        replayed += 1;
                    }
                }
            }
        }
        Ok(replayed)
    }
}
