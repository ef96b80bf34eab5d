//! The stream thread of a remote base backup: the server's `CopyData`
//! messages read, the tar archives cut into members, and the walk handed
//! its items through a channel, depth first, with `global` kept aside in
//! a spill file until the end of the data directory and `pg_wal` opened
//! when its first segment arrives.

use std::fs::File;
use std::io::{Read, Write as _};
use std::sync::mpsc::SyncSender;
use std::sync::Arc;

use backup_core::source::{Content, Item, OnReadError};
use backup_core::tree::{Node, NodeKind};
use backup_core::{Error, Result};
use bytes::Bytes;
use chrono::Utc;

use super::super::lsn::{is_wal_file_name, Lsn};
use super::super::meta::{TablespaceMeta, DATA_DIR, MANIFEST_FILE, TABLESPACES_DIR};
use super::super::tar::{self, EntryType, Header};
use super::errors::{backup_error, io_error};
use super::readers::{ChannelReader, Piece, SpillReader};
use crate::postgres::wire::{db_error, WireConn};

/// What the stream left for the manifest once it ended.
#[derive(Debug, Default)]
pub(super) struct StreamEnd {
    pub(super) stop_lsn: Lsn,
    pub(super) stop_timeline: u32,
    pub(super) backup_label: String,
    pub(super) manifest: Vec<u8>,
    pub(super) wal_files: Vec<String>,
}

/// Messages from the stream thread to the walk.
#[allow(clippy::large_enum_variant)] // Items are the common case; boxing each costs more.
pub(super) enum Msg {
    Item(Item),
    Fail(Error),
    Done(Box<StreamEnd>),
}

/// Where the content of the current member goes.
enum Sink {
    /// To a reader through a channel, in pieces gathered here up to
    /// [`PIECE_SIZE`] (the server sends 32 KiB messages; one channel hand-off
    /// and one wake-up each cost more than the copy). The sender is `None`
    /// once the reader is gone: the archiver took the file from the parent,
    /// or stopped.
    Stream(Option<SyncSender<Piece>>, Vec<u8>),
    /// Into memory (small files the backup reads itself).
    Memory(Vec<u8>),
    /// Into the spill file, for a member emitted later.
    Spill,
}

/// A member kept aside until the end of the data directory.
struct Deferred {
    /// Path relative to the data directory.
    path: Vec<String>,
    node: Node,
    /// Offset and length in the spill file.
    content: Option<(u64, u64)>,
}

/// What kind of archive the stream is in.
#[derive(Clone, PartialEq, Eq)]
enum Archive {
    None,
    /// A tablespace (its OID).
    Tablespace(String),
    /// The data directory.
    Base,
    /// The backup manifest.
    Manifest,
}

/// Tar parsing state within an archive.
enum TarState {
    Header { block: Vec<u8> },
    Content { left: u64, padding: u64 },
    Padding { left: u64 },
    Ended,
}

/// The stream thread's state.
pub(super) struct Stream {
    tx: tokio::sync::mpsc::Sender<Msg>,
    tablespaces: Vec<TablespaceMeta>,
    archive: Archive,
    tar: TarState,
    sink: Option<Sink>,
    /// The member whose content the sink receives.
    member: Option<Header>,
    /// Open directories of the snapshot tree, from its root.
    open: Vec<String>,
    deferred: Vec<Deferred>,
    /// Content kept aside (written, then read by the readers of the
    /// deferred members).
    spill: Option<Arc<File>>,
    spill_len: u64,
    /// The data directory's `pg_wal` entry, held until it is opened.
    pg_wal: Option<Node>,
    wal_open: bool,
    end: StreamEnd,
    warnings: Vec<String>,
}

/// Pieces of content that wait for a reader at most (per file).
const PIECES_AHEAD: usize = 8;

/// Bytes of a file's content handed to its reader at once.
const PIECE_SIZE: usize = 256 * 1024;

impl Stream {
    pub(super) fn new(
        tx: tokio::sync::mpsc::Sender<Msg>,
        tablespaces: Vec<TablespaceMeta>,
    ) -> Self {
        Stream {
            tx,
            tablespaces,
            archive: Archive::None,
            tar: TarState::Ended,
            sink: None,
            member: None,
            open: Vec::new(),
            deferred: Vec::new(),
            spill: None,
            spill_len: 0,
            pg_wal: None,
            wal_open: false,
            end: StreamEnd::default(),
            warnings: Vec::new(),
        }
    }

    /// Reads the COPY stream and the end position; the connection is
    /// closed when this returns (which ends the backup on the server, and
    /// its temporary slot).
    pub(super) fn run(mut self, mut conn: WireConn) -> Result<StreamEnd> {
        loop {
            let step = conn
                .next_message(|tag, body| self.message(tag, body))
                .map_err(|e| io_error(&e, "reading the base backup"))??;
            if step {
                break;
            }
        }
        // The end position, then the command's completion.
        let rows = conn
            .rows()
            .map_err(|e| io_error(&e, "reading the end of the base backup"))?
            .map_err(|m| {
                Error::source_failed(format!(
                    "the base backup failed at its end: {m}{}",
                    self.warning_text()
                ))
            })?;
        let row = rows
            .first()
            .ok_or_else(|| Error::source_failed("BASE_BACKUP sent no end position"))?;
        self.end.stop_lsn = Lsn::parse(row.first().cloned().flatten().as_deref().unwrap_or(""))?;
        self.end.stop_timeline = row
            .get(1)
            .cloned()
            .flatten()
            .and_then(|t| t.parse().ok())
            .unwrap_or(1);
        Ok(self.end)
    }

    fn warning_text(&self) -> String {
        if self.warnings.is_empty() {
            String::new()
        } else {
            format!(" (the server warned: {})", self.warnings.join("; "))
        }
    }

    /// Handles one message; `Ok(true)` at the end of the COPY stream.
    fn message(&mut self, tag: u8, body: &[u8]) -> Result<bool> {
        match tag {
            b'd' => {
                let (&kind, rest) = body
                    .split_first()
                    .ok_or_else(|| Error::source_failed("an empty message in the base backup"))?;
                match kind {
                    b'n' => {
                        let mut parts = rest.split(|&b| b == 0);
                        let name =
                            String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                        let path =
                            String::from_utf8_lossy(parts.next().unwrap_or_default()).into_owned();
                        self.end_archive()?;
                        self.begin_archive(&name, &path)?;
                    }
                    b'd' => self.data(rest)?,
                    b'm' => {
                        self.end_archive()?;
                        self.begin_manifest()?;
                    }
                    // Progress reports.
                    _ => {}
                }
                Ok(false)
            }
            b'c' => {
                self.end_archive()?;
                self.leave_to(0)?;
                Ok(true)
            }
            b'N' => {
                let notice = db_error(body).to_string();
                tracing::warn!(notice = %notice, "The server warned during the base backup.");
                self.warnings.push(notice);
                Ok(false)
            }
            b'E' => {
                let e = db_error(body);
                let mut err = backup_error(&e, "the base backup failed");
                if let Error::Source { message, .. } = &mut err {
                    message.push_str(&self.warning_text());
                }
                self.fail_member(&err.to_string());
                Err(err)
            }
            _ => Ok(false),
        }
    }

    fn send(&self, msg: Msg) -> Result<()> {
        self.tx.blocking_send(msg).map_err(|_| Error::Cancelled)
    }

    fn enter(&mut self, node: Node) -> Result<()> {
        self.open.push(node.name.display().into_owned());
        self.send(Msg::Item(Item::Enter(node)))
    }

    /// Leaves directories until `depth` remain open.
    fn leave_to(&mut self, depth: usize) -> Result<()> {
        while self.open.len() > depth {
            self.open.pop();
            self.send(Msg::Item(Item::Leave))?;
        }
        Ok(())
    }

    /// Opens `dir` (a path from the snapshot root): leaves what is not on
    /// its way, enters the first `synthetic` components with a plain
    /// directory node when they are not open; any other component must be
    /// open already.
    fn open_dir(&mut self, dir: &[String], synthetic: usize, member: &str) -> Result<()> {
        let common = self
            .open
            .iter()
            .zip(dir)
            .take_while(|(a, b)| a == b)
            .count();
        self.leave_to(common)?;
        for (i, name) in dir.iter().enumerate().skip(common) {
            if i >= synthetic {
                return Err(Error::source_failed(format!(
                    "the base backup stream sent `{member}` after its directory was complete; this server's stream order is not supported"
                )));
            }
            self.enter(dir_node(name, 0o700, None))?;
        }
        Ok(())
    }

    fn archive_root(&self) -> Vec<String> {
        match &self.archive {
            Archive::Tablespace(oid) => vec![TABLESPACES_DIR.to_owned(), oid.clone()],
            Archive::Base => vec![DATA_DIR.to_owned()],
            Archive::None | Archive::Manifest => Vec::new(),
        }
    }

    fn begin_archive(&mut self, name: &str, path: &str) -> Result<()> {
        self.archive = if path.is_empty() {
            Archive::Base
        } else {
            let oid = name.strip_suffix(".tar").unwrap_or(name).to_owned();
            if !self.tablespaces.iter().any(|t| t.oid.to_string() == oid) {
                return Err(Error::source_failed(format!(
                    "the base backup sent archive `{name}` for a tablespace it did not announce"
                )));
            }
            Archive::Tablespace(oid)
        };
        self.tar = TarState::Header {
            block: Vec::with_capacity(tar::BLOCK),
        };
        let root = self.archive_root();
        self.open_dir(&root, root.len(), name)
    }

    fn begin_manifest(&mut self) -> Result<()> {
        self.leave_to(0)?;
        self.archive = Archive::Manifest;
        let mut node = Node::new(MANIFEST_FILE, NodeKind::File);
        node.mode = Some(0o600);
        node.mtime_ns = Utc::now().timestamp_nanos_opt();
        self.sink = Some(self.stream_leaf(node)?);
        Ok(())
    }

    /// Ends the current archive: the data directory gets its deferred
    /// parts (`pg_wal`, `global`) and is closed.
    fn end_archive(&mut self) -> Result<()> {
        match std::mem::replace(&mut self.archive, Archive::None) {
            Archive::Base => {
                if !matches!(self.tar, TarState::Ended | TarState::Header { .. }) {
                    return Err(Error::source_failed(
                        "the base backup's data directory archive ended inside a file",
                    ));
                }
                let data = vec![DATA_DIR.to_owned()];
                if self.wal_open {
                    self.open_dir(&[DATA_DIR.to_owned(), "pg_wal".to_owned()], 0, "pg_wal")?;
                } else {
                    self.open_dir(&data, 1, "pg_wal")?;
                    let node = self
                        .pg_wal
                        .take()
                        .unwrap_or_else(|| dir_node("pg_wal", 0o700, None));
                    self.enter(node)?;
                }
                let deferred = std::mem::take(&mut self.deferred);
                let (wal, rest): (Vec<Deferred>, Vec<Deferred>) =
                    deferred.into_iter().partition(|d| d.path[0] == "pg_wal");
                self.emit_deferred(wal, &data)?;
                self.open_dir(&data, 1, "global")?;
                self.emit_deferred(rest, &data)?;
                self.leave_to(0)?;
                self.wal_open = false;
            }
            Archive::Tablespace(_) => {
                if !matches!(self.tar, TarState::Ended | TarState::Header { .. }) {
                    return Err(Error::source_failed(
                        "a tablespace archive of the base backup ended inside a file",
                    ));
                }
            }
            Archive::Manifest => {
                if let Some(Sink::Stream(Some(tx), buf)) = self.sink.take() {
                    if !buf.is_empty() {
                        let _ = tx.send(Piece::Data(Bytes::from(buf)));
                    }
                    let _ = tx.send(Piece::End);
                }
            }
            Archive::None => {}
        }
        self.tar = TarState::Ended;
        Ok(())
    }

    /// Emits kept-aside members (paths relative to `base`), parents first.
    fn emit_deferred(&mut self, mut list: Vec<Deferred>, base: &[String]) -> Result<()> {
        list.sort_by(|a, b| a.path.cmp(&b.path));
        let spill = self.spill.clone();
        for d in list {
            let mut dir: Vec<String> = base.to_vec();
            dir.extend(d.path[..d.path.len() - 1].iter().cloned());
            let label = d.path.join("/");
            self.open_dir(&dir, 0, &label)?;
            if d.node.kind == NodeKind::Dir {
                self.enter(d.node)?;
            } else {
                {
                    let content = match (d.content, &spill) {
                        (Some((pos, len)), Some(file)) => {
                            let file = file.clone();
                            Some(Content::Blocking(Box::new(move || {
                                Ok(Box::new(SpillReader {
                                    file,
                                    pos,
                                    end: pos + len,
                                }) as Box<dyn Read + Send>)
                            })))
                        }
                        _ if d.node.kind == NodeKind::File => {
                            Some(Content::Blocking(Box::new(|| {
                                Ok(Box::new(std::io::empty()) as Box<dyn Read + Send>)
                            })))
                        }
                        _ => None,
                    };
                    self.send(Msg::Item(Item::Leaf {
                        node: d.node,
                        content,
                        on_error: OnReadError::Fail,
                    }))?;
                }
            }
        }
        Ok(())
    }

    /// Feeds archive (or manifest) bytes.
    fn data(&mut self, mut data: &[u8]) -> Result<()> {
        if self.archive == Archive::Manifest {
            self.end.manifest.extend_from_slice(data);
            return self.write_member(data);
        }
        while !data.is_empty() {
            match &mut self.tar {
                TarState::Header { block } => {
                    let take = (tar::BLOCK - block.len()).min(data.len());
                    block.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if block.len() == tar::BLOCK {
                        let block = std::mem::take(block);
                        if tar::is_zero_block(&block) {
                            self.tar = TarState::Ended;
                        } else {
                            let header = tar::parse_header(&block)?;
                            self.begin_member(header)?;
                        }
                    }
                }
                TarState::Content { left, padding } => {
                    let take = (*left).min(data.len() as u64) as usize;
                    *left -= take as u64;
                    let done = *left == 0;
                    let padding = *padding;
                    let chunk = &data[..take];
                    data = &data[take..];
                    self.write_member(chunk)?;
                    if done {
                        self.end_member()?;
                        self.tar = if padding > 0 {
                            TarState::Padding { left: padding }
                        } else {
                            TarState::Header {
                                block: Vec::with_capacity(tar::BLOCK),
                            }
                        };
                    }
                }
                TarState::Padding { left } => {
                    let take = (*left).min(data.len() as u64);
                    *left -= take;
                    data = &data[take as usize..];
                    if *left == 0 {
                        self.tar = TarState::Header {
                            block: Vec::with_capacity(tar::BLOCK),
                        };
                    }
                }
                // The second zero block, or nothing.
                TarState::Ended => return Ok(()),
            }
        }
        Ok(())
    }

    /// A member's header: directories and links are placed now, files get
    /// a sink for their content.
    fn begin_member(&mut self, h: Header) -> Result<()> {
        let size = h.size;
        let root = self.archive_root();
        let label = h.path.join("/");
        let name = h.path.last().cloned().unwrap_or_default();
        let node = node_of(&h, &name);
        let is_base = self.archive == Archive::Base;
        let first = h.path[0].as_str();
        let mut sink = None;
        if is_base && first == "pg_wal" && h.path.len() == 1 {
            // Opened when its first segment arrives, or at the end.
            self.pg_wal = Some(node);
        } else if is_base && first == "pg_wal" && h.path.len() == 2 && h.kind == EntryType::File {
            if !self.wal_open {
                self.open_dir(&root, 1, &label)?;
                let wal_node = self
                    .pg_wal
                    .take()
                    .unwrap_or_else(|| dir_node("pg_wal", 0o700, None));
                self.enter(wal_node)?;
                self.wal_open = true;
            }
            if is_wal_file_name(&name) {
                self.end.wal_files.push(name.clone());
            }
            sink = Some(self.stream_leaf(node)?);
        } else if is_base && (first == "global" || first == "pg_wal") {
            let mut content = None;
            if h.kind == EntryType::File {
                self.spill_file()?;
                content = Some((self.spill_len, size));
                sink = Some(Sink::Spill);
            }
            self.deferred.push(Deferred {
                path: h.path.clone(),
                node,
                content,
            });
        } else {
            if self.wal_open {
                return Err(Error::source_failed(format!(
                    "the base backup stream sent `{label}` after the WAL; this server's stream order is not supported"
                )));
            }
            let mut dir = root.clone();
            dir.extend(h.path[..h.path.len() - 1].iter().cloned());
            self.open_dir(&dir, root.len(), &label)?;
            match h.kind {
                EntryType::Dir => self.enter(node)?,
                EntryType::Symlink => self.send(Msg::Item(Item::Leaf {
                    node,
                    content: None,
                    on_error: OnReadError::Fail,
                }))?,
                EntryType::File => {
                    let captured = is_base
                        && h.path.len() == 1
                        && (name == "backup_label" || name == "tablespace_map");
                    sink = Some(if captured {
                        Sink::Memory(Vec::with_capacity(size as usize))
                    } else {
                        self.stream_leaf(node)?
                    });
                }
            }
        }
        if h.kind == EntryType::File {
            self.sink = sink;
            self.member = Some(h);
            self.tar = TarState::Content {
                left: size,
                padding: self.member.as_ref().map_or(0, Header::padding),
            };
            if size == 0 {
                self.end_member()?;
                self.tar = TarState::Header {
                    block: Vec::with_capacity(tar::BLOCK),
                };
            }
        }
        Ok(())
    }

    fn spill_file(&mut self) -> Result<Arc<File>> {
        if self.spill.is_none() {
            self.spill = Some(Arc::new(tempfile::tempfile().map_err(|e| {
                Error::io("creating a temporary file for the base backup", e)
            })?));
        }
        self.spill
            .clone()
            .ok_or_else(|| Error::source_failed("no temporary file"))
    }

    /// Emits a file leaf whose content comes through a channel.
    fn stream_leaf(&mut self, node: Node) -> Result<Sink> {
        let (tx, rx) = std::sync::mpsc::sync_channel(PIECES_AHEAD);
        let open = move || {
            Ok(Box::new(ChannelReader {
                rx,
                current: Bytes::new(),
                done: false,
            }) as Box<dyn Read + Send>)
        };
        self.send(Msg::Item(Item::Leaf {
            node,
            content: Some(Content::Blocking(Box::new(open))),
            on_error: OnReadError::Fail,
        }))?;
        Ok(Sink::Stream(Some(tx), Vec::new()))
    }

    fn write_member(&mut self, chunk: &[u8]) -> Result<()> {
        if chunk.is_empty() {
            return Ok(());
        }
        match &mut self.sink {
            Some(Sink::Stream(slot, buf)) => {
                if let Some(tx) = slot {
                    if buf.capacity() == 0 {
                        buf.reserve_exact(PIECE_SIZE);
                    }
                    buf.extend_from_slice(chunk);
                    // Waits for the reader; a reader that is gone (the file
                    // was taken from the parent) gets nothing more.
                    if buf.len() >= PIECE_SIZE
                        && tx
                            .send(Piece::Data(Bytes::from(std::mem::take(buf))))
                            .is_err()
                    {
                        *slot = None;
                    }
                }
                Ok(())
            }
            Some(Sink::Memory(buf)) => {
                if buf.len() + chunk.len() > 16 << 20 {
                    return Err(Error::source_failed(
                        "the base backup's backup_label or tablespace_map is over 16 MiB",
                    ));
                }
                buf.extend_from_slice(chunk);
                Ok(())
            }
            Some(Sink::Spill) => {
                let spill = self.spill_file()?;
                (&*spill)
                    .write_all(chunk)
                    .map_err(|e| Error::io("writing a temporary file for the base backup", e))?;
                self.spill_len += chunk.len() as u64;
                Ok(())
            }
            None => Err(Error::source_failed(
                "file content without a file in the base backup stream",
            )),
        }
    }

    fn end_member(&mut self) -> Result<()> {
        let member = self.member.take();
        match self.sink.take() {
            Some(Sink::Stream(Some(tx), buf)) => {
                if !buf.is_empty() {
                    let _ = tx.send(Piece::Data(Bytes::from(buf)));
                }
                let _ = tx.send(Piece::End);
            }
            Some(Sink::Memory(buf)) => {
                let Some(h) = member else { return Ok(()) };
                let name = h.path.last().cloned().unwrap_or_default();
                if name == "backup_label" {
                    self.end.backup_label = String::from_utf8_lossy(&buf).into_owned();
                }
                let node = node_of(&h, &name);
                let data = Bytes::from(buf);
                self.send(Msg::Item(Item::Leaf {
                    node,
                    content: Some(Content::Blocking(Box::new(move || {
                        Ok(Box::new(std::io::Cursor::new(data)) as Box<dyn Read + Send>)
                    }))),
                    on_error: OnReadError::Fail,
                }))?;
            }
            // Spilled content is emitted at the end of the data directory.
            _ => {}
        }
        Ok(())
    }

    /// Tells the reader of the current file that the stream failed.
    fn fail_member(&mut self, message: &str) {
        if let Some(Sink::Stream(Some(tx), _)) = self.sink.take() {
            let _ = tx.send(Piece::Failed(message.to_owned()));
        }
    }
}

fn dir_node(name: &str, mode: u32, mtime: Option<i64>) -> Node {
    let mut n = Node::new(name, NodeKind::Dir);
    n.mode = Some(mode);
    n.mtime_ns = mtime;
    n
}

/// The tree node of a tar member.
fn node_of(h: &Header, name: &str) -> Node {
    let kind = match h.kind {
        EntryType::File => NodeKind::File,
        EntryType::Dir => NodeKind::Dir,
        EntryType::Symlink => NodeKind::Symlink,
    };
    let mut n = Node::new(name, kind);
    n.mode = Some(h.mode & 0o7777);
    n.uid = Some(h.uid);
    n.gid = Some(h.gid);
    n.mtime_ns = h.mtime.checked_mul(1_000_000_000);
    n.size = h.size;
    n.link_target = h.link_target.as_deref().map(Into::into);
    n
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::postgres::physical::tar::write_header;

    fn header(path: &str, kind: EntryType, size: u64) -> Header {
        Header {
            path: path.split('/').map(str::to_owned).collect(),
            kind,
            mode: if kind == EntryType::File {
                0o600
            } else {
                0o700
            },
            uid: 1,
            gid: 1,
            size,
            mtime: 1_700_000_000,
            link_target: None,
        }
    }

    /// A tar member as the server sends it.
    fn member(path: &str, kind: EntryType, content: &[u8]) -> Vec<u8> {
        let h = header(path, kind, content.len() as u64);
        let mut out = write_header(&h).to_vec();
        out.extend_from_slice(content);
        out.resize(out.len() + h.padding() as usize, 0);
        out
    }

    fn copy_data(kind: u8, body: &[u8]) -> Vec<u8> {
        let mut m = vec![kind];
        m.extend_from_slice(body);
        m
    }

    /// Runs `messages` through a stream and returns the walk as text
    /// (`+dir`, `-`, `name=content`) or the error.
    fn walk(messages: Vec<(u8, Vec<u8>)>) -> std::result::Result<Vec<String>, String> {
        let (tx, mut rx) = tokio::sync::mpsc::channel(1024);
        let mut s = Stream::new(
            tx,
            vec![TablespaceMeta {
                oid: 16384,
                location: "/srv/ts".into(),
            }],
        );
        for (tag, body) in messages {
            match s.message(tag, &body) {
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            }
        }
        drop(s);
        let mut out = Vec::new();
        while let Some(msg) = rx.blocking_recv() {
            let Msg::Item(item) = msg else { continue };
            out.push(match item {
                Item::Enter(n) => format!("+{}", n.name),
                Item::Leave => "-".to_owned(),
                Item::Leaf { node, content, .. } => {
                    let mut text = String::new();
                    if let Some(Content::Blocking(open)) = content {
                        open().unwrap().read_to_string(&mut text).unwrap();
                    }
                    format!("{}={text}", node.name)
                }
                Item::Warning(w) | Item::Note(w) => w,
            });
        }
        Ok(out)
    }

    fn base_archive(extra: &[(&str, EntryType, &[u8])]) -> Vec<(u8, Vec<u8>)> {
        let mut tar = Vec::new();
        tar.extend(member("backup_label", EntryType::File, b"LABEL: x\n"));
        tar.extend(member("base", EntryType::Dir, b""));
        tar.extend(member("base/1", EntryType::Dir, b""));
        tar.extend(member("base/1/1259", EntryType::File, b"rel"));
        tar.extend(member("global", EntryType::Dir, b""));
        tar.extend(member("global/1260", EntryType::File, b"roles"));
        tar.extend(member("pg_wal", EntryType::Dir, b""));
        tar.extend(member("./pg_wal/archive_status", EntryType::Dir, b""));
        tar.extend(member("global/pg_control", EntryType::File, b"control"));
        tar.extend(member(
            "pg_wal/000000010000000000000002",
            EntryType::File,
            b"wal",
        ));
        tar.extend(member(
            "pg_wal/archive_status/000000010000000000000002.done",
            EntryType::File,
            b"",
        ));
        for (path, kind, content) in extra {
            tar.extend(member(path, *kind, content));
        }
        tar.extend([0u8; 1024]);
        let mut msgs = vec![(b'd', copy_data(b'n', b"base.tar\0\0"))];
        // Cut across member boundaries, as messages are.
        for piece in tar.chunks(700) {
            msgs.push((b'd', copy_data(b'd', piece)));
        }
        msgs
    }

    #[test]
    fn the_stream_becomes_a_depth_first_walk() {
        let mut msgs = vec![(b'd', copy_data(b'n', b"16384.tar\0/srv/ts\0"))];
        let mut ts = member("PG_15_1", EntryType::Dir, b"");
        ts.extend(member("PG_15_1/5", EntryType::Dir, b""));
        ts.extend(member("PG_15_1/5/16390", EntryType::File, b"ts-data"));
        ts.extend([0u8; 1024]);
        msgs.push((b'd', copy_data(b'd', &ts)));
        msgs.extend(base_archive(&[]));
        msgs.push((b'd', copy_data(b'm', b"")));
        msgs.push((b'd', copy_data(b'd', b"{manifest}")));
        msgs.push((b'c', Vec::new()));
        let got = walk(msgs).unwrap();
        assert_eq!(
            got.join(" "),
            "+tablespaces +16384 +PG_15_1 +5 16390=ts-data - - - - \
             +data backup_label=LABEL: x\n +base +1 1259=rel - - \
             +pg_wal 000000010000000000000002=wal +archive_status 000000010000000000000002.done= - - \
             +global 1260=roles pg_control=control - - backup_manifest={manifest}"
        );
    }

    #[test]
    fn a_member_after_its_directory_is_an_error() {
        // A relation file after the WAL: not the server's order.
        let msgs = base_archive(&[("base/1/9999", EntryType::File, b"late")]);
        let err = walk(msgs).unwrap_err();
        assert!(
            err.contains("base/1/9999") && err.contains("not supported"),
            "{err}"
        );
        // A directory left in the walk does not come back.
        let mut tar = member("base", EntryType::Dir, b"");
        tar.extend(member("base/1", EntryType::Dir, b""));
        tar.extend(member("other", EntryType::Dir, b""));
        tar.extend(member("base/1/5", EntryType::File, b"x"));
        let msgs = vec![
            (b'd', copy_data(b'n', b"base.tar\0\0")),
            (b'd', copy_data(b'd', &tar)),
        ];
        let err = walk(msgs).unwrap_err();
        assert!(err.contains("base/1/5"), "{err}");
    }
}
