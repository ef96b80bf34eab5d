//! WAL positions ([`Lsn`]), the file names of WAL segments, and the size
//! settings (`wal_segment_size`) that place a position in its segment.

use std::fmt;

use backup_core::{Error, Result};

/// A WAL position (PostgreSQL's LSN), shown as `X/X`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Lsn(pub u64);

impl Lsn {
    /// Parses PostgreSQL's `X/X` form.
    pub(crate) fn parse(s: &str) -> Result<Self> {
        let bad = || Error::source_failed(format!("`{s}` is not a WAL position"));
        let (hi, lo) = s.trim().split_once('/').ok_or_else(bad)?;
        let hi = u64::from_str_radix(hi, 16).map_err(|_| bad())?;
        let lo = u64::from_str_radix(lo, 16).map_err(|_| bad())?;
        if hi > u64::from(u32::MAX) || lo > u64::from(u32::MAX) {
            return Err(bad());
        }
        Ok(Lsn(hi << 32 | lo))
    }

    /// The segment holding this position.
    pub(crate) fn segment(self, segment_size: u64) -> u64 {
        self.0 / segment_size
    }

    /// The start of the segment holding this position.
    pub(crate) fn segment_start(self, segment_size: u64) -> Lsn {
        Lsn(self.0 - self.0 % segment_size)
    }
}

impl fmt::Display for Lsn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:X}/{:X}", self.0 >> 32, self.0 & 0xFFFF_FFFF)
    }
}

/// The file name of WAL segment `segno` of timeline `tli`.
pub(crate) fn wal_file_name(tli: u32, segno: u64, segment_size: u64) -> String {
    let per_id = 0x1_0000_0000 / segment_size;
    format!("{tli:08X}{:08X}{:08X}", segno / per_id, segno % per_id)
}

/// Whether `n` is a WAL segment size a PostgreSQL cluster can have: a
/// power of two from 1 MiB to 1 GiB (`initdb --wal-segsize`). Every size
/// read from outside (a snapshot's metadata, a command-line option) is
/// checked with it before positions are divided by it.
pub fn is_wal_segment_size(n: u64) -> bool {
    n.is_power_of_two() && (1 << 20..=1 << 30).contains(&n)
}

/// Whether `name` looks like a WAL segment file name.
pub(crate) fn is_wal_file_name(name: &str) -> bool {
    name.len() == 24 && name.bytes().all(|b| b.is_ascii_hexdigit())
}

/// Parses `SHOW wal_segment_size` output (`16MB`, `1GB`).
pub(crate) fn parse_setting_size(v: &str) -> Option<u64> {
    let v = v.trim();
    let split = v.find(|c: char| !c.is_ascii_digit()).unwrap_or(v.len());
    let n: u64 = v[..split].parse().ok()?;
    let mult = match &v[split..] {
        "" | "B" => 1,
        "kB" => 1 << 10,
        "MB" => 1 << 20,
        "GB" => 1 << 30,
        _ => return None,
    };
    n.checked_mul(mult)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lsns_and_wal_names() {
        let l = Lsn::parse("16/B374D848").unwrap();
        assert_eq!(l.0, 0x16_B374_D848);
        assert_eq!(l.to_string(), "16/B374D848");
        assert!(Lsn::parse("zz").is_err());
        let seg = 16 << 20;
        assert_eq!(
            wal_file_name(1, Lsn::parse("0/2000028").unwrap().segment(seg), seg),
            "000000010000000000000002"
        );
        assert_eq!(
            wal_file_name(3, Lsn::parse("1/0").unwrap().segment(seg), seg),
            "000000030000000100000000"
        );
        assert!(is_wal_file_name("000000010000000000000002"));
        assert!(!is_wal_file_name("00000002.history"));
        assert_eq!(parse_setting_size("16MB"), Some(16 << 20));
        assert_eq!(parse_setting_size("8192"), Some(8192));
        assert_eq!(parse_setting_size("99999999999999GB"), None);
        assert!(is_wal_segment_size(16 << 20) && is_wal_segment_size(1 << 30));
        assert!(!is_wal_segment_size(0) && !is_wal_segment_size(3 << 20));
        assert!(!is_wal_segment_size(512 << 10) && !is_wal_segment_size(2 << 30));
    }
}
