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
//! content is [`MAGIC`](format::MAGIC), the header fields, then per
//! changed page its block number and the byte ranges where it differs
//! from the base's page, in ascending block order (deltas of whole pages,
//! [`MAGIC_PAGES`](format::MAGIC_PAGES), are still restored);
//! `page_deltas.json` at the snapshot's top lists each
//! delta with its base position and the file's final size and metadata.
//!
//! Where it lives: the stored form, the index and a snapshot's relation
//! files (`format`); the base's pages read back from the repository
//! (`base`); a delta made while the file is read (`reader`); a delta
//! applied while the base is restored (`patcher`).

mod base;
mod format;
mod patcher;
mod reader;
#[cfg(test)]
mod tests;

pub(crate) use base::RepoBase;
pub(crate) use format::{
    delta_name, is_main_fork, relations, DeltaEntry, DeltaIndex, SnapshotRelation, DELTA_INDEX,
    DELTA_SUFFIX, MIN_PAGES,
};
pub(crate) use patcher::Patcher;
pub(crate) use reader::DeltaReader;
