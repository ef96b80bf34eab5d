//! Buffered input for the RDB parser: absolute offsets for error
//! messages, a running CRC64 of everything consumed, and an optional
//! recording of consumed bytes (to copy a value's raw encoding).

use std::fmt;
use std::io::Read;

use crc::{Crc, Digest, Table};

/// CRC-64/Jones as Redis computes it (reflected, polynomial
/// 0xad93d23594c935a9, initial value 0, no final xor).
pub(crate) static CRC64: Crc<u64, Table<16>> = Crc::<u64, Table<16>>::new(&crc::CRC_64_REDIS);

/// CRC64 of a byte slice.
pub(crate) fn crc64(data: &[u8]) -> u64 {
    CRC64.checksum(data)
}

/// Size of the read buffer.
const BUF: usize = 256 * 1024;
/// Largest piece read into a growing vector at once (a corrupt length
/// fails as truncated input instead of allocating it all up front).
const STEP: usize = 1024 * 1024;

/// What went wrong reading an RDB.
#[derive(Debug)]
pub enum RdbErrorKind {
    /// The input ended inside a record.
    Truncated,
    /// A structure or checksum is wrong.
    Corrupt(String),
    /// Valid but not readable by this program (newer version, pre-release
    /// formats).
    Unsupported(String),
    /// Reading the underlying input failed.
    Io(std::io::Error),
}

/// An error reading an RDB, with the byte offset where it was found.
#[derive(Debug)]
pub struct RdbError {
    /// Byte offset from the start of the RDB.
    pub offset: u64,
    /// What went wrong.
    pub kind: RdbErrorKind,
}

impl fmt::Display for RdbError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let off = self.offset;
        match &self.kind {
            RdbErrorKind::Truncated => write!(
                f,
                "the RDB is truncated: it ends at byte offset {off} inside a record"
            ),
            RdbErrorKind::Corrupt(m) => write!(f, "the RDB is corrupt at byte offset {off}: {m}"),
            RdbErrorKind::Unsupported(m) => write!(f, "RDB at byte offset {off}: {m}"),
            RdbErrorKind::Io(e) => write!(f, "reading the RDB at byte offset {off}: {e}"),
        }
    }
}

impl std::error::Error for RdbError {}

/// Result of RDB reading.
pub type RdbResult<T> = Result<T, RdbError>;

/// A length as stored in an RDB: a plain number or a special string
/// encoding (integer or LZF).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Len {
    Plain(u64),
    Encoded(u8),
}

/// The buffered reader under the parser.
pub(crate) struct Input<R> {
    src: R,
    buf: Vec<u8>,
    pos: usize,
    end: usize,
    /// Absolute offset of `buf[0]`.
    base: u64,
    crc: Option<Digest<'static, u64, Table<16>>>,
    /// Bytes before this position have been fed to the CRC.
    crc_from: usize,
    /// Whether consumed bytes are copied to `rec`.
    recording: bool,
    /// The recording, kept between values so that it is not grown anew
    /// for each.
    rec: Vec<u8>,
}

impl<R: Read> Input<R> {
    pub(crate) fn new(src: R, with_crc: bool) -> Self {
        Input {
            src,
            buf: vec![0; BUF],
            pos: 0,
            end: 0,
            base: 0,
            crc: with_crc.then(|| CRC64.digest()),
            crc_from: 0,
            recording: false,
            rec: Vec::new(),
        }
    }

    /// Offset of the next byte.
    pub(crate) fn offset(&self) -> u64 {
        self.base + self.pos as u64
    }

    pub(crate) fn corrupt(&self, msg: impl Into<String>) -> RdbError {
        RdbError {
            offset: self.offset(),
            kind: RdbErrorKind::Corrupt(msg.into()),
        }
    }

    pub(crate) fn corrupt_at(offset: u64, msg: impl Into<String>) -> RdbError {
        RdbError {
            offset,
            kind: RdbErrorKind::Corrupt(msg.into()),
        }
    }

    pub(crate) fn unsupported(&self, msg: impl Into<String>) -> RdbError {
        RdbError {
            offset: self.offset(),
            kind: RdbErrorKind::Unsupported(msg.into()),
        }
    }

    /// Moves unconsumed bytes to the front and reads until at least `n`
    /// bytes (at most the buffer size) are available, or the input ends.
    /// Returns the bytes available.
    fn refill(&mut self, n: usize) -> RdbResult<usize> {
        if let Some(c) = &mut self.crc {
            c.update(&self.buf[self.crc_from..self.pos]);
        }
        self.buf.copy_within(self.pos..self.end, 0);
        self.base += self.pos as u64;
        self.end -= self.pos;
        self.pos = 0;
        self.crc_from = 0;
        while self.end < n {
            match self.src.read(&mut self.buf[self.end..]) {
                Ok(0) => break,
                Ok(r) => self.end += r,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => {
                    return Err(RdbError {
                        offset: self.base + self.end as u64,
                        kind: RdbErrorKind::Io(e),
                    })
                }
            }
        }
        Ok(self.end)
    }

    /// Makes `n` bytes (at most the buffer size) available.
    fn need(&mut self, n: usize) -> RdbResult<()> {
        if self.end - self.pos >= n {
            return Ok(());
        }
        if self.refill(n)? < n {
            return Err(RdbError {
                offset: self.base + self.end as u64,
                kind: RdbErrorKind::Truncated,
            });
        }
        Ok(())
    }

    fn advance(&mut self, n: usize) {
        if self.recording {
            self.rec
                .extend_from_slice(&self.buf[self.pos..self.pos + n]);
        }
        self.pos += n;
    }

    pub(crate) fn u8(&mut self) -> RdbResult<u8> {
        self.need(1)?;
        let b = self.buf[self.pos];
        self.advance(1);
        Ok(b)
    }

    pub(crate) fn array<const N: usize>(&mut self) -> RdbResult<[u8; N]> {
        self.need(N)?;
        let mut a = [0u8; N];
        a.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.advance(N);
        Ok(a)
    }

    /// Reads `n` bytes into a new vector.
    pub(crate) fn bytes(&mut self, n: u64) -> RdbResult<Vec<u8>> {
        let mut out = Vec::with_capacity(usize::try_from(n).unwrap_or(usize::MAX).min(STEP));
        let mut left = n;
        while left > 0 {
            if self.pos == self.end {
                self.need(1)?;
            }
            let take = (self.end - self.pos).min(usize::try_from(left).unwrap_or(usize::MAX));
            out.extend_from_slice(&self.buf[self.pos..self.pos + take]);
            self.advance(take);
            left -= take as u64;
        }
        Ok(out)
    }

    /// Consumes `n` bytes without keeping them (they are still recorded
    /// and checksummed).
    pub(crate) fn skip(&mut self, n: u64) -> RdbResult<()> {
        let mut left = n;
        while left > 0 {
            if self.pos == self.end {
                self.need(1)?;
            }
            let take = (self.end - self.pos).min(usize::try_from(left).unwrap_or(usize::MAX));
            self.advance(take);
            left -= take as u64;
        }
        Ok(())
    }

    /// Starts copying consumed bytes.
    pub(crate) fn start_recording(&mut self) {
        self.recording = true;
        self.rec.clear();
    }

    /// Stops copying and returns what was consumed since
    /// [`Input::start_recording`].
    pub(crate) fn take_recording(&mut self) -> Vec<u8> {
        self.recording = false;
        let out = self.rec.as_slice().to_vec();
        self.shrink_recording();
        out
    }

    /// Stops copying and returns the `DUMP` payload of what was consumed
    /// since [`Input::start_recording`], a value of type `rdb_type`: built
    /// in one allocation of its final size.
    pub(crate) fn take_recording_as_payload(&mut self, rdb_type: u8, rdb_version: u32) -> Vec<u8> {
        self.recording = false;
        let mut p = Vec::with_capacity(self.rec.len() + 11);
        p.push(rdb_type);
        p.extend_from_slice(&self.rec);
        p.extend_from_slice(&(rdb_version as u16).to_le_bytes());
        let crc = crc64(&p);
        p.extend_from_slice(&crc.to_le_bytes());
        self.shrink_recording();
        p
    }

    /// Drops a recording buffer that a large value grew (memory stays
    /// bounded by the largest value only while it is read).
    fn shrink_recording(&mut self) {
        if self.rec.capacity() > BUF {
            self.rec = Vec::new();
        }
    }

    /// The CRC64 of everything consumed so far.
    pub(crate) fn checksum(&mut self) -> Option<u64> {
        let from = self.crc_from;
        let pos = self.pos;
        let c = self.crc.as_mut()?;
        c.update(&self.buf[from..pos]);
        self.crc_from = pos;
        Some(c.clone().finalize())
    }

    /// Whether the input has no byte left.
    pub(crate) fn at_end(&mut self) -> RdbResult<bool> {
        if self.pos < self.end {
            return Ok(false);
        }
        Ok(self.refill(1)? == 0)
    }

    /// A length (see the module documentation of the format).
    pub(crate) fn len(&mut self) -> RdbResult<Len> {
        let b = self.u8()?;
        match b >> 6 {
            0 => Ok(Len::Plain(u64::from(b & 0x3f))),
            1 => {
                let b2 = self.u8()?;
                Ok(Len::Plain((u64::from(b & 0x3f) << 8) | u64::from(b2)))
            }
            2 => match b {
                0x80 => Ok(Len::Plain(u64::from(u32::from_be_bytes(self.array()?)))),
                0x81 => Ok(Len::Plain(u64::from_be_bytes(self.array()?))),
                _ => Err(Self::corrupt_at(
                    self.offset() - 1,
                    format!("invalid length prefix 0x{b:02x}"),
                )),
            },
            _ => Ok(Len::Encoded(b & 0x3f)),
        }
    }

    /// A plain length (an encoded string marker is an error here).
    pub(crate) fn plain_len(&mut self) -> RdbResult<u64> {
        let at = self.offset();
        match self.len()? {
            Len::Plain(n) => Ok(n),
            Len::Encoded(e) => Err(Self::corrupt_at(
                at,
                format!("expected a length, found a string encoding marker ({e})"),
            )),
        }
    }

    /// A count of elements, bounded so that a corrupt count cannot make a
    /// caller loop for ever on a short input (each element takes at least
    /// one byte).
    pub(crate) fn count(&mut self) -> RdbResult<u64> {
        let at = self.offset();
        let n = self.plain_len()?;
        if n > 1 << 48 {
            return Err(Self::corrupt_at(
                at,
                format!("implausible element count {n}"),
            ));
        }
        Ok(n)
    }

    /// A string, decoded (integers as decimal text, LZF decompressed).
    pub(crate) fn string(&mut self) -> RdbResult<Vec<u8>> {
        let at = self.offset();
        match self.len()? {
            Len::Plain(n) => self.bytes(n),
            Len::Encoded(0) => Ok((self.u8()? as i8).to_string().into_bytes()),
            Len::Encoded(1) => Ok(i16::from_le_bytes(self.array()?).to_string().into_bytes()),
            Len::Encoded(2) => Ok(i32::from_le_bytes(self.array()?).to_string().into_bytes()),
            Len::Encoded(3) => {
                let clen = self.plain_len()?;
                let ulen = self.plain_len()?;
                if ulen > 1 << 40 {
                    return Err(Self::corrupt_at(
                        at,
                        format!("implausible LZF length {ulen}"),
                    ));
                }
                let data = self.bytes(clen)?;
                super::lzf::lzf_decompress(&data, ulen as usize)
                    .map_err(|m| Self::corrupt_at(at, format!("LZF string: {m}")))
            }
            Len::Encoded(e) => Err(Self::corrupt_at(at, format!("unknown string encoding {e}"))),
        }
    }

    /// The first `n` bytes of a string (fewer when it is shorter), decoded
    /// (LZF decompressed); the rest of it is consumed.
    pub(crate) fn string_prefix(&mut self, n: usize) -> RdbResult<Vec<u8>> {
        let at = self.offset();
        match self.len()? {
            Len::Plain(len) => {
                let take = len.min(n as u64);
                let head = self.bytes(take)?;
                self.skip(len - take)?;
                Ok(head)
            }
            Len::Encoded(3) => {
                let clen = self.plain_len()?;
                let ulen = self.plain_len()?;
                if ulen > 1 << 40 {
                    return Err(Self::corrupt_at(
                        at,
                        format!("implausible LZF length {ulen}"),
                    ));
                }
                let data = self.bytes(clen)?;
                super::lzf::lzf_prefix(&data, ulen as usize, n)
                    .map_err(|m| Self::corrupt_at(at, format!("LZF string: {m}")))
            }
            Len::Encoded(0) => Ok((self.u8()? as i8).to_string().into_bytes()),
            Len::Encoded(1) => Ok(i16::from_le_bytes(self.array()?).to_string().into_bytes()),
            Len::Encoded(2) => Ok(i32::from_le_bytes(self.array()?).to_string().into_bytes()),
            Len::Encoded(e) => Err(Self::corrupt_at(at, format!("unknown string encoding {e}"))),
        }
    }

    /// Skips self-describing module data (opcodes with their values) up
    /// to its end opcode.
    pub(crate) fn skip_module_body(&mut self) -> RdbResult<()> {
        loop {
            let at = self.offset();
            match self.plain_len()? {
                0 => return Ok(()),
                1 | 2 => {
                    self.plain_len()?;
                }
                3 => self.skip(4)?,
                4 => self.skip(8)?,
                5 => self.skip_string()?,
                op => {
                    return Err(Self::corrupt_at(
                        at,
                        format!("module data: unknown opcode {op}"),
                    ))
                }
            }
        }
    }

    /// Skips a string without decoding it.
    pub(crate) fn skip_string(&mut self) -> RdbResult<()> {
        let at = self.offset();
        match self.len()? {
            Len::Plain(n) => self.skip(n),
            Len::Encoded(0) => self.skip(1),
            Len::Encoded(1) => self.skip(2),
            Len::Encoded(2) => self.skip(4),
            Len::Encoded(3) => {
                let clen = self.plain_len()?;
                let _ulen = self.plain_len()?;
                self.skip(clen)
            }
            Len::Encoded(e) => Err(Self::corrupt_at(at, format!("unknown string encoding {e}"))),
        }
    }
}
