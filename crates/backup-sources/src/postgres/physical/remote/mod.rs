//! Remote base backups: `BASE_BACKUP` over a replication connection, the
//! tar stream taken apart as it arrives.
//!
//! One thread owns the connection. It reads the server's `CopyData`
//! messages, cuts the tar archives into members and hands the walk its
//! items through a channel: directories as they come, files as leaves
//! whose content is fed to the reader the archiver starts for them
//! (bounded, so memory stays small whatever the file size). The stream is
//! a depth-first walk of each tablespace, except that PostgreSQL sends
//! `global/pg_control` after everything else and the WAL at the very end;
//! so the subtree of `global` (small: shared catalogs) is kept aside, in a
//! temporary file, and emitted at the end of the data directory, and the
//! `pg_wal` directory is opened when its first segment arrives. A member
//! that arrives after its directory was closed in any other way is an
//! error, not a silent misplacement.
//!
//! Where it lives: the source and its parent-reuse rule (`source`); the
//! start of `BASE_BACKUP` (`start`); the stream thread that takes the tar
//! archives apart (`stream`) and the readers it feeds (`readers`); and the
//! replication connection's errors explained (`errors`, shared with the
//! WAL receiver and local backups).

mod errors;
mod readers;
mod source;
mod start;
mod stream;

pub(crate) use errors::{clone_wire, connect_error, slot_refused, Purpose};
pub(crate) use source::{reusable, RemoteSource};
