//! One load test split into segments on loopback and merged back: the
//! segments start together and use connection numbers no other segment
//! uses, `merge` adds them up and refuses parts of another test naming
//! the file, `--start-at` in the past is refused, and `--source` binds
//! where it is told.

mod common;

use std::collections::BTreeSet;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, UdpSocket};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::*;
use echo_reactor::load::payload::Message;
use echo_reactor::load::report::{TestSettings, WallWindow};
use echo_reactor::load::split::{self, Segment};
use echo_reactor::load::{Proto, Report};
use echo_reactor::Mode;

/// Bytes per message in these tests.
const SIZE: usize = 64;

fn unix_now() -> f64 {
    split::unix_seconds(SystemTime::now())
}

/// Starts `load URL ARGS --segment I/COUNT --json` for every segment at
/// once, and returns each one's JSON report (in segment order) after
/// checking it exited 0.
fn run_segments(url: &str, count: u32, args: &[&str]) -> Vec<String> {
    let children: Vec<Child> = (0..count)
        .map(|i| {
            Command::new(env!("CARGO_BIN_EXE_echo-reactor"))
                .arg("load")
                .arg(url)
                .args(args)
                .args(["--segment", &format!("{i}/{count}"), "--json"])
                .env("RUST_LOG", "warn")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("spawn a segment")
        })
        .collect();
    children
        .into_iter()
        .map(|c| {
            let out = c.wait_with_output().expect("a segment ends");
            let stdout = String::from_utf8_lossy(&out.stdout).trim().to_string();
            assert!(
                out.status.success(),
                "a segment failed: {stdout}\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
            stdout
        })
        .collect()
}

/// A directory for this test's report files, removed on drop.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("er-merge-{}-{name}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    fn write(&self, name: &str, text: &str) -> String {
        let path = self.0.join(name);
        std::fs::write(&path, text).expect("write a report");
        path.display().to_string()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn merge_files(files: &[String], json: bool) -> Finished {
    let mut argv = vec!["merge"];
    argv.extend(files.iter().map(String::as_str));
    if json {
        argv.push("--json");
    }
    run_binary(&argv, IO_TIMEOUT)
}

fn parse(json: &str) -> serde_json::Value {
    serde_json::from_str(json).unwrap_or_else(|e| panic!("{e}: {json}"))
}

fn count(v: &serde_json::Value, path: &[&str]) -> u64 {
    path.iter()
        .fold(v, |v, k| &v[*k])
        .as_u64()
        .unwrap_or_else(|| panic!("{} is not a count in {v}", path.join(".")))
}

#[test]
fn three_segments_started_together_merge_to_the_sum_of_their_parts() {
    let server = start_server(&["--tcp", "127.0.0.1:0"]);
    let url = format!("tcp://{}", server.tcp_addr());
    // The instant as the segments read it: rounded to the millisecond.
    let start = format!("{:.3}", unix_now() + 1.0);
    let start_at: f64 = start.parse().expect("a number");
    let parts = run_segments(&url, 3, &["-c", "10", "-d", "0.5", "--start-at", &start]);

    let scratch = Scratch::new("sum");
    let files: Vec<String> = parts
        .iter()
        .enumerate()
        .map(|(i, p)| scratch.write(&format!("part{i}.json"), p))
        .collect();
    let merged = merge_files(&files, true);
    assert_eq!(merged.code(), 0, "{merged:#?}");
    let whole = parse(merged.stdout.trim());
    let parts: Vec<serde_json::Value> = parts.iter().map(|p| parse(p)).collect();

    let shares: Vec<u64> = parts.iter().map(|p| count(p, &["connections"])).collect();
    assert_eq!(shares, [4, 3, 3], "the first 10 % 3 segments take one more");
    for path in [
        &["connections"][..],
        &["connected"],
        &["messages"],
        &["bytes"],
        &["sent"],
        &["errors", "mismatch"],
    ] {
        let sum: u64 = parts.iter().map(|p| count(p, path)).sum();
        assert_eq!(count(&whole, path), sum, "{}", path.join("."));
    }
    assert_eq!(count(&whole, &["connected"]), 10);
    assert_eq!(whole["segment"]["count"], 1);
    assert_eq!(whole["ok"], true);

    // Each window began at the common start, within a few milliseconds.
    for p in &parts {
        let began = p["window"]["start"].as_f64().expect("window.start");
        let late = began - start_at;
        assert!((0.0..0.05).contains(&late), "began {late:.4} s after: {p}");
    }

    // The server saw the test's connections and the merged bytes, no more.
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "accepted"), Some(10), "{stderr}");
    let server_out = final_stat(&stderr, "out").expect("bytes out");
    assert!(
        server_out >= count(&whole, &["bytes"]),
        "server sent {server_out} B, the merged report counts more"
    );
}

/// An echo server that notes which connection number each connection's
/// first message carries (by the payload scheme), then echoes.
struct NumberingEcho {
    addr: SocketAddr,
    seen: Arc<Mutex<Vec<u64>>>,
}

impl NumberingEcho {
    fn start(max_conn: u64) -> NumberingEcho {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let addr = listener.local_addr().expect("addr");
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&seen);
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut s) = stream else { return };
                let sink = Arc::clone(&sink);
                std::thread::spawn(move || {
                    let _ = s.set_read_timeout(Some(IO_TIMEOUT));
                    let mut first = [0u8; SIZE];
                    if s.read_exact(&mut first).is_err() {
                        return;
                    }
                    let conn = (0..max_conn).find(|&c| {
                        let mut want = [0u8; SIZE];
                        Message { conn: c, seq: 0 }.fill(0, &mut want);
                        want == first
                    });
                    sink.lock().expect("lock").push(conn.unwrap_or(u64::MAX));
                    let mut buf = [0u8; 4096];
                    let mut n = SIZE;
                    buf[..SIZE].copy_from_slice(&first);
                    while n > 0 && s.write_all(&buf[..n]).is_ok() {
                        n = s.read(&mut buf).unwrap_or(0);
                    }
                });
            }
        });
        NumberingEcho { addr, seen }
    }
}

#[test]
fn segments_use_connection_numbers_no_other_segment_uses() {
    let server = NumberingEcho::start(100);
    let url = format!("tcp://{}", server.addr);
    run_segments(&url, 3, &["-c", "10", "-d", "0.2", "--size", "64"]);
    let seen = server.seen.lock().expect("lock").clone();
    let distinct: BTreeSet<u64> = seen.iter().copied().collect();
    assert_eq!(seen.len(), 10, "{seen:?}");
    assert_eq!(
        distinct,
        (0..10).collect::<BTreeSet<u64>>(),
        "numbers seen: {seen:?}"
    );
}

/// Segment `index` of three, 9 connections in all, measured in a window
/// starting `offset` after a fixed instant.
fn part(index: u32, offset: Duration) -> Report {
    let mut r = Report::new(Proto::Tcp, "127.0.0.1:7007".parse().expect("address"), 3);
    r.segment = Segment { index, count: 3 };
    r.connected = 3;
    r.duration = Duration::from_secs(1);
    let start = UNIX_EPOCH + Duration::from_secs(1_767_225_600) + offset;
    r.window = Some(WallWindow {
        start,
        end: start + r.duration,
    });
    r.settings = Some(TestSettings {
        connections: 9,
        rate: None,
        size: SIZE,
        pipeline: 1,
        expect: Mode::Echo,
        duration: Duration::from_secs(1),
        warmup: Duration::ZERO,
        start_at: None,
        max_loss_percent: 1.0,
        churn: None,
    });
    for v in 1..=100 {
        r.latency
            .record(v * (u64::from(index) + 1))
            .expect("in range");
    }
    r.messages = 100;
    r.sent = 100;
    r.bytes = 100 * SIZE as u64;
    r
}

#[test]
fn merge_refuses_parts_of_another_test_and_names_the_file() {
    let scratch = Scratch::new("refuse");
    let good: Vec<String> = (0..3)
        .map(|i| scratch.write(&format!("good{i}.json"), &part(i, Duration::ZERO).to_json()))
        .collect();
    assert_eq!(merge_files(&good, false).code(), 0);

    let mut other_target = part(2, Duration::ZERO);
    other_target.target = "127.0.0.1:7008".parse().expect("address");
    let mut other_size = part(2, Duration::ZERO);
    if let Some(s) = &mut other_size.settings {
        s.size = 65;
    }
    let mut other_expect = part(2, Duration::ZERO);
    if let Some(s) = &mut other_expect.settings {
        s.expect = Mode::Upper;
    }
    let cases = [
        ("target.json", other_target.to_json(), "target"),
        ("size.json", other_size.to_json(), "size"),
        ("expect.json", other_expect.to_json(), "expect"),
        (
            "repeat.json",
            part(1, Duration::ZERO).to_json(),
            "segment 1/3 again",
        ),
        (
            "late.json",
            part(2, Duration::from_secs(5)).to_json(),
            "did not run together",
        ),
        (
            "junk.json",
            "{\"hello\":\"world\"}".to_string(),
            "load --json",
        ),
        (
            "empty.json",
            "just a log line\n".to_string(),
            "no `load --json` report",
        ),
    ];
    for (name, text, why) in cases {
        let bad = scratch.write(name, &text);
        let files = [good[0].clone(), good[1].clone(), bad.clone()];
        let out = merge_files(&files, false);
        assert_eq!(out.code(), 2, "{name}: {out:#?}");
        assert!(
            out.stderr.contains(&bad) && out.stderr.contains(why),
            "{name}: expected {bad} and {why:?} in {}",
            out.stderr
        );
        assert!(out.stdout.is_empty(), "{name}: {}", out.stdout);
    }
    let out = merge_files(&good[..2], false);
    assert_eq!(out.code(), 2);
    assert!(
        out.stderr.contains("segments missing: 2/3"),
        "{}",
        out.stderr
    );
}

#[test]
fn merge_plot_draws_the_whole_and_each_part_from_their_histograms() {
    let scratch = Scratch::new("plot");
    let mut files: Vec<String> = (0..3)
        .map(|i| scratch.write(&format!("p{i}.json"), &part(i, Duration::ZERO).to_json()))
        .collect();
    let svg = scratch.0.join("merged.svg").display().to_string();
    files.extend(["--plot".to_string(), svg.clone()]);
    let out = merge_files(&files, true);
    assert_eq!(out.code(), 0, "{out:#?}");
    assert_eq!(count(&parse(out.stdout.trim()), &["messages"]), 300);
    let text = std::fs::read_to_string(&svg).expect("the plot was written");
    assert!(text.trim_end().ends_with("</svg>"));
    for needle in [
        "echo-reactor merge tcp://127.0.0.1:7007: 9 conns",
        "3 parts",
        "whole test (300 replies)",
        "segment 0/3",
        "segment 2/3",
        "99.9%",
    ] {
        assert!(text.contains(needle), "no {needle:?} in the SVG");
    }
    // One curve for the whole, one for each part.
    assert!(text.matches("<polyline").count() >= 4, "{text}");
    let out = merge_files(
        &[
            files[0].clone(),
            files[1].clone(),
            files[2].clone(),
            "--plot".into(),
            "/nonexistent-dir/m.svg".into(),
        ],
        false,
    );
    assert_eq!(out.code(), 1, "{out:#?}");
    assert!(
        out.stderr.contains("cannot write /nonexistent-dir/m.svg"),
        "{out:#?}"
    );
}

#[test]
fn merge_of_a_failed_part_exits_1_and_says_which() {
    let scratch = Scratch::new("failed");
    let mut failed = part(1, Duration::ZERO);
    failed.errors.reset = 1;
    let files: Vec<String> = [part(0, Duration::ZERO), failed, part(2, Duration::ZERO)]
        .iter()
        .enumerate()
        .map(|(i, r)| scratch.write(&format!("p{i}.json"), &r.to_json()))
        .collect();
    let out = merge_files(&files, true);
    assert_eq!(out.code(), 1, "{out:#?}");
    let whole = parse(out.stdout.trim());
    assert_eq!(whole["ok"], false);
    assert_eq!(count(&whole, &["errors", "reset"]), 1);
    assert!(out.stderr.contains("segment 1/3"), "{}", out.stderr);
}

#[test]
fn merge_reads_pdsh_output_from_stdin_among_log_lines() {
    let mut text = String::from("[2026-01-01T00:00:00Z WARN echo_reactor] hello\n");
    for i in 0..3 {
        text += &format!("gen{i}: {}\n", part(i, Duration::ZERO).to_json());
        text += &format!("gen{i}: a log line\n");
    }
    let mut child = Command::new(env!("CARGO_BIN_EXE_echo-reactor"))
        .args(["merge", "-", "--json"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn merge");
    child
        .stdin
        .take()
        .expect("stdin piped")
        .write_all(text.as_bytes())
        .expect("write stdin");
    let out = child.wait_with_output().expect("merge ends");
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let whole = parse(stdout.trim());
    assert_eq!(count(&whole, &["messages"]), 300);
    assert_eq!(count(&whole, &["connections"]), 9);
    assert_eq!(count(&whole, &["latency_us", "max"]), 300);
}

/// `merge ARGS` with `stdin` fed in, under a 1 GiB address-space limit
/// (`prlimit`, as .ci/run installs), so that an input which makes it
/// allocate gigabytes aborts instead of taking the machine's memory:
/// the exit code (`None` for a signal, or killed after `IO_TIMEOUT`),
/// stdout and stderr.
fn merge_bounded(args: &[&str], stdin: Vec<u8>) -> (Option<i32>, String, String) {
    let mut cmd = Command::new("prlimit");
    cmd.args(["--as=1073741824", "--"])
        .arg(env!("CARGO_BIN_EXE_echo-reactor"))
        .arg("merge")
        .args(args);
    let run = run_command(cmd, stdin, IO_TIMEOUT);
    (run.status.and_then(|s| s.code()), run.stdout, run.stderr)
}

/// A report as JSON with `edit` applied to it.
fn edited(r: &Report, edit: impl FnOnce(&mut serde_json::Value)) -> String {
    let mut v = parse(&r.to_json());
    edit(&mut v);
    v.to_string()
}

/// A compressed V2 histogram of a few dozen bytes whose header announces
/// a payload of nearly 4 GiB.
fn histogram_claiming_4_gib() -> String {
    use base64::Engine as _;
    use flate2::write::ZlibEncoder;
    let mut plain = Vec::new();
    plain.extend(0x1c84_9313u32.to_be_bytes()); // V2 cookie
    plain.extend((u32::MAX - 15).to_be_bytes()); // payload length
    plain.extend(0u32.to_be_bytes()); // normalizing offset
    plain.extend(3u32.to_be_bytes()); // significant digits
    plain.extend(1u64.to_be_bytes()); // lowest
    plain.extend(3_600_000_000u64.to_be_bytes()); // highest
    plain.extend(1.0f64.to_be_bytes()); // integer to double ratio
    let mut z = ZlibEncoder::new(Vec::new(), flate2::Compression::best());
    z.write_all(&plain).expect("in memory");
    let deflated = z.finish().expect("in memory");
    let mut bytes = Vec::new();
    bytes.extend(0x1c84_9314u32.to_be_bytes()); // V2 compressed cookie
    bytes.extend((deflated.len() as u32).to_be_bytes());
    bytes.extend(deflated);
    assert!(bytes.len() <= 64, "{} bytes", bytes.len());
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[test]
fn merge_refuses_hostile_reports_with_exit_2_naming_the_file() {
    let scratch = Scratch::new("hostile");
    let good: Vec<String> = (0..3)
        .map(|i| scratch.write(&format!("good{i}.json"), &part(i, Duration::ZERO).to_json()))
        .collect();
    let p = |i| part(i, Duration::ZERO);
    let forged = histogram_claiming_4_gib();
    let big = u64::MAX;
    let lax = |i| edited(&p(i), |v| v["max_loss_percent"] = (-1).into());
    // (what, the three parts as written, the file named, why)
    let cases: Vec<(&str, [String; 3], &str, &str)> = vec![
        (
            "a histogram claiming 4 GiB",
            [
                p(0).to_json(),
                edited(&p(1), |v| {
                    v["latency_us"]["histogram"] = forged.clone().into()
                }),
                p(2).to_json(),
            ],
            "p1.json",
            "payload",
        ),
        (
            "2 x (2^64 - 1) bytes",
            [
                p(0).to_json(),
                edited(&p(1), |v| v["bytes"] = big.into()),
                edited(&p(2), |v| v["bytes"] = big.into()),
            ],
            "p1.json",
            "bytes",
        ),
        (
            "2^63 + 2^63 sent",
            [
                p(0).to_json(),
                edited(&p(1), |v| v["sent"] = (1u64 << 63).into()),
                edited(&p(2), |v| v["sent"] = (1u64 << 63).into()),
            ],
            "p2.json",
            "`sent`",
        ),
        (
            "u64::MAX + 1 mismatches",
            [
                p(0).to_json(),
                edited(&p(1), |v| v["errors"]["mismatch"] = big.into()),
                edited(&p(2), |v| v["errors"]["mismatch"] = 1.into()),
            ],
            "p2.json",
            "errors.mismatch",
        ),
        (
            "max loss below 0 in every part",
            [lax(0), lax(1), lax(2)],
            "p0.json",
            "max_loss_percent",
        ),
        (
            "no connection, yet messages",
            [
                p(0).to_json(),
                edited(&p(1), |v| {
                    v["connections"] = 0.into();
                    v["connected"] = 0.into();
                }),
                p(2).to_json(),
            ],
            "p1.json",
            "connections is 0",
        ),
    ];
    for (what, texts, blamed, why) in cases {
        let files: Vec<String> = texts
            .iter()
            .enumerate()
            .map(|(i, text)| scratch.write(&format!("p{i}.json"), text))
            .collect();
        let args: Vec<&str> = files.iter().map(String::as_str).collect();
        let (code, stdout, stderr) = merge_bounded(&args, Vec::new());
        assert_eq!(code, Some(2), "{what}: {stdout}{stderr}");
        assert!(
            stderr.contains(blamed) && stderr.contains(why),
            "{what}: expected {blamed} and {why:?} in {stderr}"
        );
        assert!(stdout.is_empty(), "{what}: {stdout}");
    }
    // The same set, untouched, merges.
    let args: Vec<&str> = good.iter().map(String::as_str).collect();
    assert_eq!(merge_bounded(&args, Vec::new()).0, Some(0));
}

#[test]
fn merge_skips_lines_that_are_not_utf8_like_any_other_non_report() {
    let mut text = b"gen0: \xff\xfe a log line that is not UTF-8\n".to_vec();
    for i in 0..3 {
        text.extend(format!("gen{i}: {}\n", part(i, Duration::ZERO).to_json()).bytes());
        text.extend(b"gen1: latin-1 \xe9t\xe9\n");
    }
    let (code, stdout, stderr) = merge_bounded(&["-", "--json"], text.clone());
    assert_eq!(code, Some(0), "{stderr}");
    assert_eq!(count(&parse(stdout.trim()), &["messages"]), 300);

    let scratch = Scratch::new("utf8");
    let file = scratch.0.join("parts.log");
    std::fs::write(&file, &text).expect("write");
    let name = file.display().to_string();
    let (code, _, stderr) = merge_bounded(&[&name], Vec::new());
    assert_eq!(code, Some(0), "{stderr}");
}

#[test]
fn a_start_time_already_past_is_refused() {
    let past = format!("{:.3}", unix_now() - 5.0);
    let out = run_binary(
        &["load", "tcp://127.0.0.1:9", "--start-at", &past],
        IO_TIMEOUT,
    );
    assert_eq!(out.code(), 2, "{out:#?}");
    assert!(
        out.stderr.contains("--start-at") && out.stderr.contains("ago"),
        "{}",
        out.stderr
    );
    let out = run_binary(
        &["load", "tcp://127.0.0.1:9", "--start-at", "tomorrow"],
        IO_TIMEOUT,
    );
    assert_eq!(out.code(), 2, "{out:#?}");
}

#[test]
fn source_binds_tcp_connections_to_the_address_given() {
    let server = start_server_logged(&["--tcp", "127.0.0.1:0"], "echo_reactor=debug");
    let url = format!("tcp://{}", server.tcp_addr());
    let out = run_binary(
        &[
            "load",
            &url,
            "-c",
            "4",
            "-d",
            "0.2",
            "--source",
            "127.0.0.2,127.0.0.3",
        ],
        IO_TIMEOUT,
    );
    assert_eq!(out.code(), 0, "{out:#?}");
    let stderr = server.stop();
    let peers: BTreeSet<&str> = stderr
        .lines()
        .filter(|l| l.ends_with(": accepted"))
        .filter_map(|l| l.split_whitespace().rev().nth(1))
        .map(|peer| peer.trim_end_matches(':'))
        .filter_map(|peer| peer.rsplit_once(':').map(|(ip, _)| ip))
        .collect();
    assert_eq!(
        peers,
        BTreeSet::from(["127.0.0.2", "127.0.0.3"]),
        "{}",
        tail(&stderr, 20)
    );
}

#[test]
fn source_binds_udp_sockets_to_the_address_given() {
    let echo = UdpSocket::bind("127.0.0.1:0").expect("bind");
    echo.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
    let url = format!("udp://{}", echo.local_addr().expect("addr"));
    let load = std::thread::spawn(move || {
        run_binary(
            &[
                "load",
                &url,
                "-c",
                "1",
                "-d",
                "0.2",
                "--rate",
                "10",
                "--source",
                "127.0.0.2",
                "--udp-timeout",
                "0.1",
                "--drain-timeout",
                "0.1",
            ],
            IO_TIMEOUT,
        )
    });
    let mut buf = [0u8; 2048];
    let (n, peer) = echo.recv_from(&mut buf).expect("a datagram");
    let _ = echo.send_to(&buf[..n], peer);
    assert_eq!(peer.ip().to_string(), "127.0.0.2");
    // The rest of the run is not this test's business; let it end.
    let _ = load.join();
}
