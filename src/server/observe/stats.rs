//! Counters the loop keeps about its work, and the final report.
//!
//! The loop owns a plain `Stats` and bumps its fields directly: no atomics,
//! no locks, nothing allocated per event. Whoever wants the figures gets a
//! copy when the loop ends (or, for several loops, the sum of their copies).

use std::fmt;

/// What one server loop has done since it started. New counters may be
/// added in any release: read the fields, start from `Stats::default()`.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Stats {
    /// TCP connections accepted and served.
    pub tcp_accepted: u64,
    /// TCP connections closed, for any reason.
    pub tcp_closed: u64,
    /// Of those closed: reset by the peer or broken pipe.
    pub tcp_resets: u64,
    /// Of those closed: an IO error other than a reset.
    pub tcp_io_errors: u64,
    /// Of those closed: still open when shutdown ran out of time (cut).
    pub tcp_forced_closes: u64,
    /// Bytes owed to peers that the shutdown deadline threw away: output
    /// still in our buffers when it passed, and the kernel's unsent output
    /// where the final close had to be a reset. Not part of `bytes_out`,
    /// which counts only what the kernel accepted.
    pub tcp_cut_bytes: u64,
    /// Of those closed: no traffic either way for `--idle-timeout`.
    pub tcp_idle_timeouts: u64,
    /// Of those closed: pending output did not move for `--write-timeout`.
    pub tcp_write_timeouts: u64,
    /// Connections accepted and closed at once because the cap was reached.
    pub tcp_rejected: u64,
    /// `accept` failures other than an empty backlog.
    pub accept_errors: u64,
    /// TCP payload bytes read.
    pub bytes_in: u64,
    /// TCP payload bytes written to the kernel (never decreases).
    pub bytes_out: u64,
    /// Of `bytes_out`, what resets threw away before the peer acknowledged
    /// it (also part of `tcp_cut_bytes`): what peers got is `bytes_out`
    /// minus this, the `out` of the final line.
    pub tcp_out_dropped: u64,
    /// UDP datagrams received.
    pub udp_datagrams_in: u64,
    /// UDP reply datagrams sent.
    pub udp_datagrams_out: u64,
    /// UDP replies dropped (socket full, or not allowed to be sent).
    pub udp_replies_dropped: u64,
    /// UDP receive or send errors.
    pub udp_errors: u64,
    /// UDP datagrams dropped unanswered because their source port is 0, a
    /// simple-service port (7, 9, 13, 19, 37) or one of the server's own
    /// UDP ports: loop and reflection guard.
    pub udp_refused_ports: u64,
    /// UDP datagrams dropped unanswered by `--udp-rate-limit`.
    pub udp_rate_limited: u64,
    /// UDP datagrams left unanswered because the answer would be longer
    /// than the request (daytime to a short datagram) and amplification is
    /// not allowed.
    pub udp_refused_size: u64,
    /// UDP datagrams the kernel dropped at our sockets before we read
    /// them, the receive buffer full: not bumped but read from the kernel
    /// (`SO_MEMINFO`) when figures are wanted and before the sockets close.
    pub udp_rcvbuf_drops: u64,
    /// TLS handshakes that finished.
    pub tls_handshakes: u64,
    /// TLS handshakes that did not, by cause: not TLS (plaintext,
    /// garbage), refused by the peer's alert, no common version or
    /// cipher, peer closed, `--tls-handshake-timeout`, anything else.
    pub tls_failed_not_tls: u64,
    /// See `tls_failed_not_tls`.
    pub tls_failed_peer_alert: u64,
    /// See `tls_failed_not_tls`.
    pub tls_failed_incompatible: u64,
    /// See `tls_failed_not_tls`.
    pub tls_failed_closed: u64,
    /// See `tls_failed_not_tls`.
    pub tls_failed_timeout: u64,
    /// See `tls_failed_not_tls`.
    pub tls_failed_other: u64,
    /// Connections whose PROXY header was read (`--proxy-protocol`).
    pub proxy_headers: u64,
    /// Connections closed unanswered for want of a valid PROXY header: none,
    /// a malformed or too long one, or none within `--proxy-timeout`.
    pub proxy_refused: u64,
    /// Faults injected (`--fault`), by kind: replies delayed, connections
    /// paced, replies sliced, connections closed or reset after a reply,
    /// connections stalled, replies corrupted, UDP replies dropped.
    pub faults_delay: u64,
    /// See `faults_delay`.
    pub faults_rate: u64,
    /// See `faults_delay`.
    pub faults_slice: u64,
    /// See `faults_delay`.
    pub faults_close: u64,
    /// See `faults_delay`.
    pub faults_reset: u64,
    /// See `faults_delay`.
    pub faults_stall: u64,
    /// See `faults_delay`.
    pub faults_corrupt: u64,
    /// See `faults_delay`.
    pub faults_drop: u64,
}

impl Stats {
    /// Counts one TLS handshake that failed for `cause`.
    pub(crate) fn count_tls_failure(&mut self, cause: crate::server::transport::TlsCause) {
        use crate::server::transport::TlsCause;
        *match cause {
            TlsCause::NotTls => &mut self.tls_failed_not_tls,
            TlsCause::PeerAlert => &mut self.tls_failed_peer_alert,
            TlsCause::Incompatible => &mut self.tls_failed_incompatible,
            TlsCause::Closed => &mut self.tls_failed_closed,
            TlsCause::Timeout => &mut self.tls_failed_timeout,
            TlsCause::Other => &mut self.tls_failed_other,
        } += 1;
    }

    /// TCP payload bytes written and not thrown away by a reset: what
    /// peers got, give or take what was still in flight at a reset.
    pub fn delivered(&self) -> u64 {
        self.bytes_out.saturating_sub(self.tcp_out_dropped)
    }

    /// Faults injected, every kind.
    pub fn faults(&self) -> u64 {
        self.faults_delay
            + self.faults_rate
            + self.faults_slice
            + self.faults_close
            + self.faults_reset
            + self.faults_stall
            + self.faults_corrupt
            + self.faults_drop
    }

    /// TLS handshakes that failed, for every cause.
    pub fn tls_failed(&self) -> u64 {
        self.tls_failed_not_tls
            + self.tls_failed_peer_alert
            + self.tls_failed_incompatible
            + self.tls_failed_closed
            + self.tls_failed_timeout
            + self.tls_failed_other
    }
}

impl Stats {
    /// Adds another loop's counters to these.
    pub fn merge(&mut self, other: &Stats) {
        let Stats {
            tcp_accepted,
            tcp_closed,
            tcp_resets,
            tcp_io_errors,
            tcp_forced_closes,
            tcp_cut_bytes,
            tcp_idle_timeouts,
            tcp_write_timeouts,
            tcp_rejected,
            accept_errors,
            bytes_in,
            bytes_out,
            tcp_out_dropped,
            udp_datagrams_in,
            udp_datagrams_out,
            udp_replies_dropped,
            udp_errors,
            udp_refused_ports,
            udp_rate_limited,
            udp_refused_size,
            udp_rcvbuf_drops,
            tls_handshakes,
            tls_failed_not_tls,
            tls_failed_peer_alert,
            tls_failed_incompatible,
            tls_failed_closed,
            tls_failed_timeout,
            tls_failed_other,
            proxy_headers,
            proxy_refused,
            faults_delay,
            faults_rate,
            faults_slice,
            faults_close,
            faults_reset,
            faults_stall,
            faults_corrupt,
            faults_drop,
        } = *other;
        self.tcp_accepted += tcp_accepted;
        self.tcp_closed += tcp_closed;
        self.tcp_resets += tcp_resets;
        self.tcp_io_errors += tcp_io_errors;
        self.tcp_forced_closes += tcp_forced_closes;
        self.tcp_cut_bytes += tcp_cut_bytes;
        self.tcp_idle_timeouts += tcp_idle_timeouts;
        self.tcp_write_timeouts += tcp_write_timeouts;
        self.tcp_rejected += tcp_rejected;
        self.accept_errors += accept_errors;
        self.bytes_in += bytes_in;
        self.bytes_out += bytes_out;
        self.tcp_out_dropped += tcp_out_dropped;
        self.udp_datagrams_in += udp_datagrams_in;
        self.udp_datagrams_out += udp_datagrams_out;
        self.udp_replies_dropped += udp_replies_dropped;
        self.udp_errors += udp_errors;
        self.udp_refused_ports += udp_refused_ports;
        self.udp_rate_limited += udp_rate_limited;
        self.udp_refused_size += udp_refused_size;
        self.udp_rcvbuf_drops += udp_rcvbuf_drops;
        self.tls_handshakes += tls_handshakes;
        self.tls_failed_not_tls += tls_failed_not_tls;
        self.tls_failed_peer_alert += tls_failed_peer_alert;
        self.tls_failed_incompatible += tls_failed_incompatible;
        self.tls_failed_closed += tls_failed_closed;
        self.tls_failed_timeout += tls_failed_timeout;
        self.tls_failed_other += tls_failed_other;
        self.proxy_headers += proxy_headers;
        self.proxy_refused += proxy_refused;
        self.faults_delay += faults_delay;
        self.faults_rate += faults_rate;
        self.faults_slice += faults_slice;
        self.faults_close += faults_close;
        self.faults_reset += faults_reset;
        self.faults_stall += faults_stall;
        self.faults_corrupt += faults_corrupt;
        self.faults_drop += faults_drop;
    }
}

impl fmt::Display for Stats {
    /// One line, grep-friendly: `tcp accepted 3 closed 3 (reset 0, error 0,
    /// forced 0, idle 0, stalled 0) rejected 0, bytes in 12 out 12; udp in 2
    /// out 2 dropped 0 errors 0 refused-port 0 rate-limited 0
    /// refused-size 0 rcvbuf-dropped 0`. Every
    /// rejection, drop and forced close has its place here.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "tcp accepted {} closed {} (reset {}, error {}, forced {}, cut {} B, idle {}, stalled {}) \
             rejected {}, bytes in {} out {}; \
             udp in {} out {} dropped {} errors {} refused-port {} rate-limited {} \
             refused-size {} rcvbuf-dropped {}; \
             tls handshakes {} failed {} (not-tls {}, peer-alert {}, incompatible {}, \
             closed {}, timeout {}, other {}); proxy headers {} refused {}; \
             faults: delay {}, rate {}, slice {}, close {}, reset {}, stall {}, corrupt {}, drop {}",
            self.tcp_accepted,
            self.tcp_closed,
            self.tcp_resets,
            self.tcp_io_errors,
            self.tcp_forced_closes,
            self.tcp_cut_bytes,
            self.tcp_idle_timeouts,
            self.tcp_write_timeouts,
            self.tcp_rejected,
            self.bytes_in,
            self.delivered(),
            self.udp_datagrams_in,
            self.udp_datagrams_out,
            self.udp_replies_dropped,
            self.udp_errors,
            self.udp_refused_ports,
            self.udp_rate_limited,
            self.udp_refused_size,
            self.udp_rcvbuf_drops,
            self.tls_handshakes,
            self.tls_failed(),
            self.tls_failed_not_tls,
            self.tls_failed_peer_alert,
            self.tls_failed_incompatible,
            self.tls_failed_closed,
            self.tls_failed_timeout,
            self.tls_failed_other,
            self.proxy_headers,
            self.proxy_refused,
            self.faults_delay,
            self.faults_rate,
            self.faults_slice,
            self.faults_close,
            self.faults_reset,
            self.faults_stall,
            self.faults_corrupt,
            self.faults_drop,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_rejection_drop_and_forced_close_shows_in_the_report() {
        let s = Stats {
            tcp_forced_closes: 11,
            tcp_idle_timeouts: 12,
            tcp_write_timeouts: 13,
            tcp_rejected: 14,
            udp_replies_dropped: 15,
            udp_refused_ports: 16,
            udp_rate_limited: 17,
            udp_refused_size: 18,
            udp_rcvbuf_drops: 19,
            ..Stats::default()
        };
        let line = s.to_string();
        for needle in [
            "forced 11",
            "idle 12",
            "stalled 13",
            "rejected 14",
            "dropped 15",
            "refused-port 16",
            "rate-limited 17",
            "refused-size 18",
            "rcvbuf-dropped 19",
        ] {
            assert!(line.contains(needle), "{needle} missing from: {line}");
        }
    }

    #[test]
    fn merge_adds_every_counter() {
        let a = Stats {
            tcp_accepted: 1,
            bytes_in: 10,
            udp_errors: 3,
            ..Stats::default()
        };
        let mut b = a;
        b.merge(&a);
        assert_eq!((b.tcp_accepted, b.bytes_in, b.udp_errors), (2, 20, 6));
        assert!(b.to_string().contains("bytes in 20"));
    }
}
