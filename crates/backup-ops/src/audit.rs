//! Recording operations in the audit trail (the repository's hash chain,
//! [`backup_core::audit`], and the local JSON-lines log) and checking it.

use std::path::{Path, PathBuf};

use backup_core::audit::{self, ChainReport, Operation};
use backup_core::repo::Repository;

use crate::error::Result;

/// Where audit records go: the repository's chain and a local log.
#[derive(Debug, Clone, Default)]
pub struct AuditLog {
    local: Option<PathBuf>,
}

/// What [`AuditLog::verify`] found.
#[derive(Debug, Clone)]
pub struct AuditCheck {
    /// The chain and its problems.
    pub chain: ChainReport,
    /// Every problem: the chain's, and lines of the local log that are
    /// unreadable or altered.
    pub problems: Vec<String>,
}

impl AuditLog {
    /// The local log at `configured` (`[audit] local_log`), or the default
    /// (`BACKUP_AUDIT_LOG`, `$XDG_STATE_HOME/backup/audit.jsonl`,
    /// `~/.local/state/backup/audit.jsonl`).
    pub fn new(configured: Option<&Path>) -> Self {
        AuditLog {
            local: configured
                .map(Path::to_owned)
                .or_else(audit::default_local_log),
        }
    }

    /// The local log's path.
    pub fn local_log(&self) -> Option<&Path> {
        self.local.as_deref()
    }

    /// Appends a record of `operation` to the repository (when it was
    /// opened) and to the local log, as the OS user of this process.
    /// Returns warnings: a failed audit write never fails the operation it
    /// records.
    pub async fn record(
        &self,
        repo: Option<&Repository>,
        operation: &str,
        success: bool,
        details: serde_json::Value,
    ) -> Vec<String> {
        self.record_as(repo, None, operation, success, details)
            .await
    }

    /// As [`AuditLog::record`], with `user` as who did it (a daemon
    /// identity; `None` for the OS user of this process).
    pub async fn record_as(
        &self,
        repo: Option<&Repository>,
        user: Option<&str>,
        operation: &str,
        success: bool,
        details: serde_json::Value,
    ) -> Vec<String> {
        let op = Operation {
            operation: operation.to_owned(),
            success,
            details,
            user: user.map(str::to_owned),
        };
        audit::record(repo, self.local.as_deref(), &op).await
    }

    /// Reads the repository's chain and checks it, and every record the
    /// local log knows of against it.
    ///
    /// # Errors
    ///
    /// Storage errors while listing or reading (damage is reported in the
    /// result).
    pub async fn verify(&self, repo: &Repository) -> Result<AuditCheck> {
        let (local, mut problems) = match &self.local {
            Some(path) => audit::read_local(path),
            None => (Vec::new(), Vec::new()),
        };
        let chain = audit::verify_chain(repo, &local).await?;
        problems.extend(chain.problems.iter().cloned());
        Ok(AuditCheck { chain, problems })
    }
}
