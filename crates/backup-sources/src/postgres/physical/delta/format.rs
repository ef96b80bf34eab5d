//! The stored form of page deltas: the delta entry's name, the content's
//! magic and header, a delta's entry in the index (`page_deltas.json`),
//! and the relation files of a snapshot with their deltas.

use std::collections::{BTreeMap, HashMap};

use backup_core::reader::Dir;
use backup_core::tree::{FsName, Node, NodeKind};
use backup_core::Result;
use serde::{Deserialize, Serialize};

use super::super::meta::{DATA_DIR, TABLESPACES_DIR};

/// Appended to a relation file's name for its delta entry. PostgreSQL
/// names the files of a database directory with digits, `.`, `_` and fork
/// names only, so no file there has a name ending like this.
pub(crate) const DELTA_SUFFIX: &[u8] = b"~page-delta";
/// The index of a snapshot's deltas, at the top of its tree.
pub(crate) const DELTA_INDEX: &str = "page_deltas.json";
/// The first bytes of a delta's content: records of changed byte ranges.
pub(crate) const MAGIC: &[u8; 8] = b"BKPGPD02";
/// The first bytes of a delta of whole pages (written by earlier versions;
/// still restored).
pub(crate) const MAGIC_PAGES: &[u8; 8] = b"BKPGPD01";
/// Magic, block size (u32), reserved (u32), base start LSN, base size,
/// file size (u64 each), little-endian.
pub(super) const HEADER_LEN: usize = 40;
/// Files with fewer pages are read whole (a delta saves little there and
/// costs an entry and a second restore pass).
pub(crate) const MIN_PAGES: u64 = 128;

/// One delta in [`DeltaIndex`]: what it applies to and what it makes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeltaEntry {
    /// Start of the base backup whose copy of the file is the base.
    pub(crate) base_lsn: String,
    /// The base's size in bytes.
    pub(crate) base_size: u64,
    /// The file's size when this backup listed it (what the restore makes).
    pub(crate) size: u64,
    /// The file's metadata when listed (a next backup takes base and delta
    /// unread when the file still has it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) mode: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) mtime_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) ctime_ns: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) inode: Option<u64>,
    /// Pages the delta holds.
    pub(crate) pages: u64,
    /// Bytes of the delta's content (absent for deltas of whole pages).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) bytes: Option<u64>,
}

impl DeltaEntry {
    /// Bytes of the delta's content (for deltas of whole pages, from their
    /// page count).
    pub(crate) fn stored(&self, block: u64) -> u64 {
        self.bytes.unwrap_or(self.pages * (block + 4))
    }

    /// The file as this backup listed it, as a node to compare with the
    /// file on disk.
    pub(crate) fn listed(&self, name: &FsName) -> Node {
        let mut n = Node::new(name.clone(), NodeKind::File);
        n.size = self.size;
        n.mode = self.mode;
        n.mtime_ns = self.mtime_ns;
        n.ctime_ns = self.ctime_ns;
        n.inode = self.inode;
        n
    }
}

/// `page_deltas.json`: every delta of a snapshot by manifest path.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct DeltaIndex {
    pub(crate) version: u32,
    pub(crate) block_size: u32,
    pub(crate) files: BTreeMap<String, DeltaEntry>,
}

impl DeltaIndex {
    /// The index in a snapshot's top directory `root`, empty when it has
    /// none.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when it does not parse; storage errors.
    pub(crate) async fn of(root: &Dir) -> Result<Self> {
        let snapshot = root.reader();
        let Some(node) = root.get(DELTA_INDEX) else {
            return Ok(DeltaIndex::default());
        };
        let text = snapshot.read_all(node).await?;
        let index: DeltaIndex = serde_json::from_slice(&text)
            .map_err(|e| snapshot.damaged(format!("`{DELTA_INDEX}` does not parse: {e}")))?;
        if index.version != 1 {
            return Err(snapshot.damaged(format!(
                "`{DELTA_INDEX}` is version {}, which this program does not know; use a newer one",
                index.version
            )));
        }
        Ok(index)
    }
}

/// A relation file's entry in a snapshot and the delta beside it.
#[derive(Debug, Clone)]
pub(crate) struct SnapshotRelation {
    pub(crate) base: Node,
    pub(crate) delta: Option<Node>,
}

/// The main-fork relation files of a physical snapshot's database
/// directories (in the data directory and the tablespaces), by manifest
/// path, with their deltas; `root` is the snapshot's top directory.
///
/// # Errors
///
/// Errors loading the snapshot's trees.
pub(crate) async fn relations(root: &Dir) -> Result<HashMap<Vec<u8>, SnapshotRelation>> {
    let mut out = HashMap::new();
    let snapshot = root.reader();
    if let Some(data) = root.dir(DATA_DIR).await? {
        if let Some(base) = data.dir("base").await? {
            for db in base.entries().iter().filter(|n| n.kind == NodeKind::Dir) {
                let dir = snapshot.open_dir(db).await?;
                add_relations(&mut out, format!("base/{}/", db.name).as_bytes(), &dir);
            }
        }
    }
    if let Some(spaces) = root.dir(TABLESPACES_DIR).await? {
        for oid in spaces.entries().iter().filter(|n| n.kind == NodeKind::Dir) {
            let oid_dir = snapshot.open_dir(oid).await?;
            for version in oid_dir.entries().iter().filter(|n| n.kind == NodeKind::Dir) {
                let version_dir = snapshot.open_dir(version).await?;
                for db in version_dir
                    .entries()
                    .iter()
                    .filter(|n| n.kind == NodeKind::Dir)
                {
                    let dir = snapshot.open_dir(db).await?;
                    let prefix = format!("pg_tblspc/{}/{}/{}/", oid.name, version.name, db.name);
                    add_relations(&mut out, prefix.as_bytes(), &dir);
                }
            }
        }
    }
    Ok(out)
}

fn add_relations(out: &mut HashMap<Vec<u8>, SnapshotRelation>, prefix: &[u8], dir: &Dir) {
    let key = |name: &[u8]| {
        let mut k = prefix.to_vec();
        k.extend_from_slice(name);
        k
    };
    for n in dir.entries() {
        if n.kind == NodeKind::File && is_main_fork(&n.name.0) {
            out.insert(
                key(&n.name.0),
                SnapshotRelation {
                    base: n.clone(),
                    delta: None,
                },
            );
        }
    }
    for n in dir.entries() {
        if let Some(file) = n.name.0.strip_suffix(DELTA_SUFFIX) {
            if let Some(r) = out.get_mut(&key(file)) {
                r.delta = Some(n.clone());
            }
        }
    }
}

/// `<relfilenode>` or `<relfilenode>.<segment>`: a segment of a relation's
/// main fork.
pub(crate) fn is_main_fork(name: &[u8]) -> bool {
    let (oid, seg) = match name.iter().position(|&b| b == b'.') {
        Some(dot) => (&name[..dot], Some(&name[dot + 1..])),
        None => (name, None),
    };
    !oid.is_empty()
        && oid.iter().all(u8::is_ascii_digit)
        && seg.is_none_or(|s| !s.is_empty() && s.iter().all(u8::is_ascii_digit))
}

/// The delta entry's name for a file's.
pub(crate) fn delta_name(file: &FsName) -> FsName {
    let mut n = file.0.clone();
    n.extend_from_slice(DELTA_SUFFIX);
    FsName(n)
}

#[cfg(test)]
mod tests {
    use std::os::unix::ffi::OsStrExt;
    use std::path::Path;

    use super::*;

    #[test]
    fn the_restore_filters_tell_deltas_from_files() {
        let pattern = vec![format!("*{}", String::from_utf8_lossy(DELTA_SUFFIX))];
        let files = backup_core::filter::PathFilter::new(&[], &pattern).unwrap();
        let deltas = backup_core::filter::PathFilter::new(&pattern, &[]).unwrap();
        let mut d = b"tablespaces/16385/PG_15_202209061/5/16390".to_vec();
        d.extend_from_slice(DELTA_SUFFIX);
        let d = Path::new(std::ffi::OsStr::from_bytes(&d));
        let f = Path::new("tablespaces/16385/PG_15_202209061/5/16390");
        assert!(files.is_selected(f) && !files.is_selected(d));
        assert!(deltas.is_selected(d) && !deltas.is_selected(f));
        assert!(!deltas.is_selected(Path::new("data/base/5/16384.1")));
    }

    #[test]
    fn main_fork_names() {
        for ok in ["16384", "16384.1", "1259.12"] {
            assert!(is_main_fork(ok.as_bytes()), "{ok}");
        }
        for no in [
            "16384_fsm",
            "16384_vm.1",
            "16384.",
            "pg_filenode.map",
            "PG_VERSION",
            "",
        ] {
            assert!(!is_main_fork(no.as_bytes()), "{no}");
        }
        assert_eq!(
            delta_name(&FsName::from("16384.2")).0,
            b"16384.2~page-delta"
        );
        assert!(!is_main_fork(b"16384~page-delta"));
    }
}
