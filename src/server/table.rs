//! The connection table: every open connection in a slab whose key is its
//! token, and everything done to connections as a group. Closing happens
//! here and only here (counted, logged with its story); so do the timeout
//! sweep and the shutdown's steps (close those at rest, cut the busy ones,
//! close the rest).
//!
//! It drives a [`Connection`] by lending it a [`conn::Ctx`] and carrying
//! out the [`Progress`] it returns. It never accepts (the acceptor hands it
//! sockets) and never decides when shutdown steps happen (the drain does).
//!
//! The table is generic over the [`Transport`]: the server keeps one for
//! plain TCP and one for TLS, each its own slab and token range, so that a
//! plain connection pays nothing for TLS, not even a byte of its entry.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, trace, warn};
use mio::net::TcpStream;
use mio::{Interest, Token};
use slab::Slab;

use super::config::ServerConfig;
use super::conn::{self, CloseReason, Connection, Limits, Progress, Stream, Tick};
use super::fault::{Draws, FaultPlan, FaultSetup, FaultStream};
use super::observe::{live, Stats};
use super::proxy::{Kind, ProxyGate};
use super::timeouts::{Sweep, Timeouts};
use super::tls::{TlsIdentity, TlsStream};
use super::token::{self, Source};
use super::transport::{TlsCause, TransportNews};
use super::LoopCtx;
use crate::mode::Service;

/// The most connection slots reserved up front (address space, not RSS).
const MAX_PREALLOCATED: usize = 1 << 20;

/// What a table's connections carry: how to make one from an accepted
/// socket, and the tokens and words that set its table apart.
pub(crate) trait Transport: Stream + Sized {
    /// What making one needs (nothing for plain TCP, the identity for TLS).
    type Setup;
    /// What log lines call its connections (`conn`, `tls`).
    const LABEL: &'static str;
    /// The token of slab key `key`.
    fn token(key: usize) -> Token;
    /// Wraps an accepted socket, at `now` (counting what it draws, for a
    /// fault transport).
    ///
    /// # Errors
    ///
    /// The transport could not be set up; the socket is dropped.
    fn wrap(sock: TcpStream, setup: &Self::Setup, now: Tick, stats: &mut Stats)
        -> io::Result<Self>;
    /// The socket, to register with the poll.
    fn socket(&mut self) -> &mut TcpStream;
}

impl Transport for TcpStream {
    type Setup = ();
    const LABEL: &'static str = "conn";

    fn token(key: usize) -> Token {
        token::from_key(key)
    }

    fn wrap(sock: TcpStream, _: &(), _: Tick, _: &mut Stats) -> io::Result<Self> {
        Ok(sock)
    }

    fn socket(&mut self) -> &mut TcpStream {
        self
    }
}

/// Every open connection of one transport, and how they are all served.
pub(crate) struct ConnTable<S: Transport = TcpStream> {
    /// The key is the mio token, through `S::token`.
    conns: Slab<Connection<S>>,
    /// What makes a new connection's transport.
    setup: S::Setup,
    /// `--tls-handshake-timeout`, in ticks; swept with the others.
    handshake_timeout: Option<Tick>,
    limits: Limits,
    service: Arc<dyn Service>,
    /// `service.streams()`, asked once instead of per writable event.
    streams: bool,
    /// Idle and write timeouts, swept about once a second.
    sweep: Sweep,
    /// Some connection closed since the loop last asked: a descriptor is
    /// free, so a paused acceptor may try again.
    closed_since: bool,
    /// When connections want waking to move held output (`--fault`
    /// delays and pacing): one heap for the whole table, however many
    /// replies are held. An entry whose connection has since changed its
    /// mind is skipped when met. Stays empty without faults.
    wakes: BinaryHeap<Reverse<(Instant, usize)>>,
}

impl<S: Transport> ConnTable<S> {
    /// An empty table sized for `max_connections` (reserved up front when
    /// `preallocate`), whose connections are made with `setup`; TLS tables
    /// also sweep for handshakes past `handshake_timeout`.
    pub fn new(
        config: &ServerConfig,
        limits: Limits,
        max_connections: usize,
        setup: S::Setup,
        handshake_timeout: Option<Duration>,
        preallocate: bool,
    ) -> ConnTable<S> {
        let mut timeouts = Timeouts::new(config.idle_timeout, config.write_timeout);
        timeouts.handshake = handshake_timeout.and_then(Timeouts::ticks);
        ConnTable {
            // Reserve the whole table up front, as the C baseline does: pages
            // nobody touched cost no memory, and the table never moves, so
            // RSS grows by one entry per connection instead of doubling.
            conns: Slab::with_capacity(if preallocate {
                max_connections.min(MAX_PREALLOCATED)
            } else {
                0
            }),
            setup,
            handshake_timeout: timeouts.handshake,
            limits,
            streams: config.service.streams(),
            service: Arc::clone(&config.service),
            sweep: Sweep::new(timeouts),
            closed_since: false,
            wakes: BinaryHeap::new(),
        }
    }

    /// Open connections.
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// True while one more connection fits under `max` and the token space.
    pub fn has_room(&self, max: usize) -> bool {
        self.conns.len() < max && self.conns.vacant_key() <= token::MAX_CONN_KEY
    }

    /// The service's name, for the start-up line.
    pub fn service_name(&self) -> &str {
        self.service.name()
    }

    /// The high watermark, for the start-up line.
    pub fn high_watermark(&self) -> usize {
        self.limits.watermarks.high
    }

    /// When the sweep or the earliest wake-up is next due.
    pub fn next_deadline(&self) -> Option<Instant> {
        let wake = self.wakes.peek().map(|Reverse((at, _))| *at);
        [self.sweep.next_at(), wake].into_iter().flatten().min()
    }

    /// True once after any close: a descriptor was freed since last asked.
    pub fn take_closed(&mut self) -> bool {
        std::mem::take(&mut self.closed_since)
    }

    /// The output all its connections still owe, summed here, once per
    /// report or scrape, rather than tracked on every write.
    pub fn pending_bytes(&self) -> u64 {
        self.conns.iter().map(|(_, c)| c.pending_len() as u64).sum()
    }

    /// Registers an accepted socket (already registered with the poll
    /// under another token when `reregister`: it waited at the PROXY
    /// gate), and, once any handshake is done, lets the service speak
    /// first.
    pub fn open(
        &mut self,
        sock: TcpStream,
        peer: SocketAddr,
        reregister: bool,
        cx: &mut LoopCtx<'_>,
    ) {
        let entry = self.conns.vacant_entry();
        let key = entry.key();
        let label = S::LABEL;
        let mut stream = match S::wrap(sock, &self.setup, cx.tick, cx.stats) {
            Ok(s) => s,
            Err(e) => {
                cx.stats.accept_errors += 1;
                debug!("{peer}: cannot set up the {label} transport: {e}");
                return;
            }
        };
        // Both interests once: with edge triggering, a writable edge comes
        // only after a write hit WouldBlock, so it costs nothing while no
        // output is pending and saves an epoll_ctl per partial write.
        let interest = Interest::READABLE | Interest::WRITABLE;
        let token = S::token(key);
        let registered = if reregister {
            cx.registry.reregister(stream.socket(), token, interest)
        } else {
            cx.registry.register(stream.socket(), token, interest)
        };
        if let Err(e) = registered {
            cx.stats.accept_errors += 1;
            debug!("{peer}: cannot register: {e}");
            return;
        }
        let conn = entry.insert(Connection::new(stream, cx.tick));
        if log::log_enabled!(log::Level::Debug) {
            conn.tell_story(peer, cx.tick);
        }
        cx.stats.tcp_accepted += 1;
        debug!("{label} {key} {peer}: accepted");
        trace!(
            "{label} {key}: registered READABLE | WRITABLE once, edge-triggered (token {})",
            token.0
        );
        // A handshake first, if the transport has one; then the service
        // may speak first (daytime, time).
        self.drive(key, cx, |conn, ccx| {
            conn.on_handshake(ccx).unwrap_or_else(|| conn.on_open(ccx))
        });
    }

    /// A readiness event for connection `key`.
    pub fn on_event(
        &mut self,
        key: usize,
        readable: bool,
        writable: bool,
        hangup: bool,
        cx: &mut LoopCtx<'_>,
    ) {
        trace!(
            "{} {key}: event{}{}{}",
            S::LABEL,
            if readable { " readable" } else { "" },
            if writable { " writable" } else { "" },
            if hangup { " hangup" } else { "" }
        );
        self.drive(key, cx, |conn, ccx| {
            if hangup {
                conn.note_hangup();
            }
            // A transport still shaking hands takes the event itself.
            if let Some(progress) = conn.on_handshake(ccx) {
                return progress;
            }
            let mut progress = Progress::Wait;
            if writable {
                progress = conn.on_writable(ccx);
            }
            // A deferred connection reads when the ready list comes round.
            if readable && progress == Progress::Wait && !conn.is_deferred() {
                progress = conn.on_readable(ccx);
            }
            progress
        });
    }

    /// Connection `key`'s turn on the ready list.
    pub fn on_turn(&mut self, key: usize, cx: &mut LoopCtx<'_>) {
        self.drive(key, cx, |conn, ccx| {
            // A reused key: this is a newer connection, not deferred.
            if !conn.is_deferred() {
                return Progress::Wait;
            }
            conn.set_deferred(false);
            trace!("conn {}: its turn on the ready list", ccx.key);
            // Deferred by the read budget or by a stream's write budget:
            // carry on with whichever it was.
            let progress = conn.on_readable(ccx);
            if progress != Progress::Wait {
                return progress;
            }
            conn.on_writable(ccx)
        });
    }

    /// Runs a handler on connection `key` with what it borrows, then
    /// carries out the `Progress` it returns. Nothing happens for a key
    /// with no connection (closed earlier in this batch).
    fn drive(
        &mut self,
        key: usize,
        cx: &mut LoopCtx<'_>,
        handler: impl FnOnce(&mut Connection<S>, &mut conn::Ctx<'_>) -> Progress,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            trace!("{} {key}: closed earlier in this batch, skipped", S::LABEL);
            return;
        };
        let mut ccx = conn::Ctx {
            key,
            scratch: cx.scratch,
            service: &*self.service,
            streams: self.streams,
            limits: &self.limits,
            stats: cx.stats,
            now: cx.tick,
        };
        let mut progress = handler(conn, &mut ccx);
        if let Some(at) = conn.wake_at() {
            // One heap entry per wake-up time, not one per event.
            if conn.arm_wake(at) {
                self.wakes.push(Reverse((at, key)));
            }
        }
        while let Some(news) = conn.take_news() {
            match news {
                TransportNews::Handshaken(version) => {
                    cx.stats.tls_handshakes += 1;
                    debug!("{} {key}: handshake done ({version})", S::LABEL);
                }
                TransportNews::Ended(end) => {
                    if !matches!(progress, Progress::Close(_)) {
                        progress = Progress::Close(CloseReason::Fault(end));
                    }
                }
            }
        }
        match progress {
            Progress::Wait => {}
            Progress::Again => {
                if !conn.is_deferred() {
                    conn.set_deferred(true);
                    cx.ready.push_conn(S::token(key));
                }
            }
            Progress::Close(reason) => self.close(key, reason, cx),
        }
    }

    /// Closes connection `key`: counts it, and what it threw away, and
    /// logs its story. The one place a connection ends.
    fn close(&mut self, key: usize, reason: CloseReason, cx: &mut LoopCtx<'_>) {
        self.close_as(key, reason, false, cx);
    }

    /// [`ConnTable::close`], or the shutdown's final close (`final_close`),
    /// which gives up whatever the kernel still holds.
    fn close_as(
        &mut self,
        key: usize,
        reason: CloseReason,
        final_close: bool,
        cx: &mut LoopCtx<'_>,
    ) {
        let Some(mut conn) = self.conns.try_remove(key) else {
            return;
        };
        reason.count_in(cx.stats);
        if conn.is_handshaking() && !matches!(reason, CloseReason::Tls(_)) {
            // Ended mid-handshake for another reason (the shutdown, say):
            // every TLS connection is a handshake done or failed.
            cx.stats.count_tls_failure(TlsCause::Closed);
        }
        self.closed_since = true;
        // Output the peer will never get is cut, whatever the reason, and
        // what the kernel held unacknowledged leaves `bytes out`, which
        // then counts only what was not thrown away.
        let lost = conn.abandon(reason, final_close);
        cx.stats.tcp_cut_bytes += lost.total();
        cx.stats.tcp_out_dropped += lost.in_kernel;
        if log::log_enabled!(log::Level::Debug) {
            let label = S::LABEL;
            let cut = if lost.total() > 0 {
                format!(", reset, cut {} B", lost.total())
            } else {
                String::new()
            };
            if let Some((peer, bytes_in, bytes_out, age)) = conn.story(cx.tick) {
                debug!(
                    "{label} {key} {peer}: closed: {reason} (in {bytes_in} B, out {} B{cut}, {:.1} s)",
                    bytes_out.saturating_sub(lost.in_kernel),
                    f64::from(age) / 10.0
                );
            } else {
                debug!("{label} {key}: closed: {reason}{cut}");
            }
        }
        // Dropping the stream closes the descriptor, which also removes it
        // from the epoll set: no deregister call needed.
    }

    /// Closes the connections whose idle or write timeout has passed, when
    /// the sweep is due.
    pub fn on_timer(&mut self, cx: &mut LoopCtx<'_>) {
        self.wake_due(cx);
        if !self.sweep.is_due(cx.now, !self.conns.is_empty()) {
            return;
        }
        let timeouts = self.sweep.timeouts();
        let tick = cx.tick;
        let handshake = self.handshake_timeout;
        let expired: Vec<(usize, CloseReason)> = self
            .conns
            .iter_mut()
            // A lingering connection drops its input on purpose: it looks
            // idle or stalled, but its end belongs to the drain.
            .filter(|(_, conn)| !conn.is_lingering())
            .filter_map(|(key, conn)| {
                // A handshake past its deadline ends first; until it is
                // done, no other timeout has anything to judge.
                if let Some(since) = conn.handshake_since() {
                    let late = handshake.is_some_and(|limit| tick.wrapping_sub(since) > limit);
                    return late.then_some((key, CloseReason::Tls(TlsCause::Timeout)));
                }
                timeouts
                    .expiry(conn.sweep_facts(tick))
                    .map(|reason| (key, reason))
            })
            .collect();
        let stalled = expired
            .iter()
            .filter(|(_, r)| *r == CloseReason::WriteTimeout)
            .count();
        if self.sweep.note_stalled(stalled) {
            warn!(
                "closing connections whose peers stopped reading (write timeout {:.1} s); \
                 counted as stalled in stats",
                timeouts.write.map_or(0.0, |t| f64::from(t) / 10.0)
            );
        }
        if !expired.is_empty() {
            debug!("sweep: {} connections timed out", expired.len());
        }
        for (key, reason) in expired {
            self.drive(key, cx, |conn, ccx| conn.expire(ccx.key, reason));
        }
    }

    /// Wakes the connections whose held output is due, as a writable
    /// event would.
    fn wake_due(&mut self, cx: &mut LoopCtx<'_>) {
        while let Some(&Reverse((at, key))) = self.wakes.peek() {
            if at > cx.now {
                return;
            }
            self.wakes.pop();
            let wanted = self.conns.get_mut(key).is_some_and(|conn| {
                // An entry for a wake-up since replaced is stale.
                conn.disarm_wake(at) && conn.wake_at().is_some_and(|w| w <= cx.now)
            });
            if wanted {
                self.drive(key, cx, Connection::on_writable);
            }
        }
    }

    /// Shutdown: FIN and close for every open connection with nothing
    /// moving (quiet for a moment, no output owed, none unacknowledged in
    /// the kernel, no input waiting). The others are still served (their clients keep sending,
    /// or read their echo) until they half-close or the deadline passes.
    /// Returns how many it closed.
    pub fn close_those_at_rest(&mut self, cx: &mut LoopCtx<'_>) -> usize {
        let before = self.conns.len();
        let path_loss = self.path_loss();
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            self.drive(key, cx, |conn, ccx| conn.close_if_at_rest(ccx, path_loss));
        }
        before - self.conns.len()
    }

    /// The share of data segments the kernel had to send again, over all
    /// the table's connections: how lossy the network behind them is, for
    /// the connections that have not sent enough to tell on their own.
    /// One `TCP_INFO` per connection, asked only during a shutdown.
    fn path_loss(&self) -> f64 {
        let (mut lost, mut sent) = (0u64, 0u64);
        for (_, conn) in &self.conns {
            if let Some(p) = conn.tcp_progress() {
                lost += u64::from(p.total_retrans);
                sent += u64::from(p.data_segs_out.max(p.total_retrans));
            }
        }
        if sent == 0 {
            0.0
        } else {
            lost as f64 / sent as f64
        }
    }

    /// Shutdown deadline: every connection still busy gets one last flush
    /// and a FIN, and lingers (input dropped) until its peer closes.
    /// Returns how many were cut.
    pub fn cut_busy(&mut self, cx: &mut LoopCtx<'_>) -> usize {
        // Those lingering after a close at rest are done, not busy.
        let keys: Vec<usize> = self
            .conns
            .iter()
            .filter(|(_, conn)| !conn.is_lingering())
            .map(|(key, _)| key)
            .collect();
        for &key in &keys {
            self.drive(key, cx, |conn, ccx| {
                let (left, progress) = conn.cut(ccx);
                ccx.stats.tcp_cut_bytes += left;
                progress
            });
        }
        keys.len()
    }

    /// Shutdown, the end: closes what is left with a reset where the
    /// kernel still holds output, counting that output as cut.
    pub fn close_all(&mut self, cx: &mut LoopCtx<'_>) {
        let keys: Vec<usize> = self.conns.iter().map(|(key, _)| key).collect();
        for key in keys {
            let reason = self.conns.get(key).map(Connection::drain_end);
            if let Some(reason) = reason {
                self.close_as(key, reason, true, cx);
            }
        }
    }
}

impl Transport for TlsStream {
    /// `None` only for a table that no listener feeds.
    type Setup = Option<TlsIdentity>;
    const LABEL: &'static str = "tls";

    fn token(key: usize) -> Token {
        token::from_tls_key(key)
    }

    fn wrap(
        sock: TcpStream,
        identity: &Option<TlsIdentity>,
        now: Tick,
        _: &mut Stats,
    ) -> io::Result<Self> {
        let identity = identity
            .as_ref()
            .ok_or_else(|| io::Error::other("no TLS certificate loaded"))?;
        TlsStream::new(sock, identity, now)
    }

    fn socket(&mut self) -> &mut TcpStream {
        self.socket_mut()
    }
}

impl<S: Transport> Transport for FaultStream<S> {
    type Setup = FaultSetup<S::Setup>;
    const LABEL: &'static str = "fault";

    fn token(key: usize) -> Token {
        token::with_faults(S::token(key))
    }

    fn wrap(
        sock: TcpStream,
        setup: &Self::Setup,
        now: Tick,
        stats: &mut Stats,
    ) -> io::Result<Self> {
        let inner = S::wrap(sock, &setup.inner, now, stats)?;
        let mut draws = setup.draws.get();
        let seed = draws.next_u64();
        setup.draws.set(draws);
        Ok(FaultStream::new(
            inner,
            Arc::clone(&setup.plan),
            seed,
            stats,
        ))
    }

    fn socket(&mut self) -> &mut TcpStream {
        self.inner_mut().socket()
    }
}

/// Runs `$body` with `$t` bound to each connection table in turn (plain,
/// TLS, and with `--fault` their fault twins).
macro_rules! each_table {
    ($tables:expr, |$t:ident| $body:expr) => {{
        {
            let $t = &mut $tables.plain;
            $body;
        }
        {
            let $t = &mut $tables.tls;
            $body;
        }
        if let Some($t) = &mut $tables.faulty {
            $body;
        }
        if let Some($t) = &mut $tables.faulty_tls {
            $body;
        }
    }};
}

/// Every connection of the loop, whatever it carries: the plain table,
/// the TLS table, with `--fault` a fault table for each instead, and the
/// PROXY gate in front of them. The loop and the acceptor see them as one,
/// and each event goes to the table that owns its token.
pub(crate) struct Tables {
    /// Plain TCP connections.
    pub plain: ConnTable<TcpStream>,
    /// TLS connections; empty without TLS listeners.
    pub tls: ConnTable<TlsStream>,
    /// With `--fault`: plain TCP connections, misbehaving on purpose.
    pub faulty: Option<ConnTable<FaultStream<TcpStream>>>,
    /// With `--fault`: TLS connections, misbehaving on purpose.
    pub faulty_tls: Option<ConnTable<FaultStream<TlsStream>>>,
    /// Connections awaiting their PROXY header (`--proxy-protocol`).
    pub gate: Option<ProxyGate>,
}

impl Tables {
    /// The tables for `config`: TLS tables that reserve nothing unless TLS
    /// listeners exist, fault tables only with `--fault` (and then the
    /// plain ones stay empty), a gate only with `--proxy-protocol`.
    pub fn new(
        config: &ServerConfig,
        limits: Limits,
        max_connections: usize,
        loop_index: usize,
    ) -> Tables {
        let has_tls = !config.tls.is_empty();
        let has_tcp = !config.tcp.is_empty();
        let faults = config
            .faults
            .as_ref()
            .filter(|plan| plan.has_tcp())
            .map(|plan| Arc::new(plan.clone()));
        let identity = config.tls_identity.clone();
        let handshake = Some(config.tls_handshake_timeout);
        fn setup<T>(
            plan: Option<&Arc<FaultPlan>>,
            loop_index: usize,
            inner: T,
        ) -> Option<FaultSetup<T>> {
            plan.map(|plan| FaultSetup {
                inner,
                plan: Arc::clone(plan),
                // Each loop of a cluster draws its own sequence.
                draws: std::cell::Cell::new(Draws::new(plan.seed ^ loop_index as u64)),
            })
        }
        let faulty = setup(faults.as_ref(), loop_index, ())
            .map(|setup| ConnTable::new(config, limits, max_connections, setup, None, has_tcp));
        let faulty_tls = setup(faults.as_ref(), loop_index, identity.clone()).map(|setup| {
            ConnTable::new(config, limits, max_connections, setup, handshake, has_tls)
        });
        let plain_too = faults.is_none();
        Tables {
            plain: ConnTable::new(
                config,
                limits,
                max_connections,
                (),
                None,
                has_tcp && plain_too,
            ),
            tls: ConnTable::new(
                config,
                limits,
                max_connections,
                identity,
                handshake,
                has_tls && plain_too,
            ),
            faulty,
            faulty_tls,
            gate: config
                .proxy_protocol
                .then(|| ProxyGate::new(config.proxy_timeout)),
        }
    }

    /// Open connections, those at the gate included.
    pub fn len(&self) -> usize {
        self.plain.len()
            + self.tls.len()
            + self.faulty.as_ref().map_or(0, ConnTable::len)
            + self.faulty_tls.as_ref().map_or(0, ConnTable::len)
            + self.gate.as_ref().map_or(0, ProxyGate::len)
    }

    /// True when no connection is open or waiting.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// True while one more connection fits under `max` and the token space.
    pub fn has_room(&self, max: usize) -> bool {
        self.len() < max && self.plain.has_room(max) && self.tls.has_room(max)
    }

    /// The service's name, for the start-up line.
    pub fn service_name(&self) -> &str {
        self.plain.service_name()
    }

    /// The high watermark, for the start-up line.
    pub fn high_watermark(&self) -> usize {
        self.plain.high_watermark()
    }

    /// The earliest sweep, wake-up or header deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        [
            self.plain.next_deadline(),
            self.tls.next_deadline(),
            self.faulty.as_ref().and_then(ConnTable::next_deadline),
            self.faulty_tls.as_ref().and_then(ConnTable::next_deadline),
            self.gate.as_ref().and_then(ProxyGate::next_deadline),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// True once after any close: a descriptor was freed since last asked.
    pub fn take_closed(&mut self) -> bool {
        let mut any = false;
        each_table!(self, |t| any |= t.take_closed());
        any
    }

    /// A connection accepted on a listener of `kind`: to the gate when
    /// PROXY headers are expected, else straight to its table.
    pub fn admit(&mut self, kind: Kind, stream: TcpStream, peer: SocketAddr, cx: &mut LoopCtx<'_>) {
        if let Some(gate) = &mut self.gate {
            if let Err(e) = gate.admit(stream, peer, kind, cx.registry, cx.now) {
                cx.stats.accept_errors += 1;
                debug!("{peer}: cannot register: {e}");
            }
            return;
        }
        self.open(kind, stream, peer, false, cx);
    }

    fn open(
        &mut self,
        kind: Kind,
        stream: TcpStream,
        peer: SocketAddr,
        reregister: bool,
        cx: &mut LoopCtx<'_>,
    ) {
        match (kind, &mut self.faulty, &mut self.faulty_tls) {
            (Kind::Plain, Some(faulty), _) => faulty.open(stream, peer, reregister, cx),
            (Kind::Tls, _, Some(faulty)) => faulty.open(stream, peer, reregister, cx),
            (Kind::Plain, ..) => self.plain.open(stream, peer, reregister, cx),
            (Kind::Tls, ..) => self.tls.open(stream, peer, reregister, cx),
        }
    }

    /// A readiness event for the connection behind `source`.
    pub fn on_event(
        &mut self,
        source: Source,
        readable: bool,
        writable: bool,
        hangup: bool,
        cx: &mut LoopCtx<'_>,
    ) {
        match source {
            Source::Conn(k) => self.plain.on_event(k, readable, writable, hangup, cx),
            Source::TlsConn(k) => self.tls.on_event(k, readable, writable, hangup, cx),
            Source::FaultConn(k) => {
                if let Some(t) = &mut self.faulty {
                    t.on_event(k, readable, writable, hangup, cx);
                }
            }
            Source::FaultTlsConn(k) => {
                if let Some(t) = &mut self.faulty_tls {
                    t.on_event(k, readable, writable, hangup, cx);
                }
            }
            Source::Gate(k) => self.on_gate_event(k, hangup, cx),
            _ => {}
        }
    }

    /// The turn on the ready list of the connection behind `source`.
    pub fn on_turn(&mut self, source: Source, cx: &mut LoopCtx<'_>) {
        match source {
            Source::Conn(k) => self.plain.on_turn(k, cx),
            Source::TlsConn(k) => self.tls.on_turn(k, cx),
            Source::FaultConn(k) => {
                if let Some(t) = &mut self.faulty {
                    t.on_turn(k, cx);
                }
            }
            Source::FaultTlsConn(k) => {
                if let Some(t) = &mut self.faulty_tls {
                    t.on_turn(k, cx);
                }
            }
            _ => {}
        }
    }

    /// A gate connection is readable: its header, if whole, sends it on;
    /// one cut short by the client's FIN is refused at once.
    fn on_gate_event(&mut self, key: usize, hangup: bool, cx: &mut LoopCtx<'_>) {
        let Some(gate) = &mut self.gate else {
            return;
        };
        match gate.on_ready(key, hangup, cx.scratch) {
            Ok(None) => {}
            Ok(Some(passed)) => {
                cx.stats.proxy_headers += 1;
                self.open(passed.kind, passed.stream, passed.peer, true, cx);
            }
            Err(_) => {
                cx.stats.proxy_refused += 1;
                // A refused connection freed a descriptor, as a close does.
                self.plain.closed_since = true;
            }
        }
    }

    /// The sweeps, the wake-ups and the header deadlines, when due.
    pub fn on_timer(&mut self, cx: &mut LoopCtx<'_>) {
        each_table!(self, |t| t.on_timer(cx));
        if let Some(gate) = &mut self.gate {
            let refused = gate.on_timer(cx.now);
            if refused > 0 {
                cx.stats.proxy_refused += refused;
                self.plain.closed_since = true;
            }
        }
    }

    /// This loop's figures for the stats line and metrics.
    pub fn figures(&self, stats: Stats, accept_paused: bool) -> live::Snapshot {
        let mut open = self.plain.len() + self.tls.len();
        let mut pending = self.plain.pending_bytes() + self.tls.pending_bytes();
        if let Some(t) = &self.faulty {
            open += t.len();
            pending += t.pending_bytes();
        }
        if let Some(t) = &self.faulty_tls {
            open += t.len();
            pending += t.pending_bytes();
        }
        live::Snapshot {
            stats,
            open: open as u64,
            pending_bytes: pending,
            accept_paused,
        }
    }

    /// Shutdown begins: connections still waiting for a header close (they
    /// were never served), and those at rest close with FIN. Returns how
    /// many closed.
    pub fn close_those_at_rest(&mut self, cx: &mut LoopCtx<'_>) -> usize {
        let mut closed = self.gate.as_mut().map_or(0, ProxyGate::close_all);
        each_table!(self, |t| closed += t.close_those_at_rest(cx));
        closed
    }

    /// Shutdown deadline: cuts every busy connection (see
    /// [`ConnTable::cut_busy`]) and says so once.
    pub fn cut_busy(&mut self, linger: Duration, cx: &mut LoopCtx<'_>) {
        let cut_before = cx.stats.tcp_cut_bytes;
        let mut cut = 0;
        each_table!(self, |t| cut += t.cut_busy(cx));
        if cut == 0 {
            return;
        }
        let never_sent = cx.stats.tcp_cut_bytes - cut_before;
        if linger.is_zero() {
            warn!(
                "drain deadline passed: cut {cut} connections ({never_sent} B of echo never sent); \
                 closing them now"
            );
        } else {
            warn!(
                "drain deadline passed: cut {cut} connections ({never_sent} B of echo never sent); \
                 FIN sent, waiting up to {:.1} s for their peers to close",
                linger.as_secs_f64()
            );
        }
    }

    /// Shutdown, the end: closes what is left.
    pub fn close_all(&mut self, cx: &mut LoopCtx<'_>) {
        if let Some(gate) = &mut self.gate {
            gate.close_all();
        }
        each_table!(self, |t| t.close_all(cx));
    }
}
