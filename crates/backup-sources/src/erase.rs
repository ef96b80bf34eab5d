//! Erasing rows, documents and keys from database snapshots (`backup
//! rewrite --pg-delete`, `--mongo-delete`, `--redis-delete`): the predicates, what each kind's
//! edits removed, and what the kinds share. The registry of kinds builds
//! a snapshot's edits ([`crate::kind::erase_edits`]); each kind's `erase`
//! module filters its own streams.
//!
//! A predicate's value is never shown: [`PgDelete::describe`] and
//! [`MongoDelete::describe`] name the table or collection and the
//! column or fields with `?` for the value, and [`RedisDelete::describe`]
//! hides the whole pattern (a key name is often the person), for
//! manifests, audit records and messages.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use backup_core::rewrite::Edits;
use backup_core::{Error, Result};

/// Rows of a PostgreSQL table whose column equals a value:
/// `schema.table:column = value`.
///
/// The value is compared with the column's stored text (the form
/// PostgreSQL's `COPY` writes: `42`, `x@example.com`, `2024-05-01`,
/// `t`); a NULL never matches. Quotes around the value (`'...'` or
/// `"..."`) are taken off; a name may be quoted with `"` to hold a dot.
#[derive(Clone, PartialEq, Eq)]
pub struct PgDelete {
    /// The table's schema.
    pub schema: String,
    /// The table.
    pub table: String,
    /// The column compared.
    pub column: String,
    value: String,
}

impl std::fmt::Debug for PgDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

/// Splits `a.b` at the first dot outside double quotes, unquoting both
/// names (`""` inside quotes is one quote).
fn split_dotted(s: &str) -> Option<(String, String)> {
    let mut parts = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                chars.next();
                cur.push('"');
            }
            '"' => quoted = !quoted,
            '.' if !quoted && parts.is_empty() => parts.push(std::mem::take(&mut cur)),
            c => cur.push(c),
        }
    }
    if quoted || parts.len() != 1 {
        return None;
    }
    parts.push(cur);
    let b = parts.pop()?;
    let a = parts.pop()?;
    (!a.is_empty() && !b.is_empty()).then_some((a, b))
}

impl PgDelete {
    /// Parses `schema.table:column = value`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for anything else, saying the expected form
    /// (without repeating the value).
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Config(format!(
                "--pg-delete: {why}; the form is 'schema.table:column = value' (sales.customers:id = 42)"
            ))
        };
        let (name, predicate) = s
            .split_once(':')
            .ok_or_else(|| bad("no `:` after the table"))?;
        let (schema, table) = split_dotted(name.trim())
            .ok_or_else(|| bad("name the table with its schema, as schema.table"))?;
        let (column, value) = predicate
            .split_once('=')
            .ok_or_else(|| bad("no `=` between the column and the value"))?;
        let column = column.trim();
        let column = column
            .strip_prefix('"')
            .and_then(|c| c.strip_suffix('"'))
            .map_or_else(|| column.to_owned(), |c| c.replace("\"\"", "\""));
        if column.is_empty() {
            return Err(bad("name one column before `=`"));
        }
        let value = value.trim();
        let value = ['\'', '"']
            .iter()
            .find_map(|q| value.strip_prefix(*q).and_then(|v| v.strip_suffix(*q)))
            .unwrap_or(value);
        if value.is_empty() {
            return Err(bad("no value after `=`"));
        }
        Ok(PgDelete {
            schema,
            table,
            column,
            value: value.to_owned(),
        })
    }

    /// `schema.table`.
    pub fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.table)
    }

    /// The predicate without its value: `schema.table:column = ?`.
    pub fn describe(&self) -> String {
        format!("{}:{} = ?", self.qualified(), self.column)
    }

    /// The value rows are compared with.
    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn value(&self) -> &[u8] {
        self.value.as_bytes()
    }
}

/// Documents of a MongoDB collection equal to a filter on their fields:
/// `db.collection:{"field": value, ...}` (every field equal; a dotted
/// field names a field inside a document; numbers of any type compare by
/// value; values in MongoDB Extended JSON, `{"$oid": "..."}`).
#[derive(Clone, PartialEq)]
pub struct MongoDelete {
    /// The database.
    pub db: String,
    /// The collection.
    pub collection: String,
    /// The fields compared (the names, without values).
    pub fields: Vec<String>,
    values: Vec<serde_json::Value>,
}

impl std::fmt::Debug for MongoDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl MongoDelete {
    /// Parses `db.collection:{"field": value, ...}`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for anything else, saying the expected form.
    pub fn parse(s: &str) -> Result<Self> {
        let bad = |why: &str| {
            Error::Config(format!(
                "--mongo-delete: {why}; the form is 'db.collection:{{\"field\": \"value\"}}' (crm.people:{{\"email\": \"x@example.com\"}})"
            ))
        };
        let (name, filter) = s
            .split_once(':')
            .ok_or_else(|| bad("no `:` after the collection"))?;
        let (db, collection) = name
            .trim()
            .split_once('.')
            .filter(|(d, c)| !d.is_empty() && !c.is_empty())
            .ok_or_else(|| bad("name the collection with its database, as db.collection"))?;
        let filter: serde_json::Value = serde_json::from_str(filter.trim())
            .map_err(|_| bad("the filter is not a JSON object"))?;
        let serde_json::Value::Object(map) = filter else {
            return Err(bad("the filter is not a JSON object"));
        };
        if map.is_empty() {
            return Err(bad(
                "the filter names no field (it would erase every document)",
            ));
        }
        let mut fields = Vec::new();
        let mut values = Vec::new();
        for (k, v) in map {
            if k.starts_with('$') || k.is_empty() {
                return Err(bad(&format!(
                    "`{k}` is not a field: only equality on fields is supported"
                )));
            }
            if let serde_json::Value::Object(o) = &v {
                if o.keys().any(|k| {
                    k.starts_with('$')
                        && !matches!(
                            k.as_str(),
                            "$oid"
                                | "$date"
                                | "$numberLong"
                                | "$numberInt"
                                | "$numberDouble"
                                | "$numberDecimal"
                                | "$uuid"
                                | "$binary"
                        )
                }) {
                    return Err(bad(&format!(
                        "the value of `{k}` is an operator: only equality is supported"
                    )));
                }
            }
            fields.push(k);
            values.push(v);
        }
        Ok(MongoDelete {
            db: db.to_owned(),
            collection: collection.to_owned(),
            fields,
            values,
        })
    }

    /// `db.collection`.
    pub fn namespace(&self) -> String {
        format!("{}.{}", self.db, self.collection)
    }

    /// The filter without its values: `db.collection:{field: ?, ...}`.
    pub fn describe(&self) -> String {
        format!(
            "{}:{{{}}}",
            self.namespace(),
            self.fields
                .iter()
                .map(|f| format!("{f}: ?"))
                .collect::<Vec<_>>()
                .join(", ")
        )
    }

    /// The fields with their values (Extended JSON).
    #[cfg_attr(not(feature = "mongodb"), allow(dead_code))]
    pub(crate) fn pairs(&self) -> impl Iterator<Item = (&str, &serde_json::Value)> {
        self.fields.iter().map(String::as_str).zip(&self.values)
    }
}

/// Redis keys whose name matches a glob (Redis's `KEYS`/`SCAN MATCH`
/// syntax: `*`, `?`, `[...]`, `\\` escapes), in every database:
/// `user:42:*`.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisDelete {
    pattern: Vec<u8>,
}

impl std::fmt::Debug for RedisDelete {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.describe())
    }
}

impl RedisDelete {
    /// Parses a key pattern.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an empty pattern, and for `*` alone (it
    /// would erase every key: forget the snapshots instead).
    pub fn parse(s: &str) -> Result<Self> {
        if s.is_empty() {
            return Err(Error::Config(
                "--redis-delete: an empty pattern; give a key glob such as 'user:42:*'".to_owned(),
            ));
        }
        if s.bytes().all(|b| b == b'*') {
            return Err(Error::Config(
                "--redis-delete: the pattern matches every key; to erase everything, forget the snapshots (`backup forget`)".to_owned(),
            ));
        }
        Ok(RedisDelete {
            pattern: s.as_bytes().to_vec(),
        })
    }

    /// The predicate without its pattern: `redis:keys matching ?`.
    pub fn describe(&self) -> String {
        "redis:keys matching ?".to_owned()
    }

    /// Whether `key` matches.
    #[cfg(feature = "redis")]
    pub(crate) fn matches(&self, key: &[u8]) -> bool {
        crate::redis::glob::glob_match(&self.pattern, key)
    }
}

/// What to erase from database snapshots.
#[derive(Debug, Clone, Default)]
pub struct Erasures {
    /// PostgreSQL rows (logical snapshots).
    pub pg: Vec<PgDelete>,
    /// MongoDB documents.
    pub mongo: Vec<MongoDelete>,
    /// Redis keys.
    pub redis: Vec<RedisDelete>,
}

impl Erasures {
    /// Whether nothing is to be erased.
    pub fn is_empty(&self) -> bool {
        self.pg.is_empty() && self.mongo.is_empty() && self.redis.is_empty()
    }

    /// Every predicate described without its value (Redis patterns, all
    /// described alike, once).
    pub fn describe(&self) -> Vec<String> {
        let mut out: Vec<String> = self
            .pg
            .iter()
            .map(PgDelete::describe)
            .chain(self.mongo.iter().map(MongoDelete::describe))
            .collect();
        if let Some(r) = self.redis.first() {
            out.push(r.describe());
        }
        out
    }
}

/// Rows or documents removed, per table or collection, as the edits
/// count them while the rewrite reads.
#[derive(Debug, Default)]
pub struct Removed(Mutex<BTreeMap<String, Counts>>);

/// What was removed from one table or collection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize)]
pub struct Counts {
    /// Rows or documents (oplog entries for `oplog`).
    pub records: u64,
    /// Their bytes as stored.
    pub bytes: u64,
}

impl Removed {
    /// Adds to `item`'s counts.
    pub fn add(&self, item: &str, records: u64, bytes: u64) {
        let mut map = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let c = map.entry(item.to_owned()).or_default();
        c.records += records;
        c.bytes += bytes;
    }

    /// The counts so far, by item.
    pub fn counts(&self) -> BTreeMap<String, Counts> {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone()
    }
}

/// A snapshot's edits, made by [`crate::kind::erase_edits`].
pub struct KindEdits {
    /// The edits to rewrite the snapshot with; `None` when no predicate
    /// names anything the snapshot holds.
    pub edits: Option<Arc<dyn Edits>>,
    /// Which predicates name something the snapshot holds, by their
    /// [`describe`](PgDelete::describe) form.
    pub applies: Vec<String>,
    /// What the edits removed, filled while the rewrite reads.
    pub removed: Arc<Removed>,
}

impl std::fmt::Debug for KindEdits {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KindEdits")
            .field("applies", &self.applies)
            .finish_non_exhaustive()
    }
}

/// A record-by-record filter over a stored stream: `next` reads one
/// record into the buffer (or `false` at the end), `keep` says whether
/// it stays; removed records are counted.
#[cfg_attr(not(any(feature = "postgres", feature = "mongodb")), allow(dead_code))]
pub(crate) struct RecordFilter<R, N, K> {
    pub(crate) inner: R,
    pub(crate) next: N,
    pub(crate) keep: K,
    pub(crate) out: Vec<u8>,
    pub(crate) pos: usize,
    pub(crate) done: bool,
}

impl<R, N, K> std::io::Read for RecordFilter<R, N, K>
where
    R: std::io::BufRead,
    N: FnMut(&mut R, &mut Vec<u8>) -> std::io::Result<bool>,
    K: FnMut(&[u8]) -> std::io::Result<bool>,
{
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.out.len() && !self.done {
            self.out.clear();
            self.pos = 0;
            let mut record = Vec::new();
            // Gather kept records up to 64 KiB per refill.
            while self.out.len() < 1 << 16 {
                record.clear();
                if !(self.next)(&mut self.inner, &mut record)? {
                    self.done = true;
                    break;
                }
                if (self.keep)(&record)? {
                    self.out.extend_from_slice(&record);
                }
            }
        }
        let n = buf.len().min(self.out.len() - self.pos);
        buf[..n].copy_from_slice(&self.out[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pg_predicates_parse_and_hide_their_value() {
        let p = PgDelete::parse("sales.customers:id = 42").unwrap();
        assert_eq!(
            (p.schema.as_str(), p.table.as_str(), p.column.as_str()),
            ("sales", "customers", "id")
        );
        assert_eq!(p.value(), b"42");
        assert_eq!(p.describe(), "sales.customers:id = ?");
        assert!(!format!("{p:?}").contains("42"));
        let p = PgDelete::parse(r#""odd.schema".t:email='x@example.com'"#).unwrap();
        assert_eq!(p.schema, "odd.schema");
        assert_eq!(p.value(), b"x@example.com");
        for bad in [
            "customers:id = 42",
            "sales.customers id = 42",
            "sales.customers:id",
            "sales.customers:id =",
            "sales.customers: = 4",
        ] {
            let e = PgDelete::parse(bad).unwrap_err().to_string();
            assert!(e.contains("schema.table:column = value"), "{bad}: {e}");
        }
    }

    #[test]
    fn mongo_filters_parse_equality_only() {
        let m = MongoDelete::parse(r#"crm.people:{"email": "x@example.com", "n": 1}"#).unwrap();
        assert_eq!(m.namespace(), "crm.people");
        assert_eq!(m.describe(), "crm.people:{email: ?, n: ?}");
        assert!(!format!("{m:?}").contains("example"));
        let m =
            MongoDelete::parse(r#"crm.a.b:{"_id": {"$oid": "0123456789abcdef01234567"}}"#).unwrap();
        assert_eq!(m.collection, "a.b");
        for bad in [
            "crm.people",
            "people:{\"a\":1}",
            "crm.people:{}",
            "crm.people:[1]",
            "crm.people:{\"$or\": []}",
            "crm.people:{\"a\": {\"$gt\": 1}}",
        ] {
            assert!(MongoDelete::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn record_filters_drop_and_keep() {
        let input = b"1\ta\n2\tb\n3\tc\n".to_vec();
        let mut removed = 0;
        let mut f = RecordFilter {
            inner: std::io::BufReader::new(&input[..]),
            next: |r: &mut std::io::BufReader<&[u8]>, rec: &mut Vec<u8>| -> std::io::Result<bool> {
                use std::io::BufRead as _;
                Ok(r.read_until(b'\n', rec)? > 0)
            },
            keep: |rec: &[u8]| -> std::io::Result<bool> {
                let keep = !rec.starts_with(b"2\t");
                if !keep {
                    removed += 1;
                }
                Ok(keep)
            },
            out: Vec::new(),
            pos: 0,
            done: false,
        };
        let mut out = String::new();
        std::io::Read::read_to_string(&mut f, &mut out).unwrap();
        drop(f);
        assert_eq!(out, "1\ta\n3\tc\n");
        assert_eq!(removed, 1);
    }
}
