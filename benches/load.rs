//! The load generator against a classic blocking thread-per-connection
//! client, both driving our echo server (the release binary, in its own
//! process so that this process's CPU time is the client's alone).
//!
//! Run: `cargo bench --bench load` (all of 50, 500 and 5,000 connections),
//! or `cargo bench --bench load -- 500` for one scenario; `--duration SECS`
//! sets each run's length (default 4). Prints msgs/s, the client's own CPU
//! time per message (getrusage of this process) and p99 latency. Nothing is
//! asserted: the figures depend on the machine and what else it runs.
//!
//! Both clients run closed loop, one 64-byte message in flight per
//! connection, and check every reply byte.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

#[allow(dead_code)]
mod support;

use echo_reactor::load::payload::Message;
use echo_reactor::load::{self, LoadConfig, Proto, Target};
use echo_reactor::Mode;
use hdrhistogram::Histogram;
use support::ServerChild;

const SIZE: usize = 64;
const SCENARIOS: [usize; 3] = [50, 500, 5000];

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `cargo test` runs benches too, without --bench: do nothing heavy then.
    if !args.iter().any(|a| a == "--bench") {
        println!("load bench: run with `cargo bench --bench load [-- CONNS] [--duration SECS]`");
        return;
    }
    let mut duration = Duration::from_secs(4);
    let mut only = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        if a == "--duration" {
            if let Some(d) = it.next().and_then(|s| s.parse::<f64>().ok()) {
                duration = Duration::from_secs_f64(d);
            }
        } else if let Ok(n) = a.parse::<usize>() {
            only.push(n);
        }
    }
    let scenarios = if only.is_empty() {
        SCENARIOS.to_vec()
    } else {
        only
    };
    let mut server = ServerChild::start(&[]);
    println!(
        "{:>6}  {:<22} {:>10} {:>12} {:>9} {:>7}",
        "conns", "client", "msgs/s", "cpu us/msg", "p99 us", "errors"
    );
    for conns in scenarios {
        let ours = reactor(server.addr, conns, duration);
        ours.print(conns, "reactor (1 loop)");
        let base = threaded(server.addr, conns, duration);
        base.print(conns, "thread per connection");
    }
    server.stop();
}

struct Figures {
    /// Messages in the measured window, for the rate.
    messages: u64,
    elapsed: Duration,
    /// CPU time of the whole run, and the messages it moved.
    cpu: Duration,
    cpu_messages: u64,
    p99_us: u64,
    errors: u64,
}

impl Figures {
    fn print(&self, conns: usize, name: &str) {
        let rate = self.messages as f64 / self.elapsed.as_secs_f64();
        let cpu_per_msg = if self.cpu_messages == 0 {
            0.0
        } else {
            self.cpu.as_secs_f64() * 1e6 / self.cpu_messages as f64
        };
        println!(
            "{conns:>6}  {name:<22} {rate:>10.0} {cpu_per_msg:>12.2} {:>9} {:>7}",
            self.p99_us, self.errors
        );
    }
}

/// Our generator: one poll loop for every connection.
fn reactor(addr: SocketAddr, conns: usize, duration: Duration) -> Figures {
    let config = LoadConfig {
        connections: conns,
        duration,
        size: SIZE,
        ..LoadConfig::new(Target {
            proto: Proto::Tcp,
            addr,
        })
    };
    let cpu0 = cpu_time();
    let report = match load::run(&config) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("load run failed: {e}");
            return Figures {
                messages: 0,
                elapsed: duration,
                cpu: Duration::ZERO,
                cpu_messages: 0,
                p99_us: 0,
                errors: 1,
            };
        }
    };
    let cpu = cpu_time().saturating_sub(cpu0);
    Figures {
        messages: report.messages,
        elapsed: report.duration,
        // The CPU time covers ramp and drain too, so divide by every
        // message sent, not only the measured ones.
        cpu,
        cpu_messages: report.sent,
        p99_us: report.percentiles_us()[2],
        errors: report.errors.total(),
    }
}

/// The classic client: a blocking socket and a thread per connection,
/// write a message, read the reply, check it, repeat.
fn threaded(addr: SocketAddr, conns: usize, duration: Duration) -> Figures {
    let flags = Arc::new(Flags::default());
    let cpu0 = cpu_time();
    let mut threads = Vec::with_capacity(conns);
    for id in 0..conns {
        let flags = Arc::clone(&flags);
        let t = std::thread::Builder::new()
            .stack_size(64 * 1024)
            .spawn(move || client_thread(addr, id as u64, &flags));
        match t {
            Ok(t) => threads.push(t),
            Err(e) => eprintln!("thread {id}: {e}"),
        }
    }
    // Measure once every thread has connected (or given up), bounded.
    let deadline = Instant::now() + Duration::from_secs(30);
    while flags.ready.load(Ordering::SeqCst) < threads.len() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(10));
    }
    flags.measuring.store(true, Ordering::SeqCst);
    let start = Instant::now();
    std::thread::sleep(duration);
    flags.stop.store(true, Ordering::SeqCst);
    let elapsed = start.elapsed();
    let mut hist = Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds");
    let (mut messages, mut all, mut errors) = (0, 0, 0);
    for t in threads {
        match t.join() {
            Ok(r) => {
                let _ = hist.add(&r.hist);
                messages += r.measured;
                all += r.all;
                errors += r.errors;
            }
            Err(_) => errors += 1,
        }
    }
    let cpu = cpu_time().saturating_sub(cpu0);
    Figures {
        messages,
        elapsed,
        cpu,
        cpu_messages: all,
        p99_us: if hist.is_empty() {
            0
        } else {
            hist.value_at_quantile(0.99)
        },
        errors,
    }
}

#[derive(Default)]
struct Flags {
    ready: AtomicUsize,
    measuring: AtomicBool,
    stop: AtomicBool,
}

struct ThreadResult {
    hist: Histogram<u64>,
    measured: u64,
    all: u64,
    errors: u64,
}

fn client_thread(addr: SocketAddr, id: u64, flags: &Flags) -> ThreadResult {
    let mut r = ThreadResult {
        hist: Histogram::<u64>::new_with_bounds(1, 3_600_000_000, 3).expect("bounds"),
        measured: 0,
        all: 0,
        errors: 0,
    };
    let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(10));
    flags.ready.fetch_add(1, Ordering::SeqCst);
    let Ok(mut s) = stream else {
        r.errors += 1;
        return r;
    };
    let _ = s.set_nodelay(true);
    let _ = s.set_read_timeout(Some(Duration::from_secs(10)));
    let (mut msg, mut reply) = ([0u8; SIZE], [0u8; SIZE]);
    while !flags.stop.load(Ordering::Relaxed) {
        let m = Message {
            conn: id,
            seq: r.all,
        };
        m.fill(0, &mut msg);
        let t0 = Instant::now();
        if s.write_all(&msg).is_err() || s.read_exact(&mut reply).is_err() {
            r.errors += 1;
            return r;
        }
        let us = u64::try_from(t0.elapsed().as_micros()).unwrap_or(u64::MAX);
        if m.check(Mode::Echo, 0, &reply).is_some() {
            r.errors += 1;
            return r;
        }
        r.all += 1;
        if flags.measuring.load(Ordering::Relaxed) {
            r.measured += 1;
            r.hist.saturating_record(us.max(1));
        }
    }
    r
}

/// User plus system CPU time of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: an all-zero rusage is valid, and getrusage only writes into it.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: RUSAGE_SELF with a valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) } != 0 {
        return Duration::ZERO;
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec as u64) + Duration::from_micros(t.tv_usec as u64)
    };
    tv(ru.ru_utime) + tv(ru.ru_stime)
}
