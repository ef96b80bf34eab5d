//! Repository statistics: sizes, compression and deduplication.

use std::collections::{BTreeMap, HashSet};

use serde::Serialize;

use crate::error::Result;
use crate::id::Id;
use crate::pack::BlobType;
use crate::repo::IndexedRepository;
use crate::tree::decode_content_list;
use crate::walk::walk_trees;

/// Sizes for a set of snapshots.
#[derive(Debug, Clone, Default, Serialize)]
pub struct SizeStats {
    /// Snapshots counted.
    pub snapshots: usize,
    /// Sum of the snapshots' content sizes (what restoring all would write).
    pub logical_bytes: u64,
    /// Plaintext bytes of the distinct data blobs they reference.
    pub unique_bytes: u64,
    /// Stored bytes of those blobs (compressed and encrypted).
    pub stored_bytes: u64,
    /// Distinct data blobs.
    pub blobs: usize,
}

impl SizeStats {
    /// `unique_bytes / stored_bytes`: how much compression saves.
    pub fn compression_ratio(&self) -> f64 {
        ratio(self.unique_bytes, self.stored_bytes)
    }

    /// `logical_bytes / unique_bytes`: how much deduplication saves.
    pub fn dedup_ratio(&self) -> f64 {
        ratio(self.logical_bytes, self.unique_bytes)
    }
}

fn ratio(a: u64, b: u64) -> f64 {
    if b == 0 {
        1.0
    } else {
        a as f64 / b as f64
    }
}

/// Statistics of a whole repository.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RepoStats {
    /// Every snapshot together.
    pub total: SizeStats,
    /// Bytes of all pack files (including unreferenced data and trees).
    pub repository_bytes: u64,
    /// Pack files.
    pub packs: usize,
    /// Per source (keyed by redacted source URL).
    pub sources: BTreeMap<String, SizeStats>,
}

/// Computes statistics by walking every snapshot.
///
/// # Errors
///
/// Errors listing snapshots or loading trees.
pub async fn repo_stats(repo: &IndexedRepository) -> Result<RepoStats> {
    let (snapshots, _) = repo.snapshots().await?;
    let mut out = RepoStats {
        repository_bytes: repo.index().packs().map(|(_, s)| s).sum(),
        packs: repo.index().pack_count(),
        ..RepoStats::default()
    };
    let mut by_source: BTreeMap<String, Vec<&crate::snapshot::SnapshotEntry>> = BTreeMap::new();
    for s in &snapshots {
        by_source
            .entry(s.snapshot.source.url.clone())
            .or_default()
            .push(s);
    }
    let mut all_blobs = HashSet::new();
    for (source, list) in by_source {
        let blobs = referenced_blobs(repo, list.iter().map(|s| s.snapshot.tree)).await?;
        let mut st = size_of(repo, &blobs);
        st.snapshots = list.len();
        st.logical_bytes = list.iter().map(|s| s.snapshot.stats.logical_bytes).sum();
        out.sources.insert(source, st);
        all_blobs.extend(blobs);
    }
    out.total = size_of(repo, &all_blobs);
    out.total.snapshots = snapshots.len();
    out.total.logical_bytes = snapshots
        .iter()
        .map(|s| s.snapshot.stats.logical_bytes)
        .sum();
    Ok(out)
}

fn size_of(repo: &IndexedRepository, blobs: &HashSet<Id>) -> SizeStats {
    let mut st = SizeStats {
        blobs: blobs.len(),
        ..SizeStats::default()
    };
    for id in blobs {
        if let Some(loc) = repo.index().get(BlobType::Data, id) {
            st.unique_bytes += u64::from(loc.entry.raw_length);
            st.stored_bytes += u64::from(loc.entry.length);
        }
    }
    st
}

/// The distinct data blobs referenced from the given root trees.
///
/// # Errors
///
/// Errors loading trees or content lists.
pub async fn referenced_blobs(
    repo: &IndexedRepository,
    roots: impl IntoIterator<Item = Id>,
) -> Result<HashSet<Id>> {
    let mut blobs = HashSet::new();
    let mut lists = Vec::new();
    let mut seen = HashSet::new();
    walk_trees(
        repo,
        roots,
        &mut seen,
        |_, nodes| {
            for n in nodes {
                blobs.extend(n.content.iter().copied());
                lists.extend(n.content_lists.iter().copied());
            }
            Ok(())
        },
        |_, e| Err(e),
    )
    .await?;
    for l in lists {
        let d = repo.read_blob(BlobType::Tree, &l).await?;
        blobs.extend(decode_content_list(&d, &l)?);
    }
    Ok(blobs)
}
