//! A real HAProxy (2.6, OpenSSL on its side) between the generator and
//! our server, with README.md's configurations: terminating TLS in front
//! of the plain server, where `load tls://` must pass; and in TCP mode
//! with `send-proxy-v2` in front of `serve --proxy-protocol`, where the
//! server must show the generator's `--source` address, not HAProxy's.
//! Skips, saying so, where HAProxy is not installed (`.ci/run` installs
//! it).

mod common;

use std::time::Duration;

use common::haproxy::{
    have_haproxy, readme_config, Haproxy, README_BACKEND, README_PEM, README_TCP_FRONTEND,
    README_TLS_FRONTEND,
};
use common::tls::{arg, Pki};
use common::*;

fn load(args: &[&str]) -> Finished {
    let mut argv = vec!["load"];
    argv.extend_from_slice(args);
    run_binary(&argv, Duration::from_secs(30))
}

#[test]
fn load_tls_passes_through_haproxy_terminating_tls_in_front_of_the_plain_server() {
    if !have_haproxy() {
        println!("skipped: no haproxy (.ci/run installs it)");
        return;
    }
    let pki = Pki::new();
    let server = start_server(&["--tcp", "127.0.0.1:0", "--mode", "upper"]);
    let haproxy = Haproxy::start(
        &readme_config("tls termination"),
        README_TLS_FRONTEND,
        &[
            (README_BACKEND, server.tcp_addr().to_string()),
            (README_PEM, arg(&pki.haproxy_pem())),
        ],
    );
    let url = format!("tls://{}", haproxy.frontend);
    let out = load(&[
        &url,
        "--tls-ca",
        &arg(&pki.ca),
        "-c",
        "10",
        "-d",
        "1",
        "--expect",
        "upper",
        "--json",
    ]);
    assert_eq!(out.code(), 0, "{out:#?}\nhaproxy: {}", haproxy.stderr());
    let j: serde_json::Value = serde_json::from_str(out.stdout.trim()).expect("one JSON object");
    assert_eq!(j["ok"], true, "{j}");
    assert_eq!(j["tls"]["handshakes"], 10, "{j}");
    assert_eq!(j["tls"]["verified"], true, "{j}");
    assert!(j["messages"].as_u64() > Some(0), "{j}");
    drop(haproxy);
    let stderr = server.stop();
    // Our server saw plain TCP only: HAProxy's end of the TLS.
    assert_eq!(final_stat(&stderr, "tls handshakes"), Some(0), "{stderr}");
    assert!(final_stat(&stderr, "accepted") >= Some(10), "{stderr}");
}

#[test]
fn haproxy_send_proxy_v2_shows_the_generators_source_to_the_server_not_haproxys() {
    if !have_haproxy() {
        println!("skipped: no haproxy (.ci/run installs it)");
        return;
    }
    let server = start_server_logged(
        &["--tcp", "127.0.0.1:0", "--proxy-protocol"],
        "echo_reactor=debug",
    );
    let haproxy = Haproxy::start(
        &readme_config("send-proxy-v2"),
        README_TCP_FRONTEND,
        &[(README_BACKEND, server.tcp_addr().to_string())],
    );
    let url = format!("tcp://{}", haproxy.frontend);
    let out = load(&[&url, "--source", "127.0.0.9", "-c", "5", "-d", "0.5"]);
    assert_eq!(out.code(), 0, "{out:#?}\nhaproxy: {}", haproxy.stderr());
    let closed = |stderr: &str| -> Vec<String> {
        stderr
            .lines()
            .filter(|l| l.contains(": closed: "))
            .map(String::from)
            .collect()
    };
    assert!(
        wait_until(IO_TIMEOUT, || closed(&server.stderr()).len() >= 5),
        "{}",
        server.stderr()
    );
    drop(haproxy);
    let stderr = server.stop();
    let lines = closed(&stderr);
    assert!(
        lines.iter().all(|l| l.contains(" 127.0.0.9:")),
        "every client shown as 127.0.0.9:\n{}",
        lines.join("\n")
    );
    assert!(
        !lines.iter().any(|l| l.contains(" 127.0.0.1:")),
        "HAProxy's own address shown:\n{}",
        lines.join("\n")
    );
    assert!(final_stat(&stderr, "proxy headers") >= Some(5), "{stderr}");
    assert_eq!(final_stat(&stderr, "proxy refused"), Some(0), "{stderr}");
}
