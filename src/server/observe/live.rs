//! Live figures while the server runs: each loop publishes a snapshot of
//! its counters and gauges, loop 0 adds them up for the `--stats` line and
//! the `--metrics` endpoint.
//!
//! The counters themselves stay plain integers that only their loop
//! touches (no atomics on the data path). Publishing copies them into a
//! slot behind a mutex, once per publishing interval, so with several
//! loops the totals lag by at most that interval; with one loop, loop 0
//! publishes right before it reports, and the figures are exact.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use log::info;

use super::Stats;

/// One loop's figures at one moment.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Snapshot {
    /// The loop's counters.
    pub stats: Stats,
    /// TCP connections open.
    pub open: u64,
    /// Bytes of output waiting for the kernel, over all connections.
    pub pending_bytes: u64,
    /// Accepting is paused (descriptors ran out).
    pub accept_paused: bool,
}

impl Snapshot {
    /// Adds another loop's snapshot to this one.
    pub fn add(&mut self, other: &Snapshot) {
        self.stats.merge(&other.stats);
        self.open += other.open;
        self.pending_bytes += other.pending_bytes;
        self.accept_paused |= other.accept_paused;
    }
}

/// The slots every loop publishes into.
#[derive(Debug)]
pub struct Live {
    slots: Vec<Mutex<Snapshot>>,
    started: Instant,
}

impl Live {
    /// Room for `loops` loops.
    pub fn new(loops: usize) -> Arc<Live> {
        Arc::new(Live {
            slots: (0..loops.max(1))
                .map(|_| Mutex::new(Snapshot::default()))
                .collect(),
            started: Instant::now(),
        })
    }

    /// How many loops publish here.
    pub fn loops(&self) -> usize {
        self.slots.len()
    }

    /// Time since the server started.
    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    /// Loop `i` publishes its figures.
    pub fn publish(&self, i: usize, snapshot: Snapshot) {
        if let Some(slot) = self.slots.get(i) {
            // A poisoned slot only means a loop panicked while copying
            // plain numbers; the numbers are still usable.
            *slot.lock().unwrap_or_else(|p| p.into_inner()) = snapshot;
        }
    }

    /// Every loop's figures added up.
    pub fn total(&self) -> Snapshot {
        let mut total = Snapshot::default();
        for slot in &self.slots {
            total.add(&slot.lock().unwrap_or_else(|p| p.into_inner()));
        }
        total
    }
}

/// The `--stats SECS` line: loop 0 prints the totals and the rates since
/// the previous line.
#[derive(Debug)]
pub struct Reporter {
    every: Duration,
    next: Instant,
    last: Snapshot,
    last_at: Instant,
}

impl Reporter {
    /// A line every `every`, the first one `every` from now.
    pub fn new(every: Duration, now: Instant) -> Reporter {
        Reporter {
            every,
            next: now + every,
            last: Snapshot::default(),
            last_at: now,
        }
    }

    /// When the next line is due.
    pub fn next_at(&self) -> Instant {
        self.next
    }

    /// Logs the line for `total` at `now`, and schedules the next one.
    pub fn report(&mut self, total: &Snapshot, now: Instant) {
        let secs = now.duration_since(self.last_at).as_secs_f64().max(1e-3);
        info!("{}", stats_line(total, &self.last, secs));
        self.last = *total;
        self.last_at = now;
        self.next = now + self.every;
    }
}

/// `stats: conns 12 open, 340 accepted, 328 closed, 0 rejected; tcp in
/// 1.2 MB/s out 1.2 MB/s cut 0 B; udp in 10/s out 10/s dropped 0/s
/// rcvbuf-dropped 0/s; tls handshakes 0 failed 0; faults 0; pending 0 B;
/// accepting`. Rates are per second over the `secs` since `last`; `cut`
/// and the handshakes are totals so far.
pub fn stats_line(now: &Snapshot, last: &Snapshot, secs: f64) -> String {
    let rate = |a: u64, b: u64| a.saturating_sub(b) as f64 / secs;
    let (s, l) = (&now.stats, &last.stats);
    format!(
        "stats: conns {} open, {} accepted, {} closed, {} rejected; \
         tcp in {} out {} cut {} B; udp in {:.0}/s out {:.0}/s dropped {:.0}/s \
         rcvbuf-dropped {:.0}/s; tls handshakes {} failed {}; faults {}; pending {} B; {}",
        now.open,
        s.tcp_accepted,
        s.tcp_closed,
        s.tcp_rejected,
        bytes_per_sec(rate(s.bytes_in, l.bytes_in)),
        bytes_per_sec(rate(s.bytes_out, l.bytes_out)),
        s.tcp_cut_bytes,
        rate(s.udp_datagrams_in, l.udp_datagrams_in),
        rate(s.udp_datagrams_out, l.udp_datagrams_out),
        rate(dropped(s), dropped(l)),
        rate(s.udp_rcvbuf_drops, l.udp_rcvbuf_drops),
        s.tls_handshakes,
        s.tls_failed(),
        s.faults(),
        now.pending_bytes,
        if now.accept_paused {
            "accepting paused"
        } else {
            "accepting"
        }
    )
}

/// Every UDP datagram that got no reply for a reason of ours.
fn dropped(s: &Stats) -> u64 {
    s.udp_replies_dropped + s.udp_refused_ports + s.udp_rate_limited + s.udp_refused_size
}

fn bytes_per_sec(v: f64) -> String {
    match v {
        v if v >= 1e9 => format!("{:.2} GB/s", v / 1e9),
        v if v >= 1e6 => format!("{:.2} MB/s", v / 1e6),
        v if v >= 1e3 => format!("{:.1} kB/s", v / 1e3),
        v => format!("{v:.0} B/s"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_line_shows_totals_and_rates() {
        let mut now = Snapshot {
            open: 3,
            pending_bytes: 10,
            ..Snapshot::default()
        };
        now.stats.tcp_accepted = 5;
        now.stats.tcp_closed = 2;
        now.stats.bytes_in = 4_000_000;
        now.stats.bytes_out = 2_000;
        now.stats.udp_datagrams_in = 30;
        now.stats.udp_rate_limited = 10;
        now.stats.tcp_cut_bytes = 77;
        now.stats.udp_rcvbuf_drops = 8;
        let line = stats_line(&now, &Snapshot::default(), 2.0);
        assert_eq!(
            line,
            "stats: conns 3 open, 5 accepted, 2 closed, 0 rejected; \
             tcp in 2.00 MB/s out 1.0 kB/s cut 77 B; udp in 15/s out 0/s dropped 5/s \
             rcvbuf-dropped 4/s; tls handshakes 0 failed 0; faults 0; pending 10 B; accepting"
        );
    }

    #[test]
    fn totals_add_every_loop() {
        let live = Live::new(2);
        let mut a = Snapshot {
            open: 1,
            ..Snapshot::default()
        };
        a.stats.bytes_in = 7;
        let b = Snapshot {
            open: 2,
            accept_paused: true,
            ..Snapshot::default()
        };
        live.publish(0, a);
        live.publish(1, b);
        live.publish(5, b); // no such loop: ignored
        let t = live.total();
        assert_eq!((t.open, t.stats.bytes_in, t.accept_paused), (3, 7, true));
    }
}
