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

/// The value of a string `DUMP` payload (value type 0), decoded (an
/// integer encoding as its decimal text, LZF decompressed; a plain string
/// borrowed from the payload); `None` for another value type or a payload
/// that does not decode whole. The CRC64 is not checked: the caller built
/// the payload.
pub(crate) fn string_of_payload(p: &[u8]) -> Option<std::borrow::Cow<'_, [u8]>> {
    use std::borrow::Cow;
    if p.len() < 11 || p[0] != types::STRING {
        return None;
    }
    let (len, rest) = slice_len(&p[1..p.len() - 10])?;
    let int = |v: i64| Some(Cow::Owned(v.to_string().into_bytes()));
    match (len, rest) {
        (Ok(n), _) => (rest.len() as u64 == n).then_some(Cow::Borrowed(rest)),
        (Err(0), &[byte]) => int(i64::from(byte as i8)),
        (Err(1), two) if two.len() == 2 => int(i64::from(i16::from_le_bytes([two[0], two[1]]))),
        (Err(2), four) if four.len() == 4 => {
            int(i64::from(i32::from_le_bytes(four.try_into().ok()?)))
        }
        (Err(3), _) => {
            let (Ok(clen), rest) = slice_len(rest)? else {
                return None;
            };
            let (Ok(ulen), data) = slice_len(rest)? else {
                return None;
            };
            if data.len() as u64 != clen || ulen > 1 << 40 {
                return None;
            }
            lzf_decompress(data, usize::try_from(ulen).ok()?)
                .ok()
                .map(Cow::Owned)
        }
        _ => None,
    }
}

/// An RDB length at the start of `b` (`Ok`), or a string encoding marker
/// (`Err`), and the bytes after it.
fn slice_len(b: &[u8]) -> Option<(Result<u64, u8>, &[u8])> {
    let (&first, rest) = b.split_first()?;
    Some(match first >> 6 {
        0 => (Ok(u64::from(first & 0x3f)), rest),
        1 => {
            let (&next, rest) = rest.split_first()?;
            (Ok((u64::from(first & 0x3f) << 8) | u64::from(next)), rest)
        }
        2 if first == 0x80 => {
            let (n, rest) = rest.split_first_chunk::<4>()?;
            (Ok(u64::from(u32::from_be_bytes(*n))), rest)
        }
        2 if first == 0x81 => {
            let (n, rest) = rest.split_first_chunk::<8>()?;
            (Ok(u64::from_be_bytes(*n)), rest)
        }
        2 => return None,
        _ => (Err(first & 0x3f), rest),
    })
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
