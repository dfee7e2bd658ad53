//! The performance harness: our server beside the C epoll baseline (naive
//! and with the short-read shortcut) and, when built, the thread-per-
//! connection example, all driven by our own load generator over loopback.
//!
//! Run everything (about eight minutes on two cores) or one scenario:
//!
//! ```text
//! cargo bench --bench reactor                 # every scenario
//! cargo bench --bench reactor -- syscalls     # rate | cpu | syscalls | memory | bulk | udp | threads | many
//! ```
//!
//! It prints figures and asserts none: this machine is shared and noisy,
//! so compare servers *within* one run (the ratio columns), not across runs.
//! Syscalls are counted with `perf stat -e raw_syscalls:sys_enter` when perf
//! is installed and allowed; otherwise that column says so. CPU time comes
//! from `/proc/PID/task/*/schedstat` (nanoseconds on CPU). The C baseline is
//! `benches/c/epoll_echo.c`, compiled here with `cc -O2`.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

#[allow(dead_code)]
mod support;

use support::procfs::rss_bytes;
use support::{
    build_c_baseline, count_syscalls, cpu_ns, free_port, load, print_header, start_c, start_ours,
    wait_for_port, Load, Sut,
};

fn main() {
    let Some(wanted) = support::scenarios("reactor") else {
        return;
    };
    let run = |name: &str| wanted.is_empty() || wanted.iter().any(|w| w == name);
    let c = build_c_baseline();
    println!("# echo-reactor benchmarks ({} cores)", cores());
    if run("rate") {
        scenario_rate(&c);
    }
    if run("cpu") {
        scenario_cpu(&c);
    }
    if run("syscalls") {
        scenario_syscalls(&c);
    }
    if run("memory") {
        scenario_memory(&c);
    }
    if run("bulk") {
        scenario_bulk(&c);
    }
    if run("udp") {
        scenario_udp(&c);
    }
    if run("threads") {
        scenario_threads();
    }
    if run("many") {
        scenario_many();
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

// ---------------------------------------------------------------- servers

/// The thread-per-connection example, if `cargo build --release --examples`
/// has built it.
fn start_threaded() -> Option<Sut> {
    let bin = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/release/examples/threaded");
    if !bin.exists() {
        return None;
    }
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().ok()?;
    let child = Command::new(bin)
        .arg(addr.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .ok()?;
    wait_for_port(addr);
    Some(Sut {
        name: "threaded example".to_string(),
        child,
        tcp: addr,
        udp: None,
        expect: "upper",
    })
}

/// Every TCP echo server this run can start, ours first.
fn all_servers(c: &Option<PathBuf>, with_threaded: bool) -> Vec<Sut> {
    let mut v = vec![start_ours("echo-reactor", &[])];
    if let Some(bin) = c {
        v.push(start_c(bin, true));
        v.push(start_c(bin, false));
    }
    if with_threaded {
        v.extend(start_threaded());
    }
    v
}

// ------------------------------------------------------------ measuring

// ------------------------------------------------------------ scenarios

/// Closed-loop ping-pong: message rate at 50, 500 and 5,000 connections.
fn scenario_rate(c: &Option<PathBuf>) {
    print_header(
        "message rate, 64 B ping-pong, closed loop, 5 s",
        &[
            "connections",
            "server",
            "msgs/s",
            "vs ours",
            "p99 us",
            "errors",
        ],
    );
    for conns in [50, 500, 5000] {
        let mut ours_rate = f64::NAN;
        for sut in all_servers(c, conns <= 500) {
            let url = format!("tcp://{}", sut.tcp);
            let r = load(
                &url,
                &[
                    "--connections",
                    &conns.to_string(),
                    "--duration",
                    "5",
                    "--warmup",
                    "1",
                    "--expect",
                    sut.expect,
                ],
            );
            if sut.name == "echo-reactor" {
                ours_rate = r.msgs_per_sec;
            }
            println!(
                "| {conns} | {} | {:.0} | {:.2} | {:.0} | {} |",
                sut.name,
                r.msgs_per_sec,
                r.msgs_per_sec / ours_rate,
                r.p99_us,
                r.errors
            );
        }
    }
}

/// Server CPU per message at a fixed offered rate every server sustains.
fn scenario_cpu(c: &Option<PathBuf>) {
    let rate = 20_000;
    print_header(
        &format!("server CPU per message at a fixed {rate} msgs/s, 50 connections, 5 s"),
        &["server", "msgs", "server CPU us/msg", "vs ours"],
    );
    let mut ours = f64::NAN;
    for sut in all_servers(c, true) {
        let url = format!("tcp://{}", sut.tcp);
        let before = cpu_ns(sut.pid());
        let r = load(
            &url,
            &[
                "--connections",
                "50",
                "--duration",
                "5",
                "--rate",
                &rate.to_string(),
            ],
        );
        let us = (cpu_ns(sut.pid()) - before) as f64 / 1000.0 / r.messages;
        if sut.name == "echo-reactor" {
            ours = us;
        }
        println!(
            "| {} | {:.0} | {us:.2} | {:.2} |",
            sut.name,
            r.messages,
            us / ours
        );
    }
}

/// Syscalls per echoed message, ours with and without the short-read
/// shortcut beside the C baseline's two settings.
fn scenario_syscalls(c: &Option<PathBuf>) {
    print_header(
        "syscalls per echoed message, 64 B ping-pong (perf stat raw_syscalls)",
        &["connections", "server", "syscalls/msg"],
    );
    for conns in [50, 500] {
        let mut servers = vec![
            start_ours("echo-reactor", &[]),
            start_ours(
                "echo-reactor --short-read false",
                &["--short-read", "false"],
            ),
        ];
        if let Some(bin) = c {
            servers.push(start_c(bin, true));
            servers.push(start_c(bin, false));
        }
        for sut in servers {
            let url = format!("tcp://{}", sut.tcp);
            // The whole run, connection setup included (a handful of
            // syscalls per connection, under 0.01 per message), divided by
            // every message the generator sent and got back.
            let (count, r) = count_syscalls(sut.pid(), || {
                load(
                    &url,
                    &["--connections", &conns.to_string(), "--duration", "5"],
                )
            });
            let per_msg = count.map(|n| n as f64 / r.sent);
            match per_msg {
                Some(v) => println!("| {conns} | {} | {v:.3} |", sut.name),
                None => println!("| {conns} | {} | (perf not available) |", sut.name),
            }
        }
    }
}

/// RSS per idle connection, and after each connection echoed once.
fn scenario_memory(c: &Option<PathBuf>) {
    let n = 10_000;
    print_header(
        &format!("memory per connection, {n} connections"),
        &["server", "idle B/conn", "after echo B/conn"],
    );
    let mut servers = vec![start_ours("echo-reactor", &[])];
    if let Some(bin) = c {
        servers.push(start_c(bin, true));
    }
    for sut in servers {
        let pid = sut.pid();
        std::thread::sleep(Duration::from_millis(200));
        let base = rss_bytes(pid);
        let mut conns = Vec::with_capacity(n);
        for _ in 0..n {
            match TcpStream::connect(sut.tcp) {
                Ok(s) => conns.push(s),
                Err(e) => {
                    println!(
                        "| {} | connect failed after {}: {e} | |",
                        sut.name,
                        conns.len()
                    );
                    break;
                }
            }
        }
        // Every connection accepted: one round trip on the last proves it.
        if let Some(last) = conns.last_mut() {
            let _ = last.write_all(b"x");
            let mut b = [0u8; 1];
            let _ = last.read_exact(&mut b);
        }
        std::thread::sleep(Duration::from_millis(300));
        let idle = rss_bytes(pid).saturating_sub(base) as f64 / conns.len() as f64;
        let msg = [b'a'; 64];
        let mut buf = [0u8; 64];
        for s in &mut conns {
            let _ = s.write_all(&msg);
            let _ = s.read_exact(&mut buf);
        }
        std::thread::sleep(Duration::from_millis(300));
        let echoed = rss_bytes(pid).saturating_sub(base) as f64 / conns.len() as f64;
        println!("| {} | {idle:.0} | {echoed:.0} |", sut.name);
    }
}

/// One connection streaming 2 GiB through the server and back.
fn scenario_bulk(c: &Option<PathBuf>) {
    let total: u64 = 2 << 30;
    print_header(
        "bulk: one connection, 2 GiB through the server and back",
        &["server", "GB/s", "vs C -s"],
    );
    let mut results = Vec::new();
    let mut servers = vec![start_ours("echo-reactor", &[])];
    if let Some(bin) = c {
        servers.push(start_c(bin, true));
    }
    for sut in servers {
        let gbps = bulk(sut.tcp, total);
        results.push((sut.name.clone(), gbps));
    }
    let c_rate = results
        .iter()
        .find(|(n, _)| n.starts_with("c-epoll"))
        .map_or(f64::NAN, |r| r.1);
    for (name, gbps) in results {
        println!("| {name} | {gbps:.2} | {:.2} |", gbps / c_rate);
    }
}

fn bulk(addr: SocketAddr, total: u64) -> f64 {
    let Ok(stream) = TcpStream::connect(addr) else {
        return f64::NAN;
    };
    let Ok(mut reader) = stream.try_clone() else {
        return f64::NAN;
    };
    let mut writer = stream;
    let start = Instant::now();
    let w = std::thread::spawn(move || {
        let chunk = vec![b'z'; 256 * 1024];
        let mut sent = 0u64;
        while sent < total {
            let n = chunk.len().min((total - sent) as usize);
            if writer.write_all(&chunk[..n]).is_err() {
                break;
            }
            sent += n as u64;
        }
        let _ = writer.shutdown(std::net::Shutdown::Write);
    });
    let mut buf = vec![0u8; 256 * 1024];
    let mut got = 0u64;
    while got < total {
        match reader.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n as u64,
        }
    }
    let _ = w.join();
    got as f64 / start.elapsed().as_secs_f64() / 1e9
}

/// UDP datagrams per second through each server.
fn scenario_udp(c: &Option<PathBuf>) {
    print_header(
        "UDP: 64 B datagrams, 50 clients, closed loop, 5 s",
        &["server", "datagrams/s", "vs ours", "loss %"],
    );
    let mut servers = vec![start_ours("echo-reactor", &[])];
    if let Some(bin) = c {
        servers.push(start_c(bin, true));
    }
    let mut ours = f64::NAN;
    for sut in servers {
        let Some(udp) = sut.udp else { continue };
        // Touch the socket first so a dead UDP port shows up as an error.
        let probe = UdpSocket::bind("127.0.0.1:0").ok();
        if let Some(p) = &probe {
            let _ = p.send_to(b"x", udp);
        }
        let r = load(
            &format!("udp://{udp}"),
            &[
                "--connections",
                "50",
                "--duration",
                "5",
                "--max-loss",
                "100",
            ],
        );
        if sut.name == "echo-reactor" {
            ours = r.msgs_per_sec;
        }
        let loss = json_number_from_errors(&r);
        println!(
            "| {} | {:.0} | {:.2} | {loss} |",
            sut.name,
            r.msgs_per_sec,
            r.msgs_per_sec / ours
        );
    }
}

fn json_number_from_errors(r: &Load) -> String {
    if r.messages > 0.0 {
        format!("{:.2}", 100.0 * r.errors / (r.messages + r.errors))
    } else {
        "-".into()
    }
}

/// `--threads 1` against `--threads 2`, the generator on two loops too.
fn scenario_threads() {
    print_header(
        "scaling with --threads (2 cores shared with the generator)",
        &[
            "server",
            "msgs/s",
            "vs 1 loop",
            "server CPU s",
            "generator CPU s",
        ],
    );
    let mut one = f64::NAN;
    for threads in [1, 2] {
        let sut = start_ours(
            &format!("echo-reactor --threads {threads}"),
            &["--threads", &threads.to_string()],
        );
        let before = cpu_ns(sut.pid());
        let r = load(
            &format!("tcp://{}", sut.tcp),
            &["--connections", "500", "--duration", "5", "--threads", "2"],
        );
        let server_cpu = (cpu_ns(sut.pid()) - before) as f64 / 1e9;
        if threads == 1 {
            one = r.msgs_per_sec;
        }
        println!(
            "| {} | {:.0} | {:.2} | {server_cpu:.2} | {:.2} |",
            sut.name,
            r.msgs_per_sec,
            r.msgs_per_sec / one,
            r.gen_cpu_ns as f64 / 1e9
        );
    }
}

/// 19,000 connections held for 60 s, every reply verified: as many as fit
/// under a 20,000-descriptor limit per process, with the generator's
/// connections split over two loops.
fn scenario_many() {
    let conns = 19_000;
    print_header(
        &format!("{conns} concurrent connections for 60 s (generator: --threads 2)"),
        &[
            "server",
            "msgs/s",
            "p99 us",
            "errors",
            "peak fds",
            "peak RSS MiB",
        ],
    );
    let sut = start_ours("echo-reactor", &[]);
    let pid = sut.pid();
    let done = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let sampler = {
        let done = std::sync::Arc::clone(&done);
        std::thread::spawn(move || {
            let (mut fds, mut rss) = (0, 0);
            while !done.load(std::sync::atomic::Ordering::Relaxed) {
                fds = fds.max(support::procfs::fd_count(pid));
                rss = rss.max(rss_bytes(pid));
                std::thread::sleep(Duration::from_millis(500));
            }
            (fds, rss)
        })
    };
    let r = load(
        &format!("tcp://{}", sut.tcp),
        &[
            "--connections",
            &conns.to_string(),
            "--threads",
            "2",
            "--duration",
            "60",
        ],
    );
    done.store(true, std::sync::atomic::Ordering::Relaxed);
    let (fds, rss) = sampler.join().unwrap_or((0, 0));
    println!(
        "| {} | {:.0} | {:.0} | {} | {fds} | {:.1} |",
        sut.name,
        r.msgs_per_sec,
        r.p99_us,
        r.errors,
        rss as f64 / (1 << 20) as f64
    );
}
