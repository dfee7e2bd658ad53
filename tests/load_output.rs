//! What a load run leaves behind: the HdrHistogram interval log read back
//! with the hdrhistogram crate's own parser (its untagged histograms are
//! the report's, the warm-up's tagged apart), the SVG plot with what lies
//! outside the window shaded, and `compare` over saved JSON reports.

mod common;

use std::path::{Path, PathBuf};
use std::time::Duration;

use common::*;
use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use hdrhistogram::serialization::Deserializer;
use hdrhistogram::Histogram;

/// A fresh scratch directory for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("echo-reactor-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("scratch dir");
    dir
}

/// A number field from our JSON report.
fn json_number(json: &str, key: &str) -> f64 {
    echo_reactor::load::output::json_number(json, key)
        .unwrap_or_else(|| panic!("no {key} in {json}"))
}

fn load(server: &ServerProcess, extra: &[&str]) -> Finished {
    let url = format!("tcp://{}", server.tcp_addr());
    let mut argv = vec!["load", &url, "-c", "20", "-d", "2", "--json"];
    argv.extend_from_slice(extra);
    run_binary(&argv, Duration::from_secs(30))
}

#[test]
fn hdr_log_untagged_histograms_add_up_to_the_report_exactly() {
    let dir = scratch("hdrlog");
    let log_path = dir.join("run.hlog");
    let server = start_server(&[]);
    let out = load(
        &server,
        &[
            "--warmup",
            "1",
            "--hdr-log",
            log_path.to_str().expect("utf-8"),
        ],
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let measured = json_number(&out.stdout, "messages");

    let text = std::fs::read(&log_path).expect("the log was written");
    let mut deserializer = Deserializer::new();
    let mut window: Histogram<u64> = Histogram::new(3).expect("histogram");
    let mut warmup: Histogram<u64> = Histogram::new(3).expect("histogram");
    let mut intervals = 0;
    let mut last_start = -1.0;
    for entry in IntervalLogIterator::new(&text) {
        match entry.expect("a well-formed log line") {
            LogEntry::Interval(iv) => {
                let start = iv.start_timestamp().as_secs_f64();
                let bytes = base64_decode(iv.encoded_histogram());
                let h: Histogram<u64> = deserializer
                    .deserialize(&mut bytes.as_slice())
                    .expect("a histogram the crate can read");
                match iv.tag().map(|t| t.as_str()) {
                    None => {
                        intervals += 1;
                        assert!(start > last_start, "intervals in order");
                        last_start = start;
                        window.add(&h).expect("add");
                    }
                    Some("warmup") => warmup.add(&h).expect("add"),
                    Some(other) => panic!("unknown tag {other}"),
                }
            }
            LogEntry::StartTime(_) | LogEntry::BaseTime(_) => {}
        }
    }
    assert!(intervals >= 3, "one interval a second: {intervals}");
    // Untagged: exactly the replies the report counts, so the same
    // percentiles; the warm-up's replies are tagged apart.
    assert_eq!(window.len() as f64, measured, "{}", out.stdout);
    for (q, key) in [(0.5, "p50"), (0.99, "p99")] {
        assert_eq!(
            window.value_at_quantile(q) as f64,
            json_number(&out.stdout, key)
        );
    }
    assert_eq!(window.max() as f64, json_number(&out.stdout, "max"));
    assert!(!warmup.is_empty(), "a second of warm-up replies, tagged");
    let comments = String::from_utf8_lossy(&text);
    assert!(comments.contains("#window: "), "{comments}");
    assert!(comments.contains("Tag=warmup"), "{comments}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Standard base64, as the interval log encodes histograms.
fn base64_decode(s: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0);
    for c in s.bytes().filter(|&c| c != b'=') {
        let v = ALPHABET.iter().position(|&a| a == c).expect("base64") as u32;
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

#[test]
fn plot_is_an_svg_naming_the_target_and_settings() {
    let dir = scratch("plot");
    let svg = dir.join("run.svg");
    let server = start_server(&[]);
    let out = load(
        &server,
        &["--warmup", "1", "--plot", svg.to_str().expect("utf-8")],
    );
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let text = std::fs::read_to_string(&svg).expect("the plot was written");
    assert!(
        text.trim_start().starts_with("<svg"),
        "{}",
        &text[..100.min(text.len())]
    );
    assert!(text.trim_end().ends_with("</svg>"));
    let target = format!("tcp://{}", server.tcp_addr());
    for needle in [
        target.as_str(),
        "20 conns",
        "latency by percentile",
        "latency (ms)",
        "replies per second",
        "msgs/s",
        "99.9%",
        "<polyline",
        "p50 and p99 latency of each second",
        "outside the measured window",
    ] {
        assert!(text.contains(needle), "no {needle:?} in the SVG");
    }
    // The warm-up before the window, and the drain after it, are shaded
    // in both time panels.
    let shaded = text.matches("fill=\"#E1E1E1\"").count();
    assert!(shaded >= 2, "{shaded} shaded spans");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unwritable_plot_path_fails_the_run_with_a_message() {
    let server = start_server(&[]);
    let out = load(&server, &["--plot", "/nonexistent-dir/x.svg"]);
    assert_eq!(out.code(), 1);
    assert!(
        out.stderr.contains("cannot write /nonexistent-dir/x.svg"),
        "{}",
        out.stderr
    );
}

/// The same JSON with every object's keys in alphabetical order.
fn sorted_keys(json: &str) -> String {
    let value: serde_json::Value = serde_json::from_str(json.trim()).expect("a JSON report");
    value.to_string()
}

fn save(dir: &Path, name: &str, json: &str) -> String {
    let path = dir.join(name);
    std::fs::write(&path, json).expect("write json");
    path.to_string_lossy().into_owned()
}

#[test]
fn compare_puts_runs_side_by_side_with_ratios() {
    let dir = scratch("compare");
    let server = start_server(&[]);
    let a = load(&server, &[]);
    let b = load(&server, &["--rate", "1000"]);
    assert_eq!((a.code(), b.code()), (0, 0));
    let (pa, pb) = (
        save(&dir, "a.json", &a.stdout),
        // b with its keys in another order (sorted, nested ones too):
        // compare reads a report, not a layout.
        save(&dir, "b.json", &sorted_keys(&b.stdout)),
    );
    let out = run_binary(&["compare", &pa, &pb], Duration::from_secs(10));
    assert_eq!(out.code(), 0, "{}", out.stderr);
    let rate_line = out
        .stdout
        .lines()
        .find(|l| l.starts_with("msgs/s"))
        .expect("a msgs/s row");
    // "msgs/s  A  B (R.RRx)": B ran at 1,000 msgs/s, and R is B / A.
    let cells: Vec<&str> = rate_line.split_whitespace().collect();
    let (ra, rb): (f64, f64) = (
        cells[1].parse().expect("a's rate"),
        cells[2].parse().expect("b's rate"),
    );
    assert!((950.0..=1050.0).contains(&rb), "{rate_line}");
    assert_eq!(cells[3], format!("({:.2}x)", rb / ra), "{rate_line}");
    for row in ["p50 us", "p99 us", "p99.9 us", "max us", "errors"] {
        assert!(out.stdout.contains(row), "no {row} row:\n{}", out.stdout);
    }
    // Each run's settings above the figures, and a warning that the two
    // were not made alike (closed loop against 1,000 msgs/s).
    let target = server.tcp_addr();
    assert!(
        out.stdout.contains(&format!(
            " 1  {pa}  tcp {target}, 20 connections, closed loop (pipeline 1), 64 B"
        )),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains(" 2  "), "{}", out.stdout);
    assert!(
        out.stderr.contains("warning: unlike runs: 2 (")
            && out.stderr.contains("load 1000 msgs/s, not closed loop"),
        "{}",
        out.stderr
    );
    // Alike runs compare without a warning.
    let same = run_binary(&["compare", &pa, &pa], Duration::from_secs(10));
    assert_eq!(same.code(), 0, "{}", same.stderr);
    assert!(!same.stderr.contains("unlike"), "{}", same.stderr);

    let json = run_binary(&["compare", &pa, &pb, "--json"], Duration::from_secs(10));
    assert_eq!(json.code(), 0, "{}", json.stderr);
    let v: serde_json::Value = serde_json::from_str(&json.stdout).expect("one JSON object");
    assert_eq!(v["runs"][1]["settings"]["rate"], 1000.0);
    assert_eq!(v["runs"][0]["settings"]["size"], 64);
    let rb_json = v["runs"][1]["figures"]["msgs_per_sec"]
        .as_f64()
        .expect("a rate");
    assert!((950.0..=1050.0).contains(&rb_json), "{}", json.stdout);
    assert_eq!(
        v["unlike"].as_array().map(Vec::len),
        Some(1),
        "{}",
        json.stdout
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn compare_rejects_missing_and_foreign_files() {
    let dir = scratch("compare-bad");
    let good = save(
        &dir,
        "good.json",
        r#"{"proto":"tcp","target":"127.0.0.1:7007","connections":1,"connected":1,"reconnects":0,"ramp_s":0,"duration_s":1,"messages":1,"bytes":64,"sent":1,"msgs_per_sec":1,"bytes_per_sec":64,"loss_percent":0,"latency_us":{"p50":1,"p90":1,"p99":1,"p999":1,"max":1,"mean":1},"errors":{"connect":0,"reset":0,"timeout":0,"mismatch":0,"lost":0,"closed":0,"io":0,"duplicate":0},"reordered":0,"late":0,"interrupted":false,"ok":true,"error":null}"#,
    );
    let foreign = save(&dir, "foreign.json", r#"{"hello": "world"}"#);
    let missing = dir.join("missing.json").to_string_lossy().into_owned();
    // Like merge: a file that cannot be read, or is no report, is exit 2.
    let out = run_binary(&["compare", &good, &missing], Duration::from_secs(10));
    assert_eq!(out.code(), 2);
    assert!(out.stderr.contains("cannot read"), "{}", out.stderr);
    let out = run_binary(&["compare", &good, &foreign], Duration::from_secs(10));
    assert_eq!(out.code(), 2);
    assert!(out.stderr.contains("load --json"), "{}", out.stderr);
    assert!(out.stderr.contains("foreign.json"), "{}", out.stderr);
    let out = run_binary(&["compare", &good], Duration::from_secs(10));
    assert_eq!(out.code(), 2, "one file is a usage error");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_report_that_cannot_be_written_fails_the_run_and_says_why() {
    // A full disk loses the report: that must not pass as a clean run.
    let server = start_server(&[]);
    let url = format!("tcp://{}", server.tcp_addr());
    for json in [false, true] {
        let full = std::fs::OpenOptions::new()
            .write(true)
            .open("/dev/full")
            .expect("/dev/full");
        let mut argv = vec!["load", url.as_str(), "-c", "2", "-d", "0.3"];
        if json {
            argv.push("--json");
        }
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_echo-reactor"))
            .args(&argv)
            .stdin(std::process::Stdio::null())
            .stdout(full)
            .output()
            .expect("run load");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "json {json}: {stderr}");
        assert!(
            stderr.contains("cannot write the report"),
            "json {json}: {stderr}"
        );
    }
    server.stop();
}
