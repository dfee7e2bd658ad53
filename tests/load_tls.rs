//! `load tls://` and `client tls://`, from the outside, against our own
//! `serve --tls`: the right roots pass and the report tells the
//! handshakes; another CA, a name the certificate does not hold, an expired
//! certificate, a server that does not speak TLS and one that never
//! answers each fail as a `tls` error saying what failed, quickly, with
//! the JSON on stdout; `--tls-insecure` passes and says so; flags that
//! clash are usage errors; the README's openssl commands make certificates
//! that work as written. Against hostile servers of the tests' own (a
//! chain over rustls's 64 KiB, a `close_notify` without a FIN, half a
//! record then a FIN or a reset, half a handshake flight then a FIN) each
//! ending is told for what it is, at once, never as a `timeout`.
//!
//! Certificates are made per test (`tests/common/tls.rs`); nothing is
//! checked in.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use common::tls::{arg, Pki};
use common::*;

/// Long enough for any of these runs on a loaded machine; a run that
/// fails fast is checked against a much shorter bound.
const RUN_LIMIT: Duration = Duration::from_secs(30);

fn start_tls(cert: &str, key: &str, extra: &[&str]) -> ServerProcess {
    let mut argv: Vec<String> = [
        "serve",
        "--tls",
        "127.0.0.1:0",
        "--tls-cert",
        cert,
        "--tls-key",
        key,
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    argv.extend(extra.iter().map(|s| s.to_string()));
    start_binary(&argv, None)
}

fn serve(pki: &Pki, extra: &[&str]) -> ServerProcess {
    start_tls(&arg(&pki.cert), &arg(&pki.key), extra)
}

/// `load ARGS`, run to its end.
fn load(args: &[&str]) -> Finished {
    run_load(args, RUN_LIMIT)
}

/// Asserts a run failed on TLS alone, `conns` handshakes, with `why` in
/// its error, on stdout's JSON and stderr's line alike, and quickly.
fn assert_tls_failure(out: &Finished, conns: u64, why: &str) {
    assert_eq!(out.code(), 1, "{out:#?}");
    let j = only_json(out);
    assert_eq!(j["ok"], false, "{j}");
    assert_eq!(j["errors"]["tls"], conns, "{j}");
    assert_eq!(j["connected"], 0, "{j}");
    let error = j["error"].as_str().expect("an error line");
    assert!(error.contains(why), "{why} not in: {error}");
    assert!(
        out.stderr.contains(why),
        "{why} not in stderr: {}",
        out.stderr
    );
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    // A refused certificate is known at the server's first flight: the
    // run does not wait out its 30 s window.
    assert!(out.elapsed < Duration::from_secs(10), "{:?}", out.elapsed);
}

#[test]
fn load_over_tls_with_the_servers_ca_passes_and_reports_its_handshakes() {
    let pki = Pki::new();
    let server = serve(&pki, &["--mode", "upper"]);
    let url = format!("tls://{}", server.tls[0]);
    let ca = arg(&pki.ca);
    let out = load(&[
        &url, "--tls-ca", &ca, "-c", "8", "-d", "0.5", "--expect", "upper", "--json",
    ]);
    assert_eq!(out.code(), 0, "{out:#?}");
    let j = only_json(&out);
    assert_eq!(j["proto"], "tls", "{j}");
    assert_eq!(j["ok"], true, "{j}");
    assert_eq!(j["errors"]["tls"], 0, "{j}");
    let tls = &j["tls"];
    assert_eq!(tls["handshakes"], 8, "{j}");
    assert_eq!(tls["server_name"], "127.0.0.1", "the URL's address: {j}");
    assert_eq!(tls["verified"], true, "{j}");
    assert_eq!(tls["version"], "TLSv1.3", "{j}");
    assert_eq!(tls["versions"]["tls13"], 8, "{j}");
    let hs = &tls["handshake_us"];
    let (p50, p99) = (hs["p50"].as_u64().unwrap(), hs["p99"].as_u64().unwrap());
    assert!(p50 > 0 && p99 >= p50, "{hs}");
    assert!(hs["histogram"].is_string(), "{hs}");
    // Apart from the message latency, which has its own histogram.
    assert!(j["messages"].as_u64().unwrap() > 0, "{j}");
    let text = load(&[
        &url, "--tls-ca", &ca, "-c", "2", "-d", "0.3", "--expect", "upper",
    ]);
    assert_eq!(text.code(), 0, "{text:#?}");
    assert!(
        text.stdout.contains("tls        TLSv1.3, 2 handshakes")
            && text.stdout.contains("certificate verified for 127.0.0.1"),
        "{}",
        text.stdout
    );
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "tls handshakes"), Some(10), "{stderr}");
    assert_eq!(final_stat(&stderr, "tls failed"), Some(0), "{stderr}");
}

#[test]
fn messages_larger_than_the_socket_buffers_go_through_whole_over_tls() {
    // A 1 MiB message is many records, and the socket takes only some at
    // a time: the rest must follow on the writable edges even once the
    // message is all handed to the session.
    let pki = Pki::new();
    let server = serve(&pki, &[]);
    let url = format!("tls://{}", server.tls[0]);
    let out = load(&[
        &url,
        "--tls-ca",
        &arg(&pki.ca),
        "-c",
        "2",
        "--size",
        "1048576",
        "--pipeline",
        "2",
        "-d",
        "1",
        "--json",
    ]);
    assert_eq!(out.code(), 0, "{out:#?}");
    let j = only_json(&out);
    assert!(j["messages"].as_u64() >= Some(2), "{j}");
    assert_eq!(j["errors"]["timeout"], 0, "{j}");
    server.stop();
}

#[test]
fn another_ca_is_a_tls_error_that_names_the_unknown_issuer() {
    let pki = Pki::new();
    let server = serve(&pki, &[]);
    let url = format!("tls://{}", server.tls[0]);
    let stranger = arg(&pki.stranger());
    let out = load(&[&url, "--tls-ca", &stranger, "-c", "4", "-d", "30", "--json"]);
    assert_tls_failure(&out, 4, "unknown issuer");
    assert!(
        out.stdout.contains(&stranger),
        "names the roots: {}",
        out.stdout
    );
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "tls handshakes"), Some(0), "{stderr}");
    // Our client said why with an alert; the server counts that.
    assert_eq!(final_stat(&stderr, "tls peer-alert"), Some(4), "{stderr}");
}

#[test]
fn tls_insecure_passes_against_a_certificate_nobody_vouches_for_and_says_so() {
    let pki = Pki::new();
    let server = serve(&pki, &[]);
    let url = format!("tls://{}", server.tls[0]);
    // No --tls-ca: the system's roots know nothing of this test CA, so
    // only --tls-insecure lets it through.
    let refused = load(&[&url, "-c", "2", "-d", "30", "--json"]);
    assert_tls_failure(&refused, 2, "unknown issuer");
    let out = load(&[&url, "--tls-insecure", "-c", "2", "-d", "0.3", "--json"]);
    assert_eq!(out.code(), 0, "{out:#?}");
    let j = only_json(&out);
    assert_eq!(j["tls"]["verified"], false, "{j}");
    assert_eq!(j["tls"]["handshakes"], 2, "{j}");
    let text = load(&[&url, "--tls-insecure", "-c", "1", "-d", "0.2"]);
    assert_eq!(text.code(), 0, "{text:#?}");
    assert!(
        text.stdout
            .contains("certificate NOT verified (--tls-insecure)"),
        "{}",
        text.stdout
    );
    server.stop();
}

#[test]
fn a_name_or_address_the_certificate_does_not_hold_is_a_name_mismatch() {
    let pki = Pki::new();
    let server = serve(&pki, &[]);
    let url = format!("tls://{}", server.tls[0]);
    let ca = arg(&pki.ca);
    for sni in ["wrong.example", "10.9.8.7"] {
        let out = load(&[
            &url,
            "--tls-ca",
            &ca,
            "--tls-sni",
            sni,
            "-c",
            "2",
            "-d",
            "30",
            "--json",
        ]);
        assert_tls_failure(&out, 2, "name mismatch");
        assert!(out.stdout.contains(sni), "{sni}: {}", out.stdout);
    }
    // The names it does hold pass: a DNS name, and IPv4 and IPv6 addresses.
    for sni in ["localhost", "127.0.0.1", "::1"] {
        let out = load(&[
            &url,
            "--tls-ca",
            &ca,
            "--tls-sni",
            sni,
            "-c",
            "1",
            "-d",
            "0.2",
        ]);
        assert_eq!(out.code(), 0, "{sni}: {out:#?}");
    }
    server.stop();
}

#[test]
fn an_expired_certificate_is_refused_as_expired() {
    let pki = Pki::new();
    let (cert, key) = pki.expired();
    let server = start_tls(&arg(&cert), &arg(&key), &[]);
    let url = format!("tls://{}", server.tls[0]);
    let out = load(&[
        &url,
        "--tls-ca",
        &arg(&pki.ca),
        "-c",
        "2",
        "-d",
        "30",
        "--json",
    ]);
    assert_tls_failure(&out, 2, "expired (not valid after 2001-01-01");
    server.stop();
}

#[test]
fn a_plain_tcp_server_on_a_tls_url_is_a_tls_error_saying_it_does_not_speak_tls() {
    let server = start_server(&["--tcp", "127.0.0.1:0"]);
    let url = format!("tls://{}", server.tcp_addr());
    let out = load(&[&url, "--tls-insecure", "-c", "2", "-d", "30", "--json"]);
    assert_tls_failure(&out, 2, "does not speak TLS");
    server.stop();
}

#[test]
fn a_handshake_that_never_finishes_is_a_tls_error_within_the_connect_timeout() {
    // The kernel completes the TCP handshakes for the backlog; nobody
    // ever answers the ClientHello.
    let silent = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("tls://{}", silent.local_addr().expect("addr"));
    let out = load(&[
        &url,
        "--tls-insecure",
        "-c",
        "3",
        "-d",
        "30",
        "--connect-timeout",
        "1",
        "--json",
    ]);
    assert_tls_failure(&out, 3, "not done within the connect timeout");
    assert!(
        out.elapsed >= Duration::from_millis(900),
        "{:?}",
        out.elapsed
    );
}

#[test]
fn tls_flags_that_clash_or_do_not_load_are_usage_errors() {
    let pki = Pki::new();
    let missing = pki.dir.join("missing.pem");
    let missing = arg(&missing);
    let ca = arg(&pki.ca);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["tcp://127.0.0.1:9", "--tls-ca", &ca],
            "tls:// addresses",
        ),
        (
            vec!["udp://127.0.0.1:9", "--tls-insecure"],
            "tls:// addresses",
        ),
        (vec!["tls://127.0.0.1:9", "--tls-ca", &missing], &missing),
        (
            vec!["tls://127.0.0.1:9", "--tls-ca", &ca, "--tls-insecure"],
            "cannot be used with",
        ),
        (
            vec![
                "tls://127.0.0.1:9",
                "--tls-insecure",
                "--tls-sni",
                "not a name!",
            ],
            "not a DNS name or an IP address",
        ),
        (
            vec!["tcp://127.0.0.1:9", "--proxy-protocol", "v3"],
            "v1 or v2",
        ),
        (
            vec!["udp://127.0.0.1:9", "--proxy-protocol", "v1"],
            "UDP has none",
        ),
    ];
    for (args, needle) in cases {
        let out = load(&args);
        assert_eq!(out.code(), 2, "{args:?}: {out:#?}");
        assert!(out.stderr.contains(needle), "{args:?}: {}", out.stderr);
        assert!(out.stdout.is_empty(), "{args:?}: {}", out.stdout);
    }
    let client = run_binary(
        &["client", "tcp://127.0.0.1:9", "--tls-insecure"],
        RUN_LIMIT,
    );
    assert_eq!(client.code(), 2, "{client:#?}");
    assert!(
        client.stderr.contains("tls:// addresses"),
        "{}",
        client.stderr
    );
}

#[test]
fn the_line_client_speaks_tls_and_refuses_a_certificate_it_does_not_trust() {
    let pki = Pki::new();
    let server = serve(&pki, &["--mode", "upper"]);
    let port = server.tls[0].port();
    // By name: `localhost` is both the address and the name checked.
    let url = format!("tls://localhost:{port}");
    let ca = arg(&pki.ca);
    let client = |args: &[&str], input: Vec<u8>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_echo-reactor"));
        cmd.arg("client").args(args);
        run_command(cmd, input, RUN_LIMIT)
    };
    let out = client(&[&url, "--tls-ca", &ca], b"hello boy\nover tls\n".to_vec());
    assert_eq!(out.code(), 0, "{out:#?}");
    assert_eq!(out.stdout, "HELLO BOY\nOVER TLS\n");
    // A long line streams back while it streams out, records and all.
    let long = "x".repeat(1 << 20);
    let out = client(&[&url, "--tls-ca", &ca], format!("{long}\n").into_bytes());
    assert_eq!(out.code(), 0, "{}", out.stderr);
    assert_eq!(out.stdout.trim_end().len(), 1 << 20);
    assert!(out.stdout.trim_end().bytes().all(|b| b == b'X'));
    let refused = client(&[&url, "--tls-ca", &arg(&pki.stranger())], b"hi\n".to_vec());
    assert_eq!(refused.code(), 1, "{refused:#?}");
    assert!(
        refused.stderr.contains("unknown issuer"),
        "{}",
        refused.stderr
    );
    assert!(refused.stdout.is_empty(), "{}", refused.stdout);
    let mismatch = client(
        &[&url, "--tls-ca", &ca, "--tls-sni", "wrong.example"],
        b"hi\n".to_vec(),
    );
    assert_eq!(mismatch.code(), 1, "{mismatch:#?}");
    assert!(
        mismatch.stderr.contains("name mismatch"),
        "{}",
        mismatch.stderr
    );
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "tls handshakes"), Some(2), "{stderr}");
}

#[test]
fn the_readme_openssl_certificates_serve_and_load_as_written() {
    if Command::new("openssl").arg("version").output().is_err() {
        println!("skipped: no openssl (.ci/run installs it)");
        return;
    }
    let pki = Pki::new(); // only for its directory
    let readme =
        std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/README.md")).expect("README");
    let marker = "<!-- recipe: tls certificates -->";
    let at = readme.find(marker).expect("the recipe's marker");
    let start = readme[at..].find("```sh\n").expect("a sh block") + at + "```sh\n".len();
    let end = readme[start..].find("\n```").expect("its end") + start;
    let mut sh = Command::new("sh");
    sh.args(["-ec", &readme[start..end]]).current_dir(&pki.dir);
    let made = run_to_end(sh, RUN_LIMIT);
    assert_eq!(made.code(), 0, "{made:#?}");
    let file = |name: &str| arg(&pki.dir.join(name));
    let server = start_tls(&file("cert.pem"), &file("key.pem"), &[]);
    let url = format!("tls://{}", server.tls[0]);
    for sni in ["localhost", "127.0.0.1", "::1"] {
        let out = load(&[
            &url,
            "--tls-ca",
            &file("ca.pem"),
            "--tls-sni",
            sni,
            "-c",
            "2",
            "-d",
            "0.2",
        ]);
        assert_eq!(out.code(), 0, "{sni}: {out:#?}");
    }
    server.stop();
}

#[test]
fn a_certificate_chain_over_64_kib_is_a_tls_error_saying_so_not_a_server_without_tls() {
    let pki = Pki::new();
    // The leaf, then the CA again and again: rustls's server sends it all
    // in one Certificate message; its client takes at most 64 KiB.
    let leaf = std::fs::read_to_string(&pki.cert).expect("cert");
    let ca = std::fs::read_to_string(&pki.ca).expect("ca");
    let mut chain = leaf;
    while chain.len() < 100 * 1024 {
        chain.push_str(&ca);
    }
    let big = pki.dir.join("big-chain.pem");
    std::fs::write(&big, chain).expect("write");
    // A rustls server of the test's own: what is under test is how the
    // client tells the refusal, not how a server ends such a handshake.
    let config = pki.server_config_with_chain(&big, rustls::DEFAULT_VERSIONS);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("tls://{}", listener.local_addr().expect("addr"));
    std::thread::spawn(move || {
        for mut sock in listener.incoming().flatten() {
            let _ = sock.set_read_timeout(Some(IO_TIMEOUT));
            if let Ok(mut conn) = rustls::ServerConnection::new(Arc::clone(&config)) {
                while conn.is_handshaking() && conn.complete_io(&mut sock).is_ok() {}
            }
        }
    });
    let out = load(&[
        &url,
        "--tls-ca",
        &arg(&pki.ca),
        "-c",
        "1",
        "-d",
        "30",
        "--json",
    ]);
    assert_tls_failure(&out, 1, "larger than rustls accepts");
    assert!(!out.stderr.contains("does not speak TLS"), "{}", out.stderr);
}

/// How a hostile TLS server ends each connection once it has read the
/// client's first 64-byte message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// TLS 1.2, whose server speaks last in the handshake: its Finished
    /// and a `close_notify` in one segment, and no FIN. The client takes
    /// both in with its handshake, before it sends a message.
    CloseNotifyWithItsFinished,
    /// The echo and a `close_notify` in one segment, and no FIN: the
    /// socket stays open.
    CloseNotifyWithoutFin,
    /// Half the echo's record and the FIN in one segment (corked).
    HalfRecordThenFin,
    /// Half of its first flight (ServerHello onwards) and the FIN in one
    /// segment (corked): the handshake cannot finish.
    HalfHandshakeThenFin,
    /// Half the echo's record, then a reset.
    HalfRecordThenReset,
}

/// A TLS server (rustls, blocking, one connection after another) that
/// ends every connection as `ending` says; its address. It lives until
/// the test process ends.
fn hostile_tls_server(pki: &Pki, ending: Ending) -> SocketAddr {
    let versions: &[&'static rustls::SupportedProtocolVersion] = match ending {
        Ending::CloseNotifyWithItsFinished => &[&rustls::version::TLS12],
        _ => rustls::DEFAULT_VERSIONS,
    };
    let config = pki.server_config(versions);
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    std::thread::spawn(move || {
        // Kept open, so that no close of ours adds a FIN or a reset.
        let mut kept = Vec::new();
        for sock in listener.incoming().flatten() {
            kept.extend(end_one(sock, &config, ending));
        }
    });
    addr
}

/// Handshake, the first message, then the ending; the socket if it is to
/// stay open.
fn end_one(
    mut sock: TcpStream,
    config: &Arc<rustls::ServerConfig>,
    ending: Ending,
) -> Option<TcpStream> {
    sock.set_read_timeout(Some(IO_TIMEOUT)).ok()?;
    sock.set_nodelay(true).ok()?;
    let mut conn = rustls::ServerConnection::new(Arc::clone(config)).ok()?;
    if ending == Ending::CloseNotifyWithItsFinished {
        while conn.is_handshaking() {
            conn.read_tls(&mut sock).ok()?;
            conn.process_new_packets().ok()?;
            if !conn.is_handshaking() {
                conn.send_close_notify();
            }
            let mut out = Vec::new();
            while conn.wants_write() {
                conn.write_tls(&mut out).ok()?;
            }
            sock.write_all(&out).ok()?;
        }
        return Some(sock);
    }
    if ending == Ending::HalfHandshakeThenFin {
        while !conn.wants_write() {
            conn.read_tls(&mut sock).ok()?;
            conn.process_new_packets().ok()?;
        }
        let mut flight = Vec::new();
        while conn.wants_write() {
            conn.write_tls(&mut flight).ok()?;
        }
        socket2::SockRef::from(&sock).set_cork(true).ok()?;
        sock.write_all(&flight[..flight.len() / 2]).ok()?;
        sock.shutdown(std::net::Shutdown::Write).ok()?;
        return Some(sock);
    }
    let mut msg = [0u8; 64];
    rustls::Stream::new(&mut conn, &mut sock)
        .read_exact(&mut msg)
        .ok()?;
    conn.writer().write_all(&msg).ok()?;
    if ending == Ending::CloseNotifyWithoutFin {
        conn.send_close_notify();
    }
    let mut records = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut records).ok()?;
    }
    let half = &records[..records.len() / 2];
    match ending {
        Ending::CloseNotifyWithItsFinished | Ending::CloseNotifyWithoutFin => {
            sock.write_all(&records).ok()?;
            Some(sock)
        }
        Ending::HalfRecordThenFin | Ending::HalfHandshakeThenFin => {
            // Corked, the half record and the FIN leave as one segment:
            // the client sees both at one edge.
            socket2::SockRef::from(&sock).set_cork(true).ok()?;
            sock.write_all(half).ok()?;
            sock.shutdown(std::net::Shutdown::Write).ok()?;
            Some(sock)
        }
        Ending::HalfRecordThenReset => {
            sock.write_all(half).ok()?;
            socket2::SockRef::from(&sock)
                .set_linger(Some(Duration::ZERO))
                .ok()?;
            None // dropped: closed with linger 0, a reset
        }
    }
}

/// `load` against a hostile server: one connection, 64-byte messages, a
/// short window.
fn load_hostile(pki: &Pki, ending: Ending, extra: &[&str]) -> serde_json::Value {
    let url = format!("tls://{}", hostile_tls_server(pki, ending));
    let ca = arg(&pki.ca);
    let mut args = vec![
        url.as_str(),
        "--tls-ca",
        &ca,
        "-c",
        "1",
        "-d",
        "0.5",
        "--size",
        "64",
        "--json",
    ];
    args.extend_from_slice(extra);
    let out = load(&args);
    assert_eq!(out.code(), 1, "the server ended the connection: {out:#?}");
    assert!(!out.stderr.contains("panicked"), "{}", out.stderr);
    only_json(&out)
}

#[test]
fn a_close_notify_without_a_fin_is_the_servers_end_counted_closed_and_replaced() {
    let pki = Pki::new();
    let j = load_hostile(&pki, Ending::CloseNotifyWithoutFin, &[]);
    assert_eq!(j["errors"]["closed"], 1, "{j}");
    assert_eq!(j["errors"]["timeout"], 0, "{j}");
    assert_eq!(j["errors"]["tls"], 0, "{j}");
    // Taken in with the handshake: no edge announces it, the client
    // reads it as it comes up.
    let j = load_hostile(&pki, Ending::CloseNotifyWithItsFinished, &[]);
    assert_eq!(j["errors"]["closed"], 1, "{j}");
    assert_eq!(j["errors"]["timeout"], 0, "{j}");
    assert_eq!(j["tls"]["version"], "TLSv1.2", "{j}");
    let j = load_hostile(&pki, Ending::CloseNotifyWithoutFin, &["--reconnect"]);
    assert_eq!(j["errors"]["timeout"], 0, "{j}");
    let closed = j["errors"]["closed"].as_u64().expect("closed");
    assert!(closed >= 2, "each close_notify ends a connection: {j}");
    assert!(
        j["reconnects"].as_u64().expect("reconnects") >= closed - 1,
        "each one replaced: {j}"
    );
}

#[test]
fn half_a_record_then_a_fin_is_closed_and_then_a_reset_is_reset_not_timeout() {
    let pki = Pki::new();
    let j = load_hostile(&pki, Ending::HalfRecordThenFin, &[]);
    assert_eq!(j["errors"]["closed"], 1, "{j}");
    assert_eq!(j["errors"]["timeout"], 0, "{j}");
    let j = load_hostile(&pki, Ending::HalfRecordThenReset, &[]);
    assert_eq!(j["errors"]["timeout"], 0, "{j}");
    assert_eq!(j["errors"]["closed"], 0, "{j}");
    assert_eq!(j["errors"]["reset"], 1, "{j}");
}

#[test]
fn half_a_handshake_flight_then_a_fin_fails_the_handshake_as_closed_at_once() {
    let pki = Pki::new();
    let url = format!(
        "tls://{}",
        hostile_tls_server(&pki, Ending::HalfHandshakeThenFin)
    );
    let ca = arg(&pki.ca);
    let out = load(&[
        &url,
        "--tls-ca",
        &ca,
        "-c",
        "1",
        "-d",
        "30",
        "--connect-timeout",
        "8",
        "--json",
    ]);
    // Not the connect timeout's "not done within": the FIN is seen as it
    // comes, behind the half flight at the same edge.
    assert_tls_failure(&out, 1, "closed the connection during the TLS handshake");
}
