//! The narrated trace: with `RUST_LOG=echo_reactor=trace` the server tells
//! a student, one line per event, what the reactor does. These are the
//! lines docs/GUIDE.md promises.

mod common;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::time::Duration;

use common::*;

fn assert_has(log: &str, needles: &[&str]) {
    for needle in needles {
        assert!(log.contains(needle), "no {needle:?} in the trace:\n{log}");
    }
}

#[test]
fn a_round_trip_and_a_half_close_are_narrated() {
    let server = start_traced_server(&[]);
    let mut s = connect(server.tcp_addr());
    assert_eq!(roundtrip(&mut s, b"hello"), b"hello");
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).expect("FIN after everything");
    let log = server.stop();
    assert_has(
        &log,
        &[
            "poll: woke with",
            "conn 0: registered READABLE | WRITABLE once",
            "accept: backlog empty (would block)",
            "conn 0: event readable",
            "conn 0: read 5 B",
            "conn 0: wrote 5 B",
            "conn 0: short read (5 B < 65536 B): queue empty",
            "conn 0: read 0 B: peer half-closed",
            "conn 0: state Open -> ReadClosed",
            "conn 0: nothing owed: FIN sent",
            "closed: peer closed",
        ],
    );
}

#[test]
fn without_the_shortcut_the_drain_ends_on_would_block() {
    let server = start_traced_server(&["--short-read", "false"]);
    let mut s = connect(server.tcp_addr());
    assert_eq!(roundtrip(&mut s, b"hello"), b"hello");
    // Keep the connection open until the server has made its extra read:
    // closing now could let that read see our FIN (0 B) instead of an
    // empty queue, and the trace would tell a different, also true, story.
    let needle = "conn 0: read would block, drain done";
    let seen = wait_until(Duration::from_secs(5), || server.stderr().contains(needle));
    drop(s);
    let log = server.stop();
    assert!(seen, "no {needle:?} in the trace:\n{log}");
}

#[test]
fn backpressure_pause_and_resume_are_narrated() {
    let server = start_traced_server(&[]);
    let mut s = connect(server.tcp_addr());
    // Push without reading until the server has to stop reading from us.
    let chunk = vec![b'x'; 1 << 20];
    s.set_write_timeout(Some(Duration::from_millis(500)))
        .expect("timeout");
    let mut sent = 0usize;
    while sent < 64 << 20 {
        match s.write(&chunk) {
            Ok(n) => sent += n,
            Err(_) => break, // our send buffer is full too: the server paused
        }
    }
    assert!(
        wait_until(Duration::from_secs(5), || server
            .stderr()
            .contains("backpressure: reading paused")),
        "no pause in the trace"
    );
    // Now read everything back: the server resumes.
    s.shutdown(Shutdown::Write).expect("half-close");
    let mut back = 0usize;
    let mut buf = vec![0u8; 1 << 20];
    while back < sent {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => back += n,
        }
    }
    assert_eq!(back, sent, "every byte came back");
    let log = server.stop();
    assert_has(
        &log,
        &[
            "backpressure: reading paused",
            "reading resumed",
            "write would block, waiting for writable",
        ],
    );
    // The writable edge that lets the server flush may arrive alone or
    // together with a readable one ("event readable writable"), depending
    // on how our reads and writes interleave.
    assert!(
        log.lines()
            .any(|l| l.contains("conn 0: event") && l.contains(" writable")),
        "no writable event in the trace:\n{log}"
    );
}

#[test]
fn the_default_filter_says_nothing_per_event() {
    let argv: Vec<String> = ["serve", "--tcp", "127.0.0.1:0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let server = start_binary_logged(&argv, None, Some("info"));
    let mut s = connect(server.tcp_addr());
    assert_eq!(roundtrip(&mut s, b"quiet"), b"quiet");
    drop(s);
    let log = server.stop();
    assert!(!log.contains("TRACE") && !log.contains("read 5 B"), "{log}");
}
