//! What a node knows about its database being down, so fresh tokens in memory
//! are served at once during an outage instead of after the pool's acquire
//! timeout on every request.
//!
//! Owns: the "database suspect" window (opened by a failed lookup, closed by
//! an answered one) and its probes: while the window is open, requests whose
//! token is in memory skip the database; when it lapses, one request at a time
//! asks the database again. Must not: decide anything for tokens that are not
//! in memory (those always ask the database), or cost more than one atomic
//! load while the database is up.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// How long a failed lookup makes the database suspect.
const SUSPECT: Duration = Duration::from_secs(5);

/// The node's view of its database.
pub struct Outage {
    base: Instant,
    /// Milliseconds after `base` until which the database is suspect; 0: up.
    until: AtomicU64,
    /// A probe in flight since (one at a time; a lost one lapses after SUSPECT).
    probe: Mutex<Option<Instant>>,
}

impl Default for Outage {
    fn default() -> Outage {
        Outage {
            base: Instant::now(),
            until: AtomicU64::new(0),
            probe: Mutex::new(None),
        }
    }
}

impl Outage {
    fn now(&self) -> u64 {
        self.base.elapsed().as_millis() as u64 + 1
    }

    /// Whether to skip the database for a request that memory can answer.
    /// After the window lapses this returns false to one caller at a time
    /// (the probe), true to the rest.
    pub fn suspect(&self) -> bool {
        let until = self.until.load(Ordering::Relaxed);
        if until == 0 {
            return false;
        }
        if self.now() < until {
            return true;
        }
        let mut probe = self.probe.lock().unwrap();
        match *probe {
            Some(t) if t.elapsed() < SUSPECT => true,
            _ => {
                *probe = Some(Instant::now());
                false
            }
        }
    }

    /// A lookup's outcome: `up` when the database answered.
    pub fn answered(&self, up: bool) {
        if up {
            if self.until.load(Ordering::Relaxed) != 0 {
                self.until.store(0, Ordering::Relaxed);
                *self.probe.lock().unwrap() = None;
                log::info!("the database answers again");
            }
        } else {
            if self.until.load(Ordering::Relaxed) == 0 {
                log::warn!("the database is down: serving fresh tokens from memory meanwhile");
            }
            self.until
                .store(self.now() + SUSPECT.as_millis() as u64, Ordering::Relaxed);
            *self.probe.lock().unwrap() = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failure_opens_a_window_and_a_lapsed_one_lets_one_probe_through() {
        let o = Outage::default();
        assert!(!o.suspect(), "up");
        o.answered(false);
        assert!(o.suspect(), "just failed");
        o.until.store(1, Ordering::Relaxed); // the window lapsed
        assert!(!o.suspect(), "the probe");
        assert!(o.suspect(), "the others while it runs");
        o.answered(true);
        assert!(!o.suspect(), "up again");
    }
}
