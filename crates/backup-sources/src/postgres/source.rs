//! The PostgreSQL source.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Condvar, Mutex, PoisonError};

use async_trait::async_trait;
use backup_core::snapshot::SourceDescriptor;
use backup_core::source::{BlockingReader, Content, Item, OnReadError, Source};
use backup_core::tree::{Node, NodeKind};
use backup_core::{Error, Result};
use tokio_postgres::Client;

use super::conn::{query_error, ConnInfo, Side};
use super::script::{quote_ident, quote_literal};
use super::tools::{find_tool, major_of, Processes, Tool};
use super::wire::{CopyOut, WireConfig, WireConn, WireError};
use super::{part_name, tree_name, Metadata, TableFilter, TableMeta, SPLIT_BYTES};
use crate::{PostgresOptions, Selection};

/// Per part: rows and bytes once the part was read to the end.
type PartStats = Arc<Mutex<HashMap<(usize, u32), (u64, u64)>>>;

/// Backs up one PostgreSQL database inside one exported snapshot.
pub struct PostgresSource {
    info: ConnInfo,
    /// Holds the exported snapshot open until [`Source::finish`].
    coordinator: Option<Client>,
    items: VecDeque<Item>,
    meta: Metadata,
    stats: PartStats,
    processes: Processes,
    jobs: usize,
    /// Items read from `pg_dump`/`pg_dumpall` rather than a worker.
    tool_streams: usize,
}

impl std::fmt::Debug for PostgresSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresSource")
            .field("url", &self.info.redacted())
            .field("tables", &self.meta.tables.len())
            .finish_non_exhaustive()
    }
}

/// Connection pool of worker connections inside the exported snapshot:
/// at most `jobs` of them in use at once, whatever the archiver's
/// concurrency (which also counts the `pg_dump` streams). Workers are
/// blocking connections (see [`super::wire`]) read on the archiver's
/// threads.
struct Pool {
    wire: WireConfig,
    /// Joins a new connection to the exported snapshot.
    setup: String,
    location: String,
    jobs: usize,
    state: Mutex<PoolState>,
    freed: Condvar,
}

#[derive(Default)]
struct PoolState {
    idle: Vec<WireConn>,
    busy: usize,
}

impl Pool {
    /// Waits for a free worker slot.
    fn lease(self: &Arc<Self>) -> Lease {
        let mut st = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        while st.busy >= self.jobs {
            st = self.freed.wait(st).unwrap_or_else(PoisonError::into_inner);
        }
        st.busy += 1;
        Lease { pool: self.clone() }
    }

    /// An idle connection, or a new one joined to the snapshot.
    fn connection(&self, table: &str) -> std::io::Result<WireConn> {
        if let Some(c) = self
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .idle
            .pop()
        {
            return Ok(c);
        }
        let mut c = WireConn::connect(&self.wire).map_err(|e| {
            std::io::Error::other(format!(
                "copying table {table}: connecting to PostgreSQL at {}: {e}",
                self.location
            ))
        })?;
        c.simple_query(&self.setup).map_err(|e| {
            std::io::Error::other(format!(
                "copying table {table}: joining the exported snapshot: {e}"
            ))
        })?;
        Ok(c)
    }
}

/// A worker slot; given back when dropped.
struct Lease {
    pool: Arc<Pool>,
}

impl Lease {
    /// Hands a connection that finished its statement back for reuse.
    fn keep(&self, c: WireConn) {
        self.pool
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .idle
            .push(c);
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.pool
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .busy -= 1;
        self.pool.freed.notify_one();
    }
}

/// Session settings of every reading connection, as `pg_dump` uses them:
/// output that reads back exactly (floats, dates, intervals), no
/// timeouts, and an error instead of silently filtered rows under
/// row-level security.
const SESSION_SETUP: &str = "SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0; SET extra_float_digits = 3; SET datestyle = ISO; SET intervalstyle = postgres; SET row_security = off;";

impl PostgresSource {
    /// Connects, exports a snapshot and plans the backup.
    ///
    /// # Errors
    ///
    /// [`Error::PermissionDenied`] for a failed login or a table the role
    /// cannot read; [`Error::Source`] for an unreachable server, a missing
    /// or too old `pg_dump`; [`Error::Config`] for a malformed URL or
    /// patterns.
    pub async fn open(url: &str, opts: &Selection, config: &PostgresOptions) -> Result<Self> {
        let info = ConnInfo::parse(url)?;
        let filter = TableFilter::new(&opts.includes, &opts.excludes)?;
        let coordinator = info.connect(Side::Source).await?;
        let q = |what: &'static str| {
            move |e: tokio_postgres::Error| query_error(Side::Source, what, &e)
        };
        coordinator
            .batch_execute(&format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; {SESSION_SETUP}"
            ))
            .await
            .map_err(q("starting the snapshot transaction"))?;
        let row = coordinator
            .query_one(
                "SELECT pg_export_snapshot(), current_setting('server_version'), \
                 current_setting('server_version_num')::int4, \
                 (CASE WHEN pg_is_in_recovery() THEN pg_last_wal_replay_lsn() ELSE pg_current_wal_lsn() END)::text, \
                 pg_encoding_to_char(d.encoding)::text, d.datcollate::text, d.datctype::text, \
                 (SELECT rolsuper FROM pg_roles WHERE rolname = current_user) \
                 FROM pg_database d WHERE d.datname = current_database()",
                &[],
            )
            .await
            .map_err(q("exporting a snapshot"))?;
        let snapshot_id: String = row.get(0);
        let server_version: String = row.get(1);
        let version_num = u32::try_from(row.get::<_, i32>(2)).unwrap_or(0);
        let lsn: Option<String> = row.get(3);
        let superuser: Option<bool> = row.get(7);
        if version_num < 100_000 {
            return Err(Error::source_failed(format!(
                "PostgreSQL {server_version} is not supported: backup needs PostgreSQL 10 or newer"
            )));
        }
        let pg_dump = find_tool("pg_dump", major_of(version_num)).await?;
        let pg_dumpall = if config.globals {
            Some(find_tool("pg_dumpall", major_of(version_num)).await?)
        } else {
            None
        };

        let all = list_tables(&coordinator, version_num).await?;
        let metas: Vec<TableMeta> = all.iter().map(|t| t.meta.clone()).collect();
        let selected: std::collections::HashSet<(String, String)> = filter
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
                    .map_err(q("locking the tables to back up"))?;
            }
        }

        let jobs = config
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get().max(2)))
            .max(1);
        let mut chosen = chosen;
        for t in &mut chosen {
            balance_parts(t, jobs);
        }
        let pool = Arc::new(Pool {
            wire: info.wire().map_err(Error::source_failed)?,
            setup: format!(
                "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; SET TRANSACTION SNAPSHOT {}; {}",
                quote_literal(&snapshot_id),
                SESSION_SETUP
            ),
            location: info.location().to_owned(),
            jobs,
            state: Mutex::default(),
            freed: Condvar::new(),
        });
        let stats: PartStats = Arc::default();
        let processes = Processes::default();

        let mut dump_args = vec![
            format!("--snapshot={snapshot_id}"),
            "--encoding=UTF8".to_owned(),
            "--no-password".to_owned(),
        ];
        for t in &excluded {
            dump_args.push(format!("--exclude-table={}", pattern_name(&t.meta)));
        }
        let env = info.tool_env();
        let mut items = VecDeque::new();
        if let Some(tool) = &pg_dumpall {
            let mut args = vec!["--globals-only".to_owned(), "--no-password".to_owned()];
            args.push(format!("--database={}", info.dbname()));
            if superuser != Some(true) {
                args.push("--no-role-passwords".to_owned());
            }
            items.push_back(tool_leaf(
                "globals.sql",
                "pg_dumpall --globals-only",
                tool,
                &args,
                &env,
                &processes,
            )?);
        }
        items.push_back(Item::Enter(dir_node("schema")));
        {
            let mut args = dump_args.clone();
            args.push("--section=data".to_owned());
            for t in &chosen {
                if t.meta.parts > 0 {
                    args.push(format!("--exclude-table-data={}", pattern_name(&t.meta)));
                }
            }
            items.push_back(tool_leaf(
                "data.sql",
                "pg_dump --section=data",
                &pg_dump,
                &args,
                &env,
                &processes,
            )?);
        }
        for (file, section) in [("post-data.sql", "post-data"), ("pre-data.sql", "pre-data")] {
            let mut args = dump_args.clone();
            args.push(format!("--section={section}"));
            items.push_back(tool_leaf(
                file,
                &format!("pg_dump --section={section}"),
                &pg_dump,
                &args,
                &env,
                &processes,
            )?);
        }
        items.push_back(Item::Leave);

        // tables/<schema>/<table>/<part>, sorted by encoded names.
        let mut order: Vec<usize> = (0..chosen.len()).collect();
        order.sort_by(|&a, &b| {
            let ka = (
                tree_name(&chosen[a].meta.schema),
                tree_name(&chosen[a].meta.name),
            );
            let kb = (
                tree_name(&chosen[b].meta.schema),
                tree_name(&chosen[b].meta.name),
            );
            ka.cmp(&kb)
        });
        items.push_back(Item::Enter(dir_node("tables")));
        let mut current_schema: Option<String> = None;
        for &i in &order {
            let t = &chosen[i];
            if t.meta.parts == 0 {
                continue;
            }
            let schema = tree_name(&t.meta.schema);
            if current_schema.as_deref() != Some(schema.as_str()) {
                if current_schema.is_some() {
                    items.push_back(Item::Leave);
                }
                items.push_back(Item::Enter(dir_node(&schema)));
                current_schema = Some(schema);
            }
            items.push_back(Item::Enter(dir_node(&tree_name(&t.meta.name))));
            for part in 0..t.meta.parts {
                let sql = copy_sql(t, part, version_num);
                let open = open_copy(
                    pool.clone(),
                    sql,
                    t.meta.qualified(),
                    (i, part),
                    stats.clone(),
                );
                items.push_back(Item::Leaf {
                    node: Node::new(part_name(part).as_str(), NodeKind::Stream),
                    content: Some(open),
                    on_error: OnReadError::Fail,
                });
            }
            items.push_back(Item::Leave);
        }
        if current_schema.is_some() {
            items.push_back(Item::Leave);
        }
        items.push_back(Item::Leave);

        let meta = Metadata {
            server_version,
            server_version_num: version_num,
            database: info.dbname().to_owned(),
            encoding: row.get(4),
            lc_collate: row.get(5),
            lc_ctype: row.get(6),
            snapshot_lsn: lsn.unwrap_or_default(),
            snapshot_id,
            pg_dump_version: pg_dump.version.clone(),
            copy_format: "text".to_owned(),
            globals: pg_dumpall.is_some(),
            table_count: chosen.len(),
            total_rows: 0,
            total_bytes: 0,
            tables: chosen.into_iter().map(|t| t.meta).collect(),
            excluded_tables: excluded.iter().map(|t| t.meta.qualified()).collect(),
        };
        let tool_streams = 3 + usize::from(pg_dumpall.is_some());
        Ok(PostgresSource {
            info,
            coordinator: Some(coordinator),
            items,
            meta,
            stats,
            processes,
            jobs,
            tool_streams,
        })
    }
}

#[async_trait]
impl Source for PostgresSource {
    fn descriptor(&self) -> SourceDescriptor {
        SourceDescriptor {
            kind: "postgres".to_owned(),
            url: self.info.redacted(),
        }
    }

    fn concurrency(&self) -> usize {
        // Worker connections (the pool holds parts to `jobs`), plus the
        // pg_dump streams, so that the schema dumps do not hold the first
        // table parts back.
        self.jobs + self.tool_streams
    }

    async fn next(&mut self) -> Result<Option<Item>> {
        Ok(self.items.pop_front())
    }

    async fn finish(&mut self) -> Result<serde_json::Value> {
        let dumps = self.processes.finish().await;
        if let Some(c) = self.coordinator.take() {
            let _ = c.batch_execute("COMMIT").await;
        }
        dumps?;
        let stats = self
            .stats
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let mut meta = self.meta.clone();
        for (i, t) in meta.tables.iter_mut().enumerate() {
            for part in 0..t.parts {
                let Some((rows, bytes)) = stats.get(&(i, part)) else {
                    return Err(Error::source_failed(format!(
                        "the data of {} (part {part}) was not read to the end",
                        t.qualified()
                    )));
                };
                t.rows += rows;
                t.bytes += bytes;
            }
        }
        meta.total_rows = meta.tables.iter().map(|t| t.rows).sum();
        meta.total_bytes = meta.tables.iter().map(|t| t.bytes).sum();
        serde_json::to_value(&meta)
            .map_err(|e| Error::source_failed(format!("encoding metadata: {e}")))
    }
}

fn dir_node(name: &str) -> Node {
    let mut n = Node::new(name, NodeKind::Dir);
    n.mode = Some(0o700);
    n
}

/// A stream read from `pg_dump`/`pg_dumpall`. The process starts now, while
/// the backup is still being set up (the repository's key derivation runs
/// meanwhile); it waits on its pipe until the archiver reads it.
fn tool_leaf(
    name: &str,
    label: &str,
    tool: &Tool,
    args: &[String],
    env: &[(String, String)],
    processes: &Processes,
) -> Result<Item> {
    let reader = processes.spawn(label, &tool.path, args, env)?;
    Ok(Item::Leaf {
        node: Node::new(name, NodeKind::Stream),
        content: Some(Content::Async(Box::pin(async move { Ok(reader) }))),
        on_error: OnReadError::Fail,
    })
}

/// A table name as an exact `pg_dump` pattern (quoted, so nothing in it is
/// a wildcard).
fn pattern_name(t: &TableMeta) -> String {
    t.quoted()
}

/// The table as the catalog describes it.
struct CatalogTable {
    meta: TableMeta,
    readable: bool,
    blocks: u64,
    /// Blocks per part of a split table.
    part_blocks: u64,
}

/// Splits a table that is split at all into a multiple of `jobs` parts
/// of (nearly) equal block ranges, so that the last parts do not run
/// alone while the other workers are idle.
fn balance_parts(t: &mut CatalogTable, jobs: usize) {
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
        .map_err(|e| query_error(Side::Source, "listing tables", &e))?;
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
fn copy_sql(t: &CatalogTable, part: u32, _version_num: u32) -> String {
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

/// One part, read on the archiver's blocking thread: waits for a worker
/// slot, takes a connection and starts the COPY. The rows and bytes are
/// recorded, and the connection kept for the next part, once the part was
/// read to the end.
fn open_copy(
    pool: Arc<Pool>,
    sql: String,
    table: String,
    key: (usize, u32),
    stats: PartStats,
) -> Content {
    Content::Blocking(Box::new(move || {
        let lease = pool.lease();
        let conn = pool.connection(&table)?;
        let done = Box::new(move |conn: WireConn, rows: u64, bytes: u64| {
            stats
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(key, (rows, bytes));
            lease.keep(conn);
        });
        match conn.copy_out(&sql, done) {
            Ok(rows) => Ok(Box::new(CopyRows { rows, table }) as BlockingReader),
            Err(e) => Err(copy_error(&table, &e)),
        }
    }))
}

/// The rows of one part; errors name the table.
struct CopyRows {
    rows: CopyOut,
    table: String,
}

impl std::io::Read for CopyRows {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.rows.read(buf).map_err(|e| {
            std::io::Error::new(e.kind(), format!("copying table {}: {e}", self.table))
        })
    }
}

fn copy_error(table: &str, e: &WireError) -> std::io::Error {
    let mut msg = format!("copying table {table}: {e}");
    if let WireError::Db { code, .. } = e {
        if code == "42501" {
            msg.push_str(": grant the privilege to the connecting role or use a role that has it");
            return std::io::Error::new(std::io::ErrorKind::PermissionDenied, msg);
        }
    }
    std::io::Error::other(msg)
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
