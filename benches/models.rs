//! The five IO models of the learning path side by side, as the examples
//! that run them (docs/GUIDE.md, section 1): blocking (`blocking`, and
//! `threaded` beside it), non-blocking polling (`nonblocking`), IO
//! multiplexing with `poll(2)` (`poll`) and with epoll (`reactor`),
//! signal-driven IO (`sigio`) and completion-based IO on io_uring
//! (`uring`). Three scenarios, each a table:
//!
//! - `pingpong`: our load generator at 10, 100 and 1,000 connections
//!   (closed loop, 64-byte messages, one in flight per connection, 3 s,
//!   every reply checked: the examples uppercase). Messages per second and
//!   p99 counted inside the window only; a *newcomer* that connects 1 s
//!   into the run and sends one message, timed (the blocking server leaves
//!   it in its backlog); peak threads; peak RSS growth per connection.
//! - `idle`: 10, 1,000 and 10,000 idle connections held open by the bench,
//!   then the server's CPU over one quiet second, and one active client's
//!   rate and the server's CPU per message beside those idle ones: what a
//!   model pays per call for connections that have nothing to say.
//! - `syscalls`: every system call of the server process (all threads),
//!   counted by `perf stat -e raw_syscalls:sys_enter` around its whole
//!   life, divided by the messages of a 10-connection ping-pong. The real
//!   server (`echo-reactor serve --mode upper`) and `uring --no-batch` run
//!   beside the examples.
//!
//! ```text
//! cargo bench --bench models                          # all three, about 3 minutes
//! cargo bench --bench models -- idle                  # one scenario: pingpong | idle | syscalls
//! cargo bench --bench models -- pingpong poll 1000    # narrowed to models and sizes
//! ```
//!
//! It builds the examples first (`cargo build --release --examples`).
//! Everything shares the machine with the load generator, so compare
//! models within one run; BENCHMARKS.md ("The five IO models") has ranges
//! from several runs. Nothing is asserted.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[allow(dead_code)]
mod support;

use echo_reactor::load::{self, LoadConfig, Proto, Report, Target};
use echo_reactor::Mode;
use support::cpu_ns;
use support::procfs::{fd_count, rss_bytes};

const MODELS: [&str; 7] = [
    "blocking",
    "threaded",
    "nonblocking",
    "poll",
    "sigio",
    "reactor",
    "uring",
];
/// The models that can hold connections without serving them one by one.
const IDLE_MODELS: [&str; 5] = ["nonblocking", "poll", "sigio", "reactor", "uring"];
const SIZES: [usize; 3] = [10, 100, 1000];
const IDLE_SIZES: [usize; 3] = [10, 1000, 10_000];
const SCENARIOS: [&str; 3] = ["pingpong", "idle", "syscalls"];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!(
            "models bench: run it with `cargo bench --bench models [-- SCENARIO|MODEL|CONNS]`"
        );
        return;
    }
    let picked = |all: &[&'static str]| -> Vec<&'static str> {
        let named: Vec<&'static str> = all
            .iter()
            .copied()
            .filter(|m| args.iter().any(|a| a == m))
            .collect();
        if named.is_empty() {
            all.to_vec()
        } else {
            named
        }
    };
    let scenarios = picked(&SCENARIOS);
    let models = picked(&MODELS);
    let sizes: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
    let sizes_or = |default: &[usize]| {
        if sizes.is_empty() {
            default.to_vec()
        } else {
            sizes.clone()
        }
    };
    if !build_examples() {
        println!("cannot build the examples: run `cargo build --release --examples`");
        return;
    }
    if scenarios.contains(&"pingpong") {
        print_header(
            "ping-pong, 64 B, closed loop, 3 s",
            &[
                "model",
                "connections",
                "msgs/s",
                "p99",
                "newcomer's round trip",
                "threads",
                "RSS per connection",
                "errors",
            ],
        );
        for model in &models {
            for &conns in &sizes_or(&SIZES) {
                pingpong(model, conns);
            }
        }
    }
    if scenarios.contains(&"idle") {
        print_header(
            "idle connections: CPU at rest, then one active client for 2 s",
            &[
                "model",
                "idle connections",
                "CPU at rest",
                "msgs/s, one client",
                "server CPU per message",
            ],
        );
        for model in models.iter().filter(|m| IDLE_MODELS.contains(m)) {
            for &idle in &sizes_or(&IDLE_SIZES) {
                idle_cost(model, idle);
            }
        }
    }
    if scenarios.contains(&"syscalls") {
        print_header(
            "system calls per message, 10 connections, 64 B ping-pong, 3 s (perf)",
            &[
                "server",
                "msgs/s",
                "syscalls per message",
                "of which io_uring_enter",
            ],
        );
        let mut runs: Vec<(&str, Vec<&str>)> =
            models.iter().map(|m| (*m, vec!["127.0.0.1:0"])).collect();
        if models.contains(&"uring") {
            runs.push(("uring", vec!["127.0.0.1:0", "--no-batch"]));
        }
        runs.push(("server", vec![]));
        for (model, args) in runs {
            syscalls(model, &args);
        }
    }
}

fn print_header(title: &str, cols: &[&str]) {
    println!("\n## {title}\n");
    println!("| {} |", cols.join(" | "));
    println!("|{}", "---|".repeat(cols.len()));
}

/// Where cargo put the examples: beside this bench's own executable
/// (`<target>/release/deps/models-HASH` -> `<target>/release/examples`),
/// so `CARGO_TARGET_DIR` and `--target-dir` are followed.
fn examples_dir() -> PathBuf {
    std::env::current_exe()
        .ok()
        .and_then(|exe| Some(exe.parent()?.parent()?.join("examples")))
        .unwrap_or_else(|| PathBuf::from("target/release/examples"))
}

fn build_examples() -> bool {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    Command::new(cargo)
        .args(["build", "--release", "--examples", "--quiet"])
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .status()
        .is_ok_and(|s| s.success())
}

/// A model's server in its own process group (with perf, when it runs
/// under perf); the group is killed on drop.
struct Model {
    child: Child,
    addr: SocketAddr,
}

impl Model {
    /// Starts `model` (an example's name, or "server" for `echo-reactor
    /// serve --mode upper`) on 127.0.0.1:0, optionally under `prefix`
    /// (perf), and reads its `listening on` line.
    fn start(model: &str, args: &[&str], prefix: &[&str]) -> Option<Model> {
        let program = if model == "server" {
            PathBuf::from(env!("CARGO_BIN_EXE_echo-reactor"))
        } else {
            examples_dir().join(model)
        };
        let mut cmd = match prefix.split_first() {
            Some((first, rest)) => {
                let mut c = Command::new(first);
                c.args(rest).arg(&program);
                c
            }
            None => Command::new(&program),
        };
        if model == "server" {
            cmd.args(["serve", "--tcp", "127.0.0.1:0", "--mode", "upper"])
                .env("RUST_LOG", "warn");
        }
        let mut child = cmd
            .args(args)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .process_group(0)
            .spawn()
            .ok()?;
        let mut line = String::new();
        BufReader::new(child.stdout.take()?)
            .read_line(&mut line)
            .ok()?;
        let addr = line
            .trim()
            .strip_prefix("listening on tcp://")?
            .parse()
            .ok()?;
        Some(Model { child, addr })
    }

    /// SIGINT to the group (perf prints its counts and exits), then waits.
    fn interrupt(&mut self) {
        // SAFETY: kill(2) on the process group we created.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGINT) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while matches!(self.child.try_wait(), Ok(None)) && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Model {
    fn drop(&mut self) {
        // SAFETY: kill(2) on the process group we created.
        unsafe { libc::kill(-(self.child.id() as i32), libc::SIGKILL) };
        let _ = self.child.wait();
    }
}

fn could_not_start(model: &str, cols: usize) {
    let path = examples_dir().join(model);
    println!(
        "| {model} | could not start {} |{}",
        path.display(),
        " |".repeat(cols - 2)
    );
}

fn threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn ping_pong(addr: SocketAddr, connections: usize, duration: Duration) -> std::io::Result<Report> {
    let config = LoadConfig {
        connections,
        duration,
        expect: Mode::Upper,
        drain_timeout: Duration::from_millis(500),
        ..LoadConfig::new(Target {
            proto: Proto::Tcp,
            addr,
        })
    };
    load::run(&config).map_err(|e| std::io::Error::other(e.to_string()))
}

/// One client that arrives 1 s into the run and sends one message: its
/// round trip, or `None` when no reply came within 2.5 s.
fn newcomer(addr: SocketAddr) -> std::thread::JoinHandle<Option<Duration>> {
    std::thread::spawn(move || {
        std::thread::sleep(Duration::from_secs(1));
        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2)).ok()?;
        s.set_read_timeout(Some(Duration::from_millis(2500))).ok()?;
        let _ = s.set_nodelay(true);
        let started = Instant::now();
        s.write_all(&[b'x'; 64]).ok()?;
        let mut reply = [0u8; 64];
        s.read_exact(&mut reply).ok()?;
        Some(started.elapsed())
    })
}

fn pingpong(model: &str, conns: usize) {
    let Some(server) = Model::start(model, &["127.0.0.1:0"], &[]) else {
        return could_not_start(model, 8);
    };
    let pid = server.child.id();
    std::thread::sleep(Duration::from_millis(100));
    let base = rss_bytes(pid);
    // Sample the peaks while the load runs.
    let done = Arc::new(AtomicBool::new(false));
    let sampler = {
        let done = Arc::clone(&done);
        std::thread::spawn(move || {
            let (mut t, mut rss) = (0, 0);
            while !done.load(Ordering::Relaxed) {
                t = t.max(threads(pid));
                rss = rss.max(rss_bytes(pid));
                std::thread::sleep(Duration::from_millis(100));
            }
            (t, rss)
        })
    };
    let late = newcomer(server.addr);
    let report = ping_pong(server.addr, conns, Duration::from_secs(3));
    done.store(true, Ordering::Relaxed);
    let (peak_threads, peak_rss) = sampler.join().unwrap_or((0, 0));
    let late = match late.join().ok().flatten() {
        Some(t) => format!("{:.1} ms", t.as_secs_f64() * 1000.0),
        None => "none in 2.5 s".into(),
    };
    match report {
        Ok(r) => println!(
            "| {model} | {conns} | {:.0} | {:.1} ms | {late} | {peak_threads} | {:.1} KiB | {} |",
            r.msgs_per_sec(),
            r.percentiles_us()[2] as f64 / 1000.0,
            peak_rss.saturating_sub(base) as f64 / conns as f64 / 1024.0,
            r.errors.total()
        ),
        Err(e) => println!("| {model} | {conns} | run failed: {e} | | | | | |"),
    }
}

/// Opens `n` connections to `addr` and waits until the server holds them
/// (its descriptor count), in batches the listen backlog can take.
fn open_idle(pid: u32, addr: SocketAddr, n: usize) -> Option<Vec<TcpStream>> {
    let base = fd_count(pid);
    let mut conns = Vec::with_capacity(n);
    while conns.len() < n {
        for _ in 0..(n - conns.len()).min(100) {
            conns.push(TcpStream::connect_timeout(&addr, Duration::from_secs(5)).ok()?);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        while fd_count(pid) < base + conns.len() {
            if Instant::now() > deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }
    Some(conns)
}

fn idle_cost(model: &str, idle: usize) {
    let Some(server) = Model::start(model, &["127.0.0.1:0"], &[]) else {
        return could_not_start(model, 5);
    };
    let pid = server.child.id();
    let Some(held) = open_idle(pid, server.addr, idle) else {
        println!("| {model} | {idle} | could not open the connections | | |");
        return;
    };
    let (cpu0, t0) = (cpu_ns(pid), Instant::now());
    std::thread::sleep(Duration::from_secs(1));
    let at_rest = (cpu_ns(pid) - cpu0) as f64 / t0.elapsed().as_nanos() as f64;
    let cpu1 = cpu_ns(pid);
    let report = ping_pong(server.addr, 1, Duration::from_secs(2));
    let cpu = cpu_ns(pid) - cpu1;
    match report {
        Ok(r) => println!(
            "| {model} | {idle} | {:.0}% | {:.0} | {:.1} us |",
            at_rest * 100.0,
            r.msgs_per_sec(),
            cpu as f64 / 1000.0 / r.messages.max(1) as f64
        ),
        Err(e) => println!(
            "| {model} | {idle} | {:.0}% | run failed: {e} | |",
            at_rest * 100.0
        ),
    }
    drop(held);
}

fn syscalls(model: &str, args: &[&str]) {
    let name = if args.contains(&"--no-batch") {
        format!("{model} --no-batch")
    } else if model == "server" {
        "echo-reactor serve".into()
    } else {
        model.to_string()
    };
    let out = std::env::temp_dir().join(format!("models-perf-{}.csv", std::process::id()));
    let out_arg = out.to_string_lossy().to_string();
    let perf = [
        "perf",
        "stat",
        "-x,",
        "-o",
        &out_arg,
        "-e",
        "raw_syscalls:sys_enter,syscalls:sys_enter_io_uring_enter",
        "--",
    ];
    let Some(mut server) = Model::start(model, args, &perf) else {
        println!(
            "| {name} | could not start it under perf (is perf installed and permitted?) | | |"
        );
        return;
    };
    let report = ping_pong(server.addr, 10, Duration::from_secs(3));
    server.interrupt();
    let csv = std::fs::read_to_string(&out).unwrap_or_default();
    let _ = std::fs::remove_file(&out);
    let count = |event: &str| -> Option<u64> {
        csv.lines()
            .find(|l| l.split(',').nth(2) == Some(event))
            .and_then(|l| l.split(',').next()?.parse().ok())
    };
    match (report, count("raw_syscalls:sys_enter")) {
        (Ok(r), Some(all)) => {
            let per = |n: u64| n as f64 / r.messages.max(1) as f64;
            let enter = count("syscalls:sys_enter_io_uring_enter").unwrap_or(0);
            println!(
                "| {name} | {:.0} | {:.2} | {:.2} |",
                r.msgs_per_sec(),
                per(all),
                per(enter)
            );
        }
        (Ok(_), None) => println!("| {name} | | perf counted nothing (not permitted?) | |"),
        (Err(e), _) => println!("| {name} | run failed: {e} | | |"),
    }
}
