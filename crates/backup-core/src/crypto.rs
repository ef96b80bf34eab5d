//! Encryption, authentication and keyed hashing.
//!
//! A sealed object is `nonce (12 bytes) || AES-256-GCM ciphertext || tag (16
//! bytes)` with no associated data. Blob ids are a keyed hash of the
//! plaintext under a key of their own (BLAKE3 in keyed mode, or HMAC-SHA-256
//! in format version 1 repositories), so ids reveal nothing about content
//! to anyone without the master key.

use hmac::{Hmac, Mac};
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
        }
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
        seal_with(&self.encryption, plaintext)
    }

    /// Checks and decrypts an object made by [`MasterKey::seal`].
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] (naming `kind` and `name`) when the object is too
    /// short or its authentication tag does not match.
    pub fn open(&self, sealed: &[u8], kind: FileKind, name: &str) -> Result<Vec<u8>> {
        if !self.encrypt {
            return Ok(sealed.to_vec());
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
    let mut nonce = [0u8; NONCE_LEN];
    fill_random(&mut nonce);
    let mut out = Vec::with_capacity(plaintext.len() + SEAL_OVERHEAD);
    out.extend_from_slice(&nonce);
    out.extend_from_slice(plaintext);
    // Sealing fails only for inputs beyond GCM's limit of 64 GiB, far above
    // any object we seal.
    #[allow(clippy::expect_used)]
    let tag = aead_key(key)
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce),
            Aad::empty(),
            &mut out[NONCE_LEN..],
        )
        .expect("AES-GCM encryption failed");
    out.extend_from_slice(tag.as_ref());
    out
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
