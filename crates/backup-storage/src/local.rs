//! The local-disk backend.

use std::fs::{self, File};
use std::io::{self, Write};
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use async_trait::async_trait;
use backup_core::sink::check_range;
use backup_core::{Error, FileKind, ObjectInfo, PutMode, Result, Sink};
use bytes::Bytes;

use backup_core::sink::check_name;

/// A repository in a directory of a local or mounted file system.
///
/// Files live at `<root>/<FileKind::path(name)>` (packs in `data/XX/`).
///
/// - A put writes a temporary file next to the final one (its name starts
///   with `.`, which [`Sink::list`] ignores), fsyncs it, then publishes it:
///   [`PutMode::Create`] hard-links it under the final name, which fails
///   atomically when that name exists, and [`PutMode::Overwrite`] renames it
///   over the final name. The directory is fsynced afterwards, so a crash
///   leaves either the whole new file or nothing (plus, at worst, an ignored
///   temporary file).
/// - Missing directories, the root included, are created on the first put.
///   When the process runs as root and the repository directory belongs to
///   another user, each new directory is given that user and group, so
///   that a repository shared with a service account (PostgreSQL's
///   `archive_command` runs as `postgres`) stays writable by it after an
///   administrator's run. Files need no such care: a directory's owner can
///   replace and delete them, and they are created readable.
/// - Blocking file I/O runs on Tokio's blocking thread pool.
///
/// The file system must support hard links (every local Linux and macOS
/// file system does; some network and FUSE file systems do not).
#[derive(Debug, Clone)]
pub struct LocalSink {
    root: PathBuf,
}

impl LocalSink {
    /// A sink rooted at `root`; nothing is touched until the first call.
    pub fn new(root: impl Into<PathBuf>) -> Self {
        LocalSink { root: root.into() }
    }

    /// The repository directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Runs blocking file-system work on the blocking pool.
    async fn blocking<T, F>(&self, f: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Path) -> Result<T> + Send + 'static,
    {
        let root = self.root.clone();
        tokio::task::spawn_blocking(move || f(&root))
            .await
            .map_err(|e| Error::Generic {
                backend: "local",
                source: Box::new(e),
            })?
    }
}

/// The local backend of [`crate::build`].
#[allow(clippy::unnecessary_wraps)] // the same signature as the disabled stand-in
pub(crate) fn build(path: &Path) -> Result<std::sync::Arc<dyn Sink>> {
    Ok(std::sync::Arc::new(LocalSink::new(path)))
}

#[async_trait]
impl Sink for LocalSink {
    fn location(&self) -> String {
        self.root.display().to_string()
    }

    async fn put_data_pack(&self, name: &str, data: Bytes) -> Result<()> {
        self.put(FileKind::Pack, name, data, PutMode::Create).await
    }

    async fn put(&self, kind: FileKind, name: &str, data: Bytes, mode: PutMode) -> Result<()> {
        check_name(kind, name)?;
        let name = name.to_owned();
        self.blocking(move |root| put_blocking(root, kind, &name, &data, mode))
            .await
    }

    async fn get(&self, kind: FileKind, name: &str) -> Result<Bytes> {
        check_name(kind, name)?;
        let name = name.to_owned();
        self.blocking(move |root| {
            let path = root.join(kind.path(&name));
            let data = fs::read(&path).map_err(|e| read_error(e, kind, &name, &path))?;
            Ok(Bytes::from(data))
        })
        .await
    }

    async fn get_range(&self, kind: FileKind, name: &str, range: Range<u64>) -> Result<Bytes> {
        check_name(kind, name)?;
        let name = name.to_owned();
        self.blocking(move |root| {
            let path = root.join(kind.path(&name));
            let file = File::open(&path).map_err(|e| read_error(e, kind, &name, &path))?;
            let len = usize::try_from(range.end.saturating_sub(range.start)).map_err(|_| {
                Error::Config(format!(
                    "range {range:?} of {kind} {name} is too large for memory"
                ))
            })?;
            // An inverted range is refused whatever the size.
            check_range(kind, &name, &range, range.end)?;
            // One positioned read; a short read means the range passes the
            // end of the file, which `check_range` reports with the size.
            let mut buf = Vec::new();
            let got = read_at_into(&file, &mut buf, len, range.start)
                .map_err(|e| read_error(e, kind, &name, &path))?;
            if got < len || len == 0 {
                let size = file
                    .metadata()
                    .map_err(|e| read_error(e, kind, &name, &path))?
                    .len();
                check_range(kind, &name, &range, size)?;
                if got < len {
                    return Err(Error::corrupt(kind, &name, "short read"));
                }
            }
            Ok(Bytes::from(buf))
        })
        .await
    }

    async fn list(&self, kind: FileKind) -> Result<Vec<ObjectInfo>> {
        self.blocking(move |root| list_blocking(root, kind)).await
    }

    async fn delete(&self, kind: FileKind, name: &str) -> Result<()> {
        check_name(kind, name)?;
        let name = name.to_owned();
        self.blocking(move |root| {
            let path = root.join(kind.path(&name));
            match fs::remove_file(&path) {
                Ok(()) => Ok(()),
                Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
                Err(e) => Err(write_error(e, "deleting", &path)),
            }
        })
        .await
    }
}

fn put_blocking(root: &Path, kind: FileKind, name: &str, data: &[u8], mode: PutMode) -> Result<()> {
    let final_path = root.join(kind.path(name));
    let dir = final_path.parent().unwrap_or(root).to_path_buf();
    ensure_dir(&dir, &Inherit::of(root))?;
    let tmp = dir.join(temp_name(name));
    let published = write_file(&tmp, data).and_then(|()| match mode {
        PutMode::Create => match publish_no_replace(&tmp, &final_path) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Err(Error::AlreadyExists {
                kind,
                name: name.to_owned(),
            }),
            Err(e) => Err(write_error(e, "publishing", &final_path)),
        },
        PutMode::Overwrite => {
            fs::rename(&tmp, &final_path).map_err(|e| write_error(e, "publishing", &final_path))
        }
    });
    // After a hard link, or after any failure, the temporary name is left;
    // it is invisible to readers, but clean it up.
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => {
            tracing::warn!(path = %tmp.display(), error = %e, "Could not remove a temporary file.");
        }
    }
    published?;
    sync_dir(&dir)
}

/// Gives `tmp` the name `final_path` unless that name exists, atomically:
/// a hard link, or where the file system has none, a rename that refuses
/// to replace (Linux `RENAME_NOREPLACE`).
fn publish_no_replace(tmp: &Path, final_path: &Path) -> io::Result<()> {
    match fs::hard_link(tmp, final_path) {
        // EPERM: "the file system does not support hard links"; EOPNOTSUPP.
        Err(e) if matches!(e.raw_os_error(), Some(1 | 95)) => {
            rename_no_replace(tmp, final_path).map_err(|e| {
                if matches!(e.raw_os_error(), Some(22 | 95)) || e.kind() == io::ErrorKind::Unsupported {
                    io::Error::new(
                        io::ErrorKind::Unsupported,
                        "the file system supports neither hard links nor no-replace renames, so create-only writes cannot be atomic; put the repository on another file system",
                    )
                } else {
                    e
                }
            })
        }
        other => other,
    }
}

#[cfg(target_os = "linux")]
fn rename_no_replace(from: &Path, to: &Path) -> io::Result<()> {
    use rustix::fs::{renameat_with, RenameFlags, CWD};
    renameat_with(CWD, from, CWD, to, RenameFlags::NOREPLACE).map_err(io::Error::from)
}

#[cfg(not(target_os = "linux"))]
fn rename_no_replace(_from: &Path, _to: &Path) -> io::Result<()> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "no-replace rename",
    ))
}

/// Writes and fsyncs a new file.
fn write_file(path: &Path, data: &[u8]) -> Result<()> {
    #[cfg(target_os = "linux")]
    if data.len() >= DIRECT_FROM {
        if let Some(r) = write_direct(path, data) {
            return r;
        }
    }
    let mut file = File::options()
        .write(true)
        .create_new(true)
        .open(path)
        .map_err(|e| write_error(e, "creating", path))?;
    file.write_all(data)
        .and_then(|()| file.sync_all())
        .map_err(|e| write_error(e, "writing", path))
}

/// Files from this size on (packs) are written past the page cache.
#[cfg(target_os = "linux")]
const DIRECT_FROM: usize = 1 << 20;
/// The alignment `O_DIRECT` needs of buffers, offsets and lengths.
#[cfg(target_os = "linux")]
const DIRECT_ALIGN: usize = 4096;
/// The size of one `O_DIRECT` write (a multiple of [`DIRECT_ALIGN`]).
#[cfg(target_os = "linux")]
const DIRECT_PIECE: usize = 1 << 20;

/// Writes `data` to the new file `path` with `O_DIRECT`: the whole
/// blocks from an aligned copy, the rest after clearing the flag. `None`
/// when the file system refuses `O_DIRECT` at the open (nothing created).
#[cfg(target_os = "linux")]
fn write_direct(path: &Path, data: &[u8]) -> Option<Result<()>> {
    write_direct_skewed(path, data, 0)
}

/// [`write_direct`] with the copy `skew` bytes past the alignment (not 0
/// only in the test of a file system that refuses such writes).
#[cfg(target_os = "linux")]
fn write_direct_skewed(path: &Path, data: &[u8], skew: usize) -> Option<Result<()>> {
    use rustix::fs::OFlags;
    use std::os::unix::fs::OpenOptionsExt;
    let mut file = match File::options()
        .write(true)
        .create_new(true)
        .custom_flags(i32::try_from(OFlags::DIRECT.bits()).unwrap_or_default())
        .open(path)
    {
        Ok(f) => f,
        Err(e) if refused(&e) => return None,
        Err(e) => return Some(Err(write_error(e, "creating", path))),
    };
    let whole = data.len() / DIRECT_ALIGN * DIRECT_ALIGN;
    let direct = BOUNCE.with_borrow_mut(|buf| -> io::Result<()> {
        // A safe way to an aligned slice: over-allocate, start aligned.
        if buf.len() < DIRECT_PIECE + DIRECT_ALIGN + skew {
            buf.resize(DIRECT_PIECE + DIRECT_ALIGN + skew, 0);
        }
        let at = buf.as_ptr().align_offset(DIRECT_ALIGN) + skew;
        for piece in data[..whole].chunks(DIRECT_PIECE) {
            let aligned = &mut buf[at..at + piece.len()];
            aligned.copy_from_slice(piece);
            file.write_all(aligned)?;
        }
        Ok(())
    });
    let r = (|| -> io::Result<()> {
        let flags = rustix::fs::fcntl_getfl(&file)?;
        rustix::fs::fcntl_setfl(&file, flags - OFlags::DIRECT)?;
        match direct {
            Ok(()) => file.write_all(&data[whole..])?,
            // A file system that opens with `O_DIRECT` but refuses such
            // writes (an alignment it wants larger): written again, the
            // ordinary way.
            Err(e) if refused(&e) => {
                file.set_len(0)?;
                std::io::Seek::rewind(&mut file)?;
                file.write_all(data)?;
            }
            Err(e) => return Err(e),
        }
        file.sync_all()
    })();
    Some(r.map_err(|e| write_error(e, "writing", path)))
}

/// `EINVAL`: how a file system refuses `O_DIRECT` (at the open, or at
/// a write whose alignment it does not take).
#[cfg(target_os = "linux")]
fn refused(e: &io::Error) -> bool {
    e.raw_os_error() == Some(rustix::io::Errno::INVAL.raw_os_error())
}

#[cfg(target_os = "linux")]
thread_local! {
    /// Each writing thread's aligned copy of the piece being written.
    static BOUNCE: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Who new directories belong to: nobody in particular, unless this process
/// runs as root in a repository directory owned by another user.
struct Inherit(Option<(u32, u32)>);

impl Inherit {
    fn of(root: &Path) -> Self {
        use std::os::unix::fs::MetadataExt;
        if !rustix::process::geteuid().is_root() {
            return Inherit(None);
        }
        Inherit(
            fs::metadata(root)
                .ok()
                .filter(|m| m.uid() != 0)
                .map(|m| (m.uid(), m.gid())),
        )
    }

    fn apply(&self, dir: &Path) -> Result<()> {
        match self.0 {
            Some((uid, gid)) => std::os::unix::fs::chown(dir, Some(uid), Some(gid))
                .map_err(|e| write_error(e, "giving the repository owner", dir)),
            None => Ok(()),
        }
    }
}

/// Creates `dir` and any missing ancestors, fsyncing each parent that got a
/// new entry so the new directories survive a crash.
fn ensure_dir(dir: &Path, inherit: &Inherit) -> Result<()> {
    match fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => return Ok(()),
        Ok(_) => {
            return Err(Error::io(
                format!("creating directory {}", dir.display()),
                io::Error::new(io::ErrorKind::AlreadyExists, "a file is in the way"),
            ))
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(write_error(e, "inspecting directory", dir)),
    }
    if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
        ensure_dir(parent, inherit)?;
    }
    match fs::create_dir(dir) {
        Ok(()) => {
            inherit.apply(dir)?;
            if let Some(parent) = dir.parent().filter(|p| !p.as_os_str().is_empty()) {
                sync_dir(parent)?;
            }
            Ok(())
        }
        // Another writer created it at the same time.
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => Ok(()),
        Err(e) => Err(write_error(e, "creating directory", dir)),
    }
}

fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| write_error(e, "syncing directory", dir))
}

/// A unique temporary name in the same directory; the leading dot keeps it
/// out of listings.
fn temp_name(name: &str) -> String {
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, Ordering::Relaxed);
    let mut random = [0u8; 4];
    // Uniqueness comes from pid and counter; randomness only guards against
    // a reused pid on a shared file system, so a failure is harmless.
    let _ = getrandom::getrandom(&mut random);
    format!(
        ".{name}.tmp-{}-{n}-{:08x}",
        std::process::id(),
        u32::from_le_bytes(random)
    )
}

fn list_blocking(root: &Path, kind: FileKind) -> Result<Vec<ObjectInfo>> {
    let mut out = Vec::new();
    match kind {
        FileKind::Config => match fs::metadata(root.join("config")) {
            Ok(meta) if meta.is_file() => out.push(ObjectInfo {
                name: "config".to_owned(),
                size: meta.len(),
            }),
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(write_error(e, "listing", &root.join("config"))),
        },
        FileKind::Pack => {
            let data = root.join(kind.prefix());
            for entry in read_dir(&data)? {
                let sub = entry.file_name();
                let Some(sub) = sub.to_str() else { continue };
                let is_dir = entry.file_type().is_ok_and(|t| t.is_dir());
                if is_dir && sub.len() == 2 && !sub.starts_with('.') {
                    list_dir(
                        kind,
                        &entry.path(),
                        &format!("{}/{sub}", kind.prefix()),
                        &mut out,
                    )?;
                }
            }
        }
        _ => list_dir(kind, &root.join(kind.prefix()), kind.prefix(), &mut out)?,
    }
    Ok(out)
}

fn read_dir(dir: &Path) -> Result<Vec<fs::DirEntry>> {
    let entries = match fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(write_error(e, "listing", dir)),
    };
    entries
        .collect::<io::Result<Vec<_>>>()
        .map_err(|e| write_error(e, "listing", dir))
}

fn list_dir(kind: FileKind, dir: &Path, rel: &str, out: &mut Vec<ObjectInfo>) -> Result<()> {
    for entry in read_dir(dir)? {
        let file_name = entry.file_name();
        let Some(name) = file_name.to_str() else {
            continue;
        };
        if name.starts_with('.')
            || kind.name_from_path(&format!("{rel}/{name}")).as_deref() != Some(name)
        {
            continue;
        }
        match entry.metadata() {
            Ok(meta) if meta.is_file() => out.push(ObjectInfo {
                name: name.to_owned(),
                size: meta.len(),
            }),
            Ok(_) => {}
            // Deleted between the directory read and now.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(write_error(e, "listing", &entry.path())),
        }
    }
    Ok(())
}

/// Maps an error of reading an object: a missing file is
/// [`Error::NotFound`].
fn read_error(err: io::Error, kind: FileKind, name: &str, path: &Path) -> Error {
    if err.kind() == io::ErrorKind::NotFound {
        return Error::not_found(format!("{kind} {name} ({})", path.display()));
    }
    if err.kind() == io::ErrorKind::UnexpectedEof {
        return Error::corrupt(
            kind,
            name,
            format!("{} is shorter than its size said", path.display()),
        );
    }
    write_error(err, "reading", path)
}

/// Maps an I/O error to the semantic error kinds, naming the file.
pub(crate) fn write_error(err: io::Error, action: &str, path: &Path) -> Error {
    let shown = path.display();
    match err.kind() {
        io::ErrorKind::PermissionDenied => Error::PermissionDenied(format!("{action} {shown}: {err}")),
        io::ErrorKind::StorageFull | io::ErrorKind::QuotaExceeded => Error::io(
            format!("{action} {shown}: the file system is full (or over quota); free some space or move the repository"),
            err,
        ),
        io::ErrorKind::ReadOnlyFilesystem => Error::PermissionDenied(format!(
            "{action} {shown}: the file system is mounted read-only"
        )),
        _ => Error::io(format!("{action} {shown}"), err),
    }
}

/// Reads up to `len` bytes at `offset` into `buf` (appending, without
/// zero-filling first); returns how many were read.
fn read_at_into(file: &File, buf: &mut Vec<u8>, len: usize, offset: u64) -> io::Result<usize> {
    use std::os::unix::fs::FileExt;
    buf.resize(len, 0);
    let mut done = 0;
    while done < len {
        match file.read_at(&mut buf[done..], offset + done as u64) {
            Ok(0) => break,
            Ok(n) => done += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    buf.truncate(done);
    Ok(done)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Files from [`DIRECT_FROM`] on go past the page cache in aligned
    /// pieces and an ordinary tail; every size around the edges reads
    /// back as written, on a disk and on tmpfs (which may refuse
    /// `O_DIRECT`, and then gets an ordinary write).
    #[test]
    fn files_written_past_the_page_cache_read_back_whole() {
        let disk = tempfile::tempdir().unwrap();
        let shm = tempfile::tempdir_in("/dev/shm").ok();
        let dirs = std::iter::once(disk.path()).chain(shm.as_ref().map(tempfile::TempDir::path));
        let sizes = [
            DIRECT_FROM - 1,
            DIRECT_FROM,
            DIRECT_FROM + 1,
            DIRECT_PIECE,
            2 * DIRECT_PIECE + DIRECT_ALIGN + 17,
        ];
        for dir in dirs {
            for (i, &n) in sizes.iter().enumerate() {
                let data: Vec<u8> = (0..n).map(|j| (j * 31 + i) as u8).collect();
                let path = dir.join(format!("f{i}"));
                write_file(&path, &data).unwrap();
                assert!(
                    fs::read(&path).unwrap() == data,
                    "{} bytes in {}",
                    n,
                    dir.display()
                );
                let again = write_file(&path, &data).unwrap_err();
                assert!(matches!(again, Error::Io { .. }), "{again:?}");
            }
        }
    }

    /// A file system that opens with `O_DIRECT` but refuses the writes
    /// (here: ext4 refusing a copy off its alignment, checked first) gets
    /// the file written again the ordinary way, whole.
    #[test]
    fn a_refused_direct_write_is_written_again_the_ordinary_way() {
        use rustix::fs::OFlags;
        use std::os::unix::fs::OpenOptionsExt;
        // Beside the sources, on the disk the build uses (/tmp may be a
        // tmpfs, which takes writes of any alignment).
        let dir = tempfile::tempdir_in(env!("CARGO_MANIFEST_DIR")).unwrap();
        let probe = dir.path().join("probe");
        let mut f = File::options()
            .write(true)
            .create_new(true)
            .custom_flags(i32::try_from(OFlags::DIRECT.bits()).unwrap())
            .open(&probe)
            .expect(
                "the test's temporary directory takes O_DIRECT (a disk file system such as ext4)",
            );
        let buf = vec![7u8; 2 * DIRECT_ALIGN];
        let at = buf.as_ptr().align_offset(DIRECT_ALIGN) + 1;
        let err = f.write_all(&buf[at..at + DIRECT_ALIGN - 1]).unwrap_err();
        assert!(refused(&err), "a misaligned O_DIRECT write: {err}");
        let data: Vec<u8> = (0..3 * DIRECT_PIECE + 5).map(|j| (j % 251) as u8).collect();
        let path = dir.path().join("pack");
        write_direct_skewed(&path, &data, 1)
            .expect("opened with O_DIRECT")
            .unwrap();
        assert!(fs::read(&path).unwrap() == data, "read back whole");
    }

    #[test]
    fn enospc_is_a_clear_io_error() {
        let err = write_error(
            io::Error::from_raw_os_error(28),
            "writing",
            Path::new("/repo/data/ab/abcd"),
        );
        let msg = err.to_string();
        assert!(matches!(err, Error::Io { .. }), "{err:?}");
        assert!(msg.contains("/repo/data/ab/abcd"), "{msg}");
        assert!(msg.contains("file system is full"), "{msg}");
        assert!(!err.is_retryable());
    }

    #[test]
    fn eacces_is_permission_denied() {
        let err = write_error(
            io::Error::from_raw_os_error(13),
            "creating",
            Path::new("/repo/keys/x"),
        );
        assert!(
            matches!(err, Error::PermissionDenied(ref m) if m.contains("/repo/keys/x")),
            "{err:?}"
        );
    }

    #[test]
    fn new_directories_take_the_repository_owner_when_root_writes() {
        use std::os::unix::fs::MetadataExt;
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().join("repo");
        fs::create_dir(&root).unwrap();
        let me = rustix::process::geteuid().as_raw();
        // As root, hand the repository to `nobody` (65534); otherwise the
        // repository stays ours and so must every new directory.
        let owner = if me == 0 {
            std::os::unix::fs::chown(&root, Some(65534), Some(65534)).unwrap();
            65534
        } else {
            me
        };
        put_blocking(
            &root,
            FileKind::Lock,
            &"ab".repeat(32),
            b"x",
            PutMode::Create,
        )
        .unwrap();
        put_blocking(
            &root,
            FileKind::Pack,
            &"cd".repeat(32),
            b"y",
            PutMode::Create,
        )
        .unwrap();
        for sub in ["locks", "data", "data/cd"] {
            let meta = fs::metadata(root.join(sub)).unwrap();
            assert_eq!(meta.uid(), owner, "{sub}");
        }
    }

    #[test]
    fn no_replace_rename_refuses_existing_names() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b, c) = (
            dir.path().join("a"),
            dir.path().join("b"),
            dir.path().join("c"),
        );
        fs::write(&a, b"a").unwrap();
        fs::write(&b, b"b").unwrap();
        let err = rename_no_replace(&a, &b).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        assert_eq!(fs::read(&b).unwrap(), b"b");
        rename_no_replace(&a, &c).unwrap();
        assert_eq!(fs::read(&c).unwrap(), b"a");
        assert!(!a.exists());
    }

    #[test]
    fn temp_names_are_hidden_and_unique() {
        let a = temp_name("abc");
        let b = temp_name("abc");
        assert!(a.starts_with(".abc.tmp-"));
        assert_ne!(a, b);
    }
}
