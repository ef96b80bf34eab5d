//! The TLS crypto provider of database connections.
//!
//! The program chooses rustls' crypto provider once for the whole process
//! (the `backup` and `backupd` binaries install *ring* at start). This
//! crate uses the installed one; in a program that installed none by its
//! first connection, it installs *ring* (docs/decisions/0044).

use std::sync::Arc;

use backup_core::{Error, Result};
use rustls::crypto::CryptoProvider;

/// The process-wide provider: the installed one, or *ring*, installed
/// now, when the program installed none.
///
/// # Errors
///
/// [`Error::Config`] when no provider can be had (never in practice:
/// installing fails only when another one was installed meanwhile, and
/// that one is used).
pub(crate) fn provider() -> Result<Arc<CryptoProvider>> {
    if let Some(p) = CryptoProvider::get_default() {
        return Ok(Arc::clone(p));
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    CryptoProvider::get_default().cloned().ok_or_else(|| {
        Error::Config("no TLS crypto provider is installed and none could be".to_owned())
    })
}
