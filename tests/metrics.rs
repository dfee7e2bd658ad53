//! `serve --stats` and `serve --metrics`, from the outside: the stats line
//! on stderr, and the Prometheus endpoint fetched with a real HTTP client
//! (curl, which `.ci/run` installs when missing) and checked with a small
//! parser of the text exposition format.

mod common;

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use common::*;

/// The metrics URL from the server's `listening on http://` line.
fn metrics_url(server: &ServerProcess) -> String {
    server.metrics.clone().expect("a listening on http:// line")
}

/// GETs `url` with curl: (status code, body).
fn curl(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-m", "5", "-w", "\n%{http_code}", url])
        .output()
        .expect("curl is needed for this test (.ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", ""));
    (code.trim().parse().unwrap_or(0), body.to_string())
}

/// One parsed sample.
#[derive(Debug)]
struct Family {
    kind: String,
    help: bool,
    samples: HashMap<String, f64>,
}

/// Parses the text exposition format, checking what a scraper relies on:
/// HELP and TYPE before samples, names with the prefix, counters ending in
/// `_total`, numbers that parse.
fn parse(text: &str) -> HashMap<String, Family> {
    let mut families: HashMap<String, Family> = HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, help) = rest.split_once(' ').expect("HELP has text");
            assert!(!help.is_empty(), "{line}");
            families
                .entry(name.to_string())
                .or_insert_with(|| Family {
                    kind: String::new(),
                    help: false,
                    samples: HashMap::new(),
                })
                .help = true;
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').expect("TYPE has a type");
            assert!(["counter", "gauge"].contains(&kind), "{line}");
            let f = families.get_mut(name).expect("HELP before TYPE");
            f.kind = kind.to_string();
        } else if !line.is_empty() {
            let (series, value) = line.rsplit_once(' ').expect("sample has a value");
            let name = series.split('{').next().unwrap_or_default();
            assert!(name.starts_with("echo_reactor_"), "{line}");
            let f = families
                .get_mut(name)
                .unwrap_or_else(|| panic!("sample before HELP/TYPE: {line}"));
            assert!(!f.kind.is_empty(), "sample before TYPE: {line}");
            if f.kind == "counter" {
                assert!(name.ends_with("_total"), "counter without _total: {line}");
            }
            let v: f64 = value
                .parse()
                .unwrap_or_else(|_| panic!("bad value: {line}"));
            f.samples.insert(series.to_string(), v);
        }
    }
    for (name, f) in &families {
        assert!(
            f.help && !f.kind.is_empty() && !f.samples.is_empty(),
            "{name}: {f:?}"
        );
    }
    families
}

fn value(f: &HashMap<String, Family>, series: &str) -> f64 {
    let name = series.split('{').next().unwrap_or_default();
    f.get(name)
        .and_then(|fam| fam.samples.get(series))
        .copied()
        .unwrap_or_else(|| panic!("no {series}"))
}

#[test]
fn metrics_are_valid_prometheus_text_and_counters_only_grow() {
    let server = start_server(&["--metrics", "127.0.0.1:0"]);
    let url = metrics_url(&server);
    let (code, first) = curl(&url);
    assert_eq!(code, 200, "{first}");
    let before = parse(&first);
    // Traffic between the scrapes.
    let mut c = connect(server.tcp_addr());
    for _ in 0..10 {
        roundtrip(&mut c, b"0123456789");
    }
    let u = udp_client(server.udp_addr());
    u.send_to(b"ping", server.udp_addr()).expect("send");
    let mut buf = [0u8; 16];
    let _ = u.recv_from(&mut buf);
    let (code, second) = curl(&url);
    assert_eq!(code, 200);
    let after = parse(&second);
    for (name, fam) in &after {
        if fam.kind != "counter" {
            continue;
        }
        for (series, v) in &fam.samples {
            let old = before[name].samples[series];
            assert!(*v >= old, "{series} went from {old} to {v}");
        }
    }
    assert_eq!(
        value(&after, "echo_reactor_tcp_received_bytes_total"),
        100.0
    );
    assert_eq!(value(&after, "echo_reactor_tcp_sent_bytes_total"), 100.0);
    assert_eq!(value(&after, "echo_reactor_tcp_connections_open"), 1.0);
    assert_eq!(
        value(&after, "echo_reactor_udp_received_datagrams_total"),
        1.0
    );
    assert_eq!(
        value(
            &after,
            "echo_reactor_tcp_connections_closed_abnormally_total{reason=\"reset\"}"
        ),
        0.0
    );
}

#[test]
fn other_paths_methods_and_garbage_get_http_errors() {
    let server = start_server(&["--metrics", "127.0.0.1:0"]);
    let url = metrics_url(&server);
    let base = url.trim_end_matches("/metrics");
    assert_eq!(curl(&format!("{base}/")).0, 404);
    assert_eq!(curl(&format!("{base}/metricsx")).0, 404);
    let out = Command::new("curl")
        .args([
            "-s",
            "-m",
            "5",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "POST",
            &url,
        ])
        .output()
        .expect("curl");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "405");
    // Garbage and an oversized head, by hand.
    let addr: SocketAddr = base
        .trim_start_matches("http://")
        .parse()
        .expect("metrics addr");
    assert!(raw(addr, b"\x16\x03\x01hello\r\n\r\n").starts_with("HTTP/1.1 400"));
    let mut huge = b"GET /metrics HTTP/1.1\r\nX: ".to_vec();
    huge.extend(std::iter::repeat(b'a').take(20_000));
    assert!(raw(addr, &huge).starts_with("HTTP/1.1 431"));
}

/// Sends `request` and reads the answer until the server closes.
fn raw(addr: SocketAddr, request: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    // The server may answer and close before taking all of a huge head.
    let _ = s.write_all(request);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    String::from_utf8_lossy(&out).into_owned()
}

#[test]
fn silent_scrapers_do_not_slow_the_echo_traffic() {
    let server = start_server(&["--metrics", "127.0.0.1:0"]);
    let url = metrics_url(&server);
    let addr: SocketAddr = url
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .parse()
        .expect("addr");
    // More silent connections than the endpoint serves, and a slow one
    // dribbling its request byte by byte.
    let silent: Vec<TcpStream> = (0..20)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let mut c = connect(server.tcp_addr());
    let mut worst = Duration::ZERO;
    for i in 0..200 {
        let started = Instant::now();
        let msg = format!("msg {i}");
        assert_eq!(roundtrip(&mut c, msg.as_bytes()), msg.as_bytes());
        worst = worst.max(started.elapsed());
    }
    assert!(
        worst < Duration::from_millis(100),
        "echo round trip took {worst:?}"
    );
    drop(silent);
    // And the endpoint answers again once they are gone.
    assert!(wait_until(Duration::from_secs(3), || curl(&url).0 == 200));
}

#[test]
fn with_two_loops_the_metrics_cover_both() {
    let server = start_server(&["--metrics", "127.0.0.1:0", "--threads", "2"]);
    let url = metrics_url(&server);
    let mut conns: Vec<TcpStream> = (0..40).map(|_| connect(server.tcp_addr())).collect();
    for c in &mut conns {
        roundtrip(c, b"x");
    }
    // The other loop publishes once a second.
    let all_seen = wait_until(Duration::from_secs(4), || {
        let (_, body) = curl(&url);
        let f = parse(&body);
        value(&f, "echo_reactor_tcp_connections_accepted_total") == 40.0
            && value(&f, "echo_reactor_loops") == 2.0
    });
    assert!(
        all_seen,
        "the totals never covered all 40 connections:\n{}",
        curl(&url).1
    );
}

#[test]
fn stats_line_reports_connections_and_rates() {
    let server = start_server(&["--stats", "0.5"]);
    let mut c = connect(server.tcp_addr());
    for _ in 0..50 {
        roundtrip(&mut c, &[b'z'; 1000]);
    }
    assert!(
        wait_until(Duration::from_secs(3), || server
            .stderr()
            .contains("stats: conns 1 open, 1 accepted, 0 closed, 0 rejected")),
        "{}",
        server.stderr()
    );
    drop(c);
    let log = server.stop();
    let line = log
        .lines()
        .find(|l| l.contains("stats: conns 1 open"))
        .expect("a stats line");
    assert!(
        line.contains("tcp in ") && line.contains("B/s") && line.contains("accepting"),
        "{line}"
    );
}

#[test]
fn metrics_port_in_use_fails_loudly() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = taken.local_addr().expect("addr").to_string();
    let out = run_binary(
        &["serve", "--tcp", "127.0.0.1:0", "--metrics", &addr],
        Duration::from_secs(10),
    );
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr.contains(&format!("cannot bind http://{addr}")),
        "{}",
        out.stderr
    );
}

/// The metrics listener's address from its URL.
fn metrics_addr(server: &ServerProcess) -> SocketAddr {
    metrics_url(server)
        .trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .parse()
        .expect("addr")
}

#[test]
fn a_scraper_wins_its_slot_over_the_oldest_silent_connection() {
    let server = start_server(&["--metrics", "127.0.0.1:0"]);
    let addr = metrics_addr(&server);
    // Every slot held by a connection that never speaks.
    let silent: Vec<TcpStream> = (0..12)
        .map(|_| TcpStream::connect(addr).expect("connect"))
        .collect();
    let reply = raw(addr, b"GET /metrics HTTP/1.0\r\n\r\n");
    assert!(
        reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200"),
        "{reply}"
    );
    drop(silent);
    server.stop();
}

#[test]
fn a_scraper_wins_its_slot_over_connections_that_dribble_an_unfinished_request() {
    let server = start_server(&["--metrics", "127.0.0.1:0"]);
    let addr = metrics_addr(&server);
    // Every slot held by a connection that sent one byte and no more.
    let dribbling: Vec<TcpStream> = (0..12)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(b"G").expect("one byte");
            s
        })
        .collect();
    let reply = raw(addr, b"GET /metrics HTTP/1.0\r\n\r\n");
    assert!(
        reply.starts_with("HTTP/1.0 200") || reply.starts_with("HTTP/1.1 200"),
        "{reply}"
    );
    drop(dribbling);
    server.stop();
}

#[test]
fn a_scraper_waiting_while_descriptors_ran_out_is_answered_once_they_free_up() {
    let argv: Vec<String> = [
        "serve",
        "--tcp",
        "127.0.0.1:0",
        "--metrics",
        "127.0.0.1:0",
        "--max-connections",
        "1000",
    ]
    .map(String::from)
    .to_vec();
    let server = start_binary(&argv, Some(&["prlimit", "--nofile=48", "--"]));
    let mut clients: Vec<TcpStream> = (0..60).map(|_| connect(server.tcp_addr())).collect();
    assert!(
        wait_until(IO_TIMEOUT, || server
            .stderr()
            .contains("out of file descriptors")),
        "{}",
        server.stderr()
    );
    // The scraper waits in the metrics backlog while no descriptor is free.
    let addr = metrics_addr(&server);
    let scraper = std::thread::spawn(move || raw(addr, b"GET /metrics HTTP/1.0\r\n\r\n"));
    // Once its connect waits in the listen queue (the listener's receive
    // queue in /proc/net/tcp), free the descriptors: no new edge comes, so
    // only a retry reaches it.
    assert!(
        wait_until(IO_TIMEOUT, || tcp_queues(addr.port(), 0)
            .is_some_and(|(_, queued)| queued == 1)),
        "the scraper never reached the listen queue"
    );
    clients.truncate(0);
    let reply = scraper.join().expect("scraper thread");
    assert!(reply.contains(" 200 "), "no answer: {reply:?}");
    server.stop();
}

/// Attackers holding `sockets` connections to the metrics endpoint, each
/// sending an unfinished request head and then a byte now and then, and
/// reconnecting at once whenever the server drops one, until `stop`.
/// Returns how many connections they made.
fn dribbling_flood(
    addr: SocketAddr,
    sockets: usize,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
) -> std::thread::JoinHandle<u64> {
    use mio::net::TcpStream as MioStream;
    use mio::{Events, Interest, Poll, Token};
    use std::sync::atomic::Ordering;
    const HEAD: &[u8] = b"GET /metrics HTTP/1.1\r\nHost: flood\r\nX-Slow: ";
    std::thread::spawn(move || {
        let mut poll = Poll::new().expect("poll");
        let mut events = Events::with_capacity(1024);
        let mut conns: Vec<Option<MioStream>> = (0..sockets).map(|_| None).collect();
        let mut made = 0u64;
        let mut open = |i: usize, conns: &mut Vec<Option<MioStream>>, poll: &Poll| {
            if let Ok(mut s) = MioStream::connect(addr) {
                let interest = Interest::READABLE | Interest::WRITABLE;
                if poll.registry().register(&mut s, Token(i), interest).is_ok() {
                    conns[i] = Some(s);
                    made += 1;
                }
            }
        };
        for i in 0..sockets {
            open(i, &mut conns, &poll);
        }
        let mut last_dribble = Instant::now();
        while !stop.load(Ordering::Relaxed) {
            let _ = poll.poll(&mut events, Some(Duration::from_millis(20)));
            let mut gone = Vec::new();
            for ev in events.iter() {
                let i = ev.token().0;
                let Some(s) = conns[i].as_mut() else { continue };
                if ev.is_writable() {
                    // Connected (or failed): the unfinished head, once.
                    let _ = s.write(HEAD);
                }
                if ev.is_readable() || ev.is_read_closed() || ev.is_error() {
                    let mut buf = [0u8; 4096];
                    loop {
                        match s.read(&mut buf) {
                            Ok(0) => {
                                gone.push(i);
                                break;
                            }
                            Ok(_) => {}
                            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => break,
                            Err(_) => {
                                gone.push(i);
                                break;
                            }
                        }
                    }
                }
            }
            for i in gone {
                conns[i] = None;
                open(i, &mut conns, &poll);
            }
            if last_dribble.elapsed() > Duration::from_millis(200) {
                last_dribble = Instant::now();
                for s in conns.iter_mut().flatten() {
                    let _ = s.write(b"x");
                }
            }
        }
        made
    })
}

#[test]
fn a_scraper_with_a_whole_request_is_answered_under_a_dribbling_flood() {
    const SCRAPES: usize = 30;
    let server = match std::env::var("FLOOD_LOG") {
        Ok(filter) => start_server_logged(
            &["--tcp", "127.0.0.1:0", "--metrics", "127.0.0.1:0"],
            &filter,
        ),
        Err(_) => start_server(&["--tcp", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]),
    };
    let addr = metrics_addr(&server);
    let url = metrics_url(&server);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let flood = dribbling_flood(addr, 1500, std::sync::Arc::clone(&stop));
    // Let the flood fill every slot and keep reconnecting.
    std::thread::sleep(Duration::from_secs(1));
    let mut failed = Vec::new();
    for i in 0..SCRAPES {
        // A well-behaved scraper: its whole request at once, 1 s to answer.
        let out = Command::new("curl")
            .args([
                "-s",
                "-m",
                "1",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code} %{local_port} %{time_connect}",
                &url,
            ])
            .output()
            .expect("curl is needed for this test (.ci/run installs it)");
        let code = String::from_utf8_lossy(&out.stdout).into_owned();
        if !code.starts_with("200") {
            failed.push((i, code));
        }
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let made = flood.join().expect("flood");
    let stderr = server.stop();
    if let Ok(path) = std::env::var("FLOOD_LOG_FILE") {
        let _ = std::fs::write(path, &stderr);
    }
    eprintln!(
        "{} of {SCRAPES} scrapes failed under a flood of {made} connections",
        failed.len()
    );
    assert!(
        failed.len() <= 1,
        "{} of {SCRAPES} scrapes failed: {failed:?}",
        failed.len()
    );
}
