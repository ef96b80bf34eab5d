//! One collection as it was at a point in time, without a server:
//! `backup dump SNAPSHOT shop.orders --at TIME`.
//!
//! The base snapshot's documents of the collection, then its own oplog
//! window and the captured oplog up to the target, replayed in memory for
//! that one namespace. The captured entries go through the same reader as
//! a restore to a point ([`super::target::feed`], with transactions
//! unwrapped at their commit) and the same translation into steps
//! ([`plan_entry`]); the steps are then applied here instead of being
//! sent to a server, with the semantics a restore's replay has: an insert
//! is an upsert, a replacement or update of a missing document changes
//! nothing, a delete removes it.
//!
//! Memory: the steps of this one namespace inside the replayed range are
//! held, grouped by `_id` (and the documents they end with); the base's
//! documents are streamed once, each changed one folded with its steps
//! as it passes. Documents are written in the order a collection scan of
//! the source returns them: the base's stored order (a changed document
//! keeps its place), then the documents inserted later (or deleted and
//! inserted again) in the order of their insert.
//!
//! Within the range: a drop of the collection (or of its database, or a
//! rename of it to another name) empties it, and what is inserted after
//! recreates it; a collection renamed *into* this name, or converted to
//! a capped one, is refused (its documents would come from elsewhere):
//! `backup restore --at` into a scratch server handles both. Update
//! operators other than the ones oplog entries carry (`$set`, `$unset`,
//! array truncation) are refused the same way.

use std::collections::HashMap;

use backup_core::capture::CaptureReplay;
use backup_core::reader::SnapshotReader;
use backup_core::{Error, Result};
use mongodb::bson::{doc, Bson, Document};

use super::export::canonical_json;
use super::item::each_document;
use super::oplog::{plan_entry, Op};
use super::target::{feed, load, Replayer};
use super::Ts;
use crate::item::{one_row, write_blocking, write_error, ItemDump, ItemFormat, OpenItem};

/// What the replay says to do with a document after the base: its steps,
/// each with its place in the replayed order.
type Steps = Vec<(u64, Op)>;

/// The replayed history of one namespace.
#[derive(Default)]
struct History {
    db: String,
    coll: String,
    /// Steps per `_id` (its BSON encoding), in order.
    docs: HashMap<Vec<u8>, Steps>,
    /// Steps seen so far.
    seq: u64,
    /// The base's documents are gone (a drop, or a rename away).
    base_gone: bool,
    /// Whether the collection exists after the steps seen so far.
    exists: bool,
    /// The timestamp of the last drop, for the message when it stays
    /// dropped.
    dropped_at: Option<String>,
}

/// The key of an `_id`: its BSON encoding.
fn id_key(id: &Bson) -> Result<Vec<u8>> {
    let mut out = Vec::new();
    doc! {"_id": id.clone()}
        .to_writer(&mut out)
        .map_err(|e| Error::Config(format!("an _id that cannot be encoded: {e}")))?;
    Ok(out)
}

fn refuse(ns: &str, why: &str) -> Error {
    Error::Config(format!(
        "{ns}: {why}; `backup dump --at` cannot rebuild it from the oplog: restore to the point instead (`backup restore --at TIME --include {ns} --to mongodb://SCRATCH`) and read it there"
    ))
}

impl History {
    fn ns(&self) -> String {
        format!("{}.{}", self.db, self.coll)
    }

    /// Takes one oplog entry (a transaction's operations one by one).
    fn entry(&mut self, entry: &Document) -> Result<()> {
        let ts = entry.get_timestamp("ts").map(Ts::from).ok();
        let at = ts.map_or_else(|| "?".to_owned(), |t| t.to_string());
        if entry.get_str("op") == Ok("c") {
            if let Ok(o) = entry.get_document("o") {
                let ns = self.ns();
                if o.get_str("to") == Ok(ns.as_str())
                    && o.get_str("renameCollection").is_ok_and(|f| f != ns)
                {
                    return Err(refuse(
                        &ns,
                        &format!(
                            "{} was renamed into it at {at}",
                            o.get_str("renameCollection").unwrap_or("?")
                        ),
                    ));
                }
                if o.get_str("convertToCapped") == Ok(self.coll.as_str())
                    && entry
                        .get_str("ns")
                        .is_ok_and(|n| n.split('.').next() == Some(&self.db))
                {
                    return Err(refuse(&ns, &format!("it was converted to capped at {at}")));
                }
            }
        }
        let (db, coll) = (self.db.clone(), self.coll.clone());
        let map = move |d: &str, c: &str| {
            (d == db && (c == coll || c.is_empty())).then(|| (d.to_owned(), c.to_owned()))
        };
        for op in plan_entry(entry, &map)? {
            self.step(op, &at)?;
        }
        Ok(())
    }

    fn step(&mut self, op: Op, at: &str) -> Result<()> {
        let id = match &op {
            Op::Upsert { filter, .. }
            | Op::Update { filter, .. }
            | Op::Replace { filter, .. }
            | Op::Delete { filter, .. } => filter.get("_id").cloned(),
            Op::Command { cmd, .. } => {
                let name = cmd.keys().next().map(String::as_str).unwrap_or_default();
                match name {
                    "drop" | "dropDatabase" => {
                        self.docs.clear();
                        self.base_gone = true;
                        self.exists = false;
                        self.dropped_at = Some(at.to_owned());
                    }
                    "create" => self.exists = true,
                    "renameCollection" => {
                        return Err(refuse(&self.ns(), &format!("it was renamed at {at}")))
                    }
                    // Indexes, options: not part of the documents.
                    _ => {}
                }
                return Ok(());
            }
        };
        let Some(id) = id else {
            return Err(refuse(
                &self.ns(),
                &format!("an oplog entry at {at} names its document without an _id"),
            ));
        };
        if matches!(op, Op::Upsert { .. }) {
            self.exists = true;
        }
        self.seq += 1;
        self.docs
            .entry(id_key(&id)?)
            .or_default()
            .push((self.seq, op));
        Ok(())
    }
}

/// Where a document goes in the output.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Place {
    /// Where the base holds it.
    Base,
    /// After the base's documents, by the step that inserted it.
    Inserted(u64),
}

/// A document's state after its steps, from `base` (what the base holds,
/// or `None`), and where it goes.
fn fold(ns: &str, base: Option<Document>, steps: Steps) -> Result<Option<(Document, Place)>> {
    let mut place = base.as_ref().map(|_| Place::Base);
    let mut doc = base;
    for (seq, op) in steps {
        match op {
            Op::Upsert { doc: new, .. } => {
                if doc.is_none() {
                    place = Some(Place::Inserted(seq));
                }
                doc = Some(new);
            }
            Op::Replace { doc: new, .. } => {
                if let Some(d) = doc.as_mut() {
                    let id = d.get("_id").cloned();
                    *d = new;
                    if let (Some(id), false) = (id, d.contains_key("_id")) {
                        let mut with_id = doc! {"_id": id};
                        with_id.extend(std::mem::take(d));
                        *d = with_id;
                    }
                }
            }
            Op::Update { updates, .. } => {
                if let Some(d) = doc.as_mut() {
                    for u in &updates {
                        apply_update(ns, d, u)?;
                    }
                }
            }
            Op::Delete { .. } => {
                doc = None;
                place = None;
            }
            Op::Command { .. } => {}
        }
    }
    Ok(doc.zip(place))
}

/// Applies one update document of the forms oplog entries become
/// (`$set`, `$unset`, `$push` with `$each: []` and `$slice` to truncate).
fn apply_update(ns: &str, d: &mut Document, u: &Document) -> Result<()> {
    for (op, fields) in u {
        let fields = fields
            .as_document()
            .ok_or_else(|| refuse(ns, &format!("an update's {op} is not a document")))?;
        for (path, value) in fields {
            let parts: Vec<&str> = path.split('.').collect();
            match op.as_str() {
                "$set" => set_path(d, &parts, value.clone())
                    .map_err(|why| refuse(ns, &format!("$set of {path}: {why}")))?,
                "$unset" => unset_path(d, &parts),
                "$push" => {
                    let len = value
                        .as_document()
                        .filter(|s| s.get_array("$each").is_ok_and(Vec::is_empty))
                        .and_then(|s| match s.get("$slice") {
                            Some(Bson::Int32(n)) => usize::try_from(*n).ok(),
                            Some(Bson::Int64(n)) => usize::try_from(*n).ok(),
                            _ => None,
                        })
                        .ok_or_else(|| {
                            refuse(
                                ns,
                                &format!("an update pushes to {path} in a way not replayed"),
                            )
                        })?;
                    truncate_path(d, &parts, len);
                }
                other => {
                    return Err(refuse(
                        ns,
                        &format!("an update with {other}, which oplog replay does not apply"),
                    ))
                }
            }
        }
    }
    Ok(())
}

/// `$set` of a dotted path: missing documents on the way are created, an
/// array index past the end pads with nulls.
fn set_path(d: &mut Document, parts: &[&str], value: Bson) -> std::result::Result<(), String> {
    let Some((first, rest)) = parts.split_first() else {
        return Err("an empty path".to_owned());
    };
    if rest.is_empty() {
        d.insert(*first, value);
        return Ok(());
    }
    if !d.contains_key(*first) {
        d.insert(*first, Document::new());
    }
    match d.get_mut(*first) {
        Some(inner) => set_in(inner, rest, value),
        None => Err(format!("{first} vanished")),
    }
}

fn set_in(at: &mut Bson, parts: &[&str], value: Bson) -> std::result::Result<(), String> {
    match at {
        Bson::Document(d) => set_path(d, parts, value),
        Bson::Array(a) => {
            let (first, rest) = parts.split_first().ok_or("an empty path")?;
            let i: usize = first
                .parse()
                .map_err(|_| format!("`{first}` is not an index of an array"))?;
            if a.len() <= i {
                a.resize(i + 1, Bson::Null);
            }
            if rest.is_empty() {
                a[i] = value;
                return Ok(());
            }
            if a[i] == Bson::Null {
                a[i] = Bson::Document(Document::new());
            }
            set_in(&mut a[i], rest, value)
        }
        other => Err(format!("it goes through a {:?}", other.element_type())),
    }
}

/// `$unset` of a dotted path: a field is removed, an array element set to
/// null; a missing path changes nothing.
fn unset_path(d: &mut Document, parts: &[&str]) {
    match parts {
        [] => {}
        [last] => {
            d.remove(*last);
        }
        [first, rest @ ..] => {
            if let Some(inner) = d.get_mut(*first) {
                unset_in(inner, rest);
            }
        }
    }
}

fn unset_in(at: &mut Bson, parts: &[&str]) {
    match at {
        Bson::Document(d) => unset_path(d, parts),
        Bson::Array(a) => {
            let Some((first, rest)) = parts.split_first() else {
                return;
            };
            let Ok(i) = first.parse::<usize>() else {
                return;
            };
            let Some(e) = a.get_mut(i) else {
                return;
            };
            if rest.is_empty() {
                *e = Bson::Null;
            } else {
                unset_in(e, rest);
            }
        }
        _ => {}
    }
}

/// Truncates the array at a dotted path to `len` elements.
fn truncate_path(d: &mut Document, parts: &[&str], len: usize) {
    let mut at: Option<&mut Bson> = None;
    for (n, p) in parts.iter().enumerate() {
        let next = if n == 0 {
            d.get_mut(*p)
        } else {
            match at.take() {
                Some(Bson::Document(inner)) => inner.get_mut(*p),
                Some(Bson::Array(a)) => p.parse::<usize>().ok().and_then(|i| a.get_mut(i)),
                _ => None,
            }
        };
        let Some(next) = next else { return };
        at = Some(next);
    }
    if let Some(Bson::Array(a)) = at {
        a.truncate(len);
    }
}

/// Writes the collection `path` names as it was at the end of `replay`
/// (its captured oplog pieces and the last position to apply), from the
/// base snapshot `snapshot`: its documents, its own oplog window and the
/// captured entries, replayed in memory for that one collection (see the
/// module docs), in `format` (`json` or `bson`, as
/// [`crate::kind::dump_item`] writes them). `at` names the point in
/// messages.
///
/// # Errors
///
/// [`Error::Config`] for a view, a format other than `json` or `bson`, or
/// a history this replay does not rebuild (a rename into the collection,
/// a conversion to capped, an unknown update operator; the message says
/// to restore to the point instead); [`Error::NotFound`] when the
/// collection is neither in the base nor created by the replayed oplog,
/// or was dropped and not recreated by the point; damaged data; storage
/// errors; what `open` returns; errors writing the output.
pub async fn dump_collection_at(
    snapshot: &SnapshotReader,
    path: &str,
    format: ItemFormat,
    replay: Option<&CaptureReplay>,
    at: &str,
    open: OpenItem,
) -> Result<ItemDump> {
    if !matches!(format, ItemFormat::Json | ItemFormat::Bson) {
        return Err(Error::Config(format!(
            "a collection is written as json or bson, not {format}"
        )));
    }
    let (name, db, coll) = collection_named(snapshot, path)?;
    let loaded = load(snapshot, &|d, c| {
        (d == db && c == coll).then(|| (d.to_owned(), c.to_owned()))
    })
    .await?;
    let planned = loaded.collections.into_iter().next();
    if let Some(p) = &planned {
        if p.documents.is_none() {
            return Err(Error::Config(format!(
                "{name} is a view: it has no documents of its own (its definition is in `backup ls --json`)"
            )));
        }
    }
    let mut history = History {
        db: db.clone(),
        coll: coll.clone(),
        exists: planned.is_some(),
        ..History::default()
    };
    {
        let mut tap = |entry: &Document| history.entry(entry);
        let no_map = |_: &str, _: &str| -> Option<(String, String)> { None };
        let mut r = Replayer::tapped(&no_map, &mut tap);
        feed(snapshot, loaded.oplog.as_ref(), replay, &mut r).await?;
        r.finish().await?;
    }
    if !history.exists {
        return Err(Error::not_found(match &history.dropped_at {
            Some(ts) => format!("{name} at {at}: it was dropped at oplog time {ts} and not created again by then"),
            None => format!(
                "{name} at {at}: not in base snapshot {} nor created by the oplog after it (`backup ls {}` lists its collections)",
                snapshot.id().short(),
                snapshot.id().short()
            ),
        }));
    }
    let base = planned
        .filter(|_| !history.base_gone)
        .and_then(|p| p.documents);
    let reader = snapshot.clone();
    let ns = history.ns();
    let docs = history.docs;
    let (count, bytes) = write_blocking(format, open, move |out| {
        write_at(out, format, &ns, base.map(|node| (reader, node)), docs)
    })
    .await?;
    Ok(ItemDump {
        name,
        item: "collection",
        format,
        count,
        bytes,
    })
}

/// The collection `path` names (`DB.COLLECTION` or `DB/COLLECTION`): its
/// display name, database and collection. A name `snapshot` lacks may be
/// a collection created after it.
fn collection_named(snapshot: &SnapshotReader, path: &str) -> Result<(String, String, String)> {
    match one_row(snapshot, path) {
        Ok((_, row)) => match row.path.as_slice() {
            [db, coll] => Ok((row.name.clone(), db.clone(), coll.clone())),
            _ => Err(snapshot.damaged(format!("collection without a database: {}", row.name))),
        },
        Err(Error::NotFound { .. }) => {
            let (db, coll) = path
                .trim_matches('/')
                .split_once(['.', '/'])
                .filter(|(d, c)| !d.is_empty() && !c.is_empty())
                .ok_or_else(|| {
                    Error::Config(format!(
                        "name a collection as DB.COLLECTION or DB/COLLECTION, not `{path}`"
                    ))
                })?;
            Ok((format!("{db}.{coll}"), db.to_owned(), coll.to_owned()))
        }
        Err(e) => Err(e),
    }
}

/// Writes the collection `ns` at the point to `out`: the documents of the
/// base (its reader and the collection's node), with the replayed steps of
/// each `_id` in `docs` folded in, in the base's order; then the documents
/// inserted after it, in the order they were inserted. Returns the number
/// of documents written.
fn write_at(
    out: &mut dyn std::io::Write,
    format: ItemFormat,
    ns: &str,
    base: Option<(SnapshotReader, backup_core::tree::Node)>,
    mut docs: HashMap<Vec<u8>, Steps>,
) -> Result<u64> {
    let mut count = 0u64;
    let mut write = |out: &mut dyn std::io::Write, raw: Option<&[u8]>, d: &Document| {
        match (format, raw) {
            (ItemFormat::Bson, Some(raw)) => out.write_all(raw),
            (ItemFormat::Bson, None) => {
                let mut buf = Vec::new();
                d.to_writer(&mut buf)
                    .map_err(|e| Error::Config(format!("{ns}: a replayed document: {e}")))?;
                out.write_all(&buf)
            }
            _ => {
                let mut line = String::new();
                canonical_json(&Bson::Document(d.clone()), &mut line);
                line.push('\n');
                out.write_all(line.as_bytes())
            }
        }
        .map_err(write_error)?;
        count += 1;
        Ok::<_, Error>(())
    };
    let mut inserted: Vec<(u64, Document)> = Vec::new();
    if let Some((reader, node)) = base {
        each_document(&reader, &node, ns, |raw, d| {
            let steps = match d.get("_id") {
                Some(id) => docs.remove(&id_key(id)?),
                None => None,
            };
            let Some(steps) = steps else {
                return write(out, Some(raw), &d);
            };
            match fold(ns, Some(d), steps)? {
                Some((d, Place::Base)) => write(out, None, &d)?,
                Some((d, Place::Inserted(seq))) => inserted.push((seq, d)),
                None => {}
            }
            Ok(())
        })?;
    }
    for (_, steps) in docs.drain() {
        if let Some((d, place)) = fold(ns, None, steps)? {
            let seq = match place {
                Place::Inserted(s) => s,
                Place::Base => 0,
            };
            inserted.push((seq, d));
        }
    }
    inserted.sort_by_key(|(seq, _)| *seq);
    for (_, d) in &inserted {
        write(out, None, d)?;
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn steps(ops: Vec<Op>) -> Steps {
        ops.into_iter().zip(1..).map(|(op, n)| (n, op)).collect()
    }

    fn upd(updates: Vec<Document>) -> Op {
        Op::Update {
            db: "d".into(),
            coll: "c".into(),
            filter: doc! {"_id": 1},
            updates,
        }
    }

    #[test]
    fn updates_as_oplog_entries_carry_them() {
        let mut d = doc! {"_id": 1, "a": {"b": 1}, "arr": [1, 2, 3], "gone": true};
        apply_update(
            "d.c",
            &mut d,
            &doc! {"$set": {"a.b": 2, "a.c": "new", "arr.4": 9, "x.y": 1}, "$unset": {"gone": ""}},
        )
        .unwrap();
        assert_eq!(
            d,
            doc! {"_id": 1, "a": {"b": 2, "c": "new"}, "arr": [1, 2, 3, Bson::Null, 9], "x": {"y": 1}}
        );
        apply_update(
            "d.c",
            &mut d,
            &doc! {"$push": {"arr": {"$each": [], "$slice": 2}}},
        )
        .unwrap();
        assert_eq!(d.get_array("arr").unwrap().len(), 2);
        apply_update(
            "d.c",
            &mut d,
            &doc! {"$unset": {"arr.0": "", "no.such": ""}},
        )
        .unwrap();
        assert_eq!(d.get_array("arr").unwrap()[0], Bson::Null);
        let err = apply_update("d.c", &mut d, &doc! {"$inc": {"a.b": 1}}).unwrap_err();
        assert!(err.to_string().contains("backup restore --at"), "{err}");
        let err = apply_update("d.c", &mut d, &doc! {"$set": {"a.b.c": 1}}).unwrap_err();
        assert!(err.to_string().contains("a.b.c"), "{err}");
    }

    #[test]
    fn a_document_folds_its_steps_and_keeps_or_loses_its_place() {
        let up = |v: i32| Op::Upsert {
            db: "d".into(),
            coll: "c".into(),
            filter: doc! {"_id": 1},
            doc: doc! {"_id": 1, "v": v},
        };
        let del = Op::Delete {
            db: "d".into(),
            coll: "c".into(),
            filter: doc! {"_id": 1},
        };
        let base = doc! {"_id": 1, "v": 0};
        // Updated in place.
        let got = fold(
            "d.c",
            Some(base.clone()),
            steps(vec![upd(vec![doc! {"$set": {"v": 5}}])]),
        );
        assert_eq!(got.unwrap(), Some((doc! {"_id": 1, "v": 5}, Place::Base)));
        // Deleted, then inserted again: after the base, by its insert.
        let got = fold("d.c", Some(base.clone()), steps(vec![del.clone(), up(7)]));
        assert_eq!(
            got.unwrap(),
            Some((doc! {"_id": 1, "v": 7}, Place::Inserted(2)))
        );
        // Deleted for good.
        assert_eq!(fold("d.c", Some(base), steps(vec![del])).unwrap(), None);
        // An update of a missing document changes nothing.
        let got = fold("d.c", None, steps(vec![upd(vec![doc! {"$set": {"v": 1}}])]));
        assert_eq!(got.unwrap(), None);
        // A replacement keeps the _id first.
        let rep = Op::Replace {
            db: "d".into(),
            coll: "c".into(),
            filter: doc! {"_id": 1},
            doc: doc! {"w": 1},
        };
        let got = fold("d.c", Some(doc! {"_id": 1, "v": 0}), steps(vec![rep]));
        assert_eq!(got.unwrap(), Some((doc! {"_id": 1, "w": 1}, Place::Base)));
    }

    #[test]
    fn drops_empty_the_collection_and_renames_into_it_are_refused() {
        let mut h = History {
            db: "shop".into(),
            coll: "orders".into(),
            exists: true,
            ..History::default()
        };
        let ts = mongodb::bson::Timestamp {
            time: 10,
            increment: 1,
        };
        h.entry(&doc! {"op": "i", "ns": "shop.orders", "ts": ts, "o": {"_id": 1}})
            .unwrap();
        h.entry(&doc! {"op": "i", "ns": "shop.other", "ts": ts, "o": {"_id": 2}})
            .unwrap();
        assert_eq!(h.docs.len(), 1);
        h.entry(&doc! {"op": "c", "ns": "shop.$cmd", "ts": ts, "o": {"drop": "orders"}})
            .unwrap();
        assert!(h.base_gone && !h.exists && h.docs.is_empty());
        assert_eq!(h.dropped_at.as_deref(), Some("10:1"));
        h.entry(&doc! {"op": "i", "ns": "shop.orders", "ts": ts, "o": {"_id": 3}})
            .unwrap();
        assert!(h.exists);
        let err = h
            .entry(&doc! {"op": "c", "ns": "admin.$cmd", "ts": ts, "o": {"renameCollection": "shop.tmp", "to": "shop.orders"}})
            .unwrap_err();
        assert!(err.to_string().contains("renamed into"), "{err}");
        // Renamed away: gone from this name.
        h.entry(&doc! {"op": "c", "ns": "admin.$cmd", "ts": ts, "o": {"renameCollection": "shop.orders", "to": "shop.kept"}})
            .unwrap();
        assert!(!h.exists && h.docs.is_empty());
    }
}
