//! Full decoding of RDB values into logical contents: every encoding of
//! RDB versions 1 to 12, including the compact encodings (ziplist,
//! listpack, intset, zipmap, quicklist) and LZF-compressed strings.
//!
//! The streaming parser does not need this to split an RDB into keys; it
//! is used to check values deeply (tests, fixtures of encodings current
//! servers no longer write) and to show what a value holds.

use super::format::{module_type_name, types};
use super::input::{Input, RdbError, RdbResult};

/// The logical content of a value.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    /// A string.
    String(Vec<u8>),
    /// List elements in order.
    List(Vec<Vec<u8>>),
    /// Set members (in stored order).
    Set(Vec<Vec<u8>>),
    /// Sorted set members with scores (in stored order).
    ZSet(Vec<(Vec<u8>, f64)>),
    /// Hash fields, values and field expiry (ms since the epoch).
    Hash(Vec<(Vec<u8>, Vec<u8>, Option<u64>)>),
    /// A stream (its entries stay in listpacks, each checked).
    Stream(StreamInfo),
    /// A module value.
    Module {
        /// Module type name.
        name: String,
    },
}

/// What a stream value holds.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct StreamInfo {
    /// Listpack nodes.
    pub nodes: u64,
    /// Entries (`XLEN`).
    pub length: u64,
    /// Last id (ms, seq).
    pub last_id: (u64, u64),
    /// Consumer groups: name, pending entries, consumers.
    pub groups: Vec<(Vec<u8>, u64, u64)>,
}

/// One element of a ziplist or listpack.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Elem {
    /// A byte string.
    Bytes(Vec<u8>),
    /// An integer.
    Int(i64),
}

impl Elem {
    /// The element as Redis shows it (integers in decimal).
    pub fn into_bytes(self) -> Vec<u8> {
        match self {
            Elem::Bytes(b) => b,
            Elem::Int(i) => i.to_string().into_bytes(),
        }
    }

    fn as_int(&self) -> Option<i64> {
        match self {
            Elem::Int(i) => Some(*i),
            Elem::Bytes(b) => std::str::from_utf8(b).ok()?.parse().ok(),
        }
    }

    fn as_f64(&self) -> Option<f64> {
        match self {
            #[allow(clippy::cast_precision_loss)]
            Elem::Int(i) => Some(*i as f64),
            Elem::Bytes(b) => parse_double(b),
        }
    }
}

fn parse_double(b: &[u8]) -> Option<f64> {
    let s = std::str::from_utf8(b).ok()?;
    match s {
        "inf" | "+inf" => Some(f64::INFINITY),
        "-inf" => Some(f64::NEG_INFINITY),
        "nan" => Some(f64::NAN),
        _ => s.parse().ok(),
    }
}

/// Decodes a ziplist (Redis 2.6 to 6.2 compact lists, hashes and sorted
/// sets).
///
/// # Errors
///
/// A structure that does not add up; the message says where.
#[allow(clippy::many_single_char_names)] // Byte-parser conventions: p position, b byte, n length, s slice, v value.
pub fn ziplist(z: &[u8]) -> Result<Vec<Elem>, String> {
    if z.len() < 11 {
        return Err(format!(
            "ziplist of {} bytes is shorter than its header",
            z.len()
        ));
    }
    let total = u32::from_le_bytes([z[0], z[1], z[2], z[3]]) as usize;
    if total != z.len() {
        return Err(format!("ziplist says {total} bytes, holds {}", z.len()));
    }
    let tail = u32::from_le_bytes([z[4], z[5], z[6], z[7]]) as usize;
    let count = u16::from_le_bytes([z[8], z[9]]);
    let mut p = 10;
    let mut out = Vec::new();
    let mut last_start = 10;
    let mut prev_len = 0usize;
    let err = |p: usize, m: &str| format!("ziplist entry at byte {p}: {m}");
    loop {
        let Some(&b) = z.get(p) else {
            return Err(err(p, "no end marker"));
        };
        if b == 0xff {
            break;
        }
        let start = p;
        // Previous entry length: 1 byte, or 0xfe and 4 bytes.
        let prevlen = match b {
            0..=0xfd => {
                p += 1;
                usize::from(b)
            }
            0xfe => {
                let s = z.get(p + 1..p + 5).ok_or_else(|| err(p, "cut short"))?;
                p += 5;
                u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize
            }
            _ => return Err(err(p, "bad previous-length byte")),
        };
        if prevlen != prev_len {
            return Err(err(start, "previous-entry length does not match"));
        }
        let enc = *z.get(p).ok_or_else(|| err(p, "cut short"))?;
        let take = |p: usize, n: usize| z.get(p..p + n).ok_or_else(|| err(p, "cut short"));
        let elem = match enc >> 6 {
            0 => {
                let n = usize::from(enc & 0x3f);
                let s = take(p + 1, n)?;
                p += 1 + n;
                Elem::Bytes(s.to_vec())
            }
            1 => {
                let b2 = take(p + 1, 1)?[0];
                let n = (usize::from(enc & 0x3f) << 8) | usize::from(b2);
                let s = take(p + 2, n)?;
                p += 2 + n;
                Elem::Bytes(s.to_vec())
            }
            2 => {
                let l = take(p + 1, 4)?;
                let n = u32::from_be_bytes([l[0], l[1], l[2], l[3]]) as usize;
                let s = take(p + 5, n)?;
                p += 5 + n;
                Elem::Bytes(s.to_vec())
            }
            _ => {
                let (n, v) = match enc {
                    0xc0 => {
                        let s = take(p + 1, 2)?;
                        (2, i64::from(i16::from_le_bytes([s[0], s[1]])))
                    }
                    0xd0 => {
                        let s = take(p + 1, 4)?;
                        (4, i64::from(i32::from_le_bytes([s[0], s[1], s[2], s[3]])))
                    }
                    0xe0 => {
                        let s = take(p + 1, 8)?;
                        let mut a = [0u8; 8];
                        a.copy_from_slice(s);
                        (8, i64::from_le_bytes(a))
                    }
                    0xf0 => {
                        let s = take(p + 1, 3)?;
                        let v = i32::from_le_bytes([0, s[0], s[1], s[2]]) >> 8;
                        (3, i64::from(v))
                    }
                    0xfe => (1, i64::from(take(p + 1, 1)?[0] as i8)),
                    0xf1..=0xfd => (0, i64::from(enc & 0x0f) - 1),
                    _ => return Err(err(p, &format!("unknown encoding 0x{enc:02x}"))),
                };
                p += 1 + n;
                Elem::Int(v)
            }
        };
        out.push(elem);
        prev_len = p - start;
        last_start = start;
    }
    if p + 1 != z.len() {
        return Err(err(p, "end marker before the end of the ziplist"));
    }
    if !out.is_empty() && tail != last_start {
        return Err(format!(
            "ziplist tail offset {tail} is not the last entry ({last_start})"
        ));
    }
    if count != u16::MAX && usize::from(count) != out.len() {
        return Err(format!("ziplist says {count} entries, holds {}", out.len()));
    }
    Ok(out)
}

/// Decodes a listpack (Redis 7 compact encodings and stream nodes).
///
/// # Errors
///
/// A structure that does not add up; the message says where.
#[allow(clippy::many_single_char_names)] // Byte-parser conventions: p position, b byte, n length, s slice, v value.
pub fn listpack(l: &[u8]) -> Result<Vec<Elem>, String> {
    if l.len() < 7 {
        return Err(format!(
            "listpack of {} bytes is shorter than its header",
            l.len()
        ));
    }
    let total = u32::from_le_bytes([l[0], l[1], l[2], l[3]]) as usize;
    if total != l.len() {
        return Err(format!("listpack says {total} bytes, holds {}", l.len()));
    }
    let count = u16::from_le_bytes([l[4], l[5]]);
    let mut p = 6;
    let mut out = Vec::new();
    let err = |p: usize, m: &str| format!("listpack entry at byte {p}: {m}");
    loop {
        let b = *l.get(p).ok_or_else(|| err(p, "no end marker"))?;
        if b == 0xff {
            break;
        }
        let take = |q: usize, n: usize| l.get(q..q + n).ok_or_else(|| err(p, "cut short"));
        let (size, elem) = if b & 0x80 == 0 {
            (1, Elem::Int(i64::from(b & 0x7f)))
        } else if b & 0xc0 == 0x80 {
            let n = usize::from(b & 0x3f);
            (1 + n, Elem::Bytes(take(p + 1, n)?.to_vec()))
        } else if b & 0xe0 == 0xc0 {
            let lo = take(p + 1, 1)?[0];
            let mut v = (i64::from(b & 0x1f) << 8) | i64::from(lo);
            if v >= 1 << 12 {
                v -= 1 << 13;
            }
            (2, Elem::Int(v))
        } else if b & 0xf0 == 0xe0 {
            let lo = take(p + 1, 1)?[0];
            let n = (usize::from(b & 0x0f) << 8) | usize::from(lo);
            (2 + n, Elem::Bytes(take(p + 2, n)?.to_vec()))
        } else {
            match b {
                0xf0 => {
                    let s = take(p + 1, 4)?;
                    let n = u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize;
                    (5 + n, Elem::Bytes(take(p + 5, n)?.to_vec()))
                }
                0xf1 => {
                    let s = take(p + 1, 2)?;
                    (3, Elem::Int(i64::from(i16::from_le_bytes([s[0], s[1]]))))
                }
                0xf2 => {
                    let s = take(p + 1, 3)?;
                    (
                        4,
                        Elem::Int(i64::from(i32::from_le_bytes([0, s[0], s[1], s[2]]) >> 8)),
                    )
                }
                0xf3 => {
                    let s = take(p + 1, 4)?;
                    (
                        5,
                        Elem::Int(i64::from(i32::from_le_bytes([s[0], s[1], s[2], s[3]]))),
                    )
                }
                0xf4 => {
                    let s = take(p + 1, 8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(s);
                    (9, Elem::Int(i64::from_le_bytes(a)))
                }
                _ => return Err(err(p, &format!("unknown encoding 0x{b:02x}"))),
            }
        };
        // The entry ends with its own length (encoding + data), stored in
        // 1 to 5 bytes of 7 bits each, readable from right to left.
        let back = match size {
            0..=127 => 1,
            128..=16382 => 2,
            16383..=2_097_150 => 3,
            2_097_151..=268_435_454 => 4,
            _ => 5,
        };
        let bl = take(p + size, back)?;
        let mut stored = 0usize;
        for (i, byte) in bl.iter().rev().enumerate() {
            stored |= usize::from(byte & 0x7f) << (7 * i);
        }
        if stored != size {
            return Err(err(p, "back length does not match the entry"));
        }
        p += size + back;
        out.push(elem);
    }
    if p + 1 != l.len() {
        return Err(err(p, "end marker before the end of the listpack"));
    }
    if count != u16::MAX && usize::from(count) != out.len() {
        return Err(format!(
            "listpack says {count} entries, holds {}",
            out.len()
        ));
    }
    Ok(out)
}

/// Decodes an intset (sets of integers).
///
/// # Errors
///
/// A bad element width or a length that does not match.
pub fn intset(s: &[u8]) -> Result<Vec<i64>, String> {
    if s.len() < 8 {
        return Err("intset shorter than its header".to_owned());
    }
    let width = u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize;
    let n = u32::from_le_bytes([s[4], s[5], s[6], s[7]]) as usize;
    if !matches!(width, 2 | 4 | 8) {
        return Err(format!("intset element width {width}"));
    }
    if s.len() != 8 + n * width {
        return Err(format!(
            "intset of {n} x {width} bytes holds {} bytes",
            s.len() - 8
        ));
    }
    let mut out = Vec::with_capacity(n);
    for c in s[8..].chunks_exact(width) {
        out.push(match width {
            2 => i64::from(i16::from_le_bytes([c[0], c[1]])),
            4 => i64::from(i32::from_le_bytes([c[0], c[1], c[2], c[3]])),
            _ => i64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]),
        });
    }
    if out.windows(2).any(|w| w[0] >= w[1]) {
        return Err("intset members are not sorted and unique".to_owned());
    }
    Ok(out)
}

/// A hash field and its value.
pub type FieldValue = (Vec<u8>, Vec<u8>);

/// Decodes a zipmap (hashes of Redis before 2.6) into field/value pairs.
///
/// # Errors
///
/// A structure that does not add up.
pub fn zipmap(z: &[u8]) -> Result<Vec<FieldValue>, String> {
    let err = |p: usize, m: &str| format!("zipmap at byte {p}: {m}");
    let count = *z.first().ok_or_else(|| err(0, "empty"))?;
    let mut p = 1;
    let mut out = Vec::new();
    // A length: one byte below 254, or 254 and a 4-byte little-endian length.
    let read_len = |p: &mut usize| -> Result<Option<usize>, String> {
        let b = *z.get(*p).ok_or_else(|| err(*p, "cut short"))?;
        match b {
            0xff => Ok(None),
            0xfe => {
                let s = z.get(*p + 1..*p + 5).ok_or_else(|| err(*p, "cut short"))?;
                *p += 5;
                Ok(Some(u32::from_le_bytes([s[0], s[1], s[2], s[3]]) as usize))
            }
            _ => {
                *p += 1;
                Ok(Some(usize::from(b)))
            }
        }
    };
    while let Some(klen) = read_len(&mut p)? {
        let key = z
            .get(p..p + klen)
            .ok_or_else(|| err(p, "cut short"))?
            .to_vec();
        p += klen;
        let vlen = read_len(&mut p)?.ok_or_else(|| err(p, "end marker instead of a value"))?;
        let free = usize::from(*z.get(p).ok_or_else(|| err(p, "cut short"))?);
        p += 1;
        let val = z
            .get(p..p + vlen)
            .ok_or_else(|| err(p, "cut short"))?
            .to_vec();
        p += vlen + free;
        out.push((key, val));
    }
    if p + 1 != z.len() {
        return Err(err(p, "end marker before the end of the zipmap"));
    }
    if count < 254 && usize::from(count) != out.len() {
        return Err(format!("zipmap says {count} entries, holds {}", out.len()));
    }
    Ok(out)
}

fn pairs(elems: Vec<Elem>, what: &str) -> Result<Vec<(Elem, Elem)>, String> {
    if elems.len() % 2 != 0 {
        return Err(format!("{what} with an odd number of elements"));
    }
    let mut out = Vec::with_capacity(elems.len() / 2);
    let mut it = elems.into_iter();
    while let (Some(a), Some(b)) = (it.next(), it.next()) {
        out.push((a, b));
    }
    Ok(out)
}

fn zset_pairs(elems: Vec<Elem>) -> Result<Vec<(Vec<u8>, f64)>, String> {
    pairs(elems, "sorted set")?
        .into_iter()
        .map(|(m, s)| {
            let score = s.as_f64().ok_or("sorted set score is not a number")?;
            Ok((m.into_bytes(), score))
        })
        .collect()
}

/// Decodes the raw encoding of a value of RDB type `t` (as found after the
/// key in an RDB, or after the type byte in a `DUMP` payload).
///
/// # Errors
///
/// The encoding is truncated, corrupt, or longer than the value.
pub fn decode_value(t: u8, raw: &[u8]) -> RdbResult<Value> {
    let mut inp = Input::new(raw, false);
    let v = decode_from(&mut inp, t)?;
    if !inp.at_end()? {
        return Err(inp.corrupt("bytes left after the value"));
    }
    Ok(v)
}

fn blob<R: std::io::Read>(
    inp: &mut Input<R>,
    f: impl FnOnce(&[u8]) -> Result<Vec<Elem>, String>,
) -> RdbResult<Vec<Elem>> {
    let at = inp.offset();
    let s = inp.string()?;
    f(&s).map_err(|m| Input::<R>::corrupt_at(at, m))
}

fn wrap<T>(at: u64, r: Result<T, String>) -> RdbResult<T> {
    r.map_err(|m| RdbError {
        offset: at,
        kind: super::input::RdbErrorKind::Corrupt(m),
    })
}

/// Decodes a value of RDB type `t` from `inp`, one arm per RDB type.
fn decode_from<R: std::io::Read>(inp: &mut Input<R>, t: u8) -> RdbResult<Value> {
    let at = inp.offset();
    Ok(match t {
        types::STRING => Value::String(inp.string()?),
        types::LIST | types::SET => decode_strings(inp, t)?,
        types::ZSET | types::ZSET_2 => decode_zset(inp, t)?,
        types::HASH => decode_hash(inp)?,
        types::HASH_ZIPMAP => decode_hash_zipmap(inp, at)?,
        types::LIST_ZIPLIST => Value::List(
            blob(inp, ziplist)?
                .into_iter()
                .map(Elem::into_bytes)
                .collect(),
        ),
        types::SET_INTSET => decode_intset(inp, at)?,
        types::SET_LISTPACK => Value::Set(
            blob(inp, listpack)?
                .into_iter()
                .map(Elem::into_bytes)
                .collect(),
        ),
        types::ZSET_ZIPLIST => Value::ZSet(wrap(at, zset_pairs(blob(inp, ziplist)?))?),
        types::ZSET_LISTPACK => Value::ZSet(wrap(at, zset_pairs(blob(inp, listpack)?))?),
        types::HASH_ZIPLIST | types::HASH_LISTPACK => decode_hash_compact(inp, t, at)?,
        types::HASH_LISTPACK_EX | types::HASH_LISTPACK_EX_PRE_GA => {
            decode_hash_listpack_ex(inp, t, at)?
        }
        types::HASH_METADATA | types::HASH_METADATA_PRE_GA => decode_hash_metadata(inp, t)?,
        types::LIST_QUICKLIST | types::LIST_QUICKLIST_2 => decode_quicklist(inp, t)?,
        types::STREAM_LISTPACKS | types::STREAM_LISTPACKS_2 | types::STREAM_LISTPACKS_3 => {
            Value::Stream(decode_stream(inp, t)?)
        }
        types::MODULE_2 => decode_module(inp)?,
        _ => return Err(inp.unsupported(format!("value type {t} cannot be decoded"))),
    })
}

/// Decodes a plain list or set (`t` says which): a count, then strings.
#[inline]
fn decode_strings<R: std::io::Read>(inp: &mut Input<R>, t: u8) -> RdbResult<Value> {
    let n = inp.count()?;
    let mut v = Vec::new();
    for _ in 0..n {
        v.push(inp.string()?);
    }
    Ok(if t == types::LIST {
        Value::List(v)
    } else {
        Value::Set(v)
    })
}

/// Decodes a plain sorted set: binary scores for `ZSET_2`, text scores for
/// `ZSET`.
#[inline]
fn decode_zset<R: std::io::Read>(inp: &mut Input<R>, t: u8) -> RdbResult<Value> {
    let n = inp.count()?;
    let mut v = Vec::new();
    for _ in 0..n {
        let m = inp.string()?;
        let score = if t == types::ZSET_2 {
            f64::from_le_bytes(inp.array()?)
        } else {
            text_score(inp)?
        };
        v.push((m, score));
    }
    Ok(Value::ZSet(v))
}

/// Reads a score of the old sorted set encoding: a length byte (253 to 255
/// for NaN and the infinities), then the number as text.
#[inline]
fn text_score<R: std::io::Read>(inp: &mut Input<R>) -> RdbResult<f64> {
    let a = inp.offset();
    Ok(match inp.u8()? {
        253 => f64::NAN,
        254 => f64::INFINITY,
        255 => f64::NEG_INFINITY,
        k => {
            let s = inp.bytes(u64::from(k))?;
            parse_double(&s).ok_or_else(|| Input::<R>::corrupt_at(a, "score is not a number"))?
        }
    })
}

/// Decodes a plain hash: a count, then field and value strings.
#[inline]
fn decode_hash<R: std::io::Read>(inp: &mut Input<R>) -> RdbResult<Value> {
    let n = inp.count()?;
    let mut v = Vec::new();
    for _ in 0..n {
        let f = inp.string()?;
        let val = inp.string()?;
        v.push((f, val, None));
    }
    Ok(Value::Hash(v))
}

/// Decodes a hash stored as a zipmap (value at offset `at`).
#[inline]
fn decode_hash_zipmap<R: std::io::Read>(inp: &mut Input<R>, at: u64) -> RdbResult<Value> {
    let s = inp.string()?;
    let m = wrap(at, zipmap(&s))?;
    Ok(Value::Hash(
        m.into_iter().map(|(f, v)| (f, v, None)).collect(),
    ))
}

/// Decodes a set stored as an intset (value at offset `at`).
#[inline]
fn decode_intset<R: std::io::Read>(inp: &mut Input<R>, at: u64) -> RdbResult<Value> {
    let s = inp.string()?;
    Ok(Value::Set(
        wrap(at, intset(&s))?
            .into_iter()
            .map(|i| i.to_string().into_bytes())
            .collect(),
    ))
}

/// Decodes a hash stored as a ziplist or a listpack (`t` says which) of
/// field/value pairs (value at offset `at`).
#[inline]
fn decode_hash_compact<R: std::io::Read>(inp: &mut Input<R>, t: u8, at: u64) -> RdbResult<Value> {
    let elems = if t == types::HASH_ZIPLIST {
        blob(inp, ziplist)?
    } else {
        blob(inp, listpack)?
    };
    Ok(Value::Hash(
        wrap(at, pairs(elems, "hash"))?
            .into_iter()
            .map(|(f, v)| (f.into_bytes(), v.into_bytes(), None))
            .collect(),
    ))
}

/// Decodes a hash with field expiry stored as a listpack of field, value
/// and expiry triples (value at offset `at`).
#[inline]
fn decode_hash_listpack_ex<R: std::io::Read>(
    inp: &mut Input<R>,
    t: u8,
    at: u64,
) -> RdbResult<Value> {
    if t == types::HASH_LISTPACK_EX {
        inp.skip(8)?; // the smallest field expiry, a hint
    }
    let elems = blob(inp, listpack)?;
    if elems.len() % 3 != 0 {
        return Err(Input::<R>::corrupt_at(
            at,
            "hash with field expiry: elements not in threes",
        ));
    }
    let mut v = Vec::new();
    let mut it = elems.into_iter();
    while let (Some(f), Some(val), Some(ttl)) = (it.next(), it.next(), it.next()) {
        let ttl = ttl
            .as_int()
            .ok_or_else(|| Input::<R>::corrupt_at(at, "field expiry is not an integer"))?;
        v.push((
            f.into_bytes(),
            val.into_bytes(),
            (ttl != 0).then_some(ttl as u64),
        ));
    }
    Ok(Value::Hash(v))
}

/// Decodes a plain hash with field expiry (`HASH_METADATA` and its
/// pre-release form).
#[inline]
#[allow(clippy::many_single_char_names)] // Short names as in the parsers above.
fn decode_hash_metadata<R: std::io::Read>(inp: &mut Input<R>, t: u8) -> RdbResult<Value> {
    let min = if t == types::HASH_METADATA {
        Some(u64::from_le_bytes(inp.array()?))
    } else {
        None
    };
    let n = inp.count()?;
    let mut v = Vec::new();
    for _ in 0..n {
        let ttl = inp.plain_len()?;
        let f = inp.string()?;
        let val = inp.string()?;
        // Field expiries are stored relative to the smallest (plus
        // one, so that 0 means none); the pre-release format stored
        // them absolute.
        let exp = match (ttl, min) {
            (0, _) => None,
            (x, Some(m)) => Some(m.checked_add(x - 1).ok_or_else(|| {
                inp.corrupt(format!(
                    "field expiry {x} past the smallest one ({m}) is beyond any time"
                ))
            })?),
            (x, None) => Some(x),
        };
        v.push((f, val, exp));
    }
    Ok(Value::Hash(v))
}

/// Decodes a quicklist: nodes of ziplists (`LIST_QUICKLIST`), or of
/// listpacks and plain strings (`LIST_QUICKLIST_2`).
#[inline]
fn decode_quicklist<R: std::io::Read>(inp: &mut Input<R>, t: u8) -> RdbResult<Value> {
    let n = inp.count()?;
    let mut v = Vec::new();
    for _ in 0..n {
        if t == types::LIST_QUICKLIST {
            v.extend(blob(inp, ziplist)?.into_iter().map(Elem::into_bytes));
        } else {
            let c = inp.plain_len()?;
            match c {
                1 => v.push(inp.string()?),
                2 => v.extend(blob(inp, listpack)?.into_iter().map(Elem::into_bytes)),
                _ => return Err(inp.corrupt(format!("quicklist node container {c}"))),
            }
        }
    }
    Ok(Value::List(v))
}

/// Walks a module value (`MODULE_2`) to its end marker and names its type.
#[inline]
fn decode_module<R: std::io::Read>(inp: &mut Input<R>) -> RdbResult<Value> {
    let id = inp.plain_len()?;
    inp.skip_module_body()?;
    Ok(Value::Module {
        name: module_type_name(id),
    })
}

fn decode_stream<R: std::io::Read>(inp: &mut Input<R>, t: u8) -> RdbResult<StreamInfo> {
    let mut info = StreamInfo::default();
    let nodes = inp.count()?;
    info.nodes = nodes;
    for _ in 0..nodes {
        let at = inp.offset();
        let key = inp.string()?;
        if key.len() != 16 {
            return Err(Input::<R>::corrupt_at(
                at,
                "stream node key is not 16 bytes",
            ));
        }
        let at = inp.offset();
        let lp = inp.string()?;
        let elems = wrap(at, listpack(&lp))?;
        if elems.is_empty() {
            return Err(Input::<R>::corrupt_at(at, "empty stream listpack"));
        }
    }
    info.length = inp.plain_len()?;
    info.last_id = (inp.plain_len()?, inp.plain_len()?);
    if t >= types::STREAM_LISTPACKS_2 {
        for _ in 0..5 {
            inp.plain_len()?;
        }
    }
    for _ in 0..inp.count()? {
        let name = inp.string()?;
        inp.plain_len()?;
        inp.plain_len()?;
        if t >= types::STREAM_LISTPACKS_2 {
            inp.plain_len()?;
        }
        let pel = inp.count()?;
        for _ in 0..pel {
            inp.skip(24)?;
            inp.plain_len()?;
        }
        let consumers = inp.count()?;
        for _ in 0..consumers {
            inp.skip_string()?;
            inp.skip(if t >= types::STREAM_LISTPACKS_3 {
                16
            } else {
                8
            })?;
            let n = inp.count()?;
            inp.skip(n * 16)?;
        }
        info.groups.push((name, pel, consumers));
    }
    Ok(info)
}
