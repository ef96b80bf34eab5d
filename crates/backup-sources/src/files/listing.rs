//! Directory listings, read ahead of the walk on a few threads.
//!
//! The walk is depth-first and single-threaded (the snapshot's order
//! depends on it); reading a directory and `stat`ing its entries is where
//! an unchanged re-backup with a cold cache spends its time, waiting on the
//! disk. So listing threads read directories before the walk reaches them,
//! in the walk's own order: they take the most recently queued directory
//! first (a stack), and queue the subdirectories of what they list
//! themselves, the first one on top, so they run ahead down the same path
//! the walk will take rather than across the tree.

use std::collections::BTreeMap;
use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use backup_core::filter::PathFilter;

use crate::localfs::{Attrs, Stat};

/// A directory's entries, sorted by name, each with its [`Stat`] (not
/// following symbolic links) and, when that was read, its [`Attrs`].
#[derive(Default)]
pub(super) struct Listing {
    /// The directory could not be opened.
    pub(super) error: Option<io::Error>,
    /// Errors met while reading entries (the rest are still listed).
    pub(super) entry_errors: Vec<io::Error>,
    pub(super) entries: Vec<(OsString, io::Result<Stat>, Option<Attrs>)>,
}

impl Listing {
    /// Lists `dir`. Each entry takes one `statx` relative to the open
    /// directory (which spares the kernel a walk of the whole path) for
    /// its metadata and inode flags, and one `llistxattr`.
    pub(super) fn read(dir: &Path) -> Listing {
        use rustix::fs::{Mode, OFlags};
        use std::os::unix::ffi::OsStringExt;
        let mut l = Listing::default();
        let opened = rustix::fs::open(
            dir,
            OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC,
            Mode::empty(),
        )
        .and_then(rustix::fs::Dir::new);
        let mut d = match opened {
            Ok(d) => d,
            Err(e) => {
                l.error = Some(e.into());
                return l;
            }
        };
        while let Some(e) = d.read() {
            let e = match e {
                Ok(e) => e,
                Err(e) => {
                    l.entry_errors.push(e.into());
                    continue;
                }
            };
            let name = e.file_name();
            if matches!(name.to_bytes(), b"." | b"..") {
                continue;
            }
            let m = d
                .fd()
                .map_err(io::Error::from)
                .and_then(|fd| Stat::at(fd, name));
            let name = OsString::from_vec(name.to_bytes().to_vec());
            let attrs = m.as_ref().ok().map(|_| Attrs::read(&dir.join(&name)));
            l.entries.push((name, m, attrs));
        }
        l.entries.sort_by(|a, b| {
            use std::os::unix::ffi::OsStrExt;
            a.0.as_bytes().cmp(b.0.as_bytes())
        });
        l
    }
}

/// Which subdirectories the listing threads may queue on their own: those
/// the walk enters when nothing but patterns, the file system and marker
/// files decide it. A guess that lists too much costs only the reading
/// (the walk drops what it did not enter, [`Prefetch::forget_below`]).
pub(super) struct Descend {
    /// The source's root, which the filter's paths are relative to.
    pub(super) root: PathBuf,
    pub(super) filter: PathFilter,
    /// Stay on this file system.
    pub(super) device: Option<u64>,
    /// Names of files that mark a directory to leave (mostly) out: its
    /// subdirectories are not queued.
    pub(super) markers: Vec<OsString>,
}

impl Descend {
    /// The subdirectories of `dir`, listed in `l`, that the walk would
    /// enter, in walk order.
    fn subdirectories(&self, dir: &Path, l: &Listing) -> Vec<PathBuf> {
        let marked = l
            .entries
            .iter()
            .any(|(n, m, _)| self.markers.contains(n) && matches!(m, Ok(m) if m.is_file()));
        let Ok(rel) = dir.strip_prefix(&self.root) else {
            return Vec::new();
        };
        if marked {
            return Vec::new();
        }
        l.entries
            .iter()
            .filter(|(name, m, _)| {
                matches!(m, Ok(m) if m.is_dir() && self.device.is_none_or(|d| d == m.dev()))
                    && !self.filter.excludes_self(&rel.join(name))
            })
            .map(|(name, _, _)| dir.join(name))
            .collect()
    }
}

/// Listing threads and the directories queued for them or listed by them.
/// At most [`Prefetch::MAX_PENDING`] listings are queued or held, and the
/// threads queue no more once [`Prefetch::MAX_HELD_ENTRIES`] entries are
/// held, which bounds memory.
pub(super) struct Prefetch {
    shared: Option<Arc<Shared>>,
    workers: Vec<std::thread::JoinHandle<()>>,
}

struct Shared {
    state: Mutex<State>,
    /// Signalled when a job is queued or the prefetch closes.
    work: Condvar,
    /// `None` when only the walk queues directories (`--files-from`).
    descend: Option<Descend>,
}

#[derive(Default)]
struct State {
    /// Jobs to run, the next on top.
    stack: Vec<Arc<Job>>,
    /// Every queued or held listing, by path.
    pending: BTreeMap<PathBuf, Arc<Job>>,
    /// Entries in the listings read and not taken yet.
    held: usize,
    /// Listing threads waiting for a job (a wake-up is a system call even
    /// when no one waits, so only these are woken).
    idle: usize,
    closed: bool,
}

/// One directory queued for listing ahead of the walk.
struct Job {
    path: PathBuf,
    /// Set by whoever lists the directory: a worker, or the walker itself
    /// when it needs the listing before any worker started on it.
    claimed: AtomicBool,
    /// Entries this job counts in [`State::held`] (changed under its lock).
    held: AtomicUsize,
    result: Mutex<Slot>,
    ready: Condvar,
}

#[derive(Default)]
struct Slot {
    listing: Option<Listing>,
    /// The walk waits for the listing (and is woken when it is put here).
    awaited: bool,
}

impl Prefetch {
    const MAX_PENDING: usize = 4096;
    const MAX_HELD_ENTRIES: usize = 64 * 1024;

    /// Starts the listing threads (none when threads cannot be started:
    /// the walker then lists every directory itself).
    pub(super) fn new(descend: Option<Descend>) -> Prefetch {
        // Twice the cores (at least 4): the threads mostly wait on the disk;
        // on two cores 2, 8 and 16 threads were no faster than 4.
        let n = std::thread::available_parallelism().map_or(4, |n| (n.get() * 2).clamp(4, 16));
        let shared = Arc::new(Shared {
            state: Mutex::default(),
            work: Condvar::new(),
            descend,
        });
        let mut workers = Vec::new();
        for i in 0..n {
            let shared = Arc::clone(&shared);
            let spawned = std::thread::Builder::new()
                .name(format!("lister-{i}"))
                .spawn(move || shared.work());
            if let Ok(h) = spawned {
                workers.push(h);
            }
        }
        Prefetch {
            shared: (!workers.is_empty()).then_some(shared),
            workers,
        }
    }

    /// Queues `dirs` (in walk order) for listing, those not queued yet,
    /// while fewer than the bound are pending.
    pub(super) fn ahead(&self, dirs: Vec<PathBuf>) {
        let Some(shared) = &self.shared else { return };
        let Some(mut st) = shared.lock() else { return };
        let queued = st.queue(dirs);
        shared.wake(&st, queued);
    }

    /// Whether the listing of `dir` is at hand (taking it will not wait).
    pub(super) fn ready(&self, dir: &Path) -> bool {
        let Some(st) = self.shared.as_ref().and_then(|s| s.lock()) else {
            return false;
        };
        st.pending
            .get(dir)
            .is_some_and(|job| job.result.lock().is_ok_and(|r| r.listing.is_some()))
    }

    /// The listing of `dir`: the prefetched one, or read now.
    pub(super) fn take(&self, dir: &Path) -> Listing {
        let job = self
            .shared
            .as_ref()
            .and_then(|s| s.lock())
            .and_then(|mut st| st.remove(dir));
        match job {
            Some(job) => job.wait(),
            None => Listing::read(dir),
        }
    }

    /// Drops the listings queued or held below `dir`, which the walk has
    /// left: directories it did not enter (excluded, marked, another file
    /// system).
    pub(super) fn forget_below(&self, dir: &Path) {
        let Some(mut st) = self.shared.as_ref().and_then(|s| s.lock()) else {
            return;
        };
        let below: Vec<PathBuf> = st
            .pending
            .range::<Path, _>((std::ops::Bound::Excluded(dir), std::ops::Bound::Unbounded))
            .take_while(|(p, _)| p.starts_with(dir))
            .map(|(p, _)| p.clone())
            .collect();
        for p in below {
            if let Some(job) = st.remove(&p) {
                // Not listed by a worker after this.
                job.claim();
            }
        }
    }
}

impl Drop for Prefetch {
    fn drop(&mut self) {
        if let Some(shared) = &self.shared {
            if let Some(mut st) = shared.lock() {
                st.closed = true;
                st.stack.clear();
            }
            shared.work.notify_all();
        }
        for w in self.workers.drain(..) {
            let _ = w.join();
        }
    }
}

impl Shared {
    fn lock(&self) -> Option<MutexGuard<'_, State>> {
        self.state.lock().ok()
    }

    /// Wakes as many idle listing threads as `queued` jobs need.
    fn wake(&self, st: &State, queued: usize) {
        for _ in 0..queued.min(st.idle) {
            self.work.notify_one();
        }
    }

    /// A listing thread: runs jobs, the most recently queued first, until
    /// the prefetch closes.
    fn work(&self) {
        loop {
            let job = {
                let Some(mut st) = self.lock() else { return };
                loop {
                    if st.closed {
                        return;
                    }
                    if let Some(j) = st.stack.pop() {
                        break j;
                    }
                    st.idle += 1;
                    st = match self.work.wait(st) {
                        Ok(st) => st,
                        Err(_) => return,
                    };
                    st.idle -= 1;
                }
            };
            if !job.claim() {
                continue;
            }
            let l = Listing::read(&job.path);
            if let Some(mut st) = self.lock() {
                // Counted and expanded only while the walk still wants it.
                if st
                    .pending
                    .get(&job.path)
                    .is_some_and(|j| Arc::ptr_eq(j, &job))
                {
                    job.held.store(l.entries.len(), Ordering::Relaxed);
                    st.held += l.entries.len();
                    if let Some(d) = &self.descend {
                        let queued = st.queue(d.subdirectories(&job.path, &l));
                        self.wake(&st, queued);
                    }
                }
            }
            if let Ok(mut slot) = job.result.lock() {
                slot.listing = Some(l);
                if slot.awaited {
                    job.ready.notify_one();
                }
            };
        }
    }
}

impl State {
    /// Queues `dirs` (in walk order) within the bounds; how many were
    /// queued.
    fn queue(&mut self, dirs: Vec<PathBuf>) -> usize {
        let mut queued = 0;
        // The first directory goes on top.
        for dir in dirs.into_iter().rev() {
            if self.pending.len() >= Prefetch::MAX_PENDING
                || self.held >= Prefetch::MAX_HELD_ENTRIES
            {
                break;
            }
            if self.pending.contains_key(&dir) {
                continue;
            }
            let job = Arc::new(Job {
                path: dir.clone(),
                claimed: AtomicBool::new(false),
                held: AtomicUsize::new(0),
                result: Mutex::default(),
                ready: Condvar::new(),
            });
            self.stack.push(Arc::clone(&job));
            self.pending.insert(dir, job);
            queued += 1;
        }
        queued
    }

    fn remove(&mut self, dir: &Path) -> Option<Arc<Job>> {
        let job = self.pending.remove(dir)?;
        self.held -= job.held.swap(0, Ordering::Relaxed);
        Some(job)
    }
}

impl Job {
    fn claim(&self) -> bool {
        !self.claimed.swap(true, Ordering::SeqCst)
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
            if let Some(l) = slot.listing.take() {
                return l;
            }
            slot.awaited = true;
            slot = match self.ready.wait(slot) {
                Ok(s) => s,
                Err(_) => return Listing::read(&self.path),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(l: &Listing) -> Vec<String> {
        l.entries
            .iter()
            .map(|(n, _, _)| n.to_string_lossy().into_owned())
            .collect()
    }

    /// Walks `dir` depth-first as the files source does, entering only
    /// what `enter` allows; returns every directory listed, in order.
    fn walk(p: &Prefetch, dir: &Path, enter: &dyn Fn(&str) -> bool, out: &mut Vec<String>) {
        let l = p.take(dir);
        assert!(l.error.is_none());
        out.push(format!("{}: {}", dir.display(), names(&l).join(",")));
        let subdirs: Vec<PathBuf> = l
            .entries
            .iter()
            .filter(|(n, m, _)| m.as_ref().unwrap().is_dir() && enter(&n.to_string_lossy()))
            .map(|(n, _, _)| dir.join(n))
            .collect();
        p.ahead(subdirs.clone());
        for s in subdirs {
            walk(p, &s, enter, out);
        }
        p.forget_below(dir);
    }

    /// Listings read ahead are the listings read in place, whatever the
    /// listing threads queued on their own; what the walk did not enter
    /// (here a directory the filter keeps and the walk skips, and one under
    /// a marker file) is dropped, and nothing stays held.
    #[test]
    fn listings_read_ahead_are_the_walks_and_none_is_left_behind() {
        let t = tempfile::tempdir().unwrap();
        let root = t.path().to_owned();
        for d in [
            "a/b/c",
            "a/d",
            "e/f/g/h",
            "skip/x/y",
            "cache/z",
            "excluded/w",
        ] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        for (i, f) in [
            "a/1",
            "a/b/2",
            "a/b/c/3",
            "e/f/g/h/4",
            "skip/x/5",
            "cache/MARK",
        ]
        .iter()
        .enumerate()
        {
            std::fs::write(root.join(f), vec![b'x'; i]).unwrap();
        }
        let filter = PathFilter::new(&[], &["excluded".to_owned()]).unwrap();
        let enter = |n: &str| !matches!(n, "skip" | "excluded" | "cache");
        let mut expected = Vec::new();
        walk(
            &Prefetch {
                shared: None,
                workers: Vec::new(),
            },
            &root,
            &enter,
            &mut expected,
        );
        for _ in 0..20 {
            let p = Prefetch::new(Some(Descend {
                root: root.clone(),
                filter: filter.clone(),
                device: None,
                markers: vec!["MARK".into()],
            }));
            let mut got = Vec::new();
            walk(&p, &root, &enter, &mut got);
            assert_eq!(got, expected);
            let st = p.shared.as_ref().unwrap().lock().unwrap();
            assert!(st.pending.is_empty(), "left: {:?}", st.pending.keys());
            assert_eq!(st.held, 0);
        }
    }
}
