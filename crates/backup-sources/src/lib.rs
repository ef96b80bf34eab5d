//! Sources and restore targets of the backup system.
//!
//! # Overview
//!
//! - [`files`]: directories and single files ([`files::FilesSource`],
//!   [`files::FilesTarget`]).
//! - `postgres` (feature `postgres`): one database, consistent and in
//!   parallel, restored selectively with parallel loads and index builds.
//! - [`open_source`] and [`open_target`] turn a URL or path into the right
//!   implementation; front-ends call only these.
//!
//! # Crate features
//!
//! - `files` (default): local files and directories.
//! - `postgres`: PostgreSQL databases ([`postgres::PostgresSource`],
//!   [`postgres::PostgresTarget`]); needs `pg_dump` at backup time.
#![deny(missing_docs)]

#[cfg(feature = "files")]
pub mod files;
#[cfg(feature = "postgres")]
pub mod postgres;
mod url_kind;

pub use url_kind::{open_source, open_target, SourceKind, SourceOptions};
