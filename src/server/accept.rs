//! The acceptor: the TCP listeners, the connection cap, and the pause when
//! descriptors run out. It hands each accepted socket to the connection
//! table and never touches a connection itself.
//!
//! Two kinds of "too many", handled differently:
//! - the `--max-connections` cap: descriptors remain, so the extra
//!   connection is accepted and closed at once, and its client learns
//!   immediately instead of hanging in the kernel backlog;
//! - `EMFILE`/`ENFILE`: no descriptor to accept with. Retrying at once
//!   would spin, so accepting pauses and resumes on a short timer or when a
//!   connection closes. Edge-triggered readiness will not announce the
//!   waiting backlog again, so resuming means calling `accept` ourselves.

use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::Instant;

use log::{debug, info, trace, warn};
use mio::net::TcpListener;
use mio::{Interest, Registry};

use super::config::{ServerConfig, ServerError};
use super::proxy::Kind;
use super::table::Tables;
use super::{token, LoopCtx};
use crate::net::{
    self, is_fd_exhausted, is_interrupted, is_peer_gone, is_would_block, BindError, BindOptions,
    ACCEPT_RETRY,
};

/// Connections accepted per listener event before other sources get a turn.
const ACCEPT_BATCH: usize = 256;

/// Descriptors kept back from `--max-connections`' default for the server's
/// own sockets, the poll, logging, and the accept-and-close of rejects.
const FD_RESERVE: u64 = 32;

/// The listeners and what limits accepting.
#[derive(Debug)]
pub(crate) struct Acceptor {
    /// Emptied when shutdown begins, so new connects are refused: the
    /// `--tcp` listeners, then the `--tls` ones, each with what it carries.
    listeners: Vec<(TcpListener, Kind)>,
    /// The addresses really bound, kept after the listeners close.
    addrs: Vec<SocketAddr>,
    /// The same for the TLS listeners.
    tls_addrs: Vec<SocketAddr>,
    /// Open connections at most.
    max_connections: usize,
    /// Set while descriptors are exhausted: when to try again.
    paused_until: Option<Instant>,
    /// A fd-exhaustion episode is under way (warned once).
    in_fd_episode: bool,
    /// A connection-cap episode is under way (warned once).
    in_cap_episode: bool,
}

impl Acceptor {
    /// Binds and registers a listener for each `--tcp` and `--tls`
    /// address.
    ///
    /// # Errors
    ///
    /// A bind failure naming its address; TLS listeners without an
    /// identity.
    pub fn bind(
        config: &ServerConfig,
        reuse_port: bool,
        registry: &Registry,
    ) -> Result<Acceptor, ServerError> {
        if !config.tls.is_empty() && config.tls_identity.is_none() {
            return Err(ServerError::NoTlsIdentity);
        }
        let opts = BindOptions {
            backlog: config.backlog,
            reuse_port,
        };
        let mut listeners = Vec::new();
        let (mut addrs, mut tls_addrs) = (Vec::new(), Vec::new());
        let all = config
            .tcp
            .iter()
            .map(|a| (*a, Kind::Plain))
            .chain(config.tls.iter().map(|a| (*a, Kind::Tls)));
        for (i, (addr, kind)) in all.enumerate() {
            let proto = match kind {
                Kind::Plain => "tcp",
                Kind::Tls => "tls",
            };
            let mut socket = net::tcp_listener(addr, opts).map_err(|mut e| {
                e.proto = proto;
                e
            })?;
            let bound = socket.local_addr().map_err(|source| BindError {
                proto,
                addr,
                source,
            })?;
            registry
                .register(&mut socket, token::listener(i), Interest::READABLE)
                .map_err(|e| ServerError::Setup("listener registration", e))?;
            listeners.push((socket, kind));
            match kind {
                Kind::Plain => addrs.push(bound),
                Kind::Tls => tls_addrs.push(bound),
            }
        }
        Ok(Acceptor {
            listeners,
            addrs,
            tls_addrs,
            max_connections: config
                .max_connections
                .unwrap_or_else(default_max_connections),
            paused_until: None,
            in_fd_episode: false,
            in_cap_episode: false,
        })
    }

    /// The addresses really bound, in `--tcp` order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The TLS addresses really bound, in `--tls` order.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        &self.tls_addrs
    }

    /// The connection cap.
    pub fn max_connections(&self) -> usize {
        self.max_connections
    }

    /// True while accepting waits for descriptors.
    pub fn is_paused(&self) -> bool {
        self.paused_until.is_some()
    }

    /// When accepting is retried after running out of descriptors.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.paused_until
    }

    /// Listener `i` is readable: accept what waits, up to a batch, handing
    /// each new connection to `table`.
    pub fn on_ready(&mut self, i: usize, table: &mut Tables, cx: &mut LoopCtx<'_>) {
        if self.is_paused() {
            // The timer or the next close resumes; accepting now would fail.
            return;
        }
        if cx.ready.holds_fixed(token::listener(i)) {
            // Its turn on the ready list comes before the loop blocks.
            return;
        }
        for _ in 0..ACCEPT_BATCH {
            let Some((listener, kind)) = self.listeners.get(i) else {
                return; // shut down meanwhile
            };
            let kind = *kind;
            match listener.accept() {
                Ok((stream, peer)) => self.on_accepted(stream, peer, kind, table, cx),
                // Backlog empty: the next connect raises a new edge.
                Err(e) if is_would_block(&e) => {
                    trace!("accept: backlog empty (would block)");
                    self.end_episodes(table.len());
                    return;
                }
                Err(e) if is_interrupted(&e) => continue,
                // The client gave up while waiting in the backlog.
                Err(e) if is_peer_gone(&e) => continue,
                Err(e) => {
                    cx.stats.accept_errors += 1;
                    self.pause(&e, table.len(), cx.now);
                    return;
                }
            }
        }
        // More may wait: come back after the others had their turn.
        cx.ready.push_fixed(token::listener(i));
    }

    fn on_accepted(
        &mut self,
        stream: mio::net::TcpStream,
        peer: SocketAddr,
        kind: Kind,
        table: &mut Tables,
        cx: &mut LoopCtx<'_>,
    ) {
        if !table.has_room(self.max_connections) {
            cx.stats.tcp_rejected += 1;
            if !self.in_cap_episode {
                self.in_cap_episode = true;
                warn!(
                    "connection cap reached ({} open): closing new connections at once",
                    table.len()
                );
            }
            debug!("{peer}: rejected: connection cap");
            // What the client sent before it was accepted is read and
            // dropped first: closing with unread input would make the
            // kernel send RST instead of the FIN the client should see.
            let _ = (&stream).read(cx.scratch);
            return; // dropping the stream closes it: the client sees EOF
        }
        // Echo replies are small and latency-bound: do not let Nagle hold
        // them back waiting for an ACK.
        if let Err(e) = stream.set_nodelay(true) {
            debug!("{peer}: cannot set TCP_NODELAY: {e}");
        }
        // No TCP_USER_TIMEOUT: it also aborts a connection whose peer keeps
        // its window at zero past it, and a slow reader does exactly that
        // between reads (a receiver reopens its window only when an MSS is
        // free), so it cannot tell slow from dead. The timeout sweep asks
        // the kernel what the peer acknowledged instead.
        table.admit(kind, stream, peer, cx);
    }

    /// The backlog is drained: an episode of running out (descriptors, or
    /// room under the cap) is over. Ending it here, not at the first
    /// successful accept, keeps a full backlog that is served one close at
    /// a time to one warning instead of one per close.
    fn end_episodes(&mut self, open: usize) {
        if std::mem::take(&mut self.in_fd_episode) {
            info!("accepting resumed: backlog drained ({open} open)");
        }
        if self.in_cap_episode && open < self.max_connections {
            self.in_cap_episode = false;
            info!("below the connection cap again ({open} open)");
        }
    }

    fn pause(&mut self, e: &io::Error, open: usize, now: Instant) {
        self.paused_until = Some(now + ACCEPT_RETRY);
        if !self.in_fd_episode {
            self.in_fd_episode = true;
            if is_fd_exhausted(e) {
                warn!(
                    "accepting paused: out of file descriptors ({e}) with {open} connections open; \
                     retrying every {} ms",
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

    /// Retries every listener when the pause is over, or at once when a
    /// connection has closed since (`freed`), which freed a descriptor.
    pub fn on_timer(&mut self, freed: bool, table: &mut Tables, cx: &mut LoopCtx<'_>) {
        let Some(until) = self.paused_until else {
            return;
        };
        if !freed && cx.now < until {
            return;
        }
        trace!("accept: retrying after pause");
        self.paused_until = None;
        for i in 0..self.listeners.len() {
            self.on_ready(i, table, cx);
        }
    }

    /// Closes the listeners (shutdown): new connects are refused.
    pub fn close(&mut self, registry: &Registry) {
        for (mut listener, _) in self.listeners.drain(..) {
            let _ = registry.deregister(&mut listener);
        }
        self.paused_until = None;
    }
}

/// The open-file limit minus a reserve, or effectively no cap if the limit
/// is unknown.
fn default_max_connections() -> usize {
    net::open_file_limit()
        .map(|n| n.saturating_sub(FD_RESERVE).max(1))
        .and_then(|n| usize::try_from(n).ok())
        .unwrap_or(usize::MAX)
}
