//! The stop of a local base backup: `pg_backup_stop`, the label and
//! tablespace map it returned, the WAL from the start to the stop read
//! from `pg_wal` (marked archived), and the backup manifest written from
//! every file's checksum.

use std::fs::{self, File};
use std::io::Read;
use std::path::PathBuf;
use std::sync::{Arc, PoisonError};

use backup_core::source::{Content, Item, OnReadError};
use backup_core::tree::{FsName, Node, NodeKind};
use backup_core::{Error, Result};
use chrono::Utc;

use super::super::lsn::{wal_file_name, Lsn};
use super::super::manifest::{crc32c_of, ManifestWriter, WalRange};
use super::super::meta::{BackupLabel, MANIFEST_FILE};
use super::reader::{FileRecord, ReadRules, Shared};
use super::state::{LocalSource, Stop};
use super::walk::plain_dir;
use crate::localfs::node_from_meta;
use crate::postgres::conn::{query_error, Side};

impl LocalSource {
    /// Stops the backup and queues the label, the tablespace map and the
    /// WAL.
    pub(super) async fn stop_backup(&mut self) -> Result<()> {
        let c = self
            .coordinator
            .as_ref()
            .ok_or_else(|| Error::source_failed("the backup's connection is gone"))?;
        let row = c
            .query_one(
                "SELECT lsn::text, labelfile, spcmapfile, (SELECT timeline_id FROM pg_control_checkpoint()) FROM pg_backup_stop(false)",
                &[],
            )
            .await
            .map_err(|e| query_error(Side::Source, "stopping the backup (pg_backup_stop)", e))?;
        let lsn = Lsn::parse(&row.get::<_, String>(0))?;
        let labelfile: String = row.get(1);
        let spcmap: Option<String> = row.get(2);
        let timeline = u32::try_from(row.get::<_, i32>(3)).unwrap_or(self.timeline);
        let seg = self.cluster.wal_segment_size;
        let first = self.start_lsn.segment(seg);
        // The segment holding the byte before the stop position.
        let last = Lsn(lsn.0.saturating_sub(1)).segment(seg).max(first);
        let wal_files: Vec<String> = (first..=last)
            .map(|s| wal_file_name(timeline, s, seg))
            .collect();
        let now = Utc::now().timestamp();
        let checkpoint = BackupLabel::parse(&labelfile).checkpoint_lsn;
        self.queue.push_back(memory_leaf(
            &self.shared,
            "backup_label",
            b"backup_label",
            labelfile.into_bytes(),
            now,
        ));
        self.queue.push_back(memory_leaf(
            &self.shared,
            "tablespace_map",
            b"tablespace_map",
            spcmap.unwrap_or_default().into_bytes(),
            now,
        ));
        let wal_dir = self.pgdata.join("pg_wal");
        let meta = fs::metadata(&wal_dir)
            .map_err(|e| Error::source_caused(format!("reading {}", wal_dir.display()), e))?;
        let mut wal_node = node_from_meta(FsName::from("pg_wal"), NodeKind::Dir, &meta);
        wal_node.ctime_ns = None;
        self.queue.push_back(Item::Enter(wal_node));
        let mut history = Vec::new();
        for e in fs::read_dir(&wal_dir)
            .map_err(|e| Error::source_caused(format!("listing {}", wal_dir.display()), e))?
            .flatten()
        {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with(".history") {
                history.push(name);
            }
        }
        history.sort();
        let mut names: Vec<(String, bool)> = wal_files.iter().map(|n| (n.clone(), false)).collect();
        names.extend(history.iter().map(|n| (n.clone(), true)));
        names.sort();
        for (name, in_manifest) in &names {
            let path = wal_dir.join(name);
            let meta = fs::metadata(&path).map_err(|e| {
                Error::source_caused(
                    format!(
                        "reading {} (the WAL the backup needs was removed: raise wal_keep_size or allow the backup a replication slot)",
                        path.display()
                    ),
                    e,
                )
            })?;
            if !in_manifest && meta.len() != seg {
                return Err(Error::source_failed(format!(
                    "{} has {} bytes, not a whole WAL segment of {seg}",
                    path.display(),
                    meta.len()
                )));
            }
            let mpath = format!("pg_wal/{name}").into_bytes();
            let mut leaf = self.file_leaf(
                FsName::from(name.as_str()),
                &meta,
                path,
                mpath,
                ReadRules {
                    checksums: None,
                    may_shrink: false,
                },
            );
            if let Item::Leaf { node, .. } = &mut leaf {
                // WAL is never taken from a parent unread (segments are
                // recycled under new names and rewritten).
                node.mtime_ns = None;
            }
            if !in_manifest {
                self.unlist(name);
            }
            self.queue.push_back(leaf);
        }
        // Marked as archived, as after BASE_BACKUP, so that a promoted
        // copy does not archive them again.
        self.queue
            .push_back(Item::Enter(plain_dir("archive_status")));
        for (name, _) in &names {
            let done = format!("{name}.done");
            self.queue.push_back(memory_leaf(
                &self.shared,
                &done,
                format!("pg_wal/archive_status/{done}").as_bytes(),
                Vec::new(),
                now,
            ));
        }
        self.queue.push_back(Item::Leave); // archive_status
        self.queue.push_back(Item::Leave); // pg_wal
        self.queue.push_back(Item::Leave); // data
        self.stop = Some(Stop {
            lsn,
            timeline,
            wal_files,
            checkpoint,
        });
        Ok(())
    }

    /// Marks a file as not listed in the manifest (WAL segments).
    fn unlist(&self, name: &str) {
        self.shared
            .unlisted
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push(format!("pg_wal/{name}").into_bytes());
    }

    /// The backup manifest, from every file's checksum.
    pub(super) fn manifest_leaf(&mut self) -> Result<Item> {
        let stop = self
            .stop
            .clone()
            .ok_or_else(|| Error::source_failed("the backup was not stopped"))?;
        let mut records = std::mem::take(
            &mut *self
                .shared
                .files
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        let unlisted = std::mem::take(
            &mut *self
                .shared
                .unlisted
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        records.retain(|r| !unlisted.contains(&r.manifest_path));
        records.sort_by(|a, b| a.manifest_path.cmp(&b.manifest_path));
        let mut w = ManifestWriter::default();
        for r in &records {
            let crc = match r.crc {
                Some(c) => c,
                None => self.parent_crc(r)?,
            };
            w.add_file(&r.manifest_path, r.size, r.mtime, crc);
        }
        self.manifest = Some(w.totals());
        let text = w.finish(&[WalRange {
            timeline: stop.timeline,
            start: self.start_lsn,
            end: stop.lsn,
        }]);
        let mut node = Node::new(MANIFEST_FILE, NodeKind::File);
        node.mode = Some(0o600);
        node.mtime_ns = Utc::now().timestamp_nanos_opt();
        node.size = text.len() as u64;
        Ok(Item::Leaf {
            node,
            content: Some(Content::Blocking(Box::new(move || {
                Ok(Box::new(std::io::Cursor::new(text)) as Box<dyn Read + Send>)
            }))),
            on_error: OnReadError::Fail,
        })
    }

    /// The checksum of a file taken from the parent: the parent manifest's,
    /// or read again here when the parent has none for it.
    fn parent_crc(&self, r: &FileRecord) -> Result<u32> {
        if let Some(f) = self
            .parent_manifest
            .as_ref()
            .and_then(|m| m.files.get(&r.manifest_path))
        {
            if let Some((alg, bytes)) = &f.checksum {
                if alg == "CRC32C" && f.size == r.size && bytes.len() == 4 {
                    return Ok(u32::from_le_bytes([bytes[0], bytes[1], bytes[2], bytes[3]]));
                }
            }
        }
        File::open(&r.local_path)
            .and_then(|f| crc32c_of(f, r.size))
            .map(|(_, crc)| crc)
            .map_err(|e| Error::source_caused(format!("reading {}", r.local_path.display()), e))
    }
}

/// A small file from memory (label, map, archive status), recorded in the
/// manifest.
fn memory_leaf(
    shared: &Arc<Shared>,
    name: &str,
    manifest_path: &[u8],
    data: Vec<u8>,
    mtime: i64,
) -> Item {
    let mut node = Node::new(name, NodeKind::File);
    node.mode = Some(0o600);
    node.mtime_ns = mtime.checked_mul(1_000_000_000);
    node.size = data.len() as u64;
    shared
        .files
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .push(FileRecord {
            manifest_path: manifest_path.to_vec(),
            local_path: PathBuf::new(),
            size: data.len() as u64,
            mtime,
            crc: Some(crc32c::crc32c(&data)),
        });
    Item::Leaf {
        node,
        content: Some(Content::Blocking(Box::new(move || {
            Ok(Box::new(std::io::Cursor::new(data)) as Box<dyn Read + Send>)
        }))),
        on_error: OnReadError::Fail,
    }
}
