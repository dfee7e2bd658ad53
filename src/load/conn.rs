//! One TCP client of the load generator, and what every client shares:
//! its pace, the measured window, the loop's [`Tally`], and the [`Step`]
//! it hands back. A client sends messages as its pace allows, checks every
//! reply byte, and records latency and errors; it never sees the `Poll`,
//! the schedule heap or other clients. Connecting (and retrying) is the
//! loop's job; UDP clients live in `udp`.
//!
//! The TCP logic is generic over `Read + Write` so unit tests drive it
//! with a fake stream that takes N bytes and then says `WouldBlock`.

use std::collections::VecDeque;
use std::fmt;
use std::io::{self, Read, Write};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::payload::Message;
use super::report::Errors;
use crate::mode::Mode;
use crate::net::{is_interrupted, is_peer_gone, is_would_block};

/// Most messages one open-loop client has in flight before it waits for
/// replies. Latency still counts from each message's due time, so a stall
/// shows; the cap only bounds memory.
pub const OPEN_LOOP_MAX_IN_FLIGHT: usize = 4096;

/// Settings every client of a run follows.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// Bytes per message.
    pub size: usize,
    /// What the server is expected to do to each byte.
    pub expect: Mode,
    /// Stop reading after a read that did not fill the buffer (Linux).
    pub short_read: bool,
    /// How long a UDP request waits for its reply before it is lost.
    pub udp_reply_timeout: Duration,
}

/// When a client may send.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pace {
    /// Keep this many messages in flight; send the next when one completes.
    Closed {
        /// Messages in flight per client.
        pipeline: usize,
    },
    /// Message n is due at `first + n * interval`, sent or not.
    Open {
        /// When message 0 is due.
        first: Instant,
        /// Time between two messages of this client.
        interval: Duration,
    },
}

impl Pace {
    /// When message `seq` is due (open loop only).
    pub(crate) fn due(&self, seq: u64) -> Option<Instant> {
        match *self {
            Pace::Closed { .. } => None,
            Pace::Open { first, interval } => {
                let nanos = u64::try_from(interval.as_nanos())
                    .unwrap_or(u64::MAX)
                    .saturating_mul(seq);
                first.checked_add(Duration::from_nanos(nanos))
            }
        }
    }

    /// How many messages are due at `now` (open loop only).
    pub(crate) fn due_count(&self, now: Instant) -> u64 {
        match *self {
            Pace::Closed { .. } => 0,
            Pace::Open { first, interval } => {
                if now < first {
                    return 0;
                }
                let since = now.duration_since(first).as_nanos();
                let step = interval.as_nanos().max(1);
                u64::try_from(since / step + 1).unwrap_or(u64::MAX)
            }
        }
    }
}

/// The part of a run that counts: messages sent in it are measured.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Window {
    /// Start of measuring; `None` while ramping up or warming up.
    pub start: Option<Instant>,
    /// End of measuring; `None` until then.
    pub end: Option<Instant>,
}

impl Window {
    /// True if a message stamped `at` (sent, or due) is measured. The
    /// start is exclusive: a message stamped in the very batch that opened
    /// the window went out before it did.
    pub fn contains(&self, at: Instant) -> bool {
        self.start.is_some_and(|s| at > s) && self.end.map_or(true, |e| at < e)
    }
}

/// A loop's counters: what its clients measured and what went wrong.
#[derive(Debug, Clone)]
pub struct Tally {
    /// Measured messages whose reply came back right.
    pub messages: u64,
    /// Reply bytes of those messages.
    pub bytes: u64,
    /// Messages sent in the measured window (stamped in it), the base of
    /// the loss rate.
    pub sent: u64,
    /// Errors by kind.
    pub errors: Errors,
    /// UDP replies that overtook the reply to a later request (not errors).
    pub reordered: u64,
    /// UDP replies to requests already counted lost (not errors).
    pub late: u64,
    /// Mismatches that were exactly the ASCII uppercase of what was sent.
    pub mismatch_upper: u64,
    /// Latency of each measured message, in microseconds.
    pub latency: Histogram<u64>,
    /// Replies completed since the last progress report (measured or not).
    pub recent_messages: u64,
    /// Their latencies, kept only when progress is reported.
    pub recent_latency: Option<Histogram<u64>>,
    /// The first error, described for people.
    pub first_error: Option<String>,
}

impl Tally {
    /// Empty counters; `with_recent` keeps a second histogram for progress.
    pub fn new(with_recent: bool) -> Tally {
        Tally {
            messages: 0,
            bytes: 0,
            sent: 0,
            errors: Errors::default(),
            reordered: 0,
            late: 0,
            mismatch_upper: 0,
            latency: super::report::new_histogram(),
            recent_messages: 0,
            recent_latency: with_recent.then(super::report::new_histogram),
            first_error: None,
        }
    }

    /// A reply to a message stamped `stamp` completed correctly at `now`.
    pub(crate) fn complete(&mut self, stamp: Instant, now: Instant, window: &Window, size: usize) {
        let micros = u64::try_from(now.saturating_duration_since(stamp).as_micros())
            .unwrap_or(u64::MAX)
            .max(1);
        self.recent_messages += 1;
        if let Some(h) = &mut self.recent_latency {
            h.saturating_record(micros);
        }
        if window.contains(stamp) {
            self.messages += 1;
            self.bytes += size as u64;
            self.latency.saturating_record(micros);
        }
    }

    /// Remembers the first error's story; later ones only count.
    pub fn note(&mut self, describe: impl FnOnce() -> String) {
        if self.first_error.is_none() {
            self.first_error = Some(describe());
        }
    }
}

/// What a handler borrows from the loop for one call.
pub struct Ctx<'a> {
    /// The run's settings.
    pub settings: &'a Settings,
    /// The time of this batch of events.
    pub now: Instant,
    /// Which messages are measured.
    pub window: Window,
    /// The loop's counters.
    pub tally: &'a mut Tally,
}

/// Where a client is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientState {
    /// Sending as the pace allows and checking replies.
    Running,
    /// The measured window is over: no new messages, waiting for the
    /// replies in flight (a partly written message is finished first).
    Draining,
}

/// Why a client ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Drained: every reply arrived.
    Done,
    /// The server reset the connection.
    Reset,
    /// The server closed the connection while it was still needed.
    Eof,
    /// The server sent more bytes than it was sent.
    Excess,
    /// The drain grace period ended with replies still in flight.
    Timeout,
    /// Any other IO error.
    Io(io::ErrorKind),
}

impl fmt::Display for End {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            End::Done => f.write_str("done"),
            End::Reset => f.write_str("reset by server"),
            End::Eof => f.write_str("closed by server with replies outstanding"),
            End::Excess => f.write_str("server sent more bytes than it was sent"),
            End::Timeout => {
                f.write_str("replies still outstanding when the drain timed out (--drain-timeout)")
            }
            End::Io(kind) => write!(f, "io error: {kind}"),
        }
    }
}

/// What the loop should do with a client after a handler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    /// Nothing until the next readiness edge or due time.
    Wait,
    /// Close it and count `End`.
    Close(End),
}

/// Counts a client's end under its kind, plus its messages in flight as
/// lost when it did not end cleanly.
pub fn count_end(tally: &mut Tally, end: End, in_flight: u64, who: &dyn fmt::Display) {
    match end {
        End::Done => return,
        End::Reset => tally.errors.reset += 1,
        End::Eof => tally.errors.closed += 1,
        End::Excess => tally.errors.mismatch += 1,
        End::Timeout => tally.errors.timeout += 1,
        End::Io(_) => tally.errors.io += 1,
    }
    tally.errors.lost += in_flight;
    tally.note(|| format!("{who}: {end}"));
}

/// A byte for a message: `'a'` when printable ASCII, else `0x07`.
pub(crate) fn show_byte(b: u8) -> String {
    if b.is_ascii_graphic() || b == b' ' {
        format!("'{}'", b as char)
    } else {
        format!("0x{b:02x}")
    }
}

/// One TCP connection to the server, past its handshake.
#[derive(Debug)]
pub struct TcpClient<S = mio::net::TcpStream> {
    stream: S,
    /// The connection's number in the run; half of every payload's key.
    id: u64,
    state: ClientState,
    pace: Pace,
    /// Next byte to send: message `send_seq`, offset `send_off`.
    send_seq: u64,
    send_off: usize,
    /// Next reply byte expected: message `recv_seq`, offset `recv_off`.
    recv_seq: u64,
    recv_off: usize,
    /// One stamp (send time, or due time in open loop) per message whose
    /// first byte went out and whose reply is not complete; never longer
    /// than the pipeline (closed) or `OPEN_LOOP_MAX_IN_FLIGHT` (open).
    stamps: VecDeque<Instant>,
    /// The reply being read has a wrong byte already.
    is_recv_bad: bool,
    /// ... and so far it is exactly the uppercase of what was sent.
    is_recv_upper: bool,
}

impl<S: Read + Write> TcpClient<S> {
    /// A client on an established `stream`, numbered `id` in the run.
    pub fn new(stream: S, id: u64, pace: Pace) -> Self {
        let cap = match pace {
            Pace::Closed { pipeline } => pipeline,
            Pace::Open { .. } => 4,
        };
        TcpClient {
            stream,
            id,
            state: ClientState::Running,
            pace,
            send_seq: 0,
            send_off: 0,
            recv_seq: 0,
            recv_off: 0,
            stamps: VecDeque::with_capacity(cap),
            is_recv_bad: false,
            is_recv_upper: false,
        }
    }

    /// The socket.
    pub fn stream(&self) -> &S {
        &self.stream
    }

    /// The socket, for re-registration.
    pub fn stream_mut(&mut self) -> &mut S {
        &mut self.stream
    }

    /// The connection's number in the run.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Messages sent (at least partly) whose reply is not complete.
    pub fn in_flight(&self) -> u64 {
        self.stamps.len() as u64
    }

    /// Where the client is in its life.
    pub fn state(&self) -> ClientState {
        self.state
    }

    /// When the next message not yet due becomes due (open loop only).
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        if self.state != ClientState::Running {
            return None;
        }
        self.pace.due(self.pace.due_count(now))
    }

    /// The measured window ended: send nothing new, wait for replies.
    pub fn stop_sending(&mut self, size: usize) -> Step {
        self.state = ClientState::Draining;
        self.drained_step(size)
    }

    /// The socket has room again: send what the pace allows.
    pub fn on_writable(&mut self, scratch: &mut [u8], cx: &mut Ctx<'_>) -> Step {
        self.pump(scratch, cx)
    }

    /// Replies arrived: read until the socket is empty, check every byte,
    /// then send what the completed replies allow.
    pub fn on_readable(&mut self, scratch: &mut [u8], cx: &mut Ctx<'_>) -> Step {
        loop {
            match self.stream.read(scratch) {
                // EOF: fine only if nothing more was owed to us.
                Ok(0) => {
                    return match self.drained_step(cx.settings.size) {
                        Step::Close(End::Done) => Step::Close(End::Done),
                        _ => Step::Close(End::Eof),
                    }
                }
                Ok(n) => {
                    if let Err(end) = self.consume(&scratch[..n], cx) {
                        return Step::Close(end);
                    }
                    // A short read means the queue was empty; the next
                    // edge reports new data (Linux epoll).
                    if cx.settings.short_read && n < scratch.len() {
                        break;
                    }
                }
                // Queue drained: the next edge wakes us.
                Err(e) if is_would_block(&e) => break,
                Err(e) if is_interrupted(&e) => continue,
                Err(e) if is_peer_gone(&e) => return Step::Close(End::Reset),
                Err(e) => return Step::Close(End::Io(e.kind())),
            }
        }
        self.pump(scratch, cx)
    }

    /// Messages that may have started sending by now.
    fn send_limit(&mut self, now: Instant) -> u64 {
        if self.state == ClientState::Draining {
            // Only finish the message already begun.
            return self.send_seq + u64::from(self.send_off > 0);
        }
        match self.pace {
            Pace::Closed { pipeline } => self.recv_seq + pipeline as u64,
            Pace::Open { .. } => self
                .pace
                .due_count(now)
                .min(self.recv_seq + OPEN_LOOP_MAX_IN_FLIGHT as u64),
        }
    }

    /// Writes what the pace allows until done or the kernel pushes back.
    fn pump(&mut self, scratch: &mut [u8], cx: &mut Ctx<'_>) -> Step {
        let size = cx.settings.size;
        loop {
            let limit = self.send_limit(cx.now);
            let len = self.fill(scratch, limit, size);
            if len == 0 {
                return self.drained_step(size);
            }
            match self.stream.write(&scratch[..len]) {
                Ok(0) => return Step::Close(End::Io(io::ErrorKind::WriteZero)),
                Ok(n) => {
                    self.advance(n, cx);
                    if n < len {
                        // Socket buffer full: the writable edge resumes us.
                        return Step::Wait;
                    }
                }
                // Socket buffer full: the writable edge resumes us.
                Err(e) if is_would_block(&e) => return Step::Wait,
                Err(e) if is_interrupted(&e) => continue,
                Err(e) if is_peer_gone(&e) => return Step::Close(End::Reset),
                Err(e) => return Step::Close(End::Io(e.kind())),
            }
        }
    }

    /// Generates the bytes from the send position up to message `limit`
    /// into `scratch`; returns how many.
    fn fill(&self, scratch: &mut [u8], limit: u64, size: usize) -> usize {
        let (mut seq, mut off, mut len) = (self.send_seq, self.send_off, 0);
        while seq < limit && len < scratch.len() {
            let n = (size - off).min(scratch.len() - len);
            Message { conn: self.id, seq }.fill(off, &mut scratch[len..len + n]);
            len += n;
            off += n;
            if off == size {
                seq += 1;
                off = 0;
            }
        }
        len
    }

    /// The kernel took `n` more bytes: move the send position, stamping
    /// each message whose first byte just went out.
    fn advance(&mut self, mut n: usize, cx: &mut Ctx<'_>) {
        let size = cx.settings.size;
        while n > 0 {
            if self.send_off == 0 {
                let stamp = self.pace.due(self.send_seq).unwrap_or(cx.now);
                self.stamps.push_back(stamp);
                if cx.window.contains(stamp) {
                    cx.tally.sent += 1;
                }
            }
            let take = (size - self.send_off).min(n);
            self.send_off += take;
            n -= take;
            if self.send_off == size {
                self.send_seq += 1;
                self.send_off = 0;
            }
        }
    }

    /// Checks reply bytes against what was sent, completing messages.
    fn consume(&mut self, mut data: &[u8], cx: &mut Ctx<'_>) -> Result<(), End> {
        let size = cx.settings.size;
        let sent = self.send_seq * size as u64 + self.send_off as u64;
        let received = self.recv_seq * size as u64 + self.recv_off as u64;
        if received + data.len() as u64 > sent {
            return Err(End::Excess);
        }
        while !data.is_empty() {
            let take = (size - self.recv_off).min(data.len());
            let msg = Message {
                conn: self.id,
                seq: self.recv_seq,
            };
            if !self.is_recv_bad {
                if let Some(i) = msg.check(cx.settings.expect, self.recv_off, &data[..take]) {
                    self.is_recv_bad = true;
                    let (off, got) = (self.recv_off + i, data[i]);
                    // Payload bytes are all lowercase letters, so a reply
                    // that is all uppercase goes wrong at its first byte.
                    self.is_recv_upper = off == 0 && cx.settings.expect == Mode::Echo;
                    cx.tally.note(|| {
                        format!(
                            "conn {} message {} byte {off}: got {}, expected {}",
                            msg.conn,
                            msg.seq,
                            show_byte(got),
                            show_byte(super::payload::transform(cx.settings.expect, msg.byte(off)))
                        )
                    });
                }
            }
            if self.is_recv_bad && self.is_recv_upper {
                self.is_recv_upper = msg
                    .check(Mode::Upper, self.recv_off, &data[..take])
                    .is_none();
            }
            self.recv_off += take;
            data = &data[take..];
            if self.recv_off == size {
                // Byte counts were checked above, so a stamp is there.
                let stamp = self.stamps.pop_front().unwrap_or(cx.now);
                if self.is_recv_bad {
                    cx.tally.errors.mismatch += 1;
                    if self.is_recv_upper {
                        cx.tally.mismatch_upper += 1;
                    }
                } else {
                    cx.tally.complete(stamp, cx.now, &cx.window, size);
                }
                self.recv_seq += 1;
                self.recv_off = 0;
                self.is_recv_bad = false;
            }
        }
        Ok(())
    }

    /// Done once draining with nothing in flight and nothing half sent.
    fn drained_step(&self, _size: usize) -> Step {
        if self.state == ClientState::Draining && self.stamps.is_empty() && self.send_off == 0 {
            Step::Close(End::Done)
        } else {
            Step::Wait
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes at most `room` bytes per write (then says
    /// `WouldBlock` until `room` is raised) and echoes what it took,
    /// `chunk` bytes per read.
    struct FakeEcho {
        room: usize,
        echoed: VecDeque<u8>,
        chunk: usize,
        corrupt_at: Option<usize>,
        taken: usize,
    }

    impl Read for FakeEcho {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.echoed.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.chunk).min(self.echoed.len());
            for b in buf.iter_mut().take(n) {
                *b = self.echoed.pop_front().expect("length checked");
            }
            Ok(n)
        }
    }

    impl Write for FakeEcho {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.room == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.room);
            self.room -= n;
            for &b in &buf[..n] {
                let b = if Some(self.taken) == self.corrupt_at {
                    b ^ 1
                } else {
                    b
                };
                self.taken += 1;
                self.echoed.push_back(b);
            }
            Ok(n)
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn settings(size: usize) -> Settings {
        Settings {
            size,
            expect: Mode::Echo,
            short_read: false,
            udp_reply_timeout: Duration::from_secs(1),
        }
    }

    fn fake(room: usize, chunk: usize, corrupt_at: Option<usize>) -> FakeEcho {
        FakeEcho {
            room,
            echoed: VecDeque::new(),
            chunk,
            corrupt_at,
            taken: 0,
        }
    }

    /// Drives the client until it stops making progress or `rounds` pass.
    fn drive(
        c: &mut TcpClient<FakeEcho>,
        s: &Settings,
        tally: &mut Tally,
        room_per_round: usize,
        rounds: usize,
    ) {
        let mut scratch = vec![0u8; 1024];
        let now = Instant::now();
        let window = Window {
            start: Some(now - Duration::from_secs(1)),
            end: None,
        };
        for _ in 0..rounds {
            c.stream.room += room_per_round;
            let mut cx = Ctx {
                settings: s,
                now,
                window,
                tally,
            };
            assert_eq!(c.on_writable(&mut scratch, &mut cx), Step::Wait);
            assert_eq!(c.on_readable(&mut scratch, &mut cx), Step::Wait);
        }
    }

    #[test]
    fn partial_writes_and_odd_chunks_still_verify_every_message() {
        let s = settings(100);
        let mut tally = Tally::new(false);
        let mut c = TcpClient::new(fake(0, 7, None), 5, Pace::Closed { pipeline: 3 });
        drive(&mut c, &s, &mut tally, 33, 300);
        assert_eq!(tally.errors, Errors::default());
        assert!(tally.messages >= 90, "{}", tally.messages);
        assert!(c.in_flight() <= 3);
        assert_eq!(tally.bytes, tally.messages * 100);
    }

    #[test]
    fn one_wrong_byte_is_one_mismatch() {
        let s = settings(64);
        let mut tally = Tally::new(false);
        let mut c = TcpClient::new(
            fake(0, 64, Some(64 * 10 + 5)),
            1,
            Pace::Closed { pipeline: 1 },
        );
        drive(&mut c, &s, &mut tally, 64, 20);
        assert_eq!(tally.errors.mismatch, 1);
        assert_eq!(tally.messages, 19);
        assert!(tally.first_error.unwrap().contains("message 10 byte 5"));
    }

    #[test]
    fn draining_finishes_the_half_sent_message_then_ends() {
        let s = settings(10);
        let mut tally = Tally::new(false);
        let mut c = TcpClient::new(fake(4, 10, None), 0, Pace::Closed { pipeline: 2 });
        let mut scratch = vec![0u8; 64];
        let now = Instant::now();
        let mut cx = Ctx {
            settings: &s,
            now,
            window: Window::default(),
            tally: &mut tally,
        };
        assert_eq!(c.on_writable(&mut scratch, &mut cx), Step::Wait);
        assert_eq!(c.stop_sending(10), Step::Wait, "4 of 10 bytes sent");
        c.stream.room = 100;
        assert_eq!(c.on_writable(&mut scratch, &mut cx), Step::Wait);
        assert_eq!(c.stream.taken, 10, "only the begun message is finished");
        assert_eq!(c.on_readable(&mut scratch, &mut cx), Step::Close(End::Done));
        assert_eq!(cx.tally.messages, 0, "nothing measured outside the window");
    }

    #[test]
    fn open_loop_stamps_the_due_time() {
        let t0 = Instant::now();
        let pace = Pace::Open {
            first: t0,
            interval: Duration::from_millis(10),
        };
        assert_eq!(pace.due_count(t0), 1);
        assert_eq!(pace.due_count(t0 + Duration::from_millis(25)), 3);
        assert_eq!(pace.due(2), Some(t0 + Duration::from_millis(20)));
        assert_eq!(pace.due_count(t0 - Duration::from_millis(1)), 0);
    }
}
