//! Page deltas: the pages of a relation file that changed since a base
//! copy of it in an earlier snapshot, so that a second local base backup
//! stores what changed rather than every file that changed.
//!
//! A relation file that the previous base backup of the same cluster and
//! timeline holds (its *base*: that snapshot's entry, itself possibly a
//! base with a delta) is read whole, as any file is (its CRC-32C for the
//! backup manifest, its page checksums). Its pages whose LSN is at or
//! after the base's start position, new pages and pages past the base's
//! end are compared with the base's copy of the page, read back from the
//! repository ([`RepoBase`]), and the byte ranges that differ are stored
//! in a *delta* entry beside the base's entry. The base entry keeps the
//! parent's content and metadata, so nothing of the base is stored again.
//!
//! Why the page LSN is enough: every change to a page of a relation's main
//! fork is WAL-logged and sets the page's LSN, and the base was copied
//! between its own start and stop. A page whose LSN is older than the
//! base's start was not changed since the base's start checkpoint, so the
//! base holds it as it is now (a page changed during the base's copy has
//! a newer LSN and is in the delta); a change that WAL does not log (hint
//! bits without `wal_log_hints` or data checksums) is one PostgreSQL does
//! not need. The rest of the argument is the one every base backup rests
//! on: replay from the new backup's start rewrites each page changed
//! during the copy from its full-page image. Deltas are only taken where
//! that holds: same system identifier and timeline as the parent, the new
//! backup starting after the parent stopped, the same inode as the base
//! (a file replaced under the same name is read whole), main forks of
//! relations in database directories only (free space maps are not
//! WAL-logged), whole pages.
//!
//! Deltas are cumulative (each is against the base, never against another
//! delta), so a restore writes the base and applies one delta; once a
//! delta's content exceeds a quarter of its file's size, the backup reads
//! and stores the file whole again, which becomes the next base. Files
//! under [`MIN_PAGES`] are always read whole.
//!
//! Stored form (`docs/REPOSITORY_FORMAT.md`, "Physical PostgreSQL
//! snapshots"): the delta entry is named like the file with
//! [`DELTA_SUFFIX`] appended (a name PostgreSQL never gives a file), its
//! content is [`MAGIC`], the header fields, then per changed page its
//! block number and the byte ranges where it differs from the base's page,
//! in ascending block order (deltas of whole pages, [`MAGIC_PAGES`], are
//! still restored); `page_deltas.json` at the snapshot's top lists each
//! delta with its base position and the file's final size and metadata.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::Read;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use backup_core::pack::{BlobType, IdCheck};
use backup_core::reader::Dir;
use backup_core::repo::IndexedRepository;
use backup_core::tree::{FsName, Node, NodeKind};
use backup_core::{Error, FileKind, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::checksum::page_header;
use super::lsn::Lsn;
use super::manifest::ManifestFile;
use super::meta::{DATA_DIR, MANIFEST_FILE, TABLESPACES_DIR};

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
/// Equal bytes that end a changed range (a range header costs 4 bytes).
const RANGE_GAP: usize = 8;
/// Blobs of a base read ahead while its pages are read in order.
const BASE_AHEAD: usize = 2;
/// Magic, block size (u32), reserved (u32), base start LSN, base size,
/// file size (u64 each), little-endian.
const HEADER_LEN: usize = 40;
/// Pages a delta reader takes from the file at once.
const PAGES_PER_READ: usize = 512;
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

/// Appends the record of page `blkno` to `out`: the block number, the
/// number of ranges, then each range where `new` differs from `old` (its
/// offset and length, u16 each, and its bytes of `new`). Ranges end at
/// [`RANGE_GAP`] equal bytes. Returns `false`, appending nothing, when the
/// pages are equal.
fn push_record(out: &mut Vec<u8>, blkno: u32, new: &[u8], old: &[u8]) -> bool {
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

/// Where a snapshot path of a physical snapshot is restored: the data
/// directory, or a tablespace's place.
#[derive(Debug, Clone)]
pub(crate) struct Places {
    pub(crate) data_dir: PathBuf,
    /// Tablespace OID to its place.
    pub(crate) roots: HashMap<String, PathBuf>,
}

impl Places {
    /// Where a snapshot path goes, and its manifest path; `None` for the
    /// snapshot's own directories (the data directory, `tablespaces`, a
    /// tablespace's place), which exist already.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] for a path with no place in a data directory.
    pub(crate) fn place(&self, path: &Path) -> Result<Option<(PathBuf, Option<Vec<u8>>)>> {
        use std::os::unix::ffi::OsStrExt;
        let parts: Vec<&std::ffi::OsStr> = path.iter().collect();
        let rest = |from: usize| -> PathBuf { parts[from..].iter().collect() };
        let bytes = |p: &Path| p.as_os_str().as_bytes().to_vec();
        match parts.first().map(|s| s.as_bytes()) {
            Some(b) if b == DATA_DIR.as_bytes() => {
                if parts.len() == 1 {
                    return Ok(None);
                }
                let r = rest(1);
                Ok(Some((self.data_dir.join(&r), Some(bytes(&r)))))
            }
            Some(b) if b == TABLESPACES_DIR.as_bytes() => {
                if parts.len() <= 2 {
                    return Ok(None);
                }
                let oid = parts[1].to_string_lossy().into_owned();
                let root = self.roots.get(&oid).ok_or_else(|| {
                    Error::corrupt(
                        FileKind::Snapshot,
                        "tree",
                        format!("tablespace {oid} is in the tree but not in the metadata"),
                    )
                })?;
                let r = rest(2);
                let mut key = format!("pg_tblspc/{oid}/").into_bytes();
                key.extend_from_slice(&bytes(&r));
                Ok(Some((root.join(&r), Some(key))))
            }
            Some(b) if b == MANIFEST_FILE.as_bytes() && parts.len() == 1 => {
                Ok(Some((self.data_dir.join(MANIFEST_FILE), None)))
            }
            _ => Err(Error::corrupt(
                FileKind::Snapshot,
                "tree",
                format!("`{}` has no place in a data directory", path.display()),
            )),
        }
    }
}

/// Compares a restored file's size and CRC-32C with its manifest entry.
///
/// # Errors
///
/// [`Error::Corrupt`] naming the file when they differ.
pub(crate) fn check_restored_file(
    key: &[u8],
    entry: &ManifestFile,
    size: u64,
    crc: u32,
) -> Result<()> {
    let mismatch = |what: String| {
        Error::corrupt(
            FileKind::Snapshot,
            String::from_utf8_lossy(key),
            format!("the restored file does not match the backup manifest: {what}"),
        )
    };
    if entry.size != size {
        return Err(mismatch(format!(
            "{size} bytes restored, {} listed",
            entry.size
        )));
    }
    if let Some((alg, sum)) = &entry.checksum {
        let got = super::manifest::crc32c_bytes(crc);
        if alg == "CRC32C" && *sum != got {
            return Err(mismatch(format!(
                "CRC-32C {} restored, {} listed",
                hex::encode(got),
                hex::encode(sum)
            )));
        }
    }
    Ok(())
}

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

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;
    use std::sync::{Arc, Mutex};

    /// A page of `block` bytes with `lsn` in its header, initialised
    /// (`pd_upper` set) unless `lsn` is zero, filled with `fill`.
    fn page(lsn: u64, fill: u8) -> Vec<u8> {
        let mut p = vec![fill; 8192];
        p[..4].copy_from_slice(&((lsn >> 32) as u32).to_le_bytes());
        p[4..8].copy_from_slice(&(lsn as u32).to_le_bytes());
        let upper: u16 = if lsn == 0 && fill == 0 { 0 } else { 8000 };
        p[14..16].copy_from_slice(&upper.to_le_bytes());
        p
    }

    /// The records of a delta: (block number, its bytes after the block
    /// number).
    fn records(delta: &[u8]) -> Vec<(u32, &[u8])> {
        let mut out = Vec::new();
        let mut at = HEADER_LEN;
        while at < delta.len() {
            let r = &delta[at..];
            let count = usize::from(u16::from_le_bytes([r[4], r[5]]));
            let mut len = 6;
            for _ in 0..count {
                len += 4 + usize::from(u16::from_le_bytes([r[len + 2], r[len + 3]]));
            }
            out.push((u32::from_le_bytes([r[0], r[1], r[2], r[3]]), &r[4..len]));
            at += len;
        }
        out
    }

    /// `page` with a record's ranges written over it.
    fn patched(mut page: Vec<u8>, record: &[u8]) -> Vec<u8> {
        let count = usize::from(u16::from_le_bytes([record[0], record[1]]));
        let mut r = 2;
        for _ in 0..count {
            let off = usize::from(u16::from_le_bytes([record[r], record[r + 1]]));
            let n = usize::from(u16::from_le_bytes([record[r + 2], record[r + 3]]));
            page[off..off + n].copy_from_slice(&record[r + 4..r + 4 + n]);
            r += 4 + n;
        }
        page
    }

    #[test]
    fn records_hold_the_ranges_that_differ() {
        let old = page(0x100, 1);
        let mut new = old.clone();
        assert!(!push_record(&mut Vec::new(), 0, &new, &old));
        // Two changes 4 bytes apart make one range; one far off another.
        new[10] = 0xAA;
        new[15] = 0xBB;
        new[4000] = 0xCC;
        new[8191] = 0xDD;
        let mut out = Vec::new();
        assert!(push_record(&mut out, 7, &new, &old));
        let rec = records(&[&[0u8; HEADER_LEN][..], &out].concat())
            .into_iter()
            .map(|(b, r)| (b, r.to_vec()))
            .collect::<Vec<_>>();
        assert_eq!(rec.len(), 1);
        assert_eq!(rec[0].0, 7);
        assert_eq!(u16::from_le_bytes([rec[0].1[0], rec[0].1[1]]), 3);
        assert_eq!(out.len(), 4 + 2 + (4 + 6) + (4 + 1) + (4 + 1));
        assert_eq!(patched(old.clone(), &rec[0].1), new);
        // Against a zero page (past the base's end): the non-zero bytes.
        let mut out = Vec::new();
        assert!(push_record(&mut out, 9, &old, &vec![0u8; 8192]));
        assert!(out.len() < 8192 + 6 + 4 * 8, "{}", out.len());
    }

    #[test]
    fn deltas_hold_changed_new_and_appended_pages_and_apply_back() {
        let base: Vec<u8> = [page(0x100, 1), page(0x100, 2), page(0x100, 3)].concat();
        // Block 1 changed after the base's start (its LSN and a tuple),
        // block 2 is untouched, block 3 is appended, block 4 is a new zero
        // page (no record: the file's size makes it).
        let mut changed = page(0x900, 2);
        changed[5000..5100].fill(9);
        let now: Vec<u8> = [
            page(0x100, 1),
            changed,
            page(0x100, 3),
            page(0x950, 7),
            page(0, 0),
        ]
        .concat();
        let ended = Arc::new(Mutex::new(None));
        let e2 = ended.clone();
        let mut r = DeltaReader::new(
            std::io::Cursor::new(now.clone()),
            None,
            Box::new(base.clone()),
            8192,
            Lsn(0x800),
            base.len() as u64,
            now.len() as u64,
            Box::new(move |n, b| *e2.lock().unwrap() = Some((n, b))),
        );
        let mut delta = Vec::new();
        r.read_to_end(&mut delta).unwrap();
        assert_eq!(*ended.lock().unwrap(), Some((2, delta.len() as u64)));
        let recs = records(&delta);
        assert_eq!(recs.iter().map(|r| r.0).collect::<Vec<_>>(), [1, 3]);
        // Block 1: its LSN's changed bytes and the 100 changed ones.
        assert!(recs[0].1.len() < 150, "{}", recs[0].1.len());
        assert_eq!(&delta[..8], MAGIC);

        let entry = DeltaEntry {
            base_lsn: "0/800".into(),
            base_size: base.len() as u64,
            size: now.len() as u64,
            mode: Some(0o600),
            mtime_ns: Some(1_700_000_000_000_000_000),
            ctime_ns: None,
            inode: None,
            pages: 2,
            bytes: Some(delta.len() as u64),
        };
        // The file as a restore writes it: the base, in pieces of 3000
        // bytes, patched by the delta, read in pieces of `piece` bytes.
        let apply = |base: &[u8], entry: &DeltaEntry, delta: &[u8], piece: usize| {
            let mut pieces: Vec<Bytes> = delta
                .chunks(piece)
                .map(Bytes::copy_from_slice)
                .rev()
                .collect();
            let source: DeltaSource = Box::new(move || Ok(pieces.pop()));
            let mut p = Patcher::new(b"base/5/16384".to_vec(), entry, 8192, source);
            let mut out = Vec::new();
            let mut emit = |b: Bytes| {
                out.extend_from_slice(&b);
                Ok(())
            };
            // Pieces of odd sizes, and pieces of many whole pages.
            for part in base[..8000].chunks(3000) {
                p.push(Bytes::copy_from_slice(part), &mut emit)?;
            }
            for part in base[8000..].chunks(2 * 8192 + 192) {
                p.push(Bytes::copy_from_slice(part), &mut emit)?;
            }
            p.finish(&mut emit)?;
            Ok::<_, Error>(out)
        };
        // Odd piece sizes: records and their ranges cross the pieces.
        for piece in [7, 5000, delta.len()] {
            assert!(apply(&base, &entry, &delta, piece).unwrap() == now);
        }

        // A delta of whole pages (what earlier versions wrote) applies too.
        let mut pages = Vec::new();
        pages.extend_from_slice(MAGIC_PAGES);
        pages.extend_from_slice(&delta[8..HEADER_LEN]);
        for b in [1u32, 3, 4] {
            pages.extend_from_slice(&b.to_le_bytes());
            pages.extend_from_slice(&now[b as usize * 8192..(b as usize + 1) * 8192]);
        }
        assert!(apply(&base, &entry, &pages, 5000).unwrap() == now);

        // A file that shrank: the base's pages past its end are dropped.
        let short = DeltaEntry {
            size: 2 * 8192,
            ..entry.clone()
        };
        let mut cut = pages[..HEADER_LEN].to_vec();
        cut[32..40].copy_from_slice(&(2u64 * 8192).to_le_bytes());
        cut.extend_from_slice(&pages[HEADER_LEN..HEADER_LEN + 4 + 8192]);
        assert!(apply(&base, &short, &cut, 5000).unwrap() == now[..2 * 8192]);

        // A flipped byte in a range changes the file (the restore's
        // manifest check then names it).
        let mut bad = delta.clone();
        let n = bad.len();
        bad[n - 100] ^= 1;
        assert!(apply(&base, &entry, &bad, 5000).unwrap() != now);

        // Out-of-order blocks, overlapping ranges, a cut record, another
        // file's header and a base cut inside a page are refused.
        let (first, second) = (recs[0].1.len() + 4, recs[1].1.len() + 4);
        let mut swapped = delta[..HEADER_LEN].to_vec();
        swapped.extend_from_slice(&delta[HEADER_LEN + first..HEADER_LEN + first + second]);
        swapped.extend_from_slice(&delta[HEADER_LEN..HEADER_LEN + first]);
        let e = apply(&base, &entry, &swapped, 5000)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("out of order") && e.contains("base/5/16384"),
            "{e}"
        );
        let mut overlapping = delta[..HEADER_LEN].to_vec();
        overlapping.extend_from_slice(&1u32.to_le_bytes());
        overlapping.extend_from_slice(&2u16.to_le_bytes());
        for off in [100u16, 101] {
            overlapping.extend_from_slice(&off.to_le_bytes());
            overlapping.extend_from_slice(&2u16.to_le_bytes());
            overlapping.extend_from_slice(&[1, 2]);
        }
        let e = apply(&base, &entry, &overlapping, 5000)
            .unwrap_err()
            .to_string();
        assert!(e.contains("overlaps"), "{e}");
        let e = apply(&base, &entry, &delta[..delta.len() - 10], 5000)
            .unwrap_err()
            .to_string();
        assert!(e.contains("inside a record"), "{e}");
        let e = apply(&base, &short, &delta, 5000).unwrap_err().to_string();
        assert!(e.contains("does not match the index"), "{e}");
        let e = apply(&base[..8000], &entry, &delta, 5000)
            .unwrap_err()
            .to_string();
        assert!(e.contains("inside a page"), "{e}");
    }

    #[test]
    fn a_page_torn_while_read_goes_into_the_delta() {
        let dir = tempfile::tempdir().unwrap();
        // Read: block 1 with its old header and new bytes after it (a write
        // under way); on disk once the read is done: the new page.
        let mut torn = page(0x900, 9);
        torn[..8].copy_from_slice(&page(0x100, 2)[..8]);
        let base: Vec<u8> = [page(0x100, 1), page(0x100, 2), page(0x100, 3)].concat();
        let read: Vec<u8> = [page(0x100, 1), torn.clone(), page(0x100, 3)].concat();
        let on_disk: Vec<u8> = [page(0x100, 1), page(0x900, 9), page(0x100, 3)].concat();
        let path = dir.path().join("16384");
        std::fs::write(&path, &on_disk).unwrap();
        let mut r = DeltaReader::new(
            std::io::Cursor::new(read),
            Some(File::open(&path).unwrap()),
            Box::new(base),
            8192,
            Lsn(0x800),
            on_disk.len() as u64,
            on_disk.len() as u64,
            Box::new(|_, _| {}),
        );
        let mut delta = Vec::new();
        r.read_to_end(&mut delta).unwrap();
        let recs = records(&delta);
        assert_eq!(recs.len(), 1);
        assert_eq!(recs[0].0, 1);
        // The bytes as read (what the manifest's checksum covers).
        assert_eq!(patched(page(0x100, 2), recs[0].1), torn);
    }

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
