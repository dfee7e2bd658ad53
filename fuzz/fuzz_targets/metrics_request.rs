//! The metrics endpoint's request reader (`serve --metrics`): whatever a
//! scraper, or anyone else who can reach the port, sends.
//!
//! The promises checked are in `tests/fuzz_checks/mod.rs`, shared with
//! the replay of `fuzz/regressions/` in the ordinary test suite.

#![no_main]

#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::metrics_request(data));
