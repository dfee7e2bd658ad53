//! A thread per connection: the `socketserver.ThreadingTCPServer` idea.
//!
//! ```text
//! cargo run --release --example threaded -- 127.0.0.1:7002
//! nc 127.0.0.1 7002            # type "hello" -> "HELLO"; open as many as you like
//! ```
//!
//! The blocking example's communication loop, unchanged, on a new thread
//! for each client: the code stays simple, every client is served at once,
//! and the kernel's scheduler does the multiplexing. The price is a thread
//! per connection (a kernel task and a stack: 64 KiB of address space here,
//! set below, instead of std's default 2 MiB; only the touched pages, a few
//! KiB, are resident) and a context switch for every message; `cargo bench
//! --bench models` shows what that costs at 1,000 clients.
//!
//! Deliberately left out: a cap on threads (10,000 clients make 10,000
//! threads), timeouts, graceful shutdown.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7002".into());
    let listener = TcpListener::bind(&addr)?;
    println!("listening on tcp://{}", listener.local_addr()?);
    for stream in listener.incoming() {
        let stream = match stream {
            Ok(s) => s,
            Err(e) => {
                eprintln!("accept failed: {e}");
                continue;
            }
        };
        // Small stacks: the loop below needs a few KiB, not std's default 2 MiB
        // (the main thread's 8 MiB comes from `ulimit -s`, not from here).
        let spawned = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || {
                if let Err(e) = serve(stream) {
                    eprintln!("client: {e}");
                }
            });
        if let Err(e) = spawned {
            // Out of threads or memory: this client is dropped (closed).
            eprintln!("cannot start a thread: {e}");
        }
    }
    Ok(())
}

/// The same communication loop as `blocking`.
fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    // Small replies, sent at once: no Nagle delay.
    stream.set_nodelay(true)?;
    let mut buf = [0u8; 4096];
    loop {
        let n = match stream.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        buf[..n].make_ascii_uppercase();
        stream.write_all(&buf[..n])?;
    }
}
