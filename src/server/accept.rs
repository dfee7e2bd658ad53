//! Accepting connections: accept until the backlog is empty or a batch
//! limit, enforce the connection cap, and pause when descriptors run out.
//!
//! Two kinds of "too many", handled differently (DESIGN.md item 8):
//! - the `--max-connections` cap: descriptors remain, so the extra
//!   connection is accepted and closed at once, and its client learns
//!   immediately instead of hanging in the kernel backlog;
//! - `EMFILE`/`ENFILE`: no descriptor to accept with. Retrying at once
//!   would spin, so accepting pauses and resumes on a short timer or when a
//!   connection closes. Edge-triggered readiness will not announce the
//!   waiting backlog again, so resuming means calling `accept` ourselves.

use std::io;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, info, trace, warn};
use mio::net::TcpStream;
use mio::Interest;

use super::conn::Connection;
use super::{token, Server};
use crate::net::{is_fd_exhausted, is_interrupted, is_peer_gone, is_would_block};

/// Connections accepted per listener event before other sources get a turn.
const ACCEPT_BATCH: usize = 256;

/// How long accepting stays paused after the descriptors ran out.
pub const ACCEPT_RETRY: Duration = Duration::from_millis(100);

/// Whether accepting is paused, and which warnings this episode has given.
#[derive(Debug, Default)]
pub struct AcceptState {
    /// Set while descriptors are exhausted: when to try again.
    paused_until: Option<Instant>,
    /// A fd-exhaustion episode is under way (warned once).
    in_fd_episode: bool,
    /// A connection-cap episode is under way (warned once).
    in_cap_episode: bool,
}

impl AcceptState {
    /// True while accepting waits for descriptors.
    pub fn is_paused(&self) -> bool {
        self.paused_until.is_some()
    }

    /// When the loop should try accepting again.
    pub fn resume_at(&self) -> Option<Instant> {
        self.paused_until
    }
}

impl Server {
    /// Listener `i` is readable: accept what waits, up to a batch.
    pub(super) fn on_accept_ready(&mut self, i: usize) {
        if self.accept.is_paused() {
            // The timer or the next close resumes; accepting now would fail.
            return;
        }
        if self.listener_deferred.get(i) == Some(&true) {
            // Its turn on the ready list comes before the loop blocks.
            return;
        }
        for _ in 0..ACCEPT_BATCH {
            let Some(listener) = self.listeners.get(i) else {
                return; // shut down meanwhile
            };
            match listener.socket.accept() {
                Ok((stream, peer)) => self.on_accepted(stream, peer),
                // Backlog empty: the next connect raises a new edge.
                Err(e) if is_would_block(&e) => {
                    self.end_episodes();
                    return;
                }
                Err(e) if is_interrupted(&e) => continue,
                // The client gave up while waiting in the backlog.
                Err(e) if is_peer_gone(&e) => continue,
                Err(e) => {
                    self.stats.accept_errors += 1;
                    self.pause_accepting(&e);
                    return;
                }
            }
        }
        // More may wait: come back after the others had their turn.
        self.defer_fixed(token::listener(i));
    }

    fn on_accepted(&mut self, mut stream: TcpStream, peer: SocketAddr) {
        if self.conns.len() >= self.max_connections || self.conns.vacant_key() > token::MAX_CONN_KEY
        {
            self.stats.tcp_rejected += 1;
            if !self.accept.in_cap_episode {
                self.accept.in_cap_episode = true;
                warn!(
                    "connection cap reached ({} open): closing new connections at once",
                    self.conns.len()
                );
            }
            debug!("{peer}: rejected: connection cap");
            return; // dropping the stream closes it: the client sees EOF
        }
        // Echo replies are small and latency-bound: do not let Nagle hold
        // them back waiting for an ACK.
        if let Err(e) = stream.set_nodelay(true) {
            debug!("{peer}: cannot set TCP_NODELAY: {e}");
        }
        // The write timeout for output the kernel has already taken: our
        // sweep sees only our own pending bytes, so a peer that stopped
        // reading after the kernel swallowed the whole echo (a megabyte of
        // send queue) would pin that memory forever. TCP_USER_TIMEOUT makes
        // the kernel end the connection (ETIMEDOUT, counted as stalled)
        // when sent data stays unacknowledged, or the peer's window stays
        // shut, that long. Chosen over asking SIOCOUTQ in the sweep: one
        // setsockopt per connection instead of an ioctl per connection per
        // sweep, nothing at all per message, and the kernel times it to
        // the millisecond (measured: closed 2.4 s after the stall with 2 s).
        #[cfg(target_os = "linux")]
        if let Some(limit) = self.kernel_write_timeout {
            if let Err(e) = socket2::SockRef::from(&stream).set_tcp_user_timeout(Some(limit)) {
                debug!("{peer}: cannot set TCP_USER_TIMEOUT: {e}");
            }
        }
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        // Both interests once: with edge triggering, a writable edge comes
        // only after a write hit WouldBlock, so it costs nothing while no
        // output is pending and saves an epoll_ctl per partial write.
        let interest = Interest::READABLE | Interest::WRITABLE;
        if let Err(e) = self
            .poll
            .registry()
            .register(&mut stream, token::from_key(key), interest)
        {
            self.stats.accept_errors += 1;
            debug!("{peer}: cannot register: {e}");
            return;
        }
        let conn = entry.insert(Connection::new(stream, self.now));
        if log::log_enabled!(log::Level::Debug) {
            conn.remember_peer(peer);
        }
        self.stats.tcp_accepted += 1;
        debug!("conn {key} {peer}: accepted");
        trace!("conn {key}: registered READABLE | WRITABLE once, edge-triggered (token {key})");
        // The service may speak first (daytime, time).
        self.drive(key, Connection::on_open);
    }

    /// The backlog is drained: an episode of running out (descriptors, or
    /// room under the cap) is over. Ending it here, not at the first
    /// successful accept, keeps a full backlog that is served one close at
    /// a time to one warning instead of one per close.
    fn end_episodes(&mut self) {
        if std::mem::take(&mut self.accept.in_fd_episode) {
            info!(
                "accepting resumed: backlog drained ({} open)",
                self.conns.len()
            );
        }
        if self.accept.in_cap_episode && self.conns.len() < self.max_connections {
            self.accept.in_cap_episode = false;
            info!("below the connection cap again ({} open)", self.conns.len());
        }
    }

    fn pause_accepting(&mut self, e: &io::Error) {
        self.accept.paused_until = Some(Instant::now() + ACCEPT_RETRY);
        if !self.accept.in_fd_episode {
            self.accept.in_fd_episode = true;
            if is_fd_exhausted(e) {
                warn!(
                    "accepting paused: out of file descriptors ({e}) with {} connections open; \
                     retrying every {} ms",
                    self.conns.len(),
                    ACCEPT_RETRY.as_millis()
                );
            } else {
                warn!(
                    "accepting paused: {e}; retrying every {} ms",
                    ACCEPT_RETRY.as_millis()
                );
            }
        }
    }

    /// Tries every listener again after a pause.
    pub(super) fn resume_accepting(&mut self) {
        trace!("accept: retrying after pause");
        self.accept.paused_until = None;
        for i in 0..self.listeners.len() {
            self.on_accept_ready(i);
        }
    }
}
