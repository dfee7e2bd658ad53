//! What the benches share: our server in its own process, and what
//! `/proc` tells about a process (CPU time, RSS, open descriptors).
//!
//! Each bench includes this with `mod support;` and uses the parts it
//! needs, hence the `dead_code` allowance where the module is included.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};

/// RSS and descriptor counts, the same code the tests use.
#[path = "../../tests/common/procfs.rs"]
pub mod procfs;

/// `echo-reactor serve` in its own process, so its CPU and memory are not
/// the bench's. Killed on drop; [`ServerChild::stop`] shuts it down
/// gracefully.
pub struct ServerChild {
    pub child: Child,
    /// Where its first (TCP) socket listens.
    pub addr: SocketAddr,
}

impl ServerChild {
    /// Starts the release binary with `serve --tcp 127.0.0.1:0` plus
    /// `extra`, and waits for its `listening on tcp://...` line.
    pub fn start(extra: &[&str]) -> ServerChild {
        let mut child = Command::new(env!("CARGO_BIN_EXE_echo-reactor"))
            .args(["serve", "--tcp", "127.0.0.1:0"])
            .args(extra)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn echo-reactor serve");
        let stdout = child.stdout.take().expect("piped");
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let addr = line
            .trim()
            .strip_prefix("listening on tcp://")
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("no listening line from the server: {line:?}"));
        ServerChild { child, addr }
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// SIGTERM and wait: the graceful path an operator uses.
    pub fn stop(&mut self) {
        // SAFETY: kill(2) on our own child's pid.
        unsafe { libc::kill(self.child.id() as i32, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

impl Drop for ServerChild {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Nanoseconds the process has spent on a CPU, all threads.
pub fn cpu_ns(pid: u32) -> u64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0;
    };
    tasks
        .filter_map(Result::ok)
        .filter_map(|t| std::fs::read_to_string(t.path().join("schedstat")).ok())
        .filter_map(|s| s.split_whitespace().next()?.parse::<u64>().ok())
        .sum()
}
