//! Signal-driven IO (信号驱动IO): the kernel sends SIGIO when a socket
//! changes state, and the server sleeps until it does.
//!
//! ```text
//! cargo run --release --example sigio -- 127.0.0.1:7009
//! nc 127.0.0.1 7009            # type "hello" -> "HELLO"; many nc at once work
//! strace -e trace=rt_sigtimedwait,accept4,recvfrom,sendto target/release/examples/sigio 127.0.0.1:7009
//! ```
//!
//! Each socket is put in `O_ASYNC` mode with this process as its owner
//! (`fcntl(F_SETOWN)`), so new data, a new connection, or room in a full
//! send buffer raises SIGIO. SIGIO is blocked and taken with
//! `sigwaitinfo`, so no handler interrupts the code and a signal raised
//! while we work stays pending instead of being lost.
//!
//! Why nobody builds servers on it, in three facts this example has to
//! live with: a SIGIO says *that* something changed, not *which* socket,
//! so every signal costs a pass over every connection (like the
//! `nonblocking` example, but only when woken); signals do not queue, ten
//! changes while one SIGIO is pending are one SIGIO, so each pass must
//! drain every socket to `WouldBlock` (it behaves like edge-triggered
//! readiness with no list); and a signal is process-wide, so a library or
//! a second part of the program wanting SIGIO would steal our wakeups.
//! (Linux's `F_SETSIG` queues a real-time signal carrying the descriptor
//! instead, until the signal queue overflows and it falls back to plain
//! SIGIO: the same scan, as a slow path.) epoll answers all three.
//!
//! Deliberately left out: `F_SETSIG`, timeouts, limits, graceful shutdown.
//! Linux (`O_ASYNC`, `F_SETOWN` and `sigwaitinfo` through `libc`).

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::fd::AsRawFd;

struct Conn {
    stream: TcpStream,
    /// Bytes the kernel has not taken yet; while any wait, no reading.
    pending: Vec<u8>,
}

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7009".into());
    let sigio = block_sigio()?;
    let listener = TcpListener::bind(&addr)?;
    listener.set_nonblocking(true)?;
    signal_on_change(listener.as_raw_fd())?;
    println!("listening on tcp://{}", listener.local_addr()?);

    let mut conns: Vec<Conn> = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        // Sleep until some socket changed; which one, the signal does not say.
        wait_for(&sigio)?;
        accept_all(&listener, &mut conns);
        // So try them all, each to WouldBlock: the signals for the changes
        // we are about to consume have merged into the one we took.
        conns.retain_mut(|c| serve(c, &mut buf));
    }
}

/// Blocks SIGIO for this (single-threaded) process, so it stays pending
/// until `sigwaitinfo` takes it; returns the set to wait on.
fn block_sigio() -> std::io::Result<libc::sigset_t> {
    // SAFETY: the set is initialised by sigemptyset before any other use,
    // and sigprocmask only reads it.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGIO);
        if libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) != 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(set)
    }
}

/// `fcntl(F_SETOWN, our pid)` and `O_ASYNC`: SIGIO to us on every change.
fn signal_on_change(fd: i32) -> std::io::Result<()> {
    // SAFETY: fcntl on a descriptor we own, with integer arguments.
    unsafe {
        if libc::fcntl(fd, libc::F_SETOWN, libc::getpid()) < 0 {
            return Err(std::io::Error::last_os_error());
        }
        let flags = libc::fcntl(fd, libc::F_GETFL);
        if flags < 0 || libc::fcntl(fd, libc::F_SETFL, flags | libc::O_ASYNC) < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
}

/// Waits for a pending SIGIO and consumes it.
fn wait_for(set: &libc::sigset_t) -> std::io::Result<()> {
    loop {
        // SAFETY: `set` is a valid, initialised sigset; no siginfo wanted.
        if unsafe { libc::sigwaitinfo(set, std::ptr::null_mut()) } >= 0 {
            return Ok(());
        }
        let e = std::io::Error::last_os_error();
        if e.kind() != ErrorKind::Interrupted {
            return Err(e);
        }
    }
}

/// Accepts until WouldBlock: the connections behind one signal may be many.
fn accept_all(listener: &TcpListener, conns: &mut Vec<Conn>) {
    loop {
        match listener.accept() {
            Ok((stream, _peer)) => {
                // An accepted socket does not inherit O_ASYNC: ask again.
                let ready = stream.set_nonblocking(true).is_ok()
                    && signal_on_change(stream.as_raw_fd()).is_ok();
                if ready {
                    let _ = stream.set_nodelay(true);
                    conns.push(Conn {
                        stream,
                        pending: Vec::new(),
                    });
                }
            }
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            // WouldBlock: done. A client that reset first, or out of
            // descriptors: done for this signal (the next one retries).
            Err(_) => return,
        }
    }
}

/// Flushes, then reads and answers until WouldBlock or until the kernel
/// refuses output. Returns false to close.
fn serve(c: &mut Conn, buf: &mut [u8]) -> bool {
    loop {
        if !c.pending.is_empty() {
            match c.stream.write(&c.pending) {
                Ok(0) => return false,
                Ok(n) => {
                    c.pending.drain(..n);
                    continue;
                }
                // Full: room freeing up raises the next SIGIO.
                Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                Err(_) => return false,
            }
        }
        let n = match c.stream.read(buf) {
            // 0 bytes: the client closed its side; nothing is owed.
            Ok(0) => return false,
            Ok(n) => n,
            // Drained: new data raises a new SIGIO.
            Err(e) if e.kind() == ErrorKind::WouldBlock => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        };
        buf[..n].make_ascii_uppercase();
        c.pending.extend_from_slice(&buf[..n]);
    }
}
