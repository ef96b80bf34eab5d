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
use backup_core::target::{Overwrite, Owners, RestoreOptions, RestoreReport, Target};
use backup_core::tree::{FileFlag, Node, NodeKind};
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

    /// Checks that the target is a directory or absent.
    fn check_directory(&self) -> Result<()> {
        match fs::symlink_metadata(&self.root) {
            Ok(m) if m.is_dir() => Ok(()),
            Ok(_) => Err(Error::target_failed(format!(
                "{} exists and is not a directory (nothing was changed)",
                self.root.display()
            ))),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(Error::io(format!("reading {}", self.root.display()), e)),
        }
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
            Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
                // Restored immutable or append-only files refuse removal
                // until their flags are cleared.
                clear_flags_below(&self.root);
                fs::remove_dir_all(&self.root)
                    .map_err(|e| Error::io(format!("removing {}", self.root.display()), e))
            }
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
                "--drop applies to databases; to restore files into a directory that holds some, use --overwrite never|if-changed|always".to_owned(),
            ));
        }
        if opts.delete && opts.overwrite.is_none() {
            return Err(Error::Config(
                "--delete removes what the snapshot lacks from a directory that holds files; give --overwrite too (never, if-changed or always)".to_owned(),
            ));
        }
        if opts.delete && !(opts.includes.is_empty() && opts.excludes.is_empty()) {
            return Err(Error::Config(
                "--delete mirrors a whole snapshot; it cannot be combined with --include or --exclude".to_owned(),
            ));
        }
        if opts.verify && opts.overwrite == Some(Overwrite::Never) {
            return Err(Error::Config(
                "--verify compares the directory with the snapshot, which --overwrite never does not make it match; use if-changed or always".to_owned(),
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
        if opts.overwrite.is_none() {
            self.check_empty()?;
        } else {
            self.check_directory()?;
        }
        let planned = snapshot.plan(&filter).await?;
        let lines = unmatched_lines(&filter);
        if !filter.is_empty()
            && planned.files + planned.dirs + planned.symlinks + planned.specials == 0
        {
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
            let mut lines = lines;
            if opts.delete {
                let n = delete_extras(snapshot, &self.root, false).await?;
                lines.push(format!(
                    "--delete would remove {n} entries the snapshot lacks"
                ));
            }
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
        let mut writer = FsWriter::with_owners(self.root.clone(), opts.owners)?;
        if let Some(mode) = opts.overwrite {
            writer = writer.overwriting(mode);
        }
        let notes = writer.notes();
        let result = snapshot
            .restore_tree(&filter, Box::new(writer), progress)
            .await;
        match result {
            Ok(stats) => {
                let mut lines: Vec<String> = lines.into_iter().chain(notes.take()).collect();
                if opts.delete {
                    let n = delete_extras(snapshot, &self.root, true).await?;
                    lines.push(format!("removed {n} entries the snapshot lacks (--delete)"));
                }
                if opts.verify {
                    // Extra entries count only where the directory should
                    // now hold exactly the snapshot.
                    let extras = opts.overwrite.is_none() || opts.delete;
                    let report =
                        super::compare::compare_selected(snapshot, &self.root, &filter, extras)
                            .await?;
                    if !report.differences.is_empty() {
                        let n = report.differences.len();
                        let shown: Vec<&str> = report
                            .differences
                            .iter()
                            .take(10)
                            .map(String::as_str)
                            .collect();
                        return Err(Error::target_failed(format!(
                            "--verify: {n} differences between {} and snapshot {}: {}{}",
                            self.root.display(),
                            snapshot.id().short(),
                            shown.join("; "),
                            if n > 10 { "; ..." } else { "" }
                        )));
                    }
                    lines.push(format!(
                        "verified: {} files re-read ({} bytes) match the snapshot",
                        report.files, report.bytes
                    ));
                }
                Ok(RestoreReport {
                    dry_run: false,
                    target: self.describe(),
                    stats,
                    lines,
                    ..RestoreReport::default()
                })
            }
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

/// Removes (or, with `remove` false, counts) the entries below `root` that
/// the snapshot does not have, depth first; an entry whose type differs
/// from the snapshot's is left to the restore, which replaced it.
async fn delete_extras(snapshot: &SnapshotReader, root: &Path, remove: bool) -> Result<u64> {
    let mut count = 0;
    let mut stack = vec![(snapshot.root().await?, root.to_owned())];
    while let Some((dir, path)) = stack.pop() {
        let rd = match fs::read_dir(&path) {
            Ok(rd) => rd,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(Error::io(format!("listing {}", path.display()), e)),
        };
        for e in rd {
            let e = e.map_err(|e| Error::io(format!("listing {}", path.display()), e))?;
            let name = backup_core::tree::FsName::from_os(&e.file_name());
            let ft = e
                .file_type()
                .map_err(|err| Error::io(format!("reading {}", e.path().display()), err))?;
            match dir.entries().iter().find(|n| n.name == name) {
                Some(node) if node.kind == NodeKind::Dir && ft.is_dir() => {
                    stack.push((snapshot.open_dir(node).await?, e.path()));
                }
                Some(_) => {}
                None => {
                    count += 1;
                    if remove {
                        let p = e.path();
                        if ft.is_dir() {
                            fs::remove_dir_all(&p)
                        } else {
                            fs::remove_file(&p)
                        }
                        .map_err(|err| Error::io(format!("removing {}", p.display()), err))?;
                    }
                }
            }
        }
    }
    Ok(count)
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

/// What the restore could not apply and says so (for the report), shared
/// with the caller.
#[derive(Debug, Clone, Default)]
pub struct RestoreNotes(Arc<Mutex<NoteCounts>>);

#[derive(Debug, Default)]
struct NoteCounts {
    lines: Vec<String>,
    /// Extended attributes refused by the file system or for lack of
    /// privilege, by namespace.
    xattrs: std::collections::BTreeMap<String, u64>,
    devices: u64,
    flags: u64,
    /// Existing entries left as they were (`--overwrite never` or
    /// `if-changed`), and replaced.
    kept: u64,
    replaced: u64,
}

impl RestoreNotes {
    fn note(&self, f: impl FnOnce(&mut NoteCounts)) {
        f(&mut self.0.lock().unwrap_or_else(PoisonError::into_inner));
    }

    /// The report's lines: one per kind of thing not restored.
    pub fn take(&self) -> Vec<String> {
        let mut n = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let mut out = std::mem::take(&mut n.lines);
        for (ns, count) in std::mem::take(&mut n.xattrs) {
            out.push(format!(
                "warning: {count} extended attributes in the `{ns}` namespace were not restored (the file system refused them{})",
                if matches!(ns.as_str(), "security" | "trusted") {
                    "; they need root"
                } else {
                    ""
                }
            ));
        }
        if n.devices > 0 {
            out.push(format!(
                "warning: {} device nodes were not restored: creating them needs root",
                n.devices
            ));
        }
        if n.flags > 0 {
            out.push(format!(
                "warning: {} files kept no immutable or append-only flag: setting them needs root (CAP_LINUX_IMMUTABLE) and a file system that has them",
                n.flags
            ));
        }
        if n.kept > 0 {
            out.push(format!(
                "{} entries already there were left as they were",
                n.kept
            ));
        }
        if n.replaced > 0 {
            out.push(format!(
                "{} entries already there were replaced",
                n.replaced
            ));
        }
        n.devices = 0;
        n.flags = 0;
        n.kept = 0;
        n.replaced = 0;
        out
    }
}

/// Applies owners, permissions, extended attributes and times: what every
/// kind of entry gets once it exists.
#[derive(Debug)]
struct MetaWriter {
    as_root: bool,
    owners: Owners,
    notes: RestoreNotes,
    users: Mutex<std::collections::HashMap<String, Option<u32>>>,
    groups: Mutex<std::collections::HashMap<String, Option<u32>>>,
}

impl MetaWriter {
    /// The owner and group to give `node`: `None` when owners are not
    /// restored.
    fn owner(&self, node: &Node) -> Option<(u32, u32)> {
        if !self.as_root || self.owners == Owners::Skip {
            return None;
        }
        let (uid, gid) = (node.uid?, node.gid?);
        if self.owners == Owners::Numeric {
            return Some((uid, gid));
        }
        let by_name = |cache: &Mutex<std::collections::HashMap<String, Option<u32>>>,
                       name: &Option<String>,
                       user: bool| {
            let name = name.as_ref()?;
            let mut c = cache.lock().unwrap_or_else(PoisonError::into_inner);
            *c.entry(name.clone()).or_insert_with(|| {
                if user {
                    nix::unistd::User::from_name(name)
                        .ok()
                        .flatten()
                        .map(|u| u.uid.as_raw())
                } else {
                    nix::unistd::Group::from_name(name)
                        .ok()
                        .flatten()
                        .map(|g| g.gid.as_raw())
                }
            })
        };
        Some((
            by_name(&self.users, &node.user, true).unwrap_or(uid),
            by_name(&self.groups, &node.group, false).unwrap_or(gid),
        ))
    }

    /// Sets the extended attributes of `full` (not following a link).
    /// Those the file system or the lack of privilege refuses are counted
    /// for the report.
    fn set_xattrs(&self, full: &Path, node: &Node) -> Result<()> {
        for x in &node.xattrs {
            let name = x.name.to_os();
            if let Err(e) = xattr::set(full, &name, &x.value) {
                let refused = matches!(
                    e.raw_os_error(),
                    Some(libc::EPERM | libc::EACCES | libc::ENOTSUP | libc::EINVAL)
                );
                if !refused {
                    return Err(Error::io(
                        format!(
                            "setting extended attribute {} of {}",
                            x.name,
                            full.display()
                        ),
                        e,
                    ));
                }
                let ns = x.name.display().split('.').next().unwrap_or("").to_owned();
                self.notes.note(|n| *n.xattrs.entry(ns).or_default() += 1);
            }
        }
        Ok(())
    }
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
    /// Create the file first.
    create: bool,
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
            create: !p.started,
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

/// Sets owner, permissions, extended attributes and times, in that order
/// (a change of owner clears setuid bits and file capabilities, so those
/// come after it). Through `file` when it is open, otherwise by path,
/// never following a symbolic link. Inode flags come later, last of all.
fn set_metadata(meta: &MetaWriter, full: &Path, file: Option<&File>, node: &Node) -> Result<()> {
    let ctx = |what: &str| format!("{what} {}", full.display());
    if let Some((uid, gid)) = meta.owner(node) {
        match file {
            Some(f) => std::os::unix::fs::fchown(f, Some(uid), Some(gid)),
            None => std::os::unix::fs::lchown(full, Some(uid), Some(gid)),
        }
        .map_err(|e| Error::io(ctx("setting owner of"), e))?;
    }
    // A directory without recorded permissions keeps the owner-only ones
    // it was created with.
    let mode = match node.kind {
        NodeKind::Symlink => None,
        NodeKind::Dir => node.mode,
        NodeKind::Stream => Some(node.mode.unwrap_or(0o600)),
        _ => Some(node.mode.unwrap_or(0o644)),
    };
    if let Some(mode) = mode {
        let perms = fs::Permissions::from_mode(mode);
        match file {
            Some(f) => f.set_permissions(perms),
            None => fs::set_permissions(full, perms),
        }
        .map_err(|e| Error::io(ctx("setting permissions of"), e))?;
    }
    meta.set_xattrs(full, node)?;
    if let Some(t) = mtime_of(node) {
        match file {
            Some(f) => filetime::set_file_handle_times(f, None, Some(t)),
            // Also right for directories, FIFOs and devices: the times of
            // the entry itself, the access time set to the same.
            None => filetime::set_symlink_file_times(full, t, t),
        }
        .map_err(|e| Error::io(ctx("setting times of"), e))?;
    }
    Ok(())
}

/// Sets the inode flags of `full` (adding to those it has). `Ok(false)`
/// when the file system or the lack of privilege refuses.
fn set_flags(full: &Path, flags: &[FileFlag]) -> Result<bool> {
    use rustix::fs::IFlags;
    use std::os::unix::fs::OpenOptionsExt;
    let f = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
        .open(full)
        .map_err(|e| Error::io(format!("opening {} to set its flags", full.display()), e))?;
    let mut want = IFlags::empty();
    for fl in flags {
        want |= match fl {
            FileFlag::Immutable => IFlags::IMMUTABLE,
            FileFlag::Append => IFlags::APPEND,
            FileFlag::Nodump => IFlags::NODUMP,
        };
    }
    let have = match rustix::fs::ioctl_getflags(&f) {
        Ok(h) => h,
        Err(rustix::io::Errno::NOTTY | rustix::io::Errno::OPNOTSUPP) => return Ok(false),
        Err(e) => {
            return Err(Error::io(
                format!("reading the flags of {}", full.display()),
                e.into(),
            ))
        }
    };
    match rustix::fs::ioctl_setflags(&f, have | want) {
        Ok(()) => Ok(true),
        Err(
            rustix::io::Errno::PERM
            | rustix::io::Errno::ACCESS
            | rustix::io::Errno::NOTTY
            | rustix::io::Errno::OPNOTSUPP,
        ) => Ok(false),
        Err(e) => Err(Error::io(
            format!("setting the flags of {}", full.display()),
            e.into(),
        )),
    }
}

/// Clears the immutable and append-only flags of everything below `dir`
/// (a restore made for a check is removed afterwards). Best effort: what
/// cannot be cleared is reported by the removal that follows.
fn clear_flags_below(dir: &Path) {
    use rustix::fs::IFlags;
    use std::os::unix::fs::OpenOptionsExt;
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = fs::read_dir(&d) else { continue };
        for e in rd.flatten() {
            let Ok(ft) = e.file_type() else { continue };
            if !(ft.is_file() || ft.is_dir()) {
                continue;
            }
            if ft.is_dir() {
                stack.push(e.path());
            }
            let Ok(f) = OpenOptions::new()
                .read(true)
                .custom_flags(libc::O_NOFOLLOW | libc::O_NONBLOCK)
                .open(e.path())
            else {
                continue;
            };
            if let Ok(have) = rustix::fs::ioctl_getflags(&f) {
                let fixed = have - (IFlags::IMMUTABLE | IFlags::APPEND);
                if fixed != have {
                    let _ = rustix::fs::ioctl_setflags(&f, fixed);
                }
            }
        }
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
            if job.abort || !job.create {
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
    if job.create {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
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

fn mtime_of(node: &Node) -> Option<FileTime> {
    node.mtime_ns.map(|ns| {
        FileTime::from_unix_time(
            ns.div_euclid(1_000_000_000),
            ns.rem_euclid(1_000_000_000) as u32,
        )
    })
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
                create: false,
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
            create: false,
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
