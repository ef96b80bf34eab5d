//! One module per command: each turns arguments into core options, calls
//! the core, and renders the result.

mod audit;
mod browse;
mod copy;
mod create;
mod drill;
mod dump;
mod export;
mod forget;
mod generate;
mod init;
mod jobs;
mod key;
mod list;
mod mount;
mod pitr;
mod remote;
mod repair;
mod report;
mod restore;
mod rewrite;
mod stats;
mod tier;
mod token;
mod verify;
pub(crate) mod wal;

use anyhow::Result;
use chrono::{DateTime, NaiveDate, Utc};

use crate::cli::{Cli, Command, FilterArgs, KeyCommand};
use crate::context::{usage, Ctx};

/// Runs the parsed command; returns the exit code. Operations that change
/// or read back data (create, restore, verify, forget, tag, prune, copy,
/// key changes) leave an audit record, whether they succeed or fail.
pub(crate) async fn run(cli: Cli) -> Result<u8> {
    let ctx = Ctx::new(cli.global)?;
    let operation = audited_operation(&cli.command);
    let result = Box::pin(dispatch(&ctx, cli.command)).await;
    if let Some(operation) = operation {
        let mut details = ctx.audit_details.take();
        let success = match &result {
            Ok(code) => {
                details.insert("exit_code".to_owned(), (*code).into());
                *code == 0
            }
            Err(e) => {
                details.insert("exit_code".to_owned(), crate::errors::exit_code(e).into());
                details.insert("error".to_owned(), crate::errors::report(e).into());
                false
            }
        };
        let repo = ctx.opened();
        let log = ctx.audit_log();
        for w in log
            .record(
                repo.as_ref(),
                operation,
                success,
                serde_json::Value::Object(details),
            )
            .await
        {
            note!("warning: {w}");
        }
    }
    result
}

fn audited_operation(c: &Command) -> Option<&'static str> {
    Some(match c {
        Command::Create(_) => "create",
        Command::Restore(_) => "restore",
        Command::Verify(_) => "verify",
        Command::Forget(_) => "forget",
        Command::Tag(_) => "tag",
        Command::Prune(_) => "prune",
        Command::Tier(a) if !a.dry_run => "tier",
        Command::Rewrite(_) => "rewrite",
        Command::Copy(_) => "copy",
        Command::Repair(_) => "repair",
        Command::Unlock(_) => "unlock",
        Command::Key(KeyCommand::Add(_)) => "key-add",
        Command::Key(KeyCommand::Remove { .. }) => "key-remove",
        Command::Key(KeyCommand::Passwd(_)) => "key-passwd",
        Command::Key(KeyCommand::Export { .. }) => "key-export",
        Command::Drill(a) if !a.history => "drill",
        _ => return None,
    })
}

async fn dispatch(ctx: &Ctx, command: Command) -> Result<u8> {
    match command {
        Command::Init(a) => init::run(ctx, a).await,
        Command::Create(a) => Box::pin(create::run(ctx, a)).await,
        Command::List(a) => list::list(ctx, a).await,
        Command::Show(a) => list::show(ctx, a).await,
        Command::Ls(a) => browse::ls(ctx, a).await,
        Command::Dump(a) => dump::run(ctx, a).await,
        Command::Diff(a) => browse::diff(ctx, a).await,
        Command::Find(a) => browse::find(ctx, a).await,
        Command::Tag(c) => browse::tag(ctx, c).await,
        Command::Mount(a) => mount::run(ctx, a).await,
        Command::Restore(a) => Box::pin(restore::run(ctx, a)).await,
        Command::Export(a) => export::run(ctx, a).await,
        Command::Verify(a) => verify::run(ctx, a).await,
        Command::Key(k) => key::run(ctx, k).await,
        Command::Stats(a) => stats::run(ctx, a).await,
        Command::Tier(a) => tier::run(ctx, a).await,
        Command::Unlock(a) => stats::unlock(ctx, a).await,
        Command::Forget(a) => forget::forget(ctx, a).await,
        Command::Prune(a) => forget::prune_cmd(ctx, a).await,
        Command::Rewrite(a) => Box::pin(rewrite::run(ctx, a)).await,
        Command::Repair(c) => repair::run(ctx, c).await,
        Command::Copy(a) => copy::run(ctx, a).await,
        Command::Health(a) => jobs::health(ctx, a).await,
        Command::Schedule(a) => jobs::schedule(ctx, &a),
        Command::Audit(a) => audit::run(ctx, a).await,
        Command::Wal(c) => wal::run(ctx, c).await,
        Command::Drill(a) => Box::pin(drill::run(ctx, a)).await,
        Command::Report(a) => report::run(ctx, a).await,
        Command::Oplog(c) => pitr::oplog(ctx, c).await,
        Command::Redis(c) => pitr::redis(ctx, c).await,
        Command::Pitr(a) => pitr::pitr(ctx, a).await,
        Command::Generate(g) => generate::generate(&g),
        Command::Token(t) => token::run(ctx, &t),
        Command::Remote(r) => remote::run(ctx, r).await,
    }
}

/// Parses RFC 3339, PostgreSQL's own form (`2026-11-25 18:00:29.67208+00`,
/// as `now()` and the server's log print it) or a plain date (midnight
/// UTC).
pub(crate) fn parse_time(s: &str) -> Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.with_timezone(&Utc));
    }
    for format in ["%Y-%m-%d %H:%M:%S%.f%#z", "%Y-%m-%d %H:%M:%S%#z"] {
        if let Ok(t) = DateTime::parse_from_str(s.trim(), format) {
            return Ok(t.with_timezone(&Utc));
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        if let Some(t) = d.and_hms_opt(0, 0, 0) {
            return Ok(t.and_utc());
        }
    }
    usage(format!(
        "`{s}` is not a time: use RFC 3339 (2024-05-01T12:00:00Z), PostgreSQL's form (2024-05-01 12:00:00.123+00) or YYYY-MM-DD"
    ))
}

/// Builds a snapshot filter from arguments.
pub(crate) fn snapshot_filter(f: &FilterArgs) -> Result<backup_core::snapshot::SnapshotFilter> {
    Ok(backup_core::snapshot::SnapshotFilter {
        source: f.source.as_deref().map(normalize_source),
        source_exact: false,
        tags: f.tags.clone(),
        before: f.before.as_deref().map(parse_time).transpose()?,
        after: f.after.as_deref().map(parse_time).transpose()?,
        job: None,
        host: f.host.clone(),
    })
}

/// Makes a `--source` comparable with recorded sources: local paths are
/// made absolute (as the files source records them).
pub(crate) fn normalize_source(s: &str) -> String {
    if s.contains("://") && !s.starts_with("file://") {
        return s.to_owned();
    }
    let path = s.strip_prefix("file://").unwrap_or(s);
    std::fs::canonicalize(path).map_or_else(|_| s.to_owned(), |p| p.to_string_lossy().into_owned())
}

/// Short human form of a byte count.
pub(crate) fn bytes(n: u64) -> String {
    backup_core::util::human_bytes(n)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn times_in_rfc_3339_postgresql_form_or_as_dates() {
        let want = DateTime::parse_from_rfc3339("2026-11-25T18:00:29.67208Z")
            .unwrap()
            .with_timezone(&Utc);
        assert_eq!(parse_time("2026-11-25T18:00:29.67208Z").unwrap(), want);
        assert_eq!(parse_time("2026-11-25 18:00:29.67208+00").unwrap(), want);
        assert_eq!(parse_time("2026-11-25 19:00:29.67208+01").unwrap(), want);
        assert_eq!(
            parse_time("2026-11-25 18:00:29+00:00").unwrap(),
            want - chrono::Duration::microseconds(672_080)
        );
        assert_eq!(
            parse_time("2026-11-25").unwrap(),
            DateTime::parse_from_rfc3339("2026-11-25T00:00:00Z").unwrap()
        );
        assert!(parse_time("yesterday").is_err());
    }
}
