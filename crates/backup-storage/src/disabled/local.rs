//! Stand-in for the local backend when the `local` feature is off.

use std::path::Path;
use std::sync::Arc;

use backup_core::{Error, Result, Sink};

/// Always fails: this build has no local-disk support.
pub(crate) fn build(path: &Path) -> Result<Arc<dyn Sink>> {
    Err(Error::Config(format!(
        "cannot open {}: this build has no local-disk support (enable the `local` feature of backup-storage)",
        path.display()
    )))
}
