//! The PROXY protocol header parser (`serve --proxy-protocol`): the first
//! bytes of every connection, from anyone who can reach the port.
//!
//! The promises checked are in `tests/fuzz_checks/mod.rs`, shared with
//! the replay of `fuzz/regressions/` in the ordinary test suite.

#![no_main]

#[path = "../../tests/fuzz_checks/mod.rs"]
mod checks;

libfuzzer_sys::fuzz_target!(|data: &[u8]| checks::proxy_header(data));
