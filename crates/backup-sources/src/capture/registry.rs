//! The registry of this build's kinds of capture stream: [`drivers`].
//!
//! Listings (`backup pitr`, the daemon's status, drills, reports) and
//! retention (`forget --prune`) go through it and never name a kind;
//! adding a kind of stream is one module implementing
//! [`CaptureDriver`] and one line here. Kind modules never import this
//! file (the registry imports them, not the other way round).

use backup_core::repo::Repository;
use backup_core::Result;

use super::driver::CaptureDriver;
use super::kind::CaptureKind;
use super::stream::StreamDriver;
use super::window::{Inventory, SourceWindows};

/// Every kind of capture stream this build has, in listing order.
pub fn drivers() -> Vec<Box<dyn CaptureDriver>> {
    vec![
        Box::new(StreamDriver(CaptureKind::MongodbOplog)),
        Box::new(StreamDriver(CaptureKind::RedisStream)),
        #[cfg(feature = "postgres")]
        Box::new(crate::postgres::physical::driver::WalDriver),
    ]
}

/// The driver of the capture kind `name` (`postgres-wal`), or of the
/// kind of source `name` names (`postgres`).
pub fn driver(name: &str) -> Option<Box<dyn CaptureDriver>> {
    drivers()
        .into_iter()
        .find(|d| d.capture() == name || d.source_kind() == name)
}

/// The windows of every kind (narrowed by `source`), from one read of the
/// repository's capture records and snapshots.
///
/// # Errors
///
/// Storage errors; an unreadable capture record.
pub async fn windows(repo: &Repository, source: Option<&str>) -> Result<Vec<SourceWindows>> {
    let inventory = Inventory::read(repo).await?;
    let mut out = Vec::new();
    for d in drivers() {
        out.extend(d.windows(repo, &inventory, source).await?);
    }
    Ok(out)
}
