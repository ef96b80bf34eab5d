//! The repository with its index loaded: reading and verifying blobs,
//! trees and content lists, with a cache of whole tree packs.

use std::sync::{Arc, Mutex, PoisonError};

use bytes::Bytes;
use futures::stream::{self, StreamExt, TryStreamExt};

use super::writer::WriterCache;
use super::Repository;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::Index;
use crate::pack::{decode_blob_with, BlobType, IdCheck};
use crate::sink::FileKind;
use crate::tree::{decode_content_list, Node, Tree};

/// A repository with its index loaded: can read blobs and run backups and
/// restores.
#[derive(Debug, Clone)]
pub struct IndexedRepository {
    repo: Repository,
    index: Arc<Index>,
    tree_packs: Arc<Mutex<TreePackCache>>,
    writer: Option<Arc<WriterCache>>,
}

/// Whole tree packs kept in memory, most recently used last. Trees are
/// small and read one by one while walking a snapshot; fetching their pack
/// once turns thousands of small reads (requests, on a cloud backend) into
/// a few.
#[derive(Debug, Default)]
struct TreePackCache {
    packs: std::collections::VecDeque<(Id, Bytes)>,
    bytes: usize,
}

/// Memory given to cached tree packs.
const TREE_CACHE_BYTES: usize = 32 * 1024 * 1024;
/// Tree packs larger than this are read blob by blob instead.
const TREE_CACHE_MAX_PACK: u64 = 32 * 1024 * 1024;

impl TreePackCache {
    fn get(&mut self, pack: &Id) -> Option<Bytes> {
        let i = self.packs.iter().position(|(id, _)| id == pack)?;
        let entry = self.packs.remove(i)?;
        let data = entry.1.clone();
        self.packs.push_back(entry);
        Some(data)
    }

    fn insert(&mut self, pack: Id, data: Bytes) {
        if self.packs.iter().any(|(id, _)| *id == pack) {
            return;
        }
        self.bytes += data.len();
        self.packs.push_back((pack, data));
        while self.bytes > TREE_CACHE_BYTES {
            match self.packs.pop_front() {
                Some((_, old)) => self.bytes -= old.len(),
                None => break,
            }
        }
    }
}

impl std::ops::Deref for IndexedRepository {
    type Target = Repository;
    fn deref(&self) -> &Repository {
        &self.repo
    }
}

impl IndexedRepository {
    pub(super) fn new(repo: Repository, index: Index) -> Self {
        IndexedRepository {
            repo,
            index: Arc::new(index),
            tree_packs: Arc::default(),
            writer: None,
        }
    }

    /// A write-only client's repository: the index is that of its local
    /// cache ([`WriterCache`]), and trees come from the cache.
    pub(super) fn for_writer(repo: Repository, cache: WriterCache, index: Index) -> Self {
        IndexedRepository {
            writer: Some(Arc::new(cache)),
            ..Self::new(repo, index)
        }
    }

    /// The local cache of a write-only key; `None` for a full key.
    pub fn writer(&self) -> Option<&Arc<WriterCache>> {
        self.writer.as_ref()
    }

    /// The in-memory index.
    pub fn index(&self) -> &Arc<Index> {
        &self.index
    }

    /// Replaces the in-memory index (after a backup added packs).
    pub fn set_index(&mut self, index: Index) {
        self.index = Arc::new(index);
        self.tree_packs = Arc::default();
    }

    /// This repository with an index that holds the snapshot tree `tree`:
    /// the index is read again when it does not. A snapshot listed after
    /// the index was read (a backup that finished in between) has its
    /// blobs in index files written before it, so a second read holds
    /// them; a tree missing even then is damage, which reading it reports.
    ///
    /// # Errors
    ///
    /// As [`Repository::load_index`], when the index is read again.
    pub async fn covering(self, tree: &Id) -> Result<Self> {
        if self.writer.is_some() || self.index.contains(BlobType::Tree, tree) {
            return Ok(self);
        }
        self.repo.load_index().await
    }

    /// The repository without its index.
    pub fn into_inner(self) -> Repository {
        self.repo
    }

    /// Whether the tree `id` can be read: it is indexed and, for a
    /// write-only client, in its cache (a parent's tree that is not is
    /// read as if the directory were new).
    pub fn has_tree(&self, id: &Id) -> bool {
        self.index.contains(BlobType::Tree, id)
            && self.writer.as_ref().is_none_or(|w| w.has_tree(id))
    }

    /// Reads, decrypts and verifies one blob.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when the blob is not indexed, [`Error::Corrupt`]
    /// when it fails verification, storage errors.
    pub async fn read_blob(&self, blob_type: BlobType, id: &Id) -> Result<Vec<u8>> {
        self.read_blob_with(blob_type, id, IdCheck::Always).await
    }

    /// [`IndexedRepository::read_blob`], with the blob's id checked as
    /// `ids` says (see [`IdCheck`]: for readers that check what they
    /// assemble end to end).
    ///
    /// # Errors
    ///
    /// As [`IndexedRepository::read_blob`].
    pub async fn read_blob_with(
        &self,
        blob_type: BlobType,
        id: &Id,
        ids: IdCheck,
    ) -> Result<Vec<u8>> {
        if let Some(w) = &self.writer {
            // A writer reads only the trees it stored, from its cache.
            return match (blob_type, w.tree(id)) {
                (BlobType::Tree, Some(data)) => Ok(data),
                _ => Err(Error::WriteOnly(format!(
                    "reading {blob_type:?} blob {}",
                    id.short()
                ))),
            };
        }
        let loc = self.index.get(blob_type, id).ok_or_else(|| {
            Error::corrupt(
                FileKind::Index,
                format!("blob {}", id.short()),
                "the blob is referenced but not in the index",
            )
        })?;
        let e = loc.entry;
        let range = u64::from(e.offset)..u64::from(e.offset) + u64::from(e.length);
        let stored = if blob_type == BlobType::Tree {
            self.cached_tree_range(&loc.pack, range).await?
        } else {
            self.sink()
                .get_range(FileKind::Pack, &loc.pack.to_hex(), range)
                .await?
        };
        let key = self.key().clone();
        let hasher = self.hasher().clone();
        if stored.len() < 256 * 1024 {
            return decode_blob_with(&key, &hasher, &e, &loc.pack, &stored, ids);
        }
        crate::util::blocking("decoder", move || {
            decode_blob_with(&key, &hasher, &e, &loc.pack, &stored, ids)
        })
        .await
    }

    /// Reads a range of a pack holding trees through the tree-pack cache.
    async fn cached_tree_range(&self, pack: &Id, range: std::ops::Range<u64>) -> Result<Bytes> {
        let cached = self
            .tree_packs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(pack);
        let whole = match cached {
            Some(data) => Some(data),
            None => match self.index.pack_size(pack) {
                Some(size) if size <= TREE_CACHE_MAX_PACK => {
                    let data = self.sink().get(FileKind::Pack, &pack.to_hex()).await?;
                    self.tree_packs
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(*pack, data.clone());
                    Some(data)
                }
                _ => None,
            },
        };
        match whole {
            Some(data) => {
                crate::sink::check_range(
                    FileKind::Pack,
                    &pack.to_hex(),
                    &range,
                    data.len() as u64,
                )?;
                Ok(data.slice(range.start as usize..range.end as usize))
            }
            None => {
                self.sink()
                    .get_range(FileKind::Pack, &pack.to_hex(), range)
                    .await
            }
        }
    }

    /// Loads a tree blob.
    ///
    /// # Errors
    ///
    /// As [`IndexedRepository::read_blob`].
    pub async fn load_tree(&self, id: &Id) -> Result<Tree> {
        let data = self.read_blob(BlobType::Tree, id).await?;
        Tree::decode(&data, id)
    }

    /// The data blob ids of a file or stream node, in order, resolving
    /// content lists.
    ///
    /// # Errors
    ///
    /// As [`IndexedRepository::read_blob`].
    pub async fn content_ids(&self, node: &Node) -> Result<Vec<Id>> {
        if node.content_lists.is_empty() {
            return Ok(node.content.clone());
        }
        let lists: Vec<Vec<Id>> = stream::iter(node.content_lists.clone())
            .map(|id| {
                let repo = self.clone();
                async move {
                    let data = repo.read_blob(BlobType::Tree, &id).await?;
                    decode_content_list(&data, &id)
                }
            })
            .buffered(8)
            .try_collect()
            .await?;
        let mut out = node.content.clone();
        out.extend(lists.into_iter().flatten());
        Ok(out)
    }
}
