//! The UDP faults (`--fault drop|delay|corrupt`): what becomes of one
//! reply datagram, and the replies held back by a delay, in the order
//! they fall due (one delay for all, so arrival order is due order: a
//! queue, not a heap). Held replies are bounded; past the bound a reply
//! that should wait is dropped and counted, as UDP drops anything it
//! cannot hold.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use crate::server::fault::{count, Draws, FaultKind, FaultPlan};
use crate::server::observe::Stats;

/// Most memory held by a delay at once: payload bytes plus
/// [`HELD_OVERHEAD`] per reply.
const HOLD_CAP: usize = 8 << 20;

/// What one held reply costs beside its payload: the queue entry and the
/// allocation's bookkeeping. Without it a flood of empty datagrams would
/// hold millions of entries while the payload count stayed at zero.
const HELD_OVERHEAD: usize = std::mem::size_of::<(Instant, usize, SocketAddr, Vec<u8>)>() + 16;

/// What to do with one reply.
pub(super) enum Fate {
    /// Send it now.
    Send,
    /// Do not send it.
    Drop,
    /// Held; sent when due.
    Held,
}

/// The UDP faults of a plan, and the replies a delay holds.
pub(super) struct UdpFaults {
    drop: Option<f64>,
    corrupt: Option<f64>,
    delay: Option<(Duration, f64)>,
    draws: Draws,
    /// (due, socket, to, reply), oldest first.
    held: VecDeque<(Instant, usize, SocketAddr, Vec<u8>)>,
    /// Payload plus [`HELD_OVERHEAD`] per held reply; never above [`HOLD_CAP`].
    held_cost: usize,
}

impl UdpFaults {
    /// The UDP part of `plan`, if it has one, drawing from `seed`.
    pub fn new(plan: &FaultPlan, seed: u64) -> Option<UdpFaults> {
        let mut f = UdpFaults {
            drop: None,
            corrupt: None,
            delay: None,
            draws: Draws::new(seed),
            held: VecDeque::new(),
            held_cost: 0,
        };
        for fault in &plan.faults {
            match fault.kind {
                FaultKind::Drop => f.drop = Some(fault.probability),
                FaultKind::Corrupt => f.corrupt = Some(fault.probability),
                FaultKind::Delay(d) => f.delay = Some((d, fault.probability)),
                _ => {}
            }
        }
        (f.drop.is_some() || f.corrupt.is_some() || f.delay.is_some()).then_some(f)
    }

    /// Decides the fate of `reply`, to `to` through socket `i`, and
    /// corrupts it in place when so drawn.
    pub fn on_reply(
        &mut self,
        i: usize,
        reply: &mut [u8],
        to: SocketAddr,
        now: Instant,
        stats: &mut Stats,
    ) -> Fate {
        if self.drop.is_some_and(|p| self.draws.chance(p)) {
            count(stats, &FaultKind::Drop);
            return Fate::Drop;
        }
        if !reply.is_empty() && self.corrupt.is_some_and(|p| self.draws.chance(p)) {
            let at = self.draws.below(reply.len());
            reply[at] ^= 1 << self.draws.below(8);
            count(stats, &FaultKind::Corrupt);
        }
        match self.delay {
            Some((d, p)) if self.draws.chance(p) => {
                let cost = reply.len() + HELD_OVERHEAD;
                if self.held_cost + cost > HOLD_CAP {
                    stats.udp_replies_dropped += 1;
                    return Fate::Drop;
                }
                count(stats, &FaultKind::Delay(d));
                self.held_cost += cost;
                self.held.push_back((now + d, i, to, reply.to_vec()));
                Fate::Held
            }
            _ => Fate::Send,
        }
    }

    /// When the oldest held reply falls due.
    pub fn next_due(&self) -> Option<Instant> {
        self.held.front().map(|(due, ..)| *due)
    }

    /// The held replies due by `now`, oldest first.
    pub fn take_due(&mut self, now: Instant) -> Vec<(usize, SocketAddr, Vec<u8>)> {
        let mut due = Vec::new();
        while self.held.front().is_some_and(|(at, ..)| *at <= now) {
            if let Some((_, i, to, bytes)) = self.held.pop_front() {
                self.held_cost -= bytes.len() + HELD_OVERHEAD;
                due.push((i, to, bytes));
            }
        }
        due
    }

    /// Drops the replies still held (shutdown) and says how many.
    pub fn drop_held(&mut self) -> usize {
        let n = self.held.len();
        self.held.clear();
        self.held_cost = 0;
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::server::fault::Fault;

    fn delay_plan() -> FaultPlan {
        FaultPlan {
            faults: vec![Fault {
                kind: FaultKind::Delay(Duration::from_secs(1)),
                probability: 1.0,
            }],
            seed: 1,
        }
    }

    #[test]
    fn empty_replies_count_against_the_hold_cap() {
        let mut f = UdpFaults::new(&delay_plan(), 1).expect("a delay is a UDP fault");
        let mut stats = Stats::default();
        let to: SocketAddr = ([127, 0, 0, 1], 9).into();
        let now = Instant::now();
        let mut held = 0;
        for _ in 0..(2 * HOLD_CAP / HELD_OVERHEAD) {
            if let Fate::Held = f.on_reply(0, &mut [], to, now, &mut stats) {
                held += 1;
            }
        }
        assert!(held > 0 && held <= HOLD_CAP / HELD_OVERHEAD, "held {held}");
        assert_eq!(
            stats.udp_replies_dropped as usize,
            2 * HOLD_CAP / HELD_OVERHEAD - held
        );
        assert_eq!(f.drop_held(), held);
        assert_eq!(f.next_due(), None);
    }
}
