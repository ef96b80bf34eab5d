//! A WAL segment assembled from the pieces the repository holds (on its
//! timeline and, before the timeline began, on its parents), and written
//! so that a reader never sees half a file.

use std::path::Path;

use backup_core::repo::Repository;
use backup_core::{Error, Result};

use super::super::lsn::{wal_file_name, Lsn};
use super::stored::{history_entries, WalMap};

/// Writes `data` to `dest` through a temporary name, so that a reader
/// never sees half a file.
pub(super) async fn write_atomically(dest: &Path, data: &[u8]) -> Result<()> {
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
pub(super) async fn assemble_segment(
    repo: &Repository,
    map: &WalMap,
    tli: u32,
    segno: u64,
    segment_size: u64,
) -> Result<(Vec<u8>, Vec<(usize, usize)>)> {
    let begin = Lsn(segno * segment_size);
    let end = Lsn(begin.0 + segment_size);
    // Where each timeline of the ancestry applies: this timeline from its
    // start, its parents before.
    let mut spans: Vec<(u32, Lsn, Lsn)> = Vec::new();
    let mut upper = end;
    let mut current = tli;
    loop {
        let start = if current > 1 {
            match map.history.get(&current) {
                Some(n) => {
                    let rec = repo.load_capture(n).await?;
                    let text =
                        String::from_utf8_lossy(&repo.read_capture(&rec).await?).into_owned();
                    let entries = history_entries(&text);
                    let parent = entries.last().map_or(current - 1, |e| e.0);
                    let switch = entries.last().map_or(Lsn(0), |e| e.1);
                    spans.push((current, switch.max(begin), upper));
                    if switch <= begin {
                        break;
                    }
                    upper = switch;
                    current = parent;
                    continue;
                }
                None => Lsn(0),
            }
        } else {
            Lsn(0)
        };
        spans.push((current, start.max(begin), upper));
        break;
    }
    let mut out = vec![0u8; segment_size as usize];
    let mut found = false;
    let mut parts: Vec<(u64, u64)> = Vec::new();
    for (t, from, to) in spans {
        if from >= to {
            continue;
        }
        for (a, b, n) in map.ranges.get(&t).map(Vec::as_slice).unwrap_or_default() {
            if *b <= from || *a >= to {
                continue;
            }
            let rec = repo.load_capture(n).await?;
            let bytes = repo.read_capture(&rec).await?;
            let lo = from.max(*a);
            let hi = to.min(*b);
            let src = &bytes[(lo.0 - a.0) as usize..(hi.0 - a.0) as usize];
            let dst = (lo.0 - begin.0) as usize;
            out[dst..dst + src.len()].copy_from_slice(src);
            found = true;
            parts.push((lo.0, hi.0));
        }
    }
    if !found {
        return Err(Error::not_found(format!(
            "WAL segment {}",
            wal_file_name(tli, segno, segment_size)
        )));
    }
    // A receiver and archive_command may overlap: merge what they hold.
    parts.sort_unstable();
    let mut covered: Vec<(usize, usize)> = Vec::new();
    for (lo, hi) in parts {
        let (lo, hi) = ((lo - begin.0) as usize, (hi - begin.0) as usize);
        match covered.last_mut() {
            Some(last) if lo <= last.1 => last.1 = last.1.max(hi),
            _ => covered.push((lo, hi)),
        }
    }
    Ok((out, covered))
}
