//! PostgreSQL: a consistent, parallel logical backup and a fast,
//! selective, verified restore.
//!
//! # Backup ([`PostgresSource`])
//!
//! A coordinator connection opens a `REPEATABLE READ READ ONLY`
//! transaction and exports its snapshot (`pg_export_snapshot()`); it stays
//! open until the backup ends. Everything is read inside that one
//! snapshot:
//!
//! - the schema, by `pg_dump --snapshot=ID --section=pre-data` and
//!   `--section=post-data` (plain SQL, UTF-8);
//! - sequence values, large objects and the data of tables `pg_dump` dumps
//!   but this source does not copy itself (extension configuration
//!   tables), by `pg_dump --section=data` with every copied table's data
//!   excluded;
//! - table data, by `COPY ... TO STDOUT` (text format) on worker
//!   connections that `SET TRANSACTION SNAPSHOT` to the exported id, one
//!   stream per table, and tables larger than 128 MiB split into block
//!   (ctid) ranges so one table does not serialise the run (PostgreSQL 14
//!   and newer; older servers copy a table in one piece);
//! - roles and tablespaces, on request, by `pg_dumpall --globals-only`.
//!
//! Every `pg_dump` exit status is checked in `finish()`: a failed dump
//! fails the snapshot. The manifest records the server version, the
//! snapshot's WAL position, the database's encoding and locale, and per
//! table its columns, rows and bytes.
//!
//! The snapshot tree:
//!
//! ```text
//! globals.sql                     `pg_dumpall` --globals-only (on request)
//! schema/data.sql                 sequence values, large objects
//! schema/post-data.sql            indexes, constraints, triggers, ...
//! schema/pre-data.sql             types, functions, tables, views, ...
//! tables/<schema>/<table>/00000   COPY text of the table (more parts when split)
//! ```
//!
//! # Restore ([`PostgresTarget`])
//!
//! Into the database the URL names: created when missing, refused when it
//! holds objects unless `--drop` (which drops and recreates it for a full
//! restore, or drops the selected tables for a selective one). Pre-data
//! runs in order on one connection; table parts are loaded by parallel
//! workers (`COPY ... FROM STDIN`); then `data.sql`; then post-data, where
//! runs of index and constraint builds go to parallel workers and every
//! other statement waits for them and runs alone. Afterwards every
//! restored table's row count is compared with the manifest.
//!
//! URLs take libpq's form and options (`sslmode`, `sslrootcert`,
//! `connect_timeout`, `options`, `application_name`, ...); the password
//! comes from the URL, `PGPASSWORD` or `~/.pgpass`.

pub(crate) mod conn;
pub(crate) mod erase;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
pub(crate) mod item;
pub mod physical;
pub(crate) mod script;
mod source;
mod target;
mod tools;
mod wire;

use serde::{Deserialize, Serialize};

pub use source::PostgresSource;
pub use target::PostgresTarget;

/// Opens a PostgreSQL source: a logical backup of the URL's database, or,
/// with mode physical (`--mode physical`, `?mode=physical`), a base backup
/// of the whole cluster, read locally when the data directory is here
/// (`--pgdata`, or the server's `data_directory` readable on this host)
/// and over the replication protocol otherwise.
///
/// # Errors
///
/// As [`PostgresSource::open`]; for physical backups, a refused
/// replication connection or backup start (with what to change), a server
/// older than PostgreSQL 15, selections (a base backup holds the whole
/// cluster).
pub(crate) async fn open_source(
    url: &str,
    selection: &crate::Selection,
    opts: &crate::PostgresOptions,
) -> backup_core::Result<Box<dyn backup_core::source::Source>> {
    let info = conn::ConnInfo::parse(url)?;
    let mode = match opts.mode {
        Some(m) => m,
        None => info
            .url_mode()
            .map(str::parse)
            .transpose()?
            .unwrap_or_default(),
    };
    if mode == crate::PostgresMode::Logical {
        if opts.pgdata.is_some()
            || opts.max_rate.is_some()
            || opts.checkpoint != crate::Checkpoint::Fast
        {
            return Err(backup_core::Error::Config(
                "--pgdata, --checkpoint and --max-rate apply to physical backups (--mode physical)"
                    .to_owned(),
            ));
        }
        return Ok(Box::new(PostgresSource::open(url, selection, opts).await?));
    }
    if !selection.includes.is_empty() || !selection.excludes.is_empty() {
        return Err(backup_core::Error::Config(
            "--include and --exclude apply to logical backups: a physical backup holds the whole cluster".to_owned(),
        ));
    }
    if opts.globals {
        return Err(backup_core::Error::Config(
            "--pg-globals applies to logical backups: a physical backup holds the whole cluster, roles and tablespaces included".to_owned(),
        ));
    }
    Box::pin(physical::open_source(&info, opts)).await
}

/// Part size above which a table's data is split into block ranges.
pub(crate) const SPLIT_BYTES: u64 = 128 * 1024 * 1024;

/// One table in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct TableMeta {
    pub(crate) schema: String,
    pub(crate) name: String,
    /// `table` or `partitioned` (no data of its own).
    pub(crate) kind: String,
    /// For a partition: its parent, `schema.table`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) partition_of: Option<(String, String)>,
    /// Columns copied, in order (generated columns are left out, as `pg_dump` does).
    pub(crate) columns: Vec<String>,
    /// Number of data streams (parts).
    pub(crate) parts: u32,
    /// Rows copied.
    pub(crate) rows: u64,
    /// Bytes of COPY text.
    pub(crate) bytes: u64,
}

impl TableMeta {
    pub(crate) fn qualified(&self) -> String {
        format!("{}.{}", self.schema, self.name)
    }

    pub(crate) fn quoted(&self) -> String {
        format!(
            "{}.{}",
            script::quote_ident(&self.schema),
            script::quote_ident(&self.name)
        )
    }

    /// `schema.table (columns)` for COPY (no list for a table without
    /// columns).
    pub(crate) fn copy_target(&self) -> String {
        if self.columns.is_empty() {
            self.quoted()
        } else {
            format!("{} ({})", self.quoted(), self.column_list())
        }
    }

    pub(crate) fn column_list(&self) -> String {
        self.columns
            .iter()
            .map(|c| script::quote_ident(c))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

/// The source metadata stored in the manifest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct Metadata {
    pub(crate) server_version: String,
    pub(crate) server_version_num: u32,
    pub(crate) database: String,
    pub(crate) encoding: String,
    pub(crate) lc_collate: String,
    pub(crate) lc_ctype: String,
    /// WAL position read inside the snapshot's transaction.
    pub(crate) snapshot_lsn: String,
    pub(crate) snapshot_id: String,
    pub(crate) pg_dump_version: String,
    pub(crate) copy_format: String,
    pub(crate) globals: bool,
    pub(crate) table_count: usize,
    pub(crate) total_rows: u64,
    pub(crate) total_bytes: u64,
    pub(crate) tables: Vec<TableMeta>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) excluded_tables: Vec<String>,
    /// The database's own properties (owner, locale provider, settings,
    /// comment, grants), applied to a database a restore creates, as
    /// `pg_dump --create` would. Absent in snapshots of older versions.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) database_properties: Option<DatabaseProperties>,
}

/// The properties of a database that live outside its schema (in the
/// cluster's shared catalogs), as recorded at backup time.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct DatabaseProperties {
    pub(crate) owner: String,
    /// `libc`, `icu` or `builtin` (PostgreSQL 15 and newer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) locale_provider: Option<String>,
    /// The ICU locale (PostgreSQL 15, 16) or the provider's locale
    /// (`datlocale`, 17 and newer) when the provider is not libc.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) provider_locale: Option<String>,
    /// ICU tailoring rules (PostgreSQL 16 and newer).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) icu_rules: Option<String>,
    /// `-1` for no limit.
    pub(crate) connection_limit: i32,
    pub(crate) is_template: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) comment: Option<String>,
    /// `ALTER DATABASE ... SET` settings, `name=value` as the catalog
    /// keeps them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) settings: Vec<String>,
    /// `ALTER ROLE r IN DATABASE ... SET` settings.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) role_settings: Vec<RoleSettings>,
    /// Privileges granted on the database; `None` when they are the
    /// defaults (the catalog's ACL is null).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) grants: Option<Vec<DatabaseGrant>>,
}

/// The settings of one role in one database.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct RoleSettings {
    pub(crate) role: String,
    pub(crate) settings: Vec<String>,
}

/// One privilege on a database.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub(crate) struct DatabaseGrant {
    /// `None` for `PUBLIC`.
    pub(crate) grantee: Option<String>,
    /// `CONNECT`, `CREATE` or `TEMPORARY`.
    pub(crate) privilege: String,
    pub(crate) grantable: bool,
}

impl DatabaseProperties {
    /// The roles these properties name (owner, grantees, roles with
    /// settings).
    pub(crate) fn roles(&self) -> Vec<String> {
        let mut out = vec![self.owner.clone()];
        out.extend(self.role_settings.iter().map(|r| r.role.clone()));
        out.extend(
            self.grants
                .iter()
                .flatten()
                .filter_map(|g| g.grantee.clone()),
        );
        out.sort();
        out.dedup();
        out
    }
}

pub(crate) use crate::names::tree_name;

/// Name of a table's part stream.
pub(crate) fn part_name(i: u32) -> String {
    format!("{i:05}")
}

/// `--include`/`--exclude` patterns over `schema.table` (globs; a pattern
/// without a dot names a schema).
#[derive(Debug, Clone)]
pub(crate) struct TableFilter {
    include: Option<globset::GlobSet>,
    exclude: Option<globset::GlobSet>,
}

impl TableFilter {
    pub(crate) fn new(includes: &[String], excludes: &[String]) -> backup_core::Result<Self> {
        let build = |pats: &[String]| -> backup_core::Result<Option<globset::GlobSet>> {
            if pats.is_empty() {
                return Ok(None);
            }
            let mut b = globset::GlobSetBuilder::new();
            for p in pats {
                if p.is_empty() {
                    return Err(backup_core::Error::Config("empty table pattern".to_owned()));
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
                            backup_core::Error::Config(format!("invalid table pattern `{p}`: {e}"))
                        })?,
                );
            }
            b.build()
                .map(Some)
                .map_err(|e| backup_core::Error::Config(format!("invalid table patterns: {e}")))
        };
        Ok(TableFilter {
            include: build(includes)?,
            exclude: build(excludes)?,
        })
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.include.is_none() && self.exclude.is_none()
    }

    /// The patterns of `includes` and `excludes` that match no table of
    /// `tables`, as report lines.
    pub(crate) fn unmatched(
        includes: &[String],
        excludes: &[String],
        tables: &[TableMeta],
    ) -> backup_core::Result<Vec<String>> {
        let mut out = Vec::new();
        for (flag, pats) in [("--include", includes), ("--exclude", excludes)] {
            for p in pats {
                let one = TableFilter::new(std::slice::from_ref(p), &[])?;
                if !tables.iter().any(|t| one.matches(&t.schema, &t.name)) {
                    out.push(format!("{flag} `{p}` matched no table of the snapshot"));
                }
            }
        }
        Ok(out)
    }

    /// Whether `schema.table` itself matches (partitions are handled by
    /// [`TableFilter::select`]).
    pub(crate) fn matches(&self, schema: &str, table: &str) -> bool {
        let q = format!("{schema}.{table}");
        self.include.as_ref().is_none_or(|g| g.is_match(&q))
            && !self.exclude.as_ref().is_some_and(|g| g.is_match(&q))
    }

    /// Selects tables: a table is selected when it matches, or when it is a
    /// partition whose parent is selected (a partitioned table comes with
    /// its partitions).
    pub(crate) fn select<'a>(&self, tables: &'a [TableMeta]) -> Vec<&'a TableMeta> {
        let by_name: std::collections::HashMap<(String, String), &TableMeta> = tables
            .iter()
            .map(|t| ((t.schema.clone(), t.name.clone()), t))
            .collect();
        let selected = |t: &TableMeta| -> bool {
            let mut cur = t;
            let mut depth = 0;
            loop {
                if self.matches(&cur.schema, &cur.name) {
                    return true;
                }
                match cur.partition_of.as_ref().and_then(|p| by_name.get(p)) {
                    Some(parent) if depth < 64 => {
                        cur = parent;
                        depth += 1;
                    }
                    _ => return false,
                }
            }
        };
        tables.iter().filter(|t| selected(t)).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t(schema: &str, name: &str, parent: Option<(&str, &str)>) -> TableMeta {
        TableMeta {
            schema: schema.into(),
            name: name.into(),
            kind: "table".into(),
            partition_of: parent.map(|(a, b)| (a.into(), b.into())),
            columns: vec![],
            parts: 1,
            rows: 0,
            bytes: 0,
        }
    }

    #[test]
    fn tree_names() {
        assert_eq!(tree_name("a/b%c"), "a%2Fb%25c");
        assert_eq!(tree_name(".."), "%2E%2E");
        assert_eq!(tree_name("Mixed Case"), "Mixed Case");
    }

    #[test]
    fn filters() {
        let tables = vec![
            t("public", "a", None),
            t("public", "m", None),
            t("public", "m_2024", Some(("public", "m"))),
            t("sales", "orders", None),
        ];
        let f = TableFilter::new(&["public.m".into(), "sales".into()], &[]).unwrap();
        let names: Vec<String> = f.select(&tables).iter().map(|t| t.qualified()).collect();
        assert_eq!(names, ["public.m", "public.m_2024", "sales.orders"]);
        let f = TableFilter::new(&[], &["public.*".into()]).unwrap();
        let names: Vec<String> = f.select(&tables).iter().map(|t| t.qualified()).collect();
        assert_eq!(names, ["sales.orders"]);
        assert!(TableFilter::new(&[], &[]).unwrap().is_empty());
    }
}
