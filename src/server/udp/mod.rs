//! UDP: receive until the socket is empty, answer each datagram with at
//! most one reply, drop (and count) a reply the socket cannot take now.
//!
//! UDP promises nothing, so a queue for replies would only add memory and
//! latency. And a reply is never larger than its request unless the
//! operator says so: an open echo port must not be a reflection amplifier.
//!
//! Two receive paths share one decision, [`UdpEndpoint::answer`]: the
//! portable one (`recv_from`/`send_to`, one datagram per syscall) and, on
//! Linux, the batched one (`recvmmsg`/`sendmmsg` through [`batch`], up to
//! 32 datagrams per syscall), chosen with `serve --udp-batch`. Admission
//! (loop guard, rate limit) is [`guard`]'s.

#[cfg(target_os = "linux")]
pub(crate) mod batch;
mod faults;
pub(crate) mod guard;
pub(crate) mod ratelimit;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{debug, info, trace, warn};
use mio::net::UdpSocket;
use mio::{Interest, Registry};

use super::config::{ServerConfig, ServerError};
use super::observe::Stats;
use super::{token, LoopCtx};
use crate::mode::Service;
use crate::net::{self, is_interrupted, is_would_block, BindError, BindOptions};
use guard::UdpGuard;

/// Datagrams handled per socket event before other sources get a turn.
const UDP_BUDGET: usize = 256;

/// The UDP sockets and everything that decides their answers.
pub(crate) struct UdpEndpoint {
    /// Emptied when shutdown begins.
    sockets: Vec<UdpSocket>,
    /// The addresses really bound, kept after the sockets close.
    addrs: Vec<SocketAddr>,
    service: Arc<dyn Service>,
    guard: UdpGuard,
    /// `--udp-allow-amplification`.
    allow_amplification: bool,
    /// The service's `udp_reply_floor`, asked once instead of per datagram.
    reply_floor: usize,
    /// Slots for batched UDP; `None` when off or there is no UDP socket.
    #[cfg(target_os = "linux")]
    batch: Option<Box<batch::UdpBatch>>,
    /// Replies are being dropped for a full send buffer: warned once for
    /// the episode, which ends when no reply was dropped for a second
    /// (under a sustained flood the socket takes one reply in a few, and
    /// each of those must not end the episode and start a new warning).
    is_dropping: bool,
    /// When the last reply was dropped for a full send buffer.
    last_full: Option<Instant>,
    /// `--fault drop|delay|corrupt`, when given.
    faults: Option<faults::UdpFaults>,
}

impl UdpEndpoint {
    /// Binds and registers a socket for each `--udp` address.
    pub fn bind(
        config: &ServerConfig,
        reuse_port: bool,
        registry: &Registry,
    ) -> Result<UdpEndpoint, ServerError> {
        let opts = BindOptions {
            backlog: config.backlog,
            reuse_port,
        };
        let mut sockets = Vec::new();
        let mut addrs = Vec::new();
        for (i, &addr) in config.udp.iter().enumerate() {
            let mut socket = net::udp_socket(addr, opts)?;
            let bound = socket.local_addr().map_err(|source| BindError {
                proto: "udp",
                addr,
                source,
            })?;
            registry
                .register(&mut socket, token::udp(i), Interest::READABLE)
                .map_err(|e| ServerError::Setup("udp registration", e))?;
            sockets.push(socket);
            addrs.push(bound);
        }
        let own_ports = addrs.iter().map(SocketAddr::port).collect();
        let faults = config
            .faults
            .as_ref()
            .and_then(|plan| faults::UdpFaults::new(plan, plan.seed.rotate_left(17)));
        Ok(UdpEndpoint {
            // Faults decide per reply on the portable path: no batches then.
            #[cfg(target_os = "linux")]
            batch: (config.udp_batch && !sockets.is_empty() && faults.is_none())
                .then(|| Box::new(batch::UdpBatch::new())),
            sockets,
            addrs,
            reply_floor: config.service.udp_reply_floor(),
            service: Arc::clone(&config.service),
            guard: UdpGuard::new(config.udp_rate_limit, own_ports),
            allow_amplification: config.udp_allow_amplification,
            is_dropping: false,
            last_full: None,
            faults,
        })
    }

    /// The addresses really bound, in `--udp` order.
    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// Datagrams the kernel has dropped at these sockets, their receive
    /// buffers full, since they were bound; `None` without sockets or
    /// where the kernel does not say. One syscall per socket: asked only
    /// when figures are wanted, never per datagram.
    pub fn rcvbuf_drops(&self) -> Option<u64> {
        use std::os::fd::AsRawFd;
        if self.sockets.is_empty() {
            return None;
        }
        self.sockets
            .iter()
            .map(|s| crate::net::socket_drops(s.as_raw_fd()))
            .sum()
    }

    /// When a held reply falls due (`--fault delay`).
    pub fn next_deadline(&self) -> Option<Instant> {
        self.faults.as_ref().and_then(faults::UdpFaults::next_due)
    }

    /// Sends the held replies that are due.
    pub fn on_timer(&mut self, now: Instant, stats: &mut Stats) {
        let Some(f) = &mut self.faults else {
            return;
        };
        for (i, to, reply) in f.take_due(now) {
            self.send_reply(i, &reply, to, stats);
        }
    }

    /// Closes the sockets (shutdown): datagrams are no longer answered,
    /// and replies a delay still holds are dropped and counted.
    pub fn close(&mut self, registry: &Registry, stats: &mut Stats) {
        if let Some(held) = self.faults.as_mut().map(faults::UdpFaults::drop_held) {
            if held > 0 {
                info!("udp: {held} delayed replies dropped at shutdown");
                stats.udp_replies_dropped += held as u64;
            }
        }
        for mut socket in self.sockets.drain(..) {
            let _ = registry.deregister(&mut socket);
        }
    }

    /// UDP socket `i` is readable: answer what waits, up to a budget.
    pub fn on_ready(&mut self, i: usize, cx: &mut LoopCtx<'_>) {
        if cx.ready.holds_fixed(token::udp(i)) {
            // Already owed a turn on the ready list: a socket that never
            // drains gets one budget per turn, not one per event as well.
            return;
        }
        #[cfg(target_os = "linux")]
        let drained = if self.batch.is_some() {
            self.serve_batches(i, cx.stats)
        } else {
            self.serve_datagrams(i, cx.scratch, cx.stats)
        };
        #[cfg(not(target_os = "linux"))]
        let drained = self.serve_datagrams(i, cx.scratch, cx.stats);
        if !drained {
            cx.ready.push_fixed(token::udp(i));
        }
    }

    /// The portable path; returns true once the socket is drained.
    fn serve_datagrams(&mut self, i: usize, buf: &mut [u8], stats: &mut Stats) -> bool {
        for _ in 0..UDP_BUDGET {
            let Some(socket) = self.sockets.get(i) else {
                return true; // shut down meanwhile
            };
            match socket.recv_from(buf) {
                Ok((len, from)) => {
                    let Some(reply_len) = self.answer(i, buf, len, from, stats) else {
                        continue;
                    };
                    if let Some(f) = &mut self.faults {
                        let reply = &mut buf[..reply_len];
                        match f.on_reply(i, reply, from, Instant::now(), stats) {
                            faults::Fate::Send => {}
                            faults::Fate::Drop | faults::Fate::Held => continue,
                        }
                    }
                    self.send_reply(i, &buf[..reply_len], from, stats);
                }
                // Queue drained: the next datagram raises a new edge.
                Err(e) if is_would_block(&e) => return true,
                Err(e) if is_interrupted(&e) => continue,
                // e.g. an ICMP error queued for this socket: count, carry on;
                // the budget keeps a persistent error from spinning.
                Err(e) => {
                    stats.udp_errors += 1;
                    debug!("udp {i}: recv failed: {e}");
                }
            }
        }
        false
    }

    /// Decides the reply to the datagram in `buf[..len]` from `from`: counts
    /// it, applies the loop guard and rate limit, and asks the service,
    /// which writes the reply into `buf` cut to the largest reply allowed
    /// (the request's length unless amplification is allowed). Returns the
    /// reply's length, or `None` for no reply.
    fn answer(
        &mut self,
        i: usize,
        buf: &mut [u8],
        len: usize,
        from: SocketAddr,
        stats: &mut Stats,
    ) -> Option<usize> {
        trace!("udp {i}: {len} B from {from}");
        stats.udp_datagrams_in += 1;
        if !self.guard.admit(i, from, stats) {
            return None;
        }
        let room = if self.allow_amplification {
            buf.len()
        } else {
            len.max(self.reply_floor).min(buf.len())
        };
        let Some(reply_len) = self.service.on_datagram(&mut buf[..room], len) else {
            if room < buf.len() && self.service.on_datagram(buf, len).is_some() {
                // Silent only for want of room (daytime's line to a short
                // datagram): the amplification rule at work, counted so the
                // operator can see it. Asked again with all the room only
                // on this unanswered path, so answers cost one call.
                stats.udp_refused_size += 1;
                debug!("udp {i}: {len} B from {from}: no reply: it would be longer");
            }
            return None;
        };
        if reply_len > room {
            // A service that claims more than it was given room for.
            stats.udp_replies_dropped += 1;
            debug!("udp {i}: reply of {reply_len} B to {len} B from {from} dropped: too large");
            return None;
        }
        Some(reply_len)
    }

    fn send_reply(&mut self, i: usize, reply: &[u8], to: SocketAddr, stats: &mut Stats) {
        let Some(socket) = self.sockets.get(i) else {
            return;
        };
        loop {
            match socket.send_to(reply, to) {
                Ok(_) => {
                    stats.udp_datagrams_out += 1;
                    self.note_room(i);
                }
                Err(e) if is_interrupted(&e) => continue,
                // Socket buffer full: drop the reply rather than queue it.
                Err(e) if is_would_block(&e) => self.note_full(i, 1, stats),
                Err(e) => {
                    stats.udp_errors += 1;
                    debug!("udp {i}: send to {to} failed: {e}");
                }
            }
            return;
        }
    }

    /// Counts `n` replies dropped because socket `i` was full; warns when
    /// an episode of it starts.
    fn note_full(&mut self, i: usize, n: u64, stats: &mut Stats) {
        if !std::mem::replace(&mut self.is_dropping, true) {
            warn!("udp {i}: send buffer full, dropping replies (counted in stats)");
        }
        self.last_full = Some(Instant::now());
        stats.udp_replies_dropped += n;
    }

    /// Socket `i` took a reply: an episode of drops, if any, is over once
    /// none was dropped for a second.
    fn note_room(&mut self, i: usize) {
        if self.is_dropping
            && self
                .last_full
                .map_or(true, |at| at.elapsed() >= Duration::from_secs(1))
        {
            self.is_dropping = false;
            info!("udp {i}: replies flowing again, none dropped for a second");
        }
    }

    /// The Linux path: `recvmmsg` a batch, answer each datagram in its own
    /// slot, `sendmmsg` the replies; returns true once the socket is drained.
    #[cfg(target_os = "linux")]
    fn serve_batches(&mut self, i: usize, stats: &mut Stats) -> bool {
        use batch::BATCH;
        use std::os::fd::AsRawFd;

        // Moved out so `answer` may borrow the rest of self; a Box moves
        // as a pointer.
        let Some(mut batch) = self.batch.take() else {
            return true;
        };
        let mut replies = [(0usize, 0usize); BATCH];
        let mut served = 0;
        let drained = loop {
            if served >= UDP_BUDGET {
                break false;
            }
            let Some(fd) = self.sockets.get(i).map(|s| s.as_raw_fd()) else {
                break true; // shut down meanwhile
            };
            let n = match batch.recv(fd) {
                Ok(n) => n,
                // Queue drained: the next datagram raises a new edge.
                Err(e) if is_would_block(&e) => break true,
                Err(e) if is_interrupted(&e) => continue,
                Err(e) => {
                    stats.udp_errors += 1;
                    served += 1;
                    debug!("udp {i}: recvmmsg failed: {e}");
                    continue;
                }
            };
            trace!("udp {i}: recvmmsg took {n} datagrams");
            served += n;
            let mut count = 0;
            for slot in 0..n {
                let Some(from) = batch.source(slot) else {
                    continue; // an address family we do not answer
                };
                let (buf, len) = batch.slot(slot);
                if let Some(reply_len) = self.answer(i, buf, len, from, stats) {
                    replies[count] = (slot, reply_len);
                    count += 1;
                }
            }
            let sent = batch.send(fd, &replies[..count]);
            stats.udp_datagrams_out += sent.sent;
            stats.udp_errors += sent.errors;
            if sent.dropped > 0 {
                self.note_full(i, sent.dropped, stats);
            } else if sent.sent > 0 {
                self.note_room(i);
            }
            // Fewer than a full batch: the queue was empty when we looked.
            if n < BATCH {
                break true;
            }
        };
        self.batch = Some(batch);
        drained
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::SCRATCH_SIZE;
    use crate::server::ReadyList;
    use std::time::Instant;

    /// An endpoint with one UDP socket on loopback whose receive queue holds
    /// `n` one-byte datagrams from one client: more than one budget.
    fn endpoint_with_queued_datagrams(n: usize) -> (mio::Poll, UdpEndpoint) {
        let poll = mio::Poll::new().expect("poll");
        let config = ServerConfig {
            udp: vec!["127.0.0.1:0".parse().unwrap()],
            ..ServerConfig::default()
        };
        let endpoint = UdpEndpoint::bind(&config, false, poll.registry()).expect("bind");
        // Room for every datagram (each costs far more than its byte).
        socket2::SockRef::from(&endpoint.sockets[0])
            .set_recv_buffer_size(2 << 20)
            .expect("SO_RCVBUF");
        let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind client");
        for _ in 0..n {
            // Loopback delivers within the send call: it is queued on return.
            client.send_to(b"x", endpoint.addrs[0]).expect("send");
        }
        (poll, endpoint)
    }

    #[test]
    fn a_socket_that_never_drains_sits_on_the_ready_list_once_and_gets_one_budget_per_turn() {
        let (poll, mut udp) = endpoint_with_queued_datagrams(3 * UDP_BUDGET);
        let mut scratch = vec![0u8; SCRATCH_SIZE];
        let mut stats = Stats::default();
        let mut ready = ReadyList::default();
        let mut turn = Vec::new();
        let mut event = |udp: &mut UdpEndpoint, ready: &mut ReadyList, stats: &mut Stats| {
            let mut cx = LoopCtx {
                registry: poll.registry(),
                scratch: &mut scratch,
                stats,
                ready,
                now: Instant::now(),
                tick: 0,
            };
            udp.on_ready(0, &mut cx);
        };
        event(&mut udp, &mut ready, &mut stats);
        assert_eq!(stats.udp_datagrams_in, UDP_BUDGET as u64);
        assert!(ready.holds_fixed(token::udp(0)));
        // Another edge before its turn: no second budget, no second entry.
        event(&mut udp, &mut ready, &mut stats);
        assert_eq!(stats.udp_datagrams_in, UDP_BUDGET as u64);
        ready.take_turn(&mut turn);
        assert_eq!(turn, [token::udp(0)]);
        // Its turn: one more budget, and back on the list once.
        event(&mut udp, &mut ready, &mut stats);
        assert_eq!(stats.udp_datagrams_in, 2 * UDP_BUDGET as u64);
        turn.clear();
        ready.take_turn(&mut turn);
        assert_eq!(turn, [token::udp(0)]);
        event(&mut udp, &mut ready, &mut stats);
        assert_eq!(stats.udp_datagrams_in, 3 * UDP_BUDGET as u64);
        turn.clear();
        ready.take_turn(&mut turn);
        event(&mut udp, &mut ready, &mut stats);
        assert!(
            !ready.holds_fixed(token::udp(0)),
            "drained, yet still queued"
        );
    }
}
