//! Graceful shutdown: the signal source, and the drain that flushes
//! pending output for a bounded time before everything is closed.
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
//! away the echo still on its way. A second signal ends it all at once.

use std::io;
use std::time::{Duration, Instant};

use log::{info, warn};
use mio::Poll;
use signal_hook::consts::{SIGINT, SIGTERM};
use signal_hook_mio::v1_0::Signals;

use super::conn::{CloseReason, Progress};
use super::{token, Server};

/// Registers SIGINT and SIGTERM with `poll` under `token::SIGNAL`.
///
/// # Errors
///
/// Installing the handlers or registering the pipe failed.
pub fn register_signals(poll: &Poll) -> io::Result<Signals> {
    let mut signals = Signals::new([SIGINT, SIGTERM])?;
    poll.registry()
        .register(&mut signals, token::SIGNAL, mio::Interest::READABLE)?;
    Ok(signals)
}

/// How often a drain looks for connections that have come to rest.
const REST_CHECK_EVERY: Duration = Duration::from_millis(100);

/// How long connections cut by the deadline may linger (FIN sent, input
/// dropped) for their peers to close, before the last close.
const FINAL_LINGER: Duration = Duration::from_secs(1);

/// A shutdown under way.
#[derive(Debug)]
pub struct Drain {
    /// When the connections still busy are cut.
    deadline: Instant,
    /// Set once they are cut: when the lingering ones are closed regardless.
    linger_until: Option<Instant>,
    /// The next look for connections at rest.
    next_check: Instant,
}

impl Drain {
    /// The drain's next timer.
    pub fn next_at(&self) -> Instant {
        self.next_check
            .min(self.linger_until.unwrap_or(self.deadline))
    }
}

fn signal_name(sig: i32) -> &'static str {
    match sig {
        SIGINT => "SIGINT",
        SIGTERM => "SIGTERM",
        _ => "signal",
    }
}

impl Server {
    pub(super) fn on_signal(&mut self) {
        let mut received = Vec::new();
        if let Some(signals) = &mut self.signals {
            received.extend(signals.pending());
        }
        for sig in received {
            self.begin_shutdown(signal_name(sig), Instant::now());
        }
    }

    /// Starts the drain, or, if one is under way, ends it now.
    pub(super) fn begin_shutdown(&mut self, why: &str, now: Instant) {
        if let Some(drain) = &mut self.drain {
            info!("{why} again: closing remaining connections now");
            drain.deadline = now;
            drain.linger_until = Some(now);
            self.cut_busy();
            self.close_all_lingering();
            return;
        }
        info!(
            "shutdown begun ({why}): not accepting; serving {} connections until their clients finish, for up to {:.1} s",
            self.conns.len(),
            self.shutdown_timeout.as_secs_f64()
        );
        for mut listener in self.listeners.drain(..) {
            let _ = self.poll.registry().deregister(&mut listener.socket);
        }
        for mut socket in self.udp.drain(..) {
            let _ = self.poll.registry().deregister(&mut socket);
        }
        // Scrapers get no answer from a server on its way out.
        self.metrics = None;
        self.drain = Some(Drain {
            deadline: now + self.shutdown_timeout,
            linger_until: None,
            next_check: now + REST_CHECK_EVERY,
        });
        // Idle connections end now, so an idle server stops at once.
        self.close_those_at_rest();
    }

    /// The drain's timer: closes connections that have come to rest, cuts
    /// the busy ones at the deadline, and ends the lingering ones after it.
    pub(super) fn on_drain_timer(&mut self, now: Instant) {
        let Some(drain) = &mut self.drain else {
            return;
        };
        if let Some(until) = drain.linger_until {
            if now >= until {
                self.close_all_lingering();
            }
            return;
        }
        if now >= drain.deadline {
            drain.linger_until = Some(now + FINAL_LINGER);
            self.cut_busy();
            return;
        }
        if now >= drain.next_check {
            drain.next_check = now + REST_CHECK_EVERY;
            self.close_those_at_rest();
        }
    }

    /// FIN and close for every open connection with nothing moving: no
    /// output owed, none unacknowledged in the kernel, no input waiting.
    /// The others are still being served (their clients keep sending, or
    /// read their echo) until they half-close or the deadline passes.
    fn close_those_at_rest(&mut self) {
        let at_rest: Vec<(usize, CloseReason)> = self
            .conns
            .iter_mut()
            .filter_map(|(key, conn)| match conn.close_if_at_rest(key) {
                Progress::Close(reason) => Some((key, reason)),
                _ => None,
            })
            .collect();
        for (key, reason) in at_rest {
            self.close(key, reason);
        }
    }

    /// The deadline passed: every connection still busy gets one last
    /// flush and a FIN, and lingers until its peer closes.
    fn cut_busy(&mut self) {
        if self.conns.is_empty() {
            return;
        }
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        let mut never_sent = 0;
        for &key in &keys {
            self.drive(key, |conn, cx| {
                let (left, progress) = conn.cut(cx);
                cx.stats.tcp_cut_bytes += left;
                never_sent += left;
                progress
            });
        }
        warn!(
            "drain deadline passed: cut {} connections ({never_sent} B of echo never sent); \
             FIN sent, waiting up to {:.1} s for their peers to close",
            keys.len(),
            FINAL_LINGER.as_secs_f64()
        );
    }

    /// The linger is over: closes what is left, counting as cut what the
    /// kernel will now throw away with the reset.
    fn close_all_lingering(&mut self) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            if let Some(conn) = self.conns.get(key) {
                self.stats.tcp_cut_bytes += conn.undelivered_at_close();
            }
            self.close(key, CloseReason::ShutdownDeadline);
        }
    }

    /// True once shutdown has begun and every connection is closed.
    pub(super) fn is_finished(&self) -> bool {
        self.drain.is_some() && self.conns.is_empty()
    }
}
