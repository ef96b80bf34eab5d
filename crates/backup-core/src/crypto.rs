//! Encryption, authentication and keyed hashing.
//!
//! A sealed object is `nonce (12 bytes) || AES-256-GCM ciphertext || tag (16
//! bytes)` with no associated data. Blob ids are a keyed hash of the
//! plaintext under a key of their own (BLAKE3 in keyed mode, or HMAC-SHA-256
//! in format version 1 repositories), so ids reveal nothing about content
//! to anyone without the master key.
//!
//! A write-only key ([`WriterKey`], format version 4) seals with a random
//! key of its own session instead, which it sends to the repository's
//! X25519 key pair with HPKE (RFC 9180): such an object is
//! [`SESSION_MAGIC`] || HPKE encapsulated key (32 bytes) || the session key
//! sealed by HPKE (48 bytes) || the usual `nonce || ciphertext || tag`
//! under the session key. Only the private key, derived from the master
//! key, opens it; the session key never leaves the writing process.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use hmac::{Hmac, Mac};
use hpke::aead::AesGcm256;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem, OpModeR, OpModeS, Serializable};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use crate::error::{Error, Result};
use crate::id::Id;
use crate::sink::FileKind;

/// Bytes added by [`MasterKey::seal`]: nonce plus tag.
pub const SEAL_OVERHEAD: usize = NONCE_LEN + TAG_LEN;
const NONCE_LEN: usize = 12;
const TAG_LEN: usize = 16;

pub use crate::util::fill_random;

/// The first bytes of an object sealed by a write-only session.
pub const SESSION_MAGIC: [u8; 8] = *b"\xffbkwo\x00\x04\x01";
/// Encapsulated key plus the session key sealed by HPKE.
const SESSION_KEYS: usize = 32 + 32 + TAG_LEN;
/// Bytes a write-only session adds before the usual seal.
pub const SESSION_OVERHEAD: usize = SESSION_MAGIC.len() + SESSION_KEYS;
/// HPKE `info` of a session key: binds it to this use.
const SESSION_INFO: &[u8] = b"backup repository write-only session key";

/// The secrets of a repository: created once at `init`, stored only wrapped
/// by user keys (see [`crate::keys`]).
#[derive(Clone, Serialize, Deserialize)]
pub struct MasterKey {
    /// AES-256-GCM key for every sealed object.
    #[serde(with = "b64")]
    encryption: [u8; 32],
    /// Key of the keyed hash that names blobs ([`IdHash`]).
    #[serde(with = "b64")]
    id: [u8; 32],
    /// Seed of the content-defined chunker's gear table.
    chunker_seed: u64,
    /// Whether objects are sealed. `false` only for repositories created
    /// with `--insecure-no-encryption`, whose keys live in the config file.
    #[serde(default = "default_true")]
    encrypt: bool,
    /// Full key or write-only session; never stored (a key file holds a
    /// full key's fields, or a [`WriterKey`]).
    #[serde(skip)]
    role: Role,
}

/// What a [`MasterKey`] in memory may do.
#[derive(Clone)]
enum Role {
    /// Seals with the master key and opens everything; remembers the
    /// session keys of write-only objects it opened, by encapsulated key.
    Full {
        sessions: Arc<Mutex<HashMap<[u8; 32], [u8; 32]>>>,
    },
    /// Seals under a session key sent to the repository's public key, and
    /// opens nothing.
    Writer(Arc<Session>),
}

impl Default for Role {
    fn default() -> Self {
        Role::Full {
            sessions: Arc::default(),
        }
    }
}

/// A write-only process's session: the header of every object it seals,
/// and the keys of its locks and of its local cache.
struct Session {
    header: [u8; SESSION_OVERHEAD],
    locks: [u8; 32],
    cache: [u8; 32],
}

/// What a write-only key file holds instead of the master key: enough to
/// name blobs and chunk as the repository does, and to seal to its public
/// key, and nothing that opens what is stored.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WriterKey {
    /// The blob-id key (the master key's): ids match those of full keys,
    /// so data deduplicates across both.
    #[serde(with = "b64")]
    id: [u8; 32],
    /// The chunker seed (the master key's).
    chunker_seed: u64,
    /// The repository's X25519 public key.
    #[serde(with = "b64")]
    public: [u8; 32],
    /// The key lock files are sealed with in a repository with write-only
    /// keys, so that writers see who holds the repository.
    #[serde(with = "b64")]
    locks: [u8; 32],
    /// The key of this writer's local cache (random per write-only key).
    #[serde(with = "b64")]
    cache: [u8; 32],
}

impl std::fmt::Debug for WriterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("WriterKey")
    }
}

/// The `access` of a write-only key file ([`crate::keys::KeyFile`]).
pub const WRITE_ONLY: &str = "write-only";

/// What a key file wraps: the master key, or a write-only key.
#[derive(Debug, Clone, Copy)]
pub enum Secret<'a> {
    /// A full key: the master key.
    Full(&'a MasterKey),
    /// A write-only key.
    WriteOnly(&'a WriterKey),
}

impl Secret<'_> {
    /// The JSON a key file wraps.
    ///
    /// # Errors
    ///
    /// [`Error::WriteOnly`] for a write-only session's master key, which is
    /// never stored; [`Error::Config`] when it cannot be encoded.
    pub fn to_json(self) -> Result<Vec<u8>> {
        let json = match self {
            Secret::Full(m) if m.is_write_only() => {
                return Err(Error::WriteOnly("adding a key".to_owned()))
            }
            Secret::Full(m) => serde_json::to_vec(m),
            Secret::WriteOnly(w) => serde_json::to_vec(w),
        };
        json.map_err(|e| Error::Config(format!("cannot encode a key: {e}")))
    }

    /// The key file's `access` for it.
    pub(crate) fn access(self) -> Option<String> {
        matches!(self, Secret::WriteOnly(_)).then(|| WRITE_ONLY.to_owned())
    }
}

/// The 32-byte key `context` derives from `key` (BLAKE3's key derivation).
fn derived(context: &str, key: &[u8; 32]) -> [u8; 32] {
    blake3::derive_key(context, key)
}

fn default_true() -> bool {
    true
}

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MasterKey")
            .field("encrypt", &self.encrypt)
            .finish_non_exhaustive()
    }
}

impl MasterKey {
    /// A new random master key. `encrypt = false` makes [`MasterKey::seal`]
    /// and [`MasterKey::open`] the identity (unencrypted repositories).
    pub fn generate(encrypt: bool) -> Self {
        let mut encryption = [0u8; 32];
        let mut id = [0u8; 32];
        let mut seed = [0u8; 8];
        fill_random(&mut encryption);
        fill_random(&mut id);
        fill_random(&mut seed);
        MasterKey {
            encryption,
            id,
            chunker_seed: u64::from_le_bytes(seed) & 0x0000_ffff_ffff_ffff,
            encrypt,
            role: Role::default(),
        }
    }

    /// Whether this is a write-only session ([`MasterKey::for_writer`]).
    pub fn is_write_only(&self) -> bool {
        matches!(self.role, Role::Writer(_))
    }

    /// The repository's X25519 key pair, derived from the master key.
    fn key_pair(
        &self,
    ) -> (
        <X25519HkdfSha256 as Kem>::PrivateKey,
        <X25519HkdfSha256 as Kem>::PublicKey,
    ) {
        let ikm = derived(
            "backup repository 2026-11 write-only X25519 key pair",
            &self.encryption,
        );
        X25519HkdfSha256::derive_keypair(&ikm)
    }

    /// A new write-only key's contents: the blob-id key and chunker seed,
    /// the repository's public key, the lock key and a fresh cache key.
    ///
    /// # Errors
    ///
    /// [`Error::WriteOnly`] from a write-only key; [`Error::Config`] for an
    /// unencrypted repository, where a write-only key protects nothing.
    pub fn writer_key(&self) -> Result<WriterKey> {
        if self.is_write_only() {
            return Err(Error::WriteOnly("adding a key".to_owned()));
        }
        if !self.encrypt {
            return Err(Error::Config(
                "an unencrypted repository cannot have write-only keys".to_owned(),
            ));
        }
        let mut cache = [0u8; 32];
        fill_random(&mut cache);
        let public = self.key_pair().1.to_bytes();
        Ok(WriterKey {
            id: self.id,
            chunker_seed: self.chunker_seed,
            public: public.into(),
            locks: self.lock_key(),
            cache,
        })
    }

    /// A write-only session of `writer`: a random session key, sealed to
    /// the repository's public key once, seals every object it writes.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] naming `name` when the public key is invalid.
    pub fn for_writer(writer: &WriterKey, name: &str) -> Result<Self> {
        let public = <X25519HkdfSha256 as Kem>::PublicKey::from_bytes(&writer.public)
            .map_err(|e| Error::corrupt(FileKind::Key, name, format!("public key: {e}")))?;
        let mut session = [0u8; 32];
        fill_random(&mut session);
        let (encapped, sealed) = hpke::single_shot_seal::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
            &OpModeS::Base,
            &public,
            SESSION_INFO,
            &session,
            &[],
        )
        .map_err(|e| Error::corrupt(FileKind::Key, name, format!("sealing a session key: {e}")))?;
        let mut header = [0u8; SESSION_OVERHEAD];
        header[..SESSION_MAGIC.len()].copy_from_slice(&SESSION_MAGIC);
        header[SESSION_MAGIC.len()..SESSION_MAGIC.len() + 32].copy_from_slice(&encapped.to_bytes());
        if sealed.len() != 32 + TAG_LEN {
            return Err(Error::corrupt(
                FileKind::Key,
                name,
                "unexpected HPKE output",
            ));
        }
        header[SESSION_MAGIC.len() + 32..].copy_from_slice(&sealed);
        Ok(MasterKey {
            encryption: session,
            id: writer.id,
            chunker_seed: writer.chunker_seed,
            encrypt: true,
            role: Role::Writer(Arc::new(Session {
                header,
                locks: writer.locks,
                cache: writer.cache,
            })),
        })
    }

    /// The key lock files are sealed with in a repository with write-only
    /// keys ([`crate::lock`]): full keys derive it, writers hold it.
    pub fn lock_key(&self) -> [u8; 32] {
        match &self.role {
            Role::Full { .. } => derived("backup repository 2026-11 lock files", &self.encryption),
            Role::Writer(s) => s.locks,
        }
    }

    /// The key of a write-only key's local cache; `None` for a full key.
    pub fn cache_key(&self) -> Option<[u8; 32]> {
        match &self.role {
            Role::Full { .. } => None,
            Role::Writer(s) => Some(s.cache),
        }
    }

    /// The session key of a write-only object's `keys` (encapsulated key
    /// and sealed session key), opened with the repository's private key
    /// and remembered; `None` when they do not open.
    fn session_key(
        &self,
        sessions: &Mutex<HashMap<[u8; 32], [u8; 32]>>,
        keys: &[u8],
    ) -> Option<[u8; 32]> {
        let encapped: [u8; 32] = keys.get(..32)?.try_into().ok()?;
        if let Some(k) = sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&encapped)
        {
            return Some(*k);
        }
        let enc = <X25519HkdfSha256 as Kem>::EncappedKey::from_bytes(&encapped).ok()?;
        let opened = hpke::single_shot_open::<AesGcm256, HkdfSha256, X25519HkdfSha256>(
            &OpModeR::Base,
            &self.key_pair().0,
            &enc,
            SESSION_INFO,
            keys.get(32..)?,
            &[],
        )
        .ok()?;
        let key: [u8; 32] = opened.as_slice().try_into().ok()?;
        sessions
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(encapped, key);
        Some(key)
    }

    /// Whether sealing encrypts.
    pub fn encrypts(&self) -> bool {
        self.encrypt
    }

    /// The chunker gear-table seed of this repository.
    pub fn chunker_seed(&self) -> u64 {
        self.chunker_seed
    }

    /// Whether sealed objects are encrypted and authenticated (`false`
    /// only for repositories created with `--insecure-no-encryption`).
    pub fn authenticates(&self) -> bool {
        self.encrypt
    }

    /// The keyed id, by `hash`, of a blob with plaintext `data`.
    pub fn blob_id(&self, hash: IdHash, data: &[u8]) -> Id {
        BlobHasher::new(self, hash).hash(data)
    }

    /// Encrypts and authenticates `plaintext` with a fresh random nonce.
    pub fn seal(&self, plaintext: &[u8]) -> Vec<u8> {
        if !self.encrypt {
            return plaintext.to_vec();
        }
        match &self.role {
            Role::Full { .. } => seal_with(&self.encryption, plaintext),
            Role::Writer(s) => {
                let mut out =
                    Vec::with_capacity(SESSION_OVERHEAD + plaintext.len() + SEAL_OVERHEAD);
                out.extend_from_slice(&s.header);
                seal_into(&self.encryption, plaintext, &mut out);
                out
            }
        }
    }

    /// Checks and decrypts an object made by [`MasterKey::seal`].
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] (naming `kind` and `name`) when the object is too
    /// short or its authentication tag does not match; [`Error::WriteOnly`]
    /// for a write-only key, which opens nothing.
    pub fn open(&self, sealed: &[u8], kind: FileKind, name: &str) -> Result<Vec<u8>> {
        if !self.encrypt {
            return Ok(sealed.to_vec());
        }
        let sessions = match &self.role {
            Role::Writer(_) => {
                return Err(Error::WriteOnly(format!("reading {kind} {name}")));
            }
            Role::Full { sessions } => sessions,
        };
        if let Some(rest) = sealed.strip_prefix(&SESSION_MAGIC) {
            if rest.len() >= SESSION_KEYS + SEAL_OVERHEAD {
                let (keys, body) = rest.split_at(SESSION_KEYS);
                if let Some(opened) = self
                    .session_key(sessions, keys)
                    .and_then(|k| open_with(&k, body))
                {
                    return Ok(opened);
                }
            }
            // Else an object sealed with the master key whose random
            // nonce begins like a session's (one in 2^64): opened below.
        }
        open_with(&self.encryption, sealed).ok_or_else(|| {
            Error::corrupt(
                kind,
                name,
                "authentication failed (the data was altered or damaged)",
            )
        })
    }
}

/// AES-256-GCM with `key` (ring's implementation: AES and GHASH in vector
/// instructions where the CPU has them).
fn aead_key(key: &[u8; 32]) -> LessSafeKey {
    // Any 32 bytes are an AES-256 key.
    #[allow(clippy::expect_used)]
    LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).expect("a 32-byte AES-256 key"))
}

/// Decrypts with a raw 32-byte key; `None` when authentication fails.
pub(crate) fn open_with(key: &[u8; 32], sealed: &[u8]) -> Option<Vec<u8>> {
    if sealed.len() < SEAL_OVERHEAD {
        return None;
    }
    let (nonce, ct) = sealed.split_at(NONCE_LEN);
    let nonce = Nonce::try_assume_unique_for_key(nonce).ok()?;
    let mut buf = ct.to_vec();
    let len = aead_key(key)
        .open_in_place(nonce, Aad::empty(), &mut buf)
        .ok()?
        .len();
    buf.truncate(len);
    Some(buf)
}

/// Encrypts with a raw 32-byte key and a fresh random nonce: `nonce ||
/// ciphertext || tag`.
pub(crate) fn seal_with(key: &[u8; 32], plaintext: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
    seal_into(key, plaintext, &mut out);
    out
}

/// [`seal_with`] appending to `out`.
fn seal_into(key: &[u8; 32], plaintext: &[u8], out: &mut Vec<u8>) {
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce);
    out.extend_from_slice(&nonce);
    let start = out.len();
    out.extend_from_slice(plaintext);
    // Sealing fails only for inputs beyond GCM's limit of 64 GiB, far above
    // any object we seal.
    #[allow(clippy::expect_used)]
    let tag = aead_key(key)
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut out[start..],
        )
        .expect("AES-GCM encryption failed");
    out.extend_from_slice(tag.as_ref());
}

/// The keyed hash that names blobs: the repository config's `id_hash`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum IdHash {
    /// BLAKE3 in keyed mode with the 32-byte id key (format version 2, the
    /// default): several times faster than SHA-256 on one core, since it
    /// hashes a large chunk's 1 KiB pieces side by side in vector registers.
    #[default]
    #[serde(rename = "blake3")]
    Blake3,
    /// HMAC-SHA-256 with the id key (format version 1).
    #[serde(rename = "hmac-sha256")]
    HmacSha256,
}

impl IdHash {
    /// The name the config uses.
    pub fn name(self) -> &'static str {
        match self {
            IdHash::Blake3 => "blake3",
            IdHash::HmacSha256 => "hmac-sha256",
        }
    }
}

/// A reusable keyed hasher for blob ids ([`IdHash`] with the id key).
#[derive(Clone)]
pub struct BlobHasher {
    inner: Keyed,
}

#[derive(Clone)]
enum Keyed {
    Blake3([u8; 32]),
    HmacSha256(Hmac<Sha256>),
}

impl BlobHasher {
    /// A hasher for the repository of `key`, whose config names `hash`.
    pub fn new(key: &MasterKey, hash: IdHash) -> Self {
        let inner = match hash {
            IdHash::Blake3 => Keyed::Blake3(key.id),
            IdHash::HmacSha256 => {
                #[allow(clippy::expect_used)]
                let mac =
                    <Hmac<Sha256> as Mac>::new_from_slice(&key.id).expect("HMAC accepts any key");
                Keyed::HmacSha256(mac)
            }
        };
        BlobHasher { inner }
    }

    /// The id of the blob with plaintext `data`.
    pub fn hash(&self, data: &[u8]) -> Id {
        match &self.inner {
            Keyed::Blake3(key) => Id(*blake3::keyed_hash(key, data).as_bytes()),
            Keyed::HmacSha256(mac) => {
                let mut mac = mac.clone();
                mac.update(data);
                Id(mac.finalize().into_bytes().into())
            }
        }
    }
}

/// Base64 for fixed-size byte arrays in JSON.
pub(crate) mod b64 {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer, const N: usize>(
        v: &[u8; N],
        s: S,
    ) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[u8; N], D::Error> {
        let s = String::deserialize(d)?;
        let v = STANDARD.decode(s).map_err(serde::de::Error::custom)?;
        v.try_into()
            .map_err(|_| serde::de::Error::custom(format!("expected {N} bytes")))
    }
}

/// Base64 for variable-length byte strings in JSON.
pub(crate) mod b64vec {
    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;
    use serde::{Deserialize, Deserializer, Serializer};

    pub(crate) fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }

    pub(crate) fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seal_open_round_trip_and_tamper() {
        let key = MasterKey::generate(true);
        let sealed = key.seal(b"hello");
        assert_eq!(sealed.len(), 5 + SEAL_OVERHEAD);
        assert_eq!(key.open(&sealed, FileKind::Pack, "x").unwrap(), b"hello");
        let mut bad = sealed.clone();
        bad[14] ^= 1;
        assert!(key
            .open(&bad, FileKind::Pack, "x")
            .unwrap_err()
            .is_corruption());
        let other = MasterKey::generate(true);
        assert!(other.open(&sealed, FileKind::Pack, "x").is_err());
    }

    #[test]
    fn write_only_sessions_seal_what_only_the_full_key_opens() {
        let full = MasterKey::generate(true);
        let wk = full.writer_key().unwrap();
        let w1 = MasterKey::for_writer(&wk, "k").unwrap();
        let w2 = MasterKey::for_writer(&wk, "k").unwrap();
        assert!(w1.is_write_only() && !full.is_write_only());
        let a = w1.seal(b"from one");
        let b = w2.seal(b"from two");
        assert!(a.starts_with(&SESSION_MAGIC));
        assert_eq!(a.len(), 8 + SESSION_OVERHEAD + SEAL_OVERHEAD);
        assert_ne!(a[8..88], b[8..88], "each session has its own key");
        // The full key opens both (and again, from its remembered keys).
        for _ in 0..2 {
            assert_eq!(full.open(&a, FileKind::Pack, "a").unwrap(), b"from one");
            assert_eq!(full.open(&b, FileKind::Pack, "b").unwrap(), b"from two");
        }
        // No writer opens anything: not its own objects, not the others'.
        for w in [&w1, &w2] {
            for obj in [&a, &b, &full.seal(b"x")] {
                let e = w.open(obj, FileKind::Snapshot, "s").unwrap_err();
                assert!(matches!(e, Error::WriteOnly(_)), "{e}");
            }
        }
        // Neither does the session key of another repository's full key,
        // and a flipped byte anywhere is damage.
        assert!(MasterKey::generate(true)
            .open(&a, FileKind::Pack, "a")
            .is_err());
        for at in [3, 20, 60, 100, a.len() - 1] {
            let mut bad = a.clone();
            bad[at] ^= 1;
            let fresh = MasterKey {
                role: Role::default(),
                ..full.clone()
            };
            assert!(
                fresh
                    .open(&bad, FileKind::Pack, "a")
                    .unwrap_err()
                    .is_corruption(),
                "{at}"
            );
        }
        // An attacker holding the write-only key has every secret it
        // holds, and none of them opens a session's objects.
        for secret in [wk.id, wk.public, wk.locks, wk.cache, w2.encryption] {
            assert!(open_with(&secret, &a[SESSION_OVERHEAD..]).is_none());
            assert!(open_with(&secret, &a).is_none());
        }
        // Writers name blobs and chunk like the full key; locks share a key.
        assert_eq!(
            w1.blob_id(IdHash::Blake3, b"x"),
            full.blob_id(IdHash::Blake3, b"x")
        );
        assert_eq!(w1.chunker_seed(), full.chunker_seed());
        assert_eq!(w1.lock_key(), full.lock_key());
        assert!(full.cache_key().is_none() && w1.cache_key().is_some());
        assert!(matches!(w1.writer_key(), Err(Error::WriteOnly(_))));
        assert!(MasterKey::generate(false).writer_key().is_err());
    }

    #[test]
    fn sealed_objects_are_standard_aes_256_gcm() {
        // Sealed by Python's `cryptography` (AESGCM): nonce || ciphertext || tag.
        let key: [u8; 32] = std::array::from_fn(|i| i as u8);
        let sealed = hex::decode(
            "6465666768696a6b6c6d6e6f2a7abd0d0c9976ec5b12309bb311058f3b8e5558e9395ce7760448caf7901e05a1",
        )
        .unwrap();
        assert_eq!(open_with(&key, &sealed).unwrap(), b"backup repository");
        let mut bad = sealed.clone();
        *bad.last_mut().unwrap() ^= 1;
        assert!(open_with(&key, &bad).is_none());
        assert!(open_with(&key, &sealed[..27]).is_none());
        // And the other way: what we seal opens with the nonce it carries.
        let ours = seal_with(&key, b"x");
        assert_eq!(ours.len(), 1 + SEAL_OVERHEAD);
        assert_eq!(open_with(&key, &ours).unwrap(), b"x");
    }

    #[test]
    fn blob_ids_are_keyed() {
        let a = MasterKey::generate(true);
        let b = MasterKey::generate(true);
        for h in [IdHash::Blake3, IdHash::HmacSha256] {
            assert_eq!(a.blob_id(h, b"x"), a.blob_id(h, b"x"));
            assert_ne!(a.blob_id(h, b"x"), b.blob_id(h, b"x"));
            assert_ne!(a.blob_id(h, b"x"), Id::hash(b"x"));
        }
        assert_ne!(
            a.blob_id(IdHash::Blake3, b"x"),
            a.blob_id(IdHash::HmacSha256, b"x")
        );
    }

    #[test]
    fn blob_ids_match_the_published_algorithms() {
        // Expected values from Python's `blake3` package and `hmac` module.
        let mut key = MasterKey::generate(true);
        key.id = std::array::from_fn(|i| i as u8);
        assert_eq!(
            key.blob_id(IdHash::Blake3, b"backup").to_hex(),
            "995e27321654285d73e46036c4d08033363f1bba5bb67c6cda6d81e57bcb4963"
        );
        assert_eq!(
            key.blob_id(IdHash::HmacSha256, b"backup").to_hex(),
            "c81604bf4a1c09615cc49124a110ff0954cad3803c75ed5bceafc888b2418dfa"
        );
        // A chunk-sized input takes BLAKE3's many-chunk (vector) path.
        let big: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
        assert_eq!(
            key.blob_id(IdHash::Blake3, &big).to_hex(),
            "41ea736b1b21b783ee45a710ad45b7c92f6387cced218ad6a35a0bf900632ab4"
        );
    }
}
