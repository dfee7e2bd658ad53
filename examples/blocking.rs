//! The tutorials' blocking TCP server: one client at a time.
//!
//! ```text
//! cargo run --release --example blocking -- 127.0.0.1:7001
//! nc 127.0.0.1 7001            # type "hello" -> "HELLO"
//! nc 127.0.0.1 7001            # a second nc waits until the first leaves
//! ```
//!
//! Two loops, exactly as the socket lessons draw them: the *connection
//! loop* accepts one client; the *communication loop* reads, uppercases
//! and sends back until that client leaves. While it serves one client,
//! the second sits in the kernel's listen backlog: connected as far as TCP
//! is concerned, but nobody reads its bytes. That is the limit this
//! example exists to show.
//!
//! Deliberately left out: concurrency (see `threaded` and `reactor`),
//! timeouts (a silent client holds the server forever), limits, logging,
//! graceful shutdown.

use std::io::{ErrorKind, Read, Write};
use std::net::{TcpListener, TcpStream};

fn main() -> std::io::Result<()> {
    let addr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "127.0.0.1:7001".into());
    // socket() + bind() + listen(): std does all three; the backlog is 128.
    let listener = TcpListener::bind(&addr)?;
    println!("listening on tcp://{}", listener.local_addr()?);

    // The connection loop: one client at a time.
    loop {
        let (stream, peer) = match listener.accept() {
            Ok(pair) => pair,
            // A client that connected and reset before we accepted it.
            Err(e) => {
                eprintln!("accept failed: {e}");
                continue;
            }
        };
        eprintln!("{peer}: connected");
        match serve(stream) {
            Ok(()) => eprintln!("{peer}: closed"),
            // A reset is the client's way of leaving abruptly, not our bug.
            Err(e) => eprintln!("{peer}: {e}"),
        }
    }
}

/// The communication loop: recv, upper, sendall, until the client leaves.
fn serve(mut stream: TcpStream) -> std::io::Result<()> {
    let mut buf = [0u8; 1024];
    loop {
        let n = match stream.read(&mut buf) {
            // 0 bytes: the client closed its side (FIN). Done.
            Ok(0) => return Ok(()),
            Ok(n) => n,
            // A signal interrupted the call; nothing was read. Try again.
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        buf[..n].make_ascii_uppercase();
        // write_all is Python's sendall: it loops until every byte is taken,
        // blocking while the client is not reading.
        stream.write_all(&buf[..n])?;
    }
}
