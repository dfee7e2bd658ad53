//! `echo-reactor client`: the socket tutorials' line client, done right.
//!
//! Read a line, skip it if empty, send it, print the reply, repeat; exit 0
//! at end of input. On a terminal it prompts `>>: `; with stdin from a pipe
//! it prints replies only, so it can be scripted:
//!
//! ```text
//! printf 'hello\nworld\n' | echo-reactor client 127.0.0.1:7007
//! ```
//!
//! **What is sent.** The line without its line ending (`\n` or `\r\n`), as
//! the tutorials' `input().strip()` client does. A line with nothing but
//! white space counts as empty and is skipped.
//!
//! **When a reply is complete.** A byte stream has no message boundaries,
//! so the client decides: for echo-like servers a reply is as long as the
//! request, and the client stops reading as soon as that many bytes came.
//! A server that answers with fewer bytes (or more, slowly) gets a quiet
//! time: once some bytes arrived and nothing more comes for 200 ms, the
//! reply is what arrived. A server that sends nothing at all (discard) gets
//! `--timeout` (5 s) and a "no reply" note on stderr; the session goes on,
//! and the exit status is 1 at the end. UDP needs no rule: one datagram is
//! one reply.
//!
//! **A long line.** An echo of a long line streams back while the line
//! streams out, and a server stops reading once its echo waits for us.
//! So the TCP client reads while it writes: the socket is non-blocking
//! behind a poll of its own, and each turn sends what the kernel takes and
//! reads what came. `--timeout` bounds every wait: a line that makes no
//! progress for that long (the server stopped reading) ends the session.
//!
//! **Errors.** An unreachable server, a server that closes or resets the
//! connection, a server that stops reading, or a UDP port with nothing
//! behind it ends the session with one line on stderr and exit status 1 (a
//! server that sends its last reply and then FIN is fine as long as no
//! line is left to send). Errors name their side: the socket, stdin or
//! stdout. A closed stdout (the reader went away, as `| head -1` does)
//! ends the session quietly with exit status 0, like other line tools.
//! UDP stays blocking, with timeouts on both calls: one datagram out, one
//! back, nothing to interleave.
//!
//! **TLS.** `client tls://HOST:PORT` speaks the same lines over a TLS
//! session: the handshake comes first, bounded by `--timeout`, and a
//! certificate the client does not trust ends the session at once with
//! what failed (unknown issuer, name mismatch, expired). The session's
//! records go through the same non-blocking turns as plain bytes; at the
//! end of input the client sends `close_notify`, then FIN.

use std::io::{self, BufRead, ErrorKind, IsTerminal, Read, Write};
use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use mio::{Events, Interest, Poll, Token};

use crate::net;
use crate::tls_client::{TlsConnector, TlsStream};

/// After the first bytes of a reply, this long without more ends it.
pub const QUIET: Duration = Duration::from_millis(200);

/// What a session needs to know.
#[derive(Debug, Clone)]
pub struct ClientConfig {
    /// The server's addresses, as its name resolved: TCP tries each in
    /// turn until one accepts; UDP, which has no handshake to try, uses
    /// the first.
    pub addrs: Vec<SocketAddr>,
    /// One datagram per line instead of one TCP connection.
    pub udp: bool,
    /// How long to wait for the first byte of a reply (and for the TLS
    /// handshake).
    pub timeout: Duration,
    /// TLS over the TCP connection, begun so; `None`: plain TCP.
    pub tls: Option<TlsConnector>,
}

/// How a session ended badly.
#[derive(Debug)]
pub enum ClientError {
    /// The connection could not be made.
    Connect(SocketAddr, io::Error),
    /// The TLS handshake with the server failed: what failed, in words.
    Tls(SocketAddr, String),
    /// The server closed the connection while replies were still expected.
    Closed,
    /// The server reset the connection.
    Reset,
    /// ICMP said nothing listens on that UDP port.
    Unreachable(SocketAddr),
    /// At least one request got no reply at all.
    NoReply(u64),
    /// The server took nothing more of a line for `--timeout`: it stopped
    /// reading.
    Stalled {
        /// Bytes of the line the kernel took.
        sent: usize,
        /// Bytes in the line.
        len: usize,
        /// `--timeout`.
        timeout: Duration,
    },
    /// Reading stdin failed.
    Stdin(io::Error),
    /// Writing stdout failed (other than its reader going away).
    Stdout(io::Error),
    /// Another socket error.
    Socket(io::Error),
}

impl std::fmt::Display for ClientError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ClientError::Connect(addr, e) => write!(f, "cannot connect to {addr}: {e}"),
            ClientError::Tls(addr, why) => write!(f, "TLS with {addr} failed: {why}"),
            ClientError::Closed => f.write_str("the server closed the connection"),
            ClientError::Reset => f.write_str("the server reset the connection"),
            ClientError::Unreachable(addr) => {
                write!(f, "nothing answers on udp://{addr} (port unreachable)")
            }
            ClientError::NoReply(n) => write!(f, "{n} request(s) got no reply"),
            ClientError::Stalled { sent, len, timeout } => write!(
                f,
                "the server stopped reading: {sent} of the line's {len} bytes went out, \
                 then nothing more for {} s (--timeout)",
                timeout.as_secs_f64()
            ),
            ClientError::Stdin(e) => write!(f, "cannot read stdin: {e}"),
            ClientError::Stdout(e) => write!(f, "cannot write stdout: {e}"),
            ClientError::Socket(e) => write!(f, "socket error: {e}"),
        }
    }
}

impl std::error::Error for ClientError {}

/// Only socket errors convert: stdin and stdout errors are named where
/// they happen, so a broken pipe on stdout is never taken for the server's
/// reset.
impl From<io::Error> for ClientError {
    fn from(e: io::Error) -> Self {
        if net::is_peer_gone(&e) {
            ClientError::Reset
        } else {
            ClientError::Socket(e)
        }
    }
}

/// One request, one reply: the transport behind a session.
trait Exchange {
    /// Sends `line` and returns the reply, or `None` when none came.
    fn exchange(&mut self, line: &[u8]) -> Result<Option<Vec<u8>>, ClientError>;
}

/// Runs a session over stdin and stdout until end of input.
///
/// # Errors
///
/// [`ClientError`] for an unreachable server, a server that closed or
/// reset, requests without replies, or a failing terminal.
pub fn run(config: &ClientConfig) -> Result<(), ClientError> {
    let stdin = io::stdin();
    let prompt = stdin.is_terminal();
    let mut input = stdin.lock();
    let mut output = io::stdout().lock();
    let result = if config.udp {
        let mut udp = Udp::connect(config)?;
        session(&mut udp, &mut input, &mut output, prompt)
    } else {
        let mut tcp = Tcp::connect(config)?;
        let result = session(&mut tcp, &mut input, &mut output, prompt);
        // End of input: tell the server we are done (FIN, not a reset;
        // close_notify first over TLS).
        let _ = tcp.stream.shutdown_write();
        result
    };
    match result {
        // Whoever read our output has gone (`| head -1`): nothing left to do.
        Err(ClientError::Stdout(e)) if e.kind() == ErrorKind::BrokenPipe => Ok(()),
        other => other,
    }
}

/// The line loop, apart from stdin and stdout so tests can drive it.
fn session(
    transport: &mut dyn Exchange,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
    prompt: bool,
) -> Result<(), ClientError> {
    let mut unanswered = 0;
    let mut line = Vec::new();
    let out = |r: io::Result<()>| r.map_err(ClientError::Stdout);
    loop {
        if prompt {
            out(output.write_all(b">>: ").and_then(|()| output.flush()))?;
        }
        line.clear();
        if input
            .read_until(b'\n', &mut line)
            .map_err(ClientError::Stdin)?
            == 0
        {
            if prompt {
                out(output.write_all(b"\n"))?;
            }
            break;
        }
        let request = strip_line_ending(&line);
        if request.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match transport.exchange(request)? {
            Some(reply) => out(output
                .write_all(&reply)
                .and_then(|()| output.write_all(b"\n"))
                .and_then(|()| output.flush()))?,
            None => {
                unanswered += 1;
                eprintln!("no reply");
            }
        }
    }
    if unanswered > 0 {
        return Err(ClientError::NoReply(unanswered));
    }
    Ok(())
}

fn strip_line_ending(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}

/// The client's one socket in its poll.
const SOCKET: Token = Token(0);

/// Bytes read per call.
const READ_CHUNK: usize = 64 * 1024;

/// The client's byte stream: the socket, or a TLS session over it.
#[derive(Debug)]
enum Stream {
    Plain(mio::net::TcpStream),
    Tls(TlsStream),
}

impl Stream {
    fn socket_mut(&mut self) -> &mut mio::net::TcpStream {
        match self {
            Stream::Plain(s) => s,
            Stream::Tls(t) => t.socket_mut(),
        }
    }

    /// The end of our output: FIN, after `close_notify` over TLS.
    fn shutdown_write(&mut self) -> io::Result<()> {
        if let Stream::Tls(t) = self {
            t.close_notify()?;
        }
        self.socket_mut().shutdown(std::net::Shutdown::Write)
    }
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(t) => t.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(t) => t.write(buf),
        }
    }

    /// TLS: the records the socket did not take yet; plain: nothing.
    fn flush(&mut self) -> io::Result<()> {
        match self {
            Stream::Plain(_) => Ok(()),
            Stream::Tls(t) => t.flush(),
        }
    }
}

/// One persistent TCP connection, non-blocking in a poll of its own so
/// that the reply can be read while the line is still going out.
struct Tcp {
    stream: Stream,
    poll: Poll,
    events: Events,
    scratch: Box<[u8]>,
    timeout: Duration,
    /// The server sent FIN after the last reply: the next request fails.
    is_closed: bool,
}

/// What ends the wait a turn of [`Tcp::exchange`] is in, when it runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Wait {
    /// The line is not all out and nothing moved: the server stopped reading.
    Sending,
    /// The line is out and no reply byte came: no reply.
    FirstByte,
    /// Some reply came and then nothing more: that was the reply.
    Quiet,
}

impl Tcp {
    fn connect(config: &ClientConfig) -> Result<Tcp, ClientError> {
        let (stream, addr) = crate::resolve::connect_first(&config.addrs, config.timeout)
            .map_err(|(addr, e)| ClientError::Connect(addr, e))?;
        // Lines are small and interactive: no Nagle delay.
        let _ = stream.set_nodelay(true);
        stream
            .set_nonblocking(true)
            .map_err(|e| ClientError::Connect(addr, e))?;
        let mut stream = mio::net::TcpStream::from_std(stream);
        let poll = Poll::new()?;
        // Both at once, edge-triggered: every turn writes and reads until
        // the kernel says WouldBlock, so no edge is ever missed.
        poll.registry()
            .register(&mut stream, SOCKET, Interest::READABLE | Interest::WRITABLE)?;
        let stream = match &config.tls {
            Some(connector) => Stream::Tls(
                TlsStream::new(stream, connector)
                    .map_err(|e| ClientError::Tls(addr, connector.describe(&e)))?,
            ),
            None => Stream::Plain(stream),
        };
        let mut tcp = Tcp {
            stream,
            poll,
            events: Events::with_capacity(4),
            scratch: vec![0; READ_CHUNK].into_boxed_slice(),
            timeout: config.timeout,
            is_closed: false,
        };
        if let Some(connector) = &config.tls {
            tcp.handshake(connector, addr)?;
        }
        Ok(tcp)
    }

    /// Makes the TLS handshake, within `--timeout`.
    fn handshake(&mut self, connector: &TlsConnector, addr: SocketAddr) -> Result<(), ClientError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let Stream::Tls(tls) = &mut self.stream else {
                return Ok(());
            };
            match tls.handshake() {
                Ok(true) => return Ok(()),
                Ok(false) => {}
                Err(e) => return Err(ClientError::Tls(addr, connector.describe(&e))),
            }
            let now = Instant::now();
            if now >= deadline {
                let why = format!(
                    "the handshake was not done within {} s (--timeout)",
                    self.timeout.as_secs_f64()
                );
                return Err(ClientError::Tls(addr, why));
            }
            self.wait(deadline - now)?;
        }
    }

    /// Sends what the kernel takes of `data`; how many bytes it took.
    fn send_some(&mut self, data: &[u8]) -> Result<usize, ClientError> {
        let mut sent = 0;
        while sent < data.len() {
            match self.stream.write(&data[sent..]) {
                Ok(0) => return Err(io::Error::from(ErrorKind::WriteZero).into()),
                Ok(n) => sent += n,
                // Send buffer full: a writable edge, or reading, moves it on.
                Err(e) if net::is_would_block(&e) => break,
                Err(e) if net::is_interrupted(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(sent)
    }

    /// Reads what has come, until the reply holds `want` bytes or the
    /// socket is empty; how many bytes came, and whether the server's FIN
    /// was among them.
    fn read_some(
        &mut self,
        reply: &mut Vec<u8>,
        want: usize,
    ) -> Result<(usize, bool), ClientError> {
        let mut got = 0;
        while reply.len() < want {
            match self.stream.read(&mut self.scratch) {
                Ok(0) => return Ok((got, true)),
                Ok(n) => {
                    reply.extend_from_slice(&self.scratch[..n]);
                    got += n;
                }
                // Queue drained: the next edge wakes the poll.
                Err(e) if net::is_would_block(&e) => break,
                Err(e) if net::is_interrupted(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok((got, false))
    }

    /// Sleeps until the socket has news or `limit` passes.
    fn wait(&mut self, limit: Duration) -> Result<(), ClientError> {
        match self.poll.poll(&mut self.events, Some(limit)) {
            Ok(()) => Ok(()),
            Err(e) if net::is_interrupted(&e) => Ok(()),
            Err(e) => Err(ClientError::Socket(e)),
        }
    }
}

impl Exchange for Tcp {
    fn exchange(&mut self, line: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        if self.is_closed {
            return Err(ClientError::Closed);
        }
        let mut reply = Vec::with_capacity(line.len());
        let mut sent = 0;
        // The last time a byte moved either way, the line was all out, and
        // the last reply byte came: the three clocks of the three waits.
        let mut moved_at = Instant::now();
        let mut sent_at = None;
        let mut replied_at = None;
        loop {
            // TLS: records of what was already taken may wait for room.
            match self.stream.flush() {
                Ok(()) => {}
                Err(e) if net::is_interrupted(&e) => {}
                Err(e) => return Err(e.into()),
            }
            if sent < line.len() {
                let n = self.send_some(&line[sent..])?;
                sent += n;
                if n > 0 {
                    moved_at = Instant::now();
                }
                if sent == line.len() {
                    sent_at = Some(moved_at);
                }
            }
            let (got, is_fin) = self.read_some(&mut reply, line.len())?;
            let now = Instant::now();
            if got > 0 {
                moved_at = now;
                replied_at = Some(now);
            }
            if reply.len() >= line.len() {
                return Ok(Some(reply));
            }
            if is_fin {
                // FIN before any reply: the server is gone. After some
                // bytes: that was the reply, and the last one.
                if reply.is_empty() {
                    return Err(ClientError::Closed);
                }
                self.is_closed = true;
                return Ok(Some(reply));
            }
            let (wait, deadline) = match (sent_at, replied_at) {
                (None, _) => (Wait::Sending, moved_at + self.timeout),
                (Some(out), None) => (Wait::FirstByte, out + self.timeout),
                (Some(out), Some(last)) => (Wait::Quiet, out.max(last) + QUIET),
            };
            if now >= deadline {
                return match wait {
                    Wait::Sending => Err(ClientError::Stalled {
                        sent,
                        len: line.len(),
                        timeout: self.timeout,
                    }),
                    Wait::FirstByte => Ok(None),
                    Wait::Quiet => Ok(Some(reply)),
                };
            }
            self.wait(deadline - now)?;
        }
    }
}

/// One connected UDP socket: a datagram per line, a datagram per reply.
struct Udp {
    socket: UdpSocket,
    addr: SocketAddr,
}

impl Udp {
    fn connect(config: &ClientConfig) -> Result<Udp, ClientError> {
        let addr = config.addrs.first().copied().ok_or_else(|| {
            let none = io::Error::new(io::ErrorKind::InvalidInput, "no address to send to");
            ClientError::Connect(SocketAddr::from(([0; 4], 0)), none)
        })?;
        let socket = UdpSocket::bind(net::unspecified_for(addr))
            .map_err(|e| ClientError::Connect(addr, e))?;
        // Connected: only the server's datagrams arrive, and ICMP "port
        // unreachable" comes back as an error instead of silence.
        socket
            .connect(addr)
            .map_err(|e| ClientError::Connect(addr, e))?;
        socket.set_read_timeout(Some(config.timeout))?;
        // A send blocks only while the socket's own buffer is full; bound
        // that too.
        socket.set_write_timeout(Some(config.timeout))?;
        Ok(Udp { socket, addr })
    }
}

impl Exchange for Udp {
    fn exchange(&mut self, line: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
        let refused = |e: &io::Error| e.kind() == ErrorKind::ConnectionRefused;
        let timed_out =
            |e: &io::Error| matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut);
        loop {
            match self.socket.send(line) {
                Ok(_) => break,
                Err(e) if net::is_interrupted(&e) => {}
                Err(e) if refused(&e) => return Err(ClientError::Unreachable(self.addr)),
                // The socket's own buffer stayed full for the whole timeout.
                Err(e) if timed_out(&e) => {
                    return Err(ClientError::Socket(io::Error::new(
                        ErrorKind::TimedOut,
                        "the datagram could not be sent within the timeout (--timeout)",
                    )))
                }
                Err(e) => return Err(e.into()),
            }
        }
        let mut buf = vec![0u8; 65_536];
        loop {
            return match self.socket.recv(&mut buf) {
                Ok(n) => {
                    buf.truncate(n);
                    Ok(Some(buf))
                }
                Err(e) if timed_out(&e) => Ok(None),
                Err(e) if net::is_interrupted(&e) => continue,
                Err(e) if refused(&e) => Err(ClientError::Unreachable(self.addr)),
                Err(e) => Err(e.into()),
            };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Answers each request uppercased, or not at all for "silence".
    struct Upper(Vec<Vec<u8>>);

    impl Exchange for Upper {
        fn exchange(&mut self, line: &[u8]) -> Result<Option<Vec<u8>>, ClientError> {
            self.0.push(line.to_vec());
            Ok((line != b"silence").then(|| line.to_ascii_uppercase()))
        }
    }

    fn run_session(input: &str, prompt: bool) -> (Result<(), ClientError>, String, Vec<Vec<u8>>) {
        let mut t = Upper(Vec::new());
        let mut out = Vec::new();
        let r = session(&mut t, &mut input.as_bytes(), &mut out, prompt);
        (r, String::from_utf8_lossy(&out).into_owned(), t.0)
    }

    #[test]
    fn sends_lines_without_endings_and_skips_empty_ones() {
        let (r, out, sent) = run_session("hello\n\n  \r\nworld\r\nlast", false);
        assert!(r.is_ok());
        assert_eq!(out, "HELLO\nWORLD\nLAST\n");
        assert_eq!(sent, [&b"hello"[..], b"world", b"last"]);
    }

    #[test]
    fn prompts_only_on_a_terminal() {
        let (_, out, _) = run_session("hi\n", true);
        assert_eq!(out, ">>: HI\n>>: \n");
    }

    /// A stdin or stdout that fails with `kind`.
    struct Failing(ErrorKind);

    impl Read for Failing {
        fn read(&mut self, _: &mut [u8]) -> io::Result<usize> {
            Err(self.0.into())
        }
    }

    impl BufRead for Failing {
        fn fill_buf(&mut self) -> io::Result<&[u8]> {
            Err(self.0.into())
        }
        fn consume(&mut self, _: usize) {}
    }

    impl Write for Failing {
        fn write(&mut self, _: &[u8]) -> io::Result<usize> {
            Err(self.0.into())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn stdin_stdout_and_socket_errors_name_their_side() {
        let mut t = Upper(Vec::new());
        let mut out = Vec::new();
        let r = session(&mut t, &mut Failing(ErrorKind::Other), &mut out, false);
        let e = r.unwrap_err();
        assert!(matches!(e, ClientError::Stdin(_)), "{e:?}");
        assert!(e.to_string().contains("stdin"), "{e}");
        let r = session(
            &mut t,
            &mut &b"hi\n"[..],
            &mut Failing(ErrorKind::BrokenPipe),
            false,
        );
        let e = r.unwrap_err();
        assert!(matches!(e, ClientError::Stdout(_)), "{e:?}");
        assert!(e.to_string().contains("stdout"), "{e}");
        let e = ClientError::from(io::Error::from(ErrorKind::ConnectionReset));
        assert!(matches!(e, ClientError::Reset), "{e:?}");
    }

    #[test]
    fn a_missing_reply_is_reported_at_the_end() {
        let (r, out, _) = run_session("silence\nafter\n", false);
        assert_eq!(out, "AFTER\n");
        assert!(matches!(r, Err(ClientError::NoReply(1))));
    }
}
