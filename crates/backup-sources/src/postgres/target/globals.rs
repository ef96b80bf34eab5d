//! Roles and other cluster-wide objects of `globals.sql`.

use std::collections::HashSet;

use backup_core::Result;
use tokio_postgres::Client;

use crate::postgres::script::{is_session_setting, tokens, Script, Statement, Tok};

/// The role a `CREATE ROLE` or `ALTER ROLE` statement is about.
fn role_of(sql: &str) -> Option<(bool, String)> {
    match tokens(sql).as_slice() {
        [Tok::Ident(a), Tok::Ident(b), Tok::Ident(name), ..]
            if (a == "create" || a == "alter") && b == "role" =>
        {
            Some((a == "create", name.clone()))
        }
        _ => None,
    }
}

/// The statements of a script, preamble first.
fn statements(script: &Script) -> impl Iterator<Item = &String> {
    script
        .preamble
        .iter()
        .chain(script.entries.iter().flat_map(|e| e.statements.iter()))
        .filter_map(|s| match s {
            Statement::Sql(sql) if !is_session_setting(sql) => Some(sql),
            _ => None,
        })
}

/// The roles `globals.sql` creates.
pub(super) fn roles_defined(script: &Script) -> Vec<String> {
    let mut out: Vec<String> = statements(script)
        .filter_map(|sql| role_of(sql).filter(|(create, _)| *create).map(|(_, r)| r))
        .collect();
    out.sort();
    out.dedup();
    out
}

/// Creates the roles of `globals.sql` that the target cluster lacks;
/// existing roles are left as they are. Other global statements
/// (tablespaces, memberships, role settings) are tried and reported when
/// they fail. In a transaction (`savepoints`), each statement runs under
/// a savepoint so that a failure does not abort it. Returns the roles
/// created.
pub(super) async fn restore_globals(
    c: &Client,
    script: &Script,
    existing: &HashSet<String>,
    savepoints: bool,
    warnings: &mut Vec<String>,
) -> Result<Vec<String>> {
    let mut created = Vec::new();
    for sql in statements(script) {
        let role = role_of(sql);
        if role.as_ref().is_some_and(|(_, r)| existing.contains(r)) {
            continue;
        }
        let r = if savepoints {
            let r = c
                .batch_execute(&format!(
                    "SAVEPOINT restore_global;\n{sql}\nRELEASE SAVEPOINT restore_global;"
                ))
                .await;
            if r.is_err() {
                let _ = c
                    .batch_execute(
                        "ROLLBACK TO SAVEPOINT restore_global; RELEASE SAVEPOINT restore_global;",
                    )
                    .await;
            }
            r
        } else {
            c.batch_execute(sql).await
        };
        match r {
            Ok(()) => {
                if let Some((true, name)) = role {
                    created.push(name);
                }
            }
            Err(e) => {
                let msg = e
                    .as_db_error()
                    .map_or_else(|| e.to_string(), |d| d.message().to_owned());
                warnings.push(format!(
                    "globals: `{}`: {msg}",
                    sql.chars().take(80).collect::<String>()
                ));
            }
        }
    }
    Ok(created)
}
