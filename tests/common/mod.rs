//! Test helpers: start the real binary or an in-process server on port 0,
//! talk to it over loopback, read its footprint from /proc, stop it.
//!
//! Every socket made here has a read timeout, every wait has a deadline,
//! and a child server is killed when its handle drops, so a failing test
//! never hangs the suite.
#![allow(dead_code)] // each test file uses a different part of this kit

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream, UdpSocket};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use echo_reactor::server::{Server, ServerConfig, ServerHandle};
use echo_reactor::Stats;

pub mod haproxy;
pub mod netns;
mod procfs;
pub mod tls;
pub use procfs::{fd_count, rss_bytes};

/// How long any single network wait in a test may take.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// The real `echo-reactor serve`, running as a child process.
pub struct ServerProcess {
    child: Child,
    /// TCP addresses from the `listening on tcp://` lines.
    pub tcp: Vec<SocketAddr>,
    /// UDP addresses from the `listening on udp://` lines.
    pub udp: Vec<SocketAddr>,
    /// TLS addresses from the `listening on tls://` lines.
    pub tls: Vec<SocketAddr>,
    /// The URL from the `listening on http://` line (`--metrics`).
    pub metrics: Option<String>,
    stderr: Arc<Mutex<String>>,
    /// Copies stderr into `stderr`; ends when the child's stderr closes.
    stderr_reader: Option<JoinHandle<()>>,
}

/// Starts `echo-reactor serve ARGS`; with no `--tcp`/`--udp` in ARGS, adds
/// `--tcp 127.0.0.1:0 --udp 127.0.0.1:0`. Waits for the listening lines.
pub fn start_server(args: &[&str]) -> ServerProcess {
    start_binary(&serve_argv(args), None)
}

/// Like [`start_server`], with `RUST_LOG` set to `log_filter` (like
/// `echo_reactor=trace`), so a test can wait for what the server says it did.
pub fn start_server_logged(args: &[&str], log_filter: &str) -> ServerProcess {
    start_binary_logged(&serve_argv(args), None, Some(log_filter))
}

/// `serve ARGS`, with TCP and UDP on 127.0.0.1:0 unless ARGS name an address.
fn serve_argv(args: &[&str]) -> Vec<String> {
    let mut argv: Vec<String> = vec!["serve".into()];
    if !args.iter().any(|a| *a == "--tcp" || *a == "--udp") {
        argv.extend(["--tcp", "127.0.0.1:0", "--udp", "127.0.0.1:0"].map(String::from));
    }
    argv.extend(args.iter().map(|a| a.to_string()));
    argv
}

/// Starts `serve` with a TLS listener on 127.0.0.1:0 holding `pki`'s
/// certificate, plus `extra` arguments.
#[allow(dead_code)]
pub fn start_tls_server(pki: &tls::Pki, extra: &[&str]) -> ServerProcess {
    let mut argv: Vec<String> = vec!["serve".into()];
    argv.extend(pki.serve_args());
    argv.extend(extra.iter().map(|s| s.to_string()));
    start_binary(&argv, None)
}

/// Spawns the binary with `argv` (optionally through `prefix`, like
/// `prlimit --nofile=64 --`) and waits for every listening line.
pub fn start_binary(argv: &[String], prefix: Option<&[&str]>) -> ServerProcess {
    start_binary_logged(argv, prefix, None)
}

/// Starts `echo-reactor serve --tcp 127.0.0.1:0 EXTRA` with the trace
/// filter on (`RUST_LOG=echo_reactor=trace`), as the guide runs it.
pub fn start_traced_server(extra: &[&str]) -> ServerProcess {
    let mut argv: Vec<String> = ["serve", "--tcp", "127.0.0.1:0"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    argv.extend(extra.iter().map(|s| s.to_string()));
    start_binary_logged(&argv, None, Some("echo_reactor=trace"))
}

/// Like [`start_binary`], with `RUST_LOG` set to `log_filter` when given
/// (otherwise the caller's `RUST_LOG`, or `info`).
pub fn start_binary_logged(
    argv: &[String],
    prefix: Option<&[&str]>,
    log_filter: Option<&str>,
) -> ServerProcess {
    let bin = env!("CARGO_BIN_EXE_echo-reactor");
    let mut cmd = match prefix {
        Some(p) => {
            let mut c = Command::new(p[0]);
            c.args(&p[1..]).arg(bin);
            c
        }
        None => Command::new(bin),
    };
    cmd.args(argv)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    match log_filter {
        Some(filter) => {
            cmd.env("RUST_LOG", filter);
        }
        None if std::env::var_os("RUST_LOG").is_none() => {
            cmd.env("RUST_LOG", "info");
        }
        None => {}
    }
    let mut child = cmd.spawn().expect("spawn echo-reactor");
    let stderr = Arc::new(Mutex::new(String::new()));
    let stderr_reader = {
        let pipe = child.stderr.take().expect("stderr piped");
        let sink = Arc::clone(&stderr);
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        })
    };
    let listener = |a: &String| a == "--tcp" || a == "--udp" || a == "--tls";
    let expected = argv
        .iter()
        .filter(|a| listener(a))
        .count()
        .max(if argv.iter().any(listener) { 0 } else { 2 });
    let (tx, rx) = std::sync::mpsc::channel();
    let stdout = child.stdout.take().expect("stdout piped");
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut server = ServerProcess {
        child,
        tcp: Vec::new(),
        udp: Vec::new(),
        tls: Vec::new(),
        metrics: None,
        stderr,
        stderr_reader: Some(stderr_reader),
    };
    let expected = expected + usize::from(argv.iter().any(|a| a == "--metrics"));
    let deadline = Instant::now() + IO_TIMEOUT;
    while server.tcp.len()
        + server.udp.len()
        + server.tls.len()
        + usize::from(server.metrics.is_some())
        < expected
    {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = match rx.recv_timeout(left) {
            Ok(line) => line,
            Err(_) => panic!(
                "server printed no listening line in time; stderr:\n{}",
                server.stderr()
            ),
        };
        if let Some(a) = line.strip_prefix("listening on tcp://") {
            server.tcp.push(a.parse().expect("tcp address"));
        } else if let Some(a) = line.strip_prefix("listening on udp://") {
            server.udp.push(a.parse().expect("udp address"));
        } else if let Some(a) = line.strip_prefix("listening on tls://") {
            server.tls.push(a.parse().expect("tls address"));
        } else if let Some(url) = line.strip_prefix("listening on ") {
            server.metrics = Some(url.to_string());
        }
    }
    server
}

impl ServerProcess {
    /// The first TCP address.
    pub fn tcp_addr(&self) -> SocketAddr {
        self.tcp[0]
    }

    /// The first UDP address.
    pub fn udp_addr(&self) -> SocketAddr {
        self.udp[0]
    }

    /// The metrics endpoint's address, from its `listening on
    /// http://ADDR/metrics` line (start the server with `--metrics`).
    pub fn metrics_addr(&self) -> SocketAddr {
        self.metrics
            .as_deref()
            .and_then(|u| u.strip_prefix("http://"))
            .and_then(|u| u.strip_suffix("/metrics"))
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no metrics address in {:?}", self.metrics))
    }

    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Everything the server wrote to stderr so far.
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits up to `limit` for a line of stderr containing `needle`.
    pub fn wait_for_log(&self, needle: &str, limit: Duration) -> bool {
        wait_until(limit, || self.stderr.lock().unwrap().contains(needle))
    }

    /// How many connections the server has stopped reading for
    /// backpressure, from its trace (start it with `echo_reactor=trace`):
    /// those whose last word on the matter was "reading paused".
    pub fn paused_connections(&self) -> usize {
        let log = self.stderr.lock().unwrap();
        let mut paused = std::collections::BTreeSet::new();
        for line in log.lines() {
            let Some((key, what)) = line
                .split_once("conn ")
                .and_then(|(_, rest)| rest.split_once(|c: char| !c.is_ascii_digit()))
            else {
                continue;
            };
            if what.contains("backpressure: reading paused") {
                paused.insert(key.to_string());
            } else if what.contains("reading resumed") || what.contains(": accepted") {
                // A new connection may reuse the key of a closed one.
                paused.remove(key);
            }
        }
        paused.len()
    }

    /// All of stderr, once the child has exited: waits for the reader
    /// thread to reach the end of the pipe, so the last lines are there.
    pub fn final_stderr(&mut self) -> String {
        if let Some(reader) = self.stderr_reader.take() {
            let _ = reader.join();
        }
        self.stderr()
    }

    /// Sends `signal` (like `libc::SIGTERM`).
    pub fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child's pid.
        let rc = unsafe { libc::kill(self.child.id() as i32, signal) };
        assert_eq!(rc, 0, "kill failed");
    }

    /// Waits up to `limit` for the child to exit.
    pub fn wait_timeout(&mut self, limit: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + limit;
        loop {
            if let Some(status) = self.child.try_wait().expect("try_wait") {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Sends SIGTERM and expects a clean exit within 5 s.
    pub fn stop(mut self) -> String {
        self.signal(libc::SIGTERM);
        let status = self.wait_timeout(Duration::from_secs(5));
        let stderr = if status.is_some() {
            self.final_stderr()
        } else {
            self.stderr()
        };
        assert!(
            status.is_some_and(|s| s.success()),
            "expected exit 0 after SIGTERM, got {status:?}; stderr:\n{stderr}"
        );
        stderr
    }

    /// Open file descriptors of the server process.
    pub fn fd_count(&self) -> usize {
        fd_count(self.pid())
    }

    /// Resident memory of the server process, in bytes.
    pub fn rss_bytes(&self) -> u64 {
        rss_bytes(self.pid())
    }
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A program from `examples/`, running as a child process; killed on drop.
pub struct Example {
    child: Child,
    /// The address from its `listening on` line.
    pub addr: SocketAddr,
}

impl Example {
    /// The child's pid.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where cargo put the example `name`: beside this test's own directory
/// (`cargo test` builds the examples there), so a `CARGO_TARGET_DIR` is
/// followed.
pub fn example_path(name: &str) -> std::path::PathBuf {
    let exe = std::env::current_exe().expect("test exe");
    exe.parent()
        .and_then(|deps| deps.parent())
        .map(|dir| dir.join("examples").join(name))
        .expect("target dir")
}

/// Starts `examples/NAME ARGS` (usually `127.0.0.1:0`) and reads the
/// address from its first `listening on` line. Its stdout stays open and
/// drained to the end, so a second line (custom_mode's UDP) finds a reader.
pub fn start_example(name: &str, args: &[&str]) -> Example {
    let bin = example_path(name);
    assert!(
        bin.exists(),
        "{} was not built: a plain `cargo test --release` builds the examples; \
         with `--test NAME` alone, run `cargo build --release --examples` first",
        bin.display()
    );
    let mut child = Command::new(&bin)
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("spawn example");
    let stdout = child.stdout.take().expect("piped");
    // Read on a thread, so a silent example fails the test in time.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut lines = BufReader::new(stdout).lines().map_while(Result::ok);
        let _ = tx.send(lines.next().unwrap_or_default());
        lines.for_each(drop);
    });
    // The guard exists before any panic below, so the child is killed.
    let mut example = Example {
        child,
        addr: SocketAddr::from(([0, 0, 0, 0], 0)),
    };
    let line = rx.recv_timeout(IO_TIMEOUT).unwrap_or_default();
    example.addr = line
        .trim()
        .split_once("://")
        .and_then(|(_, a)| a.parse().ok())
        .unwrap_or_else(|| panic!("{name}: no listening line: {line:?}"));
    example
}

/// A `Server` running on a thread of this test process.
pub struct InProcess {
    /// Bound TCP addresses.
    pub tcp: Vec<SocketAddr>,
    /// Bound UDP addresses.
    pub udp: Vec<SocketAddr>,
    /// The metrics endpoint, when the config asked for one.
    pub metrics: Option<SocketAddr>,
    handle: ServerHandle,
    thread: Option<JoinHandle<std::io::Result<Stats>>>,
}

/// Binds `config` (addresses usually on port 0) and runs it on a thread.
pub fn start_in_process(config: ServerConfig) -> InProcess {
    let mut server = Server::bind(config).expect("bind in-process server");
    let tcp = server.tcp_addrs().to_vec();
    let udp = server.udp_addrs().to_vec();
    let metrics = server.metrics_addr();
    let handle = server.handle();
    let thread = std::thread::spawn(move || server.run());
    InProcess {
        tcp,
        udp,
        metrics,
        handle,
        thread: Some(thread),
    }
}

/// A config with TCP and UDP on 127.0.0.1:0.
pub fn loopback_config() -> ServerConfig {
    config_with(|c| {
        c.tcp = vec!["127.0.0.1:0".parse().unwrap()];
        c.udp = vec!["127.0.0.1:0".parse().unwrap()];
    })
}

/// The default configuration, changed by `set` (the struct is
/// non-exhaustive: built from its default, never field by field).
pub fn config_with(set: impl FnOnce(&mut ServerConfig)) -> ServerConfig {
    let mut config = ServerConfig::default();
    set(&mut config);
    config
}

/// [`loopback_config`], changed by `set`.
pub fn loopback_with(set: impl FnOnce(&mut ServerConfig)) -> ServerConfig {
    let mut config = loopback_config();
    set(&mut config);
    config
}

impl InProcess {
    /// Stops the loop and returns its final counters.
    pub fn stop(mut self) -> Stats {
        self.handle.shutdown().expect("wake server");
        let thread = self.thread.take().expect("running");
        thread
            .join()
            .expect("server thread panicked")
            .expect("server loop failed")
    }
}

impl Drop for InProcess {
    fn drop(&mut self) {
        if let Some(thread) = self.thread.take() {
            let _ = self.handle.shutdown();
            let _ = thread.join();
        }
    }
}

/// The value of `echo_reactor_NAME` (a series without labels) from the
/// metrics endpoint at `addr`, fetched with a plain GET; `None` when the
/// endpoint does not answer or has no such series.
pub fn metric(addr: SocketAddr, name: &str) -> Option<u64> {
    let mut s = connect(addr);
    s.write_all(b"GET /metrics HTTP/1.1\r\nHost: test\r\n\r\n")
        .ok()?;
    let mut text = String::new();
    s.read_to_string(&mut text).ok()?;
    let series = format!("echo_reactor_{name} ");
    text.lines()
        .find_map(|l| l.strip_prefix(&series))
        .and_then(|v| v.trim().parse().ok())
}

/// Connects with read and write timeouts set.
pub fn connect(addr: SocketAddr) -> TcpStream {
    let s = TcpStream::connect_timeout(&addr, IO_TIMEOUT).expect("connect");
    s.set_read_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_write_timeout(Some(IO_TIMEOUT)).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Sends `msg` and reads back exactly as many bytes.
pub fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
    s.write_all(msg).expect("send");
    let mut reply = vec![0; msg.len()];
    s.read_exact(&mut reply).unwrap_or_else(|e| {
        panic!(
            "reading the reply to {:?}: {e}",
            String::from_utf8_lossy(msg)
        )
    });
    reply
}

/// A UDP socket on the same family as `server`, with a read timeout.
pub fn udp_client(server: SocketAddr) -> UdpSocket {
    let local = if server.is_ipv6() {
        "[::1]:0"
    } else {
        "127.0.0.1:0"
    };
    let s = UdpSocket::bind(local).expect("bind udp client");
    s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
    s
}

/// User + system CPU time of process `pid`, in clock ticks (see /proc/PID/stat).
pub fn cpu_ticks(pid: u32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the ")" that ends the command name; utime and stime are 14 and 15.
    let rest = stat.rsplit_once(')').map_or("", |(_, r)| r);
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let get = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    get(11) + get(12)
}

/// Runs `f` while process `pid` (a child of the test) is stopped: SIGSTOP,
/// wait until `/proc` shows it stopped, `f`, SIGCONT. For what must
/// happen while a process cannot read its sockets, like filling a UDP
/// receive buffer.
pub fn while_stopped<T>(pid: u32, f: impl FnOnce() -> T) -> T {
    let pid_t = i32::try_from(pid).expect("pid fits");
    // SAFETY: kill(2) on a child of this test.
    assert_eq!(unsafe { libc::kill(pid_t, libc::SIGSTOP) }, 0, "SIGSTOP");
    let is_stopped = || {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
        // The state is the first field after the ")" that ends the name.
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('T'))
    };
    assert!(wait_until(IO_TIMEOUT, is_stopped), "process {pid} stopped");
    let out = f();
    // SAFETY: as above.
    assert_eq!(unsafe { libc::kill(pid_t, libc::SIGCONT) }, 0, "SIGCONT");
    out
}

/// Polls `cond` every 20 ms until it holds or `limit` passes.
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + limit;
    loop {
        if cond() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// How a run of the binary that was expected to end, ended.
#[derive(Debug)]
pub struct Finished {
    /// The exit status; `None` if it had to be killed at the limit.
    pub status: Option<ExitStatus>,
    /// Everything printed on stdout.
    pub stdout: String,
    /// Everything printed on stderr.
    pub stderr: String,
    /// From spawn to exit (or to the kill).
    pub elapsed: Duration,
}

impl Finished {
    /// The exit code, or a panic that shows the whole run.
    pub fn code(&self) -> i32 {
        match self.status.and_then(|s| s.code()) {
            Some(code) => code,
            None => panic!("no exit code: {self:#?}"),
        }
    }
}

/// Runs `echo-reactor ARGV` to its end, killing it after `limit`.
pub fn run_binary(argv: &[&str], limit: Duration) -> Finished {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_echo-reactor"));
    cmd.args(argv);
    run_to_end(cmd, limit)
}

/// `echo-reactor load ARGS`, run to its end within `limit`.
#[allow(dead_code)]
pub fn run_load(args: &[&str], limit: Duration) -> Finished {
    let mut argv = vec!["load"];
    argv.extend_from_slice(args);
    run_binary(&argv, limit)
}

/// The one JSON object `load --json` printed, or a panic showing the run.
#[allow(dead_code)]
pub fn only_json(out: &Finished) -> serde_json::Value {
    let lines: Vec<&str> = out.stdout.lines().collect();
    assert_eq!(lines.len(), 1, "one JSON line on stdout: {out:#?}");
    serde_json::from_str(lines[0]).unwrap_or_else(|e| panic!("{e}: {out:#?}"))
}

/// Runs `cmd` to its end with stdin closed, stdout and stderr captured,
/// killing it after `limit`.
pub fn run_to_end(cmd: Command, limit: Duration) -> Finished {
    run_command(cmd, Vec::new(), limit)
}

/// Runs `cmd` to its end with `stdin` fed from a thread (so a child that
/// stops reading it cannot block the test), stdout and stderr captured,
/// killing it after `limit`.
pub fn run_command(mut cmd: Command, stdin: Vec<u8>, limit: Duration) -> Finished {
    let started = Instant::now();
    let mut child = cmd
        .env_remove("RUST_BACKTRACE")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("spawn {cmd:?}: {e}"));
    let mut input = child.stdin.take().expect("stdin piped");
    let feeder = std::thread::spawn(move || {
        // A child that ends without reading it all is the caller's story.
        let _ = input.write_all(&stdin);
    });
    let drain = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = pipe.read_to_string(&mut text);
            text
        })
    };
    let out = drain(Box::new(child.stdout.take().expect("stdout piped")));
    let err = drain(Box::new(child.stderr.take().expect("stderr piped")));
    let deadline = started + limit;
    let status = loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    let elapsed = started.elapsed();
    let _ = feeder.join();
    Finished {
        status,
        stdout: out.join().unwrap_or_default(),
        stderr: err.join().unwrap_or_default(),
        elapsed,
    }
}

/// Python's `bytes.upper()`, spelled out by code point so the tests do not
/// share the server's implementation.
pub fn upper(data: &[u8]) -> Vec<u8> {
    data.iter()
        .map(|&b| {
            if (0x61..=0x7a).contains(&b) {
                b - 0x20
            } else {
                b
            }
        })
        .collect()
}

/// An endless, reproducible stream of pseudo-random bytes (xorshift64):
/// a writer and a reader built from the same seed agree on every byte.
#[derive(Debug, Clone)]
pub struct ByteStream {
    state: u64,
    word: [u8; 8],
    used: usize,
}

impl ByteStream {
    /// The stream for `seed`; different seeds give different streams.
    pub fn new(seed: u64) -> Self {
        ByteStream {
            // xorshift's one bad state is 0; mix the seed so 0, 1, 2... differ well.
            state: seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1,
            word: [0; 8],
            used: 8,
        }
    }

    /// Fills `buf` with the next `buf.len()` bytes of the stream.
    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            if self.used == 8 {
                self.state ^= self.state << 13;
                self.state ^= self.state >> 7;
                self.state ^= self.state << 17;
                self.word = self.state.to_le_bytes();
                self.used = 0;
            }
            *b = self.word[self.used];
            self.used += 1;
        }
    }

    /// Reads from `r` until EOF, checking every byte against this stream.
    /// Returns how many bytes arrived; panics at the first wrong byte, or
    /// if the connection fails (a reset instead of a FIN, a timeout).
    /// `pace` runs before each read, to make a slow reader.
    pub fn verify_until_eof(&mut self, r: &mut impl Read, mut pace: impl FnMut(u64)) -> u64 {
        let mut got = vec![0u8; 64 * 1024];
        let mut want = vec![0u8; 64 * 1024];
        let mut total = 0u64;
        loop {
            pace(total);
            let n = match r.read(&mut got) {
                Ok(0) => return total,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => panic!("read failed after {total} good bytes: {e}"),
            };
            self.fill(&mut want[..n]);
            if got[..n] != want[..n] {
                let i = (0..n).find(|&i| got[i] != want[i]).unwrap_or(0);
                panic!(
                    "byte {} is {:#04x}, sent {:#04x}",
                    total + i as u64,
                    got[i],
                    want[i]
                );
            }
            total += n as u64;
        }
    }
}

/// `len` bytes of the stream for `seed`.
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut v = vec![0; len];
    ByteStream::new(seed).fill(&mut v);
    v
}

/// Closes `s` with a reset instead of a FIN (SO_LINGER 0, then close).
pub fn reset_abruptly(s: TcpStream) {
    socket2::SockRef::from(&s)
        .set_linger(Some(Duration::ZERO))
        .expect("SO_LINGER 0");
    drop(s);
}

/// Sockets in TIME_WAIT whose local port is `port` (from /proc/net/tcp{,6}).
pub fn time_wait_count(port: u16) -> usize {
    const TIME_WAIT: &str = "06";
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|table| {
            table
                .lines()
                .skip(1)
                .filter(|line| {
                    let f: Vec<&str> = line.split_whitespace().collect();
                    let local_port = f
                        .get(1)
                        .and_then(|a| a.rsplit_once(':'))
                        .and_then(|(_, p)| u16::from_str_radix(p, 16).ok());
                    local_port == Some(port) && f.get(3) == Some(&TIME_WAIT)
                })
                .map(|_| ())
                .collect::<Vec<_>>()
        })
        .count()
}

/// The last `n` lines of `text`, for a failure message about a long log.
pub fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// A counter from the server's final stats line in `stderr`: `key` is the
/// word before the number (`accepted`, `reset`, `in`), prefixed with `udp `
/// for the UDP half (`udp in`, `udp dropped`).
pub fn final_stat(stderr: &str, key: &str) -> Option<u64> {
    let line = stderr.lines().rev().find(|l| l.contains("final stats"))?;
    // Sections: `tcp accepted ...; udp in ...; tls handshakes ...; proxy
    // headers ...`. A key names its section first (`udp in`, `tls
    // timeout`), or is the TCP section's (`in`, `forced`, `cut`).
    let body = line.split_once("final stats: ").map_or(line, |(_, b)| b);
    let sections: Vec<&str> = body.split("; ").collect();
    let (part, word) = ["udp", "tls", "proxy", "faults"]
        .iter()
        .find_map(|name| {
            let word = key.strip_prefix(name)?.strip_prefix(' ')?;
            let part = sections.iter().find(|s| {
                s.starts_with(&format!("{name} ")) || s.starts_with(&format!("{name}: "))
            })?;
            Some((&part[name.len()..], word))
        })
        .unwrap_or((sections[0], key));
    let rest = format!(" {part} ").replace(['(', ')', ',', ':'], " ");
    let after = rest.split_once(&format!(" {word} "))?.1;
    after
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The kernel's queues for the TCP socket whose local port is `local` and
/// remote port is `remote` (from /proc/net/tcp{,6}): bytes not yet acked
/// by the peer, and bytes received but not yet read by the process.
pub fn tcp_queues(local: u16, remote: u16) -> Option<(u64, u64)> {
    let port = |addr: &str| {
        addr.rsplit_once(':')
            .and_then(|(_, p)| u16::from_str_radix(p, 16).ok())
    };
    ["/proc/net/tcp", "/proc/net/tcp6"]
        .iter()
        .filter_map(|p| std::fs::read_to_string(p).ok())
        .flat_map(|table| table.lines().skip(1).map(String::from).collect::<Vec<_>>())
        .find_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            if port(f.get(1)?) != Some(local) || port(f.get(2)?) != Some(remote) {
                return None;
            }
            let (tx, rx) = f.get(4)?.split_once(':')?;
            Some((
                u64::from_str_radix(tx, 16).ok()?,
                u64::from_str_radix(rx, 16).ok()?,
            ))
        })
}
