//! The latency histogram inside every report (`hdr_v2::decode`), unwrapped
//! from its JSON so the fuzzer sees its structure.
//!
//! The promises checked are in `tests/fuzz_checks/mod.rs`, shared with
//! the replay of `fuzz/regressions/` in the ordinary test suite.

#![no_main]

#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::histogram(data));
