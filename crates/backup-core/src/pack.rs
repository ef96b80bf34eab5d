//! Blobs and packs.
//!
//! A blob is one chunk of data or one tree, compressed with zstd (unless that
//! does not make it smaller) and then sealed. A pack is a file of blobs
//! followed by its sealed header and the header's length:
//!
//! ```text
//! blob_0 || blob_1 || ... || blob_n-1 || sealed_header || u32-le len(sealed_header)
//! ```
//!
//! The header lists every blob with its type, id, offset, stored length and
//! plaintext length, so the index can be rebuilt from packs alone.

use serde::{Deserialize, Serialize};

use crate::crypto::MasterKey;
use crate::error::{Error, Result};
use crate::id::Id;
use crate::sink::FileKind;

/// What a blob holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BlobType {
    /// File or stream content.
    Data,
    /// Metadata: a directory tree (JSON) or a content list (ids).
    Tree,
}

impl BlobType {
    fn code(self) -> u8 {
        match self {
            BlobType::Data => 0,
            BlobType::Tree => 1,
        }
    }

    fn from_code(c: u8) -> Option<Self> {
        match c {
            0 => Some(BlobType::Data),
            1 => Some(BlobType::Tree),
            _ => None,
        }
    }
}

/// One blob as recorded in a pack header and in the index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackEntry {
    /// Blob type.
    #[serde(rename = "type")]
    pub blob_type: BlobType,
    /// Keyed hash of the plaintext.
    pub id: Id,
    /// Byte offset of the stored blob in the pack.
    pub offset: u32,
    /// Stored (compressed and sealed) length.
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u32,
    /// Whether the stored blob is zstd-compressed inside the seal.
    pub compressed: bool,
}

/// Version byte at the start of a pack header's plaintext.
const HEADER_VERSION: u8 = 1;
/// Size of one encoded header entry.
const ENTRY_LEN: usize = 1 + 1 + 32 + 4 + 4 + 4;
/// Largest sealed header a reader accepts (16 MiB).
const MAX_HEADER_LEN: u32 = 16 * 1024 * 1024;
/// Most blobs a writer puts in one pack, so that the header stays far below
/// the 16 MiB limit readers accept (100 000 entries take 4.6 MB).
pub const MAX_PACK_ENTRIES: usize = 100_000;

/// Encodes a blob's plaintext for storage: compressed with `compressor`
/// when that saves at least 1/32 of the size, then sealed.
///
/// Returns `(compressed, stored_bytes)`.
pub fn encode_blob(
    key: &MasterKey,
    compressor: &mut zstd::bulk::Compressor<'_>,
    plain: &[u8],
) -> (bool, Vec<u8>) {
    let compressed = compressor
        .compress(plain)
        .ok()
        .filter(|c| c.len() + plain.len() / 32 < plain.len());
    match compressed {
        Some(c) => (true, key.seal(&c)),
        None => (false, key.seal(plain)),
    }
}

/// How a decoded blob's content is checked against its id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IdCheck {
    /// The keyed hash of the content must equal the id.
    Always,
    /// Only where blobs are not authenticated (unencrypted repositories):
    /// for readers that check what they assemble end to end (the physical
    /// PostgreSQL restore compares every file's CRC-32C with the backup
    /// manifest), an authenticated blob is trusted without hashing it
    /// again.
    WhenUnauthenticated,
}

/// Opens, decompresses and verifies a stored blob.
///
/// # Errors
///
/// [`Error::Corrupt`] naming the pack and blob when authentication,
/// decompression, the length or the id check fails.
pub fn decode_blob(
    key: &MasterKey,
    hasher: &crate::crypto::BlobHasher,
    entry: &PackEntry,
    pack: &Id,
    stored: &[u8],
) -> Result<Vec<u8>> {
    decode_blob_with(key, hasher, entry, pack, stored, IdCheck::Always)
}

/// [`decode_blob`], with the id checked as `ids` says.
///
/// # Errors
///
/// As [`decode_blob`].
pub fn decode_blob_with(
    key: &MasterKey,
    hasher: &crate::crypto::BlobHasher,
    entry: &PackEntry,
    pack: &Id,
    stored: &[u8],
    ids: IdCheck,
) -> Result<Vec<u8>> {
    let name = || format!("{}/blob {}", pack.short(), entry.id.short());
    let opened = key
        .open(stored, FileKind::Pack, &name())
        .map_err(|_| Error::corrupt(FileKind::Pack, name(), "blob failed authentication"))?;
    let plain = if entry.compressed {
        decompress(&opened, entry.raw_length as usize)
            .map_err(|e| Error::corrupt(FileKind::Pack, name(), format!("decompression: {e}")))?
    } else {
        opened
    };
    if plain.len() != entry.raw_length as usize {
        return Err(Error::corrupt(
            FileKind::Pack,
            name(),
            format!(
                "blob is {} bytes, index says {}",
                plain.len(),
                entry.raw_length
            ),
        ));
    }
    let check = ids == IdCheck::Always || !key.authenticates();
    if check && hasher.hash(&plain) != entry.id {
        return Err(Error::corrupt(
            FileKind::Pack,
            name(),
            "content does not match its id",
        ));
    }
    Ok(plain)
}

thread_local! {
    /// One zstd decompression context per thread: creating a context costs
    /// more than decompressing a small blob.
    static DECOMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Decompressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Blobs stating more uncompressed bytes than this are decompressed as a
/// stream, so that memory follows what the data really holds rather than
/// a length read from a (possibly damaged) pack header or index. Data
/// blobs are at most the chunker's maximum (16 MiB); only large tree
/// blobs take the streaming path.
const PREALLOCATE_MAX: usize = 64 * 1024 * 1024;

/// Decompresses a blob stated to hold `capacity` bytes. Returns what the
/// data holds (at most `capacity + 1` bytes, so that a longer output is
/// seen): the caller compares its length with `capacity`.
fn decompress(data: &[u8], capacity: usize) -> std::io::Result<Vec<u8>> {
    // The encoder records the uncompressed size in the frame header: a
    // frame that disagrees with the stated length is refused before
    // anything is allocated for it.
    if let Ok(Some(n)) = zstd::zstd_safe::get_frame_content_size(data) {
        if n != capacity as u64 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                format!("the frame holds {n} bytes, the blob is stated to hold {capacity}"),
            ));
        }
    }
    if capacity > PREALLOCATE_MAX {
        let mut out = Vec::new();
        std::io::Read::read_to_end(
            &mut std::io::Read::take(zstd::stream::read::Decoder::new(data)?, capacity as u64 + 1),
            &mut out,
        )?;
        return Ok(out);
    }
    DECOMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        if slot.is_none() {
            *slot = Some(zstd::bulk::Decompressor::new()?);
        }
        match slot.as_mut() {
            Some(d) => d.decompress(data, capacity),
            None => zstd::bulk::decompress(data, capacity),
        }
    })
}

/// Serializes and seals a pack header; returns the bytes to append to the
/// pack (sealed header followed by its u32 length).
pub fn encode_header(key: &MasterKey, entries: &[PackEntry]) -> Vec<u8> {
    let mut sealed = key.seal(&header_plaintext(entries));
    let len = sealed.len() as u32;
    sealed.extend_from_slice(&len.to_le_bytes());
    sealed
}

/// Given the last `tail.len()` bytes of a pack of `pack_size` bytes, returns
/// the sealed-header length if the tail holds the whole header, or the
/// number of trailing bytes to fetch otherwise.
///
/// # Errors
///
/// [`Error::Corrupt`] when the length field is impossible.
pub fn header_length(pack: &Id, pack_size: u64, tail: &[u8]) -> Result<u32> {
    if tail.len() < 4 || pack_size < 4 {
        return Err(Error::corrupt(FileKind::Pack, pack, "pack is too short"));
    }
    let mut len = [0u8; 4];
    len.copy_from_slice(&tail[tail.len() - 4..]);
    let len = u32::from_le_bytes(len);
    if len > MAX_HEADER_LEN || u64::from(len) + 4 > pack_size {
        return Err(Error::corrupt(
            FileKind::Pack,
            pack,
            format!("header length {len} is impossible for a pack of {pack_size} bytes"),
        ));
    }
    Ok(len)
}

/// Opens and parses a sealed header (without the trailing length).
///
/// # Errors
///
/// [`Error::Corrupt`] when the header fails authentication or is malformed.
pub fn decode_header(key: &MasterKey, pack: &Id, sealed: &[u8]) -> Result<Vec<PackEntry>> {
    let plain = key
        .open(sealed, FileKind::Pack, &pack.to_hex())
        .map_err(|_| Error::corrupt(FileKind::Pack, pack, "pack header failed authentication"))?;
    parse_header_plaintext(&plain, pack)
}

/// A pack header's plaintext: version, entry count, entries (also the
/// binary form of a write-only client's cache of its packs).
pub(crate) fn header_plaintext(entries: &[PackEntry]) -> Vec<u8> {
    let mut plain = Vec::with_capacity(1 + 4 + entries.len() * ENTRY_LEN);
    plain.push(HEADER_VERSION);
    plain.extend_from_slice(&(entries.len() as u32).to_le_bytes());
    for e in entries {
        plain.push(e.blob_type.code());
        plain.push(u8::from(e.compressed));
        plain.extend_from_slice(e.id.as_bytes());
        plain.extend_from_slice(&e.offset.to_le_bytes());
        plain.extend_from_slice(&e.length.to_le_bytes());
        plain.extend_from_slice(&e.raw_length.to_le_bytes());
    }
    plain
}

/// Parses what [`header_plaintext`] made, for the pack `pack`.
///
/// # Errors
///
/// [`Error::Corrupt`] when it is malformed.
pub(crate) fn parse_header_plaintext(plain: &[u8], pack: &Id) -> Result<Vec<PackEntry>> {
    let bad = |why: &str| Error::corrupt(FileKind::Pack, pack, format!("pack header: {why}"));
    if plain.first() != Some(&HEADER_VERSION) {
        return Err(bad("unknown header version"));
    }
    let count = plain
        .get(1..5)
        .map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
        .ok_or_else(|| bad("truncated"))?;
    if plain.len() != 5 + count * ENTRY_LEN {
        return Err(bad("length does not match entry count"));
    }
    let mut entries = Vec::with_capacity(count);
    for raw in plain[5..].chunks_exact(ENTRY_LEN) {
        let u32_at = |i: usize| u32::from_le_bytes([raw[i], raw[i + 1], raw[i + 2], raw[i + 3]]);
        let mut id = [0u8; 32];
        id.copy_from_slice(&raw[2..34]);
        entries.push(PackEntry {
            blob_type: BlobType::from_code(raw[0]).ok_or_else(|| bad("unknown blob type"))?,
            compressed: match raw[1] {
                0 => false,
                1 => true,
                _ => return Err(bad("unknown blob flags")),
            },
            id: Id(id),
            offset: u32_at(34),
            length: u32_at(38),
            raw_length: u32_at(42),
        });
    }
    Ok(entries)
}

/// Accumulates stored blobs into one pack file.
#[derive(Debug, Default)]
pub struct PackBuilder {
    data: Vec<u8>,
    entries: Vec<PackEntry>,
}

/// A finished pack, ready to upload.
#[derive(Debug)]
pub struct FinishedPack {
    /// SHA-256 of `data`: the pack's file name.
    pub id: Id,
    /// The whole pack file.
    pub data: bytes::Bytes,
    /// The blobs it holds.
    pub entries: Vec<PackEntry>,
}

impl PackBuilder {
    /// An empty pack with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Self {
        PackBuilder {
            data: Vec::with_capacity(capacity),
            entries: Vec::new(),
        }
    }

    /// Appends a stored blob.
    pub fn add(
        &mut self,
        blob_type: BlobType,
        id: Id,
        compressed: bool,
        raw_length: u32,
        stored: &[u8],
    ) {
        self.entries.push(PackEntry {
            blob_type,
            id,
            offset: self.data.len() as u32,
            length: stored.len() as u32,
            raw_length,
            compressed,
        });
        self.data.extend_from_slice(stored);
    }

    /// Number of blobs so far.
    pub fn entry_count(&self) -> usize {
        self.entries.len()
    }

    /// Bytes of blob data so far.
    pub fn len(&self) -> usize {
        self.data.len()
    }

    /// Whether no blob was added.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Appends the header and names the pack.
    pub fn finish(mut self, key: &MasterKey) -> FinishedPack {
        let header = encode_header(key, &self.entries);
        self.data.extend_from_slice(&header);
        let id = Id::hash(&self.data);
        FinishedPack {
            id,
            data: bytes::Bytes::from(self.data),
            entries: self.entries,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::crypto::BlobHasher;

    #[test]
    fn pack_round_trip() {
        let key = MasterKey::generate(true);
        let hasher = BlobHasher::new(&key, crate::crypto::IdHash::default());
        let mut zc = zstd::bulk::Compressor::new(3).unwrap();
        let mut pb = PackBuilder::default();
        let blobs: Vec<Vec<u8>> = vec![vec![7u8; 10_000], b"short".to_vec(), vec![]];
        for b in &blobs {
            let (c, stored) = encode_blob(&key, &mut zc, b);
            pb.add(BlobType::Data, hasher.hash(b), c, b.len() as u32, &stored);
        }
        let pack = pb.finish(&key);
        assert_eq!(pack.id, Id::hash(&pack.data));
        let len = header_length(&pack.id, pack.data.len() as u64, &pack.data).unwrap() as usize;
        let end = pack.data.len() - 4;
        let entries = decode_header(&key, &pack.id, &pack.data[end - len..end]).unwrap();
        assert_eq!(entries, pack.entries);
        assert!(entries[0].compressed && !entries[1].compressed);
        for (e, b) in entries.iter().zip(&blobs) {
            let stored = &pack.data[e.offset as usize..(e.offset + e.length) as usize];
            assert_eq!(&decode_blob(&key, &hasher, e, &pack.id, stored).unwrap(), b);
        }
        let e = entries[0];
        let mut stored = pack.data[e.offset as usize..(e.offset + e.length) as usize].to_vec();
        stored[20] ^= 0xff;
        assert!(decode_blob(&key, &hasher, &e, &pack.id, &stored)
            .unwrap_err()
            .is_corruption());
    }

    /// Found by the `pack` fuzz target (docs/FUZZING.md): a header stating
    /// a compressed blob of over 64 MiB in 12 bytes of data made the reader
    /// allocate the stated size before finding the data is not zstd.
    #[test]
    fn a_stated_length_is_not_allocated_before_the_data_is_checked() {
        let pack: &[u8] = &[
            0x68, 0x65, 0x6c, 0x6c, 0x6f, 0x20, 0x77, 0x6f, 0x01, 0x02, 0x00, 0x00, 0x00, 0x00,
            0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x08, 0xa5, 0x2e, 0x52, 0xd7, 0xda,
            0x7d, 0xab, 0xfa, 0xc4, 0x84, 0xef, 0xe3, 0x7a, 0x53, 0x80, 0x88, 0xf7, 0xb5, 0x90,
            0xee, 0xe2, 0x01, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
            0x00, 0x00, 0x6d, 0x00, 0x00, 0x00, 0x00, 0xfa, 0x57, 0x6a, 0xcb, 0x70, 0x24, 0x42,
            0xf9, 0xd0, 0x10, 0x16, 0x73, 0xca, 0xae, 0x39, 0xb6, 0x0d, 0x66, 0xc0, 0xca, 0x73,
            0x15, 0x48, 0xbe, 0x8d, 0xb8, 0xe0, 0xd2, 0xc7, 0x5b, 0x0b, 0x00, 0x00, 0x00, 0x0c,
            0x00, 0x00, 0x00, 0x0c, 0x00, 0x00, 0x00, 0x61, 0x00, 0x00, 0x00,
        ];
        let key = MasterKey::generate(false);
        let hasher = BlobHasher::new(&key, crate::crypto::IdHash::default());
        let id = Id([7; 32]);
        let len = header_length(&id, pack.len() as u64, pack).unwrap() as usize;
        let end = pack.len() - 4;
        let entries = decode_header(&key, &id, &pack[end - len..end]).unwrap();
        assert!(entries
            .iter()
            .any(|e| e.compressed && e.raw_length as usize > PREALLOCATE_MAX));
        for e in &entries {
            let Some(stored) = pack.get(e.offset as usize..(e.offset + e.length) as usize) else {
                continue;
            };
            let err = decode_blob(&key, &hasher, e, &id, stored).unwrap_err();
            assert!(err.is_corruption(), "{err}");
        }

        // A real frame records its size: one that disagrees with the
        // stated length is refused by that alone.
        let mut zc = zstd::bulk::Compressor::new(3).unwrap();
        let frame = zc.compress(&[1u8; 1000]).unwrap();
        let msg = decompress(&frame, u32::MAX as usize)
            .unwrap_err()
            .to_string();
        assert!(msg.contains("holds 1000 bytes"), "{msg}");
        // A frame without its size (written as a stream) claiming more
        // than it holds is read as a stream: what it holds comes back.
        let mut streamed = Vec::new();
        let mut enc = zstd::stream::write::Encoder::new(&mut streamed, 3).unwrap();
        std::io::Write::write_all(&mut enc, &[2u8; 1000]).unwrap();
        enc.finish().unwrap();
        assert_eq!(
            decompress(&streamed, u32::MAX as usize).unwrap(),
            vec![2u8; 1000]
        );
        assert_eq!(decompress(&streamed, 1000).unwrap(), vec![2u8; 1000]);
    }

    #[test]
    fn ids_are_trusted_only_for_authenticated_blobs_when_asked() {
        for encrypt in [true, false] {
            let key = MasterKey::generate(encrypt);
            let hasher = BlobHasher::new(&key, crate::crypto::IdHash::default());
            let mut zc = zstd::bulk::Compressor::new(3).unwrap();
            let mut pb = PackBuilder::default();
            let b = vec![9u8; 5000];
            let (c, stored) = encode_blob(&key, &mut zc, &b);
            // Listed under another blob's id (as a wrong index would).
            pb.add(BlobType::Data, hasher.hash(b"other"), c, 5000, &stored);
            let pack = pb.finish(&key);
            let e = pack.entries[0];
            let stored = &pack.data[e.offset as usize..(e.offset + e.length) as usize];
            let always = decode_blob_with(&key, &hasher, &e, &pack.id, stored, IdCheck::Always);
            assert!(always.unwrap_err().is_corruption());
            let trusted = decode_blob_with(
                &key,
                &hasher,
                &e,
                &pack.id,
                stored,
                IdCheck::WhenUnauthenticated,
            );
            if encrypt {
                assert_eq!(trusted.unwrap(), b);
            } else {
                assert!(trusted.unwrap_err().is_corruption());
            }
        }
    }
}
