//! Reading mounted files: stored files by blob offsets through a shared,
//! byte-bounded cache of verified blobs; tables and collections rendered
//! into spool files shared by their opens.

use std::collections::{HashMap, VecDeque};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::os::unix::fs::FileExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use backup_core::pack::BlobType;
use backup_core::reader::SnapshotReader;
use backup_core::repo::IndexedRepository;
use backup_core::sink::FileKind;
use backup_core::tree::Node;
use backup_core::Id;
use backup_sources::item::ItemFormat;
use tokio::runtime::Handle;

use super::lock;
use crate::error::{Error, Result};

/// A stored file's blobs with the offset each starts at.
#[derive(Debug)]
pub(super) struct Blobs {
    starts: Vec<u64>,
    ids: Vec<Id>,
    size: u64,
}

/// The blobs of a file or stream node and where each starts, from the
/// index's plaintext lengths.
///
/// # Errors
///
/// [`backup_core::Error::Corrupt`] when a blob is not indexed or the
/// lengths do not add up to the node's size; errors reading content
/// lists.
pub(super) async fn blob_list(repo: &IndexedRepository, node: &Node) -> Result<Blobs> {
    let ids = repo.content_ids(node).await?;
    let mut starts = Vec::with_capacity(ids.len());
    let mut at = 0u64;
    for id in &ids {
        let loc = repo
            .index()
            .get(BlobType::Data, id)
            .ok_or_else(|| damaged(id, "the blob is referenced but not in the index"))?;
        starts.push(at);
        at += u64::from(loc.entry.raw_length);
    }
    if at != node.size {
        return Err(backup_core::Error::corrupt(
            FileKind::Index,
            node.name.display(),
            format!("its blobs hold {at} bytes, its entry says {}", node.size),
        )
        .into());
    }
    Ok(Blobs {
        starts,
        ids,
        size: at,
    })
}

fn damaged(id: &Id, reason: &str) -> Error {
    backup_core::Error::corrupt(FileKind::Index, format!("blob {}", id.short()), reason).into()
}

/// An open file of a mount.
#[derive(Debug)]
pub struct OpenFile {
    inner: Inner,
}

#[derive(Debug)]
enum Inner {
    Stored { name: String, blobs: Blobs },
    Rendered(Arc<Spool>),
}

impl OpenFile {
    pub(super) fn stored(name: String, blobs: Blobs) -> Self {
        OpenFile {
            inner: Inner::Stored { name, blobs },
        }
    }

    pub(super) fn rendered(spool: Arc<Spool>) -> Self {
        OpenFile {
            inner: Inner::Rendered(spool),
        }
    }

    /// The file's size.
    pub fn size(&self) -> u64 {
        match &self.inner {
            Inner::Stored { blobs, .. } => blobs.size,
            Inner::Rendered(s) => s.size,
        }
    }

    pub(super) fn read_at(
        &self,
        handle: &Handle,
        repo: &IndexedRepository,
        cache: &BlobCache,
        offset: u64,
        len: usize,
    ) -> Result<Vec<u8>> {
        let size = self.size();
        if offset >= size || len == 0 {
            return Ok(Vec::new());
        }
        let len = usize::try_from((size - offset).min(len as u64)).unwrap_or(len);
        match &self.inner {
            Inner::Rendered(spool) => {
                let mut buf = vec![0; len];
                spool
                    .file
                    .read_exact_at(&mut buf, offset)
                    .map_err(|e| backup_core::Error::io("reading the spool file", e))?;
                Ok(buf)
            }
            Inner::Stored { name, blobs } => {
                let mut out = Vec::with_capacity(len);
                let mut i = blobs.starts.partition_point(|s| *s <= offset) - 1;
                let mut at = offset;
                while out.len() < len {
                    let id = blobs.ids[i];
                    let data = cache.get_or_read(handle, repo, &id)?;
                    let start = blobs.starts[i];
                    let end = blobs.starts.get(i + 1).copied().unwrap_or(blobs.size);
                    if data.len() as u64 != end - start {
                        return Err(backup_core::Error::corrupt(
                            FileKind::Index,
                            name,
                            format!(
                                "blob {} holds {} bytes, the index says {}",
                                id.short(),
                                data.len(),
                                end - start
                            ),
                        )
                        .into());
                    }
                    let from = usize::try_from(at - start).unwrap_or(0);
                    let take = (data.len() - from).min(len - out.len());
                    out.extend_from_slice(&data[from..from + take]);
                    at += take as u64;
                    i += 1;
                }
                Ok(out)
            }
        }
    }

    pub(super) fn close(&self, spools: &Spools) {
        if let Inner::Rendered(spool) = &self.inner {
            spools.close(spool);
        }
    }
}

/// Verified blobs recently read, up to a number of bytes, the oldest
/// dropped first (a file read in 128 KiB pieces reads each blob once).
#[derive(Debug)]
pub(super) struct BlobCache {
    limit: usize,
    state: Mutex<CacheState>,
}

#[derive(Debug, Default)]
struct CacheState {
    bytes: usize,
    order: VecDeque<Id>,
    blobs: HashMap<Id, Arc<Vec<u8>>>,
}

impl BlobCache {
    pub(super) fn new(limit: usize) -> Self {
        BlobCache {
            limit,
            state: Mutex::new(CacheState::default()),
        }
    }

    fn get_or_read(
        &self,
        handle: &Handle,
        repo: &IndexedRepository,
        id: &Id,
    ) -> Result<Arc<Vec<u8>>> {
        if let Some(b) = lock(&self.state).blobs.get(id) {
            return Ok(b.clone());
        }
        let data = Arc::new(handle.block_on(repo.read_blob(BlobType::Data, id))?);
        self.insert(*id, data.clone());
        Ok(data)
    }

    /// Keeps a blob, dropping the oldest while over the limit (a blob
    /// larger than the limit is not kept).
    fn insert(&self, id: Id, data: Arc<Vec<u8>>) {
        let mut state = lock(&self.state);
        if data.len() > self.limit || state.blobs.contains_key(&id) {
            return;
        }
        state.bytes += data.len();
        state.order.push_back(id);
        state.blobs.insert(id, data);
        while state.bytes > self.limit {
            let Some(old) = state.order.pop_front() else {
                break;
            };
            if let Some(b) = state.blobs.remove(&old) {
                state.bytes -= b.len();
            }
        }
    }
}

/// What a spool holds: a table or collection, or a Redis key.
pub(super) enum Rendered<'a> {
    /// As [`backup_sources::kind::dump_item`] writes it.
    Item { path: &'a str, format: ItemFormat },
    /// A key by its bytes, as `backup dump SNAPSHOT DB/KEY` writes it.
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    Key {
        db: u32,
        key: &'a [u8],
        format: ItemFormat,
    },
}

/// A rendered table or collection: an unlinked file and its size.
#[derive(Debug)]
pub(super) struct Spool {
    ino: u64,
    file: File,
    size: u64,
}

impl Spool {
    pub(super) fn size(&self) -> u64 {
        self.size
    }
}

/// An item's spool while open, and how many opens hold it.
#[derive(Debug, Default)]
struct SlotState {
    spool: Option<Arc<Spool>>,
    opens: usize,
}

type Slot = Arc<Mutex<SlotState>>;

/// The spool files of open tables and collections, one per item however
/// often it is open.
#[derive(Debug)]
pub(super) struct Spools {
    dir: PathBuf,
    /// Per item: its spool while open (the slot's lock is held while it
    /// renders, so two opens render once).
    slots: Mutex<HashMap<u64, Slot>>,
}

impl Spools {
    pub(super) fn new(dir: PathBuf) -> Self {
        Spools {
            dir,
            slots: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, ino: u64) -> Slot {
        lock(&self.slots).entry(ino).or_default().clone()
    }

    /// The item's spool, rendered now unless open already.
    pub(super) fn open(
        &self,
        handle: &Handle,
        ino: u64,
        reader: &SnapshotReader,
        what: &Rendered<'_>,
    ) -> Result<Arc<Spool>> {
        let slot = self.slot(ino);
        let mut state = lock(&slot);
        if let Some(s) = state.spool.clone() {
            state.opens += 1;
            return Ok(s);
        }
        let file = tempfile::tempfile_in(&self.dir).map_err(|e| {
            backup_core::Error::io(
                format!("creating a spool file in {}", self.dir.display()),
                e,
            )
        })?;
        let out = file
            .try_clone()
            .map_err(|e| backup_core::Error::io("opening the spool file", e))?;
        let open: backup_sources::item::OpenItem = Box::new(move |_| {
            Ok(Box::new(BufWriter::with_capacity(1 << 20, out)) as Box<dyn Write + Send>)
        });
        let done =
            match *what {
                Rendered::Item { path, format } => handle.block_on(
                    backup_sources::kind::dump_item(reader, path, Some(format), open),
                )?,
                #[cfg(feature = "redis")]
                Rendered::Key { db, key, format } => handle.block_on(
                    backup_sources::redis::item::dump_key_bytes(reader, db, key, format, open),
                )?,
                #[cfg(not(feature = "redis"))]
                Rendered::Key { .. } => {
                    return Err(Error::usage("this build has no Redis support"));
                }
            };
        let s = Arc::new(Spool {
            ino,
            file,
            size: done.bytes,
        });
        state.spool = Some(s.clone());
        state.opens = 1;
        Ok(s)
    }

    /// Ends one open of a spool; the last drops it (the file goes when
    /// the last reader lets go of it).
    fn close(&self, spool: &Spool) {
        let slot = self.slot(spool.ino);
        let mut state = lock(&slot);
        state.opens = state.opens.saturating_sub(1);
        if state.opens == 0 {
            state.spool = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Id {
        let mut raw = [0u8; 32];
        raw[0] = n;
        Id(raw)
    }

    #[test]
    fn the_blob_cache_keeps_to_its_limit_oldest_out_first() {
        let cache = BlobCache::new(10);
        cache.insert(id(1), Arc::new(vec![1; 4]));
        cache.insert(id(2), Arc::new(vec![2; 4]));
        cache.insert(id(2), Arc::new(vec![2; 4]));
        assert_eq!(lock(&cache.state).bytes, 8);
        cache.insert(id(3), Arc::new(vec![3; 4]));
        let state = lock(&cache.state);
        assert_eq!(state.bytes, 8);
        assert!(!state.blobs.contains_key(&id(1)));
        assert!(state.blobs.contains_key(&id(2)) && state.blobs.contains_key(&id(3)));
        drop(state);
        cache.insert(id(4), Arc::new(vec![4; 11]));
        assert!(!lock(&cache.state).blobs.contains_key(&id(4)));
    }
}
