//! Progress reporting, injected so that the core never prints.

/// Receives progress of a long operation. All methods have no-op defaults
/// and may be called from several threads at once.
pub trait Progress: Send + Sync {
    /// The total number of bytes expected, when known.
    fn set_total(&self, _bytes: u64) {}
    /// `n` more bytes were processed.
    fn add_bytes(&self, _n: u64) {}
    /// One more item (file, object, table) was processed.
    fn add_item(&self) {}
    /// A short description of the current phase.
    fn set_phase(&self, _phase: &str) {}
    /// The operation ended.
    fn finish(&self) {}
}

/// Progress that is discarded.
#[derive(Debug, Default, Clone, Copy)]
pub struct NoProgress;

impl Progress for NoProgress {}
