//! How the repository holds a cluster's WAL: the capture kinds and
//! streams, positions (timeline and LSN), WAL segment file names, the
//! contents of timeline history files, and [`WalMap`], what is stored by
//! timeline.

use std::collections::BTreeMap;

use backup_core::capture::CaptureName;
use backup_core::repo::Repository;
use backup_core::{Error, Result};

use super::super::lsn::{is_wal_file_name, is_wal_segment_size, Lsn};

/// Capture kind of WAL.
pub const WAL_KIND: &str = "postgres-wal";
/// Capture kind of timeline history files.
pub const HISTORY_KIND: &str = "postgres-timeline-history";
/// Capture kind of the records of WAL that could not be captured (a
/// stream of its own, so that a listing tells gaps from WAL).
pub const GAP_KIND: &str = "postgres-wal-gap";

/// A WAL position as capture names write it: timeline and LSN.
pub(crate) fn position(tli: u32, lsn: Lsn) -> String {
    crate::capture::Position::Wal {
        timeline: tli,
        lsn: lsn.0,
    }
    .record()
}

/// Parses a WAL capture position.
pub(crate) fn parse_position(p: &str) -> Option<(u32, Lsn)> {
    match crate::capture::Position::parse_wal(p)? {
        crate::capture::Position::Wal { timeline, lsn } => Some((timeline, Lsn(lsn))),
        _ => None,
    }
}

/// The stream ids of a cluster's WAL and history.
pub(crate) fn streams(repo: &Repository, system_identifier: &str) -> (String, String) {
    (
        repo.capture_stream(WAL_KIND, system_identifier),
        repo.capture_stream(HISTORY_KIND, system_identifier),
    )
}

/// The stream id of a cluster's gap records.
pub(crate) fn gap_stream(repo: &Repository, system_identifier: &str) -> String {
    repo.capture_stream(GAP_KIND, system_identifier)
}

/// Where `timeline` began according to its history file (the switch
/// point of its parent, the last line).
pub(crate) fn history_start(content: &str, timeline: u32) -> Option<Lsn> {
    let _ = timeline;
    content
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| l.split_whitespace().nth(1).and_then(|p| Lsn::parse(p).ok()))
        .next_back()
}

/// The timelines a history file names with where each ended: `(parent
/// timeline, switch point)` in order.
pub(crate) fn history_entries(content: &str) -> Vec<(u32, Lsn)> {
    content
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let tli = f.next()?.parse().ok()?;
            let lsn = Lsn::parse(f.next()?).ok()?;
            Some((tli, lsn))
        })
        .collect()
}

/// Parses a WAL segment file name into its timeline and segment number.
pub(crate) fn parse_wal_name(name: &str, segment_size: u64) -> Result<(u32, u64)> {
    let bad = || Error::Config(format!("`{name}` is not a WAL segment file name"));
    if !is_wal_segment_size(segment_size) {
        return Err(Error::Config(format!(
            "{segment_size} bytes is not a WAL segment size (a power of two from 1 MiB to 1 GiB)"
        )));
    }
    if !is_wal_file_name(name) {
        return Err(bad());
    }
    let tli = u32::from_str_radix(&name[..8], 16).map_err(|_| bad())?;
    let hi = u64::from_str_radix(&name[8..16], 16).map_err(|_| bad())?;
    let lo = u64::from_str_radix(&name[16..], 16).map_err(|_| bad())?;
    // The low part counts segments within 4 GiB of WAL: a value past
    // that names no segment of this size.
    let per_id = 0x1_0000_0000 / segment_size;
    if lo >= per_id {
        return Err(bad());
    }
    Ok((tli, hi * per_id + lo))
}

/// What the repository holds of a cluster's WAL: pieces by timeline.
#[derive(Debug, Clone, Default)]
pub struct WalMap {
    /// Per timeline, the stored ranges `[from, to)` with their names.
    pub ranges: BTreeMap<u32, Vec<(Lsn, Lsn, CaptureName)>>,
    /// Per timeline, ranges known to be missing.
    pub gaps: BTreeMap<u32, Vec<(Lsn, Lsn)>>,
    /// History files by timeline.
    pub history: BTreeMap<u32, CaptureName>,
}

impl WalMap {
    /// Reads the capture names of `system_identifier`'s streams.
    ///
    /// # Errors
    ///
    /// Storage errors.
    pub async fn load(repo: &Repository, system_identifier: &str) -> Result<Self> {
        Ok(Self::of(repo, system_identifier, repo.captures().await?))
    }

    /// The map of `system_identifier`'s streams among capture `names`
    /// already listed.
    pub fn of(
        repo: &Repository,
        system_identifier: &str,
        names: impl IntoIterator<Item = CaptureName>,
    ) -> Self {
        let (stream, hstream) = streams(repo, system_identifier);
        let gstream = gap_stream(repo, system_identifier);
        let mut map = WalMap::default();
        for n in names {
            if n.stream == stream {
                if let (Some((tli, a)), Some((_, b))) =
                    (parse_position(&n.first), parse_position(&n.last))
                {
                    map.ranges.entry(tli).or_default().push((a, b, n));
                }
            } else if n.stream == gstream {
                if let (Some((tli, a)), Some((_, b))) =
                    (parse_position(&n.first), parse_position(&n.last))
                {
                    map.gaps.entry(tli).or_default().push((a, b));
                }
            } else if n.stream == hstream {
                if let Ok(tli) = u32::from_str_radix(&n.first, 16) {
                    map.history.insert(tli, n);
                }
            }
        }
        for r in map.ranges.values_mut() {
            r.sort_by_key(|a| (a.0, a.1));
        }
        map
    }

    /// The contiguous stored ranges of `tli`.
    pub fn windows(&self, tli: u32) -> Vec<(Lsn, Lsn)> {
        let mut out: Vec<(Lsn, Lsn)> = Vec::new();
        for (a, b, _) in self.ranges.get(&tli).map(Vec::as_slice).unwrap_or_default() {
            match out.last_mut() {
                Some(last) if last.1 >= *a => last.1 = last.1.max(*b),
                _ => out.push((*a, *b)),
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_and_history() {
        let p = position(2, Lsn(0x1_2345_6789));
        assert_eq!(p, "000000020000000123456789");
        assert_eq!(parse_position(&p), Some((2, Lsn(0x1_2345_6789))));
        assert_eq!(parse_position("zz"), None);
        let h = "1\t0/3000000\tno recovery target specified\n\n2\t0/5000A0\tafter\n";
        assert_eq!(
            history_entries(h),
            vec![(1, Lsn(0x300_0000)), (2, Lsn(0x50_00A0))]
        );
        assert_eq!(history_start(h, 3), Some(Lsn(0x50_00A0)));
        assert_eq!(
            parse_wal_name("000000020000000100000003", 16 << 20).unwrap(),
            (2, 256 + 3)
        );
        assert!(parse_wal_name("00000002.history", 16 << 20).is_err());
    }

    /// A segment size of 0 (`--segment-size 0`, a damaged snapshot) was a
    /// division by zero; a low part past the segments of 4 GiB named a
    /// segment that formats back to another name.
    #[test]
    fn wal_names_need_a_segment_size_and_a_low_part_within_it() {
        let err = parse_wal_name("000000020000000100000003", 0).unwrap_err();
        assert!(err.to_string().contains("not a WAL segment size"), "{err}");
        assert!(parse_wal_name("000000020000000100000003", 3 << 20).is_err());
        assert!(parse_wal_name("0000000200000001000000FF", 16 << 20).is_ok());
        assert!(parse_wal_name("000000020000000100000100", 16 << 20).is_err());
        assert!(parse_wal_name("000000020000000100000100", 1 << 20).is_ok());
    }
}
