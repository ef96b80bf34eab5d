//! Local base backups: the data directory read directly, between
//! `pg_backup_start` and `pg_backup_stop` on a connection that stays open.
//!
//! The walk yields the tablespaces, then the data directory without
//! `global` and `pg_wal`; then it waits until every file handed out is
//! read, yields `global` (with `pg_control`, which PostgreSQL's own base
//! backup also copies last), waits again, stops the backup, and yields the
//! `backup_label` and `tablespace_map` that `pg_backup_stop` returned and
//! the WAL segments from the start to the stop, read from `pg_wal` (a
//! temporary replication slot created before the start keeps them). Last
//! comes `backup_manifest`, written from the CRC-32C of every file: read
//! now, or, for a file taken unread from the parent snapshot, from the
//! parent's manifest.
//!
//! What is left out follows PostgreSQL's base backup: temporary files and
//! relations, the contents of `pg_stat_tmp`, `pg_replslot`, `pg_dynshmem`,
//! `pg_notify`, `pg_serial`, `pg_snapshots`, `pg_subtrans`, the forks of
//! unlogged relations other than their init fork, `postmaster.pid`,
//! `postmaster.opts`, relation cache init files and stale labels. The
//! links in `pg_tblspc` are recreated from `tablespace_map` at the first
//! start, as after `BASE_BACKUP`.
//!
//! Each file is read up to the size it had when listed (PostgreSQL's rule:
//! a relation extended meanwhile gets the rest from WAL). A file that
//! shrank is padded with zeros when it is WAL-logged (relations, SLRUs,
//! where replay rewrites it) and fails the backup otherwise. With data
//! checksums on, every page older than the backup's start is checked
//! while reading; a failure is read again once (a page being written can
//! look torn) and then fails the backup with the file and block.
//!
//! Where it lives: the backup in progress and the walk's bookkeeping
//! (`state`); the cluster's identity, settings and tablespaces, and the
//! start's errors (`cluster`); opening the backup and the source's steps
//! (`source`); the walk of the tablespaces, the data directory and
//! `global`, and what is left out by name (`walk`); page deltas against
//! the parent's copies (`deltas`); the stop of the backup, its label, map,
//! WAL and manifest (`stop`); and the readers that check pages and record
//! every file's CRC-32C (`reader`).

mod cluster;
mod deltas;
mod reader;
mod source;
mod state;
mod stop;
mod walk;

pub(crate) use cluster::control_system_identifier;
pub(crate) use state::LocalSource;
