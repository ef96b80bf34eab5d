//! MongoDB: a parallel dump made consistent by the oplog, and a restore
//! that rebuilds collections, indexes and views, optionally renamed.
//!
//! # Backup ([`MongoSource`])
//!
//! Every user database (not `admin`, `local` or `config`), or the one the
//! URL names, narrowed by `--include` / `--exclude` patterns over
//! `db.collection`. Per collection, the documents are streamed as raw BSON
//! exactly as the server sends them (never decoded and re-encoded), several
//! collections at once. Metadata (the `listCollections` entry with the
//! options and UUID, and every `listIndexes` spec) is stored next to them;
//! views are metadata only.
//!
//! On a replica set the newest oplog entry is recorded before the first
//! collection is read; once every collection has been read, the oplog
//! entries after it up to the newest one are captured into `oplog.bson`
//! (as `mongodump --oplog` does). Replaying them over the copied documents
//! gives the state at the end time. A standalone server has no oplog: the
//! snapshot says so (and is not a point in time).
//!
//! The snapshot tree:
//!
//! ```text
//! databases/<db>/<collection>/documents.bson   concatenated BSON documents
//! databases/<db>/<collection>/metadata.bson    one document: `listCollections` entry + indexes
//! oplog.bson                                   captured oplog entries, in `ts` order
//! security/users.bson                          users with password hashes (on request)
//! security/roles.bson                          user-defined roles (on request)
//! ```
//!
//! # Restore ([`MongoTarget`])
//!
//! Collections are created with their options, documents go in as
//! unordered bulk inserts from several workers, batched up to the server's
//! message and batch limits; counts are checked against the manifest;
//! indexes are built after the data, views after their sources; then the
//! captured oplog is replayed with ordinary commands (no `applyOps`).

mod at;
pub(crate) mod conn;
pub(crate) mod erase;
pub(crate) mod export;
pub mod follow;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
pub(crate) mod item;
mod oplog;
mod replset;
mod security;
mod source;
mod target;

use mongodb::bson;
use serde::{Deserialize, Serialize};

pub use crate::capture::{FollowOptions, FollowSummary};
pub use at::dump_collection_at;
pub use follow::{follow, OPLOG_KIND, SLICE_TIME};
pub use source::MongoSource;
pub use target::MongoTarget;

/// Databases never backed up.
pub(crate) const INTERNAL_DATABASES: [&str; 3] = ["admin", "local", "config"];

/// Name of a collection's documents stream.
pub(crate) const DOCUMENTS: &str = "documents.bson";
/// Name of a collection's metadata stream.
pub(crate) const METADATA: &str = "metadata.bson";
/// Name of the captured oplog stream.
pub(crate) const OPLOG: &str = "oplog.bson";
/// Directory of the databases.
pub(crate) const DATABASES: &str = "databases";

/// An oplog timestamp.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq, PartialOrd, Ord, Default)]
pub(crate) struct Ts {
    /// Seconds.
    pub(crate) t: u32,
    /// Increment.
    pub(crate) i: u32,
}

impl From<bson::Timestamp> for Ts {
    fn from(t: bson::Timestamp) -> Self {
        Ts {
            t: t.time,
            i: t.increment,
        }
    }
}

impl From<Ts> for bson::Timestamp {
    fn from(t: Ts) -> Self {
        bson::Timestamp {
            time: t.t,
            increment: t.i,
        }
    }
}

impl Ts {
    /// The position right after this timestamp.
    pub(crate) fn next(self) -> Ts {
        self.step(|v| v.saturating_add(1))
    }

    /// The position right before this one.
    pub(crate) fn prev(self) -> Ts {
        self.step(|v| v.saturating_sub(1))
    }

    /// The timestamp `by` moves this one to, counting seconds then
    /// increment as one number.
    fn step(self, by: fn(u64) -> u64) -> Ts {
        let v = by(u64::from(self.t) << 32 | u64::from(self.i));
        Ts {
            t: (v >> 32) as u32,
            i: v as u32,
        }
    }

    /// Parses a capture position.
    pub(crate) fn from_position(p: &str) -> Option<Ts> {
        crate::capture::oplog_parts(p).map(|(t, i)| Ts { t, i })
    }
}

impl From<Ts> for crate::capture::Position {
    fn from(ts: Ts) -> Self {
        crate::capture::Position::Oplog {
            seconds: ts.t,
            increment: ts.i,
        }
    }
}

impl std::fmt::Display for Ts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.t, self.i)
    }
}

/// The captured oplog range.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct OplogRange {
    /// Newest entry before the first collection was read (excluded).
    pub(crate) start: Ts,
    /// Newest entry once every collection was read (included).
    pub(crate) end: Ts,
    /// Entries captured.
    pub(crate) entries: u64,
    /// Bytes captured.
    pub(crate) bytes: u64,
}

/// A replica set: its name and, when the server tells
/// (`replSetGetConfig`), its `replicaSetId`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct ReplicaSet {
    pub(crate) name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
}

impl ReplicaSet {
    /// The identity of its oplog capture stream: `NAME/ID`, or `NAME`
    /// when the id is unknown.
    pub(crate) fn identity(&self) -> String {
        match &self.id {
            Some(id) => format!("{}/{id}", self.name),
            None => self.name.clone(),
        }
    }
}

/// One collection or view in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct CollectionMeta {
    pub(crate) db: String,
    pub(crate) name: String,
    /// `collection`, `view` or `timeseries`.
    pub(crate) kind: String,
    /// The collection's UUID (hex), when the server reports one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) uuid: Option<String>,
    /// Documents copied.
    pub(crate) documents: u64,
    /// Bytes of BSON copied.
    pub(crate) bytes: u64,
    /// Indexes (including `_id_`).
    pub(crate) indexes: usize,
}

impl CollectionMeta {
    pub(crate) fn ns(&self) -> String {
        format!("{}.{}", self.db, self.name)
    }

    pub(crate) fn is_view(&self) -> bool {
        self.kind == "view"
    }
}

/// What the source was asked to back up (used to select oplog entries).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct Scope {
    /// The database of the URL, if it named one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) database: Option<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) includes: Vec<String>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) excludes: Vec<String>,
}

/// The source metadata stored in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Metadata {
    pub(crate) server_version: String,
    /// `replica set NAME`, `standalone` or `sharded (mongos)`.
    pub(crate) topology: String,
    /// Whether the backup is a consistent point in time (oplog captured).
    pub(crate) consistent: bool,
    /// The replica set, on a replica set (what continuous capture of its
    /// oplog continues from this snapshot).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) replica_set: Option<ReplicaSet>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) oplog: Option<OplogRange>,
    pub(crate) scope: Scope,
    pub(crate) collection_count: usize,
    pub(crate) view_count: usize,
    pub(crate) total_documents: u64,
    pub(crate) total_bytes: u64,
    pub(crate) collections: Vec<CollectionMeta>,
    /// Users backed up (`user@db`), when asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) users: Vec<String>,
    /// User-defined roles backed up (`role@db`), when asked for.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) roles: Vec<String>,
}

pub(crate) use crate::names::tree_name;

/// `--include`/`--exclude` patterns over `db.collection` (globs; a pattern
/// without a dot names a database).
#[derive(Debug, Clone)]
pub(crate) struct NsFilter {
    include: Option<globset::GlobSet>,
    exclude: Option<globset::GlobSet>,
}

impl NsFilter {
    pub(crate) fn new(includes: &[String], excludes: &[String]) -> backup_core::Result<Self> {
        let build = |pats: &[String]| -> backup_core::Result<Option<globset::GlobSet>> {
            if pats.is_empty() {
                return Ok(None);
            }
            let mut b = globset::GlobSetBuilder::new();
            for p in pats {
                if p.is_empty() {
                    return Err(backup_core::Error::Config(
                        "empty namespace pattern".to_owned(),
                    ));
                }
                let full = if p.contains('.') {
                    p.clone()
                } else {
                    format!("{p}.*")
                };
                b.add(
                    globset::GlobBuilder::new(&full)
                        .literal_separator(false)
                        .backslash_escape(true)
                        .build()
                        .map_err(|e| {
                            backup_core::Error::Config(format!(
                                "invalid namespace pattern `{p}`: {e}"
                            ))
                        })?,
                );
            }
            b.build()
                .map(Some)
                .map_err(|e| backup_core::Error::Config(format!("invalid namespace patterns: {e}")))
        };
        Ok(NsFilter {
            include: build(includes)?,
            exclude: build(excludes)?,
        })
    }

    /// The patterns of `includes` and `excludes` that match no
    /// `(db, collection)` of `namespaces`, as report lines.
    pub(crate) fn unmatched(
        includes: &[String],
        excludes: &[String],
        namespaces: &[(&str, &str)],
    ) -> backup_core::Result<Vec<String>> {
        let mut out = Vec::new();
        for (flag, pats) in [("--include", includes), ("--exclude", excludes)] {
            for p in pats {
                let one = NsFilter::new(std::slice::from_ref(p), &[])?;
                if !namespaces.iter().any(|(db, coll)| one.matches(db, coll)) {
                    out.push(format!(
                        "{flag} `{p}` matched no collection of the snapshot"
                    ));
                }
            }
        }
        Ok(out)
    }

    /// Whether `db.coll` is selected.
    pub(crate) fn matches(&self, db: &str, coll: &str) -> bool {
        let q = format!("{db}.{coll}");
        self.include.as_ref().is_none_or(|g| g.is_match(&q))
            && !self.exclude.as_ref().is_some_and(|g| g.is_match(&q))
    }
}

impl Scope {
    /// Whether the source's scope covered `db.coll`.
    pub(crate) fn covers(&self, db: &str, coll: &str) -> backup_core::Result<bool> {
        if INTERNAL_DATABASES.contains(&db) || coll.starts_with("system.") {
            return Ok(false);
        }
        if self.database.as_ref().is_some_and(|d| d != db) {
            return Ok(false);
        }
        Ok(NsFilter::new(&self.includes, &self.excludes)?.matches(db, coll))
    }
}

/// `--rename` rules: `db.coll:db2.coll2` for one collection, `db:db2` for a
/// database. Collection rules win over database rules.
#[derive(Debug, Clone, Default)]
pub(crate) struct Renames {
    collections: Vec<((String, String), (String, String))>,
    databases: Vec<(String, String)>,
}

/// Why `name` cannot name a MongoDB database: empty, 64 bytes or more,
/// or holding a character MongoDB forbids in database names
/// (`/\\. "$` and NUL).
pub(crate) fn check_database_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a database name cannot be empty".to_owned());
    }
    if name.len() >= 64 {
        return Err(format!(
            "database name `{name}` has {} bytes; MongoDB allows at most 63",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| "/\\. \"$\0".contains(*c)) {
        return Err(format!(
            "database name `{name}` contains {}, which MongoDB does not allow in database names (none of / \\ . space \" $ NUL)",
            if c == '\0' { "NUL".to_owned() } else { format!("`{c}`") }
        ));
    }
    Ok(())
}

/// Why `name` cannot name a collection a restore creates: empty, holding
/// `$` or NUL, or in the reserved `system.` namespace.
pub(crate) fn check_collection_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("a collection name cannot be empty".to_owned());
    }
    if name.contains(['$', '\0']) {
        return Err(format!(
            "collection name `{name}` contains `$` or NUL, which MongoDB does not allow"
        ));
    }
    if name.starts_with("system.") {
        return Err(format!(
            "collection name `{name}` is in the reserved system. namespace"
        ));
    }
    Ok(())
}

fn renamed_to(rule: &str, why: &str) -> backup_core::Error {
    backup_core::Error::Config(format!("invalid --rename `{rule}`: {why}"))
}

impl Renames {
    pub(crate) fn parse(rules: &[String]) -> backup_core::Result<Self> {
        let mut r = Renames::default();
        for rule in rules {
            let bad = || {
                backup_core::Error::Config(format!(
                    "invalid --rename `{rule}`: use db.coll:db2.coll2 or db:db2"
                ))
            };
            let (from, to) = rule.split_once(':').ok_or_else(bad)?;
            if from.is_empty() || to.is_empty() {
                return Err(bad());
            }
            match (from.split_once('.'), to.split_once('.')) {
                (Some((fd, fc)), Some((td, tc))) => {
                    if fd.is_empty() || fc.is_empty() || td.is_empty() || tc.is_empty() {
                        return Err(bad());
                    }
                    check_database_name(td).map_err(|why| renamed_to(rule, &why))?;
                    check_collection_name(tc).map_err(|why| renamed_to(rule, &why))?;
                    r.collections.push((
                        (fd.to_owned(), fc.to_owned()),
                        (td.to_owned(), tc.to_owned()),
                    ));
                }
                (None, None) => {
                    check_database_name(to).map_err(|why| renamed_to(rule, &why))?;
                    r.databases.push((from.to_owned(), to.to_owned()));
                }
                _ => return Err(bad()),
            }
        }
        Ok(r)
    }

    /// Whether a database rule renames `db`.
    pub(crate) fn has_database_rule(&self, db: &str) -> bool {
        self.databases.iter().any(|(from, _)| from == db)
    }

    /// The target namespace of `db.coll`.
    pub(crate) fn map(&self, db: &str, coll: &str) -> (String, String) {
        for ((fd, fc), to) in &self.collections {
            if fd == db && fc == coll {
                return to.clone();
            }
        }
        for (fd, td) in &self.databases {
            if fd == db {
                return (td.clone(), coll.to_owned());
            }
        }
        (db.to_owned(), coll.to_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_scope() {
        let f = NsFilter::new(&["shop.orders".into(), "crm".into()], &["crm.tmp*".into()]).unwrap();
        assert!(f.matches("shop", "orders"));
        assert!(!f.matches("shop", "users"));
        assert!(f.matches("crm", "people"));
        assert!(!f.matches("crm", "tmp_1"));
        let s = Scope {
            database: Some("shop".into()),
            ..Scope::default()
        };
        assert!(s.covers("shop", "x").unwrap());
        assert!(!s.covers("crm", "x").unwrap());
        assert!(!s.covers("shop", "system.views").unwrap());
        assert!(!Scope::default().covers("admin", "x").unwrap());
    }

    #[test]
    fn renames() {
        let r = Renames::parse(&[
            "shop.orders:archive.orders_2024".into(),
            "shop:shop2".into(),
        ])
        .unwrap();
        assert_eq!(
            r.map("shop", "orders"),
            ("archive".into(), "orders_2024".into())
        );
        assert_eq!(r.map("shop", "users"), ("shop2".into(), "users".into()));
        assert_eq!(r.map("crm", "users"), ("crm".into(), "users".into()));
        assert!(Renames::parse(&["shop.orders:archive".into()]).is_err());
        assert!(Renames::parse(&["nocolon".into()]).is_err());
    }

    #[test]
    fn tree_names() {
        assert_eq!(tree_name("a/b%c"), "a%2Fb%25c");
        assert_eq!(tree_name(".."), "%2E%2E");
    }
}
