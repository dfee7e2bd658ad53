//! `serve --fault`: each fault does what it says, counts itself, and the
//! load generator names what it sees as what it is: a flipped bit is a
//! mismatch (as many as the server flipped, but for those in flight when
//! the window closed), a reset a reset, a close a close, a stall a
//! timeout, a delay latency, a drop UDP loss; slices and pacing change
//! only the speed. Bad fault flags are usage errors.

mod common;

use std::io::{Read, Write};
use std::time::{Duration, Instant};

use common::tls::{tls_roundtrip, Pki};
use common::*;
use serde_json::Value;

/// Runs `load ARGS --json` and returns its exit code and report.
fn load_json(args: &[&str], limit: Duration) -> (i32, Value) {
    let mut argv = vec!["load"];
    argv.extend_from_slice(args);
    argv.push("--json");
    let run = run_binary(&argv, limit);
    let report: Value = serde_json::from_str(run.stdout.trim())
        .unwrap_or_else(|e| panic!("no JSON report ({e}): {run:#?}"));
    (run.code(), report)
}

fn error(report: &Value, kind: &str) -> u64 {
    report["errors"][kind].as_u64().unwrap_or(0)
}

#[test]
fn every_flipped_bit_is_a_mismatch_the_server_counted() {
    let server = start_server(&[
        "--tcp",
        "127.0.0.1:0",
        "--fault",
        "corrupt@0.01",
        "--fault-seed",
        "7",
    ]);
    let url = format!("tcp://{}", server.tcp_addr());
    let (code, report) = load_json(
        &[&url, "-c", "10", "-d", "2", "--warmup", "0"],
        IO_TIMEOUT * 3,
    );
    let stderr = server.stop();
    assert_eq!(code, 1, "a corrupted echo fails the run: {report}");
    let flipped = final_stat(&stderr, "faults corrupt").expect("corrupt count");
    let seen = error(&report, "mismatch");
    assert!(seen > 100, "too few to mean anything: {seen}");
    // Each message in flight when the window closed may have been flipped
    // without being counted: one per connection here.
    assert!(
        seen <= flipped && flipped <= seen + 10,
        "generator saw {seen} mismatches, server flipped {flipped}"
    );
    for other in ["reset", "closed", "timeout", "lost"] {
        assert_eq!(error(&report, other), 0, "{other}: {report}");
    }
}

#[test]
fn a_reset_after_a_reply_is_a_reset_and_reconnect_carries_on() {
    let server = start_server(&["--tcp", "127.0.0.1:0", "--fault", "reset@0.01"]);
    let url = format!("tcp://{}", server.tcp_addr());
    let (code, report) = load_json(
        &[&url, "-c", "10", "-d", "2", "--warmup", "0", "--reconnect"],
        IO_TIMEOUT * 3,
    );
    let stderr = server.stop();
    assert_eq!(code, 1, "resets fail the run: {report}");
    let resets = final_stat(&stderr, "faults reset").expect("reset count");
    let seen = error(&report, "reset");
    assert!(seen > 5, "{report}");
    assert!(
        seen <= resets && resets <= seen + 10,
        "saw {seen}, server reset {resets}"
    );
    assert_eq!(error(&report, "mismatch"), 0, "{report}");
    assert_eq!(error(&report, "closed"), 0, "{report}");
    // With --reconnect the load held: far more replies than one connection
    // lifetime (about a hundred messages) each.
    let messages = report["messages"].as_u64().unwrap_or(0);
    assert!(
        messages > 10 * 500,
        "{messages} messages: the load did not hold"
    );
}

#[test]
fn an_early_close_is_a_close() {
    let server = start_server(&["--tcp", "127.0.0.1:0", "--fault", "close@0.01"]);
    let url = format!("tcp://{}", server.tcp_addr());
    let (code, report) = load_json(
        &[&url, "-c", "10", "-d", "2", "--warmup", "0", "--reconnect"],
        IO_TIMEOUT * 3,
    );
    let stderr = server.stop();
    assert_eq!(code, 1, "{report}");
    let closes = final_stat(&stderr, "faults close").expect("close count");
    let seen = error(&report, "closed");
    assert!(seen > 5, "{report}");
    assert!(
        seen <= closes && closes <= seen + 10,
        "saw {seen}, server closed {closes}"
    );
    assert_eq!(error(&report, "reset"), 0, "{report}");
    assert_eq!(error(&report, "mismatch"), 0, "{report}");
}

#[test]
fn a_stalled_connection_is_a_timeout_never_a_mismatch() {
    // A black hole stays open after its client leaves: the drain cuts it.
    let server = start_server(&[
        "--tcp",
        "127.0.0.1:0",
        "--fault",
        "stall",
        "--shutdown-timeout",
        "0.5",
    ]);
    let url = format!("tcp://{}", server.tcp_addr());
    let (code, report) = load_json(
        &[
            &url,
            "-c",
            "5",
            "-d",
            "1",
            "--warmup",
            "0",
            "--drain-timeout",
            "1",
        ],
        IO_TIMEOUT * 3,
    );
    let stderr = server.stop();
    assert_eq!(code, 1, "{report}");
    assert_eq!(
        error(&report, "timeout"),
        5,
        "one message in flight each: {report}"
    );
    assert_eq!(error(&report, "mismatch"), 0, "{report}");
    assert_eq!(final_stat(&stderr, "faults stall"), Some(5), "{stderr}");
}

#[test]
fn a_thousand_connections_under_a_100_ms_delay_overlap_their_waits() {
    let server = start_server(&["--tcp", "127.0.0.1:0", "--fault", "delay=100ms"]);
    let url = format!("tcp://{}", server.tcp_addr());
    let (code, report) = load_json(
        &[
            &url,
            "-c",
            "1000",
            "-d",
            "3",
            "--warmup",
            "1",
            "--connect-timeout",
            "10",
        ],
        IO_TIMEOUT * 4,
    );
    server.stop();
    assert_eq!(code, 0, "a delay is no error: {report}");
    let rate = report["msgs_per_sec"].as_f64().unwrap_or(0.0);
    let p50 = report["latency_us"]["p50"].as_u64().unwrap_or(0);
    // One timer structure for all: about 1,000 / 0.1 s, not 10 a second.
    assert!(rate > 5_000.0, "{rate} msgs/s: the delays did not overlap");
    assert!(
        (100_000..200_000).contains(&p50),
        "p50 {p50} us: a delay of 100 ms shows as latency"
    );
}

#[test]
fn slices_and_pacing_change_the_speed_and_nothing_else() {
    let server = start_server(&["--tcp", "127.0.0.1:0", "--fault", "slice=1"]);
    let url = format!("tcp://{}", server.tcp_addr());
    let (code, report) = load_json(
        &[&url, "-c", "4", "-d", "1", "--warmup", "0"],
        IO_TIMEOUT * 3,
    );
    let stderr = server.stop();
    assert_eq!(code, 0, "a correct client reads pieces: {report}");
    assert!(
        final_stat(&stderr, "faults slice").unwrap_or(0) > 100,
        "{stderr}"
    );

    // Paced to 200 KB/s, a 300 KB echo takes about 1.5 s and comes back whole.
    let server = start_server(&["--tcp", "127.0.0.1:0", "--fault", "rate=200k"]);
    let took = paced_echo(&server, 300_000);
    assert!(
        took >= Duration::from_millis(1200) && took < Duration::from_secs(6),
        "300 KB at 200 KB/s took {took:?}"
    );
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "faults rate"), Some(1), "{stderr}");

    // A fast pace is kept too: poll's millisecond wake-ups once lost a
    // third of 2 MB/s (4 MB took 3.3 s), now the bucket absorbs them.
    let server = start_server(&["--tcp", "127.0.0.1:0", "--fault", "rate=2M"]);
    let took = paced_echo(&server, 4_000_000);
    assert!(
        took >= Duration::from_millis(1800) && took < Duration::from_millis(2900),
        "4 MB at 2 MB/s took {took:?}"
    );
    drop(server);
}

/// How long an echo of `len` bytes takes to come back whole.
fn paced_echo(server: &ServerProcess, len: usize) -> Duration {
    let mut s = connect(server.tcp_addr());
    let data = pattern(4, len);
    let mut w = s.try_clone().expect("clone");
    let sent = data.clone();
    let writer = std::thread::spawn(move || w.write_all(&sent));
    let t = Instant::now();
    let mut back = vec![0u8; data.len()];
    s.read_exact(&mut back).expect("the whole echo");
    let took = t.elapsed();
    writer.join().expect("writer").expect("sent");
    assert!(back == data, "the paced echo differs");
    took
}

#[test]
fn udp_drops_are_loss_and_udp_delays_are_latency() {
    let server = start_server(&["--udp", "127.0.0.1:0", "--fault", "drop@0.2"]);
    let url = format!("udp://{}", server.udp_addr());
    let (code, report) = load_json(
        &[
            &url,
            "-c",
            "4",
            "-d",
            "2",
            "--warmup",
            "0",
            "--rate",
            "2000",
            "--max-loss",
            "100",
        ],
        IO_TIMEOUT * 3,
    );
    let stderr = server.stop();
    assert_eq!(code, 0, "{report}");
    let loss = report["loss_percent"].as_f64().unwrap_or(0.0);
    assert!((12.0..28.0).contains(&loss), "loss {loss}% for drop@0.2");
    let dropped = final_stat(&stderr, "faults drop").unwrap_or(0);
    let lost = error(&report, "lost");
    assert!(
        lost <= dropped && dropped <= lost + 400,
        "lost {lost}, dropped {dropped}"
    );

    let server = start_server(&["--udp", "127.0.0.1:0", "--fault", "delay=50ms"]);
    let url = format!("udp://{}", server.udp_addr());
    let (code, report) = load_json(
        &[
            &url, "-c", "4", "-d", "1", "--warmup", "0", "--rate", "1000",
        ],
        IO_TIMEOUT * 3,
    );
    server.stop();
    assert_eq!(code, 0, "{report}");
    let p50 = report["latency_us"]["p50"].as_u64().unwrap_or(0);
    assert!(
        (50_000..120_000).contains(&p50),
        "p50 {p50} us for a 50 ms delay"
    );
}

#[test]
fn over_tls_a_fault_acts_on_the_plaintext() {
    let pki = Pki::new();
    let mut argv: Vec<String> = vec!["serve".into()];
    argv.extend(pki.serve_args());
    argv.extend(["--fault", "corrupt"].map(String::from));
    let server = start_binary(&argv, None);
    let mut s = pki.connect(server.tls[0]);
    let msg = pattern(5, 1000);
    let back = tls_roundtrip(&mut s, &msg);
    let flipped: u32 = back
        .iter()
        .zip(&msg)
        .map(|(a, b)| (a ^ b).count_ones())
        .sum();
    // The record decrypted fine (TLS saw nothing wrong); the plaintext has
    // exactly one bit flipped.
    assert_eq!(flipped, 1, "bits flipped in the echo");
    drop(s);
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "faults corrupt"), Some(1), "{stderr}");
}

#[test]
fn faults_show_in_metrics_and_the_log_says_they_are_on() {
    let server = start_server_logged(
        &[
            "--tcp",
            "127.0.0.1:0",
            "--metrics",
            "127.0.0.1:0",
            "--fault",
            "corrupt",
        ],
        "info",
    );
    let mut s = connect(server.tcp_addr());
    let back = roundtrip(&mut s, b"0123456789");
    assert_ne!(back, b"0123456789");
    let addr = server.metrics.clone().expect("metrics");
    let out = std::process::Command::new("curl")
        .args(["-s", "-m", "5", &addr])
        .output()
        .expect("curl (.ci/run installs it)");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("echo_reactor_faults_injected_total{kind=\"corrupt\"} 1"),
        "{text}"
    );
    let stderr = server.stop();
    assert!(stderr.contains("FAULTS ON"), "{stderr}");
}

#[test]
fn bad_fault_flags_are_usage_errors() {
    for (args, needle) in [
        (vec!["--fault", "explode"], "unknown fault"),
        (vec!["--fault", "corrupt@1.5"], "probability"),
        (vec!["--fault", "delay"], "needs a value"),
        (vec!["--fault", "delay=forever"], "invalid"),
        (vec!["--fault", "slice=0"], "slice"),
        (vec!["--fault", "close=3"], "takes no value"),
        (
            vec!["--fault", "corrupt", "--fault", "corrupt@0.5"],
            "twice",
        ),
        (vec!["--tcp", "127.0.0.1:0", "--fault", "drop"], "UDP"),
        (vec!["--udp", "127.0.0.1:0", "--fault", "stall"], "TCP"),
        (vec!["--fault-seed", "3"], "without any --fault"),
        // Faults that cannot act on what the mode writes.
        (
            vec![
                "--tcp",
                "127.0.0.1:0",
                "--mode",
                "discard",
                "--fault",
                "rate=1000",
            ],
            "--mode discard",
        ),
        (
            vec![
                "--udp",
                "127.0.0.1:0",
                "--mode",
                "discard",
                "--fault",
                "drop",
            ],
            "--mode discard",
        ),
        (
            vec![
                "--tcp",
                "127.0.0.1:0",
                "--mode",
                "chargen",
                "--fault",
                "slice=10",
            ],
            "--mode chargen",
        ),
        (
            vec![
                "--tcp",
                "127.0.0.1:0",
                "--mode",
                "daytime",
                "--fault",
                "corrupt",
            ],
            "--mode daytime",
        ),
    ] {
        let mut argv = vec!["serve"];
        argv.extend(args.iter());
        let run = run_binary(&argv, IO_TIMEOUT);
        assert_eq!(run.code(), 2, "{args:?}: {run:#?}");
        assert!(run.stderr.contains(needle), "{args:?}: {}", run.stderr);
        assert!(!run.stderr.contains("panicked"), "{args:?}: {}", run.stderr);
    }
}

#[test]
fn faults_that_can_act_on_a_mode_are_accepted() {
    for args in [
        [
            "--tcp",
            "127.0.0.1:0",
            "--mode",
            "discard",
            "--fault",
            "stall",
        ],
        [
            "--tcp",
            "127.0.0.1:0",
            "--mode",
            "chargen",
            "--fault",
            "rate=1000",
        ],
        [
            "--udp",
            "127.0.0.1:0",
            "--mode",
            "chargen",
            "--fault",
            "delay=1ms",
        ],
        [
            "--tcp",
            "127.0.0.1:0",
            "--mode",
            "upper",
            "--fault",
            "slice=3",
        ],
    ] {
        let server = start_server(&args);
        let stderr = server.stop();
        assert!(stderr.contains("FAULTS ON"), "{args:?}: {stderr}");
    }
}

#[test]
fn udp_replies_a_delay_still_holds_at_shutdown_are_counted_dropped() {
    let server = start_server(&["--udp", "127.0.0.1:0", "--fault", "delay=30s"]);
    let sock = std::net::UdpSocket::bind("127.0.0.1:0").expect("bind a client socket");
    for i in 0..20u8 {
        sock.send_to(&[i; 8], server.udp_addr())
            .expect("send a datagram");
    }
    // Nothing comes back while the delay holds the replies; half a second
    // also gives the server ample time to read all twenty on loopback.
    sock.set_read_timeout(Some(Duration::from_millis(500)))
        .expect("set a read timeout");
    let mut buf = [0u8; 64];
    assert!(
        sock.recv_from(&mut buf).is_err(),
        "a 30 s delay answered at once"
    );
    let stderr = server.stop();
    assert_eq!(final_stat(&stderr, "faults delay"), Some(20), "{stderr}");
    assert_eq!(final_stat(&stderr, "udp dropped"), Some(20), "{stderr}");
    assert!(
        stderr.contains("20 delayed replies dropped at shutdown"),
        "{stderr}"
    );
}

#[test]
fn a_one_byte_slice_flood_neither_starves_others_nor_delays_shutdown() {
    let server = start_server(&[
        "--tcp",
        "127.0.0.1:0",
        "--fault",
        "slice=1",
        "--shutdown-timeout",
        "2",
    ]);
    let addr = server.tcp_addr();
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut floods = Vec::new();
    for _ in 0..4 {
        let mut s = connect(addr);
        let mut w = s.try_clone().expect("clone");
        let stop = stop.clone();
        floods.push(std::thread::spawn(move || {
            let chunk = [b'f'; 64 * 1024];
            let writer = std::thread::spawn(move || {
                for _ in 0..32 {
                    if w.write_all(&chunk).is_err() {
                        break;
                    }
                }
            });
            // Read as fast as the server writes, so its queue never fills
            // and every reply is one-byte writes all the way.
            let mut buf = [0u8; 64 * 1024];
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let _ = writer.join();
        }));
    }
    std::thread::sleep(Duration::from_millis(300));
    let mut probe = connect(addr);
    let mut rtts = Vec::new();
    for i in 0..20u8 {
        let t = Instant::now();
        probe.write_all(&[i; 16]).expect("probe send");
        let mut back = [0u8; 16];
        probe.read_exact(&mut back).expect("probe echo");
        rtts.push(t.elapsed());
        assert_eq!(back, [i; 16]);
    }
    rtts.sort();
    let median = rtts[rtts.len() / 2];
    assert!(
        median < Duration::from_millis(100),
        "a probe beside four 1-byte-slice floods waited {median:?} per round trip"
    );
    // Shutdown: the floods are busy and never half-close, so the deadline
    // (2 s) cuts them; the budget keeps the loop turning to see it.
    let t = Instant::now();
    let stderr = server.stop();
    let took = t.elapsed();
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(
        took < Duration::from_millis(4500),
        "SIGTERM to exit took {took:?}: {stderr}"
    );
    for f in floods {
        let _ = f.join();
    }
}

#[test]
fn replies_that_end_in_a_fault_close_or_reset_are_counted_out() {
    for kind in ["close", "reset"] {
        let server = start_server(&["--tcp", "127.0.0.1:0", "--fault", kind]);
        for i in 0..20u8 {
            let mut s = connect(server.tcp_addr());
            s.write_all(&[i; 100]).expect("send");
            let mut back = Vec::new();
            // close: the reply, then EOF; reset: the reply, then usually
            // ECONNRESET (the RST may overtake what was not read yet).
            let _ = s.read_to_end(&mut back);
            assert!(back.iter().all(|b| *b == i), "{kind}: a wrong byte");
        }
        let stderr = server.stop();
        let bytes_in = final_stat(&stderr, "in").expect("bytes in");
        let out = final_stat(&stderr, "out").expect("bytes out");
        let cut = final_stat(&stderr, "cut").expect("cut");
        assert_eq!(bytes_in, 2000, "{kind}: {stderr}");
        assert_eq!(bytes_in, out + cut, "{kind}: in = out + cut: {stderr}");
        assert_eq!(final_stat(&stderr, &format!("faults {kind}")), Some(20));
    }
}

#[test]
fn a_close_is_counted_once_with_replies_queued_behind_it() {
    // Paced or sliced output lets many replies queue up behind the one
    // drawn to close; those are never written, so they draw nothing: the
    // server's count is the closes that happened (it used to count three
    // times as many closes as connections).
    for shape in ["rate=100k", "slice=7"] {
        let server = start_server(&[
            "--tcp",
            "127.0.0.1:0",
            "--fault",
            "close@0.3",
            "--fault",
            shape,
            "--fault-seed",
            "7",
        ]);
        let url = format!("tcp://{}", server.tcp_addr());
        let (_, report) = load_json(
            &[
                &url,
                "-c",
                "16",
                "--pipeline",
                "8",
                "--size",
                "1000",
                "-d",
                "2",
                "--reconnect",
                "--drain-timeout",
                "1",
            ],
            IO_TIMEOUT * 3,
        );
        let stderr = server.stop();
        let accepted = final_stat(&stderr, "accepted").expect("accepted");
        let closes = final_stat(&stderr, "faults close").expect("closes");
        // A client still sending pipelined requests as the server closes
        // may meet a reset for them (the kernel answers data after a close
        // with one): each close ends one connection either way.
        let seen = error(&report, "closed") + error(&report, "reset");
        assert!(
            seen > 20,
            "{shape}: too few closes to mean anything: {report}"
        );
        assert!(
            closes <= accepted,
            "{shape}: {closes} closes of {accepted} connections"
        );
        // The generator sees every close but those of connections the
        // drain had already let go of (at most one per connection slot).
        assert!(
            seen <= closes && closes <= seen + 16,
            "{shape}: the server closed {closes}, the generator saw {seen}"
        );
    }
}
