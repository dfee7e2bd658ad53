//! UDP over loopback: one reply per datagram, transformed by the mode,
//! whole at the largest size and present at size zero, over IPv4 and IPv6;
//! what the kernel drops before the server reads is counted.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::Arc;

use common::*;
use echo_reactor::Mode;

/// The largest UDP payload IPv4 can carry: 65,535 - 20 (IP) - 8 (UDP).
const MAX_V4_DATAGRAM: usize = 65_507;

/// Sends `msg` to `server` and returns the one reply, checking it came
/// from the server's address.
fn exchange(u: &UdpSocket, server: SocketAddr, msg: &[u8]) -> Vec<u8> {
    u.send_to(msg, server).expect("send datagram");
    // One byte more than the largest datagram, so a reply is never cut to fit.
    let mut buf = vec![0u8; 65_536];
    let (n, from) = u.recv_from(&mut buf).unwrap_or_else(|e| {
        panic!(
            "no reply to a {}-byte datagram {:?}: {e}",
            msg.len(),
            String::from_utf8_lossy(&msg[..msg.len().min(32)])
        )
    });
    assert_eq!(from, server, "reply came from the wrong address");
    buf.truncate(n);
    buf
}

#[test]
fn upper_mode_answers_each_datagram_uppercased_and_every_other_byte_unchanged() {
    let server = start_server(&["--mode", "upper"]);
    let u = udp_client(server.udp_addr());
    assert_eq!(exchange(&u, server.udp_addr(), b"hello boy"), b"HELLO BOY");
    let all: Vec<u8> = (0..=255).collect();
    let reply = exchange(&u, server.udp_addr(), &all);
    assert_eq!(reply.len(), 256);
    for (sent, (got, want)) in all.iter().zip(reply.iter().zip(upper(&all))) {
        assert_eq!(*got, want, "sent byte {sent:#04x}, got {got:#04x}");
    }
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "udp in"), Some(2), "{stderr}");
    assert_eq!(final_stat(&stderr, "udp out"), Some(2), "{stderr}");
}

#[test]
fn a_65507_byte_datagram_comes_back_whole() {
    let server = start_in_process(loopback_config());
    let u = udp_client(server.udp[0]);
    let msg = pattern(65_507, MAX_V4_DATAGRAM);
    let reply = exchange(&u, server.udp[0], &msg);
    assert_eq!(reply.len(), MAX_V4_DATAGRAM, "reply was cut short");
    assert!(reply == msg, "reply differs from the 65,507 bytes sent");
}

#[test]
fn a_zero_length_datagram_gets_a_zero_length_reply() {
    let server = start_in_process(loopback_config());
    let u = udp_client(server.udp[0]);
    assert_eq!(exchange(&u, server.udp[0], b""), b"");
    // The socket is still in business after the empty one.
    assert_eq!(exchange(&u, server.udp[0], b"after"), b"after");
    let stats = server.stop();
    assert_eq!((stats.udp_datagrams_in, stats.udp_datagrams_out), (2, 2));
}

#[test]
fn every_datagram_gets_exactly_one_reply_of_its_own() {
    let server = start_in_process(loopback_with(|c| {
        c.service = Arc::new(Mode::Upper);
    }));
    let u = udp_client(server.udp[0]);
    for i in 0..100u64 {
        let msg = pattern(i, 1 + (i as usize * 131) % 1400);
        let reply = exchange(&u, server.udp[0], &msg);
        assert!(reply == upper(&msg), "datagram {i}: wrong reply");
    }
    // No duplicate answers are left waiting.
    u.set_read_timeout(Some(std::time::Duration::from_millis(200)))
        .unwrap();
    let mut buf = [0u8; 2048];
    assert!(u.recv_from(&mut buf).is_err(), "an extra reply arrived");
    let stats = server.stop();
    assert_eq!(
        (stats.udp_datagrams_in, stats.udp_datagrams_out),
        (100, 100)
    );
}

#[test]
fn udp_over_ipv6_loopback_is_served_and_announced_with_brackets() {
    let server = start_server(&["--udp", "[::1]:0", "--mode", "upper"]);
    let addr = server.udp_addr();
    assert!(addr.is_ipv6() && addr.port() != 0, "announced {addr}");
    let u = udp_client(addr);
    assert_eq!(exchange(&u, addr, b"over v6"), b"OVER V6");
    server.stop();
}

#[test]
fn batched_path_answers_bursts_from_many_clients_one_reply_each() {
    let server = start_in_process(loopback_with(|c| {
        c.service = Arc::new(Mode::Upper);
        c.udp_batch = true;
    }));
    let addr = server.udp[0];
    let clients: Vec<UdpSocket> = (0..8).map(|_| udp_client(addr)).collect();
    // Bursts: every client sends all its datagrams before anyone reads, so
    // the server finds full batches waiting (empty ones included). Small
    // enough in total to fit the server's default receive buffer: UDP
    // would be right to drop an overflow. The largest datagram through a
    // batch slot is covered in udp_batch's own tests.
    let sizes = |c: usize| -> Vec<usize> { (0..8).map(|i| ((c + i) % 5) * 97).collect() };
    for (c, u) in clients.iter().enumerate() {
        for (i, &size) in sizes(c).iter().enumerate() {
            u.send_to(&pattern((c * 100 + i) as u64, size), addr)
                .expect("send datagram");
        }
    }
    let mut buf = vec![0u8; 65_536];
    for (c, u) in clients.iter().enumerate() {
        for (i, &size) in sizes(c).iter().enumerate() {
            let (n, from) = u
                .recv_from(&mut buf)
                .unwrap_or_else(|e| panic!("client {c} datagram {i}: no reply: {e}"));
            assert_eq!(from, addr);
            let want = upper(&pattern((c * 100 + i) as u64, size));
            assert!(buf[..n] == want[..], "client {c} datagram {i}: wrong reply");
        }
    }
    let stats = server.stop();
    assert_eq!((stats.udp_datagrams_in, stats.udp_datagrams_out), (64, 64));
}

#[test]
fn a_datagram_from_the_servers_own_port_on_another_address_is_dropped_and_counted() {
    // Another reflector on the same port (127.0.0.2:P against our
    // 127.0.0.1:P) would bounce each answer back forever: a socket bound
    // there stands in for it.
    let server = start_in_process(loopback_config());
    let addr = server.udp[0];
    let twin = UdpSocket::bind(("127.0.0.2", addr.port())).expect("bind 127.0.0.2 on the port");
    twin.set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    twin.send_to(b"ping", addr).expect("send");
    // The server still answers an ordinary client, so it has seen the
    // forged datagram (sent first) by the time this reply arrives.
    let u = udp_client(addr);
    assert_eq!(exchange(&u, addr, b"ordinary"), b"ordinary");
    let mut buf = [0u8; 64];
    assert!(
        twin.recv_from(&mut buf).is_err(),
        "the server answered its own port"
    );
    let stats = server.stop();
    assert_eq!(stats.udp_datagrams_in, 2, "{stats}");
    assert_eq!(stats.udp_datagrams_out, 1, "{stats}");
    assert_eq!(stats.udp_refused_ports, 1, "{stats}");
}

#[test]
fn datagrams_the_kernel_drops_before_the_server_reads_are_counted() {
    let mut server = start_server(&["--udp", "127.0.0.1:0", "--metrics", "127.0.0.1:0"]);
    let to = server.udp_addr();
    let u = udp_client(to);
    // Stopped, the server reads nothing: its receive buffer fills with a
    // few hundred datagrams and the kernel drops the rest.
    while_stopped(server.pid(), || {
        for _ in 0..3000 {
            u.send_to(&[b'x'; 64], to).expect("send");
        }
    });
    let metrics = server.metrics_addr();
    let scrape = |series: &str| -> Option<u64> {
        use std::io::{Read, Write};
        let mut s = connect(metrics);
        s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
            .ok()?;
        let mut text = String::new();
        s.read_to_string(&mut text).ok()?;
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.trim().parse().ok())
    };
    let dropped = "echo_reactor_udp_dropped_datagrams_total{reason=\"receive_buffer\"}";
    let received = "echo_reactor_udp_received_datagrams_total";
    // Woken, it reads what the kernel kept: every datagram is then either
    // received or dropped.
    let mut scraped = 0;
    let all_told = wait_until(IO_TIMEOUT, || {
        scraped = scrape(dropped).unwrap_or(0);
        scrape(received).unwrap_or(0) + scraped == 3000
    });
    assert!(all_told, "{scraped} dropped; {}", server.stderr());
    assert!((1000..3000).contains(&scraped), "{scraped}");
    server.signal(libc::SIGTERM);
    let stderr = server.final_stderr();
    let counted = final_stat(&stderr, "udp rcvbuf-dropped").expect("in the final stats");
    assert_eq!(counted, scraped, "{stderr}");
    // What was read was answered; what was dropped never reached it.
    let answered = final_stat(&stderr, "udp in").expect("udp in");
    assert_eq!(answered + counted, 3000, "{stderr}");
}
