//! A precise wakeup for the open-loop schedule: a Linux `timerfd` armed
//! at the next due time and registered with the loop's `Poll`.
//!
//! `epoll_wait` takes its timeout in whole milliseconds, so a loop that
//! only uses the poll timeout wakes up to a millisecond after a message
//! was due, and with latency measured from the due time that is a
//! millisecond of error the generator itself adds. A timerfd fires with
//! the kernel's high-resolution timers instead. Elsewhere the loop falls
//! back to the poll timeout (see `Loop::poll_timeout`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Interest, Registry, Token};

/// A one-shot timer that wakes the poll through its token.
#[derive(Debug)]
pub struct Timer {
    fd: OwnedFd,
    /// The deadline the timer is set to, so re-arming for the same one
    /// costs no syscall.
    armed: Option<Instant>,
}

impl Timer {
    /// Creates a disarmed timer and registers it under `token`.
    ///
    /// # Errors
    ///
    /// What `timerfd_create` or the registration says (out of fds).
    pub fn new(registry: &Registry, token: Token) -> io::Result<Timer> {
        // SAFETY: plain syscall; the result is checked before use.
        let raw = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a new descriptor that nothing else owns.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        registry.register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)?;
        Ok(Timer { fd, armed: None })
    }

    /// Sets the timer to fire at `at` (a no-op if already set to it, or if
    /// `at` is not in the future: the loop handles that without waiting).
    ///
    /// # Errors
    ///
    /// What `timerfd_settime` says (should not happen with a valid fd).
    pub fn arm(&mut self, at: Instant, now: Instant) -> io::Result<()> {
        if self.armed == Some(at) {
            return Ok(());
        }
        let wait = at.saturating_duration_since(now);
        if wait.is_zero() {
            return Ok(());
        }
        self.set(wait)?;
        self.armed = Some(at);
        Ok(())
    }

    /// Consumes the expiry so the next one raises a new edge.
    pub fn on_fire(&mut self) {
        let mut expirations = [0u8; 8];
        // SAFETY: reads at most 8 bytes into a buffer of 8.
        // WouldBlock (a spurious event) and errors are both harmless here:
        // the next `arm` sets a fresh deadline.
        let _ = unsafe { libc::read(self.fd.as_raw_fd(), expirations.as_mut_ptr().cast(), 8) };
        self.armed = None;
    }

    fn set(&self, wait: Duration) -> io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: libc::time_t::try_from(wait.as_secs()).unwrap_or(libc::time_t::MAX),
                tv_nsec: libc::c_long::from(wait.subsec_nanos() as i32),
            },
        };
        // SAFETY: a valid timerfd and a valid itimerspec; no old value wanted.
        let rc =
            unsafe { libc::timerfd_settime(self.fd.as_raw_fd(), 0, &spec, std::ptr::null_mut()) };
        if rc < 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use mio::{Events, Poll};

    #[test]
    fn fires_at_its_deadline_and_not_before() {
        let mut poll = Poll::new().unwrap();
        let mut timer = Timer::new(poll.registry(), Token(1)).unwrap();
        let mut events = Events::with_capacity(4);
        let start = Instant::now();
        timer
            .arm(start + Duration::from_micros(1500), start)
            .unwrap();
        // Generous bound for a loaded machine; the point is that it fires.
        let deadline = start + Duration::from_secs(5);
        loop {
            poll.poll(&mut events, Some(Duration::from_secs(5)))
                .unwrap();
            if events.iter().any(|e| e.token() == Token(1)) {
                break;
            }
            assert!(Instant::now() < deadline, "timer never fired");
        }
        assert!(start.elapsed() >= Duration::from_micros(1500));
        timer.on_fire();
    }
}
