//! The walk of a local base backup: the tablespaces, then the data
//! directory without `global` and `pg_wal`, then `global`; what is left
//! out by name (temporary files and relations, the contents of some
//! directories, unlogged relations' forks); and the leaves whose readers
//! check pages and record each file's checksum.

use std::fs;
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use backup_core::source::{Content, Item, OnReadError};
use backup_core::tree::{FsName, Node, NodeKind};
use backup_core::{Error, Result};

use super::super::delta;
use super::super::meta::{DATA_DIR, TABLESPACES_DIR};
use super::reader::{FileReader, FileRecord, ReadRules, Tracked};
use super::state::{DirWalk, LocalSource, Tree};
use crate::localfs::node_from_meta;

/// Directories whose contents are left out (the directory itself is kept).
const EMPTY_DIRS: [&str; 7] = [
    "pg_stat_tmp",
    "pg_replslot",
    "pg_dynshmem",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_subtrans",
];
/// Files left out by exact name.
const SKIP_FILES: [&str; 7] = [
    "postgresql.auto.conf.tmp",
    "current_logfiles.tmp",
    "backup_label",
    "tablespace_map",
    "backup_manifest",
    "postmaster.pid",
    "postmaster.opts",
];
/// Top-level directories whose files PostgreSQL rewrites from WAL.
const WAL_LOGGED: [&str; 7] = [
    "base",
    "global",
    "pg_xact",
    "pg_multixact",
    "pg_commit_ts",
    "pg_twophase",
    "pg_logical",
];

impl LocalSource {
    /// Starts walking the next tablespace, or the data directory after the
    /// last one. Returns whether there was one.
    pub(super) fn begin_next_tree(&mut self) -> Result<bool> {
        if let Some(ts) = self.pending_tablespaces.pop_front() {
            if self.tablespaces.first() == Some(&ts) {
                self.queue
                    .push_back(Item::Enter(plain_dir(TABLESPACES_DIR)));
            }
            let dir = self
                .pgdata
                .join("pg_tblspc")
                .join(ts.oid.to_string())
                .join(&self.cluster.tablespace_dir);
            let meta = fs::metadata(&dir).map_err(|e| {
                Error::source_caused(
                    format!("reading tablespace {} at {}", ts.oid, dir.display()),
                    e,
                )
            })?;
            self.queue
                .push_back(Item::Enter(plain_dir(&ts.oid.to_string())));
            self.queue.push_back(Item::Enter(node_from_meta(
                FsName::from(self.cluster.tablespace_dir.as_str()),
                NodeKind::Dir,
                &meta,
            )));
            let manifest_dir = format!("pg_tblspc/{}/{}", ts.oid, self.cluster.tablespace_dir);
            self.push_walk(dir, manifest_dir.into_bytes(), true, true, false)?;
            return Ok(true);
        }
        Ok(false)
    }

    fn push_walk(
        &mut self,
        path: PathBuf,
        manifest_dir: Vec<u8>,
        relations: bool,
        wal_logged: bool,
        db_dir: bool,
    ) -> Result<()> {
        let mut entries = Vec::new();
        let rd = fs::read_dir(&path)
            .map_err(|e| Error::source_caused(format!("listing {}", path.display()), e))?;
        for e in rd {
            let e =
                e.map_err(|e| Error::source_caused(format!("listing {}", path.display()), e))?;
            let name = FsName::from_os(&e.file_name());
            match fs::symlink_metadata(e.path()) {
                Ok(m) => entries.push((name, m)),
                // Removed since the listing (a dropped relation).
                Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
                Err(err) => {
                    return Err(Error::source_caused(
                        format!("reading {}", e.path().display()),
                        err,
                    ))
                }
            }
        }
        entries.sort_by(|a, b| a.0.cmp(&b.0));
        self.walks.push(DirWalk {
            path,
            manifest_dir,
            entries,
            next: 0,
            relations,
            wal_logged,
            db_dir,
        });
        Ok(())
    }

    /// The next item of the file walk (tablespaces, then the data
    /// directory without `global` and `pg_wal`); `None` when it is done.
    pub(super) fn walk_step(&mut self) -> Result<Option<Item>> {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return Ok(Some(item));
            }
            let Some(top) = self.walks.last_mut() else {
                return Ok(None);
            };
            if top.next >= top.entries.len() {
                let done = self.walks.pop();
                if done.is_some_and(|d| d.path == self.pgdata) {
                    // The data directory stays open for `global`, the
                    // label and the WAL.
                    return Ok(None);
                }
                self.queue.push_back(Item::Leave);
                if self.walks.is_empty() && self.tree == Tree::Tablespace {
                    // A tablespace's version directory is done: leave its
                    // OID directory; the next one, or the data directory.
                    self.queue.push_back(Item::Leave);
                    if !self.begin_next_tree()? {
                        self.queue.push_back(Item::Leave);
                        self.begin_data_dir()?;
                    }
                }
                continue;
            }
            let (name, meta) = top.entries[top.next].clone();
            top.next += 1;
            let dir = top.path.clone();
            let manifest_dir = top.manifest_dir.clone();
            let (relations, wal_logged, db_dir) = (top.relations, top.wal_logged, top.db_dir);
            let depth = self.walks.len();
            let top_level = depth == 1 && self.tree == Tree::Data;
            let n = name.0.as_slice();
            if n.starts_with(b"pgsql_tmp") || n == b".DS_Store" {
                continue;
            }
            if meta.is_file()
                && (SKIP_FILES.iter().any(|s| s.as_bytes() == n)
                    || n.starts_with(b"pg_internal.init"))
            {
                continue;
            }
            if db_dir && meta.is_file() && (is_temp_relation(n) || Self::is_unlogged_fork(&dir, n))
            {
                continue;
            }
            let path = dir.join(name.to_os());
            let mut mpath = manifest_dir.clone();
            if !mpath.is_empty() {
                mpath.push(b'/');
            }
            mpath.extend_from_slice(n);
            if meta.is_dir() {
                let node = node_from_meta(name.clone(), NodeKind::Dir, &meta);
                if top_level && (n == b"global" || n == b"pg_wal") {
                    continue;
                }
                self.queue.push_back(Item::Enter(node));
                if top_level && (EMPTY_DIRS.iter().any(|d| d.as_bytes() == n) || n == b"pg_tblspc")
                {
                    self.queue.push_back(Item::Leave);
                    continue;
                }
                let is_base_db = depth == 2 && self.tree == Tree::Data && manifest_dir == b"base";
                let is_ts_db = self.tree == Tree::Tablespace && depth == 1;
                let wal = wal_logged || (top_level && WAL_LOGGED.iter().any(|d| d.as_bytes() == n));
                let rel = relations || (top_level && n == b"base");
                self.push_walk(path, mpath, rel, wal, is_base_db || is_ts_db)?;
                continue;
            }
            if meta.file_type().is_symlink() {
                // Only pg_tblspc holds links, and they are skipped with
                // their directory; anything else is kept as a link.
                let target = fs::read_link(&path).map_err(|e| {
                    Error::source_caused(format!("reading link {}", path.display()), e)
                })?;
                let mut node = node_from_meta(name, NodeKind::Symlink, &meta);
                node.link_target = Some(FsName::from_os(target.as_os_str()));
                return Ok(Some(Item::Leaf {
                    node,
                    content: None,
                    on_error: OnReadError::Fail,
                }));
            }
            if !meta.is_file() {
                return Ok(Some(Item::Warning(format!(
                    "{}: not a regular file, directory or link; left out",
                    path.display()
                ))));
            }
            let checksums = (self.cluster.data_checksums && relations && is_checksummed(n))
                .then(|| segment_number(n).map(|s| s * self.cluster.segment_blocks))
                .flatten();
            let rules = ReadRules {
                checksums,
                may_shrink: wal_logged,
            };
            if db_dir && delta::is_main_fork(n) {
                if let Some((base, delta)) = self.delta_leaves(&name, &meta, &path, &mpath, rules) {
                    self.queue.push_back(delta);
                    return Ok(Some(base));
                }
            }
            return Ok(Some(self.file_leaf(name, &meta, path, mpath, rules)));
        }
    }

    pub(super) fn begin_data_dir(&mut self) -> Result<()> {
        let meta = fs::metadata(&self.pgdata)
            .map_err(|e| Error::source_caused(format!("reading {}", self.pgdata.display()), e))?;
        let mut node = node_from_meta(FsName::from(DATA_DIR), NodeKind::Dir, &meta);
        node.ctime_ns = None;
        node.inode = None;
        self.queue.push_back(Item::Enter(node));
        self.tree = Tree::Data;
        self.push_walk(self.pgdata.clone(), Vec::new(), false, false, false)
    }

    /// Whether `name` in `dir` is a fork of an unlogged relation (other
    /// than its init fork), which is left out.
    fn is_unlogged_fork(dir: &Path, name: &[u8]) -> bool {
        let Some((oid, fork)) = relation_name(name) else {
            return false;
        };
        if fork == b"_init" {
            return false;
        }
        let mut init = oid.to_vec();
        init.extend_from_slice(b"_init");
        dir.join(std::ffi::OsStr::from_bytes(&init)).exists()
    }

    /// A file leaf whose reader records its checksum (or, when the
    /// archiver takes it from the parent, records that).
    pub(super) fn file_leaf(
        &mut self,
        name: FsName,
        meta: &fs::Metadata,
        path: PathBuf,
        manifest_path: Vec<u8>,
        rules: ReadRules,
    ) -> Item {
        let mut node = node_from_meta(name, NodeKind::File, meta);
        node.size = meta.len();
        let tracked = self.track(meta, &path, manifest_path);
        let start_lsn = self.start_lsn;
        let block = self.cluster.block_size as usize;
        let open = move || -> std::io::Result<Box<dyn Read + Send>> {
            Ok(Box::new(FileReader::open(
                tracked, path, rules, start_lsn, block,
            )?))
        };
        Item::Leaf {
            node,
            content: Some(Content::Blocking(Box::new(open))),
            on_error: OnReadError::Fail,
        }
    }

    /// Counts a file of the manifest until it is read (or taken unread).
    pub(super) fn track(
        &self,
        meta: &fs::Metadata,
        path: &Path,
        manifest_path: Vec<u8>,
    ) -> Tracked {
        Tracked::new(
            self.shared.clone(),
            FileRecord {
                manifest_path,
                local_path: path.to_owned(),
                size: meta.len(),
                mtime: meta.mtime(),
                crc: None,
            },
        )
    }

    /// `global`, with `pg_control`, read after everything else.
    pub(super) fn begin_global(&mut self) -> Result<()> {
        let dir = self.pgdata.join("global");
        let meta = fs::metadata(&dir)
            .map_err(|e| Error::source_caused(format!("reading {}", dir.display()), e))?;
        self.queue.push_back(Item::Enter(node_from_meta(
            FsName::from("global"),
            NodeKind::Dir,
            &meta,
        )));
        self.tree = Tree::Global;
        self.push_walk(dir, b"global".to_vec(), true, true, false)
    }
}

pub(super) fn plain_dir(name: &str) -> Node {
    let mut n = Node::new(name, NodeKind::Dir);
    n.mode = Some(0o700);
    n
}

/// `<oid>`, `<oid>_<fork>`, `<oid>.<seg>`, `<oid>_<fork>.<seg>`: the OID
/// and the fork suffix (empty for the main fork).
fn relation_name(name: &[u8]) -> Option<(&[u8], &[u8])> {
    let base = match name.iter().position(|&b| b == b'.') {
        Some(dot) => {
            let seg = &name[dot + 1..];
            if seg.is_empty() || !seg.iter().all(u8::is_ascii_digit) {
                return None;
            }
            &name[..dot]
        }
        None => name,
    };
    let (oid, fork) = match base.iter().position(|&b| b == b'_') {
        Some(u) => (&base[..u], &base[u..]),
        None => (base, &base[base.len()..]),
    };
    if oid.is_empty() || !oid.iter().all(u8::is_ascii_digit) {
        return None;
    }
    matches!(fork, b"" | b"_fsm" | b"_vm" | b"_init").then_some((oid, fork))
}

/// `t<backend>_<relfilenode>...`: a temporary relation.
fn is_temp_relation(name: &[u8]) -> bool {
    let Some(rest) = name.strip_prefix(b"t") else {
        return false;
    };
    let Some(u) = rest.iter().position(|&b| b == b'_') else {
        return false;
    };
    !rest[..u].is_empty()
        && rest[..u].iter().all(u8::is_ascii_digit)
        && relation_name(&rest[u + 1..]).is_some()
}

/// Whether a file in a relation directory carries page checksums.
fn is_checksummed(name: &[u8]) -> bool {
    !(name == b"pg_control"
        || name == b"pg_filenode.map"
        || name == b"PG_VERSION"
        || name.starts_with(b"pg_internal.init"))
}

/// The segment number of a relation file (`.N` suffix; 0 without), or
/// `None` for a name that is not a relation's.
fn segment_number(name: &[u8]) -> Option<u32> {
    relation_name(name)?;
    match name.iter().position(|&b| b == b'.') {
        Some(dot) => std::str::from_utf8(&name[dot + 1..]).ok()?.parse().ok(),
        None => Some(0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relation_names() {
        assert_eq!(relation_name(b"16384"), Some((&b"16384"[..], &b""[..])));
        assert_eq!(
            relation_name(b"16384_fsm"),
            Some((&b"16384"[..], &b"_fsm"[..]))
        );
        assert_eq!(relation_name(b"16384.3"), Some((&b"16384"[..], &b""[..])));
        assert_eq!(
            relation_name(b"16384_vm.1"),
            Some((&b"16384"[..], &b"_vm"[..]))
        );
        assert_eq!(relation_name(b"PG_VERSION"), None);
        assert_eq!(relation_name(b"16384_x"), None);
        assert!(is_temp_relation(b"t3_16384"));
        assert!(is_temp_relation(b"t3_16384_fsm.2"));
        assert!(!is_temp_relation(b"t_16384"));
        assert_eq!(segment_number(b"16384.7"), Some(7));
        assert_eq!(segment_number(b"16384"), Some(0));
        assert_eq!(segment_number(b"pg_filenode.map"), None);
        assert!(!is_checksummed(b"pg_internal.init.123"));
        assert!(is_checksummed(b"1259"));
    }
}
