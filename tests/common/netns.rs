//! Two hosts on one machine: a pair of Linux network namespaces joined by
//! a veth cable (MTU 1500, like Ethernet), optionally with random loss on
//! the way in to each side (`nft ... numgen random mod 100 < N drop`), so
//! that tests see real round trips, MSS and retransmissions instead of
//! loopback's 64 KiB segments and zero loss.
//!
//! Needs root, `ip` (iproute2) and, for loss, `nft` (nftables); without
//! them [`Pair::build`] says why and the test passes without running.
//! Dropping the pair kills what runs inside and removes both namespaces.

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The server side's address: 198.18.0.0/15 is set aside for network
/// benchmarks (RFC 2544) and exists only inside the namespaces.
pub const SERVER_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 1);
/// The client side's address.
pub const CLIENT_IP: Ipv4Addr = Ipv4Addr::new(198, 18, 1, 2);

/// A server namespace and a client namespace joined by a veth pair.
pub struct Pair {
    /// The server's namespace.
    pub server: String,
    /// The client's namespace.
    pub client: String,
}

impl Pair {
    /// Builds the pair with `loss_percent` of packets dropped on the way
    /// into each namespace (0: none), or says why this machine cannot
    /// (`Err`: not root, or `ip` or `nft` missing).
    ///
    /// # Panics
    ///
    /// When the prerequisites are there and a step fails anyway: that is
    /// a broken test, not a machine that cannot run it.
    pub fn build(loss_percent: u32) -> Result<Pair, String> {
        if !is_root() {
            return Err("not root: cannot create network namespaces".into());
        }
        let mut tools = vec!["ip"];
        if loss_percent > 0 {
            tools.push("nft");
        }
        for tool in tools {
            if Command::new(tool).arg("-V").output().is_err() {
                return Err(format!("{tool} is not installed"));
            }
        }
        Pair::make(loss_percent).map_err(|e| panic!("building the namespaces: {e}"))
    }

    fn make(loss_percent: u32) -> Result<Pair, String> {
        static NEXT: AtomicUsize = AtomicUsize::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let prefix = format!("er{}x{n}", std::process::id());
        let pair = Pair {
            server: format!("{prefix}s"),
            client: format!("{prefix}c"),
        };
        // From here on, Drop removes whatever was made.
        run("ip", &["netns", "add", &pair.server])?;
        run("ip", &["netns", "add", &pair.client])?;
        // Made inside the server namespace, one end then moved: nothing
        // touches the host's own stack.
        in_ns(
            &pair.server,
            "ip",
            &["link", "add", "v0", "type", "veth", "peer", "name", "v1"],
        )?;
        in_ns(
            &pair.server,
            "ip",
            &["link", "set", "v1", "netns", &pair.client],
        )?;
        for (ns, dev, addr) in [
            (&pair.server, "v0", SERVER_IP),
            (&pair.client, "v1", CLIENT_IP),
        ] {
            in_ns(
                ns,
                "ip",
                &["addr", "add", &format!("{addr}/24"), "dev", dev],
            )?;
            in_ns(ns, "ip", &["link", "set", dev, "mtu", "1500", "up"])?;
            in_ns(ns, "ip", &["link", "set", "lo", "up"])?;
            // Segmentation offload would hand TCP 64 KiB super-segments
            // across the cable (and a drop would take 45 segments at once);
            // one segment per packet, as on a real wire.
            in_ns(ns, "ip", &["link", "set", dev, "gso_max_segs", "1"])?;
            if loss_percent > 0 {
                let loss = loss_percent.to_string();
                in_ns(ns, "nft", &["add", "table", "inet", "lossy"])?;
                in_ns(
                    ns,
                    "nft",
                    &[
                        "add",
                        "chain",
                        "inet",
                        "lossy",
                        "input",
                        "{ type filter hook input priority 0; policy accept; }",
                    ],
                )?;
                in_ns(
                    ns,
                    "nft",
                    &[
                        "add", "rule", "inet", "lossy", "input", "iifname", dev, "numgen",
                        "random", "mod", "100", "lt", &loss, "drop",
                    ],
                )?;
            }
        }
        Ok(pair)
    }

    /// The server's address as an `IpAddr`.
    pub fn server_ip(&self) -> IpAddr {
        SERVER_IP.into()
    }

    /// `ip netns exec NS`, as a prefix for `start_binary`.
    pub fn exec_prefix(ns: &str) -> [&str; 4] {
        ["ip", "netns", "exec", ns]
    }

    /// Runs `f` on a new thread that has entered namespace `ns` (a network
    /// namespace is per thread: sockets it makes live there), and returns
    /// its result.
    pub fn run_in<T: Send + 'static>(
        ns: &str,
        f: impl FnOnce() -> T + Send + 'static,
    ) -> std::thread::JoinHandle<T> {
        let path = format!("/var/run/netns/{ns}");
        std::thread::spawn(move || {
            enter(&path);
            f()
        })
    }
}

impl Drop for Pair {
    fn drop(&mut self) {
        for ns in [&self.server, &self.client] {
            if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
                for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
                    let _ = Command::new("kill").args(["-9", pid]).status();
                }
            }
            let _ = Command::new("ip").args(["netns", "del", ns]).status();
        }
    }
}

/// Moves the calling thread into the network namespace at `path`.
fn enter(path: &str) {
    use std::os::fd::AsRawFd;
    let ns = std::fs::File::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    // SAFETY: setns with a namespace descriptor we own; it changes only
    // this thread's network namespace.
    let rc = unsafe { libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) };
    assert_eq!(rc, 0, "setns {path}: {}", std::io::Error::last_os_error());
}

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

fn run(cmd: &str, args: &[&str]) -> Result<(), String> {
    let out = Command::new(cmd)
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run {cmd}: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "{cmd} {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

fn in_ns(ns: &str, cmd: &str, args: &[&str]) -> Result<(), String> {
    let mut all = vec!["netns", "exec", ns, cmd];
    all.extend_from_slice(args);
    run("ip", &all)
}
