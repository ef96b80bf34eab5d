//! PostgreSQL's backup manifest (`backup_manifest`, PostgreSQL 13 and
//! newer): read, checked and written.
//!
//! The format is JSON with one file per line: `{ "PostgreSQL-Backup-
//! Manifest-Version": 1, "Files": [ { "Path": ..., "Size": ...,
//! "Last-Modified": "YYYY-MM-DD HH:MM:SS GMT", "Checksum-Algorithm":
//! "CRC32C", "Checksum": "<hex>" }, ... ], "WAL-Ranges": [ { "Timeline":
//! 1, "Start-LSN": "0/2000028", "End-LSN": "0/2000138" } ],
//! "Manifest-Checksum": "<sha256 hex>" }`. Paths are relative to the data
//! directory (`pg_tblspc/<oid>/...` for tablespaces); names that are not
//! UTF-8 are given hex-encoded as `Encoded-Path`. The CRC-32C checksum is
//! the 4 bytes of the value in little-endian order, in hex. The manifest
//! checksum is the SHA-256 of everything before `"Manifest-Checksum"`.
//! The local backup writes manifests in exactly this form, so that
//! `pg_verifybackup` accepts a restored local backup too.

use std::collections::HashMap;

use backup_core::Error;
use sha2::{Digest, Sha256};

use super::lsn::Lsn;

/// One file of a manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ManifestFile {
    pub(crate) size: u64,
    /// The checksum algorithm's name and the checksum bytes; `None` for a
    /// manifest made without checksums.
    pub(crate) checksum: Option<(String, Vec<u8>)>,
}

/// A range of WAL the backup needs, on one timeline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct WalRange {
    pub(crate) timeline: u32,
    pub(crate) start: Lsn,
    pub(crate) end: Lsn,
}

/// A parsed manifest.
#[derive(Debug, Clone, Default)]
pub(crate) struct Manifest {
    /// By path relative to the data directory (as bytes: names need not
    /// be UTF-8).
    pub(crate) files: HashMap<Vec<u8>, ManifestFile>,
    pub(crate) wal_ranges: Vec<WalRange>,
}

#[derive(serde::Deserialize)]
struct RawManifest {
    #[serde(rename = "PostgreSQL-Backup-Manifest-Version")]
    version: u32,
    #[serde(rename = "Files")]
    files: Vec<RawFile>,
    #[serde(rename = "WAL-Ranges", default)]
    wal_ranges: Vec<RawRange>,
    #[serde(rename = "Manifest-Checksum")]
    checksum: String,
}

#[derive(serde::Deserialize)]
struct RawFile {
    #[serde(rename = "Path")]
    path: Option<String>,
    #[serde(rename = "Encoded-Path")]
    encoded_path: Option<String>,
    #[serde(rename = "Size")]
    size: u64,
    #[serde(rename = "Checksum-Algorithm")]
    algorithm: Option<String>,
    #[serde(rename = "Checksum")]
    checksum: Option<String>,
}

#[derive(serde::Deserialize)]
struct RawRange {
    #[serde(rename = "Timeline")]
    timeline: u32,
    #[serde(rename = "Start-LSN")]
    start: String,
    #[serde(rename = "End-LSN")]
    end: String,
}

impl Manifest {
    /// Parses a manifest and checks its own checksum.
    ///
    /// # Errors
    ///
    /// A message for a manifest that does not parse or whose checksum
    /// does not match.
    pub(crate) fn parse(text: &[u8]) -> std::result::Result<Self, String> {
        let marker = b"\"Manifest-Checksum\"";
        let at = text
            .windows(marker.len())
            .rposition(|w| w == marker)
            .ok_or("the manifest has no Manifest-Checksum")?;
        let raw: RawManifest = serde_json::from_slice(text).map_err(|e| e.to_string())?;
        if raw.version != 1 {
            return Err(format!("manifest version {} is not supported", raw.version));
        }
        let actual = hex::encode(Sha256::digest(&text[..at]));
        if !actual.eq_ignore_ascii_case(&raw.checksum) {
            return Err(format!(
                "the manifest's checksum is {} but its content hashes to {actual}",
                raw.checksum
            ));
        }
        let mut files = HashMap::with_capacity(raw.files.len());
        for f in raw.files {
            let path = match (f.path, f.encoded_path) {
                (Some(p), _) => p.into_bytes(),
                (None, Some(e)) => hex::decode(e).map_err(|e| format!("Encoded-Path: {e}"))?,
                (None, None) => return Err("a manifest entry without a path".to_owned()),
            };
            let checksum = match (f.algorithm, f.checksum) {
                (Some(a), Some(c)) if a != "NONE" => Some((
                    a,
                    hex::decode(&c).map_err(|e| format!("checksum `{c}`: {e}"))?,
                )),
                _ => None,
            };
            files.insert(
                path,
                ManifestFile {
                    size: f.size,
                    checksum,
                },
            );
        }
        let mut wal_ranges = Vec::with_capacity(raw.wal_ranges.len());
        for r in raw.wal_ranges {
            wal_ranges.push(WalRange {
                timeline: r.timeline,
                start: Lsn::parse(&r.start).map_err(|e| e.to_string())?,
                end: Lsn::parse(&r.end).map_err(|e| e.to_string())?,
            });
        }
        Ok(Manifest { files, wal_ranges })
    }

    /// Total bytes of the listed files.
    pub(crate) fn bytes(&self) -> u64 {
        // Saturating: the sizes come from the server's manifest.
        self.files
            .values()
            .fold(0u64, |total, f| total.saturating_add(f.size))
    }
}

/// Size and CRC-32C of what `file` holds, up to `limit` bytes.
///
/// # Errors
///
/// Read errors.
pub(crate) fn crc32c_of(mut file: impl std::io::Read, limit: u64) -> std::io::Result<(u64, u32)> {
    let mut buf = vec![0u8; 4 << 20];
    let (mut crc, mut size) = (0u32, 0u64);
    while size < limit {
        let want = (limit - size).min(buf.len() as u64) as usize;
        let n = file.read(&mut buf[..want])?;
        if n == 0 {
            break;
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
        size += n as u64;
    }
    Ok((size, crc))
}

/// A CRC-32C as the manifest writes it.
pub(crate) fn crc32c_bytes(crc: u32) -> Vec<u8> {
    crc.to_le_bytes().to_vec()
}

/// Writes a manifest in PostgreSQL's exact layout.
#[derive(Debug)]
pub(crate) struct ManifestWriter {
    text: String,
    first: bool,
    files: u64,
    bytes: u64,
}

impl Default for ManifestWriter {
    fn default() -> Self {
        ManifestWriter {
            text: "{ \"PostgreSQL-Backup-Manifest-Version\": 1,\n\"Files\": [".to_owned(),
            first: true,
            files: 0,
            bytes: 0,
        }
    }
}

impl ManifestWriter {
    /// Adds a file: its path relative to the data directory, size,
    /// modification time (seconds) and CRC-32C.
    pub(crate) fn add_file(&mut self, path: &[u8], size: u64, mtime: i64, crc: u32) {
        use std::fmt::Write as _;
        self.text.push_str(if self.first { "\n" } else { ",\n" });
        self.first = false;
        match std::str::from_utf8(path) {
            Ok(p) => {
                let quoted = serde_json::Value::String(p.to_owned()).to_string();
                let _ = write!(self.text, "{{ \"Path\": {quoted}, ");
            }
            Err(_) => {
                let _ = write!(
                    self.text,
                    "{{ \"Encoded-Path\": \"{}\", ",
                    hex::encode(path)
                );
            }
        }
        let when = chrono::DateTime::from_timestamp(mtime, 0).unwrap_or_default();
        let _ = write!(
            self.text,
            "\"Size\": {size}, \"Last-Modified\": \"{}\", \"Checksum-Algorithm\": \"CRC32C\", \"Checksum\": \"{}\" }}",
            when.format("%Y-%m-%d %H:%M:%S GMT"),
            hex::encode(crc32c_bytes(crc))
        );
        self.files += 1;
        self.bytes += size;
    }

    /// Files and bytes added.
    pub(crate) fn totals(&self) -> (u64, u64) {
        (self.files, self.bytes)
    }

    /// Ends the file list, adds the WAL ranges and the manifest checksum.
    pub(crate) fn finish(mut self, ranges: &[WalRange]) -> Vec<u8> {
        use std::fmt::Write as _;
        self.text.push_str("\n],\n\"WAL-Ranges\": [\n");
        for (i, r) in ranges.iter().enumerate() {
            let _ = write!(
                self.text,
                "{}{{ \"Timeline\": {}, \"Start-LSN\": \"{}\", \"End-LSN\": \"{}\" }}",
                if i == 0 { "" } else { ",\n" },
                r.timeline,
                r.start,
                r.end
            );
        }
        self.text.push_str("\n],\n");
        let sum = hex::encode(Sha256::digest(self.text.as_bytes()));
        let _ = writeln!(self.text, "\"Manifest-Checksum\": \"{sum}\"}}");
        self.text.into_bytes()
    }
}

/// The manifest of a snapshot could not be used.
pub(crate) fn unusable(reason: &str) -> Error {
    Error::corrupt(
        backup_core::FileKind::Snapshot,
        "backup_manifest",
        format!("the snapshot's backup manifest is unusable: {reason}"),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    #[allow(clippy::many_single_char_names)]
    fn writes_what_it_parses() {
        let mut w = ManifestWriter::default();
        w.add_file(b"backup_label", 3, 1_700_000_000, crc32c::crc32c(b"abc"));
        w.add_file(b"base/1/\xff", 0, 0, crc32c::crc32c(b""));
        assert_eq!(w.totals(), (2, 3));
        let text = w.finish(&[WalRange {
            timeline: 1,
            start: Lsn(0x200_0028),
            end: Lsn(0x200_0100),
        }]);
        let s = String::from_utf8(text.clone()).unwrap();
        assert!(
            s.contains("\"Last-Modified\": \"2023-11-14 22:13:20 GMT\""),
            "{s}"
        );
        assert!(s.contains("\"Checksum\": \"00000000\""), "{s}");
        assert!(s.contains("\"Encoded-Path\": \"626173652f312fff\""), "{s}");
        let m = Manifest::parse(&text).unwrap();
        assert_eq!(m.files.len(), 2);
        let f = &m.files[b"backup_label".as_slice()];
        assert_eq!(f.size, 3);
        assert_eq!(
            f.checksum.as_ref().unwrap().1,
            crc32c_bytes(crc32c::crc32c(b"abc"))
        );
        assert_eq!(m.wal_ranges[0].end, Lsn(0x200_0100));
        let mut damaged = text.clone();
        let i = s.find("\"Size\": 3").unwrap() + 8;
        damaged[i] = b'4';
        assert!(Manifest::parse(&damaged).unwrap_err().contains("checksum"));
    }
}
