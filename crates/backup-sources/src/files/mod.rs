//! Local files and directories.
//!
//! The source walks a directory (or takes a single file) in sorted order and
//! records regular files, directories, symbolic links, FIFOs and device
//! nodes with permissions, owners (numbers and names), nanosecond
//! modification times, hard link identity, extended attributes (ACLs and
//! capabilities included), holes and inode flags. Sockets are skipped with
//! a note. The target writes into an empty or new directory and never
//! overwrites anything; it links hard-linked names, keeps holes and sets
//! inode flags last.

mod compare;
mod listing;
mod meta;
mod source;
mod target;
mod writer;

pub use compare::{compare_restored, compare_selected, CompareReport};
pub use meta::RestoreNotes;
pub use source::{scan_size, FilesSource};
pub use target::FilesTarget;
pub use writer::FsWriter;
