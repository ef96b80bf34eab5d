//! The files source.

use std::fs::{self, Metadata};
use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use backup_core::filter::PathFilter;
use backup_core::snapshot::SourceDescriptor;
use backup_core::source::{Content, Item, OnReadError, SizeHint, Source};
use backup_core::tree::{FsName, NodeKind};
use backup_core::{Error, Result};

use crate::localfs::{node_from, open_noatime};

use crate::Selection;

/// Backs up a directory's contents, or a single file.
///
/// For a directory, the snapshot's root tree holds the directory's entries
/// (so restoring to `DEST` recreates the contents directly in `DEST`); for a
/// file, the root tree holds that one file. A symbolic link given as the
/// source path is followed; links inside are stored as links.
#[derive(Debug)]
pub struct FilesSource {
    root: PathBuf,
    excludes: Vec<String>,
    rx: async_channel::Receiver<Item>,
    walker: Option<std::thread::JoinHandle<()>>,
}

impl FilesSource {
    /// Starts walking `root`.
    ///
    /// # Errors
    ///
    /// [`Error::Source`] when `root` does not exist or cannot be read;
    /// [`Error::Config`] for invalid patterns or include patterns (which
    /// select database namespaces, not files).
    pub fn open(root: &Path, opts: &Selection) -> Result<Self> {
        if !opts.includes.is_empty() {
            return Err(Error::Config(
                "--include selects database namespaces; for files, back up the directory you want and use --exclude".to_owned(),
            ));
        }
        let filter = PathFilter::new(&[], &opts.excludes)?;
        let meta = fs::metadata(root).map_err(|e| {
            Error::source_caused(format!("cannot read source {}", root.display()), e)
        })?;
        if !(meta.is_dir() || meta.is_file()) {
            return Err(Error::source_failed(format!(
                "{} is neither a directory nor a regular file",
                root.display()
            )));
        }
        let root = fs::canonicalize(root)
            .map_err(|e| Error::source_caused(format!("cannot resolve {}", root.display()), e))?;
        let (tx, rx) = async_channel::bounded(1024);
        let root2 = root.clone();
        let walker = std::thread::Builder::new()
            .name("walker".to_owned())
            .spawn(move || {
                let w = Walker {
                    tx,
                    filter,
                    prefetch: Prefetch::new(),
                };
                if meta.is_dir() {
                    w.walk_dir(&root2, Path::new(""));
                } else {
                    let name = root2.file_name().map(FsName::from_os).unwrap_or_default();
                    w.leaf(&root2, Path::new(""), name, &meta);
                }
            })
            .map_err(|e| Error::io("starting the directory walker", e))?;
        Ok(FilesSource {
            root,
            excludes: opts.excludes.clone(),
            rx,
            walker: Some(walker),
        })
    }
}

#[async_trait]
impl Source for FilesSource {
    fn descriptor(&self) -> SourceDescriptor {
        SourceDescriptor {
            kind: "files".to_owned(),
            url: self.root.to_string_lossy().into_owned(),
        }
    }

    fn size_hint(&self) -> SizeHint {
        let root = self.root.clone();
        let excludes = self.excludes.clone();
        SizeHint::Scan(Box::new(move || scan_size(&root, &excludes).0))
    }

    async fn next(&mut self) -> Result<Option<Item>> {
        Ok(self.rx.recv().await.ok())
    }

    async fn finish(&mut self) -> Result<serde_json::Value> {
        self.rx.close();
        if let Some(w) = self.walker.take() {
            tokio::task::spawn_blocking(move || w.join())
                .await
                .map_err(|e| Error::source_caused("directory walker failed", e))?
                .map_err(|_| Error::source_failed("directory walker panicked"))?;
        }
        Ok(serde_json::Value::Null)
    }
}

struct Walker {
    tx: async_channel::Sender<Item>,
    filter: PathFilter,
    prefetch: Prefetch,
}

/// A directory's entries, sorted by name, each with its `lstat` metadata.
#[derive(Default)]
struct Listing {
    /// The directory could not be opened.
    error: Option<io::Error>,
    /// Errors met while reading entries (the rest are still listed).
    entry_errors: Vec<io::Error>,
    entries: Vec<(std::ffi::OsString, io::Result<Metadata>)>,
}

impl Listing {
    /// Lists `dir`. Metadata comes from `fstatat` relative to the open
    /// directory, which spares the kernel a walk of the whole path per entry.
    fn read(dir: &Path) -> Listing {
        let mut l = Listing::default();
        match fs::read_dir(dir) {
            Err(e) => l.error = Some(e),
            Ok(rd) => {
                for e in rd {
                    match e {
                        Ok(e) => l.entries.push((e.file_name(), e.metadata())),
                        Err(e) => l.entry_errors.push(e),
                    }
                }
            }
        }
        l.entries.sort_by(|a, b| {
            use std::os::unix::ffi::OsStrExt;
            a.0.as_bytes().cmp(b.0.as_bytes())
        });
        l
    }
}

/// One directory queued for listing ahead of the walk.
struct Job {
    path: PathBuf,
    /// Set by whoever lists the directory: a worker, or the walker itself
    /// when it needs the listing before any worker started on it.
    claimed: std::sync::atomic::AtomicBool,
    result: std::sync::Mutex<Option<Listing>>,
    ready: std::sync::Condvar,
}

/// Lists directories ahead of the depth-first walk on a few threads, so the
/// `getdents`/`stat` latency of many directories overlaps (an unchanged
/// re-backup is nothing but these calls). The walk order, and so the
/// snapshot, does not depend on it. At most [`Prefetch::MAX_PENDING`]
/// listings are queued or held, which bounds memory.
struct Prefetch {
    queue: Option<std::sync::mpsc::Sender<std::sync::Arc<Job>>>,
    pending: std::cell::RefCell<std::collections::HashMap<PathBuf, std::sync::Arc<Job>>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

impl Prefetch {
    const MAX_PENDING: usize = 512;

    fn new() -> Prefetch {
        use std::sync::{Arc, Mutex};
        let n = std::thread::available_parallelism().map_or(4, |n| (n.get() * 2).clamp(4, 16));
        let (tx, rx) = std::sync::mpsc::channel::<Arc<Job>>();
        let rx = Arc::new(Mutex::new(rx));
        let mut workers = Vec::new();
        for i in 0..n {
            let rx = Arc::clone(&rx);
            let spawned = std::thread::Builder::new()
                .name(format!("lister-{i}"))
                .spawn(move || loop {
                    let job = {
                        let Ok(rx) = rx.lock() else { return };
                        match rx.recv() {
                            Ok(j) => j,
                            Err(_) => return,
                        }
                    };
                    job.run();
                });
            // Without workers the walker lists every directory itself.
            if let Ok(h) = spawned {
                workers.push(h);
            }
        }
        Prefetch {
            queue: (!workers.is_empty()).then_some(tx),
            pending: std::cell::RefCell::default(),
            workers,
        }
    }

    /// Queues `dir` for listing unless too many listings are pending.
    fn ahead(&self, dir: PathBuf) {
        let Some(q) = &self.queue else { return };
        let mut pending = self.pending.borrow_mut();
        if pending.len() >= Self::MAX_PENDING || pending.contains_key(&dir) {
            return;
        }
        let job = std::sync::Arc::new(Job {
            path: dir.clone(),
            claimed: std::sync::atomic::AtomicBool::new(false),
            result: std::sync::Mutex::new(None),
            ready: std::sync::Condvar::new(),
        });
        if q.send(std::sync::Arc::clone(&job)).is_ok() {
            pending.insert(dir, job);
        }
    }

    /// The listing of `dir`: the prefetched one, or read now.
    fn take(&self, dir: &Path) -> Listing {
        let job = self.pending.borrow_mut().remove(dir);
        match job {
            Some(job) => job.wait(),
            None => Listing::read(dir),
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        // Queued jobs are claimed here so workers skip them, then the
        // closed queue stops the workers.
        for job in self.pending.get_mut().values() {
            job.claimed.store(true, std::sync::atomic::Ordering::SeqCst);
        }
        self.queue = None;
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Job {
    fn claim(&self) -> bool {
        !self.claimed.swap(true, std::sync::atomic::Ordering::SeqCst)
    }

    /// Lists the directory on a worker, unless someone claimed it already.
    fn run(&self) {
        if !self.claim() {
            return;
        }
        let l = Listing::read(&self.path);
        if let Ok(mut slot) = self.result.lock() {
            *slot = Some(l);
            self.ready.notify_all();
        }
    }

    /// The listing: read here when no worker has started on it, otherwise
    /// waits for the worker's.
    fn wait(&self) -> Listing {
        if self.claim() {
            return Listing::read(&self.path);
        }
        let Ok(mut slot) = self.result.lock() else {
            return Listing::read(&self.path);
        };
        loop {
            if let Some(l) = slot.take() {
                return l;
            }
            slot = match self.ready.wait(slot) {
                Ok(s) => s,
                Err(_) => return Listing::read(&self.path),
            };
        }
    }
}

impl Walker {
    /// Sends an item; `false` when the consumer has gone away.
    fn send(&self, item: Item) -> bool {
        self.tx.send_blocking(item).is_ok()
    }

    fn warn(&self, msg: String) -> bool {
        self.send(Item::Warning(msg))
    }

    /// Emits the entries of `dir` (not the directory itself). Returns
    /// `false` when the consumer has gone away.
    fn walk_dir(&self, dir: &Path, rel: &Path) -> bool {
        let listing = self.prefetch.take(dir);
        if let Some(e) = listing.error {
            return self.warn(format!("{}: cannot list directory: {e}", dir.display()));
        }
        for e in listing.entry_errors {
            if !self.warn(format!("{}: error while listing: {e}", dir.display())) {
                return false;
            }
        }
        // Queue the subdirectories first, in walk order, so they are listed
        // while this directory's files go out.
        for (name, meta) in &listing.entries {
            if matches!(meta, Ok(m) if m.is_dir()) && !self.filter.excludes_self(&rel.join(name)) {
                self.prefetch.ahead(dir.join(name));
            }
        }
        for (name, meta) in listing.entries {
            let path = dir.join(&name);
            let rel = rel.join(&name);
            if self.filter.excludes_self(&rel) {
                continue;
            }
            let meta = match meta {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => {
                    if !self.warn(format!("{}: {e}; left out of the snapshot", path.display())) {
                        return false;
                    }
                    continue;
                }
            };
            let name = FsName::from_os(&name);
            let ok = if meta.is_dir() {
                self.send(Item::Enter(node_from(name, NodeKind::Dir, &meta)))
                    && self.walk_dir(&path, &rel)
                    && self.send(Item::Leave)
            } else {
                self.leaf(&path, &rel, name, &meta)
            };
            if !ok {
                return false;
            }
        }
        true
    }

    fn leaf(&self, path: &Path, rel: &Path, name: FsName, meta: &Metadata) -> bool {
        let ft = meta.file_type();
        if ft.is_file() {
            let mut node = node_from(name, NodeKind::File, meta);
            node.size = meta.len();
            let p = path.to_owned();
            self.send(Item::Leaf {
                node,
                content: Some(Content::Blocking(Box::new(move || {
                    Ok(Box::new(open_noatime(&p)?) as _)
                }))),
                on_error: OnReadError::Skip,
            })
        } else if ft.is_symlink() {
            match fs::read_link(path) {
                Ok(target) => {
                    let mut node = node_from(name, NodeKind::Symlink, meta);
                    node.link_target = Some(FsName::from_os(target.as_os_str()));
                    self.send(Item::Leaf {
                        node,
                        content: None,
                        on_error: OnReadError::Skip,
                    })
                }
                Err(e) => self.warn(format!("{}: cannot read link: {e}", path.display())),
            }
        } else {
            self.warn(format!(
                "{}: special file (device, FIFO or socket) left out of the snapshot",
                rel.display()
            ))
        }
    }
}

/// Counts the bytes and files a backup of `root` would read, for progress
/// bars. Errors are ignored (the backup reports them).
pub fn scan_size(root: &Path, excludes: &[String]) -> (u64, u64) {
    let Ok(filter) = PathFilter::new(&[], excludes) else {
        return (0, 0);
    };
    let mut bytes = 0;
    let mut files = 0;
    let mut stack = vec![(root.to_owned(), PathBuf::new())];
    if let Ok(m) = fs::metadata(root) {
        if m.is_file() {
            return (m.len(), 1);
        }
    }
    while let Some((dir, rel)) = stack.pop() {
        let Ok(rd) = fs::read_dir(&dir) else { continue };
        for e in rd.flatten() {
            let rel = rel.join(e.file_name());
            if filter.excludes_self(&rel) {
                continue;
            }
            let Ok(m) = e.metadata() else { continue };
            if m.is_dir() {
                stack.push((e.path(), rel));
            } else if m.is_file() {
                bytes += m.len();
                files += 1;
            }
        }
    }
    (bytes, files)
}
