//! Entry points for the fuzz targets in `fuzz/` (docs/FUZZING.md): bytes
//! the program did not write, handed to this module's parsers. A fuzz
//! run fails only on a panic, an abort, an oversized allocation or a
//! hang. Compiled only with the `fuzzing` feature; not a stable interface.

use mongodb::bson::{Document, RawDocument, RawDocumentBuf};

use super::oplog::plan_entry;
use super::target::split::DocSplitter;

/// A captured oplog piece (concatenated BSON entries, split as replay
/// splits them): each entry checked as raw BSON, converted to a document
/// and planned as replay plans it, with the operations of an `applyOps`
/// entry planned one by one.
pub fn oplog_piece(data: &[u8]) {
    let mut split = DocSplitter::new(16 * 1024 * 1024);
    split.push(data);
    while let Ok(Some(raw)) = split.next_doc() {
        if let Ok(r) = RawDocument::from_bytes(&raw) {
            walk(r, 0);
        }
        let Ok(entry) = RawDocumentBuf::from_bytes(raw).and_then(|r| r.to_document()) else {
            continue;
        };
        plan(&entry);
        if let Ok(ops) = entry
            .get_document("o")
            .and_then(|o| o.get_array("applyOps"))
        {
            for inner in ops.iter().filter_map(|b| b.as_document()) {
                plan(inner);
            }
        }
    }
    let _ = split.has_rest();
}

fn plan(entry: &Document) {
    let same = |db: &str, coll: &str| Some((db.to_owned(), coll.to_owned()));
    let _ = plan_entry(entry, &same);
}

/// Reads every element of a raw document, nested ones included.
fn walk(doc: &RawDocument, depth: usize) {
    if depth > 200 {
        return;
    }
    for el in doc {
        let Ok((_, v)) = el else { return };
        if let Some(d) = v.as_document() {
            walk(d, depth + 1);
        } else if let Some(a) = v.as_array() {
            for item in a.into_iter().flatten() {
                if let Some(d) = item.as_document() {
                    walk(d, depth + 1);
                }
            }
        }
    }
}
