//! Options of a files source.

/// Options of a files backup: what the walk of the directory leaves out or
/// keeps to, beyond `--exclude` patterns.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FilesOptions {
    /// Do not descend into other file systems mounted below the source
    /// (their mount points are kept, empty).
    pub one_file_system: bool,
    /// Leave out the contents of directories marked as caches by a
    /// `CACHEDIR.TAG` file (the tag file itself is kept).
    pub exclude_caches: bool,
    /// Leave out the contents of directories holding a file of one of
    /// these names (the marker file itself is kept).
    pub exclude_if_present: Vec<String>,
    /// Leave out regular files larger than this many bytes.
    pub exclude_larger_than: Option<u64>,
    /// Files of exclude patterns, one a line (`#` starts a comment).
    pub exclude_files: Vec<std::path::PathBuf>,
    /// Files listing the only paths to back up (relative to the source
    /// directory, or absolute inside it), one a line; a listed directory
    /// brings everything below it.
    pub files_from: Vec<std::path::PathBuf>,
    /// The `files_from` lists separate paths with NUL bytes instead of
    /// newlines (and have no comments).
    pub files_from_nul: bool,
}
