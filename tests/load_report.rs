//! What the load report says: `sent` and `messages` over the same window,
//! UDP in sockets and without Rust syntax, one latency unit, and a hint
//! when the server uppercases what it should echo.

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use echo_reactor::load::{self, LoadConfig, Proto, Target};
use echo_reactor::Mode;

#[test]
fn sent_and_messages_count_the_same_window_despite_a_warmup() {
    let server = start_in_process(loopback_config());
    let config = LoadConfig {
        connections: 4,
        warmup: Duration::from_millis(400),
        duration: Duration::from_millis(400),
        ..LoadConfig::new(Target {
            proto: Proto::Tcp,
            addr: server.tcp[0],
        })
    };
    let r = load::run(&config).expect("run");
    assert!(r.is_ok(), "{r}");
    // Every measured message was sent in the window; the rest of the
    // window's messages are the few in flight at its end.
    assert!(r.sent >= r.messages, "{r}");
    assert!(r.sent <= r.messages + 4, "warm-up counted in sent: {r}");
}

#[test]
fn udp_against_a_closed_port_speaks_of_sockets_and_no_rust_syntax() {
    let closed = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let url = format!("udp://{}", closed.local_addr().expect("addr"));
    drop(closed);
    let run = run_binary(
        &[
            "load",
            &url,
            "-c",
            "3",
            "-d",
            "0.3",
            "--drain-timeout",
            "0.2",
        ],
        IO_TIMEOUT,
    );
    assert_eq!(run.code(), 1, "{run:#?}");
    assert!(
        run.stdout
            .contains("3 of 3 sockets open, 3 of them told port unreachable"),
        "{run:#?}"
    );
    assert!(!run.stdout.contains("connections"), "{run:#?}");
    assert!(run.stderr.contains("port unreachable"), "{run:#?}");
    for rust in ["Some(", "None", "Err(", "Ok(", "Kind("] {
        assert!(!run.stderr.contains(rust), "{rust} in {run:#?}");
        assert!(!run.stdout.contains(rust), "{rust} in {run:#?}");
    }
}

#[test]
fn the_latency_distribution_says_it_is_in_microseconds() {
    let server = start_in_process(loopback_config());
    let url = format!("tcp://{}", server.tcp[0]);
    let run = run_binary(
        &["load", &url, "-c", "2", "-d", "0.3", "--latency"],
        IO_TIMEOUT,
    );
    assert_eq!(run.code(), 0, "{run:#?}");
    assert!(run.stdout.contains("latency us p50"), "{run:#?}");
    assert!(
        run.stdout.contains("values in microseconds (us)"),
        "{run:#?}"
    );
    let in_ms = run
        .stdout
        .split_whitespace()
        .any(|w| w == "ms" || w.starts_with("milli"));
    assert!(!in_ms, "one unit: {run:#?}");
}

#[test]
fn an_uppercasing_server_gets_a_hint_to_expect_upper() {
    let server = start_in_process(loopback_with(|c| {
        c.service = Arc::new(Mode::Upper);
    }));
    for url in [
        format!("tcp://{}", server.tcp[0]),
        format!("udp://{}", server.udp[0]),
    ] {
        let run = run_binary(&["load", &url, "-c", "2", "-d", "0.3"], IO_TIMEOUT);
        assert_eq!(run.code(), 1, "{run:#?}");
        assert!(
            run.stderr
                .contains("the server seems to uppercase: try --expect upper"),
            "{url}: {run:#?}"
        );
    }
}
