//! What sits between client and server, measured: TLS on our server
//! beside plain TCP and beside HAProxy 2.6 (OpenSSL, `nbthread 1`)
//! terminating TLS in front of our plain server; the PROXY protocol's
//! cost per connection; and the plain path with and without the fault
//! machinery, beside an older build and the C baseline.
//!
//! ```text
//! cargo bench --bench tls                  # every scenario (about 4.5 minutes)
//! cargo bench --bench tls -- handshakes    # handshakes | echo | bulk | memory | plain
//! ECHO_REACTOR_BASELINE_BIN=before-faults=/path/to/echo-reactor \
//!     cargo bench --bench tls -- plain
//! ```
//!
//! One certificate for every TLS server: ECDSA P-256, made at run time by
//! rcgen and signed by a CA made with it (the tests' `Pki`). HAProxy runs
//! README.md's "tls termination" configuration, the one the tests use,
//! with that certificate. Without `haproxy` on the PATH its rows say
//! "skipped: haproxy not installed".
//!
//! `plain` compares our plain TCP path with the builds named in
//! `ECHO_REACTOR_BASELINE_BIN` (comma-separated `LABEL=PATH`, or a bare
//! `PATH` labelled `baseline`): build an older commit in a worktree of its
//! own (`git worktree add ../old SHA && cd ../old && cargo build
//! --release`) and name its `target/release/echo-reactor`.
//!
//! It prints figures and asserts none: the machine is shared and noisy,
//! so compare rows *within* one run (the ratio columns), not across runs.
//! Server CPU time comes from `/proc/PID/task/*/schedstat`; for HAProxy
//! in front of our server it is HAProxy's plus the backend's.

use std::alloc::{GlobalAlloc, Layout, System};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::sync::atomic::{AtomicIsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[allow(dead_code)]
mod support;

use rustls::client::Resumption;
use rustls::pki_types::ServerName;
use support::haproxy::{
    have_haproxy, readme_config, Haproxy, README_BACKEND, README_PEM, README_TLS_FRONTEND,
};
use support::procfs::rss_bytes;
use support::tls::Pki;
use support::{
    build_c_baseline, count_syscalls, cpu_ns, free_port, load, load_with_json, print_header,
    start_c, start_echo_reactor, start_ours, wait_for_port, Sut, OURS,
};

/// Counts the bytes live on the heap, so the memory scenario can weigh
/// one rustls session exactly (RSS moves by pages).
struct Counting;

static LIVE_BYTES: AtomicIsize = AtomicIsize::new(0);

// SAFETY: every call is passed to the system allocator unchanged; the
// counter only watches.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE_BYTES.fetch_add(layout.size() as isize, Ordering::Relaxed);
        System.alloc(layout)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        System.dealloc(ptr, layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE_BYTES.fetch_add(
            new_size as isize - layout.size() as isize,
            Ordering::Relaxed,
        );
        System.realloc(ptr, layout, new_size)
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn main() {
    let Some(wanted) = support::scenarios("tls") else {
        return;
    };
    let run = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let pki = Pki::new();
    let haproxy = have_haproxy();
    println!(
        "# TLS, PROXY and the plain path ({} cores; certificate ECDSA P-256)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    if !haproxy {
        println!("\nHAProxy rows: skipped: haproxy not installed");
    }
    if run("handshakes") {
        scenario_handshakes(&pki, haproxy);
    }
    if run("echo") {
        scenario_echo(&pki, haproxy);
    }
    if run("bulk") {
        scenario_bulk(&pki, haproxy);
    }
    if run("memory") {
        scenario_memory(&pki, haproxy);
    }
    if run("plain") {
        scenario_plain();
    }
}

// ---------------------------------------------------------------- servers

/// Our server with one TLS listener (and nothing else) on a free port.
fn start_ours_tls(pki: &Pki) -> Sut {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let child = std::process::Command::new(OURS)
        .args(["serve", "--tls", &addr.to_string()])
        .arg("--tls-cert")
        .arg(&pki.cert)
        .arg("--tls-key")
        .arg(&pki.key)
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit())
        .spawn()
        .expect("spawn our TLS server");
    // The probe is one connection closed before its handshake: counted
    // as a failed handshake, nothing more.
    wait_for_port(addr);
    Sut {
        name: "echo-reactor tls".to_string(),
        child,
        tcp: addr,
        udp: None,
        expect: "echo",
    }
}

/// HAProxy terminating TLS (README.md's configuration, our certificate)
/// in front of our plain server, which it owns.
struct Terminator {
    haproxy: Haproxy,
    backend: Sut,
}

impl Terminator {
    fn start(pki: &Pki) -> Terminator {
        let backend = start_ours("backend", &[]);
        let haproxy = Haproxy::start(
            &readme_config("tls termination"),
            README_TLS_FRONTEND,
            &[
                (README_PEM, pki.haproxy_pem().display().to_string()),
                (README_BACKEND, backend.tcp.to_string()),
            ],
        );
        Terminator { haproxy, backend }
    }

    /// HAProxy's CPU time and the backend's, in ns.
    fn cpu_ns(&self) -> (u64, u64) {
        (cpu_ns(self.haproxy.pid()), cpu_ns(self.backend.pid()))
    }
}

/// A TLS server under test: ours, or HAProxy in front of ours.
enum TlsServer {
    Ours(Sut),
    Haproxy(Terminator),
}

impl TlsServer {
    fn name(&self) -> &'static str {
        match self {
            TlsServer::Ours(_) => "echo-reactor tls",
            TlsServer::Haproxy(_) => "haproxy tls -> echo-reactor tcp",
        }
    }

    fn addr(&self) -> SocketAddr {
        match self {
            TlsServer::Ours(s) => s.tcp,
            TlsServer::Haproxy(t) => t.haproxy.frontend,
        }
    }

    /// Server CPU so far, ns: (the TLS end's, the backend's or 0).
    fn cpu_ns(&self) -> (u64, u64) {
        match self {
            TlsServer::Ours(s) => (cpu_ns(s.pid()), 0),
            TlsServer::Haproxy(t) => t.cpu_ns(),
        }
    }
}

/// Reads a server's CPU time so far, ns: (the server's, its backend's or 0).
type CpuProbe<'a> = Box<dyn Fn() -> (u64, u64) + 'a>;

/// Our TLS server, and HAProxy's when it is installed.
fn tls_servers(pki: &Pki, haproxy: bool) -> Vec<TlsServer> {
    let mut v = vec![TlsServer::Ours(start_ours_tls(pki))];
    if haproxy {
        v.push(TlsServer::Haproxy(Terminator::start(pki)));
    }
    v
}

fn skipped_row(cols: usize) {
    let rest = " |".repeat(cols - 1);
    println!("| haproxy: skipped: haproxy not installed |{rest}");
}

/// The URL `load` takes for a TLS server (with `--tls-ca`, our CA).
fn tls_url(addr: SocketAddr) -> String {
    format!("tls://{addr}")
}

// ------------------------------------------------------------ handshakes

/// What a handshake loop did.
#[derive(Debug, Default)]
struct Churn {
    /// Connections that completed (handshake and a 1 B echo).
    done: u64,
    /// Of those, how many the server resumed.
    resumed: u64,
    failed: u64,
    /// The negotiated version and suite, from the first success.
    suite: Option<String>,
}

/// How a churn connection opens: plain, plain with a PROXY v1 header, or
/// TLS with this client configuration.
#[derive(Clone)]
enum Opening {
    Plain,
    ProxyV1,
    Tls(Arc<rustls::ClientConfig>),
}

/// `threads` clients opening connection after connection to `addr` for
/// `window`: open, handshake, a 1 B echo (so the handshake is really
/// done, TLS 1.3 tickets included), `close_notify`, close.
fn churn(addr: SocketAddr, opening: &Opening, threads: usize, window: Duration) -> Churn {
    let deadline = Instant::now() + window;
    let handles: Vec<_> = (0..threads)
        .map(|_| {
            let opening = opening.clone();
            std::thread::spawn(move || {
                let mut c = Churn::default();
                while Instant::now() < deadline {
                    match open_once(addr, &opening) {
                        Ok((resumed, suite)) => {
                            c.done += 1;
                            c.resumed += u64::from(resumed);
                            if c.suite.is_none() {
                                c.suite = suite;
                            }
                        }
                        Err(_) => c.failed += 1,
                    }
                }
                c
            })
        })
        .collect();
    let mut total = Churn::default();
    for h in handles {
        if let Ok(c) = h.join() {
            total.done += c.done;
            total.resumed += c.resumed;
            total.failed += c.failed;
            total.suite = total.suite.or(c.suite);
        }
    }
    total
}

/// One connection's life; `Ok((resumed, "version suite"))`.
fn open_once(addr: SocketAddr, opening: &Opening) -> std::io::Result<(bool, Option<String>)> {
    let mut sock = TcpStream::connect(addr)?;
    sock.set_nodelay(true)?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    sock.set_write_timeout(Some(Duration::from_secs(5)))?;
    let mut b = [0u8; 1];
    match opening {
        Opening::Plain | Opening::ProxyV1 => {
            if let Opening::ProxyV1 = opening {
                let local = sock.local_addr()?;
                let header = format!(
                    "PROXY TCP4 {} {} {} {}\r\n",
                    local.ip(),
                    addr.ip(),
                    local.port(),
                    addr.port()
                );
                sock.write_all(header.as_bytes())?;
            }
            sock.write_all(b"x")?;
            sock.read_exact(&mut b)?;
            Ok((false, None))
        }
        Opening::Tls(config) => {
            let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
            let conn = rustls::ClientConnection::new(Arc::clone(config), name)
                .map_err(std::io::Error::other)?;
            let mut s = rustls::StreamOwned::new(conn, sock);
            while s.conn.is_handshaking() {
                s.conn.complete_io(&mut s.sock)?;
            }
            s.write_all(b"x")?;
            s.read_exact(&mut b)?;
            let resumed = s.conn.handshake_kind() == Some(rustls::HandshakeKind::Resumed);
            let suite = match (s.conn.protocol_version(), s.conn.negotiated_cipher_suite()) {
                (Some(v), Some(cs)) => Some(format!("{v:?} {:?}", cs.suite())),
                _ => None,
            };
            s.conn.send_close_notify();
            let _ = s.conn.complete_io(&mut s.sock);
            Ok((resumed, suite))
        }
    }
}

/// A client configuration trusting our CA; `resume`: keep tickets and
/// offer them (a fresh store, so no server sees another's tickets).
fn client_config(pki: &Pki, resume: bool) -> Arc<rustls::ClientConfig> {
    let mut config = (*pki.client_config()).clone();
    config.resumption = if resume {
        Resumption::in_memory_sessions(256)
    } else {
        Resumption::disabled()
    };
    Arc::new(config)
}

/// New connections per second and server CPU per connection: full and
/// resumed TLS handshakes, ours against HAProxy's; plain TCP and plain
/// TCP with a PROXY header beside them for what a connection costs
/// without TLS.
fn scenario_handshakes(pki: &Pki, haproxy: bool) {
    let threads = 4;
    let window = Duration::from_secs(3);
    print_header(
        &format!(
            "TLS handshakes: {threads} client threads for {} s each, \
             connect + handshake + 1 B echo + close",
            window.as_secs()
        ),
        &[
            "server",
            "handshake",
            "conns/s",
            "server CPU us/conn",
            "of it backend",
            "conns per server CPU-s",
            "vs ours",
            "client CPU us/conn",
            "resumed",
            "failed",
            "negotiated",
        ],
    );
    let mut ours_per_cpu = [f64::NAN; 2];
    let mut servers = tls_servers(pki, haproxy);
    for server in &mut servers {
        for (i, resume) in [false, true].into_iter().enumerate() {
            let opening = Opening::Tls(client_config(pki, resume));
            // One connection first: warms the server, and leaves tickets
            // for the resumed run.
            let _ = open_once(server.addr(), &opening);
            let row = churn_row(server.addr(), &opening, threads, window, || server.cpu_ns());
            if let TlsServer::Ours(_) = server {
                ours_per_cpu[i] = row.per_cpu_s;
            }
            row.print(
                server.name(),
                if resume { "resumed" } else { "full" },
                ours_per_cpu[i],
            );
        }
    }
    if !haproxy {
        skipped_row(11);
    }
    for (name, extra, opening) in [
        ("echo-reactor tcp", &[][..], Opening::Plain),
        (
            "echo-reactor tcp --proxy-protocol",
            &["--proxy-protocol"][..],
            Opening::ProxyV1,
        ),
    ] {
        let sut = start_ours(name, extra);
        let _ = open_once(sut.tcp, &opening);
        let row = churn_row(sut.tcp, &opening, threads, window, || {
            (cpu_ns(sut.pid()), 0)
        });
        let kind = match opening {
            Opening::ProxyV1 => "none, PROXY v1 header",
            _ => "none",
        };
        row.print(&sut.name, kind, f64::NAN);
    }
}

/// One churn run's figures.
struct ChurnRow {
    churn: Churn,
    per_sec: f64,
    server_us: f64,
    backend_us: f64,
    per_cpu_s: f64,
    client_us: f64,
}

fn churn_row(
    addr: SocketAddr,
    opening: &Opening,
    threads: usize,
    window: Duration,
    server_cpu: impl Fn() -> (u64, u64),
) -> ChurnRow {
    let (s0, b0) = server_cpu();
    let c0 = own_cpu_ns();
    let start = Instant::now();
    let churn = churn(addr, opening, threads, window);
    let secs = start.elapsed().as_secs_f64();
    let (s1, b1) = server_cpu();
    let c1 = own_cpu_ns();
    let n = churn.done.max(1) as f64;
    let server_ns = (s1 - s0 + b1 - b0) as f64;
    ChurnRow {
        per_sec: churn.done as f64 / secs,
        server_us: server_ns / 1000.0 / n,
        backend_us: (b1 - b0) as f64 / 1000.0 / n,
        per_cpu_s: n / (server_ns / 1e9),
        client_us: (c1 - c0) as f64 / 1000.0 / n,
        churn,
    }
}

/// This process's CPU time, ns, threads that have ended included (which
/// `/proc/PID/task` no longer lists).
fn own_cpu_ns() -> u64 {
    // SAFETY: getrusage(2) fills the struct it is given; zeroed is valid.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF and a valid pointer to our own struct.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return 0;
    }
    let ns = |t: libc::timeval| t.tv_sec as u64 * 1_000_000_000 + t.tv_usec as u64 * 1000;
    ns(ru.ru_utime) + ns(ru.ru_stime)
}

impl ChurnRow {
    fn print(&self, server: &str, kind: &str, ours_per_cpu: f64) {
        let vs = if ours_per_cpu.is_nan() {
            "-".to_string()
        } else {
            format!("{:.2}", self.per_cpu_s / ours_per_cpu)
        };
        println!(
            "| {server} | {kind} | {:.0} | {:.1} | {:.1} | {:.0} | {vs} | {:.1} | {} | {} | {} |",
            self.per_sec,
            self.server_us,
            self.backend_us,
            self.per_cpu_s,
            self.client_us,
            self.churn.resumed,
            self.churn.failed,
            self.churn.suite.as_deref().unwrap_or("-"),
        );
    }
}

// ------------------------------------------------------------------ echo

/// 64 B echo at 50 and 500 connections: server CPU per message at a
/// fixed 20,000 msgs/s, then the closed-loop rate; our TLS against our
/// plain TCP and against HAProxy terminating TLS in front of our plain
/// server. CPU per message moves with what else the shared machine runs,
/// so each server is measured in each of three rounds, the order turning,
/// and the table gives the median and the median of the per-round ratios.
fn scenario_echo(pki: &Pki, haproxy: bool) {
    let rate = 20_000;
    let rounds = 3;
    print_header(
        &format!(
            "TLS echo, 64 B: server CPU per message at a fixed {rate} msgs/s (median of \
             {rounds} rounds of 2 s, handshakes left out), then closed loop (2 s, 1 s warm-up)"
        ),
        &[
            "connections",
            "server",
            "CPU us/msg",
            "of it backend",
            "vs plain (median of rounds)",
            "closed-loop msgs/s",
            "vs plain",
            "p99 us",
            "generator CPU us/msg",
            "errors",
        ],
    );
    let ca = pki.ca.display().to_string();
    for conns in [50, 500] {
        let c = conns.to_string();
        let plain_sut = start_ours("echo-reactor tcp", &[]);
        let servers = tls_servers(pki, haproxy);
        let mut rows: Vec<(String, String, Vec<&str>, CpuProbe)> = vec![(
            plain_sut.name.clone(),
            format!("tcp://{}", plain_sut.tcp),
            vec![],
            Box::new(|| (cpu_ns(plain_sut.pid()), 0)),
        )];
        for s in &servers {
            rows.push((
                s.name().to_string(),
                tls_url(s.addr()),
                vec!["--tls-ca", &ca],
                Box::new(move || s.cpu_ns()),
            ));
        }
        // Fixed rate: every server keeps up, so CPU per message compares
        // like with like.
        let mut errors = vec![String::new(); rows.len()];
        let cpu = interleaved(rows.len(), rounds, |k| {
            let (_, url, extra, server_cpu) = &rows[k];
            // HAProxy's 500 handshakes at once can take more than the
            // default 3 s on the loaded machine.
            let mut args = vec![
                "-c",
                &c,
                "-d",
                "2",
                "--rate",
                "20000",
                "--connect-timeout",
                "10",
            ];
            args.extend(extra);
            // Time enough for the connections to come up first.
            let lead = Duration::from_millis(if conns > 100 { 3000 } else { 1000 });
            let (per_msg, errs) = window_cpu(lead, url, &args, server_cpu.as_ref());
            errors[k].push_str(&errs);
            per_msg
        });
        let mut plain_rate = f64::NAN;
        for (k, (name, url, extra, _)) in rows.iter().enumerate() {
            let mut args = vec![
                "-c",
                &c,
                "-d",
                "2",
                "--warmup",
                "1",
                "--connect-timeout",
                "10",
            ];
            args.extend(extra);
            let (closed, json) = load_with_json(url, &args);
            let errs = format!("{}{}", errors[k], errors_named(&json));
            let (us, backend, vs) = (
                median_of(&cpu, k, |r| r.0),
                median_of(&cpu, k, |r| r.1),
                median_ratio(&cpu, k, 0, |r| r.0),
            );
            if k == 0 {
                plain_rate = closed.msgs_per_sec;
            }
            println!(
                "| {conns} | {name} | {us:.2} | {backend:.2} | {vs:.2} | {:.0} | {:.2} | {:.0} | {:.2} | {} |",
                closed.msgs_per_sec,
                closed.msgs_per_sec / plain_rate,
                closed.p99_us,
                closed.gen_cpu_ns as f64 / 1000.0 / closed.sent,
                if errs.is_empty() { "0" } else { &errs },
            );
        }
        if !haproxy {
            skipped_row(10);
        }
    }
}

/// Runs `load URL ARGS` starting its window `lead` from now (the
/// connections, and their handshakes, come up before it) and returns the
/// server CPU per message answered in the window, in us (all of it, and
/// the backend's part), and the run's errors by class.
fn window_cpu(
    lead: Duration,
    url: &str,
    args: &[&str],
    server_cpu: &dyn Fn() -> (u64, u64),
) -> ((f64, f64), String) {
    let start = std::time::SystemTime::now() + lead;
    let at = start
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64());
    let at = format!("{at:.3}");
    let mut args = args.to_vec();
    args.extend(["--start-at", &at]);
    std::thread::scope(|scope| {
        let run = scope.spawn(|| load_with_json(url, &args));
        if let Ok(wait) = start.duration_since(std::time::SystemTime::now()) {
            std::thread::sleep(wait);
        }
        let (s0, b0) = server_cpu();
        let (r, json) = run.join().unwrap_or_default();
        let (s1, b1) = server_cpu();
        let per = |ns: u64| ns as f64 / 1000.0 / r.messages;
        ((per(s1 - s0 + b1 - b0), per(b1 - b0)), errors_named(&json))
    })
}

/// The error classes a load report counted and its first error's words,
/// like "tls 3 (...) ", or "" when there were none.
fn errors_named(json: &str) -> String {
    let Ok(report) = serde_json::from_str::<serde_json::Value>(json) else {
        return "no report ".to_string();
    };
    let mut out = String::new();
    if let Some(errors) = report["errors"].as_object() {
        for (class, n) in errors {
            if n.as_f64().is_some_and(|n| n > 0.0) {
                out.push_str(&format!("{class} {n} "));
            }
        }
    }
    if let Some(first) = report["first_error"].as_str() {
        if !out.is_empty() {
            out.push_str(&format!("({first}) "));
        }
    }
    out
}

/// Calls `measure(k)` for each of `n` servers in each of `rounds` rounds,
/// the order turning by one each round; `values[k][round]`.
fn interleaved<T: Clone>(
    n: usize,
    rounds: usize,
    mut measure: impl FnMut(usize) -> T,
) -> Vec<Vec<T>> {
    let mut values = vec![Vec::with_capacity(rounds); n];
    for round in 0..rounds {
        for i in 0..n {
            let k = (i + round) % n;
            values[k].push(measure(k));
        }
    }
    values
}

/// The median over rounds of server `k`'s figure.
fn median_of<T: Copy>(values: &[Vec<T>], k: usize, figure: impl Fn(T) -> f64) -> f64 {
    let mut v: Vec<f64> = values[k].iter().map(|&x| figure(x)).collect();
    median(&mut v)
}

/// The median over rounds of server `k`'s figure divided by server
/// `reference`'s in the same round.
fn median_ratio<T: Copy>(
    values: &[Vec<T>],
    k: usize,
    reference: usize,
    figure: impl Fn(T) -> f64,
) -> f64 {
    let mut v: Vec<f64> = values[k]
        .iter()
        .zip(&values[reference])
        .map(|(&a, &b)| figure(a) / figure(b))
        .collect();
    median(&mut v)
}

// ------------------------------------------------------------------ bulk

/// One connection streaming 1 GiB through the server and back, from one
/// bench-side client loop that is the same for plain and TLS (rustls over
/// a non-blocking socket and poll(2)), so the client's own cost differs
/// only by the cipher.
fn scenario_bulk(pki: &Pki, haproxy: bool) {
    let total: u64 = 1 << 30;
    print_header(
        "bulk: one connection, 1 GiB through the server and back, 64 KiB writes",
        &[
            "server",
            "GB/s echoed",
            "vs plain",
            "server CPU ns/KiB",
            "of it backend",
        ],
    );
    let config = client_config(pki, false);
    let plain_sut = start_ours("echo-reactor tcp", &[]);
    let servers = tls_servers(pki, haproxy);
    let mut rows: Vec<(String, SocketAddr, Option<_>, CpuProbe)> = vec![(
        plain_sut.name.clone(),
        plain_sut.tcp,
        None,
        Box::new(|| (cpu_ns(plain_sut.pid()), 0)),
    )];
    for s in &servers {
        rows.push((
            s.name().to_string(),
            s.addr(),
            Some(Arc::clone(&config)),
            Box::new(move || s.cpu_ns()),
        ));
    }
    let mut plain = f64::NAN;
    for (name, addr, tls, server_cpu) in rows {
        let (s0, b0) = server_cpu();
        let (got, secs) = match bulk(addr, tls.as_ref(), total) {
            Ok(r) => r,
            Err(e) => {
                println!("| {name} | failed: {e} | | | |");
                continue;
            }
        };
        let (s1, b1) = server_cpu();
        let gbps = got as f64 / secs / 1e9;
        if tls.is_none() {
            plain = gbps;
        }
        let kib = got as f64 / 1024.0;
        println!(
            "| {name} | {gbps:.2} | {:.2} | {:.0} | {:.0} |",
            gbps / plain,
            (s1 - s0 + b1 - b0) as f64 / kib,
            (b1 - b0) as f64 / kib,
        );
    }
    if !haproxy {
        skipped_row(5);
    }
}

/// Streams `total` bytes to `addr` (over TLS with `tls`) and reads them
/// back in one thread; `(bytes back, seconds)`.
fn bulk(
    addr: SocketAddr,
    tls: Option<&Arc<rustls::ClientConfig>>,
    total: u64,
) -> std::io::Result<(u64, f64)> {
    use std::os::fd::AsRawFd;
    let (mut sock, mut session) = match tls {
        Some(config) => {
            let s = tls_connect(addr, config)?;
            (s.sock, Some(s.conn))
        }
        None => (TcpStream::connect(addr)?, None),
    };
    sock.set_nonblocking(true)?;
    let chunk = vec![b'z'; 64 * 1024];
    let mut buf = vec![0u8; 64 * 1024];
    let (mut sent, mut got) = (0u64, 0u64);
    let start = Instant::now();
    let would_block = |e: &std::io::Error| e.kind() == std::io::ErrorKind::WouldBlock;
    while got < total {
        let mut progress = false;
        let mut wants_out = false;
        // Out: plaintext into the session (or the socket), records out.
        match &mut session {
            None if sent < total => {
                let n = chunk.len().min((total - sent) as usize);
                match sock.write(&chunk[..n]) {
                    Ok(k) => {
                        sent += k as u64;
                        progress = true;
                    }
                    Err(e) if would_block(&e) => wants_out = true,
                    Err(e) => return Err(e),
                }
            }
            None => {}
            Some(conn) => {
                if !conn.wants_write() && sent < total {
                    let n = chunk.len().min((total - sent) as usize);
                    sent += conn.writer().write(&chunk[..n])? as u64;
                }
                while conn.wants_write() {
                    match conn.write_tls(&mut sock) {
                        Ok(_) => progress = true,
                        Err(e) if would_block(&e) => {
                            wants_out = true;
                            break;
                        }
                        Err(e) => return Err(e),
                    }
                }
            }
        }
        // In: records into the session and plaintext out, or bytes.
        match &mut session {
            None => match sock.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    got += n as u64;
                    progress = true;
                }
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(e),
            },
            Some(conn) => match conn.read_tls(&mut sock) {
                Ok(0) => break,
                Ok(_) => {
                    progress = true;
                    conn.process_new_packets().map_err(std::io::Error::other)?;
                    loop {
                        match conn.reader().read(&mut buf) {
                            Ok(0) => break,
                            Ok(n) => got += n as u64,
                            Err(e) if would_block(&e) => break,
                            Err(e) => return Err(e),
                        }
                    }
                }
                Err(e) if would_block(&e) => {}
                Err(e) => return Err(e),
            },
        }
        if !progress {
            let mut fds = libc::pollfd {
                fd: sock.as_raw_fd(),
                events: libc::POLLIN | if wants_out { libc::POLLOUT } else { 0 },
                revents: 0,
            };
            // SAFETY: one valid pollfd of our own, for up to 5 s.
            if unsafe { libc::poll(&mut fds, 1, 5000) } == 0 {
                return Err(std::io::Error::other("no progress for 5 s"));
            }
        }
    }
    Ok((got, start.elapsed().as_secs_f64()))
}

// ---------------------------------------------------------------- memory

/// RSS per idle connection: N plain connections against N TLS ones with
/// the handshake done, then after one 64 B echo on each.
fn scenario_memory(pki: &Pki, haproxy: bool) {
    let n = 5_000;
    print_header(
        &format!("memory per connection, {n} connections"),
        &[
            "server",
            "idle B/conn",
            "after a 64 B echo B/conn",
            "vs plain (after echo)",
        ],
    );
    let config = client_config(pki, false);
    let plain_after;
    {
        let sut = start_ours("echo-reactor tcp", &[]);
        let (idle, after) = memory_of(&[sut.pid()], || {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                match TcpStream::connect(sut.tcp) {
                    Ok(s) => v.push(s),
                    Err(_) => break,
                }
            }
            v
        });
        plain_after = after;
        println!("| {} | {idle:.0} | {after:.0} | 1.00 |", sut.name);
    }
    for server in tls_servers(pki, haproxy) {
        let addr = server.addr();
        let pids = match &server {
            TlsServer::Ours(s) => vec![s.pid()],
            TlsServer::Haproxy(t) => vec![t.haproxy.pid()],
        };
        let (idle, after) = memory_of(&pids, || {
            let mut v = Vec::with_capacity(n);
            for _ in 0..n {
                match tls_connect(addr, &config) {
                    Ok(s) => v.push(s),
                    Err(_) => break,
                }
            }
            v
        });
        println!(
            "| {} | {idle:.0} | {after:.0} | {:.2} |",
            match server {
                TlsServer::Ours(_) => "echo-reactor tls",
                TlsServer::Haproxy(_) => "haproxy tls (HAProxy's RSS only)",
            },
            after / plain_after
        );
    }
    if !haproxy {
        skipped_row(4);
    }
    rustls_session_weight(pki);
}

/// The heap one rustls server session holds once its handshake is done
/// and it has echoed 64 B, counted by the allocator: a session made as
/// our server makes it (same provider, same certificate), driven through
/// its handshake in memory against a client session.
fn rustls_session_weight(pki: &Pki) {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer};
    let chain: Vec<CertificateDer> = match CertificateDer::pem_file_iter(&pki.cert) {
        Ok(it) => it.filter_map(Result::ok).collect(),
        Err(_) => return,
    };
    let Ok(key) = PrivateKeyDer::from_pem_file(&pki.key) else {
        return;
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let Ok(config) = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .and_then(|b| b.with_no_client_auth().with_single_cert(chain, key))
    else {
        return;
    };
    let config = Arc::new(config);
    let client_config = client_config(pki, false);
    // A first pair warms what is made once (the session cache's table).
    let _ = session_pair(&config, &client_config);
    let before = LIVE_BYTES.load(Ordering::Relaxed);
    let Some((server, client)) = session_pair(&config, &client_config) else {
        println!("\n(rustls session weight: the in-memory handshake failed)");
        return;
    };
    drop(client);
    let held = LIVE_BYTES.load(Ordering::Relaxed) - before;
    println!(
        "\nrustls 0.23: one server session after its handshake and a 64 B echo holds \
         {held} B of heap (its struct, boxed by our server, is {} B of it; \
         the rest: the 4 KiB record read buffer, the traffic keys, the \
         session cache's entries for the tickets it issued)",
        std::mem::size_of::<rustls::ServerConnection>()
    );
    drop(server);
}

/// A server and a client session, handshake done in memory and 64 B
/// echoed through them.
fn session_pair(
    server_config: &Arc<rustls::ServerConfig>,
    client_config: &Arc<rustls::ClientConfig>,
) -> Option<(Box<rustls::ServerConnection>, rustls::ClientConnection)> {
    let mut server = Box::new(rustls::ServerConnection::new(Arc::clone(server_config)).ok()?);
    let name = ServerName::try_from("localhost").ok()?;
    let mut client = rustls::ClientConnection::new(Arc::clone(client_config), name).ok()?;
    let mut wire = Vec::new();
    let mut echoed = false;
    for _ in 0..20 {
        wire.clear();
        while client.wants_write() {
            client.write_tls(&mut wire).ok()?;
        }
        let mut rd = &wire[..];
        while !rd.is_empty() {
            server.read_tls(&mut rd).ok()?;
            server.process_new_packets().ok()?;
        }
        let mut plain = [0u8; 64];
        if let Ok(n) = server.reader().read(&mut plain) {
            if n > 0 {
                server.writer().write_all(&plain[..n]).ok()?;
            }
        }
        wire.clear();
        while server.wants_write() {
            server.write_tls(&mut wire).ok()?;
        }
        let mut rd = &wire[..];
        while !rd.is_empty() {
            client.read_tls(&mut rd).ok()?;
            client.process_new_packets().ok()?;
        }
        if !client.is_handshaking() && !echoed {
            client.writer().write_all(&[b'a'; 64]).ok()?;
            echoed = true;
        } else if echoed {
            let mut back = [0u8; 64];
            if client.reader().read(&mut back).ok()? == 64 {
                return Some((server, client));
            }
        }
    }
    None
}

/// A TLS connection with its handshake done.
fn tls_connect(
    addr: SocketAddr,
    config: &Arc<rustls::ClientConfig>,
) -> std::io::Result<rustls::StreamOwned<rustls::ClientConnection, TcpStream>> {
    let sock = TcpStream::connect(addr)?;
    sock.set_read_timeout(Some(Duration::from_secs(5)))?;
    let name = ServerName::try_from("localhost").map_err(std::io::Error::other)?;
    let conn =
        rustls::ClientConnection::new(Arc::clone(config), name).map_err(std::io::Error::other)?;
    let mut s = rustls::StreamOwned::new(conn, sock);
    while s.conn.is_handshaking() {
        s.conn.complete_io(&mut s.sock)?;
    }
    Ok(s)
}

/// RSS growth of `pids` per connection that `open` made (idle), and after
/// a 64 B echo on each: (idle B/conn, after B/conn).
fn memory_of<S: Read + Write>(pids: &[u32], open: impl FnOnce() -> Vec<S>) -> (f64, f64) {
    let rss = || pids.iter().map(|&p| rss_bytes(p)).sum::<u64>();
    std::thread::sleep(Duration::from_millis(200));
    let base = rss();
    let mut conns = open();
    let count = conns.len().max(1) as f64;
    // Every connection accepted (and, for TLS, its tickets read): a round
    // trip on the last proves the server has seen them all.
    if let Some(last) = conns.last_mut() {
        let mut b = [0u8; 1];
        let _ = last.write_all(b"x").and_then(|()| last.read_exact(&mut b));
    }
    std::thread::sleep(Duration::from_millis(300));
    let idle = rss().saturating_sub(base) as f64 / count;
    let msg = [b'a'; 64];
    let mut buf = [0u8; 64];
    for s in &mut conns {
        let _ = s.write_all(&msg).and_then(|()| s.read_exact(&mut buf));
    }
    std::thread::sleep(Duration::from_millis(300));
    let after = rss().saturating_sub(base) as f64 / count;
    (idle, after)
}

// ----------------------------------------------------------- plain path

/// The builds named in `ECHO_REACTOR_BASELINE_BIN`: `LABEL=PATH` or
/// `PATH`, comma-separated.
fn baselines() -> Vec<(String, PathBuf)> {
    let Ok(list) = std::env::var("ECHO_REACTOR_BASELINE_BIN") else {
        return Vec::new();
    };
    list.split(',')
        .filter(|s| !s.trim().is_empty())
        .map(|entry| match entry.split_once('=') {
            Some((label, path)) => (label.trim().to_string(), PathBuf::from(path.trim())),
            None => ("baseline".to_string(), PathBuf::from(entry.trim())),
        })
        .collect()
}

/// Issue 22's promise, "without --fault nothing is paid", and issue 20's,
/// "the plain path pays nothing for TLS or PROXY": plain TCP CPU and
/// syscalls per message of this build, with and without a fault that
/// never fires, of the older builds named in `ECHO_REACTOR_BASELINE_BIN`,
/// and of the C baseline, in one run. CPU per message moves with what
/// else the shared machine runs, so every server is measured in each of
/// five rounds, the order turning, and the median is shown.
fn scenario_plain() {
    let rate = 20_000;
    let rounds = 5;
    let c = build_c_baseline();
    let mut servers = vec![
        start_ours("this build", &[]),
        start_ours("this build --fault corrupt@0", &["--fault", "corrupt@0"]),
    ];
    let mut notes = Vec::new();
    let bases = baselines();
    if bases.is_empty() {
        notes.push("(no ECHO_REACTOR_BASELINE_BIN: older builds left out)".to_string());
    }
    for (label, path) in bases {
        if path.exists() {
            servers.push(start_echo_reactor(&path, &label, &[]));
        } else {
            notes.push(format!("({label}: {} not found)", path.display()));
        }
    }
    if let Some(bin) = &c {
        servers.push(start_c(bin, true));
    }
    let cpu = interleaved(servers.len(), rounds, |k| {
        let sut = &servers[k];
        let before = cpu_ns(sut.pid());
        let fixed = load(
            &format!("tcp://{}", sut.tcp),
            &["-c", "50", "-d", "2", "--rate", &rate.to_string()],
        );
        (cpu_ns(sut.pid()) - before) as f64 / 1000.0 / fixed.sent
    });
    let syscalls: Vec<Option<f64>> = servers
        .iter()
        .map(|sut| {
            let url = format!("tcp://{}", sut.tcp);
            let (count, closed) =
                count_syscalls(sut.pid(), || load(&url, &["-c", "50", "-d", "3"]));
            count.map(|n| n as f64 / closed.sent)
        })
        .collect();
    print_header(
        &format!(
            "plain TCP path, 64 B, 50 connections: server CPU per message at a fixed \
             {rate} msgs/s (median of {rounds} rounds of 2 s, order turning); syscalls \
             per message, closed loop (3 s)"
        ),
        &[
            "server",
            "CPU us/msg (median)",
            "each round",
            "vs this build (median of rounds)",
            "vs C -s (median of rounds)",
            "syscalls/msg",
        ],
    );
    let c_index = servers.iter().position(|s| s.name.starts_with("c-epoll"));
    for (k, sut) in servers.iter().enumerate() {
        let each: Vec<String> = cpu[k].iter().map(|v| format!("{v:.2}")).collect();
        let sys = syscalls[k].map_or("(perf not available)".to_string(), |v| format!("{v:.3}"));
        let vs_c = c_index.map_or(f64::NAN, |c| median_ratio(&cpu, k, c, |x| x));
        println!(
            "| {} | {:.2} | {} | {:.2} | {vs_c:.2} | {sys} |",
            sut.name,
            median_of(&cpu, k, |x| x),
            each.join(", "),
            median_ratio(&cpu, k, 0, |x| x),
        );
    }
    for n in notes {
        println!("{n}");
    }
}

/// The middle value (NaN for none); sorts `v`.
fn median(v: &mut [f64]) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
