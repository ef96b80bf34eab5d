//! The target server and database: connections, what the database holds,
//! creating and dropping it.

use std::collections::HashSet;
use std::fmt::Write as _;

use backup_core::{Error, Result};
use tokio_postgres::Client;

use crate::postgres::conn::{query_error, ConnInfo, Side};
use crate::postgres::script::{quote_ident, quote_literal, Entry};
use crate::postgres::{DatabaseProperties, Metadata, TableMeta};

/// Session settings of every restoring connection.
const SESSION_SETUP: &str = "SET statement_timeout = 0; SET lock_timeout = 0; SET idle_in_transaction_session_timeout = 0; SET datestyle = ISO; SET intervalstyle = postgres; SET synchronous_commit = off;";

/// What the target database holds before the restore.
pub(super) struct Found {
    pub(super) exists: bool,
    /// Objects outside the system schemas.
    pub(super) objects: i64,
    /// Relations (`schema`, `name`) present.
    pub(super) relations: HashSet<(String, String)>,
}

/// A connection to a maintenance database of the same server.
pub(super) async fn admin(info: &ConnInfo) -> Result<Client> {
    let first = info.with_dbname("postgres").connect(Side::Target).await;
    match first {
        Err(Error::NotFound { .. }) => info.with_dbname("template1").connect(Side::Target).await,
        r => r,
    }
}

pub(super) async fn db_exists(admin: &Client, db: &str) -> Result<bool> {
    let row = admin
        .query_one(
            "SELECT count(*) FROM pg_database WHERE datname = $1",
            &[&db],
        )
        .await
        .map_err(|e| query_error(Side::Target, "looking up the database", e))?;
    Ok(row.get::<_, i64>(0) > 0)
}

/// Objects in the database outside the system schemas.
pub(super) async fn object_count(c: &Client) -> Result<i64> {
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
        .map_err(|e| query_error(Side::Target, "inspecting the target database", e))?;
    Ok(row.get(0))
}

/// Relations (`schema`, `name`) present in the target database.
async fn relations(c: &Client) -> Result<HashSet<(String, String)>> {
    let rows = c
        .query(
            "SELECT n.nspname::text, c.relname::text FROM pg_class c \
             JOIN pg_namespace n ON n.oid = c.relnamespace \
             WHERE n.nspname !~ '^pg_' AND n.nspname <> 'information_schema'",
            &[],
        )
        .await
        .map_err(|e| query_error(Side::Target, "listing relations", e))?;
    Ok(rows.into_iter().map(|r| (r.get(0), r.get(1))).collect())
}

/// Whether the database exists, and what it holds.
pub(super) async fn inspect(info: &ConnInfo, admin: &Client) -> Result<Found> {
    let exists = db_exists(admin, info.dbname()).await?;
    let (objects, relations) = if exists {
        let c = info.connect(Side::Target).await?;
        (object_count(&c).await?, relations(&c).await?)
    } else {
        (0, HashSet::new())
    };
    Ok(Found {
        exists,
        objects,
        relations,
    })
}

/// The server's `server_version_num`.
pub(super) async fn server_version_num(admin: &Client) -> Result<i32> {
    Ok(admin
        .query_one("SELECT current_setting('server_version_num')::int4", &[])
        .await
        .map_err(|e| query_error(Side::Target, "reading the server version", e))?
        .get(0))
}

/// A restoring session on the target database, with the snapshot's
/// session `settings`.
pub(super) async fn worker(info: &ConnInfo, settings: &[String]) -> Result<Client> {
    let c = info.connect(Side::Target).await?;
    let mut setup = SESSION_SETUP.to_owned();
    for s in settings {
        setup.push(' ');
        setup.push_str(s);
    }
    c.batch_execute(&setup)
        .await
        .map_err(|e| query_error(Side::Target, "setting up a restore session", e))?;
    Ok(c)
}

/// Prepares the database: drops it first when `recreate`, creates it when
/// recreated or missing. Returns whether it was created.
pub(super) async fn prepare(
    admin: &Client,
    db: &str,
    meta: &Metadata,
    recreate: bool,
    exists: bool,
) -> Result<bool> {
    let mut created = false;
    if recreate {
        admin
            .batch_execute(&format!("DROP DATABASE {}", quote_ident(db)))
            .await
            .map_err(|e| {
                query_error(
                    Side::Target,
                    &format!("dropping database `{db}` (close other sessions on it first)"),
                    e,
                )
            })?;
    }
    if recreate || !exists {
        create_database(admin, db, meta).await?;
        created = true;
    }
    Ok(created)
}

/// `CREATE DATABASE` with the snapshot's encoding, locale and locale
/// provider (the properties that can only be given at creation).
pub(super) fn create_database_sql(db: &str, meta: &Metadata, target_version: i32) -> String {
    let mut sql = format!(
        "CREATE DATABASE {} TEMPLATE template0 ENCODING {} LC_COLLATE {} LC_CTYPE {}",
        quote_ident(db),
        quote_literal(&meta.encoding),
        quote_literal(&meta.lc_collate),
        quote_literal(&meta.lc_ctype)
    );
    let props = meta.database_properties.as_ref();
    let provider = props.and_then(|p| p.locale_provider.as_deref());
    if let (Some(provider), true) = (provider, target_version >= 150_000) {
        let _ = write!(sql, " LOCALE_PROVIDER {provider}");
        let locale = props.and_then(|p| p.provider_locale.as_deref());
        match (provider, locale) {
            ("icu", Some(l)) => {
                let _ = write!(sql, " ICU_LOCALE {}", quote_literal(l));
            }
            ("builtin", Some(l)) => {
                let _ = write!(sql, " BUILTIN_LOCALE {}", quote_literal(l));
            }
            _ => {}
        }
        if let (Some(rules), true) = (
            props.and_then(|p| p.icu_rules.as_deref()),
            target_version >= 160_000 && provider == "icu",
        ) {
            let _ = write!(sql, " ICU_RULES {}", quote_literal(rules));
        }
    }
    sql
}

async fn create_database(admin: &Client, db: &str, meta: &Metadata) -> Result<()> {
    let version = server_version_num(admin).await?;
    let sql = create_database_sql(db, meta, version);
    let provider = meta
        .database_properties
        .as_ref()
        .and_then(|p| p.locale_provider.clone())
        .unwrap_or_else(|| "libc".to_owned());
    admin.batch_execute(&sql).await.map_err(|e| {
        query_error(
            Side::Target,
            &format!(
                "creating database `{db}` (encoding {}, locale {}, provider {provider}; the locale must exist on the target server)",
                meta.encoding, meta.lc_collate
            ),
            e,
        )
    })
}

/// The statements that give a database the properties the snapshot
/// recorded (owner, comment, settings, role settings, privileges,
/// connection limit, template flag), as `pg_dump --create` writes them.
/// Statements that name a role in `skip` are left out and reported in
/// `skipped`.
pub(super) fn property_statements(
    db: &str,
    props: &DatabaseProperties,
    skip: &HashSet<String>,
    skipped: &mut Vec<String>,
) -> Vec<String> {
    let d = quote_ident(db);
    let mut out = Vec::new();
    let mut push = |sql: String, roles: &[&str], out: &mut Vec<String>| {
        if let Some(r) = roles.iter().find(|r| skip.contains(**r)) {
            skipped.push(format!("`{sql}` (role {r} is missing)"));
        } else {
            out.push(sql);
        }
    };
    push(
        format!("ALTER DATABASE {d} OWNER TO {}", quote_ident(&props.owner)),
        &[&props.owner],
        &mut out,
    );
    if let Some(c) = &props.comment {
        push(
            format!("COMMENT ON DATABASE {d} IS {}", quote_literal(c)),
            &[],
            &mut out,
        );
    }
    for s in &props.settings {
        if let Some(set) = set_clause(s) {
            push(format!("ALTER DATABASE {d} {set}"), &[], &mut out);
        }
    }
    for r in &props.role_settings {
        for s in &r.settings {
            if let Some(set) = set_clause(s) {
                push(
                    format!("ALTER ROLE {} IN DATABASE {d} {set}", quote_ident(&r.role)),
                    &[&r.role],
                    &mut out,
                );
            }
        }
    }
    if let Some(grants) = &props.grants {
        let owner = if skip.contains(&props.owner) {
            "CURRENT_USER".to_owned()
        } else {
            quote_ident(&props.owner)
        };
        out.push(format!("REVOKE ALL ON DATABASE {d} FROM PUBLIC"));
        out.push(format!("REVOKE ALL ON DATABASE {d} FROM {owner}"));
        for g in grants {
            let grantee = g
                .grantee
                .as_deref()
                .map_or_else(|| "PUBLIC".to_owned(), quote_ident);
            let option = if g.grantable {
                " WITH GRANT OPTION"
            } else {
                ""
            };
            let roles: Vec<&str> = g.grantee.as_deref().into_iter().collect();
            push(
                format!("GRANT {} ON DATABASE {d} TO {grantee}{option}", g.privilege),
                &roles,
                &mut out,
            );
        }
    }
    if props.connection_limit != -1 {
        out.push(format!(
            "ALTER DATABASE {d} CONNECTION LIMIT {}",
            props.connection_limit
        ));
    }
    if props.is_template {
        out.push(format!("ALTER DATABASE {d} IS_TEMPLATE true"));
    }
    out
}

/// Settings whose value is a list of quoted names (`GUC_LIST_QUOTE`):
/// each element becomes a literal of its own.
const LIST_SETTINGS: [&str; 6] = [
    "local_preload_libraries",
    "search_path",
    "session_preload_libraries",
    "shared_preload_libraries",
    "temp_tablespaces",
    "unix_socket_directories",
];

/// `SET name TO value` for a catalog setting `name=value`.
fn set_clause(setting: &str) -> Option<String> {
    let (name, value) = setting.split_once('=')?;
    let values = if LIST_SETTINGS.contains(&name.to_ascii_lowercase().as_str()) {
        let items = split_list(value);
        if items.is_empty() {
            "''".to_owned()
        } else {
            items
                .iter()
                .map(|v| quote_literal(v))
                .collect::<Vec<_>>()
                .join(", ")
        }
    } else {
        quote_literal(value)
    };
    Some(format!("SET {} TO {values}", quote_ident(name)))
}

/// Splits a list setting's value on commas outside double quotes and
/// removes the quotes (`a, "B c"` → `a`, `B c`).
fn split_list(value: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut chars = value.chars().peekable();
    let mut any = false;
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' => {
                quoted = !quoted;
                any = true;
            }
            ',' if !quoted => {
                out.push(std::mem::take(&mut cur).trim().to_owned());
                any = false;
            }
            c if c.is_whitespace() && !quoted && cur.is_empty() => {}
            c => {
                cur.push(c);
                any = true;
            }
        }
    }
    if any || !out.is_empty() {
        out.push(cur.trim_end().to_owned());
    }
    out
}

/// Gives a database the snapshot's properties; statements that fail are
/// returned as warnings (the data is in place by then).
pub(super) async fn apply_properties(admin: &Client, statements: &[String]) -> Vec<String> {
    let mut warnings = Vec::new();
    for sql in statements {
        if let Err(e) = admin.batch_execute(sql).await {
            let msg = e
                .as_db_error()
                .map_or_else(|| e.to_string(), |d| d.message().to_owned());
            warnings.push(format!("database property not restored: `{sql}`: {msg}"));
        }
    }
    warnings
}

/// After a failed restore: removes the database when `remove` (it was
/// created by this restore), and adds to the error what was left behind.
pub(super) async fn after_failure(admin: &Client, db: &str, remove: bool, e: Error) -> Error {
    let left = if remove {
        match admin
            .batch_execute(&format!("DROP DATABASE IF EXISTS {}", quote_ident(db)))
            .await
        {
            Ok(()) => format!("the partly restored database `{db}` was removed"),
            Err(_) => {
                format!("database `{db}` was left partly restored; drop it before trying again")
            }
        }
    } else {
        format!(
            "database `{db}` was left partly restored; fix the cause and restore again with --drop (the safety backup holds what it contained before)"
        )
    };
    match e {
        Error::Target { message, .. } => Error::target_failed(format!("{message}; {left}")),
        Error::PermissionDenied(m) => Error::PermissionDenied(format!("{m}; {left}")),
        other => Error::target_failed(format!("{other}; {left}")),
    }
}

/// Drops tables (`names` quoted) with what depends on them, in one
/// statement (so that dependencies among them do not count as
/// dependents).
pub(super) async fn drop_tables(c: &Client, names: &[String]) -> Result<()> {
    if names.is_empty() {
        return Ok(());
    }
    c.batch_execute(&drop_tables_sql(names))
        .await
        .map_err(|e| query_error(Side::Target, "dropping the selected tables", e))
}

pub(super) fn drop_tables_sql(names: &[String]) -> String {
    format!("DROP TABLE IF EXISTS {} CASCADE", names.join(", "))
}

/// Whether the database has default privileges (`ALTER DEFAULT
/// PRIVILEGES`), which PostgreSQL gives to every object created in it.
pub(super) async fn has_default_privileges(c: &Client) -> Result<bool> {
    let row = c
        .query_one("SELECT count(*) FROM pg_default_acl", &[])
        .await
        .map_err(|e| query_error(Side::Target, "reading default privileges", e))?;
    Ok(row.get::<_, i64>(0) > 0)
}

/// Entry types that create relations.
const RELATION_KINDS: [&str; 5] = [
    "TABLE",
    "VIEW",
    "MATERIALIZED VIEW",
    "SEQUENCE",
    "FOREIGN TABLE",
];

/// Takes back what the database's default privileges granted on the
/// relation an entry created (and on the sequences it owns), so that it
/// has the privileges of its owner only, as in the snapshot before the
/// snapshot's own grants (which come later) are applied. `pg_dump`
/// writes default privileges last for a new database; a restore into a
/// database that already has them must undo their effect.
pub(super) async fn reset_privileges(c: &Client, e: &Entry) -> Result<()> {
    if !RELATION_KINDS.contains(&e.kind.as_str()) {
        return Ok(());
    }
    let name = format!("{}.{}", quote_ident(&e.schema), quote_ident(&e.name));
    let rows = c
        .query(
            "SELECT format('REVOKE ALL ON %s %s FROM %s', \
                 CASE WHEN c.relkind = 'S' THEN 'SEQUENCE' ELSE 'TABLE' END, \
                 c.oid::regclass::text, \
                 CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END) \
             FROM pg_class c, aclexplode(c.relacl) a \
             WHERE (c.oid = to_regclass($1) OR c.oid IN (SELECT d.objid FROM pg_depend d \
                    WHERE d.classid = 'pg_class'::regclass AND d.refclassid = 'pg_class'::regclass \
                      AND d.refobjid = to_regclass($1) AND d.deptype IN ('a', 'i'))) \
               AND a.grantee <> c.relowner",
            &[&name],
        )
        .await
        .map_err(|err| query_error(Side::Target, "reading the privileges of a new relation", err))?;
    for r in rows {
        let sql: String = r.get(0);
        c.batch_execute(&sql)
            .await
            .map_err(|err| query_error(Side::Target, &sql, err))?;
    }
    Ok(())
}

/// Roles of the target cluster.
pub(super) async fn roles(admin: &Client) -> Result<HashSet<String>> {
    let rows = admin
        .query("SELECT rolname::text FROM pg_roles", &[])
        .await
        .map_err(|e| query_error(Side::Target, "listing roles", e))?;
    Ok(rows.into_iter().map(|r| r.get(0)).collect())
}

pub(super) async fn count_rows(c: &Client, t: &TableMeta) -> Result<u64> {
    let row = c
        .query_one(&format!("SELECT count(*) FROM ONLY {}", t.quoted()), &[])
        .await
        .map_err(|e| {
            query_error(
                Side::Target,
                &format!("counting rows of {}", t.qualified()),
                e,
            )
        })?;
    Ok(u64::try_from(row.get::<_, i64>(0)).unwrap_or(0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn list_settings_are_split_into_literals() {
        assert_eq!(
            set_clause("search_path=app, \"Mixed Case\", public").unwrap(),
            "SET \"search_path\" TO 'app', 'Mixed Case', 'public'"
        );
        assert_eq!(
            set_clause("search_path=\"\"").unwrap(),
            "SET \"search_path\" TO ''"
        );
        assert_eq!(
            set_clause("work_mem=7MB").unwrap(),
            "SET \"work_mem\" TO '7MB'"
        );
        assert_eq!(
            set_clause("app.note=it's").unwrap(),
            "SET \"app.note\" TO 'it''s'"
        );
    }
}
