//! Oplog entries turned into ordinary commands for replay.
//!
//! Two dialects are understood:
//!
//! - real `mongod` entries: inserts (`i`), deletes (`d`), updates (`u`) as
//!   `$v:2` delta diffs (`u`, `i`, `d` and `s<field>` sub-diffs; array
//!   diffs with `a: true`, `l` new length, `u<index>` and `s<index>`) or as
//!   older `$v:1` `$set`/`$unset` documents or full replacements; command
//!   entries (`c`) for `create`, `drop`, `renameCollection`,
//!   `createIndexes` (one spec per entry), `commitIndexBuild`,
//!   `dropIndexes`, `collMod`, `dropDatabase` and transactions as one
//!   `applyOps` entry holding the operations;
//! - `SecantusDB`'s variant (the test server): update diffs as
//!   `diff: {updatedFields, removedFields, truncatedArrays}` with dotted
//!   paths, `createIndexes` with an `indexes` array, views created with
//!   `viewPipeline`, transactions logged operation by operation.
//!
//! Nothing here uses `applyOps` on the target: every operation becomes an
//! upsert, update, delete or ordinary command, which also makes replaying
//! over documents copied during the backup idempotent.

use backup_core::{Error, Result};
use mongodb::bson::{doc, Bson, Document};

/// One replay step, with namespaces already renamed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Op {
    /// Replace the document with `filter`'s `_id` by `doc`, inserting it
    /// when missing.
    Upsert {
        db: String,
        coll: String,
        filter: Document,
        doc: Document,
    },
    /// Apply `updates` in order to the document matching `filter`.
    Update {
        db: String,
        coll: String,
        filter: Document,
        updates: Vec<Document>,
    },
    /// Replace the document matching `filter` (an update without
    /// operators).
    Replace {
        db: String,
        coll: String,
        filter: Document,
        doc: Document,
    },
    /// Delete the document matching `filter`.
    Delete {
        db: String,
        coll: String,
        filter: Document,
    },
    /// Run an ordinary command on `db`.
    Command { db: String, cmd: Document },
}

/// Maps an original namespace to its target, `None` when it is not
/// restored.
pub(crate) type NsMap<'a> = dyn Fn(&str, &str) -> Option<(String, String)> + 'a;

/// Index spec fields that describe the server's internal state rather than
/// the index, left out when an index is recreated.
const INTERNAL_INDEX_FIELDS: [&str; 4] = ["ns", "entryFormat", "multikey", "buildUUID"];

/// An index spec ready for `createIndexes`.
pub(crate) fn clean_index_spec(spec: &Document) -> Document {
    let mut s = spec.clone();
    for f in INTERNAL_INDEX_FIELDS {
        s.remove(f);
    }
    s
}

/// Turns one oplog entry into replay steps (none when the namespace is
/// not restored or the entry changes nothing).
///
/// # Errors
///
/// [`Error::Target`] for an entry that cannot be replayed.
pub(crate) fn plan_entry(entry: &Document, map: &NsMap<'_>) -> Result<Vec<Op>> {
    let op = entry.get_str("op").unwrap_or("");
    let ns = entry.get_str("ns").unwrap_or("");
    let (db, coll) = ns.split_once('.').unwrap_or((ns, ""));
    let o = entry
        .get_document("o")
        .map_err(|_| bad(entry, "no `o` document"))?;
    match op {
        "n" => return Ok(Vec::new()),
        "c" => return plan_command(entry, db, o, map),
        "i" | "d" | "u" => {}
        other => return Err(bad(entry, &format!("unknown op `{other}`"))),
    }
    let Some((db, coll)) = map(db, coll) else {
        return Ok(Vec::new());
    };
    match op {
        "i" => {
            let id = o
                .get("_id")
                .ok_or_else(|| bad(entry, "insert without _id"))?;
            Ok(vec![Op::Upsert {
                db,
                coll,
                filter: doc! {"_id": id.clone()},
                doc: o.clone(),
            }])
        }
        "d" => {
            let filter = o.clone();
            Ok(vec![Op::Delete { db, coll, filter }])
        }
        _ => {
            let filter = entry
                .get_document("o2")
                .map_err(|_| bad(entry, "update without `o2`"))?
                .clone();
            plan_update(o, db, coll, filter).map_err(|m| bad(entry, &m))
        }
    }
}

/// The error for an oplog entry that cannot be replayed: why, and the
/// entry (its first 300 bytes).
pub(crate) fn bad(entry: &Document, why: &str) -> Error {
    let mut shown = format!("{entry}");
    if shown.len() > 300 {
        let cut = (0..=300).rev().find(|i| shown.is_char_boundary(*i));
        shown.truncate(cut.unwrap_or(0));
        shown.push_str("...");
    }
    Error::target_failed(format!("cannot replay oplog entry ({why}): {shown}"))
}

fn plan_update(
    o: &Document,
    db: String,
    coll: String,
    filter: Document,
) -> std::result::Result<Vec<Op>, String> {
    let mut u = o.clone();
    u.remove("$v");
    let updates = if let Ok(diff) = o.get_document("diff") {
        let mut acc = DiffAcc::default();
        if ["updatedFields", "removedFields", "truncatedArrays"]
            .iter()
            .any(|k| diff.contains_key(k))
        {
            secantus_diff(diff, &mut acc)?;
        } else {
            object_diff(diff, "", &mut acc)?;
        }
        acc.into_updates()
    } else if u.keys().any(|k| k.starts_with('$')) {
        vec![u]
    } else {
        return Ok(vec![Op::Replace {
            db,
            coll,
            filter,
            doc: u,
        }]);
    };
    if updates.is_empty() {
        return Ok(Vec::new());
    }
    Ok(vec![Op::Update {
        db,
        coll,
        filter,
        updates,
    }])
}

/// `$set`, `$unset` and array truncations collected from a `$v:2` diff.
#[derive(Default)]
struct DiffAcc {
    set: Document,
    unset: Document,
    truncate: Vec<(String, i64)>,
}

impl DiffAcc {
    fn into_updates(self) -> Vec<Document> {
        let mut out = Vec::new();
        if !self.truncate.is_empty() {
            let mut push = Document::new();
            for (path, len) in self.truncate {
                push.insert(path, doc! {"$each": [], "$slice": len});
            }
            out.push(doc! {"$push": push});
        }
        let mut u = Document::new();
        if !self.set.is_empty() {
            u.insert("$set", self.set);
        }
        if !self.unset.is_empty() {
            u.insert("$unset", self.unset);
        }
        if !u.is_empty() {
            out.push(u);
        }
        out
    }
}

fn join(prefix: &str, field: &str) -> String {
    if prefix.is_empty() {
        field.to_owned()
    } else {
        format!("{prefix}.{field}")
    }
}

fn object_diff(
    diff: &Document,
    prefix: &str,
    acc: &mut DiffAcc,
) -> std::result::Result<(), String> {
    for (k, v) in diff {
        match k.as_str() {
            "u" | "i" | "d" => {
                let fields = v
                    .as_document()
                    .ok_or_else(|| format!("diff `{k}` is not a document"))?;
                for (f, val) in fields {
                    if k == "d" {
                        acc.unset.insert(join(prefix, f), "");
                    } else {
                        acc.set.insert(join(prefix, f), val.clone());
                    }
                }
            }
            _ if k.starts_with('s') && k.len() > 1 => sub_diff(k, v, prefix, "sub-diff", acc)?,
            other => return Err(format!("unknown diff field `{other}`")),
        }
    }
    Ok(())
}

fn array_diff(diff: &Document, path: &str, acc: &mut DiffAcc) -> std::result::Result<(), String> {
    for (k, v) in diff {
        match k.as_str() {
            "a" => {}
            "l" => {
                let len = match v {
                    Bson::Double(n) => Some(*n as i64),
                    v => int(Some(v)),
                };
                let len = len.ok_or_else(|| "array diff `l` is not a number".to_owned())?;
                acc.truncate.push((path.to_owned(), len));
            }
            _ if k.starts_with('u') && k[1..].parse::<u64>().is_ok() => {
                acc.set.insert(join(path, &k[1..]), v.clone());
            }
            _ if k.starts_with('s') && k[1..].parse::<u64>().is_ok() => {
                sub_diff(k, v, path, "array sub-diff", acc)?;
            }
            other => return Err(format!("unknown array diff field `{other}`")),
        }
    }
    Ok(())
}

/// The sub-diff `v` under the field `key` (`s` and the field's name or
/// index) below `path`: of an array when it says `a: true`, else of an
/// object.
fn sub_diff(
    key: &str,
    v: &Bson,
    path: &str,
    what: &str,
    acc: &mut DiffAcc,
) -> std::result::Result<(), String> {
    let sub = v
        .as_document()
        .ok_or_else(|| format!("{what} `{key}` is not a document"))?;
    let path = join(path, &key[1..]);
    if sub.get_bool("a").unwrap_or(false) {
        array_diff(sub, &path, acc)
    } else {
        object_diff(sub, &path, acc)
    }
}

/// `SecantusDB`'s `diff: {updatedFields, removedFields, truncatedArrays}`.
fn secantus_diff(diff: &Document, acc: &mut DiffAcc) -> std::result::Result<(), String> {
    for e in diff.get_array("truncatedArrays").into_iter().flatten() {
        let e = e
            .as_document()
            .ok_or_else(|| "truncatedArrays entry is not a document".to_owned())?;
        let field = e
            .get_str("field")
            .map_err(|_| "truncatedArrays entry without field".to_owned())?;
        let len = int(e.get("newSize"))
            .ok_or_else(|| "truncatedArrays entry without newSize".to_owned())?;
        acc.truncate.push((field.to_owned(), len));
    }
    if let Ok(u) = diff.get_document("updatedFields") {
        acc.set.extend(u.clone());
    }
    for f in diff.get_array("removedFields").into_iter().flatten() {
        let f = f
            .as_str()
            .ok_or_else(|| "removedFields entry is not a string".to_owned())?;
        acc.unset.insert(f, "");
    }
    Ok(())
}

/// An `Int32` or `Int64` value as an `i64`.
pub(crate) fn int(v: Option<&Bson>) -> Option<i64> {
    match v? {
        Bson::Int32(n) => Some(i64::from(*n)),
        Bson::Int64(n) => Some(*n),
        _ => None,
    }
}

/// Turns a command entry (`op: "c"`, command `o`, run on `db`) into replay
/// steps.
fn plan_command(entry: &Document, db: &str, o: &Document, map: &NsMap<'_>) -> Result<Vec<Op>> {
    let Some((name, value)) = o.iter().next() else {
        return Err(bad(entry, "empty command"));
    };
    let missing = match name.as_str() {
        "applyOps" => return plan_apply_ops(entry, o, map),
        "renameCollection" => return plan_rename(entry, value, o, map),
        // Two-phase index builds are replayed at their commit; transaction
        // bookkeeping of mongod (prepared transactions are committed by
        // their applyOps entry).
        "startIndexBuild" | "abortIndexBuild" | "commitTransaction" | "abortTransaction" => {
            return Ok(Vec::new())
        }
        "dropDatabase" => {
            return Ok(map(db, "")
                .map(|(tdb, _)| Op::Command {
                    db: tdb,
                    cmd: doc! {"dropDatabase": 1},
                })
                .into_iter()
                .collect())
        }
        "create" => "create without a name",
        "drop" => "drop without a name",
        "createIndexes" | "commitIndexBuild" => "index build without a collection",
        "dropIndexes" | "deleteIndexes" => "dropIndexes without a collection",
        "collMod" | "convertToCapped" => "command without a collection",
        other => return Err(bad(entry, &format!("unsupported command `{other}`"))),
    };
    // The rest name a collection of `db`, renamed to the target's.
    let coll = value.as_str().ok_or_else(|| bad(entry, missing))?;
    let Some((tdb, tcoll)) = map(db, coll) else {
        return Ok(Vec::new());
    };
    let cmd = match name.as_str() {
        "drop" => doc! {"drop": tcoll},
        "createIndexes" | "commitIndexBuild" => {
            let specs: Vec<Bson> = if let Ok(list) = o.get_array("indexes") {
                list.iter()
                    .filter_map(|s| s.as_document().map(|d| Bson::Document(clean_index_spec(d))))
                    .collect()
            } else {
                // mongod: one index per entry, its spec inline.
                let mut spec = o.clone();
                spec.remove("createIndexes");
                vec![Bson::Document(clean_index_spec(&spec))]
            };
            doc! {"createIndexes": tcoll, "indexes": specs}
        }
        "dropIndexes" | "deleteIndexes" => {
            let index = o
                .get("index")
                .cloned()
                .ok_or_else(|| bad(entry, "dropIndexes without `index`"))?;
            doc! {"dropIndexes": tcoll, "index": index}
        }
        // `create`, `collMod`, `convertToCapped`: the command as logged,
        // its view source renamed too.
        _ => {
            let create = name == "create";
            let mut cmd = doc! {name: tcoll};
            for (k, v) in o.iter().skip(1) {
                match k.as_str() {
                    "idIndex" if create => {}
                    "viewPipeline" if create => {
                        cmd.insert("pipeline", v.clone());
                    }
                    "viewOn" => {
                        let src = v.as_str().unwrap_or_default();
                        let (_, mapped) = map(db, src).unwrap_or((tdb.clone(), src.to_owned()));
                        cmd.insert("viewOn", mapped);
                    }
                    _ => {
                        cmd.insert(k.clone(), v.clone());
                    }
                }
            }
            cmd
        }
    };
    Ok(vec![Op::Command { db: tdb, cmd }])
}

/// An `applyOps` entry (a transaction): the steps of every operation it
/// holds, in order.
fn plan_apply_ops(entry: &Document, o: &Document, map: &NsMap<'_>) -> Result<Vec<Op>> {
    let ops = o
        .get_array("applyOps")
        .map_err(|_| bad(entry, "applyOps is not an array"))?;
    let mut out = Vec::new();
    for inner in ops {
        let inner = inner
            .as_document()
            .ok_or_else(|| bad(entry, "applyOps entry is not a document"))?;
        out.extend(plan_entry(inner, map)?);
    }
    Ok(out)
}

/// A `renameCollection`: a rename within what is restored, a drop when
/// renamed out of it.
#[allow(clippy::many_single_char_names)] // Namespace parts of a rename.
fn plan_rename(entry: &Document, value: &Bson, o: &Document, map: &NsMap<'_>) -> Result<Vec<Op>> {
    let from = value
        .as_str()
        .ok_or_else(|| bad(entry, "renameCollection without a source"))?;
    let to = o
        .get_str("to")
        .map_err(|_| bad(entry, "renameCollection without `to`"))?;
    let (fdb, fcoll) = from
        .split_once('.')
        .ok_or_else(|| bad(entry, "bad source namespace"))?;
    let (tdb, tcoll) = to
        .split_once('.')
        .ok_or_else(|| bad(entry, "bad target namespace"))?;
    match (map(fdb, fcoll), map(tdb, tcoll)) {
        (Some((a, b)), Some((c, d))) => Ok(vec![Op::Command {
            db: "admin".to_owned(),
            cmd: doc! {
                "renameCollection": format!("{a}.{b}"),
                "to": format!("{c}.{d}"),
                "dropTarget": o.get_bool("dropTarget").unwrap_or(false)
                    || matches!(o.get("dropTarget"), Some(Bson::Binary(_))),
            },
        }]),
        // Renamed out of what is restored: it is gone from here.
        (Some((a, b)), None) => Ok(vec![Op::Command {
            db: a,
            cmd: doc! {"drop": b},
        }]),
        (None, Some((c, d))) => Err(bad(
            entry,
            &format!("a collection that is not restored was renamed into {c}.{d}; include its source too"),
        )),
        (None, None) => Ok(Vec::new()),
    }
}

#[cfg(test)]
mod tests {
    //! Fixtures follow the oplog formats described in MongoDB's
    //! documentation and source (`$v:2` delta updates, `applyOps`
    //! transactions, command entries) and `SecantusDB`'s variant.

    use super::*;

    #[allow(clippy::unnecessary_wraps)] // The shape of a namespace map.
    fn all(db: &str, coll: &str) -> Option<(String, String)> {
        Some((db.to_owned(), coll.to_owned()))
    }

    fn ts() -> Bson {
        Bson::Timestamp(mongodb::bson::Timestamp {
            time: 1,
            increment: 1,
        })
    }

    #[test]
    fn insert_becomes_upsert() {
        let e = doc! {"ts": ts(), "op": "i", "ns": "shop.orders", "o": {"_id": 7, "a": 1}};
        assert_eq!(
            plan_entry(&e, &all).unwrap(),
            vec![Op::Upsert {
                db: "shop".into(),
                coll: "orders".into(),
                filter: doc! {"_id": 7},
                doc: doc! {"_id": 7, "a": 1},
            }]
        );
    }

    #[test]
    fn mongod_v2_delta() {
        // {$set: {a: 2, c: 3, "x.y": 5}, $unset: {b: ""}} and an array
        // truncated to 2 with element 1 replaced, as mongod logs them.
        let e = doc! {
            "op": "u", "ns": "db.c", "o2": {"_id": 1},
            "o": {"$v": 2, "diff": {
                "d": {"b": false},
                "u": {"a": 2},
                "i": {"c": 3},
                "sx": {"u": {"y": 5}},
                "sarr": {"a": true, "l": 2, "u1": 9, "s0": {"u": {"k": 1}}},
            }},
        };
        let ops = plan_entry(&e, &all).unwrap();
        assert_eq!(
            ops,
            vec![Op::Update {
                db: "db".into(),
                coll: "c".into(),
                filter: doc! {"_id": 1},
                updates: vec![
                    doc! {"$push": {"arr": {"$each": [], "$slice": 2_i64}}},
                    doc! {
                        "$set": {"a": 2, "c": 3, "x.y": 5, "arr.1": 9, "arr.0.k": 1},
                        "$unset": {"b": ""},
                    },
                ],
            }]
        );
    }

    #[test]
    fn mongod_v1_and_replacement() {
        let e = doc! {"op": "u", "ns": "db.c", "o2": {"_id": 1},
        "o": {"$v": 1, "$set": {"a": 1}, "$unset": {"b": true}}};
        assert_eq!(
            plan_entry(&e, &all).unwrap(),
            vec![Op::Update {
                db: "db".into(),
                coll: "c".into(),
                filter: doc! {"_id": 1},
                updates: vec![doc! {"$set": {"a": 1}, "$unset": {"b": true}}],
            }]
        );
        let e = doc! {"op": "u", "ns": "db.c", "o2": {"_id": 1}, "o": {"_id": 1, "z": 1}};
        assert!(
            matches!(&plan_entry(&e, &all).unwrap()[0], Op::Replace { doc, .. } if doc == &doc! {"_id": 1, "z": 1})
        );
    }

    #[test]
    fn secantus_diff_format() {
        let e = doc! {"op": "u", "ns": "t.a", "o2": {"_id": 1}, "o": {"$v": 2, "diff": {
        "updatedFields": {"y.z": 2, "w": 3}, "removedFields": ["x"],
        "truncatedArrays": [{"field": "arr", "newSize": 1}]}}};
        assert_eq!(
            plan_entry(&e, &all).unwrap(),
            vec![Op::Update {
                db: "t".into(),
                coll: "a".into(),
                filter: doc! {"_id": 1},
                updates: vec![
                    doc! {"$push": {"arr": {"$each": [], "$slice": 1_i64}}},
                    doc! {"$set": {"y.z": 2, "w": 3}, "$unset": {"x": ""}},
                ],
            }]
        );
    }

    #[test]
    fn transaction_as_apply_ops() {
        let e = doc! {"op": "c", "ns": "admin.$cmd", "o": {"applyOps": [
            {"op": "i", "ns": "shop.orders", "ui": Bson::Null, "o": {"_id": 1}},
            {"op": "d", "ns": "shop.carts", "o": {"_id": 2}},
            {"op": "i", "ns": "other.x", "o": {"_id": 3}},
        ]}};
        let only_shop =
            |db: &str, coll: &str| (db == "shop").then(|| ("shop2".to_owned(), coll.to_owned()));
        let ops = plan_entry(&e, &only_shop).unwrap();
        assert_eq!(ops.len(), 2);
        assert!(
            matches!(&ops[0], Op::Upsert { db, coll, .. } if db == "shop2" && coll == "orders")
        );
        assert!(
            matches!(&ops[1], Op::Delete { db, coll, filter } if db == "shop2" && coll == "carts" && filter == &doc! {"_id": 2})
        );
    }

    #[test]
    fn commands() {
        let rename = |db: &str, coll: &str| {
            Some(if db == "db" && coll == "a" {
                ("db".to_owned(), "a2".to_owned())
            } else {
                (db.to_owned(), coll.to_owned())
            })
        };
        let create = doc! {"op": "c", "ns": "db.$cmd", "o": {"create": "a", "capped": true, "size": 4096, "idIndex": {"v": 2, "key": {"_id": 1}, "name": "_id_"}}};
        assert_eq!(
            plan_entry(&create, &rename).unwrap(),
            vec![Op::Command {
                db: "db".into(),
                cmd: doc! {"create": "a2", "capped": true, "size": 4096}
            }]
        );
        // mongod 4.2: one index inline; 4.4+: commitIndexBuild.
        let ci = doc! {"op": "c", "ns": "db.$cmd", "o": {"createIndexes": "a", "v": 2, "key": {"x": 1}, "name": "x_1"}};
        assert_eq!(
            plan_entry(&ci, &rename).unwrap(),
            vec![Op::Command {
                db: "db".into(),
                cmd: doc! {"createIndexes": "a2", "indexes": [{"v": 2, "key": {"x": 1}, "name": "x_1"}]}
            }]
        );
        let commit = doc! {"op": "c", "ns": "db.$cmd", "o": {"commitIndexBuild": "b", "indexBuildUUID": Bson::Null, "indexes": [{"v": 2, "key": {"y": -1}, "name": "y_-1"}]}};
        assert_eq!(
            plan_entry(&commit, &rename).unwrap(),
            vec![Op::Command {
                db: "db".into(),
                cmd: doc! {"createIndexes": "b", "indexes": [{"v": 2, "key": {"y": -1}, "name": "y_-1"}]}
            }]
        );
        let start = doc! {"op": "c", "ns": "db.$cmd", "o": {"startIndexBuild": "b", "indexes": []}};
        assert!(plan_entry(&start, &rename).unwrap().is_empty());
        let di = doc! {"op": "c", "ns": "db.$cmd", "o": {"dropIndexes": "a", "index": "x_1"}, "o2": {"v": 2}};
        assert_eq!(
            plan_entry(&di, &rename).unwrap(),
            vec![Op::Command {
                db: "db".into(),
                cmd: doc! {"dropIndexes": "a2", "index": "x_1"}
            }]
        );
        let rn = doc! {"op": "c", "ns": "db.$cmd", "o": {"renameCollection": "db.a", "to": "db.c", "stayTemp": false}};
        assert_eq!(
            plan_entry(&rn, &rename).unwrap(),
            vec![Op::Command {
                db: "admin".into(),
                cmd: doc! {"renameCollection": "db.a2", "to": "db.c", "dropTarget": false}
            }]
        );
        let cm = doc! {"op": "c", "ns": "db.$cmd", "o": {"collMod": "a", "validator": {"x": {"$exists": true}}}};
        assert_eq!(
            plan_entry(&cm, &rename).unwrap(),
            vec![Op::Command {
                db: "db".into(),
                cmd: doc! {"collMod": "a2", "validator": {"x": {"$exists": true}}}
            }]
        );
        let drop = doc! {"op": "c", "ns": "db.$cmd", "o": {"drop": "a"}};
        assert_eq!(
            plan_entry(&drop, &rename).unwrap(),
            vec![Op::Command {
                db: "db".into(),
                cmd: doc! {"drop": "a2"}
            }]
        );
        // SecantusDB logs views with viewPipeline.
        let view = doc! {"op": "c", "ns": "db.$cmd", "o": {"create": "v", "viewOn": "a", "viewPipeline": [{"$match": {"x": 1}}]}};
        assert_eq!(
            plan_entry(&view, &rename).unwrap(),
            vec![Op::Command {
                db: "db".into(),
                cmd: doc! {"create": "v", "viewOn": "a2", "pipeline": [{"$match": {"x": 1}}]}
            }]
        );
        let unknown = doc! {"op": "c", "ns": "db.$cmd", "o": {"frobnicate": "a"}};
        assert!(plan_entry(&unknown, &rename).is_err());
    }
}
