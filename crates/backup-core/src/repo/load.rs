//! Loading the index: every index file merged, or, for a repository whose
//! index is paged to disk, the index persisted by an earlier run and the
//! index files written since (issue 32).

use std::collections::HashSet;
use std::path::PathBuf;

use futures::stream::{self, StreamExt};

use super::writer::WriterCache;
use super::{IndexedRepository, Repository};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::index::{Index, IndexFile, Sealer};
use crate::sink::{FileKind, SinkExt};

/// What merging index files found.
struct Merged {
    index: Index,
    damaged: Vec<(String, Error)>,
    /// Every name some merged file supersedes.
    superseded: HashSet<String>,
    /// Whether a merged file turned out to be superseded by a later one.
    again: bool,
}

impl Repository {
    /// Loads every index file and builds the index.
    ///
    /// A repository whose index is paged to disk (more blobs than
    /// `BACKUP_INDEX_MEMORY_BLOBS`) keeps it in the cache directory
    /// between runs, sealed with the repository key; the next load reads
    /// only the index files written since, and falls back to every file
    /// when one it covers is gone or superseded.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] naming a damaged index file; storage errors.
    pub async fn load_index(self) -> Result<IndexedRepository> {
        if self.key.is_write_only() {
            let (cache, index) = WriterCache::load(&self).await?;
            return Ok(IndexedRepository::for_writer(self, cache, index));
        }
        let (repo, damaged) = self.load_index_from(true).await?;
        if let Some((name, e)) = damaged.into_iter().next() {
            return Err(match e {
                Error::Corrupt { .. } => e,
                e => Error::corrupt(FileKind::Index, name, e),
            });
        }
        Ok(repo)
    }

    /// Like [`Repository::load_index`] but skips damaged index files and
    /// returns them, for `verify`. Reads every index file: a persisted
    /// index is neither used nor written.
    ///
    /// # Errors
    ///
    /// Storage errors while listing.
    pub async fn load_index_lenient(self) -> Result<(IndexedRepository, Vec<(String, Error)>)> {
        self.load_index_from(false).await
    }

    async fn load_index_from(
        self,
        persisted: bool,
    ) -> Result<(IndexedRepository, Vec<(String, Error)>)> {
        self.require_full_key("reading the index")?;
        let names = self.sink.list_names(FileKind::Index).await?;
        if persisted {
            if let Some(index) = self.load_persisted(&names).await {
                return Ok((IndexedRepository::new(self, index), Vec::new()));
            }
        }
        let mut merged = self
            .merge_index(&names, &HashSet::new(), Index::new())
            .await;
        if merged.again {
            // A file was merged before the one that supersedes it was read
            // (a prune or index repair stopped between writing the new
            // index and deleting the old): merge again without them.
            let skip = merged.superseded;
            merged = self.merge_index(&names, &skip, Index::new()).await;
        }
        let mut index = merged.index;
        if persisted && merged.damaged.is_empty() && index.is_paged() {
            self.persist(&mut index, &names).await;
        } else {
            index.compact();
        }
        Ok((IndexedRepository::new(self, index), merged.damaged))
    }

    /// Where this repository's index is persisted.
    fn persisted_path(&self) -> PathBuf {
        crate::util::cache_root()
            .join("index")
            .join(format!("{}.table", self.config.id))
    }

    fn sealer(&self) -> Box<Sealer> {
        let hasher = self.hasher.clone();
        Box::new(move |b: &[u8]| hasher.hash(b))
    }

    /// The persisted index with the index files written since merged in,
    /// or `None` (the caller merges every file) when there is none, it
    /// covers a file no longer listed, a file written since supersedes
    /// one it covers, or a file written since is damaged.
    async fn load_persisted(&self, names: &[String]) -> Option<Index> {
        let path = self.persisted_path();
        let sealer = self.sealer();
        let opened = {
            let path = path.clone();
            let limit = crate::index::memory_limit();
            tokio::task::spawn_blocking(move || Index::open_persisted(&path, limit, &*sealer)).await
        };
        let (index, covered) = match opened {
            Ok(Ok(Some(found))) => found,
            Ok(Err(e)) => {
                tracing::warn!(path = %path.display(), error = %e, "cannot read the persisted index; reading every index file");
                return None;
            }
            Ok(Ok(None)) | Err(_) => return None,
        };
        let listed: HashSet<&str> = names.iter().map(String::as_str).collect();
        let covered: HashSet<String> = covered.iter().map(Id::to_hex).collect();
        if !covered.iter().all(|n| listed.contains(n.as_str())) {
            tracing::info!(
                "the persisted index covers index files since replaced; reading every index file"
            );
            return None;
        }
        let merged = self.merge_index(names, &covered, index).await;
        if !merged.damaged.is_empty()
            || merged.again
            || covered.iter().any(|n| merged.superseded.contains(n))
        {
            return None;
        }
        let mut index = merged.index;
        if index.has_grown() {
            self.persist(&mut index, names).await;
        }
        Some(index)
    }

    /// Persists `index` as covering the index files `names`; on failure
    /// (logged) it stays as it is, compacted.
    async fn persist(&self, index: &mut Index, names: &[String]) {
        let covered: Option<Vec<Id>> = names.iter().map(|n| n.parse().ok()).collect();
        let Some(covered) = covered else {
            index.compact();
            return;
        };
        let path = self.persisted_path();
        let sealer = self.sealer();
        let mut owned = std::mem::take(index);
        let result = tokio::task::spawn_blocking(move || {
            let r = owned.persist(&path, &covered, &*sealer);
            (owned, r, path)
        })
        .await;
        match result {
            Ok((mut owned, r, path)) => {
                if let Err(e) = r {
                    tracing::warn!(path = %path.display(), error = %e, "cannot persist the index; the next run reads every index file");
                    owned.compact();
                }
                *index = owned;
            }
            Err(e) => tracing::warn!(error = %e, "persisting the index failed"),
        }
    }

    /// Merges the index files `names` (sorted) into `index`, leaving out
    /// `skip`, as they arrive: in name order (the location kept for a blob
    /// stored twice does not depend on load timing), 16 read at a time and
    /// each dropped once merged, so that memory holds the index and not
    /// every file besides it.
    async fn merge_index(
        &self,
        names: &[String],
        skip: &HashSet<String>,
        mut index: Index,
    ) -> Merged {
        let todo: Vec<String> = names
            .iter()
            .filter(|n| !skip.contains(*n))
            .cloned()
            .collect();
        let mut loading = stream::iter(todo)
            .map(|name| {
                let repo = self;
                async move {
                    let r = repo.load_file::<IndexFile>(FileKind::Index, &name).await;
                    (name, r)
                }
            })
            .buffered(16);
        let mut damaged = Vec::new();
        let mut merged = Vec::new();
        let mut superseded: HashSet<String> = HashSet::new();
        while let Some((name, r)) = loading.next().await {
            match r {
                Ok(f) => {
                    superseded.extend(f.supersedes.iter().map(Id::to_hex));
                    if !superseded.contains(&name) {
                        index.add_file(&f);
                        merged.push(name);
                    }
                }
                Err(Error::NotFound { .. }) => {}
                Err(e) => damaged.push((name, e)),
            }
        }
        let again = merged.iter().any(|n| superseded.contains(n));
        Merged {
            index,
            damaged,
            superseded,
            again,
        }
    }
}
