//! The RDB format: a streaming parser, value decoders, `DUMP` payloads and
//! a writer.
//!
//! Written from Redis's description of the format (`rdb.h`, the RDB
//! file-format notes): an RDB is `REDIS` plus a 4-digit version, then
//! records, each introduced by a byte that is either an opcode (database
//! selector, resize hint, expiry, LRU/LFU hints, auxiliary field, module
//! auxiliary data, function library, end of file) or a value type followed
//! by a key string and the value. After the end-of-file opcode come 8
//! bytes of CRC-64/Jones over everything before them (0 when the server
//! runs with `rdbchecksum no`).
//!
//! Lengths take 1, 2, 5 or 9 bytes: the top two bits of the first byte
//! say 6-bit, 14-bit (big-endian), 32- or 64-bit (big-endian, after
//! `0x80`/`0x81`), or a special string encoding (8/16/32-bit integer,
//! LZF-compressed string).

pub mod decode;
mod filter;
mod format;
mod input;
mod lzf;
mod parser;
mod writer;

pub use filter::RdbFilter;
pub use format::{module_type_name, opcode, rdb_version_of_server, types, MAX_RDB_VERSION};
pub(crate) use input::crc64;
pub use input::{RdbError, RdbErrorKind, RdbResult};
pub use lzf::lzf_decompress;
pub use parser::{Event, KeyEntry, Parser};
pub use writer::RdbWriter;

/// Builds a `DUMP`/`RESTORE` payload: the value type, the value's raw RDB
/// encoding, the RDB version (2 bytes, little-endian) and the CRC64 of all
/// of that (8 bytes, little-endian).
pub fn dump_payload(rdb_type: u8, value: &[u8], rdb_version: u32) -> Vec<u8> {
    let mut p = Vec::with_capacity(value.len() + 11);
    p.push(rdb_type);
    p.extend_from_slice(value);
    p.extend_from_slice(&(rdb_version as u16).to_le_bytes());
    let crc = crc64(&p);
    p.extend_from_slice(&crc.to_le_bytes());
    p
}

/// The module type name of a module value (value type 7 starts with the
/// module id), `None` for other values.
pub fn module_of_value(rdb_type: u8, value: &[u8]) -> Option<String> {
    if rdb_type != types::MODULE_2 {
        return None;
    }
    let mut inp = input::Input::new(value, false);
    inp.plain_len().ok().map(module_type_name)
}

/// Splits a `DUMP` payload into value type, raw value encoding and RDB
/// version, checking its CRC64.
///
/// # Errors
///
/// A payload too short, or a checksum that does not match.
pub fn split_dump_payload(p: &[u8]) -> Result<(u8, &[u8], u32), String> {
    if p.len() < 11 {
        return Err(format!("DUMP payload of {} bytes is too short", p.len()));
    }
    let (body, crc) = p.split_at(p.len() - 8);
    let stored = u64::from_le_bytes(crc.try_into().map_err(|_| "bad payload")?);
    let computed = crc64(body);
    if stored != computed {
        return Err(format!(
            "DUMP payload checksum mismatch (stored {stored:016x}, computed {computed:016x})"
        ));
    }
    let n = body.len();
    let version = u32::from(u16::from_le_bytes([body[n - 2], body[n - 1]]));
    Ok((body[0], &body[1..n - 2], version))
}

#[cfg(test)]
mod tests;
