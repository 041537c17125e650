//! The brake on password guessing. Every local client comes from 127.0.0.1, so
//! the address says nothing: failures are counted by the user name the client
//! claimed (the account's user, or any other name, which shares one count so
//! that inventing names gains nothing and costs no memory) and by connection.
//!
//! After [`FREE_FAILURES`] failures for a user, each further *failure* for that
//! user is answered in its own time slot, [`STEP`] after the previous one and
//! doubling to [`MAX_STEP`], whichever connection it comes from: however many
//! connections guess in parallel, wrong answers come out one slot at a time. A
//! right password is checked and answered at once, never queued. Counts are
//! forgotten after [`FORGET_AFTER`] without a failure.
//!
//! Must not: delay a correct login, log a password, or keep per-name state for
//! names other than the account's user.

use std::sync::Mutex;
use std::time::Duration;

use tokio::time::Instant;

use super::limits::{Every, more};

/// Failures for a user answered without a slot (typos happen).
pub const FREE_FAILURES: u32 = 3;
/// Slot width after the free failures: at most 4 wrong answers a second.
pub const STEP: Duration = Duration::from_millis(250);
/// Widest slot: one wrong answer every 4 s under a long attack.
pub const MAX_STEP: Duration = Duration::from_secs(4);
/// Failures on one connection before it is closed.
pub const ATTEMPTS_PER_CONNECTION: u32 = 3;
/// Every failure waits at least this long per failure already seen on its
/// connection (a client retrying on one connection slows itself down).
pub const PER_CONNECTION: Duration = Duration::from_millis(300);
/// A queued failure answer further away than this is not given: the
/// connection is closed unanswered instead of being held open for it.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// A user's failures are forgotten after this long without one.
pub const FORGET_AFTER: Duration = Duration::from_secs(10 * 60);

/// One user's failures.
#[derive(Debug, Default)]
struct Track {
    failures: u32,
    last: Option<Instant>,
    /// When the last queued failure answer goes out.
    slot: Option<Instant>,
    log: Every,
}

impl Track {
    /// Count a failure at `now`; the time to answer it, `None` for not at all.
    fn failed(&mut self, now: Instant, on_connection: u32) -> Option<Instant> {
        if self
            .last
            .is_some_and(|t| now.duration_since(t) > FORGET_AFTER)
        {
            self.failures = 0;
            self.slot = None;
        }
        self.failures = self.failures.saturating_add(1);
        self.last = Some(now);
        let own = now + PER_CONNECTION * on_connection.max(1);
        if self.failures <= FREE_FAILURES {
            return Some(own);
        }
        let doublings = (self.failures - FREE_FAILURES - 1).min(8);
        let step = (STEP * 2u32.pow(doublings)).min(MAX_STEP);
        let at = self.slot.map_or(now, |s| s.max(now)) + step;
        if at.duration_since(now) > MAX_WAIT {
            return None;
        }
        self.slot = Some(at);
        Some(at.max(own))
    }
}

/// Failure counts of one account's listeners.
#[derive(Debug)]
pub struct Brake {
    /// Whose count is kept by name: the account's user.
    user: String,
    tracks: Mutex<[Track; 2]>,
}

/// What to do with a failed login.
#[derive(Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Answer "wrong" at this instant.
    AnswerAt(Instant),
    /// Close the connection without an answer.
    Close,
}

impl Brake {
    /// A brake for the account whose user is `user`.
    pub fn new(user: &str) -> Brake {
        Brake {
            user: user.to_owned(),
            tracks: Mutex::default(),
        }
    }

    /// A failed login for `claimed`, the `on_connection`-th on its connection;
    /// logged (user and counts, never the password) once per interval per user.
    pub fn failed(&self, claimed: &str, on_connection: u32, session: u64) -> Verdict {
        let known = claimed.eq_ignore_ascii_case(&self.user);
        let mut tracks = self.tracks.lock().unwrap_or_else(|e| e.into_inner());
        let t = &mut tracks[usize::from(!known)];
        let at = t.failed(Instant::now(), on_connection);
        if let Some(n) = t.log.due() {
            let who = if known {
                format!("`{}`", self.user)
            } else {
                "another user name".to_owned()
            };
            log::warn!(
                "proxy #{session}: wrong password for {who} ({} failures in a row{}){}",
                t.failures,
                if t.failures > FREE_FAILURES {
                    "; failures are answered slowly"
                } else {
                    ""
                },
                more(n)
            );
        }
        match at {
            Some(at) => Verdict::AnswerAt(at),
            None => Verdict::Close,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parallel_failures_are_answered_one_slot_at_a_time() {
        let mut t = Track::default();
        let start = Instant::now();
        // 200 connections fail at once, each for the first time.
        let mut at: Vec<Instant> = (0..200).filter_map(|_| t.failed(start, 1)).collect();
        at.sort();
        for s in 0..40 {
            let lo = start + Duration::from_secs(s);
            let n = at
                .iter()
                .filter(|t| **t >= lo && **t < lo + Duration::from_secs(1))
                .count();
            assert!(n <= 5, "{n} answers in second {s}");
        }
        assert!(
            at.len() < 20,
            "the rest are closed unanswered: {}",
            at.len()
        );
        // A quiet while later, the count starts over.
        let later = start + FORGET_AFTER + MAX_WAIT + Duration::from_secs(1);
        assert_eq!(t.failed(later, 1), Some(later + PER_CONNECTION));
    }

    #[test]
    fn other_names_share_one_count_apart_from_the_users() {
        let b = Brake::new("alice@example.test");
        for _ in 0..50 {
            b.failed("ALICE@example.test", 1, 1);
        }
        let before = Instant::now();
        let Verdict::AnswerAt(at) = b.failed("mallory", 2, 2) else {
            panic!("closed")
        };
        assert!(at <= Instant::now() + 2 * PER_CONNECTION && at >= before + 2 * PER_CONNECTION);
        assert_eq!(b.failed("alice@example.test", 1, 1), Verdict::Close);
    }
}
