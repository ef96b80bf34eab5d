//! Loading table data: parallel loader tasks that `COPY` the parts in,
//! and the check of the rows loaded against the manifest.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex, PoisonError};

use backup_core::progress::Progress;
use backup_core::reader::SnapshotReader;
use backup_core::tree::Node;
use backup_core::{Error, Result};
use futures::{SinkExt, StreamExt};
use tokio_postgres::Client;

use super::database::worker;
use super::plan::Plan;
use super::snapshot::Loaded;
use crate::postgres::conn::{query_error, ConnInfo, Side};
use crate::postgres::TableMeta;

/// Parts not yet taken by a loader: table index and part node.
type Queue = Arc<Mutex<VecDeque<(usize, Node)>>>;

/// Rows loaded per table index.
type Rows = Arc<Mutex<HashMap<usize, u64>>>;

/// Loads every selected part with `jobs` parallel workers; returns rows
/// per table.
pub(super) async fn load_data(
    info: &ConnInfo,
    jobs: usize,
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
    let queue: Queue = Arc::new(Mutex::new(parts.into_iter().collect::<VecDeque<_>>()));
    let rows: Rows = Arc::default();
    let workers = jobs.min(queue.lock().unwrap_or_else(PoisonError::into_inner).len());
    let mut tasks = Vec::new();
    for _ in 0..workers {
        let client = worker(info, settings).await?;
        let tables: Vec<String> = loaded
            .meta
            .tables
            .iter()
            .map(TableMeta::copy_target)
            .collect();
        tasks.push(tokio::spawn(load_parts(
            client,
            queue.clone(),
            rows.clone(),
            snapshot.clone(),
            tables,
            progress.clone(),
        )));
    }
    let mut first_err = None;
    for t in tasks {
        let r = t
            .await
            .map_err(|e| Error::target_caused("a loader task failed", e));
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

/// One loader task: takes parts from `queue` until it is empty and copies
/// them in on `client` (`tables` holds every table's COPY target).
async fn load_parts(
    client: Client,
    queue: Queue,
    rows: Rows,
    snapshot: SnapshotReader,
    tables: Vec<String>,
    progress: Arc<dyn Progress>,
) -> Result<()> {
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
            .map_err(|e| query_error(Side::Target, &what, e))?;
        futures::pin_mut!(sink);
        let mut data = snapshot.content(&node);
        while let Some(chunk) = data.next().await {
            let chunk = chunk?;
            progress.add_bytes(chunk.len() as u64);
            sink.send(chunk)
                .await
                .map_err(|e| query_error(Side::Target, &what, e))?;
        }
        let n = sink
            .finish()
            .await
            .map_err(|e| query_error(Side::Target, &what, e))?;
        *rows
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(i)
            .or_default() += n;
    }
    Ok(())
}

/// Fails when a restored table's rows differ from the manifest.
pub(super) fn check_row_counts(
    loaded: &Loaded,
    plan: &Plan,
    loaded_rows: &HashMap<usize, u64>,
) -> Result<()> {
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
    Ok(())
}
