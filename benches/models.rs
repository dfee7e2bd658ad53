//! The three TCP IO models side by side: the blocking, threaded and
//! reactor examples, driven by our load generator at 10, 100 and 1,000
//! connections. For each: messages per second, the threads the server
//! used, and its RSS per connection.
//!
//! ```text
//! cargo bench --bench models                 # every model and size
//! cargo bench --bench models -- threaded     # one model: blocking | threaded | reactor
//! cargo bench --bench models -- 1000         # one size
//! ```
//!
//! It builds the examples first (`cargo build --release --examples`).
//! Closed loop, 64-byte messages, one in flight per connection, 3 s each,
//! every reply checked (the examples uppercase). The blocking server
//! serves one connection at a time, so at 10 and more the others wait in
//! its backlog and their messages end as timeouts: the errors column is
//! the point, not a failure of the bench.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

#[allow(dead_code)]
mod support;

use echo_reactor::load::{self, LoadConfig, Proto, Target};
use echo_reactor::Mode;
use support::procfs::rss_bytes;

const MODELS: [&str; 3] = ["blocking", "threaded", "reactor"];
const SIZES: [usize; 3] = [10, 100, 1000];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("models bench: run it with `cargo bench --bench models [-- MODEL|CONNS]`");
        return;
    }
    let models: Vec<&str> = MODELS
        .iter()
        .copied()
        .filter(|m| {
            !args.iter().any(|a| MODELS.contains(&a.as_str())) || args.iter().any(|a| a == m)
        })
        .collect();
    let sizes: Vec<usize> = {
        let wanted: Vec<usize> = args.iter().filter_map(|a| a.parse().ok()).collect();
        if wanted.is_empty() {
            SIZES.to_vec()
        } else {
            wanted
        }
    };
    if !build_examples() {
        println!("cannot build the examples: run `cargo build --release --examples`");
        return;
    }
    println!("| model | connections | msgs/s | p99 latency | max latency | threads | RSS per connection | errors |");
    println!("|---|---|---|---|---|---|---|---|");
    for model in &models {
        for &conns in &sizes {
            measure(model, conns);
        }
    }
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

/// An example server, killed on drop.
struct Example(Child);

impl Drop for Example {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start(model: &str) -> Option<(Example, SocketAddr)> {
    let mut child = Command::new(examples_dir().join(model))
        .arg("127.0.0.1:0")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
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
    Some((Example(child), addr))
}

fn threads(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("Threads:"))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

fn measure(model: &str, conns: usize) {
    let Some((server, addr)) = start(model) else {
        let path = examples_dir().join(model);
        println!(
            "| {model} | {conns} | could not start {} | | | | | |",
            path.display()
        );
        return;
    };
    let pid = server.0.id();
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
    let config = LoadConfig {
        connections: conns,
        duration: Duration::from_secs(3),
        expect: Mode::Upper,
        drain_timeout: Duration::from_millis(500),
        ..LoadConfig::new(Target {
            proto: Proto::Tcp,
            addr,
        })
    };
    let report = load::run(&config);
    done.store(true, Ordering::Relaxed);
    let (peak_threads, peak_rss) = sampler.join().unwrap_or((0, 0));
    match report {
        Ok(r) => println!(
            "| {model} | {conns} | {:.0} | {:.1} ms | {:.1} ms | {peak_threads} | {:.1} KiB | {} |",
            r.msgs_per_sec(),
            r.percentiles_us()[2] as f64 / 1000.0,
            r.percentiles_us()[4] as f64 / 1000.0,
            peak_rss.saturating_sub(base) as f64 / conns as f64 / 1024.0,
            r.errors.total()
        ),
        Err(e) => println!("| {model} | {conns} | run failed: {e} | | | | | |"),
    }
}
