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

/// Most reply bytes held by a delay at once.
const HOLD_CAP: usize = 8 << 20;

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
    held_bytes: usize,
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
            held_bytes: 0,
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
                if self.held_bytes + reply.len() > HOLD_CAP {
                    stats.udp_replies_dropped += 1;
                    return Fate::Drop;
                }
                count(stats, &FaultKind::Delay(d));
                self.held_bytes += reply.len();
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
                self.held_bytes -= bytes.len();
                due.push((i, to, bytes));
            }
        }
        due
    }

    /// Replies still held (shutdown: they are dropped).
    pub fn held(&self) -> usize {
        self.held.len()
    }
}
