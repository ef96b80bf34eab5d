//! Signed AWS requests that `object_store` has no verbs for: S3 storage
//! classes (module `cold`) and KMS (module `kms`). Both sign with
//! `object_store`'s `SigV4` signer ([`AwsAuthorizer`]) and the credentials
//! of an `object_store` S3 client configuration (environment, web
//! identity, ECS, instance metadata), so one credential chain serves the
//! repository and its keys.

use backup_core::{Error, Result};
use bytes::Bytes;
use object_store::aws::{AwsAuthorizer, AwsCredentialProvider};
use object_store::client::{HttpRequest, HttpRequestBody};

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
