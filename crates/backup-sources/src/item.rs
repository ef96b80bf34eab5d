//! One table, collection or key of a database snapshot in a format of
//! its own, without restoring the snapshot: `backup dump SNAPSHOT ITEM
//! --format ...`.
//!
//! | kind | item | formats (the first is the default) |
//! |---|---|---|
//! | PostgreSQL (logical) | a table: `app/sales/orders`, `sales.orders` | `csv` (with a header; `COPY ... FROM ... (FORMAT csv, HEADER)` loads it), `copy` (the stored `COPY` text), `sql` (`INSERT` statements in one transaction) |
//! | MongoDB | a collection: `shop.orders`, `shop/orders` | `json` (canonical Extended JSON, one document a line), `bson` (concatenated documents, as `mongodump` writes them) |
//! | Redis | a key: `DB/KEY` (`0/user:1`; the key is everything after the first `/`) | `value` (a string as its bytes; a list, set, sorted set or hash as JSON), `raw` (the `DUMP` payload `RESTORE` takes) |
//!
//! Everything is streamed (a table or collection of any size is never
//! held in memory) and every blob is verified as it is read. The item
//! is found before the output is opened, so a wrong name writes
//! nothing. A PostgreSQL physical snapshot holds data files, not
//! tables: it is refused with what to do instead. The registry of kinds
//! dispatches ([`crate::kind::dump_item`]); this module holds the formats
//! and what the kinds share.

use std::io::Write;

use backup_core::{Error, Result};

/// A format an item is written in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ItemFormat {
    /// A PostgreSQL table as CSV with a header line.
    Csv,
    /// A PostgreSQL table's `COPY` text, as stored.
    Copy,
    /// A PostgreSQL table as `INSERT` statements.
    Sql,
    /// A MongoDB collection as canonical Extended JSON lines.
    Json,
    /// A MongoDB collection as concatenated BSON documents.
    Bson,
    /// A Redis key's value.
    Value,
    /// A Redis key's `DUMP` payload.
    Raw,
}

impl ItemFormat {
    /// Every format, in the order of the table above.
    pub const ALL: [ItemFormat; 7] = [
        ItemFormat::Csv,
        ItemFormat::Copy,
        ItemFormat::Sql,
        ItemFormat::Json,
        ItemFormat::Bson,
        ItemFormat::Value,
        ItemFormat::Raw,
    ];

    /// Its name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            ItemFormat::Csv => "csv",
            ItemFormat::Copy => "copy",
            ItemFormat::Sql => "sql",
            ItemFormat::Json => "json",
            ItemFormat::Bson => "bson",
            ItemFormat::Value => "value",
            ItemFormat::Raw => "raw",
        }
    }

    /// The formats a kind of snapshot's items take, the default first;
    /// empty for kinds without items (files).
    pub fn of_kind(kind: &str) -> &'static [ItemFormat] {
        match kind {
            "postgres" => &[ItemFormat::Csv, ItemFormat::Copy, ItemFormat::Sql],
            "mongodb" => &[ItemFormat::Json, ItemFormat::Bson],
            "redis" => &[ItemFormat::Value, ItemFormat::Raw],
            _ => &[],
        }
    }
}

impl std::fmt::Display for ItemFormat {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl std::str::FromStr for ItemFormat {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        ItemFormat::ALL
            .into_iter()
            .find(|f| f.name() == s)
            .ok_or_else(|| {
                Error::Config(format!(
                    "unknown format `{s}`: choose one of {}",
                    ItemFormat::ALL.map(ItemFormat::name).join(", ")
                ))
            })
    }
}

/// What [`crate::kind::dump_item`] wrote.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ItemDump {
    /// The item, as people name it (`sales.orders`, `shop.orders`,
    /// `0/user:1`).
    pub name: String,
    /// What it is: `table`, `collection` or `key`.
    pub item: &'static str,
    /// The format written.
    pub format: ItemFormat,
    /// Rows or documents written (1 for a key).
    pub count: u64,
    /// Bytes written.
    pub bytes: u64,
}

/// Opens the output once the item is found, with the format it will be
/// written in.
pub type OpenItem = Box<dyn FnOnce(ItemFormat) -> Result<Box<dyn Write + Send>> + Send>;

/// A writer that counts what goes through it.
#[cfg(any(feature = "postgres", feature = "mongodb", feature = "redis"))]
pub(crate) struct Counting<W> {
    pub(crate) inner: W,
    pub(crate) bytes: u64,
}

#[cfg(any(feature = "postgres", feature = "mongodb", feature = "redis"))]
impl<W: Write> Write for Counting<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.inner.write_all(buf)?;
        self.bytes += buf.len() as u64;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// The error of writing the output.
#[cfg(any(feature = "postgres", feature = "mongodb", feature = "redis"))]
pub(crate) fn write_error(e: std::io::Error) -> Error {
    Error::io("writing the dump", e)
}

/// The one row of a snapshot's [`contents`](crate::summary::contents)
/// that `path` names (components or a dotted name, as `backup ls` takes
/// them), with its index.
///
/// # Errors
///
/// [`Error::NotFound`] when no row matches, [`Error::Config`] when
/// several do (naming them).
#[cfg(any(feature = "postgres", feature = "mongodb"))]
pub(crate) fn one_row(
    snapshot: &backup_core::reader::SnapshotReader,
    path: &str,
) -> Result<(usize, crate::summary::ContentRow)> {
    let s = snapshot.snapshot();
    let contents = crate::summary::contents(&s.source.kind, &s.metadata)
        .ok_or_else(|| snapshot.damaged("metadata without a list of its contents"))?;
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    let item = contents.item;
    let mut found: Vec<(usize, crate::summary::ContentRow)> = contents
        .rows
        .into_iter()
        .enumerate()
        .filter(|(_, r)| !parts.is_empty() && r.is_under(&parts))
        .collect();
    // A row whose whole path (or dotted name) is the path wins over rows
    // under it (`public.t` names the table, not a schema `public.t`).
    if found.len() > 1 {
        let exact: Vec<_> = found
            .iter()
            .filter(|(_, r)| r.name == path || r.path.len() == parts.len())
            .cloned()
            .collect();
        if exact.len() == 1 {
            found = exact;
        }
    }
    match found.len() {
        0 => Err(Error::not_found(format!(
            "{item} `{path}` in snapshot {} (`backup ls {}` lists them)",
            snapshot.id().short(),
            snapshot.id().short()
        ))),
        1 => Ok(found.remove(0)),
        n => Err(Error::Config(format!(
            "`{path}` names {n} {item}s ({}{}): name one",
            found
                .iter()
                .take(5)
                .map(|(_, r)| r.name.as_str())
                .collect::<Vec<_>>()
                .join(", "),
            if n > 5 { ", ..." } else { "" }
        ))),
    }
}

/// Runs `write` on a blocking thread with the output `open` gives
/// (counted, flushed at the end); returns what `write` returns and the
/// bytes written.
#[cfg(any(feature = "postgres", feature = "mongodb", feature = "redis"))]
pub(crate) async fn write_blocking<T: Send + 'static>(
    format: ItemFormat,
    open: OpenItem,
    write: impl FnOnce(&mut dyn Write) -> Result<T> + Send + 'static,
) -> Result<(T, u64)> {
    tokio::task::spawn_blocking(move || {
        let mut out = Counting {
            inner: open(format)?,
            bytes: 0,
        };
        let t = write(&mut out)?;
        out.flush().map_err(write_error)?;
        Ok((t, out.bytes))
    })
    .await
    .map_err(|e| Error::target_caused("the dump stopped", e))?
}
