//! The PostgreSQL restore target.

mod data;
mod database;
mod globals;
mod indexes;
mod plan;
mod report;
mod schema;
mod snapshot;

use std::collections::HashSet;
use std::sync::Arc;

use async_trait::async_trait;
use backup_core::progress::Progress;
use backup_core::reader::SnapshotReader;
use backup_core::target::{RestoreOptions, RestoreReport, Target};
use backup_core::{Error, Result};

use super::conn::{query_error, ConnInfo, Side};
use super::script::quote_ident;
use super::{Metadata, TableFilter};
use data::{check_row_counts, load_data};
use globals::restore_globals;
use indexes::post_data;
use plan::{plan, preflight, Mode, Plan};
use report::PostgresRestoreReport;
use schema::Executor;
use snapshot::{load, Loaded};

/// Restores a PostgreSQL snapshot into the database a URL names.
#[derive(Debug, Clone)]
pub struct PostgresTarget {
    info: ConnInfo,
    jobs: usize,
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
        let main = database::worker(&self.info, &settings).await?;
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
            database::drop_tables(&main, &names).await?;
        }
        progress.set_phase("schema");
        let mut exec = Executor::new(&main, merge, &loaded.pre.preamble);
        for e in &plan.pre {
            exec.run_entry(e).await?;
        }
        progress.add_bytes(loaded.schema_bytes);

        progress.set_phase("data");
        let loaded_rows = load_data(
            &self.info,
            self.jobs,
            snapshot,
            loaded,
            plan,
            &settings,
            progress.clone(),
        )
        .await?;
        for e in &plan.data {
            exec.run_entry(e).await?;
        }

        progress.set_phase("indexes");
        post_data(&self.info, self.jobs, &mut exec, &plan.post, &settings).await?;
        warnings.append(&mut exec.warnings);

        progress.set_phase("checking");
        check_row_counts(loaded, plan, &loaded_rows)?;
        Ok(warnings)
    }
}

#[async_trait]
impl Target for PostgresTarget {
    fn describe(&self) -> String {
        self.info.redacted()
    }

    fn check_options(&self, opts: &RestoreOptions) -> Result<()> {
        opts.refuse_physical("logical PostgreSQL restores")?;
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
        let admin = database::admin(&self.info).await?;
        if !database::db_exists(&admin, self.info.dbname()).await? {
            return Ok(false);
        }
        let c = self.info.connect(Side::Target).await?;
        Ok(database::object_count(&c).await? > 0)
    }

    async fn check_restored(&self, snapshot: &SnapshotReader) -> Result<Vec<String>> {
        let meta: Metadata = serde_json::from_value(snapshot.snapshot().metadata.clone())
            .map_err(|e| snapshot.damaged(e))?;
        let c = self.info.connect(Side::Target).await?;
        let mut diffs = Vec::new();
        for t in meta.tables.iter().filter(|t| t.parts > 0) {
            match database::count_rows(&c, t).await {
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
        let admin = database::admin(&self.info).await?;
        admin
            .batch_execute(&format!(
                "DROP DATABASE IF EXISTS {}",
                quote_ident(self.info.dbname())
            ))
            .await
            .map_err(|e| query_error(Side::Target, "dropping the scratch database", e))
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

        let admin = database::admin(&self.info).await?;
        let found = preflight(&self.info, &admin, &loaded, opts.drop).await?;
        let mode = Mode::new(&found, !filter.is_empty());
        let none = HashSet::new();
        let existing = if mode.merge { &found.relations } else { &none };
        let plan = plan(&loaded, &filter, existing)?;
        let stats = plan.stats(&loaded);
        let mut report = PostgresRestoreReport::new(db.clone(), mode.action(), &loaded, &plan);
        if opts.dry_run {
            return report.finish(true, self.describe(), stats);
        }

        progress.set_total(stats.bytes);
        let created =
            database::prepare(&admin, &db, &loaded.meta, mode.recreate, mode.exists).await?;
        let this = match opts.jobs {
            Some(jobs) => self.clone().with_jobs(jobs),
            None => self.clone(),
        };
        let result = this
            .run(snapshot, &loaded, &plan, mode.merge, progress.clone())
            .await;
        match result {
            Ok(warnings) => {
                report.warnings = Some(warnings);
                report.finish(false, self.describe(), stats)
            }
            Err(e) => {
                let remove = created && !mode.recreate;
                Err(database::after_failure(&admin, &db, remove, e).await)
            }
        }
    }
}
