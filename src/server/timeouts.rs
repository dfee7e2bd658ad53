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

use super::conn::{tick_duration, CloseReason, SweepFacts, Tick};

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
    /// A TLS handshake has not finished in this long: close (TLS tables).
    pub handshake: Option<Tick>,
}

impl Timeouts {
    /// Timeouts from durations; zero or `None` turns one off. Rounds up to
    /// whole ticks, so a connection never goes before its time.
    pub fn new(idle: Option<Duration>, write: Option<Duration>) -> Self {
        Timeouts {
            idle: idle.and_then(to_ticks),
            write: write.and_then(to_ticks),
            handshake: None,
        }
    }

    /// `d` in whole ticks, rounded up; `None` for zero.
    pub fn ticks(d: Duration) -> Option<Tick> {
        to_ticks(d)
    }

    /// True when some timeout is on, so the sweep has work to do.
    pub fn is_armed(&self) -> bool {
        self.idle.is_some() || self.write.is_some() || self.handshake.is_some()
    }

    /// Why a connection must close, from what the sweep learned of it: a
    /// connection owed output is the write timeout's to judge and never
    /// idle; one owed nothing is idle once nothing moved for the limit.
    ///
    /// Ticks are whole tenths since the server started, so a span of `n`
    /// ticks may be up to one tick short in real time: a timeout fires only
    /// past its limit, and a connection never goes before its time.
    pub fn expiry(&self, facts: SweepFacts) -> Option<CloseReason> {
        if let (Some(limit), Some(stalled)) = (self.write, facts.stalled_for) {
            if stalled > limit {
                return Some(CloseReason::WriteTimeout);
            }
        }
        match (self.idle, facts.idle_for) {
            (Some(limit), Some(idle)) if idle > limit => Some(CloseReason::IdleTimeout),
            _ => None,
        }
    }

    /// How often to sweep: about once a second, faster only for short
    /// timeouts: an idle or handshake timeout overshoots by at most half,
    /// and the write timeout's view of a slow reader is off by at most a
    /// tenth (its progress is seen one sweep late at worst, so a reader
    /// whose acknowledgements come every few seconds keeps its margin
    /// under a timeout of a few seconds).
    fn sweep_interval(&self) -> Duration {
        let by = |t: Option<Tick>, parts: u32| t.map(|t| tick_duration(t) / parts);
        [by(self.idle, 2), by(self.handshake, 2), by(self.write, 10)]
            .into_iter()
            .flatten()
            .min()
            .unwrap_or(SWEEP_INTERVAL)
            .clamp(MIN_SWEEP_INTERVAL, SWEEP_INTERVAL)
    }
}

fn to_ticks(d: Duration) -> Option<Tick> {
    let tenths = d.as_nanos().div_ceil(100_000_000);
    (tenths > 0).then(|| Tick::try_from(tenths).unwrap_or(Tick::MAX))
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

    fn facts(idle: Option<Tick>, stalled: Option<Tick>) -> SweepFacts {
        SweepFacts {
            idle_for: idle,
            stalled_for: stalled,
        }
    }

    #[test]
    fn without_the_kernel_the_stall_clock_follows_our_own_buffer() {
        let mut h = Harness::new(64);
        let stream = FakeStream {
            input: b"0123456789abcdef".to_vec(),
            read_chunk: 64,
            write_room: 4,
            ..FakeStream::default()
        };
        let mut c = Connection::new(stream, 0);
        assert_eq!(c.sweep_facts(5), facts(Some(5), None), "owes nothing");
        assert_eq!(c.on_readable(&mut at(&mut h, 10)), Progress::Wait);
        assert_eq!(c.pending_len(), 12);
        assert_eq!(c.sweep_facts(30), facts(None, Some(20)), "never idle");
        let t = Timeouts {
            idle: Some(5),
            write: Some(20),
            handshake: None,
        };
        assert_eq!(t.expiry(c.sweep_facts(30)), None);
        assert_eq!(t.expiry(c.sweep_facts(31)), Some(CloseReason::WriteTimeout));
        // The peer reads a little: the clock restarts.
        c.stream_mut().write_room = 4;
        assert_eq!(c.on_writable(&mut at(&mut h, 40)), Progress::Wait);
        assert_eq!(c.sweep_facts(45), facts(None, Some(5)));
        c.stream_mut().write_room = 100;
        c.on_writable(&mut at(&mut h, 50));
        assert_eq!(c.sweep_facts(60), facts(Some(10), None));
        assert_eq!(
            c.expire(1, CloseReason::IdleTimeout),
            Progress::Close(CloseReason::IdleTimeout)
        );
    }

    /// A connection whose echo the kernel took whole (nothing pending
    /// here) to a peer that acknowledged `acked` of it.
    fn echoed_into_the_kernel(h: &mut Harness, len: usize, acked: u64) -> Connection<FakeStream> {
        let stream = FakeStream {
            input: vec![b'x'; len],
            read_chunk: len,
            write_room: usize::MAX,
            acked: Some(acked),
            ..FakeStream::default()
        };
        let mut c = Connection::new(stream, 0);
        assert_eq!(c.on_readable(&mut at(h, 0)), Progress::Wait);
        assert_eq!(c.pending_len(), 0);
        c
    }

    #[test]
    fn output_the_peer_has_not_acknowledged_is_owed_and_never_idle() {
        let mut h = Harness::new(1 << 16);
        let t = Timeouts {
            idle: Some(10),
            write: Some(50),
            handshake: None,
        };
        // 8 KiB echoed, the kernel holds 6 KiB of it unacknowledged: an
        // idle timeout now would end a clean FIN after 2 KiB.
        let mut c = echoed_into_the_kernel(&mut h, 8192, 2048);
        // The first look finds 2 KiB acknowledged since accept: progress.
        assert_eq!(c.sweep_facts(10), facts(None, Some(0)));
        assert_eq!(c.sweep_facts(40), facts(None, Some(30)));
        assert_eq!(t.expiry(c.sweep_facts(50)), None, "owed: not idle");
        assert_eq!(
            t.expiry(c.sweep_facts(61)),
            Some(CloseReason::WriteTimeout),
            "nothing acknowledged for the write timeout: the peer stopped"
        );
        // Once everything is acknowledged, it owes nothing: idle again,
        // counted from when the peer took its last byte.
        c.stream_mut().acked = Some(8192);
        assert_eq!(c.sweep_facts(60), facts(Some(0), None));
        assert_eq!(t.expiry(c.sweep_facts(65)), None, "not idle for long yet");
        assert_eq!(t.expiry(c.sweep_facts(71)), Some(CloseReason::IdleTimeout));
    }

    #[test]
    fn a_slow_reader_whose_acknowledgements_grow_is_never_stalled() {
        let mut h = Harness::new(1 << 16);
        let t = Timeouts {
            idle: None,
            write: Some(50),
            handshake: None,
        };
        let mut c = echoed_into_the_kernel(&mut h, 60_000, 0);
        // One MSS acknowledged every 4 s, long gaps of zero window between:
        // progress each time, however slow.
        for step in 1..=13u32 {
            let now = step * 40;
            c.stream_mut().acked = Some(u64::from(step) * 1448 * 3);
            let f = c.sweep_facts(now);
            assert_eq!(
                f.stalled_for,
                Some(0),
                "acknowledged more: progress at {now}"
            );
            assert_eq!(t.expiry(f), None);
            assert_eq!(
                t.expiry(c.sweep_facts(now + 39)),
                None,
                "39 ticks of zero window"
            );
        }
    }

    #[test]
    fn a_peer_that_trickles_input_and_reads_none_of_its_echo_is_still_stalled() {
        let mut h = Harness::new(1 << 16);
        let t = Timeouts {
            idle: None,
            write: Some(20),
            handshake: None,
        };
        let mut c = echoed_into_the_kernel(&mut h, 100, 0);
        assert_eq!(c.sweep_facts(5).stalled_for, Some(5));
        // A few bytes in every tick, echoed into the kernel: busy, and
        // still nothing acknowledged.
        for tick in 6..=30u32 {
            c.stream_mut().input.extend_from_slice(b"x");
            assert_eq!(c.on_readable(&mut at(&mut h, tick)), Progress::Wait);
        }
        assert_eq!(
            t.expiry(c.sweep_facts(30)),
            Some(CloseReason::WriteTimeout),
            "reading its input is not reading our output"
        );
    }

    #[test]
    fn expiry_judges_an_owing_connection_by_the_write_timeout_only() {
        let t = Timeouts {
            idle: Some(10),
            write: Some(600),
            handshake: None,
        };
        assert_eq!(t.expiry(facts(None, Some(500))), None);
        let idle_only = Timeouts {
            idle: Some(10),
            write: None,
            handshake: None,
        };
        assert_eq!(
            idle_only.expiry(facts(None, Some(5000))),
            None,
            "owed output is never the idle timeout's, even with no write timeout"
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
            handshake: None,
        };
        assert_eq!(
            t.expiry(facts(Some(100), None)),
            None,
            "not before its time"
        );
        assert_eq!(
            t.expiry(facts(Some(101), None)),
            Some(CloseReason::IdleTimeout)
        );
        let write_only = Timeouts {
            idle: None,
            write: Some(600),
            handshake: None,
        };
        assert_eq!(
            write_only.expiry(facts(Some(10_000), None)),
            None,
            "idle is off"
        );
        assert_eq!(write_only.expiry(facts(None, Some(600))), None);
        assert_eq!(
            write_only.expiry(facts(None, Some(601))),
            Some(CloseReason::WriteTimeout)
        );
    }

    #[test]
    fn sweep_runs_about_once_a_second() {
        let sweep = |idle| Timeouts::new(Some(Duration::from_secs_f64(idle)), None);
        assert_eq!(sweep(30.0).sweep_interval(), SWEEP_INTERVAL);
        assert_eq!(sweep(1.0).sweep_interval(), Duration::from_millis(500));
        assert_eq!(sweep(0.1).sweep_interval(), MIN_SWEEP_INTERVAL);
        let write = |w| Timeouts::new(None, Some(Duration::from_secs_f64(w)));
        assert_eq!(write(60.0).sweep_interval(), SWEEP_INTERVAL);
        assert_eq!(write(5.0).sweep_interval(), Duration::from_millis(500));
    }

    #[test]
    fn expiry_names_the_more_specific_story() {
        let t = Timeouts {
            idle: Some(50),
            write: Some(20),
            handshake: None,
        };
        assert_eq!(t.expiry(facts(Some(50), None)), None);
        assert_eq!(
            t.expiry(facts(Some(51), None)),
            Some(CloseReason::IdleTimeout)
        );
        assert_eq!(
            t.expiry(facts(None, Some(25))),
            Some(CloseReason::WriteTimeout)
        );
    }
}
