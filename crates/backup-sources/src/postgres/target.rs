//! The PostgreSQL restore target.

use std::collections::{BTreeMap, HashMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use backup_core::progress::Progress;
use backup_core::reader::{Dir, SnapshotReader};
use backup_core::restorer::RestoreStats;
use backup_core::target::{RestoreOptions, RestoreReport, RestoredUnit, Target};
use backup_core::tree::Node;
use backup_core::{Error, Result};
use futures::{SinkExt, StreamExt};
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::conn::{query_error, ConnInfo, Side};
use super::script::{quote_ident, quote_literal, tokens, Entry, Script, Statement, Tok};
use super::tools::{major_name, major_of};
use super::{part_name, tree_name, Metadata, TableFilter, TableMeta};

/// Restores a PostgreSQL snapshot into the database a URL names.
#[derive(Debug, Clone)]
pub struct PostgresTarget {
    info: ConnInfo,
    jobs: usize,
}

/// Entry types whose statements build indexes; consecutive ones run in
/// parallel.
const PARALLEL_KINDS: [&str; 2] = ["INDEX", "CONSTRAINT"];

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

/// Session settings of every restoring connection.
const SESSION_SETUP: &str = "SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0; SET datestyle = ISO; SET intervalstyle = postgres; SET synchronous_commit = off;";

/// A snapshot read back: metadata, scripts and the data streams.
struct Loaded {
    meta: Metadata,
    pre: Script,
    post: Script,
    data: Script,
    globals: Option<Script>,
    /// Per table (by index in `meta.tables`): its part nodes.
    parts: Vec<Vec<Node>>,
    schema_bytes: u64,
}

/// What will be restored.
struct Plan {
    tables: Vec<usize>,
    pre: Vec<Entry>,
    data: Vec<Entry>,
    post: Vec<Entry>,
    skipped: Vec<String>,
    /// Relations the restore creates (`schema.name`) for a merge restore.
    objects: BTreeMap<String, u64>,
}

impl PostgresTarget {
    /// A target for `url` (`postgres://user:pass@host:port/db`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a malformed URL.
    pub fn new(url: &str) -> Result<Self> {
        let info = ConnInfo::parse(url)?;
        let jobs = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        Ok(PostgresTarget { info, jobs })
    }

    /// Uses `jobs` parallel connections for data and indexes.
    #[must_use]
    pub fn with_jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs.max(1);
        self
    }

    /// A connection to a maintenance database of the same server.
    async fn admin(&self) -> Result<Client> {
        let first = self
            .info
            .with_dbname("postgres")
            .connect(Side::Target)
            .await;
        match first {
            Err(Error::NotFound { .. }) => {
                self.info
                    .with_dbname("template1")
                    .connect(Side::Target)
                    .await
            }
            r => r,
        }
    }

    async fn db_exists(&self, admin: &Client) -> Result<bool> {
        let row = admin
            .query_one(
                "SELECT count(*) FROM pg_database WHERE datname = $1",
                &[&self.info.dbname()],
            )
            .await
            .map_err(|e| query_error(Side::Target, "looking up the database", &e))?;
        Ok(row.get::<_, i64>(0) > 0)
    }

    /// Objects in the database outside the system schemas.
    async fn object_count(&self, c: &Client) -> Result<i64> {
        let row = c
            .query_one(
                "SELECT \
                 (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                    WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema') \
               + (SELECT count(*) FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace \
                    WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema') \
               + (SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace \
                    WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema' \
                    AND t.typrelid = 0 AND t.typcategory <> 'A') \
               + (SELECT count(*) FROM pg_namespace WHERE nspname !~ '^pg_' \
                    AND nspname NOT IN ('information_schema', 'public')) \
               + (SELECT count(*) FROM pg_extension WHERE extname <> 'plpgsql') \
               + (SELECT count(*) FROM pg_largeobject_metadata)",
                &[],
            )
            .await
            .map_err(|e| query_error(Side::Target, "inspecting the target database", &e))?;
        Ok(row.get(0))
    }

    /// Relations (`schema`, `name`) present in the target database.
    async fn relations(&self, c: &Client) -> Result<HashSet<(String, String)>> {
        let rows = c
            .query(
                "SELECT n.nspname::text, c.relname::text FROM pg_class c \
                 JOIN pg_namespace n ON n.oid = c.relnamespace \
                 WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'",
                &[],
            )
            .await
            .map_err(|e| query_error(Side::Target, "listing relations", &e))?;
        Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
    }

    async fn worker(&self, settings: &[String]) -> Result<Client> {
        let c = self.info.connect(Side::Target).await?;
        let mut setup = SESSION_SETUP.to_owned();
        for s in settings {
            setup.push(' ');
            setup.push_str(s);
        }
        c.batch_execute(&setup)
            .await
            .map_err(|e| query_error(Side::Target, "setting up a restore session", &e))?;
        Ok(c)
    }
}

async fn load(snapshot: &SnapshotReader) -> Result<Loaded> {
    let s = snapshot.snapshot();
    if s.source.kind != "postgres" {
        return Err(Error::Config(format!(
            "snapshot {} is a {} backup; it cannot be restored to PostgreSQL",
            snapshot.id().short(),
            s.source.kind
        )));
    }
    let damaged = |what: &str| snapshot.damaged(format!("PostgreSQL snapshot without {what}"));
    let meta: Metadata = serde_json::from_value(s.metadata.clone())
        .map_err(|e| damaged(&format!("readable metadata ({e})")))?;
    let root = snapshot.root().await?;
    let schema = root
        .dir("schema")
        .await?
        .ok_or_else(|| damaged("schema/"))?;
    let mut schema_bytes = 0;
    let script = |name: &'static str| {
        let node = schema.get(name).cloned();
        async move {
            let node = node.ok_or_else(|| damaged(name))?;
            let bytes = snapshot.read_all(&node).await?;
            let text = String::from_utf8(bytes).map_err(|_| damaged(&format!("a UTF-8 {name}")))?;
            Ok::<_, Error>((Script::parse(&text)?, node.size))
        }
    };
    let (pre, n1) = script("pre-data.sql").await?;
    let (post, n2) = script("post-data.sql").await?;
    let (data, n3) = script("data.sql").await?;
    schema_bytes += n1 + n2 + n3;
    let globals = match root.get("globals.sql") {
        Some(node) => {
            let text = String::from_utf8(snapshot.read_all(node).await?)
                .map_err(|_| damaged("a UTF-8 globals.sql"))?;
            schema_bytes += node.size;
            Some(Script::parse(&text)?)
        }
        None => None,
    };
    let tables_tree = root.dir("tables").await?;
    let mut parts = Vec::with_capacity(meta.tables.len());
    let mut schema_trees: HashMap<String, Option<Dir>> = HashMap::new();
    for t in &meta.tables {
        if t.parts == 0 {
            parts.push(Vec::new());
            continue;
        }
        let tt = tables_tree.as_ref().ok_or_else(|| damaged("tables/"))?;
        let sname = tree_name(&t.schema);
        if !schema_trees.contains_key(&sname) {
            let st = tt.dir(&sname).await?;
            schema_trees.insert(sname.clone(), st);
        }
        let st = schema_trees
            .get(&sname)
            .and_then(Option::as_ref)
            .ok_or_else(|| damaged(&format!("the data of {}", t.qualified())))?;
        let table_tree = st
            .dir(&tree_name(&t.name))
            .await?
            .ok_or_else(|| damaged(&format!("the data of {}", t.qualified())))?;
        let mut nodes = Vec::with_capacity(t.parts as usize);
        for p in 0..t.parts {
            let n = table_tree
                .get(&part_name(p))
                .cloned()
                .ok_or_else(|| damaged(&format!("part {p} of {}", t.qualified())))?;
            nodes.push(n);
        }
        parts.push(nodes);
    }
    Ok(Loaded {
        meta,
        pre,
        post,
        data,
        globals,
        parts,
        schema_bytes,
    })
}

/// Chooses what to restore. `existing` holds the relations already in the
/// target (a merge restore keeps them); unselected tables not in it are
/// missing, and every entry that refers to a missing relation is left out
/// (and what it defines becomes missing too).
fn plan(
    loaded: &Loaded,
    filter: &TableFilter,
    existing: &HashSet<(String, String)>,
) -> Result<Plan> {
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
    let mut skipped = Vec::new();
    let mut objects: BTreeMap<String, u64> = BTreeMap::new();
    let merge = !existing.is_empty();
    // Merge restores: relations recreated by this restore (selected tables,
    // views and sequences that depend on them).
    let mut recreated: HashSet<(String, String)> = selected.clone();
    let mut keep =
        |entries: &[Entry], skipped: &mut Vec<String>, objects: &mut BTreeMap<String, u64>| {
            let mut out = Vec::new();
            for e in entries {
                let own = (e.schema.clone(), e.name.clone());
                let refs = e.qualified_names();
                if merge {
                    let keep = if e.kind == "TABLE" {
                        selected.contains(&own)
                    } else if refs.iter().any(|r| recreated.contains(r)) {
                        if RECREATED_KINDS.contains(&e.kind.as_str()) {
                            recreated.insert(own.clone());
                        }
                        true
                    } else if e.kind == "SEQUENCE SET" {
                        recreated.contains(&own)
                    } else {
                        DEFINITION_KINDS.contains(&e.kind.as_str())
                            && !refs.iter().any(|r| unselected.contains(r))
                    };
                    if keep {
                        *objects.entry(e.kind.clone()).or_default() += 1;
                        out.push(e.clone());
                    }
                    continue;
                }
                let is_unselected_table = e.kind == "TABLE" && unselected.contains(&own);
                let bad = refs.iter().find(|r| missing.contains(*r)).cloned();
                if is_unselected_table || missing.contains(&own) || bad.is_some() {
                    if !is_unselected_table {
                        if let Some((s, n)) = &bad {
                            skipped.push(format!(
                                "{} {} (needs {s}.{n}, which is not restored)",
                                e.kind,
                                entry_label(e)
                            ));
                        }
                    }
                    missing.insert(own);
                    if e.kind.contains("CONSTRAINT") || e.kind == "INDEX" {
                        if let Some(n) = constraint_name(e) {
                            missing.insert((e.schema.clone(), n));
                        }
                    }
                    continue;
                }
                *objects.entry(e.kind.clone()).or_default() += 1;
                out.push(e.clone());
            }
            out
        };
    let pre = keep(&loaded.pre.entries, &mut skipped, &mut objects);
    let data = keep(&loaded.data.entries, &mut skipped, &mut objects);
    let post = keep(&loaded.post.entries, &mut skipped, &mut objects);
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
    Ok(Plan {
        tables,
        pre,
        data,
        post,
        skipped,
        objects,
    })
}

fn entry_label(e: &Entry) -> String {
    if e.schema.is_empty() {
        e.name.clone()
    } else {
        format!("{}.{}", e.schema, e.name)
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

fn sqlstate(e: &tokio_postgres::Error) -> Option<&SqlState> {
    e.as_db_error().map(tokio_postgres::error::DbError::code)
}

/// Errors a merge restore tolerates: the object is already there.
fn already_exists(e: &tokio_postgres::Error) -> bool {
    sqlstate(e).is_some_and(|c| {
        *c == SqlState::DUPLICATE_OBJECT
            || *c == SqlState::DUPLICATE_TABLE
            || *c == SqlState::DUPLICATE_SCHEMA
            || *c == SqlState::DUPLICATE_FUNCTION
            || *c == SqlState::DUPLICATE_ALIAS
    })
}

/// Ownership and privilege statements that name a role the target
/// cluster lacks are reported, not fatal (restoring to another cluster).
fn is_role_statement(sql: &str) -> bool {
    let l = sql.trim_start().to_ascii_lowercase();
    (l.starts_with("alter ") && l.contains(" owner to "))
        || l.starts_with("grant ")
        || l.starts_with("revoke ")
        || l.starts_with("alter default privileges")
}

/// Runs statements one after the other on one connection.
struct Executor<'a> {
    client: &'a Client,
    /// Tolerate "already exists" (merge restore into an existing database).
    merge: bool,
    warnings: Vec<String>,
    /// Session `SET`s seen so far (applied on parallel workers).
    settings: BTreeMap<String, String>,
}

impl Executor<'_> {
    async fn run_entry(&mut self, e: &Entry) -> Result<()> {
        for s in &e.statements {
            self.run_statement(s, e).await?;
        }
        Ok(())
    }

    async fn run_statement(&mut self, s: &Statement, e: &Entry) -> Result<()> {
        match s {
            Statement::Meta(m) => {
                let cmd = m.split_whitespace().next().unwrap_or("");
                if cmd == "\\restrict" || cmd == "\\unrestrict" {
                    return Ok(());
                }
                Err(Error::target_failed(format!(
                    "the schema script holds the psql command `{cmd}`, which a restore cannot run"
                )))
            }
            Statement::Sql(sql) => {
                if let Some(name) = setting_name(sql) {
                    self.settings.insert(name, sql.clone());
                }
                match self.client.batch_execute(sql).await {
                    Ok(()) => Ok(()),
                    Err(err) => self.tolerate(sql, e, &err),
                }
            }
            Statement::CopyIn { sql, data } => {
                let sink = self
                    .client
                    .copy_in::<_, bytes::Bytes>(sql.as_str())
                    .await
                    .map_err(|err| entry_error(e, &err))?;
                futures::pin_mut!(sink);
                sink.send(bytes::Bytes::from(data.clone().into_bytes()))
                    .await
                    .map_err(|err| entry_error(e, &err))?;
                sink.finish().await.map_err(|err| entry_error(e, &err))?;
                Ok(())
            }
        }
    }

    fn tolerate(&mut self, sql: &str, e: &Entry, err: &tokio_postgres::Error) -> Result<()> {
        if self.merge && e.kind != "TABLE" && already_exists(err) {
            self.warnings.push(format!(
                "{} {} already exists in the target and was kept",
                e.kind,
                entry_label(e)
            ));
            return Ok(());
        }
        if is_role_statement(sql) && sqlstate(err) == Some(&SqlState::UNDEFINED_OBJECT) {
            let msg = err
                .as_db_error()
                .map_or_else(|| err.to_string(), |d| d.message().to_owned());
            self.warnings.push(format!(
                "{} {}: {msg}; ownership or privileges not restored",
                e.kind,
                entry_label(e)
            ));
            return Ok(());
        }
        Err(entry_error(e, err))
    }
}

fn setting_name(sql: &str) -> Option<String> {
    if !super::script::is_session_setting(sql) {
        return None;
    }
    let l = sql.trim_start().to_ascii_lowercase();
    if let Some(rest) = l.strip_prefix("set ") {
        return rest.split([' ', '=']).next().map(ToOwned::to_owned);
    }
    l.split('\'').nth(1).map(ToOwned::to_owned)
}

fn entry_error(e: &Entry, err: &tokio_postgres::Error) -> Error {
    query_error(
        Side::Target,
        &format!("restoring {} {}", e.kind, entry_label(e)),
        err,
    )
}

#[async_trait]
impl Target for PostgresTarget {
    fn describe(&self) -> String {
        self.info.redacted()
    }

    fn check_options(&self, opts: &RestoreOptions) -> Result<()> {
        if opts.at.is_some() {
            return Err(Error::Config(
                "--at (point-in-time restore) is not supported for PostgreSQL logical backups; restore a snapshot taken at the time you need".to_owned(),
            ));
        }
        if !opts.renames.is_empty() {
            return Err(Error::Config(
                "--rename is not supported for PostgreSQL; restore into another database by giving its name in the --to URL".to_owned(),
            ));
        }
        TableFilter::new(&opts.includes, &opts.excludes).map(|_| ())
    }

    async fn replaces_data(&self, opts: &RestoreOptions) -> Result<bool> {
        if !opts.drop {
            return Ok(false);
        }
        let admin = self.admin().await?;
        if !self.db_exists(&admin).await? {
            return Ok(false);
        }
        let c = self.info.connect(Side::Target).await?;
        Ok(self.object_count(&c).await? > 0)
    }

    async fn check_restored(&self, snapshot: &SnapshotReader) -> Result<Vec<String>> {
        let meta: Metadata = serde_json::from_value(snapshot.snapshot().metadata.clone())
            .map_err(|e| snapshot.damaged(e))?;
        let c = self.info.connect(Side::Target).await?;
        let mut diffs = Vec::new();
        for t in meta.tables.iter().filter(|t| t.parts > 0) {
            match count_rows(&c, t).await {
                Ok(n) if n == t.rows => {}
                Ok(n) => diffs.push(format!(
                    "{}: {n} rows restored, {} in the snapshot",
                    t.qualified(),
                    t.rows
                )),
                Err(e) => diffs.push(format!("{}: {e}", t.qualified())),
            }
        }
        Ok(diffs)
    }

    async fn discard(&self) -> Result<()> {
        let admin = self.admin().await?;
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {}",
                quote_ident(self.info.dbname())
            ))
            .await
            .map_err(|e| query_error(Side::Target, "dropping the scratch database", &e))
    }

    async fn restore(
        &self,
        snapshot: &SnapshotReader,
        opts: &RestoreOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<RestoreReport> {
        self.check_options(opts)?;
        let filter = TableFilter::new(&opts.includes, &opts.excludes)?;
        let loaded = load(snapshot).await?;
        let db = self.info.dbname().to_owned();

        let admin = self.admin().await?;
        let version: i32 = admin
            .query_one("SELECT current_setting('server_version_num')::int4", &[])
            .await
            .map_err(|e| query_error(Side::Target, "reading the server version", &e))?
            .get(0);
        let target_major = major_of(u32::try_from(version).unwrap_or(0));
        let source_major = major_of(loaded.meta.server_version_num);
        if target_major < source_major {
            return Err(Error::target_failed(format!(
                "{} runs PostgreSQL {}, older than the snapshot's PostgreSQL {} ({}); restore into PostgreSQL {} or newer (nothing was changed)",
                self.info.location(),
                major_name(target_major),
                major_name(source_major),
                loaded.meta.server_version,
                major_name(source_major)
            )));
        }
        let exists = self.db_exists(&admin).await?;
        let (objects, existing) = if exists {
            let c = self.info.connect(Side::Target).await?;
            (self.object_count(&c).await?, self.relations(&c).await?)
        } else {
            (0, HashSet::new())
        };
        if objects > 0 && !opts.drop {
            return Err(Error::target_failed(format!(
                "database `{db}` on {} is not empty ({objects} objects); restore into a new or empty database, or pass --drop to replace what the snapshot holds (nothing was changed)",
                self.info.location()
            )));
        }
        let selective = !filter.is_empty();
        // A full restore over a non-empty database recreates it; a
        // selective one replaces the selected tables and keeps the rest.
        let recreate = objects > 0 && !selective;
        let merge = objects > 0 && selective;
        let none = HashSet::new();
        let plan = plan(&loaded, &filter, if merge { &existing } else { &none })?;
        let rows: u64 = plan
            .tables
            .iter()
            .map(|&i| loaded.meta.tables[i].rows)
            .sum();
        let data_bytes: u64 = plan
            .tables
            .iter()
            .flat_map(|&i| loaded.parts[i].iter())
            .map(|n| n.size)
            .sum();
        let streams: u64 = plan
            .tables
            .iter()
            .map(|&i| loaded.parts[i].len() as u64)
            .sum();
        let stats = RestoreStats {
            files: streams + 3,
            dirs: 0,
            symlinks: 0,
            bytes: data_bytes + loaded.schema_bytes,
        };
        let action = if recreate {
            "drop and recreate the database"
        } else if merge {
            "replace the selected tables in the existing database"
        } else if exists {
            "restore into the existing empty database"
        } else {
            "create the database"
        };
        let mut report = PostgresRestoreReport {
            database: db.clone(),
            action,
            server_version: loaded.meta.server_version.clone(),
            objects: plan.objects.clone(),
            tables: plan
                .tables
                .iter()
                .map(|&i| {
                    let t = &loaded.meta.tables[i];
                    TablePlan {
                        table: t.qualified(),
                        rows: t.rows,
                        bytes: t.bytes,
                        parts: t.parts,
                    }
                })
                .collect(),
            rows,
            data_bytes,
            skipped: plan.skipped.clone(),
            warnings: None,
            summary: Vec::new(),
        };
        if opts.dry_run {
            report.summary = report.lines(true);
            return Ok(RestoreReport {
                dry_run: true,
                target: self.describe(),
                stats,
                unit: RestoredUnit::Files,
                lines: report.summary.clone(),
                details: RestoreReport::details_of(&report)?,
            });
        }

        progress.set_total(stats.bytes);
        let mut created = false;
        if recreate {
            admin
                .batch_execute(&format!("DROP DATABASE {}", quote_ident(&db)))
                .await
                .map_err(|e| {
                    query_error(
                        Side::Target,
                        &format!("dropping database `{db}` (close other sessions on it first)"),
                        &e,
                    )
                })?;
        }
        if recreate || !exists {
            create_database(&admin, &db, &loaded.meta).await?;
            created = true;
        }
        let this = match opts.jobs {
            Some(jobs) => self.clone().with_jobs(jobs),
            None => self.clone(),
        };
        let result = this
            .run(snapshot, &loaded, &plan, merge, progress.clone())
            .await;
        match result {
            Ok(warnings) => {
                report.warnings = Some(warnings);
                report.summary = report.lines(false);
                Ok(RestoreReport {
                    dry_run: false,
                    target: self.describe(),
                    stats,
                    unit: RestoredUnit::Files,
                    lines: report.summary.clone(),
                    details: RestoreReport::details_of(&report)?,
                })
            }
            Err(e) => {
                let left = if created && !recreate {
                    match admin
                        .batch_execute(&format!("DROP DATABASE IF EXISTS {}", quote_ident(&db)))
                        .await
                    {
                        Ok(()) => format!("the partly restored database `{db}` was removed"),
                        Err(_) => format!(
                            "database `{db}` was left partly restored; drop it before trying again"
                        ),
                    }
                } else {
                    format!(
                        "database `{db}` was left partly restored; fix the cause and restore again with --drop (the safety backup holds what it contained before)"
                    )
                };
                Err(match e {
                    Error::Target { message, .. } => {
                        Error::target_failed(format!("{message}; {left}"))
                    }
                    Error::PermissionDenied(m) => Error::PermissionDenied(format!("{m}; {left}")),
                    other => Error::target_failed(format!("{other}; {left}")),
                })
            }
        }
    }
}

/// What a PostgreSQL restore did or would do (the `details` of its report).
#[derive(Debug, serde::Serialize)]
struct PostgresRestoreReport {
    database: String,
    action: &'static str,
    server_version: String,
    /// Objects the restore creates, by kind.
    objects: BTreeMap<String, u64>,
    tables: Vec<TablePlan>,
    rows: u64,
    data_bytes: u64,
    skipped: Vec<String>,
    /// Statements that failed without failing the restore (not for a dry
    /// run).
    #[serde(skip_serializing_if = "Option::is_none")]
    warnings: Option<Vec<String>>,
    summary: Vec<String>,
}

/// One table of the plan.
#[derive(Debug, serde::Serialize)]
struct TablePlan {
    table: String,
    rows: u64,
    bytes: u64,
    parts: u32,
}

impl PostgresRestoreReport {
    fn lines(&self, dry_run: bool) -> Vec<String> {
        let mut lines = Vec::new();
        let verb = if dry_run { "would" } else { "did" };
        lines.push(format!("plan: {verb} {} `{}`", self.action, self.database));
        let objects: Vec<String> = self
            .objects
            .iter()
            .map(|(k, v)| format!("{v} {}", k.to_lowercase()))
            .collect();
        lines.push(format!("objects: {}", objects.join(", ")));
        lines.push(format!(
            "tables: {} with {} rows, {} of data",
            self.tables.len(),
            self.rows,
            backup_core::util::human_bytes(self.data_bytes)
        ));
        for t in &self.tables {
            lines.push(format!(
                "  {} {} rows {}",
                t.table,
                t.rows,
                backup_core::util::human_bytes(t.bytes)
            ));
        }
        for s in &self.skipped {
            lines.push(format!("skipped: {s}"));
        }
        for w in self.warnings.iter().flatten() {
            lines.push(format!("warning: {w}"));
        }
        lines
    }
}

async fn create_database(admin: &Client, db: &str, meta: &Metadata) -> Result<()> {
    let sql = format!(
        "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
        quote_ident(db),
        quote_literal(&meta.encoding),
        quote_literal(&meta.lc_collate),
        quote_literal(&meta.lc_ctype)
    );
    admin.batch_execute(&sql).await.map_err(|e| {
        query_error(
            Side::Target,
            &format!(
                "creating database `{db}` (encoding {}, locale {}; the locale must exist on the target server)",
                meta.encoding, meta.lc_collate
            ),
            &e,
        )
    })
}

async fn count_rows(c: &Client, t: &TableMeta) -> Result<u64> {
    let row = c
        .query_one(&format!("SELECT count(*) FROM ONLY {}", t.quoted()), &[])
        .await
        .map_err(|e| {
            query_error(
                Side::Target,
                &format!("counting rows of {}", t.qualified()),
                &e,
            )
        })?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

impl PostgresTarget {
    /// The restore proper, into an existing database. Returns warnings.
    async fn run(
        &self,
        snapshot: &SnapshotReader,
        loaded: &Loaded,
        plan: &Plan,
        merge: bool,
        progress: Arc<dyn Progress>,
    ) -> Result<Vec<String>> {
        let mut warnings = Vec::new();
        let settings = loaded.pre.session_settings();
        let main = self.worker(&settings).await?;
        if let Some(g) = &loaded.globals {
            if !merge {
                restore_globals(&main, g, &mut warnings).await?;
            }
        }
        if merge {
            // Replace the selected tables: drop them with what depends on
            // them; the plan recreates them and their dependents.
            let names: Vec<String> = plan
                .tables
                .iter()
                .map(|&i| loaded.meta.tables[i].quoted())
                .collect();
            for n in names {
                main.batch_execute(&format!("DROP TABLE IF EXISTS {n} CASCADE"))
                    .await
                    .map_err(|e| query_error(Side::Target, &format!("dropping {n}"), &e))?;
            }
        }
        progress.set_phase("schema");
        let mut exec = Executor {
            client: &main,
            merge,
            warnings: Vec::new(),
            settings: BTreeMap::new(),
        };
        for s in &loaded.pre.preamble {
            if let Statement::Sql(sql) = s {
                if super::script::is_session_setting(sql) {
                    if let Some(n) = setting_name(sql) {
                        exec.settings.insert(n, sql.clone());
                    }
                }
            }
        }
        for e in &plan.pre {
            exec.run_entry(e).await?;
        }
        progress.add_bytes(loaded.schema_bytes);

        progress.set_phase("data");
        let loaded_rows = self
            .load_data(snapshot, loaded, plan, &settings, progress.clone())
            .await?;
        for e in &plan.data {
            exec.run_entry(e).await?;
        }

        progress.set_phase("indexes");
        self.post_data(&mut exec, &plan.post, &settings).await?;
        warnings.append(&mut exec.warnings);

        progress.set_phase("checking");
        let mut bad = Vec::new();
        for &i in &plan.tables {
            let t = &loaded.meta.tables[i];
            if t.parts == 0 {
                continue;
            }
            // The rows the server reports storing, summed over the
            // table's COPY statements: an exact count without scanning
            // the table again.
            let copied = loaded_rows.get(&i).copied().unwrap_or(0);
            if copied != t.rows {
                bad.push(format!(
                    "{}: {copied} rows loaded, {} in the manifest",
                    t.qualified(),
                    t.rows
                ));
            }
        }
        if !bad.is_empty() {
            return Err(Error::target_failed(format!(
                "row counts differ from the snapshot's manifest: {}",
                bad.join("; ")
            )));
        }
        Ok(warnings)
    }

    /// Loads every selected part with parallel workers; returns rows per
    /// table.
    async fn load_data(
        &self,
        snapshot: &SnapshotReader,
        loaded: &Loaded,
        plan: &Plan,
        settings: &[String],
        progress: Arc<dyn Progress>,
    ) -> Result<HashMap<usize, u64>> {
        let mut parts: Vec<(usize, Node)> = plan
            .tables
            .iter()
            .flat_map(|&i| loaded.parts[i].iter().map(move |n| (i, n.clone())))
            .collect();
        // Largest first, so the big ones do not end the run alone.
        parts.sort_by_key(|p| std::cmp::Reverse(p.1.size));
        let queue = Arc::new(Mutex::new(parts.into_iter().collect::<VecDeque<_>>()));
        let rows: Arc<Mutex<HashMap<usize, u64>>> = Arc::default();
        let workers = self
            .jobs
            .min(queue.lock().unwrap_or_else(PoisonError::into_inner).len());
        let mut tasks = Vec::new();
        for _ in 0..workers {
            let client = self.worker(settings).await?;
            let queue = queue.clone();
            let rows = rows.clone();
            let snapshot = snapshot.clone();
            let tables: Vec<String> = loaded
                .meta
                .tables
                .iter()
                .map(TableMeta::copy_target)
                .collect();
            let progress = progress.clone();
            tasks.push(tokio::spawn(async move {
                loop {
                    let next = queue
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .pop_front();
                    let Some((i, node)) = next else { break };
                    let name = &tables[i];
                    let sql = format!("COPY {name} FROM STDIN");
                    let what = format!("loading {name}");
                    let sink = client
                        .copy_in::<_, bytes::Bytes>(sql.as_str())
                        .await
                        .map_err(|e| query_error(Side::Target, &what, &e))?;
                    futures::pin_mut!(sink);
                    let mut data = snapshot.content(&node);
                    while let Some(chunk) = data.next().await {
                        let chunk = chunk?;
                        progress.add_bytes(chunk.len() as u64);
                        sink.send(chunk)
                            .await
                            .map_err(|e| query_error(Side::Target, &what, &e))?;
                    }
                    let n = sink
                        .finish()
                        .await
                        .map_err(|e| query_error(Side::Target, &what, &e))?;
                    *rows
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .entry(i)
                        .or_default() += n;
                }
                Ok::<_, Error>(())
            }));
        }
        let mut first_err = None;
        for t in tasks {
            let r = t
                .await
                .map_err(|e| Error::target_failed(format!("a loader task failed: {e}")));
            if let Err(e) = r.and_then(|r| r) {
                queue.lock().unwrap_or_else(PoisonError::into_inner).clear();
                if first_err.is_none() {
                    first_err = Some(e);
                }
            }
        }
        if let Some(e) = first_err {
            return Err(e);
        }
        let out = rows.lock().unwrap_or_else(PoisonError::into_inner).clone();
        Ok(out)
    }

    /// Post-data: index and constraint builds in parallel, everything else
    /// in order once the builds before it are done.
    async fn post_data(
        &self,
        exec: &mut Executor<'_>,
        entries: &[Entry],
        settings: &[String],
    ) -> Result<()> {
        let jobs = self.jobs;
        let (tx, rx) = async_channel::bounded::<Client>(jobs);
        let mut opened = 0;
        let mut running: futures::stream::FuturesUnordered<
            tokio::task::JoinHandle<(Entry, std::result::Result<(), tokio_postgres::Error>)>,
        > = futures::stream::FuturesUnordered::new();
        let mut retry: Vec<Entry> = Vec::new();
        for e in entries {
            let parallel = jobs > 1
                && PARALLEL_KINDS.contains(&e.kind.as_str())
                && e.statements.iter().all(|s| matches!(s, Statement::Sql(_)));
            if parallel {
                if running.len() >= jobs {
                    if let Some(done) = running.next().await {
                        collect(done, &mut retry, exec)?;
                    }
                }
                let client = match rx.try_recv() {
                    Ok(c) => c,
                    Err(_) if opened < jobs => {
                        opened += 1;
                        let c = self.worker(settings).await?;
                        c.batch_execute("SET maintenance_work_mem = '256MB'")
                            .await
                            .map_err(|e| {
                                query_error(Side::Target, "setting up an index worker", &e)
                            })?;
                        c
                    }
                    Err(_) => rx
                        .recv()
                        .await
                        .map_err(|_| Error::target_failed("index workers stopped"))?,
                };
                let mut sql: String = exec
                    .settings
                    .values()
                    .cloned()
                    .collect::<Vec<_>>()
                    .join("\n");
                sql.push('\n');
                sql.push_str(&e.sql_text());
                let entry = e.clone();
                let tx = tx.clone();
                running.push(tokio::spawn(async move {
                    let r = client.batch_execute(&sql).await;
                    let _ = tx.send(client).await;
                    (entry, r)
                }));
            } else {
                while let Some(done) = running.next().await {
                    collect(done, &mut retry, exec)?;
                }
                for r in std::mem::take(&mut retry) {
                    exec.run_entry(&r).await?;
                }
                exec.run_entry(e).await?;
            }
        }
        while let Some(done) = running.next().await {
            collect(done, &mut retry, exec)?;
        }
        for r in std::mem::take(&mut retry) {
            exec.run_entry(&r).await?;
        }
        Ok(())
    }
}

/// Handles a finished parallel build: deadlocks are retried alone later,
/// other errors fail the restore (or are tolerated like in order).
fn collect(
    done: std::result::Result<
        (Entry, std::result::Result<(), tokio_postgres::Error>),
        tokio::task::JoinError,
    >,
    retry: &mut Vec<Entry>,
    exec: &mut Executor<'_>,
) -> Result<()> {
    let (entry, r) =
        done.map_err(|e| Error::target_failed(format!("an index task failed: {e}")))?;
    match r {
        Ok(()) => Ok(()),
        Err(e) if sqlstate(&e) == Some(&SqlState::T_R_DEADLOCK_DETECTED) => {
            retry.push(entry);
            Ok(())
        }
        Err(e) => {
            if exec.merge && already_exists(&e) {
                exec.warnings.push(format!(
                    "{} {} already exists in the target and was kept",
                    entry.kind,
                    entry_label(&entry)
                ));
                return Ok(());
            }
            Err(entry_error(&entry, &e))
        }
    }
}

/// Creates the roles of `globals.sql` that the target cluster lacks;
/// existing roles are left as they are. Other global statements
/// (tablespaces, memberships, role settings) are tried and reported when
/// they fail.
async fn restore_globals(c: &Client, script: &Script, warnings: &mut Vec<String>) -> Result<()> {
    let rows = c
        .query("SELECT rolname::text FROM pg_roles", &[])
        .await
        .map_err(|e| query_error(Side::Target, "listing roles", &e))?;
    let existing: HashSet<String> = rows.into_iter().map(|r| r.get(0)).collect();
    let statements = script
        .preamble
        .iter()
        .chain(script.entries.iter().flat_map(|e| e.statements.iter()));
    for s in statements {
        let Statement::Sql(sql) = s else { continue };
        if super::script::is_session_setting(sql) {
            continue;
        }
        let toks = tokens(sql);
        let role = match toks.as_slice() {
            [Tok::Ident(a), Tok::Ident(b), Tok::Ident(name), ..]
                if (a == "create" || a == "alter") && b == "role" =>
            {
                Some(name.clone())
            }
            _ => None,
        };
        if role.as_ref().is_some_and(|r| existing.contains(r)) {
            continue;
        }
        if let Err(e) = c.batch_execute(sql).await {
            let msg = e
                .as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned());
            warnings.push(format!(
                "globals: `{}`: {msg}",
                sql.chars().take(80).collect::<String>()
            ));
        }
    }
    Ok(())
}
