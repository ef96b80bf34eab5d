//! The Amazon S3 backend (and S3-compatible stores).

use std::sync::Arc;

use backup_core::{Error, Result, Sink};
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, S3CopyIfNotExists};
use object_store::ClientConfigKey;
use secrecy::ExposeSecret;

use crate::cloud::{client_settings, redact_endpoint, retry_config};
use crate::objstore::{DeleteOne, ObjectStoreSink};
use crate::options::{S3StorageClass, StorageOptions};
use crate::url::UrlCredentials;

/// Builds the S3 sink for `s3://bucket/prefix`.
///
/// Settings come from the `AWS_*` environment first
/// ([`AmazonS3Builder::from_env`]), then credentials in the URL, then
/// `options`. Create-only puts use `If-None-Match: *`; create-only
/// multipart uploads are published with a copy-if-not-exists implemented as
/// a conditional multipart copy ([`S3CopyIfNotExists::Multipart`]) unless
/// `AWS_COPY_IF_NOT_EXISTS` chooses another method. Deletes go through
/// `deletes` when given ([`ObjectStoreSink::with_single_deletes`]).
pub(crate) fn build(
    bucket: &str,
    prefix: &str,
    credentials: Option<&UrlCredentials>,
    options: &StorageOptions,
    location: &str,
    deletes: Option<Arc<dyn DeleteOne>>,
) -> Result<Arc<dyn Sink>> {
    options.validate_cloud_parts("S3")?;
    let (builder, shown) = configure(bucket, credentials, options, location)?;
    let store = builder
        .build()
        .map_err(|e| Error::Config(format!("cannot configure S3 for {shown}: {e}")))?;
    let sink = ObjectStoreSink::new(Arc::new(store), prefix, "s3", shown)?
        .with_multipart(options.multipart.clone())
        .with_data_storage_class(options.s3.data_storage_class.map(S3StorageClass::as_str))
        .with_single_deletes(deletes);
    Ok(Arc::new(sink))
}

/// The configured S3 client builder for `bucket` and how to show its
/// location in messages (the URL, and the endpoint when one is set).
///
/// # Errors
///
/// [`Error::Config`] for a plain-HTTP endpoint without `allow-http`.
pub(crate) fn configure(
    bucket: &str,
    credentials: Option<&UrlCredentials>,
    options: &StorageOptions,
    location: &str,
) -> Result<(AmazonS3Builder, String)> {
    crate::cloud::require_tls_provider()?;
    let s3 = &options.s3;
    // A session token from the environment belongs to the environment's
    // keys, not to keys given in the URL or the options.
    let own_keys = credentials.is_some() || s3.access_key_id.is_some();
    let mut builder = if own_keys {
        from_env_without_token()
    } else {
        AmazonS3Builder::from_env()
    }
    .with_bucket_name(bucket);
    if let Some(credentials) = credentials {
        builder = builder
            .with_access_key_id(&credentials.access_key_id)
            .with_secret_access_key(credentials.secret_access_key.expose_secret());
    }
    if let Some(endpoint) = &s3.endpoint {
        builder = builder.with_endpoint(endpoint);
    }
    if let Some(region) = &s3.region {
        builder = builder.with_region(region);
    }
    if let Some(allow) = s3.allow_http {
        builder = builder.with_allow_http(allow);
    }
    if let Some(virtual_hosted) = s3.virtual_hosted_style {
        builder = builder.with_virtual_hosted_style_request(virtual_hosted);
    }
    if let Some(id) = &s3.access_key_id {
        builder = builder.with_access_key_id(id);
    }
    if let Some(secret) = &s3.secret_access_key {
        builder = builder.with_secret_access_key(secret.expose_secret());
    }
    if let Some(token) = &s3.session_token {
        builder = builder.with_token(token.expose_secret());
    }
    if builder
        .get_config_value(&AmazonS3ConfigKey::CopyIfNotExists)
        .is_none()
    {
        builder = builder.with_copy_if_not_exists(S3CopyIfNotExists::Multipart);
    }
    for (key, value) in client_settings(options) {
        builder = builder.with_config(AmazonS3ConfigKey::Client(key), value);
    }
    builder = builder.with_retry(retry_config(options));

    let endpoint = builder
        .get_config_value(&AmazonS3ConfigKey::S3Endpoint)
        .or_else(|| builder.get_config_value(&AmazonS3ConfigKey::Endpoint))
        .filter(|e| !e.is_empty());
    let allow_http = builder
        .get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
        .is_some_and(|v| v.eq_ignore_ascii_case("true"));
    let shown = match &endpoint {
        Some(endpoint) => format!("{location} (endpoint {})", redact_endpoint(endpoint)),
        None => location.to_owned(),
    };
    if let Some(endpoint) = &endpoint {
        if endpoint.to_ascii_lowercase().starts_with("http://") && !allow_http {
            return Err(Error::Config(format!(
                "cannot open {shown}: the endpoint uses plain HTTP; allow it with AWS_ALLOW_HTTP=true or the storage option `s3.allow-http=true`"
            )));
        }
    }
    Ok((builder, shown))
}

/// [`AmazonS3Builder::from_env`] without `AWS_SESSION_TOKEN`.
fn from_env_without_token() -> AmazonS3Builder {
    let mut builder = AmazonS3Builder::new();
    for (key, value) in std::env::vars_os() {
        let (Some(key), Some(value)) = (key.to_str(), value.to_str()) else {
            continue;
        };
        if !key.starts_with("AWS_") {
            continue;
        }
        if let Ok(config_key) = key.to_ascii_lowercase().parse::<AmazonS3ConfigKey>() {
            if config_key != AmazonS3ConfigKey::Token {
                builder = builder.with_config(config_key, value);
            }
        }
    }
    builder
}
