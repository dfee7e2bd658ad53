//! The PROXY protocol gate (`serve --proxy-protocol`): every accepted
//! connection waits here until its PROXY header (v1 text or v2 binary, as
//! HAProxy's `send-proxy` and `send-proxy-v2`, AWS NLB and others send it)
//! has arrived whole, then goes to its connection table with the header's
//! source address as its peer. A connection without a valid header, or
//! without one within `--proxy-timeout`, is closed unanswered.
//!
//! The header is read the way a partial read is anywhere in this server,
//! with one twist that costs nothing per connection: it is *peeked*
//! (`MSG_PEEK`), not read, until it is complete, so the bytes of a header
//! split over many segments wait in the kernel's receive queue rather than
//! in a buffer of ours; each new segment raises a new edge. Only the
//! header's own bytes are then consumed: the payload behind it is the
//! table's to read, and it is never echoed.
//!
//! Parsing (the pure [`parse`]) frames the header itself (v1: up to 107
//! bytes ending in CRLF; v2: 16 bytes, then the length they give, at most
//! [`MAX_V2_HEADER`]) and leaves the fields to the `ppp` crate.

use std::collections::VecDeque;
use std::io::{self, Read};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use log::{debug, trace};
use mio::net::TcpStream;
use mio::{Interest, Registry};
use slab::Slab;

use super::token;
use crate::net::{is_interrupted, is_would_block};

/// The longest v1 header the spec allows, CRLF included.
pub const MAX_V1_HEADER: usize = 107;
/// The longest v2 header taken (16 fixed bytes, addresses and TLVs): far
/// more than any proxy sends (AWS adds a few dozen bytes of TLVs), far
/// less than the 64 KiB the length field could claim.
pub const MAX_V2_HEADER: usize = 4096;

/// The v2 signature: the first 12 bytes of every binary header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// What the bytes at the start of a connection say.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parsed {
    /// A header may still be on its way: wait for more bytes.
    Incomplete,
    /// No valid header is or can be there; why, for the log.
    Invalid(&'static str),
    /// A whole header of `len` bytes; `source` is the client it names,
    /// `None` for a v2 `LOCAL` header or a v1 `UNKNOWN` one (a proxy's own
    /// health check: the connection's real address stands).
    Complete {
        /// The header's length in bytes.
        len: usize,
        /// The original client, when the header names one.
        source: Option<SocketAddr>,
    },
}

/// Reads a PROXY header from the first bytes of a connection: a header
/// the bytes begin with, one that may still be on its way, or why none
/// can be. Pure and total: any input, no panic (a fuzz target holds it to
/// that).
pub fn parse(bytes: &[u8]) -> Parsed {
    let sig = bytes.len().min(V2_SIGNATURE.len());
    if bytes[..sig] == V2_SIGNATURE[..sig] && !bytes.is_empty() {
        return parse_v2(bytes);
    }
    let prefix = b"PROXY ";
    let start = bytes.len().min(prefix.len());
    if bytes[..start] == prefix[..start] {
        return parse_v1(bytes);
    }
    Parsed::Invalid("no PROXY header")
}

fn parse_v1(bytes: &[u8]) -> Parsed {
    let window = &bytes[..bytes.len().min(MAX_V1_HEADER)];
    let Some(cr) = window.windows(2).position(|w| w == b"\r\n") else {
        return if bytes.len() >= MAX_V1_HEADER {
            Parsed::Invalid("v1 header longer than 107 bytes")
        } else {
            Parsed::Incomplete
        };
    };
    let len = cr + 2;
    // The spec's v1 line is US-ASCII, and ppp needs it to be: it slices
    // its text two bytes past the first CR, which inside a character of
    // two bytes or more panics.
    let header = &bytes[..len];
    let text = match std::str::from_utf8(header) {
        Ok(text) if header.is_ascii() => text,
        _ => return Parsed::Invalid("v1 header is not ASCII text"),
    };
    match ppp::v1::Header::try_from(text) {
        Ok(h) => Parsed::Complete {
            len,
            source: match h.addresses {
                ppp::v1::Addresses::Tcp4(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Tcp6(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v1::Addresses::Unknown => None,
            },
        },
        Err(_) => Parsed::Invalid("malformed v1 header"),
    }
}

fn parse_v2(bytes: &[u8]) -> Parsed {
    if bytes.len() < 16 {
        // The signature so far matches; the version byte may still be bad.
        if bytes.len() > 12 && !version_ok(bytes[12]) {
            return Parsed::Invalid("unknown v2 version or command");
        }
        return Parsed::Incomplete;
    }
    if !version_ok(bytes[12]) {
        return Parsed::Invalid("unknown v2 version or command");
    }
    let len = 16 + usize::from(u16::from_be_bytes([bytes[14], bytes[15]]));
    if len > MAX_V2_HEADER {
        return Parsed::Invalid("v2 header too long");
    }
    if bytes.len() < len {
        return Parsed::Incomplete;
    }
    match ppp::v2::Header::try_from(&bytes[..len]) {
        Ok(h) => {
            if h.command == ppp::v2::Command::Local {
                return Parsed::Complete { len, source: None };
            }
            if h.protocol == ppp::v2::Protocol::Datagram {
                return Parsed::Invalid("v2 header for a datagram protocol");
            }
            let source = match h.addresses {
                ppp::v2::Addresses::IPv4(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v2::Addresses::IPv6(a) => {
                    Some(SocketAddr::from((a.source_address, a.source_port)))
                }
                ppp::v2::Addresses::Unspecified | ppp::v2::Addresses::Unix(_) => None,
            };
            Parsed::Complete { len, source }
        }
        Err(_) => Parsed::Invalid("malformed v2 header"),
    }
}

/// Version 2, command LOCAL (0) or PROXY (1).
fn version_ok(byte: u8) -> bool {
    byte == 0x20 || byte == 0x21
}

/// Reads and drops what a client that has ended left queued (part of a
/// header), so that the close is a FIN: closing with unread bytes makes
/// the kernel send a reset. Bounded: after the FIN nothing more arrives.
fn discard_queued(stream: &mut TcpStream, scratch: &mut [u8]) {
    loop {
        match stream.read(scratch) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e) if is_interrupted(&e) => {}
            // WouldBlock (an error, not a FIN, woke us) or the error
            // itself: the close goes as it may.
            Err(_) => return,
        }
    }
}

/// Which table a connection goes to once its header is in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// Plain TCP.
    Plain,
    /// TLS: the header comes before the handshake.
    Tls,
}

/// A connection whose header has arrived, for its table.
#[derive(Debug)]
pub struct Passed {
    /// The socket, still registered under its gate token.
    pub stream: TcpStream,
    /// The header's source, or the connection's own peer.
    pub peer: SocketAddr,
    /// Where it goes.
    pub kind: Kind,
}

/// One connection waiting for its header.
#[derive(Debug)]
struct Waiting {
    stream: TcpStream,
    peer: SocketAddr,
    kind: Kind,
    deadline: Instant,
}

/// The connections waiting for their PROXY header.
#[derive(Debug)]
pub struct ProxyGate {
    waiting: Slab<Waiting>,
    /// `--proxy-timeout`.
    timeout: Duration,
    /// (deadline, key) in arrival order, so in deadline order: the timeout
    /// is the same for all. Entries that left early are skipped when met.
    deadlines: VecDeque<(Instant, usize)>,
}

impl ProxyGate {
    /// An empty gate giving each connection `timeout` for its header.
    pub fn new(timeout: Duration) -> ProxyGate {
        ProxyGate {
            waiting: Slab::new(),
            timeout,
            deadlines: VecDeque::new(),
        }
    }

    /// Connections waiting.
    pub fn len(&self) -> usize {
        self.waiting.len()
    }

    /// The earliest header deadline.
    pub fn next_deadline(&self) -> Option<Instant> {
        self.deadlines.front().map(|(at, _)| *at)
    }

    /// Takes an accepted connection in, registered under a gate token.
    /// `Err` gives the socket back when it cannot be registered.
    pub fn admit(
        &mut self,
        mut stream: TcpStream,
        peer: SocketAddr,
        kind: Kind,
        registry: &Registry,
        now: Instant,
    ) -> io::Result<usize> {
        let entry = self.waiting.vacant_entry();
        let key = entry.key();
        registry.register(
            &mut stream,
            token::from_gate_key(key),
            Interest::READABLE | Interest::WRITABLE,
        )?;
        let deadline = now + self.timeout;
        entry.insert(Waiting {
            stream,
            peer,
            kind,
            deadline,
        });
        self.deadlines.push_back((deadline, key));
        trace!("proxy {key} {peer}: waiting for its header");
        Ok(key)
    }

    /// Connection `key` is readable: looks at what has arrived.
    /// `hangup`: the poll reported the client's FIN (or an error), which a
    /// peek cannot see behind the bytes it shows. `Ok(Some)` hands over a
    /// connection whose header is in (and consumed); `Ok(None)` waits for
    /// more; `Err` says why it was refused (and closed).
    pub fn on_ready(
        &mut self,
        key: usize,
        hangup: bool,
        scratch: &mut [u8],
    ) -> Result<Option<Passed>, &'static str> {
        let Some(w) = self.waiting.get_mut(key) else {
            return Ok(None); // gone earlier in this batch
        };
        let window = scratch.len().min(MAX_V2_HEADER);
        let peeked = loop {
            match w.stream.peek(&mut scratch[..window]) {
                Ok(n) => break n,
                Err(e) if is_interrupted(&e) => {}
                // Nothing yet: the next segment raises a new edge.
                Err(e) if is_would_block(&e) => return Ok(None),
                Err(_) => return self.refuse(key, "connection failed before its header"),
            }
        };
        if peeked == 0 {
            return self.refuse(key, "closed before a header");
        }
        match parse(&scratch[..peeked]) {
            // The client ended inside its header: no more can come, so
            // refuse now rather than at the deadline.
            Parsed::Incomplete if hangup => {
                discard_queued(&mut w.stream, scratch);
                self.refuse(key, "closed inside its header")
            }
            Parsed::Incomplete => Ok(None),
            Parsed::Invalid(why) => self.refuse(key, why),
            Parsed::Complete { len, source } => {
                // The header's own bytes only: they are all there (peeked).
                let mut taken = 0;
                while taken < len {
                    match w.stream.read(&mut scratch[taken..len]) {
                        Ok(0) => return self.refuse(key, "closed inside its header"),
                        Ok(n) => taken += n,
                        Err(e) if is_interrupted(&e) => {}
                        Err(_) => return self.refuse(key, "connection failed in its header"),
                    }
                }
                let w = self.waiting.remove(key);
                let peer = source.unwrap_or(w.peer);
                debug!(
                    "proxy {key} {}: header read ({len} B): client {peer}",
                    w.peer
                );
                Ok(Some(Passed {
                    stream: w.stream,
                    peer,
                    kind: w.kind,
                }))
            }
        }
    }

    /// Closes connection `key` unanswered.
    fn refuse(&mut self, key: usize, why: &'static str) -> Result<Option<Passed>, &'static str> {
        if let Some(w) = self.waiting.try_remove(key) {
            debug!("proxy {key} {}: refused: {why}", w.peer);
        }
        Err(why)
    }

    /// Closes the connections whose header did not arrive in time; returns
    /// how many.
    pub fn on_timer(&mut self, now: Instant) -> u64 {
        let mut refused = 0;
        while let Some(&(at, key)) = self.deadlines.front() {
            if at > now {
                break;
            }
            self.deadlines.pop_front();
            // The entry may have left and its key been reused since.
            if self.waiting.get(key).is_some_and(|w| w.deadline == at)
                && self.refuse(key, "no whole header in time").is_err()
            {
                refused += 1;
            }
        }
        refused
    }

    /// Shutdown: connections that never sent their header just close.
    pub fn close_all(&mut self) -> usize {
        let n = self.waiting.len();
        self.waiting.clear();
        self.deadlines.clear();
        n
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn v2(command: u8, family: u8, addresses: &[u8], tlvs: &[u8]) -> Vec<u8> {
        let mut h = V2_SIGNATURE.to_vec();
        h.push(0x20 | command);
        h.push(family);
        h.extend_from_slice(&((addresses.len() + tlvs.len()) as u16).to_be_bytes());
        h.extend_from_slice(addresses);
        h.extend_from_slice(tlvs);
        h
    }

    #[test]
    fn a_v2_header_names_the_client_and_is_taken_whole() {
        let addrs = [192, 0, 2, 7, 198, 51, 100, 1, 0x9c, 0x40, 0x1b, 0x5f];
        let h = v2(1, 0x11, &addrs, &[]);
        let mut with_payload = h.clone();
        with_payload.extend_from_slice(b"hello");
        assert_eq!(
            parse(&with_payload),
            Parsed::Complete {
                len: h.len(),
                source: Some("192.0.2.7:40000".parse().unwrap())
            }
        );
        // Every prefix is incomplete, never invalid: a header split over
        // many reads is assembled.
        for cut in 1..h.len() {
            assert_eq!(parse(&h[..cut]), Parsed::Incomplete, "after {cut} B");
        }
    }

    #[test]
    fn a_v1_header_names_the_client_and_leaves_the_payload() {
        let v1 = b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 7007\r\nhello";
        assert_eq!(
            parse(v1),
            Parsed::Complete {
                len: 46,
                source: Some("192.0.2.7:40000".parse().unwrap())
            }
        );
        assert_eq!(parse(b"PROXY TCP4 192.0"), Parsed::Incomplete);
        assert!(matches!(parse(b"GET / HTTP/1.1\r\n"), Parsed::Invalid(_)));
    }

    #[test]
    fn a_local_header_keeps_the_real_address() {
        let h = v2(0, 0x00, &[], &[]);
        assert_eq!(
            parse(&h),
            Parsed::Complete {
                len: 16,
                source: None
            }
        );
        assert_eq!(
            parse(b"PROXY UNKNOWN\r\n"),
            Parsed::Complete {
                len: 15,
                source: None
            }
        );
    }

    #[test]
    fn malformed_headers_of_every_kind_are_refused() {
        let addrs = [192, 0, 2, 7, 198, 51, 100, 1, 0x9c, 0x40, 0x1b, 0x5f];
        let mut bad_version = v2(1, 0x11, &addrs, &[]);
        bad_version[12] = 0x31;
        let mut bad_command = v2(1, 0x11, &addrs, &[]);
        bad_command[12] = 0x2F;
        let mut too_long = v2(1, 0x11, &addrs, &[]);
        too_long[14..16].copy_from_slice(&u16::MAX.to_be_bytes());
        let udp = v2(1, 0x12, &addrs, &[]);
        let long_v1 = format!("PROXY TCP4 {}\r\n", "1".repeat(120));
        for (what, bytes) in [
            ("no header", b"hello world\n".to_vec()),
            ("tls first", vec![0x16, 0x03, 0x01, 0x02, 0x00]),
            ("bad version", bad_version),
            ("bad command", bad_command),
            ("v2 too long", too_long),
            ("v2 datagram", udp),
            ("v1 too long", long_v1.into_bytes()),
            ("v1 garbage", b"PROXY TCP4 not an address\r\n".to_vec()),
            (
                "v1 bad port",
                b"PROXY TCP4 1.2.3.4 5.6.7.8 99999 1\r\n".to_vec(),
            ),
        ] {
            assert!(
                matches!(parse(&bytes), Parsed::Invalid(_)),
                "{what}: {:?}",
                parse(&bytes)
            );
        }
    }

    #[test]
    fn v1_over_ipv6_and_partial_lines() {
        let line = b"PROXY TCP6 2001:db8::7 2001:db8::1 40000 7007\r\n";
        assert_eq!(
            parse(line),
            Parsed::Complete {
                len: line.len(),
                source: Some("[2001:db8::7]:40000".parse().unwrap())
            }
        );
        for cut in 1..line.len() {
            assert_eq!(parse(&line[..cut]), Parsed::Incomplete, "after {cut} B");
        }
    }

    /// Found by the `proxy_header` fuzz target: a carriage return inside
    /// a v1 line, followed by a character of two bytes, panicked in the
    /// `ppp` crate (it slices its text two bytes past the first CR), which
    /// took the whole server down with one connection.
    #[test]
    fn a_v1_line_that_is_not_ascii_is_refused_without_a_panic() {
        for line in [
            &b"PROXY \r\xcd\x9b\r\n"[..],
            b"PROXY TCP4 192.0.2.7 198.51.100.1 40000 7007\r\xc3\xa9\r\n",
            "PROXY TCP4 192.0.2.\u{667} 198.51.100.1 40000 7007\r\n".as_bytes(),
        ] {
            assert!(
                matches!(parse(line), Parsed::Invalid(_)),
                "{:?}",
                String::from_utf8_lossy(line)
            );
        }
    }
}
