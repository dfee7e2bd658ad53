//! A custom protocol plugged into the library: ROT13 over TCP and UDP.
//!
//! Run it, then poke it with `nc` from another terminal:
//!
//! ```text
//! cargo run --release --example custom_mode -- 127.0.0.1:7010
//! nc 127.0.0.1 7010          # type "Hello" -> "Uryyb"
//! nc -u 127.0.0.1 7010       # the same, one datagram per line
//! ```
//!
//! A `Service` decides what to send and never touches a socket: the
//! server does the IO, the backpressure, the limits and the shutdown
//! (Ctrl-C). ROT13 maps each byte to one byte, so `on_data` transforms in
//! place and the defaults cover UDP. What this leaves out: anything that
//! speaks first or streams; see `on_connect`, `streams` and `fill` in `src/mode/mod.rs`,
//! and the chargen, daytime and time modes that use them.

use std::io::Write;
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;

use echo_reactor::{Reply, Server, ServerConfig, Service};

/// Rotates ASCII letters by 13 places; every other byte passes unchanged.
#[derive(Debug)]
struct Rot13;

impl Service for Rot13 {
    fn name(&self) -> &str {
        "rot13"
    }

    fn on_data(&self, data: &mut [u8]) -> Reply {
        for b in data.iter_mut() {
            *b = match *b {
                b'a'..=b'z' => (*b - b'a' + 13) % 26 + b'a',
                b'A'..=b'Z' => (*b - b'A' + 13) % 26 + b'A',
                other => other,
            };
        }
        Reply::Same
    }
}

fn main() -> ExitCode {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("info")).init();
    let arg = std::env::args().nth(1);
    let addr: SocketAddr = match arg.as_deref().unwrap_or("127.0.0.1:7010").parse() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("usage: custom_mode [IP:PORT]: {e}");
            return ExitCode::from(2);
        }
    };
    let mut config = ServerConfig::default();
    config.tcp = vec![addr];
    config.udp = vec![addr];
    config.service = Arc::new(Rot13);
    // Ctrl-C and SIGTERM: stop accepting, flush, exit 0.
    config.handle_signals = true;
    let mut server = match Server::bind(config) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("custom_mode: {e}");
            return ExitCode::FAILURE;
        }
    };
    // Like the real binary: a closed stdout must not stop the server.
    let mut out = std::io::stdout().lock();
    for a in server.tcp_addrs() {
        let _ = writeln!(out, "listening on tcp://{a}");
    }
    for a in server.udp_addrs() {
        let _ = writeln!(out, "listening on udp://{a}");
    }
    let _ = out.flush();
    drop(out);
    match server.run() {
        Ok(stats) => {
            eprintln!("final stats: {stats}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("custom_mode: {e}");
            ExitCode::FAILURE
        }
    }
}
