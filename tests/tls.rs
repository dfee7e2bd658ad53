//! `serve --tls`, from the outside: the echo over TLS is the echo over TCP
//! (modes, partial reads and writes, half-close by `close_notify`, the
//! drain), checked with rustls here and with two other TLS stacks
//! (Python's `ssl`, `openssl s_client`); a certificate that will not load
//! is a usage error naming the file; plaintext, garbage and stalled
//! handshakes are closed, counted and cost nothing further.
//!
//! Certificates are made per test (`tests/common/tls.rs`); nothing is
//! checked in.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use common::tls::{arg, tls_roundtrip, Connect, Pki, TlsClient};
use common::*;

#[test]
fn only_tls_is_served_when_only_tls_is_named() {
    let pki = Pki::new();
    let server = start_tls_server(&pki, &[]);
    assert_eq!(server.tls.len(), 1);
    assert!(server.tcp.is_empty() && server.udp.is_empty());
    let mut s = pki.connect(server.tls[0]);
    assert_eq!(tls_roundtrip(&mut s, b"hello boy"), b"hello boy");
    drop(s);
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "tls handshakes"), Some(1), "{stderr}");
}

#[test]
fn upper_over_tls_one_mib_in_16_kib_round_trips_on_twenty_interleaved_connections() {
    const CONNS: usize = 20;
    const CHUNK: usize = 16 * 1024;
    const TOTAL: usize = 1 << 20;
    let pki = Pki::new();
    let server = start_tls_server(&pki, &["--mode", "upper"]);
    let addr = server.tls[0];
    let mut clients: Vec<TlsClient> = (0..CONNS).map(|_| pki.connect(addr)).collect();
    let data: Vec<Vec<u8>> = (0..CONNS).map(|i| pattern(100 + i as u64, TOTAL)).collect();
    // Round-robin: every connection one chunk at a time, interleaved.
    for off in (0..TOTAL).step_by(CHUNK) {
        for (c, d) in clients.iter_mut().zip(&data) {
            let chunk = &d[off..off + CHUNK];
            assert!(tls_roundtrip(c, chunk) == upper(chunk), "chunk at {off}");
        }
    }
    // Half-close with close_notify: the server answers with its own, then FIN.
    for mut c in clients {
        c.close_notify();
        let mut rest = Vec::new();
        assert!(
            c.read_to_end(&mut rest).is_ok(),
            "a clean end after close_notify"
        );
        assert!(rest.is_empty());
    }
    let stderr = server.stop();
    assert_eq!(
        final_stat(&stderr, "tls handshakes"),
        Some(CONNS as u64),
        "{stderr}"
    );
    assert_eq!(
        final_stat(&stderr, "in"),
        Some((CONNS * TOTAL) as u64),
        "{stderr}"
    );
    assert_eq!(
        final_stat(&stderr, "out"),
        Some((CONNS * TOTAL) as u64),
        "{stderr}"
    );
}

#[test]
fn a_client_that_half_closes_gets_its_whole_echo_even_when_it_reads_late() {
    // 4 MiB sent before a single byte is read: the server's output backs
    // up (TLS records waiting for room) and reading pauses; after the
    // client's close_notify, everything still arrives, then the server's.
    const TOTAL: usize = 4 << 20;
    let pki = Pki::new();
    let server = start_tls_server(&pki, &[]);
    let s = pki.connect(server.tls[0]);
    let data = pattern(7, TOTAL);
    let (mut conn, sock) = (s.conn, s.sock);
    // All the records made up front (stream and close_notify), then sent
    // from a thread while this one reads nothing for half a second.
    conn.set_buffer_limit(None);
    conn.writer().write_all(&data).expect("plaintext");
    conn.send_close_notify();
    let mut records = Vec::new();
    while conn.wants_write() {
        conn.write_tls(&mut records).expect("records");
    }
    let mut w = sock.try_clone().expect("clone");
    let writer = thread::spawn(move || w.write_all(&records));
    thread::sleep(Duration::from_millis(500));
    let mut sock = sock;
    let mut got = Vec::with_capacity(TOTAL);
    let mut buf = vec![0u8; 64 * 1024];
    let clean = loop {
        match conn.reader().read(&mut buf) {
            Ok(0) => break true,
            Ok(n) => {
                got.extend_from_slice(&buf[..n]);
                continue;
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(_) => break false,
        }
        match conn.read_tls(&mut sock) {
            Ok(0) => break false,
            Ok(_) => {
                conn.process_new_packets().expect("records");
            }
            Err(_) => break false,
        }
    };
    writer.join().expect("writer").expect("every record sent");
    assert_eq!(got.len(), TOTAL, "echo length");
    assert!(got == data, "the echo differs");
    assert!(clean, "the server's close_notify ended it");
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "cut"), Some(0), "{stderr}");
}

#[test]
fn a_certificate_or_key_that_will_not_load_is_a_usage_error_naming_the_file() {
    let pki = Pki::new();
    let other = Pki::new();
    let missing = pki.dir.join("nope.pem");
    let not_pem = pki.dir.join("garbage.pem");
    std::fs::write(&not_pem, "not a certificate\n").expect("write");
    // PEM whose DER is no certificate: rustls's InvalidCertificate.
    let bad_der = pki.dir.join("bad-der.pem");
    std::fs::write(
        &bad_der,
        "-----BEGIN CERTIFICATE-----\nAAAAAAAA\n-----END CERTIFICATE-----\n",
    )
    .expect("write");
    // A chain cut short: PEM's MissingSectionEnd.
    let cut = pki.dir.join("cut.pem");
    let whole = std::fs::read_to_string(&pki.cert).expect("cert");
    let end = whole.find("-----END").expect("an end line");
    std::fs::write(&cut, &whole[..end]).expect("write");
    // The marker is what the loader sees: rustls skips the section as an
    // unknown kind, so its body need not be a real encrypted key.
    let encrypted = pki.dir.join("encrypted.pem");
    std::fs::write(
        &encrypted,
        "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAAAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
    )
    .expect("write");
    let serve_with = |cert: &std::path::Path, key: &std::path::Path| -> Vec<String> {
        vec![
            "--tls".into(),
            "127.0.0.1:0".into(),
            "--tls-cert".into(),
            arg(cert),
            "--tls-key".into(),
            arg(key),
        ]
    };
    let cases: Vec<(Vec<String>, String, &str)> = vec![
        (
            vec!["--tls".into(), "127.0.0.1:0".into()],
            "--tls-cert".into(),
            "no cert or key",
        ),
        (
            vec![
                "--tls-cert".into(),
                arg(&pki.cert),
                "--tls-key".into(),
                arg(&pki.key),
            ],
            "no --tls".into(),
            "cert without --tls",
        ),
        (
            vec![
                "--tls".into(),
                "127.0.0.1:0".into(),
                "--tls-cert".into(),
                arg(&missing),
                "--tls-key".into(),
                arg(&pki.key),
            ],
            arg(&missing),
            "missing cert",
        ),
        (
            vec![
                "--tls".into(),
                "127.0.0.1:0".into(),
                "--tls-cert".into(),
                arg(&not_pem),
                "--tls-key".into(),
                arg(&pki.key),
            ],
            arg(&not_pem),
            "cert not PEM",
        ),
        (
            vec![
                "--tls".into(),
                "127.0.0.1:0".into(),
                "--tls-cert".into(),
                arg(&pki.cert),
                "--tls-key".into(),
                arg(&other.key),
            ],
            arg(&other.key),
            "key of another certificate",
        ),
        (
            serve_with(&bad_der, &pki.key),
            format!("{}: not a usable certificate", arg(&bad_der)),
            "a certificate rustls cannot parse blames the certificate file",
        ),
        (
            serve_with(&cut, &pki.key),
            format!(
                "{}: not a PEM certificate: a section has no end line ('-----END CERTIFICATE-----' missing)",
                arg(&cut)
            ),
            "a cut PEM is told in words, not bytes",
        ),
        (
            serve_with(&pki.cert, &encrypted),
            format!(
                "{}: encrypted private key: decrypt it first (openssl pkey -in {} -out plain.pem)",
                arg(&encrypted),
                arg(&encrypted)
            ),
            "an encrypted key says how to decrypt it",
        ),
    ];
    for (extra, needle, what) in cases {
        let mut argv = vec!["serve"];
        argv.extend(extra.iter().map(String::as_str));
        let run = run_binary(&argv, IO_TIMEOUT);
        assert_eq!(run.code(), 2, "{what}: {run:#?}");
        assert!(run.stderr.contains(&needle), "{what}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{what}: no listening line");
        assert!(!run.stderr.contains("panicked"), "{what}: {}", run.stderr);
    }
}

#[test]
fn plaintext_and_garbage_on_the_tls_port_are_refused_and_counted() {
    let pki = Pki::new();
    let server = start_tls_server(&pki, &[]);
    let addr = server.tls[0];
    for junk in [
        &b"GET / HTTP/1.1\r\nHost: x\r\n\r\n"[..],
        &b"hello boy\n"[..],
        &[0x16, 0x03, 0x01, 0x00, 0x05, 0xde, 0xad, 0xbe, 0xef, 0x00][..],
    ] {
        let mut s = TcpStream::connect(addr).expect("connect");
        s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
        let _ = s.write_all(junk);
        // An alert or nothing, then the end; never our echo.
        let mut back = Vec::new();
        let _ = s.read_to_end(&mut back);
        assert!(
            !back
                .windows(junk.len().min(5))
                .any(|w| w == &junk[..junk.len().min(5)]),
            "the junk came back: {back:?}"
        );
    }
    // A real client is still served.
    let mut s = pki.connect(addr);
    assert_eq!(tls_roundtrip(&mut s, b"still here"), b"still here");
    drop(s);
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "tls not-tls"), Some(3), "{stderr}");
    assert_eq!(final_stat(&stderr, "tls handshakes"), Some(1), "{stderr}");
}

#[test]
fn two_hundred_stalled_handshakes_close_after_the_timeout_and_cost_nothing_meanwhile() {
    let pki = Pki::new();
    let server = start_tls_server(&pki, &["--tls-handshake-timeout", "1"]);
    let addr = server.tls[0];
    // Five bytes of a ClientHello's record header, then silence.
    let stalled: Vec<TcpStream> = (0..200)
        .map(|_| {
            let mut s = TcpStream::connect(addr).expect("connect");
            s.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
                .expect("five bytes");
            s
        })
        .collect();
    // Beside them, a real client's round trip stays fast.
    let t = Instant::now();
    let mut c = pki.connect(addr);
    assert_eq!(tls_roundtrip(&mut c, b"ping"), b"ping");
    assert!(t.elapsed() < Duration::from_secs(1), "{:?}", t.elapsed());
    // No CPU burned while they wait.
    let before = cpu_ticks(server.pid());
    thread::sleep(Duration::from_millis(500));
    let burned = cpu_ticks(server.pid()) - before;
    assert!(
        burned <= 10,
        "{burned} ticks of CPU in 0.5 s with 200 stalled handshakes"
    );
    // All closed after the timeout (and its sweep), counted as such.
    for (i, mut s) in stalled.into_iter().enumerate() {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let end = loop {
            match s.read(&mut buf) {
                Ok(0) => break Ok(()),
                Ok(_) => continue, // an alert, perhaps
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break Ok(()),
                Err(e) => break Err(e),
            }
        };
        assert!(end.is_ok(), "stalled handshake {i} still open: {end:?}");
    }
    drop(c);
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "tls timeout"), Some(200), "{stderr}");
}

#[test]
fn pythons_ssl_speaks_to_the_tls_listener() {
    let pki = Pki::new();
    let server = start_tls_server(&pki, &["--mode", "upper"]);
    let addr = server.tls[0];
    let script = format!(
        r#"
import socket, ssl, sys
ctx = ssl.create_default_context(cafile={ca:?})
with socket.create_connection(("127.0.0.1", {port}), timeout=10) as raw:
    with ctx.wrap_socket(raw, server_hostname="localhost") as s:
        sent = bytes(range(256)) * 4096
        got = b""
        for i in range(0, len(sent), 16384):
            s.sendall(sent[i:i+16384])
            want = len(sent[:i+16384])
            while len(got) < want:
                chunk = s.recv(65536)
                if not chunk: break
                got += chunk
        assert got == sent.upper(), "echo differs"
        print(s.version(), len(got))
"#,
        ca = arg(&pki.ca),
        port = addr.port()
    );
    let out = Command::new("python3")
        .args(["-c", &script])
        .stdin(Stdio::null())
        .output();
    let Ok(out) = out else {
        eprintln!("skipped: no python3");
        return;
    };
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("TLSv1.3 1048576"), "{stdout}");
    server.stop();
}

#[test]
fn openssl_s_client_speaks_tls_1_2_and_1_3_to_the_tls_listener() {
    let pki = Pki::new();
    let server = start_tls_server(&pki, &["--mode", "upper"]);
    let addr = server.tls[0];
    for version in ["-tls1_2", "-tls1_3"] {
        let child = Command::new("openssl")
            .args([
                "s_client",
                "-connect",
                &addr.to_string(),
                "-servername",
                "localhost",
                "-CAfile",
                &arg(&pki.ca),
                "-verify_return_error",
                "-quiet",
                version,
            ])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn();
        let Ok(mut child) = child else {
            eprintln!("skipped: no openssl (.ci/run installs it)");
            return;
        };
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"hello from openssl\n").expect("write");
        let mut stdout = child.stdout.take().expect("stdout");
        let mut line = vec![0u8; b"HELLO FROM OPENSSL\n".len()];
        let read = thread::spawn(move || stdout.read_exact(&mut line).map(|_| line));
        let got = read.join().expect("reader");
        drop(stdin);
        let _ = child.kill();
        let _ = child.wait();
        assert_eq!(
            got.ok().as_deref(),
            Some(&b"HELLO FROM OPENSSL\n"[..]),
            "{version}"
        );
    }
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "tls handshakes"), Some(2), "{stderr}");
}

#[test]
fn a_client_that_ends_inside_its_handshake_is_closed_at_once_not_at_the_timeout() {
    let pki = Pki::new();
    // A deadline far beyond the read timeout below: a server that waits
    // for it fails the test.
    let server = start_tls_server(&pki, &["--tls-handshake-timeout", "60"]);
    let mut s = TcpStream::connect(server.tls[0]).expect("connect");
    s.set_read_timeout(Some(Duration::from_secs(5)))
        .expect("timeout");
    // A real ClientHello, and the server's answer begins: it waits for
    // our next flight now.
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut client = rustls::ClientConnection::new(pki.client_config(), name).expect("session");
    let mut hello = Vec::new();
    while client.wants_write() {
        client.write_tls(&mut hello).expect("ClientHello");
    }
    s.write_all(&hello).expect("write");
    let mut answer = [0u8; 5];
    s.read_exact(&mut answer)
        .expect("the server's first flight");
    // The start of a record and the FIN in one segment (corked): the
    // server sees both at one edge, the FIN behind a short read.
    socket2::SockRef::from(&s).set_cork(true).expect("cork");
    s.write_all(&[0x14, 0x03]).expect("write");
    s.shutdown(std::net::Shutdown::Write).expect("FIN");
    let mut back = Vec::new();
    match s.read_to_end(&mut back) {
        Ok(_) => {}
        // Closed with our bytes unread: a reset, which is a close too.
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("not closed within 5 s: {e}"),
    }
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "tls closed"), Some(1), "{stderr}");
    assert_eq!(final_stat(&stderr, "tls timeout"), Some(0), "{stderr}");
}
