//! Every blob of an index once, in key order, each at a position: what
//! prune marks with one bit a blob, and reads back a pass at a time
//! (issue 32: prune of ten million blobs in bounded memory).

use std::sync::Arc;

use super::packs::PackList;
use super::table::{Record, Table};
use super::Index;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::pack::{BlobType, PackEntry};

/// A frozen copy of an index: a sorted table on disk, or for an index
/// held in memory, its blobs sorted in memory.
#[derive(Debug)]
pub struct SortedView {
    packs: PackList,
    blobs: Blobs,
}

#[derive(Debug)]
enum Blobs {
    Table(Arc<Table>),
    Memory(Vec<Record>),
}

/// One blob of a [`SortedView`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ViewEntry {
    /// Its position, below [`SortedView::len`].
    pub position: u64,
    /// The number of its pack (see [`SortedView::pack`]).
    pub pack: u32,
    /// Where in the pack it is.
    pub entry: PackEntry,
}

fn paged_error(e: std::io::Error) -> Error {
    Error::io("reading the index paged to disk", e)
}

impl Index {
    /// This index as a [`SortedView`]. An index paged to several tables,
    /// or to tables and memory, is first merged into a new table.
    ///
    /// # Errors
    ///
    /// Writing or reading the index paged to disk.
    pub fn sorted_view(&self) -> Result<SortedView> {
        let blobs = if self.tables.is_empty() {
            Blobs::Memory(self.memory_records())
        } else if self.tables.len() == 1 && self.in_memory() == 0 {
            Blobs::Table(self.tables[0].clone())
        } else {
            let dir = super::table_dir().map_err(paged_error)?;
            let expected = self.entry_count();
            Blobs::Table(Arc::new(
                Table::write(&dir, expected, self.entries()).map_err(paged_error)?,
            ))
        };
        let mut packs = self.packs.clone();
        packs.freeze();
        Ok(SortedView { packs, blobs })
    }
}

impl SortedView {
    /// Blobs held, each once.
    pub fn len(&self) -> u64 {
        match &self.blobs {
            Blobs::Table(t) => t.len(),
            Blobs::Memory(v) => v.len() as u64,
        }
    }

    /// Whether no blob is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Number of packs; pack numbers are below it.
    pub fn pack_count(&self) -> usize {
        self.packs.len()
    }

    /// Pack number `n`: its id and size.
    pub fn pack(&self, n: u32) -> Option<(Id, u64)> {
        self.packs.get(n).copied()
    }

    /// The position of a blob, if indexed.
    ///
    /// # Errors
    ///
    /// Reading the index paged to disk.
    pub fn position(&self, blob_type: BlobType, id: &Id) -> Result<Option<u64>> {
        match &self.blobs {
            Blobs::Table(t) => Ok(t.find(blob_type, id).map_err(paged_error)?.map(|(p, _)| p)),
            Blobs::Memory(v) => {
                let key = (id.as_bytes(), blob_type == BlobType::Tree);
                Ok(v.binary_search_by(|r| {
                    (r.id.as_bytes(), r.blob_type == BlobType::Tree).cmp(&key)
                })
                .ok()
                .map(|i| i as u64))
            }
        }
    }

    /// Every blob in position order.
    pub fn entries(&self) -> impl Iterator<Item = Result<ViewEntry>> + '_ {
        let records: Box<dyn Iterator<Item = std::io::Result<Record>> + '_> = match &self.blobs {
            Blobs::Table(t) => Box::new(t.iter()),
            Blobs::Memory(v) => Box::new(v.iter().copied().map(Ok)),
        };
        records.zip(0u64..).map(|(r, position)| {
            let r = r.map_err(paged_error)?;
            Ok(ViewEntry {
                position,
                pack: r.pack,
                entry: r.entry(),
            })
        })
    }
}
