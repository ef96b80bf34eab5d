//! Test support for the backup system (`publish = false`).
//!
//! - [`conformance`]: a suite checking the [`Sink`](backup_core::Sink)
//!   contract, run against every storage backend.
//! - [`faulty`]: [`FaultySink`], a sink wrapper that fails
//!   chosen calls, for retry and crash-safety tests.
//! - `s3` (feature `s3`): a real S3 server (`s3s-fs`, in-process) on
//!   127.0.0.1.
//! - `mongo` (feature `mongo`): throwaway `SecantusDB` servers (MongoDB
//!   wire protocol, one-node replica set) started from `secantusd-py`.
//! - `moto` (feature `moto`): throwaway `moto_server` processes, S3 with
//!   storage classes and `RestoreObject`.
//! - `postgres` (feature `postgres`): throwaway PostgreSQL clusters
//!   (`initdb` + `postgres` on 127.0.0.1).
//! - `gcs` (feature `gcs`): an in-process fake of the Google Cloud Storage
//!   XML API on 127.0.0.1.
//! - `redis` (feature `redis`): throwaway `redis-server` processes on
//!   127.0.0.1 and hand-assembled RDB fixtures.
//!
//! Servers are real HTTP servers speaking the real protocol; each runs on
//! its own thread and Tokio runtime and stops when its handle is dropped.
//! Nothing here skips: a server that cannot start panics with the reason.
#![deny(missing_docs)]

pub mod conformance;
pub mod faulty;

#[cfg(feature = "gcs")]
pub mod gcs;
#[cfg(feature = "mongo")]
pub mod mongo;
#[cfg(feature = "moto")]
pub mod moto;
#[cfg(feature = "postgres")]
pub mod postgres;
#[cfg(feature = "redis")]
pub mod redis;
#[cfg(feature = "s3")]
pub mod s3;
#[cfg(feature = "http-server")]
mod server;

pub use conformance::run_conformance;
pub use faulty::{Fault, FaultySink};

/// A TCP port on 127.0.0.1 that nothing listened on a moment ago: for a
/// server a test starts, or for a connection that must be refused.
///
/// # Panics
///
/// When no port can be bound.
pub fn free_port() -> u16 {
    match std::net::TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()) {
        Ok(a) => a.port(),
        Err(e) => panic!("binding a free port on 127.0.0.1: {e}"),
    }
}

/// Installs rustls' *ring* crypto provider for the test process, as the
/// `backup` and `backupd` binaries do at start (libraries never install
/// one). Idempotent; the S3 and GCS test servers call it.
pub fn install_tls_provider() {
    let _ = rustls::crypto::ring::default_provider().install_default();
}

/// Storage options for tests of cloud backends: multipart uploads from
/// 8 MiB in parts of 5 MiB (the minimum of S3 and GCS), so that moderately
/// sized test objects take the multipart path, and quick retries (10 ms to
/// 200 ms, 10 s in all) so that tests of failures stay fast.
pub fn test_storage_options() -> backup_storage::StorageOptions {
    let mut options = backup_storage::StorageOptions::default();
    options.multipart.threshold = 8 * 1024 * 1024;
    options.multipart.part_size = 5 * 1024 * 1024;
    options.retry.initial_backoff = std::time::Duration::from_millis(10);
    options.retry.max_backoff = std::time::Duration::from_millis(200);
    options.retry.max_elapsed = std::time::Duration::from_secs(10);
    options
}

/// The path of the Python tool `name` that `scripts/test.sh` installs into
/// the repository's `.venv`: the environment variable `var` when set
/// (which must name a file), else `.venv/bin/NAME`, else `NAME` on
/// `PATH`.
///
/// # Panics
///
/// When it cannot be found, with `missing` (which says how to install it).
#[cfg(any(feature = "mongo", feature = "moto"))]
pub(crate) fn venv_tool(var: &str, name: &str, missing: &str) -> std::path::PathBuf {
    use std::path::PathBuf;
    if let Some(p) = std::env::var_os(var) {
        let p = PathBuf::from(p);
        assert!(
            p.is_file(),
            "{var}={} does not exist; {missing}",
            p.display()
        );
        return p;
    }
    let venv = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../.venv/bin")
        .join(name);
    if venv.is_file() {
        return venv;
    }
    for dir in std::env::split_paths(&std::env::var_os("PATH").unwrap_or_default()) {
        if dir.join(name).is_file() {
            return dir.join(name);
        }
    }
    panic!("{missing}");
}
