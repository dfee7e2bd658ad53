//! `Server`: one readiness loop. It owns the `Poll`, the ready list and the
//! scratch buffer, and hands each event to the component that owns its
//! source: the `accept::Acceptor` (listeners), the `table::ConnTable`
//! (connections), the `udp::UdpEndpoint` (UDP sockets), the
//! `observe::Observers` (stats line, metrics endpoint) and the
//! `shutdown::Shutdown` (signals, stop handle, drain). Each component
//! keeps its own state, borrows a `LoopCtx` for one call, and tells its
//! next deadline; the poll timeout is the earliest of them.
//!
//! Start reading at [`Server::run`].

pub(crate) mod accept;
pub(crate) mod buffer;
pub(crate) mod cluster;
pub(crate) mod config;
pub(crate) mod conn;
#[cfg(test)]
mod conn_props;
pub(crate) mod fault;
pub(crate) mod observe;
pub(crate) mod proxy;
pub(crate) mod shutdown;
pub(crate) mod table;
pub(crate) mod timeouts;
pub(crate) mod tls;
pub(crate) mod token;
pub(crate) mod transport;
pub(crate) mod udp;

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, trace, warn};
use mio::{Events, Poll, Registry, Token};

pub use buffer::Watermarks;
pub use cluster::Cluster;
pub use config::{ServerConfig, ServerError};
pub use fault::{Fault, FaultKind, FaultPlan};
pub use observe::Stats;
pub use shutdown::ServerHandle;
pub use tls::{TlsIdentity, TlsSetupError};

use accept::Acceptor;
use conn::{Limits, Tick};
use observe::Observers;
use shutdown::{DrainStep, Shutdown};
use table::Tables;
use token::Source;
use udp::UdpEndpoint;

/// Where one loop sits among a cluster's loops; a lone server is loop 0
/// of 1. Only `Cluster` sets anything else.
#[derive(Debug, Clone, Default)]
pub(crate) struct Placement {
    /// Where the loops publish their figures, shared by a cluster's loops;
    /// `None` makes a slot of its own when stats or metrics are on.
    pub live: Option<Arc<observe::live::Live>>,
    /// This loop's number within its cluster.
    pub loop_index: usize,
    /// Set `SO_REUSEPORT` so several loops can bind the same addresses;
    /// only for more than one loop, so a second server on a used port
    /// still fails loudly.
    pub reuse_port: bool,
}

/// What a component borrows from the loop for one call: the registry to
/// register with, the scratch buffer, the counters, the ready list, and
/// the time of this batch of events.
pub(crate) struct LoopCtx<'a> {
    /// Where sockets are registered.
    pub registry: &'a Registry,
    /// The loop's one scratch buffer; every read lands here.
    pub scratch: &'a mut [u8],
    /// The loop's counters.
    pub stats: &'a mut Stats,
    /// Sources that used up their budget, served before the loop blocks.
    pub ready: &'a mut ReadyList,
    /// When this batch of events began.
    pub now: Instant,
    /// The same instant as a coarse tick, for connections.
    pub tick: Tick,
}

/// Sources that used up their fairness budget and are served again before
/// the loop next blocks. No source is on it twice: connections carry their
/// own flag, and the few fixed sources (listeners, UDP sockets) are checked
/// here, so the list is bounded by the number of sources and one that never
/// drains gets one budget per turn. One exception, harmless and bounded: a
/// deferred connection that closes leaves its token behind, and if a new
/// connection takes that slab key and defers too within the same turn, it
/// may be served twice in that turn.
#[derive(Debug, Default)]
pub(crate) struct ReadyList {
    /// Queued for the next turn.
    next: Vec<Token>,
    /// The fixed sources among `next`.
    fixed: Vec<Token>,
}

impl ReadyList {
    /// Queues a connection; the caller has checked and set its flag.
    pub fn push_conn(&mut self, token: Token) {
        self.next.push(token);
    }

    /// Queues a listener or UDP socket unless it waits already.
    pub fn push_fixed(&mut self, token: Token) {
        if !self.fixed.contains(&token) {
            self.fixed.push(token);
            self.next.push(token);
        }
    }

    /// True while a listener or UDP socket waits for its turn.
    pub fn holds_fixed(&self, token: Token) -> bool {
        self.fixed.contains(&token)
    }

    fn is_empty(&self) -> bool {
        self.next.is_empty()
    }

    /// Takes this turn's sources into `into`; new deferrals wait for the
    /// next turn, after a zero-timeout poll.
    fn take_turn(&mut self, into: &mut Vec<Token>) {
        std::mem::swap(&mut self.next, into);
        self.fixed.clear();
    }
}

/// The loop's shared parts, split from the components so that both can be
/// borrowed at once.
struct Core {
    poll: Poll,
    scratch: Box<[u8]>,
    stats: Stats,
    ready: ReadyList,
    /// The ready list being served right now (kept for its allocation).
    turn: Vec<Token>,
    epoch: Instant,
    /// When the current batch of events began, and the same as a tick.
    now: Instant,
    tick: Tick,
}

impl Core {
    /// Sets the clock for a new batch of events.
    fn set_now(&mut self, now: Instant) {
        let tenths = now.duration_since(self.epoch).as_millis() / 100;
        self.now = now;
        self.tick = Tick::try_from(tenths).unwrap_or(Tick::MAX);
    }

    fn cx(&mut self) -> LoopCtx<'_> {
        LoopCtx {
            registry: self.poll.registry(),
            scratch: &mut self.scratch,
            stats: &mut self.stats,
            ready: &mut self.ready,
            now: self.now,
            tick: self.tick,
        }
    }
}

/// One readiness loop: the poll, the ready list, the scratch buffer, and
/// the components that own the sources.
pub struct Server {
    core: Core,
    acceptor: Acceptor,
    table: Tables,
    udp: UdpEndpoint,
    observers: Observers,
    shutdown: Shutdown,
    /// `--fault`, for the start-up warning.
    faults: Option<FaultPlan>,
}

impl Server {
    /// Binds every socket in `config` and registers it with a new poll.
    /// Port 0 picks a free port; [`Server::tcp_addrs`] tells which.
    ///
    /// # Errors
    ///
    /// [`ServerError::Bind`] naming the first address that failed, or
    /// [`ServerError::Setup`] if the poll, waker or signals failed.
    pub fn bind(config: ServerConfig) -> Result<Server, ServerError> {
        Server::bind_placed(config, Placement::default())
    }

    /// [`Server::bind`] for one loop of a cluster.
    pub(crate) fn bind_placed(
        config: ServerConfig,
        placement: Placement,
    ) -> Result<Server, ServerError> {
        let poll = Poll::new().map_err(|e| ServerError::Setup("poll", e))?;
        let registry = poll.registry();
        let acceptor = Acceptor::bind(&config, placement.reuse_port, registry)?;
        let udp = UdpEndpoint::bind(&config, placement.reuse_port, registry)?;
        let started = Instant::now();
        let observers = Observers::new(
            &config,
            placement.live.clone(),
            placement.loop_index,
            registry,
            started,
        )?;
        let shutdown = Shutdown::new(&config, registry)?;
        let limits = Limits {
            watermarks: config.watermarks,
            short_read: config.short_read,
            ..Limits::default()
        };
        let table = Tables::new(
            &config,
            limits,
            acceptor.max_connections(),
            placement.loop_index,
        );
        let faults = config.faults.clone();
        Ok(Server {
            core: Core {
                poll,
                scratch: vec![0; crate::net::SCRATCH_SIZE].into_boxed_slice(),
                stats: Stats::default(),
                ready: ReadyList::default(),
                turn: Vec::new(),
                epoch: started,
                now: started,
                tick: 0,
            },
            acceptor,
            table,
            udp,
            observers,
            shutdown,
            faults,
        })
    }

    /// The TCP addresses really bound, in `--tcp` order.
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        self.acceptor.addrs()
    }

    /// The TLS addresses really bound, in `--tls` order.
    pub fn tls_addrs(&self) -> &[SocketAddr] {
        self.acceptor.tls_addrs()
    }

    /// The UDP addresses really bound, in `--udp` order.
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        self.udp.addrs()
    }

    /// The metrics endpoint's address, when `--metrics` is on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.observers.metrics_addr()
    }

    /// A handle that stops this server from another thread.
    pub fn handle(&self) -> ServerHandle {
        self.shutdown.handle()
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.core.stats
    }

    /// Runs the loop on this thread until a signal or the handle stops it
    /// and every connection is closed; returns the final counters.
    ///
    /// # Errors
    ///
    /// Only the loop's own failures: `poll` failing for a reason other than
    /// `Interrupted`. A failure on one connection or datagram closes that
    /// connection or drops that datagram, and the loop carries on.
    pub fn run(&mut self) -> io::Result<Stats> {
        info!(
            "serving mode {} on {} tcp, {} tls and {} udp sockets (max connections {}, --max-pending {} B)",
            self.table.service_name(),
            self.acceptor.addrs().len(),
            self.acceptor.tls_addrs().len(),
            self.udp.addrs().len(),
            self.acceptor.max_connections(),
            self.table.high_watermark()
        );
        if let Some(plan) = &self.faults {
            let list: Vec<String> = plan.faults.iter().map(|f| f.to_string()).collect();
            warn!(
                "FAULTS ON: this server misbehaves on purpose: {} (--fault-seed {})",
                list.join(", "),
                plan.seed
            );
        }
        let mut events = Events::with_capacity(crate::net::EVENTS_CAPACITY);
        while !(self.shutdown.is_draining() && self.table.is_empty()) {
            let timeout = self.poll_timeout(Instant::now());
            match self.core.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                // A signal landed while blocked; the signal source reports it.
                Err(e) if crate::net::is_interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
            if log::log_enabled!(log::Level::Trace) {
                trace!(
                    "poll: woke with {} event(s), timeout was {timeout:?}",
                    events.iter().count()
                );
            }
            self.core.set_now(Instant::now());
            for event in events.iter() {
                // Errors and hang-ups are served as readable: the next read
                // reports them with their reason.
                let hangup = event.is_read_closed() || event.is_error();
                let readable = event.is_readable() || hangup;
                self.dispatch(event.token(), readable, event.is_writable(), hangup);
            }
            self.serve_ready();
            self.on_timers();
        }
        // The totals are the caller's to report (the binary logs one
        // `final stats` line, summed over a cluster's loops): logging them
        // here too would print the same figures twice.
        let stats = self.core.stats;
        if stats.tcp_forced_closes > 0 {
            warn!(
                "shutdown done: {} connections cut by the deadline, {} B of echo undelivered",
                stats.tcp_forced_closes, stats.tcp_cut_bytes
            );
        } else {
            info!("shutdown done: no connection cut by the deadline");
        }
        Ok(stats)
    }

    /// Zero while sources wait on the ready list; otherwise until the
    /// earliest component deadline; forever when none has one (an idle
    /// server sleeps).
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.core.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        [
            self.acceptor.next_deadline(),
            self.table.next_deadline(),
            self.udp.next_deadline(),
            self.observers.next_deadline(),
            self.shutdown.next_deadline(),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|at| at.saturating_duration_since(now))
    }

    /// Hands one event to the component that owns its source.
    fn dispatch(&mut self, token: Token, readable: bool, writable: bool, hangup: bool) {
        let mut cx = self.core.cx();
        let now = cx.now;
        match token::classify(token) {
            source @ (Source::Conn(_)
            | Source::TlsConn(_)
            | Source::FaultConn(_)
            | Source::FaultTlsConn(_)
            | Source::Gate(_)) => self
                .table
                .on_event(source, readable, writable, hangup, &mut cx),
            Source::Listener(i) => self.acceptor.on_ready(i, &mut self.table, &mut cx),
            Source::Udp(i) => self.udp.on_ready(i, &mut cx),
            Source::Metrics => {
                let (table, udp, stats) = (&self.table, &self.udp, *cx.stats);
                let paused = self.acceptor.is_paused();
                self.observers.on_metrics_accept(cx.registry, now, || {
                    table.figures(with_rcvbuf_drops(stats, udp), paused)
                });
            }
            Source::MetricsClient(i) => {
                let (table, udp, stats) = (&self.table, &self.udp, *cx.stats);
                let paused = self.acceptor.is_paused();
                self.observers
                    .on_metrics_client(i, || table.figures(with_rcvbuf_drops(stats, udp), paused));
            }
            Source::Signal => {
                for step in self.shutdown.on_signal(now) {
                    self.apply_drain(step);
                }
            }
            Source::Waker => {
                for step in self.shutdown.on_wake(now) {
                    self.apply_drain(step);
                }
            }
            Source::Unknown => trace!("event for unknown token {}", token.0),
        }
    }

    /// Serves the sources that used up their budget in the last turn.
    fn serve_ready(&mut self) {
        let mut turn = std::mem::take(&mut self.core.turn);
        self.core.ready.take_turn(&mut turn);
        for &token in &turn {
            let mut cx = self.core.cx();
            match token::classify(token) {
                source @ (Source::Conn(_)
                | Source::TlsConn(_)
                | Source::FaultConn(_)
                | Source::FaultTlsConn(_)) => self.table.on_turn(source, &mut cx),
                Source::Listener(i) => self.acceptor.on_ready(i, &mut self.table, &mut cx),
                Source::Udp(i) => self.udp.on_ready(i, &mut cx),
                _ => {}
            }
        }
        turn.clear();
        self.core.turn = turn;
    }

    /// Runs every component's timers that are due.
    fn on_timers(&mut self) {
        let mut cx = self.core.cx();
        let now = cx.now;
        // A close frees a descriptor: accepting may resume before its timer.
        let freed = self.table.take_closed();
        self.acceptor.on_timer(freed, &mut self.table, &mut cx);
        self.table.on_timer(&mut cx);
        self.udp.on_timer(cx.now, cx.stats);
        if let Some(step) = self.shutdown.on_timer(now) {
            self.apply_drain(step);
        }
        let (table, udp, stats) = (&self.table, &self.udp, self.core.stats);
        let paused = self.acceptor.is_paused();
        self.observers.on_timer(now, self.core.poll.registry(), || {
            table.figures(with_rcvbuf_drops(stats, udp), paused)
        });
    }

    /// Carries out a step of the shutdown on the components.
    fn apply_drain(&mut self, step: DrainStep) {
        let mut cx = self.core.cx();
        match step {
            DrainStep::Begin => {
                info!(
                    "shutdown begun ({}): not accepting; {} connections open, busy ones served for up to {:.1} s",
                    self.shutdown.reason(),
                    self.table.len(),
                    self.shutdown.timeout().as_secs_f64()
                );
                self.acceptor.close(cx.registry);
                // The kernel's count goes with the sockets: keep the last.
                *cx.stats = with_rcvbuf_drops(*cx.stats, &self.udp);
                self.udp.close(cx.registry, cx.stats);
                // Scrapers get no answer from a server on its way out.
                self.observers.close_metrics();
                let idle = self.table.close_those_at_rest(&mut cx);
                info!(
                    "shutdown: closed {idle} idle connections; serving {} busy ones until their clients finish",
                    self.table.len()
                );
            }
            DrainStep::CloseAtRest => {
                let idle = self.table.close_those_at_rest(&mut cx);
                if idle > 0 {
                    debug!("shutdown: {idle} more connections came to rest and were closed");
                }
            }
            DrainStep::Cut { linger } => self.table.cut_busy(linger, &mut cx),
            DrainStep::CloseAll => self.table.close_all(&mut cx),
        }
    }
}

/// `stats` with the kernel's count of datagrams dropped at the UDP
/// sockets, read now; unchanged when it cannot be read (the sockets are
/// closed, or not Linux).
fn with_rcvbuf_drops(mut stats: Stats, udp: &UdpEndpoint) -> Stats {
    if let Some(drops) = udp.rcvbuf_drops() {
        stats.udp_rcvbuf_drops = drops;
    }
    stats
}
