//! Helpers of the crate's unit tests.

use backup_core::keys::KdfParams;
use backup_core::repo::{InitOptions, Repository};

/// A new encrypted repository in memory, password `pw`, cheap key
/// derivation.
pub(crate) async fn memory_repo() -> Repository {
    let sink: std::sync::Arc<dyn backup_core::Sink> =
        std::sync::Arc::new(backup_core::MemorySink::new());
    let opts = InitOptions {
        kdf: KdfParams::insecure_fast(),
        ..InitOptions::default()
    };
    Repository::init(sink, Some(b"pw"), &opts).await.unwrap()
}
