//! Continuous capture: a database's change stream (PostgreSQL's WAL,
//! MongoDB's oplog) stored as consecutive pieces beside the snapshots.
//!
//! A piece is a range of one capture stream, `[first, last)` in the
//! stream's own positions (fixed-width hex, ordered as text): its bytes
//! go into a pack of their own (1 MiB blobs, compressed and sealed like
//! any blob; captured data repeats too rarely to be worth deduplicating),
//! and a sealed record under `captures/` names the pack, the blobs and
//! what the range holds. The record's file name carries the stream and
//! the range, so the restorable windows of every stream are known from a
//! listing alone:
//!
//! ```text
//! captures/<stream>.<first>.<last>.<sha256 of the record file>
//! ```
//!
//! `<stream>` is a keyed hash of the stream's kind and identity (a
//! cluster's system identifier, a replica set), so names do not reveal
//! whose data it is. A record whose `gap` is set marks a range that is
//! known to be missing (the server removed it before it was captured).
//!
//! Pieces are written pack first and record last, under a shared
//! repository lock held for the write, so that prune (which reads every
//! record and keeps their packs) never sees a pack without its record.
//! Format: `REPOSITORY_FORMAT.md` §21.

use chrono::{DateTime, Utc};
use futures::stream::{self, StreamExt};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};
use crate::id::Id;
use crate::lock::LockMode;
use crate::pack::{decode_blob, encode_blob, BlobType, PackBuilder, PackEntry};
use crate::repo::Repository;
use crate::sink::{FileKind, SinkExt};
use crate::snapshot::SourceDescriptor;
use crate::util::blocking;

/// Version of capture records.
pub const CAPTURE_VERSION: u32 = 1;

/// Bytes per blob of a piece.
const BLOB_BYTES: usize = 1 << 20;

/// The name of a capture record: its stream, range and hash.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct CaptureName {
    /// The stream (16 hex digits).
    pub stream: String,
    /// First position of the range (inclusive).
    pub first: String,
    /// End of the range (exclusive).
    pub last: String,
    /// SHA-256 of the record file.
    pub id: Id,
}

impl CaptureName {
    /// Parses a file name of `captures/`; `None` for names that are not
    /// capture records.
    pub fn parse(name: &str) -> Option<Self> {
        let mut parts = name.split('.');
        let stream = parts.next()?;
        let first = parts.next()?;
        let last = parts.next()?;
        let id: Id = parts.next()?.parse().ok()?;
        let hex = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_hexdigit());
        (parts.next().is_none()
            && stream.len() == 16
            && hex(stream)
            && hex(first)
            && hex(last)
            && first.len() == last.len())
        .then(|| CaptureName {
            stream: stream.to_owned(),
            first: first.to_owned(),
            last: last.to_owned(),
            id,
        })
    }

    /// The file name.
    pub fn file_name(&self) -> String {
        format!(
            "{}.{}.{}.{}",
            self.stream,
            self.first,
            self.last,
            self.id.to_hex()
        )
    }
}

impl std::fmt::Display for CaptureName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.file_name())
    }
}

/// One blob of a piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct CaptureBlob {
    /// Keyed hash of the plaintext.
    pub id: Id,
    /// Offset of the stored blob in the pack.
    pub offset: u32,
    /// Stored length.
    pub length: u32,
    /// Plaintext length.
    pub raw_length: u32,
    /// Whether it is zstd-compressed inside the seal.
    pub compressed: bool,
}

/// A capture record (`captures/...`).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CaptureRecord {
    /// [`CAPTURE_VERSION`].
    pub version: u32,
    /// The stream (as in the name).
    pub stream: String,
    /// What the stream is: `postgres-wal`, `mongodb-oplog`.
    pub kind: String,
    /// Where it was captured from (URL without credentials).
    pub source: SourceDescriptor,
    /// The identity the stream id was derived from (system identifier,
    /// replica set).
    pub identity: String,
    /// First position (inclusive), as in the name.
    pub first: String,
    /// End position (exclusive), as in the name.
    pub last: String,
    /// The earliest and latest time the range holds (commit times), when
    /// known.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_first: Option<DateTime<Utc>>,
    /// See `time_first`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub time_last: Option<DateTime<Utc>>,
    /// The pack holding the bytes; `None` for a gap.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pack: Option<Id>,
    /// The blobs, in order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub blobs: Vec<CaptureBlob>,
    /// Bytes of the range.
    pub size: u64,
    /// SHA-256 of the bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sha256: Option<Id>,
    /// When set, the range is missing and this says why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gap: Option<String>,
    /// Kind-specific facts (timeline, segment, entry counts, ...).
    #[serde(default, skip_serializing_if = "serde_json::Value::is_null")]
    pub details: serde_json::Value,
    /// Host that captured it.
    pub host: String,
    /// When the record was written.
    pub created: DateTime<Utc>,
    /// Program and version.
    pub program: String,
}

/// What a new piece is (everything of a record but what storing fills in).
#[derive(Debug, Clone)]
pub struct PieceInfo {
    /// The stream id ([`Repository::capture_stream`]).
    pub stream: String,
    /// `postgres-wal`, `mongodb-oplog`.
    pub kind: String,
    /// Where it came from.
    pub source: SourceDescriptor,
    /// The stream's identity.
    pub identity: String,
    /// First position (inclusive), fixed-width hex.
    pub first: String,
    /// End position (exclusive), the same width.
    pub last: String,
    /// Earliest time held.
    pub time_first: Option<DateTime<Utc>>,
    /// Latest time held.
    pub time_last: Option<DateTime<Utc>>,
    /// Kind-specific facts.
    pub details: serde_json::Value,
}

impl Repository {
    /// The stream id of `kind` for `identity`: 16 hex digits of a keyed
    /// hash, the same for every writer of this repository.
    pub fn capture_stream(&self, kind: &str, identity: &str) -> String {
        let mut input = b"capture-stream\0".to_vec();
        input.extend_from_slice(kind.as_bytes());
        input.push(0);
        input.extend_from_slice(identity.as_bytes());
        self.hasher().hash(&input).to_hex()[..16].to_owned()
    }

    /// Stores a piece: its bytes in a pack of their own, then its record.
    /// Holds a shared lock for the write (waiting up to `lock_wait` for a
    /// prune to finish).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for positions that do not fit the name format;
    /// lock and storage errors (nothing is listed then: a pack without a
    /// record is removed by the next prune).
    pub async fn put_capture(
        &self,
        info: PieceInfo,
        data: &[u8],
        lock_wait: std::time::Duration,
    ) -> Result<CaptureName> {
        check_positions(&info)?;
        let repo = self.clone();
        let level = self.config().compression.level;
        let data = data.to_vec();
        let (pack, sha) = blocking("capture", move || {
            let mut compressor = zstd::bulk::Compressor::new(level)
                .map_err(|e| Error::io("creating a zstd compressor", e))?;
            let mut b = PackBuilder::with_capacity(data.len() / 2 + 4096);
            for chunk in data.chunks(BLOB_BYTES) {
                let id = repo.hasher().hash(chunk);
                let (compressed, stored) = encode_blob(repo.key(), &mut compressor, chunk);
                b.add(BlobType::Data, id, compressed, chunk.len() as u32, &stored);
            }
            Ok((b.finish(repo.key()), Id(Sha256::digest(&data).into())))
        })
        .await?;
        let blobs: Vec<CaptureBlob> = pack
            .entries
            .iter()
            .map(|e| CaptureBlob {
                id: e.id,
                offset: e.offset,
                length: e.length,
                raw_length: e.raw_length,
                compressed: e.compressed,
            })
            .collect();
        let size = blobs.iter().map(|b| u64::from(b.raw_length)).sum();
        let record = record_of(info, Some(pack.id), blobs, size, Some(sha), None);
        let work = async {
            self.sink()
                .put_content_addressed(FileKind::Pack, &pack.id.to_hex(), pack.data)
                .await?;
            self.write_record(&record).await
        };
        self.with_lock(LockMode::Shared, "capture", lock_wait, work)
            .await
    }

    /// Records that `[first, last)` of a stream is missing (`reason`).
    ///
    /// # Errors
    ///
    /// As [`Repository::put_capture`].
    pub async fn put_capture_gap(
        &self,
        info: PieceInfo,
        reason: &str,
        lock_wait: std::time::Duration,
    ) -> Result<CaptureName> {
        check_positions(&info)?;
        let record = record_of(info, None, Vec::new(), 0, None, Some(reason.to_owned()));
        self.with_lock(
            LockMode::Shared,
            "capture",
            lock_wait,
            self.write_record(&record),
        )
        .await
    }

    async fn write_record(&self, record: &CaptureRecord) -> Result<CaptureName> {
        let (id, bytes) = self.encode_file(record)?;
        let name = CaptureName {
            stream: record.stream.clone(),
            first: record.first.clone(),
            last: record.last.clone(),
            id,
        };
        self.sink()
            .put_content_addressed(FileKind::Capture, &name.file_name(), bytes)
            .await?;
        Ok(name)
    }

    /// Every capture record's name, sorted by stream and range (no record
    /// is read). Names that are not capture records are ignored.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub async fn captures(&self) -> Result<Vec<CaptureName>> {
        let mut names: Vec<CaptureName> = self
            .sink()
            .list_names(FileKind::Capture)
            .await?
            .iter()
            .filter_map(|n| CaptureName::parse(n))
            .collect();
        names.sort();
        Ok(names)
    }

    /// Reads a record and checks that it is the one its name promises.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] for a damaged record or one whose stream or
    /// range differ from its name; storage errors.
    pub async fn load_capture(&self, name: &CaptureName) -> Result<CaptureRecord> {
        let file = name.file_name();
        let bytes = self.sink().get(FileKind::Capture, &file).await?;
        if Id::hash(&bytes) != name.id {
            return Err(Error::corrupt(
                FileKind::Capture,
                &file,
                "content does not match its name (hash mismatch)",
            ));
        }
        let record: CaptureRecord =
            self.decode_file(FileKind::Capture, &name.id.to_hex(), &bytes)?;
        if record.stream != name.stream || record.first != name.first || record.last != name.last {
            return Err(Error::corrupt(
                FileKind::Capture,
                &file,
                "the record describes another range than its name",
            ));
        }
        Ok(record)
    }

    /// The pieces `names` in order, each record loaded and its bytes read
    /// ([`Repository::read_capture`]), two pieces ahead of the consumer:
    /// what a replay reads.
    pub fn read_pieces(
        &self,
        names: Vec<CaptureName>,
    ) -> impl futures::Stream<Item = Result<(CaptureName, Vec<u8>)>> + Send + '_ {
        stream::iter(names)
            .map(move |name| async move {
                let record = self.load_capture(&name).await?;
                let bytes = self.read_capture(&record).await?;
                Ok((name, bytes))
            })
            .buffered(2)
    }

    /// The bytes of a piece, every blob authenticated and checked against
    /// its keyed hash, the whole against the record's SHA-256.
    ///
    /// # Errors
    ///
    /// [`Error::Corrupt`] for damaged or missing data, or for a gap;
    /// storage errors.
    pub async fn read_capture(&self, record: &CaptureRecord) -> Result<Vec<u8>> {
        let (Some(pack), Some(sha)) = (record.pack, record.sha256) else {
            return Err(Error::corrupt(
                FileKind::Capture,
                &record.first,
                record.gap.as_deref().map_or("a record without data", |g| g),
            ));
        };
        let Some(start) = record.blobs.first().map(|b| u64::from(b.offset)) else {
            return Ok(Vec::new());
        };
        let end = record
            .blobs
            .iter()
            .map(|b| u64::from(b.offset) + u64::from(b.length))
            .max()
            .unwrap_or(start);
        let stored = self
            .sink()
            .get_range(FileKind::Pack, &pack.to_hex(), start..end)
            .await?;
        let repo = self.clone();
        let blobs = record.blobs.clone();
        let data = blocking("capture", move || {
            let mut out = Vec::new();
            for b in &blobs {
                let at = (u64::from(b.offset) - start) as usize;
                let piece = stored.get(at..at + b.length as usize).ok_or_else(|| {
                    Error::corrupt(FileKind::Pack, pack.short(), "shorter than its record says")
                })?;
                let entry = PackEntry {
                    blob_type: BlobType::Data,
                    id: b.id,
                    offset: b.offset,
                    length: b.length,
                    raw_length: b.raw_length,
                    compressed: b.compressed,
                };
                out.extend_from_slice(&decode_blob(
                    repo.key(),
                    repo.hasher(),
                    &entry,
                    &pack,
                    piece,
                )?);
            }
            Ok(out)
        })
        .await?;
        if Id(Sha256::digest(&data).into()) != sha {
            return Err(Error::corrupt(
                FileKind::Capture,
                &record.first,
                "the piece's bytes do not match its SHA-256",
            ));
        }
        Ok(data)
    }

    /// Removes a record (its pack goes with the next prune).
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub async fn delete_capture(&self, name: &CaptureName) -> Result<()> {
        self.sink()
            .delete(FileKind::Capture, &name.file_name())
            .await
    }

    /// Every record (read, 16 at a time) with the packs they hold: what
    /// prune keeps and verify checks. Unreadable records are returned as
    /// errors beside.
    ///
    /// # Errors
    ///
    /// Storage errors while listing.
    pub async fn capture_records(
        &self,
    ) -> Result<(Vec<(CaptureName, CaptureRecord)>, Vec<(CaptureName, Error)>)> {
        let names = self.captures().await?;
        let results: Vec<(CaptureName, Result<CaptureRecord>)> = stream::iter(names)
            .map(|n| async move {
                let r = self.load_capture(&n).await;
                (n, r)
            })
            .buffer_unordered(16)
            .collect()
            .await;
        let mut ok = Vec::new();
        let mut bad = Vec::new();
        for (n, r) in results {
            match r {
                Ok(rec) => ok.push((n, rec)),
                Err(e) => bad.push((n, e)),
            }
        }
        ok.sort_by(|a, b| a.0.cmp(&b.0));
        Ok((ok, bad))
    }
}

/// What a point-in-time restore hands its target (in
/// [`crate::target::RestoreOptions::replay`]): the pieces of one stream to
/// apply after the snapshot, and where to stop.
///
/// Built by the operations layer from names alone, after checking that the
/// pieces are contiguous (each starts where the previous ends) from `from`
/// to `until`; targets read them with [`Repository::load_capture`] and
/// [`Repository::read_capture`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaptureReplay {
    /// The stream.
    pub stream: String,
    /// The records, in order: the first holds `from`, the last `until`.
    pub pieces: Vec<CaptureName>,
    /// The first position to apply (what precedes it is in the snapshot).
    pub from: String,
    /// The last position to apply, inclusive.
    pub until: String,
    /// For kinds whose positions carry no time (Redis): apply only the
    /// changes that arrived at or before this time (`--at TIME`).
    pub until_time: Option<DateTime<Utc>>,
}

/// How long a capture lease lasts unless renewed.
pub const CAPTURE_LEASE_TTL: std::time::Duration = std::time::Duration::from_secs(90);

/// The contents of a capture lease file (`locks/capture-<stream>`).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseFile {
    stream: String,
    holder: Id,
    host: String,
    pid: u32,
    expires: DateTime<Utc>,
}

/// A capture follower's claim on a stream: while it holds one, no other
/// follower (another daemon, a foreground `follow`) writes pieces of that
/// stream, so two never store overlapping ranges.
///
/// The lease is `locks/capture-<stream>` (not an id, so repository lock
/// handling ignores it), created create-only and renewed by overwriting
/// before it expires ([`CAPTURE_LEASE_TTL`]). A lease whose holder died
/// expires and may then be taken over; a holder that finds its lease taken
/// over stops writing ([`CaptureLease::renew`] fails).
pub struct CaptureLease {
    repo: Repository,
    stream: String,
    holder: Id,
    renewed: std::sync::Mutex<std::time::Instant>,
}

impl std::fmt::Debug for CaptureLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureLease")
            .field("stream", &self.stream)
            .field("holder", &self.holder)
            .finish_non_exhaustive()
    }
}

/// Whether a lease's holder is known to be dead: it ran on this host and
/// no process has its id any more (Linux's `/proc`; elsewhere a lease is
/// only taken over once it expires).
fn holder_gone(l: &LeaseFile) -> bool {
    cfg!(target_os = "linux")
        && l.host == crate::util::hostname()
        && l.pid != std::process::id()
        && !std::path::Path::new(&format!("/proc/{}", l.pid)).exists()
}

fn lease_name(stream: &str) -> String {
    format!("capture-{stream}")
}

impl Repository {
    /// Claims the capture lease of `stream`.
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] naming the holder when another live follower
    /// holds it; storage errors.
    pub async fn claim_capture(&self, stream: &str) -> Result<CaptureLease> {
        let holder = Id::random();
        let name = lease_name(stream);
        for _ in 0..3 {
            let file = self.lease_file(stream, holder)?;
            if self
                .sink()
                .create_claim(FileKind::Lock, &name, file)
                .await?
            {
                return Ok(CaptureLease {
                    repo: self.clone(),
                    stream: stream.to_owned(),
                    holder,
                    renewed: std::sync::Mutex::new(std::time::Instant::now()),
                });
            }
            match self.read_lease(stream).await? {
                // A holder on this host whose process is gone (killed,
                // crashed) left its lease behind: take it over at once
                // rather than after it expires.
                Some(l) if l.expires > Utc::now() && !holder_gone(&l) => {
                    return Err(Error::Locked(format!(
                        "stream {stream} is captured by {} (pid {}) until at least {}",
                        l.host,
                        l.pid,
                        l.expires.format("%Y-%m-%d %H:%M:%S UTC")
                    )))
                }
                // Expired or unreadable: its holder is gone.
                _ => {
                    self.sink().delete(FileKind::Lock, &name).await?;
                }
            }
        }
        Err(Error::Locked(format!(
            "stream {stream}: another follower keeps claiming its lease"
        )))
    }

    fn lease_file(&self, stream: &str, holder: Id) -> Result<bytes::Bytes> {
        let expires =
            Utc::now() + chrono::Duration::from_std(CAPTURE_LEASE_TTL).unwrap_or_default();
        let file = LeaseFile {
            stream: stream.to_owned(),
            holder,
            host: crate::util::hostname(),
            pid: std::process::id(),
            expires,
        };
        Ok(self.encode_file(&file)?.1)
    }

    async fn read_lease(&self, stream: &str) -> Result<Option<LeaseFile>> {
        let name = lease_name(stream);
        let Some(bytes) = self.sink().get_opt(FileKind::Lock, &name).await? else {
            return Ok(None);
        };
        // Leases are overwritten in place, so their names are not hashes:
        // the seal authenticates them.
        Ok(self
            .decode_file::<LeaseFile>(FileKind::Lock, &Id::hash(&bytes).to_hex(), &bytes)
            .ok())
    }
}

impl CaptureLease {
    /// The stream the lease is for.
    pub fn stream(&self) -> &str {
        &self.stream
    }

    /// Renews the lease if a third of its time has passed since the last
    /// renewal (cheap to call before every write).
    ///
    /// # Errors
    ///
    /// [`Error::Locked`] when another follower took the lease over (this
    /// one must stop writing); storage errors.
    pub async fn renew(&self) -> Result<()> {
        let due = {
            let at = self
                .renewed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            at.elapsed() >= CAPTURE_LEASE_TTL / 3
        };
        if due {
            self.renew_now().await?;
        }
        Ok(())
    }

    /// Renews the lease now.
    ///
    /// # Errors
    ///
    /// As [`CaptureLease::renew`].
    pub async fn renew_now(&self) -> Result<()> {
        match self.repo.read_lease(&self.stream).await? {
            Some(l) if l.holder == self.holder => {}
            Some(l) => {
                return Err(Error::Locked(format!(
                    "the capture lease of stream {} was taken over by {} (pid {})",
                    self.stream, l.host, l.pid
                )))
            }
            None => {
                return Err(Error::Locked(format!(
                    "the capture lease of stream {} was removed",
                    self.stream
                )))
            }
        }
        let file = self.repo.lease_file(&self.stream, self.holder)?;
        self.repo
            .sink()
            .put(
                FileKind::Lock,
                &lease_name(&self.stream),
                file,
                crate::sink::PutMode::Overwrite,
            )
            .await?;
        *self
            .renewed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = std::time::Instant::now();
        Ok(())
    }

    /// Gives the lease up (when it is still this follower's).
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub async fn release(self) -> Result<()> {
        if let Some(l) = self.repo.read_lease(&self.stream).await? {
            if l.holder == self.holder {
                self.repo
                    .sink()
                    .delete(FileKind::Lock, &lease_name(&self.stream))
                    .await?;
            }
        }
        Ok(())
    }
}

fn check_positions(info: &PieceInfo) -> Result<()> {
    let name = CaptureName {
        stream: info.stream.clone(),
        first: info.first.clone(),
        last: info.last.clone(),
        id: Id::default(),
    };
    if CaptureName::parse(&name.file_name()).is_none() || info.first > info.last {
        return Err(Error::Config(format!(
            "capture range {}..{} of stream {} cannot be named (positions must be hex of the same width, first before last)",
            info.first, info.last, info.stream
        )));
    }
    Ok(())
}

fn record_of(
    info: PieceInfo,
    pack: Option<Id>,
    blobs: Vec<CaptureBlob>,
    size: u64,
    sha256: Option<Id>,
    gap: Option<String>,
) -> CaptureRecord {
    CaptureRecord {
        version: CAPTURE_VERSION,
        stream: info.stream,
        kind: info.kind,
        source: info.source,
        identity: info.identity,
        first: info.first,
        last: info.last,
        time_first: info.time_first,
        time_last: info.time_last,
        pack,
        blobs,
        size,
        sha256,
        gap,
        details: info.details,
        host: crate::util::hostname(),
        created: Utc::now(),
        program: format!("backup {}", env!("CARGO_PKG_VERSION")),
    }
}

/// Captured ranges a prune removes because no kept snapshot needs them
/// (the source kind decides which; see its retention rules).
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct CaptureExpiry {
    /// The stream's kind (`postgres-wal`, `mongodb-oplog`).
    pub kind: String,
    /// Whose stream (system identifier, replica set).
    pub identity: String,
    /// Records removed (gap records included).
    pub pieces: usize,
    /// Bytes of captured data they held.
    pub bytes: u64,
    /// Where the stored stream began before.
    pub from: Option<String>,
    /// Where it begins after (`None`: nothing is left).
    pub kept_from: Option<String>,
    /// Why these go.
    pub reason: String,
}

/// The packs that capture records hold (prune keeps them whole).
pub fn capture_packs(records: &[(CaptureName, CaptureRecord)]) -> std::collections::HashSet<Id> {
    records.iter().filter_map(|(_, r)| r.pack).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_parse_and_sort() {
        let id = Id::hash(b"x");
        let n = CaptureName {
            stream: "0123456789abcdef".into(),
            first: "0000000100000000".into(),
            last: "0000000100001000".into(),
            id,
        };
        assert_eq!(CaptureName::parse(&n.file_name()), Some(n.clone()));
        assert!(CaptureName::parse("0123.00.01.zz").is_none());
        assert!(CaptureName::parse(&format!("0123456789abcdef.00.001.{}", id.to_hex())).is_none());
        let later = CaptureName {
            first: "0000000100001000".into(),
            last: "0000000100002000".into(),
            ..n.clone()
        };
        assert!(n < later);
    }
}
