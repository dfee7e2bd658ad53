//! The generator's clients behind one interface: [`Client`] is a TCP
//! connection ([`tcp`]), a TLS session over one (the same [`tcp`] client
//! over a TLS stream), or a connected UDP socket ([`udp`]), and the loop
//! talks to each through the same handful of calls. What they share with
//! the loop (settings, pace, window, tally, context, step) is in
//! [`contract`]; what a connection says before its first message (a
//! PROXY header, the TLS handshake) is [`greeting`]'s. A client sends as
//! its pace allows, checks every reply and counts into the loop's tally;
//! the `Poll`, the slab, the schedule and connecting belong to the loop.
//!
//! An enum rather than a trait object: three kinds, known here, so each
//! call is one `match` and no indirection on the per-event path; and the
//! TCP client is generic over its stream, so the plain one carries no TLS.

pub mod contract;
pub mod greeting;
pub mod tcp;
pub mod udp;

use std::fmt;
use std::io;
use std::net::Shutdown;
use std::time::{Duration, Instant};

use contract::{ClientCtx, Pace, Step};
use tcp::TcpClient;
use udp::UdpClient;

use crate::tls_client::TlsStream;

/// One client of a load loop, TCP, TLS or UDP. The kinds offer the same
/// calls with the same meaning, so the loop never asks which one it holds.
#[derive(Debug)]
pub enum Client {
    /// One TCP connection, past its handshake.
    Tcp(TcpClient),
    /// One TLS session over TCP, past both handshakes.
    Tls(TcpClient<TlsStream>),
    /// One connected UDP socket.
    Udp(UdpClient),
}

/// Runs the same call on whichever client `$self` holds.
macro_rules! each {
    ($self:expr, $c:ident => $call:expr) => {
        match $self {
            Client::Tcp($c) => $call,
            Client::Tls($c) => $call,
            Client::Udp($c) => $call,
        }
    };
}

impl Client {
    /// The client's number in the run; half of every payload's key.
    pub fn id(&self) -> u64 {
        each!(self, c => c.id())
    }

    /// Messages sent (at least partly) whose reply is not complete.
    pub fn in_flight(&self) -> u64 {
        each!(self, c => c.in_flight())
    }

    /// `--stages`: the schedule begins at `origin` (the window's start).
    pub fn begin_schedule(&mut self, origin: Instant) {
        each!(self, c => c.begin_schedule(origin))
    }

    /// When the next message not yet due becomes due (open loop only).
    pub fn next_due(&self, now: Instant) -> Option<Instant> {
        each!(self, c => c.next_due(now))
    }

    /// UDP: replies the kernel dropped at this socket, its receive buffer
    /// full; a TCP connection loses nothing that way.
    pub fn rcvbuf_drops(&self) -> u64 {
        match self {
            Client::Tcp(_) | Client::Tls(_) => 0,
            Client::Udp(c) => c.rcvbuf_drops(),
        }
    }

    /// Its name in logs and error stories: `tcp conn 3`, `tls conn 3`,
    /// `udp socket 3`.
    pub fn label(&self) -> Label {
        match self {
            Client::Tcp(c) => Label::tcp(c.id()),
            Client::Tls(c) => Label::tls(c.id()),
            Client::Udp(c) => Label::udp(c.id()),
        }
    }

    /// The TCP socket under a TCP or TLS client, for re-registration;
    /// `None` for UDP.
    pub fn tcp_socket_mut(&mut self) -> Option<&mut mio::net::TcpStream> {
        match self {
            Client::Tcp(c) => Some(c.stream_mut()),
            Client::Tls(c) => Some(c.stream_mut().socket_mut()),
            Client::Udp(_) => None,
        }
    }

    /// `--churn`: a TCP or TLS client carrying `count` messages from
    /// number `first`, then finishing; UDP is left as it is (validation
    /// keeps churn off UDP).
    pub fn carrying(self, first: u64, count: u64) -> Client {
        match self {
            Client::Tcp(c) => Client::Tcp(c.carrying(first, count)),
            Client::Tls(c) => Client::Tls(c.carrying(first, count)),
            Client::Udp(c) => Client::Udp(c),
        }
    }

    /// Where a connection in this one's place goes on: the first message
    /// it did not carry, and its pace; `None` for UDP.
    pub fn carried(&self) -> Option<(u64, Pace)> {
        match self {
            Client::Tcp(c) => Some((c.next_seq(), c.pace())),
            Client::Tls(c) => Some((c.next_seq(), c.pace())),
            Client::Udp(_) => None,
        }
    }

    /// `--churn`, after [`Step::Finished`]: sends our end, TLS
    /// `close_notify` then FIN, and waits for the server's.
    ///
    /// # Errors
    ///
    /// The socket failed; the connection ends with that error.
    pub fn close_write(&mut self) -> io::Result<()> {
        match self {
            Client::Tcp(c) => {
                c.stream_mut().shutdown(Shutdown::Write)?;
                c.set_closing();
            }
            Client::Tls(c) => {
                let tls = c.stream_mut();
                tls.close_notify()?;
                // A FIN now would cut a close_notify the socket did not
                // take yet; then the server's end comes first instead.
                if !tls.wants_write() {
                    tls.socket_mut().shutdown(Shutdown::Write)?;
                }
                c.set_closing();
            }
            Client::Udp(_) => {}
        }
        Ok(())
    }

    /// `--churn-reset`: makes the close that dropping the client does a
    /// reset (`SO_LINGER` 0), so no TIME_WAIT stays behind.
    ///
    /// # Errors
    ///
    /// The socket option cannot be set; dropping still closes, with FIN.
    pub fn reset_on_close(&mut self) -> io::Result<()> {
        match self.tcp_socket_mut() {
            Some(s) => socket2::SockRef::from(&*s).set_linger(Some(Duration::ZERO)),
            None => Ok(()),
        }
    }

    /// The poll reported the peer's FIN or an error on this socket: a TCP
    /// or TLS client then reads to the end instead of trusting a short
    /// read.
    pub fn note_hangup(&mut self) {
        match self {
            Client::Tcp(c) => c.note_hangup(),
            Client::Tls(c) => c.note_hangup(),
            Client::Udp(_) => {}
        }
    }

    /// True when a new TCP or TLS client must read once without an edge:
    /// its greeting saw a hang-up, or its TLS session holds plaintext or
    /// the server's end that came with the handshake.
    pub fn needs_read(&self) -> bool {
        match self {
            Client::Tcp(c) => c.needs_read(),
            Client::Tls(c) => c.needs_read(),
            Client::Udp(_) => false,
        }
    }

    /// The socket reported readiness: read replies, send what the pace
    /// allows, in the order that suits the kind.
    pub fn on_ready(
        &mut self,
        readable: bool,
        writable: bool,
        scratch: &mut [u8],
        cx: &mut ClientCtx<'_>,
    ) -> Step {
        each!(self, c => c.on_ready(readable, writable, scratch, cx))
    }

    /// Sends what the pace allows now (a new client, or messages due).
    pub fn send(&mut self, scratch: &mut [u8], cx: &mut ClientCtx<'_>) -> Step {
        each!(self, c => c.send(scratch, cx))
    }

    /// The loop's periodic sweep: UDP requests whose reply is overdue are
    /// lost. A TCP stream loses nothing on its own; the drain deadline,
    /// the loop's, bounds it.
    pub fn on_tick(&mut self, scratch: &mut [u8], cx: &mut ClientCtx<'_>) -> Step {
        match self {
            Client::Tcp(_) | Client::Tls(_) => Step::Wait,
            Client::Udp(c) => c.on_tick(scratch, cx),
        }
    }

    /// The measured window ended: send nothing new, finish what was begun,
    /// then wait for the replies in flight. `Close(Done)` if none are.
    pub fn stop_sending(&mut self, scratch: &mut [u8], cx: &mut ClientCtx<'_>) -> Step {
        each!(self, c => c.stop_sending(scratch, cx))
    }
}

/// A client's name in logs: its kind and its number. Made when a story is
/// told (a client ends, a connect fails), never on the per-event path.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label {
    kind: &'static str,
    id: u64,
}

impl Label {
    /// `tcp conn <id>`.
    pub fn tcp(id: u64) -> Label {
        Label {
            kind: "tcp conn",
            id,
        }
    }

    /// `tls conn <id>`.
    pub fn tls(id: u64) -> Label {
        Label {
            kind: "tls conn",
            id,
        }
    }

    /// `udp socket <id>`.
    pub fn udp(id: u64) -> Label {
        Label {
            kind: "udp socket",
            id,
        }
    }
}

impl fmt::Display for Label {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.kind, self.id)
    }
}
