//! Page deltas in a local base backup: a relation file the parent holds
//! stored as the parent's entry (its base, taken unread) and the pages
//! that changed since (see `delta`), and the backup's delta index.

use std::fs;
use std::io::Read;
use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::PoisonError;

use backup_core::source::{Content, Item, OnReadError};
use backup_core::tree::{FsName, Node, NodeKind};
use backup_core::{Error, Result};

use super::super::delta::{self, DeltaEntry, DeltaIndex, DeltaReader, DELTA_INDEX};
use super::super::lsn::Lsn;
use super::super::remote::reusable;
use super::reader::{FileReader, ReadRules};
use super::state::LocalSource;
use crate::localfs::{node_from_meta, open_noatime};

impl LocalSource {
    /// The entries of a relation file the parent holds, as its base (the
    /// parent's entry, taken unread) and a page delta: the parent's own
    /// delta when the file is unchanged since the parent, or one read now.
    /// `None` when the file is read whole: no parent copy, a plain file
    /// unchanged since the parent (the archiver takes it), another inode,
    /// partial pages, a small file, or a previous delta against the same
    /// base that held more than a quarter of the file's size (the file
    /// becomes a new base).
    pub(super) fn delta_leaves(
        &self,
        name: &FsName,
        meta: &fs::Metadata,
        path: &Path,
        manifest_path: &[u8],
        rules: ReadRules,
    ) -> Option<(Item, Item)> {
        let parent = self.parent_relations.get(manifest_path)?;
        let key = std::str::from_utf8(manifest_path).ok()?;
        let mut disk = node_from_meta(name.clone(), NodeKind::File, meta);
        disk.size = meta.len();
        let old = match &parent.delta {
            Some(_) => Some(self.parent_deltas.files.get(key)?),
            None => None,
        };
        let preset = |node: &Node| Item::Leaf {
            node: node.clone(),
            content: None,
            on_error: OnReadError::Fail,
        };
        let block = u64::from(self.cluster.block_size);
        if let (Some(d), Some(e)) = (&parent.delta, old) {
            if reusable(self.reuse_before_ns, &disk, &e.listed(name)) {
                // Unchanged since the parent: base and delta as they are
                // (the manifest takes the parent's checksum).
                drop(self.track(meta, path, manifest_path.to_vec()));
                self.shared
                    .delta_pages
                    .fetch_add(e.pages, Ordering::Relaxed);
                self.shared
                    .deltas
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((key.to_owned(), e.clone()));
                return Some((preset(&parent.base), preset(d)));
            }
            if e.stored(block) * 4 > e.size {
                return None;
            }
        } else if reusable(self.reuse_before_ns, &disk, &parent.base) {
            return None;
        }
        let base = &parent.base;
        let (repo, rt) = self.bases.clone()?;
        if disk.inode.is_none()
            || disk.inode != base.inode
            || disk.size % block != 0
            || base.size % block != 0
            || disk.size / block < delta::MIN_PAGES
        {
            return None;
        }
        let base_lsn = match old {
            Some(e) => Lsn::parse(&e.base_lsn).ok()?,
            None => self.parent_start,
        };
        let mut delta_node = Node::new(delta::delta_name(name), NodeKind::File);
        delta_node.mode = Some(0o600);
        let tracked = self.track(meta, path, manifest_path.to_vec());
        let start_lsn = self.start_lsn;
        let shared = self.shared.clone();
        let entry = DeltaEntry {
            base_lsn: base_lsn.to_string(),
            base_size: base.size,
            size: disk.size,
            mode: disk.mode,
            mtime_ns: disk.mtime_ns,
            ctime_ns: disk.ctime_ns,
            inode: disk.inode,
            pages: 0,
            bytes: None,
        };
        let (path, key, base_node) = (path.to_owned(), key.to_owned(), base.clone());
        let block_size = self.cluster.block_size;
        let open = move || -> std::io::Result<Box<dyn Read + Send>> {
            let size = entry.size;
            let base_pages = delta::RepoBase::open(repo, rt, &base_node).map_err(|e| {
                std::io::Error::other(format!("reading the base of a page delta: {e}"))
            })?;
            let recheck = open_noatime(&path).ok();
            let file = FileReader::open(tracked, path, rules, start_lsn, block_size as usize)?;
            let on_end = Box::new(move |pages: u64, bytes: u64| {
                shared.delta_pages.fetch_add(pages, Ordering::Relaxed);
                shared
                    .deltas
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .push((
                        key,
                        DeltaEntry {
                            pages,
                            bytes: Some(bytes),
                            ..entry
                        },
                    ));
            });
            Ok(Box::new(DeltaReader::new(
                file,
                recheck,
                Box::new(base_pages),
                block_size,
                base_lsn,
                base_node.size,
                size,
                on_end,
            )))
        };
        Some((
            preset(base),
            Item::Leaf {
                node: delta_node,
                content: Some(Content::Blocking(Box::new(open))),
                on_error: OnReadError::Fail,
            },
        ))
    }

    /// `page_deltas.json`, when the backup has deltas.
    pub(super) fn delta_index_leaf(&mut self) -> Result<Option<Item>> {
        let files: std::collections::BTreeMap<String, DeltaEntry> = std::mem::take(
            &mut *self
                .shared
                .deltas
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        )
        .into_iter()
        .collect();
        if files.is_empty() {
            return Ok(None);
        }
        self.delta_files = files.len() as u64;
        let index = DeltaIndex {
            version: 1,
            block_size: self.cluster.block_size,
            files,
        };
        let text = serde_json::to_vec(&index)
            .map_err(|e| Error::source_caused("encoding the page delta index", e))?;
        let mut node = Node::new(DELTA_INDEX, NodeKind::File);
        node.mode = Some(0o600);
        node.size = text.len() as u64;
        Ok(Some(Item::Leaf {
            node,
            content: Some(Content::Blocking(Box::new(move || {
                Ok(Box::new(std::io::Cursor::new(text)) as Box<dyn Read + Send>)
            }))),
            on_error: OnReadError::Fail,
        }))
    }
}
