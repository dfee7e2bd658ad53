//! One load loop: a `Poll`, a slab of clients, the open-loop schedule,
//! connecting with retries, and the phases of a run (ramp, warmup,
//! measure, drain); connecting is in `connect`. It mirrors the server's loop: the loop alone calls
//! `poll` and owns the slab; clients never see each other.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, VecDeque};
use std::io;
use std::net::IpAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, trace, warn};
use mio::net::TcpStream;
use mio::{Events, Poll, Token};
use slab::Slab;

use super::client::contract::{count_end, ClientCtx, End, Pace, Settings, Step, Tally, Window};
use super::client::greeting::{Greeting, ProxyVersion};
use super::client::Client;
use super::report::TlsReport;
use super::stages::{Schedule, StageTally, StagedPace};
#[cfg(target_os = "linux")]
use super::timer;
use super::{
    report, Clock, LoadConfig, LoadError, ProgressBoard, Report, Target, WallWindow, MAX_HANDSHAKES,
};
use crate::net::{is_interrupted, is_peer_gone};
use crate::tls_client::TlsConnector;

mod connect;

/// How often the loop sweeps its clients for timeouts.
const SWEEP_EVERY: Duration = Duration::from_millis(50);

/// How often a loop publishes its figures to the [`ProgressBoard`] for the
/// progress line and the per-second intervals (more often than the
/// server's `--stats` publishing, which only feeds a once-a-second line). The collector takes them once a second, so a
/// figure lands in the wrong second by at most this much: 5% of a second.
const PROGRESS_PUBLISH_EVERY: Duration = Duration::from_millis(50);

/// The open-loop timer's token; slab keys never come near it.
const TIMER: Token = Token(usize::MAX);

/// After an interrupt (SIGINT, SIGTERM), how long at most the replies in
/// flight are awaited before the report is made.
const INTERRUPT_DRAIN: Duration = Duration::from_secs(1);

/// How long a connection that ended in error waits before `--reconnect`
/// opens it again: enough that a server refusing everyone is not hammered.
const RECONNECT_DELAY: Duration = Duration::from_millis(100);

/// Where a loop is in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ramp,
    Warmup { until: Instant },
    Measure { until: Instant },
    Drain { until: Instant },
    Done,
}

impl Phase {
    /// Clients send, and lost ones may be (re)connected, only before the
    /// drain.
    fn is_sending(self) -> bool {
        matches!(
            self,
            Phase::Ramp | Phase::Warmup { .. } | Phase::Measure { .. }
        )
    }
}

/// What a slab entry holds.
#[derive(Debug)]
enum Slot {
    /// A TCP handshake in progress.
    Connecting {
        stream: TcpStream,
        id: u64,
        /// When this connection counts as a connect error, retries and all.
        deadline: Instant,
        attempt: u32,
        /// When this attempt's `connect` went out (its SYN).
        began: Instant,
    },
    /// TCP is up; the PROXY header or the TLS handshake is on its way.
    Greeting {
        greeting: Greeting,
        id: u64,
        /// The connection's deadline, carried over from `Connecting`.
        deadline: Instant,
        /// When its `connect` went out, carried over from `Connecting`.
        began: Instant,
    },
    /// A client that is up: a TCP or TLS connection, or a UDP socket.
    Up(Client),
}

impl Slot {
    fn id(&self) -> u64 {
        match self {
            Slot::Connecting { id, .. } | Slot::Greeting { id, .. } => *id,
            Slot::Up(c) => c.id(),
        }
    }
}

/// A connection to start again later.
#[derive(Debug, Clone, Copy)]
struct Retry {
    at: Instant,
    id: u64,
    attempt: u32,
    /// The connection's deadline, carried over from its first attempt.
    deadline: Instant,
}

/// One poll loop and its share of the clients.
pub(super) struct Loop {
    poll: Poll,
    /// Every live client; the key is the mio token.
    slots: Slab<Slot>,
    scratch: Box<[u8]>,
    settings: Settings,
    target: Target,
    total_connections: usize,
    pipeline: usize,
    /// Time between two messages of one client (open loop).
    interval: Option<Duration>,
    /// `--stages`: the ramp every client's messages fall on, from the
    /// window's start.
    plan: Option<Arc<Schedule>>,
    /// Client numbers this loop starts, in order; `next` is the next one.
    ids: Vec<u64>,
    next: usize,
    /// Time between two connects of this loop (`--connect-rate`).
    connect_every: Option<Duration>,
    next_connect_at: Instant,
    handshakes: usize,
    retries: Vec<Retry>,
    /// Open loop: (next due time, key, id) per running client.
    due: BinaryHeap<Reverse<(Instant, usize, u64)>>,
    phase: Phase,
    started: Instant,
    /// The run's reading of both clocks: window times to wall-clock.
    clock: Clock,
    /// `--start-at` as an `Instant`: warm-up begins then, not before.
    start_at: Option<Instant>,
    /// `--source`: local addresses, taken in turn by connection number.
    sources: Vec<IpAddr>,
    /// How long the ramp took, once it is done.
    ramp: Duration,
    warmup: Duration,
    duration: Duration,
    drain_timeout: Duration,
    /// How long a connection may take to come up, all attempts together.
    connect_timeout: Duration,
    /// `tls://`: how each connection's TLS session begins.
    tls: Option<TlsConnector>,
    /// `--proxy-protocol`: the header each connection sends first.
    proxy: Option<ProxyVersion>,
    window: Window,
    tally: Tally,
    /// Clients established over the run (each once), and those up now.
    connected: u64,
    up: u64,
    /// `--reconnect`; the connections replaced so far; which clients have
    /// been up before (by position in `ids`), so a replacement is not
    /// counted as connected twice.
    reconnect: bool,
    reconnects: u64,
    been_up: Vec<bool>,
    /// The clients (by position in `ids`) whose first connection came up
    /// or gave up, and how many have not yet: the ramp is done at none.
    is_settled: Vec<bool>,
    ramp_left: usize,
    /// `--churn`: messages per connection, and whether it ends in a reset.
    churn: Option<u64>,
    churn_reset: bool,
    /// `--churn`: where the next connection of each client (by position
    /// in `ids`) goes on: its first message and its pace.
    carried: Vec<Option<(u64, Pace)>>,
    /// `--churn`: clients whose connection closed, waiting for a
    /// handshake slot to open the next.
    churn_queue: VecDeque<u64>,
    /// A connect ran out of local ports, and the log said so once.
    is_out_of_ports_told: bool,
    next_sweep: Instant,
    /// Where this loop publishes its figures, and its slot there; `None`
    /// when nobody reads them (no progress line, no intervals).
    board: Option<(ProgressBoard, usize)>,
    next_publish: Instant,
    max_loss_percent: f64,
    /// A stop was asked for (SIGINT, SIGTERM) and the run is ending early.
    is_interrupted: bool,
    /// Open loop on Linux: wakes the poll at the next due time exactly.
    #[cfg(target_os = "linux")]
    timer: Option<timer::Timer>,
}

impl Loop {
    pub(super) fn new(
        config: &LoadConfig,
        index: usize,
        board: Option<(ProgressBoard, usize)>,
        clock: Clock,
    ) -> Result<Loop, LoadError> {
        let poll = Poll::new().map_err(|e| LoadError::Setup("poll", e))?;
        let ids = config.connection_ids(index);
        let mine = ids.len();
        let now = Instant::now();
        #[cfg(target_os = "linux")]
        let timer = match config.rate.is_some() || !config.stages.is_empty() {
            true => Some(
                timer::Timer::new(poll.registry(), TIMER)
                    .map_err(|e| LoadError::Setup("timerfd", e))?,
            ),
            false => None,
        };
        let plan = (!config.stages.is_empty()).then(|| Arc::new(Schedule::new(&config.stages)));
        Ok(Loop {
            #[cfg(target_os = "linux")]
            timer,
            poll,
            slots: Slab::with_capacity(ids.len()),
            scratch: vec![0; crate::net::SCRATCH_SIZE].into_boxed_slice(),
            settings: Settings {
                size: config.size,
                expect: config.expect,
                short_read: cfg!(target_os = "linux"),
                udp_reply_timeout: config.udp_reply_timeout,
            },
            target: config.target,
            total_connections: config.connections,
            pipeline: config.pipeline,
            // Validated: in range, so these are some (and never zero).
            interval: config.message_interval(),
            plan: plan.clone(),
            ids,
            next: 0,
            connect_every: config.connect_interval(),
            next_connect_at: now,
            handshakes: 0,
            retries: Vec::new(),
            due: BinaryHeap::new(),
            phase: Phase::Ramp,
            started: now,
            clock,
            start_at: config.start_at.map(|t| clock.instant(t)),
            sources: config.sources.clone(),
            ramp: Duration::ZERO,
            warmup: config.warmup,
            duration: config.duration,
            drain_timeout: config.drain_timeout,
            connect_timeout: config.connect_timeout,
            tls: config.tls.clone(),
            proxy: config.proxy_protocol,
            window: Window::default(),
            tally: Tally {
                tls: config
                    .tls
                    .as_ref()
                    .map(|t| TlsReport::new(t.server_name(), t.is_verified())),
                stages: plan.map(StageTally::new),
                ..Tally::new(board.is_some())
            },
            connected: 0,
            up: 0,
            reconnect: config.reconnect,
            reconnects: 0,
            been_up: vec![false; mine],
            is_settled: vec![false; mine],
            ramp_left: mine,
            churn: config.churn,
            churn_reset: config.churn_reset,
            carried: vec![None; if config.churn.is_some() { mine } else { 0 }],
            churn_queue: VecDeque::new(),
            is_out_of_ports_told: false,
            next_sweep: now + SWEEP_EVERY,
            board,
            next_publish: now,
            max_loss_percent: config.max_loss_percent,
            is_interrupted: false,
        })
    }

    /// The loop: poll, hand events to clients, run timers, until `Done`;
    /// once `stop` is set, stop sending and drain for a short while.
    pub(super) fn run(&mut self, stop: &AtomicBool) -> Result<Report, LoadError> {
        let mut events = Events::with_capacity(crate::net::EVENTS_CAPACITY);
        self.on_timers(Instant::now());
        while self.phase != Phase::Done {
            let timeout = self.poll_timeout(Instant::now());
            match self.poll.poll(&mut events, Some(timeout)) {
                Ok(()) => {}
                Err(e) if is_interrupted(&e) => continue,
                Err(e) => return Err(LoadError::Poll(e)),
            }
            let now = Instant::now();
            for event in events.iter() {
                // Errors and hang-ups are served as readable: the next read
                // reports them with their reason.
                let hangup = event.is_read_closed() || event.is_error();
                let readable = event.is_readable() || hangup;
                let writable = event.is_writable() || event.is_error();
                self.on_event(event.token().0, readable, writable, hangup, now);
            }
            self.on_timers(now);
            // The poll wakes at least every SWEEP_EVERY: a stop is seen
            // within that.
            if !self.is_interrupted && stop.load(Ordering::Relaxed) {
                self.on_interrupt(now);
            }
        }
        self.publish();
        Ok(self.report())
    }

    fn report(&mut self) -> Report {
        let mut r = Report::new(self.target.proto, self.target.addr, self.ids.len());
        if let (Some(s), Some(e)) = (self.window.start, self.window.end) {
            r.window = Some(WallWindow {
                start: self.clock.wall(s),
                end: self.clock.wall(e),
            });
        }
        r.connected = self.connected;
        r.reconnects = self.reconnects;
        r.ramp = self.ramp;
        r.duration = match (self.window.start, self.window.end) {
            (Some(s), Some(e)) => e.saturating_duration_since(s),
            _ => Duration::ZERO,
        };
        r.messages = self.tally.messages;
        r.bytes = self.tally.bytes;
        r.sent = self.tally.sent;
        r.errors = self.tally.errors;
        r.reordered = self.tally.reordered;
        r.late = self.tally.late;
        r.mismatch_upper = self.tally.mismatch_upper;
        r.rcvbuf_drops = self.tally.rcvbuf_drops;
        r.latency = std::mem::replace(&mut self.tally.latency, report::new_histogram());
        r.tls = self.tally.tls.take();
        r.connects = std::mem::take(&mut self.tally.connects);
        r.max_loss_percent = self.max_loss_percent;
        r.first_error = self.tally.first_error.clone();
        r.interrupted = self.is_interrupted;
        if let Some(stages) = self.tally.stages.take() {
            let share = self.ids.len() as f64 / self.total_connections.max(1) as f64;
            r.stages = stages.into_reports(share, self.tally.errors.total());
        }
        r
    }

    /// Interrupted: end the window now and give the replies in flight a
    /// short drain, so the report covers the run so far.
    fn on_interrupt(&mut self, now: Instant) {
        self.is_interrupted = true;
        debug!("load: interrupted; draining for at most {INTERRUPT_DRAIN:?}");
        let grace = self.drain_timeout.min(INTERRUPT_DRAIN);
        match self.phase {
            Phase::Ramp | Phase::Warmup { .. } | Phase::Measure { .. } => {
                if self.window.start.is_some() {
                    self.window.end = Some(now);
                }
                self.begin_drain(now, grace);
            }
            Phase::Drain { until } => self.set_phase(Phase::Drain {
                until: until.min(now + grace),
            }),
            Phase::Done => {}
        }
    }

    /// When the poll must return for a message due at `due`: then, or,
    /// with the timerfd armed for it, a millisecond later as a fallback.
    fn wake_for_due(&mut self, due: Instant, now: Instant) -> Instant {
        #[cfg(target_os = "linux")]
        if let Some(timer) = &mut self.timer {
            match timer.arm(due, now) {
                Ok(()) => return due + Duration::from_millis(1),
                Err(e) => debug!("load: timerfd: {e}; using the poll timeout"),
            }
        }
        let _ = now;
        due
    }

    /// Until the earliest of: next sweep, next due message, next connect,
    /// next retry, the phase's end.
    fn poll_timeout(&mut self, now: Instant) -> Duration {
        let mut at = self.next_sweep;
        if let Some(&Reverse((due, _, _))) = self.due.peek() {
            at = at.min(self.wake_for_due(due, now));
        }
        if self.next < self.ids.len() && self.handshakes < MAX_HANDSHAKES {
            at = at.min(self.next_connect_at);
        }
        if let Some(r) = self.retries.iter().map(|r| r.at).min() {
            at = at.min(r);
        }
        if !self.churn_queue.is_empty() && self.handshakes < MAX_HANDSHAKES {
            at = now;
        }
        match self.phase {
            Phase::Warmup { until } | Phase::Measure { until } | Phase::Drain { until } => {
                at = at.min(until);
            }
            Phase::Ramp | Phase::Done => {}
        }
        at.saturating_duration_since(now)
    }

    fn on_event(&mut self, key: usize, readable: bool, writable: bool, hangup: bool, now: Instant) {
        if Token(key) == TIMER {
            // The due messages go out in `on_timers`, right after.
            #[cfg(target_os = "linux")]
            if let Some(timer) = &mut self.timer {
                timer.on_fire();
            }
            return;
        }
        let Some(slot) = self.slots.get_mut(key) else {
            // Closed earlier in this batch: a spurious event.
            return;
        };
        let mut cx = ClientCtx {
            settings: &self.settings,
            now,
            window: self.window,
            tally: &mut self.tally,
        };
        let step = match slot {
            Slot::Connecting { .. } => {
                self.on_connect_ready(key, now);
                return;
            }
            Slot::Greeting { greeting, .. } => {
                if hangup {
                    greeting.note_hangup();
                }
                self.on_greeting_ready(key, now);
                return;
            }
            Slot::Up(c) => {
                if hangup {
                    c.note_hangup();
                }
                c.on_ready(readable, writable, &mut self.scratch, &mut cx)
            }
        };
        self.apply(key, step);
    }

    /// Carries out what a client handler asked for.
    fn apply(&mut self, key: usize, step: Step) {
        let end = match step {
            Step::Wait => return,
            Step::Close(end) => end,
            Step::Finished => match self.finish(key) {
                Some(end) => end,
                None => return,
            },
        };
        let Some(slot) = self.slots.try_remove(key) else {
            return;
        };
        let Slot::Up(client) = &slot else {
            return;
        };
        let (in_flight, who) = (client.in_flight(), client.label());
        self.tally.rcvbuf_drops += client.rcvbuf_drops();
        self.up = self.up.saturating_sub(1);
        if !matches!(end, End::Done | End::Closed) {
            debug!("{who}: ended: {end} ({in_flight} in flight)");
        }
        count_end(&mut self.tally, end, in_flight, &who);
        // Dropping the socket closes it and takes it out of the epoll set.
        if end == End::Closed && self.phase.is_sending() {
            trace!("{who}: churned; opening the next");
            self.churn_queue.push_back(slot.id());
            return;
        }
        if self.reconnect && self.phase.is_sending() && !matches!(end, End::Done | End::Closed) {
            trace!("{who}: reconnecting in {RECONNECT_DELAY:?}");
            self.reconnects += 1;
            let at = Instant::now() + RECONNECT_DELAY;
            self.retries.push(Retry {
                at,
                id: slot.id(),
                attempt: 0,
                deadline: at + self.connect_timeout,
            });
        }
    }

    /// `--churn`: a client carried its messages. Notes where the next
    /// connection in its place goes on; then, with `--churn-reset`, ends
    /// it at once with a reset, or else sends our end and waits for the
    /// server's. `Some(end)` when it ends now.
    fn finish(&mut self, key: usize) -> Option<End> {
        let Some(Slot::Up(client)) = self.slots.get_mut(key) else {
            return None;
        };
        let (id, carry) = (client.id(), client.carried());
        let end = if self.churn_reset {
            if let Err(e) = client.reset_on_close() {
                debug!("{}: SO_LINGER 0: {e}; closing with FIN", client.label());
            }
            Some(End::Closed)
        } else {
            match client.close_write() {
                Ok(()) => None,
                Err(e) if is_peer_gone(&e) => Some(End::Reset),
                Err(e) => Some(End::Io(e.kind())),
            }
        };
        if let (Some(at), Some(carry)) = (self.ids.binary_search(&id).ok(), carry) {
            if let Some(slot) = self.carried.get_mut(at) {
                *slot = Some(carry);
            }
        }
        end
    }

    /// Notes that client `id` is up; true the first time, false when it
    /// is a replacement (`--reconnect`, `--churn`).
    fn first_time_up(&mut self, id: u64) -> bool {
        self.settle(id);
        match self.ids.binary_search(&id) {
            Ok(at) => !std::mem::replace(&mut self.been_up[at], true),
            Err(_) => true,
        }
    }

    /// Client `id`'s first connection came up or gave up: one fewer for
    /// the ramp to wait for.
    fn settle(&mut self, id: u64) {
        if let Ok(at) = self.ids.binary_search(&id) {
            if !std::mem::replace(&mut self.is_settled[at], true) {
                self.ramp_left -= 1;
            }
        }
    }

    /// `--churn`: where client `id`'s next connection begins (its first
    /// message) and at what pace; from the start for its first one.
    fn lineage(&self, id: u64, now: Instant) -> (u64, Pace) {
        self.ids
            .binary_search(&id)
            .ok()
            .and_then(|at| self.carried.get(at).cloned().flatten())
            .unwrap_or_else(|| (0, self.pace(id, now)))
    }

    /// The pace of a new client: closed loop, or its own share of `--rate`,
    /// phased so the clients' messages spread over each interval.
    fn pace(&self, id: u64, now: Instant) -> Pace {
        if let Some(plan) = &self.plan {
            return Pace::Staged(StagedPace::joining(
                Arc::clone(plan),
                self.window.start,
                id,
                self.total_connections as u64,
                now,
            ));
        }
        match self.interval {
            None => Pace::Closed {
                pipeline: self.pipeline,
            },
            Some(interval) => {
                let frac =
                    (id % self.total_connections as u64) as f64 / self.total_connections as f64;
                Pace::Open {
                    first: now + interval.mul_f64(frac),
                    interval,
                }
            }
        }
    }

    /// Lets a new (or due) client send what its pace allows, and puts it
    /// back on the schedule.
    fn kick(&mut self, key: usize, now: Instant) {
        let Some(slot) = self.slots.get_mut(key) else {
            return;
        };
        let mut cx = ClientCtx {
            settings: &self.settings,
            now,
            window: self.window,
            tally: &mut self.tally,
        };
        let Slot::Up(c) = slot else {
            return;
        };
        let step = c.send(&mut self.scratch, &mut cx);
        let (next_due, id) = (c.next_due(now), c.id());
        if let (Step::Wait, Some(at)) = (step, next_due) {
            self.due.push(Reverse((at, key, id)));
        }
        self.apply(key, step);
    }

    // ---- timers ----

    fn on_timers(&mut self, now: Instant) {
        if self.phase.is_sending() {
            self.start_connects(now);
        }
        while let Some(&Reverse((at, key, id))) = self.due.peek() {
            if at > now {
                break;
            }
            self.due.pop();
            if self.slots.get(key).is_some_and(|s| s.id() == id) {
                self.kick(key, now);
            }
        }
        if let (Some(stages), Phase::Measure { .. }) = (&mut self.tally.stages, self.phase) {
            stages.mark(now, self.tally.errors.total());
        }
        if now >= self.next_sweep {
            self.sweep(now);
            self.next_sweep = now + SWEEP_EVERY;
        }
        self.advance_phase(now);
        if self.board.is_some() && now >= self.next_publish {
            self.publish();
            self.next_publish = now + PROGRESS_PUBLISH_EVERY;
        }
    }

    /// Connect timeouts and UDP reply timeouts.
    fn sweep(&mut self, now: Instant) {
        let mut expired = Vec::new();
        let mut steps = Vec::new();
        for (key, slot) in self.slots.iter_mut() {
            match slot {
                Slot::Connecting { deadline, .. } | Slot::Greeting { deadline, .. } => {
                    if now >= *deadline {
                        expired.push(key);
                    }
                }
                Slot::Up(c) => {
                    let mut cx = ClientCtx {
                        settings: &self.settings,
                        now,
                        window: self.window,
                        tally: &mut self.tally,
                    };
                    let step = c.on_tick(&mut self.scratch, &mut cx);
                    if step != Step::Wait {
                        steps.push((key, step));
                    }
                }
            }
        }
        for key in expired {
            match self.slots.try_remove(key) {
                Some(Slot::Connecting { id, .. }) => {
                    self.handshakes -= 1;
                    let e = io::Error::new(
                        io::ErrorKind::TimedOut,
                        "no handshake within the connect timeout (--connect-timeout)",
                    );
                    self.connect_gave_up(id, &e);
                }
                Some(Slot::Greeting { id, .. }) => {
                    self.handshakes -= 1;
                    self.greeting_timed_out(id);
                }
                // The list holds the handshakes just seen, nothing else.
                Some(Slot::Up(_)) | None => {}
            }
        }
        for (key, step) in steps {
            self.apply(key, step);
        }
    }

    /// Every phase change goes through here, so the log tells the story.
    fn set_phase(&mut self, phase: Phase) {
        debug!("load: phase {:?} -> {:?}", self.phase, phase);
        self.phase = phase;
    }

    /// Every client's first connection came up or gave up. With
    /// `--churn`, handshakes go on all the time: those of replacements do
    /// not hold the ramp up.
    fn is_ramp_done(&self) -> bool {
        let is_settled = self.handshakes == 0 || (self.churn.is_some() && self.ramp_left == 0);
        self.next == self.ids.len() && is_settled && self.retries.is_empty()
    }

    fn advance_phase(&mut self, now: Instant) {
        match self.phase {
            Phase::Ramp if self.is_ramp_done() => {
                self.ramp = now.saturating_duration_since(self.started);
                if self.slots.is_empty() {
                    info!("load: no connection came up; stopping");
                    self.set_phase(Phase::Done);
                } else {
                    debug!(
                        "load: ramp done, {} {} up",
                        self.up,
                        self.target.proto.peers()
                    );
                    let begin = self.begin_warmup_at(now);
                    self.set_phase(Phase::Warmup {
                        until: begin + self.warmup,
                    });
                    self.advance_phase(now);
                }
            }
            Phase::Warmup { until } if now >= until => {
                debug!("load: measuring for {} s", self.duration.as_secs_f64());
                self.window.start = Some(now);
                self.set_phase(Phase::Measure {
                    until: now + self.duration,
                });
                self.begin_stages(now);
            }
            // All clients gone early (the server closed them) and none to
            // open again: nothing left to measure.
            Phase::Measure { until }
                if now >= until
                    || (self.slots.is_empty()
                        && self.retries.is_empty()
                        && self.churn_queue.is_empty()) =>
            {
                self.window.end = Some(now);
                self.begin_drain(now, self.drain_timeout);
            }
            Phase::Drain { .. } if self.slots.is_empty() => self.set_phase(Phase::Done),
            Phase::Drain { until } if now >= until => {
                let keys: Vec<usize> = self.slots.iter().map(|(k, _)| k).collect();
                for key in keys {
                    self.apply(key, Step::Close(End::Timeout));
                }
                self.slots.clear();
                self.set_phase(Phase::Done);
            }
            _ => {}
        }
    }

    /// `--stages`: the ramp begins with the window; every client up now
    /// learns when, and sends what falls due.
    fn begin_stages(&mut self, now: Instant) {
        let Some(stages) = &mut self.tally.stages else {
            return;
        };
        stages.origin = Some(now);
        let mut keys = Vec::with_capacity(self.slots.len());
        for (key, slot) in self.slots.iter_mut() {
            if let Slot::Up(c) = slot {
                c.begin_schedule(now);
                keys.push(key);
            }
        }
        for key in keys {
            self.kick(key, now);
        }
    }

    /// When warm-up begins: now, or at `--start-at` if that is later.
    /// Until then the connections exchange uncounted traffic, as in the
    /// ramp, so no idle timeout closes them while they wait.
    fn begin_warmup_at(&self, now: Instant) -> Instant {
        let Some(start) = self.start_at else {
            return now;
        };
        let late = now.saturating_duration_since(start);
        if late > Duration::from_millis(10) {
            warn!(
                "load: ramp ended {:.3} s after --start-at; this segment's window begins late",
                late.as_secs_f64()
            );
        }
        start.max(now)
    }

    /// Stops every client sending; those with nothing in flight end now.
    fn begin_drain(&mut self, now: Instant, grace: Duration) {
        self.set_phase(Phase::Drain { until: now + grace });
        self.due.clear();
        // No new connections in the drain: a pending retry would only keep
        // the poll timeout at zero.
        self.retries.clear();
        self.churn_queue.clear();
        let mut steps = Vec::new();
        for (key, slot) in self.slots.iter_mut() {
            let step = match slot {
                Slot::Up(c) => {
                    let mut cx = ClientCtx {
                        settings: &self.settings,
                        now,
                        window: self.window,
                        tally: &mut self.tally,
                    };
                    c.stop_sending(&mut self.scratch, &mut cx)
                }
                // A handshake in progress goes on: the server may have
                // accepted it already, so it comes up, counts as a
                // connect, and closes at once (see `go_up`), or fails.
                Slot::Connecting { .. } | Slot::Greeting { .. } => Step::Wait,
            };
            steps.push((key, step));
        }
        for (key, step) in steps {
            self.apply(key, step);
        }
        if self.slots.is_empty() {
            self.set_phase(Phase::Done);
        }
    }

    /// Hands this loop's figures to the progress board.
    fn publish(&mut self) {
        let Some((board, index)) = &self.board else {
            return;
        };
        let Ok(mut slots) = board.lock() else {
            return;
        };
        let Some(slot) = slots.get_mut(*index) else {
            return;
        };
        slot.up = self.up;
        slot.errors = self.tally.errors.total();
        if let Some(recent) = &mut self.tally.recent {
            slot.recent.take_from(recent);
        }
    }
}
