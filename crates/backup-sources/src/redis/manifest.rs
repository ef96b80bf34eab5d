//! What a Redis snapshot's manifest says, and the names of its streams.

use std::collections::BTreeMap;

use backup_core::reader::SnapshotReader;
use backup_core::tree::{Node, NodeKind};
use backup_core::{Error, Result};

/// Name of the stream of an RDB-mode snapshot.
pub const RDB_STREAM: &str = "dump.rdb";
/// Name of the stream of a key-mode snapshot.
pub const KEYS_STREAM: &str = "keys.dump";

/// What a Redis snapshot's manifest says.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotInfo {
    pub(crate) keys_mode: bool,
    pub(crate) rdb_version: u32,
    /// Keys per source database.
    pub(crate) databases: BTreeMap<u32, u64>,
    pub(crate) module_types: Vec<String>,
    /// Modules whose auxiliary data (module-wide state, not keys) the RDB
    /// holds.
    pub(crate) module_aux: Vec<String>,
    /// Databases the backup was narrowed to (`redis://host/N` in RDB
    /// mode).
    pub(crate) selected: Option<Vec<u32>>,
    pub(crate) stream: Node,
}

impl SnapshotInfo {
    /// `keys` or `rdb`.
    pub(crate) fn mode(&self) -> &'static str {
        if self.keys_mode {
            "keys"
        } else {
            "rdb"
        }
    }

    /// Reads the manifest and finds the stream.
    pub(crate) async fn load(snapshot: &SnapshotReader) -> Result<Self> {
        let s = snapshot.snapshot();
        if s.source.kind != "redis" {
            return Err(Error::Config(format!(
                "snapshot {} is a {} snapshot, not a Redis one",
                snapshot.id().short(),
                s.source.kind
            )));
        }
        let m = &s.metadata;
        let keys_mode = m["mode"].as_str() == Some("keys");
        let name = if keys_mode { KEYS_STREAM } else { RDB_STREAM };
        let stream = snapshot
            .root()
            .await?
            .get(name)
            .filter(|n| n.kind == NodeKind::Stream)
            .cloned()
            .ok_or_else(|| {
                snapshot.damaged(format!("the Redis snapshot has no `{name}` stream"))
            })?;
        let databases = m["databases"]
            .as_object()
            .map(|o| {
                o.iter()
                    .filter_map(|(k, v)| Some((k.parse().ok()?, v["keys"].as_u64()?)))
                    .collect()
            })
            .unwrap_or_default();
        let module_types = m["module_types"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let module_aux = m["module_aux"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|v| v.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let selected = m["selected_databases"].as_array().map(|a| {
            a.iter()
                .filter_map(|v| v.as_u64().and_then(|d| u32::try_from(d).ok()))
                .collect()
        });
        Ok(SnapshotInfo {
            keys_mode,
            rdb_version: m["rdb_version"].as_u64().unwrap_or(0) as u32,
            databases,
            module_types,
            module_aux,
            selected,
            stream,
        })
    }
}
