//! The checks of a restore before anything is written: which databases
//! the patterns select, what the target already holds, and whether the
//! plan can go ahead.

use std::collections::{BTreeMap, HashMap};

use backup_core::target::RestoreOptions;
use backup_core::{Error, Result};
use mongodb::bson::Document;

use super::super::conn::Conn;
use super::super::{Metadata, NsFilter};
use super::snapshot::Planned;

/// The databases of the manifest that `filter` keeps.
pub(super) fn selected_dbs(meta: &Metadata, opts: &RestoreOptions) -> Result<Vec<String>> {
    let filter = NsFilter::new(&opts.includes, &opts.excludes)?;
    let mut dbs: Vec<String> = meta
        .collections
        .iter()
        .filter(|c| filter.matches(&c.db, &c.name))
        .map(|c| c.db.clone())
        .collect();
    dbs.sort();
    dbs.dedup();
    Ok(dbs)
}

/// The databases of the manifest that the patterns select whole (every
/// collection and view).
pub(super) fn whole_dbs(meta: &Metadata, opts: &RestoreOptions) -> Result<Vec<String>> {
    let filter = NsFilter::new(&opts.includes, &opts.excludes)?;
    let mut dbs: Vec<String> = meta.collections.iter().map(|c| c.db.clone()).collect();
    dbs.sort();
    dbs.dedup();
    dbs.retain(|db| {
        meta.collections
            .iter()
            .filter(|c| &c.db == db)
            .all(|c| filter.matches(&c.db, &c.name))
    });
    Ok(dbs)
}

/// An existing namespace in the target.
#[derive(Debug, Clone)]
pub(super) struct Existing {
    pub(super) kind: String,
    pub(super) documents: u64,
}

/// The namespaces of the plan that the target already holds, by
/// `(db, collection)`.
pub(super) type ExistingMap = BTreeMap<(String, String), Existing>;

pub(super) async fn existing(conn: &Conn, plan: &[Planned]) -> Result<ExistingMap> {
    let mut dbs: Vec<&str> = plan.iter().map(|p| p.db.as_str()).collect();
    dbs.sort_unstable();
    dbs.dedup();
    let mut out = BTreeMap::new();
    for db in dbs {
        for entry in conn.list_collections(db).await? {
            let Ok(name) = entry.get_str("name") else {
                continue;
            };
            if !plan.iter().any(|p| p.db == db && p.coll == name) {
                continue;
            }
            let kind = entry.get_str("type").unwrap_or("collection").to_owned();
            let documents = if kind == "view" {
                0
            } else {
                conn.client
                    .database(db)
                    .collection::<Document>(name)
                    .estimated_document_count()
                    .await
                    .map_err(|e| conn.error(&format!("counting {db}.{name}"), e))?
            };
            out.insert(
                (db.to_owned(), name.to_owned()),
                Existing { kind, documents },
            );
        }
    }
    Ok(out)
}

/// Two snapshot namespaces must not land on one target namespace.
pub(super) fn check_distinct_targets(plan: &[Planned]) -> Result<()> {
    let mut seen: HashMap<String, String> = HashMap::new();
    for p in plan {
        if let Some(other) = seen.insert(p.target_ns(), p.meta.ns()) {
            return Err(Error::Config(format!(
                "{} and {} would both be restored to {}; change the --rename rules",
                other,
                p.meta.ns(),
                p.target_ns()
            )));
        }
    }
    Ok(())
}

/// The namespaces of the target that hold data (or are views, or would
/// become one): a restore replaces them only with `--drop`.
pub(super) fn conflicts(plan: &[Planned], existing: &ExistingMap) -> Vec<String> {
    plan.iter()
        .filter_map(|p| {
            let e = existing.get(&(p.db.clone(), p.coll.clone()))?;
            (e.documents > 0 || e.kind == "view" || p.meta.is_view())
                .then(|| format!("{} ({}, {} documents)", p.target_ns(), e.kind, e.documents))
        })
        .collect()
}

/// Refuses to restore over namespaces of the target that hold data (or
/// are views, or would become one) unless `--drop` replaces them.
pub(super) fn check_conflicts(
    plan: &[Planned],
    existing: &ExistingMap,
    opts: &RestoreOptions,
) -> Result<()> {
    let conflicts = conflicts(plan, existing);
    if !conflicts.is_empty() && !opts.drop {
        return Err(Error::target_failed(format!(
            "the target already holds {} of the namespaces to restore: {}; restore with --drop to replace them (a safety backup is taken first), --rename to restore next to them, or --exclude to leave them out (nothing was changed)",
            conflicts.len(),
            conflicts.join(", ")
        )));
    }
    Ok(())
}

/// The namespaces a replay creates (beyond `plan`) that the target holds
/// with documents, as `db.coll (N documents)`.
pub(super) async fn created_conflicts(
    conn: &Conn,
    creates: &[(String, String)],
    plan: &[Planned],
) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut seen = std::collections::BTreeSet::new();
    for (db, coll) in creates {
        if plan.iter().any(|p| &p.db == db && &p.coll == coll) || !seen.insert((db, coll)) {
            continue;
        }
        let listed = conn.list_collections(db).await?;
        if !listed
            .iter()
            .any(|e| e.get_str("name") == Ok(coll.as_str()))
        {
            continue;
        }
        let n = conn
            .client
            .database(db)
            .collection::<Document>(coll)
            .estimated_document_count()
            .await
            .map_err(|e| conn.error(&format!("counting {db}.{coll}"), e))?;
        if n > 0 {
            out.push(format!("{db}.{coll} ({n} documents)"));
        }
    }
    Ok(out)
}

/// Drops the namespaces named `db.coll (...)` by [`created_conflicts`].
pub(super) async fn drop_namespaces(conn: &Conn, names: &[String]) -> Result<()> {
    for n in names {
        let ns = n.split(" (").next().unwrap_or(n);
        let Some((db, coll)) = ns.split_once('.') else {
            continue;
        };
        conn.client
            .database(db)
            .collection::<Document>(coll)
            .drop()
            .await
            .map_err(|e| conn.error(&format!("dropping {ns}"), e))?;
    }
    Ok(())
}
