//! The paged index kept between runs: one file per repository in the
//! cache directory, so that a process opening a repository of millions of
//! blobs reads only the index files written since (issue 32).
//!
//! Layout, all integers little-endian:
//!
//! | bytes | what |
//! |---|---|
//! | 8 | magic `BKIXC001` |
//! | 8 | records |
//! | 4 | directory bits |
//! | 4 | index files covered |
//! | 4 | packs |
//! | 4 | zero |
//! | 48 each | the records ([`super::table`]) |
//! | 32 each | the ids of the index files covered |
//! | 40 each | packs: id, then size as a `u64`, in pack-number order |
//! | 4 each | the directory, `2^bits + 1` entries |
//! | 32 | seal: the repository's keyed id hash of `b"backup index cache v1"`, the header and the BLAKE3 hash of everything between header and seal |
//!
//! The seal makes a damaged or foreign file (or one changed by anyone
//! without the repository key) read as absent: it is then rebuilt from the
//! repository's index files.

use std::fs::File;
use std::io::{self, BufWriter, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::Arc;

use super::packs::PackList;
use super::table::{self, Table, Written, RECORD};
use super::Index;
use crate::id::Id;

const MAGIC: &[u8; 8] = b"BKIXC001";
const HEADER: u64 = 32;
const CONTEXT: &[u8] = b"backup index cache v1";

/// The repository's keyed hash, which seals a cache file.
pub(crate) type Sealer = dyn Fn(&[u8]) -> Id + Send + Sync;

/// Writes through to `inner` and hashes what it writes.
struct Hashing<W> {
    inner: W,
    hash: blake3::Hasher,
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.inner.write_all(buf)?;
        self.hash.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn header(records: u64, bits: u32, covered: usize, packs: usize) -> [u8; HEADER as usize] {
    let mut h = [0u8; HEADER as usize];
    h[..8].copy_from_slice(MAGIC);
    h[8..16].copy_from_slice(&records.to_le_bytes());
    h[16..20].copy_from_slice(&bits.to_le_bytes());
    h[20..24].copy_from_slice(&(covered as u32).to_le_bytes());
    h[24..28].copy_from_slice(&(packs as u32).to_le_bytes());
    h
}

fn seal_of(sealer: &Sealer, header: &[u8], body: &blake3::Hash) -> Id {
    sealer(&[CONTEXT, header, body.as_bytes()].concat())
}

impl Index {
    /// Whether part of the index is paged to disk.
    pub(crate) fn is_paged(&self) -> bool {
        !self.tables.is_empty()
    }

    /// Whether the index is worth persisting again: it pages and holds
    /// more than one table, or more than a tenth of its memory limit in
    /// memory (index files written since the cache).
    pub(crate) fn has_grown(&self) -> bool {
        self.tables.len() > 1 || self.in_memory() > self.memory_blobs / 10
    }

    /// Merges the whole index into one table written to `path` (through a
    /// temporary file beside it, renamed), covering the index files
    /// `covered`, and reads from it from now on.
    pub(crate) fn persist(
        &mut self,
        path: &Path,
        covered: &[Id],
        sealer: &Sealer,
    ) -> io::Result<()> {
        let dir = path.parent().unwrap_or(Path::new("."));
        std::fs::create_dir_all(dir)?;
        let temp = tempfile::NamedTempFile::new_in(dir)?;
        let (written, body) = {
            let mut out = Hashing {
                inner: BufWriter::with_capacity(256 * 1024, temp.as_file()),
                hash: blake3::Hasher::new(),
            };
            out.inner.write_all(&[0u8; HEADER as usize])?;
            let written = table::write_records(&mut out, self.entry_count(), self.entries())?;
            for id in covered {
                out.write_all(id.as_bytes())?;
            }
            for (id, size) in self.packs.iter() {
                out.write_all(id.as_bytes())?;
                out.write_all(&size.to_le_bytes())?;
            }
            for d in &written.directory {
                out.write_all(&d.to_le_bytes())?;
            }
            out.flush()?;
            let body = out.hash.finalize();
            (written, body)
        };
        let head = header(
            written.records,
            written.bits,
            covered.len(),
            self.packs.len(),
        );
        self.packs.freeze();
        let seal = seal_of(sealer, &head, &body);
        let file = temp.as_file();
        file.write_all_at(&head, 0)?;
        let end = file.metadata()?.len();
        file.write_all_at(seal.as_bytes(), end)?;
        let file = temp.persist(path).map_err(|e| e.error)?;
        self.tables = vec![Arc::new(Table::in_file(file, HEADER, written))];
        self.data = std::collections::HashMap::default();
        self.tree = std::collections::HashMap::default();
        Ok(())
    }

    /// The index persisted at `path` and the index files it covers, or
    /// `None` when there is no such file or it is not whole and sealed by
    /// this repository's key.
    pub(crate) fn open_persisted(
        path: &Path,
        memory_blobs: usize,
        sealer: &Sealer,
    ) -> io::Result<Option<(Index, Vec<Id>)>> {
        let mut file = match File::open(path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let len = file.metadata()?.len();
        let mut head = [0u8; HEADER as usize];
        if len < HEADER + 32 || file.read_exact(&mut head).is_err() || &head[..8] != MAGIC {
            return Ok(None);
        }
        let word = |i: usize| u32::from_le_bytes([head[i], head[i + 1], head[i + 2], head[i + 3]]);
        let records = u64::from_le_bytes(head[8..16].try_into().unwrap_or([0; 8]));
        let (bits, covered, packs) = (word(16), u64::from(word(20)), u64::from(word(24)));
        if !(9..=25).contains(&bits) {
            return Ok(None);
        }
        let slots = (1u64 << bits) + 1;
        let tail = covered * 32 + packs * 40 + slots * 4;
        let body_len = records
            .checked_mul(RECORD as u64)
            .and_then(|r| r.checked_add(tail));
        if body_len.and_then(|b| b.checked_add(HEADER + 32)) != Some(len) {
            return Ok(None);
        }
        // The seal covers every byte; the records are hashed as they
        // stream past, the rest kept.
        let mut hash = blake3::Hasher::new();
        let mut left = records * RECORD as u64;
        let mut buf = vec![0u8; 1 << 20];
        while left > 0 {
            let n = left.min(buf.len() as u64) as usize;
            file.read_exact(&mut buf[..n])?;
            hash.update(&buf[..n]);
            left -= n as u64;
        }
        let mut rest = vec![0u8; tail as usize];
        file.read_exact(&mut rest)?;
        hash.update(&rest);
        let mut seal = [0u8; 32];
        file.read_exact(&mut seal)?;
        if seal_of(sealer, &head, &hash.finalize()) != Id(seal) {
            return Ok(None);
        }
        let (names, rest) = rest.split_at(covered as usize * 32);
        let (pack_bytes, dir_bytes) = rest.split_at(packs as usize * 40);
        let covered: Vec<Id> = names
            .chunks_exact(32)
            .map(|c| Id(c.try_into().unwrap_or([0; 32])))
            .collect();
        let directory: Vec<u32> = dir_bytes
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes(c.try_into().unwrap_or([0; 4])))
            .collect();
        if Table::check_directory(records, bits, &directory).is_none() {
            return Ok(None);
        }
        let mut index = Index::with_memory_limit(memory_blobs);
        index.packs = PackList::from_vec(
            pack_bytes
                .chunks_exact(40)
                .map(|p| {
                    let id = Id(p[..32].try_into().unwrap_or([0; 32]));
                    (id, u64::from_le_bytes(p[32..].try_into().unwrap_or([0; 8])))
                })
                .collect(),
        );
        let table = Table::in_file(
            file,
            HEADER,
            Written {
                records,
                bits,
                directory,
            },
        );
        index.tables.push(Arc::new(table));
        Ok(Some((index, covered)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pack::{BlobType, PackEntry};

    fn sealer(key: u8) -> Box<Sealer> {
        Box::new(move |b: &[u8]| Id(*blake3::keyed_hash(&[key; 32], b).as_bytes()))
    }

    fn filled(blobs: u32) -> Index {
        let mut idx = Index::with_memory_limit(10);
        for p in 0..blobs / 4 {
            let entries: Vec<PackEntry> = (0..4)
                .map(|i| PackEntry {
                    blob_type: if i == 3 {
                        BlobType::Tree
                    } else {
                        BlobType::Data
                    },
                    id: Id::hash(&(p * 4 + i).to_le_bytes()),
                    offset: i * 10,
                    length: 10,
                    raw_length: 9 + p,
                    compressed: i % 2 == 0,
                })
                .collect();
            idx.add_pack(Id::hash(&p.to_be_bytes()), 100 + u64::from(p), &entries);
        }
        idx
    }

    #[test]
    fn a_persisted_index_reads_back_only_whole_and_sealed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join("r.table");
        let covered = vec![Id::hash(b"index-1"), Id::hash(b"index-2")];
        let mut idx = filled(400);
        let reference = idx.clone();
        idx.persist(&path, &covered, &*sealer(1)).unwrap();
        assert_eq!(idx.tables.len(), 1);
        assert_eq!(idx.in_memory(), 0);
        let (back, names) = Index::open_persisted(&path, 10, &*sealer(1))
            .unwrap()
            .unwrap();
        assert_eq!(names, covered);
        assert!(back.packs().eq(reference.packs()));
        for n in 0..400u32 {
            let id = Id::hash(&n.to_le_bytes());
            let t = if n % 4 == 3 {
                BlobType::Tree
            } else {
                BlobType::Data
            };
            assert_eq!(back.get(t, &id), reference.get(t, &id));
            assert!(back.get(t, &id).is_some());
            assert_eq!(idx.get(t, &id), reference.get(t, &id));
        }
        assert_eq!(back.entries_by_pack().unwrap().len(), 100);
        // Another key, a flipped byte anywhere, a cut file: absent.
        assert!(Index::open_persisted(&path, 10, &*sealer(2))
            .unwrap()
            .is_none());
        let good = std::fs::read(&path).unwrap();
        for at in [
            0,
            9,
            HEADER as usize + 5,
            good.len() / 2,
            good.len() - 40,
            good.len() - 1,
        ] {
            let mut bad = good.clone();
            bad[at] ^= 1;
            std::fs::write(&path, &bad).unwrap();
            assert!(
                Index::open_persisted(&path, 10, &*sealer(1))
                    .unwrap()
                    .is_none(),
                "byte {at} flipped"
            );
        }
        std::fs::write(&path, &good[..good.len() - 1]).unwrap();
        assert!(Index::open_persisted(&path, 10, &*sealer(1))
            .unwrap()
            .is_none());
        assert!(
            Index::open_persisted(&dir.path().join("none"), 10, &*sealer(1))
                .unwrap()
                .is_none()
        );
    }
}
