//! Entry points for the fuzz targets in `fuzz/` (docs/FUZZING.md): bytes
//! a PostgreSQL server or its tools sent, handed to our parsers of them. A fuzz run
//! fails only on a panic, an abort, an oversized allocation or a hang.
//! Compiled only with the `fuzzing` feature; not a stable interface.

use sha2::{Digest, Sha256};

use super::physical::lsn::{self, is_wal_segment_size, Lsn};
use super::physical::manifest::Manifest;
use super::physical::tar::{self, BLOCK};
use super::physical::wal;
use super::script;

/// A `BASE_BACKUP` tar stream, walked as the receiver walks it: a header
/// block, the member's content and padding, until a zero block.
pub fn tar_stream(data: &[u8]) {
    let mut at = 0usize;
    while let Some(block) = data.get(at..at + BLOCK) {
        if tar::is_zero_block(block) {
            return;
        }
        let Ok(h) = tar::parse_header(block) else {
            return;
        };
        assert!(!h.path.is_empty() && h.path.iter().all(|c| c != ".." && !c.is_empty()));
        let Some(skip) = h
            .size
            .checked_add(h.padding())
            .and_then(|n| usize::try_from(n).ok())
        else {
            return;
        };
        at = at.saturating_add(BLOCK).saturating_add(skip);
    }
}

/// A `backup_manifest` as sent, and the same bytes with a correct
/// `Manifest-Checksum` member appended (the input then being everything
/// before it, as PostgreSQL writes it), so that parsing gets past the
/// checksum.
pub fn backup_manifest(data: &[u8]) {
    let _ = Manifest::parse(data);
    let mut fixed = data.to_vec();
    let sum = hex::encode(Sha256::digest(data));
    fixed.extend_from_slice(format!("\"Manifest-Checksum\": \"{sum}\"}}\n").as_bytes());
    if let Ok(m) = Manifest::parse(&fixed) {
        let _ = m.bytes();
    }
}

/// Text a server or a repository gave about WAL, read by every parser of
/// it: a timeline history file (its entries and where a timeline began),
/// capture positions, LSNs, `SHOW` sizes and segment names, the segment
/// size taken from the first line (so that invalid sizes are tried too).
pub fn wal_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = wal::history_entries(text);
    let _ = wal::history_start(text);
    let size = text
        .lines()
        .next()
        .and_then(lsn::parse_setting_size)
        .unwrap_or(16 << 20);
    for word in text.split_whitespace() {
        let _ = wal::parse_position(word);
        if let Ok(l) = Lsn::parse(word) {
            if is_wal_segment_size(size) {
                let _ = lsn::wal_file_name(1, l.segment(size), size);
            }
        }
        let _ = lsn::parse_setting_size(word);
        if let Ok((tli, segno)) = wal::parse_wal_name(word, size) {
            assert_eq!(
                lsn::wal_file_name(tli, segno, size),
                word.to_ascii_uppercase()
            );
        }
    }
}

/// A `pg_dump` plain-format script (what a logical backup stores and a
/// restore reads back): statements split by SQL's quoting rules, `COPY`
/// data blocks, entry headers, and what a restore derives from them.
pub fn dump_script(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = script::tokens(text);
    let _ = script::roles_named(text);
    let Ok(s) = script::Script::parse(text) else {
        return;
    };
    let _ = s.session_settings();
    for e in &s.entries {
        let _ = (e.label(), e.qualified_names(), e.sql_text());
    }
}
