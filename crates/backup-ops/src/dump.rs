//! Taking one thing out of a snapshot without restoring it: `backup dump`.
//!
//! A file (or a database snapshot's stream) is written as its content; a
//! directory, or the whole snapshot, as a tar archive (GNU format with
//! PAX records for nanosecond times: long names, owners by id and name,
//! hard links as links, symbolic links, fifos and device nodes; extended
//! attributes and ACLs are not carried). Content is
//! streamed chunk by chunk as a restore reads it, every blob verified, so
//! memory stays bounded whatever the size. No lock is taken: manifests
//! and what they reach are never changed in place.
//!
//! In a database snapshot, a path that names a table, collection or
//! Redis key (`sales.orders`, `shop.orders`, `0/user:1`) rather than a
//! stored stream, or any path with a format, is written in a format of
//! its own: [`backup_sources::item`] (CSV, `COPY` text, `INSERT`
//! statements; Extended JSON, BSON; a key's value or `DUMP` payload).

use std::collections::HashMap;
use std::io::Write;

use backup_core::reader::{ContentReader, SnapshotReader};
use backup_core::repo::{IndexedRepository, Repository};
use backup_core::snapshot::{SnapshotEntry, SnapshotFilter};
use backup_core::tree::{Node, NodeKind};
use backup_sources::item::{ItemDump, ItemFormat};
use tokio::runtime::Handle;

use crate::cold::{ColdRead, ThawReport};
use crate::error::{Error, Result};
use crate::feedback::Feedback;

/// What `dump` takes out.
#[derive(Debug, Clone, Default)]
pub struct DumpRequest {
    /// `latest`, a snapshot id or a unique id prefix.
    pub snapshot: String,
    /// Which snapshots `latest` chooses among.
    pub filter: SnapshotFilter,
    /// `/`-separated from the snapshot's root; empty or `/` is the whole
    /// snapshot (as tar). In a database snapshot, also a table,
    /// collection or `DB/KEY`.
    pub path: String,
    /// For a table, collection or key: the format (the kind's default
    /// when `None`); given, `path` must name one.
    pub format: Option<ItemFormat>,
    /// A MongoDB collection as it was at this time (`--at`): the newest
    /// base snapshot at or before it (`snapshot` `latest`; an id names
    /// the base to start from) plus the captured oplog replayed for that
    /// collection. See [`dump`].
    pub at: Option<chrono::DateTime<chrono::Utc>>,
    /// Thaw the archived packs the dump reads first (S3 archive classes):
    /// a file's own packs, a directory's, and for a table, collection or
    /// key the whole snapshot's (which stream holds an item is the
    /// kind's business); `None` reads packs as they are.
    pub cold: Option<ColdRead>,
}

/// What `dump` wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DumpShape {
    /// The content of one file or stream.
    Content,
    /// A tar archive of a directory.
    Tar,
    /// A table, collection or key in a format of its own.
    Item(ItemFormat),
}

/// The result of a dump.
#[derive(Debug, Clone)]
pub struct DumpOutcome {
    /// The snapshot read.
    pub snapshot: SnapshotEntry,
    /// What was written.
    pub shape: DumpShape,
    /// Entries written (1 for content).
    pub entries: u64,
    /// Bytes of file content written (not counting tar headers); for an
    /// item, every byte written.
    pub bytes: u64,
    /// For a table, collection or key: what was written.
    pub item: Option<ItemDump>,
    /// Where the thaw of the packs read stood ([`DumpRequest::cold`]).
    pub cold: Option<ThawReport>,
}

/// Where `path` leads in the snapshot, and whether it is a directory;
/// found before anything is written, so that a wrong path writes nothing.
async fn resolve(reader: &SnapshotReader, req: &DumpRequest) -> Result<Option<Node>> {
    let parts = crate::browse::components(&req.path);
    let not_found = || -> Error {
        backup_core::Error::not_found(format!(
            "`{}` in snapshot {} (`backup ls {} PATH` lists what it holds)",
            req.path,
            reader.id().short(),
            reader.id().short()
        ))
        .into()
    };
    let Some((last, dirs)) = parts.split_last() else {
        return Ok(None);
    };
    let mut dir = reader.root().await?;
    for name in dirs {
        match dir.get(name) {
            Some(node) if node.kind == NodeKind::Dir => {
                let node = node.clone();
                dir = reader.open_dir(&node).await?;
            }
            _ => return Err(not_found()),
        }
    }
    dir.get(last).cloned().map(Some).ok_or_else(not_found)
}

/// The writer a dump goes to, opened once the path is found and what
/// will be written is known (so a wrong path creates no output file, and
/// a front-end can refuse a tar archive on a terminal).
pub type OpenOutput = Box<dyn FnOnce(DumpShape) -> Result<Box<dyn Write + Send>> + Send>;

/// Writes what `req.path` names in the snapshot to the writer `open`
/// gives: a file's or stream's content as it is, a directory (or, with an
/// empty path, the whole snapshot) as a tar archive whose names start
/// below it. The writer is used from a blocking thread and flushed at
/// the end.
///
/// With `req.at`, `req.path` names a MongoDB collection and it is
/// written as it was at that time: the restorable window that holds the
/// time is found as for `backup restore --at` ([`crate::pitr::plan`],
/// from the newest base at or before it, or from the snapshot named when
/// it is not `latest`), then the base's documents of that collection,
/// its own oplog window and the captured oplog up to the time are
/// replayed in memory for that one collection
/// ([`backup_sources::mongo::dump_collection_at`]). Other kinds are
/// refused (restoring to the point is the way there).
///
/// # Errors
///
/// With `req.at`: [`Error::Usage`] for a snapshot that is not MongoDB
/// (saying to use `backup restore --at`), and for a time outside the
/// captured windows (naming them, as a restore to a point does);
/// `Config` for a history the in-memory replay does not rebuild.
/// Otherwise:
/// [`Error::NotFound`](backup_core::Error::NotFound) when the snapshot or
/// the path does not exist, `Usage` for a path naming a symbolic link or
/// special file (nothing to write as content): in both cases before
/// `open` is called; what `open` returns;
/// damaged data (the output then ends early: an error, never a short file
/// reported as complete); errors writing `out`.
pub async fn dump(
    repo: &Repository,
    req: &DumpRequest,
    open: OpenOutput,
    feedback: &dyn Feedback,
) -> Result<DumpOutcome> {
    if let Some(at) = req.at {
        return dump_at(repo, req, at, open, feedback).await;
    }
    let entry = repo.find_snapshot(&req.snapshot, &req.filter).await?;
    let indexed: IndexedRepository = repo.clone().load_index().await?;
    let reader = SnapshotReader::new(indexed, entry.clone());
    let database = entry.snapshot.source.kind != "files";
    if req.format.is_some() && !database {
        return Err(Error::Usage(
            "--format applies to tables, collections and keys of database snapshots; a file is written as it is, a directory as tar".to_owned(),
        ));
    }
    let node = if req.format.is_some() {
        None
    } else {
        match resolve(&reader, req).await {
            Ok(node) => Some(node),
            Err(e) if database && is_not_found(&e) => None,
            Err(e) => return Err(e),
        }
    };
    let Some(node) = node else {
        let cold = thaw(&reader, req, None, feedback).await?;
        return dump_item(&reader, req, open, cold).await;
    };
    let shape = match &node {
        None => DumpShape::Tar,
        Some(n) if n.kind == NodeKind::Dir => DumpShape::Tar,
        Some(n) if matches!(n.kind, NodeKind::File | NodeKind::Stream) => DumpShape::Content,
        Some(n) => {
            return Err(Error::Usage(format!(
                "`{}` is a {} entry: it has no content to dump (`backup ls --long` shows it)",
                n.name.display(),
                kind_name(n.kind)
            )))
        }
    };
    let cold = thaw(&reader, req, node.as_ref(), feedback).await?;
    let mut out = open(shape)?;
    let handle = Handle::current();
    let (entries, bytes) = tokio::task::spawn_blocking(move || -> Result<_> {
        let done = match &node {
            Some(n) if shape == DumpShape::Content => (1, copy_content(&reader, n, &mut out)?),
            Some(n) => {
                let dir = handle.block_on(reader.open_dir(n))?;
                tar_tree(&handle, &reader, dir.entries().to_vec(), &mut out)?
            }
            None => {
                let root = handle.block_on(reader.root())?;
                tar_tree(&handle, &reader, root.entries().to_vec(), &mut out)?
            }
        };
        out.flush().map_err(write_error)?;
        Ok(done)
    })
    .await
    .map_err(|e| Error::Usage(format!("the dump stopped: {e}")))??;
    Ok(DumpOutcome {
        snapshot: entry,
        shape,
        entries,
        bytes,
        item: None,
        cold,
    })
}

/// Thaws the archived packs a dump of `node` reads (when `req.cold`
/// asks): a file's content, a directory's subtree, and without a node (the
/// whole snapshot, or a table, collection or key) every pack of the
/// snapshot.
async fn thaw(
    reader: &SnapshotReader,
    req: &DumpRequest,
    node: Option<&Node>,
    feedback: &dyn Feedback,
) -> Result<Option<ThawReport>> {
    let Some(cold) = &req.cold else {
        return Ok(None);
    };
    let repo = reader.repository();
    let packs = match node {
        Some(n) if n.kind != NodeKind::Dir => {
            crate::cold::packs_of_blobs(repo, repo.content_ids(n).await?.iter())
        }
        Some(n) => crate::cold::packs_of_trees(repo, n.subtree.into_iter()).await?,
        None => {
            crate::cold::packs_of_trees(repo, std::iter::once(reader.entry().snapshot.tree)).await?
        }
    };
    Ok(Some(
        crate::cold::thaw_for(cold, &packs, false, feedback).await?,
    ))
}

/// `dump --at`: one MongoDB collection at a point in time (see [`dump`]).
async fn dump_at(
    repo: &Repository,
    req: &DumpRequest,
    at: chrono::DateTime<chrono::Utc>,
    open: OpenOutput,
    feedback: &dyn Feedback,
) -> Result<DumpOutcome> {
    let chosen = repo.find_snapshot(&req.snapshot, &req.filter).await?;
    let kind = chosen.snapshot.source.kind.clone();
    let when = at.format("%Y-%m-%dT%H:%M:%S%.fZ").to_string();
    let restore = format!(
        "restore to the point instead (`backup restore {} --at {when} --to SCRATCH`) and read it there",
        if req.snapshot == "latest" {
            "latest"
        } else {
            req.snapshot.as_str()
        }
    );
    let why = match kind.as_str() {
        "mongodb" => None,
        "postgres" if chosen.snapshot.metadata.get("mode").and_then(|m| m.as_str()) == Some("physical") => Some(
            "a PostgreSQL physical snapshot reaches a point in time only by replaying its WAL in a server".to_owned(),
        ),
        "postgres" => Some("a PostgreSQL table has no captured change stream to replay without a server".to_owned()),
        "redis" => Some("a Redis snapshot's captured replication stream is replayed by a server, not per key".to_owned()),
        other => Some(format!("a {other} snapshot has no captured change stream to replay")),
    };
    if let Some(why) = why {
        return Err(Error::Usage(format!(
            "`dump --at` reads one MongoDB collection at a time from its base and captured oplog; snapshot {} is not MongoDB: {why}; {restore}",
            chosen.id.short()
        )));
    }
    if matches!(req.format, Some(f) if !matches!(f, ItemFormat::Json | ItemFormat::Bson)) {
        return Err(Error::Usage(
            "a collection is written as json or bson (--format)".to_owned(),
        ));
    }
    #[cfg(feature = "mongodb")]
    {
        let opts = backup_core::target::RestoreOptions {
            at: Some(at),
            ..backup_core::target::RestoreOptions::default()
        };
        let named = (req.snapshot != "latest").then_some(chosen.id);
        let source = req.filter.source.as_deref();
        let plan = crate::pitr::plan(repo, "mongodb", source, named, &opts)
            .await
            .map_err(|e| match e {
                Error::Usage(m) => {
                    Error::Usage(m.replacen("cannot restore to", "cannot dump at", 1))
                }
                other => other,
            })?
            .ok_or_else(|| Error::usage("this build has no MongoDB oplog capture"))?;
        let indexed: IndexedRepository = repo.clone().load_index().await?;
        let reader = SnapshotReader::new(indexed, plan.base.clone());
        let cold = thaw(&reader, req, None, feedback).await?;
        let format = req.format.unwrap_or(ItemFormat::Json);
        let open: backup_sources::item::OpenItem = Box::new(move |format| {
            open(DumpShape::Item(format)).map_err(|e| match e {
                Error::Core(e) => e,
                other => backup_core::Error::Config(other.to_string()),
            })
        });
        let done = backup_sources::mongo::dump_collection_at(
            &reader,
            &req.path,
            format,
            plan.replay.as_ref(),
            &when,
            open,
        )
        .await?;
        Ok(DumpOutcome {
            snapshot: plan.base,
            shape: DumpShape::Item(done.format),
            entries: done.count,
            bytes: done.bytes,
            item: Some(done),
            cold,
        })
    }
    #[cfg(not(feature = "mongodb"))]
    {
        drop((open, feedback));
        Err(Error::usage("this build has no MongoDB support"))
    }
}

fn is_not_found(e: &Error) -> bool {
    matches!(e, Error::Core(backup_core::Error::NotFound { .. }))
}

/// Writes the table, collection or key `req.path` names.
async fn dump_item(
    reader: &SnapshotReader,
    req: &DumpRequest,
    open: OpenOutput,
    cold: Option<ThawReport>,
) -> Result<DumpOutcome> {
    let open: backup_sources::item::OpenItem = Box::new(move |format| {
        open(DumpShape::Item(format)).map_err(|e| match e {
            Error::Core(e) => e,
            other => backup_core::Error::Config(other.to_string()),
        })
    });
    let done = backup_sources::kind::dump_item(reader, &req.path, req.format, open).await?;
    Ok(DumpOutcome {
        snapshot: reader.entry().clone(),
        shape: DumpShape::Item(done.format),
        entries: done.count,
        bytes: done.bytes,
        item: Some(done),
        cold,
    })
}

fn kind_name(kind: NodeKind) -> &'static str {
    match kind {
        NodeKind::File => "file",
        NodeKind::Dir => "directory",
        NodeKind::Symlink => "symbolic link",
        NodeKind::Stream => "stream",
        NodeKind::Fifo => "fifo",
        NodeKind::Chardev => "character device",
        NodeKind::Blockdev => "block device",
    }
}

fn write_error(e: std::io::Error) -> Error {
    backup_core::Error::io("writing the dump", e).into()
}

/// The typed error of a failed content read, or the write error.
fn content_error(r: &mut ContentReader, e: std::io::Error) -> Error {
    match r.take_error() {
        Some(e) => e.into(),
        None => write_error(e),
    }
}

fn copy_content(reader: &SnapshotReader, node: &Node, out: &mut dyn Write) -> Result<u64> {
    let mut r = reader.blocking_content(node);
    let n = std::io::copy(&mut r, out).map_err(|e| content_error(&mut r, e))?;
    if n != node.size {
        return Err(reader
            .damaged(format!(
                "`{}` holds {n} bytes, its entry says {}",
                node.name.display(),
                node.size
            ))
            .into());
    }
    Ok(n)
}

/// Writes `entries` and everything below them as a tar archive; returns
/// the entries and content bytes written.
fn tar_tree(
    handle: &Handle,
    reader: &SnapshotReader,
    entries: Vec<Node>,
    out: &mut dyn Write,
) -> Result<(u64, u64)> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Complete);
    let (mut count, mut bytes) = (0u64, 0u64);
    // The first path written of each hard-linked file (device, inode).
    let mut linked: HashMap<(u64, u64), std::path::PathBuf> = HashMap::new();
    let mut stack = vec![(std::path::PathBuf::new(), entries.into_iter())];
    while let Some((parent, nodes)) = stack.last_mut() {
        let Some(node) = nodes.next() else {
            stack.pop();
            continue;
        };
        let path = parent.join(node.name.to_os());
        let mut header = header_of(&node);
        count += 1;
        // Nanoseconds go in a PAX record before the entry (the GNU
        // header holds whole seconds).
        if let Some(ns) = node.mtime_ns.filter(|ns| ns.rem_euclid(1_000_000_000) != 0) {
            let value = format!(
                "{}.{:09}",
                ns.div_euclid(1_000_000_000),
                ns.rem_euclid(1_000_000_000)
            );
            tar.append_pax_extensions([("mtime", value.as_bytes())])
                .map_err(write_error)?;
        }
        match node.kind {
            NodeKind::Dir => {
                header.set_entry_type(tar::EntryType::Directory);
                tar.append_data(&mut header, &path, std::io::empty())
                    .map_err(write_error)?;
                let dir = handle.block_on(reader.open_dir(&node))?;
                stack.push((path, dir.entries().to_vec().into_iter()));
            }
            NodeKind::File | NodeKind::Stream => {
                let key = node
                    .links
                    .filter(|l| *l > 1)
                    .and(node.device.zip(node.inode));
                if let Some(first) = key.and_then(|k| linked.get(&k)) {
                    header.set_entry_type(tar::EntryType::Link);
                    header.set_size(0);
                    tar.append_link(&mut header, &path, first)
                        .map_err(write_error)?;
                    continue;
                }
                header.set_entry_type(tar::EntryType::Regular);
                header.set_size(node.size);
                let mut r = reader.blocking_content(&node);
                tar.append_data(&mut header, &path, &mut r)
                    .map_err(|e| content_error(&mut r, e))?;
                if r.bytes_read() != node.size {
                    return Err(reader
                        .damaged(format!(
                            "`{}` holds {} bytes, its entry says {}",
                            path.display(),
                            r.bytes_read(),
                            node.size
                        ))
                        .into());
                }
                bytes += node.size;
                if let Some(k) = key {
                    linked.insert(k, path);
                }
            }
            NodeKind::Symlink => {
                header.set_entry_type(tar::EntryType::Symlink);
                let target = node
                    .link_target
                    .as_ref()
                    .map(backup_core::tree::FsName::to_os)
                    .unwrap_or_default();
                tar.append_link(&mut header, &path, target)
                    .map_err(write_error)?;
            }
            NodeKind::Fifo | NodeKind::Chardev | NodeKind::Blockdev => {
                header.set_entry_type(match node.kind {
                    NodeKind::Fifo => tar::EntryType::Fifo,
                    NodeKind::Chardev => tar::EntryType::Char,
                    _ => tar::EntryType::Block,
                });
                if let Some(rdev) = node.rdev {
                    let (major, minor) = (nix::sys::stat::major(rdev), nix::sys::stat::minor(rdev));
                    header
                        .set_device_major(major as u32)
                        .and_then(|()| header.set_device_minor(minor as u32))
                        .map_err(write_error)?;
                }
                tar.append_data(&mut header, &path, std::io::empty())
                    .map_err(write_error)?;
            }
        }
    }
    tar.finish().map_err(write_error)?;
    Ok((count, bytes))
}

/// A GNU header with a node's mode, owner and time.
fn header_of(node: &Node) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    let default_mode = if node.kind == NodeKind::Dir {
        0o755
    } else {
        0o644
    };
    h.set_mode(node.mode.unwrap_or(default_mode) & 0o7777);
    h.set_uid(u64::from(node.uid.unwrap_or(0)));
    h.set_gid(u64::from(node.gid.unwrap_or(0)));
    if let Some(user) = &node.user {
        let _ = h.set_username(user);
    }
    if let Some(group) = &node.group {
        let _ = h.set_groupname(group);
    }
    let secs = node.mtime_ns.unwrap_or(0).div_euclid(1_000_000_000);
    h.set_mtime(u64::try_from(secs).unwrap_or(0));
    h.set_size(0);
    h
}
