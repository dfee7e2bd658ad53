//! `merge`'s input: the text people hand over (report files, `kubectl
//! logs`, pdsh output with `host: ` prefixes). Run it with `-rss_limit_mb`:
//! it must never allocate without bound (see README.md).
//!
//! The promises checked are in `tests/fuzz_checks/mod.rs`, shared with
//! the replay of `fuzz/regressions/` in the ordinary test suite.

#![no_main]

#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::merge_input(data));
