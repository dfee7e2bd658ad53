//! What the server answers: the `Service` interface and the built-in `Mode`s.
//!
//! A service decides what to send; it never touches a socket or the poll.
//! The connection code in `server::conn` and the datagram code in
//! `server::udp` do the IO and ask a service at four moments: a connection
//! opened ([`Service::on_connect`]), bytes arrived ([`Service::on_data`]),
//! the socket can take more of a stream ([`Service::fill`]), a datagram
//! arrived ([`Service::on_datagram`]). Transforms work in place on the
//! loop's scratch buffer, so the common path copies nothing and allocates
//! nothing. The clock services read the wall clock; nothing else here has
//! state beyond a counter.
//!
//! A new protocol is one file beside this one (see `chargen.rs`,
//! `clock.rs`), a variant of [`Mode`], and its name in [`Mode::ALL`]; or,
//! from outside the crate, any type implementing [`Service`] handed to
//! [`crate::server::ServerConfig::service`] (see `examples/custom_mode.rs`).

pub mod chargen;
pub mod clock;

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

/// What a TCP connection gets as soon as it is accepted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Opening {
    /// Nothing: wait for the peer to speak (echo, upper, discard, chargen;
    /// chargen's stream comes from [`Service::fill`]).
    Listen,
    /// Send the first `n` bytes of the buffer, then close with FIN
    /// (daytime, time).
    SendAndClose(usize),
}

/// A protocol the server speaks.
///
/// Implement it to plug a new protocol into the server; pass it to
/// [`crate::server::ServerConfig::service`]. The server calls these methods
/// from the loop's one thread, but a `Service` is shared between loops when
/// the server runs several, hence `Send + Sync`. Only
/// [`Service::name`] and [`Service::on_data`] are required; the defaults
/// make an echo-like service.
pub trait Service: Send + Sync + fmt::Debug {
    /// A short lowercase name for logs (`echo`, `upper`).
    fn name(&self) -> &str;

    /// Bytes arrived on a TCP connection: transform `data` in place and say
    /// whether to send it back. A reply is never longer than its request,
    /// which is what lets the server work in place.
    fn on_data(&self, data: &mut [u8]) -> Reply;

    /// A TCP connection was just accepted. `out` (64 KiB) is where an
    /// opening message goes.
    fn on_connect(&self, out: &mut [u8]) -> Opening {
        let _ = out;
        Opening::Listen
    }

    /// Whether this service streams with [`Service::fill`]. The server
    /// asks once, when it starts, and calls `fill` only if so: the
    /// writable events of every other service cost nothing extra.
    fn streams(&self) -> bool {
        false
    }

    /// For a service that [`streams`](Service::streams) (chargen): the
    /// socket can take more and nothing is pending. Fill `out` with the
    /// stream from byte `offset` (what this connection has sent so far) and
    /// return how many bytes are ready; 0 means nothing to stream now. The
    /// server calls this again as the peer reads, within the loop's
    /// fairness budget, and keeps nothing the kernel refused: it asks again
    /// from the new offset. A stream is therefore exactly as fast as its
    /// reader and costs no memory while the reader is slow.
    fn fill(&self, offset: u64, out: &mut [u8]) -> usize {
        let _ = (offset, out);
        0
    }

    /// A datagram arrived: the request is `buf[..len]`. Write the reply
    /// into `buf` and return its length, or `None` for no reply. `buf` is
    /// cut to the largest reply the server may send: the request's length
    /// (or [`Service::udp_reply_floor`] if larger), unless the operator
    /// allowed amplification, when it holds the largest datagram. A reply
    /// that fits is sent; anything else is dropped and counted.
    ///
    /// The default treats a datagram like TCP data.
    fn on_datagram(&self, buf: &mut [u8], len: usize) -> Option<usize> {
        datagram_as_data(self, &mut buf[..len])
    }

    /// A reply this short may answer even a shorter request, amplification
    /// or not. 0 by default; RFC 868's time answers an empty request with
    /// 4 bytes, which amplify nothing worth having.
    fn udp_reply_floor(&self) -> usize {
        0
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
    /// Read and count everything, send nothing (RFC 863).
    Discard,
    /// Stream printable ASCII lines as fast as the peer reads (RFC 864).
    Chargen,
    /// Send one human-readable date-time line, then close (RFC 867).
    Daytime,
    /// Send the 4-byte big-endian seconds since 1900, then close (RFC 868).
    Time,
}

impl Mode {
    /// Every built-in mode, in the order `--help` lists them.
    pub const ALL: &'static [Mode] = &[
        Mode::Echo,
        Mode::Upper,
        Mode::Discard,
        Mode::Chargen,
        Mode::Daytime,
        Mode::Time,
    ];

    /// The name used on the command line.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Echo => "echo",
            Mode::Upper => "upper",
            Mode::Discard => "discard",
            Mode::Chargen => "chargen",
            Mode::Daytime => "daytime",
            Mode::Time => "time",
        }
    }

    /// True for the modes that answer each byte with one byte (echo,
    /// upper): the ones a load generator can check.
    pub fn is_byte_transform(self) -> bool {
        matches!(self, Mode::Echo | Mode::Upper)
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
            Mode::Echo => Reply::Same,
            Mode::Upper => {
                upper_in_place(data);
                Reply::Same
            }
            // Chargen, daytime and time ignore what the peer sends (RFC
            // 864, 867, 868); reading it keeps its buffer from filling.
            Mode::Discard | Mode::Chargen | Mode::Daytime | Mode::Time => Reply::Nothing,
        }
    }

    fn on_connect(&self, out: &mut [u8]) -> Opening {
        match self {
            Mode::Daytime => Opening::SendAndClose(clock::daytime_line(clock::unix_now(), out)),
            Mode::Time if out.len() >= 4 => {
                out[..4].copy_from_slice(&clock::time_bytes(clock::unix_now()));
                Opening::SendAndClose(4)
            }
            _ => Opening::Listen,
        }
    }

    fn streams(&self) -> bool {
        *self == Mode::Chargen
    }

    fn fill(&self, offset: u64, out: &mut [u8]) -> usize {
        match self {
            Mode::Chargen => chargen::fill(offset, out),
            _ => 0,
        }
    }

    fn on_datagram(&self, buf: &mut [u8], len: usize) -> Option<usize> {
        match self {
            Mode::Echo | Mode::Upper => datagram_as_data(self, &mut buf[..len]),
            Mode::Discard => None,
            // `buf.len()` is the room the server allows: the request's
            // length, or everything with --udp-allow-amplification.
            Mode::Chargen => Some(chargen::datagram(
                buf,
                buf.len() > len.max(self.udp_reply_floor()),
            )),
            // A cut date would mislead: no room, no answer.
            Mode::Daytime => match clock::daytime_line(clock::unix_now(), buf) {
                0 => None,
                n => Some(n),
            },
            Mode::Time => {
                let out = buf.get_mut(..4)?;
                out.copy_from_slice(&clock::time_bytes(clock::unix_now()));
                Some(4)
            }
        }
    }

    fn udp_reply_floor(&self) -> usize {
        match self {
            Mode::Time => 4,
            _ => 0,
        }
    }
}

/// A datagram answered the way `service` answers TCP data: transformed in
/// place and sent back whole, or not at all.
fn datagram_as_data<S: Service + ?Sized>(service: &S, request: &mut [u8]) -> Option<usize> {
    match service.on_data(request) {
        Reply::Same => Some(request.len()),
        Reply::Nothing => None,
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
        assert!(err
            .to_string()
            .contains("expected one of: echo, upper, discard, chargen, daytime, time"));
    }
}
