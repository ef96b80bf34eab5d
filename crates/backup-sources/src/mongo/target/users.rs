//! Users and roles of a restore: which ones come with the restored
//! databases, which the target already has, and creating the others.

use std::collections::HashSet;

use backup_core::progress::Progress;
use backup_core::target::RestoreOptions;
use backup_core::Result;

use super::super::conn::Conn;
use super::super::{security, Metadata};
use super::plan::whole_dbs;
use super::snapshot::{Loaded, NsMapSync};

/// The target database of the users and roles of `db` (`None`: they are
/// not restored). They go with their whole database (under its new name):
/// a restore of some collections of a database brings none. Those of
/// `admin` and `$external` come only with a whole-deployment restore (no
/// patterns, no database in the target URL).
fn security_db(
    db: &str,
    opts: &RestoreOptions,
    url_db: Option<&str>,
    whole: &[String],
    map: &NsMapSync<'_>,
) -> Option<String> {
    let patterns = !opts.includes.is_empty() || !opts.excludes.is_empty();
    if security::DEPLOYMENT_DBS.contains(&db) {
        return (!patterns && url_db.is_none()).then(|| db.to_owned());
    }
    if patterns && !whole.iter().any(|s| s == db) {
        return None;
    }
    map(db, "").map(|(d, _)| d)
}

/// The users and roles to restore, and those of them the target has.
pub(super) struct UsersAndRoles {
    plan: security::Planned,
    /// Already on the target (as [`security::existing`] lists them).
    existing: HashSet<String>,
}

impl UsersAndRoles {
    /// Selects the users and roles of `loaded` that go with the restored
    /// databases, and asks the target which it already has.
    pub(super) async fn plan(
        conn: &Conn,
        meta: &Metadata,
        loaded: &Loaded,
        opts: &RestoreOptions,
        map: &NsMapSync<'_>,
    ) -> Result<Self> {
        let url_db = conn.database.clone();
        let whole = whole_dbs(meta, opts)?;
        let plan = security::Planned::new(&loaded.users, &loaded.roles, &|db: &str| {
            security_db(db, opts, url_db.as_deref(), &whole, map)
        });
        let existing = if plan.is_empty() {
            HashSet::new()
        } else {
            security::existing(conn, &plan).await?
        };
        Ok(UsersAndRoles { plan, existing })
    }

    /// The lines of the plan's summary: one per role, then one per user.
    pub(super) fn summary(&self, verb: &str) -> Vec<String> {
        let mut summary = Vec::new();
        for (kind, docs, key) in [
            ("role", &self.plan.roles, "role"),
            ("user", &self.plan.users, "user"),
        ] {
            for d in docs {
                let label = format!(
                    "{kind} {}@{}",
                    d.get_str(key).unwrap_or("?"),
                    d.get_str("db").unwrap_or("?")
                );
                if self.existing.contains(&label) {
                    summary.push(format!("leave {label} as it is (already on the target)"));
                } else {
                    summary.push(format!("{verb}create {label}"));
                }
            }
        }
        summary
    }

    /// Users and roles of the restored databases: creates those the
    /// target lacks (`None`: there were none to restore).
    pub(super) async fn restore(
        &self,
        conn: &Conn,
        progress: &dyn Progress,
    ) -> Result<Option<security::Outcome>> {
        if self.plan.is_empty() {
            return Ok(None);
        }
        progress.set_phase("users");
        security::restore(conn, &self.plan, &self.existing)
            .await
            .map(Some)
    }
}
