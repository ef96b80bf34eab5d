//! Roles and other cluster-wide objects of `globals.sql`.

use std::collections::HashSet;

use backup_core::Result;
use tokio_postgres::Client;

use crate::postgres::conn::{query_error, Side};
use crate::postgres::script::{is_session_setting, tokens, Script, Statement, Tok};

/// Creates the roles of `globals.sql` that the target cluster lacks;
/// existing roles are left as they are. Other global statements
/// (tablespaces, memberships, role settings) are tried and reported when
/// they fail.
pub(super) async fn restore_globals(
    c: &Client,
    script: &Script,
    warnings: &mut Vec<String>,
) -> Result<()> {
    let rows = c
        .query("SELECT rolname::text FROM pg_roles", &[])
        .await
        .map_err(|e| query_error(Side::Target, "listing roles", e))?;
    let existing: HashSet<String> = rows.into_iter().map(|r| r.get(0)).collect();
    let statements = script
        .preamble
        .iter()
        .chain(script.entries.iter().flat_map(|e| e.statements.iter()));
    for s in statements {
        let Statement::Sql(sql) = s else { continue };
        if is_session_setting(sql) {
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
