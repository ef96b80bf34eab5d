//! Keys of a Redis snapshot one by one: listed with their type, expiry
//! and size ([`list_keys`]), or one key's value or `DUMP` payload
//! ([`crate::item`]).
//!
//! Both read the snapshot's stream from the start (an RDB, or the frames
//! of a key-mode snapshot) and stream it: a snapshot of any number of
//! keys is listed in bounded memory. A key's value is rendered as
//! `value`: a string as its bytes; a list or set as a JSON array, a
//! sorted set as an array of `{"member", "score"}`, a hash as an object
//! (field expiries are left out: `raw` keeps them); a byte string that is
//! not UTF-8 becomes `{"base64": "..."}`, and a score that is not finite
//! the string `inf`, `-inf` or `nan`. A stream or module value has no
//! such rendering: `raw` gives its payload.

use backup_core::reader::SnapshotReader;
use backup_core::{Error, Result};
use base64::Engine as _;
use serde::Serialize;
use serde_json::{json, Value as Json};

use super::glob::KeyFilter;
use super::manifest::SnapshotInfo;
use super::rdb::decode::{decode_value, Value};
use super::rdb::{split_dump_payload, types};
use super::records::{read_records, show_key, Batch, Record, Selection};
use crate::item::{write_blocking, ItemDump, ItemFormat, OpenItem};

/// One key of a snapshot, as [`list_keys`] gives it.
#[derive(Debug, Clone, Serialize)]
pub struct KeyEntry {
    /// The database number.
    pub db: u32,
    /// The key: as text when it is UTF-8, else lossily (see
    /// [`KeyEntry::key_base64`]).
    pub key: String,
    /// The key's bytes in standard base64 when they are not UTF-8.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_base64: Option<String>,
    /// `string`, `list`, `set`, `zset`, `hash`, `stream` or `module`.
    #[serde(rename = "type")]
    pub kind: &'static str,
    /// When the key expires, milliseconds since the Unix epoch.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_ms: Option<i64>,
    /// Bytes of its serialised value (its `DUMP` payload).
    pub size: u64,
}

/// Lists the keys of database `db` (every database when `None`) whose
/// names match the glob `pattern` (Redis's syntax, as `SCAN MATCH`), in
/// the snapshot's order, handing each to `on_key`; returns how many.
///
/// # Errors
///
/// [`Error::Config`] for a snapshot that is not Redis; [`Error::NotFound`]
/// for a database the snapshot does not hold; an error `on_key` returns
/// (which stops the listing); damaged data; storage errors.
pub async fn list_keys(
    snapshot: &SnapshotReader,
    db: Option<u32>,
    pattern: Option<&str>,
    on_key: &mut (dyn FnMut(&KeyEntry) -> Result<()> + Send),
) -> Result<u64> {
    let info = SnapshotInfo::load(snapshot).await?;
    if let Some(db) = db {
        known_db(snapshot, &info, db)?;
    }
    let includes: Vec<String> = pattern.map(str::to_owned).into_iter().collect();
    let sel = Selection {
        dbs: db.map(|d| vec![d]),
        keys: KeyFilter::new(&includes, &[]),
        payloads: true,
    };
    let (rx, handle) = read_records(snapshot, &info.stream, info.keys_mode, sel);
    let mut n = 0u64;
    let mut failed = None;
    'read: while let Ok(batch) = rx.recv().await {
        let Batch::Keys(records) = batch else {
            continue;
        };
        for r in records {
            if let Err(e) = on_key(&entry(&r)) {
                failed = Some(e);
                break 'read;
            }
            n += 1;
        }
    }
    drop(rx);
    let totals = joined(handle).await;
    if let Some(e) = failed {
        return Err(e);
    }
    totals?;
    Ok(n)
}

/// What the reading task ended with.
async fn joined(
    handle: tokio::task::JoinHandle<Result<super::records::Totals>>,
) -> Result<super::records::Totals> {
    handle
        .await
        .map_err(|e| Error::target_caused("reading the snapshot failed", e))?
}

fn entry(r: &Record) -> KeyEntry {
    let (key, key_base64) = match std::str::from_utf8(&r.key) {
        Ok(k) => (k.to_owned(), None),
        Err(_) => (
            String::from_utf8_lossy(&r.key).into_owned(),
            Some(base64::engine::general_purpose::STANDARD.encode(&r.key)),
        ),
    };
    KeyEntry {
        db: r.db,
        key,
        key_base64,
        kind: types::kind(r.rdb_type),
        expires_ms: r.expire_ms,
        size: r.payload.len() as u64,
    }
}

fn known_db(snapshot: &SnapshotReader, info: &SnapshotInfo, db: u32) -> Result<()> {
    if info.databases.contains_key(&db) {
        return Ok(());
    }
    Err(Error::not_found(format!(
        "database {db} in snapshot {} (it holds {})",
        snapshot.id().short(),
        if info.databases.is_empty() {
            "no keys".to_owned()
        } else {
            info.databases
                .keys()
                .map(u32::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        }
    )))
}

/// How a key differs between two snapshots.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyDelta {
    /// Only in the newer snapshot.
    Added,
    /// Only in the older snapshot.
    Removed,
    /// In both, different.
    Changed,
}

/// One key that differs between two snapshots.
#[derive(Debug, Clone, Serialize)]
pub struct KeyChange {
    /// Added, removed or changed.
    pub change: KeyDelta,
    /// The key (the newer side's when both exist).
    #[serde(flatten)]
    pub key: KeyEntry,
    /// What changed: `type`, `value`, `expiry` (empty for added and
    /// removed keys).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub what: Vec<&'static str>,
    /// Its serialised size in the older snapshot, when it changed.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub size_before: Option<u64>,
}

/// How the keys of two snapshots differ ([`diff_keys`]).
#[derive(Debug, Clone, Default, Serialize)]
pub struct KeyDiff {
    /// The keys that differ: removed ones first (in the older snapshot's
    /// order), then added and changed ones in the newer snapshot's order.
    pub changes: Vec<KeyChange>,
    /// Keys only in the newer snapshot.
    pub added: u64,
    /// Keys only in the older snapshot.
    pub removed: u64,
    /// Keys in both that differ.
    pub changed: u64,
    /// Keys in both that are the same.
    pub unchanged: u64,
}

/// What a key is, for comparing: its type, a 128-bit hash of its stored
/// value encoding, its expiry, its entry.
struct Seen {
    rdb_type: u8,
    value: u128,
    entry: KeyEntry,
    order: u64,
}

fn value_hash(payload: &[u8]) -> u128 {
    use std::hash::{Hash as _, Hasher as _};
    // The value without the payload's RDB version and checksum: the
    // same value from another server version compares equal.
    let value = split_dump_payload(payload).map_or(payload, |(_, v, _)| v);
    let half = |salt: u8| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        salt.hash(&mut h);
        value.hash(&mut h);
        h.finish()
    };
    (u128::from(half(1)) << 64) | u128::from(half(2))
}

/// Compares the keys of two Redis snapshots (of database `db`, or all):
/// keys added, removed, or changed in type, value or expiry. Values are
/// compared by their stored encoding (a value the server re-encoded, a
/// list that grew past its compact form and shrank again, shows as
/// changed). When both snapshots store the same stream (equal chunk ids)
/// nothing is read. Otherwise both streams are read once, and the older
/// snapshot's keys are held in memory as a hash each (about 100 bytes a
/// key plus its name).
///
/// # Errors
///
/// As [`list_keys`].
pub async fn diff_keys(
    older: &SnapshotReader,
    newer: &SnapshotReader,
    db: Option<u32>,
) -> Result<KeyDiff> {
    let (a, b) = (
        SnapshotInfo::load(older).await?,
        SnapshotInfo::load(newer).await?,
    );
    if let Some(db) = db {
        if !a.databases.contains_key(&db) && !b.databases.contains_key(&db) {
            return known_db(newer, &b, db).map(|()| KeyDiff::default());
        }
    }
    let mut out = KeyDiff::default();
    if older.content_ids(&a.stream).await? == newer.content_ids(&b.stream).await?
        && a.keys_mode == b.keys_mode
    {
        out.unchanged = match db {
            Some(db) => b.databases.get(&db).copied().unwrap_or(0),
            None => b.databases.values().sum(),
        };
        return Ok(out);
    }
    let mut seen: std::collections::HashMap<(u32, Vec<u8>), Seen> =
        std::collections::HashMap::new();
    let sel = || Selection {
        dbs: db.map(|d| vec![d]),
        keys: KeyFilter::new(&[], &[]),
        payloads: true,
    };
    let mut order = 0u64;
    read_all(older, &a, sel(), |r| {
        order += 1;
        seen.insert(
            (r.db, r.key.clone()),
            Seen {
                rdb_type: r.rdb_type,
                value: value_hash(&r.payload),
                entry: entry(&r),
                order,
            },
        );
    })
    .await?;
    let mut later = Vec::new();
    read_all(newer, &b, sel(), |r| {
        let now = entry(&r);
        let Some(before) = seen.remove(&(r.db, r.key.clone())) else {
            out.added += 1;
            later.push(KeyChange {
                change: KeyDelta::Added,
                key: now,
                what: Vec::new(),
                size_before: None,
            });
            return;
        };
        let mut what = Vec::new();
        if types::kind(before.rdb_type) != types::kind(r.rdb_type) {
            what.push("type");
        }
        if before.value != value_hash(&r.payload) {
            what.push("value");
        }
        if before.entry.expires_ms != now.expires_ms {
            what.push("expiry");
        }
        if what.is_empty() {
            out.unchanged += 1;
            return;
        }
        out.changed += 1;
        later.push(KeyChange {
            change: KeyDelta::Changed,
            key: now,
            what,
            size_before: Some(before.entry.size),
        });
    })
    .await?;
    let mut gone: Vec<Seen> = seen.into_values().collect();
    gone.sort_by_key(|s| s.order);
    out.removed = gone.len() as u64;
    out.changes = gone
        .into_iter()
        .map(|s| KeyChange {
            change: KeyDelta::Removed,
            key: s.entry,
            what: Vec::new(),
            size_before: None,
        })
        .chain(later)
        .collect();
    Ok(out)
}

/// A key [`find_keys`] found, with a fingerprint of what it holds (type,
/// stored value, expiry): equal fingerprints, equal keys.
#[derive(Debug, Clone)]
pub struct FoundKey {
    /// The key.
    pub key: KeyEntry,
    /// Its fingerprint.
    pub fingerprint: u128,
}

/// A fingerprint of a Redis snapshot's stored stream (its chunk ids and
/// form): two snapshots with the same one hold the same keys, so a
/// search of one serves both without reading.
///
/// # Errors
///
/// Not a Redis snapshot, a damaged manifest, storage errors.
pub async fn stream_fingerprint(snapshot: &SnapshotReader) -> Result<u128> {
    use std::hash::{Hash as _, Hasher as _};
    let info = SnapshotInfo::load(snapshot).await?;
    let ids = snapshot.content_ids(&info.stream).await?;
    let half = |salt: u8| {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        (salt, info.keys_mode, &ids).hash(&mut h);
        h.finish()
    };
    Ok((u128::from(half(1)) << 64) | u128::from(half(2)))
}

/// The keys of a snapshot whose names match the glob `pattern` (Redis's
/// syntax), in the snapshot's order, each with its fingerprint. The
/// stream is read whole; only the matches are kept.
///
/// # Errors
///
/// As [`list_keys`].
pub async fn find_keys(snapshot: &SnapshotReader, pattern: &str) -> Result<Vec<FoundKey>> {
    let info = SnapshotInfo::load(snapshot).await?;
    let sel = Selection {
        dbs: None,
        keys: KeyFilter::new(&[pattern.to_owned()], &[]),
        payloads: true,
    };
    let mut found = Vec::new();
    read_all(snapshot, &info, sel, |r| {
        let key = entry(&r);
        let fingerprint = value_hash(&r.payload)
            ^ u128::from(r.rdb_type)
            ^ (u128::from(r.expire_ms.unwrap_or(-1) as u64) << 64);
        found.push(FoundKey { key, fingerprint });
    })
    .await?;
    Ok(found)
}

/// Reads every selected key of a snapshot's stream into `each`.
async fn read_all(
    snapshot: &SnapshotReader,
    info: &SnapshotInfo,
    sel: Selection,
    mut each: impl FnMut(Record),
) -> Result<()> {
    let (rx, handle) = read_records(snapshot, &info.stream, info.keys_mode, sel);
    while let Ok(batch) = rx.recv().await {
        if let Batch::Keys(records) = batch {
            records.into_iter().for_each(&mut each);
        }
    }
    joined(handle).await.map(|_| ())
}

/// A glob matching exactly `key`.
fn exact_pattern(key: &str) -> String {
    let mut p = String::with_capacity(key.len());
    for c in key.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            p.push('\\');
        }
        p.push(c);
    }
    p
}

/// Writes the key `path` names, `DB/KEY` (see [`crate::item::dump_item`]).
pub(crate) async fn dump_key(
    snapshot: &SnapshotReader,
    path: &str,
    format: ItemFormat,
    open: OpenItem,
) -> Result<ItemDump> {
    let usage = || {
        Error::Config(format!(
            "a Redis key is named DB/KEY (`0/user:1`), not `{path}`"
        ))
    };
    let (db, key) = path
        .trim_start_matches('/')
        .split_once('/')
        .ok_or_else(usage)?;
    let db: u32 = db.parse().map_err(|_| usage())?;
    dump_key_bytes(snapshot, db, key.as_bytes(), format, open).await
}

/// Writes key `key` (its bytes: any key, UTF-8 or not) of database `db`
/// as [`crate::kind::dump_item`] writes `DB/KEY`: its value (`value`) or
/// its `DUMP` payload (`raw`). The stream is read from the start until
/// the key is found.
///
/// # Errors
///
/// [`Error::NotFound`] for a database or key the snapshot does not hold;
/// [`Error::Config`] for a format other than `value` or `raw`, and for a
/// `value` of a stream or module key (no plain rendering); damaged data;
/// storage errors; what `open` returns; errors writing the output.
pub async fn dump_key_bytes(
    snapshot: &SnapshotReader,
    db: u32,
    key: &[u8],
    format: ItemFormat,
    open: OpenItem,
) -> Result<ItemDump> {
    if !matches!(format, ItemFormat::Value | ItemFormat::Raw) {
        return Err(Error::Config(format!(
            "a Redis key is written as value or raw, not {format}"
        )));
    }
    let info = SnapshotInfo::load(snapshot).await?;
    known_db(snapshot, &info, db)?;
    // A key that is not UTF-8 has no glob pattern: every key is looked at.
    let patterns: Vec<String> = std::str::from_utf8(key)
        .map(exact_pattern)
        .into_iter()
        .collect();
    let sel = Selection {
        dbs: Some(vec![db]),
        keys: KeyFilter::new(&patterns, &[]),
        payloads: true,
    };
    let (rx, handle) = read_records(snapshot, &info.stream, info.keys_mode, sel);
    let mut found = None;
    'read: while let Ok(batch) = rx.recv().await {
        if let Batch::Keys(records) = batch {
            for r in records {
                if r.key == key {
                    found = Some(r);
                    break 'read;
                }
            }
        }
    }
    // Found: the rest of the stream is not needed (the reader stops with
    // `Cancelled` once nobody receives).
    drop(rx);
    match joined(handle).await {
        Err(Error::Cancelled) if found.is_some() => {}
        r => {
            r?;
        }
    }
    let name = format!("{db}/{}", String::from_utf8_lossy(key));
    let record = found.ok_or_else(|| {
        Error::not_found(format!(
            "key {} in database {db} of snapshot {} (`backup ls {} {db}` lists its keys)",
            show_key(key),
            snapshot.id().short(),
            snapshot.id().short()
        ))
    })?;
    let bytes = match format {
        ItemFormat::Raw => record.payload,
        _ => render(&record).map_err(|e| match e {
            Render::Unsupported(what) => Error::Config(format!(
                "{name} is a {what}: it has no plain rendering; `--format raw` writes its DUMP payload (RESTORE takes it)"
            )),
            Render::Damaged(e) => snapshot.damaged(format!("key {name}: {e}")),
        })?,
    };
    let ((), written) = write_blocking(format, open, move |out| {
        out.write_all(&bytes).map_err(crate::item::write_error)
    })
    .await?;
    Ok(ItemDump {
        name,
        item: "key",
        format,
        count: 1,
        bytes: written,
    })
}

/// A key as a file (`backup mount`): what [`list_key_files`] gives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyFile {
    /// The key's bytes.
    pub key: Vec<u8>,
    /// What the file holds: `value` (what `backup dump SNAPSHOT DB/KEY`
    /// writes), or `raw` (the `DUMP` payload) for a stream or module key,
    /// which has no plain rendering.
    pub format: ItemFormat,
    /// The file's size in bytes.
    pub size: u64,
}

/// Lists the keys of database `db` as files, in the snapshot's order,
/// handing each to `on_key` (the stream is read once, in bounded memory;
/// each value is rendered to learn its size and dropped); returns how
/// many.
///
/// # Errors
///
/// As [`list_keys`]; damaged data when a value cannot be rendered.
pub async fn list_key_files(
    snapshot: &SnapshotReader,
    db: u32,
    on_key: &mut (dyn FnMut(KeyFile) -> Result<()> + Send),
) -> Result<u64> {
    let info = SnapshotInfo::load(snapshot).await?;
    known_db(snapshot, &info, db)?;
    let sel = Selection {
        dbs: Some(vec![db]),
        keys: KeyFilter::new(&[], &[]),
        payloads: true,
    };
    let (rx, handle) = read_records(snapshot, &info.stream, info.keys_mode, sel);
    let mut n = 0u64;
    let mut failed = None;
    'read: while let Ok(batch) = rx.recv().await {
        let Batch::Keys(records) = batch else {
            continue;
        };
        for r in records {
            let file = match render(&r) {
                Ok(v) => Ok((ItemFormat::Value, v.len() as u64)),
                Err(Render::Unsupported(_)) => Ok((ItemFormat::Raw, r.payload.len() as u64)),
                Err(Render::Damaged(e)) => {
                    Err(snapshot.damaged(format!("key {} in database {db}: {e}", show_key(&r.key))))
                }
            }
            .and_then(|(format, size)| {
                on_key(KeyFile {
                    key: r.key,
                    format,
                    size,
                })
            });
            if let Err(e) = file {
                failed = Some(e);
                break 'read;
            }
            n += 1;
        }
    }
    drop(rx);
    let totals = joined(handle).await;
    if let Some(e) = failed {
        return Err(e);
    }
    totals?;
    Ok(n)
}

enum Render {
    Unsupported(&'static str),
    Damaged(String),
}

/// A key's value as `value` renders it.
fn render(r: &Record) -> std::result::Result<Vec<u8>, Render> {
    let (t, raw, _) = split_dump_payload(&r.payload).map_err(Render::Damaged)?;
    let value = decode_value(t, raw).map_err(|e| Render::Damaged(e.to_string()))?;
    let text = |b: &[u8]| -> Json {
        match std::str::from_utf8(b) {
            Ok(s) => Json::String(s.to_owned()),
            Err(_) => json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
        }
    };
    let rendered = match value {
        Value::String(b) => return Ok(b),
        Value::List(v) | Value::Set(v) => Json::Array(v.iter().map(|b| text(b)).collect()),
        Value::ZSet(v) => Json::Array(
            v.iter()
                .map(|(m, s)| {
                    let score = serde_json::Number::from_f64(*s).map_or_else(
                        || {
                            Json::String(
                                if s.is_nan() {
                                    "nan"
                                } else if *s > 0.0 {
                                    "inf"
                                } else {
                                    "-inf"
                                }
                                .to_owned(),
                            )
                        },
                        Json::Number,
                    );
                    json!({ "member": text(m), "score": score })
                })
                .collect(),
        ),
        Value::Hash(v) => {
            let mut o = serde_json::Map::new();
            for (f, val, _) in &v {
                o.insert(String::from_utf8_lossy(f).into_owned(), text(val));
            }
            Json::Object(o)
        }
        Value::Stream(_) => return Err(Render::Unsupported("stream")),
        Value::Module { .. } => return Err(Render::Unsupported("module value")),
    };
    let mut out = serde_json::to_vec(&rendered).map_err(|e| Render::Damaged(e.to_string()))?;
    out.push(b'\n');
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::redis::glob::glob_match;

    #[test]
    fn exact_patterns_match_only_their_key() {
        for key in ["plain", "a*b", "q?", "[x]", "back\\slash", ""] {
            let p = exact_pattern(key);
            assert!(glob_match(p.as_bytes(), key.as_bytes()), "{key}");
        }
        assert!(!glob_match(exact_pattern("a*b").as_bytes(), b"aXb"));
        assert!(!glob_match(exact_pattern("q?").as_bytes(), b"qq"));
    }
}
