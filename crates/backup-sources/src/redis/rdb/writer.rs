//! Writing RDB files: used by `export --format rdb` to turn key-level
//! snapshots into a `dump.rdb`, and by tests to build fixtures.

use std::io::Write;

use super::format::opcode;
use super::input::CRC64;

/// Writes an RDB record by record and appends the CRC64 at the end.
pub struct RdbWriter<W: Write> {
    out: W,
    crc: crc::Digest<'static, u64, crc::Table<16>>,
    written: u64,
}

impl<W: Write> RdbWriter<W> {
    /// Starts an RDB of `version` (written as `REDIS` and 4 digits).
    ///
    /// # Errors
    ///
    /// Write errors.
    pub fn new(out: W, version: u32) -> std::io::Result<Self> {
        let mut w = RdbWriter {
            out,
            crc: CRC64.digest(),
            written: 0,
        };
        w.raw(format!("REDIS{version:04}").as_bytes())?;
        Ok(w)
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes bytes as they are.
    ///
    /// # Errors
    ///
    /// Write errors.
    pub fn raw(&mut self, b: &[u8]) -> std::io::Result<()> {
        self.crc.update(b);
        self.written += b.len() as u64;
        self.out.write_all(b)
    }

    /// Writes a length in the shortest form.
    ///
    /// # Errors
    ///
    /// Write errors.
    pub fn len(&mut self, n: u64) -> std::io::Result<()> {
        if n < 1 << 6 {
            self.raw(&[n as u8])
        } else if n < 1 << 14 {
            self.raw(&[0x40 | (n >> 8) as u8, n as u8])
        } else if let Ok(n32) = u32::try_from(n) {
            self.raw(&[0x80])?;
            self.raw(&n32.to_be_bytes())
        } else {
            self.raw(&[0x81])?;
            self.raw(&n.to_be_bytes())
        }
    }

    /// Writes a plain (uncompressed, not integer-encoded) string.
    ///
    /// # Errors
    ///
    /// Write errors.
    pub fn string(&mut self, s: &[u8]) -> std::io::Result<()> {
        self.len(s.len() as u64)?;
        self.raw(s)
    }

    /// An auxiliary field.
    ///
    /// # Errors
    ///
    /// Write errors.
    pub fn aux(&mut self, key: &[u8], value: &[u8]) -> std::io::Result<()> {
        self.raw(&[opcode::AUX])?;
        self.string(key)?;
        self.string(value)
    }

    /// A database selector.
    ///
    /// # Errors
    ///
    /// Write errors.
    pub fn select_db(&mut self, db: u64) -> std::io::Result<()> {
        self.raw(&[opcode::SELECTDB])?;
        self.len(db)
    }

    /// A database size hint.
    ///
    /// # Errors
    ///
    /// Write errors.
    pub fn resize_db(&mut self, keys: u64, expires: u64) -> std::io::Result<()> {
        self.raw(&[opcode::RESIZEDB])?;
        self.len(keys)?;
        self.len(expires)
    }

    /// A function library whose string is given in its raw RDB encoding.
    ///
    /// # Errors
    ///
    /// Write errors.
    pub fn function_raw(&mut self, raw: &[u8]) -> std::io::Result<()> {
        self.raw(&[opcode::FUNCTION2])?;
        self.raw(raw)
    }

    /// A key: optional expiry (ms since the epoch), value type, key name
    /// and the value's raw encoding.
    ///
    /// # Errors
    ///
    /// Write errors.
    pub fn key(
        &mut self,
        expire_ms: Option<i64>,
        rdb_type: u8,
        key: &[u8],
        value: &[u8],
    ) -> std::io::Result<()> {
        if let Some(ms) = expire_ms {
            self.raw(&[opcode::EXPIRETIME_MS])?;
            self.raw(&ms.to_le_bytes())?;
        }
        self.raw(&[rdb_type])?;
        self.string(key)?;
        self.raw(value)
    }

    /// Writes the end-of-file opcode and the checksum; returns the output.
    ///
    /// # Errors
    ///
    /// Write errors.
    pub fn finish(mut self) -> std::io::Result<W> {
        self.raw(&[opcode::EOF])?;
        let crc = self.crc.clone().finalize();
        self.out.write_all(&crc.to_le_bytes())?;
        self.written += 8;
        self.out.flush()?;
        Ok(self.out)
    }
}
