//! What a restore will do, decided before anything is written: the checks
//! of the target, the tables and schema entries to restore.

use std::collections::{BTreeMap, HashSet};

use backup_core::restorer::RestoreStats;
use backup_core::{Error, Result};
use tokio_postgres::Client;

use super::database::{self, Found};
use super::schema::entry_label;
use super::snapshot::Loaded;
use crate::postgres::conn::ConnInfo;
use crate::postgres::script::{tokens, Entry, Statement, Tok};
use crate::postgres::tools::{major_name, major_of};
use crate::postgres::{TableFilter, TableMeta};

/// Entry types that define relations a merge restore recreates when they
/// depend on a replaced table.
const RECREATED_KINDS: [&str; 4] = ["VIEW", "MATERIALIZED VIEW", "SEQUENCE", "SEQUENCE OWNED BY"];

/// Entry types of shared definitions a merge restore creates when missing
/// (and keeps when present).
const DEFINITION_KINDS: [&str; 18] = [
    "SCHEMA",
    "EXTENSION",
    "TYPE",
    "DOMAIN",
    "FUNCTION",
    "PROCEDURE",
    "AGGREGATE",
    "OPERATOR",
    "OPERATOR CLASS",
    "OPERATOR FAMILY",
    "COLLATION",
    "CONVERSION",
    "CAST",
    "SEQUENCE",
    "TEXT SEARCH CONFIGURATION",
    "TEXT SEARCH DICTIONARY",
    "PROCEDURAL LANGUAGE",
    "SHELL TYPE",
];

/// What will be restored.
pub(super) struct Plan {
    pub(super) tables: Vec<usize>,
    pub(super) pre: Vec<Entry>,
    pub(super) data: Vec<Entry>,
    pub(super) post: Vec<Entry>,
    pub(super) skipped: Vec<String>,
    /// Relations the restore creates (`schema.name`) for a merge restore.
    pub(super) objects: BTreeMap<String, u64>,
}

/// How the restore treats the target database.
pub(super) struct Mode {
    /// The database exists.
    pub(super) exists: bool,
    /// Drop and recreate the database (a full restore over a non-empty
    /// one).
    pub(super) recreate: bool,
    /// Replace the selected tables and keep the rest (a selective restore
    /// over a non-empty database).
    pub(super) merge: bool,
}

impl Mode {
    pub(super) fn new(found: &Found, selective: bool) -> Self {
        // A full restore over a non-empty database recreates it; a
        // selective one replaces the selected tables and keeps the rest.
        Mode {
            exists: found.exists,
            recreate: found.objects > 0 && !selective,
            merge: found.objects > 0 && selective,
        }
    }

    pub(super) fn action(&self) -> &'static str {
        if self.recreate {
            "drop and recreate the database"
        } else if self.merge {
            "replace the selected tables in the existing database"
        } else if self.exists {
            "restore into the existing empty database"
        } else {
            "create the database"
        }
    }
}

/// Checks the target before anything is written: a server not older than
/// the snapshot's, and a database that is missing or empty unless `drop`.
/// Returns what the database holds.
pub(super) async fn preflight(
    info: &ConnInfo,
    admin: &Client,
    loaded: &Loaded,
    drop: bool,
) -> Result<Found> {
    let version = database::server_version_num(admin).await?;
    let target_major = major_of(u32::try_from(version).unwrap_or(0));
    let source_major = major_of(loaded.meta.server_version_num);
    if target_major < source_major {
        return Err(Error::target_failed(format!(
            "{} runs PostgreSQL {}, older than the snapshot's PostgreSQL {} ({}); restore into PostgreSQL {} or newer (nothing was changed)",
            info.location(),
            major_name(target_major),
            major_name(source_major),
            loaded.meta.server_version,
            major_name(source_major)
        )));
    }
    let found = database::inspect(info, admin).await?;
    let objects = found.objects;
    if objects > 0 && !drop {
        return Err(Error::target_failed(format!(
            "database `{}` on {} is not empty ({objects} objects); restore into a new or empty database, or pass --drop to replace what the snapshot holds (nothing was changed)",
            info.dbname(),
            info.location()
        )));
    }
    Ok(found)
}

/// Chooses what to restore. `existing` holds the relations already in the
/// target (a merge restore keeps them); unselected tables not in it are
/// missing, and every entry that refers to a missing relation is left out
/// (and what it defines becomes missing too).
pub(super) fn plan(
    loaded: &Loaded,
    filter: &TableFilter,
    existing: &HashSet<(String, String)>,
) -> Result<Plan> {
    let tables = select_tables(loaded, filter)?;
    let mut pruner = Pruner::new(loaded, &tables, existing);
    let pre = pruner.keep(&loaded.pre.entries);
    let data = pruner.keep(&loaded.data.entries);
    let post = pruner.keep(&loaded.post.entries);
    check_created(loaded, &tables, &pre, existing)?;
    Ok(Plan {
        tables,
        pre,
        data,
        post,
        skipped: pruner.skipped,
        objects: pruner.objects,
    })
}

/// The tables the filter selects, by index in the manifest.
fn select_tables(loaded: &Loaded, filter: &TableFilter) -> Result<Vec<usize>> {
    let tables: Vec<usize> = if filter.is_empty() {
        (0..loaded.meta.tables.len()).collect()
    } else {
        let chosen: HashSet<(String, String)> = filter
            .select(&loaded.meta.tables)
            .into_iter()
            .map(|t| (t.schema.clone(), t.name.clone()))
            .collect();
        loaded
            .meta
            .tables
            .iter()
            .enumerate()
            .filter(|(_, t)| chosen.contains(&(t.schema.clone(), t.name.clone())))
            .map(|(i, _)| i)
            .collect()
    };
    if !filter.is_empty() && tables.is_empty() {
        return Err(Error::Config(
            "the --include/--exclude patterns select no table of the snapshot (patterns are globs over schema.table; a pattern without a dot names a schema)".to_owned(),
        ));
    }
    Ok(tables)
}

/// Fails when a selected table is neither created by the `pre` entries
/// kept nor already in the target.
fn check_created(
    loaded: &Loaded,
    tables: &[usize],
    pre: &[Entry],
    existing: &HashSet<(String, String)>,
) -> Result<()> {
    let created: HashSet<(String, String)> = pre
        .iter()
        .filter(|e| e.kind == "TABLE")
        .map(|e| (e.schema.clone(), e.name.clone()))
        .collect();
    let lost: Vec<String> = tables
        .iter()
        .map(|&i| &loaded.meta.tables[i])
        .filter(|t| !created.contains(&(t.schema.clone(), t.name.clone())))
        .filter(|t| !existing.contains(&(t.schema.clone(), t.name.clone())))
        .map(TableMeta::qualified)
        .collect();
    if !lost.is_empty() {
        return Err(Error::Config(format!(
            "table(s) {} cannot be restored without tables they depend on (inheritance parents or column types); include those too",
            lost.join(", ")
        )));
    }
    Ok(())
}

/// Decides, entry by entry and in script order, which entries the restore
/// keeps (see [`plan`]).
struct Pruner {
    selected: HashSet<(String, String)>,
    unselected: HashSet<(String, String)>,
    missing: HashSet<(String, String)>,
    merge: bool,
    /// Merge restores: relations recreated by this restore (selected tables,
    /// views and sequences that depend on them).
    recreated: HashSet<(String, String)>,
    skipped: Vec<String>,
    objects: BTreeMap<String, u64>,
}

impl Pruner {
    fn new(loaded: &Loaded, tables: &[usize], existing: &HashSet<(String, String)>) -> Self {
        let selected: HashSet<(String, String)> = tables
            .iter()
            .map(|&i| {
                let t = &loaded.meta.tables[i];
                (t.schema.clone(), t.name.clone())
            })
            .collect();
        // Unselected tables are never created; those absent from the target
        // are missing.
        let unselected: HashSet<(String, String)> = loaded
            .meta
            .tables
            .iter()
            .map(|t| (t.schema.clone(), t.name.clone()))
            .filter(|k| !selected.contains(k))
            .collect();
        let missing: HashSet<(String, String)> = unselected
            .iter()
            .filter(|k| !existing.contains(*k))
            .cloned()
            .collect();
        Pruner {
            recreated: selected.clone(),
            selected,
            unselected,
            missing,
            merge: !existing.is_empty(),
            skipped: Vec::new(),
            objects: BTreeMap::new(),
        }
    }

    /// The entries kept, counted in `objects`.
    fn keep(&mut self, entries: &[Entry]) -> Vec<Entry> {
        let mut out = Vec::new();
        for e in entries {
            let keep = if self.merge {
                self.keeps_merging(e)
            } else {
                self.keeps(e)
            };
            if keep {
                *self.objects.entry(e.kind.clone()).or_default() += 1;
                out.push(e.clone());
            }
        }
        out
    }

    /// A merge restore keeps the selected tables, what depends on a
    /// recreated relation, and shared definitions that need no unselected
    /// table.
    fn keeps_merging(&mut self, e: &Entry) -> bool {
        let own = (e.schema.clone(), e.name.clone());
        let refs = e.qualified_names();
        if e.kind == "TABLE" {
            self.selected.contains(&own)
        } else if refs.iter().any(|r| self.recreated.contains(r)) {
            if RECREATED_KINDS.contains(&e.kind.as_str()) {
                self.recreated.insert(own.clone());
            }
            true
        } else if e.kind == "SEQUENCE SET" {
            self.recreated.contains(&own)
        } else {
            DEFINITION_KINDS.contains(&e.kind.as_str())
                && !refs.iter().any(|r| self.unselected.contains(r))
        }
    }

    /// Otherwise an entry is left out when it is an unselected table,
    /// defines something missing or refers to it; what it defines becomes
    /// missing too.
    fn keeps(&mut self, e: &Entry) -> bool {
        let own = (e.schema.clone(), e.name.clone());
        let refs = e.qualified_names();
        let is_unselected_table = e.kind == "TABLE" && self.unselected.contains(&own);
        let bad = refs.iter().find(|r| self.missing.contains(*r)).cloned();
        if is_unselected_table || self.missing.contains(&own) || bad.is_some() {
            if !is_unselected_table {
                if let Some((s, n)) = &bad {
                    self.skipped.push(format!(
                        "{} {} (needs {s}.{n}, which is not restored)",
                        e.kind,
                        entry_label(e)
                    ));
                }
            }
            self.missing.insert(own);
            if e.kind.contains("CONSTRAINT") || e.kind == "INDEX" {
                if let Some(n) = constraint_name(e) {
                    self.missing.insert((e.schema.clone(), n));
                }
            }
            return false;
        }
        true
    }
}

/// The name after `CONSTRAINT` (or `INDEX`) in an entry's statements.
fn constraint_name(e: &Entry) -> Option<String> {
    for s in &e.statements {
        if let Statement::Sql(t) = s {
            let toks = tokens(t);
            for w in toks.windows(2) {
                if let (Tok::Ident(k), Tok::Ident(n)) = (&w[0], &w[1]) {
                    if k == "constraint" || (k == "index" && n != "on") {
                        return Some(n.clone());
                    }
                }
            }
        }
    }
    None
}

impl Plan {
    /// Rows of the selected tables, by the manifest.
    pub(super) fn rows(&self, loaded: &Loaded) -> u64 {
        self.tables
            .iter()
            .map(|&i| loaded.meta.tables[i].rows)
            .sum()
    }

    /// Bytes of the selected tables' parts.
    pub(super) fn data_bytes(&self, loaded: &Loaded) -> u64 {
        self.tables
            .iter()
            .flat_map(|&i| loaded.parts[i].iter())
            .map(|n| n.size)
            .sum()
    }

    /// What the restore reads: the selected parts and the three schema
    /// scripts.
    pub(super) fn stats(&self, loaded: &Loaded) -> RestoreStats {
        let streams: u64 = self
            .tables
            .iter()
            .map(|&i| loaded.parts[i].len() as u64)
            .sum();
        RestoreStats {
            files: streams + 3,
            dirs: 0,
            symlinks: 0,
            bytes: self.data_bytes(loaded) + loaded.schema_bytes,
        }
    }
}
