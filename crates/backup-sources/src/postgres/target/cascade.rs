//! What a selective restore's `DROP TABLE ... CASCADE` would take with
//! it, found before anything is dropped: the drop is rehearsed in a
//! transaction that is rolled back, and the objects it removed are
//! compared with the snapshot's entries. Objects of other tables that the
//! snapshot recreates are kept in the plan; the others make the restore
//! refuse.

use std::collections::{BTreeSet, HashSet};

use backup_core::{Error, Result};
use tokio_postgres::Client;

use super::database::drop_tables_sql;
use super::plan::EntryKey;
use super::snapshot::Loaded;
use crate::postgres::conn::{query_error, Side};
use crate::postgres::script::Entry;

/// Every object of the database that dropping a table can take with it,
/// with the relation it belongs to (`owner_schema`, `owner_rel`).
const INVENTORY: &str = "\
SELECT kind, schema, rel, name, relkind, owner_schema, owner_rel FROM (
 SELECT 'relation' AS kind, n.nspname::text AS schema, c.relname::text AS rel, ''::text AS name,
        c.relkind::text AS relkind, n.nspname::text AS owner_schema,
        COALESCE(
          (SELECT t.relname::text FROM pg_index i JOIN pg_class t ON t.oid = i.indrelid
            WHERE i.indexrelid = c.oid),
          (SELECT t.relname::text FROM pg_depend d JOIN pg_class t ON t.oid = d.refobjid
            WHERE c.relkind = 'S' AND d.classid = 'pg_class'::regclass AND d.objid = c.oid
              AND d.refclassid = 'pg_class'::regclass AND d.deptype IN ('a', 'i') LIMIT 1),
          c.relname::text) AS owner_rel
   FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE c.relkind IN ('r', 'p', 'v', 'm', 'S', 'f', 'i', 'I')
 UNION ALL
 SELECT 'constraint', n.nspname, c.relname, con.conname, '', n.nspname, c.relname
   FROM pg_constraint con JOIN pg_class c ON c.oid = con.conrelid
   JOIN pg_namespace n ON n.oid = c.relnamespace
 UNION ALL
 SELECT 'trigger', n.nspname, c.relname, t.tgname, '', n.nspname, c.relname
   FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
   JOIN pg_namespace n ON n.oid = c.relnamespace WHERE NOT t.tgisinternal
 UNION ALL
 SELECT 'rule', n.nspname, c.relname, r.rulename, '', n.nspname, c.relname
   FROM pg_rewrite r JOIN pg_class c ON c.oid = r.ev_class
   JOIN pg_namespace n ON n.oid = c.relnamespace WHERE r.rulename <> '_RETURN'
 UNION ALL
 SELECT 'policy', n.nspname, c.relname, p.polname, '', n.nspname, c.relname
   FROM pg_policy p JOIN pg_class c ON c.oid = p.polrelid
   JOIN pg_namespace n ON n.oid = c.relnamespace
 UNION ALL
 SELECT 'default', n.nspname, c.relname, a.attname, '', n.nspname, c.relname
   FROM pg_attrdef d JOIN pg_attribute a ON a.attrelid = d.adrelid AND a.attnum = d.adnum
   JOIN pg_class c ON c.oid = d.adrelid JOIN pg_namespace n ON n.oid = c.relnamespace
 UNION ALL
 SELECT 'column', n.nspname, c.relname, a.attname, c.relkind::text, n.nspname, c.relname
   FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
   JOIN pg_namespace n ON n.oid = c.relnamespace
  WHERE a.attnum > 0 AND NOT a.attisdropped AND c.relkind IN ('r', 'p', 'f', 'c')
 UNION ALL
 SELECT 'function', n.nspname, p.proname, p.oid::regprocedure::text, '', '', ''
   FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
 UNION ALL
 SELECT 'statistics', n.nspname, s.stxname, '', '', tn.nspname, c.relname
   FROM pg_statistic_ext s JOIN pg_namespace n ON n.oid = s.stxnamespace
   JOIN pg_class c ON c.oid = s.stxrelid JOIN pg_namespace tn ON tn.oid = c.relnamespace
 UNION ALL
 SELECT 'type', n.nspname, t.typname, '', t.typtype::text, '', ''
   FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace
  WHERE t.typtype = 'd'
     OR (t.typtype = 'c' AND (SELECT c.relkind FROM pg_class c WHERE c.oid = t.typrelid) = 'c')
 UNION ALL
 SELECT 'publication table', n.nspname, c.relname, pub.pubname, '', n.nspname, c.relname
   FROM pg_publication_rel pr JOIN pg_publication pub ON pub.oid = pr.prpubid
   JOIN pg_class c ON c.oid = pr.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
) x
WHERE schema !~ '^pg_' AND schema <> 'information_schema'";

/// An object of the target database.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(super) struct Object {
    kind: String,
    schema: String,
    rel: String,
    name: String,
    relkind: String,
    owner: (String, String),
}

impl Object {
    fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.rel)
    }

    /// How a message names the object.
    fn describe(&self) -> String {
        let q = self.qualified();
        match self.kind.as_str() {
            "relation" => {
                let what = match self.relkind.as_str() {
                    "r" | "p" => "table",
                    "v" => "view",
                    "m" => "materialized view",
                    "S" => "sequence",
                    "f" => "foreign table",
                    _ => "index",
                };
                format!("{what} {q}")
            }
            "constraint" | "trigger" | "rule" | "policy" => {
                format!("{} {} on {q}", self.kind, self.name)
            }
            "default" => format!("the default of column {} of {q}", self.name),
            "column" => format!("column {} of {q}", self.name),
            "function" => format!("function {}", self.name),
            "publication table" => format!("{q} in publication {}", self.name),
            other => format!("{other} {q}"),
        }
    }

    /// The snapshot entries that recreate the object: `None` for objects
    /// no entry recreates as they were (tables, which hold data; columns
    /// of other tables).
    fn entries<'a>(&self, all: &'a [&'a Entry]) -> Option<Vec<&'a Entry>> {
        let on_rel = |kinds: &[&str]| -> Vec<&'a Entry> {
            let tag = format!("{} {}", self.rel, self.name);
            all.iter()
                .copied()
                .filter(|e| kinds.contains(&e.kind.as_str()) && e.schema == self.schema)
                .filter(|e| e.name == tag)
                .collect()
        };
        let named = |kinds: &[&str], name: &str| -> Vec<&'a Entry> {
            all.iter()
                .copied()
                .filter(|e| kinds.contains(&e.kind.as_str()) && e.schema == self.schema)
                .filter(|e| e.name == name)
                .collect()
        };
        let found = match (self.kind.as_str(), self.relkind.as_str()) {
            ("relation", "v") => {
                let mut v = named(&["VIEW"], &self.rel);
                v.extend(named(&["RULE"], &format!("{} _RETURN", self.rel)));
                v
            }
            ("relation", "m") => named(&["MATERIALIZED VIEW", "MATERIALIZED VIEW DATA"], &self.rel),
            ("relation", "S") => named(
                &["SEQUENCE", "SEQUENCE OWNED BY", "SEQUENCE SET"],
                &self.rel,
            ),
            ("relation", "i" | "I") => named(&["INDEX", "INDEX ATTACH"], &self.rel),
            ("constraint", _) => on_rel(&["CONSTRAINT", "FK CONSTRAINT", "CHECK CONSTRAINT"]),
            ("trigger", _) => on_rel(&["TRIGGER"]),
            ("rule", _) => on_rel(&["RULE"]),
            ("policy", _) => on_rel(&["POLICY"]),
            ("default", _) => on_rel(&["DEFAULT"]),
            ("function", _) => {
                let prefix = format!("{}(", self.rel);
                all.iter()
                    .copied()
                    .filter(|e| {
                        ["FUNCTION", "PROCEDURE", "AGGREGATE"].contains(&e.kind.as_str())
                            && e.schema == self.schema
                            && e.name.starts_with(&prefix)
                    })
                    .collect()
            }
            ("statistics", _) => named(&["STATISTICS"], &self.rel),
            ("type", _) => named(&["TYPE", "DOMAIN"], &self.rel),
            _ => Vec::new(),
        };
        (!found.is_empty()).then_some(found)
    }
}

async fn inventory(c: &Client) -> Result<HashSet<Object>> {
    let rows = c.query(INVENTORY, &[]).await.map_err(|e| {
        query_error(
            Side::Target,
            "listing the objects of the target database",
            e,
        )
    })?;
    Ok(rows
        .into_iter()
        .map(|r| Object {
            kind: r.get(0),
            schema: r.get(1),
            rel: r.get(2),
            name: r.get(3),
            relkind: r.get(4),
            owner: (r.get(5), r.get(6)),
        })
        .collect())
}

/// Rehearses `DROP TABLE <tables> CASCADE` in a transaction that is
/// rolled back, and returns what it removed besides the tables and what
/// belongs to them (their indexes, constraints, triggers, rules,
/// policies, defaults, owned sequences, statistics).
///
/// # Errors
///
/// Errors of the target server.
pub(super) async fn rehearse_drop(
    c: &Client,
    tables: &[(String, String)],
    quoted: &[String],
) -> Result<Vec<Object>> {
    if tables.is_empty() {
        return Ok(Vec::new());
    }
    let fail = |e| {
        query_error(
            Side::Target,
            "rehearsing the drop of the selected tables",
            e,
        )
    };
    c.batch_execute("BEGIN").await.map_err(fail)?;
    let run = async {
        let before = inventory(c).await?;
        c.batch_execute(&drop_tables_sql(quoted))
            .await
            .map_err(fail)?;
        let after = inventory(c).await?;
        Ok::<_, Error>((before, after))
    };
    let result = run.await;
    let rollback = c.batch_execute("ROLLBACK").await.map_err(fail);
    let (before, after) = result?;
    rollback?;
    let own: HashSet<&(String, String)> = tables.iter().collect();
    let mut gone: Vec<Object> = before
        .into_iter()
        .filter(|o| !after.contains(o) && !own.contains(&o.owner))
        .collect();
    gone.sort();
    Ok(gone)
}

/// Splits the objects a drop would take with it into the snapshot
/// entries that recreate them (to keep in the plan) and descriptions of
/// those nothing recreates.
pub(super) fn recreated(victims: &[Object], loaded: &Loaded) -> (HashSet<EntryKey>, Vec<String>) {
    let all: Vec<&Entry> = loaded
        .pre
        .entries
        .iter()
        .chain(&loaded.data.entries)
        .chain(&loaded.post.entries)
        .collect();
    let mut keep = HashSet::new();
    let mut lost = BTreeSet::new();
    for v in victims {
        match v.entries(&all) {
            Some(entries) => {
                keep.extend(
                    entries
                        .into_iter()
                        .map(|e| (e.kind.clone(), e.schema.clone(), e.name.clone())),
                );
            }
            None => {
                lost.insert(v.describe());
            }
        }
    }
    (keep, lost.into_iter().collect())
}
