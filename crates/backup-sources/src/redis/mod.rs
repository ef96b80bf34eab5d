//! Redis: backups over the replication protocol or key by key, restores
//! into a live server, and `dump.rdb` export.
//!
//! # URLs
//!
//! `redis://[user:password@]host[:port][/db][?mode=rdb|keys]`, or
//! `rediss://` for TLS (system roots, or `?tls-ca=/path/ca.pem`).
//!
//! # Source modes
//!
//! - **`mode=rdb`** (default): the source connects like a replica (the way
//!   `redis-cli --rdb` does): `REPLCONF capa eof`, `REPLCONF rdb-only 1`
//!   (Redis 7.0+), `PSYNC ? -1`, then reads the RDB the master sends,
//!   either `$<length>` (disk-based) or `$EOF:<mark>` (diskless). The RDB
//!   goes into the snapshot as one stream, `dump.rdb`, while a parser on
//!   another thread reads the same bytes as they flow: it counts keys per
//!   database, checks the CRC64, and fails the backup on a corrupt or
//!   truncated transfer. The capture is one point in time (the fork the
//!   master made for it). Every database is included; `/db` in the URL
//!   narrows what a restore restores by default.
//! - **`mode=keys`**: for servers that refuse replication (managed
//!   services): `SCAN` each database, then `DUMP` and `PEXPIRETIME` (or
//!   `PTTL` before Redis 7) per key, pipelined; `--include`/`--exclude`
//!   key globs and `/db` select. Stored as one stream, `keys.dump`, in the
//!   framing of [`keyfile`]. **Weaker consistency**: each key is read at
//!   its own moment while clients keep writing, so the snapshot is not a
//!   point in time; a key written during the scan may or may not be in
//!   it, and keys deleted between `SCAN` and `DUMP` are counted as
//!   vanished.
//!
//! # Restore
//!
//! [`RedisTarget`] restores into a running server: the RDB is split into
//! per-key `DUMP` payloads (the value's raw encoding copied from the RDB,
//! plus the RDB version and a CRC64) and sent as `RESTORE key ttl payload
//! ABSTTL` in pipelines. Keys whose absolute expiry has passed are skipped
//! and counted. Existing keys are an error unless `--drop`, which flushes
//! the restored databases first (the CLI takes a safety backup before).
//! `--rename 0:3` moves a database; `--include`/`--exclude` select keys;
//! `--dry-run` reads the snapshot, checks for conflicts and reports the
//! plan. Afterwards the key count of every database is compared with the
//! manifest.
//!
//! [`export`] writes a `dump.rdb` that `redis-server` loads at start-up.

pub mod conn;
pub(crate) mod erase;
pub mod export;
pub mod follow;
#[cfg(feature = "fuzzing")]
#[doc(hidden)]
pub mod fuzz;
pub mod glob;
pub mod item;
pub mod keyfile;
mod manifest;
pub mod rdb;
mod records;
mod resp;
mod source;
mod target;
mod transfer;

pub use conn::{Mode, RedisUrl};
pub use follow::{follow, BaseStore, SLICE_TIME, STREAM_KIND};
pub use manifest::{KEYS_STREAM, RDB_STREAM};
pub use source::RedisSource;
pub use target::RedisTarget;
