//! UDP: receive until the socket is empty, answer each datagram with at
//! most one reply, drop (and count) a reply the socket cannot take now.
//!
//! UDP promises nothing, so a queue for replies would only add memory and
//! latency. And a reply is never larger than its request unless the
//! operator says so: an open echo port must not be a reflection amplifier.

use std::net::SocketAddr;

use log::{debug, trace, warn};

use super::{token, Server};
use crate::net::{is_interrupted, is_would_block};

/// Datagrams handled per socket event before other sources get a turn.
const UDP_BATCH: usize = 256;

impl Server {
    /// UDP socket `i` is readable: answer what waits, up to a batch.
    pub(super) fn on_udp_ready(&mut self, i: usize) {
        for _ in 0..UDP_BATCH {
            let Some(socket) = self.udp.get(i) else {
                return; // shut down meanwhile
            };
            match socket.recv_from(&mut self.scratch) {
                Ok((len, from)) => {
                    trace!("udp {i}: {len} B from {from}");
                    self.stats.udp_datagrams_in += 1;
                    if self.admit_datagram(i, from) {
                        self.reply(i, len, from);
                    }
                }
                // Queue drained: the next datagram raises a new edge.
                Err(e) if is_would_block(&e) => return,
                Err(e) if is_interrupted(&e) => continue,
                // e.g. an ICMP error queued for this socket: count, carry on;
                // the batch limit keeps a persistent error from spinning.
                Err(e) => {
                    self.stats.udp_errors += 1;
                    debug!("udp {i}: recv failed: {e}");
                }
            }
        }
        self.ready.push(token::udp(i));
    }

    /// Sends the service's answer to the datagram now in `scratch[..len]`.
    fn reply(&mut self, i: usize, len: usize, to: SocketAddr) {
        let Some(reply_len) = self.service.on_datagram(&mut self.scratch, len) else {
            return;
        };
        if reply_len > len {
            // The service asked to amplify; only the operator may allow that.
            self.stats.udp_replies_dropped += 1;
            debug!("udp {i}: reply of {reply_len} B to {len} B from {to} dropped: amplification");
            return;
        }
        let socket = &self.udp[i];
        loop {
            match socket.send_to(&self.scratch[..reply_len], to) {
                Ok(_) => self.stats.udp_datagrams_out += 1,
                Err(e) if is_interrupted(&e) => continue,
                // Socket buffer full: drop the reply rather than queue it.
                Err(e) if is_would_block(&e) => {
                    if self.stats.udp_replies_dropped == 0 {
                        warn!("udp {i}: send buffer full, dropping replies (counted in stats)");
                    }
                    self.stats.udp_replies_dropped += 1;
                }
                Err(e) => {
                    self.stats.udp_errors += 1;
                    debug!("udp {i}: send to {to} failed: {e}");
                }
            }
            return;
        }
    }
}
