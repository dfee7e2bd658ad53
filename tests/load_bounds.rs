//! The load generator's run time is bounded whatever the server does: a
//! listener whose backlog is full and that never accepts costs at most
//! `--connect-timeout`, and the connections that never came up are
//! `connect` errors.

mod common;

use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use common::*;
use socket2::{Domain, Socket, Type};

/// A listener with a backlog of one that never accepts, filled with
/// connections of its own so that the kernel drops every further SYN.
/// Keep both returned values alive for as long as it should stay full.
fn full_listener() -> (Socket, Vec<TcpStream>, SocketAddr) {
    let l = Socket::new(Domain::IPV4, Type::STREAM, None).expect("socket");
    l.bind(&"127.0.0.1:0".parse::<SocketAddr>().unwrap().into())
        .expect("bind");
    l.listen(1).expect("listen");
    let addr = l
        .local_addr()
        .expect("addr")
        .as_socket()
        .expect("inet address");
    // Linux queues backlog + 1 connections; a few more make sure.
    let mut fillers = Vec::new();
    for _ in 0..4 {
        if let Ok(s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) {
            fillers.push(s);
        }
    }
    (l, fillers, addr)
}

#[test]
fn a_listener_that_never_accepts_costs_at_most_the_connect_timeout() {
    let (_listener, _fillers, addr) = full_listener();
    let url = format!("tcp://{addr}");
    let run = run_binary(
        &[
            "load",
            &url,
            "-c",
            "50",
            "-d",
            "0.5",
            "--connect-timeout",
            "0.5",
            "--drain-timeout",
            "0.2",
            "--json",
        ],
        Duration::from_secs(20),
    );
    assert_eq!(run.code(), 1, "{run:#?}");
    // connect timeout + warmup + duration + drain timeout + 1 s
    assert!(run.elapsed < Duration::from_millis(2200), "{run:#?}");
    let connect: u64 = run
        .stdout
        .split("\"connect\":")
        .nth(1)
        .and_then(|rest| rest.split([',', '}']).next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no errors.connect: {run:#?}"));
    // The kernel may still complete a handshake or two into the full
    // queue; the rest never came up.
    assert!(connect >= 45, "{run:#?}");
    assert!(run.stdout.contains("\"ok\":false"), "{run:#?}");
}
