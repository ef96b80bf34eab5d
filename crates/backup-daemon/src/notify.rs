//! Notifications: Slack-compatible webhooks and SMTP e-mail.
//!
//! Delivery runs in background tasks: a channel that cannot be reached is
//! retried with backoff and finally given up with an error in the log; it
//! never blocks or stops the daemon.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use chrono::{DateTime, Utc};
use lettre::message::header::ContentType;
use lettre::message::Mailbox;
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};

use crate::config::{Config, Event, Job, NotificationConfig, SmtpSecurity};
use crate::secret::Secret;

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
            Event::Failure | Event::VerifyFailed => ":rotating_light:",
            Event::Missed => ":warning:",
            Event::Recovery | Event::Success => ":white_check_mark:",
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

#[allow(clippy::large_enum_variant)] // A handful of channels, built once.
enum Transport {
    Webhook {
        url: Secret,
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
    retry_delays: Vec<Duration>,
    failed: AtomicU64,
    delivered: AtomicU64,
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
    /// Builds the channels of a configuration, reading their secrets.
    ///
    /// # Errors
    ///
    /// Unreadable secrets, malformed addresses.
    pub fn from_config(config: &Config) -> Result<Self> {
        let mut channels = Vec::new();
        for (name, n) in &config.notifications {
            let (events, transport) = match n {
                NotificationConfig::Webhook {
                    url,
                    url_from,
                    events,
                } => {
                    let url = match (url, url_from) {
                        (Some(u), _) => Secret::new(u.clone()),
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
                        b = b.credentials(Credentials::new(user.clone(), pw.expose().to_owned()));
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
            retry_delays: [2, 5, 15, 60, 300]
                .into_iter()
                .map(Duration::from_secs)
                .collect(),
            failed: AtomicU64::new(0),
            delivered: AtomicU64::new(0),
        })
    }

    /// Overrides the waits between delivery attempts (tests).
    #[must_use]
    pub fn with_retry_delays(mut self, delays: Vec<Duration>) -> Self {
        self.retry_delays = delays;
        self
    }

    /// Notifications given up on after every retry.
    pub fn failed(&self) -> u64 {
        self.failed.load(Ordering::Relaxed)
    }

    /// Notifications delivered.
    pub fn delivered(&self) -> u64 {
        self.delivered.load(Ordering::Relaxed)
    }

    /// Sends a notice to the job's channels that want its event, in the
    /// background.
    pub fn send(self: &Arc<Self>, job: &Job, notice: &Notice) {
        if notice.event == Event::Success && !job.notify_success {
            return;
        }
        for ch in &self.channels {
            if !job.notify.contains(&ch.name) || !ch.events.contains(&notice.event) {
                continue;
            }
            let this = Arc::clone(self);
            let ch = Arc::clone(ch);
            let notice = notice.clone();
            tokio::spawn(async move { this.deliver_with_retries(&ch, &notice).await });
        }
    }

    async fn deliver_with_retries(&self, ch: &Channel, notice: &Notice) {
        let mut delays = self.retry_delays.iter();
        loop {
            match self.deliver(ch, notice).await {
                Ok(()) => {
                    tracing::info!(channel = %ch.name, event = notice.event.name(), job = %notice.job, "Notification sent.");
                    self.delivered.fetch_add(1, Ordering::Relaxed);
                    return;
                }
                Err(e) => {
                    let Some(d) = delays.next() else {
                        tracing::error!(channel = %ch.name, event = notice.event.name(), error = %format!("{e:#}"), "Could not send a notification; giving up.");
                        self.failed.fetch_add(1, Ordering::Relaxed);
                        return;
                    };
                    tracing::warn!(channel = %ch.name, event = notice.event.name(), error = %format!("{e:#}"), retry_in = ?d, "Could not send a notification; will retry.");
                    tokio::time::sleep(*d).await;
                }
            }
        }
    }

    async fn deliver(&self, ch: &Channel, notice: &Notice) -> Result<()> {
        match &ch.transport {
            Transport::Webhook { url } => {
                let resp = self
                    .client
                    .post(url.expose())
                    .header("content-type", "application/json")
                    .body(notice.payload().to_string())
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
                let mut b = Message::builder()
                    .from(from.clone())
                    .subject(format!("[backupd] {}", notice.summary))
                    .header(ContentType::TEXT_PLAIN);
                for t in to {
                    b = b.to(t.clone());
                }
                let body = format!(
                    "{}\n\nevent: {}\njob: {}\nhost: {}\ntime: {}\n\n{}\n",
                    notice.summary,
                    notice.event.name(),
                    notice.job,
                    backup_core::util::hostname(),
                    notice.time.to_rfc3339(),
                    notice.details
                );
                let msg = b.body(body).context("building the e-mail")?;
                transport.send(msg).await.context("sending the e-mail")?;
                Ok(())
            }
        }
    }
}
