//! `backup export`: a snapshot written in a database's native dump
//! format, for offline restores with the database's own tools.
//!
//! Formats are chosen by name; [`FORMATS`] lists the ones this build
//! supports (`rdb` with the `redis` feature, `mongodump` with the
//! `mongodb` feature).

use std::path::{Path, PathBuf};

use backup_core::repo::IndexedRepository;
use backup_core::snapshot::SnapshotEntry;
use backup_core::{Error, Result};
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
    pub details: serde_json::Value,
}

/// Writes `snapshot` in `format` to `to` (which must not exist; a
/// directory format also accepts an empty directory).
///
/// # Errors
///
/// [`Error::Config`] for an unknown format (listing the supported ones) or
/// a snapshot of another kind; repository and write errors.
pub async fn export(
    repo: &IndexedRepository,
    snapshot: &SnapshotEntry,
    format: &str,
    to: &Path,
) -> Result<ExportReport> {
    let _ = (repo, snapshot, to);
    match format {
        #[cfg(feature = "redis")]
        "rdb" => crate::redis::export::export_rdb(repo, snapshot, to).await,
        #[cfg(feature = "mongodb")]
        "mongodump" => crate::mongo::export::export_mongodump(repo, snapshot, to).await,
        other => Err(Error::Config(format!(
            "unknown export format `{other}`: this build supports {}",
            if FORMATS.is_empty() {
                "none".to_owned()
            } else {
                FORMATS.join(", ")
            }
        ))),
    }
}
