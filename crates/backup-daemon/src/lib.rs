//! `backupd`: runs the jobs of a configuration file on their schedules.
//!
//! # Overview
//!
//! The work of every run (a backup with its retention, a verification, an
//! audit record) is an operation of `backup-ops`, the same code `backup`
//! runs; this crate schedules and watches it:
//!
//! - [`scheduler`]: one task per job (cron, concurrency limit, retries,
//!   slot leases so that daemons sharing a repository run each slot once,
//!   restore drills, age checks, anomaly and storage alerts, the scheduled
//!   report, reloads, graceful shutdown).
//! - [`state`]: what the daemon knows about its jobs and their history;
//!   [`http`] serves it (the status page of [`page`], `/healthz`,
//!   `/api/jobs`, the run trigger, restore requests), over HTTPS with
//!   client certificates when [`tls`] is configured, and [`metrics`]
//!   exposes it to Prometheus.
//! - [`notify`]: webhooks (reqwest) and e-mail (lettre).
#![deny(missing_docs)]

pub mod http;
pub mod metrics;
pub mod notify;
pub mod page;
pub mod restores;
pub mod scheduler;
pub mod state;
pub mod tls;
