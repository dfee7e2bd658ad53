//! The soak run: many connections at a steady rate for a long time, to
//! show that nothing grows. Not part of the test suite (ten minutes).
//!
//! ```text
//! cargo bench --bench soak                        # 5,000 conns, 20,000 msgs/s, 10 min
//! cargo bench --bench soak -- --duration 120 --connections 1000 --rate 5000
//! ```
//!
//! Our release server runs in its own process; the load generator runs
//! here, open loop at a fixed total rate, checking every reply byte. Every
//! `--interval` seconds (default 10) it prints the server's RSS and
//! descriptor count, the messages per second of that interval, the worst
//! per-second p99 and the errors so far. At the end: the RSS drift over the
//! last eight minutes (the first two are ramp-up and allocator warm-up),
//! which should stay under 1%.

use std::time::Duration;

#[allow(dead_code)]
mod support;

use echo_reactor::load::{self, LoadConfig, Proto, Target};
use support::procfs::{fd_count, rss_bytes};
use support::ServerChild;

/// What the first minutes are allowed to do before drift is measured.
const SETTLE: Duration = Duration::from_secs(120);

struct Args {
    duration: Duration,
    connections: usize,
    rate: f64,
    interval: Duration,
}

fn parse_args(args: &[String]) -> Args {
    let mut a = Args {
        duration: Duration::from_secs(600),
        connections: 5000,
        rate: 20_000.0,
        interval: Duration::from_secs(10),
    };
    let mut it = args.iter();
    while let Some(flag) = it.next() {
        let value = it.clone().next().and_then(|v| v.parse::<f64>().ok());
        let Some(v) = value.filter(|v| *v > 0.0) else {
            continue;
        };
        match flag.as_str() {
            "--duration" => a.duration = Duration::from_secs_f64(v),
            "--connections" => a.connections = v as usize,
            "--rate" => a.rate = v,
            "--interval" => a.interval = Duration::from_secs_f64(v),
            _ => continue,
        }
        it.next();
    }
    a
}

/// One line of the table.
struct Sample {
    at: Duration,
    rss: u64,
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if !args.iter().any(|a| a == "--bench") {
        println!("soak bench: run it with `cargo bench --bench soak [-- --duration SECS]`");
        return;
    }
    let a = parse_args(&args);
    let mut server = ServerChild::start(&[]);
    let pid = server.pid();
    let config = LoadConfig {
        connections: a.connections,
        duration: a.duration,
        rate: Some(a.rate),
        threads: 1,
        ..LoadConfig::new(Target {
            proto: Proto::Tcp,
            addr: server.addr,
        })
    };
    println!(
        "# soak: {} connections, {} msgs/s offered, {} s, server pid {pid}",
        a.connections,
        a.rate,
        a.duration.as_secs()
    );
    println!(
        "{:>6} {:>6} {:>10} {:>7} {:>10} {:>9} {:>7}",
        "t s", "conns", "server RSS", "fds", "msgs/s", "p99 us", "errors"
    );

    let mut samples: Vec<Sample> = Vec::new();
    let mut next = a.interval;
    let (mut msgs, mut secs, mut worst_p99) = (0.0, 0.0, 0u64);
    let mut on_progress = |p: &load::ProgressLine| {
        msgs += p.msgs_per_sec;
        secs += 1.0;
        worst_p99 = worst_p99.max(p.p99_us);
        if p.elapsed < next {
            return;
        }
        next += a.interval;
        let rss = rss_bytes(pid);
        println!(
            "{:>6.0} {:>6} {:>8.1} MiB {:>7} {:>10.0} {:>9} {:>7}",
            p.elapsed.as_secs_f64(),
            p.connections_up,
            rss as f64 / (1 << 20) as f64,
            fd_count(pid),
            msgs / secs,
            worst_p99,
            p.errors
        );
        samples.push(Sample { at: p.elapsed, rss });
        (msgs, secs, worst_p99) = (0.0, 0.0, 0);
    };
    let result = load::run_with_progress(&config, &mut on_progress);
    server.stop();

    match result {
        Ok(r) => {
            let p = r.percentiles_us();
            println!(
                "# {} messages verified, {:.0} msgs/s, p50 {} us, p99 {} us, max {} us, errors {}",
                r.messages,
                r.msgs_per_sec(),
                p[0],
                p[2],
                p[4],
                r.errors.total()
            );
        }
        Err(e) => println!("# load run failed: {e}"),
    }
    print_drift(&samples);
}

/// RSS drift after the settling time: last sample against the first one
/// after it, and the spread between the smallest and largest.
fn print_drift(samples: &[Sample]) {
    let window: Vec<u64> = samples
        .iter()
        .filter(|s| s.at >= SETTLE)
        .map(|s| s.rss)
        .collect();
    let (Some(&first), Some(&last)) = (window.first(), window.last()) else {
        println!("# run shorter than {} s: no drift figure", SETTLE.as_secs());
        return;
    };
    let (Some(&lo), Some(&hi)) = (window.iter().min(), window.iter().max()) else {
        return;
    };
    let pct = |a: u64, b: u64| (a as f64 - b as f64) * 100.0 / b.max(1) as f64;
    println!(
        "# RSS after {} s: first {:.1} MiB, last {:.1} MiB, drift {:+.2}%, spread {:.2}% (target: drift under 1%)",
        SETTLE.as_secs(),
        first as f64 / (1 << 20) as f64,
        last as f64 / (1 << 20) as f64,
        pct(last, first),
        pct(hi, lo)
    );
}
