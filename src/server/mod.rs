//! `Server`: owns the `Poll`, the listeners, the UDP sockets and the slab of
//! connections; `run` is the loop. Handlers for each kind of source live in
//! the submodules (`accept`, `conn`, `udp`, `shutdown`); this file binds,
//! dispatches events to them and keeps the loop's timers.
//!
//! Start reading at [`Server::run`].

pub mod accept;
pub mod cluster;
pub mod conn;
#[cfg(test)]
mod conn_props;
pub mod limits;
pub mod live;
pub mod metrics;
pub mod shutdown;
pub mod token;
pub mod udp;
#[cfg(target_os = "linux")]
pub mod udp_batch;

use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, trace, warn};
use mio::net::{TcpListener, UdpSocket};
use mio::{Events, Interest, Poll, Token, Waker};
use slab::Slab;

use crate::buffer::Watermarks;
use crate::mode::{Mode, Service};
use crate::net::{self, BindError, BindOptions};
use crate::stats::Stats;
use accept::AcceptState;
use conn::{CloseReason, Connection, Ctx, Limits, Progress, Tick};
use limits::{Sweep, Timeouts, UdpGuard};
use shutdown::Drain;
use token::Source;

/// The loop's one read buffer: large enough for the largest UDP datagram
/// (65,507 bytes over IPv4, 65,527 over IPv6) and for a healthy TCP read.
pub const SCRATCH_SIZE: usize = 64 * 1024;

/// How often a loop publishes its figures for `--stats` and `--metrics`.
const PUBLISH_EVERY: Duration = Duration::from_secs(1);

/// The most connection slots reserved up front (address space, not RSS).
const MAX_PREALLOCATED: usize = 1 << 20;

/// How many events one `poll` call may return.
const EVENTS_CAPACITY: usize = 1024;

/// Descriptors kept back from `--max-connections`' default for the server's
/// own sockets, the poll, logging, and the accept-and-close of rejects.
const FD_RESERVE: u64 = 32;

/// Everything a server needs to know before it binds.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// TCP addresses to listen on.
    pub tcp: Vec<SocketAddr>,
    /// UDP addresses to serve.
    pub udp: Vec<SocketAddr>,
    /// What to answer.
    pub service: Arc<dyn Service>,
    /// The listen backlog.
    pub backlog: i32,
    /// Per-connection backpressure.
    pub watermarks: Watermarks,
    /// The short-read shortcut (see `conn::Limits::short_read`).
    pub short_read: bool,
    /// Open connections at most; `None` derives it from the open-file limit.
    pub max_connections: Option<usize>,
    /// How long shutdown waits for pending output to drain.
    pub shutdown_timeout: Duration,
    /// Close a connection with no traffic either way for this long.
    pub idle_timeout: Option<Duration>,
    /// Close a connection whose pending output has not moved for this long.
    pub write_timeout: Option<Duration>,
    /// Answer each UDP source at most this many datagrams per second.
    pub udp_rate_limit: Option<u32>,
    /// Let UDP replies be larger than their requests (chargen's random
    /// 0-512 characters, daytime to short requests). Off: an open port
    /// must not be a reflection amplifier.
    pub udp_allow_amplification: bool,
    /// Log a statistics line this often (`--stats SECS`); only loop 0 does.
    pub stats_interval: Option<Duration>,
    /// Serve Prometheus metrics here (`--metrics ADDR`); only loop 0 does.
    pub metrics: Option<SocketAddr>,
    /// Where the loops publish their figures, shared by a cluster's loops;
    /// `None` makes a loop of its own when stats or metrics are on.
    pub live: Option<Arc<live::Live>>,
    /// This loop's number within its cluster (0 for a lone server).
    pub loop_index: usize,
    /// Receive and answer UDP in batches with `recvmmsg`/`sendmmsg`
    /// (Linux; ignored elsewhere). Off by default: on the 2-core test box it
    /// cut syscalls per datagram from 2.05 to 1.3 but did not raise
    /// datagrams per second (see BENCHMARKS.md).
    pub udp_batch: bool,
    /// Listen for SIGINT and SIGTERM (the binary does; embedders may not).
    pub handle_signals: bool,
    /// Set `SO_REUSEPORT` so several loops can bind the same addresses.
    /// Only [`cluster::Cluster`] sets it, and only for more than one loop,
    /// so a second server on a used port still fails loudly.
    pub reuse_port: bool,
}

impl Default for ServerConfig {
    /// No sockets yet, echo mode, backlog 1024, 5 s shutdown timeout, 60 s
    /// write timeout, no idle timeout, no UDP rate limit.
    fn default() -> Self {
        ServerConfig {
            tcp: Vec::new(),
            udp: Vec::new(),
            service: Arc::new(Mode::Echo),
            backlog: 1024,
            watermarks: Watermarks::default(),
            short_read: cfg!(target_os = "linux"),
            max_connections: None,
            shutdown_timeout: Duration::from_secs(5),
            idle_timeout: None,
            write_timeout: Some(Duration::from_secs(60)),
            udp_rate_limit: None,
            udp_allow_amplification: false,
            stats_interval: None,
            metrics: None,
            live: None,
            loop_index: 0,
            udp_batch: false,
            handle_signals: false,
            reuse_port: false,
        }
    }
}

/// Setting a server up failed.
#[derive(Debug)]
pub enum ServerError {
    /// A listener or UDP socket could not be bound.
    Bind(BindError),
    /// The poll, waker or signal source could not be created.
    Setup(&'static str, io::Error),
}

impl std::fmt::Display for ServerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ServerError::Bind(e) => e.fmt(f),
            ServerError::Setup(what, e) => write!(f, "cannot set up {what}: {e}"),
        }
    }
}

impl std::error::Error for ServerError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            ServerError::Bind(e) => Some(e),
            ServerError::Setup(_, e) => Some(e),
        }
    }
}

impl From<BindError> for ServerError {
    fn from(e: BindError) -> Self {
        ServerError::Bind(e)
    }
}

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

/// One TCP listener and the address it really bound.
#[derive(Debug)]
struct Listener {
    socket: TcpListener,
    addr: SocketAddr,
}

/// One readiness loop: sockets, connections, timers.
pub struct Server {
    poll: Poll,
    /// Emptied when shutdown begins, so new connects are refused.
    listeners: Vec<Listener>,
    tcp_addrs: Vec<SocketAddr>,
    udp: Vec<UdpSocket>,
    udp_addrs: Vec<SocketAddr>,
    /// Every open connection; the key is the mio token.
    conns: Slab<Connection>,
    /// The one buffer every read lands in.
    scratch: Box<[u8]>,
    /// Sources that used up their budget, served before the loop blocks.
    ready: Vec<Token>,
    /// The list being served right now (swapped with `ready`).
    ready_now: Vec<Token>,
    /// Which listeners and UDP sockets are on the ready list (connections
    /// carry their own flag). A source is queued at most once, so the list
    /// is bounded by the number of sources, and one that never drains (a
    /// UDP flood) gets one budget per turn, not one per event as well.
    listener_deferred: Vec<bool>,
    udp_deferred: Vec<bool>,
    limits: Limits,
    service: Arc<dyn Service>,
    max_connections: usize,
    shutdown_timeout: Duration,
    stats: Stats,
    accept: AcceptState,
    /// Idle and write timeouts, swept about once a second.
    sweep: Sweep,
    udp_guard: UdpGuard,
    /// `--write-timeout`, handed to the kernel for each connection
    /// (`TCP_USER_TIMEOUT`) so output stuck in its send queue times out too.
    kernel_write_timeout: Option<Duration>,
    /// `--udp-allow-amplification`.
    udp_allow_amplification: bool,
    /// The service's `udp_reply_floor` and `streams`, asked once instead
    /// of per datagram or per writable event.
    udp_reply_floor: usize,
    service_streams: bool,
    /// Live figures: the shared slots, this loop's slot, and when to
    /// publish next (`None` when neither stats nor metrics are on).
    live: Option<Arc<live::Live>>,
    loop_index: usize,
    publish_at: Option<Instant>,
    /// The `--stats` line (loop 0 only).
    reporter: Option<live::Reporter>,
    /// The `--metrics` endpoint (loop 0 only).
    metrics: Option<metrics::Endpoint>,
    /// Slots for batched UDP; `None` when off or there is no UDP socket.
    #[cfg(target_os = "linux")]
    udp_batch: Option<Box<udp_batch::UdpBatch>>,
    drain: Option<Drain>,
    signals: Option<signal_hook_mio::v1_0::Signals>,
    waker: Arc<Waker>,
    stop: Arc<AtomicBool>,
    epoch: Instant,
    now: Tick,
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
        let poll = Poll::new().map_err(|e| ServerError::Setup("poll", e))?;
        let opts = BindOptions {
            backlog: config.backlog,
            reuse_port: config.reuse_port,
        };
        let mut listeners = Vec::new();
        for (i, &addr) in config.tcp.iter().enumerate() {
            let mut socket = net::tcp_listener(addr, opts)?;
            let addr = socket.local_addr().map_err(|source| BindError {
                proto: "tcp",
                addr,
                source,
            })?;
            poll.registry()
                .register(&mut socket, token::listener(i), Interest::READABLE)
                .map_err(|e| ServerError::Setup("listener registration", e))?;
            listeners.push(Listener { socket, addr });
        }
        let mut udp = Vec::new();
        let mut udp_addrs = Vec::new();
        for (i, &addr) in config.udp.iter().enumerate() {
            let mut socket = net::udp_socket(addr, opts)?;
            let addr = socket.local_addr().map_err(|source| BindError {
                proto: "udp",
                addr,
                source,
            })?;
            poll.registry()
                .register(&mut socket, token::udp(i), Interest::READABLE)
                .map_err(|e| ServerError::Setup("udp registration", e))?;
            udp.push(socket);
            udp_addrs.push(addr);
        }
        let metrics = match config.metrics {
            Some(addr) => Some(metrics::Endpoint::bind(addr, poll.registry()).map_err(
                |source| BindError {
                    proto: "http",
                    addr,
                    source,
                },
            )?),
            None => None,
        };
        let observed = config.stats_interval.is_some() || metrics.is_some();
        let live = config.live.or_else(|| observed.then(|| live::Live::new(1)));
        let started = Instant::now();
        let udp_reply_floor = config.service.udp_reply_floor();
        let service_streams = config.service.streams();
        let waker = Waker::new(poll.registry(), token::WAKER)
            .map_err(|e| ServerError::Setup("waker", e))?;
        let signals = if config.handle_signals {
            Some(shutdown::register_signals(&poll).map_err(|e| ServerError::Setup("signals", e))?)
        } else {
            None
        };
        let own_ports = udp_addrs.iter().map(SocketAddr::port).collect();
        let max_connections = config
            .max_connections
            .unwrap_or_else(default_max_connections);
        Ok(Server {
            listener_deferred: vec![false; listeners.len()],
            udp_deferred: vec![false; udp.len()],
            poll,
            tcp_addrs: listeners.iter().map(|l| l.addr).collect(),
            listeners,
            udp,
            udp_addrs,
            // Reserve the whole table up front, as the C baseline does: pages
            // nobody touched cost no memory, and the table never moves, so
            // RSS grows by one entry per connection instead of doubling.
            conns: Slab::with_capacity(max_connections.min(MAX_PREALLOCATED)),
            scratch: vec![0; SCRATCH_SIZE].into_boxed_slice(),
            ready: Vec::new(),
            ready_now: Vec::new(),
            limits: Limits {
                watermarks: config.watermarks,
                short_read: config.short_read,
                ..Limits::default()
            },
            service: config.service,
            max_connections,
            shutdown_timeout: config.shutdown_timeout,
            stats: Stats::default(),
            accept: AcceptState::default(),
            sweep: Sweep::new(Timeouts::new(config.idle_timeout, config.write_timeout)),
            kernel_write_timeout: config.write_timeout.filter(|d| !d.is_zero()),
            udp_guard: UdpGuard::new(config.udp_rate_limit, own_ports),
            udp_allow_amplification: config.udp_allow_amplification,
            udp_reply_floor,
            service_streams,
            // A lone loop publishes right before it reports or answers a
            // scrape; only a cluster's loops need to publish on their own.
            publish_at: live
                .as_ref()
                .filter(|l| l.loops() > 1)
                .map(|_| started + PUBLISH_EVERY),
            live,
            loop_index: config.loop_index,
            reporter: config
                .stats_interval
                .map(|every| live::Reporter::new(every, started)),
            metrics,
            #[cfg(target_os = "linux")]
            udp_batch: (config.udp_batch && !config.udp.is_empty())
                .then(|| Box::new(udp_batch::UdpBatch::new())),
            drain: None,
            signals,
            waker: Arc::new(waker),
            stop: Arc::new(AtomicBool::new(false)),
            epoch: started,
            now: 0,
        })
    }

    /// The TCP addresses really bound, in `--tcp` order.
    pub fn tcp_addrs(&self) -> &[SocketAddr] {
        &self.tcp_addrs
    }

    /// The metrics endpoint's address, when `--metrics` is on.
    pub fn metrics_addr(&self) -> Option<SocketAddr> {
        self.metrics.as_ref().map(metrics::Endpoint::addr)
    }

    /// The UDP addresses really bound, in `--udp` order.
    pub fn udp_addrs(&self) -> &[SocketAddr] {
        &self.udp_addrs
    }

    /// A handle that stops this server from another thread.
    pub fn handle(&self) -> ServerHandle {
        ServerHandle {
            waker: Arc::clone(&self.waker),
            stop: Arc::clone(&self.stop),
        }
    }

    /// The counters so far.
    pub fn stats(&self) -> Stats {
        self.stats
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
            "serving mode {} on {} tcp and {} udp sockets (max connections {}, high watermark {} B)",
            self.service.name(),
            self.listeners.len(),
            self.udp.len(),
            self.max_connections,
            self.limits.watermarks.high
        );
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
        while !self.is_finished() {
            let timeout = self.poll_timeout(Instant::now());
            match self.poll.poll(&mut events, timeout) {
                Ok(()) => {}
                // A signal landed while blocked; the signal source reports it.
                Err(e) if net::is_interrupted(&e) => continue,
                Err(e) => return Err(e),
            }
            if log::log_enabled!(log::Level::Trace) {
                trace!(
                    "poll: woke with {} event(s), timeout was {timeout:?}",
                    events.iter().count()
                );
            }
            let now = Instant::now();
            self.now = self.tick(now);
            for event in events.iter() {
                // Errors and hang-ups are served as readable: the next read
                // reports them with their reason.
                let hangup = event.is_read_closed() || event.is_error();
                let readable = event.is_readable() || hangup;
                self.dispatch(event.token(), readable, event.is_writable(), hangup);
            }
            self.serve_ready();
            self.on_timers(now);
        }
        // The totals are the caller's to report (the binary logs one
        // `final stats` line, summed over a cluster's loops): logging them
        // here too would print the same figures twice.
        if self.stats.tcp_forced_closes > 0 {
            warn!(
                "shutdown done: {} connections cut by the deadline, {} B of echo undelivered",
                self.stats.tcp_forced_closes, self.stats.tcp_cut_bytes
            );
        } else {
            info!("shutdown done: every connection closed cleanly");
        }
        Ok(self.stats)
    }

    fn tick(&self, now: Instant) -> Tick {
        let tenths = now.duration_since(self.epoch).as_millis() / 100;
        Tick::try_from(tenths).unwrap_or(Tick::MAX)
    }

    /// Zero while sources wait on the ready list; otherwise until the next
    /// timer; forever when no timer is armed (an idle server sleeps).
    fn poll_timeout(&self, now: Instant) -> Option<Duration> {
        if !self.ready.is_empty() {
            return Some(Duration::ZERO);
        }
        [
            self.accept.resume_at(),
            self.drain.as_ref().map(Drain::next_at),
            self.sweep.next_at(),
            self.publish_at,
            self.reporter.as_ref().map(live::Reporter::next_at),
            self.metrics
                .as_ref()
                .and_then(metrics::Endpoint::next_deadline),
        ]
        .into_iter()
        .flatten()
        .min()
        .map(|at| at.saturating_duration_since(now))
    }

    fn dispatch(&mut self, token: Token, readable: bool, writable: bool, hangup: bool) {
        match token::classify(token) {
            Source::Conn(key) => self.on_conn_event(key, readable, writable, hangup),
            Source::Listener(i) => self.on_accept_ready(i),
            Source::Udp(i) => self.on_udp_ready(i),
            Source::Signal => self.on_signal(),
            Source::Waker => self.on_wake(),
            Source::Metrics => {
                if let Some(m) = &mut self.metrics {
                    m.on_accept_ready(self.poll.registry(), Instant::now());
                }
            }
            Source::MetricsClient(i) => self.on_metrics_client(i),
            Source::Unknown => trace!("event for unknown token {}", token.0),
        }
    }

    fn on_conn_event(&mut self, key: usize, readable: bool, writable: bool, hangup: bool) {
        trace!(
            "conn {key}: event{}{}{}",
            if readable { " readable" } else { "" },
            if writable { " writable" } else { "" },
            if hangup { " hangup" } else { "" }
        );
        self.drive(key, |conn, cx| {
            if hangup {
                conn.note_hangup();
            }
            let mut progress = Progress::Wait;
            if writable {
                progress = conn.on_writable(cx);
            }
            // A deferred connection reads when the ready list comes round.
            if readable && progress == Progress::Wait && !conn.is_deferred() {
                progress = conn.on_readable(cx);
            }
            progress
        });
    }

    /// Runs a handler on connection `key` with what it borrows from the
    /// loop, then carries out the `Progress` it returns. Nothing happens
    /// for a key with no connection (closed earlier in this batch).
    fn drive(
        &mut self,
        key: usize,
        handler: impl FnOnce(&mut Connection, &mut Ctx<'_>) -> Progress,
    ) {
        let Some(conn) = self.conns.get_mut(key) else {
            trace!("conn {key}: closed earlier in this batch, skipped");
            return;
        };
        let mut cx = Ctx {
            key,
            scratch: &mut self.scratch,
            service: &*self.service,
            streams: self.service_streams,
            limits: &self.limits,
            stats: &mut self.stats,
            now: self.now,
        };
        let progress = handler(conn, &mut cx);
        self.apply(key, progress);
    }

    /// Carries out what a connection handler asked for.
    fn apply(&mut self, key: usize, progress: Progress) {
        match progress {
            Progress::Wait => {}
            Progress::Again => {
                if let Some(conn) = self.conns.get_mut(key) {
                    if !conn.is_deferred() {
                        conn.set_deferred(true);
                        self.ready.push(token::from_key(key));
                    }
                }
            }
            Progress::Close(reason) => self.close(key, reason),
        }
    }

    /// Serves the sources that used up their budget in the last round. New
    /// deferrals wait for the next round, after a zero-timeout poll.
    fn serve_ready(&mut self) {
        std::mem::swap(&mut self.ready, &mut self.ready_now);
        let mut batch = std::mem::take(&mut self.ready_now);
        for &token in &batch {
            match token::classify(token) {
                Source::Conn(key) => self.drive(key, |conn, cx| {
                    // A reused key: this is a newer connection, not deferred.
                    if !conn.is_deferred() {
                        return Progress::Wait;
                    }
                    conn.set_deferred(false);
                    trace!("conn {}: its turn on the ready list", cx.key);
                    // Deferred by the read budget or by a stream's write
                    // budget: carry on with whichever it was.
                    let progress = conn.on_readable(cx);
                    if progress != Progress::Wait {
                        return progress;
                    }
                    conn.on_writable(cx)
                }),
                Source::Listener(i) => {
                    set_flag(&mut self.listener_deferred, i, false);
                    self.on_accept_ready(i);
                }
                Source::Udp(i) => {
                    set_flag(&mut self.udp_deferred, i, false);
                    self.on_udp_ready(i);
                }
                _ => {}
            }
        }
        batch.clear();
        self.ready_now = batch;
    }

    /// Puts a listener or UDP socket that used up its budget on the ready
    /// list, unless it is there already.
    fn defer_fixed(&mut self, token: Token) {
        let flag = match token::classify(token) {
            Source::Listener(i) => self.listener_deferred.get_mut(i),
            Source::Udp(i) => self.udp_deferred.get_mut(i),
            _ => None,
        };
        if let Some(flag) = flag {
            if !std::mem::replace(flag, true) {
                self.ready.push(token);
            }
        }
    }

    fn on_timers(&mut self, now: Instant) {
        if self.accept.resume_at().is_some_and(|at| now >= at) {
            self.resume_accepting();
        }
        if self.drain.is_some() {
            self.on_drain_timer(now);
        }
        self.on_sweep_timer(now);
        self.on_live_timers(now);
    }

    /// Publishes this loop's figures, logs the stats line and closes
    /// metrics clients past their deadline, each when due.
    fn on_live_timers(&mut self, now: Instant) {
        if self.publish_at.is_some_and(|at| now >= at) {
            self.publish();
            self.publish_at = Some(now + PUBLISH_EVERY);
        }
        if self.reporter.as_ref().is_some_and(|r| now >= r.next_at()) {
            self.publish();
            let total = self.live.as_ref().map(|l| l.total()).unwrap_or_default();
            if let Some(r) = &mut self.reporter {
                r.report(&total, now);
            }
        }
        if let Some(m) = &mut self.metrics {
            m.expire(now);
            m.on_timer(self.poll.registry(), now);
        }
    }

    /// Copies this loop's figures into its slot for the other loops.
    fn publish(&self) {
        if let Some(live) = &self.live {
            let now = snapshot(&self.conns, self.stats, self.accept.is_paused());
            live.publish(self.loop_index, now);
        }
    }

    /// A scraper's socket is ready: once its request is complete, answer
    /// it with fresh totals (this loop's published first).
    fn on_metrics_client(&mut self, i: usize) {
        let Some(m) = &mut self.metrics else {
            return;
        };
        let (conns, stats, paused) = (&self.conns, self.stats, self.accept.is_paused());
        let (live, index) = (&self.live, self.loop_index);
        m.on_client_ready(i, || {
            let Some(live) = live else {
                return String::new();
            };
            live.publish(index, snapshot(conns, stats, paused));
            metrics::render(&live.total(), live.loops(), live.uptime())
        });
    }

    /// Closes connection `key`: logs its story, counts it, and retries
    /// accepting if descriptors had run out.
    fn close(&mut self, key: usize, reason: CloseReason) {
        let Some(conn) = self.conns.try_remove(key) else {
            return;
        };
        self.stats.record_close(&reason);
        if log::log_enabled!(log::Level::Debug) {
            let (bytes_in, bytes_out) = conn.bytes();
            // The address from accept: asking the socket fails once the
            // peer has gone, which is exactly when this line matters.
            let peer = conn
                .peer()
                .map_or_else(|| "-".to_string(), |a| a.to_string());
            debug!(
                "conn {key} {peer}: closed: {reason} (in {bytes_in} B, out {bytes_out} B, {:.1} s)",
                f64::from(conn.age(self.now)) / 10.0
            );
        }
        // Dropping the stream closes the descriptor, which also removes it
        // from the epoll set: no deregister call needed.
        drop(conn);
        if self.accept.is_paused() {
            self.resume_accepting();
        }
    }

    fn on_wake(&mut self) {
        if self.stop.load(Ordering::SeqCst) {
            self.begin_shutdown("stop requested", Instant::now());
        }
    }
}

fn set_flag(flags: &mut [bool], i: usize, to: bool) {
    if let Some(flag) = flags.get_mut(i) {
        *flag = to;
    }
}

/// One loop's figures from its parts: counters, open connections, the
/// output they all still owe (summed here, once per report or scrape,
/// rather than tracked on every write), and whether accepting is paused.
fn snapshot(conns: &Slab<Connection>, stats: Stats, accept_paused: bool) -> live::Snapshot {
    live::Snapshot {
        stats,
        open: conns.len() as u64,
        pending_bytes: conns.iter().map(|(_, c)| c.pending_len() as u64).sum(),
        accept_paused,
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
