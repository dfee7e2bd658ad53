//! Completion-based IO (异步IO, the proactor) with io_uring: hand the kernel
//! whole operations and buffers, reap the results.
//!
//! ```text
//! cargo run --release --example uring -- 127.0.0.1:7010
//! nc 127.0.0.1 7010            # type "hello" -> "HELLO"; many nc at once work
//! cargo run --release --example uring -- 127.0.0.1:7010 --no-batch   # one io_uring_enter per operation
//! strace -e trace=io_uring_enter target/release/examples/uring 127.0.0.1:7010     # no recvfrom, no sendto
//! ```
//!
//! The reactor asks "which sockets are *ready*?" and then does the read and
//! the write itself. A proactor says "*read* into this buffer", "*send*
//! these bytes", and is told when each operation has *completed*, with its
//! result: bytes moved, 0 for EOF, or an error. io_uring is two rings
//! shared with the kernel: we push submission entries (SQEs), the kernel
//! pushes completion entries (CQEs), and one `io_uring_enter` both submits
//! everything queued and waits for at least one completion. So the reads
//! and writes of many connections can share one system call: batching.
//! `--no-batch` submits each operation on its own, to measure what that
//! saves (`cargo bench --bench models -- syscalls`).
//!
//! Each connection has one operation in flight at a time (a receive, or a
//! send of what the receive brought), and the buffer it names stays put
//! until the completion says the kernel is done with it: that ownership,
//! the buffer lent to the kernel, is the proactor's rule, as draining to
//! `WouldBlock` is the edge-triggered reactor's.
//!
//! Deliberately left out: registered buffers and files, multishot accept
//! and receive, `SQPOLL` (a kernel thread that submits for us), timeouts,
//! limits, graceful shutdown. Linux 5.6 or later, with io_uring enabled
//! (`/proc/sys/kernel/io_uring_disabled` is 0).

#[cfg(target_os = "linux")]
fn main() -> std::io::Result<()> {
    ring::main()
}

#[cfg(not(target_os = "linux"))]
fn main() {
    eprintln!("io_uring is Linux only");
    std::process::exit(2);
}

#[cfg(target_os = "linux")]
mod ring {
    use std::net::{TcpListener, TcpStream};
    use std::os::fd::{AsRawFd, FromRawFd};

    use io_uring::{cqueue, opcode, squeue, types, IoUring};
    use slab::Slab;

    /// What a completion is for, in the low bits of its `user_data`; the
    /// slab key is in the rest.
    const ACCEPT: u64 = 0;
    const RECV: u64 = 1;
    const SEND: u64 = 2;

    struct Conn {
        stream: TcpStream,
        /// Lent to the kernel while an operation is in flight.
        buf: Box<[u8]>,
        /// Bytes of `buf` to send, and how many were sent so far.
        len: usize,
        sent: usize,
    }

    pub fn main() -> std::io::Result<()> {
        let args: Vec<String> = std::env::args().skip(1).collect();
        let batch = !args.iter().any(|a| a == "--no-batch");
        let addr = args
            .iter()
            .find(|a| !a.starts_with("--"))
            .cloned()
            .unwrap_or_else(|| "127.0.0.1:7010".into());
        let listener = TcpListener::bind(&addr)?;
        let mut ring = IoUring::new(1024)?;
        println!("listening on tcp://{}", listener.local_addr()?);

        let mut conns: Slab<Conn> = Slab::new();
        let accept = opcode::Accept::new(
            types::Fd(listener.as_raw_fd()),
            std::ptr::null_mut(),
            std::ptr::null_mut(),
        )
        .build()
        .user_data(ACCEPT);
        submit(&mut ring, &accept, batch)?;
        let mut done: Vec<cqueue::Entry> = Vec::new();
        loop {
            // One system call: submit everything queued, sleep until at
            // least one operation completed.
            match ring.submit_and_wait(1) {
                Ok(_) => {}
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
            done.extend(ring.completion());
            for cqe in done.drain(..) {
                let (key, op) = ((cqe.user_data() >> 2) as usize, cqe.user_data() & 3);
                let next = match op {
                    ACCEPT => {
                        // Accept the next one, and start receiving on this one.
                        submit(&mut ring, &accept, batch)?;
                        on_accept(cqe.result(), &mut conns)?.map(|key| recv(key, &conns[key]))
                    }
                    RECV => on_recv(cqe.result(), key, &mut conns),
                    _ => on_send(cqe.result(), key, &mut conns),
                };
                if let Some(sqe) = next {
                    submit(&mut ring, &sqe, batch)?;
                }
            }
        }
    }

    /// A new connection (`res` is its descriptor): its slab key. An accept
    /// error other than a client's early reset ends the server.
    fn on_accept(res: i32, conns: &mut Slab<Conn>) -> std::io::Result<Option<usize>> {
        if res < 0 {
            return match -res {
                // A client that reset before we took it, or a signal: go on.
                libc::ECONNABORTED | libc::EINTR => Ok(None),
                errno => Err(std::io::Error::from_raw_os_error(errno)),
            };
        }
        // SAFETY: the kernel just gave us this descriptor; nobody else owns it.
        let stream = unsafe { TcpStream::from_raw_fd(res) };
        let _ = stream.set_nodelay(true);
        Ok(Some(conns.insert(Conn {
            stream,
            buf: vec![0u8; 4096].into_boxed_slice(),
            len: 0,
            sent: 0,
        })))
    }

    /// A receive completed with `res` bytes: answer them, or close.
    fn on_recv(res: i32, key: usize, conns: &mut Slab<Conn>) -> Option<squeue::Entry> {
        let c = conns.get_mut(key)?;
        if res <= 0 {
            // 0: the client closed its side, nothing is owed; < 0: an error
            // such as a reset. Nothing is in flight, so the buffer is ours
            // again and closing is safe.
            conns.remove(key);
            return None;
        }
        let n = res as usize;
        c.buf[..n].make_ascii_uppercase();
        c.len = n;
        c.sent = 0;
        Some(send(key, c))
    }

    /// A send completed: send the rest if it was partial, else receive again.
    fn on_send(res: i32, key: usize, conns: &mut Slab<Conn>) -> Option<squeue::Entry> {
        let c = conns.get_mut(key)?;
        if res <= 0 {
            conns.remove(key);
            return None;
        }
        c.sent += res as usize;
        if c.sent < c.len {
            return Some(send(key, c));
        }
        Some(recv(key, c))
    }

    fn recv(key: usize, c: &Conn) -> squeue::Entry {
        let fd = types::Fd(c.stream.as_raw_fd());
        let len = c.buf.len() as u32;
        // The buffer's heap address stays put when the slab grows.
        opcode::Recv::new(fd, c.buf.as_ptr() as *mut u8, len)
            .build()
            .user_data(((key as u64) << 2) | RECV)
    }

    fn send(key: usize, c: &Conn) -> squeue::Entry {
        let fd = types::Fd(c.stream.as_raw_fd());
        let rest = &c.buf[c.sent..c.len];
        opcode::Send::new(fd, rest.as_ptr(), rest.len() as u32)
            .build()
            .user_data(((key as u64) << 2) | SEND)
    }

    /// Queues `sqe`; with `batch` off, submits it at once (one system call
    /// per operation). A full submission queue is submitted to make room.
    fn submit(ring: &mut IoUring, sqe: &squeue::Entry, batch: bool) -> std::io::Result<()> {
        loop {
            // SAFETY: every buffer an entry names lives in a slab entry
            // that is removed only when that connection has no operation
            // in flight; the accept entry names no buffer.
            let pushed = unsafe { ring.submission().push(sqe) }.is_ok();
            if pushed {
                break;
            }
            ring.submit()?;
        }
        if !batch {
            ring.submit()?;
        }
        Ok(())
    }
}
