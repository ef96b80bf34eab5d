//! The PostgreSQL restore target.

mod cascade;
mod data;
mod database;
mod globals;
mod indexes;
mod plan;
mod report;
mod schema;
mod snapshot;

use std::collections::{BTreeSet, HashSet};
use std::sync::Arc;

use async_trait::async_trait;
use backup_core::progress::Progress;
use backup_core::reader::SnapshotReader;
use backup_core::target::{RestoreOptions, RestoreReport, Target};
use backup_core::{Error, Result};
use tokio_postgres::Client;

use super::conn::{query_error, ConnInfo, Side};
use super::script::quote_ident;
use super::{Metadata, TableFilter};
use data::{check_row_counts, load_data};
use globals::{restore_globals, roles_defined};
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

/// A restore checked and planned, before anything changed.
struct Prepared {
    loaded: Loaded,
    mode: Mode,
    plan: Plan,
    /// The database's own properties, applied when the restore created
    /// the database.
    properties: Vec<String>,
    /// Roles of the target cluster before the restore.
    roles: HashSet<String>,
    /// Why a restore without `--drop` would be refused (a dry run shows
    /// it in the plan).
    conflict: Option<String>,
}

/// What the restore proper did.
struct Ran {
    warnings: Vec<String>,
    roles_created: Vec<String>,
}

/// A failed restore, and whether it changed the target (a merge restore
/// replaces the tables and their schema in one transaction, so a failure
/// there changes nothing).
struct Failure {
    error: Error,
    changed: bool,
}

impl From<Error> for Failure {
    fn from(error: Error) -> Self {
        Failure {
            error,
            changed: true,
        }
    }
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

    /// Checks the target and plans the restore; changes nothing. A merge
    /// restore rehearses the drop of the selected tables (rolled back) to
    /// find what it would take with it; roles the plan names must exist
    /// (or come from the snapshot's globals) unless `--skip-missing-roles`
    /// leaves their statements out.
    async fn prepare(
        &self,
        snapshot: &SnapshotReader,
        opts: &RestoreOptions,
    ) -> Result<(Client, Prepared)> {
        self.check_options(opts)?;
        let filter = TableFilter::new(&opts.includes, &opts.excludes)?;
        let loaded = load(snapshot).await?;
        let admin = database::admin(&self.info).await?;
        let (found, conflict) =
            preflight(&self.info, &admin, &loaded, opts.drop, opts.dry_run).await?;
        let mode = Mode::new(&found, !filter.is_empty());
        let none = HashSet::new();
        let existing = if mode.merge { &found.relations } else { &none };
        let mut plan = plan(&loaded, &filter, existing, &HashSet::new())?;
        plan.unmatched =
            TableFilter::unmatched(&opts.includes, &opts.excludes, &loaded.meta.tables)?;
        if mode.merge {
            self.plan_cascade(&loaded, &filter, existing, &mut plan)
                .await?;
        }
        let roles = database::roles(&admin).await?;
        let creates = mode.recreate || !mode.exists;
        let props = loaded.meta.database_properties.as_ref().filter(|_| creates);
        let mut needed: BTreeSet<String> = plan.roles_named();
        needed.extend(props.iter().flat_map(|p| p.roles()));
        let from_globals: Vec<String> = loaded
            .globals
            .as_ref()
            .map(roles_defined)
            .unwrap_or_default();
        plan.roles_to_create = from_globals
            .iter()
            .filter(|r| !roles.contains(*r))
            .cloned()
            .collect();
        let missing: HashSet<String> = needed
            .iter()
            .filter(|r| !roles.contains(*r) && !from_globals.contains(r))
            .cloned()
            .collect();
        if !missing.is_empty() {
            if !opts.skip_missing_roles {
                let mut list: Vec<&String> = missing.iter().collect();
                list.sort();
                let list: Vec<String> = list.iter().map(|r| format!("`{r}`")).collect();
                let globals = if loaded.globals.is_some() {
                    "the snapshot's globals do not define them"
                } else {
                    "the snapshot was taken without --pg-globals, so it cannot create them"
                };
                return Err(Error::target_failed(format!(
                    "{} lacks {} role(s) the snapshot's objects name (owners, grants, policies): {} ({globals}); create them first, restore a snapshot taken with --pg-globals, or pass --skip-missing-roles to leave out the statements that name them (each is reported) (nothing was changed)",
                    self.info.location(),
                    missing.len(),
                    list.join(", ")
                )));
            }
            plan.skip_roles(&missing);
        }
        let properties = match props {
            Some(p) => {
                database::property_statements(self.info.dbname(), p, &missing, &mut plan.skipped)
            }
            None => Vec::new(),
        };
        Ok((
            admin,
            Prepared {
                loaded,
                mode,
                plan,
                properties,
                roles,
                conflict,
            },
        ))
    }

    /// A merge restore drops the selected tables with what depends on
    /// them: what that takes of other tables must be recreated by the
    /// snapshot (kept in the plan), or the restore is refused.
    async fn plan_cascade(
        &self,
        loaded: &Loaded,
        filter: &TableFilter,
        existing: &HashSet<(String, String)>,
        plan_out: &mut Plan,
    ) -> Result<()> {
        let tables: Vec<(String, String)> = plan_out
            .tables
            .iter()
            .map(|&i| {
                let t = &loaded.meta.tables[i];
                (t.schema.clone(), t.name.clone())
            })
            .collect();
        let quoted: Vec<String> = plan_out
            .tables
            .iter()
            .map(|&i| loaded.meta.tables[i].quoted())
            .collect();
        let c = self.info.connect(Side::Target).await?;
        let victims = cascade::rehearse_drop(&c, &tables, &quoted).await?;
        let (keep, lost) = cascade::recreated(&victims, loaded);
        if !lost.is_empty() {
            return Err(Error::target_failed(format!(
                "replacing the selected tables in `{}` would also drop {} object(s) that depend on them and that the snapshot does not recreate: {}; include the tables they belong to, or remove those objects first (nothing was changed)",
                self.info.dbname(),
                lost.len(),
                lost.join(", ")
            )));
        }
        if keep.iter().any(|k| !plan_out.keeps(k)) {
            let mut again = plan(loaded, filter, existing, &keep)?;
            again.skipped.clone_from(&plan_out.skipped);
            again.unmatched.clone_from(&plan_out.unmatched);
            *plan_out = again;
        }
        Ok(())
    }

    /// The restore proper, into an existing database.
    async fn run(
        &self,
        snapshot: &SnapshotReader,
        p: &Prepared,
        progress: Arc<dyn Progress>,
    ) -> std::result::Result<Ran, Failure> {
        let (loaded, plan, merge) = (&p.loaded, &p.plan, p.mode.merge);
        let mut warnings = Vec::new();
        let mut roles_created = Vec::new();
        let settings = loaded.pre.session_settings();
        let main = database::worker(&self.info, &settings).await?;
        // Default privileges of the target would be given to every
        // relation the restore creates; the snapshot's own grants follow.
        let reset = database::has_default_privileges(&main).await?;
        progress.set_phase("schema");
        let mut exec = Executor::new(&main, merge, &loaded.pre.preamble);
        if merge {
            // The selected tables are dropped and their schema recreated in
            // one transaction: a failure there changes nothing.
            let begin = main
                .batch_execute("BEGIN")
                .await
                .map_err(|e| query_error(Side::Target, "starting the restore's transaction", e));
            begin?;
            exec.savepoints = true;
            let replaced = async {
                if let Some(g) = loaded
                    .globals
                    .as_ref()
                    .filter(|_| !plan.roles_to_create.is_empty())
                {
                    roles_created =
                        restore_globals(&main, g, &p.roles, true, &mut warnings).await?;
                }
                let names: Vec<String> = plan
                    .tables
                    .iter()
                    .map(|&i| loaded.meta.tables[i].quoted())
                    .collect();
                database::drop_tables(&main, &names).await?;
                for e in &plan.pre {
                    exec.run_entry(e).await?;
                    if reset {
                        database::reset_privileges(&main, e).await?;
                    }
                }
                main.batch_execute("COMMIT")
                    .await
                    .map_err(|e| query_error(Side::Target, "committing the new tables", e))
            };
            if let Err(error) = replaced.await {
                let _ = main.batch_execute("ROLLBACK").await;
                return Err(Failure {
                    error,
                    changed: false,
                });
            }
            exec.savepoints = false;
        } else {
            if let Some(g) = &loaded.globals {
                roles_created = restore_globals(&main, g, &p.roles, false, &mut warnings).await?;
            }
            for e in &plan.pre {
                exec.run_entry(e).await?;
                if reset {
                    database::reset_privileges(&main, e).await?;
                }
            }
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
        Ok(Ran {
            warnings,
            roles_created,
        })
    }
}

#[async_trait]
impl Target for PostgresTarget {
    fn describe(&self) -> String {
        self.info.redacted()
    }

    fn check_options(&self, opts: &RestoreOptions) -> Result<()> {
        opts.refuse_physical("logical PostgreSQL restores")?;
        opts.refuse_file_owners("logical PostgreSQL restores")?;
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

    async fn check(&self, snapshot: &SnapshotReader, opts: &RestoreOptions) -> Result<()> {
        self.prepare(snapshot, opts).await.map(|_| ())
    }

    async fn restore(
        &self,
        snapshot: &SnapshotReader,
        opts: &RestoreOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<RestoreReport> {
        let (admin, prepared) = self.prepare(snapshot, opts).await?;
        let db = self.info.dbname().to_owned();
        let (loaded, mode) = (&prepared.loaded, &prepared.mode);
        let stats = prepared.plan.stats(loaded);
        let mut report =
            PostgresRestoreReport::new(db.clone(), mode.action(), loaded, &prepared.plan);
        report.conflict = prepared.conflict.clone();
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
        match this.run(snapshot, &prepared, progress.clone()).await {
            Ok(mut ran) => {
                if created {
                    // Owner, settings, grants, connection limit: last, so
                    // that none of them gets in the restore's way.
                    let mut w = database::apply_properties(&admin, &prepared.properties).await;
                    ran.warnings.append(&mut w);
                }
                report.warnings = Some(ran.warnings);
                report.roles_created = Some(ran.roles_created);
                report.finish(false, self.describe(), stats)
            }
            Err(Failure { error, changed }) if !changed => Err(nothing_changed(error)),
            Err(Failure { error, .. }) => {
                let remove = created && !mode.recreate;
                Err(database::after_failure(&admin, &db, remove, error).await)
            }
        }
    }
}

/// The error of a failure that was rolled back.
fn nothing_changed(e: Error) -> Error {
    const WHAT: &str = "the transaction was rolled back, nothing was changed";
    match e {
        Error::Target { message, .. } => Error::target_failed(format!("{message}; {WHAT}")),
        Error::PermissionDenied(m) => Error::PermissionDenied(format!("{m}; {WHAT}")),
        other => Error::target_failed(format!("{other}; {WHAT}")),
    }
}
