//! Stand-in for the Google Cloud Storage backend when the `gcs` feature is
//! off.

use std::sync::Arc;

use backup_core::{Error, Result, Sink};

use crate::options::StorageOptions;

/// Always fails: this build has no GCS support.
pub(crate) fn build(
    _bucket: &str,
    _prefix: &str,
    _options: &StorageOptions,
    location: &str,
) -> Result<Arc<dyn Sink>> {
    Err(Error::Config(format!(
        "cannot open {location}: this build has no Google Cloud Storage support (enable the `gcs` feature of backup-storage)"
    )))
}
