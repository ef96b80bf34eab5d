//! Reading a PostgreSQL snapshot back: metadata, scripts and the table
//! parts' nodes.

use std::collections::HashMap;

use backup_core::reader::{Dir, SnapshotReader};
use backup_core::tree::Node;
use backup_core::{Error, Result};

use crate::postgres::script::Script;
use crate::postgres::{part_name, tree_name, Metadata};

/// A snapshot read back: metadata, scripts and the data streams.
pub(super) struct Loaded {
    pub(super) meta: Metadata,
    pub(super) pre: Script,
    pub(super) post: Script,
    pub(super) data: Script,
    pub(super) globals: Option<Script>,
    /// Per table (by index in `meta.tables`): its part nodes.
    pub(super) parts: Vec<Vec<Node>>,
    pub(super) schema_bytes: u64,
}

pub(super) async fn load(snapshot: &SnapshotReader) -> Result<Loaded> {
    let s = snapshot.snapshot();
    if s.source.kind != "postgres" {
        return Err(Error::Config(format!(
            "snapshot {} is a {} backup; it cannot be restored to PostgreSQL",
            snapshot.id().short(),
            s.source.kind
        )));
    }
    if crate::postgres::physical::is_physical(&s.metadata) {
        return Err(Error::Config(format!(
            "snapshot {} is a physical base backup of a whole cluster, not a logical backup of a database: restore it into an empty data directory with --to /path/to/new/datadir",
            snapshot.id().short()
        )));
    }
    let damaged = |what: &str| snapshot.damaged(format!("PostgreSQL snapshot without {what}"));
    let meta: Metadata = serde_json::from_value(s.metadata.clone())
        .map_err(|e| damaged(&format!("readable metadata ({e})")))?;
    let root = snapshot.root().await?;
    let schema = root
        .dir("schema")
        .await?
        .ok_or_else(|| damaged("schema/"))?;
    let mut schema_bytes = 0;
    let script = |name: &'static str| {
        let node = schema.get(name).cloned();
        async move {
            let node = node.ok_or_else(|| damaged(name))?;
            let bytes = snapshot.read_all(&node).await?;
            let text = String::from_utf8(bytes).map_err(|_| damaged(&format!("a UTF-8 {name}")))?;
            Ok::<_, Error>((Script::parse(&text)?, node.size))
        }
    };
    let (pre, n1) = script("pre-data.sql").await?;
    let (post, n2) = script("post-data.sql").await?;
    let (data, n3) = script("data.sql").await?;
    schema_bytes += n1 + n2 + n3;
    let globals = match root.get("globals.sql") {
        Some(node) => {
            let text = String::from_utf8(snapshot.read_all(node).await?)
                .map_err(|_| damaged("a UTF-8 globals.sql"))?;
            schema_bytes += node.size;
            Some(Script::parse(&text)?)
        }
        None => None,
    };
    let tables_tree = root.dir("tables").await?;
    let mut parts = Vec::with_capacity(meta.tables.len());
    let mut schema_trees: HashMap<String, Option<Dir>> = HashMap::new();
    for t in &meta.tables {
        if t.parts == 0 {
            parts.push(Vec::new());
            continue;
        }
        let tt = tables_tree.as_ref().ok_or_else(|| damaged("tables/"))?;
        let sname = tree_name(&t.schema);
        if !schema_trees.contains_key(&sname) {
            let st = tt.dir(&sname).await?;
            schema_trees.insert(sname.clone(), st);
        }
        let st = schema_trees
            .get(&sname)
            .and_then(Option::as_ref)
            .ok_or_else(|| damaged(&format!("the data of {}", t.qualified())))?;
        let table_tree = st
            .dir(&tree_name(&t.name))
            .await?
            .ok_or_else(|| damaged(&format!("the data of {}", t.qualified())))?;
        let mut nodes = Vec::with_capacity(t.parts as usize);
        for p in 0..t.parts {
            let n = table_tree
                .get(&part_name(p))
                .cloned()
                .ok_or_else(|| damaged(&format!("part {p} of {}", t.qualified())))?;
            nodes.push(n);
        }
        parts.push(nodes);
    }
    Ok(Loaded {
        meta,
        pre,
        post,
        data,
        globals,
        parts,
        schema_bytes,
    })
}
