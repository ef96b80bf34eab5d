//! The repository `config` file.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::crypto::{IdHash, MasterKey};
use crate::error::{Error, Result};

/// The newest repository format version this build reads and writes.
/// Version 4 is version 3 plus write-only keys: a repository becomes
/// version 4 when its first write-only key is added
/// ([`WRITE_ONLY_VERSION`]), since older builds cannot open what such keys
/// seal. New repositories are version 3. Version 3 is version 2 plus the node fields of a
/// system backup (hard links, extended attributes and ACLs, sparse files,
/// special files, inode flags, owner names); version 2 names blobs with
/// keyed BLAKE3 ([`IdHash::Blake3`], the config's `id_hash`); version 1,
/// without that field, with HMAC-SHA-256. All three are read and written.
pub const FORMAT_VERSION: u32 = 4;

/// The format version of a repository with write-only keys.
pub const WRITE_ONLY_VERSION: u32 = 4;

/// Contents of the plaintext `config` file: what a reader needs before it
/// has a key, and the parameters every writer must use.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RepoConfig {
    /// Format version; readers refuse versions newer than [`FORMAT_VERSION`].
    pub version: u32,
    /// Random repository id (64 hex digits), repeated in every key file.
    pub id: String,
    /// When `init` ran.
    pub created: DateTime<Utc>,
    /// How objects are sealed.
    pub encryption: Encryption,
    /// How blobs are compressed.
    pub compression: CompressionParams,
    /// Content-defined chunking parameters.
    pub chunker: ChunkerParams,
    /// Target size of a pack file in bytes.
    pub pack_size: u32,
    /// The keyed hash of blob ids: `blake3` in version 2; absent in version
    /// 1, whose ids are HMAC-SHA-256.
    #[serde(
        default = "id_hash_of_version_1",
        skip_serializing_if = "is_id_hash_of_version_1"
    )]
    pub id_hash: IdHash,
    /// Only in unencrypted repositories: the master key (its blob-id key and
    /// chunker seed), since there are no key files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub insecure_master_key: Option<MasterKey>,
}

fn id_hash_of_version_1() -> IdHash {
    IdHash::HmacSha256
}

#[allow(clippy::trivially_copy_pass_by_ref)] // serde's skip_serializing_if passes a reference
fn is_id_hash_of_version_1(h: &IdHash) -> bool {
    *h == IdHash::HmacSha256
}

/// The format version a new repository whose blob ids use `hash` is
/// written with: 1 for HMAC-SHA-256 (readable by builds that know only
/// version 1), 3 for BLAKE3.
pub fn version_for(hash: IdHash) -> u32 {
    match hash {
        IdHash::HmacSha256 => 1,
        IdHash::Blake3 => 3,
    }
}

impl RepoConfig {
    /// Whether trees may hold the nodes and node fields of format version
    /// 3 ([`crate::tree::Node::version_3_features`]).
    pub fn extended_nodes(&self) -> bool {
        self.version >= 3
    }

    /// Whether the repository may have write-only keys (version 4): lock
    /// files are then sealed with the lock key ([`crate::lock`]).
    pub fn write_only_keys(&self) -> bool {
        self.version >= WRITE_ONLY_VERSION
    }
}

/// Encryption of repository objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Encryption {
    /// AES-256-GCM, master key wrapped by Argon2id-derived user keys.
    Aes256Gcm,
    /// No encryption (`--insecure-no-encryption`).
    None,
}

/// Blob compression.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CompressionParams {
    /// Always `zstd` in version 1.
    pub algorithm: CompressionAlgorithm,
    /// The zstd level writers use (1 to 19).
    pub level: i32,
}

/// Compression algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum CompressionAlgorithm {
    /// Zstandard.
    Zstd,
}

impl Default for CompressionParams {
    fn default() -> Self {
        CompressionParams {
            algorithm: CompressionAlgorithm::Zstd,
            level: 2,
        }
    }
}

/// Content-defined chunking: `FastCDC` (2020 variant, normalisation level 1)
/// with each gear table entry combined by exclusive or with the repository's
/// secret seed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ChunkerParams {
    /// Always `fastcdc-2020` in version 1.
    pub algorithm: ChunkerAlgorithm,
    /// Smallest chunk, except the last chunk of a stream.
    pub min_size: u32,
    /// Target average chunk size.
    pub avg_size: u32,
    /// Largest chunk.
    pub max_size: u32,
}

/// Chunking algorithms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkerAlgorithm {
    /// `FastCDC` as published in 2020, normalisation level 1.
    #[serde(rename = "fastcdc-2020")]
    FastCdc2020,
}

impl ChunkerParams {
    /// Parameters for an average chunk size of `avg` bytes: min is a quarter
    /// and max four times the average.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when `avg` is not a power of two between 64 KiB and
    /// 4 MiB.
    pub fn with_average(avg: u32) -> Result<Self> {
        if !avg.is_power_of_two() || !(64 * 1024..=4 * 1024 * 1024).contains(&avg) {
            return Err(Error::Config(format!(
                "average chunk size {avg} must be a power of two between 64 KiB and 4 MiB"
            )));
        }
        Ok(ChunkerParams {
            algorithm: ChunkerAlgorithm::FastCdc2020,
            min_size: avg / 4,
            avg_size: avg,
            max_size: avg * 4,
        })
    }

    fn validate(&self) -> Result<()> {
        let ok = self.min_size >= 64
            && self.min_size <= 1024 * 1024
            && self.avg_size >= 256
            && self.avg_size <= 4 * 1024 * 1024
            && self.max_size >= 1024
            && self.max_size <= 16 * 1024 * 1024
            && self.min_size <= self.avg_size
            && self.avg_size <= self.max_size
            && self.avg_size.is_power_of_two()
            && self.min_size % 2 == 0
            && self.max_size % 2 == 0;
        if ok {
            Ok(())
        } else {
            Err(Error::Config(format!(
                "invalid chunker parameters in config: {self:?}"
            )))
        }
    }
}

impl Default for ChunkerParams {
    fn default() -> Self {
        ChunkerParams {
            algorithm: ChunkerAlgorithm::FastCdc2020,
            min_size: 256 * 1024,
            avg_size: 1024 * 1024,
            max_size: 4 * 1024 * 1024,
        }
    }
}

/// Default target pack size: 16 MiB.
pub const DEFAULT_PACK_SIZE: u32 = 16 * 1024 * 1024;

impl RepoConfig {
    /// Parses a config file, checking the format version first so that a
    /// newer repository gives [`Error::UnsupportedVersion`] rather than a
    /// parse error.
    ///
    /// # Errors
    ///
    /// [`Error::UnsupportedVersion`] for newer repositories, [`Error::Corrupt`]
    /// when the file is not a valid config.
    pub fn parse(data: &[u8]) -> Result<Self> {
        let value: serde_json::Value = serde_json::from_slice(data).map_err(|e| {
            Error::corrupt(crate::FileKind::Config, "config", format!("not JSON: {e}"))
        })?;
        let version = value
            .get("version")
            .and_then(serde_json::Value::as_u64)
            .ok_or_else(|| {
                Error::corrupt(crate::FileKind::Config, "config", "no format version")
            })?;
        if version > u64::from(FORMAT_VERSION) {
            return Err(Error::UnsupportedVersion {
                found: u32::try_from(version).unwrap_or(u32::MAX),
                supported: FORMAT_VERSION,
            });
        }
        let config: RepoConfig = serde_json::from_value(value)
            .map_err(|e| Error::corrupt(crate::FileKind::Config, "config", e))?;
        let agrees = match config.id_hash {
            IdHash::HmacSha256 => version == 1,
            IdHash::Blake3 => (2..=4).contains(&version),
        };
        if !agrees {
            return Err(Error::corrupt(
                crate::FileKind::Config,
                "config",
                format!(
                    "format version {version} and blob id hash `{}` disagree (version 1 is HMAC-SHA-256, versions 2 to 4 BLAKE3)",
                    config.id_hash.name()
                ),
            ));
        }
        config.chunker.validate()?;
        if !(1..=22).contains(&config.compression.level) {
            return Err(Error::corrupt(
                crate::FileKind::Config,
                "config",
                "compression level out of range",
            ));
        }
        if (config.encryption == Encryption::None) != config.insecure_master_key.is_some() {
            return Err(Error::corrupt(
                crate::FileKind::Config,
                "config",
                "encryption mode and stored key disagree",
            ));
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn newer_version_is_refused_clearly() {
        let err = RepoConfig::parse(br#"{"version": 7, "future": true}"#).unwrap_err();
        assert!(matches!(
            err,
            Error::UnsupportedVersion {
                found: 7,
                supported: 4
            }
        ));
        assert!(err.to_string().contains("upgrade"));
    }

    #[test]
    fn chunker_sizes() {
        let p = ChunkerParams::with_average(1 << 20).unwrap();
        assert_eq!((p.min_size, p.max_size), (1 << 18, 1 << 22));
        assert!(ChunkerParams::with_average(1000).is_err());
    }
}
