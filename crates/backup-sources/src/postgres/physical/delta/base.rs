//! The pages of a delta's base: held in memory (tests), or read back from
//! the repository blob by blob, the next blobs fetched ahead while the
//! pages are asked for in order ([`RepoBase`]).

use backup_core::pack::{BlobType, IdCheck};
use backup_core::repo::IndexedRepository;
use backup_core::tree::Node;
use backup_core::{Error, FileKind, Result};

/// Blobs of a base read ahead while its pages are read in order.
const BASE_AHEAD: usize = 2;

/// The pages of a delta's base, asked for in ascending block order.
pub(crate) trait BasePages: Send {
    /// Fills `out` with the base's page at `blkno` (`out.len()` bytes at
    /// `blkno × out.len()`).
    ///
    /// # Errors
    ///
    /// The base cannot be read, or holds no such page.
    fn read_page(&mut self, blkno: u64, out: &mut [u8]) -> std::io::Result<()>;
}

/// A base held in memory (tests).
impl BasePages for Vec<u8> {
    fn read_page(&mut self, blkno: u64, out: &mut [u8]) -> std::io::Result<()> {
        let at = usize::try_from(blkno).unwrap_or(usize::MAX) * out.len();
        let page = self.get(at..at + out.len()).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::UnexpectedEof, "past the base's end")
        })?;
        out.copy_from_slice(page);
        Ok(())
    }
}

/// A base read from the repository: the content of a file entry of an
/// earlier snapshot, blob by blob as its pages are asked for (the next
/// blobs fetched ahead while the pages come in order). Blobs are decrypted
/// and decompressed but, in an encrypted repository, not hashed again:
/// AES-GCM authenticates them, and a restore checks every file the delta
/// completes against the backup manifest.
pub(crate) struct RepoBase {
    repo: IndexedRepository,
    rt: tokio::runtime::Handle,
    /// Blob id and where its bytes start in the file.
    blobs: Vec<(backup_core::Id, u64)>,
    size: u64,
    current: Option<(usize, Vec<u8>)>,
    ahead: std::collections::VecDeque<(usize, tokio::task::JoinHandle<Result<Vec<u8>>>)>,
    last: Option<usize>,
}

impl RepoBase {
    /// The base `node` (a file entry) of `repo`; blocks on `rt` (call from
    /// a blocking thread).
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when its blobs are not indexed or do not add up
    /// to its size; storage errors.
    pub(crate) fn open(
        repo: IndexedRepository,
        rt: tokio::runtime::Handle,
        node: &Node,
    ) -> Result<Self> {
        let ids = rt.block_on(repo.content_ids(node))?;
        let mut blobs = Vec::with_capacity(ids.len());
        let mut at = 0u64;
        for id in ids {
            let loc = repo.index().get(BlobType::Data, &id).ok_or_else(|| {
                Error::corrupt(
                    FileKind::Index,
                    format!("blob {}", id.short()),
                    "the blob is referenced but not in the index",
                )
            })?;
            blobs.push((id, at));
            at += u64::from(loc.entry.raw_length);
        }
        if at != node.size {
            return Err(Error::corrupt(
                FileKind::Snapshot,
                node.name.to_string(),
                format!("its blobs hold {at} bytes, the entry says {}", node.size),
            ));
        }
        Ok(RepoBase {
            repo,
            rt,
            blobs,
            size: at,
            current: None,
            ahead: std::collections::VecDeque::new(),
            last: None,
        })
    }

    fn fetch(&self, i: usize) -> tokio::task::JoinHandle<Result<Vec<u8>>> {
        let repo = self.repo.clone();
        let id = self.blobs[i].0;
        self.rt.spawn(async move {
            repo.read_blob_with(BlobType::Data, &id, IdCheck::WhenUnauthenticated)
                .await
        })
    }

    /// The bytes of blob `i`, fetched ahead when the reads go in order.
    fn blob(&mut self, i: usize) -> std::io::Result<&[u8]> {
        if self.current.as_ref().is_none_or(|(c, _)| *c != i) {
            while self.ahead.front().is_some_and(|(j, _)| *j < i) {
                if let Some((_, h)) = self.ahead.pop_front() {
                    h.abort();
                }
            }
            let handle = match self.ahead.front() {
                Some((j, _)) if *j == i => self.ahead.pop_front().map(|(_, h)| h),
                _ => None,
            };
            let handle = handle.unwrap_or_else(|| self.fetch(i));
            let data = self
                .rt
                .block_on(handle)
                .map_err(std::io::Error::other)?
                .map_err(std::io::Error::other)?;
            let want = self.blobs.get(i + 1).map_or(self.size, |b| b.1) - self.blobs[i].1;
            if data.len() as u64 != want {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "a blob of the base is not the length its index entry says",
                ));
            }
            // In order (this blob follows the last one read): fetch ahead.
            if self.last.is_some_and(|l| l + 1 == i) {
                let mut next = self.ahead.back().map_or(i + 1, |(j, _)| j + 1);
                while self.ahead.len() < BASE_AHEAD && next < self.blobs.len() {
                    let h = self.fetch(next);
                    self.ahead.push_back((next, h));
                    next += 1;
                }
            }
            self.last = Some(i);
            self.current = Some((i, data));
        }
        Ok(self.current.as_ref().map_or(&[][..], |(_, d)| d.as_slice()))
    }
}

impl BasePages for RepoBase {
    fn read_page(&mut self, blkno: u64, out: &mut [u8]) -> std::io::Result<()> {
        let start = blkno * out.len() as u64;
        if start + out.len() as u64 > self.size {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "past the base's end",
            ));
        }
        let mut done = 0;
        while done < out.len() {
            let at = start + done as u64;
            let i = self.blobs.partition_point(|b| b.1 <= at) - 1;
            let blob_start = self.blobs[i].1;
            let data = self.blob(i)?;
            let from = usize::try_from(at - blob_start).unwrap_or(usize::MAX);
            let n = (out.len() - done).min(data.len().saturating_sub(from));
            if n == 0 {
                return Err(std::io::Error::new(
                    std::io::ErrorKind::InvalidData,
                    "the base's blobs end early",
                ));
            }
            out[done..done + n].copy_from_slice(&data[from..from + n]);
            done += n;
        }
        Ok(())
    }
}

impl Drop for RepoBase {
    fn drop(&mut self) {
        for (_, h) in self.ahead.drain(..) {
            h.abort();
        }
    }
}
