//! `[targets.NAME]`: restore destinations that need approvals whatever
//! job or snapshot a restore comes from (production databases, the live
//! data directory).

use std::path::{Component, Path, PathBuf};

use serde::Deserialize;

use super::{Config, ConfigError, Job};

/// `[targets.NAME]` as written.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TargetConfig {
    /// The system restores must not write into unapproved: a database URL
    /// without a password (its server, or one database of it) or a path
    /// (and everything under it).
    pub url: String,
    /// A restore requested through the daemon into this target waits for
    /// approvals (`approvals`, default 2) before it runs.
    #[serde(default)]
    pub protected: bool,
    /// With `protected`: how many people such a restore needs, the
    /// requester included. At least 2.
    pub approvals: Option<u32>,
}

impl TargetConfig {
    /// The people a restore into this target needs: 1 when it is not
    /// protected.
    ///
    /// # Errors
    ///
    /// `approvals` without `protected`, or below 2; a URL carrying a
    /// password.
    pub fn approvals_needed(&self, name: &str) -> Result<u32, ConfigError> {
        if backup_core::redact::has_password(&self.url) {
            return Err(ConfigError::invalid(
                &format!("targets.{name}.url"),
                "carries a password: a target names a system, with no credentials",
            ));
        }
        match (self.protected, self.approvals) {
            (false, None) => Ok(1),
            (false, Some(_)) => Err(ConfigError::invalid(
                &format!("targets.{name}.approvals"),
                "applies to protected targets: add protected = true",
            )),
            (true, Some(n)) if n < 2 => Err(ConfigError::invalid(
                &format!("targets.{name}.approvals"),
                format!(
                    "is {n}: a protected target needs at least 2 (the requester and another admin)"
                ),
            )),
            (true, n) => Ok(n.unwrap_or(2)),
        }
    }

    /// Whether a restore into `url` writes into this target: the same
    /// server and database (or either of the two naming none: a whole
    /// server), whatever user, scheme alias, default port or mode they
    /// spell; for paths, the target's directory or anything under it.
    pub fn covers(&self, url: &str) -> bool {
        // An absolute path with `.` and `..` folded, so that
        // `/srv/x/../prod` is under `/srv/prod` (symbolic links are not
        // followed).
        fn path(u: &str) -> Option<PathBuf> {
            if u.contains("://") && !u.starts_with("file://") {
                return None;
            }
            let raw = Path::new(u.strip_prefix("file://").unwrap_or(u));
            // Relative paths from the daemon's working directory.
            let raw = std::path::absolute(raw).unwrap_or_else(|_| raw.to_path_buf());
            let mut out = PathBuf::new();
            for c in raw.components() {
                match c {
                    Component::CurDir => {}
                    Component::ParentDir => {
                        out.pop();
                    }
                    other => out.push(other),
                }
            }
            Some(out)
        }
        // Modes (`?mode=`) and other parameters do not make another system.
        fn system(u: &str) -> &str {
            u.split('?').next().unwrap_or(u)
        }
        match (path(&self.url), path(url)) {
            (Some(protected), Some(into)) => into.starts_with(&protected),
            (None, None) => backup_core::source_url::selects(system(&self.url), system(url)),
            _ => false,
        }
    }
}

/// What a restore into a target needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestoreApprovals {
    /// People needed, the requester included: the most the job and every
    /// protected target the restore writes into ask for.
    pub needed: u32,
    /// The protected targets (names of `[targets]`) the restore writes
    /// into.
    pub protected_targets: Vec<String>,
}

impl Config {
    /// The approvals a restore of `job`'s snapshots into `url` needs: the
    /// job's own (`protected`, `approvals`), raised by every protected
    /// `[targets.NAME]` that covers `url`.
    pub fn restore_approvals(&self, job: &Job, url: &str) -> RestoreApprovals {
        let mut out = RestoreApprovals {
            needed: job.approvals,
            protected_targets: Vec::new(),
        };
        for (name, t) in &self.targets {
            // Validated at load; an invalid one counts as protected.
            let needed = t.approvals_needed(name).unwrap_or(2);
            if needed > 1 && t.covers(url) {
                out.needed = out.needed.max(needed);
                out.protected_targets.push(name.clone());
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(url: &str) -> TargetConfig {
        TargetConfig {
            url: url.to_owned(),
            protected: true,
            approvals: None,
        }
    }

    #[test]
    fn targets_cover_their_server_database_or_directory() {
        let db = target("postgres://db1/app");
        assert!(db.covers("postgresql://postgres@db1:5432/app"));
        assert!(db.covers("postgres://db1/app?mode=physical"));
        assert!(db.covers("postgres://db1/"), "the whole server holds app");
        assert!(!db.covers("postgres://db1/other"));
        assert!(!db.covers("postgres://db2/app"));
        assert!(!db.covers("/srv/app"));
        let server = target("postgres://db1");
        assert!(server.covers("postgres://db1/anything"));
        let dir = target("/srv/prod/");
        assert!(dir.covers("/srv/prod"));
        assert!(dir.covers("file:///srv/prod/data/x"));
        assert!(!dir.covers("/srv/production"));
        assert!(!dir.covers("/srv"));
        assert!(dir.covers("/srv/other/../prod/x"));
        assert!(dir.covers("/srv/./prod"));
    }

    #[test]
    fn target_approvals_are_checked() {
        let mut t = target("/srv/prod");
        assert_eq!(t.approvals_needed("p"), Ok(2));
        t.approvals = Some(3);
        assert_eq!(t.approvals_needed("p"), Ok(3));
        t.approvals = Some(1);
        assert!(t.approvals_needed("p").is_err());
        t.protected = false;
        assert!(t
            .approvals_needed("p")
            .unwrap_err()
            .to_string()
            .contains("protected = true"));
        t.approvals = None;
        assert_eq!(t.approvals_needed("p"), Ok(1));
        assert!(target("postgres://u:secret@db1/app")
            .approvals_needed("p")
            .is_err());
    }
}
