//! Choosing a source or target implementation from a URL.

use backup_core::source::Source;
use backup_core::target::Target;
use backup_core::{Error, Result};

/// The kind of system a URL names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SourceKind {
    /// A local path or `file://` URL.
    Files,
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `mongodb://` or `mongodb+srv://`.
    Mongodb,
    /// `redis://` or `rediss://`.
    Redis,
}

impl SourceKind {
    /// Classifies a URL or path.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an unknown scheme.
    pub fn of(url: &str) -> Result<Self> {
        let Some((scheme, _)) = url.split_once("://") else {
            return Ok(SourceKind::Files);
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => Ok(SourceKind::Files),
            "postgres" | "postgresql" => Ok(SourceKind::Postgres),
            "mongodb" | "mongodb+srv" => Ok(SourceKind::Mongodb),
            "redis" | "rediss" => Ok(SourceKind::Redis),
            other => Err(Error::Config(format!(
                "unknown source scheme `{other}://`: use a path, file://, postgres://, mongodb:// or redis://"
            ))),
        }
    }
}

/// Options shared by every source.
#[derive(Debug, Clone, Default)]
pub struct SourceOptions {
    /// Exclude patterns.
    pub excludes: Vec<String>,
    /// Include patterns (database namespaces).
    pub includes: Vec<String>,
    /// PostgreSQL: also back up roles and tablespaces
    /// (`pg_dumpall --globals-only`).
    pub globals: bool,
    /// MongoDB: also back up the users (with their password hashes) and
    /// user-defined roles of the backed-up databases, and of `admin` for a
    /// whole-deployment backup.
    pub users: bool,
}

fn unavailable(kind: SourceKind, url: &str) -> Error {
    let scheme = url.split_once("://").map_or("", |(s, _)| s);
    Error::Config(format!(
        "{kind:?} ({scheme}://) is not supported by this build of backup (it was built without the source's cargo feature)"
    ))
}

/// Opens the source a URL names.
///
/// # Errors
///
/// [`Error::Config`] for malformed URLs or options; source-specific
/// connection errors.
pub async fn open_source(url: &str, opts: &SourceOptions) -> Result<Box<dyn Source>> {
    match SourceKind::of(url)? {
        #[cfg(feature = "files")]
        SourceKind::Files => Ok(Box::new(crate::files::FilesSource::open(
            &file_path(url)?,
            opts,
        )?)),
        #[cfg(feature = "redis")]
        SourceKind::Redis => Ok(Box::new(crate::redis::RedisSource::open(url, opts).await?)),
        #[cfg(feature = "postgres")]
        SourceKind::Postgres => {
            let config =
                crate::postgres::PostgresSourceConfig::default().with_globals(opts.globals);
            Ok(Box::new(
                crate::postgres::PostgresSource::open(url, opts, &config).await?,
            ))
        }
        #[cfg(feature = "mongodb")]
        SourceKind::Mongodb => Ok(Box::new(crate::mongo::MongoSource::open(url, opts).await?)),
        // Reachable only in builds without some source feature.
        #[allow(unreachable_patterns)]
        kind => Err(unavailable(kind, url)),
    }
}

/// Opens the restore target a URL names.
///
/// # Errors
///
/// [`Error::Config`] for malformed URLs.
pub async fn open_target(url: &str) -> Result<Box<dyn Target>> {
    match SourceKind::of(url)? {
        #[cfg(feature = "files")]
        SourceKind::Files => Ok(Box::new(crate::files::FilesTarget::new(file_path(url)?))),
        #[cfg(feature = "redis")]
        SourceKind::Redis => Ok(Box::new(crate::redis::RedisTarget::new(url)?)),
        #[cfg(feature = "postgres")]
        SourceKind::Postgres => Ok(Box::new(crate::postgres::PostgresTarget::new(url)?)),
        #[cfg(feature = "mongodb")]
        SourceKind::Mongodb => Ok(Box::new(crate::mongo::MongoTarget::new(url)?)),
        // Reachable only in builds without some source feature.
        #[allow(unreachable_patterns)]
        kind => Err(unavailable(kind, url)),
    }
}

#[cfg(feature = "files")]
fn file_path(url: &str) -> Result<std::path::PathBuf> {
    if let Some(rest) = url.strip_prefix("file://") {
        if !rest.starts_with('/') {
            return Err(Error::Config(format!(
                "`{url}` is not a valid file URL: use file:///absolute/path"
            )));
        }
        let parsed = url::Url::parse(url)
            .map_err(|e| Error::Config(format!("`{url}` is not a valid file URL: {e}")))?;
        return parsed
            .to_file_path()
            .map_err(|()| Error::Config(format!("`{url}` is not a valid file URL")));
    }
    if url.is_empty() {
        return Err(Error::Config("empty path".to_owned()));
    }
    Ok(std::path::PathBuf::from(url))
}
