//! `backup export`: a snapshot written in a database's native dump
//! format, for offline restores with the database's own tools.
//!
//! Formats are chosen by name; [`FORMATS`] lists the ones this build
//! supports (`rdb` with the `redis` feature, `mongodump` with the
//! `mongodb` feature), and [`crate::Kind::export_formats`] which kind of
//! snapshot each one takes. This module holds the reports; the registry
//! of kinds dispatches ([`crate::kind::export`]).

use std::path::PathBuf;

use serde::Serialize;

/// Export formats of this build.
pub const FORMATS: &[&str] = &[
    #[cfg(feature = "redis")]
    "rdb",
    #[cfg(feature = "mongodb")]
    "mongodump",
];

/// What an export wrote.
#[derive(Debug, Clone, Serialize)]
pub struct ExportReport {
    /// The format.
    pub format: String,
    /// The file (or directory) written.
    pub path: PathBuf,
    /// Its size.
    pub bytes: u64,
    /// Format-specific counts.
    pub details: ExportDetails,
}

/// The format-specific part of an [`ExportReport`].
#[derive(Debug, Clone, Serialize)]
#[serde(untagged)]
#[non_exhaustive]
pub enum ExportDetails {
    /// `rdb`.
    Rdb(RdbExport),
    /// `mongodump`.
    Mongodump(MongodumpExport),
}

/// What `export --format rdb` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct RdbExport {
    /// Keys in the file.
    pub keys: u64,
    /// The RDB version of the file.
    pub rdb_version: u32,
    /// How the snapshot was taken: `rdb` (written as captured) or `keys`
    /// (assembled from `DUMP` payloads).
    pub from_mode: &'static str,
}

/// What `export --format mongodump` wrote.
#[derive(Debug, Clone, Serialize)]
pub struct MongodumpExport {
    /// Files written.
    pub files: u64,
    /// Collections (a `.bson` and a `.metadata.json` each).
    pub collections: usize,
    /// Views (a `.metadata.json` each).
    pub views: usize,
    /// Entries of `oplog.bson`.
    pub oplog_entries: u64,
    /// Users in `admin/system.users.bson`.
    pub users: usize,
    /// Roles in `admin/system.roles.bson`.
    pub roles: usize,
    /// The `mongorestore` command that loads the directory.
    pub restore_with: String,
}
