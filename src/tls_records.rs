//! Moving TLS records between a non-blocking socket and a rustls session,
//! the part both ends share: the server's `TlsStream` (`server/tls.rs`)
//! and the clients' (`tls_client/stream.rs`). rustls is sans-IO: it reads
//! records from whatever `Read` it is given and writes them to a `Write`;
//! these two functions are that, with the socket's `WouldBlock` and
//! `Interrupted` handled once; and taking the plaintext the session has
//! decrypted, with its two ways to end. What a record means (a handshake
//! step, plaintext, an alert) stays with each end.

use std::io::{self, Read, Write};

use crate::net::{is_interrupted, is_would_block};

/// Whether a read that did not fill its buffer emptied the socket's
/// queue, so that new data raises a new edge: Linux's epoll promises it.
pub(crate) const SHORT_READ_IS_EMPTY: bool = cfg!(target_os = "linux");

/// What one read of records from the socket brought.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Inflow {
    /// Records, not yet processed. `is_drained`: the read came back short
    /// of what the session asked for, so the socket was empty then and the
    /// read that would only say `WouldBlock` can be skipped (Linux).
    Records { is_drained: bool },
    /// Nothing: the socket said `WouldBlock`.
    Empty,
    /// The peer's FIN.
    Eof,
}

/// The socket as the session reads it, noting whether a read came back
/// short.
struct Noting<'a, S> {
    sock: &'a mut S,
    is_short: bool,
}

impl<S: Read> Read for Noting<'_, S> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.sock.read(buf)?;
        self.is_short = n < buf.len();
        Ok(n)
    }
}

/// Reads records from `sock` into `session` once (one `read`, retried
/// only when interrupted). The caller processes them.
///
/// # Errors
///
/// The socket's, other than `WouldBlock` and `Interrupted`; or rustls's
/// when its buffer of unprocessed records is full.
pub(crate) fn read_in<D>(
    session: &mut rustls::ConnectionCommon<D>,
    sock: &mut impl Read,
) -> io::Result<Inflow> {
    loop {
        let mut noting = Noting {
            sock: &mut *sock,
            is_short: false,
        };
        return match session.read_tls(&mut noting) {
            Ok(0) => Ok(Inflow::Eof),
            Ok(_) => Ok(Inflow::Records {
                is_drained: SHORT_READ_IS_EMPTY && noting.is_short,
            }),
            Err(e) if is_would_block(&e) => Ok(Inflow::Empty),
            Err(e) if is_interrupted(&e) => continue,
            Err(e) => Err(e),
        };
    }
}

/// Writes the records `session` made to `sock` until it has none or the
/// socket is full (the rest goes on the next writable edge). Returns the
/// bytes the socket took.
///
/// # Errors
///
/// The socket's, other than `WouldBlock` and `Interrupted`.
pub(crate) fn write_out<D>(
    session: &mut rustls::ConnectionCommon<D>,
    sock: &mut impl Write,
) -> io::Result<u64> {
    let mut sent = 0u64;
    while session.wants_write() {
        match session.write_tls(sock) {
            Ok(n) => sent += n as u64,
            Err(e) if is_would_block(&e) => break,
            Err(e) if is_interrupted(&e) => {}
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// What taking the session's decrypted plaintext left.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plaintext {
    /// The buffer is full.
    Full,
    /// The peer ended after what was taken: its `close_notify`, or its FIN
    /// without one (an end all the same).
    End,
    /// The session holds no more: more records must be read.
    Drained,
}

/// Moves the plaintext the session has decrypted into `buf[*got..]`,
/// advancing `got`, until the buffer is full, the session has no more,
/// or the peer's end comes.
///
/// # Errors
///
/// What the session's reader says, other than that it is empty or ended.
pub(crate) fn take_plaintext(
    mut reader: impl Read,
    buf: &mut [u8],
    got: &mut usize,
) -> io::Result<Plaintext> {
    loop {
        match reader.read(&mut buf[*got..]) {
            Ok(0) => return Ok(Plaintext::End),
            Ok(n) => {
                *got += n;
                if *got == buf.len() {
                    return Ok(Plaintext::Full);
                }
            }
            Err(e) if is_would_block(&e) => return Ok(Plaintext::Drained),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(Plaintext::End),
            Err(e) => return Err(e),
        }
    }
}
