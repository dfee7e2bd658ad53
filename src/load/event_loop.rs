//! One load loop: a `Poll`, a slab of clients, the open-loop schedule,
//! connecting with retries, and the phases of a run (ramp, warmup,
//! measure, drain). It mirrors the server's loop: the loop alone calls
//! `poll` and owns the slab; clients never see each other.

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use log::{debug, info, trace};
use mio::net::{TcpStream, UdpSocket};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

use super::conn::{count_end, Ctx, End, Pace, Settings, Step, Tally, TcpClient, Window};
#[cfg(target_os = "linux")]
use super::timer;
use super::udp::UdpClient;
use super::{report, Live, LoadConfig, LoadError, Proto, Report, Target, MAX_HANDSHAKES};
use crate::net::is_interrupted;

/// Attempts per connection before it counts as a connect error.
const CONNECT_ATTEMPTS: u32 = 3;

/// How long one connect attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);

/// First retry delay; doubles per attempt.
const RETRY_BACKOFF: Duration = Duration::from_millis(50);

/// How often the loop sweeps its clients for timeouts.
const SWEEP_EVERY: Duration = Duration::from_millis(50);

/// How often a loop publishes its live figures for the progress line.
const PUBLISH_EVERY: Duration = Duration::from_millis(250);

/// The loop's read and write buffer, and the largest UDP message.
const SCRATCH_SIZE: usize = 64 * 1024;

/// How many events one `poll` call may return.
const EVENTS_CAPACITY: usize = 1024;

/// The open-loop timer's token; slab keys never come near it.
const TIMER: Token = Token(usize::MAX);

/// Where a loop is in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Ramp,
    Warmup { until: Instant },
    Measure { until: Instant },
    Drain { until: Instant },
    Done,
}

/// What a slab entry holds.
#[derive(Debug)]
enum Slot {
    /// A TCP handshake in progress.
    Connecting {
        stream: TcpStream,
        id: u64,
        since: Instant,
        attempt: u32,
    },
    Tcp(TcpClient),
    Udp(UdpClient),
}

impl Slot {
    fn id(&self) -> u64 {
        match self {
            Slot::Connecting { id, .. } => *id,
            Slot::Tcp(c) => c.id(),
            Slot::Udp(c) => c.id(),
        }
    }
}

/// A connection to start again later.
#[derive(Debug, Clone, Copy)]
struct Retry {
    at: Instant,
    id: u64,
    attempt: u32,
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
    /// How long the ramp took, once it is done.
    ramp: Duration,
    warmup: Duration,
    duration: Duration,
    drain_timeout: Duration,
    window: Window,
    tally: Tally,
    /// Clients established over the run, and those up now.
    connected: u64,
    up: u64,
    next_sweep: Instant,
    live: Option<(Live, usize)>,
    next_publish: Instant,
    max_loss_percent: f64,
    /// Open loop on Linux: wakes the poll at the next due time exactly.
    #[cfg(target_os = "linux")]
    timer: Option<timer::Timer>,
}

impl Loop {
    pub(super) fn new(
        config: &LoadConfig,
        index: usize,
        live: Option<(Live, usize)>,
    ) -> Result<Loop, LoadError> {
        let poll = Poll::new().map_err(|e| LoadError::Setup("poll", e))?;
        let threads = config.threads;
        let ids: Vec<u64> = (index..config.connections)
            .step_by(threads)
            .map(|i| i as u64)
            .collect();
        let now = Instant::now();
        #[cfg(target_os = "linux")]
        let timer = match config.rate {
            Some(_) => Some(
                timer::Timer::new(poll.registry(), TIMER)
                    .map_err(|e| LoadError::Setup("timerfd", e))?,
            ),
            None => None,
        };
        Ok(Loop {
            #[cfg(target_os = "linux")]
            timer,
            poll,
            slots: Slab::with_capacity(ids.len()),
            scratch: vec![0; SCRATCH_SIZE].into_boxed_slice(),
            settings: Settings {
                size: config.size,
                expect: config.expect,
                short_read: cfg!(target_os = "linux"),
                udp_reply_timeout: config.udp_reply_timeout,
            },
            target: config.target,
            total_connections: config.connections,
            pipeline: config.pipeline,
            interval: config
                .rate
                .map(|r| Duration::from_secs_f64(config.connections as f64 / r)),
            ids,
            next: 0,
            connect_every: config
                .connect_rate
                .map(|r| Duration::from_secs_f64(threads as f64 / r)),
            next_connect_at: now,
            handshakes: 0,
            retries: Vec::new(),
            due: BinaryHeap::new(),
            phase: Phase::Ramp,
            started: now,
            ramp: Duration::ZERO,
            warmup: config.warmup,
            duration: config.duration,
            drain_timeout: config.drain_timeout,
            window: Window::default(),
            tally: Tally::new(live.is_some()),
            connected: 0,
            up: 0,
            next_sweep: now + SWEEP_EVERY,
            live,
            next_publish: now,
            max_loss_percent: config.max_loss_percent,
        })
    }

    /// The loop: poll, hand events to clients, run timers, until `Done`.
    pub(super) fn run(&mut self) -> Result<Report, LoadError> {
        let mut events = Events::with_capacity(EVENTS_CAPACITY);
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
                let readable = event.is_readable() || event.is_read_closed() || event.is_error();
                let writable = event.is_writable() || event.is_error();
                self.on_event(event.token().0, readable, writable, now);
            }
            self.on_timers(now);
        }
        self.publish();
        Ok(self.report())
    }

    fn report(&mut self) -> Report {
        let mut r = Report::new(self.target.proto, self.target.addr, self.ids.len());
        r.connected = self.connected;
        r.ramp = self.ramp;
        r.duration = match (self.window.start, self.window.end) {
            (Some(s), Some(e)) => e.saturating_duration_since(s),
            _ => Duration::ZERO,
        };
        r.messages = self.tally.messages;
        r.bytes = self.tally.bytes;
        r.sent = self.tally.sent;
        r.errors = self.tally.errors;
        r.latency = std::mem::replace(&mut self.tally.latency, report::new_histogram());
        r.max_loss_percent = self.max_loss_percent;
        r.first_error = self.tally.first_error.clone();
        r
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
        match self.phase {
            Phase::Warmup { until } | Phase::Measure { until } | Phase::Drain { until } => {
                at = at.min(until);
            }
            Phase::Ramp | Phase::Done => {}
        }
        at.saturating_duration_since(now)
    }

    fn on_event(&mut self, key: usize, readable: bool, writable: bool, now: Instant) {
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
        let mut cx = Ctx {
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
            Slot::Tcp(c) => {
                let mut step = Step::Wait;
                if writable {
                    step = c.on_writable(&mut self.scratch, &mut cx);
                }
                if readable && step == Step::Wait {
                    step = c.on_readable(&mut self.scratch, &mut cx);
                }
                step
            }
            Slot::Udp(c) => {
                let mut step = Step::Wait;
                if readable {
                    step = c.on_readable(&mut self.scratch, &mut cx);
                }
                if writable && step == Step::Wait {
                    step = c.pump(&mut self.scratch, &mut cx);
                }
                step
            }
        };
        self.apply(key, step);
    }

    /// Carries out what a client handler asked for.
    fn apply(&mut self, key: usize, step: Step) {
        let Step::Close(end) = step else {
            return;
        };
        let Some(slot) = self.slots.try_remove(key) else {
            return;
        };
        let (in_flight, who) = match &slot {
            Slot::Tcp(c) => (c.in_flight(), format!("tcp conn {}", c.id())),
            Slot::Udp(c) => (c.in_flight(), format!("udp socket {}", c.id())),
            Slot::Connecting { .. } => return,
        };
        self.up = self.up.saturating_sub(1);
        if end != End::Done {
            debug!("{who}: ended: {end} ({in_flight} in flight)");
        }
        count_end(&mut self.tally, end, in_flight, &who);
        // Dropping the socket closes it and takes it out of the epoll set.
    }

    // ---- connecting ----

    fn start_connects(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.retries.len() {
            if self.retries[i].at <= now && self.handshakes < MAX_HANDSHAKES {
                let r = self.retries.swap_remove(i);
                self.start_one(r.id, r.attempt, now);
            } else {
                i += 1;
            }
        }
        while self.next < self.ids.len()
            && self.handshakes < MAX_HANDSHAKES
            && now >= self.next_connect_at
        {
            let id = self.ids[self.next];
            self.next += 1;
            if let Some(every) = self.connect_every {
                // Keep to the schedule, but never save up a burst.
                self.next_connect_at = (self.next_connect_at + every).max(now);
            }
            self.start_one(id, 0, now);
        }
    }

    fn start_one(&mut self, id: u64, attempt: u32, now: Instant) {
        let result = match self.target.proto {
            Proto::Tcp => self.start_tcp(id, attempt, now),
            Proto::Udp => self.start_udp(id, now),
        };
        if let Err(e) = result {
            self.connect_failed(id, attempt, &e, now);
        }
    }

    fn start_tcp(&mut self, id: u64, attempt: u32, now: Instant) -> io::Result<()> {
        let mut stream = TcpStream::connect(self.target.addr)?;
        let entry = self.slots.vacant_entry();
        self.poll.registry().register(
            &mut stream,
            Token(entry.key()),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        trace!("tcp conn {id}: connecting (attempt {})", attempt + 1);
        entry.insert(Slot::Connecting {
            stream,
            id,
            since: now,
            attempt,
        });
        self.handshakes += 1;
        Ok(())
    }

    fn start_udp(&mut self, id: u64, now: Instant) -> io::Result<()> {
        let local: SocketAddr = if self.target.addr.is_ipv6() {
            (Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let mut socket = UdpSocket::bind(local)?;
        socket.connect(self.target.addr)?;
        let pace = self.pace(id, now);
        let entry = self.slots.vacant_entry();
        let key = entry.key();
        self.poll.registry().register(
            &mut socket,
            Token(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        entry.insert(Slot::Udp(UdpClient::new(socket, id, pace)));
        self.connected += 1;
        self.up += 1;
        self.kick(key, now);
        Ok(())
    }

    /// A handshake's socket reported: established, failed, or not yet.
    fn on_connect_ready(&mut self, key: usize, now: Instant) {
        let Some(Slot::Connecting { stream, .. }) = self.slots.get(key) else {
            return;
        };
        let outcome = match stream.take_error() {
            Ok(Some(e)) | Err(e) => Err(e),
            Ok(None) => match stream.peer_addr() {
                Ok(_) => Ok(true),
                // Still in progress: a spurious wakeup.
                Err(e) if e.kind() == io::ErrorKind::NotConnected => Ok(false),
                Err(e) => Err(e),
            },
        };
        match outcome {
            Ok(false) => {}
            Ok(true) => self.on_established(key, now),
            Err(e) => {
                if let Some(Slot::Connecting { id, attempt, .. }) = self.slots.try_remove(key) {
                    self.handshakes -= 1;
                    self.connect_failed(id, attempt, &e, now);
                }
            }
        }
    }

    fn on_established(&mut self, key: usize, now: Instant) {
        let Some(Slot::Connecting { stream, id, .. }) = self.slots.try_remove(key) else {
            return;
        };
        self.handshakes -= 1;
        // Small request/response messages: never wait for Nagle.
        if let Err(e) = stream.set_nodelay(true) {
            debug!("tcp conn {id}: TCP_NODELAY: {e}");
        }
        let mut client = TcpClient::new(stream, id, self.pace(id, now));
        let entry = self.slots.vacant_entry();
        let new_key = entry.key();
        // The slab reuses the key just freed, so the registration holds;
        // should it ever not, the token follows the key.
        if new_key != key {
            if let Err(e) = self.poll.registry().reregister(
                client.stream_mut(),
                Token(new_key),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                count_end(
                    &mut self.tally,
                    End::Io(e.kind()),
                    0,
                    &format!("tcp conn {id}"),
                );
                return;
            }
        }
        entry.insert(Slot::Tcp(client));
        self.connected += 1;
        self.up += 1;
        trace!("tcp conn {id}: established");
        self.kick(new_key, now);
    }

    fn connect_failed(&mut self, id: u64, attempt: u32, e: &io::Error, now: Instant) {
        if attempt + 1 < CONNECT_ATTEMPTS {
            debug!(
                "conn {id}: connect attempt {} failed: {e}; retrying",
                attempt + 1
            );
            self.retries.push(Retry {
                at: now + RETRY_BACKOFF * 2u32.pow(attempt),
                id,
                attempt: attempt + 1,
            });
            return;
        }
        debug!("conn {id}: connect failed: {e}");
        self.tally.errors.connect += 1;
        let target = self.target;
        self.tally.note(|| format!("connect to {target}: {e}"));
    }

    /// The pace of a new client: closed loop, or its own share of `--rate`,
    /// phased so the clients' messages spread over each interval.
    fn pace(&self, id: u64, now: Instant) -> Pace {
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
        let mut cx = Ctx {
            settings: &self.settings,
            now,
            window: self.window,
            tally: &mut self.tally,
        };
        let (step, next_due, id) = match slot {
            Slot::Tcp(c) => (
                c.on_writable(&mut self.scratch, &mut cx),
                c.next_due(now),
                c.id(),
            ),
            Slot::Udp(c) => (c.pump(&mut self.scratch, &mut cx), c.next_due(now), c.id()),
            Slot::Connecting { .. } => return,
        };
        if let (Step::Wait, Some(at)) = (step, next_due) {
            self.due.push(Reverse((at, key, id)));
        }
        self.apply(key, step);
    }

    // ---- timers ----

    fn on_timers(&mut self, now: Instant) {
        if matches!(
            self.phase,
            Phase::Ramp | Phase::Warmup { .. } | Phase::Measure { .. }
        ) {
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
        if now >= self.next_sweep {
            self.sweep(now);
            self.next_sweep = now + SWEEP_EVERY;
        }
        self.advance_phase(now);
        if self.live.is_some() && now >= self.next_publish {
            self.publish();
            self.next_publish = now + PUBLISH_EVERY;
        }
    }

    /// Connect timeouts and UDP reply timeouts.
    fn sweep(&mut self, now: Instant) {
        let mut expired = Vec::new();
        let mut steps = Vec::new();
        for (key, slot) in self.slots.iter_mut() {
            match slot {
                Slot::Connecting { since, .. } => {
                    if now.saturating_duration_since(*since) >= CONNECT_TIMEOUT {
                        expired.push(key);
                    }
                }
                Slot::Udp(c) => {
                    let mut cx = Ctx {
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
                Slot::Tcp(_) => {}
            }
        }
        for key in expired {
            if let Some(Slot::Connecting { id, attempt, .. }) = self.slots.try_remove(key) {
                self.handshakes -= 1;
                let e = io::Error::new(io::ErrorKind::TimedOut, "handshake timed out");
                self.connect_failed(id, attempt, &e, now);
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

    fn is_ramp_done(&self) -> bool {
        self.next == self.ids.len() && self.handshakes == 0 && self.retries.is_empty()
    }

    fn advance_phase(&mut self, now: Instant) {
        match self.phase {
            Phase::Ramp if self.is_ramp_done() => {
                self.ramp = now.saturating_duration_since(self.started);
                if self.slots.is_empty() {
                    info!("load: no connection came up; stopping");
                    self.set_phase(Phase::Done);
                } else {
                    debug!("load: ramp done, {} connections up", self.up);
                    self.set_phase(Phase::Warmup {
                        until: now + self.warmup,
                    });
                    self.advance_phase(now);
                }
            }
            Phase::Warmup { until } if now >= until => {
                self.window.start = Some(now);
                self.set_phase(Phase::Measure {
                    until: now + self.duration,
                });
            }
            // All clients gone early (the server closed them): nothing left
            // to measure.
            Phase::Measure { until } if now >= until || self.slots.is_empty() => {
                self.window.end = Some(now);
                self.begin_drain(now);
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

    /// Stops every client sending; those with nothing in flight end now.
    fn begin_drain(&mut self, now: Instant) {
        self.set_phase(Phase::Drain {
            until: now + self.drain_timeout,
        });
        self.due.clear();
        let size = self.settings.size;
        let mut steps = Vec::new();
        for (key, slot) in self.slots.iter_mut() {
            let step = match slot {
                Slot::Tcp(c) => c.stop_sending(size),
                Slot::Udp(c) => c.stop_sending(),
                Slot::Connecting { .. } => Step::Close(End::Done),
            };
            steps.push((key, step));
        }
        for (key, step) in steps {
            if let Some(Slot::Connecting { .. }) = self.slots.get(key) {
                self.slots.remove(key);
                self.handshakes -= 1;
                continue;
            }
            // A TCP client with a half-written message finishes it first.
            if let Some(Slot::Tcp(_)) = self.slots.get(key) {
                if step == Step::Wait {
                    self.kick(key, now);
                    continue;
                }
            }
            self.apply(key, step);
        }
        if self.slots.is_empty() {
            self.set_phase(Phase::Done);
        }
    }

    /// Hands this loop's live figures to the progress line.
    fn publish(&mut self) {
        let Some((live, index)) = &self.live else {
            return;
        };
        let Ok(mut slots) = live.lock() else {
            return;
        };
        let Some(slot) = slots.get_mut(*index) else {
            return;
        };
        slot.up = self.up;
        slot.errors = self.tally.errors.total();
        slot.recent_messages += std::mem::take(&mut self.tally.recent_messages);
        if let Some(h) = &mut self.tally.recent_latency {
            let _ = slot.recent_latency.add(&*h);
            h.reset();
        }
    }
}
