//! Making a page delta while a relation file is read for a backup: the
//! pages at or after the base's start, new, or past the base's end
//! compared with the base's copies, and the byte ranges that differ
//! recorded ([`DeltaReader`]).

use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;

use super::super::checksum::page_header;
use super::super::lsn::Lsn;
use super::base::BasePages;
use super::format::{HEADER_LEN, MAGIC};

/// Equal bytes that end a changed range (a range header costs 4 bytes).
const RANGE_GAP: usize = 8;
/// Pages a delta reader takes from the file at once.
const PAGES_PER_READ: usize = 512;

/// Appends the record of page `blkno` to `out`: the block number, the
/// number of ranges, then each range where `new` differs from `old` (its
/// offset and length, u16 each, and its bytes of `new`). Ranges end at
/// [`RANGE_GAP`] equal bytes. Returns `false`, appending nothing, when the
/// pages are equal.
pub(super) fn push_record(out: &mut Vec<u8>, blkno: u32, new: &[u8], old: &[u8]) -> bool {
    let n = new.len();
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    let mut i = 0;
    while i < n {
        // Equal words, then equal bytes.
        while i + 8 <= n && new[i..i + 8] == old[i..i + 8] {
            i += 8;
        }
        while i < n && new[i] == old[i] {
            i += 1;
        }
        if i >= n {
            break;
        }
        let start = i;
        let mut end = i + 1;
        let mut j = i + 1;
        while j < n && j - end < RANGE_GAP {
            if new[j] != old[j] {
                end = j + 1;
            }
            j += 1;
        }
        ranges.push((start, end));
        i = end;
    }
    if ranges.is_empty() {
        return false;
    }
    out.extend_from_slice(&blkno.to_le_bytes());
    // A page of at most 32 KiB has fewer than 2^16 ranges and offsets.
    out.extend_from_slice(&(ranges.len() as u16).to_le_bytes());
    for (start, end) in ranges {
        out.extend_from_slice(&(start as u16).to_le_bytes());
        out.extend_from_slice(&((end - start) as u16).to_le_bytes());
        out.extend_from_slice(&new[start..end]);
    }
    true
}

/// Reads a whole relation file from `inner` and yields its delta: the
/// header, then a record for every page at or after `base_lsn`, new, or
/// past the base's end that differs from the base's page (a page past the
/// base's end from a zero page), holding the byte ranges that differ.
/// `on_end` gets the number of records and the delta's length when the
/// file is read to its end (after `inner` returned its end, which records
/// the file's checksum).
pub(crate) struct DeltaReader<R> {
    inner: R,
    /// The file again, for a second look at the headers of pages left out.
    recheck: Option<File>,
    base: Box<dyn BasePages>,
    block: usize,
    base_lsn: u64,
    base_blocks: u64,
    next_block: u64,
    out: Vec<u8>,
    at: usize,
    scratch: Vec<u8>,
    old: Vec<u8>,
    pages: u64,
    bytes: u64,
    done: bool,
    on_end: Option<Box<dyn FnOnce(u64, u64) + Send>>,
}

impl<R: Read> DeltaReader<R> {
    /// A reader of the delta of the file `inner` reads (`size` bytes, whole
    /// pages of `block` bytes) against `base`, `base_size` bytes copied
    /// from `base_lsn` on.
    #[allow(clippy::too_many_arguments)] // The file, its base, and what the header records.
    pub(crate) fn new(
        inner: R,
        recheck: Option<File>,
        base: Box<dyn BasePages>,
        block: u32,
        base_lsn: Lsn,
        base_size: u64,
        size: u64,
        on_end: Box<dyn FnOnce(u64, u64) + Send>,
    ) -> Self {
        let mut out = Vec::with_capacity(HEADER_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&block.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&base_lsn.0.to_le_bytes());
        out.extend_from_slice(&base_size.to_le_bytes());
        out.extend_from_slice(&size.to_le_bytes());
        DeltaReader {
            inner,
            recheck,
            base,
            block: block as usize,
            base_lsn: base_lsn.0,
            base_blocks: base_size / u64::from(block),
            next_block: 0,
            out,
            at: 0,
            scratch: vec![0u8; block as usize * PAGES_PER_READ],
            old: vec![0u8; block as usize],
            pages: 0,
            bytes: 0,
            done: false,
            on_end: Some(on_end),
        }
    }

    /// Reads the next pages of the file and keeps those the delta holds.
    fn fill(&mut self) -> std::io::Result<()> {
        self.bytes += self.out.len() as u64;
        self.out.clear();
        self.at = 0;
        let mut got = 0;
        while got < self.scratch.len() {
            let n = self.inner.read(&mut self.scratch[got..])?;
            if n == 0 {
                self.done = true;
                break;
            }
            got += n;
        }
        if got % self.block != 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "a relation file ends inside a page",
            ));
        }
        let first = self.next_block;
        let changed = |page: &[u8], blkno: u64| {
            let h = page_header(page);
            blkno >= self.base_blocks || h.is_new || h.lsn >= self.base_lsn
        };
        let mut keep: Vec<bool> = self.scratch[..got]
            .chunks_exact(self.block)
            .enumerate()
            .map(|(i, page)| changed(page, first + i as u64))
            .collect();
        // A page read while the server wrote it can be torn: its first half
        // (with the LSN) old, the rest new. The server writes a page from
        // its start, so once the read is done such a page's header shows
        // the new LSN; a page whose header now says changed goes in, with
        // the bytes read (those the manifest's checksum covers). Without
        // this a torn page left out would restore as the base's copy and
        // fail the manifest check (replay would mend it, the check cannot
        // know).
        let mut header = [0u8; 16];
        for (i, k) in keep.iter_mut().enumerate().filter(|(_, k)| !**k) {
            let blkno = first + i as u64;
            *k = match &self.recheck {
                Some(f) => match f.read_exact_at(&mut header, blkno * self.block as u64) {
                    Ok(()) => changed(&header, blkno),
                    Err(_) => true,
                },
                None => false,
            };
        }
        for (i, page) in self.scratch[..got].chunks_exact(self.block).enumerate() {
            if !keep[i] {
                continue;
            }
            let blkno = first + i as u64;
            let n = u32::try_from(blkno).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "too many pages")
            })?;
            if blkno < self.base_blocks {
                self.base.read_page(blkno, &mut self.old)?;
            } else {
                self.old.fill(0);
            }
            if push_record(&mut self.out, n, page, &self.old) {
                self.pages += 1;
            }
        }
        self.next_block += keep.len() as u64;
        if self.done {
            if let Some(f) = self.on_end.take() {
                f(self.pages, self.bytes + self.out.len() as u64);
            }
        }
        Ok(())
    }
}

impl<R: Read> Read for DeltaReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.at == self.out.len() {
            if self.done {
                return Ok(0);
            }
            self.fill()?;
        }
        let n = buf.len().min(self.out.len() - self.at);
        buf[..n].copy_from_slice(&self.out[self.at..self.at + n]);
        self.at += n;
        Ok(n)
    }
}
