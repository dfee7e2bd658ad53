//! Graceful shutdown: the signal source, the stop handle, and the drain's
//! timers. It decides *when* each step of the drain happens and returns
//! it as a [`DrainStep`]; the loop carries the step out on the components.
//!
//! Sequence: stop accepting (the listeners close, so new connects are
//! refused) and stop serving UDP. Connections at rest (nothing owed,
//! nothing unacknowledged, no input waiting) get FIN and close at once, so
//! an idle server stops in milliseconds. The others are served as usual,
//! reading and answering, so a client that half-closes gets its whole echo
//! then FIN; every 100 ms those that came to rest are closed. At the
//! deadline the rest are cut: one last flush, FIN, and a lingering close
//! (input read and dropped until the peer closes, at most a second), since
//! closing a socket with unread input makes the kernel reset it and throw
//! away the echo still on its way. A second signal ends it all at once
//! (but the same signal twice within 0.1 s, as `timeout(1)` sends it, is
//! one request).

use std::io;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info};
use mio::{Registry, Waker};
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use super::config::{ServerConfig, ServerError};
use super::token;

/// How often a drain looks for connections that have come to rest.
const REST_CHECK_EVERY: Duration = Duration::from_millis(100);

/// How long connections cut by the deadline may linger (FIN sent, input
/// dropped) for their peers to close, before the last close.
const FINAL_LINGER: Duration = Duration::from_secs(1);

/// Stops a running server from another thread.
#[derive(Debug, Clone)]
pub struct ServerHandle {
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
}

impl ServerHandle {
    /// Asks the loop to shut down gracefully, as SIGTERM would.
    ///
    /// # Errors
    ///
    /// The waker's write failed (the loop is most likely gone already).
    pub fn shutdown(&self) -> io::Result<()> {
        self.stop.store(true, Ordering::SeqCst);
        self.waker.wake()
    }
}

/// What the loop must do next to shut down.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum DrainStep {
    /// Close the listeners, UDP sockets and metrics, and the connections
    /// at rest.
    Begin,
    /// Close the connections that came to rest since the last look.
    CloseAtRest,
    /// The deadline: cut the busy connections, which may linger this long.
    Cut {
        /// How long they may linger.
        linger: Duration,
    },
    /// The linger is over: close everything left.
    CloseAll,
}

/// The drain's timers, once it has begun.
#[derive(Debug)]
struct Drain {
    /// When the drain began: a request again within [`REPEAT_WINDOW`] of
    /// it is the same one.
    begun: Instant,
    /// When the connections still busy are cut.
    deadline: Instant,
    /// Set once they are cut: when the lingering ones are closed regardless.
    linger_until: Option<Instant>,
    /// The next look for connections at rest.
    next_check: Instant,
}

/// A stop request this soon after the first is the same request:
/// `timeout(1)` sends its signal to the process and then to its whole
/// process group, microseconds apart; a person's second Ctrl-C comes
/// later than this.
const REPEAT_WINDOW: Duration = Duration::from_millis(100);

/// Signals, the stop handle, and the drain once it has begun.
pub(crate) struct Shutdown {
    signals: Option<Signals>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    /// `--shutdown-timeout`.
    timeout: Duration,
    /// Why the drain began, for the log.
    reason: &'static str,
    drain: Option<Drain>,
}

impl Shutdown {
    /// Registers the waker, and SIGINT/SIGTERM when `config` asks for it.
    pub fn new(config: &ServerConfig, registry: &Registry) -> Result<Shutdown, ServerError> {
        let waker =
            Waker::new(registry, token::WAKER).map_err(|e| ServerError::Setup("waker", e))?;
        let signals = if config.handle_signals {
            Some(register_signals(registry).map_err(|e| ServerError::Setup("signals", e))?)
        } else {
            None
        };
        Ok(Shutdown {
            signals,
            waker: Arc::new(waker),
            stop: Arc::new(AtomicBool::new(false)),
            timeout: config.shutdown_timeout,
            reason: "",
            drain: None,
        })
    }

    /// A handle that stops the loop from another thread.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            waker: Arc::clone(&self.waker),
            stop: Arc::clone(&self.stop),
        }
    }

    /// True once the drain has begun.
    pub fn is_draining(&self) -> bool {
        self.drain.is_some()
    }

    /// Why the drain began.
    pub fn reason(&self) -> &'static str {
        self.reason
    }

    /// `--shutdown-timeout`.
    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// The drain's next timer.
    pub fn next_deadline(&self) -> Option<Instant> {
        // Once cut, only the end of the linger is left: the rest checks
        // are over (a stale one would make the poll spin).
        self.drain
            .as_ref()
            .map(|d| d.linger_until.unwrap_or(d.next_check.min(d.deadline)))
    }

    /// The signal source is readable: each SIGINT or SIGTERM begins the
    /// drain, or ends it at once when it had begun.
    pub fn on_signal(&mut self, now: Instant) -> Vec<DrainStep> {
        let mut received = Vec::new();
        if let Some(signals) = &mut self.signals {
            received.extend(signals.pending());
        }
        received
            .into_iter()
            .flat_map(|sig| self.begin(signal_name(sig), now))
            .collect()
    }

    /// The waker fired: a [`ServerHandle`] asked to stop.
    pub fn on_wake(&mut self, now: Instant) -> Vec<DrainStep> {
        if self.stop.load(Ordering::SeqCst) {
            self.begin("stop requested", now)
        } else {
            Vec::new()
        }
    }

    /// Begins the drain, or, if one is under way, ends it now.
    fn begin(&mut self, why: &'static str, now: Instant) -> Vec<DrainStep> {
        if let Some(drain) = &mut self.drain {
            if now.saturating_duration_since(drain.begun) < REPEAT_WINDOW {
                debug!("{why} again within 0.1 s: the same request, draining on");
                return Vec::new();
            }
            info!("{why} again: closing remaining connections now");
            drain.deadline = now;
            drain.linger_until = Some(now);
            return vec![
                DrainStep::Cut {
                    linger: Duration::ZERO,
                },
                DrainStep::CloseAll,
            ];
        }
        self.reason = why;
        self.drain = Some(Drain {
            begun: now,
            deadline: now + self.timeout,
            linger_until: None,
            next_check: now + REST_CHECK_EVERY,
        });
        vec![DrainStep::Begin]
    }

    /// The drain's timers: look for connections at rest, cut at the
    /// deadline, close everything when the linger is over.
    pub fn on_timer(&mut self, now: Instant) -> Option<DrainStep> {
        let drain = self.drain.as_mut()?;
        if let Some(until) = drain.linger_until {
            return (now >= until).then_some(DrainStep::CloseAll);
        }
        if now >= drain.deadline {
            drain.linger_until = Some(now + FINAL_LINGER);
            return Some(DrainStep::Cut {
                linger: FINAL_LINGER,
            });
        }
        if now >= drain.next_check {
            drain.next_check = now + REST_CHECK_EVERY;
            return Some(DrainStep::CloseAtRest);
        }
        None
    }
}

/// Registers SIGINT and SIGTERM with `registry` under `token::SIGNAL`.
fn register_signals(registry: &Registry) -> io::Result<Signals> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    registry.register(&mut signals, token::SIGNAL, mio::Interest::READABLE)?;
    Ok(signals)
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shutdown(timeout: Duration) -> (mio::Poll, Shutdown) {
        let poll = mio::Poll::new().expect("poll");
        let config = ServerConfig {
            shutdown_timeout: timeout,
            ..ServerConfig::default()
        };
        let s = Shutdown::new(&config, poll.registry()).expect("shutdown");
        (poll, s)
    }

    #[test]
    fn the_drain_looks_for_rest_then_cuts_at_the_deadline_then_closes_after_the_linger() {
        let (_poll, mut s) = shutdown(Duration::from_secs(1));
        let t0 = Instant::now();
        assert_eq!(s.on_timer(t0), None, "nothing before a stop");
        s.stop.store(true, Ordering::SeqCst);
        assert_eq!(s.on_wake(t0), [DrainStep::Begin]);
        assert_eq!(s.on_timer(t0 + Duration::from_millis(50)), None);
        assert_eq!(
            s.on_timer(t0 + Duration::from_millis(150)),
            Some(DrainStep::CloseAtRest)
        );
        let deadline = t0 + Duration::from_secs(1);
        assert_eq!(
            s.on_timer(deadline),
            Some(DrainStep::Cut {
                linger: FINAL_LINGER
            })
        );
        assert_eq!(s.next_deadline(), Some(deadline + FINAL_LINGER));
        assert_eq!(
            s.on_timer(deadline + FINAL_LINGER),
            Some(DrainStep::CloseAll)
        );
    }

    #[test]
    fn a_second_stop_cuts_and_closes_at_once() {
        let (_poll, mut s) = shutdown(Duration::from_secs(30));
        let t0 = Instant::now();
        s.stop.store(true, Ordering::SeqCst);
        assert_eq!(s.on_wake(t0), [DrainStep::Begin]);
        // The same signal twice at once (timeout(1)) is one request.
        assert_eq!(s.on_wake(t0 + Duration::from_millis(1)), []);
        assert_eq!(
            s.on_wake(t0 + Duration::from_millis(200)),
            [
                DrainStep::Cut {
                    linger: Duration::ZERO
                },
                DrainStep::CloseAll
            ]
        );
    }
}
