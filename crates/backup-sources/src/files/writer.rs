//! Writing a restore into a directory: the writer threads, hard links,
//! sparse files and what to do with entries that exist already.

use std::collections::VecDeque;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use backup_core::restorer::TreeWriter;
use backup_core::target::{Overwrite, Owners};
use backup_core::tree::{FileFlag, Node, NodeKind};
use backup_core::{Error, Result};
use bytes::Bytes;

use super::meta::{creation_mode, set_flags, set_metadata, MetaWriter, RestoreNotes};

/// Writes a restore into a directory. Replaces an existing entry only when
/// made with [`FsWriter::overwriting`].
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
    /// The worker that wrote each hard-linked file (by full path), so a
    /// link to it is made after it exists.
    link_workers: std::collections::HashMap<PathBuf, usize>,
    /// Inode flags, set last (an immutable file or directory takes no
    /// further change).
    flags: Vec<(PathBuf, Vec<FileFlag>)>,
    /// What to do with entries that exist already (`None`: nothing may
    /// exist, every create is exclusive).
    overwrite: Option<Overwrite>,
    /// A directory (relative) left as it was, whose entries are skipped.
    skip_below: Option<PathBuf>,
    /// Existing directories whose metadata is left as it was.
    kept_dirs: std::collections::HashSet<PathBuf>,
    /// The current file is left as it was: its data is dropped.
    skipping: bool,
}

#[derive(Debug)]
struct Pending {
    worker: usize,
    /// Full path of the file.
    path: PathBuf,
    seq: u64,
    started: bool,
    /// The permissions it is created with ([`creation_mode`]).
    mode: u32,
    chunks: Vec<Bytes>,
    buffered: usize,
    sparse: bool,
    rename_to: Option<PathBuf>,
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

#[derive(Debug)]
struct Shared {
    meta: MetaWriter,
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
    /// Create the file first, with these permissions.
    create: Option<u32>,
    chunks: Vec<Bytes>,
    /// Set metadata and close (the file is complete).
    finish: Option<Node>,
    /// Remove the partial file instead.
    abort: bool,
    /// With `create`: leave zero blocks unwritten (holes).
    sparse: bool,
    /// Make `path` a hard link to this file instead (no data follows).
    link_to: Option<PathBuf>,
    /// With `finish`: rename the complete file to this path (replacing
    /// what is there).
    rename_to: Option<PathBuf>,
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
        Self::with_owners(root, Owners::default())
    }

    /// A writer into `root` (which must exist) that sets owners as
    /// `owners` says.
    ///
    /// # Errors
    ///
    /// When a writer thread cannot be started.
    pub fn with_owners(root: PathBuf, owners: Owners) -> Result<Self> {
        // Twice the cores: the work is system calls that often wait on the
        // file system, so more threads than cores keep the cores busy.
        let n = std::thread::available_parallelism().map_or(4, |n| (n.get() * 2).clamp(2, 8));
        let meta = MetaWriter {
            as_root: nix::unistd::Uid::effective().is_root(),
            owners,
            notes: RestoreNotes::default(),
            users: Mutex::default(),
            groups: Mutex::default(),
        };
        let shared = Arc::new(Shared {
            meta,
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
                .spawn(move || write_worker(i, &rx, &shared2))
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
            workers,
            next_worker: 0,
            shared,
            current: None,
            jobs: 0,
            deferred_dirs: VecDeque::new(),
            link_workers: std::collections::HashMap::new(),
            flags: Vec::new(),
            overwrite: None,
            skip_below: None,
            kept_dirs: std::collections::HashSet::new(),
            skipping: false,
        })
    }

    /// Restores into a directory that may hold entries already, treating
    /// them as `mode` says: a file is replaced by writing a temporary file
    /// beside it and renaming it over the old one when complete.
    #[must_use]
    pub fn overwriting(mut self, mode: Overwrite) -> Self {
        self.overwrite = Some(mode);
        self
    }

    /// What the restore could not apply, for its report (read after the
    /// restore).
    pub fn notes(&self) -> RestoreNotes {
        self.shared.meta.notes.clone()
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
        let finish_now = finish.is_some();
        let Some(p) = self.current.as_mut() else {
            return Err(Error::target_failed("data without an open file"));
        };
        let job = Job {
            seq: p.seq,
            path: p.path.clone(),
            create: (!p.started).then_some(p.mode),
            chunks: std::mem::take(&mut p.chunks),
            finish,
            abort: false,
            sparse: p.sparse,
            link_to: None,
            rename_to: if finish_now {
                p.rename_to.clone()
            } else {
                None
            },
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
                set_metadata(&self.shared.meta, &full, None, &node)?;
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

/// A file a writer thread has open.
struct OpenFile {
    path: PathBuf,
    file: File,
    /// Bytes written since the last early sync.
    unflushed: usize,
    /// Bytes of content taken so far (holes included).
    pos: u64,
    sparse: bool,
}

/// A writer thread: creates, fills and finishes files, one job at a time.
fn write_worker(index: usize, rx: &std::sync::mpsc::Receiver<Vec<Job>>, shared: &Shared) {
    let mut file: Option<OpenFile> = None;
    let mut failed = false;
    for job in rx.iter().flatten() {
        if job.abort || failed {
            file = None;
            if job.abort || job.create.is_none() {
                remove_partial(&job.path);
            }
        } else if let Err(e) = run_job(&mut file, &job, shared) {
            file = None;
            if job.link_to.is_none() {
                remove_partial(&job.path);
            }
            shared.fail(e);
            failed = true;
        }
        if job.finish.is_some() || job.abort || job.link_to.is_some() {
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

/// Blocks of a sparse file that are all zeros are left as holes; holes are
/// whole blocks of this size at offsets that are multiples of it.
const HOLE_BLOCK: usize = 4096;

/// Writes `data` at `pos` of a sparse file, skipping zero blocks.
fn write_sparse(f: &File, pos: u64, data: &[u8]) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let mut off = 0usize;
    while off < data.len() {
        let at = pos + off as u64;
        // Up to the next block boundary of the file.
        let room = HOLE_BLOCK - usize::try_from(at % HOLE_BLOCK as u64).unwrap_or(0);
        let end = (off + room).min(data.len());
        let block = &data[off..end];
        if block.iter().any(|&b| b != 0) {
            f.write_all_at(block, at)?;
        }
        off = end;
    }
    Ok(())
}

fn run_job(file: &mut Option<OpenFile>, job: &Job, shared: &Shared) -> Result<()> {
    if let Some(first) = &job.link_to {
        return fs::hard_link(first, &job.path).map_err(|e| {
            Error::io(
                format!("linking {} to {}", job.path.display(), first.display()),
                e,
            )
        });
    }
    if let Some(mode) = job.create {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode)
            .open(&job.path)
            .map_err(|e| Error::io(format!("creating {}", job.path.display()), e))?;
        *file = Some(OpenFile {
            path: job.path.clone(),
            file: f,
            unflushed: 0,
            pos: 0,
            sparse: job.sparse,
        });
    }
    let Some(open) = file.as_mut() else {
        return Err(Error::target_failed("data for a file that is not open"));
    };
    for c in &job.chunks {
        if open.sparse {
            write_sparse(&open.file, open.pos, c)
        } else {
            open.file.write_all(c)
        }
        .map_err(|e| Error::io(format!("writing {}", open.path.display()), e))?;
        open.pos += c.len() as u64;
    }
    if let Some(tx) = shared.flusher.get() {
        open.unflushed += job.chunks.iter().map(Bytes::len).sum::<usize>();
        if open.unflushed >= WRITEBACK_BYTES
            || (job.finish.is_some() && open.unflushed >= WRITEBACK_MIN)
        {
            // Skipped while the flusher is busy: the next piece asks again.
            if let Ok(clone) = open.file.try_clone() {
                if tx.try_send(clone).is_ok() {
                    open.unflushed = 0;
                }
            }
        }
    }
    if let Some(node) = &job.finish {
        if let Some(open) = file.take() {
            if open.sparse {
                // A hole at the end is not written: the length makes it.
                open.file
                    .set_len(open.pos)
                    .map_err(|e| Error::io(format!("writing {}", open.path.display()), e))?;
            }
            set_metadata(&shared.meta, &open.path, Some(&open.file), node)?;
            if let Some(to) = &job.rename_to {
                fs::rename(&open.path, to).map_err(|e| {
                    Error::io(
                        format!("replacing {} with the restored file", to.display()),
                        e,
                    )
                })?;
            }
        }
    }
    Ok(())
}

/// What a restore finds where it is about to create an entry.
enum Existing {
    Absent,
    Present(fs::Metadata),
}

impl FsWriter {
    /// Whether `path` (relative) lies in a directory left as it was.
    fn skipped(&self, path: &Path) -> bool {
        self.skip_below
            .as_deref()
            .is_some_and(|s| path.starts_with(s))
    }

    /// What is at `full`; always absent when nothing may exist (the
    /// exclusive create then reports anything that does).
    fn existing(&self, full: &Path) -> Existing {
        if self.overwrite.is_none() {
            return Existing::Absent;
        }
        match fs::symlink_metadata(full) {
            Ok(m) => Existing::Present(m),
            Err(_) => Existing::Absent,
        }
    }

    fn note_kept(&self) {
        self.shared.meta.notes.note(|n| n.kept += 1);
    }

    /// Whether the existing entry `m` at `full` stays as it is instead of
    /// becoming `node`.
    fn keeps(&self, m: &fs::Metadata, node: &Node, full: &Path) -> bool {
        use std::os::unix::fs::{FileTypeExt, MetadataExt};
        match self.overwrite {
            Some(Overwrite::Never) => true,
            Some(Overwrite::IfChanged) => {
                let ft = m.file_type();
                match node.kind {
                    NodeKind::File | NodeKind::Stream => {
                        ft.is_file()
                            && m.len() == node.size
                            && node.mtime_ns == Some(m.mtime() * 1_000_000_000 + m.mtime_nsec())
                    }
                    NodeKind::Symlink => {
                        ft.is_symlink()
                            && fs::read_link(full)
                                .ok()
                                .map(std::path::PathBuf::into_os_string)
                                == node
                                    .link_target
                                    .as_ref()
                                    .map(backup_core::tree::FsName::to_os)
                    }
                    NodeKind::Fifo => ft.is_fifo(),
                    NodeKind::Chardev => ft.is_char_device() && node.rdev == Some(m.rdev()),
                    NodeKind::Blockdev => ft.is_block_device() && node.rdev == Some(m.rdev()),
                    NodeKind::Dir => ft.is_dir(),
                }
            }
            Some(Overwrite::Always) | None => false,
        }
    }

    /// Removes what is at `full` so that it can be created anew.
    fn remove_existing(&self, full: &Path, m: &fs::Metadata) -> Result<()> {
        if m.is_dir() {
            fs::remove_dir_all(full)
        } else {
            fs::remove_file(full)
        }
        .map_err(|e| Error::io(format!("removing {} to restore over it", full.display()), e))?;
        self.shared.meta.notes.note(|n| n.replaced += 1);
        Ok(())
    }

    /// Before an entry that is not a file is created at `full`: `false`
    /// when it is to be left as it was, otherwise whatever is there is
    /// removed.
    fn make_room(&self, path: &Path, full: &Path, node: &Node) -> Result<bool> {
        if self.skipped(path) {
            return Ok(false);
        }
        match self.existing(full) {
            Existing::Absent => Ok(true),
            Existing::Present(m) if self.keeps(&m, node, full) => {
                self.note_kept();
                Ok(false)
            }
            Existing::Present(m) => {
                self.remove_existing(full, &m)?;
                Ok(true)
            }
        }
    }

    /// Records the inode flags of `full` for the end of the restore.
    fn defer_flags(&mut self, full: PathBuf, node: &Node) {
        if !node.flags.is_empty() {
            self.flags.push((full, node.flags.clone()));
        }
    }

    /// Creates a FIFO or device node.
    fn make_special(&self, full: &Path, node: &Node) -> Result<bool> {
        use nix::sys::stat::{mknod, Mode, SFlag};
        let kind = match node.kind {
            NodeKind::Fifo => SFlag::S_IFIFO,
            NodeKind::Chardev => SFlag::S_IFCHR,
            NodeKind::Blockdev => SFlag::S_IFBLK,
            _ => return Err(Error::target_failed("not a special file")),
        };
        let rdev = if kind == SFlag::S_IFIFO {
            0
        } else if !self.shared.meta.as_root {
            self.shared.meta.notes.note(|n| n.devices += 1);
            return Ok(false);
        } else {
            node.rdev.ok_or_else(|| {
                Error::corrupt(
                    backup_core::FileKind::Pack,
                    full.display(),
                    "device node without a device number",
                )
            })?
        };
        mknod(full, kind, Mode::from_bits_truncate(0o600), rdev)
            .map_err(|e| Error::io(format!("creating {}", full.display()), e.into()))?;
        Ok(true)
    }
}

impl TreeWriter for FsWriter {
    fn enter_dir(&mut self, path: &Path, _node: &Node) -> Result<()> {
        self.check_workers()?;
        if self.skipped(path) {
            return Ok(());
        }
        let full = self.full(path);
        match self.existing(&full) {
            Existing::Absent => {}
            Existing::Present(m) if m.is_dir() => {
                if self.overwrite == Some(Overwrite::Never) {
                    self.kept_dirs.insert(path.to_owned());
                }
                return Ok(());
            }
            Existing::Present(_) if self.overwrite == Some(Overwrite::Never) => {
                self.note_kept();
                self.skip_below = Some(path.to_owned());
                return Ok(());
            }
            Existing::Present(m) => self.remove_existing(&full, &m)?,
        }
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&full)
            .map_err(|e| Error::io(format!("creating directory {}", full.display()), e))
    }

    fn leave_dir(&mut self, path: &Path, node: &Node) -> Result<()> {
        if self.skip_below.as_deref() == Some(path) {
            self.skip_below = None;
            return Ok(());
        }
        if self.skipped(path) || self.kept_dirs.remove(path) {
            return Ok(());
        }
        self.defer_flags(self.full(path), node);
        self.deferred_dirs
            .push_back((self.jobs, path.to_owned(), node.clone()));
        self.apply_ready_dirs(false)
    }

    fn start_file(&mut self, path: &Path, node: &Node) -> Result<()> {
        self.check_workers()?;
        let full = self.full(path);
        let mut rename_to = None;
        if self.skipped(path) {
            self.skipping = true;
            return Ok(());
        }
        match self.existing(&full) {
            Existing::Absent => {}
            Existing::Present(m) if self.keeps(&m, node, &full) => {
                self.note_kept();
                self.skipping = true;
                return Ok(());
            }
            Existing::Present(m) => {
                if m.is_dir() {
                    self.remove_existing(&full, &m)?;
                } else {
                    self.shared.meta.notes.note(|n| n.replaced += 1);
                }
                // Written beside it and renamed over it when complete, so
                // a failure leaves the old file.
                rename_to = Some(full.clone());
            }
        }
        self.jobs += 1;
        let worker = self.next_worker;
        self.next_worker = (self.next_worker + 1) % self.workers.len();
        if node.links.is_some_and(|l| l > 1) {
            self.link_workers.insert(full.clone(), worker);
        }
        self.defer_flags(full.clone(), node);
        let path = match &rename_to {
            Some(_) => full.with_file_name(format!(
                ".backup-restore-{}-{}",
                std::process::id(),
                self.jobs
            )),
            None => full,
        };
        self.current = Some(Pending {
            worker,
            path,
            seq: self.jobs,
            started: false,
            mode: creation_mode(node),
            chunks: Vec::new(),
            buffered: 0,
            sparse: node.sparse,
            rename_to,
        });
        Ok(())
    }

    fn write_data(&mut self, data: Bytes) -> Result<()> {
        if self.skipping {
            return Ok(());
        }
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
        if std::mem::take(&mut self.skipping) {
            return Ok(());
        }
        self.flush(Some(node.clone()))?;
        self.current = None;
        self.apply_ready_dirs(false)
    }

    fn abort_file(&mut self, _path: &Path) {
        self.skipping = false;
        if let Some(p) = self.current.take() {
            let job = Job {
                seq: p.seq,
                path: p.path.clone(),
                create: None,
                chunks: Vec::new(),
                finish: None,
                abort: true,
                sparse: false,
                link_to: None,
                rename_to: None,
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
        if !self.make_room(path, &full, node)? {
            return Ok(());
        }
        std::os::unix::fs::symlink(target.to_os(), &full)
            .map_err(|e| Error::io(format!("creating link {}", full.display()), e))?;
        set_metadata(&self.shared.meta, &full, None, node)
    }

    fn special(&mut self, path: &Path, node: &Node) -> Result<()> {
        self.check_workers()?;
        let full = self.full(path);
        if !self.make_room(path, &full, node)? {
            return Ok(());
        }
        if self.make_special(&full, node)? {
            set_metadata(&self.shared.meta, &full, None, node)?;
        }
        Ok(())
    }

    fn hard_link(&mut self, path: &Path, first: &Path, node: &Node) -> Result<bool> {
        self.check_workers()?;
        let first = self.full(first);
        let Some(&worker) = self.link_workers.get(&first) else {
            return Ok(false);
        };
        let full = self.full(path);
        if !self.make_room(path, &full, node)? {
            // Left as it was: the content that follows is dropped.
            return Ok(true);
        }
        // On the worker that wrote the first file: it exists by then.
        self.jobs += 1;
        let job = Job {
            seq: self.jobs,
            path: self.full(path),
            create: None,
            chunks: Vec::new(),
            finish: None,
            abort: false,
            sparse: false,
            link_to: Some(first),
            rename_to: None,
        };
        self.send(worker, job, false)?;
        Ok(true)
    }

    /// Into an empty target every first name is written, so every later
    /// name can link to it; with `--overwrite` a first name may have been
    /// kept as it was, and a later name then needs its own content.
    fn always_links(&self) -> bool {
        self.overwrite.is_none()
    }

    fn finish(&mut self) -> Result<()> {
        self.stop_workers();
        self.check_workers()?;
        self.apply_ready_dirs(true)?;
        for (full, flags) in std::mem::take(&mut self.flags) {
            if !set_flags(&full, &flags)? {
                self.shared.meta.notes.note(|n| n.flags += 1);
            }
        }
        Ok(())
    }
}
