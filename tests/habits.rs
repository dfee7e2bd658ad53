//! What a newcomer types, against the real binary: durations with units
//! and rates with k/M, `serve -p PORT` and `--tcp :PORT`, and a generator
//! that raises its own soft open-file limit so `--connections 1000` runs
//! under the usual 1,024.

mod common;

use std::process::Command;
use std::time::Duration;

use common::netns::Netns;
use common::*;

const LIMIT: Duration = Duration::from_secs(60);

fn json(out: &Finished) -> serde_json::Value {
    serde_json::from_str(out.stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: not one JSON object: {out:#?}"))
}

#[test]
fn the_generator_raises_its_soft_open_file_limit_to_the_hard_one() {
    let has_prlimit = Command::new("prlimit").arg("--version").output().is_ok();
    if !has_prlimit {
        println!("skipped: no prlimit");
        return;
    }
    let server = start_server(&[]);
    let url = format!("tcp://{}", server.tcp_addr());
    // The usual soft limit under a generous hard one: 1,100 connections
    // need more than 1,024 descriptors.
    let mut cmd = Command::new("prlimit");
    cmd.args([
        "--nofile=1024:20000",
        "--",
        env!("CARGO_BIN_EXE_echo-reactor"),
    ])
    .args([
        "load",
        &url,
        "-c",
        "1100",
        "-d",
        "300ms",
        "--connect-timeout",
        "20s",
    ])
    .arg("--json");
    let out = run_to_end(cmd, LIMIT);
    assert_eq!(out.code(), 0, "{out:#?}");
    assert_eq!(json(&out)["connected"], 1100);
    // The hard limit still binds, and says which limit.
    let mut cmd = Command::new("prlimit");
    cmd.args([
        "--nofile=1024:1024",
        "--",
        env!("CARGO_BIN_EXE_echo-reactor"),
    ])
    .args(["load", &url, "-c", "1100", "-d", "300ms"]);
    let out = run_to_end(cmd, LIMIT);
    assert_eq!(out.code(), 2, "{out:#?}");
    assert!(
        out.stderr.contains("open-file limit (1024)"),
        "{}",
        out.stderr
    );
    server.stop();
}

#[test]
fn durations_take_units_and_rates_take_k() {
    let server = start_server(&[]);
    let url = format!("tcp://{}", server.tcp_addr());
    let out = run_binary(
        &[
            "load", &url, "-c", "4", "-d", "500ms", "--warmup", "100ms", "--rate", "2k", "--json",
        ],
        LIMIT,
    );
    assert_eq!(out.code(), 0, "{out:#?}");
    let report = json(&out);
    assert_eq!(report["test"]["duration_s"], 0.5, "{report}");
    assert_eq!(report["test"]["warmup_s"], 0.1, "{report}");
    assert_eq!(report["test"]["rate"], 2000.0, "{report}");
    for (flag, bad, forms) in [
        ("-d", "10x", "500ms, 10s, 1m, 2h"),
        ("--connect-timeout", "2h", "expected 1ms to 1h"),
        ("--rate", "20q", "20k or 1.5M"),
    ] {
        let out = run_binary(&["load", &url, flag, bad], LIMIT);
        assert_eq!(out.code(), 2, "{flag} {bad}: {out:#?}");
        assert!(out.stderr.contains(forms), "{flag} {bad}: {}", out.stderr);
    }
    let out = run_binary(&["serve", "--shutdown-timeout", "soon"], LIMIT);
    assert_eq!(out.code(), 2, "{out:#?}");
    assert!(out.stderr.contains("500ms, 10s, 1m, 2h"), "{}", out.stderr);
    server.stop();
}

#[test]
fn port_serves_tcp_and_udp_on_loopback() {
    let mut server = start_binary(
        &["serve", "-p", "0", "--shutdown-timeout", "500ms"].map(String::from),
        None,
    );
    assert!(server.tcp_addr().ip().is_loopback() && server.tcp_addr().is_ipv4());
    assert!(server.udp_addr().ip().is_loopback() && server.udp_addr().is_ipv4());
    let mut s = connect(server.tcp_addr());
    assert_eq!(roundtrip(&mut s, b"hi\n"), b"hi\n");
    let u = udp_client(server.udp_addr());
    u.send_to(b"ping", server.udp_addr()).expect("send");
    let mut buf = [0u8; 16];
    let n = u.recv(&mut buf).expect("a reply");
    assert_eq!(&buf[..n], b"ping");
    drop(s);
    server.signal(libc::SIGTERM);
    assert!(server.wait_timeout(IO_TIMEOUT).is_some_and(|s| s.success()));
}

#[test]
fn a_bare_port_listens_on_every_address_of_both_versions() {
    // Every address: inside a namespace of its own, so nothing outside
    // the test can reach it.
    let Some(ns) = Netns::or_skip("anyaddr", "127.0.0.1 localhost\n") else {
        return;
    };
    let server = start_binary(
        &["serve", "--tcp", ":0", "--udp", "127.0.0.1:0"].map(String::from),
        Some(&ns.prefix()),
    );
    let tcp: Vec<String> = server.tcp.iter().map(|a| a.ip().to_string()).collect();
    assert_eq!(tcp, ["0.0.0.0", "::"], "{:?}", server.tcp);
    for addr in &server.tcp {
        let url = if addr.is_ipv4() {
            format!("tcp://127.0.0.1:{}", addr.port())
        } else {
            format!("tcp://[::1]:{}", addr.port())
        };
        let mut cmd = ns.command(env!("CARGO_BIN_EXE_echo-reactor"));
        cmd.args(["load", &url, "-c", "2", "-d", "200ms"]);
        let out = run_to_end(cmd, LIMIT);
        assert_eq!(out.code(), 0, "{url}: {out:#?}");
    }
    server.stop();
}
