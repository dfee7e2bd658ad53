//! TCP over loopback: the answers themselves (upper mode, order, many
//! connections at once), bulk data in both directions, the half-close and
//! backpressure turns, resets, and IPv6. Pure data-path tests run against an
//! in-process server; those that read the server's descriptors or memory
//! from /proc run the real binary.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::Duration;

use common::*;
use echo_reactor::Mode;

fn in_process(mode: Mode) -> InProcess {
    start_in_process(loopback_with(|c| {
        c.service = Arc::new(mode);
    }))
}

const MIB: usize = 1024 * 1024;

/// A reader that takes at most 8 KiB per read, like a slow client.
struct Trickle<'a>(&'a mut TcpStream);

impl Read for Trickle<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(8 * 1024);
        self.0.read(&mut buf[..n])
    }
}

#[test]
fn upper_mode_answers_hello_boy_with_hello_boy_in_capitals() {
    let server = start_server(&["--mode", "upper"]);
    let mut s = connect(server.tcp_addr());
    let reply = roundtrip(&mut s, b"hello boy");
    assert_eq!(
        reply,
        b"HELLO BOY",
        "sent \"hello boy\", got {:?}; stderr:\n{}",
        String::from_utf8_lossy(&reply),
        server.stderr()
    );
    drop(s);
    server.stop();
}

#[test]
fn upper_mode_changes_only_ascii_lowercase_among_all_256_byte_values() {
    let server = in_process(Mode::Upper);
    let mut s = connect(server.tcp[0]);
    let all: Vec<u8> = (0..=255).collect();
    let reply = roundtrip(&mut s, &all);
    for (sent, (got, want)) in all.iter().zip(reply.iter().zip(upper(&all))) {
        assert_eq!(*got, want, "sent byte {sent:#04x}, got {got:#04x}");
    }
    // And the answer is exactly one reply: nothing more follows the FIN.
    s.shutdown(Shutdown::Write).unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).unwrap();
    assert!(rest.is_empty(), "extra bytes after the reply: {rest:?}");
}

#[test]
fn one_connection_serves_100_round_trips_in_order() {
    let server = in_process(Mode::Upper);
    let mut s = connect(server.tcp[0]);
    for i in 0..100u64 {
        let msg = format!("message {i} of 100, {}\n", "x".repeat(i as usize));
        let reply = roundtrip(&mut s, msg.as_bytes());
        assert_eq!(
            reply,
            upper(msg.as_bytes()),
            "round trip {i}: sent {msg:?}, got {:?}",
            String::from_utf8_lossy(&reply)
        );
    }
    drop(s);
    let stats = server.stop();
    assert_eq!(stats.tcp_accepted, 1, "{stats}");
}

#[test]
fn two_hundred_sequential_connections_each_get_their_answer_then_a_fin() {
    let server = in_process(Mode::Upper);
    for i in 0..200u64 {
        let msg = pattern(i, 1 + (i as usize * 13) % 500);
        let mut s = connect(server.tcp[0]);
        s.write_all(&msg).unwrap();
        s.shutdown(Shutdown::Write).unwrap();
        let mut reply = Vec::new();
        s.read_to_end(&mut reply)
            .unwrap_or_else(|e| panic!("connection {i}: {e} after {} B", reply.len()));
        assert_eq!(reply, upper(&msg), "connection {i}: sent {msg:?}");
    }
    let stats = server.stop();
    assert_eq!(
        (stats.tcp_accepted, stats.tcp_closed),
        (200, 200),
        "{stats}"
    );
    assert_eq!(stats.tcp_resets + stats.tcp_io_errors, 0, "{stats}");
}

#[test]
fn a_thousand_concurrent_connections_each_get_back_exactly_their_own_bytes() {
    const CONNS: usize = 1000;
    const THREADS: usize = 4;
    let server = in_process(Mode::Upper);
    let addr = server.tcp[0];
    // Every connection is open before any byte is sent, so the server holds
    // all of them at once.
    let conns: Vec<(usize, TcpStream)> = (0..CONNS).map(|i| (i, connect(addr))).collect();
    let payload = |i: usize| pattern(i as u64 + 1_000, 100 + (i * 37) % 3000);
    let mut groups: Vec<Vec<(usize, TcpStream)>> = (0..THREADS).map(|_| Vec::new()).collect();
    for (n, c) in conns.into_iter().enumerate() {
        groups[n % THREADS].push(c);
    }
    let workers: Vec<_> = groups
        .into_iter()
        .map(|mut group| {
            thread::spawn(move || {
                // Each payload fits the socket buffers, so writing them all
                // before reading any cannot deadlock.
                for (i, s) in &mut group {
                    s.write_all(&payload(*i)).expect("send");
                }
                let mut bytes = 0;
                for (i, s) in &mut group {
                    let sent = payload(*i);
                    let mut got = vec![0; sent.len()];
                    s.read_exact(&mut got)
                        .unwrap_or_else(|e| panic!("connection {i}: reading reply: {e}"));
                    assert!(
                        got == upper(&sent),
                        "connection {i}: reply differs from its own payload (cross-talk?)"
                    );
                    bytes += sent.len();
                }
                bytes
            })
        })
        .collect();
    let total: usize = workers.into_iter().map(|w| w.join().unwrap()).sum();
    let stats = server.stop();
    assert_eq!(stats.tcp_accepted, CONNS as u64, "{stats}");
    assert_eq!(
        (stats.bytes_in, stats.bytes_out),
        (total as u64, total as u64),
        "{stats}"
    );
}

#[test]
fn sixty_four_mib_pass_through_one_connection_with_a_concurrent_writer_and_reader() {
    const TOTAL: usize = 64 * MIB;
    const SEED: u64 = 64;
    let server = in_process(Mode::Echo);
    let mut reader = connect(server.tcp[0]);
    let mut writer = reader.try_clone().unwrap();
    let sender = thread::spawn(move || {
        let mut stream = ByteStream::new(SEED);
        let mut chunk = vec![0u8; 256 * 1024];
        let mut sent = 0;
        while sent < TOTAL {
            stream.fill(&mut chunk);
            writer.write_all(&chunk).expect("send");
            sent += chunk.len();
        }
        writer.shutdown(Shutdown::Write).expect("FIN");
    });
    let received = ByteStream::new(SEED).verify_until_eof(&mut reader, |_| {});
    sender.join().unwrap();
    assert_eq!(received, TOTAL as u64, "bytes back before the FIN");
    let stats = server.stop();
    assert_eq!(
        (stats.bytes_in, stats.bytes_out),
        (TOTAL as u64, TOTAL as u64)
    );
}

#[test]
fn half_closed_connection_delivers_16_mib_to_a_slow_late_reader_then_a_fin() {
    const TOTAL: usize = 16 * MIB;
    const SEED: u64 = 16;
    // With a metrics endpoint, to see the output the server holds for us.
    let server = start_in_process(loopback_with(|c| {
        c.metrics = Some("127.0.0.1:0".parse().unwrap());
    }));
    let metrics = server.metrics.expect("metrics address");
    let mut reader = connect(server.tcp[0]);
    let mut writer = reader.try_clone().unwrap();
    let written = Arc::new(AtomicU64::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let sender = {
        let (written, finished) = (Arc::clone(&written), Arc::clone(&finished));
        thread::spawn(move || {
            let mut stream = ByteStream::new(SEED);
            let mut chunk = vec![0u8; 64 * 1024];
            for _ in 0..TOTAL / chunk.len() {
                stream.fill(&mut chunk);
                writer.write_all(&chunk).expect("send");
                written.fetch_add(chunk.len() as u64, Ordering::SeqCst);
            }
            writer.shutdown(Shutdown::Write).expect("FIN");
            finished.store(true, Ordering::SeqCst);
        })
    };
    // Late: nothing is read until the server holds output it cannot send
    // (with the default watermarks it has then stopped reading), or the
    // writer is done, so the server is deep in backpressure when the
    // reading starts.
    let mut pending = None;
    assert!(
        wait_until(IO_TIMEOUT, || {
            pending = metric(metrics, "tcp_pending_output_bytes");
            pending > Some(0) || finished.load(Ordering::SeqCst)
        }),
        "no output ever waited for the reader: {} B written, {pending:?} B pending",
        written.load(Ordering::SeqCst)
    );
    // Slow: small reads with a pause between them for the first few MiB,
    // long enough for the FIN to reach the server while output is pending.
    let mut trickle = Trickle(&mut reader);
    let received = ByteStream::new(SEED).verify_until_eof(&mut trickle, |so_far| {
        if so_far < 4 * MIB as u64 {
            thread::sleep(Duration::from_millis(1));
        }
    });
    sender.join().unwrap();
    assert_eq!(received, TOTAL as u64, "bytes before the FIN");
    let stats = server.stop();
    assert_eq!(stats.tcp_closed, 1, "closed after the FIN: {stats}");
    assert_eq!(stats.tcp_resets + stats.tcp_io_errors, 0, "{stats}");
}

#[test]
fn a_hundred_clients_resetting_mid_stream_leave_the_others_served_and_no_fd_behind() {
    const RESETTERS: usize = 100;
    const STEADY: usize = 8;
    let server = start_server(&[]);
    let addr = server.tcp_addr();
    let baseline = server.fd_count();

    // Steady clients keep doing verified round trips the whole time.
    let stop = Arc::new(AtomicBool::new(false));
    let trips = Arc::new(AtomicU64::new(0));
    let steady: Vec<_> = (0..STEADY)
        .map(|c| {
            let (stop, trips) = (Arc::clone(&stop), Arc::clone(&trips));
            let mut s = connect(addr);
            thread::spawn(move || {
                let mut n = 0u64;
                while !stop.load(Ordering::SeqCst) {
                    let msg = pattern(c as u64 * 1_000_000 + n, 1 + (n as usize * 97) % 4000);
                    let reply = roundtrip(&mut s, &msg);
                    assert!(reply == msg, "steady client {c}: round trip {n} corrupted");
                    n += 1;
                    trips.fetch_add(1, Ordering::SeqCst);
                }
                s
            })
        })
        .collect();
    assert!(wait_until(IO_TIMEOUT, || trips.load(Ordering::SeqCst) >= 100));

    // The resetters: all connected, each mid-way through a stream (its echo
    // started arriving, more is queued both ways), then reset.
    let mut resetters: Vec<TcpStream> = (0..RESETTERS).map(|_| connect(addr)).collect();
    let chunk = pattern(7, 256 * 1024);
    for s in &mut resetters {
        s.set_nonblocking(true).unwrap();
        match s.write(&chunk) {
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("resetter write: {e}"),
        }
        s.set_nonblocking(false).unwrap();
    }
    for (i, s) in resetters.iter_mut().enumerate() {
        let mut first = [0u8; 1];
        s.read_exact(&mut first)
            .unwrap_or_else(|e| panic!("resetter {i}: no echo started: {e}"));
        assert_eq!(first[0], chunk[0]);
    }
    let before_resets = trips.load(Ordering::SeqCst);
    for s in resetters {
        reset_abruptly(s);
    }

    let settled = wait_until(IO_TIMEOUT, || server.fd_count() == baseline + STEADY);
    assert!(
        settled,
        "after {RESETTERS} resets the server holds {} fds, expected {} ({baseline} + {STEADY} steady); \
         stderr:\n{}",
        server.fd_count(),
        baseline + STEADY,
        server.stderr()
    );
    // The steady clients were served through it all, and still are.
    assert!(wait_until(IO_TIMEOUT, || trips.load(Ordering::SeqCst)
        >= before_resets + 100));
    stop.store(true, Ordering::SeqCst);
    for t in steady {
        drop(t.join().expect("steady client failed"));
    }
    assert!(
        wait_until(IO_TIMEOUT, || server.fd_count() == baseline),
        "fds {} != baseline {baseline} after every client left",
        server.fd_count()
    );
    let stderr = server.stop();
    let accepted = final_stat(&stderr, "accepted");
    assert_eq!(accepted, Some((RESETTERS + STEADY) as u64), "{stderr}");
    assert_eq!(final_stat(&stderr, "closed"), accepted, "{stderr}");
    assert_eq!(
        final_stat(&stderr, "reset"),
        Some(RESETTERS as u64),
        "{stderr}"
    );
}

#[test]
fn a_client_that_sends_without_reading_cannot_grow_server_memory() {
    const CONNS: usize = 4;
    const CAP: usize = 48 * MIB;
    // The trace says when the server stops reading a connection.
    let server = start_server_logged(&[], "echo_reactor=trace");
    let addr = server.tcp_addr();
    // Warm up: one round trip, so the baseline includes what serving costs.
    let mut warm = connect(addr);
    roundtrip(&mut warm, b"warm up");
    drop(warm);
    let baseline = server.rss_bytes();

    let sent: Vec<Arc<AtomicU64>> = (0..CONNS).map(|_| Arc::new(AtomicU64::new(0))).collect();
    let all_paused = Arc::new(AtomicBool::new(false));
    let streams: Vec<TcpStream> = (0..CONNS).map(|_| connect(addr)).collect();
    let pushers: Vec<_> = streams
        .into_iter()
        .zip(&sent)
        .enumerate()
        .map(|(i, (s, sent))| {
            let (sent, all_paused) = (Arc::clone(sent), Arc::clone(&all_paused));
            thread::spawn(move || {
                // Push until the kernel stops taking bytes after the server
                // has stopped reading every connection, or the cap, never
                // reading a reply.
                s.set_nonblocking(true).unwrap();
                let mut stream = ByteStream::new(i as u64);
                let mut chunk = vec![0u8; 256 * 1024];
                stream.fill(&mut chunk);
                let mut off = 0;
                while (sent.load(Ordering::SeqCst) as usize) < CAP {
                    match (&s).write(&chunk[off..]) {
                        Ok(n) => {
                            sent.fetch_add(n as u64, Ordering::SeqCst);
                            off += n;
                            if off == chunk.len() {
                                stream.fill(&mut chunk);
                                off = 0;
                            }
                        }
                        Err(e) if e.kind() == ErrorKind::WouldBlock => {
                            if all_paused.load(Ordering::SeqCst) {
                                break;
                            }
                            // Full for now, and the server may still read:
                            // the retry interval, not a wait for an event.
                            thread::sleep(Duration::from_millis(5));
                        }
                        Err(e) => panic!("pusher {i}: {e}"),
                    }
                }
                s.set_nonblocking(false).unwrap();
                s
            })
        })
        .collect();
    let paused = wait_until(IO_TIMEOUT, || server.paused_connections() == CONNS);
    // Either way the pushers stop at their next refused write.
    all_paused.store(true, Ordering::SeqCst);
    let streams: Vec<TcpStream> = pushers.into_iter().map(|p| p.join().unwrap()).collect();
    assert!(
        paused,
        "the server paused reading {} of {CONNS} connections; trace tail:\n{}",
        server.paused_connections(),
        tail(&server.stderr(), 20)
    );
    let pushed: Vec<u64> = sent.iter().map(|c| c.load(Ordering::SeqCst)).collect();
    let grown = server.rss_bytes().saturating_sub(baseline);
    assert!(
        grown < 4 * MIB as u64,
        "server RSS grew by {} KiB while clients pushed {pushed:?} B without reading",
        grown / 1024
    );
    assert!(
        pushed.iter().all(|&p| (p as usize) < CAP),
        "the kernel took all {CAP} B on some connection ({pushed:?}): the server never pushed back"
    );

    // Backpressure loses nothing: once read, every byte comes back.
    let readers: Vec<_> = streams
        .into_iter()
        .zip(pushed)
        .enumerate()
        .map(|(i, (s, pushed))| {
            thread::spawn(move || {
                s.shutdown(Shutdown::Write).unwrap();
                let back = ByteStream::new(i as u64).verify_until_eof(&mut &s, |_| {});
                assert_eq!(back, pushed, "connection {i}: bytes back");
            })
        })
        .collect();
    for r in readers {
        r.join().unwrap();
    }
    server.stop();
}

#[test]
fn tcp_over_ipv6_loopback_is_served_and_announced_with_brackets() {
    let server = start_server(&["--tcp", "[::1]:0", "--mode", "upper"]);
    let addr = server.tcp_addr();
    assert!(addr.is_ipv6() && addr.port() != 0, "announced {addr}");
    let mut s = connect(addr);
    assert_eq!(s.local_addr().unwrap().ip(), addr.ip());
    assert_eq!(roundtrip(&mut s, b"over v6"), b"OVER V6");
    drop(s);
    server.stop();
}
