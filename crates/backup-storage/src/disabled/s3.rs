//! Stand-in for the S3 backend when the `s3` feature is off.

use std::sync::Arc;

use backup_core::{Error, Result, Sink};

use crate::options::StorageOptions;
use crate::url::UrlCredentials;

/// Always fails: this build has no S3 support.
pub(crate) fn build(
    _bucket: &str,
    _prefix: &str,
    _credentials: Option<&UrlCredentials>,
    _options: &StorageOptions,
    location: &str,
    _deletes: Option<Arc<dyn crate::objstore::DeleteOne>>,
) -> Result<Arc<dyn Sink>> {
    Err(Error::Config(format!(
        "cannot open {location}: this build has no S3 support (enable the `s3` feature of backup-storage)"
    )))
}
