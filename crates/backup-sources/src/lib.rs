//! Sources and restore targets of the backup system.
//!
//! # Overview
//!
//! - [`files`]: directories and single files ([`files::FilesSource`],
//!   [`files::FilesTarget`]).
//! - `redis` (feature `redis`): Redis servers over the replication
//!   protocol or key by key, restores into a live server
//!   (`redis::RedisSource`, `redis::RedisTarget`).
//! - [`export`]: snapshots written in a database's native dump format
//!   (`kind::export`, `rdb` for Redis).
//! - `postgres` (feature `postgres`): one database, consistent and in
//!   parallel, restored selectively with parallel loads and index builds.
//! - `mongo` (feature `mongodb`): every database or a selection,
//!   streamed as raw BSON in parallel and made consistent by the oplog;
//!   restored with renames, indexes after data and oplog replay.
//! - [`export`]: snapshots written in a database's native dump format
//!   (`kind::export`, `mongodump` for MongoDB).
//! - [`capture`]: continuous capture and point-in-time recovery shared
//!   by the kinds that have a change stream (observer events, the rules
//!   of each kind of stream); `mongo::follow` captures MongoDB's oplog.
//! - [`summary`]: what a database snapshot holds (tables, collections,
//!   databases with their counts), from its metadata, for people.
//! - [`options`]: the typed options of each kind, compiled in every
//!   build.
//! - [`kind`]: the registry of kinds. [`SourceSpec`] and [`TargetSpec`]
//!   turn a URL and typed per-kind options into the right implementation;
//!   front-ends and the operations layer call only these.
//!
//! # Crate features
//!
//! - `files` (default): local files and directories.
//! - `redis`: Redis sources and targets, `export --format rdb`.
//! - `mongodb`: MongoDB deployments ([`mongo::MongoSource`],
//!   [`mongo::MongoTarget`]), `export --format mongodump`.
//! - `postgres`: PostgreSQL databases ([`postgres::PostgresSource`],
//!   [`postgres::PostgresTarget`]); needs `pg_dump` at backup time.
//!
//! The drivers each feature pulls in: `redis` the `redis` crate (tokio,
//! rustls); `mongodb` the official `mongodb` driver; `postgres`
//! `tokio-postgres`, `postgres-protocol` and `tokio-postgres-rustls`.
//! `files` pulls in nothing beyond the always-built dependencies.
//! `fuzzing` exposes parser entry points to the fuzz targets and is not a
//! stable interface.
#![deny(missing_docs)]

pub mod capture;
pub mod drill;
pub mod erase;
pub mod export;
#[cfg(feature = "files")]
pub mod files;
#[cfg(feature = "mongodb")]
mod gather;
pub mod item;
pub mod kind;
#[cfg(any(feature = "files", feature = "postgres"))]
mod localfs;
#[cfg(feature = "mongodb")]
pub mod mongo;
mod names;
pub mod objects;
pub mod options;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
pub mod summary;
#[cfg(all(test, feature = "postgres"))]
#[allow(clippy::unwrap_used)]
mod test_support;
#[cfg(any(feature = "postgres", feature = "redis"))]
mod tls;

pub use kind::{Kind, KindOptions, KindSettings, SourceSpec, TargetSpec};
pub use options::{
    Checkpoint, FilesOptions, MongoOptions, PostgresMode, PostgresOptions, RedisMode, RedisOptions,
    Selection,
};
