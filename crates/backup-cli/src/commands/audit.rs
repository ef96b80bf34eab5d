//! `backup audit`: the audit trail and its hash chain.

use anyhow::Result;

use crate::cli::AuditArgs;
use crate::context::Ctx;

pub(crate) async fn run(ctx: &Ctx, a: AuditArgs) -> Result<u8> {
    let repo = ctx.open().await?;
    let check = ctx.audit_log().verify(&repo).await?;
    let (report, problems) = (&check.chain, &check.problems);
    let skip = a.last.map_or(0, |n| report.records.len().saturating_sub(n));
    let shown = &report.records[skip..];
    if ctx.global.json {
        ctx.print_json(&serde_json::json!({
            "ok": problems.is_empty(),
            "records": shown,
            "problems": problems,
        }))?;
    } else {
        for r in shown {
            let b = &r.body;
            ctx.say(format!(
                "{:>6}  {}  {:<10} {:<8} {}@{}  {}",
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
