//! Hard limits on hostile peers: the idle and write timeouts with their
//! coarse sweep, and the UDP admission check (refused source ports, the
//! optional per-source rate limit).
//!
//! Timeouts need no timer per connection: each connection keeps coarse
//! ticks of its last activity and last output progress, and the loop sweeps
//! the slab about once a second. The sweep is armed only while connections
//! are open and a timeout is configured, so an idle server still sleeps in
//! `poll` with no timeout. The decisions ([`Timeouts::expiry`],
//! [`is_refused_source_port`]) are pure; this file also holds the `Server`
//! glue that acts on them. Accepting and the connection cap live in
//! `accept`; the token buckets in `crate::ratelimit`.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, info, warn};

use super::conn::{CloseReason, Tick};
use super::Server;
use crate::ratelimit::{RateLimiter, DEFAULT_MAX_SOURCES};

/// The longest gap between sweeps ("about once a second").
pub const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The shortest gap between sweeps, for sub-second timeouts.
const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// Source ports whose datagrams are never answered: 0 (not a real sender)
/// and the classic simple services echo, discard, daytime, chargen and time.
/// Answering them lets two servers bounce datagrams forever (echo <->
/// chargen) or lets a spoofed request aim one at the other.
pub const REFUSED_SOURCE_PORTS: [u16; 6] = [0, 7, 9, 13, 19, 37];

/// True when a datagram from `port` must be dropped unanswered.
///
/// ```
/// use echo_reactor::server::limits::is_refused_source_port;
/// assert!(is_refused_source_port(0) && is_refused_source_port(19));
/// assert!(!is_refused_source_port(7007) && !is_refused_source_port(40000));
/// ```
pub fn is_refused_source_port(port: u16) -> bool {
    REFUSED_SOURCE_PORTS.contains(&port)
}

/// The per-connection timeouts, in ticks; `None` is off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Timeouts {
    /// No bytes moved in either direction for this long: close with FIN.
    pub idle: Option<Tick>,
    /// Pending output has not moved for this long: close with a reset.
    pub write: Option<Tick>,
}

impl Timeouts {
    /// Timeouts from durations; zero or `None` turns one off. Rounds up to
    /// whole ticks, so a connection never goes before its time.
    pub fn new(idle: Option<Duration>, write: Option<Duration>) -> Self {
        Timeouts {
            idle: idle.and_then(to_ticks),
            write: write.and_then(to_ticks),
        }
    }

    /// True when some timeout is on, so the sweep has work to do.
    pub fn is_armed(&self) -> bool {
        self.idle.is_some() || self.write.is_some()
    }

    /// Why a connection idle for `idle_for` ticks, whose pending output has
    /// been stuck for `stalled_for` (`None`: nothing pending), must close.
    ///
    /// Ticks are whole tenths since the server started, so a span of `n`
    /// ticks may be up to one tick short in real time: a timeout fires only
    /// past its limit, and a connection never goes before its time.
    ///
    /// ```
    /// use echo_reactor::server::conn::CloseReason;
    /// use echo_reactor::server::limits::Timeouts;
    /// let t = Timeouts { idle: Some(50), write: Some(20) };
    /// assert_eq!(t.expiry(50, None), None);
    /// assert_eq!(t.expiry(51, None), Some(CloseReason::IdleTimeout));
    /// assert_eq!(t.expiry(25, Some(25)), Some(CloseReason::WriteTimeout));
    /// ```
    pub fn expiry(&self, idle_for: Tick, stalled_for: Option<Tick>) -> Option<CloseReason> {
        // A stuck writer is the more specific story: name that one.
        if let (Some(limit), Some(stalled)) = (self.write, stalled_for) {
            if stalled > limit {
                return Some(CloseReason::WriteTimeout);
            }
        }
        match self.idle {
            Some(limit) if idle_for > limit => Some(CloseReason::IdleTimeout),
            _ => None,
        }
    }

    /// How often to sweep: about once a second, faster only for timeouts
    /// under two seconds so none overshoots by more than half.
    fn sweep_interval(&self) -> Duration {
        let shortest = [self.idle, self.write].into_iter().flatten().min();
        let half = shortest.map_or(SWEEP_INTERVAL, |t| tick_duration(t) / 2);
        half.clamp(MIN_SWEEP_INTERVAL, SWEEP_INTERVAL)
    }
}

fn to_ticks(d: Duration) -> Option<Tick> {
    let tenths = d.as_nanos().div_ceil(100_000_000);
    (tenths > 0).then(|| Tick::try_from(tenths).unwrap_or(Tick::MAX))
}

fn tick_duration(t: Tick) -> Duration {
    Duration::from_millis(u64::from(t) * 100)
}

/// The sweep's schedule and the loop-owned list it fills (kept between
/// sweeps, so a sweep allocates nothing once it has grown).
#[derive(Debug, Default)]
pub struct Sweep {
    timeouts: Timeouts,
    /// When the next sweep runs; `None` while no connection is open.
    next: Option<Instant>,
    expired: Vec<(usize, CloseReason)>,
    /// A run of sweeps closing stalled writers is under way (warned once).
    in_stall_episode: bool,
}

impl Sweep {
    /// A sweep enforcing `timeouts`.
    pub fn new(timeouts: Timeouts) -> Self {
        Sweep {
            timeouts,
            ..Sweep::default()
        }
    }

    /// When the loop must wake for the next sweep.
    pub fn next_at(&self) -> Option<Instant> {
        self.next
    }
}

/// UDP admission: refused source ports and the optional rate limit.
#[derive(Debug, Default)]
pub struct UdpGuard {
    limiter: Option<RateLimiter>,
    /// The ports this server's UDP sockets are bound to. A datagram from
    /// one of them, on any address, is this server talking to itself, or a
    /// reflector like it on the same port (both on 7007, both on 7): the
    /// answer would come straight back, forever.
    own_ports: Vec<u16>,
    /// Warned about refused source ports already.
    warned_port: bool,
    /// Warned about rate-limited sources already.
    warned_rate: bool,
}

impl UdpGuard {
    /// A guard for sockets bound to `own_ports`, limiting each source to
    /// `per_sec` datagrams, if given.
    pub fn new(per_sec: Option<u32>, own_ports: Vec<u16>) -> Self {
        UdpGuard {
            limiter: per_sec.map(|r| RateLimiter::new(r, DEFAULT_MAX_SOURCES)),
            own_ports,
            ..UdpGuard::default()
        }
    }

    /// True when a datagram from source port `port` must be dropped: port
    /// 0, a simple-service port, or one of this server's own ports (which
    /// covers its own socket's address too).
    pub fn refuses_port(&self, port: u16) -> bool {
        is_refused_source_port(port) || self.own_ports.contains(&port)
    }
}

impl Server {
    /// Arms, runs or disarms the timeout sweep (called after every batch).
    pub(super) fn on_sweep_timer(&mut self, now: Instant) {
        if !self.sweep.timeouts.is_armed() {
            return;
        }
        match self.sweep.next {
            None if !self.conns.is_empty() => {
                self.sweep.next = Some(now + self.sweep.timeouts.sweep_interval());
            }
            Some(at) if now >= at => {
                self.sweep_expired(now);
                // Nothing open: disarm, so an idle server sleeps in poll.
                self.sweep.next =
                    (!self.conns.is_empty()).then(|| now + self.sweep.timeouts.sweep_interval());
            }
            _ => {}
        }
    }

    /// Closes every connection whose timeout has passed.
    fn sweep_expired(&mut self, now: Instant) {
        let tick = self.tick(now);
        let timeouts = self.sweep.timeouts;
        let mut expired = std::mem::take(&mut self.sweep.expired);
        expired.extend(self.conns.iter().filter_map(|(key, conn)| {
            timeouts
                .expiry(conn.idle_for(tick), conn.stalled_for(tick))
                .map(|reason| (key, reason))
        }));
        let stalled = expired
            .iter()
            .filter(|(_, r)| *r == CloseReason::WriteTimeout)
            .count();
        if stalled > 0 && !self.sweep.in_stall_episode {
            warn!(
                "closing connections whose peers stopped reading (write timeout {:.1} s); \
                 counted as stalled in stats",
                timeouts.write.map_or(0.0, |t| f64::from(t) / 10.0)
            );
        } else if stalled == 0 && self.sweep.in_stall_episode {
            info!("no more stalled connections");
        }
        self.sweep.in_stall_episode = stalled > 0;
        if !expired.is_empty() {
            debug!("sweep: {} connections timed out", expired.len());
        }
        for &(key, reason) in &expired {
            if let Some(conn) = self.conns.get_mut(key) {
                let progress = conn.expire(key, reason);
                self.apply(key, progress);
            }
        }
        expired.clear();
        self.sweep.expired = expired;
    }

    /// Whether datagram from `from` on UDP socket `i` may be answered; a
    /// refused one is counted here.
    pub(super) fn admit_datagram(&mut self, i: usize, from: SocketAddr) -> bool {
        if self.udp_guard.refuses_port(from.port()) {
            self.stats.udp_refused_ports += 1;
            if !std::mem::replace(&mut self.udp_guard.warned_port, true) {
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
        let Some(limiter) = &mut self.udp_guard.limiter else {
            return true;
        };
        if limiter.allow(from.ip(), Instant::now()) {
            return true;
        }
        self.stats.udp_rate_limited += 1;
        if !std::mem::replace(&mut self.udp_guard.warned_rate, true) {
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
    use crate::server::conn::tests::{FakeStream, Harness};
    use crate::server::conn::{Connection, Ctx, Progress};

    fn at(h: &mut Harness, now: Tick) -> Ctx<'_> {
        let mut cx = h.cx();
        cx.now = now;
        cx
    }

    #[test]
    fn stall_clock_starts_when_output_backs_up_and_restarts_on_progress() {
        let mut h = Harness::new(64);
        let stream = FakeStream {
            input: b"0123456789abcdef".to_vec(),
            read_chunk: 64,
            write_room: 4,
            ..FakeStream::default()
        };
        let mut c = Connection::new(stream, 0);
        assert_eq!(c.stalled_for(5), None, "nothing pending, nothing stalled");
        assert_eq!(c.on_readable(&mut at(&mut h, 10)), Progress::Wait);
        assert_eq!(c.pending_len(), 12);
        assert_eq!(c.stalled_for(30), Some(20));
        let t = Timeouts {
            idle: None,
            write: Some(20),
        };
        assert_eq!(t.expiry(c.idle_for(30), c.stalled_for(30)), None);
        assert_eq!(
            t.expiry(c.idle_for(31), c.stalled_for(31)),
            Some(CloseReason::WriteTimeout)
        );
        // The peer reads a little: the clock restarts.
        c.stream_mut().write_room = 4;
        assert_eq!(c.on_writable(&mut at(&mut h, 40)), Progress::Wait);
        assert_eq!(c.stalled_for(45), Some(5));
        c.stream_mut().write_room = 100;
        c.on_writable(&mut at(&mut h, 50));
        assert_eq!(c.stalled_for(500), None);
        assert_eq!(c.idle_for(60), 10);
        assert_eq!(
            c.expire(1, CloseReason::IdleTimeout),
            Progress::Close(CloseReason::IdleTimeout)
        );
    }

    #[test]
    fn durations_round_up_to_ticks_and_zero_is_off() {
        let t = Timeouts::new(Some(Duration::from_millis(250)), Some(Duration::ZERO));
        assert_eq!(t.idle, Some(3));
        assert_eq!(t.write, None);
        assert!(t.is_armed());
        assert!(!Timeouts::new(None, None).is_armed());
    }

    #[test]
    fn idle_and_write_timeouts_are_told_apart() {
        let t = Timeouts {
            idle: Some(100),
            write: Some(600),
        };
        assert_eq!(t.expiry(100, None), None, "not before its time");
        assert_eq!(t.expiry(101, None), Some(CloseReason::IdleTimeout));
        // Stuck below the write timeout but idle long enough: still idle.
        assert_eq!(t.expiry(101, Some(101)), Some(CloseReason::IdleTimeout));
        let write_only = Timeouts {
            idle: None,
            write: Some(600),
        };
        assert_eq!(write_only.expiry(10_000, None), None, "idle is off");
        assert_eq!(write_only.expiry(600, Some(600)), None);
        assert_eq!(
            write_only.expiry(601, Some(601)),
            Some(CloseReason::WriteTimeout)
        );
    }

    #[test]
    fn sweep_runs_about_once_a_second() {
        let sweep = |idle| Timeouts::new(Some(Duration::from_secs_f64(idle)), None);
        assert_eq!(sweep(30.0).sweep_interval(), SWEEP_INTERVAL);
        assert_eq!(sweep(1.0).sweep_interval(), Duration::from_millis(500));
        assert_eq!(sweep(0.1).sweep_interval(), MIN_SWEEP_INTERVAL);
    }

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
}
