//! WAL capture for PostgreSQL point-in-time recovery: the streaming
//! receiver (`backup wal receive`), `archive_command` (`backup wal push`)
//! and `restore_command` (`backup wal fetch`).
//!
//! `push` and `fetch` run once per WAL segment as the database server's
//! user, without the operator's environment: they find the cluster's
//! system identifier in the data directory they run in (the server starts
//! them there), and open the repository with a key file that needs no
//! password (`backup key export --no-password`), so no key derivation runs
//! per call.

use std::path::Path;

use backup_core::capture::CaptureName;
use backup_core::repo::Repository;
use backup_core::snapshot::SourceDescriptor;
use backup_sources::postgres::physical::{self, wal};
use tokio_util::sync::CancellationToken;

pub use backup_sources::postgres::physical::pitr::{end_recovery, RecoveryEnded};
pub use wal::{
    being_fetched, fetch_ahead, fetch_failed, note_asked, note_fetch_failed, prefetch_dir,
    recovery_over, take_prefetched, PrefetchRun, ReceiveOptions, WAL_KIND,
};

use crate::error::{Error, Result};

/// Streams WAL from the server of `url` (a role with `REPLICATION`) into
/// `repo` until `stop` is cancelled, telling `observer` what happens with
/// the same events as every capture ([`crate::pitr::CaptureEvent`]).
///
/// # Errors
///
/// Connection, replication and storage errors.
pub async fn receive(
    repo: &Repository,
    url: &str,
    opts: ReceiveOptions,
    stop: CancellationToken,
    observer: std::sync::Arc<dyn crate::pitr::CaptureObserver>,
) -> Result<crate::pitr::FollowSummary> {
    Ok(wal::receive(repo.clone(), url, opts, stop, observer).await?)
}

/// The system identifier of the cluster whose data directory is `dir`
/// (`global/pg_control`).
///
/// # Errors
///
/// A configuration error when `dir` holds no readable `pg_control`.
pub fn cluster_of(dir: &Path) -> Result<String> {
    backup_sources::postgres::physical::control_system_identifier(dir).ok_or_else(|| {
        Error::Config(crate::config::ConfigError::invalid(
            "cluster",
            format!(
                "{} has no readable global/pg_control: run this in the data directory (the server does for archive_command and restore_command), or give --cluster",
                dir.display()
            ),
        ))
    })
}

/// Stores a WAL segment or timeline history file (`archive_command =
/// 'backup wal push %p'`); a backup history file is acknowledged without
/// being stored (`None`). Pushing the same file twice succeeds; another
/// file of the same name is refused.
///
/// # Errors
///
/// An unreadable file or one that is not WAL; a conflicting segment;
/// storage errors.
pub async fn push(repo: &Repository, cluster: &str, path: &Path) -> Result<Option<CaptureName>> {
    let size = std::fs::metadata(path)
        .map_err(|e| backup_core::Error::io(format!("reading {}", path.display()), e))?
        .len();
    // A segment's size is the cluster's segment size (a power of two from
    // 1 MiB to 1 GiB); a history file's size says nothing.
    let segment_size = if physical::is_wal_segment_size(size) {
        size
    } else {
        16 << 20
    };
    let source = SourceDescriptor {
        kind: "postgres".to_owned(),
        url: format!("postgres://cluster-{cluster}/?mode=physical"),
    };
    Ok(wal::push(repo, cluster, source, path, segment_size).await?)
}

/// The fast path of `restore_command`, for a command that fetches ahead:
/// `true` when WAL file `name` was fetched ahead, or the background fetch
/// finishes it within a minute, and it is now at `dest`. It notes the
/// request first, so that the background fetch knows how far recovery
/// has come. Nothing here opens the repository.
pub fn take_ready(name: &str, dest: &Path, segment_size: u64) -> bool {
    note_asked(name, dest);
    let waited = std::time::Instant::now();
    loop {
        match take_prefetched(name, dest) {
            Ok(true) => return true,
            Ok(false) => {}
            Err(_) => return false,
        }
        if !(PrefetchRun::running(dest)
            && being_fetched(name, dest, segment_size)
            && waited.elapsed() < std::time::Duration::from_secs(60))
        {
            return false;
        }
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// Writes WAL file `name` from the repository to `dest`
/// (`restore_command = 'backup wal fetch %f %p'`); the next segments are
/// fetched ahead into `pg_wal/.backup-prefetch` by [`fetch_ahead`] (see
/// [`take_prefetched`], which the next call tries first). `Ok(false)` when
/// the repository does not hold `name` (the server asks for files that may
/// not exist: the next timeline's history, the segment after the last; it
/// then looks in `pg_wal` or ends recovery); any other failure is noted for
/// the background fetch ([`note_fetch_failed`]) before it is returned.
///
/// # Errors
///
/// Damaged data; storage and write errors.
pub async fn fetch_for_recovery(
    repo: &Repository,
    cluster: &str,
    name: &str,
    dest: &Path,
    segment_size: u64,
) -> Result<bool> {
    let fetched = wal::fetch(repo, cluster, name, dest, segment_size).await;
    match fetched.map_err(Error::from) {
        Ok(()) => Ok(true),
        Err(Error::Core(backup_core::Error::NotFound { .. })) => Ok(false),
        Err(e) => {
            note_fetch_failed(name, dest, &backup_core::error::report(&e));
            Err(e)
        }
    }
}

/// Whether a `restore_command` that fetched a file should start the
/// background fetch of the next ones: it was asked to fetch ahead and
/// none runs for `dest`.
pub fn should_fetch_ahead(prefetch: usize, dest: &Path) -> bool {
    prefetch > 0 && !PrefetchRun::running(dest)
}
