//! Opening, creating and reading a repository.

mod indexed;
mod keys;
mod load;
mod writer;

pub use indexed::IndexedRepository;
pub use keys::KeyInfo;
pub use writer::WriterCache;

use std::sync::Arc;

use bytes::Bytes;
use chrono::Utc;
use futures::stream::{self, StreamExt};
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::config::{ChunkerParams, CompressionParams, Encryption, RepoConfig, FORMAT_VERSION};
use crate::crypto::{BlobHasher, IdHash, MasterKey};
use crate::error::{Error, Result};
use crate::id::Id;
use crate::keys::{KdfParams, KeyFile};
use crate::kms::{Kms, KmsKeyRef};
use crate::sink::{FileKind, PutMode, Sink, SinkExt};
use crate::snapshot::{Snapshot, SnapshotEntry, SnapshotFilter};

/// Options of `init`.
#[derive(Debug, Clone)]
pub struct InitOptions {
    /// Encrypt the repository (default). `false` is `--insecure-no-encryption`.
    pub encrypt: bool,
    /// Chunking parameters.
    pub chunker: ChunkerParams,
    /// zstd level.
    pub compression_level: i32,
    /// Target pack size in bytes.
    pub pack_size: u32,
    /// Argon2id costs of the first key.
    pub kdf: KdfParams,
    /// The keyed hash of blob ids; [`IdHash::HmacSha256`] writes a format
    /// version 1 repository, which older builds can read.
    pub id_hash: IdHash,
    /// A KMS key that wraps the master key (`init --kms`), beside or
    /// instead of the password key.
    pub kms: Option<KmsInit>,
}

/// The KMS key of [`InitOptions::kms`] and the client that reaches it.
#[derive(Debug, Clone)]
pub struct KmsInit {
    /// The service.
    pub client: Arc<dyn Kms>,
    /// The key that wraps the master key.
    pub key: KmsKeyRef,
}

impl Default for InitOptions {
    fn default() -> Self {
        InitOptions {
            encrypt: true,
            chunker: ChunkerParams::default(),
            compression_level: CompressionParams::default().level,
            pack_size: crate::config::DEFAULT_PACK_SIZE,
            kdf: KdfParams::default(),
            id_hash: IdHash::default(),
            kms: None,
        }
    }
}

/// An open repository: config read and master key unlocked.
///
/// This is the first state of the repository lifecycle; reading blobs and
/// running backups needs the index, see [`Repository::load_index`].
#[derive(Debug, Clone)]
pub struct Repository {
    sink: Arc<dyn Sink>,
    config: RepoConfig,
    key: Arc<MasterKey>,
    hasher: BlobHasher,
    key_id: Option<Id>,
}

impl std::fmt::Debug for BlobHasher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BlobHasher")
    }
}

/// The most bytes a repository metadata file (index, snapshot, key, lock,
/// capture record) may decompress to. Files are written far smaller; the
/// limit only stops a damaged or hostile file from expanding without end.
pub const METADATA_MAX: u64 = 1 << 30;

/// The decompression step of [`Repository::decode_file`]: the JSON a
/// metadata file holds, after its seal is opened.
///
/// # Errors
///
/// The data is not zstd, or decompresses to more than [`METADATA_MAX`]
/// bytes (said in the message).
pub fn inflate_metadata(opened: &[u8]) -> std::result::Result<Vec<u8>, String> {
    inflate_at_most(opened, METADATA_MAX)
}

fn inflate_at_most(opened: &[u8], most: u64) -> std::result::Result<Vec<u8>, String> {
    use std::io::Read;
    let decoder =
        zstd::stream::read::Decoder::new(opened).map_err(|e| format!("decompression: {e}"))?;
    let mut json = Vec::new();
    decoder
        .take(most + 1)
        .read_to_end(&mut json)
        .map_err(|e| format!("decompression: {e}"))?;
    if json.len() as u64 > most {
        return Err(format!(
            "decompression: more than {most} bytes, the most a metadata file may hold"
        ));
    }
    Ok(json)
}

async fn read_config(sink: &dyn Sink) -> Result<RepoConfig> {
    match sink.get(FileKind::Config, "config").await {
        Ok(bytes) => RepoConfig::parse(&bytes),
        Err(Error::NotFound { .. }) => Err(Error::NoRepository {
            location: sink.location(),
        }),
        Err(e) => Err(e),
    }
}

impl Repository {
    /// Creates a new repository in an empty location.
    ///
    /// The key file is written before the config, so a crash leaves at most
    /// a stray key and no half-initialised repository.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] when a repository already exists there or the
    /// options are invalid; storage errors.
    pub async fn init(
        sink: Arc<dyn Sink>,
        password: Option<&[u8]>,
        opts: &InitOptions,
    ) -> Result<Self> {
        if sink.get_opt(FileKind::Config, "config").await?.is_some() {
            return Err(Error::Config(format!(
                "a repository already exists at {}",
                sink.location()
            )));
        }
        if !(1..=19).contains(&opts.compression_level) {
            return Err(Error::Config(format!(
                "compression level {} must be between 1 and 19",
                opts.compression_level
            )));
        }
        if opts.pack_size < 1024 * 1024 || opts.pack_size > 1024 * 1024 * 1024 {
            return Err(Error::Config(
                "pack size must be between 1 MiB and 1 GiB".to_owned(),
            ));
        }
        let master = MasterKey::generate(opts.encrypt);
        let repo_id = Id::random().to_hex();
        let mut config = RepoConfig {
            version: crate::config::version_for(opts.id_hash),
            id: repo_id.clone(),
            created: Utc::now(),
            encryption: if opts.encrypt {
                Encryption::Aes256Gcm
            } else {
                Encryption::None
            },
            compression: CompressionParams {
                level: opts.compression_level,
                ..CompressionParams::default()
            },
            chunker: opts.chunker,
            pack_size: opts.pack_size,
            id_hash: opts.id_hash,
            insecure_master_key: None,
        };
        let mut key_files = Vec::new();
        if opts.encrypt {
            if password.is_none() && opts.kms.is_none() {
                return Err(Error::Config(
                    "a password or a KMS key is needed to create an encrypted repository"
                        .to_owned(),
                ));
            }
            // The KMS key first: a refused or unreachable KMS stops `init`
            // before anything is written.
            if let Some(kms) = &opts.kms {
                let wrapped =
                    crate::kms::wrap(kms.client.as_ref(), &kms.key, &master, &repo_id).await?;
                key_files.push(KeyFile::from_kms(wrapped, &repo_id));
            }
            if let Some(password) = password {
                key_files.insert(0, KeyFile::wrap(&master, password, &repo_id, opts.kdf)?);
            }
        } else {
            config.insecure_master_key = Some(master.clone());
        }
        let mut written = Vec::new();
        for kf in key_files {
            let (id, bytes) = kf.encode();
            if let Err(e) = sink
                .put(FileKind::Key, &id.to_hex(), bytes.into(), PutMode::Create)
                .await
            {
                for id in &written {
                    let _ = sink.delete(FileKind::Key, &Id::to_hex(id)).await;
                }
                return Err(e);
            }
            written.push(id);
        }
        let key_id = written.first().copied();
        #[allow(clippy::expect_used)]
        let bytes = serde_json::to_vec_pretty(&config).expect("config serializes");
        if let Err(e) = sink
            .put(FileKind::Config, "config", bytes.into(), PutMode::Create)
            .await
        {
            for id in &written {
                let _ = sink.delete(FileKind::Key, &id.to_hex()).await;
            }
            return Err(match e {
                Error::AlreadyExists { .. } => Error::Config(format!(
                    "a repository already exists at {}",
                    sink.location()
                )),
                e => e,
            });
        }
        Self::assemble(sink, config, master, key_id)
    }

    fn assemble(
        sink: Arc<dyn Sink>,
        config: RepoConfig,
        key: MasterKey,
        key_id: Option<Id>,
    ) -> Result<Self> {
        if key.encrypts() != (config.encryption == Encryption::Aes256Gcm) {
            return Err(Error::corrupt(
                FileKind::Config,
                "config",
                "the key's encryption flag disagrees with the config",
            ));
        }
        let hasher = BlobHasher::new(&key, config.id_hash);
        Ok(Repository {
            sink,
            config,
            key: Arc::new(key),
            hasher,
            key_id,
        })
    }

    /// Reads the config without unlocking: checks that a repository exists
    /// and that its format version is supported.
    ///
    /// # Errors
    ///
    /// [`Error::NoRepository`], [`Error::UnsupportedVersion`], storage errors.
    pub async fn read_config(sink: &dyn Sink) -> Result<RepoConfig> {
        read_config(sink).await
    }

    /// Opens a repository with a password, trying every key file.
    ///
    /// # Errors
    ///
    /// [`Error::NoRepository`], [`Error::UnsupportedVersion`],
    /// [`Error::WrongPassword`], storage errors.
    pub async fn open(sink: Arc<dyn Sink>, password: Option<&[u8]>) -> Result<Self> {
        let mut config = read_config(sink.as_ref()).await?;
        if let Some(master) = config.insecure_master_key.take() {
            config.insecure_master_key = Some(master.clone());
            return Self::assemble(sink, config, master, None);
        }
        let password = password.ok_or(Error::WrongPassword)?;
        let mut keys = stored_keys(sink.as_ref(), &config).await?;
        // Full keys first: a password that opens both kinds opens fully.
        keys.sort_by_key(|(_, kf)| kf.is_write_only());
        for (name, kf) in keys {
            if kf.kms_key().is_some() {
                continue;
            }
            let pw = password.to_vec();
            let name2 = name.clone();
            let found = tokio::task::spawn_blocking(move || kf.unwrap_key(&pw, &name2))
                .await
                .map_err(|e| Error::Generic {
                    backend: "key derivation",
                    source: Box::new(e),
                })?;
            let found = match found {
                Ok(f) => f,
                Err(e) => {
                    tracing::warn!(key = %name, error = %e, "Skipping a key file that cannot be used.");
                    continue;
                }
            };
            if let Some(master) = found {
                let id = name.parse().ok();
                return Self::assemble(sink, config, master, id);
            }
        }
        Err(Error::WrongPassword)
    }

    /// Opens a repository with its KMS keys ([`crate::kms`]): each key file
    /// held by a KMS is tried in name order, without any password.
    /// `Ok(None)` when the repository has no KMS key (or is not
    /// encrypted): open it with a password instead.
    ///
    /// # Errors
    ///
    /// When the repository has KMS keys and none opens, the first key's
    /// error (a refusal names the key and the permission; an unreachable
    /// service is [`Error::Transient`] after the client's retries);
    /// storage errors.
    pub async fn open_with_kms(sink: Arc<dyn Sink>, kms: &dyn Kms) -> Result<Option<Self>> {
        let config = read_config(sink.as_ref()).await?;
        if config.insecure_master_key.is_some() {
            return Ok(None);
        }
        let mut first_error = None;
        let mut keys = stored_keys(sink.as_ref(), &config).await?;
        keys.sort_by_key(|(_, kf)| kf.is_write_only());
        for (name, kf) in keys {
            if kf.kms_key().is_none() {
                continue;
            }
            match kf.unwrap_with_kms(kms, &name).await {
                Ok(master) => {
                    let id = name.parse().ok();
                    return Self::assemble(sink, config, master, id).map(Some);
                }
                Err(e) => {
                    tracing::warn!(key = %name, error = %e, "A KMS key did not open the repository.");
                    first_error.get_or_insert(e);
                }
            }
        }
        first_error.map_or(Ok(None), Err)
    }

    /// Opens a repository with a stand-alone key file (for example one
    /// written by [`Repository::export_key`]) instead of the stored keys.
    ///
    /// # Errors
    ///
    /// As [`Repository::open`]; [`Error::Config`] when the key belongs to
    /// another repository.
    pub async fn open_with_key_file(
        sink: Arc<dyn Sink>,
        key_file: &[u8],
        password: &[u8],
    ) -> Result<Self> {
        let config = read_config(sink.as_ref()).await?;
        let kf = KeyFile::decode(key_file, "key file")?;
        if kf.repository_id != config.id {
            return Err(Error::Config(format!(
                "the key file belongs to repository {}, not {}",
                &kf.repository_id[..8.min(kf.repository_id.len())],
                &config.id[..8]
            )));
        }
        let pw = password.to_vec();
        let master = tokio::task::spawn_blocking(move || kf.unwrap_key(&pw, "key file"))
            .await
            .map_err(|e| Error::Generic {
                backend: "key derivation",
                source: Box::new(e),
            })??
            .ok_or(Error::WrongPassword)?;
        Self::assemble(sink, config, master, None)
    }

    /// The storage backend.
    pub fn sink(&self) -> &Arc<dyn Sink> {
        &self.sink
    }

    /// The stored packs by name (hex id) with their sizes: one listing.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub async fn pack_sizes(&self) -> Result<std::collections::HashMap<String, u64>> {
        Ok(self
            .sink
            .list(FileKind::Pack)
            .await?
            .into_iter()
            .map(|o| (o.name, o.size))
            .collect())
    }

    /// The repository config.
    pub fn config(&self) -> &RepoConfig {
        &self.config
    }

    /// The master key.
    pub fn key(&self) -> &Arc<MasterKey> {
        &self.key
    }

    /// The blob-id hasher.
    pub fn hasher(&self) -> &BlobHasher {
        &self.hasher
    }

    /// The id of the key that opened the repository, if any.
    pub fn key_id(&self) -> Option<Id> {
        self.key_id
    }

    /// Encodes a metadata document: JSON, zstd, then sealed.
    pub fn encode_file<T: Serialize>(&self, value: &T) -> Result<(Id, Bytes)> {
        encode_sealed(value, |compressed| self.key.seal(compressed))
    }

    /// Whether files of `kind` are sealed with the lock key rather than
    /// the (master or session) key: lock files and audit records of a
    /// repository with write-only keys, which every key must read (to see
    /// who holds the repository, and to chain the audit trail).
    fn sealed_with_lock_key(&self, kind: FileKind) -> bool {
        matches!(kind, FileKind::Lock | FileKind::Audit)
            && self.config.write_only_keys()
            && self.key.encrypts()
    }

    /// Seals `plaintext` for a file of `kind`: with the lock key where
    /// every key must read it ([`crate::lock`], [`crate::audit`]),
    /// otherwise with the repository's key.
    pub fn seal_for(&self, kind: FileKind, plaintext: &[u8]) -> Vec<u8> {
        if self.sealed_with_lock_key(kind) {
            crate::crypto::seal_with(&self.key.lock_key(), plaintext)
        } else {
            self.key.seal(plaintext)
        }
    }

    /// Opens a file of `kind` named `name` sealed by
    /// [`Repository::seal_for`].
    ///
    /// # Errors
    ///
    /// As [`MasterKey::open`].
    pub fn open_for(&self, kind: FileKind, sealed: &[u8], name: &str) -> Result<Vec<u8>> {
        if self.sealed_with_lock_key(kind) {
            if let Some(opened) = crate::crypto::open_with(&self.key.lock_key(), sealed) {
                return Ok(opened);
            }
            // Else written before the first write-only key was added.
        }
        self.key.open(sealed, kind, name)
    }

    /// [`Repository::encode_file`] for a file of `kind`
    /// ([`Repository::seal_for`]).
    fn encode_file_of<T: Serialize>(&self, kind: FileKind, value: &T) -> Result<(Id, Bytes)> {
        encode_sealed(value, |compressed| self.seal_for(kind, compressed))
    }

    /// Writes a metadata document as a new file named by its hash.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub async fn save_file<T: Serialize + Sync>(&self, kind: FileKind, value: &T) -> Result<Id> {
        let (id, bytes) = self.encode_file_of(kind, value)?;
        self.sink
            .put_content_addressed(kind, &id.to_hex(), bytes)
            .await?;
        Ok(id)
    }

    /// Decodes a metadata document read from the file `name`, checking that
    /// the bytes hash to the name when `name` is a hash.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] when the hash, seal, compression or JSON is wrong.
    pub fn decode_file<T: DeserializeOwned>(
        &self,
        kind: FileKind,
        name: &str,
        bytes: &[u8],
    ) -> Result<T> {
        let id: Id = name
            .parse()
            .map_err(|_| Error::corrupt(kind, name, "the file name is not a 64-digit hex id"))?;
        if Id::hash(bytes) != id {
            return Err(Error::corrupt(
                kind,
                name,
                "content does not match its name (hash mismatch)",
            ));
        }
        let opened = self.open_for(kind, bytes, name)?;
        let json = inflate_metadata(&opened).map_err(|e| Error::corrupt(kind, name, e))?;
        // The version first, so that a newer file's unknown fields are
        // reported as a newer version, not as damage. A first pass that
        // keeps only the version allocates nothing; parsing into a
        // `serde_json::Value` to look at it took about 1 KB a blob of an
        // index file, ten times what the index keeps.
        let versioned: Versioned =
            serde_json::from_slice(&json).map_err(|e| Error::corrupt(kind, name, e))?;
        if let Some(v) = versioned
            .version
            .as_ref()
            .and_then(serde_json::Value::as_u64)
        {
            if v > u64::from(FORMAT_VERSION) {
                return Err(Error::UnsupportedVersion {
                    found: u32::try_from(v).unwrap_or(u32::MAX),
                    supported: FORMAT_VERSION,
                });
            }
        }
        serde_json::from_slice(&json).map_err(|e| Error::corrupt(kind, name, e))
    }

    /// Reads and decodes a metadata file.
    ///
    /// # Errors
    ///
    /// Storage errors and those of [`Repository::decode_file`].
    pub async fn load_file<T: DeserializeOwned>(&self, kind: FileKind, name: &str) -> Result<T> {
        let bytes = self.sink.get(kind, name).await?;
        self.decode_file(kind, name, &bytes)
    }

    /// Every snapshot, oldest first, plus the files that could not be read.
    ///
    /// # Errors
    ///
    /// Storage errors while listing.
    pub async fn snapshots(&self) -> Result<(Vec<SnapshotEntry>, Vec<(String, Error)>)> {
        self.require_full_key("reading snapshots")?;
        let names = self.sink.list_names(FileKind::Snapshot).await?;
        Ok(self.load_snapshots(names).await)
    }

    /// The snapshots this process may know of: every snapshot with a full
    /// key; with a write-only key, its own latest snapshot of each source
    /// from its local cache ([`WriterCache`]), which is all it can see.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub async fn known_snapshots(&self) -> Result<Vec<SnapshotEntry>> {
        if self.key.is_write_only() {
            let (cache, _) = WriterCache::load(self).await?;
            return Ok(cache.snapshots());
        }
        Ok(self.snapshots().await?.0)
    }

    /// The snapshots of the manifest files `names` (as listed), 16 read at
    /// a time, oldest first, plus the files that could not be read; files
    /// gone since they were listed are left out.
    pub async fn load_snapshots(
        &self,
        names: Vec<String>,
    ) -> (Vec<SnapshotEntry>, Vec<(String, Error)>) {
        let results: Vec<(String, Result<Snapshot>)> = stream::iter(names)
            .map(|name| async move {
                let r = self.load_file::<Snapshot>(FileKind::Snapshot, &name).await;
                (name, r)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut good = Vec::new();
        let mut bad = Vec::new();
        for (name, r) in results {
            match (r, name.parse::<Id>()) {
                (Ok(snapshot), Ok(id)) => good.push(SnapshotEntry { id, snapshot }),
                (Err(Error::NotFound { .. }), _) => {}
                (Err(e), _) | (Ok(_), Err(e)) => bad.push((name, e)),
            }
        }
        good.sort_by(|a, b| a.snapshot.time.cmp(&b.snapshot.time).then(a.id.cmp(&b.id)));
        (good, bad)
    }

    /// Resolves `latest`, a full id or a unique id prefix to a snapshot.
    /// `latest` is the newest snapshot passing `filter`.
    ///
    /// # Errors
    ///
    /// [`Error::NotFound`] when nothing matches, [`Error::Config`] when a
    /// prefix is ambiguous, [`Error::Corrupt`] when the snapshot is damaged.
    pub async fn find_snapshot(
        &self,
        spec: &str,
        filter: &SnapshotFilter,
    ) -> Result<SnapshotEntry> {
        self.require_full_key("reading snapshots")?;
        if spec == "latest" {
            let (list, _) = self.snapshots().await?;
            if let Some(found) = list.iter().rev().find(|e| filter.matches(&e.snapshot)) {
                return Ok(found.clone());
            }
            return Err(no_latest(filter, &list));
        }
        if spec.is_empty() || !spec.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(Error::Config(format!(
                "`{spec}` is not a snapshot id: use `latest`, an id or a unique id prefix"
            )));
        }
        let names = self.sink.list_names(FileKind::Snapshot).await?;
        let spec_lc = spec.to_ascii_lowercase();
        let matches: Vec<&String> = names.iter().filter(|n| n.starts_with(&spec_lc)).collect();
        match matches.as_slice() {
            [] => Err(Error::not_found(format!("snapshot `{spec}`"))),
            [one] => {
                let snapshot = self.load_file(FileKind::Snapshot, one).await?;
                Ok(SnapshotEntry {
                    id: one.parse()?,
                    snapshot,
                })
            }
            many => Err(Error::Config(format!(
                "snapshot prefix `{spec}` is ambiguous: it matches {} snapshots",
                many.len()
            ))),
        }
    }

    /// Stores a snapshot manifest (the last step of a backup).
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub async fn save_snapshot(&self, snapshot: &Snapshot) -> Result<Id> {
        self.save_file(FileKind::Snapshot, snapshot).await
    }
}

/// A metadata document as JSON, zstd, then sealed by `seal`, with the
/// hash that names it.
fn encode_sealed<T: Serialize>(
    value: &T,
    seal: impl FnOnce(&[u8]) -> Vec<u8>,
) -> Result<(Id, Bytes)> {
    let json = serde_json::to_vec(value)
        .map_err(|e| Error::Config(format!("cannot encode metadata: {e}")))?;
    let compressed = zstd::bulk::compress(&json, 3).map_err(|e| Error::io("compressing", e))?;
    let sealed = seal(&compressed);
    Ok((Id::hash(&sealed), Bytes::from(sealed)))
}

/// Only the version of a metadata file, read before the rest
/// ([`Repository::decode_file`]); everything else is skipped unallocated.
#[derive(serde::Deserialize)]
struct Versioned {
    version: Option<serde_json::Value>,
}

/// Why `latest` found nothing: for a `--source` that matches no snapshot,
/// the sources the repository does have.
fn no_latest(filter: &SnapshotFilter, all: &[SnapshotEntry]) -> Error {
    const SHOWN: usize = 12;
    let Some(source) = &filter.source else {
        return Error::not_found("snapshot `latest` (the repository has no matching snapshot)");
    };
    let mut sources: Vec<&str> = all.iter().map(|e| e.snapshot.source.url.as_str()).collect();
    sources.sort_unstable();
    sources.dedup();
    let of_source = SnapshotFilter {
        source: Some(source.clone()),
        source_exact: filter.source_exact,
        ..SnapshotFilter::default()
    };
    if all.iter().any(|e| of_source.matches(&e.snapshot)) {
        return Error::not_found(format!(
            "snapshot `latest` of {source} (it has snapshots, but none passes the other criteria)"
        ));
    }
    let listed = if sources.is_empty() {
        "the repository has no snapshots".to_owned()
    } else {
        let more = sources.len().saturating_sub(SHOWN);
        format!(
            "the repository has snapshots of {}{}",
            sources[..sources.len().min(SHOWN)].join(", "),
            if more > 0 {
                format!(" and {more} more")
            } else {
                String::new()
            }
        )
    };
    Error::not_found(format!("snapshot `latest` of {source} ({listed})"))
}

/// The key files of the repository `config` describes, in name order with
/// their names; files that do not parse (logged) or belong to another
/// repository are left out.
///
/// # Errors
///
/// [`Error::Corrupt`] when the repository has no key file at all; storage
/// errors.
async fn stored_keys(sink: &dyn Sink, config: &RepoConfig) -> Result<Vec<(String, KeyFile)>> {
    let names = sink.list_names(FileKind::Key).await?;
    if names.is_empty() {
        return Err(Error::corrupt(
            FileKind::Key,
            "keys/",
            "the repository has no key files",
        ));
    }
    let mut out = Vec::new();
    for name in names {
        let Some(bytes) = sink.get_opt(FileKind::Key, &name).await? else {
            continue;
        };
        let Ok(kf) = KeyFile::decode(&bytes, &name) else {
            tracing::warn!(key = %name, "Skipping an unreadable key file.");
            continue;
        };
        if kf.repository_id == config.id {
            out.push((name, kf));
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::inflate_at_most;

    /// A metadata file is believed only up to its limit: a small frame
    /// that expands past it (a compression bomb) is refused, not read.
    #[test]
    fn metadata_that_expands_past_the_limit_is_refused() {
        let json = vec![b' '; 10_000];
        let frame = zstd::bulk::compress(&json, 3).unwrap();
        assert!(frame.len() < 100);
        assert_eq!(inflate_at_most(&frame, 10_000).unwrap(), json);
        let err = inflate_at_most(&frame, 9_999).unwrap_err();
        assert!(err.contains("more than 9999 bytes"), "{err}");
        let err = inflate_at_most(b"not zstd", 100).unwrap_err();
        assert!(err.starts_with("decompression:"), "{err}");
    }
}
