//! Content-defined chunking of a byte stream.

use std::borrow::Cow;
use std::io::Read;

use fastcdc::v2020::{cut_gear, get_gear_with_seed, select_masks, Normalization};

use crate::config::ChunkerParams;

/// How a content is cut into chunks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Chunking {
    /// Content-defined boundaries (`FastCDC`): an insertion moves only the
    /// chunks around it. For files whose bytes shift.
    #[default]
    ContentDefined,
    /// Pieces of the repository's average chunk size from the start of the
    /// content: for files changed in place, never shifted (PostgreSQL's
    /// relation files and WAL), where the same cut deduplicates as well
    /// and costs no rolling hash.
    Fixed,
}

/// Splits a reader into content-defined chunks (`FastCDC` 2020, normalisation
/// level 1, gear table seeded per repository), or into fixed-size pieces
/// ([`Chunking::Fixed`]).
///
/// Memory: one buffer of twice the maximum chunk size (the input's size
/// when a smaller size hint is given); fixed pieces are read straight into
/// the chunk they become.
pub struct Chunker<R> {
    reader: R,
    /// Read data is `buf[start..end]`; the rest is spare room.
    buf: Vec<u8>,
    start: usize,
    end: usize,
    eof: bool,
    params: ChunkerParams,
    masks: (u64, u64),
    gear: Cow<'static, [u64]>,
    gear_ls: Cow<'static, [u64]>,
    /// Total bytes read from the reader so far.
    pub bytes_read: u64,
    size_hint: Option<u64>,
    fixed: bool,
}

impl<R: Read> Chunker<R> {
    /// A chunker over `reader`.
    pub fn new(reader: R, params: ChunkerParams, seed: u64) -> Self {
        let (gear, gear_ls) = get_gear_with_seed(seed);
        Chunker {
            reader,
            buf: Vec::new(),
            start: 0,
            end: 0,
            eof: false,
            params,
            masks: select_masks(params.avg_size as usize, Normalization::Level1),
            gear,
            gear_ls,
            bytes_read: 0,
            size_hint: None,
            fixed: false,
        }
    }

    /// A chunker over `reader` that cuts as `chunking` says; fixed pieces
    /// are `params.avg_size` long (the last one shorter).
    pub fn with_chunking(reader: R, params: ChunkerParams, seed: u64, chunking: Chunking) -> Self {
        let mut c = Chunker::new(reader, params, seed);
        c.fixed = chunking == Chunking::Fixed;
        c
    }

    /// Tells the chunker the expected input size, so that small inputs
    /// allocate small buffers.
    #[must_use]
    pub fn with_size_hint(mut self, size: u64) -> Self {
        self.size_hint = Some(size);
        self
    }

    fn fill(&mut self) -> std::io::Result<()> {
        let max = self.params.max_size as usize;
        let target = 2 * max;
        if self.buf.is_empty() {
            // Zeroed once (fresh pages from the allocator); reads go straight
            // into it afterwards. Small inputs only allocate what they hold
            // (one more byte sees the end without growing).
            let size = self
                .size_hint
                .map_or(target, |h| (h as usize).min(target) + 1);
            self.buf = vec![0; size];
        }
        // Move the unconsumed tail to the front, then read up to two
        // maximum chunks.
        if self.start > 0 {
            self.buf.copy_within(self.start..self.end, 0);
            self.end -= self.start;
            self.start = 0;
        }
        while !self.eof && self.end < target {
            if self.end == self.buf.len() {
                if self.end >= max {
                    break;
                }
                // A file that grew past its size hint.
                self.buf.resize(target, 0);
            }
            match self.reader.read(&mut self.buf[self.end..]) {
                Ok(0) => self.eof = true,
                Ok(n) => {
                    self.end += n;
                    self.bytes_read += n as u64;
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// The next chunk, or `None` at the end of the stream. An empty stream
    /// yields no chunk.
    ///
    /// # Errors
    ///
    /// Read errors of the underlying reader.
    pub fn next_chunk(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.fixed {
            return self.next_fixed();
        }
        if !self.eof && self.end - self.start < self.params.max_size as usize {
            self.fill()?;
        }
        let avail = &self.buf[self.start..self.end];
        if avail.is_empty() {
            return Ok(None);
        }
        let p = self.params;
        let (mask_s, mask_l) = self.masks;
        let len = if avail.len() <= p.min_size as usize {
            avail.len()
        } else {
            cut_gear(
                avail,
                p.min_size as usize,
                p.avg_size as usize,
                p.max_size as usize,
                mask_s,
                mask_l,
                mask_s << 1,
                mask_l << 1,
                &self.gear,
                &self.gear_ls,
            )
            .1
        };
        let chunk = avail[..len].to_vec();
        self.start += len;
        Ok(Some(chunk))
    }

    /// The next fixed-size piece, read into its own buffer.
    fn next_fixed(&mut self) -> std::io::Result<Option<Vec<u8>>> {
        if self.eof {
            return Ok(None);
        }
        let size = self.params.avg_size as usize;
        // What the size hint says is left, and one byte more to see the end
        // without a second allocation.
        let left = self.size_hint.map_or(size, |h| {
            (h.saturating_sub(self.bytes_read) as usize).saturating_add(1)
        });
        let mut chunk = Vec::with_capacity(size.min(left));
        let got = (&mut self.reader)
            .take(size as u64)
            .read_to_end(&mut chunk)?;
        self.bytes_read += got as u64;
        if got < size {
            self.eof = true;
        }
        Ok((got > 0).then_some(chunk))
    }
}

#[cfg(test)]
#[allow(clippy::many_single_char_names)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u64) -> Vec<u8> {
        let mut x = seed;
        (0..n)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                x as u8
            })
            .collect()
    }

    fn chunks(d: &[u8], p: ChunkerParams, seed: u64) -> Vec<Vec<u8>> {
        let mut c = Chunker::new(d, p, seed);
        let mut out = Vec::new();
        while let Some(ch) = c.next_chunk().unwrap() {
            out.push(ch);
        }
        out
    }

    #[test]
    fn chunks_reassemble_and_respect_bounds() {
        let p = ChunkerParams::with_average(64 * 1024).unwrap();
        let d = data(3_000_000, 1);
        let cs = chunks(&d, p, 42);
        assert_eq!(cs.concat(), d);
        for c in &cs[..cs.len() - 1] {
            assert!(c.len() >= p.min_size as usize && c.len() <= p.max_size as usize);
        }
        assert!(chunks(&[], p, 1).is_empty());
    }

    #[test]
    fn insertion_changes_few_chunks() {
        let p = ChunkerParams::with_average(64 * 1024).unwrap();
        let d = data(4_000_000, 7);
        let mut e = d.clone();
        e.insert(2_000_000, b'!');
        let a: std::collections::HashSet<_> = chunks(&d, p, 9).into_iter().collect();
        let b = chunks(&e, p, 9);
        let new = b.iter().filter(|c| !a.contains(*c)).count();
        assert!(new <= 3, "{new} new chunks");
    }

    #[test]
    fn fixed_pieces_are_the_average_size() {
        let p = ChunkerParams::with_average(64 * 1024).unwrap();
        for (len, hint) in [
            (3_000_000, None),
            (3_000_000, Some(3_000_000)),
            (128 * 1024, Some(10)),
            (0, None),
        ] {
            let d = data(len, 5);
            let mut c = Chunker::with_chunking(&d[..], p, 1, Chunking::Fixed);
            if let Some(h) = hint {
                c = c.with_size_hint(h);
            }
            let mut out = Vec::new();
            while let Some(ch) = c.next_chunk().unwrap() {
                out.push(ch);
            }
            assert_eq!(out.concat(), d);
            assert_eq!(c.bytes_read, len as u64);
            assert_eq!(out.len(), len.div_ceil(64 * 1024));
            for ch in &out[..out.len().saturating_sub(1)] {
                assert_eq!(ch.len(), 64 * 1024);
            }
        }
    }

    #[test]
    fn seed_changes_boundaries() {
        let p = ChunkerParams::with_average(64 * 1024).unwrap();
        let d = data(2_000_000, 3);
        let a: Vec<usize> = chunks(&d, p, 1).iter().map(Vec::len).collect();
        let b: Vec<usize> = chunks(&d, p, 2).iter().map(Vec::len).collect();
        assert_ne!(a, b);
    }
}
