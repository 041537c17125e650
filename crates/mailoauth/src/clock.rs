//! Wall-clock time as unix seconds.
//!
//! Owns: the one place that reads the system clock for token lifetimes. Must not:
//! depend on anything else in the crate (everything may need the time).

use std::time::{SystemTime, UNIX_EPOCH};

/// Current unix time in seconds (0 if the clock is before 1970).
pub fn now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}
