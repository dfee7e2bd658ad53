//! The PROXY protocol from the outside: `load --proxy-protocol v1|v2`
//! against `serve --proxy-protocol` (plain and TLS), where the server
//! shows each connection's own address as the client; against a server
//! without the protocol, where the echoed header fails the run as a
//! mismatch; and the server's gate, black-box: every malformed header
//! kind is closed unanswered and counted, and a header split over many
//! small writes is assembled.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::tls::{arg, Pki};
use common::*;

/// The v2 signature: the first 12 bytes of every binary header.
const V2_SIGNATURE: &[u8; 12] = b"\r\n\r\n\0\r\nQUIT\n";

/// A v2 PROXY header (`command` 1: PROXY) over TCP/IPv4 from `src` to
/// 198.51.100.1:7007, with its version and command byte as given.
fn v2_header(version_command: u8, src: [u8; 4], src_port: u16) -> Vec<u8> {
    let mut h = V2_SIGNATURE.to_vec();
    h.push(version_command);
    h.push(0x11); // TCP over IPv4
    h.extend_from_slice(&12u16.to_be_bytes());
    h.extend_from_slice(&src);
    h.extend_from_slice(&[198, 51, 100, 1]);
    h.extend_from_slice(&src_port.to_be_bytes());
    h.extend_from_slice(&7007u16.to_be_bytes());
    h
}

fn load(args: &[&str]) -> Finished {
    let mut argv = vec!["load"];
    argv.extend_from_slice(args);
    run_binary(&argv, Duration::from_secs(30))
}

/// The server's `closed` lines, each naming the client it showed.
fn closed_lines(stderr: &str) -> Vec<&str> {
    stderr
        .lines()
        .filter(|l| l.contains(": closed: "))
        .collect()
}

#[test]
fn load_sends_v1_and_v2_headers_that_the_server_takes_as_the_client() {
    let server = start_server_logged(
        &["--tcp", "127.0.0.1:0", "--proxy-protocol"],
        "echo_reactor=debug",
    );
    let url = format!("tcp://{}", server.tcp_addr());
    for (version, source) in [("v1", "127.0.0.7"), ("v2", "127.0.0.8")] {
        let out = load(&[
            &url,
            "--proxy-protocol",
            version,
            "--source",
            source,
            "-c",
            "3",
            "-d",
            "0.3",
        ]);
        assert_eq!(out.code(), 0, "{version}: {out:#?}");
        assert!(out.stdout.contains("mismatch 0"), "{}", out.stdout);
    }
    assert!(
        wait_until(IO_TIMEOUT, || closed_lines(&server.stderr()).len() >= 6),
        "{}",
        server.stderr()
    );
    let stderr = server.stop();
    let closed = closed_lines(&stderr);
    for source in ["127.0.0.7", "127.0.0.8"] {
        let named = closed
            .iter()
            .filter(|l| l.contains(&format!(" {source}:")))
            .count();
        assert_eq!(named, 3, "{source} in:\n{}", closed.join("\n"));
    }
    assert_eq!(final_stat(&stderr, "proxy headers"), Some(6), "{stderr}");
    assert_eq!(final_stat(&stderr, "proxy refused"), Some(0), "{stderr}");
}

#[test]
fn over_tls_the_header_goes_before_the_handshake() {
    let pki = Pki::new();
    let mut argv: Vec<String> = vec!["serve".into()];
    argv.extend(pki.serve_args());
    argv.push("--proxy-protocol".into());
    let server = start_binary(&argv, None);
    let url = format!("tls://{}", server.tls[0]);
    let ca = arg(&pki.ca);
    for version in ["v1", "v2"] {
        let out = load(&[
            &url,
            "--tls-ca",
            &ca,
            "--proxy-protocol",
            version,
            "-c",
            "2",
            "-d",
            "0.3",
        ]);
        assert_eq!(out.code(), 0, "{version}: {out:#?}");
    }
    // Without the header, the server refuses it, and the generator says
    // the handshake failed.
    let out = load(&[&url, "--tls-ca", &ca, "-c", "1", "-d", "0.3"]);
    assert_eq!(out.code(), 1, "{out:#?}");
    assert!(out.stderr.contains("tls conn 0"), "{}", out.stderr);
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "tls handshakes"), Some(4), "{stderr}");
    assert_eq!(final_stat(&stderr, "proxy headers"), Some(4), "{stderr}");
    assert_eq!(final_stat(&stderr, "proxy refused"), Some(1), "{stderr}");
}

#[test]
fn a_server_without_the_protocol_echoes_the_header_and_the_run_fails_as_a_mismatch() {
    let server = start_server(&["--tcp", "127.0.0.1:0"]);
    let url = format!("tcp://{}", server.tcp_addr());
    for version in ["v1", "v2"] {
        let out = load(&[
            &url,
            "--proxy-protocol",
            version,
            "-c",
            "2",
            "-d",
            "0.5",
            "--json",
        ]);
        assert_eq!(out.code(), 1, "{version}: {out:#?}");
        let j: serde_json::Value =
            serde_json::from_str(out.stdout.trim()).expect("one JSON object");
        assert_eq!(j["ok"], false, "{j}");
        assert!(j["errors"]["mismatch"].as_u64() >= Some(1), "{j}");
        let error = j["error"].as_str().expect("why");
        assert!(
            error.contains("the reply began with our PROXY header"),
            "{error}"
        );
    }
    server.stop();
}

/// Connects and sends `bytes`; returns what came back before the server
/// closed (nothing, for a refused header).
fn send_and_read_to_end(addr: std::net::SocketAddr, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let _ = s.write_all(bytes);
    let mut back = Vec::new();
    match s.read_to_end(&mut back) {
        Ok(_) => {}
        // Closed with our bytes unread: a reset, which is also no answer.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("no end within {IO_TIMEOUT:?}: {e}"),
    }
    back
}

#[test]
fn malformed_headers_of_every_kind_are_closed_unanswered_and_counted() {
    let server = start_server(&[
        "--tcp",
        "127.0.0.1:0",
        "--proxy-protocol",
        "--proxy-timeout",
        "500ms",
    ]);
    let addr = server.tcp_addr();
    let mut v1_long = b"PROXY TCP4 ".to_vec();
    v1_long.extend(std::iter::repeat(b'1').take(120));
    v1_long.extend_from_slice(b"\r\nhello");
    let mut bad_version = v2_header(0x31, [192, 0, 2, 7], 40000);
    bad_version.extend_from_slice(b"hello");
    let mut bad_command = v2_header(0x2F, [192, 0, 2, 7], 40000);
    bad_command.extend_from_slice(b"hello");
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("no header", b"hello world\n".to_vec()),
        (
            "garbage",
            vec![0xde, 0xad, 0xbe, 0xef, 0x00, 0xff, 0x13, 0x37],
        ),
        ("v1 longer than 107 bytes", v1_long),
        ("unknown v2 version", bad_version),
        ("unknown v2 command", bad_command),
    ];
    for (what, bytes) in &cases {
        let back = send_and_read_to_end(addr, bytes);
        assert!(back.is_empty(), "{what}: answered {back:?}");
    }
    // A header never completed: closed after --proxy-timeout, unanswered.
    let started = Instant::now();
    let back = send_and_read_to_end(addr, b"PROXY TCP4 192.0.2.7 198.51.100.1 40000");
    let waited = started.elapsed();
    assert!(back.is_empty(), "incomplete header: answered {back:?}");
    assert!(
        waited >= Duration::from_millis(400) && waited < Duration::from_secs(5),
        "closed after {waited:?}"
    );
    // A good header still passes beside them.
    let mut good = v2_header(0x21, [192, 0, 2, 7], 40000);
    good.extend_from_slice(b"hello");
    let mut s = TcpStream::connect(addr).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    s.write_all(&good).expect("write");
    let mut reply = [0u8; 5];
    s.read_exact(&mut reply).expect("the payload's echo");
    assert_eq!(&reply, b"hello");
    drop(s);
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "proxy refused"), Some(6), "{stderr}");
    assert_eq!(final_stat(&stderr, "proxy headers"), Some(1), "{stderr}");
}

#[test]
fn a_header_split_over_many_small_writes_is_assembled_and_never_echoed() {
    let server = start_server_logged(
        &["--tcp", "127.0.0.1:0", "--proxy-protocol"],
        "echo_reactor=debug",
    );
    let addr = server.tcp_addr();
    let v1 = b"PROXY TCP4 192.0.2.8 198.51.100.1 40001 7007\r\n".to_vec();
    let v2 = v2_header(0x21, [192, 0, 2, 7], 40000);
    for (header, client) in [(v1, "192.0.2.8:40001"), (v2, "192.0.2.7:40000")] {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_nodelay(true).expect("nodelay");
        s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        // A byte per segment, a moment apart, so the server's reads see
        // the header in pieces: the pause shapes what is sent, nothing
        // waits on it.
        for byte in &header {
            s.write_all(std::slice::from_ref(byte)).expect("a byte");
            std::thread::sleep(Duration::from_millis(2));
        }
        s.write_all(b"payload").expect("payload");
        let mut reply = [0u8; 7];
        s.read_exact(&mut reply).expect("the payload's echo");
        assert_eq!(&reply, b"payload", "only the payload comes back");
        s.shutdown(std::net::Shutdown::Write).expect("FIN");
        let mut rest = Vec::new();
        s.read_to_end(&mut rest).expect("the server's FIN");
        assert!(rest.is_empty(), "{rest:?}");
        assert!(
            wait_until(IO_TIMEOUT, || server
                .stderr()
                .lines()
                .any(|l| l.contains(&format!(" {client}: closed: ")))),
            "{client} as the client:\n{}",
            server.stderr()
        );
    }
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "proxy headers"), Some(2), "{stderr}");
    assert_eq!(final_stat(&stderr, "proxy refused"), Some(0), "{stderr}");
}

#[test]
fn a_header_cut_short_by_the_clients_fin_is_refused_at_once_not_at_the_timeout() {
    // A timeout far beyond the read timeout below: a server that waits
    // for it fails the test.
    let server = start_server_logged(
        &[
            "--tcp",
            "127.0.0.1:0",
            "--proxy-protocol",
            "--proxy-timeout",
            "60",
        ],
        "echo_reactor=debug",
    );
    let addr = server.tcp_addr();
    let v2 = v2_header(0x21, [192, 0, 2, 7], 40000);
    let cases: [(&str, &[u8]); 2] = [
        ("part of a v1 header", b"PROXY TCP4 192.0.2.7 198.51"),
        ("part of a v2 header", &v2[..20]),
    ];
    for (what, part) in cases {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        s.write_all(part).expect("write");
        s.shutdown(std::net::Shutdown::Write).expect("FIN");
        let mut back = Vec::new();
        // A FIN back, not a reset: the server read what it was sent.
        match s.read_to_end(&mut back) {
            Ok(_) => assert!(back.is_empty(), "{what}: answered {back:?}"),
            Err(e) => panic!("{what}: no clean close within 5 s: {e}"),
        }
    }
    assert!(
        wait_until(IO_TIMEOUT, || server
            .stderr()
            .matches("refused: closed inside its header")
            .count()
            == 2),
        "the reason is logged:\n{}",
        server.stderr()
    );
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "proxy refused"), Some(2), "{stderr}");
}
