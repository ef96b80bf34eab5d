//! Continuous WAL capture into the repository, and WAL for recovery.
//!
//! The WAL of a cluster is one capture stream (`backup_core::capture`,
//! kind `postgres-wal`, identity the system identifier). A piece is a
//! range of WAL bytes on one timeline, never across a segment boundary;
//! positions are 24 hex digits: the timeline (8) and the LSN (16). Timeline
//! history files are pieces of a second stream (`postgres-timeline-history`)
//! whose positions are the timeline (8 hex digits) to the next.
//!
//! - **Streaming** ([`receive`](fn@receive)): a physical replication slot, then
//!   `START_REPLICATION` from the end of what is stored; received WAL is
//!   stored at least every `flush_interval` and every `max_piece` bytes,
//!   and at each segment end, and only then confirmed to the server as
//!   flushed, so the slot keeps what is not stored yet.
//! - **Archiving** ([`push`](fn@push)): `archive_command = 'backup wal push %p'`
//!   stores a whole segment (or history file); pushing the same bytes again
//!   succeeds, other bytes for a stored segment are refused.
//! - **Recovery** ([`fetch`](fn@fetch)): `restore_command = 'backup wal fetch %f %p'`
//!   assembles a segment from the pieces that cover it (zeros after the
//!   last piece of an unfinished segment, as `pg_receivewal` leaves a
//!   partial segment), or a history file.
//!
//! Where it lives: `stored` (capture kinds, streams, positions, segment
//! names, history files, [`WalMap`]); `receive` and the replication
//! messages it exchanges (`protocol`); `push`; `fetch`, the segments it
//! assembles (`segment`) and fetches ahead (`prefetch`).

mod fetch;
mod prefetch;
mod protocol;
mod push;
mod receive;
mod segment;
mod stored;

pub use fetch::fetch;
pub use prefetch::{
    being_fetched, fetch_ahead, fetch_failed, note_asked, note_fetch_failed, prefetch_dir,
    prestage, recovery_over, take_prefetched, PrefetchRun,
};
pub use push::push;
pub use receive::{receive, ReceiveOptions};
pub use stored::{WalMap, GAP_KIND, HISTORY_KIND, WAL_KIND};

pub(crate) use stored::{gap_stream, history_entries, parse_position, streams};
#[cfg(feature = "fuzzing")]
pub(crate) use stored::{history_start, parse_wal_name};
