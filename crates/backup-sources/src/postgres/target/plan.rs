//! What a restore will do, decided before anything is written: the checks
//! of the target, the tables and schema entries to restore.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use backup_core::restorer::RestoreStats;
use backup_core::{Error, Result};
use tokio_postgres::Client;

use super::database::{self, Found};
use super::snapshot::Loaded;
use crate::postgres::conn::ConnInfo;
use crate::postgres::script::{roles_named, tokens, Entry, Statement, Tok};
use crate::postgres::tools::{major_name, major_of};
use crate::postgres::{TableFilter, TableMeta};

/// Entry types that define relations a merge restore recreates when they
/// depend on a replaced table.
const RECREATED_KINDS: [&str; 4] = ["VIEW", "MATERIALIZED VIEW", "SEQUENCE", "SEQUENCE OWNED BY"];

/// Entry types of shared definitions a merge restore creates when missing
/// (and keeps when present).
const DEFINITION_KINDS: [&str; 26] = [
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
    "TEXT SEARCH PARSER",
    "TEXT SEARCH TEMPLATE",
    "PROCEDURAL LANGUAGE",
    "SHELL TYPE",
    "ACCESS METHOD",
    "TRANSFORM",
    "FOREIGN DATA WRAPPER",
    "SERVER",
    "USER MAPPING",
    "PUBLICATION",
];

/// Whether entries of `kind` are shared definitions (kept when present in
/// a merge restore).
pub(super) fn is_definition(kind: &str) -> bool {
    DEFINITION_KINDS.contains(&kind)
}

/// An entry's identity: kind, schema and name.
pub(super) type EntryKey = (String, String, String);

fn key_of(e: &Entry) -> EntryKey {
    (e.kind.clone(), e.schema.clone(), e.name.clone())
}

/// What will be restored.
pub(super) struct Plan {
    pub(super) tables: Vec<usize>,
    pub(super) pre: Vec<Entry>,
    pub(super) data: Vec<Entry>,
    pub(super) post: Vec<Entry>,
    pub(super) skipped: Vec<String>,
    /// Relations the restore creates (`schema.name`) for a merge restore.
    pub(super) objects: BTreeMap<String, u64>,
    /// Roles created from the snapshot's globals before the schema (a
    /// dry run lists them).
    pub(super) roles_to_create: Vec<String>,
    /// Patterns that matched no table, as report lines.
    pub(super) unmatched: Vec<String>,
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
/// Returns what the database holds, and for a dry run (which shows the
/// plan instead of refusing) the conflict a restore would be refused
/// for.
pub(super) async fn preflight(
    info: &ConnInfo,
    admin: &Client,
    loaded: &Loaded,
    drop: bool,
    dry_run: bool,
) -> Result<(Found, Option<String>)> {
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
        let conflict = format!(
            "database `{}` on {} is not empty ({objects} objects)",
            info.dbname(),
            info.location()
        );
        if dry_run {
            return Ok((found, Some(conflict)));
        }
        return Err(Error::target_failed(format!(
            "{conflict}; restore into a new or empty database, or pass --drop to replace what the snapshot holds (nothing was changed)"
        )));
    }
    Ok((found, None))
}

/// Chooses what to restore. `existing` holds the relations already in the
/// target (a merge restore keeps them); unselected tables not in it are
/// missing, and every entry that refers to a missing relation is left out
/// (and what it defines becomes missing too). Entries in `forced` are kept
/// (a merge restore recreates what dropping the selected tables takes
/// with them).
///
/// A view whose definition `pg_dump` wrote as a separate `_RETURN` rule
/// (to break a dependency loop; the view itself is then a placeholder
/// returning NULLs) is left out with its rule, never kept as a
/// placeholder.
pub(super) fn plan(
    loaded: &Loaded,
    filter: &TableFilter,
    existing: &HashSet<(String, String)>,
    forced: &HashSet<EntryKey>,
) -> Result<Plan> {
    let tables = select_tables(loaded, filter)?;
    let mut placeholders: HashSet<(String, String)> = HashSet::new();
    loop {
        let mut pruner = Pruner::new(loaded, &tables, existing, forced, &placeholders);
        let pre = pruner.keep(&loaded.pre.entries);
        let data = pruner.keep(&loaded.data.entries);
        let post = pruner.keep(&loaded.post.entries);
        let kept_rules: HashSet<EntryKey> = post.iter().map(key_of).collect();
        let orphans: Vec<(String, String)> = pre
            .iter()
            .filter(|e| e.kind == "VIEW")
            .filter(|v| {
                let rule = (
                    "RULE".to_owned(),
                    v.schema.clone(),
                    format!("{} _RETURN", v.name),
                );
                loaded.post.entries.iter().any(|e| key_of(e) == rule) && !kept_rules.contains(&rule)
            })
            .map(|v| (v.schema.clone(), v.name.clone()))
            .collect();
        if orphans.is_empty() {
            check_created(loaded, &tables, &pre, existing)?;
            return Ok(Plan {
                tables,
                pre,
                data,
                post,
                skipped: pruner.skipped,
                objects: pruner.objects,
                roles_to_create: Vec::new(),
                unmatched: Vec::new(),
            });
        }
        placeholders.extend(orphans);
    }
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
struct Pruner<'a> {
    selected: HashSet<(String, String)>,
    unselected: HashSet<(String, String)>,
    missing: HashSet<(String, String)>,
    merge: bool,
    /// Merge restores: relations recreated by this restore (selected tables,
    /// views and sequences that depend on them).
    recreated: HashSet<(String, String)>,
    /// Entries kept whatever they refer to.
    forced: &'a HashSet<EntryKey>,
    /// Views left out because their definition (a separate rule) is.
    placeholders: &'a HashSet<(String, String)>,
    skipped: Vec<String>,
    objects: BTreeMap<String, u64>,
}

impl<'a> Pruner<'a> {
    fn new(
        loaded: &Loaded,
        tables: &[usize],
        existing: &HashSet<(String, String)>,
        forced: &'a HashSet<EntryKey>,
        placeholders: &'a HashSet<(String, String)>,
    ) -> Self {
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
        let mut missing: HashSet<(String, String)> = unselected
            .iter()
            .filter(|k| !existing.contains(*k))
            .cloned()
            .collect();
        missing.extend(placeholders.iter().cloned());
        Pruner {
            recreated: selected.clone(),
            selected,
            unselected,
            missing,
            merge: !existing.is_empty(),
            forced,
            placeholders,
            skipped: Vec::new(),
            objects: BTreeMap::new(),
        }
    }

    /// The entries kept, counted in `objects`.
    fn keep(&mut self, entries: &[Entry]) -> Vec<Entry> {
        let mut out = Vec::new();
        for e in entries {
            let keep = if self.placeholder(e) {
                false
            } else if self.merge {
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

    /// A view whose `_RETURN` rule is not restored: left out and reported.
    fn placeholder(&mut self, e: &Entry) -> bool {
        let own = (e.schema.clone(), e.name.clone());
        if e.kind == "VIEW" && self.placeholders.contains(&own) {
            self.skipped.push(format!(
                "VIEW {} (its definition, the rule `{} _RETURN`, is not restored, and the view would be a placeholder returning NULLs)",
                e.label(),
                e.name
            ));
            return true;
        }
        false
    }

    /// A merge restore keeps the selected tables, what depends on a
    /// recreated relation, shared definitions that need no unselected
    /// table, and the entries it must recreate (`forced`).
    fn keeps_merging(&mut self, e: &Entry) -> bool {
        let own = (e.schema.clone(), e.name.clone());
        let refs = e.qualified_names();
        if self.forced.contains(&key_of(e)) {
            if RECREATED_KINDS.contains(&e.kind.as_str()) {
                self.recreated.insert(own);
            }
            true
        } else if e.kind == "TABLE" {
            self.selected.contains(&own)
        } else if refs.iter().any(|r| self.recreated.contains(r)) {
            if RECREATED_KINDS.contains(&e.kind.as_str()) {
                self.recreated.insert(own.clone());
            }
            true
        } else if e.kind == "SEQUENCE SET" {
            self.recreated.contains(&own)
        } else {
            is_definition(&e.kind) && !refs.iter().any(|r| self.unselected.contains(r))
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
                        e.label()
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
    /// Every entry of the plan, in the order they run.
    fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.pre.iter().chain(&self.data).chain(&self.post)
    }

    /// Whether the plan keeps an entry with this identity.
    pub(super) fn keeps(&self, key: &EntryKey) -> bool {
        self.entries().any(|e| &key_of(e) == key)
    }

    /// The roles the plan's statements name (owners, grantees, policy
    /// roles, ...).
    pub(super) fn roles_named(&self) -> BTreeSet<String> {
        let mut out = BTreeSet::new();
        for e in self.entries() {
            for s in &e.statements {
                if let Statement::Sql(sql) = s {
                    out.extend(roles_named(sql));
                }
            }
        }
        out
    }

    /// Leaves out every statement that names one of `missing`, reporting
    /// each in `skipped`.
    pub(super) fn skip_roles(&mut self, missing: &HashSet<String>) {
        let mut skipped = Vec::new();
        for e in self
            .pre
            .iter_mut()
            .chain(self.data.iter_mut())
            .chain(self.post.iter_mut())
        {
            let label = format!("{} {}", e.kind, e.label());
            e.statements.retain(|s| {
                let Statement::Sql(sql) = s else { return true };
                let named = roles_named(sql);
                let Some(role) = named.iter().find(|r| missing.contains(*r)) else {
                    return true;
                };
                skipped.push(format!(
                    "`{}` of {label} (role {role} is missing)",
                    one_line(sql)
                ));
                false
            });
        }
        self.skipped.extend(skipped);
    }

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
            ..RestoreStats::default()
        }
    }
}

/// A statement on one line, shortened for a report.
pub(super) fn one_line(sql: &str) -> String {
    let flat: String = sql.split_whitespace().collect::<Vec<_>>().join(" ");
    if flat.chars().count() > 120 {
        let mut s: String = flat.chars().take(117).collect();
        s.push_str("...");
        s
    } else {
        flat
    }
}
