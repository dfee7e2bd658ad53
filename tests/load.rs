//! The load generator against in-process servers: healthy ones show zero
//! errors, broken ones (corrupting, resetting, dropping) show the right
//! kind of error; open loop keeps its rate; the binary's JSON parses and
//! bad input fails cleanly.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Command, Output, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use echo_reactor::load::{self, LoadConfig, Proto, Report, Target};
use echo_reactor::{Mode, Reply, Service};

fn tcp(addr: SocketAddr) -> LoadConfig {
    LoadConfig {
        connections: 20,
        duration: Duration::from_secs(1),
        ..LoadConfig::new(Target {
            proto: Proto::Tcp,
            addr,
        })
    }
}

fn udp(addr: SocketAddr) -> LoadConfig {
    LoadConfig {
        target: Target {
            proto: Proto::Udp,
            addr,
        },
        ..tcp(addr)
    }
}

fn run(config: &LoadConfig) -> Report {
    load::run(config).expect("load run")
}

fn with_service(service: impl Service + 'static) -> InProcess {
    start_in_process(loopback_with(|c| {
        c.service = Arc::new(service);
    }))
}

/// Echoes, but flips one byte in every `every * size` bytes it serves
/// (over all connections): about one reply in `every` comes back wrong.
#[derive(Debug)]
struct Corrupting {
    served: AtomicU64,
    period: u64,
}

impl Service for Corrupting {
    fn name(&self) -> &str {
        "corrupting"
    }

    fn on_data(&self, data: &mut [u8]) -> Reply {
        let before = self.served.fetch_add(data.len() as u64, Ordering::SeqCst);
        for (i, b) in data.iter_mut().enumerate() {
            if (before + i as u64) % self.period == self.period - 1 {
                *b ^= 0x20; // 'a' <-> 'A': still a letter, just wrong
            }
        }
        Reply::Same
    }
}

/// Echoes over TCP, but drops every tenth datagram.
#[derive(Debug, Default)]
struct Dropping {
    datagrams: AtomicU64,
}

impl Service for Dropping {
    fn name(&self) -> &str {
        "dropping"
    }

    fn on_data(&self, _data: &mut [u8]) -> Reply {
        Reply::Same
    }

    fn on_datagram(&self, _buf: &mut [u8], len: usize) -> Option<usize> {
        let n = self.datagrams.fetch_add(1, Ordering::SeqCst);
        (n % 10 != 9).then_some(len)
    }
}

#[test]
fn healthy_echo_server_shows_zero_errors() {
    let server = start_in_process(loopback_config());
    let r = run(&tcp(server.tcp[0]));
    assert_eq!(r.errors, Default::default(), "{r}");
    assert!(r.is_ok(), "{r}");
    assert_eq!(r.connected, 20);
    assert!(r.messages > 100, "{r}");
    assert_eq!(r.bytes, r.messages * 64);
    assert!(r.percentiles_us()[4] > 0);
    let stats = server.stop();
    assert_eq!(stats.tcp_accepted, 20);
}

#[test]
fn corrupted_replies_are_mismatches_and_fail_the_run() {
    let server = with_service(Corrupting {
        served: AtomicU64::new(0),
        period: 1000 * 64,
    });
    let config = LoadConfig {
        pipeline: 4,
        duration: Duration::from_secs(2),
        ..tcp(server.tcp[0])
    };
    let r = run(&config);
    assert!(r.errors.mismatch > 0, "{r}");
    assert!(!r.is_ok());
    // About one in a thousand, not all of them.
    assert!(r.errors.mismatch * 100 < r.messages, "{r}");
    let why = r.failure_summary().unwrap();
    assert!(
        why.contains("got 'A', expected 'a'") || why.contains("expected"),
        "{why}"
    );
}

/// A blocking server that echoes `limit` bytes on each connection and then
/// resets it (SO_LINGER 0 and close).
fn start_resetting_server(limit: usize) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut served = 0;
                stream.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
                while served < limit {
                    match stream.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => {
                            if stream.write_all(&buf[..n]).is_err() {
                                return;
                            }
                            served += n;
                        }
                    }
                }
                let _ = socket2::SockRef::from(&stream).set_linger(Some(Duration::ZERO));
            });
        }
    });
    addr
}

#[test]
fn connections_reset_mid_run_are_counted_as_resets() {
    let addr = start_resetting_server(64 * 50);
    let config = LoadConfig {
        connections: 10,
        ..tcp(addr)
    };
    let r = run(&config);
    assert_eq!(r.connected, 10, "{r}");
    assert!(r.errors.reset > 0, "{r}");
    assert!(!r.is_ok());
}

#[test]
fn reconnect_replaces_reset_connections_and_the_load_goes_on() {
    // Each connection is reset after 50 replies: without --reconnect the
    // 10 clients could get at most 500 replies in all.
    let addr = start_resetting_server(64 * 50);
    let config = LoadConfig {
        connections: 10,
        reconnect: true,
        ..tcp(addr)
    };
    let r = run(&config);
    assert_eq!(r.connected, 10, "a replacement is not a new client: {r}");
    assert!(r.reconnects >= 10, "{r}");
    assert!(r.messages > 500, "{r}");
    // Every reset before the drain was replaced; one per client may come
    // in the drain, when nothing new is opened.
    let e = &r.errors;
    let resets = e.reset + e.closed + e.io; // how a reset may be seen
    assert!(r.reconnects <= resets && resets <= r.reconnects + 10, "{r}");
    assert!(!r.is_ok(), "the resets still fail the run");
}

#[test]
fn open_loop_at_200_per_second_for_2_seconds_sends_about_400() {
    let server = start_in_process(loopback_config());
    let config = LoadConfig {
        rate: Some(200.0),
        duration: Duration::from_secs(2),
        ..tcp(server.tcp[0])
    };
    let r = run(&config);
    assert!(r.is_ok(), "{r}");
    assert!((360..=440).contains(&r.messages), "{r}");
    assert!((180.0..=220.0).contains(&r.msgs_per_sec()), "{r}");
}

#[test]
fn pipelined_upper_replies_verify() {
    let server = start_in_process(loopback_with(|c| {
        c.service = Arc::new(Mode::Upper);
    }));
    let config = LoadConfig {
        pipeline: 4,
        expect: Mode::Upper,
        size: 100,
        ..tcp(server.tcp[0])
    };
    let r = run(&config);
    assert!(r.is_ok(), "{r}");
    assert!(r.messages > 100, "{r}");
    // Expecting echo from an upper server is all mismatches.
    let r = run(&LoadConfig {
        expect: Mode::Echo,
        connections: 2,
        ..config
    });
    assert!(r.errors.mismatch > 0 && r.messages == 0, "{r}");
}

#[test]
fn udp_loss_of_ten_percent_is_measured_and_fails_by_default() {
    let server = with_service(Dropping::default());
    let config = LoadConfig {
        pipeline: 8,
        duration: Duration::from_secs(2),
        udp_reply_timeout: Duration::from_millis(200),
        ..udp(server.udp[0])
    };
    let r = run(&config);
    let loss = r.loss_percent();
    assert!((7.0..=13.0).contains(&loss), "loss {loss}%: {r}");
    assert_eq!(r.errors.hard(), 0, "{r}");
    assert!(!r.is_ok(), "10% is over the default 1%");
    let why = r.failure_summary().expect("a reason");
    assert!(
        why.contains(&format!("loss {loss:.2}% above --max-loss 1%")),
        "the threshold crossed is named: {why}"
    );
    let mut lenient = r.clone();
    lenient.max_loss_percent = 20.0;
    assert!(lenient.is_ok());
}

#[test]
fn healthy_udp_server_loses_nothing() {
    let server = start_in_process(loopback_config());
    let r = run(&udp(server.udp[0]));
    assert!(r.is_ok(), "{r}");
    assert!(r.messages > 100 && r.errors.lost == 0, "{r}");
}

#[test]
fn several_loops_share_the_connections() {
    let server = start_in_process(loopback_config());
    let config = LoadConfig {
        threads: 2,
        connections: 9,
        warmup: Duration::from_millis(300),
        ..tcp(server.tcp[0])
    };
    let r = run(&config);
    assert!(r.is_ok(), "{r}");
    assert_eq!(r.connected, 9);
    // Warm-up traffic counts in neither: sent and messages cover the
    // same window, apart from the few in flight at its end.
    assert!(r.sent >= r.messages && r.sent <= r.messages + 9, "{r}");
    let d = r.duration.as_secs_f64();
    assert!((0.95..1.5).contains(&d), "window {d} s");
}

#[test]
fn connect_rate_paces_the_ramp() {
    let server = start_in_process(loopback_config());
    let config = LoadConfig {
        connections: 20,
        connect_rate: Some(40.0),
        ..tcp(server.tcp[0])
    };
    let r = run(&config);
    assert!(r.is_ok(), "{r}");
    // 20 connections at 40/s: the last starts about 0.5 s in.
    let ramp = r.ramp.as_secs_f64();
    assert!((0.4..5.0).contains(&ramp), "ramp {ramp} s");
    let fast = run(&tcp(server.tcp[0]));
    assert!(
        fast.ramp < r.ramp,
        "{} vs {}",
        fast.ramp.as_secs_f64(),
        ramp
    );
}

#[test]
fn progress_is_reported_about_once_a_second() {
    let server = start_in_process(loopback_config());
    let config = LoadConfig {
        duration: Duration::from_millis(2500),
        ..tcp(server.tcp[0])
    };
    let mut seen = Vec::new();
    let r = load::run_with_progress(&config, &mut |p| seen.push(*p)).expect("load run");
    assert!(r.is_ok(), "{r}");
    assert!((1..=4).contains(&seen.len()), "{seen:?}");
    let last = seen.last().unwrap();
    assert_eq!(last.connections_up, 20, "{seen:?}");
    assert!(last.msgs_per_sec > 0.0 && last.p99_us > 0, "{seen:?}");
    assert_eq!(last.errors, 0);
    // The line shows elapsed of the planned total.
    assert_eq!(last.planned, Duration::from_millis(2500), "{seen:?}");
}

#[test]
fn two_thousand_connections_from_one_loop() {
    let server = start_in_process(loopback_config());
    let config = LoadConfig {
        connections: 2000,
        ..tcp(server.tcp[0])
    };
    let r = run(&config);
    assert!(r.is_ok(), "{r}");
    assert_eq!(r.connected, 2000);
}

#[test]
fn ipv6_targets_work() {
    let Ok(probe) = std::net::TcpListener::bind("[::1]:0") else {
        eprintln!("no IPv6 loopback here; skipped");
        return;
    };
    drop(probe);
    let server = start_in_process(config_with(|c| {
        c.tcp = vec!["[::1]:0".parse().unwrap()];
        c.udp = vec!["[::1]:0".parse().unwrap()];
    }));
    assert!(run(&tcp(server.tcp[0])).is_ok());
    assert!(run(&udp(server.udp[0])).is_ok());
}

// ---- the binary ----

fn load_bin(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_echo-reactor"))
        .arg("load")
        .args(args)
        .env("RUST_LOG", "warn")
        .stdin(Stdio::null())
        .output()
        .expect("run echo-reactor load")
}

fn closed_port() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap()
}

#[test]
fn binary_prints_one_json_object_with_every_field() {
    let server = start_in_process(loopback_config());
    let url = format!("tcp://{}", server.tcp[0]);
    let out = load_bin(&[&url, "-c", "5", "-d", "1", "--json", "--latency"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert_eq!(stdout.trim().lines().count(), 1, "{stdout}");
    let j = json::parse(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    for key in [
        "connections",
        "connected",
        "reconnects",
        "ramp_s",
        "sent",
        "duration_s",
        "messages",
        "bytes",
        "msgs_per_sec",
        "bytes_per_sec",
        "loss_percent",
    ] {
        assert!(j.get(key).and_then(json::Value::as_f64).is_some(), "{key}");
    }
    for key in ["p50", "p90", "p99", "p999", "max"] {
        assert!(
            json::at(&j, &["latency_us", key]).is_some(),
            "latency_us.{key}"
        );
    }
    for key in ["connect", "reset", "timeout", "mismatch", "lost"] {
        assert_eq!(json::at(&j, &["errors", key]), Some(0.0), "errors.{key}");
    }
    assert_eq!(
        j.get("connections").and_then(json::Value::as_f64),
        Some(5.0)
    );
    assert!(j.get("messages").and_then(json::Value::as_f64).unwrap() > 0.0);
    assert_eq!(j.get("ok"), Some(&json::Value::Bool(true)));
    // --latency with --json: the distribution goes to stderr.
    assert!(
        stderr.contains("Value     Percentile TotalCount"),
        "{stderr}"
    );
}

#[test]
fn binary_text_report_and_latency_distribution() {
    let server = start_in_process(loopback_config());
    let url = format!("tcp://{}", server.tcp[0]);
    let out = load_bin(&[&url, "-c", "3", "-d", "1", "--latency"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}");
    assert!(stdout.contains("result     ok"), "{stdout}");
    assert!(stdout.contains("1/(1-Percentile)"), "{stdout}");
    assert!(stdout.contains("#[Max     ="), "{stdout}");
    // stderr is not a terminal here: no progress lines.
    assert!(!String::from_utf8_lossy(&out.stderr).contains("msgs/s"));
}

#[test]
fn unreachable_server_fails_cleanly_with_json_anyway() {
    let url = format!("tcp://{}", closed_port());
    let out = load_bin(&[&url, "-c", "3", "-d", "1", "--json"]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{stderr}");
    assert!(stderr.contains("cannot reach"), "{stderr}");
    assert!(!stderr.contains("panicked"), "{stderr}");
    let j = json::parse(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(json::at(&j, &["errors", "connect"]), Some(3.0));
    assert_eq!(j.get("ok"), Some(&json::Value::Bool(false)));
}

#[test]
fn replies_that_never_come_end_the_run_after_the_drain_timeout() {
    // A server that accepts and reads but never answers: each connection's
    // one message stays in flight until the drain gives up on it.
    let hole = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("tcp://{}", hole.local_addr().expect("addr"));
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in hole.incoming().flatten() {
            held.push(stream); // kept open, never read nor written
        }
    });
    let started = Instant::now();
    let out = load_bin(&[
        &url,
        "-c",
        "2",
        "-d",
        "0.3",
        "--drain-timeout",
        "0.2",
        "--json",
    ]);
    let elapsed = started.elapsed();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{stdout}");
    let j = json::parse(stdout.trim()).unwrap_or_else(|e| panic!("{e}: {stdout}"));
    assert_eq!(json::at(&j, &["errors", "timeout"]), Some(2.0), "{stdout}");
    assert_eq!(j.get("messages").and_then(json::Value::as_f64), Some(0.0));
    // The default drain alone would take 2 s after the window.
    assert!(elapsed < Duration::from_millis(1800), "took {elapsed:?}");
}

#[test]
fn bad_urls_and_options_fail_cleanly() {
    for args in [
        &["tcp//127.0.0.1:7"][..],
        &["http://127.0.0.1:7"],
        &["tcp://127.0.0.1"],
        &["tcp://no.such.host:7"],
        &["tcp://127.0.0.1:7", "--connections", "0"],
        &["tcp://127.0.0.1:7", "--size", "0"],
        &["tcp://127.0.0.1:7", "--rate", "-5"],
        &["udp://127.0.0.1:7", "--size", "4"],
        &["tcp://127.0.0.1:7", "--duration", "0"],
        &["tcp://127.0.0.1:7", "-c", "2", "--threads", "3"],
        &["tcp://127.0.0.1:7", "--drain-timeout", "-1"],
        &["udp://127.0.0.1:7", "--udp-timeout", "0"],
        &["tcp://127.0.0.1:7", "--pipeline", "18446744073709551615"],
        &["tcp://127.0.0.1:7", "--connections", "18446744073709551615"],
        &["tcp://127.0.0.1:7", "--connect-rate", "1e-300"],
        &["tcp://127.0.0.1:7", "--rate", "1e10"],
        &["tcp://127.0.0.1:7", "--duration", "1e-300"],
        &["tcp://127.0.0.1:7", "--drain-timeout", "1e300"],
    ] {
        let out = load_bin(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(
            stderr.contains("invalid") || stderr.contains("error"),
            "{args:?}: {stderr}"
        );
    }
}

/// The report read as JSON by serde_json: a parser of its own here would
/// have to keep up with every kind of value the schema gains.
mod json {
    pub use serde_json::Value;

    pub fn parse(s: &str) -> Result<Value, String> {
        serde_json::from_str(s).map_err(|e| e.to_string())
    }

    /// The number at `path` (`["errors", "reset"]`).
    pub fn at(v: &Value, path: &[&str]) -> Option<f64> {
        path.iter().try_fold(v, |v, k| v.get(k))?.as_f64()
    }
}
