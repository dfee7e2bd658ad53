//! IO multiplexing the old way: `poll(2)`, level-triggered, the interest
//! list handed to the kernel on every call.
//!
//! ```text
//! cargo run --release --example poll -- 127.0.0.1:7008
//! nc 127.0.0.1 7008            # type "hello" -> "HELLO"; many nc at once work
//! strace -e trace=poll target/release/examples/poll 127.0.0.1:7008   # one pollfd per socket, every call
//! ```
//!
//! What `select` and `poll` gave the lessons' 非阻塞 loop: one call that
//! sleeps until *some* socket is ready and says which. Python's
//! `select.select` and `select.poll` are these calls. Two things make it
//! cheap to write and dear to run:
//!
//! - **Level-triggered.** A socket with unread bytes is reported on every
//!   call, so one read per event is enough: what it leaves behind is
//!   reported again. (The `reactor` example must drain instead.)
//! - **The whole list, every time.** The kernel keeps no interest list:
//!   each call passes an array with every socket (`pollfd`), the kernel
//!   checks each, and the program walks the array again to find the few
//!   with `revents`. At 10,000 idle connections a message costs a pass
//!   over 10,000 entries, twice. epoll keeps the list in the kernel
//!   (registered once) and returns only the ready ones; `cargo bench
//!   --bench models -- idle` measures the difference.
//!
//! Deliberately left out: timeouts, limits, the pause on `EMFILE` (see
//! `src/server/accept.rs`), graceful shutdown. Linux and other Unix
//! systems (`poll` through `libc`).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

struct Conn {
    stream: TcpStream,
    /// Bytes the kernel has not taken yet; while any wait, we ask for
    /// POLLOUT instead of POLLIN.
    pending: Vec<u8>,
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7008".into());
    let listener = TcpListener::bind(&addr)?;
    listener.set_nonblocking(true)?;
    println!("listening on tcp://{}", listener.local_addr()?);

    let mut conns: Vec<Conn> = Vec::new();
    let mut fds: Vec<libc::pollfd> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // The interest list, rebuilt for every call: entry 0 the listener,
        // entry i + 1 connection i.
        fds.clear();
        fds.push(pollfd(listener.as_raw_fd(), libc::POLLIN));
        for c in &conns {
            let wanted = if c.pending.is_empty() {
                libc::POLLIN
            } else {
                libc::POLLOUT
            };
            fds.push(pollfd(c.stream.as_raw_fd(), wanted));
        }
        // SAFETY: `fds` is a valid array of `fds.len()` pollfd structs that
        // lives across the call; -1 waits without a timeout.
        let ready = unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, -1) };
        if ready < 0 {
            let e = std::io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        // Walk every entry to find the ready ones: O(connections) per call.
        let mut entry = fds[1..].iter();
        conns.retain_mut(|c| {
            let revents = entry.next().map_or(0, |p| p.revents);
            revents == 0 || serve(c, revents, &mut buf)
        });
        if fds[0].revents & libc::POLLIN != 0 {
            accept_all(&listener, &mut conns);
        }
    }
}

fn pollfd(fd: i32, events: i16) -> libc::pollfd {
    libc::pollfd {
        fd,
        events,
        revents: 0,
    }
}

/// Accepts until WouldBlock. Level-triggered would report the rest again,
/// but each call costs a pass over every connection: take them all now.
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
            // WouldBlock: the backlog is empty. A client that reset first:
            // poll says when to try again. (Out of descriptors, the listener
            // stays ready and this loop spins: the real server pauses.)
            Err(_) => return,
        }
    }
}

/// One read or one flush for a ready connection. Returns false to close.
fn serve(c: &mut Conn, revents: i16, buf: &mut [u8]) -> bool {
    if !c.pending.is_empty() {
        return flush(c);
    }
    // POLLIN, or POLLHUP/POLLERR: the read tells which (data, 0 or error).
    if revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) == 0 {
        return true;
    }
    let n = match c.stream.read(buf) {
        // 0 bytes: the client closed its side; nothing is owed.
        Ok(0) => return false,
        Ok(n) => n,
        // Level-triggered: anything left is reported again next call.
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {
            return true
        }
        Err(_) => return false,
    };
    buf[..n].make_ascii_uppercase();
    c.pending.extend_from_slice(&buf[..n]);
    flush(c)
}

/// Writes what the kernel takes; the rest waits for POLLOUT.
fn flush(c: &mut Conn) -> bool {
    match c.stream.write(&c.pending) {
        Ok(0) => false,
        Ok(n) => {
            c.pending.drain(..n);
            true
        }
        Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => true,
        Err(_) => false,
    }
}
