//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

mod capture;
mod maintenance;
mod monitoring;
mod restore;
mod snapshots;

pub(crate) use capture::{
    FollowArgs, OplogCommand, PitrArgs, RedisCommand, RedisFollowArgs, WalCommand,
};
pub(crate) use maintenance::{
    CopyArgs, ForgetArgs, KeyCommand, PruneArgs, RepairCommand, RewriteArgs, StatsArgs, TierArgs,
    UnlockArgs,
};
pub(crate) use monitoring::{
    AuditArgs, DrillArgs, GenerateCommand, HealthArgs, RemoteCommand, RemoteRestoreArgs,
    ReportArgs, ScheduleArgs, TokenCommand,
};
pub(crate) use restore::{ColdArgs, ExportArgs, RestoreArgs, VerifyArgs};
pub(crate) use snapshots::{
    CreateArgs, DiffArgs, DumpArgs, FilterArgs, FindArgs, InitArgs, ListArgs, LsArgs, MountArgs,
    ShowArgs, TagCommand, TagSelect,
};

/// Encrypted, deduplicated, compressed backups of files and databases to
/// local disk, S3 or Google Cloud Storage.
#[derive(Debug, Parser)]
#[command(name = "backup", version, about, long_about = None, propagate_version = true)]
pub(crate) struct Cli {
    #[command(flatten)]
    pub(crate) global: GlobalArgs,
    #[command(subcommand)]
    pub(crate) command: Command,
}

/// Options every command accepts.
#[derive(Debug, Args, Clone)]
#[command(next_help_heading = "Global options")]
pub(crate) struct GlobalArgs {
    /// Repository: a directory, file:///path, s3://bucket/prefix or gs://bucket/prefix.
    #[arg(
        short = 'r',
        long = "repo",
        env = "BACKUP_REPOSITORY",
        global = true,
        value_name = "URL"
    )]
    pub(crate) repo: Option<String>,
    /// Read the repository password from this file (first line).
    #[arg(long, env = "BACKUP_PASSWORD_FILE", global = true, value_name = "FILE")]
    pub(crate) password_file: Option<PathBuf>,
    /// Open the repository with this key file (for example one written by
    /// `key export`) instead of the keys stored in it.
    #[arg(long, env = "BACKUP_KEY_FILE", global = true, value_name = "FILE")]
    pub(crate) key_file: Option<PathBuf>,
    /// Storage option KEY=VALUE (for example s3.endpoint=http://127.0.0.1:9000); repeatable.
    #[arg(short = 'o', long = "option", global = true, value_name = "KEY=VALUE")]
    pub(crate) options: Vec<String>,
    /// Print machine-readable JSON on standard output.
    #[arg(long, global = true)]
    pub(crate) json: bool,
    /// Print only errors.
    #[arg(short, long, global = true)]
    pub(crate) quiet: bool,
    /// Log more (repeat for more detail).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub(crate) verbose: u8,
    /// Never show progress bars.
    #[arg(long, global = true)]
    pub(crate) no_progress: bool,
    /// Colour in messages: auto (only on a terminal, never with NO_COLOR
    /// set or TERM=dumb), always or never.
    #[arg(long, global = true, value_name = "WHEN", default_value = "auto")]
    pub(crate) color: backup_ops::log::Color,
    /// Log lines on standard error: human (`warning: ...`) or json (one
    /// object a line, for log shippers).
    #[arg(
        long,
        global = true,
        env = "BACKUP_LOG_FORMAT",
        value_name = "FORMAT",
        default_value = "human"
    )]
    pub(crate) log_format: backup_ops::config::LogFormat,
    /// How long to wait for a conflicting repository lock (e.g. 10m) before giving up.
    #[arg(
        long,
        env = "BACKUP_LOCK_WAIT",
        global = true,
        value_name = "DURATION",
        default_value = "0s"
    )]
    pub(crate) lock_wait: String,
    /// Configuration file with named repositories and jobs (as used by
    /// backupd); `--repo` may then name one of its repositories.
    #[arg(long, env = "BACKUP_CONFIG", global = true, value_name = "FILE")]
    pub(crate) config: Option<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum Command {
    /// Create a new repository.
    Init(InitArgs),
    /// Back up a directory, a file or a database.
    Create(CreateArgs),
    /// List snapshots.
    #[command(alias = "snapshots")]
    List(ListArgs),
    /// Show one snapshot's manifest.
    Show(ShowArgs),
    /// List what a snapshot holds without restoring it: files like `ls`
    /// (--long, --recursive, --json lines); databases, schemas, tables and
    /// collections with their counts and bytes.
    Ls(LsArgs),
    /// Write one file of a snapshot to standard output (or --output), or
    /// a directory as a tar archive, without restoring the snapshot.
    Dump(DumpArgs),
    /// Compare two snapshots of one source without restoring them: files
    /// added, removed and changed (content, mode, owner, mtime, type, link
    /// target) with sizes; tables, collections and Redis databases added,
    /// removed or with other counts, bytes or data. Reads only trees.
    Diff(DiffArgs),
    /// Search snapshots for paths, tables and collections matching a glob;
    /// each match is shown with the consecutive snapshots in which it is
    /// unchanged.
    Find(FindArgs),
    /// Add, remove or set snapshot tags (each changed snapshot gets a new
    /// id).
    #[command(subcommand)]
    Tag(TagCommand),
    /// Mount the repository read-only (FUSE) on an empty directory:
    /// snapshots/, hosts/, tags/ and ids/; tables and collections as CSV
    /// and JSON files. Runs until Ctrl-C, SIGTERM or `fusermount -u DIR`.
    Mount(MountArgs),
    /// Restore a snapshot.
    Restore(RestoreArgs),
    /// Write a snapshot in a database's native dump format (Redis: a
    /// dump.rdb for redis-server to load at start-up; MongoDB: a mongodump
    /// directory for mongorestore).
    Export(ExportArgs),
    /// Check the repository's structure and, optionally, its data.
    #[command(alias = "check")]
    Verify(VerifyArgs),
    /// Remove snapshots by id or by a retention policy.
    Forget(ForgetArgs),
    /// Remove data no snapshot references.
    Prune(PruneArgs),
    /// Erase data from snapshots (right to be forgotten): paths from files
    /// snapshots, rows from logical PostgreSQL snapshots, documents from
    /// MongoDB snapshots. Each changed snapshot is replaced (new id, same
    /// time, tags and host, a `rewritten` field with --reason); then
    /// `backup prune --repack-threshold 0` removes the erased data.
    Rewrite(RewriteArgs),
    /// Rebuild the index from packs, or find and remove snapshots whose data is lost.
    #[command(subcommand)]
    Repair(RepairCommand),
    /// Copy snapshots to another repository, sending only what it lacks.
    Copy(CopyArgs),
    /// Manage the keys (passwords) of the repository.
    #[command(subcommand)]
    Key(KeyCommand),
    /// Show sizes, compression and deduplication ratios.
    Stats(StatsArgs),
    /// Move data packs to a colder S3 storage class (`STANDARD_IA`,
    /// `GLACIER_IR`, `GLACIER`, `DEEP_ARCHIVE`) by copying them within the
    /// bucket; only packs of snapshots older than --older-than when given.
    /// Trees, index and snapshots stay readable at once.
    Tier(TierArgs),
    /// Remove stale locks left by processes that died.
    Unlock(UnlockArgs),
    /// Check every job of --config: source reachable, repository writable,
    /// last backup younger than the job's max_age (exit 1 when not).
    Health(HealthArgs),
    /// Show the next scheduled runs of every job of --config.
    Schedule(ScheduleArgs),
    /// List the repository's audit trail and verify its hash chain (exit 3
    /// when a record was altered or removed).
    Audit(AuditArgs),
    /// Capture PostgreSQL WAL for point-in-time recovery: stream it from a
    /// replication slot, or store what archive_command hands over, and
    /// give it back to restore_command.
    #[command(subcommand)]
    Wal(WalCommand),
    /// Restore a job's latest backup into a scratch copy, check it,
    /// measure RTO and RPO, remove it, and record the drill (exit 1 when
    /// it fails or its RTO is over max_rto); --history lists drills.
    Drill(DrillArgs),
    /// Report per job: success rate, durations and sizes over time,
    /// verifications, drills with RTO and RPO against the objectives,
    /// restore points, storage growth.
    Report(ReportArgs),
    /// Continuous capture of a MongoDB replica set's oplog, for restores
    /// to any point in time.
    #[command(subcommand)]
    Oplog(OplogCommand),
    /// Continuous capture of a Redis primary's replication stream, for
    /// restores to any point in time.
    #[command(subcommand)]
    Redis(RedisCommand),
    /// List what can be restored to a point in time: per captured stream,
    /// the restorable windows, the base snapshots inside them and the
    /// gaps.
    Pitr(PitrArgs),
    /// Write shell completions or man pages (what packages install).
    #[command(subcommand)]
    Generate(GenerateCommand),
    /// Tokens of the daemon's users: hash one for `[[daemon.users]]`
    /// `token_hash`, or make a new one.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Restores through backupd and their approvals, over its HTTP API
    /// (BACKUP_DAEMON_URL, BACKUP_TOKEN).
    #[command(subcommand)]
    Remote(RemoteCommand),
}

/// Parses sizes such as `1MiB`, `16M`, `512k`, `1048576`.
pub(crate) fn parse_size(s: &str) -> Result<u64, String> {
    backup_core::util::parse_size(s)
}

fn parse_percent(s: &str) -> Result<f64, String> {
    let v: f64 = s
        .trim_end_matches('%')
        .parse()
        .map_err(|_| format!("`{s}` is not a percentage"))?;
    if v > 0.0 && v <= 100.0 {
        Ok(v)
    } else {
        Err(format!("{v} must be more than 0 and at most 100"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("1MiB").unwrap(), 1 << 20);
        assert_eq!(parse_size("512k").unwrap(), 512 << 10);
        assert_eq!(parse_size("42").unwrap(), 42);
        assert!(parse_size("1x").is_err());
        assert!(parse_percent("0").is_err());
        assert!((parse_percent("5%").unwrap() - 5.0).abs() < f64::EPSILON);
    }

    #[test]
    fn cli_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
