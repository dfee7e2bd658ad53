//! A minimal readiness reactor: the seed of echo-reactor's server.
//!
//! ```text
//! cargo run --example reactor -- 127.0.0.1:7003
//! nc 127.0.0.1 7003            # type "hello" -> "HELLO"; many nc at once work
//! RUST_LOG=trace cargo run --release -- serve   # the real one narrates the same steps
//! ```
//!
//! One thread serves every client. It asks the kernel "which sockets are
//! ready?" (`Poll::poll`, epoll on Linux), and only then reads or writes,
//! never blocking. Each connection lives in a `Slab`; its key is its
//! `Token`, so an event leads straight to its state.
//!
//! Deliberately left out, and what the real server (`src/server/`) adds:
//! backpressure (here a client that never reads grows `pending` without
//! bound), a fairness budget (here one fast client can hog a turn), limits
//! on connections and descriptors, timeouts, graceful shutdown, UDP.

use std::io::{ErrorKind, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

/// The listener's token; connections get their slab key, which is never
/// this large.
const LISTENER: Token = Token(usize::MAX);

struct Conn {
    stream: TcpStream,
    /// Bytes the kernel has not taken yet. Empty almost always.
    pending: Vec<u8>,
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7003".into());
    let addr = addr
        .parse()
        .map_err(|e| std::io::Error::new(ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("listening on tcp://{}", listener.local_addr()?);

    let mut conns: Slab<Conn> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        // Sleep until something is ready. Interrupted: a signal; poll again.
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                accept_all(&poll, &listener, &mut conns)?;
                continue;
            }
            let key = event.token().0;
            let Some(conn) = conns.get_mut(key) else {
                continue; // closed earlier in this batch
            };
            let open = if event.is_writable() && !conn.pending.is_empty() {
                flush(&poll, key, conn)
            } else {
                true
            };
            let open = open && (!event.is_readable() || read_all(&poll, key, conn, &mut buf));
            if !open {
                // Dropping the stream closes the socket and leaves epoll.
                conns.remove(key);
            }
        }
    }
}

/// Accept until the backlog is empty: edge-triggered readiness will not
/// tell us again about connections still waiting.
fn accept_all(poll: &Poll, listener: &TcpListener, conns: &mut Slab<Conn>) -> std::io::Result<()> {
    loop {
        match listener.accept() {
            Ok((mut stream, _peer)) => {
                let entry = conns.vacant_entry();
                poll.registry()
                    .register(&mut stream, Token(entry.key()), Interest::READABLE)?;
                entry.insert(Conn {
                    stream,
                    pending: Vec::new(),
                });
            }
            // Backlog empty: wait for the next readable edge.
            Err(e) if e.kind() == ErrorKind::WouldBlock => return Ok(()),
            // Interrupted, or a client that reset before we got to it.
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(e) if e.kind() == ErrorKind::ConnectionAborted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Read until WouldBlock (the kernel's queue is empty: the next data will
/// raise a new edge), answering each read. Returns false to close.
fn read_all(poll: &Poll, key: usize, conn: &mut Conn, buf: &mut [u8]) -> bool {
    loop {
        let n = match conn.stream.read(buf) {
            // 0 bytes: the client closed its side. (The real server keeps
            // flushing what it owes first; we simply close.)
            Ok(0) => return false,
            Ok(n) => n,
            // Drained: stop here, or we would spin or block.
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            // Reset or any other error: this client is gone.
            Err(_) => return false,
        };
        buf[..n].make_ascii_uppercase();
        if !conn.pending.is_empty() {
            // Older bytes are still waiting: keep order, queue behind them.
            conn.pending.extend_from_slice(&buf[..n]);
            continue;
        }
        // Write straight from the read buffer; keep only what is refused.
        let written = match write_some(&mut conn.stream, &buf[..n]) {
            Some(w) => w,
            None => return false,
        };
        if written < n {
            conn.pending.extend_from_slice(&buf[written..n]);
            // Ask for WRITABLE only now that something waits: otherwise
            // every turn would wake us for a socket that is always writable.
            if poll
                .registry()
                .reregister(
                    &mut conn.stream,
                    Token(key),
                    Interest::READABLE | Interest::WRITABLE,
                )
                .is_err()
            {
                return false;
            }
        }
    }
}

/// The socket has room again: send what waits; once empty, stop asking
/// for WRITABLE. Returns false to close.
fn flush(poll: &Poll, key: usize, conn: &mut Conn) -> bool {
    let Some(written) = write_some(&mut conn.stream, &conn.pending) else {
        return false;
    };
    // A partial write: the rest waits for the next writable edge.
    conn.pending.drain(..written);
    if conn.pending.is_empty() {
        return poll
            .registry()
            .reregister(&mut conn.stream, Token(key), Interest::READABLE)
            .is_ok();
    }
    true
}

/// Writes as much of `data` as the kernel takes now: `Some(bytes taken)`,
/// or `None` when the connection is broken.
fn write_some(stream: &mut TcpStream, data: &[u8]) -> Option<usize> {
    let mut done = 0;
    while done < data.len() {
        match stream.write(&data[done..]) {
            Ok(0) => return None,
            Ok(n) => done += n,
            // Send buffer full: the client is slower than we are. Keep the rest.
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // Broken pipe, reset: the client is gone.
            Err(_) => return None,
        }
    }
    Some(done)
}
