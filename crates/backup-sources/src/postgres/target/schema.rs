//! Running schema entries in order on one connection, with the errors a
//! restore tolerates.

use std::collections::BTreeMap;

use backup_core::{Error, Result};
use futures::SinkExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use crate::postgres::conn::{query_error, Side};
use crate::postgres::script::{is_session_setting, Entry, Statement};

/// Runs statements one after the other on one connection.
pub(super) struct Executor<'a> {
    client: &'a Client,
    /// Tolerate "already exists" (merge restore into an existing database).
    pub(super) merge: bool,
    pub(super) warnings: Vec<String>,
    /// Session `SET`s seen so far (applied on parallel workers).
    pub(super) settings: BTreeMap<String, String>,
}

impl<'a> Executor<'a> {
    /// An executor on `client` that starts with the session settings of a
    /// script's `preamble`.
    pub(super) fn new(client: &'a Client, merge: bool, preamble: &[Statement]) -> Self {
        let mut exec = Executor {
            client,
            merge,
            warnings: Vec::new(),
            settings: BTreeMap::new(),
        };
        for s in preamble {
            if let Statement::Sql(sql) = s {
                if is_session_setting(sql) {
                    if let Some(n) = setting_name(sql) {
                        exec.settings.insert(n, sql.clone());
                    }
                }
            }
        }
        exec
    }
}

impl Executor<'_> {
    pub(super) async fn run_entry(&mut self, e: &Entry) -> Result<()> {
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
                    Err(err) => self.tolerate(sql, e, err),
                }
            }
            Statement::CopyIn { sql, data } => {
                let sink = self
                    .client
                    .copy_in::<_, bytes::Bytes>(sql.as_str())
                    .await
                    .map_err(|err| entry_error(e, err))?;
                futures::pin_mut!(sink);
                sink.send(bytes::Bytes::from(data.clone().into_bytes()))
                    .await
                    .map_err(|err| entry_error(e, err))?;
                sink.finish().await.map_err(|err| entry_error(e, err))?;
                Ok(())
            }
        }
    }

    fn tolerate(&mut self, sql: &str, e: &Entry, err: tokio_postgres::Error) -> Result<()> {
        if self.merge && e.kind != "TABLE" && already_exists(&err) {
            self.warnings.push(format!(
                "{} {} already exists in the target and was kept",
                e.kind,
                entry_label(e)
            ));
            return Ok(());
        }
        if is_role_statement(sql) && sqlstate(&err) == Some(&SqlState::UNDEFINED_OBJECT) {
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

pub(super) fn entry_label(e: &Entry) -> String {
    if e.schema.is_empty() {
        e.name.clone()
    } else {
        format!("{}.{}", e.schema, e.name)
    }
}

pub(super) fn sqlstate(e: &tokio_postgres::Error) -> Option<&SqlState> {
    e.as_db_error().map(tokio_postgres::error::DbError::code)
}

/// Errors a merge restore tolerates: the object is already there.
pub(super) fn already_exists(e: &tokio_postgres::Error) -> bool {
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

fn setting_name(sql: &str) -> Option<String> {
    if !is_session_setting(sql) {
        return None;
    }
    let l = sql.trim_start().to_ascii_lowercase();
    if let Some(rest) = l.strip_prefix("set ") {
        return rest.split([' ', '=']).next().map(ToOwned::to_owned);
    }
    l.split('\'').nth(1).map(ToOwned::to_owned)
}

pub(super) fn entry_error(e: &Entry, err: tokio_postgres::Error) -> Error {
    query_error(
        Side::Target,
        &format!("restoring {} {}", e.kind, entry_label(e)),
        err,
    )
}
