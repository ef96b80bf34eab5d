//! Test support for the backup system (`publish = false`).
//!
//! - [`conformance`]: a suite checking the [`Sink`](backup_core::Sink)
//!   contract, run against every storage backend.
//! - [`faulty`]: [`FaultySink`], a sink wrapper that fails
//!   chosen calls, for retry and crash-safety tests.
//! - `s3` (feature `s3`): a real S3 server (`s3s-fs`, in-process) on
//!   127.0.0.1.
//! - `gcs` (feature `gcs`): an in-process fake of the Google Cloud Storage
//!   XML API on 127.0.0.1.
//!
//! Servers are real HTTP servers speaking the real protocol; each runs on
//! its own thread and Tokio runtime and stops when its handle is dropped.
//! Nothing here skips: a server that cannot start panics with the reason.
#![deny(missing_docs)]

pub mod conformance;
pub mod faulty;

#[cfg(feature = "gcs")]
pub mod gcs;
#[cfg(feature = "s3")]
pub mod s3;
#[cfg(feature = "http-server")]
mod server;

pub use conformance::run_conformance;
pub use faulty::{Fault, FaultySink};
