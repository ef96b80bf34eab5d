//! The MongoDB restore target.
//!
//! A restore reads the snapshot back ([`snapshot`]), checks its plan
//! against the target before anything is written ([`plan`], [`users`]),
//! then drops and creates the collections ([`collections`]), loads the
//! documents ([`documents`]), builds the indexes ([`indexes`]), creates
//! the views ([`views`]) and the users and roles, and replays the captured
//! oplog ([`replay`]); [`report`] says what it did or would do.

mod collections;
mod documents;
mod indexes;
mod plan;
mod replay;
mod report;
mod snapshot;
pub(super) mod split;
mod state;
mod users;
mod views;

use std::sync::{Arc, Mutex, PoisonError};

use async_trait::async_trait;
use backup_core::progress::Progress;
use backup_core::reader::SnapshotReader;
use backup_core::target::{RecoveryPoint, RestoreOptions, RestoreReport, Target};
use backup_core::{Error, Result};
use mongodb::bson::{doc, Document};

use super::conn::{Conn, Side};
use super::{NsFilter, Renames};
use documents::Limits;
use plan::{check_conflicts, check_distinct_targets, existing, selected_dbs};
use replay::is_code;
use report::{stats, Done, MongoRestoreReport};
use snapshot::snapshot_metadata;
use state::Restore;
use users::UsersAndRoles;

pub(crate) use replay::{feed, Replayer};
pub(crate) use snapshot::{load, Loaded, Planned};

/// Restores a MongoDB snapshot into the deployment a URL names.
#[derive(Debug)]
pub struct MongoTarget {
    url: String,
    redacted: String,
    jobs: usize,
    /// Namespaces the last restore created (for [`Target::discard`]).
    created: Mutex<Vec<(String, String)>>,
    /// The selection and renames of the last restore, which
    /// [`Target::check_restored`] maps the snapshot's namespaces with.
    last_options: Mutex<RestoreOptions>,
}

impl MongoTarget {
    /// A target for `url` (`mongodb://user:pass@host:port/?options`).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a URL that is not a MongoDB URL.
    pub fn new(url: &str) -> Result<Self> {
        if !(url.starts_with("mongodb://") || url.starts_with("mongodb+srv://")) {
            return Err(Error::Config(format!(
                "`{}` is not a MongoDB URL (mongodb:// or mongodb+srv://)",
                backup_core::redact::redact_url(url)
            )));
        }
        let jobs = std::thread::available_parallelism().map_or(2, |n| n.get().max(2));
        Ok(MongoTarget {
            url: url.to_owned(),
            redacted: backup_core::redact::redact_url(url),
            jobs,
            created: Mutex::new(Vec::new()),
            last_options: Mutex::new(RestoreOptions::default()),
        })
    }

    /// Uses `jobs` collections at once (each with several insert workers).
    #[must_use]
    pub fn with_jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs.max(1);
        self
    }

    async fn conn(&self) -> Result<Conn> {
        Conn::new(&self.url, Side::Target).await
    }

    /// The namespace mapping of a restore: patterns, `--rename` rules and
    /// the URL's database.
    fn mapper(
        opts: &RestoreOptions,
        url_db: Option<&str>,
        snapshot_dbs: &[String],
    ) -> Result<impl Fn(&str, &str) -> Option<(String, String)> + Sync + use<>> {
        let filter = NsFilter::new(&opts.includes, &opts.excludes)?;
        let mut renames = Renames::parse(&opts.renames)?;
        if let Some(target_db) = url_db {
            let mut dbs: Vec<&String> = snapshot_dbs.iter().collect();
            dbs.dedup();
            match dbs.as_slice() {
                [] => {}
                [only] => {
                    if !renames.has_database_rule(only) {
                        renames = Renames::parse(
                            &opts
                                .renames
                                .iter()
                                .cloned()
                                .chain([format!("{only}:{target_db}")])
                                .collect::<Vec<_>>(),
                        )?;
                    }
                }
                _ => {
                    return Err(Error::Config(format!(
                        "the target URL names database `{target_db}` but the snapshot holds {} databases; restore to a URL without a database, or select one with --include and map it with --rename DB:{target_db}",
                        dbs.len()
                    )))
                }
            }
        }
        Ok(move |db: &str, coll: &str| {
            if super::INTERNAL_DATABASES.contains(&db) || coll.starts_with("system.") {
                return None;
            }
            if !coll.is_empty() && !filter.matches(db, coll) {
                return None;
            }
            // A database as a whole (a replayed `dropDatabase`): only when
            // the patterns select every collection of it (`db`, `db.*`).
            // Another database dropped in the source, or one selected in
            // part, must not be dropped on the target.
            if coll.is_empty() && !filter.matches(db, "*") {
                return None;
            }
            Some(renames.map(db, coll))
        })
    }
}

#[async_trait]
impl Target for MongoTarget {
    fn describe(&self) -> String {
        self.redacted.clone()
    }

    fn check_options(&self, opts: &RestoreOptions) -> Result<()> {
        opts.refuse_physical("MongoDB")?;
        opts.refuse_file_owners("MongoDB")?;
        // The point's own check (a PostgreSQL point on an oplog) comes
        // with the plan; these options have no oplog meaning at all.
        if let Some(p) = opts
            .point
            .as_ref()
            .filter(|p| !matches!(p, RecoveryPoint::OplogTs { .. }))
        {
            return Err(Error::Config(format!(
                "{} is a {} target, not a MongoDB one; a MongoDB restore takes --at TIME or --at-ts SECONDS:INCREMENT",
                crate::capture::point_flag(p),
                crate::capture::point_owner(p)
            )));
        }
        if opts.target_action.is_some() || opts.timeline.is_some() {
            return Err(Error::Config(
                "--target-action and --timeline apply to PostgreSQL point-in-time restores"
                    .to_owned(),
            ));
        }
        if opts.skip_missing_roles {
            return Err(Error::Config(
                "--skip-missing-roles applies to PostgreSQL restores".to_owned(),
            ));
        }
        Renames::parse(&opts.renames)?;
        NsFilter::new(&opts.includes, &opts.excludes)?;
        Ok(())
    }

    async fn replaces_data(&self, opts: &RestoreOptions) -> Result<bool> {
        // Whether any namespace of the target holds data is only known
        // against a snapshot; a --drop restore of a reachable server is
        // assumed to replace data (the safety backup of an empty target is
        // cheap).
        if !opts.drop || opts.dry_run {
            return Ok(false);
        }
        let conn = self.conn().await?;
        conn.hello().await?;
        Ok(true)
    }

    async fn check_restored(&self, snapshot: &SnapshotReader) -> Result<Vec<String>> {
        let conn = self.conn().await?;
        let meta = snapshot_metadata(snapshot)?;
        let opts = self
            .last_options
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        let map = Self::mapper(
            &opts,
            conn.database.as_deref(),
            &selected_dbs(&meta, &opts)?,
        )?;
        let loaded = load(snapshot, &map).await?;
        let replayed = meta.oplog.as_ref().is_some_and(|o| o.entries > 0);
        let mut diffs = Vec::new();
        for p in loaded.collections.iter().filter(|p| !p.meta.is_view()) {
            let n = conn
                .client
                .database(&p.db)
                .collection::<Document>(&p.coll)
                .count_documents(doc! {})
                .await
                .map_err(|e| conn.error(&format!("counting {}", p.target_ns()), e))?;
            if n != p.meta.documents && !replayed {
                diffs.push(format!(
                    "{}: {n} documents restored, {} in the snapshot",
                    p.target_ns(),
                    p.meta.documents
                ));
            }
        }
        Ok(diffs)
    }

    async fn discard(&self) -> Result<()> {
        let conn = self.conn().await?;
        let created =
            std::mem::take(&mut *self.created.lock().unwrap_or_else(PoisonError::into_inner));
        for (db, coll) in created {
            match conn
                .client
                .database(&db)
                .collection::<Document>(&coll)
                .drop()
                .await
            {
                Ok(()) => {}
                Err(e) if is_code(&e, &[26]) => {}
                Err(e) => return Err(conn.error(&format!("dropping {db}.{coll}"), e)),
            }
        }
        Ok(())
    }

    async fn restore(
        &self,
        snapshot: &SnapshotReader,
        opts: &RestoreOptions,
        progress: Arc<dyn Progress>,
    ) -> Result<RestoreReport> {
        // The plan, checked before anything is written.
        self.check_options(opts)?;
        let meta = snapshot_metadata(snapshot)?;
        let conn = self.conn().await?;
        let selected = selected_dbs(&meta, opts)?;
        let map = Self::mapper(opts, conn.database.as_deref(), &selected)?;
        let loaded = load(snapshot, &map).await?;
        let namespaces: Vec<(&str, &str)> = meta
            .collections
            .iter()
            .map(|c| (c.db.as_str(), c.name.as_str()))
            .collect();
        let unmatched = NsFilter::unmatched(&opts.includes, &opts.excludes, &namespaces)?;
        // A restore to a point in time may select collections that only
        // the replay creates.
        if loaded.collections.is_empty()
            && !(opts.includes.is_empty() && opts.excludes.is_empty())
            && opts.replay.is_none()
        {
            return Err(Error::Config(format!(
                "the --include/--exclude patterns select no collection of snapshot {} ({}); patterns are globs over db.collection, and a pattern without a dot names a database",
                snapshot.id().short(),
                if unmatched.is_empty() {
                    "the excludes leave nothing".to_owned()
                } else {
                    unmatched.join("; ")
                }
            )));
        }
        let hello = conn.hello().await?;
        let users = UsersAndRoles::plan(&conn, &meta, &loaded, opts, &map).await?;
        check_distinct_targets(&loaded.collections)?;
        let existing = existing(&conn, &loaded.collections).await?;
        if !opts.dry_run {
            check_conflicts(&loaded.collections, &existing, opts)?;
        }
        // The oplog is replayed only where the backup's scope covered it,
        // with the restore's patterns and renames.
        let scope = loaded.meta.scope.clone();
        let oplog_map = |db: &str, coll: &str| -> Option<(String, String)> {
            if coll.is_empty() {
                return map(db, coll);
            }
            if !scope.covers(db, coll).unwrap_or(false) {
                return None;
            }
            map(db, coll)
        };
        // A restore to a point in time reads every piece to the target
        // before anything is written: each must read back intact and hold
        // only entries the replay can apply, and collections the replay
        // creates must not hold data on the target.
        let point = if let Some(replay) = &opts.replay {
            if meta.replica_set.is_none() || !meta.consistent {
                return Err(Error::Config(format!(
                        "snapshot {} is not a consistent snapshot of a replica set, so it cannot be the base of a restore to a point in time",
                        snapshot.id().short()
                    )));
            }
            let mut counter = replay::Replayer::new(None, &oplog_map, 1);
            replay::feed(snapshot, loaded.oplog.as_ref(), Some(replay), &mut counter).await?;
            let scan = counter.finish().await?;
            let created =
                plan::created_conflicts(&conn, &scan.creates, &loaded.collections).await?;
            if !created.is_empty() && !opts.drop && !opts.dry_run {
                return Err(Error::target_failed(format!(
                        "the replay creates {} that the target already holds with data: {}; restore with --drop to replace them, or into another database with --rename (nothing was changed)",
                        if created.len() == 1 { "a collection" } else { "collections" },
                        created.join(", ")
                    )));
            }
            Some((scan, created))
        } else {
            if opts.is_point_in_time() {
                return Err(Error::Config(
                    "a MongoDB restore to a point in time replays the captured oplog, which the restore plans itself (backup restore --at TIME --to ...); this target was handed none".to_owned(),
                ));
            }
            None
        };
        let mut report = MongoRestoreReport::new(&loaded, &existing, &users, opts);
        report.warn(unmatched);
        if let (Some((scan, _)), Some(replay)) = (&point, &opts.replay) {
            report.point_in_time(snapshot.id(), replay, scan, opts.dry_run);
        }
        let stats = stats(&loaded.collections);
        if opts.dry_run {
            return report.to_restore_report(true, self.describe(), stats);
        }
        progress.set_total(stats.bytes);
        opts.clone_into(
            &mut self
                .last_options
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );

        let run = Restore {
            snapshot,
            conn: &conn,
            opts,
            progress: &progress,
            loaded: &loaded,
            map: &map,
            existing: &existing,
            jobs: self.jobs,
            created: &self.created,
        };
        if let Some((_, created)) = &point {
            if opts.drop {
                plan::drop_namespaces(&conn, created).await?;
            }
        }
        run.drop_existing().await?;
        run.create_collections().await?;
        let counts = run.load_documents(Limits::from(&hello)).await?;
        let count_mismatches = counts.mismatches(&loaded.collections);
        let indexes = run.build_indexes().await;
        let views = run.create_views().await?;
        let users = users.restore(&conn, &*progress).await?;
        let replayed = run.replay_oplog(&oplog_map).await?;
        let done = Done {
            inserted: counts.inserted(),
            count_mismatches,
            indexes,
            views,
            users,
            replayed,
        };
        report.finish(done, self.describe(), stats)
    }
}

#[cfg(test)]
mod mapper_tests {
    use super::*;

    #[test]
    fn database_commands_apply_only_to_wholly_selected_databases() {
        let opts = RestoreOptions {
            includes: vec!["shop.*".to_owned(), "app.orders".to_owned()],
            renames: vec!["shop:shop2".to_owned(), "app:app2".to_owned()],
            ..RestoreOptions::default()
        };
        let map = MongoTarget::mapper(&opts, None, &[]).unwrap();
        assert_eq!(map("shop", ""), Some(("shop2".to_owned(), String::new())));
        assert_eq!(map("other", ""), None, "an unselected database");
        assert_eq!(map("app", ""), None, "a database selected in part");
        assert_eq!(
            map("app", "orders"),
            Some(("app2".to_owned(), "orders".to_owned()))
        );
        let all = MongoTarget::mapper(&RestoreOptions::default(), None, &[]).unwrap();
        assert_eq!(all("other", ""), Some(("other".to_owned(), String::new())));
    }
}
