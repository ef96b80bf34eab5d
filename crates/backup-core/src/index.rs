//! The index: which pack holds each blob.
//!
//! Index files are sealed JSON documents listing packs and their blobs. They
//! are written only after every pack they list is stored, so any blob found
//! in the index can be read. The in-memory [`Index`] merges all index files
//! into compact maps from blob id to location.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::id::Id;
use crate::pack::{BlobType, PackEntry};

/// Index file format version.
pub const INDEX_VERSION: u32 = 1;

/// Contents of one index file.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexFile {
    /// Format version (1).
    pub version: u32,
    /// Index files this one replaces (written by prune and repair); readers
    /// ignore superseded files.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub supersedes: Vec<Id>,
    /// The packs listed.
    pub packs: Vec<IndexPack>,
}

/// Most packs one index file lists.
pub const PACKS_PER_INDEX_FILE: usize = 1000;

/// Blobs after which an index file takes no more packs (one pack's blobs
/// always stay in one file), so that a backup of a million small files
/// writes some twenty index files that load side by side and are each
/// dropped once merged, not one file held whole while it is parsed.
pub const BLOBS_PER_INDEX_FILE: usize = 50_000;

impl IndexFile {
    /// `packs` as new index files of at most [`PACKS_PER_INDEX_FILE`]
    /// packs, each closed once it holds [`BLOBS_PER_INDEX_FILE`] blobs,
    /// in the order given.
    pub fn split(packs: Vec<IndexPack>) -> Vec<IndexFile> {
        let mut files = Vec::new();
        let mut current: Vec<IndexPack> = Vec::new();
        let mut blobs = 0;
        for pack in packs {
            if current.len() == PACKS_PER_INDEX_FILE
                || (blobs > 0 && blobs + pack.blobs.len() > BLOBS_PER_INDEX_FILE)
            {
                files.push(std::mem::take(&mut current));
                blobs = 0;
            }
            blobs += pack.blobs.len();
            current.push(pack);
        }
        if !current.is_empty() {
            files.push(current);
        }
        files
            .into_iter()
            .map(|packs| IndexFile {
                version: INDEX_VERSION,
                supersedes: Vec::new(),
                packs,
            })
            .collect()
    }
}

/// One pack in an index file.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexPack {
    /// The pack id (its file name).
    pub id: Id,
    /// Size of the pack file in bytes.
    pub size: u64,
    /// Every blob in the pack.
    pub blobs: Vec<PackEntry>,
}

/// Where a blob is stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BlobLocation {
    /// The pack's id.
    pub pack: Id,
    /// The entry from the pack header.
    pub entry: PackEntry,
}

#[derive(Debug, Clone, Copy)]
struct CompactEntry {
    pack: u32,
    offset: u32,
    length: u32,
    raw_length: u32,
    compressed: bool,
}

/// All index files merged: blob id to pack location, per blob type.
///
/// Memory is about 60 bytes per blob (a 10 TB repository of 1 MiB chunks
/// needs some 600 MB), plus 40 bytes per pack.
#[derive(Debug, Default, Clone)]
pub struct Index {
    packs: Vec<(Id, u64)>,
    pack_numbers: HashMap<Id, u32>,
    data: HashMap<Id, CompactEntry>,
    tree: HashMap<Id, CompactEntry>,
}

impl Index {
    /// An empty index.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a pack and its blobs. A blob already known keeps its first
    /// location.
    pub fn add_pack(&mut self, pack: Id, size: u64, entries: &[PackEntry]) {
        let n = *self.pack_numbers.entry(pack).or_insert_with(|| {
            self.packs.push((pack, size));
            (self.packs.len() - 1) as u32
        });
        for e in entries {
            let map = match e.blob_type {
                BlobType::Data => &mut self.data,
                BlobType::Tree => &mut self.tree,
            };
            map.entry(e.id).or_insert(CompactEntry {
                pack: n,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
                compressed: e.compressed,
            });
        }
    }

    /// Adds every pack of an index file.
    pub fn add_file(&mut self, file: &IndexFile) {
        for p in &file.packs {
            self.add_pack(p.id, p.size, &p.blobs);
        }
    }

    /// Whether a blob is indexed.
    pub fn contains(&self, blob_type: BlobType, id: &Id) -> bool {
        self.map(blob_type).contains_key(id)
    }

    fn map(&self, blob_type: BlobType) -> &HashMap<Id, CompactEntry> {
        match blob_type {
            BlobType::Data => &self.data,
            BlobType::Tree => &self.tree,
        }
    }

    /// Where a blob is stored.
    pub fn get(&self, blob_type: BlobType, id: &Id) -> Option<BlobLocation> {
        self.map(blob_type).get(id).map(|c| BlobLocation {
            pack: self.packs[c.pack as usize].0,
            entry: PackEntry {
                blob_type,
                id: *id,
                offset: c.offset,
                length: c.length,
                raw_length: c.raw_length,
                compressed: c.compressed,
            },
        })
    }

    /// The size of an indexed pack.
    pub fn pack_size(&self, pack: &Id) -> Option<u64> {
        self.pack_numbers
            .get(pack)
            .map(|n| self.packs[*n as usize].1)
    }

    /// Every indexed pack with its size.
    pub fn packs(&self) -> &[(Id, u64)] {
        &self.packs
    }

    /// Number of indexed blobs of a type.
    pub fn blob_count(&self, blob_type: BlobType) -> usize {
        self.map(blob_type).len()
    }

    /// Every blob of every pack, grouped by pack (order unspecified).
    pub fn entries_by_pack(&self) -> HashMap<Id, Vec<PackEntry>> {
        let mut out: HashMap<Id, Vec<PackEntry>> = HashMap::new();
        for (blob_type, map) in [(BlobType::Data, &self.data), (BlobType::Tree, &self.tree)] {
            for (id, c) in map {
                out.entry(self.packs[c.pack as usize].0)
                    .or_default()
                    .push(PackEntry {
                        blob_type,
                        id: *id,
                        offset: c.offset,
                        length: c.length,
                        raw_length: c.raw_length,
                        compressed: c.compressed,
                    });
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(n: u32, blobs: usize) -> IndexPack {
        IndexPack {
            id: Id::hash(&n.to_le_bytes()),
            size: 1,
            blobs: (0..blobs)
                .map(|i| PackEntry {
                    blob_type: BlobType::Data,
                    id: Id::hash(&[n.to_le_bytes(), (i as u32).to_le_bytes()].concat()),
                    offset: 0,
                    length: 1,
                    raw_length: 1,
                    compressed: false,
                })
                .collect(),
        }
    }

    #[test]
    fn split_by_packs_and_blobs_in_order() {
        // Many packs of a few blobs: 1000 packs a file.
        let files = IndexFile::split((0..2500).map(|n| pack(n, 2)).collect());
        let sizes: Vec<usize> = files.iter().map(|f| f.packs.len()).collect();
        assert_eq!(sizes, [1000, 1000, 500]);
        // Packs of many blobs: a file closes before it passes the blob
        // limit, and a pack larger than the limit gets a file of its own.
        let files = IndexFile::split(vec![
            pack(1, 30_000),
            pack(2, 30_000),
            pack(3, 60_000),
            pack(4, 10),
        ]);
        let blobs: Vec<Vec<usize>> = files
            .iter()
            .map(|f| f.packs.iter().map(|p| p.blobs.len()).collect())
            .collect();
        assert_eq!(blobs, [vec![30_000], vec![30_000], vec![60_000], vec![10]]);
        assert_eq!(files[3].packs[0].id, Id::hash(&4u32.to_le_bytes()));
        assert!(IndexFile::split(Vec::new()).is_empty());
    }

    #[test]
    fn lookup_by_type() {
        let mut idx = Index::new();
        let e = PackEntry {
            blob_type: BlobType::Tree,
            id: Id::hash(b"t"),
            offset: 5,
            length: 10,
            raw_length: 20,
            compressed: true,
        };
        idx.add_pack(Id::hash(b"p"), 100, &[e]);
        assert!(idx.contains(BlobType::Tree, &e.id));
        assert!(!idx.contains(BlobType::Data, &e.id));
        let loc = idx.get(BlobType::Tree, &e.id).unwrap();
        assert_eq!(loc.entry, e);
        assert_eq!(loc.pack, Id::hash(b"p"));
    }
}
