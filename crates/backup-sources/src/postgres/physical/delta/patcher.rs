//! Applying a page delta while a restore writes its base ([`Patcher`]):
//! the base's pages go out with the delta's records applied, then the
//! pages past the base's end, up to the file's size.

use backup_core::{Error, FileKind, Result};
use bytes::Bytes;

use super::format::{DeltaEntry, HEADER_LEN, MAGIC, MAGIC_PAGES};

/// Where a [`Patcher`] takes the delta's bytes from: the next piece, or
/// `None` at its end.
pub(crate) type DeltaSource = Box<dyn FnMut() -> Result<Option<Bytes>> + Send>;

/// Applies a delta to its base's bytes as they stream past, so that a
/// restore writes each file once: the base's pages go out with the
/// delta's records applied, then the pages past the base's end, up to the
/// file's size. The caller checks what comes out against the backup
/// manifest.
pub(crate) struct Patcher {
    key: Vec<u8>,
    block: usize,
    size: u64,
    source: DeltaSource,
    /// Delta bytes not parsed yet (from `at`).
    buf: Vec<u8>,
    at: usize,
    source_done: bool,
    /// Once the header is read: whether records are byte ranges
    /// ([`MAGIC`]) or whole pages ([`MAGIC_PAGES`]).
    ranges: Option<bool>,
    /// The next record's block number and length in `buf` (from `at`).
    record: Option<(u64, usize)>,
    /// The block number the next record must reach at least.
    next_block: u64,
    /// The page being assembled from base bytes.
    page: Vec<u8>,
    /// Number of the page `page` is.
    blkno: u64,
    out: Vec<u8>,
}

impl Patcher {
    /// A patcher for the file `key` (a manifest path) that `entry`
    /// describes, in pages of `block` bytes, reading the delta from
    /// `source`.
    pub(crate) fn new(key: Vec<u8>, entry: &DeltaEntry, block: u32, source: DeltaSource) -> Self {
        Patcher {
            key,
            block: block as usize,
            size: entry.size,
            source,
            buf: Vec::new(),
            at: 0,
            source_done: false,
            ranges: None,
            record: None,
            next_block: 0,
            page: Vec::with_capacity(block as usize),
            blkno: 0,
            out: Vec::new(),
        }
    }

    fn damaged(&self, what: impl std::fmt::Display) -> Error {
        Error::corrupt(
            FileKind::Snapshot,
            format!("page delta of {}", String::from_utf8_lossy(&self.key)),
            what,
        )
    }

    /// Makes at least `n` unparsed bytes available; `false` when the
    /// delta ends first.
    fn want(&mut self, n: usize) -> Result<bool> {
        while self.buf.len() - self.at < n {
            if self.source_done {
                return Ok(false);
            }
            match (self.source)()? {
                Some(piece) => {
                    self.buf.drain(..self.at);
                    self.at = 0;
                    self.buf.extend_from_slice(&piece);
                }
                None => self.source_done = true,
            }
        }
        Ok(true)
    }

    fn u16_at(&self, i: usize) -> usize {
        usize::from(u16::from_le_bytes([self.buf[i], self.buf[i + 1]]))
    }

    /// Reads the header once, then the next record's position (`None`
    /// past the last record).
    fn next_record(&mut self) -> Result<Option<(u64, usize)>> {
        if let Some(r) = self.record {
            return Ok(Some(r));
        }
        let ranges = if let Some(r) = self.ranges {
            r
        } else {
            if !self.want(HEADER_LEN)? {
                return Err(self.damaged("it ends inside its header"));
            }
            let h = &self.buf[self.at..self.at + HEADER_LEN];
            let ranges = match &h[..8] {
                m if m == MAGIC => true,
                m if m == MAGIC_PAGES => false,
                _ => return Err(self.damaged("it does not start as a page delta")),
            };
            let block = u32::from_le_bytes([h[8], h[9], h[10], h[11]]) as usize;
            let mut size = [0u8; 8];
            size.copy_from_slice(&h[32..40]);
            let size = u64::from_le_bytes(size);
            if block != self.block || size != self.size {
                return Err(self.damaged(format!(
                    "its header ({block} byte pages, {size} bytes) does not match the index ({}, {})",
                    self.block, self.size
                )));
            }
            self.at += HEADER_LEN;
            self.ranges = Some(ranges);
            ranges
        };
        if !self.want(1)? {
            return Ok(None);
        }
        let len = if ranges {
            if !self.want(6)? {
                return Err(self.damaged("it ends inside a record"));
            }
            // (`want` may move the unparsed bytes: positions from `at`.)
            let count = self.u16_at(self.at + 4);
            let mut len = 6;
            for _ in 0..count {
                if !self.want(len + 4)? {
                    return Err(self.damaged("it ends inside a record"));
                }
                len += 4 + self.u16_at(self.at + len + 2);
            }
            len
        } else {
            4 + self.block
        };
        if !self.want(len)? {
            return Err(self.damaged("it ends inside a record"));
        }
        let b = &self.buf[self.at..self.at + 4];
        let blkno = u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]));
        if blkno < self.next_block || blkno >= self.size / self.block as u64 {
            return Err(self.damaged(format!(
                "block {blkno} is out of order or past the file's end"
            )));
        }
        self.next_block = blkno + 1;
        self.record = Some((blkno, len));
        Ok(self.record)
    }

    /// Applies the record for `self.blkno`, if there is one, to `self.page`.
    fn patch_page(&mut self) -> Result<()> {
        let Some((blkno, len)) = self.next_record()? else {
            return Ok(());
        };
        if blkno != self.blkno {
            return Ok(());
        }
        let rec = self.at;
        if self.ranges == Some(true) {
            let count = self.u16_at(rec + 4);
            let mut r = rec + 6;
            let mut end = 0;
            for _ in 0..count {
                let (off, n) = (self.u16_at(r), self.u16_at(r + 2));
                if off < end || off + n > self.block || n == 0 {
                    return Err(self.damaged(format!(
                        "a range of block {blkno} overlaps another or leaves the page"
                    )));
                }
                self.page[off..off + n].copy_from_slice(&self.buf[r + 4..r + 4 + n]);
                end = off + n;
                r += 4 + n;
            }
        } else {
            self.page.copy_from_slice(&self.buf[rec + 4..rec + len]);
        }
        self.at += len;
        self.record = None;
        Ok(())
    }

    /// The page in `self.page` is complete: patch it and queue it (pages
    /// past the file's size are dropped: the file shrank).
    fn page_done(&mut self) -> Result<()> {
        if (self.blkno + 1) * self.block as u64 <= self.size {
            self.patch_page()?;
            self.out.extend_from_slice(&self.page);
        }
        self.page.clear();
        self.blkno += 1;
        Ok(())
    }

    fn flush(&mut self, emit: &mut dyn FnMut(Bytes) -> Result<()>) -> Result<()> {
        if !self.out.is_empty() {
            emit(Bytes::from(std::mem::take(&mut self.out)))?;
        }
        Ok(())
    }

    /// Takes the next bytes of the base and hands what is complete of the
    /// file to `emit`. Runs of whole pages that no record changes go out as
    /// they came, without a copy.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] for a damaged delta; `emit`'s errors.
    pub(crate) fn push(
        &mut self,
        mut data: Bytes,
        emit: &mut dyn FnMut(Bytes) -> Result<()>,
    ) -> Result<()> {
        let block = self.block as u64;
        while !data.is_empty() {
            if self.page.is_empty() && data.len() >= self.block {
                let next = self.next_record()?.map_or(u64::MAX, |(b, _)| b);
                let end = next.min(self.size / block);
                let run = (data.len() / self.block) as u64;
                let n = run.min(end.saturating_sub(self.blkno));
                if n > 0 {
                    self.flush(emit)?;
                    emit(data.split_to(usize::try_from(n * block).unwrap_or(usize::MAX)))?;
                    self.blkno += n;
                    continue;
                }
            }
            let n = (self.block - self.page.len()).min(data.len());
            self.page.extend_from_slice(&data.split_to(n));
            if self.page.len() == self.block {
                self.page_done()?;
                if self.out.len() >= 1 << 20 {
                    self.flush(emit)?;
                }
            }
        }
        Ok(())
    }

    /// The base has ended: hands the rest of the file to `emit` (pages
    /// past the base's end, from zero pages) and checks that the delta
    /// was used up.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the base ends inside a page or the delta
    /// holds more than its file; `emit`'s errors.
    pub(crate) fn finish(&mut self, emit: &mut dyn FnMut(Bytes) -> Result<()>) -> Result<()> {
        if !self.page.is_empty() {
            return Err(self.damaged("its base ends inside a page"));
        }
        while self.blkno * (self.block as u64) < self.size {
            self.page.resize(self.block, 0);
            self.page_done()?;
            if self.out.len() >= 1 << 20 {
                self.flush(emit)?;
            }
        }
        self.flush(emit)?;
        if self.next_record()?.is_some() {
            return Err(self.damaged("a record was not applied"));
        }
        Ok(())
    }
}
