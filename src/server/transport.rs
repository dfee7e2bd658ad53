//! What a transport tells the connection and its table: why a TLS
//! handshake failed ([`TlsCause`]) or how a fault ended the connection
//! ([`Ending`]), each carried inside the `io::Error` that closes it, and
//! that a handshake finished ([`TransportNews`]). A leaf of the server's
//! modules: the TLS and fault streams make these, the connection and the
//! table read them, and none of them has to know the others.

use std::fmt;
use std::io;

/// Why a TLS handshake did not finish, for the counters and the log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsCause {
    /// What came was not TLS (plaintext, garbage).
    NotTls,
    /// The peer refused us with an alert (our certificate, most often).
    PeerAlert,
    /// No version or cipher suite both sides accept.
    Incompatible,
    /// The peer closed before the handshake finished.
    Closed,
    /// `--tls-handshake-timeout` passed first.
    Timeout,
    /// Anything else rustls refused.
    Other,
}

impl TlsCause {
    /// The cause behind a session error.
    pub fn of(e: &rustls::Error) -> TlsCause {
        match e {
            rustls::Error::InvalidMessage(_) | rustls::Error::InappropriateMessage { .. } => {
                TlsCause::NotTls
            }
            rustls::Error::AlertReceived(_) => TlsCause::PeerAlert,
            rustls::Error::PeerIncompatible(_) => TlsCause::Incompatible,
            _ => TlsCause::Other,
        }
    }
}

impl fmt::Display for TlsCause {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsCause::NotTls => "not TLS",
            TlsCause::PeerAlert => "refused by the peer (alert)",
            TlsCause::Incompatible => "no common version or cipher",
            TlsCause::Closed => "peer closed during the handshake",
            TlsCause::Timeout => "handshake timeout",
            TlsCause::Other => "rejected",
        })
    }
}

/// The payload of the `io::Error` a failed handshake returns, so that the
/// connection closes with the cause rather than a bare `InvalidData`.
#[derive(Debug)]
pub struct TlsFailure(pub TlsCause);

impl fmt::Display for TlsFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "tls: {}", self.0)
    }
}

impl std::error::Error for TlsFailure {}

/// An error that closes a connection for `cause`.
pub fn failure(cause: TlsCause) -> io::Error {
    let kind = match cause {
        TlsCause::Closed => io::ErrorKind::UnexpectedEof,
        TlsCause::Timeout => io::ErrorKind::TimedOut,
        _ => io::ErrorKind::InvalidData,
    };
    io::Error::new(kind, TlsFailure(cause))
}

/// The TLS cause inside an error a `TlsStream` returned, if it is one.
pub fn cause_of(e: &io::Error) -> Option<TlsCause> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<TlsFailure>())
        .map(|f| f.0)
}

/// What a transport has to tell its table, once: a handshake finished,
/// or a fault ended the connection after a write the connection counted
/// as taken (so that it closes now, not at its next event).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TransportNews {
    /// The handshake finished with this protocol version (`TLSv1_3`).
    Handshaken(&'static str),
    /// A fault ended the connection.
    Ended(Ending),
}

/// How a connection ends after a reply, when a fault ends it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// FIN, then close.
    Close,
    /// RST.
    Reset,
}

/// The payload of the `io::Error` a fault stream returns once a fault
/// has ended the connection, so it closes for that reason.
#[derive(Debug)]
pub struct FaultEnd(pub Ending);

impl fmt::Display for FaultEnd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Ending::Close => f.write_str("fault: close after a reply"),
            Ending::Reset => f.write_str("fault: reset after a reply"),
        }
    }
}

impl std::error::Error for FaultEnd {}

/// The ending inside an error a fault stream returned, if it is one.
pub fn ending_of(e: &io::Error) -> Option<Ending> {
    e.get_ref()
        .and_then(|inner| inner.downcast_ref::<FaultEnd>())
        .map(|f| f.0)
}
