//! Helpers of the crate's unit tests.

use std::sync::Arc;

use chrono::{DateTime, Utc};

use crate::id::Id;
use crate::keys::KdfParams;
use crate::repo::{InitOptions, Repository};
use crate::sink::{MemorySink, Sink};
use crate::snapshot::{Snapshot, SnapshotStats, SourceDescriptor, SNAPSHOT_VERSION};

/// A new encrypted repository in memory, password `pw`, cheap key
/// derivation.
pub(crate) async fn memory_repo() -> Repository {
    let sink: Arc<dyn Sink> = Arc::new(MemorySink::new());
    let opts = InitOptions {
        kdf: KdfParams::insecure_fast(),
        ..InitOptions::default()
    };
    Repository::init(sink, Some(b"pw"), &opts).await.unwrap()
}

/// A manifest of a files snapshot of `url` at `time` (RFC 3339).
pub(crate) fn manifest(time: &str, url: &str) -> Snapshot {
    Snapshot {
        version: SNAPSHOT_VERSION,
        time: DateTime::parse_from_rfc3339(time)
            .unwrap()
            .with_timezone(&Utc),
        host: "h1".into(),
        user: "u".into(),
        source: SourceDescriptor {
            kind: "files".into(),
            url: url.into(),
        },
        job: None,
        tags: Vec::new(),
        parent: None,
        copy_of: None,
        rewritten: None,
        tree: Id::default(),
        excludes: Vec::new(),
        includes: Vec::new(),
        stats: SnapshotStats::default(),
        streams: Vec::new(),
        warnings: Vec::new(),
        metadata: serde_json::Value::Null,
        program: "test".into(),
    }
}
