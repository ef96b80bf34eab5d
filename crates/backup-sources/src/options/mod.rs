//! The typed options of each kind of source, one module per kind, and
//! the [`Selection`] every kind reads.
//!
//! They are compiled whatever the crate's features, so that a front-end
//! parses and checks every kind's settings (and says which feature a kind
//! needs) in any build; the registry ([`crate::kind`]) and each kind's
//! implementation import them from here, and nothing here imports back.

pub mod files;
pub mod mongo;
pub mod postgres;
pub mod redis;

pub use files::FilesOptions;
pub use mongo::MongoOptions;
pub use postgres::{Checkpoint, PostgresMode, PostgresOptions};
pub use redis::{RedisMode, RedisOptions};

/// What a source reads: namespaces (databases) to include, patterns to
/// leave out.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Selection {
    /// Include patterns (database namespaces).
    pub includes: Vec<String>,
    /// Exclude patterns.
    pub excludes: Vec<String>,
}
