//! The report JSON reader, as `compare` and `merge` use it on files anyone
//! may hand over: `Report::from_json` and `compare`'s summary.
//!
//! The promises checked are in `tests/fuzz_checks/mod.rs`, shared with
//! the replay of `fuzz/regressions/` in the ordinary test suite.

#![no_main]

#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::report_json(data));
