//! The fake's memory: buckets of objects with their generations, and the
//! multipart uploads in progress.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;
use chrono::{DateTime, Utc};

/// Everything the fake holds, and how it is told to behave.
#[derive(Debug, Default)]
pub(super) struct State {
    pub(super) buckets: BTreeMap<String, BTreeMap<String, Object>>,
    pub(super) uploads: HashMap<String, Upload>,
    pub(super) generation: i64,
    pub(super) upload_counter: u64,
    pub(super) page_size: usize,
    pub(super) failures_left: u32,
    pub(super) requests: Vec<String>,
}

impl State {
    /// A new generation number, higher than every earlier one.
    pub(super) fn next_generation(&mut self) -> i64 {
        // Generations are microsecond timestamps on GCS; keep them
        // increasing even when the clock does not move.
        let now = Utc::now().timestamp_micros();
        self.generation = now.max(self.generation + 1);
        self.generation
    }
}

/// A stored object.
#[derive(Debug, Clone)]
pub(super) struct Object {
    pub(super) data: Bytes,
    pub(super) generation: i64,
    pub(super) metageneration: i64,
    pub(super) updated: DateTime<Utc>,
    pub(super) etag: String,
    pub(super) content_type: String,
}

/// A multipart upload in progress.
#[derive(Debug)]
pub(super) struct Upload {
    pub(super) bucket: String,
    pub(super) key: String,
    pub(super) content_type: String,
    pub(super) parts: BTreeMap<u32, (Bytes, String)>,
}

/// The state, locked (also after a panic elsewhere).
pub(super) fn lock(state: &Mutex<State>) -> MutexGuard<'_, State> {
    state
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// The `ETag` of `data`.
pub(super) fn etag_of(data: &[u8]) -> String {
    format!("\"{}\"", &backup_core::Id::hash(data).to_hex()[..32])
}

/// Stores `data` as `key` of `bucket` with a new generation.
pub(super) fn store(
    state: &mut State,
    bucket: &str,
    key: &str,
    data: Bytes,
    content_type: String,
) -> Object {
    let generation = state.next_generation();
    let object = Object {
        etag: etag_of(&data),
        data,
        generation,
        metageneration: 1,
        updated: Utc::now(),
        content_type,
    };
    if let Some(objects) = state.buckets.get_mut(bucket) {
        objects.insert(key.to_owned(), object.clone());
    }
    object
}
