//! Network namespaces for the tests that play other machines: each one a
//! separate network stack with its own loopback, and with its own
//! `/etc/hosts` and `/etc/resolv.conf` (`ip netns exec` mounts
//! `/etc/netns/NAME/*` over `/etc/*`), so a made-up host name resolves
//! there and nowhere else. Needs root and `ip` (iproute2); `Netns::new`
//! says why when it cannot. Dropping one kills what still runs inside
//! and removes it, its files under `/etc/netns` too.
//!
//! [`Pair`] is two hosts joined by a veth cable (MTU 1500, like
//! Ethernet), optionally with random loss on the way in to each side
//! (`nft ... numgen random mod 100 < N drop`), so that tests see real
//! round trips, MSS and retransmissions instead of loopback's 64 KiB
//! segments and zero loss.

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Whether this process runs as root.
pub fn is_root() -> bool {
    Command::new("id")
        .arg("-u")
        .output()
        .is_ok_and(|o| String::from_utf8_lossy(&o.stdout).trim() == "0")
}

/// Runs `ip ARGS`.
pub fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if !out.status.success() {
        return Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ));
    }
    Ok(())
}

/// Runs `ip ARGS` inside namespace `ns`.
pub fn ip_in(ns: &str, args: &[&str]) -> Result<(), String> {
    let mut all = vec!["netns", "exec", ns, "ip"];
    all.extend_from_slice(args);
    ip(&all)
}

/// Kills every process in namespace `ns`, then removes it.
pub fn remove(ns: &str) {
    if let Ok(o) = Command::new("ip").args(["netns", "pids", ns]).output() {
        for pid in String::from_utf8_lossy(&o.stdout).split_whitespace() {
            let _ = Command::new("kill").args(["-9", pid]).status();
        }
    }
    let _ = Command::new("ip").args(["netns", "del", ns]).status();
}

/// One namespace with its loopback up and its own hosts file.
pub struct Netns {
    /// Its name, for `ip netns exec`.
    pub name: String,
    etc: PathBuf,
}

impl Netns {
    /// Makes namespace `er<pid>-<tag>` whose `/etc/hosts` is `hosts`
    /// (lines like `127.0.0.1 echo-reactor`) and whose resolver asks
    /// 127.0.0.1, where nothing answers: a name not in `hosts` fails at
    /// once, and no lookup leaves the namespace. `Err` says why it cannot.
    pub fn new(tag: &str, hosts: &str) -> Result<Netns, String> {
        if !is_root() {
            return Err("not root: cannot create network namespaces".into());
        }
        let name = format!("er{}-{tag}", std::process::id());
        let etc = PathBuf::from("/etc/netns").join(&name);
        std::fs::create_dir_all(&etc).map_err(|e| format!("{}: {e}", etc.display()))?;
        let ns = Netns { name, etc };
        // From here on, Drop cleans up whatever was made.
        let write = |file: &str, text: &str| {
            std::fs::write(ns.etc.join(file), text).map_err(|e| format!("{file}: {e}"))
        };
        write("hosts", hosts)?;
        write(
            "resolv.conf",
            "nameserver 127.0.0.1\noptions timeout:1 attempts:1\n",
        )?;
        ip(&["netns", "add", &ns.name])?;
        ip_in(&ns.name, &["link", "set", "lo", "up"])?;
        Ok(ns)
    }

    /// [`Netns::new`], or `None` after printing why the calling test
    /// skips.
    pub fn or_skip(tag: &str, hosts: &str) -> Option<Netns> {
        Netns::new(tag, hosts)
            .map_err(|why| println!("skipped: {why}"))
            .ok()
    }

    /// `PROGRAM` to be run inside the namespace.
    pub fn command(&self, program: &str) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.name, program]);
        cmd
    }

    /// The prefix `start_binary` takes to start a server inside.
    pub fn prefix(&self) -> [&str; 4] {
        ["ip", "netns", "exec", &self.name]
    }
}

impl Drop for Netns {
    fn drop(&mut self) {
        remove(&self.name);
        let _ = std::fs::remove_dir_all(&self.etc);
    }
}

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
        remove(&self.server);
        remove(&self.client);
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
