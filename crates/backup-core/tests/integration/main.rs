//! Integration tests of the core: the pipeline end to end, repositories
//! damaged on purpose, and compile-time `Send` checks.
#![allow(
    dead_code,
    unreachable_pub,
    clippy::unwrap_used,
    clippy::items_after_statements,
    clippy::type_complexity
)]

mod capture;
mod damaged;
mod pipeline;
mod send_sync;
mod support;
