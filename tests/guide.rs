//! The experiments of docs/GUIDE.md, checked against what the guide says
//! a student will see. Each test names its section. The commands the
//! guide prints for Lab 1 and sections 1, 2, 4 and 12 are run as printed
//! in tests/guide_commands.rs; the quoted trace lines of the half-close
//! (section 7) are checked in tests/trace.rs, the examples' round trips
//! and the chat room's bounds in tests/examples.rs, and the Chinese
//! edition's commands in tests/guide_commands.rs.
//!
//! Where the guide uses a tool (`ss`, `nc`), the test reads the same
//! kernel tables (/proc/net/tcp, /proc/PID/fdinfo) or plays the tool's part
//! with a socket, so only `perf` is optional: the syscall counts run when
//! `perf stat` can read the syscall tracepoints, and say so when not.

mod common;

use std::io::{BufRead, BufReader, ErrorKind, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;

/// Waits up to 5 s for `needle` in the server's stderr.
fn wait_log(server: &ServerProcess, needle: &str) {
    let seen = wait_until(Duration::from_secs(5), || server.stderr().contains(needle));
    assert!(seen, "no {needle:?} in the trace:\n{}", server.stderr());
}

/// TCP sockets whose local port is `port` and whose state is `state`
/// (/proc/net/tcp codes: 01 ESTABLISHED, 06 TIME_WAIT, 0A LISTEN), the
/// table `ss -tan` prints.
fn sockets_in_state(port: u16, state: &str) -> usize {
    std::fs::read_to_string("/proc/net/tcp")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            let local = f
                .get(1)
                .and_then(|a| a.rsplit_once(':'))
                .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
            local == Some(port) && f.get(3) == Some(&state)
        })
        .count()
}

/// The interest list of the process's epoll instance, as the kernel keeps
/// it (/proc/PID/fdinfo of the `anon_inode:[eventpoll]` descriptor): one
/// (fd, event mask, token) per registered source.
fn interest_list(pid: u32) -> Vec<(u32, u32, u64)> {
    let fds = std::fs::read_dir(format!("/proc/{pid}/fd")).expect("fd dir");
    let epoll_fd = fds
        .filter_map(Result::ok)
        .find(|e| {
            std::fs::read_link(e.path())
                .is_ok_and(|l| l.to_string_lossy() == "anon_inode:[eventpoll]")
        })
        .expect("an epoll descriptor")
        .file_name();
    let info =
        std::fs::read_to_string(format!("/proc/{pid}/fdinfo/{}", epoll_fd.to_string_lossy()))
            .expect("fdinfo");
    info.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            if f.first() != Some(&"tfd:") {
                return None;
            }
            Some((
                f.get(1)?.parse().ok()?,
                u32::from_str_radix(f.get(3)?, 16).ok()?,
                u64::from_str_radix(f.get(5)?, 16).ok()?,
            ))
        })
        .collect()
}

const EPOLLIN: u32 = 0x1;
const EPOLLOUT: u32 = 0x4;
const EPOLLRDHUP: u32 = 0x2000;
const EPOLLET: u32 = 0x8000_0000;

/// A writer on its own thread that sends `total` zero bytes (like
/// `head -c TOTAL /dev/zero | nc -N`), then half-closes; `sent` counts
/// what the kernel took. Ends early if a write stalls for `stall`.
fn push(
    s: &TcpStream,
    total: usize,
    stall: Duration,
) -> (Arc<AtomicU64>, std::thread::JoinHandle<()>) {
    let mut w = s.try_clone().expect("clone");
    w.set_write_timeout(Some(stall)).expect("timeout");
    let sent = Arc::new(AtomicU64::new(0));
    let counter = Arc::clone(&sent);
    let writer = std::thread::spawn(move || {
        let chunk = vec![0u8; 1 << 20];
        let mut left = total;
        while left > 0 {
            match w.write(&chunk[..left.min(chunk.len())]) {
                Ok(n) => {
                    left -= n;
                    counter.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => return, // stalled: the reader side stopped taking
            }
        }
        let _ = w.shutdown(Shutdown::Write);
    });
    (sent, writer)
}

/// Reads to EOF and counts (like `| wc -c`); a reset ends the count too.
fn count_to_eof(s: &mut TcpStream) -> u64 {
    let mut buf = vec![0u8; 1 << 20];
    let mut total = 0u64;
    loop {
        match s.read(&mut buf) {
            Ok(0) => return total,
            Ok(n) => total += n as u64,
            Err(e) if e.kind() == ErrorKind::Interrupted => {}
            Err(_) => return total,
        }
    }
}

/// Section 1: the second client of the blocking example is connected
/// (ESTABLISHED, its bytes in the kernel's receive queue) but not served.
#[test]
fn section_1_the_blocking_example_leaves_the_second_client_in_the_backlog() {
    let ex = start_example("blocking", &["127.0.0.1:0"]);
    let mut first = connect(ex.addr);
    assert_eq!(roundtrip(&mut first, b"hello"), b"HELLO");
    let mut second = connect(ex.addr);
    second.write_all(b"anyone?").expect("write");
    let port = ex.addr.port();
    let second_port = second.local_addr().expect("local").port();
    // ss -tn 'sport = :PORT': both ESTABLISHED on the server's side, and the
    // second one's 7 bytes wait in its Recv-Q: nobody has accepted it.
    let queued = wait_until(Duration::from_secs(5), || {
        tcp_queues(port, second_port).is_some_and(|(_, rx)| rx == 7)
    });
    assert!(queued, "the second client's bytes are not queued unread");
    assert_eq!(sockets_in_state(port, "01"), 2, "two ESTABLISHED");
    second
        .set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    assert!(second.read(&mut [0u8; 8]).is_err(), "served too early");
    drop(first);
    second.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let mut reply = [0u8; 7];
    second
        .read_exact(&mut reply)
        .expect("served after the first");
    assert_eq!(&reply, b"ANYONE?");
}

/// The bridge table: the server's side of a closed connection waits in
/// TIME_WAIT, which makes a bind without SO_REUSEADDR (Python's default)
/// fail with "Address already in use"; std sets the option, so the
/// example restarts on the same port at once.
#[test]
fn bridge_time_wait_blocks_a_plain_bind_but_not_a_restart() {
    let ex = start_example("blocking", &["127.0.0.1:0"]);
    let addr = ex.addr;
    let mut client = connect(addr);
    assert_eq!(roundtrip(&mut client, b"bye"), b"BYE");
    // Ctrl-C on the server: its side closes first, so its side waits.
    drop(ex);
    assert_eq!(count_to_eof(&mut client), 0, "EOF from the killed server");
    drop(client);
    assert!(
        wait_until(Duration::from_secs(5), || time_wait_count(addr.port()) > 0),
        "no TIME_WAIT on port {}",
        addr.port()
    );
    let plain =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    let err = plain
        .bind(&addr.into())
        .expect_err("a bind without SO_REUSEADDR succeeded during TIME_WAIT");
    assert_eq!(err.kind(), ErrorKind::AddrInUse, "{err}");
    let again = start_example("blocking", &[&addr.to_string()]);
    assert_eq!(again.addr, addr);
}

/// Sections 2 and "Watching it": the first event of a new connection is
/// `writable` alone, the drain ends on WouldBlock without the shortcut, an
/// idle server sleeps without a timeout and one with a connection wakes
/// for the once-a-second sweep.
#[test]
fn section_2_the_trace_shows_writable_first_and_the_drain_ending_on_would_block() {
    let server = start_traced_server(&["--short-read", "false"]);
    let mut s = connect(server.tcp_addr());
    wait_log(&server, "conn 0: registered READABLE | WRITABLE once");
    // Nothing sent yet: the registration alone reports the empty send buffer.
    let alone = wait_until(Duration::from_secs(5), || {
        server
            .stderr()
            .lines()
            .any(|l| l.ends_with("conn 0: event writable"))
    });
    assert!(
        alone,
        "no lone writable event after registering:\n{}",
        server.stderr()
    );
    assert_eq!(roundtrip(&mut s, b"hello\n"), b"hello\n");
    wait_log(&server, "conn 0: read would block, drain done");
    drop(s);
    let log = server.stop();
    let at = |needle: &str| {
        log.find(needle)
            .unwrap_or_else(|| panic!("no {needle:?} in:\n{log}"))
    };
    assert!(at("conn 0: read 6 B") < at("conn 0: wrote 6 B"));
    assert!(at("conn 0: wrote 6 B") < at("conn 0: read would block, drain done"));
    assert!(
        at("timeout was None") < at("conn 0: registered"),
        "idle: no timeout"
    );
    let sweep_ms: Vec<f64> = log
        .lines()
        .filter_map(|l| l.split_once("timeout was Some(")?.1.strip_suffix("ms)"))
        .filter_map(|v| v.parse().ok())
        .collect();
    assert!(
        !sweep_ms.is_empty() && sweep_ms.iter().all(|&ms| ms <= 1000.0),
        "with a connection open the poll waits at most 1 s: {sweep_ms:?}\n{log}"
    );
}

/// Section 3: the kernel's interest list holds the four fixed sources with
/// no WRITABLE, and each connection once, with WRITABLE, edge-triggered.
#[test]
fn section_3_each_connection_is_registered_once_with_both_interests() {
    let server = start_server(&[]);
    let fixed = interest_list(server.pid());
    assert_eq!(fixed.len(), 4, "listener, udp, signal, waker: {fixed:?}");
    for &(_, mask, _) in &fixed {
        assert_eq!(mask & (EPOLLIN | EPOLLOUT | EPOLLET), EPOLLIN | EPOLLET);
    }
    let mut clients: Vec<TcpStream> = (0..3).map(|_| connect(server.tcp_addr())).collect();
    for _ in 0..50 {
        for c in &mut clients {
            assert_eq!(roundtrip(c, b"ping"), b"ping");
        }
    }
    let all = interest_list(server.pid());
    let conns: Vec<_> = all.iter().filter(|e| !fixed.contains(e)).collect();
    assert_eq!(conns.len(), 3, "{all:?}");
    for &&(_, mask, token) in &conns {
        let want = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET;
        assert_eq!(mask & want, want, "token {token}: {mask:#x}");
        assert!(token < 3, "tokens are slab keys: {token}");
    }
    drop(clients);
    server.stop();
}

/// Runs `perf stat` on the server for `workload`; None when perf or its
/// syscall tracepoints are not available here.
fn perf_counts(
    server_args: &[&str],
    events: &[&str],
    workload: impl FnOnce(SocketAddr),
) -> Option<Vec<u64>> {
    let probe = Command::new("perf")
        .args([
            "stat",
            "-x,",
            "-e",
            "syscalls:sys_enter_sendto",
            "--",
            "true",
        ])
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&probe.stderr);
    if !probe.status.success() || !text.contains("sys_enter_sendto") || text.contains("<not") {
        return None;
    }
    let out = std::env::temp_dir().join(format!("guide-perf-{}.csv", std::process::id()));
    let mut child = Command::new("perf")
        .args(["stat", "-x,", "-o"])
        .arg(&out)
        .arg("-e")
        .arg(events.join(","))
        .arg("--")
        .arg(env!("CARGO_BIN_EXE_echo-reactor"))
        .args(["serve", "--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"])
        .args(server_args)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .process_group(0)
        .spawn()
        .ok()?;
    struct KillGroup(i32);
    impl Drop for KillGroup {
        fn drop(&mut self) {
            // SAFETY: kill(2) on the process group we created.
            unsafe { libc::kill(-self.0, libc::SIGKILL) };
        }
    }
    let group = KillGroup(child.id() as i32);
    let mut line = String::new();
    BufReader::new(child.stdout.take()?)
        .read_line(&mut line)
        .ok()?;
    let addr = line
        .trim()
        .strip_prefix("listening on tcp://")?
        .parse()
        .ok()?;
    workload(addr);
    // Ctrl-C, as in the guide: perf and the server both get SIGINT.
    // SAFETY: kill(2) on the process group we created.
    unsafe { libc::kill(-group.0, libc::SIGINT) };
    let deadline = Instant::now() + IO_TIMEOUT;
    while child.try_wait().ok()?.is_none() {
        assert!(Instant::now() < deadline, "perf did not end");
        std::thread::sleep(Duration::from_millis(10));
    }
    let csv = std::fs::read_to_string(&out).ok()?;
    let _ = std::fs::remove_file(&out);
    events
        .iter()
        .map(|ev| {
            csv.lines()
                .find(|l| l.split(',').nth(2) == Some(ev))
                .and_then(|l| l.split(',').next()?.parse().ok())
        })
        .collect()
}

/// Sections 3 and 9, counted without distortion by perf's syscall
/// tracepoints: `epoll_ctl` is 6 fixed calls plus one per connection,
/// whatever the number of messages; the short-read shortcut saves nearly
/// one `recvfrom` per message.
#[test]
fn sections_3_and_9_perf_counts_registrations_and_the_reads_the_shortcut_saves() {
    const CONNS: usize = 2;
    const TRIPS: u64 = 500;
    let events = [
        "syscalls:sys_enter_epoll_ctl",
        "syscalls:sys_enter_recvfrom",
        "syscalls:sys_enter_sendto",
    ];
    let workload = |addr| {
        for _ in 0..CONNS {
            let mut c = connect(addr);
            for _ in 0..TRIPS {
                assert_eq!(roundtrip(&mut c, b"ping"), b"ping");
                // A typing client's think time, not a wait for an event:
                // without it the scheduler often runs this thread between
                // the server's write and its extra read, which then finds
                // the next message (the guide's lesson on timing).
                std::thread::sleep(Duration::from_micros(200));
            }
        }
    };
    let Some(with) = perf_counts(&[], &events, workload) else {
        eprintln!("skipped: perf cannot count syscall tracepoints here");
        return;
    };
    let without = perf_counts(&["--short-read", "false"], &events, workload)
        .expect("perf worked a moment ago");
    let conns = CONNS as u64;
    let trips = conns * TRIPS;
    assert_eq!(with[0], 6 + conns, "epoll_ctl with the shortcut: {with:?}");
    assert_eq!(without[0], 6 + conns, "epoll_ctl without: {without:?}");
    // One sendto per message, and the signal handler's write to its pipe.
    for counts in [&with, &without] {
        assert!((trips..=trips + 2).contains(&counts[2]), "{counts:?}");
    }
    eprintln!("with the shortcut {with:?}, without {without:?}");
    // With it: one recvfrom per message, plus the EOF read of each close
    // and the signal pipe's at Ctrl-C.
    assert!(with[1] <= trips + 2 * conns + 4, "{with:?}");
    // Without it: the extra WouldBlock read after (nearly) every message.
    assert!(without[1] * 2 >= trips * 3, "{without:?}");
}

/// Section 4 and lab 2: the pipeline `head -c 50000000 /dev/zero | nc -N
/// ... | (sleep 2; wc -c)` against the server prints 50000000, with the
/// partial writes and backpressure turns in the trace and the unread input
/// in the server's Recv-Q; against the example it loses what it still owed
/// when the client's FIN came.
#[test]
fn section_4_the_pipeline_gets_every_byte_from_the_server_and_loses_some_from_the_example() {
    const TOTAL: usize = 50_000_000;
    let server = start_traced_server(&[]);
    let mut s = connect(server.tcp_addr());
    let (sent, writer) = push(&s, TOTAL, IO_TIMEOUT);
    // `sleep 2`: nobody reads until the server has stopped reading (its
    // output to us is stuck) and the writer's bytes pile up in its Recv-Q.
    let (local, remote) = (
        server.tcp_addr().port(),
        s.local_addr().expect("local").port(),
    );
    let unread = || tcp_queues(local, remote).map_or(0, |(_, rx)| rx);
    let stalled = wait_until(IO_TIMEOUT, || {
        server.paused_connections() == 1 && unread() > 0
    });
    assert!(
        stalled,
        "the server never paused reading with input unread: {} B sent, {} B in its Recv-Q; trace tail:\n{}",
        sent.load(Ordering::Relaxed),
        unread(),
        tail(&server.stderr(), 20)
    );
    assert_eq!(count_to_eof(&mut s), TOTAL as u64, "wc -c");
    writer.join().expect("writer");
    let log = server.stop();
    for needle in [
        "B the kernel refused",
        "conn 0: write would block, waiting for writable",
        "conn 0: backpressure: reading paused",
        "conn 0: reading resumed",
        "conn 0: read 0 B: peer half-closed",
    ] {
        assert!(log.contains(needle), "no {needle:?} in the trace");
    }

    let ex = start_example("reactor", &["127.0.0.1:0"]);
    let fds_before = fd_count(ex.pid());
    let mut s = connect(ex.addr);
    let (_, writer) = push(&s, TOTAL, IO_TIMEOUT);
    writer.join().expect("writer");
    // The example read the FIN and closed, dropping what it still owed.
    assert!(
        wait_until(IO_TIMEOUT, || fd_count(ex.pid()) == fds_before),
        "the example never closed the connection"
    );
    let got = count_to_eof(&mut s);
    assert!(got < TOTAL as u64, "the example returned all {got} bytes");
}

/// Lab 3: `reactor --read-once` reads 16 bytes per event and does not
/// drain; the rest of a line stays in the kernel (Recv-Q) and its reply
/// comes only when the client sends again.
#[test]
fn lab_3_a_reader_that_does_not_drain_leaves_bytes_behind() {
    let ex = start_example("reactor", &["127.0.0.1:0", "--read-once"]);
    let mut s = connect(ex.addr);
    let line = b"hello, edge-triggered world\n";
    s.write_all(line).expect("write");
    let mut first = [0u8; 16];
    s.read_exact(&mut first).expect("one read's reply");
    assert_eq!(&first, b"HELLO, EDGE-TRIG");
    let port = s.local_addr().expect("local").port();
    let left = wait_until(Duration::from_secs(5), || {
        tcp_queues(ex.addr.port(), port) == Some((0, 12))
    });
    assert!(
        left,
        "12 bytes should wait in the Recv-Q: {:?}",
        tcp_queues(ex.addr.port(), port)
    );
    s.set_read_timeout(Some(Duration::from_millis(300)))
        .expect("timeout");
    assert!(
        s.read(&mut [0u8; 16]).is_err(),
        "the rest came without a new edge"
    );
    s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    // Any new byte raises an edge: the old rest comes out with it.
    s.write_all(b"\n").expect("write");
    let mut rest = [0u8; 13];
    s.read_exact(&mut rest).expect("the rest");
    assert_eq!(&rest, b"GERED WORLD\n\n");
}

/// Section 6: while one client floods, a second one's round trips stay
/// quick, and the trace shows the budget and the ready list at work.
#[test]
fn section_6_a_second_client_is_served_during_a_flood() {
    let server = start_server(&[]);
    let flood = connect(server.tcp_addr());
    let (_, writer) = push(&flood, 1 << 30, Duration::from_secs(2));
    let mut reader = flood.try_clone().expect("clone");
    let sink = std::thread::spawn(move || count_to_eof(&mut reader));
    let mut other = connect(server.tcp_addr());
    let mut times: Vec<Duration> = (0..200)
        .map(|_| {
            let t = Instant::now();
            assert_eq!(roundtrip(&mut other, b"ping\n"), b"ping\n");
            t.elapsed()
        })
        .collect();
    times.sort();
    let p99 = times[times.len() * 99 / 100];
    // Measured on an idle machine: well under a millisecond. A server
    // without a budget would starve this client outright.
    assert!(p99 < Duration::from_millis(100), "p99 {p99:?}");
    flood.shutdown(Shutdown::Both).expect("end the flood");
    let _ = writer.join();
    let _ = sink.join();
    drop(other);
    drop(flood);
    server.stop();

    let server = start_traced_server(&[]);
    let flood = connect(server.tcp_addr());
    let (_, writer) = push(&flood, 1 << 30, Duration::from_secs(2));
    let mut reader = flood.try_clone().expect("clone");
    let sink = std::thread::spawn(move || count_to_eof(&mut reader));
    wait_log(&server, "conn 0: budget spent, yielding");
    wait_log(&server, "conn 0: its turn on the ready list");
    flood.shutdown(Shutdown::Both).expect("end the flood");
    let _ = writer.join();
    let _ = sink.join();
}

/// Section 8: keys are reused; the third connection after a close is
/// `conn 0` again.
#[test]
fn section_8_a_closed_key_is_given_to_the_next_connection() {
    let server = start_traced_server(&[]);
    let a = connect(server.tcp_addr());
    wait_log(&server, "conn 0: registered");
    let b = connect(server.tcp_addr());
    wait_log(&server, "conn 1: registered");
    drop(a);
    let closed = wait_until(Duration::from_secs(5), || {
        server
            .stderr()
            .lines()
            .any(|l| l.contains("conn 0 ") && l.contains(": closed: "))
    });
    assert!(closed, "conn 0 never closed:\n{}", server.stderr());
    let c = connect(server.tcp_addr());
    let reused = wait_until(Duration::from_secs(5), || {
        server.stderr().matches("conn 0: registered").count() == 2
    });
    assert!(reused, "the key was not reused:\n{}", server.stderr());
    drop((b, c));
}

/// Section 10: `--threads 2` puts two listening sockets on one port.
#[test]
fn section_10_two_loops_listen_on_one_port() {
    let argv: Vec<String> = ["serve", "--threads", "2", "--tcp", "127.0.0.1:0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let server = start_binary(&argv, None);
    let port = server.tcp_addr().port();
    assert_eq!(sockets_in_state(port, "0A"), 2, "two LISTEN sockets");
    server.stop();
}

/// "Watching it": plain `RUST_LOG=trace` adds mio's own lines, such as
/// each registration with its token and interests.
#[test]
fn watching_it_plain_trace_also_shows_mios_registrations() {
    let argv: Vec<String> = ["serve", "--tcp", "127.0.0.1:0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let server = start_binary_logged(&argv, None, Some("trace"));
    let s = connect(server.tcp_addr());
    wait_log(
        &server,
        "registering event source with poller: token=Token(0), interests=READABLE | WRITABLE",
    );
    drop(s);
    server.stop();
}

/// The variants of `ConnState`, read from the source at test time, so a
/// state added or renamed in the code fails this test until the pictures
/// follow.
fn conn_states_in_the_code() -> Vec<String> {
    let path = concat!(env!("CARGO_MANIFEST_DIR"), "/src/server/conn.rs");
    let source = std::fs::read_to_string(path).expect("src/server/conn.rs");
    let body = source
        .split_once("pub enum ConnState {")
        .and_then(|(_, rest)| rest.split_once('}'))
        .map(|(body, _)| body)
        .expect("pub enum ConnState { ... } in src/server/conn.rs");
    let mut states: Vec<String> = body
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("//") && !l.starts_with('#'))
        .map(|l| {
            l.split(|c: char| !c.is_alphanumeric() && c != '_')
                .next()
                .unwrap_or_default()
                .to_string()
        })
        .collect();
    states.sort();
    states
}

/// The states a picture names: its `<text class="state">` elements.
fn states_in_the_picture(path: &str) -> Vec<String> {
    let svg = std::fs::read_to_string(format!("{}/{path}", env!("CARGO_MANIFEST_DIR")))
        .unwrap_or_else(|e| panic!("{path}: {e}"));
    let mut states: Vec<String> = svg
        .split("<text class=\"state\"")
        .skip(1)
        .filter_map(|rest| {
            rest.split_once('>')?
                .1
                .split_once('<')
                .map(|(s, _)| s.trim().to_string())
        })
        .collect();
    states.sort();
    states
}

/// Section 7's picture, in both editions, names exactly the connection
/// states of the code.
#[test]
fn the_states_picture_names_exactly_the_states_of_the_code() {
    let code = conn_states_in_the_code();
    assert!(code.contains(&"Open".to_string()), "{code:?}");
    for picture in ["docs/states.svg", "docs/zh/states.svg"] {
        assert_eq!(
            states_in_the_picture(picture),
            code,
            "{picture} does not name the states of ConnState in src/server/conn.rs"
        );
    }
}
