//! Non-blocking polling: the lessons' 非阻塞 server, with no readiness at all.
//!
//! ```text
//! cargo run --release --example nonblocking -- 127.0.0.1:7006
//! nc 127.0.0.1 7006            # type "hello" -> "HELLO"; many nc at once work
//! target/release/examples/nonblocking 127.0.0.1:7006 & sleep 2; ps -o %cpu= -p $!   # ~100: a core, with no client
//! ```
//!
//! `set_nonblocking(true)` on the listener and on every connection, a list
//! of connections, and one loop that tries everything in turn: `accept`,
//! then a `read` on each connection. `WouldBlock` (Python's
//! `BlockingIOError`) means "nothing there, next". Many clients, one
//! thread, no waiting: and no sleeping either. The loop asks the kernel
//! about every socket, thousands of times a second, whether anything
//! happened or not, so an idle server burns a whole core and every message
//! costs a pass over every connection. That is the point of this example:
//! the next models (`poll`, `reactor`) let the kernel say *which* socket is
//! ready, and sleep until one is.
//!
//! A connection with output the kernel refused is not read from until that
//! output is gone (the loop comes back to it anyway), so memory stays
//! bounded by one buffer per connection.
//!
//! Deliberately left out: a sleep in the loop (it would trade the burnt
//! core for latency), timeouts, limits, graceful shutdown.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};

struct Conn {
    stream: TcpStream,
    /// Bytes the kernel has not taken yet; while any wait, no reading.
    pending: Vec<u8>,
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7006".into());
    let listener = TcpListener::bind(&addr)?;
    listener.set_nonblocking(true)?;
    println!("listening on tcp://{}", listener.local_addr()?);

    let mut conns: Vec<Conn> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // The connection loop: every client waiting, until WouldBlock.
        accept_all(&listener, &mut conns);
        // The communication loop, one try per connection; false drops it.
        conns.retain_mut(|c| serve_once(c, &mut buf));
    }
}

/// Takes every connection waiting in the backlog; WouldBlock ends the try.
fn accept_all(listener: &TcpListener, conns: &mut Vec<Conn>) {
    loop {
        match listener.accept() {
            Ok((stream, _peer)) => {
                if stream.set_nonblocking(true).is_ok() {
                    let _ = stream.set_nodelay(true);
                    conns.push(Conn {
                        stream,
                        pending: Vec::new(),
                    });
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // WouldBlock: nobody waiting. A client that reset before we took
            // it, or out of descriptors: the next pass tries again (a
            // message per pass would flood the terminal).
            Err(_) => return,
        }
    }
}

/// Flushes what is owed, or reads once and answers; never waits.
/// Returns false when the connection is over.
fn serve_once(c: &mut Conn, buf: &mut [u8]) -> bool {
    if !c.pending.is_empty() {
        return flush(c);
    }
    let n = match c.stream.read(buf) {
        // 0 bytes: the client closed its side. (It may still read, but this
        // example owes it nothing: pending is empty.)
        Ok(0) => return false,
        Ok(n) => n,
        // Nothing there: next connection. This is the whole model.
        Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
        Err(e) if e.kind() == ErrorKind::Interrupted => return true,
        // Reset or another error: this client is gone.
        Err(_) => return false,
    };
    buf[..n].make_ascii_uppercase();
    c.pending.extend_from_slice(&buf[..n]);
    flush(c)
}

/// Writes what the kernel takes now and keeps the rest for the next pass.
fn flush(c: &mut Conn) -> bool {
    match c.stream.write(&c.pending) {
        Ok(0) => false,
        Ok(n) => {
            c.pending.drain(..n);
            true
        }
        // Send buffer full: try again on the next pass.
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => true,
        Err(_) => false,
    }
}
