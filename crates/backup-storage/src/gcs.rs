//! The Google Cloud Storage backend.

use std::sync::Arc;

use backup_core::{Error, Result, Sink};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use secrecy::ExposeSecret;

use crate::cloud::{client_settings, redact_endpoint, retry_config};
use crate::objstore::ObjectStoreSink;
use crate::options::{GcsStorageClass, StorageOptions};

/// Builds the GCS sink for `gs://bucket/prefix`.
///
/// Settings come from the `GOOGLE_*` environment first
/// ([`GoogleCloudStorageBuilder::from_env`]; application default
/// credentials otherwise), then `options`. Create-only puts and copies send
/// `x-goog-if-generation-match: 0`.
pub(crate) fn build(
    bucket: &str,
    prefix: &str,
    options: &StorageOptions,
    location: &str,
) -> Result<Arc<dyn Sink>> {
    options.validate_cloud_parts("Google Cloud Storage")?;
    crate::cloud::require_tls_provider()?;
    let gcs = &options.gcs;
    let mut builder = GoogleCloudStorageBuilder::from_env().with_bucket_name(bucket);
    let env_has_path = builder
        .get_config_value(&GoogleConfigKey::ServiceAccount)
        .is_some();
    let env_has_key = builder
        .get_config_value(&GoogleConfigKey::ServiceAccountKey)
        .is_some();
    if let Some(path) = &gcs.service_account_path {
        if env_has_key {
            return Err(Error::Config(format!(
                "cannot open {location}: the storage option `gcs.service-account-path` conflicts with GOOGLE_SERVICE_ACCOUNT_KEY in the environment; unset one"
            )));
        }
        builder = builder.with_service_account_path(path.to_string_lossy());
    }
    if let Some(key) = &gcs.service_account_key {
        if env_has_path {
            return Err(Error::Config(format!(
                "cannot open {location}: the storage option `gcs.service-account-key` conflicts with GOOGLE_SERVICE_ACCOUNT in the environment; unset one"
            )));
        }
        builder = builder.with_service_account_key(key.expose_secret());
    }
    if let Some(base_url) = &gcs.base_url {
        builder = builder.with_base_url(base_url);
    }
    for (key, value) in client_settings(options) {
        builder = builder.with_config(GoogleConfigKey::Client(key), value);
    }
    builder = builder.with_retry(retry_config(options));
    let shown = match builder.get_config_value(&GoogleConfigKey::BaseUrl) {
        Some(base_url) => format!("{location} (endpoint {})", redact_endpoint(&base_url)),
        None => location.to_owned(),
    };
    let store = builder.build().map_err(|e| {
        Error::Config(format!(
            "cannot configure Google Cloud Storage for {shown}: {e}"
        ))
    })?;
    let sink = ObjectStoreSink::new(Arc::new(store), prefix, "gcs", shown)?
        .with_multipart(options.multipart.clone())
        .with_data_storage_class(gcs.data_storage_class.map(GcsStorageClass::as_str));
    Ok(Arc::new(sink))
}
