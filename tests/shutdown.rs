//! Stopping and starting again: SIGTERM and SIGINT under load end in exit 0
//! within the shutdown timeout, an in-process stop flushes what is pending,
//! and a restart on the same port works while the old connections sit in
//! TIME_WAIT.

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

use common::*;
use echo_reactor::Watermarks;

/// Opens `conns` connections and keeps each busy with verified round trips
/// from a few threads until the server goes away; then checks the server
/// exits 0 within the shutdown timeout (1 s), the linger (1 s) and a
/// margin of `signal`. Clients that never stop sending are served until
/// the deadline, then cut with FIN and counted as forced.
fn busy_server_exits_cleanly_on(signal: i32, name: &str) {
    const CONNS: usize = 100;
    const THREADS: usize = 4;
    let mut server = start_server(&["--shutdown-timeout", "1"]);
    let addr = server.tcp_addr();
    let trips = Arc::new(AtomicU64::new(0));
    let gone = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..THREADS)
        .map(|t| {
            let conns: Vec<TcpStream> = (0..CONNS / THREADS).map(|_| connect(addr)).collect();
            let (trips, gone) = (Arc::clone(&trips), Arc::clone(&gone));
            thread::spawn(move || {
                let msg = pattern(t as u64, 4096);
                let mut reply = vec![0u8; msg.len()];
                // Round-robin until the server closes on us (EOF, reset or
                // broken pipe): that is how a busy client learns of a stop.
                for n in 0.. {
                    let mut s = &conns[n % conns.len()];
                    if s.write_all(&msg).is_err() || s.read_exact(&mut reply).is_err() {
                        break;
                    }
                    assert!(reply == msg, "thread {t}: corrupted reply before the stop");
                    trips.fetch_add(1, Ordering::SeqCst);
                    if gone.load(Ordering::SeqCst) {
                        break;
                    }
                }
            })
        })
        .collect();
    // Every connection has been served a few times: the server is busy.
    assert!(wait_until(IO_TIMEOUT, || trips.load(Ordering::SeqCst)
        >= 5 * CONNS as u64));
    let signalled = Instant::now();
    server.signal(signal);
    let status = server.wait_timeout(Duration::from_secs(5));
    let took = signalled.elapsed();
    gone.store(true, Ordering::SeqCst);
    let stderr = server.final_stderr();
    assert!(
        status.is_some_and(|s| s.success()),
        "after {name} with {CONNS} busy connections: {status:?} after {took:?}; stderr:\n{stderr}"
    );
    for w in workers {
        w.join().expect("client thread");
    }
    assert!(
        stderr.contains(&format!("shutdown begun ({name})")),
        "{stderr}"
    );
    assert_eq!(
        final_stat(&stderr, "accepted"),
        Some(CONNS as u64),
        "{stderr}"
    );
    assert_eq!(
        final_stat(&stderr, "closed"),
        Some(CONNS as u64),
        "{stderr}"
    );
}

#[test]
fn sigterm_with_100_busy_connections_exits_0_soon_after_the_shutdown_timeout() {
    busy_server_exits_cleanly_on(libc::SIGTERM, "SIGTERM");
}

#[test]
fn sigint_with_100_busy_connections_exits_0_soon_after_the_shutdown_timeout() {
    busy_server_exits_cleanly_on(libc::SIGINT, "SIGINT");
}

#[test]
fn stop_flushes_pending_output_to_a_client_that_reads_late() {
    const TOTAL: usize = 8 * 1024 * 1024;
    // A high watermark lets the server read all the input into pending
    // output while the client is not reading, so the stop finds megabytes
    // owed and nothing unread.
    let server = start_in_process(loopback_with(|c| {
        c.watermarks = Watermarks::with_high(2 * TOTAL);
    }));
    let mut s = connect(server.tcp[0]);
    let sent = pattern(8, TOTAL);
    s.write_all(&sent).expect("send");
    let (server_port, client_port) = (server.tcp[0].port(), s.local_addr().unwrap().port());
    assert!(
        wait_until(IO_TIMEOUT, || {
            tcp_queues(server_port, client_port).is_some_and(|(_, unread)| unread == 0)
        }),
        "the server never read all the input"
    );
    let stopper = thread::spawn(move || server.stop());
    let mut got = Vec::new();
    let outcome = s.read_to_end(&mut got);
    let stats = stopper.join().unwrap();
    assert!(
        outcome.is_ok(),
        "{outcome:?} instead of FIN after {} B; {stats}",
        got.len()
    );
    assert_eq!(got.len(), TOTAL, "bytes before the FIN; {stats}");
    assert!(got == sent, "the flushed output differs from the input");
    assert_eq!(stats.tcp_forced_closes, 0, "{stats}");
}

#[test]
fn restart_on_the_same_port_works_while_old_connections_sit_in_time_wait() {
    let first = start_server(&["--tcp", "127.0.0.1:0"]);
    let addr = first.tcp_addr();
    let mut clients: Vec<TcpStream> = (0..20).map(|_| connect(addr)).collect();
    for s in &mut clients {
        assert_eq!(roundtrip(s, b"before"), b"before");
    }
    // The server closes first, so its side of each connection ends in
    // TIME_WAIT once the client closes too.
    first.stop();
    for mut s in clients {
        let mut rest = Vec::new();
        s.read_to_end(&mut rest)
            .expect("FIN from the stopping server");
    }
    assert!(
        wait_until(IO_TIMEOUT, || time_wait_count(addr.port()) > 0),
        "no TIME_WAIT socket on port {} to prove the point",
        addr.port()
    );
    let port = addr.to_string();
    let second = start_server(&["--tcp", &port]);
    assert_eq!(second.tcp_addr(), addr);
    assert!(time_wait_count(addr.port()) > 0, "TIME_WAIT gone too soon");
    let mut s = connect(addr);
    assert_eq!(roundtrip(&mut s, b"after"), b"after");
    drop(s);
    second.stop();
}

/// Writes `data` from a thread, then half-closes; returns the thread.
fn send_then_half_close(s: &TcpStream, data: Vec<u8>) -> thread::JoinHandle<std::io::Result<()>> {
    let mut w = s.try_clone().expect("clone");
    thread::spawn(move || {
        w.write_all(&data)?;
        w.shutdown(std::net::Shutdown::Write)
    })
}

#[test]
fn sigterm_still_echoes_the_whole_stream_of_clients_that_finish_sending_during_the_drain() {
    // Clients still handing their stream over when SIGTERM lands: the
    // server must keep reading, echo every byte, then FIN. Before, the
    // drain stopped reading and the close with unread input reset them
    // after about a megabyte.
    const CLIENTS: usize = 4;
    const TOTAL: usize = 4 << 20;
    let mut server = start_server(&["--tcp", "127.0.0.1:0", "--shutdown-timeout", "20"]);
    let addr = server.tcp_addr();
    let streams: Vec<TcpStream> = (0..CLIENTS).map(|_| connect(addr)).collect();
    let sent: Vec<Vec<u8>> = (0..CLIENTS)
        .map(|i| pattern(40 + i as u64, TOTAL))
        .collect();
    let writers: Vec<_> = streams
        .iter()
        .zip(&sent)
        .map(|(s, data)| send_then_half_close(s, data.clone()))
        .collect();
    // Each client has its echo flowing, and reads no more for now, so
    // output is owed and input is waiting when the signal comes.
    let mut got: Vec<Vec<u8>> = vec![vec![0u8; 64 * 1024]; CLIENTS];
    for (s, buf) in streams.iter().zip(got.iter_mut()) {
        (&mut &*s).read_exact(buf).expect("first echo");
    }
    server.signal(libc::SIGTERM);
    assert!(
        wait_until(IO_TIMEOUT, || server.stderr().contains("shutdown begun")),
        "{}",
        server.stderr()
    );
    for (i, (s, buf)) in streams.iter().zip(got.iter_mut()).enumerate() {
        let outcome = (&mut &*s).read_to_end(buf);
        assert!(
            outcome.is_ok(),
            "client {i}: {outcome:?} after {} B instead of FIN; stderr:\n{}",
            buf.len(),
            server.stderr()
        );
        assert_eq!(buf.len(), TOTAL, "client {i}: echo length before FIN");
        assert!(
            *buf == sent[i],
            "client {i}: the echo differs from the stream"
        );
    }
    for w in writers {
        w.join()
            .expect("writer")
            .expect("the whole stream was sent");
    }
    let status = server.wait_timeout(IO_TIMEOUT);
    let stderr = server.final_stderr();
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{stderr}");
    assert_eq!(final_stat(&stderr, "forced"), Some(0), "{stderr}");
    assert_eq!(
        final_stat(&stderr, "out"),
        Some((CLIENTS * TOTAL) as u64),
        "{stderr}"
    );
}

#[test]
fn a_client_still_sending_at_the_deadline_gets_a_prefix_then_fin_and_is_counted_as_cut() {
    client_still_sending_at_the_deadline(&[]);
}

#[test]
fn a_short_idle_timeout_does_not_cut_short_the_linger_of_a_connection_cut_at_the_deadline() {
    // The linger drops input without counting it as activity; the idle
    // sweep must leave such a connection to the drain, or it would be
    // counted idle instead of forced and closed with a reset.
    client_still_sending_at_the_deadline(&["--idle-timeout", "0.1"]);
}

/// A client that never stops sending, read as fast as possible, when
/// SIGTERM comes with `--shutdown-timeout 0.5` (and `extra` flags).
fn client_still_sending_at_the_deadline(extra: &[&str]) {
    let mut args = vec!["--tcp", "127.0.0.1:0", "--shutdown-timeout", "0.5"];
    args.extend_from_slice(extra);
    let mut server = start_server(&args);
    let s = connect(server.tcp_addr());
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let mut w = s.try_clone().expect("clone");
        let stop = Arc::clone(&stop);
        thread::spawn(move || {
            let chunk = pattern(7, 64 * 1024);
            // Sends the same chunk over and over until the server is gone.
            while !stop.load(Ordering::SeqCst) && w.write_all(&chunk).is_ok() {}
        })
    };
    let chunk = pattern(7, 64 * 1024);
    let mut buf = vec![0u8; 64 * 1024];
    (&mut &s).read_exact(&mut buf).expect("first echo");
    assert!(buf == chunk);
    server.signal(libc::SIGTERM);
    // Read as fast as possible: a verified prefix, then a clean FIN.
    let mut total = buf.len();
    let end = loop {
        match (&mut &s).read(&mut buf) {
            Ok(0) => break Ok(()),
            Ok(n) => {
                for (j, b) in buf[..n].iter().enumerate() {
                    assert_eq!(*b, chunk[(total + j) % chunk.len()], "byte {}", total + j);
                }
                total += n;
            }
            Err(e) => break Err(e),
        }
    };
    // The writer keeps sending through the linger, as a client that has
    // not noticed the FIN would, until the server is gone.
    let status = server.wait_timeout(IO_TIMEOUT);
    stop.store(true, Ordering::SeqCst);
    drop(s);
    writer.join().expect("writer");
    let stderr = server.final_stderr();
    assert!(
        end.is_ok(),
        "{end:?} after {total} B instead of FIN\n{stderr}"
    );
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{stderr}");
    assert_eq!(final_stat(&stderr, "forced"), Some(1), "{stderr}");
    assert_eq!(final_stat(&stderr, "idle"), Some(0), "{stderr}");
    assert!(
        stderr.contains("drain deadline passed: cut 1 connections"),
        "{stderr}"
    );
    assert!(
        stderr.contains("connections cut by the deadline"),
        "{stderr}"
    );
}

#[test]
fn an_idle_server_stops_as_soon_as_its_clients_close_after_its_fin() {
    let mut server = start_server(&["--tcp", "127.0.0.1:0", "--shutdown-timeout", "30"]);
    let mut clients: Vec<TcpStream> = (0..50).map(|_| connect(server.tcp_addr())).collect();
    for c in &mut clients {
        assert_eq!(roundtrip(c, b"ping\n"), b"ping\n");
    }
    // Clients as they are written: at EOF they close.
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut c| {
            thread::spawn(move || {
                let mut rest = Vec::new();
                let end = c.read_to_end(&mut rest);
                (end.is_ok(), rest.is_empty())
            })
        })
        .collect();
    let signalled = Instant::now();
    server.signal(libc::SIGTERM);
    let status = server.wait_timeout(IO_TIMEOUT);
    let took = signalled.elapsed();
    let stderr = server.final_stderr();
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{stderr}");
    // Quiet for a few round trips and retransmission timeouts, then FIN.
    assert!(took < Duration::from_secs(1), "took {took:?}\n{stderr}");
    assert_eq!(final_stat(&stderr, "forced"), Some(0), "{stderr}");
    assert_eq!(final_stat(&stderr, "cut"), Some(0), "{stderr}");
    for r in readers {
        assert_eq!(r.join().expect("reader"), (true, true), "FIN, not a reset");
    }
}

#[test]
fn a_request_that_crosses_the_fin_of_a_close_at_rest_meets_eof_and_is_counted() {
    // A client that thinks longer than the rest rule waits is taken for
    // done; its next request must neither vanish unseen nor meet a reset.
    let mut server = start_server(&["--tcp", "127.0.0.1:0", "--shutdown-timeout", "30"]);
    let mut c = connect(server.tcp_addr());
    assert_eq!(roundtrip(&mut c, b"first\n"), b"first\n");
    server.signal(libc::SIGTERM);
    assert!(
        wait_until(IO_TIMEOUT, || server.stderr().contains("shutdown begun")),
        "{}",
        server.stderr()
    );
    // Think time past the rest rule (about 0.4 s here), before our FIN
    // is read.
    thread::sleep(Duration::from_millis(700));
    let _ = c.write_all(b"second\n");
    let mut rest = Vec::new();
    let end = c.read_to_end(&mut rest);
    assert!(end.is_ok(), "EOF, not a reset: {end:?}");
    assert!(rest.is_empty(), "no answer after the FIN");
    let status = server.wait_timeout(IO_TIMEOUT);
    let stderr = server.final_stderr();
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{stderr}");
    assert_eq!(
        final_stat(&stderr, "cut"),
        Some(7),
        "the request counted\n{stderr}"
    );
    assert_eq!(final_stat(&stderr, "forced"), Some(0), "{stderr}");
}

#[test]
fn a_peer_that_resets_while_lingering_leaves_out_as_what_it_got() {
    // Clients that push and never read, cut at the deadline, then close
    // with unread data (a reset) while the server lingers: the kernel
    // throws the server's unacknowledged output away, and `out` must not
    // count it as delivered.
    const CLIENTS: usize = 3;
    let mut server = start_server(&["--tcp", "127.0.0.1:0", "--shutdown-timeout", "0.3"]);
    let addr = server.tcp_addr();
    let clients: Vec<(TcpStream, thread::JoinHandle<()>)> = (0..CLIENTS)
        .map(|i| {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
            socket.connect(&addr.into()).expect("connect");
            let s: TcpStream = socket.into();
            let mut w = s.try_clone().expect("clone");
            let chunk = pattern(80 + i as u64, 64 * 1024);
            let writer = thread::spawn(move || while w.write_all(&chunk).is_ok() {});
            (s, writer)
        })
        .collect();
    thread::sleep(Duration::from_millis(500));
    server.signal(libc::SIGTERM);
    assert!(
        wait_until(IO_TIMEOUT, || server
            .stderr()
            .contains("drain deadline passed")),
        "{}",
        server.stderr()
    );
    // Closing with the echo unread: a reset, during the linger.
    let mut got = 0usize;
    for (s, writer) in clients {
        got += s.take_error().map_or(0, |_| 0);
        let _ = s.shutdown(std::net::Shutdown::Both);
        drop(s);
        writer.join().expect("writer");
    }
    let status = server.wait_timeout(IO_TIMEOUT);
    let stderr = server.final_stderr();
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{stderr}");
    let stat = |key| final_stat(&stderr, key).unwrap_or_else(|| panic!("{key}: {stderr}"));
    // What could have reached them: their receive buffers, a few KiB each.
    assert!(
        stat("out") <= (got + CLIENTS * 64 * 1024) as u64,
        "out {} B counted as delivered to clients that read nothing\n{stderr}",
        stat("out")
    );
    assert_eq!(stat("in"), stat("out") + stat("cut"), "{stderr}");
}

#[test]
fn what_a_cut_throws_away_is_counted_so_bytes_in_never_exceed_out_plus_cut() {
    // A client that pushes 16 MiB and never reads its echo: at the
    // deadline most of its stream is still unanswered. Every byte the
    // server read must show up as sent or as cut, never vanish.
    const TOTAL: usize = 16 << 20;
    let mut server = start_server(&["--tcp", "127.0.0.1:0", "--shutdown-timeout", "0.5"]);
    let s = connect(server.tcp_addr());
    let writer = send_then_half_close(&s, pattern(9, TOTAL));
    let (server_port, client_port) = (server.tcp_addr().port(), s.local_addr().unwrap().port());
    // The server has stopped reading (its output is stuck): input waits.
    assert!(
        wait_until(IO_TIMEOUT, || {
            tcp_queues(server_port, client_port).is_some_and(|(_, unread)| unread > 0)
        }),
        "the server never fell behind"
    );
    server.signal(libc::SIGTERM);
    // The linger reads and drops the rest, so the writer gets through.
    writer
        .join()
        .expect("writer")
        .expect("the whole stream was sent");
    let status = server.wait_timeout(IO_TIMEOUT);
    let stderr = server.final_stderr();
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{stderr}");
    let stat = |key| final_stat(&stderr, key).unwrap_or_else(|| panic!("{key}: {stderr}"));
    let (read, sent, cut) = (stat("in"), stat("out"), stat("cut"));
    assert_eq!(stat("forced"), 1, "{stderr}");
    assert!(
        read <= sent + cut,
        "in {read} > out {sent} + cut {cut}\n{stderr}"
    );
    assert!(cut > 0, "{stderr}");
    drop(s);
}

/// Five clients with 128 KiB receive buffers that read 4 KiB a second and
/// never stop sending, when the server is stopped with
/// `--shutdown-timeout 1` by one signal or two. Once it is gone, each
/// client reads what reached it; the server's `out` must be exactly what
/// the clients got, and `in` exactly `out + cut`: nothing thrown away goes
/// uncounted, nothing counted as delivered was thrown away.
fn the_cut_counts_exactly_what_slow_readers_did_not_get(signals: usize) {
    const CLIENTS: usize = 5;
    let mut server = start_server(&["--tcp", "127.0.0.1:0", "--shutdown-timeout", "1"]);
    let addr = server.tcp_addr();
    let gone = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..CLIENTS)
        .map(|i| {
            let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
                .expect("socket");
            socket.set_recv_buffer_size(64 * 1024).expect("SO_RCVBUF");
            socket.connect(&addr.into()).expect("connect");
            let s: TcpStream = socket.into();
            let chunk = pattern(60 + i as u64, 4096);
            let writer = {
                let mut w = s.try_clone().expect("clone");
                let chunk = chunk.clone();
                thread::spawn(move || while w.write_all(&chunk).is_ok() {})
            };
            let reader = {
                let mut r = s.try_clone().expect("clone");
                let gone = Arc::clone(&gone);
                thread::spawn(move || {
                    let mut got = 0usize;
                    let mut buf = vec![0u8; 4096];
                    loop {
                        // 4 KiB a second until the server is gone, then
                        // whatever the kernel holds, as fast as it comes.
                        let want = if gone.load(Ordering::SeqCst) {
                            buf.len()
                        } else {
                            4096
                        };
                        match r.read(&mut buf[..want]) {
                            Ok(0) | Err(_) => return got as u64,
                            Ok(n) => {
                                for (j, b) in buf[..n].iter().enumerate() {
                                    assert_eq!(
                                        *b,
                                        chunk[(got + j) % chunk.len()],
                                        "byte {}",
                                        got + j
                                    );
                                }
                                got += n;
                            }
                        }
                        if !gone.load(Ordering::SeqCst) {
                            thread::sleep(Duration::from_secs(1));
                        }
                    }
                })
            };
            (s, writer, reader)
        })
        .collect();
    // Let output back up in every direction before the signal.
    thread::sleep(Duration::from_secs(2));
    for _ in 0..signals {
        server.signal(libc::SIGTERM);
        assert!(
            wait_until(IO_TIMEOUT, || server.stderr().contains("shutdown begun")),
            "{}",
            server.stderr()
        );
    }
    let status = server.wait_timeout(IO_TIMEOUT);
    gone.store(true, Ordering::SeqCst);
    let stderr = server.final_stderr();
    assert!(status.is_some_and(|s| s.success()), "{status:?}\n{stderr}");
    let mut received = 0;
    for (s, writer, reader) in clients {
        received += reader.join().expect("reader");
        drop(s);
        writer.join().expect("writer");
    }
    let stat = |key| final_stat(&stderr, key).unwrap_or_else(|| panic!("{key}: {stderr}"));
    let (read, sent, cut) = (stat("in"), stat("out"), stat("cut"));
    assert_eq!(stat("forced"), CLIENTS as u64, "{stderr}");
    assert_eq!(read, sent + cut, "in = out + cut\n{stderr}");
    assert_eq!(
        sent, received,
        "out must be what the clients got ({received} B)\n{stderr}"
    );
}

#[test]
fn the_deadline_cut_counts_exactly_what_slow_readers_did_not_get() {
    the_cut_counts_exactly_what_slow_readers_did_not_get(1);
}

#[test]
fn a_second_signal_counts_exactly_what_slow_readers_did_not_get() {
    the_cut_counts_exactly_what_slow_readers_did_not_get(2);
}
