//! Index entries paged to disk: sorted tables in unlinked temporary files,
//! read with positioned reads, so that a repository of ten million blobs is
//! indexed in a few megabytes of memory (issue 32).
//!
//! A table is a run of fixed-size records sorted by blob id, then type, each
//! key at most once. In memory it keeps only a directory: for each value of
//! the id's first `bits` bits, the first record whose id starts with it.
//! Ids are keyed hashes, so a directory entry covers a handful of records
//! and a lookup is one read of under a kilobyte, served by the page cache.

use std::collections::BinaryHeap;
use std::fs::File;
use std::io::{self, BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::id::Id;
use crate::pack::{BlobType, PackEntry};

/// Bytes of one record: the id, then the pack number (bit 31: a tree
/// blob, bit 30: compressed), offset, stored length and plaintext length,
/// each a little-endian `u32`.
pub(super) const RECORD: usize = 48;
/// Pack numbers must stay below this (two flag bits above them).
pub(super) const MAX_PACKS: u32 = 1 << 30;
const TREE_BIT: u32 = 1 << 31;
const COMPRESSED_BIT: u32 = 1 << 30;
/// Records aimed at per directory entry.
const PER_SLOT: u64 = 16;
/// Records read at once by a sequential reader.
const READ_RECORDS: usize = 1365;

/// One index entry as a table holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Record {
    pub(super) id: Id,
    pub(super) blob_type: BlobType,
    pub(super) pack: u32,
    pub(super) offset: u32,
    pub(super) length: u32,
    pub(super) raw_length: u32,
    pub(super) compressed: bool,
}

impl Record {
    /// The entry as a pack header states it.
    pub(super) fn entry(&self) -> PackEntry {
        PackEntry {
            blob_type: self.blob_type,
            id: self.id,
            offset: self.offset,
            length: self.length,
            raw_length: self.raw_length,
            compressed: self.compressed,
        }
    }

    /// The sort key: id, then type (data before tree).
    fn key(&self) -> ([u8; 32], bool) {
        (*self.id.as_bytes(), self.blob_type == BlobType::Tree)
    }

    fn encode(&self, out: &mut [u8]) {
        out[..32].copy_from_slice(self.id.as_bytes());
        let mut pack = self.pack;
        if self.blob_type == BlobType::Tree {
            pack |= TREE_BIT;
        }
        if self.compressed {
            pack |= COMPRESSED_BIT;
        }
        for (i, v) in [pack, self.offset, self.length, self.raw_length]
            .into_iter()
            .enumerate()
        {
            out[32 + 4 * i..36 + 4 * i].copy_from_slice(&v.to_le_bytes());
        }
    }

    fn decode(b: &[u8]) -> Record {
        let word =
            |i: usize| u32::from_le_bytes(b[32 + 4 * i..36 + 4 * i].try_into().unwrap_or([0; 4]));
        let mut id = [0u8; 32];
        id.copy_from_slice(&b[..32]);
        let pack = word(0);
        Record {
            id: Id(id),
            blob_type: if pack & TREE_BIT != 0 {
                BlobType::Tree
            } else {
                BlobType::Data
            },
            pack: pack & !(TREE_BIT | COMPRESSED_BIT),
            offset: word(1),
            length: word(2),
            raw_length: word(3),
            compressed: pack & COMPRESSED_BIT != 0,
        }
    }
}

/// A sorted table of records in an unlinked temporary file.
pub(super) struct Table {
    file: File,
    /// Where the records start in the file.
    base: u64,
    records: u64,
    bits: u32,
    /// `2^bits + 1` entries: where the records of each id prefix start.
    directory: Vec<u32>,
}

impl std::fmt::Debug for Table {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Table")
            .field("records", &self.records)
            .field("bits", &self.bits)
            .finish_non_exhaustive()
    }
}

fn prefix(id: &Id, bits: u32) -> usize {
    let b = id.as_bytes();
    let top = u32::from_be_bytes([b[0], b[1], b[2], b[3]]);
    (top >> (32 - bits)) as usize
}

/// What [`write_records`] wrote: the count and the directory.
pub(super) struct Written {
    pub(super) records: u64,
    pub(super) bits: u32,
    pub(super) directory: Vec<u32>,
}

/// Directory bits for about `expected` records.
fn bits_for(expected: u64) -> u32 {
    (expected / PER_SLOT).max(1).ilog2().clamp(8, 24) + 1
}

/// Writes `records` (sorted by key; equal keys keep the first) to `out`
/// as a table's records, and returns their directory, sized for
/// `expected` records.
pub(super) fn write_records(
    out: &mut impl Write,
    expected: u64,
    records: impl Iterator<Item = io::Result<Record>>,
) -> io::Result<Written> {
    let too_many = || io::Error::other("more than 4 billion blobs in one index table");
    let bits = bits_for(expected);
    let mut directory = vec![0u32; (1usize << bits) + 1];
    let mut next_slot = 0usize;
    let mut count: u64 = 0;
    let mut last: Option<([u8; 32], bool)> = None;
    let mut buf = [0u8; RECORD];
    for r in records {
        let r = r?;
        let key = r.key();
        if let Some(prev) = last {
            if key == prev {
                continue;
            }
            debug_assert!(key > prev, "table records out of order");
        }
        last = Some(key);
        let slot = prefix(&r.id, bits);
        let at = u32::try_from(count).map_err(|_| too_many())?;
        while next_slot <= slot {
            directory[next_slot] = at;
            next_slot += 1;
        }
        r.encode(&mut buf);
        out.write_all(&buf)?;
        count += 1;
    }
    let end = u32::try_from(count).map_err(|_| too_many())?;
    for d in &mut directory[next_slot..] {
        *d = end;
    }
    Ok(Written {
        records: count,
        bits,
        directory,
    })
}

impl Table {
    /// Writes `records` (sorted by key; equal keys keep the first) into a
    /// new unlinked file under `dir`; `expected` sizes the directory.
    pub(super) fn write(
        dir: &Path,
        expected: u64,
        records: impl Iterator<Item = io::Result<Record>>,
    ) -> io::Result<Table> {
        let file = tempfile::tempfile_in(dir)?;
        let written = {
            let mut out = BufWriter::with_capacity(256 * 1024, &file);
            let w = write_records(&mut out, expected, records)?;
            out.flush()?;
            w
        };
        Ok(Table::in_file(file, 0, written))
    }

    /// The table whose records start at `base` in `file`.
    pub(super) fn in_file(file: File, base: u64, written: Written) -> Table {
        Table {
            file,
            base,
            records: written.records,
            bits: written.bits,
            directory: written.directory,
        }
    }

    /// Checks that a directory read back from a file fits `records`
    /// records; `None` when it does not.
    pub(super) fn check_directory(records: u64, bits: u32, directory: &[u32]) -> Option<()> {
        let fits = (9..=25).contains(&bits)
            && directory.len() == (1usize << bits) + 1
            && directory.windows(2).all(|w| w[0] <= w[1])
            && directory.last().map(|&l| u64::from(l)) == Some(records)
            && directory.first() == Some(&0);
        fits.then_some(())
    }

    /// Records held.
    pub(super) fn len(&self) -> u64 {
        self.records
    }

    /// The record of `(blob_type, id)`, if the table has it.
    pub(super) fn get(&self, blob_type: BlobType, id: &Id) -> io::Result<Option<Record>> {
        Ok(self.find(blob_type, id)?.map(|(_, r)| r))
    }

    /// The position and record of `(blob_type, id)`, if the table has it.
    pub(super) fn find(&self, blob_type: BlobType, id: &Id) -> io::Result<Option<(u64, Record)>> {
        let slot = prefix(id, self.bits);
        let (lo, hi) = (
            u64::from(self.directory[slot]),
            u64::from(self.directory[slot + 1]),
        );
        if lo == hi {
            return Ok(None);
        }
        let want = (*id.as_bytes(), blob_type == BlobType::Tree);
        if hi - lo <= 64 {
            let mut buf = vec![0u8; ((hi - lo) as usize) * RECORD];
            self.file
                .read_exact_at(&mut buf, self.base + lo * RECORD as u64)?;
            return Ok(buf
                .chunks_exact(RECORD)
                .map(Record::decode)
                .zip(lo..)
                .find(|(r, _)| r.key() == want)
                .map(|(r, at)| (at, r)));
        }
        // A crowded slot (never expected of hashes): binary search.
        let (mut lo, mut hi) = (lo, hi);
        let mut buf = [0u8; RECORD];
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            self.file
                .read_exact_at(&mut buf, self.base + mid * RECORD as u64)?;
            let r = Record::decode(&buf);
            match r.key().cmp(&want) {
                std::cmp::Ordering::Equal => return Ok(Some((mid, r))),
                std::cmp::Ordering::Less => lo = mid + 1,
                std::cmp::Ordering::Greater => hi = mid,
            }
        }
        Ok(None)
    }

    /// Every record in key order.
    pub(super) fn iter(&self) -> TableReader<'_> {
        TableReader {
            table: self,
            next: 0,
            buf: Vec::new(),
            at: 0,
        }
    }
}

/// Reads a table from start to end in large positioned reads.
pub(super) struct TableReader<'a> {
    table: &'a Table,
    next: u64,
    buf: Vec<u8>,
    at: usize,
}

impl Iterator for TableReader<'_> {
    type Item = io::Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.at == self.buf.len() {
            let left = self.table.records - self.next;
            if left == 0 {
                return None;
            }
            let n = left.min(READ_RECORDS as u64) as usize;
            self.buf.resize(n * RECORD, 0);
            if let Err(e) = self
                .table
                .file
                .read_exact_at(&mut self.buf, self.table.base + self.next * RECORD as u64)
            {
                self.next = self.table.records;
                self.buf.clear();
                self.at = 0;
                return Some(Err(e));
            }
            self.next += n as u64;
            self.at = 0;
        }
        let r = Record::decode(&self.buf[self.at..self.at + RECORD]);
        self.at += RECORD;
        Some(Ok(r))
    }
}

/// Merges sorted record streams into one, in key order; where streams hold
/// the same key, the earliest stream's record is kept and the others are
/// dropped.
pub(super) fn merge<'a>(
    streams: Vec<Box<dyn Iterator<Item = io::Result<Record>> + 'a>>,
) -> impl Iterator<Item = io::Result<Record>> + 'a {
    Merge {
        heap: BinaryHeap::new(),
        streams,
        started: false,
        last: None,
    }
}

struct Head {
    record: Record,
    stream: usize,
}

impl PartialEq for Head {
    fn eq(&self, other: &Self) -> bool {
        self.cmp(other) == std::cmp::Ordering::Equal
    }
}
impl Eq for Head {}
impl PartialOrd for Head {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Head {
    /// Reversed, so that the max-heap pops the smallest key, and of equal
    /// keys the earliest stream.
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        (other.record.key(), other.stream).cmp(&(self.record.key(), self.stream))
    }
}

struct Merge<'a> {
    heap: BinaryHeap<Head>,
    streams: Vec<Box<dyn Iterator<Item = io::Result<Record>> + 'a>>,
    started: bool,
    last: Option<([u8; 32], bool)>,
}

impl Merge<'_> {
    fn pull(&mut self, stream: usize) -> io::Result<()> {
        if let Some(r) = self.streams[stream].next() {
            self.heap.push(Head { record: r?, stream });
        }
        Ok(())
    }
}

impl Iterator for Merge<'_> {
    type Item = io::Result<Record>;

    fn next(&mut self) -> Option<Self::Item> {
        if !self.started {
            self.started = true;
            for s in 0..self.streams.len() {
                if let Err(e) = self.pull(s) {
                    return Some(Err(e));
                }
            }
        }
        loop {
            let head = self.heap.pop()?;
            if let Err(e) = self.pull(head.stream) {
                return Some(Err(e));
            }
            let key = head.record.key();
            if self.last == Some(key) {
                continue;
            }
            self.last = Some(key);
            return Some(Ok(head.record));
        }
    }
}
