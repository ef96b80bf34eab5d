//! Physical PostgreSQL drills in a build without PostgreSQL: making a
//! data directory says the build lacks it, and the types have no values,
//! so nothing else can be called.

// The signatures are the PostgreSQL module's, so callers build either way.
#![allow(clippy::unused_async, clippy::needless_pass_by_value)]

use backup_core::{Error, Result};

/// A data directory for a physical restore (unavailable in this build:
/// [`DataDirectory::new`] always fails, so there is none).
#[derive(Debug)]
pub enum DataDirectory {}

/// A server on a restored data directory (unavailable in this build).
#[derive(Debug)]
pub enum StartedServer {}

impl DataDirectory {
    /// Always fails in this build.
    ///
    /// # Errors
    ///
    /// Always: the build lacks PostgreSQL.
    pub fn new(_path: std::path::PathBuf) -> Result<Self> {
        Err(Error::Config(
            "physical PostgreSQL drills are not supported by this build of backup (it was built without the postgres cargo feature)".to_owned(),
        ))
    }

    /// The restore target.
    pub fn target(&self) -> &dyn backup_core::target::Target {
        match *self {}
    }

    /// Never called in this build.
    ///
    /// # Errors
    ///
    /// None.
    pub async fn verify_files(
        &self,
        _snapshot: &backup_core::reader::SnapshotReader,
    ) -> Result<Vec<String>> {
        match *self {}
    }

    /// Never called in this build.
    ///
    /// # Errors
    ///
    /// None.
    pub async fn start(
        &self,
        _port: u16,
        _work_parent: Option<&std::path::Path>,
    ) -> Result<StartedServer> {
        match *self {}
    }
}

impl StartedServer {
    /// Never called in this build.
    pub async fn stop(self) -> Option<String> {
        match self {}
    }
}

/// Nothing can be left over in this build.
///
/// # Errors
///
/// None.
pub async fn stop_leftover_server(_data_dir: &std::path::Path) -> Result<bool> {
    Ok(false)
}
