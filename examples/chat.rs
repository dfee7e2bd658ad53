//! A chat room on a reactor: each line a client sends goes to all others.
//!
//! ```text
//! cargo run --release --example chat -- 127.0.0.1:7005
//! nc 127.0.0.1 7005            # in two or three terminals; type lines
//! ```
//!
//! What echo never needs: a write to *another* connection. A line from one
//! client is appended to every other client's output buffer through the
//! slab, written at once if the socket takes it, and the rest waits for
//! that client's writable edge. So each client has its own backpressure:
//! a slow reader's buffer grows while the others are served at full speed.
//! It may not grow forever: past 64 KiB owed, the slow client is
//! disconnected, because one stalled reader must not make the room hold
//! unbounded memory (the alternatives, dropping lines for it or pausing
//! the whole room, are worse for a chat). Lines are capped too (4 KiB): a
//! client that sends a longer one is disconnected. Either way the room
//! tries one last line, `* disconnected: ...`, before closing; a client
//! that sent a long line has room in its socket and reads it, but a slow
//! one has a full socket by definition, so the notice is lost and it
//! reads only what was already queued, then EOF.
//!
//! Deliberately left out: names, rooms, history, timeouts, shutdown.

use std::io::{ErrorKind, Read, Write};

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);
/// The most a client may be owed before it is disconnected as too slow.
const MAX_OWED: usize = 64 * 1024;
/// The longest line accepted.
const MAX_LINE: usize = 4 * 1024;

struct Client {
    stream: TcpStream,
    /// Bytes of a line not yet ended by '\n'.
    partial: Vec<u8>,
    /// Bytes owed to this client that its socket has not taken yet.
    owed: Vec<u8>,
    /// Registered for WRITABLE (only while `owed` is not empty).
    wants_write: bool,
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7005".into());
    let addr = addr
        .parse()
        .map_err(|e| std::io::Error::new(ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
    let mut poll = Poll::new()?;
    let mut listener = TcpListener::bind(addr)?;
    poll.registry()
        .register(&mut listener, LISTENER, Interest::READABLE)?;
    println!("listening on tcp://{}", listener.local_addr()?);

    let mut clients: Slab<Client> = Slab::new();
    let mut events = Events::with_capacity(1024);
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        for event in events.iter() {
            if event.token() == LISTENER {
                loop {
                    match listener.accept() {
                        Ok((mut stream, _)) => {
                            let entry = clients.vacant_entry();
                            let token = Token(entry.key());
                            poll.registry()
                                .register(&mut stream, token, Interest::READABLE)?;
                            entry.insert(Client {
                                stream,
                                partial: Vec::new(),
                                owed: Vec::new(),
                                wants_write: false,
                            });
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                        Err(_) => continue, // interrupted, or aborted before accept
                    }
                }
                continue;
            }
            let key = event.token().0;
            if event.is_writable() {
                send_owed(&poll, &mut clients, key);
            }
            if event.is_readable() {
                for line in read_lines(&mut clients, key, &mut buf) {
                    broadcast(&poll, &mut clients, key, &line);
                }
            }
        }
        // Close whoever was marked gone during this round.
        let gone: Vec<usize> = clients
            .iter()
            .filter(|(_, c)| c.partial.len() > MAX_LINE || c.owed.len() > MAX_OWED)
            .map(|(k, _)| k)
            .collect();
        for key in gone {
            let mut c = clients.remove(key);
            // Best effort, never waited for: a slow client's full socket
            // takes none of it (WouldBlock), and that is fine.
            let _ = c
                .stream
                .write(b"* disconnected: too slow or line too long\n");
        }
    }
}

/// Reads everything queued for `key` and returns its complete lines. A
/// client that closed or failed is removed here.
fn read_lines(clients: &mut Slab<Client>, key: usize, buf: &mut [u8]) -> Vec<Vec<u8>> {
    let Some(c) = clients.get_mut(key) else {
        return Vec::new();
    };
    let mut lines = Vec::new();
    loop {
        match c.stream.read(buf) {
            Ok(0) => {
                // The client left. (Lines it sent before leaving are kept.)
                clients.remove(key);
                return lines;
            }
            Ok(n) => {
                c.partial.extend_from_slice(&buf[..n]);
                while let Some(end) = c.partial.iter().position(|&b| b == b'\n') {
                    lines.push(c.partial.drain(..=end).collect());
                }
                if c.partial.len() > MAX_LINE {
                    return lines; // disconnected at the end of the round
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return lines,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                clients.remove(key);
                return lines;
            }
        }
    }
}

/// Queues `line` for every client but `from` and sends what each socket
/// takes now: the cross-connection write that echo never does.
fn broadcast(poll: &Poll, clients: &mut Slab<Client>, from: usize, line: &[u8]) {
    let message = [format!("[{from}] ").as_bytes(), line].concat();
    let keys: Vec<usize> = clients
        .iter()
        .map(|(k, _)| k)
        .filter(|&k| k != from)
        .collect();
    for key in keys {
        if let Some(c) = clients.get_mut(key) {
            c.owed.extend_from_slice(&message);
        }
        send_owed(poll, clients, key);
    }
}

/// Writes what `key` is owed until its socket is full; asks for WRITABLE
/// only while something is left. A broken client is removed.
fn send_owed(poll: &Poll, clients: &mut Slab<Client>, key: usize) {
    let Some(c) = clients.get_mut(key) else {
        return;
    };
    while !c.owed.is_empty() {
        match c.stream.write(&c.owed) {
            Ok(0) => break,
            Ok(n) => {
                c.owed.drain(..n);
            }
            // Full: this client reads slower than the room talks.
            Err(e) if e.kind() == ErrorKind::WouldBlock => break,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                clients.remove(key);
                return;
            }
        }
    }
    let wants_write = !c.owed.is_empty();
    if wants_write != c.wants_write {
        let interest = if wants_write {
            Interest::READABLE | Interest::WRITABLE
        } else {
            Interest::READABLE
        };
        let token = Token(key);
        if poll
            .registry()
            .reregister(&mut c.stream, token, interest)
            .is_ok()
        {
            c.wants_write = wants_write;
        }
    }
}
