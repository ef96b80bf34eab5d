//! One collection of a snapshot as canonical Extended JSON lines or as
//! BSON ([`crate::item`]).
//!
//! `json` writes each stored document as canonical Extended JSON v2 (the
//! form `mongoexport --jsonFormat=canonical` writes: every type kept,
//! `{"$numberInt": "1"}`, `{"$date": {"$numberLong": ...}}`, field order
//! kept), one a line; `bson` writes the stored documents as they are,
//! which is a `mongodump` collection file (`bsondump` reads it).

use std::io::Read;

use backup_core::reader::{ContentReader, SnapshotReader};
use backup_core::tree::Node;
use backup_core::{Error, Result};
use mongodb::bson::{Bson, Document};

use super::export::canonical_json;
use super::target::split::DocSplitter;
use super::target::{load, Planned};
use crate::item::{one_row, write_blocking, write_error, ItemDump, ItemFormat, OpenItem};

/// The largest document read back (the server's maximum is 16 MiB; a
/// stored one over it is damage).
pub(super) const MAX_DOCUMENT: usize = 16 * 1024 * 1024 + 16 * 1024;

/// Writes the collection `path` names (see [`crate::item::dump_item`]).
pub(crate) async fn dump_collection(
    snapshot: &SnapshotReader,
    path: &str,
    format: ItemFormat,
    open: OpenItem,
) -> Result<ItemDump> {
    let (_, row) = one_row(snapshot, path)?;
    let (db, coll) = match row.path.as_slice() {
        [db, coll] => (db.clone(), coll.clone()),
        _ => return Err(snapshot.damaged(format!("collection without a database: {}", row.name))),
    };
    let loaded = load(snapshot, &|d, c| {
        (d == db && c == coll).then(|| (d.to_owned(), c.to_owned()))
    })
    .await?;
    let planned: Planned = loaded
        .collections
        .into_iter()
        .next()
        .ok_or_else(|| snapshot.damaged(format!("no metadata for {}", row.name)))?;
    let Some(node) = planned.documents.clone() else {
        return Err(Error::Config(format!(
            "{} is a view: it has no documents of its own (its definition is in `backup ls --json`)",
            row.name
        )));
    };
    let reader = snapshot.clone();
    let name = row.name.clone();
    let (count, bytes) = write_blocking(format, open, move |out| {
        if format == ItemFormat::Bson {
            let mut content = reader.blocking_content(&node);
            std::io::copy(&mut content, out)
                .map_err(|e| content.take_error().unwrap_or_else(|| write_error(e)))?;
            check_end(&reader, &name, &content, &node)?;
            return Ok(planned.meta.documents);
        }
        let mut count = 0u64;
        let mut line = String::new();
        each_document(&reader, &node, &name, |_, doc| {
            line.clear();
            canonical_json(&Bson::Document(doc), &mut line);
            line.push('\n');
            out.write_all(line.as_bytes()).map_err(write_error)?;
            count += 1;
            Ok(())
        })?;
        Ok(count)
    })
    .await?;
    Ok(ItemDump {
        name: row.name,
        item: "collection",
        format,
        count,
        bytes,
    })
}

/// Reads the stored documents of the collection `name` (its documents'
/// node in `reader`'s snapshot), handing each to `each` as stored and
/// parsed, and checks that they fill the node exactly. It blocks: call it
/// on a blocking thread.
///
/// # Errors
///
/// `each`'s errors; errors reading the content (storage, damage);
/// [`Error::Corrupt`] for a document that does not parse or a node whose
/// bytes do not end with a whole document or its size.
pub(super) fn each_document(
    reader: &SnapshotReader,
    node: &Node,
    name: &str,
    mut each: impl FnMut(&[u8], Document) -> Result<()>,
) -> Result<()> {
    let mut content = reader.blocking_content(node);
    let mut split = DocSplitter::new(MAX_DOCUMENT);
    let mut buf = vec![0u8; 1 << 16];
    let mut seen = 0u64;
    loop {
        let n = content
            .read(&mut buf)
            .map_err(|e| content.take_error().unwrap_or_else(|| write_error(e)))?;
        if n == 0 {
            break;
        }
        split.push(&buf[..n]);
        while let Some(raw) = split
            .next_doc()
            .map_err(|e| reader.damaged(format!("{name}: {e}")))?
        {
            seen += 1;
            let doc = Document::from_reader(raw.as_slice())
                .map_err(|e| reader.damaged(format!("{name}: document {seen}: {e}")))?;
            each(&raw, doc)?;
        }
    }
    if split.has_rest() {
        return Err(reader.damaged(format!("{name}: the documents end inside one")));
    }
    check_end(reader, name, &content, node)
}

/// Checks that `content` read as many bytes as `node` holds.
fn check_end(
    reader: &SnapshotReader,
    name: &str,
    content: &ContentReader,
    node: &Node,
) -> Result<()> {
    if content.bytes_read() == node.size {
        Ok(())
    } else {
        Err(reader.damaged(format!(
            "{name}: the documents hold {} bytes, their entry says {}",
            content.bytes_read(),
            node.size
        )))
    }
}
