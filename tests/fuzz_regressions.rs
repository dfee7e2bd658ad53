//! What the fuzzers in `fuzz/` found, kept found: every input saved under
//! `fuzz/regressions/` replayed through its target's checks (no nightly,
//! no libFuzzer), and each finding's effect on the real binary: a PROXY
//! line that panicked the server, reports that drifted each time `merge`
//! read and wrote them, and (found while setting the fuzzers' memory
//! limit) `merge` input that held a thousand times its size.

mod common;
mod fuzz_checks;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, UNIX_EPOCH};

use common::*;
use echo_reactor::load::report::{TestSettings, WallWindow};
use echo_reactor::load::{Proto, Report};
use echo_reactor::Mode;

#[test]
fn every_input_the_fuzzers_kept_replays_without_a_panic() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut replayed = 0;
    let mut failed = Vec::new();
    for (target, file) in kept_inputs(&root) {
        let data = std::fs::read(&file).expect("read a kept input");
        let outcome = std::panic::catch_unwind(|| fuzz_checks::replay(&target, &data));
        match outcome {
            Ok(true) => replayed += 1,
            Ok(false) => {}
            Err(_) => failed.push(file.display().to_string()),
        }
    }
    assert!(failed.is_empty(), "these inputs fail again: {failed:#?}");
    assert!(replayed > 0, "no inputs under {}", root.display());
}

/// (target, file) for every file in `root/TARGET/`.
fn kept_inputs(root: &Path) -> Vec<(String, PathBuf)> {
    let mut found = Vec::new();
    let dirs = std::fs::read_dir(root).unwrap_or_else(|e| panic!("{}: {e}", root.display()));
    for dir in dirs.flatten() {
        let target = dir.file_name().to_string_lossy().into_owned();
        let Ok(files) = std::fs::read_dir(dir.path()) else {
            continue;
        };
        found.extend(files.flatten().map(|f| (target.clone(), f.path())));
    }
    found.sort();
    found
}

/// The `proxy_header` target's find: a CR inside a v1 line, then a
/// two-byte character. It panicked the loop; now that connection is
/// closed unanswered and counted, and the next one is served.
#[test]
fn a_proxy_line_with_a_lone_cr_before_a_multibyte_character_is_refused_and_serving_goes_on() {
    let server = start_server(&[
        "--tcp",
        "127.0.0.1:0",
        "--proxy-protocol",
        "--metrics",
        "127.0.0.1:0",
    ]);
    let mut hostile = connect(server.tcp_addr());
    hostile
        .write_all(b"PROXY \r\xcd\x9b\r\nhello")
        .expect("send the line");
    let mut answer = Vec::new();
    // EOF or a reset: either way nothing comes back.
    let _ = hostile.read_to_end(&mut answer);
    assert!(answer.is_empty(), "answered {answer:?}");

    let mut good = connect(server.tcp_addr());
    good.write_all(b"PROXY TCP4 192.0.2.7 127.0.0.1 40000 7007\r\n")
        .expect("send a header");
    let echoed = roundtrip(&mut good, b"still here\n");
    assert_eq!(echoed, b"still here\n", "stderr:\n{}", server.stderr());
    let _ = good.shutdown(Shutdown::Write);
    assert_eq!(
        metric(server.metrics_addr(), "proxy_refused_total"),
        Some(1),
        "stderr:\n{}",
        server.stderr()
    );
    server.stop();
}

/// A report as `load --json` writes it, measured in a window whose end
/// serde_json's default float parser misreads (`1796193799.5163233`).
fn whole_test_report() -> Report {
    let mut r = Report::new(Proto::Tcp, "127.0.0.1:7007".parse().expect("address"), 2);
    r.connected = 2;
    let start = UNIX_EPOCH + Duration::new(1_796_193_799, 16_114_200);
    let end = UNIX_EPOCH + Duration::new(1_796_193_799, 516_323_328);
    r.window = Some(WallWindow { start, end });
    r.duration = end.duration_since(start).expect("end after start");
    r.settings = Some(TestSettings {
        connections: 2,
        rate: None,
        size: 64,
        pipeline: 1,
        expect: Mode::Echo,
        duration: Duration::from_millis(500),
        warmup: Duration::ZERO,
        start_at: None,
        max_loss_percent: 1.0,
        churn: None,
    });
    for v in 1..=1000 {
        r.latency.record(v).expect("in range");
    }
    r.messages = 1000;
    r.sent = 1000;
    r.bytes = 1000 * 64;
    r
}

/// The `"window":{...}` of a report as written, digits and all.
fn window_of(json: &str) -> &str {
    let at = json
        .find("\"window\":{")
        .unwrap_or_else(|| panic!("no window: {json}"));
    let len = json[at..].find('}').expect("the window ends");
    &json[at..=at + len]
}

/// The `report_json` and `merge_input` targets' find: a report's window
/// came back from `merge` (and `compare`) a step off, because serde_json
/// read `1796193799.5163233` as `1796193799.516323`. Now the window a
/// single part measured is the merged report's to the digit, and merging
/// `merge`'s own output changes nothing.
#[test]
fn merge_keeps_a_windows_digits_and_its_own_output_merges_to_the_same() {
    let dir = std::env::temp_dir().join(format!("er-fuzz-regressions-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let input = whole_test_report().to_json();
    let mut text = input.clone();
    let mut outputs = Vec::new();
    for round in 0..2 {
        let file = dir.join(format!("round{round}.json"));
        std::fs::write(&file, &text).expect("write a report");
        let run = run_binary(
            &["merge", "--json", &file.display().to_string()],
            IO_TIMEOUT,
        );
        assert_eq!(run.code(), 0, "{run:#?}");
        text = run.stdout.trim().to_string();
        outputs.push(text.clone());
    }
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(window_of(&outputs[0]), window_of(&input));
    assert_eq!(outputs[0], outputs[1], "merge of merge's own output");
}

/// Found while choosing the `merge_input` target's memory limit: each line
/// of `merge` input may carry a histogram of any range and precision, and
/// one of 2^21 counts (16 MiB) takes a few dozen bytes, so 100 lines of
/// about a kilobyte held 1.6 GiB. Under a 1 GiB address-space limit that
/// aborted; now each part is held at the generator's own precision and the
/// run ends with its verdict on the parts (segment 0/1, a hundred times).
#[test]
fn merge_input_holds_no_more_than_honest_reports_of_its_size() {
    let mut r = whole_test_report();
    r.latency = hdrhistogram::Histogram::new_with_bounds(1, 1 << 31, 5).expect("bounds");
    r.messages = 0;
    r.bytes = 0;
    let line = r.to_json();
    assert!(line.len() < 1500, "{} bytes a line", line.len());
    let input = format!("{line}\n").repeat(100);
    // prlimit as .ci/run installs it (util-linux), as in tests/load_merge.rs.
    let mut cmd = Command::new("prlimit");
    cmd.args(["--as=1073741824", "--"])
        .arg(env!("CARGO_BIN_EXE_echo-reactor"))
        .args(["merge", "-"]);
    let run = run_command(cmd, input.into_bytes(), IO_TIMEOUT);
    let code = run.status.and_then(|s| s.code());
    assert_eq!(code, Some(2), "{run:#?}");
    assert!(run.stderr.contains("segment 0/1 again"), "{}", run.stderr);
}
