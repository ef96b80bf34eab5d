//! Archiving (`archive_command = 'backup wal push %p'`): [`push`].

use std::path::Path;
use std::time::Duration;

use backup_core::capture::{CaptureName, PieceInfo};
use backup_core::repo::Repository;
use backup_core::snapshot::SourceDescriptor;
use backup_core::{Error, Result};
use chrono::Utc;
use sha2::Digest as _;

use super::super::lsn::{is_wal_file_name, Lsn};
use super::{parse_wal_name, position, HISTORY_KIND, WAL_KIND};

/// Stores `path` (a WAL segment, a `.partial` one or a timeline history
/// file, as `archive_command` gives it) as a piece of the cluster's
/// stream; a backup history file (`.backup`) is acknowledged without being
/// stored (`None`: recovery does not need it). Pushing the same bytes
/// again succeeds; other bytes for a stored segment are refused (with a
/// write-only key, which cannot read what is stored, a stored range
/// counts as the same bytes).
///
/// # Errors
///
/// [`Error::Config`] for a file name that is neither; [`Error::Source`]
/// for a conflicting segment; storage errors.
pub async fn push(
    repo: &Repository,
    system_identifier: &str,
    source: SourceDescriptor,
    path: &Path,
    segment_size: u64,
) -> Result<Option<CaptureName>> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .ok_or_else(|| Error::Config(format!("{} is not a WAL file name", path.display())))?
        .to_owned();
    if name.ends_with(".backup") {
        return Ok(None);
    }
    let data = tokio::fs::read(path)
        .await
        .map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    // A `.partial` segment (the end of a timeline at a promotion) is kept
    // like a whole one; its tail is zeros.
    let segment_name = name.strip_suffix(".partial").unwrap_or(&name);
    let (kind, first, last) = if is_wal_file_name(segment_name) {
        let (tli, segno) = parse_wal_name(segment_name, segment_size)?;
        if data.len() as u64 != segment_size {
            return Err(Error::Config(format!(
                "{} has {} bytes, not a WAL segment of {segment_size}",
                path.display(),
                data.len()
            )));
        }
        let from = Lsn(segno * segment_size);
        let to = Lsn(from.0 + segment_size);
        (WAL_KIND, position(tli, from), position(tli, to))
    } else if let Some(tli) = name
        .strip_suffix(".history")
        .and_then(|t| u32::from_str_radix(t, 16).ok())
    {
        (
            HISTORY_KIND,
            format!("{tli:08X}"),
            format!("{:08X}", tli + 1),
        )
    } else {
        return Err(Error::Config(format!(
            "{name} is neither a WAL segment, a timeline history file nor a backup history file"
        )));
    };
    let info_stream = repo.capture_stream(kind, system_identifier);
    // The same range stored already: the same bytes succeed, others fail.
    let sha = backup_core::Id(sha2::Sha256::digest(&data).into());
    for n in repo.captures().await? {
        if n.stream == info_stream && n.first == first && n.last == last {
            if repo.key().is_write_only() {
                // A write-only key cannot read the stored piece to compare:
                // PostgreSQL pushes a segment again when it did not see the
                // first push succeed, so the same range counts as stored.
                tracing::warn!(file = %name, "Stored already; a write-only key cannot compare its content, so it is taken as this segment.");
                return Ok(Some(n));
            }
            let rec = repo.load_capture(&n).await?;
            if rec.sha256 == Some(sha) {
                return Ok(Some(n));
            }
            return Err(Error::source_failed(format!(
                "{name} is stored already with other content; refusing to store a second version (is another cluster archiving into this repository with the same system identifier?)"
            )));
        }
    }
    let info = PieceInfo {
        stream: info_stream,
        kind: kind.to_owned(),
        source,
        identity: system_identifier.to_owned(),
        first,
        last,
        time_first: Some(Utc::now()),
        time_last: Some(Utc::now()),
        details: serde_json::json!({ "file": name, "archived": true }),
    };
    repo.put_capture(info, &data, Duration::from_secs(3600))
        .await
        .map(Some)
}
