//! Integration tests of the storage backends: one binary, one module per
//! backend or feature.
#![allow(clippy::unwrap_used, clippy::expect_used)] // test helpers panic on purpose

mod gcs;
mod local;
mod memory;
mod options;
mod retry;
mod s3;
mod url;

use std::time::Duration;

use backup_storage::StorageOptions;

/// Options with small multipart settings, so that the conformance suite's
/// large object (about 12 MiB) is uploaded in three parts of the clouds'
/// minimum part size, and quick retries. (Explicit here rather than taken
/// from `backup_testkit::test_storage_options`, so these tests say what
/// they exercise.)
pub(crate) fn small_multipart(mut options: StorageOptions) -> StorageOptions {
    options.multipart.threshold = 6 * 1024 * 1024;
    options.multipart.part_size = 5 * 1024 * 1024;
    options.retry.initial_backoff = Duration::from_millis(10);
    options.retry.max_backoff = Duration::from_millis(100);
    options
}
