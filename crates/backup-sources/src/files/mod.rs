//! Local files and directories.
//!
//! The source walks a directory (or takes a single file) in sorted order and
//! records regular files, directories, symbolic links, permissions, owners
//! and modification times. Special files (devices, FIFOs, sockets) are left
//! out with a warning. Hard links are stored as separate files (their
//! content is deduplicated). The target writes into an empty or new
//! directory and never overwrites anything.

mod compare;
mod source;
mod target;

pub use compare::{compare_restored, CompareReport};
pub use source::{scan_size, FilesSource};
pub use target::{FilesTarget, FsWriter};
