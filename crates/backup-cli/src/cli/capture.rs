//! Arguments: WAL, oplog and Redis capture, and `pitr`.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::parse_size;

/// A WAL segment size: a size (`16MiB`) that a cluster can have.
fn parse_segment_size(s: &str) -> Result<u64, String> {
    let n = parse_size(s)?;
    if backup_sources::postgres::physical::is_wal_segment_size(n) {
        Ok(n)
    } else {
        Err(format!(
            "{s} is not a WAL segment size (a power of two from 1MiB to 1GiB)"
        ))
    }
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
        #[arg(long, value_name = "SIZE", default_value = "16MiB", value_parser = parse_segment_size)]
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
