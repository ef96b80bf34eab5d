//! Post-data: index and constraint builds on parallel workers, retried
//! alone after a deadlock; every other statement in order.

use backup_core::{Error, Result};
use futures::stream::FuturesUnordered;
use futures::StreamExt;
use tokio_postgres::error::SqlState;
use tokio_postgres::Client;

use super::database::worker;
use super::schema::{already_exists, entry_error, sqlstate, Executor};
use crate::postgres::conn::{query_error, ConnInfo, Side};
use crate::postgres::script::{Entry, Statement};

/// Entry types whose statements build indexes; consecutive ones run in
/// parallel.
const PARALLEL_KINDS: [&str; 2] = ["INDEX", "CONSTRAINT"];

/// A build running on a worker: its entry and how it ended.
type Build = tokio::task::JoinHandle<(Entry, std::result::Result<(), tokio_postgres::Error>)>;

/// Post-data: index and constraint builds in parallel, everything else
/// in order once the builds before it are done.
pub(super) async fn post_data(
    info: &ConnInfo,
    jobs: usize,
    exec: &mut Executor<'_>,
    entries: &[Entry],
    settings: &[String],
) -> Result<()> {
    let mut workers = IndexWorkers::new(info, settings, jobs);
    let mut running: FuturesUnordered<Build> = FuturesUnordered::new();
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
            let client = workers.client().await?;
            let mut sql: String = exec
                .settings
                .values()
                .cloned()
                .collect::<Vec<_>>()
                .join("\n");
            sql.push('\n');
            sql.push_str(&e.sql_text());
            exec.note_settings(e);
            let entry = e.clone();
            let tx = workers.tx.clone();
            running.push(tokio::spawn(async move {
                let r = client.batch_execute(&sql).await;
                let _ = tx.send(client).await;
                (entry, r)
            }));
        } else {
            finish_builds(&mut running, &mut retry, exec).await?;
            exec.run_entry(e).await?;
        }
    }
    finish_builds(&mut running, &mut retry, exec).await
}

/// Waits for the running builds, then retries the deadlocked ones alone.
async fn finish_builds(
    running: &mut FuturesUnordered<Build>,
    retry: &mut Vec<Entry>,
    exec: &mut Executor<'_>,
) -> Result<()> {
    while let Some(done) = running.next().await {
        collect(done, retry, exec)?;
    }
    for r in std::mem::take(retry) {
        exec.run_entry(&r).await?;
    }
    Ok(())
}

/// The index workers' connections: at most `jobs`, opened when first
/// needed and handed back by each build when it ends.
struct IndexWorkers<'a> {
    info: &'a ConnInfo,
    settings: &'a [String],
    jobs: usize,
    opened: usize,
    tx: async_channel::Sender<Client>,
    rx: async_channel::Receiver<Client>,
}

impl<'a> IndexWorkers<'a> {
    fn new(info: &'a ConnInfo, settings: &'a [String], jobs: usize) -> Self {
        let (tx, rx) = async_channel::bounded::<Client>(jobs);
        IndexWorkers {
            info,
            settings,
            jobs,
            opened: 0,
            tx,
            rx,
        }
    }

    /// An idle connection, a new one while fewer than `jobs` are open, or
    /// the next one a build hands back.
    async fn client(&mut self) -> Result<Client> {
        match self.rx.try_recv() {
            Ok(c) => Ok(c),
            Err(_) if self.opened < self.jobs => {
                self.opened += 1;
                let c = worker(self.info, self.settings).await?;
                c.batch_execute("SET maintenance_work_mem = '256MB'")
                    .await
                    .map_err(|e| query_error(Side::Target, "setting up an index worker", e))?;
                Ok(c)
            }
            Err(_) => self
                .rx
                .recv()
                .await
                .map_err(|_| Error::target_failed("index workers stopped")),
        }
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
    let (entry, r) = done.map_err(|e| Error::target_caused("an index task failed", e))?;
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
                    entry.label()
                ));
                return Ok(());
            }
            Err(entry_error(&entry, e))
        }
    }
}
