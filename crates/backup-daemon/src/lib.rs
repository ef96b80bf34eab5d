//! Scheduled backups: the configuration file, running a job, the audit
//! trail, notifications and the `backupd` daemon.
//!
//! # Overview
//!
//! - [`config::Config`] parses and validates the TOML file shared by
//!   `backupd` and `backup --config` (repositories, jobs, notification
//!   channels); [`secret::Secret`] keeps passwords out of logs.
//! - [`job`] runs one backup ([`job::create_snapshot`], also behind
//!   `backup create`), retention, verification and health checks.
//! - [`audit`] appends hash-chained records of every operation to the
//!   repository and a local log, and verifies the chain.
//! - [`daemon`] schedules jobs (cron, concurrency limit, retries, slot
//!   leases from [`lease`] so that daemons sharing a repository run each
//!   slot once) and [`http`] serves health, metrics and the job API;
//!   [`notify`] sends webhooks and e-mail.
//!
//! # Crate features
//!
//! - `storage-s3`, `storage-gcs`: the cloud backends of `backup-storage`.
//! - `source-postgres`: the PostgreSQL source of `backup-sources`.
#![deny(missing_docs)]

pub mod audit;
pub mod config;
pub mod daemon;
pub mod http;
pub mod job;
pub mod lease;
pub mod notify;
pub mod secret;
