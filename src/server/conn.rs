//! One accepted TCP connection: reads, asks the service what to answer,
//! writes back, and keeps only what the kernel refused. It never sees the
//! `Poll`, the slab or other connections; it tells the loop what to do next
//! through the `Progress` it returns.
//!
//! The logic is generic over [`Stream`] so that unit tests can drive it with
//! a fake socket that takes N bytes and then says `WouldBlock` or resets.

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr};
use std::time::Duration;

use log::trace;

use super::buffer::{PendingOutput, Watermarks};
use super::observe::Stats;
use super::transport::{cause_of, ending_of, Ending, TlsCause, TransportNews};
use crate::mode::{Opening, Reply, Service};
use crate::net::{
    is_interrupted, is_output_timed_out, is_peer_gone, is_would_block, KernelQueues, TcpProgress,
};

/// Coarse time: tenths of a second since the server started. Four bytes
/// per connection instead of a sixteen-byte `Instant`, and fine enough for
/// idle timeouts and log lines.
pub type Tick = u32;

/// How long `t` ticks are.
pub fn tick_duration(t: Tick) -> Duration {
    Duration::from_millis(u64::from(t) * 100)
}

/// The tick `ago` before `now` (whole ticks, rounded down).
fn tick_before(now: Tick, ago: Duration) -> Tick {
    let ticks = (ago.as_millis() / 100).min(u128::from(Tick::MAX / 2));
    now.wrapping_sub(ticks as Tick)
}

/// True when tick `a` is later than tick `b`, both within half the tick
/// range of `now` (coarse ticks wrap).
fn is_later(now: Tick, a: Tick, b: Tick) -> bool {
    now.wrapping_sub(a) < now.wrapping_sub(b)
}

/// How long a connection must have moved no bytes before a shutdown
/// looks closer at whether it is at rest: two ticks, 0.1 to 0.2 s. Where
/// the kernel tells its round trip (`TCP_INFO`), the quiet spell must also
/// outlast the peer's retransmissions (see [`rest_after`]).
pub const QUIET_TICKS: Tick = 2;

/// How long a connection closed at rest lingers (FIN sent, its input read,
/// dropped and counted) for its client to close too: one second.
pub const REST_LINGER_TICKS: Tick = 10;

/// How many of our retransmission timeouts stand for one of the peer's: a
/// segment the peer sent and the path lost comes again after the peer's
/// RTO, which we cannot see; ours starts from the same round trip, and
/// twice it leaves room for the two to differ.
pub const REST_RTOS: u32 = 2;

/// The odds a shutdown accepts of taking a connection for at rest while
/// the peer's segment is still in its retransmission backoff: one in ten
/// thousand, at the loss rate the kernel measured.
pub const REST_RISK: f64 = 1e-4;

/// The most losses in a row a quiet spell is made to outlast: ten, which
/// at one RTO of 0.2 s is minutes, longer than any shutdown deadline.
const REST_MAX_LOSSES: u32 = 10;

/// How long a connection must have been quiet, by the kernel's account,
/// before nothing can still be on its way from the peer.
///
/// A segment the path lost `j` times in a row arrives after the peer's
/// RTO, then twice that, and so on: `(2^j - 1)` RTOs. The wait covers as
/// many losses in a row as the loss rate makes likelier than
/// [`REST_RISK`], at least one: over a path that has lost nothing, the
/// round trip plus [`REST_RTOS`] RTOs (0.4 s on a LAN); at 3% loss three
/// times that; at 20% loss 62 RTOs, beyond any usual deadline. The rate
/// is the worse of this connection's own (`loss_rate`: what the kernel
/// had to send again, out of what it sent) and `path_loss`, the same over
/// every connection of the loop, so that a connection that happens to
/// have lost nothing on a lossy network waits as its neighbours do. The
/// peer's own losses are invisible; ours stand for them. No finite wait
/// covers every run of losses: the linger after the FIN counts what a
/// longer one would have caught.
pub fn rest_after(p: &TcpProgress, path_loss: f64) -> Duration {
    let loss = p.loss_rate().max(path_loss);
    let losses = if loss <= 0.0 {
        1
    } else if loss >= 1.0 {
        REST_MAX_LOSSES
    } else {
        // Fewest k with loss^(k+1) <= REST_RISK: losses beyond k are rarer
        // than the risk taken.
        let k = (REST_RISK.ln() / loss.ln()).ceil() - 1.0;
        (k.max(1.0) as u32).min(REST_MAX_LOSSES)
    };
    p.srtt + p.rto * REST_RTOS * ((1 << losses) - 1)
}

/// What a connection needs from a socket.
pub trait Stream: Read + Write {
    /// Sends FIN after the bytes already written (`shutdown(SHUT_WR)`); a
    /// TLS stream sends its `close_notify` first.
    ///
    /// # Errors
    ///
    /// What the OS says; `NotConnected` once the peer has reset.
    fn shutdown_write(&mut self) -> io::Result<()>;

    /// Makes the coming close a reset (`SO_LINGER` 0), so the kernel drops
    /// output the peer will never read instead of holding it for minutes.
    ///
    /// # Errors
    ///
    /// What the OS says; the caller closes either way.
    fn reset_on_close(&self) -> io::Result<()> {
        Ok(())
    }

    /// What the kernel still holds for this socket; `None` if unknown,
    /// which callers treat as "maybe something".
    fn kernel_queues(&self) -> Option<KernelQueues> {
        Some(KernelQueues::default())
    }

    /// The kernel's account of what the peer acknowledged and what is in
    /// flight (`TCP_INFO`); `None` where it cannot be read, and callers
    /// then judge by the connection's own buffer alone.
    fn tcp_progress(&self) -> Option<TcpProgress> {
        None
    }

    /// True while the transport holds bytes `write` took but the socket
    /// has not (TLS records waiting for room): output still owed. A plain
    /// socket never does; this and the methods below cost it nothing.
    fn transport_backlog(&self) -> bool {
        false
    }

    /// Writes what the transport holds back; called on writable edges,
    /// before the connection's own pending output.
    ///
    /// # Errors
    ///
    /// The socket's write error; `WouldBlock` is not one (the rest waits).
    fn flush_transport(&mut self) -> io::Result<()> {
        Ok(())
    }

    /// When the transport's handshake began, while it has not finished.
    fn handshake_since(&self) -> Option<Tick> {
        None
    }

    /// Moves the handshake on with what the socket has and takes;
    /// `Ok(true)` once plaintext can flow. `is_hangup_reported`: the poll
    /// reported the peer's FIN or an error, which may sit behind a short
    /// read, so the socket is read on to it.
    ///
    /// # Errors
    ///
    /// The handshake failed (the error carries its `TlsCause`), or the
    /// socket did.
    fn advance_handshake(&mut self, is_hangup_reported: bool) -> io::Result<bool> {
        let _ = is_hangup_reported;
        Ok(true)
    }

    /// What happened to the transport since last asked, for the counters.
    fn take_news(&mut self) -> Option<TransportNews> {
        None
    }

    /// True when the transport knows of an end (EOF or error) that its
    /// last short read did not return yet: the short-read shortcut must
    /// not wait for an edge then, as none will come.
    fn end_pending(&self) -> bool {
        false
    }

    /// The connection is about to write a reply of `len` bytes: a
    /// transport that injects faults draws this reply's now.
    fn begin_reply(&mut self, len: usize, stats: &mut Stats) {
        let _ = (len, stats);
    }

    /// When held output can next move without a readiness event (a
    /// delayed reply falls due, a pace refills); the table wakes the
    /// connection then, as if writable.
    fn wake_at(&self) -> Option<std::time::Instant> {
        None
    }

    /// Bytes `write` took that never reached the socket (held by a fault).
    fn held_back(&self) -> u64 {
        0
    }

    /// The table's heap now holds a wake-up for `at`: true when that is
    /// new. A transport with wake-ups remembers the one armed, so that
    /// each time gets one heap entry, not one per event.
    fn arm_wake(&mut self, _at: std::time::Instant) -> bool {
        true
    }

    /// The heap's wake-up for `at` came: true when it is the one armed
    /// (now disarmed), false for one since replaced.
    fn disarm_wake(&mut self, _at: std::time::Instant) -> bool {
        true
    }
}

impl Stream for mio::net::TcpStream {
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.shutdown(Shutdown::Write)
    }

    fn reset_on_close(&self) -> io::Result<()> {
        socket2::SockRef::from(self).set_linger(Some(std::time::Duration::ZERO))
    }

    fn kernel_queues(&self) -> Option<KernelQueues> {
        use std::os::fd::AsRawFd;
        crate::net::kernel_queues(self.as_raw_fd())
    }

    fn tcp_progress(&self) -> Option<TcpProgress> {
        use std::os::fd::AsRawFd;
        crate::net::tcp_progress(self.as_raw_fd())
    }
}

/// Where a connection is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConnState {
    /// Reading and answering.
    Open,
    /// The peer sent FIN: flushing what is pending, then FIN back and close.
    ReadClosed,
    /// Cut by the shutdown deadline: FIN sent after what the kernel took;
    /// input is read and dropped until the peer closes, because closing
    /// with unread input would make the kernel reset the connection and
    /// throw away the echo still on its way (a lingering close).
    Lingering,
    /// The service said its piece (daytime, time): flush, then FIN and close.
    Closing,
}

/// Why a connection was closed; its `Display` feeds logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CloseReason {
    /// The peer half-closed and everything owed to it was delivered.
    PeerClosed,
    /// The peer reset the connection or a write hit a broken pipe.
    Reset,
    /// The server shut down after delivering everything pending.
    Shutdown,
    /// The server shut down and the shutdown timeout passed first.
    ShutdownDeadline,
    /// No bytes moved either way for `--idle-timeout`, and nothing was
    /// owed either way (no output pending here or unacknowledged in the
    /// kernel, no input unread); closed with FIN.
    IdleTimeout,
    /// The peer acknowledged none of the output owed to it for
    /// `--write-timeout` (the sweep asks the kernel what was acknowledged),
    /// or the kernel gave up retransmitting (`ETIMEDOUT`); closed with a
    /// reset, and what it never took counts as cut.
    WriteTimeout,
    /// The service had said all it had to say (daytime, time).
    Done,
    /// The TLS handshake did not finish, for this reason.
    Tls(TlsCause),
    /// An injected fault ended it after a reply (`--fault close|reset`).
    Fault(Ending),
    /// Any other IO error.
    Io(io::ErrorKind),
}

impl CloseReason {
    /// Counts one closed connection under this reason.
    pub fn count_in(&self, stats: &mut Stats) {
        stats.tcp_closed += 1;
        match self {
            CloseReason::Reset => stats.tcp_resets += 1,
            CloseReason::Io(_) => stats.tcp_io_errors += 1,
            CloseReason::ShutdownDeadline => stats.tcp_forced_closes += 1,
            CloseReason::IdleTimeout => stats.tcp_idle_timeouts += 1,
            CloseReason::WriteTimeout => stats.tcp_write_timeouts += 1,
            CloseReason::Tls(cause) => stats.count_tls_failure(*cause),
            CloseReason::PeerClosed
            | CloseReason::Shutdown
            | CloseReason::Done
            | CloseReason::Fault(_) => {}
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CloseReason::PeerClosed => f.write_str("peer closed"),
            CloseReason::Reset => f.write_str("reset by peer"),
            CloseReason::Shutdown => f.write_str("server shutdown"),
            CloseReason::ShutdownDeadline => f.write_str("shutdown deadline passed"),
            CloseReason::IdleTimeout => f.write_str("idle timeout"),
            CloseReason::WriteTimeout => f.write_str("write timeout: peer not reading"),
            CloseReason::Done => f.write_str("service done"),
            CloseReason::Tls(cause) => write!(f, "tls handshake failed: {cause}"),
            CloseReason::Fault(Ending::Close) => f.write_str("fault: close after a reply"),
            CloseReason::Fault(Ending::Reset) => f.write_str("fault: reset after a reply"),
            CloseReason::Io(kind) => write!(f, "io error: {kind}"),
        }
    }
}

/// What the loop should do with a connection after a handler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Progress {
    /// Nothing until the next readiness edge (or a resume).
    Wait,
    /// The fairness budget ran out with input maybe left: serve it again
    /// before the loop next blocks, after the others had their turn.
    Again,
    /// Close it now.
    Close(CloseReason),
}

/// Per-loop settings every connection follows.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// When to stop and resume reading because output is pending.
    pub watermarks: Watermarks,
    /// Bytes one handler call may read before yielding.
    pub budget_bytes: usize,
    /// Reads one handler call may make before yielding.
    pub budget_reads: u32,
    /// Stop draining after a read that did not fill the buffer (Linux only).
    pub short_read: bool,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            watermarks: Watermarks::default(),
            budget_bytes: 256 * 1024,
            budget_reads: 64,
            short_read: cfg!(target_os = "linux"),
        }
    }
}

/// What a handler borrows from the loop for one call.
pub struct Ctx<'a> {
    /// The slab key, for log lines.
    pub key: usize,
    /// The loop's one scratch buffer; every read lands here.
    pub scratch: &'a mut [u8],
    /// The protocol being spoken.
    pub service: &'a dyn Service,
    /// `service.streams()`, asked once when the server started.
    pub streams: bool,
    /// Budgets and watermarks.
    pub limits: &'a Limits,
    /// The loop's counters.
    pub stats: &'a mut Stats,
    /// The loop's coarse clock for this batch of events.
    pub now: Tick,
}

/// What closing a connection now throws away: output it was owed and
/// will never get. Any close that throws something away is a reset.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Abandoned {
    /// Our pending output, never handed to the kernel.
    pub pending: u64,
    /// Output the kernel took but the peer never acknowledged, dropped by
    /// the reset; the caller takes it back out of `bytes_out`.
    pub in_kernel: u64,
}

impl Abandoned {
    /// Everything thrown away.
    pub fn total(&self) -> u64 {
        self.pending + self.in_kernel
    }
}

/// What the timeout sweep learned about one connection.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct SweepFacts {
    /// Ticks since bytes last moved, when nothing is owed either way;
    /// `None` while something is (then only the write timeout judges).
    pub idle_for: Option<Tick>,
    /// Ticks since the peer last acknowledged output owed to it; `None`
    /// while nothing is owed or the connection is moving bytes.
    pub stalled_for: Option<Tick>,
}

/// One TCP peer.
#[derive(Debug)]
pub struct Connection<S = mio::net::TcpStream> {
    stream: S,
    /// Bytes the kernel has not taken yet; above the high watermark only by
    /// at most one read.
    pending: PendingOutput,
    /// Bytes written so far; a stream's (chargen's) offset.
    bytes_out: u64,
    last_active: Tick,
    /// When output owed to the peer last made progress (began, was
    /// flushed, or was seen acknowledged by the sweep); a stall counts
    /// from here.
    progress_at: Tick,
    /// The low 32 bits of the peer's acknowledged byte count when the
    /// sweep last looked: a change is progress, however slow.
    acked_mark: u32,
    state: ConnState,
    /// Reading stopped because of pending output (backpressure).
    is_paused: bool,
    /// On the loop's ready-again list; set and cleared by the loop.
    is_deferred: bool,
    /// The last write found the socket full. With pending output that is
    /// implied; a stream (chargen) keeps nothing pending, so this is what
    /// tells the write timeout that it is stuck too.
    is_write_blocked: bool,
    /// Cut by the shutdown deadline (its linger is the drain's), rather
    /// than lingering briefly after a close at rest.
    was_cut: bool,
    /// The poll reported the peer's FIN or an error. Sticky: a later read
    /// may still find data before the EOF or error, and no new edge will
    /// announce what follows it.
    is_hangup_reported: bool,
    /// Output was handed to the kernel since the sweep last saw the
    /// peer acknowledge everything: the kernel may still hold some. Set by
    /// every write, cleared only by the sweep, so that the sweep asks the
    /// kernel about connections that may owe output and no others.
    is_owing: bool,
    /// What the `closed` debug line tells, kept only while debug logging
    /// is on; boxed so that it costs one pointer when off, and an idle
    /// connection stays at 48 bytes.
    story: Option<Box<Story>>,
}

/// A connection's story for the `closed` line.
#[derive(Debug)]
struct Story {
    /// The peer's address from accept: `peer_addr()` fails once the peer
    /// is gone, which is exactly when the line matters.
    peer: SocketAddr,
    opened: Tick,
    bytes_in: u64,
}

impl<S: Stream> Connection<S> {
    /// A new open connection around `stream`, accepted at `now`.
    pub fn new(stream: S, now: Tick) -> Self {
        Connection {
            stream,
            pending: PendingOutput::new(),
            bytes_out: 0,
            last_active: now,
            progress_at: now,
            acked_mark: 0,
            state: ConnState::Open,
            is_paused: false,
            is_deferred: false,
            is_write_blocked: false,
            is_hangup_reported: false,
            is_owing: false,
            was_cut: false,
            story: None,
        }
    }

    /// Starts keeping the connection's story (peer, age, bytes in) for the
    /// `closed` log line, from `now`.
    pub fn tell_story(&mut self, peer: SocketAddr, now: Tick) {
        self.story = Some(Box::new(Story {
            peer,
            opened: now,
            bytes_in: 0,
        }));
    }

    /// The `closed` line's facts, if the story was kept: the peer, bytes
    /// read and written, and ticks since accept.
    pub fn story(&self, now: Tick) -> Option<(SocketAddr, u64, u64, Tick)> {
        self.story.as_deref().map(|s| {
            (
                s.peer,
                s.bytes_in,
                self.bytes_out,
                now.wrapping_sub(s.opened),
            )
        })
    }

    /// Counts bytes read, for the story only.
    fn note_read(&mut self, n: usize) {
        if let Some(story) = &mut self.story {
            story.bytes_in += n as u64;
        }
    }

    #[cfg(test)]
    /// The socket.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    #[cfg(test)]
    /// Where the connection is in its life.
    pub fn state(&self) -> ConnState {
        self.state
    }

    /// Bytes read (0 unless the story is kept) and written.
    #[cfg(test)]
    pub fn bytes(&self) -> (u64, u64) {
        (
            self.story.as_ref().map_or(0, |s| s.bytes_in),
            self.bytes_out,
        )
    }

    /// True once cut by the shutdown deadline: the drain, not the idle or
    /// write timeout, decides when it closes.
    pub fn is_lingering(&self) -> bool {
        self.state == ConnState::Lingering
    }

    /// Bytes waiting for the kernel to take them.
    pub fn pending_len(&self) -> usize {
        self.pending.len()
    }

    #[cfg(test)]
    /// True while reading is stopped by backpressure.
    pub fn is_paused(&self) -> bool {
        self.is_paused
    }

    /// True while the connection sits on the loop's ready-again list.
    pub fn is_deferred(&self) -> bool {
        self.is_deferred
    }

    /// Marks the connection as on (or off) the ready-again list.
    pub fn set_deferred(&mut self, deferred: bool) {
        self.is_deferred = deferred;
    }

    /// Records that the poll reported the peer's FIN or an error, which
    /// turns the short-read shortcut off for this connection: the FIN (or
    /// the error) may sit behind data a short read left, and its edge has
    /// already been spent.
    pub fn note_hangup(&mut self) {
        self.is_hangup_reported = true;
    }

    /// Ticks since bytes last moved in either direction.
    pub fn idle_for(&self, now: Tick) -> Tick {
        now.wrapping_sub(self.last_active)
    }

    /// True while output waits here, in the transport, or the socket
    /// refused the last write: owed output that the connection itself can
    /// see, no syscall needed.
    fn owes_here(&self) -> bool {
        !self.pending.is_empty() || self.is_write_blocked || self.stream.transport_backlog()
    }

    /// True once nothing waits here or in the transport: FIN may follow.
    fn is_flushed(&self) -> bool {
        self.pending.is_empty() && !self.stream.transport_backlog()
    }

    /// When the transport's handshake began, while it has not finished.
    pub fn handshake_since(&self) -> Option<Tick> {
        self.stream.handshake_since()
    }

    /// What happened to the transport since last asked.
    pub fn take_news(&mut self) -> Option<TransportNews> {
        self.stream.take_news()
    }

    /// When the transport wants to be woken to move held output.
    pub fn wake_at(&self) -> Option<std::time::Instant> {
        self.stream.wake_at()
    }

    /// True while the transport's handshake has not finished.
    pub fn is_handshaking(&self) -> bool {
        self.stream.handshake_since().is_some()
    }

    /// Notes that the table's heap holds a wake-up for `at`: true when it
    /// is new (the table pushes it), false when already armed for it.
    pub fn arm_wake(&mut self, at: std::time::Instant) -> bool {
        self.stream.arm_wake(at)
    }

    /// The table's wake-up for `at` is due: true when it is the one armed
    /// (it disarms it), false for a stale entry.
    pub fn disarm_wake(&mut self, at: std::time::Instant) -> bool {
        self.stream.disarm_wake(at)
    }

    /// Serves a readiness event while the transport's handshake runs:
    /// `None` once plaintext can flow (and then the caller serves the
    /// event as usual), else what to do. The handshake's end is the
    /// connection's start: the service may speak first, and plaintext
    /// that came with the last flight is read now, since no new edge will
    /// announce it.
    pub fn on_handshake(&mut self, cx: &mut Ctx<'_>) -> Option<Progress> {
        self.stream.handshake_since()?;
        match self.stream.advance_handshake(self.is_hangup_reported) {
            Ok(false) => Some(Progress::Wait),
            Ok(true) => {
                self.last_active = cx.now;
                match self.on_open(cx) {
                    Progress::Wait => Some(self.on_readable(cx)),
                    other => Some(other),
                }
            }
            Err(e) => Some(Progress::Close(close_reason(&e))),
        }
    }

    /// Output handed to the kernel: from now on something may be owed.
    /// When nothing was owed before, the stall clock starts here.
    fn note_owing(&mut self, now: Tick) {
        if !self.is_owing {
            self.is_owing = true;
            self.progress_at = now;
        }
    }

    /// What the timeout sweep needs: whether the connection is idle (and
    /// for how long) or owes output (and since when the peer acknowledged
    /// any). The kernel is asked only about connections that may owe
    /// output, once per sweep: nothing per message, and nothing at all for
    /// connections that owe nothing.
    ///
    /// "Not reading" means the bytes the peer acknowledged have not grown:
    /// a slow reader's acknowledgements grow, however slowly, even while
    /// its window sits at zero between them; our own buffer moving, or
    /// writable edges, would wrongly say it stopped.
    pub fn sweep_facts(&mut self, now: Tick) -> SweepFacts {
        let owes_here = self.owes_here();
        if !owes_here && !self.is_owing {
            // Nothing written since the peer acknowledged everything, and
            // nothing waits here or in our receive queue (not paused: all
            // input was read): idle, if nothing moved.
            return SweepFacts {
                idle_for: Some(self.idle_for(now)),
                stalled_for: None,
            };
        }
        // Asked even while input keeps coming: a peer that trickles bytes
        // in and reads none of its echo is still not reading.
        match self.stream.tcp_progress() {
            Some(p) => {
                // Only the low bits are kept: a change is all that matters.
                let mark = p.bytes_acked as u32;
                if mark != self.acked_mark {
                    // The peer took more: progress, and activity too, so an
                    // idle timeout counts from the last byte it took, when
                    // the kernel saw its acknowledgement, not when the
                    // sweep came by.
                    self.acked_mark = mark;
                    let acked_at = tick_before(now, p.since_ack_recv);
                    if is_later(now, acked_at, self.progress_at) {
                        self.progress_at = acked_at;
                    }
                    if is_later(now, acked_at, self.last_active) {
                        self.last_active = acked_at;
                    }
                }
                let in_kernel = self.bytes_out.saturating_sub(p.bytes_acked);
                if !owes_here && in_kernel == 0 {
                    // Everything acknowledged: owed nothing until the next write.
                    self.is_owing = false;
                    return SweepFacts {
                        idle_for: Some(self.idle_for(now)),
                        stalled_for: None,
                    };
                }
            }
            // The kernel cannot be asked: judge by our own buffer, whose
            // flushes are the only progress we can see.
            None if !owes_here => {
                return SweepFacts {
                    idle_for: Some(self.idle_for(now)),
                    stalled_for: None,
                }
            }
            None => {}
        }
        SweepFacts {
            idle_for: None,
            stalled_for: Some(now.wrapping_sub(self.progress_at)),
        }
    }

    /// Closes on the loop's initiative (a timeout): FIN after what the
    /// kernel holds for an idle connection, which owes nothing; a reset
    /// for [`CloseReason::WriteTimeout`], whose peer will not read the
    /// rest (the table counts what it throws away).
    pub fn expire(&mut self, key: usize, reason: CloseReason) -> Progress {
        if reason == CloseReason::WriteTimeout {
            return Progress::Close(reason);
        }
        self.finish(key, reason)
    }

    fn set_state(&mut self, key: usize, to: ConnState) {
        trace!("conn {key}: state {:?} -> {to:?}", self.state);
        self.state = to;
    }

    fn set_paused(&mut self, key: usize, paused: bool) {
        if self.is_paused != paused {
            trace!(
                "conn {key}: {} ({} B pending)",
                if paused {
                    "backpressure: reading paused"
                } else {
                    "reading resumed"
                },
                self.pending.len()
            );
            self.is_paused = paused;
        }
    }

    /// The connection was just accepted (and its handshake is done): the
    /// service may speak first. A service that sends and closes (daytime,
    /// time) gets its bytes written and a FIN after them; a streaming one
    /// (chargen) starts its stream.
    pub fn on_open(&mut self, cx: &mut Ctx<'_>) -> Progress {
        let Opening::SendAndClose(n) = cx.service.on_connect(cx.scratch) else {
            return self.start_stream(cx);
        };
        let n = n.min(cx.scratch.len());
        self.stream.begin_reply(n, cx.stats);
        if let Err(reason) = self.send(cx.key, &cx.scratch[..n], cx.stats, cx.now) {
            return Progress::Close(reason);
        }
        self.set_state(cx.key, ConnState::Closing);
        if !self.is_flushed() {
            // The rest goes out on writable edges; then on_writable finishes.
            return Progress::Wait;
        }
        self.finish_saying(cx)
    }

    /// A streaming service (chargen) starts at once rather than on the
    /// socket's first writable edge: a TLS handshake or the PROXY gate
    /// has used that edge up already, and no other comes while nothing
    /// is pending.
    fn start_stream(&mut self, cx: &mut Ctx<'_>) -> Progress {
        if cx.streams && self.state == ConnState::Open && self.pending.is_empty() {
            return self.stream_more(cx);
        }
        Progress::Wait
    }

    /// The service's last byte is written: drop what the peer sent
    /// meanwhile, then FIN and close.
    fn finish_saying(&mut self, cx: &mut Ctx<'_>) -> Progress {
        self.discard_input(cx);
        self.finish(cx.key, CloseReason::Done)
    }

    /// Reads and drops whatever the peer already sent, within the budget:
    /// closing a socket with unread input makes the kernel send a reset
    /// instead of our FIN.
    fn discard_input(&mut self, cx: &mut Ctx<'_>) {
        for _ in 0..cx.limits.budget_reads {
            match self.stream.read(cx.scratch) {
                Ok(n) if n > 0 => {
                    self.note_read(n);
                    cx.stats.bytes_in += n as u64;
                }
                Err(e) if is_interrupted(&e) => {}
                // EOF, WouldBlock or an error: nothing more to drop now.
                _ => return,
            }
        }
    }

    /// The socket has input (or an error, or EOF): read until the queue is
    /// drained, the budget is spent, or backpressure says stop.
    pub fn on_readable(&mut self, cx: &mut Ctx<'_>) -> Progress {
        if self.state == ConnState::Lingering {
            return self.linger(cx);
        }
        if self.state != ConnState::Open || self.is_paused {
            return Progress::Wait;
        }
        let mut budget_bytes = cx.limits.budget_bytes;
        let mut budget_reads = cx.limits.budget_reads;
        loop {
            if cx.limits.watermarks.should_pause(self.pending.len()) {
                self.set_paused(cx.key, true);
                return Progress::Wait;
            }
            if budget_bytes == 0 || budget_reads == 0 {
                trace!("conn {}: budget spent, yielding", cx.key);
                return Progress::Again;
            }
            let n = match self.stream.read(cx.scratch) {
                // EOF: the peer will send nothing more, but may still read.
                Ok(0) => return self.on_read_closed(cx.key),
                Ok(n) => n,
                // WouldBlock: queue drained; the next edge wakes us.
                Err(e) if is_would_block(&e) => {
                    trace!("conn {}: read would block, drain done", cx.key);
                    return Progress::Wait;
                }
                // Interrupted: a signal landed mid-call; nothing was read.
                Err(e) if is_interrupted(&e) => continue,
                Err(e) => return Progress::Close(close_reason(&e)),
            };
            trace!("conn {}: read {n} B", cx.key);
            budget_bytes = budget_bytes.saturating_sub(n);
            budget_reads -= 1;
            self.note_read(n);
            cx.stats.bytes_in += n as u64;
            self.last_active = cx.now;
            if cx.service.on_data(&mut cx.scratch[..n]) == Reply::Same {
                self.stream.begin_reply(n, cx.stats);
                if let Err(reason) = self.send(cx.key, &cx.scratch[..n], cx.stats, cx.now) {
                    return Progress::Close(reason);
                }
            }
            if cx.limits.short_read
                && n < cx.scratch.len()
                && !self.is_hangup_reported
                && !self.stream.end_pending()
            {
                // Linux: a read that did not fill the buffer emptied the
                // queue; new data raises a new edge, so skip the read that
                // would only say WouldBlock. Not after a reported hang-up:
                // the EOF or error behind this data raises no edge again.
                trace!(
                    "conn {}: short read ({n} B < {} B): queue empty, drain done without a WouldBlock read",
                    cx.key,
                    cx.scratch.len()
                );
                return Progress::Wait;
            }
        }
    }

    /// The socket can take output again: flush, then resume reading or
    /// finish a half-close or a drain.
    pub fn on_writable(&mut self, cx: &mut Ctx<'_>) -> Progress {
        let written_before = self.bytes_out;
        // Records the transport made before ours go first.
        if let Err(e) = self.stream.flush_transport() {
            return Progress::Close(close_reason(&e));
        }
        if let Err(reason) = self.flush(cx.key, cx.stats, cx.now) {
            return Progress::Close(reason);
        }
        if self.bytes_out != written_before {
            // Pending output moved: the kernel freed room, which only the
            // peer's acknowledgements do. That is progress.
            self.last_active = cx.now;
            self.progress_at = cx.now;
        }
        match self.state {
            ConnState::Open if self.is_paused => {
                if cx.limits.watermarks.may_resume(self.pending.len()) {
                    self.set_paused(cx.key, false);
                    // Edge-triggered: input that waited while we were paused
                    // raises no new edge, so read it now.
                    return self.on_readable(cx);
                }
                Progress::Wait
            }
            ConnState::Open if cx.streams && self.pending.is_empty() => self.stream_more(cx),
            ConnState::Open => Progress::Wait,
            ConnState::ReadClosed if self.is_flushed() => {
                self.finish(cx.key, CloseReason::PeerClosed)
            }
            ConnState::Closing if self.is_flushed() => self.finish_saying(cx),
            ConnState::ReadClosed | ConnState::Lingering | ConnState::Closing => Progress::Wait,
        }
    }

    /// A streaming service (chargen) writes as long as the socket takes
    /// bytes, within the fairness budget. Nothing the kernel refuses is
    /// kept: the service regenerates the stream from the new offset on the
    /// next writable edge.
    ///
    /// The budget is one scratch buffer (64 KiB) per turn, a quarter of a
    /// reader's: a stream never runs dry, so with a thousand of them every
    /// turn is spent in full, and the round everyone else waits for is a
    /// thousand turns long.
    fn stream_more(&mut self, cx: &mut Ctx<'_>) -> Progress {
        let mut budget = cx.limits.budget_bytes.min(cx.scratch.len());
        loop {
            if budget == 0 {
                trace!("conn {}: stream budget spent, yielding", cx.key);
                return Progress::Again;
            }
            let room = budget.min(cx.scratch.len());
            let n = cx.service.fill(self.bytes_out, &mut cx.scratch[..room]);
            if n == 0 {
                return Progress::Wait;
            }
            match self.write_once(cx.key, &cx.scratch[..n.min(room)], cx.stats, cx.now) {
                Err(reason) => return Progress::Close(reason),
                // Full: the writable edge after the peer reads resumes us.
                Ok(None) => return Progress::Wait,
                Ok(Some(written)) => {
                    budget = budget.saturating_sub(written);
                    self.last_active = cx.now;
                }
            }
        }
    }

    /// During a shutdown: closes an open connection that is at rest with
    /// FIN, since nothing can be lost. At rest means nothing in flight
    /// either way by the kernel's own account: no output pending here, none
    /// unacknowledged or being retransmitted, no input unread, and quiet
    /// (no data and no acknowledgement either way) for longer than
    /// [`rest_after`] its round trip, so that a segment the path lost and
    /// the peer will send again is not taken for the end.
    ///
    /// A path that loses segments (the kernel retransmitted some of ours,
    /// here or on the loop's other connections, `path_loss`) can go quiet
    /// for a retransmission backoff, each loss doubling it, so
    /// [`rest_after`] asks it for a longer quiet spell. Where the kernel
    /// cannot tell (not Linux), [`QUIET_TICKS`] of quiet must do.
    ///
    /// A connection with anything moving keeps being served: its client may
    /// still be sending, and gets its echo until it half-closes.
    ///
    /// The close is a lingering one, for [`REST_LINGER_TICKS`]: FIN now,
    /// then whatever the client still sends (a request that crossed our
    /// FIN) is read, dropped and counted as cut, so it is neither lost
    /// unseen nor met with a reset; the client sees our FIN where its
    /// answer would have been.
    pub fn close_if_at_rest(&mut self, cx: &mut Ctx<'_>, path_loss: f64) -> Progress {
        let (key, now) = (cx.key, cx.now);
        if self.state == ConnState::Lingering
            && !self.was_cut
            && self.idle_for(now) >= REST_LINGER_TICKS
        {
            // The rest linger is over: the client had its time to close.
            return self.finish(key, CloseReason::Shutdown);
        }
        if self.state != ConnState::Open
            || self.idle_for(now) < QUIET_TICKS
            || self.owes_here()
            || self.is_deferred
        {
            return Progress::Wait;
        }
        match self.stream.kernel_queues() {
            Some(q) if q.unread == 0 && q.unsent == 0 => {}
            _ => return Progress::Wait,
        }
        if let Some(p) = self.stream.tcp_progress() {
            let quiet = tick_duration(self.idle_for(now))
                .min(p.since_data_recv)
                .min(p.since_ack_recv);
            let wait = rest_after(&p, path_loss);
            if p.unacked_segments > 0 || p.retransmits > 0 || quiet <= wait {
                return Progress::Wait;
            }
            trace!(
                "conn {key}: at rest: quiet {} ms > {} ms (srtt {} us, rto {} ms)",
                quiet.as_millis(),
                wait.as_millis(),
                p.srtt.as_micros(),
                p.rto.as_millis()
            );
        }
        let _ = self.stream.shutdown_write();
        trace!("conn {key}: at rest: FIN sent, lingering");
        self.set_state(key, ConnState::Lingering);
        self.last_active = now;
        self.linger(cx)
    }

    /// The shutdown deadline passed: one last flush, then FIN after what
    /// the kernel took, and linger (drop input until the peer closes) so
    /// that the close is not a reset. Returns the bytes that never reached
    /// the kernel, and what to do next.
    pub fn cut(&mut self, cx: &mut Ctx<'_>) -> (u64, Progress) {
        if self.state == ConnState::Lingering {
            // Already closed at rest, or already cut: nothing owed is
            // left to cut, and a close at rest stays a clean one.
            return (0, Progress::Wait);
        }
        self.was_cut = true;
        // A failed flush means the peer is gone: nothing more can reach it.
        let flushed = self
            .stream
            .flush_transport()
            .map_err(|e| close_reason(&e))
            .and_then(|()| self.flush(cx.key, cx.stats, cx.now));
        let left = self.pending.len() as u64;
        self.pending = PendingOutput::new();
        if flushed.is_err() {
            return (left, Progress::Close(CloseReason::ShutdownDeadline));
        }
        let _ = self.stream.shutdown_write();
        trace!(
            "conn {}: cut by the shutdown deadline ({left} B never sent): FIN sent, lingering",
            cx.key
        );
        self.set_state(cx.key, ConnState::Lingering);
        (left, self.linger(cx))
    }

    /// Reads and drops input after our FIN, until the peer closes. What it
    /// drops is echo the client never gets: it counts as cut.
    fn linger(&mut self, cx: &mut Ctx<'_>) -> Progress {
        let end = if self.was_cut {
            CloseReason::ShutdownDeadline
        } else {
            CloseReason::Shutdown
        };
        loop {
            match self.stream.read(cx.scratch) {
                // EOF: the peer closed too. The close is clean once it
                // has acknowledged all we sent; until then a reset of its
                // (say, it closed with our echo unread) would throw the
                // rest away, and the kernel's account must see it. The
                // reset, or the end of the linger, comes as an event or
                // from the drain.
                Ok(0) if self.unacked_in_kernel() => return Progress::Wait,
                Ok(0) => return Progress::Close(end),
                Ok(n) => {
                    self.note_read(n);
                    cx.stats.bytes_in += n as u64;
                    cx.stats.tcp_cut_bytes += n as u64;
                }
                // WouldBlock: dropped all there was; the next edge brings more.
                Err(e) if is_would_block(&e) => return Progress::Wait,
                Err(e) if is_interrupted(&e) => {}
                Err(_) => return Progress::Close(end),
            }
        }
    }

    /// The kernel's account of this connection, if it gives one.
    pub fn tcp_progress(&self) -> Option<TcpProgress> {
        self.stream.tcp_progress()
    }

    /// True while the kernel holds output the peer has not acknowledged
    /// and has not thrown away (where it can tell).
    fn unacked_in_kernel(&self) -> bool {
        self.stream
            .tcp_progress()
            .is_some_and(|p| !p.is_closed && self.bytes_out > p.bytes_acked)
    }

    /// How the drain's last close counts this connection: a close at rest
    /// that was still lingering for its client is a clean shutdown, any
    /// other one was cut by the deadline.
    pub fn drain_end(&self) -> CloseReason {
        if self.state == ConnState::Lingering && !self.was_cut {
            CloseReason::Shutdown
        } else {
            CloseReason::ShutdownDeadline
        }
    }

    /// The connection is about to close for `reason`: what that throws
    /// away, and if it throws anything away, the close becomes a reset
    /// (`SO_LINGER` 0), so that no peer takes a truncated echo followed by
    /// a clean FIN for the whole of it. `final_close` is the shutdown's
    /// last close after the linger: whatever the kernel still holds then
    /// is given up, and counted.
    ///
    /// A clean end (the peer half-closed and got everything, a shutdown at
    /// rest, an idle timeout, which owe nothing by construction) asks the
    /// kernel nothing: the common close pays no syscall for this.
    pub fn abandon(&mut self, reason: CloseReason, final_close: bool) -> Abandoned {
        let pending = self.pending.len() as u64;
        let clean = matches!(
            reason,
            CloseReason::PeerClosed | CloseReason::Shutdown | CloseReason::IdleTimeout
        );
        if clean && pending == 0 && !final_close {
            return Abandoned::default();
        }
        if reason == CloseReason::Fault(Ending::Close) {
            // The fault's FIN went out after its reply, which the kernel
            // still delivers; what came after it never will.
            return Abandoned {
                pending,
                in_kernel: self.stream.held_back(),
            };
        }
        let queues = self.stream.kernel_queues().unwrap_or_default();
        let progress = self.stream.tcp_progress();
        // Unacknowledged output by the kernel's count. Our FIN, once sent,
        // takes one more place in the send queue, hence bytes_out minus
        // what was acknowledged rather than the queue's length.
        let in_kernel = progress.map_or(queues.unsent as u64, |p| {
            self.bytes_out.saturating_sub(p.bytes_acked)
        });
        if progress.is_some_and(|p| p.is_closed) {
            // The peer reset it (during a linger, say): the kernel threw
            // its send queue away already, whatever the close now does.
            return Abandoned { pending, in_kernel };
        }
        let unread = queues.unread;
        // Closing with unread input makes the kernel reset the connection
        // anyway; a write timeout or the final close gives up on the peer.
        let resets = pending > 0
            || unread > 0
            || reason == CloseReason::WriteTimeout
            || (final_close && in_kernel > 0)
            || matches!(
                reason,
                CloseReason::Reset | CloseReason::Io(_) | CloseReason::Fault(Ending::Reset)
            );
        if !resets {
            return Abandoned::default();
        }
        // Failing leaves an ordinary close: still closed, just not a reset.
        let _ = self.stream.reset_on_close();
        Abandoned { pending, in_kernel }
    }

    fn on_read_closed(&mut self, key: usize) -> Progress {
        trace!("conn {key}: read 0 B: peer half-closed");
        self.set_state(key, ConnState::ReadClosed);
        if self.is_flushed() {
            return self.finish(key, CloseReason::PeerClosed);
        }
        // The rest goes out on writable edges; then on_writable finishes.
        Progress::Wait
    }

    /// Everything owed is written: send FIN, then the loop closes the socket.
    fn finish(&mut self, key: usize, reason: CloseReason) -> Progress {
        // NotConnected here means the peer reset meanwhile; closing is all
        // that is left either way.
        let _ = self.stream.shutdown_write();
        trace!("conn {key}: nothing owed: FIN sent (shutdown write), closing: {reason}");
        Progress::Close(reason)
    }

    /// Writes `data` straight to the socket and keeps what the kernel
    /// refused; queues all of it behind output already pending.
    fn send(
        &mut self,
        key: usize,
        data: &[u8],
        stats: &mut Stats,
        now: Tick,
    ) -> Result<(), CloseReason> {
        if !self.pending.is_empty() {
            self.pending.push(data);
            return Ok(());
        }
        let mut written = 0;
        while written < data.len() {
            match self.write_once(key, &data[written..], stats, now) {
                Ok(Some(n)) => written += n,
                Ok(None) => break,
                Err(reason) => {
                    // The rest of this read is echo owed and now lost: it
                    // joins the pending output, which the close counts as
                    // cut, so `in = out + cut` holds.
                    self.pending.push(&data[written..]);
                    return Err(reason);
                }
            }
        }
        if written < data.len() {
            trace!(
                "conn {key}: keeping {} B the kernel refused",
                data.len() - written
            );
            self.pending.push(&data[written..]);
        }
        Ok(())
    }

    /// Writes pending output until it is gone or the socket is full.
    fn flush(&mut self, key: usize, stats: &mut Stats, now: Tick) -> Result<(), CloseReason> {
        while !self.pending.is_empty() {
            let pending = std::mem::take(&mut self.pending);
            let result = self.write_once(key, pending.as_slice(), stats, now);
            self.pending = pending;
            match result? {
                Some(n) => self.pending.consume(n),
                None => break,
            }
        }
        Ok(())
    }

    /// One `write` call: `Some(n)` bytes taken, `None` for a full socket.
    fn write_once(
        &mut self,
        key: usize,
        data: &[u8],
        stats: &mut Stats,
        now: Tick,
    ) -> Result<Option<usize>, CloseReason> {
        loop {
            return match self.stream.write(data) {
                // Ok(0) for a non-empty buffer: the socket cannot take bytes at all.
                Ok(0) => Err(CloseReason::Io(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    trace!("conn {key}: wrote {n} B");
                    self.is_write_blocked = false;
                    self.note_owing(now);
                    self.bytes_out += n as u64;
                    stats.bytes_out += n as u64;
                    Ok(Some(n))
                }
                // WouldBlock: send buffer full; a writable edge follows when it drains.
                Err(e) if is_would_block(&e) => {
                    trace!("conn {key}: write would block, waiting for writable");
                    self.is_write_blocked = true;
                    self.note_owing(now);
                    Ok(None)
                }
                Err(e) if is_interrupted(&e) => continue,
                Err(e) => Err(close_reason(&e)),
            };
        }
    }
}

/// Why a read or write error ends a connection.
fn close_reason(e: &io::Error) -> CloseReason {
    if let Some(cause) = cause_of(e) {
        CloseReason::Tls(cause)
    } else if let Some(ending) = ending_of(e) {
        CloseReason::Fault(ending)
    } else if is_peer_gone(e) {
        CloseReason::Reset
    } else if is_output_timed_out(e) {
        // The kernel gave up retransmitting (ETIMEDOUT): output sat
        // unacknowledged in its send queue.
        CloseReason::WriteTimeout
    } else {
        CloseReason::Io(e.kind())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::mode::Mode;

    /// A fake socket: serves `input` in reads of at most `read_chunk`,
    /// takes at most `write_room` bytes before saying WouldBlock, and can be
    /// told to reset.
    #[derive(Debug, Default)]
    pub(crate) struct FakeStream {
        pub input: Vec<u8>,
        pub read_pos: usize,
        pub read_chunk: usize,
        pub eof: bool,
        pub reset: bool,
        pub write_room: usize,
        pub written: Vec<u8>,
        pub fin_sent: bool,
        pub reads: usize,
        /// `shutdown_write` was called: our FIN went out.
        pub shut: bool,
        /// What the fake kernel says the peer acknowledged of `written`;
        /// `None`: the kernel cannot be asked.
        pub acked: Option<u64>,
        /// The rest of the kernel's account, for the shutdown's rest test.
        pub progress: TcpProgress,
        /// `reset_on_close` was called: the close will be a reset.
        pub reset_asked: std::cell::Cell<bool>,
    }

    impl Read for FakeStream {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            if self.reset {
                return Err(io::ErrorKind::ConnectionReset.into());
            }
            let left = self.input.len() - self.read_pos;
            if left == 0 {
                return if self.eof {
                    Ok(0)
                } else {
                    Err(io::ErrorKind::WouldBlock.into())
                };
            }
            let n = left.min(buf.len()).min(self.read_chunk.max(1));
            buf[..n].copy_from_slice(&self.input[self.read_pos..self.read_pos + n]);
            self.read_pos += n;
            Ok(n)
        }
    }

    impl Write for FakeStream {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.fin_sent {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            if self.write_room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.write_room);
            self.write_room -= n;
            self.written.extend_from_slice(&buf[..n]);
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    impl Stream for FakeStream {
        fn shutdown_write(&mut self) -> io::Result<()> {
            self.shut = true;
            Ok(())
        }

        fn reset_on_close(&self) -> io::Result<()> {
            self.reset_asked.set(true);
            Ok(())
        }

        fn kernel_queues(&self) -> Option<KernelQueues> {
            let written = self.written.len() as u64;
            Some(KernelQueues {
                unread: self.input.len() - self.read_pos,
                unsent: self.acked.map_or(0, |a| written.saturating_sub(a) as usize),
            })
        }

        fn tcp_progress(&self) -> Option<TcpProgress> {
            self.acked.map(|bytes_acked| TcpProgress {
                bytes_acked,
                ..self.progress
            })
        }
    }

    pub(crate) struct Harness {
        pub scratch: Vec<u8>,
        pub limits: Limits,
        pub stats: Stats,
        pub mode: Mode,
    }

    impl Harness {
        pub fn new(scratch: usize) -> Self {
            Harness {
                scratch: vec![0; scratch],
                limits: Limits {
                    short_read: false,
                    ..Limits::default()
                },
                stats: Stats::default(),
                mode: Mode::Echo,
            }
        }
        pub fn cx(&mut self) -> Ctx<'_> {
            Ctx {
                key: 1,
                scratch: &mut self.scratch,
                service: &self.mode,
                streams: self.mode.streams(),
                limits: &self.limits,
                stats: &mut self.stats,
                now: 0,
            }
        }
    }

    impl<S> Connection<S> {
        /// The fake socket, for a test to feed input or make room.
        pub(crate) fn stream_mut(&mut self) -> &mut S {
            &mut self.stream
        }
    }

    fn conn(input: &[u8], read_chunk: usize, write_room: usize) -> Connection<FakeStream> {
        let mut c = Connection::new(
            FakeStream {
                input: input.to_vec(),
                read_chunk,
                write_room,
                ..FakeStream::default()
            },
            0,
        );
        // Keep the story, so that bytes in are counted too.
        c.tell_story("127.0.0.1:1".parse().expect("addr"), 0);
        c
    }

    #[test]
    fn an_idle_connection_fits_in_48_bytes() {
        // The slab holds one of these per connection: every byte here is
        // a byte of RSS per idle connection.
        assert!(std::mem::size_of::<Connection>() <= 48);
    }

    #[test]
    fn a_stream_writes_what_the_kernel_takes_and_keeps_nothing() {
        let mut h = Harness::new(4096);
        h.mode = Mode::Chargen;
        let mut c = conn(b"", 64, 1000);
        assert_eq!(c.on_writable(&mut h.cx()), Progress::Wait);
        assert_eq!(c.stream().written.len(), 1000);
        assert_eq!(c.pending_len(), 0, "a stream keeps nothing back");
        assert_eq!(
            c.sweep_facts(5).stalled_for,
            Some(5),
            "a full socket is a stall"
        );
        // The reader makes room: the stream resumes at the right offset.
        c.stream_mut().write_room = 10_000;
        // One buffer per turn: three turns to fill the room, then full.
        let turns: Vec<Progress> = (0..4).map(|_| c.on_writable(&mut h.cx())).collect();
        assert_eq!(
            turns,
            [
                Progress::Again,
                Progress::Again,
                Progress::Wait,
                Progress::Wait
            ]
        );
        let mut expected = vec![0u8; 11_000];
        crate::mode::chargen::fill(0, &mut expected);
        assert_eq!(c.stream().written, expected);
    }

    #[test]
    fn a_stream_yields_after_one_buffer_per_turn() {
        let mut h = Harness::new(4096);
        h.mode = Mode::Chargen;
        let mut c = conn(b"", 64, usize::MAX);
        assert_eq!(c.on_writable(&mut h.cx()), Progress::Again);
        assert_eq!(c.stream().written.len(), 4096);
    }

    #[test]
    fn time_writes_four_bytes_then_closes_with_fin() {
        let mut h = Harness::new(4096);
        h.mode = Mode::Time;
        let mut c = conn(b"early bytes", 64, 100);
        assert_eq!(c.on_open(&mut h.cx()), Progress::Close(CloseReason::Done));
        assert_eq!(c.stream().written.len(), 4);
        // Input already there was read, so closing sends FIN, not RST.
        assert_eq!(c.bytes().0, 11);
    }

    #[test]
    fn daytime_waits_for_room_then_closes() {
        let mut h = Harness::new(4096);
        h.mode = Mode::Daytime;
        let mut c = conn(b"", 64, 10);
        assert_eq!(c.on_open(&mut h.cx()), Progress::Wait);
        assert_eq!(c.state(), ConnState::Closing);
        // Reading stops while closing.
        assert_eq!(c.on_readable(&mut h.cx()), Progress::Wait);
        c.stream_mut().write_room = 100;
        assert_eq!(
            c.on_writable(&mut h.cx()),
            Progress::Close(CloseReason::Done)
        );
        assert!(c.stream().written.ends_with(b"-UTC\r\n"));
    }

    #[test]
    fn echoes_everything_when_the_kernel_takes_it_all() {
        let mut h = Harness::new(64);
        let mut c = conn(b"hello world", 4, usize::MAX);
        assert_eq!(c.on_readable(&mut h.cx()), Progress::Wait);
        assert_eq!(c.stream.written, b"hello world");
        assert_eq!(c.pending_len(), 0);
        assert_eq!(h.stats.bytes_in, 11);
        assert_eq!(h.stats.bytes_out, 11);
    }

    #[test]
    fn upper_mode_transforms_what_it_echoes() {
        let mut h = Harness::new(64);
        h.mode = Mode::Upper;
        let mut c = conn(b"hello boy", 64, usize::MAX);
        c.on_readable(&mut h.cx());
        assert_eq!(c.stream.written, b"HELLO BOY");
    }

    #[test]
    fn partial_write_keeps_the_rest_and_pauses_reading() {
        let mut h = Harness::new(8);
        let mut c = conn(b"0123456789abcdef", 8, 5);
        assert_eq!(c.on_readable(&mut h.cx()), Progress::Wait);
        assert_eq!(c.stream.written, b"01234");
        assert_eq!(c.pending_len(), 3);
        assert!(
            c.is_paused(),
            "default watermarks pause while anything is pending"
        );
        assert_eq!(c.stream.read_pos, 8, "no read after output backed up");

        // The peer reads; a writable edge flushes and reading resumes.
        c.stream.write_room = usize::MAX;
        assert_eq!(c.on_writable(&mut h.cx()), Progress::Wait);
        assert!(!c.is_paused());
        assert_eq!(c.stream.written, b"0123456789abcdef");
    }

    #[test]
    fn higher_watermark_keeps_reading_until_it_is_passed() {
        let mut h = Harness::new(4);
        h.limits.watermarks = Watermarks::with_high(8);
        let mut c = conn(&[b'x'; 64], 4, 0);
        c.on_readable(&mut h.cx());
        assert!(c.is_paused());
        // Pauses once pending passes 8: at most high + one read.
        assert_eq!(c.pending_len(), 12);
        assert!(c.pending_len() <= 8 + 4);
    }

    #[test]
    fn half_close_flushes_pending_then_finishes() {
        let mut h = Harness::new(16);
        let mut c = conn(b"abcdef", 16, 2);
        c.stream.eof = true;
        h.limits.watermarks = Watermarks::with_high(1024);
        assert_eq!(c.on_readable(&mut h.cx()), Progress::Wait);
        assert_eq!(c.state(), ConnState::ReadClosed);
        assert_eq!(c.pending_len(), 4);
        c.stream.write_room = 3;
        assert_eq!(c.on_writable(&mut h.cx()), Progress::Wait);
        c.stream.write_room = 100;
        assert_eq!(
            c.on_writable(&mut h.cx()),
            Progress::Close(CloseReason::PeerClosed)
        );
        assert_eq!(c.stream.written, b"abcdef");
    }

    #[test]
    fn closes_are_counted_by_reason() {
        let mut s = Stats::default();
        CloseReason::PeerClosed.count_in(&mut s);
        CloseReason::Reset.count_in(&mut s);
        CloseReason::Io(std::io::ErrorKind::TimedOut).count_in(&mut s);
        CloseReason::ShutdownDeadline.count_in(&mut s);
        CloseReason::IdleTimeout.count_in(&mut s);
        CloseReason::WriteTimeout.count_in(&mut s);
        assert_eq!(
            (
                s.tcp_closed,
                s.tcp_resets,
                s.tcp_io_errors,
                s.tcp_forced_closes,
                s.tcp_idle_timeouts,
                s.tcp_write_timeouts,
            ),
            (6, 1, 1, 1, 1, 1)
        );
    }

    #[test]
    fn eof_with_nothing_pending_closes_at_once() {
        let mut h = Harness::new(16);
        let mut c = conn(b"", 16, 100);
        c.stream.eof = true;
        assert_eq!(
            c.on_readable(&mut h.cx()),
            Progress::Close(CloseReason::PeerClosed)
        );
    }

    #[test]
    fn reset_closes_with_reason_reset() {
        let mut h = Harness::new(16);
        let mut c = conn(b"abc", 16, 100);
        c.stream.reset = true;
        assert_eq!(
            c.on_readable(&mut h.cx()),
            Progress::Close(CloseReason::Reset)
        );
        let mut c = conn(b"abc", 16, 100);
        c.stream.fin_sent = true; // writes now fail with BrokenPipe
        assert_eq!(
            c.on_readable(&mut h.cx()),
            Progress::Close(CloseReason::Reset)
        );
    }

    #[test]
    fn budget_yields_with_again_and_resumes_where_it_stopped() {
        let mut h = Harness::new(8);
        h.limits.budget_reads = 3;
        let input: Vec<u8> = (0..100u8).collect();
        let mut c = conn(&input, 8, usize::MAX);
        assert_eq!(c.on_readable(&mut h.cx()), Progress::Again);
        assert_eq!(c.stream.written.len(), 24);
        while c.on_readable(&mut h.cx()) == Progress::Again {}
        assert_eq!(c.stream.written, input);
    }

    #[test]
    fn short_read_shortcut_skips_the_read_that_would_block() {
        let mut h = Harness::new(64);
        h.limits.short_read = true;
        let mut c = conn(b"ping", 64, usize::MAX);
        c.on_readable(&mut h.cx());
        assert_eq!(c.stream.reads, 1);
        h.limits.short_read = false;
        let mut c = conn(b"ping", 64, usize::MAX);
        c.on_readable(&mut h.cx());
        assert_eq!(
            c.stream.reads, 2,
            "without the shortcut, drain to WouldBlock"
        );
    }

    #[test]
    fn short_read_shortcut_still_reads_the_eof_behind_a_short_read() {
        // Data and FIN reported in one event: the read that returns the
        // data is short, and no new edge will announce the EOF behind it.
        let mut h = Harness::new(64);
        h.limits.short_read = true;
        let mut c = conn(b"ping", 64, usize::MAX);
        c.stream.eof = true;
        c.note_hangup();
        assert_eq!(
            c.on_readable(&mut h.cx()),
            Progress::Close(CloseReason::PeerClosed)
        );
        assert_eq!(c.stream.written, b"ping");

        // Paused with the hang-up reported: resuming reads through to it.
        let mut c = conn(b"0123456789", 64, 4);
        c.stream.eof = true;
        c.note_hangup();
        assert_eq!(c.on_readable(&mut h.cx()), Progress::Wait);
        assert!(c.is_paused());
        c.stream.write_room = usize::MAX;
        assert_eq!(
            c.on_writable(&mut h.cx()),
            Progress::Close(CloseReason::PeerClosed)
        );
        assert_eq!(c.stream.written, b"0123456789");
    }

    /// `close_if_at_rest` at tick `now`.
    fn rest_at(c: &mut Connection<FakeStream>, h: &mut Harness, now: Tick) -> Progress {
        rest_at_loss(c, h, now, 0.0)
    }

    fn rest_at_loss(
        c: &mut Connection<FakeStream>,
        h: &mut Harness,
        now: Tick,
        path_loss: f64,
    ) -> Progress {
        let mut cx = h.cx();
        cx.now = now;
        c.close_if_at_rest(&mut cx, path_loss)
    }

    #[test]
    fn shutdown_closes_a_connection_at_rest_and_keeps_serving_a_busy_one() {
        let mut h = Harness::new(8);
        let mut c = conn(b"", 8, 100);
        assert_eq!(rest_at(&mut c, &mut h, 1), Progress::Wait);
        assert_eq!(c.state(), ConnState::Open, "not quiet long enough");
        // At rest: FIN, then a short linger for the client to close.
        assert_eq!(rest_at(&mut c, &mut h, QUIET_TICKS), Progress::Wait);
        assert_eq!(c.state(), ConnState::Lingering);
        assert!(c.stream.shut, "FIN sent");
        // A request that crossed our FIN is read, dropped and counted.
        c.stream.input.extend_from_slice(b"late");
        let cut_before = h.stats.tcp_cut_bytes;
        assert_eq!(c.on_readable(&mut h.cx()), Progress::Wait);
        assert_eq!(h.stats.tcp_cut_bytes - cut_before, 4);
        assert!(c.stream.written.is_empty(), "never answered");
        // The linger ends: a clean close, not a forced one.
        let over = QUIET_TICKS + REST_LINGER_TICKS;
        assert_eq!(rest_at(&mut c, &mut h, over - 1), Progress::Wait);
        assert_eq!(
            rest_at(&mut c, &mut h, over),
            Progress::Close(CloseReason::Shutdown)
        );
        // The client's own close ends it sooner, as cleanly.
        let mut c = conn(b"", 8, 100);
        assert_eq!(rest_at(&mut c, &mut h, QUIET_TICKS), Progress::Wait);
        c.stream.eof = true;
        assert_eq!(
            c.on_readable(&mut h.cx()),
            Progress::Close(CloseReason::Shutdown)
        );

        // Input waiting in the kernel: its client is still sending.
        let mut c = conn(b"abc", 8, 100);
        assert_eq!(rest_at(&mut c, &mut h, 100), Progress::Wait);
        assert_eq!(c.state(), ConnState::Open);
        // Output pending here: the echo is still owed.
        let mut c = conn(b"abcdefgh", 8, 3);
        c.on_readable(&mut h.cx());
        assert_eq!(rest_at(&mut c, &mut h, 100), Progress::Wait);
        assert_eq!(c.state(), ConnState::Open);
        // It keeps reading and answering during the drain, and a
        // half-close still ends it cleanly once everything is delivered.
        c.stream.input.extend_from_slice(b"more");
        c.stream.eof = true;
        c.stream.write_room = 100;
        assert_eq!(
            c.on_writable(&mut h.cx()),
            Progress::Close(CloseReason::PeerClosed)
        );
        assert_eq!(c.stream.written, b"abcdefghmore");
    }

    #[test]
    fn the_deadline_cut_flushes_once_sends_fin_and_lingers_until_the_peer_closes() {
        let mut h = Harness::new(8);
        let mut c = conn(b"abcdefgh", 8, 3);
        c.on_readable(&mut h.cx());
        assert_eq!(c.pending_len(), 5);
        c.stream.write_room = 2;
        c.stream.input.extend_from_slice(b"late");
        let (left, progress) = c.cut(&mut h.cx());
        assert_eq!((left, progress), (3, Progress::Wait), "3 B never sent");
        assert_eq!(c.state(), ConnState::Lingering);
        assert_eq!(c.stream.written, b"abcde", "a prefix, nothing after it");
        // More input is dropped, not answered; the peer's EOF ends it.
        c.stream.input.extend_from_slice(b"even later");
        c.stream.write_room = 100;
        assert_eq!(c.on_readable(&mut h.cx()), Progress::Wait);
        c.stream.eof = true;
        assert_eq!(
            c.on_readable(&mut h.cx()),
            Progress::Close(CloseReason::ShutdownDeadline)
        );
        assert_eq!(c.stream.written, b"abcde");
        assert_eq!(
            c.abandon(CloseReason::ShutdownDeadline, false),
            Abandoned::default(),
            "the peer closed: nothing thrown away, no reset"
        );
        assert!(!c.stream.reset_asked.get());
    }

    #[test]
    fn a_close_that_throws_output_away_is_a_reset_and_says_how_much() {
        let mut h = Harness::new(8);
        // 16 B read; the kernel took 5, of which the peer acknowledged 2;
        // 11 still pending here.
        let mut c = conn(b"0123456789abcdef", 8, 5);
        c.stream.acked = Some(2);
        c.on_readable(&mut h.cx());
        assert_eq!(c.pending_len(), 3, "paused after the first read");
        c.stream.write_room = 0;
        let lost = c.abandon(CloseReason::WriteTimeout, false);
        assert_eq!(
            lost,
            Abandoned {
                pending: 3,
                in_kernel: 3
            }
        );
        assert!(
            c.stream.reset_asked.get(),
            "a truncated echo must not end in FIN"
        );
    }

    #[test]
    fn a_clean_close_asks_the_kernel_nothing_and_stays_a_fin() {
        let mut h = Harness::new(64);
        let mut c = conn(b"hello", 64, usize::MAX);
        // Were the kernel asked, it would claim 5 B unacknowledged.
        c.stream.acked = Some(0);
        c.on_readable(&mut h.cx());
        for reason in [
            CloseReason::PeerClosed,
            CloseReason::Shutdown,
            CloseReason::IdleTimeout,
        ] {
            assert_eq!(c.abandon(reason, false), Abandoned::default());
        }
        assert!(!c.stream.reset_asked.get());
        // The shutdown's final close gives up what the kernel still holds.
        assert_eq!(
            c.abandon(CloseReason::ShutdownDeadline, true),
            Abandoned {
                pending: 0,
                in_kernel: 5
            }
        );
        assert!(c.stream.reset_asked.get());
    }

    #[test]
    fn at_rest_means_quiet_longer_than_the_peer_could_be_retransmitting() {
        let progress = TcpProgress {
            srtt: Duration::from_millis(1),
            rto: Duration::from_millis(200),
            since_data_recv: Duration::from_secs(10),
            since_ack_recv: Duration::from_secs(10),
            ..TcpProgress::default()
        };
        let mut h = Harness::new(8);
        let mut at_rest = |c: &mut Connection<FakeStream>, now| {
            rest_at(c, &mut h, now);
            c.state() == ConnState::Lingering
        };
        let mut c = conn(b"", 8, 100);
        c.stream.acked = Some(0);
        c.stream.progress = progress;
        // Quiet 0.4 s by our clock: the peer's retransmission of a lost
        // segment might still come (its RTO is about ours, 0.2 s).
        assert!(!at_rest(&mut c, 4));
        assert!(at_rest(&mut c, 5));

        // The kernel saw an acknowledgement 0.3 s ago: not quiet enough.
        let mut c = conn(b"", 8, 100);
        c.stream.acked = Some(0);
        c.stream.progress = TcpProgress {
            since_ack_recv: Duration::from_millis(300),
            ..progress
        };
        assert!(!at_rest(&mut c, 100));
        // Our own segment is being retransmitted: in flight.
        c.stream.progress = TcpProgress {
            unacked_segments: 1,
            retransmits: 2,
            ..progress
        };
        assert!(!at_rest(&mut c, 100));
        c.stream.progress = progress;
        assert!(at_rest(&mut c, 100));
    }

    #[test]
    fn a_lossy_path_asks_for_quiet_that_outlasts_the_likely_runs_of_losses() {
        let base = TcpProgress {
            srtt: Duration::from_millis(1),
            rto: Duration::from_millis(200),
            ..TcpProgress::default()
        };
        let lossy = |total_retrans, data_segs_out| TcpProgress {
            total_retrans,
            data_segs_out,
            ..base
        };
        let ms = |d: Duration| d.as_millis();
        // Nothing lost: one loss covered, by two of our RTOs.
        assert_eq!(ms(rest_after(&base, 0.0)), 401);
        // 1%: two losses in a row are 1 in 10,000, so one is covered.
        assert_eq!(ms(rest_after(&lossy(1, 101), 0.0)), 401);
        // 3% (say, a loopback burst): two in a row covered, 3 RTOs each.
        assert_eq!(ms(rest_after(&lossy(4, 130), 0.0)), 1201);
        // 20%: five in a row, 31 RTOs.
        assert_eq!(ms(rest_after(&lossy(20, 100), 0.0)), 12401);
        // Losses known, out of nothing known: the longest wait.
        assert_eq!(ms(rest_after(&lossy(1, 0), 0.0)), 1 + 400 * 1023);
        // A clean connection on a lossy loop waits as its neighbours do.
        assert_eq!(ms(rest_after(&base, 0.2)), 12401);
        assert_eq!(
            ms(rest_after(&lossy(1, 5), 0.0)),
            ms(rest_after(&base, 0.2))
        );

        // And the shutdown judges by it: quiet 1.2 s is not enough at 3%.
        let quiet = |q_ms, p: TcpProgress| TcpProgress {
            since_data_recv: Duration::from_millis(q_ms),
            since_ack_recv: Duration::from_millis(q_ms),
            ..p
        };
        let mut h = Harness::new(8);
        let mut c = conn(b"", 8, 100);
        c.stream.acked = Some(0);
        c.stream.progress = quiet(1200, lossy(4, 130));
        rest_at(&mut c, &mut h, 100);
        assert_eq!(c.state(), ConnState::Open);
        c.stream.progress = quiet(1202, lossy(4, 130));
        rest_at(&mut c, &mut h, 100);
        assert_eq!(c.state(), ConnState::Lingering);
        // Nothing lost here, but 20% on the loop: 5 s of quiet is not rest.
        let mut c = conn(b"", 8, 100);
        c.stream.acked = Some(0);
        c.stream.progress = quiet(5000, base);
        rest_at_loss(&mut c, &mut h, 100, 0.2);
        assert_eq!(c.state(), ConnState::Open);
        rest_at_loss(&mut c, &mut h, 100, 0.0);
        assert_eq!(c.state(), ConnState::Lingering);
    }
}
