//! Sources and restore targets of the backup system.
//!
//! # Overview
//!
//! - [`files`]: directories and single files ([`files::FilesSource`],
//!   [`files::FilesTarget`]).
//! - [`open_source`] and [`open_target`] turn a URL or path into the right
//!   implementation; front-ends call only these.
//!
//! # Crate features
//!
//! - `files` (default): local files and directories.
#![deny(missing_docs)]

#[cfg(feature = "files")]
pub mod files;
mod url_kind;

pub use url_kind::{open_source, open_target, SourceKind, SourceOptions};
