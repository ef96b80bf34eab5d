//! The operations of the backup system that both front-ends share: the
//! `backup` command and the `backupd` daemon parse and render; everything
//! between lives here.
//!
//! # Overview
//!
//! - [`config`]: the configuration file (repositories, jobs with typed
//!   per-kind source options, notification channels, daemon settings),
//!   validated at load with the line of every problem.
//! - [`repository`]: the one way a URL, storage options, a password and a
//!   key file become an open repository; write probes and sizes.
//! - [`backup`](mod@backup): a backup under a shared lock with parent choice and a
//!   progress total from the source's size hint; [`retention`]: forget,
//!   prune, and a job's retention after a backup.
//! - [`restore`](mod@restore): a restore with its confirmation and safety backup;
//!   [`verify`](mod@verify): checks and the restore test; [`copy`], [`maintenance`]
//!   (export, repair).
//! - [`browse`]: what a snapshot holds, read from its trees and manifest
//!   (`ls`); [`diff`]: how two snapshots differ, by stored ids;
//!   [`find`]: paths and database objects matching a glob across
//!   snapshots; [`dump`]: a file as it is or a directory as tar, without
//!   a restore; [`tags`]: tag changes, which rewrite manifests under new
//!   ids; [`rewrite`](mod@rewrite): erasing paths, rows and documents
//!   from snapshots.
//! - [`pitr`]: continuous capture (`oplog follow`), the restorable
//!   windows of every capture stream, and the plan of a restore to a
//!   point in time.
//! - [`health`]: repositories writable, sources reachable, backups fresh.
//! - [`drill`](mod@drill): restore drills into scratch copies, with measured RTO and
//!   RPO, checks and records; [`report`]: the history of jobs (runs,
//!   verifications, drills, restore points) as HTML, Markdown or JSON,
//!   anomaly detection and free space.
//! - [`audit`]: recording operations in the audit trail and checking it.
//! - [`access`]: roles, the permission table of the daemon's API and
//!   hashed tokens.
//!
//! # Stable surface
//!
//! A service depends on this crate alone: its root re-exports what a
//! service calls, and those root items are the stable surface (a change
//! to them is a semver-breaking release, checked by `scripts/semver.sh`):
//!
//! - a repository: [`RepoSpec`] (a URL and storage options), [`open`],
//!   [`Repository::init`] with [`InitOptions`];
//! - backups: [`SourceSpec`], [`open_source`] and [`backup()`], or
//!   [`backup_source`] for a [`Source`] of your own; [`BackupRequest`],
//!   [`Parent`], [`BackupOutcome`]; [`Feedback`] (progress, questions)
//!   or [`Unattended`];
//! - restores: [`TargetSpec`], [`open_target`], [`restore()`] with a
//!   [`RestoreRequest`] (its [`RestoreOptions::at`] restores to a point
//!   in time), [`RestoreResult`];
//! - point in time: [`follow`] a change stream with a [`FollowRequest`],
//!   [`restorable_windows`];
//! - checks and retention: [`verify()`], [`drill()`], [`forget`], [`prune`];
//! - the crates beneath, for the traits a custom source or target
//!   implements and the storage backends: [`backup_core`],
//!   [`backup_sources`], [`backup_storage`].
//!
//! The modules below are public too (the `backup` command and `backupd`
//! are built on them) and documented, but they are building blocks: their
//! layout may change in any minor release.
//!
//! Operations take trait objects ([`backup_core::source::Source`],
//! [`backup_core::target::Target`], [`Feedback`]) and typed requests, and
//! return typed results; front-ends never read results back by key.
//!
//! # Example
//!
//! Back a directory up into a repository, as `backup create` does:
//!
//! ```
//! use backup_core::keys::KdfParams;
//! use backup_core::repo::{InitOptions, Repository};
//! use backup_ops::backup::{backup, open_source, BackupRequest};
//! use backup_ops::repository::{open, RepoSpec};
//! use backup_ops::Unattended;
//! use backup_sources::SourceSpec;
//!
//! # #[tokio::main(flavor = "multi_thread", worker_threads = 2)]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let spec = RepoSpec::new("memory://ops-example", &[])?;
//! let opts = InitOptions { kdf: KdfParams::insecure_fast(), ..InitOptions::default() };
//! Repository::init(spec.sink()?, Some(b"secret"), &opts).await?;
//! let repo = open(&spec, || Ok("secret".into())).await?;
//!
//! let dir = tempfile::tempdir()?;
//! std::fs::write(dir.path().join("notes.txt"), "hello")?;
//! let source = SourceSpec::plain(dir.path().to_string_lossy())?;
//! let req = BackupRequest::default();
//! let outcome = backup(&repo, open_source(&source).await?, &source, &req, &Unattended, None).await?;
//! assert_eq!(outcome.snapshot.stats.files, 1);
//! # Ok(())
//! # }
//! ```
//!
//! # Crate features
//!
//! `s3`, `gcs` (storage backends) and `postgres`, `redis`, `mongodb`
//! (sources and targets), all on by default; the binaries take them from
//! here, so each is declared once. A service that needs fewer drivers
//! turns the defaults off (`default-features = false`) and names the ones
//! it uses; the local-disk backend and file sources are always built.
//!
//! | feature | default | drivers it pulls in |
//! |---|---|---|
//! | `s3` | yes | `backup-storage/s3`: `object_store`'s AWS client over `reqwest` and rustls (*ring*) |
//! | `gcs` | yes | `backup-storage/gcs`: `object_store`'s GCP client over `reqwest` and rustls (*ring*) |
//! | `postgres` | yes | `backup-sources/postgres`: `tokio-postgres`, `postgres-protocol`, `tokio-postgres-rustls` (and `pg_dump` at run time) |
//! | `redis` | yes | `backup-sources/redis`: the `redis` crate (tokio, rustls) |
//! | `mongodb` | yes | `backup-sources/mongodb`: the official `mongodb` driver |
//! | `failpoints` | no | crash tests only: the storage failpoint (never in a release) |
#![deny(missing_docs)]

pub mod access;
pub mod audit;
pub mod backup;
pub mod browse;
pub mod cold;
pub mod config;
pub mod copy;
pub mod diff;
pub mod drill;
pub mod dump;
mod error;
mod feedback;
pub mod find;
pub mod health;
pub mod log;
pub mod maintenance;
pub mod mount;
pub mod object_lock;
pub mod pitr;
pub mod report;
pub mod repository;
pub mod restore;
pub mod retention;
pub mod rewrite;
pub mod secret;
pub mod tags;
pub mod verify;
#[cfg(feature = "postgres")]
pub mod wal;

pub use error::{exit, Error, Result, ResultExt};
pub use feedback::{json, AuditDetails, Feedback, Unattended};

// The stable surface (see "Stable surface" above): a service depends on
// this crate alone and finds here what it calls.
pub use backup::{backup, backup_source, open_source, BackupRequest, Parent};
pub use backup_core;
pub use backup_core::archiver::BackupOutcome;
pub use backup_core::repo::{InitOptions, Repository};
pub use backup_core::snapshot::{SnapshotEntry, SnapshotFilter};
pub use backup_core::source::Source;
pub use backup_core::target::{RestoreOptions, Target};
pub use backup_sources;
pub use backup_sources::{SourceSpec, TargetSpec};
pub use backup_storage;
pub use drill::{drill, DrillOutcome, DrillRequest};
pub use pitr::{follow, windows as restorable_windows, FollowRequest};
pub use repository::{open, RepoSpec};
pub use restore::{open_target, restore, RestoreRequest, RestoreResult};
pub use retention::{forget, prune, ForgetRequest, ForgetResult};
pub use verify::{verify, VerifyRequest, VerifyResult};
