//! The index: which pack holds each blob.
//!
//! Index files are sealed JSON documents listing packs and their blobs. They
//! are written only after every pack they list is stored, so any blob found
//! in the index can be read. The in-memory [`Index`] merges all index files
//! into compact maps from blob id to location.

mod cache;
mod packs;
mod table;
mod view;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use serde::{Deserialize, Serialize};

pub(crate) use cache::Sealer;
use packs::PackList;
use table::{Record, Table};
pub use view::{SortedView, ViewEntry};

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

/// Blobs the index holds in memory before it pages them to disk, unless
/// `BACKUP_INDEX_MEMORY_BLOBS` says otherwise.
pub const DEFAULT_MEMORY_BLOBS: usize = 500_000;

/// Tables an index keeps side by side before it merges them into one.
const MAX_TABLES: usize = 16;

/// All index files merged: blob id to pack location, per blob type.
///
/// Up to a limit ([`DEFAULT_MEMORY_BLOBS`], or `BACKUP_INDEX_MEMORY_BLOBS`)
/// blobs are held in memory, some 60 to 110 bytes each. Past it they are
/// paged to sorted tables in unlinked temporary files under the cache
/// directory (`BACKUP_CACHE_DIR`, else `$XDG_CACHE_HOME/backup`, else
/// `~/.cache/backup`, under `index/`), of which memory keeps a directory of
/// about 0.4 bytes a blob; a lookup is then one positioned read of under a
/// kilobyte. Every pack stays in memory (about 100 bytes each). Cloning
/// shares the tables.
///
/// Where two packs hold the same blob, the one added first is its
/// location. A table that cannot be written (the cache's disk is full)
/// leaves the blobs in memory, with a warning; a table that cannot be read
/// is logged and the blob taken as not indexed, which a backup answers by
/// storing it again and a reader by a "not indexed" error.
#[derive(Debug, Clone)]
pub struct Index {
    packs: PackList,
    data: HashMap<Id, CompactEntry>,
    tree: HashMap<Id, CompactEntry>,
    tables: Vec<Arc<Table>>,
    memory_blobs: usize,
}

impl Default for Index {
    fn default() -> Self {
        Self::with_memory_limit(memory_limit())
    }
}

/// `BACKUP_INDEX_MEMORY_BLOBS` if set and valid, else the default.
pub(crate) fn memory_limit() -> usize {
    static LIMIT: OnceLock<usize> = OnceLock::new();
    *LIMIT.get_or_init(|| {
        std::env::var("BACKUP_INDEX_MEMORY_BLOBS")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_MEMORY_BLOBS)
    })
}

/// Where index tables are written.
fn table_dir() -> std::io::Result<PathBuf> {
    let dir = crate::util::cache_root().join("index");
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

impl Index {
    /// An empty index that pages to disk past the configured number of
    /// blobs.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty index that pages to disk once it holds `blobs` in memory
    /// (0: every blob added is paged at once).
    pub fn with_memory_limit(blobs: usize) -> Self {
        Index {
            packs: PackList::default(),
            data: HashMap::new(),
            tree: HashMap::new(),
            tables: Vec::new(),
            memory_blobs: blobs,
        }
    }

    /// Adds a pack and its blobs. A blob already known keeps its first
    /// location.
    pub fn add_pack(&mut self, pack: Id, size: u64, entries: &[PackEntry]) {
        let n = self.packs.number_or_add(pack, size);
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
        if self.data.len() + self.tree.len() > self.memory_blobs {
            self.page_out();
        }
    }

    /// Adds every pack of an index file.
    pub fn add_file(&mut self, file: &IndexFile) {
        for p in &file.packs {
            self.add_pack(p.id, p.size, &p.blobs);
        }
    }

    /// Merges what was paged to disk, and what memory holds beyond a
    /// tenth of its limit, into one table, so that a lookup reads once;
    /// freezes the pack list, which clones then share. Called when an
    /// index has been loaded.
    pub fn compact(&mut self) {
        self.packs.freeze();
        if self.tables.is_empty() {
            return;
        }
        if self.tables.len() == 1 && self.in_memory() <= self.memory_blobs / 10 {
            return;
        }
        self.merge_tables();
    }

    /// Blobs held in memory.
    fn in_memory(&self) -> usize {
        self.data.len() + self.tree.len()
    }

    /// The blobs in memory as one sorted run.
    fn memory_records(&self) -> Vec<Record> {
        let mut out: Vec<Record> = Vec::with_capacity(self.in_memory());
        for (blob_type, map) in [(BlobType::Data, &self.data), (BlobType::Tree, &self.tree)] {
            out.extend(map.iter().map(|(id, c)| Record {
                id: *id,
                blob_type,
                pack: c.pack,
                offset: c.offset,
                length: c.length,
                raw_length: c.raw_length,
                compressed: c.compressed,
            }));
        }
        out.sort_unstable_by(|a, b| {
            (a.id.as_bytes(), a.blob_type == BlobType::Tree)
                .cmp(&(b.id.as_bytes(), b.blob_type == BlobType::Tree))
        });
        out
    }

    /// Writes the blobs in memory to a new table and empties memory; merges
    /// the tables when there are many. On failure the blobs stay in memory
    /// and paging stops for this index.
    fn page_out(&mut self) {
        if self.packs.len() as u64 >= u64::from(table::MAX_PACKS) {
            return;
        }
        let records = self.memory_records();
        let written = table_dir()
            .and_then(|dir| Table::write(&dir, records.len() as u64, records.into_iter().map(Ok)));
        match written {
            Ok(t) => {
                self.tables.push(Arc::new(t));
                self.data = HashMap::new();
                self.tree = HashMap::new();
                if self.tables.len() > MAX_TABLES {
                    self.merge_tables();
                }
            }
            Err(e) => self.stop_paging(&e),
        }
    }

    fn stop_paging(&mut self, e: &std::io::Error) {
        tracing::warn!(
            "cannot page the index to disk under {} ({e}); keeping it in memory",
            crate::util::cache_root().join("index").display()
        );
        self.memory_blobs = usize::MAX;
    }

    /// Merges every table and the blobs in memory into one table.
    fn merge_tables(&mut self) {
        let written =
            table_dir().and_then(|dir| Table::write(&dir, self.entry_count(), self.entries()));
        match written {
            Ok(t) => {
                self.tables = vec![Arc::new(t)];
                self.data = HashMap::new();
                self.tree = HashMap::new();
            }
            Err(e) => self.stop_paging(&e),
        }
    }

    /// Whether a blob is indexed.
    pub fn contains(&self, blob_type: BlobType, id: &Id) -> bool {
        self.map(blob_type).contains_key(id) || self.paged(blob_type, id).is_some()
    }

    fn map(&self, blob_type: BlobType) -> &HashMap<Id, CompactEntry> {
        match blob_type {
            BlobType::Data => &self.data,
            BlobType::Tree => &self.tree,
        }
    }

    /// The blob's record in the first table that has it.
    fn paged(&self, blob_type: BlobType, id: &Id) -> Option<Record> {
        for t in &self.tables {
            match t.get(blob_type, id) {
                Ok(Some(r)) => return Some(r),
                Ok(None) => {}
                Err(e) => {
                    tracing::error!("cannot read the index paged to disk: {e}");
                    return None;
                }
            }
        }
        None
    }

    /// Where a blob is stored.
    pub fn get(&self, blob_type: BlobType, id: &Id) -> Option<BlobLocation> {
        let c = match self.paged(blob_type, id) {
            Some(r) => CompactEntry {
                pack: r.pack,
                offset: r.offset,
                length: r.length,
                raw_length: r.raw_length,
                compressed: r.compressed,
            },
            None => *self.map(blob_type).get(id)?,
        };
        Some(BlobLocation {
            pack: self.packs.get(c.pack)?.0,
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
        let n = self.packs.number(pack)?;
        self.packs.get(n).map(|p| p.1)
    }

    /// Every indexed pack with its size.
    pub fn packs(&self) -> impl Iterator<Item = &(Id, u64)> + '_ {
        self.packs.iter()
    }

    /// Number of indexed packs.
    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }

    /// Number of indexed blobs of a type (a blob that two packs hold may
    /// count twice until the index is compacted).
    pub fn blob_count(&self, blob_type: BlobType) -> usize {
        let paged: u64 = self
            .tables
            .iter()
            .flat_map(|t| t.iter())
            .filter(|r| r.as_ref().is_ok_and(|r| r.blob_type == blob_type))
            .count() as u64;
        self.map(blob_type).len() + paged as usize
    }

    /// Every blob of every pack, grouped by pack (order unspecified).
    ///
    /// # Errors
    ///
    /// Reading the index paged to disk.
    pub fn entries_by_pack(&self) -> crate::error::Result<HashMap<Id, Vec<PackEntry>>> {
        self.entries_where(|_| true)
    }

    /// The blobs of the packs `packs`, grouped by pack: one pass over the
    /// index, holding only what it returns (for a caller that works
    /// through a large repository's packs a batch at a time).
    ///
    /// # Errors
    ///
    /// Reading the index paged to disk.
    #[allow(clippy::implicit_hasher)]
    pub fn entries_of(
        &self,
        packs: &std::collections::HashSet<Id>,
    ) -> crate::error::Result<HashMap<Id, Vec<PackEntry>>> {
        self.entries_where(|p| packs.contains(p))
    }

    /// Blobs indexed (a blob that two packs hold may count twice until
    /// the index is compacted), without reading the index.
    pub fn entry_count(&self) -> u64 {
        self.tables.iter().map(|t| t.len()).sum::<u64>() + self.in_memory() as u64
    }

    fn entries_where(
        &self,
        wanted: impl Fn(&Id) -> bool,
    ) -> crate::error::Result<HashMap<Id, Vec<PackEntry>>> {
        let mut out: HashMap<Id, Vec<PackEntry>> = HashMap::new();
        for r in self.entries() {
            let r = r.map_err(|e| crate::error::Error::io("reading the paged index", e))?;
            let Some((pack, _)) = self.packs.get(r.pack) else {
                continue;
            };
            if !wanted(pack) {
                continue;
            }
            out.entry(*pack).or_default().push(r.entry());
        }
        Ok(out)
    }

    /// Every blob once, at its location, in id order.
    fn entries(&self) -> impl Iterator<Item = std::io::Result<Record>> + '_ {
        let mut streams: Vec<Box<dyn Iterator<Item = std::io::Result<Record>> + '_>> = self
            .tables
            .iter()
            .map(|t| Box::new(t.iter()) as Box<dyn Iterator<Item = _>>)
            .collect();
        streams.push(Box::new(self.memory_records().into_iter().map(Ok)));
        table::merge(streams)
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

    /// Entries of `packs` packs, with blobs stored twice (in two packs,
    /// and one id as both types), deterministic.
    fn busy_packs(packs: u32) -> Vec<(Id, Vec<PackEntry>)> {
        (0..packs)
            .map(|n| {
                let blobs = (0..(n % 7 + 1) * 5)
                    .map(|i| {
                        // Every third pack repeats blobs of the one before.
                        let owner = if n % 3 == 2 && i % 2 == 0 { n - 1 } else { n };
                        PackEntry {
                            blob_type: if i % 11 == 3 {
                                BlobType::Tree
                            } else {
                                BlobType::Data
                            },
                            id: Id::hash(&[owner.to_le_bytes(), i.to_le_bytes()].concat()),
                            offset: i * 100 + n,
                            length: 10 + i,
                            raw_length: 20 + n,
                            compressed: (i + n) % 2 == 0,
                        }
                    })
                    .collect();
                (Id::hash(&n.to_be_bytes()), blobs)
            })
            .collect()
    }

    fn sorted(mut m: HashMap<Id, Vec<PackEntry>>) -> Vec<(Id, Vec<PackEntry>)> {
        let mut v: Vec<_> = m
            .drain()
            .map(|(p, mut es)| {
                es.sort_by_key(|e| (e.id, e.blob_type == BlobType::Tree));
                (p, es)
            })
            .collect();
        v.sort_by_key(|(p, _)| *p);
        v
    }

    fn same(paged: &Index, reference: &Index, packs: &[(Id, Vec<PackEntry>)]) {
        for (_, entries) in packs {
            for e in entries {
                for t in [BlobType::Data, BlobType::Tree] {
                    assert_eq!(paged.contains(t, &e.id), reference.contains(t, &e.id));
                    assert_eq!(paged.get(t, &e.id), reference.get(t, &e.id));
                }
            }
        }
        assert!(!paged.contains(BlobType::Data, &Id::hash(b"absent")));
        assert_eq!(
            sorted(paged.entries_by_pack().unwrap()),
            sorted(reference.entries_by_pack().unwrap())
        );
        assert!(paged.packs().eq(reference.packs()));
        let some: std::collections::HashSet<Id> =
            packs.iter().step_by(3).map(|(id, _)| *id).collect();
        let mut expected = reference.entries_by_pack().unwrap();
        expected.retain(|p, _| some.contains(p));
        assert_eq!(sorted(paged.entries_of(&some).unwrap()), sorted(expected));
    }

    #[test]
    fn paged_index_answers_as_the_one_in_memory() {
        let packs = busy_packs(120);
        let mut reference = Index::with_memory_limit(usize::MAX);
        // Paged every few blobs: many tables, merged past MAX_TABLES.
        let mut paged = Index::with_memory_limit(7);
        for (id, entries) in &packs[..100] {
            reference.add_pack(*id, 1000, entries);
            paged.add_pack(*id, 1000, entries);
        }
        assert!(!paged.tables.is_empty());
        same(&paged, &reference, &packs[..100]);
        paged.compact();
        assert_eq!(paged.tables.len(), 1);
        assert_eq!(paged.in_memory(), 0);
        same(&paged, &reference, &packs[..100]);
        // A clone takes more packs (a backup) and shares the table.
        let mut more = paged.clone();
        more.memory_blobs = 1000;
        for (id, entries) in &packs[100..] {
            reference.add_pack(*id, 1000, entries);
            more.add_pack(*id, 1000, entries);
        }
        assert!(Arc::ptr_eq(&more.tables[0], &paged.tables[0]));
        same(&more, &reference, &packs);
        assert_eq!(
            more.blob_count(BlobType::Tree) + more.blob_count(BlobType::Data),
            reference.blob_count(BlobType::Tree) + reference.blob_count(BlobType::Data)
        );
    }

    #[test]
    fn one_blob_in_two_packs_keeps_its_first_location_when_paged() {
        let blob = |offset| PackEntry {
            blob_type: BlobType::Data,
            id: Id::hash(b"twice"),
            offset,
            length: 1,
            raw_length: 1,
            compressed: false,
        };
        let mut idx = Index::with_memory_limit(0);
        idx.add_pack(Id::hash(b"first"), 1, &[blob(1)]);
        idx.add_pack(Id::hash(b"second"), 1, &[blob(2)]);
        assert_eq!(idx.tables.len(), 2);
        let first = idx.get(BlobType::Data, &Id::hash(b"twice")).unwrap();
        assert_eq!((first.pack, first.entry.offset), (Id::hash(b"first"), 1));
        idx.compact();
        assert_eq!(idx.get(BlobType::Data, &Id::hash(b"twice")), Some(first));
        assert_eq!(idx.entries_by_pack().unwrap().len(), 1);
    }
}
