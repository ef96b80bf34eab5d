//! The stream format of key-level (`mode=keys`) snapshots.
//!
//! ```text
//! stream  = magic version frame* end
//! magic   = "REDISKEYS"                      9 bytes
//! version = 0x01                             1 byte
//! frame   = db | key | functions
//! db      = 'D' u32:db                       following keys belong to this database
//! key     = 'K' u32:len key i64:expire_ms u64:len payload
//!                                            expire_ms: absolute, ms since the Unix
//!                                            epoch, -1 for none; payload: the
//!                                            server's DUMP output (value type, value
//!                                            encoding, RDB version, CRC64)
//! functions = 'F' u64:len payload            the server's FUNCTION DUMP output
//! end     = 'E' u64:keys                     the number of key frames; its absence
//!                                            means a truncated stream
//! ```
//!
//! Integers are little-endian. Keys of one database are contiguous.

use std::io::Read;

use bytes::{BufMut, BytesMut};

/// Magic bytes at the start.
pub const MAGIC: &[u8; 9] = b"REDISKEYS";
/// Format version.
pub const VERSION: u8 = 1;

/// Appends frames to a buffer.
#[derive(Debug, Default)]
pub struct FrameWriter {
    /// Encoded bytes not yet handed on.
    pub buf: BytesMut,
    /// Key frames written.
    pub keys: u64,
}

impl FrameWriter {
    /// A writer that has written the header.
    pub fn new() -> Self {
        let mut w = FrameWriter::default();
        w.buf.put_slice(MAGIC);
        w.buf.put_u8(VERSION);
        w
    }

    /// A database frame.
    pub fn db(&mut self, db: u32) {
        self.buf.put_u8(b'D');
        self.buf.put_u32_le(db);
    }

    /// A key frame.
    pub fn key(&mut self, key: &[u8], expire_ms: Option<i64>, payload: &[u8]) {
        self.buf.reserve(key.len() + payload.len() + 25);
        self.buf.put_u8(b'K');
        self.buf.put_u32_le(key.len() as u32);
        self.buf.put_slice(key);
        self.buf.put_i64_le(expire_ms.unwrap_or(-1));
        self.buf.put_u64_le(payload.len() as u64);
        self.buf.put_slice(payload);
        self.keys += 1;
    }

    /// A functions frame.
    pub fn functions(&mut self, payload: &[u8]) {
        self.buf.put_u8(b'F');
        self.buf.put_u64_le(payload.len() as u64);
        self.buf.put_slice(payload);
    }

    /// The end frame.
    pub fn end(&mut self) {
        self.buf.put_u8(b'E');
        self.buf.put_u64_le(self.keys);
    }
}

/// A frame read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// Following keys belong to this database.
    Db(u32),
    /// A key.
    Key {
        /// Name.
        key: Vec<u8>,
        /// Absolute expiry in ms.
        expire_ms: Option<i64>,
        /// `DUMP` payload.
        payload: Vec<u8>,
    },
    /// `FUNCTION DUMP` payload.
    Functions(Vec<u8>),
    /// The end, with the number of keys.
    End(u64),
}

/// Reads frames.
pub struct FrameReader<R> {
    src: R,
    offset: u64,
    keys: u64,
    ended: bool,
}

/// Longest key accepted (Redis's own limit for strings).
const MAX_KEY: u32 = 512 * 1024 * 1024;

impl<R: Read> FrameReader<R> {
    /// Checks the header.
    ///
    /// # Errors
    ///
    /// Not a key-level stream, or an unknown version.
    pub fn new(mut src: R) -> Result<Self, String> {
        let mut head = [0u8; 10];
        src.read_exact(&mut head)
            .map_err(|e| format!("key stream: cannot read the header: {e}"))?;
        if &head[..9] != MAGIC {
            return Err("not a key-level Redis stream (bad magic)".to_owned());
        }
        if head[9] != VERSION {
            return Err(format!(
                "key-level Redis stream version {} is not supported (this program reads version {VERSION})",
                head[9]
            ));
        }
        Ok(FrameReader {
            src,
            offset: 10,
            keys: 0,
            ended: false,
        })
    }

    fn exact<const N: usize>(&mut self) -> Result<[u8; N], String> {
        let mut a = [0u8; N];
        self.src.read_exact(&mut a).map_err(|e| self.err(&e))?;
        self.offset += N as u64;
        Ok(a)
    }

    fn vec(&mut self, n: u64) -> Result<Vec<u8>, String> {
        let mut v = Vec::new();
        let got = (&mut self.src)
            .take(n)
            .read_to_end(&mut v)
            .map_err(|e| self.err(&e))?;
        if got as u64 != n {
            return Err(format!(
                "key stream truncated at byte offset {}",
                self.offset + got as u64
            ));
        }
        self.offset += n;
        Ok(v)
    }

    fn err(&self, e: &std::io::Error) -> String {
        if e.kind() == std::io::ErrorKind::UnexpectedEof {
            format!("key stream truncated at byte offset {}", self.offset)
        } else {
            format!("reading the key stream at byte offset {}: {e}", self.offset)
        }
    }

    /// The next frame; `None` after the end frame.
    ///
    /// # Errors
    ///
    /// Truncation, an unknown frame, or an end frame whose count does not
    /// match.
    pub fn next_frame(&mut self) -> Result<Option<Frame>, String> {
        if self.ended {
            return Ok(None);
        }
        let at = self.offset;
        let [tag] = self.exact::<1>()?;
        Ok(Some(match tag {
            b'D' => Frame::Db(u32::from_le_bytes(self.exact()?)),
            b'K' => {
                let klen = u32::from_le_bytes(self.exact()?);
                if klen > MAX_KEY {
                    return Err(format!(
                        "key stream corrupt at byte offset {at}: key of {klen} bytes"
                    ));
                }
                let key = self.vec(u64::from(klen))?;
                let exp = i64::from_le_bytes(self.exact()?);
                let plen = u64::from_le_bytes(self.exact()?);
                let payload = self.vec(plen)?;
                self.keys += 1;
                Frame::Key {
                    key,
                    expire_ms: (exp >= 0).then_some(exp),
                    payload,
                }
            }
            b'F' => {
                let plen = u64::from_le_bytes(self.exact()?);
                Frame::Functions(self.vec(plen)?)
            }
            b'E' => {
                let n = u64::from_le_bytes(self.exact()?);
                if n != self.keys {
                    return Err(format!(
                        "key stream corrupt: the end frame counts {n} keys, the stream holds {}",
                        self.keys
                    ));
                }
                let mut extra = [0u8; 1];
                if self.src.read(&mut extra).map_err(|e| self.err(&e))? != 0 {
                    return Err(format!(
                        "key stream corrupt: bytes after the end frame at byte offset {}",
                        self.offset + 9
                    ));
                }
                self.ended = true;
                Frame::End(n)
            }
            other => {
                return Err(format!(
                    "key stream corrupt at byte offset {at}: unknown frame 0x{other:02x}"
                ))
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_truncation() {
        let mut w = FrameWriter::new();
        w.functions(b"fn");
        w.db(3);
        w.key(b"k1", None, b"payload1");
        w.key(b"\x00bin", Some(1_700_000_000_000), b"p2");
        w.end();
        let bytes = w.buf.to_vec();
        let mut r = FrameReader::new(&bytes[..]).unwrap();
        let mut frames = Vec::new();
        while let Some(f) = r.next_frame().unwrap() {
            frames.push(f);
        }
        assert_eq!(
            frames,
            vec![
                Frame::Functions(b"fn".to_vec()),
                Frame::Db(3),
                Frame::Key {
                    key: b"k1".to_vec(),
                    expire_ms: None,
                    payload: b"payload1".to_vec()
                },
                Frame::Key {
                    key: b"\x00bin".to_vec(),
                    expire_ms: Some(1_700_000_000_000),
                    payload: b"p2".to_vec()
                },
                Frame::End(2),
            ]
        );
        // Every proper prefix fails (no silent truncation).
        for cut in 10..bytes.len() {
            let mut r = FrameReader::new(&bytes[..cut]).unwrap();
            let mut res = Ok(Some(Frame::End(0)));
            while let Ok(Some(_)) = res {
                res = r.next_frame();
            }
            assert!(res.is_err(), "prefix of {cut} bytes was accepted");
        }
        assert!(FrameReader::new(&b"REDIS0011xxxx"[..]).is_err());
    }
}
