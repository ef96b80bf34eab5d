//! Arguments: keys, statistics, retention, pruning, repair, copies and locks.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::FilterArgs;

#[derive(Debug, Subcommand)]
pub(crate) enum KeyCommand {
    /// List keys.
    List,
    /// Add a key for a new password, or one held by a KMS (--kms).
    Add(KeyAddArgs),
    /// Remove a key.
    Remove {
        /// Key id or unique prefix.
        id: String,
    },
    /// Change the password of the key in use.
    Passwd(NewPasswordArgs),
    /// Encrypt the master key again with the KMS: under each KMS key's own
    /// key (after the service rotated its material), or under --to. Data
    /// is not re-encrypted.
    RotateKms {
        /// Move the KMS key to this key (`aws:ARN`) instead; needs a
        /// repository with one KMS key.
        #[arg(long, value_name = "aws:ARN")]
        to: Option<backup_core::kms::KmsKeyRef>,
    },
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
pub(crate) struct KeyAddArgs {
    /// A key held by this KMS key (`aws:ARN`) instead of a password: it
    /// opens the repository with no password wherever the AWS identity
    /// may decrypt with that key.
    #[arg(long, value_name = "aws:ARN", conflicts_with = "new_password_file")]
    pub(crate) kms: Option<backup_core::kms::KmsKeyRef>,
    /// A write-only key: it adds backups (and captured WAL) and nothing
    /// else. It cannot read, list the contents of, restore, forget, prune
    /// or repair anything, and its client never deletes. The repository
    /// becomes format version 4.
    #[arg(long)]
    pub(crate) write_only: bool,
    /// A name for the key, shown by `key list` (for example the host).
    #[arg(long, value_name = "NAME")]
    pub(crate) name: Option<String>,
    #[command(flatten)]
    pub(crate) new: NewPasswordArgs,
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
pub(crate) struct TierArgs {
    /// Move only data packs that no snapshot younger than this uses (for
    /// example `90d`); without it, every data pack.
    #[arg(long, value_name = "DURATION")]
    pub(crate) older_than: Option<String>,
    /// The S3 storage class to move to: `STANDARD`, `STANDARD_IA`,
    /// `GLACIER_IR`, `GLACIER` or `DEEP_ARCHIVE` (default: the storage
    /// option `s3.data-storage-class`).
    #[arg(long, value_name = "CLASS")]
    pub(crate) class: Option<String>,
    /// Count what would move; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
}

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
pub(crate) struct RewriteArgs {
    /// Snapshots to rewrite (ids, unique prefixes, `latest`); without
    /// any, every snapshot the filter options select (all snapshots
    /// without them).
    pub(crate) snapshots: Vec<String>,
    /// Remove paths matching this pattern from files snapshots (as
    /// `restore --exclude` takes it); repeatable.
    #[arg(long = "exclude", value_name = "PATTERN")]
    pub(crate) excludes: Vec<String>,
    /// Remove the rows of a table (logical PostgreSQL snapshots) whose
    /// column equals a value, as stored in COPY text:
    /// 'schema.table:column = value'; repeatable.
    #[arg(long = "pg-delete", value_name = "PREDICATE")]
    pub(crate) pg_delete: Vec<String>,
    /// Remove the documents of a collection (MongoDB snapshots) whose
    /// fields equal the filter's values: 'db.coll:{"field": "value"}'
    /// (Extended JSON values); repeatable.
    #[arg(long = "mongo-delete", value_name = "FILTER")]
    pub(crate) mongo_delete: Vec<String>,
    /// Remove the keys whose name matches a glob (Redis snapshots, every
    /// database; `*`, `?`, `[...]` as in `SCAN MATCH`): 'user:42:*';
    /// repeatable.
    #[arg(long = "redis-delete", value_name = "PATTERN")]
    pub(crate) redis_delete: Vec<String>,
    /// Why (recorded with every rewritten snapshot and in the audit trail).
    #[arg(long, value_name = "TEXT")]
    pub(crate) reason: Option<String>,
    /// Delete captured WAL, oplog and Redis ranges of the rewritten
    /// snapshots' sources that end before this time (they may hold erased data);
    /// point-in-time windows then start later.
    #[arg(long, value_name = "TIME")]
    pub(crate) drop_captures_before: Option<String>,
    /// Show what would be removed; change nothing.
    #[arg(long)]
    pub(crate) dry_run: bool,
    #[command(flatten)]
    pub(crate) filter: FilterArgs,
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
