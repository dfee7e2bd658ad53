//! Which datagrams get an answer at all: the loop guard (refused source
//! ports) and the optional per-source rate limit. It decides and counts;
//! the endpoint drops what it refuses.
//!
//! Two echo servers answering each other bounce a datagram forever, and a
//! forged source aims one at the other. Source port 0 (not a real sender),
//! the classic simple-service ports and this server's own UDP ports are
//! never answered: that stops self-loops and loops between two servers on
//! the same port (both on 7, both on 7007). A loop between reflectors on
//! two arbitrary ports can only be bounded by the rate limit.

use std::net::SocketAddr;
use std::time::Instant;

use log::{debug, warn};

use super::ratelimit::{RateLimiter, DEFAULT_MAX_SOURCES};
use crate::server::observe::Stats;

/// Source ports whose datagrams are never answered: 0 (not a real sender)
/// and the classic simple services echo, discard, daytime, chargen and time.
/// Answering them lets two servers bounce datagrams forever (echo <->
/// chargen) or lets a spoofed request aim one at the other.
pub(crate) const REFUSED_SOURCE_PORTS: [u16; 6] = [0, 7, 9, 13, 19, 37];

/// True when a datagram from `port` must be dropped unanswered whatever
/// the server's own ports are.
pub(crate) fn is_refused_source_port(port: u16) -> bool {
    REFUSED_SOURCE_PORTS.contains(&port)
}

/// The admission check for datagrams, and which warnings it has given.
#[derive(Debug, Default)]
pub(crate) struct UdpGuard {
    limiter: Option<RateLimiter>,
    /// The ports this server serves UDP on (any address).
    own_ports: Vec<u16>,
    warned_port: bool,
    warned_rate: bool,
}

impl UdpGuard {
    /// A guard refusing the simple-service ports and `own_ports`, and
    /// limiting each source to `per_sec` datagrams when set.
    pub fn new(per_sec: Option<u32>, own_ports: Vec<u16>) -> Self {
        UdpGuard {
            limiter: per_sec.map(|r| RateLimiter::new(r, DEFAULT_MAX_SOURCES)),
            own_ports,
            ..UdpGuard::default()
        }
    }

    /// True when datagrams from `port` are never answered.
    pub fn refuses_port(&self, port: u16) -> bool {
        is_refused_source_port(port) || self.own_ports.contains(&port)
    }

    /// True when the datagram from `from` on socket `i` may be answered;
    /// otherwise counts it (warning once per kind) and says no.
    pub fn admit(&mut self, i: usize, from: SocketAddr, stats: &mut Stats) -> bool {
        if self.refuses_port(from.port()) {
            stats.udp_refused_ports += 1;
            if !std::mem::replace(&mut self.warned_port, true) {
                warn!(
                    "udp {i}: dropping datagrams from source port {} (port 0, a simple \
                     service or one of our own ports: loop guard); further drops counted \
                     as refused-port",
                    from.port()
                );
            }
            debug!("udp {i}: {from}: dropped: refused source port");
            return false;
        }
        let Some(limiter) = &mut self.limiter else {
            return true;
        };
        if limiter.allow(from.ip(), Instant::now()) {
            return true;
        }
        stats.udp_rate_limited += 1;
        if !std::mem::replace(&mut self.warned_rate, true) {
            warn!(
                "udp {i}: {} over the per-source rate limit: dropping the excess; further \
                 drops counted as rate-limited",
                from.ip()
            );
        }
        debug!("udp {i}: {from}: dropped: rate limit");
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_guard_also_refuses_the_servers_own_ports_and_nothing_else() {
        let guard = UdpGuard::new(None, vec![7007, 40_001]);
        let refused: Vec<u16> = (0..=u16::MAX).filter(|&p| guard.refuses_port(p)).collect();
        assert_eq!(refused, [0, 7, 9, 13, 19, 37, 7007, 40_001]);
    }

    #[test]
    fn only_port_zero_and_simple_service_ports_are_refused() {
        let refused: Vec<u16> = (0..=u16::MAX)
            .filter(|&p| is_refused_source_port(p))
            .collect();
        assert_eq!(refused, [0, 7, 9, 13, 19, 37]);
    }

    #[test]
    fn a_refused_port_is_counted_and_an_ordinary_one_passes() {
        let mut guard = UdpGuard::new(None, vec![7007]);
        let mut stats = Stats::default();
        assert!(!guard.admit(0, "127.0.0.2:7007".parse().unwrap(), &mut stats));
        assert!(guard.admit(0, "127.0.0.1:40000".parse().unwrap(), &mut stats));
        assert_eq!(stats.udp_refused_ports, 1);
    }
}
