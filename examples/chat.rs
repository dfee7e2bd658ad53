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
//! The third bound is the one a room forgets: a read budget. Draining a
//! flooding client to `WouldBlock` never ends when it sends faster than
//! the room reads, and everything read in that one turn is held until the
//! turn ends (without the budget, one `yes | nc` grew this room by about
//! 200 MB a second). So a client is read at most 16 times (256 KiB) per
//! turn, its lines are relayed, and it goes on a list of clients served
//! again on the next turn, which polls with a zero timeout while the list
//! is not empty: the edge that announced its data will not come again.
//! Memory is then at most one turn's lines plus 64 KiB per client.
//!
//! Deliberately left out: names, rooms, history, timeouts, shutdown.

use std::io::{ErrorKind, Read, Write};
use std::time::Duration;

use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};
use slab::Slab;

const LISTENER: Token = Token(usize::MAX);
/// The most a client may be owed before it is disconnected as too slow.
const MAX_OWED: usize = 64 * 1024;
/// The longest line accepted.
const MAX_LINE: usize = 4 * 1024;
/// Reads per client per turn (of 16 KiB each); then the others get theirs.
const READ_BUDGET: usize = 16;

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
    // Clients that spent their read budget with data still queued.
    let mut again: Vec<usize> = Vec::new();
    loop {
        // Zero while someone waits for another turn: no new edge will come
        // for the data it left in the kernel.
        let timeout = (!again.is_empty()).then_some(Duration::ZERO);
        if let Err(e) = poll.poll(&mut events, timeout) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut to_read = std::mem::take(&mut again);
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
            if event.is_readable() && !to_read.contains(&key) {
                to_read.push(key);
            }
        }
        for key in to_read {
            let (lines, more) = read_lines(&mut clients, key, &mut buf);
            for line in lines {
                broadcast(&poll, &mut clients, key, &line);
            }
            if more {
                again.push(key);
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

/// Reads what is queued for `key`, within the budget, and returns its
/// complete lines, and true if the budget ran out first (more may wait).
/// A client that closed or failed is removed here.
fn read_lines(clients: &mut Slab<Client>, key: usize, buf: &mut [u8]) -> (Vec<Vec<u8>>, bool) {
    let mut lines = Vec::new();
    let Some(c) = clients.get_mut(key) else {
        return (lines, false);
    };
    for _ in 0..READ_BUDGET {
        match c.stream.read(buf) {
            Ok(0) => {
                // The client left. (Lines it sent before leaving are kept.)
                clients.remove(key);
                return (lines, false);
            }
            Ok(n) => {
                c.partial.extend_from_slice(&buf[..n]);
                while let Some(end) = c.partial.iter().position(|&b| b == b'\n') {
                    lines.push(c.partial.drain(..=end).collect());
                }
                if c.partial.len() > MAX_LINE {
                    return (lines, false); // disconnected at the end of the round
                }
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => return (lines, false),
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => {
                clients.remove(key);
                return (lines, false);
            }
        }
    }
    // Budget spent: the rest waits in the kernel for the next turn.
    (lines, true)
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
        match clients.get_mut(key) {
            // Past its allowance: it is disconnected at the end of the
            // round; queueing more for it would only grow the room.
            Some(c) if c.owed.len() > MAX_OWED => continue,
            Some(c) => c.owed.extend_from_slice(&message),
            None => continue,
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
