//! Signed AWS requests that `object_store` has no verbs for: S3 storage
//! classes (module `cold`) and KMS (module `kms`). Both sign with
//! `object_store`'s `SigV4` signer ([`AwsAuthorizer`]) and the credentials
//! of an `object_store` S3 client configuration (environment, web
//! identity, ECS, instance metadata), so one credential chain serves the
//! repository and its keys.

use backup_core::{Error, FileKind, Result};
use bytes::Bytes;
use object_store::aws::{AmazonS3ConfigKey, AwsAuthorizer, AwsCredentialProvider};
use object_store::client::{HttpRequest, HttpRequestBody};

use crate::options::StorageOptions;
use crate::url::UrlCredentials;

/// An answer: status, headers, body.
pub(crate) type Answer = (http::StatusCode, http::HeaderMap, Bytes);

/// Sends signed requests for one AWS service in one region.
pub(crate) struct Signer {
    client: reqwest::Client,
    credentials: AwsCredentialProvider,
    service: &'static str,
    region: String,
    /// What the requests reach, for messages (no credentials).
    location: String,
}

impl std::fmt::Debug for Signer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Signer")
            .field("service", &self.service)
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

impl Signer {
    /// A signer for `service` in `region` with `credentials`, sending
    /// through `client`.
    pub(crate) fn new(
        client: reqwest::Client,
        credentials: AwsCredentialProvider,
        service: &'static str,
        region: &str,
        location: &str,
    ) -> Self {
        Signer {
            client,
            credentials,
            service,
            region: region.to_owned(),
            location: location.to_owned(),
        }
    }

    /// Signs and sends one request to `url`; `what` names it in errors.
    /// A transport failure is [`Error::Transient`]; any HTTP status is
    /// returned for the caller to judge.
    pub(crate) async fn send(
        &self,
        method: http::Method,
        url: &str,
        headers: &[(&str, String)],
        body: Bytes,
        what: &str,
    ) -> Result<Answer> {
        let mut builder = http::Request::builder().method(method.clone()).uri(url);
        for (name, value) in headers {
            builder = builder.header(*name, value);
        }
        let mut request: HttpRequest = builder
            .body(HttpRequestBody::from(body.clone()))
            .map_err(|e| Error::Config(format!("bad {} request {url}: {e}", self.service)))?;
        let credential = self.credentials.get_credential().await.map_err(|e| {
            Error::PermissionDenied(format!(
                "getting AWS credentials for {} at {}: {e}",
                self.service, self.location
            ))
        })?;
        AwsAuthorizer::new(&credential, self.service, &self.region)
            .try_authorize(&mut request, None)
            .map_err(|e| {
                Error::PermissionDenied(format!(
                    "signing a {} request for {}: {e}",
                    self.service, self.location
                ))
            })?;
        let mut outgoing = self.client.request(method, url).body(body);
        for (name, value) in request.headers() {
            outgoing = outgoing.header(name.as_str(), value.as_bytes());
        }
        let transient = |e: reqwest::Error| Error::Transient {
            backend: self.service,
            message: format!(
                "{what} at {}: {}",
                self.location,
                backup_core::error::report(&e)
            ),
        };
        let response = outgoing.send().await.map_err(transient)?;
        let status = response.status();
        let mut headers_out = http::HeaderMap::new();
        for (name, value) in response.headers() {
            if let (Ok(n), Ok(v)) = (
                http::HeaderName::from_bytes(name.as_str().as_bytes()),
                http::HeaderValue::from_bytes(value.as_bytes()),
            ) {
                headers_out.insert(n, v);
            }
        }
        let body = response.bytes().await.map_err(transient)?;
        Ok((
            http::StatusCode::from_u16(status.as_u16()).unwrap_or(http::StatusCode::BAD_GATEWAY),
            headers_out,
            body,
        ))
    }
}

/// Signed S3 requests for one bucket and repository prefix.
pub(crate) struct S3Requests {
    signer: Signer,
    pub(crate) bucket: String,
    bucket_endpoint: String,
    prefix: String,
    location: String,
}

impl std::fmt::Debug for S3Requests {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("S3Requests")
            .field("location", &self.location)
            .finish_non_exhaustive()
    }
}

/// One signed `DELETE` per object.
#[async_trait::async_trait]
impl crate::objstore::DeleteOne for S3Requests {
    async fn delete_one(&self, kind: FileKind, name: &str) -> Result<()> {
        let key = self.key(kind, name)?;
        let (status, _, body) = self
            .send(http::Method::DELETE, &key, "", &[], Bytes::new())
            .await?;
        match status.as_u16() {
            200..=299 | 404 => Ok(()),
            _ => Err(self.failure("deleting", &key, status, &body)),
        }
    }
}

impl S3Requests {
    /// Requests for the repository `prefix` in `bucket`, with the client
    /// configuration the S3 sink uses.
    pub(crate) fn open(
        bucket: &str,
        prefix: &str,
        credentials: Option<&UrlCredentials>,
        options: &StorageOptions,
        location: &str,
    ) -> Result<S3Requests> {
        crate::cloud::require_tls_provider()?;
        let (builder, shown) = crate::s3::configure(bucket, credentials, options, location)?;
        let value =
            |key: AmazonS3ConfigKey| builder.get_config_value(&key).filter(|v| !v.is_empty());
        let region = value(AmazonS3ConfigKey::Region).unwrap_or_else(|| "us-east-1".to_owned());
        let endpoint =
            value(AmazonS3ConfigKey::S3Endpoint).or_else(|| value(AmazonS3ConfigKey::Endpoint));
        let virtual_hosted = value(AmazonS3ConfigKey::VirtualHostedStyleRequest)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        // As object_store computes it (AmazonS3Builder::build).
        let bucket_endpoint = match (&endpoint, virtual_hosted) {
            (Some(e), true) => e.trim_end_matches('/').to_owned(),
            (Some(e), false) => format!("{}/{bucket}", e.trim_end_matches('/')),
            (None, true) => format!("https://{bucket}.s3.{region}.amazonaws.com"),
            (None, false) => format!("https://s3.{region}.amazonaws.com/{bucket}"),
        };
        let store = builder
            .build()
            .map_err(|e| Error::Config(format!("cannot configure S3 for {shown}: {e}")))?;
        let client = reqwest::Client::builder()
            .connect_timeout(options.http.connect_timeout)
            .timeout(options.http.request_timeout)
            .build()
            .map_err(|e| Error::Config(format!("cannot build the HTTP client for {shown}: {e}")))?;
        Ok(S3Requests {
            signer: Signer::new(client, store.credentials().clone(), "s3", &region, &shown),
            bucket: bucket.to_owned(),
            bucket_endpoint,
            prefix: prefix.trim_matches('/').to_owned(),
            location: shown.clone(),
        })
    }

    /// The object key of a file, relative to the bucket.
    pub(crate) fn key(&self, kind: FileKind, name: &str) -> Result<String> {
        backup_core::sink::check_name(kind, name)?;
        let relative = kind.path(name);
        Ok(if self.prefix.is_empty() {
            relative
        } else {
            format!("{}/{relative}", self.prefix)
        })
    }

    /// Signs and sends one request about `key`; returns the status,
    /// headers and body.
    pub(crate) async fn send(
        &self,
        method: http::Method,
        key: &str,
        query: &str,
        headers: &[(&str, String)],
        body: Bytes,
    ) -> Result<Answer> {
        let mut url = format!("{}/{}", self.bucket_endpoint, encode_key(key));
        if !query.is_empty() {
            url.push('?');
            url.push_str(query);
        }
        let what = format!("{method} {key}");
        self.signer.send(method, &url, headers, body, &what).await
    }

    /// Signs and sends one request about the bucket itself (`?query`).
    pub(crate) async fn send_bucket(
        &self,
        method: http::Method,
        query: &str,
        what: &str,
    ) -> Result<Answer> {
        let url = format!("{}?{query}", self.bucket_endpoint);
        self.signer
            .send(method, &url, &[], Bytes::new(), what)
            .await
    }

    /// The error of a failed answer about `key`.
    pub(crate) fn failure(
        &self,
        what: &str,
        key: &str,
        status: http::StatusCode,
        body: &[u8],
    ) -> Error {
        let text = String::from_utf8_lossy(body);
        let code = crate::xml_tag(&text, "Code").unwrap_or_default();
        let message = format!("{what} {key} at {}: {status} {code}", self.location);
        match status.as_u16() {
            404 => Error::not_found(message),
            401 | 403 => Error::PermissionDenied(format!(
                "{message}; check the credentials and the bucket's access policy"
            )),
            429 | 500..=599 => Error::Transient {
                backend: "s3",
                message,
            },
            _ => Error::Generic {
                backend: "s3",
                source: message.into(),
            },
        }
    }
}

/// Percent-encodes an object key for a URL path, keeping `/`.
pub(crate) fn encode_key(key: &str) -> String {
    key.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}
