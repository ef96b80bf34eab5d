//! Settings shared by the HTTP-based cloud backends (S3 and GCS).

use std::error::Error as StdError;
use std::time::Duration;

use object_store::client::{HttpError, HttpErrorKind};
use object_store::{BackoffConfig, ClientConfigKey, RetryConfig};

use crate::options::StorageOptions;

/// Makes sure rustls has a process-wide crypto provider, which the cloud
/// backends' HTTPS client uses: the program's (the `backup` and `backupd`
/// binaries install *ring*), or *ring*, installed now, when the program
/// installed none (docs/decisions/0044).
///
/// # Errors
///
/// [`backup_core::Error::Config`] when no provider can be had (never in
/// practice: installing fails only when another one was installed
/// meanwhile).
pub(crate) fn require_tls_provider() -> backup_core::Result<()> {
    if rustls::crypto::CryptoProvider::get_default().is_some() {
        return Ok(());
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    if rustls::crypto::CryptoProvider::get_default().is_some() {
        return Ok(());
    }
    Err(backup_core::Error::Config(
        "no TLS crypto provider is installed and none could be".to_owned(),
    ))
}

/// Whether `err` is an HTTP transport failure worth retrying: a refused or
/// failed connection, a dropped request, a timeout.
pub(crate) fn is_transient_http_error(err: &(dyn StdError + 'static)) -> bool {
    err.downcast_ref::<HttpError>().is_some_and(|e| {
        matches!(
            e.kind(),
            HttpErrorKind::Connect
                | HttpErrorKind::Request
                | HttpErrorKind::Timeout
                | HttpErrorKind::Interrupted
        )
    })
}

/// The HTTP client's own retries: few and short, because the retry layer
/// around the sink retries whole operations as well. Together they bound
/// how long an unreachable endpoint takes to fail.
pub(crate) fn retry_config(options: &StorageOptions) -> RetryConfig {
    RetryConfig {
        max_retries: options.http.client_retries as usize,
        retry_timeout: options.retry.max_elapsed.min(Duration::from_secs(20)),
        backoff: BackoffConfig {
            init_backoff: Duration::from_millis(100),
            max_backoff: Duration::from_secs(2),
            base: 2.0,
        },
    }
}

/// Client settings as configuration pairs, so they combine with the ones
/// the builders read from the environment instead of replacing them.
pub(crate) fn client_settings(options: &StorageOptions) -> [(ClientConfigKey, String); 2] {
    [
        (
            ClientConfigKey::ConnectTimeout,
            humantime::format_duration(options.http.connect_timeout).to_string(),
        ),
        (
            ClientConfigKey::Timeout,
            humantime::format_duration(options.http.request_timeout).to_string(),
        ),
    ]
}

/// `endpoint` without any user-info, for messages.
pub(crate) fn redact_endpoint(endpoint: &str) -> String {
    match endpoint.split_once("://") {
        Some((scheme, rest)) => {
            let authority_end = rest.find('/').unwrap_or(rest.len());
            match rest[..authority_end].rfind('@') {
                Some(at) => format!("{scheme}://{}", &rest[at + 1..]),
                None => endpoint.to_owned(),
            }
        }
        None => endpoint.to_owned(),
    }
}
