//! Documents erased from a snapshot ([`crate::erase`]): a collection a
//! filter names has its stored documents read one by one, and those
//! whose fields equal the filter's values are left out. The snapshot's
//! captured oplog (`oplog.bson`) loses the entries of that namespace that
//! carry such a document or name one of their `_id`s (found by reading
//! the collection first), so a restore's replay cannot bring them back.
//! The manifest's document, byte and oplog counts follow, so a restore's
//! count check still holds. Operations inside transactions (`applyOps`
//! entries) are not looked into.

use std::collections::HashMap;
use std::io::Read;
use std::sync::{Arc, Mutex, PoisonError};

use backup_core::reader::{ContentReader, SnapshotReader};
use backup_core::rewrite::{ContentFilter, Edits};
use backup_core::source::BlockingReader;
use backup_core::tree::Node;
use backup_core::{Error, Result};
use futures::StreamExt as _;
use mongodb::bson::{Bson, Document};

use super::item::MAX_DOCUMENT;
use super::{tree_name, Metadata, DATABASES, DOCUMENTS, OPLOG};
use crate::erase::{KindEdits, MongoDelete, RecordFilter, Removed};

/// The key of the captured oplog's counts (no namespace has a space
/// first).
const OPLOG_COUNT: &str = " oplog";

/// One filter with its values as BSON.
#[derive(Debug, Clone)]
struct Test {
    fields: Vec<(String, Bson)>,
}

impl Test {
    fn matches(&self, doc: &Document) -> bool {
        self.fields
            .iter()
            .all(|(path, want)| field(doc, path).is_some_and(|have| same(have, want)))
    }
}

/// The value at a dotted path.
fn field<'a>(doc: &'a Document, path: &str) -> Option<&'a Bson> {
    let mut parts = path.split('.');
    let mut cur = doc.get(parts.next()?)?;
    for p in parts {
        cur = match cur {
            Bson::Document(d) => d.get(p)?,
            _ => return None,
        };
    }
    Some(cur)
}

/// Equality as MongoDB's: numbers by value whatever their type (exactly,
/// as the server compares them).
#[allow(clippy::float_cmp)]
fn same(a: &Bson, b: &Bson) -> bool {
    let num = |v: &Bson| match v {
        Bson::Int32(i) => Some(f64::from(*i)),
        Bson::Int64(i) => Some(*i as f64),
        Bson::Double(d) => Some(*d),
        _ => None,
    };
    match (num(a), num(b)) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

/// One collection's filters.
#[derive(Debug, Clone)]
struct CollEdit {
    ns: String,
    index: usize,
    tests: Vec<Test>,
}

struct MongoEdits {
    /// Documents path to its collection.
    colls: HashMap<String, CollEdit>,
    /// By namespace, for the oplog.
    by_ns: HashMap<String, CollEdit>,
    /// `_id`s of erased documents, by namespace (for the oplog).
    ids: Arc<Mutex<HashMap<String, Vec<Bson>>>>,
    removed: Arc<Removed>,
}

fn read_doc(r: &mut impl Read, rec: &mut Vec<u8>) -> std::io::Result<bool> {
    let mut len = [0u8; 4];
    let mut got = 0;
    while got < 4 {
        let n = r.read(&mut len[got..])?;
        if n == 0 {
            if got == 0 {
                return Ok(false);
            }
            return Err(std::io::Error::other("the documents end inside one"));
        }
        got += n;
    }
    let size = usize::try_from(i32::from_le_bytes(len)).unwrap_or(0);
    if !(5..=MAX_DOCUMENT).contains(&size) {
        return Err(std::io::Error::other(format!(
            "invalid document length {size}"
        )));
    }
    rec.extend_from_slice(&len);
    rec.resize(size, 0);
    r.read_exact(&mut rec[4..])?;
    Ok(true)
}

fn parse(rec: &[u8], what: &str) -> std::io::Result<Document> {
    Document::from_reader(rec).map_err(|e| std::io::Error::other(format!("{what}: {e}")))
}

/// The edits `erasures` make to the snapshot `reader` reads.
///
/// # Errors
///
/// [`Error::Config`] for a filter value that is not Extended JSON, or a
/// filter on a view; damaged metadata or data.
pub(crate) async fn edits(reader: &SnapshotReader, erasures: &[MongoDelete]) -> Result<KindEdits> {
    let removed = Arc::new(Removed::default());
    if erasures.is_empty() {
        return Ok(KindEdits {
            edits: None,
            applies: Vec::new(),
            removed,
        });
    }
    let meta: Metadata = serde_json::from_value(reader.snapshot().metadata.clone())
        .map_err(|e| reader.damaged(e))?;
    let mut colls: HashMap<String, CollEdit> = HashMap::new();
    let mut applies = Vec::new();
    for m in erasures {
        let Some((index, c)) = meta
            .collections
            .iter()
            .enumerate()
            .find(|(_, c)| c.db == m.db && c.name == m.collection)
        else {
            continue;
        };
        if c.is_view() {
            return Err(Error::Config(format!(
                "{} is a view: it has no documents of its own; erase from the collection it shows",
                c.ns()
            )));
        }
        let mut fields = Vec::new();
        for (k, v) in m.pairs() {
            let b = Bson::try_from(v.clone()).map_err(|e| {
                Error::Config(format!(
                    "--mongo-delete {}: the value of `{k}` is not Extended JSON: {e}",
                    m.namespace()
                ))
            })?;
            fields.push((k.to_owned(), b));
        }
        applies.push(m.describe());
        let path = format!(
            "{DATABASES}/{}/{}/{DOCUMENTS}",
            tree_name(&c.db),
            tree_name(&c.name)
        );
        colls
            .entry(path)
            .or_insert_with(|| CollEdit {
                ns: c.ns(),
                index,
                tests: Vec::new(),
            })
            .tests
            .push(Test { fields });
    }
    if applies.is_empty() {
        return Ok(KindEdits {
            edits: None,
            applies,
            removed,
        });
    }
    // The oplog names documents by `_id`: find those that go first.
    let mut ids: HashMap<String, Vec<Bson>> = HashMap::new();
    if meta.oplog.as_ref().is_some_and(|o| o.entries > 0) {
        for (path, edit) in &colls {
            let parts: Vec<&str> = path.split('/').collect();
            let Some((file, dirs)) = parts.split_last() else {
                continue;
            };
            let Some(node) = reader.dir(dirs).await?.and_then(|d| d.get(file).cloned()) else {
                continue;
            };
            let mut stream = reader.content(&node);
            let mut buf: Vec<u8> = Vec::new();
            while let Some(chunk) = stream.next().await {
                buf.extend_from_slice(&chunk?);
                let mut at = 0;
                while buf.len() - at >= 4 {
                    let size = usize::try_from(i32::from_le_bytes([
                        buf[at],
                        buf[at + 1],
                        buf[at + 2],
                        buf[at + 3],
                    ]))
                    .unwrap_or(0);
                    if size < 5 {
                        return Err(reader.damaged(format!("{}: invalid document length", edit.ns)));
                    }
                    if buf.len() - at < size {
                        break;
                    }
                    let doc =
                        parse(&buf[at..at + size], &edit.ns).map_err(|e| reader.damaged(e))?;
                    if edit.tests.iter().any(|t| t.matches(&doc)) {
                        if let Some(id) = doc.get("_id") {
                            ids.entry(edit.ns.clone()).or_default().push(id.clone());
                        }
                    }
                    at += size;
                }
                buf.drain(..at);
            }
        }
    }
    let by_ns = colls.values().map(|c| (c.ns.clone(), c.clone())).collect();
    let edits = MongoEdits {
        colls,
        by_ns,
        ids: Arc::new(Mutex::new(ids)),
        removed: removed.clone(),
    };
    Ok(KindEdits {
        edits: Some(Arc::new(edits)),
        applies,
        removed,
    })
}

impl MongoEdits {
    fn documents(&self, edit: CollEdit) -> ContentFilter {
        let removed = self.removed.clone();
        Box::new(move |content: ContentReader| {
            let mut n = 0u64;
            Box::new(RecordFilter {
                inner: std::io::BufReader::with_capacity(1 << 16, content),
                next: |r: &mut std::io::BufReader<ContentReader>,
                       rec: &mut Vec<u8>|
                 -> std::io::Result<bool> { read_doc(r, rec) },
                keep: move |rec: &[u8]| -> std::io::Result<bool> {
                    n += 1;
                    let doc = parse(rec, &format!("{}: document {n}", edit.ns))?;
                    let hit = edit.tests.iter().any(|t| t.matches(&doc));
                    if hit {
                        removed.add(&edit.ns, 1, rec.len() as u64);
                    }
                    Ok(!hit)
                },
                out: Vec::new(),
                pos: 0,
                done: false,
            }) as BlockingReader
        })
    }

    fn oplog(&self) -> ContentFilter {
        let removed = self.removed.clone();
        let by_ns = self.by_ns.clone();
        let ids = self.ids.clone();
        Box::new(move |content: ContentReader| {
            Box::new(RecordFilter {
                inner: std::io::BufReader::with_capacity(1 << 16, content),
                next: |r: &mut std::io::BufReader<ContentReader>,
                       rec: &mut Vec<u8>|
                 -> std::io::Result<bool> { read_doc(r, rec) },
                keep: move |rec: &[u8]| -> std::io::Result<bool> {
                    let entry = parse(rec, "oplog entry")?;
                    let Ok(ns) = entry.get_str("ns") else {
                        return Ok(true);
                    };
                    let Some(edit) = by_ns.get(ns) else {
                        return Ok(true);
                    };
                    let mut ids = ids.lock().unwrap_or_else(PoisonError::into_inner);
                    let known = ids.entry(ns.to_owned()).or_default();
                    let o = entry.get_document("o").ok();
                    let o2 = entry.get_document("o2").ok();
                    let carries = o.is_some_and(|o| edit.tests.iter().any(|t| t.matches(o)));
                    let names = [o, o2]
                        .into_iter()
                        .flatten()
                        .filter_map(|d| d.get("_id"))
                        .any(|id| known.iter().any(|k| same(k, id)));
                    if carries {
                        if let Some(id) = o.and_then(|o| o.get("_id")) {
                            known.push(id.clone());
                        }
                    }
                    if carries || names {
                        removed.add(OPLOG_COUNT, 1, rec.len() as u64);
                        return Ok(false);
                    }
                    Ok(true)
                },
                out: Vec::new(),
                pos: 0,
                done: false,
            }) as BlockingReader
        })
    }
}

impl Edits for MongoEdits {
    fn drops(&self, _path: &str, _node: &Node) -> bool {
        false
    }

    fn filter(&self, path: &str, _node: &Node) -> Option<ContentFilter> {
        if path == OPLOG {
            return Some(self.oplog());
        }
        let edit = self.colls.get(path)?.clone();
        Some(self.documents(edit))
    }

    fn metadata(&self, original: &serde_json::Value) -> Result<serde_json::Value> {
        let mut meta = original.clone();
        let counts = self.removed.counts();
        let damaged = || Error::Config("a MongoDB manifest without its counts".to_owned());
        let (mut docs, mut bytes) = (0u64, 0u64);
        for edit in self.colls.values() {
            let Some(c) = counts.get(&edit.ns) else {
                continue;
            };
            let m = meta
                .get_mut("collections")
                .and_then(|t| t.get_mut(edit.index))
                .ok_or_else(damaged)?;
            for (key, less) in [("documents", c.records), ("bytes", c.bytes)] {
                let v = m
                    .get(key)
                    .and_then(serde_json::Value::as_u64)
                    .ok_or_else(damaged)?;
                m[key] = v.saturating_sub(less).into();
            }
            docs += c.records;
            bytes += c.bytes;
        }
        for (key, less) in [("total_documents", docs), ("total_bytes", bytes)] {
            let v = meta
                .get(key)
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(damaged)?;
            meta[key] = v.saturating_sub(less).into();
        }
        if let Some(c) = counts.get(OPLOG_COUNT) {
            if let Some(o) = meta.get_mut("oplog").filter(|o| o.is_object()) {
                for (key, less) in [("entries", c.records), ("bytes", c.bytes)] {
                    let v = o
                        .get(key)
                        .and_then(serde_json::Value::as_u64)
                        .ok_or_else(damaged)?;
                    o[key] = v.saturating_sub(less).into();
                }
            }
        }
        Ok(meta)
    }
}
