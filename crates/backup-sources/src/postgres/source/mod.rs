//! The PostgreSQL source.

mod pool;
mod tables;

use std::collections::VecDeque;
use std::sync::{Arc, PoisonError};

use async_trait::async_trait;
use backup_core::snapshot::SourceDescriptor;
use backup_core::source::{Content, Item, OnReadError, Source};
use backup_core::tree::{Node, NodeKind};
use backup_core::{Error, Result};
use tokio_postgres::Client;

use super::conn::{query_error, ConnInfo, Side};
use super::tools::{find_tool, major_of, Processes, Tool};
use super::{
    part_name, tree_name, DatabaseGrant, DatabaseProperties, Metadata, RoleSettings, TableFilter,
    TableMeta,
};
use crate::{PostgresOptions, Selection};
use pool::{open_copy, PartStats, Pool, SESSION_SETUP};
use tables::{balance_parts, copy_sql, lock_tables, select_tables, CatalogTable};

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
        let server = export_snapshot(&coordinator).await?;
        let properties = database_properties(&coordinator, server.version_num).await?;
        let tools = Tools::find(server.version_num, config.globals).await?;

        let (mut chosen, excluded) =
            select_tables(&coordinator, &info, server.version_num, &filter).await?;
        lock_tables(&coordinator, &chosen).await?;

        let jobs = config
            .jobs
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get().max(2)))
            .max(1);
        for t in &mut chosen {
            balance_parts(t, jobs);
        }
        let pool = Pool::new(&info, &server.snapshot_id, jobs)?;
        let stats: PartStats = Arc::default();
        let processes = Processes::default();

        let mut items = VecDeque::new();
        if let Some(tool) = &tools.pg_dumpall {
            items.push_back(globals_item(&info, &server, tool, &processes)?);
        }
        schema_items(
            &mut items,
            &info,
            &server,
            &tools.pg_dump,
            (&chosen, &excluded),
            &processes,
        )?;
        table_items(&mut items, &chosen, &pool, &stats, server.version_num);

        let mut meta = server.metadata(&info, &tools, chosen, &excluded);
        meta.database_properties = Some(properties);
        let tool_streams = 3 + usize::from(tools.pg_dumpall.is_some());
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

/// The server and the exported snapshot, as the coordinator's transaction
/// sees them.
struct Server {
    snapshot_id: String,
    version: String,
    version_num: u32,
    /// WAL position read inside the snapshot's transaction.
    lsn: Option<String>,
    encoding: String,
    lc_collate: String,
    lc_ctype: String,
    superuser: Option<bool>,
}

impl Server {
    /// The manifest's metadata of the backup (totals are added by
    /// [`Source::finish`]).
    fn metadata(
        self,
        info: &ConnInfo,
        tools: &Tools,
        chosen: Vec<CatalogTable>,
        excluded: &[CatalogTable],
    ) -> Metadata {
        Metadata {
            server_version: self.version,
            server_version_num: self.version_num,
            database: info.dbname().to_owned(),
            encoding: self.encoding,
            lc_collate: self.lc_collate,
            lc_ctype: self.lc_ctype,
            snapshot_lsn: self.lsn.unwrap_or_default(),
            snapshot_id: self.snapshot_id,
            pg_dump_version: tools.pg_dump.version.clone(),
            copy_format: "text".to_owned(),
            globals: tools.pg_dumpall.is_some(),
            table_count: chosen.len(),
            total_rows: 0,
            total_bytes: 0,
            tables: chosen.into_iter().map(|t| t.meta).collect(),
            excluded_tables: excluded.iter().map(|t| t.meta.qualified()).collect(),
            database_properties: None,
        }
    }
}

/// Starts the coordinator's `REPEATABLE READ READ ONLY` transaction,
/// exports its snapshot and reads what the manifest records of the server
/// and the database. Fails for a server older than PostgreSQL 10.
async fn export_snapshot(coordinator: &Client) -> Result<Server> {
    coordinator
        .batch_execute(&format!(
            "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY; {SESSION_SETUP}"
        ))
        .await
        .map_err(|e| query_error(Side::Source, "starting the snapshot transaction", e))?;
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
        .map_err(|e| query_error(Side::Source, "exporting a snapshot", e))?;
    let server = Server {
        snapshot_id: row.get(0),
        version: row.get(1),
        version_num: u32::try_from(row.get::<_, i32>(2)).unwrap_or(0),
        lsn: row.get(3),
        encoding: row.get(4),
        lc_collate: row.get(5),
        lc_ctype: row.get(6),
        superuser: row.get(7),
    };
    if server.version_num < 100_000 {
        return Err(Error::source_failed(format!(
            "PostgreSQL {} is not supported: backup needs PostgreSQL 10 or newer",
            server.version
        )));
    }
    Ok(server)
}

/// The database's own properties, from the shared catalogs: what
/// `pg_dump --create` writes besides the schema (owner, locale provider,
/// connection limit, template flag, comment, `ALTER DATABASE ... SET`,
/// `ALTER ROLE ... IN DATABASE ... SET`, privileges).
async fn database_properties(c: &Client, version_num: u32) -> Result<DatabaseProperties> {
    let (provider, locale, rules) = match version_num {
        0..=149_999 => ("NULL::text", "NULL::text", "NULL::text"),
        150_000..=159_999 => (
            "d.datlocprovider::text",
            "d.daticulocale::text",
            "NULL::text",
        ),
        160_000..=169_999 => (
            "d.datlocprovider::text",
            "d.daticulocale::text",
            "d.daticurules::text",
        ),
        _ => (
            "d.datlocprovider::text",
            "d.datlocale::text",
            "d.daticurules::text",
        ),
    };
    let err = |e| query_error(Side::Source, "reading the database's properties", e);
    let row = c
        .query_one(
            &format!(
                "SELECT pg_get_userbyid(d.datdba)::text, d.datconnlimit, d.datistemplate, \
                 shobj_description(d.oid, 'pg_database')::text, d.datacl IS NULL, \
                 {provider}, {locale}, {rules} \
                 FROM pg_database d WHERE d.datname = current_database()"
            ),
            &[],
        )
        .await
        .map_err(err)?;
    let default_acl: bool = row.get(4);
    let provider: Option<String> = row.get(5);
    let locale_provider = provider.map(|p| {
        match p.as_str() {
            "c" => "libc",
            "i" => "icu",
            "b" => "builtin",
            other => other,
        }
        .to_owned()
    });
    let libc = locale_provider.as_deref().is_none_or(|p| p == "libc");
    let mut props = DatabaseProperties {
        owner: row.get(0),
        locale_provider,
        provider_locale: if libc { None } else { row.get(6) },
        icu_rules: row.get(7),
        connection_limit: row.get(1),
        is_template: row.get(2),
        comment: row.get(3),
        ..DatabaseProperties::default()
    };
    if !default_acl {
        let rows = c
            .query(
                "SELECT CASE WHEN a.grantee = 0 THEN NULL ELSE pg_get_userbyid(a.grantee)::text END, \
                 a.privilege_type::text, a.is_grantable \
                 FROM pg_database d, aclexplode(d.datacl) a \
                 WHERE d.datname = current_database() ORDER BY 1 NULLS FIRST, 2",
                &[],
            )
            .await
            .map_err(err)?;
        props.grants = Some(
            rows.iter()
                .map(|r| DatabaseGrant {
                    grantee: r.get(0),
                    privilege: r.get(1),
                    grantable: r.get(2),
                })
                .collect(),
        );
    }
    let rows = c
        .query(
            "SELECT CASE WHEN s.setrole = 0 THEN NULL ELSE pg_get_userbyid(s.setrole)::text END, \
             s.setconfig::text[] \
             FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase \
             WHERE d.datname = current_database() ORDER BY 1 NULLS FIRST",
            &[],
        )
        .await
        .map_err(err)?;
    for r in rows {
        let role: Option<String> = r.get(0);
        let settings: Vec<String> = r.get::<_, Option<Vec<String>>>(1).unwrap_or_default();
        match role {
            None => props.settings = settings,
            Some(role) => props.role_settings.push(RoleSettings { role, settings }),
        }
    }
    Ok(props)
}

/// The client programs the backup runs.
struct Tools {
    pg_dump: Tool,
    /// Only when globals are backed up.
    pg_dumpall: Option<Tool>,
}

impl Tools {
    /// Finds `pg_dump` (and `pg_dumpall` when `globals`) for a server of
    /// `version_num`.
    async fn find(version_num: u32, globals: bool) -> Result<Self> {
        let pg_dump = find_tool("pg_dump", major_of(version_num)).await?;
        let pg_dumpall = if globals {
            Some(find_tool("pg_dumpall", major_of(version_num)).await?)
        } else {
            None
        };
        Ok(Tools {
            pg_dump,
            pg_dumpall,
        })
    }
}

/// `globals.sql`: the roles and tablespaces by `pg_dumpall`.
fn globals_item(
    info: &ConnInfo,
    server: &Server,
    tool: &Tool,
    processes: &Processes,
) -> Result<Item> {
    let mut args = vec!["--globals-only".to_owned(), "--no-password".to_owned()];
    args.push(format!("--database={}", info.dbname()));
    if server.superuser != Some(true) {
        args.push("--no-role-passwords".to_owned());
    }
    tool_leaf(
        "globals.sql",
        "pg_dumpall --globals-only",
        tool,
        &args,
        &info.tool_env(),
        processes,
    )
}

/// `schema/`: the `pg_dump` sections, inside the snapshot, without the
/// `excluded` tables and without the data of the `chosen` ones (which are
/// copied by workers).
fn schema_items(
    items: &mut VecDeque<Item>,
    info: &ConnInfo,
    server: &Server,
    pg_dump: &Tool,
    (chosen, excluded): (&[CatalogTable], &[CatalogTable]),
    processes: &Processes,
) -> Result<()> {
    let mut dump_args = vec![
        format!("--snapshot={}", server.snapshot_id),
        "--encoding=UTF8".to_owned(),
        "--no-password".to_owned(),
    ];
    for t in excluded {
        dump_args.push(format!("--exclude-table={}", pattern_name(&t.meta)));
    }
    let env = info.tool_env();
    items.push_back(Item::Enter(dir_node("schema")));
    {
        let mut args = dump_args.clone();
        args.push("--section=data".to_owned());
        for t in chosen {
            if t.meta.parts > 0 {
                args.push(format!("--exclude-table-data={}", pattern_name(&t.meta)));
            }
        }
        items.push_back(tool_leaf(
            "data.sql",
            "pg_dump --section=data",
            pg_dump,
            &args,
            &env,
            processes,
        )?);
    }
    for (file, section) in [("post-data.sql", "post-data"), ("pre-data.sql", "pre-data")] {
        let mut args = dump_args.clone();
        args.push(format!("--section={section}"));
        items.push_back(tool_leaf(
            file,
            &format!("pg_dump --section={section}"),
            pg_dump,
            &args,
            &env,
            processes,
        )?);
    }
    items.push_back(Item::Leave);
    Ok(())
}

/// `tables/<schema>/<table>/<part>`, sorted by encoded names: one stream
/// per part, copied by a worker of `pool`.
fn table_items(
    items: &mut VecDeque<Item>,
    chosen: &[CatalogTable],
    pool: &Arc<Pool>,
    stats: &PartStats,
    version_num: u32,
) {
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
        serde_json::to_value(&meta).map_err(|e| Error::source_caused("encoding metadata", e))
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
