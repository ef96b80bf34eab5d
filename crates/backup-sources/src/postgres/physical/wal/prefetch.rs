//! Fetching ahead for recovery: the prefetch directory beside the file
//! PostgreSQL asks for, the marks recovery and a failed fetch leave there,
//! the background half of `restore_command` that keeps the next segments
//! ready ([`fetch_ahead`], one at a time: [`PrefetchRun`]), and the first
//! segments a point-in-time restore stages while it writes ([`prestage`]).

use std::path::{Path, PathBuf};

use backup_core::repo::Repository;
use backup_core::{Error, Result};

use super::super::lsn::{is_wal_file_name, wal_file_name, Lsn};
use super::{assemble_segment, parse_wal_name, write_atomically, WalMap};

/// The directory, beside the file PostgreSQL asked for, where
/// [`fetch`](fn@super::fetch) leaves the segments it fetched ahead
/// (`pg_wal/.backup-prefetch` for a `restore_command` run in the data
/// directory).
pub fn prefetch_dir(dest: &Path) -> PathBuf {
    dest.parent()
        .unwrap_or_else(|| Path::new("."))
        .join(".backup-prefetch")
}

/// Moves segment `name` from the prefetch directory to `dest` when an
/// earlier [`fetch`](fn@super::fetch) left it there; `Ok(false)` when it
/// did not. Prefetched segments that sort before `name` on its timeline
/// will not be asked for again (recovery moves forward) and are removed.
///
/// Needs no repository: a `restore_command` that finds its segment here
/// neither opens the repository nor reads its key.
///
/// # Errors
///
/// File-system errors other than the segment being absent.
pub fn take_prefetched(name: &str, dest: &Path) -> Result<bool> {
    if !is_wal_file_name(name) {
        return Ok(false);
    }
    let dir = prefetch_dir(dest);
    let from = dir.join(name);
    match std::fs::rename(&from, dest) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => return Err(Error::io(format!("moving {}", from.display()), e)),
    }
    if let Ok(entries) = std::fs::read_dir(&dir) {
        for e in entries.flatten() {
            let other = e.file_name().to_string_lossy().into_owned();
            if is_wal_file_name(&other) && other[..8] == name[..8] && other.as_str() < name {
                let _ = std::fs::remove_file(e.path());
            }
        }
    }
    Ok(true)
}

/// How long a background prefetch waits for recovery to ask for another
/// segment before it ends (a server paused at its target, or stopped).
const PREFETCH_IDLE: std::time::Duration = std::time::Duration::from_secs(60);

/// Records, for the background prefetch, that recovery asked for `name`
/// (`.asked` in [`prefetch_dir`]): the prefetch keeps the segments after
/// it ready. Best effort: a prefetch that does not learn of it only ends
/// sooner.
pub fn note_asked(name: &str, dest: &Path) {
    if !is_wal_file_name(name) {
        return;
    }
    let dir = prefetch_dir(dest);
    let tmp = dir.join(".asked.tmp");
    let _ = std::fs::create_dir_all(&dir)
        .and_then(|()| std::fs::write(&tmp, name))
        .and_then(|()| std::fs::rename(&tmp, dir.join(".asked")));
}

/// Records that fetching `name` into `dest` failed for another reason
/// than its absence (`.failed` in [`prefetch_dir`], with `why`): a recovery
/// that then ends short of its target did not see all the captured WAL,
/// and must not be taken for one that did (see [`fetch_failed`]). Best
/// effort.
pub fn note_fetch_failed(name: &str, dest: &Path, why: &str) {
    let dir = prefetch_dir(dest);
    let _ = std::fs::create_dir_all(&dir).and_then(|()| {
        use std::io::Write as _;
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.join(".failed"))
            .and_then(|mut f| writeln!(f, "{name}: {why}"))
    });
}

/// What [`note_fetch_failed`] recorded for the data directory `data_dir`
/// (its `pg_wal`), if anything.
pub fn fetch_failed(data_dir: &Path) -> Option<String> {
    std::fs::read_to_string(
        prefetch_dir(&data_dir.join("pg_wal").join("RECOVERYXLOG")).join(".failed"),
    )
    .ok()
}

/// Whether the background prefetch is assembling segment `name` right now
/// (it is in the batch named by `.range` in [`prefetch_dir`]), so that
/// waiting for it beats fetching it a second time.
pub fn being_fetched(name: &str, dest: &Path, segment_size: u64) -> bool {
    let Ok((tli, segno)) = parse_wal_name(name, segment_size) else {
        return false;
    };
    let Ok(text) = std::fs::read_to_string(prefetch_dir(dest).join(".range")) else {
        return false;
    };
    let f: Vec<u64> = text
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect();
    matches!(f.as_slice(), [t, a, b] if *t == u64::from(tli) && (*a..=*b).contains(&segno))
}

/// Whether the recovery that `dest` (a file in a data directory's
/// `pg_wal`) is fetched for is over: the data directory has neither
/// `recovery.signal` nor `standby.signal` any more.
pub fn recovery_over(dest: &Path) -> bool {
    let Some(data) = dest.parent().and_then(Path::parent) else {
        return false;
    };
    data.join("PG_VERSION").exists()
        && !data.join("recovery.signal").exists()
        && !data.join("standby.signal").exists()
}

/// The background half of `restore_command`: keeps the `prefetch`
/// complete segments after the one recovery last asked for (see
/// [`note_asked`]; `name` at first) in [`prefetch_dir`], four assembled at
/// a time, while the server replays. The repository is opened and its WAL
/// listed once, not once a segment.
///
/// Ends when the repository holds no more complete segments on the
/// timeline, recovery asks for another timeline or ends, or it has not
/// asked for a new segment for a minute; when recovery is over it removes
/// what it fetched.
///
/// # Errors
///
/// Storage errors, damaged data, write errors.
pub async fn fetch_ahead(
    repo: &Repository,
    system_identifier: &str,
    name: &str,
    dest: &Path,
    segment_size: u64,
    prefetch: usize,
) -> Result<()> {
    if !is_wal_file_name(name) || prefetch == 0 {
        return Ok(());
    }
    let map = WalMap::load(repo, system_identifier).await?;
    let (tli, mut at) = parse_wal_name(name, segment_size)?;
    let dir = prefetch_dir(dest);
    tokio::fs::create_dir_all(&dir)
        .await
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let mut next = at + 1;
    let mut progress = std::time::Instant::now();
    loop {
        if let Some(asked) = std::fs::read_to_string(dir.join(".asked"))
            .ok()
            .and_then(|n| parse_wal_name(n.trim(), segment_size).ok())
        {
            if asked.0 != tli {
                return Ok(());
            }
            if asked.1 > at {
                at = asked.1;
                progress = std::time::Instant::now();
            }
        }
        next = next.max(at + 1);
        let last = at + prefetch as u64;
        if next <= last {
            let upto = last.min(next + 3);
            let range = dir.join(".range");
            std::fs::write(&range, format!("{tli} {next} {upto}"))
                .map_err(|e| Error::io(format!("writing {}", range.display()), e))?;
            let complete = fill(repo, &map, tli, next, upto, &dir, segment_size, 4).await?;
            let _ = std::fs::remove_file(&range);
            if !complete {
                break;
            }
            next = upto + 1;
            continue;
        }
        if recovery_over(dest) || progress.elapsed() > PREFETCH_IDLE {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    if recovery_over(dest) {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// Writes up to `count` complete segments of `tli`, from the one holding
/// `from`, into `dir`: a point-in-time restore stages the first segments
/// recovery asks for while it writes the data directory and moves them to
/// its [`prefetch_dir`], so that replay starts without waiting for the
/// repository. Returns the files written (for their owner to be set).
///
/// # Errors
///
/// Storage errors, damaged data, write errors.
pub async fn prestage(
    repo: &Repository,
    system_identifier: &str,
    tli: u32,
    from: Lsn,
    dir: &Path,
    segment_size: u64,
    count: u64,
) -> Result<Vec<PathBuf>> {
    let map = WalMap::load(repo, system_identifier).await?;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|e| Error::io(format!("creating {}", dir.display()), e))?;
    let first = from.0 / segment_size;
    let last = first + count.max(1) - 1;
    // Two at a time: this runs beside the restore of the data directory,
    // which holds most of the process's memory (each segment is assembled
    // whole).
    fill(repo, &map, tli, first, last, dir, segment_size, 2).await?;
    Ok((first..first + count)
        .map(|n| wal_file_name(tli, n, segment_size))
        .filter(|name| dir.join(name).exists())
        .map(PathBuf::from)
        .collect())
}

/// Writes the segments `first ..= last` of `tli` that are not in `dir`
/// yet, `parallel` at a time; `Ok(false)` when one of them is not stored
/// completely (the ones before it are written, none after it).
#[allow(clippy::too_many_arguments)] // The range, where it goes, and how fast.
async fn fill(
    repo: &Repository,
    map: &WalMap,
    tli: u32,
    first: u64,
    last: u64,
    dir: &Path,
    segment_size: u64,
    parallel: usize,
) -> Result<bool> {
    use futures::StreamExt as _;
    let mut segments = futures::stream::iter(first..=last)
        .map(|n| async move {
            let path = dir.join(wal_file_name(tli, n, segment_size));
            if path.exists() {
                return Ok((path, None));
            }
            match assemble_segment(repo, map, tli, n, segment_size).await {
                Ok((data, covered)) if covered == [(0, data.len())] => Ok((path, Some(data))),
                // Not stored (yet) or not complete: fetched when asked.
                Ok(_) | Err(Error::NotFound { .. }) => Err(None),
                Err(e) => Err(Some(e)),
            }
        })
        .buffered(parallel.max(1));
    while let Some(r) = segments.next().await {
        match r {
            Ok((_, None)) => {}
            Ok((path, Some(data))) => write_atomically(&path, &data).await?,
            Err(None) => return Ok(false),
            Err(Some(e)) => return Err(e),
        }
    }
    Ok(true)
}

/// A background prefetch in a data directory's [`prefetch_dir`]: one at a
/// time, marked by a `.running` file holding its process id (a file whose
/// process is gone is stale and taken over).
#[derive(Debug)]
pub struct PrefetchRun(PathBuf);

impl PrefetchRun {
    fn marker(dest: &Path) -> PathBuf {
        prefetch_dir(dest).join(".running")
    }

    /// Whether a background prefetch for `dest`'s directory is alive.
    pub fn running(dest: &Path) -> bool {
        std::fs::read_to_string(Self::marker(dest))
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok())
            .is_some_and(|pid| Path::new(&format!("/proc/{pid}")).exists())
    }

    /// Stops the background prefetch of the data directory `dest` is in
    /// (`wal fetch --ahead`, which writes into `pg_wal`), if one is at
    /// work, and waits up to `wait` until its process is gone, so that
    /// nothing writes into the directory any more (a failed restore is
    /// about to remove what it wrote). A marker whose process is another
    /// program (its id reused) is left alone.
    pub fn stop(dest: &Path, wait: std::time::Duration) {
        let Some(pid) = std::fs::read_to_string(Self::marker(dest))
            .ok()
            .and_then(|p| p.trim().parse::<i32>().ok())
        else {
            return;
        };
        let proc_dir = PathBuf::from(format!("/proc/{pid}"));
        let ours = std::fs::read(proc_dir.join("cmdline"))
            .is_ok_and(|c| c.split(|b| *b == 0).any(|a| a == b"--ahead"));
        if !ours {
            return;
        }
        let _ = nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid),
            nix::sys::signal::Signal::SIGTERM,
        );
        let started = std::time::Instant::now();
        while proc_dir.exists() && started.elapsed() < wait {
            std::thread::sleep(std::time::Duration::from_millis(20));
        }
    }

    /// Marks this process as the background prefetch; `None` when another
    /// live one is at work.
    pub fn start(dest: &Path) -> Option<Self> {
        let marker = Self::marker(dest);
        std::fs::create_dir_all(marker.parent()?).ok()?;
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(&marker)
            {
                Ok(mut f) => {
                    use std::io::Write as _;
                    f.write_all(std::process::id().to_string().as_bytes())
                        .ok()?;
                    return Some(PrefetchRun(marker));
                }
                Err(_) if !Self::running(dest) => {
                    let _ = std::fs::remove_file(&marker);
                }
                Err(_) => return None,
            }
        }
        None
    }
}

impl Drop for PrefetchRun {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}
