//! End-to-end tests of the `backup` command against real storage servers.
//!
//! Compiled as an integration test of `backup-cli` (so `CARGO_BIN_EXE_backup`
//! is the freshly built binary); each test makes its own repository and
//! stops every server it starts.
#![allow(
    unreachable_pub,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::missing_panics_doc,
    clippy::cast_possible_truncation,
    clippy::items_after_statements
)]

mod append_only;
mod bad_input;
mod browse;
mod cloud;
mod cold;
mod copy_pitr;
mod corruption;
mod crash;
mod crash_backups;
mod crash_capture;
mod crash_daemon;
mod crash_points;
mod daemon;
mod dedup;
mod drill;
mod drill_daemon;
mod dump;
mod dump_at;
mod dump_items;
mod file_fidelity;
mod file_restore;
mod file_selection;
mod format_reader;
mod full_disk;
mod keys;
mod kms;
mod listing;
mod maintenance;
mod mongo;
mod mongo_pitr;
mod mongo_pitr_writer;
mod mount;
mod mtls;
mod object_lock;
mod paged_index;
mod postgres;
mod postgres_physical;
mod postgres_pitr;
mod r17;
mod r28;
mod r35;
mod redis;
mod redis_pitr;
mod restore_request;
mod restore_target;
mod rewrite;
mod roles;
mod roundtrip;
mod soak;
mod util;
mod write_only;
