//! The keys of a repository: listing, adding, removing, changing the
//! password, exporting the master key for escrow.

use chrono::Utc;
use serde::Serialize;

use super::Repository;
use crate::config::Encryption;
use crate::crypto::Secret;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::keys::{KdfParams, KeyFile};
use crate::kms::{Kms, KmsKeyRef};
use crate::sink::{FileKind, PutMode, SinkExt};

/// A summary of one key file, for `key list`.
#[derive(Debug, Clone, Serialize)]
pub struct KeyInfo {
    /// The key id (file name).
    pub id: Id,
    /// Whether this key opened the repository in this process.
    pub current: bool,
    /// Creation time.
    pub created: chrono::DateTime<Utc>,
    /// Creating host.
    pub host: String,
    /// Creating user.
    pub user: String,
    /// `password`, `no-password`, `kms`, `write-only` or `write-only kms`.
    pub kind: &'static str,
    /// The KMS key that holds it (`kms` keys only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kms: Option<KmsKeyRef>,
    /// The name it was given (`key add --name`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

impl Repository {
    /// Every key of the repository.
    ///
    /// # Errors
    ///
    /// Storage errors; [`Error::Corrupt`] for an unreadable key file.
    pub async fn keys(&self) -> Result<Vec<KeyInfo>> {
        self.require_encrypted()?;
        let mut out = Vec::new();
        for name in self.sink.list_names(FileKind::Key).await? {
            let bytes = self.sink.get(FileKind::Key, &name).await?;
            let kf = KeyFile::decode(&bytes, &name)?;
            let id: Id = name.parse()?;
            out.push(KeyInfo {
                id,
                current: Some(id) == self.key_id,
                created: kf.created,
                kind: kf.kind(),
                kms: kf.kms_key().cloned(),
                name: kf.name,
                host: kf.host,
                user: kf.user,
            });
        }
        out.sort_by_key(|k| k.created);
        Ok(out)
    }

    /// Refuses `operation`, which must delete or overwrite files, when the
    /// storage is append-only ([`crate::Sink::append_only`]), before
    /// anything changes.
    ///
    /// # Errors
    ///
    /// [`Error::PermissionDenied`] naming the operation and the option.
    pub fn require_deletes(&self, operation: &str) -> Result<()> {
        if self.key.is_write_only() {
            return Err(Error::WriteOnly(format!("`{operation}`")));
        }
        if self.sink.append_only() {
            return Err(Error::PermissionDenied(format!(
                "`{operation}` deletes or replaces files, and this client is append-only (storage option `append-only`): run it from a host with full access to the repository"
            )));
        }
        Ok(())
    }

    /// Refuses `operation` when the repository was opened with a
    /// write-only key, before anything changes.
    ///
    /// # Errors
    ///
    /// [`Error::WriteOnly`] naming the operation.
    pub fn require_full_key(&self, operation: &str) -> Result<()> {
        if self.key.is_write_only() {
            return Err(Error::WriteOnly(format!("`{operation}`")));
        }
        Ok(())
    }

    fn require_encrypted(&self) -> Result<()> {
        if self.config.encryption == Encryption::None {
            return Err(Error::Config(
                "this repository is not encrypted and has no keys".to_owned(),
            ));
        }
        Ok(())
    }

    /// The master key wrapped under `password` (Argon2id, on a blocking
    /// thread).
    async fn wrap_master_key(&self, password: &[u8], kdf: KdfParams) -> Result<KeyFile> {
        self.wrap_key(password, kdf, false).await
    }

    /// The master key, or a new write-only key when `write_only`, wrapped
    /// under `password` (Argon2id, on a blocking thread).
    async fn wrap_key(&self, password: &[u8], kdf: KdfParams, write_only: bool) -> Result<KeyFile> {
        self.require_encrypted()?;
        self.require_full_key("managing keys")?;
        let key = self.key.clone();
        let writer = if write_only {
            Some(self.key.writer_key()?)
        } else {
            None
        };
        let pw = password.to_vec();
        let repo_id = self.config.id.clone();
        crate::util::blocking("key derivation", move || {
            let secret = writer
                .as_ref()
                .map_or(Secret::Full(&key), Secret::WriteOnly);
            KeyFile::wrap_secret(secret, &pw, &repo_id, kdf)
        })
        .await
    }

    /// Adds a key for `password`; returns its id.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for unencrypted repositories; storage errors.
    pub async fn add_key(&self, password: &[u8], kdf: KdfParams) -> Result<Id> {
        let kf = self.wrap_master_key(password, kdf).await?;
        let (id, bytes) = kf.encode();
        self.sink
            .put(FileKind::Key, &id.to_hex(), bytes.into(), PutMode::Create)
            .await?;
        Ok(id)
    }

    /// Adds a key held by a KMS: the master key encrypted by `key`
    /// ([`crate::kms`]); returns its id.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for unencrypted repositories; the service's
    /// errors (nothing is written then); storage errors.
    pub async fn add_kms_key(&self, kms: &dyn Kms, key: &KmsKeyRef) -> Result<Id> {
        self.require_encrypted()?;
        self.require_full_key("managing keys")?;
        let wrapped = crate::kms::wrap(kms, key, &self.key, &self.config.id).await?;
        let (id, bytes) = KeyFile::from_kms(wrapped, &self.config.id).encode();
        self.sink
            .put(FileKind::Key, &id.to_hex(), bytes.into(), PutMode::Create)
            .await?;
        Ok(id)
    }

    /// Adds a write-only key ([`crate::crypto::WriterKey`]) under
    /// `password`, or held by the KMS key `kms` when given; returns its
    /// id; `name` is shown by `key list`. The first write-only key makes the repository format version
    /// 4 ([`crate::config::WRITE_ONLY_VERSION`]): the key file is written
    /// first, then the config.
    ///
    /// # Errors
    ///
    /// [`Error::WriteOnly`] from a write-only key; [`Error::Config`] for
    /// an unencrypted or a format version 1 repository; the service's
    /// errors (nothing is written then); storage errors.
    pub async fn add_write_only_key(
        &mut self,
        password: Option<&[u8]>,
        kdf: KdfParams,
        kms: Option<(&dyn Kms, &KmsKeyRef)>,
        name: Option<&str>,
    ) -> Result<Id> {
        self.require_encrypted()?;
        self.require_full_key("managing keys")?;
        if self.config.id_hash == crate::crypto::IdHash::HmacSha256 {
            return Err(Error::Config(
                "write-only keys need format version 2 or later; this repository is version 1 (created with `--id-hash hmac-sha256`): copy it into a new repository to use them".to_owned(),
            ));
        }
        let mut kf = match (kms, password) {
            (Some((kms, key)), _) => {
                let writer = self.key.writer_key()?;
                let wrapped =
                    crate::kms::wrap_secret(kms, key, Secret::WriteOnly(&writer), &self.config.id)
                        .await?;
                KeyFile::from_kms_secret(wrapped, &self.config.id, true)
            }
            (None, Some(password)) => self.wrap_key(password, kdf, true).await?,
            (None, None) => {
                return Err(Error::Config(
                    "a write-only key needs a password or a KMS key".to_owned(),
                ))
            }
        };
        kf.name = name.map(str::to_owned);
        let (id, bytes) = kf.encode();
        self.sink
            .put(FileKind::Key, &id.to_hex(), bytes.into(), PutMode::Create)
            .await?;
        if !self.config.write_only_keys() {
            let mut config = self.config.clone();
            config.version = crate::config::WRITE_ONLY_VERSION;
            #[allow(clippy::expect_used)]
            let json = serde_json::to_vec_pretty(&config).expect("config serializes");
            self.sink
                .put(FileKind::Config, "config", json.into(), PutMode::Overwrite)
                .await?;
            self.config = config;
        }
        Ok(id)
    }

    /// Rewraps every KMS key of the repository: each is encrypted again
    /// (under `to` when given, otherwise under its own KMS key, which
    /// picks up the key material the service rotated in), the new key file
    /// written, then the old one removed. Data is not touched. Returns the
    /// (old, new) key ids. `to` needs a repository with one KMS key.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when the repository has no KMS key; the
    /// service's errors (keys already rewrapped stay rewrapped; the one
    /// that failed keeps its old file); storage errors.
    pub async fn rotate_kms(
        &mut self,
        kms: &dyn Kms,
        to: Option<&KmsKeyRef>,
    ) -> Result<Vec<(Id, Id)>> {
        self.require_encrypted()?;
        self.require_full_key("key rotate-kms")?;
        self.require_deletes("key rotate-kms")?;
        let keys = self.keys().await?;
        let keys: Vec<KeyInfo> = keys
            .into_iter()
            .filter(|k| !k.kind.starts_with("write-only"))
            .collect();
        let held = keys.iter().filter(|k| k.kms.is_some()).count();
        if let (Some(to), 2..) = (to, held) {
            return Err(Error::Config(format!(
                "the repository has {held} KMS keys and rotating moves each to one key ({to}): add the new key with `backup key add --kms {to}`, then remove the old ones with `backup key remove`"
            )));
        }
        let mut rotated = Vec::new();
        for info in keys {
            let Some(old_key) = &info.kms else {
                continue;
            };
            let new = self.add_kms_key(kms, to.unwrap_or(old_key)).await?;
            self.sink.delete(FileKind::Key, &info.id.to_hex()).await?;
            if info.current {
                self.key_id = Some(new);
            }
            rotated.push((info.id, new));
        }
        if rotated.is_empty() {
            return Err(Error::not_found(
                "a KMS key in this repository (add one with `backup key add --kms aws:ARN`)",
            ));
        }
        Ok(rotated)
    }

    /// Removes a key. The key that opened the repository and the last key
    /// cannot be removed.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`], [`Error::Config`] for the current or last key.
    pub async fn remove_key(&self, prefix: &str) -> Result<Id> {
        self.require_encrypted()?;
        self.require_deletes("key remove")?;
        let keys = self.keys().await?;
        let matching: Vec<&KeyInfo> = keys.iter().filter(|k| k.id.has_prefix(prefix)).collect();
        let key = match matching.as_slice() {
            [] => return Err(Error::not_found(format!("key `{prefix}`"))),
            [one] => *one,
            _ => return Err(Error::Config(format!("key prefix `{prefix}` is ambiguous"))),
        };
        if key.current {
            return Err(Error::Config(
                "refusing to remove the key in use; open the repository with another key to remove this one".to_owned(),
            ));
        }
        if keys.len() == 1 {
            return Err(Error::Config("refusing to remove the last key".to_owned()));
        }
        self.sink.delete(FileKind::Key, &key.id.to_hex()).await?;
        Ok(key.id)
    }

    /// Replaces the current key with one for `new_password`: the new key is
    /// written first, then the old one removed.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when the repository was not opened with a stored
    /// key; storage errors.
    pub async fn change_password(&mut self, new_password: &[u8], kdf: KdfParams) -> Result<Id> {
        self.require_encrypted()?;
        self.require_deletes("key passwd")?;
        let old = self.key_id.ok_or_else(|| {
            Error::Config("the repository was opened with an external key file".to_owned())
        })?;
        let new = self.add_key(new_password, kdf).await?;
        self.sink.delete(FileKind::Key, &old.to_hex()).await?;
        self.key_id = Some(new);
        Ok(new)
    }

    /// The master key wrapped under `password` as a stand-alone key file,
    /// for escrow. It is not stored in the repository.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for unencrypted repositories.
    pub async fn export_key(&self, password: &[u8], kdf: KdfParams) -> Result<Vec<u8>> {
        let kf = self.wrap_master_key(password, kdf).await?;
        Ok(kf.encode().1)
    }

    /// The master key in a key file that opens without a password
    /// ([`KeyFile::plain`]): for programs that open the repository once per
    /// WAL segment. Whoever can read it can open the repository.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an unencrypted repository (it needs no key).
    pub fn export_plain_key(&self) -> Result<Vec<u8>> {
        self.require_full_key("exporting a key")?;
        if !self.key().encrypts() {
            return Err(Error::Config(
                "this repository is not encrypted: it opens without a key".to_owned(),
            ));
        }
        Ok(KeyFile::plain(self.key(), &self.config().id)?.encode().1)
    }
}
