//! Per-source rate limiting for UDP: a token bucket per source address in a
//! table of bounded size. Pure: no IO, and time comes in as `now`.
//!
//! The table is bounded because its keys come from strangers: a flood with
//! spoofed source addresses must not grow memory without end. When the
//! table is full, buckets that have refilled completely are forgotten first
//! (a fresh bucket is full, so nothing is lost); if that is not enough, an
//! arbitrary eighth of the table goes. The server decides what to do with a
//! refused datagram (drop and count); this module only answers "may it pass".

use std::collections::HashMap;
use std::net::IpAddr;
use std::time::Instant;

/// Sources tracked at most, by default: 65,536 buckets of ~40 bytes.
pub const DEFAULT_MAX_SOURCES: usize = 1 << 16;

/// One source's allowance.
#[derive(Debug, Clone, Copy)]
struct Bucket {
    /// Datagrams it may send right now; at most the burst.
    tokens: f64,
    /// When `tokens` was last brought up to date.
    updated: Instant,
}

/// Token buckets keyed by source address: `rate` datagrams per second per
/// source, with bursts of up to one second's worth.
#[derive(Debug)]
pub struct RateLimiter {
    per_sec: f64,
    burst: f64,
    max_sources: usize,
    buckets: HashMap<IpAddr, Bucket>,
}

impl RateLimiter {
    /// A limiter allowing each source `per_sec` datagrams per second (at
    /// least 1), tracking at most `max_sources` sources (at least 1).
    pub fn new(per_sec: u32, max_sources: usize) -> Self {
        let per_sec = f64::from(per_sec.max(1));
        RateLimiter {
            per_sec,
            burst: per_sec,
            max_sources: max_sources.max(1),
            buckets: HashMap::new(),
        }
    }

    /// Takes one token from `source`'s bucket at `now`; false when it is
    /// empty, meaning the datagram should be dropped.
    pub fn allow(&mut self, source: IpAddr, now: Instant) -> bool {
        let source = canonical(source);
        if !self.buckets.contains_key(&source) && self.buckets.len() >= self.max_sources {
            self.make_room(now);
        }
        let (per_sec, burst) = (self.per_sec, self.burst);
        let bucket = self.buckets.entry(source).or_insert(Bucket {
            tokens: burst,
            updated: now,
        });
        let elapsed = now.saturating_duration_since(bucket.updated).as_secs_f64();
        bucket.tokens = (bucket.tokens + elapsed * per_sec).min(burst);
        bucket.updated = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    #[cfg(test)]
    /// Sources tracked now.
    pub fn len(&self) -> usize {
        self.buckets.len()
    }

    /// Forgets full buckets; if the table is still above 7/8 full, forgets
    /// arbitrary ones down to that. Runs only when the table is full, and
    /// frees at least an eighth, so its O(n) cost is amortised.
    fn make_room(&mut self, now: Instant) {
        let (per_sec, burst) = (self.per_sec, self.burst);
        self.buckets.retain(|_, b| {
            let elapsed = now.saturating_duration_since(b.updated).as_secs_f64();
            b.tokens + elapsed * per_sec < burst
        });
        let target = self.max_sources - self.max_sources / 8 - 1;
        let mut excess = self.buckets.len().saturating_sub(target);
        self.buckets.retain(|_, _| {
            if excess > 0 {
                excess -= 1;
                false
            } else {
                true
            }
        });
    }
}

/// An IPv4 peer reached over a dual-stack socket is the same source as
/// over IPv4.
fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
        v4 => v4,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_source_gets_a_burst_of_one_seconds_worth_then_refills() {
        let mut limit = RateLimiter::new(2, 16);
        let ip = "192.0.2.1".parse().unwrap();
        let t0 = Instant::now();
        assert!(limit.allow(ip, t0) && limit.allow(ip, t0));
        assert!(
            !limit.allow(ip, t0),
            "a burst of one second's worth, no more"
        );
        assert!(
            limit.allow(ip, t0 + Duration::from_millis(500)),
            "refills at 2/s"
        );
    }

    fn ip(i: u32) -> IpAddr {
        IpAddr::V4(i.into())
    }

    #[test]
    fn each_source_has_its_own_bucket() {
        let mut l = RateLimiter::new(3, 100);
        let t = Instant::now();
        let passed = (0..10).filter(|_| l.allow(ip(1), t)).count();
        assert_eq!(passed, 3);
        assert!(
            l.allow(ip(2), t),
            "another source is not limited by the first"
        );
    }

    #[test]
    fn steady_rate_passes_and_excess_is_refused() {
        let mut l = RateLimiter::new(100, 100);
        let t0 = Instant::now();
        // 1000 datagrams/s for 2 s: the burst (100) plus 100/s pass.
        let passed = (0..2000)
            .filter(|i| l.allow(ip(1), t0 + Duration::from_millis(*i)))
            .count();
        assert!((290..=310).contains(&passed), "passed {passed}");
    }

    #[test]
    fn table_stays_bounded_under_many_sources() {
        let mut l = RateLimiter::new(10, 64);
        let t = Instant::now();
        for i in 0..10_000 {
            assert!(l.allow(ip(i), t), "a new source starts with a full bucket");
            assert!(l.len() <= 64);
        }
    }

    #[test]
    fn full_buckets_are_evicted_before_busy_ones() {
        let mut l = RateLimiter::new(10, 8);
        let t0 = Instant::now();
        // Source 0 drains its bucket; sources 1..8 send once, long ago.
        while l.allow(ip(0), t0) {}
        for i in 1..8 {
            l.allow(ip(i), t0 - Duration::from_secs(5));
        }
        assert_eq!(l.len(), 8);
        assert!(l.allow(ip(100), t0));
        assert!(!l.allow(ip(0), t0), "the drained bucket was kept");
        assert!(l.len() <= 8);
    }

    #[test]
    fn ipv4_mapped_addresses_share_the_ipv4_bucket() {
        let mut l = RateLimiter::new(1, 8);
        let t = Instant::now();
        assert!(l.allow("192.0.2.7".parse().unwrap(), t));
        assert!(!l.allow("::ffff:192.0.2.7".parse().unwrap(), t));
    }
}
