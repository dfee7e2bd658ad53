//! One UDP client of the load generator: a connected socket, a datagram
//! per message, replies matched to requests by the sequence number at the
//! start of the payload. A request whose reply does not come within the
//! reply timeout is lost; a reply that comes after that is `late` (it stays
//! lost, and is not a mismatch). A second reply to a request is a
//! `duplicate`, an error; a reply that overtakes the reply to a later
//! request is `reordered`, which UDP allows, so it is only counted. A
//! wrong reply is a mismatch. Like the TCP client, it never sees the `Poll`.

use std::collections::VecDeque;
use std::io;
use std::os::fd::AsRawFd;
use std::time::Instant;

use log::debug;

use super::contract::{ClientCtx, ClientState, End, Pace, Step, OPEN_LOOP_MAX_IN_FLIGHT};
use crate::load::payload::{decode_seq, Message};
use crate::mode::Mode;
use crate::net::{self, is_interrupted, is_would_block};

/// How many lost sequence numbers a socket remembers, to tell a late reply
/// from a duplicate. A reply to a request lost longer ago than that counts
/// as a duplicate; at the default 0.5 s reply timeout it would have to be
/// thousands of losses late.
const GIVEN_UP_MEMORY: usize = 4096;

/// One in-flight UDP request.
#[derive(Debug, Clone, Copy)]
struct Flight {
    seq: u64,
    /// Send time, or due time in open loop: latency counts from here.
    stamp: Instant,
    /// When it really went out: the reply timeout counts from here.
    sent_at: Instant,
}

/// One connected UDP socket: a datagram per message, replies matched by
/// the sequence number at the start of the payload.
#[derive(Debug)]
pub struct UdpClient {
    socket: mio::net::UdpSocket,
    id: u64,
    state: ClientState,
    pace: Pace,
    next_seq: u64,
    /// Requests waiting for replies, oldest first.
    in_flight: VecDeque<Flight>,
    /// Requests counted lost, in increasing order, at most
    /// `GIVEN_UP_MEMORY` of the latest.
    given_up: VecDeque<u64>,
    /// The highest sequence number answered so far: a reply below it
    /// overtook another.
    highest_answered: Option<u64>,
    /// The server's port answered with ICMP unreachable (counted once).
    is_refused: bool,
    /// Datagrams the kernel dropped at this socket, its receive buffer
    /// full, as the last datagram read said (`SO_RXQ_OVFL`).
    rcvbuf_drops: u32,
}

impl UdpClient {
    /// A client on a socket already connected to the server. It asks the
    /// kernel to tell, with each datagram, how many it dropped before.
    pub fn new(socket: mio::net::UdpSocket, id: u64, pace: Pace) -> Self {
        if let Err(e) = net::count_drops(socket.as_raw_fd()) {
            debug!("udp socket {id}: receive drops will not be counted: {e}");
        }
        UdpClient {
            socket,
            id,
            state: ClientState::Running,
            pace,
            next_seq: 0,
            in_flight: VecDeque::new(),
            given_up: VecDeque::new(),
            highest_answered: None,
            is_refused: false,
            rcvbuf_drops: 0,
        }
    }

    /// Datagrams (replies) the kernel dropped at this socket so far, its
    /// receive buffer full.
    pub fn rcvbuf_drops(&self) -> u64 {
        u64::from(self.rcvbuf_drops)
    }

    /// The client's number in the run.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Requests waiting for replies.
    pub fn in_flight(&self) -> u64 {
        self.in_flight.len() as u64
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
        self.pace.due(self.pace.due_count(now))
    }

    /// The measured window ended: send nothing new, wait for replies. A
    /// datagram is never half sent, so nothing is left to finish.
    pub fn stop_sending(&mut self, scratch: &mut [u8], cx: &mut ClientCtx<'_>) -> Step {
        self.state = ClientState::Draining;
        self.send(scratch, cx)
    }

    /// The socket reported readiness: replies to read, room to send.
    pub fn on_ready(
        &mut self,
        readable: bool,
        writable: bool,
        scratch: &mut [u8],
        cx: &mut ClientCtx<'_>,
    ) -> Step {
        let mut step = Step::Wait;
        // Read first: each reply frees a slot the send can use at once.
        if readable {
            step = self.on_readable(scratch, cx);
        }
        if writable && step == Step::Wait {
            step = self.send(scratch, cx);
        }
        step
    }

    /// Sends what the pace allows, one datagram per message.
    pub fn send(&mut self, scratch: &mut [u8], cx: &mut ClientCtx<'_>) -> Step {
        let size = cx.settings.size;
        while self.may_send(cx.now) {
            let msg = Message {
                conn: self.id,
                seq: self.next_seq,
            };
            msg.fill(0, &mut scratch[..size]);
            match self.socket.send(&scratch[..size]) {
                Ok(_) => {
                    let stamp = self.pace.due(self.next_seq).unwrap_or(cx.now);
                    self.in_flight.push_back(Flight {
                        seq: self.next_seq,
                        stamp,
                        sent_at: cx.now,
                    });
                    self.next_seq += 1;
                    if cx.window.contains(stamp) {
                        cx.tally.sent += 1;
                    }
                }
                // Send buffer full: the writable edge resumes us.
                Err(e) if is_would_block(&e) => return Step::Wait,
                Err(e) if is_interrupted(&e) => continue,
                // An ICMP error from an earlier datagram; this one was not
                // sent. Count once, wait for the next turn.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
                    self.on_refused(cx);
                    return Step::Wait;
                }
                Err(e) => return Step::Close(End::Io(e.kind())),
            }
        }
        self.drained_step()
    }

    /// Replies arrived: receive until the socket is empty, match each to
    /// its request, then send what the freed slots allow.
    pub fn on_readable(&mut self, scratch: &mut [u8], cx: &mut ClientCtx<'_>) -> Step {
        loop {
            match net::recv_counting_drops(self.socket.as_raw_fd(), scratch) {
                Ok((n, drops)) => {
                    // The kernel's count only grows; keep the latest.
                    if let Some(drops) = drops {
                        self.rcvbuf_drops = self.rcvbuf_drops.max(drops);
                    }
                    self.on_reply(&scratch[..n], cx);
                }
                // Queue drained: the next datagram raises a new edge.
                Err(e) if is_would_block(&e) => break,
                Err(e) if is_interrupted(&e) => continue,
                // ICMP port unreachable for an earlier datagram.
                Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => self.on_refused(cx),
                Err(e) => return Step::Close(End::Io(e.kind())),
            }
        }
        self.send(scratch, cx)
    }

    /// Requests older than the reply timeout are lost; their slots free up.
    pub fn on_tick(&mut self, scratch: &mut [u8], cx: &mut ClientCtx<'_>) -> Step {
        let timeout = cx.settings.udp_reply_timeout;
        while let Some(f) = self.in_flight.front() {
            if cx.now.saturating_duration_since(f.sent_at) < timeout {
                break;
            }
            if let Some(f) = self.in_flight.pop_front() {
                // Timeouts go oldest first, so `given_up` stays sorted.
                if self.given_up.len() == GIVEN_UP_MEMORY {
                    self.given_up.pop_front();
                }
                self.given_up.push_back(f.seq);
                // Like `sent`, only the measured window counts.
                if cx.window.contains(f.stamp) {
                    cx.tally.errors.lost += 1;
                }
            }
        }
        self.send(scratch, cx)
    }

    fn may_send(&self, now: Instant) -> bool {
        if self.state != ClientState::Running {
            return false;
        }
        match self.pace {
            Pace::Closed { pipeline } => self.in_flight.len() < pipeline,
            Pace::Open { .. } | Pace::Staged(_) => {
                self.next_seq < self.pace.due_count(now)
                    && self.in_flight.len() < OPEN_LOOP_MAX_IN_FLIGHT
            }
        }
    }

    fn on_reply(&mut self, reply: &[u8], cx: &mut ClientCtx<'_>) {
        let expect = cx.settings.expect;
        let size = cx.settings.size;
        let Some(seq) = decode_seq(expect, reply) else {
            if self.is_uppercased_reply(reply, cx) {
                return;
            }
            cx.tally.errors.mismatch += 1;
            cx.tally
                .note(|| format!("udp socket {}: reply without a sequence number", self.id));
            return;
        };
        let Some(i) = self.in_flight.iter().position(|f| f.seq == seq) else {
            self.on_unexpected_reply(seq, cx);
            return;
        };
        let flight = self.in_flight.remove(i).unwrap_or(Flight {
            seq,
            stamp: cx.now,
            sent_at: cx.now,
        });
        match self.highest_answered {
            Some(h) if seq < h => cx.tally.reordered += 1,
            _ => self.highest_answered = Some(seq),
        }
        let msg = Message { conn: self.id, seq };
        if reply.len() != size || msg.check(expect, 0, reply).is_some() {
            // Per message of the window, like `messages` and `sent`.
            let is_measured = cx.window.contains(flight.stamp);
            if is_measured {
                cx.tally.errors.mismatch += 1;
            }
            cx.tally.note_if(is_measured, || {
                format!(
                    "udp socket {}: reply to message {seq} is wrong ({} B, {size} B sent)",
                    self.id,
                    reply.len()
                )
            });
        } else {
            cx.tally.complete(flight.stamp, cx.now, &cx.window, size);
        }
    }

    /// Expecting echo, a reply that is exactly the uppercase of a request
    /// in flight: a mismatch, and a hint that the server uppercases.
    fn is_uppercased_reply(&mut self, reply: &[u8], cx: &mut ClientCtx<'_>) -> bool {
        if cx.settings.expect != Mode::Echo || reply.len() != cx.settings.size {
            return false;
        }
        let Some(seq) = decode_seq(Mode::Upper, reply) else {
            return false;
        };
        let Some(i) = self.in_flight.iter().position(|f| f.seq == seq) else {
            return false;
        };
        let msg = Message { conn: self.id, seq };
        if msg.check(Mode::Upper, 0, reply).is_some() {
            return false;
        }
        let Some(flight) = self.in_flight.remove(i) else {
            return false;
        };
        let is_measured = cx.window.contains(flight.stamp);
        if is_measured {
            cx.tally.errors.mismatch += 1;
            cx.tally.mismatch_upper += 1;
        }
        let id = self.id;
        cx.tally.note_if(is_measured, || {
            format!("udp socket {id}: reply to message {seq} is uppercased")
        });
        true
    }

    /// A reply to no request in flight: never sent (a mismatch), late
    /// (its request was counted lost), or a second reply (a duplicate).
    fn on_unexpected_reply(&mut self, seq: u64, cx: &mut ClientCtx<'_>) {
        if seq >= self.next_seq {
            cx.tally.errors.mismatch += 1;
            cx.tally
                .note(|| format!("udp socket {}: reply to message {seq}, never sent", self.id));
        } else if let Ok(at) = self.given_up.binary_search(&seq) {
            // Already lost; one late reply is told, a second is a duplicate.
            self.given_up.remove(at);
            cx.tally.late += 1;
        } else {
            cx.tally.errors.duplicate += 1;
            cx.tally
                .note(|| format!("udp socket {}: a second reply to message {seq}", self.id));
        }
    }

    fn on_refused(&mut self, cx: &mut ClientCtx<'_>) {
        if !self.is_refused {
            self.is_refused = true;
            cx.tally.errors.connect += 1;
            let id = self.id;
            let to = match self.socket.peer_addr() {
                Ok(addr) => format!(" to udp://{addr}"),
                Err(_) => String::new(),
            };
            cx.tally.note(|| {
                format!("udp socket {id}{to}: port unreachable (ICMP), nothing listens there")
            });
        }
    }

    fn drained_step(&self) -> Step {
        if self.state == ClientState::Draining && self.in_flight.is_empty() {
            Step::Close(End::Done)
        } else {
            Step::Wait
        }
    }
}
