//! How much the proxy takes on: the caps on sessions (per account, and for the
//! whole process what the open-file limit allows), the accept loops' backoff
//! when the kernel refuses a connection, and log lines rate-limited to one per
//! interval so that a flood cannot flood the log too.
//!
//! Owns: counting sessions and unauthenticated ones ([`Load`], [`Ticket`]).
//! Must not: block or sleep while a cap is reached (a refused connection is
//! answered at once and closed), or let the proxy use the file descriptors the
//! daemon's token socket needs ([`FD_RESERVE`]).

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

/// Sessions an account's listeners serve at once when the config does not say.
pub const DEFAULT_MAX_SESSIONS: usize = 2000;
/// Of those, not yet logged in, when the config does not say: a quarter, so
/// idle or guessing connections leave room for logged-in ones.
pub const DEFAULT_MAX_UNAUTHENTICATED: usize = 500;
/// File descriptors a session may hold: the client's and the server's.
pub const FDS_PER_SESSION: u64 = 2;
/// File descriptors kept for everything else: the token socket and its
/// clients, the store, the log, DNS, the listeners themselves, and the one a
/// refused connection holds for a moment.
pub const FD_RESERVE: u64 = 64;
/// Least time between two log lines about the same condition.
pub const LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Longest pause of an accept loop after errors in a row.
const MAX_ACCEPT_PAUSE: Duration = Duration::from_secs(1);

/// Sessions the open-file limit `nofile` leaves room for.
pub fn sessions_for_fds(nofile: u64) -> usize {
    (nofile.saturating_sub(FD_RESERVE) / FDS_PER_SESSION) as usize
}

/// The process's soft open-file limit.
pub fn nofile() -> u64 {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes the struct we pass and nothing else.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return 1024;
    }
    lim.rlim_cur
}

/// Sessions and unauthenticated sessions of one cap, and their limits.
#[derive(Debug)]
pub struct Load {
    max: usize,
    max_unauthenticated: usize,
    sessions: AtomicUsize,
    unauthenticated: AtomicUsize,
}

impl Load {
    /// A cap of `max` sessions, `max_unauthenticated` of them before login.
    pub fn new(max: usize, max_unauthenticated: usize) -> Arc<Load> {
        Arc::new(Load {
            max,
            max_unauthenticated: max_unauthenticated.min(max),
            sessions: AtomicUsize::new(0),
            unauthenticated: AtomicUsize::new(0),
        })
    }

    /// The limits: (sessions, unauthenticated).
    pub fn limits(&self) -> (usize, usize) {
        (self.max, self.max_unauthenticated)
    }

    /// Sessions now.
    pub fn sessions(&self) -> usize {
        self.sessions.load(Ordering::Acquire)
    }

    /// Take a place, if one is free.
    fn take(counter: &AtomicUsize, max: usize) -> bool {
        counter
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                (n < max).then_some(n + 1)
            })
            .is_ok()
    }
}

/// Why a connection was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Full {
    /// The process has no file descriptors to spare.
    Process,
    /// The account's `max_sessions`.
    Sessions,
    /// The account's `max_unauthenticated`.
    Unauthenticated,
}

/// A new connection's places in every cap it counts against (the process's,
/// then the account's), given back when dropped; [`Ticket::logged_in`] gives
/// back the unauthenticated place early.
#[derive(Debug)]
pub struct Ticket {
    loads: Vec<Arc<Load>>,
    unauthenticated: bool,
}

impl Ticket {
    /// Places in all of `loads`, or which one is full.
    pub fn admit(loads: &[Arc<Load>]) -> Result<Ticket, Full> {
        let mut t = Ticket {
            loads: Vec::with_capacity(loads.len()),
            unauthenticated: true,
        };
        for (i, l) in loads.iter().enumerate() {
            if !Load::take(&l.sessions, l.max) {
                return Err(if i == 0 {
                    Full::Process
                } else {
                    Full::Sessions
                });
            }
            if !Load::take(&l.unauthenticated, l.max_unauthenticated) {
                l.sessions.fetch_sub(1, Ordering::AcqRel);
                return Err(if i == 0 {
                    Full::Process
                } else {
                    Full::Unauthenticated
                });
            }
            // Dropping `t` on a later refusal gives these back.
            t.loads.push(l.clone());
        }
        Ok(t)
    }

    /// The client has logged in: it no longer counts as unauthenticated.
    pub fn logged_in(&mut self) {
        if std::mem::take(&mut self.unauthenticated) {
            for l in &self.loads {
                l.unauthenticated.fetch_sub(1, Ordering::AcqRel);
            }
        }
    }
}

impl Drop for Ticket {
    fn drop(&mut self) {
        self.logged_in();
        for l in &self.loads {
            l.sessions.fetch_sub(1, Ordering::AcqRel);
        }
    }
}

/// At most one log line per [`LOG_INTERVAL`] about one condition, saying how
/// many were not logged since.
#[derive(Debug, Default)]
pub struct Every {
    last: Option<Instant>,
    suppressed: u64,
}

impl Every {
    /// `Some(n)` when a line is due (`n` occurrences went unlogged since the
    /// last one), `None` when this one is to be counted only.
    pub fn due(&mut self) -> Option<u64> {
        let now = Instant::now();
        match self.last {
            Some(t) if now.duration_since(t) < LOG_INTERVAL => {
                self.suppressed += 1;
                None
            }
            _ => {
                self.last = Some(now);
                Some(std::mem::take(&mut self.suppressed))
            }
        }
    }
}

/// ", and N more since" for a rate-limited log line.
pub fn more(n: u64) -> String {
    if n == 0 {
        String::new()
    } else {
        format!(" ({n} more in the last {} s)", LOG_INTERVAL.as_secs())
    }
}

/// An accept loop's answer to errors: out of file descriptors, the kernel
/// refuses every accept at once, so the loop pauses (doubling up to
/// [`MAX_ACCEPT_PAUSE`]) instead of spinning, and says so once per interval.
#[derive(Debug)]
pub struct AcceptBackoff {
    what: String,
    pause: Duration,
    log: Every,
}

impl AcceptBackoff {
    /// For the listener named `what` in the log.
    pub fn new(what: String) -> AcceptBackoff {
        AcceptBackoff {
            what,
            pause: Duration::ZERO,
            log: Every::default(),
        }
    }

    /// The pause before the next accept after the error `e` (logged once per interval).
    pub fn failed(&mut self, e: &io::Error) -> Duration {
        self.pause = (self.pause * 2).clamp(Duration::from_millis(10), MAX_ACCEPT_PAUSE);
        if let Some(n) = self.log.due() {
            log::warn!(
                "{}: cannot accept connections: {e}; pausing up to {} ms{}",
                self.what,
                MAX_ACCEPT_PAUSE.as_millis(),
                more(n)
            );
        }
        self.pause
    }

    /// A connection was accepted: the next error starts with a short pause.
    pub fn succeeded(&mut self) {
        self.pause = Duration::ZERO;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unauthenticated_connections_cannot_take_every_place() {
        let process = Load::new(10, 10);
        let account = Load::new(4, 2);
        let loads = [process.clone(), account.clone()];
        let mut a = Ticket::admit(&loads).unwrap();
        let b = Ticket::admit(&loads).unwrap();
        assert_eq!(
            Ticket::admit(&loads).unwrap_err(),
            Full::Unauthenticated,
            "a third idle one"
        );
        a.logged_in();
        let c = Ticket::admit(&loads).unwrap();
        let mut d = Ticket::admit(&[process.clone(), account.clone()]);
        assert!(d.is_err(), "two unauthenticated again");
        drop(b);
        d = Ticket::admit(&loads);
        let mut d = d.unwrap();
        d.logged_in();
        let _e = Ticket::admit(&loads).unwrap();
        assert_eq!(Ticket::admit(&loads).unwrap_err(), Full::Sessions);
        assert_eq!(process.sessions(), 4);
        drop((a, c, d, _e));
        assert_eq!((process.sessions(), account.sessions()), (0, 0));
        assert_eq!(account.unauthenticated.load(Ordering::Acquire), 0);
    }

    #[test]
    fn the_process_cap_comes_from_the_open_file_limit() {
        assert_eq!(sessions_for_fds(256), 96);
        assert_eq!(sessions_for_fds(10), 0);
        let process = Load::new(sessions_for_fds(66), sessions_for_fds(66));
        let t = Ticket::admit(std::slice::from_ref(&process)).unwrap();
        assert_eq!(Ticket::admit(&[process]).unwrap_err(), Full::Process);
        drop(t);
    }

    #[test]
    fn accept_errors_pause_longer_and_log_once_per_interval() {
        let mut b = AcceptBackoff::new("test".into());
        let e = io::Error::from_raw_os_error(libc::EMFILE);
        let pauses: Vec<Duration> = (0..10).map(|_| b.failed(&e)).collect();
        assert_eq!(pauses[0], Duration::from_millis(10));
        assert!(pauses.windows(2).all(|w| w[1] >= w[0]));
        assert_eq!(*pauses.last().unwrap(), MAX_ACCEPT_PAUSE);
        assert_eq!(b.log.suppressed, 9, "one line for ten errors");
        b.succeeded();
        assert_eq!(b.failed(&e), Duration::from_millis(10));
    }
}
