//! Remote base backups: `BASE_BACKUP` over a replication connection, the
//! tar stream taken apart as it arrives.
//!
//! One thread owns the connection. It reads the server's `CopyData`
//! messages, cuts the tar archives into members and hands the walk its
//! items through a channel: directories as they come, files as leaves
//! whose content is fed to the reader the archiver starts for them
//! (bounded, so memory stays small whatever the file size). The stream is
//! a depth-first walk of each tablespace, except that PostgreSQL sends
//! `global/pg_control` after everything else and the WAL at the very end;
//! so the subtree of `global` (small: shared catalogs) is kept aside, in a
//! temporary file, and emitted at the end of the data directory, and the
//! `pg_wal` directory is opened when its first segment arrives. A member
//! that arrives after its directory was closed in any other way is an
//! error, not a silent misplacement.

use std::fmt::Write as _;
use std::fs::File;
use std::io::{Read, Write as _};
use std::os::unix::fs::FileExt;
use std::sync::mpsc::{Receiver, SyncSender};
use std::sync::Arc;

use async_trait::async_trait;
use backup_core::reader::SnapshotReader;
use backup_core::snapshot::SourceDescriptor;
use backup_core::source::{Content, Item, OnReadError, Source};
use backup_core::tree::{Node, NodeKind};
use backup_core::{Error, Result};
use bytes::Bytes;
use chrono::{DateTime, Utc};

use super::lsn::{is_wal_file_name, parse_setting_size, Lsn};
use super::manifest::Manifest;
use super::meta::{
    new_label, BackupLabel, PhysicalMeta, TablespaceMeta, DATA_DIR, MANIFEST_FILE, MODE,
    REUSE_MARGIN_NS, TABLESPACES_DIR,
};
use super::tar::{self, EntryType, Header};
use crate::postgres::conn::ConnInfo;
use crate::postgres::wire::{data_row, db_error, WireConn, WireError};
use crate::{Checkpoint, PostgresOptions};

/// What the server said when the backup started.
#[derive(Debug, Clone)]
pub(crate) struct Begin {
    pub(crate) system_identifier: String,
    pub(crate) server_version: String,
    pub(crate) server_version_num: u32,
    pub(crate) data_checksums: bool,
    pub(crate) wal_log_hints: bool,
    pub(crate) wal_segment_size: u64,
    pub(crate) block_size: u32,
    pub(crate) start_lsn: Lsn,
    pub(crate) timeline: u32,
    pub(crate) tablespaces: Vec<TablespaceMeta>,
    pub(crate) label: String,
    pub(crate) started_at: DateTime<Utc>,
}

/// What the stream left for the manifest once it ended.
#[derive(Debug, Default)]
struct StreamEnd {
    stop_lsn: Lsn,
    stop_timeline: u32,
    backup_label: String,
    manifest: Vec<u8>,
    wal_files: Vec<String>,
}

/// Messages from the stream thread to the walk.
#[allow(clippy::large_enum_variant)] // Items are the common case; boxing each costs more.
enum Msg {
    Item(Item),
    Fail(Error),
    Done(Box<StreamEnd>),
}

/// A remote base backup in progress.
pub(crate) struct RemoteSource {
    url: String,
    rx: tokio::sync::mpsc::Receiver<Msg>,
    begin: Begin,
    end: Option<Box<StreamEnd>>,
    /// Files modified before this time (ns) may be taken from the parent
    /// unread.
    reuse_before_ns: Option<i64>,
    system_identifier_of_parent: Option<String>,
}

impl std::fmt::Debug for RemoteSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteSource")
            .field("url", &self.url)
            .field("start_lsn", &self.begin.start_lsn.to_string())
            .finish_non_exhaustive()
    }
}

impl RemoteSource {
    /// Connects for replication, starts `BASE_BACKUP` and waits for its
    /// start position (the checkpoint is done then).
    pub(crate) async fn open(info: &ConnInfo, opts: &PostgresOptions) -> Result<Self> {
        let mut wire = info.wire().map_err(Error::source_failed)?;
        wire.replication = true;
        let user = info.user().to_owned();
        let opts = opts.clone();
        let (conn, begin) = tokio::task::spawn_blocking(move || -> Result<(WireConn, Begin)> {
            let mut conn = WireConn::connect(&wire)
                .map_err(|e| connect_error(&e, &user, Purpose::BaseBackup))?;
            let begin = start_backup(&mut conn, &opts, &user)?;
            Ok((conn, begin))
        })
        .await
        .map_err(|e| Error::source_caused("starting the base backup", e))??;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        let tablespaces = begin.tablespaces.clone();
        std::thread::Builder::new()
            .name("pg-base-backup".to_owned())
            .spawn(move || {
                let result = Stream::new(tx.clone(), tablespaces).run(conn);
                let msg = match result {
                    Ok(end) => Msg::Done(Box::new(end)),
                    Err(e) => Msg::Fail(e),
                };
                let _ = tx.blocking_send(msg);
            })
            .map_err(|e| Error::io("starting the base backup reader", e))?;
        Ok(RemoteSource {
            url: info.physical_redacted(),
            rx,
            begin,
            end: None,
            reuse_before_ns: None,
            system_identifier_of_parent: None,
        })
    }
}

#[async_trait]
impl Source for RemoteSource {
    fn descriptor(&self) -> SourceDescriptor {
        SourceDescriptor {
            kind: "postgres".to_owned(),
            url: self.url.clone(),
        }
    }

    async fn set_parent(&mut self, parent: &SnapshotReader) -> Result<()> {
        if let Some(Ok(meta)) = PhysicalMeta::of(&parent.snapshot().metadata) {
            if meta.system_identifier == self.begin.system_identifier {
                self.reuse_before_ns = meta
                    .started_at
                    .timestamp_nanos_opt()
                    .map(|t| t - REUSE_MARGIN_NS);
            }
            self.system_identifier_of_parent = Some(meta.system_identifier);
        }
        Ok(())
    }

    /// Relation files and WAL are changed in place, page by page, and
    /// never shift: fixed pieces deduplicate them as well as content-defined
    /// cuts, without a rolling hash over every byte.
    fn chunking(&self) -> backup_core::chunker::Chunking {
        backup_core::chunker::Chunking::Fixed
    }

    fn unchanged(&self, new: &Node, old: &Node) -> bool {
        reusable(self.reuse_before_ns, new, old)
    }

    async fn next(&mut self) -> Result<Option<Item>> {
        if self.end.is_some() {
            return Ok(None);
        }
        match self.rx.recv().await {
            Some(Msg::Item(item)) => Ok(Some(item)),
            Some(Msg::Fail(e)) => Err(e),
            Some(Msg::Done(end)) => {
                self.end = Some(end);
                Ok(None)
            }
            None => Err(Error::source_failed(
                "the base backup stream stopped without an end",
            )),
        }
    }

    async fn finish(&mut self) -> Result<serde_json::Value> {
        let end = self
            .end
            .take()
            .ok_or_else(|| Error::source_failed("the base backup did not end"))?;
        let label = BackupLabel::parse(&end.backup_label);
        let manifest = Manifest::parse(&end.manifest).map_err(|e| {
            Error::source_failed(format!("the server's backup manifest is unusable: {e}"))
        })?;
        let b = &self.begin;
        let meta = PhysicalMeta {
            mode: MODE.to_owned(),
            method: "remote".to_owned(),
            server_version: b.server_version.clone(),
            server_version_num: b.server_version_num,
            system_identifier: b.system_identifier.clone(),
            timeline: b.timeline,
            start_lsn: b.start_lsn.to_string(),
            checkpoint_lsn: label
                .checkpoint_lsn
                .map(|l| l.to_string())
                .unwrap_or_default(),
            stop_lsn: end.stop_lsn.to_string(),
            stop_timeline: end.stop_timeline,
            started_at: b.started_at,
            stopped_at: Utc::now(),
            label: b.label.clone(),
            data_checksums: b.data_checksums,
            checksums_verified: b.data_checksums,
            hints_logged: b.data_checksums || b.wal_log_hints,
            wal_segment_size: b.wal_segment_size,
            block_size: b.block_size,
            tablespaces: b.tablespaces.clone(),
            wal_files: end.wal_files.clone(),
            manifest_files: manifest.files.len() as u64,
            manifest_bytes: manifest.bytes(),
            files_read: 0,
            pages_verified: 0,
            delta_files: 0,
            delta_pages: 0,
        };
        serde_json::to_value(&meta).map_err(|e| Error::source_caused("encoding metadata", e))
    }
}

/// The parent-reuse rule of physical backups: a file is taken from the
/// parent unread when its size and modification time (and, where known,
/// change time and inode) are the parent's, and it was last modified
/// [`REUSE_MARGIN_NS`] before the parent backup started (a later write may
/// have fallen within the clock's granularity of the parent's read).
pub(crate) fn reusable(before_ns: Option<i64>, new: &Node, old: &Node) -> bool {
    let Some(before) = before_ns else {
        return false;
    };
    old.kind == NodeKind::File
        && new.kind == NodeKind::File
        && new.size == old.size
        && new.mtime_ns.is_some_and(|m| m < before)
        && new.mtime_ns == old.mtime_ns
        && new.ctime_ns == old.ctime_ns
        && new.inode == old.inode
}

/// A message of `BASE_BACKUP`'s start.
enum Step {
    Row(Vec<Option<String>>),
    SetEnd,
    Copy,
    Other,
}

/// Reads the server's identity and settings and starts `BASE_BACKUP`;
/// returns once the start position and tablespaces are known.
fn start_backup(conn: &mut WireConn, opts: &PostgresOptions, user: &str) -> Result<Begin> {
    let q = |conn: &mut WireConn, sql: &str| -> Result<Vec<Vec<Option<String>>>> {
        conn.query_rows(sql)
            .map_err(|e| backup_error(&e, &format!("running {sql}")))
    };
    let ident = q(conn, "IDENTIFY_SYSTEM")?;
    let row = ident
        .first()
        .ok_or_else(|| Error::source_failed("IDENTIFY_SYSTEM returned nothing"))?;
    let system_identifier = row.first().cloned().flatten().unwrap_or_default();
    let show = |conn: &mut WireConn, name: &str| -> Result<String> {
        Ok(q(conn, &format!("SHOW {name}"))?
            .first()
            .and_then(|r| r.first().cloned().flatten())
            .unwrap_or_default())
    };
    let server_version = show(conn, "server_version")?;
    let server_version_num: u32 = show(conn, "server_version_num")?.parse().unwrap_or(0);
    if server_version_num < 150_000 {
        return Err(Error::source_failed(format!(
            "PostgreSQL {server_version} cannot be backed up physically by this version of backup: physical backups need PostgreSQL 15 or newer (use the logical mode, the default, for older servers)"
        )));
    }
    let data_checksums = show(conn, "data_checksums")? == "on";
    let wal_log_hints = show(conn, "wal_log_hints")? == "on";
    let wal_segment_size = parse_setting_size(&show(conn, "wal_segment_size")?).unwrap_or(16 << 20);
    let block_size: u32 = show(conn, "block_size")?.parse().unwrap_or(8192);

    // A temporary slot holds the WAL from here on until the connection
    // ends, so that a checkpoint during a long backup cannot remove WAL
    // the backup still has to send. Without a free slot the backup goes
    // on unprotected, as pg_basebackup -X fetch does.
    let slot = format!("backup_{}_{:x}", std::process::id(), rand_u32());
    if let Err(e) = conn.query_rows(&format!(
        "CREATE_REPLICATION_SLOT \"{slot}\" TEMPORARY PHYSICAL (RESERVE_WAL)"
    )) {
        let (code, message) = match &e {
            WireError::Db { code, message, .. } => (code.as_str(), message.clone()),
            other @ WireError::Io(_) => ("", other.to_string()),
        };
        tracing::warn!("{}", slot_refused(code, &message, user));
    }

    let label = new_label();
    let mut cmd = format!(
        "BASE_BACKUP (LABEL '{}', CHECKPOINT '{}', WAL true, WAIT false, MANIFEST 'yes', MANIFEST_CHECKSUMS 'CRC32C', TABLESPACE_MAP true",
        label.replace('\'', "''"),
        match opts.checkpoint {
            Checkpoint::Fast => "fast",
            Checkpoint::Spread => "spread",
        }
    );
    if let Some(rate) = opts.max_rate {
        // kB per second, within what the server accepts.
        let kb = (rate / 1024).clamp(32, 1_048_576);
        let _ = write!(cmd, ", MAX_RATE {kb}");
    }
    cmd.push(')');
    conn.send_query(&cmd)
        .map_err(|e| backup_error(&e, "starting the base backup"))?;
    let started_at = Utc::now();
    // Two result sets (start position; tablespaces), then the COPY.
    let mut sets: Vec<Vec<Vec<Option<String>>>> = vec![Vec::new()];
    loop {
        let step = conn
            .next_message(|tag, body| match tag {
                b'D' => data_row(body).map(Step::Row),
                b'C' => Ok(Step::SetEnd),
                b'H' => Ok(Step::Copy),
                b'E' => Err(db_error(body)),
                _ => Ok(Step::Other),
            })
            .map_err(|e| io_error(&e, "starting the base backup"))?;
        match step {
            Ok(Step::Row(row)) => {
                if let Some(set) = sets.last_mut() {
                    set.push(row);
                }
            }
            Ok(Step::SetEnd) => sets.push(Vec::new()),
            Ok(Step::Copy) => break,
            Ok(Step::Other) => {}
            Err(e) => {
                drain_to_ready(conn);
                return Err(backup_error(&e, "starting the base backup"));
            }
        }
    }
    let start = sets
        .first()
        .and_then(|s| s.first())
        .ok_or_else(|| Error::source_failed("BASE_BACKUP sent no start position"))?;
    let start_lsn = Lsn::parse(start.first().cloned().flatten().as_deref().unwrap_or(""))?;
    let timeline: u32 = start
        .get(1)
        .cloned()
        .flatten()
        .and_then(|t| t.parse().ok())
        .unwrap_or(1);
    let mut tablespaces = Vec::new();
    for row in sets.get(1).map(Vec::as_slice).unwrap_or_default() {
        if let (Some(Some(oid)), Some(Some(path))) = (row.first(), row.get(1)) {
            tablespaces.push(TablespaceMeta {
                oid: oid
                    .parse()
                    .map_err(|_| Error::source_failed(format!("tablespace OID `{oid}`")))?,
                location: path.clone(),
            });
        }
    }
    Ok(Begin {
        system_identifier,
        server_version,
        server_version_num,
        data_checksums,
        wal_log_hints,
        wal_segment_size,
        block_size,
        start_lsn,
        timeline,
        tablespaces,
        label,
        started_at,
    })
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    backup_core::util::fill_random(&mut b);
    u32::from_le_bytes(b)
}

/// Reads to the end of a failed command.
fn drain_to_ready(conn: &mut WireConn) {
    while let Ok(tag) = conn.next_message(|tag, _| tag) {
        if tag == b'Z' {
            break;
        }
    }
}

/// What a replication connection is for, in messages.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Purpose {
    /// A base backup (`BASE_BACKUP`).
    BaseBackup,
    /// Streaming WAL (`backup wal receive`, backupd's receiver).
    StreamWal,
}

impl Purpose {
    fn noun(self) -> &'static str {
        match self {
            Purpose::BaseBackup => "a base backup",
            Purpose::StreamWal => "streaming WAL",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Purpose::BaseBackup => "start a base backup",
            Purpose::StreamWal => "stream WAL from a replication slot",
        }
    }
}

/// Why a replication slot could not be created, and what to do, for the
/// warning of a backup that goes on without one (`code` and `message` of
/// the server's error).
pub(crate) fn slot_refused(code: &str, message: &str, user: &str) -> String {
    let what = match code {
        "53400" => "free a slot or raise max_replication_slots",
        "42501" => "the role needs the REPLICATION attribute (ALTER ROLE ... REPLICATION) or superuser to create one",
        "55000" => "set wal_level = replica (or logical) and max_replication_slots above 0, then restart the server",
        _ => "see the server's message",
    };
    format!(
        "Could not create a temporary replication slot as `{user}` ({message}): WAL the base backup needs is not held back for it; {what}."
    )
}

/// An error of the replication connection's login, explained.
pub(crate) fn connect_error(e: &WireError, user: &str, purpose: Purpose) -> Error {
    let WireError::Db { code, message, .. } = e else {
        return Error::source_with(
            format!("connecting to the server for {}", purpose.noun()),
            clone_wire(e),
            true,
        );
    };
    let explained = match code.as_str() {
        "28000" if message.contains("replication") => {
            let host = quoted_after(message, "host ").unwrap_or("ADDRESS".to_owned());
            Some(format!(
                "the server refuses replication connections from this host ({message}): add a line such as `host replication {user} {host}/32 scram-sha-256` to pg_hba.conf and reload the server"
            ))
        }
        "42501" => Some(format!(
            "the role `{user}` may not {} ({message}): grant it the REPLICATION attribute (ALTER ROLE \"{user}\" REPLICATION) or connect as a superuser",
            purpose.verb()
        )),
        "53300" if message.contains("max_wal_senders") => Some(if message.contains("currently 0") {
            format!("the server accepts no replication connections ({message}): set wal_level = replica and max_wal_senders above 0, and restart it")
        } else {
            format!("every WAL sender of the server is in use ({message}): raise max_wal_senders (a restart is needed) or wait for another backup or standby to disconnect")
        }),
        "28P01" => Some(format!(
            "the server refused the password of `{user}` ({message})"
        )),
        _ => None,
    };
    match explained {
        Some(m) if code == "28P01" || code == "42501" => Error::PermissionDenied(m),
        Some(m) => Error::source_explained(m, clone_wire(e), e.retryable() && code != "28000"),
        None => Error::source_with(
            format!("connecting to the server for {}", purpose.noun()),
            clone_wire(e),
            e.retryable(),
        ),
    }
}

/// The text in double quotes after `key` in a server message.
fn quoted_after(message: &str, key: &str) -> Option<String> {
    let rest = &message[message.find(key)? + key.len()..];
    let rest = rest.strip_prefix('"')?;
    Some(rest[..rest.find('"')?].to_owned())
}

pub(crate) fn clone_wire(e: &WireError) -> WireError {
    match e {
        WireError::Db {
            code,
            message,
            detail,
            hint,
        } => WireError::Db {
            code: code.clone(),
            message: message.clone(),
            detail: detail.clone(),
            hint: hint.clone(),
        },
        WireError::Io(m) => WireError::Io(m.clone()),
    }
}

/// An error of the server during the base backup, explained.
fn backup_error(e: &WireError, what: &str) -> Error {
    if let WireError::Db { code, message, .. } = e {
        let explained = match code.as_str() {
            "55000" if message.contains("WAL level") => Some(format!(
                "the server cannot take an online base backup ({message}): set wal_level = replica (or logical) and restart it"
            )),
            "58P01" | "58P02" if message.contains("WAL segment") => Some(format!(
                "the server removed WAL the base backup needs before it was sent ({message}): raise wal_keep_size or max_slot_wal_keep_size, or allow the backup a replication slot (max_replication_slots)"
            )),
            "42501" => Some(format!("the role may not take a base backup ({message}): grant it REPLICATION")),
            _ => None,
        };
        if let Some(m) = explained {
            return Error::source_explained(m, clone_wire(e), false);
        }
    }
    Error::source_with(what, clone_wire(e), e.retryable())
}

fn io_error(e: &std::io::Error, what: &str) -> Error {
    Error::source_with(
        format!("{what}: the connection failed"),
        std::io::Error::new(e.kind(), e.to_string()),
        true,
    )
}

/// A piece of a file's content on its way to the reader.
enum Piece {
    Data(Bytes),
    End,
    Failed(String),
}

/// Reads a streamed file from its channel.
struct ChannelReader {
    rx: Receiver<Piece>,
    current: Bytes,
    done: bool,
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            if self.done {
                return Ok(0);
            }
            match self.rx.recv() {
                Ok(Piece::Data(d)) => self.current = d,
                Ok(Piece::End) => self.done = true,
                Ok(Piece::Failed(m)) => return Err(std::io::Error::other(m)),
                Err(_) => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "the base backup stream ended inside this file",
                    ))
                }
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current[..n]);
        let _ = self.current.split_to(n);
        Ok(n)
    }
}

/// Reads a range of the spill file.
struct SpillReader {
    file: Arc<File>,
    pos: u64,
    end: u64,
}

impl Read for SpillReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = (self.end - self.pos) as usize;
        let n = buf.len().min(left);
        if n == 0 {
            return Ok(0);
        }
        let got = self.file.read_at(&mut buf[..n], self.pos)?;
        if got == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "temporary file shorter than written",
            ));
        }
        self.pos += got as u64;
        Ok(got)
    }
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
struct Stream {
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
    fn new(tx: tokio::sync::mpsc::Sender<Msg>, tablespaces: Vec<TablespaceMeta>) -> Self {
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
    fn run(mut self, mut conn: WireConn) -> Result<StreamEnd> {
        loop {
            let step = conn
                .next_message(|tag, body| self.message(tag, body))
                .map_err(|e| io_error(&e, "reading the base backup"))??;
            if step {
                break;
            }
        }
        // The end position, then the command's completion.
        let mut rows = Vec::new();
        loop {
            let r = conn
                .next_message(|tag, body| match tag {
                    b'D' => data_row(body).map(Some).map_err(|e| e.to_string()),
                    b'E' => Err(db_error(body).to_string()),
                    b'Z' => Ok(None),
                    _ => Ok(Some(Vec::new())),
                })
                .map_err(|e| io_error(&e, "reading the end of the base backup"))?;
            match r {
                Ok(Some(row)) if !row.is_empty() => rows.push(row),
                Ok(Some(_)) => {}
                Ok(None) => break,
                Err(m) => {
                    return Err(Error::source_failed(format!(
                        "the base backup failed at its end: {m}{}",
                        self.warning_text()
                    )))
                }
            }
        }
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
