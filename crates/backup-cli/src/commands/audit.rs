//! `backup audit`: the audit trail and its hash chain.

use anyhow::Result;

use crate::cli::AuditArgs;
use crate::context::Ctx;

/// Whether `name` did what `body` records: the OS user of the CLI, or the
/// daemon identity in the details (`identity` of a refusal,
/// `requested_by` of an API request).
fn is_of(body: &backup_core::audit::AuditBody, name: &str) -> bool {
    body.user == name
        || ["identity", "requested_by"]
            .iter()
            .any(|k| body.details.get(k).and_then(serde_json::Value::as_str) == Some(name))
}

pub(crate) async fn run(ctx: &Ctx, a: AuditArgs) -> Result<u8> {
    let repo = ctx.open().await?;
    let check = ctx.audit_log().verify(&repo).await?;
    let (report, problems) = (&check.chain, &check.problems);
    let since = match a.since {
        Some(d) => Some(
            chrono::Utc::now()
                - chrono::Duration::from_std(d)
                    .map_err(|_| backup_ops::Error::usage("--since is too long"))?,
        ),
        None => None,
    };
    let selected: Vec<_> = report
        .records
        .iter()
        .filter(|r| since.is_none_or(|t| r.body.timestamp >= t))
        .filter(|r| a.user.as_deref().is_none_or(|u| is_of(&r.body, u)))
        .collect();
    let skip = a.last.map_or(0, |n| selected.len().saturating_sub(n));
    let shown = &selected[skip..];
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({
            "ok": problems.is_empty(),
            "records": shown,
            "problems": problems,
        }))?;
    } else {
        for r in shown {
            let b = &r.body;
            let key = b
                .key
                .as_deref()
                .map(|k| format!(" key {}", k.get(..8).unwrap_or(k)))
                .unwrap_or_default();
            ctx.say(format!(
                "{:>6}  {}  {:<10} {:<8} {}@{}{key}  {}",
                b.seq,
                b.timestamp.format("%Y-%m-%d %H:%M:%S"),
                b.operation,
                b.status,
                b.user,
                b.host,
                b.details
            ))?;
        }
    }
    if problems.is_empty() {
        ctx.say(format!(
            "audit chain intact: {} records",
            report.records.len()
        ))?;
        return Ok(0);
    }
    for p in problems {
        note!("tampering: {p}");
    }
    note!(
        "error: the audit trail was altered: {} problems found",
        problems.len()
    );
    Ok(backup_ops::exit::DAMAGE)
}
