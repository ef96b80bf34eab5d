//! `backup remote`: restore requests and their approvals through
//! `backupd`'s HTTP API (`/api/restores`), as the identity whose token
//! `BACKUP_TOKEN` holds, at `BACKUP_DAEMON_URL`. The daemon decides who
//! may do what; this only asks and shows the answer.

use std::time::Duration;

use anyhow::{anyhow, Result};
use serde_json::Value;

use super::parse_time;
use crate::cli::{RemoteCommand, RemoteRestoreArgs};
use crate::context::{usage, Ctx};

/// Where the daemon is and the token to show it.
struct Daemon {
    url: String,
    token: String,
    client: reqwest::Client,
}

impl Daemon {
    fn from_env() -> Result<Self> {
        let url = std::env::var("BACKUP_DAEMON_URL").unwrap_or_default();
        if url.is_empty() {
            return usage("BACKUP_DAEMON_URL is not set: set it to the daemon's address, e.g. http://127.0.0.1:9187");
        }
        let token = std::env::var("BACKUP_TOKEN").unwrap_or_default();
        if token.is_empty() {
            return usage("BACKUP_TOKEN is not set: set it to your token of [[daemon.users]] (`backup token new` makes one)");
        }
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(600))
            .build()
            .map_err(|e| anyhow!("cannot make an HTTP client: {e}"))?;
        Ok(Daemon {
            url: url.trim_end_matches('/').to_owned(),
            token,
            client,
        })
    }

    /// Sends a request; the JSON answer, or an error naming what the
    /// daemon said.
    async fn call(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value> {
        let mut req = self
            .client
            .request(method, format!("{}{path}", self.url))
            .bearer_auth(&self.token);
        if let Some(b) = body {
            req = req
                .header(reqwest::header::CONTENT_TYPE, "application/json")
                .body(b.to_string());
        }
        let resp = req
            .send()
            .await
            .map_err(|e| anyhow!("cannot reach backupd at {}: {e}", self.url))?;
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| anyhow!("backupd's answer cannot be read: {e}"))?;
        let json: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        if status.is_success() {
            return Ok(json);
        }
        let said = json["error"]
            .as_str()
            .map_or_else(|| text.trim().to_owned(), str::to_owned);
        let hint = match status.as_u16() {
            401 => " (check BACKUP_TOKEN)",
            _ => "",
        };
        Err(anyhow!("backupd refused ({status}): {said}{hint}"))
    }
}

pub(crate) async fn run(ctx: &Ctx, cmd: RemoteCommand) -> Result<u8> {
    let daemon = Daemon::from_env()?;
    match cmd {
        RemoteCommand::Restore(a) => restore(ctx, &daemon, a).await,
        RemoteCommand::Approvals { all } => {
            let list = daemon
                .call(reqwest::Method::GET, "/api/restores", None)
                .await?;
            let shown: Vec<&Value> = list
                .as_array()
                .map(|l| {
                    l.iter()
                        .filter(|r| all || r["state"] == "pending")
                        .collect()
                })
                .unwrap_or_default();
            if ctx.global.json {
                ctx.print_json(&shown)?;
            } else if shown.is_empty() {
                ctx.say(if all {
                    "no restore requests"
                } else {
                    "no pending restore requests"
                })?;
            } else {
                for r in shown {
                    show(ctx, r)?;
                }
            }
            Ok(0)
        }
        RemoteCommand::Approve { id } => decide(ctx, &daemon, &id, "approve").await,
        RemoteCommand::Deny { id } => decide(ctx, &daemon, &id, "deny").await,
    }
}

async fn restore(ctx: &Ctx, daemon: &Daemon, a: RemoteRestoreArgs) -> Result<u8> {
    let at = a.at.as_deref().map(parse_time).transpose()?;
    let ask = serde_json::json!({
        "job": a.job,
        "snapshot": a.snapshot,
        "at": at,
        "to": a.to,
        "include": a.includes,
        "exclude": a.excludes,
        "drop": a.drop,
    });
    let mut r = daemon
        .call(reqwest::Method::POST, "/api/restores", Some(ask))
        .await?;
    if a.wait {
        let id = r["id"].as_str().unwrap_or_default().to_owned();
        let path = format!("/api/restores/{id}");
        while !is_final(&r) {
            tokio::time::sleep(Duration::from_millis(500)).await;
            r = daemon.call(reqwest::Method::GET, &path, None).await?;
        }
    }
    if ctx.global.json {
        ctx.print_json(&r)?;
    } else {
        show(ctx, &r)?;
    }
    // Exit 1 when waited for and it did not succeed.
    Ok(u8::from(a.wait && r["state"] != "succeeded"))
}

fn is_final(r: &Value) -> bool {
    !matches!(
        r["state"].as_str(),
        Some("pending" | "approved" | "running")
    )
}

async fn decide(ctx: &Ctx, daemon: &Daemon, id: &str, verb: &str) -> Result<u8> {
    let r = daemon
        .call(
            reqwest::Method::POST,
            &format!("/api/restores/{id}/{verb}"),
            None,
        )
        .await?;
    if ctx.global.json {
        ctx.print_json(&r)?;
    } else {
        show(ctx, &r)?;
    }
    Ok(0)
}

/// A request for people: id, state, who, the plan, and how it ended.
fn show(ctx: &Ctx, r: &Value) -> Result<()> {
    let s = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    let approvers: Vec<String> = r["approvals"]
        .as_array()
        .map(|a| a.iter().map(|x| s(&x["by"])).collect())
        .unwrap_or_default();
    ctx.say(format!(
        "{}  {}  job {}  requested by {} at {}",
        s(&r["id"]),
        s(&r["state"]),
        s(&r["ask"]["job"]),
        s(&r["requested"]["by"]),
        s(&r["requested"]["at"]),
    ))?;
    ctx.say(format!(
        "  approvals: {} of {} people (approved by: {}); expires {}",
        1 + approvers.len(),
        r["approvals_needed"],
        if approvers.is_empty() {
            "nobody yet".to_owned()
        } else {
            approvers.join(", ")
        },
        s(&r["expires_at"]),
    ))?;
    ctx.say(format!("  plan: {}", s(&r["plan"]["summary"])))?;
    for l in r["plan"]["lines"].as_array().into_iter().flatten() {
        ctx.say(format!("    {}", s(l)))?;
    }
    if let Some(e) = r["error"].as_str() {
        ctx.say(format!("  error: {e}"))?;
    }
    if let Some(lines) = r["report"]["lines"].as_array() {
        ctx.say("  report:")?;
        for l in lines {
            ctx.say(format!("    {}", s(l)))?;
        }
    }
    Ok(())
}
