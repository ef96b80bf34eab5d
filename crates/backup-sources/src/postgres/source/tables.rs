//! The tables to back up: listed from the catalog, selected, locked and
//! split into parts.

use std::collections::HashSet;

use backup_core::{Error, Result};
use tokio_postgres::Client;

use crate::postgres::conn::{query_error, ConnInfo, Side};
use crate::postgres::script::quote_ident;
use crate::postgres::{TableFilter, TableMeta, SPLIT_BYTES};

/// Lists the tables and parts them into those `filter` selects and the
/// others; fails when the role may not read a selected one.
pub(super) async fn select_tables(
    coordinator: &Client,
    info: &ConnInfo,
    version_num: u32,
    filter: &TableFilter,
) -> Result<(Vec<CatalogTable>, Vec<CatalogTable>)> {
    let all = list_tables(coordinator, version_num).await?;
    let metas: Vec<TableMeta> = all.iter().map(|t| t.meta.clone()).collect();
    let selected: HashSet<(String, String)> = filter
        .select(&metas)
        .into_iter()
        .map(|t| (t.schema.clone(), t.name.clone()))
        .collect();
    let (chosen, excluded): (Vec<CatalogTable>, Vec<CatalogTable>) = all
        .into_iter()
        .partition(|t| selected.contains(&(t.meta.schema.clone(), t.meta.name.clone())));
    let denied: Vec<String> = chosen
        .iter()
        .filter(|t| !t.readable)
        .map(|t| t.meta.qualified())
        .collect();
    if !denied.is_empty() {
        return Err(Error::PermissionDenied(format!(
            "role `{}` may not read {} table(s): {}; grant SELECT on them, back up as a role that can read everything, or leave them out with --exclude",
            info.user(),
            denied.len(),
            denied.join(", ")
        )));
    }
    Ok((chosen, excluded))
}

/// Locks the tables to back up for the rest of the coordinator's
/// transaction.
pub(super) async fn lock_tables(coordinator: &Client, chosen: &[CatalogTable]) -> Result<()> {
    // Like pg_dump: hold ACCESS SHARE locks so that no table is dropped
    // or altered under the backup.
    if !chosen.is_empty() {
        let names: Vec<String> = chosen.iter().map(|t| t.meta.quoted()).collect();
        for batch in names.chunks(500) {
            coordinator
                .batch_execute(&format!(
                    "LOCK TABLE {} IN ACCESS SHARE MODE",
                    batch.join(", ")
                ))
                .await
                .map_err(|e| query_error(Side::Source, "locking the tables to back up", e))?;
        }
    }
    Ok(())
}

/// The table as the catalog describes it.
pub(super) struct CatalogTable {
    pub(super) meta: TableMeta,
    readable: bool,
    blocks: u64,
    /// Blocks per part of a split table.
    part_blocks: u64,
}

/// Splits a table that is split at all into a multiple of `jobs` parts
/// of (nearly) equal block ranges, so that the last parts do not run
/// alone while the other workers are idle.
pub(super) fn balance_parts(t: &mut CatalogTable, jobs: usize) {
    if t.meta.parts <= 1 {
        return;
    }
    let jobs = u32::try_from(jobs.max(1)).unwrap_or(u32::MAX);
    let parts = t.meta.parts.div_ceil(jobs).saturating_mul(jobs);
    t.meta.parts = parts;
    // Rounded to 2 MiB so that a table growing a little does not move
    // every boundary (deduplication between backups lines up).
    t.part_blocks = t.blocks.div_ceil(u64::from(parts)).next_multiple_of(256);
}

async fn list_tables(c: &Client, version_num: u32) -> Result<Vec<CatalogTable>> {
    let generated = if version_num >= 120_000 {
        "AND a.attgenerated = ''"
    } else {
        ""
    };
    let sql = format!(
        "SELECT n.nspname::text, c.relname::text, c.relkind::text, \
           pn.nspname::text, pc.relname::text, \
           has_table_privilege(c.oid, 'SELECT'), \
           (pg_relation_size(c.oid) / current_setting('block_size')::int8)::int8, \
           ARRAY(SELECT a.attname::text FROM pg_attribute a WHERE a.attrelid = c.oid AND a.attnum > 0 \
                 AND NOT a.attisdropped {generated} ORDER BY a.attnum) \
         FROM pg_class c \
         JOIN pg_namespace n ON n.oid = c.relnamespace \
         LEFT JOIN pg_inherits i ON c.relispartition AND i.inhrelid = c.oid \
         LEFT JOIN pg_class pc ON pc.oid = i.inhparent \
         LEFT JOIN pg_namespace pn ON pn.oid = pc.relnamespace \
         WHERE c.relkind IN ('r', 'p') AND c.relpersistence <> 't' \
           AND n.nspname <> 'information_schema' AND n.nspname NOT LIKE 'pg\\_%' \
           AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass \
                           AND d.objid = c.oid AND d.deptype = 'e') \
         ORDER BY 1, 2"
    );
    let rows = c
        .query(sql.as_str(), &[])
        .await
        .map_err(|e| query_error(Side::Source, "listing tables", e))?;
    let split_blocks = SPLIT_BYTES / 8192;
    Ok(rows
        .into_iter()
        .map(|r| {
            let kind: String = r.get(2);
            let parent = match (r.get::<_, Option<String>>(3), r.get::<_, Option<String>>(4)) {
                (Some(s), Some(t)) => Some((s, t)),
                _ => None,
            };
            let blocks = u64::try_from(r.get::<_, i64>(6)).unwrap_or(0);
            let partitioned = kind == "p";
            // Split only where TID range scans exist (PostgreSQL 14+).
            let parts = if partitioned {
                0
            } else if version_num >= 140_000 && blocks > split_blocks {
                u32::try_from(blocks.div_ceil(split_blocks)).unwrap_or(u32::MAX)
            } else {
                1
            };
            CatalogTable {
                meta: TableMeta {
                    schema: r.get(0),
                    name: r.get(1),
                    kind: if partitioned { "partitioned" } else { "table" }.to_owned(),
                    partition_of: parent,
                    columns: r.get(7),
                    parts,
                    rows: 0,
                    bytes: 0,
                },
                readable: r.get(5),
                blocks,
                part_blocks: split_blocks,
            }
        })
        .collect())
}

/// The COPY statement of one part.
pub(super) fn copy_sql(t: &CatalogTable, part: u32, _version_num: u32) -> String {
    let m = &t.meta;
    if m.parts <= 1 {
        return format!("COPY {} TO STDOUT", m.copy_target());
    }
    let start = u64::from(part) * t.part_blocks;
    let cols = if m.columns.is_empty() {
        String::new()
    } else {
        m.columns
            .iter()
            .map(|c| quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    };
    let mut cond = format!("ctid >= '({start},0)'::tid");
    if part + 1 < m.parts {
        let end = start + t.part_blocks;
        cond = format!("{cond} AND ctid < '({end},0)'::tid");
    }
    format!(
        "COPY (SELECT {cols} FROM ONLY {} WHERE {cond}) TO STDOUT",
        m.quoted()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(blocks: u64, parts: u32) -> CatalogTable {
        CatalogTable {
            meta: TableMeta {
                schema: "public".into(),
                name: "t".into(),
                kind: "table".into(),
                partition_of: None,
                columns: vec!["a".into()],
                parts,
                rows: 0,
                bytes: 0,
            },
            readable: true,
            blocks,
            part_blocks: SPLIT_BYTES / 8192,
        }
    }

    #[test]
    fn parts_are_even_and_a_multiple_of_the_workers() {
        // pgbench scale 50: 81 968 blocks, 6 parts of 16 384 (the last of
        // 48 blocks) become 6 of 13 824 (the last of 12 848).
        let mut t = table(81_968, 6);
        balance_parts(&mut t, 2);
        assert_eq!((t.meta.parts, t.part_blocks), (6, 13_824));
        assert!(u64::from(t.meta.parts - 1) * t.part_blocks < t.blocks);
        let mut t = table(81_968, 6);
        balance_parts(&mut t, 4);
        assert_eq!((t.meta.parts, t.part_blocks), (8, 10_496));
        let sql = copy_sql(&t, 7, 150_000);
        assert!(
            sql.contains("ctid >= '(73472,0)'::tid") && !sql.contains("ctid <"),
            "{sql}"
        );
        let sql = copy_sql(&t, 1, 150_000);
        assert!(
            sql.contains("ctid >= '(10496,0)'::tid AND ctid < '(20992,0)'::tid"),
            "{sql}"
        );
        // Unsplit tables stay whole.
        let mut t = table(100, 1);
        balance_parts(&mut t, 8);
        assert_eq!(t.meta.parts, 1);
        assert!(copy_sql(&t, 0, 150_000).starts_with("COPY \"public\".\"t\""));
    }
}
