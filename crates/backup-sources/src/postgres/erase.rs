//! Rows erased from a logical snapshot ([`crate::erase`]): each table a
//! predicate names has its stored `COPY` parts read row by row, and rows
//! whose column's text equals the value are left out; the manifest's
//! row and byte counts (per table and in total) follow, so a restore's
//! row check still holds. A partitioned table's predicate applies to its
//! partitions. Physical snapshots hold data files, not rows: refused.

use std::collections::HashMap;
use std::io::BufRead;
use std::sync::Arc;

use backup_core::reader::{ContentReader, SnapshotReader};
use backup_core::rewrite::{ContentFilter, Edits};
use backup_core::tree::Node;
use backup_core::{Error, Result};

use super::item::Row;
use super::{part_name, Metadata};
use crate::erase::{KindEdits, PgDelete, RecordFilter, Removed};
use crate::names::tree_name;

/// One table's predicates: column positions and values.
#[derive(Debug, Clone)]
struct TableEdit {
    /// `schema.table`.
    name: String,
    /// Index in the manifest's table list.
    index: usize,
    /// (column position, value): a row matching any is removed.
    tests: Vec<(usize, Vec<u8>)>,
    columns: usize,
}

struct PgEdits {
    /// Part path to its table.
    parts: HashMap<String, TableEdit>,
    removed: Arc<Removed>,
}

/// The edits `erasures` make to the snapshot `reader` reads.
///
/// # Errors
///
/// [`Error::Config`] for a physical snapshot, and for a column the
/// table named does not have (naming its columns); damaged metadata.
pub(crate) fn edits(reader: &SnapshotReader, erasures: &[PgDelete]) -> Result<KindEdits> {
    let s = reader.snapshot();
    let removed = Arc::new(Removed::default());
    if erasures.is_empty() {
        return Ok(KindEdits {
            edits: None,
            applies: Vec::new(),
            removed,
        });
    }
    if super::physical::is_physical(&s.metadata) {
        return Err(Error::Config(format!(
            "snapshot {} is a physical base backup: it holds the cluster's data files, not rows, so rows cannot be erased from it; take logical backups (`backup create postgres://...` without --mode physical) of data that may have to be erased, and forget this snapshot (`backup forget {}`) when it must go",
            reader.id().short(),
            reader.id().short()
        )));
    }
    let meta: Metadata =
        serde_json::from_value(s.metadata.clone()).map_err(|e| reader.damaged(e))?;
    let mut parts: HashMap<String, TableEdit> = HashMap::new();
    let mut applies = Vec::new();
    for p in erasures {
        let targets: Vec<usize> = meta
            .tables
            .iter()
            .enumerate()
            .filter(|(_, t)| {
                (t.schema == p.schema && t.name == p.table && t.kind != "partitioned")
                    || t.partition_of.as_ref() == Some(&(p.schema.clone(), p.table.clone()))
            })
            .map(|(i, _)| i)
            .collect();
        let named = meta
            .tables
            .iter()
            .any(|t| t.schema == p.schema && t.name == p.table);
        if !named {
            continue;
        }
        applies.push(p.describe());
        for i in targets {
            let t = &meta.tables[i];
            let col = t
                .columns
                .iter()
                .position(|c| *c == p.column)
                .ok_or_else(|| {
                    Error::Config(format!(
                        "table {} has no column `{}` (its columns: {})",
                        t.qualified(),
                        p.column,
                        t.columns.join(", ")
                    ))
                })?;
            for part in 0..t.parts {
                let path = format!(
                    "tables/{}/{}/{}",
                    tree_name(&t.schema),
                    tree_name(&t.name),
                    part_name(part)
                );
                let e = parts.entry(path).or_insert_with(|| TableEdit {
                    name: t.qualified(),
                    index: i,
                    tests: Vec::new(),
                    columns: t.columns.len(),
                });
                e.tests.push((col, p.value().to_vec()));
            }
        }
    }
    let edits: Option<Arc<dyn Edits>> = (!applies.is_empty()).then(|| {
        Arc::new(PgEdits {
            parts,
            removed: removed.clone(),
        }) as Arc<dyn Edits>
    });
    Ok(KindEdits {
        edits,
        applies,
        removed,
    })
}

impl Edits for PgEdits {
    fn drops(&self, _path: &str, _node: &Node) -> bool {
        false
    }

    fn filter(&self, path: &str, _node: &Node) -> Option<ContentFilter> {
        let edit = self.parts.get(path)?.clone();
        let removed = self.removed.clone();
        Some(Box::new(move |content: ContentReader| {
            let mut row = Row::default();
            let mut rows = 0u64;
            Box::new(RecordFilter {
                inner: std::io::BufReader::with_capacity(1 << 16, content),
                next: |r: &mut std::io::BufReader<ContentReader>,
                       rec: &mut Vec<u8>|
                 -> std::io::Result<bool> {
                    Ok(r.read_until(b'\n', rec)? > 0)
                },
                keep: move |rec: &[u8]| -> std::io::Result<bool> {
                    rows += 1;
                    let line = rec.strip_suffix(b"\n").ok_or_else(|| {
                        std::io::Error::other(format!("a part of {} ends inside a row", edit.name))
                    })?;
                    row.parse(line).map_err(|e| {
                        std::io::Error::other(format!("row {rows} of {}: {e}", edit.name))
                    })?;
                    if edit.columns > 0 && row.len() != edit.columns {
                        return Err(std::io::Error::other(format!(
                            "row {rows} of {} has {} fields for {} columns",
                            edit.name,
                            row.len(),
                            edit.columns
                        )));
                    }
                    let fields: Vec<Option<&[u8]>> = row.fields().collect();
                    let hit = edit.tests.iter().any(|(col, value)| {
                        fields.get(*col).copied().flatten() == Some(value.as_slice())
                    });
                    if hit {
                        removed.add(&edit.name, 1, rec.len() as u64);
                    }
                    Ok(!hit)
                },
                out: Vec::new(),
                pos: 0,
                done: false,
            }) as backup_core::source::BlockingReader
        }))
    }

    fn metadata(&self, original: &serde_json::Value) -> Result<serde_json::Value> {
        let mut meta = original.clone();
        let counts = self.removed.counts();
        let mut by_index: HashMap<usize, (u64, u64)> = HashMap::new();
        for e in self.parts.values() {
            if let Some(c) = counts.get(&e.name) {
                by_index.insert(e.index, (c.records, c.bytes));
            }
        }
        let damaged = || Error::Config("a PostgreSQL manifest without its table counts".to_owned());
        let (mut rows, mut bytes) = (0u64, 0u64);
        for (i, (r, b)) in &by_index {
            let t = meta
                .get_mut("tables")
                .and_then(|t| t.get_mut(*i))
                .ok_or_else(damaged)?;
            for (key, less) in [("rows", *r), ("bytes", *b)] {
                let v = t
                    .get(key)
                    .and_then(serde_json::Value::as_u64)
                    .ok_or_else(damaged)?;
                t[key] = v.saturating_sub(less).into();
            }
            rows += r;
            bytes += b;
        }
        for (key, less) in [("total_rows", rows), ("total_bytes", bytes)] {
            let v = meta
                .get(key)
                .and_then(serde_json::Value::as_u64)
                .ok_or_else(damaged)?;
            meta[key] = v.saturating_sub(less).into();
        }
        Ok(meta)
    }
}
