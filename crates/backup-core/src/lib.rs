//! The engine of the backup system: repository format, pipeline and traits.
#![deny(missing_docs)]

pub mod archiver;
pub mod chunker;
pub mod config;
pub mod crypto;
pub mod error;
pub mod filter;
pub mod id;
pub mod index;
pub mod keys;
pub mod lock;
pub mod pack;
pub mod progress;
pub mod repo;
pub mod restorer;
mod saver;
pub mod sink;
pub mod snapshot;
pub mod source;
pub mod stats;
pub mod target;
pub mod tree;
pub mod util;
pub mod verify;
pub mod walk;

pub use error::{Error, Result};
pub use id::Id;
pub use sink::{FileKind, MemorySink, ObjectInfo, PutMode, Sink, SinkExt};
