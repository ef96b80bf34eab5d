//! Keys held by a key management service (KMS): the master key wrapped by
//! a key that never leaves the service, so that a repository opens with no
//! password on a host whose identity may use that key.
//!
//! A KMS key file (`kdf` `"kms"`, [`KeyFile::kms`]) stores the master key
//! JSON encrypted by the service (its `Encrypt` call) and the service's
//! name of the wrapping key. The encryption context binds the ciphertext to
//! the repository: [`context`] (`backup-repository` = the repository id) is
//! sent with every `Encrypt` and `Decrypt`, so a key file copied into
//! another repository does not open there, and the service's audit log
//! (`CloudTrail`) names the repository of each use.
//!
//! This module holds what does not depend on a provider: the [`Kms`]
//! trait, the parsed [`KmsKeyRef`] (`aws:ARN`) and the wrapping of a
//! [`MasterKey`]. The AWS client lives in `backup-storage` (`kms`), beside
//! the S3 client whose request signing and credentials it shares.
//!
//! [`KeyFile::kms`]: crate::keys::KeyFile::kms

use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};

use crate::crypto::MasterKey;
use crate::error::{Error, Result};

/// The encryption-context key that names the repository.
pub const CONTEXT_KEY: &str = "backup-repository";

/// The encryption context of the repository `repository_id`.
pub fn context(repository_id: &str) -> BTreeMap<String, String> {
    BTreeMap::from([(CONTEXT_KEY.to_owned(), repository_id.to_owned())])
}

/// A KMS key as given on the command line and stored in a key file:
/// `provider:key`, for example
/// `aws:arn:aws:kms:eu-west-1:111122223333:key/1234abcd-...`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KmsKeyRef {
    /// The service: `aws`.
    pub provider: String,
    /// The service's name of the key: for AWS a key ARN (stored keys
    /// always hold the ARN the service answered with), a key id or an
    /// `alias/...` name.
    pub key: String,
}

/// The providers this build knows how to name (not necessarily to call:
/// the AWS client needs `backup-storage`'s `s3` feature).
pub const PROVIDERS: &[&str] = &["aws"];

impl FromStr for KmsKeyRef {
    type Err = Error;

    /// Parses `aws:KEY`.
    fn from_str(s: &str) -> Result<Self> {
        let Some((provider, key)) = s.split_once(':') else {
            return Err(Error::Config(format!(
                "KMS key `{s}` must be `aws:ARN` (for example aws:arn:aws:kms:eu-west-1:111122223333:key/ID)"
            )));
        };
        if !PROVIDERS.contains(&provider) {
            return Err(Error::Config(format!(
                "unknown KMS provider `{provider}` in `{s}`; known: {}",
                PROVIDERS.join(", ")
            )));
        }
        let key = key.trim();
        if key.is_empty() || key.chars().any(char::is_whitespace) {
            return Err(Error::Config(format!("KMS key `{s}` names no key")));
        }
        Ok(KmsKeyRef {
            provider: provider.to_owned(),
            key: key.to_owned(),
        })
    }
}

impl fmt::Display for KmsKeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.provider, self.key)
    }
}

/// What a KMS returned for an `Encrypt`.
#[derive(Debug, Clone)]
pub struct Wrapped {
    /// The ciphertext (opaque; only the service opens it).
    pub ciphertext: Vec<u8>,
    /// The key that encrypted it, as the service names it (for AWS, its
    /// ARN, even when an alias was given).
    pub key: KmsKeyRef,
}

/// A key management service that encrypts and decrypts small secrets
/// under keys it holds.
///
/// Implementations retry what passes (throttling, unreachable service)
/// within a bounded time and then fail with [`Error::Transient`]; a refusal
/// (no permission, disabled or unknown key) is
/// [`Error::PermissionDenied`] or [`Error::Config`] naming the key and
/// what is missing. Neither call logs or keeps the plaintext.
#[async_trait]
pub trait Kms: Send + Sync + fmt::Debug {
    /// Encrypts `plaintext` (at most 4 KiB) under `key` with the
    /// encryption `context`.
    ///
    /// # Errors
    ///
    /// As described on the trait.
    async fn encrypt(
        &self,
        key: &KmsKeyRef,
        plaintext: &[u8],
        context: &BTreeMap<String, String>,
    ) -> Result<Wrapped>;

    /// Decrypts `ciphertext`, which `key` encrypted with `context`.
    ///
    /// # Errors
    ///
    /// As described on the trait; a ciphertext that does not open (wrong
    /// context, damaged) is [`Error::PermissionDenied`] too, as the
    /// service does not tell the two apart.
    async fn decrypt(
        &self,
        key: &KmsKeyRef,
        ciphertext: &[u8],
        context: &BTreeMap<String, String>,
    ) -> Result<Vec<u8>>;
}

/// Encrypts the master key JSON of `master` under `key` for the repository
/// `repository_id`.
///
/// # Errors
///
/// The service's errors.
pub async fn wrap(
    kms: &dyn Kms,
    key: &KmsKeyRef,
    master: &MasterKey,
    repository_id: &str,
) -> Result<Wrapped> {
    wrap_secret(kms, key, crate::crypto::Secret::Full(master), repository_id).await
}

/// Encrypts a key file's secret (the master key or a write-only key)
/// under `key`, bound to the repository.
///
/// # Errors
///
/// Those of [`crate::crypto::Secret::to_json`] and the service's.
pub async fn wrap_secret(
    kms: &dyn Kms,
    key: &KmsKeyRef,
    secret: crate::crypto::Secret<'_>,
    repository_id: &str,
) -> Result<Wrapped> {
    let plain = secret.to_json()?;
    kms.encrypt(key, &plain, &context(repository_id)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_refs_parse_and_print() {
        let k: KmsKeyRef = "aws:arn:aws:kms:eu-west-1:111122223333:key/abc"
            .parse()
            .unwrap();
        assert_eq!(k.provider, "aws");
        assert_eq!(k.key, "arn:aws:kms:eu-west-1:111122223333:key/abc");
        assert_eq!(
            k.to_string(),
            "aws:arn:aws:kms:eu-west-1:111122223333:key/abc"
        );
        for bad in [
            "arn:aws:kms",
            "gcp:projects/x",
            "aws:",
            "aws: a b",
            "nothing",
        ] {
            let e = bad.parse::<KmsKeyRef>().unwrap_err().to_string();
            assert!(e.contains(bad.split(':').next().unwrap()), "{bad}: {e}");
        }
    }
}
