//! The shared state of one restore, once its plan is checked: what every
//! phase that writes to the target needs.

use std::sync::{Arc, Mutex, PoisonError};

use backup_core::progress::Progress;
use backup_core::reader::SnapshotReader;
use backup_core::target::RestoreOptions;

use super::super::conn::Conn;
use super::plan::ExistingMap;
use super::snapshot::{Loaded, NsMapSync, Planned};

/// One restore that runs (not a dry run).
pub(super) struct Restore<'a> {
    pub(super) snapshot: &'a SnapshotReader,
    pub(super) conn: &'a Conn,
    pub(super) opts: &'a RestoreOptions,
    pub(super) progress: &'a Arc<dyn Progress>,
    /// The snapshot read back, with the plan.
    pub(super) loaded: &'a Loaded,
    /// The namespace mapping of the restore.
    pub(super) map: &'a NsMapSync<'a>,
    /// The namespaces of the plan the target held before the restore.
    pub(super) existing: &'a ExistingMap,
    /// Collections at once, unless the options say (the target's jobs).
    pub(super) jobs: usize,
    /// Namespaces the restore created (for [`backup_core::target::Target::discard`]).
    pub(super) created: &'a Mutex<Vec<(String, String)>>,
}

impl Restore<'_> {
    /// The collections and views to restore.
    pub(super) fn plan(&self) -> &[Planned] {
        &self.loaded.collections
    }

    /// Whether the target held the namespace of `p` before the restore.
    pub(super) fn exists(&self, p: &Planned) -> bool {
        self.existing.contains_key(&(p.db.clone(), p.coll.clone()))
    }

    /// Records that the restore created the namespace of `p`.
    pub(super) fn record_created(&self, p: &Planned) {
        self.created
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .push((p.db.clone(), p.coll.clone()));
    }
}
