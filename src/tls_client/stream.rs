//! A socket carrying a TLS client session: `TlsStream` moves records
//! between the socket and the rustls session as the socket allows and
//! hands plaintext in and out through `Read` and `Write`, so the load
//! generator's TCP client and the line client use it like the socket
//! itself, and a connection stays one state in its loop's slab.
//!
//! rustls is sans-IO, as on the server side (`server/tls.rs`). The stream
//! never sees a poll: whoever owns the readiness events drives the
//! handshake (`TlsStream::handshake`), each call going as far as the
//! socket allows. What to trust and how failures read are the parent
//! module's (`TlsConnector`).

use std::fmt;
use std::io::{self, Read, Write};

use super::TlsConnector;
use crate::tls_records::{self, take_plaintext, Inflow, Plaintext};

/// Why a handshake did not finish.
#[derive(Debug)]
pub enum HandshakeError {
    /// rustls refused: the certificate, the server's alert, a message
    /// that is not TLS.
    Tls(rustls::Error),
    /// The server closed the connection first.
    Closed,
    /// The socket failed (a reset, most often).
    Io(io::Error),
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandshakeError::Tls(e) => write!(f, "{e}"),
            HandshakeError::Closed => f.write_str("closed during the handshake"),
            HandshakeError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// The TLS version a handshake settled on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TlsVersion {
    /// TLS 1.2.
    Tls12,
    /// TLS 1.3.
    Tls13,
}

impl fmt::Display for TlsVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            TlsVersion::Tls12 => "TLSv1.2",
            TlsVersion::Tls13 => "TLSv1.3",
        })
    }
}

/// A socket carrying a TLS client session: plaintext in and out through
/// `Read` and `Write`, records to and from the socket underneath. Generic
/// over the socket so unit tests can run it over memory.
pub(crate) struct TlsStream<S = mio::net::TcpStream> {
    sock: S,
    /// Boxed: a session is a few hundred bytes and its buffers grow on use.
    session: Box<rustls::ClientConnection>,
    /// An error met after some plaintext was handed over: the next read
    /// returns it.
    deferred: Option<io::Error>,
    /// The last read from the socket came back short, so its queue was
    /// empty then (Linux): the read that would only say `WouldBlock` is
    /// skipped, as the generator's short-read shortcut does for plain TCP.
    is_drained: bool,
    /// The poll reported the server's FIN or an error. Sticky: the FIN (or
    /// the reset) may sit behind the bytes a short read took, and its edge
    /// is spent, so the shortcut above is off from then on.
    is_hangup_reported: bool,
    /// The session holds what a read would return (plaintext, the
    /// server's `close_notify`, an error) that no new edge will announce:
    /// it came with records already taken from the socket.
    holds_unread: bool,
}

impl<S: fmt::Debug> fmt::Debug for TlsStream<S> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("sock", &self.sock)
            .field("is_handshaking", &self.session.is_handshaking())
            .finish_non_exhaustive()
    }
}

impl<S: Read + Write> TlsStream<S> {
    /// Wraps a connected socket in a new session of `connector`; nothing
    /// is sent until [`handshake`](Self::handshake) or a write, so that a
    /// PROXY header can go first.
    ///
    /// # Errors
    ///
    /// rustls could not make a session (not with a connector that loaded).
    pub(crate) fn new(sock: S, connector: &TlsConnector) -> Result<TlsStream<S>, HandshakeError> {
        Ok(TlsStream {
            sock,
            session: Box::new(connector.session().map_err(HandshakeError::Tls)?),
            deferred: None,
            is_drained: false,
            is_hangup_reported: false,
            holds_unread: false,
        })
    }

    /// The socket, for registering it and for what goes before TLS.
    pub(crate) fn socket_mut(&mut self) -> &mut S {
        &mut self.sock
    }

    /// Records that the poll reported the server's FIN or an error: from
    /// now on the socket is read until it says `WouldBlock` or ends,
    /// since no new edge would announce what sits behind a short read.
    pub(crate) fn note_hangup(&mut self) {
        self.is_hangup_reported = true;
    }

    /// True when a read would return something (plaintext, the end, an
    /// error) that no new readiness edge will announce: the session took
    /// it from the socket already, with the handshake's last flight or
    /// behind the plaintext of the last read.
    pub(crate) fn holds_unread(&self) -> bool {
        self.holds_unread
    }

    /// The socket came back short at its last read and the poll has not
    /// reported a hang-up: it was empty, and news raises a new edge.
    fn is_known_empty(&self) -> bool {
        self.is_drained && !self.is_hangup_reported
    }

    /// Moves the handshake on as far as the socket allows: `Ok(true)` once
    /// it is done, `Ok(false)` while it waits for the server (the next
    /// readiness edge calls again).
    ///
    /// # Errors
    ///
    /// [`HandshakeError`]: the session refused (the certificate, an
    /// alert), the server closed, or the socket failed.
    pub(crate) fn handshake(&mut self) -> Result<bool, HandshakeError> {
        // Called on an edge: the socket may hold news.
        self.is_drained = false;
        loop {
            self.write_out().map_err(HandshakeError::Io)?;
            if !self.session.is_handshaking() {
                return Ok(true);
            }
            if self.is_known_empty() {
                return Ok(false);
            }
            match self.read_in()? {
                Inflow::Records { .. } => {}
                Inflow::Eof => return Err(HandshakeError::Closed),
                Inflow::Empty => return Ok(false),
            }
        }
    }

    /// The version the handshake settled on; `None` before it is done.
    pub(crate) fn version(&self) -> Option<TlsVersion> {
        match self.session.protocol_version()? {
            rustls::ProtocolVersion::TLSv1_3 => Some(TlsVersion::Tls13),
            rustls::ProtocolVersion::TLSv1_2 => Some(TlsVersion::Tls12),
            _ => None,
        }
    }

    /// True when the handshake resumed an earlier session (a ticket).
    pub(crate) fn is_resumed(&self) -> bool {
        self.session.handshake_kind() == Some(rustls::HandshakeKind::Resumed)
    }

    /// Sends `close_notify` (TLS's end of output) and what fits of it.
    pub(crate) fn close_notify(&mut self) -> io::Result<()> {
        self.session.send_close_notify();
        self.write_out()
    }

    /// True while the session holds records the socket has not taken.
    pub(crate) fn wants_write(&self) -> bool {
        self.session.wants_write()
    }

    /// Writes the records the session made until it has none or the
    /// socket is full.
    fn write_out(&mut self) -> io::Result<()> {
        tls_records::write_out(&mut self.session, &mut self.sock).map(|_| ())
    }

    /// Reads records from the socket into the session once and processes
    /// them. A session error sends its alert, if the socket takes it.
    /// An EOF, the session knows it now and says so on read.
    fn read_in(&mut self) -> Result<Inflow, HandshakeError> {
        let inflow =
            tls_records::read_in(&mut self.session, &mut self.sock).map_err(HandshakeError::Io)?;
        self.is_drained = matches!(inflow, Inflow::Records { is_drained: true });
        if let Inflow::Records { .. } = inflow {
            match self.session.process_new_packets() {
                Ok(state) => {
                    // What the handshake's last flight brought along;
                    // `read` keeps its own account.
                    self.holds_unread =
                        state.plaintext_bytes_to_read() > 0 || state.peer_has_closed();
                }
                Err(e) => {
                    let _ = self.write_out();
                    return Err(HandshakeError::Tls(e));
                }
            }
        }
        Ok(inflow)
    }
}

impl<S: Read + Write> Read for TlsStream<S> {
    /// Plaintext, as much as fits or the socket holds. A short read means
    /// the socket said `WouldBlock`, so the short-read shortcut stays
    /// sound, or the server ended (or failed) behind the plaintext, which
    /// [`holds_unread`](Self::holds_unread) then says: the next read
    /// returns the end. The server's `close_notify`, or its FIN without
    /// one, is EOF.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut is_end_behind = false;
        let result = self.read_plain(buf, &mut is_end_behind);
        // Plaintext handed over short of an end the session already
        // knows: the next read returns that end, and only a read will.
        self.holds_unread = is_end_behind || self.deferred.is_some();
        result
    }
}

impl<S: Read + Write> TlsStream<S> {
    /// `read`'s work; sets `is_end_behind` when it returns plaintext short
    /// of the end (close_notify or FIN) the session has seen.
    fn read_plain(&mut self, buf: &mut [u8], is_end_behind: &mut bool) -> io::Result<usize> {
        if let Some(e) = self.deferred.take() {
            return Err(e);
        }
        // Called on an edge: the socket may hold news.
        self.is_drained = false;
        let mut got = 0;
        loop {
            match take_plaintext(self.session.reader(), buf, &mut got)? {
                Plaintext::Full => return Ok(got),
                // EOF, after what came before it.
                Plaintext::End => {
                    *is_end_behind = got > 0;
                    return Ok(got);
                }
                // Nothing buffered: read more records below.
                Plaintext::Drained => {}
            }
            if self.is_known_empty() {
                // The socket was empty at the last read: more raises a
                // new edge.
                return match got {
                    0 => Err(io::ErrorKind::WouldBlock.into()),
                    _ => Ok(got),
                };
            }
            let inflow = match self.read_in() {
                Ok(inflow) => inflow,
                Err(e) => {
                    let e = match e {
                        HandshakeError::Io(e) => e,
                        other => io::Error::new(io::ErrorKind::InvalidData, other),
                    };
                    if got == 0 {
                        return Err(e);
                    }
                    // Hand over what came before the error; it comes next.
                    self.deferred = Some(e);
                    return Ok(got);
                }
            };
            match inflow {
                Inflow::Records { .. } | Inflow::Eof => {}
                Inflow::Empty if got > 0 => return Ok(got),
                Inflow::Empty => return Err(io::ErrorKind::WouldBlock.into()),
            }
            // Records the session answered (key updates, alerts) go out.
            self.write_out()?;
        }
    }
}

impl<S: Read + Write> Write for TlsStream<S> {
    /// Takes plaintext only while the socket takes its records: with
    /// records still waiting, `WouldBlock`, so a writer sees TLS's
    /// backpressure as a full socket's.
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_out()?;
        if self.session.wants_write() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        let n = self.session.writer().write(buf)?;
        if n == 0 && !buf.is_empty() {
            // The session's buffer limit: as good as a full socket.
            return Err(io::ErrorKind::WouldBlock.into());
        }
        self.write_out()?;
        Ok(n)
    }

    /// Writes what records the socket takes; the rest waits for the next
    /// writable edge.
    fn flush(&mut self) -> io::Result<()> {
        self.write_out()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls_client::{ServerName, Trust};
    use std::sync::Arc;

    /// A socket in memory: what the client writes piles up in `sent`;
    /// reads take from `inbox`, `WouldBlock` when it is empty.
    #[derive(Default)]
    struct Memory {
        inbox: std::collections::VecDeque<u8>,
        sent: Vec<u8>,
        reads: usize,
    }

    impl Read for Memory {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            self.reads += 1;
            if self.inbox.is_empty() {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            let n = buf.len().min(self.inbox.len());
            for (b, x) in buf.iter_mut().zip(self.inbox.drain(..n)) {
                *b = x;
            }
            Ok(n)
        }
    }

    impl Write for Memory {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            self.sent.extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    /// A rustls server for `localhost`, and a connector that trusts its
    /// CA, or another CA.
    fn server_and_connector(trust_the_ca: bool) -> (rustls::ServerConnection, TlsConnector) {
        // Each CA by its own name: an issuer is looked up by name first.
        let make_ca = |name: &str| {
            let key = rcgen::KeyPair::generate().expect("key");
            let mut ca = rcgen::CertificateParams::new(Vec::<String>::new()).expect("params");
            ca.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
            ca.distinguished_name.push(rcgen::DnType::CommonName, name);
            (ca.self_signed(&key).expect("ca"), key)
        };
        let (ca, ca_key) = make_ca("the server's CA");
        let key = rcgen::KeyPair::generate().expect("key");
        let leaf = rcgen::CertificateParams::new(vec!["localhost".to_string()])
            .expect("params")
            .signed_by(&key, &ca, &ca_key)
            .expect("leaf");
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let server = rustls::ServerConfig::builder_with_provider(Arc::clone(&provider))
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_no_client_auth()
            .with_single_cert(
                vec![leaf.der().clone()],
                rustls::pki_types::PrivateKeyDer::Pkcs8(key.serialize_der().into()),
            )
            .expect("server config");
        let mut roots = rustls::RootCertStore::empty();
        if trust_the_ca {
            roots.add(ca.der().clone()).expect("root");
        } else {
            let (other, _) = make_ca("a stranger's CA");
            roots.add(other.der().clone()).expect("root");
        }
        let client = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .expect("versions")
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = TlsConnector {
            config: Arc::new(client),
            server_name: ServerName::try_from("localhost").expect("name"),
            trust: Trust::File("ca.pem".into()),
        };
        let server = rustls::ServerConnection::new(Arc::new(server)).expect("session");
        (server, connector)
    }

    /// Moves what the client sent to the server, and the server's answer
    /// back into the client's inbox.
    fn pump(client: &mut TlsStream<Memory>, server: &mut rustls::ServerConnection) {
        let sent = std::mem::take(&mut client.socket_mut().sent);
        let mut at = &sent[..];
        while !at.is_empty() {
            server.read_tls(&mut at).expect("to the server");
            server.process_new_packets().expect("server side");
        }
        let mut back = Vec::new();
        while server.wants_write() {
            server.write_tls(&mut back).expect("from the server");
        }
        client.socket_mut().inbox.extend(back);
    }

    #[test]
    fn a_handshake_over_memory_then_plaintext_each_way_without_a_wasted_read() {
        let (mut server, connector) = server_and_connector(true);
        let mut client = TlsStream::new(Memory::default(), &connector).expect("session");
        let mut rounds = 0;
        while !client.handshake().expect("handshake") {
            pump(&mut client, &mut server);
            rounds += 1;
            assert!(rounds < 5, "the handshake does not finish");
        }
        pump(&mut client, &mut server); // the client's Finished
        assert_eq!(client.version(), Some(TlsVersion::Tls13));
        assert!(!client.is_resumed());
        client.write_all(b"hello").expect("plaintext out");
        pump(&mut client, &mut server);
        let mut got = [0u8; 5];
        server.reader().read_exact(&mut got).expect("at the server");
        assert_eq!(&got, b"hello");
        server.writer().write_all(b"world").expect("server writes");
        pump(&mut client, &mut server);
        let reads = client.socket_mut().reads;
        let mut buf = [0u8; 4096];
        assert_eq!(client.read(&mut buf).expect("plaintext in"), 5);
        assert_eq!(&buf[..5], b"world");
        let extra = usize::from(!tls_records::SHORT_READ_IS_EMPTY);
        assert_eq!(
            client.socket_mut().reads - reads,
            1 + extra,
            "a short read is the end of what came (Linux)"
        );
        // The server's close_notify is the end.
        server.send_close_notify();
        pump(&mut client, &mut server);
        assert_eq!(client.read(&mut buf).expect("the end"), 0);
    }

    #[test]
    fn a_close_notify_behind_the_last_plaintext_is_held_for_the_next_read() {
        let (mut server, connector) = server_and_connector(true);
        let mut client = TlsStream::new(Memory::default(), &connector).expect("session");
        while !client.handshake().expect("handshake") {
            pump(&mut client, &mut server);
        }
        pump(&mut client, &mut server);
        // The reply and the server's close_notify in one read of records.
        server.writer().write_all(b"bye").expect("server writes");
        server.send_close_notify();
        pump(&mut client, &mut server);
        let mut buf = [0u8; 4096];
        assert_eq!(client.read(&mut buf).expect("plaintext"), 3);
        assert!(
            client.holds_unread(),
            "a short read, yet the end is already here: no edge will say so"
        );
        assert_eq!(client.read(&mut buf).expect("the end"), 0);
        assert!(!client.holds_unread());
    }

    #[test]
    fn a_certificate_of_an_unknown_ca_fails_the_handshake_as_unknown_issuer() {
        let (mut server, connector) = server_and_connector(false);
        let mut client = TlsStream::new(Memory::default(), &connector).expect("session");
        let mut outcome = client.handshake();
        for _ in 0..5 {
            if !matches!(outcome, Ok(false)) {
                break;
            }
            pump(&mut client, &mut server);
            outcome = client.handshake();
        }
        let e = outcome.expect_err("refused");
        let why = connector.describe(&e);
        assert!(
            why.starts_with("certificate verification failed: unknown issuer"),
            "{why}"
        );
        assert!(why.contains("--tls-ca ca.pem"), "{why}");
        // The client told the server why, with an alert.
        assert!(!client.socket_mut().sent.is_empty());
    }
}
