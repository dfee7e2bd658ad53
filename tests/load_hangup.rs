//! The generator sees the server's FIN whatever it travels with: alone,
//! or in the same segment as the last reply. A connection the server
//! closes counts as `closed`, never as a drain `timeout`, and with
//! `--reconnect` it is replaced so the load holds.

mod common;

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::time::Duration;

use common::*;

/// Bytes per message in these runs (`load --size`).
const SIZE: usize = 64;

/// Replies the FIN-with-the-last-reply server gives each connection.
const REPLIES: usize = 100;

/// A threaded echo server that answers `REPLIES` messages of `SIZE` bytes
/// per connection, sends its FIN in the same segment as the last reply
/// (corked, then shut down: the kernel puts the FIN on the queued data),
/// and keeps reading what comes after.
fn fin_with_last_reply_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            std::thread::spawn(move || answer_then_fin(stream));
        }
    });
    addr
}

fn answer_then_fin(mut stream: TcpStream) {
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_nodelay(true);
    let last_reply_ends = REPLIES * SIZE;
    let mut echoed = 0;
    let mut buf = [0u8; 4096];
    while echoed < last_reply_ends {
        let n = match stream.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => n.min(last_reply_ends - echoed),
        };
        if echoed + n == last_reply_ends {
            // Held back by the cork, the last reply is still queued when
            // the shutdown adds the FIN to it: one segment carries both.
            let sock = socket2::SockRef::from(&stream);
            let _ = sock.set_cork(true);
            let _ = stream.write_all(&buf[..n]);
            let _ = stream.shutdown(Shutdown::Write);
        } else if stream.write_all(&buf[..n]).is_err() {
            return;
        }
        echoed += n;
    }
    // Keep reading, as a lingering server does, until the client closes.
    while matches!(stream.read(&mut buf), Ok(n) if n > 0) {}
}

fn parse(json: &str) -> serde_json::Value {
    serde_json::from_str(json.trim()).unwrap_or_else(|e| panic!("{e}: {json}"))
}

fn count(v: &serde_json::Value, path: &[&str]) -> u64 {
    let mut at = v;
    for key in path {
        at = &at[*key];
    }
    at.as_u64()
        .unwrap_or_else(|| panic!("{path:?} is not a count in {v}"))
}

#[test]
fn a_fin_in_the_last_replys_segment_is_seen_and_reconnect_holds_the_load() {
    let addr = fin_with_last_reply_server();
    let url = format!("tcp://{addr}");
    let run = run_binary(
        &[
            "load",
            &url,
            "-c",
            "20",
            "-d",
            "4",
            "--reconnect",
            "--drain-timeout",
            "2",
            "--json",
        ],
        Duration::from_secs(60),
    );
    // Closed connections are errors: the run fails, but it ends.
    assert_eq!(run.code(), 1, "{run:#?}");
    let v = parse(&run.stdout);
    assert_eq!(count(&v, &["errors", "timeout"]), 0, "{v}");
    let closed = count(&v, &["errors", "closed"]);
    assert!(
        closed >= 20,
        "every connection's FIN counted as closed: {v}"
    );
    // Each connection gets REPLIES answers, then is replaced: the load
    // holds only if the FIN was seen and the replacement came.
    let messages = count(&v, &["messages"]);
    assert!(
        messages > 5 * 20 * REPLIES as u64,
        "the load held far past {REPLIES} messages per connection: {v}"
    );
    assert!(count(&v, &["reconnects"]) >= 20, "{v}");
}

#[test]
fn every_connection_our_server_shuts_down_counts_as_closed_not_timeout() {
    let server = start_server(&[
        "--tcp",
        "127.0.0.1:0",
        "--shutdown-timeout",
        "0.3",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let metrics = server.metrics_addr();
    let url = format!("tcp://{}", server.tcp_addr());
    let conns = 200;
    let mut load = Command::new(env!("CARGO_BIN_EXE_echo-reactor"));
    load.args(["load", &url, "-c", &conns.to_string(), "-d", "10", "--json"])
        .env("RUST_LOG", "warn");
    let load = std::thread::spawn(move || run_command(load, Vec::new(), Duration::from_secs(40)));
    assert!(
        wait_until(IO_TIMEOUT, || {
            metric(metrics, "tcp_connections_open") == Some(conns)
        }),
        "the load's connections came up; server stderr:\n{}",
        server.stderr()
    );
    server.signal(libc::SIGTERM);
    let run = load.join().expect("the load thread");
    let (code, stdout, stderr) = (run.status.and_then(|s| s.code()), run.stdout, run.stderr);
    assert_eq!(code, Some(1), "closed connections fail the run: {stderr}");
    let v = parse(&stdout);
    assert_eq!(count(&v, &["connected"]), conns, "{v}");
    assert_eq!(count(&v, &["errors", "timeout"]), 0, "{v}");
    assert_eq!(count(&v, &["errors", "closed"]), conns, "{v}");
}
