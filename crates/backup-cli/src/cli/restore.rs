//! Arguments: restoring, exporting and verifying.

use std::path::PathBuf;

use clap::Args;

use super::parse_percent;

/// `restore --help` groups its options by what they are for (global
/// options come last, under their own heading).
const RESTORE_SELECTION: &str = "What to restore";

const RESTORE_POINT: &str = "Point in time (PostgreSQL WAL, MongoDB oplog, Redis stream)";

const RESTORE_DATABASE: &str = "Database targets";

const RESTORE_PHYSICAL: &str = "Physical PostgreSQL";

const RESTORE_FILES: &str = "File targets";

/// Thawing archived packs before a read: `restore`, `dump` and `verify
/// --read-data`.
#[derive(Debug, Args)]
#[command(next_help_heading = "Cold storage (S3 archive classes)")]
pub(crate) struct ColdArgs {
    /// S3 archive classes (`GLACIER`, `DEEP_ARCHIVE`): wait up to this long
    /// (`12h`) for the packs the command reads to thaw, then go on.
    /// Without it, thaws are requested and the command stops with a
    /// message to run it again later; the requests are kept.
    #[arg(long = "cold-wait", value_name = "DURATION")]
    pub(crate) wait: Option<String>,
    /// Retrieval tier of thaw requests: expedited, standard (default) or
    /// bulk. Giving it (or --cold-wait) checks packs for archive classes
    /// even when `s3.data-storage-class` is not an archive class.
    #[arg(long = "cold-tier", value_name = "TIER")]
    pub(crate) tier: Option<String>,
    /// Days a thawed copy stays readable.
    #[arg(long = "cold-days", value_name = "DAYS", default_value = "7")]
    pub(crate) days: u32,
}

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
    /// Last: its heading would carry over to the options after it.
    #[command(flatten)]
    pub(crate) cold: ColdArgs,
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
    #[command(flatten)]
    pub(crate) cold: ColdArgs,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::Cli;

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
            "Cold storage (S3 archive classes)",
            &["--cold-wait", "--cold-tier", "--cold-days"],
        );
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
