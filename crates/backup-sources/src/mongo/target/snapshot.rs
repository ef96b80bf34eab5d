//! Reading a MongoDB snapshot back: the manifest, the metadata of the
//! selected collections, and the stored users and roles.

use std::collections::HashMap;

use backup_core::reader::{Dir, SnapshotReader};
use backup_core::tree::Node;
use backup_core::{Error, Result};
use mongodb::bson::{Document, RawDocumentBuf};

use super::super::{
    security, tree_name, CollectionMeta, Metadata, DATABASES, DOCUMENTS, METADATA, OPLOG,
};
use super::split::DocSplitter;

/// One collection or view to restore.
#[derive(Debug, Clone)]
pub(crate) struct Planned {
    pub(crate) meta: CollectionMeta,
    /// The stored `listCollections` entry plus `indexes`.
    pub(crate) spec: Document,
    pub(crate) documents: Option<Node>,
    pub(crate) db: String,
    pub(crate) coll: String,
}

impl Planned {
    pub(crate) fn target_ns(&self) -> String {
        format!("{}.{}", self.db, self.coll)
    }

    pub(crate) fn options(&self) -> Document {
        self.spec
            .get_document("options")
            .cloned()
            .unwrap_or_default()
    }

    pub(crate) fn indexes(&self) -> Vec<Document> {
        self.spec
            .get_array("indexes")
            .map(|a| a.iter().filter_map(|i| i.as_document().cloned()).collect())
            .unwrap_or_default()
    }
}

/// The snapshot read back.
pub(crate) struct Loaded {
    pub(crate) meta: Metadata,
    pub(crate) collections: Vec<Planned>,
    pub(crate) oplog: Option<Node>,
    /// Users (`admin.system.users` shape), when backed up.
    pub(crate) users: Vec<Document>,
    /// User-defined roles (`admin.system.roles` shape), when backed up.
    pub(crate) roles: Vec<Document>,
}

pub(crate) fn snapshot_metadata(snapshot: &SnapshotReader) -> Result<Metadata> {
    let s = snapshot.snapshot();
    if s.source.kind != "mongodb" {
        return Err(Error::Config(format!(
            "snapshot {} is a {} backup, not MongoDB",
            snapshot.id().short(),
            s.source.kind
        )));
    }
    serde_json::from_value(s.metadata.clone()).map_err(|e| snapshot.damaged(e))
}

/// Maps an original namespace to its target (`None`: not restored).
pub(crate) type NsMapSync<'a> = dyn Fn(&str, &str) -> Option<(String, String)> + Sync + 'a;

/// Loads the manifest and the metadata of the selected collections;
/// `map` gives each its target namespace (`None`: not restored).
pub(crate) async fn load(snapshot: &SnapshotReader, map: &NsMapSync<'_>) -> Result<Loaded> {
    let meta = snapshot_metadata(snapshot)?;
    let corrupt = |what: String| snapshot.damaged(what);
    let root = snapshot.root().await?;
    let oplog = root.get(OPLOG).cloned();
    let (mut users, mut roles) = (Vec::new(), Vec::new());
    if let Some(tree) = root.dir(security::SECURITY).await? {
        for (name, out) in [(security::USERS, &mut users), (security::ROLES, &mut roles)] {
            let Some(node) = tree.get(name) else {
                return Err(corrupt(format!("{}/{name} is missing", security::SECURITY)));
            };
            let mut split = DocSplitter::new(usize::MAX);
            split.push(&snapshot.read_all(node).await?);
            while let Some(raw) = split.next_doc().map_err(&corrupt)? {
                out.push(
                    RawDocumentBuf::from_bytes(raw)
                        .and_then(|r| r.to_document())
                        .map_err(|e| corrupt(format!("{name}: {e}")))?,
                );
            }
            if split.has_rest() {
                return Err(corrupt(format!("{name} ends inside a document")));
            }
        }
    }
    let dbs = root.dir(DATABASES).await?;
    let mut db_trees: HashMap<String, Dir> = HashMap::new();
    let mut collections = Vec::new();
    for c in &meta.collections {
        let Some((tdb, tcoll)) = map(&c.db, &c.name) else {
            continue;
        };
        if !db_trees.contains_key(&c.db) {
            let missing = || corrupt(format!("database {} is missing from the tree", c.db));
            let db_dir = match &dbs {
                Some(d) => d.dir(&tree_name(&c.db)).await?.ok_or_else(missing)?,
                None => return Err(missing()),
            };
            db_trees.insert(c.db.clone(), db_dir);
        }
        let tree = match db_trees.get(&c.db) {
            Some(d) => d.dir(&tree_name(&c.name)).await?,
            None => None,
        }
        .ok_or_else(|| corrupt(format!("{} is missing from the tree", c.ns())))?;
        let meta_node = tree
            .get(METADATA)
            .ok_or_else(|| corrupt(format!("{}: no metadata", c.ns())))?;
        let raw = snapshot.read_all(meta_node).await?;
        let spec = RawDocumentBuf::from_bytes(raw)
            .and_then(|r| r.to_document())
            .map_err(|e| corrupt(format!("{}: metadata: {e}", c.ns())))?;
        let documents = tree.get(DOCUMENTS).cloned();
        if !c.is_view() && documents.is_none() {
            return Err(corrupt(format!("{}: no documents stream", c.ns())));
        }
        collections.push(Planned {
            meta: c.clone(),
            spec,
            documents,
            db: tdb,
            coll: tcoll,
        });
    }
    Ok(Loaded {
        meta,
        collections,
        oplog,
        users,
        roles,
    })
}
