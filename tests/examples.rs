//! Every example builds (`cargo test` builds them) and answers a round
//! trip, and each shows the property it exists to show: the blocking
//! server makes a second client wait, the threaded one does not, the chat
//! room relays a line from one client to another.

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

#[test]
fn reactor_serves_many_clients_on_one_thread() {
    let ex = start_example("reactor", &["127.0.0.1:0"]);
    let mut clients: Vec<TcpStream> = (0..50).map(|_| connect(ex.addr)).collect();
    for (i, c) in clients.iter_mut().enumerate() {
        let msg = format!("client {i} says hi");
        assert_eq!(roundtrip(c, msg.as_bytes()), msg.to_uppercase().as_bytes());
    }
    // A megabyte through one connection: partial writes kept and flushed.
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
    let status = std::fs::read_to_string(format!("/proc/{}/status", ex.pid())).unwrap_or_default();
    assert!(status.contains("Threads:\t1\n"), "one thread: {status}");
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
