//! Hostile clients and hard limits, black-box against the real
//! binary: the connection cap, descriptor exhaustion, clients that never
//! read, idle and write timeouts, floods, connect/reset churn, UDP abuse.
//!
//! Each test is bounded in time and count and talks only to loopback.
//! Figures that depend on a loaded machine (CPU, latency) are asserted
//! leniently, but a busy loop or a starved client still fails them.

mod common;

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use common::*;

/// Tests that load the machine (floods, churn) or measure timing or CPU
/// take turns: on a 2-core box, one's flood is another's latency spike.
static HEAVY: Mutex<()> = Mutex::new(());

fn heavy() -> MutexGuard<'static, ()> {
    // A failed test poisons the lock; the others still get their turn.
    HEAVY.lock().unwrap_or_else(|e| e.into_inner())
}

/// The final statistics line from a stopped server's stderr.
fn final_stats(stderr: &str) -> String {
    stderr
        .lines()
        .rev()
        .find(|l| l.contains("final stats"))
        .unwrap_or_else(|| panic!("no final stats line; stderr:\n{stderr}"))
        .to_string()
}

/// Waits up to `limit` for the peer to end the stream (EOF or reset);
/// true if it did.
fn sees_end_of_stream(s: &mut TcpStream, limit: Duration) -> bool {
    s.set_read_timeout(Some(limit)).unwrap();
    let mut buf = [0u8; 64];
    loop {
        match s.read(&mut buf) {
            Ok(0) => return true,
            Ok(_) => continue,
            Err(e) if e.kind() == ErrorKind::ConnectionReset => return true,
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(_) => return false,
        }
    }
}

/// Round-trip times of `n` small messages on a fresh connection, sorted.
fn round_trips(addr: SocketAddr, n: usize) -> Vec<Duration> {
    let mut s = connect(addr);
    let mut times: Vec<Duration> = (0..n)
        .map(|i| {
            let msg = format!("probe {i:06}\n");
            let t = Instant::now();
            assert_eq!(roundtrip(&mut s, msg.as_bytes()), msg.as_bytes());
            t.elapsed()
        })
        .collect();
    times.sort();
    times
}

/// Round trips due every `interval`, open loop: each latency counts from
/// when the probe was due, not when it was finally sent, so a stall delays
/// every probe that fell due during it instead of hiding behind one slow
/// reply (coordinated omission). Sorted.
fn paced_round_trips(addr: SocketAddr, interval: Duration, n: u32) -> Vec<Duration> {
    let mut s = connect(addr);
    let start = Instant::now();
    let mut times: Vec<Duration> = (0..n)
        .map(|i| {
            let due = start + interval * i;
            // Pacing the probes is the measurement, not a synchronisation.
            std::thread::sleep(due.saturating_duration_since(Instant::now()));
            let msg = format!("probe {i:06}\n");
            assert_eq!(roundtrip(&mut s, msg.as_bytes()), msg.as_bytes());
            due.elapsed()
        })
        .collect();
    times.sort();
    times
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

/// Voluntary context switches of the process's main thread: each is one
/// time the loop blocked in `poll` and was woken.
fn main_thread_wakeups(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .and_then(|v| v.trim().parse().ok())
        .expect("voluntary_ctxt_switches in /proc status")
}

/// The timeout in ms (-1: none) of the `epoll_wait` the process's main
/// thread is blocked in, from /proc/PID/task/PID/syscall; `None` while it
/// is anywhere else.
fn epoll_wait_timeout(pid: u32) -> Option<i32> {
    let call = std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/syscall")).ok()?;
    let fields: Vec<&str> = call.split_whitespace().collect();
    let number: libc::c_long = fields.first()?.parse().ok()?;
    #[cfg(target_arch = "x86_64")]
    let waits = [libc::SYS_epoll_wait, libc::SYS_epoll_pwait];
    #[cfg(not(target_arch = "x86_64"))]
    let waits = [libc::SYS_epoll_pwait];
    if !waits.contains(&number) {
        return None;
    }
    // epoll_wait(epfd, events, maxevents, timeout): the fourth argument.
    let timeout = u64::from_str_radix(fields.get(4)?.trim_start_matches("0x"), 16).ok()?;
    Some(timeout as i32)
}

fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf only reads a configuration value.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    u64::try_from(hz).unwrap_or(100)
}

/// CPU the process used over `window`, as a fraction of one core.
fn cpu_share(pid: u32, window: Duration) -> f64 {
    let before = cpu_ticks(pid);
    std::thread::sleep(window); // the measuring window itself, not a sync
    let used = cpu_ticks(pid) - before;
    used as f64 / clock_ticks_per_sec() as f64 / window.as_secs_f64()
}

/// A writer thread that pushes up to `total` bytes and never reads, until
/// told to stop; returns the bytes it got into the socket and the error
/// that ended it, if any.
fn never_reading_pusher(
    addr: SocketAddr,
    total: usize,
    stop: Arc<AtomicBool>,
    pushed: Arc<AtomicU64>,
) -> std::thread::JoinHandle<Option<ErrorKind>> {
    let mut s = connect(addr);
    s.set_write_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    std::thread::spawn(move || {
        let chunk = vec![b'x'; 64 * 1024];
        let mut sent = 0;
        while sent < total && !stop.load(Ordering::Relaxed) {
            match s.write(&chunk[..chunk.len().min(total - sent)]) {
                Ok(n) => {
                    sent += n;
                    pushed.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Some(e.kind()),
            }
        }
        // Keep the socket open (and unread) until the test says stop.
        while !stop.load(Ordering::Relaxed) {
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    })
}

#[test]
fn a_client_beyond_the_cap_that_spoke_before_it_was_accepted_reads_eof_not_a_reset() {
    let server = start_server(&["--max-connections", "1"]);
    let addr = server.tcp_addr();
    let mut held = connect(addr);
    assert_eq!(roundtrip(&mut held, b"in\n"), b"in\n");
    // Stopped, the server cannot accept: the kernel completes the
    // handshake and queues the request, so it is there when the server
    // takes the connection and turns it away.
    let pid = server.pid().to_string();
    let signal = |sig: &str| {
        let ok = std::process::Command::new("kill")
            .args([sig, &pid])
            .status()
            .map(|s| s.success());
        assert!(matches!(ok, Ok(true)), "kill {sig} {pid}");
    };
    signal("-STOP");
    let mut extra = connect(addr);
    extra.write_all(b"hello, is anyone there?\n").unwrap();
    signal("-CONT");
    extra
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let mut buf = [0u8; 64];
    let end = extra.read(&mut buf);
    assert!(
        matches!(end, Ok(0)),
        "the rejected client read {end:?}, not EOF; stderr:\n{}",
        server.stderr()
    );
    assert_eq!(roundtrip(&mut held, b"still\n"), b"still\n");
    let stats = final_stats(&server.stop());
    assert!(stats.contains("rejected 1"), "{stats}");
}

#[test]
fn connection_beyond_the_cap_sees_eof_at_once_and_others_keep_echoing() {
    let server = start_server(&["--max-connections", "3"]);
    let addr = server.tcp_addr();
    let mut open: Vec<TcpStream> = (0..3).map(|_| connect(addr)).collect();
    for s in &mut open {
        assert_eq!(roundtrip(s, b"in\n"), b"in\n");
    }
    for i in 0..5 {
        let mut extra = connect(addr);
        let t = Instant::now();
        assert!(
            sees_end_of_stream(&mut extra, Duration::from_secs(5)),
            "client {i} beyond the cap got no EOF; stderr:\n{}",
            server.stderr()
        );
        assert!(
            t.elapsed() < Duration::from_secs(1),
            "EOF took {:?}",
            t.elapsed()
        );
    }
    for s in &mut open {
        assert_eq!(roundtrip(s, b"still here\n"), b"still here\n");
    }
    // One closes: a new client is served again.
    drop(open.pop());
    let served = wait_until(Duration::from_secs(10), || {
        let mut s = connect(addr);
        s.write_all(b"again\n").is_ok() && {
            let mut reply = [0u8; 6];
            s.read_exact(&mut reply).is_ok() && &reply == b"again\n"
        }
    });
    assert!(served, "no new connection served after one closed");
    let stderr = server.stop();
    assert_eq!(
        stderr.matches("connection cap reached").count(),
        1,
        "one warning per episode; stderr:\n{stderr}"
    );
    let stats = final_stats(&stderr);
    assert!(stats.contains("rejected 5"), "{stats}");
}

#[test]
fn fd_exhaustion_pauses_accepting_without_spinning_and_resumes_by_itself() {
    let _turn = heavy();
    let argv: Vec<String> = [
        "serve",
        "--tcp",
        "127.0.0.1:0",
        // Above the descriptor limit, so EMFILE comes before the cap.
        "--max-connections",
        "1000",
    ]
    .map(String::from)
    .to_vec();
    let server = start_binary(&argv, Some(&["prlimit", "--nofile=64", "--"]));
    let addr = server.tcp_addr();
    let mut first = connect(addr);
    assert_eq!(roundtrip(&mut first, b"first\n"), b"first\n");
    // 80 more than the server can hold: the rest wait in the backlog.
    let mut clients: Vec<TcpStream> = (0..80).map(|_| connect(addr)).collect();
    let exhausted = wait_until(Duration::from_secs(10), || {
        server.stderr().contains("out of file descriptors")
    });
    assert!(exhausted, "no EMFILE warning; stderr:\n{}", server.stderr());

    // The backlog stays full: the loop must sleep, not spin on accept.
    let cpu = cpu_share(server.pid(), Duration::from_secs(2));
    eprintln!("fd exhaustion: {:.1}% of a core while paused", cpu * 100.0);
    assert!(
        cpu < 0.2,
        "server used {:.0}% of a core while paused",
        cpu * 100.0
    );
    assert_eq!(roundtrip(&mut first, b"still served\n"), b"still served\n");

    // Free descriptors: the waiting clients are accepted with no new connect.
    clients.drain(..30);
    let last = clients.last_mut().expect("clients left");
    assert_eq!(
        roundtrip(last, b"from the backlog\n"),
        b"from the backlog\n"
    );
    let resumed = wait_until(Duration::from_secs(10), || {
        server.stderr().contains("accepting resumed")
    });
    assert!(resumed, "no resume line; stderr:\n{}", server.stderr());
    let stderr = server.stop();
    assert_eq!(
        stderr.matches("out of file descriptors").count(),
        1,
        "one warning per episode; stderr:\n{stderr}"
    );
}

#[test]
fn clients_that_never_read_keep_memory_bounded_and_others_fast() {
    let _turn = heavy();
    const CLIENTS: usize = 20;
    const PUSH: usize = 16 << 20;
    // The trace says when the server stops reading a connection.
    let server = start_server_logged(&["--max-pending", "262144"], "echo_reactor=trace");
    let addr = server.tcp_addr();
    let mut warm = connect(addr);
    assert_eq!(roundtrip(&mut warm, b"warm\n"), b"warm\n");
    let rss_before = server.rss_bytes();

    let stop = Arc::new(AtomicBool::new(false));
    let pushed = Arc::new(AtomicU64::new(0));
    let pushers: Vec<_> = (0..CLIENTS)
        .map(|_| never_reading_pusher(addr, PUSH, Arc::clone(&stop), Arc::clone(&pushed)))
        .collect();
    // Until every client is stuck: the server has stopped reading them.
    let stuck = wait_until(Duration::from_secs(20), || {
        server.paused_connections() == CLIENTS
    });
    let mut peak_rss = server.rss_bytes();
    let times = round_trips(addr, 100);
    peak_rss = peak_rss.max(server.rss_bytes());
    stop.store(true, Ordering::Relaxed);
    for p in pushers {
        assert_eq!(p.join().expect("pusher thread"), None);
    }
    assert!(
        stuck,
        "the server paused reading {} of {CLIENTS} pushers ({} B pushed); trace tail:\n{}",
        server.paused_connections(),
        pushed.load(Ordering::Relaxed),
        tail(&server.stderr(), 20)
    );
    let growth = peak_rss.saturating_sub(rss_before);
    eprintln!(
        "never-reading flood: {} MiB pushed, rss {} -> {} MiB (+{} KiB), round trip p50 {:?} p99 {:?}",
        pushed.load(Ordering::Relaxed) >> 20,
        rss_before >> 20,
        peak_rss >> 20,
        growth >> 10,
        percentile(&times, 0.5),
        percentile(&times, 0.99)
    );
    // 20 x (256 KiB cap + one 64 KiB read) is 6.25 MiB; allow allocator slack.
    assert!(growth < 32 << 20, "rss grew by {} MiB", growth >> 20);
    assert!(
        percentile(&times, 0.99) < Duration::from_millis(100),
        "round trips during the flood: {times:?}"
    );
    server.stop();
}

#[test]
fn write_timeout_resets_a_client_that_stopped_reading() {
    let server = start_server(&["--write-timeout", "1"]);
    let addr = server.tcp_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let pushed = Arc::new(AtomicU64::new(0));
    let t = Instant::now();
    let pusher = never_reading_pusher(addr, usize::MAX, Arc::clone(&stop), pushed);
    // The pusher ends when its writes fail: the server reset it.
    let ended = wait_until(Duration::from_secs(20), || pusher.is_finished());
    stop.store(true, Ordering::Relaxed);
    let outcome = pusher.join().expect("pusher thread");
    assert!(ended, "a stuck client was never closed");
    assert!(
        matches!(
            outcome,
            Some(ErrorKind::ConnectionReset | ErrorKind::BrokenPipe)
        ),
        "pusher ended with {outcome:?}"
    );
    assert!(
        t.elapsed() >= Duration::from_secs(1),
        "closed before the timeout"
    );
    // A client that reads is not touched.
    let mut s = connect(addr);
    assert_eq!(roundtrip(&mut s, b"reader\n"), b"reader\n");
    let stats = final_stats(&server.stop());
    assert!(stats.contains("stalled 1)"), "{stats}");
}

#[test]
fn idle_timeout_closes_silent_connections_and_spares_chatty_ones() {
    let _turn = heavy();
    let server = start_server(&["--idle-timeout", "1"]);
    let addr = server.tcp_addr();
    let mut silent = connect(addr);
    let silent_wait = std::thread::spawn(move || {
        let t = Instant::now();
        let closed = sees_end_of_stream(&mut silent, Duration::from_secs(10));
        (closed, t.elapsed())
    });
    let mut chatty = connect(addr);
    let t = Instant::now();
    while t.elapsed() < Duration::from_secs(3) {
        assert_eq!(roundtrip(&mut chatty, b"tick\n"), b"tick\n");
        // The client's pace is the behaviour under test, not a sync.
        std::thread::sleep(Duration::from_millis(200));
    }
    let (closed, after) = silent_wait.join().expect("silent thread");
    assert!(closed, "silent connection not closed");
    assert!(
        // Measured from just after connect, a hair after the server's clock.
        after >= Duration::from_millis(950) && after < Duration::from_secs(5),
        "closed after {after:?}"
    );
    let stats = final_stats(&server.stop());
    assert!(stats.contains("idle 1,"), "{stats}");
}

#[test]
fn idle_server_sleeps_in_poll_with_the_idle_timeout_armed() {
    let _turn = heavy();
    let server = start_server(&["--idle-timeout", "30"]);
    let pid = server.pid();
    let no_connection = server.fd_count();
    let mut s = connect(server.tcp_addr());
    assert_eq!(roundtrip(&mut s, b"hi\n"), b"hi\n");

    // With a connection open the sweep wakes the loop about once a second.
    let before = main_thread_wakeups(pid);
    let cpu = cpu_share(pid, Duration::from_secs(2));
    let armed = main_thread_wakeups(pid) - before;
    assert!(
        cpu < 0.1,
        "{:.0}% of a core with one idle connection",
        cpu * 100.0
    );
    assert!(
        (1..=10).contains(&armed),
        "{armed} wakeups in 2 s while armed"
    );

    // With none, nothing is armed: no wakeups at all. Counted from when
    // the server has closed its side and its loop sleeps in epoll_wait
    // with no timeout (the sweep that was due runs once more, then disarms).
    drop(s);
    let disarmed = wait_until(Duration::from_secs(5), || {
        server.fd_count() == no_connection && epoll_wait_timeout(pid) == Some(-1)
    });
    assert!(
        disarmed,
        "the loop never slept without a timeout after the last close: {} fds ({no_connection} \
         with no connection), epoll_wait timeout {:?}; stderr:\n{}",
        server.fd_count(),
        epoll_wait_timeout(pid),
        server.stderr()
    );
    let before = main_thread_wakeups(pid);
    let cpu = cpu_share(pid, Duration::from_secs(2));
    let idle = main_thread_wakeups(pid) - before;
    eprintln!(
        "idle: {:.1}% of a core and {idle} wakeups in 2 s ({armed} with a connection open)",
        cpu * 100.0
    );
    assert!(cpu < 0.05, "{:.0}% of a core while idle", cpu * 100.0);
    assert_eq!(idle, 0, "the idle loop woke {idle} times in 2 s");
    server.stop();
}

#[test]
fn one_flooding_client_does_not_starve_the_others() {
    let _turn = heavy();
    // A deep user-space queue, so backpressure never stops the flooder's
    // reads: only the fairness budget hands the loop to the others.
    let server = start_server(&["--max-pending", "33554432"]);
    let addr = server.tcp_addr();
    let stop = Arc::new(AtomicBool::new(false));
    let flood = connect(addr);
    let mut flood_reader = flood.try_clone().unwrap();
    let reader_stop = Arc::clone(&stop);
    let echoed = Arc::new(AtomicU64::new(0));
    let reader_echoed = Arc::clone(&echoed);
    let reader = std::thread::spawn(move || {
        flood_reader
            .set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let mut buf = vec![0u8; 256 * 1024];
        let mut got = 0u64;
        while !reader_stop.load(Ordering::Relaxed) {
            match flood_reader.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    got += n as u64;
                    reader_echoed.fetch_add(n as u64, Ordering::Relaxed);
                }
                Err(_) => {}
            }
        }
        got
    });
    let writer_stop = Arc::clone(&stop);
    let mut flood_writer = flood;
    let writer = std::thread::spawn(move || {
        flood_writer
            .set_write_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let chunk = vec![b'f'; 256 * 1024];
        while !writer_stop.load(Ordering::Relaxed) {
            let _ = flood_writer.write(&chunk);
        }
    });
    // The flood is under way before the probe starts.
    let warmed = wait_until(Duration::from_secs(10), || {
        echoed.load(Ordering::Relaxed) > 4 << 20
    });
    assert!(warmed, "the flood never got going");
    // A loaded machine may deschedule the probe itself for a while; that
    // spoils one window, while starvation spoils every one. Up to three
    // windows of a second each; the best one counts.
    let mut times = Vec::new();
    for _ in 0..3 {
        times = paced_round_trips(addr, Duration::from_millis(2), 500);
        if percentile(&times, 0.99) < Duration::from_millis(50) {
            break;
        }
    }
    stop.store(true, Ordering::Relaxed);
    writer.join().expect("writer");
    let flooded = reader.join().expect("reader");
    let p99 = percentile(&times, 0.99);
    eprintln!(
        "flood: {} MiB echoed to the flooder; probe p50 {:?} p99 {:?} max {:?}",
        flooded >> 20,
        percentile(&times, 0.5),
        p99,
        times[times.len() - 1]
    );
    assert!(flooded > 1 << 20, "the flood never got going ({flooded} B)");
    assert!(
        p99 < Duration::from_millis(50),
        "probe p99 {p99:?}: {times:?}"
    );
    server.stop();
}

#[test]
fn connect_close_churn_and_resets_mid_stream_leak_no_descriptors() {
    let _turn = heavy();
    let server = start_server(&[]);
    let addr = server.tcp_addr();
    let mut probe = connect(addr);
    assert_eq!(roundtrip(&mut probe, b"base\n"), b"base\n");
    let baseline = server.fd_count();

    let t = Instant::now();
    let threads: Vec<_> = (0..4)
        .map(|k| {
            std::thread::spawn(move || {
                for i in 0..2500 {
                    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
                    if (i + k) % 2 == 0 {
                        // Reset instead of FIN: no TIME_WAIT, and the
                        // server sees ECONNRESET.
                        socket2::SockRef::from(&s)
                            .set_linger(Some(Duration::ZERO))
                            .unwrap();
                    }
                }
            })
        })
        .collect();
    for th in threads {
        th.join().expect("churn thread");
    }
    let churn = t.elapsed();
    // Clients that reset with data in flight both ways.
    for _ in 0..50 {
        let mut s = connect(addr);
        s.write_all(&vec![b'r'; 512 * 1024]).unwrap();
        socket2::SockRef::from(&s)
            .set_linger(Some(Duration::ZERO))
            .unwrap();
    }
    assert_eq!(roundtrip(&mut probe, b"after\n"), b"after\n");
    let back = wait_until(Duration::from_secs(15), || server.fd_count() <= baseline);
    assert!(
        back,
        "fd count {} after churn, baseline {baseline}",
        server.fd_count()
    );
    eprintln!("churn: 10,000 connect/close cycles in {churn:?}; fds back to {baseline}");
    let stats = final_stats(&server.stop());
    assert!(stats.contains("reset"), "{stats}");
}

/// Binds a UDP client to one of the simple-service ports if this process
/// may (root) and one is free.
fn bind_simple_service_port() -> Option<UdpSocket> {
    [7u16, 9, 13, 19, 37]
        .into_iter()
        .find_map(|p| UdpSocket::bind(("127.0.0.1", p)).ok())
}

#[test]
fn udp_datagrams_from_simple_service_ports_are_dropped_and_counted() {
    let Some(evil) = bind_simple_service_port() else {
        eprintln!("skipped: cannot bind a simple-service port (not root, or all in use)");
        return;
    };
    let server = start_server(&[]);
    let addr = server.udp_addr();
    evil.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    evil.send_to(b"chargen says hi", addr).unwrap();
    // Answered in order: once the good client's reply is back, the server
    // has handled (and dropped) the first datagram.
    let good = udp_client(addr);
    good.send_to(b"ok", addr).unwrap();
    let mut buf = [0u8; 64];
    let (n, _) = good.recv_from(&mut buf).expect("reply to a normal client");
    assert_eq!(&buf[..n], b"ok");
    assert!(
        evil.recv_from(&mut buf).is_err(),
        "a datagram from port {} was answered",
        evil.local_addr().unwrap().port()
    );
    let stats = final_stats(&server.stop());
    assert!(stats.contains("refused-port 1 "), "{stats}");
    assert!(stats.contains("udp in 2 out 1"), "{stats}");
}

#[test]
fn udp_rate_limit_drops_the_excess_per_source() {
    let server = start_server(&["--udp-rate-limit", "10"]);
    let addr = server.udp_addr();
    let noisy = udp_client(addr);
    noisy
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    for i in 0..50u32 {
        noisy.send_to(&i.to_be_bytes(), addr).unwrap();
    }
    let mut buf = [0u8; 16];
    let mut replies = 0u64;
    while noisy.recv_from(&mut buf).is_ok() {
        replies += 1;
    }
    assert!(
        (10..=20).contains(&replies),
        "{replies} replies to 50 datagrams at 10/s"
    );
    // Another source has its own bucket.
    let quiet = udp_client(addr);
    quiet.send_to(b"me too", addr).unwrap();
    let (n, _) = quiet.recv_from(&mut buf).expect("reply to another source");
    assert_eq!(&buf[..n], b"me too");
    let stats = final_stats(&server.stop());
    assert!(
        stats.contains(&format!("rate-limited {}", 50 - replies)),
        "{replies} replies; {stats}"
    );
}

#[test]
fn write_timeout_also_ends_a_peer_whose_echo_sits_in_the_kernels_send_queue() {
    // 256 KiB sent, then never a read: the kernel takes the whole echo into
    // the server's send queue, so nothing is pending in the server itself.
    const SENT: usize = 256 * 1024;
    let server = start_in_process(loopback_with(|c| {
        c.write_timeout = Some(Duration::from_secs(1));
    }));
    let addr = server.tcp[0];
    let socket =
        socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).expect("socket");
    socket.set_recv_buffer_size(4096).expect("SO_RCVBUF");
    socket.connect(&addr.into()).expect("connect");
    let mut s: TcpStream = socket.into();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.write_all(&pattern(2, SENT)).expect("send");
    let ports = (addr.port(), s.local_addr().unwrap().port());
    assert!(
        wait_until(IO_TIMEOUT, || tcp_queues(ports.0, ports.1)
            .is_some_and(|(unacked, unread)| unread == 0 && unacked > 0)),
        "the echo never backed up in the server's send queue"
    );
    let stuck = Instant::now();
    assert!(
        wait_until(Duration::from_secs(8), || tcp_queues(ports.0, ports.1)
            .is_none()),
        "the server still holds the connection and its send queue after {:?}",
        stuck.elapsed()
    );
    let stats = server.stop();
    assert_eq!(stats.tcp_write_timeouts, 1, "{stats}");
    drop(s);
}
