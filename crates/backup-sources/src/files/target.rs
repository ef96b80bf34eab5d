//! The files target.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use backup_core::filter::PathFilter;
use backup_core::progress::Progress;
use backup_core::reader::SnapshotReader;
use backup_core::restorer::TreeWriter;
use backup_core::target::{RestoreOptions, RestoreReport, Target};
use backup_core::tree::{Node, NodeKind};
use backup_core::{Error, Result};
use bytes::Bytes;
use filetime::FileTime;

/// Restores into a local directory that is empty or does not exist.
#[derive(Debug, Clone)]
pub struct FilesTarget {
    root: PathBuf,
}

impl FilesTarget {
    /// A target directory.
    pub fn new(root: PathBuf) -> Self {
        FilesTarget { root }
    }

    /// Checks that the directory is absent or empty.
    fn check_empty(&self) -> Result<()> {
        match fs::read_dir(&self.root) {
            Ok(mut rd) => {
                if rd.next().is_some() {
                    return Err(Error::target_failed(format!(
                        "{} is not empty; restore into an empty or new directory (nothing was changed)",
                        self.root.display()
                    )));
                }
                Ok(())
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotADirectory => {
                Err(Error::target_failed(format!(
                    "{} exists and is not a directory (nothing was changed)",
                    self.root.display()
                )))
            }
            Err(e) => Err(Error::io(format!("reading {}", self.root.display()), e)),
        }
    }
}

#[async_trait]
impl Target for FilesTarget {
    fn describe(&self) -> String {
        self.root.display().to_string()
    }

    async fn check_restored(&self, snapshot: &SnapshotReader) -> Result<Vec<String>> {
        let report = super::compare_restored(snapshot, &self.root).await?;
        Ok(report.differences)
    }

    async fn discard(&self) -> Result<()> {
        match fs::remove_dir_all(&self.root) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("removing {}", self.root.display()), e)),
        }
    }

    fn check_options(&self, opts: &RestoreOptions) -> Result<()> {
        opts.refuse_physical("file snapshots")?;
        if opts.skip_missing_roles {
            return Err(Error::Config(
                "--skip-missing-roles applies to PostgreSQL restores".to_owned(),
            ));
        }
        if opts.drop {
            return Err(Error::Config(
                "--drop applies to databases; a file restore never overwrites, so restore into an empty or new directory".to_owned(),
            ));
        }
        if opts.at.is_some() {
            return Err(Error::Config(
                "--at (point-in-time restore) applies to databases, not files".to_owned(),
            ));
        }
        if !opts.renames.is_empty() {
            return Err(Error::Config(
                "--rename applies to databases, not files".to_owned(),
            ));
        }
        Ok(())
    }

    async fn restore(
        &self,
        snapshot: &SnapshotReader,
        opts: &RestoreOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<RestoreReport> {
        self.check_options(opts)?;
        let filter = PathFilter::new(&opts.includes, &opts.excludes)?;
        self.check_empty()?;
        let planned = snapshot.plan(&filter).await?;
        let lines = unmatched_lines(&filter);
        if !filter.is_empty() && planned.files + planned.dirs + planned.symlinks == 0 {
            return Err(Error::target_failed(format!(
                "the --include/--exclude patterns select nothing of snapshot {} ({}); patterns are globs over paths relative to the backed-up directory, and a pattern without / matches names at any depth (nothing was restored)",
                snapshot.id().short(),
                if lines.is_empty() {
                    "the excludes leave nothing".to_owned()
                } else {
                    lines
                        .iter()
                        .map(|l| l.trim_start_matches("warning: "))
                        .collect::<Vec<_>>()
                        .join("; ")
                }
            )));
        }
        if opts.dry_run {
            return Ok(RestoreReport {
                dry_run: true,
                target: self.describe(),
                stats: planned,
                lines,
                ..RestoreReport::default()
            });
        }
        progress.set_total(planned.bytes);
        fs::create_dir_all(&self.root)
            .map_err(|e| Error::io(format!("creating {}", self.root.display()), e))?;
        let writer = FsWriter::new(self.root.clone())?;
        let result = snapshot
            .restore_tree(&filter, Box::new(writer), progress)
            .await;
        match result {
            Ok(stats) => Ok(RestoreReport {
                dry_run: false,
                target: self.describe(),
                stats,
                lines,
                ..RestoreReport::default()
            }),
            Err(e) => {
                tracing::error!(
                    target_dir = %self.root.display(),
                    "Restore failed; files restored before the failure are left in place (the file being written was removed)."
                );
                Err(e)
            }
        }
    }
}

/// One line per pattern that matched nothing.
fn unmatched_lines(filter: &PathFilter) -> Vec<String> {
    filter
        .unmatched_includes()
        .into_iter()
        .map(|p| format!("warning: --include `{p}` matched nothing"))
        .chain(
            filter
                .unmatched_excludes()
                .into_iter()
                .map(|p| format!("warning: --exclude `{p}` matched nothing")),
        )
        .collect()
}

/// Writes a restore into a directory. Never replaces an existing entry.
///
/// File contents are written by a small pool of threads (creating many
/// small files is bound by system calls, not by the disk), while
/// directories and links are created in order by the caller's thread.
/// Directories are created owner-writable; their real permissions, owner
/// and times are applied once every file inside them is complete, deepest
/// first. Owners are restored when running as root.
#[derive(Debug)]
pub struct FsWriter {
    root: PathBuf,
    as_root: bool,
    workers: Vec<Worker>,
    next_worker: usize,
    shared: Arc<Shared>,
    /// The file being received: its worker and buffered chunks.
    current: Option<Pending>,
    /// Files handed to workers so far (job sequence numbers start at 1).
    jobs: u64,
    /// Directories waiting for their files, with the job count at the time
    /// they were left.
    deferred_dirs: VecDeque<(u64, PathBuf, Node)>,
}

#[derive(Debug)]
struct Pending {
    worker: usize,
    /// Full path of the file.
    path: PathBuf,
    seq: u64,
    started: bool,
    chunks: Vec<Bytes>,
    buffered: usize,
}

#[derive(Debug)]
struct Worker {
    tx: Option<std::sync::mpsc::SyncSender<Vec<Job>>>,
    /// Jobs not sent yet: small files travel in batches, so that a worker
    /// wakes once per batch rather than once per file.
    batch: Vec<Job>,
    batch_bytes: usize,
    handle: Option<std::thread::JoinHandle<()>>,
    /// Sequence number of the last job given to this worker.
    dispatched: u64,
}

#[derive(Debug, Default)]
struct Shared {
    /// Per worker: sequence number of the last completed job.
    completed: Vec<AtomicU64>,
    error: Mutex<Option<Error>>,
    /// Where written files go to be synced early (see
    /// [`FsWriter::with_early_writeback`]).
    flusher: std::sync::OnceLock<std::sync::mpsc::SyncSender<File>>,
}

impl Shared {
    fn fail(&self, e: Error) {
        let mut slot = self.error.lock().unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    fn take_error(&self) -> Option<Error> {
        self.error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }
}

/// A piece of work for a writer thread: the next part of one file.
#[derive(Debug)]
struct Job {
    seq: u64,
    path: PathBuf,
    /// Create the file first.
    create: bool,
    chunks: Vec<Bytes>,
    /// Set metadata and close (the file is complete).
    finish: Option<Node>,
    /// Remove the partial file instead.
    abort: bool,
}

/// Buffered bytes of one file before they are handed to a worker.
const FLUSH_BYTES: usize = 4 * 1024 * 1024;
/// Most jobs in one batch to a worker.
const BATCH_JOBS: usize = 64;
/// With early writeback, a file is synced after this many new bytes...
const WRITEBACK_BYTES: usize = 64 * 1024 * 1024;
/// ...and when it is finished with at least this many not synced yet.
const WRITEBACK_MIN: usize = 1024 * 1024;

impl FsWriter {
    /// A writer into `root` (which must exist).
    ///
    /// # Errors
    ///
    /// When a writer thread cannot be started.
    pub fn new(root: PathBuf) -> Result<Self> {
        // Twice the cores: the work is system calls that often wait on the
        // file system, so more threads than cores keep the cores busy.
        let n = std::thread::available_parallelism().map_or(4, |n| (n.get() * 2).clamp(2, 8));
        let as_root = nix::unistd::Uid::effective().is_root();
        let shared = Arc::new(Shared {
            completed: (0..n).map(|_| AtomicU64::new(0)).collect(),
            error: Mutex::new(None),
            flusher: std::sync::OnceLock::new(),
        });
        let mut workers = Vec::with_capacity(n);
        for i in 0..n {
            let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Job>>(2);
            let shared2 = shared.clone();
            let handle = std::thread::Builder::new()
                .name(format!("restore-writer-{i}"))
                .spawn(move || write_worker(i, &rx, &shared2, as_root))
                .map_err(|e| Error::io("starting a restore writer thread", e))?;
            workers.push(Worker {
                tx: Some(tx),
                batch: Vec::new(),
                batch_bytes: 0,
                handle: Some(handle),
                dispatched: 0,
            });
        }
        Ok(FsWriter {
            root,
            as_root,
            workers,
            next_worker: 0,
            shared,
            current: None,
            jobs: 0,
            deferred_dirs: VecDeque::new(),
        })
    }

    /// Syncs large files to disk while the restore goes on, on a thread of
    /// its own (every 64 MiB written and when finished), so that a restore
    /// that ends with a sync of its file system (a PostgreSQL data
    /// directory) finds little left to write, instead of flushing
    /// gigabytes at the end. Durability still comes from that final sync:
    /// this only moves the writing earlier, and skips a file while the
    /// thread is busy.
    ///
    /// # Errors
    ///
    /// When the thread cannot be started.
    pub fn with_early_writeback(self) -> Result<Self> {
        let (tx, rx) = std::sync::mpsc::sync_channel::<File>(1);
        std::thread::Builder::new()
            .name("restore-writeback".to_owned())
            .spawn(move || {
                for f in rx {
                    let _ = f.sync_data();
                }
            })
            .map_err(|e| Error::io("starting the restore writeback thread", e))?;
        let _ = self.shared.flusher.set(tx);
        Ok(self)
    }

    fn full(&self, rel: &Path) -> PathBuf {
        self.root.join(rel)
    }

    fn check_workers(&self) -> Result<()> {
        match self.shared.take_error() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    /// Queues a job for a worker; the batch goes out when it is full or
    /// when `urgent` (an abort, or the end).
    fn send(&mut self, worker: usize, job: Job, urgent: bool) -> Result<()> {
        let w = &mut self.workers[worker];
        w.dispatched = job.seq;
        w.batch_bytes += job.chunks.iter().map(Bytes::len).sum::<usize>();
        w.batch.push(job);
        if urgent || w.batch.len() >= BATCH_JOBS || w.batch_bytes >= FLUSH_BYTES {
            self.send_batch(worker)?;
        }
        Ok(())
    }

    fn send_batch(&mut self, worker: usize) -> Result<()> {
        let w = &mut self.workers[worker];
        if w.batch.is_empty() {
            return Ok(());
        }
        let batch = std::mem::take(&mut w.batch);
        w.batch_bytes = 0;
        let sent = w.tx.as_ref().is_some_and(|tx| tx.send(batch).is_ok());
        if sent {
            Ok(())
        } else {
            self.check_workers()?;
            Err(Error::target_failed("a restore writer thread stopped"))
        }
    }

    fn send_all_batches(&mut self) -> Result<()> {
        for i in 0..self.workers.len() {
            self.send_batch(i)?;
        }
        Ok(())
    }

    /// Hands the buffered part of the current file to its worker.
    fn flush(&mut self, finish: Option<Node>) -> Result<()> {
        let Some(p) = self.current.as_mut() else {
            return Err(Error::target_failed("data without an open file"));
        };
        let job = Job {
            seq: p.seq,
            path: p.path.clone(),
            create: !p.started,
            chunks: std::mem::take(&mut p.chunks),
            finish,
            abort: false,
        };
        p.started = true;
        p.buffered = 0;
        let worker = p.worker;
        self.send(worker, job, false)
    }

    /// The highest job number up to which every job is complete.
    fn watermark(&self) -> u64 {
        self.workers
            .iter()
            .zip(&self.shared.completed)
            .filter_map(|(w, done)| {
                let done = done.load(Ordering::Acquire);
                (w.dispatched > done).then_some(done)
            })
            .min()
            .unwrap_or(self.jobs)
    }

    /// Applies the metadata of directories whose files are all complete.
    fn apply_ready_dirs(&mut self, all: bool) -> Result<()> {
        let mark = if all { u64::MAX } else { self.watermark() };
        while self
            .deferred_dirs
            .front()
            .is_some_and(|(seq, _, _)| *seq <= mark)
        {
            if let Some((_, path, node)) = self.deferred_dirs.pop_front() {
                let full = self.full(&path);
                set_dir_metadata(&full, &node, self.as_root)?;
            }
        }
        Ok(())
    }

    fn stop_workers(&mut self) {
        let _ = self.send_all_batches();
        for w in &mut self.workers {
            w.tx = None;
        }
        for w in &mut self.workers {
            if let Some(h) = w.handle.take() {
                let _ = h.join();
            }
        }
    }
}

impl Drop for FsWriter {
    fn drop(&mut self) {
        self.stop_workers();
    }
}

fn set_dir_metadata(full: &Path, node: &Node, as_root: bool) -> Result<()> {
    if as_root {
        if let (Some(uid), Some(gid)) = (node.uid, node.gid) {
            std::os::unix::fs::chown(full, Some(uid), Some(gid))
                .map_err(|e| Error::io(format!("setting owner of {}", full.display()), e))?;
        }
    }
    if let Some(mode) = node.mode {
        fs::set_permissions(full, fs::Permissions::from_mode(mode))
            .map_err(|e| Error::io(format!("setting permissions of {}", full.display()), e))?;
    }
    if let Some(t) = mtime_of(node) {
        filetime::set_file_mtime(full, t)
            .map_err(|e| Error::io(format!("setting times of {}", full.display()), e))?;
    }
    Ok(())
}

/// A writer thread: creates, fills and finishes files, one job at a time.
fn write_worker(
    index: usize,
    rx: &std::sync::mpsc::Receiver<Vec<Job>>,
    shared: &Shared,
    as_root: bool,
) {
    let mut file: Option<(PathBuf, File, usize)> = None;
    let mut failed = false;
    for job in rx.iter().flatten() {
        if job.abort || failed {
            file = None;
            if job.abort || !job.create {
                remove_partial(&job.path);
            }
        } else if let Err(e) = run_job(&mut file, &job, as_root, shared) {
            file = None;
            remove_partial(&job.path);
            shared.fail(e);
            failed = true;
        }
        if job.finish.is_some() || job.abort {
            shared.completed[index].store(job.seq, Ordering::Release);
        }
    }
}

fn remove_partial(path: &Path) {
    if let Err(e) = fs::remove_file(path) {
        if e.kind() != std::io::ErrorKind::NotFound {
            tracing::warn!(file = %path.display(), error = %e, "Could not remove a partially restored file.");
        }
    }
}

fn run_job(
    file: &mut Option<(PathBuf, File, usize)>,
    job: &Job,
    as_root: bool,
    shared: &Shared,
) -> Result<()> {
    if job.create {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&job.path)
            .map_err(|e| Error::io(format!("creating {}", job.path.display()), e))?;
        *file = Some((job.path.clone(), f, 0));
    }
    let Some((path, f, unflushed)) = file.as_mut() else {
        return Err(Error::target_failed("data for a file that is not open"));
    };
    for c in &job.chunks {
        f.write_all(c)
            .map_err(|e| Error::io(format!("writing {}", path.display()), e))?;
    }
    if let Some(tx) = shared.flusher.get() {
        *unflushed += job.chunks.iter().map(Bytes::len).sum::<usize>();
        if *unflushed >= WRITEBACK_BYTES || (job.finish.is_some() && *unflushed >= WRITEBACK_MIN) {
            // Skipped while the flusher is busy: the next piece asks again.
            if let Ok(clone) = f.try_clone() {
                if tx.try_send(clone).is_ok() {
                    *unflushed = 0;
                }
            }
        }
    }
    if let Some(node) = &job.finish {
        if let Some((path, f, _)) = file.take() {
            finish_file(&path, &f, node, as_root)?;
        }
    }
    Ok(())
}

fn finish_file(full: &Path, f: &File, node: &Node, as_root: bool) -> Result<()> {
    let ctx = |what: &str| format!("{what} {}", full.display());
    if as_root {
        if let (Some(uid), Some(gid)) = (node.uid, node.gid) {
            std::os::unix::fs::fchown(f, Some(uid), Some(gid))
                .map_err(|e| Error::io(ctx("setting owner of"), e))?;
        }
    }
    let mode = node.mode.unwrap_or(if node.kind == NodeKind::Stream {
        0o600
    } else {
        0o644
    });
    f.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| Error::io(ctx("setting permissions of"), e))?;
    if let Some(t) = mtime_of(node) {
        filetime::set_file_handle_times(f, None, Some(t))
            .map_err(|e| Error::io(ctx("setting times of"), e))?;
    }
    Ok(())
}

fn mtime_of(node: &Node) -> Option<FileTime> {
    node.mtime_ns.map(|ns| {
        FileTime::from_unix_time(
            ns.div_euclid(1_000_000_000),
            ns.rem_euclid(1_000_000_000) as u32,
        )
    })
}

impl TreeWriter for FsWriter {
    fn enter_dir(&mut self, path: &Path, _node: &Node) -> Result<()> {
        self.check_workers()?;
        let full = self.full(path);
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&full)
            .map_err(|e| Error::io(format!("creating directory {}", full.display()), e))
    }

    fn leave_dir(&mut self, path: &Path, node: &Node) -> Result<()> {
        self.deferred_dirs
            .push_back((self.jobs, path.to_owned(), node.clone()));
        self.apply_ready_dirs(false)
    }

    fn start_file(&mut self, path: &Path, _node: &Node) -> Result<()> {
        self.check_workers()?;
        self.jobs += 1;
        let worker = self.next_worker;
        self.next_worker = (self.next_worker + 1) % self.workers.len();
        self.current = Some(Pending {
            worker,
            path: self.full(path),
            seq: self.jobs,
            started: false,
            chunks: Vec::new(),
            buffered: 0,
        });
        Ok(())
    }

    fn write_data(&mut self, data: Bytes) -> Result<()> {
        let p = self
            .current
            .as_mut()
            .ok_or_else(|| Error::target_failed("data without an open file"))?;
        p.buffered += data.len();
        p.chunks.push(data);
        if p.buffered >= FLUSH_BYTES {
            self.flush(None)?;
        }
        Ok(())
    }

    fn finish_file(&mut self, _path: &Path, node: &Node) -> Result<()> {
        self.flush(Some(node.clone()))?;
        self.current = None;
        self.apply_ready_dirs(false)
    }

    fn abort_file(&mut self, _path: &Path) {
        if let Some(p) = self.current.take() {
            let job = Job {
                seq: p.seq,
                path: p.path.clone(),
                create: false,
                chunks: Vec::new(),
                finish: None,
                abort: true,
            };
            if self.send(p.worker, job, true).is_err() {
                remove_partial(&p.path);
            }
        }
    }

    fn symlink(&mut self, path: &Path, node: &Node) -> Result<()> {
        self.check_workers()?;
        let full = self.full(path);
        let target = node.link_target.as_ref().ok_or_else(|| {
            Error::corrupt(
                backup_core::FileKind::Pack,
                path.display(),
                "symbolic link without target",
            )
        })?;
        std::os::unix::fs::symlink(target.to_os(), &full)
            .map_err(|e| Error::io(format!("creating link {}", full.display()), e))?;
        if self.as_root {
            if let (Some(uid), Some(gid)) = (node.uid, node.gid) {
                std::os::unix::fs::lchown(&full, Some(uid), Some(gid))
                    .map_err(|e| Error::io(format!("setting owner of {}", full.display()), e))?;
            }
        }
        if let Some(t) = mtime_of(node) {
            filetime::set_symlink_file_times(&full, t, t)
                .map_err(|e| Error::io(format!("setting times of {}", full.display()), e))?;
        }
        Ok(())
    }

    fn finish(&mut self) -> Result<()> {
        self.stop_workers();
        self.check_workers()?;
        self.apply_ready_dirs(true)
    }
}
