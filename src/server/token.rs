//! The token space: which mio `Token` names which source.
//!
//! A connection's token is its slab key, unchanged, so the hot path maps an
//! event to its connection with no arithmetic. Fixed sources (signal,
//! waker, listeners, UDP sockets) live at the top of the `usize` range,
//! where no slab key will ever reach.
//!
//! | token                     | source                 |
//! |---------------------------|------------------------|
//! | `0 ..= MAX_CONN_KEY`      | connection, slab key k |
//! | `TLS_BASE + k`            | TLS connection, key k  |
//! | `FAULT_OFFSET + ...`      | the same two, with `--fault` |
//! | `GATE_BASE + k`           | connection awaiting its PROXY header, key k |
//! | `UDP_BASE + i`            | UDP socket i           |
//! | `LISTENER_BASE + i`       | TCP listener i         |
//! | `METRICS_CLIENT_BASE + i` | metrics HTTP client i  |
//! | `METRICS` (`usize::MAX - 2`) | metrics listener    |
//! | `WAKER` (`usize::MAX - 1`)| the stop handle        |
//! | `SIGNAL` (`usize::MAX`)   | SIGINT / SIGTERM       |

use mio::Token;

/// SIGINT and SIGTERM, delivered through signal-hook-mio.
pub const SIGNAL: Token = Token(usize::MAX);
/// The `Waker` that a `ServerHandle` uses to stop the loop from another thread.
pub const WAKER: Token = Token(usize::MAX - 1);
/// The `--metrics` listener.
pub const METRICS: Token = Token(usize::MAX - 2);
/// The most metrics clients at once: the tokens between the listeners
/// and `METRICS`.
pub const MAX_METRICS_CLIENTS: usize = 12;
const METRICS_CLIENT_BASE: usize = usize::MAX - 2 - MAX_METRICS_CLIENTS;
/// The most listeners, and separately the most UDP sockets, one loop takes.
pub const MAX_SOCKETS: usize = 1 << 16;
const LISTENER_BASE: usize = usize::MAX - 16 - MAX_SOCKETS;
const UDP_BASE: usize = LISTENER_BASE - MAX_SOCKETS;
/// The size of each connection kind's token range.
const RANGE: usize = usize::MAX / 8;
/// Where the TLS connections' tokens begin: their slab is a second one,
/// so that a plain connection pays nothing for TLS, not even a byte.
const TLS_BASE: usize = RANGE;
/// With `--fault`, connections live in tables of their own, whose tokens
/// are the plain and TLS ones moved up by this much.
const FAULT_OFFSET: usize = 2 * RANGE;
/// Where the tokens of connections still awaiting a PROXY header begin.
const GATE_BASE: usize = 4 * RANGE;
/// The largest slab key that can be a connection's token (of each kind).
pub const MAX_CONN_KEY: usize = RANGE - 1;

/// What a token names.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// The connection with this slab key.
    Conn(usize),
    /// The TLS connection with this key in the TLS slab.
    TlsConn(usize),
    /// A plain connection of the fault table (`--fault`).
    FaultConn(usize),
    /// A TLS connection of the fault table (`--fault`).
    FaultTlsConn(usize),
    /// The connection with this key among those awaiting a PROXY header.
    Gate(usize),
    /// TCP listener number i.
    Listener(usize),
    /// UDP socket number i.
    Udp(usize),
    /// The signal pipe.
    Signal,
    /// The stop handle's waker.
    Waker,
    /// The metrics listener.
    Metrics,
    /// Metrics client number i.
    MetricsClient(usize),
    /// A token nothing was registered with.
    Unknown,
}

/// The token for the connection with slab key `key` (`key <= MAX_CONN_KEY`).
pub fn from_key(key: usize) -> Token {
    debug_assert!(key <= MAX_CONN_KEY);
    Token(key)
}

/// The token for the TLS connection with key `key` (`key <= MAX_CONN_KEY`).
pub fn from_tls_key(key: usize) -> Token {
    debug_assert!(key <= MAX_CONN_KEY);
    Token(TLS_BASE + key)
}

/// `token`, for the same key in the fault tables.
pub fn with_faults(token: Token) -> Token {
    Token(token.0 + FAULT_OFFSET)
}

/// The token for gate entry `key` (`key <= MAX_CONN_KEY`).
pub fn from_gate_key(key: usize) -> Token {
    debug_assert!(key <= MAX_CONN_KEY);
    Token(GATE_BASE + key)
}

/// The token for listener `i` (`i < MAX_SOCKETS`).
pub fn listener(i: usize) -> Token {
    debug_assert!(i < MAX_SOCKETS);
    Token(LISTENER_BASE + i)
}

/// The token for UDP socket `i` (`i < MAX_SOCKETS`).
pub fn udp(i: usize) -> Token {
    debug_assert!(i < MAX_SOCKETS);
    Token(UDP_BASE + i)
}

/// The token for metrics client `i` (`i < MAX_METRICS_CLIENTS`).
pub fn metrics_client(i: usize) -> Token {
    debug_assert!(i < MAX_METRICS_CLIENTS);
    Token(METRICS_CLIENT_BASE + i)
}

/// Names the source behind `token`.
pub fn classify(token: Token) -> Source {
    match token.0 {
        k if k <= MAX_CONN_KEY => Source::Conn(k),
        t if (TLS_BASE..TLS_BASE + MAX_CONN_KEY).contains(&t) => Source::TlsConn(t - TLS_BASE),
        t if (FAULT_OFFSET..FAULT_OFFSET + MAX_CONN_KEY).contains(&t) => {
            Source::FaultConn(t - FAULT_OFFSET)
        }
        t if (FAULT_OFFSET + TLS_BASE..FAULT_OFFSET + TLS_BASE + MAX_CONN_KEY).contains(&t) => {
            Source::FaultTlsConn(t - FAULT_OFFSET - TLS_BASE)
        }
        t if (GATE_BASE..GATE_BASE + MAX_CONN_KEY).contains(&t) => Source::Gate(t - GATE_BASE),
        t if t == SIGNAL.0 => Source::Signal,
        t if t == WAKER.0 => Source::Waker,
        t if t == METRICS.0 => Source::Metrics,
        t if (METRICS_CLIENT_BASE..METRICS_CLIENT_BASE + MAX_METRICS_CLIENTS).contains(&t) => {
            Source::MetricsClient(t - METRICS_CLIENT_BASE)
        }
        t if (UDP_BASE..UDP_BASE + MAX_SOCKETS).contains(&t) => Source::Udp(t - UDP_BASE),
        t if (LISTENER_BASE..LISTENER_BASE + MAX_SOCKETS).contains(&t) => {
            Source::Listener(t - LISTENER_BASE)
        }
        _ => Source::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_token_maps_back_to_its_source() {
        for k in [0, 1, 4095, MAX_CONN_KEY] {
            assert_eq!(classify(from_key(k)), Source::Conn(k));
        }
        for k in [0, 1, 4095, MAX_CONN_KEY - 1] {
            assert_eq!(classify(from_tls_key(k)), Source::TlsConn(k));
            assert_eq!(classify(from_gate_key(k)), Source::Gate(k));
            assert_eq!(classify(with_faults(from_key(k))), Source::FaultConn(k));
            assert_eq!(
                classify(with_faults(from_tls_key(k))),
                Source::FaultTlsConn(k)
            );
        }
        for i in [0, 1, MAX_SOCKETS - 1] {
            assert_eq!(classify(listener(i)), Source::Listener(i));
            assert_eq!(classify(udp(i)), Source::Udp(i));
        }
        assert_eq!(classify(SIGNAL), Source::Signal);
        assert_eq!(classify(WAKER), Source::Waker);
        assert_eq!(classify(METRICS), Source::Metrics);
        for i in [0, MAX_METRICS_CLIENTS - 1] {
            assert_eq!(classify(metrics_client(i)), Source::MetricsClient(i));
        }
        assert_eq!(
            classify(Token(listener(MAX_SOCKETS - 1).0 + 1)),
            Source::Unknown
        );
    }

    #[test]
    fn ranges_do_not_overlap() {
        assert!(MAX_CONN_KEY < from_tls_key(0).0);
        assert!(from_tls_key(MAX_CONN_KEY - 1).0 < with_faults(from_key(0)).0);
        assert!(with_faults(from_tls_key(MAX_CONN_KEY - 1)).0 < from_gate_key(0).0);
        assert!(from_gate_key(MAX_CONN_KEY - 1).0 < udp(0).0);
        assert!(udp(MAX_SOCKETS - 1).0 < listener(0).0);
        assert!(listener(MAX_SOCKETS - 1).0 < metrics_client(0).0);
        assert!(metrics_client(MAX_METRICS_CLIENTS - 1).0 < METRICS.0);
    }
}
