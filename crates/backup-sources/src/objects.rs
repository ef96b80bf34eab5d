//! The objects of a database snapshot beside its tables and collections
//! (`backup ls SNAPSHOT --objects`): for a logical PostgreSQL snapshot,
//! every entry of its stored `pg_dump` schema scripts that is not a table
//! or its data (schemas, types, functions, views, sequences, indexes,
//! constraints, triggers, policies, extensions, ...), named as `pg_dump`'s
//! `-- Name: ...; Type: ...` headers name them; for a MongoDB snapshot,
//! the indexes of each collection with their keys. Reading them reads the
//! schema scripts or each collection's metadata stream (small), never
//! table or collection data.

use backup_core::reader::SnapshotReader;
use backup_core::{Error, Result};
use serde::Serialize;

/// One object of a database snapshot.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SchemaObject {
    /// What it is, as the database names it: `VIEW`, `FUNCTION`,
    /// `INDEX`, `FK CONSTRAINT`, `TRIGGER`, ... (PostgreSQL); `index`
    /// (MongoDB).
    pub kind: String,
    /// Its schema (PostgreSQL; empty for objects outside one, such as an
    /// extension) or database (MongoDB).
    pub schema: String,
    /// Its name: as `pg_dump`'s header gives it (`f(integer)`, or
    /// `orders orders_pkey` for a constraint: table, then constraint);
    /// a MongoDB index's name.
    pub name: String,
    /// MongoDB: the collection the index belongs to; empty otherwise.
    pub on: String,
    /// MongoDB: the index's key as relaxed Extended JSON, with `unique`
    /// and friends after it; empty otherwise.
    pub detail: String,
}

/// Kinds of `pg_dump` entries that are not objects of their own: tables
/// (listed as tables), their data, and attachments of another object.
#[cfg(feature = "postgres")]
const NOT_OBJECTS: [&str; 7] = [
    "TABLE",
    "TABLE DATA",
    "COMMENT",
    "ACL",
    "DEFAULT",
    "SEQUENCE OWNED BY",
    "SEQUENCE SET",
];

/// The objects of the snapshot `reader` reads, in the snapshot's order
/// (a PostgreSQL script's entries in order, pre-data first; MongoDB
/// collections in manifest order).
///
/// # Errors
///
/// [`Error::Config`] for a kind without such objects (files, Redis, a
/// physical PostgreSQL base backup) or a kind this build lacks; damaged
/// schema scripts or metadata.
#[cfg_attr(
    not(any(feature = "postgres", feature = "mongodb")),
    allow(clippy::unused_async)
)]
pub async fn objects(reader: &SnapshotReader) -> Result<Vec<SchemaObject>> {
    let kind = reader.snapshot().source.kind.as_str();
    match kind {
        #[cfg(feature = "postgres")]
        "postgres" if !crate::postgres::physical::is_physical(&reader.snapshot().metadata) => {
            postgres(reader).await
        }
        #[cfg(feature = "mongodb")]
        "mongodb" => mongo(reader).await,
        #[cfg(not(feature = "postgres"))]
        "postgres" => Err(Error::Config(
            "this build has no PostgreSQL support: it cannot read the snapshot's objects"
                .to_owned(),
        )),
        #[cfg(not(feature = "mongodb"))]
        "mongodb" => Err(Error::Config(
            "this build has no MongoDB support: it cannot read the snapshot's objects".to_owned(),
        )),
        _ => Err(Error::Config(format!(
            "snapshot {} holds no schema objects to list: --objects applies to logical PostgreSQL and to MongoDB snapshots",
            reader.id().short()
        ))),
    }
}

#[cfg(feature = "postgres")]
async fn postgres(reader: &SnapshotReader) -> Result<Vec<SchemaObject>> {
    use crate::postgres::script::Script;
    let root = reader.root().await?;
    let schema = root
        .dir("schema")
        .await?
        .ok_or_else(|| reader.damaged("PostgreSQL snapshot without schema/"))?;
    let mut out = Vec::new();
    for name in ["pre-data.sql", "post-data.sql"] {
        let node = schema
            .get(name)
            .ok_or_else(|| reader.damaged(format!("PostgreSQL snapshot without {name}")))?;
        let text = String::from_utf8(reader.read_all(node).await?)
            .map_err(|_| reader.damaged(format!("{name} is not UTF-8")))?;
        for e in Script::parse(&text)?.entries {
            if NOT_OBJECTS.contains(&e.kind.as_str()) {
                continue;
            }
            out.push(SchemaObject {
                kind: e.kind,
                schema: e.schema,
                name: e.name,
                on: String::new(),
                detail: String::new(),
            });
        }
    }
    Ok(out)
}

#[cfg(feature = "mongodb")]
async fn mongo(reader: &SnapshotReader) -> Result<Vec<SchemaObject>> {
    use crate::mongo::{Metadata, DATABASES, METADATA};
    use crate::names::tree_name;
    use mongodb::bson::{Bson, RawDocumentBuf};
    use std::fmt::Write as _;
    let meta: Metadata = serde_json::from_value(reader.snapshot().metadata.clone())
        .map_err(|e| reader.damaged(e))?;
    let mut out = Vec::new();
    for c in meta.collections.iter().filter(|c| !c.is_view()) {
        let path = [DATABASES, &tree_name(&c.db), &tree_name(&c.name)];
        let node = reader
            .dir(&path)
            .await?
            .and_then(|d| d.get(METADATA).cloned())
            .ok_or_else(|| reader.damaged(format!("{}: no metadata", c.ns())))?;
        let spec = RawDocumentBuf::from_bytes(reader.read_all(&node).await?)
            .and_then(|r| r.to_document())
            .map_err(|e| reader.damaged(format!("{}: metadata: {e}", c.ns())))?;
        for index in spec
            .get_array("indexes")
            .map(Vec::as_slice)
            .unwrap_or_default()
        {
            let Bson::Document(index) = index else {
                continue;
            };
            let mut detail = index.get("key").map_or_else(String::new, |k| {
                k.clone().into_relaxed_extjson().to_string()
            });
            for (flag, v) in index {
                if matches!(flag.as_str(), "v" | "key" | "name" | "ns") {
                    continue;
                }
                let _ = write!(detail, " {flag}: {}", v.clone().into_relaxed_extjson());
            }
            out.push(SchemaObject {
                kind: "index".to_owned(),
                schema: c.db.clone(),
                name: index.get_str("name").unwrap_or_default().to_owned(),
                on: c.name.clone(),
                detail,
            });
        }
    }
    Ok(out)
}
