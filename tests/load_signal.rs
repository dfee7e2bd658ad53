//! Ctrl-C keeps the report: SIGINT or SIGTERM during `load` ends the run
//! with the report of the window so far (text, or the JSON object with
//! `"interrupted": true`) and exit 130 or 143; a second signal exits at
//! once, but the same signal twice within 0.1 s (as `timeout` sends it,
//! to the process and to its group) is one request and keeps the report.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// `echo-reactor load ARGS` with its debug log on a channel, line by line.
fn spawn_load(args: &[&str]) -> (Child, Receiver<String>) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_echo-reactor"))
        .arg("load")
        .args(args)
        .env("RUST_LOG", "echo_reactor=debug")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn load");
    let (tx, rx) = mpsc::channel();
    let stderr = child.stderr.take().expect("piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    (child, rx)
}

/// Waits for a log line containing `what`; panics with what came instead.
fn wait_for_line(rx: &Receiver<String>, what: &str) {
    let deadline = Instant::now() + IO_TIMEOUT;
    let mut seen = Vec::new();
    while let Some(left) = deadline.checked_duration_since(Instant::now()) {
        match rx.recv_timeout(left) {
            Ok(line) if line.contains(what) => return,
            Ok(line) => seen.push(line),
            Err(_) => break,
        }
    }
    panic!("no line with {what:?}; stderr: {seen:#?}");
}

fn kill(child: &Child, signal: i32) {
    let pid = i32::try_from(child.id()).expect("pid fits");
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
}

/// Waits for the child to exit within `limit`; returns code and stdout.
fn finish(mut child: Child, limit: Duration) -> (Option<i32>, String, Duration) {
    let started = Instant::now();
    let code = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break status.code();
        }
        if started.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!("load did not end within {limit:?} of the signal");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let mut out = String::new();
    if let Some(mut stdout) = child.stdout.take() {
        let _ = stdout.read_to_string(&mut out);
    }
    (code, out, started.elapsed())
}

/// A TCP echo server on threads that counts the bytes it echoed.
fn counting_echo_server() -> (SocketAddr, Arc<AtomicU64>) {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("addr");
    let echoed = Arc::new(AtomicU64::new(0));
    let count = Arc::clone(&echoed);
    std::thread::spawn(move || {
        for mut stream in listener.incoming().flatten() {
            let count = Arc::clone(&count);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                while let Ok(n) = stream.read(&mut buf) {
                    if n == 0 || stream.write_all(&buf[..n]).is_err() {
                        break;
                    }
                    count.fetch_add(n as u64, Ordering::Relaxed);
                }
            });
        }
    });
    (addr, echoed)
}

#[test]
fn sigint_during_load_prints_the_json_report_so_far_and_exits_130() {
    let (addr, echoed) = counting_echo_server();
    let url = format!("tcp://{addr}");
    let (child, log) = spawn_load(&[&url, "-c", "2", "-d", "60", "--json"]);
    wait_for_line(&log, "load: measuring");
    // Some messages inside the window before the signal.
    let before = echoed.load(Ordering::Relaxed);
    assert!(wait_until(IO_TIMEOUT, || {
        echoed.load(Ordering::Relaxed) > before + 64 * 100
    }));
    kill(&child, libc::SIGINT);
    let (code, out, _) = finish(child, Duration::from_secs(5));
    assert_eq!(code, Some(130), "{out}");
    assert_eq!(out.trim().lines().count(), 1, "one JSON object: {out}");
    assert!(out.contains("\"interrupted\":true"), "{out}");
    assert!(out.contains("\"ok\":false"), "{out}");
    assert!(!out.contains("\"messages\":0,"), "the window so far: {out}");
}

#[test]
fn sigterm_during_load_prints_the_text_report_and_exits_143() {
    let server = start_in_process(loopback_config());
    let url = format!("tcp://{}", server.tcp[0]);
    let (child, log) = spawn_load(&[&url, "-c", "2", "-d", "60"]);
    wait_for_line(&log, "load: measuring");
    kill(&child, libc::SIGTERM);
    let (code, out, _) = finish(child, Duration::from_secs(5));
    assert_eq!(code, Some(143), "{out}");
    assert!(out.contains("measured"), "{out}");
    assert!(out.contains("result     INTERRUPTED"), "{out}");
}

#[test]
fn a_second_sigint_exits_at_once_without_waiting_for_the_drain() {
    // Accepts and never answers: the first signal's drain has replies to
    // wait for, the whole second of it.
    let hole = TcpListener::bind("127.0.0.1:0").expect("bind");
    let url = format!("tcp://{}", hole.local_addr().expect("addr"));
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for stream in hole.incoming().flatten() {
            held.push(stream);
        }
    });
    let (child, log) = spawn_load(&[&url, "-c", "2", "-d", "60", "--drain-timeout", "60"]);
    wait_for_line(&log, "load: measuring");
    kill(&child, libc::SIGINT);
    wait_for_line(&log, "load: interrupted");
    // A person's second Ctrl-C, not the same signal sent twice at once.
    std::thread::sleep(Duration::from_millis(200));
    kill(&child, libc::SIGINT);
    let (code, out, took) = finish(child, Duration::from_secs(5));
    assert_eq!(code, Some(130), "{out}");
    assert!(out.is_empty(), "no report after the second signal: {out}");
    assert!(took < Duration::from_millis(900), "took {took:?}");
}

#[test]
fn the_same_signal_twice_at_once_as_timeout_sends_it_keeps_the_json_report() {
    let server = start_in_process(loopback_config());
    let url = format!("tcp://{}", server.tcp[0]);
    let (child, log) = spawn_load(&[&url, "-c", "2", "-d", "60", "--json"]);
    wait_for_line(&log, "load: measuring");
    // What GNU timeout does: the child first, then the whole group.
    kill(&child, libc::SIGTERM);
    kill(&child, libc::SIGTERM);
    let (code, out, _) = finish(child, Duration::from_secs(5));
    assert_eq!(code, Some(143), "{out}");
    assert_eq!(out.trim().lines().count(), 1, "one JSON object: {out}");
    assert!(out.contains("\"interrupted\":true"), "{out}");
}
