//! What a TCP connection of the load generator says before its first
//! message: the PROXY header (`--proxy-protocol`), naming the
//! connection's own addresses, then, for `tls://`, the TLS handshake. A
//! [`Greeting`] holds a connection from the end of its TCP handshake until
//! both are done and then becomes the [`Client`] that sends messages; the
//! loop drives it on readiness and bounds it by the connection's deadline.
//! Every new connection goes through it, the first and any replacement.
//!
//! A plain connection without a PROXY header never comes here: the TLS
//! and PROXY costs stay off the plain path.

use std::fmt;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Instant;

use mio::net::TcpStream;

use super::contract::Pace;
use super::tcp::TcpClient;
use super::Client;
use crate::net::{is_interrupted, is_would_block};
use crate::tls_client::{HandshakeError, TlsConnector, TlsStream, TlsVersion};

/// The first bytes of a v2 header, whatever follows.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// Which PROXY protocol header a connection sends (`--proxy-protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyVersion {
    /// The text header: `PROXY TCP4 SRC DST SPORT DPORT\r\n`.
    V1,
    /// The binary header, as HAProxy's `send-proxy-v2` and AWS NLB send it.
    V2,
}

impl ProxyVersion {
    /// The header of a connection from `local` to `peer`, as a proxy
    /// would send it for a client at `local`.
    ///
    /// # Errors
    ///
    /// None in practice: a v2 header of two addresses always fits its
    /// length field.
    pub fn header(self, local: SocketAddr, peer: SocketAddr) -> io::Result<Vec<u8>> {
        match self {
            ProxyVersion::V1 => Ok(ppp::v1::Addresses::from((local, peer))
                .to_string()
                .into_bytes()),
            ProxyVersion::V2 => ppp::v2::Builder::with_addresses(
                ppp::v2::Version::Two | ppp::v2::Command::Proxy,
                ppp::v2::Protocol::Stream,
                (local, peer),
            )
            .build(),
        }
    }

    /// How every header of this version begins: an echo of it is told
    /// apart from a payload by these bytes.
    pub(crate) fn signature(self) -> &'static [u8] {
        match self {
            ProxyVersion::V1 => b"PROXY ",
            ProxyVersion::V2 => V2_SIGNATURE,
        }
    }
}

impl fmt::Display for ProxyVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            ProxyVersion::V1 => "v1",
            ProxyVersion::V2 => "v2",
        })
    }
}

impl FromStr for ProxyVersion {
    type Err = String;

    /// `v1` or `v2` (`1` and `2` too).
    fn from_str(s: &str) -> Result<ProxyVersion, String> {
        match s {
            "v1" | "1" => Ok(ProxyVersion::V1),
            "v2" | "2" => Ok(ProxyVersion::V2),
            _ => Err(format!(
                "unknown PROXY protocol version '{s}': expected v1 or v2"
            )),
        }
    }
}

/// What carries the connection once the greeting is over.
#[derive(Debug)]
enum Transport {
    Plain(TcpStream),
    Tls(TlsStream),
}

/// Why a greeting failed.
#[derive(Debug)]
pub enum GreetingError {
    /// Writing the PROXY header failed.
    Proxy(io::Error),
    /// The TLS handshake failed.
    Tls(HandshakeError),
}

/// A connection past its TCP handshake, sending its PROXY header and
/// making its TLS handshake.
#[derive(Debug)]
pub struct Greeting {
    transport: Transport,
    /// The PROXY header (empty without one) and how much of it is out;
    /// all of it goes before any TLS record.
    header: Vec<u8>,
    header_sent: usize,
    proxy: Option<ProxyVersion>,
    /// When the TCP handshake finished: the TLS handshake's time counts
    /// from here.
    since: Instant,
    /// The poll reported the server's FIN or an error: handed on to the
    /// client, whose first read must not trust a short one.
    is_hangup_reported: bool,
}

impl Greeting {
    /// Begins the greeting of an established connection: a PROXY header
    /// of version `proxy` naming the socket's own addresses, then a TLS
    /// session of `tls`. Nothing is written yet: [`advance`](Self::advance)
    /// does that.
    ///
    /// # Errors
    ///
    /// The socket's addresses cannot be read (it failed already), or
    /// rustls makes no session.
    pub fn new(
        stream: TcpStream,
        proxy: Option<ProxyVersion>,
        tls: Option<&TlsConnector>,
        now: Instant,
    ) -> Result<Greeting, GreetingError> {
        let header = match proxy {
            Some(version) => {
                let local = stream.local_addr().map_err(GreetingError::Proxy)?;
                let peer = stream.peer_addr().map_err(GreetingError::Proxy)?;
                version.header(local, peer).map_err(GreetingError::Proxy)?
            }
            None => Vec::new(),
        };
        let transport = match tls {
            Some(connector) => {
                Transport::Tls(TlsStream::new(stream, connector).map_err(GreetingError::Tls)?)
            }
            None => Transport::Plain(stream),
        };
        Ok(Greeting {
            transport,
            header,
            header_sent: 0,
            proxy,
            since: now,
            is_hangup_reported: false,
        })
    }

    /// The socket, for re-registration.
    pub fn socket_mut(&mut self) -> &mut TcpStream {
        match &mut self.transport {
            Transport::Plain(s) => s,
            Transport::Tls(t) => t.socket_mut(),
        }
    }

    /// Records that the poll reported the server's FIN or an error: the
    /// handshake reads on past a short read, and so will the client.
    pub fn note_hangup(&mut self) {
        self.is_hangup_reported = true;
        if let Transport::Tls(t) = &mut self.transport {
            t.note_hangup();
        }
    }

    /// Whether a PROXY header was sent first (a hint for a failure).
    pub fn is_proxied(&self) -> bool {
        self.proxy.is_some()
    }

    /// Goes as far as the socket allows: `Ok(true)` once the header is out
    /// and the handshake done, `Ok(false)` to wait for the next edge.
    ///
    /// # Errors
    ///
    /// [`GreetingError`]: the header could not be written, or the
    /// handshake failed.
    pub fn advance(&mut self) -> Result<bool, GreetingError> {
        while self.header_sent < self.header.len() {
            let rest = &self.header[self.header_sent..];
            let written = match &mut self.transport {
                Transport::Plain(s) => s.write(rest),
                Transport::Tls(t) => t.socket_mut().write(rest),
            };
            match written {
                Ok(0) => return Err(GreetingError::Proxy(io::ErrorKind::WriteZero.into())),
                Ok(n) => self.header_sent += n,
                // Socket buffer full: the writable edge resumes us.
                Err(e) if is_would_block(&e) => return Ok(false),
                Err(e) if is_interrupted(&e) => {}
                Err(e) => return Err(GreetingError::Proxy(e)),
            }
        }
        match &mut self.transport {
            Transport::Plain(_) => Ok(true),
            Transport::Tls(t) => t.handshake().map_err(GreetingError::Tls),
        }
    }

    /// TLS: the version, whether the session was resumed, and the time
    /// the handshake took until `now`; `None` for a plain connection.
    pub fn handshake_facts(&self, now: Instant) -> Option<(TlsVersion, bool, std::time::Duration)> {
        let Transport::Tls(t) = &self.transport else {
            return None;
        };
        Some((
            t.version()?,
            t.is_resumed(),
            now.saturating_duration_since(self.since),
        ))
    }

    /// The client this connection becomes, numbered `id`, sending at `pace`.
    pub fn into_client(self, id: u64, pace: Pace) -> Client {
        let signature = self.proxy.map(ProxyVersion::signature);
        let mut client = match self.transport {
            Transport::Plain(s) => Client::Tcp(TcpClient::new(s, id, pace).echo_guard(signature)),
            Transport::Tls(t) => Client::Tls(TcpClient::new(t, id, pace).echo_guard(signature)),
        };
        if self.is_hangup_reported {
            client.note_hangup();
        }
        client
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn headers_name_the_connections_own_addresses() {
        let local: SocketAddr = "127.0.0.9:40000".parse().expect("address");
        let peer: SocketAddr = "127.0.0.1:7007".parse().expect("address");
        let v1 = ProxyVersion::V1.header(local, peer).expect("v1");
        assert_eq!(v1, b"PROXY TCP4 127.0.0.9 127.0.0.1 40000 7007\r\n");
        let v2 = ProxyVersion::V2.header(local, peer).expect("v2");
        assert!(v2.starts_with(ProxyVersion::V2.signature()));
        // What our server's parser reads back: the client is `local`.
        assert_eq!(
            crate::server::proxy::parse(&v2),
            crate::server::proxy::Parsed::Complete {
                len: v2.len(),
                source: Some(local)
            }
        );
        let local6: SocketAddr = "[::1]:40000".parse().expect("address");
        let peer6: SocketAddr = "[::1]:7007".parse().expect("address");
        let v1 = ProxyVersion::V1.header(local6, peer6).expect("v1");
        assert_eq!(v1, b"PROXY TCP6 ::1 ::1 40000 7007\r\n");
    }

    #[test]
    fn versions_parse_by_name() {
        assert_eq!("v1".parse(), Ok(ProxyVersion::V1));
        assert_eq!("2".parse(), Ok(ProxyVersion::V2));
        assert!("v3"
            .parse::<ProxyVersion>()
            .unwrap_err()
            .contains("v1 or v2"));
    }
}
