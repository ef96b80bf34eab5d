//! Arguments: creating a repository, backing up, listing, showing and
//! browsing snapshots, changing their tags.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::parse_size;

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
    /// Wrap the master key with this KMS key (`aws:ARN`): the repository
    /// then opens with no password wherever the AWS identity may use the
    /// key. A password key is made beside it (break-glass) when
    /// BACKUP_PASSWORD or --password-file gives a password.
    #[arg(
        long,
        value_name = "aws:ARN",
        conflicts_with = "insecure_no_encryption"
    )]
    pub(crate) kms: Option<backup_core::kms::KmsKeyRef>,
}

const CREATE_FILES: &str = "Files";

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

#[derive(Debug, Args)]
pub(crate) struct LsArgs {
    /// Snapshot id, unique id prefix, or `latest`.
    pub(crate) snapshot: String,
    /// Where to start: a directory or file of a files snapshot; a database,
    /// schema, table or collection of a database snapshot (`app/public/t`,
    /// `public.t`, `shop.orders`); a Redis database (`0`) lists its keys.
    pub(crate) path: Option<String>,
    /// Narrow `latest` to this source.
    #[arg(long)]
    pub(crate) source: Option<String>,
    /// List the whole subtree, not only the entries directly under PATH.
    #[arg(short = 'R', long)]
    pub(crate) recursive: bool,
    /// Mode, owner (name and id), size, modification time and link
    /// targets; for Redis keys: type, expiry and serialised size.
    #[arg(short, long)]
    pub(crate) long: bool,
    /// Redis: the keys whose names match GLOB (Redis's `SCAN MATCH`
    /// syntax), in the database PATH names or in every database.
    #[arg(long = "match", value_name = "GLOB")]
    pub(crate) pattern: Option<String>,
    /// Logical PostgreSQL and MongoDB snapshots: also list the other
    /// objects (views, functions, sequences, types, indexes, constraints,
    /// triggers, ...; MongoDB indexes with their keys).
    #[arg(long)]
    pub(crate) objects: bool,
}

#[derive(Debug, Args)]
pub(crate) struct DiffArgs {
    /// The older snapshot: id, unique id prefix, or `latest`.
    pub(crate) a: String,
    /// The newer snapshot: id, unique id prefix, or `latest`.
    pub(crate) b: String,
    /// Only this file or directory of a files snapshot; a database, schema,
    /// table or collection of a database snapshot (as for `ls`).
    pub(crate) path: Option<String>,
    /// Narrow `latest` to this source.
    #[arg(long)]
    pub(crate) source: Option<String>,
}

#[derive(Debug, Args)]
pub(crate) struct FindArgs {
    /// A glob: `*` within a path component, `**` across; with a `/` it
    /// matches the whole path from the root, without one the name at any
    /// depth. Tables and collections match by `db/schema.table`,
    /// `schema.table`, `db.collection` or bare name.
    pub(crate) pattern: String,
    /// Search only this snapshot (id, unique id prefix or `latest`);
    /// repeatable.
    #[arg(long = "snapshot", value_name = "ID")]
    pub(crate) snapshots: Vec<String>,
    /// Only snapshots of this source (URL, path or kind).
    #[arg(long)]
    pub(crate) source: Option<String>,
    /// Only snapshots from this host.
    #[arg(long)]
    pub(crate) host: Option<String>,
    /// Only snapshots with this tag; repeatable (all must match).
    #[arg(long = "tag", value_name = "TAG")]
    pub(crate) tags: Vec<String>,
    /// Only the newest N snapshots of the selection.
    #[arg(long, value_name = "N", conflicts_with = "oldest")]
    pub(crate) newest: Option<usize>,
    /// Only the oldest N snapshots of the selection.
    #[arg(long, value_name = "N")]
    pub(crate) oldest: Option<usize>,
}

#[derive(Debug, Subcommand)]
pub(crate) enum TagCommand {
    /// Add tags to snapshots.
    Add(TagArgs),
    /// Remove tags from snapshots.
    Remove(TagArgs),
    /// Replace the tags of snapshots (no TAG: remove them all).
    Set(TagSetArgs),
}

#[derive(Debug, Args)]
pub(crate) struct TagArgs {
    /// The tags.
    #[arg(value_name = "TAG", required = true)]
    pub(crate) tags: Vec<String>,
    #[command(flatten)]
    pub(crate) select: TagSelect,
}

#[derive(Debug, Args)]
pub(crate) struct TagSetArgs {
    /// The tags.
    #[arg(value_name = "TAG")]
    pub(crate) tags: Vec<String>,
    #[command(flatten)]
    pub(crate) select: TagSelect,
}

/// Which snapshots a tag change applies to.
#[derive(Debug, Args)]
pub(crate) struct TagSelect {
    /// A snapshot (id, unique id prefix or `latest`); repeatable.
    #[arg(long = "snapshot", value_name = "ID")]
    pub(crate) snapshots: Vec<String>,
    /// Without --snapshot: snapshots of this source (URL, path or kind);
    /// with it, narrows `latest`.
    #[arg(long)]
    pub(crate) source: Option<String>,
    /// Without --snapshot: snapshots from this host.
    #[arg(long)]
    pub(crate) host: Option<String>,
    /// Without --snapshot: snapshots with this tag; repeatable (all must
    /// match). Not the tags to change: those are the TAG arguments.
    #[arg(long = "tag", value_name = "TAG")]
    pub(crate) with_tags: Vec<String>,
}

#[derive(Debug, Args)]
pub(crate) struct DumpArgs {
    /// Snapshot id, unique id prefix, or `latest`.
    pub(crate) snapshot: String,
    /// A file or stream (written as it is), or a directory (written as a
    /// tar archive); `/` for the whole snapshot as tar. `backup ls` lists
    /// the paths, database streams included. In a database snapshot also
    /// a table (`sales.orders`, `app/sales/orders`), a collection
    /// (`shop.orders`) or a Redis key (`DB/KEY`: `0/user:1`).
    pub(crate) path: String,
    /// How to write a table (csv, copy, sql; default csv), a collection
    /// (json: canonical Extended JSON lines, bson; default json) or a
    /// Redis key (value, raw: its DUMP payload; default value).
    #[arg(long, value_name = "FORMAT")]
    pub(crate) format: Option<backup_sources::item::ItemFormat>,
    /// Narrow `latest` to this source.
    #[arg(long)]
    pub(crate) source: Option<String>,
    /// Write to FILE instead of standard output (a tar archive is never
    /// written to a terminal).
    #[arg(short = 'O', long, value_name = "FILE")]
    pub(crate) output: Option<std::path::PathBuf>,
    /// A MongoDB collection as it was at TIME (as `restore --at` takes
    /// it): the newest base snapshot at or before it (`latest`; or the
    /// snapshot named) plus the captured oplog (`backup oplog follow`)
    /// replayed for that collection. Other kinds are refused: restore to
    /// the point instead.
    #[arg(long, value_name = "TIME")]
    pub(crate) at: Option<String>,
    #[command(flatten)]
    pub(crate) cold: super::ColdArgs,
}

#[derive(Debug, Args)]
pub(crate) struct MountArgs {
    /// An empty directory to mount on.
    pub(crate) dir: std::path::PathBuf,
    #[command(flatten)]
    pub(crate) filter: FilterArgs,
    /// Where opened tables and collections are rendered (default: the
    /// system's temporary directory).
    #[arg(long, value_name = "DIR")]
    pub(crate) spool_dir: Option<std::path::PathBuf>,
}
