//! Names in the mount: tables and collections as files, snapshot
//! directory names, and the escaping of names that cannot be file names.

use std::collections::HashMap;
use std::ffi::OsString;

use backup_core::snapshot::SnapshotEntry;
use backup_sources::item::ItemFormat;

/// A table or collection as a file: where it is shown and how
/// `dump_item` finds it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ItemFile {
    /// Directories and the file name.
    pub(super) place: Vec<String>,
    pub(super) path: String,
    pub(super) format: ItemFormat,
}

/// The items of a PostgreSQL (logical) or MongoDB snapshot as files;
/// `None` for other snapshots.
pub(super) fn items_of(kind: &str, metadata: &serde_json::Value) -> Option<Vec<ItemFile>> {
    let (format, extension) = match kind {
        "postgres" => (ItemFormat::Csv, "csv"),
        "mongodb" => (ItemFormat::Json, "json"),
        _ => return None,
    };
    let contents = backup_sources::summary::contents(kind, metadata)?;
    let items = contents
        .rows
        .into_iter()
        // Views and partitioned tables have no rows of their own.
        .filter(|r| r.note != "view" && !r.note.starts_with("partitioned"))
        .map(|r| {
            let mut place: Vec<String> = r
                .path
                .iter()
                .filter(|p| !p.is_empty())
                .map(|p| file_name(p))
                .collect();
            if let Some(last) = place.last_mut() {
                last.push('.');
                last.push_str(extension);
            }
            // Components when they name the row unambiguously, else the
            // dotted name.
            let path = if r.path.iter().all(|p| !p.is_empty() && !p.contains('/')) {
                r.path.join("/")
            } else {
                r.name.clone()
            };
            ItemFile {
                place,
                path,
                format,
            }
        })
        .collect();
    Some(items)
}

/// Directory names of snapshots: their UTC time to the second, with the
/// short id after it when two share a second.
pub(super) fn snapshot_names(entries: &[SnapshotEntry]) -> Vec<String> {
    let times: Vec<String> = entries
        .iter()
        .map(|e| e.snapshot.time.format("%Y-%m-%dT%H:%M:%SZ").to_string())
        .collect();
    let mut counts: HashMap<&str, usize> = HashMap::new();
    for t in &times {
        *counts.entry(t.as_str()).or_default() += 1;
    }
    times
        .iter()
        .zip(entries)
        .map(|(t, e)| {
            if counts[t.as_str()] > 1 {
                format!("{t}-{}", e.id.short())
            } else {
                t.clone()
            }
        })
        .collect()
}

/// A name usable as one path component: `/` and NUL escaped as `%2F` and
/// `%00` (and `%` as `%25`, so the escape is unambiguous); `.` and `..`
/// get a `%2E` first.
pub(super) fn file_name(name: &str) -> String {
    let escaped = name
        .replace('%', "%25")
        .replace('/', "%2F")
        .replace('\0', "%00");
    match escaped.as_str() {
        "" => "%".to_owned(),
        "." | ".." => format!("%2E{}", &escaped[1..]),
        _ => escaped,
    }
}

/// [`file_name`] of a name that is bytes (a Redis key): the same escapes,
/// other bytes kept as they are.
#[cfg_attr(not(feature = "redis"), allow(dead_code))]
pub(super) fn file_name_bytes(name: &[u8]) -> OsString {
    use std::os::unix::ffi::OsStringExt;
    let mut out = Vec::with_capacity(name.len());
    for &b in name {
        match b {
            b'%' => out.extend_from_slice(b"%25"),
            b'/' => out.extend_from_slice(b"%2F"),
            0 => out.extend_from_slice(b"%00"),
            _ => out.push(b),
        }
    }
    match out.as_slice() {
        b"" => out = b"%".to_vec(),
        b"." | b".." => {
            out.splice(0..1, *b"%2E");
        }
        _ => {}
    }
    OsString::from_vec(out)
}
