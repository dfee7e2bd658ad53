//! The command line's parsers: addresses and URLs, durations, rates,
//! percentages, segments, start times and faults, each alone (the first byte
//! picks one, the rest is its text), or a whole command line through
//! clap (arguments split at NUL bytes), then the settings it gives
//! checked as `main` checks them. Never panics, and what a parser
//! accepts lies within the range its `--help` states.
//!
//! The parsers are the binary's (`src/cli.rs`), compiled here unchanged.

#![no_main]

use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, UNIX_EPOCH};

use clap::Parser;
use echo_reactor::load::{self, split};
use echo_reactor::resolve::HostPort;
use echo_reactor::server::{Fault, FaultKind};
use libfuzzer_sys::fuzz_target;

#[allow(dead_code, unused_imports)]
#[path = "../../src/cli.rs"]
mod cli;

const YEAR: Duration = Duration::from_secs(365 * 24 * 3600);

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else {
        return;
    };
    let Ok(s) = std::str::from_utf8(rest) else {
        return;
    };
    match which % 21 {
        0 => whole_command_line(s),
        1 => {
            if let Ok(d) = cli::parse_duration(s) {
                assert!(d <= YEAR, "{s:?} gave {d:?}, more than a year");
            }
        }
        2 => {
            if let Ok(d) = cli::parse_interval(s) {
                assert!(d.is_zero() || d >= cli::MIN_INTERVAL, "{s:?} gave {d:?}");
                assert!(d <= YEAR, "{s:?} gave {d:?}");
            }
        }
        3 => {
            if let Ok(d) = cli::parse_nonzero_interval(s) {
                assert!(d >= cli::MIN_INTERVAL && d <= YEAR, "{s:?} gave {d:?}");
            }
        }
        4 => {
            if let Ok(d) = cli::parse_window(s) {
                assert!(!d.is_zero() && d <= load::MAX_WINDOW, "{s:?} gave {d:?}");
            }
        }
        5 => {
            if let Ok(d) = cli::parse_timeout(s) {
                assert!(d <= load::MAX_TIMEOUT, "{s:?} gave {d:?}");
            }
        }
        6 => {
            if let Ok(d) = cli::parse_nonzero_timeout(s) {
                assert!(
                    (load::MIN_TIMEOUT..=load::MAX_TIMEOUT).contains(&d),
                    "{s:?} gave {d:?}"
                );
            }
        }
        7 => {
            if let Ok(x) = cli::parse_per_sec(s) {
                assert!(x.is_finite() && x >= 0.0, "{s:?} gave {x}");
            }
        }
        8 => {
            if let Ok(x) = cli::parse_rate(s) {
                assert!(
                    (load::MIN_RATE..=load::MAX_RATE).contains(&x),
                    "{s:?} gave {x}"
                );
            }
        }
        9 => {
            if let Ok(x) = cli::parse_connect_rate(s) {
                assert!(
                    (load::MIN_RATE..=load::MAX_CONNECT_RATE).contains(&x),
                    "{s:?} gave {x}"
                );
            }
        }
        10 => {
            if let Ok(x) = cli::parse_pps(s) {
                assert!(x >= 1, "{s:?} gave {x}");
            }
        }
        11 => {
            if let Ok(x) = cli::parse_percent(s) {
                assert!((0.0..=100.0).contains(&x), "{s:?} gave {x}");
            }
        }
        12 => {
            let _ = cli::parse_addr(s);
        }
        13 => {
            if let Ok(l) = cli::parse_listen_addr(s) {
                assert!(matches!(l.0.len(), 1 | 2), "{s:?} gave {l:?}");
            }
        }
        14 => {
            if let Ok(t) = cli::parse_url(s) {
                assert_ne!(t.host.port, 0, "{s:?}");
                host_ok(&t.host);
            }
        }
        15 => {
            if let Ok(a) = cli::parse_client_addr(s) {
                host_ok(&a.host);
            }
        }
        16 => {
            if let Ok(h) = HostPort::parse(s) {
                host_ok(&h);
            }
        }
        17 => {
            if let Ok(seg) = split::Segment::parse(s) {
                assert!(seg.index < seg.count && seg.count <= split::MAX_SEGMENTS);
                assert_eq!(split::Segment::parse(&seg.to_string()), Ok(seg));
            }
        }
        18 => {
            if let Ok(t) = split::parse_start_at(s) {
                let secs = t.duration_since(UNIX_EPOCH).expect("after 1970").as_secs();
                assert!(secs <= 7_258_118_400, "{s:?} gave {secs}");
            }
        }
        19 => {
            if let Ok(f) = cli::parse_fault(s) {
                fault_in_range(s, &f);
            }
        }
        _ => {
            let _ = cli::parse_mode(s);
            if let Ok(m) = cli::parse_expect(s) {
                assert!(m.is_byte_transform());
            }
        }
    }
});

/// A `--fault` within the ranges its message gives, and shown as read.
fn fault_in_range(s: &str, f: &Fault) {
    assert!((0.0..=1.0).contains(&f.probability), "{s:?} gave {f:?}");
    let ok = match f.kind {
        FaultKind::Delay(d) => (Duration::from_micros(1)..=Duration::from_secs(3600)).contains(&d),
        FaultKind::Rate(r) => (1..=10_000_000_000).contains(&r),
        FaultKind::Slice(n) => (1..=1 << 20).contains(&n),
        _ => true,
    };
    assert!(ok, "{s:?} gave {f:?}");
    let _ = f.to_string();
}

/// A host as the resolver will get it: something, without blanks.
fn host_ok(h: &HostPort) {
    assert!(
        !h.host.is_empty() && !h.host.chars().any(char::is_whitespace),
        "{h:?}"
    );
    let _ = h.literal();
}

/// `echo-reactor ARGS...`, as `main` takes it up to the first socket.
fn whole_command_line(s: &str) {
    let args = std::iter::once("echo-reactor").chain(s.split('\0'));
    let Ok(parsed) = cli::Cli::try_parse_from(args) else {
        return;
    };
    match parsed.command {
        cli::Command::Serve(args) => {
            // Certificate files would be read: that is IO, not parsing.
            if args.tls_cert.is_none() && args.tls_key.is_none() {
                let _ = args.to_config();
            }
        }
        cli::Command::Load(args) => {
            let addr = args.url.host.literal().unwrap_or(SocketAddr::new(
                Ipv4Addr::LOCALHOST.into(),
                args.url.host.port,
            ));
            let config = args.to_config(addr);
            // The checks `validate` makes, without the process's own
            // limit or clock, so a crash replays the same way.
            let now = UNIX_EPOCH + Duration::from_secs(1_767_225_600);
            let valid = config.validate_with_fd_limit(Some(20_000)).is_ok()
                && config.validate_start(now).is_ok();
            if valid {
                let _ = config.message_interval();
                let _ = config.connect_interval();
            }
        }
        cli::Command::Client(args) => {
            let _ = args.to_config(Vec::new());
        }
        cli::Command::Compare(_) | cli::Command::Merge(_) => {}
    }
}
