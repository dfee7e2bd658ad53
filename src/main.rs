//! The `echo-reactor` binary: parse arguments, start logging, run a
//! subcommand, and map its outcome to an exit code (0 ok, 1 runtime
//! failure, 2 usage error from clap).

use std::io::{IsTerminal, Write};
use std::process::ExitCode;

use std::net::SocketAddr;
use std::time::Duration;

use clap::error::ErrorKind;
use clap::{CommandFactory, Parser};
use log::{info, warn};
use signal_hook::consts::{SIGINT, SIGTERM};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

mod cli;

use cli::{Cli, ClientArgs, Command, CompareArgs, LoadArgs, MergeArgs, ServeArgs};
use echo_reactor::load::{self, ProgressLine, Proto, Report};
use echo_reactor::resolve;
use echo_reactor::Cluster;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // rustls warns of every peer that breaks the protocol; our own
    // counters and debug lines tell those stories once, so by default it
    // speaks only of its own errors.
    env_logger::Builder::from_env(
        env_logger::Env::default().default_filter_or("info,rustls=error"),
    )
    .format_timestamp_millis()
    .init();
    match cli.command {
        Command::Serve(args) => serve(&args),
        Command::Load(args) => run_load(&args),
        Command::Compare(args) => compare(&args),
        Command::Merge(args) => merge(&args),
        Command::Client(args) => match echo_reactor::client::run(&client_config(&args)) {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("echo-reactor client: {e}");
                ExitCode::FAILURE
            }
        },
    }
}

/// Ends the process the way clap ends a bad command line: its message
/// under `subcommand`'s usage on stderr, exit 2.
fn usage_error(subcommand: &str, kind: ErrorKind, message: impl std::fmt::Display) -> ! {
    let mut cli = Cli::command();
    cli.build();
    let mut cmd = cli.find_subcommand(subcommand).cloned().unwrap_or(cli);
    cmd.error(kind, message).exit()
}

/// The client's settings, or a usage error (exit 2) for ones that clash
/// and for a host name that resolves to nothing.
fn client_config(args: &ClientArgs) -> echo_reactor::client::ClientConfig {
    if let Err(e) = args.is_udp() {
        usage_error("client", ErrorKind::ArgumentConflict, e);
    }
    let addrs = args
        .addr
        .host
        .resolve()
        .unwrap_or_else(|e| usage_error("client", ErrorKind::ValueValidation, e));
    args.to_config(addrs)
        .unwrap_or_else(|e| usage_error("client", ErrorKind::ArgumentConflict, e))
}

/// The address to load: the URL's host resolved once, here, before any
/// loop runs. With `--source`, only addresses of its IP version count.
/// TCP takes the first address that accepts a probe connection (each
/// tried for its share of `--connect-timeout`), so every connection of
/// the run goes to one address that answers; UDP, with no handshake to
/// try, takes the first.
///
/// # Errors
///
/// A name that resolves to nothing (or to no address of `--source`'s
/// version), said for people: a usage error.
fn load_address(args: &LoadArgs) -> Result<SocketAddr, String> {
    let host = &args.url.host;
    let mut addrs = host.resolve().map_err(|e| e.to_string())?;
    if let (Some(source), true) = (args.source.first(), host.is_name()) {
        addrs.retain(|a| a.is_ipv4() == source.is_ipv4());
        if addrs.is_empty() {
            return Err(format!(
                "host name '{}' has no address of the IP version of --source {source}",
                host.host
            ));
        }
    }
    let addr = match args.url.proto {
        Proto::Tcp | Proto::Tls => {
            let tries = u32::try_from(addrs.len()).unwrap_or(u32::MAX);
            let each = (args.connect_timeout / tries).max(Duration::from_millis(1));
            let probe = resolve::first_accepting(&addrs, each);
            for (addr, e) in &probe.refused {
                info!("load: {host}: {addr} did not accept a connection ({e})");
            }
            probe.addr
        }
        Proto::Udp => addrs[0],
    };
    if host.is_name() {
        info!("load: {host} is {addr}");
    }
    Ok(addr)
}

/// Above the `--latency` table: its values are in the report's unit.
const LATENCY_HEADING: &str = "latency distribution, values in microseconds (us):";

/// Runs `echo-reactor load`: the report on stdout (text or one JSON
/// object), the reason for a failure on stderr, exit 0 only without errors.
fn run_load(args: &LoadArgs) -> ExitCode {
    // As servers do: the usual soft limit (1,024) would refuse
    // `--connections 1000`, while the hard limit allows far more.
    if let Err(e) = load::raise_open_file_limit() {
        warn!("load: cannot raise the open-file limit: {e}");
    }
    // TLS settings that clash or do not load are usage errors, before any
    // address is probed.
    let tls = args
        .tls_connector()
        .unwrap_or_else(|e| usage_error("load", ErrorKind::ValueValidation, e));
    let addr =
        load_address(args).unwrap_or_else(|e| usage_error("load", ErrorKind::ValueValidation, e));
    let mut config = args.to_config(addr);
    config.tls = tls;
    // Settings that only make no run together (threads above connections,
    // a UDP size, the open-file limit) are usage errors too: exit 2 like
    // clap's own, before anything starts.
    if let Err(e) = config.validate() {
        usage_error("load", ErrorKind::ValueValidation, e);
    }
    if let Some(objective) = args.shapes.find_max {
        return run_find_max(args, &config, objective);
    }
    let (stop, signal) = stop_on_signals();
    let is_live = std::io::stderr().is_terminal();
    let result = if is_live {
        let result = load::run_until(&config, &stop, Some(&mut print_progress));
        // The report starts on a clean line.
        eprint!("\r\x1b[K");
        result
    } else {
        load::run_until(&config, &stop, None)
    };
    let (report, code) = match result {
        Ok(report) if report.interrupted => {
            // The shell's convention: 128 + the signal's number.
            let signal = u8::try_from(signal.load(Ordering::Relaxed)).unwrap_or(2);
            (report, ExitCode::from(128u8.saturating_add(signal)))
        }
        Ok(report) => {
            let code = if report.is_ok() {
                ExitCode::SUCCESS
            } else {
                ExitCode::FAILURE
            };
            (report, code)
        }
        Err(e) => {
            let mut report = Report::for_config(&config);
            report.failure = Some(e.to_string());
            let code = match e {
                load::LoadError::Invalid(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            };
            (report, code)
        }
    };
    let mut text = String::new();
    if args.json {
        text = format!("{}\n", report.to_json());
        if args.latency {
            // stdout holds exactly one JSON object; the table goes aside.
            eprint!("{LATENCY_HEADING}\n{}", report.percentile_distribution());
        }
    } else if report.failure.is_none() {
        text = format!("{report}\n");
        if args.latency {
            text.push_str(&format!(
                "\n{LATENCY_HEADING}\n{}",
                report.percentile_distribution()
            ));
        }
    }
    let printed = print_report(&text);
    if let Some(why) = report.failure_summary() {
        eprintln!("echo-reactor load: {why}");
    }
    if let Err(why) = printed {
        eprintln!("echo-reactor load: {why}");
        return ExitCode::FAILURE;
    }
    if report.failure.is_none() && !save_run(args, &config, &report) {
        return ExitCode::FAILURE;
    }
    code
}

/// Runs `load --find-max`: the table as the steps end (on stdout, or on
/// stderr beside `--json`), then the highest passing rate (or the JSON
/// object) and `--plot`'s capacity curve; exit 0 when a step passed, 1
/// when none did, 128 + the signal when interrupted.
fn run_find_max(
    args: &LoadArgs,
    config: &load::LoadConfig,
    objective: load::find_max::Objective,
) -> ExitCode {
    let (stop, signal) = stop_on_signals();
    let heading = format!(
        "find-max {objective} against {}: {} {}, steps of {} s after {} s of warm-up; \
         at most {} steps, ending within {} s",
        config.target,
        config.connections,
        config.target.proto.peers(),
        config.duration.as_secs_f64(),
        config.warmup.as_secs_f64(),
        load::find_max::MAX_STEPS,
        load::find_max::bound(config).as_secs()
    );
    // The table goes where people look: stdout, unless that is the JSON's.
    let say = |line: &str| {
        if args.json {
            eprintln!("{line}");
        } else {
            // A reader gone away stops nothing: the search still ends.
            let _ = print_report(&format!("{line}\n"));
        }
    };
    say(&heading);
    say(load::find_max::TABLE_HEADING);
    let mut n = 0;
    let result = load::find_max::run(config, objective, &stop, &mut |step| {
        n += 1;
        say(&load::find_max::table_row(n, step));
    });
    let found = match result {
        Ok(found) => found,
        Err(e) => {
            eprintln!("echo-reactor load: {e}");
            return match e {
                load::LoadError::Invalid(_) => ExitCode::from(2),
                _ => ExitCode::FAILURE,
            };
        }
    };
    say(&found.summary());
    if args.json {
        if let Err(why) = print_report(&format!("{}\n", found.to_json(config))) {
            eprintln!("echo-reactor load: {why}");
            return ExitCode::FAILURE;
        }
    }
    if let Some(path) = &args.plot {
        let title = format!(
            "find-max {objective}: {}, {} {}, {} B, steps of {} s",
            config.target,
            config.connections,
            config.target.proto.peers(),
            config.size,
            config.duration.as_secs_f64()
        );
        if let Err(e) = load::plot::capacity_svg(&found, &title, path) {
            eprintln!("echo-reactor load: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    if found.interrupted {
        let signal = u8::try_from(signal.load(Ordering::Relaxed)).unwrap_or(2);
        return ExitCode::from(128u8.saturating_add(signal));
    }
    if found.max_rate.is_none() {
        eprintln!(
            "echo-reactor load: {}",
            found.summary().trim_start_matches("max rate   ")
        );
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}

/// Writes a report to stdout. A reader that went away (a broken pipe, as
/// when `head` has seen enough) is the reader's choice and stays quiet;
/// any other failure (a full disk, a closed descriptor) loses the report,
/// which the caller must say and count as a failure.
fn print_report(text: &str) -> Result<(), String> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        Err(e) => Err(format!("cannot write the report to stdout: {e}")),
    }
}

/// Writes `--hdr-log` and `--plot`; false (after saying why) if one failed.
fn save_run(args: &LoadArgs, config: &load::LoadConfig, report: &Report) -> bool {
    let title = load::output::describe(config);
    let mut ok = true;
    if let Some(path) = &args.hdr_log {
        let written = std::fs::File::create(path).and_then(|f| {
            let mut w = std::io::BufWriter::new(f);
            load::output::write_hdr_log(report, &title, &mut w)?;
            w.flush()
        });
        if let Err(e) = written {
            eprintln!("echo-reactor load: cannot write {}: {e}", path.display());
            ok = false;
        }
    }
    if let Some(path) = &args.plot {
        if let Err(e) = load::plot::run_svg(report, &title, path) {
            eprintln!("echo-reactor load: cannot write {}: {e}", path.display());
            ok = false;
        }
    }
    ok
}

/// Runs `echo-reactor compare`: the table (or `--json`) on stdout, a
/// warning on stderr for runs unlike the first; exit 2, like `merge`, if
/// a file cannot be read or is not a report.
fn compare(args: &CompareArgs) -> ExitCode {
    let mut runs = Vec::new();
    for path in &args.files {
        let name = path.display().to_string();
        let parsed = std::fs::read_to_string(path)
            .map_err(|e| format!("cannot read {name}: {e}"))
            .and_then(|json| load::compare::parse_summary(&name, &json));
        match parsed {
            Ok(run) => runs.push(run),
            Err(e) => {
                eprintln!("echo-reactor compare: {e}");
                return ExitCode::from(2);
            }
        }
    }
    for line in load::compare::unlike_runs(&runs) {
        eprintln!("echo-reactor compare: warning: unlike runs: {line}");
    }
    let text = if args.json {
        format!("{}\n", load::compare::compare_json(&runs))
    } else {
        load::compare::compare_table(&runs)
    };
    match print_report(&text) {
        Ok(()) => ExitCode::SUCCESS,
        Err(why) => {
            eprintln!("echo-reactor compare: {why}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `echo-reactor merge`: the merged report on stdout (text or one
/// JSON object); exit 0 when it passed, 1 when it or a part failed, 2 when
/// the parts cannot be read or do not belong together.
fn merge(args: &MergeArgs) -> ExitCode {
    let refuse = |why: &dyn std::fmt::Display| {
        eprintln!("echo-reactor merge: {why}");
        ExitCode::from(2)
    };
    let mut parts = Vec::new();
    for path in &args.files {
        let is_stdin = path.as_os_str() == "-";
        let name = if is_stdin {
            "stdin".to_string()
        } else {
            path.display().to_string()
        };
        // Bytes, not text: a line that is not UTF-8 is skipped like any
        // other line that holds no report.
        let text = if is_stdin {
            let mut bytes = Vec::new();
            std::io::Read::read_to_end(&mut std::io::stdin().lock(), &mut bytes).map(|_| bytes)
        } else {
            std::fs::read(path)
        };
        let text = match text {
            Ok(text) => text,
            Err(e) => return refuse(&format!("cannot read {name}: {e}")),
        };
        match load::merge::parts_from_text(&name, &text) {
            Ok(found) if found.is_empty() => {
                return refuse(&format!("{name}: no `load --json` report in it"))
            }
            Ok(found) => parts.extend(found),
            Err(e) => return refuse(&e),
        }
    }
    let report = match load::merge::merge(&parts) {
        Ok(report) => report,
        Err(e) => return refuse(&e),
    };
    let text = if args.json {
        format!("{}\n", report.to_json())
    } else {
        format!("{report}\n")
    };
    if let Err(why) = print_report(&text) {
        eprintln!("echo-reactor merge: {why}");
        return ExitCode::FAILURE;
    }
    if let Some(path) = &args.plot {
        let title = load::output::describe_merged(&report, parts.len());
        if let Err(e) = load::plot::merged_svg(&report, &parts, &title, path) {
            eprintln!("echo-reactor merge: cannot write {}: {e}", path.display());
            return ExitCode::FAILURE;
        }
    }
    match report.failure_summary() {
        None => ExitCode::SUCCESS,
        Some(why) => {
            eprintln!("echo-reactor merge: {why}");
            ExitCode::FAILURE
        }
    }
}

/// A signal that follows the first this soon is the same request:
/// `timeout(1)` sends its signal to the process and then to its whole
/// process group, so the generator gets it twice within microseconds.
const SIGNAL_REPEAT_WINDOW_NS: u64 = 100_000_000;

/// CLOCK_MONOTONIC in nanoseconds; `clock_gettime` is async-signal-safe.
fn monotonic_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    (ts.tv_sec as u64)
        .saturating_mul(1_000_000_000)
        .saturating_add(ts.tv_nsec as u64)
}

/// SIGINT and SIGTERM set the returned flag (and record which signal
/// came) so the run ends with its report; a second one, 0.1 s or more
/// after the first, exits at once with 128 + its number. A repeat within
/// 0.1 s is the same request (see [`SIGNAL_REPEAT_WINDOW_NS`]).
fn stop_on_signals() -> (Arc<AtomicBool>, Arc<AtomicUsize>) {
    let stop = Arc::new(AtomicBool::new(false));
    let which = Arc::new(AtomicUsize::new(0));
    let first_at = Arc::new(AtomicU64::new(0));
    for sig in [SIGINT, SIGTERM] {
        let (stop, which, first_at) =
            (Arc::clone(&stop), Arc::clone(&which), Arc::clone(&first_at));
        let handler = move || {
            let now = monotonic_ns();
            if stop.load(Ordering::SeqCst) {
                let since = now.saturating_sub(first_at.load(Ordering::SeqCst));
                if since >= SIGNAL_REPEAT_WINDOW_NS {
                    signal_hook::low_level::exit(128 + sig);
                }
                return;
            }
            first_at.store(now, Ordering::SeqCst);
            which.store(sig as usize, Ordering::SeqCst);
            stop.store(true, Ordering::SeqCst);
        };
        // SAFETY: the handler only reads the clock, touches atomics and
        // may call `_exit`, all async-signal-safe.
        if let Err(e) = unsafe { signal_hook::low_level::register(sig, handler) } {
            warn!("load: cannot handle signal {sig}: {e}; it will end the run without a report");
        }
    }
    (stop, which)
}

/// The live progress line: one line on the terminal, rewritten in place.
fn print_progress(p: &ProgressLine) {
    eprint!(
        "\r\x1b[Kload: {:5.1} of {:.1} s  {} up  {:.0} msgs/s  p99 {} us  errors {}",
        p.elapsed.as_secs_f64(),
        p.planned.as_secs_f64(),
        p.connections_up,
        p.msgs_per_sec,
        p.p99_us,
        p.errors
    );
}

fn serve(args: &ServeArgs) -> ExitCode {
    let config = match args.to_config() {
        Ok(config) => config,
        Err(e) => {
            eprintln!("echo-reactor serve: {e}");
            return ExitCode::from(2);
        }
    };
    let server = match Cluster::bind(config, usize::from(args.threads)) {
        Ok(server) => server,
        Err(e) => {
            eprintln!("echo-reactor: {e}");
            return ExitCode::FAILURE;
        }
    };
    // The contract other programs read: one line per socket, flushed now.
    let mut out = std::io::stdout().lock();
    let lines = server
        .tcp_addrs()
        .iter()
        .map(|a| format!("listening on tcp://{a}"))
        .chain(
            server
                .tls_addrs()
                .iter()
                .map(|a| format!("listening on tls://{a}")),
        )
        .chain(
            server
                .udp_addrs()
                .iter()
                .map(|a| format!("listening on udp://{a}")),
        )
        .chain(
            server
                .metrics_addr()
                .map(|a| format!("listening on http://{a}/metrics")),
        );
    for line in lines {
        info!("{line}");
        // A closed stdout must not stop the server; the log has the line.
        let _ = writeln!(out, "{line}");
    }
    let _ = out.flush();
    drop(out);
    match server.run() {
        Ok(stats) => {
            info!("final stats: {stats}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("echo-reactor: poll loop failed: {e}");
            ExitCode::FAILURE
        }
    }
}
