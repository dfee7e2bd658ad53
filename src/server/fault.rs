//! Faults on purpose (`serve --fault KIND[=VALUE][@PROBABILITY]`): a
//! server that is slow, stingy, chopped up, rude or wrong in controlled
//! ways, for testing clients, proxies and timeouts against it.
//!
//! [`FaultPlan`] is what the operator asked for. [`FaultStream`] wraps a
//! connection's transport (plain or TLS: a fault acts on the plaintext,
//! before encryption) and carries the plan out on the connection's
//! replies: it holds a delayed reply (and what follows it, so stream order
//! stays), paces output to a rate, writes in slices, flips a bit, and ends
//! the connection with FIN or RST after a reply. The connection itself
//! does not know: it reads, answers and writes as always, and the stream
//! says when it is owed output or has ended.
//!
//! Held replies need timers: the connection table keeps one heap of
//! wake-ups for all its connections (see `table.rs`), so thousands of
//! held replies cost one structure and the loop serves everyone else
//! meanwhile. The UDP faults (`drop`, `delay`, `corrupt`) live in the UDP
//! endpoint, with a heap of its own.
//!
//! Without `--fault` none of this exists: connections use the plain
//! transports, and the only trace on their path is a call that compiles
//! to nothing.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::conn::{Stream, Tick};
use super::observe::Stats;
use super::transport::{Ending, FaultEnd, TransportNews};
use crate::net::{is_would_block, KernelQueues, TcpProgress};

/// What a fault does.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum FaultKind {
    /// Hold each reply this long before writing it.
    Delay(Duration),
    /// Pace each connection's output to this many bytes a second.
    Rate(u64),
    /// Write replies in pieces of at most this many bytes, each its own
    /// write.
    Slice(usize),
    /// After a reply, FIN and close.
    Close,
    /// After a reply, close with RST.
    Reset,
    /// Stop reading and answering; leave the connection open.
    Stall,
    /// Flip one bit of a reply.
    Corrupt,
    /// UDP: do not send the reply.
    Drop,
}

impl FaultKind {
    /// The kind's name on the command line, in counters and metrics.
    pub fn name(&self) -> &'static str {
        match self {
            FaultKind::Delay(_) => "delay",
            FaultKind::Rate(_) => "rate",
            FaultKind::Slice(_) => "slice",
            FaultKind::Close => "close",
            FaultKind::Reset => "reset",
            FaultKind::Stall => "stall",
            FaultKind::Corrupt => "corrupt",
            FaultKind::Drop => "drop",
        }
    }

    /// True for faults that act on TCP and TLS connections.
    pub fn applies_to_tcp(&self) -> bool {
        !matches!(self, FaultKind::Drop)
    }

    /// True for faults that act on UDP replies.
    pub fn applies_to_udp(&self) -> bool {
        matches!(
            self,
            FaultKind::Delay(_) | FaultKind::Corrupt | FaultKind::Drop
        )
    }

    /// True when the probability is drawn once per connection (stall,
    /// rate) rather than per reply.
    pub fn is_per_connection(&self) -> bool {
        matches!(self, FaultKind::Stall | FaultKind::Rate(_))
    }
}

/// One fault and how often it strikes.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Fault {
    /// What it does.
    pub kind: FaultKind,
    /// From 0 to 1: per reply, or per connection for stall and rate.
    pub probability: f64,
}

impl fmt::Display for Fault {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.kind.name())?;
        match self.kind {
            FaultKind::Delay(d) => write!(f, "={d:?}")?,
            FaultKind::Rate(r) => write!(f, "={r} B/s")?,
            FaultKind::Slice(s) => write!(f, "={s} B")?,
            _ => {}
        }
        if self.probability < 1.0 {
            write!(f, "@{}", self.probability)?;
        }
        Ok(())
    }
}

/// The faults a server injects, and the seed that makes a run repeatable.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct FaultPlan {
    /// The faults, in the order given.
    pub faults: Vec<Fault>,
    /// The random draws' seed.
    pub seed: u64,
}

impl FaultPlan {
    /// True when some fault acts on TCP and TLS connections.
    pub fn has_tcp(&self) -> bool {
        self.faults.iter().any(|f| f.kind.applies_to_tcp())
    }

    /// True when some fault acts on UDP replies.
    pub fn has_udp(&self) -> bool {
        self.faults.iter().any(|f| f.kind.applies_to_udp())
    }
}

/// A small, fast generator for the draws (splitmix64): repeatable from
/// the seed, and no dependency for it.
#[derive(Debug, Clone, Copy)]
pub struct Draws(u64);

impl Draws {
    /// Draws starting from `seed`.
    pub fn new(seed: u64) -> Draws {
        Draws(seed)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// True with probability `p`.
    pub fn chance(&mut self, p: f64) -> bool {
        p >= 1.0 || ((self.next_u64() >> 11) as f64 / (1u64 << 53) as f64) < p
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n.max(1) as u64) as usize
    }
}

/// Counts one injection of `kind`.
pub fn count(stats: &mut Stats, kind: &FaultKind) {
    *match kind {
        FaultKind::Delay(_) => &mut stats.faults_delay,
        FaultKind::Rate(_) => &mut stats.faults_rate,
        FaultKind::Slice(_) => &mut stats.faults_slice,
        FaultKind::Close => &mut stats.faults_close,
        FaultKind::Reset => &mut stats.faults_reset,
        FaultKind::Stall => &mut stats.faults_stall,
        FaultKind::Corrupt => &mut stats.faults_corrupt,
        FaultKind::Drop => &mut stats.faults_drop,
    } += 1;
}

/// Most bytes a connection's stream holds back (delayed, paced, sliced)
/// before it says `WouldBlock`, so the usual backpressure stops reading.
/// Each held reply also counts [`HELD_OVERHEAD`] against it, so a flood of
/// one-byte replies is bounded in memory too, not only in bytes.
pub const HOLD_CAP: usize = 256 * 1024;

/// What one held reply costs beside its bytes: its entry and the
/// allocator's share of its buffer.
const HELD_OVERHEAD: usize = std::mem::size_of::<Held>() + 16;

/// Most writes one turn of held output makes (sliced replies are many
/// small writes): then the connection waits for its next turn, as a read
/// budget makes a reader wait, so one connection cannot hold the loop.
const PUMP_WRITES: usize = 64;

/// The smallest amount worth a pacing wake-up: a rate is kept by
/// writing at least this much at a time (less for slow rates, whose
/// bursts are a tenth of a second's worth).
const PACE_QUANTUM: u64 = 1460;

/// The most a pace lets out at once: 1 MiB, ten milliseconds at 100 MB/s.
const PACE_MAX_BURST: u64 = 1 << 20;

/// One reply, or its part still held.
#[derive(Debug)]
struct Held {
    /// The reply it is (its number).
    reply: u64,
    /// When it may be written.
    due: Instant,
    bytes: Vec<u8>,
    /// Of `bytes`, written.
    sent: usize,
    /// Bytes of the reply still to come from the connection.
    to_come: usize,
    /// Its writes are at most this long.
    slice: Option<usize>,
    /// How the connection ends once this reply is out.
    then: Option<Ending>,
}

/// What one reply will suffer, and how much of it the connection has
/// yet to write. The connection writes replies in order, so the bytes of
/// each `write` belong to the oldest reply not yet written whole.
#[derive(Debug, Clone, Copy, Default)]
struct ReplyFaults {
    /// Its number, to tell its held part from the next reply's.
    id: u64,
    delay: Option<Duration>,
    slice: Option<usize>,
    corrupt: bool,
    then: Option<Ending>,
    /// Bytes of this reply the connection has yet to write.
    to_come: usize,
}

impl ReplyFaults {
    fn is_plain(&self) -> bool {
        self.delay.is_none() && self.slice.is_none() && !self.corrupt && self.then.is_none()
    }
}

/// A token bucket for `rate`.
#[derive(Debug, Clone, Copy)]
struct Pace {
    per_sec: u64,
    tokens: u64,
    since: Instant,
}

impl Pace {
    fn refill(&mut self, now: Instant) {
        let earned =
            (now.saturating_duration_since(self.since).as_secs_f64() * self.per_sec as f64) as u64;
        if earned > 0 {
            self.tokens = (self.tokens + earned).min(self.burst());
            self.since = now;
        }
    }

    /// The bucket's size: twenty milliseconds' worth (at least a segment,
    /// or a tenth of a second's worth for slow rates), so that a wake-up
    /// a millisecond late, as poll timeouts are, loses nothing.
    fn burst(&self) -> u64 {
        let floor = (self.per_sec / 10).min(PACE_QUANTUM);
        (self.per_sec / 50).max(floor).clamp(1, PACE_MAX_BURST)
    }

    /// When to wake for `want` bytes: once half a bucket (or `want`) is
    /// earned, so that a late wake-up finds the bucket not yet full and
    /// no token is lost to its cap.
    fn when(&self, want: u64) -> Instant {
        let target = want.min(self.burst() / 2).max(1);
        let missing = target.saturating_sub(self.tokens).max(1);
        self.since + Duration::from_secs_f64(missing as f64 / self.per_sec as f64)
    }
}

/// What making a fault stream needs: the plan and the loop's draws.
#[derive(Debug)]
pub struct FaultSetup<T> {
    /// The transport's own setup.
    pub inner: T,
    /// What to inject.
    pub plan: Arc<FaultPlan>,
    /// The loop's draws, for each new connection's seed.
    pub draws: std::cell::Cell<Draws>,
}

/// A transport that misbehaves as the plan says.
pub struct FaultStream<S> {
    inner: S,
    plan: Arc<FaultPlan>,
    draws: Draws,
    /// Stall: read nothing, answer nothing.
    stalled: bool,
    pace: Option<Pace>,
    /// Replies announced and not yet written whole, oldest first.
    replies: VecDeque<ReplyFaults>,
    /// The number the next reply gets.
    next_reply: u64,
    held: VecDeque<Held>,
    /// Bytes held, and what they cost in memory (bytes plus
    /// [`HELD_OVERHEAD`] per held reply).
    held_bytes: usize,
    held_cost: usize,
    /// A reply already drawn `close` or `reset`: the connection ends
    /// after it, so the replies behind it are never written, and drawing
    /// faults for them would count injections that never act.
    end_coming: bool,
    /// A fault ended the connection: every call now says so.
    ended: Option<Ending>,
    /// The end is not yet told to the table (see `take_news`).
    end_untold: bool,
    /// When held output can next move (a delay runs out, a pace refills).
    wake_at: Option<Instant>,
    /// The wake-up the table's heap holds for us.
    armed_wake: Option<Instant>,
}

impl<S: fmt::Debug> fmt::Debug for FaultStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultStream")
            .field("inner", &self.inner)
            .field("stalled", &self.stalled)
            .field("held_bytes", &self.held_bytes)
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl<S: Stream> FaultStream<S> {
    /// Wraps a new connection's transport, drawing the faults that hold
    /// for the whole connection (stall, rate) and counting them.
    pub fn new(inner: S, plan: Arc<FaultPlan>, seed: u64, stats: &mut Stats) -> FaultStream<S> {
        let mut draws = Draws::new(seed);
        let mut stalled = false;
        let mut pace = None;
        for f in plan.faults.iter().filter(|f| f.kind.applies_to_tcp()) {
            match f.kind {
                FaultKind::Stall if !stalled && draws.chance(f.probability) => {
                    stalled = true;
                    count(stats, &f.kind);
                }
                FaultKind::Rate(per_sec) if pace.is_none() && draws.chance(f.probability) => {
                    let now = Instant::now();
                    let mut p = Pace {
                        per_sec: per_sec.max(1),
                        tokens: 0,
                        since: now,
                    };
                    p.tokens = p.burst();
                    pace = Some(p);
                    count(stats, &f.kind);
                }
                _ => {}
            }
        }
        FaultStream {
            inner,
            plan,
            draws,
            stalled,
            pace,
            replies: VecDeque::new(),
            next_reply: 0,
            held: VecDeque::new(),
            held_bytes: 0,
            held_cost: 0,
            end_coming: false,
            ended: None,
            end_untold: false,
            wake_at: None,
            armed_wake: None,
        }
    }

    /// The transport inside.
    pub fn inner_mut(&mut self) -> &mut S {
        &mut self.inner
    }

    fn ended_error(&self) -> Option<io::Error> {
        self.ended.map(|e| {
            let kind = match e {
                Ending::Close => io::ErrorKind::UnexpectedEof,
                Ending::Reset => io::ErrorKind::ConnectionAborted,
            };
            io::Error::new(kind, FaultEnd(e))
        })
    }

    /// Writes what is due and allowed: held replies in order, in slices,
    /// at the pace; sets the next wake-up when something must wait.
    fn pump(&mut self) -> io::Result<()> {
        self.wake_at = None;
        let now = Instant::now();
        for _ in 0..PUMP_WRITES {
            let Some(front) = self.held.front_mut() else {
                return Ok(());
            };
            if front.due > now {
                self.wake_at = Some(front.due);
                return Ok(());
            }
            if front.sent == front.bytes.len() {
                if front.to_come > 0 {
                    // The rest of this reply has yet to come from the
                    // connection; what follows waits behind it.
                    return Ok(());
                }
                let then = front.then;
                self.pop_front();
                if let Some(end) = then {
                    return self.end(end);
                }
                continue;
            }
            let mut chunk = front.bytes.len() - front.sent;
            if let Some(s) = front.slice {
                chunk = chunk.min(s);
            }
            if let Some(p) = &mut self.pace {
                p.refill(now);
                if p.tokens == 0 {
                    self.wake_at = Some(p.when(chunk as u64));
                    return Ok(());
                }
                chunk = chunk.min(p.tokens as usize);
            }
            match self
                .inner
                .write(&front.bytes[front.sent..front.sent + chunk])
            {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    front.sent += n;
                    self.held_bytes -= n;
                    if let Some(p) = &mut self.pace {
                        p.tokens = p.tokens.saturating_sub(n as u64);
                    }
                    if front.sent == front.bytes.len() && front.to_come == 0 {
                        // Free the reply's memory as soon as it is out.
                        let then = front.then;
                        self.pop_front();
                        if let Some(end) = then {
                            return self.end(end);
                        }
                    }
                }
                // Full: the writable edge resumes us.
                Err(e) if is_would_block(&e) => return Ok(()),
                Err(e) => return Err(e),
            }
        }
        // The turn's writes are spent: the rest at the next turn of the
        // loop, after everyone else's events.
        if !self.held.is_empty() {
            self.wake_at = Some(now);
        }
        Ok(())
    }

    /// Drops the oldest held reply, all of it written.
    fn pop_front(&mut self) {
        if let Some(h) = self.held.pop_front() {
            self.held_cost -= h.bytes.len() + HELD_OVERHEAD;
        }
    }

    /// A fault ends the connection now: FIN at once for `close` (so the
    /// peer sees the end right after the reply), RST on close for `reset`.
    fn end(&mut self, end: Ending) -> io::Result<()> {
        self.ended = Some(end);
        self.end_untold = true;
        match end {
            Ending::Close => {
                let _ = self.inner.shutdown_write();
            }
            Ending::Reset => {
                let _ = self.inner.reset_on_close();
            }
        }
        Err(self
            .ended_error()
            .unwrap_or_else(|| io::ErrorKind::Other.into()))
    }
}

impl<S: Stream> Read for FaultStream<S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(e) = self.ended_error() {
            return Err(e);
        }
        if self.stalled {
            // A black hole: the input stays in the kernel.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.inner.read(buf)
    }
}

impl<S: Stream> Write for FaultStream<S> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if let Some(e) = self.ended_error() {
            return Err(e);
        }
        if self.stalled {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // These bytes are the oldest unfinished reply's (a stream that
        // announces none, chargen's, is one long plain reply); a write
        // that runs into the next reply stops at the boundary, and the
        // connection writes the rest next.
        let spec = self.replies.front().copied().unwrap_or_default();
        let data = match spec.to_come {
            0 => data,
            left => &data[..data.len().min(left)],
        };
        if self.held.is_empty() && spec.is_plain() && self.pace.is_none() {
            // Nothing to do to these bytes: straight through.
            let n = self.inner.write(data)?;
            self.took(n);
            return Ok(n);
        }
        let joins = matches!(
            self.held.back(),
            Some(back) if back.reply == spec.id && back.to_come > 0
        );
        let overhead = if joins { 0 } else { HELD_OVERHEAD };
        let room = HOLD_CAP.saturating_sub(self.held_cost + overhead);
        if room == 0 {
            self.pump()?;
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = data.len().min(room);
        let mut bytes = data[..n].to_vec();
        if spec.corrupt && !bytes.is_empty() {
            let at = self.draws.below(bytes.len());
            bytes[at] ^= 1 << self.draws.below(8);
            if let Some(front) = self.replies.front_mut() {
                front.corrupt = false;
            }
        }
        let to_come = spec.to_come.saturating_sub(n);
        match self.held.back_mut() {
            // More of a reply already held: it joins it.
            Some(back) if back.reply == spec.id && back.to_come > 0 => {
                back.bytes.extend_from_slice(&bytes);
                back.to_come = to_come;
            }
            _ => self.held.push_back(Held {
                reply: spec.id,
                due: Instant::now() + spec.delay.unwrap_or_default(),
                bytes,
                sent: 0,
                to_come,
                slice: spec.slice,
                then: spec.then,
            }),
        }
        self.held_bytes += n;
        self.held_cost += n + overhead;
        self.took(n);
        match self.pump() {
            Ok(()) => Ok(n),
            // These bytes are taken (held, or written before a fault's
            // end): the connection counts them, and learns of the end from
            // the next call, or from `take_news` if it makes none.
            Err(_) if self.ended.is_some() => Ok(n),
            Err(e) => Err(e),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        self.pump()
    }
}

impl<S> FaultStream<S> {
    /// `n` bytes of the oldest unfinished reply were taken.
    fn took(&mut self, n: usize) {
        if let Some(front) = self.replies.front_mut() {
            front.to_come = front.to_come.saturating_sub(n);
            if front.to_come == 0 {
                self.replies.pop_front();
            }
        }
    }
}

impl<S: Stream> Stream for FaultStream<S> {
    /// A stall ends here too: the drain's cut lingers by reading what the
    /// peer sends until it closes, and a black hole would never close.
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.stalled = false;
        self.inner.shutdown_write()
    }

    fn reset_on_close(&self) -> io::Result<()> {
        self.inner.reset_on_close()
    }

    fn kernel_queues(&self) -> Option<KernelQueues> {
        self.inner.kernel_queues()
    }

    /// The kernel's account, with our held bytes still owed.
    fn tcp_progress(&self) -> Option<TcpProgress> {
        let mut p = self.inner.tcp_progress()?;
        p.bytes_acked = p.bytes_acked.saturating_sub(self.held_bytes as u64);
        Some(p)
    }

    fn transport_backlog(&self) -> bool {
        !self.held.is_empty() || self.inner.transport_backlog()
    }

    fn flush_transport(&mut self) -> io::Result<()> {
        if let Some(e) = self.ended_error() {
            return Err(e);
        }
        self.inner.flush_transport()?;
        self.pump()
    }

    fn handshake_since(&self) -> Option<Tick> {
        self.inner.handshake_since()
    }

    fn advance_handshake(&mut self, is_hangup_reported: bool) -> io::Result<bool> {
        self.inner.advance_handshake(is_hangup_reported)
    }

    fn take_news(&mut self) -> Option<TransportNews> {
        if let Some(news) = self.inner.take_news() {
            return Some(news);
        }
        match self.ended {
            Some(end) if self.end_untold => {
                self.end_untold = false;
                Some(TransportNews::Ended(end))
            }
            _ => None,
        }
    }

    fn end_pending(&self) -> bool {
        self.inner.end_pending()
    }

    fn begin_reply(&mut self, len: usize, stats: &mut Stats) {
        if len == 0 {
            return;
        }
        let mut r = ReplyFaults {
            id: self.next_reply,
            to_come: len,
            ..ReplyFaults::default()
        };
        self.next_reply += 1;
        if self.end_coming {
            self.replies.push_back(r);
            return;
        }
        for f in self.plan.faults.iter() {
            if f.kind.is_per_connection() || !f.kind.applies_to_tcp() {
                continue;
            }
            if !self.draws.chance(f.probability) {
                continue;
            }
            let took = match f.kind {
                FaultKind::Delay(d) if r.delay.is_none() => {
                    r.delay = Some(d);
                    true
                }
                FaultKind::Slice(s) if r.slice.is_none() => {
                    r.slice = Some(s.max(1));
                    true
                }
                FaultKind::Corrupt if !r.corrupt => {
                    r.corrupt = true;
                    true
                }
                FaultKind::Close if r.then.is_none() => {
                    r.then = Some(Ending::Close);
                    true
                }
                FaultKind::Reset if r.then.is_none() => {
                    r.then = Some(Ending::Reset);
                    true
                }
                _ => false,
            };
            if took {
                count(stats, &f.kind);
            }
        }
        self.end_coming = r.then.is_some();
        self.replies.push_back(r);
    }

    fn wake_at(&self) -> Option<Instant> {
        self.wake_at
    }

    fn arm_wake(&mut self, at: Instant) -> bool {
        let is_new = self.armed_wake != Some(at);
        self.armed_wake = Some(at);
        is_new
    }

    fn disarm_wake(&mut self, at: Instant) -> bool {
        let is_armed = self.armed_wake == Some(at);
        if is_armed {
            self.armed_wake = None;
        }
        is_armed
    }

    fn held_back(&self) -> u64 {
        self.held_bytes as u64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes everything and counts its writes.
    #[derive(Debug, Default)]
    struct Sink {
        out: Vec<u8>,
        writes: usize,
        shut: bool,
    }

    impl Read for Sink {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(io::ErrorKind::WouldBlock.into())
        }
    }

    impl Write for Sink {
        fn write(&mut self, data: &[u8]) -> io::Result<usize> {
            self.writes += 1;
            self.out.extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Stream for Sink {
        fn shutdown_write(&mut self) -> io::Result<()> {
            self.shut = true;
            Ok(())
        }
    }

    fn stream(kind: FaultKind) -> (FaultStream<Sink>, Stats) {
        let plan = FaultPlan {
            faults: vec![Fault {
                kind,
                probability: 1.0,
            }],
            seed: 7,
        };
        let mut stats = Stats::default();
        let s = FaultStream::new(Sink::default(), Arc::new(plan), 7, &mut stats);
        (s, stats)
    }

    #[test]
    fn one_byte_replies_held_by_a_delay_are_bounded_by_their_count_too() {
        let (mut s, mut stats) = stream(FaultKind::Delay(Duration::from_secs(60)));
        let mut taken = 0;
        for _ in 0..HOLD_CAP {
            s.begin_reply(1, &mut stats);
            match s.write(b"x") {
                Ok(n) => taken += n,
                Err(e) if is_would_block(&e) => break,
                Err(e) => panic!("unexpected {e}"),
            }
        }
        assert!(
            taken > 0 && taken <= HOLD_CAP / HELD_OVERHEAD,
            "held {taken} replies"
        );
        assert!(s.held_cost <= HOLD_CAP);
        assert!(s.inner.out.is_empty(), "a delayed reply went out at once");
    }

    #[test]
    fn a_sliced_reply_makes_at_most_a_budget_of_writes_per_turn() {
        let (mut s, mut stats) = stream(FaultKind::Slice(1));
        s.begin_reply(10_000, &mut stats);
        assert_eq!(s.write(&[b'a'; 10_000]).ok(), Some(10_000));
        assert_eq!(s.inner.writes, PUMP_WRITES);
        assert!(s.wake_at().is_some(), "the rest must be woken for");
        for _ in 0..10_000 {
            if s.inner.out.len() == 10_000 {
                break;
            }
            s.flush().expect("a sink never fails");
        }
        assert_eq!(s.inner.out, vec![b'a'; 10_000]);
    }

    #[test]
    fn a_close_after_a_reply_reports_the_reply_taken_then_the_end() {
        let (mut s, mut stats) = stream(FaultKind::Close);
        s.begin_reply(5, &mut stats);
        assert_eq!(
            s.write(b"hello").ok(),
            Some(5),
            "the reply's bytes are counted"
        );
        assert_eq!(s.inner.out, b"hello");
        assert!(s.inner.shut, "FIN right after the reply");
        assert!(matches!(
            s.take_news(),
            Some(TransportNews::Ended(Ending::Close))
        ));
        assert!(s.take_news().is_none(), "told once");
        assert!(s.write(b"more").is_err(), "nothing after the end");
        assert_eq!(stats.faults_close, 1);
    }

    #[test]
    fn replies_queued_behind_a_close_draw_no_faults() {
        let plan = FaultPlan {
            faults: vec![
                Fault {
                    kind: FaultKind::Close,
                    probability: 1.0,
                },
                Fault {
                    kind: FaultKind::Corrupt,
                    probability: 1.0,
                },
            ],
            seed: 7,
        };
        let mut stats = Stats::default();
        let mut s = FaultStream::new(Sink::default(), Arc::new(plan), 7, &mut stats);
        // Three replies announced before any is written, as when output
        // waits behind a pace: only the first is ever written.
        for _ in 0..3 {
            s.begin_reply(4, &mut stats);
        }
        assert_eq!((stats.faults_close, stats.faults_corrupt), (1, 1));
        assert_eq!(s.write(b"abcdabcd").ok(), Some(4), "the first reply only");
        assert!(s.write(b"abcd").is_err(), "the connection has ended");
    }

    #[test]
    fn one_heap_entry_per_wake_up_time() {
        let (mut s, _) = stream(FaultKind::Delay(Duration::from_millis(5)));
        let at = Instant::now();
        assert!(s.arm_wake(at));
        assert!(!s.arm_wake(at), "the same time again is not a new entry");
        let later = at + Duration::from_millis(1);
        assert!(s.arm_wake(later));
        assert!(!s.disarm_wake(at), "a replaced wake-up is stale");
        assert!(s.disarm_wake(later));
    }
}
