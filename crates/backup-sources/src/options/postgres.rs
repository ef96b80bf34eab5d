//! Options of a PostgreSQL source.

use backup_core::{Error, Result};

/// How a PostgreSQL source is read.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum PostgresMode {
    /// One database, as SQL schema and `COPY` data inside one snapshot.
    #[default]
    Logical,
    /// The whole cluster as a base backup: the data directory's files and
    /// the WAL that makes them consistent.
    Physical,
}

impl PostgresMode {
    /// `logical` or `physical`.
    pub fn as_str(self) -> &'static str {
        match self {
            PostgresMode::Logical => "logical",
            PostgresMode::Physical => "physical",
        }
    }
}

impl std::str::FromStr for PostgresMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "logical" => Ok(PostgresMode::Logical),
            "physical" => Ok(PostgresMode::Physical),
            other => Err(Error::Config(format!(
                "mode `{other}`: PostgreSQL sources are read with mode logical (the default) or physical"
            ))),
        }
    }
}

/// When a physical base backup's starting checkpoint happens.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Checkpoint {
    /// At once, as fast as the disks allow (the backup starts sooner).
    #[default]
    Fast,
    /// Spread over `checkpoint_completion_target`, like a scheduled one
    /// (gentler on a busy server; the backup may wait minutes to start).
    Spread,
}

impl std::str::FromStr for Checkpoint {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "fast" => Ok(Checkpoint::Fast),
            "spread" => Ok(Checkpoint::Spread),
            other => Err(Error::Config(format!(
                "checkpoint `{other}`: use fast (the default) or spread"
            ))),
        }
    }
}

/// Options of a PostgreSQL backup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PostgresOptions {
    /// Also back up roles and tablespaces (`pg_dumpall --globals-only`).
    pub globals: bool,
    /// Worker connections (default: the number of cores, at least 2).
    pub jobs: Option<usize>,
    /// How to read; `None` takes `?mode=` from the URL, or logical.
    pub mode: Option<PostgresMode>,
    /// Physical: the data directory, read directly (a local base backup);
    /// `None` reads it over the replication protocol unless the server's
    /// `data_directory` is readable here.
    pub pgdata: Option<std::path::PathBuf>,
    /// Physical: the starting checkpoint.
    pub checkpoint: Checkpoint,
    /// Physical, remote: the most bytes per second the server sends.
    pub max_rate: Option<u64>,
}
