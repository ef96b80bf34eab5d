//! Opening a local base backup (`pg_backup_start` after a temporary
//! replication slot) and the [`Source`] it is: the parent it may take
//! files and page deltas from, and the walk's phases up to the metadata.

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use async_trait::async_trait;
use backup_core::reader::SnapshotReader;
use backup_core::snapshot::SourceDescriptor;
use backup_core::source::{Item, Source};
use backup_core::tree::Node;
use backup_core::{Error, Result};
use chrono::Utc;

use super::super::delta::{self, DeltaIndex};
use super::super::lsn::Lsn;
use super::super::manifest::Manifest;
use super::super::meta::{new_label, PhysicalMeta, MANIFEST_FILE, MODE, REUSE_MARGIN_NS};
use super::super::remote::{self, reusable};
use super::cluster::{
    control_system_identifier, list_tablespaces, rand_u32, read_cluster, start_error,
};
use super::reader::wait_reads;
use super::state::{LocalSource, Phase, Tree};
use crate::postgres::conn::{ConnInfo, Side};
use crate::{Checkpoint, PostgresOptions};

impl LocalSource {
    /// Connects, checks that `pgdata` is the server's data directory,
    /// creates a temporary slot and starts the backup.
    pub(crate) async fn open(
        info: &ConnInfo,
        opts: &PostgresOptions,
        pgdata: PathBuf,
    ) -> Result<Self> {
        let c = info.connect(Side::Source).await?;
        let cluster = read_cluster(&c).await?;
        match control_system_identifier(&pgdata) {
            Some(id) if id == cluster.system_identifier => {}
            Some(id) => {
                return Err(Error::Config(format!(
                    "{} is the data directory of another cluster (system identifier {id}, the server's is {}); give the server's own data directory with --pgdata",
                    pgdata.display(),
                    cluster.system_identifier
                )))
            }
            None => {
                return Err(Error::Config(format!(
                    "{} is not a readable PostgreSQL data directory (no readable global/pg_control); run the backup as a user that can read the data directory, or leave out --pgdata to back up over the replication protocol",
                    pgdata.display()
                )))
            }
        }
        let slot = format!("backup_{}_{:x}", std::process::id(), rand_u32());
        if let Err(e) = c
            .execute(
                "SELECT pg_create_physical_replication_slot($1, true, true)",
                &[&slot],
            )
            .await
        {
            let (code, message) = match e.as_db_error() {
                Some(db) => (db.code().code().to_owned(), db.message().to_owned()),
                None => (String::new(), e.to_string()),
            };
            tracing::warn!("{}", remote::slot_refused(&code, &message, info.user()));
        }
        let label = new_label();
        let fast = opts.checkpoint == Checkpoint::Fast;
        let started_at = Utc::now();
        let row = c
            .query_one(
                "SELECT pg_backup_start($1, $2)::text, (SELECT timeline_id FROM pg_control_checkpoint())",
                &[&label, &fast],
            )
            .await
            .map_err(|e| start_error(e, info.user()))?;
        let start_lsn = Lsn::parse(&row.get::<_, String>(0))?;
        let timeline: i32 = row.get(1);
        let tablespaces = list_tablespaces(&pgdata)?;
        let mut source = LocalSource {
            url: info.physical_redacted(),
            pgdata,
            coordinator: Some(c),
            cluster,
            start_lsn,
            timeline: u32::try_from(timeline).unwrap_or(1),
            label,
            started_at,
            tablespaces: tablespaces.clone(),
            shared: Arc::default(),
            phase: Phase::Files,
            queue: VecDeque::new(),
            walks: Vec::new(),
            tree: Tree::Tablespace,
            pending_tablespaces: tablespaces.into(),
            stop: None,
            parent_manifest: None,
            reuse_before_ns: None,
            manifest: None,
            parent_relations: HashMap::new(),
            parent_deltas: DeltaIndex::default(),
            parent_start: Lsn(0),
            bases: None,
            delta_files: 0,
        };
        if !source.begin_next_tree()? {
            source.begin_data_dir()?;
        }
        Ok(source)
    }
}

#[async_trait]
impl Source for LocalSource {
    fn descriptor(&self) -> SourceDescriptor {
        SourceDescriptor {
            kind: "postgres".to_owned(),
            url: self.url.clone(),
        }
    }

    fn concurrency(&self) -> usize {
        // One reader per core: reading is what the backup waits for.
        std::thread::available_parallelism().map_or(2, |n| n.get().max(2))
    }

    async fn set_parent(&mut self, parent: &SnapshotReader) -> Result<()> {
        let Some(Ok(meta)) = PhysicalMeta::of(&parent.snapshot().metadata) else {
            return Ok(());
        };
        if meta.system_identifier != self.cluster.system_identifier {
            return Ok(());
        }
        let root = parent.root().await?;
        if let Some(node) = root.get(MANIFEST_FILE) {
            let text = parent.read_all(node).await?;
            self.parent_manifest = Manifest::parse(&text).ok();
        }
        self.reuse_before_ns = meta
            .started_at
            .timestamp_nanos_opt()
            .map(|t| t - REUSE_MARGIN_NS);
        // Page deltas against the parent's copies need the same history:
        // same timeline, and this backup starting after the parent stopped
        // (see delta/).
        let parent_start = Lsn::parse(&meta.start_lsn)?;
        let parent_stop = Lsn::parse(&meta.stop_lsn)?;
        // And every change of a page's bytes WAL-logged since then, hint
        // bits included, with page checksums as they were.
        let hints_logged = self.cluster.data_checksums || self.cluster.wal_log_hints;
        if meta.timeline == self.timeline
            && meta.stop_timeline == self.timeline
            && meta.block_size == self.cluster.block_size
            && parent_stop <= self.start_lsn
            && meta.hints_logged
            && hints_logged
            && meta.data_checksums == self.cluster.data_checksums
        {
            self.parent_relations = delta::relations(&root).await?;
            self.parent_deltas = DeltaIndex::of(&root).await?;
            self.parent_start = parent_start;
            self.bases = Some((
                parent.repository().clone(),
                tokio::runtime::Handle::current(),
            ));
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
        // Deltas are the source's own business (`delta_leaves`).
        !new.name.0.ends_with(delta::DELTA_SUFFIX) && reusable(self.reuse_before_ns, new, old)
    }

    async fn next(&mut self) -> Result<Option<Item>> {
        loop {
            match self.phase {
                Phase::Files | Phase::Global => {
                    if let Some(item) = self.walk_step()? {
                        return Ok(Some(item));
                    }
                    if matches!(self.phase, Phase::Files) {
                        wait_reads(self.shared.clone()).await;
                        self.begin_global()?;
                        self.phase = Phase::Global;
                    } else {
                        wait_reads(self.shared.clone()).await;
                        self.stop_backup().await?;
                        self.phase = Phase::Stop;
                    }
                }
                Phase::Stop => {
                    if let Some(item) = self.queue.pop_front() {
                        return Ok(Some(item));
                    }
                    wait_reads(self.shared.clone()).await;
                    self.phase = Phase::Manifest;
                }
                Phase::Manifest => {
                    self.phase = Phase::Done;
                    let manifest = self.manifest_leaf()?;
                    if let Some(index) = self.delta_index_leaf()? {
                        self.queue.push_back(index);
                    }
                    return Ok(Some(manifest));
                }
                Phase::Done => return Ok(self.queue.pop_front()),
            }
        }
    }

    async fn finish(&mut self) -> Result<serde_json::Value> {
        // Ends the session (and its temporary slot).
        self.coordinator = None;
        let stop = self
            .stop
            .clone()
            .ok_or_else(|| Error::source_failed("the backup was not stopped"))?;
        let (files, bytes) = self.manifest.unwrap_or_default();
        let c = &self.cluster;
        let meta = PhysicalMeta {
            mode: MODE.to_owned(),
            method: "local".to_owned(),
            server_version: c.server_version.clone(),
            server_version_num: c.server_version_num,
            system_identifier: c.system_identifier.clone(),
            timeline: self.timeline,
            start_lsn: self.start_lsn.to_string(),
            checkpoint_lsn: stop.checkpoint.map(|l| l.to_string()).unwrap_or_default(),
            stop_lsn: stop.lsn.to_string(),
            stop_timeline: stop.timeline,
            started_at: self.started_at,
            stopped_at: Utc::now(),
            label: self.label.clone(),
            data_checksums: c.data_checksums,
            checksums_verified: c.data_checksums,
            hints_logged: c.data_checksums || c.wal_log_hints,
            wal_segment_size: c.wal_segment_size,
            block_size: c.block_size,
            tablespaces: self.tablespaces.clone(),
            wal_files: stop.wal_files,
            manifest_files: files,
            manifest_bytes: bytes,
            files_read: self.shared.files_read.load(Ordering::Relaxed),
            pages_verified: self.shared.pages_verified.load(Ordering::Relaxed),
            delta_files: self.delta_files,
            delta_pages: self.shared.delta_pages.load(Ordering::Relaxed),
        };
        serde_json::to_value(&meta).map_err(|e| Error::source_caused("encoding metadata", e))
    }
}
