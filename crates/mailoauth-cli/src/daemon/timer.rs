//! A wall-clock timer for the refresher.
//!
//! Owns: one Linux timerfd on CLOCK_REALTIME with an absolute deadline. Why not
//! tokio's sleep: it counts monotonic time, which stands still during suspend, so
//! a laptop waking after eight hours would sleep on past every deadline. A
//! realtime timer fires at the wall-clock time (at once after a resume that
//! crossed it), and `TFD_TIMER_CANCEL_ON_SET` wakes it when the clock is set.
//! Must not: poll — between deadlines the daemon makes no wake-ups at all.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tokio::io::unix::AsyncFd;

/// Why [`WallTimer::sleep_until`] returned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Wake {
    /// The deadline passed.
    Deadline,
    /// The wall clock was set (a jump, e.g. NTP or a resume): recompute.
    ClockChanged,
}

/// A CLOCK_REALTIME timerfd registered with the tokio reactor.
pub struct WallTimer {
    fd: AsyncFd<OwnedFd>,
}

impl WallTimer {
    /// Create the timer (unarmed).
    pub fn new() -> io::Result<WallTimer> {
        // SAFETY: plain syscall; the returned fd is checked and owned below.
        let raw = unsafe {
            libc::timerfd_create(libc::CLOCK_REALTIME, libc::TFD_NONBLOCK | libc::TFD_CLOEXEC)
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh, valid descriptor nobody else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        // SAFETY: we own `fd` and it lives inside the AsyncFd until both drop together.
        let fd = unsafe { AsyncFd::register_with_interest(fd, tokio::io::Interest::READABLE) }
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(WallTimer { fd })
    }

    /// Sleep until unix time `deadline` (seconds), or until the clock is set.
    pub async fn sleep_until(&self, deadline: i64) -> io::Result<Wake> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            // A zero it_value would disarm the timer: never ask for the epoch.
            it_value: libc::timespec {
                tv_sec: deadline.max(1) as libc::time_t,
                tv_nsec: 0,
            },
        };
        let flags = libc::TFD_TIMER_ABSTIME | libc::TFD_TIMER_CANCEL_ON_SET;
        // SAFETY: valid fd and a fully initialised itimerspec.
        if unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), flags, &spec, std::ptr::null_mut()) }
            < 0
        {
            return Err(io::Error::last_os_error());
        }
        loop {
            let mut guard = self.fd.readable().await?;
            let mut expirations = 0u64;
            // SAFETY: reading 8 bytes into a u64, as timerfd requires.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    (&mut expirations as *mut u64).cast(),
                    std::mem::size_of::<u64>(),
                )
            };
            if n == 8 {
                return Ok(Wake::Deadline);
            }
            let err = io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::ECANCELED) => return Ok(Wake::ClockChanged),
                Some(libc::EAGAIN) => guard.clear_ready(),
                _ => return Err(err),
            }
        }
    }
}
