//! What the benches share: our server (and the C baseline) in its own
//! process, the load generator run and read back, perf's syscall count,
//! and what `/proc` tells about a process (CPU time, RSS, open descriptors).
//!
//! Each bench includes this with `mod support;` and uses the parts it
//! needs, hence the `dead_code` allowance where the module is included.

use std::io::{BufRead, BufReader, Read};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// RSS and descriptor counts, the same code the tests use.
#[path = "../../tests/common/procfs.rs"]
pub mod procfs;

/// Certificates made at run time and a blocking rustls client, the tests'.
#[path = "../../tests/common/tls.rs"]
pub mod tls;

/// A real HAProxy started from README.md's configurations, the tests'.
#[path = "../../tests/common/haproxy.rs"]
pub mod haproxy;

/// How long the tests' helpers wait for a socket (they read it as
/// `super::IO_TIMEOUT`).
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Our release binary, built by `cargo bench`.
pub const OURS: &str = env!("CARGO_BIN_EXE_echo-reactor");

/// `echo-reactor serve` in its own process, so its CPU and memory are not
/// the bench's. Killed on drop; [`ServerChild::stop`] shuts it down
/// gracefully.
pub struct ServerChild {
    pub child: Child,
    /// Where its first (TCP) socket listens.
    pub addr: SocketAddr,
}

impl ServerChild {
    /// Starts the release binary with `serve --tcp 127.0.0.1:0` plus
    /// `extra`, and waits for its `listening on tcp://...` line.
    pub fn start(extra: &[&str]) -> ServerChild {
        let mut child = Command::new(env!("CARGO_BIN_EXE_echo-reactor"))
            .args(["serve", "--tcp", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn echo-reactor serve");
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let addr = line
            .trim()
            .strip_prefix("listening on tcp://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no listening line from the server: {line:?}"));
        ServerChild { child, addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait: the graceful path an operator uses.
    pub fn stop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Nanoseconds the process has spent on a CPU, all threads.
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}

/// A server process under test, killed on drop.
pub struct Sut {
    /// Its name in the tables.
    pub name: String,
    pub child: Child,
    /// Where it listens for TCP.
    pub tcp: SocketAddr,
    /// Where it listens for UDP, if it does.
    pub udp: Option<SocketAddr>,
    /// What it answers: the examples uppercase, as the tutorials do.
    pub expect: &'static str,
}

impl Drop for Sut {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Sut {
    /// Its process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port")
}

/// Waits (10 s at most) until a connection to `addr` succeeds.
pub fn wait_for_port(addr: SocketAddr) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    panic!("nothing listens on {addr}");
}

/// Our server (`--tcp` and `--udp` on one free port, plus `extra`).
pub fn start_ours(name: &str, extra: &[&str]) -> Sut {
    start_echo_reactor(Path::new(OURS), name, extra)
}

/// An `echo-reactor` binary, ours or another build of it (a baseline from
/// an older commit), started as [`start_ours`] does.
pub fn start_echo_reactor(bin: &Path, name: &str, extra: &[&str]) -> Sut {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let child = Command::new(bin)
        .args([
            "serve",
            "--tcp",
            &addr.to_string(),
            "--udp",
            &addr.to_string(),
        ])
        .args(extra)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn our server");
    wait_for_port(addr);
    Sut {
        name: name.to_string(),
        child,
        tcp: addr,
        udp: Some(addr),
        expect: "echo",
    }
}

/// Builds the C baseline once beside the bench's own executable; `None`
/// without a C compiler (the tables then leave it out).
pub fn build_c_baseline() -> Option<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("benches/c/epoll_echo.c");
    // Beside the bench binary, so CARGO_TARGET_DIR is honoured.
    let out_dir = std::env::current_exe().ok()?.parent()?.join("bench-bin");
    std::fs::create_dir_all(&out_dir).ok()?;
    let out = out_dir.join("c-epoll");
    let ok = Command::new("cc")
        .args(["-O2", "-o"])
        .arg(&out)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("(cc failed: C baseline left out)");
        return None;
    }
    Some(out)
}

/// The C baseline; `short_read`: with its `-s` shortcut.
pub fn start_c(bin: &Path, short_read: bool) -> Sut {
    let port = free_port();
    let addr: SocketAddr = format!("127.0.0.1:{port}").parse().expect("addr");
    let mut cmd = Command::new(bin);
    if short_read {
        cmd.arg("-s");
    }
    let child = cmd
        .args(["-u", &addr.to_string(), &addr.to_string()])
        .stdout(Stdio::null())
        .spawn()
        .expect("spawn C server");
    wait_for_port(addr);
    Sut {
        name: if short_read { "c-epoll -s" } else { "c-epoll" }.to_string(),
        child,
        tcp: addr,
        udp: Some(addr),
        expect: "echo",
    }
}

/// What one `echo-reactor load --json` run reported.
#[derive(Debug, Default, Clone, Copy)]
pub struct Load {
    /// Messages answered within the window.
    pub messages: f64,
    /// Every message sent, ramp and drain included.
    pub sent: f64,
    pub msgs_per_sec: f64,
    pub p99_us: f64,
    /// Errors of every class, summed.
    pub errors: f64,
    /// The generator's own CPU time, in ns.
    pub gen_cpu_ns: u64,
}

/// A number field from the load generator's JSON, NaN when missing.
pub fn json_number(json: &str, key: &str) -> f64 {
    echo_reactor::load::output::json_number(json, key).unwrap_or(f64::NAN)
}

/// Runs `echo-reactor load URL ARGS --json` and reads its report.
pub fn load(url: &str, args: &[&str]) -> Load {
    load_with_json(url, args).0
}

/// [`load`], and the report's JSON for the figures [`Load`] leaves out.
pub fn load_with_json(url: &str, args: &[&str]) -> (Load, String) {
    let child = Command::new(OURS)
        .arg("load")
        .arg(url)
        .args(args)
        .arg("--json")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn load generator");
    let pid = child.id();
    let mut last_cpu = 0;
    let out = {
        let mut child = child;
        let mut stdout = child.stdout.take().expect("piped");
        let reader = std::thread::spawn(move || {
            let mut s = String::new();
            let _ = stdout.read_to_string(&mut s);
            s
        });
        // schedstat vanishes with the process: sample until it exits.
        while child.try_wait().ok().flatten().is_none() {
            last_cpu = cpu_ns(pid).max(last_cpu);
            std::thread::sleep(Duration::from_millis(50));
        }
        reader.join().unwrap_or_default()
    };
    let errors = [
        "connect", "reset", "timeout", "mismatch", "lost", "closed", "io", "tls",
    ]
    .iter()
    .map(|k| json_number(&out, k))
    .filter(|v| v.is_finite())
    .sum();
    let report = Load {
        messages: json_number(&out, "messages"),
        sent: json_number(&out, "sent"),
        msgs_per_sec: json_number(&out, "msgs_per_sec"),
        p99_us: json_number(&out, "p99"),
        errors,
        gen_cpu_ns: last_cpu,
    };
    (report, out)
}

/// Counts the syscalls `pid` makes while `during` runs, with perf; `None`
/// when perf is missing or not permitted.
pub fn count_syscalls<T>(pid: u32, during: impl FnOnce() -> T) -> (Option<u64>, T) {
    let perf = Command::new("perf")
        .args(["stat", "-x,", "-e", "raw_syscalls:sys_enter", "-p"])
        .arg(pid.to_string())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn();
    let Ok(perf) = perf else {
        return (None, during());
    };
    // Let perf attach before the traffic starts.
    std::thread::sleep(Duration::from_millis(300));
    let result = during();
    // SAFETY: kill(2) on our own child; SIGINT makes perf print and exit.
    unsafe { libc::kill(perf.id() as i32, libc::SIGINT) };
    let Ok(out) = perf.wait_with_output() else {
        return (None, result);
    };
    let text = String::from_utf8_lossy(&out.stderr);
    let count = text
        .lines()
        .find(|l| l.contains("raw_syscalls:sys_enter"))
        .and_then(|l| l.split(',').next())
        .and_then(|n| n.trim().parse().ok());
    (count, result)
}

/// A table's title and header row, Markdown.
pub fn print_header(title: &str, cols: &[&str]) {
    println!("\n## {title}\n");
    println!("| {} |", cols.join(" | "));
    println!("|{}", "---|".repeat(cols.len()));
}

/// The scenarios named after `--` on `cargo bench`'s command line (all of
/// them when none is named), or `None` when the bench was not started by
/// `cargo bench` (`cargo test` runs bench binaries too): then it says how
/// to run it and does nothing.
#[allow(dead_code)]
pub fn scenarios(bench: &str) -> Option<Vec<String>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("{bench} bench: run it with `cargo bench --bench {bench} [-- SCENARIO]`");
        return None;
    }
    Some(args.into_iter().filter(|a| !a.starts_with("--")).collect())
}
