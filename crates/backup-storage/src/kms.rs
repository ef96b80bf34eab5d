//! The AWS KMS client behind [`backup_core::kms::Kms`]: `Encrypt` and
//! `Decrypt` of the repository's master key (`init --kms`, `key add
//! --kms`, `key rotate-kms`, and opening a repository with no password).
//!
//! Requests are JSON (`X-Amz-Target: TrentService.<Action>`) signed with
//! `SigV4` for the service `kms` in the key's region (from its ARN, else
//! `AWS_REGION`/`AWS_DEFAULT_REGION`, else `us-east-1`), with the AWS
//! credential chain of the S3 client (static keys, web identity, ECS task
//! role, instance metadata). The endpoint is `AWS_ENDPOINT_URL_KMS`, else
//! `AWS_ENDPOINT_URL`, else `https://kms.<region>.amazonaws.com`.
//!
//! Throttling, service errors and an unreachable endpoint are retried (4
//! attempts within about 2 seconds), then reported as
//! [`Error::Transient`]. Refusals are not retried: a missing permission,
//! a disabled key or one pending deletion is [`Error::PermissionDenied`]
//! naming the key and the permission; an unknown key is
//! [`Error::Config`].

use std::sync::Arc;

use backup_core::kms::{Kms, KmsKeyRef};
use backup_core::Error;

/// The KMS client of this build: AWS with the `s3` feature, otherwise
/// one whose every call says that this build has no AWS support. Nothing
/// is set up before the first call (a call fails with [`Error::Config`]
/// when the credential chain cannot be).
pub fn client() -> Arc<dyn Kms> {
    #[cfg(feature = "s3")]
    {
        Arc::new(aws::AwsKms::from_env())
    }
    #[cfg(not(feature = "s3"))]
    {
        Arc::new(Unsupported)
    }
}

/// What a refused or failed KMS answer means, from its error code.
/// `action` is `Encrypt` or `Decrypt`.
#[cfg_attr(not(feature = "s3"), allow(dead_code))]
pub(crate) fn refusal(
    key: &KmsKeyRef,
    action: &str,
    status: u16,
    code: &str,
    message: &str,
) -> Error {
    let said = if message.is_empty() {
        String::new()
    } else {
        format!(" ({message})")
    };
    match code {
        "AccessDeniedException" | "AccessDenied" => Error::PermissionDenied(format!(
            "KMS refused kms:{action} with key {key}{said}: the AWS identity of this host needs kms:{action} on that key (in the key policy or an IAM policy); a password key still opens the repository"
        )),
        "DisabledException" => Error::PermissionDenied(format!(
            "KMS key {key} is disabled{said}: enable it (`aws kms enable-key`) or open the repository with a password key"
        )),
        "KMSInvalidStateException" => Error::PermissionDenied(format!(
            "KMS key {key} cannot be used in its current state (pending deletion, or being imported){said}: cancel the deletion (`aws kms cancel-key-deletion`) or open the repository with a password key"
        )),
        "InvalidCiphertextException" | "IncorrectKeyException" => Error::PermissionDenied(format!(
            "KMS key {key} did not decrypt this key file{said}: it was made for another repository or by another key, or it is damaged"
        )),
        "NotFoundException" => Error::Config(format!(
            "KMS key {key} does not exist in its region{said}"
        )),
        "UnrecognizedClientException" | "InvalidSignatureException" | "ExpiredTokenException"
        | "InvalidClientTokenId" | "SignatureDoesNotMatch" => Error::PermissionDenied(format!(
            "KMS refused this host's AWS credentials{said}: check AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, the session token or the instance role"
        )),
        "ThrottlingException" | "KMSInternalException" | "DependencyTimeoutException"
        | "LimitExceededException" => Error::Transient {
            backend: "kms",
            message: format!("kms:{action} with key {key}: {code}{said}"),
        },
        _ if status == 429 || status >= 500 => Error::Transient {
            backend: "kms",
            message: format!("kms:{action} with key {key}: HTTP {status} {code}{said}"),
        },
        _ if status == 401 || status == 403 => Error::PermissionDenied(format!(
            "KMS refused kms:{action} with key {key}: HTTP {status} {code}{said}"
        )),
        _ => Error::Config(format!(
            "KMS refused kms:{action} with key {key}: HTTP {status} {code}{said}"
        )),
    }
}

/// The error code and message of a KMS error body: JSON (`__type`,
/// possibly `prefix#Code`, and `message` or `Message`) or, from some
/// front ends, XML (`<Code>`, `<Message>`).
#[cfg_attr(not(feature = "s3"), allow(dead_code))]
pub(crate) fn error_of(body: &[u8]) -> (String, String) {
    if let Ok(value) = serde_json::from_slice::<serde_json::Value>(body) {
        let text = |k: &str| value.get(k).and_then(|v| v.as_str()).map(str::to_owned);
        let code = text("__type").or_else(|| text("code")).unwrap_or_default();
        let code = code.rsplit('#').next().unwrap_or_default().to_owned();
        let message = text("message")
            .or_else(|| text("Message"))
            .unwrap_or_default();
        return (code, message);
    }
    let text = String::from_utf8_lossy(body);
    let tag = |t: &str| crate::xml_tag(&text, t).unwrap_or_default().to_owned();
    (tag("Code"), tag("Message"))
}

#[cfg(not(feature = "s3"))]
#[derive(Debug)]
struct Unsupported;

#[cfg(not(feature = "s3"))]
#[async_trait::async_trait]
impl Kms for Unsupported {
    async fn encrypt(
        &self,
        key: &KmsKeyRef,
        _: &[u8],
        _: &std::collections::BTreeMap<String, String>,
    ) -> backup_core::Result<backup_core::kms::Wrapped> {
        Err(unsupported(key))
    }

    async fn decrypt(
        &self,
        key: &KmsKeyRef,
        _: &[u8],
        _: &std::collections::BTreeMap<String, String>,
    ) -> backup_core::Result<Vec<u8>> {
        Err(unsupported(key))
    }
}

#[cfg(not(feature = "s3"))]
fn unsupported(key: &KmsKeyRef) -> Error {
    Error::Config(format!(
        "KMS key {key}: this build has no AWS support (feature `s3`)"
    ))
}

#[cfg(feature = "s3")]
mod aws {
    use std::collections::BTreeMap;
    use std::sync::OnceLock;
    use std::time::Duration;

    use async_trait::async_trait;
    use backup_core::kms::{Kms, KmsKeyRef, Wrapped};
    use backup_core::retry::{retry, RetryPolicy};
    use backup_core::{Error, Result};
    use base64::Engine as _;
    use bytes::Bytes;
    use object_store::aws::{AmazonS3Builder, AwsCredentialProvider};
    use serde_json::{json, Value};

    use crate::aws::Signer;

    const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

    /// AWS KMS through its JSON API. The HTTP client and the credential
    /// chain are set up at the first call, so that a repository without
    /// KMS keys never depends on the AWS environment.
    #[derive(Debug)]
    pub(super) struct AwsKms {
        setup: OnceLock<std::result::Result<Setup, String>>,
        default_region: String,
        endpoint: Option<String>,
        policy: RetryPolicy,
    }

    #[derive(Debug)]
    struct Setup {
        client: reqwest::Client,
        credentials: AwsCredentialProvider,
    }

    impl AwsKms {
        pub(super) fn from_env() -> AwsKms {
            let var = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
            let default_region = var("AWS_REGION")
                .or_else(|| var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| "us-east-1".to_owned());
            let endpoint = var("AWS_ENDPOINT_URL_KMS").or_else(|| var("AWS_ENDPOINT_URL"));
            AwsKms {
                setup: OnceLock::new(),
                default_region,
                endpoint,
                policy: RetryPolicy::with_max_attempts(4).with_backoff(
                    Duration::from_millis(250),
                    Duration::from_secs(1),
                    Duration::from_secs(10),
                ),
            }
        }

        fn setup(&self) -> Result<&Setup> {
            self.setup
                .get_or_init(|| {
                    crate::cloud::require_tls_provider().map_err(|e| e.to_string())?;
                    // Only the credential chain of this client is used; the
                    // bucket name is required by the builder and never
                    // contacted.
                    let store = AmazonS3Builder::from_env()
                        .with_bucket_name("kms-credentials")
                        .with_region(&self.default_region)
                        .build()
                        .map_err(|e| format!("cannot set up AWS credentials for KMS: {e}"))?;
                    let client = reqwest::Client::builder()
                        .connect_timeout(Duration::from_secs(5))
                        .timeout(Duration::from_secs(30))
                        .build()
                        .map_err(|e| format!("cannot build the KMS HTTP client: {e}"))?;
                    Ok(Setup {
                        client,
                        credentials: store.credentials().clone(),
                    })
                })
                .as_ref()
                .map_err(|e| Error::Config(e.clone()))
        }

        /// The region of `key`: the fourth field of an ARN, else the
        /// default.
        fn region_of(&self, key: &str) -> String {
            match key.split(':').collect::<Vec<_>>().as_slice() {
                ["arn", _, "kms", region, ..] if !region.is_empty() => (*region).to_owned(),
                _ => self.default_region.clone(),
            }
        }

        /// One action with retries of what passes.
        async fn call(&self, key: &KmsKeyRef, action: &str, request: Value) -> Result<Value> {
            let region = self.region_of(&key.key);
            let url = self
                .endpoint
                .clone()
                .unwrap_or_else(|| format!("https://kms.{region}.amazonaws.com"));
            let setup = self.setup()?;
            let signer = Signer::new(
                setup.client.clone(),
                setup.credentials.clone(),
                "kms",
                &region,
                &url,
            );
            let body = Bytes::from(request.to_string());
            let headers = [
                ("content-type", "application/x-amz-json-1.1".to_owned()),
                ("x-amz-target", format!("TrentService.{action}")),
            ];
            let what = format!("kms:{action} with key {key}");
            let outcome = retry(
                &self.policy,
                None,
                |_| async {
                    let (status, _, answer) = signer
                        .send(http::Method::POST, &url, &headers, body.clone(), &what)
                        .await?;
                    if status.is_success() {
                        return serde_json::from_slice::<Value>(&answer).map_err(|e| {
                            Error::Config(format!("KMS answered {what} with bad JSON: {e}"))
                        });
                    }
                    let (code, message) = super::error_of(&answer);
                    Err(super::refusal(
                        key,
                        action,
                        status.as_u16(),
                        &code,
                        &message,
                    ))
                },
                Error::is_retryable,
                |attempt, e, delay| {
                    tracing::warn!(attempt, error = %e, ?delay, "Retrying a KMS request.");
                },
            )
            .await;
            match outcome {
                Ok((value, _)) => Ok(value),
                Err(gave_up) if gave_up.exhausted => {
                    let last = match &gave_up.error {
                        Error::Transient { message, .. } => message.clone(),
                        other => other.to_string(),
                    };
                    Err(Error::Transient {
                        backend: "kms",
                        message: format!(
                            "{what} failed {} times in {:.1?}; the last time: {last}",
                            gave_up.attempts, gave_up.elapsed
                        ),
                    })
                }
                Err(gave_up) => Err(gave_up.error),
            }
        }
    }

    fn field(answer: &Value, name: &str, what: &str) -> Result<Vec<u8>> {
        let text = answer
            .get(name)
            .and_then(Value::as_str)
            .ok_or_else(|| Error::Config(format!("KMS answered {what} without `{name}`")))?;
        B64.decode(text)
            .map_err(|e| Error::Config(format!("KMS answered {what} with a bad `{name}`: {e}")))
    }

    #[async_trait]
    impl Kms for AwsKms {
        async fn encrypt(
            &self,
            key: &KmsKeyRef,
            plaintext: &[u8],
            context: &BTreeMap<String, String>,
        ) -> Result<Wrapped> {
            let answer = self
                .call(
                    key,
                    "Encrypt",
                    json!({
                        "KeyId": key.key,
                        "Plaintext": B64.encode(plaintext),
                        "EncryptionContext": context,
                    }),
                )
                .await?;
            let ciphertext = field(&answer, "CiphertextBlob", "kms:Encrypt")?;
            let arn = answer
                .get("KeyId")
                .and_then(Value::as_str)
                .filter(|a| !a.is_empty())
                .unwrap_or(&key.key);
            Ok(Wrapped {
                ciphertext,
                key: KmsKeyRef {
                    provider: key.provider.clone(),
                    key: arn.to_owned(),
                },
            })
        }

        async fn decrypt(
            &self,
            key: &KmsKeyRef,
            ciphertext: &[u8],
            context: &BTreeMap<String, String>,
        ) -> Result<Vec<u8>> {
            let answer = self
                .call(
                    key,
                    "Decrypt",
                    json!({
                        "KeyId": key.key,
                        "CiphertextBlob": B64.encode(ciphertext),
                        "EncryptionContext": context,
                    }),
                )
                .await?;
            field(&answer, "Plaintext", "kms:Decrypt")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> KmsKeyRef {
        "aws:arn:aws:kms:eu-west-1:111122223333:key/k1"
            .parse()
            .unwrap()
    }

    #[test]
    fn error_bodies_name_their_code() {
        assert_eq!(
            error_of(br#"{"__type":"com.amazonaws.kms#DisabledException","message":"off"}"#),
            ("DisabledException".to_owned(), "off".to_owned())
        );
        assert_eq!(
            error_of(br#"{"__type":"AccessDeniedException","Message":"no"}"#),
            ("AccessDeniedException".to_owned(), "no".to_owned())
        );
        assert_eq!(
            error_of(b"<ErrorResponse><Error><Code>AccessDenied</Code><Message>User x is not authorized</Message></Error></ErrorResponse>"),
            ("AccessDenied".to_owned(), "User x is not authorized".to_owned())
        );
    }

    /// AWS's documented answers for a disabled key and one pending
    /// deletion (moto 5.2.5 decrypts with both, so the end-to-end test
    /// cannot produce them).
    #[test]
    fn refusals_say_what_to_do_and_only_passing_failures_retry() {
        let k = key();
        let disabled = refusal(&k, "Decrypt", 400, "DisabledException", "key is disabled");
        assert!(matches!(disabled, Error::PermissionDenied(_)));
        let text = disabled.to_string();
        assert!(
            text.contains("is disabled") && text.contains("key/k1"),
            "{text}"
        );
        assert!(
            text.contains("enable-key") && text.contains("password key"),
            "{text}"
        );
        let pending = refusal(&k, "Decrypt", 400, "KMSInvalidStateException", "");
        assert!(pending.to_string().contains("cancel-key-deletion"));
        let denied = refusal(&k, "Decrypt", 400, "AccessDeniedException", "");
        assert!(denied.to_string().contains("needs kms:Decrypt on that key"));
        assert!(!denied.is_retryable() && !disabled.is_retryable());
        assert!(refusal(&k, "Encrypt", 400, "ThrottlingException", "").is_retryable());
        assert!(refusal(&k, "Encrypt", 503, "", "").is_retryable());
        assert!(matches!(
            refusal(&k, "Decrypt", 400, "NotFoundException", ""),
            Error::Config(_)
        ));
    }
}
