//! Copying an RDB with some keys left out (`backup rewrite
//! --redis-delete`): every other byte is copied as it was (auxiliary
//! fields, function libraries, module data, size hints, LRU/LFU hints),
//! a left-out key's whole record goes (its expiry and idle/frequency
//! prefixes too), and the checksum is computed anew over what is
//! written. An RDB without a checksum (`rdbchecksum no`, or a version
//! before 5) keeps having none. Bytes after the end-of-file marker,
//! which Redis ignores, are copied too, so an RDB with nothing left out
//! is copied byte for byte.
//!
//! The parser reads through a tee that keeps what it consumed until the
//! record is known: memory is bounded by the largest record, not the
//! file.

use std::io::Read;
use std::sync::{Arc, Mutex, PoisonError};

use crc::{Digest, Table};

use super::input::CRC64;
use super::parser::{Event, KeyEntry, Parser};

/// The bytes a reader handed out and nobody took yet.
#[derive(Default)]
struct Seen {
    bytes: Vec<u8>,
    /// Absolute offset of `bytes[0]`.
    base: u64,
}

/// Reads `inner`, keeping a copy of what was read in `seen`.
struct Tee<R> {
    inner: R,
    seen: Arc<Mutex<Seen>>,
}

impl<R: Read> Read for Tee<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.seen
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .bytes
            .extend_from_slice(&buf[..n]);
        Ok(n)
    }
}

/// An RDB with the keys `keep` refuses left out, as a reader.
pub struct RdbFilter<R, K> {
    parser: Parser<Tee<R>>,
    seen: Arc<Mutex<Seen>>,
    keep: K,
    crc: Digest<'static, u64, Table<16>>,
    out: Vec<u8>,
    pos: usize,
    done: bool,
}

impl<R: Read, K: FnMut(&KeyEntry) -> bool> RdbFilter<R, K> {
    /// Reads the header of the RDB `src`; `keep` is asked about each key
    /// (its name, database, type and expiry; no value).
    ///
    /// # Errors
    ///
    /// Not an RDB, or a version this program cannot read.
    pub fn new(src: R, keep: K) -> super::RdbResult<Self> {
        let seen = Arc::new(Mutex::new(Seen::default()));
        let parser = Parser::new(
            Tee {
                inner: src,
                seen: seen.clone(),
            },
            false,
        )?;
        Ok(RdbFilter {
            parser,
            seen,
            keep,
            crc: CRC64.digest(),
            out: Vec::new(),
            pos: 0,
            done: false,
        })
    }

    /// Moves the bytes before `upto` out of the tee: into the output
    /// (and its checksum) when `copy`, else dropped.
    fn take(&mut self, upto: u64, copy: bool) {
        let mut seen = self.seen.lock().unwrap_or_else(PoisonError::into_inner);
        let n = usize::try_from(upto.saturating_sub(seen.base))
            .unwrap_or(usize::MAX)
            .min(seen.bytes.len());
        if copy {
            self.crc.update(&seen.bytes[..n]);
            self.out.extend_from_slice(&seen.bytes[..n]);
        }
        seen.bytes.drain(..n);
        seen.base += n as u64;
    }

    /// Reads records until some output is ready or the RDB ended.
    fn fill(&mut self) -> super::RdbResult<()> {
        self.out.clear();
        self.pos = 0;
        while self.out.len() < 1 << 16 && !self.done {
            let start = self.parser.offset();
            let event = self.parser.next()?;
            let end = self.parser.offset();
            match event {
                Some(Event::Key(k)) => {
                    let keep = (self.keep)(&k);
                    self.take(start, true);
                    self.take(end, keep);
                }
                Some(Event::End { stored }) => {
                    // The marker is copied, the checksum after it made anew.
                    self.take(start + 1, true);
                    if end > start + 1 {
                        let crc = if stored.is_some() {
                            self.crc.clone().finalize()
                        } else {
                            0
                        };
                        self.take(end, false);
                        self.out.extend_from_slice(&crc.to_le_bytes());
                    }
                    self.parser.trailing()?;
                    let after = self.parser.offset();
                    self.take(after, true);
                    self.done = true;
                }
                Some(_) => self.take(end, true),
                None => self.done = true,
            }
        }
        Ok(())
    }
}

impl<R: Read, K: FnMut(&KeyEntry) -> bool> Read for RdbFilter<R, K> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.pos == self.out.len() && !self.done {
            self.fill()
                .map_err(|e| std::io::Error::other(format!("the RDB: {e}")))?;
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::super::format::opcode;
    use super::super::RdbWriter;
    use super::*;

    fn rdb(keys: &[(&[u8], Option<i64>)], trailing: &[u8]) -> Vec<u8> {
        let mut w = RdbWriter::new(Vec::new(), 11).unwrap();
        w.aux(b"redis-ver", b"7.0.15").unwrap();
        w.select_db(0).unwrap();
        w.resize_db(keys.len() as u64, 0).unwrap();
        for (k, exp) in keys {
            // A plain string value: its length and bytes.
            let mut v = vec![5u8];
            v.extend_from_slice(b"value");
            w.key(*exp, 0, k, &v).unwrap();
        }
        let mut out = w.finish().unwrap();
        out.extend_from_slice(trailing);
        out
    }

    fn filtered(input: &[u8], drop: &[u8]) -> Vec<u8> {
        let mut f = RdbFilter::new(input, |k: &KeyEntry| k.key != drop).unwrap();
        let mut out = Vec::new();
        // Small reads, to cross refills.
        let mut buf = [0u8; 7];
        loop {
            let n = f.read(&mut buf).unwrap();
            if n == 0 {
                break;
            }
            out.extend_from_slice(&buf[..n]);
        }
        out
    }

    #[test]
    fn keys_go_with_their_expiry_and_the_checksum_is_made_anew() {
        let all = rdb(
            &[(b"a", None), (b"b", Some(1_700_000_000_000)), (b"c", None)],
            b"",
        );
        assert_eq!(
            filtered(&all, b"nothing"),
            all,
            "nothing left out: the same bytes"
        );
        let got = filtered(&all, b"b");
        let want = rdb(&[(b"a", None), (b"c", None)], b"");
        // The size hint stays as it was (3): only it differs.
        let hint = want.iter().position(|&b| b == opcode::RESIZEDB).unwrap();
        let mut want_with_hint = want.clone();
        want_with_hint[hint + 1] = 3;
        let body = want_with_hint.len() - 8;
        let crc = CRC64.checksum(&want_with_hint[..body]);
        want_with_hint[body..].copy_from_slice(&crc.to_le_bytes());
        assert_eq!(got, want_with_hint);
        let mut p = Parser::new(&got[..], false).unwrap();
        let mut names = Vec::new();
        while let Some(e) = p.next().unwrap() {
            if let Event::Key(k) = e {
                names.push(k.key);
            }
        }
        assert_eq!(names, [b"a".to_vec(), b"c".to_vec()]);
    }

    #[test]
    fn trailing_bytes_are_kept_and_damage_is_an_error() {
        let all = rdb(&[(b"a", None)], b"\0\0junk");
        assert_eq!(filtered(&all, b"x"), all);
        let mut bad = rdb(&[(b"a", None), (b"b", None)], b"");
        let at = bad.len() - 12;
        bad[at] ^= 0xff;
        let mut f = RdbFilter::new(&bad[..], |_: &KeyEntry| true).unwrap();
        let mut out = Vec::new();
        assert!(f.read_to_end(&mut out).is_err());
    }
}
