//! Every example builds (`cargo test` builds them) and answers a round
//! trip, and each shows the property it exists to show: the blocking
//! server makes a second client wait, the threaded one does not, the five
//! single-threaded models serve many clients at once and only the polling
//! one burns CPU at idle, the chat room relays a line from one client to
//! another and stays bounded under a flood.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

#[test]
fn blocking_serves_one_client_and_makes_the_second_wait() {
    let ex = start_example("blocking", &["127.0.0.1:0"]);
    let mut first = connect(ex.addr);
    assert_eq!(roundtrip(&mut first, b"hello boy"), b"HELLO BOY");
    // The second connects (the kernel completes the handshake) but nobody
    // reads its bytes while the first is being served.
    let mut second = connect(ex.addr);
    second.write_all(b"anyone?").expect("write");
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    let mut buf = [0u8; 16];
    assert!(
        second.read(&mut buf).is_err(),
        "the second client was served early"
    );
    drop(first);
    second.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut reply = [0u8; 7];
    second
        .read_exact(&mut reply)
        .expect("served once the first left");
    assert_eq!(&reply, b"ANYONE?");
}

#[test]
fn threaded_serves_clients_at_the_same_time() {
    let ex = start_example("threaded", &["127.0.0.1:0"]);
    let mut first = connect(ex.addr);
    let mut second = connect(ex.addr);
    assert_eq!(roundtrip(&mut second, b"second"), b"SECOND");
    assert_eq!(roundtrip(&mut first, b"first"), b"FIRST");
}

/// Fifty clients at once, then a megabyte through one connection (so
/// partial writes are kept and flushed), every reply checked.
fn assert_serves_many_clients_and_a_megabyte(ex: &Example) {
    let mut clients: Vec<TcpStream> = (0..50).map(|_| connect(ex.addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let msg = format!("client {i} says hi");
        assert_eq!(roundtrip(c, msg.as_bytes()), msg.to_uppercase().as_bytes());
    }
    let big = pattern(7, 1 << 20);
    let mut c = connect(ex.addr);
    let writer = {
        let mut w = c.try_clone().expect("clone");
        let big = big.clone();
        std::thread::spawn(move || w.write_all(&big))
    };
    let mut back = vec![0u8; big.len()];
    c.read_exact(&mut back).expect("all of it back");
    let _ = writer.join();
    assert_eq!(back, upper(&big));
}

fn threads(pid: u32) -> String {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .unwrap_or("?")
        .trim()
        .to_string()
}

#[test]
fn reactor_serves_many_clients_on_one_thread() {
    let ex = start_example("reactor", &["127.0.0.1:0"]);
    assert_serves_many_clients_and_a_megabyte(&ex);
    assert_eq!(threads(ex.pid()), "1");
}

#[test]
fn nonblocking_polling_serves_many_clients_on_one_thread() {
    let ex = start_example("nonblocking", &["127.0.0.1:0"]);
    assert_serves_many_clients_and_a_megabyte(&ex);
    assert_eq!(threads(ex.pid()), "1");
}

#[test]
fn poll_serves_many_clients_on_one_thread() {
    let ex = start_example("poll", &["127.0.0.1:0"]);
    assert_serves_many_clients_and_a_megabyte(&ex);
    assert_eq!(threads(ex.pid()), "1");
}

#[test]
fn sigio_serves_many_clients_on_one_thread() {
    let ex = start_example("sigio", &["127.0.0.1:0"]);
    assert_serves_many_clients_and_a_megabyte(&ex);
    assert_eq!(threads(ex.pid()), "1");
}

#[test]
fn uring_serves_many_clients_with_and_without_batching() {
    for args in [&["127.0.0.1:0"][..], &["127.0.0.1:0", "--no-batch"]] {
        let ex = start_example("uring", args);
        assert_serves_many_clients_and_a_megabyte(&ex);
    }
}

/// Non-blocking polling tries every socket in a loop whether anything
/// happened or not; the models that wait for the kernel sleep. The busy
/// example is the clock: while it burns half a second of CPU, the others,
/// each holding ten idle connections too, burn next to nothing.
#[test]
fn nonblocking_polling_burns_cpu_at_idle_and_the_waiting_models_do_not() {
    let waiting: Vec<Example> = ["poll", "sigio", "reactor", "uring"]
        .iter()
        .map(|name| start_example(name, &["127.0.0.1:0"]))
        .collect();
    let busy = start_example("nonblocking", &["127.0.0.1:0"]);
    let mut idle = Vec::new();
    for ex in waiting.iter().chain([&busy]) {
        for _ in 0..10 {
            let mut c = connect(ex.addr);
            assert_eq!(roundtrip(&mut c, b"hi"), b"HI");
            idle.push(c);
        }
    }
    let before: Vec<u64> = waiting.iter().map(|ex| cpu_ticks(ex.pid())).collect();
    let start = cpu_ticks(busy.pid());
    // 50 ticks: half a second of CPU; a busy loop gets that even on a
    // shared, loaded machine within the limit.
    let burned = wait_until(IO_TIMEOUT, || cpu_ticks(busy.pid()) >= start + 50);
    assert!(
        burned,
        "the polling loop used {} ticks",
        cpu_ticks(busy.pid()) - start
    );
    for (ex, before) in waiting.iter().zip(before) {
        let used = cpu_ticks(ex.pid()) - before;
        assert!(used <= 5, "an idle waiting model used {used} ticks");
    }
    drop(idle);
}

#[test]
fn udp_answers_each_datagram() {
    let ex = start_example("udp", &["127.0.0.1:0"]);
    let u = UdpSocket::bind("127.0.0.1:0").expect("bind");
    u.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    for msg in [&b"hello"[..], b"", b"Mixed Case 123"] {
        u.send_to(msg, ex.addr).expect("send");
        let mut buf = [0u8; 64];
        let (n, _) = u.recv_from(&mut buf).expect("reply");
        assert_eq!(&buf[..n], msg.to_ascii_uppercase().as_slice());
    }
}

/// Reads one line from a chat client.
fn read_line(r: &mut BufReader<TcpStream>) -> String {
    let mut line = String::new();
    r.read_line(&mut line).expect("a line from the room");
    line
}

#[test]
fn chat_relays_a_line_to_the_others_but_not_back() {
    let ex = start_example("chat", &["127.0.0.1:0"]);
    let mut alice = connect(ex.addr);
    let bob = connect(ex.addr);
    let mut bob_in = BufReader::new(bob.try_clone().expect("clone"));
    let mut alice_in = BufReader::new(alice.try_clone().expect("clone"));
    // Bob speaks first: when Alice hears him, both are in the room.
    (&bob).write_all(b"bob here\n").expect("write");
    assert!(read_line(&mut alice_in).ends_with("] bob here\n"));
    alice.write_all(b"hi bob\n").expect("write");
    assert!(read_line(&mut bob_in).ends_with("] hi bob\n"));
    // Nothing came back to Alice: a short wait finds no echo of her line.
    alice
        .set_read_timeout(Some(Duration::from_millis(200)))
        .expect("timeout");
    let mut buf = [0u8; 32];
    assert!(alice.read(&mut buf).is_err(), "the sender got its own line");
}

#[test]
fn chat_disconnects_a_client_that_stops_reading_and_serves_the_rest() {
    let ex = start_example("chat", &["127.0.0.1:0"]);
    let slow = connect(ex.addr);
    let fast = connect(ex.addr);
    let mut talker = connect(ex.addr);
    // The fast reader counts every line it hears from the room.
    let heard = Arc::new(AtomicUsize::new(0));
    let reader = {
        let fast = fast.try_clone().expect("clone");
        let heard = Arc::clone(&heard);
        std::thread::spawn(move || {
            let mut r = BufReader::new(fast);
            let mut lines = 0;
            let mut line = String::new();
            while r.read_line(&mut line).is_ok_and(|n| n > 0) {
                if line.contains("] line ") {
                    lines += 1;
                    heard.store(lines, Ordering::Relaxed);
                }
                if line.contains("] done") {
                    break;
                }
                line.clear();
            }
            lines
        })
    };
    // Make sure all three are in the room before the flood.
    (&fast).write_all(b"hello\n").expect("write");
    let mut t_in = BufReader::new(talker.try_clone().expect("clone"));
    assert!(read_line(&mut t_in).ends_with("] hello\n"));
    // 5,000 lines of 4,000 bytes: far more than the slow client's kernel
    // buffers and its 64 KiB allowance.
    let filler = "x".repeat(4000);
    for i in 0..5000 {
        // Stay at most 16 lines (64 KB, within the room's 64 KiB allowance
        // plus the kernel's buffers) ahead of the fast reader, so a busy
        // machine that starves its thread cannot make it look slow; the
        // slow client reads nothing at all.
        let deadline = Instant::now() + IO_TIMEOUT;
        while heard.load(Ordering::Relaxed) + 16 < i {
            assert!(
                Instant::now() < deadline,
                "the fast client stopped hearing lines at {i}"
            );
            std::thread::yield_now();
        }
        talker
            .write_all(format!("line {i} {filler}\n").as_bytes())
            .expect("the room keeps taking lines");
    }
    talker.write_all(b"done\n").expect("write");
    assert_eq!(
        reader.join().expect("reader"),
        5000,
        "the fast client heard every line"
    );
    // The slow client was cut off: reading what it was sent ends, with EOF
    // or a reset, instead of waiting forever.
    let mut slow = slow;
    slow.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut buf = vec![0u8; 1 << 20];
    let ended = loop {
        match slow.read(&mut buf) {
            Ok(0) => break true,
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => break true,
            Err(_) => break false,
        }
    };
    assert!(ended, "the slow client was never disconnected");
}

#[test]
fn chat_tells_a_client_with_a_too_long_line_why_it_is_cut_off() {
    let ex = start_example("chat", &["127.0.0.1:0"]);
    let mut talker = connect(ex.addr);
    // Past the room's 4 KiB line cap, with no newline: disconnected. Its
    // socket has room, so the last-line notice arrives before the EOF.
    talker.write_all(&[b'x'; 5000]).expect("write");
    let mut heard = String::new();
    BufReader::new(talker)
        .read_to_string(&mut heard)
        .expect("the notice, then EOF");
    assert_eq!(heard, "* disconnected: too slow or line too long\n");
}

/// The guide's flood: one client sends lines as fast as it can while
/// another never reads. Draining the flooder to `WouldBlock` in one turn
/// would hold everything read in that turn (and queue it for the stalled
/// reader); with the read budget the room stays at a few MB.
#[test]
fn chat_stays_small_while_one_client_floods_the_room() {
    const TOTAL: usize = 256 << 20;
    let ex = start_example("chat", &["127.0.0.1:0"]);
    let before = rss_bytes(ex.pid());
    let stalled = connect(ex.addr);
    let flood = connect(ex.addr);
    let sent = Arc::new(AtomicUsize::new(0));
    let writer = {
        let mut w = flood.try_clone().expect("clone");
        let sent = Arc::clone(&sent);
        std::thread::spawn(move || {
            let line = format!("{}\n", "x".repeat(1000));
            let chunk = line.repeat(1000);
            while sent.load(Ordering::Relaxed) < TOTAL {
                if w.write_all(chunk.as_bytes()).is_err() {
                    return;
                }
                sent.fetch_add(chunk.len(), Ordering::Relaxed);
            }
        })
    };
    let mut peak = 0;
    let flooded = wait_until(Duration::from_secs(60), || {
        peak = peak.max(rss_bytes(ex.pid()));
        writer.is_finished()
    });
    assert!(flooded, "the room stopped taking the flood");
    let _ = writer.join();
    let sent = sent.load(Ordering::Relaxed);
    assert!(sent >= TOTAL, "the flood ended early after {sent} B");
    assert!(
        peak < before + (32 << 20),
        "the room grew from {before} B to {peak} B under {sent} B of lines"
    );
    // Still a working room: a newcomer hears the flooder's next line.
    let newcomer = connect(ex.addr);
    let mut heard = BufReader::new(newcomer.try_clone().expect("clone"));
    (&flood).write_all(b"still here\n").expect("write");
    let mut line = String::new();
    while !line.ends_with("] still here\n") {
        line.clear();
        heard.read_line(&mut line).expect("a line from the room");
    }
    drop(stalled);
}
