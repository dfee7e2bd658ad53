//! The load generator's UDP verdicts against small misbehaving servers:
//! one that answers twice (duplicates fail the run), one that swaps
//! replies (reordering is counted, not failed), one that answers too late
//! (late replies stay lost, never mismatches or duplicates), and one that
//! floods the generator's receive buffer (its drops are counted).

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::Duration;

use echo_reactor::load::{self, LoadConfig, Proto, Report, Target};

/// A UDP server on a thread: `answer` gets each datagram and its source
/// and sends what it likes; the thread ends when the test process does.
fn fake_udp_server(
    mut answer: impl FnMut(&UdpSocket, &[u8], SocketAddr) + Send + 'static,
) -> SocketAddr {
    let socket = UdpSocket::bind("127.0.0.1:0").expect("bind");
    let addr = socket.local_addr().expect("addr");
    socket
        .set_read_timeout(Some(Duration::from_millis(20)))
        .expect("timeout");
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 65_536];
        loop {
            match socket.recv_from(&mut buf) {
                Ok((n, from)) => answer(&socket, &buf[..n], from),
                // Idle: give the server a turn with nothing (flushes).
                Err(_) => answer(&socket, &[], addr),
            }
        }
    });
    addr
}

fn udp(addr: SocketAddr) -> LoadConfig {
    LoadConfig {
        connections: 2,
        duration: Duration::from_millis(500),
        drain_timeout: Duration::from_millis(500),
        ..LoadConfig::new(Target {
            proto: Proto::Udp,
            addr,
        })
    }
}

fn run(config: &LoadConfig) -> Report {
    load::run(config).expect("load run")
}

#[test]
fn a_udp_server_that_answers_twice_fails_with_duplicates() {
    let addr = fake_udp_server(|s, data, from| {
        if !data.is_empty() {
            let _ = s.send_to(data, from);
            let _ = s.send_to(data, from);
        }
    });
    let r = run(&udp(addr));
    assert!(r.messages > 0, "{r}");
    assert!(r.errors.duplicate > 0, "{r}");
    assert_eq!(r.errors.mismatch, 0, "{r}");
    assert!(!r.is_ok(), "{r}");
    let json = r.to_json();
    assert!(json.contains("\"duplicate\":"), "{json}");
    assert!(json.contains("\"ok\":false"), "{json}");
    assert!(r.to_string().contains("duplicate"), "{r}");
}

#[test]
fn swapped_udp_replies_are_counted_as_reordered_and_still_pass() {
    // Holds each datagram until the next one from the same source comes,
    // then answers the newer first; an idle turn flushes a held one.
    let mut held: Option<(Vec<u8>, SocketAddr)> = None;
    let addr = fake_udp_server(move |s, data, from| {
        if data.is_empty() {
            if let Some((old, to)) = held.take() {
                let _ = s.send_to(&old, to);
            }
            return;
        }
        match held.take() {
            Some((old, to)) if to == from => {
                let _ = s.send_to(data, from);
                let _ = s.send_to(&old, to);
            }
            Some((old, to)) => {
                let _ = s.send_to(&old, to);
                held = Some((data.to_vec(), from));
            }
            None => held = Some((data.to_vec(), from)),
        }
    });
    let config = LoadConfig {
        connections: 1,
        pipeline: 2,
        ..udp(addr)
    };
    let r = run(&config);
    assert!(r.reordered > 0, "{r}");
    assert_eq!(
        (r.errors.mismatch, r.errors.duplicate),
        (0, 0),
        "reordering is no error: {r}"
    );
    assert!(r.is_ok(), "{r}");
    assert!(r.to_json().contains("\"reordered\":"), "{}", r.to_json());
    assert!(r.to_string().contains("reordered"), "{r}");
}

#[test]
fn a_reply_after_the_udp_timeout_is_late_not_a_mismatch_nor_counted_twice() {
    // Answers every datagram 60 ms after it came, well past a 20 ms
    // reply timeout: each request is lost first, then its reply is late.
    let addr = fake_udp_server(|s, data, from| {
        if !data.is_empty() {
            std::thread::sleep(Duration::from_millis(60));
            let _ = s.send_to(data, from);
        }
    });
    let config = LoadConfig {
        connections: 1,
        udp_reply_timeout: Duration::from_millis(20),
        ..udp(addr)
    };
    let r = run(&config);
    assert!(r.late > 0, "{r}");
    assert!(r.late <= r.errors.lost, "a late reply was lost first: {r}");
    assert_eq!(
        (r.errors.mismatch, r.errors.duplicate, r.messages),
        (0, 0, 0),
        "{r}"
    );
    assert!(!r.is_ok(), "everything was lost: {r}");
}

#[test]
fn replies_the_kernel_drops_at_the_generators_socket_are_counted() {
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicU32, Ordering};
    use std::sync::Arc;
    let pid = Arc::new(AtomicU32::new(0));
    let load_pid = Arc::clone(&pid);
    let mut answered = 0u32;
    let server = fake_udp_server(move |s, datagram, from| {
        if datagram.is_empty() {
            return;
        }
        let _ = s.send_to(datagram, from);
        answered += 1;
        let pid = load_pid.load(Ordering::Relaxed);
        if answered == 50 && pid != 0 {
            // Stopped, the generator reads nothing: its receive buffer
            // takes a few hundred of these and the kernel drops the rest.
            common::while_stopped(pid, || {
                for _ in 0..3000 {
                    let _ = s.send_to(datagram, from);
                }
            });
        }
    });
    let child = Command::new(env!("CARGO_BIN_EXE_echo-reactor"))
        .args(["load", &format!("udp://{server}"), "-c", "1", "-d", "2"])
        .args(["--rate", "200", "--json"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn load");
    pid.store(child.id(), Ordering::Relaxed);
    let out = child.wait_with_output().expect("load ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout}{}", String::from_utf8_lossy(&out.stderr)));
    let drops = v["rcvbuf_drops"].as_u64().expect("a count");
    // The copies it did read are second replies: duplicates, an error.
    let duplicates = v["errors"]["duplicate"].as_u64().expect("a count");
    assert!((1000..3000).contains(&drops), "{v}");
    assert_eq!(drops + duplicates, 3000, "{v}");
}
