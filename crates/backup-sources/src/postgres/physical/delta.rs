//! Page deltas: the pages of a relation file that changed since a base
//! copy of it in an earlier snapshot, so that a second local base backup
//! stores what changed rather than every file that changed.
//!
//! A relation file that the previous base backup of the same cluster and
//! timeline holds (its *base*: that snapshot's entry, itself possibly a
//! base with a delta) is read whole, as any file is (its CRC-32C for the
//! backup manifest, its page checksums), but only its pages whose LSN is
//! at or after the base's start position, new pages and pages past the
//! base's end are stored, in a *delta* entry beside the base's entry. The
//! base entry keeps the parent's content and metadata, so nothing of the
//! base is read or stored again.
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
//! delta holds more than half of its file's pages (or a sample of page
//! headers says it would), the backup reads and stores the file whole
//! again, which becomes the next base. Files under [`MIN_PAGES`] are
//! always read whole.
//!
//! Stored form (`docs/REPOSITORY_FORMAT.md`, "Physical PostgreSQL
//! snapshots"): the delta entry is named like the file with
//! [`DELTA_SUFFIX`] appended (a name PostgreSQL never gives a file), its
//! content is [`MAGIC`], the header fields, then `(block number, page)`
//! records in ascending block order; `page_deltas.json` at the snapshot's
//! top lists each delta with its base position and the file's final size
//! and metadata.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::{File, OpenOptions};
use std::io::Read;
use std::os::unix::fs::{FileExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use backup_core::reader::Dir;
use backup_core::restorer::TreeWriter;
use backup_core::tree::{FsName, Node, NodeKind};
use backup_core::{Error, FileKind, Result};
use bytes::Bytes;
use serde::{Deserialize, Serialize};

use super::checksum::page_header;
use super::manifest::ManifestFile;
use super::{Lsn, DATA_DIR, TABLESPACES_DIR};

/// Appended to a relation file's name for its delta entry. PostgreSQL
/// names the files of a database directory with digits, `.`, `_` and fork
/// names only, so no file there has a name ending like this.
pub(crate) const DELTA_SUFFIX: &[u8] = b"~page-delta";
/// The index of a snapshot's deltas, at the top of its tree.
pub(crate) const DELTA_INDEX: &str = "page_deltas.json";
/// The first bytes of a delta's content.
pub(crate) const MAGIC: &[u8; 8] = b"BKPGPD01";
/// Magic, block size (u32), reserved (u32), base start LSN, base size,
/// file size (u64 each), little-endian.
const HEADER_LEN: usize = 40;
/// Pages a delta reader takes from the file at once.
const PAGES_PER_READ: usize = 512;
/// Files with fewer pages are read whole (a delta saves little there and
/// costs an entry and a second restore pass).
pub(crate) const MIN_PAGES: u64 = 128;
/// Pages whose headers [`mostly_unchanged`] reads.
const SAMPLES: u64 = 32;

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
}

impl DeltaEntry {
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

/// Whether at most half of a sample of the file's pages would go into a
/// delta against a base of `base_size` bytes from `base_lsn` (evenly
/// spread page headers, read directly); `false` when the file cannot be
/// read (it is then read whole, which reports the error).
pub(crate) fn mostly_unchanged(
    path: &Path,
    block: u32,
    size: u64,
    base_lsn: Lsn,
    base_size: u64,
) -> bool {
    let Ok(f) = File::open(path) else {
        return false;
    };
    let block = u64::from(block);
    let pages = size / block;
    let mut changed = 0;
    let mut header = [0u8; 16];
    for i in 0..SAMPLES {
        let blkno = (i * pages + pages / 2) / SAMPLES;
        if f.read_exact_at(&mut header, blkno * block).is_err() {
            return false;
        }
        let h = page_header(&header);
        if blkno * block >= base_size || h.is_new || h.lsn >= base_lsn.0 {
            changed += 1;
        }
    }
    changed * 2 <= SAMPLES
}

/// The delta entry's name for a file's.
pub(crate) fn delta_name(file: &FsName) -> FsName {
    let mut n = file.0.clone();
    n.extend_from_slice(DELTA_SUFFIX);
    FsName(n)
}

/// Reads a whole relation file from `inner` and yields its delta: the
/// header, then every page at or after `base_lsn`, new, or past the base's
/// end. `on_end` gets the number of pages when the file is read to its
/// end (after `inner` returned its end, which records the file's
/// checksum).
pub(crate) struct DeltaReader<R> {
    inner: R,
    /// The file again, for a second look at the headers of pages left out.
    recheck: Option<File>,
    block: usize,
    base_lsn: u64,
    base_blocks: u64,
    next_block: u64,
    out: Vec<u8>,
    at: usize,
    scratch: Vec<u8>,
    pages: u64,
    done: bool,
    on_end: Option<Box<dyn FnOnce(u64) + Send>>,
}

impl<R: Read> DeltaReader<R> {
    /// A reader of the delta of the file `inner` reads (`size` bytes, whole
    /// pages of `block` bytes) against a base of `base_size` bytes copied
    /// from `base_lsn` on.
    pub(crate) fn new(
        inner: R,
        recheck: Option<File>,
        block: u32,
        base_lsn: Lsn,
        base_size: u64,
        size: u64,
        on_end: Box<dyn FnOnce(u64) + Send>,
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
            block: block as usize,
            base_lsn: base_lsn.0,
            base_blocks: base_size / u64::from(block),
            next_block: 0,
            out,
            at: 0,
            scratch: vec![0u8; block as usize * PAGES_PER_READ],
            pages: 0,
            done: false,
            on_end: Some(on_end),
        }
    }

    /// Reads the next pages of the file and keeps those the delta holds.
    fn fill(&mut self) -> std::io::Result<()> {
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
            let n = u32::try_from(first + i as u64).map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::InvalidData, "too many pages")
            })?;
            self.out.extend_from_slice(&n.to_le_bytes());
            self.out.extend_from_slice(page);
            self.pages += 1;
        }
        self.next_block += keep.len() as u64;
        if self.done {
            if let Some(f) = self.on_end.take() {
                f(self.pages);
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
            Some(b) if b == super::MANIFEST_FILE.as_bytes() && parts.len() == 1 => {
                Ok(Some((self.data_dir.join(super::MANIFEST_FILE), None)))
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

/// A delta being applied.
struct Applying {
    key: Vec<u8>,
    dest: PathBuf,
    file: File,
    buf: Vec<u8>,
    header: bool,
    next_block: u64,
}

/// Applies the deltas of a snapshot to the bases a first pass restored,
/// then checks each completed file against the backup manifest (the first
/// pass leaves them unchecked).
pub(crate) struct DeltaWriter {
    places: Places,
    block: usize,
    /// Per manifest path: the delta's index entry and the manifest's.
    files: HashMap<Vec<u8>, (DeltaEntry, ManifestFile)>,
    applied: HashSet<Vec<u8>>,
    current: Option<Applying>,
    verified: Arc<Mutex<u64>>,
}

impl DeltaWriter {
    /// A writer for the deltas `files` lists.
    pub(crate) fn new(
        places: Places,
        block: u32,
        files: HashMap<Vec<u8>, (DeltaEntry, ManifestFile)>,
        verified: Arc<Mutex<u64>>,
    ) -> Self {
        DeltaWriter {
            places,
            block: block as usize,
            files,
            applied: HashSet::new(),
            current: None,
            verified,
        }
    }

    fn damaged(key: &[u8], what: impl std::fmt::Display) -> Error {
        Error::corrupt(
            FileKind::Snapshot,
            format!("page delta of {}", String::from_utf8_lossy(key)),
            what,
        )
    }

    /// Applies the whole records buffered so far.
    fn apply_buffered(&mut self) -> Result<()> {
        let block = self.block;
        let Some(a) = self.current.as_mut() else {
            return Err(Error::target_failed("delta data without an open file"));
        };
        let Some((entry, _)) = self.files.get(&a.key) else {
            return Err(Self::damaged(&a.key, "not in the index"));
        };
        let mut at = 0;
        if !a.header {
            if a.buf.len() < HEADER_LEN {
                return Ok(());
            }
            let h = &a.buf[..HEADER_LEN];
            let u32_at = |i: usize| u32::from_le_bytes([h[i], h[i + 1], h[i + 2], h[i + 3]]);
            let u64_at = |i: usize| {
                let mut b = [0u8; 8];
                b.copy_from_slice(&h[i..i + 8]);
                u64::from_le_bytes(b)
            };
            if &h[..8] != MAGIC {
                return Err(Self::damaged(&a.key, "it does not start as a page delta"));
            }
            if u32_at(8) as usize != block || u64_at(32) != entry.size {
                return Err(Self::damaged(
                    &a.key,
                    format!(
                        "its header ({} byte pages, {} bytes) does not match the index ({block}, {})",
                        u32_at(8),
                        u64_at(32),
                        entry.size
                    ),
                ));
            }
            a.header = true;
            at = HEADER_LEN;
        }
        let blocks = entry.size / block as u64;
        while a.buf.len() - at >= 4 + block {
            let r = &a.buf[at..at + 4 + block];
            let blkno = u64::from(u32::from_le_bytes([r[0], r[1], r[2], r[3]]));
            if blkno < a.next_block || blkno >= blocks {
                return Err(Self::damaged(
                    &a.key,
                    format!("block {blkno} is out of order or past the file's end"),
                ));
            }
            a.file
                .write_all_at(&r[4..], blkno * block as u64)
                .map_err(|e| Error::io(format!("writing {}", a.dest.display()), e))?;
            a.next_block = blkno + 1;
            at += 4 + block;
        }
        a.buf.drain(..at);
        Ok(())
    }
}

impl TreeWriter for DeltaWriter {
    fn enter_dir(&mut self, _path: &Path, _node: &Node) -> Result<()> {
        Ok(())
    }

    fn leave_dir(&mut self, _path: &Path, _node: &Node) -> Result<()> {
        Ok(())
    }

    fn start_file(&mut self, path: &Path, _node: &Node) -> Result<()> {
        use std::os::unix::ffi::OsStrExt;
        let name = path.file_name().map(OsStrExt::as_bytes).unwrap_or_default();
        let base = name.strip_suffix(DELTA_SUFFIX).ok_or_else(|| {
            Error::corrupt(
                FileKind::Snapshot,
                "tree",
                format!("`{}` is not a page delta", path.display()),
            )
        })?;
        let base_path = path.with_file_name(std::ffi::OsStr::from_bytes(base));
        let Some((dest, Some(key))) = self.places.place(&base_path)? else {
            return Err(Error::corrupt(
                FileKind::Snapshot,
                "tree",
                format!("`{}` is not a page delta of a file", path.display()),
            ));
        };
        if !self.files.contains_key(&key) {
            return Err(Self::damaged(
                &key,
                format!("`{DELTA_INDEX}` does not list it"),
            ));
        }
        let file = OpenOptions::new()
            .write(true)
            .open(&dest)
            .map_err(|e| Error::io(format!("opening {}", dest.display()), e))?;
        self.current = Some(Applying {
            key,
            dest,
            file,
            buf: Vec::new(),
            header: false,
            next_block: 0,
        });
        Ok(())
    }

    fn write_data(&mut self, data: Bytes) -> Result<()> {
        let a = self
            .current
            .as_mut()
            .ok_or_else(|| Error::target_failed("delta data without an open file"))?;
        a.buf.extend_from_slice(&data);
        if a.buf.len() >= HEADER_LEN + 64 * (4 + self.block) {
            self.apply_buffered()?;
        }
        Ok(())
    }

    fn finish_file(&mut self, _path: &Path, _node: &Node) -> Result<()> {
        self.apply_buffered()?;
        let a = self
            .current
            .take()
            .ok_or_else(|| Error::target_failed("no open delta"))?;
        if !a.header || !a.buf.is_empty() {
            return Err(Self::damaged(&a.key, "it ends inside a record"));
        }
        let Some((entry, listed)) = self.files.get(&a.key) else {
            return Err(Self::damaged(&a.key, "not in the index"));
        };
        let io = |what: &str, e| Error::io(format!("{what} {}", a.dest.display()), e);
        a.file
            .set_len(entry.size)
            .map_err(|e| io("setting the size of", e))?;
        // The completed file, read back, against the backup manifest.
        let (size, crc) = File::open(&a.dest)
            .and_then(|f| super::manifest::crc32c_of(f, u64::MAX))
            .map_err(|e| io("reading", e))?;
        check_restored_file(&a.key, listed, size, crc)?;
        if let Some(mode) = entry.mode {
            a.file
                .set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))
                .map_err(|e| io("setting permissions of", e))?;
        }
        if let Some(ns) = entry.mtime_ns {
            let t = filetime::FileTime::from_unix_time(
                ns.div_euclid(1_000_000_000),
                ns.rem_euclid(1_000_000_000) as u32,
            );
            filetime::set_file_handle_times(&a.file, None, Some(t))
                .map_err(|e| io("setting times of", e))?;
        }
        *self.verified.lock().unwrap_or_else(PoisonError::into_inner) += 1;
        self.applied.insert(a.key);
        Ok(())
    }

    fn abort_file(&mut self, _path: &Path) {
        self.current = None;
    }

    fn symlink(&mut self, path: &Path, _node: &Node) -> Result<()> {
        Err(Error::corrupt(
            FileKind::Snapshot,
            "tree",
            format!(
                "`{}`: a link where a page delta was expected",
                path.display()
            ),
        ))
    }

    fn finish(&mut self) -> Result<()> {
        let mut missing: Vec<String> = self
            .files
            .keys()
            .filter(|k| !self.applied.contains(*k))
            .map(|k| String::from_utf8_lossy(k).into_owned())
            .collect();
        if missing.is_empty() {
            return Ok(());
        }
        missing.sort();
        let n = missing.len();
        missing.truncate(5);
        Err(Error::corrupt(
            FileKind::Snapshot,
            "tree",
            format!(
                "{n} page deltas `{DELTA_INDEX}` lists are not in the snapshot: {}",
                missing.join(", ")
            ),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::ffi::OsStrExt;

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

    #[test]
    fn deltas_hold_changed_new_and_appended_pages_and_apply_back() {
        let dir = tempfile::tempdir().unwrap();
        let base: Vec<u8> = [page(0x100, 1), page(0x100, 2), page(0x100, 3)].concat();
        // Block 1 changed after the base's start, block 2 is untouched,
        // block 3 is appended, block 4 is a new zero page.
        let now: Vec<u8> = [
            page(0x100, 1),
            page(0x900, 9),
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
            8192,
            Lsn(0x800),
            base.len() as u64,
            now.len() as u64,
            Box::new(move |n| *e2.lock().unwrap() = Some(n)),
        );
        let mut delta = Vec::new();
        r.read_to_end(&mut delta).unwrap();
        assert_eq!(*ended.lock().unwrap(), Some(3));
        assert_eq!(delta.len(), HEADER_LEN + 3 * (4 + 8192));

        let data = dir.path().join("data");
        std::fs::create_dir_all(data.join("base/5")).unwrap();
        let dest = data.join("base/5/16384");
        let entry = DeltaEntry {
            base_lsn: "0/800".into(),
            base_size: base.len() as u64,
            size: now.len() as u64,
            mode: Some(0o600),
            mtime_ns: Some(1_700_000_000_000_000_000),
            ctime_ns: None,
            inode: None,
            pages: 3,
        };
        let listed = ManifestFile {
            size: now.len() as u64,
            checksum: Some((
                "CRC32C".into(),
                super::super::manifest::crc32c_bytes(crc32c::crc32c(&now)),
            )),
        };
        let key = b"base/5/16384".to_vec();
        let places = Places {
            data_dir: data.clone(),
            roots: HashMap::new(),
        };
        let verified = Arc::new(Mutex::new(0));
        // A writer for this one delta, after a first pass wrote its base.
        let writer = || {
            std::fs::write(&dest, &base).unwrap();
            DeltaWriter::new(
                places.clone(),
                8192,
                HashMap::from([(key.clone(), (entry.clone(), listed.clone()))]),
                verified.clone(),
            )
        };
        let mut w = writer();
        let mut snap_path = PathBuf::from("data/base/5");
        snap_path.push(std::ffi::OsStr::from_bytes(
            &delta_name(&FsName::from("16384")).0,
        ));
        let node = Node::new("x", NodeKind::File);
        w.start_file(&snap_path, &node).unwrap();
        // Odd piece sizes: records cross the pieces.
        for piece in delta.chunks(5000) {
            w.write_data(Bytes::copy_from_slice(piece)).unwrap();
        }
        w.finish_file(&snap_path, &node).unwrap();
        w.finish().unwrap();
        assert_eq!(std::fs::read(&dest).unwrap(), now);
        assert_eq!(*verified.lock().unwrap(), 1);

        // A flipped byte in a page the delta holds: the manifest check
        // names the file.
        let mut bad = delta.clone();
        bad[HEADER_LEN + 4 + 100] ^= 1;
        let mut w = writer();
        w.start_file(&snap_path, &node).unwrap();
        w.write_data(Bytes::from(bad)).unwrap();
        let e = w.finish_file(&snap_path, &node).unwrap_err().to_string();
        assert!(e.contains("base/5/16384") && e.contains("CRC-32C"), "{e}");

        // Out-of-order blocks and a cut record are refused.
        let mut swapped = delta[..HEADER_LEN].to_vec();
        let rec = 4 + 8192;
        swapped.extend_from_slice(&delta[HEADER_LEN + rec..HEADER_LEN + 2 * rec]);
        swapped.extend_from_slice(&delta[HEADER_LEN..HEADER_LEN + rec]);
        let mut w = writer();
        w.start_file(&snap_path, &node).unwrap();
        w.write_data(Bytes::from(swapped)).unwrap();
        let e = w.finish_file(&snap_path, &node).unwrap_err().to_string();
        assert!(e.contains("out of order"), "{e}");
        let mut w = writer();
        w.start_file(&snap_path, &node).unwrap();
        w.write_data(Bytes::copy_from_slice(&delta[..delta.len() - 10]))
            .unwrap();
        let e = w.finish_file(&snap_path, &node).unwrap_err().to_string();
        assert!(e.contains("inside a record"), "{e}");
        // A delta the index lists but the snapshot lacks.
        let e = w.finish().unwrap_err().to_string();
        assert!(e.contains("not in the snapshot"), "{e}");
    }

    #[test]
    fn a_page_torn_while_read_goes_into_the_delta() {
        let dir = tempfile::tempdir().unwrap();
        // Read: block 1 with its old header and new bytes after it (a write
        // under way); on disk once the read is done: the new page.
        let mut torn = page(0x900, 9);
        torn[..8].copy_from_slice(&page(0x100, 2)[..8]);
        let read: Vec<u8> = [page(0x100, 1), torn.clone(), page(0x100, 3)].concat();
        let on_disk: Vec<u8> = [page(0x100, 1), page(0x900, 9), page(0x100, 3)].concat();
        let path = dir.path().join("16384");
        std::fs::write(&path, &on_disk).unwrap();
        let mut r = DeltaReader::new(
            std::io::Cursor::new(read),
            Some(File::open(&path).unwrap()),
            8192,
            Lsn(0x800),
            on_disk.len() as u64,
            on_disk.len() as u64,
            Box::new(|_| {}),
        );
        let mut delta = Vec::new();
        r.read_to_end(&mut delta).unwrap();
        assert_eq!(delta.len(), HEADER_LEN + 4 + 8192);
        assert_eq!(&delta[HEADER_LEN..HEADER_LEN + 4], &1u32.to_le_bytes());
        // The bytes as read (what the manifest's checksum covers).
        assert_eq!(&delta[HEADER_LEN + 4..], &torn[..]);
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
