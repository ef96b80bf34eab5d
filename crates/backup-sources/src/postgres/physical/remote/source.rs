//! A remote base backup as a [`Source`]: `BASE_BACKUP` started on a
//! replication connection that a thread of its own then reads (see
//! `stream`), the walk's items taken from that thread, the parent-reuse
//! rule, and the metadata from the server's manifest and label.

use async_trait::async_trait;
use backup_core::reader::SnapshotReader;
use backup_core::snapshot::SourceDescriptor;
use backup_core::source::{Item, Source};
use backup_core::tree::{Node, NodeKind};
use backup_core::{Error, Result};
use chrono::Utc;

use super::super::manifest::Manifest;
use super::super::meta::{BackupLabel, PhysicalMeta, MODE, REUSE_MARGIN_NS};
use super::errors::{connect_error, Purpose};
use super::start::{start_backup, Begin};
use super::stream::{Msg, Stream, StreamEnd};
use crate::postgres::conn::ConnInfo;
use crate::postgres::wire::WireConn;
use crate::PostgresOptions;

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
