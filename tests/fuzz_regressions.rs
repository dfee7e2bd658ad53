//! What the fuzzers in `fuzz/` found, kept found: every input saved under
//! `fuzz/regressions/` replayed through its target's checks (no nightly,
//! no libFuzzer), and each finding's effect on the real binary: a PROXY
//! line that panicked the server.

mod common;
mod fuzz_checks;

use std::io::{Read, Write};
use std::net::Shutdown;
use std::path::{Path, PathBuf};

use common::*;

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
