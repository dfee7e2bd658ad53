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

use log::{debug, trace};
use mio::net::{TcpStream, UdpSocket};
use mio::{Interest, Token};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};

use super::{Loop, Retry, Slot};
use crate::load::client::contract::{count_end, End};
use crate::load::client::tcp::TcpClient;
use crate::load::client::udp::UdpClient;
use crate::load::client::{Client, Label};
use crate::load::{Proto, MAX_HANDSHAKES};
use crate::net;

/// Attempts per connection before it counts as a connect error.
const CONNECT_ATTEMPTS: u32 = 3;

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
    }

    pub(super) fn start_one(&mut self, id: u64, attempt: u32, deadline: Instant, now: Instant) {
        let result = match self.target.proto {
            Proto::Tcp => self.start_tcp(id, attempt, deadline),
            Proto::Udp => self.start_udp(id, now),
        };
        if let Err(e) = result {
            self.connect_failed(id, attempt, deadline, &e, now);
        }
    }

    pub(super) fn start_tcp(&mut self, id: u64, attempt: u32, deadline: Instant) -> io::Result<()> {
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

    pub(super) fn on_established(&mut self, key: usize, now: Instant) {
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
                count_end(&mut self.tally, End::Io(e.kind()), 0, &Label::tcp(id));
                return;
            }
        }
        entry.insert(Slot::Up(Client::Tcp(client)));
        if self.first_time_up(id) {
            self.connected += 1;
        }
        self.up += 1;
        trace!("tcp conn {id}: established");
        self.kick(new_key, now);
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
        debug!("conn {id}: connect failed: {e}");
        self.tally.errors.connect += 1;
        let target = self.target;
        self.tally.note(|| format!("connect to {target}: {e}"));
    }
}

/// A non-blocking TCP connect from `source` (any port) to `target`, like
/// `TcpStream::connect` but bound first. On Linux the port is picked at
/// connect time (`IP_BIND_ADDRESS_NO_PORT`), so each source address has
/// the whole ephemeral range towards each server address.
fn connect_from(source: IpAddr, target: SocketAddr) -> io::Result<TcpStream> {
    let socket = Socket::new(
        Domain::for_address(target),
        Type::STREAM,
        Some(Protocol::TCP),
    )?;
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
