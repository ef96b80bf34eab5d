//! Entry points for the fuzz targets in `fuzz/` (docs/FUZZING.md): each
//! hands bytes the program did not write to one of this module's parsers
//! and drives it to the end of its input. They return nothing: a fuzz run
//! fails only on a panic, an abort, an oversized allocation or a hang.
//! Compiled only with the `fuzzing` feature; not a stable interface.

use super::rdb::{self, Event, Parser};
use super::{follow, resp};

/// An RDB file or replication stream, read record by record three ways
/// (values skipped, values recorded and decoded, values as `DUMP`
/// payloads), then what follows its end.
pub fn rdb_stream(data: &[u8]) {
    for mode in 0..3 {
        let Ok(p) = Parser::new(data, mode > 0) else {
            return;
        };
        let mut p = match mode {
            0 => p.without_key_names(),
            1 => p,
            _ => p.dump_payloads(),
        };
        let version = p.version();
        loop {
            match p.next() {
                Ok(Some(Event::Key(k))) => {
                    let Some(v) = k.value else { continue };
                    if mode == 2 {
                        if let Ok((t, raw, ver)) = rdb::split_dump_payload(&v) {
                            assert_eq!((t, ver), (k.rdb_type, version));
                            let _ = rdb::decode::decode_value(t, raw);
                        }
                    } else {
                        let _ = rdb::decode::decode_value(k.rdb_type, &v);
                        let _ = rdb::module_of_value(k.rdb_type, &v);
                    }
                }
                Ok(Some(Event::End { .. })) => {
                    let _ = p.trailing();
                    break;
                }
                Ok(Some(_)) => {}
                Ok(None) | Err(_) => break,
            }
        }
    }
}

/// A `DUMP` payload (checked as `RESTORE` would), and the same bytes as a
/// value type followed by a raw value encoding (reaching the value
/// decoders without a valid checksum).
pub fn dump_payload(data: &[u8]) {
    if let Ok((t, raw, _)) = rdb::split_dump_payload(data) {
        let _ = rdb::decode::decode_value(t, raw);
    }
    if let Some((&t, raw)) = data.split_first() {
        let _ = rdb::decode::decode_value(t, raw);
        let _ = rdb::module_of_value(t, raw);
    }
}

/// LZF data: the first 4 bytes (little-endian) are the stated
/// uncompressed length, the rest the compressed data.
pub fn lzf(data: &[u8]) {
    if let Some((head, body)) = data.split_first_chunk::<4>() {
        let ulen = u32::from_le_bytes(*head) as usize;
        if let Ok(out) = rdb::lzf_decompress(body, ulen) {
            assert_eq!(out.len(), ulen);
        }
    }
}

/// A replication stream as RESP commands, the same bytes as pipelined
/// replies, and as a stored capture piece (framed commands, each parsed
/// as a command as replay does).
pub fn replication(data: &[u8]) {
    let mut at = 0;
    while let Ok(Some(c)) = resp::parse_command(&data[at..]) {
        assert!(c.len > 0 && at + c.len <= data.len());
        for a in &c.args {
            assert!(a.end <= c.len);
        }
        at += c.len;
    }
    let mut at = 0;
    while let Ok(Some(r)) = resp::skip_reply(&data[at..]) {
        assert!(r.len > 0 && at + r.len <= data.len());
        at += r.len;
    }
    for f in follow::frames(data, "fuzz") {
        let Ok(f) = f else { break };
        let _ = resp::parse_command(f.command);
    }
}
