//! What an operation tells or asks the person (or program) running it.

use std::sync::{Arc, Mutex, PoisonError};

use backup_core::progress::{NoProgress, Progress};

use crate::error::{Error, Result};

/// The front-end side of an operation: progress reporting, confirmation of
/// destructive steps, and details for the audit record. Every method has a
/// default for unattended use: no progress, no confirmation given, details
/// dropped.
pub trait Feedback: Send + Sync {
    /// A progress reporter for a phase (`backup`, `restore`, `safety`,
    /// `verify`, ...) counting `noun`s.
    fn progress(&self, phase: &'static str, noun: &'static str) -> Arc<dyn Progress> {
        let _ = (phase, noun);
        Arc::new(NoProgress)
    }

    /// Whether a progress total is wanted (a size scan may run for it).
    fn wants_totals(&self) -> bool {
        false
    }

    /// Asks to go ahead with a destructive step.
    ///
    /// # Errors
    ///
    /// [`Error::Usage`] when the answer is no or nobody can be asked.
    fn confirm(&self, question: &str) -> Result<()> {
        Err(Error::usage(format!(
            "{question} This needs confirmation, which this front-end cannot ask for."
        )))
    }

    /// Notes a detail of the running operation for its audit record.
    fn detail(&self, key: &str, value: serde_json::Value) {
        let _ = (key, value);
    }
}

/// Feedback for unattended runs (the daemon): no progress, no
/// confirmations, details dropped.
#[derive(Debug, Default, Clone, Copy)]
pub struct Unattended;

impl Feedback for Unattended {}

/// Details gathered for an audit record while an operation runs.
#[derive(Debug, Default)]
pub struct AuditDetails {
    map: Mutex<serde_json::Map<String, serde_json::Value>>,
}

impl AuditDetails {
    /// Adds or replaces a detail.
    pub fn insert(&self, key: &str, value: serde_json::Value) {
        self.map
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(key.to_owned(), value);
    }

    /// Takes the details gathered so far.
    pub fn take(&self) -> serde_json::Map<String, serde_json::Value> {
        std::mem::take(&mut *self.map.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// Serialises a value for [`Feedback::detail`].
pub fn json(value: impl serde::Serialize) -> serde_json::Value {
    serde_json::to_value(value).unwrap_or(serde_json::Value::Null)
}
