//! Options of a Redis source.

use backup_core::{Error, Result};

/// How a Redis source reads the data.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum RedisMode {
    /// The whole dataset as an RDB over the replication protocol (one
    /// point in time).
    #[default]
    Rdb,
    /// Key by key with `SCAN`, `DUMP` and `PEXPIRETIME`.
    Keys,
}

impl RedisMode {
    /// `rdb` or `keys`.
    pub fn as_str(self) -> &'static str {
        match self {
            RedisMode::Rdb => "rdb",
            RedisMode::Keys => "keys",
        }
    }
}

impl std::str::FromStr for RedisMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<Self> {
        match s {
            "rdb" => Ok(RedisMode::Rdb),
            "keys" => Ok(RedisMode::Keys),
            other => Err(Error::Config(format!(
                "mode `{other}`: Redis sources are read with mode rdb (the default) or keys"
            ))),
        }
    }
}

/// Options of a Redis backup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RedisOptions {
    /// How to read; `None` takes `?mode=` from the URL, or the RDB.
    pub mode: Option<RedisMode>,
}
