//! A streaming RDB parser: reads records one at a time with bounded
//! memory, finds the extent of every value without decoding it, and checks
//! the trailing CRC64.

use std::io::Read;

use super::format::{module_type_name, opcode, types, MAX_RDB_VERSION};
use super::input::{Input, RdbError, RdbErrorKind, RdbResult};

/// One key read from an RDB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEntry {
    /// Database number.
    pub db: u64,
    /// Key name.
    pub key: Vec<u8>,
    /// RDB value type (see [`super::types`]).
    pub rdb_type: u8,
    /// Absolute expiry in milliseconds since the Unix epoch.
    pub expire_ms: Option<i64>,
    /// LRU idle time in seconds (when the server used an LRU policy).
    pub idle: Option<u64>,
    /// LFU frequency (when the server used an LFU policy).
    pub freq: Option<u8>,
    /// The value's raw encoding, exactly as stored after the key (only
    /// when the parser records values), or its whole `DUMP` payload (with
    /// [`Parser::dump_payloads`]).
    pub value: Option<Vec<u8>>,
    /// For module values: the 9-character module type name.
    pub module: Option<String>,
    /// Whether the value has no element (an empty list, set, sorted set
    /// or hash): Redis skips such keys when it loads an RDB, and `RESTORE`
    /// refuses them.
    pub empty: bool,
}

/// A record of an RDB.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// An auxiliary field (`redis-ver`, `ctime`, `repl-offset`, ...).
    Aux {
        /// Field name.
        key: Vec<u8>,
        /// Field value.
        value: Vec<u8>,
    },
    /// The following keys belong to this database.
    SelectDb(u64),
    /// Size hint of the current database.
    ResizeDb {
        /// Keys.
        keys: u64,
        /// Keys with an expiry.
        expires: u64,
    },
    /// Cluster slot size hint (Redis 7.4+ in cluster mode).
    SlotInfo {
        /// Slot number.
        slot: u64,
        /// Keys in the slot.
        size: u64,
        /// Keys with an expiry in the slot.
        expires: u64,
    },
    /// Auxiliary data of a module.
    ModuleAux {
        /// Module type name.
        module: String,
    },
    /// A function library.
    Function {
        /// The library's string, in its raw RDB encoding (only when the
        /// parser records values); `[opcode::FUNCTION2] + raw` is the body
        /// of a `FUNCTION RESTORE` payload.
        raw: Option<Vec<u8>>,
    },
    /// A key and its value.
    Key(KeyEntry),
    /// The end of the RDB.
    End {
        /// The checksum stored in the file (`None` when the file has none or
        /// it was disabled with `rdbchecksum no`).
        stored: Option<u64>,
    },
}

/// Reads an RDB record by record.
pub struct Parser<R> {
    input: Input<R>,
    version: u32,
    db: u64,
    record: bool,
    /// Key values are recorded as whole `DUMP` payloads.
    payloads: bool,
    /// Key names are read (not skipped).
    keys: bool,
    done: bool,
}

impl<R: Read> Parser<R> {
    /// Reads the header. With `record_values`, key events carry their raw
    /// value encoding (to build `DUMP` payloads); otherwise values are
    /// skipped and memory stays bounded whatever their size.
    ///
    /// # Errors
    ///
    /// A missing or bad header, or a version newer than
    /// [`MAX_RDB_VERSION`].
    pub fn new(src: R, record_values: bool) -> RdbResult<Self> {
        let mut input = Input::new(src, true);
        let magic: [u8; 9] = input.array().map_err(|e| match e.kind {
            RdbErrorKind::Truncated => Input::<R>::corrupt_at(
                0,
                "the stream is shorter than an RDB header (`REDIS` and a 4-digit version)",
            ),
            _ => e,
        })?;
        if &magic[..5] != b"REDIS" || !magic[5..].iter().all(u8::is_ascii_digit) {
            return Err(Input::<R>::corrupt_at(
                0,
                "not an RDB: it does not start with `REDIS` and a 4-digit version",
            ));
        }
        let version: u32 = std::str::from_utf8(&magic[5..])
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(0);
        if version == 0 || version > MAX_RDB_VERSION {
            return Err(RdbError {
                offset: 5,
                kind: RdbErrorKind::Unsupported(format!(
                    "RDB version {version} is not supported (this program reads versions 1 to {MAX_RDB_VERSION}, Redis 2.6 to 7.4)"
                )),
            });
        }
        Ok(Parser {
            input,
            version,
            db: 0,
            record: record_values,
            payloads: false,
            keys: true,
            done: false,
        })
    }

    /// Key events carry their value as a whole `DUMP` payload (value type,
    /// raw encoding, RDB version, CRC64: see [`super::dump_payload`]) in
    /// [`KeyEntry::value`], built in one allocation; implies recording
    /// values.
    #[must_use]
    pub fn dump_payloads(mut self) -> Self {
        self.record = true;
        self.payloads = true;
        self
    }

    /// Key names are skipped, not read: [`KeyEntry::key`] is empty (for
    /// passes that only count keys).
    #[must_use]
    pub fn without_key_names(mut self) -> Self {
        self.keys = false;
        self
    }

    /// The RDB version from the header.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Bytes read so far.
    pub fn offset(&self) -> u64 {
        self.input.offset()
    }

    /// After [`Event::End`]: fails if bytes follow the end of the RDB.
    ///
    /// # Errors
    ///
    /// Trailing bytes, or an error reading the input.
    pub fn expect_eof(&mut self) -> RdbResult<()> {
        if self.input.at_end()? {
            Ok(())
        } else {
            Err(self
                .input
                .corrupt("unexpected bytes after the end-of-file marker"))
        }
    }

    /// After [`Event::End`]: reads what follows the end of the RDB (and
    /// its checksum) and returns its size. Redis ignores such bytes when
    /// it loads a file.
    ///
    /// # Errors
    ///
    /// An error reading the input.
    pub fn trailing(&mut self) -> RdbResult<u64> {
        let mut n = 0u64;
        while !self.input.at_end()? {
            let before = self.input.offset();
            self.input.skip(1)?;
            n += self.input.offset() - before;
        }
        Ok(n)
    }

    /// The next record, `None` after [`Event::End`].
    ///
    /// # Errors
    ///
    /// Truncated or corrupt input, a checksum mismatch, or formats this
    /// program cannot read (pre-release module and function formats).
    #[allow(clippy::should_implement_trait)] // Fallible; an Iterator of Results reads worse here.
    pub fn next(&mut self) -> RdbResult<Option<Event>> {
        if self.done {
            return Ok(None);
        }
        let mut expire_ms = None;
        let mut idle = None;
        let mut freq = None;
        loop {
            let at = self.input.offset();
            let t = self.input.u8()?;
            match t {
                opcode::EOF => {
                    let computed = self.input.checksum();
                    self.done = true;
                    if self.version < 5 {
                        return Ok(Some(Event::End { stored: None }));
                    }
                    let stored = u64::from_le_bytes(self.input.array()?);
                    if stored == 0 {
                        return Ok(Some(Event::End { stored: None }));
                    }
                    if Some(stored) != computed {
                        return Err(Input::<R>::corrupt_at(
                            at + 1,
                            format!(
                                "checksum mismatch: the file says {stored:016x}, the content gives {:016x}",
                                computed.unwrap_or(0)
                            ),
                        ));
                    }
                    return Ok(Some(Event::End {
                        stored: Some(stored),
                    }));
                }
                opcode::SELECTDB => {
                    self.db = self.input.plain_len()?;
                    return Ok(Some(Event::SelectDb(self.db)));
                }
                opcode::RESIZEDB => {
                    let keys = self.input.plain_len()?;
                    let expires = self.input.plain_len()?;
                    return Ok(Some(Event::ResizeDb { keys, expires }));
                }
                opcode::SLOT_INFO => {
                    let slot = self.input.plain_len()?;
                    let size = self.input.plain_len()?;
                    let expires = self.input.plain_len()?;
                    return Ok(Some(Event::SlotInfo {
                        slot,
                        size,
                        expires,
                    }));
                }
                opcode::AUX => {
                    let key = self.input.string()?;
                    let value = self.input.string()?;
                    return Ok(Some(Event::Aux { key, value }));
                }
                opcode::MODULE_AUX => {
                    let id = self.input.plain_len()?;
                    let when_op = self.input.plain_len()?;
                    if when_op != 2 {
                        return Err(self
                            .input
                            .corrupt(format!("module aux data: bad `when` opcode {when_op}")));
                    }
                    let _when = self.input.plain_len()?;
                    self.input.skip_module_body()?;
                    return Ok(Some(Event::ModuleAux {
                        module: module_type_name(id),
                    }));
                }
                opcode::FUNCTION_PRE_GA => {
                    return Err(Input::<R>::corrupt_at(
                        at,
                        "function library in the pre-release format of Redis 7.0 RC1/RC2, which no released Redis loads",
                    ));
                }
                opcode::FUNCTION2 => {
                    if self.record {
                        self.input.start_recording();
                    }
                    self.input.skip_string()?;
                    let raw = self.record.then(|| self.input.take_recording());
                    return Ok(Some(Event::Function { raw }));
                }
                opcode::EXPIRETIME => {
                    let secs = i32::from_le_bytes(self.input.array()?);
                    expire_ms = Some(i64::from(secs) * 1000);
                }
                opcode::EXPIRETIME_MS => {
                    expire_ms = Some(i64::from_le_bytes(self.input.array()?));
                }
                opcode::IDLE => idle = Some(self.input.plain_len()?),
                opcode::FREQ => freq = Some(self.input.u8()?),
                t if types::is_value_type(t) => {
                    let key = if self.keys {
                        self.input.string()?
                    } else {
                        self.input.skip_string()?;
                        Vec::new()
                    };
                    if self.record {
                        self.input.start_recording();
                    }
                    let (module, empty) = match self.skip_value(t) {
                        Ok(m) => m,
                        Err(e) => {
                            self.input.take_recording();
                            return Err(e);
                        }
                    };
                    let value = match (self.record, self.payloads) {
                        (false, _) => None,
                        (true, false) => Some(self.input.take_recording()),
                        (true, true) => Some(self.input.take_recording_as_payload(t, self.version)),
                    };
                    return Ok(Some(Event::Key(KeyEntry {
                        db: self.db,
                        key,
                        rdb_type: t,
                        expire_ms,
                        idle,
                        freq,
                        value,
                        module,
                        empty,
                    })));
                }
                other => {
                    return Err(Input::<R>::corrupt_at(
                        at,
                        format!("unknown record type 0x{other:02x}"),
                    ))
                }
            }
        }
    }

    /// Skips a value of type `t`; returns the module type name for module
    /// values, and whether the value is empty (see [`KeyEntry::empty`]).
    fn skip_value(&mut self, t: u8) -> RdbResult<(Option<String>, bool)> {
        let inp = &mut self.input;
        let empty = match t {
            types::STRING => {
                inp.skip_string()?;
                false
            }
            types::LIST_ZIPLIST | types::ZSET_ZIPLIST | types::HASH_ZIPLIST => {
                blob_is_empty(&inp.string_prefix(BLOB_HEAD)?, Blob::Ziplist)
            }
            types::HASH_LISTPACK
            | types::ZSET_LISTPACK
            | types::SET_LISTPACK
            | types::HASH_LISTPACK_EX_PRE_GA => {
                blob_is_empty(&inp.string_prefix(BLOB_HEAD)?, Blob::Listpack)
            }
            types::SET_INTSET => blob_is_empty(&inp.string_prefix(BLOB_HEAD)?, Blob::Intset),
            types::HASH_ZIPMAP => blob_is_empty(&inp.string_prefix(BLOB_HEAD)?, Blob::Zipmap),
            types::HASH_LISTPACK_EX => {
                inp.skip(8)?;
                blob_is_empty(&inp.string_prefix(BLOB_HEAD)?, Blob::Listpack)
            }
            types::LIST | types::SET => {
                let n = inp.count()?;
                for _ in 0..n {
                    inp.skip_string()?;
                }
                n == 0
            }
            types::LIST_QUICKLIST => {
                let mut all_empty = true;
                for _ in 0..inp.count()? {
                    all_empty &= blob_is_empty(&inp.string_prefix(BLOB_HEAD)?, Blob::Ziplist);
                }
                all_empty
            }
            types::LIST_QUICKLIST_2 => {
                let mut all_empty = true;
                for _ in 0..inp.count()? {
                    let container = inp.plain_len()?;
                    match container {
                        // A plain node holds one element.
                        1 => {
                            inp.skip_string()?;
                            all_empty = false;
                        }
                        2 => {
                            all_empty &=
                                blob_is_empty(&inp.string_prefix(BLOB_HEAD)?, Blob::Listpack);
                        }
                        _ => {
                            return Err(inp.corrupt(format!("quicklist node container {container}")))
                        }
                    }
                }
                all_empty
            }
            types::ZSET => {
                let n = inp.count()?;
                for _ in 0..n {
                    inp.skip_string()?;
                    let len = inp.u8()?;
                    if len < 253 {
                        inp.skip(u64::from(len))?;
                    }
                }
                n == 0
            }
            types::ZSET_2 => {
                let n = inp.count()?;
                for _ in 0..n {
                    inp.skip_string()?;
                    inp.skip(8)?;
                }
                n == 0
            }
            types::HASH => {
                let n = inp.count()?;
                for _ in 0..n {
                    inp.skip_string()?;
                    inp.skip_string()?;
                }
                n == 0
            }
            types::HASH_METADATA_PRE_GA | types::HASH_METADATA => {
                if t == types::HASH_METADATA {
                    inp.skip(8)?;
                }
                let n = inp.count()?;
                for _ in 0..n {
                    inp.plain_len()?;
                    inp.skip_string()?;
                    inp.skip_string()?;
                }
                n == 0
            }
            types::STREAM_LISTPACKS | types::STREAM_LISTPACKS_2 | types::STREAM_LISTPACKS_3 => {
                // An empty stream is a value of its own (XADD then XDEL).
                skip_stream(inp, t)?;
                false
            }
            types::MODULE_2 => {
                let id = inp.plain_len()?;
                self.input.skip_module_body()?;
                return Ok((Some(module_type_name(id)), false));
            }
            types::MODULE_PRE_GA => {
                return Err(inp.unsupported(
                    "a module value in the pre-release format of Redis 4.0 release candidates (type 6) cannot be read without its module",
                ));
            }
            _ => return Err(inp.corrupt(format!("unknown value type {t}"))),
        };
        Ok((None, empty))
    }
}

/// Bytes read of an encoded blob to find its element count.
const BLOB_HEAD: usize = 10;

/// The encodings of a blob value.
#[derive(Clone, Copy)]
enum Blob {
    /// `zlbytes` (4), `zltail` (4), `zllen` (2, little-endian).
    Ziplist,
    /// Total bytes (4), number of elements (2, little-endian).
    Listpack,
    /// Encoding (4), length (4, little-endian).
    Intset,
    /// `zmlen` (1): the number of pairs below 254.
    Zipmap,
}

/// Whether an encoded blob, of which `head` holds the first bytes, has no
/// element. A blob too short to tell is not called empty (the server
/// judges it).
fn blob_is_empty(head: &[u8], kind: Blob) -> bool {
    match kind {
        Blob::Ziplist => head.len() >= 10 && head[8..10] == [0, 0],
        Blob::Listpack => head.len() >= 6 && head[4..6] == [0, 0],
        Blob::Intset => head.len() >= 8 && head[4..8] == [0, 0, 0, 0],
        Blob::Zipmap => head.first() == Some(&0),
    }
}

fn skip_stream<R: Read>(inp: &mut Input<R>, t: u8) -> RdbResult<()> {
    for _ in 0..inp.count()? {
        let at = inp.offset();
        let node_key = inp.string()?;
        if node_key.len() != 16 {
            return Err(Input::<R>::corrupt_at(
                at,
                format!("stream node key of {} bytes (expected 16)", node_key.len()),
            ));
        }
        inp.skip_string()?;
    }
    // length, last id
    for _ in 0..3 {
        inp.plain_len()?;
    }
    if t >= types::STREAM_LISTPACKS_2 {
        // first id, max deleted id, entries added
        for _ in 0..5 {
            inp.plain_len()?;
        }
    }
    for _ in 0..inp.count()? {
        inp.skip_string()?; // group name
        inp.plain_len()?; // last id ms
        inp.plain_len()?; // last id seq
        if t >= types::STREAM_LISTPACKS_2 {
            inp.plain_len()?; // entries read
        }
        for _ in 0..inp.count()? {
            inp.skip(16 + 8)?; // raw id, delivery time
            inp.plain_len()?; // delivery count
        }
        for _ in 0..inp.count()? {
            inp.skip_string()?; // consumer name
            inp.skip(8)?; // seen time
            if t >= types::STREAM_LISTPACKS_3 {
                inp.skip(8)?; // active time
            }
            let pel = inp.count()?;
            inp.skip(pel * 16)?;
        }
    }
    Ok(())
}
