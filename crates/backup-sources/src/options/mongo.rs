//! Options of a MongoDB source.

/// Options of a MongoDB backup.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct MongoOptions {
    /// Also back up the users (with password hashes) and user-defined
    /// roles of the backed-up databases, and of `admin` for a whole
    /// deployment.
    pub users: bool,
}
