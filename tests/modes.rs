//! The simple services over loopback, against the real binary: discard,
//! chargen, daytime and time over TCP and UDP, and the UDP size rule with
//! and without `--udp-allow-amplification`.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::UdpSocket;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::*;

/// Seconds from 1900 to 1970, RFC 868's offset.
const RFC868_OFFSET: u64 = 2_208_988_800;

/// The chargen byte at `offset`, from RFC 864's rule (written out here,
/// independently of the server's table).
fn chargen_byte(offset: usize) -> u8 {
    let (line, col) = (offset / 74 % 95, offset % 74);
    match col {
        72 => b'\r',
        73 => b'\n',
        c => b' ' + ((line + c) % 95) as u8,
    }
}

fn now_unix() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Sends `req` and returns the reply, or `None` when none comes in 300 ms.
fn ask(u: &UdpSocket, to: std::net::SocketAddr, req: &[u8]) -> Option<Vec<u8>> {
    u.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    u.send_to(req, to).expect("send datagram");
    let mut buf = vec![0u8; 65_536];
    match u.recv_from(&mut buf) {
        Ok((n, _)) => {
            buf.truncate(n);
            Some(buf)
        }
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => None,
        Err(e) => panic!("recv: {e}"),
    }
}

#[test]
fn discard_consumes_32_mib_returns_nothing_and_stays_open() {
    let server = start_server(&["--mode", "discard"]);
    let mut s = connect(server.tcp_addr());
    let chunk = vec![b'd'; 1 << 20];
    for _ in 0..32 {
        s.write_all(&chunk).expect("discard takes everything");
    }
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    match s.read(&mut buf) {
        Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
        other => panic!("discard must send nothing and keep the connection open: {other:?}"),
    }
    // Still open: more bytes are taken.
    s.write_all(b"still there").expect("connection still open");
    drop(s);
    let u = udp_client(server.udp_addr());
    assert_eq!(ask(&u, server.udp_addr(), b"into the void"), None);
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "in"), Some((32 << 20) + 11));
    assert_eq!(final_stat(&stderr, "out"), Some(0));
    assert_eq!(final_stat(&stderr, "udp out"), Some(0));
}

#[test]
fn chargen_streams_one_mib_of_correct_lines_over_tcp() {
    let server = start_server(&["--mode", "chargen"]);
    let mut s = connect(server.tcp_addr());
    let mut got = vec![0u8; 1 << 20];
    s.read_exact(&mut got).expect("1 MiB of chargen");
    for (i, &b) in got.iter().enumerate() {
        assert_eq!(
            b,
            chargen_byte(i),
            "byte {i} (line {}, column {})",
            i / 74,
            i % 74
        );
    }
    // Input is ignored, not echoed: the stream simply continues.
    s.write_all(b"ignored\r\n").expect("write");
    let mut more = vec![0u8; 74 * 100];
    s.read_exact(&mut more).expect("more lines");
    let offset = 1 << 20;
    assert!(more
        .iter()
        .enumerate()
        .all(|(i, &b)| b == chargen_byte(offset + i)));
}

#[test]
fn chargen_slow_reader_keeps_server_memory_flat() {
    let server = start_server(&["--mode", "chargen"]);
    let before = server.rss_bytes();
    let mut s = connect(server.tcp_addr());
    // 10 KiB/s for 3 s: 100 reads of 307 bytes, every 30 ms.
    let mut offset = 0;
    let mut buf = [0u8; 307];
    let started = Instant::now();
    while started.elapsed() < Duration::from_secs(3) {
        s.read_exact(&mut buf).expect("chargen keeps streaming");
        assert!(buf
            .iter()
            .enumerate()
            .all(|(i, &b)| b == chargen_byte(offset + i)));
        offset += buf.len();
        std::thread::sleep(Duration::from_millis(30));
    }
    let after = server.rss_bytes();
    assert!(
        after < before + (4 << 20),
        "RSS grew from {before} to {after} bytes for one slow chargen reader"
    );
    // The server kept nothing back: only what the kernel's buffers hold
    // went out beyond what we read.
    drop(s);
    let stderr = server.stop();
    let out = final_stat(&stderr, "out").expect("bytes out");
    assert!(
        out < offset as u64 + (16 << 20),
        "sent {out} B to a reader of {offset} B"
    );
}

#[test]
fn a_thousand_chargen_readers_do_not_starve_a_new_client() {
    // 1,000 streams that each could write forever: the per-turn budget
    // and the ready list must still give a newcomer its turn at once.
    let chargen = start_server(&["--mode", "chargen", "--tcp", "127.0.0.1:0"]);
    let mut streams = Vec::new();
    for _ in 0..1000 {
        streams.push(connect(chargen.tcp_addr()));
    }
    // Keep every stream flowing from a reader thread.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let stop = std::sync::Arc::clone(&stop);
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 * 1024];
            let mut total = 0u64;
            for s in &streams {
                s.set_nonblocking(true).expect("nonblocking");
            }
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                for mut s in &streams {
                    if let Ok(n) = s.read(&mut buf) {
                        total += n as u64;
                    }
                }
            }
            total
        })
    };
    // Meanwhile a fresh chargen client still gets its first line promptly.
    let mut worst = Duration::ZERO;
    for _ in 0..20 {
        let started = Instant::now();
        let mut fresh = connect(chargen.tcp_addr());
        let mut line = [0u8; 74];
        fresh.read_exact(&mut line).expect("first line");
        assert_eq!(line[0], b' ');
        worst = worst.max(started.elapsed());
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let total = reader.join().expect("reader thread");
    println!("1,000 chargen streams moved {total} B; worst first-line wait {worst:?}");
    assert!(total > 1 << 20, "the streams moved only {total} B");
    assert!(
        worst < Duration::from_millis(500),
        "a new client waited {worst:?} behind 1,000 streams"
    );
}

#[test]
fn daytime_sends_one_line_then_fin() {
    let server = start_server(&["--mode", "daytime"]);
    let mut s = connect(server.tcp_addr());
    let mut got = Vec::new();
    // read_to_end succeeds only on a FIN; a reset is an error.
    s.read_to_end(&mut got).expect("one line, then a clean EOF");
    let line = String::from_utf8(got).expect("ASCII");
    assert!(line.ends_with("\r\n"), "{line:?}");
    assert_eq!(line.matches("\r\n").count(), 1, "{line:?}");
    assert!(line
        .bytes()
        .all(|b| (0x20..=0x7e).contains(&b) || b == b'\r' || b == b'\n'));
    assert!(line.contains("-UTC"), "{line:?}");
    // The year is there, and it is this year (or the next, at midnight).
    let year = 1970 + now_unix() / 31_556_952;
    assert!(
        line.contains(&year.to_string()) || line.contains(&(year + 1).to_string()),
        "{line:?}"
    );
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "reset"), Some(0));
}

#[test]
fn time_sends_four_bytes_within_seconds_of_our_clock_then_fin() {
    let server = start_server(&["--mode", "time"]);
    let mut s = connect(server.tcp_addr());
    let mut got = Vec::new();
    s.read_to_end(&mut got).expect("4 bytes, then a clean EOF");
    assert_eq!(got.len(), 4, "{got:?}");
    let theirs = u64::from(u32::from_be_bytes([got[0], got[1], got[2], got[3]]));
    let ours = (now_unix() + RFC868_OFFSET) % (1 << 32);
    assert!(theirs.abs_diff(ours) <= 3, "server {theirs}, test {ours}");
}

#[test]
fn udp_time_answers_even_the_empty_datagram_with_four_bytes() {
    let server = start_server(&["--mode", "time"]);
    let u = udp_client(server.udp_addr());
    for req in [&b""[..], b"x", b"a longer request"] {
        let reply = ask(&u, server.udp_addr(), req).expect("time always answers");
        assert_eq!(reply.len(), 4);
        let theirs = u64::from(u32::from_be_bytes([reply[0], reply[1], reply[2], reply[3]]));
        let ours = (now_unix() + RFC868_OFFSET) % (1 << 32);
        assert!(theirs.abs_diff(ours) <= 3);
    }
}

#[test]
fn udp_chargen_and_daytime_never_amplify_by_default() {
    for mode in ["chargen", "daytime"] {
        let server = start_server(&["--mode", mode]);
        let u = udp_client(server.udp_addr());
        for size in [0usize, 1, 10, 40, 73, 74, 100, 600] {
            let req = vec![b'q'; size];
            if let Some(reply) = ask(&u, server.udp_addr(), &req) {
                assert!(
                    reply.len() <= size,
                    "{mode}: {} B reply to a {size} B request",
                    reply.len()
                );
            }
        }
        // Requests long enough get real answers.
        let reply = ask(&u, server.udp_addr(), &[b'q'; 100]).expect("an answer to 100 B");
        assert!(reply.ends_with(b"\r\n"), "{mode}: {reply:?}");
        if mode == "chargen" {
            assert_eq!(reply.len(), 74, "one whole line");
            assert_eq!(
                ask(&u, server.udp_addr(), &[b'q'; 10]).map(|r| r.len()),
                Some(10)
            );
        } else {
            assert_eq!(
                ask(&u, server.udp_addr(), &[b'q'; 10]),
                None,
                "a cut date misleads"
            );
        }
    }
}

#[test]
fn udp_amplification_only_when_the_operator_allows_it() {
    let server = start_server(&["--mode", "chargen", "--udp-allow-amplification"]);
    let u = udp_client(server.udp_addr());
    let sizes: Vec<usize> = (0..60)
        .filter_map(|_| ask(&u, server.udp_addr(), b""))
        .map(|r| r.len())
        .collect();
    assert_eq!(sizes.len(), 60, "every empty request is answered");
    assert!(sizes.iter().all(|&n| n <= 512), "{sizes:?}");
    assert!(
        sizes.iter().any(|&n| n > 74),
        "RFC 864's random sizes: {sizes:?}"
    );
    drop(server);

    let server = start_server(&["--mode", "daytime", "--udp-allow-amplification"]);
    let u = udp_client(server.udp_addr());
    let reply = ask(&u, server.udp_addr(), b"").expect("daytime answers an empty request");
    assert!(reply.ends_with(b"\r\n"));
}

#[test]
fn load_refuses_to_check_a_mode_that_is_not_byte_for_byte() {
    let out = run_binary(
        &["load", "tcp://127.0.0.1:9", "--expect", "chargen"],
        Duration::from_secs(10),
    );
    assert_eq!(out.code(), 2, "{}", out.stderr);
    assert!(
        out.stderr.contains("expected echo or upper"),
        "{}",
        out.stderr
    );
}

#[test]
fn the_custom_mode_example_plugs_rot13_into_the_library() {
    // Killed on drop, also when an assertion below fails.
    let ex = start_example("custom_mode", &["127.0.0.1:0"]);
    let mut s = connect(ex.addr);
    let reply = roundtrip(&mut s, b"Hello, World! 123");
    assert_eq!(reply, b"Uryyb, Jbeyq! 123");
}
