//! `load --stages` against servers whose behaviour is known: each stage
//! carries the messages its ramp schedules (over TCP, UDP and TLS), a
//! stall shows in the stage it happened in (latency counts from each
//! message's due time on the ramp), segments run their share of every
//! stage and `merge` adds the stages up, `--churn` keeps the schedule, and
//! bad lists and conflicting flags are usage errors.

mod common;

use std::time::{Duration, SystemTime};

use common::tls::{arg, Pki};
use common::*;
use echo_reactor::load::split;

/// Long enough for any run here on a loaded machine.
const RUN_LIMIT: Duration = Duration::from_secs(30);

/// The ramp of the example: up to 200 msgs/s, hold, down to 0.
const RAMP: &str = "1s:200,1s:200,1s:0";

/// `load ARGS`, run to its end.
fn load(args: &[&str]) -> Finished {
    run_load(args, RUN_LIMIT)
}

/// Each stage's `field` as a number.
fn per_stage(j: &serde_json::Value, field: &str) -> Vec<f64> {
    j["stages"]
        .as_array()
        .unwrap_or_else(|| panic!("no stages in {j}"))
        .iter()
        .map(|s| {
            s[field]
                .as_f64()
                .unwrap_or_else(|| panic!("stages[].{field} in {j}"))
        })
        .collect()
}

/// Asserts a ramp run's stages carried ~100, ~200 and ~100 messages (the
/// integral of the rate over each), with the JSON's shape.
fn assert_ramp_counts(out: &Finished) {
    assert_eq!(out.code(), 0, "{out:#?}");
    let j = only_json(out);
    assert_eq!(j["ok"], true, "{j}");
    let messages = per_stage(&j, "messages");
    for (got, want) in messages.iter().zip([100.0, 200.0, 100.0]) {
        assert!(
            (got - want).abs() <= want * 0.05,
            "stage messages {messages:?}, want ~[100, 200, 100]: {j}"
        );
    }
    assert_eq!(
        messages.iter().sum::<f64>(),
        j["messages"].as_f64().unwrap()
    );
    assert_eq!(per_stage(&j, "target_rate"), [200.0, 200.0, 0.0], "{j}");
    assert_eq!(per_stage(&j, "duration_s"), [1.0, 1.0, 1.0], "{j}");
    let rates = per_stage(&j, "msgs_per_sec");
    assert!((rates[1] - 200.0).abs() <= 10.0, "{rates:?}");
    for s in j["stages"].as_array().expect("stages") {
        for key in ["p50_us", "p99_us", "errors"] {
            assert!(s[key].is_u64(), "{key} in {s}");
        }
        assert!(s["p99_us"].as_u64() >= s["p50_us"].as_u64(), "{s}");
    }
    // The window is the stages' sum.
    let window = j["duration_s"].as_f64().expect("duration_s");
    assert!((3.0..3.5).contains(&window), "{window}");
}

#[test]
fn a_ramp_carries_in_each_stage_the_messages_its_schedule_asks_for() {
    let server = start_server(&[]);
    let url = format!("tcp://{}", server.tcp_addr());
    assert_ramp_counts(&load(&[&url, "-c", "10", "--stages", RAMP, "--json"]));
    let udp = format!("udp://{}", server.udp_addr());
    assert_ramp_counts(&load(&[&udp, "-c", "10", "--stages", RAMP, "--json"]));
    // The text report has a row per stage.
    let text = load(&[&url, "-c", "4", "--stages", "500ms:100,500ms:0"]);
    assert_eq!(text.code(), 0, "{text:#?}");
    assert!(text.stdout.contains("stages     stage"), "{}", text.stdout);
    assert!(text.stdout.contains("0 -> 100"), "{}", text.stdout);
    assert!(text.stdout.contains("100 -> 0"), "{}", text.stdout);
}

#[test]
fn a_churned_ramp_keeps_its_schedule_with_a_connection_per_five_messages() {
    // Each new connection carries its predecessor's place on the ramp on.
    let server = start_server(&[]);
    let url = format!("tcp://{}", server.tcp_addr());
    let out = load(&[&url, "-c", "10", "--stages", RAMP, "--churn", "5", "--json"]);
    assert_ramp_counts(&out);
    let j = only_json(&out);
    let connects = j["connects"].as_f64().expect("connects");
    let messages = j["messages"].as_f64().expect("messages");
    assert!(
        (connects - messages / 5.0).abs() <= 12.0,
        "{connects} connects for {messages} messages: {j}"
    );
}

#[test]
fn a_ramp_over_tls_carries_its_schedule_too() {
    let pki = Pki::new();
    let mut argv: Vec<String> = vec!["serve".into(), "--tls".into(), "127.0.0.1:0".into()];
    argv.extend(pki.serve_args());
    let server = start_binary(&argv, None);
    let url = format!("tls://{}", server.tls[0]);
    let ca = arg(&pki.ca);
    assert_ramp_counts(&load(&[
        &url, "--tls-ca", &ca, "-c", "10", "--stages", RAMP, "--json",
    ]));
}

#[test]
fn a_stall_shows_in_the_stage_it_happened_in() {
    // Latency counts from each message's due time on the ramp: a server
    // stopped for the first half second of the first stage makes that
    // stage's messages late by up to that, not the later stages'.
    let server = start_server(&[]);
    let url = format!("tcp://{}", server.tcp_addr());
    let out = while_stopped(server.pid(), || {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_echo-reactor"));
        cmd.args([
            "load",
            &url,
            "-c",
            "5",
            "--stages",
            "1s:100,1s:100",
            "--json",
        ]);
        let stall = std::time::Instant::now();
        let child = std::thread::spawn(move || run_to_end(cmd, RUN_LIMIT));
        // The stall's length is what is measured, not a wait for an event.
        std::thread::sleep(Duration::from_millis(600));
        (child, stall)
    });
    let (child, stall) = out;
    let out = child.join().expect("the load thread");
    assert!(stall.elapsed() >= Duration::from_millis(600));
    assert_eq!(out.code(), 0, "{out:#?}");
    let j = only_json(&out);
    let p99 = per_stage(&j, "p99_us");
    assert!(p99[0] >= 250_000.0, "the stall is in stage 1: {p99:?}: {j}");
    assert!(p99[1] < p99[0] / 2.0, "not in stage 2: {p99:?}: {j}");
}

#[test]
fn segments_run_their_share_of_every_stage_and_merge_adds_the_stages() {
    let server = start_server(&[]);
    let url = format!("tcp://{}", server.tcp_addr());
    let start = format!("{:.3}", split::unix_seconds(SystemTime::now()) + 1.0);
    let dir = std::env::temp_dir().join(format!("er-stages-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let children: Vec<_> = (0..2)
        .map(|i| {
            let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_echo-reactor"));
            cmd.args(["load", &url, "-c", "10", "--stages", RAMP, "--json"])
                .args(["--start-at", &start, "--segment", &format!("{i}/2")]);
            std::thread::spawn(move || run_to_end(cmd, RUN_LIMIT))
        })
        .collect();
    let mut files = Vec::new();
    for (i, c) in children.into_iter().enumerate() {
        let out = c.join().expect("a segment");
        assert_eq!(out.code(), 0, "{out:#?}");
        let j = only_json(&out);
        // Each segment's share of every stage: half of it.
        let messages = per_stage(&j, "messages");
        assert!((messages[1] - 100.0).abs() <= 5.0, "{messages:?}");
        assert_eq!(per_stage(&j, "target_rate"), [100.0, 100.0, 0.0], "{j}");
        let path = dir.join(format!("{i}.json"));
        std::fs::write(&path, &out.stdout).expect("write a part");
        files.push(path.display().to_string());
    }
    let merged = run_binary(&["merge", &files[0], &files[1], "--json"], RUN_LIMIT);
    let _ = std::fs::remove_dir_all(&dir);
    assert_eq!(merged.code(), 0, "{merged:#?}");
    let j = only_json(&merged);
    let messages = per_stage(&j, "messages");
    for (got, want) in messages.iter().zip([100.0, 200.0, 100.0]) {
        assert!((got - want).abs() <= want * 0.05, "{messages:?}: {j}");
    }
    assert_eq!(per_stage(&j, "target_rate"), [200.0, 200.0, 0.0], "{j}");
    assert_eq!(
        messages.iter().sum::<f64>(),
        j["messages"].as_f64().unwrap()
    );
}

#[test]
fn the_plot_and_the_interval_log_show_the_ramp() {
    let server = start_server(&[]);
    let url = format!("tcp://{}", server.tcp_addr());
    let dir = std::env::temp_dir().join(format!("er-stages-plot-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("scratch dir");
    let (svg, log) = (dir.join("ramp.svg"), dir.join("ramp.hlog"));
    let out = load(&[
        &url,
        "-c",
        "4",
        "--stages",
        "1s:100,1s:0",
        "--plot",
        &svg.display().to_string(),
        "--hdr-log",
        &log.display().to_string(),
    ]);
    assert_eq!(out.code(), 0, "{out:#?}");
    let svg = std::fs::read_to_string(&svg).expect("the plot");
    let log = std::fs::read_to_string(&log).expect("the log");
    let _ = std::fs::remove_dir_all(&dir);
    assert!(svg.contains("target rate (--stages)"), "no target line");
    assert!(log.contains("#stages"), "{log}");
    assert!(log.contains("0 -> 100 msgs/s; 2:"), "{log}");
}

#[test]
fn bad_stage_lists_and_conflicting_flags_are_usage_errors() {
    let url = "tcp://127.0.0.1:9";
    for (args, why) in [
        (vec!["--stages", ""], "empty stage list"),
        (vec!["--stages", "1s"], "expected DUR:RATE"),
        (vec!["--stages", "1:100"], "needs a unit"),
        (vec!["--stages", "0s:100"], "more than 0"),
        (vec!["--stages", "1s:abc"], "invalid rate"),
        (vec!["--stages", "1s:20M"], "0.001 to 10000000"),
        (vec!["--stages", "1s:0,2s:0"], "every target is 0"),
        (vec!["--stages", "1s:100,"], "expected DUR:RATE"),
        (vec!["--stages", "1s:100", "-d", "5"], "cannot be used with"),
        (
            vec!["--stages", "1s:100", "--rate", "5"],
            "cannot be used with",
        ),
        (
            vec!["--stages", "1s:100", "--warmup", "1"],
            "cannot be used with",
        ),
    ] {
        let mut argv = vec![url];
        argv.extend(args.iter().copied());
        let out = load(&argv);
        assert_eq!(out.code(), 2, "{args:?}: {out:#?}");
        assert!(
            out.stderr.contains(why),
            "{args:?}: want {why}: {}",
            out.stderr
        );
    }
    let too_many = vec!["1s:10"; 65].join(",");
    let out = load(&[url, "--stages", &too_many]);
    assert_eq!(out.code(), 2, "{out:#?}");
    assert!(out.stderr.contains("at most 64"), "{}", out.stderr);
}
