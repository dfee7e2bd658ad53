//! The idle and write timeouts: the pure decision of which connection
//! must go ([`Timeouts::expiry`]) and the coarse timer that says when to
//! look ([`Sweep`]). The connection table runs the sweep and closes.
//!
//! Timeouts need no timer per connection: each connection keeps coarse
//! ticks of its last activity and last output progress, and the table
//! sweeps the slab about once a second. The sweep is armed only while
//! connections are open and a timeout is configured, so an idle server
//! still sleeps in `poll` with no timeout.

use std::time::{Duration, Instant};

use super::conn::{CloseReason, Tick};

/// The longest gap between sweeps ("about once a second").
pub(crate) const SWEEP_INTERVAL: Duration = Duration::from_secs(1);

/// The shortest gap between sweeps, for sub-second timeouts.
const MIN_SWEEP_INTERVAL: Duration = Duration::from_millis(100);

/// The per-connection timeouts, in ticks; `None` is off.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Timeouts {
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
/// When to sweep next, and whether the last sweep found stalled peers
/// (so the warning comes once per episode).
#[derive(Debug, Default)]
pub(crate) struct Sweep {
    timeouts: Timeouts,
    next: Option<Instant>,
    in_stall_episode: bool,
}

impl Sweep {
    /// A sweep for these timeouts, not yet armed.
    pub fn new(timeouts: Timeouts) -> Self {
        Sweep {
            timeouts,
            ..Sweep::default()
        }
    }

    /// The timeouts it applies.
    pub fn timeouts(&self) -> Timeouts {
        self.timeouts
    }

    /// When the next sweep is due; `None` while disarmed.
    pub fn next_at(&self) -> Option<Instant> {
        self.next
    }

    /// Whether to sweep now. Arms the timer when connections appear and
    /// disarms it when none are left, so an idle server sleeps in poll.
    pub fn is_due(&mut self, now: Instant, has_connections: bool) -> bool {
        if !self.timeouts.is_armed() {
            return false;
        }
        let interval = self.timeouts.sweep_interval();
        match self.next {
            None if has_connections => {
                self.next = Some(now + interval);
                false
            }
            Some(at) if now >= at => {
                self.next = has_connections.then(|| now + interval);
                true
            }
            _ => false,
        }
    }

    /// Records whether this sweep found stalled peers; true when that
    /// starts an episode (warn once), and logs when one ends.
    pub fn note_stalled(&mut self, stalled: usize) -> bool {
        let starts = stalled > 0 && !self.in_stall_episode;
        if stalled == 0 && self.in_stall_episode {
            log::info!("no more stalled connections");
        }
        self.in_stall_episode = stalled > 0;
        starts
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
    fn expiry_names_the_more_specific_story() {
        let t = Timeouts {
            idle: Some(50),
            write: Some(20),
        };
        assert_eq!(t.expiry(50, None), None);
        assert_eq!(t.expiry(51, None), Some(CloseReason::IdleTimeout));
        assert_eq!(t.expiry(25, Some(25)), Some(CloseReason::WriteTimeout));
    }
}
