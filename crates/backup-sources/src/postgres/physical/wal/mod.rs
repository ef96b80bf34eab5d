//! Continuous WAL capture into the repository, and WAL for recovery.
//!
//! The WAL of a cluster is one capture stream (`backup_core::capture`,
//! kind `postgres-wal`, identity the system identifier). A piece is a
//! range of WAL bytes on one timeline, never across a segment boundary;
//! positions are 24 hex digits: the timeline (8) and the LSN (16). Timeline
//! history files are pieces of a second stream (`postgres-timeline-history`)
//! whose positions are the timeline (8 hex digits) to the next.
//!
//! - **Streaming** ([`receive`](fn@receive)): a physical replication slot, then
//!   `START_REPLICATION` from the end of what is stored; received WAL is
//!   stored at least every `flush_interval` and every `max_piece` bytes,
//!   and at each segment end, and only then confirmed to the server as
//!   flushed, so the slot keeps what is not stored yet.
//! - **Archiving** ([`push`](fn@push)): `archive_command = 'backup wal push %p'`
//!   stores a whole segment (or history file); pushing the same bytes again
//!   succeeds, other bytes for a stored segment are refused.
//! - **Recovery** ([`fetch`](fn@fetch)): `restore_command = 'backup wal fetch %f %p'`
//!   assembles a segment from the pieces that cover it (zeros after the
//!   last piece of an unfinished segment, as `pg_receivewal` leaves a
//!   partial segment), or a history file.
//!
//! Here: the capture kinds and streams, positions, segment names, history
//! files, [`WalMap`] and the segments assembled from it; then `receive`,
//! `push`, `fetch` and `prefetch`.

mod fetch;
mod prefetch;
mod push;
mod receive;

pub use fetch::fetch;
pub use prefetch::{
    being_fetched, fetch_ahead, fetch_failed, note_asked, note_fetch_failed, prefetch_dir,
    prestage, recovery_over, take_prefetched, PrefetchRun,
};
pub use push::push;
pub use receive::{receive, ReceiveOptions};

use std::collections::BTreeMap;
use std::path::Path;

use backup_core::capture::CaptureName;
use backup_core::repo::Repository;
use backup_core::{Error, Result};

use super::lsn::{is_wal_file_name, is_wal_segment_size, wal_file_name, Lsn};

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

/// Where the timeline of a history file began: the switch point of its
/// parent, the last entry.
pub(crate) fn history_start(content: &str) -> Option<Lsn> {
    history_entries(content).last().map(|(_, lsn)| *lsn)
}

/// The timelines a history file names with where each ended: `(parent
/// timeline, switch point)` in order (comments and blank lines name none).
pub(crate) fn history_entries(content: &str) -> Vec<(u32, Lsn)> {
    content
        .lines()
        .filter_map(|l| {
            let mut f = l.split_whitespace();
            let tli = f.next()?.parse().ok()?;
            let lsn = Lsn::parse(f.next()?).ok()?;
            Some((tli, lsn))
        })
        .collect()
}

/// The entries of the stored history file `name` (see [`history_entries`]).
pub(crate) async fn read_history(repo: &Repository, name: &CaptureName) -> Result<Vec<(u32, Lsn)>> {
    let data = repo.read_capture(&repo.load_capture(name).await?).await?;
    Ok(history_entries(&String::from_utf8_lossy(&data)))
}

/// Merges sorted ranges `[from, to)` that overlap or touch.
fn merged<T: Ord + Copy>(sorted: impl IntoIterator<Item = (T, T)>) -> Vec<(T, T)> {
    let mut out: Vec<(T, T)> = Vec::new();
    for (a, b) in sorted {
        match out.last_mut() {
            Some(last) if last.1 >= a => last.1 = last.1.max(b),
            _ => out.push((a, b)),
        }
    }
    out
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
            if n.stream == hstream {
                if let Ok(tli) = u32::from_str_radix(&n.first, 16) {
                    map.history.insert(tli, n);
                }
            } else if let Some(((tli, a), (_, b))) =
                parse_position(&n.first).zip(parse_position(&n.last))
            {
                if n.stream == stream {
                    map.ranges.entry(tli).or_default().push((a, b, n));
                } else if n.stream == gstream {
                    map.gaps.entry(tli).or_default().push((a, b));
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
        let stored = self.ranges.get(&tli).map(Vec::as_slice).unwrap_or_default();
        merged(stored.iter().map(|r| (r.0, r.1)))
    }
}

/// Writes `data` to `dest` through a temporary name, so that a reader
/// never sees half a file.
async fn write_atomically(dest: &Path, data: &[u8]) -> Result<()> {
    let tmp = dest.with_extension("backup-tmp");
    tokio::fs::write(&tmp, data)
        .await
        .map_err(|e| Error::io(format!("writing {}", tmp.display()), e))?;
    tokio::fs::rename(&tmp, dest)
        .await
        .map_err(|e| Error::io(format!("writing {}", dest.display()), e))
}

/// The bytes of segment `segno` of timeline `tli` (zeros where nothing is
/// stored), and the byte ranges of it the repository holds, sorted and
/// merged: `[(0, segment_size)]` when it holds all of it.
async fn assemble_segment(
    repo: &Repository,
    map: &WalMap,
    tli: u32,
    segno: u64,
    segment_size: u64,
) -> Result<(Vec<u8>, Vec<(usize, usize)>)> {
    let begin = Lsn(segno * segment_size);
    // Where each timeline of the ancestry applies: this timeline from its
    // start, its parents before.
    let mut spans: Vec<(u32, Lsn, Lsn)> = Vec::new();
    let (mut upper, mut current) = (Lsn(begin.0 + segment_size), tli);
    loop {
        let parent = match map.history.get(&current) {
            Some(n) if current > 1 => read_history(repo, n).await?.last().copied(),
            _ => None,
        };
        match parent {
            Some((parent, switch)) if switch > begin => {
                spans.push((current, switch, upper));
                (upper, current) = (switch, parent);
            }
            _ => {
                spans.push((current, begin, upper));
                break;
            }
        }
    }
    let mut out = vec![0u8; segment_size as usize];
    let mut parts: Vec<(usize, usize)> = Vec::new();
    for (t, from, to) in spans {
        for (a, b, n) in map.ranges.get(&t).map(Vec::as_slice).unwrap_or_default() {
            if from >= to || *b <= from || *a >= to {
                continue;
            }
            let bytes = repo.read_capture(&repo.load_capture(n).await?).await?;
            let (lo, hi) = (from.max(*a), to.min(*b));
            let src = &bytes[(lo.0 - a.0) as usize..(hi.0 - a.0) as usize];
            let dst = (lo.0 - begin.0) as usize;
            out[dst..dst + src.len()].copy_from_slice(src);
            parts.push((dst, dst + src.len()));
        }
    }
    if parts.is_empty() {
        return Err(Error::not_found(format!(
            "WAL segment {}",
            wal_file_name(tli, segno, segment_size)
        )));
    }
    // A receiver and archive_command may overlap: merge what they hold.
    parts.sort_unstable();
    Ok((out, merged(parts)))
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
        assert_eq!(history_start(h), Some(Lsn(0x50_00A0)));
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
