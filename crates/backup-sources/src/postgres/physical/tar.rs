//! The tar headers of a base backup stream.
//!
//! `BASE_BACKUP` sends each tablespace as a tar archive in the POSIX
//! ustar interchange format: 512-byte headers, content padded to 512
//! bytes, two zero blocks at the end. Numbers are octal, or base-256 with
//! a leading `0x80` byte when they do not fit (files over 8 GiB). Names
//! are relative to the tablespace; directories and symbolic links end in
//! `/`. Only what PostgreSQL writes is accepted: regular files,
//! directories and symbolic links.

use backup_core::{Error, Result};

/// Size of a tar block.
pub(crate) const BLOCK: usize = 512;

/// The type of a member.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum EntryType {
    File,
    Dir,
    Symlink,
}

/// One parsed header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Header {
    /// Path components (`./` and trailing `/` removed).
    pub(crate) path: Vec<String>,
    pub(crate) kind: EntryType,
    pub(crate) mode: u32,
    pub(crate) uid: u32,
    pub(crate) gid: u32,
    pub(crate) size: u64,
    /// Seconds since the epoch.
    pub(crate) mtime: i64,
    pub(crate) link_target: Option<String>,
}

impl Header {
    /// Bytes of padding after this member's content.
    pub(crate) fn padding(&self) -> u64 {
        (BLOCK as u64 - self.size % BLOCK as u64) % BLOCK as u64
    }
}

/// Whether a block is all zeros (the end of an archive).
pub(crate) fn is_zero_block(block: &[u8]) -> bool {
    block.iter().all(|&b| b == 0)
}

/// Parses one 512-byte header block.
pub(crate) fn parse_header(h: &[u8]) -> Result<Header> {
    if h.len() != BLOCK {
        return Err(bad("a short header"));
    }
    let stored = number(&h[148..156])?;
    let sum: u64 = h
        .iter()
        .enumerate()
        .map(|(i, &b)| {
            if (148..156).contains(&i) {
                u64::from(b' ')
            } else {
                u64::from(b)
            }
        })
        .sum();
    if stored != sum {
        return Err(bad("a header whose checksum does not match"));
    }
    let mut name = text(&h[0..100])?;
    if &h[257..262] == b"ustar" {
        let prefix = text(&h[345..500])?;
        if !prefix.is_empty() {
            name = format!("{prefix}/{name}");
        }
    }
    let kind = match h[156] {
        b'0' | 0 => EntryType::File,
        b'5' => EntryType::Dir,
        b'2' => EntryType::Symlink,
        other => {
            return Err(bad(&format!(
                "member `{name}` of type `{}`, which a base backup does not contain",
                char::from(other)
            )))
        }
    };
    let path: Vec<String> = name
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .map(str::to_owned)
        .collect();
    if path.is_empty() || path.iter().any(|c| c == "..") {
        return Err(bad(&format!("a member named `{name}`")));
    }
    let link_target = (kind == EntryType::Symlink)
        .then(|| text(&h[157..257]))
        .transpose()?;
    Ok(Header {
        path,
        kind,
        mode: u32::try_from(number(&h[100..108])?).map_err(|_| bad("a mode"))?,
        uid: u32::try_from(number(&h[108..116])?).map_err(|_| bad("a user id"))?,
        gid: u32::try_from(number(&h[116..124])?).map_err(|_| bad("a group id"))?,
        size: if kind == EntryType::File {
            number(&h[124..136])?
        } else {
            0
        },
        mtime: i64::try_from(number(&h[136..148])?).map_err(|_| bad("a time"))?,
        link_target,
    })
}

fn text(field: &[u8]) -> Result<String> {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8(field[..end].to_vec()).map_err(|_| bad("a name that is not UTF-8"))
}

/// An octal number (space or NUL terminated) or base-256 (leading 0x80).
fn number(field: &[u8]) -> Result<u64> {
    if field.first().is_some_and(|&b| b & 0x80 != 0) {
        let mut v: u64 = u64::from(field[0] & 0x7f);
        for &b in &field[1..] {
            v = v
                .checked_mul(256)
                .and_then(|v| v.checked_add(u64::from(b)))
                .ok_or_else(|| bad("a number that overflows"))?;
        }
        return Ok(v);
    }
    let mut v: u64 = 0;
    for &b in field {
        match b {
            b'0'..=b'7' => {
                v = v
                    .checked_mul(8)
                    .and_then(|v| v.checked_add(u64::from(b - b'0')))
                    .ok_or_else(|| bad("a number that overflows"))?;
            }
            b' ' | 0 => {
                if v > 0 {
                    break;
                }
            }
            _ => return Err(bad("a number that is not octal")),
        }
    }
    Ok(v)
}

fn bad(what: &str) -> Error {
    Error::source_failed(format!(
        "the base backup stream holds {what}; the server's tar format is not understood"
    ))
}

/// Writes a header as PostgreSQL does (test fixtures).
#[cfg(test)]
pub(crate) fn write_header(h: &Header) -> [u8; BLOCK] {
    fn octal(out: &mut [u8], v: u64) {
        let len = out.len();
        let s = format!("{v:0width$o} ", width = len - 1);
        out.copy_from_slice(&s.as_bytes()[s.len() - len..]);
    }
    let mut b = [0u8; BLOCK];
    let mut name = h.path.join("/");
    if h.kind != EntryType::File {
        name.push('/');
    }
    b[..name.len()].copy_from_slice(name.as_bytes());
    octal(&mut b[100..108], u64::from(h.mode));
    octal(&mut b[108..116], u64::from(h.uid));
    octal(&mut b[116..124], u64::from(h.gid));
    octal(&mut b[124..136], h.size);
    octal(&mut b[136..148], h.mtime as u64);
    b[156] = match h.kind {
        EntryType::File => b'0',
        EntryType::Dir => b'5',
        EntryType::Symlink => b'2',
    };
    if let Some(t) = &h.link_target {
        b[157..157 + t.len()].copy_from_slice(t.as_bytes());
    }
    b[257..262].copy_from_slice(b"ustar");
    b[263..265].copy_from_slice(b"00");
    b[148..156].fill(b' ');
    let sum: u64 = b.iter().map(|&x| u64::from(x)).sum();
    octal(&mut b[148..156], sum);
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_damage() {
        let h = Header {
            path: vec!["base".into(), "1".into(), "1259".into()],
            kind: EntryType::File,
            mode: 0o600,
            uid: 105,
            gid: 110,
            size: 8192 * 3 + 5,
            mtime: 1_700_000_000,
            link_target: None,
        };
        let block = write_header(&h);
        assert_eq!(parse_header(&block).unwrap(), h);
        assert_eq!(h.padding(), 507);
        let mut damaged = block;
        damaged[3] ^= 1;
        assert!(parse_header(&damaged).is_err());

        let link = Header {
            path: vec!["pg_tblspc".into(), "16384".into()],
            kind: EntryType::Symlink,
            mode: 0o777,
            uid: 0,
            gid: 0,
            size: 0,
            mtime: 1,
            link_target: Some("/srv/ts".into()),
        };
        assert_eq!(parse_header(&write_header(&link)).unwrap(), link);
        assert!(is_zero_block(&[0; BLOCK]));
    }

    #[test]
    fn dot_prefixed_names_and_base256() {
        let mut h = Header {
            path: vec!["pg_wal".into(), "archive_status".into()],
            kind: EntryType::Dir,
            mode: 0o700,
            uid: 1,
            gid: 1,
            size: 0,
            mtime: 5,
            link_target: None,
        };
        let mut block = write_header(&h);
        // "./pg_wal/archive_status/" as the server writes that one.
        let name = b"./pg_wal/archive_status/";
        block[..100].fill(0);
        block[..name.len()].copy_from_slice(name);
        block[148..156].fill(b' ');
        let sum: u64 = block.iter().map(|&x| u64::from(x)).sum();
        let s = format!("{sum:07o} ");
        block[148..156].copy_from_slice(s.as_bytes());
        assert_eq!(parse_header(&block).unwrap(), h);

        h.kind = EntryType::File;
        let mut block = write_header(&h);
        let big: u64 = 10 << 30;
        block[124] = 0x80;
        block[125..136].fill(0);
        block[128..136].copy_from_slice(&big.to_be_bytes());
        block[156] = b'0';
        block[148..156].fill(b' ');
        let sum: u64 = block.iter().map(|&x| u64::from(x)).sum();
        let s = format!("{sum:07o} ");
        block[148..156].copy_from_slice(s.as_bytes());
        assert_eq!(parse_header(&block).unwrap().size, big);
    }
}
