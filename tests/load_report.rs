//! What the load report says: `sent`, `messages` and mismatches over the
//! same window, UDP in sockets and without Rust syntax, a unit on each
//! latency, no percentiles when nothing came back, and a hint when the
//! server uppercases what it should echo.

mod common;

use std::net::UdpSocket;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use echo_reactor::load::{self, LoadConfig, Proto, Target};
use echo_reactor::Mode;

/// Our server in process, on loopback, answering as `mode` does.
fn serving(mode: Mode) -> InProcess {
    start_in_process(loopback_with(|c| c.service = Arc::new(mode)))
}

/// The JSON report a run printed.
fn json(run: &Finished) -> serde_json::Value {
    serde_json::from_str(run.stdout.trim()).unwrap_or_else(|e| panic!("{e}: {run:#?}"))
}

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
    // The report names each figure's unit (ms past 10 ms); the table says
    // its own, and keeps it throughout.
    let line = run
        .stdout
        .lines()
        .find(|l| l.starts_with("latency    p50 "))
        .unwrap_or_else(|| panic!("a latency line: {run:#?}"));
    for figure in line["latency    ".len()..].split(", ") {
        assert!(
            figure.ends_with(" us") || figure.ends_with(" ms"),
            "{figure} in {line}"
        );
    }
    let (_, table) = run
        .stdout
        .split_once("values in microseconds (us)")
        .unwrap_or_else(|| panic!("the table's heading: {run:#?}"));
    let in_ms = table
        .split_whitespace()
        .any(|w| w == "ms" || w.starts_with("milli"));
    assert!(!in_ms, "one unit in the table: {run:#?}");
}

#[test]
fn mismatches_count_the_windows_messages_and_never_exceed_sent() {
    // Every reply is wrong; the warm-up's and the ramp's are not the
    // window's, like their messages.
    let server = serving(Mode::Upper);
    let url = format!("tcp://{}", server.tcp[0]);
    let run = run_binary(
        &[
            "load", &url, "-c", "4", "-d", "0.5", "--warmup", "0.5", "--json",
        ],
        IO_TIMEOUT,
    );
    assert_eq!(run.code(), 1, "{run:#?}");
    let v = json(&run);
    let (mismatch, sent) = (
        v["errors"]["mismatch"].as_u64().expect("a count"),
        v["sent"].as_u64().expect("a count"),
    );
    assert!(mismatch > 0 && mismatch <= sent, "{v}");
    assert_eq!(v["messages"], 0, "{v}");
    assert_eq!(v["mismatch_upper"].as_u64(), Some(mismatch), "{v}");
}

#[test]
fn a_run_with_no_reply_shows_no_percentiles() {
    let server = serving(Mode::Discard);
    let url = format!("tcp://{}", server.tcp[0]);
    let run = run_binary(
        &[
            "load",
            &url,
            "-c",
            "2",
            "-d",
            "0.3",
            "--drain-timeout",
            "0.2",
        ],
        IO_TIMEOUT,
    );
    assert_eq!(run.code(), 1, "{run:#?}");
    assert!(
        run.stdout.contains("latency    none: no reply measured"),
        "{run:#?}"
    );
    assert!(!run.stdout.contains("p50"), "{run:#?}");
}

#[test]
fn an_uppercasing_server_gets_a_hint_to_expect_upper() {
    let server = serving(Mode::Upper);
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

#[test]
fn the_rate_asked_for_stands_beside_the_rate_achieved_and_falling_behind_is_said() {
    let server = start_in_process(loopback_config());
    let url = format!("tcp://{}", server.tcp[0]);
    // Two connections cannot carry ten million messages a second: the
    // generator falls behind its schedule and must say so.
    let run = run_binary(
        &["load", &url, "-c", "2", "-d", "1", "--rate", "10000000"],
        IO_TIMEOUT,
    );
    assert!(
        run.stdout.contains(" msgs/s of 10000000 asked, "),
        "{run:#?}"
    );
    assert!(
        run.stdout.contains("behind     the generator sent "),
        "{run:#?}"
    );
    let run = run_binary(
        &[
            "load", &url, "-c", "2", "-d", "1", "--rate", "10000000", "--json",
        ],
        IO_TIMEOUT,
    );
    let v = json(&run);
    assert_eq!(v["behind"], true, "{v}");
    let share = v["achieved_share"].as_f64().expect("a share");
    assert!(share > 0.0 && share < 0.95, "{v}");

    let run = run_binary(
        &[
            "load", &url, "-c", "2", "-d", "2", "--rate", "200", "--json",
        ],
        IO_TIMEOUT,
    );
    assert_eq!(run.code(), 0, "{run:#?}");
    let v = json(&run);
    assert_eq!(v["behind"], false, "{v}");
    let closed = run_binary(
        &["load", &url, "-c", "2", "-d", "0.3", "--json"],
        IO_TIMEOUT,
    );
    let v = json(&closed);
    assert_eq!(
        v["achieved_share"],
        serde_json::Value::Null,
        "closed loop: {v}"
    );
}
