//! Recovery (`restore_command = 'backup wal fetch %f %p'`): [`fetch`].

use std::path::Path;

use backup_core::repo::Repository;
use backup_core::{Error, Result};

use super::prefetch::note_fetch_failed;
use super::{assemble_segment, parse_wal_name, write_atomically, WalMap};

/// Writes WAL file `name` (a segment or a history file) assembled from the
/// repository into `dest`, for `restore_command`. A segment is made of the
/// pieces that cover it on its timeline (and, before the timeline began,
/// on its parent, as PostgreSQL's own segment files are); bytes after the
/// last piece of an unfinished segment are zeros. Where capture began
/// inside the segment (a receiver started after the base backup), the
/// bytes before its first piece are the base backup's: they are taken from
/// the copy of the segment a restore laid out beside `dest` in `pg_wal`.
///
/// The segments after it are fetched ahead by
/// [`fetch_ahead`](super::fetch_ahead) (a background process), which
/// leaves only segments the repository holds completely in
/// [`prefetch_dir`](super::prefetch_dir), so a prefetched segment never
/// differs from what a later fetch would write.
///
/// # Errors
///
/// [`Error::NotFound`] when nothing of it is stored, or its start is
/// neither stored nor beside `dest` (PostgreSQL then tries `pg_wal` or
/// ends recovery); damaged data; storage and write errors.
pub async fn fetch(
    repo: &Repository,
    system_identifier: &str,
    name: &str,
    dest: &Path,
    segment_size: u64,
) -> Result<()> {
    let map = WalMap::load(repo, system_identifier).await?;
    if let Some(tli) = name
        .strip_suffix(".history")
        .and_then(|t| u32::from_str_radix(t, 16).ok())
    {
        let n = map
            .history
            .get(&tli)
            .ok_or_else(|| Error::not_found(format!("timeline history file {name}")))?;
        let data = repo.read_capture(&repo.load_capture(n).await?).await?;
        return write_atomically(dest, &data).await;
    }
    let (tli, segno) = parse_wal_name(name, segment_size)?;
    let (mut data, covered) = assemble_segment(repo, &map, tli, segno, segment_size).await?;
    let last = covered.last().map_or(0, |r| r.1);
    let holes = holes_before(&covered, last);
    if !holes.is_empty() {
        // Capture began inside this segment (a receiver started after the
        // base backup): its start is the base backup's own WAL, which the
        // restore laid out in `pg_wal` beside `dest`.
        let beside = dest.with_file_name(name);
        match std::fs::read(&beside) {
            Ok(base) if base.len() == data.len() => {
                for (lo, hi) in holes {
                    data[lo..hi].copy_from_slice(&base[lo..hi]);
                }
            }
            _ if holes[0].0 == 0 => {
                // Absent for PostgreSQL (it then tries `pg_wal`), but a
                // hole in what the repository holds, not its end.
                let what = format!(
                    "the start of WAL segment {name} (capture began inside it; {} holds no copy of it from a base backup)",
                    beside.display()
                );
                note_fetch_failed(name, dest, &format!("{what} is not stored"));
                return Err(Error::not_found(what));
            }
            _ => {}
        }
    }
    write_atomically(dest, &data).await
}

/// The byte ranges of a segment that `covered` (sorted, merged ranges)
/// leaves out before offset `end`.
fn holes_before(covered: &[(usize, usize)], end: usize) -> Vec<(usize, usize)> {
    let mut out = Vec::new();
    let mut at = 0;
    for &(lo, hi) in covered {
        if lo >= end {
            break;
        }
        if lo > at {
            out.push((at, lo));
        }
        at = at.max(hi);
    }
    out
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use backup_core::capture::PieceInfo;

    use super::*;
    use crate::postgres::physical::lsn::{wal_file_name, Lsn};
    use crate::postgres::physical::wal::{position, streams, WAL_KIND};

    #[test]
    fn holes_are_the_ranges_left_out_before_the_end() {
        assert_eq!(holes_before(&[(0, 10)], 10), vec![]);
        assert_eq!(holes_before(&[(4, 10)], 10), vec![(0, 4)]);
        assert_eq!(
            holes_before(&[(4, 6), (8, 10), (12, 20)], 20),
            vec![(0, 4), (6, 8), (10, 12)]
        );
        assert_eq!(holes_before(&[(0, 6), (8, 10)], 6), vec![]);
    }

    /// Capture that began inside a segment (a receiver started after the
    /// base backup, or resumed after a gap) leaves the segment's start to
    /// the base backup's copy in `pg_wal`; without one, the segment is not
    /// served (zeros where the checkpoint record should be would stop
    /// recovery).
    #[tokio::test]
    async fn a_segment_captured_from_its_middle_takes_its_start_from_pg_wal() {
        let repo = crate::test_support::memory_repo().await;
        let seg: u64 = 1 << 20;
        let sysid = "7000000000000000001";
        let (stream, _) = streams(&repo, sysid);
        // Segment 3 of timeline 1, stored from offset 0x100 to 0x9000.
        let from = Lsn(3 * seg + 0x100);
        let piece: Vec<u8> = (0..0x8f00u32).map(|i| (i % 251) as u8 + 1).collect();
        let info = PieceInfo {
            stream,
            kind: WAL_KIND.to_owned(),
            source: backup_core::snapshot::SourceDescriptor {
                kind: "postgres".into(),
                url: "postgres://h/".into(),
            },
            identity: sysid.to_owned(),
            first: position(1, from),
            last: position(1, Lsn(from.0 + piece.len() as u64)),
            time_first: None,
            time_last: None,
            details: serde_json::Value::Null,
        };
        repo.put_capture(info, &piece, Duration::from_secs(5))
            .await
            .unwrap();
        let name = wal_file_name(1, 3, seg);
        let dir = tempfile::tempdir().unwrap();
        let pg_wal = dir.path().join("pg_wal");
        std::fs::create_dir(&pg_wal).unwrap();
        let dest = pg_wal.join("RECOVERYXLOG");
        // No copy beside it: not served.
        let err = fetch(&repo, sysid, &name, &dest, seg).await.unwrap_err();
        assert!(matches!(err, Error::NotFound { .. }), "{err}");
        assert!(!dest.exists());
        // The base backup's copy: its start, then the captured bytes, then
        // zeros after the last piece.
        let base = vec![0xEEu8; seg as usize];
        std::fs::write(pg_wal.join(&name), &base).unwrap();
        fetch(&repo, sysid, &name, &dest, seg).await.unwrap();
        let got = std::fs::read(&dest).unwrap();
        assert_eq!(got.len(), seg as usize);
        assert!(got[..0x100].iter().all(|b| *b == 0xEE));
        assert_eq!(&got[0x100..0x9000], &piece[..]);
        assert!(got[0x9000..].iter().all(|b| *b == 0));
    }
}
