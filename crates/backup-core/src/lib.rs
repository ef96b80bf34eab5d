//! The engine of the backup system: repository format, backup and restore
//! pipeline, and the traits that sources, targets and storage implement.
//!
//! # Overview
//!
//! - [`repo::Repository`] opens or creates a repository on any [`Sink`];
//!   [`repo::Repository::load_index`] gives the [`repo::IndexedRepository`]
//!   that backups and restores run on.
//! - [`archiver::backup`] reads a [`source::Source`] and writes a snapshot:
//!   content-defined chunks, deduplicated by keyed hash, compressed with zstd
//!   and sealed with AES-256-GCM, in packs uploaded several at once.
//! - [`restorer::restore_tree`] feeds a snapshot to a [`restorer::TreeWriter`]
//!   in order, fetching ahead in parallel and verifying every blob;
//!   [`target::Target`] is the interface front-ends call.
//! - [`verify::verify`] checks structure and, optionally, content;
//!   [`stats::repo_stats`] reports sizes and ratios; [`lock`] holds leases.
//! - The on-disk format is specified in `docs/REPOSITORY_FORMAT.md`.
//!
//! This crate has no storage client, database driver or command-line
//! parser; `backup-storage`, `backup-sources` and the binaries provide them.
//!
//! # Example
//!
//! ```
//! use std::sync::Arc;
//! use backup_core::keys::KdfParams;
//! use backup_core::repo::{InitOptions, Repository};
//! use backup_core::{MemorySink, Sink};
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> backup_core::Result<()> {
//! let sink: Arc<dyn Sink> = Arc::new(MemorySink::new());
//! let opts = InitOptions { kdf: KdfParams::insecure_fast(), ..InitOptions::default() };
//! Repository::init(sink.clone(), Some(b"secret"), &opts).await?;
//!
//! // Later: open with the password and load the index.
//! let repo = Repository::open(sink, Some(b"secret")).await?.load_index().await?;
//! let (snapshots, damaged) = repo.snapshots().await?;
//! assert!(snapshots.is_empty() && damaged.is_empty());
//! # Ok(())
//! # }
//! ```
//!
//! # Crate features
//!
//! None: everything here is always built.
#![deny(missing_docs)]

pub mod archiver;
pub mod audit;
pub mod capture;
pub mod chunker;
pub mod config;
pub mod copy;
pub mod crypto;
pub mod drill;
pub mod error;
pub(crate) mod file_kind;
pub mod filter;
pub(crate) mod id;
pub mod index;
pub mod keys;
pub mod kms;
pub mod lease;
pub mod lock;
pub mod pack;
pub mod progress;
pub mod prune;
pub mod reader;
pub mod redact;
pub mod repair;
pub mod repo;
pub mod restorer;
pub mod retention;
pub mod retry;
pub mod rewrite;
mod saver;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod source_url;
pub mod stats;
pub mod target;
#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod test_support;
pub mod tree;
pub mod util;
pub mod verify;
pub(crate) mod walk;

pub use error::{Error, Result};
pub use id::Id;
pub use sink::{FileKind, LockExtension, MemorySink, ObjectInfo, PutMode, Sink, SinkExt};
