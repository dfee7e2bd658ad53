//! `echo-reactor client` as a script would use it: lines on stdin, replies
//! on stdout, against the real server and against small fake servers that
//! count datagrams, answer short or hang up.

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// Runs `echo-reactor client ARGS` with `input` on stdin.
fn client(args: &[&str], input: &str) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_echo-reactor"))
        .arg("client")
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let mut stdin = child.stdin.take().expect("piped");
    // A client that fails at once (refused port) may exit before it reads
    // its input; the broken pipe that then meets this write is expected, and
    // the exit status and stderr checked by the caller tell the story.
    let _ = stdin.write_all(input.as_bytes());
    drop(stdin);
    child.wait_with_output().expect("client output")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn tcp_upper_session_prints_replies_only_and_exits_0() {
    let server = start_server(&["--mode", "upper"]);
    let addr = server.tcp_addr().to_string();
    let out = client(&[&addr], "hello\n\nworld\n");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "HELLO\nWORLD\n", "no prompt when piped");
}

#[test]
fn udp_upper_session_sends_one_datagram_per_non_empty_line() {
    let server = start_server(&["--mode", "upper"]);
    let addr = server.udp_addr().to_string();
    let out = client(&["--udp", &addr], "hello\n\nworld\n");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "HELLO\nWORLD\n");
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "udp in"), Some(2), "{stderr}");
}

#[test]
fn udp_datagrams_carry_each_line_without_its_ending() {
    // A fake server that records what arrives and answers "ok".
    let fake = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = fake.local_addr().expect("addr").to_string();
    let recorder = std::thread::spawn(move || {
        fake.set_read_timeout(Some(Duration::from_secs(5)))
            .expect("timeout");
        let mut seen = Vec::new();
        let mut buf = [0u8; 2048];
        while seen.len() < 3 {
            let Ok((n, from)) = fake.recv_from(&mut buf) else {
                break;
            };
            seen.push(buf[..n].to_vec());
            let _ = fake.send_to(b"ok", from);
        }
        // Anything more within a moment would be a stray datagram.
        fake.set_read_timeout(Some(Duration::from_millis(300)))
            .expect("timeout");
        if let Ok((n, _)) = fake.recv_from(&mut buf) {
            seen.push(buf[..n].to_vec());
        }
        seen
    });
    let out = client(&["--udp", &addr], "one\n\n\ntwo words\r\n   \nthree\n");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ok\nok\nok\n");
    let seen = recorder.join().expect("recorder");
    assert_eq!(seen, [&b"one"[..], b"two words", b"three"]);
}

#[test]
fn a_short_reply_is_complete_after_the_quiet_time() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 64];
        for _ in 0..2 {
            let _ = s.read(&mut buf);
            let _ = s.write_all(b"ok");
        }
    });
    let started = Instant::now();
    let out = client(&[&addr], "a long question\nanother one\n");
    let elapsed = started.elapsed();
    let _ = server.join();
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "ok\nok\n");
    assert!(
        elapsed < Duration::from_secs(3),
        "two quiet times should take well under the 5 s timeout: {elapsed:?}"
    );
}

#[test]
fn refused_port_gives_a_clear_message_and_exit_1() {
    // Bind and drop: a port nobody listens on.
    let addr: SocketAddr = {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind");
        l.local_addr().expect("addr")
    };
    let out = client(&[&addr.to_string()], "hello\n");
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("cannot connect to") && err.contains("refused"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn udp_port_with_nothing_behind_it_is_reported() {
    let addr = {
        let u = UdpSocket::bind("127.0.0.1:0").expect("bind");
        u.local_addr().expect("addr")
    };
    let out = client(&["--udp", "--timeout", "2", &addr.to_string()], "hello\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("port unreachable"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn server_closing_mid_session_ends_it_with_exit_1() {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().expect("accept");
        let mut buf = [0u8; 64];
        let n = s.read(&mut buf).unwrap_or(0);
        let _ = s.write_all(&buf[..n]);
        // Read the second request, then hang up without answering.
        let _ = s.read(&mut buf);
    });
    let out = client(&[&addr], "first\nsecond\nthird\n");
    let _ = server.join();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(text(&out.stdout), "first\n");
    assert!(
        text(&out.stderr).contains("closed the connection"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn bad_address_is_a_usage_error() {
    let out = client(&["not-an-address"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("invalid address"));
}

#[test]
fn a_server_that_never_answers_is_reported_not_waited_for_forever() {
    let server = start_server(&["--mode", "discard"]);
    let addr = server.tcp_addr().to_string();
    let out = client(&["--timeout", "0.3", &addr], "into the void\n");
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("no reply"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn a_closed_stdout_ends_the_client_quietly_with_exit_0() {
    // `yes hello | head -20000 | echo-reactor client ADDR | head -1`
    let server = start_server(&["--mode", "upper"]);
    let mut child = Command::new(env!("CARGO_BIN_EXE_echo-reactor"))
        .args(["client", &server.tcp_addr().to_string()])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn client");
    let mut stdin = child.stdin.take().expect("piped");
    let feeder = std::thread::spawn(move || {
        // The client may be gone before all of it is read: that is the test.
        let _ = stdin.write_all("hello\n".repeat(20_000).as_bytes());
    });
    let mut first = String::new();
    let mut stdout = std::io::BufReader::new(child.stdout.take().expect("piped"));
    std::io::BufRead::read_line(&mut stdout, &mut first).expect("first reply");
    assert_eq!(first, "HELLO\n");
    drop(stdout); // the reader goes away, as `head -1` does
    let out = child.wait_with_output().expect("client exits");
    let _ = feeder.join();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    assert!(!stderr.contains("reset"), "{stderr}");
}

#[test]
fn tcp_and_udp_urls_choose_the_protocol() {
    let server = start_server(&["--mode", "upper"]);
    let tcp = format!("tcp://{}", server.tcp_addr());
    let out = client(&[&tcp], "hello\n");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "HELLO\n");
    let udp = format!("udp://{}", server.udp_addr());
    let out = client(&[&udp], "hello\n");
    assert!(out.status.success(), "stderr: {}", text(&out.stderr));
    assert_eq!(text(&out.stdout), "HELLO\n");
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "udp in"), Some(1), "{stderr}");
}

#[test]
fn a_tcp_url_with_udp_is_a_usage_error_and_bad_addresses_name_localhost() {
    let out = client(&["--udp", "tcp://127.0.0.1:7"], "");
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    // No port: refused before any lookup (a name is looked up, and this
    // test asks no resolver).
    let out = client(&["nowhere"], "");
    assert_eq!(out.status.code(), Some(2));
    assert!(
        text(&out.stderr).contains("localhost:7007"),
        "{}",
        text(&out.stderr)
    );
}

/// `echo-reactor client ARGS` with `input` on stdin, killed after
/// `limit`: the exit code (`None` if it was killed), stdout, stderr and
/// how long it ran.
fn client_within(
    args: &[&str],
    input: Vec<u8>,
    limit: Duration,
) -> (Option<i32>, Vec<u8>, String, Duration) {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_echo-reactor"));
    cmd.arg("client").args(args);
    let run = run_command(cmd, input, limit);
    let code = run.status.and_then(|s| s.code());
    (code, run.stdout.into_bytes(), run.stderr, run.elapsed)
}

/// A 16 MiB line of lowercase letters, then its line ending.
fn long_line() -> Vec<u8> {
    let mut line: Vec<u8> = (0..16usize << 20).map(|i| b'a' + (i % 26) as u8).collect();
    line.push(b'\n');
    line
}

#[test]
fn a_16_mib_line_streams_through_the_server_and_comes_back_exact() {
    // The server stops reading while its echo waits for the client: a
    // client that wrote the whole line before reading would block forever.
    let server = start_server(&["--mode", "upper"]);
    let addr = server.tcp_addr().to_string();
    let line = long_line();
    let (code, stdout, stderr, _) = client_within(
        &["--timeout", "5", &addr],
        line.clone(),
        Duration::from_secs(60),
    );
    assert_eq!(code, Some(0), "the client ended by itself: {stderr}");
    assert_eq!(stdout.len(), line.len(), "{stderr}");
    assert!(stdout == upper(&line), "the reply is the line, uppercased");
}

#[test]
fn a_server_that_stops_reading_ends_a_long_line_within_the_timeout() {
    // Accepts, then never reads: the kernel's buffers take a few MiB of
    // the line and no more.
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr").to_string();
    let holder = std::thread::spawn(move || {
        let (s, _) = listener.accept().expect("accept");
        std::thread::sleep(Duration::from_secs(30));
        drop(s);
    });
    let (code, _, stderr, elapsed) = client_within(
        &["--timeout", "2", &addr],
        long_line(),
        Duration::from_secs(25),
    );
    assert_eq!(code, Some(1), "exit 1, not killed at the limit: {stderr}");
    assert!(
        stderr.contains("stopped reading") && stderr.contains("--timeout"),
        "{stderr}"
    );
    assert!(elapsed < Duration::from_secs(20), "{elapsed:?}");
    drop(holder);
}
