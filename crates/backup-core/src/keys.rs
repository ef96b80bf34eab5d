//! Key files: the master key wrapped by user keys derived with Argon2id.
//!
//! A key file is plaintext JSON holding the key-derivation parameters and
//! the master key sealed with the derived user key. Adding, removing or
//! changing a key rewrites only key files, never data.
//!
//! A key file may instead hold the master key encrypted by a key
//! management service ([`KeyFile::from_kms`], module [`crate::kms`]).
//!
//! A write-only key file (`access` `write-only`) holds a [`WriterKey`]
//! instead of the master key, wrapped the same ways.

use argon2::{Algorithm, Argon2, Params, Version};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::crypto::{self, MasterKey, Secret, WriterKey};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::kms::{Kms, KmsKeyRef, Wrapped};
use crate::sink::FileKind;

pub use crate::crypto::WRITE_ONLY;

/// Argon2id cost parameters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KdfParams {
    /// Memory in KiB.
    pub memory_kib: u32,
    /// Number of passes.
    pub iterations: u32,
    /// Degree of parallelism (lanes).
    pub parallelism: u32,
}

impl Default for KdfParams {
    /// 64 MiB, 3 passes, 1 lane: about a quarter of a second on a server core.
    fn default() -> Self {
        KdfParams {
            memory_kib: 64 * 1024,
            iterations: 3,
            parallelism: 1,
        }
    }
}

impl KdfParams {
    /// Cheap parameters for tests: 1 MiB, 1 pass. Never use for real data.
    pub fn insecure_fast() -> Self {
        KdfParams {
            memory_kib: 1024,
            iterations: 1,
            parallelism: 1,
        }
    }

    fn derive(&self, password: &[u8], salt: &[u8]) -> Result<[u8; 32]> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, Some(32))
            .map_err(|e| Error::Config(format!("invalid Argon2id parameters: {e}")))?;
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params);
        let mut out = [0u8; 32];
        argon
            .hash_password_into(password, salt, &mut out)
            .map_err(|e| Error::Config(format!("key derivation failed: {e}")))?;
        Ok(out)
    }
}

/// The stored form of one key.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyFile {
    /// Key file format version (1).
    pub version: u32,
    /// The repository this key belongs to (its config id).
    pub repository_id: String,
    /// When the key was made.
    pub created: DateTime<Utc>,
    /// Host that made it.
    pub host: String,
    /// User that made it.
    pub user: String,
    /// `argon2id` (a password key), `none` ([`KeyFile::plain`]) or `kms`
    /// ([`KeyFile::from_kms`]).
    pub kdf: String,
    /// Argon2id costs.
    pub kdf_params: KdfParams,
    /// Argon2id salt (32 random bytes).
    #[serde(with = "crypto::b64vec")]
    pub salt: Vec<u8>,
    /// The master key as JSON, sealed with the derived user key (`kdf`
    /// `argon2id`), in the clear (`none`), or the KMS ciphertext of it
    /// (`kms`).
    #[serde(with = "crypto::b64vec")]
    pub data: Vec<u8>,
    /// The KMS key that encrypted `data`, exactly when `kdf` is `kms`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kms: Option<KmsKeyRef>,
    /// [`WRITE_ONLY`] when `data` holds a [`WriterKey`] rather than the
    /// master key (format version 4); absent for a full key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access: Option<String>,
    /// A name given when the key was added (`key add --name`), shown by
    /// `key list`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl KeyFile {
    /// Wraps `master` under `password`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the parameters are invalid.
    pub fn wrap(
        master: &MasterKey,
        password: &[u8],
        repository_id: &str,
        params: KdfParams,
    ) -> Result<Self> {
        Self::wrap_secret(Secret::Full(master), password, repository_id, params)
    }

    /// Wraps `secret` under `password`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the parameters are invalid; those of
    /// [`Secret::to_json`].
    pub fn wrap_secret(
        secret: Secret<'_>,
        password: &[u8],
        repository_id: &str,
        params: KdfParams,
    ) -> Result<Self> {
        let plain = secret.to_json()?;
        let mut salt = vec![0u8; 32];
        crypto::fill_random(&mut salt);
        let user_key = params.derive(password, &salt)?;
        Ok(KeyFile {
            version: 1,
            repository_id: repository_id.to_owned(),
            created: Utc::now(),
            host: crate::util::hostname(),
            user: crate::util::username(),
            kdf: "argon2id".to_owned(),
            kdf_params: params,
            salt,
            data: crypto::seal_with(&user_key, &plain),
            kms: None,
            access: secret.access(),
            name: None,
        })
    }

    /// A key file holding the master key as a KMS encrypted it
    /// ([`crate::kms::wrap`]).
    pub fn from_kms(wrapped: Wrapped, repository_id: &str) -> Self {
        Self::from_kms_secret(wrapped, repository_id, false)
    }

    /// A key file holding the master key, or a write-only key when
    /// `write_only`, as a KMS encrypted it.
    pub fn from_kms_secret(wrapped: Wrapped, repository_id: &str, write_only: bool) -> Self {
        KeyFile {
            version: 1,
            repository_id: repository_id.to_owned(),
            created: Utc::now(),
            host: crate::util::hostname(),
            user: crate::util::username(),
            kdf: "kms".to_owned(),
            kdf_params: KdfParams::insecure_fast(),
            salt: Vec::new(),
            data: wrapped.ciphertext,
            kms: Some(wrapped.key),
            access: write_only.then(|| WRITE_ONLY.to_owned()),
            name: None,
        }
    }

    /// Whether this is a write-only key.
    pub fn is_write_only(&self) -> bool {
        self.access.is_some()
    }

    /// What the unwrapped `plain` JSON makes: the master key of a full
    /// key, or a write-only session ([`MasterKey::for_writer`]).
    fn secret_of(&self, plain: &[u8], name: &str) -> Result<MasterKey> {
        if self.is_write_only() {
            let writer: WriterKey = serde_json::from_slice(plain).map_err(|e| {
                Error::corrupt(FileKind::Key, name, format!("bad write-only key: {e}"))
            })?;
            return MasterKey::for_writer(&writer, name);
        }
        serde_json::from_slice(plain)
            .map_err(|e| Error::corrupt(FileKind::Key, name, format!("bad master key: {e}")))
    }

    /// The KMS key that holds this key file's master key, if it is a KMS
    /// key.
    pub fn kms_key(&self) -> Option<&KmsKeyRef> {
        self.kms.as_ref().filter(|_| self.kdf == "kms")
    }

    /// What kind of key this is: `password`, `no-password` or `kms`, or
    /// `write-only` / `write-only kms` for a write-only key.
    pub fn kind(&self) -> &'static str {
        match (self.is_write_only(), self.kdf.as_str()) {
            (false, "none") => "no-password",
            (false, "kms") => "kms",
            (false, _) => "password",
            (true, "kms") => "write-only kms",
            (true, _) => "write-only",
        }
    }

    /// Unwraps the master key of a KMS key file through `kms`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when this is not a KMS key file; the service's
    /// errors; [`Error::Corrupt`] when the decrypted content is not a
    /// master key.
    pub async fn unwrap_with_kms(&self, kms: &dyn Kms, name: &str) -> Result<MasterKey> {
        let key = self
            .kms_key()
            .ok_or_else(|| Error::Config(format!("key {name} is not held by a KMS")))?;
        let plain = kms
            .decrypt(key, &self.data, &crate::kms::context(&self.repository_id))
            .await?;
        self.secret_of(&plain, name)
    }

    /// A key file that holds the master key unprotected (`kdf` `none`):
    /// whoever can read the file can open the repository, with no password
    /// and no key derivation (for programs the server runs once per WAL
    /// segment, such as `archive_command`). Keep it readable only by the
    /// user that needs it.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the key cannot be encoded.
    pub fn plain(master: &MasterKey, repository_id: &str) -> Result<Self> {
        let plain = serde_json::to_vec(master)
            .map_err(|e| Error::Config(format!("cannot encode master key: {e}")))?;
        Ok(KeyFile {
            version: 1,
            repository_id: repository_id.to_owned(),
            created: Utc::now(),
            host: crate::util::hostname(),
            user: crate::util::username(),
            kdf: "none".to_owned(),
            kdf_params: KdfParams::insecure_fast(),
            salt: Vec::new(),
            data: plain,
            kms: None,
            access: None,
            name: None,
        })
    }

    /// Whether the key opens without a password ([`KeyFile::plain`]).
    pub fn is_plain(&self) -> bool {
        self.kdf == "none"
    }

    /// Unwraps the master key; `Ok(None)` when the password does not fit
    /// (always for a KMS key file: see [`KeyFile::unwrap_with_kms`]).
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the key opens but its content is malformed.
    pub fn unwrap_key(&self, password: &[u8], name: &str) -> Result<Option<MasterKey>> {
        if self.is_plain() {
            return self.secret_of(&self.data, name).map(Some);
        }
        if self.kdf == "kms" {
            return Ok(None);
        }
        if self.kdf != "argon2id" {
            return Err(Error::corrupt(
                FileKind::Key,
                name,
                format!("unknown key derivation `{}`", self.kdf),
            ));
        }
        let user_key = self.kdf_params.derive(password, &self.salt)?;
        let Some(plain) = crypto::open_with(&user_key, &self.data) else {
            return Ok(None);
        };
        self.secret_of(&plain, name).map(Some)
    }

    /// The serialized key file and its id (SHA-256 of the bytes).
    pub fn encode(&self) -> (Id, Vec<u8>) {
        #[allow(clippy::expect_used)]
        let bytes = serde_json::to_vec_pretty(self).expect("key files always serialize");
        (Id::hash(&bytes), bytes)
    }

    /// Parses a stored key file.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the bytes are not a key file.
    pub fn decode(bytes: &[u8], name: &str) -> Result<Self> {
        let kf: KeyFile =
            serde_json::from_slice(bytes).map_err(|e| Error::corrupt(FileKind::Key, name, e))?;
        if kf.version != 1 {
            return Err(Error::corrupt(
                FileKind::Key,
                name,
                format!("unsupported key file version {}", kf.version),
            ));
        }
        if kf.access.as_deref().is_some_and(|a| a != WRITE_ONLY) {
            return Err(Error::corrupt(
                FileKind::Key,
                name,
                format!(
                    "unknown key access `{}`",
                    kf.access.as_deref().unwrap_or("")
                ),
            ));
        }
        if (kf.kdf == "kms") != kf.kms.is_some() {
            return Err(Error::corrupt(
                FileKind::Key,
                name,
                "a KMS key file needs exactly `kdf` \"kms\" and a `kms` key",
            ));
        }
        Ok(kf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrap_unwrap() {
        let master = MasterKey::generate(true);
        let kf = KeyFile::wrap(&master, b"pw", "repo", KdfParams::insecure_fast()).unwrap();
        let (_, bytes) = kf.encode();
        let kf = KeyFile::decode(&bytes, "k").unwrap();
        let got = kf.unwrap_key(b"pw", "k").unwrap().unwrap();
        let h = crate::crypto::IdHash::Blake3;
        assert_eq!(got.blob_id(h, b"x"), master.blob_id(h, b"x"));
        assert!(kf.unwrap_key(b"wrong", "k").unwrap().is_none());
    }
}
