//! `[daemon]` and `[audit]`.

use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use super::ConfigError;
use crate::secret::SecretRef;

/// `[daemon]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct DaemonSettings {
    /// Address of the HTTP server (`/healthz`, `/metrics`, `/api`).
    pub listen: String,
    /// Jobs that may run at the same time.
    pub max_concurrent_jobs: usize,
    /// How long running backups may take to finish after SIGTERM.
    #[serde(with = "humantime_serde")]
    pub shutdown_grace: Duration,
    /// What to do about runs missed while the daemon was down.
    pub missed_runs: MissedRuns,
    /// `human` or `json` log lines.
    pub log_format: LogFormat,
    /// Bearer token for `POST /api/jobs/NAME/run` and the status page;
    /// without it the trigger is disabled.
    pub api_token: Option<SecretRef>,
    /// A second token that opens the status page (`/`) and nothing else:
    /// read-only access for people who must not trigger runs.
    pub read_token: Option<SecretRef>,
    /// Who may see the status page: `token` (the API token or the read
    /// token; the default), `public` (anyone who reaches the address) or
    /// `off`.
    pub status_page: StatusPage,
    /// `[[daemon.users]]`: named identities with a role and a hashed
    /// token or a client certificate subject (see [`crate::access`]).
    pub users: Vec<UserConfig>,
    /// `[daemon.tls]`: serve HTTPS, and with `client_ca` ask clients for
    /// certificates (mTLS identities).
    pub tls: Option<TlsSettings>,
    /// How often backup ages are checked against `max_age`.
    #[serde(with = "humantime_serde")]
    pub check_interval: Duration,
    /// Retries of a failed run.
    pub retry: RetryConfig,
    /// How long to wait for a conflicting repository lock.
    #[serde(with = "humantime_serde")]
    pub lock_wait: Duration,
    /// How long a restore request waits for its approvals before it
    /// expires (default 4h).
    #[serde(with = "humantime_serde")]
    pub restore_expiry: Duration,
    /// Where the daemon keeps what must survive a restart (pending restore
    /// requests). Default: `$XDG_STATE_HOME/backup/backupd`, else
    /// `~/.local/state/backup/backupd`.
    pub state_dir: Option<PathBuf>,
}

impl Default for DaemonSettings {
    fn default() -> Self {
        DaemonSettings {
            listen: "127.0.0.1:9187".to_owned(),
            max_concurrent_jobs: 2,
            shutdown_grace: Duration::from_secs(300),
            missed_runs: MissedRuns::Skip,
            log_format: LogFormat::Human,
            api_token: None,
            read_token: None,
            status_page: StatusPage::Token,
            users: Vec::new(),
            tls: None,
            check_interval: Duration::from_secs(60),
            retry: RetryConfig::default(),
            lock_wait: Duration::from_secs(600),
            restore_expiry: Duration::from_secs(4 * 3600),
            state_dir: None,
        }
    }
}

impl DaemonSettings {
    /// The directory of the daemon's state: `state_dir`, else
    /// `$XDG_STATE_HOME/backup/backupd`, else
    /// `~/.local/state/backup/backupd`; `None` without any of them.
    pub fn state_dir(&self) -> Option<PathBuf> {
        if let Some(d) = &self.state_dir {
            return Some(d.clone());
        }
        if let Some(state) = std::env::var_os("XDG_STATE_HOME") {
            return Some(PathBuf::from(state).join("backup").join("backupd"));
        }
        std::env::var_os("HOME").map(|h| {
            PathBuf::from(h)
                .join(".local")
                .join("state")
                .join("backup")
                .join("backupd")
        })
    }

    pub(super) fn validate(&self) -> Result<(), ConfigError> {
        if self.max_concurrent_jobs == 0 {
            return Err(ConfigError::invalid(
                "daemon.max_concurrent_jobs",
                "must be at least 1",
            ));
        }
        if self.retry.attempts == 0 {
            return Err(ConfigError::invalid(
                "daemon.retry.attempts",
                "must be at least 1",
            ));
        }
        if self.restore_expiry.is_zero() {
            return Err(ConfigError::invalid(
                "daemon.restore_expiry",
                "must be more than 0s",
            ));
        }
        if self.check_interval.is_zero() {
            return Err(ConfigError::invalid(
                "daemon.check_interval",
                "must be more than 0s",
            ));
        }
        if self.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(ConfigError::invalid(
                "daemon.listen",
                format!("`{}` is not an address such as 127.0.0.1:9187", self.listen),
            ));
        }
        if let Some(t) = &self.api_token {
            t.validate("daemon.api_token")?;
        }
        if let Some(t) = &self.read_token {
            t.validate("daemon.read_token")?;
        }
        let client_ca = self.tls.as_ref().and_then(|t| t.client_ca.as_ref());
        let mut names = std::collections::BTreeSet::new();
        let mut subjects = std::collections::BTreeSet::new();
        for (i, u) in self.users.iter().enumerate() {
            let key = format!("daemon.users[{i}]");
            if u.name.is_empty()
                || !u
                    .name
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-' | '@'))
            {
                return Err(ConfigError::invalid(
                    &format!("{key}.name"),
                    format!(
                        "`{}` is not a user name: use letters, digits and . _ - @",
                        u.name
                    ),
                ));
            }
            if matches!(u.name.as_str(), "api_token" | "read_token" | "anonymous") {
                return Err(ConfigError::invalid(
                    &format!("{key}.name"),
                    format!("`{}` is reserved for the daemon's own identities", u.name),
                ));
            }
            if !names.insert(u.name.as_str()) {
                return Err(ConfigError::invalid(
                    &format!("{key}.name"),
                    format!("the user `{}` is configured twice", u.name),
                ));
            }
            if let Some(hash) = &u.token_hash {
                crate::access::check_token_hash(hash)
                    .map_err(|e| ConfigError::invalid(&format!("{key}.token_hash"), e))?;
            }
            match &u.cert_subject {
                Some(subject) => {
                    crate::access::check_cert_subject(subject)
                        .map_err(|e| ConfigError::invalid(&format!("{key}.cert_subject"), e))?;
                    if client_ca.is_none() {
                        return Err(ConfigError::invalid(
                            &format!("{key}.cert_subject"),
                            "needs client certificates: set daemon.tls with cert, key and client_ca",
                        ));
                    }
                    if !subjects.insert(subject.as_str()) {
                        return Err(ConfigError::invalid(
                            &format!("{key}.cert_subject"),
                            format!("`{subject}` names another user already"),
                        ));
                    }
                }
                None if u.token_hash.is_none() => {
                    return Err(ConfigError::invalid(
                        &key,
                        format!(
                            "the user `{}` has no way to prove who they are: set token_hash (`backup token hash`) or cert_subject",
                            u.name
                        ),
                    ));
                }
                None => {}
            }
        }
        Ok(())
    }

    /// The retry policy of failed runs: `retry.attempts` attempts, waits
    /// doubling from `initial_backoff` up to `max_backoff`, without a
    /// limit on the total time.
    pub fn retry_policy(&self) -> backup_core::retry::RetryPolicy {
        backup_core::retry::RetryPolicy::with_max_attempts(self.retry.attempts)
            .with_backoff(
                self.retry.initial_backoff,
                self.retry.max_backoff,
                Duration::MAX,
            )
            .with_jitter(false)
    }
}

/// `[[daemon.users]]`: an identity of the daemon's API.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UserConfig {
    /// The name the audit trail records.
    pub name: String,
    /// What the user may do.
    pub role: crate::access::Role,
    /// The Argon2 hash of the user's token (`backup token hash`); the
    /// configuration never holds the token itself.
    pub token_hash: Option<String>,
    /// The subject of the user's client certificate, with `daemon.tls`
    /// and its `client_ca`: `CN=NAME` (the certificate's common name) or
    /// the whole distinguished name as RFC 4514 writes it
    /// (`CN=ann,O=Example`).
    pub cert_subject: Option<String>,
}

/// `[daemon.tls]`: the daemon serves HTTPS (rustls) instead of HTTP.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsSettings {
    /// The server's certificate chain (PEM, the server's own first).
    pub cert: PathBuf,
    /// The server's private key (PEM: PKCS#8, PKCS#1 or SEC1).
    pub key: PathBuf,
    /// CA certificates (PEM) that client certificates must chain to. With
    /// it the daemon asks every client for a certificate; one is optional
    /// (token users still connect), but one that does not chain to these
    /// CAs ends the handshake. A verified certificate whose subject is a
    /// user's `cert_subject` is that user.
    pub client_ca: Option<PathBuf>,
}

/// Access to the status page.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum StatusPage {
    /// With the API token or the read token (a bearer token, or the
    /// token as the password of HTTP basic authentication).
    Token,
    /// Without a token (behind a proxy that authenticates, on a trusted
    /// network).
    Public,
    /// Not served.
    Off,
}

/// Policy for scheduled runs missed while no daemon was running.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MissedRuns {
    /// Wait for the next scheduled time.
    Skip,
    /// Run once at start, then follow the schedule.
    RunOnce,
}

/// Log line format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum LogFormat {
    /// Human-readable lines.
    Human,
    /// One JSON object per line.
    Json,
}

impl std::str::FromStr for LogFormat {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "human" => Ok(LogFormat::Human),
            "json" => Ok(LogFormat::Json),
            other => Err(format!("`{other}` is not a log format: use human or json")),
        }
    }
}

/// `[daemon.retry]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetryConfig {
    /// Attempts per run, the first included (1 = no retry).
    pub attempts: u32,
    /// Wait before the first retry; doubled after each further failure.
    #[serde(with = "humantime_serde")]
    pub initial_backoff: Duration,
    /// Longest wait between attempts.
    #[serde(with = "humantime_serde")]
    pub max_backoff: Duration,
}

impl Default for RetryConfig {
    fn default() -> Self {
        RetryConfig {
            attempts: 3,
            initial_backoff: Duration::from_secs(30),
            max_backoff: Duration::from_secs(600),
        }
    }
}

/// `[audit]`.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AuditSettings {
    /// The local JSON-lines audit log (default: `BACKUP_AUDIT_LOG`, else
    /// `$XDG_STATE_HOME/backup/audit.jsonl` or `~/.local/state/backup/audit.jsonl`).
    pub local_log: Option<PathBuf>,
}
