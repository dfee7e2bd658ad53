//! A minimal readiness reactor: the seed of echo-reactor's server.
//!
//! ```text
//! cargo run --release --example reactor -- 127.0.0.1:7003
//! nc 127.0.0.1 7003            # type "hello" -> "HELLO"; many nc at once work
//! cargo run --release --example reactor -- 127.0.0.1:7003 --read-once   # the lab below
//! RUST_LOG=echo_reactor=trace cargo run --release -- serve   # the real one narrates the same steps
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
//! It also closes as soon as a client half-closes, dropping replies still
//! owed (the real server flushes them first).
//!
//! Lab: `--read-once` makes the classic edge-triggered mistake on purpose.
//! It reads at most 16 bytes per readable event and does not drain, so a
//! longer line leaves bytes in the kernel that raise no new edge: their
//! reply comes only when the client sends again (docs/GUIDE.md, "Labs").

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
    let args: Vec<String> = std::env::args().skip(1).collect();
    let read_once = args.iter().any(|a| a == "--read-once");
    let addr = args
        .iter()
        .find(|a| !a.starts_with("--"))
        .cloned()
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
    // The lab's small buffer makes "more queued than one read takes" easy
    // to see with a typed line.
    let mut buf = vec![0u8; if read_once { 16 } else { 64 * 1024 }];
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
            let open =
                open && (!event.is_readable() || read_all(&poll, key, conn, &mut buf, read_once));
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
fn read_all(poll: &Poll, key: usize, conn: &mut Conn, buf: &mut [u8], read_once: bool) -> bool {
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
        if !answer(poll, key, conn, &mut buf[..n]) {
            return false;
        }
        if read_once {
            // The lab's mistake: one read per event, as if the kernel would
            // remind us of what is left. With edges it never does.
            return true;
        }
    }
}

/// Uppercases `data` and writes it back, keeping what the kernel refuses.
/// Returns false to close.
fn answer(poll: &Poll, key: usize, conn: &mut Conn, data: &mut [u8]) -> bool {
    data.make_ascii_uppercase();
    if !conn.pending.is_empty() {
        // Older bytes are still waiting: keep order, queue behind them.
        conn.pending.extend_from_slice(data);
        return true;
    }
    // Write straight from the read buffer; keep only what is refused.
    let Some(written) = write_some(&mut conn.stream, data) else {
        return false;
    };
    if written < data.len() {
        conn.pending.extend_from_slice(&data[written..]);
        // Ask for WRITABLE only now that something waits: otherwise
        // every turn would wake us for a socket that is always writable.
        return poll
            .registry()
            .reregister(
                &mut conn.stream,
                Token(key),
                Interest::READABLE | Interest::WRITABLE,
            )
            .is_ok();
    }
    true
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
