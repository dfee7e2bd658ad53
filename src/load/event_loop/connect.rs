//! Connecting: starting TCP handshakes (at most `MAX_HANDSHAKES` at once,
//! at `--connect-rate`) and UDP sockets, telling an established handshake
//! from a failed one, and retrying failures with a doubling backoff before
//! they count as connect errors.
//!
//! Each connection has one deadline for all its attempts: its place in the
//! schedule (the start, or its turn at `--connect-rate`) plus
//! `--connect-timeout`. A connection not up by then, whether its handshake
//! hangs, its retries ran out or it never got a handshake slot, is a
//! connect error; so the ramp ends by the last deadline, whatever the
//! server does.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use log::{debug, trace, warn};
use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Token};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{Loop, Retry, Slot, Step};
use crate::load::client::contract::{count_end, ClientCtx, End};
use crate::load::client::greeting::{Greeting, GreetingError};
use crate::load::client::tcp::TcpClient;
use crate::load::client::udp::UdpClient;
use crate::load::client::{Client, Label};
use crate::load::{Proto, MAX_HANDSHAKES};
use crate::net;
use crate::tls_client::HandshakeError;

/// Attempts per connection before it counts as a connect error.
const CONNECT_ATTEMPTS: u32 = 3;

/// What a connect that found no free local port means, and what to do.
const OUT_OF_PORTS: &str = "out of local ports: add --source addresses (127.0.0.2, \
127.0.0.3, ... on loopback) or --churn-reset, or widen net.ipv4.ip_local_port_range; each \
connection the client closes first keeps its port in TIME_WAIT for 60 s";

/// First retry delay; doubles per attempt.
const RETRY_BACKOFF: Duration = Duration::from_millis(50);

impl Loop {
    /// The local address connection `id` binds to: the `--source`
    /// addresses in turn by connection number; `None` without them.
    fn source_for(&self, id: u64) -> Option<IpAddr> {
        let n = self.sources.len() as u64;
        (n > 0).then(|| self.sources[(id % n) as usize])
    }

    pub(super) fn start_connects(&mut self, now: Instant) {
        let mut i = 0;
        while i < self.retries.len() {
            if self.retries[i].at <= now && self.handshakes < MAX_HANDSHAKES {
                let r = self.retries.swap_remove(i);
                self.start_one(r.id, r.attempt, r.deadline, now);
            } else {
                i += 1;
            }
        }
        while self.next < self.ids.len()
            && self.handshakes < MAX_HANDSHAKES
            && now >= self.next_connect_at
        {
            let id = self.ids[self.next];
            // Its turn in the schedule, not when a handshake slot freed up:
            // waiting for a slot eats into the connection's own time.
            let turn = self.connect_every.map_or(Duration::ZERO, |every| {
                every.saturating_mul(self.next as u32)
            });
            // A year out if the sum will not fit: validation keeps every
            // real setting far from that.
            let deadline = self
                .started
                .checked_add(turn.saturating_add(self.connect_timeout))
                .unwrap_or(now + crate::load::MAX_WINDOW);
            self.next += 1;
            if let Some(every) = self.connect_every {
                // Keep to the schedule, but never save up a burst.
                self.next_connect_at = (self.next_connect_at + every).max(now);
            }
            if now >= deadline {
                let e = io::Error::new(
                    io::ErrorKind::TimedOut,
                    "no handshake slot free within the connect timeout (--connect-timeout)",
                );
                self.connect_gave_up(id, &e);
                continue;
            }
            self.start_one(id, 0, deadline, now);
        }
        // Replacements under --churn only after every first connection
        // due has its slot: churning connections refill the queue faster
        // than slots free up, and would otherwise starve the ramp until
        // its connect timeout.
        while self.handshakes < MAX_HANDSHAKES {
            let Some(id) = self.churn_queue.pop_front() else {
                break;
            };
            // Its own deadline from now: the connection it replaces was up.
            let deadline = now + self.connect_timeout;
            self.start_one(id, 0, deadline, now);
        }
    }

    pub(super) fn start_one(&mut self, id: u64, attempt: u32, deadline: Instant, now: Instant) {
        let result = match self.target.proto {
            Proto::Tcp | Proto::Tls => self.start_tcp(id, attempt, deadline),
            Proto::Udp => self.start_udp(id, now),
        };
        if let Err(e) = result {
            self.connect_failed(id, attempt, deadline, &e, now);
        }
    }

    pub(super) fn start_tcp(&mut self, id: u64, attempt: u32, deadline: Instant) -> io::Result<()> {
        let began = Instant::now();
        let mut stream = match self.source_for(id) {
            Some(source) => connect_from(source, self.target.addr)?,
            None => TcpStream::connect(self.target.addr)?,
        };
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
            deadline,
            attempt,
            began,
        });
        self.handshakes += 1;
        Ok(())
    }

    pub(super) fn start_udp(&mut self, id: u64, now: Instant) -> io::Result<()> {
        let local = match self.source_for(id) {
            Some(source) => SocketAddr::new(source, 0),
            None => net::unspecified_for(self.target.addr),
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
        entry.insert(Slot::Up(Client::Udp(UdpClient::new(socket, id, pace))));
        if self.first_time_up(id) {
            self.connected += 1;
        }
        self.up += 1;
        self.kick(key, now);
        Ok(())
    }

    /// A handshake's socket reported: established, failed, or not yet.
    pub(super) fn on_connect_ready(&mut self, key: usize, now: Instant) {
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
                if let Some(Slot::Connecting {
                    id,
                    attempt,
                    deadline,
                    ..
                }) = self.slots.try_remove(key)
                {
                    self.handshakes -= 1;
                    self.connect_failed(id, attempt, deadline, &e, now);
                }
            }
        }
    }

    /// TCP is up: a plain connection becomes a client at once; one with a
    /// PROXY header to send or a TLS handshake to make greets first.
    pub(super) fn on_established(&mut self, key: usize, now: Instant) {
        let Some(Slot::Connecting {
            stream,
            id,
            deadline,
            began,
            ..
        }) = self.slots.try_remove(key)
        else {
            return;
        };
        // Small request/response messages: never wait for Nagle.
        if let Err(e) = stream.set_nodelay(true) {
            debug!("tcp conn {id}: TCP_NODELAY: {e}");
        }
        if self.tls.is_none() && self.proxy.is_none() {
            self.handshakes -= 1;
            let (first_seq, pace) = self.lineage(id, now);
            let client = Client::Tcp(TcpClient::new(stream, id, pace));
            self.go_up(key, client, first_seq, began, now);
            return;
        }
        match Greeting::new(stream, self.proxy, self.tls.as_ref(), now) {
            Ok(greeting) => {
                let slot = Slot::Greeting {
                    greeting,
                    id,
                    deadline,
                    began,
                };
                match self.put_back(key, slot) {
                    Some(key) => self.on_greeting_ready(key, now),
                    // Gone, and counted as an IO error.
                    None => self.handshakes -= 1,
                }
            }
            Err(e) => {
                self.handshakes -= 1;
                self.greeting_failed(id, &e, false);
            }
        }
    }

    /// A greeting's socket reported: header out and handshake done, failed,
    /// or not yet. The same path serves every new connection of a run.
    pub(super) fn on_greeting_ready(&mut self, key: usize, now: Instant) {
        let Some(Slot::Greeting { greeting, .. }) = self.slots.get_mut(key) else {
            return;
        };
        let outcome = greeting.advance();
        if let Ok(false) = outcome {
            return;
        }
        let Some(Slot::Greeting {
            greeting,
            id,
            began,
            ..
        }) = self.slots.try_remove(key)
        else {
            return;
        };
        self.handshakes -= 1;
        match outcome {
            Ok(_) => {
                // The clock now, not the batch's: the handshake may have
                // finished within this very call, after its first flight
                // went out.
                let done = Instant::now();
                if let (Some(tls), Some((version, resumed, took))) =
                    (&mut self.tally.tls, greeting.handshake_facts(done))
                {
                    trace!("tls conn {id}: handshake done ({version}, {took:?})");
                    tls.record(version, resumed, took);
                }
                let (first_seq, pace) = self.lineage(id, now);
                let client = greeting.into_client(id, pace);
                self.go_up(key, client, first_seq, began, done);
            }
            Err(e) => self.greeting_failed(id, &e, greeting.is_proxied()),
        }
    }

    /// Puts `slot` back under `key`, which the slab hands out again right
    /// after its removal; should it ever not, the socket's registration
    /// follows the new key. The key it went under, or `None` (counted as
    /// an IO error) when the socket cannot be registered again.
    fn put_back(&mut self, key: usize, mut slot: Slot) -> Option<usize> {
        let entry = self.slots.vacant_entry();
        let new_key = entry.key();
        let socket = match &mut slot {
            Slot::Connecting { stream, .. } => Some(stream),
            Slot::Greeting { greeting, .. } => Some(greeting.socket_mut()),
            Slot::Up(client) => client.tcp_socket_mut(),
        };
        if let (true, Some(socket)) = (new_key != key, socket) {
            if let Err(e) = self.poll.registry().reregister(
                socket,
                Token(new_key),
                Interest::READABLE | Interest::WRITABLE,
            ) {
                let id = slot.id();
                count_end(&mut self.tally, End::Io(e.kind()), 0, &Label::tcp(id));
                return None;
            }
        }
        entry.insert(slot);
        Some(new_key)
    }

    /// A TCP or TLS client is ready, its `connect` having gone out at
    /// `began`: counted as a connect, into the slab under `key` (or where
    /// its socket is registered again), counted up, and sending; under
    /// `--churn` it carries its share of messages from `first_seq`, where
    /// the one it replaces stopped. In the drain it only closes again.
    fn go_up(&mut self, key: usize, client: Client, first_seq: u64, began: Instant, now: Instant) {
        let (id, who) = (client.id(), client.label());
        let is_measured = self.window.contains(now);
        self.tally.connects.record(began, now, is_measured);
        let client = match self.churn {
            Some(n) => client.carrying(first_seq, n),
            None => client,
        };
        let Some(key) = self.put_back(key, Slot::Up(client)) else {
            return;
        };
        if self.first_time_up(id) {
            self.connected += 1;
        }
        self.up += 1;
        trace!("{who}: established");
        if !self.phase.is_sending() {
            // The drain began during its handshake: close it cleanly.
            self.apply(key, Step::Finished);
            return;
        }
        self.kick(key, now);
        self.read_unannounced(key, now);
    }

    /// A client just up may have replies, or the server's end, that no
    /// edge will announce: a hang-up its greeting saw, or what its TLS
    /// session took in with the handshake's last flight (a close_notify
    /// right after it, say). Reads them now.
    fn read_unannounced(&mut self, key: usize, now: Instant) {
        let Some(Slot::Up(client)) = self.slots.get_mut(key) else {
            return;
        };
        if !client.needs_read() {
            return;
        }
        let mut cx = ClientCtx {
            settings: &self.settings,
            now,
            window: self.window,
            tally: &mut self.tally,
        };
        let step = client.on_ready(true, false, &mut self.scratch, &mut cx);
        self.apply(key, step);
    }

    /// A greeting failed: a TLS handshake is a `tls` error, never retried
    /// (the same certificate fails the same way); a PROXY header that
    /// could not be written is a `connect` error.
    fn greeting_failed(&mut self, id: u64, e: &GreetingError, is_proxied: bool) {
        match e {
            GreetingError::Tls(h) => {
                let mut why = match &self.tls {
                    Some(tls) => tls.describe(h),
                    None => h.to_string(),
                };
                if is_proxied && matches!(h, HandshakeError::Closed | HandshakeError::Tls(_)) {
                    why.push_str(" (a PROXY header went first: does the server take it?)");
                }
                self.tls_failed(id, &why);
            }
            GreetingError::Proxy(e) => {
                let e = io::Error::new(e.kind(), format!("sending the PROXY header: {e}"));
                self.connect_gave_up(id, &e);
            }
        }
    }

    /// Connection `id`'s TLS handshake failed: one `tls` error.
    fn tls_failed(&mut self, id: u64, why: &str) {
        self.settle(id);
        debug!("tls conn {id}: {why}");
        self.tally.errors.tls += 1;
        self.tally.note(|| format!("tls conn {id}: {why}"));
    }

    /// A greeting still going at the connection's deadline.
    pub(super) fn greeting_timed_out(&mut self, id: u64) {
        match self.tls {
            Some(_) => self.tls_failed(
                id,
                "TLS handshake not done within the connect timeout (--connect-timeout)",
            ),
            None => {
                let e = io::Error::new(
                    io::ErrorKind::TimedOut,
                    "PROXY header not sent within the connect timeout (--connect-timeout)",
                );
                self.connect_gave_up(id, &e);
            }
        }
    }

    pub(super) fn connect_failed(
        &mut self,
        id: u64,
        attempt: u32,
        deadline: Instant,
        e: &io::Error,
        now: Instant,
    ) {
        let at = now + RETRY_BACKOFF * 2u32.pow(attempt);
        if attempt + 1 < CONNECT_ATTEMPTS && at < deadline {
            debug!(
                "conn {id}: connect attempt {} failed: {e}; retrying",
                attempt + 1
            );
            self.retries.push(Retry {
                at,
                id,
                attempt: attempt + 1,
                deadline,
            });
            return;
        }
        self.connect_gave_up(id, e);
    }

    /// Connection `id` did not come up: one connect error.
    pub(super) fn connect_gave_up(&mut self, id: u64, e: &io::Error) {
        self.settle(id);
        debug!("conn {id}: connect failed: {e}");
        self.tally.errors.connect += 1;
        let target = self.target;
        if net::is_out_of_ports(e) {
            if !std::mem::replace(&mut self.is_out_of_ports_told, true) {
                warn!("load: {OUT_OF_PORTS}");
            }
            self.tally
                .note(|| format!("connect to {target}: {OUT_OF_PORTS} ({e})"));
            return;
        }
        self.tally.note(|| format!("connect to {target}: {e}"));
    }
}

/// A non-blocking TCP connect from `source` (any port) to `target`, like
/// `TcpStream::connect` but bound first. On Linux the port is picked at
/// connect time (`IP_BIND_ADDRESS_NO_PORT`), so each source address has
/// the whole ephemeral range towards each server address.
fn connect_from(source: IpAddr, target: SocketAddr) -> io::Result<TcpStream> {
    // Non-blocking from the start on Linux (SOCK_NONBLOCK): two fcntl
    // calls fewer per connection, which --churn makes by the thousand.
    #[cfg(target_os = "linux")]
    let kind = Type::STREAM.nonblocking();
    #[cfg(not(target_os = "linux"))]
    let kind = Type::STREAM;
    let socket = Socket::new(Domain::for_address(target), kind, Some(Protocol::TCP))?;
    #[cfg(not(target_os = "linux"))]
    socket.set_nonblocking(true)?;
    #[cfg(target_os = "linux")]
    bind_address_no_port(&socket);
    socket.bind(&SockAddr::from(SocketAddr::new(source, 0)))?;
    match socket.connect(&SockAddr::from(target)) {
        Ok(()) => {}
        // EINPROGRESS: the handshake goes on; the socket reports when done.
        Err(e) if e.raw_os_error() == Some(libc::EINPROGRESS) => {}
        Err(e) => return Err(e),
    }
    Ok(TcpStream::from_std(socket.into()))
}

/// Defers the choice of the local port to `connect`. Only an
/// optimisation: without it (old kernels) `bind` picks the port, and a
/// source address has one ephemeral range for all servers.
#[cfg(target_os = "linux")]
fn bind_address_no_port(socket: &Socket) {
    use std::os::fd::AsRawFd;
    let on: libc::c_int = 1;
    // SAFETY: a valid descriptor, and a pointer to an int of the size given.
    let rc = unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::IPPROTO_IP,
            libc::IP_BIND_ADDRESS_NO_PORT,
            std::ptr::addr_of!(on).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc != 0 {
        debug!(
            "IP_BIND_ADDRESS_NO_PORT: {}; bind picks the port",
            io::Error::last_os_error()
        );
    }
}
