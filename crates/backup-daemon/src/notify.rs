//! Notifications: Slack-compatible webhooks and SMTP e-mail.
//!
//! Delivery runs in background tasks: a channel that cannot be reached is
//! retried with backoff and finally given up with an error in the log; it
//! never blocks or stops the daemon.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use backup_core::retry::{retry, RetryPolicy};
use backup_ops::config::{Config, Event, Job, NotificationConfig, ReportFormat, SmtpSecurity};
use backup_ops::secret::{ExposeSecret, SecretString};
use chrono::{DateTime, Utc};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message as Email, Tokio1Executor};

use crate::state::Status;

/// One notification.
#[derive(Debug, Clone)]
pub struct Notice {
    /// What happened.
    pub event: Event,
    /// The job concerned.
    pub job: String,
    /// One line.
    pub summary: String,
    /// More lines (the error, sizes, ...).
    pub details: String,
    /// When.
    pub time: DateTime<Utc>,
}

impl Notice {
    fn text(&self) -> String {
        let icon = match self.event {
            Event::Failure
            | Event::VerifyFailed
            | Event::CaptureGap
            | Event::DrillFailed
            | Event::StorageLow => ":rotating_light:",
            Event::Missed
            | Event::CaptureLag
            | Event::CaptureStopped
            | Event::RtoExceeded
            | Event::DurationAnomaly
            | Event::SizeAnomaly => ":warning:",
            Event::Recovery | Event::Success => ":white_check_mark:",
            Event::Report => ":bar_chart:",
            Event::RestoreRequested | Event::RestoreApproved | Event::RestoreFinished => {
                ":inbox_tray:"
            }
        };
        if self.details.is_empty() {
            format!("{icon} {}", self.summary)
        } else {
            format!("{icon} {}\n```{}```", self.summary, self.details)
        }
    }

    /// The webhook payload: Slack's `text` plus structured fields, which
    /// Slack ignores and other receivers can use.
    pub fn payload(&self) -> serde_json::Value {
        serde_json::json!({
            "text": self.text(),
            "event": self.event.name(),
            "job": self.job,
            "summary": self.summary,
            "details": self.details,
            "host": backup_core::util::hostname(),
            "time": self.time,
        })
    }
}

/// What a notification carries: a notice, or the scheduled report.
#[derive(Debug, Clone)]
enum Message {
    Notice(Notice),
    Report {
        /// The e-mail body in the configured format.
        body: String,
        /// Its format.
        format: ReportFormat,
        /// The report as Markdown (the webhook's text).
        markdown: String,
        /// The report's data (the webhook's `report`).
        json: serde_json::Value,
    },
}

impl Message {
    fn event(&self) -> Event {
        match self {
            Message::Notice(n) => n.event,
            Message::Report { .. } => Event::Report,
        }
    }

    fn job(&self) -> &str {
        match self {
            Message::Notice(n) => &n.job,
            Message::Report { .. } => "",
        }
    }
}

#[allow(clippy::large_enum_variant)] // A handful of channels, built once.
enum Transport {
    Webhook {
        url: SecretString,
    },
    Smtp {
        transport: AsyncSmtpTransport<Tokio1Executor>,
        from: Mailbox,
        to: Vec<Mailbox>,
    },
}

struct Channel {
    name: String,
    events: Vec<Event>,
    transport: Transport,
}

/// The configured channels.
pub struct Notifier {
    channels: Vec<Arc<Channel>>,
    client: reqwest::Client,
    retry: RetryPolicy,
    status: Arc<Status>,
}

impl std::fmt::Debug for Notifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifier")
            .field(
                "channels",
                &self.channels.iter().map(|c| &c.name).collect::<Vec<_>>(),
            )
            .finish_non_exhaustive()
    }
}

impl Notifier {
    /// Builds the channels of a configuration, reading their secrets;
    /// deliveries are counted in `status`.
    ///
    /// # Errors
    ///
    /// Unreadable secrets, malformed addresses.
    pub fn from_config(config: &Config, status: Arc<Status>) -> Result<Self> {
        let mut channels = Vec::new();
        for (name, n) in &config.notifications {
            let (events, transport) = match n {
                NotificationConfig::Webhook {
                    url,
                    url_from,
                    events,
                } => {
                    let url = match (url, url_from) {
                        (Some(u), _) => SecretString::from(u.clone()),
                        (None, Some(r)) => r.resolve(&format!("notifications.{name}.url_from"))?,
                        (None, None) => anyhow::bail!("notifications.{name}: no url"),
                    };
                    (events.clone(), Transport::Webhook { url })
                }
                NotificationConfig::Smtp {
                    host,
                    port,
                    security,
                    username,
                    password,
                    from,
                    to,
                    events,
                } => {
                    let key = |k: &str| format!("notifications.{name}.{k}");
                    let mut b = match security {
                        SmtpSecurity::Starttls => {
                            AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(host)
                                .with_context(|| key("host"))?
                                .port(port.unwrap_or(587))
                        }
                        SmtpSecurity::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(host)
                            .with_context(|| key("host"))?
                            .port(port.unwrap_or(465)),
                        SmtpSecurity::None => {
                            AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(host)
                                .port(port.unwrap_or(25))
                        }
                    };
                    if let Some(user) = username {
                        let pw = match password {
                            Some(p) => p.resolve(&key("password"))?,
                            None => {
                                anyhow::bail!("{}: a username needs a password", key("password"))
                            }
                        };
                        b = b.credentials(Credentials::new(
                            user.clone(),
                            pw.expose_secret().to_owned(),
                        ));
                    }
                    let transport = b.timeout(Some(Duration::from_secs(30))).build();
                    let from: Mailbox = from
                        .parse()
                        .with_context(|| format!("{}: `{from}` is not an address", key("from")))?;
                    let to = to
                        .iter()
                        .map(|t| {
                            t.parse::<Mailbox>()
                                .with_context(|| format!("{}: `{t}` is not an address", key("to")))
                        })
                        .collect::<Result<Vec<_>>>()?;
                    (
                        events.clone(),
                        Transport::Smtp {
                            transport,
                            from,
                            to,
                        },
                    )
                }
            };
            channels.push(Arc::new(Channel {
                name: name.clone(),
                events: events.unwrap_or_else(|| Event::ALL.to_vec()),
                transport,
            }));
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .context("building the HTTP client")?;
        Ok(Notifier {
            channels,
            client,
            retry: Self::default_retry(),
            status,
        })
    }

    /// Eight attempts, 2 s apart doubling to 128 s: a channel that stays
    /// down is given up on after about 4 minutes.
    fn default_retry() -> RetryPolicy {
        RetryPolicy::with_max_attempts(8)
            .with_backoff(
                Duration::from_secs(2),
                Duration::from_secs(300),
                Duration::from_secs(3600),
            )
            .with_jitter(false)
    }

    /// Sends a notice to the job's channels that want its event, in the
    /// background.
    pub fn send(self: &Arc<Self>, job: &Job, notice: &Notice) {
        if notice.event == Event::Success && !job.notify_success {
            return;
        }
        self.send_to(Some(&job.notify), notice);
    }

    /// Sends a notice that concerns no single job (a repository's space)
    /// to `channels` (every channel when `None`) that want its event.
    pub fn send_to(self: &Arc<Self>, channels: Option<&[String]>, notice: &Notice) {
        self.dispatch(channels, &Message::Notice(notice.clone()));
    }

    /// Sends the scheduled report to `channels` (every channel when
    /// `None`) that take the `report` event: e-mail gets `body` in
    /// `format`, webhooks the Markdown as `text` and the data as `report`.
    pub fn send_report(
        self: &Arc<Self>,
        channels: Option<&[String]>,
        format: ReportFormat,
        body: String,
        markdown: String,
        json: serde_json::Value,
    ) {
        self.dispatch(
            channels,
            &Message::Report {
                body,
                format,
                markdown,
                json,
            },
        );
    }

    fn dispatch(self: &Arc<Self>, channels: Option<&[String]>, message: &Message) {
        for ch in &self.channels {
            if channels.is_some_and(|c| !c.contains(&ch.name))
                || !ch.events.contains(&message.event())
            {
                continue;
            }
            let this = Arc::clone(self);
            let ch = Arc::clone(ch);
            let message = message.clone();
            tokio::spawn(async move { this.deliver_with_retries(&ch, &message).await });
        }
    }

    async fn deliver_with_retries(&self, ch: &Channel, notice: &Message) {
        let outcome = retry(
            &self.retry,
            None,
            |_| self.deliver(ch, notice),
            // Any failure of a webhook or mail server may pass.
            |_: &anyhow::Error| true,
            |_, e, delay| {
                tracing::warn!(channel = %ch.name, event = notice.event().name(), error = %format!("{e:#}"), retry_in = ?delay, "Could not send a notification; will retry.");
            },
        )
        .await;
        let counters = &self.status.notifications;
        match outcome {
            Ok(_) => {
                tracing::info!(channel = %ch.name, event = notice.event().name(), job = %notice.job(), "Notification sent.");
                counters.delivered.fetch_add(1, Ordering::Relaxed);
            }
            Err(g) => {
                tracing::error!(channel = %ch.name, event = notice.event().name(), error = %format!("{:#}", g.error), attempts = g.attempts, "Could not send a notification; giving up.");
                counters.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    async fn deliver(&self, ch: &Channel, message: &Message) -> Result<()> {
        let payload = match message {
            Message::Notice(n) => n.payload(),
            Message::Report { markdown, json, .. } => serde_json::json!({
                "text": markdown,
                "event": Event::Report.name(),
                "report": json,
                "host": backup_core::util::hostname(),
                "time": Utc::now(),
            }),
        };
        match &ch.transport {
            Transport::Webhook { url } => {
                let resp = self
                    .client
                    .post(url.expose_secret())
                    .header("content-type", "application/json")
                    .body(payload.to_string())
                    .send()
                    .await
                    // reqwest errors include the URL, which may hold a token.
                    .map_err(|e| anyhow::anyhow!("webhook request failed: {}", e.without_url()))?;
                let status = resp.status();
                anyhow::ensure!(status.is_success(), "the webhook answered {status}");
                Ok(())
            }
            Transport::Smtp {
                transport,
                from,
                to,
            } => {
                let (subject, content_type, body) = match message {
                    Message::Notice(notice) => (
                        format!("[backupd] {}", notice.summary),
                        ContentType::TEXT_PLAIN,
                        format!(
                            "{}\n\nevent: {}\njob: {}\nhost: {}\ntime: {}\n\n{}\n",
                            notice.summary,
                            notice.event.name(),
                            notice.job,
                            backup_core::util::hostname(),
                            notice.time.to_rfc3339(),
                            notice.details
                        ),
                    ),
                    Message::Report { body, format, .. } => (
                        format!(
                            "[backupd] Backup report from {}",
                            backup_core::util::hostname()
                        ),
                        if *format == ReportFormat::Html {
                            ContentType::TEXT_HTML
                        } else {
                            ContentType::TEXT_PLAIN
                        },
                        body.clone(),
                    ),
                };
                let mut b = Email::builder()
                    .from(from.clone())
                    .subject(subject)
                    .header(content_type);
                for t in to {
                    b = b.to(t.clone());
                }
                let msg = b.body(body).context("building the e-mail")?;
                transport.send(msg).await.context("sending the e-mail")?;
                Ok(())
            }
        }
    }
}
