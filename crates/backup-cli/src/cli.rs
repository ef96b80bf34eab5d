//! Command-line arguments.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

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

#[derive(Debug, Subcommand)]
pub(crate) enum WalCommand {
    /// Stream WAL from a physical replication slot into the repository
    /// until stopped (SIGINT or SIGTERM store what was received first).
    /// Resumes where the stored WAL ends.
    Receive {
        /// The server: postgres://ROLE@HOST:PORT/ for a role with REPLICATION.
        source: String,
        /// The replication slot (created when missing).
        #[arg(long, default_value = "backup")]
        slot: String,
        /// Store received WAL at least this often (the recovery point
        /// objective).
        #[arg(long, value_name = "DURATION", default_value = "5s")]
        flush_interval: String,
    },
    /// Store a WAL segment or timeline history file:
    /// archive_command = 'backup --repo R --key-file K wal push %p'.
    Push {
        /// The file (relative to the data directory, as the server gives it).
        path: PathBuf,
        /// The cluster's system identifier (default: read from
        /// global/pg_control of the current directory).
        #[arg(long, value_name = "ID")]
        cluster: Option<String>,
    },
    /// Write a WAL file from the repository:
    /// restore_command = 'backup --repo R --key-file K wal fetch %f %p'.
    /// Exits 1 when the repository does not hold it.
    Fetch {
        /// The WAL file's name (%f).
        name: String,
        /// Where to write it (%p).
        dest: PathBuf,
        /// The cluster's system identifier (default: read from
        /// global/pg_control of the current directory).
        #[arg(long, value_name = "ID")]
        cluster: Option<String>,
        /// The cluster's WAL segment size.
        #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_size)]
        segment_size: u64,
        /// Keep this many following segments fetched ahead, into
        /// pg_wal/.backup-prefetch, by a background process while the
        /// server replays (0: none).
        #[arg(long, value_name = "N", default_value_t = 8)]
        prefetch: usize,
        /// Be that background process (started by `wal fetch` itself).
        #[arg(long, hide = true)]
        ahead: bool,
    },
    /// Run by a restored server when its point-in-time recovery ends
    /// (the recovery_end_command `restore --at` writes): removes the
    /// password-less key file, WAL fetched ahead and not used, and the
    /// recovery settings `restore` added to postgresql.auto.conf.
    RecoveryEnd {
        /// The key file `restore` wrote beside the data directory.
        #[arg(long, value_name = "FILE")]
        remove_key: Option<PathBuf>,
        /// The data directory (default: the current directory, where the
        /// server runs the command).
        #[arg(long, value_name = "DIR", default_value = ".")]
        data_dir: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub(crate) enum OplogCommand {
    /// Capture the oplog of SOURCE (a replica set member) into the
    /// repository until interrupted (SIGINT or SIGTERM store what was
    /// read, then exit). Resumes where the stored oplog ends.
    Follow(FollowArgs),
}

#[derive(Debug, Subcommand)]
pub(crate) enum RedisCommand {
    /// Capture the replication stream of SOURCE (a Redis primary, or a
    /// replica of it) into the repository until interrupted (SIGINT or
    /// SIGTERM store what was read, then exit). Takes a base snapshot
    /// over the same connection when the stream cannot continue where the
    /// stored one ends (first start, lost backlog).
    Follow(RedisFollowArgs),
}

#[derive(Debug, Args)]
pub(crate) struct RedisFollowArgs {
    /// The server: `redis://[USER:PASSWORD@]HOST:PORT` (no /DB: every
    /// database is captured).
    #[arg(value_name = "SOURCE")]
    pub(crate) source: String,
    /// Store a slice once its oldest command is this old (at least 100ms).
    #[arg(long, value_name = "DURATION", default_value = "500ms")]
    pub(crate) slice_time: String,
    /// ... or once it holds this many bytes.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_size)]
    pub(crate) slice_size: u64,
    /// Tag the base snapshots the follower takes; repeatable.
    #[arg(long = "tag", value_name = "TAG")]
    pub(crate) tags: Vec<String>,
    /// Record the base snapshots as this job's (so its drills, reports and
    /// retention count them), as backupd's follower of the job does.
    #[arg(long, value_name = "NAME")]
    pub(crate) job: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct FollowArgs {
    /// The replica set: mongodb://...
    #[arg(value_name = "SOURCE")]
    pub(crate) source: String,
    /// Store a slice once its oldest entry is this old (at least 1s).
    #[arg(long, value_name = "DURATION", default_value = "10s")]
    pub(crate) slice_time: String,
    /// ... or once it holds this many bytes.
    #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_size)]
    pub(crate) slice_size: u64,
}

#[derive(Debug, Args)]
pub(crate) struct PitrArgs {
    /// Only streams of this source (URL or kind such as `mongodb`).
    #[arg(long)]
    pub(crate) source: Option<String>,
}

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
    /// Show only the last N records.
    #[arg(long, value_name = "N")]
    pub(crate) last: Option<usize>,
}

#[derive(Debug, Args)]
pub(crate) struct InitArgs {
    /// Store data unencrypted (only when it is encrypted elsewhere).
    #[arg(long)]
    pub(crate) insecure_no_encryption: bool,
    /// Average chunk size: a power of two from 64KiB to 4MiB.
    #[arg(long, default_value = "1MiB", value_parser = parse_size)]
    pub(crate) chunk_size: u64,
    /// zstd compression level (1-19).
    #[arg(long, default_value_t = 2)]
    pub(crate) compression_level: i32,
    /// Target pack file size.
    #[arg(long, default_value = "16MiB", value_parser = parse_size)]
    pub(crate) pack_size: u64,
    /// Keyed hash of blob ids: blake3 (format version 2), or hmac-sha256
    /// (format version 1, readable by builds older than version 2).
    #[arg(long, value_name = "HASH", default_value = "blake3", value_parser = ["blake3", "hmac-sha256"])]
    pub(crate) id_hash: String,
}

#[derive(Debug, Args)]
pub(crate) struct CreateArgs {
    /// What to back up: a path, file:///path, or a database URL.
    #[arg(
        value_name = "SOURCE",
        required_unless_present = "job",
        conflicts_with = "job"
    )]
    pub(crate) source: Option<String>,
    /// Run the backup of this job of --config (its source, repository,
    /// tags and patterns; retention afterwards).
    #[arg(long, value_name = "NAME")]
    pub(crate) job: Option<String>,
    /// Tag the snapshot; repeatable.
    #[arg(long = "tag", value_name = "TAG")]
    pub(crate) tags: Vec<String>,
    /// Leave out paths matching GLOB; repeatable.
    #[arg(long = "exclude", value_name = "GLOB")]
    pub(crate) excludes: Vec<String>,
    /// Only these namespaces (databases); repeatable.
    #[arg(long = "include", value_name = "NS")]
    pub(crate) includes: Vec<String>,
    /// Stamp the snapshot with this time (RFC 3339) instead of now.
    #[arg(long, value_name = "RFC3339")]
    pub(crate) time: Option<String>,
    /// Record this host name instead of this machine's.
    #[arg(long)]
    pub(crate) host: Option<String>,
    /// Use this snapshot as the parent instead of the latest of the same source.
    #[arg(long, value_name = "SNAPSHOT", conflicts_with = "no_parent")]
    pub(crate) parent: Option<String>,
    /// Read every file even when unchanged since the last snapshot.
    #[arg(long)]
    pub(crate) no_parent: bool,
    /// Read and count everything, write nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// PostgreSQL: also back up roles and tablespaces (pg_dumpall --globals-only).
    #[arg(long)]
    pub(crate) pg_globals: bool,
    /// MongoDB: also back up users (with their password hashes) and
    /// user-defined roles of the backed-up databases (and of `admin` for a
    /// whole deployment); a restore recreates the missing ones.
    #[arg(long)]
    pub(crate) mongo_users: bool,
    /// How to read the source; the same as `?mode=` in the URL. Redis:
    /// `rdb` (default; the RDB over replication, one point in time) or
    /// `keys` (SCAN, DUMP per key; for servers that refuse replication).
    /// PostgreSQL: `logical` (default; one database as SQL and COPY data)
    /// or `physical` (a base backup of the whole cluster that restores
    /// into a data directory).
    #[arg(long, value_name = "MODE", value_parser = ["rdb", "keys", "logical", "physical"])]
    pub(crate) mode: Option<String>,
    /// PostgreSQL physical: read this data directory directly (a local
    /// base backup) instead of streaming it over the replication protocol.
    /// Without it the data directory is read directly when the server's
    /// `data_directory` is readable here.
    #[arg(long, value_name = "DIR")]
    pub(crate) pgdata: Option<PathBuf>,
    /// PostgreSQL physical: `fast` (default) or `spread` starting
    /// checkpoint.
    #[arg(long, value_name = "WHEN", value_parser = ["fast", "spread"])]
    pub(crate) checkpoint: Option<String>,
    /// PostgreSQL physical over the replication protocol: the most the
    /// server sends per second (e.g. 100MiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size)]
    pub(crate) max_rate: Option<u64>,
    /// Stay on the source's file system: directories where another one is
    /// mounted are kept, empty.
    #[arg(long, help_heading = CREATE_FILES)]
    pub(crate) one_file_system: bool,
    /// Leave out the contents of directories tagged as caches by a
    /// CACHEDIR.TAG file (the tag itself is kept).
    #[arg(long, help_heading = CREATE_FILES)]
    pub(crate) exclude_caches: bool,
    /// Leave out the contents of directories that hold a file of this name
    /// (the file itself is kept); repeatable.
    #[arg(long, value_name = "NAME", help_heading = CREATE_FILES)]
    pub(crate) exclude_if_present: Vec<String>,
    /// Read exclude patterns from FILE, one a line (# starts a comment);
    /// repeatable.
    #[arg(long, value_name = "FILE", help_heading = CREATE_FILES)]
    pub(crate) exclude_file: Vec<PathBuf>,
    /// Leave out files larger than SIZE (e.g. 2GiB).
    #[arg(long, value_name = "SIZE", value_parser = parse_size, help_heading = CREATE_FILES)]
    pub(crate) exclude_larger_than: Option<u64>,
    /// Back up only the paths listed in FILE (relative to SOURCE or
    /// absolute inside it; one a line, # starts a comment); a listed
    /// directory brings everything below it. Repeatable.
    #[arg(long, value_name = "FILE", help_heading = CREATE_FILES)]
    pub(crate) files_from: Vec<PathBuf>,
    /// The --files-from lists end each path with a NUL byte (as `find
    /// -print0` writes), not a newline.
    #[arg(short = '0', long = "null", requires = "files_from", help_heading = CREATE_FILES)]
    pub(crate) null: bool,
}

const CREATE_FILES: &str = "Files";

#[derive(Debug, Args)]
pub(crate) struct ListArgs {
    #[command(flatten)]
    pub(crate) filter: FilterArgs,
}

#[derive(Debug, Args, Clone, Default)]
pub(crate) struct FilterArgs {
    /// Only snapshots of this source (URL, path or kind such as `files`).
    #[arg(long)]
    pub(crate) source: Option<String>,
    /// Only snapshots with this tag; repeatable (all must match).
    #[arg(long = "tag", value_name = "TAG")]
    pub(crate) tags: Vec<String>,
    /// Only snapshots from this host.
    #[arg(long)]
    pub(crate) host: Option<String>,
    /// Only snapshots taken before this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long, value_name = "TIME")]
    pub(crate) before: Option<String>,
    /// Only snapshots taken at or after this time (RFC 3339 or YYYY-MM-DD).
    #[arg(long, value_name = "TIME")]
    pub(crate) after: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// Snapshot id, unique id prefix, or `latest`.
    pub(crate) snapshot: String,
    /// Narrow `latest` to this source.
    #[arg(long)]
    pub(crate) source: Option<String>,
}

/// `restore --help` groups its options by what they are for (global
/// options come last, under their own heading).
const RESTORE_SELECTION: &str = "What to restore";
const RESTORE_POINT: &str = "Point in time (PostgreSQL WAL, MongoDB oplog, Redis stream)";
const RESTORE_DATABASE: &str = "Database targets";
const RESTORE_PHYSICAL: &str = "Physical PostgreSQL";
const RESTORE_FILES: &str = "File targets";

#[derive(Debug, Args)]
pub(crate) struct RestoreArgs {
    /// Snapshot id, unique id prefix, or `latest` (the default). With a
    /// point in time (`--at`, `--at-lsn`, ...), `latest` means the newest
    /// base backup that ended before the target.
    #[arg(default_value = "latest")]
    pub(crate) snapshot: String,
    /// Where to restore: an empty or new directory, or a database URL.
    /// With --job it defaults to the job's source, after confirmation.
    #[arg(long, value_name = "TARGET", required_unless_present = "job")]
    pub(crate) to: Option<String>,
    /// Restore a snapshot of this job of --config (from its repository;
    /// `latest` means the job's newest).
    #[arg(long, help_heading = RESTORE_SELECTION, value_name = "NAME")]
    pub(crate) job: Option<String>,
    /// Narrow `latest` to this source.
    #[arg(long, help_heading = RESTORE_SELECTION)]
    pub(crate) source: Option<String>,
    /// Restore only paths or namespaces matching; repeatable.
    #[arg(long = "include", help_heading = RESTORE_SELECTION, value_name = "PATTERN")]
    pub(crate) includes: Vec<String>,
    /// Leave out paths or namespaces matching; repeatable.
    #[arg(long = "exclude", help_heading = RESTORE_SELECTION, value_name = "PATTERN")]
    pub(crate) excludes: Vec<String>,
    /// Replace existing data in a database target (after a safety backup).
    #[arg(long, help_heading = RESTORE_DATABASE)]
    pub(crate) drop: bool,
    /// Point in time to restore a database to (RFC 3339): the base backup
    /// is chosen and the captured WAL or oplog replayed up to it
    /// (transactions committed at that very time included; MongoDB: every
    /// oplog entry whose timestamp's seconds are at or before TIME;
    /// Redis: every command that had reached the follower by TIME).
    /// Narrow with --source when the repository captures several sources.
    #[arg(long, help_heading = RESTORE_POINT, value_name = "TIME", conflicts_with_all = ["at_lsn", "at_xid", "at_name", "immediate", "at_ts", "at_offset"])]
    pub(crate) at: Option<String>,
    /// PostgreSQL: replay up to this WAL position (X/X), included.
    #[arg(long, help_heading = RESTORE_POINT, value_name = "LSN", conflicts_with_all = ["at_xid", "at_name", "immediate", "at_ts", "at_offset"])]
    pub(crate) at_lsn: Option<String>,
    /// PostgreSQL: replay up to the commit of this transaction id,
    /// included.
    #[arg(long, help_heading = RESTORE_POINT, value_name = "XID", conflicts_with_all = ["at_name", "immediate", "at_ts", "at_offset"])]
    pub(crate) at_xid: Option<String>,
    /// PostgreSQL: replay up to this restore point (pg_create_restore_point).
    #[arg(long, help_heading = RESTORE_POINT, value_name = "NAME", conflicts_with_all = ["immediate", "at_ts", "at_offset"])]
    pub(crate) at_name: Option<String>,
    /// PostgreSQL: stop as soon as the base backup is consistent.
    #[arg(long, help_heading = RESTORE_POINT, conflicts_with_all = ["at_ts", "at_offset"])]
    pub(crate) immediate: bool,
    /// MongoDB: replay the oplog up to and including the entry with this
    /// timestamp, SECONDS:INCREMENT (`mongorestore --oplogLimit` excludes
    /// the entry at its limit; this includes it, like every target here).
    #[arg(long, help_heading = RESTORE_POINT, value_name = "SECONDS:INCREMENT", conflicts_with = "at_offset")]
    pub(crate) at_ts: Option<String>,
    /// Redis: replay the captured stream up to replication offset N
    /// (`master_repl_offset` as INFO replication shows it): every command
    /// that ends at or before byte N.
    #[arg(long, help_heading = RESTORE_POINT, value_name = "N")]
    pub(crate) at_offset: Option<u64>,
    /// PostgreSQL point-in-time restores: what the server does at the
    /// target: promote (default), pause or shutdown.
    #[arg(long, help_heading = RESTORE_POINT, value_name = "ACTION", value_parser = ["promote", "pause", "shutdown"])]
    pub(crate) target_action: Option<String>,
    /// PostgreSQL point-in-time restores: the timeline to follow (a
    /// number, `latest` (default) or `current`).
    #[arg(long, help_heading = RESTORE_POINT, value_name = "TLI")]
    pub(crate) timeline: Option<String>,
    /// Print the plan and change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Do not ask for confirmation of a destructive restore.
    #[arg(long, short = 'y')]
    pub(crate) yes: bool,
    /// Rename on restore, FROM:TO (databases: `db.coll:db2.coll2`, `db:db2`, `0:3`); repeatable.
    #[arg(long = "rename", help_heading = RESTORE_SELECTION, value_name = "FROM:TO")]
    pub(crate) renames: Vec<String>,
    /// Skip the safety backup of the data a --drop restore replaces.
    #[arg(long, help_heading = RESTORE_DATABASE)]
    pub(crate) no_safety_backup: bool,
    /// PostgreSQL: leave out the statements that name roles the target
    /// cluster lacks (ownership, grants, policies), reporting each one.
    /// Without it such a restore is refused before anything changes;
    /// a snapshot taken with --pg-globals creates its missing roles.
    #[arg(long, help_heading = RESTORE_DATABASE)]
    pub(crate) skip_missing_roles: bool,
    /// Files, as root: give files the recorded user and group numbers,
    /// not the ids this system has for the recorded names (the default
    /// when a name is known here).
    #[arg(long, help_heading = RESTORE_FILES, conflicts_with = "no_owner")]
    pub(crate) numeric_owner: bool,
    /// Files, as root: leave every restored file owned by root instead
    /// of its recorded owner.
    #[arg(long, help_heading = RESTORE_FILES)]
    pub(crate) no_owner: bool,
    /// Files: restore into a directory that holds files already; an entry
    /// that exists is left as it is (never), replaced unless its size and
    /// modification time match (if-changed), or replaced (always). A
    /// replaced file is written beside the old one and renamed over it.
    #[arg(long, value_name = "WHEN", value_parser = ["never", "if-changed", "always"], help_heading = RESTORE_FILES)]
    pub(crate) overwrite: Option<String>,
    /// Files, with --overwrite: afterwards remove what the directory holds
    /// that the snapshot does not (a mirror of the snapshot).
    #[arg(long, help_heading = RESTORE_FILES)]
    pub(crate) delete: bool,
    /// Files: afterwards re-read every restored file and compare it with
    /// the snapshot (content, type, permissions, link targets); a
    /// difference fails the restore.
    #[arg(long, help_heading = RESTORE_FILES)]
    pub(crate) verify: bool,
    /// Database targets: parallel loaders (PostgreSQL connections for
    /// data and indexes; MongoDB collections at once and writers per
    /// collection). Default: one per core.
    #[arg(long, help_heading = RESTORE_DATABASE, value_name = "N", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) jobs: Option<u16>,
    /// Physical PostgreSQL: after restoring, start a temporary server on
    /// this port (127.0.0.1), wait until recovery ends and it accepts
    /// connections, report the time, and stop it. It replays with shared
    /// buffers sized to hold the cluster (at most a quarter of free
    /// memory); the cluster's configuration is not changed.
    #[arg(long, help_heading = RESTORE_PHYSICAL, value_name = "PORT", value_parser = clap::value_parser!(u16).range(1..))]
    pub(crate) start: Option<u16>,
    /// Physical PostgreSQL: restore tablespace OID into DIR instead of
    /// its original place; repeatable.
    #[arg(long = "tablespace-map", help_heading = RESTORE_PHYSICAL, value_name = "OID=DIR")]
    pub(crate) tablespace_map: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct ExportArgs {
    /// Snapshot id, unique id prefix, or `latest`.
    pub(crate) snapshot: String,
    /// Output format: `rdb` (Redis snapshots) or `mongodump` (MongoDB
    /// snapshots).
    #[arg(long, value_name = "FORMAT")]
    pub(crate) format: String,
    /// The file or directory to write (must not exist; a directory may be empty).
    #[arg(long, value_name = "PATH")]
    pub(crate) to: PathBuf,
    /// Narrow `latest` to this source.
    #[arg(long)]
    pub(crate) source: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct VerifyArgs {
    /// Check only this snapshot (id, prefix or `latest`).
    pub(crate) snapshot: Option<String>,
    /// Also download and check data: all of it, or PERCENT of the packs.
    #[arg(long, value_name = "PERCENT", num_args = 0..=1, default_missing_value = "100", value_parser = parse_percent)]
    pub(crate) read_data: Option<f64>,
    /// Also restore the snapshot (or the latest) into this empty scratch
    /// target and compare the result with the snapshot; removed afterwards
    /// unless --keep or a difference is found.
    #[arg(long, value_name = "SCRATCH_TARGET")]
    pub(crate) restore_test: Option<String>,
    /// Keep the scratch restore of --restore-test.
    #[arg(long, requires = "restore_test")]
    pub(crate) keep: bool,
}

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// List keys.
    List,
    /// Add a key for a new password.
    Add(NewPasswordArgs),
    /// Remove a key.
    Remove {
        /// Key id or unique prefix.
        id: String,
    },
    /// Change the password of the key in use.
    Passwd(NewPasswordArgs),
    /// Write the master key, wrapped under a new password, to a file (for escrow).
    Export {
        /// The file to write (must not exist).
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        /// Write the key without a password (mode 0600): it opens the
        /// repository with no password and no key derivation, for
        /// `archive_command`/`restore_command`. Whoever reads it can open
        /// the repository.
        #[arg(long)]
        no_password: bool,
        #[command(flatten)]
        new: NewPasswordArgs,
    },
}

#[derive(Debug, Args)]
pub(crate) struct NewPasswordArgs {
    /// Read the new password from this file (otherwise BACKUP_NEW_PASSWORD or a prompt).
    #[arg(long, value_name = "FILE")]
    pub(crate) new_password_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub(crate) struct StatsArgs {}

#[derive(Debug, Args)]
pub(crate) struct ForgetArgs {
    /// Snapshots to remove (ids or unique prefixes), in addition to the policy.
    pub(crate) snapshots: Vec<String>,
    /// Keep the N newest snapshots of each group.
    #[arg(long, value_name = "N")]
    pub(crate) keep_last: Option<usize>,
    /// Keep the newest snapshot of each of the last N hours with snapshots.
    #[arg(long, value_name = "N")]
    pub(crate) keep_hourly: Option<usize>,
    /// Keep the newest snapshot of each of the last N days with snapshots.
    #[arg(long, value_name = "N")]
    pub(crate) keep_daily: Option<usize>,
    /// Keep the newest snapshot of each of the last N ISO weeks with snapshots.
    #[arg(long, value_name = "N")]
    pub(crate) keep_weekly: Option<usize>,
    /// Keep the newest snapshot of each of the last N months with snapshots.
    #[arg(long, value_name = "N")]
    pub(crate) keep_monthly: Option<usize>,
    /// Keep the newest snapshot of each of the last N years with snapshots.
    #[arg(long, value_name = "N")]
    pub(crate) keep_yearly: Option<usize>,
    /// Keep every snapshot taken within DURATION (e.g. 14d) of the group's newest.
    #[arg(long, value_name = "DURATION")]
    pub(crate) keep_within: Option<String>,
    /// Keep snapshots with this tag; repeatable.
    #[arg(long = "keep-tag", value_name = "TAG")]
    pub(crate) keep_tags: Vec<String>,
    /// Time zone of the calendar buckets (IANA name; default UTC).
    #[arg(long, value_name = "ZONE")]
    pub(crate) tz: Option<String>,
    /// Group snapshots by these keys before applying the policy: source, host, job, tags, none.
    #[arg(long, value_name = "KEYS", default_value = "source,job")]
    pub(crate) group_by: String,
    #[command(flatten)]
    pub(crate) filter: FilterArgs,
    /// Prune afterwards.
    #[arg(long)]
    pub(crate) prune: bool,
    /// Show what would be kept and removed, and why; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// With --prune: repack packs at least this percent unused.
    #[arg(long, value_name = "PERCENT", default_value = "25")]
    pub(crate) repack_threshold: f64,
}

#[derive(Debug, Args)]
pub(crate) struct PruneArgs {
    /// Show what would be removed and rewritten; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    /// Repack packs at least this percent unused (0-100).
    #[arg(long, value_name = "PERCENT", default_value = "25")]
    pub(crate) repack_threshold: f64,
}

#[derive(Debug, Subcommand)]
pub(crate) enum RepairCommand {
    /// Rebuild the index from the headers of every pack.
    Index {
        /// Report what would be written; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// List snapshots whose data is missing; remove them with --remove.
    Snapshots {
        /// Remove the damaged snapshots.
        #[arg(long)]
        remove: bool,
        /// List only; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

#[derive(Debug, Args)]
pub(crate) struct CopyArgs {
    /// Snapshots to copy (ids, prefixes or `latest`); all not yet copied when none are given.
    pub(crate) snapshots: Vec<String>,
    /// The destination repository URL.
    #[arg(long, value_name = "URL", env = "BACKUP_TO_REPOSITORY")]
    pub(crate) to_repo: String,
    /// File with the destination's password (otherwise BACKUP_TO_PASSWORD or a prompt).
    #[arg(long, value_name = "FILE", env = "BACKUP_TO_PASSWORD_FILE")]
    pub(crate) to_password_file: Option<PathBuf>,
    /// Storage option KEY=VALUE for the destination; repeatable.
    #[arg(long = "to-option", value_name = "KEY=VALUE")]
    pub(crate) to_options: Vec<String>,
    #[command(flatten)]
    pub(crate) filter: FilterArgs,
}

#[derive(Debug, Args)]
pub(crate) struct UnlockArgs {
    /// Remove every lock, not only stale ones (expired, or held by a process gone from this host); only when no other process uses the repository.
    #[arg(long)]
    pub(crate) all: bool,
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

    /// `restore --help` keeps global options apart from its own, and its
    /// own by what they are for.
    #[test]
    fn restore_help_groups_its_options() {
        use clap::CommandFactory;
        let mut cli = Cli::command();
        cli.build();
        let help = cli
            .find_subcommand_mut("restore")
            .unwrap()
            .render_long_help()
            .to_string();
        // The lines under each heading (a line without indentation
        // ending in a colon).
        let section = |title: &str| -> String {
            let mut current = "";
            let mut out = String::new();
            for line in help.lines() {
                if !line.starts_with(' ') && line.ends_with(':') {
                    current = line.trim_end_matches(':');
                } else if current == title {
                    out.push_str(line);
                    out.push('\n');
                }
            }
            assert!(!out.is_empty(), "no section {title}:\n{help}");
            out
        };
        let has = |title: &str, flags: &[&str]| {
            let s = section(title);
            for f in flags {
                assert!(s.contains(f), "{f} not under {title}:\n{help}");
            }
        };
        has("Global options", &["--repo", "--password-file", "--json"]);
        has("Options", &["--to", "--dry-run", "--yes"]);
        has(RESTORE_SELECTION, &["--job", "--include", "--rename"]);
        has(RESTORE_POINT, &["--at ", "--at-lsn", "--timeline"]);
        has(RESTORE_DATABASE, &["--drop", "--jobs"]);
        has(RESTORE_PHYSICAL, &["--start", "--tablespace-map"]);
        has(
            RESTORE_FILES,
            &[
                "--numeric-owner",
                "--no-owner",
                "--overwrite",
                "--delete",
                "--verify",
            ],
        );
        assert!(!section("Options").contains("--repo"), "{help}");
        assert!(!section("Options").contains("--at-lsn"), "{help}");
    }
}
