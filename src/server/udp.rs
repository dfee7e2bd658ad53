//! UDP: receive until the socket is empty, answer each datagram with at
//! most one reply, drop (and count) a reply the socket cannot take now.
//!
//! UDP promises nothing, so a queue for replies would only add memory and
//! latency. And a reply is never larger than its request unless the
//! operator says so: an open echo port must not be a reflection amplifier.
//!
//! Two receive paths share one decision, [`Server::answer`]: the portable
//! one (`recv_from`/`send_to`, one datagram per syscall) and, on Linux, the
//! batched one (`recvmmsg`/`sendmmsg` through `udp_batch`, up to 32
//! datagrams per syscall), chosen with `serve --udp-batch`.

use std::net::SocketAddr;

use log::{debug, trace, warn};

use super::{token, Server};
use crate::net::{is_interrupted, is_would_block};

/// Datagrams handled per socket event before other sources get a turn.
const UDP_BUDGET: usize = 256;

impl Server {
    /// UDP socket `i` is readable: answer what waits, up to a budget.
    pub(super) fn on_udp_ready(&mut self, i: usize) {
        if self.udp_deferred.get(i) == Some(&true) {
            // Already owed a turn on the ready list: a socket that never
            // drains gets one budget per turn, not one per event as well.
            return;
        }
        #[cfg(target_os = "linux")]
        if self.udp_batch.is_some() {
            return self.on_udp_ready_batched(i);
        }
        // Moved out for the loop so `answer` may borrow the rest of self;
        // moving a Box is a pointer copy.
        let mut scratch = std::mem::take(&mut self.scratch);
        let drained = self.serve_datagrams(i, &mut scratch);
        self.scratch = scratch;
        if !drained {
            self.defer_fixed(token::udp(i));
        }
    }

    /// The portable path; returns true once the socket is drained.
    fn serve_datagrams(&mut self, i: usize, buf: &mut [u8]) -> bool {
        for _ in 0..UDP_BUDGET {
            let Some(socket) = self.udp.get(i) else {
                return true; // shut down meanwhile
            };
            match socket.recv_from(buf) {
                Ok((len, from)) => {
                    if let Some(reply_len) = self.answer(i, buf, len, from) {
                        self.send_reply(i, &buf[..reply_len], from);
                    }
                }
                // Queue drained: the next datagram raises a new edge.
                Err(e) if is_would_block(&e) => return true,
                Err(e) if is_interrupted(&e) => continue,
                // e.g. an ICMP error queued for this socket: count, carry on;
                // the budget keeps a persistent error from spinning.
                Err(e) => {
                    self.stats.udp_errors += 1;
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
    fn answer(&mut self, i: usize, buf: &mut [u8], len: usize, from: SocketAddr) -> Option<usize> {
        trace!("udp {i}: {len} B from {from}");
        self.stats.udp_datagrams_in += 1;
        if !self.admit_datagram(i, from) {
            return None;
        }
        let room = if self.udp_allow_amplification {
            buf.len()
        } else {
            len.max(self.udp_reply_floor).min(buf.len())
        };
        let Some(reply_len) = self.service.on_datagram(&mut buf[..room], len) else {
            if room < buf.len() && self.service.on_datagram(buf, len).is_some() {
                // Silent only for want of room (daytime's line to a short
                // datagram): the amplification rule at work, counted so the
                // operator can see it. Asked again with all the room only
                // on this unanswered path, so answers cost one call.
                self.stats.udp_refused_size += 1;
                debug!("udp {i}: {len} B from {from}: no reply: it would be longer");
            }
            return None;
        };
        if reply_len > room {
            // A service that claims more than it was given room for.
            self.stats.udp_replies_dropped += 1;
            debug!("udp {i}: reply of {reply_len} B to {len} B from {from} dropped: too large");
            return None;
        }
        Some(reply_len)
    }

    fn send_reply(&mut self, i: usize, reply: &[u8], to: SocketAddr) {
        let socket = &self.udp[i];
        loop {
            match socket.send_to(reply, to) {
                Ok(_) => self.stats.udp_datagrams_out += 1,
                Err(e) if is_interrupted(&e) => continue,
                // Socket buffer full: drop the reply rather than queue it.
                Err(e) if is_would_block(&e) => self.count_full_drops(i, 1),
                Err(e) => {
                    self.stats.udp_errors += 1;
                    debug!("udp {i}: send to {to} failed: {e}");
                }
            }
            return;
        }
    }

    fn count_full_drops(&mut self, i: usize, n: u64) {
        if self.stats.udp_replies_dropped == 0 {
            warn!("udp {i}: send buffer full, dropping replies (counted in stats)");
        }
        self.stats.udp_replies_dropped += n;
    }

    /// The Linux path: `recvmmsg` a batch, answer each datagram in its own
    /// slot, `sendmmsg` the replies.
    #[cfg(target_os = "linux")]
    fn on_udp_ready_batched(&mut self, i: usize) {
        use super::udp_batch::BATCH;
        use std::os::fd::AsRawFd;

        let Some(mut batch) = self.udp_batch.take() else {
            return;
        };
        let mut replies = [(0usize, 0usize); BATCH];
        let mut served = 0;
        let drained = loop {
            if served >= UDP_BUDGET {
                break false;
            }
            let Some(fd) = self.udp.get(i).map(|s| s.as_raw_fd()) else {
                break true; // shut down meanwhile
            };
            let n = match batch.recv(fd) {
                Ok(n) => n,
                // Queue drained: the next datagram raises a new edge.
                Err(e) if is_would_block(&e) => break true,
                Err(e) if is_interrupted(&e) => continue,
                Err(e) => {
                    self.stats.udp_errors += 1;
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
                if let Some(reply_len) = self.answer(i, buf, len, from) {
                    replies[count] = (slot, reply_len);
                    count += 1;
                }
            }
            let sent = batch.send(fd, &replies[..count]);
            self.stats.udp_datagrams_out += sent.sent;
            self.stats.udp_errors += sent.errors;
            if sent.dropped > 0 {
                self.count_full_drops(i, sent.dropped);
            }
            // Fewer than a full batch: the queue was empty when we looked.
            if n < BATCH {
                break true;
            }
        };
        self.udp_batch = Some(batch);
        if !drained {
            self.defer_fixed(token::udp(i));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::ServerConfig;

    /// A server with one UDP socket on loopback whose receive queue holds
    /// `n` one-byte datagrams from one client: more than one budget.
    fn server_with_queued_datagrams(n: usize) -> Server {
        let server = Server::bind(ServerConfig {
            udp: vec!["127.0.0.1:0".parse().unwrap()],
            ..ServerConfig::default()
        })
        .expect("bind");
        // Room for every datagram (each costs far more than its byte).
        socket2::SockRef::from(&server.udp[0])
            .set_recv_buffer_size(2 << 20)
            .expect("SO_RCVBUF");
        let client = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind client");
        for _ in 0..n {
            // Loopback delivers within the send call: it is queued on return.
            client.send_to(b"x", server.udp_addrs[0]).expect("send");
        }
        server
    }

    #[test]
    fn a_socket_that_never_drains_sits_on_the_ready_list_once_and_gets_one_budget_per_turn() {
        let mut server = server_with_queued_datagrams(3 * UDP_BUDGET);
        server.on_udp_ready(0);
        assert_eq!(server.stats.udp_datagrams_in, UDP_BUDGET as u64);
        assert_eq!(server.ready, [token::udp(0)]);
        // Another edge before its turn: no second budget, no second entry.
        server.on_udp_ready(0);
        assert_eq!(server.stats.udp_datagrams_in, UDP_BUDGET as u64);
        assert_eq!(server.ready, [token::udp(0)]);
        // Its turn: one more budget, and back on the list once.
        server.serve_ready();
        assert_eq!(server.stats.udp_datagrams_in, 2 * UDP_BUDGET as u64);
        assert_eq!(server.ready, [token::udp(0)]);
        server.serve_ready();
        server.serve_ready();
        assert_eq!(server.stats.udp_datagrams_in, 3 * UDP_BUDGET as u64);
        assert!(server.ready.is_empty(), "drained, yet still queued");
    }
}
