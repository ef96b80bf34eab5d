//! The local cache of a write-only key: what it stored before, since it
//! can read nothing back from the repository.
//!
//! A write-only client deduplicates against its own earlier backups and
//! takes unchanged files from its own last snapshot of a source through a
//! file under the user's cache directory (`$BACKUP_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/backup`, else `~/.cache/backup`), at
//! `write-only/<repository id>/<key id>`. It holds the packs this key
//! stored (grouped by the index file that lists them), the tree and
//! content-list blobs of its latest snapshot of each source, and those
//! snapshots' manifests. It is sealed with the key's cache key, so it is
//! no more readable than the key file.
//!
//! The cache is believed only as far as the repository still agrees: on
//! each load, a group whose index file or packs are gone (a prune ran) is
//! dropped, and so is a snapshot whose file is gone. A lost or damaged
//! cache is rebuilt empty: the next backup stores its data again (a full
//! key's prune removes the duplicates), and nothing that is not in the
//! repository is ever taken as present.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::Repository;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{Index, IndexFile, IndexPack};
use crate::sink::{FileKind, SinkExt};
use crate::snapshot::{Snapshot, SnapshotEntry, SnapshotFilter};

/// Version of the cache file's contents.
const CACHE_VERSION: u32 = 1;

/// A write-only key's cache, loaded, plus the tree blobs of the run in
/// progress.
pub struct WriterCache {
    path: PathBuf,
    key: [u8; 32],
    repository: String,
    state: Mutex<CacheState>,
    run_trees: Mutex<HashMap<Id, Vec<u8>>>,
    /// The file as it was when loaded: unchanged since, it need not be
    /// read again before it is written.
    loaded: Mutex<Option<(u64, std::time::SystemTime)>>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct CacheState {
    version: u32,
    repository: String,
    /// Stored after the JSON, in binary ([`encode`]).
    #[serde(skip)]
    indexed: Vec<CachedIndex>,
    snapshots: Vec<CachedSnapshot>,
    /// Each tree zstd-compressed, stored after the JSON in binary
    /// ([`encode`]): a run that changes few trees compresses only those.
    #[serde(skip)]
    trees: BTreeMap<Id, Vec<u8>>,
}

impl CacheState {
    /// Drops the trees no cached snapshot has.
    fn keep_trees_of_snapshots(&mut self) {
        let kept: HashSet<Id> = self
            .snapshots
            .iter()
            .flat_map(|s| s.trees.iter().copied())
            .collect();
        self.trees.retain(|id, _| kept.contains(id));
    }
}

/// The packs one index file written by this key lists.
#[derive(Debug, Clone)]
struct CachedIndex {
    file: Id,
    packs: Vec<IndexPack>,
}

/// A snapshot this key wrote, with its tree and content-list blobs.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CachedSnapshot {
    id: Id,
    snapshot: Snapshot,
    trees: Vec<Id>,
}

/// The cache file's plaintext: the state's JSON (version, repository,
/// snapshots), zstd-compressed, with its length in front; the packs of
/// each index file, each with its entries as a pack header's plaintext;
/// then each tree with its compressed bytes. Lengths and counts are 4
/// bytes little-endian, pack sizes 8. Packs and trees are most of the
/// cache: in binary they cost no JSON, and trees compressed one by one are
/// not compressed again each run.
fn encode(state: &CacheState) -> std::io::Result<Vec<u8>> {
    let json = serde_json::to_vec(state).map_err(std::io::Error::other)?;
    let json = zstd::bulk::compress(&json, 1)?;
    let mut out = Vec::with_capacity(json.len() + 64);
    let len = |n: usize| {
        u32::try_from(n)
            .map(u32::to_le_bytes)
            .map_err(std::io::Error::other)
    };
    out.extend_from_slice(&len(json.len())?);
    out.extend_from_slice(&json);
    out.extend_from_slice(&len(state.indexed.len())?);
    for g in &state.indexed {
        out.extend_from_slice(&g.file.0);
        out.extend_from_slice(&len(g.packs.len())?);
        for p in &g.packs {
            let header = crate::pack::header_plaintext(&p.blobs);
            out.extend_from_slice(&p.id.0);
            out.extend_from_slice(&p.size.to_le_bytes());
            out.extend_from_slice(&len(header.len())?);
            out.extend_from_slice(&header);
        }
    }
    for (id, tree) in &state.trees {
        out.extend_from_slice(&id.0);
        out.extend_from_slice(&len(tree.len())?);
        out.extend_from_slice(tree);
    }
    Ok(out)
}

/// Reads what [`encode`] wrote.
fn decode(body: &[u8]) -> std::result::Result<CacheState, String> {
    fn take<'a>(rest: &mut &'a [u8], n: usize) -> std::result::Result<&'a [u8], String> {
        if rest.len() < n {
            return Err("truncated".to_owned());
        }
        let (head, tail) = rest.split_at(n);
        *rest = tail;
        Ok(head)
    }
    fn length(rest: &mut &[u8]) -> std::result::Result<usize, String> {
        let b: [u8; 4] = take(rest, 4)?.try_into().map_err(|_| "truncated")?;
        Ok(u32::from_le_bytes(b) as usize)
    }
    fn id(rest: &mut &[u8]) -> std::result::Result<Id, String> {
        Ok(Id(take(rest, 32)?.try_into().map_err(|_| "truncated")?))
    }
    let mut rest = body;
    let n = length(&mut rest)?;
    let json = super::inflate_metadata(take(&mut rest, n)?)?;
    let mut state: CacheState = serde_json::from_slice(&json).map_err(|e| e.to_string())?;
    for _ in 0..length(&mut rest)? {
        let file = id(&mut rest)?;
        let count = length(&mut rest)?;
        let mut packs = Vec::with_capacity(count.min(rest.len() / 44));
        for _ in 0..count {
            let pack = id(&mut rest)?;
            let size: [u8; 8] = take(&mut rest, 8)?.try_into().map_err(|_| "truncated")?;
            let n = length(&mut rest)?;
            let blobs = crate::pack::parse_header_plaintext(take(&mut rest, n)?, &pack)
                .map_err(|e| e.to_string())?;
            packs.push(IndexPack {
                id: pack,
                size: u64::from_le_bytes(size),
                blobs,
            });
        }
        state.indexed.push(CachedIndex { file, packs });
    }
    while !rest.is_empty() {
        let tree = id(&mut rest)?;
        let n = length(&mut rest)?;
        state.trees.insert(tree, take(&mut rest, n)?.to_vec());
    }
    Ok(state)
}

/// What identifies the cache file's version on disk: its length and
/// modification time.
fn stamp(path: &std::path::Path) -> Option<(u64, std::time::SystemTime)> {
    let m = std::fs::metadata(path).ok()?;
    Some((m.len(), m.modified().ok()?))
}

impl std::fmt::Debug for WriterCache {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WriterCache")
            .field("path", &self.path)
            .finish_non_exhaustive()
    }
}

impl WriterCache {
    /// Loads the cache of the write-only key that opened `repo` and checks
    /// it against the repository; returns it with the index of the blobs
    /// it may deduplicate against. A missing or unreadable cache is empty.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the repository was not opened with a stored
    /// write-only key; storage errors while listing.
    pub(super) async fn load(repo: &Repository) -> Result<(Self, Index)> {
        let (Some(key), Some(key_id)) = (repo.key().cache_key(), repo.key_id()) else {
            return Err(Error::Config(
                "a write-only client needs a stored write-only key".to_owned(),
            ));
        };
        let repository = repo.config().id.clone();
        let path = crate::util::cache_root()
            .join("write-only")
            .join(&repository)
            .join(key_id.to_hex());
        let cache = WriterCache {
            path,
            key,
            repository,
            state: Mutex::default(),
            run_trees: Mutex::default(),
            loaded: Mutex::default(),
        };
        *cache.loaded.lock().unwrap_or_else(PoisonError::into_inner) = stamp(&cache.path);
        let mut state = cache.read();
        let listed = |kind| async move {
            let names = repo.sink().list_names(kind).await?;
            Ok::<HashSet<String>, Error>(names.into_iter().collect())
        };
        let index_files = listed(FileKind::Index).await?;
        let packs: HashSet<String> = repo.pack_sizes().await?.into_keys().collect();
        let snapshots = listed(FileKind::Snapshot).await?;
        state.indexed.retain(|g| {
            index_files.contains(&g.file.to_hex())
                && g.packs.iter().all(|p| packs.contains(&p.id.to_hex()))
        });
        state
            .snapshots
            .retain(|s| snapshots.contains(&s.id.to_hex()));
        state.keep_trees_of_snapshots();
        let mut index = Index::new();
        for g in &state.indexed {
            for p in &g.packs {
                index.add_pack(p.id, p.size, &p.blobs);
            }
        }
        *cache.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
        index.compact();
        Ok((cache, index))
    }

    /// The cache file's state, or an empty one (said in the log) when it
    /// is missing, damaged or another repository's.
    fn read(&self) -> CacheState {
        let empty = || CacheState {
            version: CACHE_VERSION,
            repository: self.repository.clone(),
            ..CacheState::default()
        };
        let bytes = match std::fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                tracing::info!(cache = %self.path.display(), "No local cache of this write-only key yet: this backup stores all its data.");
                return empty();
            }
            Err(e) => {
                tracing::warn!(cache = %self.path.display(), error = %e, "Cannot read the write-only key's cache: this backup stores all its data again.");
                return empty();
            }
        };
        let parsed = crate::crypto::open_with(&self.key, &bytes)
            .ok_or_else(|| "it does not open with this key".to_owned())
            .and_then(|body| decode(&body));
        match parsed {
            Ok(s) if s.version == CACHE_VERSION && s.repository == self.repository => s,
            Ok(_) => empty(),
            Err(e) => {
                tracing::warn!(cache = %self.path.display(), error = %e, "The write-only key's cache is damaged: rebuilding it; this backup stores all its data again.");
                empty()
            }
        }
    }

    /// Remembers a tree or content-list blob submitted in this run.
    pub(crate) fn note_tree(&self, id: Id, data: &[u8]) {
        self.run_trees
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(id)
            .or_insert_with(|| data.to_vec());
    }

    /// A tree or content-list blob this key stored, by id.
    pub(crate) fn tree(&self, id: &Id) -> Option<Vec<u8>> {
        if let Some(t) = self
            .run_trees
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(id)
        {
            return Some(t.clone());
        }
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let compressed = state.trees.get(id)?;
        // A tree is at most a metadata file's size.
        zstd::bulk::decompress(compressed, super::METADATA_MAX as usize).ok()
    }

    /// Whether the cache holds the tree `id`.
    pub(crate) fn has_tree(&self, id: &Id) -> bool {
        self.run_trees
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .contains_key(id)
            || self
                .state
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .trees
                .contains_key(id)
    }

    /// The newest snapshot this key wrote that passes `filter`.
    pub fn latest(&self, filter: &SnapshotFilter) -> Option<SnapshotEntry> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        state
            .snapshots
            .iter()
            .filter(|s| filter.matches(&s.snapshot))
            .max_by_key(|s| s.snapshot.time)
            .map(|s| SnapshotEntry {
                id: s.id,
                snapshot: s.snapshot.clone(),
            })
    }

    /// Every snapshot this key wrote that the cache still knows (its
    /// latest of each source and host), oldest first.
    pub fn snapshots(&self) -> Vec<SnapshotEntry> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out: Vec<SnapshotEntry> = state
            .snapshots
            .iter()
            .map(|s| SnapshotEntry {
                id: s.id,
                snapshot: s.snapshot.clone(),
            })
            .collect();
        out.sort_by_key(|e| e.snapshot.time);
        out
    }

    /// The snapshot this key wrote whose id starts with `prefix`.
    pub fn find(&self, prefix: &str) -> Option<SnapshotEntry> {
        let state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        let prefix = prefix.to_ascii_lowercase();
        let mut found = state
            .snapshots
            .iter()
            .filter(|s| s.id.to_hex().starts_with(&prefix));
        match (found.next(), found.next()) {
            (Some(s), None) => Some(SnapshotEntry {
                id: s.id,
                snapshot: s.snapshot.clone(),
            }),
            _ => None,
        }
    }

    /// Records a finished backup: the index files it wrote with their
    /// packs, and its snapshot with the trees of this run (which replace
    /// the older snapshot of the same source and host). When another run
    /// of the same key wrote the file since it was loaded, the file is
    /// read again first and its entries kept; a cache that cannot be
    /// written is only logged (the next backup stores its data again).
    pub(crate) fn record(&self, files: &[(Id, IndexFile)], entry: &SnapshotEntry) {
        let trees: Vec<(Id, Vec<u8>)> = self
            .run_trees
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .collect();
        let loaded = *self.loaded.lock().unwrap_or_else(PoisonError::into_inner);
        let mut state = if loaded.is_some() && stamp(&self.path) == loaded {
            // Nobody wrote the file since it was loaded: what this run
            // holds is all there is.
            std::mem::take(&mut *self.state.lock().unwrap_or_else(PoisonError::into_inner))
        } else {
            let mut state = self.read();
            let ours = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            let known: HashSet<Id> = state.indexed.iter().map(|g| g.file).collect();
            for g in &ours.indexed {
                if !known.contains(&g.file) {
                    state.indexed.push(g.clone());
                }
            }
            state
        };
        for (file, f) in files {
            state.indexed.push(CachedIndex {
                file: *file,
                packs: f.packs.clone(),
            });
        }
        let same = |s: &Snapshot| {
            s.host == entry.snapshot.host && s.source.url == entry.snapshot.source.url
        };
        state.snapshots.retain(|s| !same(&s.snapshot));
        state.snapshots.push(CachedSnapshot {
            id: entry.id,
            snapshot: entry.snapshot.clone(),
            trees: trees.iter().map(|(id, _)| *id).collect(),
        });
        for (id, data) in trees {
            if let std::collections::btree_map::Entry::Vacant(v) = state.trees.entry(id) {
                match zstd::bulk::compress(&data, 3) {
                    Ok(c) => {
                        v.insert(c);
                    }
                    Err(e) => tracing::warn!(error = %e, "Cannot compress a tree for the cache."),
                }
            }
        }
        state.keep_trees_of_snapshots();
        let written = self.write(&state);
        *self.loaded.lock().unwrap_or_else(PoisonError::into_inner) = stamp(&self.path);
        if let Err(e) = written {
            tracing::warn!(cache = %self.path.display(), error = %e, "Cannot write the write-only key's cache: the next backup stores all its data again.");
        }
        *self.state.lock().unwrap_or_else(PoisonError::into_inner) = state;
    }

    /// Writes `state` sealed, through a temporary file renamed into place,
    /// readable by its owner only.
    fn write(&self, state: &CacheState) -> std::io::Result<()> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let compressed = encode(state)?;
        let sealed = crate::crypto::seal_with(&self.key, &compressed);
        let dir = self.path.parent().unwrap_or(&self.path);
        std::fs::create_dir_all(dir)?;
        let tmp = self
            .path
            .with_extension(format!("tmp{}", std::process::id()));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&tmp)?;
        f.write_all(&sealed)?;
        f.sync_all()?;
        std::fs::rename(&tmp, &self.path)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_cache_body_round_trips_and_a_cut_one_is_refused() {
        let mut state = CacheState {
            version: CACHE_VERSION,
            repository: "r".to_owned(),
            ..CacheState::default()
        };
        state.trees.insert(Id([1; 32]), b"{\"nodes\":[]}".to_vec());
        state.trees.insert(Id([2; 32]), Vec::new());
        let entry = crate::pack::PackEntry {
            blob_type: crate::pack::BlobType::Data,
            id: Id([3; 32]),
            offset: 0,
            length: 100,
            raw_length: 72,
            compressed: false,
        };
        state.indexed.push(CachedIndex {
            file: Id([4; 32]),
            packs: vec![IndexPack {
                id: Id([5; 32]),
                size: 1 << 33,
                blobs: vec![entry],
            }],
        });
        let body = encode(&state).unwrap();
        let back = decode(&body).unwrap();
        assert_eq!(back.trees, state.trees);
        assert_eq!(back.indexed.len(), 1);
        let p = &back.indexed[0].packs[0];
        assert_eq!(
            (back.indexed[0].file, p.id, p.size),
            (Id([4; 32]), Id([5; 32]), 1 << 33)
        );
        assert_eq!(p.blobs[0].id, Id([3; 32]));
        assert_eq!(p.blobs[0].raw_length, 72);
        assert_eq!(back.repository, "r");
        for cut in [1, 5, body.len() - 1, body.len() - 13] {
            assert!(decode(&body[..cut]).is_err(), "cut at {cut}");
        }
    }
}
