//! TLS for the server's connections: the identity it presents
//! ([`TlsIdentity`], loaded from PEM files), and [`TlsStream`], a
//! non-blocking socket wrapped in a rustls session that a `Connection`
//! reads and writes like any other stream.
//!
//! rustls is sans-IO: the stream moves records between the socket and the
//! session (`read_tls`, `write_tls`) and hands plaintext in and out, so a
//! TLS connection stays one state in the connection table, served by the
//! same code as a plain one: partial reads and writes, the watermarks,
//! half-close (a `close_notify` is the peer's EOF), the timeouts and the
//! drain. What TLS adds is a handshake before the first plaintext byte,
//! with its own deadline, and records the session made but the socket has
//! not taken yet (the transport backlog). It never sees the poll.

use std::fmt;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::conn::{Stream, Tick};
use super::transport::{failure, TlsCause, TransportNews};
use crate::net::{KernelQueues, TcpProgress};
use crate::tls_records::{self, take_plaintext, Inflow, Plaintext};

/// The certificate chain and key a TLS listener presents, ready for
/// sessions. Cheap to clone.
#[derive(Clone)]
pub struct TlsIdentity {
    config: Arc<rustls::ServerConfig>,
}

impl fmt::Debug for TlsIdentity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("TlsIdentity { .. }")
    }
}

/// Loading a TLS identity failed: which file, and what is wrong with it.
#[derive(Debug)]
pub struct TlsSetupError {
    /// The file at fault (the key file when the pair does not match).
    pub file: PathBuf,
    /// What is wrong, in words.
    pub problem: String,
}

impl fmt::Display for TlsSetupError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.file.display(), self.problem)
    }
}

impl std::error::Error for TlsSetupError {}

impl TlsIdentity {
    /// Loads a certificate chain (PEM, leaf first) and its private key
    /// (PEM: PKCS#8, SEC1 or PKCS#1), and checks that they belong
    /// together. TLS 1.2 and 1.3, the ring provider's safe defaults.
    ///
    /// # Errors
    ///
    /// A [`TlsSetupError`] naming the file: unreadable, no certificate or
    /// no key in it, not PEM, an encrypted key, a certificate rustls
    /// cannot parse, or a key that does not match the certificate.
    pub fn from_pem_files(cert: &Path, key: &Path) -> Result<TlsIdentity, TlsSetupError> {
        let fail = |file: &Path, problem: String| TlsSetupError {
            file: file.to_path_buf(),
            problem,
        };
        let chain = CertificateDer::pem_file_iter(cert)
            .map_err(|e| fail(cert, pem_problem(&e, "certificate")))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| fail(cert, pem_problem(&e, "certificate")))?;
        if chain.is_empty() {
            return Err(fail(cert, "no PEM certificate in it".into()));
        }
        let key_der = PrivateKeyDer::from_pem_file(key).map_err(|e| {
            if is_encrypted_key(key) {
                // Found by its marker: rustls skips the section as unknown
                // and would only say there is no key.
                fail(
                    key,
                    format!(
                        "encrypted private key: decrypt it first (openssl pkey -in {} -out plain.pem)",
                        key.display()
                    ),
                )
            } else {
                fail(key, pem_problem(&e, "private key"))
            }
        })?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ServerConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| fail(cert, e.to_string()))?
            .with_no_client_auth()
            .with_single_cert(chain, key_der)
            .map_err(|e| match e {
                rustls::Error::InconsistentKeys(_) => fail(
                    key,
                    format!("does not match the certificate in {}", cert.display()),
                ),
                // The key loaded; the leaf it is checked against did not
                // parse: the certificate file is at fault.
                rustls::Error::InvalidCertificate(c) => {
                    fail(cert, format!("not a usable certificate: {c}"))
                }
                other => fail(key, format!("unusable private key: {other}")),
            })?;
        Ok(TlsIdentity {
            config: Arc::new(config),
        })
    }

    /// A new server session for one connection.
    fn session(&self) -> io::Result<rustls::ServerConnection> {
        rustls::ServerConnection::new(Arc::clone(&self.config)).map_err(io::Error::other)
    }
}

/// A PEM error in words, byte strings shown as text.
fn pem_problem(e: &rustls::pki_types::pem::Error, what: &str) -> String {
    use rustls::pki_types::pem::Error;
    match e {
        Error::Io(io) => format!("cannot read it: {io}"),
        Error::NoItemsFound => format!("no PEM {what} in it"),
        // The marker is the section's label (`CERTIFICATE`).
        Error::MissingSectionEnd { end_marker } => format!(
            "not a PEM {what}: a section has no end line ('-----END {}-----' missing)",
            String::from_utf8_lossy(end_marker).trim()
        ),
        Error::IllegalSectionStart { line } => format!(
            "not a PEM {what}: bad section start line '{}'",
            String::from_utf8_lossy(line).trim()
        ),
        Error::Base64Decode(why) => format!("not a PEM {what}: bad base64 ({why})"),
        other => format!("not a PEM {what}: {other}"),
    }
}

/// True when the key file holds an encrypted key (PKCS#8's
/// `ENCRYPTED PRIVATE KEY`, or the legacy `Proc-Type: 4,ENCRYPTED`
/// header), which rustls cannot use.
fn is_encrypted_key(path: &Path) -> bool {
    let Ok(text) = std::fs::read(path) else {
        return false;
    };
    let has = |needle: &[u8]| text.windows(needle.len()).any(|w| w == needle);
    has(b"-----BEGIN ENCRYPTED PRIVATE KEY-----") || has(b"Proc-Type: 4,ENCRYPTED")
}

/// The most plaintext one TLS record carries (RFC 8446, 5.1).
const MAX_RECORD_PLAINTEXT: u64 = 16 * 1024;

/// A TCP socket carrying a TLS session.
pub struct TlsStream {
    sock: mio::net::TcpStream,
    /// Boxed: a session is a few hundred bytes and its buffers grow on use.
    session: Box<rustls::ServerConnection>,
    /// Plaintext handed to the session, and ciphertext the socket took:
    /// their ratio turns the kernel's acknowledged ciphertext into the
    /// plaintext it carried, for the timeouts and the cut.
    plain_out: u64,
    cipher_out: u64,
    /// When the handshake began; `None` once it is done.
    handshake_since: Option<Tick>,
    /// The last read returned plaintext short of an end it already knew
    /// of (close_notify, FIN, an error): the next read returns that end.
    end_pending: bool,
    news: Option<TransportNews>,
}

impl fmt::Debug for TlsStream {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TlsStream")
            .field("sock", &self.sock)
            .field("handshake_since", &self.handshake_since)
            .finish_non_exhaustive()
    }
}

impl TlsStream {
    /// Wraps an accepted socket in a new session presenting `identity`;
    /// the handshake starts with the client's first flight.
    ///
    /// # Errors
    ///
    /// rustls could not make a session (it does not, with a loaded
    /// identity; the error closes the connection if it ever does).
    pub fn new(
        sock: mio::net::TcpStream,
        identity: &TlsIdentity,
        now: Tick,
    ) -> io::Result<TlsStream> {
        Ok(TlsStream {
            sock,
            session: Box::new(identity.session()?),
            plain_out: 0,
            cipher_out: 0,
            handshake_since: Some(now),
            end_pending: false,
            news: None,
        })
    }

    /// The socket, for registering it with the poll.
    pub fn socket_mut(&mut self) -> &mut mio::net::TcpStream {
        &mut self.sock
    }

    /// Writes records the session made until it has none or the socket is
    /// full.
    fn write_out(&mut self) -> io::Result<()> {
        self.cipher_out += tls_records::write_out(&mut self.session, &mut self.sock)?;
        Ok(())
    }

    /// Reads records from the socket into the session once and processes
    /// them (an EOF, the session knows it now and says so on read). A
    /// session error sends its alert, if the socket takes it, and becomes
    /// a failure.
    /// The handshake has finished: tell the table once, with the version.
    fn note_handshake_done(&mut self) {
        if self.handshake_since.take().is_some() {
            let version = match self.session.protocol_version() {
                Some(rustls::ProtocolVersion::TLSv1_3) => "TLSv1.3",
                Some(rustls::ProtocolVersion::TLSv1_2) => "TLSv1.2",
                _ => "TLS",
            };
            self.news = Some(TransportNews::Handshaken(version));
        }
    }

    fn read_in(&mut self) -> io::Result<Inflow> {
        let inflow = tls_records::read_in(&mut self.session, &mut self.sock)?;
        if let Inflow::Records { .. } = inflow {
            let was_handshaking = self.session.is_handshaking();
            if let Err(e) = self.session.process_new_packets() {
                let _ = self.write_out();
                log::debug!("tls: {e}");
                if was_handshaking && !self.session.is_handshaking() {
                    // The client's last flight and the bad record came in
                    // one read: the handshake did finish, then the record
                    // broke the connection.
                    self.note_handshake_done();
                }
                if !self.session.is_handshaking() {
                    // After the handshake a bad record is the connection's
                    // error, not a failed handshake: counted as `error`.
                    return Err(io::Error::new(io::ErrorKind::InvalidData, e));
                }
                return Err(failure(TlsCause::of(&e)));
            }
        }
        Ok(inflow)
    }
}

impl Read for TlsStream {
    /// Plaintext, as much as fits or the socket holds. A short read means
    /// the socket said `WouldBlock` (or the peer ended), so the server's
    /// short-read shortcut stays sound. The peer's `close_notify`, or its
    /// FIN without one, is EOF.
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.end_pending = false;
        let mut got = 0;
        // The socket came back short at the last read of this call: it was
        // empty, and more raises a new edge (the short-read shortcut, one
        // syscall saved per message).
        let mut is_drained = false;
        loop {
            match take_plaintext(self.session.reader(), buf, &mut got)? {
                Plaintext::Full => return Ok(got),
                // EOF, after what came before it.
                Plaintext::End => {
                    self.end_pending = got > 0;
                    return Ok(got);
                }
                // Nothing buffered: read more records below.
                Plaintext::Drained => {}
            }
            if is_drained {
                return match got {
                    0 => Err(io::ErrorKind::WouldBlock.into()),
                    _ => Ok(got),
                };
            }
            match self.read_in() {
                Ok(Inflow::Records { is_drained: d }) => is_drained = d,
                Ok(Inflow::Eof) => {}
                Ok(Inflow::Empty) if got > 0 => return Ok(got),
                Ok(Inflow::Empty) => return Err(io::ErrorKind::WouldBlock.into()),
                Err(e) if got > 0 => {
                    // Hand over what came before the error; it comes back next.
                    log::trace!("tls: error after {got} B of plaintext: {e}");
                    self.end_pending = true;
                    return Ok(got);
                }
                Err(e) => return Err(e),
            }
            // Records the session answered (key updates, alerts) go out.
            self.write_out()?;
        }
    }
}

impl Write for TlsStream {
    /// Takes plaintext only while the socket takes its records: with
    /// records still waiting, `WouldBlock`, so the connection keeps the
    /// rest as pending output under the same watermarks as plain TCP.
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
        self.plain_out += n as u64;
        self.write_out()?;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.write_out()
    }
}

impl Stream for TlsStream {
    /// `close_notify`, then FIN after it.
    fn shutdown_write(&mut self) -> io::Result<()> {
        self.session.send_close_notify();
        self.write_out()?;
        self.sock.shutdown(std::net::Shutdown::Write)
    }

    fn reset_on_close(&self) -> io::Result<()> {
        self.sock.reset_on_close()
    }

    fn kernel_queues(&self) -> Option<KernelQueues> {
        self.sock.kernel_queues()
    }

    /// The kernel's account in plaintext terms: the acknowledged share of
    /// the ciphertext, as plaintext, less one whole record while anything
    /// is unacknowledged, since a peer cannot decrypt a record it has only
    /// part of. So what it counts as delivered may fall short of what the
    /// peer got, never exceed it.
    fn tcp_progress(&self) -> Option<TcpProgress> {
        let mut p = self.sock.tcp_progress()?;
        let unacked_cipher = self.cipher_out.saturating_sub(p.bytes_acked);
        let unacked_plain = if self.cipher_out == 0 || unacked_cipher == 0 {
            0
        } else {
            let share = u128::from(unacked_cipher) * u128::from(self.plain_out)
                / u128::from(self.cipher_out);
            (share as u64 + MAX_RECORD_PLAINTEXT).min(self.plain_out)
        };
        let waiting = u64::from(self.session.wants_write());
        p.bytes_acked = self.plain_out.saturating_sub(unacked_plain + waiting);
        Some(p)
    }

    fn transport_backlog(&self) -> bool {
        self.session.wants_write()
    }

    fn flush_transport(&mut self) -> io::Result<()> {
        self.write_out()
    }

    fn handshake_since(&self) -> Option<Tick> {
        self.handshake_since
    }

    fn advance_handshake(&mut self, is_hangup_reported: bool) -> io::Result<bool> {
        loop {
            self.write_out()?;
            if !self.session.is_handshaking() {
                self.note_handshake_done();
                // The last flight may have carried plaintext: the caller
                // reads it now, as no new edge will announce it.
                return Ok(true);
            }
            match self.read_in()? {
                Inflow::Records { is_drained: false } => {}
                // A short read, but the poll reported the client's FIN or
                // an error: it sits behind these bytes and no edge will
                // announce it again. Read on to it.
                Inflow::Records { is_drained: true } if is_hangup_reported => {}
                // Empty now: the client's next flight raises a new edge.
                Inflow::Records { is_drained: true } | Inflow::Empty => {
                    self.write_out()?;
                    if self.session.is_handshaking() {
                        return Ok(false);
                    }
                }
                Inflow::Eof => return Err(failure(TlsCause::Closed)),
            }
        }
    }

    fn take_news(&mut self) -> Option<TransportNews> {
        self.news.take()
    }

    fn end_pending(&self) -> bool {
        self.end_pending
    }
}
