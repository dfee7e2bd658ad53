//! Connections per second, one request each (`load --churn 1`, neper's
//! tcp_crr), measured two ways in one run:
//!
//! 1. Servers: our server against the C epoll baseline
//!    (`benches/c/epoll_echo.c`), both driven by our generator with the
//!    same settings: how many connections per second each accepts, serves
//!    one echo and closes.
//! 2. Generators: our generator against a small C client loop
//!    (`benches/c/crr_client.c`, a thread per flow: connect, one echo,
//!    FIN, wait for the server's, close), both against our server, at 1
//!    and at 16 connections in flight (ours on one loop, and on two:
//!    the C client's 16 threads use both cores).
//!
//! Run: `cargo bench --bench churn` (about 40 s: three rounds of each
//! pair, the two sides back to back in alternating order, the median of
//! the rounds' ratios; `-- --duration SECS` sets each run's length,
//! default 2). Both C programs are compiled here with
//! `cc -O2`; without a C compiler their rows are left out. Every run spreads
//! its connections over 8 source addresses of its own (127.0.N.1-8), so
//! the TIME_WAIT ports of one run never starve the next. Nothing is
//! asserted: the ratios are what to read, and they hold only within one run.

use std::io::Read;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

const OURS: &str = env!("CARGO_BIN_EXE_echo-reactor");

/// Source addresses per run.
const SOURCES: u8 = 8;

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo test` runs benches too, without --bench: do nothing heavy then.
    if !args.iter().any(|a| a == "--bench") {
        println!("churn bench: run with `cargo bench --bench churn [-- --duration SECS]`");
        return;
    }
    let secs = args
        .iter()
        .position(|a| a == "--duration")
        .and_then(|i| args.get(i + 1))
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .unwrap_or(2.0);
    let mut prefixes = 20u8..;
    let mut next_prefix = || prefixes.next().expect("fewer than 235 runs");

    let c_server = compile("epoll_echo.c", "c-epoll", &[]);
    let c_client = compile("crr_client.c", "c-crr", &["-pthread"]);

    println!(
        "\n== servers: connects/s accepted, our generator, --churn 1 -c 16, {secs} s a run =="
    );
    if let Some(c_bin) = &c_server {
        let ratios = paired(ROUNDS, "echo-reactor", "c-epoll", |is_ours| {
            let server = if is_ours {
                Server::ours()
            } else {
                Server::c(c_bin)
            };
            let r = generate(server.addr, 16, 1, secs, next_prefix());
            (r.connects_per_sec, r.errors)
        });
        summary("ours / c-epoll", &ratios);
    }

    println!("\n== generators: connects/s against our server, one echo each, {secs} s a run ==");
    let server = Server::ours();
    for (flows, threads) in [(1usize, 1usize), (16, 1), (16, 2)] {
        let Some(c_bin) = &c_client else { break };
        let ours = format!("load -c {flows} --threads {threads}");
        let theirs = format!("crr_client {flows} threads");
        let ratios = paired(ROUNDS, &ours, &theirs, |is_ours| {
            if is_ours {
                let r = generate(server.addr, flows, threads, secs, next_prefix());
                (r.connects_per_sec, r.errors)
            } else {
                c_loop(c_bin, server.addr, flows, secs, next_prefix())
            }
        });
        summary(&format!("{ours} / {theirs}"), &ratios);
    }
}

/// Rounds of each pair: the two sides run back to back, in alternating
/// order, so a busier moment of the machine hits both alike.
const ROUNDS: usize = 3;

/// Runs `run(true)` (ours) and `run(false)` (theirs) `rounds` times each,
/// printing every run; returns each round's ratio ours / theirs.
fn paired(
    rounds: usize,
    ours: &str,
    theirs: &str,
    mut run: impl FnMut(bool) -> (f64, f64),
) -> Vec<f64> {
    let mut ratios = Vec::new();
    for round in 0..rounds {
        let order = if round % 2 == 0 {
            [true, false]
        } else {
            [false, true]
        };
        let mut rates = [f64::NAN; 2];
        for is_ours in order {
            let (rate, errors) = run(is_ours);
            let name = if is_ours { ours } else { theirs };
            println!("  round {round}: {name:<32} {rate:>9.0} connects/s  {errors} errors");
            rates[usize::from(!is_ours)] = rate;
        }
        ratios.push(rates[0] / rates[1]);
    }
    ratios
}

/// The rounds' ratios and their median.
fn summary(what: &str, ratios: &[f64]) {
    let mut sorted = ratios.to_vec();
    sorted.sort_by(f64::total_cmp);
    let each: Vec<String> = ratios.iter().map(|r| format!("{r:.2}")).collect();
    println!(
        "ratio {what}: median {:.2} (rounds: {})",
        sorted[sorted.len() / 2],
        each.join(", ")
    );
}

/// Compiles `benches/c/SRC` beside the bench binary as `name`; `None`
/// without a C compiler.
fn compile(src: &str, name: &str, flags: &[&str]) -> Option<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("benches/c")
        .join(src);
    let out_dir = std::env::current_exe().ok()?.parent()?.join("bench-bin");
    std::fs::create_dir_all(&out_dir).ok()?;
    let out = out_dir.join(name);
    let ok = Command::new("cc")
        .arg("-O2")
        .args(flags)
        .arg("-o")
        .arg(&out)
        .arg(&src)
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        println!("(cc failed on {}: left out)", src.display());
        return None;
    }
    Some(out)
}

/// A server under test in its own process; killed on drop.
struct Server {
    child: Child,
    addr: SocketAddr,
}

impl Server {
    fn ours() -> Server {
        let addr = free_addr();
        let child = Command::new(OURS)
            .args(["serve", "--tcp", &addr.to_string()])
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn our server");
        Server::up(child, addr)
    }

    fn c(bin: &Path) -> Server {
        let addr = free_addr();
        let child = Command::new(bin)
            .arg(addr.to_string())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn the C server");
        Server::up(child, addr)
    }

    fn up(child: Child, addr: SocketAddr) -> Server {
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "nothing listens on {addr}");
            std::thread::sleep(Duration::from_millis(20));
        }
        Server { child, addr }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
}

/// 127.0.`prefix`.1 to .8, as `--source` takes them.
fn sources(prefix: u8) -> String {
    (1..=SOURCES)
        .map(|i| format!("127.0.{prefix}.{i}"))
        .collect::<Vec<_>>()
        .join(",")
}

struct Figures {
    connects_per_sec: f64,
    errors: f64,
}

/// Our generator, `--churn 1` with `flows` connections on `threads`
/// loops for `secs`.
fn generate(addr: SocketAddr, flows: usize, threads: usize, secs: f64, prefix: u8) -> Figures {
    let out = Command::new(OURS)
        .args(["load", &format!("tcp://{addr}"), "--churn", "1", "--json"])
        .args(["-c", &flows.to_string(), "-d", &secs.to_string()])
        .args(["--threads", &threads.to_string()])
        .args(["--source", &sources(prefix)])
        .stderr(Stdio::null())
        .output()
        .expect("run the generator");
    let json = String::from_utf8_lossy(&out.stdout);
    let v: serde_json::Value = serde_json::from_str(json.trim()).unwrap_or_default();
    let errors = v["errors"]
        .as_object()
        .map_or(f64::NAN, |e| e.values().filter_map(|x| x.as_f64()).sum());
    Figures {
        connects_per_sec: v["connects_per_sec"].as_f64().unwrap_or(f64::NAN),
        errors,
    }
}

/// The C client loop with `flows` threads for `secs`: connects/s, errors.
fn c_loop(bin: &Path, addr: SocketAddr, flows: usize, secs: f64, prefix: u8) -> (f64, f64) {
    let mut child = Command::new(bin)
        .arg(addr.ip().to_string())
        .arg(addr.port().to_string())
        .arg(secs.to_string())
        .arg(flows.to_string())
        .arg(format!("127.0.{prefix}"))
        .stdout(Stdio::piped())
        .spawn()
        .expect("run the C client");
    let mut text = String::new();
    if let Some(mut out) = child.stdout.take() {
        let _ = out.read_to_string(&mut text);
    }
    let _ = child.wait();
    // `connects N errors E seconds S`
    let words: Vec<&str> = text.split_whitespace().collect();
    let field = |name: &str| {
        words
            .iter()
            .position(|w| *w == name)
            .and_then(|i| words.get(i + 1))
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(f64::NAN)
    };
    let rate = field("connects") / field("seconds");
    (rate, field("errors"))
}
