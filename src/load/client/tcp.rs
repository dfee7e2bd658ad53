//! One TCP client of the load generator: it sends messages as its pace
//! allows, checks every reply byte as it arrives, and records latency and
//! errors in the loop's tally. It never sees the `Poll`, the schedule
//! heap or other clients; connecting (and retrying) is the loop's job,
//! and what it shares with the UDP client is in `contract`.
//!
//! The logic is generic over `Read + Write`: a plain socket, a TLS
//! session over one (`tls_client::TlsStream`, for `tls://`), or in unit
//! tests a fake stream that takes N bytes and then says `WouldBlock`. Each
//! is its own monomorphized client, so plain TCP pays nothing for TLS.

use std::collections::VecDeque;
use std::io::{self, Read, Write};
use std::time::Instant;

use super::contract::{
    show_byte, ClientCtx, ClientState, End, Pace, Step, OPEN_LOOP_MAX_IN_FLIGHT,
};
use crate::load::payload::Message;
use crate::mode::Mode;
use crate::net::{is_interrupted, is_peer_gone, is_would_block};
use crate::tls_client::TlsStream;

/// What the client needs of its stream beyond `Read + Write`: a plain
/// socket needs nothing more; a TLS session can hold what the socket no
/// longer announces.
pub trait ClientStream: Read + Write {
    /// The poll reported the peer's FIN or an error: the stream, if it
    /// keeps a short-read shortcut of its own, reads to the end from now.
    fn note_hangup(&mut self) {}

    /// True when a read would return something (bytes, the end, an error)
    /// that no new readiness edge will announce, because the stream took
    /// it from the socket already: a short read is then no reason to stop.
    fn holds_unread(&self) -> bool {
        false
    }
}

impl ClientStream for mio::net::TcpStream {}

impl ClientStream for TlsStream {
    fn note_hangup(&mut self) {
        TlsStream::note_hangup(self);
    }

    fn holds_unread(&self) -> bool {
        TlsStream::holds_unread(self)
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
    /// The poll reported the server's FIN or an error. Sticky: it may sit
    /// behind reply bytes a short read leaves, and its edge is spent.
    is_hangup_reported: bool,
    /// How the PROXY header this connection sent first begins, if it sent
    /// one: a reply that begins so is that header echoed back. Looked at
    /// only once a reply is already wrong.
    echo_signature: Option<&'static [u8]>,
    /// `--churn`: the connection carries the messages before this number,
    /// then it is [`Step::Finished`]; `None`: it runs until the drain.
    last: Option<u64>,
}

impl<S: ClientStream> TcpClient<S> {
    /// A client on an established `stream`, numbered `id` in the run.
    pub fn new(stream: S, id: u64, pace: Pace) -> Self {
        let cap = match pace {
            Pace::Closed { pipeline } => pipeline,
            Pace::Open { .. } | Pace::Staged(_) => 4,
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
            is_hangup_reported: false,
            echo_signature: None,
            last: None,
        }
    }

    /// `--churn`: this connection carries `count` messages numbered from
    /// `first` (where the connection it replaces stopped, so an open-loop
    /// schedule goes on where it was), then finishes.
    pub fn carrying(mut self, first: u64, count: u64) -> Self {
        self.send_seq = first;
        self.recv_seq = first;
        self.last = Some(first.saturating_add(count));
        self
    }

    /// Where the next connection in this one's place begins: the first
    /// message it did not carry.
    pub fn next_seq(&self) -> u64 {
        self.recv_seq
    }

    /// The pace it sends at, for a connection in its place to go on with.
    pub fn pace(&self) -> Pace {
        self.pace.clone()
    }

    /// The loop sent our end (FIN, or TLS `close_notify`) after
    /// [`Step::Finished`]: from now on only the server's end may come.
    pub fn set_closing(&mut self) {
        self.state = ClientState::Closing;
    }

    /// This connection sent a PROXY header beginning with `signature`
    /// before its first message: a reply that begins with it ends the
    /// connection as [`End::HeaderEchoed`] (the server does not take the
    /// protocol) instead of an anonymous mismatch.
    pub fn echo_guard(mut self, signature: Option<&'static [u8]>) -> Self {
        self.echo_signature = signature;
        self
    }

    /// Records that the poll reported the server's FIN or an error, which
    /// turns the short-read shortcut off for this connection: the FIN may
    /// come in the same segment as the last reply, and no new edge would
    /// announce it.
    pub fn note_hangup(&mut self) {
        self.is_hangup_reported = true;
        self.stream.note_hangup();
    }

    /// True when replies (or the end) may be waiting that no new edge
    /// will announce: a hang-up was reported before the client came up, or
    /// the stream holds what its handshake brought along. The loop then
    /// reads once without an edge.
    pub fn needs_read(&self) -> bool {
        self.is_hangup_reported || self.stream.holds_unread()
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

    /// `--stages`: the schedule begins at `origin`.
    pub fn begin_schedule(&mut self, origin: Instant) {
        self.pace.begin_at(origin);
    }

    /// When the next message not yet due becomes due (open loop only).
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        if self.state != ClientState::Running {
            return None;
        }
        let next = self.pace.due_count(now);
        if self.last.is_some_and(|last| next >= last) {
            // Its last message is due already: the next is another
            // connection's.
            return None;
        }
        self.pace.due(next)
    }

    /// The measured window ended: send nothing new but the rest of a
    /// message already begun (the server cannot answer half of one), then
    /// wait for the replies in flight.
    pub fn stop_sending(&mut self, scratch: &mut [u8], cx: &mut ClientCtx<'_>) -> Step {
        if self.state == ClientState::Closing {
            // Nothing in flight; the server's end is all it waits for.
            return Step::Wait;
        }
        self.state = ClientState::Draining;
        self.send(scratch, cx)
    }

    /// The socket reported readiness: room to write, replies to read.
    pub fn on_ready(
        &mut self,
        readable: bool,
        writable: bool,
        scratch: &mut [u8],
        cx: &mut ClientCtx<'_>,
    ) -> Step {
        let mut step = Step::Wait;
        // Write first, into the room the edge announced; reading ends
        // with a send of its own for the slots its replies freed.
        if writable {
            // TLS: records of messages already taken may wait for this
            // room. A plain socket's flush does nothing.
            step = match self.stream.flush() {
                Ok(()) => self.send(scratch, cx),
                Err(e) if is_peer_gone(&e) => Step::Close(End::Reset),
                Err(e) => Step::Close(End::Io(e.kind())),
            };
        }
        if readable && step == Step::Wait {
            step = self.on_readable(scratch, cx);
        }
        step
    }

    /// Replies arrived: read until the socket is empty, check every byte,
    /// then send what the completed replies allow.
    pub fn on_readable(&mut self, scratch: &mut [u8], cx: &mut ClientCtx<'_>) -> Step {
        loop {
            match self.stream.read(scratch) {
                // EOF: fine only if nothing more was owed to us.
                Ok(0) => return self.eof_step(),
                Ok(n) => {
                    if let Err(end) = self.consume(&scratch[..n], cx) {
                        return Step::Close(end);
                    }
                    // A short read means the queue was empty; the next
                    // edge reports new data (Linux epoll). Not after a
                    // reported hang-up: the FIN behind these bytes raises
                    // no edge again; nor while the stream holds more (a
                    // TLS end behind this plaintext).
                    if cx.settings.short_read
                        && n < scratch.len()
                        && !self.is_hangup_reported
                        && !self.stream.holds_unread()
                    {
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
        self.send(scratch, cx)
    }

    /// The server's FIN: fine only if nothing more was owed to us.
    fn eof_step(&self) -> Step {
        if self.state == ClientState::Closing {
            // The server's end after ours: the close is done.
            return Step::Close(End::Closed);
        }
        match self.drained_step() {
            Step::Close(End::Done) => Step::Close(End::Done),
            // Its last reply in, the server closed first: it owed nothing
            // more.
            Step::Finished => Step::Close(End::Closed),
            _ => Step::Close(End::Eof),
        }
    }

    /// Messages that may have started sending by now.
    fn send_limit(&mut self, now: Instant) -> u64 {
        match self.state {
            ClientState::Running => {}
            // Only finish the message already begun.
            ClientState::Draining => return self.send_seq + u64::from(self.send_off > 0),
            ClientState::Closing => return self.send_seq,
        }
        let paced = match self.pace {
            Pace::Closed { pipeline } => self.recv_seq + pipeline as u64,
            Pace::Open { .. } | Pace::Staged(_) => self
                .pace
                .due_count(now)
                .min(self.recv_seq + OPEN_LOOP_MAX_IN_FLIGHT as u64),
        };
        self.last.map_or(paced, |last| paced.min(last))
    }

    /// Writes what the pace allows until done or the kernel pushes back.
    pub fn send(&mut self, scratch: &mut [u8], cx: &mut ClientCtx<'_>) -> Step {
        let size = cx.settings.size;
        loop {
            let limit = self.send_limit(cx.now);
            let len = self.fill(scratch, limit, size);
            if len == 0 {
                return self.drained_step();
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
    fn advance(&mut self, mut n: usize, cx: &mut ClientCtx<'_>) {
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
    fn consume(&mut self, mut data: &[u8], cx: &mut ClientCtx<'_>) -> Result<(), End> {
        let size = cx.settings.size;
        let sent = self.send_seq * size as u64 + self.send_off as u64;
        let received = self.recv_seq * size as u64 + self.recv_off as u64;
        if received + data.len() as u64 > sent {
            return Err(self.excess_or_echo(data));
        }
        while !data.is_empty() {
            let take = (size - self.recv_off).min(data.len());
            let msg = Message {
                conn: self.id,
                seq: self.recv_seq,
            };
            if !self.is_recv_bad {
                if let Some(i) = msg.check(cx.settings.expect, self.recv_off, &data[..take]) {
                    if self.is_echoed_header(data) {
                        return Err(End::HeaderEchoed);
                    }
                    self.is_recv_bad = true;
                    let (off, got) = (self.recv_off + i, data[i]);
                    // Payload bytes are all lowercase letters, so a reply
                    // that is all uppercase goes wrong at its first byte.
                    self.is_recv_upper = off == 0 && cx.settings.expect == Mode::Echo;
                    // Told only if it counts: see the completion below.
                    let is_measured = self
                        .stamps
                        .front()
                        .is_some_and(|&stamp| cx.window.contains(stamp));
                    cx.tally.note_if(is_measured, || {
                        format!(
                            "conn {} message {} byte {off}: got {}, expected {}",
                            msg.conn,
                            msg.seq,
                            show_byte(got),
                            show_byte(crate::load::payload::transform(
                                cx.settings.expect,
                                msg.byte(off)
                            ))
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
                    // Per message, and like `messages` and `sent` only for
                    // messages of the window, so the counts compare.
                    if cx.window.contains(stamp) {
                        cx.tally.errors.mismatch += 1;
                        if self.is_recv_upper {
                            cx.tally.mismatch_upper += 1;
                        }
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

    /// More came back than was sent: our PROXY header echoed, or excess.
    fn excess_or_echo(&self, data: &[u8]) -> End {
        if self.is_echoed_header(data) {
            End::HeaderEchoed
        } else {
            End::Excess
        }
    }

    /// True when `data`, the reply bytes from the very first on, begin
    /// with the PROXY header this connection sent (at least 5 bytes of
    /// it, no payload byte being any of them).
    fn is_echoed_header(&self, data: &[u8]) -> bool {
        let Some(signature) = self.echo_signature else {
            return false;
        };
        let n = data.len().min(signature.len());
        self.recv_seq == 0 && self.recv_off == 0 && n >= 5 && data[..n] == signature[..n]
    }

    /// Done once draining with nothing in flight and nothing half sent;
    /// finished once every message it carries (`--churn`) is answered.
    fn drained_step(&self) -> Step {
        let is_idle = self.stamps.is_empty() && self.send_off == 0;
        match self.state {
            ClientState::Draining if is_idle => Step::Close(End::Done),
            ClientState::Running if is_idle && self.last == Some(self.recv_seq) => Step::Finished,
            _ => Step::Wait,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::client::contract::{Settings, Tally, Window};
    use crate::load::report::Errors;
    use std::time::Duration;

    /// A socket that takes at most `room` bytes per write (then says
    /// `WouldBlock` until `room` is raised) and echoes what it took,
    /// `chunk` bytes per read.
    struct FakeEcho {
        room: usize,
        echoed: VecDeque<u8>,
        chunk: usize,
        corrupt_at: Option<usize>,
        taken: usize,
        /// Once the echo is read, the server's FIN.
        is_fin_sent: bool,
    }

    impl Read for FakeEcho {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if self.echoed.is_empty() && self.is_fin_sent {
                return Ok(0);
            }
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

    impl ClientStream for FakeEcho {}

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
            is_fin_sent: false,
        }
    }

    /// Drives the client until it stops making progress or `rounds` pass.
    /// A context one second into the measuring window, now.
    fn measuring<'a>(s: &'a Settings, tally: &'a mut Tally) -> ClientCtx<'a> {
        let now = Instant::now();
        ClientCtx {
            settings: s,
            now,
            window: Window {
                start: Some(now - Duration::from_secs(1)),
                end: None,
            },
            tally,
        }
    }

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
            let mut cx = ClientCtx {
                settings: s,
                now,
                window,
                tally,
            };
            assert_eq!(c.send(&mut scratch, &mut cx), Step::Wait);
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
        let mut cx = ClientCtx {
            settings: &s,
            now,
            window: Window::default(),
            tally: &mut tally,
        };
        assert_eq!(c.send(&mut scratch, &mut cx), Step::Wait);
        assert_eq!(
            c.stop_sending(&mut scratch, &mut cx),
            Step::Wait,
            "4 of 10 bytes sent"
        );
        c.stream.room = 100;
        assert_eq!(c.send(&mut scratch, &mut cx), Step::Wait);
        assert_eq!(c.stream.taken, 10, "only the begun message is finished");
        assert_eq!(c.on_readable(&mut scratch, &mut cx), Step::Close(End::Done));
        assert_eq!(cx.tally.messages, 0, "nothing measured outside the window");
    }

    #[test]
    fn a_fin_behind_the_last_reply_ends_the_client_once_the_hangup_is_reported() {
        let s = Settings {
            short_read: true,
            ..settings(64)
        };
        let mut tally = Tally::new(false);
        let mut scratch = vec![0u8; 1024];
        let mut cx = ClientCtx {
            settings: &s,
            now: Instant::now(),
            window: Window::default(),
            tally: &mut tally,
        };
        // Room for one message: the reply, then the server's FIN.
        let mut c = TcpClient::new(fake(64, 1024, None), 0, Pace::Closed { pipeline: 1 });
        assert_eq!(c.send(&mut scratch, &mut cx), Step::Wait);
        c.stream.is_fin_sent = true;
        // The reply fills 64 of 1024 bytes: a short read ends the drain,
        // and the FIN behind it goes unread.
        assert_eq!(c.on_readable(&mut scratch, &mut cx), Step::Wait);
        c.note_hangup();
        assert_eq!(
            c.on_readable(&mut scratch, &mut cx),
            Step::Close(End::Eof),
            "with the hang-up reported, the read goes on to the FIN"
        );
    }

    /// A stream that holds what it is given until flushed, as a TLS
    /// session holds the records of plaintext it took when the socket had
    /// no room for them.
    struct Holding {
        inner: FakeEcho,
        held: Vec<u8>,
    }

    impl ClientStream for Holding {}

    impl Read for Holding {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.inner.read(buf)
        }
    }

    impl Write for Holding {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.held.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            let n = self.inner.write(&self.held)?;
            self.held.drain(..n);
            Ok(())
        }
    }

    #[test]
    fn a_writable_edge_flushes_what_the_stream_holds_even_with_nothing_new_to_send() {
        let s = settings(64);
        let mut tally = Tally::new(false);
        let mut scratch = vec![0u8; 1024];
        let mut cx = measuring(&s, &mut tally);
        let stream = Holding {
            inner: fake(1024, 1024, None),
            held: Vec::new(),
        };
        let mut c = TcpClient::new(stream, 0, Pace::Closed { pipeline: 1 });
        assert_eq!(c.send(&mut scratch, &mut cx), Step::Wait);
        assert_eq!(c.stream.held.len(), 64, "the message is held, not sent");
        // Room again: the pipeline is full, so only a flush moves it.
        assert_eq!(c.on_ready(false, true, &mut scratch, &mut cx), Step::Wait);
        assert!(c.stream.held.is_empty(), "flushed on the writable edge");
        assert_eq!(c.on_ready(true, false, &mut scratch, &mut cx), Step::Wait);
        assert_eq!(cx.tally.messages, 1);
    }

    #[test]
    fn an_echoed_proxy_header_ends_the_connection_as_a_mismatch_that_says_so() {
        let s = settings(64);
        let mut tally = Tally::new(false);
        let mut scratch = vec![0u8; 1024];
        let mut cx = ClientCtx {
            settings: &s,
            now: Instant::now(),
            window: Window::default(),
            tally: &mut tally,
        };
        let v2 = crate::load::ProxyVersion::V2;
        let mut c = TcpClient::new(fake(1024, 1024, None), 0, Pace::Closed { pipeline: 1 })
            .echo_guard(Some(v2.signature()));
        // What an echo server without the protocol does: the header back
        // first, then the message.
        c.stream.echoed.extend(v2.signature().iter().copied());
        assert_eq!(c.send(&mut scratch, &mut cx), Step::Wait);
        assert_eq!(
            c.on_readable(&mut scratch, &mut cx),
            Step::Close(End::HeaderEchoed)
        );
        // Without a header sent, the same bytes are plain excess.
        let mut c = TcpClient::new(fake(1024, 1024, None), 0, Pace::Closed { pipeline: 1 });
        c.stream.echoed.extend(v2.signature().iter().copied());
        assert_eq!(c.send(&mut scratch, &mut cx), Step::Wait);
        assert_eq!(
            c.on_readable(&mut scratch, &mut cx),
            Step::Close(End::Excess)
        );
    }

    #[test]
    fn a_churned_client_carries_its_messages_then_finishes_and_waits_for_the_servers_end() {
        let s = settings(16);
        let mut tally = Tally::new(false);
        let mut scratch = vec![0u8; 1024];
        let mut cx = measuring(&s, &mut tally);
        // Messages 6, 7 and 8, where the connection before it stopped.
        let mut c =
            TcpClient::new(fake(1024, 1024, None), 2, Pace::Closed { pipeline: 2 }).carrying(6, 3);
        assert_eq!(c.send(&mut scratch, &mut cx), Step::Wait);
        assert_eq!(c.stream.taken, 32, "two in flight, as the pipeline allows");
        assert_eq!(c.on_readable(&mut scratch, &mut cx), Step::Wait);
        assert_eq!(c.stream.taken, 48, "and the third, no fourth");
        assert_eq!(c.on_readable(&mut scratch, &mut cx), Step::Finished);
        assert_eq!(cx.tally.messages, 3);
        assert_eq!(
            cx.tally.errors,
            Errors::default(),
            "message numbers 6 to 8 check"
        );
        assert_eq!(c.next_seq(), 9);
        c.set_closing();
        assert_eq!(c.on_readable(&mut scratch, &mut cx), Step::Wait);
        c.stream.is_fin_sent = true;
        assert_eq!(
            c.on_readable(&mut scratch, &mut cx),
            Step::Close(End::Closed)
        );
    }

    #[test]
    fn a_server_that_closes_before_the_last_reply_or_sends_after_it_is_an_error() {
        let s = settings(16);
        let mut tally = Tally::new(false);
        let mut scratch = vec![0u8; 1024];
        let mut cx = ClientCtx {
            settings: &s,
            now: Instant::now(),
            window: Window::default(),
            tally: &mut tally,
        };
        let mut c =
            TcpClient::new(fake(16, 1024, None), 0, Pace::Closed { pipeline: 1 }).carrying(0, 2);
        assert_eq!(c.send(&mut scratch, &mut cx), Step::Wait);
        assert_eq!(
            c.on_readable(&mut scratch, &mut cx),
            Step::Wait,
            "one of two"
        );
        c.stream.is_fin_sent = true;
        assert_eq!(c.on_readable(&mut scratch, &mut cx), Step::Close(End::Eof));
        // All its replies in, then a byte where the server's end belongs.
        let mut c =
            TcpClient::new(fake(16, 1024, None), 0, Pace::Closed { pipeline: 1 }).carrying(0, 1);
        assert_eq!(c.send(&mut scratch, &mut cx), Step::Wait);
        assert_eq!(c.on_readable(&mut scratch, &mut cx), Step::Finished);
        c.set_closing();
        c.stream.echoed.push_back(b'x');
        assert_eq!(
            c.on_readable(&mut scratch, &mut cx),
            Step::Close(End::Excess)
        );
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
