//! What the server answers: the `Service` interface and the built-in `Mode`s.
//!
//! A service is pure: it sees bytes and returns bytes, and never touches a
//! socket, the poll or a clock of its own. The connection code in
//! `server::conn` and the datagram code in `server::udp` do the IO and ask a
//! service what to send. Transforms work in place on the loop's scratch
//! buffer, so the common path copies nothing and allocates nothing.

use std::fmt;
use std::str::FromStr;

/// What to do with bytes a TCP peer sent, after `Service::on_data` ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Send the (possibly transformed in place) bytes back to the peer.
    Same,
    /// Send nothing: the bytes were consumed.
    Nothing,
}

/// A protocol the server speaks, as pure byte transforms.
///
/// Implement it to plug a new protocol into the server; pass it to
/// [`crate::server::ServerConfig::service`]. The server guarantees that it
/// calls these methods from the loop's one thread, but a `Service` is shared
/// between loops when the server runs several, hence `Send + Sync`.
pub trait Service: Send + Sync + fmt::Debug {
    /// A short lowercase name for logs (`echo`, `upper`).
    fn name(&self) -> &str;

    /// Bytes arrived on a TCP connection: transform `data` in place and say
    /// whether to send it back. A reply is never longer than its request,
    /// which is what lets the server work in place.
    fn on_data(&self, data: &mut [u8]) -> Reply;

    /// A datagram arrived: the request is `buf[..len]`, and `buf` has room
    /// for the largest datagram. Write the reply into `buf` and return its
    /// length, or `None` for no reply. The server drops a reply longer than
    /// its request unless the operator allowed amplification.
    ///
    /// The default treats a datagram like TCP data.
    fn on_datagram(&self, buf: &mut [u8], len: usize) -> Option<usize> {
        match self.on_data(&mut buf[..len]) {
            Reply::Same => Some(len),
            Reply::Nothing => None,
        }
    }
}

/// The built-in services, chosen with `serve --mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Return every byte unchanged (RFC 862).
    #[default]
    Echo,
    /// Return bytes with ASCII `a`-`z` uppercased, like Python's `bytes.upper()`.
    Upper,
}

impl Mode {
    /// Every built-in mode, in the order `--help` lists them.
    pub const ALL: &'static [Mode] = &[Mode::Echo, Mode::Upper];

    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Upper => "upper",
        }
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The error for a `--mode` name that names no mode.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownMode(pub String);

impl fmt::Display for UnknownMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = Mode::ALL.iter().map(|m| m.as_str()).collect();
        write!(
            f,
            "unknown mode '{}' (expected one of: {})",
            self.0,
            names.join(", ")
        )
    }
}

impl std::error::Error for UnknownMode {}

impl FromStr for Mode {
    type Err = UnknownMode;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Mode::ALL
            .iter()
            .copied()
            .find(|m| m.as_str() == s)
            .ok_or_else(|| UnknownMode(s.to_string()))
    }
}

impl Service for Mode {
    fn name(&self) -> &str {
        self.as_str()
    }

    fn on_data(&self, data: &mut [u8]) -> Reply {
        match self {
            Mode::Echo => {}
            Mode::Upper => upper_in_place(data),
        }
        Reply::Same
    }
}

/// Uppercases ASCII `a`-`z` in place and leaves every other byte alone,
/// exactly as Python's `bytes.upper()` does.
///
/// ```
/// let mut line = *b"hello boy \xff\xe9!";
/// echo_reactor::mode::upper_in_place(&mut line);
/// assert_eq!(&line, b"HELLO BOY \xff\xe9!");
/// ```
pub fn upper_in_place(data: &mut [u8]) {
    // `make_ascii_uppercase` touches only a-z, which is the whole contract;
    // it also vectorises well.
    data.make_ascii_uppercase();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upper_changes_only_ascii_lowercase_letters() {
        let mut all: Vec<u8> = (0..=255).collect();
        upper_in_place(&mut all);
        for (i, &b) in all.iter().enumerate() {
            // Spelled out by code point, independent of the std helpers.
            let expected = match i as u8 {
                0x61..=0x7a => i as u8 - 0x20,
                other => other,
            };
            assert_eq!(b, expected, "byte {i:#04x}");
        }
    }

    #[test]
    fn echo_returns_bytes_unchanged() {
        let mut data = *b"Hello, \x00\xff world";
        assert_eq!(Mode::Echo.on_data(&mut data), Reply::Same);
        assert_eq!(&data, b"Hello, \x00\xff world");
    }

    #[test]
    fn datagram_reply_has_the_request_length() {
        let mut buf = [0u8; 16];
        buf[..5].copy_from_slice(b"hello");
        assert_eq!(Mode::Upper.on_datagram(&mut buf, 5), Some(5));
        assert_eq!(&buf[..5], b"HELLO");
        assert_eq!(Mode::Echo.on_datagram(&mut buf, 0), Some(0));
    }

    #[test]
    fn modes_parse_from_their_names_and_reject_others() {
        for m in Mode::ALL {
            assert_eq!(m.as_str().parse::<Mode>(), Ok(*m));
        }
        let err = "UPPER".parse::<Mode>().unwrap_err();
        assert!(err.to_string().contains("expected one of: echo, upper"));
    }
}
