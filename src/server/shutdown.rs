//! Graceful shutdown: the signal source, and the drain that flushes
//! pending output for a bounded time before everything is closed.
//!
//! Sequence: stop accepting (the listeners close, so new connects are
//! refused) and stop serving UDP; connections stop reading; those with
//! nothing pending get FIN at once; the rest are flushed as their peers
//! read; at the deadline whatever remains is closed. A second signal ends
//! the wait at once.

use std::io;
use std::time::Instant;

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

/// A shutdown under way.
#[derive(Debug)]
pub struct Drain {
    deadline: Instant,
}

impl Drain {
    /// When the remaining connections are closed regardless.
    pub fn deadline(&self) -> Instant {
        self.deadline
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
            return;
        }
        info!(
            "shutdown begun ({why}): not accepting; flushing {} connections for up to {:.1} s",
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
        let mut finished = Vec::new();
        for (key, conn) in self.conns.iter_mut() {
            if let Progress::Close(reason) = conn.begin_drain(key) {
                finished.push((key, reason));
            }
        }
        for (key, reason) in finished {
            self.close(key, reason);
        }
        self.drain = Some(Drain {
            deadline: now + self.shutdown_timeout,
        });
    }

    pub(super) fn on_drain_timer(&mut self, now: Instant) {
        let Some(drain) = &self.drain else {
            return;
        };
        if now < drain.deadline || self.conns.is_empty() {
            return;
        }
        let unsent: usize = self.conns.iter().map(|(_, c)| c.pending_len()).sum();
        warn!(
            "drain deadline passed: closing {} connections with {unsent} B unsent",
            self.conns.len()
        );
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.close(key, CloseReason::ShutdownDeadline);
        }
    }

    /// True once shutdown has begun and every connection is closed.
    pub(super) fn is_finished(&self) -> bool {
        self.drain.is_some() && self.conns.is_empty()
    }
}
