//! The writer of a physical restore: the snapshot tree written into the
//! data directory and the tablespaces' places ([`Places`]), a relation
//! file with a page delta written once (its base with the delta applied),
//! and every file checked against the backup manifest as it is written.

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use backup_core::pack::IdCheck;
use backup_core::reader::SnapshotReader;
use backup_core::restorer::TreeWriter;
use backup_core::tree::Node;
use backup_core::{Error, FileKind, Result};
use bytes::Bytes;

use super::super::delta::{DeltaEntry, Patcher, DELTA_INDEX};
use super::super::lsn::{wal_file_name, Lsn};
use super::super::manifest::{Manifest, ManifestFile};
use super::super::meta::{DATA_DIR, MANIFEST_FILE, TABLESPACES_DIR};
use super::tablespaces::{rewrite_tablespace_map, TablespacePlacement};
use super::verify::check_restored_file;
use crate::files::FsWriter;

/// The current file of a [`PhysicalWriter`].
struct Current {
    /// Its manifest path (`None`: not checked, the manifest itself).
    key: Option<Vec<u8>>,
    crc: u32,
    size: u64,
    /// The content, kept for a rewrite (`tablespace_map`).
    held: Option<Vec<u8>>,
    /// Not restored (the page delta index).
    discard: bool,
    /// The file's page delta, applied while the base is written, and the
    /// file's node as the delta completes it.
    patcher: Option<(Patcher, Node)>,
}

/// The page deltas of a snapshot, for the [`PhysicalWriter`] to apply.
pub(super) struct Patches {
    /// Per manifest path: the delta's entry in the tree and in the index.
    pub(super) files: HashMap<Vec<u8>, (Node, DeltaEntry)>,
    pub(super) block: u32,
    pub(super) snapshot: SnapshotReader,
    /// The runtime the deltas' content is read on (the writer runs on a
    /// blocking thread).
    pub(super) rt: tokio::runtime::Handle,
}

impl Patches {
    /// The patcher of the file `key`, and its node as the delta completes
    /// it (size and metadata when the backup listed it), when it has a
    /// delta.
    fn patcher(&self, key: &[u8], base: &Node) -> Option<(Patcher, Node)> {
        let (delta, entry) = self.files.get(key)?;
        // Checked end to end: the completed file against the manifest. Two
        // fetches ahead: the restore's own stream holds most memory.
        let mut stream = self
            .snapshot
            .content_with(delta, IdCheck::WhenUnauthenticated, 2);
        let rt = self.rt.clone();
        let source = Box::new(move || {
            rt.block_on(futures::StreamExt::next(&mut stream))
                .transpose()
        });
        let mut node = base.clone();
        node.size = entry.size;
        node.mode = entry.mode.or(base.mode);
        node.mtime_ns = entry.mtime_ns.or(base.mtime_ns);
        Some((Patcher::new(key.to_vec(), entry, self.block, source), node))
    }
}

/// Writes the snapshot tree into the data directory and tablespace places,
/// checking every file against the manifest.
pub(super) struct PhysicalWriter {
    inner: FsWriter,
    places: Places,
    manifest: HashMap<Vec<u8>, ManifestFile>,
    patches: Patches,
    /// WAL segment files the manifest's WAL ranges need.
    wal_needed: Vec<String>,
    /// WAL files restored.
    wal_seen: HashSet<Vec<u8>>,
    /// When tablespaces moved: the placements for `tablespace_map`.
    relocated: Option<Vec<TablespacePlacement>>,
    owner: Option<(u32, u32)>,
    current: Option<Current>,
    pub(super) verified: Arc<Mutex<u64>>,
    failed: bool,
}

impl PhysicalWriter {
    pub(super) fn new(
        places: Places,
        patches: Patches,
        manifest: Manifest,
        segment_size: u64,
        relocated: Option<Vec<TablespacePlacement>>,
        owner: Option<(u32, u32)>,
    ) -> Result<Self> {
        let mut wal_needed = Vec::new();
        for r in &manifest.wal_ranges {
            let first = r.start.segment(segment_size);
            let last = Lsn(r.end.0.saturating_sub(1))
                .segment(segment_size)
                .max(first);
            wal_needed.extend((first..=last).map(|s| wal_file_name(r.timeline, s, segment_size)));
        }
        Ok(PhysicalWriter {
            inner: FsWriter::new(PathBuf::from("/"))?.with_early_writeback()?,
            places,
            manifest: manifest.files,
            patches,
            wal_needed,
            wal_seen: HashSet::new(),
            relocated,
            owner,
            current: None,
            verified: Arc::default(),
            failed: false,
        })
    }

    fn owned(&self, node: &Node) -> Node {
        let mut n = node.clone();
        if let Some((uid, gid)) = self.owner {
            n.uid = Some(uid);
            n.gid = Some(gid);
        }
        n
    }

    fn mismatch(key: &[u8], what: &str) -> Error {
        Error::corrupt(
            FileKind::Snapshot,
            String::from_utf8_lossy(key),
            format!("the restored file does not match the backup manifest: {what}"),
        )
    }

    /// Whether `path` is the snapshot's page delta index (not restored).
    fn is_index(path: &Path) -> bool {
        path == Path::new(DELTA_INDEX)
    }
}

impl TreeWriter for PhysicalWriter {
    fn enter_dir(&mut self, path: &Path, node: &Node) -> Result<()> {
        match self.places.place(path)? {
            Some((dest, _)) => self.inner.enter_dir(&dest, &self.owned(node)),
            None => Ok(()),
        }
    }

    fn leave_dir(&mut self, path: &Path, node: &Node) -> Result<()> {
        match self.places.place(path)? {
            Some((dest, _)) => self.inner.leave_dir(&dest, &self.owned(node)),
            None => Ok(()),
        }
    }

    fn start_file(&mut self, path: &Path, node: &Node) -> Result<()> {
        if Self::is_index(path) {
            self.current = Some(Current {
                key: None,
                crc: 0,
                size: 0,
                held: None,
                discard: true,
                patcher: None,
            });
            return Ok(());
        }
        let (dest, key) = self
            .places
            .place(path)?
            .ok_or_else(|| Error::corrupt(FileKind::Snapshot, "tree", "a file at the top"))?;
        let held = (self.relocated.is_some()
            && key.as_deref() == Some(b"tablespace_map".as_slice()))
        .then(Vec::new);
        let patcher = key.as_deref().and_then(|k| self.patches.patcher(k, node));
        let node = patcher.as_ref().map_or(node, |(_, n)| n).clone();
        self.current = Some(Current {
            key,
            crc: 0,
            size: 0,
            held,
            discard: false,
            patcher,
        });
        self.inner.start_file(&dest, &self.owned(&node))
    }

    fn write_data(&mut self, data: Bytes) -> Result<()> {
        let c = self
            .current
            .as_mut()
            .ok_or_else(|| Error::target_failed("data without an open file"))?;
        if c.discard {
            return Ok(());
        }
        if let Some((p, _)) = &mut c.patcher {
            let (crc, size, inner) = (&mut c.crc, &mut c.size, &mut self.inner);
            return p.push(data, &mut |out| {
                *crc = crc32c::crc32c_append(*crc, &out);
                *size += out.len() as u64;
                inner.write_data(out)
            });
        }
        c.crc = crc32c::crc32c_append(c.crc, &data);
        c.size += data.len() as u64;
        if let Some(h) = &mut c.held {
            h.extend_from_slice(&data);
            return Ok(());
        }
        self.inner.write_data(data)
    }

    fn finish_file(&mut self, path: &Path, node: &Node) -> Result<()> {
        let mut c = self
            .current
            .take()
            .ok_or_else(|| Error::target_failed("no open file"))?;
        if c.discard {
            return Ok(());
        }
        let mut node = node.clone();
        if let Some((p, completed)) = &mut c.patcher {
            let (crc, size, inner) = (&mut c.crc, &mut c.size, &mut self.inner);
            let finished = p.finish(&mut |out| {
                *crc = crc32c::crc32c_append(*crc, &out);
                *size += out.len() as u64;
                inner.write_data(out)
            });
            if let Err(e) = finished {
                self.failed = true;
                return Err(e);
            }
            node = completed.clone();
        }
        if let Some(key) = &c.key {
            match self.manifest.remove(key) {
                Some(entry) => {
                    if let Err(e) = check_restored_file(key, &entry, c.size, c.crc) {
                        self.failed = true;
                        return Err(e);
                    }
                    *self.verified.lock().unwrap_or_else(PoisonError::into_inner) += 1;
                }
                // WAL segments are covered by the manifest's WAL ranges,
                // not listed.
                None if key.starts_with(b"pg_wal/") => {
                    self.wal_seen.insert(key[b"pg_wal/".len()..].to_vec());
                }
                None => {
                    self.failed = true;
                    return Err(Self::mismatch(key, "the manifest does not list it"));
                }
            }
        }
        if let Some(held) = c.held {
            let text = rewrite_tablespace_map(&held, self.relocated.as_deref().unwrap_or_default());
            self.inner.write_data(Bytes::from(text))?;
        }
        let (dest, _) = self
            .places
            .place(path)?
            .ok_or_else(|| Error::target_failed("no place"))?;
        self.inner.finish_file(&dest, &self.owned(&node))
    }

    fn abort_file(&mut self, path: &Path) {
        self.current = None;
        if let Ok(Some((dest, _))) = self.places.place(path) {
            self.inner.abort_file(&dest);
        }
    }

    fn symlink(&mut self, path: &Path, node: &Node) -> Result<()> {
        match self.places.place(path)? {
            Some((dest, _)) => self.inner.symlink(&dest, &self.owned(node)),
            None => Ok(()),
        }
    }

    fn finish(&mut self) -> Result<()> {
        self.inner.finish()?;
        if !self.failed {
            if let Some(missing) = self
                .wal_needed
                .iter()
                .find(|n| !self.wal_seen.contains(n.as_bytes()))
            {
                return Err(Error::corrupt(
                    FileKind::Snapshot,
                    "tree",
                    format!(
                        "WAL segment {missing}, which the backup needs to become consistent, is not in the snapshot"
                    ),
                ));
            }
        }
        if !self.failed && !self.manifest.is_empty() {
            let mut missing: Vec<String> = self
                .manifest
                .keys()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .collect();
            missing.sort();
            let n = missing.len();
            missing.truncate(5);
            return Err(Error::corrupt(
                FileKind::Snapshot,
                "tree",
                format!(
                    "{n} files the backup manifest lists are not in the snapshot: {}",
                    missing.join(", ")
                ),
            ));
        }
        Ok(())
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
