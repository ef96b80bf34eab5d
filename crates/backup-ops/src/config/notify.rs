//! `[notifications.NAME]`: where alerts go and which events they take.

use serde::Deserialize;

use super::ConfigError;
use crate::secret::SecretRef;

/// `[notifications.NAME]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(tag = "type", rename_all = "kebab-case", deny_unknown_fields)]
pub enum NotificationConfig {
    /// HTTP POST of a Slack-compatible JSON payload.
    Webhook {
        /// The webhook URL (treated as a secret: never logged).
        url: Option<String>,
        /// Or where to read the URL from.
        url_from: Option<SecretRef>,
        /// Events to send (default: all but `success`, which jobs opt into).
        events: Option<Vec<Event>>,
    },
    /// E-mail over SMTP.
    Smtp {
        /// Server host.
        host: String,
        /// Server port (default 587 for STARTTLS, 465 for TLS, 25 for none).
        port: Option<u16>,
        /// `starttls`, `tls` or `none` (only for a local relay).
        security: SmtpSecurity,
        /// User name for authentication.
        username: Option<String>,
        /// Password for authentication.
        password: Option<SecretRef>,
        /// Sender address.
        from: String,
        /// Recipients.
        to: Vec<String>,
        /// Events to send.
        events: Option<Vec<Event>>,
    },
}

impl NotificationConfig {
    pub(super) fn validate(&self, name: &str) -> Result<(), ConfigError> {
        match self {
            NotificationConfig::Webhook { url, url_from, .. } => {
                if url.is_some() == url_from.is_some() {
                    return Err(ConfigError::invalid(
                        &format!("notifications.{name}"),
                        "give exactly one of `url` or `url_from`",
                    ));
                }
                if let Some(u) = url {
                    url::Url::parse(u).map_err(|e| {
                        ConfigError::invalid(&format!("notifications.{name}.url"), e)
                    })?;
                }
                if let Some(r) = url_from {
                    r.validate(&format!("notifications.{name}.url_from"))?;
                }
            }
            NotificationConfig::Smtp { to, password, .. } => {
                if to.is_empty() {
                    return Err(ConfigError::invalid(
                        &format!("notifications.{name}.to"),
                        "needs at least one recipient",
                    ));
                }
                if let Some(p) = password {
                    p.validate(&format!("notifications.{name}.password"))?;
                }
            }
        }
        Ok(())
    }

    /// The events this channel takes (every event when not narrowed).
    pub fn events(&self) -> Vec<Event> {
        let (NotificationConfig::Webhook { events, .. } | NotificationConfig::Smtp { events, .. }) =
            self;
        events.clone().unwrap_or_else(|| Event::ALL.to_vec())
    }
}

/// Transport security of SMTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum SmtpSecurity {
    /// Plain connection upgraded with STARTTLS (required).
    Starttls,
    /// TLS from the start (SMTPS).
    Tls,
    /// No encryption (a relay on localhost only).
    None,
}

/// What a notification is about.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Deserialize, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Event {
    /// A run failed (after its retries).
    Failure,
    /// A run succeeded after failures.
    Recovery,
    /// The last successful backup is older than `max_age`.
    Missed,
    /// A verification found damage or failed.
    VerifyFailed,
    /// A run succeeded (only for jobs with `notify_success`).
    Success,
    /// Continuous capture is further behind than the job allows.
    CaptureLag,
    /// Continuous capture recorded a gap: some changes cannot be restored.
    CaptureGap,
    /// Continuous capture stopped (and is being restarted).
    CaptureStopped,
    /// A run took more than `alerts.duration_factor` times the median of
    /// the job's recent runs.
    DurationAnomaly,
    /// A run added or stored far more (or far less) than usual.
    SizeAnomaly,
    /// A repository's free space (or quota) is under its `min_free`.
    StorageLow,
    /// A restore drill failed: the restore, the start or a check.
    DrillFailed,
    /// A restore drill took longer than the job's `max_rto`.
    RtoExceeded,
    /// The scheduled report (`[report]`).
    Report,
    /// A restore was requested through the daemon.
    RestoreRequested,
    /// A restore request was approved (or denied, or expired).
    RestoreApproved,
    /// A restore requested through the daemon ended.
    RestoreFinished,
}

impl Event {
    /// Every event.
    pub const ALL: [Event; 17] = [
        Event::Failure,
        Event::Recovery,
        Event::Missed,
        Event::VerifyFailed,
        Event::Success,
        Event::CaptureLag,
        Event::CaptureGap,
        Event::CaptureStopped,
        Event::DurationAnomaly,
        Event::SizeAnomaly,
        Event::StorageLow,
        Event::DrillFailed,
        Event::RtoExceeded,
        Event::Report,
        Event::RestoreRequested,
        Event::RestoreApproved,
        Event::RestoreFinished,
    ];

    /// Its name in the file and in payloads.
    pub fn name(self) -> &'static str {
        match self {
            Event::Failure => "failure",
            Event::Recovery => "recovery",
            Event::Missed => "missed",
            Event::VerifyFailed => "verify_failed",
            Event::Success => "success",
            Event::CaptureLag => "capture_lag",
            Event::CaptureGap => "capture_gap",
            Event::CaptureStopped => "capture_stopped",
            Event::DurationAnomaly => "duration_anomaly",
            Event::SizeAnomaly => "size_anomaly",
            Event::StorageLow => "storage_low",
            Event::DrillFailed => "drill_failed",
            Event::RtoExceeded => "rto_exceeded",
            Event::Report => "report",
            Event::RestoreRequested => "restore_requested",
            Event::RestoreApproved => "restore_approved",
            Event::RestoreFinished => "restore_finished",
        }
    }
}
