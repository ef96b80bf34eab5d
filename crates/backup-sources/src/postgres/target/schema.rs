//! Running schema entries in order on one connection, with the errors a
//! restore tolerates.

use std::collections::BTreeMap;

use backup_core::{Error, Result};
use futures::SinkExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::plan::is_definition;
use crate::postgres::conn::{query_error, Side};
use crate::postgres::script::{is_session_setting, Entry, Statement};

/// Runs statements one after the other on one connection.
pub(super) struct Executor<'a> {
    client: &'a Client,
    /// Tolerate "already exists" (merge restore into an existing database).
    pub(super) merge: bool,
    /// Statements run inside a transaction: each under a savepoint, so
    /// that a tolerated error does not abort the transaction.
    pub(super) savepoints: bool,
    pub(super) warnings: Vec<String>,
    /// Session `SET`s seen so far (applied on parallel workers).
    pub(super) settings: BTreeMap<String, String>,
}

/// What became of a statement.
#[derive(PartialEq, Eq)]
enum Ran {
    Done,
    /// The object it creates already exists and was kept: the rest of
    /// the entry (its owner, comment, ...) is left out too.
    Kept,
}

impl<'a> Executor<'a> {
    /// An executor on `client` that starts with the session settings of a
    /// script's `preamble`.
    pub(super) fn new(client: &'a Client, merge: bool, preamble: &[Statement]) -> Self {
        let mut exec = Executor {
            client,
            merge,
            savepoints: false,
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
    /// Notes the session settings of an entry run elsewhere (on a
    /// parallel worker), so that entries after it get them as they would
    /// in script order.
    pub(super) fn note_settings(&mut self, e: &Entry) {
        for s in &e.statements {
            if let Statement::Sql(sql) = s {
                if let Some(name) = setting_name(sql) {
                    self.settings.insert(name, sql.clone());
                }
            }
        }
    }

    pub(super) async fn run_entry(&mut self, e: &Entry) -> Result<()> {
        for s in &e.statements {
            if self.run_statement(s, e).await? == Ran::Kept {
                break;
            }
        }
        Ok(())
    }

    /// Runs `sql`, under a savepoint when in a transaction.
    async fn execute(&self, sql: &str) -> std::result::Result<(), tokio_postgres::Error> {
        if !self.savepoints {
            return self.client.batch_execute(sql).await;
        }
        let r = self
            .client
            .batch_execute(&format!(
                "SAVEPOINT restore_statement;\n{sql}\nRELEASE SAVEPOINT restore_statement;"
            ))
            .await;
        if r.is_err() {
            // Back to before the statement, so the transaction can go on
            // if the error is tolerated.
            let _ = self
                .client
                .batch_execute(
                    "ROLLBACK TO SAVEPOINT restore_statement; RELEASE SAVEPOINT restore_statement;",
                )
                .await;
        }
        r
    }

    async fn run_statement(&mut self, s: &Statement, e: &Entry) -> Result<Ran> {
        match s {
            Statement::Meta(m) => {
                let cmd = m.split_whitespace().next().unwrap_or("");
                if cmd == "\\restrict" || cmd == "\\unrestrict" {
                    return Ok(Ran::Done);
                }
                Err(Error::target_failed(format!(
                    "the schema script holds the psql command `{cmd}`, which a restore cannot run"
                )))
            }
            Statement::Sql(sql) => {
                if let Some(name) = setting_name(sql) {
                    self.settings.insert(name, sql.clone());
                }
                match self.execute(sql).await {
                    Ok(()) => Ok(Ran::Done),
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
                Ok(Ran::Done)
            }
        }
    }

    /// A merge restore keeps objects that already exist: `already exists`
    /// errors, and the unique violations PostgreSQL raises instead for
    /// some kinds (text search parsers, templates, dictionaries and
    /// configurations) when a shared definition is created again.
    fn tolerate(&mut self, sql: &str, e: &Entry, err: tokio_postgres::Error) -> Result<Ran> {
        let creates = sql.trim_start().to_ascii_lowercase().starts_with("create ");
        let exists = already_exists(&err)
            || (creates
                && is_definition(&e.kind)
                && sqlstate(&err) == Some(&SqlState::UNIQUE_VIOLATION));
        if self.merge && e.kind != "TABLE" && exists {
            self.warnings.push(format!(
                "{} {} already exists in the target and was kept",
                e.kind,
                e.label()
            ));
            return Ok(if creates { Ran::Kept } else { Ran::Done });
        }
        Err(entry_error(e, err))
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
        &format!("restoring {} {}", e.kind, e.label()),
        err,
    )
}
