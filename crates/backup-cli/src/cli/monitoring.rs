//! Arguments: drills, reports, health, schedules, the audit trail and generated files.

use std::path::PathBuf;

use clap::{Args, Subcommand};

#[derive(Debug, Args)]
pub(crate) struct DrillArgs {
    /// The job of --config to drill (its [jobs.NAME.drill] settings).
    #[arg(value_name = "JOB")]
    pub(crate) job: Option<String>,
    /// List the recorded drills (of JOB, or all) instead of running one.
    #[arg(long)]
    pub(crate) history: bool,
    /// Without a job: drill the latest snapshot of this source (URL, path
    /// or kind), with --repo.
    #[arg(long, value_name = "SOURCE", conflicts_with = "job")]
    pub(crate) source: Option<String>,
    /// The scratch location: a directory (files, PostgreSQL physical), a
    /// postgres:// server, a mongodb:// deployment, a redis:// server or
    /// database, or `redis-server` for a throwaway server. Overrides the
    /// job's.
    #[arg(long, value_name = "SCRATCH")]
    pub(crate) target: Option<String>,
    /// The longest acceptable RTO (e.g. 15m); overrides the job's max_rto.
    #[arg(long, value_name = "DURATION")]
    pub(crate) max_rto: Option<String>,
    /// Leave the scratch copy in place for inspection.
    #[arg(long)]
    pub(crate) keep: bool,
    /// What to restore: `latest` (the newest snapshot), `random` (a
    /// random time inside the restorable window of a physical PostgreSQL
    /// job or of a MongoDB job with a captured oplog, the newest base
    /// before it replayed to it) or `canary` (a row written to the
    /// source's backup_drill_canary table, or a document to
    /// backup_drill.canary, first, required in the copy replayed to just
    /// after it; the RPO is the time until it was captured). Overrides
    /// the job's.
    #[arg(long, value_name = "POINT", value_parser = ["latest", "random", "canary"])]
    pub(crate) point: Option<String>,
    /// Skip the built-in checks (counts against the manifest, the file
    /// comparison).
    #[arg(long)]
    pub(crate) no_builtin_checks: bool,
    /// Also run this command with the scratch copy's URL in
    /// BACKUP_DRILL_URL (and BACKUP_DRILL_PATH for directories); it must
    /// exit 0. Run through `sh -c`; repeatable.
    #[arg(long = "check-command", value_name = "COMMAND")]
    pub(crate) check_commands: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ReportArgs {
    /// The period covered (e.g. 30d, 12w).
    #[arg(long, value_name = "DURATION", default_value = "30d")]
    pub(crate) since: String,
    /// html (charts as inline SVG), markdown or json (--json too).
    #[arg(long, value_name = "FORMAT", value_parser = ["html", "markdown", "json"])]
    pub(crate) format: Option<String>,
    /// Only this job.
    #[arg(long, value_name = "NAME")]
    pub(crate) job: Option<String>,
    /// Write the report to FILE instead of standard output.
    #[arg(long, short = 'O', value_name = "FILE")]
    pub(crate) output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct HealthArgs {
    /// Check only this job.
    #[arg(long, value_name = "NAME")]
    pub(crate) job: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ScheduleArgs {
    /// How many upcoming runs to show per job.
    #[arg(long, short = 'n', default_value_t = 3)]
    pub(crate) count: usize,
}

#[derive(Debug, Args)]
pub(crate) struct AuditArgs {
    /// Show only the last N records (after --user and --since).
    #[arg(long, value_name = "N")]
    pub(crate) last: Option<usize>,
    /// Show only records of NAME: the OS user of the CLI, or the daemon
    /// identity that asked (`identity` or `requested_by` in the details).
    #[arg(long, value_name = "NAME")]
    pub(crate) user: Option<String>,
    /// Show only records of the last DURATION (`7d`, `12h`, `30m`).
    #[arg(long, value_name = "DURATION", value_parser = parse_since)]
    pub(crate) since: Option<std::time::Duration>,
}

fn parse_since(s: &str) -> Result<std::time::Duration, String> {
    humantime::parse_duration(s)
        .map_err(|e| format!("`{s}` is not a duration such as 7d, 12h or 30m: {e}"))
}

#[derive(Debug, Subcommand)]
pub(crate) enum RemoteCommand {
    /// Ask the daemon to restore a job's snapshot (an operator's action).
    /// The daemon plans it (the --dry-run output) and runs it at once, or,
    /// for a protected job, once enough admins approved.
    Restore(RemoteRestoreArgs),
    /// List the daemon's restore requests, pending ones with their plan
    /// (--all: also the ended ones).
    Approvals {
        /// Also requests that ran, failed, were denied or expired.
        #[arg(long)]
        all: bool,
    },
    /// Approve a pending restore request (an admin's action; never your
    /// own request).
    Approve {
        /// The request id (`r-...`).
        id: String,
    },
    /// Deny a pending restore request (an admin's action).
    Deny {
        /// The request id (`r-...`).
        id: String,
    },
}

#[derive(Debug, Args)]
pub(crate) struct RemoteRestoreArgs {
    /// The snapshot: an id, a unique prefix or `latest`.
    #[arg(default_value = "latest")]
    pub(crate) snapshot: String,
    /// The daemon's job whose snapshots are restored.
    #[arg(long, value_name = "NAME")]
    pub(crate) job: String,
    /// The target, without a password (the daemon uses its own
    /// credentials); default: the job's own source.
    #[arg(long, value_name = "TARGET")]
    pub(crate) to: Option<String>,
    /// Restore to this point in time (RFC 3339).
    #[arg(long, value_name = "TIME")]
    pub(crate) at: Option<String>,
    /// Only these tables, collections or paths.
    #[arg(long = "include", value_name = "P")]
    pub(crate) includes: Vec<String>,
    /// Not these.
    #[arg(long = "exclude", value_name = "P")]
    pub(crate) excludes: Vec<String>,
    /// Replace what the target holds (a safety backup is taken first).
    #[arg(long)]
    pub(crate) drop: bool,
    /// Wait until the restore ends and print its report (exit 1 when it
    /// failed, was denied or expired).
    #[arg(long)]
    pub(crate) wait: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TokenCommand {
    /// Read a token from standard input (one line) or a prompt and print
    /// its Argon2 hash, for `token_hash` of `[[daemon.users]]`.
    Hash,
    /// Make a new random token; print it (once: it is stored nowhere)
    /// and its hash.
    New,
}

#[derive(Debug, Subcommand)]
pub(crate) enum GenerateCommand {
    /// Print the completion script for SHELL on standard output, e.g.
    /// `backup generate completions bash > /etc/bash_completion.d/backup`.
    Completions {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
    /// Write man pages into DIR: backup.1 and one page per command
    /// (backup-create.1, backup-wal-receive.1, ...).
    Man {
        /// The directory (created when missing).
        dir: PathBuf,
    },
}
