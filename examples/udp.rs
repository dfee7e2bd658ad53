//! A UDP upper-case echo on a poll loop.
//!
//! ```text
//! cargo run --release --example udp -- 127.0.0.1:7004
//! nc -u 127.0.0.1 7004         # type "hello" -> "HELLO"
//! ```
//!
//! UDP has no connections, so there is nothing to accept and no slab: one
//! socket, one token, and every readable edge means "datagrams are
//! queued". Drain them to `WouldBlock`, answering each at once. A reply the
//! socket cannot take right now is dropped: UDP promises no delivery, and
//! queueing replies would only add memory and latency.
//!
//! Deliberately left out, and what the real server (`src/server/udp/`)
//! adds: the refusal of replies larger than requests (reflection
//! amplification), of datagrams from service ports (echo loops between
//! servers), per-source rate limits, and counting what was dropped.

use std::io::ErrorKind;

use mio::net::UdpSocket;
use mio::{Events, Interest, Poll, Token};

const SOCKET: Token = Token(0);

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7004".into());
    let addr = addr
        .parse()
        .map_err(|e| std::io::Error::new(ErrorKind::InvalidInput, format!("{addr}: {e}")))?;
    let mut poll = Poll::new()?;
    let mut socket = UdpSocket::bind(addr)?;
    poll.registry()
        .register(&mut socket, SOCKET, Interest::READABLE)?;
    println!("listening on udp://{}", socket.local_addr()?);

    let mut events = Events::with_capacity(64);
    // The largest UDP payload fits: a datagram is never cut short.
    let mut buf = vec![0u8; 65_536];
    loop {
        if let Err(e) = poll.poll(&mut events, None) {
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // One socket, so any event is ours: drain the queue.
        loop {
            let (len, from) = match socket.recv_from(&mut buf) {
                Ok(pair) => pair,
                // Queue empty: the next datagram raises a new edge.
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                // An ICMP error from an earlier reply (port unreachable):
                // it concerns that peer, not us. Carry on.
                Err(_) => continue,
            };
            buf[..len].make_ascii_uppercase();
            match socket.send_to(&buf[..len], from) {
                // Sent whole: a datagram is all or nothing.
                Ok(_) => {}
                // Send buffer full: drop this reply rather than queue it.
                Err(e) if e.kind() == ErrorKind::WouldBlock => {}
                Err(e) => eprintln!("reply to {from} failed: {e}"),
            }
        }
    }
}
