//! The registry of kinds: which system a URL names, the typed options of
//! each kind, and the one place that turns a URL and options into a
//! [`Source`] or a [`Target`].
//!
//! Front-ends collect per-kind settings without knowing the kind
//! ([`KindSettings`]: command-line flags, configuration keys), and
//! [`SourceSpec::new`] checks them against the kind the URL names: a
//! setting of another kind is an error that names it.

use std::fmt;
use std::path::Path;

use backup_core::reader::SnapshotReader;
use backup_core::redact::redact_url;
use backup_core::source::Source;
use backup_core::target::Target;
use backup_core::{Error, Result};

use crate::options::{
    FilesOptions, MongoOptions, PostgresMode, PostgresOptions, RedisOptions, Selection,
};

/// The kinds of systems a URL can name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Kind {
    /// A local path or `file://` URL.
    Files,
    /// `postgres://` or `postgresql://`.
    Postgres,
    /// `mongodb://` or `mongodb+srv://`.
    Mongodb,
    /// `redis://` or `rediss://`.
    Redis,
}

impl Kind {
    /// Every kind.
    pub const ALL: [Kind; 4] = [Kind::Files, Kind::Postgres, Kind::Mongodb, Kind::Redis];

    /// Classifies a URL or path.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an unknown scheme.
    pub fn of(url: &str) -> Result<Self> {
        let Some((scheme, _)) = url.split_once("://") else {
            return Ok(Kind::Files);
        };
        match scheme.to_ascii_lowercase().as_str() {
            "file" => Ok(Kind::Files),
            "postgres" | "postgresql" => Ok(Kind::Postgres),
            "mongodb" | "mongodb+srv" => Ok(Kind::Mongodb),
            "redis" | "rediss" => Ok(Kind::Redis),
            other => Err(Error::Config(format!(
                "unknown source scheme `{other}://`: use a path, file://, postgres://, mongodb:// or redis://"
            ))),
        }
    }

    /// The name recorded in snapshot manifests (`files`, `postgres`,
    /// `mongodb`, `redis`).
    pub fn name(self) -> &'static str {
        match self {
            Kind::Files => "files",
            Kind::Postgres => "postgres",
            Kind::Mongodb => "mongodb",
            Kind::Redis => "redis",
        }
    }

    /// Whether this build includes the kind (its cargo feature).
    pub fn is_available(self) -> bool {
        match self {
            Kind::Files => cfg!(feature = "files"),
            Kind::Postgres => cfg!(feature = "postgres"),
            Kind::Mongodb => cfg!(feature = "mongodb"),
            Kind::Redis => cfg!(feature = "redis"),
        }
    }

    /// The `export --format` names of snapshots of this kind.
    pub fn export_formats(self) -> &'static [&'static str] {
        match self {
            Kind::Redis if cfg!(feature = "redis") => &["rdb"],
            Kind::Mongodb if cfg!(feature = "mongodb") => &["mongodump"],
            _ => &[],
        }
    }

    fn unavailable(self) -> Error {
        Error::Config(format!(
            "{} sources are not supported by this build of backup (it was built without the source's cargo feature)",
            self.name()
        ))
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// Per-kind settings as front-ends collect them, before the kind of the
/// source is known: `--pg-globals`, `--mongo-users`, `--mode`, `--pgdata`,
/// `--checkpoint`, `--max-rate` on the command line, `pg_globals`,
/// `mongo_users`, `mode`, `pgdata`, `checkpoint`, `max_rate` in a job.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct KindSettings {
    /// PostgreSQL: also back up roles and tablespaces.
    pub pg_globals: bool,
    /// MongoDB: also back up users and roles.
    pub mongo_users: bool,
    /// How to read the source: `rdb` or `keys` for Redis, `logical` or
    /// `physical` for PostgreSQL.
    pub mode: Option<String>,
    /// PostgreSQL physical: read the data directory here instead of over
    /// the replication protocol.
    pub pgdata: Option<std::path::PathBuf>,
    /// PostgreSQL physical: `fast` or `spread` starting checkpoint.
    pub checkpoint: Option<String>,
    /// PostgreSQL physical, over the replication protocol: the most bytes
    /// per second the server sends.
    pub max_rate: Option<u64>,
    /// Files: what the walk leaves out or keeps to.
    pub files: FilesOptions,
}

/// The typed options of one kind of source.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum KindOptions {
    /// Files.
    Files(FilesOptions),
    /// PostgreSQL.
    Postgres(PostgresOptions),
    /// MongoDB.
    Mongodb(MongoOptions),
    /// Redis.
    Redis(RedisOptions),
}

impl KindOptions {
    /// The options of `kind` from front-end settings.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for a setting that does not apply to `kind`, or a
    /// mode the kind does not have.
    pub fn new(kind: Kind, settings: &KindSettings) -> Result<Self> {
        let refuse = |what: &str, applies: &str| {
            Err(Error::Config(format!(
                "{what} applies to {applies} sources, and this source is a {kind} one"
            )))
        };
        if settings.pg_globals && kind != Kind::Postgres {
            return refuse("--pg-globals (pg_globals)", "PostgreSQL");
        }
        if settings.mongo_users && kind != Kind::Mongodb {
            return refuse("--mongo-users (mongo_users)", "MongoDB");
        }
        if settings.mode.is_some() && !matches!(kind, Kind::Redis | Kind::Postgres) {
            return Err(Error::Config(
                "--mode applies to PostgreSQL (logical or physical) and Redis (rdb or keys) sources"
                    .to_owned(),
            ));
        }
        let physical_only = settings.pgdata.is_some()
            || settings.checkpoint.is_some()
            || settings.max_rate.is_some();
        if physical_only && kind != Kind::Postgres {
            return refuse(
                "--pgdata, --checkpoint and --max-rate (pgdata, checkpoint, max_rate)",
                "PostgreSQL physical",
            );
        }
        if settings.files != FilesOptions::default() && kind != Kind::Files {
            return refuse(
                "--one-file-system, --exclude-caches, --exclude-if-present, --exclude-larger-than, --exclude-file and --files-from",
                "files",
            );
        }
        if settings.files.files_from_nul && settings.files.files_from.is_empty() {
            return Err(Error::Config(
                "-0 (--null) says how --files-from lists are separated; give --files-from too"
                    .to_owned(),
            ));
        }
        Ok(match kind {
            Kind::Files => KindOptions::Files(settings.files.clone()),
            Kind::Postgres => {
                let mode: Option<PostgresMode> =
                    settings.mode.as_deref().map(str::parse).transpose()?;
                if mode == Some(PostgresMode::Logical) && physical_only {
                    return Err(Error::Config(
                        "--pgdata, --checkpoint and --max-rate apply to physical backups (--mode physical)"
                            .to_owned(),
                    ));
                }
                if mode == Some(PostgresMode::Physical) && settings.pg_globals {
                    return Err(Error::Config(
                        "--pg-globals applies to logical backups: a physical backup holds the whole cluster, roles and tablespaces included".to_owned(),
                    ));
                }
                KindOptions::Postgres(PostgresOptions {
                    globals: settings.pg_globals,
                    jobs: None,
                    mode,
                    pgdata: settings.pgdata.clone(),
                    checkpoint: settings
                        .checkpoint
                        .as_deref()
                        .map(str::parse)
                        .transpose()?
                        .unwrap_or_default(),
                    max_rate: settings.max_rate,
                })
            }
            Kind::Mongodb => KindOptions::Mongodb(MongoOptions {
                users: settings.mongo_users,
            }),
            Kind::Redis => KindOptions::Redis(RedisOptions {
                mode: settings.mode.as_deref().map(str::parse).transpose()?,
            }),
        })
    }
}

/// A source to back up: its URL (which may carry a password), the
/// selection, and the options of its kind. Built once by a front-end (from
/// flags or a job), opened by the operations layer.
#[derive(Clone)]
pub struct SourceSpec {
    url: String,
    kind: Kind,
    /// Namespaces to include (databases; empty: everything).
    pub includes: Vec<String>,
    /// Patterns to leave out.
    pub excludes: Vec<String>,
    /// The options of the kind.
    pub options: KindOptions,
}

impl fmt::Debug for SourceSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SourceSpec")
            .field("url", &redact_url(&self.url))
            .field("kind", &self.kind)
            .field("includes", &self.includes)
            .field("excludes", &self.excludes)
            .field("options", &self.options)
            .finish()
    }
}

impl SourceSpec {
    /// A source for `url` with the selection and front-end settings.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an unknown scheme or a setting that does not
    /// apply to the kind (see [`KindOptions::new`]).
    pub fn new(
        url: impl Into<String>,
        includes: Vec<String>,
        excludes: Vec<String>,
        settings: &KindSettings,
    ) -> Result<Self> {
        let url = url.into();
        let kind = Kind::of(&url)?;
        let options = KindOptions::new(kind, settings)?;
        Ok(SourceSpec {
            url,
            kind,
            includes,
            excludes,
            options,
        })
    }

    /// A source for `url` with no selection and default options (the
    /// safety backup of a restore target, a health probe).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an unknown scheme.
    pub fn plain(url: impl Into<String>) -> Result<Self> {
        Self::new(url, Vec::new(), Vec::new(), &KindSettings::default())
    }

    /// The kind of system.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The URL with credentials removed.
    pub fn redacted_url(&self) -> String {
        redact_url(&self.url)
    }

    /// The URL as given, credentials included; only for connecting.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Connects to the system and starts the consistent view the backup
    /// reads (an exported snapshot, an oplog position, a replication
    /// stream).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for malformed URLs or options, or a kind this
    /// build lacks; source-specific connection errors.
    #[cfg_attr(
        not(any(feature = "postgres", feature = "mongodb", feature = "redis")),
        allow(clippy::unused_async)
    )]
    pub async fn open(&self) -> Result<Box<dyn Source>> {
        if !self.kind.is_available() {
            return Err(self.kind.unavailable());
        }
        let selection = Selection {
            includes: self.includes.clone(),
            excludes: self.excludes.clone(),
        };
        let _ = &selection;
        match &self.options {
            #[cfg(feature = "files")]
            KindOptions::Files(o) => Ok(Box::new(crate::files::FilesSource::open_with(
                &file_path(&self.url)?,
                &selection,
                o,
            )?)),
            #[cfg(feature = "postgres")]
            KindOptions::Postgres(o) => {
                crate::postgres::open_source(&self.url, &selection, o).await
            }
            #[cfg(feature = "mongodb")]
            KindOptions::Mongodb(o) => Ok(Box::new(
                crate::mongo::MongoSource::open(&self.url, &selection, o).await?,
            )),
            #[cfg(feature = "redis")]
            KindOptions::Redis(o) => Ok(Box::new(
                crate::redis::RedisSource::open(&self.url, &selection, o).await?,
            )),
            // Reachable only in builds without some source feature.
            #[allow(unreachable_patterns)]
            _ => Err(self.kind.unavailable()),
        }
    }
}

/// A place to restore to: its URL (which may carry a password) and the
/// number of parallel loaders for database targets.
#[derive(Clone)]
pub struct TargetSpec {
    url: String,
    kind: Kind,
}

impl fmt::Debug for TargetSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetSpec")
            .field("url", &redact_url(&self.url))
            .field("kind", &self.kind)
            .finish()
    }
}

impl TargetSpec {
    /// A target for `url`.
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for an unknown scheme.
    pub fn new(url: impl Into<String>) -> Result<Self> {
        let url = url.into();
        let kind = Kind::of(&url)?;
        Ok(TargetSpec { url, kind })
    }

    /// The kind of system.
    pub fn kind(&self) -> Kind {
        self.kind
    }

    /// The same place as a source: what a safety backup reads before a
    /// restore replaces data there.
    ///
    /// # Errors
    ///
    /// As [`SourceSpec::plain`].
    pub fn as_source(&self) -> Result<SourceSpec> {
        SourceSpec::plain(self.url.clone())
    }

    /// Opens the target (no connection is made before the restore needs
    /// one).
    ///
    /// # Errors
    ///
    /// [`Error::Config`] for malformed URLs or a kind this build lacks.
    pub fn open(&self) -> Result<Box<dyn Target>> {
        let url = self.url.as_str();
        let _ = url;
        match self.kind {
            #[cfg(feature = "files")]
            Kind::Files => Ok(directory_target(file_path(url)?)),
            #[cfg(feature = "redis")]
            Kind::Redis => Ok(Box::new(crate::redis::RedisTarget::new(url)?)),
            #[cfg(feature = "postgres")]
            Kind::Postgres => Ok(Box::new(crate::postgres::PostgresTarget::new(url)?)),
            #[cfg(feature = "mongodb")]
            Kind::Mongodb => Ok(Box::new(crate::mongo::MongoTarget::new(url)?)),
            // Reachable only in builds without some source feature.
            #[allow(unreachable_patterns)]
            kind => Err(kind.unavailable()),
        }
    }
}

/// Writes `snapshot` in `format` to `to` (which must not exist; a
/// directory format also accepts an empty directory).
///
/// # Errors
///
/// [`Error::Config`] for an unknown format (listing the supported ones) or
/// a snapshot of another kind; repository and write errors.
#[cfg_attr(
    not(any(feature = "mongodb", feature = "redis")),
    allow(clippy::unused_async)
)]
pub async fn export(
    snapshot: &SnapshotReader,
    format: &str,
    to: &Path,
) -> Result<crate::export::ExportReport> {
    let _ = (snapshot, to);
    match format {
        #[cfg(feature = "redis")]
        "rdb" => crate::redis::export::export_rdb(snapshot, to).await,
        #[cfg(feature = "mongodb")]
        "mongodump" => crate::mongo::export::export_mongodump(snapshot, to).await,
        other => Err(Error::Config(format!(
            "unknown export format `{other}`: this build supports {}",
            if crate::export::FORMATS.is_empty() {
                "none".to_owned()
            } else {
                crate::export::FORMATS.join(", ")
            }
        ))),
    }
}

/// Writes the item `path` names in `snapshot` (see [`crate::item`]) in
/// `format` (the kind's default when `None`) to the writer `open` gives,
/// then flushes it. Must run on a Tokio runtime; the writing happens on a
/// blocking thread.
///
/// # Errors
///
/// Before `open` is called: [`Error::Config`] for a format the kind does
/// not take, a snapshot without items (files, PostgreSQL physical), a
/// path naming more than one item or an item without data of its own (a
/// view, a partitioned table, a Redis stream or module value as a
/// `value`); [`Error::NotFound`] when nothing has that name. Afterwards:
/// damaged data (the output then ends early, and the error says so),
/// storage errors, errors writing.
#[cfg_attr(
    not(any(feature = "postgres", feature = "mongodb", feature = "redis")),
    allow(clippy::unused_async)
)]
pub async fn dump_item(
    snapshot: &SnapshotReader,
    path: &str,
    format: Option<crate::item::ItemFormat>,
    open: crate::item::OpenItem,
) -> Result<crate::item::ItemDump> {
    let kind = snapshot.snapshot().source.kind.clone();
    let formats = crate::item::ItemFormat::of_kind(&kind);
    let Some(default) = formats.first().copied() else {
        return Err(Error::Config(format!(
            "snapshot {} is a {kind} backup: it has files, not tables, collections or keys",
            snapshot.id().short()
        )));
    };
    let format = format.unwrap_or(default);
    if !formats.contains(&format) {
        return Err(Error::Config(format!(
            "a {kind} snapshot's items are written as {}, not {format}",
            formats
                .iter()
                .map(|f| f.name())
                .collect::<Vec<_>>()
                .join(" or ")
        )));
    }
    match kind.as_str() {
        #[cfg(feature = "postgres")]
        "postgres" => crate::postgres::item::dump_table(snapshot, path, format, open).await,
        #[cfg(feature = "mongodb")]
        "mongodb" => crate::mongo::item::dump_collection(snapshot, path, format, open).await,
        #[cfg(feature = "redis")]
        "redis" => crate::redis::item::dump_key(snapshot, path, format, open).await,
        _ => {
            drop((path, open));
            Err(Error::Config(format!(
                "this build has no {kind} support: it cannot read the snapshot's items"
            )))
        }
    }
}

/// A directory target: files, or a physical PostgreSQL data directory
/// when the build has PostgreSQL (the snapshot decides).
#[cfg(feature = "postgres")]
fn directory_target(path: std::path::PathBuf) -> Box<dyn Target> {
    Box::new(crate::postgres::physical::DirectoryTarget::new(path))
}

#[cfg(all(feature = "files", not(feature = "postgres")))]
fn directory_target(path: std::path::PathBuf) -> Box<dyn Target> {
    Box::new(crate::files::FilesTarget::new(path))
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

/// The edits that erase what `erasures` names from the snapshot `reader`
/// reads ([`crate::erase`]): PostgreSQL rows from a logical snapshot,
/// MongoDB documents, Redis keys. Snapshots of other kinds, and predicates naming
/// nothing the snapshot holds, give no edits (`applies` says which
/// predicates named something).
///
/// # Errors
///
/// [`Error::Config`] for a PostgreSQL physical snapshot with a
/// `--pg-delete` (rows cannot be erased from data files), for a column
/// or field the named table lacks, and for a kind this build lacks;
/// damaged metadata.
#[cfg_attr(
    not(any(feature = "mongodb", feature = "redis")),
    allow(clippy::unused_async)
)]
pub async fn erase_edits(
    reader: &SnapshotReader,
    erasures: &crate::erase::Erasures,
) -> Result<crate::erase::KindEdits> {
    let none = || crate::erase::KindEdits {
        edits: None,
        applies: Vec::new(),
        removed: std::sync::Arc::default(),
    };
    match reader.snapshot().source.kind.as_str() {
        #[cfg(feature = "postgres")]
        "postgres" => crate::postgres::erase::edits(reader, &erasures.pg),
        #[cfg(feature = "mongodb")]
        "mongodb" => crate::mongo::erase::edits(reader, &erasures.mongo).await,
        #[cfg(feature = "redis")]
        "redis" => crate::redis::erase::edits(reader, &erasures.redis).await,
        #[cfg(not(feature = "postgres"))]
        "postgres" if !erasures.pg.is_empty() => Err(Error::Config(
            "this build has no PostgreSQL support: it cannot erase rows".to_owned(),
        )),
        #[cfg(not(feature = "mongodb"))]
        "mongodb" if !erasures.mongo.is_empty() => Err(Error::Config(
            "this build has no MongoDB support: it cannot erase documents".to_owned(),
        )),
        #[cfg(not(feature = "redis"))]
        "redis" if !erasures.redis.is_empty() => Err(Error::Config(
            "this build has no Redis support: it cannot erase keys".to_owned(),
        )),
        _ => Ok(none()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_and_settings() {
        assert_eq!(Kind::of("/srv").unwrap(), Kind::Files);
        assert_eq!(Kind::of("file:///srv").unwrap(), Kind::Files);
        assert_eq!(Kind::of("postgresql://h/db").unwrap(), Kind::Postgres);
        assert_eq!(Kind::of("mongodb+srv://c").unwrap(), Kind::Mongodb);
        assert_eq!(Kind::of("rediss://h").unwrap(), Kind::Redis);
        assert!(Kind::of("ftp://h").is_err());

        let keys = KindSettings {
            mode: Some("keys".into()),
            ..KindSettings::default()
        };
        let spec = SourceSpec::new("redis://:pw@h:1", vec![], vec![], &keys).unwrap();
        assert_eq!(
            spec.options,
            KindOptions::Redis(RedisOptions {
                mode: Some(crate::RedisMode::Keys)
            })
        );
        assert!(!format!("{spec:?}").contains("pw@"));
        let e = SourceSpec::new("/srv", vec![], vec![], &keys).unwrap_err();
        assert!(
            e.to_string().contains("--mode applies to PostgreSQL"),
            "{e}"
        );
        let physical = KindSettings {
            mode: Some("physical".into()),
            pgdata: Some("/srv/pg".into()),
            ..KindSettings::default()
        };
        assert!(SourceSpec::new("postgres://h/db", vec![], vec![], &physical).is_ok());
        let e = SourceSpec::new("redis://h", vec![], vec![], &physical).unwrap_err();
        assert!(e.to_string().contains("--pgdata"), "{e}");
        let logical = KindSettings {
            mode: Some("logical".into()),
            checkpoint: Some("spread".into()),
            ..KindSettings::default()
        };
        let e = SourceSpec::new("postgres://h/db", vec![], vec![], &logical).unwrap_err();
        assert!(e.to_string().contains("physical backups"), "{e}");
        let globals = KindSettings {
            pg_globals: true,
            ..KindSettings::default()
        };
        assert!(SourceSpec::new("postgres://h/db", vec![], vec![], &globals).is_ok());
        let e = SourceSpec::new("mongodb://h/", vec![], vec![], &globals).unwrap_err();
        assert!(e.to_string().contains("--pg-globals"), "{e}");
        let bad_mode = KindSettings {
            mode: Some("fast".into()),
            ..KindSettings::default()
        };
        assert!(SourceSpec::new("redis://h", vec![], vec![], &bad_mode).is_err());
    }
}
