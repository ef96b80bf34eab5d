//! The files source.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use async_trait::async_trait;
use backup_core::filter::PathFilter;
use backup_core::snapshot::SourceDescriptor;
use backup_core::source::{Content, Item, OnReadError, SizeHint, Source};
use backup_core::tree::{FsName, Node, NodeKind};
use backup_core::{Error, Result};

use super::listing::{Descend, Listing, Prefetch};
use crate::localfs::{node_from, Attrs, Stat, SystemMeta, Watched};

use crate::{FilesOptions, Selection};

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
    rx: async_channel::Receiver<Vec<Item>>,
    /// Items of the batch received last, in reverse order.
    received: Vec<Item>,
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
        Self::open_with(root, opts, &FilesOptions::default())
    }

    /// Starts walking `root` with the walk options of `files`.
    ///
    /// # Errors
    ///
    /// As [`FilesSource::open`]; also [`Error::Config`] when an exclude
    /// file or a `files_from` list cannot be read, or lists a path outside
    /// `root`, and when `files_from` is given for a single file.
    pub fn open_with(root: &Path, opts: &Selection, files: &FilesOptions) -> Result<Self> {
        if !opts.includes.is_empty() {
            return Err(Error::Config(
                "--include selects database namespaces; for files, back up the directory you want and use --exclude".to_owned(),
            ));
        }
        let mut excludes = opts.excludes.clone();
        for f in &files.exclude_files {
            excludes.extend(read_exclude_file(f)?);
        }
        let filter = PathFilter::new(&[], &excludes)?;
        let meta = Stat::of(root, true).map_err(|e| {
            Error::source_caused(format!("cannot read source {}", root.display()), e)
        })?;
        if !(meta.is_dir() || meta.is_file()) {
            return Err(Error::source_failed(format!(
                "{} is neither a directory nor a regular file",
                root.display()
            )));
        }
        let given = root;
        let root = fs::canonicalize(root)
            .map_err(|e| Error::source_caused(format!("cannot resolve {}", root.display()), e))?;
        let listed = if files.files_from.is_empty() {
            None
        } else if meta.is_dir() {
            Some(Listed::read(
                &files.files_from,
                files.files_from_nul,
                &[given, &root],
            )?)
        } else {
            return Err(Error::Config(
                "--files-from selects paths inside a directory; the source is a single file"
                    .to_owned(),
            ));
        };
        let walk = WalkOptions {
            device: files.one_file_system.then(|| meta.dev()),
            exclude_caches: files.exclude_caches,
            markers: files
                .exclude_if_present
                .iter()
                .map(std::ffi::OsString::from)
                .collect(),
            larger_than: files.exclude_larger_than,
            listed,
        };
        let (tx, rx) = async_channel::bounded(BATCHES_QUEUED);
        let root2 = root.clone();
        // With --files-from only the walk knows where it goes.
        let descend = walk.listed.is_none().then(|| Descend {
            root: root.clone(),
            filter: filter.clone(),
            device: walk.device,
            markers: walk
                .markers
                .iter()
                .cloned()
                .chain(walk.exclude_caches.then(|| "CACHEDIR.TAG".into()))
                .collect(),
        });
        let walker = std::thread::Builder::new()
            .name("walker".to_owned())
            .spawn(move || {
                let w = Walker {
                    tx,
                    batch: std::cell::RefCell::default(),
                    filter,
                    prefetch: Prefetch::new(descend),
                    meta: std::cell::RefCell::default(),
                    opts: walk,
                };
                if meta.is_dir() {
                    let inside = w.opts.listed.is_none();
                    if w.walk_dir(&root2, Path::new(""), inside) {
                        w.report_unlisted();
                    }
                } else {
                    let name = root2.file_name().map(FsName::from_os).unwrap_or_default();
                    w.leaf(&root2, Path::new(""), name, &meta, None);
                }
                w.flush();
            })
            .map_err(|e| Error::io("starting the directory walker", e))?;
        Ok(FilesSource {
            root,
            excludes,
            rx,
            received: Vec::new(),
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

    /// Four reads per core: a backup of local files waits on the disk as
    /// well as on the processor, and on two cores eight reads at once
    /// kept both busier than four (1 GiB tree, cold cache: 3.42 s against
    /// 3.65 s; 200 000 small files: 6.5 s against 7.9 s). A file longer
    /// than a maximum chunk counts twice (its buffer holds two), so at
    /// most four of those are read at once, as before, and peak memory
    /// stays where it was. At most 16, whose buffers would otherwise grow
    /// with the number of cores.
    fn concurrency(&self) -> usize {
        std::thread::available_parallelism().map_or(8, |n| (n.get() * 4).min(16))
    }

    fn size_hint(&self) -> SizeHint {
        let root = self.root.clone();
        let excludes = self.excludes.clone();
        SizeHint::Scan(Box::new(move || scan_size(&root, &excludes).0))
    }

    async fn next(&mut self) -> Result<Option<Item>> {
        while self.received.is_empty() {
            let Ok(mut batch) = self.rx.recv().await else {
                return Ok(None);
            };
            batch.reverse();
            self.received = batch;
        }
        Ok(self.received.pop())
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

/// Items the walker hands over at once: one hand-off per item cost a
/// wake-up of the consumer (and so a `futex` call or more) per file, which
/// an unchanged re-backup, nothing but metadata, pays in full.
const BATCH_ITEMS: usize = 128;
/// Batches queued between the walker and the backup: enough for the walk
/// to run well ahead while the repository is opened (the key derived, the
/// index read) and the previous snapshot's trees are loaded.
const BATCHES_QUEUED: usize = 256;

struct Walker {
    tx: async_channel::Sender<Vec<Item>>,
    /// Items not handed over yet.
    batch: std::cell::RefCell<Vec<Item>>,
    filter: PathFilter,
    prefetch: Prefetch,
    meta: std::cell::RefCell<SystemMeta>,
    opts: WalkOptions,
}

/// What the walk leaves out beyond patterns ([`FilesOptions`], resolved).
#[derive(Default)]
struct WalkOptions {
    /// Stay on this file system (`--one-file-system`).
    device: Option<u64>,
    exclude_caches: bool,
    /// Names whose presence marks a directory to leave out.
    markers: Vec<std::ffi::OsString>,
    larger_than: Option<u64>,
    listed: Option<Listed>,
}

/// The paths of `--files-from` lists, relative to the source directory.
struct Listed {
    /// The listed paths (everything below each is taken).
    paths: std::collections::HashSet<PathBuf>,
    /// Their proper ancestors (walked, recorded, not taken whole).
    ancestors: std::collections::HashSet<PathBuf>,
    /// Listed paths the walk met.
    found: std::cell::RefCell<std::collections::HashSet<PathBuf>>,
}

impl Listed {
    /// Reads the lists; `roots` are the source directory as given and as
    /// resolved (a listed absolute path may start with either).
    fn read(lists: &[PathBuf], nul: bool, roots: &[&Path]) -> Result<Listed> {
        use std::os::unix::ffi::OsStrExt;
        let mut paths = std::collections::HashSet::new();
        for list in lists {
            let data = fs::read(list).map_err(|e| {
                Error::Config(format!(
                    "cannot read --files-from list {}: {e}",
                    list.display()
                ))
            })?;
            let sep = if nul { b'\0' } else { b'\n' };
            for raw in data.split(|&b| b == sep) {
                let raw = if nul {
                    raw
                } else {
                    raw.strip_suffix(b"\r").unwrap_or(raw)
                };
                if raw.is_empty() || (!nul && raw.starts_with(b"#")) {
                    continue;
                }
                let p = Path::new(std::ffi::OsStr::from_bytes(raw));
                let rel = if p.is_absolute() {
                    roots
                        .iter()
                        .find_map(|r| p.strip_prefix(r).ok())
                        .ok_or_else(|| {
                            Error::Config(format!(
                                "{}: `{}` is outside the source directory {}",
                                list.display(),
                                p.display(),
                                roots[roots.len() - 1].display()
                            ))
                        })?
                        .to_owned()
                } else {
                    p.to_owned()
                };
                let mut clean = PathBuf::new();
                for c in rel.components() {
                    match c {
                        std::path::Component::Normal(n) => clean.push(n),
                        std::path::Component::CurDir => {}
                        _ => {
                            return Err(Error::Config(format!(
                                "{}: `{}` leaves the source directory (`..`)",
                                list.display(),
                                p.display()
                            )))
                        }
                    }
                }
                if clean.as_os_str().is_empty() {
                    return Err(Error::Config(format!(
                        "{}: `{}` is the source directory itself; back it up without --files-from",
                        list.display(),
                        p.display()
                    )));
                }
                paths.insert(clean);
            }
        }
        if paths.is_empty() {
            return Err(Error::Config(
                "the --files-from lists name no path (nothing would be backed up)".to_owned(),
            ));
        }
        let ancestors = paths
            .iter()
            .flat_map(|p| p.ancestors().skip(1))
            .filter(|a| !a.as_os_str().is_empty())
            .map(Path::to_owned)
            .collect();
        Ok(Listed {
            paths,
            ancestors,
            found: std::cell::RefCell::default(),
        })
    }
}

/// Reads a file of exclude patterns: one a line, blank lines and lines
/// starting with `#` ignored.
fn read_exclude_file(path: &Path) -> Result<Vec<String>> {
    let text = fs::read_to_string(path).map_err(|e| {
        Error::Config(format!(
            "cannot read --exclude-file {}: {e}",
            path.display()
        ))
    })?;
    Ok(text
        .lines()
        .map(|l| l.strip_suffix('\r').unwrap_or(l))
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(str::to_owned)
        .collect())
}

/// The first bytes of a `CACHEDIR.TAG` file (the Cache Directory Tagging
/// Specification).
const CACHEDIR_SIGNATURE: &[u8] = b"Signature: 8a477f597d28d172789f06886806bc55";

impl Walker {
    /// Sends an item (in a batch of [`BATCH_ITEMS`]); `false` when the
    /// consumer has gone away.
    fn send(&self, item: Item) -> bool {
        let full = {
            let mut b = self.batch.borrow_mut();
            b.push(item);
            b.len() >= BATCH_ITEMS
        };
        !full || self.flush()
    }

    /// Hands over the items batched so far; `false` when the consumer has
    /// gone away.
    fn flush(&self) -> bool {
        let batch = std::mem::take(&mut *self.batch.borrow_mut());
        batch.is_empty() || self.tx.send_blocking(batch).is_ok()
    }

    fn warn(&self, msg: String) -> bool {
        self.send(Item::Warning(msg))
    }

    /// For a directory to leave out (a cache directory, or one holding a
    /// marker file): the entries to keep, its marker files.
    fn marked(&self, dir: &Path, listing: &Listing) -> Option<Vec<std::ffi::OsString>> {
        let has = |name: &std::ffi::OsStr| {
            listing
                .entries
                .iter()
                .any(|(n, m, _)| n == name && matches!(m, Ok(m) if m.is_file()))
        };
        let mut keep: Vec<std::ffi::OsString> = self
            .opts
            .markers
            .iter()
            .filter(|m| has(m))
            .cloned()
            .collect();
        if self.opts.exclude_caches && has("CACHEDIR.TAG".as_ref()) {
            let mut head = [0u8; CACHEDIR_SIGNATURE.len()];
            let tagged = fs::File::open(dir.join("CACHEDIR.TAG"))
                .and_then(|mut f| std::io::Read::read_exact(&mut f, &mut head))
                .is_ok()
                && head == CACHEDIR_SIGNATURE;
            if tagged {
                keep.push("CACHEDIR.TAG".into());
            }
        }
        (!keep.is_empty()).then_some(keep)
    }

    /// Whether the walk will list the directory `rel` (for listing ahead):
    /// on the source's file system, and listed or on the way to a listed
    /// path.
    fn walks_into(&self, rel: &Path, m: &Stat, inside: bool) -> bool {
        self.opts.device.is_none_or(|d| d == m.dev())
            && (inside
                || self
                    .opts
                    .listed
                    .as_ref()
                    .is_some_and(|l| l.paths.contains(rel) || l.ancestors.contains(rel)))
    }

    /// Warns about each `--files-from` path the walk did not meet.
    fn report_unlisted(&self) {
        let Some(l) = &self.opts.listed else { return };
        let found = l.found.borrow();
        let mut missing: Vec<&PathBuf> = l.paths.iter().filter(|p| !found.contains(*p)).collect();
        missing.sort();
        for p in missing {
            if !self.warn(format!(
                "{}: listed in --files-from but not found (or excluded); left out of the snapshot",
                p.display()
            )) {
                return;
            }
        }
    }

    /// A node of `kind` with all the metadata a system backup records
    /// (`attrs` are read now when not given). `false` in the second place
    /// when the consumer has gone away.
    fn node(
        &self,
        name: FsName,
        kind: NodeKind,
        path: &Path,
        meta: &Stat,
        attrs: Option<Attrs>,
    ) -> (Node, bool) {
        let mut node = node_from(name, kind, meta);
        let attrs = attrs.unwrap_or_else(|| Attrs::read(path));
        let problem = self.meta.borrow_mut().add(&mut node, path, meta, attrs);
        let alive = problem.is_none_or(|m| self.warn(m));
        (node, alive)
    }

    /// Emits the entries of `dir` (not the directory itself). Returns
    /// `false` when the consumer has gone away.
    fn walk_dir(&self, dir: &Path, rel: &Path, inside: bool) -> bool {
        // The walk may wait for this listing: what it found so far goes
        // out first, so that reading it overlaps the wait.
        if !self.prefetch.ready(dir) && !self.flush() {
            return false;
        }
        let mut listing = self.prefetch.take(dir);
        if let Some(e) = listing.error {
            return self.warn(format!("{}: cannot list directory: {e}", dir.display()));
        }
        for e in std::mem::take(&mut listing.entry_errors) {
            if !self.warn(format!("{}: error while listing: {e}", dir.display())) {
                return false;
            }
        }
        if let Some(keep) = self.marked(dir, &listing) {
            // A marked directory keeps only its marker files.
            listing.entries.retain(|(n, _, _)| keep.contains(n));
        }
        // Queue the subdirectories first, in walk order, so they are listed
        // while this directory's files go out (the listing threads queued
        // most of them already).
        let subdirs = listing
            .entries
            .iter()
            .filter(|(name, meta, _)| {
                let sub = rel.join(name);
                matches!(meta, Ok(m) if m.is_dir()
                    && !self.filter.excludes_self(&sub)
                    && self.walks_into(&sub, m, inside))
            })
            .map(|(name, _, _)| dir.join(name))
            .collect();
        self.prefetch.ahead(subdirs);
        for (name, meta, attrs) in listing.entries {
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
            // With --files-from: take what is listed (and all below it),
            // walk through the directories that lead to it.
            let take_all = inside
                || self.opts.listed.as_ref().is_some_and(|l| {
                    let listed = l.paths.contains(&rel);
                    if listed {
                        l.found.borrow_mut().insert(rel.clone());
                    }
                    listed
                });
            let on_the_way = meta.is_dir()
                && self
                    .opts
                    .listed
                    .as_ref()
                    .is_some_and(|l| l.ancestors.contains(&rel));
            if !(take_all || on_the_way) {
                continue;
            }
            if meta.is_file() && self.opts.larger_than.is_some_and(|max| meta.len() > max) {
                continue;
            }
            let name = FsName::from_os(&name);
            let ok = if meta.is_dir() {
                let (node, alive) = self.node(name, NodeKind::Dir, &path, &meta, attrs);
                // A mount point of another file system is kept, empty.
                let other_fs = self.opts.device.is_some_and(|d| d != meta.dev());
                alive
                    && self.send(Item::Enter(node))
                    && (other_fs || self.walk_dir(&path, &rel, take_all))
                    && self.send(Item::Leave)
            } else {
                self.leaf(&path, &rel, name, &meta, attrs)
            };
            if !ok {
                return false;
            }
        }
        self.prefetch.forget_below(dir);
        true
    }

    fn leaf(
        &self,
        path: &Path,
        rel: &Path,
        name: FsName,
        meta: &Stat,
        attrs: Option<Attrs>,
    ) -> bool {
        use rustix::fs::FileType;
        let kind = match meta.file_type() {
            FileType::RegularFile => NodeKind::File,
            FileType::Symlink => NodeKind::Symlink,
            FileType::Fifo => NodeKind::Fifo,
            FileType::CharacterDevice => NodeKind::Chardev,
            FileType::BlockDevice => NodeKind::Blockdev,
            _ => {
                return self.send(Item::Note(format!(
                    "{}: socket skipped (a socket belongs to the program listening on it, which creates it again)",
                    rel.display()
                )))
            }
        };
        let (mut node, alive) = self.node(name, kind, path, meta, attrs);
        if !alive {
            return false;
        }
        match kind {
            NodeKind::File => {
                node.size = meta.len();
                let p = path.to_owned();
                self.send(Item::Leaf {
                    node,
                    content: Some(Content::Reopenable(Box::new(move |node| {
                        Ok(Box::new(Watched::open(&p, node)?) as _)
                    }))),
                    on_error: OnReadError::Skip,
                })
            }
            NodeKind::Symlink => match fs::read_link(path) {
                Ok(target) => {
                    node.link_target = Some(FsName::from_os(target.as_os_str()));
                    self.send(Item::Leaf {
                        node,
                        content: None,
                        on_error: OnReadError::Skip,
                    })
                }
                Err(e) => self.warn(format!("{}: cannot read link: {e}", path.display())),
            },
            _ => self.send(Item::Leaf {
                node,
                content: None,
                on_error: OnReadError::Skip,
            }),
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
