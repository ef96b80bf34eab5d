//! Stand-ins when no HTTP-based cloud backend is compiled in.

use std::error::Error as StdError;

/// Without a cloud backend there are no HTTP errors.
pub(crate) fn is_transient_http_error(_err: &(dyn StdError + 'static)) -> bool {
    false
}
