//! The engine of the backup system: repository format, pipeline and traits.
#![deny(missing_docs)]

pub mod crypto;
pub mod error;
pub mod id;
pub mod sink;

pub use error::{Error, Result};
pub use id::Id;
pub use sink::{FileKind, MemorySink, ObjectInfo, PutMode, Sink, SinkExt};
