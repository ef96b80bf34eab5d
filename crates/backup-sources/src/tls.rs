//! The TLS crypto provider of database connections.
//!
//! The program chooses rustls' crypto provider once for the whole process
//! (the `backup` and `backupd` binaries install *ring* at start); this
//! crate never installs one itself, it uses the installed one.

use std::sync::Arc;

use backup_core::{Error, Result};
use rustls::crypto::CryptoProvider;

/// The process-wide provider.
///
/// # Errors
///
/// [`Error::Config`] when the program installed none.
pub(crate) fn provider() -> Result<Arc<CryptoProvider>> {
    CryptoProvider::get_default().cloned().ok_or_else(|| {
        Error::Config(
            "no TLS crypto provider is installed in this program: it must install one before connecting over TLS (for example rustls::crypto::ring::default_provider().install_default())".to_owned(),
        )
    })
}
