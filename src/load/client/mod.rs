//! The generator's clients: one TCP connection ([`tcp`]) or one connected
//! UDP socket ([`udp`]) each, and what both share with the loop
//! ([`contract`]). A client sends as its pace allows, checks every reply
//! and counts into the loop's tally; the `Poll`, the slab, the schedule
//! and connecting belong to the loop.

pub mod contract;
pub mod tcp;
pub mod udp;
